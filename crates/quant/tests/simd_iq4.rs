//! The IQ4_NL and IQ4_XS SIMD kernels against their scalar references at
//! every level this CPU supports: dequantizers bit for bit, dot products
//! exactly where every partial sum is an integer f32 represents, and within
//! a few ulps of their magnitude otherwise.

use bytemuck::Zeroable;
use half::f16;
use proptest::prelude::*;
use weightkit_quant::QuantError;
use weightkit_quant::iquants::{self, BlockIq4Nl, BlockIq4Xs, grids::KVALUES_IQ4NL};
use weightkit_quant::kquants::{self, BlockQ8K, QK_K};
use weightkit_quant::legacy::{self, BlockQ8_0};
use weightkit_quant::simd::{Level, dispatch};

use crate::simd::{Shifted, assert_length_error, check_dequant, levels};

/// Bytes of one `block_q8_0` and one `block_q8_K`.
const Q8_0_BYTES: usize = 34;
const Q8_K_BYTES: usize = 292;

pub(crate) type DotAt<B> = DotAtOf<B, u8>;
pub(crate) type Dot<B> = DotOf<B, u8>;
/// A dot product of `X` and `Y` blocks, and the same at one level.
pub(crate) type DotOf<X, Y> = fn(&[X], &[Y]) -> Result<f32, QuantError>;
pub(crate) type DotAtOf<X, Y> = fn(Level, &[X], &[Y]) -> Result<f32, QuantError>;

fn nl_blocks(bytes: &[u8]) -> Vec<BlockIq4Nl> {
    bytes
        .chunks_exact(18)
        .map(bytemuck::pod_read_unaligned)
        .collect()
}

fn xs_blocks(bytes: &[u8]) -> Vec<BlockIq4Xs> {
    bytes
        .chunks_exact(136)
        .map(bytemuck::pod_read_unaligned)
        .collect()
}

// ------------------------------------------------------------ dequantizers

// ------------------------------------------------------------ dot products

/// The dot in f64 from each block's exact i64 integer sum and its scale (the
/// scalar code's f32 scale product, which may overflow where an f64 one
/// would not), and its magnitude `sum |scale| * sum |v * q|`.
pub(crate) fn exact_dot(terms: &[(f64, i64, i64)]) -> (f64, f64) {
    let want = terms.iter().map(|&(d, s, _)| d * s as f64).sum();
    let mag = terms.iter().map(|&(d, _, a)| d.abs() * a as f64).sum();
    (want, mag)
}

fn q8_0_quant(y: &[u8], i: usize) -> i64 {
    i64::from(y[i / 32 * Q8_0_BYTES + 2 + i % 32] as i8)
}

fn q8_k_quant(y: &[u8], i: usize) -> i64 {
    i64::from(y[i / QK_K * Q8_K_BYTES + 4 + i % QK_K] as i8)
}

/// Per IQ4_NL block: `(dx * dy, sum v q, sum |v q|)`.
fn nl_terms(x: &[BlockIq4Nl], y: &[u8]) -> Vec<(f64, i64, i64)> {
    x.iter()
        .enumerate()
        .map(|(b, xb)| {
            let yb = &y[b * Q8_0_BYTES..];
            let dy = f16::from_bits(u16::from_le_bytes([yb[0], yb[1]]));
            let (mut s, mut a) = (0i64, 0i64);
            for j in 0..32 {
                let nib = if j < 16 {
                    xb.qs[j] & 15
                } else {
                    xb.qs[j - 16] >> 4
                };
                let p = i64::from(KVALUES_IQ4NL[usize::from(nib)]) * q8_0_quant(y, 32 * b + j);
                s += p;
                a += p.abs();
            }
            (f64::from(dy.to_f32() * xb.d.to_f32()), s, a)
        })
        .collect()
}

