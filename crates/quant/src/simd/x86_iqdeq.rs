//! x86_64 AVX2 dequantizers of the grid i-quants (IQ2_XXS, IQ2_XS, IQ2_S,
//! IQ3_XXS, IQ3_S, IQ1_S, IQ1_M), chosen at run time by
//! [`super::dispatch`].
//!
//! # Exactness
//!
//! Bit-identical to the scalar references in [`crate::iquants`]: the
//! per-group scales are computed in scalar code with the reference's f32
//! operations in its order (`d * (0.5 + s) * 0.25`, `d * (2 s + 1) as f32`,
//! ...), then eight values at a time are formed in f32 lanes with the
//! reference's per-value operations, in its association:
//!
//! * IQ2/IQ3: `(db * grid) * sign`, the sign a `±1.0` multiplier (as the
//!   reference's `sign(..)`), so even NaN and infinite scales give the
//!   reference's values;
//! * IQ1: `dl * (grid + delta)`, `delta = ±0.125`.
//!
//! Grid values (small integers) convert to f32 exactly. Grid indexes are
//! masked as in the scalar code, so in bounds for any bytes.
//!
//! In-process (rows of 4096 values, medians, Zen 4): 21-44 GB/s against
//! 6.5-10 GB/s for the scalar code and 5.1-6.9 GB/s for llama.cpp's
//! `to_float` (scalar C): 3.9x (IQ3_S) to 6.4x (IQ1_S) llama.cpp.

use std::arch::x86_64::*;

use super::x86::{f16_table, h2f_t};
use crate::iquants::grids::{
    IQ1S_GRID, IQ2S_GRID, IQ2XS_GRID, IQ2XXS_GRID, IQ3S_GRID, IQ3XXS_GRID, KSIGNS_IQ2XS,
};
use crate::iquants::{
    BlockIq1M, BlockIq1S, BlockIq2S, BlockIq2Xs, BlockIq2Xxs, BlockIq3S, BlockIq3Xxs, iq1_m_group,
    iq1_m_scales,
};
use crate::kquants::QK_K;

/// `±1.0` for bit `j` of `signs` in lane `j` (`-1.0` where it is set).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn sign8(signs: u8) -> __m256 {
    let bits = _mm256_setr_epi32(1, 2, 4, 8, 16, 32, 64, 128);
    let set = _mm256_cmpeq_epi32(
        _mm256_and_si256(_mm256_set1_epi32(i32::from(signs)), bits),
        bits,
    );
    _mm256_xor_ps(
        _mm256_set1_ps(1.0),
        _mm256_and_ps(_mm256_castsi256_ps(set), _mm256_set1_ps(-0.0)),
    )
}

/// The eight unsigned grid bytes of `g` (byte 0 lowest) as f32.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn grid_u8(g: u64) -> __m256 {
    _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_cvtsi64_si128(g as i64)))
}

/// The eight signed grid bytes of `g` (byte 0 lowest) as f32.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn grid_i8(g: u64) -> __m256 {
    _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_cvtsi64_si128(g as i64)))
}

/// Stores `(db * grid[j]) * sign(signs, j)` for `j < 8`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn put_signed(y: &mut [f32; 8], db: f32, grid: u64, signs: u8) {
    let v = _mm256_mul_ps(
        _mm256_mul_ps(_mm256_set1_ps(db), grid_u8(grid)),
        sign8(signs),
    );
    // SAFETY: `y` is 8 writable f32s; the store needs no alignment.
    unsafe { _mm256_storeu_ps(y.as_mut_ptr(), v) };
}

/// Stores `dl * (grid[j] + delta)` for `j < 8`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn put_shifted(y: &mut [f32; 8], dl: f32, grid: u64, delta: f32) {
    let v = _mm256_mul_ps(
        _mm256_set1_ps(dl),
        _mm256_add_ps(grid_i8(grid), _mm256_set1_ps(delta)),
    );
    // SAFETY: `y` is 8 writable f32s; the store needs no alignment.
    unsafe { _mm256_storeu_ps(y.as_mut_ptr(), v) };
}

/// Two 4-byte grid points as one 8-byte one (`a` low).
#[inline(always)]
fn join(a: u32, b: u32) -> u64 {
    u64::from(a) | (u64::from(b) << 32)
}

