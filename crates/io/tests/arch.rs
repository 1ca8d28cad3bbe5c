//! Architecture tables (`weightkit_io::arch`), checked against GGUF files
//! written by llama.cpp's real `convert_hf_to_gguf.py`
//! (`testdata/arch/expected/`, made by `testdata/arch/make_gguf.py`; the tiny
//! tokenizers by `testdata/arch/make_tokenizers.py`).

use std::collections::BTreeSet;
use std::path::PathBuf;

use proptest::prelude::*;
use serde_json::Value as Json;
use weightkit_core::{Metadata, Value};
use weightkit_gguf::GgufFile;
use weightkit_io::arch::{
    Arch, ArchError, GgufOptions, ModelConfig, RopeScaling, TensorNames, TokenizerFiles,
    TokenizerOptions, hf_to_gguf_metadata, permute_rows, size_label, tokenizer_metadata,
    unpermute_rows,
};
use weightkit_safetensors::SafetensorsFile;

fn testdata(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../testdata")
        .join(rel)
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(testdata(rel)).unwrap()
}

fn config(rel: &str) -> ModelConfig {
    ModelConfig::from_hf_json_str(&read(rel)).unwrap()
}

fn gguf(name: &str) -> GgufFile {
    GgufFile::read(testdata(&format!("arch/expected/{name}"))).unwrap()
}

/// Our metadata for a model directory assembled from `config` and the
/// tokenizer files in `tok_dir` (as `make_gguf.py` assembles them).
fn our_metadata(
    config_rel: &str,
    tok_dir: &str,
    pre: Option<&str>,
    opts: &GgufOptions,
) -> Metadata {
    our_metadata_with(config_rel, files(tok_dir), pre, opts)
}

fn files(tok_dir: &str) -> TokenizerFiles {
    TokenizerFiles::read_dir(testdata(tok_dir)).unwrap()
}

/// The tokenizer.json-only view of a tokenizer directory.
fn json_only(tok_dir: &str) -> TokenizerFiles {
    TokenizerFiles {
        tokenizer_model: None,
        ..files(tok_dir)
    }
}

fn our_metadata_with(
    config_rel: &str,
    files: TokenizerFiles,
    pre: Option<&str>,
    opts: &GgufOptions,
) -> Metadata {
    let cfg = config(config_rel);
    let m = hf_to_gguf_metadata(&cfg, &files, opts, pre).unwrap();
    // The two parts share no key.
    let mut topts = TokenizerOptions::from_config(&cfg);
    topts.pre = pre.map(str::to_owned);
    let parts = cfg.to_gguf_metadata(opts).unwrap().len()
        + tokenizer_metadata(&files, &topts).unwrap().len();
    assert_eq!(m.len(), parts);
    m
}

/// Named chat templates taken out: the converter writes them in directory
/// listing order and their name list in Python `set` order (which changes
/// from run to run), so they compare as a set.
fn split_chat_templates(m: &Metadata) -> (Metadata, BTreeSet<(String, String)>) {
    let mut rest = Metadata::new();
    let mut named = BTreeSet::new();
    for (k, v) in m.iter() {
        if let Some(name) = k.strip_prefix("tokenizer.chat_template.") {
            named.insert((name.to_owned(), v.to_string()));
        } else if k == "tokenizer.chat_templates" {
            let Value::Array(weightkit_core::Array::String(list)) = v else {
                panic!("{k}: {v}")
            };
            named.extend(list.iter().map(|n| ("(listed)".to_owned(), n.clone())));
        } else {
            rest.insert(k, v.clone());
        }
    }
    (rest, named)
}

/// Key by key, in order, with types.
fn assert_same_metadata(ours: &Metadata, theirs: &Metadata, what: &str) {
    let (ours, ours_named) = split_chat_templates(ours);
    let (theirs, theirs_named) = split_chat_templates(theirs);
    assert_eq!(ours_named, theirs_named, "{what}: named chat templates");
    let (ours, theirs) = (&ours, &theirs);
    let ok: Vec<&str> = ours.iter().map(|(k, _)| k).collect();
    let tk: Vec<&str> = theirs.iter().map(|(k, _)| k).collect();
    assert_eq!(ok, tk, "{what}: keys or their order differ");
    for ((k, a), (_, b)) in ours.iter().zip(theirs.iter()) {
        assert_eq!(a.value_type(), b.value_type(), "{what}: {k}: type");
        if a != b {
            panic!("{what}: {k}: ours {a}\n  convert's {b}");
        }
    }
}

fn opts(size_label: Option<&str>) -> GgufOptions {
    GgufOptions {
        name: Some("weightkit-tiny".into()),
        size_label: size_label.map(str::to_owned),
        file_type: Some(0),
    }
}

// ---------------------------------------------------------------- names

#[test]
fn architectures_by_every_name() {
    for a in Arch::ALL {
        assert_eq!(Arch::from_hf_class(a.hf_class()).unwrap(), a);
        assert_eq!(Arch::from_model_type(a.model_type()).unwrap(), a);
    }
    assert_eq!(Arch::Mistral.gguf_arch(), "llama");
    assert_eq!(Arch::from_gguf_arch("llama").unwrap(), Arch::Llama);
    assert_eq!(Arch::from_gguf_arch("qwen2").unwrap(), Arch::Qwen2);
    assert!(!Arch::Qwen2.permutes_qk() && Arch::Mistral.permutes_qk());
    let e = Arch::from_hf_class("GPT2LMHeadModel")
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("GPT2LMHeadModel")
            && e.contains("LlamaForCausalLM, MistralForCausalLM, Qwen2ForCausalLM"),
        "{e}"
    );
    let e = Arch::from_gguf_arch("gemma").unwrap_err().to_string();
    assert!(e.contains("gemma") && e.contains("llama, qwen2"), "{e}");
    let e = ModelConfig::from_hf_json(&serde_json::json!({"architectures": ["Phi3ForCausalLM"]}))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("Phi3ForCausalLM") && e.contains("Qwen2ForCausalLM"),
        "{e}"
    );
}

