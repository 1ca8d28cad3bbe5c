//! `config.json` <-> GGUF metadata.
//!
//! [`ModelConfig::from_hf_json`] reads both `config.json` layouts:
//! transformers 4 (`rope_theta` and `rope_scaling` at the top level,
//! `torch_dtype`, `head_dim` often absent) and transformers 5
//! (`rope_parameters` holding `rope_theta` and the scaling, `dtype`,
//! `head_dim` always written). Missing keys take the transformers class
//! defaults (`LlamaConfig`, `MistralConfig`, `Qwen2Config`), because the
//! converter reads the config through `AutoConfig`, which fills them in.
//!
//! [`ModelConfig::to_gguf_metadata`] writes the keys, types and order that
//! `convert_hf_to_gguf.py` writes (run under transformers 5, which is what
//! makes `attention.key_length` / `value_length` appear for every Llama and
//! Mistral config: transformers 5 always sets `head_dim` for those classes).
//! [`ModelConfig::from_gguf_metadata`] and [`ModelConfig::to_hf_config`] go the
//! other way, for GGUF -> Hugging Face conversion.
//!
//! Rope scaling: `linear` and `yarn` become `rope.scaling.*` keys as the
//! converter writes them; `llama3` (Llama 3.1 / 3.2) writes no key but a
//! `rope_freqs.weight` tensor of per-dimension factors, computed by
//! [`ModelConfig::rope_freqs`] exactly as the converter's
//! `LlamaModel.generate_extra_tensors` (float32 arithmetic in the same order).
//! `dynamic`, `longrope` (`su`) and unknown types are refused with
//! [`ArchError::UnsupportedRopeScaling`]: the converter writes nothing (or a
//! bare type) for them, which silently produces a model that differs from the
//! original at long context.

use std::collections::BTreeMap;

use serde_json::{Map, Value as Json};
use weightkit_core::{Metadata, Value};

use super::{Arch, ArchError, Result};

/// The largest head dimension accepted (real models use 64 to 256); bounds
/// what [`ModelConfig::rope_freqs`] allocates.
pub const MAX_HEAD_DIM: u64 = 1 << 16;

/// `general.quantization_version`, written by the converter to every file.
const QUANTIZATION_VERSION: u32 = 2;

/// Rope scaling a converted model keeps.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum RopeScaling {
    /// Position interpolation: GGUF `rope.scaling.type = "linear"` and
    /// `rope.scaling.factor`.
    Linear {
        /// The scale factor.
        factor: f64,
    },
    /// YaRN: GGUF `rope.scaling.type = "yarn"` and its factor, original
    /// context length and the optional tuning values.
    Yarn {
        /// The scale factor.
        factor: f64,
        /// `original_max_position_embeddings` (required, as in the converter).
        original_max_position_embeddings: u64,
        /// `extrapolation_factor`.
        extrapolation_factor: Option<f64>,
        /// `attention_factor` (or `attn_factor`).
        attention_factor: Option<f64>,
        /// `beta_fast`.
        beta_fast: Option<f64>,
        /// `beta_slow`.
        beta_slow: Option<f64>,
    },
    /// Llama 3.1 / 3.2 frequency-dependent scaling: no metadata, a
    /// `rope_freqs.weight` tensor instead ([`ModelConfig::rope_freqs`]).
    /// Missing values take the converter's defaults (8, 1, 4, 8192).
    Llama3 {
        /// `factor`.
        factor: f64,
        /// `low_freq_factor`.
        low_freq_factor: f64,
        /// `high_freq_factor`.
        high_freq_factor: f64,
        /// `original_max_position_embeddings`.
        original_max_position_embeddings: u64,
    },
}

