//! Merging into GGUF bases: the tiny Llama converted to GGUF (f32, and
//! Q8_0 where the rows allow it), `testdata/lora/basic` merged into it, and
//! every tensor mapped back to Hugging Face names and layout compared with
//! PEFT 0.21.2's `merge_and_unload()` (`merged_reference.safetensors`).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use weightkit_core::DType;
use weightkit_gguf::GgufWriter;
use weightkit_io::convert::{ConvertOptions, convert};
use weightkit_io::plan::gguf_to_hf_plan;
use weightkit_io::{Format, Model};
use weightkit_lora::{Adapter, GgufMergeOptions, LoraError, gguf_merge_infos, merge_gguf_base};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn tmp(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!(
        "weightkit-lora-gguf-base-{}-{name}",
        std::process::id()
    ))
}

/// Every tensor of a GGUF model as f32 in Hugging Face names and layout.
fn as_hf(path: &Path) -> HashMap<String, Vec<f32>> {
    let model = weightkit_io::open(path).unwrap();
    let plan = gguf_to_hf_plan(&model, None).unwrap();
    let src = model.source();
    plan.tensors
        .iter()
        .map(|t| {
            let info = &src.tensor_infos()[t.source];
            let raw = src.load(t.source).unwrap();
            let n = info.shape.elem_count().unwrap();
            let mut v = vec![0f32; n];
            if info.dtype.is_quantized() {
                weightkit_quant::dequantize(info.dtype, raw.view().data(), &mut v).unwrap();
            } else {
                weightkit_core::convert::decode_f32(info.dtype, raw.view().data(), &mut v).unwrap();
            }
            let v = t.transform.apply(&v, info).unwrap().into_owned();
            (t.out.name.clone(), v)
        })
        .collect()
}

