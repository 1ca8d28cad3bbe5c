//! # weightkit-safetensors
//!
//! [safetensors](https://github.com/huggingface/safetensors) for weightkit:
//!
//! - [`SafetensorsFile::open`] memory-maps a file, validates its header and
//!   lends zero-copy [`TensorView`](weightkit_core::TensorView)s;
//!   [`SafeTensors::parse`] does the same over any byte slice.
//! - [`ShardedSafetensors::open`] opens a Hugging Face sharded checkpoint
//!   through `model.safetensors.index.json` as one tensor source.
//! - [`SafetensorsWriter`] streams a file from a declared tensor list in
//!   bounded memory, through a temporary file renamed into place by
//!   `finish()`; [`ShardedWriter`] does the same for a sharded checkpoint
//!   with transformers' shard assignment and index.
//! - [`open_checkpoint`] picks single-file or sharded for a path.
//!
//! ```no_run
//! use weightkit_core::{DType, TensorInfo, TensorSink};
//! use weightkit_safetensors::{SafetensorsFile, ShardedWriter};
//!
//! // Zero-copy, validated read (the file is memory-mapped).
//! let src = SafetensorsFile::open("model.safetensors")?;
//! let q = src.tensor("model.layers.0.self_attn.q_proj.weight")?;
//! println!("{} {} {} bytes", q.dtype(), q.shape(), q.data().len());
//!
//! // Stream a bf16 copy into transformers-style shards, in bounded memory,
//! // atomically (temporary files renamed into place by `finish`).
//! let infos = src
//!     .tensors()
//!     .iter()
//!     .map(|t| TensorInfo::new(t.name.clone(), DType::BF16, t.shape.clone()))
//!     .collect();
//! let mut out = ShardedWriter::create("out/", "model", infos, src.metadata(), 5 << 30)?;
//! for t in src.tensors() {
//!     let bf16 = src.tensor_shared(&t.name)?.to_dtype(DType::BF16)?;
//!     out.write_tensor(&t.name, bf16.data())?;
//! }
//! out.finish()?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! Validation is at least as strict as the `safetensors` crate, and every
//! malformation is its own [`Error`] variant naming the tensor and offsets.
//! Parsing never panics and allocates in proportion to the header only after
//! the header length has been checked against the file.
#![deny(missing_docs)]

mod error;
pub mod header;
mod read;
pub mod sharded;
pub mod write;

use std::path::{Path, PathBuf};

pub use error::{Error, Result};
pub use header::{Header, MAX_HEADER_SIZE};
pub use read::{SafeTensors, SafetensorsFile};
pub use sharded::{INDEX_FILE, ShardedSafetensors, ShardedWriter};
pub use write::{
    Layout, SafetensorsWriter, WriterOptions, header_bytes, serialize, serialize_with_layout,
    sort_like_safetensors, write_file,
};

use weightkit_core::{CowTensor, Metadata, TensorInfo, TensorSource};

/// A single-file or sharded safetensors checkpoint.
#[derive(Debug)]
pub enum Checkpoint {
    /// One `.safetensors` file.
    Single(SafetensorsFile),
    /// Shards behind an index.
    Sharded(ShardedSafetensors),
}

/// Opens a `.safetensors` file, a `*.safetensors.index.json`, or a directory
/// holding `model.safetensors.index.json`, `model.safetensors` or exactly one
/// `*.safetensors` file.
pub fn open_checkpoint(path: impl AsRef<Path>) -> Result<Checkpoint> {
    let path = path.as_ref();
    if path.is_dir() {
        if path.join(INDEX_FILE).is_file() {
            return Ok(Checkpoint::Sharded(ShardedSafetensors::open(path)?));
        }
        let single = path.join("model.safetensors");
        if single.is_file() {
            return Ok(Checkpoint::Single(SafetensorsFile::open(single)?));
        }
        let mut found: Vec<PathBuf> = std::fs::read_dir(path)
            .map_err(error::Error::io(path))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_file() && p.extension().is_some_and(|e| e == "safetensors"))
            .collect();
        found.sort();
        let mut indexes: Vec<PathBuf> = std::fs::read_dir(path)
            .map_err(error::Error::io(path))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.to_string_lossy().ends_with(".safetensors.index.json"))
            .collect();
        indexes.sort();
        if indexes.len() == 1 {
            return Ok(Checkpoint::Sharded(ShardedSafetensors::open(&indexes[0])?));
        }
        if found.len() == 1 {
            return Ok(Checkpoint::Single(SafetensorsFile::open(&found[0])?));
        }
        return Err(Error::NoCheckpoint {
            path: path.to_path_buf(),
            candidates: found.len(),
        });
    }
    if path.to_string_lossy().ends_with(".safetensors.index.json") {
        return Ok(Checkpoint::Sharded(ShardedSafetensors::open(path)?));
    }
    Ok(Checkpoint::Single(SafetensorsFile::open(path)?))
}

impl Checkpoint {
    /// Releases tensor `i`'s mapped pages (see
    /// [`SafetensorsFile::release_tensor_pages`]).
    ///
    /// # Safety
    ///
    /// Nothing may borrow the tensor's bytes.
    pub unsafe fn release_tensor_pages(&self, i: usize) {
        match self {
            // SAFETY: forwarded to the caller.
            Checkpoint::Single(f) => unsafe { f.release_tensor_pages(i) },
            // SAFETY: forwarded to the caller.
            Checkpoint::Sharded(s) => unsafe { s.release_tensor_pages(i) },
        }
    }
}

impl TensorSource for Checkpoint {
    type Error = Error;

    fn tensor_infos(&self) -> &[TensorInfo] {
        match self {
            Checkpoint::Single(f) => f.tensor_infos(),
            Checkpoint::Sharded(s) => s.tensor_infos(),
        }
    }

    fn metadata(&self) -> &Metadata {
        match self {
            Checkpoint::Single(f) => TensorSource::metadata(f),
            Checkpoint::Sharded(s) => TensorSource::metadata(s),
        }
    }

    fn load(&self, index: usize) -> Result<CowTensor<'_>> {
        match self {
            Checkpoint::Single(f) => f.load(index),
            Checkpoint::Sharded(s) => s.load(index),
        }
    }

    fn position(&self, name: &str) -> Option<usize> {
        match self {
            Checkpoint::Single(f) => f.position(name),
            Checkpoint::Sharded(s) => s.position(name),
        }
    }
}
