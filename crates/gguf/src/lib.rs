//! # weightkit-gguf
//!
//! [GGUF](https://github.com/ggml-org/ggml/blob/master/docs/gguf.md), the file
//! format of llama.cpp and most local-inference tools.
//!
//! - [`GgufFile::open`] memory-maps a GGUF v2/v3 file, validates it with
//!   llama.cpp's rules (and checks every length against the file before
//!   allocating), and lends zero-copy tensor views. Shapes are converted to
//!   row-major, outermost-first order (GGUF stores `ne[]` innermost first).
//! - Metadata is the core typed [`Metadata`](weightkit_core::Metadata), in
//!   file order, with typed accessors (`get_u32("llama.block_count")`) that
//!   report a wrong type as an error. Strings that are not UTF-8 are kept
//!   byte for byte as `Value::RawString`.
//! - [`GgufWriter`] streams a GGUF v3 file from a declared tensor list,
//!   padding as gguf-py does, through a temporary file renamed into place by
//!   `finish()`.
#![deny(missing_docs)]

mod error;
pub mod header;
mod read;
pub mod write;

pub use error::{Error, Result};
pub use header::{GgufTensorInfo, Header, ReadOptions};
pub use read::GgufFile;
pub use write::{GgufWriter, WriterOptions, serialize};