#[test]
fn names_both_ways() {
    let llama = TensorNames::new(Arch::Llama, 32, 32, 8);
    let cases: &[(&str, &str, Option<usize>)] = &[
        ("model.embed_tokens.weight", "token_embd.weight", None),
        ("model.norm.weight", "output_norm.weight", None),
        ("lm_head.weight", "output.weight", None),
        (
            "model.layers.0.input_layernorm.weight",
            "blk.0.attn_norm.weight",
            None,
        ),
        (
            "model.layers.31.post_attention_layernorm.weight",
            "blk.31.ffn_norm.weight",
            None,
        ),
        (
            "model.layers.7.self_attn.q_proj.weight",
            "blk.7.attn_q.weight",
            Some(32),
        ),
        (
            "model.layers.7.self_attn.k_proj.weight",
            "blk.7.attn_k.weight",
            Some(8),
        ),
        (
            "model.layers.7.self_attn.q_proj.bias",
            "blk.7.attn_q.bias",
            Some(32),
        ),
        (
            "model.layers.7.self_attn.k_proj.bias",
            "blk.7.attn_k.bias",
            Some(8),
        ),
        (
            "model.layers.7.self_attn.v_proj.weight",
            "blk.7.attn_v.weight",
            None,
        ),
        (
            "model.layers.7.self_attn.o_proj.weight",
            "blk.7.attn_output.weight",
            None,
        ),
        (
            "model.layers.7.self_attn.o_proj.bias",
            "blk.7.attn_output.bias",
            None,
        ),
        (
            "model.layers.10.mlp.gate_proj.weight",
            "blk.10.ffn_gate.weight",
            None,
        ),
        (
            "model.layers.10.mlp.up_proj.weight",
            "blk.10.ffn_up.weight",
            None,
        ),
        (
            "model.layers.10.mlp.down_proj.weight",
            "blk.10.ffn_down.weight",
            None,
        ),
        (
            "model.layers.10.mlp.down_proj.bias",
            "blk.10.ffn_down.bias",
            None,
        ),
    ];
    for &(hf, gg, heads) in cases {
        let to = llama.to_gguf(hf).unwrap().unwrap();
        assert_eq!((to.name.as_str(), to.permute_heads), (gg, heads), "{hf}");
        let back = llama.to_hf(gg).unwrap().unwrap();
        assert_eq!(
            (back.name.as_str(), back.unpermute_heads),
            (hf, heads),
            "{gg}"
        );
    }
    // The bare LlamaModel class has no `model.` prefix.
    assert_eq!(
        llama
            .to_gguf("layers.3.mlp.up_proj.weight")
            .unwrap()
            .unwrap()
            .name,
        "blk.3.ffn_up.weight"
    );
    assert_eq!(
        llama.to_gguf("embed_tokens.weight").unwrap().unwrap().name,
        "token_embd.weight"
    );
    // Skipped buffers, as the converter skips them.
    assert_eq!(
        llama
            .to_gguf("model.layers.0.self_attn.rotary_emb.inv_freq")
            .unwrap(),
        None
    );
    assert_eq!(llama.to_hf("rope_freqs.weight").unwrap(), None);

    let qwen = TensorNames::new(Arch::Qwen2, 2, 4, 2);
    for p in ["q", "k", "v"] {
        let t = qwen
            .to_gguf(&format!("model.layers.1.self_attn.{p}_proj.bias"))
            .unwrap()
            .unwrap();
        assert_eq!(
            (t.name, t.permute_heads),
            (format!("blk.1.attn_{p}.bias"), None)
        );
    }
    assert!(qwen.to_hf("rope_freqs.weight").is_err());

    for bad in [
        "model.layers.0.self_attn.qkv_proj.weight",
        "model.layers.32.mlp.up_proj.weight",
        "model.layers.07.mlp.up_proj.weight",
        "model.layers.-1.mlp.up_proj.weight",
        "model.layers.x.mlp.up_proj.weight",
        "model.layers.0.input_layernorm.bias",
        "model.embed_tokens.bias",
        "model.vision_tower.weight",
        "lm_head",
        "",
    ] {
        match llama.to_gguf(bad) {
            Err(e @ ArchError::UnknownTensor { .. }) => {
                assert!(e.to_string().contains(&format!("{bad:?}")), "{e}")
            }
            other => panic!("{bad}: {other:?}"),
        }
    }
    for bad in [
        "blk.0.attn_qkv.weight",
        "blk.32.attn_q.weight",
        "blk.0.ffn_norm.bias",
        "output.bias",
        "token_embd",
    ] {
        assert!(
            matches!(llama.to_hf(bad), Err(ArchError::UnknownTensor { .. })),
            "{bad}"
        );
    }
}

// ---------------------------------------------------------------- permutation

/// The permutation written as numpy does it: view `[rows, cols]` as
/// `(n_head, 2, half, cols)`, swap axes 1 and 2, and read out row-major.
fn reference_permute(x: &[u32], rows: usize, cols: usize, n_head: usize) -> Vec<u32> {
    let half = rows / n_head / 2;
    let at = |h: usize, i: usize, j: usize, c: usize| x[((h * 2 + i) * half + j) * cols + c];
    let mut out = Vec::with_capacity(x.len());
    for h in 0..n_head {
        for j in 0..half {
            for i in 0..2 {
                for c in 0..cols {
                    out.push(at(h, i, j, c));
                }
            }
        }
    }
    out
}

fn to_bytes(x: &[u32], elem_size: usize) -> Vec<u8> {
    // Each element is `elem_size` bytes holding (part of) its index, so any
    // misplaced byte shows.
    x.iter()
        .flat_map(|&v| {
            (0..elem_size).map(move |b| (v.wrapping_mul(7).wrapping_add(b as u32) % 251) as u8)
        })
        .collect()
}

