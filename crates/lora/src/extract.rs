//! LoRA extraction: a low-rank adapter from a base and a fine-tuned
//! checkpoint, by truncated SVD of each module's task vector
//! (`finetuned - base`), as mergekit's `extract_lora`
//! (`mergekit/scripts/extract_lora.py`, arcee-ai/mergekit at a6e4028).
//!
//! Followed from mergekit: the task vector is the difference in the
//! checkpoint's precision (f32 here, after widening f16/bf16 exactly); its
//! SVD gives `A = diag(sqrt(S_r)) V_r^T` and `B = U_r diag(sqrt(S_r))`
//! (mergekit's default `--distribute-scale`; without it `A = diag(S_r)
//! V_r^T`, `B = U_r`); the config has `r = lora_alpha =` the largest rank, and
//! `rank_pattern` = `alpha_pattern` = each module whose rank differs, so every
//! module's scaling is 1; embeddings get `lora_embedding_A/B` from the SVD of
//! the transposed delta (mergekit's `--embed-lora`).
//!
//! Different from mergekit: the SVD runs in f64 (mergekit: f32); the rank is
//! either fixed (an error, not a silent clamp, above `min(rows, cols)`) or
//! the smallest one keeping a fraction of the squared singular values
//! (mergekit has `--sv-epsilon`, an absolute cut-off, instead);
//! `target_modules` lists the full module names (mergekit: their last
//! components, which also match unchanged modules); the pattern keys are
//! regex-escaped full names; changed 1-D tensors (biases, norms) are reported
//! as not captured instead of saved (mergekit writes bias deltas as
//! `lora_B.bias` without setting `lora_bias`).

use weightkit_core::DType;
use weightkit_io::Source;

use crate::adapter::{Adapter, AdapterConfig, KEY_PREFIX};
use crate::error::LoraError;
use crate::linalg;

/// How many singular values each module keeps.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ExtractRank {
    /// This rank for every module (`1..=min(rows, cols)`).
    Rank(usize),
    /// Per module, the smallest rank whose singular values hold at least
    /// this fraction (in `(0, 1]`) of the sum of all squared singular values
    /// (the squared Frobenius norm of the delta).
    Energy(f64),
}

/// Extraction settings.
#[derive(Debug, Clone, PartialEq)]
pub struct ExtractOptions {
    /// The rank choice.
    pub rank: ExtractRank,
    /// `sqrt(S)` on both factors (mergekit's default); `false` puts `S` on
    /// `A`, as mergekit's `--no-distribute-scale`.
    pub distribute_scale: bool,
    /// The checkpoints store linear weights as `(in, out)` (GPT-2's
    /// `Conv1D`): deltas are transposed and the config says so.
    pub fan_in_fan_out: bool,
    /// Only modules matched by one of these names (PEFT's list matching: the
    /// whole module name or a `.`-suffix); `None`: every changed 2-D weight.
    pub target_modules: Option<Vec<String>>,
    /// Last name components of embedding modules (their weight is
    /// `(vocab, dim)`; PEFT uses `lora_embedding_A/B` for them).
    pub embedding_modules: Vec<String>,
}

impl ExtractOptions {
    /// `rank` with mergekit's defaults, and the usual embedding names
    /// (`embed_tokens`, `wte`, `wpe`, `word_embeddings`).
    pub fn new(rank: ExtractRank) -> Self {
        ExtractOptions {
            rank,
            distribute_scale: true,
            fan_in_fan_out: false,
            target_modules: None,
            embedding_modules: ["embed_tokens", "wte", "wpe", "word_embeddings"]
                .map(String::from)
                .to_vec(),
        }
    }
}

/// One extracted module.
#[derive(Debug, Clone, PartialEq)]
pub struct ModuleError {
    /// The module (`model.layers.0.self_attn.q_proj`).
    pub module: String,
    /// The rank kept.
    pub rank: usize,
    /// `||delta - B A||_F / ||delta||_F` of the saved (f32) factors, in f64.
    pub relative_error: f64,
    /// Fraction of the squared singular values kept.
    pub energy: f64,
}

