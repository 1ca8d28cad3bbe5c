//! IQ4_NL / IQ4_XS / TQ / FP4 / grid i-quants against llama.cpp's bytes
//! (`testdata/ggml-reference/`) and gguf-py's (`testdata/gguf/`).

use std::path::PathBuf;

use bytemuck::Pod;
use half::f16;
use proptest::prelude::*;
use weightkit_gguf::GgufFile;
use weightkit_quant::QuantError;
use weightkit_quant::iquants::{self, grids};
use weightkit_quant::simd::{Level, dispatch};
use weightkit_safetensors::SafetensorsFile;

pub(crate) const ROWS: usize = 8;
pub(crate) const COLS: usize = 4096;
pub(crate) const DISTS: [&str; 4] = ["uniform", "gauss", "outlier", "edge"];

fn zeroed<B: Pod>() -> B {
    B::zeroed()
}

pub(crate) fn testdata(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../testdata")
        .join(rel)
}

pub(crate) fn read(rel: &str) -> Vec<u8> {
    let p = testdata(rel);
    std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

pub(crate) fn read_f32(rel: &str) -> Vec<f32> {
    bytemuck::pod_collect_to_vec::<u8, f32>(&read(rel))
}

pub(crate) fn blocks<T: Pod>(bytes: &[u8]) -> Vec<T> {
    assert_eq!(bytes.len() % size_of::<T>(), 0);
    bytemuck::pod_collect_to_vec::<u8, T>(bytes)
}

/// Index and values of the first bitwise difference, if any.
fn first_bit_diff(a: &[f32], b: &[f32]) -> Option<(usize, f32, f32)> {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .enumerate()
        .find(|(_, (x, y))| x.to_bits() != y.to_bits())
        .map(|(i, (x, y))| (i, *x, *y))
}

fn first_byte_diff(a: &[u8], b: &[u8]) -> Option<usize> {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).position(|(x, y)| x != y)
}

// ---------------------------------------------------------------- llama.cpp

type QuantizeFn<B> = fn(&[f32], &mut [B], usize, Option<&[f32]>) -> Result<(), QuantError>;
type DequantizeFn<B> = fn(&[B], &mut [f32]) -> Result<(), QuantError>;

pub(crate) fn check_ggml_reference<B: Pod>(
    name: &str,
    block: usize,
    quantize: QuantizeFn<B>,
    dequantize: DequantizeFn<B>,
) {
    let imatrix = read_f32("ggml-reference/imatrix.f32");
    assert_eq!(imatrix.len(), COLS);
    for dist in DISTS {
        let x = read_f32(&format!("ggml-reference/{dist}.f32"));
        assert_eq!(x.len(), ROWS * COLS);
        for (suffix, w) in [("", None), ("_imatrix", Some(imatrix.as_slice()))] {
            let stem = format!("ggml-reference/{dist}_{name}{suffix}");
            let want_q = read(&format!("{stem}.q"));
            let want_deq = read_f32(&format!("{stem}.deq.f32"));

            let mut q = vec![zeroed::<B>(); x.len() / block];
            quantize(&x, &mut q, COLS, w).unwrap();
            let got_q: &[u8] = bytemuck::cast_slice(&q);
            assert_eq!(got_q.len(), want_q.len(), "{stem}");
            if let Some(i) = first_byte_diff(got_q, &want_q) {
                let bb = size_of::<B>();
                panic!(
                    "{stem}.q: first difference at byte {i} (block {}, byte {})",
                    i / bb,
                    i % bb
                );
            }

            let ref_blocks: Vec<B> = blocks(&want_q);
            let mut y = vec![0.0f32; x.len()];
            dequantize(&ref_blocks, &mut y).unwrap();
            if let Some((i, a, b)) = first_bit_diff(&y, &want_deq) {
                panic!("{stem}.deq.f32: element {i}: got {a:e}, want {b:e}");
            }
        }
    }
}

#[test]
fn iq4_nl_matches_llama_cpp() {
    check_ggml_reference::<iquants::BlockIq4Nl>(
        "iq4_nl",
        32,
        iquants::quantize_iq4_nl,
        iquants::dequantize_row_iq4_nl,
    );
}

#[test]
fn iq4_xs_matches_llama_cpp() {
    check_ggml_reference::<iquants::BlockIq4Xs>(
        "iq4_xs",
        256,
        iquants::quantize_iq4_xs,
        iquants::dequantize_row_iq4_xs,
    );
}

