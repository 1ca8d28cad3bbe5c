//! The AVX2 TQ2_0 and Q1_0 dot products of `simd::x86_avx2dots` (weighted
//! 2-bit codes, one shift per 32 bytes; Q1_0 from dword broadcasts) against
//! their scalar references and an exact i64 reference at every level this
//! CPU supports (`dispatch::*_at`): random and adversarial blocks, any f16
//! scale (NaN, infinities, subnormals), Q8_K partners with arbitrary
//! per-group `bsums` (i16 extremes included), Q8_0 quants of -128. With
//! unit scales every partial sum is an integer f32 holds, so every level
//! must then give the scalar result bit for bit.

use half::f16;
use proptest::prelude::*;
use weightkit_quant::iquants::{self, BlockTq2_0};
use weightkit_quant::kquants::QK_K;
use weightkit_quant::legacy::{self, BlockQ1_0, QK1_0};
use weightkit_quant::simd::dispatch;

use crate::simd::assert_length_error;
use crate::simd_iq4::check_dot;
use crate::simd_iqdot::blocks;

/// Bytes of one `block_q8_K`, one `block_q8_0`, one `block_tq2_0`, one
/// `block_q1_0`.
const Q8_K_BYTES: usize = 292;
const Q8_0_BYTES: usize = 34;
const TQ2_BYTES: usize = 66;
const Q1_BYTES: usize = 18;

// ------------------------------------------------------- exact reference

/// The 2-bit code (0..=3) of value `k` of a TQ2_0 block (byte `32 j + m`,
/// bits `2 l`, for value `128 j + 32 l + m`).
fn tq2_code(b: &BlockTq2_0, k: usize) -> i64 {
    let (j, l, m) = (k / 128, k % 128 / 32, k % 32);
    i64::from((b.qs[32 * j + m] >> (2 * l)) & 3)
}

/// Per TQ2_0 block: `(dx * dy, sum c q - sum bsums, magnitude)` with `y`'s
/// stored `bsums`.
fn tq2_terms(x: &[BlockTq2_0], y: &[u8]) -> Vec<(f64, i64, i64)> {
    x.iter()
        .enumerate()
        .map(|(b, xb)| {
            let yb = &y[b * Q8_K_BYTES..(b + 1) * Q8_K_BYTES];
            let (mut s, mut a) = (0i64, 0i64);
            for k in 0..QK_K {
                let p = tq2_code(xb, k) * i64::from(yb[4 + k] as i8);
                s += p;
                a += p.abs();
            }
            for g in yb[4 + QK_K..].chunks_exact(2) {
                let bs = i64::from(i16::from_le_bytes([g[0], g[1]]));
                s -= bs;
                a += bs.abs();
            }
            let dy = f32::from_le_bytes(yb[..4].try_into().unwrap());
            (f64::from(dy * xb.d.to_f32()), s, a)
        })
        .collect()
}

/// Per Q8_0 block under a Q1_0 block: `(dx * dy, sum s q, sum |q|)`.
pub(crate) fn q1_terms(x: &[BlockQ1_0], y: &[u8]) -> Vec<(f64, i64, i64)> {
    let mut out = vec![];
    for (b, xb) in x.iter().enumerate() {
        for k8 in 0..QK1_0 / 32 {
            let yb = &y[(4 * b + k8) * Q8_0_BYTES..];
            let dy = f16::from_bits(u16::from_le_bytes([yb[0], yb[1]])).to_f32();
            let (mut s, mut a) = (0i64, 0i64);
            for j in 0..32 {
                let k = 32 * k8 + j;
                let sign = if (xb.qs[k / 8] >> (k % 8)) & 1 == 1 {
                    1
                } else {
                    -1
                };
                let q = i64::from(yb[2 + j] as i8);
                s += sign * q;
                a += q.abs();
            }
            out.push((f64::from(xb.d.to_f32() * dy), s, a));
        }
    }
    out
}

fn tq2_dot(name: &str, x: &[BlockTq2_0], y: &[u8], exact: bool) -> Result<(), TestCaseError> {
    check_dot(
        name,
        x,
        y,
        &tq2_terms(x, y),
        exact,
        iquants::vec_dot_tq2_0_q8_k,
        dispatch::vec_dot_tq2_0_q8_k_at,
    )
}

pub(crate) fn q1_dot(
    name: &str,
    x: &[BlockQ1_0],
    y: &[u8],
    exact: bool,
) -> Result<(), TestCaseError> {
    check_dot(
        name,
        x,
        y,
        &q1_terms(x, y),
        exact,
        legacy::vec_dot_q1_0_q8_0,
        dispatch::vec_dot_q1_0_q8_0_at,
    )
}