#[test]
fn permute_equals_the_index_formula_and_inverts() {
    for &(rows, cols, n_head) in &[
        (8, 3, 2),
        (64, 64, 4),
        (32, 64, 2),
        (16, 1, 4),
        (12, 5, 3),
        (2, 7, 1),
        (128, 2, 64),
    ] {
        let x: Vec<u32> = (0..(rows * cols) as u32).collect();
        let want = reference_permute(&x, rows, cols, n_head);
        for elem_size in [1, 2, 4, 8, 18] {
            let bytes = to_bytes(&x, elem_size);
            let p = permute_rows(&bytes, elem_size, rows, cols, n_head).unwrap();
            assert_eq!(
                p,
                to_bytes(&want, elem_size),
                "{rows}x{cols} heads {n_head} elem {elem_size}"
            );
            assert_eq!(
                unpermute_rows(&p, elem_size, rows, cols, n_head).unwrap(),
                bytes
            );
        }
    }
    // One head of dimension 4: rows (0 1 | 2 3) -> (0 2 1 3).
    let p = permute_rows(&[0, 1, 2, 3], 1, 4, 1, 1).unwrap();
    assert_eq!(p, [0, 2, 1, 3]);
}

#[test]
fn permute_rejects_bad_shapes_without_panicking() {
    let b = vec![0u8; 48];
    for (elem, rows, cols, heads) in [
        (4, 12, 1, 4),
        (4, 12, 1, 0),
        (0, 12, 1, 2),
        (4, 6, 1, 2),
        (4, 12, 2, 2),
    ] {
        for f in [permute_rows, unpermute_rows] {
            assert!(
                matches!(
                    f(&b, elem, rows, cols, heads),
                    Err(ArchError::Permute { .. })
                ),
                "{elem} {rows} {cols} {heads}"
            );
        }
    }
    assert!(permute_rows(&b, usize::MAX, 2, 2, 1).is_err());
    assert!(permute_rows(&[], 4, 0, 5, 1).unwrap().is_empty());
}

proptest! {
    #[test]
    fn permute_round_trips(n_head in 1usize..6, half in 1usize..6, cols in 1usize..6, elem in 1usize..5, seed: u8) {
        let rows = n_head * 2 * half;
        let bytes: Vec<u8> = (0..rows * cols * elem).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)).collect();
        let p = permute_rows(&bytes, elem, rows, cols, n_head).unwrap();
        prop_assert_eq!(unpermute_rows(&p, elem, rows, cols, n_head).unwrap(), bytes.clone());
        let u = unpermute_rows(&bytes, elem, rows, cols, n_head).unwrap();
        prop_assert_eq!(permute_rows(&u, elem, rows, cols, n_head).unwrap(), bytes);
    }
}

/// Every tensor of a Hugging Face checkpoint against the GGUF the converter
/// wrote from it (f32, so bytes compare exactly), both ways.
fn check_tensors_against_convert(hf_dir: &str, config_rel: &str, gguf_name: &str) -> usize {
    let cfg = config(config_rel);
    let names = TensorNames::from_config(&cfg).unwrap();
    let st = SafetensorsFile::read(testdata(&format!("{hf_dir}/model.safetensors"))).unwrap();
    let gg = gguf(gguf_name);
    let mut seen = BTreeSet::new();
    let mut permuted = 0;
    for info in st.tensors() {
        let Some(to) = names.to_gguf(&info.name).unwrap() else {
            continue;
        };
        let hf = st.tensor(&info.name).unwrap();
        let theirs = gg.tensor(&to.name).unwrap();
        assert_eq!(theirs.shape().dims(), hf.shape().dims(), "{}", info.name);
        let dims = hf.shape().dims();
        let (rows, cols) = (dims[0], dims.get(1).copied().unwrap_or(1));
        let ours = match to.permute_heads {
            Some(h) => {
                permuted += 1;
                permute_rows(hf.data(), 4, rows, cols, h).unwrap()
            }
            None => hf.data().to_vec(),
        };
        assert!(
            ours == theirs.data(),
            "{} -> {}: bytes differ from convert's",
            info.name,
            to.name
        );
        // And back.
        let back = names.to_hf(&to.name).unwrap().unwrap();
        assert_eq!(back.name, info.name);
        let restored = match back.unpermute_heads {
            Some(h) => unpermute_rows(theirs.data(), 4, rows, cols, h).unwrap(),
            None => theirs.data().to_vec(),
        };
        assert!(restored == hf.data(), "{}: round trip", info.name);
        seen.insert(to.name);
    }
    let all: BTreeSet<String> = gg.tensors().iter().map(|t| t.name.clone()).collect();
    assert_eq!(seen, all, "tensor sets differ");
    permuted
}

#[test]
fn llama_tensors_equal_converts_including_the_permutation() {
    let permuted = check_tensors_against_convert(
        "tiny-llama/safetensors-f32",
        "tiny-llama/safetensors-f32/config.json",
        "llama3.f32.gguf",
    );
    assert_eq!(permuted, 4, "q and k of 2 layers");
}

#[test]
fn llama_biases_are_permuted_like_converts() {
    // attention_bias + mlp_bias: q/k weights and biases permuted, 2 layers.
    let permuted = check_tensors_against_convert(
        "arch/llama-bias",
        "arch/llama-bias/config.json",
        "llama-bias.f32.gguf",
    );
    assert_eq!(permuted, 8);
    let gg = gguf("llama-bias.f32.gguf");
    let params: usize = gg
        .tensors()
        .iter()
        .map(|t| t.shape.elem_count().unwrap())
        .sum();
    let ours = our_metadata(
        "arch/llama-bias/config.json",
        "arch/tok-qwen2",
        None,
        &opts(Some(&size_label(params as u64))),
    );
    assert_same_metadata(&ours, gg.metadata(), "llama-bias.f32.gguf");
}

#[test]
fn qwen2_tensors_equal_converts_biases_unpermuted() {
    let permuted =
        check_tensors_against_convert("arch/qwen2", "arch/qwen2/config.json", "qwen2.f32.gguf");
    assert_eq!(permuted, 0);
    let gg = gguf("qwen2.f32.gguf");
    assert!(gg.tensor("blk.1.attn_k.bias").is_ok() && gg.tensor("output.weight").is_err());
}

