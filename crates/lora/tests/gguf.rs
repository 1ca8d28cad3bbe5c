//! GGUF LoRA adapters: export against files llama.cpp's own
//! `convert_lora_to_gguf.py` wrote (`testdata/lora/gguf`), round trips
//! against PEFT's delta `scaling * B @ A`, and typed errors.

use std::collections::BTreeSet;

use weightkit_core::{DType, Metadata, TensorInfo, Value, convert};
use weightkit_gguf::{GgufFile, ReadOptions, WriterOptions};
use weightkit_io::arch::{ArchError, ModelConfig};
use weightkit_lora::{
    Adapter, GgufAdapter, GgufExportOptions, GgufOutType, LoraError, adapter_from_gguf,
    base_config, export_gguf, export_gguf_tensors,
};

use super::{LLAMA, root, tmp};

/// Keys gguf-py derives from the adapter directory's name and model card;
/// the exporter does not write them (llama.cpp does not read them).
const MODEL_CARD_KEYS: [&str; 3] = ["general.name", "general.base_model.count", "general.tags"];

fn llama() -> ModelConfig {
    base_config(root().join(LLAMA)).unwrap()
}

fn fixture(name: &str) -> GgufFile {
    GgufFile::open(root().join("testdata/lora/gguf").join(name)).unwrap()
}

fn export(adapter: &str, out_type: GgufOutType) -> GgufAdapter {
    let adapter = Adapter::open(root().join("testdata/lora").join(adapter)).unwrap();
    let opts = GgufExportOptions {
        out_type,
        name: None,
    };
    export_gguf_tensors(&adapter, &llama(), &opts).unwrap()
}

fn to_file(g: &GgufAdapter) -> GgufFile {
    let tensors: Vec<(TensorInfo, &[u8])> = g
        .tensors
        .iter()
        .map(|(i, b)| (i.clone(), b.as_slice()))
        .collect();
    let bytes =
        weightkit_gguf::serialize(&g.metadata, &tensors, &WriterOptions::default()).unwrap();
    GgufFile::from_vec(bytes, "mem.gguf", &ReadOptions::default()).unwrap()
}

fn values(file: &GgufFile, name: &str) -> Vec<f32> {
    file.tensor(name).unwrap().to_f32_vec().unwrap()
}

/// Our metadata keys are the converter's, in its order and with its values,
/// less the model-card keys.
fn check_metadata(ours: &Metadata, theirs: &Metadata) {
    let expected: Vec<(&str, &Value)> = theirs
        .iter()
        .filter(|(k, _)| !MODEL_CARD_KEYS.contains(k))
        .collect();
    let got: Vec<(&str, &Value)> = ours.iter().collect();
    assert_eq!(got, expected);
    for k in MODEL_CARD_KEYS {
        assert!(theirs.get(k).is_some(), "{k}");
    }
}

/// Tensor by tensor: names, order, types, shapes and bytes.
fn check_identical(ours: &GgufAdapter, theirs: &GgufFile) {
    check_metadata(&ours.metadata, theirs.metadata());
    assert_eq!(ours.tensors.len(), theirs.tensors().len());
    for (i, ((info, bytes), t)) in ours.tensors.iter().zip(theirs.tensors()).enumerate() {
        assert_eq!(info, t, "tensor {i}");
        assert!(
            bytes.as_slice() == theirs.tensor_at(i).unwrap().data(),
            "{}: bytes differ",
            t.name
        );
    }
}

#[test]
fn basic_f32_equals_llama_cpp_converter() {
    let ours = export("basic", GgufOutType::F32);
    check_identical(&ours, &fixture("basic-f32.gguf"));
    assert!(ours.modules.iter().all(|m| m.factor == 1.0));
    assert_eq!(ours.tensors.len(), 28);
}

