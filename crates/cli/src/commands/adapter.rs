//! `weightkit adapter ...`: commands on PEFT adapter directories.
//!
//! `adapter inspect` loads the adapter through `weightkit-lora` (so what it
//! shows is what a merge would apply: ranks and scalings after
//! `rank_pattern` / `alpha_pattern` and rsLoRA) and prints a summary or
//! `--json`. `adapter combine` is PEFT's `add_weighted_adapter` and
//! `adapter extract` mergekit's `extract_lora`, both saving a PEFT adapter
//! directory. `adapter export-gguf` writes an adapter as llama.cpp's GGUF
//! LoRA adapter (`convert_lora_to_gguf.py`'s layout, with PEFT's per-module
//! scaling folded in) and `adapter import-gguf` reads one back into a PEFT
//! directory, both through `weightkit-lora`'s `gguf` module.

use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde_json::{Value, json};
use weightkit_lora::{
    Adapter, ExtractOptions, ExtractRank, GgufExportOptions, GgufOutType, LoraError, TargetModules,
    base_config, export_gguf, extract_lora, import_gguf,
};

use super::merge::{CombineArgs, adapter_weights, combine, load_adapter};
use super::pipeline::open_input;
use crate::error::CliError;
use crate::units::{duration, thousands};

/// Subcommands of `weightkit adapter`.
#[derive(Debug, clap::Subcommand)]
pub(crate) enum AdapterCommand {
    /// Show a PEFT adapter's config and, per adapted module, its rank and
    /// scaling
    #[command(long_about = INSPECT_LONG_ABOUT)]
    Inspect(InspectArgs),
    /// Combine several adapters into one (PEFT's add_weighted_adapter:
    /// linear, cat, svd, ties, dare_*, magnitude_prune) and save it
    #[command(long_about = COMBINE_LONG_ABOUT)]
    Combine(CombineCmdArgs),
    /// Extract a LoRA adapter from a base and a fine-tuned checkpoint by
    /// truncated SVD of their difference
    #[command(long_about = EXTRACT_LONG_ABOUT)]
    Extract(ExtractArgs),
    /// Write a PEFT adapter as a llama.cpp GGUF LoRA adapter (for
    /// llama.cpp's --lora)
    #[command(name = "export-gguf", long_about = EXPORT_LONG_ABOUT)]
    ExportGguf(ExportGgufArgs),
    /// Read a llama.cpp GGUF LoRA adapter back into a PEFT adapter directory
    #[command(name = "import-gguf", long_about = IMPORT_LONG_ABOUT)]
    ImportGguf(ImportGgufArgs),
}

const EXPORT_LONG_ABOUT: &str = "\
Write a PEFT LoRA adapter directory as a llama.cpp GGUF LoRA adapter, laid \
out as llama.cpp's convert_lora_to_gguf.py lays it out: general.type \
adapter, adapter.type lora, adapter.lora.alpha, the base's \
general.architecture, and per adapted tensor <gguf name>.lora_a / .lora_b \
(q/k lora_b rows permuted for ggml's rope, as the model converter permutes \
the weights). llama.cpp scales every module by alpha / rank; where PEFT's \
scaling differs (use_rslora, rank_pattern, alpha_pattern, which the \
converter ignores) the ratio is folded into lora_b, so llama.cpp applies \
exactly PEFT's delta. DoRA, lora_bias, modules_to_save and trained biases \
have no llama.cpp equivalent and are refused, naming the tensor.
--base is the base model's directory (its config.json), a config.json, or \
the base's GGUF file: only its architecture and head counts are read.";

