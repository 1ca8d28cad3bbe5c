//! `weightkit demo`: the whole lifecycle on a generated model, offline.
//!
//! Builds a small Llama-shaped model with `weightkit-init` (transformers'
//! initialisation: N(0, 0.02) weights, unit norms) in bf16, a PEFT LoRA
//! adapter over all seven projections (PEFT's default initialisation, then
//! a seeded low-rank update standing in for training), saves them as a
//! Hugging Face model directory and a PEFT adapter directory, exports
//! merged Q8_0 and Q4_K_M GGUF files with `weightkit_lora::export`, and
//! reads everything back to report what was written: timings, sizes, bits
//! per weight, how exact the merge is against a direct f64-accumulated
//! merge, and each tensor's quantization error.

use std::io::{self, Write};
use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde_json::json;
use weightkit_core::{DType, Metadata, Shape, TensorInfo, TensorSink, Value, convert};
use weightkit_init::lora::{LoraInit, lora_init};
use weightkit_init::{Init, Rng};
use weightkit_io::convert::NoProgress;
use weightkit_io::mixture::Mixture;
use weightkit_io::plan::{GgufPlanOptions, gguf_to_hf_plan};
use weightkit_io::quantize::QuantizeOptions;
use weightkit_lora::{
    Adapter, AdapterConfig, ExportFormat, ExportOptions, MergeOptions, MergedDType, export,
    merged_model,
};
use weightkit_safetensors::SafetensorsWriter;

use super::quantize::thread_pool;
use crate::error::CliError;
use crate::units::{binary_size, duration, thousands};

/// The long `--help` text.
pub(crate) const LONG_ABOUT: &str = "\
Run the whole weight lifecycle offline on a generated model, in seconds: \
build a small Llama-shaped model (6 layers, hidden 256, 4.9 million \
parameters, bf16) with weightkit-init, build a PEFT LoRA adapter over it \
(rank 8 on all seven projections; PEFT's default initialisation, then a \
seeded low-rank update that stands in for training), save both as a \
Hugging Face model directory and a PEFT adapter directory, export merged \
Q8_0 and Q4_K_M GGUF files in one pass each (`weightkit export`), and read \
everything back: per-step timings, file sizes, bits per weight, the \
merge's exactness against a direct f64-accumulated merge, and every \
tensor's quantization error (RMSE and relative RMS error against the f32 \
merged weights). Everything is seeded: the numbers are the same on every \
run. --out DIR keeps the files (the GGUFs carry a small tokenizer and load \
in llama.cpp); otherwise they go to a temporary directory that is removed.";

/// Arguments of `weightkit demo`.
#[derive(Debug, clap::Args)]
#[command(after_help = "\
Examples:
  weightkit demo
  weightkit demo --out demo/ && weightkit inspect demo/merged-Q4_K_M.gguf")]
pub(crate) struct Args {
    /// Keep the files in this directory (created if missing)
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,

    /// Threads [default: one per CPU]
    #[arg(long, value_name = "N")]
    threads: Option<NonZeroUsize>,
}

/// The generated model's shape.
const HIDDEN: usize = 256;
const LAYERS: usize = 6;
const HEADS: usize = 4;
const KV_HEADS: usize = 2;
const HEAD_DIM: usize = HIDDEN / HEADS;
const INTERMEDIATE: usize = 768;
const VOCAB: usize = 256;
/// The adapter's rank and alpha (scaling 2).
const RANK: usize = 8;
const ALPHA: f64 = 16.0;
const SEED: u64 = 2026;
/// The seven projections, with `(out_features, in_features)`.
const PROJECTIONS: [(&str, usize, usize); 7] = [
    ("self_attn.q_proj", HIDDEN, HIDDEN),
    ("self_attn.k_proj", KV_HEADS * HEAD_DIM, HIDDEN),
    ("self_attn.v_proj", KV_HEADS * HEAD_DIM, HIDDEN),
    ("self_attn.o_proj", HIDDEN, HIDDEN),
    ("mlp.gate_proj", INTERMEDIATE, HIDDEN),
    ("mlp.up_proj", INTERMEDIATE, HIDDEN),
    ("mlp.down_proj", HIDDEN, INTERMEDIATE),
];
/// The exports.
const EXPORTS: [(Mixture, &str); 2] = [
    (Mixture::Q8_0, "merged-Q8_0.gguf"),
    (Mixture::Q4_K_M, "merged-Q4_K_M.gguf"),
];

