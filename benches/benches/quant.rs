//! ggml block quantization (`weightkit-quant`): the measurements of
//! llama.cpp's `tests/test-quantize-perf`, per type.
//!
//! One group per type (`quant_<type>`, ggml's type names), seven benchmarks:
//!
//! * `quantize (1 thread)`: [`quantize_into`] without an importance matrix
//!   (ggml's `quantize_row_*_ref`, what `llama-quantize` runs) on 1 MiB of
//!   f32, 64 rows of 4096. Compare with PERF.md's `quantize_row_q_reference`.
//! * `quantize with imatrix (1 thread)`: the same with an importance
//!   vector (ggml's `quantize_row_*_impl`, `llama-quantize --imatrix`). No
//!   `test-quantize-perf` counterpart.
//! * `quantize (all threads)`: [`quantize_into_parallel`] on rayon's global
//!   pool over 64 MiB of f32 (4096 rows of 4096), larger than the caches.
//!   No llama.cpp counterpart: its ideal is the 1-thread figure times the
//!   number of cores.
//! * `dequantize (1 thread)`: [`dequantize`] of one 4096-value row, as
//!   `test-quantize-perf` measures `dequantize_row_q`.
//! * `vec_dot (1 thread)`: the type's dot product over one 4096-value row
//!   against its partner type (q8_0, q8_1 or q8_K), as `vec_dot_q`, through
//!   the dispatching byte-level `vec_dot`.
//! * `matvec (1 thread)`, `matvec (all threads)`: [`matvec`] of the 4096 x
//!   4096 matrix quantized above (larger than L2) times a 4096-value f32
//!   vector, in a rayon pool of one thread and of one per core: a linear
//!   layer's decode step. llama.cpp's `ggml_mul_mat` is timed against it in
//!   one process by the `ggml_matvec` example (`cargo xtask quant-perf`).
//!
//! Throughput is `Bytes(4 * values)`: criterion's GiB/s is
//! `test-quantize-perf`'s "float32 throughput" GB/s (2^30 bytes), so the
//! figures compare directly with `weightkit_benches::quant::
//! llama_cpp_reference_gbps`. The input is llama.cpp's own synthetic data
//! (`0.1 + 2 cos(i + offset)`; offset 0 for the weights, 1 for the other
//! operand of the dot product).
//!
//! Kernels dispatch on `weightkit_quant::simd::level()`: set
//! `WEIGHTKIT_SIMD=scalar` (or `avx2`) to measure a lower level.
//!
//! Run just this group with
//! `cargo bench -p weightkit-benches --bench main -- --noplot quant`.

use std::hint::black_box;
use std::time::Duration;

use criterion::measurement::WallTime;
use criterion::{BenchmarkGroup, Criterion, SamplingMode, Throughput};
use weightkit_benches::quant::{REFERENCE_VALUES, generate_data};
use weightkit_core::DType;
use weightkit_quant::{
    dequantize, matvec, quantize, quantize_into, quantize_into_parallel, row_size, uses_importance,
    vec_dot, vec_dot_type,
};

/// Values per row, as in llama.cpp's measurements.
const ROW: usize = REFERENCE_VALUES;
/// Values quantized per single-threaded call: 1 MiB of f32.
const SERIAL_VALUES: usize = (1 << 20) / 4;
/// Values quantized per all-threads call: 64 MiB of f32.
const PARALLEL_VALUES: usize = (64 << 20) / 4;

/// The measured types: PERF.md's ten, then the extras. ggml's names.
const TYPES: [(DType, &str); 20] = [
    (DType::Q4_0, "q4_0"),
    (DType::Q4_1, "q4_1"),
    (DType::Q5_0, "q5_0"),
    (DType::Q5_1, "q5_1"),
    (DType::Q8_0, "q8_0"),
    (DType::Q2_K, "q2_K"),
    (DType::Q3_K, "q3_K"),
    (DType::Q4_K, "q4_K"),
    (DType::Q5_K, "q5_K"),
    (DType::Q6_K, "q6_K"),
    (DType::IQ4_NL, "iq4_nl"),
    (DType::IQ4_XS, "iq4_xs"),
    (DType::TQ1_0, "tq1_0"),
    (DType::TQ2_0, "tq2_0"),
    (DType::MXFP4, "mxfp4"),
    (DType::NVFP4, "nvfp4"),
    (DType::Q1_0, "q1_0"),
    (DType::Q2_0, "q2_0"),
    (DType::F16, "f16"),
    (DType::BF16, "bf16"),
];

/// `4 * values` bytes: f32-equivalent throughput.
fn f32_bytes(values: usize) -> Throughput {
    Throughput::Bytes(4 * values as u64)
}

