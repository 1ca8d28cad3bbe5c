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
//! * TQ2_0 (x Q8_K): `(q - 1) y = q y - 1 y` with `q` the 2-bit code (0..=3
//!   for any byte), two products; TQ1_0: `(y + 128) s - 128 s` for the trit
//!   signs `s` (-1..=1), `y + 128` being `y ^ 0x80` unsigned. The stored
//!   `bsums` are not read (as in the scalar code), so any bytes give the
//!   exact sums.
//!
//! * Q5_K, Q6_K (x Q8_K): the AVX2 kernels' bodies, with each group's
//!   `sumi + madd(scales, pair sums)` fused into one `vpdpwssd` (16-bit
//!   pairs multiplied and added to i32 lanes, no saturation; the operands
//!   are far inside i16): 1.0-1.2x (Q5_K), 1.1-1.4x (Q6_K) the AVX2
//!   kernels in process. The same change measured 0.7-1.0x for Q2_K, Q3_K
//!   and Q4_K, which keep AVX2.
//!
//! Each block's integer sum is exact; the f32 accumulation (scales,
//! accumulators, `m * s` offsets) is the AVX2 kernels' ([`super::x86`]), so
//! the two levels differ only where the AVX2 kernels' own summation order
//! does. Measured against the AVX2 kernels in docs/BENCHMARKS.md.

use std::arch::x86_64::*;

use half::f16;

use super::x86::{
    f16_table, h2f_pair, h2f_t, hsum_f32x8, iq4_table, iq4_values_x32, load_i8x32, load_u8x32,
    nibbles_x32, q5_k_dot, q6_k_dot, sum_blocks, sum_blocks_offset,
};
use super::x86_tern::{q8_k_parts, tq1_0_signs};
use crate::iquants::{BlockIq4Nl, BlockTq1_0, BlockTq2_0, Q8_0_BYTES, Q8_K_BYTES};
use crate::kquants::{BlockQ5K, BlockQ6K, BlockQ8K};
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

/// TQ1_0 x Q8_K, `y` the raw bytes of `block_q8_K`s (292 each); blocks past
/// the shorter side are ignored.
///
/// # Safety
/// The CPU must support AVX2, FMA, F16C, AVX-512 F/BW/VL and VNNI.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
pub(crate) unsafe fn vec_dot_tq1_0_q8_k(x: &[BlockTq1_0], y: &[u8]) -> f32 {
    let t = f16_table();
    let k80 = _mm256_set1_epi8(i8::MIN);
    let (y, _) = y.as_chunks::<Q8_K_BYTES>();
    let mut acc = _mm256_setzero_ps();
    for (xb, yb) in x.iter().zip(y) {
        let (dy, q8) = q8_k_parts(yb);
        let mut p = [_mm256_setzero_si256(); 2];
        let mut ss = _mm256_setzero_si256();
        for (k, (s, q8)) in tq1_0_signs(xb).iter().zip(q8).enumerate() {
            // (y + 128) s, each group of four exact in i32.
            p[k % 2] = dp(p[k % 2], _mm256_xor_si256(load_u8x32(q8), k80), *s);
            // Per-byte sums of eight signs: at most 8 in magnitude.
            ss = _mm256_add_epi8(ss, *s);
        }
        // 128 s, summed in the same groups of four.
        let bias = dp(_mm256_setzero_si256(), k80, ss);
        let s = _mm256_sub_epi32(_mm256_add_epi32(p[0], p[1]), bias);
        let d = _mm256_set1_ps(h2f_t(t, xb.d) * dy);
        acc = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(s), acc);
    }
    hsum_f32x8(acc)
}

/// TQ2_0 x Q8_K, `y` the raw bytes of `block_q8_K`s (292 each); blocks past
/// the shorter side are ignored.
///
/// # Safety
/// The CPU must support AVX2, FMA, F16C, AVX-512 F/BW/VL and VNNI.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
pub(crate) unsafe fn vec_dot_tq2_0_q8_k(x: &[BlockTq2_0], y: &[u8]) -> f32 {
    let t = f16_table();
    let three = _mm256_set1_epi8(3);
    let ones = _mm256_set1_epi8(1);
    let (y, _) = y.as_chunks::<Q8_K_BYTES>();
    let mut acc = _mm256_setzero_ps();
    for (xb, yb) in x.iter().zip(y) {
        let (dy, q8) = q8_k_parts(yb);
        let (q8, _) = q8.as_chunks::<4>();
        // Two chains each for sum q y and sum y.
        let mut qy = [_mm256_setzero_si256(); 2];
        let mut sy = [_mm256_setzero_si256(); 2];
        // Bytes 32 j..32 j + 32 hold values 128 j + 32 l + m in bits 2 l.
        for (q2, q8) in xb.qs.as_chunks::<32>().0.iter().zip(q8) {
            let v = load_u8x32(q2);
            let codes = [
                _mm256_and_si256(v, three),
                _mm256_and_si256(_mm256_srli_epi16::<2>(v), three),
                _mm256_and_si256(_mm256_srli_epi16::<4>(v), three),
                _mm256_and_si256(_mm256_srli_epi16::<6>(v), three),
            ];
            for (l, (q, y)) in codes.iter().zip(q8).enumerate() {
                let y = load_u8x32(y);
                qy[l % 2] = dp(qy[l % 2], *q, y);
                sy[l % 2] = dp(sy[l % 2], ones, y);
            }
        }
        let s = _mm256_sub_epi32(
            _mm256_add_epi32(qy[0], qy[1]),
            _mm256_add_epi32(sy[0], sy[1]),
        );
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
    vec_dot_q6_k_q8_k = q6_k_dot, BlockQ6K;
}
