//! Portable, deterministic elementary functions for the counter-based
//! generator.
//!
//! `f64::ln`, `sin` and `cos` call the platform's libm, whose last bits
//! differ between glibc, musl, macOS and Windows. The default generator
//! promises the same tensor for a seed on every platform, so its Box-Muller
//! transform uses these instead: only `+ - * /` and `sqrt`, which IEEE 754
//! rounds identically everywhere (Rust never contracts them into FMAs).
//! They are accurate to a few ulp, far below anything a sampler can see.

/// ln(2) split so that `k * LN2_HI` is exact for |k| < 2^11.
const LN2_HI: f64 = f64::from_bits(0x3fe6_2e42_fee0_0000); // 6.93147180369123816490e-01
const LN2_LO: f64 = f64::from_bits(0x3dea_39ef_3579_3c76); // 1.90821492927058770002e-10

/// `1 / (2k + 3)` for k = 0..11: the atanh series of `ln`.
const INV_ODD: [f64; 11] = {
    let mut t = [0.0; 11];
    let mut k = 0;
    while k < 11 {
        t[k] = 1.0 / (2 * k + 3) as f64;
        k += 1;
    }
    t
};

/// Taylor coefficients `(-1)^k / (2k+1)!` (sine) and `(-1)^k / (2k)!`
/// (cosine) for k = 1..=7, evaluated at compile time (IEEE arithmetic, the
/// same on every host).
const SIN_C: [f64; 7] = taylor(1);
const COS_C: [f64; 7] = taylor(0);

const fn taylor(odd: usize) -> [f64; 7] {
    let mut t = [0.0; 7];
    let mut k = 1;
    while k <= 7 {
        let n = 2 * k + odd;
        let mut f = 1.0;
        let mut i = 2;
        while i <= n {
            f *= i as f64;
            i += 1;
        }
        t[k - 1] = if k % 2 == 1 { -1.0 / f } else { 1.0 / f };
        k += 1;
    }
    t
}

/// `(sin(q pi/4), cos(q pi/4))` for q = 0..8.
const OCTANT: [(f64, f64); 8] = {
    let h = std::f64::consts::FRAC_1_SQRT_2;
    [
        (0.0, 1.0),
        (h, h),
        (1.0, 0.0),
        (h, -h),
        (0.0, -1.0),
        (-h, -h),
        (-1.0, 0.0),
        (-h, h),
    ]
};

/// Natural logarithm of a positive, finite, normal `x` (the only inputs the
/// samplers produce); 0 and subnormals give `-inf`-like large negatives only
/// through the exponent, which callers never rely on.
pub(crate) fn ln(x: f64) -> f64 {
    debug_assert!(x > 0.0 && x.is_finite());
    let bits = x.to_bits();
    let mut e = ((bits >> 52) & 0x7ff) as i64 - 1023;
    // Mantissa in [1, 2).
    let mut m = f64::from_bits((bits & 0x000f_ffff_ffff_ffff) | 0x3ff0_0000_0000_0000);
    if m > std::f64::consts::SQRT_2 {
        m *= 0.5;
        e += 1;
    }
    // ln(m) = 2 atanh(s), s = (m - 1) / (m + 1), |s| <= 0.1716.
    let f = m - 1.0;
    let s = f / (2.0 + f);
    let s2 = s * s;
    // Odd series 1/3 + s^2/5 + ... + s^20/23 (truncation < 1e-19), by
    // Estrin's scheme: the same fixed operation order everywhere, with
    // short dependency chains.
    let c = &INV_ODD;
    let x = s2;
    let x2 = x * x;
    let x4 = x2 * x2;
    let x8 = x4 * x4;
    let p = ((c[0] + c[1] * x) + x2 * (c[2] + c[3] * x))
        + x4 * ((c[4] + c[5] * x) + x2 * (c[6] + c[7] * x))
        + x8 * ((c[8] + c[9] * x) + x2 * c[10]);
    let ef = e as f64;
    let hfsq = 0.5 * f * f;
    // ln(1+f) = f - hfsq + s*(hfsq + R) with R = 2 s^2 p (fdlibm's split).
    let r = 2.0 * s2 * p;
    ef * LN2_HI - ((hfsq - (s * (hfsq + r) + ef * LN2_LO)) - f)
}

/// e^x for x <= 0 (underflows to 0 below -745).
pub(crate) fn exp_neg(x: f64) -> f64 {
    if x.is_nan() {
        return x;
    }
    if x < -745.0 {
        return 0.0;
    }
    let k = (x * std::f64::consts::LOG2_E).round();
    let r = (x - k * LN2_HI) - k * LN2_LO;
    // Taylor to r^15 / 15!, |r| <= 0.35.
    let mut p = 1.0;
    let mut i = 15.0;
    while i >= 1.0 {
        p = 1.0 + p * r / i;
        i -= 1.0;
    }
    // 2^k in two steps so that subnormal results stay correct enough.
    let k = k as i64;
    let half = k / 2;
    p * pow2(half) * pow2(k - half)
}

