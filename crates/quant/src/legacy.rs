//! ggml's legacy (32-element, single-scale) block formats: Q4_0, Q4_1, Q5_0,
//! Q5_1, Q8_0 and Q8_1, and the newer single-scale Q1_0 (128 elements, sign
//! bits) and Q2_0 (64 elements, 2-bit codes).
//!
//! # Why the code looks like C
//!
//! llama.cpp compiles these quantizers (`ggml-base`, `ggml-quants.c`) without
//! FMA and without fast-math, so the bytes it writes are a deterministic
//! function of the IEEE binary32 operations in its source order. Every function
//! here performs exactly those operations, one at a time and in the same order
//! (never `mul_add`, float literals as `f32`, int-to-float conversions where C
//! converts), which makes the output byte-identical to llama.cpp's. The
//! reproduced C semantics are:
//!
//! * `(int8_t)f` / `(uint8_t)f` as gcc compiles them for x86-64 (`cvttss2si`
//!   into a 32-bit register, keep the low byte): truncation toward zero, and
//!   NaN or out-of-range values become `INT_MIN` (low byte 0). That only matters
//!   when a block's scale is so small that its inverse overflows to infinity.
//! * `roundf` is [`f32::round`] (halves away from zero); ggml's `nearest_int`
//!   (halves to even) is [`crate::common::nearest_int`]; outside its documented
//!   range ggml's release build returns the bit trick's (deterministic) value,
//!   which this module reproduces instead of asserting.
//! * `MIN`/`MAX` are C's macros (`a < b ? a : b`), including how they treat NaN.
//!
//! Without an importance matrix every quantizer runs ggml's `quantize_row_*_ref`;
//! with one, [`quantize_q4_0`] and friends run ggml's `quantize_row_*_impl`
//! (`make_qx_quants` for Q4_0/Q5_0, `make_qkx3_quants` for Q4_1/Q5_1), exactly as
//! `ggml_quantize_chunk` selects them. Q8_0 ignores the importance matrix, as in
//! ggml.
//!
//! The dot products reproduce ggml-cpu's scalar `ggml_vec_dot_*_generic`
//! kernels (integer block sums, then one f32 accumulation per block in ggml's
//! order). ggml's SIMD kernels sum in other orders, so their results may differ
//! from these in the last bits.
//!
//! # Checked inputs
//!
//! Every function validates its buffer lengths and returns a [`QuantError`]
//! instead of panicking. The quantizers also reject NaN and infinite inputs
//! ([`QuantError::NonFiniteInput`]) and NaN, infinite or negative importance
//! weights ([`QuantError::InvalidImportance`]); they never panic on any finite
//! input, however large or small.

use half::f16;
use weightkit_core::DType;

use crate::QuantError;
use crate::common::{fp16_to_fp32, fp32_to_fp16, nearest_int};
use crate::lanes::{self, F8, I8};
use crate::simd::Level;

mod q1q2;
pub(crate) use q1q2::q1_0_block_ref;
pub use q1q2::{
    BlockQ1_0, BlockQ2_0, QK1_0, QK2_0, dequantize_row_q1_0, dequantize_row_q2_0, quantize_q1_0,
    quantize_q2_0, quantize_row_q1_0_ref, quantize_row_q2_0_ref, vec_dot_q1_0_q8_0,
    vec_dot_q2_0_q8_0,
};

/// Elements per [`BlockQ4_0`].
pub const QK4_0: usize = 32;
/// Elements per [`BlockQ4_1`].
pub const QK4_1: usize = 32;
/// Elements per [`BlockQ5_0`].
pub const QK5_0: usize = 32;
/// Elements per [`BlockQ5_1`].
pub const QK5_1: usize = 32;
/// Elements per [`BlockQ8_0`].
pub const QK8_0: usize = 32;
/// Elements per [`BlockQ8_1`].
pub const QK8_1: usize = 32;

/// ggml `block_q4_0`: `x = (q - 8) * d`, 4.5 bits per weight.
///
/// Byte `i` of `qs` holds element `i` in its low nibble and element `i + 16`
/// in its high nibble.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct BlockQ4_0 {
    /// Scale.
    pub d: f16,
    /// Nibbles (see the type's docs for the order).
    pub qs: [u8; QK4_0 / 2],
}
const _: () = assert!(std::mem::size_of::<BlockQ4_0>() == 18);

/// ggml `block_q4_1`: `x = q * d + m`, 5 bits per weight.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct BlockQ4_1 {
    /// Scale.
    pub d: f16,
    /// Minimum (offset).
    pub m: f16,
    /// Nibbles, ordered as in [`BlockQ4_0`].
    pub qs: [u8; QK4_1 / 2],
}
const _: () = assert!(std::mem::size_of::<BlockQ4_1>() == 20);

/// ggml `block_q5_0`: `x = (q - 16) * d`, 5.5 bits per weight.
///
/// `qh` is a little-endian `u32` whose bit `i` is the fifth bit of element `i`;
/// `qs` holds the low four bits, ordered as in [`BlockQ4_0`].
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct BlockQ5_0 {
    /// Scale.
    pub d: f16,
    /// Fifth bits (little-endian `u32`, bit `i` for element `i`).
    pub qh: [u8; 4],
    /// Low nibbles.
    pub qs: [u8; QK5_0 / 2],
}
const _: () = assert!(std::mem::size_of::<BlockQ5_0>() == 22);

/// ggml `block_q5_1`: `x = q * d + m`, 6 bits per weight.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct BlockQ5_1 {
    /// Scale.
    pub d: f16,
    /// Minimum (offset).
    pub m: f16,
    /// Fifth bits, as in [`BlockQ5_0`].
    pub qh: [u8; 4],
    /// Low nibbles.
    pub qs: [u8; QK5_1 / 2],
}
const _: () = assert!(std::mem::size_of::<BlockQ5_1>() == 24);

/// ggml `block_q8_0`: `x = q * d`, 8.5 bits per weight.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct BlockQ8_0 {
    /// Scale.
    pub d: f16,
    /// Quants.
    pub qs: [i8; QK8_0],
}
const _: () = assert!(std::mem::size_of::<BlockQ8_0>() == 34);

/// ggml `block_q8_1`: like Q8_0 plus `s = d * sum(qs)`; the activation-side
/// partner of Q4_1 and Q5_1 in dot products (ggml has no dequantizer for it).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct BlockQ8_1 {
    /// Scale.
    pub d: f16,
    /// `d * sum(qs)`.
    pub s: f16,
    /// Quants.
    pub qs: [i8; QK8_1],
}
const _: () = assert!(std::mem::size_of::<BlockQ8_1>() == 36);

// ---------------------------------------------------------------------------
// C semantics
// ---------------------------------------------------------------------------

/// ggml's `GROUP_MAX_EPS`.
const GROUP_MAX_EPS: f32 = 1e-15;

