//! PEFT adapter directories: the typed config and the per-module factors.
//!
//! The config is parsed strictly: every field PEFT writes that changes the
//! merged weights is either honoured or rejected, and an unknown field is
//! only tolerated while it holds a "nothing" value (`null`, `false`, `{}`,
//! `[]`), so a newer PEFT feature can never be silently dropped.

use std::collections::BTreeMap;
use std::fmt;
use std::io::Write;
use std::path::Path;

use regex::Regex;
use serde::de::{Deserializer, MapAccess, Visitor};
use serde::ser::{SerializeMap, Serializer};
use serde::{Deserialize, Serialize};
use weightkit_core::atomic::AtomicFile;
use weightkit_core::{DType, Metadata, TensorInfo, TensorSink, Value, convert};
use weightkit_io::Source;
use weightkit_safetensors::SafetensorsWriter;

use crate::error::LoraError;

/// The prefix PEFT puts before module names in saved adapters.
pub const KEY_PREFIX: &str = "base_model.model.";

/// Fields that never change the merged weights (bookkeeping, training-only
/// settings, or selectors whose effect is fully recorded by which tensors the
/// adapter file holds).
const IGNORED_FIELDS: &[&str] = &[
    "base_model_name_or_path",
    "revision",
    "task_type",
    "inference_mode",
    "lora_dropout",
    "peft_version",
    "auto_mapping",
    "megatron_config",
    "megatron_core",
    "layers_pattern",
    "layers_to_transform",
    "exclude_modules",
    "qalora_group_size",
    "ensure_weight_tying",
];

/// `target_modules`: a list of module-name suffixes or one regex.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum TargetModules {
    /// Names matched as the whole module name or a `.`-separated suffix.
    List(Vec<String>),
    /// A regex that must match the whole module name (`"all-linear"` matches
    /// every module that has LoRA weights).
    Regex(String),
}

impl TargetModules {
    /// Whether PEFT would have targeted `module` (its `check_target_module_exists`).
    pub fn matches(&self, module: &str) -> Result<bool, LoraError> {
        match self {
            TargetModules::List(names) => Ok(names
                .iter()
                .any(|t| module == t || module.ends_with(&format!(".{t}")))),
            TargetModules::Regex(r) if r == "all-linear" => Ok(true),
            TargetModules::Regex(r) => {
                Ok(compile(&format!("^(?:{r})$"), "target_modules")?.is_match(module))
            }
        }
    }
}

fn compile(pattern: &str, field: &str) -> Result<Regex, LoraError> {
    Regex::new(pattern).map_err(|e| LoraError::Config {
        field: field.to_owned(),
        message: format!("invalid regex {pattern:?}: {e}"),
    })
}

/// A JSON object read in file order (PEFT's pattern dicts are first-match-wins).
/// It serializes as a JSON object in the same order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct OrderedMap<T>(pub Vec<(String, T)>);

impl<T: Serialize> Serialize for OrderedMap<T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(self.0.len()))?;
        for (k, v) in &self.0 {
            m.serialize_entry(k, v)?;
        }
        m.end()
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for OrderedMap<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<T>(std::marker::PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for V<T> {
            type Value = OrderedMap<T>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object")
            }
            fn visit_unit<E>(self) -> Result<Self::Value, E> {
                Ok(OrderedMap(Vec::new()))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<Self::Value, A::Error> {
                let mut out = Vec::new();
                while let Some((k, v)) = m.next_entry::<String, T>()? {
                    out.push((k, v));
                }
                Ok(OrderedMap(out))
            }
        }
        d.deserialize_any(V(std::marker::PhantomData))
    }
}

fn default_r() -> usize {
    8
}
fn default_alpha() -> f64 {
    8.0
}
fn default_bias() -> String {
    "none".to_owned()
}

