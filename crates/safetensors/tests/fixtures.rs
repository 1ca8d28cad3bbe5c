//! The transformers-written fixtures read back exactly, and re-created byte
//! for byte.

use weightkit_core::convert::f32_to_bf16_bits;
use weightkit_core::{DType, Metadata, TensorInfo, TensorSink, TensorSource};
use weightkit_safetensors::{
    Checkpoint, SafeTensors, SafetensorsFile, ShardedSafetensors, ShardedWriter, open_checkpoint,
};

use crate::{temp_dir, testdata};

const F32: &str = "tiny-llama/safetensors-f32/model.safetensors";
const SHARDED: &str = "tiny-llama/safetensors-bf16-sharded";

/// The tiny Llama's parameters in `model.named_parameters()` order, which is
/// the order `save_pretrained` shards in.
fn module_order() -> Vec<String> {
    let mut v = vec!["model.embed_tokens.weight".to_string()];
    for l in 0..2 {
        for m in [
            "self_attn.q_proj",
            "self_attn.k_proj",
            "self_attn.v_proj",
            "self_attn.o_proj",
            "mlp.gate_proj",
            "mlp.up_proj",
            "mlp.down_proj",
            "input_layernorm",
            "post_attention_layernorm",
        ] {
            v.push(format!("model.layers.{l}.{m}.weight"));
        }
    }
    v.push("model.norm.weight".into());
    v.push("lm_head.weight".into());
    v
}

#[test]
fn f32_file_matches_the_safetensors_crate() {
    let path = testdata(F32);
    let ours = SafetensorsFile::open(&path).unwrap();
    assert!(ours.is_mmap());
    let bytes = std::fs::read(&path).unwrap();
    let theirs = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    assert_eq!(ours.tensors().len(), 21);
    assert_eq!(theirs.len(), 21);
    for info in ours.tensors() {
        let t = theirs.tensor(&info.name).unwrap();
        let v = ours.tensor(&info.name).unwrap();
        assert_eq!(info.dtype, DType::F32);
        assert_eq!(v.shape().dims(), t.shape());
        assert_eq!(v.data(), t.data(), "{}", info.name);
        // Zero-copy: the view points into the map.
        let base = ours.bytes().as_ptr() as usize;
        let p = v.data().as_ptr() as usize;
        assert!(p >= base && p + v.data().len() <= base + ours.bytes().len());
    }
    assert_eq!(ours.metadata().get_str("format"), Some("pt"));
    let q = ours
        .tensor("model.layers.0.self_attn.q_proj.weight")
        .unwrap();
    assert_eq!(q.shape().dims(), &[64, 64]);
    assert!(q.as_f32_slice().is_some(), "f32 data is aligned in the map");
    // The owned, shared tensor borrows the same bytes.
    let shared = ours.tensor_shared("lm_head.weight").unwrap();
    assert!(shared.is_shared());
    assert_eq!(shared.data(), ours.tensor("lm_head.weight").unwrap().data());
}

#[test]
fn sharded_bf16_is_the_f32_model_rounded_to_nearest_even() {
    let f32_file = SafetensorsFile::open(testdata(F32)).unwrap();
    let sharded = ShardedSafetensors::open(testdata(SHARDED)).unwrap();
    assert_eq!(sharded.shards().len(), 4);
    assert_eq!(sharded.tensors().len(), 21);
    assert_eq!(sharded.declared_total_size(), Some(247_424));
    let mut bytes = 0usize;
    let mut values = 0usize;
    for info in sharded.tensors() {
        assert_eq!(info.dtype, DType::BF16);
        let b = sharded.tensor(&info.name).unwrap();
        let f = f32_file.tensor(&info.name).unwrap();
        assert_eq!(b.shape(), f.shape());
        bytes += b.data().len();
        let wide = f.to_f32_vec().unwrap();
        for (i, (x, c)) in wide.iter().zip(b.data().chunks_exact(2)).enumerate() {
            let got = u16::from_le_bytes([c[0], c[1]]);
            // Two independent implementations of round-to-nearest-even.
            assert_eq!(
                got,
                half::bf16::from_f32(*x).to_bits(),
                "{}[{i}]",
                info.name
            );
            assert_eq!(got, f32_to_bf16_bits(*x), "{}[{i}]", info.name);
            values += 1;
        }
    }
    assert_eq!(values, 123_712);
    assert_eq!(bytes as u64, sharded.declared_total_size().unwrap());
    // The same through the generic source.
    let ck = open_checkpoint(testdata(SHARDED)).unwrap();
    assert!(matches!(ck, Checkpoint::Sharded(_)));
    let i = ck.position("lm_head.weight").unwrap();
    assert_eq!(ck.load(i).unwrap().view().shape().dims(), &[256, 64]);
}

#[test]
fn sharded_writer_reproduces_transformers_output_byte_for_byte() {
    // Cast the f32 model to bf16 with weightkit and save it the way
    // `save_pretrained(max_shard_size=82475)` did: same shard assignment,
    // same layout inside each shard, same index. Every file must be
    // identical to the fixture.
    let src = SafetensorsFile::open(testdata(F32)).unwrap();
    let order = module_order();
    let infos: Vec<TensorInfo> = order
        .iter()
        .map(|n| {
            let v = src.tensor(n).unwrap();
            TensorInfo::new(n.clone(), DType::BF16, v.shape().clone())
        })
        .collect();
    let meta: Metadata = [("format", "pt")].into_iter().collect();
    let out = temp_dir("reproduce");
    // Each shard's layout must follow safetensors' sort, so the sharded
    // writer sorts within each shard; the caller streams in the declared
    // (module) order.
    let mut w = ShardedWriter::create(&out, "model", infos, &meta, 82_475).unwrap();
    assert_eq!(w.shard_count(), 4);
    for n in &order {
        let bf = src.tensor_shared(n).unwrap().to_dtype(DType::BF16).unwrap();
        w.write_tensor(n, bf.data()).unwrap();
    }
    let written = w.finish().unwrap();
    assert_eq!(written.len(), 5);
    for name in [
        "model-00001-of-00004.safetensors",
        "model-00002-of-00004.safetensors",
        "model-00003-of-00004.safetensors",
        "model-00004-of-00004.safetensors",
        "model.safetensors.index.json",
    ] {
        let ours = std::fs::read(out.join(name)).unwrap();
        let theirs = std::fs::read(testdata(SHARDED).join(name)).unwrap();
        assert!(
            ours == theirs,
            "{name} differs from the transformers-written file"
        );
    }
    std::fs::remove_dir_all(&out).unwrap();
}

#[test]
fn parse_over_a_borrowed_buffer() {
    let bytes = std::fs::read(testdata(F32)).unwrap();
    let st = SafeTensors::parse(&bytes).unwrap();
    assert_eq!(st.tensors().len(), 21);
    assert_eq!(
        st.tensor("model.norm.weight").unwrap().shape().dims(),
        &[64]
    );
    assert!(st.tensor("nope").is_err());
}