/// llama.cpp's dequantized floats from the SIMD dequantizers too (at AVX2,
/// or the best level this CPU has below it).
#[test]
fn iq4_simd_dequantizers_match_llama_cpp() {
    check_ggml_reference::<iquants::BlockIq4Nl>("iq4_nl", 32, iquants::quantize_iq4_nl, |x, y| {
        dispatch::dequantize_row_iq4_nl_at(Level::Avx2, x, y)
    });
    check_ggml_reference::<iquants::BlockIq4Xs>("iq4_xs", 256, iquants::quantize_iq4_xs, |x, y| {
        dispatch::dequantize_row_iq4_xs_at(Level::Avx2, x, y)
    });
}

#[test]
fn iq4_xs_ref_is_quantize_without_weights() {
    let x = read_f32("ggml-reference/gauss.f32");
    let row = &x[..COLS];
    let mut a = vec![zeroed::<iquants::BlockIq4Xs>(); COLS / 256];
    let mut b = a.clone();
    iquants::quantize_row_iq4_xs_ref(row, &mut a).unwrap();
    iquants::quantize_iq4_xs(row, &mut b, COLS, None).unwrap();
    assert_eq!(a, b);
}

// ------------------------------------------------------------------ gguf-py

struct Gguf {
    file: GgufFile,
}

impl Gguf {
    fn open(rel: &str) -> Self {
        Gguf {
            file: GgufFile::read(testdata(rel)).unwrap(),
        }
    }

    fn bytes(&self, name: &str) -> Vec<u8> {
        self.file.tensor(name).unwrap().data().to_vec()
    }
}

fn safetensors_f32(rel: &str, name: &str) -> Vec<f32> {
    let st = SafetensorsFile::read(testdata(rel)).unwrap();
    st.tensor(name).unwrap().to_f32_vec().unwrap()
}

type RefQuantizeFn<B> = fn(&[f32], &mut [B]) -> Result<(), QuantError>;

/// gguf-py's quantization of `quantized.source.safetensors` equals ours, and
/// our dequantization of its bytes equals gguf-py's bit for bit.
pub(crate) fn check_gguf_quantized<B: Pod>(
    ty: &str,
    block: usize,
    quantize: RefQuantizeFn<B>,
    dequantize: DequantizeFn<B>,
) {
    let name = format!("q.{ty}");
    let g = Gguf::open("gguf/quantized.gguf");
    let want_q = g.bytes(&name);
    let src = safetensors_f32("gguf/quantized.source.safetensors", &name);
    let want_deq = safetensors_f32("gguf/quantized.dequant.safetensors", &name);

    let mut q = vec![zeroed::<B>(); src.len() / block];
    quantize(&src, &mut q).unwrap();
    let got_q: &[u8] = bytemuck::cast_slice(&q);
    if let Some(i) = first_byte_diff(got_q, &want_q) {
        let bb = size_of::<B>();
        panic!(
            "{name}: first difference at byte {i} (block {}, byte {})",
            i / bb,
            i % bb
        );
    }

    let mut y = vec![0.0f32; src.len()];
    dequantize(&blocks::<B>(&want_q), &mut y).unwrap();
    if let Some((i, a, b)) = first_bit_diff(&y, &want_deq) {
        panic!("{name}: dequantized element {i}: got {a:e}, want {b:e}");
    }
}

#[test]
fn tq1_0_matches_gguf_py() {
    check_gguf_quantized::<iquants::BlockTq1_0>(
        "TQ1_0",
        256,
        iquants::quantize_row_tq1_0_ref,
        iquants::dequantize_row_tq1_0,
    );
}

#[test]
fn tq2_0_matches_gguf_py() {
    check_gguf_quantized::<iquants::BlockTq2_0>(
        "TQ2_0",
        256,
        iquants::quantize_row_tq2_0_ref,
        iquants::dequantize_row_tq2_0,
    );
}

#[test]
fn mxfp4_matches_gguf_py() {
    check_gguf_quantized::<iquants::BlockMxfp4>(
        "MXFP4",
        32,
        iquants::quantize_row_mxfp4_ref,
        iquants::dequantize_row_mxfp4,
    );
}

fn check_dequant_only<B: Pod>(ty: &str, block: usize, dequantize: DequantizeFn<B>) {
    let name = format!("dq.{ty}");
    let g = Gguf::open("gguf/dequant-only.gguf");
    let q: Vec<B> = blocks(&g.bytes(&name));
    let want = safetensors_f32("gguf/dequant-only.dequant.safetensors", &name);
    assert_eq!(q.len() * block, want.len(), "{name}");
    let mut y = vec![0.0f32; want.len()];
    dequantize(&q, &mut y).unwrap();
    if let Some((i, a, b)) = first_bit_diff(&y, &want) {
        panic!(
            "{name}: element {i} (block {}): got {a:e}, want {b:e}",
            i / block
        );
    }
}

