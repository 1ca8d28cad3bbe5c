//! The F16, BF16 and F32 row kernels at every level this CPU supports:
//! conversions bit for bit against the scalar references (which are checked
//! against closed-form cases and `half` here), dot products against an exact
//! f64 sum within the error bound of f32 lane accumulation.

use proptest::prelude::*;
use weightkit_core::DType;
use weightkit_quant::floats;
use weightkit_quant::simd::{Level, dispatch};

use crate::simd::levels;

type Res<T> = Result<T, weightkit_quant::QuantError>;
type Widen = fn(Level, &[u8], &mut [f32]) -> Res<()>;
type Narrow = fn(Level, &[f32], &mut [u8]) -> Res<()>;
type Dot = fn(Level, &[u8], &[u8]) -> Res<f32>;
/// A dot case: name, kernel, the two rows' bytes, the values as f64.
type DotCase = (&'static str, Dot, Vec<u8>, Vec<u8>, Vec<(f64, f64)>);

fn le_u16(v: &[u16]) -> Vec<u8> {
    v.iter().flat_map(|h| h.to_le_bytes()).collect()
}

fn le_f32(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|h| h.to_le_bytes()).collect()
}

/// The same bytes at an odd address, so no load is aligned.
fn odd(bytes: &[u8]) -> Vec<u8> {
    let mut v = vec![0u8; bytes.len() + 1];
    v[1..].copy_from_slice(bytes);
    v
}

fn check_widen(f: Widen, one: fn(u16) -> f32, h: &[u16]) {
    let bytes = le_u16(h);
    let want: Vec<u32> = h.iter().map(|&b| one(b).to_bits()).collect();
    let shifted = odd(&bytes);
    for level in levels() {
        for src in [&bytes[..], &shifted[1..]] {
            let mut got = vec![0f32; h.len()];
            f(level, src, &mut got).unwrap();
            let got: Vec<u32> = got.iter().map(|v| v.to_bits()).collect();
            assert_eq!(got, want, "{level:?}");
        }
        let mut short = vec![0f32; h.len() + 1];
        assert!(f(level, &bytes, &mut short).is_err());
    }
}

fn check_narrow(f: Narrow, one: fn(f32) -> u16, x: &[f32]) {
    let want = le_u16(&x.iter().map(|&v| one(v)).collect::<Vec<_>>());
    for level in levels() {
        let mut got = vec![0u8; 2 * x.len() + 1];
        f(level, x, &mut got[1..]).unwrap();
        assert_eq!(got[1..], want[..], "{level:?}");
        assert!(f(level, x, &mut got).is_err());
    }
}

