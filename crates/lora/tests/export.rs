//! `export`: the tiny Llama + `testdata/lora/basic` exported in one pass
//! must be, tensor by tensor and key by key, the GGUF file that converting
//! and quantizing PEFT 0.21.2's own merge (`merged_reference.safetensors`,
//! see testdata/lora/README.md) gives: the merge is PEFT's, the names,
//! layout, metadata and quantization are the io crate's (themselves checked
//! against convert_hf_to_gguf.py and llama.cpp).

use std::path::{Path, PathBuf};

use weightkit_core::{DType, TensorSource};
use weightkit_gguf::GgufFile;
use weightkit_io::convert::NoProgress;
use weightkit_io::mixture::{self, Mixture};
use weightkit_io::plan::{GgufPlanOptions, hf_to_gguf_plan};
use weightkit_io::quantize::{QuantizeOptions, quantize_with_plan};
use weightkit_io::{Format, Model};
use weightkit_lora::{
    Adapter, ExportFormat, ExportOptions, LoraError, MergeOptions, export, merge_into,
};
use weightkit_safetensors::SafetensorsWriter;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn tmp(name: &str) -> PathBuf {
    let p = std::env::temp_dir().join(format!(
        "weightkit-lora-export-{}-{name}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&p);
    std::fs::create_dir_all(&p).unwrap();
    p
}

fn base() -> Model {
    weightkit_io::open(root().join("testdata/tiny-llama/safetensors-f32")).unwrap()
}

fn basic() -> Adapter {
    Adapter::open(root().join("testdata/lora/basic")).unwrap()
}

/// llama-quantize's options for `mixture` with `overrides` (172-wide
/// ffn_down rows are no whole number of 32-blocks: Q8_0 has no fallback).
fn quantize_options(overrides: &[&str]) -> QuantizeOptions {
    QuantizeOptions {
        choice: mixture::Options {
            overrides: overrides
                .iter()
                .map(|o| mixture::parse_override(o).unwrap())
                .collect(),
            ..mixture::Options::default()
        },
        imatrix: None,
    }
}

fn plan_options() -> GgufPlanOptions {
    GgufPlanOptions {
        dtype: None,
        name: Some("tiny".into()),
        pre: None,
    }
}

/// PEFT's merged model as a Hugging Face directory, quantized by the io
/// crate's pass (what `weightkit quantize` does).
fn quantize_reference(mixture: Mixture, overrides: &[&str], out: &Path) {
    let dir = out.parent().unwrap().join("peft-merged");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(
        root().join("testdata/tiny-llama/safetensors-f32/config.json"),
        dir.join("config.json"),
    )
    .unwrap();
    std::fs::copy(
        root().join("testdata/lora/basic/merged_reference.safetensors"),
        dir.join("model.safetensors"),
    )
    .unwrap();
    let model = weightkit_io::open(&dir).unwrap();
    let plan = hf_to_gguf_plan(&model, &plan_options()).unwrap();
    quantize_with_plan(&model, plan, out, mixture, &quantize_options(overrides)).unwrap();
}

fn export_gguf(mixture: Mixture, overrides: &[&str], out: &Path) -> weightkit_lora::ExportReport {
    export_basic(base(), out, gguf_format(mixture, overrides))
}

/// `basic` merged into `base` and written to `out` as `format` says.
fn export_basic(base: Model, out: &Path, format: ExportFormat) -> weightkit_lora::ExportReport {
    export(
        base,
        vec![(basic(), 1.0)],
        out,
        &ExportOptions {
            merge: MergeOptions::default(),
            format,
        },
        &NoProgress,
    )
    .unwrap()
}

/// A merged Hugging Face safetensors output in the base's types.
fn hf_safetensors() -> ExportFormat {
    ExportFormat::HuggingFace {
        format: Format::Safetensors,
        dtype: None,
        max_shard_size: None,
    }
}

/// GGUF with `mixture` and `overrides`, named `tiny`.
fn gguf_format(mixture: Mixture, overrides: &[&str]) -> ExportFormat {
    ExportFormat::Gguf {
        mixture,
        quantize: quantize_options(overrides),
        plan: plan_options(),
    }
}

/// Same metadata, tensor names, types, shapes and bytes; the number of
/// quantized tensors whose bytes differ is returned (0 for equal files).
fn compare(ours: &Path, reference: &Path) -> usize {
    let a = GgufFile::open(ours).unwrap();
    let b = GgufFile::open(reference).unwrap();
    assert_eq!(a.metadata(), b.metadata());
    assert_eq!(a.tensors(), b.tensors());
    let mut differ = 0;
    for (i, t) in a.tensors().iter().enumerate() {
        let x = a.load(i).unwrap();
        let y = b.load(i).unwrap();
        if x.view().data() != y.view().data() {
            eprintln!("{} ({}) differs", t.name, t.dtype);
            differ += 1;
        }
    }
    differ
}

#[test]
fn q8_0_export_is_converting_peft_s_merge() {
    let dir = tmp("q8");
    let ours = dir.join("ours.gguf");
    let reference = dir.join("reference.gguf");
    let report = export_gguf(Mixture::Q8_0, &["ffn_down=f16"], &ours);
    quantize_reference(Mixture::Q8_0, &["ffn_down=f16"], &reference);
    assert_eq!(compare(&ours, &reference), 0);
    // basic adapts all seven projections of both layers.
    assert_eq!(report.merged.merged.len(), 14, "{:?}", report.merged);
    assert!(
        report
            .tensors
            .iter()
            .any(|t| t.name == "blk.0.attn_q.weight" && t.dtype == DType::Q8_0)
    );
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn q4_k_m_export_is_quantizing_peft_s_merge() {
    let dir = tmp("q4km");
    let ours = dir.join("ours.gguf");
    let reference = dir.join("reference.gguf");
    export_gguf(Mixture::Q4_K_M, &[], &ours);
    quantize_reference(Mixture::Q4_K_M, &[], &reference);
    assert_eq!(compare(&ours, &reference), 0);
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn hugging_face_export_is_the_streaming_merge() {
    let dir = tmp("hf");
    let out = dir.join("merged");
    let report = export_basic(base(), &out, hf_safetensors());
    assert!(out.join("config.json").is_file());
    // merge_into's file, written by the safetensors writer directly.
    let b = base();
    let direct = dir.join("direct.safetensors");
    let writer = SafetensorsWriter::create(
        &direct,
        b.source().tensor_infos().to_vec(),
        &weightkit_core::Metadata::new(),
    )
    .unwrap();
    merge_into(
        b.source(),
        &[(&basic(), 1.0)],
        writer,
        &MergeOptions::default(),
    )
    .unwrap();
    let x = weightkit_io::open(&out).unwrap();
    let y = weightkit_io::open(&direct).unwrap();
    assert_eq!(x.source().tensor_infos(), y.source().tensor_infos());
    for i in 0..x.source().tensor_infos().len() {
        assert_eq!(
            x.source().load(i).unwrap().view().data(),
            y.source().load(i).unwrap().view().data()
        );
    }
    assert_eq!(report.merged.merged.len(), 14);
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn a_bf16_base_keeps_unquantized_merged_tensors_in_bf16() {
    // attn_q overridden to bf16 (the base's type, so the mixture keeps
    // it): the merged q_proj, handed over as f32, must be rounded once to
    // bf16 as the chain's 16-bit merged copy would be, not written as f32.
    let dir = tmp("bf16");
    let out = dir.join("out.gguf");
    let base =
        weightkit_io::open(root().join("testdata/tiny-llama/safetensors-bf16-sharded")).unwrap();
    let report = export_basic(
        base,
        &out,
        gguf_format(Mixture::Q8_0, &["ffn_down=f16", "attn_q=bf16"]),
    );
    let q = report
        .tensors
        .iter()
        .find(|t| t.name == "blk.0.attn_q.weight")
        .unwrap();
    assert_eq!(q.dtype, DType::BF16);
    // Bytes read are the bf16 base's (123,712 parameters), not the f32 the
    // merge hands over.
    assert_eq!(report.convert.bytes_in, 2 * 123_712);
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn adapters_that_do_not_fit_fail_before_writing() {
    let dir = tmp("bad");
    let out = dir.join("out.gguf");
    let gpt2 = Adapter::open(root().join("testdata/lora/gpt2-fan-in-fan-out")).unwrap();
    let err = export(
        base(),
        vec![(gpt2, 1.0)],
        &out,
        &ExportOptions {
            merge: MergeOptions::default(),
            format: ExportFormat::Gguf {
                mixture: Mixture::Q8_0,
                quantize: quantize_options(&["ffn_down=f16"]),
                plan: plan_options(),
            },
        },
        &NoProgress,
    )
    .unwrap_err();
    assert!(matches!(err, LoraError::MissingBaseTensor { .. }), "{err}");
    assert!(!out.exists());
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn a_llama_cpp_gguf_base_exports_the_same_tensors() {
    // The tiny Llama as an f32 GGUF (llama.cpp's names, q/k rows permuted):
    // merged through the name tables, its Q8_0 export holds the same
    // tensors, byte for byte, as the Hugging Face base's.
    let dir = tmp("gguf-base");
    let gguf = dir.join("base.gguf");
    weightkit_io::convert::convert(
        &base(),
        &gguf,
        &weightkit_io::convert::ConvertOptions {
            to: Format::Gguf,
            ..weightkit_io::convert::ConvertOptions::default()
        },
    )
    .unwrap();
    let from_gguf = dir.join("from-gguf.gguf");
    let report = export_basic(
        weightkit_io::open(&gguf).unwrap(),
        &from_gguf,
        gguf_format(Mixture::Q8_0, &["ffn_down=f16"]),
    );
    assert!(report.merged.llama_cpp_names);
    assert_eq!(report.merged.merged.len(), 14);
    let from_hf = dir.join("from-hf.gguf");
    export_gguf(Mixture::Q8_0, &["ffn_down=f16"], &from_hf);
    let a = GgufFile::open(&from_gguf).unwrap();
    let b = GgufFile::open(&from_hf).unwrap();
    assert_eq!(a.tensors(), b.tensors());
    for i in 0..a.tensors().len() {
        assert_eq!(
            a.load(i).unwrap().view().data(),
            b.load(i).unwrap().view().data(),
            "{}",
            a.tensors()[i].name
        );
    }
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn a_quantized_gguf_base_exports_to_a_hugging_face_directory() {
    // tiny Llama -> Q8_0 GGUF (llama.cpp's names; ffn_down F16), then the
    // adapter merged into it and written as Hugging Face safetensors: every
    // tensor dequantized to f32 under its HF name and layout, within Q8_0's
    // error of PEFT's merge.
    let dir = tmp("q8-to-hf");
    let q8 = dir.join("q8.gguf");
    let model = base();
    let plan = hf_to_gguf_plan(&model, &plan_options()).unwrap();
    quantize_with_plan(
        &model,
        plan,
        &q8,
        Mixture::Q8_0,
        &quantize_options(&["ffn_down=f16"]),
    )
    .unwrap();
    let out = dir.join("hf");
    let report = export_basic(weightkit_io::open(&q8).unwrap(), &out, hf_safetensors());
    assert!(report.merged.llama_cpp_names);
    let ours = weightkit_io::open(out.join("model.safetensors")).unwrap();
    let peft = weightkit_io::open(root().join("testdata/lora/basic/merged_reference.safetensors"))
        .unwrap();
    let (a, b) = (ours.source(), peft.source());
    assert_eq!(a.tensor_infos().len(), b.tensor_infos().len());
    for (i, t) in a.tensor_infos().iter().enumerate() {
        assert_eq!(t.dtype, DType::F32, "{}", t.name);
        let x = a.load(i).unwrap().view().to_f32_vec().unwrap();
        let j = b.position(&t.name).unwrap_or_else(|| panic!("{}", t.name));
        let y = b.load(j).unwrap().view().to_f32_vec().unwrap();
        let (mut d2, mut n2) = (0f64, 0f64);
        for (&p, &q) in x.iter().zip(&y) {
            d2 += f64::from(p - q).powi(2);
            n2 += f64::from(q).powi(2);
        }
        let rel = (d2 / n2).sqrt();
        // Q8_0: a step of amax/127 per 32 values, about 0.5% relative RMS;
        // F16 and F32 tensors far less.
        assert!(rel < 0.01, "{}: {rel}", t.name);
    }
    std::fs::remove_dir_all(dir).unwrap();
}
