//! x86_64 AVX2 (+ FMA + F16C) Q8_0 x Q8_0 dot product that tests for a
//! -128 quant once per row instead of once per block, chosen at run time by
//! [`super::dispatch`] at [`super::Level::Avx2`] (the AVX-512 VNNI level
//! keeps its own kernel). Same preconditions as [`super::x86`]: `unsafe fn`
//! only for the target features; slices of any length, the shorter side
//! processed on a mismatch.
//!
//! # Exactness
//!
//! Each block's integer sum is exact for any bytes, as everywhere in
//! [`super`]. llama.cpp's AVX2 sign trick `maddubs(|y|, sign(x, y))` is
//! exact unless some `x` is -128 (then `-x` wraps where `y < 0`), which
//! ggml's quantizer never writes. So the kernel runs the sign trick over the
//! whole row while keeping a running minimum of the x quants (one `vpminsb`
//! per block, no branch), and only if that minimum is -128 computes the row
//! again with [`super::x86::vec_dot_q8_0_q8_0`], exact for every byte (a
//! compare and a branch per block), throwing the fast result away. Without
//! a -128, `|y|` read as unsigned is exact for `y = -128` and `x sign(y)` is
//! within i8, so each pair sum is within `2 * 128 * 127`. The f32
//! accumulation is [`super::x86::sum_blocks`]'s (four accumulators, one FMA
//! per block with the scalar code's scale product from the f16 table), so
//! both paths return the same bits for a row without -128.

use std::arch::x86_64::*;

use super::x86::{f16_table, h2f_t, hsum_f32x8, load_i8x32};
use crate::legacy::BlockQ8_0;

/// Whether any byte of `lo` is -128.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn has_minus128(lo: __m256i) -> bool {
    _mm256_movemask_epi8(_mm256_cmpeq_epi8(lo, _mm256_set1_epi8(-128))) != 0
}

// --------------------------------------------------------------------- Q8_0

/// Q8_0 x Q8_0, exact block sums for any bytes (see the module notes);
/// blocks past the shorter side are ignored.
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C.
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn vec_dot_q8_0_q8_0(x: &[BlockQ8_0], y: &[BlockQ8_0]) -> f32 {
    let t = f16_table();
    let ones = _mm256_set1_epi16(1);
    // Running minimum of the x quants: -128 only if some x is -128.
    let mut lo = _mm256_set1_epi8(0);
    let mut block = |bx: &BlockQ8_0, by: &BlockQ8_0| {
        let d = h2f_t(t, bx.d) * h2f_t(t, by.d);
        let qx = load_i8x32(&bx.qs);
        let qy = load_i8x32(&by.qs);
        lo = _mm256_min_epi8(lo, qx);
        // x y = |y| (x sign(y)): exact unless x = -128 and y < 0.
        let p = _mm256_maddubs_epi16(_mm256_abs_epi8(qy), _mm256_sign_epi8(qx, qy));
        (d, _mm256_cvtepi32_ps(_mm256_madd_epi16(p, ones)))
    };
    let (x4, xr) = x.as_chunks::<4>();
    let (y4, yr) = y.as_chunks::<4>();
    let mut acc = [_mm256_setzero_ps(); 4];
    for (xs, ys) in x4.iter().zip(y4) {
        for ((a, bx), by) in acc.iter_mut().zip(xs).zip(ys) {
            let (d, s) = block(bx, by);
            *a = _mm256_fmadd_ps(_mm256_set1_ps(d), s, *a);
        }
    }
    for (bx, by) in xr.iter().zip(yr) {
        let (d, s) = block(bx, by);
        acc[0] = _mm256_fmadd_ps(_mm256_set1_ps(d), s, acc[0]);
    }
    if has_minus128(lo) {
        // SAFETY: same target features as this function.
        return unsafe { super::x86::vec_dot_q8_0_q8_0(x, y) };
    }
    let [a0, a1, a2, a3] = acc;
    hsum_f32x8(_mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3)))
}
