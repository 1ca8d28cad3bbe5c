//! A lane-by-lane port of the `log256_ps` and `sincos256_ps` that PyTorch's
//! AVX2 build uses for its batched Box-Muller (`ATen/native/cpu/
//! avx_mathfun.h`, Cephes polynomials by Julien Pommier and Giovanni
//! Garberoglio, zlib licence).
//!
//! Bit-exactness needs more than the polynomials: PyTorch's Linux wheels are
//! built by GCC with `-mfma` for the AVX2 kernels, and GCC contracts an
//! intrinsic multiply into the add that consumes it (`-ffp-contract=fast`,
//! the GNU default). The port therefore fuses exactly where GCC does: every
//! multiply whose only uses are adds or subtracts, taken in statement order.
//! Checked against torch's own output (`testdata/init`).

// The constants are spelled exactly as in avx_mathfun.h, so that each
// rounds to the same f32 as there: more digits than an f32 holds, and a
// SQRTHF that is not quite `FRAC_1_SQRT_2` in the source's eyes.
#![allow(clippy::excessive_precision, clippy::approx_constant)]

/// Multiply-add fused where the AVX2 build fuses.
#[inline]
fn fma(a: f32, b: f32, c: f32) -> f32 {
    crate::float::fma32(a, b, c)
}

const SQRTHF: f32 = 0.707_106_781_186_547_524;
const LOG_P: [f32; 9] = [
    7.037_683_629_2E-2,
    -1.151_461_031_0E-1,
    1.167_699_874_0E-1,
    -1.242_014_084_6E-1,
    1.424_932_278_7E-1,
    -1.666_805_766_5E-1,
    2.000_071_476_5E-1,
    -2.499_999_399_3E-1,
    3.333_333_117_4E-1,
];
const LOG_Q1: f32 = -2.121_944_40e-4;
const LOG_Q2: f32 = 0.693_359_375;

const FOPI: f32 = 1.273_239_544_735_16;
const MDP1: f32 = -0.785_156_25;
const MDP2: f32 = -2.418_756_484_985_351_562_5e-4;
const MDP3: f32 = -3.774_894_977_445_941_08e-8;
const SINCOF: [f32; 3] = [-1.951_529_589_1E-4, 8.332_160_873_6E-3, -1.666_665_461_1E-1];
const COSCOF: [f32; 3] = [
    2.443_315_711_809_948E-005,
    -1.388_731_625_493_765E-003,
    4.166_664_568_298_827E-002,
];

/// Eight lanes, as in one `__m256`.
pub(crate) type V8 = [f32; 8];

#[inline(always)]
fn map(a: V8, f: impl Fn(f32) -> f32) -> V8 {
    let mut o = [0.0; 8];
    for i in 0..8 {
        o[i] = f(a[i]);
    }
    o
}

#[inline(always)]
fn fma8(a: V8, b: V8, c: V8) -> V8 {
    // The common case without branches (so that the lanes interleave):
    // the f64 result, unless some lane is a halfway, tiny or non-finite
    // case, which `fma` settles exactly.
    let mut r = [0f64; 8];
    let mut hard = false;
    for i in 0..8 {
        let v = f64::from(a[i]) * f64::from(b[i]) + f64::from(c[i]);
        let bits = v.to_bits();
        let exp = (bits >> 52) & 0x7ff;
        hard |= (bits & 0x1fff_ffff == 0x1000_0000) | (exp < 1023 - 126) | (exp == 0x7ff);
        r[i] = v;
    }
    let mut o = [0.0; 8];
    if hard {
        for i in 0..8 {
            o[i] = fma(a[i], b[i], c[i]);
        }
    } else {
        for i in 0..8 {
            o[i] = r[i] as f32;
        }
    }
    o
}

#[inline(always)]
fn fma8s(a: V8, b: f32, c: f32) -> V8 {
    fma8(a, [b; 8], [c; 8])
}

