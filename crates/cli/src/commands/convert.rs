//! `weightkit convert`: one checkpoint format to another in one streaming
//! pass.
//!
//! The work is `weightkit-io`'s (plan, then read -> cast -> permute ->
//! write each tensor); this command picks the output format from the
//! output's name, chooses the plan (a Hugging Face checkpoint to GGUF goes
//! through `hf_to_gguf_plan` so `--name` and `--pre` reach it), refuses to
//! write over its input, and prints a summary.

use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use weightkit_core::DType;
use weightkit_io::Format;
use weightkit_io::convert::{ConvertOptions, ConvertReport, run_plan_with_progress};
use weightkit_io::plan::{GgufPlanOptions, conversion_plan, hf_to_gguf_plan};

use super::pipeline::{
    CastDType, OutFormat, Spinner, format_from_path, io_error, is_dir_output, open_input,
    parse_size, planned_bytes_in, refuse_overwriting_input,
};
use crate::error::CliError;
use crate::units::{binary_size, bytes_with_unit, duration, thousands};

/// The long `--help` text.
pub(crate) const LONG_ABOUT: &str = "\
Convert a checkpoint to another format in one streaming pass: each tensor is \
read (zero-copy where the format allows), cast if --dtype asks for it \
(round-to-nearest-even), and written, so memory stays bounded by the largest \
tensor. Without --dtype the conversion is lossless. The input is never \
modified, and an output that would replace the input is refused.

IN is anything `weightkit inspect` reads: a .safetensors, .gguf, .bin/.pt/.pth \
file (detected by content), a shard index, or a Hugging Face model directory.

The output format comes from --to, or else from OUT's name: .gguf is GGUF, \
.safetensors one safetensors file, .bin/.pt/.pth one PyTorch file, and a \
directory (an existing one, a path ending in /, or a name without extension) \
a Hugging Face directory of safetensors (sharded with --max-shard-size). \
With --to pytorch and a directory, the directory gets pytorch_model.bin.

Between Hugging Face and GGUF the names, layout and metadata are translated \
for the Llama family (Llama 2/3, Mistral, Qwen2): a model directory (with \
its config.json, and tokenizer.json / tokenizer.model when present) becomes \
a GGUF file as convert_hf_to_gguf.py writes it (the q/k rope permutation \
applied), and a GGUF file becomes a Hugging Face directory with the \
original names and a config.json (the permutation undone). --keep-names \
copies names and layout as they are instead. Other pairs keep names and \
layout.";

/// Arguments of `weightkit convert`.
#[derive(Debug, clap::Args)]
#[command(after_help = "\
Examples:
  weightkit convert path/to/hf-model model.gguf
  weightkit convert path/to/hf-model model-f16.gguf --dtype f16 --name MyModel
  weightkit convert model.gguf hf-model/
  weightkit convert model.safetensors model.bin --dtype bf16
  weightkit convert big-model/ resharded/ --max-shard-size 5GB")]
pub(crate) struct Args {
    /// The checkpoint to convert: a file, a shard index or a model directory
    #[arg(value_name = "IN")]
    input: PathBuf,

    /// Where to write: a .gguf, .safetensors or .bin/.pt/.pth file, or a
    /// directory
    #[arg(value_name = "OUT")]
    output: PathBuf,

    /// Output format [default: from OUT's extension; a directory is a
    /// Hugging Face safetensors directory]
    #[arg(long, value_enum, value_name = "FORMAT")]
    to: Option<OutFormat>,

    /// Cast floating-point tensors to this type (integer and quantized
    /// tensors are kept) [default: keep every tensor's type]
    #[arg(long, value_enum, value_name = "DTYPE")]
    dtype: Option<CastDType>,

    /// Keep tensor names, layout and metadata as they are, even between
    /// Hugging Face and GGUF
    #[arg(long)]
    keep_names: bool,

    /// Safetensors directory output only: the largest shard, e.g. 5GB,
    /// 500MB, 2GiB [default: one file]
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    max_shard_size: Option<u64>,

    /// Hugging Face -> GGUF only: `general.name` [default: the model
    /// directory's name]
    #[arg(long, value_name = "NAME")]
    name: Option<String>,

    /// Hugging Face -> GGUF only: `tokenizer.ggml.pre` for a byte-level BPE
    /// tokenizer (llama-bpe, qwen2, gpt-2 ...) [default: from
    /// tokenizer.json's pre-tokenizer]
    #[arg(long, value_name = "PRE")]
    pre: Option<String>,
}

/// Which way names and layout go.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Layout {
    HfToGguf,
    GgufToHf,
    Kept,
}

