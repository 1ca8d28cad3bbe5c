//! llama.cpp's GGUF LoRA adapters: export a PEFT adapter laid out exactly as
//! llama.cpp's `convert_lora_to_gguf.py` lays it out, and import such a file
//! back into an [`Adapter`].
//!
//! # The format (`convert_lora_to_gguf.py`, `src/llama-adapter.cpp`)
//!
//! Metadata `general.architecture` (the base's GGUF architecture),
//! `general.type = "adapter"`, `adapter.type = "lora"`, `adapter.lora.alpha`
//! (f32) and `general.quantization_version = 2`. For every adapted base
//! tensor `<name>` (its GGUF name, `blk.0.attn_q.weight`) two tensors:
//! `<name>.lora_a`, PEFT's `lora_A` (row-major `[r, in]`, GGUF
//! `ne = [in, r]`) and `<name>.lora_b`, PEFT's `lora_B` (`[out, r]`,
//! `ne = [r, out]`). The q/k rope permutation of `convert_hf_to_gguf.py`
//! reorders output rows, so it is applied to `lora_b` alone (the
//! converter's `LoraTorchTensor.permute` with a last dimension of -1) and
//! `lora_a` is unchanged. For `token_embd.weight` (PEFT's
//! `lora_embedding_A/B`) `lora_a` is `lora_embedding_A` transposed
//! (`[vocab, r]`: llama.cpp gathers its rows by token id) and `lora_b` is
//! `lora_embedding_B` (`[dim, r]`). Tensors come in the order of the PEFT
//! file's keys, each base tensor's `lora_a` then `lora_b`.
//!
//! llama.cpp computes `y += scale * B (A x)` with
//! `scale = user_scale * alpha / rank`, the rank read from `lora_b`'s shape
//! (and `scale = user_scale` when alpha is 0). There is one alpha per file.
//!
//! # Scaling: where this differs from the converter
//!
//! The converter writes `lora_alpha` and nothing else: it ignores
//! `use_rslora` (PEFT scales by `alpha / sqrt(r)`), `rank_pattern` (only
//! right by luck: llama.cpp reads the rank from the shape) and
//! `alpha_pattern`, so those adapters run in llama.cpp with the wrong
//! strength. The exporter here writes the same `adapter.lora.alpha`
//! (`lora_alpha`) and folds the difference into `lora_b`: each module's
//! `lora_b` is multiplied by `scaling / llama_scale`, PEFT's scaling over
//! llama.cpp's ([`llama_cpp_scale`]), so llama.cpp applies exactly PEFT's
//! delta. Where the two agree (plain LoRA) the factor is 1 and the file is
//! the converter's, byte for byte in every tensor.
//!
//! # What cannot be exported
//!
//! llama.cpp's adapters hold only `lora_a`/`lora_b` pairs: DoRA magnitudes,
//! `lora_B.bias` (`lora_bias`), `modules_to_save` weights and trained biases
//! are typed errors naming the tensor (the converter exits on the embedding
//! ones and writes norm weights that llama.cpp then silently ignores), as are
//! `fan_in_fan_out` adapters and architectures without name tables.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::json;
use weightkit_core::{DType, Metadata, TensorInfo, TensorSink, Value, convert};
use weightkit_gguf::{GgufFile, GgufWriter};
use weightkit_io::arch::{ModelConfig, TensorNames, permute_rows, unpermute_rows};

use crate::adapter::{Adapter, AdapterConfig, KEY_PREFIX};
use crate::error::LoraError;

/// The GGUF name of the token embedding, whose adapter layout is transposed.
const TOKEN_EMBD: &str = "token_embd.weight";

/// `--outtype` of `convert_lora_to_gguf.py`: the type of every tensor.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum GgufOutType {
    /// F32 (the converter's default).
    #[default]
    F32,
    /// F16.
    F16,
    /// BF16.
    BF16,
    /// Q8_0 where a row holds whole 32-element blocks, else F16 (the
    /// converter's fallback).
    Q8_0,
}

impl GgufOutType {
    /// Every type, in `--outtype` order.
    pub const ALL: [GgufOutType; 4] = [
        GgufOutType::F32,
        GgufOutType::F16,
        GgufOutType::BF16,
        GgufOutType::Q8_0,
    ];