#[test]
fn dequant_only_matches_gguf_py() {
    check_dequant_only("IQ2_XXS", 256, iquants::dequantize_row_iq2_xxs);
    check_dequant_only("IQ2_XS", 256, iquants::dequantize_row_iq2_xs);
    check_dequant_only("IQ2_S", 256, iquants::dequantize_row_iq2_s);
    check_dequant_only("IQ3_XXS", 256, iquants::dequantize_row_iq3_xxs);
    check_dequant_only("IQ3_S", 256, iquants::dequantize_row_iq3_s);
    check_dequant_only("IQ1_S", 256, iquants::dequantize_row_iq1_s);
    check_dequant_only("IQ1_M", 256, iquants::dequantize_row_iq1_m);
    check_dequant_only("IQ4_NL", 32, iquants::dequantize_row_iq4_nl);
    check_dequant_only("IQ4_XS", 256, iquants::dequantize_row_iq4_xs);
    check_dequant_only("NVFP4", 64, iquants::dequantize_row_nvfp4);
}

// ------------------------------------------------------------------ tables

fn fnv1a64(bytes: impl IntoIterator<Item = u8>) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325u64;
    for b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

fn le<T: Copy, const N: usize>(t: &[T], f: impl Fn(T) -> [u8; N]) -> Vec<u8> {
    t.iter().flat_map(|&v| f(v)).collect()
}

/// FNV-1a 64 of each table's little-endian bytes, as printed by
/// `src/iquants/gen_grids.py ggml-common.h --checksums` from the header text.
#[test]
fn grids_match_ggml_common_h() {
    let got: [(&str, usize, u64); 10] = [
        (
            "KMASK_IQ2XS",
            grids::KMASK_IQ2XS.len(),
            fnv1a64(grids::KMASK_IQ2XS),
        ),
        (
            "KSIGNS_IQ2XS",
            grids::KSIGNS_IQ2XS.len(),
            fnv1a64(grids::KSIGNS_IQ2XS),
        ),
        (
            "IQ2XXS_GRID",
            grids::IQ2XXS_GRID.len(),
            fnv1a64(le(&grids::IQ2XXS_GRID, u64::to_le_bytes)),
        ),
        (
            "IQ2XS_GRID",
            grids::IQ2XS_GRID.len(),
            fnv1a64(le(&grids::IQ2XS_GRID, u64::to_le_bytes)),
        ),
        (
            "IQ2S_GRID",
            grids::IQ2S_GRID.len(),
            fnv1a64(le(&grids::IQ2S_GRID, u64::to_le_bytes)),
        ),
        (
            "IQ3XXS_GRID",
            grids::IQ3XXS_GRID.len(),
            fnv1a64(le(&grids::IQ3XXS_GRID, u32::to_le_bytes)),
        ),
        (
            "IQ3S_GRID",
            grids::IQ3S_GRID.len(),
            fnv1a64(le(&grids::IQ3S_GRID, u32::to_le_bytes)),
        ),
        (
            "IQ1S_GRID",
            grids::IQ1S_GRID.len(),
            fnv1a64(le(&grids::IQ1S_GRID, u64::to_le_bytes)),
        ),
        (
            "KVALUES_IQ4NL",
            grids::KVALUES_IQ4NL.len(),
            fnv1a64(grids::KVALUES_IQ4NL.map(|v| v as u8)),
        ),
        (
            "KVALUES_MXFP4",
            grids::KVALUES_MXFP4.len(),
            fnv1a64(grids::KVALUES_MXFP4.map(|v| v as u8)),
        ),
    ];
    let want: [(&str, usize, u64); 10] = [
        ("KMASK_IQ2XS", 8, 0x0af7003a53c25e16),
        ("KSIGNS_IQ2XS", 128, 0xf19ba8f8c3292ba5),
        ("IQ2XXS_GRID", 256, 0xbb4ee025b5ac6e8e),
        ("IQ2XS_GRID", 512, 0xc9b1ee61e79909bd),
        ("IQ2S_GRID", 1024, 0x123edd38a3b62b90),
        ("IQ3XXS_GRID", 256, 0xdfa5dc83d6a155d5),
        ("IQ3S_GRID", 512, 0xfa37020c25b44829),
        ("IQ1S_GRID", 2048, 0x6703ed863501ae2e),
        ("KVALUES_IQ4NL", 16, 0x055d06d2d8fa0f75),
        ("KVALUES_MXFP4", 16, 0x3f0e3c08af1e5eb5),
    ];
    assert_eq!(got, want);
    // a few entries copied by hand from ggml-common.h
    assert_eq!(grids::IQ2XXS_GRID[0], 0x0808080808080808);
    assert_eq!(grids::IQ2XXS_GRID[1], 0x080808080808082b);
    assert_eq!(grids::IQ3XXS_GRID[248], 0x3e1c1c1c);
    assert_eq!(grids::IQ3XXS_GRID[255], 0x3e341c04);
    assert_eq!(grids::IQ1S_GRID[0], 0xffffffffffffffff);
    assert_eq!(grids::IQ1S_GRID[2047], 0x0101010101010101);
    assert_eq!(
        grids::KVALUES_IQ4NL,
        [
            -127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113
        ]
    );
    assert_eq!(
        grids::KVALUES_MXFP4,
        [0, 1, 2, 3, 4, 6, 8, 12, 0, -1, -2, -3, -4, -6, -8, -12]
    );
    // ksigns: bit 7 makes the number of set bits even
    for (i, &s) in grids::KSIGNS_IQ2XS.iter().enumerate() {
        assert_eq!(usize::from(s & 127), i);
        assert_eq!(s.count_ones() % 2, 0);
    }
}

