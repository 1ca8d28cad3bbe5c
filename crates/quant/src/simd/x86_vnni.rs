//! x86_64 AVX-512 VNNI kernels ([`super::Level::Avx512`]): the legacy
//! 32-value dot products with `vpdpbusd` in 256-bit registers.
//!
//! `vpdpbusd` multiplies unsigned by signed bytes and adds each group of
//! four products to a 32-bit lane without any intermediate rounding or
//! saturation, so it replaces AVX2's `vpmaddubsw` (16-bit pair sums, which
//! saturate) plus `vpmaddwd` (widening) with one instruction, and needs no
//! sign tricks for an unsigned operand:
//!
//! * Q4_1, Q5_1: the quants are unsigned (0..=15, 0..=31): `q * y` directly.
//! * Q4_0, Q5_0: `(q - o) y = q y - o y` with `o` = 8 or 16: two products
//!   into the one accumulator, subtracted.
//! * Q8_0: `x y = (x + 128) y - 128 y`, where `x + 128` is `x ^ 0x80` read
//!   as unsigned: exact for every byte, -128 included.
//! * IQ4_NL: `v y = |y| (sign(y) v)`, exact because no codebook value is -128
//!   (see `iq4_pairs` in x86.rs); no pair sum can saturate here either.
//! * Q1_0, Q2_0 (x Q8_0; kernels in x86_q12.rs): `sum (2 b - 1) y = sum
//!   2 b y - sum y` for Q1_0's sign bits `b` (the unsigned `2 b` a masked
//!   byte move), `sum (c - 1) y = sum c y - sum y` for Q2_0's codes: 1.45x
//!   (Q1_0) and 1.08x (Q2_0) the AVX2 kernels in process on Zen 4.
//! * TQ1_0, TQ2_0 (x Q8_K): `sum t y` for the unsigned codes `t` (trits
//!   0..=2, 2-bit codes 0..=3), less the stored `bsums` widened to i32, as
//!   the scalar references (and llama.cpp's kernels) define the dot. TQ2_0
//!   takes its codes with one shift per 32 bytes: fields 1 and 3 masked in
//!   place (weight 4), their sum divided by 4 exactly (2% faster in
//!   process).
//!
//! * Q5_K (x Q8_K): the AVX2 kernel's body, with each group's
//!   `sumi + madd(scales, pair sums)` fused into one `vpdpwssd` (16-bit
//!   pairs multiplied and added to i32 lanes, no saturation; the operands
//!   are far inside i16): 1.0-1.2x the AVX2 kernel in process. The same
//!   change measured 0.7-1.0x for Q2_K, Q3_K and Q4_K.
//! * Q2_K, Q4_K, Q6_K (x Q8_K; kernels in x86_dots2.rs): one `vpdpbusd`
//!   per 32-value vector, two vectors' four-sums packed to i16 and weighted
//!   by their scales in one `vpdpwssd`.
//! * IQ4_XS (x Q8_K; kernel in x86_iq4vnni.rs): the AVX2 kernel's body (two
//!   groups per vector, `|y| (sign(y) v)` pair sums from `maddubs`) with
//!   each vector's `madd` by its scales and `add` fused into one
//!   `vpdpwssd`: 1.04-1.07x the AVX2 kernel in process.
//! * IQ2_S (x Q8_K; kernel in x86_iq4vnni.rs): x86_iqdot.rs's AVX2 kernel
//!   with each group's scale `madd` and `add` fused into one `vpdpwssd`:
//!   1.03-1.07x the AVX2 kernel in process.
//!
//! Each block's integer sum is exact; the f32 accumulation (scales,
//! accumulators, `m * s` offsets) is the AVX2 kernels' ([`super::x86`]), so
//! the two levels differ only where the AVX2 kernels' own summation order
//! does. Measured against the AVX2 kernels in docs/BENCHMARKS.md.

use std::arch::x86_64::*;

use half::f16;

