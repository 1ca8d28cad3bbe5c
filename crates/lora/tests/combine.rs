//! Adapter combination (PEFT 0.21.2's `add_weighted_adapter`, fixtures in
//! testdata/lora/combine written by xtask/interop/make_lora_combine_fixture.py)
//! and LoRA extraction (closed forms and numpy-free float64 singular values
//! written by the same script).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use weightkit_core::TensorSink;
use weightkit_lora::combine::{clamp_factors, magnitude_prune, random_prune};
use weightkit_lora::{
    Adapter, CombinationType, CombineOptions, ExtractOptions, ExtractRank, LoraError,
    MajoritySignMethod, MergeOptions, TargetModules, add_weighted_adapter, extract_lora,
    merge_into, merge_lora,
};

const LLAMA: &str = "testdata/tiny-llama/safetensors-f32/model.safetensors";

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn tmp(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!(
        "weightkit-lora-combine-{}-{name}",
        std::process::id()
    ))
}

fn lora(name: &str) -> Adapter {
    Adapter::open(root().join("testdata/lora").join(name)).unwrap()
}

fn tensors(path: &Path) -> BTreeMap<String, Vec<f32>> {
    let model = weightkit_io::open(path).unwrap();
    let s = model.source();
    s.tensor_infos()
        .iter()
        .enumerate()
        .map(|(i, t)| {
            (
                t.name.clone(),
                s.load(i).unwrap().view().to_f32_vec().unwrap(),
            )
        })
        .collect()
}

fn max_abs(x: &[f32]) -> f32 {
    x.iter().fold(0f32, |m, v| m.max(v.abs()))
}

/// `B @ A` in f64, row-major.
fn product(b: &[f32], a: &[f32], rows: usize, r: usize, cols: usize) -> Vec<f64> {
    let mut out = vec![0f64; rows * cols];
    for i in 0..rows {
        for k in 0..r {
            let bik = f64::from(b[i * r + k]);
            for j in 0..cols {
                out[i * cols + j] += bik * f64::from(a[k * cols + j]);
            }
        }
    }
    out
}

fn frobenius(x: &[f64]) -> f64 {
    x.iter().map(|v| v * v).sum::<f64>().sqrt()
}

fn rel_diff(x: &[f64], y: &[f64]) -> f64 {
    let d: Vec<f64> = x.iter().zip(y).map(|(a, b)| a - b).collect();
    frobenius(&d) / frobenius(y)
}

fn tensors_of(a: &Adapter) -> Vec<(String, Vec<usize>, Vec<f32>)> {
    a.peft_tensors()
        .map(|t| (t.key.to_owned(), t.shape, t.values.to_vec()))
        .collect()
}

fn options(kind: CombinationType) -> CombineOptions {
    CombineOptions::new(kind)
}