/// Per IQ4_XS group of 32: `(dx * dy * (ls - 32), sum v q, sum |v q|)`.
fn xs_terms(x: &[BlockIq4Xs], y: &[u8]) -> Vec<(f64, i64, i64)> {
    let mut out = vec![];
    for (b, xb) in x.iter().enumerate() {
        let yb = &y[b * Q8_K_BYTES..];
        let dy = f32::from_le_bytes(yb[..4].try_into().unwrap());
        for ib in 0..8 {
            let ls = i32::from((xb.scales_l[ib / 2] >> (4 * (ib % 2))) & 15)
                | (i32::from((xb.scales_h >> (2 * ib)) & 3) << 4);
            let (mut s, mut a) = (0i64, 0i64);
            for j in 0..32 {
                let byte = xb.qs[16 * ib + j % 16];
                let nib = if j < 16 { byte & 15 } else { byte >> 4 };
                let p = i64::from(KVALUES_IQ4NL[usize::from(nib)])
                    * q8_k_quant(y, QK_K * b + 32 * ib + j);
                s += p;
                a += p.abs();
            }
            let d = xb.d.to_f32() * dy * (ls - 32) as f32;
            out.push((f64::from(d), s, a));
        }
    }
    out
}

/// Every level's dot (also on unaligned copies) against the scalar one:
/// bit for bit when `exact`, else within `1e-5` of the magnitude; and the
/// scalar one against the exact f64 dot, so that a wrong integer sum in
/// both would be caught too.
#[allow(clippy::too_many_arguments)]
pub(crate) fn check_dot<B: Copy + Zeroable>(
    name: &str,
    x: &[B],
    y: &[u8],
    terms: &[(f64, i64, i64)],
    exact: bool,
    scalar: Dot<B>,
    at: DotAt<B>,
) -> Result<(), TestCaseError> {
    check_exact_dot(name, x, y, exact_dot(terms), scalar, at, exact)
}

/// [`check_dot`] for any operand types, given the exact sum and the
/// magnitude of its terms (`(sum, sum of |terms|)`).
pub(crate) fn check_exact_dot<X: Copy + Zeroable, Y: Copy + Zeroable>(
    name: &str,
    x: &[X],
    y: &[Y],
    (exact_want, mag): (f64, f64),
    scalar: DotOf<X, Y>,
    at: DotAtOf<X, Y>,
    exact: bool,
) -> Result<(), TestCaseError> {
    let want = scalar(x, y).unwrap();
    let check_near = |got: f32, what: &str| -> Result<(), TestCaseError> {
        if mag.is_finite() && mag < 1e37 && exact_want.is_finite() {
            let err = (f64::from(got) - exact_want).abs();
            prop_assert!(
                err <= 1e-5 * mag,
                "{name} {what}: {got} vs exact {exact_want} (magnitude {mag})"
            );
        }
        Ok(())
    };
    check_near(want, "scalar")?;
    if exact {
        prop_assert_eq!(f64::from(want), exact_want, "{} scalar", name);
    }
    let (xs, ys) = (Shifted::new(x), Shifted::new(y));
    for level in levels() {
        for (x, y) in [(x, y), (xs.get(), ys.get())] {
            let got = at(level, x, y).unwrap();
            if level == Level::Scalar || exact {
                prop_assert_eq!(got.to_bits(), want.to_bits(), "{} at {:?}", name, level);
            } else if !want.is_finite() {
                prop_assert!(!got.is_finite(), "{name} at {level:?}: {got} vs {want}");
            } else {
                check_near(got, &format!("at {level:?}"))?;
            }
        }
    }
    Ok(())
}

fn nl_dot(name: &str, x: &[BlockIq4Nl], y: &[u8], exact: bool) -> Result<(), TestCaseError> {
    let terms = nl_terms(x, y);
    check_dot(
        name,
        x,
        y,
        &terms,
        exact,
        iquants::vec_dot_iq4_nl_q8_0,
        dispatch::vec_dot_iq4_nl_q8_0_at,
    )
}

