//! `weightkit quantize`: a checkpoint to a quantized GGUF file with one of
//! llama-quantize's named mixtures.
//!
//! The type choice and the quantization are `weightkit-io`'s
//! (`mixture::choose_types` ported from llama.cpp, then one streaming pass);
//! this command parses llama-quantize's flags, plans the GGUF names first
//! when the input is not GGUF (so a Hugging Face directory quantizes in one
//! step), runs the pass in a thread pool of `--threads` threads, and prints
//! a summary.

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
use std::time::Instant;

use regex::Regex;
use weightkit_core::{DType, TensorInfo};
use weightkit_io::convert::{ConvertReport, Plan, identity_plan};
use weightkit_io::imatrix::{ImatrixError, ImportanceMatrix};
use weightkit_io::mixture::{self, Mixture, MixtureError};
use weightkit_io::plan::{GgufPlanOptions, hf_to_gguf_plan};
use weightkit_io::quantize::{QuantizeOptions, QuantizeReport, quantize_with_progress};
use weightkit_io::{Format, Model};

use super::pipeline::{Spinner, io_error, open_input, planned_bytes_in, refuse_overwriting_input};
use crate::error::CliError;
use crate::units::{binary_size, bytes_with_unit, duration, thousands};

/// The long `--help` text.
pub(crate) const LONG_ABOUT: &str = "\
Quantize a checkpoint to a GGUF file with one of llama-quantize's named \
mixtures. A mixture is not one type for every tensor: as in llama.cpp, each \
tensor's type comes from its name, shape and layer (attn_v and ffn_down of \
some layers get more bits, output.weight gets Q6_K, norms stay F32 ...), \
with llama.cpp's fallback to a compatible type when a row is not a whole \
number of blocks (Q4_K -> Q5_0 -> F16 ...). A fallback-less type whose \
blocks do not fit a row (Q8_0 for a row of 172) is an error, as in \
llama-quantize; --override gives such tensors a type that fits.

IN is anything `weightkit inspect` reads. A GGUF file is quantized as it is \
(already-quantized tensors need --allow-requantize); anything else must be \
a Llama-family Hugging Face checkpoint with its config.json, which is \
translated to GGUF names and metadata first (as `weightkit convert IN \
x.gguf` would) and quantized in the same pass. OUT is always a GGUF file; \
writing over IN is refused. general.file_type and \
general.quantization_version are set as llama-quantize sets them.

--imatrix takes llama-imatrix's output (GGUF, or the older .dat). An entry \
whose length does not fit its tensor is an error (llama-quantize refuses \
such a file too), except for token_embd.weight; tensors without an entry \
are quantized without importance data, and a matrix with no entry for any \
tensor of the model quantizes as if none were given, with a warning.

TYPE is one of: F32 F16 BF16 Q4_0 Q4_1 Q5_0 Q5_1 Q8_0 Q2_K Q2_K_S Q3_K_S \
Q3_K_M Q3_K_L Q4_K_S Q4_K_M Q5_K_S Q5_K_M Q6_K IQ4_NL IQ4_XS TQ1_0 TQ2_0 Q1_0 Q2_0 (any \
case; Q3_K, Q4_K and Q5_K mean the _M mixtures; the llama_ftype number, 15 \
for Q4_K_M, works too).";

/// Arguments of `weightkit quantize`.
#[derive(Debug, clap::Args)]
#[command(after_help = "\
Examples:
  weightkit quantize model-f16.gguf model-Q4_K_M.gguf Q4_K_M
  weightkit quantize path/to/hf-model model-Q8_0.gguf Q8_0 --threads 8
  weightkit quantize model-f16.gguf model-IQ4_XS.gguf IQ4_XS --imatrix imatrix.gguf
  weightkit quantize model.gguf out.gguf Q4_K_M --override 'attn_v=q8_0' --override 'ffn_down=q6_k'
  weightkit quantize model.gguf out.gguf Q8_0 --pure --output-tensor-type f16")]
pub(crate) struct Args {
    /// The checkpoint to quantize: a GGUF file, or a Hugging Face
    /// checkpoint (file, shard index or directory) with its config.json
    #[arg(value_name = "IN")]
    input: PathBuf,