// ------------------------------------------------------ test-quantize-fns

/// test-quantize-fns' `generate_data`: `0.1 + 2*cosf(i + offset)` (the sum
/// in double, stored as float).
fn generate_data(offset: f32, n: usize) -> Vec<f32> {
    (0..n)
        .map(|i| (0.1f64 + f64::from(2.0f32 * (i as f32 + offset).cos())) as f32)
        .collect()
}

/// test-quantize-fns' `array_rmse` (`sqrtf(sum) / n`, as written there).
fn array_rmse(a: &[f32], b: &[f32]) -> f32 {
    let sum: f64 = a
        .iter()
        .zip(b)
        .map(|(x, y)| f64::from(x - y) * f64::from(x - y))
        .sum();
    (sum as f32).sqrt() / a.len() as f32
}

fn dot_f64(a: &[f32], b: &[f32]) -> f32 {
    let mut sum = 0.0f64;
    for (x, y) in a.iter().zip(b) {
        sum += f64::from(x * y);
    }
    sum as f32
}

/// ggml's `quantize_row_q8_0_ref`, as raw block bytes (test-only partner).
fn q8_0_bytes(x: &[f32]) -> Vec<u8> {
    let mut out = Vec::new();
    for b in x.chunks_exact(32) {
        let amax = b.iter().fold(0.0f32, |a, v| a.max(v.abs()));
        let d = amax / 127.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        out.extend_from_slice(&f16::from_f32(d).to_bits().to_le_bytes());
        out.extend(b.iter().map(|v| (v * id).round() as i8 as u8));
    }
    out
}

/// ggml's `quantize_row_q8_K_ref`, as raw block bytes (test-only partner).
fn q8_k_bytes(x: &[f32]) -> Vec<u8> {
    let mut out = Vec::new();
    for b in x.chunks_exact(256) {
        let (mut max, mut amax) = (0.0f32, 0.0f32);
        for &v in b {
            if v.abs() > amax {
                amax = v.abs();
                max = v;
            }
        }
        if amax == 0.0 {
            out.extend_from_slice(&[0u8; 292]);
            continue;
        }
        let iscale = -127.0 / max;
        let qs: Vec<i8> = b
            .iter()
            .map(|v| ((iscale * v).round_ties_even() as i32).min(127) as i8)
            .collect();
        out.extend_from_slice(&(1.0 / iscale).to_le_bytes());
        out.extend(qs.iter().map(|&q| q as u8));
        for g in qs.chunks_exact(16) {
            let s: i32 = g.iter().map(|&q| i32::from(q)).sum();
            out.extend_from_slice(&(s as i16).to_le_bytes());
        }
    }
    out
}

