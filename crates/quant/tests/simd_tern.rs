//! The TQ1_0 and TQ2_0 SIMD kernels against their scalar references at
//! every level this CPU supports: dequantizers bit for bit, dot products
//! against the scalar dot and an exact i64 reference (each block's integer
//! sum, from trits decoded here independently), bit for bit where every
//! partial sum is an integer f32 represents, within a few ulps of the
//! magnitude otherwise. The `block_q8_K` partners are raw bytes: with their
//! quants' own `bsums` the dots must be ggml's generic `sum (t - 1) q`;
//! with arbitrary `bsums`, llama.cpp's kernels' `sum t q - sum bsums`.

use bytemuck::Zeroable;
use half::f16;
use proptest::prelude::*;
use weightkit_quant::QuantError;
use weightkit_quant::iquants::{self, BlockTq1_0, BlockTq2_0};
use weightkit_quant::kquants::{self, BlockQ8K, QK_K};
use weightkit_quant::simd::{Level, dispatch};

use crate::simd::{assert_length_error, check_dequant, check_quantizer, levels};
use crate::simd_iq4::check_dot;

/// Bytes of one `block_q8_K`, one `block_tq1_0`, one `block_tq2_0`.
const Q8_K_BYTES: usize = 292;
const TQ1_BYTES: usize = 54;
const TQ2_BYTES: usize = 66;

fn tq1_blocks(bytes: &[u8]) -> Vec<BlockTq1_0> {
    bytes
        .chunks_exact(TQ1_BYTES)
        .map(bytemuck::pod_read_unaligned)
        .collect()
}

fn tq2_blocks(bytes: &[u8]) -> Vec<BlockTq2_0> {
    bytes
        .chunks_exact(TQ2_BYTES)
        .map(bytemuck::pod_read_unaligned)
        .collect()
}

// ------------------------------------------------------- exact reference

/// The trit (0..=2) of value `k` of a TQ1_0 block: the `n`th base-3 digit
/// of its byte read as a fraction of 256 (`floor(3 frac(q 3^n / 256))`).
fn tq1_trit(b: &BlockTq1_0, k: usize) -> i64 {
    let (q, n) = match k {
        0..160 => (b.qs[k % 32], k / 32),
        160..240 => (b.qs[32 + (k - 160) % 16], (k - 160) / 16),
        _ => (b.qh[(k - 240) % 4], (k - 240) / 4),
    };
    let frac = u32::from(q) * 3u32.pow(n as u32) % 256;
    i64::from(frac * 3 / 256)
}

/// The 2-bit code (0..=3) of value `k` of a TQ2_0 block.
fn tq2_code(b: &BlockTq2_0, k: usize) -> i64 {
    let (j, l, m) = (k / 128, k % 128 / 32, k % 32);
    i64::from((b.qs[32 * j + m] >> (2 * l)) & 3)
}

fn q8_k_quant(y: &[u8], b: usize, k: usize) -> i64 {
    i64::from(y[b * Q8_K_BYTES + 4 + k] as i8)
}

fn q8_k_scale(y: &[u8], b: usize) -> f32 {
    let o = b * Q8_K_BYTES;
    f32::from_le_bytes(y[o..o + 4].try_into().unwrap())
}

fn q8_k_stored_sum(y: &[u8], b: usize) -> i64 {
    let o = b * Q8_K_BYTES + 4 + QK_K;
    (0..16)
        .map(|k| i64::from(i16::from_le_bytes([y[o + 2 * k], y[o + 2 * k + 1]])))
        .sum()
}

/// Per block: `(dx * dy, s, magnitude)` for `t(b, k)` the trit or code of
/// value `k`: `s = sum (t - 1) q` (ggml's generic code) when `generic`,
/// else `sum t q - sum bsums` with `y`'s stored block sums.
fn terms<B>(
    x: &[B],
    y: &[u8],
    generic: bool,
    d: impl Fn(&B) -> f16,
    t: impl Fn(&B, usize) -> i64,
) -> Terms {
    x.iter()
        .enumerate()
        .map(|(b, xb)| {
            let off = if generic { 1 } else { 0 };
            let (mut s, mut a) = (0i64, 0i64);
            for k in 0..QK_K {
                let p = (t(xb, k) - off) * q8_k_quant(y, b, k);
                s += p;
                a += p.abs();
            }
            if !generic {
                let bs = q8_k_stored_sum(y, b);
                s -= bs;
                a += bs.abs();
            }
            (f64::from(d(xb).to_f32() * q8_k_scale(y, b)), s, a)
        })
        .collect()
}

