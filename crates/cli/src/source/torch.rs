//! PyTorch checkpoints as a [`Model`]: one `torch.save` file (zip or legacy
//! format), or the shards behind a `pytorch_model.bin.index.json`.
//!
//! The sharded form mirrors `weightkit_safetensors::ShardedSafetensors`:
//! the index has the same shape (`weight_map`: tensor -> shard file), shard
//! names must be plain file names in the index's directory, every mapped
//! tensor must be in the shard the map names, and every tensor of a shard
//! must be in the map. The tensors of all shards form one model, shard by
//! shard in file-name order.
//!
//! Nothing here executes pickled code: `weightkit_pickle` interprets the
//! pickles against an allow-list and rejects anything else.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use serde::Deserialize;
use weightkit_core::{Metadata, TensorInfo, Value};
use weightkit_pickle::torch::TensorRef;
use weightkit_pickle::{LoadOptions, TorchFile};

use super::{Model, Shard, to_u64};
use crate::error::CliError;

/// Largest index file accepted, as for safetensors indexes.
const MAX_INDEX_SIZE: u64 = 256 << 20;

/// The `format` the CLI names in errors about these files.
const FORMAT: &str = "PyTorch";

/// File names that are sharded PyTorch indexes (`pytorch_model.bin.index.json`).
pub(crate) const INDEX_SUFFIXES: [&str; 3] =
    [".bin.index.json", ".pt.index.json", ".pth.index.json"];

/// The index transformers writes beside `.bin` shards.
pub(crate) const INDEX_FILE: &str = "pytorch_model.bin.index.json";

/// Whether `name` is a sharded PyTorch checkpoint's index.
pub(crate) fn is_index_name(name: &str) -> bool {
    INDEX_SUFFIXES.iter().any(|s| name.ends_with(s))
}

#[derive(Deserialize)]
struct RawIndex {
    #[serde(default)]
    metadata: Option<BTreeMap<String, serde_json::Value>>,
    weight_map: BTreeMap<String, String>,
}

/// An opened PyTorch checkpoint: its files and the tensors of all of them.
#[derive(Debug)]
pub(crate) struct TorchCheckpoint {
    /// One file, or the shards in file-name order.
    files: Vec<TorchFile>,
    /// The index, for a sharded checkpoint.
    index: Option<PathBuf>,
    infos: Vec<TensorInfo>,
    /// `(file, position in that file)` of each tensor.
    locations: Vec<(usize, usize)>,
    metadata: Metadata,
    declared_total_size: Option<u64>,
}

/// How one tensor is stored.
#[derive(Debug, Clone, Copy)]
pub(crate) struct TorchTensor<'a> {
    /// Which file (an index into [`TorchCheckpoint::files`]).
    pub(crate) file: usize,
    pub(crate) r: &'a TensorRef,
}

/// What the CLI calls a view: not contiguous, or not at the start of its
/// storage (including a legacy-format storage view into a larger storage).
pub(crate) fn is_view(r: &TensorRef) -> bool {
    !r.is_contiguous() || r.offset != 0 || r.storage_view_offset != 0
}

fn open_error(path: &Path, source: impl Into<crate::error::BoxError>) -> CliError {
    CliError::Open {
        path: path.to_path_buf(),
        format: FORMAT,
        source: source.into(),
        hint: None,
    }
}

impl TorchCheckpoint {
    /// Opens one `torch.save` file.
    pub(crate) fn open_file(path: &Path, opts: &LoadOptions) -> Result<Self, CliError> {
        let file = TorchFile::open_with(path, opts).map_err(|e| open_error(path, e))?;
        let infos = file.tensors().to_vec();
        let locations = (0..infos.len()).map(|i| (0, i)).collect();
        let metadata = file.metadata().clone();
        Ok(TorchCheckpoint {
            files: vec![file],
            index: None,
            infos,
            locations,
            metadata,
            declared_total_size: None,
        })
    }