#[test]
fn quantization_error_within_test_quantize_fns_thresholds() {
    const N: usize = 32 * 128;
    let x = generate_data(0.0, N);
    let x2 = generate_data(1.0, N);
    let q8_0 = q8_0_bytes(&x2);
    let q8_k = q8_k_bytes(&x2);
    let dot_ref = dot_f64(&x, &x2);
    let mut y = vec![0.0f32; N];
    let dot_err = |v: f32| (v - dot_ref).abs() / N as f32;

    // IQ4_NL: the CPU from_float is quantize_row_iq4_nl_ref
    let mut q = vec![zeroed::<iquants::BlockIq4Nl>(); N / 32];
    iquants::quantize_row_iq4_nl_ref(&x, &mut q).unwrap();
    iquants::dequantize_row_iq4_nl(&q, &mut y).unwrap();
    let e = array_rmse(&x, &y);
    assert!(e < 0.002, "iq4_nl total error {e}");
    let d = dot_err(iquants::vec_dot_iq4_nl_q8_0(&q, &q8_0).unwrap());
    assert!(d < 0.02, "iq4_nl dot error {d}");
    let d = dot_err(dispatch::vec_dot_iq4_nl_q8_0_at(Level::Avx2, &q, &q8_0).unwrap());
    assert!(d < 0.02, "iq4_nl SIMD dot error {d}");
    // and the importance path llama-quantize uses
    iquants::quantize_iq4_nl(&x, &mut q, N, None).unwrap();
    iquants::dequantize_row_iq4_nl(&q, &mut y).unwrap();
    assert!(array_rmse(&x, &y) < 0.002);

    let mut q = vec![zeroed::<iquants::BlockIq4Xs>(); N / 256];
    iquants::quantize_row_iq4_xs_ref(&x, &mut q).unwrap();
    iquants::dequantize_row_iq4_xs(&q, &mut y).unwrap();
    let e = array_rmse(&x, &y);
    assert!(e < 0.002, "iq4_xs total error {e}");
    let d = dot_err(iquants::vec_dot_iq4_xs_q8_k(&q, &q8_k).unwrap());
    assert!(d < 0.02, "iq4_xs dot error {d}");
    let d = dot_err(dispatch::vec_dot_iq4_xs_q8_k_at(Level::Avx2, &q, &q8_k).unwrap());
    assert!(d < 0.02, "iq4_xs SIMD dot error {d}");

    let mut q = vec![zeroed::<iquants::BlockTq1_0>(); N / 256];
    iquants::quantize_row_tq1_0_ref(&x, &mut q).unwrap();
    iquants::dequantize_row_tq1_0(&q, &mut y).unwrap();
    let e = array_rmse(&x, &y);
    assert!(e < 0.01, "tq1_0 total error {e}");
    let d = dot_err(iquants::vec_dot_tq1_0_q8_k(&q, &q8_k).unwrap());
    assert!(d < 0.15, "tq1_0 dot error {d}");

    let mut q = vec![zeroed::<iquants::BlockTq2_0>(); N / 256];
    iquants::quantize_row_tq2_0_ref(&x, &mut q).unwrap();
    iquants::dequantize_row_tq2_0(&q, &mut y).unwrap();
    let e = array_rmse(&x, &y);
    assert!(e < 0.01, "tq2_0 total error {e}");
    let d = dot_err(iquants::vec_dot_tq2_0_q8_k(&q, &q8_k).unwrap());
    assert!(d < 0.15, "tq2_0 dot error {d}");

    let mut q = vec![zeroed::<iquants::BlockMxfp4>(); N / 32];
    iquants::quantize_row_mxfp4_ref(&x, &mut q).unwrap();
    iquants::dequantize_row_mxfp4(&q, &mut y).unwrap();
    let e = array_rmse(&x, &y);
    assert!(e < 0.002, "mxfp4 total error {e}");
    let d = dot_err(iquants::vec_dot_mxfp4_q8_0(&q, &q8_0).unwrap());
    assert!(d < 0.02, "mxfp4 dot error {d}");

    let mut q = vec![zeroed::<iquants::BlockNvfp4>(); N / 64];
    iquants::quantize_row_nvfp4_ref(&x, &mut q).unwrap();
    iquants::dequantize_row_nvfp4(&q, &mut y).unwrap();
    let e = array_rmse(&x, &y);
    assert!(e < 0.003, "nvfp4 total error {e}");
    let d = dot_err(iquants::vec_dot_nvfp4_q8_0(&q, &q8_0).unwrap());
    assert!(d < 0.03, "nvfp4 dot error {d}");
}

