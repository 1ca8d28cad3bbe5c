//! Hugging Face sharded checkpoints: `model-0000i-of-0000n.safetensors` plus
//! `model.safetensors.index.json` (`{"metadata": {"total_size": ..}, "weight_map": {tensor: shard}}`).

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use serde::Deserialize;
use weightkit_core::atomic::AtomicFile;
use weightkit_core::{
    CoreError, CowTensor, Metadata, Piece, TensorInfo, TensorSink, TensorSource, TensorView, Value,
    WriteCursor,
};

use crate::error::{Error, Result};
use crate::read::SafetensorsFile;
use crate::write::{Layout, SafetensorsWriter, WriterOptions};

/// The index file name transformers uses for `model` checkpoints.
pub const INDEX_FILE: &str = "model.safetensors.index.json";

/// Largest index file accepted (a 100k-tensor model's index is a few MB).
const MAX_INDEX_SIZE: u64 = 256 << 20;

#[derive(Deserialize)]
struct RawIndex {
    #[serde(default)]
    metadata: Option<BTreeMap<String, serde_json::Value>>,
    weight_map: BTreeMap<String, String>,
}

/// A sharded checkpoint opened through its index: one tensor source over all
/// shards, each shard memory-mapped.
#[derive(Debug)]
pub struct ShardedSafetensors {
    index_path: PathBuf,
    shards: Vec<SafetensorsFile>,
    infos: Vec<TensorInfo>,
    locations: Vec<(usize, usize)>,
    by_name: HashMap<String, usize>,
    metadata: Metadata,
    declared_total_size: Option<u64>,
}

fn invalid(path: &Path, message: impl Into<String>) -> Error {
    Error::InvalidIndex {
        path: path.to_path_buf(),
        message: message.into(),
    }
}

/// A shard name from an index must be a plain file name in the index's
/// directory: no separators, no `..`, not absolute.
fn check_shard_name(index: &Path, name: &str) -> Result<()> {
    let bad = name.is_empty()
        || name == "."
        || name == ".."
        || name.contains('/')
        || name.contains('\\')
        || name.contains('\0');
    if bad {
        return Err(invalid(
            index,
            format!("shard name `{name}` is not a plain file name"),
        ));
    }
    Ok(())
}

impl ShardedSafetensors {
    /// Opens a sharded checkpoint from its index file, or from a directory
    /// containing `model.safetensors.index.json`.
    ///
    /// Every shard is validated, every tensor in the weight map must be in
    /// the shard it names, and every tensor in a shard must be in the weight
    /// map. Shards are memory-mapped (see [`SafetensorsFile::open`] for what
    /// that assumes).
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let index_path = if path.is_dir() {
            path.join(INDEX_FILE)
        } else {
            path.to_path_buf()
        };
        let dir = index_path
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."));
        let len = std::fs::metadata(&index_path)
            .map_err(Error::io(&index_path))?
            .len();
        if len > MAX_INDEX_SIZE {
            return Err(invalid(
                &index_path,
                format!("{len} bytes exceeds the {MAX_INDEX_SIZE}-byte limit"),
            ));
        }
        let text = std::fs::read(&index_path).map_err(Error::io(&index_path))?;
        let raw: RawIndex =
            serde_json::from_slice(&text).map_err(|e| invalid(&index_path, e.to_string()))?;

        let mut metadata = Metadata::new();
        let mut declared_total_size = None;
        for (k, v) in raw.metadata.unwrap_or_default() {
            let value = match &v {
                serde_json::Value::String(s) => Value::String(s.clone()),
                serde_json::Value::Number(n) if n.as_u64().is_some() => {
                    Value::U64(n.as_u64().unwrap_or(0))
                }
                other => Value::String(other.to_string()),
            };
            if k == "total_size" {
                declared_total_size = value.as_u64();
            }
            metadata.insert(k, value);
        }

