//! Architecture knowledge for the Llama family: what llama.cpp's
//! `convert_hf_to_gguf.py` knows, as tables and pure functions.
//!
//! Converting a Hugging Face checkpoint to GGUF (and back) needs four things
//! besides moving bytes, and each lives in its own submodule:
//!
//! - [`names`]: Hugging Face tensor names <-> GGUF tensor names
//!   (`model.layers.3.self_attn.q_proj.weight` <-> `blk.3.attn_q.weight`), with
//!   the tensors the converter drops (rotary `inv_freq` buffers) and an error
//!   naming any tensor the architecture does not have.
//! - [`permute`]: the row permutation `convert_hf_to_gguf.py` applies to the q
//!   and k projections of `llama`-architecture models (ggml's rope rotates
//!   adjacent pairs, Hugging Face's rotates halves), and its exact inverse, over
//!   raw element bytes of any width.
//! - [`config`]: `config.json` (transformers 4 and 5 layouts) <-> GGUF
//!   metadata, and the `rope_freqs.weight` tensor that Llama-3 rope scaling
//!   needs.
//! - [`tokenizer`]: `tokenizer.json` / `tokenizer_config.json` /
//!   `tokenizer.model` -> the `tokenizer.*` GGUF keys.
//!
//! Everything here is checked against files written by the real converter
//! (`testdata/arch/expected/`, made by `testdata/arch/make_gguf.py`), key by key
//! and byte by byte.
//!
//! Three Hugging Face architectures are supported ([`Arch`]): `llama`
//! (`LlamaForCausalLM`: Llama 1/2/3, TinyLlama, SmolLM...), `mistral`
//! (`MistralForCausalLM`, written as GGUF architecture `llama`, exactly as the
//! converter does) and `qwen2` (`Qwen2ForCausalLM`, GGUF architecture `qwen2`,
//! q/k/v biases, no rope permutation).
//!
//! ```
//! use weightkit_io::arch::{
//!     GgufOptions, ModelConfig, TensorNames, TokenizerFiles, hf_to_gguf_metadata, permute_rows,
//! };
//!
//! let cfg = ModelConfig::from_hf_json_str(
//!     r#"{"architectures": ["LlamaForCausalLM"], "vocab_size": 32000, "hidden_size": 64,
//!         "intermediate_size": 172, "num_hidden_layers": 2, "num_attention_heads": 4,
//!         "num_key_value_heads": 2, "rms_norm_eps": 1e-5, "rope_theta": 10000.0}"#,
//! )?;
//! // No tokenizer files: `tokenizer.ggml.model = "none"`.
//! let meta = hf_to_gguf_metadata(&cfg, &TokenizerFiles::default(), &GgufOptions::default(), None)?;
//! assert_eq!(meta.get_str("general.architecture"), Some("llama"));
//! assert_eq!(meta.get_str("tokenizer.ggml.model"), Some("none"));
//!
//! let names = TensorNames::from_config(&cfg)?;
//! let k = names.to_gguf("model.layers.1.self_attn.k_proj.weight")?.unwrap();
//! assert_eq!((k.name.as_str(), k.permute_heads), ("blk.1.attn_k.weight", Some(2)));
//! // k is [n_head_kv * head_dim, hidden] = [32, 64]; bf16 elements are 2 bytes.
//! let bf16_bytes = vec![0u8; 32 * 64 * 2];
//! let gguf_bytes = permute_rows(&bf16_bytes, 2, 32, 64, k.permute_heads.unwrap())?;
//! # assert_eq!(gguf_bytes.len(), bf16_bytes.len());
//! # Ok::<(), weightkit_io::arch::ArchError>(())
//! ```

pub mod config;
pub mod names;
pub mod permute;
mod spm;
pub mod tokenizer;

pub use config::{GgufOptions, ModelConfig, RopeScaling, size_label};
pub use names::{GgufTensorName, HfTensorName, TensorNames};
pub use permute::{permute_rows, unpermute_rows};
pub use tokenizer::{TokenType, TokenizerFiles, TokenizerOptions, tokenizer_metadata};

