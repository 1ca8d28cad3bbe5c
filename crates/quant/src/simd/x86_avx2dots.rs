//! x86_64 AVX2 (+ FMA + F16C) dot products for TQ2_0 and Q1_0 that do
//! fewer vector operations per block than llama.cpp's AVX2 kernels while
//! keeping weightkit's exactness contract, chosen at run time by
//! [`super::dispatch`] at [`super::Level::Avx2`] (the AVX-512 VNNI level
//! keeps its own kernels). Same preconditions as [`super::x86`]: `unsafe
//! fn` only for the target features; slices of any length, the shorter
//! side processed on a mismatch.
//!
//! Both kernels are bound by the vector ALU ports (about four vector
//! operations per cycle on Zen 4), so what counts is the number of vector
//! operations per block, not the loads.
//!
//! # TQ2_0 x Q8_K
//!
//! Each block's integer `sum c q - sum bsums` is exact for any bytes, as in
//! [`super::x86_tern`]. The 2-bit codes are not all shifted down to bits
//! 0..2: per 32 bytes `v`, one 16-bit shift `t = v >> 4` and four masks give
//! `v & 3` and `t & 3` (codes 0 and 2, weight 1) and `v & 12` and `t & 12`
//! (codes 1 and 3, weight 4), five operations where shifting every field
//! down takes seven (llama.cpp's kernel, [`super::x86_tern`]'s). `maddubs`
//! of the weight-4 codes (0, 4, 8, 12) by the quants gives pair sums of
//! `4 c q` within `2 * 12 * 128`; the block's four such sums add to at most
//! `4 * 3072` in 16 bits and are multiples of 4, so one arithmetic shift by
//! 2 divides them exactly before they join the weight-1 sums (four pair
//! sums, at most `4 * 768`). The stored `bsums` are subtracted after
//! widening to `i32`, as in [`super::x86_tern`], so no sum wraps whatever
//! they hold. One f32 FMA per block with the scalar code's scale `d_y *
//! d_x` (f16 table, exact).
//!
//! # Q1_0 x Q8_0
//!
//! Each Q8_0 block's `sum s q` (`s = +-1`) is exact for any bytes: `maddubs(|q|,
//! s sign(q))` as [`super::x86_q12`] (`|q|` read as unsigned is exact for
//! `q = -128`, where llama.cpp's `(q ^ m) - m` wraps). The bit masks come
//! from a dword broadcast straight from the block (no cross-lane permute),
//! the f16 scales from single 16-bit table indices, and the f32
//! accumulation is llama.cpp's AVX2 kernel's: per Q1_0 block one chain
//! `d_0 s_0 + d_1 s_1 + d_2 s_2 + d_3 s_3` (a multiply, then FMAs), then an
//! FMA with the block scale into one of two accumulators (blocks in pairs).
//! Results may differ from the scalar dot in the last bits (f32 order).

use std::arch::x86_64::*;

use super::x86::{bit_bytes, f16_table, h2f_t, hsum_f32x8, load_u8x32};
use super::x86_tern::q8_k_parts;
use crate::iquants::{BlockTq2_0, Q8_0_BYTES, Q8_K_BYTES};
use crate::legacy::BlockQ1_0;

/// The f16 stored little-endian in `b` as f32 through `table` (one 16-bit
/// load; exact).
#[inline(always)]
fn h2f_le(table: &[f32; 1 << 16], b: &[u8; 2]) -> f32 {
    table[usize::from(u16::from_le_bytes(*b))]
}

// -------------------------------------------------------------------- TQ2_0

/// TQ2_0 x Q8_K, `y` the raw bytes of `block_q8_K`s (292 each); blocks past
/// the shorter side are ignored. See the module notes.
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C.
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn vec_dot_tq2_0_q8_k(x: &[BlockTq2_0], y: &[u8]) -> f32 {
    let t = f16_table();
    let (y, _) = y.as_chunks::<Q8_K_BYTES>();
    let (m3, m12) = (_mm256_set1_epi8(3), _mm256_set1_epi8(12));
    let ones = _mm256_set1_epi16(1);
    let mut acc = _mm256_setzero_ps();
    for (xb, yb) in x.iter().zip(y) {
        let (dy, q8, bsums) = q8_k_parts(yb);
        let (q8, _) = q8.as_chunks::<4>();
        // a1: codes 0 and 2 (weight 1); a4: codes 1 and 3 (weight 4).
        let (mut a1, mut a4) = (_mm256_setzero_si256(), _mm256_setzero_si256());
        // Bytes 32 j..32 j + 32 hold values 128 j + 32 l + m in bits 2 l.
        for (q2, [y0, y1, y2, y3]) in xb.qs.as_chunks::<32>().0.iter().zip(q8) {
            let v = load_u8x32(q2);
            let h = _mm256_srli_epi16::<4>(v);
            // Pair sums within 2 * 3 * 128 (weight 1), 2 * 12 * 128 (weight 4).
            let c0 = _mm256_maddubs_epi16(_mm256_and_si256(v, m3), load_u8x32(y0));
            let c2 = _mm256_maddubs_epi16(_mm256_and_si256(h, m3), load_u8x32(y2));
            let c1 = _mm256_maddubs_epi16(_mm256_and_si256(v, m12), load_u8x32(y1));
            let c3 = _mm256_maddubs_epi16(_mm256_and_si256(h, m12), load_u8x32(y3));
            a1 = _mm256_add_epi16(a1, _mm256_add_epi16(c0, c2));
            a4 = _mm256_add_epi16(a4, _mm256_add_epi16(c1, c3));
        }
        // a4 is within 4 * 2 * 12 * 128 and a multiple of 4: exact shift.
        let s = _mm256_add_epi16(a1, _mm256_srai_epi16::<2>(a4));
        let s = _mm256_sub_epi32(
            _mm256_madd_epi16(s, ones),
            _mm256_madd_epi16(load_u8x32(bsums), ones),
        );
        let d = _mm256_set1_ps(dy * h2f_t(t, xb.d));
        acc = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(s), acc);
    }
    hsum_f32x8(acc)
}