    /// The converter's name (`f32`, `f16`, `bf16`, `q8_0`).
    pub fn name(self) -> &'static str {
        match self {
            GgufOutType::F32 => "f32",
            GgufOutType::F16 => "f16",
            GgufOutType::BF16 => "bf16",
            GgufOutType::Q8_0 => "q8_0",
        }
    }

    /// The type named `name` (as [`GgufOutType::name`]).
    pub fn from_name(name: &str) -> Option<GgufOutType> {
        GgufOutType::ALL.into_iter().find(|t| t.name() == name)
    }

    /// The type a tensor whose rows hold `row_len` values is written in.
    pub fn tensor_type(self, row_len: usize) -> DType {
        match self {
            GgufOutType::F32 => DType::F32,
            GgufOutType::F16 => DType::F16,
            GgufOutType::BF16 => DType::BF16,
            GgufOutType::Q8_0 if row_len.is_multiple_of(32) => DType::Q8_0,
            GgufOutType::Q8_0 => DType::F16,
        }
    }
}

/// How to export.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GgufExportOptions {
    /// The tensor type.
    pub out_type: GgufOutType,
    /// `general.name`, written after `adapter.type` when given (the converter
    /// derives one from the adapter directory's name and model card).
    pub name: Option<String>,
}

/// One exported module.
#[derive(Clone, Debug, PartialEq)]
pub struct GgufModule {
    /// The PEFT module (`model.layers.0.self_attn.q_proj`).
    pub module: String,
    /// The GGUF base tensor (`blk.0.attn_q.weight`).
    pub tensor: String,
    /// The rank.
    pub rank: usize,
    /// PEFT's scaling for the module.
    pub scaling: f64,
    /// What `lora_b` was multiplied by: `scaling / llama_cpp_scale`
    /// (exactly 1 where llama.cpp's f32 `alpha / rank` is PEFT's scaling
    /// rounded to f32).
    pub factor: f64,
}

/// An adapter laid out as a llama.cpp GGUF adapter, in memory.
#[derive(Clone, Debug, PartialEq)]
pub struct GgufAdapter {
    /// The metadata, in file order.
    pub metadata: Metadata,
    /// The tensors in file order, each with its encoded bytes.
    pub tensors: Vec<(TensorInfo, Vec<u8>)>,
    /// The exported modules, in file order.
    pub modules: Vec<GgufModule>,
}

/// llama.cpp's `llama_adapter_lora_weight::get_scale` with a user scale of
/// 1: `alpha / rank` in f32, or 1 when `alpha` is 0.
pub fn llama_cpp_scale(alpha: f32, rank: usize) -> f32 {
    if alpha != 0.0 {
        alpha / rank as f32
    } else {
        1.0
    }
}

fn unsupported(tensor: &str, reason: impl Into<String>) -> LoraError {
    LoraError::GgufUnsupported {
        tensor: tensor.to_owned(),
        reason: reason.into(),
    }
}