/// `cvttss2si` into a 32-bit register: truncation toward zero, `i32::MIN` for
/// NaN and out-of-range values.
#[inline]
fn cvtt_f32_i32(v: f32) -> i32 {
    // Written as a select of two computed values rather than a branch, so
    // that loops over blocks vectorise (cvttps2dq + blend).
    let in_range = (-2_147_483_648.0..2_147_483_648.0).contains(&v); // false for NaN
    let t = v as i32; // truncation toward zero inside the range
    if in_range { t } else { i32::MIN }
}

/// C `(int8_t)v` as gcc compiles it on x86-64.
#[inline]
fn c_f32_to_i8(v: f32) -> i8 {
    cvtt_f32_i32(v) as i8
}

/// C `(uint8_t)v` as gcc compiles it on x86-64.
#[inline]
fn c_f32_to_u8(v: f32) -> u8 {
    cvtt_f32_i32(v) as u8
}

/// C `MAX(a, b)` for floats: `a > b ? a : b`.
#[inline]
fn c_max(a: f32, b: f32) -> f32 {
    if a > b { a } else { b }
}

/// C `MIN(a, b)` for floats: `a < b ? a : b`.
#[inline]
fn c_min(a: f32, b: f32) -> f32 {
    if a < b { a } else { b }
}

/// ggml's `nearest_int` as built in release mode: in range it is
/// [`nearest_int`]; outside (only reachable with extreme inputs) the same bit
/// trick's deterministic result instead of an assertion.
#[inline]
fn nearest_int_any(fval: f32) -> i32 {
    if fval.abs() <= 4_194_303.0 {
        nearest_int(fval)
    } else {
        let val = fval + 12_582_912.0;
        ((val.to_bits() as i32) & 0x007f_ffff) - 0x0040_0000
    }
}

// ---------------------------------------------------------------------------
// Argument checks
// ---------------------------------------------------------------------------

/// `n` elements in blocks of `block`, written to `found` blocks.
fn check_row(dtype: DType, block: usize, n: usize, found: usize) -> Result<(), QuantError> {
    if !n.is_multiple_of(block) {
        return Err(QuantError::RowNotBlockMultiple { dtype, n, block });
    }
    let expected = n / block;
    if found != expected {
        return Err(QuantError::BufferLength {
            what: "dst",
            expected,
            found,
            unit: "blocks",
        });
    }
    Ok(())
}

fn check_finite(x: &[f32]) -> Result<(), QuantError> {
    match crate::common::first_non_finite(x) {
        Some(index) => Err(QuantError::NonFiniteInput {
            index,
            value: x[index],
        }),
        None => Ok(()),
    }
}

/// Checks of a one-row quantizer: `x` whole blocks, `found` destination blocks,
/// finite values.
fn check_quantize_row(
    dtype: DType,
    block: usize,
    x: &[f32],
    found: usize,
) -> Result<(), QuantError> {
    check_row(dtype, block, x.len(), found)?;
    check_finite(x)
}

/// Checks of a multi-row quantizer; returns the number of rows.
fn check_quantize_chunk(
    dtype: DType,
    block: usize,
    src: &[f32],
    dst_blocks: usize,
    n_per_row: usize,
    imatrix: Option<&[f32]>,
) -> Result<usize, QuantError> {
    if !n_per_row.is_multiple_of(block) {
        return Err(QuantError::RowNotBlockMultiple {
            dtype,
            n: n_per_row,
            block,
        });
    }
    let nrows = src.len().checked_div(n_per_row).unwrap_or(0);
    let whole = nrows * n_per_row;
    if whole != src.len() {
        return Err(QuantError::BufferLength {
            what: "src (rows of n_per_row)",
            expected: whole,
            found: src.len(),
            unit: "elements",
        });
    }
    let expected = nrows * (n_per_row / block);
    if dst_blocks != expected {
        return Err(QuantError::BufferLength {
            what: "dst",
            expected,
            found: dst_blocks,
            unit: "blocks",
        });
    }
    if let Some(w) = imatrix {
        if w.len() != n_per_row {
            return Err(QuantError::BufferLength {
                what: "imatrix",
                expected: n_per_row,
                found: w.len(),
                unit: "elements",
            });
        }
        crate::common::check_importance(w)?;
    }
    check_finite(src)?;
    Ok(nrows)
}

/// Checks of a dequantizer: `y` must hold `blocks * block` elements.
fn check_dequantize(block: usize, blocks: usize, found: usize) -> Result<(), QuantError> {
    let expected = blocks.saturating_mul(block);
    if found != expected {
        return Err(QuantError::BufferLength {
            what: "dst",
            expected,
            found,
            unit: "elements",
        });
    }
    Ok(())
}

