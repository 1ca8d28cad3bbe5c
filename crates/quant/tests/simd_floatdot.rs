//! The BF16 and F16 dot products at every level this CPU supports (the
//! AVX-512 BF16 kernel of `simd/x86_floatdot.rs` included), against an exact
//! f64 sum: every product of two bf16 or two f16 values is exact in f64, so
//! the only error allowed is f32 lane accumulation (and, for products below
//! f32's normal range, the scalar reference's own rounding of each product
//! to f32). Adversarial rows: subnormals against large values, products below
//! 2^-126, sums cancelling into the subnormal range, values at the range's
//! ends, infinities and NaNs, every length up to a few vectors, unaligned.

use proptest::prelude::*;
use weightkit_quant::floats;
use weightkit_quant::simd::{Level, dispatch};

use crate::simd::levels;

type Dot = fn(Level, &[u8], &[u8]) -> Result<f32, weightkit_quant::QuantError>;

fn le_u16(v: &[u16]) -> Vec<u8> {
    v.iter().flat_map(|h| h.to_le_bytes()).collect()
}

/// The same bytes at an odd address, so no load is aligned.
fn odd(bytes: &[u8]) -> Vec<u8> {
    let mut v = vec![0u8; bytes.len() + 1];
    v[1..].copy_from_slice(bytes);
    v
}

/// Which format a row holds: its dot at a level and its bits' value.
#[derive(Clone, Copy, Debug)]
enum Fmt {
    Bf16,
    F16,
}

impl Fmt {
    fn dot(self) -> Dot {
        match self {
            Fmt::Bf16 => dispatch::vec_dot_bf16_at,
            Fmt::F16 => dispatch::vec_dot_f16_at,
        }
    }

    fn value(self, b: u16) -> f32 {
        match self {
            Fmt::Bf16 => floats::bf16_bits_to_f32(b),
            Fmt::F16 => floats::f16_bits_to_f32(b),
        }
    }
}

/// Checks every level on `x . y` (bits): within the f32 accumulation bound
/// of the exact sum when that is finite, else the scalar reference's class
/// (NaN, or an infinity of its sign).
fn check(fmt: Fmt, x: &[u16], y: &[u16]) -> Result<(), TestCaseError> {
    let n = x.len();
    let (bx, by) = (le_u16(x), le_u16(y));
    let vals: Vec<(f64, f64)> = x
        .iter()
        .zip(y)
        .map(|(&a, &b)| (f64::from(fmt.value(a)), f64::from(fmt.value(b))))
        .collect();
    let exact: f64 = vals.iter().map(|(a, b)| a * b).sum();
    let mag: f64 = vals.iter().map(|(a, b)| (a * b).abs()).sum();
    // 64 lanes (the AVX-512 kernel; 32 in AVX2) each summing about n / 32
    // terms with one rounding each, the reduction across lanes, and below
    // f32's normal range the scalar code's rounding of each product (at most
    // 2^-150 each, inside the absolute term).
    let bound = (n as f64 / 32.0 + 8.0) * f64::from(f32::EPSILON) * mag + 1e-37;
    let dot = fmt.dot();
    let reference = dot(Level::Scalar, &bx, &by).unwrap();
    let (xs, ys) = (odd(&bx), odd(&by));
    for level in levels() {
        for (a, b) in [(&bx[..], &by[..]), (&xs[1..], &ys[1..])] {
            let got = dot(level, a, b).unwrap();
            if mag.is_finite() && exact.abs() < f64::from(f32::MAX) {
                prop_assert!(
                    (f64::from(got) - exact).abs() <= bound,
                    "{:?} {:?} n={}: {} vs {} (bound {})",
                    fmt,
                    level,
                    n,
                    got,
                    exact,
                    bound
                );
            } else {
                prop_assert!(
                    got.is_nan() == reference.is_nan()
                        && (got.is_nan() || got.to_bits() == reference.to_bits()),
                    "{:?} {:?} n={}: {} vs the reference's {}",
                    fmt,
                    level,
                    n,
                    got,
                    reference
                );
            }
        }
        if n > 0 {
            prop_assert!(dot(level, &bx, &by[2..]).is_err());
            prop_assert!(dot(level, &bx[1..], &by[1..]).is_err());
        }
    }
    Ok(())
}

/// bf16 bits with the exponent field in `lo..=hi`, any sign and mantissa.
fn bf16_exp(bits: u16, lo: u16, hi: u16) -> u16 {
    let e = lo + ((bits >> 7) & 0xff) % (hi - lo + 1);
    (bits & 0x807f) | (e << 7)
}

/// f16 bits with the exponent field in `lo..=hi`.
fn f16_exp(bits: u16, lo: u16, hi: u16) -> u16 {
    let e = lo + ((bits >> 10) & 0x1f) % (hi - lo + 1);
    (bits & 0x83ff) | (e << 10)
}

