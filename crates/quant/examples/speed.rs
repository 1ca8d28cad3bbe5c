//! Single-thread speed of quantize (with and without an importance vector),
//! dequantize, vec_dot (against the partner type) and quantizing a row to the
//! partner type (test-quantize-perf's `quantize_row_q_dot`: what a
//! matrix-vector product does to its input) per type, measured the way llama.cpp's
//! `tests/test-quantize-perf` measures it: one row of 4096 values of
//! `0.1 + 2*cos(i)`, a warm-up, then the mean over many calls, in GB/s of
//! f32 data (2^30 bytes). `cargo xtask quant-perf` runs this next to
//! llama.cpp's own binary and prints the ratios.
//!
//! `vec_dot` is timed twice: through the typed entry point of the dispatch
//! module (`simd::dispatch::vec_dot_q4_k_q8_k(&[BlockQ4K], &[BlockQ8K])`,
//! what a matrix-vector product calls per row, and what test-quantize-perf
//! times: ggml's `vec_dot` function pointer), and through the byte-level
//! `vec_dot(dtype, &[u8], &[u8])`, which adds a type match and two slice
//! casts per call.
//!
//! Types without a typed entry point in the dispatch module time the
//! byte-level function in both columns.
//!
//! The partner quantization is timed through the typed entry points too
//! (`simd::dispatch::quantize_row_q8_0(&[f32], &mut [BlockQ8_0])`, ...).
//!
//! Usage: `cargo run --release -p weightkit-quant --example speed [--types q4_0,q4_K,..]`
//! (every type test-quantize-perf measures, by default; `WEIGHTKIT_SIMD=scalar`
//! times the scalar kernels).
//!
//! The grid i-quants (IQ2_XXS, IQ2_XS, IQ2_S, IQ3_XXS, IQ3_S, IQ1_S, IQ1_M)
//! can be named in `--types` too: neither ggml nor this crate has a
//! reference quantizer for them (test-quantize-perf skips them), so their
//! row is deterministic pseudo-random block bytes with a fixed super-block
//! scale, and the quantize columns print `-`.

use std::hint::black_box;
use std::time::{Duration, Instant};

use weightkit_core::DType;
use weightkit_quant::iquants::{
    BlockIq1M, BlockIq1S, BlockIq2S, BlockIq2Xs, BlockIq2Xxs, BlockIq3S, BlockIq3Xxs, BlockIq4Nl,
    BlockIq4Xs, BlockMxfp4, BlockNvfp4, BlockTq1_0, BlockTq2_0,
};
use weightkit_quant::kquants::{BlockQ2K, BlockQ3K, BlockQ4K, BlockQ5K, BlockQ6K, BlockQ8K};
use weightkit_quant::legacy::{
    BlockQ1_0, BlockQ2_0, BlockQ4_0, BlockQ4_1, BlockQ5_0, BlockQ5_1, BlockQ8_0, BlockQ8_1,
};
use weightkit_quant::simd::dispatch as d;

#[path = "shared/rows.rs"]
mod rows;
use rows::random_row;
use weightkit_quant::{
    QuantError, can_quantize, dequantize, quantize_into, row_size, vec_dot, vec_dot_type,
};

