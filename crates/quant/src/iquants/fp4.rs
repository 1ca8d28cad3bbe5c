//! MXFP4 and NVFP4: 4-bit FP4 (E2M1) values with a shared power-of-two
//! (E8M0, MXFP4, per 32) or UE4M3 (NVFP4, per 16) scale. ggml stores the E2M1
//! values doubled ([`KVALUES_MXFP4`]) and so halves the scales it decodes.

use weightkit_core::DType;

use super::grids::KVALUES_MXFP4;
use super::{Q8_0, Q8_0_BYTES, check_dequantize, check_partner, check_quantize, check_ref};
use crate::QuantError;

/// ggml's `QK_MXFP4`.
const QK_MXFP4: usize = 32;
/// ggml's `QK_NVFP4`.
const QK_NVFP4: usize = 64;
/// ggml's `QK_NVFP4_SUB`: values per UE4M3 scale.
const QK_NVFP4_SUB: usize = 16;

/// ggml `block_mxfp4`: `x = e8m0_to_fp32_half(e) * kvalues_mxfp4[q]`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct BlockMxfp4 {
    /// Shared exponent (E8M0).
    pub e: u8,
    /// Byte `j`: low nibble is value `j`, high nibble value `j + 16`.
    pub qs: [u8; QK_MXFP4 / 2],
}
const _: () = assert!(size_of::<BlockMxfp4>() == 17);

/// ggml `block_nvfp4`: four sub-blocks of 16 values,
/// `x = ue4m3_to_fp32(d[s]) * kvalues_mxfp4[q]`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct BlockNvfp4 {
    /// UE4M3 scale per sub-block of 16.
    pub d: [u8; QK_NVFP4 / QK_NVFP4_SUB],
    /// Sub-block `s`: bytes `8 s..8 s + 8`; byte `j`'s low nibble is value
    /// `16 s + j`, its high nibble value `16 s + j + 8`.
    pub qs: [u8; QK_NVFP4 / 2],
}
const _: () = assert!(size_of::<BlockNvfp4>() == 36);

/// ggml's `ggml_e8m0_to_fp32_half`: `2^(x - 128)` (half the E8M0 value),
/// exact, including the two subnormal results for `x < 2`. `x = 255` (the
/// E8M0 NaN) gives `2^127`, as in ggml.
#[inline]
pub fn e8m0_to_fp32_half(x: u8) -> f32 {
    let bits = if x < 2 {
        0x0020_0000u32 << x
    } else {
        u32::from(x - 1) << 23
    };
    f32::from_bits(bits)
}

/// ggml's `ggml_ue4m3_to_fp32`: half the value of the unsigned E4M3 (bias 7)
/// byte `x`; bit 7 is ignored, `0` and `0x7F` decode to 0.
#[inline]
pub fn ue4m3_to_fp32(x: u8) -> f32 {
    if x == 0 || x == 0x7F {
        return 0.0;
    }
    let exp = i32::from((x >> 3) & 0xF);
    let man = f32::from(x & 0x7);
    let raw = if exp == 0 {
        // ldexpf(man, -9): exact
        man * f32::from_bits(((127 - 9) as u32) << 23)
    } else {
        // ldexpf(1 + man/8, exp - 7): exact, exp - 7 in -6..=8
        (1.0 + man / 8.0) * f32::from_bits(((127 + exp - 7) as u32) << 23)
    };
    raw * 0.5
}

/// ggml's `ggml_fp32_to_ue4m3`: `x` (clamped to 448) to unsigned E4M3,
/// rounding half up on the mantissa; `x <= 0` and NaN give 0, overflow gives
/// `0x7E` (448).
#[inline]
pub fn fp32_to_ue4m3(x: f32) -> u8 {
    // !(x > 0.0f): NaN, zero and negative values
    if x.is_nan() || x <= 0.0 {
        return 0;
    }
    let x = if x > 448.0 { 448.0 } else { x };
    let bits = x.to_bits();
    let fp32_exp = ((bits >> 23) & 0xFF) as i32 - 127;
    let fp32_man = ((bits >> 20) & 0x7) as i32;
    let mut ue4m3_exp = fp32_exp + 7;
    if ue4m3_exp <= 0 {
        // subnormal: value = man * 2^-9, man = round(x * 2^9); x < 2^-6 here
        let man = (x * 512.0 + 0.5) as i32;
        let man = man.min(7);
        if man < 1 {
            return 0;
        }
        return man as u8;
    }
    if ue4m3_exp >= 15 {
        return 0x7E;
    }
    let round_bit = ((bits >> 19) & 1) as i32;
    let mut ue4m3_man = fp32_man + round_bit;
    if ue4m3_man > 7 {
        ue4m3_man = 0;
        ue4m3_exp += 1;
        if ue4m3_exp >= 15 {
            return 0x7E;
        }
    }
    ((ue4m3_exp << 3) | ue4m3_man) as u8
}