fn xs_dot(name: &str, x: &[BlockIq4Xs], y: &[u8], exact: bool) -> Result<(), TestCaseError> {
    let terms = xs_terms(x, y);
    check_dot(
        name,
        x,
        y,
        &terms,
        exact,
        iquants::vec_dot_iq4_xs_q8_k,
        dispatch::vec_dot_iq4_xs_q8_k_at,
    )
}

/// Raw `block_q8_0` bytes with scale `d` and quants `qs` (32 per block).
pub(crate) fn q8_0_raw(d: f16, qs: &[i8]) -> Vec<u8> {
    let mut out = vec![];
    for c in qs.chunks_exact(32) {
        out.extend_from_slice(&d.to_bits().to_le_bytes());
        out.extend(c.iter().map(|&q| q as u8));
    }
    out
}

/// Raw `block_q8_K` bytes with scale `d`, quants `qs` (256 per block) and
/// zero `bsums` (the IQ4_XS dot does not read them).
fn q8_k_raw(d: f32, qs: &[i8]) -> Vec<u8> {
    let mut out = vec![];
    for c in qs.chunks_exact(QK_K) {
        out.extend_from_slice(&d.to_le_bytes());
        out.extend(c.iter().map(|&q| q as u8));
        out.extend_from_slice(&[0; 32]);
    }
    out
}

// ------------------------------------------------------------------- inputs

pub(crate) fn value() -> impl Strategy<Value = f32> {
    prop_oneof![
        6 => -1.0f32..1.0,
        3 => -65504.0f32..65504.0,
        1 => proptest::num::f32::SUBNORMAL | proptest::num::f32::ZERO,
        1 => proptest::num::f32::NORMAL,
        1 => Just(65504.0f32),
    ]
}

/// A row of `1..=max_blocks` blocks of `block` values.
pub(crate) fn row(block: usize, max_blocks: usize) -> impl Strategy<Value = Vec<f32>> {
    (1..=max_blocks).prop_flat_map(move |nb| proptest::collection::vec(value(), nb * block))
}

pub(crate) fn extreme_i8() -> impl Strategy<Value = i8> {
    prop_oneof![3 => any::<i8>(), 1 => Just(i8::MIN), 1 => Just(i8::MAX)]
}

pub(crate) fn extreme_u8() -> impl Strategy<Value = u8> {
    prop_oneof![3 => any::<u8>(), 1 => Just(0xFF), 1 => Just(0x00), 1 => Just(0x80)]
}

/// `x` (whole IQ4_XS blocks) quantized by both reference quantizers, and a
/// second row quantized to the dot partners, all checked.
fn quantized_rows(x: &[f32], y: &[f32], imatrix: bool) -> Result<(), TestCaseError> {
    let n = x.len();
    let w: Vec<f32> = (0..n).map(|i| 0.25 + (i % 7) as f32).collect();
    let w = imatrix.then_some(&w[..]);
    let mut nl = vec![BlockIq4Nl::zeroed(); n / 32];
    iquants::quantize_iq4_nl(x, &mut nl, n, w).unwrap();
    let mut xs = vec![BlockIq4Xs::zeroed(); n / QK_K];
    iquants::quantize_iq4_xs(x, &mut xs, n, w).unwrap();
    check_dequant(
        "iq4_nl",
        &nl,
        32,
        iquants::dequantize_row_iq4_nl,
        dispatch::dequantize_row_iq4_nl_at,
    )?;
    check_dequant(
        "iq4_xs",
        &xs,
        QK_K,
        iquants::dequantize_row_iq4_xs,
        dispatch::dequantize_row_iq4_xs_at,
    )?;
    let mut y0 = vec![BlockQ8_0::zeroed(); n / 32];
    legacy::quantize_row_q8_0_ref(y, &mut y0).unwrap();
    let mut yk = vec![BlockQ8K::zeroed(); n / QK_K];
    kquants::quantize_row_q8_k_ref(y, &mut yk).unwrap();
    nl_dot("iq4_nl", &nl, bytemuck::cast_slice(&y0), false)?;
    xs_dot("iq4_xs", &xs, bytemuck::cast_slice(&yk), false)?;
    Ok(())
}

