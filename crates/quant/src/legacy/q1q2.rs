//! Q1_0 and Q2_0: ggml's two newest single-scale formats (types 41 and 42),
//! ported from `ggml-quants.c` (`quantize_row_q1_0_ref`,
//! `quantize_row_q2_0_ref`, `dequantize_row_q1_0/q2_0`, `quantize_q1_0/q2_0`)
//! and `ggml-cpu/quants.c` (`ggml_vec_dot_q1_0_q8_0_generic`,
//! `ggml_vec_dot_q2_0_q8_0_generic`), one IEEE binary32 operation at a time
//! in ggml's order.
//!
//! * Q1_0: 128 values per block, `x = d` where the sign bit is set and `-d`
//!   where it is clear, `d = mean |x|` of the block. Bit `j % 8` of byte
//!   `j / 8` is value `j`'s (set for `x >= 0`, `-0.0` included).
//! * Q2_0: 64 values per block, `x = (c - 1) d` with the 2-bit code `c`
//!   (0..=3) in bits `2 (j % 4)` of byte `j / 4`, `d = max |x|` and
//!   `c = clamp((int)roundf(x / d) + 1, 0, 3)` (the quantizer never writes
//!   3, the formats allow it).
//!
//! Both ignore an importance matrix (as ggml), which is still checked. Their
//! `vec_dot_type` is Q8_0: one Q1_0 block meets four `block_q8_0` and one
//! Q2_0 block two, taken here as raw little-endian bytes (34 per
//! `block_q8_0`). The dot products sum each Q8_0 block's integer products,
//! then `sumi += d1 * sumi_block` over the Q8_0 blocks and
//! `sumf += d0 * sumi` over the blocks, as ggml's generic kernels.

use half::f16;
use weightkit_core::DType;

use super::cvtt_f32_i32;
use crate::QuantError;
use crate::common::{fp16_to_fp32, fp32_to_fp16};
use crate::iquants::{
    Q8_0, Q8_0_BYTES, check_dequantize, check_partner, check_quantize, check_ref,
};

/// Elements per [`BlockQ1_0`] (ggml's `QK1_0`).
pub const QK1_0: usize = 128;
/// Elements per [`BlockQ2_0`] (ggml's `QK2_0`).
pub const QK2_0: usize = 64;

/// ggml `block_q1_0`: `x = +d` or `-d` by a sign bit, 1.125 bits per weight.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct BlockQ1_0 {
    /// Scale: the block's mean `|x|`.
    pub d: f16,
    /// Bit `j % 8` of byte `j / 8`: set where value `j` is `+d`.
    pub qs: [u8; QK1_0 / 8],
}
const _: () = assert!(std::mem::size_of::<BlockQ1_0>() == 18);

/// ggml `block_q2_0`: `x = (c - 1) * d`, `c` in 0..=3, 2.25 bits per weight.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct BlockQ2_0 {
    /// Scale: the block's maximum `|x|`.
    pub d: f16,
    /// Bits `2 (j % 4)` of byte `j / 4`: the code `c` of value `j`.
    pub qs: [u8; QK2_0 / 4],
}
const _: () = assert!(std::mem::size_of::<BlockQ2_0>() == 18);

/// One Q1_0 block from 128 values (`quantize_row_q1_0_ref`'s loop body).
#[inline]
pub(crate) fn q1_0_block_ref(x: &[f32; QK1_0]) -> BlockQ1_0 {
    let mut sum_abs = 0.0f32;
    for &v in x {
        sum_abs += v.abs();
    }
    let d = sum_abs / QK1_0 as f32;
    let mut qs = [0u8; QK1_0 / 8];
    for (j, &v) in x.iter().enumerate() {
        if v >= 0.0 {
            qs[j / 8] |= 1 << (j % 8);
        }
    }
    BlockQ1_0 {
        d: fp32_to_fp16(d),
        qs,
    }
}

