//! Streaming, atomic safetensors writing.
//!
//! The header is computed from the declared tensor list, so the data can be
//! streamed afterwards in bounded memory (one write buffer), straight to a
//! temporary file that is renamed over the destination by `finish()`.

use std::io::{BufWriter, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use serde::Serialize;
use serde::ser::{SerializeMap, SerializeStruct, Serializer};
use weightkit_core::atomic::AtomicFile;
use weightkit_core::{DType, Metadata, Piece, TensorInfo, TensorSink, TensorView, WriteCursor};

use crate::error::{Error, Result};
use crate::header::{MAX_HEADER_SIZE, N_LEN};

/// Write buffer size: the writer's whole memory footprint for data.
pub const DEFAULT_BUFFER_SIZE: usize = 1 << 20;

/// Where each tensor's bytes go in the file.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Layout {
    /// The `safetensors` library's layout (see [`sort_like_safetensors`]):
    /// the output is byte-identical to what Python's `save_file` writes for
    /// the same tensors and metadata. Data is still accepted in declared
    /// order; the writer places each tensor at its offset.
    #[default]
    Safetensors,
    /// Tensors stored in the order declared.
    Declared,
}

/// Options for [`SafetensorsWriter::with_options`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WriterOptions {
    /// Size of the single write buffer.
    pub buffer_size: usize,
    /// Storage order.
    pub layout: Layout,
}

impl Default for WriterOptions {
    fn default() -> Self {
        WriterOptions {
            buffer_size: DEFAULT_BUFFER_SIZE,
            layout: Layout::Safetensors,
        }
    }
}

/// The storage order of `tensors` under `layout`, as indices into `tensors`.
fn storage_order(tensors: &[TensorInfo], layout: Layout) -> Vec<usize> {
    let mut order: Vec<usize> = (0..tensors.len()).collect();
    if layout == Layout::Safetensors {
        order.sort_by(|&a, &b| {
            let (a, b) = (&tensors[a], &tensors[b]);
            b.dtype.cmp(&a.dtype).then_with(|| a.name.cmp(&b.name))
        });
    }
    order
}

/// Byte offset (relative to the data section) of each tensor, indexed like
/// `tensors`, when stored in `order`.
fn data_offsets(tensors: &[TensorInfo], lens: &[usize], order: &[usize]) -> Vec<u64> {
    let mut offsets = vec![0u64; tensors.len()];
    let mut at = 0u64;
    for &i in order {
        offsets[i] = at;
        at += lens[i] as u64;
    }
    offsets
}

/// Sorts tensors the way the `safetensors` library lays them out (dtype
/// descending in its declaration order, which keeps wide types aligned, then
/// name). Writing in this order produces files byte-identical to
/// `safetensors.torch.save_file`.
pub fn sort_like_safetensors(tensors: &mut [TensorInfo]) {
    tensors.sort_by(|a, b| b.dtype.cmp(&a.dtype).then_with(|| a.name.cmp(&b.name)));
}

struct HeaderJson<'a> {
    metadata: Vec<(&'a str, &'a str)>,
    tensors: &'a [TensorInfo],
    offsets: Vec<(u64, u64)>,
}

struct Entry<'a> {
    dtype: &'a str,
    shape: &'a [usize],
    offsets: (u64, u64),
}

impl Serialize for Entry<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        let mut st = s.serialize_struct("TensorInfo", 3)?;
        st.serialize_field("dtype", self.dtype)?;
        st.serialize_field("shape", self.shape)?;
        st.serialize_field("data_offsets", &[self.offsets.0, self.offsets.1])?;
        st.end()
    }
}

struct MetaMap<'a>(&'a [(&'a str, &'a str)]);

impl Serialize for MetaMap<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(self.0.len()))?;
        for (k, v) in self.0 {
            m.serialize_entry(k, v)?;
        }
        m.end()
    }
}

impl Serialize for HeaderJson<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        let extra = usize::from(!self.metadata.is_empty());
        let mut m = s.serialize_map(Some(self.tensors.len() + extra))?;
        if !self.metadata.is_empty() {
            m.serialize_entry("__metadata__", &MetaMap(&self.metadata))?;
        }
        for (t, &offsets) in self.tensors.iter().zip(&self.offsets) {
            let entry = Entry {
                dtype: t.dtype.safetensors_name().unwrap_or("?"),
                shape: t.shape.dims(),
                offsets,
            };
            m.serialize_entry(&t.name, &entry)?;
        }
        m.end()
    }
}

