//! x86_64 AVX-512 VNNI dot products of Q2_K, Q4_K and Q6_K with Q8_K
//! ([`super::Level::Avx512`], reached through [`super::x86_vnni`]).
//!
//! The AVX2 kernels ([`super::x86`]) multiply each 32-value vector with
//! `maddubs` (16-bit pair sums), broadcast its scales with a shuffle and
//! weight the pairs with `madd` (or `vpdpwssd`), one scale multiply per
//! vector. Here each vector goes through one `vpdpbusd` (unsigned codes
//! times signed Q8_K quants, four products per i32 lane, no saturation),
//! and since every four-product sum fits in i16, two vectors' sums are
//! packed (`packssdw`, exact) and weighted by their scales with one
//! `vpdpwssd`: one scale multiply per two vectors, and the per-vector scale
//! shuffles become four per block.
//!
//! # Exactness
//!
//! * Q2_K: codes 0..=3, `|sum of 4 q y| <= 4 * 3 * 128`; scales 0..=15.
//! * Q4_K: codes 0..=15, `|sum of 4 q y| <= 4 * 15 * 128`; scales 0..=63.
//! * Q6_K: codes 0..=63, `sum sc (q - 32) y = sum sc q y - 32 sum sc bsums`
//!   with `y`'s stored block sums (as llama.cpp's AVX2 kernel and the
//!   scalar reference), the offset the accumulator's start;
//!   `|sum of 4 q y| <= 4 * 63 * 128 = 32256`; scales are any `i8`.
//!
//! So every packed value is exact in i16 and each `vpdpwssd` lane adds at
//! most `2 * 128 * 32256` per pack, far inside i32. The Q2_K/Q4_K mins and
//! the Q6_K offset meet the stored `bsums` in 32-bit sums, as the AVX2
//! kernels do. The f32 accumulation is the AVX2 kernels' except that the
//! mins have their own accumulator (two independent FMA chains per block
//! instead of one chain of two).

use std::arch::x86_64::*;

use super::x86::{
    f16_table, h2f_t, hsum_f32x8, k4_scales_mins, load_i8x32, load_u8x16, load_u8x32,
};
use crate::kquants::{BlockQ2K, BlockQ4K, BlockQ6K, BlockQ8K};

/// `acc + sum of u * s` in groups of four bytes: unsigned `u`, signed `s`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
fn dp(u: __m256i, s: __m256i) -> __m256i {
    _mm256_dpbusd_epi32(_mm256_setzero_si256(), u, s)
}

/// `acc + madd(p, s)` in one instruction.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
fn dpw(acc: __m256i, p: __m256i, s: __m256i) -> __m256i {
    _mm256_dpwssd_epi32(acc, p, s)
}

/// `(a & m) | h` in one `vpternlogd`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
fn and_or(a: __m256i, m: __m256i, h: __m256i) -> __m256i {
    // Truth table over (a, m, h) = (0xF0, 0xCC, 0xAA): (a & m) | h.
    _mm256_ternarylogic_epi32::<0xEA>(a, m, h)
}

/// Loads 32 bytes from a `'static` table (a `pshufb` control).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn ctl(c: &'static [i8; 32]) -> __m256i {
    // SAFETY: `c` is 32 readable bytes and `loadu` has no alignment requirement.
    unsafe { _mm256_loadu_si256(c.as_ptr().cast()) }
}

/// `pshufb` controls for the 16-scale types (Q2_K, Q6_K) over `i16` words:
/// `SC16[c]` gives the scales of `packs(p[2c], p[2c + 1])`, where `p[v]`
/// are the four-sums of 32-value vector `v` of the block (values
/// `32 v .. 32 v + 32`, scales `2 v` in its low 128-bit lane and `2 v + 1`
/// in its high one). Words 0..4 of lane `L` come from vector `2 c`, words
/// 4..8 from `2 c + 1`: scale `4 c + L` and `4 c + L + 2`. The source holds
/// scales `8 (c / 2) ..` as words in both lanes.
static SC16: [[i8; 32]; 4] = {
    let mut t = [[0i8; 32]; 4];
    let mut c = 0;
    while c < 4 {
        let mut b = 0;
        while b < 32 {
            let (lane, w) = (b / 16, (b % 16) / 2);
            let s = 4 * (c % 2) + lane + if w >= 4 { 2 } else { 0 };
            t[c][b] = (2 * s + b % 2) as i8;
            b += 1;
        }
        c += 1;
    }
    t
};

