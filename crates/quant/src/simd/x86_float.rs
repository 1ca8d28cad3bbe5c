//! x86_64 AVX2 (+ FMA + F16C) kernels for F16, BF16 and F32 rows, the fast
//! paths of [`crate::floats`].
//!
//! Rows are byte slices at any alignment (unaligned loads cost nothing on
//! these CPUs). The caller ([`super::dispatch`]) checks the lengths; a
//! mismatch makes a kernel process the shorter side, never more.
//!
//! * Conversions are bit-identical to the scalar ones: `vcvtph2ps` is exact,
//!   `vcvtps2ph` with round-to-nearest-even rounds as `half` does (NaN
//!   included: both quiet it and keep the top payload bits), and bf16
//!   rounding is ggml's integer formula lane by lane, with its NaN case.
//! * Dot products sum FMA products in four 8-lane f32 accumulators, as
//!   ggml's AVX2 `ggml_vec_dot_f16/bf16/f32` do (the scalar references sum in
//!   f64), and add the last values that fill no vector in f64. BF16 rows are
//!   widened without shuffles: a 32-bit lane holding bf16 values `2i`, `2i + 1`
//!   gives value `2i` shifted left by 16 and value `2i + 1` masked, and the
//!   order of a sum's terms does not matter to a dot product of two rows
//!   widened the same way.

use std::arch::x86_64::*;

use super::x86::{hsum_f32x8, load_u8x16, load_u8x32};
use crate::floats::{bf16_bits_to_f32, f16_bits_to_f32, f32_to_bf16_bits, f32_to_f16_bits};

/// Loads eight `f32` from 32 bytes.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn load_f32x8(b: &[u8; 32]) -> __m256 {
    _mm256_castsi256_ps(load_u8x32(b))
}

/// Stores eight `f32`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn store_f32x8(out: &mut [f32; 8], v: __m256) {
    // SAFETY: `out` is 8 writable f32 and `storeu` has no alignment requirement.
    unsafe { _mm256_storeu_ps(out.as_mut_ptr(), v) }
}

/// The f32 values of 8 f16 (16 bytes).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn f16x8(b: &[u8; 16]) -> __m256 {
    _mm256_cvtph_ps(load_u8x16(b))
}

fn u16_at(c: &[u8]) -> u16 {
    u16::from_le_bytes([c[0], c[1]])
}

/// f16 bytes -> f32.
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C.
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn dequantize_row_f16(x: &[u8], y: &mut [f32]) {
    let n = y.len().min(x.len() / 2);
    let (x, y) = (&x[..2 * n], &mut y[..n]);
    let (xc, xr) = x.as_chunks::<16>();
    let (yc, yr) = y.as_chunks_mut::<8>();
    for (s, d) in xc.iter().zip(yc) {
        store_f32x8(d, f16x8(s));
    }
    for (d, c) in yr.iter_mut().zip(xr.chunks_exact(2)) {
        *d = f16_bits_to_f32(u16_at(c));
    }
}

/// bf16 bytes -> f32.
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C.
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn dequantize_row_bf16(x: &[u8], y: &mut [f32]) {
    let n = y.len().min(x.len() / 2);
    let (x, y) = (&x[..2 * n], &mut y[..n]);
    let (xc, xr) = x.as_chunks::<16>();
    let (yc, yr) = y.as_chunks_mut::<8>();
    for (s, d) in xc.iter().zip(yc) {
        let w = _mm256_slli_epi32::<16>(_mm256_cvtepu16_epi32(load_u8x16(s)));
        store_f32x8(d, _mm256_castsi256_ps(w));
    }
    for (d, c) in yr.iter_mut().zip(xr.chunks_exact(2)) {
        *d = bf16_bits_to_f32(u16_at(c));
    }
}

/// Narrows `x` to two-byte values in `y` (the shorter side decides): `W`
/// values per `step` (`B = 2 W` bytes out), the last ones through `one`.
/// The row loop of every f32 -> f16/bf16 kernel.
#[inline(always)]
pub(super) fn narrow<const W: usize, const B: usize>(
    x: &[f32],
    y: &mut [u8],
    step: impl Fn(&[f32; W], &mut [u8; B]),
    one: fn(f32) -> u16,
) {
    const { assert!(B == 2 * W) };
    let n = x.len().min(y.len() / 2);
    let (x, y) = (&x[..n], &mut y[..2 * n]);
    let (xc, xr) = x.as_chunks::<W>();
    let (yc, yr) = y.as_chunks_mut::<B>();
    for (s, d) in xc.iter().zip(yc) {
        step(s, d);
    }
    for (c, v) in yr.chunks_exact_mut(2).zip(xr) {
        c.copy_from_slice(&one(*v).to_le_bytes());
    }
}