    /// The GGUF file to write
    #[arg(value_name = "OUT")]
    output: PathBuf,

    /// The mixture: Q4_K_M, Q8_0, Q5_K_S, IQ4_XS ... (see --help)
    #[arg(value_name = "TYPE", value_parser = parse_mixture)]
    mixture: Mixture,

    #[command(flatten)]
    mix: MixtureArgs,

    /// Threads for quantizing [default: one per CPU]
    #[arg(long, value_name = "N")]
    threads: Option<NonZeroUsize>,

    #[command(flatten)]
    naming: GgufNaming,
}

/// llama-quantize's type-choice flags and the importance matrix, shared by
/// `quantize` and `export`.
#[derive(Debug, clap::Args)]
pub(crate) struct MixtureArgs {
    /// An importance matrix from llama-imatrix (GGUF or legacy .dat)
    #[arg(long, value_name = "FILE")]
    imatrix: Option<PathBuf>,

    /// `PATTERN=TYPE`: tensors whose name matches the regular expression
    /// PATTERN (anywhere in the name, lowercased) get the ggml type TYPE
    /// (llama-quantize's --tensor-type); repeatable, the first match wins
    #[arg(
        long = "override",
        visible_alias = "tensor-type",
        value_name = "PATTERN=TYPE",
        value_parser = parse_override
    )]
    overrides: Vec<Override>,

    /// Every quantizable tensor in TYPE's base type, no mixture rules
    /// (overrides, --output-tensor-type, --token-embedding-type and the
    /// shape fallbacks still apply)
    #[arg(long)]
    pure: bool,

    /// Quantize tensors that are already quantized (quality suffers)
    #[arg(long)]
    allow_requantize: bool,

    /// The ggml type of output.weight (q8_0, f16 ...)
    #[arg(long, value_name = "TYPE", value_parser = parse_ggml_type)]
    output_tensor_type: Option<DType>,

    /// The ggml type of token_embd.weight
    #[arg(long, value_name = "TYPE", value_parser = parse_ggml_type)]
    token_embedding_type: Option<DType>,

    /// Keep output.weight as it is
    #[arg(long)]
    leave_output_tensor: bool,
}

impl MixtureArgs {
    /// The library options for a pass over `plan`'s tensors (GGUF names),
    /// loading the importance matrix; warns on stderr when the matrix has
    /// no entry for any of them. Also returns, for the summary, the matrix
    /// path with the model tensors it has entries for and its entry count.
    pub(crate) fn options(
        &self,
        plan: &Plan,
        model: &str,
    ) -> Result<(QuantizeOptions, Option<ImatrixUse<'_>>), CliError> {
        let imatrix = match &self.imatrix {
            None => None,
            Some(path) => Some(load_imatrix(path)?),
        };
        // How many of the model's tensors the matrix has an entry for.
        let imatrix_use = imatrix.as_ref().map(|m| {
            let used = plan
                .tensors
                .iter()
                .filter(|t| m.get(&t.out.name).is_some())
                .count();
            (used, m.len())
        });
        if let (Some(path), Some((0, entries))) = (&self.imatrix, imatrix_use)
            && entries > 0
        {
            let example = imatrix
                .as_ref()
                .and_then(|m| m.names().next())
                .unwrap_or_default();
            let mut err = io::stderr().lock();
            writeln!(
                err,
                "warning: the importance matrix {} has no entry for any tensor of {model} \
                 (its {entries} entries are named like `{example}`); it changes no tensor",
                path.display()
            )?;
        }
        let opts = QuantizeOptions {
            choice: mixture::Options {
                pure: self.pure,
                overrides: self
                    .overrides
                    .iter()
                    .map(|Override(r, t)| (r.clone(), *t))
                    .collect(),
                output_tensor_type: self.output_tensor_type,
                token_embedding_type: self.token_embedding_type,
                allow_requantize: self.allow_requantize,
                leave_output_tensor: self.leave_output_tensor,
                // quantize_plan sets it from the matrix.
                has_imatrix: false,
            },
            imatrix,
        };
        Ok((opts, self.imatrix.as_deref().zip(imatrix_use)))
    }
}

