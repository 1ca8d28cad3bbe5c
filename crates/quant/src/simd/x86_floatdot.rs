//! x86_64 AVX-512 kernels for F16/BF16 rows ([`super::Level::Avx512`]): the
//! BF16 dot product and the f32 -> f16 / bf16 conversions.
//!
//! The conversions give the AVX2 kernels' bits ([`super::x86_float`]), 16
//! values per instruction: `vcvtps2ph` with round-to-nearest-even, and
//! ggml's integer bf16 rounding (NaN quieted) lane by lane, narrowed by
//! `vpmovdw` (every lane already fits 16 bits). The BF16 dot product:
//!
//! The AVX2 kernel's method ([`super::x86_float`]) in 512-bit registers: a
//! 32-bit lane holding bf16 values `2i`, `2i + 1` gives value `2i` shifted
//! left by 16 and value `2i + 1` masked, both exact f32; each product is exact
//! in an FMA (8-bit significands) and summed in f32 lanes: four 16-lane
//! accumulators, 64 values per loop step. The last values that fill no
//! 512-bit vector (fewer than 32) come in through one zero-masked load, so
//! no scalar tail runs; the masked-off lanes read as +0 and add nothing.
//!
//! 1.2-1.3x the AVX2 kernel in process on Zen 4 (which splits 512-bit
//! operations in two but issues a third fewer instructions).
//!
//! Not `vdpbf16ps`: it treats subnormal inputs (and accumulators) as zero
//! and flushes subnormal results (checked on Zen 4), so a subnormal times a
//! large value, a product below 2^-126, or a partial sum cancelling into the
//! subnormal range comes out wrong. Guarding it costs at least one operation
//! per vector of each row (and a fallback for rows with a zero, which fail
//! any cheap magnitude test): the guarded version measured about 0.8x a
//! bare `vdpbf16ps` loop against this kernel's 0.7x, not worth a second,
//! data-dependent path; the one-operation guard (`vptestmw`, exponent field
//! at least 64) misses cancellations into the subnormal range.

use std::arch::x86_64::*;

use super::x86_float::narrow;
use crate::floats::{f32_to_bf16_bits, f32_to_f16_bits};

/// Loads 64 bytes.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
fn load_u8x64(b: &[u8; 64]) -> __m512i {
    // SAFETY: `b` is 64 readable bytes and `loadu` has no alignment requirement.
    unsafe { _mm512_loadu_si512(b.as_ptr().cast()) }
}

/// The even- and odd-indexed values of 32 bf16 (one 512-bit vector) as f32.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
fn bf16x32(v: __m512i) -> (__m512, __m512) {
    (
        _mm512_castsi512_ps(_mm512_slli_epi32::<16>(v)),
        _mm512_castsi512_ps(_mm512_and_si512(v, _mm512_set1_epi32(-65536))),
    )
}

/// `acc` plus the products of one vector of each row, the even values into
/// `acc.0`, the odd ones into `acc.1`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
fn fma_bf16x32(acc: (__m512, __m512), a: __m512i, b: __m512i) -> (__m512, __m512) {
    let (ae, ao) = bf16x32(a);
    let (be, bo) = bf16x32(b);
    (
        _mm512_fmadd_ps(ae, be, acc.0),
        _mm512_fmadd_ps(ao, bo, acc.1),
    )
}

/// Up to 63 bytes, the bf16 values of a row's end (a whole number of them;
/// an odd last byte is not read), as one vector with zeros after them.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
fn load_bf16_tail(b: &[u8]) -> __m512i {
    let count = (b.len() / 2).min(31);
    let mask: __mmask32 = (1u32 << count) - 1;
    // SAFETY: the mask enables the first `count` 16-bit elements, all inside
    // `b` (`2 * count <= b.len()`); a masked load reads no disabled element
    // (AVX-512 suppresses their accesses and faults) and has no alignment
    // requirement.
    unsafe { _mm512_maskz_loadu_epi16(mask, b.as_ptr().cast()) }
}

