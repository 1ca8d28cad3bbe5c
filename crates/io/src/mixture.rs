//! llama-quantize's named mixtures: which ggml type each tensor gets.
//!
//! `llama-quantize model.gguf out.gguf Q4_K_M` does not put every tensor in
//! Q4_K. It walks the tensors in a fixed order and, per tensor, picks a type
//! from the tensor's name, shape and position (`attn_v` and `ffn_down` of
//! some layers get more bits, `output.weight` gets Q6_K, norms stay as they
//! are ...), then falls back to a compatible type when a row is not a whole
//! number of blocks. Users compare files by those names, so a "Q4_K_M" that
//! differs from llama.cpp's by one tensor is a bug. This module is a port of
//! that choice, and only of the choice: it reads no tensor data.
//!
//! The port follows `src/llama-quant.cpp` (`tensor_allows_quantization`,
//! `llama_tensor_get_type`, `llama_tensor_get_type_impl`,
//! `tensor_type_fallback`, `tensor_requires_imatrix`,
//! `llama_model_quantize_impl`) branch for branch for the mixtures listed in
//! [`Mixture`], including the parts that are easy to get wrong:
//!
//! - **Order.** llama.cpp visits tensors in `weight_name_comparer` order
//!   (layer number parsed with `sscanf("blk.%d.")`, non-layer tensors first,
//!   then the name, bytewise), not in file order; the `attn_v` / `ffn_down`
//!   counters that `use_more_bits` reads advance in that order.
//!   [`choose_types`] sorts internally and returns the choices in the
//!   caller's order.
//! - **Counters advance only when the mixture rules run**: a tensor matched
//!   by a `--tensor-type` override, or any tensor under `--pure`, does not
//!   advance them, exactly as in llama.cpp.
//! - **Tied embeddings**: a model without `output.weight` quantizes
//!   `token_embd.weight` with the output tensor's rule.
//! - **Float mixtures** (F32, F16, BF16) apply neither the rules nor the
//!   overrides nor the fallbacks: every quantizable tensor gets the default
//!   type (`ggml_is_quantized(default_type)` is false).
//!
//! What is deliberately not ported: the IQ1/IQ2/IQ3 and MXFP4/NVFP4 mixtures
//! (the quant crate has no reference quantizer for most of their types),
//! `COPY`, `--prune-layers`, `--keep-split` and `--dry-run`.
//!
//! ```
//! use weightkit_core::DType;
//! use weightkit_io::mixture::{choose_types, Mixture, ModelDesc, Options, TensorDesc};
//!
//! let model = ModelDesc::new("llama", 1, 32, 32);
//! let tensors = [
//!     TensorDesc::new("blk.0.attn_norm.weight", &[4096], DType::F32),
//!     TensorDesc::new("blk.0.attn_v.weight", &[4096, 4096], DType::F16),
//!     TensorDesc::new("output.weight", &[32000, 4096], DType::F16),
//! ];
//! let mixture = Mixture::from_name("Q4_K_M")?;
//! let choices = choose_types(mixture, &model, &tensors, &Options::default())?;
//! assert_eq!(choices[0].target, DType::F32); // norms are kept
//! assert_eq!(choices[1].target, DType::Q6_K); // use_more_bits(0, 1)
//! assert_eq!(choices[2].target, DType::Q6_K); // the output rule
//! assert_eq!(mixture.ftype(), 15); // general.file_type
//! # Ok::<(), weightkit_io::mixture::MixtureError>(())
//! ```

use std::collections::HashSet;
use std::fmt;
use std::str::FromStr;

use regex::Regex;
use weightkit_core::{DType, Metadata, Value};

/// A named llama-quantize mixture (a `llama_ftype`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
#[allow(non_camel_case_types)]
pub enum Mixture {
    /// `F32` (`LLAMA_FTYPE_ALL_F32`, 0).
    F32,
    /// `F16` (`LLAMA_FTYPE_MOSTLY_F16`, 1).
    F16,
    /// `BF16` (`LLAMA_FTYPE_MOSTLY_BF16`, 32).
    BF16,
    /// `Q4_0` (2).
    Q4_0,
    /// `Q4_1` (3).
    Q4_1,
    /// `Q5_0` (8).
    Q5_0,
    /// `Q5_1` (9).
    Q5_1,
    /// `Q8_0` (7).
    Q8_0,
    /// `Q2_K` (10).
    Q2_K,
    /// `Q2_K_S` (21); its Q2_K tensors need an importance matrix.
    Q2_K_S,
    /// `Q3_K_S` (11).
    Q3_K_S,
    /// `Q3_K_M` (12), alias `Q3_K`.
    Q3_K_M,
    /// `Q3_K_L` (13).
    Q3_K_L,
    /// `Q4_K_S` (14).
    Q4_K_S,
    /// `Q4_K_M` (15), alias `Q4_K`.
    Q4_K_M,
    /// `Q5_K_S` (16).
    Q5_K_S,
    /// `Q5_K_M` (17), alias `Q5_K`.
    Q5_K_M,
    /// `Q6_K` (18).
    Q6_K,
    /// `IQ4_NL` (25).
    IQ4_NL,
    /// `IQ4_XS` (30).
    IQ4_XS,
    /// `TQ1_0` (36), ternary.
    TQ1_0,
    /// `TQ2_0` (37), ternary.
    TQ2_0,
    /// `Q1_0` (40), 1.125 bits per weight (sign bits, block of 128).
    Q1_0,
    /// `Q2_0` (41), 2.25 bits per weight (2-bit codes, block of 64).
    Q2_0,
}