type Terms = Vec<(f64, i64, i64)>;

fn tq1_dot(
    name: &str,
    x: &[BlockTq1_0],
    y: &[u8],
    generic: bool,
    exact: bool,
) -> Result<(), TestCaseError> {
    let terms = terms(x, y, generic, |b| b.d, tq1_trit);
    check_dot(
        name,
        x,
        y,
        &terms,
        exact,
        iquants::vec_dot_tq1_0_q8_k,
        dispatch::vec_dot_tq1_0_q8_k_at,
    )
}

fn tq2_dot(
    name: &str,
    x: &[BlockTq2_0],
    y: &[u8],
    generic: bool,
    exact: bool,
) -> Result<(), TestCaseError> {
    let terms = terms(x, y, generic, |b| b.d, tq2_code);
    check_dot(
        name,
        x,
        y,
        &terms,
        exact,
        iquants::vec_dot_tq2_0_q8_k,
        dispatch::vec_dot_tq2_0_q8_k_at,
    )
}

fn tq1_dequant(name: &str, x: &[BlockTq1_0]) -> Result<(), TestCaseError> {
    check_dequant(
        name,
        x,
        QK_K,
        iquants::dequantize_row_tq1_0,
        dispatch::dequantize_row_tq1_0_at,
    )
}

fn tq2_dequant(name: &str, x: &[BlockTq2_0]) -> Result<(), TestCaseError> {
    check_dequant(
        name,
        x,
        QK_K,
        iquants::dequantize_row_tq2_0,
        dispatch::dequantize_row_tq2_0_at,
    )
}

/// Raw `block_q8_K` bytes with scale `d`, quants `qs` (256 per block) and
/// `bsums` that are NOT the quants' sums (`bsum` for every group): the dots
/// must subtract these, not the quants' sums.
fn q8_k_raw(d: f32, qs: &[i8], bsum: i16) -> Vec<u8> {
    q8_k_with(d, qs, |_| bsum)
}

/// Raw `block_q8_K` bytes whose `bsums` are the quants' own sums (as every
/// quantizer writes them).
fn q8_k_own(d: f32, qs: &[i8]) -> Vec<u8> {
    q8_k_with(d, qs, |g| g.iter().map(|&q| i16::from(q)).sum())
}

fn q8_k_with(d: f32, qs: &[i8], bsum: impl Fn(&[i8]) -> i16) -> Vec<u8> {
    let mut out = vec![];
    for c in qs.chunks_exact(QK_K) {
        out.extend_from_slice(&d.to_le_bytes());
        out.extend(c.iter().map(|&q| q as u8));
        for g in c.chunks_exact(16) {
            out.extend_from_slice(&bsum(g).to_le_bytes());
        }
    }
    out
}

// ------------------------------------------------------------------- inputs

fn value() -> impl Strategy<Value = f32> {
    prop_oneof![
        6 => -1.0f32..1.0,
        3 => -65504.0f32..65504.0,
        1 => proptest::num::f32::SUBNORMAL | proptest::num::f32::ZERO,
        1 => proptest::num::f32::NORMAL,
        1 => Just(65504.0f32),
    ]
}

/// A row of `1..=max_blocks` blocks of 256 values.
fn row(max_blocks: usize) -> impl Strategy<Value = Vec<f32>> {
    (1..=max_blocks).prop_flat_map(|nb| proptest::collection::vec(value(), nb * QK_K))
}

fn extreme_i8() -> impl Strategy<Value = i8> {
    prop_oneof![3 => any::<i8>(), 1 => Just(i8::MIN), 1 => Just(i8::MAX)]
}