const IMPORT_LONG_ABOUT: &str = "\
Read a llama.cpp GGUF LoRA adapter (general.type adapter, adapter.type \
lora) into a PEFT adapter directory (adapter_config.json and \
adapter_model.safetensors, f32) that `weightkit merge` and PEFT load: GGUF \
names become Hugging Face module names, the rope permutation of q/k lora_b \
is undone, lora_alpha is the file's alpha, r the most common rank and \
rank_pattern the others, so PEFT's alpha / r is llama.cpp's scale for every \
module. Quantized (Q8_0 ...) factors are dequantized.
--base (the base model's directory, config.json or GGUF file) is needed \
for `llama` adapters that adapt q or k: the permutation depends on the head \
counts, which the adapter file does not record.";

/// Arguments of `weightkit adapter export-gguf`.
#[derive(Debug, clap::Args)]
#[command(after_help = "\
Examples:
  weightkit adapter export-gguf my-adapter --base path/to/hf-model -o my-adapter.gguf
  weightkit adapter export-gguf my-adapter --base model-f16.gguf -o a.gguf --outtype q8_0
  llama-cli -m model-f16.gguf --lora my-adapter.gguf")]
pub(crate) struct ExportGgufArgs {
    /// The PEFT adapter directory
    #[arg(value_name = "ADAPTER_DIR")]
    dir: PathBuf,

    /// The base model: its directory, config.json, or GGUF file
    #[arg(long, value_name = "BASE_DIR_OR_CONFIG")]
    base: PathBuf,

    /// The GGUF file to write
    #[arg(short, long, value_name = "OUT")]
    output: PathBuf,

    /// Tensor type, as convert_lora_to_gguf.py's --outtype (q8_0 falls back
    /// to f16 for rows that are not a multiple of 32)
    #[arg(long, default_value = "f32", value_parser = ["f32", "f16", "bf16", "q8_0"])]
    outtype: String,

    /// general.name to write (omitted by default)
    #[arg(long, value_name = "NAME")]
    name: Option<String>,
}

/// Arguments of `weightkit adapter import-gguf`.
#[derive(Debug, clap::Args)]
#[command(after_help = "\
Examples:
  weightkit adapter import-gguf my-adapter.gguf --base path/to/hf-model -o my-adapter
  weightkit merge path/to/hf-model my-adapter -o merged.safetensors")]
pub(crate) struct ImportGgufArgs {
    /// The GGUF LoRA adapter
    #[arg(value_name = "IN")]
    input: PathBuf,

    /// The adapter directory to write (created if missing)
    #[arg(short, long, value_name = "ADAPTER_DIR")]
    output: PathBuf,

    /// The base model: its directory, config.json, or GGUF file (needed to
    /// undo the q/k permutation of `llama` adapters)
    #[arg(long, value_name = "BASE_DIR_OR_CONFIG")]
    base: Option<PathBuf>,
}

const COMBINE_LONG_ABOUT: &str = "\
Combine PEFT LoRA adapters into one with PEFT's add_weighted_adapter and \
save it as a PEFT adapter directory (adapter_config.json + \
adapter_model.safetensors). Methods, as PEFT 0.21.2: linear, ties, \
dare_linear, dare_ties and magnitude_prune combine lora_A and lora_B \
separately with weights sign(w*s)*sqrt(|w*s|) and sqrt(|w*s|) (s: each \
module's scaling; equal ranks needed); cat concatenates along the rank \
(rank = sum); svd and the *_svd variants combine the full deltas and keep \
a truncated SVD (B = U diag(S), A = V^T; --svd-rank, --svd-clamp). The \
result has r = lora_alpha = its rank. DARE masks come from weightkit's \
seeded counter-based generator (--seed), not torch's, so they differ from \
PEFT's draws. DoRA, lora_bias and modules_to_save adapters are refused.";

const EXTRACT_LONG_ABOUT: &str = "\
Extract a LoRA adapter from BASE and FINETUNED (anything `weightkit inspect` \
reads; tensors matched by name) as mergekit's extract_lora does: for every \
2-D weight that changed, the truncated SVD of finetuned - base (computed in \
f64) gives A = sqrt(S) V^T and B = U sqrt(S). --rank keeps R singular \
values per module (an error above min(rows, cols)); --energy keeps, per \
module, the fewest whose squares sum to at least E of the total. The \
adapter has r = lora_alpha = the largest rank and rank_pattern = \
alpha_pattern for the others (scaling 1), target_modules = the modules' \
full names; embeddings (embed_tokens, wte, wpe, word_embeddings) get \
lora_embedding_A/B. Prints each module's rank and relative Frobenius error \
||delta - B A|| / ||delta||, and the changed tensors an adapter cannot hold \
(biases, norms).";

/// Arguments of `weightkit adapter combine`.
#[derive(Debug, clap::Args)]
#[command(after_help = "\
Examples:
  weightkit adapter combine style-a style-b --weights 0.7,0.3 --method cat -o mixed
  weightkit adapter combine a b c --method ties --density 0.5 -o mixed
  weightkit adapter combine a b --method svd --svd-rank 16 -o mixed")]
pub(crate) struct CombineCmdArgs {
    /// PEFT adapter directories
    #[arg(value_name = "ADAPTER_DIR", required = true, num_args = 1..)]
    adapters: Vec<PathBuf>,

    /// One weight per adapter, comma-separated [default: 1 each]
    #[arg(
        long,
        value_name = "W1,W2,...",
        value_delimiter = ',',
        allow_negative_numbers = true
    )]
    weights: Vec<f64>,

    #[command(flatten)]
    combine: CombineArgs,

    /// The adapter directory to write (created if missing)
    #[arg(short, long, value_name = "DIR")]
    output: PathBuf,
}

