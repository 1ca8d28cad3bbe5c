//! The grid i-quants (IQ2_XXS, IQ2_XS, IQ2_S, IQ3_XXS, IQ3_S, IQ1_S, IQ1_M):
//! groups of 8 (or 4) values are one index into a lattice in [`super::grids`],
//! with separately stored signs (IQ2/IQ3) or a shared shift (IQ1). The
//! dequantizers and the dot products with Q8_K are here; ggml quantizes
//! these types with an importance-matrix-driven lattice search that this
//! crate does not port.
//!
//! Every grid index is formed by masking (`& 511`, `| (qh << k) & 0x300`,
//! ...) into the range of its table, and every sign field is 7 bits, so no
//! block bytes can index out of bounds. The dot products' integer sums
//! cannot overflow `i32`: a group of 32 sums at most `32 * 62 * 128` in
//! magnitude, times a scale of at most 31, times 8 groups (IQ1_S adds at
//! most `8 * 15 * 2 * 32768` from the stored Q8_K block sums).

use half::f16;

use super::grids::{
    IQ1S_GRID, IQ2S_GRID, IQ2XS_GRID, IQ2XXS_GRID, IQ3S_GRID, IQ3XXS_GRID, KMASK_IQ2XS,
    KSIGNS_IQ2XS,
};
use super::{Q8_K_BYTES, Q8K, QK_K, check_dequantize, check_partner};
use crate::QuantError;
use crate::common::fp16_to_fp32;

/// ggml's `IQ1S_DELTA` (= `IQ1M_DELTA`).
const IQ1S_DELTA: f32 = 0.125;

/// ggml `block_iq2_xxs` (2.0625 bpw).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct BlockIq2Xxs {
    /// Super-block scale.
    pub d: f16,
    /// Per group of 32: four `u16`; the first two hold four 8-bit grid
    /// indexes, the last two four 7-bit sign fields and a 4-bit scale.
    pub qs: [u16; QK_K / 8],
}
const _: () = assert!(size_of::<BlockIq2Xxs>() == 66);

/// ggml `block_iq2_xs` (2.3125 bpw).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct BlockIq2Xs {
    /// Super-block scale.
    pub d: f16,
    /// Per 8 values: 9-bit grid index, 7-bit sign field.
    pub qs: [u16; QK_K / 8],
    /// Two 4-bit scales per group of 32.
    pub scales: [u8; QK_K / 32],
}
const _: () = assert!(size_of::<BlockIq2Xs>() == 74);

/// ggml `block_iq2_s` (2.5625 bpw).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct BlockIq2S {
    /// Super-block scale.
    pub d: f16,
    /// 32 low bytes of the 10-bit grid indexes, then 32 sign bytes.
    pub qs: [u8; QK_K / 4],
    /// High 2 bits of the grid indexes, four per byte.
    pub qh: [u8; QK_K / 32],
    /// Two 4-bit scales per group of 32.
    pub scales: [u8; QK_K / 32],
}
const _: () = assert!(size_of::<BlockIq2S>() == 82);

/// ggml `block_iq3_xxs` (3.0625 bpw).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct BlockIq3Xxs {
    /// Super-block scale.
    pub d: f16,
    /// 64 grid indexes (one per 4 values), then per group of 32 a
    /// little-endian `u32` of four 7-bit sign fields and a 4-bit scale.
    pub qs: [u8; 3 * QK_K / 8],
}
const _: () = assert!(size_of::<BlockIq3Xxs>() == 98);

/// ggml `block_iq3_s` (3.4375 bpw).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct BlockIq3S {
    /// Super-block scale.
    pub d: f16,
    /// Low 8 bits of the 9-bit grid indexes (one per 4 values).
    pub qs: [u8; QK_K / 4],
    /// Ninth bits of the grid indexes.
    pub qh: [u8; QK_K / 32],
    /// One sign bit per value.
    pub signs: [u8; QK_K / 8],
    /// Two 4-bit scales per 64 values.
    pub scales: [u8; QK_K / 64],
}
const _: () = assert!(size_of::<BlockIq3S>() == 110);