/// Every supported mixture.
pub const ALL_MIXTURES: [Mixture; 24] = [
    Mixture::F32,
    Mixture::F16,
    Mixture::BF16,
    Mixture::Q4_0,
    Mixture::Q4_1,
    Mixture::Q5_0,
    Mixture::Q5_1,
    Mixture::Q8_0,
    Mixture::Q2_K,
    Mixture::Q2_K_S,
    Mixture::Q3_K_S,
    Mixture::Q3_K_M,
    Mixture::Q3_K_L,
    Mixture::Q4_K_S,
    Mixture::Q4_K_M,
    Mixture::Q5_K_S,
    Mixture::Q5_K_M,
    Mixture::Q6_K,
    Mixture::IQ4_NL,
    Mixture::IQ4_XS,
    Mixture::TQ1_0,
    Mixture::TQ2_0,
    Mixture::Q1_0,
    Mixture::Q2_0,
];

/// llama-quantize's aliases (`QUANT_OPTIONS` in `tools/quantize/quantize.cpp`).
const ALIASES: [(&str, Mixture); 3] = [
    ("Q3_K", Mixture::Q3_K_M),
    ("Q4_K", Mixture::Q4_K_M),
    ("Q5_K", Mixture::Q5_K_M),
];

impl Mixture {
    /// Parses a mixture name as llama-quantize does: case-insensitively, with
    /// the aliases `Q3_K`, `Q4_K` and `Q5_K` (for `_M`), or the decimal
    /// `llama_ftype` number (`"15"` is `Q4_K_M`).
    pub fn from_name(name: &str) -> Result<Mixture, MixtureError> {
        let found = ALL_MIXTURES
            .iter()
            .copied()
            .find(|m| m.name().eq_ignore_ascii_case(name))
            .or_else(|| {
                ALIASES
                    .iter()
                    .find(|(a, _)| a.eq_ignore_ascii_case(name))
                    .map(|&(_, m)| m)
            })
            .or_else(|| {
                let digits = !name.is_empty() && name.bytes().all(|b| b.is_ascii_digit());
                digits
                    .then(|| name.parse::<u32>().ok())
                    .flatten()
                    .and_then(Mixture::from_ftype)
            });
        found.ok_or_else(|| MixtureError::UnknownMixture {
            name: name.to_owned(),
        })
    }

    /// The mixture whose `llama_ftype` is `ftype`.
    pub fn from_ftype(ftype: u32) -> Option<Mixture> {
        ALL_MIXTURES.iter().copied().find(|m| m.ftype() == ftype)
    }

    /// The canonical name (`"Q4_K_M"`).
    pub const fn name(self) -> &'static str {
        use Mixture::*;
        match self {
            F32 => "F32",
            F16 => "F16",
            BF16 => "BF16",
            Q4_0 => "Q4_0",
            Q4_1 => "Q4_1",
            Q5_0 => "Q5_0",
            Q5_1 => "Q5_1",
            Q8_0 => "Q8_0",
            Q2_K => "Q2_K",
            Q2_K_S => "Q2_K_S",
            Q3_K_S => "Q3_K_S",
            Q3_K_M => "Q3_K_M",
            Q3_K_L => "Q3_K_L",
            Q4_K_S => "Q4_K_S",
            Q4_K_M => "Q4_K_M",
            Q5_K_S => "Q5_K_S",
            Q5_K_M => "Q5_K_M",
            Q6_K => "Q6_K",
            IQ4_NL => "IQ4_NL",
            IQ4_XS => "IQ4_XS",
            TQ1_0 => "TQ1_0",
            TQ2_0 => "TQ2_0",
            Q1_0 => "Q1_0",
            Q2_0 => "Q2_0",
        }
    }

    /// The `llama_ftype` value (`include/llama.h`), which llama-quantize
    /// writes to `general.file_type`.
    pub const fn ftype(self) -> u32 {
        use Mixture::*;
        match self {
            F32 => 0,
            F16 => 1,
            Q4_0 => 2,
            Q4_1 => 3,
            Q8_0 => 7,
            Q5_0 => 8,
            Q5_1 => 9,
            Q2_K => 10,
            Q3_K_S => 11,
            Q3_K_M => 12,
            Q3_K_L => 13,
            Q4_K_S => 14,
            Q4_K_M => 15,
            Q5_K_S => 16,
            Q5_K_M => 17,
            Q6_K => 18,
            Q2_K_S => 21,
            IQ4_NL => 25,
            IQ4_XS => 30,
            BF16 => 32,
            TQ1_0 => 36,
            TQ2_0 => 37,
            Q1_0 => 40,
            Q2_0 => 41,
        }
    }

    /// The type of every tensor no rule singles out
    /// (`llama_ftype_get_default_type`).
    pub const fn default_type(self) -> DType {
        use Mixture::*;
        match self {
            F32 => DType::F32,
            F16 => DType::F16,
            BF16 => DType::BF16,
            Q4_0 => DType::Q4_0,
            Q4_1 => DType::Q4_1,
            Q5_0 => DType::Q5_0,
            Q5_1 => DType::Q5_1,
            Q8_0 => DType::Q8_0,
            Q2_K | Q2_K_S => DType::Q2_K,
            Q3_K_S | Q3_K_M | Q3_K_L => DType::Q3_K,
            Q4_K_S | Q4_K_M => DType::Q4_K,
            Q5_K_S | Q5_K_M => DType::Q5_K,
            Q6_K => DType::Q6_K,
            IQ4_NL => DType::IQ4_NL,
            IQ4_XS => DType::IQ4_XS,
            TQ1_0 => DType::TQ1_0,
            TQ2_0 => DType::TQ2_0,
            Q1_0 => DType::Q1_0,
            Q2_0 => DType::Q2_0,
        }
    }
}