/// The importance matrix's path, the model tensors it has entries for and
/// its entry count.
pub(crate) type ImatrixUse<'a> = (&'a Path, (usize, usize));

/// A thread pool of `threads` threads (default: one per CPU).
pub(crate) fn thread_pool(threads: Option<NonZeroUsize>) -> Result<rayon::ThreadPool, CliError> {
    let mut b = rayon::ThreadPoolBuilder::new();
    if let Some(n) = threads {
        b = b.num_threads(n.get());
    }
    b.build().map_err(|e| CliError::Run {
        what: Some("cannot start the worker threads".to_owned()),
        source: Box::new(e),
        hint: None,
    })
}

/// `--name` and `--pre`: what a Hugging Face input's GGUF metadata gets
/// (shared by `quantize` and `export`).
#[derive(Debug, clap::Args)]
pub(crate) struct GgufNaming {
    /// Hugging Face input only: `general.name` [default: the model directory's
    /// name]
    #[arg(long, value_name = "NAME")]
    name: Option<String>,

    /// Hugging Face input only: `tokenizer.ggml.pre` for a byte-level BPE
    /// tokenizer (llama-bpe, qwen2 ...) [default: from tokenizer.json]
    #[arg(long, value_name = "PRE")]
    pre: Option<String>,
}

impl GgufNaming {
    /// The GGUF plan for `model`: the identity for a GGUF input (whose
    /// metadata is kept: `--name`/`--pre` are then refused), else the
    /// Hugging Face -> GGUF plan with these names.
    pub(crate) fn plan(&self, model: &Model, in_text: &str) -> Result<Plan, CliError> {
        if model.format() == Format::Gguf {
            for (flag, given) in [("--name", &self.name), ("--pre", &self.pre)] {
                if given.is_some() {
                    return Err(CliError::Usage(format!(
                        "{flag} applies to a Hugging Face input, but {in_text} is GGUF \
                         (its metadata is kept)"
                    )));
                }
            }
        }
        let plan = if model.format() == Format::Gguf {
            identity_plan(model, None)
        } else {
            hf_to_gguf_plan(model, &self.options())
        };
        plan.map_err(|e| io_error(format!("cannot plan the GGUF layout of {in_text}"), e))
    }

    /// The library's plan options.
    pub(crate) fn options(&self) -> GgufPlanOptions {
        GgufPlanOptions {
            dtype: None,
            name: self.name.clone(),
            pre: self.pre.clone(),
        }
    }
}

/// One `--override`, parsed.
#[derive(Clone, Debug)]
struct Override(Regex, DType);

pub(crate) fn parse_mixture(s: &str) -> Result<Mixture, MixtureError> {
    Mixture::from_name(s)
}

fn parse_override(s: &str) -> Result<Override, MixtureError> {
    mixture::parse_override(s).map(|(r, t)| Override(r, t))
}

fn parse_ggml_type(s: &str) -> Result<DType, String> {
    DType::from_ggml_name(s).ok_or_else(|| {
        format!("unknown ggml type `{s}` (f32, f16, bf16, q8_0, q6_k, q4_k, q5_0 ...)")
    })
}

pub(crate) fn run(args: &Args) -> Result<(), CliError> {
    let start = Instant::now();
    let model = open_input(&args.input)?;
    refuse_overwriting_input(&model, &args.output, false)?;
    let in_text = args.input.display().to_string();

    let from = model.format();
    let plan = args.naming.plan(&model, &in_text)?;

    let (opts, imatrix_use) = args.mix.options(&plan, &in_text)?;

    let pool = thread_pool(args.threads)?;
    let threads = pool.current_num_threads();
    let bytes_in = planned_bytes_in(&model, &plan);
    let spinner = Spinner::start(format!(
        "quantizing {} tensors ({}) to {} as {} on {threads} thread{}",
        thousands(plan.tensors.len() as u64),
        binary_size(bytes_in),
        args.output.display(),
        args.mixture,
        if threads == 1 { "" } else { "s" }
    ));
    let report = pool
        .install(|| {
            quantize_with_progress(&model, plan, &args.output, args.mixture, &opts, &spinner)
        })
        .map_err(|e| io_error(format!("cannot quantize {in_text} as {}", args.mixture), e))?;
    drop(spinner);

    let file_bytes = std::fs::metadata(&args.output).map(|m| m.len()).ok();
    let summary = Summary {
        input: &args.input,
        from,
        output: &args.output,
        mixture: args.mixture,
        report: &report,
        imatrix: imatrix_use,
        file_bytes,
        threads,
        seconds: start.elapsed().as_secs_f64(),
    };
    let mut out = io::stdout().lock();
    summary.write(&mut out)?;
    out.flush()?;
    Ok(())
}