/// f32 -> f16 bytes, nearest even.
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C.
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn quantize_row_f16(x: &[f32], y: &mut [u8]) {
    narrow(
        x,
        y,
        |s: &[f32; 8], d: &mut [u8; 16]| {
            // SAFETY: `s` is 8 readable f32 (`loadu`: any alignment).
            let v = unsafe { _mm256_loadu_ps(s.as_ptr()) };
            let h = _mm256_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(v);
            // SAFETY: `d` is 16 writable bytes (`storeu`: any alignment).
            unsafe { _mm_storeu_si128(d.as_mut_ptr().cast(), h) };
        },
        f32_to_f16_bits,
    );
}

/// ggml's f32 -> bf16 rounding in each 32-bit lane (the result in the low
/// 16 bits, the high 16 bits zero).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn bf16_round(u: __m256i) -> __m256i {
    let abs = _mm256_and_si256(u, _mm256_set1_epi32(0x7fff_ffff));
    let nan = _mm256_cmpgt_epi32(abs, _mm256_set1_epi32(0x7f80_0000));
    let hi = _mm256_srli_epi32::<16>(u);
    let bias = _mm256_add_epi32(
        _mm256_set1_epi32(0x7fff),
        _mm256_and_si256(hi, _mm256_set1_epi32(1)),
    );
    let rounded = _mm256_srli_epi32::<16>(_mm256_add_epi32(u, bias));
    let quiet = _mm256_or_si256(hi, _mm256_set1_epi32(64));
    _mm256_blendv_epi8(rounded, quiet, nan)
}

/// f32 -> bf16 bytes, as ggml rounds.
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C.
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn quantize_row_bf16(x: &[f32], y: &mut [u8]) {
    narrow(
        x,
        y,
        |s: &[f32; 16], d: &mut [u8; 32]| {
            // SAFETY: `s` is 16 readable f32 (`loadu`: any alignment).
            let (a, b) = unsafe {
                (
                    _mm256_loadu_si256(s.as_ptr().cast()),
                    _mm256_loadu_si256(s.as_ptr().add(8).cast()),
                )
            };
            // Values in 0..=0xffff, so the saturating pack is exact; it
            // interleaves 64-bit groups of `a` and `b`, which the permute
            // undoes.
            let p = _mm256_packus_epi32(bf16_round(a), bf16_round(b));
            let p = _mm256_permute4x64_epi64::<0b11_01_10_00>(p);
            // SAFETY: `d` is 32 writable bytes (`storeu`: any alignment).
            unsafe { _mm256_storeu_si256(d.as_mut_ptr().cast(), p) };
        },
        f32_to_bf16_bits,
    );
}

/// Sums four accumulators and adds the f64 tail, if any. Without one the
/// f32 sum is the result as it is: `(f64::from(s) + 0.0) as f32` is `s`
/// bit for bit here (accumulators start at +0.0, so `s` is never -0.0, and
/// FMA results carry quiet NaNs, which the round trip keeps), and skipping
/// it takes three dependent conversions and an add off every call's end.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn finish(acc: [__m256; 4], tail: Option<f64>) -> f32 {
    let [a0, a1, a2, a3] = acc;
    let s = hsum_f32x8(_mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3)));
    match tail {
        None => s,
        Some(t) => (f64::from(s) + t) as f32,
    }
}

/// The f64 sum of the f32 products of the values left after the vector
/// loop (fewer than 8), `width` bytes each; `None` when there are none
/// (every row of whole vectors). Out of line, so the kernels' prologue
/// carries none of its code.
#[inline]
fn tail_sum(
    x: &[u8],
    y: &[u8],
    width: usize,
    product: impl Fn(&[u8], &[u8]) -> f32,
) -> Option<f64> {
    #[cold]
    #[inline(never)]
    fn sum(x: &[u8], y: &[u8], width: usize, product: &dyn Fn(&[u8], &[u8]) -> f32) -> f64 {
        x.chunks_exact(width)
            .zip(y.chunks_exact(width))
            .fold(0.0, |s, (a, b)| s + f64::from(product(a, b)))
    }
    if x.is_empty() {
        None
    } else {
        Some(sum(x, y, width, &product))
    }
}

