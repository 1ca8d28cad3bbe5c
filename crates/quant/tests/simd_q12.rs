//! The Q1_0 and Q2_0 SIMD kernels against their scalar references at every
//! level this CPU supports: quantizers byte for byte (row and matrix forms,
//! aligned and not), dequantizers bit for bit, dot products against the
//! scalar dot and an exact i64 reference (each Q8_0 block's integer sum,
//! from signs and codes decoded here independently), on quantized rows, on
//! arbitrary block bytes (any f16 scale, NaN and infinities included; Q2_0
//! code 3, which the quantizer never writes; Q8_0 quants of -128, which
//! llama.cpp's AVX2 Q1_0 kernel gets wrong) and on adversarial rows.

use bytemuck::Zeroable;
use half::f16;
use proptest::prelude::*;
use weightkit_core::DType;
use weightkit_quant::QuantError;
use weightkit_quant::legacy::{self, BlockQ1_0, BlockQ2_0, BlockQ8_0, QK1_0, QK2_0};
use weightkit_quant::simd::dispatch;

use crate::simd::{assert_length_error, bits, check_dequant, check_quantizer, levels};
use crate::simd_iq4::check_dot;

/// Bytes of one `block_q8_0`.
const Q8_0_BYTES: usize = 34;

// ------------------------------------------------------- exact reference

/// The sign (+1 or -1) of value `k` of a Q1_0 block.
fn q1_sign(b: &BlockQ1_0, k: usize) -> i64 {
    if (b.qs[k / 8] >> (k % 8)) & 1 == 1 {
        1
    } else {
        -1
    }
}

/// The value `c - 1` (-1..=2) of value `k` of a Q2_0 block.
fn q2_value(b: &BlockQ2_0, k: usize) -> i64 {
    i64::from((b.qs[k / 4] >> (2 * (k % 4))) & 3) - 1
}

fn q8_0_quant(y: &[u8], i: usize) -> i64 {
    i64::from(y[i / 32 * Q8_0_BYTES + 2 + i % 32] as i8)
}

fn q8_0_scale(y: &[u8], b: usize) -> f32 {
    let o = b * Q8_0_BYTES;
    f16::from_bits(u16::from_le_bytes([y[o], y[o + 1]])).to_f32()
}

/// Per Q8_0 block: `(d_x * d_y, sum v q, sum |v q|)` for `v(b, k)` the
/// value of element `k` of block `b` (`qk` per block).
fn terms<B>(
    x: &[B],
    y: &[u8],
    qk: usize,
    d: impl Fn(&B) -> f16,
    v: impl Fn(&B, usize) -> i64,
) -> Vec<(f64, i64, i64)> {
    let mut out = vec![];
    for (b, xb) in x.iter().enumerate() {
        for k8 in 0..qk / 32 {
            let (mut s, mut a) = (0i64, 0i64);
            for j in 0..32 {
                let p = v(xb, 32 * k8 + j) * q8_0_quant(y, qk * b + 32 * k8 + j);
                s += p;
                a += p.abs();
            }
            let yb = qk / 32 * b + k8;
            out.push((
                f64::from(d(xb).to_f32()) * f64::from(q8_0_scale(y, yb)),
                s,
                a,
            ));
        }
    }
    out
}

fn q1_dot(name: &str, x: &[BlockQ1_0], y: &[u8], exact: bool) -> Result<(), TestCaseError> {
    let t = terms(x, y, QK1_0, |b| b.d, q1_sign);
    check_dot(
        name,
        x,
        y,
        &t,
        exact,
        legacy::vec_dot_q1_0_q8_0,
        dispatch::vec_dot_q1_0_q8_0_at,
    )
}

fn q2_dot(name: &str, x: &[BlockQ2_0], y: &[u8], exact: bool) -> Result<(), TestCaseError> {
    let t = terms(x, y, QK2_0, |b| b.d, q2_value);
    check_dot(
        name,
        x,
        y,
        &t,
        exact,
        legacy::vec_dot_q2_0_q8_0,
        dispatch::vec_dot_q2_0_q8_0_at,
    )
}

fn q1_dequant(name: &str, x: &[BlockQ1_0]) -> Result<(), TestCaseError> {
    check_dequant(
        name,
        x,
        QK1_0,
        legacy::dequantize_row_q1_0,
        dispatch::dequantize_row_q1_0_at,
    )
}

