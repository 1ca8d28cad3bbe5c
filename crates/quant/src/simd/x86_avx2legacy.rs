//! x86_64 AVX2 (+ FMA + F16C) Q4_1 and Q5_1 x Q8_1 and Q2_K x Q8_K dot
//! products, chosen at run time by [`super::dispatch`] at
//! [`super::Level::Avx2`] (the AVX-512 VNNI level keeps its own kernels in
//! [`super::x86_vnni`] and [`super::x86_dots2`]). Same preconditions as
//! [`super::x86`]: `unsafe fn` only for the target features; slices of any
//! length, the shorter side processed on a mismatch.
//!
//! Against [`super::x86`]'s kernels (in-process A/B, same rows, medians):
//!
//! * The nibbles come from one 128-bit broadcast load, a variable shift of
//!   the high lane (`vpsrlvd` by 4) and one mask: two vector ALU ops
//!   instead of a shift, an insert and a mask.
//! * Q5_1 reads its scales from the f16 table, llama.cpp's way: `dx * dy`
//!   (LLVM makes the product of the two broadcast loads one scalar
//!   multiply and a broadcast) and `mx * sy` into a scalar FMA chain, in
//!   place of two F16C pair conversions, a vector multiply, a broadcast and
//!   a vector add (and the old kernel's per-iteration spill of its offset
//!   accumulator); one f32 accumulator (two measured the same). About 11%
//!   faster.
//! * Q4_1 keeps the F16C pair conversion (`[dx dy, mx sy]` in one multiply)
//!   with two accumulators: its block is short enough that the FMA latency
//!   matters, and the table loads measured slower. About 8% faster.
//! * Q2_K takes the 2-bit fields at bits 2..4 and 4..6 unshifted (`4 q`
//!   and `16 q` into `maddubs`) and weights the scales by 4 and 1 (the
//!   others by 16) to match, then shifts each block's sum right by 4: two
//!   vector ops fewer per 32 quant bytes, and the scale source is one
//!   16-bit multiply and a broadcast instead of a widening and two lane
//!   duplications. About 5% faster.
//!
//! # Exactness
//!
//! As in [`super::x86`]: the quants are unsigned (0..=15 or 0..=31), so
//! each `maddubs` pair sum is within `2 * 31 * 128` and every block's
//! integer sum is exact for any bytes. In Q2_K every `maddubs` pair sum is
//! within `2 * 48 * 128`, every weighted scale within 240, each 16-times
//! block sum within `16 * 256 * 3 * 15 * 128` (i32) and a multiple of 16,
//! so the shift is exact; the mins meet the stored `bsums` in 32-bit sums
//! as before, whatever the `bsums` hold. The scale products are the scalar
//! code's (`dx * dy` and `mx * sy` of exact f16 values; Q2_K's `yd * d`
//! and `-yd * dmin`); the f32 accumulation order differs from the scalar
//! code's (FMA, `mx * sy` fused into its running sum as in llama.cpp's gcc
//! build), so the result can differ in the last bits.

use std::arch::x86_64::*;

use super::x86::{
    dot_u8_i8_x32, f16_table, h2f_pair, h2f_t, hsum_f32x8, load_i8x32, load_i16x16, load_u8x16,
    load_u8x32, q5_bits_x32,
};
use crate::kquants::{BlockQ2K, BlockQ8K};
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
        // dx * dy in every lane (exact f16 values, the scalar code's
        // product; LLVM emits a scalar multiply and one broadcast).
        let d = _mm256_mul_ps(
            _mm256_broadcast_ss(&t[usize::from(bx.d.to_bits())]),
            _mm256_broadcast_ss(&t[usize::from(by.d.to_bits())]),
        );
        summs = h2f_t(t, bx.m).mul_add(h2f_t(t, by.s), summs);
        acc = _mm256_fmadd_ps(d, q5_1_sums(bx, by), acc);
    }
    hsum_f32x8(acc) + summs
}