        // Shards in name order (model-00001-of-... sorts correctly).
        let mut shard_names: Vec<&str> = raw.weight_map.values().map(String::as_str).collect();
        shard_names.sort_unstable();
        shard_names.dedup();
        let mut shards = Vec::with_capacity(shard_names.len());
        for name in &shard_names {
            check_shard_name(&index_path, name)?;
            let p = dir.join(name);
            let shard = SafetensorsFile::open(&p).map_err(|e| Error::Shard {
                path: p.clone(),
                source: Box::new(e),
            })?;
            shards.push(shard);
        }
        let shard_pos: HashMap<&str, usize> = shard_names
            .iter()
            .enumerate()
            .map(|(i, n)| (*n, i))
            .collect();

        for (tensor, shard) in &raw.weight_map {
            let present = shard_pos
                .get(shard.as_str())
                .and_then(|&s| shards.get(s))
                .is_some_and(|f| f.header().position(tensor).is_some());
            if !present {
                return Err(invalid(
                    &index_path,
                    format!("tensor `{tensor}` is mapped to {shard} but is not in that file"),
                ));
            }
        }
        let mut infos = Vec::new();
        let mut locations = Vec::new();
        let mut by_name = HashMap::new();
        for (s, (shard, shard_name)) in shards.iter().zip(&shard_names).enumerate() {
            for (i, info) in shard.tensors().iter().enumerate() {
                match raw.weight_map.get(&info.name) {
                    Some(mapped) if mapped == shard_name => {}
                    Some(mapped) => {
                        return Err(invalid(
                            &index_path,
                            format!(
                                "tensor `{}` is in {shard_name} but the weight map says {mapped}",
                                info.name
                            ),
                        ));
                    }
                    None => {
                        return Err(invalid(
                            &index_path,
                            format!(
                                "tensor `{}` in {shard_name} is not in the weight map",
                                info.name
                            ),
                        ));
                    }
                }
                by_name.insert(info.name.clone(), infos.len());
                infos.push(info.clone());
                locations.push((s, i));
            }
        }
        if let Some(first) = shards.first() {
            for (k, v) in first.metadata().iter() {
                if metadata.get(k).is_none() {
                    metadata.insert(k, v.clone());
                }
            }
        }
        Ok(ShardedSafetensors {
            index_path,
            shards,
            infos,
            locations,
            by_name,
            metadata,
            declared_total_size,
        })
    }

    /// The index file.
    pub fn index_path(&self) -> &Path {
        &self.index_path
    }

    /// The shards, in file-name order.
    pub fn shards(&self) -> &[SafetensorsFile] {
        &self.shards
    }

    /// All tensors: shard by shard, each in data order.
    pub fn tensors(&self) -> &[TensorInfo] {
        &self.infos
    }

    /// `metadata.total_size` as the index declares it (not checked: writers
    /// disagree on what it counts).
    pub fn declared_total_size(&self) -> Option<u64> {
        self.declared_total_size
    }

    /// The index's `metadata` plus the first shard's `__metadata__`.
    pub fn metadata(&self) -> &Metadata {
        &self.metadata
    }

    /// A zero-copy view of the tensor called `name`.
    pub fn tensor(&self, name: &str) -> Result<TensorView<'_>> {
        let i = *self
            .by_name
            .get(name)
            .ok_or_else(|| Error::TensorNotFound(name.to_owned()))?;
        self.tensor_at(i)
    }

    /// A zero-copy view of the tensor at position `i`.
    pub fn tensor_at(&self, i: usize) -> Result<TensorView<'_>> {
        self.locations
            .get(i)
            .and_then(|&(s, j)| Some((self.shards.get(s)?, j)))
            .ok_or_else(|| Error::TensorNotFound(format!("#{i}")))
            .and_then(|(shard, j)| shard.tensor_at(j))
    }
}

