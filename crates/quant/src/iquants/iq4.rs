//! IQ4_NL and IQ4_XS: 4-bit indexes into the non-linear codebook
//! [`KVALUES_IQ4NL`](super::grids::KVALUES_IQ4NL); IQ4_NL has one f16 scale
//! per 32 values, IQ4_XS one f16 super-scale per 256 and a 6-bit scale per 32.
//! Both are quantized by ggml's `quantize_row_iq4_nl_impl`, with or without
//! importance weights.

// The kernels index like the C they port, to keep the two easy to compare.
#![allow(clippy::needless_range_loop)]

use half::f16;
use weightkit_core::DType;

use super::grids::KVALUES_IQ4NL;
use super::{
    Q8_0, Q8_0_BYTES, Q8_K_BYTES, Q8K, QK_K, check_dequantize, check_partner, check_quantize,
    check_ref, nearest_int,
};
use crate::QuantError;
use crate::common::{fp16_to_fp32, fp32_to_fp16};

/// ggml's `QK4_NL`.
const QK4_NL: usize = 32;
/// ggml's `GROUP_MAX_EPS`.
const GROUP_MAX_EPS: f32 = 1e-15;

/// ggml `block_iq4_nl`: 32 values, `x = d * kvalues_iq4nl[q]`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct BlockIq4Nl {
    /// Scale.
    pub d: f16,
    /// Byte `j`: low nibble indexes value `j`, high nibble value `j + 16`.
    pub qs: [u8; QK4_NL / 2],
}
const _: () = assert!(size_of::<BlockIq4Nl>() == 18);

/// ggml `block_iq4_xs`: 256 values in 8 groups of 32, each with a 6-bit
/// signed scale `ls - 32`; `x = d * (ls - 32) * kvalues_iq4nl[q]`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct BlockIq4Xs {
    /// Super-block scale.
    pub d: f16,
    /// High 2 bits of the 8 group scales (group `ib` at bits `2*ib`).
    pub scales_h: u16,
    /// Low 4 bits of the group scales (group `ib` in byte `ib/2`, nibble `ib%2`).
    pub scales_l: [u8; QK_K / 64],
    /// Per group of 32: 16 bytes, nibbles as in [`BlockIq4Nl`].
    pub qs: [u8; QK_K / 2],
}
const _: () = assert!(size_of::<BlockIq4Xs>() == 136);

/// ggml's `best_index_int8`: index of the codebook value nearest `x`.
#[inline]
fn best_index_int8(values: &[i8; 16], x: f32) -> u8 {
    if x <= f32::from(values[0]) {
        return 0;
    }
    if x >= f32::from(values[15]) {
        return 15;
    }
    let (mut ml, mut mu) = (0usize, 15usize);
    while mu - ml > 1 {
        let mav = (ml + mu) / 2;
        if x < f32::from(values[mav]) {
            mu = mav;
        } else {
            ml = mav;
        }
    }
    let idx = if x - f32::from(values[mu - 1]) < f32::from(values[mu]) - x {
        mu - 1
    } else {
        mu
    };
    idx as u8
}

/// The outputs of one `quantize_row_iq4_nl_impl` call.
struct Iq4Out<'a> {
    dh: &'a mut f16,
    q4: &'a mut [u8],
    scales_h: &'a mut u16,
    scales_l: &'a mut [u8],
}

/// Scratch that ggml keeps across calls (`L`, `weight`, `scales`). `l` must
/// persist across blocks to reproduce ggml's reference path, which reads it
/// for an all-zero block without writing it.
struct Iq4Scratch {
    scales: [f32; QK_K / 32],
    weight: [f32; 32],
    l: [u8; QK_K],
}

impl Iq4Scratch {
    fn new() -> Self {
        Iq4Scratch {
            scales: [0.0; QK_K / 32],
            weight: [0.0; 32],
            l: [0; QK_K],
        }
    }
}