/// A Llama-family model's hyperparameters: the part of `config.json` (or of
/// GGUF metadata) that conversion needs.
#[derive(Clone, Debug, PartialEq)]
pub struct ModelConfig {
    /// The architecture.
    pub arch: Arch,
    /// The Hugging Face class (`architectures[0]`, e.g. `MistralForCausalLM`).
    pub hf_class: String,
    /// Vocabulary size (rows of the embedding).
    pub vocab_size: u64,
    /// Embedding width.
    pub hidden_size: u64,
    /// Feed-forward width.
    pub intermediate_size: u64,
    /// Number of blocks.
    pub num_hidden_layers: u64,
    /// Attention heads.
    pub num_attention_heads: u64,
    /// Key-value heads (grouped-query attention).
    pub num_key_value_heads: u64,
    /// `head_dim` as the config states it (`None` when absent or null; see
    /// [`ModelConfig::head_dim`] for the value in effect).
    pub explicit_head_dim: Option<u64>,
    /// Context length the model was trained for.
    pub max_position_embeddings: u64,
    /// RMSNorm epsilon.
    pub rms_norm_eps: f64,
    /// Rope base frequency.
    pub rope_theta: f64,
    /// Rope scaling, if any.
    pub rope_scaling: Option<RopeScaling>,
    /// Whether `lm_head` shares the embedding's weights.
    pub tie_word_embeddings: bool,
    /// `dtype` (transformers 5) or `torch_dtype` (transformers 4).
    pub dtype: Option<String>,
    /// Llama's `attention_bias` (Qwen2 always has q/k/v biases).
    pub attention_bias: bool,
    /// Llama's `mlp_bias`.
    pub mlp_bias: bool,
    /// Mistral's `sliding_window` (not used by GGUF architecture `llama`).
    pub sliding_window: Option<u64>,
    /// `hidden_act` (`silu` for every supported architecture).
    pub hidden_act: String,
    /// The `<type>_token_id` values of `config.json` (`bos`, `eos`, `pad`...,
    /// keyed by type, as JSON: `eos_token_id` may be a list), which the
    /// converter's `SpecialVocab` falls back to.
    pub token_ids: BTreeMap<String, Json>,
}

/// What the caller decides about a GGUF file rather than the config.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GgufOptions {
    /// `general.name`; `"model"` when `None` (the converter uses the model
    /// directory's name or `--model-name`).
    pub name: Option<String>,
    /// `general.size_label` (see [`size_label`]); omitted when `None`.
    pub size_label: Option<String>,
    /// `general.file_type` (llama.cpp's `LLAMA_FTYPE`: 0 F32, 1 F16, 32
    /// BF16, 7 Q8_0...); omitted when `None`. Written where the converter
    /// writes it, inside the architecture keys.
    pub file_type: Option<u32>,
}

impl ModelConfig {
    /// Parses `config.json` text.
    pub fn from_hf_json_str(text: &str) -> Result<ModelConfig> {
        let json: Json = serde_json::from_str(text).map_err(|source| ArchError::Json {
            file: "config.json",
            source,
        })?;
        ModelConfig::from_hf_json(&json)
    }

