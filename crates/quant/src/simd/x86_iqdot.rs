//! x86_64 AVX2 dot products of the grid i-quants with Q8_K (IQ2_XXS,
//! IQ2_XS, IQ3_XXS, IQ3_S, IQ1_S), chosen at run time by
//! [`super::dispatch`].
//!
//! # Exactness
//!
//! Each block's integer sum is computed exactly for any block bytes, then
//! scaled and accumulated with the scalar code's f32 operations in its
//! order (one block at a time, separate multiply and add), so the results
//! are bit-identical to the scalar references in [`crate::iquants`].
//!
//! * Grid points are looked up from the same tables with the same masked
//!   indexes as the scalar code (so in bounds for any bytes), eight or four
//!   bytes at a time.
//! * The IQ2/IQ3 signs are applied to the grid values (at most 62, so the
//!   signed value fits in `i8`), never to the Q8_K quants: llama.cpp's
//!   `_mm256_sign_epi8(q8, signs)` turns a `-128` quant with a negative sign
//!   into `-128` instead of `128`. The signed products then go through
//!   `maddubs(|q8|, sign(g, q8))`: `|q8| <= 128` as an unsigned byte, and a
//!   pair sums to at most `2 * 128 * 62 < 2^15`. IQ1_S's grid values
//!   (-1, 0, 1) take the same path (llama.cpp's `mul_add_epi8` has the same
//!   `-128` problem).
//! * Group sums are weighted by the group scales in `madd_epi16` (at most
//!   `2 * 15872 * 31` per lane and group) and summed in i32 over the block
//!   (below `2^26`); the eight lanes are added in i32, giving the scalar
//!   code's block sum exactly.

use std::arch::x86_64::*;

use super::x86::{f16_table, h2f_t};
use crate::iquants::grids::{IQ1S_GRID, IQ2XS_GRID, IQ2XXS_GRID, IQ3S_GRID, IQ3XXS_GRID};
use crate::iquants::{BlockIq1S, BlockIq2Xs, BlockIq2Xxs, BlockIq3S, BlockIq3Xxs, Q8_K_BYTES};
use crate::kquants::QK_K;

/// ggml's `keven_signs_q2xs`: for each 7-bit sign field, the eight bytes
/// `±1` of `ksigns_iq2xs` (bit `j` set: byte `j` is `-1`; bit 7 is the
/// parity of the other seven).
static KEVEN_SIGNS: [u64; 128] = keven_signs();

const fn keven_signs() -> [u64; 128] {
    let mut t = [0u64; 128];
    let mut i = 0;
    while i < 128 {
        let s = (i as u32) | ((i as u32).count_ones() & 1) << 7;
        let mut v = 0u64;
        let mut j = 0;
        while j < 8 {
            let b: u64 = if (s >> j) & 1 != 0 { 0xff } else { 0x01 };
            v |= b << (8 * j);
            j += 1;
        }
        t[i] = v;
        i += 1;
    }
    t
}

/// Loads 32 bytes.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn load32(b: &[u8; 32]) -> __m256i {
    // SAFETY: `b` is 32 readable bytes and `loadu` has no alignment requirement.
    unsafe { _mm256_loadu_si256(b.as_ptr().cast()) }
}

/// Sum of eight `i32` lanes (in i32: the callers' lanes are far from
/// overflowing).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn hsum_i32x8(v: __m256i) -> i32 {
    let s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256::<1>(v));
    let s = _mm_add_epi32(s, _mm_shuffle_epi32::<0b01_00_11_10>(s));
    let s = _mm_add_epi32(s, _mm_shuffle_epi32::<0b10_11_00_01>(s));
    _mm_cvtsi128_si32(s)
}

/// Pair sums `g[2k] q[2k] + g[2k+1] q[2k+1]` (16 `i16`) of signed grid
/// values `|g| <= 127` and any quants `q`, exact (see the module docs).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn pairs(g: __m256i, q8: __m256i) -> __m256i {
    _mm256_maddubs_epi16(_mm256_abs_epi8(q8), _mm256_sign_epi8(g, q8))
}