/// ggml `block_iq1_s` (1.5625 bpw).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct BlockIq1S {
    /// Super-block scale.
    pub d: f16,
    /// Low 8 bits of the 11-bit grid indexes.
    pub qs: [u8; QK_K / 8],
    /// Per group of 32: four 3-bit high index parts, a 3-bit scale and the
    /// sign of the shift (bit 15).
    pub qh: [u16; QK_K / 32],
}
const _: () = assert!(size_of::<BlockIq1S>() == 50);

/// ggml `block_iq1_m` (1.75 bpw). The f16 super-block scale is spread over
/// the top nibbles of the four little-endian `u16` in `scales`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct BlockIq1M {
    /// Low 8 bits of the 11-bit grid indexes.
    pub qs: [u8; QK_K / 8],
    /// Per 16 values: two 3-bit high index parts and two shift signs.
    pub qh: [u8; QK_K / 16],
    /// 3-bit scales (12 bits per `u16`) and the super-block scale's nibbles.
    pub scales: [u8; QK_K / 32],
}
const _: () = assert!(size_of::<BlockIq1M>() == 56);

/// `±1.0` from sign byte `signs`, bit `j` (ggml's
/// `signs & kmask_iq2xs[j] ? -1.f : 1.f`).
#[inline]
fn sign(signs: u8, j: usize) -> f32 {
    if signs & KMASK_IQ2XS[j] != 0 {
        -1.0
    } else {
        1.0
    }
}

/// ggml's `dequantize_row_iq2_xxs`: `y` must hold `256 * x.len()` values.
///
/// # Errors
/// [`QuantError::BufferLength`] if `y` has the wrong length.
pub fn dequantize_row_iq2_xxs(x: &[BlockIq2Xxs], y: &mut [f32]) -> Result<(), QuantError> {
    check_dequantize(x.len(), QK_K, y.len())?;
    for (blk, y) in x.iter().zip(y.chunks_exact_mut(QK_K)) {
        let d = fp16_to_fp32(blk.d);
        for (ib32, y) in y.chunks_exact_mut(32).enumerate() {
            let q = &blk.qs[4 * ib32..4 * ib32 + 4];
            let aux0 = u32::from(q[0]) | (u32::from(q[1]) << 16);
            let aux1 = u32::from(q[2]) | (u32::from(q[3]) << 16);
            let aux8 = aux0.to_le_bytes();
            let db = d * (0.5 + (aux1 >> 28) as f32) * 0.25;
            for (l, y) in y.chunks_exact_mut(8).enumerate() {
                let grid = IQ2XXS_GRID[usize::from(aux8[l])].to_le_bytes();
                let signs = KSIGNS_IQ2XS[((aux1 >> (7 * l)) & 127) as usize];
                for j in 0..8 {
                    y[j] = db * f32::from(grid[j]) * sign(signs, j);
                }
            }
        }
    }
    Ok(())
}

/// ggml's `dequantize_row_iq2_xs`: `y` must hold `256 * x.len()` values.
///
/// # Errors
/// [`QuantError::BufferLength`] if `y` has the wrong length.
pub fn dequantize_row_iq2_xs(x: &[BlockIq2Xs], y: &mut [f32]) -> Result<(), QuantError> {
    check_dequantize(x.len(), QK_K, y.len())?;
    for (blk, y) in x.iter().zip(y.chunks_exact_mut(QK_K)) {
        let d = fp16_to_fp32(blk.d);
        for (ib32, y) in y.chunks_exact_mut(32).enumerate() {
            let db = [
                d * (0.5 + f32::from(blk.scales[ib32] & 0xf)) * 0.25,
                d * (0.5 + f32::from(blk.scales[ib32] >> 4)) * 0.25,
            ];
            for (l, y) in y.chunks_exact_mut(8).enumerate() {
                let q = blk.qs[4 * ib32 + l];
                let grid = IQ2XS_GRID[usize::from(q & 511)].to_le_bytes();
                let signs = KSIGNS_IQ2XS[usize::from(q >> 9)];
                for j in 0..8 {
                    y[j] = db[l / 2] * f32::from(grid[j]) * sign(signs, j);
                }
            }
        }
    }
    Ok(())
}

