//! The Q8_0 x Q8_0 dot product of `simd::x86_avx2exact` (llama.cpp's sign
//! trick over the whole row, one running minimum, the row computed again on
//! the exact path if some x quant is -128), and the Q1_0 x Q8_0 dot, against
//! their scalar references and an exact i64 reference at every level this
//! CPU supports (`dispatch::*_at`): -128 quants in the first, a middle and
//! the last block of a row, on either side and both, against negative
//! partners (where the sign trick alone would wrap), rows without any, and
//! random and adversarial blocks with any f16 scale (NaN, infinities,
//! subnormals). With unit scales every partial sum is an integer f32 holds,
//! so every level must then give the scalar result bit for bit.

use half::f16;
use proptest::prelude::*;
use weightkit_quant::legacy::{self, BlockQ1_0, BlockQ8_0};
use weightkit_quant::simd::dispatch;

use crate::simd_avx2dots::{q1_dot, scale};
use crate::simd_iq4::check_exact_dot;

fn q8_block(d: f16, qs: &[i8]) -> BlockQ8_0 {
    BlockQ8_0 {
        d,
        qs: qs.try_into().expect("32 quants"),
    }
}

/// `(sum dx dy s, sum |dx dy| |s|)` over the blocks with each block's
/// integer `s = sum x y` exact in i64.
fn q8_exact(x: &[BlockQ8_0], y: &[BlockQ8_0]) -> (f64, f64) {
    let (mut sum, mut mag) = (0f64, 0f64);
    for (bx, by) in x.iter().zip(y) {
        let s: i64 = bx
            .qs
            .iter()
            .zip(&by.qs)
            .map(|(&a, &b)| i64::from(a) * i64::from(b))
            .sum();
        let a: i64 = bx
            .qs
            .iter()
            .zip(&by.qs)
            .map(|(&a, &b)| (i64::from(a) * i64::from(b)).abs())
            .sum();
        let d = f64::from(bx.d.to_f32() * by.d.to_f32());
        sum += d * s as f64;
        mag += d.abs() * a as f64;
    }
    (sum, mag)
}

/// [`check_exact_dot`] for a Q8_0 row: bit for bit when `exact`.
fn q8_dot(name: &str, x: &[BlockQ8_0], y: &[BlockQ8_0], exact: bool) -> Result<(), TestCaseError> {
    check_exact_dot(
        name,
        x,
        y,
        q8_exact(x, y),
        legacy::vec_dot_q8_0_q8_0,
        dispatch::vec_dot_q8_0_q8_0_at,
        exact,
    )
}

/// A deterministic byte stream (xorshift).
fn stream(seed: u64) -> impl FnMut() -> u8 {
    let mut s = seed | 1;
    move || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        (s >> 24) as u8
    }
}

/// Quants in -127..=127 (no -128), negative ones over-represented.
fn quants(n: usize, seed: u64) -> Vec<i8> {
    let mut r = stream(seed);
    (0..n)
        .map(|_| match r() % 4 {
            0 => -127,
            1 => -1,
            _ => (r() as i8).max(-127),
        })
        .collect()
}

/// Where a -128 goes in a row of `nb` blocks: none, first, middle, last.
fn spots(nb: usize) -> Vec<Option<usize>> {
    let mut v = vec![None, Some(0), Some(nb / 2), Some(nb - 1)];
    v.dedup();
    v
}

/// -128 x quants in the first, a middle and the last block, on the x side,
/// the y side and both, against negative partners (and one positive, one
/// zero): exact with unit scales (either sign), for rows of every length
/// class of the four-block loop.
#[test]
fn avx2exact_q8_0_minus128_anywhere() {
    for nb in [1usize, 2, 3, 4, 5, 7, 8, 9, 13, 16, 33] {
        for spot in spots(nb) {
            for side in 0..3 {
                for (pos, partner) in [(0usize, -1i8), (17, -128), (31, 127), (5, 0), (12, -77)] {
                    let mut xq = quants(32 * nb, 7 + nb as u64);
                    let mut yq = quants(32 * nb, 99 + nb as u64);
                    if let Some(b) = spot {
                        let k = 32 * b + pos;
                        if side != 1 {
                            xq[k] = -128;
                            yq[k] = partner;
                        }
                        if side != 0 {
                            yq[k] = -128;
                            if side == 1 {
                                xq[k] = partner;
                            }
                        }
                    }
                    for d in [f16::ONE, -f16::ONE] {
                        let x: Vec<_> = xq.chunks_exact(32).map(|c| q8_block(d, c)).collect();
                        let y: Vec<_> =
                            yq.chunks_exact(32).map(|c| q8_block(f16::ONE, c)).collect();
                        let ctx = format!(
                            "{nb} blocks, -128 in {spot:?} at {pos} side {side}, partner {partner}, d {d}"
                        );
                        q8_dot(&ctx, &x, &y, true).unwrap();
                    }
                }
            }
        }
    }
}