#[test]
fn basic_q8_0_equals_llama_cpp_converter() {
    let ours = export("basic", GgufOutType::Q8_0);
    let theirs = fixture("basic-q8_0.gguf");
    check_identical(&ours, &theirs);
    // Both Q8_0 and the F16 fallback occur.
    let types: BTreeSet<DType> = theirs.tensors().iter().map(|t| t.dtype).collect();
    assert_eq!(types, [DType::F16, DType::Q8_0].into_iter().collect());
}

#[test]
fn f16_and_bf16_round_the_f32_layout() {
    let reference = fixture("basic-f32.gguf");
    for (out_type, dtype) in [
        (GgufOutType::F16, DType::F16),
        (GgufOutType::BF16, DType::BF16),
    ] {
        let ours = export("basic", out_type);
        check_metadata(&ours.metadata, reference.metadata());
        for (info, bytes) in &ours.tensors {
            assert_eq!(info.dtype, dtype);
            let v = values(&reference, &info.name);
            let mut expected = vec![0u8; bytes.len()];
            convert::encode_f32(dtype, &v, &mut expected).unwrap();
            assert!(*bytes == expected, "{}", info.name);
        }
    }
}

#[test]
fn rslora_scaling_is_folded_into_lora_b() {
    // The converter writes alpha 8 and ignores use_rslora: llama.cpp scales
    // by 8 / 4 = 2, PEFT by 8 / sqrt(4) = 4. Ours doubles lora_b.
    let ours = to_file(&export("rslora", GgufOutType::F32));
    let theirs = fixture("rslora-f32.gguf");
    check_metadata(ours.metadata(), theirs.metadata());
    assert_eq!(ours.tensors(), theirs.tensors());
    for t in theirs.tensors() {
        let (o, r) = (values(&ours, &t.name), values(&theirs, &t.name));
        if t.name.ends_with(".lora_a") {
            assert_eq!(o, r, "{}", t.name);
        } else {
            let doubled: Vec<f32> = r.iter().map(|x| x * 2.0).collect();
            assert_eq!(o, doubled, "{}", t.name);
        }
    }
}

#[test]
fn alpha_pattern_is_folded_into_lora_b() {
    // The converter writes lora_alpha 16 only; PEFT's alpha_pattern gives
    // layers.1 k_proj 32, layers.0 q_proj 4 and every o_proj 5.
    let ours = to_file(&export("rank-pattern", GgufOutType::F32));
    let theirs = fixture("rank-pattern-f32.gguf");
    check_metadata(ours.metadata(), theirs.metadata());
    assert_eq!(ours.tensors(), theirs.tensors());
    for t in theirs.tensors() {
        let (o, r) = (values(&ours, &t.name), values(&theirs, &t.name));
        // Where PEFT agrees with llama.cpp (layers.1 v_proj: rank 12, alpha
        // 16 on both sides) the tensor is the converter's, bit for bit.
        if t.name == "blk.1.attn_v.weight.lora_b" {
            assert_eq!(o, r);
        }
        let factor = match t.name.as_str() {
            n if n.ends_with(".lora_a") => 1.0,
            "blk.1.attn_k.weight.lora_b" => 2.0,
            "blk.0.attn_q.weight.lora_b" => 0.25,
            n if n.contains("attn_output") => 5.0 / 16.0,
            _ => 1.0,
        };
        for (x, y) in o.iter().zip(&r) {
            let want = f64::from(*y) * factor;
            assert!(
                (f64::from(*x) - want).abs() <= 1e-7 * want.abs(),
                "{}: {x} vs {want}",
                t.name
            );
        }
    }
}

/// `scaling * B @ A` per module, in f64, row-major `[out, in]` (embeddings
/// `[vocab, dim]`).
fn deltas(adapter: &Adapter) -> Vec<(String, Vec<f64>)> {
    adapter
        .modules()
        .iter()
        .map(|m| {
            let (out, inp, r) = (m.b_rows, m.a_cols, m.rank);
            let mut d = vec![0f64; out * inp];
            for o in 0..out {
                for i in 0..inp {
                    let s: f64 = (0..r)
                        .map(|k| f64::from(m.b[o * r + k]) * f64::from(m.a[k * inp + i]))
                        .sum();
                    d[o * inp + i] = s * m.scaling;
                }
            }
            (m.module.clone(), d)
        })
        .collect()
}