/// ggml's `quantize_row_iq4_nl_impl` with `block_size = 32` and
/// `values = kvalues_iq4nl`. `x` holds `super_block_size` values,
/// `quant_weights` (if any) the matching importance weights.
fn quantize_row_iq4_nl_impl(
    super_block_size: usize,
    x: &[f32],
    out: Iq4Out<'_>,
    s: &mut Iq4Scratch,
    quant_weights: Option<&[f32]>,
    ntry: i32,
) {
    const BLOCK_SIZE: usize = 32;
    let values = &KVALUES_IQ4NL;
    let v0 = f32::from(values[0]);

    let mut sigma2 = 0.0f32;
    for &v in &x[..super_block_size] {
        sigma2 += v * v;
    }
    sigma2 *= 2.0 / super_block_size as f32;

    out.q4[..super_block_size / 2].fill(0);
    *out.dh = fp32_to_fp16(0.0);

    let nb = super_block_size / BLOCK_SIZE;
    let mut max_scale = 0.0f32;
    let mut amax_scale = 0.0f32;
    for ib in 0..nb {
        let xb = &x[ib * BLOCK_SIZE..(ib + 1) * BLOCK_SIZE];
        let lb = &mut s.l[ib * BLOCK_SIZE..(ib + 1) * BLOCK_SIZE];
        match quant_weights {
            Some(qw) => {
                let qw = &qw[ib * BLOCK_SIZE..(ib + 1) * BLOCK_SIZE];
                for j in 0..BLOCK_SIZE {
                    s.weight[j] = qw[j] * (sigma2 + xb[j] * xb[j]).sqrt();
                }
            }
            None => {
                for j in 0..BLOCK_SIZE {
                    s.weight[j] = xb[j] * xb[j];
                }
            }
        }
        let mut amax = 0.0f32;
        let mut max = 0.0f32;
        for &v in xb {
            let ax = v.abs();
            if ax > amax {
                amax = ax;
                max = v;
            }
        }
        if amax < GROUP_MAX_EPS {
            s.scales[ib] = 0.0;
            continue;
        }
        let mut d = if ntry > 0 { -max / v0 } else { max / v0 };
        let mut id = 1.0 / d;
        let mut sumqx = 0.0f32;
        let mut sumq2 = 0.0f32;
        for j in 0..BLOCK_SIZE {
            let al = id * xb[j];
            let l = best_index_int8(values, al);
            lb[j] = l;
            let q = f32::from(values[usize::from(l)]);
            let w = s.weight[j];
            sumqx += w * q * xb[j];
            sumq2 += w * q * q;
        }
        d = if sumq2 > 0.0 { sumqx / sumq2 } else { 0.0 };
        let mut best = d * sumqx;
        for itry in -ntry..=ntry {
            id = (itry + i32::from(values[0])) as f32 / max;
            sumqx = 0.0;
            sumq2 = 0.0;
            for j in 0..BLOCK_SIZE {
                let al = id * xb[j];
                let l = best_index_int8(values, al);
                let q = f32::from(values[usize::from(l)]);
                let w = s.weight[j];
                sumqx += w * q * xb[j];
                sumq2 += w * q * q;
            }
            if sumq2 > 0.0 && sumqx * sumqx > best * sumq2 {
                d = sumqx / sumq2;
                best = d * sumqx;
            }
        }
        s.scales[ib] = d;
        let abs_d = d.abs();
        if abs_d > amax_scale {
            amax_scale = abs_d;
            max_scale = d;
        }
    }

    if nb > 1 {
        *out.scales_h = 0;
        let d = -max_scale / 32.0;
        *out.dh = fp32_to_fp16(d);
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        for ib in 0..nb {
            let mut l = nearest_int(id * s.scales[ib]);
            l = l.clamp(-32, 31);
            let dl = d * l as f32;
            let idl = if dl != 0.0 { 1.0 / dl } else { 0.0 };
            let lb = &mut s.l[ib * BLOCK_SIZE..(ib + 1) * BLOCK_SIZE];
            let xb = &x[ib * BLOCK_SIZE..(ib + 1) * BLOCK_SIZE];
            for j in 0..BLOCK_SIZE {
                lb[j] = best_index_int8(values, idl * xb[j]);
            }
            let l = (l + 32) as u8;
            let l_l = l & 0xf;
            let l_h = l >> 4;
            if ib % 2 == 0 {
                out.scales_l[ib / 2] = l_l;
            } else {
                out.scales_l[ib / 2] |= l_l << 4;
            }
            *out.scales_h |= u16::from(l_h) << (2 * (ib % 8));
        }
    } else {
        *out.dh = fp32_to_fp16(s.scales[0]);
        if ntry > 0 {
            let id = if s.scales[0] != 0.0 {
                1.0 / s.scales[0]
            } else {
                0.0
            };
            for j in 0..super_block_size {
                s.l[j] = best_index_int8(values, id * x[j]);
            }
        }
    }

    for i in 0..super_block_size / 32 {
        for j in 0..16 {
            out.q4[16 * i + j] = s.l[32 * i + j] | (s.l[32 * i + 16 + j] << 4);
        }
    }
}

