//! The crate's error type.

use std::path::PathBuf;

/// A boxed error from another weightkit crate.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Everything that can go wrong loading or merging an adapter.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LoraError {
    /// An I/O error on `path`.
    #[error("{path}: I/O error")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// `adapter_config.json` is not valid JSON or has a field of the wrong type.
    #[error("{path}: invalid adapter config")]
    ConfigJson {
        /// The config file.
        path: PathBuf,
        /// The parse error.
        #[source]
        source: serde_json::Error,
    },
    /// A config field has a value this crate cannot honour (it would change
    /// the merged weights, so it is never ignored).
    #[error("adapter config field `{field}`: {message}")]
    Config {
        /// The field.
        field: String,
        /// Why it is rejected.
        message: String,
    },
    /// `peft_type` is not `LORA`.
    #[error("unsupported peft_type {0:?} (only LORA is supported)")]
    PeftType(String),
    /// A tensor in the adapter file that is not a LoRA factor, DoRA
    /// magnitude or `modules_to_save` weight.
    #[error("adapter tensor `{0}` is not a LoRA weight this crate understands")]
    UnknownKey(String),
    /// A module has one LoRA factor but not the other.
    #[error("adapter module `{module}` is missing `{missing}`")]
    MissingFactor {
        /// The module.
        module: String,
        /// The missing tensor kind (`lora_A`, `lora_B`).
        missing: &'static str,
    },
    /// The factors' ranks disagree with each other or with the configured rank.
    #[error(
        "adapter module `{module}`: rank mismatch (lora_A has {a}, lora_B has {b}, config says {config})"
    )]
    RankMismatch {
        /// The module.
        module: String,
        /// Rows of `lora_A`.
        a: usize,
        /// Columns of `lora_B`.
        b: usize,
        /// `r` after `rank_pattern`.
        config: usize,
    },
    /// A tensor has a shape that does not fit.
    #[error("tensor `{name}`: expected shape {expected:?}, found {found:?}")]
    Shape {
        /// The tensor.
        name: String,
        /// What was expected.
        expected: Vec<usize>,
        /// What was found.
        found: Vec<usize>,
    },
    /// An adapter module has no matching tensor in the base.
    #[error("adapter module `{module}` has no base tensor `{tensor}`")]
    MissingBaseTensor {
        /// The adapter module.
        module: String,
        /// The base tensor looked for.
        tensor: String,
    },
    /// A module has LoRA weights but is not matched by `target_modules`.
    #[error("adapter module `{0}` is not matched by target_modules")]
    NotTargeted(String),
    /// Something valid but not implemented yet.
    #[error("unsupported: {0}")]
    Unsupported(String),
    /// `safe_merge` found NaN or infinity in a merged tensor.
    #[error("merged tensor `{0}` contains NaN or infinite values")]
    NonFinite(String),
    /// Opening or reading a checkpoint failed.
    #[error("reading checkpoint")]
    Read(#[source] weightkit_io::IoError),
    /// Writing the output failed.
    #[error("{path}: writing merged checkpoint")]
    Write {
        /// The output path.
        path: PathBuf,
        /// Why.
        #[source]
        source: BoxError,
    },
    /// A tensor's value count is not the product of its shape.
    #[error("tensor `{name}`: shape {shape:?} does not hold {values} values")]
    ValueCount {
        /// The tensor.
        name: String,
        /// Its declared shape.
        shape: Vec<usize>,
        /// How many values were given.
        values: usize,
    },
    /// Two adapter tensors that PEFT would load into the same place
    /// (`lora_magnitude_vector` and `lora_magnitude_vector.weight`, a key
    /// given twice ...).
    #[error("adapter tensors `{first}` and `{second}` are the same PEFT weight")]
    DuplicateTensor {
        /// The first key.
        first: String,
        /// The second key.
        second: String,
    },
    /// The adapter directory to save into exists and is not a directory.
    #[error("{0}: exists and is not a directory")]
    NotADirectory(PathBuf),
    /// Writing a saved adapter's file failed.
    #[error("{path}: writing adapter")]
    Save {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: BoxError,
    },
    /// The caller's sink (see [`crate::merge_into`]) failed.
    #[error("writing merged tensor `{tensor}`")]
    Sink {
        /// The tensor being written, or `finish` for the final step.
        tensor: String,
        /// The sink's error.
        #[source]
        source: BoxError,
    },
    /// `add_weighted_adapter` was given no adapters.
    #[error("no adapters to combine")]
    NoAdapters,
    /// A combination or extraction argument is missing or out of range.
    #[error("argument `{name}`: {message}")]
    CombineArgument {
        /// The argument (PEFT's name: `density`, `svd_rank` ...).
        name: &'static str,
        /// What is wrong.
        message: String,
    },
    /// The adapters cannot be combined at `module` (`*`: any module).
    #[error("cannot combine adapters at module `{module}`: {message}")]
    Incompatible {
        /// The module.
        module: String,
        /// Why.
        message: String,
    },
    /// A factor-wise combination (`linear`, `ties`, `dare_*`,
    /// `magnitude_prune`) of adapters whose ranks differ.
    #[error(
        "combination_type {method} needs adapters of equal rank; module `{module}` has ranks {ranks:?}"
    )]
    CombineRanks {
        /// The combination type.
        method: &'static str,
        /// The module (`*` when the configs' ranks already differ).
        module: String,
        /// The ranks, one per adapter.
        ranks: Vec<usize>,
    },
    /// A requested rank outside `1..=min(rows, cols)` of a module.
    #[error("module `{module}`: rank {rank} is outside 1..={max}")]
    RankRange {
        /// The module.
        module: String,
        /// The rank asked for.
        rank: usize,
        /// `min(rows, cols)`.
        max: usize,
    },
    /// The SVD of a module's delta did not converge or was not finite.
    #[error("module `{module}`: SVD failed (did not converge or non-finite values)")]
    Svd {
        /// The module.
        module: String,
    },
    /// A tensor of the base checkpoint is missing from the fine-tuned one.
    #[error("fine-tuned checkpoint has no tensor `{0}` (the base has it)")]
    MissingFinetuned(String),
    /// A tensor conversion failed.
    #[error("tensor `{name}`: conversion failed")]
    Convert {
        /// The tensor.
        name: String,
        /// Why.
        #[source]
        source: weightkit_core::CoreError,
    },
    /// A tensor quantization or dequantization failed.
    #[error("tensor `{name}`: quantization failed")]
    Quant {
        /// The tensor.
        name: String,
        /// Why.
        #[source]
        source: weightkit_quant::QuantError,
    },
    /// Reading or writing a GGUF file failed.
    #[error("{path}: GGUF")]
    Gguf {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: weightkit_gguf::Error,
    },
    /// The architecture tables (names, q/k permutation, config) refused.
    #[error("base model architecture")]
    Arch(#[source] weightkit_io::arch::ArchError),
    /// A tensor that a llama.cpp GGUF LoRA adapter cannot hold (or, on
    /// import, a GGUF tensor that is not a LoRA factor).
    #[error("tensor `{tensor}`: not supported in a llama.cpp GGUF LoRA adapter: {reason}")]
    GgufUnsupported {
        /// The PEFT key or GGUF tensor name.
        tensor: String,
        /// Why.
        reason: String,
    },
    /// A GGUF adapter's metadata key is missing or wrong.
    #[error("GGUF adapter metadata `{key}`: {message}")]
    GgufMetadata {
        /// The key.
        key: String,
        /// What is wrong.
        message: String,
    },
    /// A GGUF adapter's `lora_a` and `lora_b` disagree on the rank.
    #[error("GGUF adapter tensor `{tensor}`: rank mismatch (lora_a has {a}, lora_b has {b})")]
    GgufRankMismatch {
        /// The GGUF base tensor.
        tensor: String,
        /// The rank of `lora_a`.
        a: usize,
        /// The rank of `lora_b`.
        b: usize,
    },
    /// Importing the q/k factors of a `llama` adapter needs the base
    /// model's head counts (the GGUF adapter does not record them).
    #[error(
        "GGUF adapter tensor `{0}` is rope-permuted: the base model's config is needed to undo it"
    )]
    NeedsBaseConfig(String),
}