    /// Reads a parsed `config.json` (either transformers layout).
    pub fn from_hf_json(json: &Json) -> Result<ModelConfig> {
        let c = json.as_object().ok_or_else(|| ArchError::InvalidConfig {
            key: String::new(),
            reason: "not a JSON object".to_owned(),
        })?;
        let (arch, hf_class) = match c.get("architectures") {
            Some(Json::Array(a)) if !a.is_empty() => {
                let name = a[0]
                    .as_str()
                    .ok_or_else(|| invalid("architectures", "not a list of strings"))?;
                (Arch::from_hf_class(name)?, name.to_owned())
            }
            Some(Json::Array(_)) | None | Some(Json::Null) => {
                match c.get("model_type").and_then(Json::as_str) {
                    Some(t) => {
                        let arch = Arch::from_model_type(t)?;
                        (arch, arch.hf_class().to_owned())
                    }
                    None => {
                        return Err(ArchError::MissingConfigKey {
                            key: "architectures",
                        });
                    }
                }
            }
            Some(_) => return Err(invalid("architectures", "not a list of strings")),
        };
        let vocab_size = req_u64(c, "vocab_size")?;
        let hidden_size = req_u64(c, "hidden_size")?;
        let intermediate_size = req_u64(c, "intermediate_size")?;
        let num_hidden_layers = req_u64(c, "num_hidden_layers")?;
        let num_attention_heads = req_u64(c, "num_attention_heads")?;
        if num_attention_heads == 0 {
            return Err(invalid("num_attention_heads", "must be positive"));
        }
        // Class defaults, as transformers' config classes fill them in.
        let num_key_value_heads = opt_u64(c, "num_key_value_heads")?.unwrap_or(match arch {
            Arch::Llama => num_attention_heads,
            Arch::Mistral => 8,
            Arch::Qwen2 => 32,
        });
        if num_key_value_heads == 0 {
            return Err(invalid("num_key_value_heads", "must be positive"));
        }
        let explicit_head_dim = opt_u64(c, "head_dim")?;
        if explicit_head_dim.is_none() && !hidden_size.is_multiple_of(num_attention_heads) {
            return Err(invalid(
                "hidden_size",
                "not a multiple of num_attention_heads and no head_dim",
            ));
        }
        if explicit_head_dim.unwrap_or(hidden_size / num_attention_heads) > MAX_HEAD_DIM {
            return Err(invalid(
                "head_dim",
                &format!("over the {MAX_HEAD_DIM} limit"),
            ));
        }
        let max_position_embeddings =
            opt_u64(c, "max_position_embeddings")?.unwrap_or(match arch {
                Arch::Llama => 2048,
                Arch::Mistral => 4096 * 32,
                Arch::Qwen2 => 32768,
            });
        let rms_norm_eps = opt_f64(c, "rms_norm_eps")?.unwrap_or(1e-6);

        // transformers 5: `rope_parameters` (maybe per layer type); 4: `rope_scaling` + `rope_theta`.
        let rope = match c.get("rope_parameters").filter(|v| !v.is_null()) {
            Some(p) => Some(("rope_parameters", p)),
            None => c
                .get("rope_scaling")
                .filter(|v| !v.is_null())
                .map(|p| ("rope_scaling", p)),
        };
        let rope = match rope {
            Some((key, Json::Object(p))) => {
                let p = match p.get("full_attention") {
                    Some(Json::Object(full)) => full,
                    Some(_) => return Err(invalid(key, "full_attention is not an object")),
                    None => p,
                };
                Some((key, p))
            }
            Some((key, _)) => return Err(invalid(key, "not an object")),
            None => None,
        };
        let rope_theta = match rope.map(|(k, p)| (k, p.get("rope_theta"))) {
            Some((k, Some(v))) if !v.is_null() => v
                .as_f64()
                .ok_or_else(|| invalid(&format!("{k}.rope_theta"), "not a number"))?,
            _ => opt_f64(c, "rope_theta")?.unwrap_or(10000.0),
        };
        let rope_scaling = match rope {
            Some((key, p)) => parse_rope_scaling(key, p)?,
            None => None,
        };
        let dtype = match c
            .get("dtype")
            .filter(|v| !v.is_null())
            .or_else(|| c.get("torch_dtype"))
        {
            None | Some(Json::Null) => None,
            Some(Json::String(s)) => Some(s.clone()),
            Some(_) => return Err(invalid("dtype", "not a string")),
        };
        let mut token_ids = BTreeMap::new();
        for (k, v) in c {
            if let Some(t) = k.strip_suffix("_token_id") {
                token_ids.insert(t.to_owned(), v.clone());
            }
        }
        Ok(ModelConfig {
            arch,
            hf_class,
            vocab_size,
            hidden_size,
            intermediate_size,
            num_hidden_layers,
            num_attention_heads,
            num_key_value_heads,
            explicit_head_dim,
            max_position_embeddings,
            rms_norm_eps,
            rope_theta,
            rope_scaling,
            tie_word_embeddings: opt_bool(c, "tie_word_embeddings")?.unwrap_or(false),
            dtype,
            attention_bias: opt_bool(c, "attention_bias")?.unwrap_or(false),
            mlp_bias: opt_bool(c, "mlp_bias")?.unwrap_or(false),
            sliding_window: opt_u64(c, "sliding_window")?,
            hidden_act: match c.get("hidden_act") {
                Some(Json::String(s)) => s.clone(),
                _ => "silu".to_owned(),
            },
            token_ids,
        })
    }

    /// The head dimension in effect: `head_dim` if the config states it,
    /// else `hidden_size / num_attention_heads`.
    pub fn head_dim(&self) -> u64 {
        self.explicit_head_dim
            .unwrap_or(self.hidden_size / self.num_attention_heads.max(1))
    }

