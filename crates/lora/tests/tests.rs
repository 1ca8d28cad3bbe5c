//! Integration tests: PEFT fixtures (merged by PEFT 0.21.2) and config errors.

mod gguf;

use std::path::{Path, PathBuf};

use weightkit_core::TensorSink;
use weightkit_lora::{Adapter, AdapterConfig, LoraError, MergeOptions, merge_lora, unmerge_lora};

pub(crate) fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

pub(crate) fn tmp(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("weightkit-lora-{}-{name}", std::process::id()))
}

fn tensors(path: &Path) -> Vec<(String, Vec<f32>)> {
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

/// Max abs diff and max diff relative to the reference's largest magnitude.
fn compare(ours: &Path, reference: &Path) -> (f32, f32) {
    let (a, b) = (tensors(ours), tensors(reference));
    assert_eq!(a.len(), b.len());
    let (mut abs, mut rel) = (0f32, 0f32);
    for ((na, va), (nb, vb)) in a.iter().zip(&b) {
        assert_eq!(na, nb);
        let scale = vb
            .iter()
            .fold(0f32, |m, x| m.max(x.abs()))
            .max(f32::MIN_POSITIVE);
        for (x, y) in va.iter().zip(vb) {
            let d = (x - y).abs();
            abs = abs.max(d);
            rel = rel.max(d / scale);
        }
    }
    (abs, rel)
}

fn check_fixture(name: &str, base: &str, unmergeable: bool) {
    let dir = root().join("testdata/lora").join(name);
    check_adapter(name, &dir, &dir, base, unmergeable);
}

/// Merges the adapter in `adapter_dir` into `base` and compares with the
/// fixture's PEFT-merged reference in `fixture_dir`; unmerges it again.
fn check_adapter(name: &str, adapter_dir: &Path, dir: &Path, base: &str, unmergeable: bool) {
    let adapter = Adapter::open(adapter_dir).unwrap();
    // Tests run in parallel: a re-saved adapter's outputs get their own names.
    let name = &if adapter_dir == dir {
        name.to_owned()
    } else {
        format!("{name}-resaved")
    };
    let base_path = root().join(base);
    let base = weightkit_io::open(&base_path).unwrap();
    let out = tmp(&format!("{name}-merged.safetensors"));
    let opts = MergeOptions {
        safe_merge: true,
        ..MergeOptions::default()
    };
    let report = merge_lora(base.source(), &adapter, &out, &opts).unwrap();
    let with_bias = adapter
        .modules()
        .iter()
        .filter(|m| m.bias.is_some())
        .count();
    assert_eq!(report.merged.len(), adapter.modules().len() + with_bias);
    let (abs, rel) = compare(&out, &dir.join("merged_reference.safetensors"));
    eprintln!("{name}: max abs diff vs PEFT {abs:e}, relative {rel:e}");
    assert!(
        rel <= 1e-6,
        "{name}: max abs diff {abs:e}, relative {rel:e}"
    );
    if unmergeable {
        let merged = weightkit_io::open(&out).unwrap();
        let back = tmp(&format!("{name}-unmerged.safetensors"));
        unmerge_lora(merged.source(), &adapter, &back, &opts).unwrap();
        let base_file = if base_path.is_dir() {
            base_path.join("model.safetensors")
        } else {
            base_path
        };
        let (abs, rel) = compare(&back, &base_file);
        eprintln!("{name}: unmerge max abs diff vs base {abs:e}, relative {rel:e}");
        assert!(rel <= 1e-6, "{name}: unmerge abs {abs:e} rel {rel:e}");
        std::fs::remove_file(back).unwrap();
    } else {
        let merged = weightkit_io::open(&out).unwrap();
        let back = tmp(&format!("{name}-unmerged.safetensors"));
        let err = unmerge_lora(merged.source(), &adapter, &back, &opts).unwrap_err();
        assert!(matches!(err, LoraError::Unsupported(_)), "{err}");
    }
    std::fs::remove_file(out).unwrap();
}

pub(crate) const LLAMA: &str = "testdata/tiny-llama/safetensors-f32";

#[test]
fn basic_matches_peft() {
    check_fixture("basic", LLAMA, true);
}

#[test]
fn rslora_matches_peft() {
    check_fixture("rslora", LLAMA, true);
}

#[test]
fn rank_pattern_matches_peft() {
    check_fixture("rank-pattern", LLAMA, true);
}

#[test]
fn dora_matches_peft() {
    check_fixture("dora", LLAMA, false);
}

#[test]
fn gpt2_fan_in_fan_out_matches_peft() {
    check_fixture("gpt2-fan-in-fan-out", "testdata/gpt2-base", true);
}

#[test]
fn gpt2_lora_bias_matches_peft() {
    // PEFT 0.21.2, lora_bias=True on Conv1D c_attn/c_fc (fan_in_fan_out),
    // rank_pattern c_fc -> 2: the base biases change by scaling * lora_B.bias.
    check_fixture("gpt2-lora-bias", "testdata/gpt2-base", true);
    let adapter = Adapter::open(root().join("testdata/lora/gpt2-lora-bias")).unwrap();
    assert_eq!(adapter.modules().len(), 4);
    assert!(adapter.modules().iter().all(|m| m.bias.is_some()));
}

#[test]
fn gpt2_trained_biases_match_peft() {
    // PEFT 0.21.2, bias="all" with lora_bias: every base bias is replaced by
    // the adapter's trained one (wrapped layers save it as `base_layer.bias`),
    // then the LoRA-B bias is added on top.
    check_fixture("gpt2-bias-all", "testdata/gpt2-base", false);
    let adapter = Adapter::open(root().join("testdata/lora/gpt2-bias-all")).unwrap();
    // 2 x (ln_1, c_attn, c_proj, ln_2, c_fc, mlp.c_proj) + ln_f.
    assert_eq!(adapter.saved_tensors().len(), 13);
    assert!(
        adapter
            .saved_tensors()
            .iter()
            .any(|(n, _, _)| n == "transformer.h.1.attn.c_attn.bias")
    );
    // "lora_only" refuses the LayerNorm biases this adapter carries.
    let text =
        std::fs::read_to_string(root().join("testdata/lora/gpt2-bias-all/adapter_config.json"))
            .unwrap();
    let mut v: serde_json::Value = serde_json::from_str(&text).unwrap();
    v["bias"] = "lora_only".into();
    let c = AdapterConfig::from_json_str(&v.to_string()).unwrap();
    let t = adapter_tensors("gpt2-bias-all");
    let err = Adapter::from_tensors(c, t).unwrap_err();
    assert!(
        matches!(&err, LoraError::Config { field, .. } if field == "bias"),
        "{err:?}"
    );
}

fn lora_bias_tensors() -> Vec<(String, Vec<usize>, Vec<f32>)> {
    adapter_tensors("gpt2-lora-bias")
}

/// A GPT-2 adapter's tensors with their shapes (ranks 4, and 2 for c_fc).
fn adapter_tensors(name: &str) -> Vec<(String, Vec<usize>, Vec<f32>)> {
    tensors(
        &root()
            .join("testdata/lora")
            .join(name)
            .join("adapter_model.safetensors"),
    )
    .into_iter()
    .map(|(n, v)| {
        let shape = if n.ends_with("bias") {
            vec![v.len()]
        } else if n.ends_with("lora_A.weight") {
            let r = if n.contains("c_fc") { 2 } else { 4 };
            vec![r, v.len() / r]
        } else {
            let r = if n.contains("c_fc") { 2 } else { 4 };
            vec![v.len() / r, r]
        };
        (n, shape, v)
    })
    .collect()
}

fn lora_bias_config(edit: impl FnOnce(&mut serde_json::Value)) -> Result<AdapterConfig, LoraError> {
    let text =
        std::fs::read_to_string(root().join("testdata/lora/gpt2-lora-bias/adapter_config.json"))
            .unwrap();
    let mut v: serde_json::Value = serde_json::from_str(&text).unwrap();
    edit(&mut v);
    AdapterConfig::from_json_str(&v.to_string())
}

#[test]
fn lora_bias_errors_are_typed() {
    // DoRA with lora_bias: PEFT's LoraConfig raises too.
    let err = lora_bias_config(|v| v["use_dora"] = true.into()).unwrap_err();
    assert!(
        matches!(&err, LoraError::Config { field, .. } if field == "lora_bias"),
        "{err:?}"
    );
    // lora_bias = false but the file has lora_B.bias tensors.
    let c = lora_bias_config(|v| v["lora_bias"] = false.into()).unwrap();
    let err = Adapter::from_tensors(c, lora_bias_tensors()).unwrap_err();
    assert!(
        matches!(&err, LoraError::Config { field, .. } if field == "lora_bias"),
        "{err:?}"
    );
    // lora_bias = true but a module lacks its bias.
    let c = lora_bias_config(|_| {}).unwrap();
    let mut t = lora_bias_tensors();
    t.retain(|(n, _, _)| n != "base_model.model.transformer.h.1.mlp.c_fc.lora_B.bias");
    let err = Adapter::from_tensors(c.clone(), t).unwrap_err();
    assert!(
        matches!(&err, LoraError::MissingFactor { module, missing } if module == "transformer.h.1.mlp.c_fc" && *missing == "lora_B.bias"),
        "{err:?}"
    );
    // A bias of the wrong length.
    let mut t = lora_bias_tensors();
    for (n, shape, v) in &mut t {
        if n == "base_model.model.transformer.h.0.attn.c_attn.lora_B.bias" {
            v.pop();
            *shape = vec![v.len()];
        }
    }
    let err = Adapter::from_tensors(c.clone(), t).unwrap_err();
    assert!(
        matches!(&err, LoraError::Shape { name, .. } if name.ends_with("c_attn.lora_B.bias")),
        "{err:?}"
    );
    // lora_A never has a bias in PEFT.
    let mut t = lora_bias_tensors();
    t.push((
        "base_model.model.transformer.h.0.attn.c_attn.lora_A.bias".into(),
        vec![4],
        vec![0.0; 4],
    ));
    let err = Adapter::from_tensors(c.clone(), t).unwrap_err();
    assert!(
        matches!(&err, LoraError::UnknownKey(k) if k.ends_with("lora_A.bias")),
        "{err:?}"
    );
}

#[test]
fn lora_bias_needs_a_base_bias() {
    // PEFT: "Impossible to merge LoRA with `lora_bias=True` because the base
    // layer has no bias." Drop the base's c_fc biases and merge.
    let base = tensors(&root().join("testdata/gpt2-base/model.safetensors"));
    let dir = tmp("no-bias-base");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("model.safetensors");
    let kept: Vec<_> = base
        .iter()
        .filter(|(n, _)| !n.ends_with("c_fc.bias"))
        .collect();
    let original = weightkit_io::open(root().join("testdata/gpt2-base/model.safetensors")).unwrap();
    let infos: Vec<_> = original
        .source()
        .tensor_infos()
        .iter()
        .filter(|t| !t.name.ends_with("c_fc.bias"))
        .cloned()
        .collect();
    let mut w = weightkit_safetensors::SafetensorsWriter::create(
        &path,
        infos,
        &weightkit_core::Metadata::new(),
    )
    .unwrap();
    for (n, v) in kept {
        let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
        w.write_tensor(n, &bytes).unwrap();
    }
    w.finish().unwrap();
    let adapter = Adapter::open(root().join("testdata/lora/gpt2-lora-bias")).unwrap();
    let model = weightkit_io::open(&path).unwrap();
    let out = dir.join("merged.safetensors");
    let err = merge_lora(model.source(), &adapter, &out, &MergeOptions::default()).unwrap_err();
    assert!(
        matches!(&err, LoraError::MissingBaseTensor { tensor, .. } if tensor == "transformer.h.0.mlp.c_fc.bias"),
        "{err:?}"
    );
    assert!(!out.exists());
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn rank_and_alpha_patterns_resolve_like_peft() {
    let text =
        std::fs::read_to_string(root().join("testdata/lora/rank-pattern/adapter_config.json"))
            .unwrap();
    let c = AdapterConfig::from_json_str(&text).unwrap();
    assert_eq!(c.rank_for("model.layers.0.self_attn.q_proj"), 2);
    assert_eq!(c.rank_for("model.layers.1.self_attn.q_proj"), 8);
    assert_eq!(c.rank_for("model.layers.1.self_attn.v_proj"), 12);
    assert_eq!(c.rank_for("model.layers.0.mlp.down_proj"), 4);
    assert_eq!(c.alpha_for("model.layers.1.self_attn.k_proj"), 32.0);
    assert_eq!(c.alpha_for("model.layers.0.self_attn.o_proj"), 5.0);
    assert_eq!(c.alpha_for("model.layers.11.self_attn.k_proj"), 16.0);
    assert_eq!(c.scaling_for("model.layers.0.self_attn.q_proj"), 2.0);
}

fn config_with(field: &str, value: &str) -> Result<AdapterConfig, LoraError> {
    let text =
        std::fs::read_to_string(root().join("testdata/lora/basic/adapter_config.json")).unwrap();
    let mut v: serde_json::Value = serde_json::from_str(&text).unwrap();
    v[field] = serde_json::from_str(value).unwrap();
    AdapterConfig::from_json_str(&v.to_string())
}

#[test]
fn config_errors_are_typed() {
    type Case = (&'static str, &'static str, fn(&LoraError) -> bool);
    let cases: &[Case] = &[
        (
            "peft_type",
            "\"IA3\"",
            |e| matches!(e, LoraError::PeftType(t) if t == "IA3"),
        ),
        ("lora_bias", "\"yes\"", |e| {
            matches!(e, LoraError::ConfigJson { .. })
        }),
        (
            "bias",
            "\"some\"",
            |e| matches!(e, LoraError::Config { field, .. } if field == "bias"),
        ),
        (
            "init_lora_weights",
            "\"pissa\"",
            |e| matches!(e, LoraError::Config { field, .. } if field == "init_lora_weights"),
        ),
        (
            "use_qalora",
            "true",
            |e| matches!(e, LoraError::Config { field, .. } if field == "use_qalora"),
        ),
        (
            "some_future_field",
            "1.5",
            |e| matches!(e, LoraError::Config { field, .. } if field == "some_future_field"),
        ),
        (
            "rank_pattern",
            "{\"(\": 2}",
            |e| matches!(e, LoraError::Config { field, .. } if field == "rank_pattern"),
        ),
        ("r", "\"eight\"", |e| {
            matches!(e, LoraError::ConfigJson { .. })
        }),
    ];
    for (field, value, ok) in cases {
        let err = config_with(field, value).unwrap_err();
        assert!(ok(&err), "{field}={value}: {err:?}");
    }
    // Bookkeeping fields and "nothing" values are accepted.
    config_with("base_model_name_or_path", "\"meta/llama\"").unwrap();
    config_with("layer_replication", "null").unwrap();
}

#[test]
fn missing_config_is_an_io_error() {
    let err = Adapter::open(root().join("testdata/tiny-llama")).unwrap_err();
    assert!(matches!(err, LoraError::Io { .. }), "{err:?}");
}

fn basic_config() -> AdapterConfig {
    let text =
        std::fs::read_to_string(root().join("testdata/lora/basic/adapter_config.json")).unwrap();
    AdapterConfig::from_json_str(&text).unwrap()
}

#[test]
fn adapter_errors_name_the_tensor() {
    let key = |m: &str, s: &str| format!("base_model.model.{m}.{s}");
    let q = "model.layers.0.self_attn.q_proj";
    // Rank mismatch between A and B.
    let err = Adapter::from_tensors(
        basic_config(),
        [
            (key(q, "lora_A.weight"), vec![8, 64], vec![0.0; 512]),
            (key(q, "lora_B.weight"), vec![64, 4], vec![0.0; 256]),
        ],
    )
    .unwrap_err();
    assert!(
        matches!(&err, LoraError::RankMismatch { module, a: 8, b: 4, config: 8 } if module == q)
    );
    // Missing B.
    let err = Adapter::from_tensors(
        basic_config(),
        [(key(q, "lora_A.weight"), vec![8, 64], vec![0.0; 512])],
    )
    .unwrap_err();
    assert!(matches!(&err, LoraError::MissingFactor { module, missing: "lora_B" } if module == q));
    // Unknown key.
    let err = Adapter::from_tensors(basic_config(), [("foo.weight".into(), vec![1], vec![0.0])])
        .unwrap_err();
    assert!(matches!(&err, LoraError::UnknownKey(k) if k == "foo.weight"));
    // Shape mismatch with the base, and a module the base lacks.
    let base = weightkit_io::open(root().join(LLAMA)).unwrap();
    for (module, a_cols, want) in [
        (q, 65, "shape"),
        ("model.layers.9.self_attn.q_proj", 64, "missing"),
    ] {
        let adapter = Adapter::from_tensors(
            basic_config(),
            [
                (
                    key(module, "lora_A.weight"),
                    vec![8, a_cols],
                    vec![0.0; 8 * a_cols],
                ),
                (key(module, "lora_B.weight"), vec![64, 8], vec![0.0; 512]),
            ],
        )
        .unwrap();
        let out = tmp("never.safetensors");
        let err = merge_lora(base.source(), &adapter, &out, &MergeOptions::default()).unwrap_err();
        match want {
            "shape" => assert!(
                matches!(&err, LoraError::Shape { name, .. } if name == "model.layers.0.self_attn.q_proj.weight"),
                "{err:?}"
            ),
            _ => assert!(
                matches!(&err, LoraError::MissingBaseTensor { .. }),
                "{err:?}"
            ),
        }
        assert!(!out.exists());
    }
}

#[test]
fn safe_merge_rejects_non_finite() {
    let q = "model.layers.0.self_attn.q_proj";
    let mut a = vec![0.0; 512];
    a[0] = f32::INFINITY;
    let adapter = Adapter::from_tensors(
        basic_config(),
        [
            (
                format!("base_model.model.{q}.lora_A.weight"),
                vec![8, 64],
                a,
            ),
            (
                format!("base_model.model.{q}.lora_B.weight"),
                vec![64, 8],
                vec![1.0; 512],
            ),
        ],
    )
    .unwrap();
    let base = weightkit_io::open(root().join(LLAMA)).unwrap();
    let out = tmp("nan.safetensors");
    let opts = MergeOptions {
        safe_merge: true,
        ..MergeOptions::default()
    };
    let err = merge_lora(base.source(), &adapter, &out, &opts).unwrap_err();
    assert!(
        matches!(&err, LoraError::NonFinite(n) if n == "model.layers.0.self_attn.q_proj.weight")
    );
    assert!(!out.exists());
}

#[test]
fn scale_zero_is_identity_and_embedding_lora_is_transposed() {
    let emb = "model.embed_tokens";
    // A (r=1, vocab=256) one-hot on token 3; B (dim=64, r=1) all 2.
    let mut a = vec![0.0; 256];
    a[3] = 1.0;
    let adapter = Adapter::from_tensors(
        basic_config(),
        [
            (
                format!("base_model.model.{emb}.lora_embedding_A"),
                vec![1, 256],
                a,
            ),
            (
                format!("base_model.model.{emb}.lora_embedding_B"),
                vec![64, 1],
                vec![2.0; 64],
            ),
        ],
    );
    // rank 1 disagrees with r = 8 in the config.
    assert!(matches!(adapter, Err(LoraError::RankMismatch { .. })));
    let text =
        std::fs::read_to_string(root().join("testdata/lora/basic/adapter_config.json")).unwrap();
    let mut v: serde_json::Value = serde_json::from_str(&text).unwrap();
    v["r"] = 1.into();
    v["lora_alpha"] = 1.into();
    v["target_modules"] = serde_json::json!(["embed_tokens"]);
    let config = AdapterConfig::from_json_str(&v.to_string()).unwrap();
    let mut a = vec![0.0; 256];
    a[3] = 1.0;
    let adapter = Adapter::from_tensors(
        config,
        [
            (
                format!("base_model.model.{emb}.lora_embedding_A"),
                vec![1, 256],
                a,
            ),
            (
                format!("base_model.model.{emb}.lora_embedding_B"),
                vec![64, 1],
                vec![2.0; 64],
            ),
        ],
    )
    .unwrap();
    let base_file = root().join(LLAMA).join("model.safetensors");
    let base = weightkit_io::open(&base_file).unwrap();
    for scale in [0.0f32, 1.0] {
        let out = tmp(&format!("emb-{scale}.safetensors"));
        let opts = MergeOptions {
            scale,
            ..MergeOptions::default()
        };
        merge_lora(base.source(), &adapter, &out, &opts).unwrap();
        let merged = tensors(&out);
        let orig = tensors(&base_file);
        for ((name, m), (_, o)) in merged.iter().zip(&orig) {
            if name == "model.embed_tokens.weight" && scale == 1.0 {
                for (i, (x, y)) in m.iter().zip(o).enumerate() {
                    let want = if i / 64 == 3 { y + 2.0 } else { *y };
                    assert_eq!(*x, want, "element {i}");
                }
            } else {
                assert_eq!(m, o, "{name}");
            }
        }
        std::fs::remove_file(out).unwrap();
    }
}

const FIXTURES: &[(&str, &str, bool)] = &[
    ("basic", LLAMA, true),
    ("rslora", LLAMA, true),
    ("rank-pattern", LLAMA, true),
    ("dora", LLAMA, false),
    ("gpt2-fan-in-fan-out", "testdata/gpt2-base", true),
    ("gpt2-lora-bias", "testdata/gpt2-base", true),
    ("gpt2-bias-all", "testdata/gpt2-base", false),
];

#[test]
fn save_round_trips_every_fixture() {
    let fixtures = std::fs::read_dir(root().join("testdata/lora"))
        .unwrap()
        .filter(|e| e.as_ref().unwrap().path().is_dir())
        // `gguf/` holds llama.cpp-made GGUF adapters and combine/ holds
        // add_weighted_adapter results (tests/combine.rs), not PEFT adapters.
        .filter(|e| {
            !["gguf", "combine"].contains(&e.as_ref().unwrap().file_name().to_str().unwrap())
        })
        .count();
    assert_eq!(
        fixtures,
        FIXTURES.len(),
        "a fixture is missing from FIXTURES"
    );
    for &(name, base, unmergeable) in FIXTURES {
        let dir = root().join("testdata/lora").join(name);
        let adapter = Adapter::open(&dir).unwrap();
        let out = tmp(&format!("saved-{name}"));
        adapter.save(&out).unwrap();
        // The config PEFT wrote, field for field (PEFT 0.21 writes every
        // field this crate models, so nothing is added).
        let json = |p: &Path| -> serde_json::Value {
            serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
        };
        assert_eq!(
            json(&out.join("adapter_config.json")),
            json(&dir.join("adapter_config.json")),
            "{name}: adapter_config.json"
        );
        // PEFT writes the weights with safetensors' save_file: same keys,
        // dtypes, layout and metadata give the same bytes.
        let ours = std::fs::read(out.join("adapter_model.safetensors")).unwrap();
        let peft = std::fs::read(dir.join("adapter_model.safetensors")).unwrap();
        assert!(ours == peft, "{name}: adapter_model.safetensors differs");
        let again = Adapter::open(&out).unwrap();
        assert_eq!(again.config(), adapter.config(), "{name}");
        assert!(again.peft_tensors().eq(adapter.peft_tensors()), "{name}");
        check_adapter(name, &out, &dir, base, unmergeable);
        std::fs::remove_dir_all(out).unwrap();
    }
}

#[test]
fn save_keeps_half_precision_dtypes() {
    // The basic adapter's factors rounded to f16 (A) and bf16 (B), as a
    // half-precision PEFT adapter holds them.
    let dir = root().join("testdata/lora/basic");
    let src = weightkit_io::open(dir.join("adapter_model.safetensors")).unwrap();
    let infos: Vec<_> = src
        .source()
        .tensor_infos()
        .iter()
        .map(|t| {
            let dtype = if t.name.contains("lora_A") {
                weightkit_core::DType::F16
            } else {
                weightkit_core::DType::BF16
            };
            weightkit_core::TensorInfo::new(t.name.clone(), dtype, t.shape.clone())
        })
        .collect();
    let half = tmp("half");
    std::fs::create_dir_all(&half).unwrap();
    std::fs::copy(
        dir.join("adapter_config.json"),
        half.join("adapter_config.json"),
    )
    .unwrap();
    let mut meta = weightkit_core::Metadata::new();
    meta.insert("format", weightkit_core::Value::String("pt".into()));
    let file = half.join("adapter_model.safetensors");
    let mut w =
        weightkit_safetensors::SafetensorsWriter::create(&file, infos.clone(), &meta).unwrap();
    for (i, info) in infos.iter().enumerate() {
        let v = src.source().load(i).unwrap().view().to_f32_vec().unwrap();
        let mut bytes = vec![0u8; info.byte_len().unwrap()];
        weightkit_core::convert::encode_f32(info.dtype, &v, &mut bytes).unwrap();
        w.write_tensor(&info.name, &bytes).unwrap();
    }
    w.finish().unwrap();
    let adapter = Adapter::open(&half).unwrap();
    let out = tmp("half-saved");
    adapter.save(&out).unwrap();
    assert_eq!(
        std::fs::read(out.join("adapter_model.safetensors")).unwrap(),
        std::fs::read(&file).unwrap()
    );
    // Built from f32 values, an adapter saves f32.
    let t: Vec<_> = adapter
        .peft_tensors()
        .map(|t| (t.key.to_owned(), t.shape.clone(), t.values.to_vec()))
        .collect();
    let f32_adapter = Adapter::from_tensors(adapter.config().clone(), t).unwrap();
    assert!(
        f32_adapter
            .peft_tensors()
            .all(|t| t.dtype == weightkit_core::DType::F32)
    );
    std::fs::remove_dir_all(half).unwrap();
    std::fs::remove_dir_all(out).unwrap();
}

#[test]
fn save_into_a_file_is_a_typed_error() {
    let adapter = Adapter::open(root().join("testdata/lora/basic")).unwrap();
    let file = tmp("a-file");
    std::fs::write(&file, b"not a directory").unwrap();
    let err = adapter.save(&file).unwrap_err();
    assert!(
        matches!(&err, LoraError::NotADirectory(p) if *p == file),
        "{err:?}"
    );
    assert_eq!(std::fs::read(&file).unwrap(), b"not a directory");
    std::fs::remove_file(file).unwrap();
}

#[test]
fn duplicate_and_miscounted_tensors_are_typed_errors() {
    let q = "base_model.model.model.layers.0.self_attn.q_proj";
    let err = Adapter::from_tensors(
        basic_config(),
        [(format!("{q}.lora_A.weight"), vec![8, 64], vec![0.0; 511])],
    )
    .unwrap_err();
    assert!(
        matches!(&err, LoraError::ValueCount { name, values: 511, .. } if name.ends_with("lora_A.weight")),
        "{err:?}"
    );
    let text =
        std::fs::read_to_string(root().join("testdata/lora/dora/adapter_config.json")).unwrap();
    let dora = AdapterConfig::from_json_str(&text).unwrap();
    let err = Adapter::from_tensors(
        dora,
        [
            (
                format!("{q}.lora_magnitude_vector"),
                vec![64],
                vec![1.0; 64],
            ),
            (
                format!("{q}.lora_magnitude_vector.weight"),
                vec![64],
                vec![1.0; 64],
            ),
        ],
    )
    .unwrap_err();
    assert!(
        matches!(&err, LoraError::DuplicateTensor { second, .. } if second.ends_with(".weight")),
        "{err:?}"
    );
}

#[test]
fn merge_into_applies_adapters_in_turn() {
    // Half the basic adapter twice is the whole adapter once: PEFT's
    // merged reference, within rounding.
    let dir = root().join("testdata/lora/basic");
    let adapter = Adapter::open(&dir).unwrap();
    let base = weightkit_io::open(root().join(LLAMA)).unwrap();
    let out = tmp("twice-half.safetensors");
    let w = weightkit_safetensors::SafetensorsWriter::create(
        &out,
        base.source().tensor_infos().to_vec(),
        &weightkit_core::Metadata::new(),
    )
    .unwrap();
    let (report, path) = weightkit_lora::merge_into(
        base.source(),
        &[(&adapter, 0.5), (&adapter, 0.5)],
        w,
        &MergeOptions::default(),
    )
    .unwrap();
    assert_eq!(path, out);
    assert_eq!(report.merged.len(), adapter.modules().len());
    let (abs, rel) = compare(&out, &dir.join("merged_reference.safetensors"));
    assert!(rel <= 1e-6, "abs {abs:e} rel {rel:e}");
    std::fs::remove_file(out).unwrap();
}

#[test]
fn merge_into_equals_sequential_merges_on_f32() {
    // On an f32 base, one pass over two adapters does what two merges in a
    // row do (PEFT's sequential merge), bit for bit: the same f32 operations
    // in the same order, rounded to f32 after each adapter either way.
    let lora = root().join("testdata/lora");
    let a = Adapter::open(lora.join("basic")).unwrap();
    let b = Adapter::open(lora.join("rank-pattern")).unwrap();
    let base = weightkit_io::open(root().join(LLAMA)).unwrap();
    let opts = MergeOptions {
        scale: 0.5,
        ..MergeOptions::default()
    };
    let step = tmp("seq-step.safetensors");
    let twice = tmp("seq-twice.safetensors");
    let scaled = |w: f32| MergeOptions {
        scale: 0.5 * w,
        ..MergeOptions::default()
    };
    merge_lora(base.source(), &a, &step, &scaled(0.7)).unwrap();
    let mid = weightkit_io::open(&step).unwrap();
    merge_lora(mid.source(), &b, &twice, &scaled(-1.5)).unwrap();
    let once = tmp("seq-once.safetensors");
    let w = weightkit_safetensors::SafetensorsWriter::create(
        &once,
        base.source().tensor_infos().to_vec(),
        &weightkit_core::Metadata::new(),
    )
    .unwrap();
    weightkit_lora::merge_into(base.source(), &[(&a, 0.7), (&b, -1.5)], w, &opts).unwrap();
    for ((n1, v1), (n2, v2)) in tensors(&once).iter().zip(&tensors(&twice)) {
        assert_eq!(n1, n2);
        assert!(
            v1.iter().zip(v2).all(|(x, y)| x.to_bits() == y.to_bits()),
            "{n1}"
        );
    }
    for f in [step, twice, once] {
        std::fs::remove_file(f).unwrap();
    }
}

/// A module with deterministic pseudo-random factors (and DoRA magnitudes).
fn synthetic_module(
    rows: usize,
    cols: usize,
    rank: usize,
    dora: bool,
) -> weightkit_lora::LoraModule {
    let mut state = 0x9e37_79b9_u32;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 17;
        state ^= state << 5;
        (state as f32 / u32::MAX as f32 - 0.5) * 0.1
    };
    weightkit_lora::LoraModule {
        module: "layers.0.q_proj".into(),
        target: "layers.0.q_proj.weight".into(),
        rank,
        a: (0..rank * cols).map(|_| next()).collect(),
        a_cols: cols,
        b: (0..rows * rank).map(|_| next()).collect(),
        b_rows: rows,
        scaling: 1.5,
        magnitude: dora.then(|| (0..rows).map(|_| 1.0 + next()).collect()),
        bias: None,
        embedding: false,
    }
}

#[test]
fn in_place_rows_equal_the_widened_matrix_bit_for_bit() {
    use weightkit_core::{DType, convert};
    for (fifo, dora) in [(false, false), (true, false), (false, true)] {
        let config = AdapterConfig::from_json_str(&format!(
            r#"{{"peft_type": "LORA", "r": 4, "lora_alpha": 6, "fan_in_fan_out": {fifo}, "use_dora": {dora}}}"#
        ))
        .unwrap();
        // (out, in) = (24, 40); fan_in_fan_out stores the weight as (in, out).
        let (out_f, in_f) = (24, 40);
        let mut module = synthetic_module(out_f, in_f, 4, dora);
        if fifo {
            // PEFT keeps A (r, in) and B (out, r) either way; only W is transposed.
            module.a_cols = in_f;
        }
        let [rows, cols] = module.expected_shape(&config);
        let base: Vec<f32> = (0..rows * cols)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) * 0.01)
            .collect();
        for dtype in [DType::F32, DType::F16, DType::BF16] {
            for unmerge in [false, true] {
                let mut bytes = vec![0u8; base.len() * dtype.block_bytes()];
                convert::encode_f32(dtype, &base, &mut bytes).unwrap();
                // Reference: widen the whole matrix, apply, round once.
                let mut wide = vec![0f32; base.len()];
                convert::decode_f32(dtype, &bytes, &mut wide).unwrap();
                weightkit_lora::apply_module(&config, &module, &mut wide, 0.75, unmerge);
                let mut want = vec![0u8; bytes.len()];
                convert::encode_f32(dtype, &wide, &mut want).unwrap();

                assert!(weightkit_lora::apply_module_in_place(
                    &config, &module, dtype, &mut bytes, 0.75, unmerge
                ));
                assert_eq!(
                    bytes, want,
                    "{dtype:?} fan_in_fan_out={fifo} dora={dora} unmerge={unmerge}"
                );
                assert_ne!(bytes, {
                    let mut b = vec![0u8; want.len()];
                    convert::encode_f32(dtype, &base, &mut b).unwrap();
                    b
                });
            }
        }
    }
    // DoRA with fan_in_fan_out normalises columns: not row-local.
    let config = AdapterConfig::from_json_str(
        r#"{"peft_type": "LORA", "r": 4, "lora_alpha": 6, "fan_in_fan_out": true, "use_dora": true}"#,
    )
    .unwrap();
    let module = synthetic_module(24, 40, 4, true);
    let mut bytes = vec![0u8; 24 * 40 * 4];
    assert!(!weightkit_lora::apply_module_in_place(
        &config,
        &module,
        weightkit_core::DType::F32,
        &mut bytes,
        1.0,
        false
    ));
    assert!(bytes.iter().all(|&b| b == 0));
}
