//! Writing PyTorch checkpoints in the zip format `torch.save` writes, such
//! that `torch.load(path, weights_only=True)` accepts them.
//!
//! `data.pkl` is written first (it only needs the tensor list), then each
//! tensor's bytes stream into its own storage entry `<prefix>/data/<i>`,
//! 64-byte aligned, then `version` and `.data/serialization_id`. The pickle is
//! emitted the way CPython's protocol-2 pickler emits `torch.save`'s objects
//! (same opcodes, same memo numbering), so for a plain `{name: tensor}` dict
//! of contiguous tensors the file is byte-identical to torch's.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use weightkit_core::atomic::AtomicFile;
use weightkit_core::{DType, Piece, TensorInfo, TensorSink, WriteCursor};

use crate::error::{Error, Result};
use crate::torch::storage_class;
use crate::zip::ZipWriter;

/// Writer options.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TorchWriterOptions {
    /// The archive's top-level folder (torch 2.x writes `archive`).
    pub prefix: String,
    /// `.data/serialization_id` contents; `None` derives a 40-digit id from
    /// the tensor list and the clock, as torch writes a unique one.
    pub serialization_id: Option<String>,
}

impl Default for TorchWriterOptions {
    fn default() -> Self {
        TorchWriterOptions {
            prefix: "archive".into(),
            serialization_id: None,
        }
    }
}

/// A protocol-2 pickle emitter with CPython's memo numbering.
struct Pickler {
    out: Vec<u8>,
    memo: u32,
    /// Memo slots of objects pickled by identity (strings and globals that
    /// torch's objects share).
    shared: HashMap<&'static str, u32>,
}

impl Pickler {
    fn new() -> Self {
        Pickler {
            out: vec![0x80, 2],
            memo: 0,
            shared: HashMap::new(),
        }
    }

    fn put(&mut self) {
        if self.memo < 256 {
            self.out.push(b'q');
            self.out.push(self.memo as u8);
        } else {
            self.out.push(b'r');
            self.out.extend_from_slice(&self.memo.to_le_bytes());
        }
        self.memo += 1;
    }

    fn get(&mut self, slot: u32) {
        if slot < 256 {
            self.out.push(b'h');
            self.out.push(slot as u8);
        } else {
            self.out.push(b'j');
            self.out.extend_from_slice(&slot.to_le_bytes());
        }
    }

    /// A fresh string object (memoized).
    fn string(&mut self, s: &str) {
        self.out.push(b'X');
        self.out.extend_from_slice(&(s.len() as u32).to_le_bytes());
        self.out.extend_from_slice(s.as_bytes());
        self.put();
    }

    /// A string or global that is one shared object in torch's pickling:
    /// written once, fetched from the memo afterwards.
    fn shared(&mut self, key: &'static str, write: impl FnOnce(&mut Self)) {
        if let Some(&slot) = self.shared.get(key) {
            self.get(slot);
        } else {
            let slot = self.memo;
            write(self);
            self.shared.insert(key, slot);
        }
    }

    fn global(&mut self, module: &str, name: &str) {
        self.out.push(b'c');
        self.out.extend_from_slice(module.as_bytes());
        self.out.push(b'\n');
        self.out.extend_from_slice(name.as_bytes());
        self.out.push(b'\n');
        self.put();
    }

    fn int(&mut self, v: u64) {
        if v <= 0xff {
            self.out.push(b'K');
            self.out.push(v as u8);
        } else if v <= 0xffff {
            self.out.push(b'M');
            self.out.extend_from_slice(&(v as u16).to_le_bytes());
        } else if v <= 0x7fff_ffff {
            self.out.push(b'J');
            self.out.extend_from_slice(&(v as u32).to_le_bytes());
        } else {
            // LONG1: little-endian two's complement, minimal length.
            let mut bytes = v.to_le_bytes().to_vec();
            while bytes.len() > 1
                && bytes[bytes.len() - 1] == 0
                && bytes[bytes.len() - 2] & 0x80 == 0
            {
                bytes.pop();
            }
            if bytes[bytes.len() - 1] & 0x80 != 0 {
                bytes.push(0);
            }
            self.out.push(0x8a);
            self.out.push(bytes.len() as u8);
            self.out.extend_from_slice(&bytes);
        }
    }