/// Mean seconds of one typed `vec_dot` call on the row `q` and its partner
/// `p` (bytes copied into aligned blocks first, outside the timing).
fn typed_dot_secs(budget: Duration, dtype: DType, q: &[u8], p: &[u8]) -> Result<f64, QuantError> {
    macro_rules! time {
        ($bx:ty, $by:ty, $f:path) => {{
            let x: Vec<$bx> = bytemuck::pod_collect_to_vec(q);
            let y: Vec<$by> = bytemuck::pod_collect_to_vec(p);
            mean_secs(budget, || {
                $f(black_box(&x), black_box(&y)).map(|r| {
                    black_box(r);
                })
            })
        }};
    }
    match dtype {
        DType::Q4_0 => time!(BlockQ4_0, BlockQ8_0, d::vec_dot_q4_0_q8_0),
        DType::Q4_1 => time!(BlockQ4_1, BlockQ8_1, d::vec_dot_q4_1_q8_1),
        DType::Q5_0 => time!(BlockQ5_0, BlockQ8_0, d::vec_dot_q5_0_q8_0),
        DType::Q5_1 => time!(BlockQ5_1, BlockQ8_1, d::vec_dot_q5_1_q8_1),
        DType::Q8_0 => time!(BlockQ8_0, BlockQ8_0, d::vec_dot_q8_0_q8_0),
        DType::Q2_K => time!(BlockQ2K, BlockQ8K, d::vec_dot_q2_k_q8_k),
        DType::Q3_K => time!(BlockQ3K, BlockQ8K, d::vec_dot_q3_k_q8_k),
        DType::Q4_K => time!(BlockQ4K, BlockQ8K, d::vec_dot_q4_k_q8_k),
        DType::Q5_K => time!(BlockQ5K, BlockQ8K, d::vec_dot_q5_k_q8_k),
        DType::Q6_K => time!(BlockQ6K, BlockQ8K, d::vec_dot_q6_k_q8_k),
        DType::IQ4_NL => time!(BlockIq4Nl, u8, d::vec_dot_iq4_nl_q8_0),
        DType::IQ4_XS => time!(BlockIq4Xs, u8, d::vec_dot_iq4_xs_q8_k),
        DType::MXFP4 => time!(BlockMxfp4, u8, d::vec_dot_mxfp4_q8_0),
        DType::NVFP4 => time!(BlockNvfp4, u8, d::vec_dot_nvfp4_q8_0),
        DType::TQ1_0 => time!(BlockTq1_0, u8, d::vec_dot_tq1_0_q8_k),
        DType::TQ2_0 => time!(BlockTq2_0, u8, d::vec_dot_tq2_0_q8_k),
        DType::Q1_0 => time!(BlockQ1_0, u8, d::vec_dot_q1_0_q8_0),
        DType::Q2_0 => time!(BlockQ2_0, u8, d::vec_dot_q2_0_q8_0),
        DType::IQ2_XXS => time!(BlockIq2Xxs, u8, d::vec_dot_iq2_xxs_q8_k),
        DType::IQ2_XS => time!(BlockIq2Xs, u8, d::vec_dot_iq2_xs_q8_k),
        DType::IQ3_XXS => time!(BlockIq3Xxs, u8, d::vec_dot_iq3_xxs_q8_k),
        DType::IQ3_S => time!(BlockIq3S, u8, d::vec_dot_iq3_s_q8_k),
        DType::IQ1_S => time!(BlockIq1S, u8, d::vec_dot_iq1_s_q8_k),
        DType::IQ2_S => time!(BlockIq2S, u8, d::vec_dot_iq2_s_q8_k),
        DType::IQ1_M => time!(BlockIq1M, u8, d::vec_dot_iq1_m_q8_k),
        _ => mean_secs(budget, || {
            vec_dot(dtype, black_box(q), black_box(p)).map(|r| {
                black_box(r);
            })
        }),
    }
}