/// Copies of the blocks with unit super-scales and the given group scales.
fn xs_with_scales(bytes: &[u8], scales_h: u16, scales_l: [u8; 4]) -> Vec<BlockIq4Xs> {
    let mut x = xs_blocks(bytes);
    for b in &mut x {
        b.d = f16::ONE;
        b.scales_h = scales_h;
        b.scales_l = scales_l;
    }
    x
}

/// `(scales_h, scales_l)` giving each group `ls - 32` in -1..=1, from 8
/// choices.
fn unit_scales(pick: &[u8]) -> (u16, [u8; 4]) {
    let mut h = 0u16;
    let mut l = [0u8; 4];
    for (ib, &p) in pick.iter().enumerate() {
        let ls: u8 = 31 + p % 3; // 31, 32 or 33
        l[ib / 2] |= (ls & 15) << (4 * (ib % 2));
        h |= u16::from(ls >> 4) << (2 * ib);
    }
    (h, l)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// Random rows of 1 to 4 IQ4_XS blocks (8 to 32 IQ4_NL blocks), with
    /// and without importance weights.
    #[test]
    fn iq4_quantized_rows_match_scalar(
        (x, y) in row(QK_K, 4).prop_flat_map(|x| {
            let n = x.len();
            (Just(x), proptest::collection::vec(value(), n))
        }),
        imatrix in any::<bool>(),
    ) {
        quantized_rows(&x, &y, imatrix)?;
    }

    /// Arbitrary block bytes (NaN and infinite scales included) dequantize
    /// identically, and dot within the magnitude's tolerance.
    #[test]
    fn iq4_raw_blocks_match_scalar(
        xb in proptest::collection::vec(extreme_u8(), 0..=9 * 136),
        yq in proptest::collection::vec(extreme_i8(), 9 * QK_K),
        dy in -4.0f32..4.0,
    ) {
        let nl = nl_blocks(&xb);
        let xs = xs_blocks(&xb);
        check_dequant("raw iq4_nl", &nl, 32, iquants::dequantize_row_iq4_nl, dispatch::dequantize_row_iq4_nl_at)?;
        check_dequant("raw iq4_xs", &xs, QK_K, iquants::dequantize_row_iq4_xs, dispatch::dequantize_row_iq4_xs_at)?;
        let y0 = q8_0_raw(f16::from_f32(dy), &yq[..32 * nl.len()]);
        nl_dot("raw iq4_nl", &nl, &y0, false)?;
        let yk = q8_k_raw(dy, &yq[..QK_K * xs.len()]);
        xs_dot("raw iq4_xs", &xs, &yk, false)?;
    }

    /// With unit scales every IQ4_NL partial sum is an integer below 2^24
    /// (at most `32 * 32 * 127 * 128`), so the dots are exact, `-128` quants
    /// included (where llama.cpp's sign trick goes wrong).
    #[test]
    fn iq4_nl_integer_dots_are_exact(
        nb in 1usize..=32,
        xb in proptest::collection::vec(extreme_u8(), 32 * 16),
        yq in proptest::collection::vec(extreme_i8(), 32 * 32),
        neg in any::<bool>(),
    ) {
        let one = if neg { -f16::ONE } else { f16::ONE };
        let x: Vec<BlockIq4Nl> = xb.chunks_exact(16).take(nb)
            .map(|c| BlockIq4Nl { d: f16::ONE, qs: c.try_into().unwrap() })
            .collect();
        nl_dot("int iq4_nl", &x, &q8_0_raw(one, &yq[..32 * nb]), true)?;
    }

    /// IQ4_XS (1 to 4 blocks) with unit super-scales: any group scales with
    /// quants up to 3 (`4 * 8 * 32 * 127 * 3 * 32 < 2^24`), or group scales
    /// -1..=1 with any quants (`4 * 8 * 32 * 127 * 128 < 2^24`); every
    /// partial sum is an integer below 2^24, so the dots are exact.
    #[test]
    fn iq4_xs_integer_dots_are_exact(
        nb in 1usize..=4,
        xb in proptest::collection::vec(extreme_u8(), 4 * 136),
        small in proptest::collection::vec(-3i8..=3, 4 * QK_K),
        yq in proptest::collection::vec(extreme_i8(), 4 * QK_K),
        pick in proptest::collection::vec(any::<u8>(), 8),
        dy in prop_oneof![Just(1.0f32), Just(-1.0f32)],
    ) {
        let xb = &xb[..136 * nb];
        let x = xs_blocks(xb);
        let mut xone = x.clone();
        xone.iter_mut().for_each(|b| b.d = f16::ONE);
        xs_dot("int iq4_xs, any scales", &xone, &q8_k_raw(dy, &small[..QK_K * nb]), true)?;
        let (h, l) = unit_scales(&pick);
        let x = xs_with_scales(xb, h, l);
        xs_dot("int iq4_xs, unit scales", &x, &q8_k_raw(dy, &yq[..QK_K * nb]), true)?;
    }
}

