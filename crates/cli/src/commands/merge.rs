//! `weightkit merge` and `weightkit unmerge`: PEFT LoRA adapters into (or
//! out of) a base checkpoint in one streaming pass.
//!
//! The arithmetic is `weightkit-lora`'s (`merge_into` / `unmerge_into`);
//! this module loads the adapters, picks the output format and creates that
//! format's writer with the base's tensor list, refuses to write over the
//! input, and prints a summary.

use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use weightkit_core::{DType, Metadata, TensorInfo, Value};
use weightkit_gguf::GgufWriter;
use weightkit_io::{Format, Model};
use weightkit_lora::{
    Adapter, CombinationType, CombineOptions, GgufMergeOptions, LoraError, MajoritySignMethod,
    MergeOptions, MergeReport, add_weighted_adapter, gguf_merge_infos, merge_gguf_base,
};
use weightkit_pickle::TorchWriter;
use weightkit_safetensors::SafetensorsWriter;

use super::pipeline::{
    OutFormat, Spinner, format_from_path, is_dir_output, open_input, refuse_overwriting_input,
};
use crate::error::CliError;
use crate::units::{duration, thousands};

/// The long `--help` text of `merge`.
pub(crate) const MERGE_LONG_ABOUT: &str = "\
Merge PEFT LoRA adapters into a base checkpoint, one tensor at a time: each \
adapted weight is widened to f32, changed by every adapter in turn \
(W += weight * scale * scaling * B @ A, with PEFT's rank_pattern / \
alpha_pattern, rsLoRA, fan_in_fan_out, embeddings, DoRA, lora_bias, \
modules_to_save and trained biases) and rounded once to its own dtype; every \
other tensor is copied byte for byte. Names, dtypes and order stay the \
base's.

BASE is anything `weightkit inspect` reads whose tensor names are the \
Hugging Face names the adapter was trained on (a model directory, a \
.safetensors file, a shard index, a PyTorch checkpoint, or a GGUF file \
written with --keep-names); its tensors must be f32, f16 or bf16. BASE may \
also be a llama.cpp GGUF model (llama.cpp's tensor names, any quantized \
types): the adapter's tensors are found through the Hugging Face <-> GGUF \
name tables and the q/k rope permutation, each merged tensor is \
dequantized, merged in f32 and requantized to its own type (or --requant \
TYPE), its relative RMS requantization error is printed, and the output is \
GGUF. Each \
ADAPTER_DIR holds adapter_config.json and adapter_model.safetensors (or \
adapter_model.bin), as PEFT's save_pretrained writes them.

Several adapters are merged one after the other, adapter k with scale \
w_k * --scale: PEFT's result of merging them in turn with those scales. \
With --method, they are first combined into one adapter with PEFT's \
add_weighted_adapter (linear, cat, svd, ties, dare_linear, dare_ties, \
magnitude_prune and the *_svd variants; weights as there), which is then \
merged with --scale; `weightkit adapter combine` saves that adapter instead.

OUT is one file; its format comes from --to, or else from its extension: \
.safetensors, .gguf, .bin/.pt/.pth.";

/// The long `--help` text of `unmerge`.
pub(crate) const UNMERGE_LONG_ABOUT: &str = "\
Subtract a PEFT LoRA adapter from a checkpoint it was merged into (W -= \
scale * scaling * B @ A in f32, rounded once), recovering the base up to \
rounding. DoRA adapters, and adapters that replace base tensors \
(modules_to_save, trained biases), cannot be unmerged: the merged weights \
no longer hold what is needed, so they are refused.

OUT is one file; its format comes from --to, or else from its extension: \
.safetensors, .gguf, .bin/.pt/.pth.";

/// Arguments of `weightkit merge`.
#[derive(Debug, clap::Args)]
#[command(after_help = "\
Examples:
  weightkit merge path/to/hf-model my-adapter -o merged.safetensors
  weightkit merge model.safetensors style-a style-b --weights 0.7,0.3 -o merged.safetensors
  weightkit merge path/to/hf-model my-adapter --scale 0.5 --safe-merge -o merged.gguf")]
pub(crate) struct MergeArgs {
    /// The base checkpoint: a file, a shard index or a model directory
    #[arg(value_name = "BASE")]
    base: PathBuf,

    /// PEFT adapter directories, merged in this order
    #[arg(value_name = "ADAPTER_DIR", required = true, num_args = 1..)]
    adapters: Vec<PathBuf>,

    /// One weight per adapter, comma-separated (e.g. 0.7,0.3): adapter k's
    /// delta is multiplied by w_k [default: 1 each]
    #[arg(
        long,
        value_name = "W1,W2,...",
        value_delimiter = ',',
        allow_negative_numbers = true
    )]
    weights: Vec<f64>,

    #[command(flatten)]
    delta: DeltaArgs,

    /// GGUF bases with llama.cpp's names: the type merged tensors are
    /// requantized to [default: each tensor's own type]
    #[arg(long, value_name = "TYPE", value_parser = parse_dtype)]
    requant: Option<DType>,

    #[command(flatten)]
    combine: CombineArgs,

    #[command(flatten)]
    out: OutArgs,
}