impl ShardedSafetensors {
    /// [`SafetensorsFile::release_tensor_pages`] for tensor `i`.
    ///
    /// # Safety
    ///
    /// As [`SafetensorsFile::release_tensor_pages`]: nothing may borrow the
    /// tensor's bytes.
    pub unsafe fn release_tensor_pages(&self, i: usize) {
        if let Some((shard, j)) = self
            .locations
            .get(i)
            .and_then(|&(s, j)| Some((self.shards.get(s)?, j)))
        {
            // SAFETY: forwarded to the caller.
            unsafe { shard.release_tensor_pages(j) };
        }
    }
}

impl TensorSource for ShardedSafetensors {
    type Error = Error;

    fn tensor_infos(&self) -> &[TensorInfo] {
        &self.infos
    }

    fn metadata(&self) -> &Metadata {
        &self.metadata
    }

    fn load(&self, index: usize) -> Result<CowTensor<'_>> {
        Ok(CowTensor::Borrowed(self.tensor_at(index)?))
    }

    fn position(&self, name: &str) -> Option<usize> {
        self.by_name.get(name).copied()
    }
}

/// Assigns tensors to shards exactly as `huggingface_hub`'s
/// `split_state_dict_into_shards_factory` (which transformers'
/// `save_pretrained` uses): in order, a tensor larger than the maximum gets a
/// shard of its own (appended immediately), otherwise it joins the current
/// shard unless that would exceed the maximum, which starts a new one.
///
/// Returns the shard index of each tensor and the number of shards.
pub fn plan_shards(byte_lens: &[usize], max_shard_size: u64) -> (Vec<usize>, usize) {
    let mut shard_of = vec![0usize; byte_lens.len()];
    let mut shards: Vec<Vec<usize>> = Vec::new();
    let mut current: Vec<usize> = Vec::new();
    let mut current_size = 0u64;
    for (i, &len) in byte_lens.iter().enumerate() {
        let len = len as u64;
        if len > max_shard_size {
            shards.push(vec![i]);
            continue;
        }
        if current_size.saturating_add(len) > max_shard_size {
            shards.push(std::mem::take(&mut current));
            current_size = 0;
        }
        current.push(i);
        current_size += len;
    }
    if !current.is_empty() {
        shards.push(current);
    }
    for (s, members) in shards.iter().enumerate() {
        for &i in members {
            if let Some(slot) = shard_of.get_mut(i) {
                *slot = s;
            }
        }
    }
    let n = shards.len();
    (shard_of, n)
}

/// A streaming writer for a sharded checkpoint in transformers' layout.
///
/// Tensors are assigned to shards up front ([`plan_shards`]); all shards are
/// written concurrently through temporary files, and `finish()` renames every
/// shard and then the index into place. One shard is written as
/// `{prefix}.safetensors` with no index, as transformers does.
#[derive(Debug)]
pub struct ShardedWriter {
    dir: PathBuf,
    writers: Vec<SafetensorsWriter>,
    shard_of: Vec<usize>,
    cursor: WriteCursor,
    index: Option<(PathBuf, Vec<u8>)>,
}

/// Per-shard write buffer: shards are written concurrently, so each gets a
/// modest buffer.
const SHARD_BUFFER: usize = 256 << 10;