/// f32 bits that hit every class: NaNs (quiet and signalling, with payload),
/// infinities, subnormals, values at f16's and bf16's rounding ties and
/// overflow edges.
fn any_f32() -> impl Strategy<Value = f32> {
    prop_oneof![
        any::<u32>().prop_map(f32::from_bits),
        // Near f16's range and its ties: a random f16 plus a random low part.
        (any::<u16>(), any::<u16>()).prop_map(|(h, lo)| f32::from_bits(
            (half::f16::from_bits(h).to_f32().to_bits() & !0x1fff) | u32::from(lo & 0x1fff)
        )),
        // bf16 ties exactly: the low 16 bits 0x8000.
        any::<u16>().prop_map(|h| f32::from_bits((u32::from(h) << 16) | 0x8000)),
        (-70000.0f32..70000.0),
        (-1e-5f32..1e-5),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn widening_is_exact(h in proptest::collection::vec(any::<u16>(), 0..80)) {
        check_widen(dispatch::dequantize_row_f16_at, floats::f16_bits_to_f32, &h);
        check_widen(dispatch::dequantize_row_bf16_at, floats::bf16_bits_to_f32, &h);
    }

    #[test]
    fn narrowing_rounds_as_the_scalar_code(x in proptest::collection::vec(any_f32(), 0..80)) {
        check_narrow(dispatch::quantize_row_f16_at, floats::f32_to_f16_bits, &x);
        check_narrow(dispatch::quantize_row_bf16_at, floats::f32_to_bf16_bits, &x);
    }

    #[test]
    fn dots_track_the_exact_sum(
        pairs in proptest::collection::vec((any::<u16>(), any::<u16>(), -1e4f32..1e4, -1e4f32..1e4), 0..300),
        scale in 0u32..3,
    ) {
        // f16: any finite values (their products are exact in f32).
        let finite = |b: u16| if b & 0x7c00 == 0x7c00 { b & 0x83ff } else { b };
        let hx: Vec<u16> = pairs.iter().map(|p| finite(p.0)).collect();
        let hy: Vec<u16> = pairs.iter().map(|p| finite(p.1)).collect();
        // bf16: exponents kept within +-2^40, so no product leaves f32's range.
        let tame = |b: u16| (b & 0x807f) | (((b >> 7) & 0x3f) + 0x5f - 0x20 * scale as u16) << 7;
        let bx: Vec<u16> = pairs.iter().map(|p| tame(p.0)).collect();
        let by: Vec<u16> = pairs.iter().map(|p| tame(p.1)).collect();
        let fx: Vec<f32> = pairs.iter().map(|p| p.2).collect();
        let fy: Vec<f32> = pairs.iter().map(|p| p.3).collect();
        let n = pairs.len();
        let cases: [DotCase; 3] = [
            ("f16", dispatch::vec_dot_f16_at, le_u16(&hx), le_u16(&hy),
             hx.iter().zip(&hy).map(|(&a, &b)| (f64::from(floats::f16_bits_to_f32(a)), f64::from(floats::f16_bits_to_f32(b)))).collect()),
            ("bf16", dispatch::vec_dot_bf16_at, le_u16(&bx), le_u16(&by),
             bx.iter().zip(&by).map(|(&a, &b)| (f64::from(floats::bf16_bits_to_f32(a)), f64::from(floats::bf16_bits_to_f32(b)))).collect()),
            ("f32", dispatch::vec_dot_f32_at, le_f32(&fx), le_f32(&fy),
             fx.iter().zip(&fy).map(|(&a, &b)| (f64::from(a), f64::from(b))).collect()),
        ];
        for (name, dot, x, y, vals) in cases {
            let exact: f64 = vals.iter().map(|(a, b)| a * b).sum();
            let mag: f64 = vals.iter().map(|(a, b)| (a * b).abs()).sum();
            // Each of 32 lanes sums about n / 32 terms (FMA: one rounding
            // each), then 5 additions across lanes and the f64 tail; the
            // scalar code rounds each bf16/f32 product once and the f64 sum
            // once at the end.
            let bound = (n as f64 / 32.0 + 8.0) * f64::from(f32::EPSILON) * mag + 1e-37;
            let (xs, ys) = (odd(&x), odd(&y));
            for level in levels() {
                let got = f64::from(dot(level, &xs[1..], &ys[1..]).unwrap());
                prop_assert!((got - exact).abs() <= bound,
                    "{} {:?} n={}: {} vs {} (bound {})", name, level, n, got, exact, bound);
                if n > 0 {
                    prop_assert!(dot(level, &x, &y[1..]).is_err());
                }
            }
        }
    }
}

#[test]
fn the_scalar_references_agree_with_half_and_closed_forms() {
    // Every f16 bit pattern widens as `half` does, and narrows back to itself
    // (NaNs to a NaN).
    for b in 0..=u16::MAX {
        let v = floats::f16_bits_to_f32(b);
        assert_eq!(v.to_bits(), half::f16::from_bits(b).to_f32().to_bits());
        let back = floats::f32_to_f16_bits(v);
        if v.is_nan() {
            assert!(half::f16::from_bits(back).is_nan());
        } else {
            assert_eq!(back, b);
        }
        assert_eq!(
            floats::bf16_bits_to_f32(b).to_bits(),
            u32::from(b) << 16,
            "bf16 {b:#06x}"
        );
    }
    // Ties to even, overflow to infinity.
    assert_eq!(floats::f32_to_f16_bits(1.0 + 2f32.powi(-11)), 0x3c00);
    assert_eq!(floats::f32_to_f16_bits(1.0 + 3.0 * 2f32.powi(-11)), 0x3c02);
    assert_eq!(floats::f32_to_f16_bits(65520.0), 0x7c00);
    assert_eq!(floats::f32_to_f16_bits(65519.99), 0x7bff);
}

#[test]
fn byte_api_dots_rows_of_their_own_type() {
    // ggml's vec_dot_type: F16 with F16, BF16 with BF16, F32 with F32.
    let x: Vec<f32> = (0..4096).map(|i| 0.1 + 2.0 * (i as f32).cos()).collect();
    let y: Vec<f32> = (0..4096)
        .map(|i| 0.1 + 2.0 * (i as f32 + 1.0).cos())
        .collect();
    for dtype in [DType::F16, DType::BF16, DType::F32] {
        assert_eq!(weightkit_quant::vec_dot_type(dtype), Some(dtype));
        let qx = weightkit_quant::quantize(dtype, &x, 4096, None).unwrap();
        let qy = weightkit_quant::quantize(dtype, &y, 4096, None).unwrap();
        let mut wx = vec![0f32; 4096];
        let mut wy = vec![0f32; 4096];
        weightkit_quant::dequantize(dtype, &qx, &mut wx).unwrap();
        weightkit_quant::dequantize(dtype, &qy, &mut wy).unwrap();
        let exact: f64 = wx
            .iter()
            .zip(&wy)
            .map(|(a, b)| f64::from(*a) * f64::from(*b))
            .sum();
        let got = f64::from(weightkit_quant::vec_dot(dtype, &qx, &qy).unwrap());
        assert!(
            (got - exact).abs() <= 1e-4 * exact.abs().max(1.0),
            "{dtype:?}: {got} vs {exact}"
        );
        assert!(weightkit_quant::quantize(dtype, &[f32::NAN; 4], 4, None).is_err());
    }
}

/// Rows whose products are all -0.0 or NaN, with and without a tail after
/// the vector loop (64 and 67 values): every level gives the scalar
/// reference's bits, +0.0 (each sum starts at +0.0, and the kernels return
/// the f32 sum as it is when there is no tail) and a quiet NaN.
#[test]
fn signed_zero_and_nan_dots_match_the_scalar_code() {
    type Dot = fn(Level, &[u8], &[u8]) -> Result<f32, weightkit_quant::QuantError>;
    type Scalar = fn(&[u8], &[u8]) -> Result<f32, weightkit_quant::QuantError>;
    /// Name, kernel, scalar code, and the bytes of -0.0, 1.0 and a NaN.
    type Case = (&'static str, Dot, Scalar, Vec<u8>, Vec<u8>, Vec<u8>);
    let cases: [Case; 3] = [
        (
            "f16",
            dispatch::vec_dot_f16_at,
            floats::vec_dot_f16,
            0x8000u16.to_le_bytes().to_vec(),
            0x3c00u16.to_le_bytes().to_vec(),
            0x7e00u16.to_le_bytes().to_vec(),
        ),
        (
            "bf16",
            dispatch::vec_dot_bf16_at,
            floats::vec_dot_bf16,
            0x8000u16.to_le_bytes().to_vec(),
            0x3f80u16.to_le_bytes().to_vec(),
            0x7fc0u16.to_le_bytes().to_vec(),
        ),
        (
            "f32",
            dispatch::vec_dot_f32_at,
            floats::vec_dot_f32,
            (-0.0f32).to_le_bytes().to_vec(),
            1.0f32.to_le_bytes().to_vec(),
            f32::NAN.to_le_bytes().to_vec(),
        ),
    ];
    for (name, dot, scalar, neg_zero, one, nan) in cases {
        for n in [64, 67] {
            let zeros = neg_zero.repeat(n);
            let ones = one.repeat(n);
            let mut with_nan = ones.clone();
            with_nan[..nan.len()].copy_from_slice(&nan);
            let want = scalar(&zeros, &ones).unwrap();
            assert_eq!(want.to_bits(), 0, "{name}: the scalar reference gives +0.0");
            for level in levels() {
                let got = dot(level, &zeros, &ones).unwrap();
                assert_eq!(got.to_bits(), want.to_bits(), "{name} {level:?} n={n}");
                assert!(
                    dot(level, &with_nan, &ones).unwrap().is_nan(),
                    "{name} {level:?} n={n}"
                );
            }
        }
    }
}