    /// The GGUF metadata `convert_hf_to_gguf.py` writes for this config,
    /// in its order, up to and including `general.quantization_version`
    /// (the tokenizer keys follow: [`tokenizer_metadata`](super::tokenizer_metadata)).
    ///
    /// Not written (the converter derives them from files other than
    /// `config.json`): the `general.*` authorship keys it guesses from model
    /// cards and directory names (`general.organization`, `general.basename`,
    /// `general.license`...) and `general.sampling.*` from
    /// `generation_config.json`.
    pub fn to_gguf_metadata(&self, opts: &GgufOptions) -> Result<Metadata> {
        let arch = self.arch.gguf_arch();
        let mut m = Metadata::new();
        let k = |s: &str| format!("{arch}.{s}");
        m.insert("general.architecture", arch);
        m.insert("general.type", "model");
        m.insert(
            "general.name",
            opts.name.clone().unwrap_or_else(|| "model".to_owned()),
        );
        if let Some(l) = &opts.size_label {
            m.insert("general.size_label", l.as_str());
        }
        m.insert(
            k("block_count"),
            u32_of("num_hidden_layers", self.num_hidden_layers)?,
        );
        m.insert(
            k("context_length"),
            u32_of("max_position_embeddings", self.max_position_embeddings)?,
        );
        m.insert(
            k("embedding_length"),
            u32_of("hidden_size", self.hidden_size)?,
        );
        m.insert(
            k("feed_forward_length"),
            u32_of("intermediate_size", self.intermediate_size)?,
        );
        m.insert(
            k("attention.head_count"),
            u32_of("num_attention_heads", self.num_attention_heads)?,
        );
        m.insert(
            k("attention.head_count_kv"),
            u32_of("num_key_value_heads", self.num_key_value_heads)?,
        );
        match &self.rope_scaling {
            Some(RopeScaling::Linear { factor }) => {
                m.insert(k("rope.scaling.type"), "linear");
                m.insert(k("rope.scaling.factor"), *factor as f32);
            }
            Some(RopeScaling::Yarn {
                factor,
                original_max_position_embeddings,
                extrapolation_factor,
                attention_factor,
                beta_fast,
                beta_slow,
            }) => {
                m.insert(k("rope.scaling.type"), "yarn");
                m.insert(k("rope.scaling.factor"), *factor as f32);
                m.insert(
                    k("rope.scaling.original_context_length"),
                    u32_of(
                        "original_max_position_embeddings",
                        *original_max_position_embeddings,
                    )?,
                );
                for (key, v) in [
                    ("rope.scaling.yarn_ext_factor", extrapolation_factor),
                    ("rope.scaling.yarn_attn_factor", attention_factor),
                    ("rope.scaling.yarn_beta_fast", beta_fast),
                    ("rope.scaling.yarn_beta_slow", beta_slow),
                ] {
                    if let Some(v) = v {
                        m.insert(k(key), *v as f32);
                    }
                }
            }
            Some(RopeScaling::Llama3 { .. }) | None => {}
        }
        m.insert(k("rope.freq_base"), self.rope_theta as f32);
        m.insert(
            k("attention.layer_norm_rms_epsilon"),
            self.rms_norm_eps as f32,
        );
        // transformers 5 sets head_dim for Llama and Mistral; Qwen2 only has
        // it when config.json states it.
        let head_dim_known = match self.arch {
            Arch::Llama | Arch::Mistral => true,
            Arch::Qwen2 => self.explicit_head_dim.is_some(),
        };
        if head_dim_known {
            let hd = u32_of("head_dim", self.head_dim())?;
            m.insert(k("attention.key_length"), hd);
            m.insert(k("attention.value_length"), hd);
        }
        if let Some(ft) = opts.file_type {
            m.insert("general.file_type", ft);
        }
        if self.arch.gguf_arch() == "llama" {
            m.insert(k("vocab_size"), u32_of("vocab_size", self.vocab_size)?);
            m.insert(
                k("rope.dimension_count"),
                u32_of("head_dim", self.head_dim())?,
            );
        }
        m.insert("general.quantization_version", QUANTIZATION_VERSION);
        Ok(m)
    }

    /// The `rope_freqs.weight` tensor (`head_dim / 2` float32 factors) the
    /// converter adds for Llama-3 rope scaling, `None` for other scalings.
    ///
    /// Computed as `LlamaModel.generate_extra_tensors` does, in float32 with
    /// the same operation order, so the factors match the converter's to the
    /// last bit except where the platform's `powf` and torch's differ by an
    /// ulp (the test allows 2 ulps and, on the fixture, sees none).
    pub fn rope_freqs(&self) -> Option<Vec<f32>> {
        let Some(RopeScaling::Llama3 {
            factor,
            low_freq_factor,
            high_freq_factor,
            original_max_position_embeddings,
        }) = self.rope_scaling
        else {
            return None;
        };
        let dim = self.head_dim();
        let base = self.rope_theta as f32;
        let two_pi = (2.0 * std::f64::consts::PI) as f32;
        let old_ctx = original_max_position_embeddings as f64;
        let low_wavelen = (old_ctx / low_freq_factor) as f32;
        let high_wavelen = (old_ctx / high_freq_factor) as f32;
        let (factor32, low32) = (factor as f32, low_freq_factor as f32);
        let span = (high_freq_factor - low_freq_factor) as f32;
        let old_ctx32 = original_max_position_embeddings as f32;
        let out = (0..dim)
            .step_by(2)
            .map(|i| {
                let freq = 1.0f32 / base.powf(i as f32 / dim as f32);
                let wavelen = two_pi / freq;
                if wavelen < high_wavelen {
                    1.0
                } else if wavelen > low_wavelen {
                    factor32
                } else {
                    let smooth = (old_ctx32 / wavelen - low32) / span;
                    1.0 / ((1.0 - smooth) / factor32 + smooth)
                }
            })
            .collect();
        Some(out)
    }