fn q2_dequant(name: &str, x: &[BlockQ2_0]) -> Result<(), TestCaseError> {
    check_dequant(
        name,
        x,
        QK2_0,
        legacy::dequantize_row_q2_0,
        dispatch::dequantize_row_q2_0_at,
    )
}

/// Raw `block_q8_0` bytes: scale `d` (f16 bits) for every block, quants
/// `qs` (32 per block).
fn q8_0_raw(d: u16, qs: &[i8]) -> Vec<u8> {
    let mut out = vec![];
    for c in qs.chunks_exact(32) {
        out.extend_from_slice(&d.to_le_bytes());
        out.extend(c.iter().map(|&q| q as u8));
    }
    out
}

/// `y` quantized to Q8_0 by the scalar reference, as raw bytes.
fn q8_0_of(y: &[f32]) -> Vec<u8> {
    let mut b = vec![BlockQ8_0::zeroed(); y.len() / 32];
    legacy::quantize_row_q8_0_ref(y, &mut b).unwrap();
    bytemuck::cast_slice(&b).to_vec()
}

// ------------------------------------------------------------------- inputs

fn value() -> impl Strategy<Value = f32> {
    prop_oneof![
        6 => -1.0f32..1.0,
        3 => -65504.0f32..65504.0,
        1 => proptest::num::f32::SUBNORMAL | proptest::num::f32::ZERO,
        1 => proptest::num::f32::NORMAL,
        1 => Just(65504.0f32),
        1 => prop::sample::select(vec![0.5f32, -0.5, 1.0, -1.0, 0.0, -0.0]),
    ]
}

fn extreme_i8() -> impl Strategy<Value = i8> {
    prop_oneof![3 => any::<i8>(), 1 => Just(i8::MIN), 1 => Just(i8::MAX)]
}

fn extreme_u8() -> impl Strategy<Value = u8> {
    prop_oneof![4 => any::<u8>(), 1 => Just(0xFF), 1 => Just(0x00), 1 => Just(0xAA)]
}

/// Any f16 bits, with the specials over-represented.
fn any_f16() -> impl Strategy<Value = u16> {
    prop_oneof![
        4 => any::<u16>(),
        1 => prop::sample::select(vec![0x0000u16, 0x8000, 0x7C00, 0xFC00, 0x7E00, 0x0001, 0x7BFF, 0x3C00]),
    ]
}

/// Every level's quantizers (row and matrix forms, also from an unaligned
/// copy, with and without importance) against the scalar references, byte
/// for byte. Returns the scalar blocks.
fn check_quantizers(x: &[f32]) -> Result<(Vec<BlockQ1_0>, Vec<BlockQ2_0>), TestCaseError> {
    let w = vec![0.5f32; QK1_0];
    let q1 = check_quantizer(
        "q1_0",
        x,
        QK1_0,
        legacy::quantize_row_q1_0_ref,
        dispatch::quantize_row_q1_0_at,
        dispatch::quantize_q1_0_at,
        QK1_0,
        &w,
    )?;
    let q2 = check_quantizer(
        "q2_0",
        x,
        QK2_0,
        legacy::quantize_row_q2_0_ref,
        dispatch::quantize_row_q2_0_at,
        dispatch::quantize_q2_0_at,
        QK1_0,
        &w,
    )?;
    Ok((q1, q2))
}

