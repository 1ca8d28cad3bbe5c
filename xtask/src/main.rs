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
            WEIGHTKIT_SIMD=scalar cargo test -p weightkit-quant
                                      (the quant tests again on the scalar path)
  fmt       format the whole workspace (cargo fmt --all)
  fixtures  regenerate the test data made by scripts in this repository
            (pickle VM corpus, zip archives, fuzz seeds; python3, no torch),
            then show what changed (`git status --short`)
  interop   cross-check against real PyTorch (slow, not in CI): install a
            pinned torch into target/interop-venv with pip, write a
            checkpoint with weightkit's TorchWriter and load it with
            torch.load(weights_only=True), comparing every tensor; also
            writes the torch-made fixtures (testdata/pickle/torch/ holds a
            committed copy) to target/interop/torch-fixtures and PEFT's
            lora_bias adapter (testdata/lora/gpt2-lora-bias/ holds a
            committed copy) to target/interop/gpt2-lora-bias and PEFT's
            add_weighted_adapter results (testdata/lora/combine/) to
            target/interop/combine; then runs
            weightkit's F32/Q8_0/Q4_K_M GGUF of the tiny Llama in llama.cpp
            (llama-cpp-python, pinned; its first install builds llama.cpp,
            ~20 minutes) and compares logits with transformers'; and
            re-saves PEFT adapters with weightkit (testdata/lora basic,
            rank-pattern, dora, and basic as a bf16 adapter_model.bin) and
            checks PEFT gives the same logits with the copies; and runs
            weightkit's GGUF LoRA adapters (basic, rslora) on the F32 GGUF
            in llama.cpp against the merged model (see interop gguf-lora)
  interop lora
            only the PEFT re-save check, with the packages already in
            target/interop-venv (no pip, no llama.cpp)
  interop export
            only the `weightkit export` check, with the venv as it is: the
            tiny Llama + testdata/lora/basic exported to F32, Q8_0 and
            Q4_K_M GGUF, run in llama.cpp, compared with transformers on
            PEFT's merged_reference (also the last step of `interop`)
  interop gguf-lora
            only the GGUF LoRA check, with the packages already in
            target/interop-venv: `weightkit adapter export-gguf` of
            testdata/lora basic and rslora, applied by llama.cpp to the tiny
            Llama's F32 GGUF (lora_path), must give the logits of the merged
            model (`weightkit merge` then `weightkit convert`) within 1e-3;
            llama.cpp's converter's own rslora file is shown to be off
  quant-perf
            quantization speed against llama.cpp on this machine (slow, not
            in CI): compiles llama.cpp's tests/test-quantize-perf.cpp from the
            pinned llama-cpp-python sources against the ggml libraries that
            `cargo xtask interop` installed, runs it and weightkit-quant's
            `speed` example in alternating rounds and prints GB/s and ratios;
            then the `ggml_inproc` example times the same kernels against
            ggml's own in one process (dlopen of those libraries), and
            `ggml_matvec` weightkit's matvec against ggml_mul_mat; all again
            against ggml built by cmake for this CPU (GGML_NATIVE=ON, what a
            llama.cpp user's cmake build gives; pinned cmake/ninja from PyPI,
            xtask/interop/build_ggml_native.py)
  export-bench [--small] [--stand-in] [--only chain|weightkit]
            shipping a LoRA-finetuned model to llama.cpp, timed on this
            machine (slow, not in CI; needs target/interop-venv): generates
            once under target/export-bench/ a random bf16 Llama with
            TinyLlama-1.1B's shape (--small: ~125M parameters) and a PEFT LoRA
            adapter (r=16 on q,k,v,o,gate,up,down), then runs the usual chain
            (PEFT merge_and_unload + save_pretrained, llama.cpp's
            convert_hf_to_gguf.py --outtype f16, llama-quantize Q4_K_M, built
            from the pinned llama-cpp-python sources) and weightkit's one pass
            `weightkit export BASE --adapter DIR --quant Q4_K_M -o OUT`,
            each step a subprocess, and prints wall time and peak RSS per
            step and in total, the ratios, and whether both GGUFs have the
            same tensors (results JSON in target/export-bench/).
            WEIGHTKIT_EXPORT_CMD replaces the weightkit command (placeholders
            {weightkit} {base} {adapter} {out} {tmp}); --stand-in times
            `weightkit merge` + `weightkit quantize` instead, labelled so;
            --only runs one side
  help      print this message
