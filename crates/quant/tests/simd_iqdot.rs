//! The grid i-quant dot products with Q8_K (IQ2_XXS, IQ2_XS, IQ2_S,
//! IQ3_XXS, IQ3_S, IQ1_S, IQ1_M), scalar and SIMD at every level, against an
//! independent reference: the row dequantized by our (llama.cpp-verified)
//! dequantizer, dotted in f64 with the Q8_K values `d * q`.
//!
//! # The tolerance
//!
//! With `u = 2^-24` and `M = sum |x_i| |y_i|` (from the dequantized `x_i`):
//!
//! * The dequantizers never underflow (the smallest f16 scale, `2^-24`,
//!   times the smallest factor, `1/8`, is an f32 normal) and round at most
//!   twice per value (`d * (0.5 + s)`, then `* grid`; `* 0.25` and the sign
//!   are exact), so `x_i = x_i* (1 + e_i)` with `|e_i| <= 2u`.
//! * The dot of a block is its exact integer sum `K` (group sums times
//!   group scales, no overflow in i32) times the f32 scales: `d_x * d_y`
//!   (one rounding), `K` to f32 (one), the product (one), for IQ1 the shift
//!   term `0.125 * K1` to f32 and its sum (two more): at most 5 roundings per
//!   block term; the `nb` block terms are summed in f32 (at most `nb`
//!   roundings of partial sums bounded by `sum |term| <= M`), and the SIMD
//!   kernels' horizontal sums over lanes add at most 4 more. The final
//!   `* 0.125` / `* 0.25` is exact.
//! * The f64 reference rounds each product and partial sum at `2^-53`.
//!
//! So `|dot - reference| <= (nb + 12) u M` (rounded up generously), plus an
//! absolute `(nb + 1) 2^-120` for underflow: `d_x * d_y` may be subnormal,
//! where its absolute error `2^-150` is multiplied by `|K| < 2^26`.
//!
//! With `|d_x| = 1` and `d_y` a power of two, every partial sum is `d_y / 8`
//! times an integer of magnitude at most `8 M / |d_y|`; where that is below
//! `2^24` every f32 operation is exact and the dot must equal the reference
//! exactly, at every level.

use bytemuck::Pod;
use half::f16;
use proptest::prelude::*;
use weightkit_core::DType;
use weightkit_gguf::GgufFile;
use weightkit_quant::QuantError;
use weightkit_quant::iquants::{
    self, BlockIq1M, BlockIq1S, BlockIq2S, BlockIq2Xs, BlockIq2Xxs, BlockIq3S, BlockIq3Xxs,
};
use weightkit_quant::kquants::QK_K;
use weightkit_quant::simd::{Level, dispatch};

use crate::simd::{Shifted, levels};

/// Bytes of one `block_q8_K`.
const Q8_K_BYTES: usize = 292;

type RawDot = fn(&[u8], &[u8]) -> Result<f32, QuantError>;
type RawDotAt = fn(Level, &[u8], &[u8]) -> Result<f32, QuantError>;

pub(crate) fn blocks<B: Pod>(bytes: &[u8]) -> Vec<B> {
    bytes
        .chunks_exact(size_of::<B>())
        .map(bytemuck::pod_read_unaligned)
        .collect()
}

/// One grid type: its scalar dot and, where it has one, its dispatching dot.
struct Ty {
    dtype: DType,
    bytes: usize,
    scalar: RawDot,
    at: Option<RawDotAt>,
}

macro_rules! ty {
    ($dtype:ident, $block:ty, $scalar:ident) => {
        Ty {
            dtype: DType::$dtype,
            bytes: size_of::<$block>(),
            scalar: |x, y| iquants::$scalar(&blocks::<$block>(x), y),
            at: None,
        }
    };
    ($dtype:ident, $block:ty, $scalar:ident, $at:ident) => {
        Ty {
            at: Some(|l, x, y| dispatch::$at(l, &blocks::<$block>(x), y)),
            ..ty!($dtype, $block, $scalar)
        }
    };
}

