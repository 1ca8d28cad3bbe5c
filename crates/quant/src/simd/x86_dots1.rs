//! x86_64 AVX2 (+ FMA + F16C) IQ4_XS x Q8_K dot product, chosen at run
//! time by [`super::dispatch`] at [`super::Level::Avx2`] and above (the
//! same preconditions as [`super::x86`]: `unsafe fn` only for the target
//! features; slices, the shorter side on a length mismatch).
//!
//! # Exactness
//!
//! `v y = |y| (sign(y) v)` in `maddubs` (exact, no codebook value is -128;
//! see `iq4_pairs` in x86.rs), each group's 16-bit pair sums (at most
//! `2 * 128 * 127`) multiplied by the group scale `ls - 32` and summed in
//! i32 by `madd` (at most `8 * 2 * 32 * 32512` per lane: exact), and the
//! block's integer sum scaled once by the scalar code's `d_x * d_y`, as
//! llama.cpp's kernel does. This differs from the scalar order (`(d_x d_y
//! (ls - 32)) * sumi` per group) only by rounding wherever no product
//! overflows f32. A block whose `d_x d_y` is above `f32::MAX / 2^24` (where
//! a scalar product could overflow), infinite or NaN takes the scalar
//! code's per-group f32 products instead, so such scales overflow (or give
//! NaN) as in the scalar code.
//!
//! Measured in process on AMD Zen 4 (interleaved medians): 1.08-1.10x the
//! previous AVX2 kernel, which scaled each group's sums in f32 (a convert,
//! a broadcast and an FMA per group). A variant fusing the scale into
//! `vpdpwssd` (AVX-512 VNNI) measured 0.96-0.97x this one, so the
//! AVX-512 level runs this kernel too.

use std::arch::x86_64::*;

use super::x86::{f16_table, h2f_t, hsum_f32x8, iq4_table, iq4_values_x32, load_u8x32};
use super::x86_tern::q8_k_parts;
use crate::iquants::{BlockIq4Xs, Q8_K_BYTES};

// ------------------------------------------------------------------- IQ4_XS

/// The eight group scales `ls - 32` of an IQ4_XS block, each as an `i16`
/// in both halves of its `i32` (the `madd` multiplier of a group):
/// `ls`'s low 4 bits are nibble `ib` of the little-endian `scales_l`, its
/// high 2 bits bits `2 ib..2 ib + 2` of `scales_h`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn iq4_xs_scales_i16(b: &BlockIq4Xs) -> [i32; 8] {
    let lo = _mm256_srlv_epi32(
        _mm256_set1_epi32(i32::from_le_bytes(b.scales_l)),
        _mm256_setr_epi32(0, 4, 8, 12, 16, 20, 24, 28),
    );
    let hi = _mm256_slli_epi32::<4>(_mm256_srlv_epi32(
        _mm256_set1_epi32(i32::from(b.scales_h)),
        _mm256_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14),
    ));
    let ls = _mm256_or_si256(
        _mm256_and_si256(lo, _mm256_set1_epi32(0xf)),
        _mm256_and_si256(hi, _mm256_set1_epi32(0x30)),
    );
    let ls = _mm256_sub_epi32(ls, _mm256_set1_epi32(32));
    // -32..=31 as i16 in both halves.
    let ls = _mm256_or_si256(
        _mm256_and_si256(ls, _mm256_set1_epi32(0xffff)),
        _mm256_slli_epi32::<16>(ls),
    );
    let mut out = [0i32; 8];
    // SAFETY: `out` is 32 writable bytes and `storeu` has no alignment
    // requirement.
    unsafe { _mm256_storeu_si256(out.as_mut_ptr().cast(), ls) };
    out
}

/// `d_x d_y` at most this in magnitude: no scalar product `(d_x d_y (ls -
/// 32)) * sumi` can overflow (`32 * 520192 < 2^24`), so scaling the block's
/// integer sum once differs from the scalar order only by rounding.
const BIG: f32 = f32::MAX / 16_777_216.0;

/// One block as the scalar code scales it: each group's integer sum times
/// the f32 product `d * (ls - 32)`, added to `acc`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn iq4_xs_block_f32(
    table: __m256i,
    xb: &BlockIq4Xs,
    q8: &[[u8; 32]; 8],
    d: f32,
    ls: [i32; 8],
    mut acc: __m256,
) -> __m256 {
    let ones = _mm256_set1_epi16(1);
    for ((q4, q8), ls) in xb.qs.as_chunks::<16>().0.iter().zip(q8).zip(ls) {
        let yv = load_u8x32(q8);
        let v = iq4_values_x32(table, q4);
        let p = _mm256_maddubs_epi16(_mm256_abs_epi8(yv), _mm256_sign_epi8(v, yv));
        let s = _mm256_cvtepi32_ps(_mm256_madd_epi16(p, ones));
        let dl = d * f32::from(ls as i16);
        acc = _mm256_fmadd_ps(_mm256_set1_ps(dl), s, acc);
    }
    acc
}

/// IQ4_XS x Q8_K, `y` the raw bytes of `block_q8_K`s (292 each: f32 `d`
/// little-endian, 256 `i8`, 16 `i16` sums, unread here); blocks past the
/// shorter side are ignored.
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C.
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn vec_dot_iq4_xs_q8_k(x: &[BlockIq4Xs], y: &[u8]) -> f32 {
    let t = f16_table();
    let table = iq4_table();
    let (y, _) = y.as_chunks::<Q8_K_BYTES>();
    let mut acc = [_mm256_setzero_ps(); 2];
    for (k, (xb, yb)) in x.iter().zip(y).enumerate() {
        let (dy, q8, _) = q8_k_parts(yb);
        let ls = iq4_xs_scales_i16(xb);
        let (q4, _) = xb.qs.as_chunks::<16>();
        let d = h2f_t(t, xb.d) * dy;
        if !d.is_finite() || d.abs() > BIG {
            // Scales where a scalar product could overflow (or NaN): the
            // scalar code's per-group f32 products, so that it overflows alike.
            acc[k % 2] = iq4_xs_block_f32(table, xb, q8, d, ls, acc[k % 2]);
            continue;
        }
        let mut s = [_mm256_setzero_si256(); 2];
        for (g, (q4, q8)) in q4.iter().zip(q8).enumerate() {
            let v = iq4_values_x32(table, q4);
            let yv = load_u8x32(q8);
            // |y| (sign(y) v): exact pair sums (see the module notes).
            let p = _mm256_maddubs_epi16(_mm256_abs_epi8(yv), _mm256_sign_epi8(v, yv));
            // Two accumulators: each group's `madd` and add overlap the next.
            let p = _mm256_madd_epi16(p, _mm256_set1_epi32(ls[g]));
            s[g % 2] = _mm256_add_epi32(s[g % 2], p);
        }
        let s = _mm256_cvtepi32_ps(_mm256_add_epi32(s[0], s[1]));
        acc[k % 2] = _mm256_fmadd_ps(_mm256_set1_ps(d), s, acc[k % 2]);
    }
    hsum_f32x8(_mm256_add_ps(acc[0], acc[1]))
}