/// The complete header (length prefix + JSON padded with spaces to a
/// multiple of 8) for `tensors` stored in the given order, as the
/// `safetensors` crate writes it.
pub fn header_bytes(tensors: &[TensorInfo], metadata: &Metadata) -> Result<Vec<u8>> {
    let mut meta = Vec::with_capacity(metadata.len());
    for (k, v) in metadata.iter() {
        let s = v
            .as_str()
            .ok_or_else(|| Error::NonStringMetadata { key: k.to_owned() })?;
        meta.push((k, s));
    }
    let mut offsets = Vec::with_capacity(tensors.len());
    let mut seen = std::collections::HashSet::with_capacity(tensors.len());
    let mut at = 0u64;
    for t in tensors {
        if t.dtype.safetensors_name().is_none() {
            return Err(Error::UnsupportedDType {
                name: t.name.clone(),
                dtype: t.dtype,
            });
        }
        if t.name == "__metadata__" {
            return Err(Error::InvalidArgument(
                "a tensor cannot be named `__metadata__`".into(),
            ));
        }
        if !seen.insert(t.name.as_str()) {
            return Err(Error::DuplicateName {
                name: t.name.clone(),
            });
        }
        let len = t.byte_len().map_err(|source| Error::InvalidShape {
            name: t.name.clone(),
            dtype: t.dtype,
            shape: t.shape.clone(),
            source: Box::new(source),
        })? as u64;
        let end = at
            .checked_add(len)
            .ok_or(weightkit_core::CoreError::Overflow)?;
        offsets.push((at, end));
        at = end;
    }
    let json = HeaderJson {
        metadata: meta,
        tensors,
        offsets,
    };
    let mut out = vec![0u8; N_LEN];
    serde_json::to_writer(&mut out, &json)
        .map_err(|e| Error::InvalidArgument(format!("header serialisation failed: {e}")))?;
    let padded = (out.len() - N_LEN).next_multiple_of(N_LEN);
    if padded > MAX_HEADER_SIZE {
        return Err(Error::HeaderTooLarge {
            len: padded as u64,
            max: MAX_HEADER_SIZE,
        });
    }
    out.resize(N_LEN + padded, b' ');
    out[..N_LEN].copy_from_slice(&(padded as u64).to_le_bytes());
    Ok(out)
}

/// A streaming safetensors writer.
///
/// Created with the complete tensor list (in storage order) and metadata;
/// then takes each tensor's bytes in that order ([`TensorSink::write_tensor`]
/// or chunks through [`TensorSink::write_data`]) and ends with
/// [`TensorSink::finish`], which renames the temporary file into place.
/// Dropped or failed before `finish`, it removes the temporary file and
/// leaves the destination untouched.
///
/// ```no_run
/// use weightkit_core::{DType, Metadata, TensorInfo, TensorSink};
/// use weightkit_safetensors::SafetensorsWriter;
///
/// let infos = vec![TensorInfo::new("w", DType::F32, [2, 2])];
/// let mut w = SafetensorsWriter::create("out.safetensors", infos, &Metadata::new())?;
/// w.write_tensor("w", &[0u8; 16])?;
/// w.finish()?;
/// # Ok::<(), weightkit_safetensors::Error>(())
/// ```
pub struct SafetensorsWriter {
    out: BufWriter<AtomicFile>,
    cursor: WriteCursor,
    path: PathBuf,
    /// Absolute file offset of each tensor (declared order).
    offsets: Vec<u64>,
    /// Tensor being written and bytes of it written so far.
    current: (usize, u64),
    /// Where the next byte written lands.
    file_pos: u64,
}

impl std::fmt::Debug for SafetensorsWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SafetensorsWriter")
            .field("path", &self.path)
            .field("written", &self.cursor.written_bytes())
            .field("total", &self.cursor.total_bytes())
            .finish()
    }
}

impl SafetensorsWriter {
    /// Starts writing `path` (through a temporary file beside it) with the
    /// default buffer size.
    pub fn create(
        path: impl AsRef<Path>,
        tensors: Vec<TensorInfo>,
        metadata: &Metadata,
    ) -> Result<Self> {
        Self::with_options(path, tensors, metadata, WriterOptions::default())
    }