/// ggml's `quantize_row_q1_0_ref`: `x.len()` must be a multiple of 128 and
/// `y` hold `x.len() / 128` blocks.
///
/// # Errors
/// [`QuantError::RowNotBlockMultiple`], [`QuantError::BufferLength`],
/// [`QuantError::NonFiniteInput`]; `y` is not written then.
pub fn quantize_row_q1_0_ref(x: &[f32], y: &mut [BlockQ1_0]) -> Result<(), QuantError> {
    check_ref(DType::Q1_0, QK1_0, x, y.len())?;
    for (blk, x) in y.iter_mut().zip(x.as_chunks::<QK1_0>().0) {
        *blk = q1_0_block_ref(x);
    }
    Ok(())
}

/// C's `(int)roundf(v) + 1` clamped to 0..=3, as gcc compiles it on x86-64
/// (`cvttss2si` gives `INT_MIN` for NaN and infinities, code 0).
#[inline]
fn q2_0_code(v: f32) -> u8 {
    let q = cvtt_f32_i32(v.round()).wrapping_add(1);
    q.clamp(0, 3) as u8
}

/// One Q2_0 block from 64 values (`quantize_row_q2_0_ref`'s loop body).
#[inline]
fn q2_0_block_ref(x: &[f32; QK2_0]) -> BlockQ2_0 {
    let mut amax = 0.0f32;
    for &v in x {
        let a = v.abs();
        if a > amax {
            amax = a;
        }
    }
    let d = amax;
    let id = if d > 0.0 { 1.0 / d } else { 0.0 };
    let mut qs = [0u8; QK2_0 / 4];
    for (j, &w) in x.iter().enumerate() {
        qs[j / 4] |= q2_0_code(w * id) << ((j % 4) * 2);
    }
    BlockQ2_0 {
        d: fp32_to_fp16(d),
        qs,
    }
}

/// ggml's `quantize_row_q2_0_ref`: `x.len()` must be a multiple of 64 and
/// `y` hold `x.len() / 64` blocks.
///
/// # Errors
/// [`QuantError::RowNotBlockMultiple`], [`QuantError::BufferLength`],
/// [`QuantError::NonFiniteInput`]; `y` is not written then.
pub fn quantize_row_q2_0_ref(x: &[f32], y: &mut [BlockQ2_0]) -> Result<(), QuantError> {
    check_ref(DType::Q2_0, QK2_0, x, y.len())?;
    for (blk, x) in y.iter_mut().zip(x.as_chunks::<QK2_0>().0) {
        *blk = q2_0_block_ref(x);
    }
    Ok(())
}

/// ggml's `quantize_q1_0`: rows of `n_per_row` values; the importance
/// weights are ignored (as in ggml) but still checked.
///
/// # Errors
/// As [`quantize_row_q1_0_ref`], plus [`QuantError::InvalidImportance`] and
/// [`QuantError::BufferLength`] for an importance vector that is not
/// `n_per_row` long.
pub fn quantize_q1_0(
    src: &[f32],
    dst: &mut [BlockQ1_0],
    n_per_row: usize,
    imatrix: Option<&[f32]>,
) -> Result<(), QuantError> {
    check_quantize(DType::Q1_0, QK1_0, src, dst.len(), n_per_row, imatrix)?;
    quantize_row_q1_0_ref(src, dst)
}

/// ggml's `quantize_q2_0`: rows of `n_per_row` values; the importance
/// weights are ignored (as in ggml) but still checked.
///
/// # Errors
/// As [`quantize_q1_0`].
pub fn quantize_q2_0(
    src: &[f32],
    dst: &mut [BlockQ2_0],
    n_per_row: usize,
    imatrix: Option<&[f32]>,
) -> Result<(), QuantError> {
    check_quantize(DType::Q2_0, QK2_0, src, dst.len(), n_per_row, imatrix)?;
    quantize_row_q2_0_ref(src, dst)
}

