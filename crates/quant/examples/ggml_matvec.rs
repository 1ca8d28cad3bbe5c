//! weightkit's `matvec` (a quantized matrix times an f32 vector, what a
//! transformer's linear layers run per token) against llama.cpp's
//! `ggml_mul_mat` in one process: the ggml shared libraries are loaded with
//! `dlopen`, a one-node graph `mul_mat(W, x)` is built once over weightkit's
//! quantized bytes, copied into ggml's buffer, where both sides then read
//! them (the same pages), and each call is `ggml_graph_compute` on a
//! persistent ggml threadpool of the same number of threads (polling off,
//! so its idle workers sleep while weightkit runs), against
//! `matvec(dtype, w, rows, cols, x, y)` on a rayon pool of that many
//! threads (each round's calls inside one `install`, as a model's forward
//! pass runs inside its pool: no cross-thread hand-off per call). Both
//! sides quantize `x` to the partner type on every call, as a decode step
//! does.
//!
//! Timing as in `ggml_inproc`: rounds of consecutive calls (8 at the
//! default size, more for smaller matrices: 2^25 values a round), the two
//! libraries interleaved round by round, the fastest round of each; and a
//! 20 ms pause and one untimed call before every round: the pause lets the
//! other side's idle threads go to sleep (llama-cpp-python's ggml runs its
//! graphs on OpenMP, whose idle threads spin for milliseconds after each
//! parallel region: without it weightkit's two-thread rounds ran on one
//! free core and measured 0.5-0.8x), the untimed call wakes the side's own
//! threads, which then keep their own idle policy between the calls of the
//! round. The
//! results are checked against each other (relative difference of the
//! largest output under 1e-3) before a row is printed.
//!
//! Matrix: `--rows` x `--cols` (default 4096 x 4096, 16 Mi values: ~9 MiB
//! of Q4_K, more than this machine's L2, in its L3) of `0.1 + 2*cos(i)`
//! quantized by weightkit; the grid i-quants use deterministic random
//! blocks (as `ggml_inproc`). Vector: `0.1 + 2*cos(i + 1)`.
//!
//! Usage (Linux; `cargo xtask quant-perf` runs it):
//! `cargo run --release -p weightkit-quant --example ggml_matvec -- LIBDIR [ROUNDS] [--types q4_0,..] [--rows R] [--cols C] [--threads 1,2]`

use std::time::Instant;

use weightkit_core::DType;

#[path = "shared/race.rs"]
mod race;
#[path = "shared/rows.rs"]
mod rows;
use rows::random_row;
use weightkit_quant::{can_quantize, matvec, quantize_into, row_size};

#[cfg(target_os = "linux")]
#[path = "shared/ggml.rs"]
mod ggml;

/// Matrix values per timed round: at least 8 calls, more for small matrices
/// so that a round outlasts rayon's hand-off into its pool (one `install`
/// per round, tens of microseconds when its worker has gone to sleep).
const ROUND_VALUES: usize = 1 << 25;
/// Pause before every timed round.
const SETTLE: std::time::Duration = std::time::Duration::from_millis(20);

/// Seconds per call of `ours` and `theirs` (each called with a number of
/// calls to make): the fastest of `rounds` rounds, interleaved (each first
/// in every other round). A round sleeps `SETTLE`, makes one untimed call
/// (its own threads awake, its data in cache), then times `calls` calls.
fn race(
    rounds: usize,
    calls: usize,
    mut ours: impl FnMut(usize),
    mut theirs: impl FnMut(usize),
) -> (f64, f64) {
    let time = |f: &mut dyn FnMut(usize)| {
        std::thread::sleep(SETTLE);
        f(1);
        let t = Instant::now();
        f(calls);
        t.elapsed().as_secs_f64() / calls as f64
    };
    race::fastest_interleaved(rounds, || time(&mut ours), || time(&mut theirs))
}

