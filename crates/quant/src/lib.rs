//! # weightkit-quant
//!
//! ggml's block quantization formats, bit-exact with llama.cpp.
#![deny(missing_docs)]

pub mod api;
pub mod common;
mod error;
pub mod iquants;
pub mod kquants;
pub mod legacy;
pub mod simd;

pub use api::{
    can_dequantize, can_quantize, dequantize, dequantize_parallel, quantize, quantize_into,
    quantize_into_parallel, row_size, uses_importance,
};
pub use error::QuantError;