/// ggml's `dequantize_row_iq2_s`: `y` must hold `256 * x.len()` values.
///
/// # Errors
/// [`QuantError::BufferLength`] if `y` has the wrong length.
pub fn dequantize_row_iq2_s(x: &[BlockIq2S], y: &mut [f32]) -> Result<(), QuantError> {
    check_dequantize(x.len(), QK_K, y.len())?;
    for (blk, y) in x.iter().zip(y.chunks_exact_mut(QK_K)) {
        let d = fp16_to_fp32(blk.d);
        let (qs, signs) = blk.qs.split_at(QK_K / 8);
        for (ib32, y) in y.chunks_exact_mut(32).enumerate() {
            let db = [
                d * (0.5 + f32::from(blk.scales[ib32] & 0xf)) * 0.25,
                d * (0.5 + f32::from(blk.scales[ib32] >> 4)) * 0.25,
            ];
            let qh = usize::from(blk.qh[ib32]);
            for (l, y) in y.chunks_exact_mut(8).enumerate() {
                let dl = db[l / 2];
                let idx = usize::from(qs[4 * ib32 + l]) | ((qh << (8 - 2 * l)) & 0x300);
                let grid = IQ2S_GRID[idx].to_le_bytes();
                let s = signs[4 * ib32 + l];
                for j in 0..8 {
                    y[j] = dl * f32::from(grid[j]) * sign(s, j);
                }
            }
        }
    }
    Ok(())
}

/// ggml's `dequantize_row_iq3_xxs`: `y` must hold `256 * x.len()` values.
///
/// # Errors
/// [`QuantError::BufferLength`] if `y` has the wrong length.
pub fn dequantize_row_iq3_xxs(x: &[BlockIq3Xxs], y: &mut [f32]) -> Result<(), QuantError> {
    check_dequantize(x.len(), QK_K, y.len())?;
    for (blk, y) in x.iter().zip(y.chunks_exact_mut(QK_K)) {
        let d = fp16_to_fp32(blk.d);
        let (qs, scales_and_signs) = blk.qs.split_at(QK_K / 4);
        for (ib32, y) in y.chunks_exact_mut(32).enumerate() {
            let s = &scales_and_signs[4 * ib32..4 * ib32 + 4];
            let aux32 = u32::from_le_bytes([s[0], s[1], s[2], s[3]]);
            let db = d * (0.5 + (aux32 >> 28) as f32) * 0.5;
            let qs = &qs[8 * ib32..8 * ib32 + 8];
            for (l, y) in y.chunks_exact_mut(8).enumerate() {
                let signs = KSIGNS_IQ2XS[((aux32 >> (7 * l)) & 127) as usize];
                let grid1 = IQ3XXS_GRID[usize::from(qs[2 * l])].to_le_bytes();
                let grid2 = IQ3XXS_GRID[usize::from(qs[2 * l + 1])].to_le_bytes();
                for j in 0..4 {
                    y[j] = db * f32::from(grid1[j]) * sign(signs, j);
                    y[j + 4] = db * f32::from(grid2[j]) * sign(signs, j + 4);
                }
            }
        }
    }
    Ok(())
}