/// Blocks of one repeated byte against quants of -128, 127 and -1, with
/// unit, maximal (65504) and NaN (0xFFFF) scales; for IQ4_XS also the
/// extreme group scales: `ls = 63` (+31), `ls = 0` (-32), 32 (zero), 31
/// (-1), 33 (+1).
#[test]
fn iq4_extreme_blocks() {
    let group_scales: [(u16, [u8; 4]); 5] = [
        (0xFFFF, [0xFF; 4]),
        (0x0000, [0x00; 4]),
        (0xAAAA, [0x00; 4]),
        (0x5555, [0xFF; 4]),
        (0xAAAA, [0x11; 4]),
    ];
    for xb in [0x00u8, 0xFF, 0x80, 0x7F, 0x88, 0x77, 0x0F, 0xF0] {
        for yq in [i8::MIN, i8::MAX, -1] {
            for nb in [1, 2, 3, 5, 9] {
                let ctx = format!("byte {xb:#x}, quant {yq}, {nb} blocks");
                for (d, exact) in [
                    (f16::ONE, 8 * nb * 32 * 127 * 128 < 1 << 24),
                    (f16::MAX, false),
                    (f16::from_bits(0xFFFF), false),
                ] {
                    let x: Vec<BlockIq4Nl> = (0..8 * nb)
                        .map(|_| BlockIq4Nl { d, qs: [xb; 16] })
                        .collect();
                    let y = q8_0_raw(f16::ONE, &vec![yq; 32 * x.len()]);
                    nl_dot("iq4_nl", &x, &y, exact).unwrap_or_else(|e| panic!("{ctx}: {e}"));
                    check_dequant(
                        "iq4_nl",
                        &x,
                        32,
                        iquants::dequantize_row_iq4_nl,
                        dispatch::dequantize_row_iq4_nl_at,
                    )
                    .unwrap_or_else(|e| panic!("{ctx}: {e}"));
                    for (h, l) in group_scales {
                        let x: Vec<BlockIq4Xs> = (0..nb)
                            .map(|_| BlockIq4Xs {
                                d,
                                scales_h: h,
                                scales_l: l,
                                qs: [xb; 128],
                            })
                            .collect();
                        let y = q8_k_raw(1.0, &vec![yq; QK_K * nb]);
                        xs_dot("iq4_xs", &x, &y, false)
                            .unwrap_or_else(|e| panic!("{ctx}, scales {h:#x}: {e}"));
                        check_dequant(
                            "iq4_xs",
                            &x,
                            QK_K,
                            iquants::dequantize_row_iq4_xs,
                            dispatch::dequantize_row_iq4_xs_at,
                        )
                        .unwrap_or_else(|e| panic!("{ctx}, scales {h:#x}: {e}"));
                    }
                }
            }
        }
    }
}

