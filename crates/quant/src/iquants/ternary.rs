//! TQ1_0 and TQ2_0: ternary weights (BitNet b1.58, TriLMs), `x = d * t` with
//! `t` in {-1, 0, 1} and `d` the block's absolute maximum. TQ1_0 packs five
//! trits per byte (a base-3 fixed-point fraction, 1.6875 bpw), TQ2_0 four
//! 2-bit fields per byte (2.0625 bpw).

use half::f16;
use weightkit_core::DType;

use super::{Q8_K_BYTES, Q8K, QK_K, check_dequantize, check_partner, check_quantize, check_ref};
use crate::QuantError;
use crate::common::{fp16_to_fp32, fp32_to_fp16};

/// ggml `block_tq1_0`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct BlockTq1_0 {
    /// 5 trits per byte: bytes 0..32 hold values `m + 32 n` of the first
    /// 160, bytes 32..48 values `160 + m + 16 n` (n = 0..5, most significant
    /// trit first).
    pub qs: [u8; (QK_K - 4 * QK_K / 64) / 5],
    /// 4 trits per byte for the last 16 values (`240 + j + 4 n`).
    pub qh: [u8; QK_K / 64],
    /// Scale.
    pub d: f16,
}
const _: () = assert!(size_of::<BlockTq1_0>() == 54);

/// ggml `block_tq2_0`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct BlockTq2_0 {
    /// 2 bits per value (`t + 1`): byte `32 k + m`, bits `2 l`, hold value
    /// `128 k + 32 l + m`.
    pub qs: [u8; QK_K / 4],
    /// Scale.
    pub d: f16,
}
const _: () = assert!(size_of::<BlockTq2_0>() == 66);

/// `lroundf(v) + 1` stored in a C `int`, as on x86-64 glibc: `lroundf` of a
/// value that does not fit a `long` (only reachable when `1/amax` overflows)
/// returns `LONG_MIN`, and the `long` -> `int` conversion keeps the low 32
/// bits.
#[inline]
fn lroundf_plus1(v: f32) -> i32 {
    let l: i64 = if v.is_finite() && v.abs() < 9.223_372e18 {
        v.round() as i64
    } else {
        i64::MIN
    };
    l.wrapping_add(1) as i32
}

/// `((uint16_t)q * 256 + (243 - 1)) / 243`: the base-3 digits of `q`
/// as a fixed-point fraction of 256, rounded up.
#[inline]
fn ceil_div_243(q: u8) -> u8 {
    (u32::from(q) * 256).div_ceil(243) as u8
}

/// `amax` of a block and ggml's `id = d ? 1.0f/d : 0.0f`.
#[inline]
fn amax_id(x: &[f32]) -> (f32, f32) {
    let mut amax = 0.0f32;
    for &v in x {
        // MAX(amax, fabsf(v)) = (amax > |v| ? amax : |v|)
        let a = v.abs();
        amax = if amax > a { amax } else { a };
    }
    let id = if amax != 0.0 { 1.0 / amax } else { 0.0 };
    (amax, id)
}

/// ggml's `quantize_row_tq1_0_ref`: `x.len()` must be a multiple of 256 and
/// `y` hold `x.len() / 256` blocks.
///
/// # Errors
/// [`QuantError::RowNotBlockMultiple`], [`QuantError::BufferLength`],
/// [`QuantError::NonFiniteInput`].
pub fn quantize_row_tq1_0_ref(x: &[f32], y: &mut [BlockTq1_0]) -> Result<(), QuantError> {
    check_ref(DType::TQ1_0, QK_K, x, y.len())?;
    for (blk, x) in y.iter_mut().zip(x.chunks_exact(QK_K)) {
        let (d, id) = amax_id(x);
        blk.d = fp32_to_fp16(d);
        let trit = |v: f32| lroundf_plus1(v * id) as u8;
        // 5 elements per byte, along 32 bytes
        for m in 0..32 {
            let mut q = 0u8;
            for n in 0..5 {
                q = q.wrapping_mul(3).wrapping_add(trit(x[m + n * 32]));
            }
            blk.qs[m] = ceil_div_243(q);
        }
        // along 16 bytes
        let x1 = &x[160..];
        for m in 0..16 {
            let mut q = 0u8;
            for n in 0..5 {
                q = q.wrapping_mul(3).wrapping_add(trit(x1[m + n * 16]));
            }
            blk.qs[32 + m] = ceil_div_243(q);
        }
        // 4 elements per byte
        let x2 = &x[240..];
        for j in 0..4 {
            let mut q = 0u8;
            for m in 0..4 {
                q = q.wrapping_mul(3).wrapping_add(trit(x2[j + m * 4]));
            }
            // shift the first value to the most significant trit
            q = q.wrapping_mul(3);
            blk.qh[j] = ceil_div_243(q);
        }
    }
    Ok(())
}