/// Bytes with the trit thresholds' neighbours (85, 86, 170, 171) and the
/// extremes over-represented.
fn extreme_u8() -> impl Strategy<Value = u8> {
    prop_oneof![
        4 => any::<u8>(),
        1 => Just(0xFF),
        1 => Just(0x00),
        1 => Just(0x80),
        1 => prop::sample::select(vec![85u8, 86, 170, 171, 242, 243]),
    ]
}

/// Every level's quantizers (row and `quantize_tq*` forms, also from an
/// unaligned copy) against the scalar references, byte for byte.
fn check_quantizers(x: &[f32]) -> Result<(Vec<BlockTq1_0>, Vec<BlockTq2_0>), TestCaseError> {
    let w = vec![1.0f32; QK_K];
    let t1 = check_quantizer(
        "tq1_0",
        x,
        QK_K,
        iquants::quantize_row_tq1_0_ref,
        dispatch::quantize_row_tq1_0_at,
        dispatch::quantize_tq1_0_at,
        QK_K,
        &w,
    )?;
    let t2 = check_quantizer(
        "tq2_0",
        x,
        QK_K,
        iquants::quantize_row_tq2_0_ref,
        dispatch::quantize_row_tq2_0_at,
        dispatch::quantize_tq2_0_at,
        QK_K,
        &w,
    )?;
    Ok((t1, t2))
}

/// `x` quantized to both types (every level's quantizer checked against
/// the scalar reference) and `y` to Q8_K (consistent `bsums`), then the
/// dequantizers and dots checked.
fn quantized_rows(x: &[f32], y: &[f32]) -> Result<(), TestCaseError> {
    let n = x.len();
    let (t1, t2) = check_quantizers(x)?;
    tq1_dequant("tq1_0", &t1)?;
    tq2_dequant("tq2_0", &t2)?;
    let mut yk = vec![BlockQ8K::zeroed(); n / QK_K];
    kquants::quantize_row_q8_k_ref(y, &mut yk).unwrap();
    // ggml's generic sums: the quantizer's `bsums` are the quants' sums.
    tq1_dot("tq1_0", &t1, bytemuck::cast_slice(&yk), true, false)?;
    tq2_dot("tq2_0", &t2, bytemuck::cast_slice(&yk), true, false)?;
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// Random rows of 1 to 4 blocks.
    #[test]
    fn tern_quantized_rows_match_scalar(
        (x, y) in row(4).prop_flat_map(|x| {
            let n = x.len();
            (Just(x), proptest::collection::vec(value(), n))
        }),
    ) {
        quantized_rows(&x, &y)?;
    }

    /// Arbitrary block bytes (NaN, infinite and subnormal scales included)
    /// dequantize identically, and dot within the magnitude's tolerance:
    /// ggml's generic sums against partners with their own `bsums`,
    /// `sum t q - sum bsums` against arbitrary ones.
    #[test]
    fn tern_raw_blocks_match_scalar(
        xb in proptest::collection::vec(extreme_u8(), 0..=9 * TQ2_BYTES),
        yq in proptest::collection::vec(extreme_i8(), 11 * QK_K),
        dy in prop_oneof![-4.0f32..4.0, Just(f32::INFINITY), Just(f32::NAN), Just(1e-40f32)],
        bsum in any::<i16>(),
    ) {
        let t1 = tq1_blocks(&xb);
        let t2 = tq2_blocks(&xb);
        tq1_dequant("raw tq1_0", &t1)?;
        tq2_dequant("raw tq2_0", &t2)?;
        let (y1, y2) = (&yq[..QK_K * t1.len()], &yq[..QK_K * t2.len()]);
        tq1_dot("raw tq1_0", &t1, &q8_k_raw(dy, y1, bsum), false, false)?;
        tq2_dot("raw tq2_0", &t2, &q8_k_raw(dy, y2, bsum), false, false)?;
        tq1_dot("raw tq1_0, own bsums", &t1, &q8_k_own(dy, y1), true, false)?;
        tq2_dot("raw tq2_0, own bsums", &t2, &q8_k_own(dy, y2), true, false)?;
    }

    /// With unit scales every partial sum is an integer below 2^24 (at most
    /// `16 * (256 * 3 * 128 + 16 * 32768)`), so the dots are exact: any trit
    /// bytes, any quants (-128 included), any `bsums`.
    #[test]
    fn tern_integer_dots_are_exact(
        nb in 1usize..=16,
        xb in proptest::collection::vec(extreme_u8(), 32 * TQ2_BYTES),
        yq in proptest::collection::vec(extreme_i8(), 32 * QK_K),
        neg in any::<bool>(),
        bsum in any::<i16>(),
    ) {
        let one = if neg { -f16::ONE } else { f16::ONE };
        let mut t1 = tq1_blocks(&xb[..TQ1_BYTES * nb]);
        t1.iter_mut().for_each(|b| b.d = one);
        let mut t2 = tq2_blocks(&xb[..TQ2_BYTES * nb]);
        t2.iter_mut().for_each(|b| b.d = one);
        let y = q8_k_raw(1.0, &yq[..QK_K * nb], bsum);
        tq1_dot("int tq1_0", &t1, &y, false, true)?;
        tq2_dot("int tq2_0", &t2, &y, false, true)?;
    }
}