#[test]
fn permutation_works_on_16_bit_elements() {
    // bf16 shards of the same model: permuting raw 2-byte elements equals
    // permuting the f32 model and rounding (bf16 = the top half of f32 here).
    let cfg = config("tiny-llama/safetensors-f32/config.json");
    let f32s =
        SafetensorsFile::read(testdata("tiny-llama/safetensors-f32/model.safetensors")).unwrap();
    let st = weightkit_safetensors::ShardedSafetensors::open(testdata(
        "tiny-llama/safetensors-bf16-sharded",
    ))
    .unwrap();
    let name = "model.layers.1.self_attn.k_proj.weight";
    let bf = st.tensor(name).unwrap();
    let (rows, cols) = (bf.shape().dims()[0], bf.shape().dims()[1]);
    let heads = cfg.num_key_value_heads as usize;
    let p16 = permute_rows(bf.data(), 2, rows, cols, heads).unwrap();
    let p32 = permute_rows(f32s.tensor(name).unwrap().data(), 4, rows, cols, heads).unwrap();
    use weightkit_core::convert::{bf16_bits_to_f32, f32_to_bf16_bits};
    let widened: Vec<f32> = p16
        .chunks(2)
        .map(|b| bf16_bits_to_f32(u16::from_le_bytes([b[0], b[1]])))
        .collect();
    let rounded: Vec<f32> = p32
        .chunks(4)
        .map(|b| {
            bf16_bits_to_f32(f32_to_bf16_bits(f32::from_le_bytes([
                b[0], b[1], b[2], b[3],
            ])))
        })
        .collect();
    assert_eq!(widened, rounded);
}

// ---------------------------------------------------------------- config <-> metadata

#[test]
fn reads_transformers_4_and_5_layouts() {
    // transformers 5 (the fixture): rope_parameters, dtype, head_dim.
    let t5 = config("tiny-llama/safetensors-f32/config.json");
    assert_eq!(
        (t5.arch, t5.hf_class.as_str()),
        (Arch::Llama, "LlamaForCausalLM")
    );
    assert_eq!(
        (t5.vocab_size, t5.hidden_size, t5.intermediate_size),
        (256, 64, 172)
    );
    assert_eq!(
        (
            t5.num_hidden_layers,
            t5.num_attention_heads,
            t5.num_key_value_heads
        ),
        (2, 4, 2)
    );
    assert_eq!((t5.head_dim(), t5.max_position_embeddings), (16, 128));
    assert_eq!(
        (t5.rope_theta, t5.rms_norm_eps, t5.rope_scaling.clone()),
        (10000.0, 1e-5, None)
    );
    assert_eq!(t5.dtype.as_deref(), Some("float32"));
    assert_eq!(t5.token_ids["bos"], Json::from(1));

    // The same model written transformers-4 style: top-level rope_theta,
    // torch_dtype, no head_dim, rope_scaling null.
    let mut j: Json =
        serde_json::from_str(&read("tiny-llama/safetensors-f32/config.json")).unwrap();
    let o = j.as_object_mut().unwrap();
    o.remove("rope_parameters");
    o.remove("head_dim");
    o.remove("dtype");
    o.insert("rope_theta".into(), Json::from(10000.0));
    o.insert("rope_scaling".into(), Json::Null);
    o.insert("torch_dtype".into(), Json::from("float32"));
    let t4 = ModelConfig::from_hf_json(&j).unwrap();
    let mut t5_as_t4 = t5.clone();
    t5_as_t4.explicit_head_dim = None;
    assert_eq!(t4, t5_as_t4);
    assert_eq!(
        t4.to_gguf_metadata(&GgufOptions::default()).unwrap(),
        t5.to_gguf_metadata(&GgufOptions::default()).unwrap(),
        "both layouts give the same GGUF metadata"
    );

    // The transformers-4 test config: class defaults and torch_dtype.
    let c = config("arch/config-llama-t4.json");
    assert_eq!(
        (c.num_key_value_heads, c.head_dim(), c.explicit_head_dim),
        (4, 16, None)
    );
    assert_eq!(
        (c.rope_theta, c.rms_norm_eps, c.dtype.as_deref()),
        (10000.0, 1e-6, Some("bfloat16"))
    );
    // Mistral with head_dim null and no sliding window.
    let m = config("arch/config-mistral.json");
    assert_eq!(
        (m.arch, m.head_dim(), m.sliding_window, m.rope_theta),
        (Arch::Mistral, 8, None, 1e6)
    );
    // Llama 3.2: rope_scaling llama3 at the top level, eos a list.
    let r = config("arch/config-llama3-rope.json");
    assert_eq!(
        r.rope_scaling,
        Some(RopeScaling::Llama3 {
            factor: 32.0,
            low_freq_factor: 1.0,
            high_freq_factor: 4.0,
            original_max_position_embeddings: 8192
        })
    );
    assert_eq!(r.token_ids["eos"], serde_json::json!([201, 203]));
    // Class defaults for absent keys.
    let bare = |arch: &str| {
        ModelConfig::from_hf_json(&serde_json::json!({
            "architectures": [arch], "vocab_size": 10, "hidden_size": 64, "intermediate_size": 8,
            "num_hidden_layers": 1, "num_attention_heads": 4
        }))
        .unwrap()
    };
    let (l, mi, q) = (
        bare("LlamaForCausalLM"),
        bare("MistralForCausalLM"),
        bare("Qwen2ForCausalLM"),
    );
    assert_eq!(
        (
            l.num_key_value_heads,
            mi.num_key_value_heads,
            q.num_key_value_heads
        ),
        (4, 8, 32)
    );
    assert_eq!(
        (
            l.max_position_embeddings,
            mi.max_position_embeddings,
            q.max_position_embeddings
        ),
        (2048, 131072, 32768)
    );
}