use std::fmt;
use std::path::PathBuf;

/// Everything that can go wrong in the architecture tables.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ArchError {
    /// An architecture (Hugging Face class, `model_type` or GGUF
    /// `general.architecture`) that is not supported.
    #[error("unsupported architecture {found:?} (supported: {supported})")]
    UnsupportedArchitecture {
        /// What was found.
        found: String,
        /// The supported names of that kind, comma-separated.
        supported: String,
    },
    /// A tensor name the architecture does not have.
    #[error("{arch}: cannot map tensor {name:?}: {reason}")]
    UnknownTensor {
        /// The architecture (GGUF name).
        arch: &'static str,
        /// The tensor name.
        name: String,
        /// Why (not a known name, block index out of range...).
        reason: String,
    },
    /// A JSON file that does not parse.
    #[error("{file}: invalid JSON")]
    Json {
        /// Which file (`config.json`, `tokenizer.json`...).
        file: &'static str,
        /// The parser's error.
        #[source]
        source: serde_json::Error,
    },
    /// A required `config.json` key is missing.
    #[error("config.json: missing required key {key:?}")]
    MissingConfigKey {
        /// The key.
        key: &'static str,
    },
    /// A `config.json` value of the wrong type or out of range.
    #[error("config.json: {key:?}: {reason}")]
    InvalidConfig {
        /// The key.
        key: String,
        /// What is wrong.
        reason: String,
    },
    /// A required GGUF metadata key is missing.
    #[error("GGUF metadata: missing required key {key:?}")]
    MissingMetadata {
        /// The key.
        key: String,
    },
    /// A GGUF metadata value of the wrong type or out of range.
    #[error("GGUF metadata: {key:?}: {reason}")]
    InvalidMetadata {
        /// The key.
        key: String,
        /// What is wrong.
        reason: String,
    },
    /// A rope scaling this crate refuses to convert (see
    /// [`RopeScaling`] for what is supported and why the rest is refused).
    #[error("unsupported rope scaling {rope_type:?}: {reason}")]
    UnsupportedRopeScaling {
        /// The `rope_type` (or `type`) value.
        rope_type: String,
        /// Why it is refused.
        reason: String,
    },
    /// A shape the q/k permutation cannot apply to.
    #[error(
        "cannot permute {rows}x{cols} rows of {elem_size}-byte elements ({len} bytes) for {n_head} heads: {reason}"
    )]
    Permute {
        /// Rows (output features).
        rows: usize,
        /// Columns (input features; 1 for a bias).
        cols: usize,
        /// Bytes per element.
        elem_size: usize,
        /// Heads.
        n_head: usize,
        /// Bytes given.
        len: usize,
        /// What is wrong.
        reason: &'static str,
    },
    /// A tokenizer file with content the converter cannot use.
    #[error("{file}: {reason}")]
    Tokenizer {
        /// Which file.
        file: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// A malformed SentencePiece `tokenizer.model`.
    #[error("tokenizer.model: {reason} at byte offset {offset}")]
    SentencePiece {
        /// Where.
        offset: usize,
        /// What is wrong.
        reason: &'static str,
    },
    /// An I/O error reading a model directory's file.
    #[error("{path}: I/O error")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
}

/// The whole GGUF metadata of a Hugging Face model, as the converter writes
/// it: the config's keys ([`ModelConfig::to_gguf_metadata`]) then the
/// tokenizer's ([`tokenizer_metadata`], with `pre` naming
/// `tokenizer.ggml.pre` for a byte-level BPE vocabulary or `None` for the
/// heuristic).
pub fn hf_to_gguf_metadata(
    config: &ModelConfig,
    tokenizer: &TokenizerFiles,
    opts: &GgufOptions,
    pre: Option<&str>,
) -> Result<weightkit_core::Metadata> {
    let mut m = config.to_gguf_metadata(opts)?;
    let mut topts = TokenizerOptions::from_config(config);
    topts.pre = pre.map(str::to_owned);
    for (k, v) in tokenizer_metadata(tokenizer, &topts)?.iter() {
        m.insert(k, v.clone());
    }
    Ok(m)
}