    /// As [`SafetensorsWriter::create`] with explicit options.
    pub fn with_options(
        path: impl AsRef<Path>,
        tensors: Vec<TensorInfo>,
        metadata: &Metadata,
        options: WriterOptions,
    ) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        let order = storage_order(&tensors, options.layout);
        let stored: Vec<TensorInfo> = order.iter().map(|&i| tensors[i].clone()).collect();
        let header = header_bytes(&stored, metadata)?;
        let cursor = WriteCursor::new(tensors)?;
        let data_start = header.len() as u64;
        let offsets = data_offsets(cursor.infos(), cursor.byte_lens(), &order)
            .into_iter()
            .map(|o| o + data_start)
            .collect();
        let file = AtomicFile::create(&path).map_err(Error::io(&path))?;
        let mut out = BufWriter::with_capacity(options.buffer_size.max(1), file);
        out.write_all(&header).map_err(Error::io(&path))?;
        Ok(SafetensorsWriter {
            out,
            cursor,
            path,
            offsets,
            current: (0, 0),
            file_pos: data_start,
        })
    }

    /// The destination path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes a whole tensor from a view (checks name, dtype and shape).
    pub fn write_view(&mut self, name: &str, view: TensorView<'_>) -> Result<()> {
        if let Some(info) = self.cursor.infos().get(self.cursor.current())
            && info.name == name
            && (info.dtype != view.dtype() || info.shape != *view.shape())
        {
            return Err(weightkit_core::CoreError::LengthMismatch {
                name: name.to_owned(),
                dtype: info.dtype,
                shape: info.shape.clone(),
                expected: self.cursor.byte_lens()[self.cursor.current()],
                found: view.data().len(),
            }
            .into());
        }
        self.write_tensor(name, view.data())
    }

    /// Flushes and syncs the temporary file without renaming it.
    pub(crate) fn finish_pending(mut self) -> Result<AtomicFile> {
        self.cursor.finish(&mut |_| Ok::<_, Error>(()))?;
        let path = self.path.clone();
        self.out.into_inner().map_err(|e| Error::Io {
            path,
            source: e.into_error(),
        })
    }
}

impl TensorSink for SafetensorsWriter {
    type Error = Error;
    type Output = PathBuf;

    fn cursor(&self) -> &WriteCursor {
        &self.cursor
    }

    fn write_data(&mut self, chunk: &[u8]) -> Result<()> {
        let SafetensorsWriter {
            out,
            cursor,
            path,
            offsets,
            current,
            file_pos,
        } = self;
        cursor.feed(chunk, &mut |p| match p {
            Piece::Data { tensor, bytes } => {
                if current.0 != tensor {
                    *current = (tensor, 0);
                }
                let target = offsets.get(tensor).copied().unwrap_or(0) + current.1;
                if target != *file_pos {
                    // Out-of-layout-order data: place it at its offset.
                    out.seek(SeekFrom::Start(target))
                        .map_err(Error::io(&*path))?;
                }
                out.write_all(bytes).map_err(Error::io(&*path))?;
                current.1 += bytes.len() as u64;
                *file_pos = target + bytes.len() as u64;
                Ok(())
            }
            Piece::End { .. } => Ok(()),
        })
    }

    fn write_tensor(&mut self, name: &str, data: &[u8]) -> Result<()> {
        self.cursor
            .begin(name, data.len(), &mut |_| Ok::<_, Error>(()))?;
        self.write_data(data)
    }

    fn finish(self) -> Result<PathBuf> {
        let path = self.path.clone();
        let file = self.finish_pending()?;
        file.commit().map_err(Error::io(path))
    }
}

/// Serialises tensors to an in-memory safetensors file (byte-identical to
/// the `safetensors` library's `serialize` for the same input).
pub fn serialize(tensors: &[(&str, TensorView<'_>)], metadata: &Metadata) -> Result<Vec<u8>> {
    serialize_with_layout(tensors, metadata, Layout::Safetensors)
}

/// Serialises tensors to an in-memory safetensors file with the given layout.
pub fn serialize_with_layout(
    tensors: &[(&str, TensorView<'_>)],
    metadata: &Metadata,
    layout: Layout,
) -> Result<Vec<u8>> {
    let infos: Vec<TensorInfo> = tensors
        .iter()
        .map(|(n, v)| TensorInfo::new(*n, v.dtype(), v.shape().clone()))
        .collect();
    let order = storage_order(&infos, layout);
    let stored: Vec<TensorInfo> = order.iter().map(|&i| infos[i].clone()).collect();
    let mut out = header_bytes(&stored, metadata)?;
    // header_bytes validated names, dtypes and lengths.
    let cursor = WriteCursor::new(infos)?;
    out.reserve(cursor.total_bytes());
    for &i in &order {
        out.extend_from_slice(tensors[i].1.data());
    }
    Ok(out)
}

/// Writes tensors to `path` atomically (safetensors layout).
pub fn write_file(
    path: impl AsRef<Path>,
    tensors: &[(&str, TensorView<'_>)],
    metadata: &Metadata,
) -> Result<PathBuf> {
    let infos: Vec<TensorInfo> = tensors
        .iter()
        .map(|(n, v)| TensorInfo::new(*n, v.dtype(), v.shape().clone()))
        .collect();
    let mut w = SafetensorsWriter::create(path, infos, metadata)?;
    for (name, v) in tensors {
        w.write_tensor(name, v.data())?;
    }
    w.finish()
}

/// Whether `dtype` can be written to safetensors.
pub fn is_storable(dtype: DType) -> bool {
    dtype.safetensors_name().is_some()
}
