//! The whole pipeline against the reference tools: Hugging Face -> GGUF
//! equals convert_hf_to_gguf.py's file, GGUF -> Hugging Face inverts it, and
//! quantizing writes exactly the quant crate's bytes for every tensor.

use std::path::{Path, PathBuf};

use weightkit_core::{DType, Value};
use weightkit_gguf::GgufFile;
use weightkit_io::convert::{ConvertOptions, convert, run_plan};
use weightkit_io::mixture::{Mixture, parse_override};
use weightkit_io::plan::{GgufPlanOptions, hf_to_gguf_plan};
use weightkit_io::quantize::{QuantizeOptions, quantize_with_plan};
use weightkit_io::{Format, open};

fn testdata(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../testdata")
        .join(rel)
}

fn temp(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("wk-io-pipe-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A Hugging Face directory: a fixture's weights and config plus tokenizer files.
fn hf_dir(tag: &str, weights: &str, tokenizer: Option<&str>) -> PathBuf {
    let d = temp(tag).join("model");
    std::fs::create_dir_all(&d).unwrap();
    for f in std::fs::read_dir(testdata(weights)).unwrap() {
        let p = f.unwrap().path();
        std::fs::copy(&p, d.join(p.file_name().unwrap())).unwrap();
    }
    if let Some(t) = tokenizer {
        for f in std::fs::read_dir(testdata(t)).unwrap() {
            let p = f.unwrap().path();
            if p.is_file() {
                std::fs::copy(&p, d.join(p.file_name().unwrap())).unwrap();
            }
        }
    }
    d
}

fn same_gguf(ours: &Path, theirs: &Path) {
    let (a, b) = (
        GgufFile::open(ours).unwrap(),
        GgufFile::open(theirs).unwrap(),
    );
    let ka: Vec<&str> = a.metadata().iter().map(|(k, _)| k).collect();
    let kb: Vec<&str> = b.metadata().iter().map(|(k, _)| k).collect();
    assert_eq!(ka, kb, "metadata keys and order");
    for (k, v) in b.metadata().iter() {
        assert_eq!(a.get(k), Some(v), "metadata `{k}`");
    }
    assert_eq!(a.tensors(), b.tensors(), "tensor infos and order");
    for t in b.tensors() {
        assert_eq!(
            a.tensor(&t.name).unwrap().data(),
            b.tensor(&t.name).unwrap().data(),
            "{}",
            t.name
        );
    }
}

#[test]
fn hf_to_gguf_equals_convert_hf_to_gguf() {
    for (tag, weights, tok, expected, pre) in [
        (
            "llama3",
            "tiny-llama/safetensors-f32",
            Some("arch/tok-llama3"),
            "arch/expected/llama3.f32.gguf",
            Some("llama-bpe"),
        ),
        (
            "qwen2",
            "arch/qwen2",
            Some("arch/tok-qwen2"),
            "arch/expected/qwen2.f32.gguf",
            Some("qwen2"),
        ),
        (
            "bias",
            "arch/llama-bias",
            Some("arch/tok-qwen2"),
            "arch/expected/llama-bias.f32.gguf",
            Some("qwen2"),
        ),
    ] {
        let expected_path = testdata(expected);
        let reference = GgufFile::open(&expected_path).unwrap();
        let name = reference.get_str("general.name").ok().map(str::to_owned);
        let dir = hf_dir(tag, weights, tok);
        let model = open(&dir).unwrap();
        let plan = hf_to_gguf_plan(
            &model,
            &GgufPlanOptions {
                name,
                pre: pre.map(str::to_owned),
                ..GgufPlanOptions::default()
            },
        )
        .unwrap();
        let out = dir.parent().unwrap().join("ours.gguf");
        run_plan(
            &model,
            &plan,
            &out,
            &ConvertOptions {
                to: Format::Gguf,
                ..ConvertOptions::default()
            },
        )
        .unwrap();
        same_gguf(&out, &expected_path);
        std::fs::remove_dir_all(dir.parent().unwrap()).unwrap();
    }
}

#[test]
fn hf_gguf_hf_round_trip_is_the_identity() {
    let dir = temp("roundtrip");
    let start = open(testdata("tiny-llama/safetensors-f32")).unwrap();
    let gguf = dir.join("m.gguf");
    convert(
        &start,
        &gguf,
        &ConvertOptions {
            to: Format::Gguf,
            ..ConvertOptions::default()
        },
    )
    .unwrap();
    let g = open(&gguf).unwrap();
    assert!(g.source().position("blk.0.attn_q.weight").is_some());
    let back = dir.join("hf");
    convert(
        &g,
        &back,
        &ConvertOptions {
            to: Format::Safetensors,
            ..ConvertOptions::default()
        },
    )
    .unwrap();
    let b = open(&back).unwrap();
    let (sa, sb) = (start.source(), b.source());
    assert_eq!(sa.tensor_infos().len(), sb.tensor_infos().len());
    for (i, info) in sa.tensor_infos().iter().enumerate() {
        let j = sb
            .position(&info.name)
            .unwrap_or_else(|| panic!("{} missing after the round trip", info.name));
        assert_eq!(
            sa.load(i).unwrap().view().data(),
            sb.load(j).unwrap().view().data(),
            "{}",
            info.name
        );
    }
    // config.json comes back with the same architecture numbers.
    let (c0, c1) = (start.config().unwrap(), b.config().unwrap());
    for k in [
        "hidden_size",
        "intermediate_size",
        "num_hidden_layers",
        "num_attention_heads",
        "num_key_value_heads",
        "vocab_size",
        "rms_norm_eps",
    ] {
        assert_eq!(c0[k], c1[k], "config `{k}`");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn quantized_tensors_equal_the_quant_crate_bytes() {
    // The pipeline must add nothing: every tensor of the quantized GGUF is
    // exactly weightkit_quant::quantize of the same f32 rows (permuted as
    // the GGUF layout needs), in the type llama-quantize's rules chose.
    let dir = temp("quant");
    let model = open(testdata("tiny-llama/safetensors-f32")).unwrap();
    let f32_gguf = dir.join("f32.gguf");
    convert(
        &model,
        &f32_gguf,
        &ConvertOptions {
            to: Format::Gguf,
            ..ConvertOptions::default()
        },
    )
    .unwrap();
    let reference = GgufFile::open(&f32_gguf).unwrap();
    for (mixture, overrides) in [("Q4_K_M", vec![]), ("Q8_0", vec!["ffn_down=f16"])] {
        let mix = Mixture::from_name(mixture).unwrap();
        let mut opts = QuantizeOptions::default();
        opts.choice.overrides = overrides
            .iter()
            .map(|o| parse_override(o).unwrap())
            .collect();
        let plan = hf_to_gguf_plan(&model, &GgufPlanOptions::default()).unwrap();
        let out = dir.join(format!("{mixture}.gguf"));
        let report = quantize_with_plan(&model, plan, &out, mix, &opts).unwrap();
        let q = GgufFile::open(&out).unwrap();
        assert_eq!(q.get_u32("general.file_type").unwrap(), mix.ftype());
        assert_eq!(q.get_u32("general.quantization_version").unwrap(), 2);
        let mut quantized = 0;
        for t in q.tensors() {
            let src = reference.tensor(&t.name).unwrap();
            let f = src.to_f32_vec().unwrap();
            let want = weightkit_quant::quantize(t.dtype, &f, t.shape.row_len(), None).unwrap();
            assert!(
                q.tensor(&t.name).unwrap().data() == &want[..],
                "{mixture} {}: {}",
                t.name,
                t.dtype
            );
            quantized += usize::from(t.dtype.is_quantized());
        }
        assert!(
            quantized >= 7,
            "{mixture}: only {quantized} quantized tensors"
        );
        assert_eq!(report.tensors.len(), q.tensors().len());
        assert!(matches!(q.get("general.architecture"), Some(Value::String(a)) if a == "llama"));
    }
    // Q8_0 without the override: llama-quantize has no fallback for
    // ffn_down's 172-wide rows, and neither do we.
    let plan = hf_to_gguf_plan(&model, &GgufPlanOptions::default()).unwrap();
    let r = quantize_with_plan(
        &model,
        plan,
        &dir.join("x.gguf"),
        Mixture::from_name("Q8_0").unwrap(),
        &QuantizeOptions::default(),
    );
    assert!(r.is_err());
    assert!(!dir.join("x.gguf").exists());
    let _ = DType::Q8_0;
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn progress_sees_every_tensor() {
    use std::sync::Mutex;
    use weightkit_io::convert::{Progress, run_plan_with_progress};
    #[derive(Default)]
    struct Log(Mutex<(usize, u64, u64, Vec<String>)>);
    impl Progress for Log {
        fn start(&self, tensors: usize, _bytes_in: u64, bytes_out: u64) {
            let mut l = self.0.lock().unwrap();
            l.0 = tensors;
            l.2 = bytes_out;
        }
        fn tensor_done(&self, _i: usize, name: &str, _d: DType, _bin: u64, bout: u64) {
            let mut l = self.0.lock().unwrap();
            l.1 += bout;
            l.3.push(name.to_owned());
        }
    }
    let dir = temp("progress");
    let model = open(testdata("tiny-llama/safetensors-f32")).unwrap();
    let plan = hf_to_gguf_plan(&model, &GgufPlanOptions::default()).unwrap();
    let log = Log::default();
    let r = run_plan_with_progress(
        &model,
        &plan,
        &dir.join("p.gguf"),
        &ConvertOptions {
            to: Format::Gguf,
            ..ConvertOptions::default()
        },
        &log,
    )
    .unwrap();
    let l = log.0.lock().unwrap();
    assert_eq!(l.0, 21);
    assert_eq!(l.3.len(), 21);
    assert_eq!(l.1, r.bytes_out);
    assert_eq!(
        l.2, r.bytes_out,
        "the announced total equals what was written"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
