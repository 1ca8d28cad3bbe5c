//! Single-thread speed of the k-quant quantizers at each dispatch level
//! (scalar reference, AVX2 lane searches, AVX-512 lane searches), without
//! and with an importance vector, measured in one process with the levels
//! interleaved round by round (the machine this runs on is often shared):
//! the best of `--rounds` (default 7) rounds per level, GB/s of f32 data.
//!
//! Usage: `cargo run --release -p weightkit-quant --example levels [--rounds 7]`

use std::hint::black_box;
use std::time::Instant;

use bytemuck::Zeroable;
use weightkit_quant::QuantError;
use weightkit_quant::kquants::{BlockQ2K, BlockQ3K, BlockQ4K, BlockQ5K, BlockQ6K};
use weightkit_quant::simd::{Level, dispatch, supported};

/// A k-quant quantizer at a chosen level.
type QuantAt<B> = fn(Level, &[f32], &mut [B], usize, Option<&[f32]>) -> Result<(), QuantError>;

/// Seconds per call of `f`: the mean over enough calls to fill ~50 ms.
fn secs(mut f: impl FnMut()) -> f64 {
    f();
    let start = Instant::now();
    let mut calls = 0u32;
    while calls < 2 || start.elapsed().as_secs_f64() < 0.05 {
        f();
        calls += 1;
    }
    start.elapsed().as_secs_f64() / f64::from(calls)
}

fn run<B: Zeroable + Clone>(name: &str, q: QuantAt<B>, x: &[f32], w: &[f32], rounds: usize) {
    let levels: Vec<Level> = [Level::Scalar, Level::Avx2, Level::Avx512]
        .into_iter()
        .filter(|&l| l <= supported())
        .collect();
    let n = x.len();
    let gb = (n * 4) as f64 / f64::from(1u32 << 30);
    let mut out = vec![B::zeroed(); n / 256];
    for imatrix in [None, Some(w)] {
        let mut best = vec![f64::INFINITY; levels.len()];
        for _ in 0..rounds {
            for (b, &level) in best.iter_mut().zip(&levels) {
                let t = secs(|| {
                    q(level, black_box(x), &mut out, n, imatrix).expect("finite row");
                });
                *b = b.min(t);
            }
        }
        let cells: Vec<String> = best.iter().map(|t| format!("{:.3}", gb / t)).collect();
        println!(
            "| {name}{} | {} | {:.2}x |",
            if imatrix.is_some() { " + imatrix" } else { "" },
            cells.join(" | "),
            best[best.len() - 2] / best[best.len() - 1]
        );
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let rounds = match args.iter().position(|a| a == "--rounds") {
        Some(i) => args.get(i + 1).ok_or("--rounds needs a value")?.parse()?,
        None => 7,
    };
    let n = 4096usize;
    let x: Vec<f32> = (0..n).map(|i| 0.1 + 2.0 * (i as f32).cos()).collect();
    let w: Vec<f32> = (0..n)
        .map(|i| 0.5 + ((i * 37) % 101) as f32 / 50.0)
        .collect();
    println!("| type | scalar GB/s | avx2 GB/s | avx512 GB/s | avx512 / avx2 |");
    println!("|---|---|---|---|---|");
    use dispatch::*;
    run::<BlockQ2K>("q2_K", quantize_q2_k_at, &x, &w, rounds);
    run::<BlockQ3K>("q3_K", quantize_q3_k_at, &x, &w, rounds);
    run::<BlockQ4K>("q4_K", quantize_q4_k_at, &x, &w, rounds);
    run::<BlockQ5K>("q5_K", quantize_q5_k_at, &x, &w, rounds);
    run::<BlockQ6K>("q6_K", quantize_q6_k_at, &x, &w, rounds);
    Ok(())
}