fn rows(max: usize) -> impl Strategy<Value = Vec<(u16, u16)>> {
    proptest::collection::vec((any::<u16>(), any::<u16>()), 0..max)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Moderate exponents (no product leaves f32's range), any length.
    #[test]
    fn random_rows(p in rows(300)) {
        let x: Vec<u16> = p.iter().map(|v| bf16_exp(v.0, 87, 167)).collect();
        let y: Vec<u16> = p.iter().map(|v| bf16_exp(v.1, 87, 167)).collect();
        check(Fmt::Bf16, &x, &y)?;
        // f16: every finite value.
        let x: Vec<u16> = p.iter().map(|v| f16_exp(v.0, 0, 30)).collect();
        let y: Vec<u16> = p.iter().map(|v| f16_exp(v.1, 0, 30)).collect();
        check(Fmt::F16, &x, &y)?;
    }

    /// Subnormals (and zeros) against values up to 2^100 (bf16) or f16's
    /// largest: a kernel that treated subnormals as zero would lose them all.
    #[test]
    fn subnormals_times_large_values(p in rows(200)) {
        let x: Vec<u16> = p.iter().map(|v| v.0 & 0x807f).collect();
        let y: Vec<u16> = p.iter().map(|v| bf16_exp(v.1, 170, 227)).collect();
        check(Fmt::Bf16, &x, &y)?;
        check(Fmt::Bf16, &y, &x)?;
        let x: Vec<u16> = p.iter().map(|v| v.0 & 0x83ff).collect();
        let y: Vec<u16> = p.iter().map(|v| f16_exp(v.1, 20, 30)).collect();
        check(Fmt::F16, &x, &y)?;
    }

    /// Products around and below 2^-126 (exponents near 2^-63 each, some
    /// subnormal): each exact in an FMA, the sum rounded in f32 lanes.
    #[test]
    fn tiny_products(p in rows(200)) {
        let x: Vec<u16> = p.iter().map(|v| bf16_exp(v.0, 0, 80)).collect();
        let y: Vec<u16> = p.iter().map(|v| bf16_exp(v.1, 50, 80)).collect();
        check(Fmt::Bf16, &x, &y)?;
    }

    /// Pairs of products that cancel up to a last-bit difference near 2^-126,
    /// so partial sums fall into the subnormal range.
    #[test]
    fn sums_cancelling_into_subnormals(p in rows(150), e in 60u16..66) {
        let mut x = Vec::new();
        let mut y = Vec::new();
        for v in &p {
            let a = bf16_exp(v.0, e, e);
            let b = bf16_exp(v.1, e, e);
            // a * b, then -(a with its last mantissa bit flipped) * b.
            x.extend([a, (a ^ 1) ^ 0x8000]);
            y.extend([b, b]);
        }
        check(Fmt::Bf16, &x, &y)?;
    }

    /// Values at the top of the range (up to bf16's largest finite) against
    /// the bottom (subnormals included), and infinities and NaNs among
    /// ordinary values.
    #[test]
    fn range_ends_infinities_and_nans(p in rows(200), k in 0usize..200, which in 0u16..4) {
        let x: Vec<u16> = p.iter().map(|v| bf16_exp(v.0, 240, 254)).collect();
        let y: Vec<u16> = p.iter().map(|v| bf16_exp(v.1, 0, 40)).collect();
        check(Fmt::Bf16, &x, &y)?;
        let special = [0x7f80, 0xff80, 0x7fc1, 0xff81][usize::from(which)];
        let mut x: Vec<u16> = p.iter().map(|v| bf16_exp(v.0, 100, 150)).collect();
        let mut y: Vec<u16> = p.iter().map(|v| bf16_exp(v.1, 100, 150)).collect();
        if !x.is_empty() {
            let k = k % x.len();
            x[k] = special;
            check(Fmt::Bf16, &x, &y)?;
            // Infinity times zero.
            y[k] = 0;
            check(Fmt::Bf16, &x, &y)?;
        }
        let special = [0x7c00, 0xfc00, 0x7e01, 0xfc01][usize::from(which)];
        let mut x: Vec<u16> = p.iter().map(|v| f16_exp(v.0, 0, 30)).collect();
        let y: Vec<u16> = p.iter().map(|v| f16_exp(v.1, 29, 30)).collect();
        if !x.is_empty() {
            let k = k % x.len();
            x[k] = special;
            check(Fmt::F16, &x, &y)?;
        }
    }
}

#[test]
fn every_length_and_fixed_rows() {
    // Every length through a few 512-bit vectors and steps, so each tail
    // size of each loop runs; all zeros; the extremes of each format.
    for n in 0..200 {
        let x: Vec<u16> = (0..n).map(|i| 0x3f80 + (i as u16 * 37) % 0x7f).collect();
        let y: Vec<u16> = (0..n).map(|i| 0xbf00 ^ ((i as u16 * 11) % 0x7f)).collect();
        check(Fmt::Bf16, &x, &y).unwrap();
        check(Fmt::F16, &x, &y).unwrap();
        let zeros = vec![0u16; n];
        check(Fmt::Bf16, &zeros, &y).unwrap();
        check(Fmt::F16, &zeros, &zeros).unwrap();
    }
    for (fmt, big, small) in [(Fmt::Bf16, 0x7f7f, 0x0001), (Fmt::F16, 0x7bff, 0x0001)] {
        let x = vec![big; 77];
        let y = vec![small; 77];
        check(fmt, &x, &y).unwrap();
        check(fmt, &y, &y).unwrap();
        // bf16: every product overflows to infinity.
        check(fmt, &x, &x).unwrap();
    }
    // A subnormal bf16 times 2^100 is 2^-33-ish: far from zero.
    let x = vec![0x0001u16; 64];
    let y = vec![0x7180u16; 64];
    for level in levels() {
        let got = dispatch::vec_dot_bf16_at(level, &le_u16(&x), &le_u16(&y)).unwrap();
        let want = 64.0 * floats::bf16_bits_to_f32(0x0001) * floats::bf16_bits_to_f32(0x7180);
        assert_eq!(got, want, "{level:?}");
    }
}