    /// Reads the config back from GGUF metadata (`general.architecture`
    /// `llama` or `qwen2`). `tensor_names` is the file's tensor list: a
    /// model without `output.weight` has tied embeddings.
    ///
    /// A `llama` file gives [`Arch::Llama`] (a converted Mistral included).
    /// Llama-3 rope scaling is not in the metadata (only its
    /// `rope_freqs.weight` tensor is): pass that tensor to
    /// [`ModelConfig::infer_llama3_rope_scaling`] to recover it.
    pub fn from_gguf_metadata<'a>(
        meta: &Metadata,
        tensor_names: impl IntoIterator<Item = &'a str>,
    ) -> Result<ModelConfig> {
        let gguf_arch =
            meta.get_str("general.architecture")
                .ok_or_else(|| ArchError::MissingMetadata {
                    key: "general.architecture".to_owned(),
                })?;
        let arch = Arch::from_gguf_arch(gguf_arch)?;
        let k = |s: &str| format!("{gguf_arch}.{s}");
        let num_attention_heads = meta_u64(meta, &k("attention.head_count"))?;
        if num_attention_heads == 0 {
            return Err(ArchError::InvalidMetadata {
                key: k("attention.head_count"),
                reason: "zero".to_owned(),
            });
        }
        let hidden_size = meta_u64(meta, &k("embedding_length"))?;
        let num_key_value_heads =
            opt_meta_u64(meta, &k("attention.head_count_kv"))?.unwrap_or(num_attention_heads);
        let head_dim = match opt_meta_u64(meta, &k("attention.key_length"))? {
            Some(v) => Some(v),
            None => opt_meta_u64(meta, &k("rope.dimension_count"))?,
        };
        let effective = head_dim.unwrap_or(hidden_size / num_attention_heads);
        if effective > MAX_HEAD_DIM {
            return Err(ArchError::InvalidMetadata {
                key: k("attention.key_length"),
                reason: format!("head dimension {effective} over the {MAX_HEAD_DIM} limit"),
            });
        }
        let explicit_head_dim = match arch {
            // Qwen2's transformers config has no head_dim unless it differs.
            Arch::Qwen2 => {
                head_dim.filter(|&d| d.checked_mul(num_attention_heads) != Some(hidden_size))
            }
            _ => Some(effective),
        };
        let vocab_size = match opt_meta_u64(meta, &k("vocab_size"))? {
            Some(v) => v,
            None => match meta.get("tokenizer.ggml.tokens") {
                Some(Value::Array(a)) => a.len() as u64,
                _ => {
                    return Err(ArchError::MissingMetadata {
                        key: k("vocab_size"),
                    });
                }
            },
        };
        let rope_scaling = match meta.get_str(&k("rope.scaling.type")) {
            None | Some("none") => None,
            Some("linear") => Some(RopeScaling::Linear {
                factor: meta_f64(meta, &k("rope.scaling.factor"))?,
            }),
            Some("yarn") => Some(RopeScaling::Yarn {
                factor: meta_f64(meta, &k("rope.scaling.factor"))?,
                original_max_position_embeddings: meta_u64(
                    meta,
                    &k("rope.scaling.original_context_length"),
                )?,
                extrapolation_factor: opt_meta_f64(meta, &k("rope.scaling.yarn_ext_factor"))?,
                attention_factor: opt_meta_f64(meta, &k("rope.scaling.yarn_attn_factor"))?,
                beta_fast: opt_meta_f64(meta, &k("rope.scaling.yarn_beta_fast"))?,
                beta_slow: opt_meta_f64(meta, &k("rope.scaling.yarn_beta_slow"))?,
            }),
            Some(other) => {
                return Err(ArchError::UnsupportedRopeScaling {
                    rope_type: other.to_owned(),
                    reason: "only linear and yarn scaling are read from GGUF metadata".to_owned(),
                });
            }
        };
        let mut has_output = false;
        for n in tensor_names {
            has_output |= n == "output.weight";
        }
        let mut token_ids = BTreeMap::new();
        for (typ, key) in [
            ("bos", "bos_token_id"),
            ("eos", "eos_token_id"),
            ("pad", "padding_token_id"),
        ] {
            if let Some(id) = opt_meta_u64(meta, &format!("tokenizer.ggml.{key}"))? {
                token_ids.insert(typ.to_owned(), Json::from(id));
            }
        }
        let dtype = match meta.get("general.file_type").and_then(Value::as_u64) {
            Some(0) => Some("float32"),
            Some(1) => Some("float16"),
            Some(32) => Some("bfloat16"),
            _ => None,
        };
        Ok(ModelConfig {
            arch,
            hf_class: arch.hf_class().to_owned(),
            vocab_size,
            hidden_size,
            intermediate_size: meta_u64(meta, &k("feed_forward_length"))?,
            num_hidden_layers: meta_u64(meta, &k("block_count"))?,
            num_attention_heads,
            num_key_value_heads,
            explicit_head_dim,
            max_position_embeddings: opt_meta_u64(meta, &k("context_length"))?.unwrap_or(
                match arch {
                    Arch::Qwen2 => 32768,
                    _ => 2048,
                },
            ),
            rms_norm_eps: meta_f64(meta, &k("attention.layer_norm_rms_epsilon"))?,
            rope_theta: opt_meta_f64(meta, &k("rope.freq_base"))?.unwrap_or(10000.0),
            rope_scaling,
            tie_word_embeddings: !has_output,
            dtype: dtype.map(str::to_owned),
            attention_bias: false,
            mlp_bias: false,
            sliding_window: None,
            hidden_act: "silu".to_owned(),
            token_ids,
        })
    }

    /// Recovers Llama-3 rope scaling from a `rope_freqs.weight` tensor: tries
    /// the parameters of the published Llama 3.x models (low / high
    /// frequency factors 1 / 4, original context 8192, factor = the largest
    /// entry) and keeps them if [`ModelConfig::rope_freqs`] then reproduces
    /// every factor to within 2 ulps. Returns whether it did; on `false` the
    /// config is unchanged (and a Hugging Face model made from it will not
    /// scale rope like the GGUF one).
    pub fn infer_llama3_rope_scaling(&mut self, factors: &[f32]) -> bool {
        let factor = factors.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        if !factor.is_finite() || factor < 1.0 {
            return false;
        }
        let factor = shortest_f64(factor);
        let saved = self.rope_scaling.take();
        for orig in [8192u64, 4096, 16384, 32768, 2048, 65536, 131072] {
            self.rope_scaling = Some(RopeScaling::Llama3 {
                factor,
                low_freq_factor: 1.0,
                high_freq_factor: 4.0,
                original_max_position_embeddings: orig,
            });
            if let Some(ours) = self.rope_freqs()
                && ours.len() == factors.len()
                && ours.iter().zip(factors).all(|(&a, &b)| ulps(a, b) <= 2)
            {
                return true;
            }
        }
        self.rope_scaling = saved;
        false
    }

    /// A transformers-5 style `config.json` for this model (what
    /// `save_pretrained` writes for the class, keys sorted), for GGUF ->
    /// Hugging Face conversion.
    pub fn to_hf_config(&self) -> Json {
        let mut c = Map::new();
        let mut put = |k: &str, v: Json| {
            c.insert(k.to_owned(), v);
        };
        put("architectures", Json::from(vec![self.hf_class.clone()]));
        put("model_type", Json::from(self.arch.model_type()));
        put("attention_dropout", Json::from(0.0));
        for typ in ["bos", "eos", "pad"] {
            put(
                &format!("{typ}_token_id"),
                self.token_ids.get(typ).cloned().unwrap_or(Json::Null),
            );
        }
        put("dtype", self.dtype.clone().map_or(Json::Null, Json::from));
        put("hidden_act", Json::from(self.hidden_act.as_str()));
        put("hidden_size", Json::from(self.hidden_size));
        put("initializer_range", Json::from(0.02));
        put("intermediate_size", Json::from(self.intermediate_size));
        put(
            "max_position_embeddings",
            Json::from(self.max_position_embeddings),
        );
        put("num_attention_heads", Json::from(self.num_attention_heads));
        put("num_hidden_layers", Json::from(self.num_hidden_layers));
        put("num_key_value_heads", Json::from(self.num_key_value_heads));
        put("rms_norm_eps", Json::from(self.rms_norm_eps));
        let mut rope = Map::new();
        rope.insert("rope_theta".to_owned(), Json::from(self.rope_theta));
        match &self.rope_scaling {
            None => {
                rope.insert("rope_type".to_owned(), Json::from("default"));
            }
            Some(RopeScaling::Linear { factor }) => {
                rope.insert("rope_type".to_owned(), Json::from("linear"));
                rope.insert("factor".to_owned(), Json::from(*factor));
            }
            Some(RopeScaling::Yarn {
                factor,
                original_max_position_embeddings,
                extrapolation_factor,
                attention_factor,
                beta_fast,
                beta_slow,
            }) => {
                rope.insert("rope_type".to_owned(), Json::from("yarn"));
                rope.insert("factor".to_owned(), Json::from(*factor));
                rope.insert(
                    "original_max_position_embeddings".to_owned(),
                    Json::from(*original_max_position_embeddings),
                );
                for (k, v) in [
                    ("extrapolation_factor", extrapolation_factor),
                    ("attention_factor", attention_factor),
                    ("beta_fast", beta_fast),
                    ("beta_slow", beta_slow),
                ] {
                    if let Some(v) = v {
                        rope.insert(k.to_owned(), Json::from(*v));
                    }
                }
            }
            Some(RopeScaling::Llama3 {
                factor,
                low_freq_factor,
                high_freq_factor,
                original_max_position_embeddings,
            }) => {
                rope.insert("rope_type".to_owned(), Json::from("llama3"));
                rope.insert("factor".to_owned(), Json::from(*factor));
                rope.insert("low_freq_factor".to_owned(), Json::from(*low_freq_factor));
                rope.insert("high_freq_factor".to_owned(), Json::from(*high_freq_factor));
                rope.insert(
                    "original_max_position_embeddings".to_owned(),
                    Json::from(*original_max_position_embeddings),
                );
            }
        }
        put("rope_parameters", Json::Object(rope));
        put("tie_word_embeddings", Json::from(self.tie_word_embeddings));
        put("use_cache", Json::from(true));
        put("vocab_size", Json::from(self.vocab_size));
        match self.arch {
            Arch::Llama => {
                put("attention_bias", Json::from(self.attention_bias));
                put("head_dim", Json::from(self.head_dim()));
                put("mlp_bias", Json::from(self.mlp_bias));
                put("pretraining_tp", Json::from(1));
            }
            Arch::Mistral => {
                put("head_dim", Json::from(self.head_dim()));
                put(
                    "sliding_window",
                    self.sliding_window.map_or(Json::Null, Json::from),
                );
            }
            Arch::Qwen2 => {
                if let Some(hd) = self.explicit_head_dim {
                    put("head_dim", Json::from(hd));
                }
                let layers = vec![
                    Json::from("full_attention");
                    self.num_hidden_layers.min(1 << 20) as usize
                ];
                put("layer_types", Json::Array(layers));
                put("max_window_layers", Json::from(28));
                put(
                    "sliding_window",
                    self.sliding_window.map_or(Json::Null, Json::from),
                );
                put("use_sliding_window", Json::from(false));
            }
        }
        Json::Object(c)
    }
}