/// `--scale` and `--safe-merge`, shared by `merge` and `export`.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct DeltaArgs {
    /// Multiplies every adapter's delta (PEFT's scale_layer)
    #[arg(
        long,
        value_name = "S",
        default_value_t = 1.0,
        allow_negative_numbers = true
    )]
    pub(crate) scale: f32,

    /// Check every merged tensor for NaN or infinity before writing it, as
    /// PEFT's safe_merge; nothing is written if one is found
    #[arg(long)]
    pub(crate) safe_merge: bool,
}

impl DeltaArgs {
    /// The library options, refusing a scale that is not a finite number.
    pub(crate) fn options(&self) -> Result<MergeOptions, CliError> {
        if !self.scale.is_finite() {
            return Err(CliError::Usage(format!(
                "--scale must be a finite number, got {}",
                self.scale
            )));
        }
        Ok(MergeOptions {
            scale: self.scale,
            safe_merge: self.safe_merge,
        })
    }
}

/// PEFT's `add_weighted_adapter` arguments.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct CombineArgs {
    /// Combine the adapters into one first (PEFT's combination_type):
    /// linear, cat, svd, ties, ties_svd, dare_linear, dare_linear_svd,
    /// dare_ties, dare_ties_svd, magnitude_prune, magnitude_prune_svd
    #[arg(long, value_name = "METHOD", value_parser = parse_method)]
    pub(crate) method: Option<CombinationType>,

    /// Fraction of values kept by pruning, in (0, 1] (ties, dare_*,
    /// magnitude_prune)
    #[arg(long, value_name = "D")]
    pub(crate) density: Option<f64>,

    /// TIES sign election: total or frequency
    #[arg(long, value_name = "M", default_value = "total", value_parser = parse_sign)]
    pub(crate) majority_sign_method: MajoritySignMethod,

    /// Rank of an SVD combination [default: the largest input rank]
    #[arg(long, value_name = "R")]
    pub(crate) svd_rank: Option<usize>,

    /// Clamp SVD factors at this quantile of their values, in [0, 1]
    #[arg(long, value_name = "Q")]
    pub(crate) svd_clamp: Option<f64>,

    /// Seed of the DARE masks (weightkit's counter-based generator, not
    /// torch's)
    #[arg(long, value_name = "S", default_value_t = 0)]
    pub(crate) seed: u64,
}

fn parse_method(s: &str) -> Result<CombinationType, String> {
    s.parse().map_err(|e: LoraError| e.to_string())
}

fn parse_sign(s: &str) -> Result<MajoritySignMethod, String> {
    s.parse().map_err(|e: LoraError| e.to_string())
}

impl CombineArgs {
    /// The library options for `method`.
    pub(crate) fn options(&self, method: CombinationType) -> CombineOptions {
        CombineOptions {
            combination_type: method,
            density: self.density,
            majority_sign_method: self.majority_sign_method,
            svd_rank: self.svd_rank,
            svd_clamp: self.svd_clamp,
            seed: self.seed,
        }
    }

    /// Options given without --method would be silently ignored.
    fn check_used(&self) -> Result<(), CliError> {
        if self.method.is_none()
            && (self.density.is_some() || self.svd_rank.is_some() || self.svd_clamp.is_some())
        {
            return Err(CliError::Usage(
                "--density, --svd-rank and --svd-clamp need --method".into(),
            ));
        }
        Ok(())
    }
}

/// Combines `adapters` with `weights` (PEFT's `add_weighted_adapter`).
pub(crate) fn combine(
    adapters: &[Adapter],
    weights: &[f64],
    method: CombinationType,
    args: &CombineArgs,
) -> Result<Adapter, CliError> {
    let pairs: Vec<(&Adapter, f64)> = adapters.iter().zip(weights.iter().copied()).collect();
    add_weighted_adapter(&pairs, &args.options(method)).map_err(|e| CliError::Run {
        what: Some(format!("cannot combine the adapters with {method}")),
        source: Box::new(e),
        hint: None,
    })
}