/// The byte-level API works in place on buffers aligned for the blocks and
/// copies the others (4 bytes is the largest block alignment): make sure the
/// benchmarks time the former.
fn assert_aligned(bytes: &[u8]) {
    assert_eq!(bytes.as_ptr().align_offset(8), 0, "unaligned buffer");
}

/// The `vec_dot` benchmark of `dtype`: `x` holds a row of `dtype`, `y` the
/// same number of values of its partner type (q8_0, q8_1 or q8_K), through
/// the dispatching byte-level [`vec_dot`] (the SIMD kernel where one exists).
fn bench_vec_dot(g: &mut BenchmarkGroup<'_, WallTime>, dtype: DType, x: &[u8], y: &[u8]) {
    vec_dot(dtype, x, y).expect("vec_dot");
    g.bench_function("vec_dot (1 thread)", |b| {
        b.iter(|| vec_dot(dtype, black_box(x), black_box(y)).expect("vec_dot"));
    });
}

/// Per type: quantize on one thread and on all, dequantize and vec_dot on
/// one (see the module docs for sizes and what each compares with).
pub(crate) fn quant(c: &mut Criterion) {
    let weights = generate_data(0.0, PARALLEL_VALUES);
    let serial = &weights[..SERIAL_VALUES];
    let row = &weights[..ROW];
    let other = generate_data(1.0, ROW);
    // An importance vector like llama-imatrix's: positive, uneven.
    let imatrix: Vec<f32> = (0..ROW)
        .map(|i| 0.5 + ((i * 37) % 101) as f32 / 50.0)
        .collect();
    let mut out = vec![0f32; ROW];
    let pool = |threads| {
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .expect("thread pool")
    };
    let (one_thread, all_threads) = (pool(1), pool(0));

    for (dtype, name) in TYPES {
        let mut g = c.benchmark_group(format!("quant_{name}"));
        g.sample_size(10)
            .warm_up_time(Duration::from_millis(300))
            .measurement_time(Duration::from_secs(1));

        // The quantizers take milliseconds to a second per call: one flat
        // sample of a few calls each.
        g.sampling_mode(SamplingMode::Flat);
        let mut q = quantize(dtype, serial, ROW, None).expect("quantize");
        assert_aligned(&q);
        g.throughput(f32_bytes(SERIAL_VALUES));
        g.bench_function("quantize (1 thread)", |b| {
            b.iter(|| {
                quantize_into(dtype, black_box(serial), ROW, None, &mut q).expect("quantize")
            });
        });

        // llama-quantize --imatrix: ggml's importance-weighted path.
        if uses_importance(dtype) {
            g.bench_function("quantize with imatrix (1 thread)", |b| {
                b.iter(|| {
                    quantize_into(dtype, black_box(serial), ROW, Some(&imatrix), &mut q)
                        .expect("quantize")
                });
            });
        }

        let mut q = vec![0u8; row_size(dtype, ROW).expect("row size") * (PARALLEL_VALUES / ROW)];
        assert_aligned(&q);
        g.throughput(f32_bytes(PARALLEL_VALUES));
        g.bench_function("quantize (all threads)", |b| {
            b.iter(|| {
                quantize_into_parallel(dtype, black_box(&weights), ROW, None, &mut q)
                    .expect("quantize")
            });
        });

        // The quantized matrix (4096 x 4096) times a vector: a linear
        // layer's decode step, each call inside the pool (as a model's
        // forward pass runs) so that no call pays a hand-off to it.
        // (Filled here too: a filter may have skipped the bench above.)
        quantize_into_parallel(dtype, &weights, ROW, None, &mut q).expect("quantize");
        let rows = PARALLEL_VALUES / ROW;
        let mut y = vec![0f32; rows];
        for (label, pool) in [
            ("matvec (1 thread)", &one_thread),
            ("matvec (all threads)", &all_threads),
        ] {
            g.bench_function(label, |b| {
                pool.install(|| {
                    b.iter(|| {
                        matvec(dtype, black_box(&q), rows, ROW, &other, &mut y).expect("matvec")
                    })
                });
            });
        }
        drop(q);

        g.sampling_mode(SamplingMode::Auto);
        g.throughput(f32_bytes(ROW));
        let x = quantize(dtype, row, ROW, None).expect("quantize");
        assert_aligned(&x);
        g.bench_function("dequantize (1 thread)", |b| {
            b.iter(|| dequantize(dtype, black_box(&x), &mut out).expect("dequantize"));
        });

        let partner = vec_dot_type(dtype).expect("every measured type has a dot product");
        let y = quantize(partner, &other, ROW, None).expect("quantize partner");
        bench_vec_dot(&mut g, dtype, &x, &y);
        g.finish();
    }
}
