//! Benchmarking the quantization kernels from library code.
//!
//! For each ggml type, times the byte-level `quantize`, `dequantize` and
//! `vec_dot` (against the type's `vec_dot_type`, as a matmul row does) on
//! 4 MiB of f32 rows (256 rows of 4096 values) of llama.cpp's test input,
//! `0.1 + 2 cos(i + offset)` (`tests/test-quantize-perf.cpp`), on one thread,
//! at the SIMD level detected on this CPU and at the scalar reference level.
//! Prints GB/s of f32 data (2^30 bytes per second, as test-quantize-perf),
//! the SIMD / scalar ratio, bits per weight, the round trip's RMSE, and
//! whether both levels wrote the same bytes (they must: the kernels are
//! bit-exact with llama.cpp at every level; only `vec_dot` may differ in the
//! last bits, its sums being accumulated in another order).
//!
//! ```sh
//! cargo run --release -p weightkit --example quant_bench
//! cargo run --release -p weightkit --example quant_bench -- --quick          # ~5 s
//! cargo run --release -p weightkit --example quant_bench -- --types q4_K,q8_0
//! ```
//!
//! The level is switched with `quant::simd::set_level`, which is
//! process-wide (like the `WEIGHTKIT_SIMD` environment variable); to compare
//! levels inside one process without global state, the block-level kernels
//! in `quant::simd::dispatch` have `_at(level, ..)` twins. The parallel
//! drivers (`quantize_into_parallel`, `dequantize_parallel`) split rows over
//! rayon's threads with identical output. For criterion's statistics, and
//! the ratios against llama.cpp in `docs/BENCHMARKS.md`, run
//! `cargo bench -p weightkit-benches --bench main -- quant`.

use std::error::Error;
use std::hint::black_box;
use std::time::{Duration, Instant};

use weightkit::DType;
use weightkit::quant::simd::{self, Level};
use weightkit::quant::{QuantError, dequantize, quantize, row_size, vec_dot, vec_dot_type};

/// Values per row (llama.cpp's test-quantize-perf uses rows of 4096 too).
pub(crate) const ROW: usize = 4096;

/// The types with SIMD kernels, legacy then k-quants.
pub(crate) const TYPES: [DType; 10] = [
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

/// llama.cpp's `generate_data(offset, n)`: `0.1 + 2 cos(i + offset)`.
pub(crate) fn test_input(offset: f32, n: usize) -> Vec<f32> {
    (0..n)
        .map(|i| 0.1 + 2.0 * (i as f32 + offset).cos())
        .collect()
}

/// Seconds per operation at one level.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Timing {
    pub(crate) quantize: f64,
    pub(crate) dequantize: f64,
    pub(crate) vec_dot: f64,
}

/// One type at the detected level and at the scalar level.
#[derive(Debug)]
pub(crate) struct TypeResult {
    pub(crate) dtype: DType,
    pub(crate) simd: Timing,
    pub(crate) scalar: Timing,
    pub(crate) rmse: f64,
    /// Quantized and dequantized bytes equal at both levels.
    pub(crate) same_bytes: bool,
    /// |dot(simd) - dot(scalar)| over |dot(scalar)|, summed over rows.
    pub(crate) dot_relative: f64,
}

/// Mean seconds per call of `f`: one warm-up call, then calls until
/// `budget` has passed (at least two).
fn mean_secs(
    budget: Duration,
    mut f: impl FnMut() -> Result<(), QuantError>,
) -> Result<f64, QuantError> {
    f()?;
    let start = Instant::now();
    let mut calls = 0u32;
    while calls < 2 || start.elapsed() < budget {
        f()?;
        calls += 1;
    }
    Ok(start.elapsed().as_secs_f64() / f64::from(calls))
}

/// Quantize, dequantize and row-by-row `vec_dot` of `x` at `level`; returns
/// the timings, the quantized bytes, the dequantized values and the dots.
#[allow(clippy::type_complexity)]
fn run_level(
    level: Level,
    dtype: DType,
    x: &[f32],
    partner: &[u8],
    budget: Duration,
) -> Result<(Timing, Vec<u8>, Vec<f32>, f64), Box<dyn Error>> {
    simd::set_level(level);
    let row_bytes = row_size(dtype, ROW)?;
    let partner_bytes = partner.len() / (x.len() / ROW);
    let mut q = Vec::new();
    let quantize_s = mean_secs(budget, || {
        q = quantize(dtype, black_box(x), ROW, None)?;
        Ok(())
    })?;
    let mut y = vec![0f32; x.len()];
    let dequantize_s = mean_secs(budget, || dequantize(dtype, black_box(&q), &mut y))?;
    let mut dot = 0f64;
    let vec_dot_s = mean_secs(budget, || {
        dot = 0.0;
        for (w, a) in q.chunks(row_bytes).zip(partner.chunks(partner_bytes)) {
            dot += f64::from(vec_dot(dtype, black_box(w), black_box(a))?);
        }
        Ok(())
    })?;
    let timing = Timing {
        quantize: quantize_s,
        dequantize: dequantize_s,
        vec_dot: vec_dot_s,
    };
    Ok((timing, q, y, dot))
}