impl fmt::Display for Mixture {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Mixture {
    type Err = MixtureError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Mixture::from_name(s)
    }
}

/// One tensor as the type choice sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TensorDesc<'a> {
    /// The GGUF name (`"blk.3.ffn_down.weight"`).
    pub name: &'a str,
    /// The shape, row-major, outermost first (`[n_ff, n_embd]` for
    /// `ffn_up`): the row length llama.cpp calls `ne[0]` is the last entry.
    pub shape: &'a [usize],
    /// The type the tensor has now.
    pub dtype: DType,
}

impl<'a> TensorDesc<'a> {
    /// A tensor description.
    pub fn new(name: &'a str, shape: &'a [usize], dtype: DType) -> Self {
        TensorDesc { name, shape, dtype }
    }
}

/// What the mixture rules read about the model (llama.cpp's `hparams`,
/// `arch` and `type`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModelDesc {
    /// `general.architecture` (`"llama"`); `"falcon"` has rules of its own.
    pub arch: String,
    /// `{arch}.block_count`: the `n_layer` of `use_more_bits` for `ffn_down`.
    pub n_layer: u32,
    /// `{arch}.attention.head_count` (of layer 0).
    pub n_head: u32,
    /// `{arch}.attention.head_count_kv` (of layer 0).
    pub n_head_kv: u32,
    /// `{arch}.expert_count` (0 for dense models).
    pub n_expert: u32,
    /// llama.cpp's `LLM_TYPE_70B`: `attn_v` gets Q5_K where it would get
    /// Q3_K or Q4_K. [`ModelDesc::new`] infers it as llama.cpp's
    /// `llama_quant_model_from_metadata` does (a `llama` with 80 layers and
    /// grouped-query attention); other architectures that llama.cpp's loader
    /// types as 70B must set it by hand.
    pub is_70b: bool,
}

impl ModelDesc {
    /// A dense model; `is_70b` inferred as llama.cpp does for `llama`.
    pub fn new(arch: impl Into<String>, n_layer: u32, n_head: u32, n_head_kv: u32) -> Self {
        let arch = arch.into();
        let is_70b = arch == "llama" && n_layer == 80 && n_head != n_head_kv;
        ModelDesc {
            arch,
            n_layer,
            n_head,
            n_head_kv,
            n_expert: 0,
            is_70b,
        }
    }

    /// The same model with `n_expert` experts.
    pub fn with_experts(mut self, n_expert: u32) -> Self {
        self.n_expert = n_expert;
        self
    }

    /// Reads the description from GGUF metadata as llama.cpp's loader does:
    /// `general.architecture` and `{arch}.block_count` are required,
    /// `{arch}.attention.head_count` defaults to 0 (an array gives layer 0's
    /// value), `head_count_kv` to `head_count`, `expert_count` to 0.
    pub fn from_metadata(metadata: &Metadata) -> Result<ModelDesc, MixtureError> {
        let arch = match metadata.get("general.architecture") {
            Some(Value::String(s)) => s.clone(),
            Some(_) => return Err(meta_err("general.architecture", "is not a string")),
            None => return Err(meta_err("general.architecture", "is missing")),
        };
        let key = |suffix: &str| format!("{arch}.{suffix}");
        let n_layer = meta_u32(metadata, &key("block_count"))?
            .ok_or_else(|| meta_err(&key("block_count"), "is missing"))?;
        let n_head = meta_u32(metadata, &key("attention.head_count"))?.unwrap_or(0);
        let n_head_kv = meta_u32(metadata, &key("attention.head_count_kv"))?.unwrap_or(n_head);
        let n_expert = meta_u32(metadata, &key("expert_count"))?.unwrap_or(0);
        Ok(ModelDesc::new(arch, n_layer, n_head, n_head_kv).with_experts(n_expert))
    }

    /// `n_head / n_head_kv` (integer division; 0 when `n_head_kv` is 0), as
    /// `llama_hparams::n_gqa`.
    pub fn n_gqa(&self) -> u32 {
        self.n_head.checked_div(self.n_head_kv).unwrap_or(0)
    }
}

fn meta_err(key: &str, problem: &'static str) -> MixtureError {
    MixtureError::Metadata {
        key: key.to_owned(),
        problem,
    }
}

fn meta_u32(metadata: &Metadata, key: &str) -> Result<Option<u32>, MixtureError> {
    let value = match metadata.get(key) {
        None => return Ok(None),
        Some(Value::Array(a)) => a.get(0).ok_or_else(|| meta_err(key, "is an empty array"))?,
        Some(v) => v.clone(),
    };
    let n = value
        .as_u64()
        .ok_or_else(|| meta_err(key, "is not a non-negative integer"))?;
    u32::try_from(n)
        .map(Some)
        .map_err(|_| meta_err(key, "does not fit in 32 bits"))
}

/// llama-quantize's options that change the type choice.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// `--pure`: no mixture rules; every quantizable tensor gets the default
    /// type (overrides, `--output-tensor-type`, `--token-embedding-type`
    /// and the shape fallbacks still apply).
    pub pure: bool,
    /// `--tensor-type PATTERN=TYPE`, in order: the first pattern that
    /// matches anywhere in the name (`std::regex_search`) wins; a matched
    /// tensor skips the mixture rules. Ignored by the float mixtures, as in
    /// llama.cpp. See [`parse_override`].
    pub overrides: Vec<(Regex, DType)>,
    /// `--output-tensor-type`: the type of `output.weight` (and of a tied
    /// `token_embd.weight`), taken as given (no shape fallback for
    /// `output.weight`).
    pub output_tensor_type: Option<DType>,
    /// `--token-embedding-type`: the type of `token_embd.weight`, taken as
    /// given.
    pub token_embedding_type: Option<DType>,
    /// `--allow-requantize`: accept tensors that are already quantized.
    pub allow_requantize: bool,
    /// `--leave-output-tensor`: keep `output.weight` as it is.
    pub leave_output_tensor: bool,
    /// Whether an importance matrix will be used (`--imatrix`). Some rules
    /// depend on it (Q4_0/Q5_0 and IQ4_NL/IQ4_XS `ffn_down`), and Q2_K_S
    /// refuses to run without one.
    pub has_imatrix: bool,
}