/// One weight per adapter from `--weights` (default 1 each).
pub(crate) fn adapter_weights(weights: &[f64], n: usize) -> Result<Vec<f64>, CliError> {
    let weights = if weights.is_empty() {
        vec![1.0; n]
    } else if weights.len() == n {
        weights.to_vec()
    } else {
        return Err(CliError::Usage(format!(
            "--weights has {} values for {n} adapter(s); give one weight per adapter",
            weights.len(),
        )));
    };
    if let Some(w) = weights.iter().find(|w| !w.is_finite()) {
        return Err(CliError::Usage(format!(
            "weights must be finite numbers, got {w}"
        )));
    }
    Ok(weights)
}

/// Arguments of `weightkit unmerge`.
#[derive(Debug, clap::Args)]
#[command(after_help = "\
Examples:
  weightkit unmerge merged.safetensors my-adapter -o base.safetensors")]
pub(crate) struct UnmergeArgs {
    /// The merged checkpoint: a file, a shard index or a model directory
    #[arg(value_name = "MERGED")]
    merged: PathBuf,

    /// The PEFT adapter directory that was merged
    #[arg(value_name = "ADAPTER_DIR")]
    adapter: PathBuf,

    /// The scale the adapter was merged with
    #[arg(
        long,
        value_name = "S",
        default_value_t = 1.0,
        allow_negative_numbers = true
    )]
    scale: f32,

    #[command(flatten)]
    out: OutArgs,
}

/// Where the result goes.
#[derive(Debug, clap::Args)]
pub(crate) struct OutArgs {
    /// The output file: .safetensors, .gguf or .bin/.pt/.pth
    #[arg(short, long, value_name = "OUT")]
    output: PathBuf,

    /// Output format [default: from OUT's extension]
    #[arg(long, visible_alias = "format", value_enum, value_name = "FORMAT")]
    to: Option<OutFormat>,
}

impl OutArgs {
    /// The output format, refusing directories (one file is written).
    fn format(&self) -> Result<Format, CliError> {
        let to = match self.to {
            Some(t) => t.into(),
            None => format_from_path(&self.output)?,
        };
        if is_dir_output(&self.output, to) {
            return Err(CliError::Usage(format!(
                "{} would be a directory, but merge and unmerge write one file; name it \
                 .safetensors, .gguf or .bin/.pt/.pth",
                self.output.display()
            )));
        }
        Ok(to)
    }
}

pub(crate) fn run_merge(args: &MergeArgs) -> Result<(), CliError> {
    let start = Instant::now();
    let weights = adapter_weights(&args.weights, args.adapters.len())?;
    let options = args.delta.options()?;
    args.combine.check_used()?;
    let to = args.out.format()?;
    let loaded = args
        .adapters
        .iter()
        .map(|d| load_adapter(d))
        .collect::<Result<Vec<_>, _>>()?;
    let (adapters, merge_weights): (Vec<Adapter>, Vec<f32>) = match args.combine.method {
        Some(method) => (
            vec![combine(&loaded, &weights, method, &args.combine)?],
            vec![1.0],
        ),
        None => (loaded, weights.iter().map(|&w| w as f32).collect()),
    };
    let base = open_input(&args.base)?;
    refuse_overwriting_input(&base, &args.out.output, false)?;
    let pairs: Vec<(&Adapter, f32)> = adapters.iter().zip(merge_weights.iter().copied()).collect();
    // A GGUF base with llama.cpp's tensor names (not a --keep-names copy of
    // the Hugging Face ones): merged through the name tables, requantized.
    let llama_names = base.format() == Format::Gguf
        && adapters
            .iter()
            .flat_map(|a| a.modules())
            .any(|m| base.source().position(&m.target).is_none());
    if llama_names {
        return merge_gguf(args, &base, &pairs, to, &weights, start);
    }
    if args.requant.is_some() {
        return Err(CliError::Usage(
            "--requant applies to GGUF bases with llama.cpp's tensor names".into(),
        ));
    }
    let spinner = Spinner::start(format!(
        "merging {} adapter(s) into {} tensors, writing {}",
        adapters.len(),
        thousands(base.source().tensor_infos().len() as u64),
        args.out.output.display()
    ));
    let report = write(&base, &args.out.output, to, |sink| match sink {
        AnySink::Safetensors(w) => {
            weightkit_lora::merge_into(base.source(), &pairs, w, &options).map(|(r, _)| r)
        }
        AnySink::Gguf(w) => {
            weightkit_lora::merge_into(base.source(), &pairs, w, &options).map(|(r, _)| r)
        }
        AnySink::Torch(w) => {
            weightkit_lora::merge_into(base.source(), &pairs, w, &options).map(|(r, _)| r)
        }
    })
    .map_err(|e| {
        lora_error(
            format!(
                "cannot merge into {} (writing {})",
                args.base.display(),
                args.out.output.display()
            ),
            e,
        )
    })?;
    drop(spinner);
    let mut out = io::stdout().lock();
    writeln!(
        out,
        "merged {} adapter{} into {} ({}) -> {} ({})",
        args.adapters.len(),
        if args.adapters.len() == 1 { "" } else { "s" },
        args.base.display(),
        base.format().name(),
        args.out.output.display(),
        to.name()
    )?;
    for (dir, w) in args.adapters.iter().zip(&weights) {
        writeln!(out, "  adapter  {} (weight {w})", dir.display())?;
    }
    if let (Some(method), [combined]) = (args.combine.method, adapters.as_slice()) {
        writeln!(
            out,
            "  combined {method} -> rank {} ({} modules)",
            combined.config().r,
            combined.modules().len()
        )?;
    }
    if args.delta.scale != 1.0 {
        writeln!(out, "  scale    {}", args.delta.scale)?;
    }
    write_report(&mut out, &report, start)?;
    out.flush()?;
    Ok(())
}