/// Arguments of `weightkit adapter extract`.
#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("how").required(true).args(["rank", "energy"])))]
#[command(after_help = "\
Examples:
  weightkit adapter extract path/to/base path/to/finetuned --rank 16 -o extracted
  weightkit adapter extract base.safetensors tuned.safetensors --energy 0.9 -o extracted")]
pub(crate) struct ExtractArgs {
    /// The base checkpoint
    #[arg(value_name = "BASE")]
    base: PathBuf,

    /// The fine-tuned checkpoint (same tensor names and shapes)
    #[arg(value_name = "FINETUNED")]
    finetuned: PathBuf,

    /// Rank of every module
    #[arg(long, value_name = "R")]
    rank: Option<usize>,

    /// Per module, the smallest rank keeping this fraction (0, 1] of the
    /// squared singular values
    #[arg(long, value_name = "E")]
    energy: Option<f64>,

    /// Put S on A (A = S V^T, B = U) instead of sqrt(S) on both
    #[arg(long)]
    no_distribute_scale: bool,

    /// The checkpoints store linear weights as (in, out) (GPT-2 Conv1D)
    #[arg(long)]
    fan_in_fan_out: bool,

    /// Only these modules (PEFT target_modules names), comma-separated
    #[arg(long, value_name = "NAMES", value_delimiter = ',')]
    target_modules: Vec<String>,

    /// The adapter directory to write (created if missing)
    #[arg(short, long, value_name = "DIR")]
    output: PathBuf,
}

const INSPECT_LONG_ABOUT: &str = "\
Show a PEFT LoRA adapter directory (adapter_config.json and \
adapter_model.safetensors or adapter_model.bin): peft_type, r, lora_alpha, \
rsLoRA, DoRA, lora_bias, bias, fan_in_fan_out, target_modules and \
modules_to_save; the tensor and parameter counts of the adapter file; and \
each adapted module with its rank and scaling after rank_pattern, \
alpha_pattern and rsLoRA (scaling = alpha / r, or alpha / sqrt(r)) and its \
in/out features. The adapter is validated as `weightkit merge` would \
validate it, so a config or tensor it cannot apply is an error here too.";

/// Arguments of `weightkit adapter inspect`.
#[derive(Debug, clap::Args)]
#[command(after_help = "\
Examples:
  weightkit adapter inspect my-adapter
  weightkit adapter inspect my-adapter --json | jq '.modules[].scaling'")]
pub(crate) struct InspectArgs {
    /// The adapter directory
    #[arg(value_name = "DIR")]
    dir: PathBuf,

    /// Print one JSON object instead of the summary
    #[arg(long)]
    json: bool,
}

pub(crate) fn run(command: &AdapterCommand) -> Result<(), CliError> {
    match command {
        AdapterCommand::Inspect(args) => inspect(args),
        AdapterCommand::Combine(args) => run_combine(args),
        AdapterCommand::Extract(args) => run_extract(args),
        AdapterCommand::ExportGguf(args) => export(args),
        AdapterCommand::ImportGguf(args) => import(args),
    }
}

fn run_err(what: String, e: LoraError) -> CliError {
    CliError::Run {
        what: Some(what),
        source: Box::new(e),
        hint: None,
    }
}

fn load_base(path: &Path) -> Result<weightkit_io::arch::ModelConfig, CliError> {
    base_config(path).map_err(|e| CliError::Run {
        what: Some(format!(
            "cannot read the base model config {}",
            path.display()
        )),
        source: Box::new(e),
        hint: Some(
            "--base is a Hugging Face model directory (with config.json), a config.json, or \
             a GGUF model file",
        ),
    })
}

