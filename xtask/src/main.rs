//! `cargo xtask`: the workspace's development tasks, one binary with
//! subcommands (the alias lives in `.cargo/config.toml`).
//!
//! It depends on `std` alone so that `cargo xtask` compiles in a moment on a
//! clean clone, and it shells out to the same `cargo` that started it. CI
//! runs `cargo xtask ci`; a developer runs the same command to reproduce CI
//! locally.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::Instant;

/// Usage text for `cargo xtask help`.
const USAGE: &str = "\
usage: cargo xtask <command>

commands:
  ci      run every check CI runs, in order, stopping at the first failure:
            cargo fmt --all -- --check
            cargo clippy --workspace --all-targets -- -D warnings
            cargo test --workspace    (unit, integration and doc tests)
  fmt     format the whole workspace (cargo fmt --all)
  help    print this message
";

/// The checks `cargo xtask ci` runs, in order: the arguments to `cargo`.
///
/// `cargo test` without target flags builds and runs libraries, binaries,
/// examples, integration tests and doc tests but not benches; `--all-targets`
/// would add benches and drop the doc tests, so it is deliberately absent.
const CI_STEPS: &[&[&str]] = &[
    &["fmt", "--all", "--", "--check"],
    &[
        "clippy",
        "--workspace",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ],
    &["test", "--workspace"],
];

/// Why a task stopped.
#[derive(Debug)]
enum Failure {
    /// The subcommand is not one we know.
    Usage(String),
    /// A command could not be started or exited unsuccessfully.
    Step(String),
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        None | Some("help" | "-h" | "--help") => {
            print!("{USAGE}");
            Ok(())
        }
        Some("ci") if args.len() == 1 => ci(),
        Some("fmt") if args.len() == 1 => run_cargo(&["fmt", "--all"]),
        Some(cmd @ ("ci" | "fmt")) => Err(Failure::Usage(format!(
            "`{cmd}` takes no arguments, got `{}`",
            args[1..].join(" ")
        ))),
        Some(other) => Err(Failure::Usage(format!("unknown command `{other}`"))),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Usage(msg)) => {
            eprintln!("xtask: {msg}\n\n{USAGE}");
            ExitCode::from(2)
        }
        Err(Failure::Step(msg)) => {
            eprintln!("xtask: error: {msg}");
            ExitCode::FAILURE
        }
    }
}

/// Runs every CI step in order, stopping at the first failure.
fn ci() -> Result<(), Failure> {
    let start = Instant::now();
    for (i, step) in CI_STEPS.iter().enumerate() {
        eprintln!("xtask: ci step {}/{}", i + 1, CI_STEPS.len());
        run_cargo(step).map_err(|e| match e {
            Failure::Step(msg) => Failure::Step(format!("{msg}; ci stopped at this step")),
            other => other,
        })?;
    }
    eprintln!(
        "xtask: ci passed ({} steps in {:.1}s)",
        CI_STEPS.len(),
        start.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Runs `cargo ARGS` in the workspace root, echoing the command first.
fn run_cargo(args: &[&str]) -> Result<(), Failure> {
    let shown = format!("cargo {}", args.join(" "));
    eprintln!("xtask: running `{shown}`");
    let start = Instant::now();
    let status = Command::new(cargo())
        .args(args)
        .current_dir(workspace_root())
        .status()
        .map_err(|e| Failure::Step(format!("could not start `{shown}`: {e}")))?;
    if !status.success() {
        let how = match status.code() {
            Some(code) => format!("exit code {code}"),
            None => "killed by a signal".to_owned(),
        };
        return Err(Failure::Step(format!("`{shown}` failed ({how})")));
    }
    eprintln!(
        "xtask: `{shown}` ok ({:.1}s)",
        start.elapsed().as_secs_f64()
    );
    Ok(())
}

/// The `cargo` that started us (cargo sets `CARGO`), else `cargo` on `PATH`.
fn cargo() -> OsString {
    std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into())
}

/// The workspace root: the parent of this package's directory.
fn workspace_root() -> PathBuf {
    let manifest_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest_dir.parent().unwrap_or(manifest_dir).to_path_buf()
}
