#![doc = include_str!("../README.md")]
#![deny(missing_docs)]
#![forbid(unsafe_code)]

pub mod adapter;
pub mod combine;
mod error;
pub mod export;
pub mod extract;
pub mod gguf;
pub mod gguf_base;
mod linalg;
pub mod merge;
pub mod merged;

pub use adapter::{Adapter, AdapterConfig, LoraModule, PeftTensor, TargetModules};
pub use combine::{CombinationType, CombineOptions, MajoritySignMethod, add_weighted_adapter};
pub use error::{BoxError, LoraError};
pub use export::{ExportFormat, ExportOptions, ExportReport, export};
pub use extract::{ExtractOptions, ExtractRank, ExtractReport, ModuleError, extract_lora};
pub use gguf::{
    GgufAdapter, GgufExportOptions, GgufModule, GgufOutType, adapter_from_gguf, base_config,
    export_gguf, export_gguf_tensors, import_gguf,
};
pub use gguf_base::{
    GgufMergeOptions, GgufMergeReport, GgufMergedTensor, gguf_merge_infos, merge_gguf_base,
};
pub use merge::{
    MergeOptions, MergeReport, apply_bias, apply_module, apply_module_in_place, merge_into,
    merge_lora, unmerge_into, unmerge_lora,
};
pub use merged::{MergedDType, MergedTensors, merged_model};
