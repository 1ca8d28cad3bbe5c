//! ggml's k-quants: Q2_K, Q3_K, Q4_K, Q5_K, Q6_K and Q8_K (super-blocks of
//! [`QK_K`] = 256 elements), bit-exact with llama.cpp's `ggml-quants.c`.
//!
//! Every quantizer reproduces ggml's arithmetic one IEEE binary32 operation at
//! a time, in ggml's order (no fused multiply-add), including the scale
//! searches (`make_qx_quants`, `make_q3_quants`, `make_qkx2_quants`,
//! `make_qkx3_quants`, `make_qp_quants`) and the packing of the 6-bit scales.
//! C's integer conversions are reproduced as well: `(int)` truncates toward
//! zero, stores into `int8_t`/`uint8_t` wrap modulo 256.
//!
//! * `quantize_row_*_ref` are ggml's reference quantizers (no importance).
//! * `quantize_*` quantize a matrix row by row, as ggml's `quantize_q*_K`:
//!   without an importance matrix they run the reference path, with one the
//!   importance-weighted `quantize_row_q*_K_impl` path.
//! * `dequantize_row_*` are ggml's `to_float` functions.
//! * `vec_dot_*_q8_k` follow the operation order of ggml's generic (scalar)
//!   `ggml_vec_dot_q*_K_q8_K_generic`.
//!
//! All functions check their buffer lengths and return an error instead of
//! panicking.

// The loops index like ggml's C (`x[16*j + ii]`, `L[j + l + 32]`, ...) so
// that each line can be checked against the reference side by side.
#![allow(clippy::needless_range_loop)]

use half::f16;
use weightkit_core::DType;

use crate::QuantError;
use crate::common::{fp16_to_fp32, fp32_to_fp16};
use crate::lanes::{self, F8, F16, I8, I16};
use crate::simd::Level;

/// Elements in one k-quant super-block.
pub const QK_K: usize = 256;

/// ggml's `GROUP_MAX_EPS`: below this amplitude a group counts as all zero.
pub(crate) const GROUP_MAX_EPS: f32 = 1e-15;

/// Q2_K super-block: 16 sub-blocks of 16 elements, 2-bit quants, 4-bit
/// scales and mins. `x = d * (scales[j] & 15) * q - dmin * (scales[j] >> 4)`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct BlockQ2K {
    /// Sub-block scales (low nibble) and mins (high nibble).
    pub scales: [u8; QK_K / 16],
    /// 2-bit quants, four per byte.
    pub qs: [u8; QK_K / 4],
    /// Super-block scale for the quantized scales.
    pub d: f16,
    /// Super-block scale for the quantized mins.
    pub dmin: f16,
}

/// Q3_K super-block: 16 sub-blocks of 16 elements, 3-bit quants (2 low bits
/// in `qs`, high bit in `hmask`), 6-bit signed scales packed in 12 bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct BlockQ3K {
    /// High bit of each quant.
    pub hmask: [u8; QK_K / 8],
    /// Low two bits of each quant.
    pub qs: [u8; QK_K / 4],
    /// Sixteen 6-bit scales (biased by 32), packed.
    pub scales: [u8; 12],
    /// Super-block scale.
    pub d: f16,
}

/// Q4_K super-block: 8 sub-blocks of 32 elements, 4-bit quants, 6-bit scales
/// and mins packed in 12 bytes (see `get_scale_min_k4`).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct BlockQ4K {
    /// Super-block scale for the quantized scales.
    pub d: f16,
    /// Super-block scale for the quantized mins.
    pub dmin: f16,
    /// Eight 6-bit scales and eight 6-bit mins, packed.
    pub scales: [u8; 12],
    /// 4-bit quants.
    pub qs: [u8; QK_K / 2],
}

/// Q5_K super-block: as [`BlockQ4K`] plus a fifth bit per quant in `qh`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct BlockQ5K {
    /// Super-block scale for the quantized scales.
    pub d: f16,
    /// Super-block scale for the quantized mins.
    pub dmin: f16,
    /// Eight 6-bit scales and eight 6-bit mins, packed.
    pub scales: [u8; 12],
    /// High (fifth) bit of each quant.
    pub qh: [u8; QK_K / 8],
    /// Low four bits of each quant.
    pub qs: [u8; QK_K / 2],
}

/// Q6_K super-block: 16 sub-blocks of 16 elements, 6-bit quants, 8-bit
/// signed scales.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct BlockQ6K {
    /// Low four bits of each quant.
    pub ql: [u8; QK_K / 2],
    /// High two bits of each quant.
    pub qh: [u8; QK_K / 4],
    /// Sub-block scales.
    pub scales: [i8; QK_K / 16],
    /// Super-block scale.
    pub d: f16,
}

/// Q8_K super-block: the activation format the k-quant dot products use.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct BlockQ8K {
    /// Scale (f32, not f16).
    pub d: f32,
    /// Quants.
    pub qs: [i8; QK_K],
    /// Sum of the quants of each group of 16.
    pub bsums: [i16; QK_K / 16],
}

const _: () = assert!(size_of::<BlockQ2K>() == 84);
const _: () = assert!(size_of::<BlockQ3K>() == 110);
const _: () = assert!(size_of::<BlockQ4K>() == 144);
const _: () = assert!(size_of::<BlockQ5K>() == 176);
const _: () = assert!(size_of::<BlockQ6K>() == 210);
const _: () = assert!(size_of::<BlockQ8K>() == 292);

// ===================================================================== helpers

/// ggml's `nearest_int` for any input. In range this is
/// [`crate::common::nearest_int`]; outside it (or for NaN/inf, which ggml's
/// searches can meet on degenerate groups, e.g. `iscale = inf` for subnormal
/// spreads) it evaluates the same bit trick as ggml's release build, whose
/// range `assert` is compiled out, so results stay identical and nothing
/// panics.
#[inline(always)]
fn nearest_int(fval: f32) -> i32 {
    if fval.abs() <= 4_194_303.0 {
        crate::common::nearest_int(fval)
    } else {
        let val = fval + 12_582_912.0;
        let i = val.to_bits() as i32;
        (i & 0x007f_ffff) - 0x0040_0000
    }
}

/// C's `MIN(a, b)` for floats: `a < b ? a : b`.
#[inline(always)]
fn fmin_c(a: f32, b: f32) -> f32 {
    if a < b { a } else { b }
}

/// C's `MAX(a, b)` for floats: `a > b ? a : b`.
#[inline(always)]
fn fmax_c(a: f32, b: f32) -> f32 {
    if a > b { a } else { b }
}

/// `MAX(lo, MIN(hi, l))` on ints.
#[inline(always)]
fn clampi(l: i32, lo: i32, hi: i32) -> i32 {
    let m = if hi < l { hi } else { l };
    if lo > m { lo } else { m }
}

/// ggml's `make_qx_quants`: symmetric quants in `[0, 2*nmax)` (stored biased
/// by `nmax`), returns the scale.
fn make_qx_quants(
    nmax: i32,
    x: &[f32],
    l_out: &mut [i8],
    rmse_type: i32,
    qw: Option<&[f32]>,
) -> f32 {
    let n = x.len();
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
        l_out[..n].fill(0);
        return 0.0;
    }
    let nmaxf = nmax as f32;
    let mut iscale = (-nmax) as f32 / max;
    if rmse_type == 0 {
        for i in 0..n {
            let l = nearest_int(iscale * x[i]);
            l_out[i] = (nmax + clampi(l, -nmax, nmax - 1)) as i8;
        }
        return 1.0 / iscale;
    }
    let mut rmse_type = rmse_type;
    let mut return_early = false;
    if rmse_type < 0 {
        rmse_type = -rmse_type;
        return_early = true;
    }
    let weight = |i: usize| -> f32 {
        match qw {
            Some(q) => q[i],
            None => match rmse_type {
                1 => x[i] * x[i],
                2 => 1.0,
                3 => x[i].abs(),
                _ => x[i].abs().sqrt(),
            },
        }
    };
    let mut sumlx = 0.0f32;
    let mut suml2 = 0.0f32;
    for i in 0..n {
        let l = clampi(nearest_int(iscale * x[i]), -nmax, nmax - 1);
        l_out[i] = (l + nmax) as i8;
        let w = weight(i);
        let lf = l as f32;
        sumlx += w * x[i] * lf;
        suml2 += w * lf * lf;
    }
    let mut scale = if suml2 != 0.0 { sumlx / suml2 } else { 0.0 };
    if return_early {
        return if suml2 > 0.0 {
            0.5 * (scale + 1.0 / iscale)
        } else {
            1.0 / iscale
        };
    }
    let mut best = scale * sumlx;
    for is in -9i32..=9 {
        if is == 0 {
            continue;
        }
        iscale = -(nmaxf + 0.1f32 * is as f32) / max;
        sumlx = 0.0;
        suml2 = 0.0;
        for i in 0..n {
            let l = clampi(nearest_int(iscale * x[i]), -nmax, nmax - 1);
            let w = weight(i);
            let lf = l as f32;
            sumlx += w * x[i] * lf;
            suml2 += w * lf * lf;
        }
        if suml2 > 0.0 && sumlx * sumlx > best * suml2 {
            for i in 0..n {
                let l = nearest_int(iscale * x[i]);
                l_out[i] = (nmax + clampi(l, -nmax, nmax - 1)) as i8;
            }
            scale = sumlx / suml2;
            best = scale * sumlx;
        }
    }
    scale
}

/// ggml's `make_q3_quants` (used by the Q3_K reference path).
fn make_q3_quants(nmax: i32, x: &[f32], l_out: &mut [i8], do_rmse: bool) -> f32 {
    let n = x.len();
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
        l_out[..n].fill(0);
        return 0.0;
    }
    let iscale = (-nmax) as f32 / max;
    if do_rmse {
        let mut sumlx = 0.0f32;
        let mut suml2 = 0.0f32;
        for i in 0..n {
            let l = clampi(nearest_int(iscale * x[i]), -nmax, nmax - 1);
            l_out[i] = l as i8;
            let w = x[i] * x[i];
            let lf = l as f32;
            sumlx += w * x[i] * lf;
            suml2 += w * lf * lf;
        }
        for _itry in 0..5 {
            let mut n_changed = 0;
            for i in 0..n {
                let w = x[i] * x[i];
                let li = l_out[i] as f32;
                let mut slx = sumlx - w * x[i] * li;
                if slx > 0.0 {
                    let mut sl2 = suml2 - w * li * li;
                    let new_l = clampi(nearest_int(x[i] * sl2 / slx), -nmax, nmax - 1);
                    if new_l != l_out[i] as i32 {
                        let nl = new_l as f32;
                        slx += w * x[i] * nl;
                        sl2 += w * nl * nl;
                        if sl2 > 0.0 && slx * slx * suml2 > sumlx * sumlx * sl2 {
                            l_out[i] = new_l as i8;
                            sumlx = slx;
                            suml2 = sl2;
                            n_changed += 1;
                        }
                    }
                }
            }
            if n_changed == 0 {
                break;
            }
        }
        for l in l_out[..n].iter_mut() {
            *l = l.wrapping_add(nmax as i8);
        }
        return if suml2 > 0.0 { sumlx / suml2 } else { 0.0 };
    }
    for i in 0..n {
        let l = clampi(nearest_int(iscale * x[i]), -nmax, nmax - 1);
        l_out[i] = (l + nmax) as i8;
    }
    1.0 / iscale
}