/// ggml's `dequantize_row_iq3_s`: `y` must hold `256 * x.len()` values.
///
/// # Errors
/// [`QuantError::BufferLength`] if `y` has the wrong length.
pub fn dequantize_row_iq3_s(x: &[BlockIq3S], y: &mut [f32]) -> Result<(), QuantError> {
    check_dequantize(x.len(), QK_K, y.len())?;
    for (blk, y) in x.iter().zip(y.chunks_exact_mut(QK_K)) {
        let d = fp16_to_fp32(blk.d);
        // ib32 = 0, 2, 4, 6: two groups of 32 per scale byte
        for (k, y) in y.chunks_exact_mut(64).enumerate() {
            let db = [
                d * (1 + 2 * i32::from(blk.scales[k] & 0xf)) as f32,
                d * (1 + 2 * i32::from(blk.scales[k] >> 4)) as f32,
            ];
            for (h, y) in y.chunks_exact_mut(32).enumerate() {
                let ib32 = 2 * k + h;
                let qs = &blk.qs[8 * ib32..8 * ib32 + 8];
                let signs = &blk.signs[4 * ib32..4 * ib32 + 4];
                let qh = usize::from(blk.qh[ib32]);
                for (l, y) in y.chunks_exact_mut(8).enumerate() {
                    let i1 = usize::from(qs[2 * l]) | ((qh << (8 - 2 * l)) & 256);
                    let i2 = usize::from(qs[2 * l + 1]) | ((qh << (7 - 2 * l)) & 256);
                    let grid1 = IQ3S_GRID[i1].to_le_bytes();
                    let grid2 = IQ3S_GRID[i2].to_le_bytes();
                    for j in 0..4 {
                        y[j] = db[h] * f32::from(grid1[j]) * sign(signs[l], j);
                        y[j + 4] = db[h] * f32::from(grid2[j]) * sign(signs[l], j + 4);
                    }
                }
            }
        }
    }
    Ok(())
}

/// Signed grid value `j` of IQ1 grid point `idx` (ggml reads the `u64` as
/// `int8_t[8]`).
#[inline]
fn iq1_grid(idx: usize) -> [i8; 8] {
    IQ1S_GRID[idx].to_le_bytes().map(|b| b as i8)
}

/// ggml's `dequantize_row_iq1_s`: `y` must hold `256 * x.len()` values.
///
/// # Errors
/// [`QuantError::BufferLength`] if `y` has the wrong length.
pub fn dequantize_row_iq1_s(x: &[BlockIq1S], y: &mut [f32]) -> Result<(), QuantError> {
    check_dequantize(x.len(), QK_K, y.len())?;
    for (blk, y) in x.iter().zip(y.chunks_exact_mut(QK_K)) {
        let d = fp16_to_fp32(blk.d);
        for (ib, y) in y.chunks_exact_mut(32).enumerate() {
            let qh = blk.qh[ib];
            let dl = d * (2 * i32::from((qh >> 12) & 7) + 1) as f32;
            let delta = if qh & 0x8000 != 0 {
                -IQ1S_DELTA
            } else {
                IQ1S_DELTA
            };
            for (l, y) in y.chunks_exact_mut(8).enumerate() {
                let idx = usize::from(blk.qs[4 * ib + l]) | (usize::from((qh >> (3 * l)) & 7) << 8);
                let grid = iq1_grid(idx);
                for j in 0..8 {
                    y[j] = dl * (f32::from(grid[j]) + delta);
                }
            }
        }
    }
    Ok(())
}

/// An IQ1_M block's four scale words and its f16 super-block scale (spread
/// over their top nibbles), as ggml's `dequantize_row_iq1_m` unpacks them.
pub(crate) fn iq1_m_scales(blk: &BlockIq1M) -> ([u16; 4], f16) {
    let sc: [u16; 4] =
        core::array::from_fn(|i| u16::from_le_bytes([blk.scales[2 * i], blk.scales[2 * i + 1]]));
    let scale =
        (sc[0] >> 12) | ((sc[1] >> 8) & 0x00f0) | ((sc[2] >> 4) & 0x0f00) | (sc[3] & 0xf000);
    (sc, f16::from_bits(scale))
}

/// Group `ib` (0..8, 32 values) of an IQ1_M block: the two scale factors
/// `2 s + 1` (values 0..16 and 16..32), the four grid indexes (8 values
/// each) and whether each one's shift is negative.
pub(crate) fn iq1_m_group(
    blk: &BlockIq1M,
    sc: &[u16; 4],
    ib: usize,
) -> ([i32; 2], [usize; 4], [bool; 4]) {
    let s = sc[ib / 2];
    let m = [
        2 * i32::from((s >> (6 * (ib % 2))) & 0x7) + 1,
        2 * i32::from((s >> (6 * (ib % 2) + 3)) & 0x7) + 1,
    ];
    let qs = &blk.qs[4 * ib..4 * ib + 4];
    let qh = [usize::from(blk.qh[2 * ib]), usize::from(blk.qh[2 * ib + 1])];
    let idx = [
        usize::from(qs[0]) | ((qh[0] << 8) & 0x700),
        usize::from(qs[1]) | ((qh[0] << 4) & 0x700),
        usize::from(qs[2]) | ((qh[1] << 8) & 0x700),
        usize::from(qs[3]) | ((qh[1] << 4) & 0x700),
    ];
    let neg = [
        qh[0] & 0x08 != 0,
        qh[0] & 0x80 != 0,
        qh[1] & 0x08 != 0,
        qh[1] & 0x80 != 0,
    ];
    (m, idx, neg)
}