/// Our combination against PEFT's fixture `case`: config, module set, and
/// the factors (or their product for SVD) to 1e-5 relative; with
/// `same_zeros`, the zero pattern (the pruning masks) must be identical.
fn check_case(case: &str, ours: &Adapter, product_only: bool, same_zeros: bool) {
    let peft = lora(&format!("combine/{case}"));
    let (c, p) = (ours.config(), peft.config());
    assert_eq!(
        (c.r, c.lora_alpha, c.use_rslora),
        (p.r, p.lora_alpha, p.use_rslora),
        "{case}"
    );
    let sorted = |t: &Option<TargetModules>| match t {
        Some(TargetModules::List(l)) => {
            let mut l = l.clone();
            l.sort();
            l
        }
        other => panic!("{other:?}"),
    };
    assert_eq!(
        sorted(&c.target_modules),
        sorted(&p.target_modules),
        "{case}"
    );
    assert_eq!(ours.modules().len(), peft.modules().len(), "{case}");
    for (m, q) in ours.modules().iter().zip(peft.modules()) {
        assert_eq!(m.module, q.module);
        assert_eq!(
            (m.rank, m.a_cols, m.b_rows),
            (q.rank, q.a_cols, q.b_rows),
            "{}",
            m.module
        );
        assert_eq!(m.scaling, q.scaling);
        if product_only {
            let x = product(&m.b, &m.a, m.b_rows, m.rank, m.a_cols);
            let y = product(&q.b, &q.a, q.b_rows, q.rank, q.a_cols);
            let rel = rel_diff(&x, &y);
            assert!(rel <= 1e-5, "{case} {}: B@A rel {rel:e}", m.module);
            continue;
        }
        for (what, x, y) in [("A", &m.a, &q.a), ("B", &m.b, &q.b)] {
            let scale = max_abs(y);
            let worst = x
                .iter()
                .zip(y.iter())
                .map(|(a, b)| (a - b).abs() / scale)
                .fold(0f32, f32::max);
            assert!(worst <= 1e-5, "{case} {} {what}: rel {worst:e}", m.module);
            if same_zeros {
                let zx: Vec<bool> = x.iter().map(|v| *v == 0.0).collect();
                let zy: Vec<bool> = y.iter().map(|v| *v == 0.0).collect();
                assert_eq!(zx, zy, "{case} {} {what}: mask", m.module);
            }
        }
    }
}

#[test]
fn peft_combinations_re_save_byte_identically() {
    for case in [
        "second",
        "linear",
        "cat",
        "svd",
        "svd_clamp",
        "ties",
        "ties_frequency",
        "magnitude_prune",
    ] {
        let dir = root().join("testdata/lora/combine").join(case);
        let adapter = Adapter::open(&dir).unwrap();
        let out = tmp(&format!("resave-{case}"));
        adapter.save(&out).unwrap();
        let file = "adapter_model.safetensors";
        assert!(
            std::fs::read(out.join(file)).unwrap() == std::fs::read(dir.join(file)).unwrap(),
            "{case}"
        );
        let json = |p: &Path| -> serde_json::Value {
            serde_json::from_str(&std::fs::read_to_string(p.join("adapter_config.json")).unwrap())
                .unwrap()
        };
        assert_eq!(json(&out), json(&dir), "{case}");
        std::fs::remove_dir_all(out).unwrap();
    }
}

#[test]
fn linear_matches_peft() {
    let (a, b) = (lora("basic"), lora("combine/second"));
    let out =
        add_weighted_adapter(&[(&a, 0.7), (&b, -0.4)], &options(CombinationType::Linear)).unwrap();
    check_case("linear", &out, false, false);
}