/// Mean seconds of quantizing the row `x` to the partner type through the
/// typed entry point (test-quantize-perf's `quantize_row_q_dot` times ggml's
/// `from_float` of the `vec_dot_type`). The f16/bf16 conversions are ggml's
/// (any f32, NaN and infinities included, as ggml's); the Q8 quantizers
/// reject non-finite values, checking each row first.
fn typed_partner_secs(budget: Duration, partner: DType, x: &[f32]) -> Result<f64, QuantError> {
    macro_rules! time {
        ($b:ty, $f:path) => {{
            let mut y: Vec<$b> = vec![
                bytemuck::Zeroable::zeroed();
                row_size(partner, x.len())? / std::mem::size_of::<$b>()
            ];
            mean_secs(budget, || $f(black_box(x), &mut y))
        }};
    }
    match partner {
        DType::Q8_0 => time!(BlockQ8_0, d::quantize_row_q8_0),
        DType::Q8_1 => time!(BlockQ8_1, d::quantize_row_q8_1),
        DType::Q8_K => time!(BlockQ8K, d::quantize_row_q8_k),
        DType::F16 => time!(u8, d::quantize_row_f16),
        DType::BF16 => time!(u8, d::quantize_row_bf16),
        _ => {
            let mut y = vec![0u8; row_size(partner, x.len())?];
            mean_secs(budget, || {
                quantize_into(partner, black_box(x), x.len(), None, &mut y)
            })
        }
    }
}

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
        DType::IQ4_NL,
        DType::IQ4_XS,
        DType::TQ1_0,
        DType::TQ2_0,
        DType::MXFP4,
        DType::NVFP4,
        DType::Q1_0,
        DType::Q2_0,
        DType::F16,
        DType::BF16,
    ];
    // Dot products only (no quantizer), named with `--types`.
    let grid = [
        DType::IQ2_XXS,
        DType::IQ2_XS,
        DType::IQ2_S,
        DType::IQ3_XXS,
        DType::IQ3_S,
        DType::IQ1_S,
        DType::IQ1_M,
    ];
    let args: Vec<String> = std::env::args().skip(1).collect();
    let types: Vec<DType> = match args.iter().position(|a| a == "--types") {
        Some(i) => {
            let list = args.get(i + 1).ok_or("--types needs a list")?;
            list.split(',')
                .map(|t| {
                    all.iter()
                        .chain(&grid)
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
    println!(
        "| type | quantize GB/s | with imatrix GB/s | dequantize GB/s | vec_dot GB/s | \
         vec_dot (byte API) GB/s | partner quantize GB/s |"
    );
    println!("|---|---|---|---|---|---|---|");
    for dtype in types {
        let mut q = vec![0u8; row_size(dtype, n)?];
        let quantizes = can_quantize(dtype);
        let (mut tq, mut tw) = (f64::NAN, f64::NAN);
        if quantizes {
            // test-quantize-perf's `quantize_row_q_reference` is ggml's
            // `from_float_ref`: for every type the reference path
            // `quantize_into` takes without importance, except IQ4_NL, whose
            // `quantize_row_iq4_nl_ref` searches one pass per group (`ntry = -1`)
            // where `quantize_iq4_nl` (llama-quantize's) searches 17.
            tq = if dtype == DType::IQ4_NL {
                let mut b: Vec<BlockIq4Nl> = vec![bytemuck::Zeroable::zeroed(); n / 32];
                mean_secs(budget, || d::quantize_row_iq4_nl_ref(black_box(&x), &mut b))?
            } else {
                mean_secs(budget, || quantize_into(dtype, &x, n, None, &mut q))?
            };
            tw = mean_secs(budget, || {
                quantize_into(dtype, &x, n, Some(&imatrix), &mut q)
            })?;
            quantize_into(dtype, &x, n, None, &mut q)?;
        } else {
            q = random_row(dtype, n)?;
        }
        let mut y = vec![0f32; n];
        let td = mean_secs(budget, || dequantize(dtype, &q, &mut y))?;
        let partner = vec_dot_type(dtype).ok_or("no dot product")?;
        let mut p = vec![0u8; row_size(partner, n)?];
        quantize_into(partner, &other, n, None, &mut p)?;
        let tp = typed_partner_secs(budget, partner, &other)?;
        let tv = typed_dot_secs(budget, dtype, &q, &p)?;
        let tb = mean_secs(budget, || {
            vec_dot(dtype, black_box(&q), black_box(&p)).map(|r| {
                black_box(r);
            })
        })?;
        let quant_gbs = |t: f64| {
            if quantizes {
                format!("{:.3}", gb / t)
            } else {
                "-".to_owned()
            }
        };
        println!(
            "| {} | {} | {} | {:.2} | {:.2} | {:.2} | {:.2} |",
            dtype.name(),
            quant_gbs(tq),
            quant_gbs(tw),
            gb / td,
            gb / tv,
            gb / tb,
            gb / tp
        );
    }
    Ok(())
}