    /// Opens the shards behind an index (`pytorch_model.bin.index.json`).
    pub(crate) fn open_index(index: &Path, opts: &LoadOptions) -> Result<Self, CliError> {
        let invalid = |message: String| open_error(index, message);
        let read_err = |source| CliError::Read {
            path: index.to_path_buf(),
            source,
        };
        let len = std::fs::metadata(index).map_err(read_err)?.len();
        if len > MAX_INDEX_SIZE {
            return Err(invalid(format!(
                "index of {len} bytes exceeds the {MAX_INDEX_SIZE}-byte limit"
            )));
        }
        let text = std::fs::read(index).map_err(read_err)?;
        let raw: RawIndex = serde_json::from_slice(&text)
            .map_err(|e| invalid(format!("invalid shard index: {e}")))?;

        let mut metadata = Metadata::new();
        let mut declared_total_size = None;
        for (k, v) in raw.metadata.unwrap_or_default() {
            let value = match v {
                serde_json::Value::String(s) => Value::String(s),
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

        let dir = match index.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        // Shards in name order (pytorch_model-00001-of-... sorts correctly).
        let mut names: Vec<&str> = raw.weight_map.values().map(String::as_str).collect();
        names.sort_unstable();
        names.dedup();
        let mut files = Vec::with_capacity(names.len());
        for name in &names {
            check_shard_name(name).map_err(invalid)?;
            let path = dir.join(name);
            files.push(TorchFile::open_with(&path, opts).map_err(|e| open_error(&path, e))?);
        }

        // Every mapped tensor is in the shard the map names ...
        let positions: Vec<HashMap<&str, usize>> = files
            .iter()
            .map(|f| {
                f.tensors()
                    .iter()
                    .enumerate()
                    .map(|(i, t)| (t.name.as_str(), i))
                    .collect()
            })
            .collect();
        let shard_of: HashMap<&str, usize> =
            names.iter().enumerate().map(|(i, n)| (*n, i)).collect();
        for (tensor, shard) in &raw.weight_map {
            let present = shard_of
                .get(shard.as_str())
                .and_then(|&s| positions.get(s))
                .is_some_and(|p| p.contains_key(tensor.as_str()));
            if !present {
                return Err(invalid(format!(
                    "tensor `{tensor}` is mapped to {shard} but is not in that file"
                )));
            }
        }
        // ... and every tensor of a shard is mapped to that shard.
        let mut infos = Vec::new();
        let mut locations = Vec::new();
        for (s, (file, name)) in files.iter().zip(&names).enumerate() {
            for (i, info) in file.tensors().iter().enumerate() {
                match raw.weight_map.get(&info.name) {
                    Some(mapped) if mapped == name => {}
                    Some(mapped) => {
                        return Err(invalid(format!(
                            "tensor `{}` is in {name} but the weight map says {mapped}",
                            info.name
                        )));
                    }
                    None => {
                        return Err(invalid(format!(
                            "tensor `{}` in {name} is not in the weight map",
                            info.name
                        )));
                    }
                }
                infos.push(info.clone());
                locations.push((s, i));
            }
        }
        if let Some(first) = files.first() {
            for (k, v) in first.metadata().iter() {
                if metadata.get(k).is_none() {
                    metadata.insert(k, v.clone());
                }
            }
        }
        Ok(TorchCheckpoint {
            files,
            index: Some(index.to_path_buf()),
            infos,
            locations,
            metadata,
            declared_total_size,
        })
    }

    /// The files: one, or the shards in file-name order.
    pub(crate) fn files(&self) -> &[TorchFile] {
        &self.files
    }

    /// Whether this is a sharded checkpoint (read through an index).
    pub(crate) fn is_sharded(&self) -> bool {
        self.index.is_some()
    }

    /// How tensor `i` (in [`Model::tensor_infos`] order) is stored.
    pub(crate) fn tensor(&self, i: usize) -> Option<TorchTensor<'_>> {
        let &(file, j) = self.locations.get(i)?;
        let r = self.files.get(file)?.tensor_refs().get(j)?;
        Some(TorchTensor { file, r })
    }

    /// `"zip"` or `"legacy"`, or `"mixed"` for shards of both.
    pub(crate) fn container(&self) -> &'static str {
        let mut kinds = self.files.iter().map(TorchFile::container);
        let first = kinds.next().unwrap_or("zip");
        if kinds.all(|k| k == first) {
            first
        } else {
            "mixed"
        }
    }

