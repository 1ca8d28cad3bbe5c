//! Single-thread speed of quantize (with and without an importance vector),
//! dequantize and vec_dot (against the partner type) per type, measured the way llama.cpp's
//! `tests/test-quantize-perf` measures it: one row of 4096 values of
//! `0.1 + 2*cos(i)`, a warm-up, then the mean over many calls, in GB/s of
//! f32 data (2^30 bytes). `cargo xtask quant-perf` runs this next to
//! llama.cpp's own binary and prints the ratios.
//!
//! Usage: `cargo run --release -p weightkit-quant --example speed [--types q4_0,q4_K,..]`

use std::time::{Duration, Instant};

use weightkit_core::DType;
use weightkit_quant::{
    QuantError, dequantize, quantize, quantize_into, row_size, vec_dot, vec_dot_type,
};

/// Calls `f` until `budget` has passed (at least 32 times, after 5 warm-up
/// calls) and returns the mean seconds per call.
fn mean_secs(
    budget: Duration,
    mut f: impl FnMut() -> Result<(), QuantError>,
) -> Result<f64, QuantError> {
    for _ in 0..5 {
        f()?;
    }
    let start = Instant::now();
    let mut calls = 0u32;
    // Batches of 32 calls between clock reads: a read costs about as much
    // as a short call (a 4096-value dot product takes ~0.1 us).
    while calls < 32 || start.elapsed() < budget {
        for _ in 0..32 {
            f()?;
        }
        calls += 32;
    }
    Ok(start.elapsed().as_secs_f64() / f64::from(calls))
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let n = 4096usize;
    let x: Vec<f32> = (0..n).map(|i| 0.1 + 2.0 * (i as f32).cos()).collect();
    // An importance vector like llama-imatrix's (positive, uneven).
    let imatrix: Vec<f32> = (0..n)
        .map(|i| 0.5 + ((i * 37) % 101) as f32 / 50.0)
        .collect();
    let all = [
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
    ];
    let args: Vec<String> = std::env::args().skip(1).collect();
    let types: Vec<DType> = match args.iter().position(|a| a == "--types") {
        Some(i) => {
            let list = args.get(i + 1).ok_or("--types needs a list")?;
            list.split(',')
                .map(|t| {
                    all.iter()
                        .copied()
                        .find(|d| d.name().eq_ignore_ascii_case(t))
                        .ok_or_else(|| format!("unknown type {t}"))
                })
                .collect::<Result<_, _>>()?
        }
        None => all.to_vec(),
    };
    let budget = Duration::from_millis(300);
    let gb = (n * 4) as f64 / f64::from(1u32 << 30);
    // The dot product's other operand, as test-quantize-perf makes it.
    let other: Vec<f32> = (0..n).map(|i| 0.1 + 2.0 * (i as f32 + 1.0).cos()).collect();
    println!("| type | quantize GB/s | with imatrix GB/s | dequantize GB/s | vec_dot GB/s |");
    println!("|---|---|---|---|---|");
    for dtype in types {
        let mut q = vec![0u8; row_size(dtype, n)?];
        let tq = mean_secs(budget, || quantize_into(dtype, &x, n, None, &mut q))?;
        let tw = mean_secs(budget, || {
            quantize_into(dtype, &x, n, Some(&imatrix), &mut q)
        })?;
        let mut y = vec![0f32; n];
        let td = mean_secs(budget, || dequantize(dtype, &q, &mut y))?;
        quantize_into(dtype, &x, n, None, &mut q)?;
        let partner = vec_dot_type(dtype).ok_or("no dot product")?;
        let p = quantize(partner, &other, n, None)?;
        let tv = mean_secs(budget, || vec_dot(dtype, &q, &p).map(|_| ()))?;
        println!(
            "| {} | {:.3} | {:.3} | {:.2} | {:.2} |",
            dtype.name(),
            gb / tq,
            gb / tw,
            gb / td,
            gb / tv
        );
    }
    Ok(())
}
