//! `weightkit adapter ...`: commands on PEFT adapter directories.
//!
//! `adapter inspect` loads the adapter through `weightkit-lora` (so what it
//! shows is what a merge would apply: ranks and scalings after
//! `rank_pattern` / `alpha_pattern` and rsLoRA) and prints a summary or
//! `--json`.

use std::io::{self, Write};
use std::path::PathBuf;

use serde_json::{Value, json};
use weightkit_lora::{Adapter, TargetModules};

use super::merge::load_adapter;
use crate::error::CliError;
use crate::units::thousands;

/// Subcommands of `weightkit adapter`.
#[derive(Debug, clap::Subcommand)]
pub(crate) enum AdapterCommand {
    /// Show a PEFT adapter's config and, per adapted module, its rank and
    /// scaling
    #[command(long_about = INSPECT_LONG_ABOUT)]
    Inspect(InspectArgs),
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
    }
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