fn f32_bytes(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

fn f32_values(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

/// Row-major `[rows, cols]` to `[cols, rows]`.
fn transpose(values: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut out = vec![0f32; values.len()];
    for (r, row) in values.chunks_exact(cols.max(1)).enumerate().take(rows) {
        for (c, &v) in row.iter().enumerate() {
            out[c * rows + r] = v;
        }
    }
    out
}

fn encode(name: &str, dtype: DType, values: &[f32], row_len: usize) -> Result<Vec<u8>, LoraError> {
    if dtype == DType::Q8_0 {
        return weightkit_quant::quantize(dtype, values, row_len, None).map_err(|source| {
            LoraError::Quant {
                name: name.to_owned(),
                source,
            }
        });
    }
    let conv = |source| LoraError::Convert {
        name: name.to_owned(),
        source,
    };
    let mut bytes = vec![0u8; dtype.bytes_for_elems(values.len()).map_err(conv)?];
    convert::encode_f32(dtype, values, &mut bytes).map_err(conv)?;
    Ok(bytes)
}

/// Lays `adapter` out as llama.cpp's `convert_lora_to_gguf.py` would for the
/// base model `base`, with PEFT's per-module scaling folded into `lora_b`
/// (see the [module docs](self)).
pub fn export_gguf_tensors(
    adapter: &Adapter,
    base: &ModelConfig,
    opts: &GgufExportOptions,
) -> Result<GgufAdapter, LoraError> {
    let config = adapter.config();
    // Everything but the factors has no place in a llama.cpp adapter.
    for t in adapter.peft_tensors() {
        let key = t.key;
        let factor = [
            ".lora_A.weight",
            ".lora_B.weight",
            ".lora_embedding_A",
            ".lora_embedding_B",
        ]
        .iter()
        .any(|s| key.ends_with(s));
        if factor {
            continue;
        }
        let reason = if key.ends_with(".lora_magnitude_vector")
            || key.ends_with(".lora_magnitude_vector.weight")
        {
            "DoRA magnitudes: llama.cpp's LoRA adapters have no DoRA"
        } else if key.ends_with(".lora_B.bias") {
            "lora_bias: llama.cpp's LoRA adapters have no lora_B bias"
        } else {
            "llama.cpp's LoRA adapters hold only lora_a/lora_b pairs \
             (no modules_to_save weights or trained biases)"
        };
        return Err(unsupported(key, reason));
    }
    if config.fan_in_fan_out {
        return Err(LoraError::Config {
            field: "fan_in_fan_out".to_owned(),
            message: format!(
                "true (Conv1D layers), but GGUF architecture {:?} has nn.Linear layers",
                base.arch.gguf_arch()
            ),
        });
    }
    let names = TensorNames::from_config(base).map_err(LoraError::Arch)?;
    let alpha = config.lora_alpha as f32;
    let mut tensors = Vec::with_capacity(adapter.modules().len() * 2);
    let mut modules = Vec::with_capacity(adapter.modules().len());
    for m in adapter.modules() {
        let gguf = names
            .to_gguf(&m.target)
            .map_err(LoraError::Arch)?
            .ok_or_else(|| unsupported(&m.target, "a buffer, not a weight"))?;
        let is_embd = gguf.name == TOKEN_EMBD;
        if is_embd != m.embedding {
            return Err(unsupported(
                &m.target,
                if m.embedding {
                    "embedding LoRA on a tensor llama.cpp applies as a matrix product"
                } else {
                    "a linear LoRA on the token embedding (llama.cpp expects lora_embedding_A/B)"
                },
            ));
        }
        if gguf.name == "output.weight" && base.tie_word_embeddings {
            return Err(unsupported(
                &m.target,
                "the base ties lm_head to the embedding, so it has no output.weight",
            ));
        }
        let rank = m.rank;
        let llama_scale = llama_cpp_scale(alpha, rank);
        // Where PEFT's scaling rounds to llama.cpp's f32 scale the two agree
        // (16 / 12 in f64 and in f32 differ by less than an f32 ulp): the
        // factors stay as they are, exactly as the converter writes them.
        let factor = if m.scaling as f32 == llama_scale {
            1.0
        } else {
            m.scaling / f64::from(llama_scale)
        };
        if !factor.is_finite() {
            return Err(unsupported(
                &m.target,
                format!(
                    "scaling {} cannot be expressed with alpha {alpha}",
                    m.scaling
                ),
            ));
        }
        let (a, a_shape) = if is_embd {
            (transpose(&m.a, rank, m.a_cols), vec![m.a_cols, rank])
        } else {
            (m.a.clone(), vec![rank, m.a_cols])
        };
        let mut b = if factor == 1.0 {
            m.b.clone()
        } else {
            m.b.iter()
                .map(|&v| (f64::from(v) * factor) as f32)
                .collect()
        };
        if let Some(heads) = gguf.permute_heads {
            let permuted =
                permute_rows(&f32_bytes(&b), 4, m.b_rows, rank, heads).map_err(LoraError::Arch)?;
            b = f32_values(&permuted);
        }
        for (suffix, values, shape) in [
            (".lora_a", a, a_shape),
            (".lora_b", b, vec![m.b_rows, rank]),
        ] {
            let name = format!("{}{suffix}", gguf.name);
            let row_len = shape[1];
            let dtype = opts.out_type.tensor_type(row_len);
            let bytes = encode(&name, dtype, &values, row_len)?;
            tensors.push((TensorInfo::new(name, dtype, shape), bytes));
        }
        modules.push(GgufModule {
            module: m.module.clone(),
            tensor: gguf.name,
            rank,
            scaling: m.scaling,
            factor,
        });
    }
    let mut metadata = Metadata::new();
    metadata.insert(
        "general.architecture",
        Value::String(base.arch.gguf_arch().to_owned()),
    );
    metadata.insert("general.type", Value::String("adapter".to_owned()));
    metadata.insert("adapter.type", Value::String("lora".to_owned()));
    if let Some(name) = &opts.name {
        metadata.insert("general.name", Value::String(name.clone()));
    }
    metadata.insert("adapter.lora.alpha", Value::F32(alpha));
    metadata.insert("general.quantization_version", Value::U32(2));
    Ok(GgufAdapter {
        metadata,
        tensors,
        modules,
    })
}

/// [`export_gguf_tensors`] written to `out` (atomically: a failure leaves
/// nothing behind).
pub fn export_gguf(
    adapter: &Adapter,
    base: &ModelConfig,
    out: impl AsRef<Path>,
    opts: &GgufExportOptions,
) -> Result<Vec<GgufModule>, LoraError> {
    let out = out.as_ref();
    let file = export_gguf_tensors(adapter, base, opts)?;
    let gguf_err = |source| LoraError::Gguf {
        path: out.to_path_buf(),
        source,
    };
    let infos = file.tensors.iter().map(|(i, _)| i.clone()).collect();
    let mut writer = GgufWriter::create(out, &file.metadata, infos).map_err(gguf_err)?;
    for (info, bytes) in &file.tensors {
        writer.write_tensor(&info.name, bytes).map_err(gguf_err)?;
    }
    writer.finish().map_err(gguf_err)?;
    Ok(file.modules)
}

/// The base model's config from a Hugging Face directory (its
/// `config.json`), a `config.json` file, or a GGUF model file (its
/// metadata).
pub fn base_config(path: impl AsRef<Path>) -> Result<ModelConfig, LoraError> {
    let path = path.as_ref();
    let io_err = |p: &Path| {
        let p = p.to_path_buf();
        move |source| LoraError::Io { path: p, source }
    };
    let json_path = if path.is_dir() {
        path.join("config.json")
    } else {
        let mut magic = [0u8; 4];
        let mut f = std::fs::File::open(path).map_err(io_err(path))?;
        let n = std::io::Read::read(&mut f, &mut magic).map_err(io_err(path))?;
        if n == 4 && &magic == b"GGUF" {
            let file = GgufFile::open(path).map_err(|source| LoraError::Gguf {
                path: path.to_path_buf(),
                source,
            })?;
            let names = file.tensors().iter().map(|t| t.name.as_str());
            return ModelConfig::from_gguf_metadata(file.metadata(), names)
                .map_err(LoraError::Arch);
        }
        path.to_path_buf()
    };
    let text = std::fs::read_to_string(&json_path).map_err(io_err(&json_path))?;
    ModelConfig::from_hf_json_str(&text).map_err(LoraError::Arch)
}

/// Reads a llama.cpp GGUF LoRA adapter ([`adapter_from_gguf`]).
pub fn import_gguf(
    path: impl AsRef<Path>,
    base: Option<&ModelConfig>,
) -> Result<Adapter, LoraError> {
    let path = path.as_ref();
    let file = GgufFile::open(path).map_err(|source| LoraError::Gguf {
        path: path.to_path_buf(),
        source,
    })?;
    adapter_from_gguf(&file, base)
}

fn meta_err(key: &str, message: impl Into<String>) -> LoraError {
    LoraError::GgufMetadata {
        key: key.to_owned(),
        message: message.into(),
    }
}

fn meta_str<'a>(file: &'a GgufFile, key: &str) -> Result<&'a str, LoraError> {
    match file.get(key) {
        Some(Value::String(s)) => Ok(s),
        Some(other) => Err(meta_err(
            key,
            format!("expected a string, found {:?}", other.value_type()),
        )),
        None => Err(meta_err(key, "missing")),
    }
}