#[test]
fn cat_matches_peft_and_is_exact() {
    let (a, b) = (lora("basic"), lora("rslora"));
    let out =
        add_weighted_adapter(&[(&a, 0.6), (&b, 1.3)], &options(CombinationType::Cat)).unwrap();
    assert_eq!(out.config().r, 12);
    check_case("cat", &out, false, false);
    // cat is exact: merging it equals merging both adapters with their
    // weights (merge_into, tested against PEFT's merges).
    let base = weightkit_io::open(root().join(LLAMA)).unwrap();
    let dir = tmp("cat-adapter");
    out.save(&dir).unwrap();
    let saved = Adapter::open(&dir).unwrap();
    let one = tmp("cat-merged.safetensors");
    merge_lora(base.source(), &saved, &one, &MergeOptions::default()).unwrap();
    let two = tmp("cat-two.safetensors");
    let w = weightkit_safetensors::SafetensorsWriter::create(
        &two,
        base.source().tensor_infos().to_vec(),
        &weightkit_core::Metadata::new(),
    )
    .unwrap();
    merge_into(
        base.source(),
        &[(&a, 0.6), (&b, 1.3)],
        w,
        &MergeOptions::default(),
    )
    .unwrap();
    let (x, y) = (tensors(&one), tensors(&two));
    for (name, v) in &x {
        let u = &y[name];
        let scale = max_abs(u);
        let worst = v
            .iter()
            .zip(u)
            .map(|(p, q)| (p - q).abs())
            .fold(0f32, f32::max);
        assert!(worst <= 1e-6 * scale, "{name}: {worst:e}");
    }
    for f in [&one, &two] {
        std::fs::remove_file(f).unwrap();
    }
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn svd_matches_peft_product() {
    let (a, b) = (lora("basic"), lora("combine/second"));
    let mut o = options(CombinationType::Svd);
    o.svd_rank = Some(6);
    let out = add_weighted_adapter(&[(&a, 1.0), (&b, 0.5)], &o).unwrap();
    check_case("svd", &out, true, false);
}

#[test]
fn svd_clamp_matches_peft_on_peft_factors() {
    // SVD signs are arbitrary and the clamp quantile is taken over signed
    // values, so the clamp is checked on PEFT's own unclamped factors.
    let (plain, clamped) = (lora("combine/svd"), lora("combine/svd_clamp"));
    for (m, q) in plain.modules().iter().zip(clamped.modules()) {
        let (mut b, mut a) = (m.b.clone(), m.a.clone());
        clamp_factors(&mut b, &mut a, 0.9);
        assert_eq!(a, q.a, "{} A", m.module);
        assert_eq!(b, q.b, "{} B", m.module);
        assert_ne!(a, m.a, "{}: the clamp changed nothing", m.module);
    }
    // And our svd_clamp runs end to end: every value within the quantile.
    let (a, b) = (lora("basic"), lora("combine/second"));
    let mut o = options(CombinationType::Svd);
    o.svd_rank = Some(6);
    o.svd_clamp = Some(0.9);
    let out = add_weighted_adapter(&[(&a, 1.0), (&b, 0.5)], &o).unwrap();
    assert_eq!(out.modules().len(), clamped.modules().len());
}

#[test]
fn ties_matches_peft_with_exact_masks() {
    let (a, b) = (lora("basic"), lora("combine/second"));
    let mut o = options(CombinationType::Ties);
    o.density = Some(0.5);
    let out = add_weighted_adapter(&[(&a, 0.7), (&b, 0.5)], &o).unwrap();
    check_case("ties", &out, false, true);
    o.density = Some(0.3);
    o.majority_sign_method = MajoritySignMethod::Frequency;
    let out = add_weighted_adapter(&[(&a, 0.7), (&b, 0.5)], &o).unwrap();
    check_case("ties_frequency", &out, false, true);
}

#[test]
fn magnitude_prune_matches_peft_with_exact_masks() {
    let (a, b) = (lora("basic"), lora("combine/second"));
    let mut o = options(CombinationType::MagnitudePrune);
    o.density = Some(0.4);
    let out = add_weighted_adapter(&[(&a, 0.8), (&b, 0.6)], &o).unwrap();
    check_case("magnitude_prune", &out, false, true);
}

#[test]
fn magnitude_prune_keeps_int_density_times_numel_largest() {
    let x = [0.5f32, -3.0, 2.0, -0.1, 1.0, 0.0, -2.5];
    // int(0.5 * 7) = 3: -3.0, -2.5, 2.0.
    assert_eq!(
        magnitude_prune(&x, 0.5),
        [0.0, -3.0, 2.0, 0.0, 0.0, 0.0, -2.5]
    );
    assert_eq!(magnitude_prune(&x, 0.1), [0.0; 7]);
    assert_eq!(magnitude_prune(&x, 1.0), x);
}

#[test]
fn random_prune_is_seeded_bernoulli_rescaled() {
    let n = 200_000;
    let x: Vec<f32> = (0..n).map(|i| 1.0 + (i % 7) as f32).collect();
    for density in [0.1, 0.5, 0.9] {
        let p = random_prune(&x, density, 42, "m.lora_A/0");
        let kept = p.iter().filter(|v| **v != 0.0).count();
        let frac = kept as f64 / n as f64;
        // Binomial: 5 standard deviations.
        let sd = (density * (1.0 - density) / n as f64).sqrt();
        assert!((frac - density).abs() < 5.0 * sd, "{density}: {frac}");
        let d = density as f32;
        assert!(p.iter().zip(&x).all(|(&p, &x)| p == 0.0 || p == x / d));
        assert_eq!(p, random_prune(&x, density, 42, "m.lora_A/0"));
        assert_ne!(p, random_prune(&x, density, 43, "m.lora_A/0"));
        assert_ne!(p, random_prune(&x, density, 42, "m.lora_A/1"));
    }
    assert_eq!(random_prune(&x, 1.0, 1, "l"), x);
}

#[test]
fn dare_is_structurally_a_rescaled_masked_sum() {
    let (a, b) = (lora("basic"), lora("combine/second"));
    let density = 0.5f64;
    for kind in [CombinationType::DareLinear, CombinationType::DareTies] {
        let mut o = options(kind);
        o.density = Some(density);
        o.seed = 7;
        let out = add_weighted_adapter(&[(&a, 0.7), (&b, 0.5)], &o).unwrap();
        let again = add_weighted_adapter(&[(&a, 0.7), (&b, 0.5)], &o).unwrap();
        assert_eq!(tensors_of(&out), tensors_of(&again));
        let mut both = 0usize;
        let mut total = 0usize;
        for m in out.modules() {
            let ma = a.modules().iter().find(|x| x.module == m.module).unwrap();
            let mb = b.modules().iter().find(|x| x.module == m.module);
            let d = density as f32;
            let wa = |mm: &weightkit_lora::LoraModule, w: f64| {
                let ws = w * mm.scaling;
                ws.abs().sqrt() as f32
            };
            for (i, &v) in m.a.iter().enumerate() {
                let x = ma.a[i] / d * wa(ma, 0.7);
                let y = mb.map_or(0.0, |mb| mb.a[i] / d * wa(mb, 0.5));
                let mut candidates = vec![0.0f32, x, y, x + y];
                if kind == CombinationType::DareTies {
                    // Disjoint mean: agreeing signs are averaged.
                    candidates.push((x + y) / 2.0);
                }
                let ok = candidates
                    .iter()
                    .any(|c| (c - v).abs() <= 1e-6 * c.abs().max(1e-6));
                assert!(ok, "{kind} {} A[{i}] = {v} not in {candidates:?}", m.module);
                if mb.is_some() {
                    total += 1;
                    let both_kept = (v - (x + y)).abs() <= 1e-6 * (x + y).abs().max(1e-6)
                        || (v - (x + y) / 2.0).abs() <= 1e-6 * (x + y).abs().max(1e-6);
                    both += usize::from(both_kept && x != 0.0 && y != 0.0);
                }
            }
        }
        if kind == CombinationType::DareLinear {
            // Both kept with probability density^2.
            let frac = both as f64 / total as f64;
            assert!((frac - density * density).abs() < 0.02, "{frac}");
        }
        let mut other = o.clone();
        other.seed = 8;
        let reseeded = add_weighted_adapter(&[(&a, 0.7), (&b, 0.5)], &other).unwrap();
        assert_ne!(tensors_of(&out), tensors_of(&reseeded));
    }
    // Density 1 prunes nothing: DARE-linear is linear.
    let mut o = options(CombinationType::DareLinear);
    o.density = Some(1.0);
    let dare = add_weighted_adapter(&[(&a, 0.7), (&b, -0.4)], &o).unwrap();
    let lin =
        add_weighted_adapter(&[(&a, 0.7), (&b, -0.4)], &options(CombinationType::Linear)).unwrap();
    assert_eq!(tensors_of(&dare), tensors_of(&lin));
}

#[test]
fn combine_errors_are_typed() {
    let (a, b, r) = (lora("basic"), lora("combine/second"), lora("rslora"));
    let pair = [(&a, 1.0), (&b, 1.0)];
    assert!(matches!(
        add_weighted_adapter(&[], &options(CombinationType::Linear)),
        Err(LoraError::NoAdapters)
    ));
    for d in [0.0, -0.5, 1.5, f64::NAN] {
        let mut o = options(CombinationType::Ties);
        o.density = Some(d);
        let err = add_weighted_adapter(&pair, &o).unwrap_err();
        assert!(
            matches!(
                err,
                LoraError::CombineArgument {
                    name: "density",
                    ..
                }
            ),
            "{err:?}"
        );
    }
    let err = add_weighted_adapter(&pair, &options(CombinationType::DareTies)).unwrap_err();
    assert!(
        matches!(
            err,
            LoraError::CombineArgument {
                name: "density",
                ..
            }
        ),
        "{err:?}"
    );
    let mut o = options(CombinationType::Svd);
    o.svd_rank = Some(0);
    let err = add_weighted_adapter(&pair, &o).unwrap_err();
    assert!(
        matches!(
            err,
            LoraError::CombineArgument {
                name: "svd_rank",
                ..
            }
        ),
        "{err:?}"
    );
    o.svd_rank = Some(40);
    let err = add_weighted_adapter(&pair, &o).unwrap_err();
    assert!(
        matches!(&err, LoraError::RankRange { module, rank: 40, max: 32 } if module.ends_with("k_proj")),
        "{err:?}"
    );
    o.svd_rank = None;
    o.svd_clamp = Some(1.5);
    let err = add_weighted_adapter(&pair, &o).unwrap_err();
    assert!(
        matches!(
            err,
            LoraError::CombineArgument {
                name: "svd_clamp",
                ..
            }
        ),
        "{err:?}"
    );
    // Different ranks: only cat and svd accept them.
    let err = add_weighted_adapter(&[(&a, 1.0), (&r, 1.0)], &options(CombinationType::Linear))
        .unwrap_err();
    assert!(
        matches!(&err, LoraError::CombineRanks { ranks, .. } if ranks == &[8, 4]),
        "{err:?}"
    );
    // A module of another shape (another base) cannot be concatenated.
    let q = "model.layers.0.self_attn.q_proj";
    let key = |s: &str| format!("base_model.model.{q}.{s}");
    let odd = Adapter::from_tensors(
        r.config().clone(),
        [
            (key("lora_A.weight"), vec![4, 32], vec![0.5; 128]),
            (key("lora_B.weight"), vec![64, 4], vec![0.5; 256]),
        ],
    )
    .unwrap();
    let err = add_weighted_adapter(&[(&a, 1.0), (&odd, 1.0)], &options(CombinationType::Cat))
        .unwrap_err();
    assert!(
        matches!(&err, LoraError::Incompatible { module, .. } if module == q),
        "{err:?}"
    );
    // Targets given as a list in one adapter and a regex in the other.
    let mut config = r.config().clone();
    config.target_modules = Some(TargetModules::Regex(".*q_proj".into()));
    let regex = Adapter::from_tensors(
        config,
        r.peft_tensors()
            .filter(|t| t.key.contains("q_proj"))
            .map(|t| (t.key.to_owned(), t.shape, t.values.to_vec())),
    )
    .unwrap();
    let err = add_weighted_adapter(&[(&r, 1.0), (&regex, 1.0)], &options(CombinationType::Cat))
        .unwrap_err();
    assert!(matches!(err, LoraError::Incompatible { .. }), "{err:?}");
    // DoRA is not carried over by PEFT's combination.
    let dora = lora("dora");
    let err = add_weighted_adapter(&[(&a, 1.0), (&dora, 1.0)], &options(CombinationType::Svd))
        .unwrap_err();
    assert!(matches!(err, LoraError::Unsupported(_)), "{err:?}");
    assert!("nope".parse::<CombinationType>().is_err());
    for kind in CombinationType::all() {
        assert_eq!(kind.name().parse::<CombinationType>().unwrap(), kind);
    }
}

// ---------------------------------------------------------------- extraction

/// The fine-tuned checkpoint: PEFT's merge of the basic adapter (rank 8).
const FINETUNED: &str = "testdata/lora/basic/merged_reference.safetensors";

/// `finetuned - base` per changed 2-D tensor, in f64 from the f32
/// difference (the script's definition), `(rows, cols, values)`.
fn deltas() -> BTreeMap<String, (usize, usize, Vec<f64>)> {
    let base = tensors(&root().join(LLAMA));
    let ft = tensors(&root().join(FINETUNED));
    let model = weightkit_io::open(root().join(LLAMA)).unwrap();
    let shapes: BTreeMap<String, Vec<usize>> = model
        .source()
        .tensor_infos()
        .iter()
        .map(|t| (t.name.clone(), t.shape.dims().to_vec()))
        .collect();
    base.iter()
        .filter(|(n, v)| shapes[*n].len() == 2 && **v != ft[*n])
        .map(|(n, v)| {
            let d = ft[n].iter().zip(v).map(|(f, b)| f64::from(f - b)).collect();
            (n.clone(), (shapes[n][0], shapes[n][1], d))
        })
        .collect()
}

fn singular_values() -> BTreeMap<String, Vec<f64>> {
    let path = root().join("testdata/lora/combine/extract_singular_values.safetensors");
    let model = weightkit_io::open(&path).unwrap();
    let s = model.source();
    s.tensor_infos()
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let bytes = s.load(i).unwrap().view().data().to_vec();
            let v = bytes
                .chunks_exact(8)
                .map(|c| f64::from_le_bytes(c.try_into().unwrap()))
                .collect();
            (t.name.clone(), v)
        })
        .collect()
}

