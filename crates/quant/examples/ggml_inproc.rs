//! weightkit's kernels against llama.cpp's own in one process: the ggml
//! shared libraries (`libggml-base.so`, `libggml-cpu.so`) are loaded with
//! `dlopen`, and each type's quantize (`from_float_ref`, what
//! test-quantize-perf's `quantize_row_q_reference` times), dequantize
//! (`to_float`) and `vec_dot` run on the same bytes as weightkit's
//! byte-level `quantize_into`, `dequantize` and `vec_dot_fn`. ggml's dot is
//! the function pointer in its CPU type traits, fetched once; weightkit's is
//! the one `vec_dot_fn` returns, also fetched once (`vec_dot` itself picks
//! it on every call).
//!
//! test-quantize-perf reads the time-stamp counter around every call, which
//! adds a few tens of cycles to a call of ~150 (a 4096-value dot product),
//! while weightkit's `speed` example times batches; and separate processes
//! on a shared VM see different background load. Here both sides get the
//! same statistic: rounds of `CALLS` consecutive calls (each closure
//! inlined into its own loop, so neither pays an indirect call the other
//! does not; each side's input row through one `black_box` of its slice or
//! pointer, the other operands plain: a `black_box(&vec)` on one side only
//! adds two dependent loads before its first read, ~2 ns a call), the two
//! libraries interleaved round by round (each first in every other round),
//! and the fastest round of each: background load on a shared VM only ever
//! adds time, and the fastest of 41 rounds repeats within ~2% where the
//! median moved by 5-10% between runs.
//!
//! Row: 4096 values (or `--values N`, a multiple of 256; one block's worth
//! shows the per-call cost) of `0.1 + 2*cos(i)` quantized by weightkit (ggml's
//! reference quantizers give the same bytes: see the tests), the partner row
//! `0.1 + 2*cos(i + 1)` quantized by weightkit to the `vec_dot_type`. The
//! grid i-quants (no reference quantizer in either library) use
//! deterministic pseudo-random blocks with a fixed scale, dot and
//! dequantize only.
//!
//! Usage (Linux; `cargo xtask quant-perf` runs it):
//! `cargo run --release -p weightkit-quant --example ggml_inproc -- LIBDIR [ROUNDS] [--types q4_0,..] [--values N]`
//! with `LIBDIR` the directory holding llama-cpp-python's ggml libraries
//! (`target/interop-venv/lib/python3.*/site-packages/llama_cpp/lib`).

use std::hint::black_box;
use std::time::Instant;

use weightkit_core::DType;
use weightkit_quant::iquants::BlockIq4Nl;
use weightkit_quant::simd::dispatch as d;

#[path = "shared/race.rs"]
mod race;
#[path = "shared/rows.rs"]
mod rows;
use rows::random_row;
use weightkit_quant::{dequantize, quantize_into, row_size, vec_dot_fn, vec_dot_type};

/// Calls per timed round.
const CALLS: usize = 1000;
/// Values per row unless `--values` says otherwise.
const N: usize = 4096;

#[cfg(target_os = "linux")]
#[path = "shared/ggml.rs"]
mod ggml;

/// Seconds per call of `f`: one round of `CALLS` consecutive calls.
fn round(f: &mut impl FnMut()) -> f64 {
    let t = Instant::now();
    for _ in 0..CALLS {
        f();
    }
    t.elapsed().as_secs_f64() / CALLS as f64
}

/// Seconds per call of `ours` and `theirs`: the fastest of `rounds` rounds
/// each, interleaved round by round (each first in every other round).
fn race(rounds: usize, mut ours: impl FnMut(), mut theirs: impl FnMut()) -> (f64, f64) {
    for _ in 0..5 {
        ours();
        theirs();
    }
    race::fastest_interleaved(rounds, || round(&mut ours), || round(&mut theirs))
}