fn types() -> Vec<Ty> {
    vec![
        ty!(
            IQ2_XXS,
            BlockIq2Xxs,
            vec_dot_iq2_xxs_q8_k,
            vec_dot_iq2_xxs_q8_k_at
        ),
        ty!(
            IQ2_XS,
            BlockIq2Xs,
            vec_dot_iq2_xs_q8_k,
            vec_dot_iq2_xs_q8_k_at
        ),
        ty!(IQ2_S, BlockIq2S, vec_dot_iq2_s_q8_k, vec_dot_iq2_s_q8_k_at),
        ty!(
            IQ3_XXS,
            BlockIq3Xxs,
            vec_dot_iq3_xxs_q8_k,
            vec_dot_iq3_xxs_q8_k_at
        ),
        ty!(IQ3_S, BlockIq3S, vec_dot_iq3_s_q8_k, vec_dot_iq3_s_q8_k_at),
        ty!(IQ1_S, BlockIq1S, vec_dot_iq1_s_q8_k, vec_dot_iq1_s_q8_k_at),
        ty!(IQ1_M, BlockIq1M, vec_dot_iq1_m_q8_k, vec_dot_iq1_m_q8_k_at),
    ]
}

/// Writes the super-block scale `d` into every block of `x`: the leading
/// f16, or for IQ1_M the top nibbles of its four scale words.
fn set_scale(dtype: DType, bytes: usize, x: &mut [u8], d: f16) {
    let b = d.to_bits();
    for blk in x.chunks_exact_mut(bytes) {
        if dtype == DType::IQ1_M {
            for k in 0..4 {
                let hi = &mut blk[48 + 2 * k + 1];
                *hi = (*hi & 0x0f) | ((((b >> (4 * k)) & 0xf) as u8) << 4);
            }
        } else {
            blk[..2].copy_from_slice(&b.to_le_bytes());
        }
    }
}

/// Raw `block_q8_K` bytes: scale `d`, quants `qs` (256 per block) and the
/// block sums of the quants (as ggml's quantizer stores them).
fn q8_k_raw(d: f32, qs: &[i8]) -> Vec<u8> {
    let mut out = vec![];
    for c in qs.chunks_exact(QK_K) {
        out.extend_from_slice(&d.to_le_bytes());
        out.extend(c.iter().map(|&q| q as u8));
        for s in c.chunks_exact(16) {
            let sum: i16 = s.iter().map(|&q| i16::from(q)).sum();
            out.extend_from_slice(&sum.to_le_bytes());
        }
    }
    out
}

/// The reference dot in f64 and its magnitude `M`: `x` dequantized by
/// [`weightkit_quant::dequantize`], `y` as `d * q`; for IQ1_S, plus the
/// shift term's contribution from `y`'s stored block sums where they
/// differ from the sums of its quants (ggml's dot reads the stored ones).
fn reference(ty: &Ty, x: &[u8], y: &[u8]) -> (f64, f64) {
    let nb = x.len() / ty.bytes;
    let mut v = vec![0.0f32; nb * QK_K];
    weightkit_quant::dequantize(ty.dtype, x, &mut v).unwrap();
    let (mut want, mut mag) = (0.0f64, 0.0f64);
    for (b, (v, yb)) in v
        .chunks_exact(QK_K)
        .zip(y.chunks_exact(Q8_K_BYTES))
        .enumerate()
    {
        let dy = f64::from(f32::from_le_bytes(yb[..4].try_into().unwrap()));
        for (j, &xv) in v.iter().enumerate() {
            let p = f64::from(xv) * (dy * f64::from(yb[4 + j] as i8));
            want += p;
            mag += p.abs();
        }
        if ty.dtype == DType::IQ1_S {
            let xb = &x[b * ty.bytes..];
            let dx = f64::from(f16::from_le_bytes([xb[0], xb[1]]).to_f32());
            for ib in 0..8 {
                let qh = u16::from_le_bytes([xb[34 + 2 * ib], xb[35 + 2 * ib]]);
                let ls = f64::from(2 * ((qh >> 12) & 7) + 1);
                let delta = if qh & 0x8000 != 0 { -0.125 } else { 0.125 };
                let stored: i64 = (0..2)
                    .map(|k| {
                        let o = 4 + QK_K + 4 * ib + 2 * k;
                        i64::from(i16::from_le_bytes([yb[o], yb[o + 1]]))
                    })
                    .sum();
                let actual: i64 = (0..32).map(|j| i64::from(yb[4 + 32 * ib + j] as i8)).sum();
                let p = dx * dy * ls * delta * (stored - actual) as f64;
                want += p;
                mag += p.abs();
            }
        }
    }
    (want, mag)
}

