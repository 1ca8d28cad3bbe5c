//! LoRA merge arithmetic, the operation `merge_lora` runs per targeted weight.
//!
//! * `lora_merge_4096x4096_r16` (f32): [`apply_module`] on a weight already
//!   widened to f32, against adding an already computed dense delta of the
//!   same size (row-parallel too), the memory-bound floor any merge must pay
//!   once `B @ A` is known.
//! * `lora_merge_<rows>x<cols>_<dtype>_r16` for 4096 x 4096 and 4096 x 14336
//!   (Llama-3-8B's `down_proj`) in f16 and bf16: [`apply_module_in_place`]
//!   (widen a row, add its rank-16 update in f32, round once) on one thread
//!   and on all, against a plain copy of the weight's bytes (`memcpy`: read
//!   and write every byte once, the bandwidth floor of an in-place update).
//!
//! PyTorch's side (PEFT's merge, `W += (B @ A * scaling).to(W.dtype)`) is
//! timed by `xtask/interop/lora_merge_perf.py` on the same machine.
//!
//! Run just this group with
//! `cargo bench -p weightkit-benches --bench main -- --noplot lora`.

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, Throughput};
use rayon::prelude::*;
use weightkit_benches::Rng;
use weightkit_core::{DType, convert};
use weightkit_lora::{AdapterConfig, LoraModule, apply_module, apply_module_in_place};

const RANK: usize = 16;

fn module(rng: &mut Rng, rows: usize, cols: usize) -> LoraModule {
    LoraModule {
        module: "layers.0.mlp.down_proj".into(),
        target: "layers.0.mlp.down_proj.weight".into(),
        rank: RANK,
        a: (0..RANK * cols).map(|_| rng.weight(0.02)).collect(),
        a_cols: cols,
        b: (0..rows * RANK).map(|_| rng.weight(0.02)).collect(),
        b_rows: rows,
        scaling: 2.0,
        magnitude: None,
        bias: None,
        embedding: false,
    }
}

pub(crate) fn lora(c: &mut Criterion) {
    let config = AdapterConfig::from_json_str(&format!(
        r#"{{"peft_type": "LORA", "r": {RANK}, "lora_alpha": 32}}"#
    ))
    .expect("config");
    let mut rng = Rng::new(7);

    let (rows, cols) = (4096, 4096);
    let m = module(&mut rng, rows, cols);
    let mut weight: Vec<f32> = (0..rows * cols).map(|_| rng.weight(0.02)).collect();
    let delta: Vec<f32> = (0..rows * cols).map(|_| rng.weight(0.001)).collect();
    let mut g = c.benchmark_group("lora_merge_4096x4096_r16");
    g.throughput(Throughput::Bytes((rows * cols * 4) as u64))
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    g.bench_function("weightkit apply_module", |b| {
        b.iter(|| apply_module(&config, &m, black_box(&mut weight), 1.0, false));
    });
    g.bench_function("add precomputed dense delta (floor)", |b| {
        b.iter(|| {
            weight
                .par_chunks_mut(cols)
                .zip(black_box(&delta).par_chunks(cols))
                .for_each(|(w, d)| {
                    for (w, &d) in w.iter_mut().zip(d) {
                        *w += 2.0 * d;
                    }
                });
        });
    });
    g.finish();
    drop((weight, delta));

    let one = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .expect("one-thread pool");
    for (rows, cols) in [(4096, 4096), (4096, 14336)] {
        let m = module(&mut rng, rows, cols);
        let values: Vec<f32> = (0..rows * cols).map(|_| rng.weight(0.02)).collect();
        for (dtype, name) in [(DType::F16, "f16"), (DType::BF16, "bf16")] {
            let mut bytes = vec![0u8; values.len() * 2];
            convert::encode_f32(dtype, &values, &mut bytes).expect("encode");
            let mut copy = vec![0u8; bytes.len()];
            let mut g = c.benchmark_group(format!("lora_merge_{rows}x{cols}_{name}_r16"));
            // Bytes of the weight read and written once.
            g.throughput(Throughput::Bytes(bytes.len() as u64))
                .sample_size(10)
                .warm_up_time(Duration::from_millis(500))
                .measurement_time(Duration::from_secs(3));
            g.bench_function("weightkit in place (1 thread)", |b| {
                b.iter(|| {
                    one.install(|| {
                        apply_module_in_place(&config, &m, dtype, black_box(&mut bytes), 1.0, false)
                    })
                });
            });
            g.bench_function("weightkit in place (all threads)", |b| {
                b.iter(|| {
                    apply_module_in_place(&config, &m, dtype, black_box(&mut bytes), 1.0, false)
                });
            });
            g.bench_function("memcpy of the weight (1 thread, floor)", |b| {
                b.iter(|| copy.copy_from_slice(black_box(&bytes)));
            });
            g.finish();
            black_box(&copy);
        }
    }
}