fn safetensors_f32(path: &Path) -> HashMap<String, Vec<f32>> {
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

fn gguf_base(dtype: DType, tag: &str) -> PathBuf {
    let base = weightkit_io::open(root().join("testdata/tiny-llama/safetensors-f32")).unwrap();
    let f32_path = tmp(&format!("{tag}-base-f32.gguf"));
    convert(
        &base,
        &f32_path,
        &ConvertOptions {
            to: Format::Gguf,
            ..ConvertOptions::default()
        },
    )
    .unwrap();
    if dtype == DType::F32 {
        return f32_path;
    }
    // Quantize the 2-D weights whose rows are whole Q8_0 blocks.
    let model = weightkit_io::open(&f32_path).unwrap();
    let src = model.source();
    let infos: Vec<_> = src
        .tensor_infos()
        .iter()
        .map(|t| {
            let mut t = t.clone();
            if t.shape.rank() == 2 && t.shape.row_len() % 32 == 0 {
                t.dtype = dtype;
            }
            t
        })
        .collect();
    let out = tmp(&format!("{tag}-base-q8_0.gguf"));
    let mut w = GgufWriter::create(&out, src.metadata(), infos.clone()).unwrap();
    for (i, t) in infos.iter().enumerate() {
        let v = src.load(i).unwrap().view().to_f32_vec().unwrap();
        let bytes = if t.dtype == DType::F32 {
            src.load(i).unwrap().view().data().to_vec()
        } else {
            weightkit_quant::quantize(t.dtype, &v, t.shape.row_len(), None).unwrap()
        };
        weightkit_core::TensorSink::write_tensor(&mut w, &t.name, &bytes).unwrap();
    }
    weightkit_core::TensorSink::finish(w).unwrap();
    let _ = std::fs::remove_file(&f32_path);
    out
}

fn merge(base: &Path, out: &Path, opts: &GgufMergeOptions) -> weightkit_lora::GgufMergeReport {
    let adapter = Adapter::open(root().join("testdata/lora/basic")).unwrap();
    let model: Model = weightkit_io::open(base).unwrap();
    let adapters = [(&adapter, 1.0f32)];
    let infos = gguf_merge_infos(&model, &adapters, opts).unwrap();
    let writer = GgufWriter::create(out, model.source().metadata(), infos).unwrap();
    merge_gguf_base(&model, &adapters, writer, opts).unwrap().0
}

#[test]
fn f32_gguf_base_matches_peft_through_the_name_tables_and_permutation() {
    let base = gguf_base(DType::F32, "f32");
    let out = tmp("merged-f32.gguf");
    let report = merge(&base, &out, &GgufMergeOptions::default());
    // basic targets all seven linear layers in both blocks.
    assert_eq!(report.merged.len(), 14, "{report:?}");
    assert!(
        report
            .merged
            .iter()
            .any(|t| t.name == "blk.0.attn_q.weight")
    );
    assert!(report.merged.iter().all(|t| t.rel_rmse == 0.0));
    let ours = as_hf(&out);
    let want = safetensors_f32(&root().join("testdata/lora/basic/merged_reference.safetensors"));
    for (name, w) in &want {
        let Some(o) = ours.get(name) else {
            // llama.cpp drops what it recomputes (rotary inverse frequencies).
            continue;
        };
        let scale = w.iter().fold(0f32, |m, x| m.max(x.abs())).max(1e-30);
        let diff = o.iter().zip(w).fold(0f32, |m, (a, b)| m.max((a - b).abs()));
        assert!(diff / scale <= 1e-6, "{name}: {diff} (scale {scale})");
    }
    for p in [base, out] {
        let _ = std::fs::remove_file(p);
    }
}

#[test]
fn q8_0_gguf_base_is_requantized_and_reports_the_error() {
    let base = gguf_base(DType::Q8_0, "q8");
    let out = tmp("merged-q8_0.gguf");
    let report = merge(&base, &out, &GgufMergeOptions::default());
    assert_eq!(report.merged.len(), 14);
    let mut q8 = 0;
    for t in &report.merged {
        assert_eq!(t.base_dtype, t.dtype, "{}", t.name);
        if t.dtype == DType::Q8_0 {
            // Q8_0 keeps 8 bits per value: well under 1% relative RMS.
            assert!(
                t.rel_rmse > 0.0 && t.rel_rmse < 1e-2,
                "{}: {}",
                t.name,
                t.rel_rmse
            );
            q8 += 1;
        } else {
            // ffn_down's 172-wide rows stay F32 in this base: exact.
            assert_eq!((t.dtype, t.rel_rmse), (DType::F32, 0.0), "{}", t.name);
        }
    }
    assert_eq!(q8, 12);
    // Independent reference: PEFT's delta (merged - base reference) added to
    // the dequantized Q8_0 base, then compared with ours dequantized. They
    // differ by at most the requantization of the merged weights (half a
    // Q8_0 step, amax/127/2 per block).
    let base_q = as_hf(&base);
    let ours = as_hf(&out);
    let merged_ref =
        safetensors_f32(&root().join("testdata/lora/basic/merged_reference.safetensors"));
    let base_ref =
        safetensors_f32(&root().join("testdata/tiny-llama/safetensors-f32/model.safetensors"));
    let mut checked = 0;
    for name in [
        "model.layers.0.self_attn.q_proj.weight",
        "model.layers.1.self_attn.k_proj.weight",
        "model.layers.1.self_attn.v_proj.weight",
    ] {
        let want: Vec<f32> = base_q[name]
            .iter()
            .zip(&merged_ref[name])
            .zip(&base_ref[name])
            .map(|((q, m), b)| q + (m - b))
            .collect();
        let amax = want.iter().fold(0f32, |m, x| m.max(x.abs()));
        let diff = ours[name]
            .iter()
            .zip(&want)
            .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
        assert!(
            diff <= amax / 127.0 * 0.5 + 1e-6,
            "{name}: {diff} vs step {}",
            amax / 127.0
        );
        assert!(ours[name] != base_q[name], "{name} unchanged");
        checked += 1;
    }
    assert_eq!(checked, 3);
    // Tensors without LoRA are unchanged.
    for untouched in [
        "model.layers.0.input_layernorm.weight",
        "model.embed_tokens.weight",
    ] {
        assert_eq!(ours[untouched], base_q[untouched], "{untouched}");
    }
    for p in [base, out] {
        let _ = std::fs::remove_file(p);
    }
}

#[test]
fn requantizing_to_another_type_and_bad_bases_are_reported() {
    let base = gguf_base(DType::F32, "f16");
    let out = tmp("merged-f16.gguf");
    let report = merge(
        &base,
        &out,
        &GgufMergeOptions {
            requant: Some(DType::F16),
            ..GgufMergeOptions::default()
        },
    );
    assert_eq!(report.merged.len(), 14);
    for t in &report.merged {
        assert_eq!((t.base_dtype, t.dtype), (DType::F32, DType::F16));
        // f16 rounding: relative error around 2^-12.
        assert!(
            t.rel_rmse > 0.0 && t.rel_rmse < 1e-3,
            "{}: {}",
            t.name,
            t.rel_rmse
        );
    }
    let adapter = Adapter::open(root().join("testdata/lora/basic")).unwrap();
    // A requantization type whose blocks do not divide ffn_down's 172-wide
    // rows: refused before anything is written, naming the tensor.
    let model = weightkit_io::open(&base).unwrap();
    let opts = GgufMergeOptions {
        requant: Some(DType::Q8_0),
        ..GgufMergeOptions::default()
    };
    let err = gguf_merge_infos(&model, &[(&adapter, 1.0)], &opts).unwrap_err();
    assert!(
        matches!(&err, LoraError::Unsupported(m) if m.contains("ffn_down")),
        "{err}"
    );
    // A safetensors base is not a GGUF base.
    let st = weightkit_io::open(root().join("testdata/tiny-llama/safetensors-f32")).unwrap();
    let err = gguf_merge_infos(&st, &[(&adapter, 1.0)], &GgufMergeOptions::default()).unwrap_err();
    assert!(matches!(err, LoraError::Unsupported(_)), "{err}");
    for p in [base, out] {
        let _ = std::fs::remove_file(p);
    }
}