/// ggml's `dequantize_row_q1_0`: `y` must hold `128 * x.len()` values.
///
/// # Errors
/// [`QuantError::BufferLength`] if `y` has the wrong length.
pub fn dequantize_row_q1_0(x: &[BlockQ1_0], y: &mut [f32]) -> Result<(), QuantError> {
    check_dequantize(x.len(), QK1_0, y.len())?;
    for (blk, y) in x.iter().zip(y.as_chunks_mut::<QK1_0>().0) {
        let d = fp16_to_fp32(blk.d);
        let neg_d = -d;
        for (j, out) in y.iter_mut().enumerate() {
            *out = if (blk.qs[j / 8] >> (j % 8)) & 1 != 0 {
                d
            } else {
                neg_d
            };
        }
    }
    Ok(())
}

/// ggml's `dequantize_row_q2_0`: `y` must hold `64 * x.len()` values.
///
/// # Errors
/// [`QuantError::BufferLength`] if `y` has the wrong length.
pub fn dequantize_row_q2_0(x: &[BlockQ2_0], y: &mut [f32]) -> Result<(), QuantError> {
    check_dequantize(x.len(), QK2_0, y.len())?;
    for (blk, y) in x.iter().zip(y.as_chunks_mut::<QK2_0>().0) {
        let d = fp16_to_fp32(blk.d);
        for (j, out) in y.iter_mut().enumerate() {
            let q = (blk.qs[j / 4] >> ((j % 4) * 2)) & 3;
            *out = (i32::from(q) - 1) as f32 * d;
        }
    }
    Ok(())
}

/// ggml's `ggml_vec_dot_q1_0_q8_0_generic`: `y` is the raw bytes of
/// `4 * x.len()` `block_q8_0` (34 bytes each: f16 `d` little-endian, 32
/// `i8`).
///
/// # Errors
/// [`QuantError::BufferLength`] if `y.len() != 136 * x.len()`.
pub fn vec_dot_q1_0_q8_0(x: &[BlockQ1_0], y: &[u8]) -> Result<f32, QuantError> {
    check_partner("y (block_q8_0 bytes)", x.len(), 4 * Q8_0_BYTES, y.len())?;
    let mut sumf = 0.0f32;
    for (xb, yb) in x.iter().zip(y.chunks_exact(4 * Q8_0_BYTES)) {
        let d0 = fp16_to_fp32(xb.d);
        let mut sumi = 0.0f32;
        for (k, yb) in yb.chunks_exact(Q8_0_BYTES).enumerate() {
            let yb = Q8_0::parse(yb);
            let mut sumi_block = 0i32;
            for j in 0..32 {
                let q = yb.q(j);
                let bit = (xb.qs[4 * k + j / 8] >> (j % 8)) & 1;
                sumi_block += if bit != 0 { q } else { -q };
            }
            sumi += yb.d * sumi_block as f32;
        }
        sumf += d0 * sumi;
    }
    Ok(sumf)
}

/// ggml's `ggml_vec_dot_q2_0_q8_0_generic`: `y` is the raw bytes of
/// `2 * x.len()` `block_q8_0` (34 bytes each).
///
/// # Errors
/// [`QuantError::BufferLength`] if `y.len() != 68 * x.len()`.
pub fn vec_dot_q2_0_q8_0(x: &[BlockQ2_0], y: &[u8]) -> Result<f32, QuantError> {
    check_partner("y (block_q8_0 bytes)", x.len(), 2 * Q8_0_BYTES, y.len())?;
    let mut sumf = 0.0f32;
    for (xb, yb) in x.iter().zip(y.chunks_exact(2 * Q8_0_BYTES)) {
        let d0 = fp16_to_fp32(xb.d);
        let mut sumi = 0.0f32;
        for (k, yb) in yb.chunks_exact(Q8_0_BYTES).enumerate() {
            let yb = Q8_0::parse(yb);
            let mut sumi_block = 0i32;
            for j in 0..32 {
                let c = (xb.qs[8 * k + j / 4] >> ((j % 4) * 2)) & 3;
                sumi_block += (i32::from(c) - 1) * yb.q(j);
            }
            sumi += yb.d * sumi_block as f32;
        }
        sumf += d0 * sumi;
    }
    Ok(sumf)
}
