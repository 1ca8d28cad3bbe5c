//! weightkit-init's integration tests (one binary).
#![allow(missing_docs)]

mod closed_form;
mod determinism;
mod errors;
mod json;
mod lora;
mod orthogonal;
mod props;
mod stats;
mod support;
mod torch_exact;
