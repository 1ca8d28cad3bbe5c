//! PyTorch zip checkpoints (`.pt`/`.bin` as torch 2.x writes them) against
//! safetensors, reading the same tensors.
//!
//! Both files hold the same >= 512 MiB of Llama-7B-like tensors with the
//! same bytes, written by our own writers (`TorchWriter`,
//! `SafetensorsWriter`). Both are page-cache-warm and memory-mapped; torch's
//! storages are stored (uncompressed) and contiguous, so `tensor_at` lends
//! them zero-copy, like safetensors. The difference is what `open` costs:
//! a ZIP central directory and a pickle (run through the safe VM and
//! interpreted as tensors) against a JSON header. The ratio between the two
//! is the number to watch; throughput is in tensor-data bytes, equal for
//! both. `pickle_open` times the opening alone.

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, SamplingMode, Throughput};
use weightkit_benches::pickle::ensure_torch_file;
use weightkit_benches::{checksum, data_len, ensure_file, llama_7b_layout, read_checksum};
use weightkit_core::CowTensor;
use weightkit_pickle::TorchFile;
use weightkit_safetensors::SafetensorsFile;

/// Benchmark files: at least 512 MiB of tensor data each.
const READ_BYTES: u64 = 512 << 20;

/// `TorchFile::open` + a checksum over every tensor's bytes, versus
/// `SafetensorsFile::open` + the same checksum over the same tensors.
pub(crate) fn read(c: &mut Criterion) {
    let infos = llama_7b_layout(READ_BYTES, true);
    let bytes = data_len(&infos);
    let pt = ensure_torch_file("read-llama-512m.pt", infos.clone())
        .expect("generate the torch benchmark file");
    let st = ensure_file("read-llama-512m.safetensors", infos)
        .expect("generate the safetensors benchmark file");

    // Warm the page cache, and check that both sides see the same bytes and
    // that every torch tensor is lent zero-copy.
    let mut buf = Vec::new();
    read_checksum(&pt, &mut buf).expect("warm-up read");
    read_checksum(&st, &mut buf).expect("warm-up read");
    let (torch, safe) = (torch_checksum(&pt), safetensors_checksum(&st));
    assert_eq!(torch, safe, "the two files hold different tensor bytes");
    let f = TorchFile::open(&pt).expect("open");
    let tensors = f.tensors().len();
    for i in 0..tensors {
        let t = f.tensor_at(i).expect("tensor");
        assert!(matches!(t, CowTensor::Borrowed(_)), "tensor {i} was copied");
    }
    drop(f);

    let mut g = c.benchmark_group("pickle_read");
    g.throughput(Throughput::Bytes(bytes))
        .sample_size(10)
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5));
    g.bench_function("torch zip: open+checksum", |b| {
        b.iter(|| black_box(torch_checksum(black_box(&pt))));
    });
    g.bench_function("safetensors: open+checksum", |b| {
        b.iter(|| black_box(safetensors_checksum(black_box(&st))));
    });
    g.finish();

    // Opening alone (map, parse, validate; no tensor bytes touched): where
    // the two formats differ. Throughput is in tensors.
    let mut g = c.benchmark_group("pickle_open");
    g.throughput(Throughput::Elements(tensors as u64))
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    g.bench_function("torch zip: open", |b| {
        b.iter(|| black_box(TorchFile::open(black_box(&pt)).expect("open")));
    });
    g.bench_function("safetensors: open", |b| {
        b.iter(|| black_box(SafetensorsFile::open(black_box(&st)).expect("open")));
    });
    g.finish();
}

fn torch_checksum(path: &std::path::Path) -> u64 {
    let f = TorchFile::open(path).expect("open");
    (0..f.tensors().len()).fold(0u64, |sum, i| {
        let t = f.tensor_at(i).expect("tensor");
        sum.wrapping_add(checksum(t.view().data()))
    })
}

fn safetensors_checksum(path: &std::path::Path) -> u64 {
    let f = SafetensorsFile::open(path).expect("open");
    (0..f.tensors().len()).fold(0u64, |sum, i| {
        let view = f.tensor_at(i).expect("tensor");
        sum.wrapping_add(checksum(view.data()))
    })
}