/// Quantizes `src` (rows of `n_per_row` values, row-major) to IQ4_NL, as
/// ggml's `quantize_iq4_nl` (what `llama-quantize` runs).
///
/// `imatrix`, if given, holds one importance weight per column (shared by all
/// rows); without it the weights are `x^2`. `dst` must hold
/// `src.len() / 32` blocks.
///
/// # Errors
/// [`QuantError::RowNotBlockMultiple`] if `n_per_row % 32 != 0`,
/// [`QuantError::BufferLength`] for mismatched buffers,
/// [`QuantError::NonFiniteInput`] / [`QuantError::InvalidImportance`] for
/// NaN or infinite inputs or weights (or negative weights).
pub fn quantize_iq4_nl(
    src: &[f32],
    dst: &mut [BlockIq4Nl],
    n_per_row: usize,
    imatrix: Option<&[f32]>,
) -> Result<(), QuantError> {
    let nrow = check_quantize(DType::IQ4_NL, QK4_NL, src, dst.len(), n_per_row, imatrix)?;
    let nblock = n_per_row / QK4_NL;
    let mut s = Iq4Scratch::new();
    let mut unused_h = 0u16;
    for row in 0..nrow {
        let xrow = &src[row * n_per_row..(row + 1) * n_per_row];
        let yrow = &mut dst[row * nblock..(row + 1) * nblock];
        for (ibl, blk) in yrow.iter_mut().enumerate() {
            let qw = imatrix.map(|w| &w[QK4_NL * ibl..QK4_NL * (ibl + 1)]);
            let out = Iq4Out {
                dh: &mut blk.d,
                q4: &mut blk.qs,
                scales_h: &mut unused_h,
                scales_l: &mut [],
            };
            quantize_row_iq4_nl_impl(QK4_NL, &xrow[QK4_NL * ibl..], out, &mut s, qw, 7);
        }
    }
    Ok(())
}

/// ggml's `quantize_row_iq4_nl_ref`: IQ4_NL without importance weights and
/// without the scale search (`ntry = -1`). ggml never uses it to write files
/// ([`quantize_iq4_nl`] is what `llama-quantize` and `ggml_quantize_chunk`
/// run), and its result differs from [`quantize_iq4_nl`].
///
/// # Errors
/// [`QuantError::RowNotBlockMultiple`], [`QuantError::BufferLength`],
/// [`QuantError::NonFiniteInput`].
pub fn quantize_row_iq4_nl_ref(x: &[f32], y: &mut [BlockIq4Nl]) -> Result<(), QuantError> {
    check_ref(DType::IQ4_NL, QK4_NL, x, y.len())?;
    let mut s = Iq4Scratch::new();
    let mut unused_h = 0u16;
    for (ibl, blk) in y.iter_mut().enumerate() {
        let out = Iq4Out {
            dh: &mut blk.d,
            q4: &mut blk.qs,
            scales_h: &mut unused_h,
            scales_l: &mut [],
        };
        quantize_row_iq4_nl_impl(QK4_NL, &x[QK4_NL * ibl..], out, &mut s, None, -1);
    }
    Ok(())
}

