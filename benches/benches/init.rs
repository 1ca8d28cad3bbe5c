//! Weight initialization (`weightkit-init`): filling 1 GiB of f32, shape
//! `[262144, 1024]`, in place with [`Init::fill`]. The buffer is allocated
//! (and its pages faulted in) once, outside the timed loop.
//!
//! * `kaiming_uniform (1 thread)` / `(all threads)`: default mode
//!   ([`Rng::seeded`], Philox), on a 1-thread rayon pool and on rayon's
//!   global pool. Compare with `torch.nn.init.kaiming_uniform_` under
//!   `torch.set_num_threads(1)` and torch's default.
//! * `kaiming_normal (all threads)`: default mode, Box-Muller.
//! * `kaiming_uniform torch mode`: [`Rng::torch`] (mt19937, torch's CPU
//!   kernel), sequential by nature like torch itself.
//!
//! Throughput is `Bytes(4 * values)`.
//!
//! Run just this group with
//! `cargo bench -p weightkit-benches --bench main -- --noplot init`.

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, SamplingMode, Throughput};
use weightkit_init::{Init, Rng};

/// `[out, in]`, 2^28 values: 1 GiB of f32.
const SHAPE: [usize; 2] = [262_144, 1024];

pub(crate) fn init(c: &mut Criterion) {
    let n = SHAPE[0] * SHAPE[1];
    let mut buf = vec![0f32; n];
    let uniform = Init::kaiming_uniform();
    let normal = Init::kaiming_normal();
    // Fault the pages in before anything is timed.
    uniform
        .fill(&mut Rng::seeded(0), &SHAPE, &mut buf)
        .expect("kaiming_uniform fill");
    let single = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .expect("1-thread rayon pool");

    let mut group = c.benchmark_group("init");
    group
        .throughput(Throughput::Bytes(4 * n as u64))
        .sample_size(10)
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));

    let mut rng = Rng::seeded(42);
    group.bench_function("kaiming_uniform (1 thread)", |b| {
        b.iter(|| {
            single
                .install(|| uniform.fill(&mut rng, &SHAPE, black_box(&mut buf)))
                .expect("kaiming_uniform fill")
        })
    });
    group.bench_function("kaiming_uniform (all threads)", |b| {
        b.iter(|| {
            uniform
                .fill(&mut rng, &SHAPE, black_box(&mut buf))
                .expect("kaiming_uniform fill")
        })
    });
    group.bench_function("kaiming_normal (all threads)", |b| {
        b.iter(|| {
            normal
                .fill(&mut rng, &SHAPE, black_box(&mut buf))
                .expect("kaiming_normal fill")
        })
    });
    let mut torch = Rng::torch(42);
    group.bench_function("kaiming_uniform torch mode", |b| {
        b.iter(|| {
            uniform
                .fill(&mut torch, &SHAPE, black_box(&mut buf))
                .expect("kaiming_uniform fill")
        })
    });
    group.finish();
}