pub(crate) fn run(args: &Args) -> Result<(), CliError> {
    let start = Instant::now();
    let to = match args.to {
        Some(t) => t.into(),
        None => format_from_path(&args.output)?,
    };
    let dtype: Option<DType> = args.dtype.map(Into::into);
    let dir_output = is_dir_output(&args.output, to);
    if args.max_shard_size.is_some() && !(to == Format::Safetensors && dir_output) {
        return Err(CliError::Usage(format!(
            "--max-shard-size applies to a safetensors directory output, but {} is {}",
            args.output.display(),
            describe_output(to, dir_output)
        )));
    }

    let model = open_input(&args.input)?;
    refuse_overwriting_input(&model, &args.output, dir_output)?;

    let from = model.format();
    let layout = if args.keep_names {
        Layout::Kept
    } else if to == Format::Gguf && from != Format::Gguf && model.config().is_some() {
        Layout::HfToGguf
    } else if from == Format::Gguf && to != Format::Gguf {
        Layout::GgufToHf
    } else {
        Layout::Kept
    };
    if layout != Layout::HfToGguf {
        for (flag, given) in [("--name", &args.name), ("--pre", &args.pre)] {
            if given.is_some() {
                return Err(CliError::Usage(format!(
                    "{flag} applies to Hugging Face -> GGUF conversions (a checkpoint with its \
                     config.json, written as GGUF, without --keep-names), but this converts {} \
                     to {}",
                    from.name(),
                    describe_output(to, dir_output)
                )));
            }
        }
    }

    let in_text = args.input.display().to_string();
    let plan = match layout {
        Layout::HfToGguf => hf_to_gguf_plan(
            &model,
            &GgufPlanOptions {
                dtype,
                name: args.name.clone(),
                pre: args.pre.clone(),
            },
        ),
        _ => conversion_plan(&model, to, dtype, args.keep_names),
    }
    .map_err(|e| io_error(format!("cannot plan the conversion of {in_text}"), e))?;

    let spinner = Spinner::start(format!(
        "converting {} tensors ({}) to {}",
        thousands(plan.tensors.len() as u64),
        binary_size(planned_bytes_in(&model, &plan)),
        args.output.display()
    ));
    let opts = ConvertOptions {
        to,
        dtype,
        keep_names: args.keep_names,
        max_shard_size: args.max_shard_size,
    };
    let report =
        run_plan_with_progress(&model, &plan, &args.output, &opts, &spinner).map_err(|e| {
            io_error(
                format!("cannot convert {in_text} to {}", args.output.display()),
                e,
            )
        })?;
    drop(spinner);

    let summary = Summary {
        input: &args.input,
        from,
        output: &args.output,
        to: describe_output(to, dir_output),
        layout,
        dtype,
        report: &report,
        seconds: start.elapsed().as_secs_f64(),
    };
    let mut out = io::stdout().lock();
    summary.write(&mut out)?;
    out.flush()?;
    Ok(())
}

/// `"GGUF"`, `"a safetensors directory"` ...
fn describe_output(to: Format, dir_output: bool) -> String {
    if dir_output {
        format!("a {} directory", to.name())
    } else {
        to.name().to_owned()
    }
}

struct Summary<'a> {
    input: &'a Path,
    from: Format,
    output: &'a Path,
    to: String,
    layout: Layout,
    dtype: Option<DType>,
    report: &'a ConvertReport,
    seconds: f64,
}

impl Summary<'_> {
    fn write(&self, w: &mut dyn Write) -> io::Result<()> {
        let r = self.report;
        writeln!(
            w,
            "converted {} ({}) -> {} ({})",
            self.input.display(),
            self.from.name(),
            self.output.display(),
            self.to
        )?;
        writeln!(w, "  tensors  {}", thousands(r.tensors as u64))?;
        let layout = match self.layout {
            Layout::HfToGguf => "Hugging Face -> GGUF names and metadata",
            Layout::GgufToHf => "GGUF -> Hugging Face names and config.json",
            Layout::Kept => "names and layout kept",
        };
        writeln!(w, "  layout   {layout}")?;
        if let Some(d) = self.dtype {
            writeln!(w, "  dtype    floats cast to {d}")?;
        }
        writeln!(
            w,
            "  data     {} -> {}",
            bytes_with_unit(r.bytes_in),
            bytes_with_unit(r.bytes_out)
        )?;
        for (i, f) in r.outputs.iter().enumerate() {
            let label = if i == 0 { "files " } else { "      " };
            writeln!(w, "  {label}   {}", f.display())?;
        }
        writeln!(w, "  time     {}", duration(self.seconds))
    }
}