/// The IQ1 shift: `-0.125` where `neg`, else `0.125`.
#[inline(always)]
fn delta(neg: bool) -> f32 {
    if neg { -0.125 } else { 0.125 }
}

/// IQ2_XXS: [`crate::iquants::dequantize_row_iq2_xxs`], bit-identical; `y`
/// holds `256 * x.len()` values (extra values are left alone).
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C.
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn dequantize_row_iq2_xxs(x: &[BlockIq2Xxs], y: &mut [f32]) {
    let t = f16_table();
    for (blk, y) in x.iter().zip(y.chunks_exact_mut(QK_K)) {
        let d = h2f_t(t, blk.d);
        let (y, _) = y.as_chunks_mut::<8>();
        for (ib32, y) in y.chunks_exact_mut(4).enumerate() {
            let q = &blk.qs[4 * ib32..4 * ib32 + 4];
            let aux0 = u32::from(q[0]) | (u32::from(q[1]) << 16);
            let aux1 = u32::from(q[2]) | (u32::from(q[3]) << 16);
            let aux8 = aux0.to_le_bytes();
            let db = d * (0.5 + (aux1 >> 28) as f32) * 0.25;
            for (l, y) in y.iter_mut().enumerate() {
                let signs = KSIGNS_IQ2XS[((aux1 >> (7 * l)) & 127) as usize];
                put_signed(y, db, IQ2XXS_GRID[usize::from(aux8[l])], signs);
            }
        }
    }
}

/// IQ2_XS: [`crate::iquants::dequantize_row_iq2_xs`], bit-identical.
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C.
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn dequantize_row_iq2_xs(x: &[BlockIq2Xs], y: &mut [f32]) {
    let t = f16_table();
    for (blk, y) in x.iter().zip(y.chunks_exact_mut(QK_K)) {
        let d = h2f_t(t, blk.d);
        let (y, _) = y.as_chunks_mut::<8>();
        for (ib32, y) in y.chunks_exact_mut(4).enumerate() {
            let db = [
                d * (0.5 + f32::from(blk.scales[ib32] & 0xf)) * 0.25,
                d * (0.5 + f32::from(blk.scales[ib32] >> 4)) * 0.25,
            ];
            for (l, y) in y.iter_mut().enumerate() {
                let q = blk.qs[4 * ib32 + l];
                let grid = IQ2XS_GRID[usize::from(q & 511)];
                put_signed(y, db[l / 2], grid, KSIGNS_IQ2XS[usize::from(q >> 9)]);
            }
        }
    }
}

/// IQ2_S: [`crate::iquants::dequantize_row_iq2_s`], bit-identical.
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C.
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn dequantize_row_iq2_s(x: &[BlockIq2S], y: &mut [f32]) {
    let t = f16_table();
    for (blk, y) in x.iter().zip(y.chunks_exact_mut(QK_K)) {
        let d = h2f_t(t, blk.d);
        let (qs, signs) = blk.qs.split_at(QK_K / 8);
        let (y, _) = y.as_chunks_mut::<8>();
        for (ib32, y) in y.chunks_exact_mut(4).enumerate() {
            let db = [
                d * (0.5 + f32::from(blk.scales[ib32] & 0xf)) * 0.25,
                d * (0.5 + f32::from(blk.scales[ib32] >> 4)) * 0.25,
            ];
            let qh = usize::from(blk.qh[ib32]);
            for (l, y) in y.iter_mut().enumerate() {
                let idx = usize::from(qs[4 * ib32 + l]) | ((qh << (8 - 2 * l)) & 0x300);
                put_signed(y, db[l / 2], IQ2S_GRID[idx], signs[4 * ib32 + l]);
            }
        }
    }
}