/// ggml's `best_index_mxfp4`: the first of the 16 FP4 codes nearest `x / e`.
#[inline]
fn best_index_mxfp4(x: f32, e: f32) -> u8 {
    let mut best_index = 0u8;
    let mut best_err = (f32::from(KVALUES_MXFP4[0]) * e - x).abs();
    for i in 1..16u8 {
        let err = (f32::from(KVALUES_MXFP4[usize::from(i)]) * e - x).abs();
        if err < best_err {
            best_index = i;
            best_err = err;
        }
    }
    best_index
}

/// The shared exponent of ggml's MXFP4 quantizer:
/// `(uint8_t)(floorf(log2f(amax)) - 2 + 127)`. `log2f` is the platform's
/// (glibc's on Linux, as in ggml), which matters only for the few values just
/// below a power of two that it rounds up. For `amax < 2^-125` the C cast is
/// out of range; this reproduces what x86-64 compilers emit (truncate to
/// `int`, keep the low byte).
#[inline]
pub(crate) fn mxfp4_exponent(amax: f32) -> u8 {
    if amax > 0.0 {
        let v = amax.log2().floor() - 2.0 + 127.0;
        (v as i32) as u8
    } else {
        0
    }
}

/// ggml's `quantize_row_mxfp4_ref`: `x.len()` must be a multiple of 32 and
/// `y` hold `x.len() / 32` blocks.
///
/// # Errors
/// [`QuantError::RowNotBlockMultiple`], [`QuantError::BufferLength`],
/// [`QuantError::NonFiniteInput`].
pub fn quantize_row_mxfp4_ref(x: &[f32], y: &mut [BlockMxfp4]) -> Result<(), QuantError> {
    check_ref(DType::MXFP4, QK_MXFP4, x, y.len())?;
    for (blk, x) in y.iter_mut().zip(x.chunks_exact(QK_MXFP4)) {
        let mut amax = 0.0f32;
        for &v in x {
            if amax < v.abs() {
                amax = v.abs();
            }
        }
        let e = mxfp4_exponent(amax);
        let d = e8m0_to_fp32_half(e);
        blk.e = e;
        for j in 0..QK_MXFP4 / 2 {
            let x0 = best_index_mxfp4(x[j], d);
            let x1 = best_index_mxfp4(x[QK_MXFP4 / 2 + j], d);
            blk.qs[j] = x0 | (x1 << 4);
        }
    }
    Ok(())
}

/// ggml's `quantize_row_nvfp4_ref`: `x.len()` must be a multiple of 64 and
/// `y` hold `x.len() / 64` blocks.
///
/// # Errors
/// [`QuantError::RowNotBlockMultiple`], [`QuantError::BufferLength`],
/// [`QuantError::NonFiniteInput`].
pub fn quantize_row_nvfp4_ref(x: &[f32], y: &mut [BlockNvfp4]) -> Result<(), QuantError> {
    check_ref(DType::NVFP4, QK_NVFP4, x, y.len())?;
    for (blk, x) in y.iter_mut().zip(x.chunks_exact(QK_NVFP4)) {
        for (s, xb) in x.chunks_exact(QK_NVFP4_SUB).enumerate() {
            let mut amax = 0.0f32;
            for &v in xb {
                if amax < v.abs() {
                    amax = v.abs();
                }
            }
            // UE4M3 scale: amax / 6.0 maps the max E2M1 value (6.0) to amax
            let ue = fp32_to_ue4m3(amax / 6.0);
            blk.d[s] = ue;
            let d = ue4m3_to_fp32(ue);
            for j in 0..QK_NVFP4_SUB / 2 {
                let x0 = best_index_mxfp4(xb[j], d);
                let x1 = best_index_mxfp4(xb[QK_NVFP4_SUB / 2 + j], d);
                blk.qs[s * (QK_NVFP4_SUB / 2) + j] = x0 | (x1 << 4);
            }
        }
    }
    Ok(())
}

/// ggml's `quantize_mxfp4`: rows of `n_per_row` values; the importance
/// weights are ignored (as in ggml) but still checked.
///
/// # Errors
/// As [`quantize_row_mxfp4_ref`], plus [`QuantError::InvalidImportance`].
pub fn quantize_mxfp4(
    src: &[f32],
    dst: &mut [BlockMxfp4],
    n_per_row: usize,
    imatrix: Option<&[f32]>,
) -> Result<(), QuantError> {
    check_quantize(DType::MXFP4, QK_MXFP4, src, dst.len(), n_per_row, imatrix)?;
    quantize_row_mxfp4_ref(src, dst)
}

/// ggml's `quantize_nvfp4`: rows of `n_per_row` values; the importance
/// weights are ignored (as in ggml) but still checked.
///
/// # Errors
/// As [`quantize_row_nvfp4_ref`], plus [`QuantError::InvalidImportance`].
pub fn quantize_nvfp4(
    src: &[f32],
    dst: &mut [BlockNvfp4],
    n_per_row: usize,
    imatrix: Option<&[f32]>,
) -> Result<(), QuantError> {
    check_quantize(DType::NVFP4, QK_NVFP4, src, dst.len(), n_per_row, imatrix)?;
    quantize_row_nvfp4_ref(src, dst)
}

