//! Shared helpers for weightkit's criterion benchmarks (`benches/main.rs`).
//!
//! The benchmarks compare our code against a reference that bounds what is
//! achievable (a plain sequential `read`, a plain `std::fs::write`, `half`'s
//! scalar conversions), so every helper here is used identically by both
//! sides of a comparison: one checksum, one tensor layout, one data pattern.
#![deny(missing_docs)]

use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use weightkit_core::{DType, Metadata, TensorInfo, TensorSink};
use weightkit_safetensors::{SafetensorsFile, SafetensorsWriter};

pub mod gguf;
pub mod pickle;
pub mod quant;

/// Environment variable naming the directory for generated benchmark files;
/// defaults to `weightkit-bench` under [`std::env::temp_dir`].
pub const BENCH_DIR_ENV: &str = "WEIGHTKIT_BENCH_DIR";

/// Chunk size for sequential reads and for streaming generated data.
pub const CHUNK: usize = 1 << 20;

/// The cheap checksum both sides of the read benchmark compute: the wrapping
/// sum of the little-endian `u64` words of `bytes` (any alignment), plus the
/// trailing bytes that do not fill a word.
///
/// It is cheap enough (the loop vectorises) that the benchmark measures
/// getting the bytes into the CPU, not the checksum; and it must touch every
/// byte, so a lazily mapped file is really read.
#[inline]
pub fn checksum(bytes: &[u8]) -> u64 {
    let words = bytes.chunks_exact(8);
    let tail = words.remainder();
    let mut sum = 0u64;
    for w in words {
        let mut b = [0u8; 8];
        b.copy_from_slice(w);
        sum = sum.wrapping_add(u64::from_le_bytes(b));
    }
    for &b in tail {
        sum = sum.wrapping_add(u64::from(b));
    }
    sum
}