/// `x` through every quantizer, dequantizer and dot (partner: `y` in Q8_0).
fn quantized_rows(x: &[f32], y: &[f32]) -> Result<(), TestCaseError> {
    let (q1, q2) = check_quantizers(x)?;
    q1_dequant("q1_0", &q1)?;
    q2_dequant("q2_0", &q2)?;
    let yq = q8_0_of(y);
    q1_dot("q1_0 x q8_0", &q1, &yq, false)?;
    q2_dot("q2_0 x q8_0", &q2, &yq, false)?;
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn q12_quantized_rows_match_scalar(
        (x, y) in (1usize..=17).prop_flat_map(|nb| (
            proptest::collection::vec(value(), nb * QK1_0),
            proptest::collection::vec(-1.0f32..1.0, nb * QK1_0),
        ))
    ) {
        quantized_rows(&x, &y)?;
    }

    #[test]
    fn q12_raw_blocks_match_scalar(
        (dx, qx, dy, qy) in (1usize..=9).prop_flat_map(|nb| (
            proptest::collection::vec(any_f16(), 2 * nb),
            proptest::collection::vec(extreme_u8(), 32 * nb),
            any_f16(),
            proptest::collection::vec(extreme_i8(), QK1_0 * nb),
        ))
    ) {
        let nb = dx.len() / 2;
        let q1: Vec<BlockQ1_0> = (0..nb)
            .map(|b| BlockQ1_0 {
                d: f16::from_bits(dx[b]),
                qs: qx[32 * b..32 * b + 16].try_into().unwrap(),
            })
            .collect();
        let q2: Vec<BlockQ2_0> = (0..2 * nb)
            .map(|b| BlockQ2_0 {
                d: f16::from_bits(dx[b]),
                qs: qx[16 * b..16 * b + 16].try_into().unwrap(),
            })
            .collect();
        q1_dequant("raw q1_0", &q1)?;
        q2_dequant("raw q2_0", &q2)?;
        let y = q8_0_raw(dy, &qy);
        q1_dot("raw q1_0 x q8_0", &q1, &y, false)?;
        q2_dot("raw q2_0 x q8_0", &q2, &y, false)?;
    }

    /// Scales of one: every partial sum is an integer f32 holds, so every
    /// level must give the exact dot bit for bit.
    #[test]
    fn q12_integer_dots_are_exact(
        (qx, qy) in (1usize..=9).prop_flat_map(|nb| (
            proptest::collection::vec(extreme_u8(), 32 * nb),
            proptest::collection::vec(extreme_i8(), QK1_0 * nb),
        ))
    ) {
        let nb = qx.len() / 32;
        let one = f16::from_f32(1.0);
        let q1: Vec<BlockQ1_0> = (0..nb)
            .map(|b| BlockQ1_0 { d: one, qs: qx[32 * b..32 * b + 16].try_into().unwrap() })
            .collect();
        let q2: Vec<BlockQ2_0> = (0..2 * nb)
            .map(|b| BlockQ2_0 { d: one, qs: qx[16 * b..16 * b + 16].try_into().unwrap() })
            .collect();
        let y = q8_0_raw(one.to_bits(), &qy);
        q1_dot("integer q1_0", &q1, &y, true)?;
        q2_dot("integer q2_0", &q2, &y, true)?;
    }
}

/// All-extreme blocks: every sign or code against all -128 or all 127
/// quants (the wrap in llama.cpp's AVX2 Q1_0 kernel), exact.
#[test]
fn q12_extreme_blocks() {
    let one = f16::from_f32(1.0);
    for qb in [0x00u8, 0xFF, 0xAA, 0x55, 0x0F, 0xF0] {
        for qv in [i8::MIN, i8::MAX, -1, 0] {
            for nb in [1usize, 2, 3, 8, 9] {
                let q1 = vec![
                    BlockQ1_0 {
                        d: one,
                        qs: [qb; 16]
                    };
                    nb
                ];
                let q2 = vec![
                    BlockQ2_0 {
                        d: one,
                        qs: [qb; 16]
                    };
                    2 * nb
                ];
                let y = q8_0_raw(one.to_bits(), &vec![qv; QK1_0 * nb]);
                q1_dot("extreme q1_0", &q1, &y, true).unwrap();
                q2_dot("extreme q2_0", &q2, &y, true).unwrap();
                q1_dequant("extreme q1_0", &q1).unwrap();
                q2_dequant("extreme q2_0", &q2).unwrap();
            }
        }
    }
}

