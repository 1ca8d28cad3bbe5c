//! safetensors reading and writing against plain file I/O.
//!
//! Both read benchmarks run on a page-cache-warm file (a full read happens
//! before the group, and criterion's warm-up repeats it), so they measure
//! the cost of getting cached bytes into the CPU through an mmap versus
//! through `read` into one reused buffer, not the disk.

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, SamplingMode, Throughput};
use weightkit_benches::{
    Rng, bench_dir, bench_metadata, checksum, ensure_file, fill_weights, llama_7b_layout,
    read_checksum,
};
use weightkit_core::TensorSink;
use weightkit_safetensors::{SafeTensors, SafetensorsFile, SafetensorsWriter};

/// Read benchmark file: at least 1 GiB of Llama-7B-like tensors.
const READ_BYTES: u64 = 1 << 30;
/// Write benchmark size: at least 256 MiB (smaller, to keep the run short).
const WRITE_BYTES: u64 = 256 << 20;

/// `SafetensorsFile::open` + a checksum over every tensor's bytes, versus a
/// sequential `File` read in 1 MiB chunks + the same checksum.
pub(crate) fn read(c: &mut Criterion) {
    let path = ensure_file(
        "read-llama7b.safetensors",
        llama_7b_layout(READ_BYTES, true),
    )
    .expect("generate the read benchmark file");
    let file_len = std::fs::metadata(&path).expect("stat").len();

    // Warm the page cache, and check that both sides read the same bytes:
    // the header and every tensor are multiples of 8 bytes long, so the
    // checksum of the whole file is the header's plus the tensors'.
    let mut buf = Vec::new();
    let whole = read_checksum(&path, &mut buf).expect("warm-up read");
    let st = SafetensorsFile::open(&path).expect("open");
    let header = checksum(&st.bytes()[..st.header().data_start()]);
    let tensors = (0..st.tensors().len()).fold(0u64, |s, i| {
        s.wrapping_add(checksum(st.tensor_at(i).expect("tensor").data()))
    });
    assert_eq!(whole, header.wrapping_add(tensors), "checksums disagree");
    drop(st);

    let mut g = c.benchmark_group("safetensors_read");
    g.throughput(Throughput::Bytes(file_len))
        .sample_size(10)
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(8));
    g.bench_function("open+checksum (weightkit mmap)", |b| {
        b.iter(|| {
            let f = SafetensorsFile::open(black_box(&path)).expect("open");
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
}

/// `SafetensorsWriter` streaming a Llama-like layout tensor by tensor,
/// versus writing one pre-built buffer of the same size.
///
/// The writer ends with `finish()`, which fsyncs the temporary file and
/// renames it into place; so besides the plain `std::fs::write` reference
/// (page-cache speed) there is `std::fs::write` + `sync_all`, the fair
/// comparison for a durable write.
pub(crate) fn write(c: &mut Criterion) {
    let infos = llama_7b_layout(WRITE_BYTES, false);
    let metadata = bench_metadata();
    let lens: Vec<usize> = infos.iter().map(|t| t.byte_len().expect("len")).collect();
    // Every tensor's data, in declared order, pre-built once.
    let mut data = vec![0u8; lens.iter().sum()];
    let mut rng = Rng::new(7);
    let mut at = 0;
    for (info, &len) in infos.iter().zip(&lens) {
        fill_weights(&mut rng, info.dtype, &mut data[at..at + len]);
        at += len;
    }
    let write_ours = |path: &std::path::Path| {
        let mut w = SafetensorsWriter::create(path, infos.clone(), &metadata).expect("create");
        let mut at = 0;
        for (info, &len) in infos.iter().zip(&lens) {
            w.write_tensor(&info.name, &data[at..at + len])
                .expect("write");
            at += len;
        }
        w.finish().expect("finish")
    };
    let dir = bench_dir().expect("bench dir");
    let ours = dir.join("write-ours.safetensors");
    let reference = dir.join("write-reference.safetensors");
    // The reference's one pre-built buffer is the very file our writer
    // produces, so both write exactly the same number of bytes.
    let file = std::fs::read(write_ours(&ours)).expect("read back");
    assert_eq!(file.len(), header_len(&file) + data.len());

    let mut g = c.benchmark_group("safetensors_write");
    g.throughput(Throughput::Bytes(file.len() as u64))
        .sample_size(10)
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(8));
    g.bench_function("SafetensorsWriter (fsync+rename)", |b| {
        b.iter(|| black_box(write_ours(black_box(&ours))));
    });
    g.bench_function("fs::write (reference, no fsync)", |b| {
        b.iter(|| std::fs::write(black_box(&reference), black_box(&file)).expect("write"));
    });
    g.bench_function("fs::write+sync_all (reference)", |b| {
        b.iter(|| {
            use std::io::Write;
            let mut f = std::fs::File::create(black_box(&reference)).expect("create");
            f.write_all(black_box(&file)).expect("write");
            f.sync_all().expect("sync");
        });
    });
    g.finish();
    let _ = std::fs::remove_file(&ours);
    let _ = std::fs::remove_file(&reference);
}

/// The header length (prefix included) of a safetensors file.
fn header_len(file: &[u8]) -> usize {
    SafeTensors::parse(file)
        .expect("parse our own output")
        .header()
        .data_start()
}
