//! The core error type.

use crate::dtype::DType;
use crate::shape::Shape;

/// Errors from core type arithmetic and from checks every format shares.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CoreError {
    /// An element or byte count does not fit in `usize`.
    #[error("element or byte count overflows usize")]
    Overflow,
    /// A sub-byte dtype whose element count does not fill whole bytes.
    #[error("{elems} elements of {dtype} do not fill a whole number of bytes")]
    NotWholeBytes {
        /// The dtype.
        dtype: DType,
        /// The element count.
        elems: usize,
    },
    /// A block dtype whose row is not a whole number of blocks.
    #[error("row of {elems} elements is not a multiple of the {dtype} block size {block}")]
    NotWholeBlocks {
        /// The dtype.
        dtype: DType,
        /// The row length.
        elems: usize,
        /// The block length.
        block: usize,
    },
    /// A buffer whose length does not match the shape and dtype.
    #[error("tensor `{name}`: {dtype} {shape} needs {expected} bytes, got {found}")]
    LengthMismatch {
        /// Tensor name (empty when unnamed).
        name: String,
        /// The dtype.
        dtype: DType,
        /// The shape.
        shape: Shape,
        /// Bytes the shape and dtype need.
        expected: usize,
        /// Bytes supplied.
        found: usize,
    },
    /// An unrecognised dtype name.
    #[error("unknown dtype `{0}`")]
    UnknownDType(String),
    /// A conversion between dtypes that is not supported.
    #[error("cannot convert {from} to {to}")]
    UnsupportedConversion {
        /// Source dtype.
        from: DType,
        /// Target dtype.
        to: DType,
    },
    /// A tensor name that is not in the source.
    #[error("no tensor named `{0}`")]
    TensorNotFound(String),
    /// A writer was given data out of order or for an undeclared tensor.
    #[error("writer expected tensor `{expected}`, got `{found}`")]
    UnexpectedTensor {
        /// The tensor the writer expected next (empty when all were written).
        expected: String,
        /// The tensor offered.
        found: String,
    },
    /// A writer was given more bytes than the declared tensors hold.
    #[error("writer given {extra} bytes past the end of the declared tensors")]
    TooMuchData {
        /// Bytes beyond the declared total.
        extra: usize,
    },
    /// `finish()` was called before every declared tensor was written.
    #[error("finish() called with tensor `{next}` not fully written ({missing} bytes missing)")]
    Incomplete {
        /// The first tensor not fully written.
        next: String,
        /// Bytes still missing in total.
        missing: usize,
    },
    /// Two declared tensors share a name.
    #[error("duplicate tensor name `{0}`")]
    DuplicateName(String),
}