#[test]
fn config_errors_say_what_and_where() {
    let base = || {
        serde_json::json!({
            "architectures": ["LlamaForCausalLM"], "vocab_size": 10, "hidden_size": 64, "intermediate_size": 8,
            "num_hidden_layers": 1, "num_attention_heads": 4
        })
    };
    let with = |k: &str, v: Json| {
        let mut j = base();
        j.as_object_mut().unwrap().insert(k.into(), v);
        ModelConfig::from_hf_json(&j)
    };
    let mut j = base();
    j.as_object_mut().unwrap().remove("hidden_size");
    assert!(matches!(
        ModelConfig::from_hf_json(&j),
        Err(ArchError::MissingConfigKey { key: "hidden_size" })
    ));
    assert!(matches!(
        with("vocab_size", Json::from("ten")),
        Err(ArchError::InvalidConfig { .. })
    ));
    assert!(matches!(
        with("num_attention_heads", Json::from(0)),
        Err(ArchError::InvalidConfig { .. })
    ));
    assert!(matches!(
        with("num_attention_heads", Json::from(5)),
        Err(ArchError::InvalidConfig { .. })
    ));
    assert!(matches!(
        ModelConfig::from_hf_json_str("{"),
        Err(ArchError::Json {
            file: "config.json",
            ..
        })
    ));
    for t in ["dynamic", "longrope", "su", "ntk-by-parts"] {
        let e = with(
            "rope_scaling",
            serde_json::json!({"rope_type": t, "factor": 2.0}),
        )
        .unwrap_err();
        assert!(
            matches!(&e, ArchError::UnsupportedRopeScaling { rope_type, .. } if rope_type == t),
            "{e}"
        );
    }
    assert!(
        with(
            "rope_scaling",
            serde_json::json!({"type": "yarn", "factor": 4.0})
        )
        .is_err(),
        "yarn needs its context"
    );
    assert!(matches!(
        with("head_dim", Json::from(1u64 << 40)),
        Err(ArchError::InvalidConfig { .. })
    ));
    let big = with("max_position_embeddings", Json::from(1u64 << 33)).unwrap();
    assert!(
        big.to_gguf_metadata(&GgufOptions::default()).is_err(),
        "over uint32"
    );
}

#[test]
fn rope_scaling_metadata() {
    let mut j: Json = serde_json::from_str(&read("arch/config-llama-t4.json")).unwrap();
    j["rope_scaling"] = serde_json::json!({"type": "linear", "factor": 2.0});
    let m = ModelConfig::from_hf_json(&j)
        .unwrap()
        .to_gguf_metadata(&GgufOptions::default())
        .unwrap();
    assert_eq!(m.get_str("llama.rope.scaling.type"), Some("linear"));
    assert_eq!(m.get("llama.rope.scaling.factor"), Some(&Value::F32(2.0)));
    let keys: Vec<&str> = m.iter().map(|(k, _)| k).collect();
    let at = |k: &str| keys.iter().position(|x| *x == k).unwrap();
    assert!(at("llama.attention.head_count_kv") < at("llama.rope.scaling.type"));
    assert!(at("llama.rope.scaling.factor") < at("llama.rope.freq_base"));

    j["rope_scaling"] = serde_json::json!({
        "rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 32768,
        "beta_fast": 32.0, "beta_slow": 1.0, "attn_factor": 0.5
    });
    let cfg = ModelConfig::from_hf_json(&j).unwrap();
    let m = cfg.to_gguf_metadata(&GgufOptions::default()).unwrap();
    let got: Vec<(&str, String)> = m
        .iter()
        .filter(|(k, _)| k.contains("scaling"))
        .map(|(k, v)| (k, v.to_string()))
        .collect();
    let want = [
        ("llama.rope.scaling.type", "\"yarn\""),
        ("llama.rope.scaling.factor", "4"),
        ("llama.rope.scaling.original_context_length", "32768"),
        ("llama.rope.scaling.yarn_attn_factor", "0.5"),
        ("llama.rope.scaling.yarn_beta_fast", "32"),
        ("llama.rope.scaling.yarn_beta_slow", "1"),
    ];
    assert_eq!(got, want.map(|(k, v)| (k, v.to_owned())));
    // And back from the metadata.
    let back = ModelConfig::from_gguf_metadata(&m, ["output.weight"]).unwrap();
    assert_eq!(back.rope_scaling, cfg.rope_scaling);
    assert_eq!(back.to_hf_config()["rope_parameters"]["rope_type"], "yarn");
}