#[cfg(target_os = "linux")]
fn main() -> Result<(), Box<dyn std::error::Error>> {
    use DType::*;
    let args: Vec<String> = std::env::args().skip(1).collect();
    let dir = args.first().ok_or(
        "usage: ggml_matvec LIBDIR [ROUNDS] [--types a,b] [--rows R] [--cols C] [--threads 1,2]",
    )?;
    let rounds: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(11);
    let rows: usize = race::arg(&args, "--rows", 4096)?;
    let cols: usize = race::arg(&args, "--cols", 4096)?;
    if rows == 0 || cols == 0 || !cols.is_multiple_of(256) {
        return Err("--rows must be positive, --cols a positive multiple of 256".into());
    }
    let threads: Vec<usize> = race::arg(&args, "--threads", "1,2".to_owned())?
        .split(',')
        .map(|t| t.parse().ok().filter(|&t: &usize| t > 0))
        .collect::<Option<_>>()
        .ok_or("--threads needs a list of positive counts")?;
    let all = [
        Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, IQ4_NL, IQ4_XS, TQ1_0, TQ2_0,
        MXFP4, Q1_0, F16, BF16, IQ2_XXS, IQ2_XS, IQ2_S, IQ3_XXS, IQ3_S, IQ1_S, IQ1_M,
    ];
    let types = race::types_arg(&args, &all)?;
    let g = ggml::load(dir)?;
    let n = rows * cols;
    let calls = (ROUND_VALUES / n).max(8);
    let values: Vec<f32> = (0..n).map(|i| 0.1 + 2.0 * (i as f32).cos()).collect();
    let x: Vec<f32> = (0..cols)
        .map(|i| 0.1 + 2.0 * (i as f32 + 1.0).cos())
        .collect();
    let gb = |t: f64| (n * 4) as f64 / t / f64::from(1u32 << 30);
    println!(
        "weightkit matvec vs llama.cpp's ggml_mul_mat in one process: {rows} x {cols} \
         matrix, fastest of {rounds} interleaved rounds of {calls} calls; GB/s of f32 \
         data (2^30 bytes of the matrix as f32) and the ratio weightkit / ggml\n"
    );
    let head: String = threads
        .iter()
        .map(|t| {
            format!(
                " {t} thread{}: weightkit / ggml | ratio |",
                if *t > 1 { "s" } else { "" }
            )
        })
        .collect();
    println!("| type |{head}");
    println!("|---|{}", "---|---|".repeat(threads.len()));
    for dtype in types {
        let id = dtype.ggml_type_id().ok_or("no ggml id")? as i32;
        let w = if can_quantize(dtype) {
            let mut w = vec![0u8; row_size(dtype, n)?];
            quantize_into(dtype, &values, n, None, &mut w)?;
            w
        } else {
            random_row(dtype, n)?
        };
        let mem = w.len() + (cols + rows) * 4 + (16 << 20);
        // SAFETY: a context over `mem` bytes ggml allocates itself.
        let ctx = unsafe {
            (g.init)(ggml::InitParams {
                mem_size: mem,
                mem_buffer: std::ptr::null_mut(),
                no_alloc: false,
            })
        };
        if ctx.is_null() {
            return Err("ggml_init failed".into());
        }
        let len = w.len();
        // SAFETY: `ctx` is live; the tensors are `cols` x `rows` of the
        // type (`w.len()` bytes, as ggml_row_size gives) and `cols` x 1
        // f32 (`x`), so both copies fit their tensors' data; the graph and
        // its output live in `ctx` until `ggml_free`.
        let (gf, out, wdata) = unsafe {
            let a = (g.new_tensor_2d)(ctx, id, cols as i64, rows as i64);
            let b = (g.new_tensor_2d)(ctx, 0, cols as i64, 1);
            if a.is_null() || b.is_null() {
                return Err("ggml_new_tensor_2d failed".into());
            }
            std::ptr::copy_nonoverlapping(w.as_ptr(), (g.get_data)(a).cast::<u8>(), w.len());
            std::ptr::copy_nonoverlapping(x.as_ptr(), (g.get_data)(b).cast::<f32>(), cols);
            let c = (g.mul_mat)(ctx, a, b);
            let gf = (g.new_graph)(ctx);
            (g.build_forward_expand)(gf, c);
            (
                gf,
                (g.get_data)(c).cast::<f32>().cast_const(),
                (g.get_data)(a),
            )
        };
        // Both sides read the one copy of the matrix in ggml's buffer (the
        // same physical pages: a 32 MiB f16 matrix is read from DRAM, whose
        // speed depended on where each copy landed).
        drop(w);
        // SAFETY: `wdata` is the weight tensor's `len` bytes, live until
        // `ggml_free` below; nothing writes them (ggml writes only the
        // output tensor and the work buffer).
        let ws = unsafe { std::slice::from_raw_parts(wdata.cast::<u8>().cast_const(), len) };
        let mut cells = String::new();
        for &t in &threads {
            let mut params = ggml::ThreadpoolParams([0; 1024]);
            // SAFETY: `params` has room for `struct ggml_threadpool_params`,
            // which `ggml_threadpool_params_init` fills; `poll` is a u32 at
            // POLL_OFFSET (ggml.h), set to 0: workers sleep between graphs.
            let tp = unsafe {
                (g.threadpool_params_init)(&mut params, t as i32);
                params.0[ggml::POLL_OFFSET..ggml::POLL_OFFSET + 4]
                    .copy_from_slice(&0u32.to_ne_bytes());
                (g.threadpool_new)(&mut params)
            };
            if tp.is_null() {
                return Err("ggml_threadpool_new failed".into());
            }
            // SAFETY: `gf` is the graph built above, `tp` a live threadpool.
            let mut plan = unsafe { (g.graph_plan)(gf.cast_const(), t as i32, tp) };
            let mut work = vec![0u8; plan.work_size];
            plan.work_data = if work.is_empty() {
                std::ptr::null_mut()
            } else {
                work.as_mut_ptr()
            };
            let pool = rayon::ThreadPoolBuilder::new().num_threads(t).build()?;
            let mut y = vec![0f32; rows];
            let xs = &x[..];
            let (ours, theirs) = race(
                rounds,
                calls,
                |calls| {
                    pool.install(|| {
                        for _ in 0..calls {
                            matvec(dtype, ws, rows, cols, xs, &mut y).expect("matvec");
                        }
                    })
                },
                |calls| {
                    for _ in 0..calls {
                        // SAFETY: the plan's graph, threadpool and work
                        // buffer are live.
                        unsafe { (g.graph_compute)(gf, &mut plan) };
                    }
                },
            );
            // SAFETY: `out` is the graph output's `rows` floats, written by
            // the compute calls above; nothing writes it concurrently.
            let theirs_y = unsafe { std::slice::from_raw_parts(out, rows) };
            let scale = theirs_y.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-30);
            let worst = y
                .iter()
                .zip(theirs_y)
                .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
            if worst / scale > 1e-3 {
                return Err(format!(
                    "{}: outputs differ by {worst} (scale {scale})",
                    dtype.name()
                )
                .into());
            }
            // SAFETY: `tp` is live and no compute is running.
            unsafe { (g.threadpool_free)(tp) };
            drop(work);
            cells += &format!(
                " {:.2} / {:.2} | **{:.2}x** |",
                gb(ours),
                gb(theirs),
                theirs / ours
            );
        }
        // SAFETY: `ctx` is live and unused from here on.
        unsafe { (g.free)(ctx) };
        println!("| {} |{cells}", dtype.name());
    }
    Ok(())
}

#[cfg(not(target_os = "linux"))]
fn main() {
    eprintln!("ggml_matvec loads llama.cpp's shared libraries with dlopen: Linux only");
}