/// Dot product of two f16 rows (bytes).
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C.
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn vec_dot_f16(x: &[u8], y: &[u8]) -> f32 {
    let n = x.len().min(y.len()) / 2 * 2;
    let (x, y) = (&x[..n], &y[..n]);
    let mut acc = [_mm256_setzero_ps(); 4];
    let (x4, xr) = x.as_chunks::<64>();
    let (y4, yr) = y.as_chunks::<64>();
    for (a, b) in x4.iter().zip(y4) {
        let (a, _) = a.as_chunks::<16>();
        let (b, _) = b.as_chunks::<16>();
        for ((s, a), b) in acc.iter_mut().zip(a).zip(b) {
            *s = _mm256_fmadd_ps(f16x8(a), f16x8(b), *s);
        }
    }
    let (x1, xr) = xr.as_chunks::<16>();
    let (y1, yr) = yr.as_chunks::<16>();
    for (a, b) in x1.iter().zip(y1) {
        acc[0] = _mm256_fmadd_ps(f16x8(a), f16x8(b), acc[0]);
    }
    finish(
        acc,
        tail_sum(xr, yr, 2, |a, b| {
            f16_bits_to_f32(u16_at(a)) * f16_bits_to_f32(u16_at(b))
        }),
    )
}

/// The even- and odd-indexed values of 16 bf16 (32 bytes) as f32.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn bf16x16(b: &[u8; 32]) -> (__m256, __m256) {
    let v = load_u8x32(b);
    (
        _mm256_castsi256_ps(_mm256_slli_epi32::<16>(v)),
        _mm256_castsi256_ps(_mm256_and_si256(v, _mm256_set1_epi32(-65536))),
    )
}

/// Dot product of two bf16 rows (bytes).
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C.
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn vec_dot_bf16(x: &[u8], y: &[u8]) -> f32 {
    let n = x.len().min(y.len()) / 2 * 2;
    let (x, y) = (&x[..n], &y[..n]);
    let mut acc = [_mm256_setzero_ps(); 4];
    let (x2, xr) = x.as_chunks::<64>();
    let (y2, yr) = y.as_chunks::<64>();
    for (a, b) in x2.iter().zip(y2) {
        let (a, _) = a.as_chunks::<32>();
        let (b, _) = b.as_chunks::<32>();
        for (k, (a, b)) in a.iter().zip(b).enumerate() {
            let (ae, ao) = bf16x16(a);
            let (be, bo) = bf16x16(b);
            acc[2 * k] = _mm256_fmadd_ps(ae, be, acc[2 * k]);
            acc[2 * k + 1] = _mm256_fmadd_ps(ao, bo, acc[2 * k + 1]);
        }
    }
    let (x1, xr) = xr.as_chunks::<32>();
    let (y1, yr) = yr.as_chunks::<32>();
    for (a, b) in x1.iter().zip(y1) {
        let (ae, ao) = bf16x16(a);
        let (be, bo) = bf16x16(b);
        acc[0] = _mm256_fmadd_ps(ae, be, acc[0]);
        acc[1] = _mm256_fmadd_ps(ao, bo, acc[1]);
    }
    finish(
        acc,
        tail_sum(xr, yr, 2, |a, b| {
            bf16_bits_to_f32(u16_at(a)) * bf16_bits_to_f32(u16_at(b))
        }),
    )
}

/// Dot product of two f32 rows (bytes).
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C.
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn vec_dot_f32(x: &[u8], y: &[u8]) -> f32 {
    let n = x.len().min(y.len()) / 4 * 4;
    let (x, y) = (&x[..n], &y[..n]);
    let mut acc = [_mm256_setzero_ps(); 4];
    let (x4, xr) = x.as_chunks::<128>();
    let (y4, yr) = y.as_chunks::<128>();
    for (a, b) in x4.iter().zip(y4) {
        let (a, _) = a.as_chunks::<32>();
        let (b, _) = b.as_chunks::<32>();
        for ((s, a), b) in acc.iter_mut().zip(a).zip(b) {
            *s = _mm256_fmadd_ps(load_f32x8(a), load_f32x8(b), *s);
        }
    }
    let (x1, xr) = xr.as_chunks::<32>();
    let (y1, yr) = yr.as_chunks::<32>();
    for (a, b) in x1.iter().zip(y1) {
        acc[0] = _mm256_fmadd_ps(load_f32x8(a), load_f32x8(b), acc[0]);
    }
    finish(
        acc,
        tail_sum(xr, yr, 4, |a, b| {
            f32::from_le_bytes([a[0], a[1], a[2], a[3]])
                * f32::from_le_bytes([b[0], b[1], b[2], b[3]])
        }),
    )
}
