//! ggml block quantization (`weightkit-quant`): the measurements of
//! llama.cpp's `tests/test-quantize-perf`, per type.
//!
//! One group per type (`quant_<type>`, ggml's type names), four benchmarks:
//!
//! * `quantize (1 thread)`: [`quantize_into`] without an importance matrix
//!   (ggml's `quantize_row_*_ref`, what `llama-quantize` runs) on 1 MiB of
//!   f32, 64 rows of 4096. Compare with PERF.md's `quantize_row_q_reference`.
//! * `quantize (all threads)`: [`quantize_into_parallel`] on rayon's global
//!   pool over 64 MiB of f32 (4096 rows of 4096), larger than the caches.
//!   No llama.cpp counterpart: its ideal is the 1-thread figure times the
//!   number of cores.
//! * `dequantize (1 thread)`: [`dequantize`] of one 4096-value row, as
//!   `test-quantize-perf` measures `dequantize_row_q`.
//! * `vec_dot (1 thread)`: the type's dot product over one 4096-value row
//!   against its partner type (q8_0, q8_1 or q8_K), as `vec_dot_q`.
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

use bytemuck::Pod;
use criterion::measurement::WallTime;
use criterion::{BenchmarkGroup, Criterion, SamplingMode, Throughput};
use weightkit_benches::quant::{REFERENCE_VALUES, generate_data};
use weightkit_core::DType;
use weightkit_quant::iquants::*;
use weightkit_quant::kquants::*;
use weightkit_quant::legacy::*;
use weightkit_quant::{
    QuantError, dequantize, quantize, quantize_into, quantize_into_parallel, row_size,
};

/// Values per row, as in llama.cpp's measurements.
const ROW: usize = REFERENCE_VALUES;
/// Values quantized per single-threaded call: 1 MiB of f32.
const SERIAL_VALUES: usize = (1 << 20) / 4;
/// Values quantized per all-threads call: 64 MiB of f32.
const PARALLEL_VALUES: usize = (64 << 20) / 4;

/// The measured types: PERF.md's ten, then the extras. ggml's names.
const TYPES: [(DType, &str); 15] = [
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
];

/// `4 * values` bytes: f32-equivalent throughput.
fn f32_bytes(values: usize) -> Throughput {
    Throughput::Bytes(4 * values as u64)
}

/// The dot-product partner of `dtype` (ggml's `vec_dot_type`).
fn partner(dtype: DType) -> DType {
    match dtype {
        DType::Q4_1 | DType::Q5_1 => DType::Q8_1,
        DType::Q4_0 | DType::Q5_0 | DType::Q8_0 | DType::IQ4_NL | DType::MXFP4 => DType::Q8_0,
        _ => DType::Q8_K,
    }
}

/// The byte-level API works in place on buffers aligned for the blocks and
/// copies the others (4 bytes is the largest block alignment): make sure the
/// benchmarks time the former.
fn assert_aligned(bytes: &[u8]) {
    assert_eq!(bytes.as_ptr().align_offset(8), 0, "unaligned buffer");
}

/// Benchmarks `f(x, y)` with both sides copied into properly aligned block
/// vectors first (the byte buffers may not be aligned for the blocks).
fn dot<X: Pod, Y: Pod>(
    g: &mut BenchmarkGroup<'_, WallTime>,
    x: &[u8],
    y: &[u8],
    f: fn(&[X], &[Y]) -> Result<f32, QuantError>,
) {
    let x: Vec<X> = bytemuck::pod_collect_to_vec(x);
    let y: Vec<Y> = bytemuck::pod_collect_to_vec(y);
    f(&x, &y).expect("vec_dot");
    g.bench_function("vec_dot (1 thread)", |b| {
        b.iter(|| f(black_box(&x), black_box(&y)).expect("vec_dot"));
    });
}

/// The `vec_dot` benchmark of `dtype`: `x` holds rows of `dtype`, `y` the
/// same number of values of [`partner`]`(dtype)`.
fn vec_dot(g: &mut BenchmarkGroup<'_, WallTime>, dtype: DType, x: &[u8], y: &[u8]) {
    match dtype {
        DType::Q4_0 => dot(g, x, y, vec_dot_q4_0_q8_0),
        DType::Q4_1 => dot(g, x, y, vec_dot_q4_1_q8_1),
        DType::Q5_0 => dot(g, x, y, vec_dot_q5_0_q8_0),
        DType::Q5_1 => dot(g, x, y, vec_dot_q5_1_q8_1),
        DType::Q8_0 => dot(g, x, y, vec_dot_q8_0_q8_0),
        DType::Q2_K => dot(g, x, y, vec_dot_q2_k_q8_k),
        DType::Q3_K => dot(g, x, y, vec_dot_q3_k_q8_k),
        DType::Q4_K => dot(g, x, y, vec_dot_q4_k_q8_k),
        DType::Q5_K => dot(g, x, y, vec_dot_q5_k_q8_k),
        DType::Q6_K => dot(g, x, y, vec_dot_q6_k_q8_k),
        DType::IQ4_NL => dot(g, x, y, vec_dot_iq4_nl_q8_0),
        DType::IQ4_XS => dot(g, x, y, vec_dot_iq4_xs_q8_k),
        DType::TQ1_0 => dot(g, x, y, vec_dot_tq1_0_q8_k),
        DType::TQ2_0 => dot(g, x, y, vec_dot_tq2_0_q8_k),
        DType::MXFP4 => dot(g, x, y, vec_dot_mxfp4_q8_0),
        _ => unreachable!("no vec_dot for {dtype:?}"),
    }
}

/// Per type: quantize on one thread and on all, dequantize and vec_dot on
/// one (see the module docs for sizes and what each compares with).
pub(crate) fn quant(c: &mut Criterion) {
    let weights = generate_data(0.0, PARALLEL_VALUES);
    let serial = &weights[..SERIAL_VALUES];
    let row = &weights[..ROW];
    let other = generate_data(1.0, ROW);
    let mut out = vec![0f32; ROW];

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

        let mut q = vec![0u8; row_size(dtype, ROW).expect("row size") * (PARALLEL_VALUES / ROW)];
        assert_aligned(&q);
        g.throughput(f32_bytes(PARALLEL_VALUES));
        g.bench_function("quantize (all threads)", |b| {
            b.iter(|| {
                quantize_into_parallel(dtype, black_box(&weights), ROW, None, &mut q)
                    .expect("quantize")
            });
        });
        drop(q);

        g.sampling_mode(SamplingMode::Auto);
        g.throughput(f32_bytes(ROW));
        let x = quantize(dtype, row, ROW, None).expect("quantize");
        assert_aligned(&x);
        g.bench_function("dequantize (1 thread)", |b| {
            b.iter(|| dequantize(dtype, black_box(&x), &mut out).expect("dequantize"));
        });

        let y = quantize(partner(dtype), &other, ROW, None).expect("quantize partner");
        vec_dot(&mut g, dtype, &x, &y);
        g.finish();
    }
}