/// Parses one `--tensor-type` argument, `NAME=TYPE`, as llama-quantize
/// does: the name part is lowercased and compiled as a regular expression,
/// the type is a ggml type name in any case (`attn_v=q8_0`).
///
/// Patterns are compiled with the `regex` crate, whose syntax agrees with
/// the ECMAScript `std::regex` for everything but backreferences and
/// lookaround, which it rejects.
pub fn parse_override(spec: &str) -> Result<(Regex, DType), MixtureError> {
    let invalid = |reason| MixtureError::InvalidOverride {
        spec: spec.to_owned(),
        reason,
    };
    let (name, ty) = spec
        .split_once('=')
        .ok_or_else(|| invalid("expected NAME=TYPE"))?;
    if name.is_empty() {
        return Err(invalid("missing tensor name"));
    }
    if ty.is_empty() {
        return Err(invalid("missing quantization type"));
    }
    let dtype = DType::from_ggml_name(ty).ok_or_else(|| invalid("unknown ggml type"))?;
    let regex =
        Regex::new(&name.to_ascii_lowercase()).map_err(|source| MixtureError::OverrideRegex {
            spec: spec.to_owned(),
            source: Box::new(source),
        })?;
    Ok((regex, dtype))
}

/// llama-quant's broad tensor categories (`tensor_get_category`), decided by
/// name alone.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Category {
    /// `token_embd.weight` or `per_layer_token_embd.weight`.
    TokenEmbd,
    /// Contains `attn_q.weight`.
    AttnQ,
    /// Contains `attn_v.weight`.
    AttnV,
    /// Contains `attn_k.weight`.
    AttnK,
    /// Contains `attn_qkv.weight` (treated as `attn_v`).
    AttnQkv,
    /// Contains `attn_kv_b.weight` (treated as `attn_v`).
    AttnKvB,
    /// Contains `attn_output.weight`.
    AttnOutput,
    /// Contains `ffn_up`.
    FfnUp,
    /// Contains `ffn_gate`.
    FfnGate,
    /// Contains `ffn_down`.
    FfnDown,
    /// Exactly `output.weight`.
    Output,
    /// Anything else.
    Other,
}

impl Category {
    /// The category of a tensor name, tested in llama.cpp's order.
    pub fn of(name: &str) -> Category {
        use Category::*;
        if name == "output.weight" {
            return Output;
        }
        if name == "token_embd.weight" || name == "per_layer_token_embd.weight" {
            return TokenEmbd;
        }
        const BY_SUBSTRING: [(&str, Category); 9] = [
            ("attn_qkv.weight", AttnQkv),
            ("attn_kv_b.weight", AttnKvB),
            ("attn_v.weight", AttnV),
            ("attn_k.weight", AttnK),
            ("attn_q.weight", AttnQ),
            ("attn_output.weight", AttnOutput),
            ("ffn_up", FfnUp),
            ("ffn_gate", FfnGate),
            ("ffn_down", FfnDown),
        ];
        BY_SUBSTRING
            .iter()
            .find(|(s, _)| name.contains(s))
            .map_or(Other, |&(_, c)| c)
    }

    /// `category_is_attn_v`: the attention-value-like tensors that get more
    /// bits.
    pub fn is_attn_v(self) -> bool {
        matches!(
            self,
            Category::AttnV | Category::AttnQkv | Category::AttnKvB
        )
    }
}

/// Why llama-quantize keeps a tensor as it is (`tensor_allows_quantization`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Exclusion {
    /// Fewer than two dimensions larger than one (`ggml_n_dims < 2`).
    FewerThanTwoDims,
    /// The name does not end in `weight`.
    NotWeight,
    /// A norm (`_norm.weight`).
    Norm,
    /// `output.weight` under `--leave-output-tensor`.
    LeaveOutputTensor,
    /// One of llama-quantize's name exclusions (expert gates, positional
    /// embeddings, SSM convolutions, RWKV's small matrices, multimodal
    /// projector parts ...): the substring or name that matched.
    Name(&'static str),
}

/// Why a tensor gets its type.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Reason {
    /// Not quantizable: kept in its type.
    Kept(Exclusion),
    /// `--token-embedding-type`.
    TokenEmbeddingType,
    /// `--output-tensor-type` for `output.weight`.
    OutputTensorType,
    /// A float mixture (F32, F16, BF16): the default type.
    FloatMixture,
    /// The `--tensor-type` override at this index of
    /// [`Options::overrides`].
    Override(usize),
    /// `--pure`: the default type.
    Pure,
    /// The mixture's rules for this category (the result may be the default
    /// type).
    Rules(Category),
}

/// The type chosen for one tensor, and why.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Choice {
    /// The type the tensor has now.
    pub source: DType,
    /// The type it will have in the output; equal to `source` when it is
    /// kept (or already has the type asked for).
    pub target: DType,
    /// Why.
    pub reason: Reason,
    /// The type the rules asked for when its block size did not divide the
    /// row and `target` is the fallback (`tensor_type_fallback`).
    pub fallback_from: Option<DType>,
    /// `tensor_requires_imatrix`: quantizing this tensor to `target`
    /// without importance data gives garbage, and llama-quantize refuses to
    /// (IQ1/IQ2/IQ3_XXS targets, and Q2_K in a Q2_K_S file). Never set for
    /// kept tensors.
    pub requires_imatrix: bool,
}

