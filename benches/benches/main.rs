//! weightkit's benchmarks: one criterion binary, one module per area
//! (candle's `benches/bench_main.rs` layout).
//!
//! Run with `cargo bench -p weightkit-benches --bench main -- --noplot`.
//! Each group pairs our code with a reference that bounds what is
//! achievable, so the ratio between them is the number to watch.
//! Generated files go to `$WEIGHTKIT_BENCH_DIR` (default
//! `<temp_dir>/weightkit-bench`) and are reused between runs.

use criterion::{criterion_group, criterion_main};

mod convert;
mod gguf;
mod init;
mod lora;
mod pickle;
mod quant;
mod safetensors;

// The disk-heavy write group runs last: the dirty pages it leaves behind
// are flushed in the background and would slow whatever ran next.
criterion_group!(
    benches,
    convert::convert,
    safetensors::read,
    gguf::read,
    pickle::read,
    quant::quant,
    init::init,
    lora::lora,
    safetensors::write
);
criterion_main!(benches);