    /// A tuple of ints, as `save_tuple` writes it.
    fn int_tuple(&mut self, items: &[usize]) {
        match items.len() {
            0 => self.out.push(b')'),
            n @ 1..=3 => {
                for &i in items {
                    self.int(i as u64);
                }
                self.out.push([0x85, 0x86, 0x87][n - 1]);
                self.put();
            }
            _ => {
                self.out.push(b'(');
                for &i in items {
                    self.int(i as u64);
                }
                self.out.push(b't');
                self.put();
            }
        }
    }

    /// One `_rebuild_tensor_v2(storage, 0, size, stride, False, OrderedDict())`.
    fn tensor(&mut self, info: &TensorInfo, key: usize, class: &str, numel: usize) {
        self.shared("_rebuild_tensor_v2", |p| {
            p.global("torch._utils", "_rebuild_tensor_v2")
        });
        self.out.push(b'(');
        // The persistent id ('storage', class, key, 'cpu', numel).
        self.out.push(b'(');
        self.shared("storage", |p| p.string("storage"));
        let class_key: &'static str = match class {
            "FloatStorage" => "FloatStorage",
            "DoubleStorage" => "DoubleStorage",
            "HalfStorage" => "HalfStorage",
            "BFloat16Storage" => "BFloat16Storage",
            "LongStorage" => "LongStorage",
            "IntStorage" => "IntStorage",
            "ShortStorage" => "ShortStorage",
            "CharStorage" => "CharStorage",
            "ByteStorage" => "ByteStorage",
            _ => "BoolStorage",
        };
        self.shared(class_key, |p| p.global("torch", class_key));
        self.string(&key.to_string());
        self.shared("cpu", |p| p.string("cpu"));
        self.int(numel as u64);
        self.out.push(b't');
        self.put();
        self.out.push(b'Q');
        // storage_offset, size, stride (contiguous), requires_grad, hooks.
        self.int(0);
        let dims = info.shape.dims();
        self.int_tuple(dims);
        let mut stride = vec![0usize; dims.len()];
        let mut acc = 1usize;
        for (s, &d) in stride.iter_mut().zip(dims).rev() {
            *s = acc;
            acc = acc.saturating_mul(d);
        }
        self.int_tuple(&stride);
        self.out.push(0x89);
        self.shared("OrderedDict", |p| p.global("collections", "OrderedDict"));
        self.out.push(b')');
        self.out.push(b'R');
        self.put();
        self.out.push(b't');
        self.put();
        self.out.push(b'R');
        self.put();
    }
}

/// The `data.pkl` that `torch.save({name: tensor, ...})` writes for
/// contiguous tensors, storage `i` holding tensor `i`.
pub fn data_pkl(tensors: &[TensorInfo]) -> Result<Vec<u8>> {
    let mut p = Pickler::new();
    p.out.push(b'}');
    p.put();
    for batch in tensors.chunks(1000).enumerate() {
        let (b, items) = batch;
        let multi = items.len() > 1;
        if multi {
            p.out.push(b'(');
        }
        for (j, info) in items.iter().enumerate() {
            let key = b * 1000 + j;
            let class = storage_class(info.dtype).ok_or_else(|| {
                Error::Unwritable(format!(
                    "tensor `{}`: {} has no torch storage class in this writer",
                    info.name, info.dtype
                ))
            })?;
            let numel = info.elem_count()?;
            p.string(&info.name);
            p.tensor(info, key, class, numel);
        }
        p.out.push(if multi { b'u' } else { b's' });
    }
    p.out.push(b'.');
    Ok(p.out)
}

/// A streaming writer for the zip checkpoint format.
///
/// Created with the complete tensor list; then takes each tensor's bytes in
/// order (any dtype with a torch storage class: F32, F64, F16, BF16, I64,
/// I32, I16, I8, U8, BOOL) and ends with [`TensorSink::finish`], which
/// renames the temporary file into place.
pub struct TorchWriter {
    zip: ZipWriter<AtomicFile>,
    cursor: WriteCursor,
    prefix: String,
    open: Option<usize>,
    serialization_id: String,
    path: PathBuf,
}

impl std::fmt::Debug for TorchWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TorchWriter")
            .field("path", &self.path)
            .field("prefix", &self.prefix)
            .field("written", &self.cursor.written_bytes())
            .finish()
    }
}

fn default_serialization_id(tensors: &[TensorInfo]) -> String {
    // torch writes a random 40-digit id; ours is derived from the clock and
    // the tensor list (uniqueness is all that matters).
    let mut h: u128 = 0xcbf2_9ce4_8422_2325;
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    for b in nanos
        .to_le_bytes()
        .iter()
        .chain(tensors.iter().flat_map(|t| t.name.as_bytes()))
    {
        h = (h ^ u128::from(*b)).wrapping_mul(0x0000_0000_0100_0000_0000_0000_0000_013b);
    }
    let digits = format!("{h:040}");
    digits[digits.len() - 40..].to_owned()
}

