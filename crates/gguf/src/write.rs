//! Streaming, atomic GGUF v3 writing.
//!
//! The header (key-value pairs, then tensor infos with offsets computed from
//! the declared list, then zero padding to the alignment) is written first;
//! tensor data follows in declared order, each tensor padded to the
//! alignment, as gguf-py's `GGUFWriter` lays it out.

use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use weightkit_core::atomic::AtomicFile;
use weightkit_core::{Array, Metadata, Piece, TensorInfo, TensorSink, Value, WriteCursor};

use crate::error::{Error, Result};
use crate::header::{DEFAULT_ALIGNMENT, MAGIC, MAX_DIMS, MAX_NAME, VERSION, value_type_id};

/// Writer options.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WriterOptions {
    /// Size of the single write buffer.
    pub buffer_size: usize,
    /// Permit arrays of arrays (gguf-py writes them; llama.cpp cannot read
    /// them, so the default refuses).
    pub allow_nested_arrays: bool,
}

impl Default for WriterOptions {
    fn default() -> Self {
        WriterOptions {
            buffer_size: 1 << 20,
            allow_nested_arrays: false,
        }
    }
}

fn put_str(out: &mut Vec<u8>, s: &[u8]) {
    out.extend_from_slice(&(s.len() as u64).to_le_bytes());
    out.extend_from_slice(s);
}

fn put_array(out: &mut Vec<u8>, key: &str, a: &Array, nested_ok: bool) -> Result<()> {
    out.extend_from_slice(&value_type_id(a.elem_type()).to_le_bytes());
    out.extend_from_slice(&(a.len() as u64).to_le_bytes());
    macro_rules! each {
        ($v:expr) => {
            for x in $v {
                out.extend_from_slice(&x.to_le_bytes());
            }
        };
    }
    match a {
        Array::U8(v) => out.extend_from_slice(v),
        Array::I8(v) => each!(v),
        Array::U16(v) => each!(v),
        Array::I16(v) => each!(v),
        Array::U32(v) => each!(v),
        Array::I32(v) => each!(v),
        Array::F32(v) => each!(v),
        Array::U64(v) => each!(v),
        Array::I64(v) => each!(v),
        Array::F64(v) => each!(v),
        Array::Bool(v) => out.extend(v.iter().map(|&b| u8::from(b))),
        Array::String(v) => {
            for s in v {
                put_str(out, s.as_bytes());
            }
        }
        Array::Strings(v) => {
            for s in v {
                match s {
                    Value::String(s) => put_str(out, s.as_bytes()),
                    Value::RawString(b) => put_str(out, b),
                    other => {
                        return Err(Error::Unwritable(format!(
                            "key `{key}`: string array holds a {:?}",
                            other.value_type()
                        )));
                    }
                }
            }
        }
        Array::Array(v) => {
            if !nested_ok {
                return Err(Error::Unwritable(format!(
                    "key `{key}`: nested arrays (llama.cpp cannot read them; WriterOptions::allow_nested_arrays)"
                )));
            }
            for inner in v {
                put_array(out, key, inner, nested_ok)?;
            }
        }
        _ => {
            return Err(Error::Unwritable(format!(
                "key `{key}`: unsupported array type"
            )));
        }
    }
    Ok(())
}

