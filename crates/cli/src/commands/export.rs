//! `weightkit export`: base model + PEFT LoRA adapters -> one quantized
//! GGUF file (or a merged Hugging Face directory) in one streaming pass.
//!
//! The pass is `weightkit_lora::export` (the merge as a tensor source under
//! the io crate's quantize pass); this module pairs `--adapter` with
//! `--adapter-weight`, reuses `quantize`'s mixture flags, runs the pass in a
//! thread pool with the progress bar, and prints a summary with the peak
//! memory.

use std::io::{self, Write};
use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
use std::time::Instant;

use weightkit_io::Format;
use weightkit_io::mixture::Mixture;
use weightkit_lora::{Adapter, ExportFormat, ExportOptions, base_config, export, import_gguf};

use super::merge::{CombineArgs, DeltaArgs, combine, load_adapter, lora_error};
use super::pipeline::{
    CastDType, OutFormat, Spinner, io_error, is_dir_output, open_input, parse_size, peak_rss,
    refuse_overwriting_input,
};
use super::quantize::{GgufNaming, MixtureArgs, parse_mixture, thread_pool, write_tensor_lines};
use crate::error::CliError;
use crate::units::{binary_size, bytes_with_unit, duration, thousands};

/// The long `--help` text.
pub(crate) const LONG_ABOUT: &str = "\
Merge PEFT LoRA adapters into a base model and write one quantized GGUF \
file that llama.cpp runs, in one streaming pass: each base tensor is read \
once, merged in f32 (as `weightkit merge`, PEFT's arithmetic), quantized \
once with llama-quantize's mixture (as `weightkit quantize`, bit-exact with \
llama.cpp) and written. The usual chain (PEFT merge_and_unload + \
save_pretrained, convert_hf_to_gguf.py, llama-quantize) writes two \
full-size intermediate copies and rounds the merged weights to 16 bits on \
the way; this writes none, and memory stays at about one tensor.

BASE is a Llama-family Hugging Face checkpoint (directory, .safetensors, \
shard index or .bin, with its config.json; tokenizer files beside it are \
carried into the GGUF) or a llama.cpp GGUF model (any types; adapted \
tensors are dequantized, merged and requantized). Each --adapter is a PEFT \
adapter directory or a llama.cpp GGUF LoRA adapter file (convert_lora_to_gguf.py's \
or `weightkit adapter export-gguf`'s); an --adapter-weight right after it scales its delta \
(default 1); adapters are merged in turn, or combined first with --method \
as in `weightkit merge`.

--quant takes the mixtures of `weightkit quantize` (Q4_K_M, Q8_0, Q5_K_S, \
IQ4_XS, F16 ...), with its --imatrix, --override, --pure ... flags. With \
--format safetensors|pytorch the merged model is written as a Hugging Face \
directory instead (config.json and tokenizer files copied; merged tensors \
rounded once to the base's types, or to --dtype). The output appears only \
when complete (temporary file renamed into place).";

/// Arguments of `weightkit export`.
#[derive(Debug, clap::Args)]
#[command(after_help = "\
Examples:
  weightkit export path/to/hf-model --adapter my-lora --quant Q4_K_M -o model-Q4_K_M.gguf
  weightkit export base/ --adapter style --adapter-weight 0.7 --adapter chat --quant Q8_0 -o m.gguf
  weightkit export base/ --adapter a --quant IQ4_XS --imatrix imatrix.gguf -o m.gguf
  weightkit export model-f16.gguf --adapter my-lora --quant Q5_K_M -o merged-Q5_K_M.gguf
  weightkit export base/ --adapter my-lora --format safetensors -o merged-model/")]
pub(crate) struct Args {
    /// The base model: a Hugging Face checkpoint with its config.json, or
    /// a llama.cpp GGUF file
    #[arg(value_name = "BASE")]
    base: PathBuf,

    /// A PEFT adapter directory, or a llama.cpp GGUF LoRA adapter file
    /// (repeatable; merged in order)
    #[arg(long = "adapter", value_name = "DIR", required = true)]
    adapters: Vec<PathBuf>,

    /// The weight of the --adapter before it [default: 1]
    #[arg(
        long = "adapter-weight",
        value_name = "W",
        allow_negative_numbers = true
    )]
    adapter_weights: Vec<f64>,

    /// The GGUF mixture: Q4_K_M, Q8_0, Q6_K, F16 ... (see `weightkit
    /// quantize --help`); required for GGUF output
    #[arg(long = "quant", value_name = "TYPE", value_parser = parse_mixture)]
    mixture: Option<Mixture>,

    #[command(flatten)]
    mix: MixtureArgs,

    #[command(flatten)]
    delta: DeltaArgs,

    #[command(flatten)]
    combine: CombineArgs,

    /// The output: a .gguf file, or with --format a Hugging Face directory
    /// (or one .safetensors / .bin file)
    #[arg(short, long, value_name = "OUT")]
    output: PathBuf,

    /// Output format
    #[arg(long, value_enum, value_name = "FORMAT", default_value = "gguf")]
    format: OutFormat,

    /// Hugging Face output: cast float tensors to this type [default: each
    /// base tensor's own]
    #[arg(long, value_enum, value_name = "DTYPE")]
    dtype: Option<CastDType>,

    /// Hugging Face safetensors directory: the largest shard (e.g. 5GB)
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    max_shard_size: Option<u64>,

    /// Threads for merging and quantizing [default: one per CPU]
    #[arg(long, value_name = "N")]
    threads: Option<NonZeroUsize>,

    #[command(flatten)]
    naming: GgufNaming,
}