/// The dot products equal the f32 dot of the dequantized values up to
/// rounding (a consistency check of the kernels' layouts).
#[test]
fn dot_products_agree_with_dequantized() {
    const N: usize = 1024;
    let x = generate_data(0.5, N);
    let x2 = generate_data(2.0, N);
    let q8_0 = q8_0_bytes(&x2);
    let q8_k = q8_k_bytes(&x2);
    let mut deq8_0 = vec![0.0f32; N];
    for (b, y) in q8_0.chunks_exact(34).zip(deq8_0.chunks_exact_mut(32)) {
        let d = f16::from_bits(u16::from_le_bytes([b[0], b[1]])).to_f32();
        for j in 0..32 {
            y[j] = f32::from(b[2 + j] as i8) * d;
        }
    }
    let mut deq8_k = vec![0.0f32; N];
    for (b, y) in q8_k.chunks_exact(292).zip(deq8_k.chunks_exact_mut(256)) {
        let d = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
        for j in 0..256 {
            y[j] = f32::from(b[4 + j] as i8) * d;
        }
    }
    let mut y = vec![0.0f32; N];
    let close = |what: &str, got: f32, want: f32| {
        assert!(
            (got - want).abs() <= 1e-4 * (1.0 + want.abs()),
            "{what}: {got} vs {want}"
        );
    };

    let mut q = vec![zeroed::<iquants::BlockIq4Nl>(); N / 32];
    iquants::quantize_iq4_nl(&x, &mut q, N, None).unwrap();
    iquants::dequantize_row_iq4_nl(&q, &mut y).unwrap();
    close(
        "iq4_nl",
        iquants::vec_dot_iq4_nl_q8_0(&q, &q8_0).unwrap(),
        dot_f64(&y, &deq8_0),
    );

    let mut q = vec![zeroed::<iquants::BlockIq4Xs>(); N / 256];
    iquants::quantize_iq4_xs(&x, &mut q, N, None).unwrap();
    iquants::dequantize_row_iq4_xs(&q, &mut y).unwrap();
    close(
        "iq4_xs",
        iquants::vec_dot_iq4_xs_q8_k(&q, &q8_k).unwrap(),
        dot_f64(&y, &deq8_k),
    );

    let mut q = vec![zeroed::<iquants::BlockTq1_0>(); N / 256];
    iquants::quantize_row_tq1_0_ref(&x, &mut q).unwrap();
    iquants::dequantize_row_tq1_0(&q, &mut y).unwrap();
    close(
        "tq1_0",
        iquants::vec_dot_tq1_0_q8_k(&q, &q8_k).unwrap(),
        dot_f64(&y, &deq8_k),
    );

    let mut q = vec![zeroed::<iquants::BlockTq2_0>(); N / 256];
    iquants::quantize_row_tq2_0_ref(&x, &mut q).unwrap();
    iquants::dequantize_row_tq2_0(&q, &mut y).unwrap();
    close(
        "tq2_0",
        iquants::vec_dot_tq2_0_q8_k(&q, &q8_k).unwrap(),
        dot_f64(&y, &deq8_k),
    );

    let mut q = vec![zeroed::<iquants::BlockMxfp4>(); N / 32];
    iquants::quantize_row_mxfp4_ref(&x, &mut q).unwrap();
    iquants::dequantize_row_mxfp4(&q, &mut y).unwrap();
    close(
        "mxfp4",
        iquants::vec_dot_mxfp4_q8_0(&q, &q8_0).unwrap(),
        dot_f64(&y, &deq8_0),
    );

    let mut q = vec![zeroed::<iquants::BlockNvfp4>(); N / 64];
    iquants::quantize_row_nvfp4_ref(&x, &mut q).unwrap();
    iquants::dequantize_row_nvfp4(&q, &mut y).unwrap();
    close(
        "nvfp4",
        iquants::vec_dot_nvfp4_q8_0(&q, &q8_0).unwrap(),
        dot_f64(&y, &deq8_0),
    );
}

// ------------------------------------------------------------ conversions

#[test]
fn fp4_scale_conversions() {
    assert_eq!(iquants::e8m0_to_fp32_half(0), 2f32.powi(-128));
    assert_eq!(iquants::e8m0_to_fp32_half(1), 2f32.powi(-127));
    assert_eq!(iquants::e8m0_to_fp32_half(127), 0.5);
    assert_eq!(iquants::e8m0_to_fp32_half(255), 2f32.powi(127));
    // UE4M3 decodes to half its value; bit 7 is ignored, 0 and 0x7F are 0
    assert_eq!(iquants::ue4m3_to_fp32(0), 0.0);
    assert_eq!(iquants::ue4m3_to_fp32(0x7F), 0.0);
    assert_eq!(iquants::ue4m3_to_fp32(0x38), 0.5); // 1.0
    assert_eq!(iquants::ue4m3_to_fp32(0x7E), 224.0); // 448
    assert_eq!(iquants::ue4m3_to_fp32(0x01), 2f32.powi(-10)); // 2^-9 subnormal
    assert_eq!(iquants::ue4m3_to_fp32(0xB8), 0.5);
    // codes below exponent 15 round-trip through ggml's encoder; it sends
    // everything from 256 up (exponent 15) to 0x7E = 448
    for c in 1u8..0x78 {
        let v = 2.0 * iquants::ue4m3_to_fp32(c);
        assert_eq!(iquants::fp32_to_ue4m3(v), c, "code {c:#x} value {v}");
    }
    for c in 0x78u8..0x7F {
        assert_eq!(
            iquants::fp32_to_ue4m3(2.0 * iquants::ue4m3_to_fp32(c)),
            0x7E
        );
    }
    assert_eq!(iquants::fp32_to_ue4m3(-1.0), 0);
    assert_eq!(iquants::fp32_to_ue4m3(f32::NAN), 0);
    assert_eq!(iquants::fp32_to_ue4m3(1e9), 0x7E);
    assert_eq!(iquants::fp32_to_ue4m3(f32::INFINITY), 0x7E);
}