/// ggml's `quantize_row_tq2_0_ref`: `x.len()` must be a multiple of 256 and
/// `y` hold `x.len() / 256` blocks.
///
/// # Errors
/// [`QuantError::RowNotBlockMultiple`], [`QuantError::BufferLength`],
/// [`QuantError::NonFiniteInput`].
pub fn quantize_row_tq2_0_ref(x: &[f32], y: &mut [BlockTq2_0]) -> Result<(), QuantError> {
    check_ref(DType::TQ2_0, QK_K, x, y.len())?;
    for (blk, x) in y.iter_mut().zip(x.chunks_exact(QK_K)) {
        let (d, id) = amax_id(x);
        blk.d = fp32_to_fp16(d);
        for (j, x) in x.chunks_exact(128).enumerate() {
            for m in 0..32 {
                let mut q = 0u8;
                for n in 0..4 {
                    let xi = lroundf_plus1(x[m + n * 32] * id);
                    q = q.wrapping_add(((xi & 3) << (2 * n)) as u8);
                }
                blk.qs[32 * j + m] = q;
            }
        }
    }
    Ok(())
}

/// ggml's `quantize_tq1_0`: rows of `n_per_row` values; the importance
/// weights are ignored (as in ggml) but still checked.
///
/// # Errors
/// As [`quantize_row_tq1_0_ref`], plus [`QuantError::InvalidImportance`].
pub fn quantize_tq1_0(
    src: &[f32],
    dst: &mut [BlockTq1_0],
    n_per_row: usize,
    imatrix: Option<&[f32]>,
) -> Result<(), QuantError> {
    check_quantize(DType::TQ1_0, QK_K, src, dst.len(), n_per_row, imatrix)?;
    quantize_row_tq1_0_ref(src, dst)
}

/// ggml's `quantize_tq2_0`: rows of `n_per_row` values; the importance
/// weights are ignored (as in ggml) but still checked.
///
/// # Errors
/// As [`quantize_row_tq2_0_ref`], plus [`QuantError::InvalidImportance`].
pub fn quantize_tq2_0(
    src: &[f32],
    dst: &mut [BlockTq2_0],
    n_per_row: usize,
    imatrix: Option<&[f32]>,
) -> Result<(), QuantError> {
    check_quantize(DType::TQ2_0, QK_K, src, dst.len(), n_per_row, imatrix)?;
    quantize_row_tq2_0_ref(src, dst)
}

/// The trit (0, 1 or 2) in position `n` of a base-3 fraction byte `q`
/// (`((uint8_t)(q * 3^n) * 3) >> 8`).
#[inline]
fn trit_at(q: u8, pow3: u8) -> i32 {
    let q = q.wrapping_mul(pow3);
    i32::from((u16::from(q) * 3) >> 8)
}

const POW3: [u8; 6] = [1, 3, 9, 27, 81, 243];

/// Calls `f(index, t + 1)` for every value of a TQ1_0 block in storage order.
#[inline]
fn tq1_0_trits(blk: &BlockTq1_0, mut f: impl FnMut(usize, i32)) {
    let mut k = 0;
    for p in &POW3[..5] {
        for m in 0..32 {
            f(k, trit_at(blk.qs[m], *p));
            k += 1;
        }
    }
    for p in &POW3[..5] {
        for m in 0..16 {
            f(k, trit_at(blk.qs[32 + m], *p));
            k += 1;
        }
    }
    for p in &POW3[..4] {
        for j in 0..4 {
            f(k, trit_at(blk.qh[j], *p));
            k += 1;
        }
    }
}

/// ggml's `dequantize_row_tq1_0`: `y` must hold `256 * x.len()` values.
///
/// # Errors
/// [`QuantError::BufferLength`] if `y` has the wrong length.
pub fn dequantize_row_tq1_0(x: &[BlockTq1_0], y: &mut [f32]) -> Result<(), QuantError> {
    check_dequantize(x.len(), QK_K, y.len())?;
    for (blk, y) in x.iter().zip(y.chunks_exact_mut(QK_K)) {
        let d = fp16_to_fp32(blk.d);
        tq1_0_trits(blk, |k, t| y[k] = (t - 1) as f32 * d);
    }
    Ok(())
}