/// ggml's `dequantize_row_iq1_m`: `y` must hold `256 * x.len()` values.
///
/// # Errors
/// [`QuantError::BufferLength`] if `y` has the wrong length.
pub fn dequantize_row_iq1_m(x: &[BlockIq1M], y: &mut [f32]) -> Result<(), QuantError> {
    check_dequantize(x.len(), QK_K, y.len())?;
    for (blk, y) in x.iter().zip(y.chunks_exact_mut(QK_K)) {
        let (sc, scale) = iq1_m_scales(blk);
        let d = fp16_to_fp32(scale);
        for (ib, y) in y.chunks_exact_mut(32).enumerate() {
            let (m, idx, neg) = iq1_m_group(blk, &sc, ib);
            let (dl1, dl2) = (d * m[0] as f32, d * m[1] as f32);
            let delta = neg.map(|n| if n { -IQ1S_DELTA } else { IQ1S_DELTA });
            for (l, y) in y.chunks_exact_mut(8).enumerate() {
                let dl = if l < 2 { dl1 } else { dl2 };
                let grid = iq1_grid(idx[l]);
                for j in 0..8 {
                    y[j] = dl * (f32::from(grid[j]) + delta[l]);
                }
            }
        }
    }
    Ok(())
}

/// `grid * q * (±1)` summed over `n` values, the sign of value `j` from bit
/// `j` of `signs` (ggml's `signs & kmask_iq2xs[j] ? -1 : 1`).
#[inline]
fn signed_dot(grid: &[u8], q8: &Q8K<'_>, at: usize, signs: u8, shift: usize) -> i32 {
    let mut sumi = 0i32;
    for (j, &g) in grid.iter().enumerate() {
        let s = if signs & KMASK_IQ2XS[j + shift] != 0 {
            -1
        } else {
            1
        };
        sumi += i32::from(g) * q8.q(at + j) * s;
    }
    sumi
}

/// ggml's scalar `ggml_vec_dot_iq2_xxs_q8_K`: the dot product of `x` with
/// `y`, the raw bytes of `x.len()` `block_q8_K` (292 bytes each: f32 `d`
/// little-endian, 256 `i8`, 16 `i16` block sums).
///
/// # Errors
/// [`QuantError::BufferLength`] if `y.len() != 292 * x.len()`.
pub fn vec_dot_iq2_xxs_q8_k(x: &[BlockIq2Xxs], y: &[u8]) -> Result<f32, QuantError> {
    check_partner("y (block_q8_K bytes)", x.len(), Q8_K_BYTES, y.len())?;
    let mut sumf = 0.0f32;
    for (xb, yb) in x.iter().zip(y.chunks_exact(Q8_K_BYTES)) {
        let yb = Q8K::parse(yb);
        let d = fp16_to_fp32(xb.d) * yb.d;
        let mut bsum = 0i32;
        for ib32 in 0..QK_K / 32 {
            let q = &xb.qs[4 * ib32..4 * ib32 + 4];
            let aux0 = u32::from(q[0]) | (u32::from(q[1]) << 16);
            let aux1 = u32::from(q[2]) | (u32::from(q[3]) << 16);
            let aux8 = aux0.to_le_bytes();
            let ls = (2 * (aux1 >> 28) + 1) as i32;
            let mut sumi = 0i32;
            for l in 0..4 {
                let grid = IQ2XXS_GRID[usize::from(aux8[l])].to_le_bytes();
                let signs = KSIGNS_IQ2XS[((aux1 >> (7 * l)) & 127) as usize];
                sumi += signed_dot(&grid, &yb, 32 * ib32 + 8 * l, signs, 0);
            }
            bsum += sumi * ls;
        }
        sumf += d * bsum as f32;
    }
    Ok(0.125 * sumf)
}