fn load_imatrix(path: &Path) -> Result<ImportanceMatrix, CliError> {
    ImportanceMatrix::load(path).map_err(|e| match e {
        ImatrixError::Io { path, source } => CliError::Read { path, source },
        e => CliError::Run {
            what: Some(format!(
                "cannot read the importance matrix {}",
                path.display()
            )),
            source: Box::new(e),
            hint: None,
        },
    })
}

struct Summary<'a> {
    input: &'a Path,
    from: Format,
    output: &'a Path,
    mixture: Mixture,
    report: &'a QuantizeReport,
    /// The matrix, the model tensors it has entries for, and its entries.
    imatrix: Option<(&'a Path, (usize, usize))>,
    file_bytes: Option<u64>,
    threads: usize,
    seconds: f64,
}

impl Summary<'_> {
    fn write(&self, w: &mut dyn Write) -> io::Result<()> {
        let r = self.report;
        writeln!(
            w,
            "quantized {} ({}) -> {} as {} (general.file_type {})",
            self.input.display(),
            self.from.name(),
            self.output.display(),
            self.mixture,
            self.mixture.ftype()
        )?;
        write_tensor_lines(w, &r.tensors, &r.convert)?;
        if let Some((path, (used, entries))) = self.imatrix {
            writeln!(
                w,
                "  imatrix  {}: entries for {used} tensors of the model ({entries} in the file)",
                path.display()
            )?;
        }
        match self.file_bytes {
            Some(n) => writeln!(
                w,
                "  file     {} ({})",
                self.output.display(),
                bytes_with_unit(n)
            )?,
            None => writeln!(w, "  file     {}", self.output.display())?,
        }
        writeln!(
            w,
            "  time     {} on {} thread{}",
            duration(self.seconds),
            self.threads,
            if self.threads == 1 { "" } else { "s" }
        )
    }
}

/// The summary lines on the output tensors: count per type, bytes read and
/// written, bits per weight.
pub(crate) fn write_tensor_lines(
    w: &mut dyn Write,
    tensors: &[TensorInfo],
    c: &ConvertReport,
) -> io::Result<()> {
    // Per type: tensor count; most common first, then by name.
    let mut by_type: BTreeMap<&'static str, usize> = BTreeMap::new();
    let mut parameters = 0u64;
    for t in tensors {
        *by_type.entry(t.dtype.name()).or_default() += 1;
        parameters += t.elem_count().map_or(0, |n| n as u64);
    }
    let mut types: Vec<(&str, usize)> = by_type.into_iter().collect();
    types.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    let types: Vec<String> = types.iter().map(|(t, n)| format!("{n} {t}")).collect();
    writeln!(
        w,
        "  tensors  {} ({})",
        thousands(tensors.len() as u64),
        types.join(", ")
    )?;
    // Ratios for display only.
    #[allow(clippy::cast_precision_loss)]
    let ratio = if c.bytes_out > 0 {
        format!(" ({:.2}x smaller)", c.bytes_in as f64 / c.bytes_out as f64)
    } else {
        String::new()
    };
    writeln!(
        w,
        "  size     {} -> {}{ratio}",
        bytes_with_unit(c.bytes_in),
        bytes_with_unit(c.bytes_out)
    )?;
    if parameters > 0 {
        #[allow(clippy::cast_precision_loss)]
        let bpw = c.bytes_out as f64 * 8.0 / parameters as f64;
        writeln!(
            w,
            "  bpw      {bpw:.2} bits per weight ({} parameters)",
            thousands(parameters)
        )?;
    }
    Ok(())
}