#[cfg(target_os = "linux")]
fn main() -> Result<(), Box<dyn std::error::Error>> {
    use DType::*;
    let args: Vec<String> = std::env::args().skip(1).collect();
    let dir = args
        .first()
        .ok_or("usage: ggml_inproc LIBDIR [ROUNDS] [--types a,b] [--values N]")?;
    let rounds: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(41);
    let all = [
        Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, IQ4_NL, IQ4_XS, TQ1_0, TQ2_0,
        MXFP4, NVFP4, Q1_0, Q2_0, F16, BF16, IQ2_XXS, IQ2_XS, IQ2_S, IQ3_XXS, IQ3_S, IQ1_S, IQ1_M,
    ];
    let types = race::types_arg(&args, &all)?;
    // Short rows (one block: `--values 256`) expose the per-call cost.
    let n: usize = race::arg(&args, "--values", N)?;
    if n == 0 || !n.is_multiple_of(256) {
        return Err("--values needs a positive multiple of 256".into());
    }
    let g = ggml::load(dir)?;
    let x: Vec<f32> = (0..n).map(|i| 0.1 + 2.0 * (i as f32).cos()).collect();
    let other: Vec<f32> = (0..n).map(|i| 0.1 + 2.0 * (i as f32 + 1.0).cos()).collect();
    let gb = |t: f64| (n * 4) as f64 / t / f64::from(1u32 << 30);
    println!(
        "weightkit vs llama.cpp's ggml in one process: {n} values, fastest of {rounds} \
         interleaved rounds of {CALLS} calls; GB/s of f32 data (2^30 bytes)\n"
    );
    println!(
        "| type | quantize: weightkit / ggml | ratio | dequantize: weightkit / ggml | ratio | \
         vec_dot: weightkit / ggml | ratio |"
    );
    println!("|---|---|---|---|---|---|---|");
    let cell = |(a, b): (f64, f64)| format!("{:.2} / {:.2} | **{:.2}x**", gb(a), gb(b), b / a);
    for dtype in types {
        let id = dtype.ggml_type_id().ok_or("no ggml id")? as i32;
        // SAFETY: ggml returns a pointer into its static traits table for
        // every type id below GGML_TYPE_COUNT (all ids here).
        let (tr, ct) = unsafe { (&*(g.traits)(id), &*(g.cpu_traits)(id)) };
        let grid = !weightkit_quant::can_quantize(dtype);
        let mut q = vec![0u8; row_size(dtype, n)?];
        let quant = if grid {
            q = random_row(dtype, n)?;
            "- | -".to_owned()
        } else {
            quantize_into(dtype, &x, n, None, &mut q)?;
            let from = tr.from_float_ref.ok_or("no from_float_ref")?;
            let mut q2 = vec![0u8; q.len()];
            // ggml's IQ4_NL `from_float_ref` is `quantize_row_iq4_nl_ref` (one
            // scale-search pass per group), not llama-quantize's 17-pass
            // `quantize_iq4_nl` that `quantize_into` runs.
            let mut nl: Vec<BlockIq4Nl> = vec![bytemuck::Zeroable::zeroed(); n / 32];
            let (xs, qm, nlm, q2m) = (&x[..], &mut q[..], &mut nl[..], &mut q2[..]);
            cell(race(
                rounds,
                || {
                    if dtype == IQ4_NL {
                        d::quantize_row_iq4_nl_ref(black_box(xs), nlm).expect("quantizes")
                    } else {
                        quantize_into(dtype, black_box(xs), n, None, qm).expect("quantizes")
                    }
                },
                // SAFETY: `x` holds n floats and `q2` the row's bytes.
                || unsafe { from(black_box(xs.as_ptr()), q2m.as_mut_ptr(), n as i64) },
            ))
        };
        let to = tr.to_float.ok_or("no to_float")?;
        let (mut y1, mut y2) = (vec![0f32; n], vec![0f32; n]);
        let (qs, y1m, y2m) = (&q[..], &mut y1[..], &mut y2[..]);
        let deq = cell(race(
            rounds,
            || dequantize(dtype, black_box(qs), y1m).expect("dequantizes"),
            // SAFETY: `q` is one row of n values of this type, `y2` n floats.
            || unsafe { to(black_box(qs.as_ptr()), y2m.as_mut_ptr(), n as i64) },
        ));
        let partner = vec_dot_type(dtype).ok_or("no partner")?;
        let mut p = vec![0u8; row_size(partner, n)?];
        quantize_into(partner, &other, n, None, &mut p)?;
        let vd = ct.vec_dot.ok_or("no vec_dot")?;
        let ours = vec_dot_fn(dtype).ok_or("no vec_dot")?;
        let (mut ra, mut rb) = (0f32, 0f32);
        let ps = &p[..];
        let dot = cell(race(
            rounds,
            || ra = ours.call(black_box(qs), ps).expect("dots"),
            // SAFETY: `q` is one row of n values, `p` one row of n values of
            // the type's vec_dot_type; nrc = 1 with zero strides.
            || unsafe {
                vd(
                    n as i32,
                    &mut rb,
                    0,
                    black_box(qs.as_ptr()),
                    0,
                    ps.as_ptr(),
                    0,
                    1,
                )
            },
        ));
        let rel = ((ra - rb) / rb.abs().max(1e-30)).abs();
        if rel > 1e-3 {
            return Err(format!("{}: dot {ra} vs ggml's {rb}", dtype.name()).into());
        }
        println!("| {} | {quant} | {deq} | {dot} |", dtype.name());
    }
    Ok(())
}

#[cfg(not(target_os = "linux"))]
fn main() {
    eprintln!("ggml_inproc loads llama.cpp's shared libraries with dlopen: Linux only");
}