use super::x86::{
    f16_table, h2f_pair, h2f_t, hsum_f32x8, iq4_table, iq4_values_x32, load_i8x32, load_u8x32,
    nibbles_x32, q5_k_dot, sum_blocks, sum_blocks_offset,
};
use super::x86_tern::{q8_k_parts, tq1_0_dot};
use crate::iquants::{BlockIq4Nl, BlockTq1_0, BlockTq2_0, Q8_0_BYTES, Q8_K_BYTES};
use crate::kquants::{BlockQ5K, BlockQ8K};
use crate::legacy::{BlockQ4_0, BlockQ4_1, BlockQ5_0, BlockQ5_1, BlockQ8_0, BlockQ8_1};

/// `acc + sum of u * s` in groups of four bytes: unsigned `u`, signed `s`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
fn dp(acc: __m256i, u: __m256i, s: __m256i) -> __m256i {
    _mm256_dpbusd_epi32(acc, u, s)
}

/// The eight partial sums of `(q - o) y` for unsigned quants `q` and a
/// constant offset `o` (every byte of `off`): `q y - o y`, each exact.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
fn dp_offset(q: __m256i, off: __m256i, y: __m256i) -> __m256i {
    let zero = _mm256_setzero_si256();
    _mm256_sub_epi32(dp(zero, q, y), dp(zero, off, y))
}

/// The 32 quants of a legacy 5-bit block (0..=31), in element order: the
/// nibbles plus 16 where bit `i` of the little-endian `qh` is set (a byte
/// mask straight from `qh`, in place of AVX2's shuffle and compare).
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
fn q5_quants(qs: &[u8; 16], qh: &[u8; 4]) -> __m256i {
    let low = nibbles_x32(qs);
    _mm256_mask_add_epi8(low, u32::from_le_bytes(*qh), low, _mm256_set1_epi8(16))
}

/// Q4_0 x Q8_0.
///
/// # Safety
/// The CPU must support AVX2, FMA, F16C, AVX-512 F/BW/VL and VNNI.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
pub(crate) unsafe fn vec_dot_q4_0_q8_0(x: &[BlockQ4_0], y: &[BlockQ8_0]) -> f32 {
    let t = f16_table();
    let eight = _mm256_set1_epi8(8);
    sum_blocks(x, y, |bx, by| {
        let d = h2f_t(t, bx.d) * h2f_t(t, by.d);
        let s = dp_offset(nibbles_x32(&bx.qs), eight, load_i8x32(&by.qs));
        (d, _mm256_cvtepi32_ps(s))
    })
}

/// Q5_0 x Q8_0.
///
/// # Safety
/// The CPU must support AVX2, FMA, F16C, AVX-512 F/BW/VL and VNNI.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
pub(crate) unsafe fn vec_dot_q5_0_q8_0(x: &[BlockQ5_0], y: &[BlockQ8_0]) -> f32 {
    let t = f16_table();
    let sixteen = _mm256_set1_epi8(16);
    sum_blocks(x, y, |bx, by| {
        let d = h2f_t(t, bx.d) * h2f_t(t, by.d);
        let s = dp_offset(q5_quants(&bx.qs, &bx.qh), sixteen, load_i8x32(&by.qs));
        (d, _mm256_cvtepi32_ps(s))
    })
}

/// Q8_0 x Q8_0.
///
/// # Safety
/// The CPU must support AVX2, FMA, F16C, AVX-512 F/BW/VL and VNNI.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
pub(crate) unsafe fn vec_dot_q8_0_q8_0(x: &[BlockQ8_0], y: &[BlockQ8_0]) -> f32 {
    let t = f16_table();
    let bias = _mm256_set1_epi8(-128);
    sum_blocks(x, y, |bx, by| {
        let d = h2f_t(t, bx.d) * h2f_t(t, by.d);
        // x + 128 as unsigned bytes.
        let u = _mm256_xor_si256(load_i8x32(&bx.qs), bias);
        let s = dp_offset(u, bias, load_i8x32(&by.qs));
        (d, _mm256_cvtepi32_ps(s))
    })
}