/// ggml's scalar `ggml_vec_dot_iq2_xs_q8_K` (`y` as in
/// [`vec_dot_iq2_xxs_q8_k`]).
///
/// # Errors
/// [`QuantError::BufferLength`] if `y.len() != 292 * x.len()`.
pub fn vec_dot_iq2_xs_q8_k(x: &[BlockIq2Xs], y: &[u8]) -> Result<f32, QuantError> {
    check_partner("y (block_q8_K bytes)", x.len(), Q8_K_BYTES, y.len())?;
    let mut sumf = 0.0f32;
    for (xb, yb) in x.iter().zip(y.chunks_exact(Q8_K_BYTES)) {
        let yb = Q8K::parse(yb);
        let d = fp16_to_fp32(xb.d) * yb.d;
        let mut bsum = 0i32;
        for ib32 in 0..QK_K / 32 {
            let ls = [
                2 * i32::from(xb.scales[ib32] & 0xf) + 1,
                2 * i32::from(xb.scales[ib32] >> 4) + 1,
            ];
            for (h, ls) in ls.into_iter().enumerate() {
                let mut sumi = 0i32;
                for l in 2 * h..2 * h + 2 {
                    let q = xb.qs[4 * ib32 + l];
                    let grid = IQ2XS_GRID[usize::from(q & 511)].to_le_bytes();
                    let signs = KSIGNS_IQ2XS[usize::from(q >> 9)];
                    sumi += signed_dot(&grid, &yb, 32 * ib32 + 8 * l, signs, 0);
                }
                bsum += sumi * ls;
            }
        }
        sumf += d * bsum as f32;
    }
    Ok(0.125 * sumf)
}

/// ggml's scalar `ggml_vec_dot_iq2_s_q8_K` (`y` as in
/// [`vec_dot_iq2_xxs_q8_k`]).
///
/// # Errors
/// [`QuantError::BufferLength`] if `y.len() != 292 * x.len()`.
pub fn vec_dot_iq2_s_q8_k(x: &[BlockIq2S], y: &[u8]) -> Result<f32, QuantError> {
    check_partner("y (block_q8_K bytes)", x.len(), Q8_K_BYTES, y.len())?;
    let mut sumf = 0.0f32;
    for (xb, yb) in x.iter().zip(y.chunks_exact(Q8_K_BYTES)) {
        let yb = Q8K::parse(yb);
        let d = fp16_to_fp32(xb.d) * yb.d;
        let (qs, signs) = xb.qs.split_at(QK_K / 8);
        let mut bsum = 0i32;
        for ib32 in 0..QK_K / 32 {
            let ls1 = 1 + 2 * i32::from(xb.scales[ib32] & 0xf);
            let ls2 = 1 + 2 * i32::from(xb.scales[ib32] >> 4);
            let qh = usize::from(xb.qh[ib32]);
            let mut sumi = [0i32; 2];
            for l in 0..4 {
                let idx = usize::from(qs[4 * ib32 + l]) | ((qh << (8 - 2 * l)) & 0x300);
                let grid = IQ2S_GRID[idx].to_le_bytes();
                sumi[l / 2] += signed_dot(&grid, &yb, 32 * ib32 + 8 * l, signs[4 * ib32 + l], 0);
            }
            bsum += ls1 * sumi[0] + ls2 * sumi[1];
        }
        sumf += d * bsum as f32;
    }
    Ok(0.125 * sumf)
}