/// Quantizes `src` (rows of `n_per_row` values) to IQ4_XS, as ggml's
/// `quantize_iq4_xs`. `imatrix` as in [`quantize_iq4_nl`]; `dst` must hold
/// `src.len() / 256` blocks.
///
/// # Errors
/// As [`quantize_iq4_nl`], with block size 256.
pub fn quantize_iq4_xs(
    src: &[f32],
    dst: &mut [BlockIq4Xs],
    n_per_row: usize,
    imatrix: Option<&[f32]>,
) -> Result<(), QuantError> {
    let nrow = check_quantize(DType::IQ4_XS, QK_K, src, dst.len(), n_per_row, imatrix)?;
    let nblock = n_per_row / QK_K;
    let mut s = Iq4Scratch::new();
    for row in 0..nrow {
        let xrow = &src[row * n_per_row..(row + 1) * n_per_row];
        let yrow = &mut dst[row * nblock..(row + 1) * nblock];
        for (ibl, blk) in yrow.iter_mut().enumerate() {
            let qw = imatrix.map(|w| &w[QK_K * ibl..QK_K * (ibl + 1)]);
            let out = Iq4Out {
                dh: &mut blk.d,
                q4: &mut blk.qs,
                scales_h: &mut blk.scales_h,
                scales_l: &mut blk.scales_l,
            };
            quantize_row_iq4_nl_impl(QK_K, &xrow[QK_K * ibl..], out, &mut s, qw, 7);
        }
    }
    Ok(())
}

/// ggml's `quantize_row_iq4_xs_ref`: [`quantize_iq4_xs`] of one row without
/// importance weights (so the same bytes as `quantize_iq4_xs(x, y, x.len(),
/// None)`).
///
/// # Errors
/// [`QuantError::RowNotBlockMultiple`], [`QuantError::BufferLength`],
/// [`QuantError::NonFiniteInput`].
pub fn quantize_row_iq4_xs_ref(x: &[f32], y: &mut [BlockIq4Xs]) -> Result<(), QuantError> {
    check_ref(DType::IQ4_XS, QK_K, x, y.len())?;
    quantize_iq4_xs(x, y, x.len(), None)
}

/// ggml's `dequantize_row_iq4_nl`: `y` must hold `32 * x.len()` values.
///
/// # Errors
/// [`QuantError::BufferLength`] if `y` has the wrong length.
pub fn dequantize_row_iq4_nl(x: &[BlockIq4Nl], y: &mut [f32]) -> Result<(), QuantError> {
    check_dequantize(x.len(), QK4_NL, y.len())?;
    for (blk, y) in x.iter().zip(y.chunks_exact_mut(QK4_NL)) {
        let d = fp16_to_fp32(blk.d);
        for j in 0..QK4_NL / 2 {
            y[j] = d * f32::from(KVALUES_IQ4NL[usize::from(blk.qs[j] & 0xf)]);
            y[j + QK4_NL / 2] = d * f32::from(KVALUES_IQ4NL[usize::from(blk.qs[j] >> 4)]);
        }
    }
    Ok(())
}

/// ggml's `dequantize_row_iq4_xs`: `y` must hold `256 * x.len()` values.
///
/// # Errors
/// [`QuantError::BufferLength`] if `y` has the wrong length.
pub fn dequantize_row_iq4_xs(x: &[BlockIq4Xs], y: &mut [f32]) -> Result<(), QuantError> {
    check_dequantize(x.len(), QK_K, y.len())?;
    for (blk, y) in x.iter().zip(y.chunks_exact_mut(QK_K)) {
        let d = fp16_to_fp32(blk.d);
        for (ib, (y, qs)) in y
            .chunks_exact_mut(32)
            .zip(blk.qs.chunks_exact(16))
            .enumerate()
        {
            let ls = i32::from((blk.scales_l[ib / 2] >> (4 * (ib % 2))) & 0xf)
                | (i32::from((blk.scales_h >> (2 * ib)) & 3) << 4);
            let dl = d * (ls - 32) as f32;
            for j in 0..16 {
                y[j] = dl * f32::from(KVALUES_IQ4NL[usize::from(qs[j] & 0xf)]);
                y[j + 16] = dl * f32::from(KVALUES_IQ4NL[usize::from(qs[j] >> 4)]);
            }
        }
    }
    Ok(())
}