const TOKENIZER_JSON: &str = include_str!("../../assets/tok-llama3/tokenizer.json");
const TOKENIZER_CONFIG: &str = include_str!("../../assets/tok-llama3/tokenizer_config.json");

/// Removes the temporary directory when the demo ends, however it ends.
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn failed(what: &str, e: impl std::error::Error + Send + Sync + 'static) -> CliError {
    CliError::Run {
        what: Some(format!("demo: {what}")),
        source: Box::new(e),
        hint: None,
    }
}

pub(crate) fn run(args: &Args) -> Result<(), CliError> {
    let (dir, _guard) = match &args.out {
        Some(d) => {
            std::fs::create_dir_all(d).map_err(|e| failed("cannot create --out", e))?;
            (d.clone(), None)
        }
        None => {
            let d = std::env::temp_dir().join(format!("weightkit-demo-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&d);
            std::fs::create_dir_all(&d).map_err(|e| failed("cannot create a temp dir", e))?;
            (d.clone(), Some(TempDir(d)))
        }
    };
    let pool = thread_pool(args.threads)?;
    let threads = pool.current_num_threads();
    pool.install(|| {
        let mut out = io::stdout().lock();
        demo(&dir, args.out.is_some(), threads, &mut out)?;
        out.flush()?;
        Ok(())
    })
}

/// One timed step.
fn step(out: &mut dyn Write, n: usize, what: &str, start: Instant) -> io::Result<()> {
    writeln!(
        out,
        "  {n}. {what:<64} {:>9}",
        duration(start.elapsed().as_secs_f64())
    )
}

fn demo(dir: &Path, keep: bool, threads: usize, out: &mut dyn Write) -> Result<(), CliError> {
    let total = Instant::now();
    let model_dir = dir.join("model");
    let adapter_dir = dir.join("adapter");
    writeln!(
        out,
        "weightkit demo: a Llama-shaped model + a LoRA adapter -> merged, quantized GGUF \
         (offline, seeded, {threads} thread{})",
        if threads == 1 { "" } else { "s" }
    )?;
    writeln!(out)?;
    writeln!(out, "steps")?;

    let t = Instant::now();
    let parameters = build_model(&model_dir)?;
    step(
        out,
        1,
        &format!(
            "base model: {} parameters, bf16 (weightkit-init)",
            thousands(parameters)
        ),
        t,
    )?;

    let t = Instant::now();
    let adapter_parameters = build_adapter(&adapter_dir)?;
    step(
        out,
        2,
        &format!(
            "LoRA adapter: rank {RANK}, {} parameters (PEFT init + stand-in)",
            thousands(adapter_parameters)
        ),
        t,
    )?;

    let mut exported = Vec::new();
    for (k, (mixture, file)) in EXPORTS.iter().enumerate() {
        let t = Instant::now();
        let path = dir.join(file);
        let base =
            weightkit_io::open(&model_dir).map_err(|e| failed("cannot open the model", e))?;
        let adapter =
            Adapter::open(&adapter_dir).map_err(|e| failed("cannot open the adapter", e))?;
        let report = export(
            base,
            vec![(adapter, 1.0)],
            &path,
            &ExportOptions {
                merge: MergeOptions::default(),
                format: ExportFormat::Gguf {
                    mixture: *mixture,
                    quantize: QuantizeOptions::default(),
                    plan: GgufPlanOptions {
                        dtype: None,
                        name: Some("weightkit-demo".into()),
                        pre: None,
                    },
                },
            },
            &NoProgress,
        )
        .map_err(|e| failed("export failed", e))?;
        step(
            out,
            3 + k,
            &format!(
                "export {mixture}: merge {} tensors, quantize, write",
                report.merged.merged.len()
            ),
            t,
        )?;
        exported.push((*mixture, path));
    }

    // Read everything back: the direct merge from the files on disk, our
    // merge of them, and the exported tensors.
    let t = Instant::now();
    let reference = direct_merge(&model_dir, &adapter_dir)?;
    let exactness = merge_exactness(&model_dir, &adapter_dir, &reference)?;
    let mut errors = Vec::new();
    for (_, path) in &exported {
        errors.push(quantization_errors(path, &reference)?);
    }
    step(
        out,
        5,
        "read back: direct merge, merged tensors, GGUF tensors",
        t,
    )?;
    writeln!(
        out,
        "     total {:>68}",
        duration(total.elapsed().as_secs_f64())
    )?;

    writeln!(out)?;
    writeln!(out, "files")?;
    for name in [
        "model/model.safetensors",
        "adapter/adapter_model.safetensors",
    ] {
        let len = file_len(&dir.join(name))?;
        writeln!(out, "  {name:<36} {:>12} bytes", thousands(len))?;
    }
    for ((mixture, path), errs) in exported.iter().zip(&errors) {
        let len = file_len(path)?;
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
        #[allow(clippy::cast_precision_loss)]
        let bpw = errs.tensor_bytes as f64 * 8.0 / errs.parameters as f64;
        writeln!(
            out,
            "  {:<36} {:>12} bytes  {bpw:.3} bits per weight ({mixture}, {} in tensors)",
            name.unwrap_or_default(),
            thousands(len),
            binary_size(errs.tensor_bytes),
        )?;
    }

    writeln!(out)?;
    writeln!(
        out,
        "merge: {} tensors, ours (f32, faer GEMM blocks) vs a direct merge (f64 sums, rounded once)",
        exactness.tensors
    )?;
    writeln!(
        out,
        "  max |difference| {:.3e} (largest |weight| {:.3e}); relative RMS difference {:.3e}",
        exactness.max_abs, exactness.max_weight, exactness.rel_rms
    )?;
    writeln!(
        out,
        "  the adapter moved the weights by {:.3e} relative RMS",
        exactness.delta_rel
    )?;

    writeln!(out)?;
    writeln!(
        out,
        "quantization error per tensor against the f32 merged weights (RMSE, relative RMS error)"
    )?;
    write!(out, "  {:<26}", "tensor")?;
    for (mixture, _) in &exported {
        write!(
            out,
            " | {:<7} {:>10} {:>9}",
            mixture.to_string(),
            "rmse",
            "rel"
        )?;
    }
    writeln!(out)?;
    if let Some(first) = errors.first() {
        for (i, row) in first.rows.iter().enumerate() {
            write!(out, "  {:<26}", row.name)?;
            for errs in &errors {
                let r = &errs.rows[i];
                write!(
                    out,
                    " | {:<7} {:>10.4e} {:>8.4}%",
                    r.dtype.name(),
                    r.rmse,
                    r.rel * 100.0
                )?;
            }
            writeln!(out)?;
        }
    }
    write!(out, "  {:<26}", "all weights")?;
    for errs in &errors {
        write!(
            out,
            " | {:<7} {:>10.4e} {:>8.4}%",
            "",
            errs.all_rmse,
            errs.all_rel * 100.0
        )?;
    }
    writeln!(out)?;
    writeln!(out)?;
    if keep {
        writeln!(
            out,
            "kept in {}: model/ (Hugging Face), adapter/ (PEFT), merged-*.gguf (llama.cpp)",
            dir.display()
        )?;
    } else {
        writeln!(
            out,
            "files removed; `weightkit demo --out DIR` keeps them (the GGUFs load in llama.cpp)"
        )?;
    }
    Ok(())
}

fn file_len(path: &Path) -> Result<u64, CliError> {
    std::fs::metadata(path)
        .map(|m| m.len())
        .map_err(|source| CliError::Read {
            path: path.to_path_buf(),
            source,
        })
}

/// The model's tensors in Hugging Face order: name and shape.
fn model_tensors() -> Vec<(String, Vec<usize>)> {
    let mut t = vec![("model.embed_tokens.weight".to_owned(), vec![VOCAB, HIDDEN])];
    for l in 0..LAYERS {
        let p = format!("model.layers.{l}");
        t.push((format!("{p}.input_layernorm.weight"), vec![HIDDEN]));
        for (name, rows, cols) in PROJECTIONS {
            t.push((format!("{p}.{name}.weight"), vec![rows, cols]));
        }
        t.push((format!("{p}.post_attention_layernorm.weight"), vec![HIDDEN]));
    }
    t.push(("model.norm.weight".to_owned(), vec![HIDDEN]));
    t.push(("lm_head.weight".to_owned(), vec![VOCAB, HIDDEN]));
    t
}

/// Writes the Hugging Face model directory; returns the parameter count.
fn build_model(dir: &Path) -> Result<u64, CliError> {
    std::fs::create_dir_all(dir).map_err(|e| failed("cannot create the model directory", e))?;
    let config = json!({
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": HIDDEN,
        "intermediate_size": INTERMEDIATE,
        "num_hidden_layers": LAYERS,
        "num_attention_heads": HEADS,
        "num_key_value_heads": KV_HEADS,
        "head_dim": HEAD_DIM,
        "vocab_size": VOCAB,
        "max_position_embeddings": 2048,
        "rms_norm_eps": 1e-5,
        "rope_theta": 10000.0,
        "hidden_act": "silu",
        "tie_word_embeddings": false,
        "attention_bias": false,
        "mlp_bias": false,
        "initializer_range": 0.02,
        "bos_token_id": 200,
        "eos_token_id": 201,
        "dtype": "bfloat16",
    });
    let write = |name: &str, text: &str| {
        std::fs::write(dir.join(name), text).map_err(|e| failed("cannot write", e))
    };
    let config_text =
        serde_json::to_string_pretty(&config).map_err(|e| failed("config.json", e))?;
    write("config.json", &config_text)?;
    write("tokenizer.json", TOKENIZER_JSON)?;
    write("tokenizer_config.json", TOKENIZER_CONFIG)?;

    let tensors = model_tensors();
    let infos: Vec<TensorInfo> = tensors
        .iter()
        .map(|(n, s)| TensorInfo::new(n.clone(), DType::BF16, Shape::new(s.clone())))
        .collect();
    let mut metadata = Metadata::new();
    metadata.insert("format", Value::String("pt".into()));
    let path = dir.join("model.safetensors");
    let mut writer = SafetensorsWriter::create(&path, infos, &metadata)
        .map_err(|e| failed("cannot write the model", e))?;
    // transformers' LlamaPreTrainedModel._init_weights: linear and
    // embedding weights N(0, initializer_range), RMSNorm weights 1.
    let mut rng = Rng::seeded(SEED);
    let mut parameters = 0u64;
    for (name, shape) in &tensors {
        let init = if shape.len() == 1 {
            Init::Constant(1.0)
        } else {
            Init::Normal {
                mean: 0.0,
                std: 0.02,
            }
        };
        let t = init
            .tensor(&mut rng, shape.clone(), DType::BF16)
            .map_err(|e| failed("initialisation failed", e))?;
        parameters += shape.iter().product::<usize>() as u64;
        writer
            .write_tensor(name, t.data())
            .map_err(|e| failed("cannot write the model", e))?;
    }
    writer
        .finish()
        .map_err(|e| failed("cannot write the model", e))?;
    Ok(parameters)
}

/// Writes the PEFT adapter directory; returns the parameter count.
fn build_adapter(dir: &Path) -> Result<u64, CliError> {
    let config = json!({
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "base_model_name_or_path": "weightkit-demo",
        "r": RANK,
        "lora_alpha": ALPHA,
        "lora_dropout": 0.0,
        "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
        "bias": "none",
        "use_rslora": false,
        "fan_in_fan_out": false,
        "init_lora_weights": true,
        "inference_mode": true,
    });
    let config = AdapterConfig::from_json_str(&config.to_string())
        .map_err(|e| failed("adapter config", e))?;
    let mut rng = Rng::seeded(SEED + 1);
    let mut tensors = Vec::new();
    let mut parameters = 0u64;
    for l in 0..LAYERS {
        for (name, rows, cols) in PROJECTIONS {
            // PEFT's init_lora_weights=True: A Kaiming-uniform (a = sqrt 5),
            // B zero (the adapter starts as a no-op) ...
            let pair = lora_init(&mut rng, LoraInit::Default, RANK, cols, rows, DType::F32)
                .map_err(|e| failed("LoRA initialisation failed", e))?;
            let a = pair
                .a
                .view()
                .to_f32_vec()
                .map_err(|e| failed("LoRA A", e))?;
            // ... then, standing in for training, B gets seeded N(0, 0.01)
            // values: a deterministic low-rank update of the weights.
            let b = Init::Normal {
                mean: 0.0,
                std: 0.01,
            }
            .tensor(&mut rng, [rows, RANK], DType::F32)
            .map_err(|e| failed("LoRA B", e))?
            .view()
            .to_f32_vec()
            .map_err(|e| failed("LoRA B", e))?;
            let key = format!("base_model.model.model.layers.{l}.{name}");
            parameters += (a.len() + b.len()) as u64;
            tensors.push((format!("{key}.lora_A.weight"), vec![RANK, cols], a));
            tensors.push((format!("{key}.lora_B.weight"), vec![rows, RANK], b));
        }
    }
    let adapter = Adapter::from_tensors(config, tensors).map_err(|e| failed("adapter", e))?;
    adapter
        .save(dir)
        .map_err(|e| failed("cannot save the adapter", e))?;
    Ok(parameters)
}

/// Every 2-D tensor of the merged model computed directly from the saved
/// files: `W + scaling * B @ A` with f64 sums, rounded once to f32 (HF
/// names and layout).
type Reference = Vec<(String, Vec<f32>)>;

fn direct_merge(model_dir: &Path, adapter_dir: &Path) -> Result<Reference, CliError> {
    let model = weightkit_io::open(model_dir).map_err(|e| failed("cannot open the model", e))?;
    let adapter = Adapter::open(adapter_dir).map_err(|e| failed("cannot open the adapter", e))?;
    let src = model.source();
    let mut out = Vec::new();
    for (i, info) in src.tensor_infos().iter().enumerate() {
        if info.shape.rank() != 2 {
            continue;
        }
        let t = src
            .load(i)
            .map_err(|e| failed("cannot read the model", e))?;
        let mut w = t
            .view()
            .to_f32_vec()
            .map_err(|e| failed("cannot read the model", e))?;
        if let Some(m) = adapter.modules().iter().find(|m| m.target == info.name) {
            let (r, cols) = (m.rank, m.a_cols);
            for (i, row) in w.chunks_exact_mut(cols).enumerate() {
                let b = &m.b[i * r..(i + 1) * r];
                for (j, x) in row.iter_mut().enumerate() {
                    let dot: f64 = b
                        .iter()
                        .enumerate()
                        .map(|(k, &bk)| f64::from(bk) * f64::from(m.a[k * cols + j]))
                        .sum();
                    *x = (f64::from(*x) + m.scaling * dot) as f32;
                }
            }
        }
        out.push((info.name.clone(), w));
    }
    Ok(out)
}

/// How close our merge is to the direct one.
struct Exactness {
    tensors: usize,
    max_abs: f64,
    max_weight: f64,
    rel_rms: f64,
    /// `||merged - base|| / ||base||` over the merged tensors.
    delta_rel: f64,
}

fn merge_exactness(
    model_dir: &Path,
    adapter_dir: &Path,
    reference: &Reference,
) -> Result<Exactness, CliError> {
    let base = weightkit_io::open(model_dir).map_err(|e| failed("cannot open the model", e))?;
    let base_values: Vec<(String, Vec<f32>)> = {
        let s = base.source();
        let mut v = Vec::new();
        for (i, info) in s.tensor_infos().iter().enumerate() {
            if info.shape.rank() == 2 {
                let t = s.load(i).map_err(|e| failed("cannot read the model", e))?;
                let x = t.view().to_f32_vec().map_err(|e| failed("read", e))?;
                v.push((info.name.clone(), x));
            }
        }
        v
    };
    let adapter = Adapter::open(adapter_dir).map_err(|e| failed("cannot open the adapter", e))?;
    let (merged, report) = merged_model(
        base,
        vec![(adapter, 1.0)],
        &MergeOptions::default(),
        MergedDType::F32,
    )
    .map_err(|e| failed("merge", e))?;
    let src = merged.source();
    let mut e = Exactness {
        tensors: report.merged.len(),
        max_abs: 0.0,
        max_weight: 0.0,
        rel_rms: 0.0,
        delta_rel: 0.0,
    };
    let (mut diff2, mut norm2, mut delta2, mut base2) = (0f64, 0f64, 0f64, 0f64);
    for name in &report.merged {
        let i = src
            .position(name)
            .ok_or_else(|| CliError::Usage(format!("demo: no tensor {name}")))?;
        let ours = src.load(i).map_err(|e| failed("merge", e))?;
        let ours = ours.view().to_f32_vec().map_err(|e| failed("merge", e))?;
        let direct = &reference
            .iter()
            .find(|(n, _)| n == name)
            .ok_or_else(|| CliError::Usage(format!("demo: no reference for {name}")))?
            .1;
        let before = &base_values
            .iter()
            .find(|(n, _)| n == name)
            .ok_or_else(|| CliError::Usage(format!("demo: no base tensor {name}")))?
            .1;
        for ((&o, &d), &b) in ours.iter().zip(direct).zip(before) {
            let (o, d, b) = (f64::from(o), f64::from(d), f64::from(b));
            e.max_abs = e.max_abs.max((o - d).abs());
            e.max_weight = e.max_weight.max(d.abs());
            diff2 += (o - d) * (o - d);
            norm2 += d * d;
            delta2 += (d - b) * (d - b);
            base2 += b * b;
        }
    }
    e.rel_rms = (diff2 / norm2.max(f64::MIN_POSITIVE)).sqrt();
    e.delta_rel = (delta2 / base2.max(f64::MIN_POSITIVE)).sqrt();
    Ok(e)
}

/// One exported tensor's error.
struct Row {
    name: String,
    dtype: DType,
    rmse: f64,
    rel: f64,
}

/// One export's errors.
struct Errors {
    rows: Vec<Row>,
    all_rmse: f64,
    all_rel: f64,
    tensor_bytes: u64,
    parameters: u64,
}

/// Reads an exported GGUF back, maps each 2-D tensor to its Hugging Face
/// name and layout, and measures it against the direct merge.
fn quantization_errors(path: &Path, reference: &Reference) -> Result<Errors, CliError> {
    let model = weightkit_io::open(path).map_err(|e| failed("cannot open the export", e))?;
    let plan = gguf_to_hf_plan(&model, None).map_err(|e| failed("cannot map the export", e))?;
    let src = model.source();
    let infos = src.tensor_infos();
    let mut errs = Errors {
        rows: Vec::new(),
        all_rmse: 0.0,
        all_rel: 0.0,
        tensor_bytes: 0,
        parameters: 0,
    };
    for info in infos {
        errs.tensor_bytes += info.byte_len().map_err(|e| failed("size", e))? as u64;
        errs.parameters += info.elem_count().map_err(|e| failed("size", e))? as u64;
    }
    let (mut all_d2, mut all_n2, mut all_n) = (0f64, 0f64, 0usize);
    for t in &plan.tensors {
        let info = &infos[t.source];
        if info.shape.rank() != 2 {
            continue;
        }
        let Some((_, want)) = reference.iter().find(|(n, _)| *n == t.out.name) else {
            return Err(CliError::Usage(format!(
                "demo: the export has `{}`, which the model does not",
                t.out.name
            )));
        };
        let raw = src.load(t.source).map_err(|e| failed("cannot read", e))?;
        let n = info.shape.elem_count().map_err(|e| failed("size", e))?;
        let mut got = vec![0f32; n];
        if info.dtype.is_quantized() {
            weightkit_quant::dequantize(info.dtype, raw.view().data(), &mut got)
                .map_err(|e| failed("dequantize", e))?;
        } else {
            convert::decode_f32(info.dtype, raw.view().data(), &mut got)
                .map_err(|e| failed("decode", e))?;
        }
        let got = t
            .transform
            .apply(&got, info)
            .map_err(|e| failed("permute", e))?;
        let (mut d2, mut n2) = (0f64, 0f64);
        for (&g, &w) in got.iter().zip(want) {
            let d = f64::from(g) - f64::from(w);
            d2 += d * d;
            n2 += f64::from(w) * f64::from(w);
        }
        all_d2 += d2;
        all_n2 += n2;
        all_n += n;
        #[allow(clippy::cast_precision_loss)]
        errs.rows.push(Row {
            name: info.name.clone(),
            dtype: info.dtype,
            rmse: (d2 / n as f64).sqrt(),
            rel: (d2 / n2.max(f64::MIN_POSITIVE)).sqrt(),
        });
    }
    #[allow(clippy::cast_precision_loss)]
    {
        errs.all_rmse = (all_d2 / all_n.max(1) as f64).sqrt();
    }
    errs.all_rel = (all_d2 / all_n2.max(f64::MIN_POSITIVE)).sqrt();
    Ok(errs)
}