/// `merge` into a GGUF base with llama.cpp's names (see
/// `weightkit_lora::merge_gguf_base`): GGUF out, merged tensors requantized,
/// each one's relative RMS requantization error printed.
fn merge_gguf(
    args: &MergeArgs,
    base: &Model,
    pairs: &[(&Adapter, f32)],
    to: Format,
    weights: &[f64],
    start: Instant,
) -> Result<(), CliError> {
    if to != Format::Gguf {
        return Err(CliError::Usage(format!(
            "{} has llama.cpp's tensor names: the merged model is written as GGUF (name the \
             output .gguf), or convert the base to Hugging Face first",
            args.base.display()
        )));
    }
    let options = GgufMergeOptions {
        scale: args.delta.scale,
        safe_merge: args.delta.safe_merge,
        requant: args.requant,
    };
    let what = || {
        format!(
            "cannot merge into {} (writing {})",
            args.base.display(),
            args.out.output.display()
        )
    };
    let infos = gguf_merge_infos(base, pairs, &options).map_err(|e| lora_error(what(), e))?;
    let writer =
        GgufWriter::create(&args.out.output, base.source().metadata(), infos).map_err(|e| {
            lora_error(
                what(),
                LoraError::Write {
                    path: args.out.output.clone(),
                    source: Box::new(e),
                },
            )
        })?;
    let spinner = Spinner::start(format!(
        "merging {} adapter(s) into {} GGUF tensors, writing {}",
        pairs.len(),
        thousands(base.source().tensor_infos().len() as u64),
        args.out.output.display()
    ));
    let (report, _) =
        merge_gguf_base(base, pairs, writer, &options).map_err(|e| lora_error(what(), e))?;
    drop(spinner);
    let mut out = io::stdout().lock();
    writeln!(
        out,
        "merged {} adapter{} into {} (gguf, llama.cpp names) -> {} (gguf)",
        args.adapters.len(),
        if args.adapters.len() == 1 { "" } else { "s" },
        args.base.display(),
        args.out.output.display(),
    )?;
    for (dir, w) in args.adapters.iter().zip(weights) {
        writeln!(out, "  adapter  {} (weight {w})", dir.display())?;
    }
    writeln!(
        out,
        "  merged   {} tensors, copied {}",
        report.merged.len(),
        report.copied
    )?;
    for t in &report.merged {
        writeln!(
            out,
            "    {:<32} {} -> {}  requantization error {:.3e} (relative RMS)",
            t.name,
            t.base_dtype.name(),
            t.dtype.name(),
            t.rel_rmse
        )?;
    }
    writeln!(
        out,
        "  time     {}",
        duration(start.elapsed().as_secs_f64())
    )?;
    out.flush()?;
    Ok(())
}

fn parse_dtype(s: &str) -> Result<DType, String> {
    s.parse::<DType>()
        .map_err(|_| format!("unknown tensor type `{s}` (e.g. q8_0, q4_K, f16)"))
}