impl ShardedWriter {
    /// Plans the shards for `tensors` (in order) with at most
    /// `max_shard_size` bytes of tensor data each, and opens them in `dir`.
    /// `prefix` is the file stem (`model`); `metadata` goes into every
    /// shard's `__metadata__` (transformers writes `{"format": "pt"}`).
    pub fn create(
        dir: impl AsRef<Path>,
        prefix: &str,
        tensors: Vec<TensorInfo>,
        metadata: &Metadata,
        max_shard_size: u64,
    ) -> Result<Self> {
        let dir = dir.as_ref().to_path_buf();
        if max_shard_size == 0 {
            return Err(Error::InvalidArgument(
                "max_shard_size must be positive".into(),
            ));
        }
        if prefix.is_empty() || prefix.contains(['/', '\\']) {
            return Err(Error::InvalidArgument(format!(
                "invalid file prefix `{prefix}`"
            )));
        }
        let cursor = WriteCursor::new(tensors)?;
        let (shard_of, n) = plan_shards(cursor.byte_lens(), max_shard_size);
        let n = n.max(1);
        let names: Vec<String> = if n == 1 {
            vec![format!("{prefix}.safetensors")]
        } else {
            (1..=n)
                .map(|i| format!("{prefix}-{i:05}-of-{n:05}.safetensors"))
                .collect()
        };
        let mut per_shard: Vec<Vec<TensorInfo>> = vec![Vec::new(); n];
        for (info, &s) in cursor.infos().iter().zip(&shard_of) {
            per_shard[s].push(info.clone());
        }
        let mut writers = Vec::with_capacity(n);
        for (name, infos) in names.iter().zip(per_shard) {
            writers.push(SafetensorsWriter::with_options(
                dir.join(name),
                infos,
                metadata,
                WriterOptions {
                    buffer_size: SHARD_BUFFER,
                    layout: Layout::Safetensors,
                },
            )?);
        }
        let index = if n > 1 {
            let total_size: u64 = cursor.byte_lens().iter().map(|&l| l as u64).sum();
            let mut total_parameters = 0u64;
            for info in cursor.infos() {
                total_parameters += info.elem_count()? as u64;
            }
            let weight_map: BTreeMap<&str, &str> = cursor
                .infos()
                .iter()
                .zip(&shard_of)
                .map(|(info, &s)| (info.name.as_str(), names[s].as_str()))
                .collect();
            let doc = serde_json::json!({
                "metadata": {"total_parameters": total_parameters, "total_size": total_size},
                "weight_map": weight_map,
            });
            let mut text = serde_json::to_vec_pretty(&doc)
                .map_err(|e| Error::InvalidArgument(e.to_string()))?;
            text.push(b'\n');
            Some((dir.join(format!("{prefix}.safetensors.index.json")), text))
        } else {
            None
        };
        Ok(ShardedWriter {
            dir,
            writers,
            shard_of,
            cursor,
            index,
        })
    }

    /// The output directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Number of shards.
    pub fn shard_count(&self) -> usize {
        self.writers.len()
    }
}

impl TensorSink for ShardedWriter {
    type Error = Error;
    /// Every file written: the shards, then the index (if any).
    type Output = Vec<PathBuf>;

    fn cursor(&self) -> &WriteCursor {
        &self.cursor
    }

    fn write_data(&mut self, chunk: &[u8]) -> Result<()> {
        let writers = &mut self.writers;
        let shard_of = &self.shard_of;
        self.cursor.feed(chunk, &mut |p| match p {
            Piece::Data { tensor, bytes } => {
                let s = shard_of.get(tensor).copied().unwrap_or(0);
                match writers.get_mut(s) {
                    Some(w) => w.write_data(bytes),
                    None => Err(CoreError::TooMuchData { extra: bytes.len() }.into()),
                }
            }
            Piece::End { .. } => Ok(()),
        })
    }

    fn write_tensor(&mut self, name: &str, data: &[u8]) -> Result<()> {
        self.cursor
            .begin(name, data.len(), &mut |_| Ok::<_, Error>(()))?;
        self.write_data(data)
    }

    fn finish(mut self) -> Result<Vec<PathBuf>> {
        self.cursor.finish(&mut |_| Ok::<_, Error>(()))?;
        let mut pending = Vec::with_capacity(self.writers.len() + 1);
        for w in self.writers {
            pending.push(w.finish_pending()?);
        }
        if let Some((path, text)) = &self.index {
            use std::io::Write;
            let mut f = AtomicFile::create(path).map_err(Error::io(path))?;
            f.write_all(text).map_err(Error::io(path))?;
            pending.push(f);
        }
        // Everything is on disk; now swap it all into place.
        let mut written = Vec::with_capacity(pending.len());
        for f in pending {
            let dest = f.dest_path().to_path_buf();
            written.push(f.commit().map_err(Error::io(dest))?);
        }
        Ok(written)
    }
}