";

/// The torch version `cargo xtask interop` installs (the fixtures' version).
const TORCH_VERSION: &str = "2.15.0";
/// The safetensors version `cargo xtask interop` installs.
const SAFETENSORS_VERSION: &str = "0.8.0";
/// The transformers version `cargo xtask interop` installs (the fixtures').
const TRANSFORMERS_VERSION: &str = "5.24.0";
/// The PEFT version `cargo xtask interop` installs (the fixtures').
const PEFT_VERSION: &str = "0.21.2";
/// The llama-cpp-python version `cargo xtask interop` installs (its source
/// distribution builds llama.cpp: about 20 minutes on 2 cores, once).
const LLAMA_CPP_PYTHON_VERSION: &str = "0.3.36";

/// Scripts that regenerate committed test data, run from the workspace root.
const FIXTURE_SCRIPTS: &[&str] = &[
    "testdata/pickle/vm/make_pickles.py",
    "testdata/pickle/zip/make_zips.py",
    "fuzz/seeds/make_seeds.py",
];

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
    &["test", "-p", "weightkit-quant"],
];

/// Environment for each CI step (same order as [`CI_STEPS`]): the last step
/// reruns the quantization tests with SIMD dispatch forced off.
const CI_ENV: &[Option<(&str, &str)>] = &[None, None, None, Some(("WEIGHTKIT_SIMD", "scalar"))];

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
        Some("fixtures") if args.len() == 1 => fixtures(),
        Some("interop") if args.len() == 1 => interop(),
        Some("interop") if args.len() == 2 && args[1] == "lora" => interop_lora(),
        Some("interop") if args.len() == 2 && args[1] == "gguf-lora" => interop_gguf_lora(),
        Some("interop") if args.len() == 2 && args[1] == "export" => interop_export(),
        Some("quant-perf") if args.len() == 1 => quant_perf(),
        Some("export-bench") => export_bench(&args[1..]),
        Some(cmd @ ("ci" | "fmt" | "fixtures" | "interop" | "quant-perf")) => Err(Failure::Usage(
            format!("`{cmd}` takes no arguments, got `{}`", args[1..].join(" ")),
        )),
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
        let env = CI_ENV.get(i).copied().flatten();
        run_cargo_env(step, env).map_err(|e| match e {
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

/// Regenerates script-made test data and shows what changed.
fn fixtures() -> Result<(), Failure> {
    for script in FIXTURE_SCRIPTS {
        run("python3", &[script])?;
    }
    run(
        "git",
        &["status", "--short", "--", "testdata", "fuzz/seeds"],
    )
}

/// Cross-checks against the real tools: torch loads weightkit's checkpoint,
/// llama.cpp runs weightkit's GGUFs, PEFT regenerates the lora_bias fixture.
fn interop() -> Result<(), Failure> {
    let root = workspace_root();
    let venv = root.join("target/interop-venv");
    let python = venv.join("bin/python");
    if !python.exists() {
        run("python3", &["-m", "venv", &venv.to_string_lossy()])?;
    }
    let py = python.to_string_lossy().into_owned();
    run(
        &py,
        &[
            "-m",
            "pip",
            "install",
            "--quiet",
            &format!("torch=={TORCH_VERSION}"),
            &format!("safetensors=={SAFETENSORS_VERSION}"),
            &format!("transformers=={TRANSFORMERS_VERSION}"),
            &format!("peft=={PEFT_VERSION}"),
            &format!("llama-cpp-python=={LLAMA_CPP_PYTHON_VERSION}"),
            "numpy",
        ],
    )?;
    let out = root.join("target/interop");
    std::fs::create_dir_all(&out).map_err(|e| Failure::Step(format!("{}: {e}", out.display())))?;
    let out_s = out.to_string_lossy().into_owned();
    run_cargo(&[
        "run",
        "--quiet",
        "-p",
        "weightkit-pickle",
        "--example",
        "interop_write",
        "--",
        &out_s,
    ])?;
    run(&py, &["xtask/interop/check_torch.py", &out_s])?;
    // The torch-written fixtures under testdata/pickle/torch/ come from here.
    run(
        &py,
        &[
            "xtask/interop/make_torch_fixtures.py",
            "target/interop/torch-fixtures",
        ],
    )?;
    // testdata/lora/gpt2-lora-bias/ holds a committed copy.
    run(
        &py,
        &["xtask/interop/make_lora_bias_fixture.py", "target/interop"],
    )?;
    // testdata/lora/combine/ holds a committed copy.
    run(
        &py,
        &[
            "xtask/interop/make_lora_combine_fixture.py",
            "target/interop",
        ],
    )?;
    llama_cpp(&root, &py)?;
    lora_resave(&root, &py)?;
    gguf_lora(&root, &py)?;
    export(&root, &py)
}

/// The interop venv's python, which `cargo xtask interop` creates.
fn existing_venv_python(root: &Path) -> Result<String, Failure> {
    let python = root.join("target/interop-venv/bin/python");
    if !python.exists() {
        return Err(Failure::Step(format!(
            "{} is missing; run `cargo xtask interop` once to create the venv",
            python.display()
        )));
    }
    Ok(python.to_string_lossy().into_owned())
}

/// `cargo xtask interop lora`: [`lora_resave`] with the venv as it is.
fn interop_lora() -> Result<(), Failure> {
    let root = workspace_root();
    lora_resave(&root, &existing_venv_python(&root)?)
}

/// `cargo xtask interop gguf-lora`: [`gguf_lora`] with the venv as it is.
fn interop_gguf_lora() -> Result<(), Failure> {
    let root = workspace_root();
    gguf_lora(&root, &existing_venv_python(&root)?)
}

/// `cargo xtask interop export`: [`export`] with the venv as it is.
fn interop_export() -> Result<(), Failure> {
    let root = workspace_root();
    export(&root, &existing_venv_python(&root)?)
}

/// Exports the tiny Llama + `testdata/lora/basic` with `weightkit export`
/// (F32, Q8_0, Q4_K_M), runs the files in llama.cpp and compares them with
/// transformers running PEFT's own merge (`merged_reference.safetensors`).
fn export(root: &Path, py: &str) -> Result<(), Failure> {
    let dir = root.join("target/interop/export");
    let io = |e: std::io::Error| Failure::Step(format!("{}: {e}", dir.display()));
    if dir.exists() {
        std::fs::remove_dir_all(&dir).map_err(io)?;
    }
    let base = dir.join("base");
    tiny_llama_dir(root, &base, true)?;
    let peft = dir.join("peft-merged");
    tiny_llama_dir(root, &peft, false)?;
    std::fs::copy(
        root.join("testdata/lora/basic/merged_reference.safetensors"),
        peft.join("model.safetensors"),
    )
    .map_err(io)?;
    let s = |p: PathBuf| p.to_string_lossy().into_owned();
    let adapter = s(root.join("testdata/lora/basic"));
    for (file, quant, extra) in [
        ("f32.gguf", "F32", &[][..]),
        // 172-wide ffn_down rows have no Q8_0 fallback (nor in llama-quantize).
        ("q8_0.gguf", "Q8_0", &["--override", "ffn_down=f16"][..]),
        ("q4_k_m.gguf", "Q4_K_M", &[][..]),
    ] {
        let out = s(dir.join(file));
        let mut args = vec![
            "run",
            "--quiet",
            "--release",
            "-p",
            "weightkit-cli",
            "--",
            "export",
        ];
        let base_s = s(base.clone());
        args.extend([
            base_s.as_str(),
            "--adapter",
            &adapter,
            "--quant",
            quant,
            "-o",
            &out,
        ]);
        args.extend(extra);
        run_cargo(&args)?;
    }
    run(py, &["xtask/interop/check_export.py", &s(dir)])
}

/// Copies the tiny Llama (F32 safetensors) and a Llama-3 tokenizer into
/// `model` (llama.cpp needs a vocabulary to run it), leaving out
/// `model.safetensors` when `weights` is false.
fn tiny_llama_dir(root: &Path, model: &Path, weights: bool) -> Result<(), Failure> {
    let io = |e: std::io::Error| Failure::Step(format!("{}: {e}", model.display()));
    std::fs::create_dir_all(model).map_err(io)?;
    for from in [
        "testdata/tiny-llama/safetensors-f32",
        "testdata/arch/tok-llama3",
    ] {
        for entry in std::fs::read_dir(root.join(from)).map_err(io)? {
            let entry = entry.map_err(io)?;
            if !weights && entry.file_name() == "model.safetensors" {
                continue;
            }
            std::fs::copy(entry.path(), model.join(entry.file_name())).map_err(io)?;
        }
    }
    Ok(())
}

/// Exports PEFT adapters with `weightkit adapter export-gguf`, runs them
/// in llama.cpp on the tiny Llama's F32 GGUF and compares with the model
/// merged by `weightkit merge` and converted by `weightkit convert`.
fn gguf_lora(root: &Path, py: &str) -> Result<(), Failure> {
    let dir = root.join("target/interop/gguf-lora");
    let io = |e: std::io::Error| Failure::Step(format!("{}: {e}", dir.display()));
    if dir.exists() {
        std::fs::remove_dir_all(&dir).map_err(io)?;
    }
    let model = dir.join("model");
    tiny_llama_dir(root, &model, true)?;
    let s = |p: PathBuf| p.to_string_lossy().into_owned();
    let cli = ["run", "--quiet", "--release", "-p", "weightkit-cli", "--"];
    let convert = |from: PathBuf, to: PathBuf| {
        run_cargo(&[&cli[..], &["convert", &s(from), &s(to)]].concat())
    };
    convert(model.clone(), dir.join("base.gguf"))?;
    for name in ["basic", "rslora"] {
        let adapter = s(root.join("testdata/lora").join(name));
        run_cargo(
            &[
                &cli[..],
                &[
                    "adapter",
                    "export-gguf",
                    &adapter,
                    "--base",
                    &s(model.clone()),
                    "-o",
                    &s(dir.join(format!("{name}.gguf"))),
                ],
            ]
            .concat(),
        )?;
        let merged = dir.join(format!("merged-{name}"));
        tiny_llama_dir(root, &merged, false)?;
        run_cargo(
            &[
                &cli[..],
                &[
                    "merge",
                    &s(model.clone()),
                    &adapter,
                    "-o",
                    &s(merged.join("model.safetensors")),
                ],
            ]
            .concat(),
        )?;
        convert(merged, dir.join(format!("merged-{name}.gguf")))?;
    }
    run(
        py,
        &[
            "xtask/interop/check_gguf_lora.py",
            &s(dir),
            "testdata/lora/gguf/rslora-f32.gguf",
        ],
    )
}

/// Re-saves PEFT adapters with weightkit's `Adapter::save` (the
/// `interop_resave` example) and has PEFT load both copies onto the tiny
/// Llama: the logits, LoRA weights, dtypes and configs must be equal.
fn lora_resave(root: &Path, py: &str) -> Result<(), Failure> {
    let dir = root.join("target/interop/lora-resave");
    let io = |e: std::io::Error| Failure::Step(format!("{}: {e}", dir.display()));
    if dir.exists() {
        std::fs::remove_dir_all(&dir).map_err(io)?;
    }
    std::fs::create_dir_all(&dir).map_err(io)?;
    let s = |p: PathBuf| p.to_string_lossy().into_owned();
    let script = "xtask/interop/check_lora_resave.py";
    run(py, &[script, "prepare", &s(dir.clone())])?;
    for (name, from) in [
        ("basic", root.join("testdata/lora/basic")),
        ("rank-pattern", root.join("testdata/lora/rank-pattern")),
        ("dora", root.join("testdata/lora/dora")),
        ("basic-bin-bf16", dir.join("src/basic-bin-bf16")),
    ] {
        run_cargo(&[
            "run",
            "--quiet",
            "-p",
            "weightkit-lora",
            "--example",
            "interop_resave",
            "--",
            &s(from),
            &s(dir.join("resaved").join(name)),
        ])?;
    }
    run(py, &[script, "check", &s(dir)])
}

/// llama.cpp's test-quantize-perf next to weightkit's `speed` example.
fn quant_perf() -> Result<(), Failure> {
    let root = workspace_root();
    let python = root.join("target/interop-venv/bin/python");
    if !python.exists() {
        return Err(Failure::Step(
            "target/interop-venv is missing: run `cargo xtask interop` first (it installs \
             llama-cpp-python, whose ggml libraries the benchmark links)"
                .to_owned(),
        ));
    }
    run_cargo(&[
        "build",
        "--quiet",
        "--release",
        "-p",
        "weightkit-quant",
        "--example",
        "speed",
    ])?;
    let speed = root.join("target/release/examples/speed");
    // The build cmake's defaults give a llama.cpp user: -march=native.
    let native = output(
        &python.to_string_lossy(),
        &[
            "xtask/interop/build_ggml_native.py",
            LLAMA_CPP_PYTHON_VERSION,
            "target/qperf",
        ],
    )?;
    let native = native.trim();
    for lib in [None, Some(native)] {
        let mut args = vec![
            "xtask/interop/quant_perf.py",
            LLAMA_CPP_PYTHON_VERSION,
            "target/qperf",
        ];
        let speed = speed.to_string_lossy();
        args.extend([&*speed, "3"]);
        if let Some(lib) = lib {
            args.extend(["--ggml-lib", lib]);
        }
        run(&python.to_string_lossy(), &args)?;
    }
    // The same kernels against ggml's in one process (same statistic, no
    // per-call timer reads on llama.cpp's side).
    let libdir = std::fs::read_dir(root.join("target/interop-venv/lib"))
        .map_err(|e| Failure::Step(format!("target/interop-venv/lib: {e}")))?
        .filter_map(Result::ok)
        .map(|e| e.path().join("site-packages/llama_cpp/lib"))
        .find(|p| p.join("libggml-cpu.so").exists())
        .ok_or_else(|| {
            Failure::Step("no llama_cpp/lib/libggml-cpu.so in target/interop-venv".to_owned())
        })?;
    run_cargo(&[
        "build",
        "--quiet",
        "--release",
        "-p",
        "weightkit-quant",
        "--example",
        "ggml_inproc",
        "--example",
        "ggml_matvec",
    ])?;
    let inproc = root.join("target/release/examples/ggml_inproc");
    let matvec = root.join("target/release/examples/ggml_matvec");
    let avx2 = libdir.to_string_lossy();
    for (build, dir) in [
        ("as llama-cpp-python builds it (AVX2)", &*avx2),
        ("built by cmake with GGML_NATIVE=ON (-march=native)", native),
    ] {
        println!("\nggml {build}:\n");
        run(&inproc.to_string_lossy(), &[dir])?;
        // A 4096 x 4096 matrix times a vector: `matvec` against
        // `ggml_mul_mat`, one thread and two.
        println!();
        run(&matvec.to_string_lossy(), &[dir, "41"])?;
    }
    Ok(())
}

/// weightkit's side of `cargo xtask export-bench` by default: one command.
const EXPORT_CMD: &str = "{weightkit} export {base} --adapter {adapter} --quant Q4_K_M -o {out}";

/// `cargo xtask export-bench --stand-in`: the two commands `export` replaces,
/// timed as two steps (the merged directory gets the base's config and
/// tokenizer files, which `quantize` reads).
const STAND_IN_STEPS: &[(&str, &str)] = &[
    (
        "stand-in: weightkit merge",
        "mkdir -p {tmp}/merged && cp {base}/*.json {base}/tokenizer.model {tmp}/merged/ && \
         rm -f {tmp}/merged/model.safetensors.index.json && \
         {weightkit} merge {base} {adapter} -o {tmp}/merged/model.safetensors",
    ),
    (
        "stand-in: weightkit quantize Q4_K_M",
        "{weightkit} quantize {tmp}/merged {out} Q4_K_M",
    ),
];

/// The usual LoRA-to-llama.cpp chain against weightkit's one pass, timed.
fn export_bench(args: &[String]) -> Result<(), Failure> {
    let (mut small, mut stand_in, mut only) = (false, false, None);
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--small" => small = true,
            "--stand-in" => stand_in = true,
            "--only" => match it.next().map(String::as_str) {
                Some(side @ ("chain" | "weightkit")) => only = Some(side),
                _ => {
                    return Err(Failure::Usage(
                        "export-bench: --only takes `chain` or `weightkit`".to_owned(),
                    ));
                }
            },
            other => {
                return Err(Failure::Usage(format!(
                    "export-bench: unknown argument `{other}`"
                )));
            }
        }
    }
    let root = workspace_root();
    let py = existing_venv_python(&root)?;
    let custom = std::env::var("WEIGHTKIT_EXPORT_CMD").ok();
    let steps: Vec<(String, String)> = match (&custom, stand_in) {
        (Some(_), true) => {
            return Err(Failure::Usage(
                "export-bench: WEIGHTKIT_EXPORT_CMD and --stand-in exclude each other".to_owned(),
            ));
        }
        (Some(cmd), false) => vec![("weightkit (WEIGHTKIT_EXPORT_CMD)".to_owned(), cmd.clone())],
        (None, true) => STAND_IN_STEPS
            .iter()
            .map(|(n, c)| ((*n).to_owned(), (*c).to_owned()))
            .collect(),
        (None, false) => vec![("weightkit export".to_owned(), EXPORT_CMD.to_owned())],
    };
    let label = if stand_in {
        "weightkit stand-in (merge + quantize)"
    } else if custom.is_some() {
        "weightkit (custom command)"
    } else {
        "weightkit export"
    };
    if only != Some("chain") {
        run_cargo(&["build", "--quiet", "--release", "-p", "weightkit-cli"])?;
    }
    let weightkit = root.join("target/release/weightkit");
    let weightkit = weightkit.to_string_lossy();
    let mut argv: Vec<String> = [
        "xtask/interop/export_bench.py",
        "run",
        "--llama-cpp-python",
        LLAMA_CPP_PYTHON_VERSION,
        "--work",
        "target/export-bench",
        "--sdist-dir",
        "target/qperf",
        "--shape",
        if small { "small" } else { "full" },
        "--weightkit",
        &weightkit,
        "--label",
        label,
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    for (name, cmd) in &steps {
        argv.push("--step".to_owned());
        argv.push(format!("{name}={cmd}"));
    }
    if let Some(side) = only {
        argv.push("--only".to_owned());
        argv.push(side.to_owned());
    }
    run(&py, &argv.iter().map(String::as_str).collect::<Vec<_>>())
}

/// Converts the tiny Llama (with a Llama-3 tokenizer) to F32, Q8_0 and
/// Q4_K_M GGUF with the weightkit CLI and runs them in llama.cpp.
fn llama_cpp(root: &Path, py: &str) -> Result<(), Failure> {
    let dir = root.join("target/interop/llama-cpp");
    let model = dir.join("model");
    let io = |e: std::io::Error| Failure::Step(format!("{}: {e}", dir.display()));
    if dir.exists() {
        std::fs::remove_dir_all(&dir).map_err(io)?;
    }
    tiny_llama_dir(root, &model, true)?;
    let s = |p: PathBuf| p.to_string_lossy().into_owned();
    let cli = ["run", "--quiet", "--release", "-p", "weightkit-cli", "--"];
    let f32_gguf = s(dir.join("f32.gguf"));
    run_cargo(&[&cli[..], &["convert", &s(model), &f32_gguf]].concat())?;
    // 172-wide ffn_down rows have no Q8_0 fallback (nor in llama-quantize).
    run_cargo(
        &[
            &cli[..],
            &[
                "quantize",
                &f32_gguf,
                &s(dir.join("q8_0.gguf")),
                "q8_0",
                "--override",
                "ffn_down=f16",
            ],
        ]
        .concat(),
    )?;
    run_cargo(
        &[
            &cli[..],
            &["quantize", &f32_gguf, &s(dir.join("q4_k_m.gguf")), "q4_k_m"],
        ]
        .concat(),
    )?;
    run(
        py,
        &[
            "xtask/interop/check_llama_cpp.py",
            &s(dir),
            "testdata/tiny-llama/reference_logits.safetensors",
        ],
    )
}

/// Runs `PROGRAM ARGS` in the workspace root, echoing the command first.
/// [`run`], returning the program's standard output (its standard error
/// goes to ours).
fn output(program: &str, args: &[&str]) -> Result<String, Failure> {
    let shown = format!("{program} {}", args.join(" "));
    eprintln!("xtask: running `{shown}`");
    let out = Command::new(program)
        .args(args)
        .current_dir(workspace_root())
        .stderr(std::process::Stdio::inherit())
        .output()
        .map_err(|e| Failure::Step(format!("could not start `{shown}`: {e}")))?;
    if !out.status.success() {
        return Err(Failure::Step(format!("`{shown}` failed ({})", out.status)));
    }
    String::from_utf8(out.stdout)
        .map_err(|e| Failure::Step(format!("`{shown}` printed non-UTF-8: {e}")))
}

fn run(program: &str, args: &[&str]) -> Result<(), Failure> {
    let shown = format!("{program} {}", args.join(" "));
    eprintln!("xtask: running `{shown}`");
    let status = Command::new(program)
        .args(args)
        .current_dir(workspace_root())
        .status()
        .map_err(|e| Failure::Step(format!("could not start `{shown}`: {e}")))?;
    if !status.success() {
        return Err(Failure::Step(format!("`{shown}` failed ({status})")));
    }
    Ok(())
}

/// Runs `cargo ARGS` in the workspace root, echoing the command first.
fn run_cargo(args: &[&str]) -> Result<(), Failure> {
    run_cargo_env(args, None)
}

/// [`run_cargo`] with one extra environment variable.
fn run_cargo_env(args: &[&str], env: Option<(&str, &str)>) -> Result<(), Failure> {
    let prefix = env.map(|(k, v)| format!("{k}={v} ")).unwrap_or_default();
    let shown = format!("{prefix}cargo {}", args.join(" "));
    eprintln!("xtask: running `{shown}`");
    let start = Instant::now();
    let mut cmd = Command::new(cargo());
    if let Some((k, v)) = env {
        cmd.env(k, v);
    }
    let status = cmd
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