/// The f32 values of tensor `i` (float types converted, quantized types
/// dequantized).
fn tensor_values(file: &GgufFile, i: usize) -> Result<(Vec<usize>, Vec<f32>), LoraError> {
    let info = &file.tensors()[i];
    let view = file.tensor_at(i).map_err(|source| LoraError::Gguf {
        path: file.path().to_path_buf(),
        source,
    })?;
    let shape = info.shape.dims().to_vec();
    let values = match info.dtype {
        DType::F32 | DType::F16 | DType::BF16 => {
            view.to_f32_vec().map_err(|source| LoraError::Convert {
                name: info.name.clone(),
                source,
            })?
        }
        dtype => {
            let mut out = vec![0f32; view.elem_count()];
            weightkit_quant::dequantize(dtype, view.data(), &mut out).map_err(|source| {
                LoraError::Quant {
                    name: info.name.clone(),
                    source,
                }
            })?;
            out
        }
    };
    Ok((shape, values))
}

/// Turns a llama.cpp GGUF LoRA adapter back into a PEFT [`Adapter`]:
/// GGUF names to Hugging Face modules, `lora_b` of q/k un-permuted (which
/// needs the base's head counts: `base`, else an error for those tensors),
/// `token_embd`'s `lora_a` transposed back to `lora_embedding_A`.
///
/// The config gets `lora_alpha` from `adapter.lora.alpha`, `r` the most
/// common rank and `rank_pattern` the others (each under its full module
/// name), so PEFT's `alpha / r` is llama.cpp's scale for every module (when
/// the file's alpha is 0, llama.cpp's scale is 1: `lora_alpha` and
/// `alpha_pattern` then equal each rank). `target_modules` lists the
/// adapted modules' last name components.
pub fn adapter_from_gguf(
    file: &GgufFile,
    base: Option<&ModelConfig>,
) -> Result<Adapter, LoraError> {
    let general_type = meta_str(file, "general.type")?;
    if general_type != "adapter" {
        return Err(meta_err(
            "general.type",
            format!("{general_type:?}, expected \"adapter\""),
        ));
    }
    let adapter_type = meta_str(file, "adapter.type")?;
    if adapter_type != "lora" {
        return Err(meta_err(
            "adapter.type",
            format!("{adapter_type:?}, expected \"lora\""),
        ));
    }
    let arch_name = meta_str(file, "general.architecture")?;
    let arch = weightkit_io::arch::Arch::from_gguf_arch(arch_name).map_err(LoraError::Arch)?;
    if let Some(b) = base
        && b.arch.gguf_arch() != arch_name
    {
        return Err(meta_err(
            "general.architecture",
            format!(
                "the adapter is for {arch_name:?}, the base is {:?}",
                b.arch.gguf_arch()
            ),
        ));
    }
    // llama.cpp reads a missing alpha as 0.
    let alpha = match file.get("adapter.lora.alpha") {
        None => 0.0,
        Some(Value::F32(a)) if a.is_finite() => *a,
        Some(other) => {
            return Err(meta_err(
                "adapter.lora.alpha",
                format!("expected a finite f32, found {other:?}"),
            ));
        }
    };
    if file.get("adapter.alora.invocation_tokens").is_some() {
        return Err(meta_err(
            "adapter.alora.invocation_tokens",
            "activated LoRA (aLoRA) adapters have no PEFT LoRA equivalent",
        ));
    }
    let names = match base {
        Some(b) => TensorNames::from_config(b).map_err(LoraError::Arch)?,
        None => TensorNames::new(arch, u64::MAX, 0, 0),
    };
    // GGUF base tensor -> (lora_a index, lora_b index).
    let mut pairs: BTreeMap<&str, (Option<usize>, Option<usize>)> = BTreeMap::new();
    for (i, t) in file.tensors().iter().enumerate() {
        if let Some(b) = t.name.strip_suffix(".lora_a") {
            pairs.entry(b).or_default().0 = Some(i);
        } else if let Some(b) = t.name.strip_suffix(".lora_b") {
            pairs.entry(b).or_default().1 = Some(i);
        } else {
            return Err(unsupported(
                &t.name,
                "not a .lora_a or .lora_b tensor (llama.cpp skips norm weights; \
                 they have no PEFT LoRA equivalent)",
            ));
        }
    }
    let mut parts = Vec::with_capacity(pairs.len() * 2);
    let mut ranks: Vec<(String, usize)> = Vec::with_capacity(pairs.len());
    for (gguf_name, (ia, ib)) in pairs {
        let missing = |what| LoraError::MissingFactor {
            module: gguf_name.to_owned(),
            missing: what,
        };
        let ia = ia.ok_or_else(|| missing("lora_a"))?;
        let ib = ib.ok_or_else(|| missing("lora_b"))?;
        let hf = names
            .to_hf(gguf_name)
            .map_err(LoraError::Arch)?
            .ok_or_else(|| unsupported(gguf_name, "derived from config.json, not a weight"))?;
        let module = hf
            .name
            .strip_suffix(".weight")
            .ok_or_else(|| unsupported(gguf_name, "a bias, not a weight"))?
            .to_owned();
        let a_name = &file.tensors()[ia].name;
        let b_name = &file.tensors()[ib].name;
        let (a_shape, a) = tensor_values(file, ia)?;
        let (b_shape, mut b) = tensor_values(file, ib)?;
        let two_d = |name: &str, shape: &[usize]| match *shape {
            [x, y] if x > 0 && y > 0 => Ok([x, y]),
            _ => Err(LoraError::Shape {
                name: name.to_owned(),
                expected: vec![0, 0],
                found: shape.to_vec(),
            }),
        };
        let [a0, a1] = two_d(a_name, &a_shape)?;
        let [out, rb] = two_d(b_name, &b_shape)?;
        let is_embd = gguf_name == TOKEN_EMBD;
        // lora_a is [r, in], or [vocab, r] for the token embedding.
        let ra = if is_embd { a1 } else { a0 };
        if ra != rb {
            return Err(LoraError::GgufRankMismatch {
                tensor: gguf_name.to_owned(),
                a: ra,
                b: rb,
            });
        }
        if let Some(heads) = hf.unpermute_heads {
            if base.is_none() {
                return Err(LoraError::NeedsBaseConfig(b_name.clone()));
            }
            let bytes =
                unpermute_rows(&f32_bytes(&b), 4, out, rb, heads).map_err(LoraError::Arch)?;
            b = f32_values(&bytes);
        }
        let (ka, kb, a) = if is_embd {
            (
                format!("{KEY_PREFIX}{module}.lora_embedding_A"),
                format!("{KEY_PREFIX}{module}.lora_embedding_B"),
                transpose(&a, a0, a1),
            )
        } else {
            (
                format!("{KEY_PREFIX}{module}.lora_A.weight"),
                format!("{KEY_PREFIX}{module}.lora_B.weight"),
                a,
            )
        };
        let a_dims = if is_embd { vec![a1, a0] } else { vec![a0, a1] };
        parts.push((ka, a_dims, a));
        parts.push((kb, vec![out, rb], b));
        ranks.push((module, rb));
    }
    let config = gguf_config(alpha, &ranks)?;
    Adapter::from_tensors(config, parts)
}