/// Four 8-byte grid points (`u64` table entries) in one vector, `a` lowest.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn grid4(a: u64, b: u64, c: u64, d: u64) -> __m256i {
    _mm256_set_epi64x(d as i64, c as i64, b as i64, a as i64)
}

/// The four 7-bit sign fields of `aux` (bits 0..28) as `±1` bytes.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn signs4(aux: u32) -> __m256i {
    grid4(
        KEVEN_SIGNS[(aux & 127) as usize],
        KEVEN_SIGNS[((aux >> 7) & 127) as usize],
        KEVEN_SIGNS[((aux >> 14) & 127) as usize],
        KEVEN_SIGNS[((aux >> 21) & 127) as usize],
    )
}

/// Splits a raw `block_q8_K` into its scale and its eight groups of 32
/// quants.
#[inline]
fn q8_k(yb: &[u8; Q8_K_BYTES]) -> (f32, &[[u8; 32]]) {
    let (dy, rest) = yb.split_first_chunk::<4>().expect("292 bytes");
    let (q8, _) = rest[..QK_K].as_chunks::<32>();
    (f32::from_le_bytes(*dy), q8)
}

/// IQ2_XXS x Q8_K, `y` the raw bytes of `block_q8_K`s; blocks past the
/// shorter side are ignored. Bit-identical to
/// [`crate::iquants::vec_dot_iq2_xxs_q8_k`].
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C.
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn vec_dot_iq2_xxs_q8_k(x: &[BlockIq2Xxs], y: &[u8]) -> f32 {
    let t = f16_table();
    let (y, _) = y.as_chunks::<Q8_K_BYTES>();
    let mut sumf = 0f32;
    for (xb, yb) in x.iter().zip(y) {
        let (dy, q8) = q8_k(yb);
        let d = h2f_t(t, xb.d) * dy;
        let (qs, _) = xb.qs.as_chunks::<4>();
        let mut acc = _mm256_setzero_si256();
        for (q, q8) in qs.iter().zip(q8) {
            let aux0 = u32::from(q[0]) | (u32::from(q[1]) << 16);
            let aux1 = u32::from(q[2]) | (u32::from(q[3]) << 16);
            let grid = grid4(
                IQ2XXS_GRID[(aux0 & 255) as usize],
                IQ2XXS_GRID[((aux0 >> 8) & 255) as usize],
                IQ2XXS_GRID[((aux0 >> 16) & 255) as usize],
                IQ2XXS_GRID[(aux0 >> 24) as usize],
            );
            let g = _mm256_sign_epi8(grid, signs4(aux1));
            let ls = (2 * (aux1 >> 28) + 1) as i16;
            let p = _mm256_madd_epi16(pairs(g, load32(q8)), _mm256_set1_epi16(ls));
            acc = _mm256_add_epi32(acc, p);
        }
        sumf += d * hsum_i32x8(acc) as f32;
    }
    0.125 * sumf
}

/// IQ2_XS x Q8_K, as [`vec_dot_iq2_xxs_q8_k`]; bit-identical to
/// [`crate::iquants::vec_dot_iq2_xs_q8_k`].
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C.
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn vec_dot_iq2_xs_q8_k(x: &[BlockIq2Xs], y: &[u8]) -> f32 {
    let t = f16_table();
    let (y, _) = y.as_chunks::<Q8_K_BYTES>();
    let mut sumf = 0f32;
    for (xb, yb) in x.iter().zip(y) {
        let (dy, q8) = q8_k(yb);
        let d = h2f_t(t, xb.d) * dy;
        let (qs, _) = xb.qs.as_chunks::<4>();
        let mut acc = _mm256_setzero_si256();
        for ((q, q8), &sc) in qs.iter().zip(q8).zip(&xb.scales) {
            let grid = grid4(
                IQ2XS_GRID[usize::from(q[0] & 511)],
                IQ2XS_GRID[usize::from(q[1] & 511)],
                IQ2XS_GRID[usize::from(q[2] & 511)],
                IQ2XS_GRID[usize::from(q[3] & 511)],
            );
            let signs = grid4(
                KEVEN_SIGNS[usize::from(q[0] >> 9)],
                KEVEN_SIGNS[usize::from(q[1] >> 9)],
                KEVEN_SIGNS[usize::from(q[2] >> 9)],
                KEVEN_SIGNS[usize::from(q[3] >> 9)],
            );
            let g = _mm256_sign_epi8(grid, signs);
            // Pairs 0..8 (values 0..16) take the low nibble's scale.
            let ls1 = 2 * i16::from(sc & 0xf) + 1;
            let ls2 = 2 * i16::from(sc >> 4) + 1;
            let ls = _mm256_set_m128i(_mm_set1_epi16(ls2), _mm_set1_epi16(ls1));
            acc = _mm256_add_epi32(acc, _mm256_madd_epi16(pairs(g, load32(q8)), ls));
        }
        sumf += d * hsum_i32x8(acc) as f32;
    }
    0.125 * sumf
}