/// `log256_ps` for inputs in `(0, 1]` (the only ones the Box-Muller gives
/// it), lane by lane but op by op across lanes, as the vector code runs.
#[inline(always)]
pub(crate) fn log256_ps(x: V8) -> V8 {
    let mut out = [0.0; 8];
    let mut xs = [0.0f32; 8];
    let mut e = [0.0f32; 8];
    for i in 0..8 {
        let v = x[i].max(f32::MIN_POSITIVE);
        let bits = v.to_bits();
        let imm0 = (bits >> 23) as i32 - 0x7f;
        let mut m = f32::from_bits((bits & !0x7f80_0000) | 0.5f32.to_bits());
        let mut ei = imm0 as f32 + 1.0;
        let mask = m < SQRTHF;
        let tmp = if mask { m } else { 0.0 };
        m -= 1.0;
        ei -= if mask { 1.0 } else { 0.0 };
        xs[i] = m + tmp;
        e[i] = ei;
    }
    let z = map2(xs, xs, |a, b| a * b);
    let mut y = [LOG_P[0]; 8];
    for &p in &LOG_P[1..] {
        y = fma8(y, xs, [p; 8]);
    }
    y = map2(y, xs, |a, b| a * b);
    // y*z + e*q1: the first multiply in statement order is fused.
    let eq1 = map(e, |v| v * LOG_Q1);
    y = fma8(y, z, eq1);
    // y - z*0.5 (z*0.5 is exact, so fusing changes nothing).
    y = fma8(map(z, |v| -v), [0.5; 8], y);
    for i in 0..8 {
        let v = xs[i] + y[i];
        let v = fma(e[i], LOG_Q2, v);
        out[i] = if x[i] <= 0.0 { f32::NAN } else { v };
    }
    out
}

#[inline(always)]
fn map2(a: V8, b: V8, f: impl Fn(f32, f32) -> f32) -> V8 {
    let mut o = [0.0; 8];
    for i in 0..8 {
        o[i] = f(a[i], b[i]);
    }
    o
}

/// `sincos256_ps`: `(sin x, cos x)` for eight lanes.
#[inline(always)]
pub(crate) fn sincos256_ps(x: V8) -> (V8, V8) {
    let mut sign_sin = [0u32; 8];
    let mut sign_cos = [0u32; 8];
    let mut poly_mask = [false; 8];
    let mut xr = [0.0f32; 8];
    let mut yf = [0.0f32; 8];
    for i in 0..8 {
        let xa = x[i].abs();
        // _mm256_cvttps_epi32: truncation (the Box-Muller angle is < 2 pi,
        // far inside the i32 range).
        let mut imm2 = (xa * FOPI) as i32;
        imm2 = imm2.wrapping_add(1) & !1;
        yf[i] = imm2 as f32;
        let swap_sign_sin = ((imm2 & 4) as u32) << 29;
        poly_mask[i] = imm2 & 2 == 0;
        let imm4 = imm2.wrapping_sub(2);
        sign_cos[i] = ((!imm4 & 4) as u32) << 29;
        sign_sin[i] = (x[i].to_bits() & 0x8000_0000) ^ swap_sign_sin;
        xr[i] = xa;
    }
    xr = fma8(yf, [MDP1; 8], xr);
    xr = fma8(yf, [MDP2; 8], xr);
    xr = fma8(yf, [MDP3; 8], xr);
    let z = map2(xr, xr, |a, b| a * b);
    let mut yc = fma8s(z, COSCOF[0], COSCOF[1]);
    yc = fma8(yc, z, [COSCOF[2]; 8]);
    yc = map2(yc, z, |a, b| a * b);
    let tmp = map(z, |v| v * 0.5);
    yc = fma8(yc, z, map(tmp, |v| -v));
    yc = map(yc, |v| v + 1.0);
    let mut ys = fma8s(z, SINCOF[0], SINCOF[1]);
    ys = fma8(ys, z, [SINCOF[2]; 8]);
    ys = map2(ys, z, |a, b| a * b);
    ys = fma8(ys, xr, xr);
    let mut s = [0.0; 8];
    let mut c = [0.0; 8];
    for i in 0..8 {
        let ysin2 = if poly_mask[i] { ys[i] } else { 0.0 };
        let ysin1 = if poly_mask[i] { 0.0 } else { yc[i] };
        let y2 = ys[i] - ysin2;
        let y1 = yc[i] - ysin1;
        s[i] = f32::from_bits((ysin1 + ysin2).to_bits() ^ sign_sin[i]);
        c[i] = f32::from_bits((y1 + y2).to_bits() ^ sign_cos[i]);
    }
    (s, c)
}

/// One lane of [`log256_ps`] (tests).
#[cfg(test)]
fn log_ps(x: f32) -> f32 {
    log256_ps([x; 8])[0]
}

/// One lane of [`sincos256_ps`] (tests).
#[cfg(test)]
fn sincos_ps(x: f32) -> (f32, f32) {
    let (s, c) = sincos256_ps([x; 8]);
    (s[0], c[0])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accurate_enough() {
        for i in 1..=1 << 16 {
            let x = i as f32 / 65536.0;
            assert!((log_ps(x) - x.ln()).abs() <= 2.5e-7 * x.ln().abs().max(1.0));
        }
        for i in 0..1 << 16 {
            let x = i as f32 / 65536.0 * 6.283_185_5;
            let (s, c) = sincos_ps(x);
            assert!((s - x.sin()).abs() < 3e-7, "sin {x}");
            assert!((c - x.cos()).abs() < 3e-7, "cos {x}");
        }
    }
}