/// The PEFT config whose scaling is llama.cpp's for every module.
fn gguf_config(alpha: f32, ranks: &[(String, usize)]) -> Result<AdapterConfig, LoraError> {
    let mut counts: BTreeMap<usize, usize> = BTreeMap::new();
    for (_, r) in ranks {
        *counts.entry(*r).or_default() += 1;
    }
    // The most common rank; the smallest on a tie (and 8, PEFT's default,
    // for an adapter without modules).
    let r = counts
        .iter()
        .max_by(|x, y| x.1.cmp(y.1).then(y.0.cmp(x.0)))
        .map_or(8, |(r, _)| *r);
    let mut rank_pattern = serde_json::Map::new();
    let mut alpha_pattern = serde_json::Map::new();
    for (module, rm) in ranks {
        if *rm != r {
            rank_pattern.insert(module.clone(), json!(rm));
            if alpha == 0.0 {
                alpha_pattern.insert(module.clone(), json!(rm));
            }
        }
    }
    let mut targets: Vec<&str> = ranks
        .iter()
        .map(|(m, _)| m.rsplit('.').next().unwrap_or(m))
        .collect();
    targets.sort_unstable();
    targets.dedup();
    let lora_alpha = if alpha != 0.0 {
        json!(f64::from(alpha))
    } else {
        json!(r)
    };
    let text = json!({
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "base_model_name_or_path": null,
        "r": r,
        "lora_alpha": lora_alpha,
        "rank_pattern": rank_pattern,
        "alpha_pattern": alpha_pattern,
        "target_modules": targets,
        "use_rslora": false,
        "use_dora": false,
        "fan_in_fan_out": false,
        "bias": "none",
        "lora_bias": false,
        "lora_dropout": 0.0,
        "init_lora_weights": true,
        "inference_mode": true,
        "modules_to_save": null,
    })
    .to_string();
    AdapterConfig::from_json_str(&text)
}