impl TorchWriter {
    /// Starts writing `path` with default options (prefix `archive`).
    pub fn create(path: impl AsRef<Path>, tensors: Vec<TensorInfo>) -> Result<Self> {
        Self::with_options(path, tensors, TorchWriterOptions::default())
    }

    /// Starts writing `path`.
    pub fn with_options(
        path: impl AsRef<Path>,
        tensors: Vec<TensorInfo>,
        opts: TorchWriterOptions,
    ) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        if opts.prefix.is_empty() || opts.prefix.contains(['/', '\\']) || opts.prefix.contains("..")
        {
            return Err(Error::Unwritable(format!(
                "invalid archive prefix `{}`",
                opts.prefix
            )));
        }
        let pkl = data_pkl(&tensors)?;
        let serialization_id = opts
            .serialization_id
            .clone()
            .unwrap_or_else(|| default_serialization_id(&tensors));
        let cursor = WriteCursor::new(tensors)?;
        let file = AtomicFile::create(&path).map_err(Error::io(&path))?;
        let mut zip = ZipWriter::new(file);
        let prefix = opts.prefix;
        zip.write_entry(&format!("{prefix}/data.pkl"), &pkl)?;
        zip.write_entry(&format!("{prefix}/.format_version"), b"1")?;
        zip.write_entry(&format!("{prefix}/.storage_alignment"), b"64")?;
        zip.write_entry(&format!("{prefix}/byteorder"), b"little")?;
        Ok(TorchWriter {
            zip,
            cursor,
            prefix,
            open: None,
            serialization_id,
            path,
        })
    }

    fn on_piece(
        zip: &mut ZipWriter<AtomicFile>,
        open: &mut Option<usize>,
        prefix: &str,
        lens: &[usize],
        p: Piece<'_>,
    ) -> Result<()> {
        let (tensor, data) = match p {
            Piece::Data { tensor, bytes } => (tensor, Some(bytes)),
            Piece::End { tensor } => (tensor, None),
        };
        if *open != Some(tensor) {
            let len = lens.get(tensor).copied().unwrap_or(0) as u64;
            zip.start_entry_sized(&format!("{prefix}/data/{tensor}"), len)?;
            *open = Some(tensor);
        }
        match data {
            Some(bytes) => zip.write(bytes)?,
            None => {
                zip.finish_entry()?;
                *open = None;
            }
        }
        Ok(())
    }
}

impl TensorSink for TorchWriter {
    type Error = Error;
    type Output = PathBuf;

    fn cursor(&self) -> &WriteCursor {
        &self.cursor
    }

    fn write_data(&mut self, chunk: &[u8]) -> Result<()> {
        let TorchWriter {
            zip,
            cursor,
            prefix,
            open,
            ..
        } = self;
        let lens = cursor.byte_lens().to_vec();
        cursor.feed(chunk, &mut |p| Self::on_piece(zip, open, prefix, &lens, p))
    }

    fn write_tensor(&mut self, name: &str, data: &[u8]) -> Result<()> {
        let TorchWriter {
            zip,
            cursor,
            prefix,
            open,
            ..
        } = self;
        let lens = cursor.byte_lens().to_vec();
        cursor.begin(name, data.len(), &mut |p| {
            Self::on_piece(zip, open, prefix, &lens, p)
        })?;
        self.write_data(data)
    }

    fn finish(self) -> Result<PathBuf> {
        let TorchWriter {
            mut zip,
            mut cursor,
            prefix,
            mut open,
            serialization_id,
            path,
        } = self;
        let lens = cursor.byte_lens().to_vec();
        cursor.finish(&mut |p| Self::on_piece(&mut zip, &mut open, &prefix, &lens, p))?;
        zip.write_entry(&format!("{prefix}/version"), b"3\n")?;
        zip.write_entry(
            &format!("{prefix}/.data/serialization_id"),
            serialization_id.as_bytes(),
        )?;
        let file = zip.finish()?;
        file.commit().map_err(Error::io(path))
    }
}

/// Whether `dtype` can be written by [`TorchWriter`].
pub fn is_writable(dtype: DType) -> bool {
    storage_class(dtype).is_some()
}