/// Fills `buf` from `r` until it is full or `r` is exhausted; returns the
/// number of bytes read (less than `buf.len()` only at end of file).
pub fn read_full(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// Reads `path` sequentially in [`CHUNK`]-sized pieces into `buf` (resized
/// to [`CHUNK`] if needed, then reused) and returns the sum of
/// [`checksum`] over the pieces.
///
/// Every piece but the last is a multiple of 8 bytes, so the result equals
/// [`checksum`] of the whole file.
pub fn read_checksum(path: &Path, buf: &mut Vec<u8>) -> io::Result<u64> {
    buf.resize(CHUNK, 0);
    let mut file = File::open(path)?;
    let mut sum = 0u64;
    loop {
        let n = read_full(&mut file, buf)?;
        if n == 0 {
            return Ok(sum);
        }
        sum = sum.wrapping_add(checksum(&buf[..n]));
    }
}

/// The directory for generated benchmark files ([`BENCH_DIR_ENV`] or
/// `<temp_dir>/weightkit-bench`), created if missing.
pub fn bench_dir() -> io::Result<PathBuf> {
    let dir = match std::env::var_os(BENCH_DIR_ENV) {
        Some(d) if !d.is_empty() => PathBuf::from(d),
        _ => std::env::temp_dir().join("weightkit-bench"),
    };
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// Llama-7B dimensions: hidden size, MLP size, vocabulary.
const HIDDEN: usize = 4096;
const INTERMEDIATE: usize = 11008;
const VOCAB: usize = 32000;

/// A Llama-7B-like tensor list in storage order, at least `min_bytes` of
/// data: optionally `model.embed_tokens.weight` (bf16 `[32000, 4096]`),
/// then decoder layers (f32 `[4096]` norms, bf16 `[4096, 4096]` attention
/// projections, bf16 `[11008, 4096]` / `[4096, 11008]` MLP projections)
/// tensor by tensor until the total reaches `min_bytes`, then the f32 final
/// norm. The last layer may be partial.
pub fn llama_7b_layout(min_bytes: u64, embeddings: bool) -> Vec<TensorInfo> {
    let mut infos = Vec::new();
    let mut total = 0u64;
    let mut push = |infos: &mut Vec<TensorInfo>, info: TensorInfo| {
        total += info.byte_len().expect("fixed shapes fit in usize") as u64;
        infos.push(info);
        total
    };
    if embeddings {
        push(
            &mut infos,
            TensorInfo::new("model.embed_tokens.weight", DType::BF16, [VOCAB, HIDDEN]),
        );
    }
    let layer: [(&str, DType, &[usize]); 9] = [
        ("input_layernorm.weight", DType::F32, &[HIDDEN]),
        ("self_attn.q_proj.weight", DType::BF16, &[HIDDEN, HIDDEN]),
        ("self_attn.k_proj.weight", DType::BF16, &[HIDDEN, HIDDEN]),
        ("self_attn.v_proj.weight", DType::BF16, &[HIDDEN, HIDDEN]),
        ("self_attn.o_proj.weight", DType::BF16, &[HIDDEN, HIDDEN]),
        ("post_attention_layernorm.weight", DType::F32, &[HIDDEN]),
        ("mlp.gate_proj.weight", DType::BF16, &[INTERMEDIATE, HIDDEN]),
        ("mlp.up_proj.weight", DType::BF16, &[INTERMEDIATE, HIDDEN]),
        ("mlp.down_proj.weight", DType::BF16, &[HIDDEN, INTERMEDIATE]),
    ];
    'layers: for i in 0.. {
        for (name, dtype, dims) in layer {
            let info = TensorInfo::new(format!("model.layers.{i}.{name}"), dtype, dims);
            if push(&mut infos, info) >= min_bytes {
                break 'layers;
            }
        }
    }
    push(
        &mut infos,
        TensorInfo::new("model.norm.weight", DType::F32, [HIDDEN]),
    );
    infos
}

/// The metadata every generated file carries.
pub fn bench_metadata() -> Metadata {
    [("format", "pt"), ("generator", "weightkit-benches")]
        .into_iter()
        .collect()
}

/// Total data bytes of `infos` (the file minus its header).
pub fn data_len(infos: &[TensorInfo]) -> u64 {
    infos
        .iter()
        .map(|t| t.byte_len().expect("valid layout") as u64)
        .sum()
}

/// A small, fast pseudo-random generator (xorshift64*), so generated data is
/// deterministic and not trivially compressible.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator from a non-zero seed (zero is replaced).
    pub fn new(seed: u64) -> Self {
        Rng(seed.max(1))
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A value in `[-scale, scale)`, roughly like trained weights.
    pub fn weight(&mut self, scale: f32) -> f32 {
        // The top 24 bits give a uniform value in [0, 1) exactly in f32.
        #[allow(clippy::cast_precision_loss)]
        let unit = (self.next_u64() >> 40) as f32 / (1u32 << 24) as f32;
        (unit * 2.0 - 1.0) * scale
    }
}

/// Fills `out` with little-endian values of `dtype` (F32 or BF16) that look
/// like weights: norms near 1.0 (F32), projections within ±0.05 (BF16).
pub fn fill_weights(rng: &mut Rng, dtype: DType, out: &mut [u8]) {
    match dtype {
        DType::F32 => {
            for c in out.chunks_exact_mut(4) {
                c.copy_from_slice(&(1.0 + rng.weight(0.1)).to_le_bytes());
            }
        }
        _ => {
            for c in out.chunks_exact_mut(2) {
                let b = weightkit_core::convert::f32_to_bf16_bits(rng.weight(0.05));
                c.copy_from_slice(&b.to_le_bytes());
            }
        }
    }
}

/// Writes `infos` to `path` with [`SafetensorsWriter`], generating each
/// tensor's data in [`CHUNK`]-sized pieces (bounded memory). Library errors
/// come back wrapped in an [`io::Error`].
pub fn generate_file(
    path: &Path,
    infos: Vec<TensorInfo>,
    metadata: &Metadata,
) -> io::Result<PathBuf> {
    let plan = infos.clone();
    let w = SafetensorsWriter::create(path, infos, metadata).map_err(io::Error::other)?;
    write_weights(w, &plan)
}

/// Streams generated data for `infos` (declared order) into `sink` in
/// [`CHUNK`]-sized pieces and finishes it. The data depends only on the
/// tensor list, so every format written this way holds the same bytes for
/// the same tensor. Library errors come back wrapped in an [`io::Error`].
pub fn write_weights<S: TensorSink>(mut sink: S, infos: &[TensorInfo]) -> io::Result<S::Output> {
    let mut rng = Rng::new(0x5eed);
    let mut buf = vec![0u8; CHUNK];
    for info in infos {
        let mut left = info.byte_len().expect("valid layout");
        while left > 0 {
            let n = left.min(CHUNK);
            fill_weights(&mut rng, info.dtype, &mut buf[..n]);
            sink.write_data(&buf[..n]).map_err(io::Error::other)?;
            left -= n;
        }
    }
    sink.finish().map_err(io::Error::other)
}

/// Returns the path of a safetensors file holding `infos` (as written by
/// [`generate_file`]) named `name` in [`bench_dir`], generating it unless a
/// file of exactly the right size and the same tensors is already there.
pub fn ensure_file(name: &str, infos: Vec<TensorInfo>) -> io::Result<PathBuf> {
    ensure_file_in(&bench_dir()?, name, infos)
}

/// As [`ensure_file`], in `dir`.
pub fn ensure_file_in(dir: &Path, name: &str, infos: Vec<TensorInfo>) -> io::Result<PathBuf> {
    let path = dir.join(name);
    let data = data_len(&infos);
    // The writer may store tensors in another order than declared (its
    // default is the `safetensors` library's layout, which also changes the
    // header's length), so compare tensors by name and the size against the
    // file's own header.
    let by_name = |t: &[TensorInfo]| {
        let mut t = t.to_vec();
        t.sort_by(|a, b| a.name.cmp(&b.name));
        t
    };
    let reusable = match (std::fs::metadata(&path), SafetensorsFile::open(&path)) {
        (Ok(m), Ok(f)) => {
            m.len() == f.header().data_start() as u64 + data
                && by_name(f.tensors()) == by_name(&infos)
        }
        _ => false,
    };
    if !reusable {
        eprintln!(
            "generating {} ({:.2} GiB of tensor data) ...",
            path.display(),
            data as f64 / f64::from(1u32 << 30)
        );
        generate_file(&path, infos, &bench_metadata())?;
    }
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksum_of_pieces_equals_whole() {
        let bytes: Vec<u8> = (0..1000u32).map(|i| (i * 7 + 3) as u8).collect();
        let whole = checksum(&bytes);
        let pieces = checksum(&bytes[..512]).wrapping_add(checksum(&bytes[512..]));
        assert_eq!(whole, pieces);
        assert_eq!(checksum(&[1, 0, 0, 0, 0, 0, 0, 0, 5]), 6);
    }

    #[test]
    fn layouts_reach_their_size() {
        let gib = 1u64 << 30;
        assert!(data_len(&llama_7b_layout(gib, true)) >= gib);
        assert!(data_len(&llama_7b_layout(256 << 20, false)) >= 256 << 20);
    }

    #[test]
    fn ensure_file_reuses_a_matching_file() {
        let dir = tempfile::tempdir().unwrap();
        let infos = vec![
            TensorInfo::new("b.weight", DType::BF16, [512, 8]),
            TensorInfo::new("a.norm", DType::F32, [8]),
        ];
        let path = ensure_file_in(dir.path(), "t.safetensors", infos.clone()).unwrap();
        // A marker the generator would overwrite: the last data byte.
        let mut bytes = std::fs::read(&path).unwrap();
        *bytes.last_mut().unwrap() ^= 0xff;
        std::fs::write(&path, &bytes).unwrap();
        ensure_file_in(dir.path(), "t.safetensors", infos.clone()).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), bytes, "file was regenerated");
        // A different layout is regenerated.
        let other = vec![TensorInfo::new(
            "c",
            DType::F32,
            [data_len(&infos) as usize / 4],
        )];
        ensure_file_in(dir.path(), "t.safetensors", other.clone()).unwrap();
        let f = SafetensorsFile::open(&path).unwrap();
        assert_eq!(f.tensors(), other.as_slice());
    }
}
