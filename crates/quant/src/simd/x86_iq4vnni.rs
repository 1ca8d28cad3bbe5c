//! x86_64 IQ4_XS x Q8_K dot products, two 32-value groups per vector: the
//! AVX2 kernel ([`super::Level::Avx2`]) and the AVX-512 VNNI one
//! ([`super::Level::Avx512`], 256-bit registers, reached through
//! [`super::x86_vnni`]) share one body and differ in the scale step. Also
//! the AVX-512 VNNI IQ2_S x Q8_K dot (at the end).
//!
//! The previous kernel (llama.cpp's layout) built each group's codebook
//! values in element order (low nibbles, then high nibbles: a 128-bit
//! shift and a lane insert per group) and weighted its 16-bit pair sums by
//! a broadcast of its scale. Here the 32 bytes of groups `2p` and `2p + 1`
//! give the low nibbles of both (one `and`) and the high nibbles of both
//! (one shift and one `and`), one group per 128-bit lane, each looked up
//! with one `pshufb`; the quants are rearranged to match by two `vpblendd`
//! of three overlapping loads (no shuffle unit). The two groups' scales sit
//! in one vector, one per lane: one `pshufb` per pair of a vector built
//! once per block (even groups in the low lane, odd in the high one, from
//! two variable shifts of broadcast loads). AVX2 weights the pair sums
//! with `madd` and `add`, AVX-512 with one `vpdpwssd` (kept as one
//! instruction through `asm!`: LLVM otherwise splits it back into the two).
//!
//! Measured in process on AMD Zen 4 (interleaved medians, 4096 values):
//! the AVX2 kernel 1.3x the previous one, the VNNI one 1.04-1.07x the AVX2
//! one; against llama.cpp's kernel (ggml_inproc) 1.22-1.28x at AVX2 and
//! 1.29-1.32x at AVX-512, for ggml's AVX2 and `-march=native` builds alike.
//!
//! # Exactness
//!
//! `v y = |y| (sign(y) v)` in `maddubs` is exact (no codebook value is
//! -128, see `iq4_pairs` in x86.rs) and each 16-bit pair sum is at most
//! `2 * 128 * 127 = 32512` in magnitude; `madd` (AVX2) or `vpdpwssd`
//! (VNNI) multiplies it by the group scale `ls - 32` (-32..=31) and adds two
//! such products to an i32 lane without rounding or saturation. Each of
//! the two accumulators' lanes receives 8 products per block, at most
//! `8 * 32512 * 32 < 2^23` in magnitude, so each block's integer sum is
//! exact for any bytes. It is scaled once by the scalar code's `d_x * d_y`,
//! as llama.cpp's kernel does; this differs from the scalar order (`(d_x
//! d_y (ls - 32)) * sumi` per group) only by rounding wherever no product
//! overflows f32. A block whose `d_x d_y` is above `f32::MAX / 2^24` (where
//! a scalar product could overflow), infinite or NaN takes the scalar
//! code's per-group f32 products instead, so such scales overflow (or give
//! NaN) as in the scalar code.

use std::arch::x86_64::*;

use super::x86::{
    f16_table, h2f_t, hsum_f32x8, iq4_table, iq4_values_x32, load_i8x32, load_u8x16, load_u8x32,
};
use super::x86_iqdot::{
    grid4, idx4, iq2_s_dot, lane, load8, pairs, q8_k, sign_operand, split_nibble_scales,
};
use super::x86_tern::q8_k_parts;
use crate::iquants::grids::IQ2S_GRID;
use crate::iquants::{BlockIq2S, BlockIq4Xs, Q8_K_BYTES};
use crate::kquants::QK_K;

/// `d_x d_y` at most this in magnitude: no scalar product `(d_x d_y (ls -
/// 32)) * sumi` can overflow (`32 * 520192 < 2^24`), so scaling the block's
/// integer sum once differs from the scalar order only by rounding.
const BIG: f32 = f32::MAX / 16_777_216.0;

/// One block as the scalar code scales it (for `d_x d_y` above [`BIG`],
/// infinite or NaN): each group's integer sum times the f32 product `d *
/// (ls - 32)`, added to `acc`.
#[cold]
#[inline(never)]
#[target_feature(enable = "avx2,fma,f16c")]
fn iq4_xs_block_f32(
    table: __m256i,
    xb: &BlockIq4Xs,
    q8: &[[u8; 32]; 8],
    d: f32,
    mut acc: __m256,
) -> __m256 {
    let ones = _mm256_set1_epi16(1);
    for (g, (q4, q8)) in xb.qs.as_chunks::<16>().0.iter().zip(q8).enumerate() {
        let lo = (xb.scales_l[g / 2] >> (4 * (g % 2))) & 0xf;
        let hi = (xb.scales_h >> (2 * g)) & 3;
        let ls = i32::from(lo) | (i32::from(hi) << 4);
        let yv = load_u8x32(q8);
        let v = iq4_values_x32(table, q4);
        let p = _mm256_maddubs_epi16(_mm256_abs_epi8(yv), _mm256_sign_epi8(v, yv));
        let s = _mm256_cvtepi32_ps(_mm256_madd_epi16(p, ones));
        let dl = d * (ls - 32) as f32;
        acc = _mm256_fmadd_ps(_mm256_set1_ps(dl), s, acc);
    }
    acc
}