/// Long rows and adversarial ones: zeros, negative zeros, subnormals (whose
/// inverse overflows), the largest finite values (whose Q1_0 sums overflow
/// to infinity), exact halves of the maximum (roundf's ties), alternating
/// signs, constant blocks.
#[test]
fn q12_long_and_adversarial_rows_match_scalar() {
    let n = 4096;
    let cos: Vec<f32> = (0..n).map(|i| 0.1 + 2.0 * (i as f32).cos()).collect();
    let sin: Vec<f32> = (0..n).map(|i| (i as f32 * 0.7).sin()).collect();
    quantized_rows(&cos, &sin).unwrap();
    let rows: Vec<Vec<f32>> = vec![
        vec![0.0; n],
        vec![-0.0; n],
        (0..n)
            .map(|i| if i % 2 == 0 { 0.0 } else { -0.0 })
            .collect(),
        vec![f32::MAX; n],
        (0..n)
            .map(|i| if i % 3 == 0 { -f32::MAX } else { f32::MAX })
            .collect(),
        (0..n).map(|i| f32::from_bits(1 + i as u32 % 7)).collect(),
        (0..n)
            .map(|i| -f32::from_bits(0x0000_1000 * (1 + i as u32 % 5)))
            .collect(),
        (0..n)
            .map(|i| f32::from_bits(0x0040_0000 + i as u32))
            .collect(),
        (0..n).map(|i| [1.0, 0.5, -0.5, 0.0, -1.0][i % 5]).collect(),
        (0..n)
            .map(|i| [3.0, 1.5, -1.5, 0.75, -0.75][i % 5])
            .collect(),
        (0..n)
            .map(|i| {
                [
                    1.0,
                    f32::from_bits(0x3eff_ffff),
                    -f32::from_bits(0x3eff_ffff),
                ][i % 3]
            })
            .collect(),
        (0..n)
            .map(|i| if i % 2 == 0 { 65504.0 } else { -65504.0 })
            .collect(),
        (0..n).map(|i| 1e30 * ((i % 13) as f32 - 6.0)).collect(),
        vec![7.25; n],
    ];
    for x in &rows {
        quantized_rows(x, &sin).unwrap();
        // Shorter rows too (the Q1_0 quantizer's tail of fewer than eight
        // blocks), and an odd number of Q2_0 blocks.
        quantized_rows(&x[..3 * QK1_0], &sin[..3 * QK1_0]).unwrap();
        let (_, q2) = check_quantizers(&x[..9 * QK1_0]).unwrap();
        q2_dequant("q2_0 tail", &q2).unwrap();
    }
    // An odd number of Q2_0 blocks.
    let x = &cos[..3 * QK2_0];
    let mut want = vec![BlockQ2_0::zeroed(); 3];
    legacy::quantize_row_q2_0_ref(x, &mut want).unwrap();
    for level in levels() {
        let mut got = vec![BlockQ2_0::zeroed(); 3];
        dispatch::quantize_row_q2_0_at(level, x, &mut got).unwrap();
        assert_eq!(got, want, "{level:?}");
    }
}

/// The quantizers' corner cases against the formulas: Q1_0's scale is the
/// mean |x| and its bits `x >= 0`; Q2_0's codes round halves away from zero,
/// and a subnormal maximum (1 / amax overflows) gives code 0 everywhere.
#[test]
fn q12_quantizer_formulas() {
    let mut x = vec![0.0f32; QK1_0];
    x[0] = -0.0;
    x[1] = -2.0;
    x[2] = 6.0;
    for level in levels() {
        let mut q1 = [BlockQ1_0::zeroed()];
        dispatch::quantize_row_q1_0_at(level, &x, &mut q1).unwrap();
        assert_eq!(q1[0].d, f16::from_f32(8.0 / 128.0), "{level:?}");
        assert_eq!(q1[0].qs[0], 0b1111_1101, "{level:?}");
        assert!(q1[0].qs[1..].iter().all(|&b| b == 0xFF), "{level:?}");

        let mut x2 = vec![0.0f32; QK2_0];
        x2[..6].copy_from_slice(&[2.0, 1.0, -1.0, 0.99, -0.99, -2.0]);
        let mut q2 = [BlockQ2_0::zeroed()];
        dispatch::quantize_row_q2_0_at(level, &x2, &mut q2).unwrap();
        assert_eq!(q2[0].d, f16::from_f32(2.0), "{level:?}");
        // codes 2, 2 (0.5 rounds up), 0 (-0.5 down), 1, 1, 0; the rest 1.
        assert_eq!(q2[0].qs[0], 2 | (2 << 2) | (1 << 6), "{level:?}");
        assert_eq!(q2[0].qs[1], 1 | (1 << 4) | (1 << 6), "{level:?}");

        let tiny = vec![f32::from_bits(3); QK2_0];
        dispatch::quantize_row_q2_0_at(level, &tiny, &mut q2).unwrap();
        assert_eq!(q2[0].qs, [0; 16], "{level:?}");
        let zeros = vec![0.0f32; QK2_0];
        dispatch::quantize_row_q2_0_at(level, &zeros, &mut q2).unwrap();
        assert_eq!(q2[0].qs, [0x55; 16], "{level:?}");
        assert_eq!(q2[0].d.to_bits(), 0, "{level:?}");
    }
}