/// The fields of `adapter_config.json` that change the merged weights.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct AdapterConfig {
    /// Must be `"LORA"`.
    pub peft_type: String,
    /// Default rank.
    #[serde(default = "default_r")]
    pub r: usize,
    /// Default alpha.
    #[serde(default = "default_alpha")]
    pub lora_alpha: f64,
    /// `scaling = alpha / sqrt(r)` instead of `alpha / r`.
    #[serde(default)]
    pub use_rslora: bool,
    /// Per-module rank overrides (regex suffixes, first match wins).
    #[serde(default)]
    pub rank_pattern: OrderedMap<usize>,
    /// Per-module alpha overrides (regex suffixes, first match wins).
    #[serde(default)]
    pub alpha_pattern: OrderedMap<f64>,
    /// The base stores weights as `(in, out)` (GPT-2's `Conv1D`).
    #[serde(default)]
    pub fan_in_fan_out: bool,
    /// DoRA: the adapter holds `lora_magnitude_vector`s.
    #[serde(default)]
    pub use_dora: bool,
    /// `lora_B` carries a bias, merged as `bias += scaling * lora_B.bias`
    /// (PEFT's `lora_bias`; not with DoRA or embeddings, as PEFT).
    #[serde(default)]
    pub lora_bias: bool,
    /// Modules whose full weights the adapter stores and replaces.
    #[serde(default)]
    pub modules_to_save: Option<Vec<String>>,
    /// The modules LoRA was applied to.
    #[serde(default)]
    pub target_modules: Option<TargetModules>,
    /// Which base biases were trained and saved with the adapter: `"none"`,
    /// `"all"` (every bias) or `"lora_only"` (the adapted modules' biases);
    /// saved biases replace the base's when merging.
    #[serde(default = "default_bias")]
    pub bias: String,
    /// How the factors were initialised; PiSSA/OLoRA/LoftQ/CorDA/EVA-style
    /// values mean the base itself was changed, so they are rejected.
    #[serde(default)]
    pub init_lora_weights: serde_json::Value,
    /// Every other field, checked by [`AdapterConfig::validate`].
    #[serde(flatten)]
    pub other: BTreeMap<String, serde_json::Value>,
}

fn is_nothing(v: &serde_json::Value) -> bool {
    match v {
        serde_json::Value::Null | serde_json::Value::Bool(false) => true,
        serde_json::Value::Object(m) => m.is_empty(),
        serde_json::Value::Array(a) => a.is_empty(),
        _ => false,
    }
}

fn config_err(field: &str, message: impl Into<String>) -> LoraError {
    LoraError::Config {
        field: field.to_owned(),
        message: message.into(),
    }
}

impl AdapterConfig {
    /// Parses and validates `adapter_config.json` text.
    pub fn from_json_str(text: &str) -> Result<Self, LoraError> {
        let config: AdapterConfig =
            serde_json::from_str(text).map_err(|source| LoraError::ConfigJson {
                path: "adapter_config.json".into(),
                source,
            })?;
        config.validate()?;
        Ok(config)
    }