fn export(args: &ExportGgufArgs) -> Result<(), CliError> {
    let adapter = load_adapter(&args.dir)?;
    let base = load_base(&args.base)?;
    if args.output.is_dir() {
        return Err(CliError::Usage(format!(
            "{} is a directory; -o names the GGUF file to write",
            args.output.display()
        )));
    }
    let out_type = GgufOutType::from_name(&args.outtype)
        .ok_or_else(|| CliError::Usage(format!("unknown --outtype {:?}", args.outtype)))?;
    let opts = GgufExportOptions {
        out_type,
        name: args.name.clone(),
    };
    let modules = export_gguf(&adapter, &base, &args.output, &opts).map_err(|e| {
        run_err(
            format!(
                "cannot export {} as a GGUF LoRA adapter",
                args.dir.display()
            ),
            e,
        )
    })?;
    let mut out = io::stdout().lock();
    writeln!(
        out,
        "wrote {} ({} modules, {} tensors, {}, alpha {})",
        args.output.display(),
        modules.len(),
        modules.len() * 2,
        out_type.name(),
        short(adapter.config().lora_alpha)
    )?;
    let folded: Vec<_> = modules.iter().filter(|m| m.factor != 1.0).collect();
    if !folded.is_empty() {
        writeln!(
            out,
            "  PEFT's scaling differs from llama.cpp's alpha / rank for {} modules; \
             lora_b carries the ratio:",
            folded.len()
        )?;
        for m in folded {
            writeln!(
                out,
                "    {}  rank {}  scaling {}  lora_b x {}",
                m.tensor,
                m.rank,
                short(m.scaling),
                short(m.factor)
            )?;
        }
    }
    out.flush()?;
    Ok(())
}

fn import(args: &ImportGgufArgs) -> Result<(), CliError> {
    let base = args.base.as_deref().map(load_base).transpose()?;
    let adapter = import_gguf(&args.input, base.as_ref()).map_err(|e| {
        let hint = matches!(e, LoraError::NeedsBaseConfig(_))
            .then_some("pass --base with the base model's directory, config.json or GGUF file");
        CliError::Run {
            what: Some(format!(
                "cannot import {} as a GGUF LoRA adapter",
                args.input.display()
            )),
            source: Box::new(e),
            hint,
        }
    })?;
    adapter
        .save(&args.output)
        .map_err(|e| run_err(format!("cannot write {}", args.output.display()), e))?;
    let c = adapter.config();
    let mut out = io::stdout().lock();
    writeln!(
        out,
        "wrote {} ({} modules, r {}, lora_alpha {}{})",
        args.output.display(),
        adapter.modules().len(),
        c.r,
        short(c.lora_alpha),
        if c.rank_pattern.0.is_empty() {
            String::new()
        } else {
            format!(", {} rank_pattern entries", c.rank_pattern.0.len())
        }
    )?;
    out.flush()?;
    Ok(())
}

/// Six decimals at most, trailing zeros dropped (`2`, `0.625`, `1.333333`).
fn short(x: f64) -> String {
    let s = format!("{x:.6}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    s.to_owned()
}

fn yes_no(b: bool) -> &'static str {
    if b { "yes" } else { "no" }
}

fn targets(t: Option<&TargetModules>) -> Value {
    match t {
        Some(TargetModules::List(l)) => json!(l),
        Some(TargetModules::Regex(r)) => json!(r),
        None => Value::Null,
    }
}