/// ggml's `make_qkx2_quants`: asymmetric quants in `[0, nmax]`; returns
/// `(scale, the_min)` where the group is `scale * L - the_min`.
#[allow(clippy::too_many_arguments)]
fn make_qkx2_quants(
    nmax: i32,
    x: &[f32],
    weights: &[f32],
    l_out: &mut [u8],
    laux: &mut [u8],
    rmin: f32,
    rdelta: f32,
    nstep: i32,
    use_mad: bool,
) -> (f32, f32) {
    let n = x.len();
    let mut min = x[0];
    let mut max = x[0];
    let mut sum_w = weights[0];
    let mut sum_x = sum_w * x[0];
    for i in 1..n {
        if x[i] < min {
            min = x[i];
        }
        if x[i] > max {
            max = x[i];
        }
        let w = weights[i];
        sum_w += w;
        sum_x += w * x[i];
    }
    if min > 0.0 {
        min = 0.0;
    }
    if max == min {
        l_out[..n].fill(0);
        return (0.0, -min);
    }
    let nmaxf = nmax as f32;
    let mut iscale = nmaxf / (max - min);
    let mut scale = 1.0 / iscale;
    let mut best_error = 0.0f32;
    for i in 0..n {
        let l = nearest_int(iscale * (x[i] - min));
        l_out[i] = clampi(l, 0, nmax) as u8;
        let mut diff = scale * l_out[i] as f32 + min - x[i];
        diff = if use_mad { diff.abs() } else { diff * diff };
        best_error += weights[i] * diff;
    }
    if nstep < 1 {
        return (scale, -min);
    }
    for is in 0..=nstep {
        iscale = (rmin + rdelta * is as f32 + nmaxf) / (max - min);
        let mut sum_l = 0.0f32;
        let mut sum_l2 = 0.0f32;
        let mut sum_xl = 0.0f32;
        for i in 0..n {
            let l = clampi(nearest_int(iscale * (x[i] - min)), 0, nmax);
            laux[i] = l as u8;
            let w = weights[i];
            let lf = l as f32;
            sum_l += w * lf;
            sum_l2 += w * lf * lf;
            sum_xl += w * lf * x[i];
        }
        let d = sum_w * sum_l2 - sum_l * sum_l;
        if d > 0.0 {
            let mut this_scale = (sum_w * sum_xl - sum_x * sum_l) / d;
            let mut this_min = (sum_l2 * sum_x - sum_l * sum_xl) / d;
            if this_min > 0.0 {
                this_min = 0.0;
                this_scale = sum_xl / sum_l2;
            }
            let mut cur_error = 0.0f32;
            for i in 0..n {
                let mut diff = this_scale * laux[i] as f32 + this_min - x[i];
                diff = if use_mad { diff.abs() } else { diff * diff };
                cur_error += weights[i] * diff;
            }
            if cur_error < best_error {
                l_out[..n].copy_from_slice(&laux[..n]);
                best_error = cur_error;
                scale = this_scale;
                min = this_min;
            }
        }
    }
    (scale, -min)
}

/// ggml's `make_qkx3_quants` (importance-weighted paths). `weights` is always
/// given here (ggml's `x*x` fallback is unused by the k-quants).
#[allow(clippy::too_many_arguments)]
fn make_qkx3_quants(
    nmax: i32,
    x: &[f32],
    weights: &[f32],
    l_out: &mut [u8],
    laux: &mut [u8],
    rmin: f32,
    rdelta: f32,
    nstep: i32,
    use_mad: bool,
) -> (f32, f32) {
    let n = x.len();
    let mut min = x[0];
    let mut max = x[0];
    let mut sum_w = weights[0];
    let mut sum_x = sum_w * x[0];
    for i in 1..n {
        if x[i] < min {
            min = x[i];
        }
        if x[i] > max {
            max = x[i];
        }
        let w = weights[i];
        sum_w += w;
        sum_x += w * x[i];
    }
    if min > 0.0 {
        min = 0.0;
    }
    if max <= min {
        l_out[..n].fill(0);
        return (0.0, -min);
    }
    let nmaxf = nmax as f32;
    let mut iscale = nmaxf / (max - min);
    let mut scale = 1.0 / iscale;
    let mut best_mad = 0.0f32;
    for i in 0..n {
        let l = nearest_int(iscale * (x[i] - min));
        l_out[i] = clampi(l, 0, nmax) as u8;
        let mut diff = scale * l_out[i] as f32 + min - x[i];
        diff = if use_mad { diff.abs() } else { diff * diff };
        best_mad += weights[i] * diff;
    }
    if nstep < 1 {
        return (scale, -min);
    }
    for is in 0..=nstep {
        iscale = (rmin + rdelta * is as f32 + nmaxf) / (max - min);
        let mut sum_l = 0.0f32;
        let mut sum_l2 = 0.0f32;
        let mut sum_xl = 0.0f32;
        for i in 0..n {
            let v = iscale * (x[i] - min);
            let l = if v > 0.0 {
                nearest_int(fmin_c(v, nmaxf))
            } else {
                0
            };
            laux[i] = l as u8;
            let w = weights[i];
            let lf = l as f32;
            sum_l += w * lf;
            sum_l2 += w * lf * lf;
            sum_xl += w * lf * x[i];
        }
        let d = sum_w * sum_l2 - sum_l * sum_l;
        if d > 0.0 {
            let mut this_scale = (sum_w * sum_xl - sum_x * sum_l) / d;
            let mut this_min = (sum_l2 * sum_x - sum_l * sum_xl) / d;
            if this_min > 0.0 {
                this_min = 0.0;
                this_scale = sum_xl / sum_l2;
            }
            let mut mad = 0.0f32;
            for i in 0..n {
                let mut diff = this_scale * laux[i] as f32 + this_min - x[i];
                diff = if use_mad { diff.abs() } else { diff * diff };
                mad += weights[i] * diff;
            }
            if mad < best_mad {
                l_out[..n].copy_from_slice(&laux[..n]);
                best_mad = mad;
                scale = this_scale;
                min = this_min;
            }
        }
    }
    (scale, -min)
}

/// ggml's `make_qp_quants`: non-negative quants in `[0, nmax]` of the
/// sub-block scales (or mins), weighted by `quant_weights`.
fn make_qp_quants(nmax: i32, x: &[f32], l_out: &mut [u8], quant_weights: &[f32]) -> f32 {
    let n = x.len();
    let mut max = 0.0f32;
    for &xi in x {
        max = fmax_c(max, xi);
    }
    if max < GROUP_MAX_EPS {
        l_out[..n].fill(0);
        return 0.0;
    }
    let nmaxf = nmax as f32;
    let mut iscale = nmaxf / max;
    for i in 0..n {
        l_out[i] = nearest_int(iscale * x[i]) as u8;
    }
    let scale = 1.0 / iscale;
    let mut best_mse = 0.0f32;
    for i in 0..n {
        let diff = x[i] - scale * l_out[i] as f32;
        let w = quant_weights[i];
        best_mse += w * diff * diff;
    }
    for is in -4i32..=4 {
        if is == 0 {
            continue;
        }
        let iscale_is = (0.1f32 * is as f32 + nmaxf) / max;
        let scale_is = 1.0 / iscale_is;
        let mut mse = 0.0f32;
        for i in 0..n {
            let l = nearest_int(iscale_is * x[i]);
            let l = if nmax < l { nmax } else { l };
            let diff = x[i] - scale_is * l as f32;
            let w = quant_weights[i];
            mse += w * diff * diff;
        }
        if mse < best_mse {
            best_mse = mse;
            iscale = iscale_is;
        }
    }
    let mut sumlx = 0.0f32;
    let mut suml2 = 0.0f32;
    for i in 0..n {
        let l = nearest_int(iscale * x[i]);
        let l = if nmax < l { nmax } else { l };
        l_out[i] = l as u8;
        let w = quant_weights[i];
        let lf = l as f32;
        sumlx += w * x[i] * lf;
        suml2 += w * lf * lf;
    }
    for _itry in 0..5 {
        let mut n_changed = 0;
        for i in 0..n {
            let w = quant_weights[i];
            let li = l_out[i] as f32;
            let mut slx = sumlx - w * x[i] * li;
            let mut sl2 = suml2 - w * li * li;
            if slx > 0.0 && sl2 > 0.0 {
                let new_l = nearest_int(x[i] * sl2 / slx);
                let new_l = if nmax < new_l { nmax } else { new_l };
                if new_l != l_out[i] as i32 {
                    let nl = new_l as f32;
                    slx += w * x[i] * nl;
                    sl2 += w * nl * nl;
                    if slx * slx * suml2 > sumlx * sumlx * sl2 {
                        l_out[i] = new_l as u8;
                        sumlx = slx;
                        suml2 = sl2;
                        n_changed += 1;
                    }
                }
            }
        }
        if n_changed == 0 {
            break;
        }
    }
    if suml2 > 0.0 { sumlx / suml2 } else { 0.0 }
}

/// ggml's `get_scale_min_k4`: the 6-bit scale and min of sub-block `j`.
#[inline]
fn get_scale_min_k4(j: usize, q: &[u8; 12]) -> (u8, u8) {
    if j < 4 {
        (q[j] & 63, q[j + 4] & 63)
    } else {
        (
            (q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4),
            (q[j + 4] >> 4) | ((q[j] >> 6) << 4),
        )
    }
}

/// Packs eight 6-bit scales and mins as ggml's Q4_K/Q5_K quantizers do
/// (C `uint8_t` arithmetic: out-of-range values wrap as in ggml).
fn pack_scale_min_k4(ls: &[u8; 8], lm: &[u8; 8]) -> [u8; 12] {
    let mut s = [0u8; 12];
    for j in 0..8 {
        let (l, m) = (ls[j], lm[j]);
        if j < 4 {
            s[j] = l;
            s[j + 4] = m;
        } else {
            s[j + 4] = (l & 0xF) | ((m & 0xF) << 4);
            s[j - 4] |= (((l >> 4) as u32) << 6) as u8;
            s[j] |= (((m >> 4) as u32) << 6) as u8;
        }
    }
    s
}

/// Packs sixteen 6-bit Q3_K scales (already biased, `0..=63`) as ggml does.
fn pack_q3_scales(ls: &[i32; 16]) -> [u8; 12] {
    let mut s = [0u8; 12];
    for (j, &l0) in ls.iter().enumerate() {
        let l = l0 as i8;
        if j < 8 {
            s[j] = (l & 0xF) as u8;
        } else {
            s[j - 8] |= (((l & 0xF) as i32) << 4) as u8;
        }
        let l = l >> 4;
        s[j % 4 + 8] |= ((l as i32) << (2 * (j / 4))) as u8;
    }
    s
}

