//! LoRA merge arithmetic (`weightkit_lora::apply_module`): a rank-16 delta
//! applied to a 4096 x 4096 f32 weight, against adding an already computed
//! dense delta of the same size (row-parallel too), the memory-bound floor any
//! merge must pay once `B @ A` is known.

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, Throughput};
use rayon::prelude::*;
use weightkit_benches::Rng;
use weightkit_lora::{AdapterConfig, LoraModule, apply_module};

const ROWS: usize = 4096;
const COLS: usize = 4096;
const RANK: usize = 16;

pub(crate) fn lora(c: &mut Criterion) {
    let config = AdapterConfig::from_json_str(&format!(
        r#"{{"peft_type": "LORA", "r": {RANK}, "lora_alpha": 32}}"#
    ))
    .expect("config");
    let mut rng = Rng::new(7);
    let module = LoraModule {
        module: "layers.0.q_proj".into(),
        target: "layers.0.q_proj.weight".into(),
        rank: RANK,
        a: (0..RANK * COLS).map(|_| rng.weight(0.02)).collect(),
        a_cols: COLS,
        b: (0..ROWS * RANK).map(|_| rng.weight(0.02)).collect(),
        b_rows: ROWS,
        scaling: 2.0,
        magnitude: None,
        bias: None,
        embedding: false,
    };
    let mut weight: Vec<f32> = (0..ROWS * COLS).map(|_| rng.weight(0.02)).collect();
    let delta: Vec<f32> = (0..ROWS * COLS).map(|_| rng.weight(0.001)).collect();

    let mut g = c.benchmark_group("lora_merge_4096x4096_r16");
    g.throughput(Throughput::Bytes((ROWS * COLS * 4) as u64))
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    g.bench_function("weightkit apply_module", |b| {
        b.iter(|| apply_module(&config, &module, black_box(&mut weight), 1.0, false));
    });
    g.bench_function("add precomputed dense delta (floor)", |b| {
        b.iter(|| {
            weight
                .par_chunks_mut(COLS)
                .zip(black_box(&delta).par_chunks(COLS))
                .for_each(|(w, d)| {
                    for (w, &d) in w.iter_mut().zip(d) {
                        *w += 2.0 * d;
                    }
                });
        });
    });
    g.finish();
    black_box(&weight);
}
