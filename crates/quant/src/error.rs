//! The crate's error type.

use weightkit_core::DType;

/// Errors from quantization, dequantization and dot products.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum QuantError {
    /// A row length that is not a multiple of the type's block size.
    #[error("{dtype}: row of {n} elements is not a multiple of the block size {block}")]
    RowNotBlockMultiple {
        /// The type.
        dtype: DType,
        /// Row length.
        n: usize,
        /// Block size.
        block: usize,
    },
    /// A buffer whose length does not match what the operation needs.
    #[error("{what}: buffer of {found} {unit}, expected {expected}")]
    BufferLength {
        /// Which buffer.
        what: &'static str,
        /// Expected length.
        expected: usize,
        /// Found length.
        found: usize,
        /// "bytes", "elements" or "blocks".
        unit: &'static str,
    },
    /// A NaN or infinite input value.
    #[error("non-finite input {value} at element {index}")]
    NonFiniteInput {
        /// Element index in the source.
        index: usize,
        /// The value.
        value: f32,
    },
    /// A NaN, infinite or negative importance weight.
    #[error("invalid importance weight {value} at column {index} (must be finite and >= 0)")]
    InvalidImportance {
        /// Column.
        index: usize,
        /// The value.
        value: f32,
    },
    /// The type has no quantizer (ggml has none either), or no dequantizer.
    #[error("{dtype}: {what} is not available for this type")]
    Unsupported {
        /// The type.
        dtype: DType,
        /// "quantize", "dequantize" or "vec_dot".
        what: &'static str,
    },
    /// The type needs an importance matrix to quantize (IQ2/IQ1 families in ggml).
    #[error("{dtype}: quantizing needs an importance matrix")]
    ImportanceRequired {
        /// The type.
        dtype: DType,
    },
}