/// Max |a - b| over max |b|, per module, after checking the modules match.
fn max_rel(a: &Adapter, b: &Adapter) -> f64 {
    let (da, db) = (deltas(a), deltas(b));
    assert_eq!(
        da.iter().map(|d| &d.0).collect::<Vec<_>>(),
        db.iter().map(|d| &d.0).collect::<Vec<_>>()
    );
    da.iter()
        .zip(&db)
        .map(|((_, x), (_, y))| {
            let scale = y.iter().fold(0f64, |m, v| m.max(v.abs()));
            let diff = x.iter().zip(y).fold(0f64, |m, (p, q)| m.max((p - q).abs()));
            diff / scale
        })
        .fold(0f64, f64::max)
}

#[test]
fn round_trip_keeps_the_peft_delta() {
    let cfg = llama();
    for name in ["basic", "rslora", "rank-pattern"] {
        let original = Adapter::open(root().join("testdata/lora").join(name)).unwrap();
        for (out_type, tol) in [(GgufOutType::F32, 1e-6), (GgufOutType::F16, 2e-3)] {
            let opts = GgufExportOptions {
                out_type,
                name: None,
            };
            let file = to_file(&export_gguf_tensors(&original, &cfg, &opts).unwrap());
            let back = adapter_from_gguf(&file, Some(&cfg)).unwrap();
            let rel = max_rel(&back, &original);
            eprintln!("{name} {out_type:?}: max relative delta error {rel:e}");
            assert!(rel <= tol, "{name} {out_type:?}: {rel:e}");
            for (m, o) in back.modules().iter().zip(original.modules()) {
                assert_eq!((m.rank, m.a_cols, m.b_rows), (o.rank, o.a_cols, o.b_rows));
            }
        }
    }
}

#[test]
fn import_of_the_converters_file_gives_peft_factors_back() {
    // Un-permuting and renaming llama.cpp's own file gives PEFT's tensors.
    let back = adapter_from_gguf(&fixture("basic-f32.gguf"), Some(&llama())).unwrap();
    let original = Adapter::open(root().join("testdata/lora/basic")).unwrap();
    let ours: Vec<_> = back
        .peft_tensors()
        .map(|t| (t.key.to_owned(), t.shape, t.values.to_vec()))
        .collect();
    let peft: Vec<_> = original
        .peft_tensors()
        .map(|t| (t.key.to_owned(), t.shape, t.values.to_vec()))
        .collect();
    assert!(ours == peft);
    assert_eq!(back.config().lora_alpha, 16.0);
    assert_eq!(back.config().r, 8);
    // And it re-exports to the same file.
    let again = export_gguf_tensors(&back, &llama(), &GgufExportOptions::default()).unwrap();
    check_identical(&again, &fixture("basic-f32.gguf"));
}