/// `general.size_label` as gguf-py writes it for a model of `total_params`
/// parameters (`gguf.size_label` for a dense model): `124K`, `1.1B`, `70B`.
pub fn size_label(total_params: u64) -> String {
    let n = total_params as f64;
    let (scaled, suffix) = if n > 1e12 {
        (n * 1e-12, "T")
    } else if n > 1e9 {
        (n * 1e-9, "B")
    } else if n > 1e6 {
        (n * 1e-6, "M")
    } else {
        (n * 1e-3, "K")
    };
    // Python: max(min_digits - len(str(round(scaled)).lstrip('0')), 0)
    let int_digits = format!("{}", scaled.round_ties_even() as u64);
    let digits = int_digits.trim_start_matches('0').len();
    let fix = 2usize.saturating_sub(digits);
    format!("{scaled:.fix$}{suffix}")
}

fn parse_rope_scaling(key: &str, p: &Map<String, Json>) -> Result<Option<RopeScaling>> {
    let rope_type = match p
        .get("rope_type")
        .filter(|v| !v.is_null())
        .or_else(|| p.get("type"))
    {
        None | Some(Json::Null) => return Ok(None),
        Some(Json::String(s)) => s.as_str(),
        Some(_) => return Err(invalid(&format!("{key}.rope_type"), "not a string")),
    };
    let num = |name: &str| -> Result<Option<f64>> {
        match p.get(name) {
            None | Some(Json::Null) => Ok(None),
            Some(v) => v
                .as_f64()
                .map(Some)
                .ok_or_else(|| invalid(&format!("{key}.{name}"), "not a number")),
        }
    };
    let int = |name: &str| -> Result<Option<u64>> {
        match p.get(name) {
            None | Some(Json::Null) => Ok(None),
            Some(v) => json_u64(v)
                .map(Some)
                .ok_or_else(|| invalid(&format!("{key}.{name}"), "not a non-negative integer")),
        }
    };
    let refuse = |reason: &str| {
        Err(ArchError::UnsupportedRopeScaling {
            rope_type: rope_type.to_owned(),
            reason: reason.to_owned(),
        })
    };
    match rope_type {
        "default" => Ok(None),
        "linear" => match num("factor")? {
            Some(factor) => Ok(Some(RopeScaling::Linear { factor })),
            None => Err(invalid(
                &format!("{key}.factor"),
                "linear rope scaling without a factor",
            )),
        },
        "yarn" => {
            let factor = num("factor")?
                .ok_or_else(|| invalid(&format!("{key}.factor"), "yarn without a factor"))?;
            let orig = int("original_max_position_embeddings")?.ok_or_else(|| {
                invalid(
                    &format!("{key}.original_max_position_embeddings"),
                    "yarn without the original context length",
                )
            })?;
            Ok(Some(RopeScaling::Yarn {
                factor,
                original_max_position_embeddings: orig,
                extrapolation_factor: num("extrapolation_factor")?,
                attention_factor: match num("attention_factor")? {
                    Some(v) => Some(v),
                    None => num("attn_factor")?,
                },
                beta_fast: num("beta_fast")?,
                beta_slow: num("beta_slow")?,
            }))
        }
        t if t.eq_ignore_ascii_case("llama3") => Ok(Some(RopeScaling::Llama3 {
            factor: num("factor")?.unwrap_or(8.0),
            low_freq_factor: num("low_freq_factor")?.unwrap_or(1.0),
            high_freq_factor: num("high_freq_factor")?.unwrap_or(4.0),
            original_max_position_embeddings: int("original_max_position_embeddings")?
                .unwrap_or(8192),
        })),
        "dynamic" => refuse(
            "dynamic NTK scaling has no GGUF representation for architecture llama (the converter drops it)",
        ),
        "longrope" | "su" => refuse(
            "longrope needs per-dimension factor tensors that the Llama converter does not write (only the scaling type)",
        ),
        _ => refuse("unknown rope type (supported: default, linear, yarn, llama3)"),
    }
}