/// Q4_1 x Q8_1: `d * sum(q * y) + m * s` per block.
///
/// # Safety
/// The CPU must support AVX2, FMA, F16C, AVX-512 F/BW/VL and VNNI.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
pub(crate) unsafe fn vec_dot_q4_1_q8_1(x: &[BlockQ4_1], y: &[BlockQ8_1]) -> f32 {
    sum_blocks_offset(x, y, |bx, by| {
        let dm = _mm_mul_ps(h2f_pair(bx.d, bx.m), h2f_pair(by.d, by.s));
        let s = dp(
            _mm256_setzero_si256(),
            nibbles_x32(&bx.qs),
            load_i8x32(&by.qs),
        );
        (dm, _mm256_cvtepi32_ps(s))
    })
}

/// Q5_1 x Q8_1: `d * sum(q * y) + m * s` per block.
///
/// # Safety
/// The CPU must support AVX2, FMA, F16C, AVX-512 F/BW/VL and VNNI.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
pub(crate) unsafe fn vec_dot_q5_1_q8_1(x: &[BlockQ5_1], y: &[BlockQ8_1]) -> f32 {
    sum_blocks_offset(x, y, |bx, by| {
        let dm = _mm_mul_ps(h2f_pair(bx.d, bx.m), h2f_pair(by.d, by.s));
        let s = dp(
            _mm256_setzero_si256(),
            q5_quants(&bx.qs, &bx.qh),
            load_i8x32(&by.qs),
        );
        (dm, _mm256_cvtepi32_ps(s))
    })
}

/// IQ4_NL x Q8_0, `y` the raw bytes of `block_q8_0`s (34 each); blocks past
/// the shorter side are ignored.
///
/// # Safety
/// The CPU must support AVX2, FMA, F16C, AVX-512 F/BW/VL and VNNI.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
pub(crate) unsafe fn vec_dot_iq4_nl_q8_0(x: &[BlockIq4Nl], y: &[u8]) -> f32 {
    let t = f16_table();
    let table = iq4_table();
    let (y, _) = y.as_chunks::<Q8_0_BYTES>();
    sum_blocks(x, y, |bx, by| {
        let (dy, qy) = by.split_first_chunk::<2>().expect("34 bytes");
        let qy: &[u8; 32] = qy.try_into().expect("32 quants");
        let d = h2f_t(t, f16::from_bits(u16::from_le_bytes(*dy))) * h2f_t(t, bx.d);
        let v = iq4_values_x32(table, &bx.qs);
        let y = load_u8x32(qy);
        let s = dp(
            _mm256_setzero_si256(),
            _mm256_abs_epi8(y),
            _mm256_sign_epi8(v, y),
        );
        (d, _mm256_cvtepi32_ps(s))
    })
}

/// One block's `sum t y - sum bsums` as eight f32 lanes: the `vpdpbusd`
/// sums `p` of `sum t y` less the stored `bsums`, each pair multiplied by
/// -1 and added in i32 (exact for any 16-bit sums).
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
fn less_bsums(p: __m256i, bsums: &[u8; 32]) -> __m256 {
    // p + (-1) b_2i + (-1) b_2i+1 per lane, in one `vpdpwssd`.
    let s = _mm256_dpwssd_epi32(p, load_u8x32(bsums), _mm256_set1_epi16(-1));
    _mm256_cvtepi32_ps(s)
}

/// TQ1_0 x Q8_K, `y` the raw bytes of `block_q8_K`s (292 each); blocks past
/// the shorter side are ignored.
///
/// # Safety
/// The CPU must support AVX2, FMA, F16C, AVX-512 F/BW/VL and VNNI.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
pub(crate) unsafe fn vec_dot_tq1_0_q8_k(x: &[BlockTq1_0], y: &[u8]) -> f32 {
    tq1_0_dot(
        x,
        y,
        // The trits times y, four products per i32 lane.
        |p, t, q| dp(p, t, q),
        |p0, p1, bsums| less_bsums(_mm256_add_epi32(p0, p1), bsums),
    )
}

