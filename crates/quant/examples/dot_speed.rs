//! Single-thread speed of the quantized dot products at each dispatch level,
//! measured the way llama.cpp's `tests/test-quantize-perf` measures
//! `vec_dot_q`: one row of 4096 values of `0.1 + 2*cos(i)` quantized to the
//! weight type, one of `0.1 + 2*cos(i + 1)` quantized to its partner type
//! (Q8_0, Q8_1 or Q8_K), then the mean time of a call in GB/s of
//! f32-equivalent data (4 bytes per value, 2^30 bytes per GB): the best of
//! five rounds' means, as the machine this runs on is often shared.
//!
//! Each level runs through the `simd::dispatch::*_at` entry points, so the
//! scalar reference and the SIMD kernels are timed in the same process.
//!
//! Usage: `cargo run --release -p weightkit-quant --example dot_speed [--budget-ms 300]`

use std::hint::black_box;
use std::time::{Duration, Instant};

use bytemuck::Zeroable;
use weightkit_quant::QuantError;
use weightkit_quant::kquants::{self, BlockQ8K, QK_K};
use weightkit_quant::legacy::{self, BlockQ8_0, BlockQ8_1};
use weightkit_quant::simd::{Level, dispatch, supported};

/// A dispatching dot product at a chosen level.
type DotAt<X, Y> = fn(Level, &[X], &[Y]) -> Result<f32, QuantError>;
/// A reference row quantizer.
type Quant<B> = fn(&[f32], &mut [B]) -> Result<(), QuantError>;

/// llama.cpp's `test-quantize-perf` `vec_dot_q` figures (GB/s, AVX2 build)
/// from `docs/BENCHMARKS.md`'s reference machine.
const LLAMA: [(&str, f64); 10] = [
    ("q4_0", 79.7),
    ("q4_1", 85.0),
    ("q5_0", 65.4),
    ("q5_1", 65.9),
    ("q8_0", 72.7),
    ("q2_K", 118.8),
    ("q3_K", 45.2),
    ("q4_K", 64.9),
    ("q5_K", 47.3),
    ("q6_K", 47.5),
];

/// Seconds per call of `f`: after a warm-up, five rounds of batches of
/// 256 calls, each round `budget / 5` long (the clock is read once per
/// batch); the fastest round's mean, as the machine is shared.
fn best_mean_secs(budget: Duration, mut f: impl FnMut() -> f32) -> f64 {
    for _ in 0..1000 {
        black_box(f());
    }
    (0..5)
        .map(|_| {
            let start = Instant::now();
            let mut calls = 0u64;
            while calls < 1024 || start.elapsed() < budget / 5 {
                for _ in 0..256 {
                    black_box(f());
                }
                calls += 256;
            }
            start.elapsed().as_secs_f64() / calls as f64
        })
        .fold(f64::INFINITY, f64::min)
}

fn quant<B: Zeroable + Clone>(x: &[f32], block: usize, q: Quant<B>) -> Vec<B> {
    let mut out = vec![B::zeroed(); x.len() / block];
    q(x, &mut out).expect("finite rows of whole blocks quantize");
    out
}

struct Bench {
    x: Vec<f32>,
    y: Vec<f32>,
    levels: Vec<Level>,
    budget: Duration,
}