fn pow2(k: i64) -> f64 {
    // k in [-1022, 1023] here (|x| <= 745 gives |k| <= 1075, halved).
    f64::from_bits(((k + 1023) as u64) << 52)
}

/// `(sin(2 pi u), cos(2 pi u))` for `u` in `[0, 1)`.
///
/// The reduction is exact: `8u` splits into an octant and a fraction
/// without rounding, so no multiple of pi is ever subtracted.
pub(crate) fn sincos_2pi(u: f64) -> (f64, f64) {
    let t = u * 8.0;
    // Nearest octant without libm's `round` (no SSE4.1 on baseline x86-64):
    // t >= 0, so truncating t + 0.5 rounds; |f| <= 0.5 up to one ulp.
    let q = (t + 0.5) as i64;
    let f = t - q as f64; // exact
    let th = f * std::f64::consts::FRAC_PI_4;
    let t2 = th * th;
    // sin(th) = th - th^3/3! + ... ; cos(th) = 1 - th^2/2! + ...
    // Degree 7 in th^2 (truncation < 1e-18 for |th| <= pi/8), Estrin.
    let t4 = t2 * t2;
    let estrin = |c: &[f64; 7]| {
        ((c[0] + c[1] * t2) + t4 * (c[2] + c[3] * t2))
            + (t4 * t4) * ((c[4] + c[5] * t2) + t4 * c[6])
    };
    let sp = estrin(&SIN_C);
    let cp = estrin(&COS_C);
    let s = th + th * t2 * sp;
    let c = 1.0 + t2 * cp;
    // Rotate by q * pi/4 with a table instead of a branch (an 8-way branch
    // on random data mispredicts almost every time).
    let (sq, cq) = OCTANT[(q & 7) as usize];
    (sq * c + cq * s, cq * c - sq * s)
}

/// The error function, to about 1e-15 absolute.
///
/// Series `erf(x) = 2/sqrt(pi) e^{-x^2} sum 2^n x^{2n+1} / (2n+1)!!`, whose
/// terms are all positive (no cancellation); `|x| >= 6` is `+-1` to double
/// precision.
pub(crate) fn erf(x: f64) -> f64 {
    if x.is_nan() {
        return x;
    }
    let ax = x.abs();
    if ax >= 6.0 {
        return x.signum();
    }
    let x2 = ax * ax;
    let mut term = ax;
    let mut sum = ax;
    let mut n = 0.0;
    while n < 400.0 {
        n += 1.0;
        term *= 2.0 * x2 / (2.0 * n + 1.0);
        sum += term;
        if term < sum * 1e-17 {
            break;
        }
    }
    let r = (2.0 / std::f64::consts::PI.sqrt()) * exp_neg(-x2) * sum;
    r.min(1.0).copysign(x)
}

#[cfg(test)]
#[allow(clippy::excessive_precision)]
mod tests {
    use super::*;

    fn ulps(a: f64, b: f64) -> u64 {
        (a.to_bits() as i64 - b.to_bits() as i64).unsigned_abs()
    }

    #[test]
    fn ln_close_to_libm() {
        let mut x = 1e-300;
        while x < 1e300 {
            assert!(ulps(ln(x), x.ln()) <= 2, "{x}: {} vs {}", ln(x), x.ln());
            x *= 1.37;
        }
        for i in 1..10_000u32 {
            let x = f64::from(i) / 10_000.0;
            assert!(ulps(ln(x), x.ln()) <= 2, "{x}");
        }
        assert_eq!(ln(1.0), 0.0);
    }

    #[test]
    fn sincos_close_to_libm() {
        for i in 0..100_000u32 {
            let u = f64::from(i) / 100_000.0;
            let (s, c) = sincos_2pi(u);
            let a = 2.0 * std::f64::consts::PI * u;
            assert!((s - a.sin()).abs() < 1e-15, "{u} {}", s - a.sin());
            assert!((c - a.cos()).abs() < 1e-15, "{u} {}", c - a.cos());
        }
    }

    #[test]
    fn exp_and_erf() {
        for i in 0..7000 {
            let x = -f64::from(i) * 0.1;
            let (a, b) = (exp_neg(x), x.exp());
            assert!((a - b).abs() <= 4.0 * f64::EPSILON * b, "{x}: {a} vs {b}");
        }
        // Reference values (mpmath, 20 digits).
        let cases = [
            (0.0, 0.0),
            (0.1, 0.112_462_916_018_284_892_2),
            (0.5, 0.520_499_877_813_046_537_7),
            (1.0, 0.842_700_792_949_714_869_3),
            (std::f64::consts::SQRT_2, 0.954_499_736_103_641_6),
            (2.0, 0.995_322_265_018_952_734_2),
            (3.0, 0.999_977_909_503_001_414_6),
            (4.5, 0.999_999_999_803_383_955_8),
        ];
        for (x, want) in cases {
            assert!((erf(x) - want).abs() < 2e-15, "erf({x}) = {}", erf(x));
            assert!((erf(-x) + want).abs() < 2e-15);
        }
        assert_eq!(erf(7.0), 1.0);
    }
}