/// ggml's `dequantize_row_mxfp4`: `y` must hold `32 * x.len()` values.
///
/// # Errors
/// [`QuantError::BufferLength`] if `y` has the wrong length.
pub fn dequantize_row_mxfp4(x: &[BlockMxfp4], y: &mut [f32]) -> Result<(), QuantError> {
    check_dequantize(x.len(), QK_MXFP4, y.len())?;
    for (blk, y) in x.iter().zip(y.chunks_exact_mut(QK_MXFP4)) {
        let d = e8m0_to_fp32_half(blk.e);
        for j in 0..QK_MXFP4 / 2 {
            let x0 = KVALUES_MXFP4[usize::from(blk.qs[j] & 0x0F)];
            let x1 = KVALUES_MXFP4[usize::from(blk.qs[j] >> 4)];
            y[j] = f32::from(x0) * d;
            y[j + QK_MXFP4 / 2] = f32::from(x1) * d;
        }
    }
    Ok(())
}

/// ggml's `dequantize_row_nvfp4`: `y` must hold `64 * x.len()` values.
///
/// # Errors
/// [`QuantError::BufferLength`] if `y` has the wrong length.
pub fn dequantize_row_nvfp4(x: &[BlockNvfp4], y: &mut [f32]) -> Result<(), QuantError> {
    check_dequantize(x.len(), QK_NVFP4, y.len())?;
    for (blk, y) in x.iter().zip(y.chunks_exact_mut(QK_NVFP4)) {
        for (s, yb) in y.chunks_exact_mut(QK_NVFP4_SUB).enumerate() {
            let d = ue4m3_to_fp32(blk.d[s]);
            for j in 0..QK_NVFP4_SUB / 2 {
                let q = blk.qs[s * (QK_NVFP4_SUB / 2) + j];
                yb[j] = f32::from(KVALUES_MXFP4[usize::from(q & 0x0F)]) * d;
                yb[j + QK_NVFP4_SUB / 2] = f32::from(KVALUES_MXFP4[usize::from(q >> 4)]) * d;
            }
        }
    }
    Ok(())
}

/// ggml's scalar `ggml_vec_dot_mxfp4_q8_0`: `y` is the raw bytes of
/// `x.len()` `block_q8_0` (34 bytes each: f16 `d` little-endian, 32 `i8`).
///
/// # Errors
/// [`QuantError::BufferLength`] if `y.len() != 34 * x.len()`.
pub fn vec_dot_mxfp4_q8_0(x: &[BlockMxfp4], y: &[u8]) -> Result<f32, QuantError> {
    check_partner("y (block_q8_0 bytes)", x.len(), Q8_0_BYTES, y.len())?;
    let mut sumf = 0.0f32;
    for (xb, yb) in x.iter().zip(y.chunks_exact(Q8_0_BYTES)) {
        let yb = Q8_0::parse(yb);
        let d = yb.d * e8m0_to_fp32_half(xb.e);
        let (mut sumi1, mut sumi2) = (0i32, 0i32);
        for j in 0..QK_MXFP4 / 2 {
            sumi1 += yb.q(j) * i32::from(KVALUES_MXFP4[usize::from(xb.qs[j] & 0xf)]);
            sumi2 += yb.q(j + QK_MXFP4 / 2) * i32::from(KVALUES_MXFP4[usize::from(xb.qs[j] >> 4)]);
        }
        sumf += d * (sumi1 + sumi2) as f32;
    }
    Ok(sumf)
}

/// ggml's scalar `ggml_vec_dot_nvfp4_q8_0`: `y` is the raw bytes of
/// `2 * x.len()` `block_q8_0` (two per NVFP4 block, 34 bytes each).
///
/// # Errors
/// [`QuantError::BufferLength`] if `y.len() != 68 * x.len()`.
pub fn vec_dot_nvfp4_q8_0(x: &[BlockNvfp4], y: &[u8]) -> Result<f32, QuantError> {
    check_partner("y (block_q8_0 bytes)", x.len(), 2 * Q8_0_BYTES, y.len())?;
    let mut sumf = 0.0f32;
    for (xb, yb) in x.iter().zip(y.chunks_exact(2 * Q8_0_BYTES)) {
        let (y0, y1) = yb.split_at(Q8_0_BYTES);
        let q8 = [Q8_0::parse(y0), Q8_0::parse(y1)];
        for s in 0..4 {
            let d = ue4m3_to_fp32(xb.d[s]);
            let yq = q8[s / 2];
            let q8_off = (s % 2) * QK_NVFP4_SUB;
            let dy = yq.d;
            let (mut sumi_lo, mut sumi_hi) = (0i32, 0i32);
            for j in 0..QK_NVFP4_SUB / 2 {
                let qv = xb.qs[s * (QK_NVFP4_SUB / 2) + j];
                sumi_lo += yq.q(q8_off + j) * i32::from(KVALUES_MXFP4[usize::from(qv & 0xf)]);
                sumi_hi += yq.q(q8_off + j + QK_NVFP4_SUB / 2)
                    * i32::from(KVALUES_MXFP4[usize::from(qv >> 4)]);
            }
            sumf += dy * d * (sumi_lo + sumi_hi) as f32;
        }
    }
    Ok(sumf)
}