fn extract(rank: ExtractRank) -> (Adapter, weightkit_lora::ExtractReport) {
    let base = weightkit_io::open(root().join(LLAMA)).unwrap();
    let ft = weightkit_io::open(root().join(FINETUNED)).unwrap();
    extract_lora(base.source(), ft.source(), &ExtractOptions::new(rank)).unwrap()
}

#[test]
fn extraction_at_full_rank_reproduces_the_delta() {
    let deltas = deltas();
    let (adapter, report) = extract(ExtractRank::Rank(8));
    assert_eq!(adapter.modules().len(), deltas.len());
    assert_eq!(report.modules.len(), deltas.len());
    assert!(report.not_captured.is_empty(), "{:?}", report.not_captured);
    let c = adapter.config();
    assert_eq!((c.r, c.lora_alpha), (8, 8.0));
    for m in adapter.modules() {
        assert_eq!(m.scaling, 1.0);
        let (rows, cols, d) = &deltas[&m.target];
        let x = product(&m.b, &m.a, *rows, m.rank, *cols);
        let rel = rel_diff(&x, d);
        assert!(rel <= 1e-5, "{}: {rel:e}", m.module);
        // mergekit's split: A and B carry sqrt(S) each, so their row / column
        // norms agree.
        let a0: f64 = m.a[..*cols].iter().map(|v| f64::from(*v).powi(2)).sum();
        let b0: f64 = (0..*rows).map(|i| f64::from(m.b[i * m.rank]).powi(2)).sum();
        assert!((a0 / b0 - 1.0).abs() < 1e-5, "{}", m.module);
    }
    for e in &report.modules {
        assert!(e.relative_error <= 1e-5, "{e:?}");
    }
    // Saved and merged back: PEFT's merged checkpoint.
    let dir = tmp("extract-full");
    adapter.save(&dir).unwrap();
    let reread = Adapter::open(&dir).unwrap();
    let base = weightkit_io::open(root().join(LLAMA)).unwrap();
    let out = tmp("extract-full.safetensors");
    merge_lora(base.source(), &reread, &out, &MergeOptions::default()).unwrap();
    let (x, y) = (tensors(&out), tensors(&root().join(FINETUNED)));
    for (name, v) in &x {
        let worst = v
            .iter()
            .zip(&y[name])
            .map(|(p, q)| (p - q).abs())
            .fold(0f32, f32::max);
        assert!(worst <= 1e-6, "{name}: {worst:e}");
    }
    std::fs::remove_file(out).unwrap();
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn extraction_error_is_the_dropped_singular_values() {
    let deltas = deltas();
    let svals = singular_values();
    assert_eq!(svals.len(), deltas.len());
    let (adapter, report) = extract(ExtractRank::Rank(3));
    for (m, e) in adapter.modules().iter().zip(&report.modules) {
        assert_eq!(m.module, e.module);
        let (rows, cols, d) = &deltas[&m.target];
        let x = product(&m.b, &m.a, *rows, 3, *cols);
        let diff: Vec<f64> = x.iter().zip(d).map(|(a, b)| a - b).collect();
        let err = frobenius(&diff);
        let s = &svals[&m.target];
        let dropped = s[3..].iter().map(|v| v * v).sum::<f64>().sqrt();
        assert!(
            (err / dropped - 1.0).abs() <= 1e-6,
            "{}: {err:e} vs {dropped:e}",
            m.module
        );
        let total = s.iter().map(|v| v * v).sum::<f64>().sqrt();
        assert!(
            (e.relative_error / (dropped / total) - 1.0).abs() <= 1e-6,
            "{e:?}"
        );
    }
}

#[test]
fn extraction_by_energy_picks_the_smallest_rank() {
    let svals = singular_values();
    let (adapter, report) = extract(ExtractRank::Energy(0.9));
    let mut ranks = BTreeMap::new();
    for m in adapter.modules() {
        let s = &svals[&m.target];
        let total: f64 = s.iter().map(|v| v * v).sum();
        let mut acc = 0.0;
        let want = s
            .iter()
            .position(|v| {
                acc += v * v;
                acc >= 0.9 * total
            })
            .unwrap()
            + 1;
        assert_eq!(m.rank, want, "{}", m.module);
        ranks.insert(m.module.clone(), m.rank);
        assert_eq!(m.scaling, 1.0);
    }
    assert!(report.modules.iter().all(|e| e.energy >= 0.9));
    let distinct: std::collections::BTreeSet<_> = ranks.values().collect();
    assert!(distinct.len() > 1, "{ranks:?}");
    // rank_pattern round trip: the saved adapter reloads with these ranks.
    let dir = tmp("extract-energy");
    adapter.save(&dir).unwrap();
    let reread = Adapter::open(&dir).unwrap();
    for m in reread.modules() {
        assert_eq!(m.rank, ranks[&m.module]);
        assert_eq!(m.scaling, 1.0);
    }
    std::fs::remove_dir_all(dir).unwrap();
}

fn write_f32(path: &Path, tensors: &[(&str, Vec<usize>, Vec<f32>)]) {
    let infos = tensors
        .iter()
        .map(|(n, s, _)| weightkit_core::TensorInfo::new(*n, weightkit_core::DType::F32, s.clone()))
        .collect();
    let mut w = weightkit_safetensors::SafetensorsWriter::create(
        path,
        infos,
        &weightkit_core::Metadata::new(),
    )
    .unwrap();
    for (n, _, v) in tensors {
        let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
        w.write_tensor(n, &bytes).unwrap();
    }
    w.finish().unwrap();
}

#[test]
fn extraction_errors_are_typed() {
    let base = weightkit_io::open(root().join(LLAMA)).unwrap();
    let ft = weightkit_io::open(root().join(FINETUNED)).unwrap();
    let run = |rank| extract_lora(base.source(), ft.source(), &ExtractOptions::new(rank));
    let err = run(ExtractRank::Rank(0)).unwrap_err();
    assert!(
        matches!(err, LoraError::CombineArgument { name: "rank", .. }),
        "{err:?}"
    );
    let err = run(ExtractRank::Rank(40)).unwrap_err();
    assert!(
        matches!(&err, LoraError::RankRange { module, rank: 40, max: 32 } if module.ends_with("k_proj")),
        "{err:?}"
    );
    for e in [0.0, 1.5, f64::NAN] {
        let err = run(ExtractRank::Energy(e)).unwrap_err();
        assert!(
            matches!(err, LoraError::CombineArgument { name: "energy", .. }),
            "{err:?}"
        );
    }
    // Nothing changed.
    let err = extract_lora(
        base.source(),
        base.source(),
        &ExtractOptions::new(ExtractRank::Rank(1)),
    )
    .unwrap_err();
    assert!(
        matches!(
            err,
            LoraError::CombineArgument {
                name: "finetuned",
                ..
            }
        ),
        "{err:?}"
    );
    // Shape mismatch and a missing tensor.
    let a = tmp("shape-a.safetensors");
    let b = tmp("shape-b.safetensors");
    let c = tmp("shape-c.safetensors");
    write_f32(&a, &[("l.weight", vec![4, 4], vec![1.0; 16])]);
    write_f32(&b, &[("l.weight", vec![4, 3], vec![1.0; 12])]);
    write_f32(&c, &[("m.weight", vec![4, 4], vec![1.0; 16])]);
    let (a_, b_, c_) = (
        weightkit_io::open(&a).unwrap(),
        weightkit_io::open(&b).unwrap(),
        weightkit_io::open(&c).unwrap(),
    );
    let opts = ExtractOptions::new(ExtractRank::Rank(1));
    let err = extract_lora(a_.source(), b_.source(), &opts).unwrap_err();
    assert!(
        matches!(&err, LoraError::Shape { name, expected, found } if name == "l.weight" && expected == &[4, 4] && found == &[4, 3]),
        "{err:?}"
    );
    let err = extract_lora(a_.source(), c_.source(), &opts).unwrap_err();
    assert!(
        matches!(&err, LoraError::MissingFinetuned(n) if n == "l.weight"),
        "{err:?}"
    );
    for f in [a, b, c] {
        std::fs::remove_file(f).unwrap();
    }
}

#[test]
fn extraction_of_a_transposed_embedding_uses_embedding_factors() {
    // A rank-2 change of an embedding (vocab 6, dim 4): B @ A = delta^T.
    let a = tmp("emb-a.safetensors");
    let b = tmp("emb-b.safetensors");
    let base: Vec<f32> = (0..24).map(|i| i as f32 * 0.1).collect();
    let u = [1.0f32, -2.0, 0.5, 3.0, 0.0, 1.0];
    let v = [0.5f32, 1.0, -1.0, 2.0];
    let w = [0.0f32, 1.0, 1.0, 0.0, -1.0, 2.0];
    let z = [1.0f32, 0.0, 1.0, -0.5];
    let ft: Vec<f32> = (0..24)
        .map(|k| base[k] + u[k / 4] * v[k % 4] + w[k / 4] * z[k % 4])
        .collect();
    write_f32(&a, &[("model.embed_tokens.weight", vec![6, 4], base)]);
    write_f32(&b, &[("model.embed_tokens.weight", vec![6, 4], ft)]);
    let (a_, b_) = (
        weightkit_io::open(&a).unwrap(),
        weightkit_io::open(&b).unwrap(),
    );
    let (adapter, report) = extract_lora(
        a_.source(),
        b_.source(),
        &ExtractOptions::new(ExtractRank::Energy(0.99999)),
    )
    .unwrap();
    assert_eq!(report.modules[0].rank, 2);
    assert!(report.modules[0].relative_error < 1e-6);
    let keys: Vec<&str> = adapter.peft_tensors().map(|t| t.key).collect();
    assert_eq!(
        keys,
        [
            "base_model.model.model.embed_tokens.lora_embedding_A",
            "base_model.model.model.embed_tokens.lora_embedding_B"
        ]
    );
    let m = &adapter.modules()[0];
    assert!(m.embedding);
    assert_eq!((m.a_cols, m.b_rows), (6, 4));
    for f in [a, b] {
        std::fs::remove_file(f).unwrap();
    }
}