// -------------------------------------------------------------- hostility

/// Runs every quantizer on `row` (256 values) and dequantizes the result.
fn quantize_all(row: &[f32], w: Option<&[f32]>) -> Result<(), QuantError> {
    let n = row.len();
    let mut y = vec![0.0f32; n];
    let mut a = vec![zeroed::<iquants::BlockIq4Nl>(); n / 32];
    iquants::quantize_iq4_nl(row, &mut a, n, w)?;
    iquants::dequantize_row_iq4_nl(&a, &mut y)?;
    iquants::quantize_row_iq4_nl_ref(row, &mut a)?;
    let mut b = vec![zeroed::<iquants::BlockIq4Xs>(); n / 256];
    iquants::quantize_iq4_xs(row, &mut b, n, w)?;
    iquants::dequantize_row_iq4_xs(&b, &mut y)?;
    let mut c = vec![zeroed::<iquants::BlockTq1_0>(); n / 256];
    iquants::quantize_tq1_0(row, &mut c, n, w)?;
    iquants::dequantize_row_tq1_0(&c, &mut y)?;
    let mut d = vec![zeroed::<iquants::BlockTq2_0>(); n / 256];
    iquants::quantize_tq2_0(row, &mut d, n, w)?;
    iquants::dequantize_row_tq2_0(&d, &mut y)?;
    let mut e = vec![zeroed::<iquants::BlockMxfp4>(); n / 32];
    iquants::quantize_mxfp4(row, &mut e, n, w)?;
    iquants::dequantize_row_mxfp4(&e, &mut y)?;
    let mut f = vec![zeroed::<iquants::BlockNvfp4>(); n / 64];
    iquants::quantize_nvfp4(row, &mut f, n, w)?;
    iquants::dequantize_row_nvfp4(&f, &mut y)?;
    Ok(())
}

#[test]
fn adversarial_rows_do_not_panic() {
    let specials = [
        0.0f32,
        -0.0,
        f32::MAX,
        -f32::MAX,
        f32::MIN_POSITIVE,
        1e-45,
        -1e-45,
        1e-40,
        1e19,
        -1e20,
        65504.0,
        65520.0,
        1e-8,
        3.0e38,
    ];
    let mut rows: Vec<Vec<f32>> = specials.iter().map(|&v| vec![v; 256]).collect();
    for (i, &a) in specials.iter().enumerate() {
        for &b in &specials[i..] {
            rows.push(
                (0..256)
                    .map(|j| {
                        if j % 3 == 0 {
                            a
                        } else if j % 3 == 1 {
                            b
                        } else {
                            -a
                        }
                    })
                    .collect(),
            );
        }
    }
    let zeros = vec![0.0f32; 256];
    let huge = vec![f32::MAX; 256];
    for row in &rows {
        quantize_all(row, None).unwrap();
        quantize_all(row, Some(&zeros)).unwrap();
        quantize_all(row, Some(&huge)).unwrap();
    }
}