/// ggml's `dequantize_row_tq2_0`: `y` must hold `256 * x.len()` values.
///
/// # Errors
/// [`QuantError::BufferLength`] if `y` has the wrong length.
pub fn dequantize_row_tq2_0(x: &[BlockTq2_0], y: &mut [f32]) -> Result<(), QuantError> {
    check_dequantize(x.len(), QK_K, y.len())?;
    for (blk, y) in x.iter().zip(y.chunks_exact_mut(QK_K)) {
        let d = fp16_to_fp32(blk.d);
        for (j, y) in y.chunks_exact_mut(128).enumerate() {
            for l in 0..4 {
                for m in 0..32 {
                    let q = i32::from((blk.qs[32 * j + m] >> (l * 2)) & 3);
                    y[32 * l + m] = (q - 1) as f32 * d;
                }
            }
        }
    }
    Ok(())
}

/// The sum of `y`'s 16 stored block sums: what llama.cpp's ternary kernels
/// subtract from `sum t y` to get `sum (t - 1) y`.
fn stored_sum(yb: &Q8K<'_>) -> i32 {
    (0..QK_K / 16).map(|k| yb.bsum(k)).sum()
}

/// ggml's `ggml_vec_dot_tq1_0_q8_K` as llama.cpp's x86 (AVX2) and ARM
/// (NEON) kernels compute it: each block's `sum (t - 1) y` as `sum t y`
/// less `y`'s stored block sums (`bsums`). For every `block_q8_K` whose
/// `bsums` are its quants' sums (all that [`crate::kquants::quantize_row_q8_k_ref`]
/// and ggml write) this is ggml's generic code's exact sum; the stored sums
/// are part of the format, as for Q2_K, Q4_K, Q5_K and IQ1_S. `y` is the raw
/// bytes of `x.len()` `block_q8_K` (292 bytes each).
///
/// # Errors
/// [`QuantError::BufferLength`] if `y.len() != 292 * x.len()`.
pub fn vec_dot_tq1_0_q8_k(x: &[BlockTq1_0], y: &[u8]) -> Result<f32, QuantError> {
    check_partner("y (block_q8_K bytes)", x.len(), Q8_K_BYTES, y.len())?;
    let mut sumf = 0.0f32;
    for (xb, yb) in x.iter().zip(y.chunks_exact(Q8_K_BYTES)) {
        let yb = Q8K::parse(yb);
        // ggml's q8 index for each value equals its storage order
        let mut sum = -stored_sum(&yb);
        tq1_0_trits(xb, |k, t| sum += t * yb.q(k));
        sumf += sum as f32 * (fp16_to_fp32(xb.d) * yb.d);
    }
    Ok(sumf)
}

/// ggml's `ggml_vec_dot_tq2_0_q8_K` as llama.cpp's x86 (AVX2) and ARM
/// (NEON) kernels compute it: `sum t y` over the 2-bit codes `t` less `y`'s
/// stored block sums, which is ggml's generic `sum (t - 1) y` for every
/// `block_q8_K` whose `bsums` are its quants' sums (see
/// [`vec_dot_tq1_0_q8_k`]). `y` is the raw bytes of `x.len()`
/// `block_q8_K` (292 bytes each).
///
/// # Errors
/// [`QuantError::BufferLength`] if `y.len() != 292 * x.len()`.
pub fn vec_dot_tq2_0_q8_k(x: &[BlockTq2_0], y: &[u8]) -> Result<f32, QuantError> {
    check_partner("y (block_q8_K bytes)", x.len(), Q8_K_BYTES, y.len())?;
    let mut sumf = 0.0f32;
    for (xb, yb) in x.iter().zip(y.chunks_exact(Q8_K_BYTES)) {
        let yb = Q8K::parse(yb);
        let mut sumi = -stored_sum(&yb);
        for j in (0..QK_K / 4).step_by(32) {
            for l in 0..4 {
                for k in 0..32 {
                    let t = i32::from((xb.qs[j + k] >> (l * 2)) & 3);
                    sumi += yb.q(j * 4 + l * 32 + k) * t;
                }
            }
        }
        let d = yb.d * fp16_to_fp32(xb.d);
        sumf += sumi as f32 * d;
    }
    Ok(sumf)
}
