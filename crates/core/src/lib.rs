//! # weightkit-core
//!
//! The bottom layer of weightkit: the vocabulary every other crate speaks.
//!
//! - [`DType`]: every safetensors dtype and every ggml type id, with block
//!   sizes and name mappings both ways.
//! - [`Shape`]: row-major (outermost first) dimensions with checked element and
//!   byte counts.
//! - [`TensorView`] (borrowed) and [`Tensor`] (owned: heap or a shared buffer
//!   such as an mmap), and [`CowTensor`] for readers that lend either.
//! - [`convert`]: fast bulk f16/bf16 <-> f32 conversion with nearest-even
//!   rounding.
//! - [`Metadata`]: ordered, typed file metadata.
//! - [`TensorSource`] / [`TensorSink`]: the streaming reader and writer traits
//!   every format implements, and [`WriteCursor`], the bookkeeping writers
//!   share.
//! - [`atomic::AtomicFile`]: temp file + rename, used by every writer.
//!
//! A model, to weightkit, is an ordered set of named tensors plus metadata;
//! everything here serves moving such a set between formats one tensor at a
//! time, in bounded memory.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod atomic;
pub mod convert;
pub mod dtype;
mod error;
pub mod metadata;
pub mod shape;
pub mod stream;
pub mod tensor;

pub use dtype::{DType, Packing};
pub use error::CoreError;
pub use metadata::{Array, Metadata, Value, ValueType};
pub use shape::Shape;
pub use stream::{Piece, TensorSink, TensorSource, WriteCursor};
pub use tensor::{CowTensor, SharedBytes, Storage, Tensor, TensorInfo, TensorView};