/// Pairs each `--adapter-weight` with the `--adapter` given before it, from
/// their positions on the command line (clap keeps the two lists apart).
pub(crate) fn pair_weights(
    adapters: &[usize],
    weights: &[(usize, f64)],
) -> Result<Vec<f64>, CliError> {
    let mut out = vec![None; adapters.len()];
    for &(at, w) in weights {
        let Some(k) = adapters.iter().rposition(|&a| a < at) else {
            return Err(CliError::Usage(
                "--adapter-weight must follow the --adapter it weighs".into(),
            ));
        };
        if out[k].replace(w).is_some() {
            return Err(CliError::Usage(format!(
                "--adapter number {} has two --adapter-weight values",
                k + 1
            )));
        }
    }
    let weights: Vec<f64> = out.into_iter().map(|w| w.unwrap_or(1.0)).collect();
    if let Some(w) = weights.iter().find(|w| !w.is_finite()) {
        return Err(CliError::Usage(format!(
            "adapter weights must be finite numbers, got {w}"
        )));
    }
    Ok(weights)
}

/// A PEFT adapter directory, or a llama.cpp GGUF LoRA adapter file (read
/// back into PEFT's form with the base's head counts, which its q/k
/// `lora_b` permutation needs).
fn load_any_adapter(path: &Path, base: &Path) -> Result<Adapter, CliError> {
    if !path.is_file() {
        return load_adapter(path);
    }
    // base_config reads a model directory, a config.json or a GGUF model.
    let is_gguf = base
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("gguf"));
    let from = if base.is_dir() || is_gguf {
        base
    } else {
        base.parent().unwrap_or(Path::new("."))
    };
    let what = || format!("cannot load {} as a GGUF LoRA adapter", path.display());
    let config = base_config(from).map_err(|e| CliError::Run {
        what: Some(what()),
        source: Box::new(e),
        hint: Some("the base's config.json (or GGUF metadata) gives the head counts"),
    })?;
    import_gguf(path, Some(&config)).map_err(|e| CliError::Run {
        what: Some(what()),
        source: Box::new(e),
        hint: None,
    })
}