#[test]
fn invalid_arguments_are_errors() {
    let x = vec![1.0f32; 256];
    let mut nl = vec![zeroed::<iquants::BlockIq4Nl>(); 8];
    let mut xs = vec![zeroed::<iquants::BlockIq4Xs>(); 1];
    assert!(matches!(
        iquants::quantize_iq4_nl(&x, &mut nl, 48, None),
        Err(QuantError::RowNotBlockMultiple {
            n: 48,
            block: 32,
            ..
        })
    ));
    assert!(matches!(
        iquants::quantize_iq4_nl(&x, &mut nl[..7], 256, None),
        Err(QuantError::BufferLength { .. })
    ));
    assert!(matches!(
        iquants::quantize_iq4_nl(&x[..200], &mut nl, 64, None),
        Err(QuantError::BufferLength { .. })
    ));
    assert!(matches!(
        iquants::quantize_iq4_nl(&x, &mut nl, 256, Some(&x[..255])),
        Err(QuantError::BufferLength { .. })
    ));
    assert!(matches!(
        iquants::quantize_iq4_nl(&x, &mut nl, 0, None),
        Err(QuantError::BufferLength { .. })
    ));
    assert_eq!(iquants::quantize_iq4_nl(&[], &mut [], 0, None), Ok(()));
    let mut bad = x.clone();
    bad[7] = f32::NAN;
    assert!(matches!(
        iquants::quantize_iq4_xs(&bad, &mut xs, 256, None),
        Err(QuantError::NonFiniteInput { index: 7, .. })
    ));
    bad[7] = f32::INFINITY;
    assert!(matches!(
        quantize_all(&bad, None),
        Err(QuantError::NonFiniteInput { index: 7, .. })
    ));
    let mut w = vec![1.0f32; 256];
    w[3] = -1.0;
    assert!(matches!(
        quantize_all(&x, Some(&w)),
        Err(QuantError::InvalidImportance { index: 3, .. })
    ));
    w[3] = f32::NAN;
    assert!(matches!(
        iquants::quantize_iq4_xs(&x, &mut xs, 256, Some(&w)),
        Err(QuantError::InvalidImportance { index: 3, .. })
    ));
    let mut y = vec![0.0f32; 255];
    assert!(matches!(
        iquants::dequantize_row_iq4_xs(&xs, &mut y),
        Err(QuantError::BufferLength { .. })
    ));
    assert!(matches!(
        iquants::quantize_row_tq1_0_ref(&x[..128], &mut []),
        Err(QuantError::RowNotBlockMultiple { .. })
    ));
    assert!(matches!(
        iquants::quantize_row_mxfp4_ref(&x, &mut []),
        Err(QuantError::BufferLength { .. })
    ));
    assert!(matches!(
        iquants::vec_dot_iq4_nl_q8_0(&nl, &[0u8; 33]),
        Err(QuantError::BufferLength { .. })
    ));
    assert!(matches!(
        iquants::vec_dot_iq4_xs_q8_k(&xs, &[0u8; 291]),
        Err(QuantError::BufferLength { .. })
    ));
    assert!(matches!(
        iquants::vec_dot_nvfp4_q8_0(&[zeroed::<iquants::BlockNvfp4>()], &[0u8; 34]),
        Err(QuantError::BufferLength { .. })
    ));
}

/// Dequantizes `bytes` (whole blocks of `B`) with `f`, which must not panic.
fn dequantize_bytes<B: Pod>(bytes: &[u8], block: usize, f: DequantizeFn<B>) {
    let n = bytes.len() / size_of::<B>();
    let q: Vec<B> = blocks(&bytes[..n * size_of::<B>()]);
    let mut y = vec![0.0f32; n * block];
    f(&q, &mut y).unwrap();
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn random_blocks_dequantize_without_panic(bytes in proptest::collection::vec(any::<u8>(), 0..700)) {
        dequantize_bytes(&bytes, 256, iquants::dequantize_row_iq2_xxs);
        dequantize_bytes(&bytes, 256, iquants::dequantize_row_iq2_xs);
        dequantize_bytes(&bytes, 256, iquants::dequantize_row_iq2_s);
        dequantize_bytes(&bytes, 256, iquants::dequantize_row_iq3_xxs);
        dequantize_bytes(&bytes, 256, iquants::dequantize_row_iq3_s);
        dequantize_bytes(&bytes, 256, iquants::dequantize_row_iq1_s);
        dequantize_bytes(&bytes, 256, iquants::dequantize_row_iq1_m);
        dequantize_bytes(&bytes, 32, iquants::dequantize_row_iq4_nl);
        dequantize_bytes(&bytes, 256, iquants::dequantize_row_iq4_xs);
        dequantize_bytes(&bytes, 256, iquants::dequantize_row_tq1_0);
        dequantize_bytes(&bytes, 256, iquants::dequantize_row_tq2_0);
        dequantize_bytes(&bytes, 32, iquants::dequantize_row_mxfp4);
        dequantize_bytes(&bytes, 64, iquants::dequantize_row_nvfp4);
    }

    #[test]
    fn random_rows_quantize_without_panic(
        row in proptest::collection::vec(prop_oneof![
            any::<f32>().prop_filter("finite", |v| v.is_finite()),
            -2.0f32..2.0,
            Just(0.0f32),
        ], 256),
        w in proptest::collection::vec(0.0f32..1e30, 256),
    ) {
        quantize_all(&row, None).unwrap();
        quantize_all(&row, Some(&w)).unwrap();
    }
}