fn invalid(key: &str, reason: &str) -> ArchError {
    ArchError::InvalidConfig {
        key: key.to_owned(),
        reason: reason.to_owned(),
    }
}

/// A JSON integer >= 0 (also `2.0`-style floats with no fraction, which
/// Python's `json` would hand the converter as float and gguf-py would still
/// pack as an integer).
fn json_u64(v: &Json) -> Option<u64> {
    if let Some(u) = v.as_u64() {
        return Some(u);
    }
    let f = v.as_f64()?;
    (f >= 0.0 && f.fract() == 0.0 && f < 1.8e19).then_some(f as u64)
}

fn opt_u64(c: &Map<String, Json>, key: &str) -> Result<Option<u64>> {
    match c.get(key) {
        None | Some(Json::Null) => Ok(None),
        Some(v) => json_u64(v)
            .map(Some)
            .ok_or_else(|| invalid(key, "not a non-negative integer")),
    }
}

fn req_u64(c: &Map<String, Json>, key: &'static str) -> Result<u64> {
    opt_u64(c, key)?.ok_or(ArchError::MissingConfigKey { key })
}

fn opt_f64(c: &Map<String, Json>, key: &str) -> Result<Option<f64>> {
    match c.get(key) {
        None | Some(Json::Null) => Ok(None),
        Some(v) => v
            .as_f64()
            .map(Some)
            .ok_or_else(|| invalid(key, "not a number")),
    }
}