#[test]
fn rope_freqs_equal_converts() {
    let cfg = config("arch/config-llama3-rope.json");
    let ours = cfg.rope_freqs().unwrap();
    let bytes = std::fs::read(testdata("arch/expected/llama3-rope.rope_freqs.f32")).unwrap();
    let theirs: Vec<f32> = bytes
        .chunks(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    assert_eq!(ours.len(), 8);
    for (i, (a, b)) in ours.iter().zip(&theirs).enumerate() {
        let ulps = a.to_bits().abs_diff(b.to_bits());
        assert!(ulps <= 2, "factor {i}: ours {a} convert's {b}");
    }
    // Bit-exact on this platform for the fixture.
    assert_eq!(ours, theirs);
    assert_eq!(
        config("tiny-llama/safetensors-f32/config.json").rope_freqs(),
        None
    );

    // GGUF -> HF: the scaling comes back from the tensor.
    let gg = gguf("llama3-rope.vocab.gguf");
    let mut back = ModelConfig::from_gguf_metadata(gg.metadata(), ["output.weight"]).unwrap();
    assert_eq!(back.rope_scaling, None);
    assert!(back.infer_llama3_rope_scaling(&theirs));
    assert_eq!(back.rope_scaling, cfg.rope_scaling);
    assert!(!back.infer_llama3_rope_scaling(&[1.0, 2.0, 3.0]));
    assert_eq!(back.rope_scaling, cfg.rope_scaling, "unchanged on failure");
}

#[test]
fn size_labels_as_gguf_py() {
    for (n, want) in [
        (123_712, "124K"),
        (24_896, "25K"),
        (300, "0.30K"),
        (1_100_048_384, "1.1B"),
        (6_738_415_616, "6.7B"),
        (70_553_706_496, "71B"),
        (494_032_768, "494M"),
        (8_030_261_248, "8.0B"),
        (2_500_000, "2.5M"),
        (1_500_000_000_000, "1.5T"),
        (999, "1.0K"),
        (950, "1.0K"),
        (1_000_000, "1000K"),
        (999_500, "1000K"),
        (1_049_999_999, "1.0B"),
        (2_450_000, "2.4M"),
        (9_950_000, "10M"),
    ] {
        assert_eq!(size_label(n), want, "{n}");
    }
}

// ---------------------------------------------------------------- whole metadata vs convert

#[test]
fn llama3_metadata_equals_converts() {
    // tiny-llama (transformers 5 config) with the Llama-3 style tokenizer.
    let gg = gguf("llama3.f32.gguf");
    let params: usize = gg
        .tensors()
        .iter()
        .map(|t| t.shape.elem_count().unwrap())
        .sum();
    let label = size_label(params as u64);
    let ours = our_metadata(
        "tiny-llama/safetensors-f32/config.json",
        "arch/tok-llama3",
        None,
        &opts(Some(&label)),
    );
    assert_same_metadata(&ours, gg.metadata(), "llama3.f32.gguf");
}

#[test]
fn qwen2_metadata_equals_converts() {
    let gg = gguf("qwen2.f32.gguf");
    let params: usize = gg
        .tensors()
        .iter()
        .map(|t| t.shape.elem_count().unwrap())
        .sum();
    let ours = our_metadata(
        "arch/qwen2/config.json",
        "arch/tok-qwen2",
        None,
        &opts(Some(&size_label(params as u64))),
    );
    assert_same_metadata(&ours, gg.metadata(), "qwen2.f32.gguf");
}

#[test]
fn llama2_tokenizer_json_metadata_equals_converts() {
    // transformers-4 config + Llama-2 style tokenizer.json (LlamaHfVocab path).
    let ours = our_metadata_with(
        "arch/config-llama-t4.json",
        json_only("arch/tok-llama2"),
        None,
        &opts(None),
    );
    assert_same_metadata(
        &ours,
        gguf("llama2.vocab.gguf").metadata(),
        "llama2.vocab.gguf",
    );
}

#[test]
fn llama2_sentencepiece_bpe_metadata_equals_converts() {
    // The same directory with its tokenizer.model: SentencePiece scores, and
    // tokenizer_config.json's added_tokens_decoder overriding types / scores.
    let ours = our_metadata(
        "arch/config-llama-t4.json",
        "arch/tok-llama2",
        None,
        &opts(None),
    );
    assert_same_metadata(
        &ours,
        gguf("llama2-spm.vocab.gguf").metadata(),
        "llama2-spm.vocab.gguf",
    );
}

#[test]
fn chat_template_files_and_eot_promotion_equal_converts() {
    let ours = our_metadata(
        "tiny-llama/safetensors-f32/config.json",
        "arch/tok-llama3-jinja",
        None,
        &opts(None),
    );
    assert_same_metadata(
        &ours,
        gguf("llama3-jinja.vocab.gguf").metadata(),
        "llama3-jinja.vocab.gguf",
    );
    assert_eq!(
        ours.get("tokenizer.ggml.eot_token_id"),
        Some(&Value::U32(203))
    );
}

#[test]
fn mistral_metadata_equals_converts() {
    let ours = our_metadata_with(
        "arch/config-mistral.json",
        json_only("arch/tok-llama2"),
        None,
        &opts(None),
    );
    assert_eq!(ours.get_str("general.architecture"), Some("llama"));
    assert_same_metadata(
        &ours,
        gguf("mistral.vocab.gguf").metadata(),
        "mistral.vocab.gguf",
    );
}

#[test]
fn llama3_rope_metadata_equals_converts() {
    let ours = our_metadata(
        "arch/config-llama3-rope.json",
        "arch/tok-llama3",
        None,
        &opts(None),
    );
    assert_same_metadata(
        &ours,
        gguf("llama3-rope.vocab.gguf").metadata(),
        "llama3-rope.vocab.gguf",
    );
}

#[test]
fn sentencepiece_model_metadata_equals_converts() {
    // tokenizer.model present: the SentencePiece path, read from the protobuf.
    let ours = our_metadata(
        "arch/config-llama-t4.json",
        "arch/tok-unigram",
        None,
        &opts(None),
    );
    assert_same_metadata(
        &ours,
        gguf("unigram.vocab.gguf").metadata(),
        "unigram.vocab.gguf",
    );
}

#[test]
fn unigram_tokenizer_json_alone_gives_the_sentencepiece_result() {
    // Without tokenizer.model the converter cannot convert this tokenizer;
    // we write what its SentencePiece path writes for the equivalent .model.
    let cfg = config("arch/config-llama-t4.json");
    let mut files = TokenizerFiles::read_dir(testdata("arch/tok-unigram")).unwrap();
    files.tokenizer_model = None;
    let mut ours = cfg.to_gguf_metadata(&opts(None)).unwrap();
    for (k, v) in tokenizer_metadata(&files, &TokenizerOptions::from_config(&cfg))
        .unwrap()
        .iter()
    {
        ours.insert(k, v.clone());
    }
    assert_same_metadata(
        &ours,
        gguf("unigram.vocab.gguf").metadata(),
        "unigram from tokenizer.json",
    );
}

// ---------------------------------------------------------------- tokenizer details

fn tok(dir: &str, opts: &TokenizerOptions) -> Result<Metadata, ArchError> {
    tokenizer_metadata(&TokenizerFiles::read_dir(testdata(dir)).unwrap(), opts)
}

fn topts(arch: Arch, vocab_size: Option<u64>) -> TokenizerOptions {
    TokenizerOptions {
        arch,
        vocab_size,
        config_token_ids: Default::default(),
        pre: None,
    }
}

#[test]
fn no_tokenizer_is_model_none() {
    let m = tokenizer_metadata(&TokenizerFiles::default(), &topts(Arch::Llama, Some(256))).unwrap();
    assert_eq!(
        m.iter()
            .map(|(k, v)| (k.to_owned(), v.clone()))
            .collect::<Vec<_>>(),
        [("tokenizer.ggml.model".to_owned(), Value::from("none"))]
    );
    let empty = TokenizerFiles::read_dir(testdata("tiny-llama/safetensors-f32")).unwrap();
    assert!(!empty.has_vocab());
    // A whole GGUF header without a tokenizer.
    let cfg = config("tiny-llama/safetensors-f32/config.json");
    let m = tokenizer_metadata(&empty, &TokenizerOptions::from_config(&cfg)).unwrap();
    assert_eq!(m.len(), 1);
}

#[test]
fn pre_tokenizer_heuristic_and_override() {
    let o = topts(Arch::Llama, None);
    assert_eq!(
        tok("arch/tok-llama3", &o)
            .unwrap()
            .get_str("tokenizer.ggml.pre"),
        Some("llama-bpe")
    );
    assert_eq!(
        tok("arch/tok-qwen2", &o)
            .unwrap()
            .get_str("tokenizer.ggml.pre"),
        Some("qwen2")
    );
    let mut o2 = o.clone();
    o2.pre = Some("smaug-bpe".into());
    assert_eq!(
        tok("arch/tok-llama3", &o2)
            .unwrap()
            .get_str("tokenizer.ggml.pre"),
        Some("smaug-bpe")
    );

    // An unknown pre-tokenizer: an error that says what to do.
    let mut files = TokenizerFiles::read_dir(testdata("arch/tok-llama3")).unwrap();
    let mut j: Json = serde_json::from_str(files.tokenizer_json.as_deref().unwrap()).unwrap();
    j["pre_tokenizer"]["pretokenizers"][0]["pattern"]["Regex"] = Json::from(r"\s+");
    files.tokenizer_json = Some(j.to_string());
    let e = tokenizer_metadata(&files, &o).unwrap_err().to_string();
    assert!(e.contains("TokenizerOptions::pre"), "{e}");
    assert_eq!(
        tokenizer_metadata(&files, &o2)
            .unwrap()
            .get_str("tokenizer.ggml.pre"),
        Some("smaug-bpe")
    );

    // GPT-2's bare ByteLevel pre-tokenizer.
    j["pre_tokenizer"] = serde_json::json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true});
    files.tokenizer_json = Some(j.to_string());
    assert_eq!(
        tokenizer_metadata(&files, &o)
            .unwrap()
            .get_str("tokenizer.ggml.pre"),
        Some("gpt-2")
    );
}