// --------------------------------------------------------------------- Q1_0

/// Eight exact partial sums (i32) of `sum s_j q_j` over one Q8_0 block,
/// `s_j = +1` where bit `j` of the little-endian `bits` is set, else -1.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn q1_0_signed_sum(bits: &[u8; 4], q: &[u8; 32]) -> __m256i {
    // Byte j takes bits byte j / 8 (one broadcast from memory) ...
    let b = bit_bytes(bits);
    // ... and m is all ones where its bit j % 8 is clear.
    let m = _mm256_cmpeq_epi8(
        _mm256_and_si256(b, _mm256_set1_epi64x(0x8040_2010_0804_0201u64 as i64)),
        _mm256_setzero_si256(),
    );
    let q = load_u8x32(q);
    // s q = |q| (s sign(q)): |q| read as unsigned is exact for q = -128,
    // and s sign(q) (with s = m | 1) is -1, 0 or 1: pair sums within 256.
    let p = _mm256_maddubs_epi16(
        _mm256_abs_epi8(q),
        _mm256_sign_epi8(_mm256_or_si256(m, _mm256_set1_epi8(1)), q),
    );
    _mm256_madd_epi16(p, _mm256_set1_epi16(1))
}

/// One Q1_0 block's `sum_k d_k s_k` over its four Q8_0 blocks (eight f32
/// lanes, llama.cpp's order: a multiply, then three FMAs) and its scale.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn q1_0_block(t: &[f32; 1 << 16], xb: &BlockQ1_0, yb: &[u8; 4 * Q8_0_BYTES]) -> (f32, __m256) {
    let (ys, _) = yb.as_chunks::<Q8_0_BYTES>();
    let (ws, _) = xb.qs.as_chunks::<4>();
    let mut blk = _mm256_setzero_ps();
    for (k, (w, yk)) in ws.iter().zip(ys).enumerate() {
        let (d, q) = yk.split_first_chunk::<2>().expect("34 bytes");
        let q: &[u8; 32] = q.try_into().expect("32 quants");
        let s = _mm256_cvtepi32_ps(q1_0_signed_sum(w, q));
        let d = _mm256_set1_ps(h2f_le(t, d));
        blk = if k == 0 {
            _mm256_mul_ps(d, s)
        } else {
            _mm256_fmadd_ps(d, s, blk)
        };
    }
    (h2f_t(t, xb.d), blk)
}

/// Q1_0 x Q8_0, `y` the raw bytes of `block_q8_0`s (four, 136 bytes, per
/// Q1_0 block); blocks past the shorter side are ignored. See the module
/// notes.
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C.
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn vec_dot_q1_0_q8_0(x: &[BlockQ1_0], y: &[u8]) -> f32 {
    let t = f16_table();
    let (y, _) = y.as_chunks::<{ 4 * Q8_0_BYTES }>();
    let n = x.len().min(y.len());
    let (x2, xr) = x[..n].as_chunks::<2>();
    let (y2, yr) = y[..n].as_chunks::<2>();
    let (mut a0, mut a1) = (_mm256_setzero_ps(), _mm256_setzero_ps());
    for ([x0, x1], [y0, y1]) in x2.iter().zip(y2) {
        let (d0, b0) = q1_0_block(t, x0, y0);
        a0 = _mm256_fmadd_ps(_mm256_set1_ps(d0), b0, a0);
        let (d1, b1) = q1_0_block(t, x1, y1);
        a1 = _mm256_fmadd_ps(_mm256_set1_ps(d1), b1, a1);
    }
    for (xb, yb) in xr.iter().zip(yr) {
        let (d, b) = q1_0_block(t, xb, yb);
        a0 = _mm256_fmadd_ps(_mm256_set1_ps(d), b, a0);
    }
    hsum_f32x8(_mm256_add_ps(a0, a1))
}