    /// Reads and validates `path`.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self, LoraError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| LoraError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let config: AdapterConfig =
            serde_json::from_str(&text).map_err(|source| LoraError::ConfigJson {
                path: path.to_path_buf(),
                source,
            })?;
        config.validate()?;
        Ok(config)
    }

    /// Rejects anything this crate cannot apply exactly.
    pub fn validate(&self) -> Result<(), LoraError> {
        if self.peft_type != "LORA" {
            return Err(LoraError::PeftType(self.peft_type.clone()));
        }
        if self.r == 0 {
            return Err(config_err("r", "must be positive"));
        }
        if !self.lora_alpha.is_finite() {
            return Err(config_err("lora_alpha", "must be finite"));
        }
        if self.lora_bias && self.use_dora {
            // PEFT's LoraConfig raises the same.
            return Err(config_err(
                "lora_bias",
                "true is not supported with use_dora",
            ));
        }
        if !matches!(self.bias.as_str(), "none" | "all" | "lora_only") {
            return Err(config_err(
                "bias",
                format!(
                    "{:?} is not one of \"none\", \"all\", \"lora_only\"",
                    self.bias
                ),
            ));
        }
        match &self.init_lora_weights {
            serde_json::Value::Null | serde_json::Value::Bool(_) => {}
            serde_json::Value::String(s) if s == "gaussian" => {}
            other => {
                return Err(config_err(
                    "init_lora_weights",
                    format!(
                        "{other} changes the base weights; convert the adapter to plain LoRA first"
                    ),
                ));
            }
        }
        for (k, _) in &self.rank_pattern.0 {
            compile(&format!("^(?:.*\\.)?(?:{k})$"), "rank_pattern")?;
        }
        for (k, a) in &self.alpha_pattern.0 {
            compile(&format!("^(?:.*\\.)?(?:{k})$"), "alpha_pattern")?;
            if !a.is_finite() {
                return Err(config_err("alpha_pattern", format!("{k}: not finite")));
            }
        }
        if let Some((k, _)) = self.rank_pattern.0.iter().find(|(_, r)| *r == 0) {
            return Err(config_err("rank_pattern", format!("{k}: rank 0")));
        }
        for (k, v) in &self.other {
            if IGNORED_FIELDS.contains(&k.as_str()) || is_nothing(v) {
                continue;
            }
            return Err(config_err(
                k,
                format!("unsupported value {v} (this field may change the merged weights)"),
            ));
        }
        Ok(())
    }

    fn pattern_match<'a, T>(map: &'a OrderedMap<T>, module: &str) -> Option<&'a T> {
        // PEFT: re.match(rf"(.*\.)?({key})$", module), first match wins.
        map.0.iter().find_map(|(k, v)| {
            Regex::new(&format!("^(?:.*\\.)?(?:{k})$"))
                .ok()
                .filter(|re| re.is_match(module))
                .map(|_| v)
        })
    }

    /// The rank of `module` (after `rank_pattern`).
    pub fn rank_for(&self, module: &str) -> usize {
        Self::pattern_match(&self.rank_pattern, module)
            .copied()
            .unwrap_or(self.r)
    }

    /// The alpha of `module` (after `alpha_pattern`).
    pub fn alpha_for(&self, module: &str) -> f64 {
        Self::pattern_match(&self.alpha_pattern, module)
            .copied()
            .unwrap_or(self.lora_alpha)
    }

    /// PEFT's `scaling` for `module`: `alpha / r`, or `alpha / sqrt(r)` with rsLoRA.
    pub fn scaling_for(&self, module: &str) -> f64 {
        let r = self.rank_for(module) as f64;
        let alpha = self.alpha_for(module);
        if self.use_rslora {
            alpha / r.sqrt()
        } else {
            alpha / r
        }
    }

    /// `adapter_config.json` text as PEFT writes it: every field this crate
    /// models under PEFT's name (PEFT's default where the file read had
    /// none: `init_lora_weights` becomes `true`), every other field read
    /// kept as it was, keys sorted and indented by two spaces (PEFT's
    /// `json.dumps(..., indent=2, sort_keys=True)`). `rank_pattern` and
    /// `alpha_pattern` keep their order, since the first match wins here.
    /// Whole-number alphas are written as integers (PEFT's `int` type).
    pub fn to_json_string(&self) -> Result<String, LoraError> {
        let mut fields: BTreeMap<&str, ConfigField<'_>> = self
            .other
            .iter()
            .map(|(k, v)| (k.as_str(), ConfigField::Json(v.clone())))
            .collect();
        let json = |v: serde_json::Value| ConfigField::Json(v);
        let init = match &self.init_lora_weights {
            serde_json::Value::Null => serde_json::Value::Bool(true),
            v => v.clone(),
        };
        let modeled = [
            ("peft_type", json(self.peft_type.clone().into())),
            ("r", json(self.r.into())),
            ("lora_alpha", json(json_number(self.lora_alpha))),
            ("use_rslora", json(self.use_rslora.into())),
            ("rank_pattern", ConfigField::Ranks(&self.rank_pattern)),
            (
                "alpha_pattern",
                ConfigField::Alphas(OrderedMap(
                    self.alpha_pattern
                        .0
                        .iter()
                        .map(|(k, a)| (k.clone(), json_number(*a)))
                        .collect(),
                )),
            ),
            ("fan_in_fan_out", json(self.fan_in_fan_out.into())),
            ("use_dora", json(self.use_dora.into())),
            ("lora_bias", json(self.lora_bias.into())),
            (
                "modules_to_save",
                json(match &self.modules_to_save {
                    Some(m) => m.clone().into(),
                    None => serde_json::Value::Null,
                }),
            ),
            (
                "target_modules",
                json(match &self.target_modules {
                    Some(TargetModules::List(l)) => l.clone().into(),
                    Some(TargetModules::Regex(r)) => r.clone().into(),
                    None => serde_json::Value::Null,
                }),
            ),
            ("bias", json(self.bias.clone().into())),
            ("init_lora_weights", json(init)),
        ];
        fields.extend(modeled);
        let mut text = serde_json::to_string_pretty(&fields).map_err(|e| LoraError::Save {
            path: "adapter_config.json".into(),
            source: Box::new(e),
        })?;
        text.push('\n');
        Ok(text)
    }

    fn saves(&self, tensor: &str) -> bool {
        let module = tensor.rsplit_once('.').map_or(tensor, |(m, _)| m);
        self.modules_to_save.as_ref().is_some_and(|ms| {
            ms.iter()
                .any(|m| module == m || module.ends_with(&format!(".{m}")))
        })
    }
}