/// ggml's scalar `ggml_vec_dot_iq3_xxs_q8_K` (`y` as in
/// [`vec_dot_iq2_xxs_q8_k`]).
///
/// # Errors
/// [`QuantError::BufferLength`] if `y.len() != 292 * x.len()`.
pub fn vec_dot_iq3_xxs_q8_k(x: &[BlockIq3Xxs], y: &[u8]) -> Result<f32, QuantError> {
    check_partner("y (block_q8_K bytes)", x.len(), Q8_K_BYTES, y.len())?;
    let mut sumf = 0.0f32;
    for (xb, yb) in x.iter().zip(y.chunks_exact(Q8_K_BYTES)) {
        let yb = Q8K::parse(yb);
        let d = fp16_to_fp32(xb.d) * yb.d;
        let (q3, gas) = xb.qs.split_at(QK_K / 4);
        let mut bsum = 0i32;
        for ib32 in 0..QK_K / 32 {
            let g = &gas[4 * ib32..4 * ib32 + 4];
            let aux32 = u32::from_le_bytes([g[0], g[1], g[2], g[3]]);
            let ls = (2 * (aux32 >> 28) + 1) as i32;
            let q3 = &q3[8 * ib32..8 * ib32 + 8];
            let mut sumi = 0i32;
            for l in 0..4 {
                let grid1 = IQ3XXS_GRID[usize::from(q3[2 * l])].to_le_bytes();
                let grid2 = IQ3XXS_GRID[usize::from(q3[2 * l + 1])].to_le_bytes();
                let signs = KSIGNS_IQ2XS[((aux32 >> (7 * l)) & 127) as usize];
                let at = 32 * ib32 + 8 * l;
                sumi += signed_dot(&grid1, &yb, at, signs, 0);
                sumi += signed_dot(&grid2, &yb, at + 4, signs, 4);
            }
            bsum += sumi * ls;
        }
        sumf += d * bsum as f32;
    }
    Ok(0.25 * sumf)
}

/// ggml's scalar `ggml_vec_dot_iq3_s_q8_K` (`y` as in
/// [`vec_dot_iq2_xxs_q8_k`]).
///
/// # Errors
/// [`QuantError::BufferLength`] if `y.len() != 292 * x.len()`.
pub fn vec_dot_iq3_s_q8_k(x: &[BlockIq3S], y: &[u8]) -> Result<f32, QuantError> {
    check_partner("y (block_q8_K bytes)", x.len(), Q8_K_BYTES, y.len())?;
    let mut sumf = 0.0f32;
    for (xb, yb) in x.iter().zip(y.chunks_exact(Q8_K_BYTES)) {
        let yb = Q8K::parse(yb);
        let d = fp16_to_fp32(xb.d) * yb.d;
        let mut bsum = 0i32;
        for ib32 in 0..QK_K / 32 {
            let sc = xb.scales[ib32 / 2];
            let ls = 2 * i32::from(if ib32 % 2 == 0 { sc & 0xf } else { sc >> 4 }) + 1;
            let qs = &xb.qs[8 * ib32..8 * ib32 + 8];
            let signs = &xb.signs[4 * ib32..4 * ib32 + 4];
            let qh = usize::from(xb.qh[ib32]);
            let mut sumi = 0i32;
            for l in 0..4 {
                let i1 = usize::from(qs[2 * l]) | ((qh << (8 - 2 * l)) & 256);
                let i2 = usize::from(qs[2 * l + 1]) | ((qh << (7 - 2 * l)) & 256);
                let grid1 = IQ3S_GRID[i1].to_le_bytes();
                let grid2 = IQ3S_GRID[i2].to_le_bytes();
                let at = 32 * ib32 + 8 * l;
                sumi += signed_dot(&grid1, &yb, at, signs[l], 0);
                sumi += signed_dot(&grid2, &yb, at + 4, signs[l], 4);
            }
            bsum += sumi * ls;
        }
        sumf += d * bsum as f32;
    }
    Ok(sumf)
}