/// `pshufb` controls giving groups `2p` (low lane) and `2p + 1` (high
/// lane) of [`scales_even_odd`]'s vector in every `i16`: its `i32` lane
/// `p`'s low word, copied eight times.
static PAIR_SCALES: [[i8; 32]; 4] = {
    let mut t = [[0i8; 32]; 4];
    let mut p = 0;
    while p < 4 {
        let mut b = 0;
        while b < 32 {
            t[p][b] = (4 * p + b % 2) as i8;
            b += 1;
        }
        p += 1;
    }
    t
};

/// The eight group scales `ls - 32` of an IQ4_XS block, each as the low
/// `i16` of an `i32` lane (the high one unused): groups 0, 2, 4, 6 in the
/// low 128-bit lane, 1, 3, 5, 7 in the high one.
///
/// `ls`'s low 4 bits are nibble `g` of the little-endian `scales_l` (block
/// bytes 4..8), its high 2 bits bits `2g..2g + 2` of `scales_h` (bytes
/// 2..4, read with `d` as one `u32`, so at bit `16 + 2g`): two variable
/// shifts of broadcast loads and a bit select. The six bits are extended to
/// `ls - 32` by flipping the top one and an arithmetic shift.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn scales_even_odd(b: &BlockIq4Xs) -> __m256i {
    let (dh, rest) = bytemuck::bytes_of(b)
        .split_first_chunk::<4>()
        .expect("136 bytes");
    let (l, _) = rest.split_first_chunk::<4>().expect("132 bytes");
    let lo = _mm256_srlv_epi32(
        _mm256_set1_epi32(i32::from_le_bytes(*l)),
        _mm256_setr_epi32(0, 8, 16, 24, 4, 12, 20, 28),
    );
    let hi = _mm256_srlv_epi32(
        _mm256_set1_epi32(i32::from_le_bytes(*dh)),
        _mm256_setr_epi32(12, 16, 20, 24, 14, 18, 22, 26),
    );
    // Bits 0..4 from `lo`, the rest from `hi` (one `vpternlogd` with
    // AVX-512); bits 0..6 are `ls`, the rest is ignored below.
    let m = _mm256_set1_epi32(0xf);
    let ls = _mm256_or_si256(_mm256_and_si256(lo, m), _mm256_andnot_si256(m, hi));
    // (ls ^ 32) in the top six bits of the low word, then shifted back
    // with its sign: ls - 32.
    let w = _mm256_xor_si256(_mm256_slli_epi16::<10>(ls), _mm256_set1_epi16(i16::MIN));
    _mm256_srai_epi16::<10>(w)
}

/// `v`, through an empty `asm!` so that LLVM cannot see its value.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn opaque(mut v: __m256i) -> __m256i {
    // SAFETY: an empty template: the value stays in its register and
    // nothing else is read, written or clobbered.
    unsafe {
        std::arch::asm!("/* {0} */", inout(ymm_reg) v, options(pure, nomem, nostack, preserves_flags));
    }
    v
}

/// Loads bytes `0..32`, `16..48` and `32..64` of `c`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn load_overlapping(c: &[u8; 64]) -> [__m256i; 3] {
    let p = c.as_ptr();
    // SAFETY: each load reads 32 bytes at offset 0, 16 or 32 of the 64
    // readable bytes of `c`; `loadu` has no alignment requirement.
    unsafe {
        [
            _mm256_loadu_si256(p.cast()),
            _mm256_loadu_si256(p.add(16).cast()),
            _mm256_loadu_si256(p.add(32).cast()),
        ]
    }
}

