//! # weightkit-io
//!
//! One door to every checkpoint: open any format as one tensor source,
//! convert between formats in one streaming pass, and quantize to GGUF with
//! llama-quantize's named mixtures. Carries the architecture knowledge
//! (Hugging Face Llama-family names and config <-> GGUF names and metadata).
#![deny(missing_docs)]

pub mod arch;
pub mod convert;
mod error;
pub mod imatrix;
pub mod mixture;
pub mod plan;
pub mod quantize;
pub mod source;

pub use error::{BoxError, IoError};
pub use source::{Format, Model, Overlay, Source, open};