/// Eight 4-byte grid points (`u32` table entries) in one vector, `g[0]`
/// lowest.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn grid8(g: [u32; 8]) -> __m256i {
    _mm256_setr_epi32(
        g[0] as i32,
        g[1] as i32,
        g[2] as i32,
        g[3] as i32,
        g[4] as i32,
        g[5] as i32,
        g[6] as i32,
        g[7] as i32,
    )
}

/// IQ3_XXS x Q8_K, as [`vec_dot_iq2_xxs_q8_k`]; bit-identical to
/// [`crate::iquants::vec_dot_iq3_xxs_q8_k`].
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C.
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn vec_dot_iq3_xxs_q8_k(x: &[BlockIq3Xxs], y: &[u8]) -> f32 {
    let t = f16_table();
    let (y, _) = y.as_chunks::<Q8_K_BYTES>();
    let mut sumf = 0f32;
    for (xb, yb) in x.iter().zip(y) {
        let (dy, q8) = q8_k(yb);
        let d = h2f_t(t, xb.d) * dy;
        let (q3, gas) = xb.qs.split_at(QK_K / 4);
        let (q3, _) = q3.as_chunks::<8>();
        let (gas, _) = gas.as_chunks::<4>();
        let mut acc = _mm256_setzero_si256();
        for ((q3, g), q8) in q3.iter().zip(gas).zip(q8) {
            let aux = u32::from_le_bytes(*g);
            let grid = grid8(q3.map(|i| IQ3XXS_GRID[usize::from(i)]));
            let g = _mm256_sign_epi8(grid, signs4(aux));
            let ls = (2 * (aux >> 28) + 1) as i16;
            let p = _mm256_madd_epi16(pairs(g, load32(q8)), _mm256_set1_epi16(ls));
            acc = _mm256_add_epi32(acc, p);
        }
        sumf += d * hsum_i32x8(acc) as f32;
    }
    0.25 * sumf
}

/// The 32 sign bits of `signs` (value `8 l + j` from bit `j` of byte `l`)
/// as `±1` bytes.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn signs_from_bits(signs: &[u8; 4]) -> __m256i {
    let v = _mm256_set1_epi32(i32::from_le_bytes(*signs));
    let spread = _mm256_setr_epi8(
        0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, //
        2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3,
    );
    let bit = _mm256_set1_epi64x(0x8040_2010_0804_0201u64 as i64);
    let set = _mm256_cmpeq_epi8(_mm256_and_si256(_mm256_shuffle_epi8(v, spread), bit), bit);
    _mm256_or_si256(set, _mm256_set1_epi8(1))
}