/// Blocks of one repeated byte (every byte value) against quants of -128,
/// 127 and -1, with unit, maximal (65504), subnormal, infinite and NaN
/// scales.
#[test]
fn tern_extreme_blocks() {
    let scales = [
        f16::ONE,
        f16::MAX,
        f16::from_bits(0x0001),
        f16::INFINITY,
        f16::from_bits(0xFFFF),
    ];
    for byte in 0..=255u8 {
        for yq in [i8::MIN, i8::MAX, -1] {
            for nb in [1, 3] {
                let ctx = format!("byte {byte:#x}, quant {yq}, {nb} blocks");
                let y = q8_k_raw(1.0, &vec![yq; QK_K * nb], 0);
                for d in scales {
                    let exact = d == f16::ONE;
                    let t1: Vec<BlockTq1_0> = (0..nb)
                        .map(|_| BlockTq1_0 {
                            qs: [byte; 48],
                            qh: [byte; 4],
                            d,
                        })
                        .collect();
                    let t2: Vec<BlockTq2_0> =
                        (0..nb).map(|_| BlockTq2_0 { qs: [byte; 64], d }).collect();
                    tq1_dot("tq1_0", &t1, &y, false, exact)
                        .unwrap_or_else(|e| panic!("{ctx}: {e}"));
                    tq2_dot("tq2_0", &t2, &y, false, exact)
                        .unwrap_or_else(|e| panic!("{ctx}: {e}"));
                    tq1_dequant("tq1_0", &t1).unwrap_or_else(|e| panic!("{ctx}: {e}"));
                    tq2_dequant("tq2_0", &t2).unwrap_or_else(|e| panic!("{ctx}: {e}"));
                }
            }
        }
    }
}

/// Long rows (many blocks, 1 << 14 values), and the adversarial rows:
/// constant, zero, single spikes, the rounding midpoints `k / 2`.
#[test]
fn tern_long_and_adversarial_rows_match_scalar() {
    let n = 1 << 14;
    let x: Vec<f32> = (0..n)
        .map(|i| ((i as f32) * 0.618).sin() * (1.0 + (i % 97) as f32))
        .collect();
    let y: Vec<f32> = (0..n).map(|i| ((i as f32) * 0.37).cos()).collect();
    quantized_rows(&x, &y).unwrap();
    let m = 4 * QK_K;
    let mut spike = vec![0.0f32; m];
    spike[7] = -3.0;
    spike[300] = 1e-30;
    let halves: Vec<f32> = (0..m).map(|i| (i % 5) as f32 * 0.5 - 1.0).collect();
    for (name, x) in [
        ("zero", vec![0.0f32; m]),
        ("constant", vec![-2.5f32; m]),
        ("spike", spike),
        ("halves", halves),
        ("tiny", vec![1e-40f32; m]),
    ] {
        quantized_rows(&x, &y[..m]).unwrap_or_else(|e| panic!("{name}: {e}"));
    }
}