// ------------------------------------------------------------------ inputs

/// Raw `block_q8_K`s: scale `dy`, quants `qs` (256 per block), the 16
/// `bsums` of each block from `bsums` (arbitrary: not the quants' sums).
fn q8_k_raw(dy: f32, qs: &[i8], bsums: &[i16]) -> Vec<u8> {
    let mut out = vec![];
    for (c, b) in qs.chunks_exact(QK_K).zip(bsums.chunks_exact(16)) {
        out.extend_from_slice(&dy.to_le_bytes());
        out.extend(c.iter().map(|&q| q as u8));
        for s in b {
            out.extend_from_slice(&s.to_le_bytes());
        }
    }
    out
}

/// Raw `block_q8_0`s: f16 scale `dy`, quants `qs` (32 per block).
fn q8_0_raw(dy: f16, qs: &[i8]) -> Vec<u8> {
    let mut out = vec![];
    for c in qs.chunks_exact(32) {
        out.extend_from_slice(&dy.to_bits().to_le_bytes());
        out.extend(c.iter().map(|&q| q as u8));
    }
    out
}

fn extreme_i8() -> impl Strategy<Value = i8> {
    prop_oneof![3 => any::<i8>(), 1 => Just(i8::MIN), 1 => Just(i8::MAX), 1 => Just(-1i8)]
}

fn extreme_i16() -> impl Strategy<Value = i16> {
    prop_oneof![3 => any::<i16>(), 1 => Just(i16::MIN), 1 => Just(i16::MAX), 1 => Just(0i16)]
}

/// Bytes with all-ones (every TQ2_0 code 3, the 16-bit bound), zero and
/// the sign bit over-represented.
fn extreme_u8() -> impl Strategy<Value = u8> {
    prop_oneof![4 => any::<u8>(), 1 => Just(0xFF), 1 => Just(0x00), 1 => Just(0xAA), 1 => Just(0x80)]
}

