//! The IQ4_XS x Q8_K dot kernels of simd/x86_iq4vnni.rs (two groups per
//! vector, one per 128-bit lane; AVX2 `madd` and AVX-512 `vpdpwssd`) at
//! every level this CPU supports, on aligned and unaligned slices: bit for
//! bit against the exact integer dot wherever every partial sum is an
//! integer below 2^24 (so a group's values, quants or scale taken from the
//! wrong lane or position would show), against the exact i64 sum within
//! f32 rounding elsewhere, and the per-group f32 path of huge, infinite
//! and NaN block scales against the scalar code. Also the IQ2_S dot (the
//! AVX2 kernel's body with `vpdpwssd` at AVX-512) against the exact dot of
//! its dequantized values.

use half::f16;
use proptest::prelude::*;
use weightkit_quant::iquants::grids::KVALUES_IQ4NL;
use weightkit_quant::iquants::{self, BlockIq2S, BlockIq4Xs};
use weightkit_quant::kquants::QK_K;
use weightkit_quant::simd::{Level, dispatch};

use crate::simd::{Shifted, levels};

const Q8_K_BYTES: usize = 4 + QK_K + 32;

/// Group `g`'s scale `ls` (0..=63, applied as `ls - 32`).
fn ls(b: &BlockIq4Xs, g: usize) -> i64 {
    let lo = i64::from((b.scales_l[g / 2] >> (4 * (g % 2))) & 0xf);
    let hi = i64::from((b.scales_h >> (2 * g)) & 3);
    lo | (hi << 4)
}

/// Sets group `g`'s scale to `ls` (0..=63).
fn set_ls(b: &mut BlockIq4Xs, g: usize, ls: u8) {
    let sh = 4 * (g % 2);
    b.scales_l[g / 2] = (b.scales_l[g / 2] & !(0xf << sh)) | ((ls & 0xf) << sh);
    b.scales_h = (b.scales_h & !(3 << (2 * g))) | (u16::from(ls >> 4) << (2 * g));
}

/// Value `j` (0..32) of group `g`: the low nibble of byte `16 g + j` for
/// `j < 16`, else the high nibble of byte `16 g + j - 16`.
fn value(b: &BlockIq4Xs, g: usize, j: usize) -> i64 {
    let byte = b.qs[16 * g + j % 16];
    let nib = if j < 16 { byte & 0xf } else { byte >> 4 };
    i64::from(KVALUES_IQ4NL[usize::from(nib)])
}

/// Raw `block_q8_K`s with scale `d` and quants `q` (256 per block), bsums
/// zero (the IQ4_XS dot does not read them).
fn q8_k(d: f32, q: &[i8]) -> Vec<u8> {
    let mut out = vec![];
    for c in q.chunks_exact(QK_K) {
        out.extend_from_slice(&d.to_le_bytes());
        out.extend(c.iter().map(|&v| v as u8));
        out.extend([0u8; 32]);
    }
    out
}

/// Per block: `(d_x * d_y as f32, sum (ls - 32) v y, sum |(ls - 32) v y|)`.
fn terms(x: &[BlockIq4Xs], y: &[u8]) -> Vec<(f64, i64, i64)> {
    x.iter()
        .zip(y.chunks_exact(Q8_K_BYTES))
        .map(|(b, yb)| {
            let dy = f32::from_le_bytes(yb[..4].try_into().unwrap());
            let (mut s, mut a) = (0i64, 0i64);
            for g in 0..8 {
                for j in 0..32 {
                    let p = (ls(b, g) - 32) * value(b, g, j) * i64::from(yb[4 + 32 * g + j] as i8);
                    s += p;
                    a += p.abs();
                }
            }
            (f64::from(b.d.to_f32() * dy), s, a)
        })
        .collect()
}

/// Every level on `x`, `y` and on unaligned copies.
fn at_every_level(x: &[BlockIq4Xs], y: &[u8]) -> Vec<(Level, f32)> {
    let (xs, ys) = (Shifted::new(x), Shifted::new(y));
    let mut out = vec![];
    for level in levels() {
        for (x, y) in [(x, y), (xs.get(), ys.get())] {
            out.push((
                level,
                dispatch::vec_dot_iq4_xs_q8_k_at(level, x, y).unwrap(),
            ));
        }
    }
    out
}