impl Choice {
    /// Whether the tensor's data changes (`source != target`).
    pub fn converts(&self) -> bool {
        self.source != self.target
    }
}

/// Errors of the type choice.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MixtureError {
    /// A mixture name that is neither supported nor an alias.
    #[error(
        "unknown quantization mixture `{name}` (supported: F32 F16 BF16 Q4_0 Q4_1 Q5_0 Q5_1 \
         Q8_0 Q2_K Q2_K_S Q3_K_S Q3_K_M Q3_K_L Q4_K_S Q4_K_M Q5_K_S Q5_K_M Q6_K IQ4_NL IQ4_XS \
         TQ1_0 TQ2_0 Q1_0 Q2_0, aliases Q3_K Q4_K Q5_K)"
    )]
    UnknownMixture {
        /// The name given.
        name: String,
    },
    /// A malformed `--tensor-type` argument.
    #[error("tensor type override `{spec}`: {reason}")]
    InvalidOverride {
        /// The argument.
        spec: String,
        /// What is wrong.
        reason: &'static str,
    },
    /// A `--tensor-type` pattern that is not a valid regular expression.
    #[error("tensor type override `{spec}`: invalid regular expression")]
    OverrideRegex {
        /// The argument.
        spec: String,
        /// The regex error.
        #[source]
        source: Box<regex::Error>,
    },
    /// A metadata key missing or of the wrong type.
    #[error("metadata key `{key}` {problem}")]
    Metadata {
        /// The key.
        key: String,
        /// What is wrong.
        problem: &'static str,
    },
    /// Two tensors with one name.
    #[error("duplicate tensor name `{name}`")]
    DuplicateTensor {
        /// The name.
        name: String,
    },
    /// In a model with experts, a tensor whose layer the rules need has no
    /// `blk.N.` prefix.
    #[error("failed to determine the layer of tensor `{name}` (expected a `blk.N.` prefix)")]
    NoLayer {
        /// The tensor.
        name: String,
    },
    /// In a model with experts, a layer number outside `0..n_layer`.
    #[error("tensor `{name}`: bad layer {layer}, must be in [0, {n_layer})")]
    BadLayer {
        /// The tensor.
        name: String,
        /// The layer parsed.
        layer: i32,
        /// The model's layer count.
        n_layer: u32,
    },
    /// A row whose length is not a multiple of the block size of the type
    /// asked for, and no fallback type exists for it.
    #[error(
        "tensor `{name}`: row of {row} elements is not a multiple of the {dtype} block size, and \
         no fallback type is defined for {dtype}"
    )]
    NoFallback {
        /// The tensor.
        name: String,
        /// The type asked for.
        dtype: DType,
        /// The row length.
        row: usize,
    },
    /// A target type that needs an importance matrix, without one.
    #[error("tensor `{name}`: quantizing to {dtype} in this mixture requires an importance matrix")]
    ImatrixRequired {
        /// The tensor.
        name: String,
        /// The target type.
        dtype: DType,
    },
    /// An already-quantized tensor and no `allow_requantize`.
    #[error(
        "tensor `{name}`: requantizing from {from} to {to} is disabled (allow_requantize / \
         --allow-requantize enables it)"
    )]
    RequantizeDisabled {
        /// The tensor.
        name: String,
        /// Its type.
        from: DType,
        /// The target type.
        to: DType,
    },
    /// A source type that cannot be converted (neither F32, F16, BF16 nor a
    /// type with a dequantizer).
    #[error("tensor `{name}`: cannot convert {from} to {to}")]
    CannotConvert {
        /// The tensor.
        name: String,
        /// Its type.
        from: DType,
        /// The target type.
        to: DType,
    },
}