/// The body shared by the levels, expanded inside each level's function
/// (a generic function taking `step` as a closure is not always inlined
/// into the AVX-512 one, and then cannot inline its AVX-512 closure):
/// `$step(acc, p, s)` adds the 16-bit pair sums `p` weighted by the `i16`
/// scales `s` to the i32 lanes of `acc`.
macro_rules! iq4_xs_pairs_dot {
    ($x:expr, $y:expr, $step:expr) => {{
        let (x, y): (&[BlockIq4Xs], &[u8]) = ($x, $y);
        let step = $step;
        let t = f16_table();
        let table = iq4_table();
        let m4 = _mm256_set1_epi8(0x0f);
        let (y, _) = y.as_chunks::<Q8_K_BYTES>();
        // The scale controls, opaque to LLVM, which would otherwise rewrite
        // each `pshufb` into two shuffles.
        let ctl = PAIR_SCALES.map(|c| opaque(load_i8x32(&c)));
        let mut acc = _mm256_setzero_ps();
        for (xb, yb) in x.iter().zip(y) {
            let (dy, q8, _) = q8_k_parts(yb);
            let d = h2f_t(t, xb.d) * dy;
            // Non-finite or above BIG in magnitude (a NaN's bits are above).
            if d.to_bits() & 0x7fff_ffff > BIG.to_bits() {
                // Scales where a scalar product could overflow (or NaN): the
                // scalar code's per-group f32 products, so that it overflows
                // alike.
                acc = iq4_xs_block_f32(table, xb, q8, d, acc);
                continue;
            }
            let sc = scales_even_odd(xb);
            let (q8, _) = q8.as_flattened().as_chunks::<64>();
            let (q4, _) = xb.qs.as_chunks::<32>();
            let mut s = [_mm256_setzero_si256(); 2];
            for (p, (q4, q8)) in q4.iter().zip(q8).enumerate() {
                let q = load_u8x32(q4);
                // Lane 0: group 2p, lane 1: group 2p + 1; low then high
                // nibbles.
                let vlo = _mm256_shuffle_epi8(table, _mm256_and_si256(q, m4));
                let vhi =
                    _mm256_shuffle_epi8(table, _mm256_and_si256(_mm256_srli_epi16::<4>(q), m4));
                // The matching quants: bytes 0..16 and 32..48, 16..32 and
                // 48..64.
                let [y0, y1, y2] = load_overlapping(q8);
                let ylo = _mm256_blend_epi32::<0xf0>(y0, y1);
                let yhi = _mm256_blend_epi32::<0xf0>(y1, y2);
                // |y| (sign(y) v): exact pair sums (see the module notes).
                let plo = _mm256_maddubs_epi16(_mm256_abs_epi8(ylo), _mm256_sign_epi8(vlo, ylo));
                let phi = _mm256_maddubs_epi16(_mm256_abs_epi8(yhi), _mm256_sign_epi8(vhi, yhi));
                let sp = _mm256_shuffle_epi8(sc, ctl[p]);
                s[0] = step(s[0], plo, sp);
                s[1] = step(s[1], phi, sp);
            }
            let s = _mm256_cvtepi32_ps(_mm256_add_epi32(s[0], s[1]));
            acc = _mm256_fmadd_ps(_mm256_set1_ps(d), s, acc);
        }
        hsum_f32x8(acc)
    }};
}

/// IQ4_XS x Q8_K, `y` the raw bytes of `block_q8_K`s (292 each); blocks past
/// the shorter side are ignored.
///
/// # Safety
/// The CPU must support AVX2, FMA, F16C, AVX-512 F/BW/VL and VNNI.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
pub(crate) unsafe fn vec_dot_iq4_xs_q8_k(x: &[BlockIq4Xs], y: &[u8]) -> f32 {
    iq4_xs_pairs_dot!(x, y, |acc, p, s| dpwssd(acc, p, s))
}

/// `acc + madd(p, s)` in one `vpdpwssd`, kept as one instruction.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
fn dpwssd(acc: __m256i, p: __m256i, s: __m256i) -> __m256i {
    let mut acc = acc;
    // SAFETY: `vpdpwssd` on registers only (AVX-512 VNNI + VL, enabled
    // here): no memory, stack or flags.
    unsafe {
        std::arch::asm!(
            "vpdpwssd {a}, {p}, {s}",
            a = inout(ymm_reg) acc,
            p = in(ymm_reg) p,
            s = in(ymm_reg) s,
            options(pure, nomem, nostack, preserves_flags)
        );
    }
    acc
}

/// The same body at AVX2: `madd` and `add` in place of `vpdpwssd`.
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C.
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn vec_dot_iq4_xs_q8_k_avx2(x: &[BlockIq4Xs], y: &[u8]) -> f32 {
    iq4_xs_pairs_dot!(x, y, |acc, p, s| {
        _mm256_add_epi32(acc, _mm256_madd_epi16(p, s))
    })
}

// -------------------------------------------------------------------- IQ2_S

/// IQ2_S x Q8_K: x86_iqdot.rs's AVX2 kernel with each group's `madd` by
/// its scales and `add` fused into one `vpdpwssd` (kept as one instruction:
/// LLVM splits the intrinsic back into the two, which is why the same
/// change once measured no gain there). 1.03-1.07x the AVX2 kernel in
/// process on Zen 4.
///
/// Exact as the AVX2 kernel: each pair sum `|q8| (sign(q8) g)` is at most
/// `2 * 128 * 62` in magnitude, its scale `2 s + 1` at most 31, and a lane
/// collects at most `32 * 62 * 128 * 31 < 2^23` per block.
///
/// # Safety
/// The CPU must support AVX2, FMA, F16C, AVX-512 F/BW/VL and VNNI.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
pub(crate) unsafe fn vec_dot_iq2_s_q8_k(x: &[BlockIq2S], y: &[u8]) -> f32 {
    iq2_s_dot!(x, y, dpwssd)
}
