//! A generated Llama-7B-like GGUF file for the GGUF benchmarks.
//!
//! The benchmarks only move bytes, so the quantized blocks are random bytes;
//! but each block's f16 scale fields hold small, finite values, so the file
//! also dequantizes to weight-like numbers if anyone points a tool at it.
//! The header is what makes GGUF parsing cost something: a 32000-entry
//! `tokenizer.ggml.tokens` string array and its score and token-type arrays,
//! as in a llama.cpp conversion of Llama-2-7B.

use std::io;
use std::path::{Path, PathBuf};

use weightkit_core::{DType, Metadata, Packing, TensorInfo, TensorSink, Value};
use weightkit_gguf::{GgufFile, GgufWriter};

use crate::{CHUNK, Rng, bench_dir};

/// Llama-7B dimensions: hidden size, MLP size, vocabulary.
const HIDDEN: usize = 4096;
const INTERMEDIATE: usize = 11008;
const VOCAB: usize = 32000;

/// A Llama-7B-like GGUF model: the tensor list (storage order) and the
/// metadata, as llama.cpp's converter and `llama-quantize` (Q4_K_M) lay them
/// out: `token_embd.weight` (Q4_K), then whole decoder layers until the
/// tensor data reaches `min_bytes` (F32 norms; Q4_K attention and MLP
/// projections except Q6_K `attn_v` and `ffn_down`), then the F32
/// `output_norm.weight` and a Q8_0 `output.weight`.
pub fn llama_7b_gguf(min_bytes: u64) -> (Vec<TensorInfo>, Metadata) {
    let mut infos = vec![TensorInfo::new(
        "token_embd.weight",
        DType::Q4_K,
        [VOCAB, HIDDEN],
    )];
    let layer: [(&str, DType, &[usize]); 9] = [
        ("attn_norm.weight", DType::F32, &[HIDDEN]),
        ("attn_q.weight", DType::Q4_K, &[HIDDEN, HIDDEN]),
        ("attn_k.weight", DType::Q4_K, &[HIDDEN, HIDDEN]),
        ("attn_v.weight", DType::Q6_K, &[HIDDEN, HIDDEN]),
        ("attn_output.weight", DType::Q4_K, &[HIDDEN, HIDDEN]),
        ("ffn_norm.weight", DType::F32, &[HIDDEN]),
        ("ffn_gate.weight", DType::Q4_K, &[INTERMEDIATE, HIDDEN]),
        ("ffn_up.weight", DType::Q4_K, &[INTERMEDIATE, HIDDEN]),
        ("ffn_down.weight", DType::Q6_K, &[HIDDEN, INTERMEDIATE]),
    ];
    let mut layers = 0u32;
    while crate::data_len(&infos) < min_bytes {
        for (name, dtype, dims) in layer {
            infos.push(TensorInfo::new(format!("blk.{layers}.{name}"), dtype, dims));
        }
        layers += 1;
    }
    infos.push(TensorInfo::new("output_norm.weight", DType::F32, [HIDDEN]));
    infos.push(TensorInfo::new(
        "output.weight",
        DType::Q8_0,
        [VOCAB, HIDDEN],
    ));
    (infos, llama_metadata(layers))
}