/// Dot product of two bf16 rows (bytes).
///
/// # Safety
/// The CPU must support AVX2, FMA, F16C, AVX-512 F/BW/VL and VNNI (the
/// features of [`super::Level::Avx512`]).
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
pub(crate) unsafe fn vec_dot_bf16(x: &[u8], y: &[u8]) -> f32 {
    let n = x.len().min(y.len()) / 2 * 2;
    let (x, y) = (&x[..n], &y[..n]);
    let zero = _mm512_setzero_ps();
    let (mut s0, mut s1) = ((zero, zero), (zero, zero));
    let (x2, xr) = x.as_chunks::<128>();
    let (y2, yr) = y.as_chunks::<128>();
    for (a, b) in x2.iter().zip(y2) {
        let (a, _) = a.as_chunks::<64>();
        let (b, _) = b.as_chunks::<64>();
        s0 = fma_bf16x32(s0, load_u8x64(&a[0]), load_u8x64(&b[0]));
        s1 = fma_bf16x32(s1, load_u8x64(&a[1]), load_u8x64(&b[1]));
    }
    let (x1, xr) = xr.as_chunks::<64>();
    let (y1, yr) = yr.as_chunks::<64>();
    for (a, b) in x1.iter().zip(y1) {
        s0 = fma_bf16x32(s0, load_u8x64(a), load_u8x64(b));
    }
    if !xr.is_empty() {
        s1 = fma_bf16x32(s1, load_bf16_tail(xr), load_bf16_tail(yr));
    }
    let s = _mm512_add_ps(_mm512_add_ps(s0.0, s0.1), _mm512_add_ps(s1.0, s1.1));
    _mm512_reduce_add_ps(s)
}

/// f32 -> f16 bytes, nearest even.
///
/// # Safety
/// The CPU must support AVX2, FMA, F16C, AVX-512 F/BW/VL and VNNI.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
pub(crate) unsafe fn quantize_row_f16(x: &[f32], y: &mut [u8]) {
    narrow(
        x,
        y,
        |s: &[f32; 16], d: &mut [u8; 32]| {
            // SAFETY: `s` is 16 readable f32 (`loadu`: any alignment).
            let v = unsafe { _mm512_loadu_ps(s.as_ptr()) };
            let h = _mm512_cvtps_ph::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(v);
            // SAFETY: `d` is 32 writable bytes (`storeu`: any alignment).
            unsafe { _mm256_storeu_si256(d.as_mut_ptr().cast(), h) };
        },
        f32_to_f16_bits,
    );
}

/// f32 -> bf16 bytes, as ggml rounds (the AVX2 kernel's lane formula).
///
/// # Safety
/// The CPU must support AVX2, FMA, F16C, AVX-512 F/BW/VL and VNNI.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
pub(crate) unsafe fn quantize_row_bf16(x: &[f32], y: &mut [u8]) {
    narrow(
        x,
        y,
        |s: &[f32; 16], d: &mut [u8; 32]| {
            // SAFETY: `s` is 16 readable f32 (`loadu`: any alignment).
            let u = unsafe { _mm512_loadu_si512(s.as_ptr().cast()) };
            let abs = _mm512_and_si512(u, _mm512_set1_epi32(0x7fff_ffff));
            let nan = _mm512_cmpgt_epi32_mask(abs, _mm512_set1_epi32(0x7f80_0000));
            let hi = _mm512_srli_epi32::<16>(u);
            let bias = _mm512_add_epi32(
                _mm512_set1_epi32(0x7fff),
                _mm512_and_si512(hi, _mm512_set1_epi32(1)),
            );
            let rounded = _mm512_srli_epi32::<16>(_mm512_add_epi32(u, bias));
            let quiet = _mm512_or_si512(hi, _mm512_set1_epi32(64));
            let b = _mm512_mask_blend_epi32(nan, rounded, quiet);
            // SAFETY: `d` is 32 writable bytes (`storeu`: any alignment).
            unsafe { _mm256_storeu_si256(d.as_mut_ptr().cast(), _mm512_cvtepi32_epi16(b)) };
        },
        f32_to_bf16_bits,
    );
}