/// IQ3_XXS: [`crate::iquants::dequantize_row_iq3_xxs`], bit-identical.
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C.
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn dequantize_row_iq3_xxs(x: &[BlockIq3Xxs], y: &mut [f32]) {
    let t = f16_table();
    for (blk, y) in x.iter().zip(y.chunks_exact_mut(QK_K)) {
        let d = h2f_t(t, blk.d);
        let (qs, scales_and_signs) = blk.qs.split_at(QK_K / 4);
        let (y, _) = y.as_chunks_mut::<8>();
        for (ib32, y) in y.chunks_exact_mut(4).enumerate() {
            let s = &scales_and_signs[4 * ib32..4 * ib32 + 4];
            let aux32 = u32::from_le_bytes([s[0], s[1], s[2], s[3]]);
            let db = d * (0.5 + (aux32 >> 28) as f32) * 0.5;
            let qs = &qs[8 * ib32..8 * ib32 + 8];
            for (l, y) in y.iter_mut().enumerate() {
                let signs = KSIGNS_IQ2XS[((aux32 >> (7 * l)) & 127) as usize];
                let grid = join(
                    IQ3XXS_GRID[usize::from(qs[2 * l])],
                    IQ3XXS_GRID[usize::from(qs[2 * l + 1])],
                );
                put_signed(y, db, grid, signs);
            }
        }
    }
}

/// IQ3_S: [`crate::iquants::dequantize_row_iq3_s`], bit-identical.
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C.
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn dequantize_row_iq3_s(x: &[BlockIq3S], y: &mut [f32]) {
    let t = f16_table();
    for (blk, y) in x.iter().zip(y.chunks_exact_mut(QK_K)) {
        let d = h2f_t(t, blk.d);
        let (y, _) = y.as_chunks_mut::<8>();
        for (ib32, y) in y.chunks_exact_mut(4).enumerate() {
            let sc = blk.scales[ib32 / 2];
            let s = if ib32 % 2 == 0 { sc & 0xf } else { sc >> 4 };
            let db = d * (1 + 2 * i32::from(s)) as f32;
            let qs = &blk.qs[8 * ib32..8 * ib32 + 8];
            let signs = &blk.signs[4 * ib32..4 * ib32 + 4];
            let qh = usize::from(blk.qh[ib32]);
            for (l, y) in y.iter_mut().enumerate() {
                let i1 = usize::from(qs[2 * l]) | ((qh << (8 - 2 * l)) & 256);
                let i2 = usize::from(qs[2 * l + 1]) | ((qh << (7 - 2 * l)) & 256);
                put_signed(y, db, join(IQ3S_GRID[i1], IQ3S_GRID[i2]), signs[l]);
            }
        }
    }
}

/// IQ1_S: [`crate::iquants::dequantize_row_iq1_s`], bit-identical.
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C.
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn dequantize_row_iq1_s(x: &[BlockIq1S], y: &mut [f32]) {
    let t = f16_table();
    for (blk, y) in x.iter().zip(y.chunks_exact_mut(QK_K)) {
        let d = h2f_t(t, blk.d);
        let (y, _) = y.as_chunks_mut::<8>();
        for (ib, y) in y.chunks_exact_mut(4).enumerate() {
            let qh = blk.qh[ib];
            let dl = d * (2 * i32::from((qh >> 12) & 7) + 1) as f32;
            let delta = delta(qh & 0x8000 != 0);
            for (l, y) in y.iter_mut().enumerate() {
                let idx = usize::from(blk.qs[4 * ib + l]) | (usize::from((qh >> (3 * l)) & 7) << 8);
                put_shifted(y, dl, IQ1S_GRID[idx], delta);
            }
        }
    }
}

/// IQ1_M: [`crate::iquants::dequantize_row_iq1_m`], bit-identical.
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C.
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn dequantize_row_iq1_m(x: &[BlockIq1M], y: &mut [f32]) {
    let t = f16_table();
    for (blk, y) in x.iter().zip(y.chunks_exact_mut(QK_K)) {
        let (sc, scale) = iq1_m_scales(blk);
        let d = h2f_t(t, scale);
        let (y, _) = y.as_chunks_mut::<8>();
        for (ib, y) in y.chunks_exact_mut(4).enumerate() {
            let (m, idx, neg) = iq1_m_group(blk, &sc, ib);
            let (dl1, dl2) = (d * m[0] as f32, d * m[1] as f32);
            for (l, y) in y.iter_mut().enumerate() {
                let dl = if l < 2 { dl1 } else { dl2 };
                put_shifted(y, dl, IQ1S_GRID[idx[l]], delta(neg[l]));
            }
        }
    }
}