fn report(dir: &std::path::Path, adapter: &Adapter) -> Value {
    let c = adapter.config();
    let modules: Vec<Value> = adapter
        .modules()
        .iter()
        .map(|m| {
            // In/out features of the layer (embeddings: vocabulary and width).
            json!({
                "name": m.module,
                "target": m.target,
                "rank": m.rank,
                "alpha": c.alpha_for(&m.module),
                "scaling": m.scaling,
                "in_features": m.a_cols,
                "out_features": m.b_rows,
                "embedding": m.embedding,
                "dora": m.magnitude.is_some(),
                "lora_bias": m.bias.is_some(),
            })
        })
        .collect();
    let saved: Vec<&str> = adapter
        .saved_tensors()
        .iter()
        .map(|(n, _, _)| n.as_str())
        .collect();
    json!({
        "path": dir.display().to_string(),
        "peft_type": c.peft_type,
        "r": c.r,
        "lora_alpha": c.lora_alpha,
        "use_rslora": c.use_rslora,
        "use_dora": c.use_dora,
        "lora_bias": c.lora_bias,
        "bias": c.bias,
        "fan_in_fan_out": c.fan_in_fan_out,
        "target_modules": targets(c.target_modules.as_ref()),
        "modules_to_save": c.modules_to_save,
        "tensor_count": adapter.peft_tensors().len(),
        "parameter_count": adapter.parameter_count(),
        "modules": modules,
        "saved_tensors": saved,
    })
}

fn inspect(args: &InspectArgs) -> Result<(), CliError> {
    let adapter = load_adapter(&args.dir)?;
    let mut out = io::stdout().lock();
    if args.json {
        serde_json::to_writer_pretty(&mut out, &report(&args.dir, &adapter))
            .map_err(io::Error::from)?;
        writeln!(out)?;
        out.flush()?;
        return Ok(());
    }
    let c = adapter.config();
    writeln!(out, "adapter {}", args.dir.display())?;
    writeln!(out, "  peft_type        {}", c.peft_type)?;
    writeln!(out, "  r                {}", c.r)?;
    writeln!(out, "  lora_alpha       {}", c.lora_alpha)?;
    writeln!(out, "  rslora           {}", yes_no(c.use_rslora))?;
    writeln!(out, "  dora             {}", yes_no(c.use_dora))?;
    writeln!(out, "  lora_bias        {}", yes_no(c.lora_bias))?;
    writeln!(out, "  bias             {}", c.bias)?;
    writeln!(out, "  fan_in_fan_out   {}", yes_no(c.fan_in_fan_out))?;
    let t = match &c.target_modules {
        Some(TargetModules::List(l)) => l.join(", "),
        Some(TargetModules::Regex(r)) => format!("regex {r:?}"),
        None => "-".to_owned(),
    };
    writeln!(out, "  target_modules   {t}")?;
    let m = c
        .modules_to_save
        .as_ref()
        .map_or_else(|| "-".to_owned(), |m| m.join(", "));
    writeln!(out, "  modules_to_save  {m}")?;
    writeln!(
        out,
        "  tensors          {}",
        thousands(adapter.peft_tensors().len() as u64)
    )?;
    writeln!(
        out,
        "  parameters       {}",
        thousands(adapter.parameter_count() as u64)
    )?;
    let width = adapter
        .modules()
        .iter()
        .map(|m| m.module.len())
        .max()
        .unwrap_or(0);
    writeln!(out, "  modules ({}):", adapter.modules().len())?;
    for m in adapter.modules() {
        let mut extra = String::new();
        if m.embedding {
            extra.push_str("  embedding");
        }
        if m.magnitude.is_some() {
            extra.push_str("  dora");
        }
        if m.bias.is_some() {
            extra.push_str("  lora_bias");
        }
        writeln!(
            out,
            "    {:width$}  rank {:>3}  scaling {:<8}  {} -> {}{extra}",
            m.module,
            m.rank,
            short(m.scaling),
            m.a_cols,
            m.b_rows
        )?;
    }
    if !adapter.saved_tensors().is_empty() {
        writeln!(out, "  saved tensors ({}):", adapter.saved_tensors().len())?;
        for (name, shape, _) in adapter.saved_tensors() {
            writeln!(out, "    {name}  {shape:?}")?;
        }
    }
    out.flush()?;
    Ok(())
}

/// Refuses an output directory that is one of the inputs.
fn refuse_input_dir(output: &Path, inputs: &[&Path]) -> Result<(), CliError> {
    let out = output.canonicalize().ok();
    for input in inputs {
        if out.is_some() && input.canonicalize().ok() == out {
            return Err(CliError::Usage(format!(
                "{} is an input; write the adapter somewhere else",
                output.display()
            )));
        }
    }
    Ok(())
}