/// `sscanf(name, "blk.%d.", &layer)` as glibc does it on LP64: leading
/// white space and a sign are accepted, the digits are converted as a
/// saturating `long` and then truncated to `int`; the literal `.` after the
/// number does not affect the result.
fn scan_layer(name: &str) -> Option<i32> {
    let rest = name.strip_prefix("blk.")?.as_bytes();
    let mut i = 0;
    while rest
        .get(i)
        .is_some_and(|&b| matches!(b, b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r'))
    {
        i += 1;
    }
    let negative = match rest.get(i) {
        Some(b'-') => {
            i += 1;
            true
        }
        Some(b'+') => {
            i += 1;
            false
        }
        _ => false,
    };
    let start = i;
    let mut value: i64 = 0;
    while let Some(&b) = rest.get(i).filter(|b| b.is_ascii_digit()) {
        let digit = i64::from(b - b'0');
        value = if negative {
            value.saturating_mul(10).saturating_sub(digit)
        } else {
            value.saturating_mul(10).saturating_add(digit)
        };
        i += 1;
    }
    if i == start {
        return None;
    }
    // glibc stores the `long` into the `int` argument: truncation.
    Some(value as i32)
}

/// `weight_name_comparer`: layer (-1 without a `blk.N.` prefix), then name.
fn weight_order(a: &str, b: &str) -> std::cmp::Ordering {
    let la = scan_layer(a).unwrap_or(-1);
    let lb = scan_layer(b).unwrap_or(-1);
    la.cmp(&lb).then_with(|| a.as_bytes().cmp(b.as_bytes()))
}

/// `ggml_n_dims` of a row-major shape: dimensions up to the outermost one
/// larger than 1, at least 1.
fn ggml_n_dims(shape: &[usize]) -> usize {
    shape
        .iter()
        .position(|&d| d > 1)
        .map_or(1, |first| (shape.len() - first).max(1))
}

/// `ne[0]`: the row length.
fn row_len(shape: &[usize]) -> usize {
    shape.last().copied().unwrap_or(1)
}

/// Substrings whose presence keeps a tensor as it is.
const EXCLUDED_SUBSTRINGS: &[&str] = &[
    "ffn_gate_inp.weight",
    "ffn_gate_tid2eid.weight",
    "altup",
    "laurel",
    "per_layer_model_proj",
    "ssm_conv1d",
    "shortconv.conv.weight",
    "indexer.k_proj.weight",
    "indexer.q_proj.weight",
    "time_mix_first.weight",
    "time_mix_w0.weight",
    "time_mix_w1.weight",
    "time_mix_w2.weight",
    "time_mix_v0.weight",
    "time_mix_v1.weight",
    "time_mix_v2.weight",
    "time_mix_a0.weight",
    "time_mix_a1.weight",
    "time_mix_a2.weight",
    "time_mix_g1.weight",
    "time_mix_g2.weight",
    "time_mix_decay_w1.weight",
    "time_mix_decay_w2.weight",
    "time_mix_lerp_fused.weight",
    "attn_rel_b.weight",
    ".position_embd",
    "sam.pos_embd",
    "sam.neck.",
    "sam.net_",
    ".rel_pos",
    ".patch_embd",
    ".patch_merger",
    "a.rvq.codebook",
    "mm.a.code_embd",
];

/// Whole names that are kept (`LLM_TENSOR_POS_EMBD` and
/// `LLM_TENSOR_TOKEN_TYPES` with suffix `weight`; llama.cpp resolves them
/// for every architecture alike).
const EXCLUDED_NAMES: [&str; 2] = ["position_embd.weight", "token_types.weight"];

/// `tensor_allows_quantization`: `None` if quantizable, else why not.
fn exclusion(name: &str, shape: &[usize], opts: &Options) -> Option<Exclusion> {
    if ggml_n_dims(shape) < 2 {
        return Some(Exclusion::FewerThanTwoDims);
    }
    // `name.rfind("weight") == name.size() - 6`: with a 5-byte name the
    // right side wraps around to `npos`, which `rfind` returns when there is
    // no match, so llama.cpp quantizes any 5-byte name. Mirrored.
    if !(name.ends_with("weight") || name.len() == 5) {
        return Some(Exclusion::NotWeight);
    }
    if name.contains("_norm.weight") {
        return Some(Exclusion::Norm);
    }
    if opts.leave_output_tensor && name == "output.weight" {
        return Some(Exclusion::LeaveOutputTensor);
    }
    if let Some(&s) = EXCLUDED_SUBSTRINGS.iter().find(|s| name.contains(**s)) {
        return Some(Exclusion::Name(s));
    }
    EXCLUDED_NAMES
        .iter()
        .find(|n| **n == name)
        .map(|&n| Exclusion::Name(n))
}

/// `tensor_type_fallback`: a type whose block divides the row.
fn fallback(
    name: &str,
    shape: &[usize],
    target: DType,
) -> Result<(DType, Option<DType>), MixtureError> {
    use DType::*;
    let row = row_len(shape);
    if row.is_multiple_of(target.block_elems()) {
        return Ok((target, None));
    }
    let to = match target {
        IQ1_S | IQ1_M | IQ2_XXS | IQ2_XS | IQ2_S | IQ3_XXS | IQ3_S | IQ4_XS => IQ4_NL,
        Q2_0 | Q2_K | Q3_K | TQ1_0 | TQ2_0 => Q4_0,
        Q4_K => Q5_0,
        Q5_K => Q5_1,
        Q6_K => Q8_0,
        _ => {
            return Err(MixtureError::NoFallback {
                name: name.to_owned(),
                dtype: target,
                row,
            });
        }
    };
    let to = if row.is_multiple_of(to.block_elems()) {
        to
    } else {
        F16
    };
    Ok((to, Some(target)))
}

/// `tensor_requires_imatrix`.
fn requires_imatrix(name: &str, target: DType, mixture: Mixture) -> bool {
    use DType::*;
    if matches!(
        name,
        "token_embd.weight" | "per_layer_token_embd.weight" | "output.weight"
    ) {
        return false;
    }
    match target {
        IQ3_XXS | IQ2_XXS | IQ2_XS | IQ2_S | IQ1_M | IQ1_S => true,
        Q2_K => mixture == Mixture::Q2_K_S,
        _ => false,
    }
}

/// `use_more_bits(i_layer, n_layers)`, with C's truncating `/` and `%`.
fn use_more_bits(i: i64, n: i64) -> bool {
    i < n / 8 || i >= 7 * n / 8 || (i - n / 8) % 3 == 2
}

/// The counters of `quantize_state_impl`.
struct State<'m> {
    mixture: Mixture,
    model: &'m ModelDesc,
    tied_embeddings: bool,
    n_attention_wv: i64,
    i_attention_wv: i64,
    n_layer: i64,
    i_ffn_down: i64,
    i_ffn_gate: i64,
    i_ffn_up: i64,
}

impl State<'_> {
    /// `layer_info`: the counter for dense models, the parsed layer with
    /// experts.
    fn layer_info(&self, counter: i64, name: &str) -> Result<(i64, i64), MixtureError> {
        if self.model.n_expert.max(1) > 1 {
            let layer = scan_layer(name).ok_or_else(|| MixtureError::NoLayer {
                name: name.to_owned(),
            })?;
            if layer < 0 || i64::from(layer) >= self.n_layer {
                return Err(MixtureError::BadLayer {
                    name: name.to_owned(),
                    layer,
                    n_layer: self.model.n_layer,
                });
            }
            return Ok((i64::from(layer), self.n_layer));
        }
        Ok((counter, self.n_layer))
    }

    /// `llama_tensor_get_type_impl` for the supported mixtures.
    fn rules(
        &mut self,
        t: &TensorDesc<'_>,
        category: Category,
        opts: &Options,
    ) -> Result<DType, MixtureError> {
        use DType::*;
        use Mixture as M;
        let m = self.mixture;
        let model = self.model;
        let falcon = model.arch == "falcon";
        let mut new = m.default_type();

        if category == Category::Output || (self.tied_embeddings && category == Category::TokenEmbd)
        {
            if let Some(ty) = opts.output_tensor_type {
                new = ty;
            } else if falcon || !row_len(t.shape).is_multiple_of(new.block_elems()) {
                new = Q8_0;
            } else if new != Q8_0 {
                new = Q6_K;
            }
        } else if category == Category::TokenEmbd {
            if let Some(ty) = opts.token_embedding_type {
                new = ty;
            } else if matches!(m, M::TQ1_0 | M::TQ2_0 | M::Q2_0) {
                new = Q4_K;
            }
        } else if category.is_attn_v() {
            let gqa = model.n_gqa();
            let (i, n) = (self.i_attention_wv, self.n_attention_wv);
            if m == M::Q2_K {
                new = if gqa >= 4 { Q4_K } else { Q3_K };
            } else if m == M::Q2_K_S && gqa >= 4 {
                new = Q4_K;
            } else if m == M::Q3_K_M {
                new = if i < 2 { Q5_K } else { Q4_K };
            } else if m == M::Q3_K_L || (matches!(m, M::IQ4_NL | M::IQ4_XS) && gqa >= 4) {
                // Two adjacent branches of the source with the same result.
                new = Q5_K;
            } else if matches!(m, M::Q4_K_M | M::Q5_K_M) && use_more_bits(i, n) {
                new = Q6_K;
            } else if m == M::Q4_K_S && i < 4 {
                new = Q5_K;
            }
            if model.is_70b && matches!(new, Q3_K | Q4_K) {
                new = Q5_K;
            }
            if model.n_expert == 8 {
                new = Q8_0;
            }
            self.i_attention_wv += 1;
        } else if category == Category::AttnK {
            if model.n_expert == 8 {
                new = Q8_0;
            }
        } else if category == Category::AttnQ {
            // Only the IQ3 mixtures have rules here.
        } else if category == Category::FfnDown {
            let (i, n) = self.layer_info(self.i_ffn_down, t.name)?;
            if m == M::Q2_K {
                new = Q3_K;
            } else if m == M::Q2_K_S {
                if i < n / 8 {
                    new = Q4_K;
                }
            } else if m == M::Q3_K_M {
                new = if i < n / 16 {
                    Q5_K
                } else if !falcon || use_more_bits(i, n) {
                    Q4_K
                } else {
                    Q3_K
                };
            } else if m == M::Q3_K_L {
                new = if falcon { Q4_K } else { Q5_K };
            } else if m == M::Q4_K_M {
                if falcon {
                    new = if i < n / 16 {
                        Q6_K
                    } else if use_more_bits(i, n) {
                        Q5_K
                    } else {
                        Q4_K
                    };
                } else if use_more_bits(i, n) {
                    new = Q6_K;
                }
            } else if i < n / 8 && matches!(m, M::IQ4_NL | M::IQ4_XS) && !opts.has_imatrix {
                new = Q5_K;
            } else if m == M::Q5_K_M && use_more_bits(i, n) {
                new = Q6_K;
            } else if m == M::Q4_K_S && !falcon && i < n / 8 {
                new = Q5_K;
            } else if matches!(m, M::Q4_0 | M::Q5_0) && opts.has_imatrix && i < n / 8 {
                new = if m == M::Q4_0 { Q4_1 } else { Q5_1 };
            }
            self.i_ffn_down += 1;
        } else if category == Category::AttnOutput {
            if !falcon {
                if model.n_expert == 8 {
                    if matches!(
                        m,
                        M::Q2_K
                            | M::Q3_K_S
                            | M::Q3_K_M
                            | M::IQ4_NL
                            | M::Q4_K_S
                            | M::Q4_K_M
                            | M::IQ4_XS
                    ) {
                        new = Q5_K;
                    }
                } else if m == M::Q2_K {
                    new = Q3_K;
                } else if m == M::Q3_K_M {
                    new = Q4_K;
                } else if m == M::Q3_K_L {
                    new = Q5_K;
                }
            } else if m == M::Q3_K_L {
                new = Q4_K;
            }
        } else if category == Category::FfnGate {
            // Only IQ3_XS has a rule; the layer is still checked.
            self.layer_info(self.i_ffn_gate, t.name)?;
            self.i_ffn_gate += 1;
        } else if category == Category::FfnUp {
            self.layer_info(self.i_ffn_up, t.name)?;
            self.i_ffn_up += 1;
        }
        Ok(new)
    }

    /// `llama_tensor_get_type` for a quantizable tensor.
    fn choose(
        &mut self,
        t: &TensorDesc<'_>,
        category: Category,
        opts: &Options,
    ) -> Result<(DType, Reason, Option<DType>), MixtureError> {
        if let (Some(ty), Category::TokenEmbd) = (opts.token_embedding_type, category) {
            return Ok((ty, Reason::TokenEmbeddingType, None));
        }
        if let (Some(ty), Category::Output) = (opts.output_tensor_type, category) {
            return Ok((ty, Reason::OutputTensorType, None));
        }
        let default = self.mixture.default_type();
        if !default.is_quantized() {
            return Ok((default, Reason::FloatMixture, None));
        }
        let manual = opts
            .overrides
            .iter()
            .enumerate()
            .find(|(_, (re, _))| re.is_match(t.name));
        let (new, reason) = match manual {
            Some((index, &(_, ty))) => (ty, Reason::Override(index)),
            None if opts.pure => (default, Reason::Pure),
            None => (self.rules(t, category, opts)?, Reason::Rules(category)),
        };
        let (target, from) = fallback(t.name, t.shape, new)?;
        Ok((target, reason, from))
    }
}