/// TQ2_0 x Q8_K, `y` the raw bytes of `block_q8_K`s (292 each); blocks past
/// the shorter side are ignored.
///
/// # Safety
/// The CPU must support AVX2, FMA, F16C, AVX-512 F/BW/VL and VNNI.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
pub(crate) unsafe fn vec_dot_tq2_0_q8_k(x: &[BlockTq2_0], y: &[u8]) -> f32 {
    let t = f16_table();
    let (y, _) = y.as_chunks::<Q8_K_BYTES>();
    let (m3, m12) = (_mm256_set1_epi8(3), _mm256_set1_epi8(12));
    let mut acc = _mm256_setzero_ps();
    for (xb, yb) in x.iter().zip(y) {
        let (dy, q8, bsums) = q8_k_parts(yb);
        let (q8, _) = q8.as_chunks::<4>();
        // One accumulator per field (two measured slower: each `vpdpbusd`
        // waits for the previous one's sum).
        // The first starts from minus the stored sums (`vpdpwssd` by -1,
        // exact in i32), off the products' dependency chains.
        let zero = _mm256_setzero_si256();
        let less = _mm256_dpwssd_epi32(zero, load_u8x32(bsums), _mm256_set1_epi16(-1));
        let mut p = [less, zero, zero, zero];
        // Bytes 32 j..32 j + 32 hold values 128 j + 32 l + m in bits 2 l.
        // One shift per 32 bytes, as the AVX2 kernel (x86_avx2dots): fields
        // 0 and 2 masked with 3, fields 1 and 3 with 12 (weight 4).
        for (q2, [y0, y1, y2, y3]) in xb.qs.as_chunks::<32>().0.iter().zip(q8) {
            let v = load_u8x32(q2);
            let h = _mm256_srli_epi16::<4>(v);
            p[0] = dp(p[0], _mm256_and_si256(v, m3), load_u8x32(y0));
            p[1] = dp(p[1], _mm256_and_si256(v, m12), load_u8x32(y1));
            p[2] = dp(p[2], _mm256_and_si256(h, m3), load_u8x32(y2));
            p[3] = dp(p[3], _mm256_and_si256(h, m12), load_u8x32(y3));
        }
        // The weight-4 sum is a multiple of 4 within 4 * 4 * 12 * 128 per
        // lane: the arithmetic shift divides exactly.
        let w4 = _mm256_srai_epi32::<2>(_mm256_add_epi32(p[1], p[3]));
        let s = _mm256_add_epi32(_mm256_add_epi32(p[0], p[2]), w4);
        let d = _mm256_set1_ps(dy * h2f_t(t, xb.d));
        acc = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(s), acc);
    }
    hsum_f32x8(acc)
}

/// `acc + madd(scales, p)` in one instruction.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
fn madd_add(acc: __m256i, scales: __m256i, p: __m256i) -> __m256i {
    _mm256_dpwssd_epi32(acc, scales, p)
}

macro_rules! kquant_dots {
    ($($name:ident = $body:ident, $block:ty;)*) => {$(
        #[doc = concat!("[`super::x86`]'s `", stringify!($name), "` with `vpdpwssd`.")]
        ///
        /// # Safety
        /// The CPU must support AVX2, FMA, F16C, AVX-512 F/BW/VL and VNNI.
        #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
        pub(crate) unsafe fn $name(x: &[$block], y: &[BlockQ8K]) -> f32 {
            $body(x, y, |a, s, p| madd_add(a, s, p))
        }
    )*};
}

kquant_dots! {
    vec_dot_q5_k_q8_k = q5_k_dot, BlockQ5K;
}

// Q1_0 and Q2_0 (their kernels live in x86_q12.rs).
pub(crate) use super::x86_q12::{
    vec_dot_q1_0_q8_0_vnni as vec_dot_q1_0_q8_0, vec_dot_q2_0_q8_0_vnni as vec_dot_q2_0_q8_0,
};

// Q2_K, Q4_K and Q6_K (their kernels live in x86_dots2.rs).
pub(crate) use super::x86_dots2::{vec_dot_q2_k_q8_k, vec_dot_q4_k_q8_k, vec_dot_q6_k_q8_k};

// IQ4_XS and IQ2_S (their kernels live in x86_iq4vnni.rs).
pub(crate) use super::x86_iq4vnni::{vec_dot_iq2_s_q8_k, vec_dot_iq4_xs_q8_k};