/// ggml's scalar `ggml_vec_dot_iq4_nl_q8_0`: the dot product of `x` with
/// `y`, the raw bytes of `x.len()` `block_q8_0` (34 bytes each: f16 `d`
/// little-endian, then 32 `i8`).
///
/// # Errors
/// [`QuantError::BufferLength`] if `y.len() != 34 * x.len()`.
pub fn vec_dot_iq4_nl_q8_0(x: &[BlockIq4Nl], y: &[u8]) -> Result<f32, QuantError> {
    check_partner("y (block_q8_0 bytes)", x.len(), Q8_0_BYTES, y.len())?;
    let mut sumf = 0.0f32;
    for (xb, yb) in x.iter().zip(y.chunks_exact(Q8_0_BYTES)) {
        let yb = Q8_0::parse(yb);
        let d = yb.d * fp16_to_fp32(xb.d);
        let (mut sumi1, mut sumi2) = (0i32, 0i32);
        for j in 0..QK4_NL / 2 {
            sumi1 += yb.q(j) * i32::from(KVALUES_IQ4NL[usize::from(xb.qs[j] & 0xf)]);
            sumi2 += yb.q(j + QK4_NL / 2) * i32::from(KVALUES_IQ4NL[usize::from(xb.qs[j] >> 4)]);
        }
        sumf += d * (sumi1 + sumi2) as f32;
    }
    Ok(sumf)
}

/// ggml's scalar `ggml_vec_dot_iq4_xs_q8_K`: the dot product of `x` with
/// `y`, the raw bytes of `x.len()` `block_q8_K` (292 bytes each: f32 `d`
/// little-endian, 256 `i8`, 16 `i16` block sums).
///
/// # Errors
/// [`QuantError::BufferLength`] if `y.len() != 292 * x.len()`.
pub fn vec_dot_iq4_xs_q8_k(x: &[BlockIq4Xs], y: &[u8]) -> Result<f32, QuantError> {
    check_partner("y (block_q8_K bytes)", x.len(), Q8_K_BYTES, y.len())?;
    let mut sumf = 0.0f32;
    for (xb, yb) in x.iter().zip(y.chunks_exact(Q8_K_BYTES)) {
        let yb = Q8K::parse(yb);
        let d4d8 = fp16_to_fp32(xb.d) * yb.d;
        let mut h = xb.scales_h;
        let mut qs = 0usize;
        let mut q8 = 0usize;
        for ib in (0..QK_K / 32).step_by(2) {
            let ls1 = (xb.scales_l[ib / 2] & 0xf) | (((h << 4) & 0x30) as u8);
            let ls2 = (xb.scales_l[ib / 2] >> 4) | (((h << 2) & 0x30) as u8);
            h >>= 4;
            let d1 = d4d8 * (i32::from(ls1) - 32) as f32;
            let d2 = d4d8 * (i32::from(ls2) - 32) as f32;
            for dl in [d1, d2] {
                let (mut sumi1, mut sumi2) = (0i32, 0i32);
                for j in 0..16 {
                    let b = xb.qs[qs + j];
                    sumi1 += yb.q(q8 + j) * i32::from(KVALUES_IQ4NL[usize::from(b & 0xf)]);
                    sumi2 += yb.q(q8 + j + 16) * i32::from(KVALUES_IQ4NL[usize::from(b >> 4)]);
                }
                sumf += dl * (sumi1 + sumi2) as f32;
                qs += 16;
                q8 += 32;
            }
        }
    }
    Ok(sumf)
}