/// llama.cpp's metadata for a Llama-2-7B Q4_K_M file with `layers` blocks,
/// including a SentencePiece-like vocabulary: the three special tokens, the
/// 256 byte tokens, then deterministic pseudo-random word pieces.
fn llama_metadata(layers: u32) -> Metadata {
    let mut rng = Rng::new(0x70c3);
    let mut tokens: Vec<String> = Vec::with_capacity(VOCAB);
    let mut types: Vec<i32> = Vec::with_capacity(VOCAB);
    for (t, ty) in [("<unk>", 2), ("<s>", 3), ("</s>", 3)] {
        tokens.push(t.to_owned());
        types.push(ty);
    }
    for b in 0..=255u8 {
        tokens.push(format!("<0x{b:02X}>"));
        types.push(6);
    }
    while tokens.len() < VOCAB {
        let r = rng.next_u64();
        let len = 1 + (r % 10) as usize;
        let mut piece = String::with_capacity(len + 3);
        if r & (1 << 8) != 0 {
            piece.push('\u{2581}'); // SentencePiece's word-start marker
        }
        piece.extend((0..len).map(|i| char::from(b'a' + ((r >> (12 + 5 * i)) % 26) as u8)));
        tokens.push(piece);
        types.push(1);
    }
    #[allow(clippy::cast_precision_loss)]
    let scores: Vec<f32> = (0..VOCAB)
        .map(|i| if i < 259 { 0.0 } else { -((i - 259) as f32) })
        .collect();
    let mut m = Metadata::new();
    m.insert("general.architecture", "llama");
    m.insert("general.name", "weightkit bench llama-7b");
    m.insert("llama.context_length", 4096u32);
    m.insert("llama.embedding_length", HIDDEN as u32);
    m.insert("llama.block_count", layers);
    m.insert("llama.feed_forward_length", INTERMEDIATE as u32);
    m.insert("llama.rope.dimension_count", 128u32);
    m.insert("llama.attention.head_count", 32u32);
    m.insert("llama.attention.head_count_kv", 32u32);
    m.insert("llama.attention.layer_norm_rms_epsilon", 1e-5f32);
    m.insert("general.file_type", 15u32); // MOSTLY_Q4_K_M
    m.insert("tokenizer.ggml.model", "llama");
    m.insert("tokenizer.ggml.tokens", Value::from(tokens));
    m.insert("tokenizer.ggml.scores", scores);
    m.insert("tokenizer.ggml.token_type", types);
    m.insert("tokenizer.ggml.bos_token_id", 1u32);
    m.insert("tokenizer.ggml.eos_token_id", 2u32);
    m.insert("tokenizer.ggml.unknown_token_id", 0u32);
    m.insert("tokenizer.ggml.add_bos_token", true);
    m.insert("tokenizer.ggml.add_eos_token", false);
    m.insert("general.quantization_version", 2u32);
    m
}

/// Where each ggml block type keeps its f16 scale fields: byte offsets
/// within the block (Q4_K: `d` and `dmin` first; Q6_K: `d` last; Q8_0: `d`
/// first). Empty for other types.
fn scale_offsets(dtype: DType) -> &'static [usize] {
    match dtype {
        DType::Q4_K => &[0, 2],
        DType::Q6_K => &[208],
        DType::Q8_0 | DType::Q4_0 => &[0],
        _ => &[],
    }
}

/// Fills `out` (whole blocks of `dtype`, or whole F32 elements) with data
/// that looks like a quantized model: random quant bytes, each block's f16
/// scales in `[0.0005, 0.0025)`; F32 norms near 1.0.
pub fn fill_quantized(rng: &mut Rng, dtype: DType, out: &mut [u8]) {
    let block = match dtype.packing() {
        Packing::Block { bytes, .. } => bytes,
        _ => return crate::fill_weights(rng, DType::F32, out),
    };
    let mut words = out.chunks_exact_mut(8);
    for w in &mut words {
        w.copy_from_slice(&rng.next_u64().to_le_bytes());
    }
    let tail = words.into_remainder();
    let last = rng.next_u64().to_le_bytes();
    tail.copy_from_slice(&last[..tail.len()]);
    let offsets = scale_offsets(dtype);
    for b in out.chunks_exact_mut(block) {
        for &at in offsets {
            let d = half::f16::from_f32(0.0015 + rng.weight(0.001));
            b[at..at + 2].copy_from_slice(&d.to_le_bytes());
        }
    }
}

/// Writes `infos` and `metadata` to `path` with [`GgufWriter`], generating
/// each tensor's data with [`fill_quantized`] in pieces of about [`CHUNK`]
/// bytes (bounded memory). Library errors come back as [`io::Error`]s.
pub fn generate_gguf(
    path: &Path,
    infos: Vec<TensorInfo>,
    metadata: &Metadata,
) -> io::Result<PathBuf> {
    let mut rng = Rng::new(0x9909);
    let plan: Vec<(DType, usize)> = infos
        .iter()
        .map(|t| (t.dtype, t.byte_len().expect("valid layout")))
        .collect();
    let mut w = GgufWriter::create(path, metadata, infos).map_err(io::Error::other)?;
    let mut buf = vec![0u8; CHUNK];
    for (dtype, mut left) in plan {
        // Whole blocks (or elements) per piece, so scales land in place.
        let unit = match dtype.packing() {
            Packing::Block { bytes, .. } | Packing::Element { bytes } => bytes,
            Packing::Bits { .. } => 1,
        };
        let piece = CHUNK / unit * unit;
        while left > 0 {
            let n = left.min(piece);
            fill_quantized(&mut rng, dtype, &mut buf[..n]);
            w.write_data(&buf[..n]).map_err(io::Error::other)?;
            left -= n;
        }
    }
    w.finish().map_err(io::Error::other)
}