/// Byte `b` of each 128-bit lane of `v` (`b` in the low lane, `b + 1` in
/// the high one) as eight zero-extended `i16`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn bcast_u8_pair(v: __m256i, b: usize) -> __m256i {
    let b = b as i16;
    let lo = _mm_set1_epi16(b | (0x80 << 8));
    let hi = _mm_set1_epi16((b + 1) | (0x80 << 8));
    _mm256_shuffle_epi8(v, _mm256_set_m128i(hi, lo))
}

/// Q2_K x Q8_K; blocks past the shorter side are ignored.
///
/// The quants at bits 2..4 and 4..6 enter `maddubs` unshifted (`4 q`,
/// `16 q`: pair sums within `2 * 48 * 128`), the others shifted to 0..=3;
/// each scale is multiplied by 16, 4 or 1 to match (a 16-bit multiply of
/// the scale pairs: every byte stays within 240), so every product is 16
/// times the true one and the block's sum, exact in 32 bits (at most `16 *
/// 256 * 3 * 15 * 128`), is shifted right by 4 (exact: each term is a
/// multiple of 16). Two vector ops fewer per 32 quant bytes than masking
/// every field after a shift.
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C.
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn vec_dot_q2_k_q8_k(x: &[BlockQ2K], y: &[BlockQ8K]) -> f32 {
    let t = f16_table();
    let m3 = _mm256_set1_epi8(3);
    let m12 = _mm256_set1_epi8(12);
    let m48 = _mm256_set1_epi8(48);
    let m4 = _mm_set1_epi8(0x0f);
    let mut acc = _mm256_setzero_ps();
    for (xb, yb) in x.iter().zip(y) {
        let d = _mm256_set1_ps(yb.d * h2f_t(t, xb.d));
        let dmin = _mm256_set1_ps(-yb.d * h2f_t(t, xb.dmin));
        let mins_and_scales = load_u8x16(&xb.scales);
        let mins = _mm256_cvtepu8_epi16(_mm_and_si128(_mm_srli_epi16::<4>(mins_and_scales), m4));
        // Each min against its group's stored sum, the products summed in
        // pairs in 32 bits: exact for any `bsums`.
        let prod = _mm256_madd_epi16(mins, load_i16x16(&yb.bsums));
        acc = _mm256_fmadd_ps(dmin, _mm256_cvtepi32_ps(prod), acc);
        // Scale pairs (2w, 2w + 1) times 16, 4, 1, 16 for w % 4 = 0..3
        // (the field k = w % 4): bytes within 15 * 16, no carries.
        let sc = _mm_mullo_epi16(
            _mm_and_si128(mins_and_scales, m4),
            _mm_set_epi16(16, 1, 4, 16, 16, 1, 4, 16),
        );
        let sc = _mm256_broadcastsi128_si256(sc);
        let mut sumi = _mm256_setzero_si256();
        let q8 = yb.qs.as_chunks::<32>().0.chunks_exact(4);
        for (j, (q2, q8)) in xb.qs.as_chunks::<32>().0.iter().zip(q8).enumerate() {
            let q2 = load_u8x32(q2);
            let q = [
                _mm256_and_si256(q2, m3),
                _mm256_and_si256(q2, m12),
                _mm256_and_si256(q2, m48),
                _mm256_and_si256(_mm256_srli_epi16::<6>(q2), m3),
            ];
            for (k, (q, q8)) in q.into_iter().zip(q8).enumerate() {
                // The scale of groups 8j + 2k (low lane) and 8j + 2k + 1.
                let s = bcast_u8_pair(sc, 8 * j + 2 * k);
                let p = _mm256_maddubs_epi16(q, load_i8x32(q8));
                sumi = _mm256_add_epi32(sumi, _mm256_madd_epi16(s, p));
            }
        }
        let sumi = _mm256_srai_epi32::<4>(sumi);
        acc = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(sumi), acc);
    }
    hsum_f32x8(acc)
}
