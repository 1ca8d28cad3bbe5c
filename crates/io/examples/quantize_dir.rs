//! Quantizes a Hugging Face model directory (or any checkpoint) to GGUF
//! with a llama-quantize mixture, from library code.
//!
//! Usage: `cargo run --release -p weightkit-io --example quantize_dir -- IN OUT.gguf Q4_K_M`
//! (`F32`, `F16` or `BF16` as the mixture gives a plain conversion).

use std::path::PathBuf;

use weightkit_io::mixture::Mixture;
use weightkit_io::plan::{GgufPlanOptions, hf_to_gguf_plan};
use weightkit_io::quantize::{QuantizeOptions, quantize_with_plan};
use weightkit_io::{Format, convert, open};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let input = PathBuf::from(
        args.next()
            .ok_or("usage: quantize_dir IN OUT.gguf MIXTURE")?,
    );
    let output = PathBuf::from(
        args.next()
            .ok_or("usage: quantize_dir IN OUT.gguf MIXTURE")?,
    );
    let mixture = Mixture::from_name(&args.next().unwrap_or_else(|| "Q4_K_M".into()))?;
    let model = open(&input)?;
    let plan = if model.format() == Format::Gguf {
        convert::identity_plan(&model, None)?
    } else {
        hf_to_gguf_plan(&model, &GgufPlanOptions::default())?
    };
    let report = quantize_with_plan(&model, plan, &output, mixture, &QuantizeOptions::default())?;
    let params: u64 = report
        .tensors
        .iter()
        .map(|t| t.elem_count().unwrap_or(0) as u64)
        .sum();
    println!(
        "{} tensors, {} -> {} bytes, {:.2} bits per weight, {:.1} s",
        report.tensors.len(),
        report.convert.bytes_in,
        report.convert.bytes_out,
        report.convert.bytes_out as f64 * 8.0 / params.max(1) as f64,
        report.convert.seconds
    );
    Ok(())
}