/// Checks of a dot product: both sides the same number of blocks.
fn check_dot(x_blocks: usize, y_blocks: usize) -> Result<(), QuantError> {
    if x_blocks != y_blocks {
        return Err(QuantError::BufferLength {
            what: "vec_dot rhs",
            expected: x_blocks,
            found: y_blocks,
            unit: "blocks",
        });
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Search helpers of the importance-weighted paths
// ---------------------------------------------------------------------------

/// ggml's `make_qx_quants` with `rmse_type == 1` and weights `qw` (the only way
/// the legacy formats call it). Writes `L[i] = l + nmax` and returns the scale.
fn make_qx_quants(nmax: i32, x: &[f32; 32], levels: &mut [i8; 32], qw: &[f32; 32]) -> f32 {
    let mut max = 0.0f32;
    let mut amax = 0.0f32;
    for &xi in x {
        let ax = xi.abs();
        if ax > amax {
            amax = ax;
            max = xi;
        }
    }
    if amax < GROUP_MAX_EPS {
        *levels = [0; 32];
        return 0.0;
    }
    let clamp = |l: i32| l.min(nmax - 1).max(-nmax);
    let mut iscale = (-nmax) as f32 / max;
    let mut sumlx = 0.0f32;
    let mut suml2 = 0.0f32;
    for ((&xi, &w), out) in x.iter().zip(qw).zip(levels.iter_mut()) {
        let l = clamp(nearest_int_any(iscale * xi));
        *out = (l + nmax) as i8;
        let lf = l as f32;
        sumlx += w * xi * lf;
        suml2 += w * lf * lf;
    }
    let mut scale = if suml2 != 0.0 { sumlx / suml2 } else { 0.0 };
    let mut best = scale * sumlx;
    for is in -9..=9 {
        if is == 0 {
            continue;
        }
        iscale = -(nmax as f32 + 0.1f32 * is as f32) / max;
        sumlx = 0.0;
        suml2 = 0.0;
        for (&xi, &w) in x.iter().zip(qw) {
            let lf = clamp(nearest_int_any(iscale * xi)) as f32;
            sumlx += w * xi * lf;
            suml2 += w * lf * lf;
        }
        if suml2 > 0.0 && sumlx * sumlx > best * suml2 {
            for (&xi, out) in x.iter().zip(levels.iter_mut()) {
                *out = (nmax + clamp(nearest_int_any(iscale * xi))) as i8;
            }
            scale = sumlx / suml2;
            best = scale * sumlx;
        }
    }
    scale
}

/// ggml's `make_qkx3_quants` with weights, `rmin = -0.9`, `rdelta = 0.05`,
/// `nstep = 36`, `use_mad = false` (as Q4_1/Q5_1 call it). Writes the levels
/// and returns `(scale, the_min)`.
fn make_qkx3_quants(
    nmax: i32,
    x: &[f32; 32],
    weights: &[f32; 32],
    levels: &mut [u8; 32],
) -> (f32, f32) {
    const RMIN: f32 = -0.9;
    const RDELTA: f32 = 0.05;
    const NSTEP: i32 = 36;
    let nmax_f = nmax as f32;

    let mut min = x[0];
    let mut max = x[0];
    let mut sum_w = weights[0];
    let mut sum_x = sum_w * x[0];
    for (&xi, &w) in x.iter().zip(weights).skip(1) {
        if xi < min {
            min = xi;
        }
        if xi > max {
            max = xi;
        }
        sum_w += w;
        sum_x += w * xi;
    }
    if min > 0.0 {
        min = 0.0;
    }
    if max <= min {
        *levels = [0; 32];
        return (0.0, -min);
    }
    let mut iscale = nmax_f / (max - min);
    let mut scale = 1.0f32 / iscale;
    let mut best_mad = 0.0f32;
    for ((&xi, &w), out) in x.iter().zip(weights).zip(levels.iter_mut()) {
        let l = nearest_int_any(iscale * (xi - min)).min(nmax).max(0);
        *out = l as u8;
        let mut diff = scale * l as f32 + min - xi;
        diff = diff * diff;
        best_mad += w * diff;
    }
    let mut laux = [0u8; 32];
    for is in 0..=NSTEP {
        iscale = (RMIN + RDELTA * is as f32 + nmax_f) / (max - min);
        let mut sum_l = 0.0f32;
        let mut sum_l2 = 0.0f32;
        let mut sum_xl = 0.0f32;
        for ((&xi, &w), out) in x.iter().zip(weights).zip(laux.iter_mut()) {
            let v = iscale * (xi - min);
            let l = if v > 0.0 {
                nearest_int_any(c_min(v, nmax_f))
            } else {
                0
            };
            *out = l as u8;
            let lf = l as f32;
            sum_l += w * lf;
            sum_l2 += w * lf * lf;
            sum_xl += w * lf * xi;
        }
        let big_d = sum_w * sum_l2 - sum_l * sum_l;
        if big_d > 0.0 {
            let mut this_scale = (sum_w * sum_xl - sum_x * sum_l) / big_d;
            let mut this_min = (sum_l2 * sum_x - sum_l * sum_xl) / big_d;
            if this_min > 0.0 {
                this_min = 0.0;
                this_scale = sum_xl / sum_l2;
            }
            let mut mad = 0.0f32;
            for ((&xi, &w), &l) in x.iter().zip(weights).zip(&laux) {
                let mut diff = this_scale * l as f32 + this_min - xi;
                diff = diff * diff;
                mad += w * diff;
            }
            if mad < best_mad {
                *levels = laux;
                best_mad = mad;
                scale = this_scale;
                min = this_min;
            }
        }
    }
    (scale, -min)
}

/// `sigma2 = sum(x^2) / n_per_row` over one row, as the `_impl` paths compute it.
fn row_sigma2(x: &[f32]) -> f32 {
    let mut sum_x2 = 0.0f32;
    for &v in x {
        sum_x2 += v * v;
    }
    sum_x2 / x.len() as f32
}

/// `weight[j] = qw[j] * sqrtf(sigma2 + x[j]*x[j])`.
fn block_weights(x: &[f32; 32], qw: &[f32; 32], sigma2: f32) -> [f32; 32] {
    let mut weight = [0.0f32; 32];
    for ((w, &q), &xi) in weight.iter_mut().zip(qw).zip(x) {
        *w = q * (sigma2 + xi * xi).sqrt();
    }
    weight
}

/// Packs 32 levels below 16 into nibbles: byte `j` = `L[j] | L[j + 16] << 4`.
#[inline]
fn pack_nibbles(lo: u8, hi: u8) -> u8 {
    ((lo as u32) | ((hi as u32) << 4)) as u8
}

/// Packs 32 five-bit levels: (low nibbles, `qh`).
fn pack_q5(levels: &[u8; 32]) -> ([u8; 16], [u8; 4]) {
    let mut qs = [0u8; 16];
    let mut qh = 0u32;
    for (j, q) in qs.iter_mut().enumerate() {
        let xi0 = levels[j] as u32;
        let xi1 = levels[j + 16] as u32;
        *q = ((xi0 & 0x0F) | ((xi1 & 0x0F) << 4)) as u8;
        qh |= ((xi0 & 0x10) >> 4) << j;
        qh |= ((xi1 & 0x10) >> 4) << (j + 16);
    }
    (qs, qh.to_le_bytes())
}

// ---------------------------------------------------------------------------
// Importance-weighted paths (ggml's `quantize_row_q*_impl`)
// ---------------------------------------------------------------------------

/// A legacy type's two quantizers. The reference one (`ref_block`, and
/// `ref_blocks` choosing the AVX2 kernel or the scalar loop by level); the
/// importance path, ggml's `quantize_row_q*_impl`, which searches each block
/// with `make_qx_quants` (symmetric types) or `make_qkx3_quants` (types with
/// a minimum) under the weights `qw[j] * sqrt(sigma2 + x[j]^2)`, then packs
/// the levels.
pub(crate) trait LegacyImpl: Sized {
    /// The block's type.
    const DTYPE: DType;
    /// ggml's reference quantizer for one block.
    fn ref_block(x: &[f32; 32]) -> Self;
    /// The reference quantizer over whole blocks in AVX2 intrinsics (the
    /// same bytes).
    ///
    /// # Safety
    ///
    /// The CPU must support AVX2, FMA and F16C, and the values be finite.
    #[cfg(target_arch = "x86_64")]
    unsafe fn ref_blocks_avx2(src: &[f32], dst: &mut [Self]);
    /// The reference quantizer over whole blocks at `level` (capped at what
    /// the CPU supports; the values checked finite).
    fn ref_blocks(level: Level, src: &[f32], dst: &mut [Self]) {
        #[cfg(target_arch = "x86_64")]
        if level >= Level::Avx2 {
            // SAFETY: `level` is capped at `simd::supported()`, which reports
            // AVX2 (with FMA and F16C) only when the CPU has them; the values
            // were checked finite by the caller.
            unsafe { Self::ref_blocks_avx2(src, dst) };
            return;
        }
        let _ = level;
        for (xb, yb) in src.as_chunks::<32>().0.iter().zip(dst.iter_mut()) {
            *yb = Self::ref_block(xb);
        }
    }
    /// The search's `nmax`.
    const NMAX: i32;
    /// `make_qkx3_quants` (with a minimum) rather than `make_qx_quants`.
    const ASYM: bool;
    /// The block from its 32 levels (as stored bytes), the scale and the
    /// search's second result (`-min` for the asymmetric types).
    fn pack(levels: &[u8; 32], d: f32, neg_min: f32) -> Self;
}

impl LegacyImpl for BlockQ4_0 {
    const DTYPE: DType = DType::Q4_0;
    fn ref_block(x: &[f32; 32]) -> Self {
        q4_0_block_ref(x)
    }
    #[cfg(target_arch = "x86_64")]
    unsafe fn ref_blocks_avx2(src: &[f32], dst: &mut [Self]) {
        // SAFETY: the caller guarantees AVX2, FMA and F16C and finite values.
        unsafe { crate::simd::x86::quantize_row_q4_0(src, dst) }
    }
    const NMAX: i32 = 8;
    const ASYM: bool = false;
    #[inline(always)]
    fn pack(levels: &[u8; 32], d: f32, _: f32) -> Self {
        let mut qs = [0u8; 16];
        for (j, q) in qs.iter_mut().enumerate() {
            *q = pack_nibbles(levels[j], levels[j + 16]);
        }
        BlockQ4_0 {
            d: fp32_to_fp16(d),
            qs,
        }
    }
}

impl LegacyImpl for BlockQ4_1 {
    const DTYPE: DType = DType::Q4_1;
    fn ref_block(x: &[f32; 32]) -> Self {
        q4_1_block_ref(x)
    }
    #[cfg(target_arch = "x86_64")]
    unsafe fn ref_blocks_avx2(src: &[f32], dst: &mut [Self]) {
        // SAFETY: the caller guarantees AVX2, FMA and F16C and finite values.
        unsafe { crate::simd::x86::quantize_row_q4_1(src, dst) }
    }
    const NMAX: i32 = 15;
    const ASYM: bool = true;
    #[inline(always)]
    fn pack(levels: &[u8; 32], d: f32, neg_min: f32) -> Self {
        let mut qs = [0u8; 16];
        for (j, q) in qs.iter_mut().enumerate() {
            *q = pack_nibbles(levels[j], levels[j + 16]);
        }
        BlockQ4_1 {
            d: fp32_to_fp16(d),
            m: fp32_to_fp16(-neg_min),
            qs,
        }
    }
}

impl LegacyImpl for BlockQ5_0 {
    const DTYPE: DType = DType::Q5_0;
    fn ref_block(x: &[f32; 32]) -> Self {
        q5_0_block_ref(x)
    }
    #[cfg(target_arch = "x86_64")]
    unsafe fn ref_blocks_avx2(src: &[f32], dst: &mut [Self]) {
        // SAFETY: the caller guarantees AVX2, FMA and F16C and finite values.
        unsafe { crate::simd::x86::quantize_row_q5_0(src, dst) }
    }
    const NMAX: i32 = 16;
    const ASYM: bool = false;
    #[inline(always)]
    fn pack(levels: &[u8; 32], d: f32, _: f32) -> Self {
        let (qs, qh) = pack_q5(levels);
        BlockQ5_0 {
            d: fp32_to_fp16(d),
            qh,
            qs,
        }
    }
}

impl LegacyImpl for BlockQ5_1 {
    const DTYPE: DType = DType::Q5_1;
    fn ref_block(x: &[f32; 32]) -> Self {
        q5_1_block_ref(x)
    }
    #[cfg(target_arch = "x86_64")]
    unsafe fn ref_blocks_avx2(src: &[f32], dst: &mut [Self]) {
        // SAFETY: the caller guarantees AVX2, FMA and F16C and finite values.
        unsafe { crate::simd::x86::quantize_row_q5_1(src, dst) }
    }
    const NMAX: i32 = 31;
    const ASYM: bool = true;
    #[inline(always)]
    fn pack(levels: &[u8; 32], d: f32, neg_min: f32) -> Self {
        let (qs, qh) = pack_q5(levels);
        BlockQ5_1 {
            d: fp32_to_fp16(d),
            m: fp32_to_fp16(-neg_min),
            qh,
            qs,
        }
    }
}

/// One block of the importance path, one group at a time (ggml's order).
#[inline(always)]
fn impl_block<B: LegacyImpl>(xb: &[f32; 32], qw: &[f32; 32], sigma2: f32) -> B {
    let weight = block_weights(xb, qw, sigma2);
    if B::ASYM {
        let mut levels = [0u8; 32];
        let (d, neg_min) = make_qkx3_quants(B::NMAX, xb, &weight, &mut levels);
        B::pack(&levels, d, neg_min)
    } else {
        let mut levels = [0i8; 32];
        let d = make_qx_quants(B::NMAX, xb, &mut levels, &weight);
        B::pack(&levels.map(|l| l as u8), d, 0.0)
    }
}

/// Eight consecutive blocks of the importance path, one per lane of
/// [`crate::lanes`] (the same operations per block, hence the same bytes).
#[inline(always)]
fn impl_blocks_x8<B: LegacyImpl>(x: &[f32; 256], qw: &[f32; 256], sigma2: f32, y: &mut [B]) {
    let (xt, w, _) = lanes::importance_in::<32, 8>(x, qw, sigma2);
    let mut lt = [I8::splat(0); 32];
    let (d, neg_min) = if B::ASYM {
        lanes::make_qkx_quants::<32, 8, true>(B::NMAX, &xt, &w, &mut lt, -0.9, 0.05, 36, false)
    } else {
        (
            lanes::make_qx_quants(B::NMAX, &xt, &w, &mut lt),
            F8::splat(0.0),
        )
    };
    let mut levels = [0u8; 256];
    lanes::transpose_out(&lt, &mut levels, |v| v as u8);
    for (j, (lv, yb)) in levels.as_chunks::<32>().0.iter().zip(y).enumerate() {
        *yb = B::pack(lv, d.0[j], neg_min.0[j]);
    }
}

/// One row of the importance path (`qw` as long as the row).
#[inline(always)]
fn row_impl_generic<B: LegacyImpl, const LANES: bool>(x: &[f32], y: &mut [B], qw: &[f32]) {
    let sigma2 = row_sigma2(x);
    let mut done = 0;
    if LANES {
        let (x8, _) = x.as_chunks::<256>();
        let (w8, _) = qw.as_chunks::<256>();
        for ((xc, wc), yc) in x8.iter().zip(w8).zip(y.chunks_exact_mut(8)) {
            impl_blocks_x8(xc, wc, sigma2, yc);
            done += 8;
        }
    }
    let (xb, _) = x.as_chunks::<32>();
    let (wb, _) = qw.as_chunks::<32>();
    for ((xb, wb), yb) in xb.iter().zip(wb).zip(y.iter_mut()).skip(done) {
        *yb = impl_block(xb, wb, sigma2);
    }
}

/// [`row_impl_generic`] with eight-block lanes, compiled for AVX2 (no FMA).
///
/// # Safety
///
/// The CPU must support AVX2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn row_impl_avx2<B: LegacyImpl>(x: &[f32], y: &mut [B], qw: &[f32]) {
    row_impl_generic::<B, true>(x, y, qw);
}

/// One row of ggml's `quantize_row_q*_impl` at `level` (capped at what the
/// CPU supports).
fn row_impl<B: LegacyImpl>(level: Level, x: &[f32], y: &mut [B], qw: &[f32]) {
    #[cfg(target_arch = "x86_64")]
    if level >= Level::Avx2 {
        // SAFETY: `level` is capped at `simd::supported()`, which reports
        // AVX2 only when the CPU has it.
        unsafe { row_impl_avx2(x, y, qw) };
        return;
    }
    let _ = level;
    row_impl_generic::<B, false>(x, y, qw);
}

/// ggml's `quantize_q*` for a legacy type at `level` (capped at what the
/// CPU supports): the reference quantizer without `imatrix`, the importance
/// path row by row with it.
pub(crate) fn quantize_legacy<B: LegacyImpl>(
    level: Level,
    src: &[f32],
    dst: &mut [B],
    n_per_row: usize,
    imatrix: Option<&[f32]>,
) -> Result<(), QuantError> {
    let nrows = check_quantize_chunk(B::DTYPE, 32, src, dst.len(), n_per_row, imatrix)?;
    if nrows == 0 {
        return Ok(());
    }
    match imatrix {
        None => B::ref_blocks(level, src, dst),
        Some(qw) => {
            for (x, y) in src
                .chunks_exact(n_per_row)
                .zip(dst.chunks_exact_mut(n_per_row / 32))
            {
                row_impl(level, x, y, qw);
            }
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Q4_0
// ---------------------------------------------------------------------------

#[inline(always)]
fn q4_0_block_ref(x: &[f32; 32]) -> BlockQ4_0 {
    let mut amax = 0.0f32;
    let mut max = 0.0f32;
    for &v in x {
        if amax < v.abs() {
            amax = v.abs();
            max = v;
        }
    }
    let d = max / -8.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    let mut qs = [0u8; 16];
    for (j, q) in qs.iter_mut().enumerate() {
        let x0 = x[j] * id;
        let x1 = x[j + 16] * id;
        let xi0 = 15.min(c_f32_to_i8(x0 + 8.5) as i32) as u8;
        let xi1 = 15.min(c_f32_to_i8(x1 + 8.5) as i32) as u8;
        *q = pack_nibbles(xi0, xi1);
    }
    BlockQ4_0 {
        d: fp32_to_fp16(d),
        qs,
    }
}

/// ggml's `quantize_row_q4_0_ref`: `d = max / -8` where `max` is the first
/// value of largest magnitude, `q = min(15, (int8_t)(x / d + 8.5))`.
///
/// `y` must hold `x.len() / 32` blocks.
///
/// # Errors
/// [`QuantError::RowNotBlockMultiple`], [`QuantError::BufferLength`],
/// [`QuantError::NonFiniteInput`].
pub fn quantize_row_q4_0_ref(x: &[f32], y: &mut [BlockQ4_0]) -> Result<(), QuantError> {
    check_quantize_row(DType::Q4_0, QK4_0, x, y.len())?;
    for (xb, yb) in x.as_chunks::<QK4_0>().0.iter().zip(y.iter_mut()) {
        *yb = q4_0_block_ref(xb);
    }
    Ok(())
}

/// ggml's `quantize_q4_0`: quantizes `src` as rows of `n_per_row` elements.
///
/// Without `imatrix` this is [`quantize_row_q4_0_ref`]; with it (one
/// non-negative weight per column, shared by all rows) each row runs ggml's
/// `quantize_row_q4_0_impl`: per element weight
/// `imatrix[j] * sqrt(sum(row^2)/n_per_row + x^2)` and `make_qx_quants`'s
/// weighted scale search.
///
/// # Errors
/// [`QuantError::RowNotBlockMultiple`] if `n_per_row` is not a multiple of 32;
/// [`QuantError::BufferLength`] for `src` not whole rows, a `dst` other than
/// `rows * n_per_row / 32` blocks or an `imatrix` other than `n_per_row` long;
/// [`QuantError::NonFiniteInput`]; [`QuantError::InvalidImportance`].
pub fn quantize_q4_0(
    src: &[f32],
    dst: &mut [BlockQ4_0],
    n_per_row: usize,
    imatrix: Option<&[f32]>,
) -> Result<(), QuantError> {
    quantize_legacy(crate::simd::level(), src, dst, n_per_row, imatrix)
}

/// ggml's `dequantize_row_q4_0`: `y = (q - 8) * d`.
///
/// # Errors
/// [`QuantError::BufferLength`] unless `y.len() == 32 * x.len()`.
pub fn dequantize_row_q4_0(x: &[BlockQ4_0], y: &mut [f32]) -> Result<(), QuantError> {
    check_dequantize(QK4_0, x.len(), y.len())?;
    for (b, yb) in x.iter().zip(y.as_chunks_mut::<QK4_0>().0) {
        let d = fp16_to_fp32(b.d);
        for (j, &q) in b.qs.iter().enumerate() {
            let x0 = (q & 0x0F) as i32 - 8;
            let x1 = (q >> 4) as i32 - 8;
            yb[j] = x0 as f32 * d;
            yb[j + 16] = x1 as f32 * d;
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Q4_1
// ---------------------------------------------------------------------------

#[inline(always)]
fn q4_1_block_ref(x: &[f32; 32]) -> BlockQ4_1 {
    let mut min = f32::MAX;
    let mut max = -f32::MAX;
    for &v in x {
        if v < min {
            min = v;
        }
        if v > max {
            max = v;
        }
    }
    let d = (max - min) / 15.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    let mut qs = [0u8; 16];
    for (j, q) in qs.iter_mut().enumerate() {
        let x0 = (x[j] - min) * id;
        let x1 = (x[j + 16] - min) * id;
        let xi0 = 15.min(c_f32_to_i8(x0 + 0.5) as i32) as u8;
        let xi1 = 15.min(c_f32_to_i8(x1 + 0.5) as i32) as u8;
        *q = pack_nibbles(xi0, xi1);
    }
    BlockQ4_1 {
        d: fp32_to_fp16(d),
        m: fp32_to_fp16(min),
        qs,
    }
}

/// ggml's `quantize_row_q4_1_ref`: `d = (max - min) / 15`, `m = min`,
/// `q = min(15, (int8_t)((x - min) / d + 0.5))`.
///
/// # Errors
/// [`QuantError::RowNotBlockMultiple`], [`QuantError::BufferLength`],
/// [`QuantError::NonFiniteInput`].
pub fn quantize_row_q4_1_ref(x: &[f32], y: &mut [BlockQ4_1]) -> Result<(), QuantError> {
    check_quantize_row(DType::Q4_1, QK4_1, x, y.len())?;
    for (xb, yb) in x.as_chunks::<QK4_1>().0.iter().zip(y.iter_mut()) {
        *yb = q4_1_block_ref(xb);
    }
    Ok(())
}

/// ggml's `quantize_q4_1`: rows of `n_per_row`; with `imatrix`, ggml's
/// `quantize_row_q4_1_impl` (weights as in [`quantize_q4_0`], then
/// `make_qkx3_quants` with 37 candidate scales), else
/// [`quantize_row_q4_1_ref`].
///
/// # Errors
/// As [`quantize_q4_0`].
pub fn quantize_q4_1(
    src: &[f32],
    dst: &mut [BlockQ4_1],
    n_per_row: usize,
    imatrix: Option<&[f32]>,
) -> Result<(), QuantError> {
    quantize_legacy(crate::simd::level(), src, dst, n_per_row, imatrix)
}

/// ggml's `dequantize_row_q4_1`: `y = q * d + m`.
///
/// # Errors
/// [`QuantError::BufferLength`] unless `y.len() == 32 * x.len()`.
pub fn dequantize_row_q4_1(x: &[BlockQ4_1], y: &mut [f32]) -> Result<(), QuantError> {
    check_dequantize(QK4_1, x.len(), y.len())?;
    for (b, yb) in x.iter().zip(y.as_chunks_mut::<QK4_1>().0) {
        let d = fp16_to_fp32(b.d);
        let m = fp16_to_fp32(b.m);
        for (j, &q) in b.qs.iter().enumerate() {
            let x0 = (q & 0x0F) as i32;
            let x1 = (q >> 4) as i32;
            yb[j] = x0 as f32 * d + m;
            yb[j + 16] = x1 as f32 * d + m;
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Q5_0
// ---------------------------------------------------------------------------

#[inline(always)]
fn q5_0_block_ref(x: &[f32; 32]) -> BlockQ5_0 {
    let mut amax = 0.0f32;
    let mut max = 0.0f32;
    for &v in x {
        if amax < v.abs() {
            amax = v.abs();
            max = v;
        }
    }
    let d = max / -16.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    let mut levels = [0u8; 32];
    for j in 0..16 {
        let x0 = x[j] * id;
        let x1 = x[j + 16] * id;
        levels[j] = 31.min(c_f32_to_i8(x0 + 16.5) as i32) as u8;
        levels[j + 16] = 31.min(c_f32_to_i8(x1 + 16.5) as i32) as u8;
    }
    let (qs, qh) = pack_q5(&levels);
    BlockQ5_0 {
        d: fp32_to_fp16(d),
        qh,
        qs,
    }
}

/// ggml's `quantize_row_q5_0_ref`: `d = max / -16` (signed value of largest
/// magnitude), `q = min(31, (int8_t)(x / d + 16.5))`.
///
/// # Errors
/// [`QuantError::RowNotBlockMultiple`], [`QuantError::BufferLength`],
/// [`QuantError::NonFiniteInput`].
pub fn quantize_row_q5_0_ref(x: &[f32], y: &mut [BlockQ5_0]) -> Result<(), QuantError> {
    check_quantize_row(DType::Q5_0, QK5_0, x, y.len())?;
    for (xb, yb) in x.as_chunks::<QK5_0>().0.iter().zip(y.iter_mut()) {
        *yb = q5_0_block_ref(xb);
    }
    Ok(())
}

/// ggml's `quantize_q5_0`: rows of `n_per_row`; with `imatrix`, ggml's
/// `quantize_row_q5_0_impl` (`make_qx_quants` with `nmax = 16`), else
/// [`quantize_row_q5_0_ref`].
///
/// # Errors
/// As [`quantize_q4_0`].
pub fn quantize_q5_0(
    src: &[f32],
    dst: &mut [BlockQ5_0],
    n_per_row: usize,
    imatrix: Option<&[f32]>,
) -> Result<(), QuantError> {
    quantize_legacy(crate::simd::level(), src, dst, n_per_row, imatrix)
}

/// ggml's `dequantize_row_q5_0`: `y = (q - 16) * d`.
///
/// # Errors
/// [`QuantError::BufferLength`] unless `y.len() == 32 * x.len()`.
pub fn dequantize_row_q5_0(x: &[BlockQ5_0], y: &mut [f32]) -> Result<(), QuantError> {
    check_dequantize(QK5_0, x.len(), y.len())?;
    for (b, yb) in x.iter().zip(y.as_chunks_mut::<QK5_0>().0) {
        let d = fp16_to_fp32(b.d);
        let qh = u32::from_le_bytes(b.qh);
        for (j, &q) in b.qs.iter().enumerate() {
            let xh_0 = ((qh >> j) << 4) & 0x10;
            let xh_1 = (qh >> (j + 12)) & 0x10;
            let x0 = ((q as u32 & 0x0F) | xh_0) as i32 - 16;
            let x1 = ((q as u32 >> 4) | xh_1) as i32 - 16;
            yb[j] = x0 as f32 * d;
            yb[j + 16] = x1 as f32 * d;
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Q5_1
// ---------------------------------------------------------------------------

#[inline(always)]
fn q5_1_block_ref(x: &[f32; 32]) -> BlockQ5_1 {
    let mut min = f32::MAX;
    let mut max = -f32::MAX;
    for &v in x {
        if v < min {
            min = v;
        }
        if v > max {
            max = v;
        }
    }
    let d = (max - min) / 31.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    let mut levels = [0u8; 32];
    for j in 0..16 {
        let x0 = (x[j] - min) * id;
        let x1 = (x[j + 16] - min) * id;
        levels[j] = c_f32_to_u8(x0 + 0.5);
        levels[j + 16] = c_f32_to_u8(x1 + 0.5);
    }
    let (qs, qh) = pack_q5(&levels);
    BlockQ5_1 {
        d: fp32_to_fp16(d),
        m: fp32_to_fp16(min),
        qh,
        qs,
    }
}

/// ggml's `quantize_row_q5_1_ref`: `d = (max - min) / 31`, `m = min`,
/// `q = (uint8_t)((x - min) / d + 0.5)`.
///
/// # Errors
/// [`QuantError::RowNotBlockMultiple`], [`QuantError::BufferLength`],
/// [`QuantError::NonFiniteInput`].
pub fn quantize_row_q5_1_ref(x: &[f32], y: &mut [BlockQ5_1]) -> Result<(), QuantError> {
    check_quantize_row(DType::Q5_1, QK5_1, x, y.len())?;
    for (xb, yb) in x.as_chunks::<QK5_1>().0.iter().zip(y.iter_mut()) {
        *yb = q5_1_block_ref(xb);
    }
    Ok(())
}

/// ggml's `quantize_q5_1`: rows of `n_per_row`; with `imatrix`, ggml's
/// `quantize_row_q5_1_impl` (`make_qkx3_quants` with `nmax = 31`), else
/// [`quantize_row_q5_1_ref`].
///
/// # Errors
/// As [`quantize_q4_0`].
pub fn quantize_q5_1(
    src: &[f32],
    dst: &mut [BlockQ5_1],
    n_per_row: usize,
    imatrix: Option<&[f32]>,
) -> Result<(), QuantError> {
    quantize_legacy(crate::simd::level(), src, dst, n_per_row, imatrix)
}

/// ggml's `dequantize_row_q5_1`: `y = q * d + m`.
///
/// # Errors
/// [`QuantError::BufferLength`] unless `y.len() == 32 * x.len()`.
pub fn dequantize_row_q5_1(x: &[BlockQ5_1], y: &mut [f32]) -> Result<(), QuantError> {
    check_dequantize(QK5_1, x.len(), y.len())?;
    for (b, yb) in x.iter().zip(y.as_chunks_mut::<QK5_1>().0) {
        let d = fp16_to_fp32(b.d);
        let m = fp16_to_fp32(b.m);
        let qh = u32::from_le_bytes(b.qh);
        for (j, &q) in b.qs.iter().enumerate() {
            let xh_0 = ((qh >> j) << 4) & 0x10;
            let xh_1 = (qh >> (j + 12)) & 0x10;
            let x0 = ((q as u32 & 0x0F) | xh_0) as i32;
            let x1 = ((q as u32 >> 4) | xh_1) as i32;
            yb[j] = x0 as f32 * d + m;
            yb[j + 16] = x1 as f32 * d + m;
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Q8_0 and Q8_1
// ---------------------------------------------------------------------------

/// `(amax / 127, id)` of a Q8 block.
#[inline]
fn q8_scale(x: &[f32; 32]) -> (f32, f32) {
    let mut amax = 0.0f32;
    for &v in x {
        amax = c_max(amax, v.abs());
    }
    let d = amax / 127.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    (d, id)
}

fn q8_0_block_ref(x: &[f32; 32]) -> BlockQ8_0 {
    let (d, id) = q8_scale(x);
    let mut qs = [0i8; 32];
    for (q, &v) in qs.iter_mut().zip(x) {
        *q = c_f32_to_i8((v * id).round());
    }
    BlockQ8_0 {
        d: fp32_to_fp16(d),
        qs,
    }
}

fn q8_1_block_ref(x: &[f32; 32]) -> BlockQ8_1 {
    let (d, id) = q8_scale(x);
    let mut qs = [0i8; 32];
    let mut sum = 0i32;
    for j in 0..16 {
        let v0 = x[j] * id;
        let v1 = x[j + 16] * id;
        qs[j] = c_f32_to_i8(v0.round());
        qs[j + 16] = c_f32_to_i8(v1.round());
        sum += qs[j] as i32;
        sum += qs[j + 16] as i32;
    }
    BlockQ8_1 {
        d: fp32_to_fp16(d),
        s: fp32_to_fp16(sum as f32 * d),
        qs,
    }
}

/// ggml's `quantize_row_q8_0_ref`: `d = amax / 127`, `q = roundf(x / d)`.
///
/// # Errors
/// [`QuantError::RowNotBlockMultiple`], [`QuantError::BufferLength`],
/// [`QuantError::NonFiniteInput`].
pub fn quantize_row_q8_0_ref(x: &[f32], y: &mut [BlockQ8_0]) -> Result<(), QuantError> {
    check_quantize_row(DType::Q8_0, QK8_0, x, y.len())?;
    for (xb, yb) in x.as_chunks::<QK8_0>().0.iter().zip(y.iter_mut()) {
        *yb = q8_0_block_ref(xb);
    }
    Ok(())
}

/// ggml's `quantize_q8_0`: rows of `n_per_row`, always the reference path.
///
/// ggml ignores the importance matrix for Q8_0 and so does this function; it
/// is still checked (length and values) so that every type accepts the same
/// arguments.
///
/// # Errors
/// As [`quantize_q4_0`].
pub fn quantize_q8_0(
    src: &[f32],
    dst: &mut [BlockQ8_0],
    n_per_row: usize,
    imatrix: Option<&[f32]>,
) -> Result<(), QuantError> {
    let nrows = check_quantize_chunk(DType::Q8_0, QK8_0, src, dst.len(), n_per_row, imatrix)?;
    if nrows == 0 {
        return Ok(());
    }
    for (xb, yb) in src.as_chunks::<QK8_0>().0.iter().zip(dst.iter_mut()) {
        *yb = q8_0_block_ref(xb);
    }
    Ok(())
}

/// ggml's `dequantize_row_q8_0`: `y = q * d`.
///
/// # Errors
/// [`QuantError::BufferLength`] unless `y.len() == 32 * x.len()`.
pub fn dequantize_row_q8_0(x: &[BlockQ8_0], y: &mut [f32]) -> Result<(), QuantError> {
    check_dequantize(QK8_0, x.len(), y.len())?;
    for (b, yb) in x.iter().zip(y.as_chunks_mut::<QK8_0>().0) {
        let d = fp16_to_fp32(b.d);
        for (out, &q) in yb.iter_mut().zip(&b.qs) {
            *out = q as f32 * d;
        }
    }
    Ok(())
}

/// ggml's `quantize_row_q8_1_ref`: as Q8_0, plus `s = fp16(sum(q) * d)`.
///
/// # Errors
/// [`QuantError::RowNotBlockMultiple`], [`QuantError::BufferLength`],
/// [`QuantError::NonFiniteInput`].
pub fn quantize_row_q8_1_ref(x: &[f32], y: &mut [BlockQ8_1]) -> Result<(), QuantError> {
    check_quantize_row(DType::Q8_1, QK8_1, x, y.len())?;
    for (xb, yb) in x.as_chunks::<QK8_1>().0.iter().zip(y.iter_mut()) {
        *yb = q8_1_block_ref(xb);
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Dot products (ggml-cpu's scalar `ggml_vec_dot_*_generic`)
// ---------------------------------------------------------------------------

/// ggml's `ggml_vec_dot_q4_0_q8_0_generic`: per block
/// `sumf += sumi * dx * dy`.
///
/// # Errors
/// [`QuantError::BufferLength`] unless both sides have as many blocks.
pub fn vec_dot_q4_0_q8_0(x: &[BlockQ4_0], y: &[BlockQ8_0]) -> Result<f32, QuantError> {
    check_dot(x.len(), y.len())?;
    let mut sumf = 0.0f32;
    for (bx, by) in x.iter().zip(y) {
        let mut sumi0 = 0i32;
        let mut sumi1 = 0i32;
        for (j, &q) in bx.qs.iter().enumerate() {
            let v0 = (q & 0x0F) as i32 - 8;
            let v1 = (q >> 4) as i32 - 8;
            sumi0 += v0 * by.qs[j] as i32;
            sumi1 += v1 * by.qs[j + 16] as i32;
        }
        let sumi = sumi0 + sumi1;
        sumf += sumi as f32 * fp16_to_fp32(bx.d) * fp16_to_fp32(by.d);
    }
    Ok(sumf)
}

/// ggml's `ggml_vec_dot_q4_1_q8_1_generic`: per block
/// `sumf += (dx * dy) * sumi + mx * sy`.
///
/// # Errors
/// [`QuantError::BufferLength`] unless both sides have as many blocks.
pub fn vec_dot_q4_1_q8_1(x: &[BlockQ4_1], y: &[BlockQ8_1]) -> Result<f32, QuantError> {
    check_dot(x.len(), y.len())?;
    let mut sumf = 0.0f32;
    for (bx, by) in x.iter().zip(y) {
        let mut sumi0 = 0i32;
        let mut sumi1 = 0i32;
        for (j, &q) in bx.qs.iter().enumerate() {
            let v0 = (q & 0x0F) as i32;
            let v1 = (q >> 4) as i32;
            sumi0 += v0 * by.qs[j] as i32;
            sumi1 += v1 * by.qs[j + 16] as i32;
        }
        let sumi = sumi0 + sumi1;
        sumf += (fp16_to_fp32(bx.d) * fp16_to_fp32(by.d)) * sumi as f32
            + fp16_to_fp32(bx.m) * fp16_to_fp32(by.s);
    }
    Ok(sumf)
}

/// ggml's `ggml_vec_dot_q5_0_q8_0_generic`: per block
/// `sumf += (dx * dy) * sumi`.
///
/// # Errors
/// [`QuantError::BufferLength`] unless both sides have as many blocks.
pub fn vec_dot_q5_0_q8_0(x: &[BlockQ5_0], y: &[BlockQ8_0]) -> Result<f32, QuantError> {
    check_dot(x.len(), y.len())?;
    let mut sumf = 0.0f32;
    for (bx, by) in x.iter().zip(y) {
        let qh = u32::from_le_bytes(bx.qh);
        let mut sumi0 = 0i32;
        let mut sumi1 = 0i32;
        for (j, &q) in bx.qs.iter().enumerate() {
            let xh_0 = ((qh & (1u32 << j)) >> j) << 4;
            let xh_1 = (qh & (1u32 << (j + 16))) >> (j + 12);
            let x0 = (((q as u32 & 0x0F) | xh_0) as i32 - 16) as i8 as i32;
            let x1 = (((q as u32 >> 4) | xh_1) as i32 - 16) as i8 as i32;
            sumi0 += x0 * by.qs[j] as i32;
            sumi1 += x1 * by.qs[j + 16] as i32;
        }
        let sumi = sumi0 + sumi1;
        sumf += (fp16_to_fp32(bx.d) * fp16_to_fp32(by.d)) * sumi as f32;
    }
    Ok(sumf)
}

/// ggml's `ggml_vec_dot_q5_1_q8_1_generic`: per block
/// `sumf += (dx * dy) * sumi + mx * sy`.
///
/// # Errors
/// [`QuantError::BufferLength`] unless both sides have as many blocks.
pub fn vec_dot_q5_1_q8_1(x: &[BlockQ5_1], y: &[BlockQ8_1]) -> Result<f32, QuantError> {
    check_dot(x.len(), y.len())?;
    let mut sumf = 0.0f32;
    for (bx, by) in x.iter().zip(y) {
        let qh = u32::from_le_bytes(bx.qh);
        let mut sumi0 = 0i32;
        let mut sumi1 = 0i32;
        for (j, &q) in bx.qs.iter().enumerate() {
            let xh_0 = ((qh >> j) << 4) & 0x10;
            let xh_1 = (qh >> (j + 12)) & 0x10;
            let x0 = ((q as u32 & 0x0F) | xh_0) as i32;
            let x1 = ((q as u32 >> 4) | xh_1) as i32;
            sumi0 += x0 * by.qs[j] as i32;
            sumi1 += x1 * by.qs[j + 16] as i32;
        }
        let sumi = sumi0 + sumi1;
        sumf += (fp16_to_fp32(bx.d) * fp16_to_fp32(by.d)) * sumi as f32
            + fp16_to_fp32(bx.m) * fp16_to_fp32(by.s);
    }
    Ok(sumf)
}

/// ggml's `ggml_vec_dot_q8_0_q8_0_generic`: per block
/// `sumf += sumi * (dx * dy)`.
///
/// # Errors
/// [`QuantError::BufferLength`] unless both sides have as many blocks.
pub fn vec_dot_q8_0_q8_0(x: &[BlockQ8_0], y: &[BlockQ8_0]) -> Result<f32, QuantError> {
    check_dot(x.len(), y.len())?;
    let mut sumf = 0.0f32;
    for (bx, by) in x.iter().zip(y) {
        let mut sumi = 0i32;
        for (&a, &b) in bx.qs.iter().zip(&by.qs) {
            sumi += a as i32 * b as i32;
        }
        sumf += sumi as f32 * (fp16_to_fp32(bx.d) * fp16_to_fp32(by.d));
    }
    Ok(sumf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn c_conversions_match_x86() {
        assert_eq!(c_f32_to_i8(16.99), 16);
        assert_eq!(c_f32_to_i8(-0.99), 0);
        assert_eq!(c_f32_to_i8(200.0), -56);
        assert_eq!(c_f32_to_i8(f32::INFINITY), 0);
        assert_eq!(c_f32_to_i8(f32::NEG_INFINITY), 0);
        assert_eq!(c_f32_to_i8(f32::NAN), 0);
        assert_eq!(c_f32_to_u8(31.7), 31);
        assert_eq!(c_f32_to_u8(256.5), 0);
    }

    #[test]
    fn nearest_int_any_out_of_range_is_ggml_release() {
        assert_eq!(nearest_int_any(2.5), 2);
        // NaN and infinities: what ggml's bit trick gives without the assert.
        assert_eq!(nearest_int_any(f32::NAN), 0);
        assert_eq!(nearest_int_any(f32::INFINITY), -0x0040_0000);
        assert_eq!(nearest_int_any(-f32::INFINITY), -0x0040_0000);
    }
}
