//! # weightkit-pickle
//!
//! PyTorch checkpoints (`.bin`, `.pt`, `.pth`) read without executing code,
//! and written so that `torch.load(path, weights_only=True)` accepts them.
//!
//! - [`vm`]: a pickle virtual machine for protocols 0-5 that builds an object
//!   graph and never calls anything. Globals outside the caller's allow-list
//!   are an error the moment they appear; memo, stack, object count, nesting
//!   and string sizes are all limited.
//! - [`zip`]: a strict ZIP reader (zero-copy stored entries, bomb and
//!   traversal checks) and a writer that lays entries out as torch does.
//! - [`TorchFile`]: the zip format (any archive prefix) and the legacy
//!   format, `_rebuild_tensor_v2`/`v3`, parameters, views with offsets and
//!   strides (contiguous ones lent zero-copy, strided ones copied), shared
//!   storages, nested state dicts.
//! - [`TorchWriter`]: the zip format as torch 2.x writes it, streamed.
#![deny(missing_docs)]

mod error;
mod read;
pub mod torch;
pub mod vm;
mod write;
pub mod zip;

pub use error::{Error, Result};
pub use read::{LEGACY_MAGIC, LoadOptions, StateDictKey, TorchFile};
pub use write::{TorchWriter, TorchWriterOptions, data_pkl, is_writable};
