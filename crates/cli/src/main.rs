//! `weightkit`: the command-line tool.
//!
//! One binary with subcommands. Each subcommand lives in its own module
//! under [`commands`] with a clap `Args` struct and a `run` function; this
//! file only parses the command line, dispatches, and turns an error into
//! one `error: ...` line on stderr and exit code 1 (clap's own usage errors
//! keep clap's exit code 2).
//!
//! `inspect` opens its input through [`source`], which detects the format by
//! magic bytes and hands back a format-independent [`source::Model`] with
//! every header detail; `convert` and `quantize` run `weightkit-io`'s
//! streaming pipeline (`weightkit_io::open`, a plan, one pass); `merge`,
//! `unmerge` and `adapter inspect` load PEFT adapters with `weightkit-lora`
//! and stream the base through its `merge_into` / `unmerge_into`.

mod commands;
mod error;
mod source;
mod units;

use std::io::Write;
use std::process::ExitCode;

use clap::{ArgMatches, CommandFactory, FromArgMatches, Parser, Subcommand};

use crate::error::CliError;

/// Inspect, convert, quantize and merge neural-network weights.
#[derive(Debug, Parser)]
#[command(
    name = "weightkit",
    version,
    propagate_version = true,
    arg_required_else_help = true,
    after_help = "Run `weightkit <COMMAND> --help` for a command's options."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Show a checkpoint's format, size, dtypes, metadata and every tensor
    #[command(long_about = commands::inspect::LONG_ABOUT)]
    Inspect(commands::inspect::Args),
    /// Convert a checkpoint between safetensors, PyTorch, GGUF and Hugging
    /// Face directories
    #[command(long_about = commands::convert::LONG_ABOUT)]
    Convert(commands::convert::Args),
    /// Quantize a checkpoint to GGUF with a llama-quantize mixture (Q4_K_M,
    /// Q8_0 ...)
    #[command(long_about = commands::quantize::LONG_ABOUT)]
    Quantize(commands::quantize::Args),
    /// The lifecycle on a generated model, offline: build, adapt, export,
    /// verify
    #[command(long_about = commands::demo::LONG_ABOUT)]
    Demo(commands::demo::Args),
    /// Base model + LoRA adapters -> one quantized GGUF file, in one pass
    #[command(long_about = commands::export::LONG_ABOUT)]
    Export(commands::export::Args),
    /// Merge PEFT LoRA adapters into a checkpoint
    #[command(long_about = commands::merge::MERGE_LONG_ABOUT)]
    Merge(commands::merge::MergeArgs),
    /// Subtract a merged PEFT LoRA adapter from a checkpoint
    #[command(long_about = commands::merge::UNMERGE_LONG_ABOUT)]
    Unmerge(commands::merge::UnmergeArgs),
    /// Work with PEFT LoRA adapter directories
    #[command(subcommand)]
    Adapter(commands::adapter::AdapterCommand),
}

fn run(cli: Cli, matches: &ArgMatches) -> Result<(), CliError> {
    match cli.command {
        Command::Demo(args) => commands::demo::run(&args),
        Command::Export(args) => {
            let weights = export_weights(matches)?;
            commands::export::run(&args, &weights)
        }
        Command::Inspect(args) => commands::inspect::run(&args),
        Command::Convert(args) => commands::convert::run(&args),
        Command::Quantize(args) => commands::quantize::run(&args),
        Command::Merge(args) => commands::merge::run_merge(&args),
        Command::Unmerge(args) => commands::merge::run_unmerge(&args),
        Command::Adapter(command) => commands::adapter::run(&command),
    }
}

/// `export`'s adapter weights, each paired with the `--adapter` before it
/// by command-line position.
fn export_weights(matches: &ArgMatches) -> Result<Vec<f64>, CliError> {
    let Some(m) = matches.subcommand_matches("export") else {
        return Ok(Vec::new());
    };
    let adapters: Vec<usize> = m
        .indices_of("adapters")
        .map(Iterator::collect)
        .unwrap_or_default();
    let positions = m.indices_of("adapter_weights").into_iter().flatten();
    let values = m
        .get_many::<f64>("adapter_weights")
        .into_iter()
        .flatten()
        .copied();
    let weights: Vec<(usize, f64)> = positions.zip(values).collect();
    commands::export::pair_weights(&adapters, &weights)
}

fn main() -> ExitCode {
    let matches = Cli::command().get_matches();
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    match run(cli, &matches) {
        Ok(()) => ExitCode::SUCCESS,
        // The reader went away (`weightkit inspect big | head`): not an error.
        Err(e) if e.is_broken_pipe() => ExitCode::SUCCESS,
        Err(e) => {
            let line = error::report_cli(&e);
            // Nothing sensible is left to do if stderr itself fails.
            let _ = writeln!(std::io::stderr().lock(), "{line}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clap_definition_is_valid() {
        Cli::command().debug_assert();
    }
}