/// Wrong lengths and non-finite values give the scalar function's typed
/// error at every level, and the byte-level API agrees with the dispatch
/// entry points.
#[test]
fn q12_errors_match_scalar_at_every_level() {
    let q1 = [BlockQ1_0::zeroed(); 2];
    let q2 = [BlockQ2_0::zeroed(); 2];
    for level in levels() {
        for n in [0, 255, 257, 128] {
            assert_length_error(
                dispatch::dequantize_row_q1_0_at(level, &q1, &mut vec![0.0; n]),
                legacy::dequantize_row_q1_0(&q1, &mut vec![0.0; n]),
            );
        }
        for n in [0, 127, 129, 64] {
            assert_length_error(
                dispatch::dequantize_row_q2_0_at(level, &q2, &mut vec![0.0; n]),
                legacy::dequantize_row_q2_0(&q2, &mut vec![0.0; n]),
            );
        }
        for n in [0, 135, 271, 273, 136] {
            let y = vec![0u8; n];
            assert_length_error(
                dispatch::vec_dot_q1_0_q8_0_at(level, &q1, &y),
                legacy::vec_dot_q1_0_q8_0(&q1, &y),
            );
        }
        for n in [0, 67, 135, 137, 68] {
            let y = vec![0u8; n];
            assert_length_error(
                dispatch::vec_dot_q2_0_q8_0_at(level, &q2, &y),
                legacy::vec_dot_q2_0_q8_0(&q2, &y),
            );
        }
        assert_eq!(dispatch::vec_dot_q1_0_q8_0_at(level, &[], &[]), Ok(0.0));
        assert_eq!(dispatch::vec_dot_q2_0_q8_0_at(level, &[], &[]), Ok(0.0));
        // Quantizer errors: a partial block, a wrong destination, NaN and
        // infinity, a bad importance vector; nothing written.
        let mut x = vec![0.25f32; 2 * QK1_0];
        for (xl, yl) in [(2 * QK1_0 - 1, 2), (2 * QK1_0, 1), (2 * QK1_0, 3)] {
            let mut got = vec![BlockQ1_0::zeroed(); yl];
            let mut want = got.clone();
            assert_eq!(
                dispatch::quantize_row_q1_0_at(level, &x[..xl], &mut got),
                legacy::quantize_row_q1_0_ref(&x[..xl], &mut want)
            );
            assert!(legacy::quantize_row_q1_0_ref(&x[..xl], &mut want).is_err());
            let mut got = vec![BlockQ2_0::zeroed(); 2 * yl];
            let mut want = got.clone();
            assert_eq!(
                dispatch::quantize_row_q2_0_at(level, &x[..xl], &mut got),
                legacy::quantize_row_q2_0_ref(&x[..xl], &mut want)
            );
        }
        for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
            x[200] = bad;
            let mut got = vec![BlockQ1_0::zeroed(); 2];
            let r = dispatch::quantize_row_q1_0_at(level, &x, &mut got);
            assert!(
                matches!(r, Err(QuantError::NonFiniteInput { index: 200, .. })),
                "{r:?}"
            );
            assert_eq!(got, vec![BlockQ1_0::zeroed(); 2]);
            let mut got = vec![BlockQ2_0::zeroed(); 4];
            let r = dispatch::quantize_q2_0_at(level, &x, &mut got, QK1_0, None);
            assert!(
                matches!(r, Err(QuantError::NonFiniteInput { index: 200, .. })),
                "{r:?}"
            );
            assert_eq!(got, vec![BlockQ2_0::zeroed(); 4]);
        }
        x[200] = 0.0;
        let mut w = vec![1.0f32; QK1_0];
        w[5] = -1.0;
        let mut got = vec![BlockQ1_0::zeroed(); 2];
        let r = dispatch::quantize_q1_0_at(level, &x, &mut got, QK1_0, Some(&w));
        assert!(
            matches!(r, Err(QuantError::InvalidImportance { index: 5, .. })),
            "{r:?}"
        );
        let r = dispatch::quantize_q1_0_at(level, &x, &mut got, QK1_0, Some(&w[..64]));
        assert!(matches!(r, Err(QuantError::BufferLength { .. })), "{r:?}");
        let mut got = vec![BlockQ2_0::zeroed(); 4];
        let r = dispatch::quantize_q2_0_at(level, &x, &mut got, QK1_0, Some(&w));
        assert!(
            matches!(r, Err(QuantError::InvalidImportance { index: 5, .. })),
            "{r:?}"
        );
    }
    // The byte-level API: quantize, dequantize and vec_dot through DType.
    let x: Vec<f32> = (0..2 * QK1_0).map(|i| (i as f32 * 0.37).cos()).collect();
    let yq = q8_0_of(&x);
    for dtype in [DType::Q1_0, DType::Q2_0] {
        assert!(weightkit_quant::can_quantize(dtype) && weightkit_quant::can_dequantize(dtype));
        assert!(!weightkit_quant::uses_importance(dtype));
        assert_eq!(weightkit_quant::vec_dot_type(dtype), Some(DType::Q8_0));
        let q = weightkit_quant::quantize(dtype, &x, QK1_0, None).unwrap();
        let qw = weightkit_quant::quantize(dtype, &x, QK1_0, Some(&[2.0; QK1_0])).unwrap();
        assert_eq!(q, qw, "{dtype:?}: the importance is ignored");
        let mut want_q = vec![0u8; q.len()];
        let mut a = vec![0f32; x.len()];
        let mut b = vec![0f32; x.len()];
        let (want_dot, got_dot) = match dtype {
            DType::Q1_0 => {
                let mut blocks = vec![BlockQ1_0::zeroed(); 2];
                legacy::quantize_row_q1_0_ref(&x, &mut blocks).unwrap();
                want_q.copy_from_slice(bytemuck::cast_slice(&blocks));
                legacy::dequantize_row_q1_0(&blocks, &mut b).unwrap();
                (
                    dispatch::vec_dot_q1_0_q8_0(&blocks, &yq).unwrap(),
                    legacy::vec_dot_q1_0_q8_0(&blocks, &yq).unwrap(),
                )
            }
            _ => {
                let mut blocks = vec![BlockQ2_0::zeroed(); 4];
                legacy::quantize_row_q2_0_ref(&x, &mut blocks).unwrap();
                want_q.copy_from_slice(bytemuck::cast_slice(&blocks));
                legacy::dequantize_row_q2_0(&blocks, &mut b).unwrap();
                (
                    dispatch::vec_dot_q2_0_q8_0(&blocks, &yq).unwrap(),
                    legacy::vec_dot_q2_0_q8_0(&blocks, &yq).unwrap(),
                )
            }
        };
        assert_eq!(q, want_q, "{dtype:?}");
        weightkit_quant::dequantize(dtype, &q, &mut a).unwrap();
        assert_eq!(bits(&a), bits(&b), "{dtype:?}");
        let api = weightkit_quant::vec_dot(dtype, &q, &yq).unwrap();
        assert_eq!(api.to_bits(), want_dot.to_bits(), "{dtype:?}");
        assert!(
            (got_dot - want_dot).abs() <= 1e-4 * want_dot.abs().max(1.0),
            "{dtype:?}: {got_dot} vs {want_dot}"
        );
        // matvec: two rows, each the dot of its row with x in Q8_0.
        let w: Vec<u8> = [q.clone(), q.clone()].concat();
        let mut out = [0f32; 2];
        weightkit_quant::matvec(dtype, &w, 4, QK1_0, &x[..QK1_0], &mut out[..]).unwrap_err();
        let mut out = vec![0f32; 4];
        weightkit_quant::matvec(dtype, &w, 4, QK1_0, &x[..QK1_0], &mut out).unwrap();
        let row = q.len() / 2;
        let want = weightkit_quant::vec_dot(dtype, &q[..row], &yq[..yq.len() / 2]).unwrap();
        assert_eq!(out[0].to_bits(), want.to_bits(), "{dtype:?}");
    }
}