/// Blocks whose TQ1_0 bytes take every base-3 value 0..=242 (each value's
/// trits as `t - 1` at unit scale), and rows of exact halves of the block
/// maximum (`lroundf` rounds them away from zero), of subnormals (`1 /
/// amax` overflows) and of signed zeros.
#[test]
fn tern_quantizer_corner_rows() {
    let nb = 8;
    let mut x = vec![0f32; nb * QK_K];
    for (b, x) in x.chunks_exact_mut(QK_K).enumerate() {
        // Part 1: byte m from values m + 32 n, the first trit most
        // significant.
        for m in 0..32 {
            let q = (32 * b + m) % 243;
            for n in 0..5 {
                let t = q / 3usize.pow(4 - n as u32) % 3;
                x[m + 32 * n] = t as f32 - 1.0;
            }
        }
        x[160] = 1.0;
    }
    check_quantizers(&x).unwrap();
    let halves: Vec<f32> = (0..2 * QK_K)
        .map(|i| [0.5f32, -0.5, 1.0, -1.0, 0.25, -0.75, 0.4999999, -0.5000001][i % 8])
        .collect();
    let scaled: Vec<f32> = halves.iter().map(|v| v * 3.0e-3).collect();
    let sub: Vec<f32> = (0..2 * QK_K)
        .map(|i| f32::from_bits(i as u32 % 7) * if i % 3 == 0 { -1.0 } else { 1.0 })
        .collect();
    let zeros: Vec<f32> = (0..QK_K)
        .map(|i| if i % 2 == 0 { 0.0 } else { -0.0 })
        .collect();
    let max: Vec<f32> = (0..QK_K)
        .map(|i| f32::MAX / 2.0 * ((i % 5) as f32 - 2.0))
        .collect();
    for (name, x) in [
        ("halves", halves),
        ("scaled halves", scaled),
        ("subnormal", sub),
        ("zeros", zeros),
        ("max", max),
    ] {
        check_quantizers(&x).unwrap_or_else(|e| panic!("{name}: {e}"));
    }
    // A non-finite value: the scalar error at every level, nothing written.
    let mut bad = vec![0.5f32; QK_K];
    bad[77] = f32::NAN;
    for level in levels() {
        let mut g = vec![BlockTq1_0::zeroed(); 1];
        assert!(matches!(
            dispatch::quantize_row_tq1_0_at(level, &bad, &mut g),
            Err(QuantError::NonFiniteInput { index: 77, .. })
        ));
        assert_eq!(g, vec![BlockTq1_0::zeroed(); 1]);
        assert!(matches!(
            dispatch::quantize_tq2_0_at(level, &bad, &mut [BlockTq2_0::zeroed(); 1], QK_K, None),
            Err(QuantError::NonFiniteInput { index: 77, .. })
        ));
        assert_eq!(
            dispatch::quantize_tq2_0_at(level, &bad[..100], &mut [], 100, None),
            iquants::quantize_tq2_0(&bad[..100], &mut [], 100, None)
        );
    }
}

