#![doc = include_str!("../README.md")]
#![deny(missing_docs)]
#![forbid(unsafe_code)]

pub mod adapter;
mod error;
pub mod merge;

pub use adapter::{Adapter, AdapterConfig, LoraModule, PeftTensor, TargetModules};
pub use error::{BoxError, LoraError};
pub use merge::{
    MergeOptions, MergeReport, apply_bias, apply_module, apply_module_in_place, merge_into,
    merge_lora, unmerge_into, unmerge_lora,
};