/// Every level equals the exact dot bit for bit (the caller makes every
/// partial sum an integer times a power of two below 2^24 of it).
fn check_exact(x: &[BlockIq4Xs], y: &[u8]) -> Result<(), TestCaseError> {
    let exact: f64 = terms(x, y).iter().map(|&(d, s, _)| d * s as f64).sum();
    prop_assert_eq!(f64::from(exact as f32), exact, "exact dot not an f32");
    let scalar = iquants::vec_dot_iq4_xs_q8_k(x, y).unwrap();
    prop_assert_eq!(f64::from(scalar), exact, "scalar");
    for (level, got) in at_every_level(x, y) {
        // Equal as numbers (a zero's sign depends on the order).
        prop_assert_eq!(f64::from(got), exact, "{:?}", level);
    }
    Ok(())
}

/// Every level against the scalar and the exact dot: non-finite wherever a
/// block's scale product `d_x d_y` is (as the scalar dot then is), and
/// finite and within f32 rounding of the exact dot wherever the dot's
/// magnitude stays far below `f32::MAX` (near it, the order of the f32
/// sums decides whether a partial sum overflows).
fn check_near(x: &[BlockIq4Xs], y: &[u8]) -> Result<(), TestCaseError> {
    let t = terms(x, y);
    let exact: f64 = t.iter().map(|&(d, s, _)| d * s as f64).sum();
    let mag: f64 = t.iter().map(|&(d, _, a)| d.abs() * a as f64).sum();
    let want = iquants::vec_dot_iq4_xs_q8_k(x, y).unwrap();
    let bound = (x.len() as f64 + 8.0) * f64::from(f32::EPSILON) * mag + 1e-30;
    let non_finite = t.iter().any(|&(d, _, _)| !d.is_finite());
    if non_finite {
        prop_assert!(!want.is_finite(), "scalar {}", want);
    } else if mag < 1e37 {
        prop_assert!(want.is_finite(), "scalar {}", want);
    }
    for (level, got) in at_every_level(x, y) {
        if non_finite {
            prop_assert!(!got.is_finite(), "{level:?}: {got} vs scalar {want}");
        } else if mag < 1e37 {
            prop_assert!(
                (f64::from(got) - exact).abs() <= bound,
                "{level:?}: {got} vs exact {exact} (bound {bound})"
            );
        }
    }
    Ok(())
}