#[test]
fn imported_rank_pattern_keeps_ranks_and_scalings() {
    let cfg = llama();
    let original = Adapter::open(root().join("testdata/lora/rank-pattern")).unwrap();
    let file =
        to_file(&export_gguf_tensors(&original, &cfg, &GgufExportOptions::default()).unwrap());
    let back = adapter_from_gguf(&file, Some(&cfg)).unwrap();
    // Each module's scaling is llama.cpp's alpha / rank with the file's alpha.
    for m in back.modules() {
        assert_eq!(m.scaling, 16.0 / m.rank as f64, "{}", m.module);
    }
    // And it saves as a PEFT adapter that loads back to the same delta.
    let dir = tmp("gguf-imported-rank-pattern");
    back.save(&dir).unwrap();
    let reloaded = Adapter::open(&dir).unwrap();
    assert!(max_rel(&reloaded, &original) <= 1e-6);
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn embedding_and_lm_head_loras_round_trip() {
    let cfg = llama();
    let (r, vocab, dim) = (2usize, 256usize, 64usize);
    let seq = |n: usize, k: f32| (0..n).map(|i| ((i as f32) * k).sin()).collect::<Vec<f32>>();
    let config = weightkit_lora::AdapterConfig::from_json_str(
        r#"{"peft_type": "LORA", "r": 2, "lora_alpha": 3, "use_rslora": true,
            "target_modules": ["embed_tokens", "lm_head"]}"#,
    )
    .unwrap();
    let adapter = Adapter::from_tensors(
        config,
        [
            (
                "base_model.model.model.embed_tokens.lora_embedding_A".to_owned(),
                vec![r, vocab],
                seq(r * vocab, 0.7),
            ),
            (
                "base_model.model.model.embed_tokens.lora_embedding_B".to_owned(),
                vec![dim, r],
                seq(dim * r, 1.3),
            ),
            (
                "base_model.model.lm_head.lora_A.weight".to_owned(),
                vec![r, dim],
                seq(r * dim, 0.3),
            ),
            (
                "base_model.model.lm_head.lora_B.weight".to_owned(),
                vec![vocab, r],
                seq(vocab * r, 0.9),
            ),
        ],
    )
    .unwrap();
    let g = export_gguf_tensors(&adapter, &cfg, &GgufExportOptions::default()).unwrap();
    let names: Vec<(&str, &[usize])> = g
        .tensors
        .iter()
        .map(|(i, _)| (i.name.as_str(), i.shape.dims()))
        .collect();
    // llama-adapter.cpp: token_embd's lora_a is [vocab, r] (ne = [r, vocab]),
    // lora_b [dim, r]; output's lora_a [r, dim], lora_b [vocab, r].
    assert_eq!(
        names,
        [
            ("output.weight.lora_a", &[r, dim][..]),
            ("output.weight.lora_b", &[vocab, r][..]),
            ("token_embd.weight.lora_a", &[vocab, r][..]),
            ("token_embd.weight.lora_b", &[dim, r][..]),
        ]
    );
    let file = to_file(&g);
    // lora_a of token_embd is lora_embedding_A transposed.
    let a = values(&file, "token_embd.weight.lora_a");
    let m = adapter.modules().iter().find(|m| m.embedding).unwrap();
    let factor = 3.0 / 2f32.sqrt() / 1.5;
    assert_eq!(a[5 * r + 1], m.a[vocab + 5]);
    let b = values(&file, "token_embd.weight.lora_b");
    assert!((b[7] - m.b[7] * factor).abs() <= 1e-6 * m.b[7].abs().max(1e-3));
    let back = adapter_from_gguf(&file, Some(&cfg)).unwrap();
    assert!(back.modules().iter().any(|m| m.embedding));
    assert!(max_rel(&back, &adapter) <= 1e-6);
}

fn err_export(adapter_dir: &str) -> LoraError {
    let adapter = Adapter::open(root().join(adapter_dir)).unwrap();
    export_gguf_tensors(&adapter, &llama(), &GgufExportOptions::default()).unwrap_err()
}

#[test]
fn what_llama_cpp_cannot_hold_is_a_typed_error() {
    let e = err_export("testdata/lora/dora");
    assert!(
        matches!(&e, LoraError::GgufUnsupported { tensor, .. } if tensor.ends_with("lora_magnitude_vector")),
        "{e}"
    );
    assert!(e.to_string().contains("DoRA"), "{e}");
    let e = err_export("testdata/lora/gpt2-lora-bias");
    assert!(
        matches!(&e, LoraError::GgufUnsupported { tensor, .. } if tensor.ends_with("lora_B.bias")),
        "{e}"
    );
    let e = err_export("testdata/lora/gpt2-bias-all");
    assert!(
        matches!(&e, LoraError::GgufUnsupported { tensor, .. } if tensor.ends_with(".bias")),
        "{e}"
    );
    // fan_in_fan_out (GPT-2's Conv1D) on a Llama base.
    let e = err_export("testdata/lora/gpt2-fan-in-fan-out");
    assert!(
        matches!(&e, LoraError::Config { field, .. } if field == "fan_in_fan_out"),
        "{e}"
    );
}

