//! Hugging Face tensor names <-> GGUF tensor names.
//!
//! The table is gguf-py's `tensor_mapping.py` restricted to the names
//! transformers gives `LlamaForCausalLM`, `MistralForCausalLM` and
//! `Qwen2ForCausalLM` checkpoints:
//!
//! | Hugging Face | GGUF |
//! |---|---|
//! | `model.embed_tokens` | `token_embd` |
//! | `model.layers.N.input_layernorm` | `blk.N.attn_norm` |
//! | `model.layers.N.self_attn.{q,k,v}_proj` | `blk.N.attn_{q,k,v}` |
//! | `model.layers.N.self_attn.o_proj` | `blk.N.attn_output` |
//! | `model.layers.N.post_attention_layernorm` | `blk.N.ffn_norm` |
//! | `model.layers.N.mlp.{gate,up,down}_proj` | `blk.N.ffn_{gate,up,down}` |
//! | `model.norm` | `output_norm` |
//! | `lm_head` | `output` |
//!
//! each with `.weight`, and `.bias` on the linear layers (Qwen2's q/k/v
//! biases; Llama's `attention_bias` / `mlp_bias`). Like the converter, names
//! ending in `.rotary_emb.inv_freq`, `.attention.masked_bias` or
//! `.attention.bias` are buffers, not weights, and are skipped; any other name
//! is an error that names it. Checkpoints of the bare `LlamaModel` /
//! `Qwen2Model` classes (no `model.` prefix) are accepted too, as the converter
//! does for those classes.
//!
//! Going back, `rope_freqs.weight` (Llama-3 rope scaling) has no Hugging Face
//! tensor: it is derived from `config.json` (see
//! [`ModelConfig::rope_freqs`](super::ModelConfig::rope_freqs)).

use super::{Arch, ArchError, ModelConfig, Result};

/// Per-block modules: Hugging Face path after `model.layers.N.`, GGUF name
/// after `blk.N.`, and whether the module may have a bias.
const BLOCK: [(&str, &str, bool); 9] = [
    ("input_layernorm", "attn_norm", false),
    ("self_attn.q_proj", "attn_q", true),
    ("self_attn.k_proj", "attn_k", true),
    ("self_attn.v_proj", "attn_v", true),
    ("self_attn.o_proj", "attn_output", true),
    ("post_attention_layernorm", "ffn_norm", false),
    ("mlp.gate_proj", "ffn_gate", true),
    ("mlp.up_proj", "ffn_up", true),
    ("mlp.down_proj", "ffn_down", true),
];

/// Whole-model modules: Hugging Face, GGUF.
const GLOBAL: [(&str, &str); 3] = [
    ("model.embed_tokens", "token_embd"),
    ("model.norm", "output_norm"),
    ("lm_head", "output"),
];

/// Buffers the converter drops (`prepare_tensors`).
const SKIPPED_SUFFIXES: [&str; 3] = [
    ".attention.masked_bias",
    ".attention.bias",
    ".rotary_emb.inv_freq",
];

/// Where a Hugging Face tensor goes in a GGUF file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GgufTensorName {
    /// The GGUF tensor name (`blk.0.attn_q.weight`).
    pub name: String,
    /// `Some(n_head)` when the data must go through
    /// [`permute_rows`](super::permute_rows) with that head count (q: the
    /// attention heads, k: the key-value heads) on the way to GGUF.
    pub permute_heads: Option<usize>,
}

/// Where a GGUF tensor goes in a Hugging Face checkpoint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HfTensorName {
    /// The Hugging Face tensor name (`model.layers.0.self_attn.q_proj.weight`).
    pub name: String,
    /// `Some(n_head)` when the data must go through
    /// [`unpermute_rows`](super::unpermute_rows) with that head count.
    pub unpermute_heads: Option<usize>,
}

/// The name tables of one model: the architecture, its block count (a block
/// index past it is an error, as in the converter) and its head counts (for
/// the q/k permutation).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TensorNames {
    arch: Arch,
    n_layer: u64,
    n_head: usize,
    n_head_kv: usize,
}

impl TensorNames {
    /// Tables for `arch` with `n_layer` blocks, `n_head` attention heads and
    /// `n_head_kv` key-value heads.
    pub fn new(arch: Arch, n_layer: u64, n_head: usize, n_head_kv: usize) -> Self {
        TensorNames {
            arch,
            n_layer,
            n_head,
            n_head_kv,
        }
    }

    /// Tables for the model `config` describes.
    pub fn from_config(config: &ModelConfig) -> Result<Self> {
        let heads = |v: u64, key: &str| {
            usize::try_from(v).map_err(|_| ArchError::InvalidConfig {
                key: key.to_owned(),
                reason: format!("{v} does not fit in usize"),
            })
        };
        Ok(TensorNames::new(
            config.arch,
            config.num_hidden_layers,
            heads(config.num_attention_heads, "num_attention_heads")?,
            heads(config.num_key_value_heads, "num_key_value_heads")?,
        ))
    }

    /// The architecture.
    pub fn arch(&self) -> Arch {
        self.arch
    }