pub(crate) fn run(args: &Args, weights: &[f64]) -> Result<(), CliError> {
    let start = Instant::now();
    let merge = args.delta.options()?;
    let to: Format = args.format.into();
    let gguf_out = to == Format::Gguf;
    match (gguf_out, args.mixture) {
        (true, None) => {
            return Err(CliError::Usage(
                "GGUF output needs --quant TYPE (e.g. --quant Q4_K_M, or --quant F16 for no \
                 quantization)"
                    .into(),
            ));
        }
        (false, Some(_)) => {
            return Err(CliError::Usage(
                "--quant applies to GGUF output; a Hugging Face export keeps float types \
                 (see --dtype)"
                    .into(),
            ));
        }
        _ => {}
    }
    if gguf_out && (args.dtype.is_some() || args.max_shard_size.is_some()) {
        return Err(CliError::Usage(
            "--dtype and --max-shard-size apply to --format safetensors|pytorch".into(),
        ));
    }

    let loaded = args
        .adapters
        .iter()
        .map(|d| load_any_adapter(d, &args.base))
        .collect::<Result<Vec<_>, _>>()?;
    let adapters: Vec<(Adapter, f32)> = match args.combine.method {
        Some(method) => vec![(combine(&loaded, weights, method, &args.combine)?, 1.0)],
        None => loaded
            .into_iter()
            .zip(weights.iter().map(|&w| w as f32))
            .collect(),
    };
    let base = open_input(&args.base)?;
    let dir_out = !gguf_out && is_dir_output(&args.output, to);
    refuse_overwriting_input(&base, &args.output, dir_out)?;
    let in_text = args.base.display().to_string();
    let from = base.format();
    // The plan over the base's names, for the importance matrix's entries,
    // the byte count and the errors a wrong base gives before any merging.
    let (format, imatrix_use) = match args.mixture {
        Some(mixture) => {
            let plan = args.naming.plan(&base, &in_text)?;
            let (quantize, imatrix_use) = args.mix.options(&plan, &in_text)?;
            (
                ExportFormat::Gguf {
                    mixture,
                    quantize,
                    plan: args.naming.options(),
                },
                imatrix_use,
            )
        }
        None => (
            ExportFormat::HuggingFace {
                format: to,
                dtype: args.dtype.map(Into::into),
                max_shard_size: args.max_shard_size,
            },
            None,
        ),
    };
    let bytes_in: u64 = base
        .source()
        .tensor_infos()
        .iter()
        .filter_map(|t| t.byte_len().ok())
        .map(|n| n as u64)
        .sum();
    let pool = thread_pool(args.threads)?;
    let threads = pool.current_num_threads();
    let what = match args.mixture {
        Some(m) => format!("as {m}"),
        None => format!("as {}", to.name()),
    };
    let spinner = Spinner::start(format!(
        "merging {} adapter{} into {} ({}) and writing {} {what} on {threads} thread{}",
        adapters.len(),
        if adapters.len() == 1 { "" } else { "s" },
        in_text,
        binary_size(bytes_in),
        args.output.display(),
        if threads == 1 { "" } else { "s" }
    ));
    let options = ExportOptions { merge, format };
    let n_adapters = adapters.len();
    let report = pool
        .install(|| export(base, adapters, &args.output, &options, &spinner))
        .map_err(|e| {
            let what = format!("cannot export {in_text} to {}", args.output.display());
            match e {
                // The io crate's errors (mixture, importance matrix ...)
                // with their hints.
                weightkit_lora::LoraError::Read(e) => io_error(what, e),
                e => lora_error(what, e),
            }
        })?;
    drop(spinner);

    let mut out = io::stdout().lock();
    writeln!(
        out,
        "exported {in_text} ({}) + {n_adapters} adapter{} -> {} {what}",
        from.name(),
        if n_adapters == 1 { "" } else { "s" },
        args.output.display(),
    )?;
    for (dir, w) in args.adapters.iter().zip(weights) {
        writeln!(out, "  adapter  {} (weight {w})", dir.display())?;
    }
    if let Some(method) = args.combine.method {
        writeln!(out, "  combined {method} into one adapter first")?;
    }
    if args.delta.scale != 1.0 {
        writeln!(out, "  scale    {}", args.delta.scale)?;
    }
    let m = &report.merged;
    writeln!(
        out,
        "  merged   {} tensors{}{}",
        thousands(m.merged.len() as u64),
        if m.replaced.is_empty() {
            String::new()
        } else {
            format!(", {} replaced", m.replaced.len())
        },
        if m.llama_cpp_names {
            " (through llama.cpp's tensor names)"
        } else {
            ""
        }
    )?;
    write_tensor_lines(&mut out, &report.tensors, &report.convert)?;
    if let Some((path, (used, entries))) = imatrix_use {
        writeln!(
            out,
            "  imatrix  {}: entries for {used} tensors of the model ({entries} in the file)",
            path.display()
        )?;
    }
    for file in &report.convert.outputs {
        match std::fs::metadata(file) {
            Ok(meta) if meta.is_file() => writeln!(
                out,
                "  file     {} ({})",
                file.display(),
                bytes_with_unit(meta.len())
            )?,
            _ => writeln!(out, "  file     {}", file.display())?,
        }
    }
    writeln!(
        out,
        "  time     {} on {threads} thread{}",
        duration(start.elapsed().as_secs_f64()),
        if threads == 1 { "" } else { "s" }
    )?;
    if let Some(peak) = peak_rss() {
        writeln!(out, "  memory   {} peak resident", binary_size(peak))?;
    }
    out.flush()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::pair_weights;

    #[test]
    fn weights_follow_their_adapter() {
        // --adapter a --adapter-weight 0.5 --adapter b --adapter c --adapter-weight 2
        let w = pair_weights(&[1, 5, 7], &[(3, 0.5), (9, 2.0)]).unwrap();
        assert_eq!(w, vec![0.5, 1.0, 2.0]);
        assert_eq!(pair_weights(&[1, 3], &[]).unwrap(), vec![1.0, 1.0]);
        // A weight before any adapter, two weights for one adapter.
        assert!(pair_weights(&[3], &[(1, 0.5)]).is_err());
        assert!(pair_weights(&[1], &[(3, 0.5), (5, 0.7)]).is_err());
        assert!(pair_weights(&[1], &[(3, f64::NAN)]).is_err());
    }
}