/// One value of the written `adapter_config.json`.
enum ConfigField<'a> {
    Json(serde_json::Value),
    Ranks(&'a OrderedMap<usize>),
    Alphas(OrderedMap<serde_json::Value>),
}

impl Serialize for ConfigField<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            ConfigField::Json(v) => v.serialize(s),
            ConfigField::Ranks(m) => m.serialize(s),
            ConfigField::Alphas(m) => m.serialize(s),
        }
    }
}

/// A whole number in `i64`'s exact range as a JSON integer (PEFT types
/// alphas as `int`), anything else as a float.
fn json_number(x: f64) -> serde_json::Value {
    const EXACT: f64 = 9_007_199_254_740_992.0; // 2^53
    if x.fract() == 0.0 && x.abs() <= EXACT {
        // In range and whole: the conversion is exact.
        serde_json::Value::from(x as i64)
    } else {
        serde_json::Value::from(x)
    }
}

/// One adapted module: `delta = scaling * (B @ A)`, in f32.
#[derive(Debug, Clone)]
pub struct LoraModule {
    /// Module name without PEFT's prefix (`model.layers.0.self_attn.q_proj`).
    pub module: String,
    /// The base tensor it changes (`<module>.weight`).
    pub target: String,
    /// Rank.
    pub rank: usize,
    /// `lora_A`, row-major `(rank, a_cols)`.
    pub a: Vec<f32>,
    /// Columns of `lora_A` (in-features; vocabulary size for embeddings).
    pub a_cols: usize,
    /// `lora_B`, row-major `(b_rows, rank)`.
    pub b: Vec<f32>,
    /// Rows of `lora_B` (out-features; embedding width for embeddings).
    pub b_rows: usize,
    /// `alpha / r` or `alpha / sqrt(r)` with per-module overrides applied.
    pub scaling: f64,
    /// DoRA magnitude per output feature.
    pub magnitude: Option<Vec<f32>>,
    /// `lora_B.bias` (length `b_rows`) with `lora_bias`; it changes the base
    /// tensor [`LoraModule::bias_target`] by `scaling * bias`.
    pub bias: Option<Vec<f32>>,
    /// An embedding LoRA (`lora_embedding_A/B`: delta is `(B @ A)^T`).
    pub embedding: bool,
}

impl LoraModule {
    /// Whether the delta is stored transposed relative to `B @ A`
    /// (`fan_in_fan_out` bases and embeddings).
    pub fn transposed(&self, config: &AdapterConfig) -> bool {
        self.embedding || config.fan_in_fan_out
    }

    /// The base bias tensor `lora_B.bias` changes (`<module>.bias`).
    pub fn bias_target(&self) -> String {
        format!("{}.bias", self.module)
    }

    /// The base tensor shape this module fits.
    pub fn expected_shape(&self, config: &AdapterConfig) -> [usize; 2] {
        if self.transposed(config) {
            [self.a_cols, self.b_rows]
        } else {
            [self.b_rows, self.a_cols]
        }
    }
}