/// Every x quant -128 against every y quant value, and the reverse: the
/// pair-sum bound of the sign trick (`2 * 128 * 127`) and the exact path.
#[test]
fn avx2exact_q8_0_extreme_blocks() {
    for v in i8::MIN..=i8::MAX {
        for (a, b) in [(i8::MIN, v), (v, i8::MIN), (i8::MAX, v), (v, v)] {
            for nb in [1, 5] {
                let x = vec![q8_block(f16::ONE, &[a; 32]); nb];
                let y = vec![q8_block(f16::ONE, &[b; 32]); nb];
                q8_dot(&format!("{a} x {b}, {nb} blocks"), &x, &y, true).unwrap();
            }
        }
    }
}

/// Q1_0 rows with -128 y quants in the first, a middle and the last Q8_0
/// block (each Q1_0 block has four), against set and clear bits, and rows
/// without: exact with unit scales.
#[test]
fn avx2exact_q1_0_minus128_anywhere() {
    for nb in [1usize, 2, 3, 5] {
        let n8 = 4 * nb;
        for spot in spots(n8) {
            for bits in [0x00u8, 0xFF, 0xA5] {
                for pos in [0usize, 9, 31] {
                    let mut yq = quants(32 * n8, 3 + nb as u64);
                    if let Some(b) = spot {
                        yq[32 * b + pos] = -128;
                    }
                    let mut y = vec![];
                    for c in yq.chunks_exact(32) {
                        y.extend_from_slice(&f16::ONE.to_bits().to_le_bytes());
                        y.extend(c.iter().map(|&q| q as u8));
                    }
                    for d in [f16::ONE, -f16::ONE] {
                        let x = vec![BlockQ1_0 { d, qs: [bits; 16] }; nb];
                        let ctx = format!("{nb} blocks, -128 in {spot:?} at {pos}, bits {bits:#x}");
                        q1_dot(&ctx, &x, &y, true).unwrap();
                    }
                }
            }
        }
    }
}

fn extreme_i8() -> impl Strategy<Value = i8> {
    prop_oneof![4 => any::<i8>(), 1 => Just(i8::MIN), 1 => Just(i8::MAX), 1 => Just(-1i8), 1 => Just(0i8)]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    /// Any quants (-128 over-represented, or none at all) and any scales:
    /// within the magnitude's tolerance of the exact sum at every level.
    #[test]
    fn avx2exact_q8_0_raw_blocks(
        nb in 0usize..=11,
        xq in proptest::collection::vec(extreme_i8(), 11 * 32),
        yq in proptest::collection::vec(extreme_i8(), 11 * 32),
        dx in proptest::collection::vec(scale(), 11),
        dy in proptest::collection::vec(scale(), 11),
        no_min in any::<bool>(),
    ) {
        let fix = |q: &i8| if no_min { (*q).max(-127) } else { *q };
        let xq: Vec<i8> = xq.iter().map(fix).collect();
        let x: Vec<_> = xq.chunks_exact(32).zip(&dx).take(nb).map(|(c, d)| q8_block(*d, c)).collect();
        let y: Vec<_> = yq.chunks_exact(32).zip(&dy).take(nb).map(|(c, d)| q8_block(*d, c)).collect();
        q8_dot("raw q8_0", &x, &y, false)?;
    }

    /// Unit scales (either sign): each block's integer is at most `32 *
    /// 128 * 128` in magnitude, so with up to 24 blocks every order of
    /// summation is exact and every level must match bit for bit.
    #[test]
    fn avx2exact_q8_0_integer_dots_are_exact(
        nb in 1usize..=24,
        xq in proptest::collection::vec(extreme_i8(), 24 * 32),
        yq in proptest::collection::vec(extreme_i8(), 24 * 32),
        neg in any::<bool>(),
    ) {
        let one = if neg { -f16::ONE } else { f16::ONE };
        let x: Vec<_> = xq.chunks_exact(32).take(nb).map(|c| q8_block(one, c)).collect();
        let y: Vec<_> = yq.chunks_exact(32).take(nb).map(|c| q8_block(f16::ONE, c)).collect();
        q8_dot("int q8_0", &x, &y, true)?;
    }
}