/// IQ3_S x Q8_K, as [`vec_dot_iq2_xxs_q8_k`]; bit-identical to
/// [`crate::iquants::vec_dot_iq3_s_q8_k`].
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C.
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn vec_dot_iq3_s_q8_k(x: &[BlockIq3S], y: &[u8]) -> f32 {
    let t = f16_table();
    let (y, _) = y.as_chunks::<Q8_K_BYTES>();
    let mut sumf = 0f32;
    for (xb, yb) in x.iter().zip(y) {
        let (dy, q8) = q8_k(yb);
        let d = h2f_t(t, xb.d) * dy;
        let (qs, _) = xb.qs.as_chunks::<8>();
        let (signs, _) = xb.signs.as_chunks::<4>();
        let mut acc = _mm256_setzero_si256();
        for (ib32, ((qs, signs), q8)) in qs.iter().zip(signs).zip(q8).enumerate() {
            let qh = usize::from(xb.qh[ib32]);
            // Index `k` takes bit `k` of `qh` as its ninth bit.
            let idx: [usize; 8] =
                core::array::from_fn(|k| usize::from(qs[k]) | ((qh << (8 - k)) & 256));
            let grid = grid8(idx.map(|i| IQ3S_GRID[i]));
            let g = _mm256_sign_epi8(grid, signs_from_bits(signs));
            let sc = xb.scales[ib32 / 2];
            let ls = 2 * i16::from(if ib32 % 2 == 0 { sc & 0xf } else { sc >> 4 }) + 1;
            let p = _mm256_madd_epi16(pairs(g, load32(q8)), _mm256_set1_epi16(ls));
            acc = _mm256_add_epi32(acc, p);
        }
        sumf += d * hsum_i32x8(acc) as f32;
    }
    sumf
}

/// IQ1_S x Q8_K, as [`vec_dot_iq2_xxs_q8_k`] (the shift term from `y`'s
/// stored block sums, as the scalar code); bit-identical to
/// [`crate::iquants::vec_dot_iq1_s_q8_k`].
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C.
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn vec_dot_iq1_s_q8_k(x: &[BlockIq1S], y: &[u8]) -> f32 {
    let t = f16_table();
    let (y, _) = y.as_chunks::<Q8_K_BYTES>();
    let mut sumf = 0f32;
    for (xb, yb) in x.iter().zip(y) {
        let (dy, q8) = q8_k(yb);
        let (bsums, _) = yb[4 + QK_K..].as_chunks::<4>();
        let (qs, _) = xb.qs.as_chunks::<4>();
        let mut acc = _mm256_setzero_si256();
        let mut sumi1 = 0i32;
        for (((qs, &qh), q8), bs) in qs.iter().zip(&xb.qh).zip(q8).zip(bsums) {
            let qh = usize::from(qh);
            let grid = grid4(
                IQ1S_GRID[usize::from(qs[0]) | ((qh << 8) & 0x700)],
                IQ1S_GRID[usize::from(qs[1]) | ((qh << 5) & 0x700)],
                IQ1S_GRID[usize::from(qs[2]) | ((qh << 2) & 0x700)],
                IQ1S_GRID[usize::from(qs[3]) | ((qh >> 1) & 0x700)],
            );
            let ls = 2 * ((qh >> 12) & 7) as i32 + 1;
            let p = _mm256_madd_epi16(pairs(grid, load32(q8)), _mm256_set1_epi16(ls as i16));
            acc = _mm256_add_epi32(acc, p);
            let bsum = i32::from(i16::from_le_bytes([bs[0], bs[1]]))
                + i32::from(i16::from_le_bytes([bs[2], bs[3]]));
            let delta = if qh & 0x8000 != 0 { -1 } else { 1 };
            sumi1 += ls * delta * bsum;
        }
        let sumi = hsum_i32x8(acc);
        sumf += h2f_t(t, xb.d) * dy * (sumi as f32 + 0.125 * sumi1 as f32);
    }
    sumf
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::iquants::grids::KSIGNS_IQ2XS;

    #[test]
    fn keven_signs_match_ksigns() {
        for (i, (&v, &s)) in KEVEN_SIGNS.iter().zip(&KSIGNS_IQ2XS).enumerate() {
            for (j, b) in v.to_le_bytes().into_iter().enumerate() {
                let want = if s & (1 << j) != 0 { 0xff } else { 0x01 };
                assert_eq!(b, want, "entry {i} byte {j}");
            }
        }
    }
}