/// Chooses the type of every tensor as llama-quantize does for `mixture`.
///
/// `tensors` is the whole model (the choice of one tensor depends on the
/// others: how many `attn_v` there are, whether `output.weight` exists);
/// the result is in the same order. The tensors are visited in
/// llama.cpp's order whatever the order given.
///
/// Errors, in llama-quantize's order: a duplicate name; in its first pass
/// over the tensors, a missing fallback, a bad layer in a model with
/// experts, or a target that needs an importance matrix without
/// [`Options::has_imatrix`]; in its second pass, an already-quantized tensor
/// without [`Options::allow_requantize`] or a source type that cannot be
/// converted.
pub fn choose_types(
    mixture: Mixture,
    model: &ModelDesc,
    tensors: &[TensorDesc<'_>],
    opts: &Options,
) -> Result<Vec<Choice>, MixtureError> {
    let mut seen = HashSet::with_capacity(tensors.len());
    for t in tensors {
        if !seen.insert(t.name) {
            return Err(MixtureError::DuplicateTensor {
                name: t.name.to_owned(),
            });
        }
    }
    let mut order: Vec<usize> = (0..tensors.len()).collect();
    order.sort_by(|&a, &b| weight_order(tensors[a].name, tensors[b].name));

    let categories: Vec<Category> = tensors.iter().map(|t| Category::of(t.name)).collect();
    let n_attention_wv = categories.iter().filter(|c| c.is_attn_v()).count();
    let mut state = State {
        mixture,
        model,
        tied_embeddings: !categories.contains(&Category::Output),
        n_attention_wv: i64::try_from(n_attention_wv).unwrap_or(i64::MAX),
        i_attention_wv: 0,
        n_layer: i64::from(model.n_layer),
        i_ffn_down: 0,
        i_ffn_gate: 0,
        i_ffn_up: 0,
    };

    // The preliminary pass: types, fallbacks, the importance-matrix check.
    let mut chosen: Vec<(usize, Choice)> = Vec::with_capacity(tensors.len());
    for &i in &order {
        let t = &tensors[i];
        let choice = match exclusion(t.name, t.shape, opts) {
            Some(why) => Choice {
                source: t.dtype,
                target: t.dtype,
                reason: Reason::Kept(why),
                fallback_from: None,
                requires_imatrix: false,
            },
            None => {
                let (target, reason, fallback_from) = state.choose(t, categories[i], opts)?;
                let requires = requires_imatrix(t.name, target, mixture);
                if requires && !opts.has_imatrix {
                    return Err(MixtureError::ImatrixRequired {
                        name: t.name.to_owned(),
                        dtype: target,
                    });
                }
                Choice {
                    source: t.dtype,
                    target,
                    reason,
                    fallback_from,
                    requires_imatrix: requires,
                }
            }
        };
        chosen.push((i, choice));
    }

    // The main pass: what the data conversion will refuse.
    for (i, c) in &chosen {
        if !c.converts() || c.source == DType::F32 {
            continue;
        }
        let name = || tensors[*i].name.to_owned();
        if c.source.is_quantized() && !opts.allow_requantize {
            return Err(MixtureError::RequantizeDisabled {
                name: name(),
                from: c.source,
                to: c.target,
            });
        }
        let convertible = matches!(c.source, DType::F16 | DType::BF16)
            || (c.source.is_quantized() && weightkit_quant::can_dequantize(c.source));
        if !convertible {
            return Err(MixtureError::CannotConvert {
                name: name(),
                from: c.source,
                to: c.target,
            });
        }
    }

    chosen.sort_by_key(|&(i, _)| i);
    Ok(chosen.into_iter().map(|(_, c)| c).collect())
}

#[cfg(test)]
mod unit {
    use super::*;

    #[test]
    fn scan_layer_is_sscanf() {
        assert_eq!(scan_layer("blk.12.attn_v.weight"), Some(12));
        assert_eq!(scan_layer("blk.7"), Some(7));
        assert_eq!(scan_layer("blk. +3.x"), Some(3));
        assert_eq!(scan_layer("blk.-2.x"), Some(-2));
        assert_eq!(scan_layer("blk.x"), None);
        assert_eq!(scan_layer("output.weight"), None);
        assert_eq!(scan_layer("blk.4294967296.x"), Some(0));
        assert_eq!(scan_layer("blk.99999999999999999999999.x"), Some(-1));
    }

    #[test]
    fn n_dims_is_ggml() {
        assert_eq!(ggml_n_dims(&[4096]), 1);
        assert_eq!(ggml_n_dims(&[1, 4096]), 1);
        assert_eq!(ggml_n_dims(&[0, 4096]), 1);
        assert_eq!(ggml_n_dims(&[2, 1]), 2);
        assert_eq!(ggml_n_dims(&[]), 1);
        assert_eq!(ggml_n_dims(&[8, 1, 1]), 3);
    }
}
