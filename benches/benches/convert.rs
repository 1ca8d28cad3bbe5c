//! Bulk f16/bf16 <-> f32 conversion (`weightkit_core::convert`, byte level)
//! against `half`'s scalar per-element conversion, the obvious loop a user
//! would otherwise write.

use std::hint::black_box;
use std::time::Duration;

use criterion::measurement::WallTime;
use criterion::{BenchmarkGroup, Criterion, Throughput};
use half::{bf16, f16};
use weightkit_benches::Rng;
use weightkit_core::DType;
use weightkit_core::convert::{decode_f32, encode_f32};

/// Elements per conversion: 16 Mi (64 MiB of f32).
const N: usize = 16 << 20;

/// A group of `N`-element conversions: ours and the reference.
fn group<'a>(c: &'a mut Criterion, name: &str) -> BenchmarkGroup<'a, WallTime> {
    let mut g = c.benchmark_group(name);
    g.throughput(Throughput::Elements(N as u64))
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    g
}

/// f16/bf16 -> f32 and back over `N` elements, ours versus `half`'s scalar loop.
pub(crate) fn convert(c: &mut Criterion) {
    let mut rng = Rng::new(42);
    let wide: Vec<f32> = (0..N).map(|_| rng.weight(0.05)).collect();
    let f16_bytes: Vec<u8> = wide
        .iter()
        .flat_map(|&x| f16::from_f32(x).to_bits().to_le_bytes())
        .collect();
    let bf16_bytes: Vec<u8> = wide
        .iter()
        .flat_map(|&x| bf16::from_f32(x).to_bits().to_le_bytes())
        .collect();
    let mut out_f32 = vec![0f32; N];
    let mut out_half = vec![0u8; N * 2];

    let mut g = group(c, "convert_f16_to_f32");
    g.bench_function("weightkit decode_f32", |b| {
        b.iter(|| decode_f32(DType::F16, black_box(&f16_bytes), &mut out_f32).expect("decode"));
    });
    g.bench_function("half scalar (reference)", |b| {
        b.iter(|| {
            for (d, s) in out_f32
                .iter_mut()
                .zip(black_box(&f16_bytes).chunks_exact(2))
            {
                *d = f16::from_bits(u16::from_le_bytes([s[0], s[1]])).to_f32();
            }
        });
    });
    g.finish();
    black_box(&out_f32);

    let mut g = group(c, "convert_bf16_to_f32");
    g.bench_function("weightkit decode_f32", |b| {
        b.iter(|| decode_f32(DType::BF16, black_box(&bf16_bytes), &mut out_f32).expect("decode"));
    });
    g.bench_function("half scalar (reference)", |b| {
        b.iter(|| {
            for (d, s) in out_f32
                .iter_mut()
                .zip(black_box(&bf16_bytes).chunks_exact(2))
            {
                *d = bf16::from_bits(u16::from_le_bytes([s[0], s[1]])).to_f32();
            }
        });
    });
    g.finish();
    black_box(&out_f32);

    let mut g = group(c, "convert_f32_to_f16");
    g.bench_function("weightkit encode_f32", |b| {
        b.iter(|| encode_f32(DType::F16, black_box(&wide), &mut out_half).expect("encode"));
    });
    g.bench_function("half scalar (reference)", |b| {
        b.iter(|| {
            for (d, s) in out_half.chunks_exact_mut(2).zip(black_box(&wide)) {
                d.copy_from_slice(&f16::from_f32(*s).to_bits().to_le_bytes());
            }
        });
    });
    g.finish();
    black_box(&out_half);

    let mut g = group(c, "convert_f32_to_bf16");
    g.bench_function("weightkit encode_f32", |b| {
        b.iter(|| encode_f32(DType::BF16, black_box(&wide), &mut out_half).expect("encode"));
    });
    g.bench_function("half scalar (reference)", |b| {
        b.iter(|| {
            for (d, s) in out_half.chunks_exact_mut(2).zip(black_box(&wide)) {
                d.copy_from_slice(&bf16::from_f32(*s).to_bits().to_le_bytes());
            }
        });
    });
    g.finish();
    black_box(&out_half);
}