fn opt_bool(c: &Map<String, Json>, key: &str) -> Result<Option<bool>> {
    match c.get(key) {
        None | Some(Json::Null) => Ok(None),
        Some(Json::Bool(b)) => Ok(Some(*b)),
        Some(_) => Err(invalid(key, "not a boolean")),
    }
}

fn u32_of(key: &str, v: u64) -> Result<u32> {
    u32::try_from(v).map_err(|_| invalid(key, &format!("{v} does not fit GGUF's uint32")))
}

fn opt_meta_u64(meta: &Metadata, key: &str) -> Result<Option<u64>> {
    match meta.get(key) {
        None => Ok(None),
        Some(v) => v
            .as_u64()
            .map(Some)
            .ok_or_else(|| ArchError::InvalidMetadata {
                key: key.to_owned(),
                reason: format!("expected a non-negative integer, found {v}"),
            }),
    }
}

fn meta_u64(meta: &Metadata, key: &str) -> Result<u64> {
    opt_meta_u64(meta, key)?.ok_or_else(|| ArchError::MissingMetadata {
        key: key.to_owned(),
    })
}

fn opt_meta_f64(meta: &Metadata, key: &str) -> Result<Option<f64>> {
    match meta.get(key) {
        None => Ok(None),
        // float32 values become the shortest decimal that reads back as the
        // same float32 (1e-5, not 9.999999747378752e-06).
        Some(Value::F32(f)) => Ok(Some(shortest_f64(*f))),
        Some(Value::F64(f)) => Ok(Some(*f)),
        Some(v) => match v.as_u64() {
            Some(u) => Ok(Some(u as f64)),
            None => Err(ArchError::InvalidMetadata {
                key: key.to_owned(),
                reason: format!("expected a number, found {v}"),
            }),
        },
    }
}

fn meta_f64(meta: &Metadata, key: &str) -> Result<f64> {
    opt_meta_f64(meta, key)?.ok_or_else(|| ArchError::MissingMetadata {
        key: key.to_owned(),
    })
}

fn shortest_f64(f: f32) -> f64 {
    format!("{f}").parse().unwrap_or(f64::from(f))
}

fn ulps(a: f32, b: f32) -> u32 {
    if a == b {
        return 0;
    }
    if a.is_nan() || b.is_nan() || a.is_sign_negative() != b.is_sign_negative() {
        return u32::MAX;
    }
    a.to_bits().abs_diff(b.to_bits())
}