/// Measures `dtype` on `rows` rows at `detected` and at the scalar level,
/// `budget` per measurement. Leaves the process at `detected`.
pub(crate) fn bench_type(
    dtype: DType,
    detected: Level,
    rows: usize,
    budget: Duration,
) -> Result<TypeResult, Box<dyn Error>> {
    let x = test_input(0.0, rows * ROW);
    // The activations a weight row is dotted with, in the partner type.
    let partner_type = vec_dot_type(dtype).ok_or("no vec_dot partner")?;
    let partner = quantize(partner_type, &test_input(1.0, rows * ROW), ROW, None)?;
    let scalar = run_level(Level::Scalar, dtype, &x, &partner, budget);
    let fast = run_level(detected, dtype, &x, &partner, budget);
    simd::set_level(detected);
    let (scalar, qs, ys, dot_s) = scalar?;
    let (simd, qf, yf, dot_f) = fast?;
    let sq = x
        .iter()
        .zip(&yf)
        .map(|(a, b)| f64::from(a - b).powi(2))
        .sum::<f64>();
    Ok(TypeResult {
        dtype,
        simd,
        scalar,
        rmse: (sq / x.len() as f64).sqrt(),
        same_bytes: qs == qf && ys.iter().zip(&yf).all(|(a, b)| a.to_bits() == b.to_bits()),
        dot_relative: (dot_f - dot_s).abs() / dot_s.abs().max(f64::MIN_POSITIVE),
    })
}

fn parse_types(list: &str) -> Result<Vec<DType>, String> {
    list.split(',')
        .map(|t| {
            DType::from_ggml_name(t)
                .or_else(|| {
                    TYPES
                        .iter()
                        .copied()
                        .find(|d| d.name().eq_ignore_ascii_case(t))
                })
                .ok_or_else(|| format!("unknown type {t}"))
        })
        .collect()
}

fn main() -> Result<(), Box<dyn Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let quick = args.iter().any(|a| a == "--quick");
    let types = match args.iter().position(|a| a == "--types") {
        Some(i) => parse_types(args.get(i + 1).ok_or("--types needs a list")?)?,
        None => TYPES.to_vec(),
    };
    // --quick: 1 MiB of input and 30 ms per measurement.
    let (rows, budget) = if quick {
        (64, Duration::from_millis(30))
    } else {
        (256, Duration::from_millis(300))
    };
    let detected = simd::level();
    let gib = (rows * ROW * 4) as f64 / f64::from(1u32 << 30);
    println!(
        "1 thread, {rows} rows x {ROW} values ({:.1} MiB of f32), SIMD level {} (CPU supports {}) vs scalar",
        gib * 1024.0,
        detected.name(),
        simd::supported().name()
    );
    println!("GB/s of f32 data; ratio = {} / scalar\n", detected.name());
    println!(
        "| type | bits/weight | RMSE | quantize GB/s | ratio | dequantize GB/s | ratio | vec_dot GB/s | ratio | same bytes |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    let mut all_same = true;
    for dtype in types {
        let r = bench_type(dtype, detected, rows, budget)?;
        let bpw = (r.dtype.block_bytes() * 8) as f64 / r.dtype.block_elems() as f64;
        let cell = |fast: f64, slow: f64| {
            format!(
                "{:.3} / {:.3} | {:.1}x",
                gib / fast,
                gib / slow,
                slow / fast
            )
        };
        println!(
            "| {} | {bpw:.2} | {:.5} | {} | {} | {} | {} |",
            r.dtype.name(),
            r.rmse,
            cell(r.simd.quantize, r.scalar.quantize),
            cell(r.simd.dequantize, r.scalar.dequantize),
            cell(r.simd.vec_dot, r.scalar.vec_dot),
            if r.same_bytes { "yes" } else { "NO" },
        );
        if r.dot_relative > 1e-5 {
            println!(
                "  ({}: vec_dot differs by {:.1e})",
                r.dtype.name(),
                r.dot_relative
            );
        }
        all_same &= r.same_bytes;
    }
    println!("\nGB/s cells: {} / scalar.", detected.name());
    println!("Criterion numbers: cargo bench -p weightkit-benches --bench main -- quant");
    if !all_same {
        return Err("a SIMD kernel wrote other bytes than the scalar reference".into());
    }
    Ok(())
}