#[test]
fn bpe_token_types_and_padding() {
    let m = tok("arch/tok-llama3", &topts(Arch::Llama, Some(256))).unwrap();
    let Some(Value::Array(weightkit_core::Array::String(tokens))) = m.get("tokenizer.ggml.tokens")
    else {
        panic!()
    };
    let Some(Value::Array(weightkit_core::Array::I32(types))) = m.get("tokenizer.ggml.token_type")
    else {
        panic!()
    };
    assert_eq!(tokens.len(), 256);
    assert_eq!((tokens[200].as_str(), types[200]), ("<|begin_of_text|>", 3));
    assert_eq!(
        (tokens[204].as_str(), types[204]),
        ("<|reserved_0|>", 3),
        "looks special"
    );
    assert_eq!(
        (tokens[205].as_str(), types[205]),
        ("weightkit", 4),
        "user-defined"
    );
    assert_eq!((tokens[206].as_str(), types[206]), ("[PAD206]", 5));
    assert_eq!(m.get("tokenizer.ggml.bos_token_id"), Some(&Value::U32(200)));
    // vocab_size below the largest id is an error, as the converter's assert.
    assert!(tok("arch/tok-llama3", &topts(Arch::Llama, Some(100))).is_err());
    // Without a config, the vocabulary is the tokenizer's own.
    let m = tok("arch/tok-llama3", &topts(Arch::Llama, None)).unwrap();
    assert_eq!(
        m.get("tokenizer.ggml.tokens")
            .map(|v| v.to_string().matches("\", \"").count() + 1),
        Some(206)
    );
}

#[test]
fn special_token_sources() {
    // config.json's ids fill what tokenizer_config.json leaves out (Qwen2: bos null).
    let cfg = config("arch/qwen2/config.json");
    let m = tok("arch/tok-qwen2", &TokenizerOptions::from_config(&cfg)).unwrap();
    assert_eq!(m.get("tokenizer.ggml.bos_token_id"), Some(&Value::U32(180)));
    let m = tok("arch/tok-qwen2", &topts(Arch::Qwen2, Some(192))).unwrap();
    assert_eq!(m.get("tokenizer.ggml.bos_token_id"), None);
    assert_eq!(
        m.get("tokenizer.ggml.padding_token_id"),
        Some(&Value::U32(180))
    );
    // A negative id is an error.
    let mut o = TokenizerOptions::from_config(&cfg);
    o.config_token_ids.insert("bos".into(), Json::from(-1));
    assert!(tok("arch/tok-qwen2", &o).is_err());
    // eos as a list (Llama 3.x) is ignored, as gguf-py ignores non-integers.
    let r = config("arch/config-llama3-rope.json");
    let m = tok("arch/tok-llama3", &TokenizerOptions::from_config(&r)).unwrap();
    assert_eq!(m.get("tokenizer.ggml.eos_token_id"), Some(&Value::U32(203)));
}

#[test]
fn llama2_style_special_tokens_follow_transformers() {
    // Named specials (bos/eos/unk/pad + additional_special_tokens) are
    // control; an added token marked special but not named is user-defined,
    // as transformers' all_special_ids make it.
    let o = topts(Arch::Llama, Some(322));
    let types = |m: &Metadata| match m.get("tokenizer.ggml.token_type") {
        Some(Value::Array(weightkit_core::Array::I32(t))) => t.clone(),
        _ => panic!(),
    };
    let m = tokenizer_metadata(&json_only("arch/tok-llama2"), &o).unwrap();
    assert_eq!(&types(&m)[..4], [3, 3, 3, 6]);
    assert_eq!(&types(&m)[320..], [3, 4]);
    let mut files = json_only("arch/tok-llama2");
    let mut tc: Json =
        serde_json::from_str(files.tokenizer_config_json.as_deref().unwrap()).unwrap();
    tc.as_object_mut()
        .unwrap()
        .remove("additional_special_tokens");
    files.tokenizer_config_json = Some(tc.to_string());
    assert_eq!(
        &types(&tokenizer_metadata(&files, &o).unwrap())[320..],
        [4, 4]
    );
    // Llama tokenizer classes default bos/eos/unk when the config omits them.
    for k in ["bos_token", "eos_token", "unk_token", "pad_token"] {
        tc.as_object_mut().unwrap().remove(k);
    }
    files.tokenizer_config_json = Some(tc.to_string());
    assert_eq!(
        &types(&tokenizer_metadata(&files, &o).unwrap())[..3],
        [3, 3, 3]
    );
    tc["tokenizer_class"] = Json::from("PreTrainedTokenizerFast");
    files.tokenizer_config_json = Some(tc.to_string());
    assert_eq!(
        &types(&tokenizer_metadata(&files, &o).unwrap())[..3],
        [1, 1, 1]
    );
}