#[test]
fn unknown_architecture_is_a_typed_error() {
    let e = base_config(root().join("testdata/gpt2-base")).unwrap_err();
    assert!(
        matches!(e, LoraError::Arch(ArchError::UnsupportedArchitecture { ref found, .. }) if found == "GPT2LMHeadModel"),
        "{e}"
    );
    // An adapter for a GGUF architecture without tables.
    let mut g = export("rslora", GgufOutType::F32);
    g.metadata
        .insert("general.architecture", Value::String("gpt2".into()));
    let e = adapter_from_gguf(&to_file(&g), None).unwrap_err();
    assert!(
        matches!(
            e,
            LoraError::Arch(ArchError::UnsupportedArchitecture { .. })
        ),
        "{e}"
    );
    // A base module the architecture does not have.
    let config =
        weightkit_lora::AdapterConfig::from_json_str(r#"{"peft_type": "LORA", "r": 1}"#).unwrap();
    let adapter = Adapter::from_tensors(
        config,
        [
            (
                "base_model.model.model.layers.0.mlp.fc1.lora_A.weight".to_owned(),
                vec![1, 2],
                vec![1.0, 2.0],
            ),
            (
                "base_model.model.model.layers.0.mlp.fc1.lora_B.weight".to_owned(),
                vec![2, 1],
                vec![1.0, 2.0],
            ),
        ],
    )
    .unwrap();
    let e = export_gguf_tensors(&adapter, &llama(), &GgufExportOptions::default()).unwrap_err();
    assert!(
        matches!(&e, LoraError::Arch(ArchError::UnknownTensor { name, .. }) if name == "model.layers.0.mlp.fc1.weight"),
        "{e}"
    );
}

/// A GGUF adapter with `tensors` (name, row-major shape) of zeros.
fn synthetic(meta: &[(&str, &str)], tensors: &[(&str, Vec<usize>)]) -> GgufFile {
    let mut m = Metadata::new();
    for (k, v) in meta {
        m.insert(*k, Value::String((*v).to_owned()));
    }
    m.insert("adapter.lora.alpha", Value::F32(4.0));
    let infos: Vec<TensorInfo> = tensors
        .iter()
        .map(|(n, s)| TensorInfo::new(*n, DType::F32, s.clone()))
        .collect();
    let data: Vec<Vec<u8>> = infos
        .iter()
        .map(|i| vec![0u8; i.byte_len().unwrap()])
        .collect();
    let pairs: Vec<(TensorInfo, &[u8])> = infos
        .into_iter()
        .zip(data.iter().map(|d| d.as_slice()))
        .collect();
    let bytes = weightkit_gguf::serialize(&m, &pairs, &WriterOptions::default()).unwrap();
    GgufFile::from_vec(bytes, "synthetic.gguf", &ReadOptions::default()).unwrap()
}

const ADAPTER_META: [(&str, &str); 3] = [
    ("general.architecture", "llama"),
    ("general.type", "adapter"),
    ("adapter.type", "lora"),
];

#[test]
fn bad_gguf_adapters_are_typed_errors() {
    let cfg = llama();
    let import = |f: &GgufFile| adapter_from_gguf(f, Some(&cfg)).unwrap_err();
    // Mismatched ranks.
    let f = synthetic(
        &ADAPTER_META,
        &[
            ("blk.0.attn_v.weight.lora_a", vec![4, 64]),
            ("blk.0.attn_v.weight.lora_b", vec![32, 8]),
        ],
    );
    let e = import(&f);
    assert!(
        matches!(&e, LoraError::GgufRankMismatch { tensor, a: 4, b: 8 } if tensor == "blk.0.attn_v.weight"),
        "{e}"
    );
    // A missing half.
    let f = synthetic(
        &ADAPTER_META,
        &[("blk.0.attn_v.weight.lora_a", vec![4, 64])],
    );
    assert!(matches!(
        import(&f),
        LoraError::MissingFactor {
            missing: "lora_b",
            ..
        }
    ));
    // Something that is not a factor (mergekit's norms).
    let f = synthetic(&ADAPTER_META, &[("blk.0.attn_norm.weight", vec![64])]);
    let e = import(&f);
    assert!(
        matches!(&e, LoraError::GgufUnsupported { tensor, .. } if tensor == "blk.0.attn_norm.weight"),
        "{e}"
    );
    // A one-dimensional factor.
    let f = synthetic(
        &ADAPTER_META,
        &[
            ("blk.0.attn_v.weight.lora_a", vec![64]),
            ("blk.0.attn_v.weight.lora_b", vec![32, 8]),
        ],
    );
    let e = import(&f);
    assert!(
        matches!(&e, LoraError::Shape { name, .. } if name == "blk.0.attn_v.weight.lora_a"),
        "{e}"
    );
    // Not an adapter, not LoRA, another architecture than the base's.
    let f = synthetic(
        &[
            ("general.architecture", "llama"),
            ("general.type", "model"),
            ("adapter.type", "lora"),
        ],
        &[],
    );
    assert!(matches!(import(&f), LoraError::GgufMetadata { key, .. } if key == "general.type"));
    let f = synthetic(
        &[
            ("general.architecture", "llama"),
            ("general.type", "adapter"),
            ("adapter.type", "ia3"),
        ],
        &[],
    );
    assert!(matches!(import(&f), LoraError::GgufMetadata { key, .. } if key == "adapter.type"));
    let f = synthetic(
        &[
            ("general.architecture", "qwen2"),
            ("general.type", "adapter"),
            ("adapter.type", "lora"),
        ],
        &[],
    );
    assert!(
        matches!(import(&f), LoraError::GgufMetadata { key, .. } if key == "general.architecture")
    );
    // A block past the base's block count.
    let f = synthetic(
        &ADAPTER_META,
        &[
            ("blk.7.attn_v.weight.lora_a", vec![4, 64]),
            ("blk.7.attn_v.weight.lora_b", vec![32, 4]),
        ],
    );
    assert!(matches!(
        import(&f),
        LoraError::Arch(ArchError::UnknownTensor { .. })
    ));
    // q/k need the base's head counts; v does not.
    let qk = synthetic(
        &ADAPTER_META,
        &[
            ("blk.0.attn_q.weight.lora_a", vec![4, 64]),
            ("blk.0.attn_q.weight.lora_b", vec![64, 4]),
        ],
    );
    let e = adapter_from_gguf(&qk, None).unwrap_err();
    assert!(
        matches!(&e, LoraError::NeedsBaseConfig(t) if t == "blk.0.attn_q.weight.lora_b"),
        "{e}"
    );
    let v = synthetic(
        &ADAPTER_META,
        &[
            ("blk.0.attn_v.weight.lora_a", vec![4, 64]),
            ("blk.0.attn_v.weight.lora_b", vec![32, 4]),
        ],
    );
    let a = adapter_from_gguf(&v, None).unwrap();
    assert_eq!(a.modules()[0].module, "model.layers.0.self_attn.v_proj");
    assert_eq!(a.modules()[0].scaling, 1.0);
}

#[test]
fn export_gguf_writes_the_file() {
    let adapter = Adapter::open(root().join("testdata/lora/basic")).unwrap();
    let out = tmp("basic-export.gguf");
    let modules = export_gguf(&adapter, &llama(), &out, &GgufExportOptions::default()).unwrap();
    assert_eq!(modules.len(), 14);
    // Byte-identical to the converter's file but for the model-card keys:
    // the tensor data sections are equal.
    let ours = GgufFile::open(&out).unwrap();
    let theirs = fixture("basic-f32.gguf");
    let data = |f: &GgufFile| f.bytes()[f.header().data_offset()..].to_vec();
    assert!(data(&ours) == data(&theirs));
    std::fs::remove_file(out).unwrap();
}
