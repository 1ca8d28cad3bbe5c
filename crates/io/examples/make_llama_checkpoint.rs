//! Writes a Llama-shaped Hugging Face checkpoint of random f32 weights
//! (config.json + safetensors shards) for memory and speed measurements.
//!
//! Usage: `cargo run --release -p weightkit-io --example make_llama_checkpoint -- OUT_DIR [LAYERS]`
//!
//! Shape: hidden 2048, intermediate 5632, 16 heads / 4 KV heads (head dim
//! 128), vocab 32000; 10 layers is 2.2 GiB of f32, the largest tensor (the
//! embedding) 250 MiB.

use std::path::PathBuf;

use weightkit_core::{DType, Metadata, TensorInfo, TensorSink};
use weightkit_safetensors::ShardedWriter;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let out = PathBuf::from(
        args.next()
            .ok_or("usage: make_llama_checkpoint OUT_DIR [LAYERS]")?,
    );
    let layers: usize = args.next().map(|s| s.parse()).transpose()?.unwrap_or(10);
    let (h, i, v, kv) = (2048usize, 5632usize, 32000usize, 512usize);
    std::fs::create_dir_all(&out)?;
    let mut infos = vec![TensorInfo::new(
        "model.embed_tokens.weight",
        DType::F32,
        [v, h],
    )];
    for l in 0..layers {
        let p = format!("model.layers.{l}");
        for (n, s) in [
            ("self_attn.q_proj.weight", [h, h]),
            ("self_attn.k_proj.weight", [kv, h]),
            ("self_attn.v_proj.weight", [kv, h]),
            ("self_attn.o_proj.weight", [h, h]),
            ("mlp.gate_proj.weight", [i, h]),
            ("mlp.up_proj.weight", [i, h]),
            ("mlp.down_proj.weight", [h, i]),
        ] {
            infos.push(TensorInfo::new(format!("{p}.{n}"), DType::F32, s));
        }
        infos.push(TensorInfo::new(
            format!("{p}.input_layernorm.weight"),
            DType::F32,
            [h],
        ));
        infos.push(TensorInfo::new(
            format!("{p}.post_attention_layernorm.weight"),
            DType::F32,
            [h],
        ));
    }
    infos.push(TensorInfo::new("model.norm.weight", DType::F32, [h]));
    infos.push(TensorInfo::new("lm_head.weight", DType::F32, [v, h]));
    let meta: Metadata = [("format", "pt")].into_iter().collect();
    let mut w = ShardedWriter::create(&out, "model", infos.clone(), &meta, 1 << 30)?;
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    for t in &infos {
        let n = t.elem_count()?;
        let norm = t.shape.rank() == 1;
        let mut bytes = Vec::with_capacity(n * 4);
        for _ in 0..n {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let u = (state >> 40) as f32 / (1u64 << 24) as f32 - 0.5;
            let x = if norm { 1.0 + 0.1 * u } else { 0.04 * u };
            bytes.extend_from_slice(&x.to_le_bytes());
        }
        w.write_tensor(&t.name, &bytes)?;
    }
    w.finish()?;
    let config = serde_json::json!({
        "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": h,
        "intermediate_size": i, "num_hidden_layers": layers, "num_attention_heads": 16,
        "num_key_value_heads": 4, "head_dim": 128, "vocab_size": v, "rms_norm_eps": 1e-5,
        "max_position_embeddings": 4096, "rope_theta": 10000.0, "tie_word_embeddings": false,
        "torch_dtype": "float32", "hidden_act": "silu", "bos_token_id": 1, "eos_token_id": 2
    });
    std::fs::write(out.join("config.json"), serde_json::to_vec_pretty(&config)?)?;
    println!("wrote {} ({} layers)", out.display(), layers);
    Ok(())
}