#[test]
fn converter_quirks_for_codellama_and_granite() {
    let m = tok("arch/tok-llama3", &topts(Arch::Llama, Some(32016))).unwrap();
    assert_eq!(
        m.get("tokenizer.ggml.eot_token_id"),
        Some(&Value::U32(32010))
    );
    let m = tok("arch/tok-llama3", &topts(Arch::Llama, Some(49152))).unwrap();
    assert_eq!(
        m.get("tokenizer.ggml.add_bos_token"),
        Some(&Value::Bool(false))
    );
    let m = tok("arch/tok-llama3", &topts(Arch::Qwen2, Some(49152))).unwrap();
    assert_eq!(
        m.get("tokenizer.ggml.add_bos_token"),
        Some(&Value::Bool(true)),
        "llama only"
    );
}

#[test]
fn hostile_tokenizer_files_are_errors() {
    let o = topts(Arch::Llama, None);
    let with = |f: &dyn Fn(&mut TokenizerFiles)| {
        let mut files = TokenizerFiles::read_dir(testdata("arch/tok-llama3")).unwrap();
        f(&mut files);
        tokenizer_metadata(&files, &o)
    };
    assert!(matches!(
        with(&|f| f.tokenizer_json = Some("[".into())),
        Err(ArchError::Json {
            file: "tokenizer.json",
            ..
        })
    ));
    assert!(with(&|f| f.tokenizer_json = Some("[]".into())).is_err());
    assert!(
        with(&|f| f.tokenizer_json = Some(r#"{"model": {"vocab": {"a": -1}}}"#.into())).is_err()
    );
    assert!(
        with(
            &|f| f.tokenizer_json = Some(r#"{"model": {"vocab": {"a": 0}, "merges": [1]}}"#.into())
        )
        .is_err()
    );
    assert!(with(&|f| f.tokenizer_config_json = Some("3".into())).is_err());
    // Every truncation of a tokenizer.model: an error or a result, never a panic.
    let model = std::fs::read(testdata("arch/tok-unigram/tokenizer.model")).unwrap();
    let o = topts(Arch::Llama, Some(322));
    for n in (0..model.len())
        .step_by(7)
        .chain([1, 2, 3, model.len() - 1])
    {
        let files = TokenizerFiles {
            tokenizer_model: Some(model[..n].to_vec()),
            ..Default::default()
        };
        let _ = tokenizer_metadata(&files, &o);
    }
    let files = TokenizerFiles {
        tokenizer_model: Some(vec![0x0a, 0xff]),
        ..Default::default()
    };
    assert!(matches!(
        tokenizer_metadata(&files, &o),
        Err(ArchError::SentencePiece { .. })
    ));
    // A config cannot make us pad the vocabulary without bound.
    for dir in ["arch/tok-llama3", "arch/tok-unigram"] {
        let e = tok(dir, &topts(Arch::Llama, Some(1 << 40))).unwrap_err();
        assert!(e.to_string().contains("vocab_size"), "{e}");
    }
}

// ---------------------------------------------------------------- GGUF -> Hugging Face

#[test]
fn gguf_metadata_back_to_config() {
    // qwen2: the config.json transformers wrote, less what GGUF does not keep.
    let gg = gguf("qwen2.f32.gguf");
    let names: Vec<&str> = gg.tensors().iter().map(|t| t.name.as_str()).collect();
    let cfg = ModelConfig::from_gguf_metadata(gg.metadata(), names.iter().copied()).unwrap();
    assert!(cfg.tie_word_embeddings);
    let mut ours = cfg.to_hf_config();
    let mut theirs: Json = serde_json::from_str(&read("arch/qwen2/config.json")).unwrap();
    for j in [&mut ours, &mut theirs] {
        let o = j.as_object_mut().unwrap();
        o.remove("transformers_version");
        o.remove("pad_token_id"); // the GGUF has the tokenizer's pad id; config.json had none
    }
    assert_eq!(ours, theirs);
    // ... and to the same GGUF metadata again.
    let again = cfg
        .to_gguf_metadata(&opts(gg.metadata().get_str("general.size_label")))
        .unwrap();
    for (k, v) in again.iter() {
        assert_eq!(gg.metadata().get(k), Some(v), "{k}");
    }

    // llama: the tiny-llama config.json, less the token ids (the GGUF has the
    // Llama-3 tokenizer's) and what transformers alone writes.
    let gg = gguf("llama3.f32.gguf");
    let names: Vec<&str> = gg.tensors().iter().map(|t| t.name.as_str()).collect();
    let cfg = ModelConfig::from_gguf_metadata(gg.metadata(), names.iter().copied()).unwrap();
    assert!(!cfg.tie_word_embeddings);
    let mut ours = cfg.to_hf_config();
    let mut theirs: Json =
        serde_json::from_str(&read("tiny-llama/safetensors-f32/config.json")).unwrap();
    for j in [&mut ours, &mut theirs] {
        let o = j.as_object_mut().unwrap();
        for k in [
            "transformers_version",
            "bos_token_id",
            "eos_token_id",
            "pad_token_id",
        ] {
            o.remove(k);
        }
    }
    assert_eq!(ours, theirs);
    assert_eq!(cfg.to_hf_config()["bos_token_id"], 200);

    // Missing or mistyped keys are errors naming the key.
    let mut m = gg.metadata().clone();
    m.remove("llama.block_count");
    let e = ModelConfig::from_gguf_metadata(&m, []).unwrap_err();
    assert!(e.to_string().contains("llama.block_count"), "{e}");
    m.insert("llama.block_count", "two");
    assert!(matches!(
        ModelConfig::from_gguf_metadata(&m, []),
        Err(ArchError::InvalidMetadata { .. })
    ));
    m.insert("llama.block_count", 2u32);
    m.insert("llama.attention.key_length", u64::MAX);
    assert!(matches!(
        ModelConfig::from_gguf_metadata(&m, []),
        Err(ArchError::InvalidMetadata { .. })
    ));
    m.insert("general.architecture", "gemma");
    assert!(matches!(
        ModelConfig::from_gguf_metadata(&m, []),
        Err(ArchError::UnsupportedArchitecture { .. })
    ));
}