/// The four scale vectors of a 16-scale block from its scales as `i16`
/// (`s16`: scales 0..8 in the low lane, 8..16 in the high one), in the
/// layout of [`SC16`].
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn scales16(s16: __m256i) -> [__m256i; 4] {
    let lo = _mm256_permute2x128_si256::<0x00>(s16, s16);
    let hi = _mm256_permute2x128_si256::<0x11>(s16, s16);
    [
        _mm256_shuffle_epi8(lo, ctl(&SC16[0])),
        _mm256_shuffle_epi8(lo, ctl(&SC16[1])),
        _mm256_shuffle_epi8(hi, ctl(&SC16[2])),
        _mm256_shuffle_epi8(hi, ctl(&SC16[3])),
    ]
}

/// Q2_K x Q8_K.
///
/// # Safety
/// The CPU must support AVX2, FMA, F16C, AVX-512 F/BW/VL and VNNI.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
pub(crate) unsafe fn vec_dot_q2_k_q8_k(x: &[BlockQ2K], y: &[BlockQ8K]) -> f32 {
    let t = f16_table();
    let m3 = _mm256_set1_epi8(3);
    let m4 = _mm_set1_epi8(0x0f);
    let mut acc = _mm256_setzero_ps();
    let mut accm = _mm256_setzero_ps();
    for (xb, yb) in x.iter().zip(y) {
        let d = _mm256_set1_ps(yb.d * h2f_t(t, xb.d));
        let dmin = _mm256_set1_ps(-yb.d * h2f_t(t, xb.dmin));
        let mins_and_scales = load_u8x16(&xb.scales);
        let mins = _mm256_cvtepu8_epi16(_mm_and_si128(_mm_srli_epi16::<4>(mins_and_scales), m4));
        // Each min against its group's stored sum, in 32 bits: exact for
        // any `bsums`.
        let bsums = load_i8x32(bytemuck::cast_ref(&yb.bsums));
        accm = _mm256_fmadd_ps(
            dmin,
            _mm256_cvtepi32_ps(_mm256_madd_epi16(mins, bsums)),
            accm,
        );
        let sc = scales16(_mm256_cvtepu8_epi16(_mm_and_si128(mins_and_scales, m4)));
        let mut sumi = _mm256_setzero_si256();
        let q8 = yb.qs.as_chunks::<32>().0.chunks_exact(4);
        for (j, (q2, q8)) in xb.qs.as_chunks::<32>().0.iter().zip(q8).enumerate() {
            let q2 = load_u8x32(q2);
            let p = [
                dp(_mm256_and_si256(q2, m3), load_i8x32(&q8[0])),
                dp(
                    _mm256_and_si256(_mm256_srli_epi16::<2>(q2), m3),
                    load_i8x32(&q8[1]),
                ),
                dp(
                    _mm256_and_si256(_mm256_srli_epi16::<4>(q2), m3),
                    load_i8x32(&q8[2]),
                ),
                dp(
                    _mm256_and_si256(_mm256_srli_epi16::<6>(q2), m3),
                    load_i8x32(&q8[3]),
                ),
            ];
            sumi = dpw(sumi, _mm256_packs_epi32(p[0], p[1]), sc[2 * j]);
            sumi = dpw(sumi, _mm256_packs_epi32(p[2], p[3]), sc[2 * j + 1]);
        }
        acc = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(sumi), acc);
    }
    hsum_f32x8(_mm256_add_ps(acc, accm))
}

