//! The IQ4_XS x Q8_K dot product (kernels in simd/x86_iq4vnni.rs: group
//! scales applied in i32, the block scaled once) at every level against an
//! exact i64 reference, on random and adversarial blocks and row lengths
//! of 0 to 20 blocks, and non-finite scales against the scalar reference.

use half::f16;
use proptest::prelude::*;
use weightkit_quant::iquants::grids::KVALUES_IQ4NL;
use weightkit_quant::iquants::{self, BlockIq4Xs};
use weightkit_quant::kquants::QK_K;
use weightkit_quant::simd::{Level, dispatch};

use crate::simd::levels;

const Q8_K_BYTES: usize = 4 + QK_K + 32;

/// A block from 136 raw bytes with the super-scale `d`.
fn block(bytes: &[u8], d: f16) -> BlockIq4Xs {
    let mut b: BlockIq4Xs = bytemuck::pod_read_unaligned(&bytes[..136]);
    b.d = d;
    b
}

/// A raw `block_q8_K` with scale `d` and quants `q` (bsums zero: unread).
fn q8_k(d: f32, q: &[i8]) -> Vec<u8> {
    let mut out = d.to_le_bytes().to_vec();
    out.extend(q.iter().map(|&v| v as u8));
    out.extend([0u8; 32]);
    out
}

/// Per block: the exact `sum (ls - 32) sum v y` and `sum |ls - 32| |v y|`.
fn block_sums(b: &BlockIq4Xs, y: &[u8]) -> (i64, i64) {
    let (mut s, mut a) = (0i64, 0i64);
    for g in 0..8 {
        let lo = i64::from((b.scales_l[g / 2] >> (4 * (g % 2))) & 0xf);
        let hi = i64::from((b.scales_h >> (2 * g)) & 3);
        let ls = (lo | (hi << 4)) - 32;
        for j in 0..32 {
            let byte = b.qs[16 * g + j % 16];
            let nib = if j < 16 { byte & 0xf } else { byte >> 4 };
            let v = i64::from(KVALUES_IQ4NL[usize::from(nib)]);
            let q = i64::from(y[4 + 32 * g + j] as i8);
            s += ls * v * q;
            a += (ls * v * q).abs();
        }
    }
    (s, a)
}

/// Checks every level against the exact sum (f64 from the i64 block sums
/// and the f32 scale products), within the f32 rounding of each block's
/// integer sum and of the accumulation.
fn check(x: &[BlockIq4Xs], y: &[u8]) -> Result<(), TestCaseError> {
    let mut exact = 0f64;
    let mut mag = 0f64;
    for (b, yb) in x.iter().zip(y.chunks_exact(Q8_K_BYTES)) {
        let dy = f32::from_le_bytes([yb[0], yb[1], yb[2], yb[3]]);
        let d = f64::from(b.d.to_f32() * dy);
        let (s, a) = block_sums(b, yb);
        exact += d * s as f64;
        mag += d.abs() * a as f64;
    }
    let want = iquants::vec_dot_iq4_xs_q8_k(x, y).unwrap();
    let bound = (x.len() as f64 + 8.0) * f64::from(f32::EPSILON) * mag + 1e-30;
    for level in levels() {
        let got = dispatch::vec_dot_iq4_xs_q8_k_at(level, x, y).unwrap();
        prop_assert!(
            (f64::from(got) - exact).abs() <= bound,
            "{level:?} n={}: {got} vs exact {exact} (bound {bound})",
            x.len()
        );
        if level == Level::Scalar {
            prop_assert_eq!(got.to_bits(), want.to_bits());
        }
    }
    Ok(())
}

/// Bytes biased towards the extremes (0x00, 0xff, 0x80, 0x7f).
fn extreme_u8() -> impl Strategy<Value = u8> {
    prop_oneof![any::<u8>(), Just(0u8), Just(0xff), Just(0x80), Just(0x7f)]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    /// Random and extreme block bytes (any group scales), quants including
    /// -128, 0 to 20 blocks (the kernel's two accumulators: odd and even
    /// counts), power-of-two super-scales so every block scale is exact.
    #[test]
    fn iq4_xs_dot_tracks_the_exact_sum(
        nb in 0usize..=20,
        xb in proptest::collection::vec(extreme_u8(), 20 * 136),
        yq in proptest::collection::vec(prop_oneof![any::<i8>(), Just(-128i8), Just(127i8)], 20 * QK_K),
        e in proptest::collection::vec(-8i32..=8, 20),
        dy in prop_oneof![Just(1.0f32), Just(-0.5f32), -4.0f32..4.0],
    ) {
        let x: Vec<BlockIq4Xs> = (0..nb)
            .map(|i| block(&xb[136 * i..], f16::from_f32(2f32.powi(e[i]))))
            .collect();
        let y: Vec<u8> = (0..nb).flat_map(|i| q8_k(dy, &yq[QK_K * i..QK_K * (i + 1)])).collect();
        check(&x, &y)?;
    }
}

/// The largest block sums: every nibble 15 (value 113) or 0 (-127), every
/// group scale -32 or +31, quants all -128 or 127, 1 to 17 blocks.
#[test]
fn iq4_xs_dot_extreme_blocks() {
    for nb in [1, 2, 3, 16, 17] {
        for (qs, sl, sh, q) in [
            (0xffu8, 0x00u8, 0x0000u16, -128i8),
            (0x00, 0xff, 0xffff, -128),
            (0xff, 0xff, 0xffff, 127),
            (0x0f, 0x0f, 0x5555, -128),
        ] {
            let mut b = block(&[qs; 136], f16::ONE);
            b.scales_l = [sl; 4];
            b.scales_h = sh;
            let x = vec![b; nb];
            let y: Vec<u8> = (0..nb).flat_map(|_| q8_k(1.0, &[q; QK_K])).collect();
            check(&x, &y).unwrap();
        }
    }
}

/// Infinite and NaN super-scales (f16 or the `block_q8_K` f32) give a
/// non-finite dot at every level, as in the scalar code; zero scales zero.
#[test]
fn iq4_xs_dot_non_finite_scales() {
    let bytes: Vec<u8> = (0..136u32).map(|i| (i * 37 + 11) as u8).collect();
    let q: Vec<i8> = (0..QK_K as i32).map(|i| (i * 13 - 100) as i8).collect();
    for (dx, dy) in [
        (f16::INFINITY, 1.0f32),
        (f16::NEG_INFINITY, 0.5),
        (f16::NAN, 1.0),
        (f16::ONE, f32::INFINITY),
        (f16::ONE, f32::NAN),
        (f16::INFINITY, 0.0),
        (f16::ZERO, 1.0),
        (f16::from_bits(1), 1.0),
    ] {
        let x = vec![block(&bytes, dx); 3];
        let y: Vec<u8> = (0..3).flat_map(|_| q8_k(dy, &q)).collect();
        let want = iquants::vec_dot_iq4_xs_q8_k(&x, &y).unwrap();
        for level in levels() {
            let got = dispatch::vec_dot_iq4_xs_q8_k_at(level, &x, &y).unwrap();
            assert_eq!(
                got.is_finite(),
                want.is_finite(),
                "{dx} {dy} {level:?}: {got} vs {want}"
            );
            if want == 0.0 {
                assert_eq!(got, 0.0, "{dx} {dy} {level:?}");
            }
        }
    }
}