/// Wrong lengths give the scalar function's typed error at every level, and
/// the default-level entry points and the byte-level API agree.
#[test]
fn tern_errors_match_scalar_at_every_level() {
    let t1 = [BlockTq1_0::zeroed(); 2];
    let t2 = [BlockTq2_0::zeroed(); 2];
    for level in levels() {
        for n in [0, 511, 513, 256] {
            let got = dispatch::dequantize_row_tq1_0_at(level, &t1, &mut vec![0.0; n]);
            assert!(
                matches!(got, Err(QuantError::BufferLength { .. })),
                "{got:?}"
            );
            assert_eq!(got, iquants::dequantize_row_tq1_0(&t1, &mut vec![0.0; n]));
            let got = dispatch::dequantize_row_tq2_0_at(level, &t2, &mut vec![0.0; n]);
            assert!(
                matches!(got, Err(QuantError::BufferLength { .. })),
                "{got:?}"
            );
            assert_eq!(got, iquants::dequantize_row_tq2_0(&t2, &mut vec![0.0; n]));
        }
        for n in [0, 291, 2 * 292 - 1, 2 * 292 + 1, 3 * 292] {
            let y = vec![0u8; n];
            assert_length_error(
                dispatch::vec_dot_tq1_0_q8_k_at(level, &t1, &y),
                iquants::vec_dot_tq1_0_q8_k(&t1, &y),
            );
            assert_length_error(
                dispatch::vec_dot_tq2_0_q8_k_at(level, &t2, &y),
                iquants::vec_dot_tq2_0_q8_k(&t2, &y),
            );
        }
        // Empty rows are fine and zero.
        assert_eq!(dispatch::vec_dot_tq1_0_q8_k_at(level, &[], &[]), Ok(0.0));
        assert_eq!(dispatch::vec_dot_tq2_0_q8_k_at(level, &[], &[]), Ok(0.0));
        assert_eq!(
            dispatch::dequantize_row_tq1_0_at(level, &[], &mut []),
            Ok(())
        );
        assert_eq!(
            dispatch::dequantize_row_tq2_0_at(level, &[], &mut []),
            Ok(())
        );
    }
    let x: Vec<f32> = (0..2 * QK_K).map(|i| (i as f32 * 0.37).cos()).collect();
    let mut yk = vec![BlockQ8K::zeroed(); 2];
    kquants::quantize_row_q8_k_ref(&x, &mut yk).unwrap();
    let yk: &[u8] = bytemuck::cast_slice(&yk);
    let mut q1 = vec![BlockTq1_0::zeroed(); 2];
    iquants::quantize_row_tq1_0_ref(&x, &mut q1).unwrap();
    let mut q2 = vec![BlockTq2_0::zeroed(); 2];
    iquants::quantize_row_tq2_0_ref(&x, &mut q2).unwrap();
    for (dtype, want, got, xb) in [
        (
            weightkit_core::DType::TQ1_0,
            iquants::vec_dot_tq1_0_q8_k(&q1, yk).unwrap(),
            dispatch::vec_dot_tq1_0_q8_k(&q1, yk).unwrap(),
            bytemuck::cast_slice::<_, u8>(&q1),
        ),
        (
            weightkit_core::DType::TQ2_0,
            iquants::vec_dot_tq2_0_q8_k(&q2, yk).unwrap(),
            dispatch::vec_dot_tq2_0_q8_k(&q2, yk).unwrap(),
            bytemuck::cast_slice::<_, u8>(&q2),
        ),
    ] {
        let api = weightkit_quant::api::vec_dot(dtype, xb, yk).unwrap();
        assert!(
            (got - want).abs() <= 1e-4 * want.abs().max(1.0),
            "{dtype:?}: {got} vs {want}"
        );
        assert_eq!(api.to_bits(), got.to_bits(), "{dtype:?}");
        let mut a = vec![0f32; 2 * QK_K];
        weightkit_quant::api::dequantize(dtype, xb, &mut a).unwrap();
        let mut b = vec![0f32; 2 * QK_K];
        match dtype {
            weightkit_core::DType::TQ1_0 => iquants::dequantize_row_tq1_0(&q1, &mut b).unwrap(),
            _ => iquants::dequantize_row_tq2_0(&q2, &mut b).unwrap(),
        }
        assert_eq!(crate::simd::bits(&a), crate::simd::bits(&b), "{dtype:?}");
    }
}

/// gguf-py's TQ1_0/TQ2_0 bytes and floats (`testdata/gguf/`) from the
/// AVX2 quantizers and dequantizers (the scalar ones where the CPU has no
/// AVX2).
#[test]
fn tern_simd_matches_gguf_py() {
    crate::iquants::check_gguf_quantized::<BlockTq1_0>(
        "TQ1_0",
        QK_K,
        |x, y| dispatch::quantize_row_tq1_0_at(Level::Avx2, x, y),
        |x, y| dispatch::dequantize_row_tq1_0_at(Level::Avx2, x, y),
    );
    crate::iquants::check_gguf_quantized::<BlockTq2_0>(
        "TQ2_0",
        QK_K,
        |x, y| dispatch::quantize_row_tq2_0_at(Level::Avx2, x, y),
        |x, y| dispatch::dequantize_row_tq2_0_at(Level::Avx2, x, y),
    );
}