fn blocks(bytes: &[u8], d: &[f16]) -> Vec<BlockIq4Xs> {
    bytes
        .chunks_exact(136)
        .zip(d)
        .map(|(c, &d)| {
            let mut b: BlockIq4Xs = bytemuck::pod_read_unaligned(c);
            b.d = d;
            b
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    /// Any nibbles and group scales, quants -4..=4, power-of-two scales:
    /// every block sum is at most `256 * 127 * 4 * 32 < 2^22`, four blocks
    /// below 2^24, so every level must give the exact dot.
    #[test]
    fn iq4_xs_small_quants_dot_exactly(
        nb in 0usize..=4,
        xb in proptest::collection::vec(any::<u8>(), 4 * 136),
        yq in proptest::collection::vec(-4i8..=4, 4 * QK_K),
        neg in proptest::collection::vec(any::<bool>(), 4),
        dy in prop_oneof![Just(1.0f32), Just(-1.0f32), Just(0.25f32)],
    ) {
        let d: Vec<f16> = neg.iter().map(|&n| if n { -f16::ONE } else { f16::ONE }).collect();
        let x = blocks(&xb[..136 * nb], &d);
        check_exact(&x, &q8_k(dy, &yq[..QK_K * nb]))?;
    }

    /// Any bytes, quants biased to -128 and 127, 0 to 20 blocks (odd and
    /// even pair counts, unaligned copies), random super-scales, some of
    /// them huge (the per-group f32 path), infinite or NaN.
    #[test]
    fn iq4_xs_any_blocks_track_the_exact_dot(
        nb in 0usize..=20,
        xb in proptest::collection::vec(any::<u8>(), 20 * 136),
        yq in proptest::collection::vec(
            prop_oneof![any::<i8>(), Just(-128i8), Just(127i8)], 20 * QK_K),
        d in proptest::collection::vec(prop_oneof![
            8 => (-14i32..=15).prop_map(|e| f16::from_f32(2f32.powi(e))),
            2 => any::<u16>().prop_map(f16::from_bits),
            1 => Just(f16::MAX),
        ], 20),
        dy in prop_oneof![-4.0f32..4.0, Just(2f32.powi(89)), Just(-(2f32.powi(80)))],
    ) {
        let x = blocks(&xb[..136 * nb], &d);
        check_near(&x, &q8_k(dy, &yq[..QK_K * nb]))?;
    }
}

/// One nonzero quant at a time (1 or -128 at each of the 256 positions),
/// against blocks whose groups have distinct scales and whose values vary
/// with the position: the dot is that one product, at every level.
#[test]
fn iq4_xs_each_position_meets_its_value_and_scale() {
    let mut b: BlockIq4Xs = bytemuck::Zeroable::zeroed();
    b.d = f16::ONE;
    for g in 0..8 {
        // Scales -32, -23, ..., 31: distinct, both signs, extremes.
        set_ls(&mut b, g, (9 * g as u8).min(63));
    }
    for (i, q) in b.qs.iter_mut().enumerate() {
        *q = (i as u8).wrapping_mul(7).wrapping_add(3);
    }
    for pos in 0..QK_K {
        for q in [1i8, -128] {
            let mut yq = [0i8; QK_K];
            yq[pos] = q;
            for nb in [1usize, 2, 3] {
                let x = vec![b; nb];
                let y = q8_k(1.0, &yq.repeat(nb));
                let (g, j) = (pos / 32, pos % 32);
                let want = nb as i64 * (ls(&b, g) - 32) * value(&b, g, j) * i64::from(q);
                let results = at_every_level(&x, &y);
                for (level, got) in results {
                    assert_eq!(
                        f64::from(got),
                        want as f64,
                        "{level:?}, position {pos}, quant {q}, {nb} blocks"
                    );
                }
            }
        }
    }
}

/// The largest pair sums `maddubs` meets (`2 * 128 * 127`: values -127 or
/// 113 against quants -128 or 127) under the extreme group scales -32 and
/// +31, mixed per group, in rows of 1 to 17 blocks: exact at every SIMD
/// level (each block's integer sum is `2^8 * 16129 * k` or `2^8 * 14351 *
/// k` or `2^13 * 127 * k` with `|k| <= 31`, and the lanes' partial sums
/// over 17 blocks stay below 2^24 times their power of two), within f32
/// rounding for the scalar code (whose per-group products round).
#[test]
fn iq4_xs_largest_pair_sums_are_exact() {
    for nb in [1, 2, 5, 16, 17] {
        for (nib, q) in [(0u8, -128i8), (0, 127), (15, -128), (15, 127)] {
            for pattern in [0u8, 0xff, 0x55, 0x0f] {
                let mut b: BlockIq4Xs = bytemuck::Zeroable::zeroed();
                b.d = f16::ONE;
                b.qs = [nib | (nib << 4); 128];
                for g in 0..8 {
                    set_ls(&mut b, g, if pattern >> g & 1 == 1 { 63 } else { 0 });
                }
                let x = vec![b; nb];
                let y = q8_k(1.0, &vec![q; QK_K * nb]);
                let t = terms(&x, &y);
                let exact: f64 = t.iter().map(|&(d, s, _)| d * s as f64).sum();
                let mag: f64 = t.iter().map(|&(d, _, a)| d * a as f64).sum();
                for (level, got) in at_every_level(&x, &y) {
                    if level == Level::Scalar {
                        let err = (f64::from(got) - exact).abs();
                        assert!(
                            err <= 25.0 * f64::from(f32::EPSILON) * mag,
                            "{got} vs {exact}"
                        );
                        continue;
                    }
                    assert_eq!(
                        f64::from(got),
                        exact,
                        "{level:?}: nibble {nib}, quant {q}, pattern {pattern:#x}, {nb} blocks"
                    );
                }
            }
        }
    }
}

/// Blocks just above the threshold of the per-group f32 path (`d_x d_y`
/// above `f32::MAX / 2^24`) mixed with ordinary ones, with finite results:
/// both paths in one row agree with the exact dot.
#[test]
fn iq4_xs_huge_block_scales_take_the_scalar_products() {
    let bytes: Vec<u8> = (0..6 * 136u32).map(|i| (i * 37 + 11) as u8).collect();
    // One quant (1 or -1) in every 64: a block's `sum |(ls - 32) v y|` is
    // at most `4 * 32 * 127 < 2^14`.
    let q: Vec<i8> = (0..6 * QK_K)
        .map(|i| match i % 128 {
            0 => 1,
            64 => -1,
            _ => 0,
        })
        .collect();
    // With `d_y = 2^103`: `d_x = 2^-8` gives 2^95, below; 4 gives 2^105,
    // above, and the dot's magnitude stays below 6 * 2^119 (checked).
    for d in [
        [2f32.powi(-8), 4.0, 2f32.powi(-8), 4.0, 0.5, 0.5],
        [4.0; 6],
        [-4.0, 2f32.powi(-8), 0.5, 0.5, 0.5, 4.0],
    ] {
        let d: Vec<f16> = d.iter().map(|&v| f16::from_f32(v)).collect();
        let x = blocks(&bytes, &d);
        let y = q8_k(2f32.powi(103), &q);
        let mag: f64 = terms(&x, &y)
            .iter()
            .map(|&(d, _, a)| d.abs() * a as f64)
            .sum();
        assert!(mag < 1e37, "{mag}");
        check_near(&x, &y).unwrap();
    }
}

// -------------------------------------------------------------------- IQ2_S

/// The IQ2_S dot at every level (and unaligned) against the exact dot of
/// the dequantized row (each value `d (2 s + 1) g / 8` with `d = ±1` is
/// exact in f32) and the quants: equal when every partial sum is a
/// multiple of 1/8 below 2^20 (`small`), else within f32 rounding of the
/// magnitude.
fn check_iq2_s(x: &[BlockIq2S], y: &[u8], small: bool) -> Result<(), TestCaseError> {
    let mut v = vec![0f32; x.len() * QK_K];
    iquants::dequantize_row_iq2_s(x, &mut v).unwrap();
    let (mut exact, mut mag) = (0f64, 0f64);
    for (i, &v) in v.iter().enumerate() {
        let q = f64::from(y[i / QK_K * Q8_K_BYTES + 4 + i % QK_K] as i8);
        exact += f64::from(v) * q;
        mag += (f64::from(v) * q).abs();
    }
    let scalar = iquants::vec_dot_iq2_s_q8_k(x, y).unwrap();
    let (xs, ys) = (Shifted::new(x), Shifted::new(y));
    let bound = (x.len() as f64 + 12.0) * mag * f64::from(f32::EPSILON);
    for level in levels() {
        for (x, y) in [(x, y), (xs.get(), ys.get())] {
            let got = dispatch::vec_dot_iq2_s_q8_k_at(level, x, y).unwrap();
            if small {
                prop_assert_eq!(f64::from(got), exact, "{:?}", level);
                prop_assert_eq!(f64::from(scalar), exact, "scalar");
            } else {
                let err = (f64::from(got) - exact).abs();
                prop_assert!(err <= bound, "{level:?}: {got} vs {exact} (bound {bound})");
            }
        }
    }
    Ok(())
}

fn iq2_s_blocks(bytes: &[u8], neg: &[bool]) -> Vec<BlockIq2S> {
    bytes
        .chunks_exact(size_of::<BlockIq2S>())
        .zip(neg)
        .map(|(c, &n)| {
            let mut b: BlockIq2S = bytemuck::pod_read_unaligned(c);
            b.d = if n { -f16::ONE } else { f16::ONE };
            b
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    /// Any grid indexes, signs and scales, unit super-scales, 0 to 9 blocks
    /// (odd and even group counts per accumulator); quants -2..=2 (every
    /// partial sum exact: at most `9 * 256 * 31 * 43 * 2 < 2^23` eighths)
    /// or any, -128 and 127 favoured.
    #[test]
    fn iq2_s_dots_match_the_exact_dot(
        nb in 0usize..=9,
        xb in proptest::collection::vec(any::<u8>(), 9 * 82),
        neg in proptest::collection::vec(any::<bool>(), 9),
        small in any::<bool>(),
        yq in proptest::collection::vec(
            prop_oneof![any::<i8>(), Just(-128i8), Just(127i8)], 9 * QK_K),
    ) {
        let x = iq2_s_blocks(&xb[..82 * nb], &neg);
        let yq: Vec<i8> = yq[..QK_K * nb].iter().map(|&q| if small { q % 3 } else { q }).collect();
        check_iq2_s(&x, &q8_k(1.0, &yq), small)?;
    }
}

/// The largest IQ2_S products: every grid index, sign and scale byte at
/// 0xFF or 0x00 against quants of -128 and 127, 1 to 5 blocks.
#[test]
fn iq2_s_extreme_blocks() {
    for nb in 1..=5 {
        for byte in [0x00u8, 0xff, 0x80, 0x7f] {
            for q in [i8::MIN, i8::MAX] {
                let x = iq2_s_blocks(&vec![byte; 82 * nb], &[false; 5]);
                check_iq2_s(&x, &q8_k(1.0, &vec![q; QK_K * nb]), false).unwrap();
            }
        }
    }
}
