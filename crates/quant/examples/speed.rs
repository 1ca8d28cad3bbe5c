//! Rough single-thread timings of quantize / dequantize per type on
//! llama.cpp's test-quantize-perf input (for quick checks; the criterion
//! benches in `benches/` are the reference measurement).
//!
//! Usage: `cargo run --release -p weightkit-quant --example speed`

use std::time::Instant;

use weightkit_core::DType;
use weightkit_quant::{dequantize, quantize_into, row_size};

fn main() -> Result<(), weightkit_quant::QuantError> {
    let n = 4096usize;
    let rows = 64usize;
    let x: Vec<f32> = (0..n * rows)
        .map(|i| 0.1 + 2.0 * ((i % n) as f32).cos())
        .collect();
    // An importance vector like llama-imatrix's (positive, uneven).
    let imatrix: Vec<f32> = (0..n)
        .map(|i| 0.5 + ((i * 37) % 101) as f32 / 50.0)
        .collect();
    println!("| type | quantize GB/s | with imatrix GB/s | dequantize GB/s |");
    println!("|---|---|---|---|");
    for dtype in [
        DType::Q4_0,
        DType::Q4_1,
        DType::Q5_0,
        DType::Q5_1,
        DType::Q8_0,
        DType::Q2_K,
        DType::Q3_K,
        DType::Q4_K,
        DType::Q5_K,
        DType::Q6_K,
    ] {
        let mut q = vec![0u8; row_size(dtype, n)? * rows];
        let mut best_q = f64::MAX;
        for _ in 0..5 {
            let t = Instant::now();
            quantize_into(dtype, &x, n, None, &mut q)?;
            best_q = best_q.min(t.elapsed().as_secs_f64());
        }
        let mut best_w = f64::MAX;
        for _ in 0..5 {
            let t = Instant::now();
            quantize_into(dtype, &x, n, Some(&imatrix), &mut q)?;
            best_w = best_w.min(t.elapsed().as_secs_f64());
        }
        let mut y = vec![0f32; x.len()];
        let mut best_d = f64::MAX;
        for _ in 0..20 {
            let t = Instant::now();
            dequantize(dtype, &q, &mut y)?;
            best_d = best_d.min(t.elapsed().as_secs_f64());
        }
        let gb = (x.len() * 4) as f64 / f64::from(1u32 << 30);
        println!(
            "| {} | {:.3} | {:.3} | {:.2} |",
            dtype.name(),
            gb / best_q,
            gb / best_w,
            gb / best_d
        );
    }
    Ok(())
}