/// ggml's scalar `ggml_vec_dot_iq1_s_q8_K` (`y` as in
/// [`vec_dot_iq2_xxs_q8_k`]). As in ggml, the shift term uses `y`'s stored
/// block sums (`bsums`), not the sums of its quants.
///
/// # Errors
/// [`QuantError::BufferLength`] if `y.len() != 292 * x.len()`.
pub fn vec_dot_iq1_s_q8_k(x: &[BlockIq1S], y: &[u8]) -> Result<f32, QuantError> {
    check_partner("y (block_q8_K bytes)", x.len(), Q8_K_BYTES, y.len())?;
    let mut sumf = 0.0f32;
    for (xb, yb) in x.iter().zip(y.chunks_exact(Q8_K_BYTES)) {
        let yb = Q8K::parse(yb);
        let (mut sumi, mut sumi1) = (0i32, 0i32);
        for ib in 0..QK_K / 32 {
            let qh = xb.qh[ib];
            let ls = 2 * i32::from((qh >> 12) & 7) + 1;
            let delta = if qh & 0x8000 != 0 { -1 } else { 1 };
            let mut lsum = 0i32;
            for l in 0..4 {
                let idx = usize::from(xb.qs[4 * ib + l]) | (usize::from((qh >> (3 * l)) & 7) << 8);
                let grid = iq1_grid(idx);
                for (j, &g) in grid.iter().enumerate() {
                    lsum += yb.q(32 * ib + 8 * l + j) * i32::from(g);
                }
            }
            sumi += ls * lsum;
            sumi1 += ls * delta * (yb.bsum(2 * ib) + yb.bsum(2 * ib + 1));
        }
        sumf += fp16_to_fp32(xb.d) * yb.d * (sumi as f32 + IQ1S_DELTA * sumi1 as f32);
    }
    Ok(sumf)
}

/// ggml's scalar `ggml_vec_dot_iq1_m_q8_K` (`y` as in
/// [`vec_dot_iq2_xxs_q8_k`]; its block sums are not read).
///
/// # Errors
/// [`QuantError::BufferLength`] if `y.len() != 292 * x.len()`.
pub fn vec_dot_iq1_m_q8_k(x: &[BlockIq1M], y: &[u8]) -> Result<f32, QuantError> {
    check_partner("y (block_q8_K bytes)", x.len(), Q8_K_BYTES, y.len())?;
    let mut sumf = 0.0f32;
    for (xb, yb) in x.iter().zip(y.chunks_exact(Q8_K_BYTES)) {
        let yb = Q8K::parse(yb);
        let sc: [u16; 4] =
            core::array::from_fn(|i| u16::from_le_bytes([xb.scales[2 * i], xb.scales[2 * i + 1]]));
        let scale =
            (sc[0] >> 12) | ((sc[1] >> 8) & 0x00f0) | ((sc[2] >> 4) & 0x0f00) | (sc[3] & 0xf000);
        let (mut sumi1, mut sumi2) = (0i32, 0i32);
        for ib in 0..QK_K / 32 {
            let qh = [xb.qh[2 * ib], xb.qh[2 * ib + 1]];
            let delta = [
                if qh[0] & 0x08 != 0 { -1 } else { 1 },
                if qh[0] & 0x80 != 0 { -1 } else { 1 },
                if qh[1] & 0x08 != 0 { -1 } else { 1 },
                if qh[1] & 0x80 != 0 { -1 } else { 1 },
            ];
            let (mut sum1, mut sum2) = ([0i32; 2], [0i32; 2]);
            for l in 0..4 {
                let idx = usize::from(xb.qs[4 * ib + l])
                    | ((usize::from(qh[l / 2]) << (8 - 4 * (l % 2))) & 0x700);
                let grid = iq1_grid(idx);
                let (mut lsum1, mut lsum2) = (0i32, 0i32);
                for (j, &g) in grid.iter().enumerate() {
                    let q = yb.q(32 * ib + 8 * l + j);
                    lsum1 += q * i32::from(g);
                    lsum2 += q;
                }
                sum1[l / 2] += lsum1;
                sum2[l / 2] += lsum2 * delta[l];
            }
            let s = sc[ib / 2];
            let ls1 = 2 * i32::from((s >> (6 * (ib % 2))) & 0x7) + 1;
            let ls2 = 2 * i32::from((s >> (6 * (ib % 2) + 3)) & 0x7) + 1;
            sumi1 += sum1[0] * ls1 + sum1[1] * ls2;
            sumi2 += sum2[0] * ls1 + sum2[1] * ls2;
        }
        let d = fp16_to_fp32(f16::from_bits(scale));
        sumf += d * yb.d * (sumi1 as f32 + IQ1S_DELTA * sumi2 as f32);
    }
    Ok(sumf)
}
