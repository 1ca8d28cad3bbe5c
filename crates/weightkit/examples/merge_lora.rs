//! Merging a PEFT LoRA adapter from library code, checked against PEFT.
//!
//! Opens the tiny Llama checkpoint kept in the repository
//! (`testdata/tiny-llama/safetensors-f32`), loads the PEFT adapter
//! `testdata/lora/basic` with `Adapter::open`, merges it with `merge_lora`
//! into a temporary safetensors file, then compares every tensor with
//! `testdata/lora/basic/merged_reference.safetensors`, which PEFT 0.21.2's
//! `merge_and_unload` wrote for the same base and adapter. It prints the
//! largest absolute difference and the largest difference relative to the
//! reference tensor's largest magnitude, per merged tensor and overall, and
//! exits with status 1 if a relative difference exceeds 1e-5 (or a tensor is
//! missing, renamed or reshaped).
//!
//! ```sh
//! cargo run --release -p weightkit --example merge_lora
//! # or your own files:
//! cargo run --release -p weightkit --example merge_lora -- BASE ADAPTER_DIR PEFT_MERGED
//! ```
//!
//! To write GGUF or PyTorch instead, create that format's writer with
//! `base.tensor_infos()` and pass it to `weightkit::merge_into`, which takes
//! any `TensorSink` (and several weighted adapters).

use std::error::Error;
use std::path::{Path, PathBuf};

use weightkit::{Adapter, MergeOptions, Source, merge_lora};

/// The largest relative difference accepted (PEFT merges in f32 too, in
/// another order; the fixtures agree to about 1e-7).
pub(crate) const MAX_RELATIVE: f32 = 1e-5;

/// How one output tensor compares with the reference.
#[derive(Debug)]
pub(crate) struct TensorDiff {
    pub(crate) name: String,
    /// Whether the adapter changed it (else it was copied).
    pub(crate) merged: bool,
    pub(crate) max_abs: f32,
    /// `max_abs` over the reference tensor's largest magnitude.
    pub(crate) relative: f32,
}

/// The repository's testdata directory.
pub(crate) fn testdata() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testdata")
}

/// Merges `adapter_dir` into `base` (a temporary file, deleted on return)
/// and compares every tensor with `reference`.
pub(crate) fn merge_and_compare(
    base: &Path,
    adapter_dir: &Path,
    reference: &Path,
) -> Result<Vec<TensorDiff>, Box<dyn Error>> {
    let base = weightkit::open(base)?;
    let adapter = Adapter::open(adapter_dir)?;
    let dir = tempfile::tempdir()?;
    let out = dir.path().join("merged.safetensors");
    let report = merge_lora(base.source(), &adapter, &out, &MergeOptions::default())?;

    let ours = weightkit::open(&out)?;
    let reference = weightkit::open(reference)?;
    let (ours, theirs) = (ours.source(), reference.source());
    if ours.tensor_infos().len() != theirs.tensor_infos().len() {
        return Err(format!(
            "{} tensors merged, the reference has {}",
            ours.tensor_infos().len(),
            theirs.tensor_infos().len()
        )
        .into());
    }
    let mut diffs = Vec::with_capacity(ours.tensor_infos().len());
    for (i, info) in ours.tensor_infos().iter().enumerate() {
        let j = theirs
            .position(&info.name)
            .ok_or_else(|| format!("{} is not in the reference", info.name))?;
        if theirs.tensor_infos()[j].shape != info.shape {
            return Err(format!(
                "{}: shape {} here, {} in the reference",
                info.name,
                info.shape,
                theirs.tensor_infos()[j].shape
            )
            .into());
        }
        let a = f32s(ours, i)?;
        let b = f32s(theirs, j)?;
        let scale = b
            .iter()
            .fold(0f32, |m, v| m.max(v.abs()))
            .max(f32::MIN_POSITIVE);
        let max_abs = a
            .iter()
            .zip(&b)
            .fold(0f32, |m, (x, y)| m.max((x - y).abs()));
        diffs.push(TensorDiff {
            name: info.name.clone(),
            merged: report.merged.contains(&info.name),
            max_abs,
            relative: max_abs / scale,
        });
    }
    Ok(diffs)
}

fn f32s(source: &dyn Source, i: usize) -> Result<Vec<f32>, Box<dyn Error>> {
    Ok(source.load(i)?.view().to_f32_vec()?)
}

fn main() -> Result<(), Box<dyn Error>> {
    let args: Vec<PathBuf> = std::env::args_os().skip(1).map(PathBuf::from).collect();
    let lora = testdata().join("lora/basic");
    let (base, adapter, reference) = match args.as_slice() {
        [] => (
            testdata().join("tiny-llama/safetensors-f32"),
            lora.clone(),
            lora.join("merged_reference.safetensors"),
        ),
        [b, a, r] => (b.clone(), a.clone(), r.clone()),
        _ => return Err("usage: merge_lora [BASE ADAPTER_DIR PEFT_MERGED]".into()),
    };
    println!("base      {}", base.display());
    println!("adapter   {}", adapter.display());
    println!("reference {}", reference.display());

    let start = std::time::Instant::now();
    let diffs = merge_and_compare(&base, &adapter, &reference)?;
    let secs = start.elapsed().as_secs_f64();

    println!("\n| merged tensor | max abs diff | relative |");
    println!("|---|---|---|");
    for d in diffs.iter().filter(|d| d.merged) {
        println!("| {} | {:.3e} | {:.3e} |", d.name, d.max_abs, d.relative);
    }
    let copied = diffs.iter().filter(|d| !d.merged).collect::<Vec<_>>();
    let copied_abs = copied.iter().fold(0f32, |m, d| m.max(d.max_abs));
    println!(
        "\n{} tensors merged, {} copied (max abs diff {copied_abs:.3e}); merge + compare {:.0} ms",
        diffs.len() - copied.len(),
        copied.len(),
        secs * 1e3
    );
    let worst = diffs
        .iter()
        .max_by(|a, b| a.relative.total_cmp(&b.relative))
        .ok_or("no tensors")?;
    let identical = diffs.iter().filter(|d| d.max_abs == 0.0).count();
    println!(
        "overall: max abs diff {:.3e}, max relative {:.3e} ({}); {identical} of {} tensors bit-identical; limit {MAX_RELATIVE:e}",
        diffs.iter().fold(0f32, |m, d| m.max(d.max_abs)),
        worst.relative,
        if worst.relative > 0.0 {
            worst.name.as_str()
        } else {
            "all"
        },
        diffs.len()
    );
    if worst.relative > MAX_RELATIVE {
        eprintln!("FAIL: {} differs from the reference", worst.name);
        std::process::exit(1);
    }
    println!("OK: equal to PEFT's merge within {MAX_RELATIVE:e}");
    Ok(())
}
