//! The Q2_K, Q4_K and Q6_K x Q8_K dot products (AVX2 and the AVX-512 VNNI
//! kernels of `simd/x86_dots2.rs`) at every level this CPU supports, on raw
//! random and adversarial blocks: against the scalar reference and against
//! an exact reference (each block's integer sums in i64, decoded here
//! independently, scaled in f64). The Q2_K/Q4_K mins and Q6_K's `- 32`
//! offset use the stored `bsums` (as ggml's x86 and ARM kernels do), so
//! those are arbitrary here.

use half::f16;
use proptest::prelude::*;
use weightkit_quant::kquants::{self, BlockQ2K, BlockQ4K, BlockQ6K, BlockQ8K, QK_K};
use weightkit_quant::simd::{Level, dispatch};

const LEVELS: [Level; 3] = [Level::Scalar, Level::Avx2, Level::Avx512];

/// ggml's `get_scale_min_k4`.
fn scale_min_k4(j: usize, q: &[u8; 12]) -> (i64, i64) {
    if j < 4 {
        (i64::from(q[j] & 63), i64::from(q[j + 4] & 63))
    } else {
        (
            i64::from((q[j + 4] & 0xf) | ((q[j - 4] >> 6) << 4)),
            i64::from((q[j + 4] >> 4) | ((q[j] >> 6) << 4)),
        )
    }
}

/// Per block: (scale of the integer sum, integer sum, scale of the mins
/// term, mins term), the block's contribution `a * b - c * d`, and the
/// sums of the absolute values of the terms of `b` and `d` (the kernels'
/// lanes hold partial sums, which may cancel only in the block's total).
type Terms = Vec<(f64, i64, f64, i64, i64, i64)>;

fn q2_k_terms(x: &[BlockQ2K], y: &[BlockQ8K]) -> Terms {
    x.iter()
        .zip(y)
        .map(|(xb, yb)| {
            let (mut isum, mut iabs) = (0i64, 0i64);
            for n in 0..2 {
                for k in 0..4 {
                    for l in 0..32 {
                        let q = i64::from((xb.qs[32 * n + l] >> (2 * k)) & 3);
                        let i = 128 * n + 32 * k + l;
                        let t = i64::from(xb.scales[i / 16] & 0xf) * q * i64::from(yb.qs[i]);
                        isum += t;
                        iabs += t.abs();
                    }
                }
            }
            let m: Vec<i64> = (0..16)
                .map(|j| i64::from(xb.scales[j] >> 4) * i64::from(yb.bsums[j]))
                .collect();
            let (mins, mabs) = (m.iter().sum(), m.iter().map(|v| v.abs()).sum());
            let yd = f64::from(yb.d);
            (
                yd * f64::from(xb.d.to_f32()),
                isum,
                yd * f64::from(xb.dmin.to_f32()),
                mins,
                iabs,
                mabs,
            )
        })
        .collect()
}

fn q4_k_terms(x: &[BlockQ4K], y: &[BlockQ8K]) -> Terms {
    x.iter()
        .zip(y)
        .map(|(xb, yb)| {
            let (mut isum, mut iabs, mut mins, mut mabs) = (0i64, 0i64, 0i64, 0i64);
            for j in 0..4 {
                let (s0, m0) = scale_min_k4(2 * j, &xb.scales);
                let (s1, m1) = scale_min_k4(2 * j + 1, &xb.scales);
                for l in 0..32 {
                    let b = xb.qs[32 * j + l];
                    let t0 = s0 * i64::from(b & 0xf) * i64::from(yb.qs[64 * j + l]);
                    let t1 = s1 * i64::from(b >> 4) * i64::from(yb.qs[64 * j + 32 + l]);
                    isum += t0 + t1;
                    iabs += t0.abs() + t1.abs();
                }
                let bs = |g: usize| i64::from(yb.bsums[g]);
                for (m, g) in [
                    (m0, 4 * j),
                    (m0, 4 * j + 1),
                    (m1, 4 * j + 2),
                    (m1, 4 * j + 3),
                ] {
                    mins += m * bs(g);
                    mabs += (m * bs(g)).abs();
                }
            }
            let yd = f64::from(yb.d);
            (
                yd * f64::from(xb.d.to_f32()),
                isum,
                yd * f64::from(xb.dmin.to_f32()),
                mins,
                iabs,
                mabs,
            )
        })
        .collect()
}

