//! x86_64 AVX2 (+ FMA + F16C) Q4_1 and Q5_1 x Q8_1 dot products, chosen at
//! run time by [`super::dispatch`] at [`super::Level::Avx2`] (the AVX-512
//! VNNI level keeps its own kernels in [`super::x86_vnni`]). Same
//! preconditions as [`super::x86`]: `unsafe fn` only for the target
//! features; slices of any length, the shorter side processed on a
//! mismatch.
//!
//! Against [`super::x86`]'s kernels (in-process A/B, same rows, medians):
//!
//! * The nibbles come from one 128-bit broadcast load, a variable shift of
//!   the high lane (`vpsrlvd` by 4) and one mask: two vector ALU ops
//!   instead of a shift, an insert and a mask.
//! * Q5_1 reads its scales from the f16 table, llama.cpp's way: `dx * dy`
//!   as a multiply of two broadcast loads (no shuffle) and `mx * sy` into a
//!   scalar FMA chain, in place of two F16C pair conversions, a multiply, a
//!   broadcast and a vector add; one f32 accumulator (the block's integer
//!   work is longer than the FMA latency). About 11% faster.
//! * Q4_1 keeps the F16C pair conversion (`[dx dy, mx sy]` in one multiply)
//!   with two accumulators: its block is short enough that the FMA latency
//!   matters, and the table loads measured slower. About 8% faster.
//!
//! # Exactness
//!
//! As in [`super::x86`]: the quants are unsigned (0..=15 or 0..=31), so
//! each `maddubs` pair sum is within `2 * 31 * 128` and every block's
//! integer sum is exact for any bytes. The scale products are the scalar
//! code's (`dx * dy` and `mx * sy` of exact f16 values); the f32
//! accumulation order differs from the scalar code's (FMA, `mx * sy` fused
//! into its running sum as in llama.cpp's gcc build), so the result can
//! differ in the last bits.

use std::arch::x86_64::*;

use super::x86::{dot_u8_i8_x32, f16_table, h2f_pair, h2f_t, hsum_f32x8, load_i8x32, q5_bits_x32};
use crate::legacy::{BlockQ4_1, BlockQ5_1, BlockQ8_1};

/// The 32 quants of a legacy 4-bit block in element order (low nibbles,
/// then high ones): the 16 bytes in both 128-bit lanes, the high lane
/// shifted right by 4, then masked.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn nibbles_x32(qs: &[u8; 16]) -> __m256i {
    // SAFETY: `qs` is 16 readable bytes and `loadu` has no alignment
    // requirement.
    let q = unsafe { _mm_loadu_si128(qs.as_ptr().cast()) };
    let q = _mm256_srlv_epi32(
        _mm256_broadcastsi128_si256(q),
        _mm256_set_epi32(4, 4, 4, 4, 0, 0, 0, 0),
    );
    _mm256_and_si256(q, _mm256_set1_epi8(0x0f))
}

/// The eight exact partial sums of `q * y` for one Q4_1 x Q8_1 block, as f32.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn q4_1_sums(bx: &BlockQ4_1, by: &BlockQ8_1) -> __m256 {
    _mm256_cvtepi32_ps(dot_u8_i8_x32(nibbles_x32(&bx.qs), load_i8x32(&by.qs)))
}

/// The eight exact partial sums of `q * y` for one Q5_1 x Q8_1 block, as f32.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn q5_1_sums(bx: &BlockQ5_1, by: &BlockQ8_1) -> __m256 {
    let high = _mm256_and_si256(q5_bits_x32(&bx.qh), _mm256_set1_epi8(16));
    let q = _mm256_or_si256(nibbles_x32(&bx.qs), high);
    _mm256_cvtepi32_ps(dot_u8_i8_x32(q, load_i8x32(&by.qs)))
}

/// Q4_1 x Q8_1: `d * sum(q * y) + m * s` per block; blocks past the shorter
/// side are ignored.
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C.
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn vec_dot_q4_1_q8_1(x: &[BlockQ4_1], y: &[BlockQ8_1]) -> f32 {
    // [dx * dy, mx * sy, ..]: the scalar code's products.
    let block = |bx: &BlockQ4_1, by: &BlockQ8_1| {
        let dm = _mm_mul_ps(h2f_pair(bx.d, bx.m), h2f_pair(by.d, by.s));
        (dm, q4_1_sums(bx, by))
    };
    let (x2, xr) = x.as_chunks::<2>();
    let (y2, yr) = y.as_chunks::<2>();
    let mut acc = [_mm256_setzero_ps(); 2];
    let mut acc_m = _mm_setzero_ps();
    for (xs, ys) in x2.iter().zip(y2) {
        for ((a, bx), by) in acc.iter_mut().zip(xs).zip(ys) {
            let (dm, s) = block(bx, by);
            *a = _mm256_fmadd_ps(_mm256_broadcastss_ps(dm), s, *a);
            acc_m = _mm_add_ps(acc_m, dm);
        }
    }
    for (bx, by) in xr.iter().zip(yr) {
        let (dm, s) = block(bx, by);
        acc[0] = _mm256_fmadd_ps(_mm256_broadcastss_ps(dm), s, acc[0]);
        acc_m = _mm_add_ps(acc_m, dm);
    }
    hsum_f32x8(_mm256_add_ps(acc[0], acc[1])) + _mm_cvtss_f32(_mm_movehdup_ps(acc_m))
}

/// Q5_1 x Q8_1: `d * sum(q * y) + m * s` per block; blocks past the shorter
/// side are ignored.
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C.
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn vec_dot_q5_1_q8_1(x: &[BlockQ5_1], y: &[BlockQ8_1]) -> f32 {
    let t = f16_table();
    let mut acc = _mm256_setzero_ps();
    let mut summs = 0f32;
    for (bx, by) in x.iter().zip(y) {
        // dx * dy in every lane from two broadcast loads (exact f16
        // values, the scalar code's product).
        let d = _mm256_mul_ps(
            _mm256_broadcast_ss(&t[usize::from(bx.d.to_bits())]),
            _mm256_broadcast_ss(&t[usize::from(by.d.to_bits())]),
        );
        summs = h2f_t(t, bx.m).mul_add(h2f_t(t, by.s), summs);
        acc = _mm256_fmadd_ps(d, q5_1_sums(bx, by), acc);
    }
    hsum_f32x8(acc) + summs
}