/// A loaded PEFT LoRA adapter.
#[derive(Debug, Clone)]
pub struct Adapter {
    config: AdapterConfig,
    modules: Vec<LoraModule>,
    saved: Vec<(String, Vec<usize>, Vec<f32>)>,
    /// Every tensor of the adapter file: PEFT key, dtype, where it lives.
    entries: Vec<Entry>,
}

/// Where an adapter file tensor's values live in an [`Adapter`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Slot {
    A(usize),
    B(usize),
    Magnitude(usize),
    Bias(usize),
    Saved(usize),
}

#[derive(Debug, Clone)]
struct Entry {
    key: String,
    dtype: DType,
    slot: Slot,
}

/// One tensor of an adapter as PEFT saves it (see [`Adapter::peft_tensors`]).
#[derive(Debug, Clone, PartialEq)]
pub struct PeftTensor<'a> {
    /// PEFT's key (`base_model.model.<module>.lora_A.weight` ...).
    pub key: &'a str,
    /// The dtype it was read in (f32, f16 or bf16; f32 for adapters built
    /// from f32 values or read from other dtypes).
    pub dtype: DType,
    /// Row-major shape.
    pub shape: Vec<usize>,
    /// The values.
    pub values: &'a [f32],
}

/// One tensor of the adapter file on its way into [`Adapter`].
struct Part {
    key: String,
    dtype: DType,
    shape: Vec<usize>,
    values: Vec<f32>,
}

#[derive(Default)]
struct Parts {
    a: Option<Part>,
    b: Option<Part>,
    m: Option<Part>,
    bias: Option<Part>,
    embedding: bool,
}

fn shape_err(name: &str, expected: Vec<usize>, found: &[usize]) -> LoraError {
    LoraError::Shape {
        name: name.to_owned(),
        expected,
        found: found.to_vec(),
    }
}

/// The dtypes an adapter tensor keeps when saved: those f32 holds exactly.
fn kept_dtype(dtype: DType) -> DType {
    match dtype {
        DType::F16 | DType::BF16 => dtype,
        _ => DType::F32,
    }
}