    /// The zip archive prefix, if every file has the same one.
    pub(crate) fn archive_prefix(&self) -> Option<&str> {
        let mut prefixes = self.files.iter().map(TorchFile::archive_prefix);
        let first = prefixes.next()??;
        prefixes.all(|p| p == Some(first)).then_some(first)
    }

    /// `zip, prefix 'archive'` or `legacy`.
    fn container_label(&self) -> String {
        match (self.container(), self.archive_prefix()) {
            ("zip", Some(p)) => format!("zip, prefix '{}'", p.escape_debug()),
            ("mixed", _) => "zip and legacy".to_owned(),
            (c, _) => c.to_owned(),
        }
    }
}

/// A shard name from an index must be a plain file name in the index's
/// directory: no separators, no `..`, not absolute.
fn check_shard_name(name: &str) -> Result<(), String> {
    let bad = name.is_empty()
        || name == "."
        || name == ".."
        || name.contains(['/', '\\', '\0'])
        || Path::new(name).is_absolute();
    if bad {
        return Err(format!("shard name `{name}` is not a plain file name"));
    }
    Ok(())
}

impl Model for TorchCheckpoint {
    fn format_id(&self) -> &'static str {
        if self.is_sharded() {
            "pytorch-sharded"
        } else {
            "pytorch"
        }
    }

    fn format_label(&self) -> String {
        let container = self.container_label();
        match self.files.len() {
            _ if !self.is_sharded() => format!("PyTorch ({container})"),
            1 => format!("PyTorch (sharded, 1 shard; {container})"),
            n => format!("PyTorch (sharded, {n} shards; {container})"),
        }
    }

    fn tensor_infos(&self) -> &[TensorInfo] {
        &self.infos
    }

    fn metadata(&self) -> &Metadata {
        &self.metadata
    }

    fn shards(&self) -> Vec<Shard> {
        if !self.is_sharded() {
            return Vec::new();
        }
        self.files
            .iter()
            .map(|f| Shard {
                path: f.path().to_path_buf(),
                tensor_count: f.tensors().len(),
                // The tensors' bytes: storages shared by several tensors
                // count once per tensor, as in the data size.
                data_bytes: f
                    .tensors()
                    .iter()
                    .filter_map(|t| t.byte_len().ok())
                    .map(to_u64)
                    .fold(0u64, u64::saturating_add),
            })
            .collect()
    }

    fn declared_total_size(&self) -> Option<u64> {
        self.declared_total_size
    }

    fn file_path(&self) -> Option<&Path> {
        match (&self.index, self.files.as_slice()) {
            (None, [f]) => Some(f.path()),
            _ => None,
        }
    }

    fn torch(&self) -> Option<&TorchCheckpoint> {
        Some(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shard_names() {
        for ok in ["pytorch_model-00001-of-00002.bin", "a.bin", "..a.bin"] {
            assert!(check_shard_name(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            ".",
            "..",
            "../x.bin",
            "a/b.bin",
            "a\\b.bin",
            "/etc/passwd",
            "a\0",
        ] {
            assert!(check_shard_name(bad).is_err(), "{bad:?}");
        }
        assert!(is_index_name("pytorch_model.bin.index.json"));
        assert!(!is_index_name("model.safetensors.index.json"));
    }
}