/// Sub-block scale `j` of a Q3_K block as the quantizer reads it back
/// (`int8_t`, `-32..=31`).
#[inline]
fn q3_scale_at(s: &[u8; 12], j: usize) -> i8 {
    let sc = if j < 8 { s[j] & 0xF } else { s[j - 8] >> 4 } as i8;
    let hi = (((s[8 + j % 4] >> (2 * (j / 4))) & 3) << 4) as i8;
    (sc | hi).wrapping_sub(32)
}

/// The sixteen Q3_K scales, decoded as ggml's `dequantize_row_q3_K` does
/// (still biased by 32).
#[inline]
fn q3_scales_decode(s: &[u8; 12]) -> [i8; 16] {
    const KMASK1: u32 = 0x0303_0303;
    const KMASK2: u32 = 0x0f0f_0f0f;
    let mut aux = [
        u32::from_le_bytes([s[0], s[1], s[2], s[3]]),
        u32::from_le_bytes([s[4], s[5], s[6], s[7]]),
        u32::from_le_bytes([s[8], s[9], s[10], s[11]]),
        0,
    ];
    let tmp = aux[2];
    aux[2] = ((aux[0] >> 4) & KMASK2) | (((tmp >> 4) & KMASK1) << 4);
    aux[3] = ((aux[1] >> 4) & KMASK2) | (((tmp >> 6) & KMASK1) << 4);
    aux[0] = (aux[0] & KMASK2) | ((tmp & KMASK1) << 4);
    aux[1] = (aux[1] & KMASK2) | (((tmp >> 2) & KMASK1) << 4);
    let mut out = [0i8; 16];
    for (k, w) in aux.iter().enumerate() {
        for (b, byte) in w.to_le_bytes().iter().enumerate() {
            out[4 * k + b] = *byte as i8;
        }
    }
    out
}

/// Packs 256 2-bit quants (`L` in `0..=3`) as ggml's Q2_K/Q3_K `qs`.
#[inline]
fn pack_2bit(l: &[u8; QK_K], qs: &mut [u8; QK_K / 4]) {
    for j in (0..QK_K).step_by(128) {
        for k in 0..32 {
            qs[j / 4 + k] =
                l[j + k] | (l[j + k + 32] << 2) | (l[j + k + 64] << 4) | (l[j + k + 96] << 6);
        }
    }
}

// ============================================================ argument checks