/// Q4_K x Q8_K.
///
/// # Safety
/// The CPU must support AVX2, FMA, F16C, AVX-512 F/BW/VL and VNNI.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
pub(crate) unsafe fn vec_dot_q4_k_q8_k(x: &[BlockQ4K], y: &[BlockQ8K]) -> f32 {
    let t = f16_table();
    let m4 = _mm256_set1_epi8(0x0f);
    let mut acc = _mm256_setzero_ps();
    let mut accm = _mm256_setzero_ps();
    for (xb, yb) in x.iter().zip(y) {
        let d = _mm256_set1_ps(yb.d * h2f_t(t, xb.d));
        let dmin = _mm256_set1_ps(-yb.d * h2f_t(t, xb.dmin));
        let ms = _mm256_cvtepu8_epi16(load_u8x16(&k4_scales_mins(&xb.scales)));
        // Each min twice, against the two 16-quant sums of its 32 quants,
        // summed in 32 bits: exact for any stored `bsums`.
        let mins = _mm256_extracti128_si256::<1>(ms);
        let mins2 = _mm256_set_m128i(
            _mm_unpackhi_epi16(mins, mins),
            _mm_unpacklo_epi16(mins, mins),
        );
        let bsums = load_i8x32(bytemuck::cast_ref(&yb.bsums));
        accm = _mm256_fmadd_ps(
            dmin,
            _mm256_cvtepi32_ps(_mm256_madd_epi16(mins2, bsums)),
            accm,
        );
        // Scales as dword pairs: s0 s0 s1 s1 s2 s2 s3 s3 | s4 s4 .. s7 s7
        // (low lane, then the same from the high half of the unpack).
        let sc = _mm256_broadcastsi128_si256(_mm256_castsi256_si128(ms));
        let (sa, sb) = (_mm256_unpacklo_epi16(sc, sc), _mm256_unpackhi_epi16(sc, sc));
        // Chunk j's pack holds the four-sums of its low nibbles (scale 2 j)
        // in words 0..4 of each lane and of its high nibbles (2 j + 1) in
        // words 4..8.
        let sc = [
            _mm256_shuffle_epi32::<0b01_01_00_00>(sa),
            _mm256_shuffle_epi32::<0b11_11_10_10>(sa),
            _mm256_shuffle_epi32::<0b01_01_00_00>(sb),
            _mm256_shuffle_epi32::<0b11_11_10_10>(sb),
        ];
        let mut sumi = _mm256_setzero_si256();
        let q8 = yb.qs.as_chunks::<32>().0.chunks_exact(2);
        for ((q4, q8), sc) in xb.qs.as_chunks::<32>().0.iter().zip(q8).zip(sc) {
            let q4 = load_u8x32(q4);
            let pl = dp(_mm256_and_si256(q4, m4), load_i8x32(&q8[0]));
            let ph = dp(
                _mm256_and_si256(_mm256_srli_epi16::<4>(q4), m4),
                load_i8x32(&q8[1]),
            );
            sumi = dpw(sumi, _mm256_packs_epi32(pl, ph), sc);
        }
        acc = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(sumi), acc);
    }
    hsum_f32x8(_mm256_add_ps(acc, accm))
}

/// Q6_K x Q8_K.
///
/// # Safety
/// The CPU must support AVX2, FMA, F16C, AVX-512 F/BW/VL and VNNI.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
pub(crate) unsafe fn vec_dot_q6_k_q8_k(x: &[BlockQ6K], y: &[BlockQ8K]) -> f32 {
    let t = f16_table();
    let m4 = _mm256_set1_epi8(0x0f);
    let mut acc = _mm256_setzero_ps();
    for (xb, yb) in x.iter().zip(y) {
        let d = _mm256_set1_ps(h2f_t(t, xb.d) * yb.d);
        let s8: &[u8; 16] = bytemuck::cast_ref(&xb.scales);
        let s16 = _mm256_cvtepi8_epi16(load_u8x16(s8));
        let sc = scales16(s16);
        // Starts from -32 sum sc bsums: -32 sc is within i16 and each
        // lane's two products at most 2^27.
        let neg32 = _mm256_sub_epi16(_mm256_setzero_si256(), _mm256_slli_epi16::<5>(s16));
        // SAFETY: `bsums` is 32 readable bytes; `loadu` has no alignment
        // requirement.
        let bsums = unsafe { _mm256_loadu_si256(yb.bsums.as_ptr().cast()) };
        let mut sumi = dpw(_mm256_setzero_si256(), bsums, neg32);
        let halves = xb
            .ql
            .as_chunks::<64>()
            .0
            .iter()
            .zip(xb.qh.as_chunks::<32>().0);
        let q8 = yb.qs.as_chunks::<32>().0.chunks_exact(4);
        for (c, ((ql, qh), q8)) in halves.zip(q8).enumerate() {
            let (ql, _) = ql.as_chunks::<32>();
            let (a, b) = (load_u8x32(&ql[0]), load_u8x32(&ql[1]));
            let h = load_u8x32(qh);
            // The high two bits of each code moved to bits 4..6.
            let h0 = _mm256_slli_epi16::<4>(_mm256_and_si256(h, _mm256_set1_epi8(3)));
            let h1 = _mm256_slli_epi16::<2>(_mm256_and_si256(h, _mm256_set1_epi8(12)));
            let h2 = _mm256_and_si256(h, _mm256_set1_epi8(48));
            let h3 = _mm256_srli_epi16::<2>(_mm256_and_si256(h, _mm256_set1_epi8(-64)));
            let q = [
                and_or(a, m4, h0),
                and_or(b, m4, h1),
                and_or(_mm256_srli_epi16::<4>(a), m4, h2),
                and_or(_mm256_srli_epi16::<4>(b), m4, h3),
            ];
            let p: [__m256i; 4] = std::array::from_fn(|k| dp(q[k], load_i8x32(&q8[k])));
            sumi = dpw(sumi, _mm256_packs_epi32(p[0], p[1]), sc[2 * c]);
            sumi = dpw(sumi, _mm256_packs_epi32(p[2], p[3]), sc[2 * c + 1]);
        }
        acc = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(sumi), acc);
    }
    hsum_f32x8(acc)
}
