//! The grid i-quants (IQ2_XXS, IQ2_XS, IQ2_S, IQ3_XXS, IQ3_S, IQ1_S, IQ1_M):
//! groups of 8 (or 4) values are one index into a lattice in [`super::grids`],
//! with separately stored signs (IQ2/IQ3) or a shared shift (IQ1). Only the
//! dequantizers are here: ggml quantizes these types with an
//! importance-matrix-driven lattice search that this crate does not port.

use half::f16;

use super::QK_K;
use super::check_dequantize;
use super::grids::{
    IQ1S_GRID, IQ2S_GRID, IQ2XS_GRID, IQ2XXS_GRID, IQ3S_GRID, IQ3XXS_GRID, KMASK_IQ2XS,
    KSIGNS_IQ2XS,
};
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

/// ggml's `dequantize_row_iq1_m`: `y` must hold `256 * x.len()` values.
///
/// # Errors
/// [`QuantError::BufferLength`] if `y` has the wrong length.
pub fn dequantize_row_iq1_m(x: &[BlockIq1M], y: &mut [f32]) -> Result<(), QuantError> {
    check_dequantize(x.len(), QK_K, y.len())?;
    for (blk, y) in x.iter().zip(y.chunks_exact_mut(QK_K)) {
        let sc: [u16; 4] = core::array::from_fn(|i| {
            u16::from_le_bytes([blk.scales[2 * i], blk.scales[2 * i + 1]])
        });
        let scale =
            (sc[0] >> 12) | ((sc[1] >> 8) & 0x00f0) | ((sc[2] >> 4) & 0x0f00) | (sc[3] & 0xf000);
        let d = fp16_to_fp32(f16::from_bits(scale));
        for (ib, y) in y.chunks_exact_mut(32).enumerate() {
            let s = sc[ib / 2];
            let dl1 = d * (2 * i32::from((s >> (6 * (ib % 2))) & 0x7) + 1) as f32;
            let dl2 = d * (2 * i32::from((s >> (6 * (ib % 2) + 3)) & 0x7) + 1) as f32;
            let qs = &blk.qs[4 * ib..4 * ib + 4];
            let qh = [usize::from(blk.qh[2 * ib]), usize::from(blk.qh[2 * ib + 1])];
            let idx = [
                usize::from(qs[0]) | ((qh[0] << 8) & 0x700),
                usize::from(qs[1]) | ((qh[0] << 4) & 0x700),
                usize::from(qs[2]) | ((qh[1] << 8) & 0x700),
                usize::from(qs[3]) | ((qh[1] << 4) & 0x700),
            ];
            let delta = [
                if qh[0] & 0x08 != 0 {
                    -IQ1S_DELTA
                } else {
                    IQ1S_DELTA
                },
                if qh[0] & 0x80 != 0 {
                    -IQ1S_DELTA
                } else {
                    IQ1S_DELTA
                },
                if qh[1] & 0x08 != 0 {
                    -IQ1S_DELTA
                } else {
                    IQ1S_DELTA
                },
                if qh[1] & 0x80 != 0 {
                    -IQ1S_DELTA
                } else {
                    IQ1S_DELTA
                },
            ];
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