fn check_row(
    dtype: DType,
    x_len: usize,
    y_len: usize,
    what: &'static str,
) -> Result<(), QuantError> {
    if !x_len.is_multiple_of(QK_K) {
        return Err(QuantError::RowNotBlockMultiple {
            dtype,
            n: x_len,
            block: QK_K,
        });
    }
    if y_len != x_len / QK_K {
        return Err(QuantError::BufferLength {
            what,
            expected: x_len / QK_K,
            found: y_len,
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

fn check_dequant(n_blocks: usize, y_len: usize) -> Result<(), QuantError> {
    let expected = n_blocks * QK_K;
    if y_len != expected {
        return Err(QuantError::BufferLength {
            what: "dequantize output",
            expected,
            found: y_len,
            unit: "elements",
        });
    }
    Ok(())
}

fn check_matrix(
    dtype: DType,
    src_len: usize,
    dst_len: usize,
    n_per_row: usize,
    imatrix: Option<&[f32]>,
) -> Result<(), QuantError> {
    if !n_per_row.is_multiple_of(QK_K) {
        return Err(QuantError::RowNotBlockMultiple {
            dtype,
            n: n_per_row,
            block: QK_K,
        });
    }
    let src_ok = if n_per_row == 0 {
        src_len == 0
    } else {
        src_len.is_multiple_of(n_per_row)
    };
    if !src_ok {
        let expected = if n_per_row == 0 {
            0
        } else {
            src_len.next_multiple_of(n_per_row)
        };
        return Err(QuantError::BufferLength {
            what: "quantize source",
            expected,
            found: src_len,
            unit: "elements",
        });
    }
    if dst_len != src_len / QK_K {
        return Err(QuantError::BufferLength {
            what: "quantize destination",
            expected: src_len / QK_K,
            found: dst_len,
            unit: "blocks",
        });
    }
    if let Some(w) = imatrix {
        if w.len() != n_per_row {
            return Err(QuantError::BufferLength {
                what: "importance matrix",
                expected: n_per_row,
                found: w.len(),
                unit: "elements",
            });
        }
        crate::common::check_importance(w)?;
    }
    Ok(())
}

/// A k-quant block type's two quantizers, generic over how the per-group
/// scale searches run: `LANES = false` is the scalar reference (one group at
/// a time, as ggml), `LANES = true` searches eight groups at once in
/// [`crate::lanes`] (the same operations per group, hence the same bytes).
pub(crate) trait KQuantize: Sized {
    /// ggml's `quantize_row_*_ref` for one super-block.
    fn ref_block<const LANES: bool>(x: &[f32; QK_K]) -> Self;
    /// ggml's `quantize_row_*_impl` for one super-block with its importance.
    fn impl_block<const LANES: bool>(x: &[f32; QK_K], qw: &[f32; QK_K]) -> Self;
    /// Whether the lane searches compiled for AVX-512 run faster than the
    /// AVX2 ones for this type, without and with importance (measured on
    /// AMD Zen 4 by the `levels` example: 1.2-1.5x for Q2_K, Q4_K and
    /// Q5_K without importance, 1.1x for Q2_K with it; 0.96-1.09x, inside
    /// the noise, for Q4_K/Q5_K with it; 0.37-0.77x for Q3_K and Q6_K,
    /// whose searches LLVM compiles worse for AVX-512).
    const AVX512: (bool, bool) = (false, false);
}

/// Quantizes `src` into `dst` (`src.len() == QK_K * dst.len()`, checked by
/// the callers); with `qw` (as long as `src`, one row's importance) the
/// `impl` path.
#[inline(always)]
fn run_blocks_generic<B: KQuantize, const LANES: bool>(
    src: &[f32],
    qw: Option<&[f32]>,
    dst: &mut [B],
) {
    let xs = src.as_chunks::<QK_K>().0;
    match qw {
        None => {
            for (xb, yb) in xs.iter().zip(dst.iter_mut()) {
                *yb = B::ref_block::<LANES>(xb);
            }
        }
        Some(qw) => {
            for ((xb, qb), yb) in xs.iter().zip(qw.as_chunks::<QK_K>().0).zip(dst.iter_mut()) {
                *yb = B::impl_block::<LANES>(xb, qb);
            }
        }
    }
}

/// [`run_blocks_generic`] with the eight-lane searches, compiled for AVX2
/// (without FMA: no operation is fused, so the bytes stay the reference's).
///
/// # Safety
///
/// The CPU must support AVX2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn run_blocks_avx2<B: KQuantize>(src: &[f32], qw: Option<&[f32]>, dst: &mut [B]) {
    run_blocks_generic::<B, true>(src, qw, dst);
}

/// [`run_blocks_generic`] with the eight-lane searches, compiled for
/// AVX-512 (F/BW/VL; still without FMA). The same operations per lane, so
/// the same bytes.
///
/// # Safety
///
/// The CPU must support AVX2 and AVX-512 F/BW/VL.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,avx512f,avx512bw,avx512vl")]
unsafe fn run_blocks_avx512<B: KQuantize>(src: &[f32], qw: Option<&[f32]>, dst: &mut [B]) {
    run_blocks_generic::<B, true>(src, qw, dst);
}

/// Runs the fastest instance `level` (already capped at what the CPU
/// supports) allows; the scalar level runs the one-group-at-a-time
/// reference.
fn run_blocks<B: KQuantize>(level: Level, src: &[f32], qw: Option<&[f32]>, dst: &mut [B]) {
    #[cfg(target_arch = "x86_64")]
    if level >= Level::Avx512
        && (if qw.is_some() {
            B::AVX512.1
        } else {
            B::AVX512.0
        })
    {
        // SAFETY: `level` is capped at `simd::supported()`, which reports
        // AVX-512 only when the CPU has AVX2 and AVX-512 F/BW/VL (and VNNI).
        unsafe { run_blocks_avx512(src, qw, dst) };
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if level >= Level::Avx2 {
        // SAFETY: `level` is capped at `simd::supported()`, which reports
        // AVX2 only when the CPU has it.
        unsafe { run_blocks_avx2(src, qw, dst) };
        return;
    }
    let _ = level;
    run_blocks_generic::<B, false>(src, qw, dst);
}

/// Runs `quantize_T` over rows: the reference path without importance, the
/// `impl` path (one row at a time, importance per column) with it.
fn quantize_rows<B: KQuantize>(
    level: Level,
    dtype: DType,
    src: &[f32],
    dst: &mut [B],
    n_per_row: usize,
    imatrix: Option<&[f32]>,
) -> Result<(), QuantError> {
    check_matrix(dtype, src.len(), dst.len(), n_per_row, imatrix)?;
    check_finite(src)?;
    if n_per_row == 0 {
        return Ok(());
    }
    let per_row = n_per_row / QK_K;
    match imatrix {
        None => run_blocks(level, src, None, dst),
        Some(qw) => {
            for (xr, yr) in src
                .chunks_exact(n_per_row)
                .zip(dst.chunks_exact_mut(per_row))
            {
                run_blocks(level, xr, Some(qw), yr);
            }
        }
    }
    Ok(())
}

/// `quantize_q*_k` for any k-quant block type at `level` (already capped at
/// what the CPU supports), for [`crate::simd::dispatch`].
#[allow(private_bounds)]
pub(crate) fn quantize_k_at<B: KQuantize + KDType>(
    level: Level,
    src: &[f32],
    dst: &mut [B],
    n_per_row: usize,
    imatrix: Option<&[f32]>,
) -> Result<(), QuantError> {
    quantize_rows(level, B::DTYPE, src, dst, n_per_row, imatrix)
}

/// The [`DType`] of a k-quant block.
pub(crate) trait KDType {
    const DTYPE: DType;
}

macro_rules! kdtype {
    ($($b:ty => $d:expr),*) => {
        $(impl KDType for $b { const DTYPE: DType = $d; })*
    };
}

kdtype!(BlockQ2K => DType::Q2_K, BlockQ3K => DType::Q3_K, BlockQ4K => DType::Q4_K,
    BlockQ5K => DType::Q5_K, BlockQ6K => DType::Q6_K);

fn quantize_row_ref<B: KQuantize>(dtype: DType, x: &[f32], y: &mut [B]) -> Result<(), QuantError> {
    check_row(dtype, x.len(), y.len(), "quantize destination")?;
    check_finite(x)?;
    run_blocks(crate::simd::level(), x, None, y);
    Ok(())
}

fn check_dot(nx: usize, ny: usize) -> Result<(), QuantError> {
    if nx != ny {
        return Err(QuantError::BufferLength {
            what: "vec_dot Q8_K operand",
            expected: nx,
            found: ny,
            unit: "blocks",
        });
    }
    Ok(())
}

// ====================================================================== Q2_K

#[inline(always)]
fn q2_k_ref_block<const LANES: bool>(x: &[f32; QK_K]) -> BlockQ2K {
    const Q4SCALE: f32 = 15.0;
    let mut y = BlockQ2K {
        scales: [0; 16],
        qs: [0; 64],
        d: f16::ZERO,
        dmin: f16::ZERO,
    };
    let mut l = [0u8; QK_K];
    let mut mins = [0f32; QK_K / 16];
    let mut scales = [0f32; QK_K / 16];

    if LANES {
        // Two calls of eight lanes: sixteen at once spill registers here.
        for h in 0..2 {
            let mut xt = [F8::splat(0.0); 16];
            lanes::transpose_in(&x[128 * h..128 * h + 128], &mut xt);
            let w = xt.map(F8::abs);
            let mut lt = [I8::splat(0); 16];
            let (sc, m) =
                lanes::make_qkx_quants::<16, 8, false>(3, &xt, &w, &mut lt, -0.5, 0.1, 15, true);
            scales[8 * h..8 * h + 8].copy_from_slice(&sc.0);
            mins[8 * h..8 * h + 8].copy_from_slice(&m.0);
            lanes::transpose_out(&lt, &mut l[128 * h..128 * h + 128], |v| v as u8);
        }
    } else {
        let mut laux = [0u8; 16];
        let mut weights = [0f32; 16];
        for j in 0..QK_K / 16 {
            let xs = &x[16 * j..16 * j + 16];
            for (w, &xi) in weights.iter_mut().zip(xs) {
                *w = xi.abs();
            }
            let (s, m) = make_qkx2_quants(
                3,
                xs,
                &weights,
                &mut l[16 * j..16 * j + 16],
                &mut laux,
                -0.5,
                0.1,
                15,
                true,
            );
            scales[j] = s;
            mins[j] = m;
        }
    }
    let mut max_scale = 0.0f32;
    let mut max_min = 0.0f32;
    for j in 0..QK_K / 16 {
        if scales[j] > max_scale {
            max_scale = scales[j];
        }
        if mins[j] > max_min {
            max_min = mins[j];
        }
    }

    if max_scale > 0.0 {
        let iscale = Q4SCALE / max_scale;
        for j in 0..QK_K / 16 {
            y.scales[j] = nearest_int(iscale * scales[j]) as u8;
        }
        y.d = fp32_to_fp16(max_scale / Q4SCALE);
    } else {
        y.scales = [0; 16];
        y.d = fp32_to_fp16(0.0);
    }
    if max_min > 0.0 {
        let iscale = Q4SCALE / max_min;
        for j in 0..QK_K / 16 {
            let li = nearest_int(iscale * mins[j]);
            y.scales[j] |= (li << 4) as u8;
        }
        y.dmin = fp32_to_fp16(max_min / Q4SCALE);
    } else {
        y.dmin = fp32_to_fp16(0.0);
    }
    q2_k_requantize::<LANES>(x, &y, fp16_to_fp32(y.d), fp16_to_fp32(y.dmin), &mut l);
    pack_2bit(&l, &mut y.qs);
    y
}

/// The final pass of both Q2_K quantizers: every sub-block with a non-zero
/// scale is requantized against the stored (f16-rounded) scales.
#[inline(always)]
fn q2_k_requantize<const LANES: bool>(
    x: &[f32; QK_K],
    y: &BlockQ2K,
    dall: f32,
    dmin: f32,
    l: &mut [u8; QK_K],
) {
    for j in 0..QK_K / 16 {
        let d = dall * (y.scales[j] & 0xF) as f32;
        if d == 0.0 {
            continue;
        }
        let dm = dmin * (y.scales[j] >> 4) as f32;
        if LANES {
            let (xs, ls) = (&x[16 * j..16 * j + 16], &mut l[16 * j..16 * j + 16]);
            lanes::requantize(xs, Some(dm), d, 0, 3, ls, |v| v as u8);
            continue;
        }
        for ii in 0..16 {
            let li = nearest_int((x[16 * j + ii] + dm) / d);
            l[16 * j + ii] = clampi(li, 0, 3) as u8;
        }
    }
}

#[inline(always)]
fn q2_k_impl_block<const LANES: bool>(x: &[f32; QK_K], qw: &[f32; QK_K]) -> BlockQ2K {
    let mut y = BlockQ2K {
        scales: [0; 16],
        qs: [0; 64],
        d: f16::ZERO,
        dmin: f16::ZERO,
    };
    let mut l = [0u8; QK_K];
    let mut mins = [0f32; QK_K / 16];
    let mut scales = [0f32; QK_K / 16];
    let mut sw = [0f32; QK_K / 16];
    let mut ls = [0u8; QK_K / 16];
    let mut lm = [0u8; QK_K / 16];

    let mut sumx2 = 0.0f32;
    for &xi in x {
        sumx2 += xi * xi;
    }
    let sigma2 = sumx2 / QK_K as f32;
    if LANES {
        // Two calls of eight lanes: sixteen at once spill registers here.
        for h in 0..2 {
            let half = 128 * h..128 * h + 128;
            let (xt, w, sumw) = lanes::importance_in::<16, 8>(&x[half.clone()], &qw[half], sigma2);
            sw[8 * h..8 * h + 8].copy_from_slice(&sumw.0);
            let mut lt = [I8::splat(0); 16];
            let (sc, m) =
                lanes::make_qkx_quants::<16, 8, true>(3, &xt, &w, &mut lt, -0.9, 0.05, 36, false);
            scales[8 * h..8 * h + 8].copy_from_slice(&sc.0);
            mins[8 * h..8 * h + 8].copy_from_slice(&m.0);
            lanes::transpose_out(&lt, &mut l[128 * h..128 * h + 128], |v| v as u8);
        }
    } else {
        let mut laux = [0u8; 16];
        let mut weight = [0f32; 16];
        for j in 0..QK_K / 16 {
            let xs = &x[16 * j..16 * j + 16];
            let q = &qw[16 * j..16 * j + 16];
            for k in 0..16 {
                weight[k] = q[k] * (sigma2 + xs[k] * xs[k]).sqrt();
            }
            for &w in &weight {
                sw[j] += w;
            }
            let (s, m) = make_qkx3_quants(
                3,
                xs,
                &weight,
                &mut l[16 * j..16 * j + 16],
                &mut laux,
                -0.9,
                0.05,
                36,
                false,
            );
            scales[j] = s;
            mins[j] = m;
        }
    }

    let dm = make_qp_quants(15, &scales, &mut ls, &sw);
    let mm = make_qp_quants(15, &mins, &mut lm, &sw);
    y.d = fp32_to_fp16(dm);
    y.dmin = fp32_to_fp16(mm);
    let dm = fp16_to_fp32(y.d);
    let mm = fp16_to_fp32(y.dmin);
    for j in 0..QK_K / 16 {
        y.scales[j] = ls[j] | ((lm[j] as u32) << 4) as u8;
    }
    q2_k_requantize::<LANES>(x, &y, dm, mm, &mut l);
    pack_2bit(&l, &mut y.qs);
    y
}

impl KQuantize for BlockQ2K {
    const AVX512: (bool, bool) = (true, true);

    #[inline(always)]
    fn ref_block<const LANES: bool>(x: &[f32; QK_K]) -> Self {
        q2_k_ref_block::<LANES>(x)
    }
    #[inline(always)]
    fn impl_block<const LANES: bool>(x: &[f32; QK_K], qw: &[f32; QK_K]) -> Self {
        q2_k_impl_block::<LANES>(x, qw)
    }
}

/// ggml's `quantize_row_q2_K_ref`: `x.len()` must be a multiple of
/// [`QK_K`] and `y` must hold `x.len() / QK_K` blocks.
pub fn quantize_row_q2_k_ref(x: &[f32], y: &mut [BlockQ2K]) -> Result<(), QuantError> {
    quantize_row_ref(DType::Q2_K, x, y)
}

/// ggml's `quantize_q2_K`: quantizes `src` (rows of `n_per_row` elements,
/// a multiple of [`QK_K`]) into `dst` (`src.len() / QK_K` blocks). Without
/// `imatrix` this is the reference quantizer; with one (one non-negative
/// weight per column) ggml's importance-weighted `quantize_row_q2_K_impl`.
pub fn quantize_q2_k(
    src: &[f32],
    dst: &mut [BlockQ2K],
    n_per_row: usize,
    imatrix: Option<&[f32]>,
) -> Result<(), QuantError> {
    quantize_rows(
        crate::simd::level(),
        DType::Q2_K,
        src,
        dst,
        n_per_row,
        imatrix,
    )
}

/// ggml's `dequantize_row_q2_K`: `y.len()` must be `x.len() * QK_K`.
pub fn dequantize_row_q2_k(x: &[BlockQ2K], y: &mut [f32]) -> Result<(), QuantError> {
    check_dequant(x.len(), y.len())?;
    for (b, yb) in x.iter().zip(y.as_chunks_mut::<QK_K>().0) {
        dequantize_block_q2_k(b, yb);
    }
    Ok(())
}

/// [`dequantize_row_q2_k`] without the length check, compiled for AVX2 (no
/// FMA: the same operations, so the same floats).
///
/// # Safety
///
/// The CPU must support AVX2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
pub(crate) unsafe fn dequantize_row_q2_k_avx2(x: &[BlockQ2K], y: &mut [f32]) {
    for (b, yb) in x.iter().zip(y.as_chunks_mut::<QK_K>().0) {
        dequantize_block_q2_k(b, yb);
    }
}

/// One block of [`dequantize_row_q2_k`]: `y = d*(sc & 15)*q - dmin*(sc >> 4)`
/// in ggml's order (a multiply, then a separate subtract), written over
/// fixed runs of 16 so that an AVX2 instance (see [`crate::simd`])
/// vectorises it with the same operations.
#[inline(always)]
pub(crate) fn dequantize_block_q2_k(b: &BlockQ2K, yb: &mut [f32; QK_K]) {
    let d = fp16_to_fp32(b.d);
    let min = fp16_to_fp32(b.dmin);
    let dl = b.scales.map(|sc| d * (sc & 0xF) as f32);
    let ml = b.scales.map(|sc| min * (sc >> 4) as f32);
    let (runs, _) = yb.as_chunks_mut::<16>();
    let (qs, _) = b.qs.as_chunks::<32>();
    for (n, q) in qs.iter().enumerate() {
        for j in 0..4 {
            let shift = 2 * j;
            for half in 0..2 {
                let is = 8 * n + 2 * j + half;
                let (dl, ml) = (dl[is], ml[is]);
                let out = &mut runs[is];
                for l in 0..16 {
                    let qv = ((q[l + 16 * half] as i32) >> shift) & 3;
                    out[l] = dl * qv as f32 - ml;
                }
            }
        }
    }
}

// ====================================================================== Q3_K

#[inline(always)]
fn q3_k_finish<const LANES: bool>(
    x: &[f32; QK_K],
    mut y: BlockQ3K,
    l: &mut [i8; QK_K],
) -> BlockQ3K {
    let dall = fp16_to_fp32(y.d);
    for j in 0..QK_K / 16 {
        let sc = q3_scale_at(&y.scales, j);
        let d = dall * sc as f32;
        if d == 0.0 {
            continue;
        }
        if LANES {
            let (xs, ls) = (&x[16 * j..16 * j + 16], &mut l[16 * j..16 * j + 16]);
            lanes::requantize(xs, None, d, -4, 3, ls, |v| (v + 4) as i8);
            continue;
        }
        for ii in 0..16 {
            let li = clampi(nearest_int(x[16 * j + ii] / d), -4, 3);
            l[16 * j + ii] = (li + 4) as i8;
        }
    }

    // ggml's `if (L[j] > 3) { hmask[m] |= hm; L[j] -= 4; }` with `m` cycling
    // over 32 bytes and `hm` doubling each cycle, without the branch (which
    // mispredicts on half of the values).
    y.hmask = [0; QK_K / 8];
    for (i, lj) in l.iter_mut().enumerate() {
        let hi = u8::from(*lj > 3);
        y.hmask[i % (QK_K / 8)] |= hi << (i / (QK_K / 8));
        *lj -= 4 * hi as i8;
    }
    let mut lu = [0u8; QK_K];
    for (u, &s) in lu.iter_mut().zip(l.iter()) {
        *u = s as u8;
    }
    // ggml packs with `int8_t` values here; all are 0..=3 after the
    // high-bit split, except L values ggml leaves negative, which cannot
    // occur (make_q3_quants/make_qx_quants store 0..=7).
    pack_2bit(&lu, &mut y.qs);
    y
}

#[inline(always)]
fn q3_k_ref_block<const LANES: bool>(x: &[f32; QK_K]) -> BlockQ3K {
    let mut l = [0i8; QK_K];
    let mut scales = [0f32; QK_K / 16];
    if LANES {
        let mut xt = [F16::splat(0.0); 16];
        lanes::transpose_in(x, &mut xt);
        let mut lt = [I16::splat(0); 16];
        let sc = lanes::make_q3_quants(4, &xt, &mut lt);
        scales = sc.0;
        lanes::transpose_out(&lt, &mut l, |v| v as i8);
    } else {
        for j in 0..QK_K / 16 {
            scales[j] = make_q3_quants(
                4,
                &x[16 * j..16 * j + 16],
                &mut l[16 * j..16 * j + 16],
                true,
            );
        }
    }
    let mut max_scale = 0.0f32;
    let mut amax = 0.0f32;
    for j in 0..QK_K / 16 {
        let scale = scales[j].abs();
        if scale > amax {
            amax = scale;
            max_scale = scales[j];
        }
    }
    let mut y = BlockQ3K {
        hmask: [0; 32],
        qs: [0; 64],
        scales: [0; 12],
        d: f16::ZERO,
    };
    if max_scale != 0.0 {
        let iscale = -32.0f32 / max_scale;
        let mut ls = [0i32; 16];
        for j in 0..QK_K / 16 {
            let li = nearest_int(iscale * scales[j]) as i8 as i32;
            ls[j] = clampi(li, -32, 31) + 32;
        }
        y.scales = pack_q3_scales(&ls);
        y.d = fp32_to_fp16(1.0 / iscale);
    } else {
        y.d = fp32_to_fp16(0.0);
    }
    q3_k_finish::<LANES>(x, y, &mut l)
}

/// The per-group searches of [`q3_k_impl_block`], eight groups at a time.
#[inline(always)]
fn q3_k_impl_lanes(
    x: &[f32; QK_K],
    qw: &[f32; QK_K],
    sigma2: f32,
    l: &mut [i8; QK_K],
    scales: &mut [f32; QK_K / 16],
    sw: &mut [f32; QK_K / 16],
) {
    let (xt, w, sumw) = lanes::importance_in::<16, 16>(x, qw, sigma2);
    *sw = sumw.0;
    let mut lt = [I16::splat(0); 16];
    let sc = lanes::make_qx_quants(4, &xt, &w, &mut lt);
    *scales = sc.0;
    lanes::transpose_out(&lt, l, |v| v as i8);
}

#[inline(always)]
fn q3_k_impl_block<const LANES: bool>(x: &[f32; QK_K], qw: &[f32; QK_K]) -> BlockQ3K {
    let mut l = [0i8; QK_K];
    let mut scales = [0f32; QK_K / 16];
    let mut sw = [0f32; QK_K / 16];
    let mut ls = [0i8; QK_K / 16];

    let mut sumx2 = 0.0f32;
    for &xi in x {
        sumx2 += xi * xi;
    }
    let sigma2 = 2.0 * sumx2 / QK_K as f32;
    if LANES {
        q3_k_impl_lanes(x, qw, sigma2, &mut l, &mut scales, &mut sw);
    } else {
        let mut weight = [0f32; 16];
        for j in 0..QK_K / 16 {
            let xs = &x[16 * j..16 * j + 16];
            let q = &qw[16 * j..16 * j + 16];
            for k in 0..16 {
                weight[k] = q[k] * (sigma2 + xs[k] * xs[k]).sqrt();
            }
            let mut sumw = 0.0f32;
            for &w in &weight {
                sumw += w;
            }
            sw[j] = sumw;
            scales[j] = make_qx_quants(4, xs, &mut l[16 * j..16 * j + 16], 1, Some(&weight));
        }
    }

    let d_block = make_qx_quants(32, &scales, &mut ls, 1, Some(&sw));
    let mut lsi = [0i32; 16];
    for (o, &v) in lsi.iter_mut().zip(ls.iter()) {
        *o = v as i32;
    }
    let y = BlockQ3K {
        hmask: [0; 32],
        qs: [0; 64],
        scales: pack_q3_scales(&lsi),
        d: fp32_to_fp16(d_block),
    };
    q3_k_finish::<LANES>(x, y, &mut l)
}

impl KQuantize for BlockQ3K {
    #[inline(always)]
    fn ref_block<const LANES: bool>(x: &[f32; QK_K]) -> Self {
        q3_k_ref_block::<LANES>(x)
    }
    #[inline(always)]
    fn impl_block<const LANES: bool>(x: &[f32; QK_K], qw: &[f32; QK_K]) -> Self {
        q3_k_impl_block::<LANES>(x, qw)
    }
}

/// ggml's `quantize_row_q3_K_ref`: `x.len()` must be a multiple of
/// [`QK_K`] and `y` must hold `x.len() / QK_K` blocks.
pub fn quantize_row_q3_k_ref(x: &[f32], y: &mut [BlockQ3K]) -> Result<(), QuantError> {
    quantize_row_ref(DType::Q3_K, x, y)
}

/// ggml's `quantize_q3_K`: the reference quantizer without `imatrix`, the
/// importance-weighted `quantize_row_q3_K_impl` with one (see
/// [`quantize_q2_k`] for the shapes).
pub fn quantize_q3_k(
    src: &[f32],
    dst: &mut [BlockQ3K],
    n_per_row: usize,
    imatrix: Option<&[f32]>,
) -> Result<(), QuantError> {
    quantize_rows(
        crate::simd::level(),
        DType::Q3_K,
        src,
        dst,
        n_per_row,
        imatrix,
    )
}

/// ggml's `dequantize_row_q3_K`: `y.len()` must be `x.len() * QK_K`.
pub fn dequantize_row_q3_k(x: &[BlockQ3K], y: &mut [f32]) -> Result<(), QuantError> {
    check_dequant(x.len(), y.len())?;
    for (b, yb) in x.iter().zip(y.as_chunks_mut::<QK_K>().0) {
        dequantize_block_q3_k(b, yb);
    }
    Ok(())
}

/// [`dequantize_row_q3_k`] without the length check, compiled for AVX2.
///
/// # Safety
///
/// The CPU must support AVX2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
pub(crate) unsafe fn dequantize_row_q3_k_avx2(x: &[BlockQ3K], y: &mut [f32]) {
    for (b, yb) in x.iter().zip(y.as_chunks_mut::<QK_K>().0) {
        dequantize_block_q3_k(b, yb);
    }
}

/// One block of [`dequantize_row_q3_k`]: `y = d*(sc - 32)*(q - (hbit ? 0 :
/// 4))` as ggml computes it, over fixed runs of 16 (see
/// [`dequantize_block_q2_k`]).
#[inline(always)]
pub(crate) fn dequantize_block_q3_k(b: &BlockQ3K, yb: &mut [f32; QK_K]) {
    let d_all = fp16_to_fp32(b.d);
    let scales = q3_scales_decode(&b.scales);
    let (runs, _) = yb.as_chunks_mut::<16>();
    let (qs, _) = b.qs.as_chunks::<32>();
    for (n, q) in qs.iter().enumerate() {
        for j in 0..4 {
            let shift = 2 * j;
            let m = 1u8 << (4 * n + j);
            for half in 0..2 {
                let is = 8 * n + 2 * j + half;
                let dl = d_all * (scales[is] as i32 - 32) as f32;
                let out = &mut runs[is];
                for l in 0..16 {
                    let k = l + 16 * half;
                    let qv = ((q[k] >> shift) & 3) as i32;
                    let h = if b.hmask[k] & m != 0 { 0 } else { 4 };
                    out[l] = dl * (qv - h) as f32;
                }
            }
        }
    }
}

// ============================================================== Q4_K and Q5_K

/// The final pass shared by Q4_K and Q5_K: requantize each sub-block of 32
/// against the stored scales, `L` in `0..=nmax`.
#[inline(always)]
fn k4_requantize<const LANES: bool>(
    x: &[f32; QK_K],
    scales: &[u8; 12],
    d: f16,
    dmin: f16,
    nmax: i32,
    l: &mut [u8; QK_K],
) {
    for j in 0..QK_K / 32 {
        let (sc, m) = get_scale_min_k4(j, scales);
        let dd = fp16_to_fp32(d) * sc as f32;
        if dd == 0.0 {
            continue;
        }
        let dm = fp16_to_fp32(dmin) * m as f32;
        if LANES {
            let (xs, ls) = (&x[32 * j..32 * j + 32], &mut l[32 * j..32 * j + 32]);
            lanes::requantize(xs, Some(dm), dd, 0, nmax, ls, |v| v as u8);
            continue;
        }
        for ii in 0..32 {
            let li = nearest_int((x[32 * j + ii] + dm) / dd);
            l[32 * j + ii] = clampi(li, 0, nmax) as u8;
        }
    }
}

/// Reference search shared by Q4_K (`nmax` 15) and Q5_K (`nmax` 31):
/// returns `(scales, d, dmin, L)`.
#[inline(always)]
fn k4_ref_search<const LANES: bool>(
    x: &[f32; QK_K],
    nmax: i32,
    rmin: f32,
    rdelta: f32,
    nstep: i32,
) -> ([u8; 12], f16, f16, [u8; QK_K]) {
    let mut l = [0u8; QK_K];
    let mut mins = [0f32; QK_K / 32];
    let mut scales = [0f32; QK_K / 32];
    if LANES {
        let mut xt = [F8::splat(0.0); 32];
        lanes::transpose_in(x, &mut xt);
        let mut sum_x2 = F8::splat(0.0);
        for xi in &xt {
            sum_x2 = sum_x2.add(xi.mul(*xi));
        }
        let av_x = sum_x2.div(F8::splat(32.0)).sqrt();
        let w = xt.map(|xi| av_x.add(xi.abs()));
        let mut lt = [I8::splat(0); 32];
        let (sc, m) = lanes::make_qkx_quants::<32, 8, false>(
            nmax, &xt, &w, &mut lt, rmin, rdelta, nstep, false,
        );
        scales = sc.0;
        mins = m.0;
        lanes::transpose_out(&lt, &mut l, |v| v as u8);
    } else {
        let mut laux = [0u8; 32];
        let mut weights = [0f32; 32];
        for j in 0..QK_K / 32 {
            let xs = &x[32 * j..32 * j + 32];
            let mut sum_x2 = 0.0f32;
            for &xi in xs {
                sum_x2 += xi * xi;
            }
            let av_x = (sum_x2 / 32.0).sqrt();
            for (w, &xi) in weights.iter_mut().zip(xs) {
                *w = av_x + xi.abs();
            }
            let (s, m) = make_qkx2_quants(
                nmax,
                xs,
                &weights,
                &mut l[32 * j..32 * j + 32],
                &mut laux,
                rmin,
                rdelta,
                nstep,
                false,
            );
            scales[j] = s;
            mins[j] = m;
        }
    }
    let mut max_scale = 0.0f32;
    let mut max_min = 0.0f32;
    for j in 0..QK_K / 32 {
        if scales[j] > max_scale {
            max_scale = scales[j];
        }
        if mins[j] > max_min {
            max_min = mins[j];
        }
    }
    let inv_scale = if max_scale > 0.0 {
        63.0 / max_scale
    } else {
        0.0
    };
    let inv_min = if max_min > 0.0 { 63.0 / max_min } else { 0.0 };
    let mut ls = [0u8; 8];
    let mut lm = [0u8; 8];
    for j in 0..QK_K / 32 {
        let a = nearest_int(inv_scale * scales[j]) as u8;
        let b = nearest_int(inv_min * mins[j]) as u8;
        ls[j] = a.min(63);
        lm[j] = b.min(63);
    }
    let packed = pack_scale_min_k4(&ls, &lm);
    let d = fp32_to_fp16(max_scale / 63.0);
    let dmin = fp32_to_fp16(max_min / 63.0);
    k4_requantize::<LANES>(x, &packed, d, dmin, nmax, &mut l);
    (packed, d, dmin, l)
}

/// Importance-weighted search shared by Q4_K and Q5_K (`clamp63` is Q5_K's
/// extra `MIN(63, ·)` on the packed scales).
#[inline(always)]
fn k4_impl_search<const LANES: bool>(
    x: &[f32; QK_K],
    qw: &[f32; QK_K],
    nmax: i32,
    clamp63: bool,
) -> ([u8; 12], f16, f16, [u8; QK_K]) {
    let mut l = [0u8; QK_K];
    let mut ls = [0u8; 8];
    let mut lm = [0u8; 8];
    let mut sw = [0f32; 8];
    let mut mins = [0f32; 8];
    let mut scales = [0f32; 8];

    let mut sum_x2 = 0.0f32;
    for &xi in x {
        sum_x2 += xi * xi;
    }
    let sigma2 = 2.0 * sum_x2 / QK_K as f32;
    if LANES {
        let (xt, w, sumw) = lanes::importance_in::<32, 8>(x, qw, sigma2);
        sw = sumw.0;
        let mut lt = [I8::splat(0); 32];
        let (sc, m) =
            lanes::make_qkx_quants::<32, 8, true>(nmax, &xt, &w, &mut lt, -0.9, 0.05, 36, false);
        scales = sc.0;
        mins = m.0;
        lanes::transpose_out(&lt, &mut l, |v| v as u8);
    } else {
        let mut laux = [0u8; 32];
        let mut weights = [0f32; 32];
        for j in 0..QK_K / 32 {
            let xs = &x[32 * j..32 * j + 32];
            let q = &qw[32 * j..32 * j + 32];
            for k in 0..32 {
                weights[k] = q[k] * (sigma2 + xs[k] * xs[k]).sqrt();
            }
            let mut sumw = 0.0f32;
            for &w in &weights {
                sumw += w;
            }
            sw[j] = sumw;
            let (s, m) = make_qkx3_quants(
                nmax,
                xs,
                &weights,
                &mut l[32 * j..32 * j + 32],
                &mut laux,
                -0.9,
                0.05,
                36,
                false,
            );
            scales[j] = s;
            mins[j] = m;
        }
    }
    let d_block = make_qp_quants(63, &scales, &mut ls, &sw);
    let m_block = make_qp_quants(63, &mins, &mut lm, &sw);
    if clamp63 {
        for v in ls.iter_mut().chain(lm.iter_mut()) {
            *v = (*v).min(63);
        }
    }
    let packed = pack_scale_min_k4(&ls, &lm);
    let d = fp32_to_fp16(d_block);
    let dmin = fp32_to_fp16(m_block);
    k4_requantize::<LANES>(x, &packed, d, dmin, nmax, &mut l);
    (packed, d, dmin, l)
}

fn q4_k_pack(scales: [u8; 12], d: f16, dmin: f16, l: &[u8; QK_K]) -> BlockQ4K {
    let mut y = BlockQ4K {
        d,
        dmin,
        scales,
        qs: [0; 128],
    };
    for (c, j) in (0..QK_K).step_by(64).enumerate() {
        for k in 0..32 {
            y.qs[32 * c + k] = l[j + k] | (l[j + k + 32] << 4);
        }
    }
    y
}

#[inline(always)]
fn q4_k_ref_block<const LANES: bool>(x: &[f32; QK_K]) -> BlockQ4K {
    let (s, d, dmin, l) = k4_ref_search::<LANES>(x, 15, -1.0, 0.1, 20);
    q4_k_pack(s, d, dmin, &l)
}

#[inline(always)]
fn q4_k_impl_block<const LANES: bool>(x: &[f32; QK_K], qw: &[f32; QK_K]) -> BlockQ4K {
    let (s, d, dmin, l) = k4_impl_search::<LANES>(x, qw, 15, false);
    q4_k_pack(s, d, dmin, &l)
}

impl KQuantize for BlockQ4K {
    const AVX512: (bool, bool) = (true, false);

    #[inline(always)]
    fn ref_block<const LANES: bool>(x: &[f32; QK_K]) -> Self {
        q4_k_ref_block::<LANES>(x)
    }
    #[inline(always)]
    fn impl_block<const LANES: bool>(x: &[f32; QK_K], qw: &[f32; QK_K]) -> Self {
        q4_k_impl_block::<LANES>(x, qw)
    }
}

/// ggml's `quantize_row_q4_K_ref`: `x.len()` must be a multiple of
/// [`QK_K`] and `y` must hold `x.len() / QK_K` blocks.
pub fn quantize_row_q4_k_ref(x: &[f32], y: &mut [BlockQ4K]) -> Result<(), QuantError> {
    quantize_row_ref(DType::Q4_K, x, y)
}

/// ggml's `quantize_q4_K`: the reference quantizer without `imatrix`, the
/// importance-weighted `quantize_row_q4_K_impl` with one (see
/// [`quantize_q2_k`] for the shapes).
pub fn quantize_q4_k(
    src: &[f32],
    dst: &mut [BlockQ4K],
    n_per_row: usize,
    imatrix: Option<&[f32]>,
) -> Result<(), QuantError> {
    quantize_rows(
        crate::simd::level(),
        DType::Q4_K,
        src,
        dst,
        n_per_row,
        imatrix,
    )
}

/// ggml's `dequantize_row_q4_K`: `y.len()` must be `x.len() * QK_K`.
pub fn dequantize_row_q4_k(x: &[BlockQ4K], y: &mut [f32]) -> Result<(), QuantError> {
    check_dequant(x.len(), y.len())?;
    for (b, yb) in x.iter().zip(y.chunks_exact_mut(QK_K)) {
        let d = fp16_to_fp32(b.d);
        let min = fp16_to_fp32(b.dmin);
        for c in 0..QK_K / 64 {
            let q = &b.qs[32 * c..32 * c + 32];
            let (sc, m) = get_scale_min_k4(2 * c, &b.scales);
            let d1 = d * sc as f32;
            let m1 = min * m as f32;
            let (sc, m) = get_scale_min_k4(2 * c + 1, &b.scales);
            let d2 = d * sc as f32;
            let m2 = min * m as f32;
            let out = &mut yb[64 * c..64 * c + 64];
            for l in 0..32 {
                out[l] = d1 * (q[l] & 0xF) as f32 - m1;
            }
            for l in 0..32 {
                out[32 + l] = d2 * (q[l] >> 4) as f32 - m2;
            }
        }
    }
    Ok(())
}

fn q5_k_pack(scales: [u8; 12], d: f16, dmin: f16, l: &[u8; QK_K]) -> BlockQ5K {
    let mut y = BlockQ5K {
        d,
        dmin,
        scales,
        qh: [0; 32],
        qs: [0; 128],
    };
    let mut m1 = 1u8;
    let mut m2 = 2u8;
    for (c, n) in (0..QK_K).step_by(64).enumerate() {
        for j in 0..32 {
            // ggml's `if (l > 15) { l -= 16; qh |= m; }`, branch-free.
            let (l1, l2) = (l[n + j], l[n + j + 32]);
            let (h1, h2) = (u8::from(l1 > 15), u8::from(l2 > 15));
            y.qh[j] |= (m1 * h1) | (m2 * h2);
            y.qs[32 * c + j] = (l1 - 16 * h1) | ((l2 - 16 * h2) << 4);
        }
        m1 = m1.wrapping_shl(2);
        m2 = m2.wrapping_shl(2);
    }
    y
}

#[inline(always)]
fn q5_k_ref_block<const LANES: bool>(x: &[f32; QK_K]) -> BlockQ5K {
    let (s, d, dmin, l) = k4_ref_search::<LANES>(x, 31, -0.5, 0.1, 15);
    q5_k_pack(s, d, dmin, &l)
}

#[inline(always)]
fn q5_k_impl_block<const LANES: bool>(x: &[f32; QK_K], qw: &[f32; QK_K]) -> BlockQ5K {
    let (s, d, dmin, l) = k4_impl_search::<LANES>(x, qw, 31, true);
    q5_k_pack(s, d, dmin, &l)
}

impl KQuantize for BlockQ5K {
    const AVX512: (bool, bool) = (true, false);

    #[inline(always)]
    fn ref_block<const LANES: bool>(x: &[f32; QK_K]) -> Self {
        q5_k_ref_block::<LANES>(x)
    }
    #[inline(always)]
    fn impl_block<const LANES: bool>(x: &[f32; QK_K], qw: &[f32; QK_K]) -> Self {
        q5_k_impl_block::<LANES>(x, qw)
    }
}

/// ggml's `quantize_row_q5_K_ref`: `x.len()` must be a multiple of
/// [`QK_K`] and `y` must hold `x.len() / QK_K` blocks.
pub fn quantize_row_q5_k_ref(x: &[f32], y: &mut [BlockQ5K]) -> Result<(), QuantError> {
    quantize_row_ref(DType::Q5_K, x, y)
}

/// ggml's `quantize_q5_K`: the reference quantizer without `imatrix`, the
/// importance-weighted `quantize_row_q5_K_impl` with one (see
/// [`quantize_q2_k`] for the shapes).
pub fn quantize_q5_k(
    src: &[f32],
    dst: &mut [BlockQ5K],
    n_per_row: usize,
    imatrix: Option<&[f32]>,
) -> Result<(), QuantError> {
    quantize_rows(
        crate::simd::level(),
        DType::Q5_K,
        src,
        dst,
        n_per_row,
        imatrix,
    )
}

/// ggml's `dequantize_row_q5_K`: `y.len()` must be `x.len() * QK_K`.
pub fn dequantize_row_q5_k(x: &[BlockQ5K], y: &mut [f32]) -> Result<(), QuantError> {
    check_dequant(x.len(), y.len())?;
    for (b, yb) in x.iter().zip(y.chunks_exact_mut(QK_K)) {
        let d = fp16_to_fp32(b.d);
        let min = fp16_to_fp32(b.dmin);
        let mut u1 = 1u8;
        let mut u2 = 2u8;
        for c in 0..QK_K / 64 {
            let ql = &b.qs[32 * c..32 * c + 32];
            let (sc, m) = get_scale_min_k4(2 * c, &b.scales);
            let d1 = d * sc as f32;
            let m1 = min * m as f32;
            let (sc, m) = get_scale_min_k4(2 * c + 1, &b.scales);
            let d2 = d * sc as f32;
            let m2 = min * m as f32;
            let out = &mut yb[64 * c..64 * c + 64];
            for l in 0..32 {
                let h = if b.qh[l] & u1 != 0 { 16 } else { 0 };
                out[l] = d1 * ((ql[l] & 0xF) as i32 + h) as f32 - m1;
            }
            for l in 0..32 {
                let h = if b.qh[l] & u2 != 0 { 16 } else { 0 };
                out[32 + l] = d2 * ((ql[l] >> 4) as i32 + h) as f32 - m2;
            }
            u1 = u1.wrapping_shl(2);
            u2 = u2.wrapping_shl(2);
        }
    }
    Ok(())
}

// ====================================================================== Q6_K

#[inline(always)]
fn q6_k_block<const LANES: bool>(x: &[f32; QK_K], qw: Option<&[f32; QK_K]>) -> BlockQ6K {
    let mut l = [0i8; QK_K];
    let mut scales = [0f32; QK_K / 16];
    if LANES {
        let mut xt = [F16::splat(0.0); 16];
        lanes::transpose_in(x, &mut xt);
        let mut w = xt.map(|v| v.mul(v));
        if let Some(q) = qw {
            lanes::transpose_in(q, &mut w);
        }
        let mut lt = [I16::splat(0); 16];
        let sc = lanes::make_qx_quants(32, &xt, &w, &mut lt);
        scales = sc.0;
        lanes::transpose_out(&lt, &mut l, |v| v as i8);
    } else {
        for ib in 0..QK_K / 16 {
            let w = qw.map(|q| &q[16 * ib..16 * ib + 16]);
            scales[ib] = make_qx_quants(
                32,
                &x[16 * ib..16 * ib + 16],
                &mut l[16 * ib..16 * ib + 16],
                1,
                w,
            );
        }
    }
    let mut max_scale = 0.0f32;
    let mut max_abs_scale = 0.0f32;
    for ib in 0..QK_K / 16 {
        let scale = scales[ib];
        let abs_scale = scale.abs();
        if abs_scale > max_abs_scale {
            max_abs_scale = abs_scale;
            max_scale = scale;
        }
    }
    let mut y = BlockQ6K {
        ql: [0; 128],
        qh: [0; 64],
        scales: [0; 16],
        d: f16::ZERO,
    };
    if max_abs_scale < GROUP_MAX_EPS {
        y.d = fp32_to_fp16(0.0);
        return y;
    }
    let iscale = -128.0f32 / max_scale;
    y.d = fp32_to_fp16(1.0 / iscale);
    for ib in 0..QK_K / 16 {
        let v = nearest_int(iscale * scales[ib]);
        y.scales[ib] = (if 127 < v { 127 } else { v }) as i8;
    }
    let dall = fp16_to_fp32(y.d);
    for j in 0..QK_K / 16 {
        let d = dall * y.scales[j] as f32;
        if d == 0.0 {
            continue;
        }
        if LANES {
            let (xs, ls) = (&x[16 * j..16 * j + 16], &mut l[16 * j..16 * j + 16]);
            lanes::requantize(xs, None, d, -32, 31, ls, |v| (v + 32) as i8);
            continue;
        }
        for ii in 0..16 {
            let li = clampi(nearest_int(x[16 * j + ii] / d), -32, 31);
            l[16 * j + ii] = (li + 32) as i8;
        }
    }
    for (c, j) in (0..QK_K).step_by(128).enumerate() {
        let ql = &mut y.ql[64 * c..64 * c + 64];
        let qh = &mut y.qh[32 * c..32 * c + 32];
        for k in 0..32 {
            let l0 = l[j + k] as u8;
            let l1 = l[j + k + 32] as u8;
            let l2 = l[j + k + 64] as u8;
            let l3 = l[j + k + 96] as u8;
            ql[k] = (l0 & 0xF) | ((l2 & 0xF) << 4);
            ql[k + 32] = (l1 & 0xF) | ((l3 & 0xF) << 4);
            qh[k] = (l0 >> 4) | ((l1 >> 4) << 2) | ((l2 >> 4) << 4) | ((l3 >> 4) << 6);
        }
    }
    y
}

impl KQuantize for BlockQ6K {
    #[inline(always)]
    fn ref_block<const LANES: bool>(x: &[f32; QK_K]) -> Self {
        q6_k_block::<LANES>(x, None)
    }
    #[inline(always)]
    fn impl_block<const LANES: bool>(x: &[f32; QK_K], qw: &[f32; QK_K]) -> Self {
        q6_k_block::<LANES>(x, Some(qw))
    }
}

/// ggml's `quantize_row_q6_K_ref`: `x.len()` must be a multiple of
/// [`QK_K`] and `y` must hold `x.len() / QK_K` blocks.
pub fn quantize_row_q6_k_ref(x: &[f32], y: &mut [BlockQ6K]) -> Result<(), QuantError> {
    quantize_row_ref(DType::Q6_K, x, y)
}

/// ggml's `quantize_q6_K`: the reference quantizer without `imatrix`, the
/// importance-weighted `quantize_row_q6_K_impl` with one (see
/// [`quantize_q2_k`] for the shapes).
pub fn quantize_q6_k(
    src: &[f32],
    dst: &mut [BlockQ6K],
    n_per_row: usize,
    imatrix: Option<&[f32]>,
) -> Result<(), QuantError> {
    quantize_rows(
        crate::simd::level(),
        DType::Q6_K,
        src,
        dst,
        n_per_row,
        imatrix,
    )
}

/// ggml's `dequantize_row_q6_K`: `y.len()` must be `x.len() * QK_K`.
pub fn dequantize_row_q6_k(x: &[BlockQ6K], y: &mut [f32]) -> Result<(), QuantError> {
    check_dequant(x.len(), y.len())?;
    for (b, yb) in x.iter().zip(y.chunks_exact_mut(QK_K)) {
        let d = fp16_to_fp32(b.d);
        for c in 0..QK_K / 128 {
            let ql = &b.ql[64 * c..64 * c + 64];
            let qh = &b.qh[32 * c..32 * c + 32];
            let sc = &b.scales[8 * c..8 * c + 8];
            let out = &mut yb[128 * c..128 * c + 128];
            for l in 0..32 {
                let is = l / 16;
                let q1 = ((ql[l] & 0xF) | ((qh[l] & 3) << 4)) as i32 - 32;
                let q2 = ((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) as i32 - 32;
                let q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) as i32 - 32;
                let q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) as i32 - 32;
                out[l] = d * sc[is] as f32 * q1 as f32;
                out[l + 32] = d * sc[is + 2] as f32 * q2 as f32;
                out[l + 64] = d * sc[is + 4] as f32 * q3 as f32;
                out[l + 96] = d * sc[is + 6] as f32 * q4 as f32;
            }
        }
    }
    Ok(())
}

// ====================================================================== Q8_K

fn q8_k_block(x: &[f32; QK_K]) -> BlockQ8K {
    let mut y = BlockQ8K {
        d: 0.0,
        qs: [0; QK_K],
        bsums: [0; 16],
    };
    let mut max = 0.0f32;
    let mut amax = 0.0f32;
    for &xj in x {
        let ax = xj.abs();
        if ax > amax {
            amax = ax;
            max = xj;
        }
    }
    if amax == 0.0 {
        return y;
    }
    let iscale = -127.0f32 / max;
    for (q, &xj) in y.qs.iter_mut().zip(x) {
        let v = nearest_int(iscale * xj);
        *q = (if 127 < v { 127 } else { v }) as i8;
    }
    for j in 0..QK_K / 16 {
        let mut sum = 0i32;
        for &q in &y.qs[16 * j..16 * j + 16] {
            sum += q as i32;
        }
        y.bsums[j] = sum as i16;
    }
    y.d = 1.0 / iscale;
    y
}

/// ggml's `quantize_row_q8_K_ref`: `x.len()` must be a multiple of
/// [`QK_K`] and `y` must hold `x.len() / QK_K` blocks. (ggml leaves `bsums`
/// unwritten for an all-zero block; they are zero here.)
pub fn quantize_row_q8_k_ref(x: &[f32], y: &mut [BlockQ8K]) -> Result<(), QuantError> {
    check_row(DType::Q8_K, x.len(), y.len(), "quantize destination")?;
    check_finite(x)?;
    for (xb, yb) in x.as_chunks::<QK_K>().0.iter().zip(y.iter_mut()) {
        *yb = q8_k_block(xb);
    }
    Ok(())
}

/// ggml's `dequantize_row_q8_K`: `y.len()` must be `x.len() * QK_K`.
pub fn dequantize_row_q8_k(x: &[BlockQ8K], y: &mut [f32]) -> Result<(), QuantError> {
    check_dequant(x.len(), y.len())?;
    for (b, yb) in x.iter().zip(y.chunks_exact_mut(QK_K)) {
        for (o, &q) in yb.iter_mut().zip(b.qs.iter()) {
            *o = b.d * q as f32;
        }
    }
    Ok(())
}

// ============================================================== dot products

/// ggml's `ggml_vec_dot_q2_K_q8_K_generic`: the dot product of a Q2_K row
/// and a Q8_K row of the same number of blocks.
pub fn vec_dot_q2_k_q8_k(x: &[BlockQ2K], y: &[BlockQ8K]) -> Result<f32, QuantError> {
    check_dot(x.len(), y.len())?;
    let mut sumf = 0.0f32;
    for (xb, yb) in x.iter().zip(y) {
        let sc = &xb.scales;
        let mut summs = 0i32;
        for j in 0..16 {
            summs += yb.bsums[j] as i32 * (sc[j] >> 4) as i32;
        }
        let dall = yb.d * fp16_to_fp32(xb.d);
        let dmin = yb.d * fp16_to_fp32(xb.dmin);
        let mut isum = 0i32;
        let mut is = 0;
        let mut q8o = 0;
        for k in 0..QK_K / 128 {
            let q2 = &xb.qs[32 * k..32 * k + 32];
            let mut shift = 0;
            for _j in 0..4 {
                let q8 = &yb.qs[q8o..q8o + 32];
                let d = (sc[is] & 0xF) as i32;
                is += 1;
                let mut isuml = 0i32;
                for l in 0..16 {
                    isuml += q8[l] as i32 * ((q2[l] >> shift) & 3) as i32;
                }
                isum += d * isuml;
                let d = (sc[is] & 0xF) as i32;
                is += 1;
                isuml = 0;
                for l in 16..32 {
                    isuml += q8[l] as i32 * ((q2[l] >> shift) & 3) as i32;
                }
                isum += d * isuml;
                shift += 2;
                q8o += 32;
            }
        }
        sumf += dall * isum as f32 - dmin * summs as f32;
    }
    Ok(sumf)
}

/// Accumulates `aux32[l] += scale * (q8[l] * a[l])` over groups of eight, as
/// the generic k-quant dot products do (the `int16_t aux16` products fit).
#[inline]
fn acc8(aux32: &mut [i32; 8], scale: i32, q8: &[i8], a: &[i8]) {
    for l in 0..8 {
        let aux16 = (q8[l] as i32 * a[l] as i32) as i16;
        aux32[l] += scale * aux16 as i32;
    }
}

/// ggml's `ggml_vec_dot_q3_K_q8_K_generic`.
pub fn vec_dot_q3_k_q8_k(x: &[BlockQ3K], y: &[BlockQ8K]) -> Result<f32, QuantError> {
    check_dot(x.len(), y.len())?;
    let mut sums = [0f32; 8];
    let mut aux8 = [0i8; QK_K];
    for (xb, yb) in x.iter().zip(y) {
        let mut aux32 = [0i32; 8];
        let mut a = 0;
        let mut m = 1u8;
        for j in (0..QK_K).step_by(128) {
            let q3 = &xb.qs[j / 4..j / 4 + 32];
            for shift in [0u32, 2, 4, 6] {
                for l in 0..32 {
                    let v = ((q3[l] >> shift) & 3) as i8;
                    aux8[a + l] = v - if xb.hmask[l] & m != 0 { 0 } else { 4 };
                }
                a += 32;
                m = m.wrapping_shl(1);
            }
        }
        let scales = q3_scales_decode(&xb.scales);
        for j in 0..QK_K / 16 {
            let s = scales[j] as i32 - 32;
            acc8(
                &mut aux32,
                s,
                &yb.qs[16 * j..16 * j + 8],
                &aux8[16 * j..16 * j + 8],
            );
            acc8(
                &mut aux32,
                s,
                &yb.qs[16 * j + 8..16 * j + 16],
                &aux8[16 * j + 8..16 * j + 16],
            );
        }
        let d = fp16_to_fp32(xb.d) * yb.d;
        for l in 0..8 {
            sums[l] += d * aux32[l] as f32;
        }
    }
    let mut sumf = 0.0f32;
    for s in sums {
        sumf += s;
    }
    Ok(sumf)
}

/// The `utmp` scale/min unpacking of the generic Q4_K/Q5_K dot products.
#[inline]
fn k4_scales_mins(s: &[u8; 12]) -> ([u8; 8], [u8; 8]) {
    const KMASK1: u32 = 0x3f3f_3f3f;
    const KMASK2: u32 = 0x0f0f_0f0f;
    const KMASK3: u32 = 0x0303_0303;
    let mut utmp = [
        u32::from_le_bytes([s[0], s[1], s[2], s[3]]),
        u32::from_le_bytes([s[4], s[5], s[6], s[7]]),
        u32::from_le_bytes([s[8], s[9], s[10], s[11]]),
        0,
    ];
    utmp[3] = ((utmp[2] >> 4) & KMASK2) | (((utmp[1] >> 6) & KMASK3) << 4);
    let uaux = utmp[1] & KMASK1;
    utmp[1] = (utmp[2] & KMASK2) | (((utmp[0] >> 6) & KMASK3) << 4);
    utmp[2] = uaux;
    utmp[0] &= KMASK1;
    let mut sc = [0u8; 8];
    let mut mn = [0u8; 8];
    sc[..4].copy_from_slice(&utmp[0].to_le_bytes());
    sc[4..].copy_from_slice(&utmp[1].to_le_bytes());
    mn[..4].copy_from_slice(&utmp[2].to_le_bytes());
    mn[4..].copy_from_slice(&utmp[3].to_le_bytes());
    (sc, mn)
}

/// The common tail of the Q4_K/Q5_K generic dot products, given the 256
/// unsigned quants `aux8` of one block.
fn k4_dot_block(
    aux8: &[i8; QK_K],
    scales12: &[u8; 12],
    d: f16,
    dmin: f16,
    yb: &BlockQ8K,
    sums: &mut [f32; 8],
    sumf: &mut f32,
) {
    let (scales, mins) = k4_scales_mins(scales12);
    let mut sumi = 0i32;
    for j in 0..QK_K / 16 {
        sumi += yb.bsums[j] as i32 * mins[j / 2] as i32;
    }
    let mut aux32 = [0i32; 8];
    for j in 0..QK_K / 32 {
        let scale = scales[j] as i32;
        for g in 0..4 {
            let o = 32 * j + 8 * g;
            acc8(&mut aux32, scale, &yb.qs[o..o + 8], &aux8[o..o + 8]);
        }
    }
    let d = fp16_to_fp32(d) * yb.d;
    for l in 0..8 {
        sums[l] += d * aux32[l] as f32;
    }
    let dmin = fp16_to_fp32(dmin) * yb.d;
    *sumf -= dmin * sumi as f32;
}

/// ggml's `ggml_vec_dot_q4_K_q8_K_generic`.
pub fn vec_dot_q4_k_q8_k(x: &[BlockQ4K], y: &[BlockQ8K]) -> Result<f32, QuantError> {
    check_dot(x.len(), y.len())?;
    let mut sums = [0f32; 8];
    let mut sumf = 0.0f32;
    let mut aux8 = [0i8; QK_K];
    for (xb, yb) in x.iter().zip(y) {
        for j in 0..QK_K / 64 {
            let q4 = &xb.qs[32 * j..32 * j + 32];
            for l in 0..32 {
                aux8[64 * j + l] = (q4[l] & 0xF) as i8;
                aux8[64 * j + 32 + l] = (q4[l] >> 4) as i8;
            }
        }
        k4_dot_block(&aux8, &xb.scales, xb.d, xb.dmin, yb, &mut sums, &mut sumf);
    }
    for s in sums {
        sumf += s;
    }
    Ok(sumf)
}

/// ggml's `ggml_vec_dot_q5_K_q8_K_generic`.
pub fn vec_dot_q5_k_q8_k(x: &[BlockQ5K], y: &[BlockQ8K]) -> Result<f32, QuantError> {
    check_dot(x.len(), y.len())?;
    let mut sums = [0f32; 8];
    let mut sumf = 0.0f32;
    let mut aux8 = [0i8; QK_K];
    for (xb, yb) in x.iter().zip(y) {
        let mut m = 1u8;
        for j in 0..QK_K / 64 {
            let q4 = &xb.qs[32 * j..32 * j + 32];
            for l in 0..32 {
                let h = if xb.qh[l] & m != 0 { 16 } else { 0 };
                aux8[64 * j + l] = (q4[l] & 0xF) as i8 + h;
            }
            m = m.wrapping_shl(1);
            for l in 0..32 {
                let h = if xb.qh[l] & m != 0 { 16 } else { 0 };
                aux8[64 * j + 32 + l] = (q4[l] >> 4) as i8 + h;
            }
            m = m.wrapping_shl(1);
        }
        k4_dot_block(&aux8, &xb.scales, xb.d, xb.dmin, yb, &mut sums, &mut sumf);
    }
    for s in sums {
        sumf += s;
    }
    Ok(sumf)
}

/// ggml's `ggml_vec_dot_q6_K_q8_K` as llama.cpp's x86 (AVX2) and ARM
/// (NEON) kernels compute it: each block's `sum sc (q - 32) y` as
/// `sum sc q y - 32 sum sc bsums`, the offset taken from `y`'s stored block
/// sums. For every `block_q8_K` whose `bsums` are its quants' sums (all that
/// any quantizer writes) that is the integer of ggml's generic
/// `ggml_vec_dot_q6_K_q8_K_generic`, which sums `(q - 32) y` directly; each
/// block's integer is exact (i64) and scaled once, where the generic code
/// keeps eight partial sums per block in f32.
pub fn vec_dot_q6_k_q8_k(x: &[BlockQ6K], y: &[BlockQ8K]) -> Result<f32, QuantError> {
    check_dot(x.len(), y.len())?;
    let mut sumf = 0.0f32;
    let mut aux8 = [0i8; QK_K];
    for (xb, yb) in x.iter().zip(y) {
        for c in 0..QK_K / 128 {
            let q4 = &xb.ql[64 * c..64 * c + 64];
            let qh = &xb.qh[32 * c..32 * c + 32];
            let a = &mut aux8[128 * c..128 * c + 128];
            for l in 0..32 {
                a[l] = ((q4[l] & 0xF) | ((qh[l] & 3) << 4)) as i8;
                a[l + 32] = ((q4[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) as i8;
                a[l + 64] = ((q4[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) as i8;
                a[l + 96] = ((q4[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) as i8;
            }
        }
        let mut aux32 = [0i32; 8];
        for j in 0..QK_K / 16 {
            let scale = xb.scales[j] as i32;
            acc8(
                &mut aux32,
                scale,
                &yb.qs[16 * j..16 * j + 8],
                &aux8[16 * j..16 * j + 8],
            );
            acc8(
                &mut aux32,
                scale,
                &yb.qs[16 * j + 8..16 * j + 16],
                &aux8[16 * j + 8..16 * j + 16],
            );
        }
        // |sum sc q y| < 2^28 and |32 sum sc bsums| <= 2^31: i64.
        let offset: i64 = xb
            .scales
            .iter()
            .zip(&yb.bsums)
            .map(|(&s, &b)| i64::from(s) * i64::from(b))
            .sum();
        let sumi = aux32.iter().map(|&v| i64::from(v)).sum::<i64>() - 32 * offset;
        let d = fp16_to_fp32(xb.d) * yb.d;
        sumf += d * sumi as f32;
    }
    Ok(sumf)
}