/// Whether `x`'s super-block scales and `y`'s are all finite.
fn finite_scales(ty: &Ty, x: &[u8], y: &[u8]) -> bool {
    let nb = x.len() / ty.bytes;
    let mut v = vec![0.0f32; nb * QK_K];
    weightkit_quant::dequantize(ty.dtype, x, &mut v).unwrap();
    v.iter().all(|v| v.is_finite())
        && y.chunks_exact(Q8_K_BYTES)
            .all(|yb| f32::from_le_bytes(yb[..4].try_into().unwrap()).is_finite())
}

/// Every dot of `ty` (scalar, api, every level, unaligned copies) against
/// the reference: within the tolerance of the module docs, exactly when
/// `exact` holds `y`'s scale, a power of two, with unit `x` scales, and the
/// magnitude allows it; non-finite when a scale is.
fn check(ty: &Ty, x: &[u8], y: &[u8], exact: Option<f32>) -> Result<(), TestCaseError> {
    let name = ty.dtype.name();
    let nb = x.len() / ty.bytes;
    let (want, mag) = reference(ty, x, y);
    let finite = finite_scales(ty, x, y);
    let scalar = (ty.scalar)(x, y).unwrap();
    let mut got = vec![("scalar", scalar)];
    got.push(("api", weightkit_quant::vec_dot(ty.dtype, x, y).unwrap()));
    if let Some(at) = ty.at {
        // The SIMD kernels sum each block exactly but accumulate the
        // blocks in f32 lanes: held to the same bounds as the scalar code.
        let (xs, ys) = (Shifted::new(x), Shifted::new(y));
        for level in levels() {
            for (x, y) in [(x, y), (xs.get(), ys.get())] {
                got.push((level.name(), at(level, x, y).unwrap()));
            }
        }
    }
    for (what, g) in got {
        if !finite {
            prop_assert!(!g.is_finite(), "{name} {what}: {g} with a non-finite scale");
            continue;
        }
        if mag.is_nan() || mag >= 1e37 {
            continue; // may overflow f32
        }
        if exact.is_some_and(|dy| 8.0 * mag / f64::from(dy.abs()) < 16_777_216.0) {
            prop_assert_eq!(f64::from(g), want, "{} {}: exact", name, what);
        }
        let bound = (nb as f64 + 12.0) * mag / 16_777_216.0 + (nb as f64 + 1.0) * 2f64.powi(-120);
        let err = (f64::from(g) - want).abs();
        prop_assert!(
            err <= bound,
            "{name} {what}: {g} vs reference {want} (error {err:e}, bound {bound:e}, magnitude {mag:e})"
        );
    }
    Ok(())
}

// ------------------------------------------------------------------- inputs

fn extreme_u8() -> impl Strategy<Value = u8> {
    prop_oneof![3 => any::<u8>(), 1 => Just(0xFF), 1 => Just(0x00), 1 => Just(0x80)]
}

fn extreme_i8() -> impl Strategy<Value = i8> {
    prop_oneof![3 => any::<i8>(), 1 => Just(i8::MIN), 1 => Just(i8::MAX)]
}

/// Super-block scales: ordinary, extreme, subnormal, zero, any bits (NaN
/// and infinities included).
fn dx() -> impl Strategy<Value = f16> {
    prop_oneof![
        4 => (-4.0f32..4.0).prop_map(f16::from_f32),
        1 => Just(f16::MAX),
        1 => Just(f16::MIN),
        1 => Just(f16::from_bits(1)),
        1 => Just(f16::from_bits(0x8001)),
        1 => Just(f16::ZERO),
        2 => any::<u16>().prop_map(f16::from_bits),
    ]
}