/// An f16 scale: ordinary, extreme, subnormal, infinite or NaN.
pub(crate) fn scale() -> impl Strategy<Value = f16> {
    prop_oneof![
        4 => (-4.0f32..4.0).prop_map(f16::from_f32),
        1 => any::<u16>().prop_map(f16::from_bits),
        1 => Just(f16::MAX),
        1 => Just(f16::from_bits(0x0001)),
        1 => Just(f16::NEG_INFINITY),
        1 => Just(f16::NAN),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    /// Arbitrary TQ2_0 bytes and scales against Q8_K partners with any
    /// quants and any per-group `bsums`: within the magnitude's tolerance
    /// of the exact sum at every level (non-finite where the scalar is).
    #[test]
    fn avx2dots_tq2_0_raw_blocks(
        xb in proptest::collection::vec(extreme_u8(), 0..=9 * TQ2_BYTES),
        yq in proptest::collection::vec(extreme_i8(), 9 * QK_K),
        bs in proptest::collection::vec(extreme_i16(), 9 * 16),
        d in proptest::collection::vec(scale(), 9),
        dy in prop_oneof![-4.0f32..4.0, Just(f32::INFINITY), Just(f32::NAN), Just(1e-40f32)],
    ) {
        let mut x = blocks::<BlockTq2_0>(&xb);
        x.iter_mut().zip(&d).for_each(|(b, d)| b.d = *d);
        let y = q8_k_raw(dy, &yq[..QK_K * x.len()], &bs[..16 * x.len()]);
        tq2_dot("raw tq2_0", &x, &y, false)?;
    }

    /// Unit scales (either sign): each block's integer is at most `256 * 3
    /// * 128 + 16 * 32768` in magnitude, so with up to 16 blocks every
    /// order of summation is exact and every level must match the scalar
    /// dot and the i64 reference bit for bit.
    #[test]
    fn avx2dots_tq2_0_integer_dots_are_exact(
        nb in 1usize..=16,
        xb in proptest::collection::vec(extreme_u8(), 16 * TQ2_BYTES),
        yq in proptest::collection::vec(extreme_i8(), 16 * QK_K),
        bs in proptest::collection::vec(extreme_i16(), 16 * 16),
        neg in any::<bool>(),
    ) {
        let one = if neg { -f16::ONE } else { f16::ONE };
        let mut x = blocks::<BlockTq2_0>(&xb[..TQ2_BYTES * nb]);
        x.iter_mut().for_each(|b| b.d = one);
        let y = q8_k_raw(1.0, &yq[..QK_K * nb], &bs[..16 * nb]);
        tq2_dot("int tq2_0", &x, &y, true)?;
    }

    /// Arbitrary Q1_0 bits and scales against Q8_0 partners with any quants
    /// (-128 over-represented) and any scales.
    #[test]
    fn avx2dots_q1_0_raw_blocks(
        xb in proptest::collection::vec(any::<u8>(), 0..=9 * Q1_BYTES),
        yq in proptest::collection::vec(extreme_i8(), 9 * QK1_0),
        dy in scale(),
    ) {
        let x = blocks::<BlockQ1_0>(&xb);
        let y = q8_0_raw(dy, &yq[..QK1_0 * x.len()]);
        q1_dot("raw q1_0", &x, &y, false)?;
    }

    /// Unit scales: exact at every level, any bits, any quants.
    #[test]
    fn avx2dots_q1_0_integer_dots_are_exact(
        nb in 1usize..=17,
        xb in proptest::collection::vec(extreme_u8(), 17 * Q1_BYTES),
        yq in proptest::collection::vec(extreme_i8(), 17 * QK1_0),
        neg in any::<bool>(),
    ) {
        let one = if neg { -f16::ONE } else { f16::ONE };
        let mut x = blocks::<BlockQ1_0>(&xb[..Q1_BYTES * nb]);
        x.iter_mut().for_each(|b| b.d = one);
        let y = q8_0_raw(f16::ONE, &yq[..QK1_0 * nb]);
        q1_dot("int q1_0", &x, &y, true)?;
    }
}

/// Every TQ2_0 byte value repeated, against quants of -128, 127 and -1 and
/// `bsums` at the i16 extremes: the weight-4 sums at their bound (`0xFF`
/// bytes by -128 quants), exact with unit scales, and the same at
/// infinite, NaN, maximal and subnormal scales within tolerance.
#[test]
fn avx2dots_tq2_0_extreme_blocks() {
    for byte in 0..=255u8 {
        for q in [i8::MIN, i8::MAX, -1] {
            for bsum in [i16::MIN, i16::MAX, 0] {
                for d in [
                    f16::ONE,
                    f16::MAX,
                    f16::from_bits(0x0001),
                    f16::INFINITY,
                    f16::NAN,
                ] {
                    let nb = 3;
                    let mut x = blocks::<BlockTq2_0>(&vec![byte; TQ2_BYTES * nb]);
                    x.iter_mut().for_each(|b| b.d = d);
                    let y = q8_k_raw(1.0, &vec![q; QK_K * nb], &vec![bsum; 16 * nb]);
                    let ctx = format!("byte {byte:#x}, quant {q}, bsum {bsum}, d {d}");
                    tq2_dot(&ctx, &x, &y, d == f16::ONE).unwrap();
                }
            }
        }
    }
}

/// Q1_0 bit patterns (all set, none set, alternating, single bits) against
/// quants of -128 (where llama.cpp's AVX2 `(q ^ m) - m` wraps), 127 and -1:
/// exact with unit scales.
#[test]
fn avx2dots_q1_0_extreme_blocks() {
    let mut patterns = vec![0x00u8, 0xFF, 0xAA, 0x55];
    patterns.extend((0..8).map(|b| 1u8 << b));
    for byte in patterns {
        for q in [i8::MIN, i8::MAX, -1] {
            for nb in [1, 2, 3] {
                let mut x = blocks::<BlockQ1_0>(&vec![byte; Q1_BYTES * nb]);
                x.iter_mut().for_each(|b| b.d = f16::ONE);
                let y = q8_0_raw(f16::ONE, &vec![q; QK1_0 * nb]);
                let ctx = format!("bits {byte:#x}, quant {q}, {nb} blocks");
                q1_dot(&ctx, &x, &y, true).unwrap();
            }
        }
    }
}

/// Length mismatches go to the scalar code's error at every level.
#[test]
fn avx2dots_length_errors() {
    let x2 = vec![
        BlockTq2_0 {
            qs: [0; 64],
            d: f16::ONE
        };
        2
    ];
    let y2 = vec![0u8; Q8_K_BYTES + 1];
    for level in crate::simd::levels() {
        assert_length_error(
            dispatch::vec_dot_tq2_0_q8_k_at(level, &x2, &y2),
            iquants::vec_dot_tq2_0_q8_k(&x2, &y2),
        );
    }
    let x1 = vec![
        BlockQ1_0 {
            d: f16::ONE,
            qs: [0; 16]
        };
        2
    ];
    let y1 = vec![0u8; 4 * Q8_0_BYTES];
    for level in crate::simd::levels() {
        assert_length_error(
            dispatch::vec_dot_q1_0_q8_0_at(level, &x1, &y1),
            legacy::vec_dot_q1_0_q8_0(&x1, &y1),
        );
    }
}