fn put_value(out: &mut Vec<u8>, key: &str, v: &Value, nested_ok: bool) -> Result<()> {
    out.extend_from_slice(&value_type_id(v.value_type()).to_le_bytes());
    match v {
        Value::U8(x) => out.push(*x),
        Value::I8(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::U16(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::I16(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::U32(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::I32(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::F32(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::Bool(x) => out.push(u8::from(*x)),
        Value::String(s) => put_str(out, s.as_bytes()),
        Value::RawString(b) => put_str(out, b),
        Value::U64(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::I64(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::F64(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::Array(a) => put_array(out, key, a, nested_ok)?,
        _ => return Err(Error::Unwritable(format!("key `{key}`: unsupported value"))),
    }
    Ok(())
}

fn padding(len: u64, align: usize) -> usize {
    let a = align as u64;
    ((a - len % a) % a) as usize
}

/// The GGUF header without the final padding, and the alignment.
fn header_unpadded(
    metadata: &Metadata,
    tensors: &[TensorInfo],
    byte_lens: &[usize],
    opts: &WriterOptions,
) -> Result<(Vec<u8>, usize)> {
    let alignment = match metadata.get("general.alignment") {
        None => DEFAULT_ALIGNMENT,
        Some(Value::U32(a)) if *a != 0 && a.is_power_of_two() => *a as usize,
        Some(other) => {
            return Err(Error::Unwritable(format!(
                "`general.alignment` must be a UINT32 power of two, got {other}"
            )));
        }
    };
    let mut out = Vec::new();
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&VERSION.to_le_bytes());
    out.extend_from_slice(&(tensors.len() as u64).to_le_bytes());
    out.extend_from_slice(&(metadata.len() as u64).to_le_bytes());
    for (k, v) in metadata.iter() {
        if k.is_empty() {
            return Err(Error::Unwritable("empty metadata key".into()));
        }
        put_str(&mut out, k.as_bytes());
        put_value(&mut out, k, v, opts.allow_nested_arrays)?;
    }
    let mut offset = 0u64;
    for (t, &len) in tensors.iter().zip(byte_lens) {
        let Some(type_id) = t.dtype.ggml_type_id() else {
            return Err(Error::Unwritable(format!(
                "tensor `{}`: {} has no ggml type",
                t.name, t.dtype
            )));
        };
        if t.name.len() >= MAX_NAME {
            return Err(Error::Unwritable(format!(
                "tensor `{}`: name is {} bytes; ggml allows at most {}",
                t.name,
                t.name.len(),
                MAX_NAME - 1
            )));
        }
        if t.shape.rank() > MAX_DIMS {
            return Err(Error::Unwritable(format!(
                "tensor `{}`: {} dimensions; ggml allows at most {MAX_DIMS}",
                t.name,
                t.shape.rank()
            )));
        }
        if t.shape.dims().iter().any(|&d| i64::try_from(d).is_err()) {
            return Err(Error::Unwritable(format!(
                "tensor `{}`: dimension over i64",
                t.name
            )));
        }
        put_str(&mut out, t.name.as_bytes());
        out.extend_from_slice(&(t.shape.rank() as u32).to_le_bytes());
        for &d in t.shape.dims().iter().rev() {
            out.extend_from_slice(&(d as u64).to_le_bytes());
        }
        out.extend_from_slice(&type_id.to_le_bytes());
        out.extend_from_slice(&offset.to_le_bytes());
        let len = len as u64;
        offset = offset
            .checked_add(len + padding(len, alignment) as u64)
            .ok_or_else(|| Error::Unwritable("total data size overflows".into()))?;
    }
    Ok((out, alignment))
}

/// The complete GGUF header for `metadata` and `tensors`, padded to the
/// alignment (`general.alignment` if present, else 32), and the alignment.
///
/// The padding is materialised: with a huge `general.alignment` this is a
/// huge buffer ([`GgufWriter`] streams the padding instead).
pub fn header_bytes(
    metadata: &Metadata,
    tensors: &[TensorInfo],
    byte_lens: &[usize],
    opts: &WriterOptions,
) -> Result<(Vec<u8>, usize)> {
    let (mut out, alignment) = header_unpadded(metadata, tensors, byte_lens, opts)?;
    let pad = padding(out.len() as u64, alignment);
    out.resize(out.len() + pad, 0);
    Ok((out, alignment))
}

fn write_zeros(out: &mut impl Write, path: &Path, mut n: usize) -> Result<()> {
    const ZEROS: [u8; 4096] = [0; 4096];
    while n > 0 {
        let k = n.min(ZEROS.len());
        out.write_all(&ZEROS[..k]).map_err(Error::io(path))?;
        n -= k;
    }
    Ok(())
}

/// A streaming GGUF v3 writer.
///
/// Created with the metadata and the complete tensor list (already-encoded
/// bytes of any ggml type follow: the writer checks each tensor's length
/// against its type's block size); then takes the data in declared order and
/// ends with [`TensorSink::finish`], which renames the temporary file into
/// place. Dropped or failed before that, it leaves nothing behind.
pub struct GgufWriter {
    out: BufWriter<AtomicFile>,
    cursor: WriteCursor,
    alignment: usize,
    path: PathBuf,
}

impl std::fmt::Debug for GgufWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GgufWriter")
            .field("path", &self.path)
            .field("alignment", &self.alignment)
            .field("written", &self.cursor.written_bytes())
            .field("total", &self.cursor.total_bytes())
            .finish()
    }
}

impl GgufWriter {
    /// Starts writing `path` with default options.
    pub fn create(
        path: impl AsRef<Path>,
        metadata: &Metadata,
        tensors: Vec<TensorInfo>,
    ) -> Result<Self> {
        Self::with_options(path, metadata, tensors, WriterOptions::default())
    }

    /// Starts writing `path`.
    pub fn with_options(
        path: impl AsRef<Path>,
        metadata: &Metadata,
        tensors: Vec<TensorInfo>,
        opts: WriterOptions,
    ) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        let cursor = WriteCursor::new(tensors)?;
        let (header, alignment) =
            header_unpadded(metadata, cursor.infos(), cursor.byte_lens(), &opts)?;
        let file = AtomicFile::create(&path).map_err(Error::io(&path))?;
        let mut out = BufWriter::with_capacity(opts.buffer_size.max(1), file);
        out.write_all(&header).map_err(Error::io(&path))?;
        // Padding streams: an alignment of 2^31 costs no memory.
        write_zeros(&mut out, &path, padding(header.len() as u64, alignment))?;
        Ok(GgufWriter {
            out,
            cursor,
            alignment,
            path,
        })
    }

    /// The destination.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The alignment in force.
    pub fn alignment(&self) -> usize {
        self.alignment
    }
}

fn on_piece(
    out: &mut BufWriter<AtomicFile>,
    path: &Path,
    lens: &[usize],
    alignment: usize,
    p: Piece<'_>,
) -> Result<()> {
    match p {
        Piece::Data { bytes, .. } => out.write_all(bytes).map_err(Error::io(path)),
        Piece::End { tensor } => {
            let len = lens.get(tensor).copied().unwrap_or(0) as u64;
            write_zeros(out, path, padding(len, alignment))
        }
    }
}

impl TensorSink for GgufWriter {
    type Error = Error;
    type Output = PathBuf;

    fn cursor(&self) -> &WriteCursor {
        &self.cursor
    }

    fn write_data(&mut self, chunk: &[u8]) -> Result<()> {
        let GgufWriter {
            out,
            cursor,
            alignment,
            path,
        } = self;
        let lens = cursor.byte_lens().to_vec();
        cursor.feed(chunk, &mut |p| on_piece(out, path, &lens, *alignment, p))
    }

    fn write_tensor(&mut self, name: &str, data: &[u8]) -> Result<()> {
        let GgufWriter {
            out,
            cursor,
            alignment,
            path,
        } = self;
        let lens = cursor.byte_lens().to_vec();
        cursor.begin(name, data.len(), &mut |p| {
            on_piece(out, path, &lens, *alignment, p)
        })?;
        self.write_data(data)
    }

    fn finish(self) -> Result<PathBuf> {
        let GgufWriter {
            mut out,
            mut cursor,
            alignment,
            path,
        } = self;
        let lens = cursor.byte_lens().to_vec();
        cursor.finish(&mut |p| on_piece(&mut out, &path, &lens, alignment, p))?;
        let file = out.into_inner().map_err(|e| Error::Io {
            path: path.clone(),
            source: e.into_error(),
        })?;
        file.commit().map_err(Error::io(path))
    }
}

/// Serialises a whole GGUF file to memory (tensors given as `(info, bytes)`).
pub fn serialize(
    metadata: &Metadata,
    tensors: &[(TensorInfo, &[u8])],
    opts: &WriterOptions,
) -> Result<Vec<u8>> {
    let infos: Vec<TensorInfo> = tensors.iter().map(|(i, _)| i.clone()).collect();
    let cursor = WriteCursor::new(infos)?;
    let (mut out, alignment) = header_bytes(metadata, cursor.infos(), cursor.byte_lens(), opts)?;
    for ((info, data), &len) in tensors.iter().zip(cursor.byte_lens()) {
        if data.len() != len {
            return Err(weightkit_core::CoreError::LengthMismatch {
                name: info.name.clone(),
                dtype: info.dtype,
                shape: info.shape.clone(),
                expected: len,
                found: data.len(),
            }
            .into());
        }
        out.extend_from_slice(data);
        out.resize(out.len() + padding(len as u64, alignment), 0);
    }
    Ok(out)
}