fn q6_k_terms(x: &[BlockQ6K], y: &[BlockQ8K]) -> Terms {
    x.iter()
        .zip(y)
        .map(|(xb, yb)| {
            let (mut isum, mut iabs) = (0i64, 0i64);
            for c in 0..2 {
                for l in 0..32 {
                    let h = xb.qh[32 * c + l];
                    let (a, b) = (xb.ql[64 * c + l], xb.ql[64 * c + 32 + l]);
                    let q = [
                        (a & 0xf) | ((h & 3) << 4),
                        (b & 0xf) | (((h >> 2) & 3) << 4),
                        (a >> 4) | (((h >> 4) & 3) << 4),
                        (b >> 4) | ((h >> 6) << 4),
                    ];
                    for (k, q) in q.into_iter().enumerate() {
                        let i = 128 * c + 32 * k + l;
                        let s = i64::from(xb.scales[i / 16]);
                        let t = s * i64::from(q) * i64::from(yb.qs[i]);
                        isum += t;
                        iabs += t.abs();
                    }
                }
            }
            // The offset: 32 sum sc bsums.
            let o: Vec<i64> = (0..16)
                .map(|j| 32 * i64::from(xb.scales[j]) * i64::from(yb.bsums[j]))
                .collect();
            let (off, oabs) = (o.iter().sum(), o.iter().map(|v| v.abs()).sum());
            let d = f64::from(yb.d) * f64::from(xb.d.to_f32());
            (d, isum, d, off, iabs, oabs)
        })
        .collect()
}

/// Every level against the scalar result and the exact terms.
fn check(
    name: &str,
    terms: &Terms,
    at: impl Fn(Level) -> Result<f32, weightkit_quant::QuantError>,
) -> Result<(), TestCaseError> {
    let scalar = at(Level::Scalar).unwrap();
    let exact: f64 = terms
        .iter()
        .map(|&(a, b, c, d, _, _)| a * b as f64 - c * d as f64)
        .sum();
    let mag: f64 = terms
        .iter()
        .map(|&(a, _, c, _, ba, da)| (a * ba as f64).abs() + (c * da as f64).abs())
        .sum();
    for level in LEVELS {
        let got = at(level).unwrap();
        if !exact.is_finite() || !scalar.is_finite() {
            // NaN or infinite scales: the summation order decides between
            // inf and NaN, but never gives a finite result.
            prop_assert!(
                !got.is_finite(),
                "{name} {level:?}: {got} vs scalar {scalar}"
            );
            continue;
        }
        let tol = 1e-5 * mag + 1e-30;
        prop_assert!(
            (f64::from(got) - exact).abs() <= tol,
            "{name} {level:?}: {got} vs exact {exact} (scalar {scalar}, mag {mag})"
        );
        prop_assert!(
            (f64::from(got) - f64::from(scalar)).abs() <= tol,
            "{name} {level:?}: {got} vs scalar {scalar}"
        );
    }
    Ok(())
}

fn blocks<B: bytemuck::Pod>(bytes: &[u8]) -> Vec<B> {
    bytes
        .chunks_exact(size_of::<B>())
        .map(bytemuck::pod_read_unaligned)
        .collect()
}

/// Bytes biased towards the extremes.
fn byte() -> impl Strategy<Value = u8> {
    prop_oneof![
        any::<u8>(),
        Just(0u8),
        Just(0xff),
        Just(0x80),
        Just(0x7f),
        Just(0x3f),
        Just(0xc0)
    ]
}

/// An f16 scale: random bits (NaN and infinities included), zero,
/// subnormals, the largest finite values.
fn f16_bits() -> impl Strategy<Value = u16> {
    prop_oneof![
        any::<u16>(),
        Just(0u16),
        Just(0x8000),
        1u16..0x400,
        Just(0x7bff),
        Just(0xfbff),
        Just(0x7c00),
        Just(0x7e00),
        Just(0x3c00),
    ]
}

/// A Q8_K block: quants biased to -128/127, arbitrary `bsums`, a finite
/// scale (normal, subnormal or zero).
fn q8_k_block() -> impl Strategy<Value = BlockQ8K> {
    let d = prop_oneof![
        -1e3f32..1e3,
        Just(0f32),
        Just(1e-40f32),
        Just(-3e-39f32),
        Just(1.0f32)
    ];
    let q = prop_oneof![any::<i8>(), Just(-128i8), Just(127i8)];
    (
        d,
        proptest::collection::vec(q, QK_K),
        proptest::collection::vec(any::<i16>(), QK_K / 16),
        any::<bool>(),
    )
        .prop_map(|(d, qs, bsums, own)| {
            let mut b = BlockQ8K {
                d,
                qs: qs.try_into().unwrap(),
                bsums: bsums.try_into().unwrap(),
            };
            if own {
                for (s, g) in b.bsums.iter_mut().zip(b.qs.chunks_exact(16)) {
                    *s = g.iter().map(|&v| i16::from(v)).sum();
                }
            }
            b
        })
}