/// What an extraction did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ExtractReport {
    /// Every extracted module, in base order.
    pub modules: Vec<ModuleError>,
    /// Tensors equal in both checkpoints.
    pub unchanged: usize,
    /// Tensors that differ but are not captured by the adapter (not 2-D
    /// `.weight`s, not float, or not targeted).
    pub not_captured: Vec<String>,
}

fn is_float(d: DType) -> bool {
    matches!(d, DType::F32 | DType::F16 | DType::BF16)
}

/// Extracts a LoRA adapter from `base` and `finetuned` (any formats
/// `weightkit-io` opens; tensors are matched by name). See the module docs.
///
/// Errors: a rank of 0 or above a module's `min(rows, cols)`; an energy
/// outside `(0, 1]`; a base tensor missing from, or shaped differently in,
/// the fine-tuned checkpoint; nothing changed.
pub fn extract_lora(
    base: &dyn Source,
    finetuned: &dyn Source,
    options: &ExtractOptions,
) -> Result<(Adapter, ExtractReport), LoraError> {
    match options.rank {
        ExtractRank::Rank(0) => {
            return Err(LoraError::CombineArgument {
                name: "rank",
                message: "must be positive".into(),
            });
        }
        ExtractRank::Energy(e) if !(e > 0.0 && e <= 1.0) => {
            return Err(LoraError::CombineArgument {
                name: "energy",
                message: format!("{e} is outside (0, 1]"),
            });
        }
        _ => {}
    }
    let mut report = ExtractReport::default();
    // (module, embedding, rank, A, B, rows, cols)
    let mut found = Vec::new();
    for (i, info) in base.tensor_infos().iter().enumerate() {
        let name = &info.name;
        let j = finetuned
            .position(name)
            .ok_or_else(|| LoraError::MissingFinetuned(name.clone()))?;
        let ft_info = &finetuned.tensor_infos()[j];
        if ft_info.shape.dims() != info.shape.dims() {
            return Err(LoraError::Shape {
                name: name.clone(),
                expected: info.shape.dims().to_vec(),
                found: ft_info.shape.dims().to_vec(),
            });
        }
        let bt = base.load(i).map_err(LoraError::Read)?;
        let ft = finetuned.load(j).map_err(LoraError::Read)?;
        if !(is_float(info.dtype) && is_float(ft_info.dtype)) {
            if info.dtype == ft_info.dtype && bt.view().data() == ft.view().data() {
                report.unchanged += 1;
            } else {
                report.not_captured.push(name.clone());
            }
            continue;
        }
        let conv = |source| LoraError::Convert {
            name: name.clone(),
            source,
        };
        let b = bt.view().to_f32_vec().map_err(conv)?;
        let f = ft.view().to_f32_vec().map_err(conv)?;
        let delta: Vec<f32> = f.iter().zip(&b).map(|(&f, &b)| f - b).collect();
        if delta.iter().all(|&d| d == 0.0) {
            report.unchanged += 1;
            continue;
        }
        let module = name.strip_suffix(".weight");
        let targeted = module.is_some_and(|m| {
            options
                .target_modules
                .as_ref()
                .is_none_or(|ts| ts.iter().any(|t| m == t || m.ends_with(&format!(".{t}"))))
        });
        let (Some(module), [rows0, cols0], true) = (module, info.shape.dims(), targeted) else {
            report.not_captured.push(name.clone());
            continue;
        };
        let last = module.rsplit('.').next().unwrap_or(module);
        let embedding = options.embedding_modules.iter().any(|e| e == last);
        // The delta in B @ A orientation: (out, in), or (dim, vocab).
        let transposed = embedding || options.fan_in_fan_out;
        let (rows, cols) = if transposed {
            (*cols0, *rows0)
        } else {
            (*rows0, *cols0)
        };
        let mut d = vec![0f64; rows * cols];
        for (k, &x) in delta.iter().enumerate() {
            let (r, c) = (k / cols0, k % cols0);
            let at = if transposed { c * cols + r } else { k };
            d[at] = f64::from(x);
        }
        let svd = linalg::svd(&d, rows, cols, module)?;
        let energies: Vec<f64> = svd.s.iter().map(|s| s * s).collect();
        let cumulative: Vec<f64> = energies
            .iter()
            .scan(0.0, |acc, &e| {
                *acc += e;
                Some(*acc)
            })
            .collect();
        let total = cumulative.last().copied().unwrap_or(0.0);
        let rank = match options.rank {
            ExtractRank::Rank(r) => {
                if r > svd.k {
                    return Err(LoraError::RankRange {
                        module: module.to_owned(),
                        rank: r,
                        max: svd.k,
                    });
                }
                r
            }
            ExtractRank::Energy(e) => cumulative
                .iter()
                .position(|&c| c >= e * total)
                .map_or(svd.k, |p| p + 1),
        };
        let (bf, af) = if options.distribute_scale {
            linalg::factors(&svd, rows, cols, rank, true)
        } else {
            split_s_on_a(&svd, rows, cols, rank)
        };
        let approx = linalg::product(&bf, &af, rows, rank, cols);
        let err2: f64 = approx.iter().zip(&d).map(|(x, y)| (x - y) * (x - y)).sum();
        let norm2: f64 = d.iter().map(|x| x * x).sum();
        report.modules.push(ModuleError {
            module: module.to_owned(),
            rank,
            relative_error: (err2 / norm2).sqrt(),
            energy: if total > 0.0 {
                cumulative[rank - 1] / total
            } else {
                1.0
            },
        });
        found.push((module.to_owned(), embedding, rank, af, bf, rows, cols));
    }
    if found.is_empty() {
        return Err(LoraError::CombineArgument {
            name: "finetuned",
            message: "no 2-D weight differs from the base: nothing to extract".into(),
        });
    }
    let max_rank = found.iter().map(|f| f.2).max().unwrap_or(1);
    let mut patterns = serde_json::Map::new();
    for (module, _, rank, ..) in &found {
        if *rank != max_rank {
            patterns.insert(regex::escape(module), (*rank).into());
        }
    }
    let targets: Vec<&str> = found.iter().map(|f| f.0.as_str()).collect();
    let config = serde_json::json!({
        "peft_type": "LORA",
        "r": max_rank,
        "lora_alpha": max_rank,
        "rank_pattern": patterns,
        "alpha_pattern": patterns,
        "target_modules": targets,
        "fan_in_fan_out": options.fan_in_fan_out,
        "use_rslora": false,
        "use_dora": false,
        "bias": "none",
        "lora_dropout": 0.0,
        "inference_mode": true,
        "init_lora_weights": true,
    });
    let config = AdapterConfig::from_json_str(&config.to_string())?;
    let mut tensors = Vec::new();
    for (module, embedding, rank, a, b, rows, cols) in found {
        let (ka, kb) = if embedding {
            ("lora_embedding_A", "lora_embedding_B")
        } else {
            ("lora_A.weight", "lora_B.weight")
        };
        tensors.push((format!("{KEY_PREFIX}{module}.{ka}"), vec![rank, cols], a));
        tensors.push((format!("{KEY_PREFIX}{module}.{kb}"), vec![rows, rank], b));
    }
    Ok((Adapter::from_tensors(config, tensors)?, report))
}

/// `B = U_r`, `A = diag(S_r) V_r^T` (mergekit's `--no-distribute-scale`).
fn split_s_on_a(svd: &linalg::Svd, rows: usize, cols: usize, rank: usize) -> (Vec<f32>, Vec<f32>) {
    let mut b = Vec::with_capacity(rows * rank);
    for i in 0..rows {
        for j in 0..rank {
            b.push(svd.u[i * svd.k + j] as f32);
        }
    }
    let mut a = Vec::with_capacity(rank * cols);
    for i in 0..rank {
        for j in 0..cols {
            a.push((svd.s[i] * svd.vt[i * cols + j]) as f32);
        }
    }
    (b, a)
}
