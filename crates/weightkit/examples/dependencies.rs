//! A program that depends on two small crates instead of the facade.
//!
//! It uses only `weightkit-safetensors` and `weightkit-quant` (and
//! `weightkit-core`, which both depend on, to name `DType`): no GGUF,
//! PyTorch, LoRA or GEMM code is compiled. It reads a safetensors file and
//! quantizes every matrix whose rows hold whole 32-value blocks to Q8_0 in
//! memory (1-D tensors such as norms stay as they are, as llama.cpp keeps
//! them in f32, and so do matrices with other row lengths), then prints each tensor's size before and after and its
//! round-trip error (RMSE, and RMSE relative to the tensor's RMS).
//!
//! ```sh
//! cargo run --release -p weightkit --example dependencies
//! cargo run --release -p weightkit --example dependencies -- model.safetensors
//! ```
//!
//! Such a program's `Cargo.toml` (git dependencies on the repository; cargo
//! finds each package in its workspace):
//!
//! ```toml
//! [dependencies]
//! weightkit-core = { git = "https://github.com/weightkit/weightkit" }
//! weightkit-safetensors = { git = "https://github.com/weightkit/weightkit" }
//! weightkit-quant = { git = "https://github.com/weightkit/weightkit" }
//! ```
//!
//! (This example lives in the facade's package, so it can run from the
//! repository; its `use` lines name only those three crates.)

use std::error::Error;
use std::path::{Path, PathBuf};

use weightkit_core::{DType, Shape};
use weightkit_quant::{dequantize, quantize};
use weightkit_safetensors::SafetensorsFile;

/// What happened to one tensor.
#[derive(Debug)]
pub(crate) struct TensorReport {
    pub(crate) name: String,
    pub(crate) dtype: DType,
    pub(crate) shape: Shape,
    /// Bytes in the file.
    pub(crate) bytes_in: usize,
    /// Bytes as Q8_0 (or unchanged when not quantized).
    pub(crate) bytes_out: usize,
    /// `Ok((rmse, rmse / rms))` when quantized, else why not.
    pub(crate) error: Result<(f64, f64), &'static str>,
}

/// Quantizes the matrices of the safetensors file at `path` to Q8_0.
pub(crate) fn quantize_file(path: &Path) -> Result<Vec<TensorReport>, Box<dyn Error>> {
    // Memory-mapped and validated; each tensor is a zero-copy view.
    let file = SafetensorsFile::open(path)?;
    let mut reports = Vec::with_capacity(file.tensors().len());
    for info in file.tensors() {
        let view = file.tensor(&info.name)?;
        let row = info.shape.row_len();
        let mut report = TensorReport {
            name: info.name.clone(),
            dtype: info.dtype,
            shape: info.shape.clone(),
            bytes_in: view.data().len(),
            bytes_out: view.data().len(),
            error: Err("1-D"),
        };
        if info.shape.rank() >= 2 && (row == 0 || row % DType::Q8_0.block_elems() != 0) {
            // As llama.cpp, which falls back to another type for such rows.
            report.error = Err("rows not whole 32-value blocks");
        } else if info.shape.rank() >= 2 {
            let x = view.to_f32_vec()?; // any float dtype, widened once
            let q = quantize(DType::Q8_0, &x, row, None)?;
            let mut y = vec![0f32; x.len()];
            dequantize(DType::Q8_0, &q, &mut y)?;
            let n = x.len().max(1) as f64;
            let err = x.iter().zip(&y).map(|(a, b)| f64::from(a - b).powi(2));
            let rmse = (err.sum::<f64>() / n).sqrt();
            let rms = (x.iter().map(|a| f64::from(*a).powi(2)).sum::<f64>() / n).sqrt();
            report.bytes_out = q.len();
            report.error = Ok((rmse, rmse / rms.max(f64::MIN_POSITIVE)));
        }
        reports.push(report);
    }
    Ok(reports)
}

fn main() -> Result<(), Box<dyn Error>> {
    let path = match std::env::args_os().nth(1) {
        Some(p) => PathBuf::from(p),
        None => Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../testdata/tiny-llama/safetensors-f32/model.safetensors"),
    };
    println!("{}\n", path.display());
    let reports = quantize_file(&path)?;
    println!("| tensor | dtype | shape | bytes | Q8_0 bytes | RMSE | relative RMSE |");
    println!("|---|---|---|---|---|---|---|");
    for r in &reports {
        let (q8, rmse, rel) = match r.error {
            Ok((rmse, rel)) => (
                r.bytes_out.to_string(),
                format!("{rmse:.2e}"),
                format!("{rel:.2e}"),
            ),
            Err(why) => (format!("kept ({why})"), "-".into(), "-".into()),
        };
        println!(
            "| {} | {} | {} | {} | {q8} | {rmse} | {rel} |",
            r.name, r.dtype, r.shape, r.bytes_in
        );
    }
    let before: usize = reports.iter().map(|r| r.bytes_in).sum();
    let after: usize = reports.iter().map(|r| r.bytes_out).sum();
    let worst = reports
        .iter()
        .filter_map(|r| r.error.ok().map(|(_, rel)| rel))
        .fold(0f64, f64::max);
    println!(
        "\n{} tensors, {} quantized: {before} -> {after} bytes ({:.1}%), worst relative RMSE {worst:.2e}",
        reports.len(),
        reports.iter().filter(|r| r.error.is_ok()).count(),
        100.0 * after as f64 / before.max(1) as f64
    );
    Ok(())
}