/// `n` blocks of `size` raw bytes with their f16 fields (at the given byte
/// offsets) set from [`f16_bits`].
fn raw_blocks(size: usize, f16_at: &'static [usize]) -> impl Strategy<Value = Vec<u8>> {
    (1usize..6).prop_flat_map(move |n| {
        (
            proptest::collection::vec(byte(), n * size),
            proptest::collection::vec(f16_bits(), n * f16_at.len()),
        )
            .prop_map(move |(mut bytes, hs)| {
                for (b, hs) in bytes
                    .chunks_exact_mut(size)
                    .zip(hs.chunks_exact(f16_at.len()))
                {
                    for (&o, h) in f16_at.iter().zip(hs) {
                        b[o..o + 2].copy_from_slice(&h.to_le_bytes());
                    }
                }
                bytes
            })
    })
}

fn with_y<T: std::fmt::Debug + Clone>(
    x: impl Strategy<Value = T>,
) -> impl Strategy<Value = (T, Vec<BlockQ8K>)> {
    (x, proptest::collection::vec(q8_k_block(), 6))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn dots2_q2_k_matches_exact((xb, y) in with_y(raw_blocks(84, &[80, 82]))) {
        let x: Vec<BlockQ2K> = blocks(&xb);
        let y = &y[..x.len()];
        check("q2_K", &q2_k_terms(&x, y), |l| dispatch::vec_dot_q2_k_q8_k_at(l, &x, y))?;
    }

    #[test]
    fn dots2_q4_k_matches_exact((xb, y) in with_y(raw_blocks(144, &[0, 2]))) {
        let x: Vec<BlockQ4K> = blocks(&xb);
        let y = &y[..x.len()];
        check("q4_K", &q4_k_terms(&x, y), |l| dispatch::vec_dot_q4_k_q8_k_at(l, &x, y))?;
    }

    #[test]
    fn dots2_q6_k_matches_exact((xb, y) in with_y(raw_blocks(210, &[208]))) {
        let x: Vec<BlockQ6K> = blocks(&xb);
        let y = &y[..x.len()];
        check("q6_K", &q6_k_terms(&x, y), |l| dispatch::vec_dot_q6_k_q8_k_at(l, &x, y))?;
    }
}

/// Blocks at the extremes of every field: all-ones codes and scales with
/// -128 and 127 quants (the largest lane sums), all zeros, and Q6_K's most
/// negative scale; bit-exact against the exact sum where it is an integer
/// f32 represents.
#[test]
fn dots2_extreme_blocks() {
    let one = f16::from_f32(1.0).to_bits().to_le_bytes();
    for fill in [0u8, 0xff, 0x80, 0x55, 0xaa] {
        for q in [-128i8, 127, 0, -1] {
            let y = vec![
                BlockQ8K {
                    d: 1.0,
                    qs: [q; QK_K],
                    bsums: [i16::from(q) * 16; 16],
                };
                3
            ];
            let mut b2 = [fill; 84];
            b2[80..82].copy_from_slice(&one);
            b2[82..84].copy_from_slice(&one);
            let x2: Vec<BlockQ2K> = blocks(&b2.repeat(3));
            let mut b4 = [fill; 144];
            b4[0..2].copy_from_slice(&one);
            b4[2..4].copy_from_slice(&one);
            let x4: Vec<BlockQ4K> = blocks(&b4.repeat(3));
            let mut b6 = [fill; 210];
            b6[208..210].copy_from_slice(&one);
            let x6: Vec<BlockQ6K> = blocks(&b6.repeat(3));
            let exact = |t: Terms| {
                t.iter()
                    .map(|&(a, b, c, d, _, _)| a * b as f64 - c * d as f64)
                    .sum::<f64>() as f32
            };
            let e2 = exact(q2_k_terms(&x2, &y));
            let e4 = exact(q4_k_terms(&x4, &y));
            let e6 = exact(q6_k_terms(&x6, &y));
            for level in LEVELS {
                assert_eq!(dispatch::vec_dot_q2_k_q8_k_at(level, &x2, &y).unwrap(), e2);
                assert_eq!(dispatch::vec_dot_q4_k_q8_k_at(level, &x4, &y).unwrap(), e4);
                assert_eq!(dispatch::vec_dot_q6_k_q8_k_at(level, &x6, &y).unwrap(), e6);
            }
            assert_eq!(kquants::vec_dot_q6_k_q8_k(&x6, &y).unwrap(), e6);
        }
    }
}
