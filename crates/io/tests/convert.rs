//! Every pair of formats converts the tiny Llama and back with identical
//! values; casts equal torch's own casts.

use std::path::PathBuf;

use weightkit_core::DType;
use weightkit_io::convert::{ConvertOptions, convert};
use weightkit_io::{Format, open};

fn testdata(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../testdata")
        .join(rel)
}

fn temp(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("wk-io-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Every tensor of `a` equals (name, dtype, shape, bytes) the one of `b`.
fn same_tensors(a: &weightkit_io::Model, b: &weightkit_io::Model) {
    let (sa, sb) = (a.source(), b.source());
    assert_eq!(sa.tensor_infos().len(), sb.tensor_infos().len());
    for (i, info) in sa.tensor_infos().iter().enumerate() {
        let j = sb
            .position(&info.name)
            .unwrap_or_else(|| panic!("{} missing", info.name));
        let (ta, tb) = (sa.load(i).unwrap(), sb.load(j).unwrap());
        assert_eq!(ta.view().dtype(), tb.view().dtype(), "{}", info.name);
        assert_eq!(ta.view().shape(), tb.view().shape(), "{}", info.name);
        assert_eq!(ta.view().data(), tb.view().data(), "{}", info.name);
    }
}

#[test]
fn every_pair_of_formats_round_trips() {
    let dir = temp("pairs");
    let start = open(testdata("tiny-llama/safetensors-f32")).unwrap();
    assert_eq!(start.format(), Format::Safetensors);
    assert!(start.config().is_some());
    let formats = [
        (Format::Safetensors, "st.safetensors"),
        (Format::PyTorch, "pt.bin"),
        (Format::Gguf, "gg.gguf"),
    ];
    for (from, from_name) in formats {
        // Write the model in `from`, then convert that to every format and
        // compare each result with the original.
        let first = dir.join(from_name);
        convert(
            &start,
            &first,
            &ConvertOptions {
                to: from,
                keep_names: true,
                ..ConvertOptions::default()
            },
        )
        .unwrap();
        let mid = open(&first).unwrap();
        assert_eq!(mid.format(), from);
        same_tensors(&start, &mid);
        for (to, to_name) in formats {
            let second = dir.join(format!("{from_name}-to-{to_name}"));
            convert(
                &mid,
                &second,
                &ConvertOptions {
                    to,
                    keep_names: true,
                    ..ConvertOptions::default()
                },
            )
            .unwrap();
            same_tensors(&start, &open(&second).unwrap());
        }
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn casts_equal_torchs_casts() {
    // f32 -> f16 through weightkit equals the model torch cast to f16 and
    // saved (the pytorch-bin-f16 fixture); f32 -> bf16 equals the
    // transformers-written bf16 shards.
    let dir = temp("casts");
    let f32 = open(testdata("tiny-llama/safetensors-f32")).unwrap();
    let out = dir.join("f16.bin");
    let r = convert(
        &f32,
        &out,
        &ConvertOptions {
            to: Format::PyTorch,
            dtype: Some(DType::F16),
            ..ConvertOptions::default()
        },
    )
    .unwrap();
    assert_eq!(r.tensors, 21);
    assert_eq!(r.bytes_out * 2, r.bytes_in);
    same_tensors(
        &open(testdata("tiny-llama/pytorch-bin-f16/pytorch_model.bin")).unwrap(),
        &open(&out).unwrap(),
    );
    let out = dir.join("bf16-dir");
    convert(
        &f32,
        &out,
        &ConvertOptions {
            to: Format::Safetensors,
            dtype: Some(DType::BF16),
            max_shard_size: Some(82_475),
            ..ConvertOptions::default()
        },
    )
    .unwrap();
    let ours = open(&out).unwrap();
    same_tensors(
        &open(testdata("tiny-llama/safetensors-bf16-sharded")).unwrap(),
        &ours,
    );
    // A Hugging Face directory output carries config.json and friends.
    assert!(out.join("config.json").is_file() && out.join("generation_config.json").is_file());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn legacy_and_views_convert() {
    let dir = temp("legacy");
    for src in ["tiny-llama/legacy/pytorch_model.bin", "pickle/views.pt"] {
        let m = open(testdata(src)).unwrap();
        let out = dir.join("out.safetensors");
        convert(&m, &out, &ConvertOptions::default()).unwrap();
        same_tensors(&m, &open(&out).unwrap());
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn failures_leave_no_output() {
    let dir = temp("fail");
    let m = open(testdata("gguf/quantized.gguf")).unwrap();
    // Quantized GGUF tensors cannot go to PyTorch: an error, and no file.
    let out = dir.join("x.bin");
    assert!(
        convert(
            &m,
            &out,
            &ConvertOptions {
                to: Format::PyTorch,
                ..ConvertOptions::default()
            }
        )
        .is_err()
    );
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 0);
    assert!(open(dir.join("missing")).is_err());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn gguf_keeps_norms_and_vectors_in_f32_as_the_converter() {
    // convert_hf_to_gguf.py writes 1-D tensors and `*_norm.weight` as F32
    // whatever the source or --outtype; 2-D weights keep bf16 here.
    let dir = temp("norms-f32");
    let out = dir.join("m.gguf");
    let model = open(testdata("tiny-llama/safetensors-bf16-sharded")).unwrap();
    convert(
        &model,
        &out,
        &ConvertOptions {
            to: Format::Gguf,
            ..ConvertOptions::default()
        },
    )
    .unwrap();
    let gguf = open(&out).unwrap();
    let src = gguf.source();
    let mut vectors = 0;
    for (i, t) in src.tensor_infos().iter().enumerate() {
        if t.shape.rank() == 1 {
            vectors += 1;
            assert_eq!(t.dtype, DType::F32, "{}", t.name);
            // The values are the bf16 ones, widened exactly.
            let hf = match t.name.as_str() {
                "output_norm.weight" => "model.norm.weight".to_owned(),
                n => {
                    let (layer, kind) = n
                        .strip_prefix("blk.")
                        .and_then(|r| r.split_once('.'))
                        .unwrap();
                    let norm = match kind {
                        "attn_norm.weight" => "input_layernorm",
                        "ffn_norm.weight" => "post_attention_layernorm",
                        other => panic!("{other}"),
                    };
                    format!("model.layers.{layer}.{norm}.weight")
                }
            };
            let widened = model
                .source()
                .load(model.source().position(&hf).unwrap())
                .unwrap()
                .view()
                .to_f32_vec()
                .unwrap();
            let ours = src.load(i).unwrap().view().to_f32_vec().unwrap();
            assert_eq!(widened, ours, "{}", t.name);
        } else {
            assert_eq!(t.dtype, DType::BF16, "{}", t.name);
        }
    }
    assert_eq!(vectors, 5);
    std::fs::remove_dir_all(dir).unwrap();
}