/// Result alias for this module.
pub type Result<T, E = ArchError> = std::result::Result<T, E>;

/// A supported Hugging Face architecture.
///
/// The GGUF side has two architectures: `llama` (for [`Arch::Llama`] and
/// [`Arch::Mistral`], as `convert_hf_to_gguf.py` registers
/// `MistralForCausalLM` under its `LlamaModel`) and `qwen2`. Reading a GGUF
/// file back therefore gives [`Arch::Llama`] for a converted Mistral: the two
/// compute the same function (llama.cpp ignores Mistral's sliding window for
/// architecture `llama` too).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Arch {
    /// `LlamaForCausalLM` (`model_type` `llama`).
    Llama,
    /// `MistralForCausalLM` (`model_type` `mistral`).
    Mistral,
    /// `Qwen2ForCausalLM` (`model_type` `qwen2`).
    Qwen2,
}

impl Arch {
    /// Every supported architecture.
    pub const ALL: [Arch; 3] = [Arch::Llama, Arch::Mistral, Arch::Qwen2];

    /// The Hugging Face class name (`config.json` `architectures[0]`).
    pub fn hf_class(self) -> &'static str {
        match self {
            Arch::Llama => "LlamaForCausalLM",
            Arch::Mistral => "MistralForCausalLM",
            Arch::Qwen2 => "Qwen2ForCausalLM",
        }
    }

    /// The transformers `model_type`.
    pub fn model_type(self) -> &'static str {
        match self {
            Arch::Llama => "llama",
            Arch::Mistral => "mistral",
            Arch::Qwen2 => "qwen2",
        }
    }

    /// The GGUF `general.architecture` the converter writes.
    pub fn gguf_arch(self) -> &'static str {
        match self {
            Arch::Llama | Arch::Mistral => "llama",
            Arch::Qwen2 => "qwen2",
        }
    }

    /// Whether q/k projections are permuted for ggml's rope on the way to
    /// GGUF (`LlamaModel.undo_permute`): true for `llama`, false for `qwen2`,
    /// whose GGUF architecture uses NeoX-style rope on the Hugging Face layout.
    pub fn permutes_qk(self) -> bool {
        matches!(self, Arch::Llama | Arch::Mistral)
    }

    /// The architecture of a Hugging Face class name (`LlamaForCausalLM`).
    /// Also accepts `LLaMAForCausalLM` and the bare `LlamaModel` /
    /// `Qwen2Model`, as the converter does.
    pub fn from_hf_class(name: &str) -> Result<Arch> {
        match name {
            "LlamaForCausalLM" | "LLaMAForCausalLM" | "LlamaModel" => Ok(Arch::Llama),
            "MistralForCausalLM" => Ok(Arch::Mistral),
            "Qwen2ForCausalLM" | "Qwen2Model" => Ok(Arch::Qwen2),
            _ => Err(unsupported(name, Arch::hf_class)),
        }
    }

    /// The architecture of a transformers `model_type`.
    pub fn from_model_type(name: &str) -> Result<Arch> {
        Arch::ALL
            .into_iter()
            .find(|a| a.model_type() == name)
            .ok_or_else(|| unsupported(name, Arch::model_type))
    }

    /// The architecture of a GGUF `general.architecture` (`llama` gives
    /// [`Arch::Llama`]).
    pub fn from_gguf_arch(name: &str) -> Result<Arch> {
        match name {
            "llama" => Ok(Arch::Llama),
            "qwen2" => Ok(Arch::Qwen2),
            _ => Err(ArchError::UnsupportedArchitecture {
                found: name.to_owned(),
                supported: "llama, qwen2".to_owned(),
            }),
        }
    }
}

fn unsupported(found: &str, f: fn(Arch) -> &'static str) -> ArchError {
    ArchError::UnsupportedArchitecture {
        found: found.to_owned(),
        supported: Arch::ALL.map(f).join(", "),
    }
}

impl fmt::Display for Arch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.model_type())
    }
}