/// Q8_K scales: ordinary, huge (but `65504 * dy` finite), tiny normal,
/// subnormal (so that `dx * dy` underflows), zero, NaN and infinite.
fn dy() -> impl Strategy<Value = f32> {
    prop_oneof![
        4 => -4.0f32..4.0,
        1 => Just(1e30f32),
        1 => Just(-1e30f32),
        1 => Just(f32::MIN_POSITIVE),
        1 => proptest::num::f32::SUBNORMAL,
        1 => Just(0.0f32),
        1 => Just(f32::NAN),
        1 => Just(f32::INFINITY),
        1 => 1e-30f32..1e30,
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// Arbitrary block bytes with extreme scales, arbitrary quants (-128
    /// included) with their block sums, 1 to 6 blocks.
    #[test]
    fn grid_dots_match_dequantized_reference(
        nb in 1usize..=6,
        xb in proptest::collection::vec(extreme_u8(), 6 * 110),
        yq in proptest::collection::vec(extreme_i8(), 6 * QK_K),
        dx in dx(),
        dy in dy(),
    ) {
        let y = q8_k_raw(dy, &yq[..nb * QK_K]);
        for ty in types() {
            let mut x = xb[..nb * ty.bytes].to_vec();
            set_scale(ty.dtype, ty.bytes, &mut x, dx);
            check(&ty, &x, &y, None)?;
        }
    }

    /// Unit (power-of-two) scales and small quants: every partial sum is
    /// exact in f32, so the dots are exact, -128 quants included.
    #[test]
    fn grid_integer_dots_are_exact(
        nb in 1usize..=3,
        xb in proptest::collection::vec(extreme_u8(), 3 * 110),
        yq in proptest::collection::vec(
            prop_oneof![6 => -8i8..8, 1 => Just(i8::MIN), 1 => Just(i8::MAX)], 3 * QK_K),
        neg_x in any::<bool>(),
        ey in -3i32..3,
    ) {
        let dx = if neg_x { -f16::ONE } else { f16::ONE };
        let dy = 2f32.powi(ey);
        let y = q8_k_raw(dy, &yq[..nb * QK_K]);
        for ty in types() {
            let mut x = xb[..nb * ty.bytes].to_vec();
            set_scale(ty.dtype, ty.bytes, &mut x, dx);
            check(&ty, &x, &y, Some(dy))?;
        }
    }

    /// IQ1_S reads the Q8_K block sums as stored: arbitrary ones give the
    /// reference's correction, at every level.
    #[test]
    fn iq1_s_reads_stored_block_sums(
        nb in 1usize..=4,
        xb in proptest::collection::vec(any::<u8>(), 4 * 50),
        yq in proptest::collection::vec(extreme_i8(), 4 * QK_K),
        bsums in proptest::collection::vec(any::<i16>(), 4 * 16),
        dx in -4.0f32..4.0,
        dy in -4.0f32..4.0,
    ) {
        let ty = types().into_iter().find(|t| t.dtype == DType::IQ1_S).unwrap();
        let mut x = xb[..nb * 50].to_vec();
        set_scale(ty.dtype, ty.bytes, &mut x, f16::from_f32(dx));
        let mut y = q8_k_raw(dy, &yq[..nb * QK_K]);
        for (b, yb) in y.chunks_exact_mut(Q8_K_BYTES).enumerate() {
            for k in 0..16 {
                yb[4 + QK_K + 2 * k..][..2].copy_from_slice(&bsums[16 * b + k].to_le_bytes());
            }
        }
        check(&ty, &x, &y, None)?;
    }
}

// ------------------------------------------------------- fixtures and api

fn testdata(rel: &str) -> std::path::PathBuf {
    std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../testdata")
        .join(rel)
}

/// A smooth, deterministic activation vector (as test-quantize-fns's
/// `generate_data`: `0.1 + 2 cos(i + offset)`).
fn activations(n: usize, offset: f32) -> Vec<f32> {
    (0..n)
        .map(|i| 0.1 + 2.0 * (i as f32 + offset).cos())
        .collect()
}

/// The blocks of gguf-py's `dequant-only` fixture (2 rows of 512 values per
/// type) dotted with Q8_K quantized from `activations` by our (llama.cpp
/// bit-exact) quantizer.
#[test]
fn fixture_rows_match_dequantized_reference() {
    let g = GgufFile::read(testdata("gguf/dequant-only.gguf")).unwrap();
    for ty in types() {
        let name = format!("dq.{}", ty.dtype.name());
        let x = g.tensor(&name).unwrap().data().to_vec();
        assert_eq!(x.len(), 4 * ty.bytes, "{name}");
        let a = activations(4 * QK_K, 0.5);
        let y = weightkit_quant::quantize(DType::Q8_K, &a, 4 * QK_K, None).unwrap();
        for (xr, yr) in x
            .chunks_exact(2 * ty.bytes)
            .zip(y.chunks_exact(2 * Q8_K_BYTES))
        {
            check(&ty, xr, yr, None).unwrap();
        }
    }
}

/// `matvec` on every grid type: quantizes `x` to Q8_K and dots each row;
/// against the dequantized rows times the dequantized Q8_K vector in f64.
#[test]
fn grid_matvec_matches_dequantized_product() {
    let (rows, cols) = (5usize, 3 * QK_K);
    let x = activations(cols, 1.25);
    let xq = weightkit_quant::quantize(DType::Q8_K, &x, cols, None).unwrap();
    let mut xd = vec![0.0f32; cols];
    weightkit_quant::dequantize(DType::Q8_K, &xq, &mut xd).unwrap();
    for ty in types() {
        assert_eq!(weightkit_quant::vec_dot_type(ty.dtype), Some(DType::Q8_K));
        // Deterministic pseudo-random weight bytes with modest scales.
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut w: Vec<u8> = (0..rows * cols / QK_K * ty.bytes)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                (state >> 32) as u8
            })
            .collect();
        set_scale(ty.dtype, ty.bytes, &mut w, f16::from_f32(0.0123));
        let mut y = vec![0.0f32; rows];
        weightkit_quant::matvec(ty.dtype, &w, rows, cols, &x, &mut y).unwrap();
        let mut wd = vec![0.0f32; rows * cols];
        weightkit_quant::dequantize(ty.dtype, &w, &mut wd).unwrap();
        let nb = (cols / QK_K) as f64;
        for (r, (wr, &got)) in wd.chunks_exact(cols).zip(&y).enumerate() {
            let want: f64 = wr
                .iter()
                .zip(&xd)
                .map(|(&a, &b)| f64::from(a) * f64::from(b))
                .sum();
            let mag: f64 = wr
                .iter()
                .zip(&xd)
                .map(|(&a, &b)| (f64::from(a) * f64::from(b)).abs())
                .sum();
            // As in the module docs, plus the rounding of `d * q` in the
            // dequantized Q8_K values (one more `u` per term).
            let bound = (nb + 13.0) * mag / 16_777_216.0;
            let err = (f64::from(got) - want).abs();
            assert!(
                err <= bound,
                "{} row {r}: {got} vs {want} (error {err:e}, bound {bound:e})",
                ty.dtype.name()
            );
        }
    }
}

/// Length mismatches are typed errors, not panics.
#[test]
fn grid_dots_reject_wrong_lengths() {
    for ty in types() {
        let x = vec![0u8; 2 * ty.bytes];
        for ylen in [0, Q8_K_BYTES, 2 * Q8_K_BYTES - 1, 3 * Q8_K_BYTES] {
            let y = vec![0u8; ylen];
            assert!(
                matches!((ty.scalar)(&x, &y), Err(QuantError::BufferLength { .. })),
                "{} y {ylen}",
                ty.dtype.name()
            );
            assert!(weightkit_quant::vec_dot(ty.dtype, &x, &y).is_err());
            if let Some(at) = ty.at {
                for level in levels() {
                    assert!(matches!(
                        at(level, &x, &y),
                        Err(QuantError::BufferLength { .. })
                    ));
                }
            }
        }
        assert_eq!((ty.scalar)(&[], &[]).unwrap(), 0.0);
    }
}