/// The length a GGUF file holding `infos` has when its data section starts
/// at `data_offset`: every tensor is padded to `alignment`, the last one too.
pub fn gguf_file_len(infos: &[TensorInfo], data_offset: usize, alignment: usize) -> u64 {
    let a = alignment as u64;
    infos
        .iter()
        .map(|t| (t.byte_len().expect("valid layout") as u64).div_ceil(a) * a)
        .sum::<u64>()
        + data_offset as u64
}

/// Returns the path of a GGUF file named `name` in [`bench_dir`] holding
/// [`llama_7b_gguf`]`(min_bytes)` (as written by [`generate_gguf`]),
/// generating it unless a valid file with the same tensors, metadata and
/// size is already there.
pub fn ensure_gguf(name: &str, min_bytes: u64) -> io::Result<PathBuf> {
    let (infos, metadata) = llama_7b_gguf(min_bytes);
    ensure_gguf_in(&bench_dir()?, name, infos, &metadata)
}

/// As [`ensure_gguf`], in `dir`, for any tensors and metadata.
pub fn ensure_gguf_in(
    dir: &Path,
    name: &str,
    infos: Vec<TensorInfo>,
    metadata: &Metadata,
) -> io::Result<PathBuf> {
    let path = dir.join(name);
    let reusable = match (std::fs::metadata(&path), GgufFile::open(&path)) {
        (Ok(m), Ok(f)) => {
            let h = f.header();
            m.len() == gguf_file_len(&infos, h.data_offset(), h.alignment())
                && f.tensors() == infos.as_slice()
                && f.metadata() == metadata
        }
        _ => false,
    };
    if !reusable {
        eprintln!(
            "generating {} ({:.2} GiB of tensor data) ...",
            path.display(),
            crate::data_len(&infos) as f64 / f64::from(1u32 << 30)
        );
        generate_gguf(&path, infos, metadata)?;
    }
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_reaches_its_size_in_whole_layers() {
        let gib = 1u64 << 30;
        let (infos, metadata) = llama_7b_gguf(gib);
        assert!(crate::data_len(&infos) >= gib);
        let Some(Value::U32(layers)) = metadata.get("llama.block_count") else {
            panic!("block_count");
        };
        assert_eq!(infos.len(), 3 + 9 * *layers as usize);
        // The read benchmark's checksum cross-check needs every tensor to be
        // a whole number of 8-byte words.
        for t in &infos {
            assert_eq!(t.byte_len().unwrap() % 8, 0, "{}", t.name);
        }
        let Some(Value::Array(tokens)) = metadata.get("tokenizer.ggml.tokens") else {
            panic!("tokens");
        };
        assert_eq!(tokens.len(), VOCAB);
    }

    #[test]
    fn blocks_get_sane_scales() {
        let mut rng = Rng::new(3);
        let mut q6 = vec![0u8; 210 * 4];
        fill_quantized(&mut rng, DType::Q6_K, &mut q6);
        for b in q6.chunks_exact(210) {
            let d = half::f16::from_le_bytes([b[208], b[209]]).to_f32();
            assert!((0.0005..0.0025).contains(&d), "{d}");
        }
    }

    #[test]
    fn ensure_gguf_reuses_a_matching_file() {
        let dir = tempfile::tempdir().unwrap();
        let (_, metadata) = llama_7b_gguf(0);
        let infos = vec![
            TensorInfo::new("a.weight", DType::Q4_K, [2, 256]),
            TensorInfo::new("b.norm", DType::F32, [5]),
            TensorInfo::new("c.weight", DType::Q8_0, [3, 32]),
        ];
        let path = ensure_gguf_in(dir.path(), "t.gguf", infos.clone(), &metadata).unwrap();
        let f = GgufFile::open(&path).unwrap();
        assert_eq!(f.tensors(), infos.as_slice());
        let data_offset = f.header().data_offset();
        let len = gguf_file_len(&infos, data_offset, f.header().alignment());
        assert_eq!(std::fs::metadata(&path).unwrap().len(), len);
        drop(f);
        // A marker the generator would overwrite: a quant byte of `a`.
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[data_offset + 10] ^= 0xff;
        std::fs::write(&path, &bytes).unwrap();
        ensure_gguf_in(dir.path(), "t.gguf", infos.clone(), &metadata).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), bytes, "file was regenerated");
        // Other metadata is regenerated.
        let mut other = metadata.clone();
        other.insert("general.name", "other");
        ensure_gguf_in(dir.path(), "t.gguf", infos, &other).unwrap();
        let f = GgufFile::open(&path).unwrap();
        assert_eq!(f.metadata(), &other);
    }
}