fn save(adapter: &Adapter, dir: &Path) -> Result<(), CliError> {
    adapter.save(dir).map_err(|e| CliError::Run {
        what: Some(format!("cannot save the adapter to {}", dir.display())),
        source: Box::new(e),
        hint: None,
    })
}

fn run_combine(args: &CombineCmdArgs) -> Result<(), CliError> {
    let start = Instant::now();
    let Some(method) = args.combine.method else {
        return Err(CliError::Usage(
            "--method is required (linear, cat, svd, ties, dare_linear, dare_ties, \
             magnitude_prune, ...)"
                .into(),
        ));
    };
    let weights = adapter_weights(&args.weights, args.adapters.len())?;
    let inputs: Vec<&Path> = args.adapters.iter().map(PathBuf::as_path).collect();
    refuse_input_dir(&args.output, &inputs)?;
    let adapters = args
        .adapters
        .iter()
        .map(|d| load_adapter(d))
        .collect::<Result<Vec<_>, _>>()?;
    let combined = combine(&adapters, &weights, method, &args.combine)?;
    save(&combined, &args.output)?;
    let mut out = io::stdout().lock();
    writeln!(
        out,
        "combined {} adapter{} with {method} -> {}",
        adapters.len(),
        if adapters.len() == 1 { "" } else { "s" },
        args.output.display()
    )?;
    for (dir, w) in args.adapters.iter().zip(&weights) {
        writeln!(out, "  adapter     {} (weight {w})", dir.display())?;
    }
    let c = combined.config();
    writeln!(out, "  r           {} (lora_alpha {})", c.r, c.lora_alpha)?;
    writeln!(out, "  modules     {}", combined.modules().len())?;
    writeln!(
        out,
        "  parameters  {}",
        thousands(combined.parameter_count() as u64)
    )?;
    writeln!(
        out,
        "  time        {}",
        duration(start.elapsed().as_secs_f64())
    )?;
    out.flush()?;
    Ok(())
}

fn run_extract(args: &ExtractArgs) -> Result<(), CliError> {
    let start = Instant::now();
    let rank = match (args.rank, args.energy) {
        (Some(r), None) => ExtractRank::Rank(r),
        (None, Some(e)) => ExtractRank::Energy(e),
        _ => {
            return Err(CliError::Usage(
                "give exactly one of --rank and --energy".into(),
            ));
        }
    };
    refuse_input_dir(&args.output, &[&args.base, &args.finetuned])?;
    let mut options = ExtractOptions::new(rank);
    options.distribute_scale = !args.no_distribute_scale;
    options.fan_in_fan_out = args.fan_in_fan_out;
    if !args.target_modules.is_empty() {
        options.target_modules = Some(args.target_modules.clone());
    }
    let base = open_input(&args.base)?;
    let finetuned = open_input(&args.finetuned)?;
    let (adapter, report) =
        extract_lora(base.source(), finetuned.source(), &options).map_err(|e| CliError::Run {
            what: Some(format!(
                "cannot extract a LoRA from {} and {}",
                args.base.display(),
                args.finetuned.display()
            )),
            source: Box::new(e),
            hint: None,
        })?;
    save(&adapter, &args.output)?;
    let mut out = io::stdout().lock();
    writeln!(
        out,
        "extracted {} module{} -> {}",
        report.modules.len(),
        if report.modules.len() == 1 { "" } else { "s" },
        args.output.display()
    )?;
    let width = report
        .modules
        .iter()
        .map(|m| m.module.len())
        .max()
        .unwrap_or(0);
    for m in &report.modules {
        writeln!(
            out,
            "  {:width$}  rank {:>4}  energy {:.6}  rel_error {:.3e}",
            m.module, m.rank, m.energy, m.relative_error
        )?;
    }
    writeln!(
        out,
        "  r {} (lora_alpha {}), {} parameters, {} tensors unchanged",
        adapter.config().r,
        adapter.config().lora_alpha,
        thousands(adapter.parameter_count() as u64),
        thousands(report.unchanged as u64)
    )?;
    if !report.not_captured.is_empty() {
        writeln!(
            out,
            "  not captured (changed, but not a 2-D weight an adapter holds): {}",
            report.not_captured.join(", ")
        )?;
    }
    writeln!(out, "  time {}", duration(start.elapsed().as_secs_f64()))?;
    out.flush()?;
    Ok(())
}