impl Bench {
    /// Times one dot at every level and prints a table row.
    #[allow(clippy::too_many_arguments)]
    fn run<X: Zeroable + Clone, Y: Zeroable + Clone>(
        &self,
        name: &str,
        block: usize,
        qx: Quant<X>,
        y_block: usize,
        qy: Quant<Y>,
        dot: DotAt<X, Y>,
    ) {
        let xq = quant(&self.x, block, qx);
        let yq = quant(&self.y, y_block, qy);
        let gb = (self.x.len() * 4) as f64 / f64::from(1u32 << 30);
        let speeds: Vec<f64> = self
            .levels
            .iter()
            .map(|&level| {
                let secs = best_mean_secs(self.budget, || {
                    dot(level, black_box(&xq), black_box(&yq)).expect("equal lengths")
                });
                gb / secs
            })
            .collect();
        let llama = LLAMA
            .iter()
            .find(|(n, _)| *n == name)
            .map_or(f64::NAN, |&(_, v)| v);
        let cells: Vec<String> = speeds.iter().map(|s| format!("{s:.1}")).collect();
        let best = speeds.last().copied().unwrap_or(f64::NAN);
        println!(
            "| {name} | {} | {:.1}x | {llama:.1} | {:.2}x |",
            cells.join(" | "),
            best / speeds[0],
            best / llama
        );
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let budget_ms = match args.iter().position(|a| a == "--budget-ms") {
        Some(i) => args
            .get(i + 1)
            .ok_or("--budget-ms needs a value")?
            .parse()?,
        None => 300,
    };
    let n = 4096usize;
    let levels: Vec<Level> = [Level::Scalar, Level::Avx2, Level::Avx512]
        .into_iter()
        .filter(|&l| l <= supported())
        .collect();
    let b = Bench {
        x: (0..n).map(|i| 0.1 + 2.0 * (i as f32).cos()).collect(),
        y: (0..n).map(|i| 0.1 + 2.0 * (i as f32 + 1.0).cos()).collect(),
        levels,
        budget: Duration::from_millis(budget_ms),
    };
    let names: Vec<&str> = b.levels.iter().map(|l| l.name()).collect();
    println!(
        "| type | {} GB/s | speedup | llama.cpp GB/s | ours / llama.cpp |",
        names.join(" GB/s | ")
    );
    println!("|---|{}---|---|---|", "---|".repeat(names.len()));

    let q8_0: Quant<BlockQ8_0> = legacy::quantize_row_q8_0_ref;
    let q8_1: Quant<BlockQ8_1> = legacy::quantize_row_q8_1_ref;
    let q8_k: Quant<BlockQ8K> = kquants::quantize_row_q8_k_ref;
    use dispatch::*;
    b.run(
        "q4_0",
        32,
        legacy::quantize_row_q4_0_ref,
        32,
        q8_0,
        vec_dot_q4_0_q8_0_at,
    );
    b.run(
        "q4_1",
        32,
        legacy::quantize_row_q4_1_ref,
        32,
        q8_1,
        vec_dot_q4_1_q8_1_at,
    );
    b.run(
        "q5_0",
        32,
        legacy::quantize_row_q5_0_ref,
        32,
        q8_0,
        vec_dot_q5_0_q8_0_at,
    );
    b.run(
        "q5_1",
        32,
        legacy::quantize_row_q5_1_ref,
        32,
        q8_1,
        vec_dot_q5_1_q8_1_at,
    );
    b.run("q8_0", 32, q8_0, 32, q8_0, vec_dot_q8_0_q8_0_at);
    b.run(
        "q2_K",
        QK_K,
        kquants::quantize_row_q2_k_ref,
        QK_K,
        q8_k,
        vec_dot_q2_k_q8_k_at,
    );
    b.run(
        "q3_K",
        QK_K,
        kquants::quantize_row_q3_k_ref,
        QK_K,
        q8_k,
        vec_dot_q3_k_q8_k_at,
    );
    b.run(
        "q4_K",
        QK_K,
        kquants::quantize_row_q4_k_ref,
        QK_K,
        q8_k,
        vec_dot_q4_k_q8_k_at,
    );
    b.run(
        "q5_K",
        QK_K,
        kquants::quantize_row_q5_k_ref,
        QK_K,
        q8_k,
        vec_dot_q5_k_q8_k_at,
    );
    b.run(
        "q6_K",
        QK_K,
        kquants::quantize_row_q6_k_ref,
        QK_K,
        q8_k,
        vec_dot_q6_k_q8_k_at,
    );
    Ok(())
}