/// Long rows (many blocks, both accumulators, 1 << 14 values).
#[test]
fn iq4_long_rows_match_scalar() {
    let x: Vec<f32> = (0..1 << 14)
        .map(|i| ((i as f32) * 0.618).sin() * (1.0 + (i % 97) as f32))
        .collect();
    let y: Vec<f32> = (0..1 << 14).map(|i| ((i as f32) * 0.37).cos()).collect();
    quantized_rows(&x, &y, false).unwrap();
    quantized_rows(&x, &y, true).unwrap();
}

/// Wrong lengths give the scalar function's typed error at every level, and
/// the default-level entry points and the byte-level API agree.
#[test]
fn iq4_errors_match_scalar_at_every_level() {
    let nl = [BlockIq4Nl::zeroed(); 3];
    let xs = [BlockIq4Xs::zeroed(); 2];
    for level in levels() {
        for n in [0, 95, 97, 3 * 32 + 32] {
            assert_eq!(
                dispatch::dequantize_row_iq4_nl_at(level, &nl, &mut vec![0.0; n]),
                iquants::dequantize_row_iq4_nl(&nl, &mut vec![0.0; n])
            );
        }
        for n in [0, 511, 513, 256] {
            let got = dispatch::dequantize_row_iq4_xs_at(level, &xs, &mut vec![0.0; n]);
            assert!(
                matches!(got, Err(QuantError::BufferLength { .. })),
                "{got:?}"
            );
            assert_eq!(got, iquants::dequantize_row_iq4_xs(&xs, &mut vec![0.0; n]));
        }
        for n in [0, 1, 33, 3 * 34 - 1, 3 * 34 + 1, 4 * 34] {
            let y = vec![0u8; n];
            assert_length_error(
                dispatch::vec_dot_iq4_nl_q8_0_at(level, &nl, &y),
                iquants::vec_dot_iq4_nl_q8_0(&nl, &y),
            );
        }
        for n in [0, 291, 2 * 292 - 1, 2 * 292 + 1, 3 * 292] {
            let y = vec![0u8; n];
            assert_length_error(
                dispatch::vec_dot_iq4_xs_q8_k_at(level, &xs, &y),
                iquants::vec_dot_iq4_xs_q8_k(&xs, &y),
            );
        }
        // Empty rows are fine and zero.
        assert_eq!(dispatch::vec_dot_iq4_nl_q8_0_at(level, &[], &[]), Ok(0.0));
        assert_eq!(dispatch::vec_dot_iq4_xs_q8_k_at(level, &[], &[]), Ok(0.0));
    }
    let x: Vec<f32> = (0..2 * QK_K).map(|i| (i as f32 * 0.37).cos()).collect();
    let mut q = vec![BlockIq4Xs::zeroed(); 2];
    iquants::quantize_iq4_xs(&x, &mut q, x.len(), None).unwrap();
    let mut yk = vec![BlockQ8K::zeroed(); 2];
    kquants::quantize_row_q8_k_ref(&x, &mut yk).unwrap();
    let yk: &[u8] = bytemuck::cast_slice(&yk);
    let want = iquants::vec_dot_iq4_xs_q8_k(&q, yk).unwrap();
    let got = dispatch::vec_dot_iq4_xs_q8_k(&q, yk).unwrap();
    let api =
        weightkit_quant::api::vec_dot(weightkit_core::DType::IQ4_XS, bytemuck::cast_slice(&q), yk)
            .unwrap();
    assert!(
        (got - want).abs() <= 1e-4 * want.abs().max(1.0),
        "{got} vs {want}"
    );
    assert_eq!(api.to_bits(), got.to_bits());
}