    /// The GGUF name of a Hugging Face tensor, `Ok(None)` for a buffer the
    /// converter skips (`...rotary_emb.inv_freq`), an error for a name the
    /// architecture does not have.
    pub fn to_gguf(&self, hf_name: &str) -> Result<Option<GgufTensorName>> {
        if SKIPPED_SUFFIXES.iter().any(|s| hf_name.ends_with(s)) {
            return Ok(None);
        }
        let unknown = |reason: String| self.unknown(hf_name, reason);
        let (module, suffix) = split_suffix(hf_name).ok_or_else(|| unknown(not_a_parameter()))?;
        // The bare `LlamaModel` / `Qwen2Model` classes have no `model.` prefix.
        let owned;
        let module =
            if module.starts_with("layers.") || module == "embed_tokens" || module == "norm" {
                owned = format!("model.{module}");
                owned.as_str()
            } else {
                module
            };
        if let Some(&(_, gguf)) = GLOBAL.iter().find(|(hf, _)| *hf == module) {
            if suffix != "weight" {
                return Err(unknown(format!("{module} has no {suffix}")));
            }
            return Ok(Some(GgufTensorName {
                name: format!("{gguf}.weight"),
                permute_heads: None,
            }));
        }
        let rest = module
            .strip_prefix("model.layers.")
            .ok_or_else(|| unknown("not a tensor of this architecture".to_owned()))?;
        let (bid, path) = rest
            .split_once('.')
            .ok_or_else(|| unknown("no module after the block index".to_owned()))?;
        let bid = self.block(bid).map_err(&unknown)?;
        let &(_, gguf, has_bias) = BLOCK
            .iter()
            .find(|(hf, _, _)| *hf == path)
            .ok_or_else(|| unknown(format!("unknown block module {path:?}")))?;
        if suffix == "bias" && !has_bias {
            return Err(unknown(format!("{path} has no bias")));
        }
        let permute_heads = match gguf {
            "attn_q" if self.arch.permutes_qk() => Some(self.n_head),
            "attn_k" if self.arch.permutes_qk() => Some(self.n_head_kv),
            _ => None,
        };
        Ok(Some(GgufTensorName {
            name: format!("blk.{bid}.{gguf}.{suffix}"),
            permute_heads,
        }))
    }

    /// The Hugging Face name of a GGUF tensor, `Ok(None)` for
    /// `rope_freqs.weight` (derived from `config.json`, not stored), an error
    /// for a name the architecture does not have.
    pub fn to_hf(&self, gguf_name: &str) -> Result<Option<HfTensorName>> {
        let unknown = |reason: String| self.unknown(gguf_name, reason);
        if gguf_name == "rope_freqs.weight" && self.arch.permutes_qk() {
            return Ok(None);
        }
        let (module, suffix) = split_suffix(gguf_name).ok_or_else(|| unknown(not_a_parameter()))?;
        if let Some(&(hf, _)) = GLOBAL.iter().find(|(_, g)| *g == module) {
            if suffix != "weight" {
                return Err(unknown(format!("{module} has no {suffix}")));
            }
            return Ok(Some(HfTensorName {
                name: format!("{hf}.weight"),
                unpermute_heads: None,
            }));
        }
        let rest = module
            .strip_prefix("blk.")
            .ok_or_else(|| unknown("not a tensor of this architecture".to_owned()))?;
        let (bid, path) = rest
            .split_once('.')
            .ok_or_else(|| unknown("no tensor after the block index".to_owned()))?;
        let bid = self.block(bid).map_err(&unknown)?;
        let &(hf, _, has_bias) = BLOCK
            .iter()
            .find(|(_, g, _)| *g == path)
            .ok_or_else(|| unknown(format!("unknown block tensor {path:?}")))?;
        if suffix == "bias" && !has_bias {
            return Err(unknown(format!("{path} has no bias")));
        }
        let unpermute_heads = match path {
            "attn_q" if self.arch.permutes_qk() => Some(self.n_head),
            "attn_k" if self.arch.permutes_qk() => Some(self.n_head_kv),
            _ => None,
        };
        Ok(Some(HfTensorName {
            name: format!("model.layers.{bid}.{hf}.{suffix}"),
            unpermute_heads,
        }))
    }

    fn block(&self, s: &str) -> Result<u64, String> {
        let canonical = !s.is_empty()
            && s.bytes().all(|b| b.is_ascii_digit())
            && (s == "0" || !s.starts_with('0'));
        let bid: u64 = match s.parse() {
            Ok(b) if canonical => b,
            _ => return Err(format!("block index {s:?} is not a decimal number")),
        };
        if bid >= self.n_layer {
            return Err(format!(
                "block {bid} out of range (block count {})",
                self.n_layer
            ));
        }
        Ok(bid)
    }

    fn unknown(&self, name: &str, reason: String) -> ArchError {
        ArchError::UnknownTensor {
            arch: self.arch.gguf_arch(),
            name: name.to_owned(),
            reason,
        }
    }
}

fn not_a_parameter() -> String {
    "does not end in .weight or .bias".to_owned()
}

fn split_suffix(name: &str) -> Option<(&str, &'static str)> {
    if let Some(m) = name.strip_suffix(".weight") {
        Some((m, "weight"))
    } else {
        name.strip_suffix(".bias").map(|m| (m, "bias"))
    }
}