impl Adapter {
    /// Loads a PEFT adapter directory: `adapter_config.json` and
    /// `adapter_model.safetensors` (or `adapter_model.bin`).
    pub fn open(dir: impl AsRef<Path>) -> Result<Self, LoraError> {
        let dir = dir.as_ref();
        let config = AdapterConfig::from_file(dir.join("adapter_config.json"))?;
        let st = dir.join("adapter_model.safetensors");
        let bin = dir.join("adapter_model.bin");
        let file = if st.is_file() {
            st
        } else if bin.is_file() {
            bin
        } else {
            return Err(LoraError::Io {
                path: st,
                source: std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    "no adapter_model.safetensors or adapter_model.bin",
                ),
            });
        };
        let model = weightkit_io::open(&file).map_err(LoraError::Read)?;
        Self::from_source(config, model.source())
    }

    /// Builds an adapter from a config and a tensor source holding PEFT's
    /// keys. F16 and BF16 tensors remember their dtype (for
    /// [`Adapter::save`]); every other dtype is saved as f32.
    pub fn from_source(config: AdapterConfig, source: &dyn Source) -> Result<Self, LoraError> {
        let mut tensors = Vec::new();
        for (i, info) in source.tensor_infos().iter().enumerate() {
            let t = source.load(i).map_err(LoraError::Read)?;
            let values = t.view().to_f32_vec().map_err(|source| LoraError::Convert {
                name: info.name.clone(),
                source,
            })?;
            tensors.push(Part {
                key: info.name.clone(),
                dtype: kept_dtype(info.dtype),
                shape: info.shape.dims().to_vec(),
                values,
            });
        }
        Self::build(config, tensors)
    }

    /// Builds an adapter from `(PEFT key, shape, f32 values)` triples (saved
    /// as f32 by [`Adapter::save`]).
    pub fn from_tensors(
        config: AdapterConfig,
        tensors: impl IntoIterator<Item = (String, Vec<usize>, Vec<f32>)>,
    ) -> Result<Self, LoraError> {
        Self::build(
            config,
            tensors.into_iter().map(|(key, shape, values)| Part {
                key,
                dtype: DType::F32,
                shape,
                values,
            }),
        )
    }

    fn build(
        config: AdapterConfig,
        tensors: impl IntoIterator<Item = Part>,
    ) -> Result<Self, LoraError> {
        config.validate()?;
        let mut parts: BTreeMap<String, Parts> = BTreeMap::new();
        let mut saved = Vec::new();
        let mut entries = Vec::new();
        // Trained base biases (`bias = "all" | "lora_only"`): (module, base
        // tensor name, the tensor).
        let mut biases = Vec::new();
        for part in tensors {
            let count = part.shape.iter().try_fold(1usize, |n, &d| n.checked_mul(d));
            if count != Some(part.values.len()) {
                return Err(LoraError::ValueCount {
                    name: part.key,
                    shape: part.shape,
                    values: part.values.len(),
                });
            }
            let Some(rest) = part.key.strip_prefix(KEY_PREFIX) else {
                return Err(LoraError::UnknownKey(part.key));
            };
            let suffixes: [(&str, u8, bool); 7] = [
                (".lora_A.weight", b'a', false),
                (".lora_B.weight", b'b', false),
                (".lora_B.bias", b'c', false),
                (".lora_magnitude_vector.weight", b'm', false),
                (".lora_magnitude_vector", b'm', false),
                (".lora_embedding_A", b'a', true),
                (".lora_embedding_B", b'b', true),
            ];
            if let Some((module, kind, emb)) = suffixes
                .iter()
                .find_map(|(s, k, e)| rest.strip_suffix(s).map(|m| (m, *k, *e)))
            {
                let p = parts.entry(module.to_owned()).or_default();
                p.embedding |= emb;
                let slot = match kind {
                    b'a' => &mut p.a,
                    b'b' => &mut p.b,
                    b'c' => &mut p.bias,
                    _ => &mut p.m,
                };
                if let Some(first) = slot {
                    return Err(LoraError::DuplicateTensor {
                        first: first.key.clone(),
                        second: part.key,
                    });
                }
                *slot = Some(part);
            } else if rest.ends_with(".lora_A.bias") {
                // PEFT's lora_A never has a bias.
                return Err(LoraError::UnknownKey(part.key));
            } else if config.saves(rest) {
                entries.push(Entry {
                    key: part.key.clone(),
                    dtype: part.dtype,
                    slot: Slot::Saved(saved.len()),
                });
                saved.push((rest.to_owned(), part.shape, part.values));
            } else if config.bias != "none" && rest.ends_with(".bias") {
                // PEFT keeps wrapped layers' own bias under `base_layer`.
                let module = rest
                    .strip_suffix(".base_layer.bias")
                    .or_else(|| rest.strip_suffix(".bias"))
                    .unwrap_or(rest)
                    .to_owned();
                biases.push((module.clone(), format!("{module}.bias"), part));
            } else {
                return Err(LoraError::UnknownKey(part.key));
            }
        }
        for (module, name, part) in biases {
            if config.bias == "lora_only" && !parts.contains_key(&module) {
                return Err(config_err(
                    "bias",
                    format!("\"lora_only\", but `{name}` belongs to no LoRA module"),
                ));
            }
            if let Some(e) = entries.iter().find(|e| match e.slot {
                Slot::Saved(i) => saved.get(i).is_some_and(|(n, _, _)| *n == name),
                _ => false,
            }) {
                // `<m>.bias` and `<m>.base_layer.bias` both given.
                return Err(LoraError::DuplicateTensor {
                    first: e.key.clone(),
                    second: part.key,
                });
            }
            entries.push(Entry {
                key: part.key,
                dtype: part.dtype,
                slot: Slot::Saved(saved.len()),
            });
            saved.push((name, part.shape, part.values));
        }
        let mut modules = Vec::new();
        for (module, p) in parts {
            let index = modules.len();
            let a = p.a.ok_or_else(|| LoraError::MissingFactor {
                module: module.clone(),
                missing: "lora_A",
            })?;
            let b = p.b.ok_or_else(|| LoraError::MissingFactor {
                module: module.clone(),
                missing: "lora_B",
            })?;
            let [ra, a_cols] = a.shape[..] else {
                return Err(shape_err(&format!("{module}.lora_A"), vec![0, 0], &a.shape));
            };
            let [b_rows, rb] = b.shape[..] else {
                return Err(shape_err(&format!("{module}.lora_B"), vec![0, 0], &b.shape));
            };
            let rank = config.rank_for(&module);
            if ra != rb || ra != rank {
                return Err(LoraError::RankMismatch {
                    module,
                    a: ra,
                    b: rb,
                    config: rank,
                });
            }
            if let Some(t) = &config.target_modules
                && !t.matches(&module)?
            {
                return Err(LoraError::NotTargeted(module));
            }
            let magnitude = match (p.m, config.use_dora) {
                (Some(m), true) => {
                    if m.shape != [b_rows] {
                        return Err(shape_err(
                            &format!("{module}.lora_magnitude_vector"),
                            vec![b_rows],
                            &m.shape,
                        ));
                    }
                    if p.embedding {
                        return Err(LoraError::Unsupported(format!(
                            "DoRA on embedding module `{module}`"
                        )));
                    }
                    entries.push(Entry {
                        key: m.key,
                        dtype: m.dtype,
                        slot: Slot::Magnitude(index),
                    });
                    Some(m.values)
                }
                (None, true) => {
                    return Err(LoraError::MissingFactor {
                        module,
                        missing: "lora_magnitude_vector",
                    });
                }
                (Some(_), false) => {
                    return Err(config_err(
                        "use_dora",
                        format!("false, but `{module}` has a lora_magnitude_vector"),
                    ));
                }
                (None, false) => None,
            };
            let bias = match (p.bias, config.lora_bias) {
                (Some(_), true) if p.embedding => {
                    // PEFT raises for lora_bias on embeddings.
                    return Err(LoraError::Unsupported(format!(
                        "lora_bias on embedding module `{module}`"
                    )));
                }
                (Some(bias), true) => {
                    if bias.shape != [b_rows] {
                        return Err(shape_err(
                            &format!("{module}.lora_B.bias"),
                            vec![b_rows],
                            &bias.shape,
                        ));
                    }
                    entries.push(Entry {
                        key: bias.key,
                        dtype: bias.dtype,
                        slot: Slot::Bias(index),
                    });
                    Some(bias.values)
                }
                (None, true) if p.embedding => {
                    return Err(LoraError::Unsupported(format!(
                        "lora_bias on embedding module `{module}`"
                    )));
                }
                (None, true) => {
                    return Err(LoraError::MissingFactor {
                        module,
                        missing: "lora_B.bias",
                    });
                }
                (Some(_), false) => {
                    return Err(config_err(
                        "lora_bias",
                        format!("false, but `{module}` has a lora_B.bias"),
                    ));
                }
                (None, false) => None,
            };
            entries.push(Entry {
                key: a.key,
                dtype: a.dtype,
                slot: Slot::A(index),
            });
            entries.push(Entry {
                key: b.key,
                dtype: b.dtype,
                slot: Slot::B(index),
            });
            modules.push(LoraModule {
                target: format!("{module}.weight"),
                scaling: config.scaling_for(&module),
                module,
                rank,
                a: a.values,
                a_cols,
                b: b.values,
                b_rows,
                magnitude,
                bias,
                embedding: p.embedding,
            });
        }
        entries.sort_by(|x, y| x.key.cmp(&y.key));
        Ok(Adapter {
            config,
            modules,
            saved,
            entries,
        })
    }

    /// The validated config.
    pub fn config(&self) -> &AdapterConfig {
        &self.config
    }

    /// The adapted modules, sorted by name.
    pub fn modules(&self) -> &[LoraModule] {
        &self.modules
    }

    /// Tensors that replace the base's: `modules_to_save` weights and trained
    /// biases (`bias = "all" | "lora_only"`), as base tensor name, shape and
    /// values.
    pub fn saved_tensors(&self) -> &[(String, Vec<usize>, Vec<f32>)] {
        &self.saved
    }

    /// Every tensor as PEFT saves it, sorted by key: the keys it was read
    /// with (`lora_magnitude_vector` or `lora_magnitude_vector.weight`,
    /// `<m>.base_layer.bias` or `<m>.bias` ...), dtypes and shapes.
    pub fn peft_tensors(&self) -> impl ExactSizeIterator<Item = PeftTensor<'_>> + '_ {
        self.entries.iter().map(|e| {
            let (shape, values): (Vec<usize>, &[f32]) = match e.slot {
                Slot::A(i) => {
                    let m = &self.modules[i];
                    (vec![m.rank, m.a_cols], &m.a)
                }
                Slot::B(i) => {
                    let m = &self.modules[i];
                    (vec![m.b_rows, m.rank], &m.b)
                }
                Slot::Magnitude(i) => {
                    let m = &self.modules[i];
                    (vec![m.b_rows], m.magnitude.as_deref().unwrap_or(&[]))
                }
                Slot::Bias(i) => {
                    let m = &self.modules[i];
                    (vec![m.b_rows], m.bias.as_deref().unwrap_or(&[]))
                }
                Slot::Saved(i) => {
                    let (_, shape, values) = &self.saved[i];
                    (shape.clone(), values)
                }
            };
            PeftTensor {
                key: &e.key,
                dtype: e.dtype,
                shape,
                values,
            }
        })
    }

    /// The number of values in the adapter file (every factor, magnitude,
    /// bias and saved tensor).
    pub fn parameter_count(&self) -> usize {
        self.peft_tensors().map(|t| t.values.len()).sum()
    }

    /// Saves the adapter as a PEFT directory that `PeftModel.from_pretrained`
    /// loads: `adapter_model.safetensors` (PEFT's keys, each tensor in the
    /// dtype it was read in, metadata `{"format": "pt"}`, laid out as the
    /// `safetensors` library lays it out) and `adapter_config.json`
    /// ([`AdapterConfig::to_json_string`]). `dir` is created if missing.
    ///
    /// Each file is written to a temporary file beside it and renamed into
    /// place, weights first: a failure never leaves a partial file, and
    /// never a new config beside old weights.
    pub fn save(&self, dir: impl AsRef<Path>) -> Result<(), LoraError> {
        let dir = dir.as_ref();
        if dir.exists() && !dir.is_dir() {
            return Err(LoraError::NotADirectory(dir.to_path_buf()));
        }
        std::fs::create_dir_all(dir).map_err(|source| LoraError::Io {
            path: dir.to_path_buf(),
            source,
        })?;
        let weights = dir.join("adapter_model.safetensors");
        let save_err = |path: &Path| {
            let path = path.to_path_buf();
            move |e: weightkit_safetensors::Error| LoraError::Save {
                path,
                source: Box::new(e),
            }
        };
        let infos: Vec<TensorInfo> = self
            .peft_tensors()
            .map(|t| TensorInfo::new(t.key, t.dtype, t.shape))
            .collect();
        let mut metadata = Metadata::new();
        metadata.insert("format", Value::String("pt".into()));
        let mut writer =
            SafetensorsWriter::create(&weights, infos, &metadata).map_err(save_err(&weights))?;
        for t in self.peft_tensors() {
            let conv = |source| LoraError::Convert {
                name: t.key.to_owned(),
                source,
            };
            let mut bytes = vec![0u8; t.dtype.bytes_for_elems(t.values.len()).map_err(conv)?];
            convert::encode_f32(t.dtype, t.values, &mut bytes).map_err(conv)?;
            writer
                .write_tensor(t.key, &bytes)
                .map_err(save_err(&weights))?;
        }
        writer.finish().map_err(save_err(&weights))?;
        let config = dir.join("adapter_config.json");
        let io_err = |source| LoraError::Io {
            path: config.clone(),
            source,
        };
        let text = self.config.to_json_string()?;
        let mut f = AtomicFile::create(&config).map_err(io_err)?;
        f.write_all(text.as_bytes()).map_err(io_err)?;
        f.commit().map_err(io_err)?;
        Ok(())
    }
}
