//! GGUF reading against plain file I/O, and header parsing alone.
//!
//! As for safetensors, the read benchmarks run on a page-cache-warm file,
//! so they measure getting cached bytes into the CPU through an mmap (plus
//! opening and validating the header) versus through `read` into one reused
//! buffer, not the disk. The file is a >= 1 GiB Llama-7B-like Q4_K_M model
//! whose header carries a 32000-token vocabulary, so `open` pays a realistic
//! header-parsing cost; `gguf_header` measures that cost on its own.

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, SamplingMode, Throughput};
use weightkit_benches::gguf::ensure_gguf;
use weightkit_benches::{checksum, read_checksum};
use weightkit_gguf::{GgufFile, Header, ReadOptions};

/// Read benchmark file: at least 1 GiB of tensor data.
const READ_BYTES: u64 = 1 << 30;

/// `GgufFile::open` + a checksum over every tensor's bytes, versus a
/// sequential `File` read in 1 MiB chunks + the same checksum; then
/// `Header::parse` alone on the already-mapped file.
pub(crate) fn read(c: &mut Criterion) {
    let path = ensure_gguf("read-llama7b-q4km.gguf", READ_BYTES)
        .expect("generate the GGUF read benchmark file");
    let file_len = std::fs::metadata(&path).expect("stat").len();

    // Warm the page cache, and check that both sides read the same bytes:
    // the header is padded to the alignment, every tensor starts aligned
    // and is a multiple of 8 bytes long, and the padding between tensors is
    // zero; so the checksum of the whole file is the header's plus the
    // tensors'.
    let mut buf = Vec::new();
    let whole = read_checksum(&path, &mut buf).expect("warm-up read");
    let f = GgufFile::open(&path).expect("open");
    assert!(f.is_mmap(), "a 1 GiB file is mapped");
    let data_offset = f.header().data_offset();
    let header = checksum(&f.bytes()[..data_offset]);
    let tensors = (0..f.tensors().len()).fold(0u64, |s, i| {
        s.wrapping_add(checksum(f.tensor_at(i).expect("tensor").data()))
    });
    assert_eq!(whole, header.wrapping_add(tensors), "checksums disagree");

    let mut g = c.benchmark_group("gguf_read");
    g.throughput(Throughput::Bytes(file_len))
        .sample_size(10)
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(8));
    g.bench_function("open+checksum (weightkit mmap)", |b| {
        b.iter(|| {
            let f = GgufFile::open(black_box(&path)).expect("open");
            let mut sum = 0u64;
            for i in 0..f.tensors().len() {
                let view = f.tensor_at(i).expect("tensor");
                sum = sum.wrapping_add(checksum(view.data()));
            }
            black_box(sum)
        });
    });
    g.bench_function("sequential read 1MiB chunks (reference)", |b| {
        b.iter(|| black_box(read_checksum(black_box(&path), &mut buf).expect("read")));
    });
    g.finish();

    // Parsing the header (about 0.5 MiB, mostly the vocabulary) out of the
    // mapped file: what `open` costs beyond the mmap itself. Throughput is
    // in header bytes. No reference: llama.cpp's parser is C++.
    let opts = ReadOptions::default();
    let mut g = c.benchmark_group("gguf_header");
    g.throughput(Throughput::Bytes(data_offset as u64))
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    g.bench_function("Header::parse (32000-token vocab)", |b| {
        b.iter(|| black_box(Header::parse(black_box(f.bytes()), &opts).expect("parse")));
    });
    g.finish();
}