pub(crate) fn run_unmerge(args: &UnmergeArgs) -> Result<(), CliError> {
    let start = Instant::now();
    if !args.scale.is_finite() {
        return Err(CliError::Usage(format!(
            "--scale must be a finite number, got {}",
            args.scale
        )));
    }
    let to = args.out.format()?;
    let adapter = load_adapter(&args.adapter)?;
    let merged = open_input(&args.merged)?;
    refuse_overwriting_input(&merged, &args.out.output, false)?;
    let options = MergeOptions {
        scale: args.scale,
        safe_merge: false,
    };
    let src = merged.source();
    let spinner = Spinner::start(format!(
        "unmerging from {} tensors, writing {}",
        thousands(src.tensor_infos().len() as u64),
        args.out.output.display()
    ));
    let report = write(&merged, &args.out.output, to, |sink| match sink {
        AnySink::Safetensors(w) => {
            weightkit_lora::unmerge_into(src, &adapter, w, &options).map(|(r, _)| r)
        }
        AnySink::Gguf(w) => {
            weightkit_lora::unmerge_into(src, &adapter, w, &options).map(|(r, _)| r)
        }
        AnySink::Torch(w) => {
            weightkit_lora::unmerge_into(src, &adapter, w, &options).map(|(r, _)| r)
        }
    })
    .map_err(|e| {
        lora_error(
            format!(
                "cannot unmerge {} from {} (writing {})",
                args.adapter.display(),
                args.merged.display(),
                args.out.output.display()
            ),
            e,
        )
    })?;
    drop(spinner);
    let mut out = io::stdout().lock();
    writeln!(
        out,
        "unmerged {} from {} ({}) -> {} ({})",
        args.adapter.display(),
        args.merged.display(),
        merged.format().name(),
        args.out.output.display(),
        to.name()
    )?;
    write_report(&mut out, &report, start)?;
    out.flush()?;
    Ok(())
}

/// Loads a PEFT adapter directory; the library's message names the file.
pub(crate) fn load_adapter(dir: &Path) -> Result<Adapter, CliError> {
    Adapter::open(dir).map_err(|e| {
        let hint = match &e {
            LoraError::Io { .. } => Some(
                "an adapter directory holds adapter_config.json and \
                 adapter_model.safetensors (or adapter_model.bin), as PEFT's \
                 save_pretrained writes them",
            ),
            _ => None,
        };
        CliError::Run {
            what: Some(format!("cannot load adapter {}", dir.display())),
            source: Box::new(e),
            hint,
        }
    })
}

pub(crate) fn lora_error(what: String, e: LoraError) -> CliError {
    let hint = match &e {
        LoraError::MissingBaseTensor { .. } => Some(
            "the base must hold the tensors the adapter was trained on, under their Hugging \
             Face names (a GGUF base needs --keep-names names)",
        ),
        _ => None,
    };
    CliError::Run {
        what: Some(what),
        source: Box::new(e),
        hint,
    }
}

/// A writer of the output format.
enum AnySink {
    Safetensors(SafetensorsWriter),
    Gguf(GgufWriter),
    Torch(TorchWriter),
}

/// Creates the writer for `to` with the input's tensor list and metadata
/// (safetensors: its string values, `format` = `pt` unless set; GGUF: as
/// is, as `convert --keep-names` does; PyTorch: none) and runs `f` with it.
fn write(
    model: &Model,
    out: &Path,
    to: Format,
    f: impl FnOnce(AnySink) -> Result<MergeReport, LoraError>,
) -> Result<MergeReport, LoraError> {
    let src = model.source();
    let infos: Vec<TensorInfo> = src.tensor_infos().to_vec();
    let boxed = |source: Box<dyn std::error::Error + Send + Sync>| LoraError::Write {
        path: out.to_path_buf(),
        source,
    };
    let sink = match to {
        Format::Gguf => AnySink::Gguf(
            GgufWriter::create(out, src.metadata(), infos).map_err(|e| boxed(Box::new(e)))?,
        ),
        Format::PyTorch => {
            AnySink::Torch(TorchWriter::create(out, infos).map_err(|e| boxed(Box::new(e)))?)
        }
        _ => {
            let mut meta: Metadata = src
                .metadata()
                .iter()
                .filter_map(|(k, v)| {
                    v.as_str()
                        .map(|s| (k.to_owned(), Value::String(s.to_owned())))
                })
                .collect();
            if meta.get("format").is_none() {
                meta.insert("format", Value::String("pt".into()));
            }
            AnySink::Safetensors(
                SafetensorsWriter::create(out, infos, &meta).map_err(|e| boxed(Box::new(e)))?,
            )
        }
    };
    f(sink)
}

fn write_report(out: &mut dyn Write, r: &MergeReport, start: Instant) -> io::Result<()> {
    writeln!(
        out,
        "  tensors  {} adapted, {} replaced, {} copied",
        thousands(r.merged.len() as u64),
        thousands(r.replaced.len() as u64),
        thousands(r.copied as u64)
    )?;
    writeln!(
        out,
        "  time     {}",
        duration(start.elapsed().as_secs_f64())
    )
}
