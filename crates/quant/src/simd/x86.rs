//! x86_64 AVX2 (+ FMA + F16C) kernels.
//!
//! Every function here is compiled with `#[target_feature]` and chosen at
//! run time by [`super::dispatch`]; nothing assumes the build machine's CPU.
//! The public-in-crate kernels are `unsafe fn` only because of that
//! precondition: they take slices, never read or write outside them, and
//! expect the caller ([`super::dispatch`]) to have checked the lengths (a
//! length mismatch makes them process the shorter side, never more).
//!
//! # Exactness
//!
//! * The dequantizers perform, per element, the same IEEE binary32
//!   operations in the same order as the scalar ones in [`crate::legacy`] and
//!   [`crate::kquants`] (a multiply, then a separate subtract; never FMA), so
//!   their output is bit-identical. f16 -> f32 through F16C is exact.
//! * The Q8_0 and Q8_K quantizers reproduce the scalar reference bytes:
//!   `roundf` (halves away from zero) is built from two truncations of exact
//!   values, C's `(int8_t)` cast is `cvttps2dq` (which, like the scalar
//!   model of gcc's code, gives `INT_MIN` for NaN and out-of-range values)
//!   followed by keeping the low byte, and ggml's `nearest_int` bit trick is
//!   the same float add and integer mask. The per-block scale arithmetic is
//!   the scalar code's, and f32 -> f16 rounds to nearest even in F16C as in
//!   the scalar conversion. Non-finite inputs never reach these kernels (the
//!   dispatcher hands them to the scalar code, which reports them).
//! * The dot products (Q4_0, Q5_0, Q8_0 x Q8_0; Q4_1, Q5_1 x Q8_1; Q2_K,
//!   Q3_K, Q4_K, Q5_K, Q6_K x Q8_K) compute each block's integer sum
//!   exactly, for any block bytes. Signed-by-signed products go through
//!   16-bit lanes, or an unsigned operand with a separate offset correction:
//!   `(q - 8) y = q y - 8 y` for Q4_0, `nibble y - 16 y`
//!   where the fifth bit is clear for Q5_0, `ql y - 4 y` where the high bit
//!   is clear for Q3_K (llama.cpp's `_mm256_sign_epi8` trick, which its Q5_0
//!   kernel uses, gets `x < 0, y = -128` wrong). Every `maddubs` pair sum
//!   stays inside i16 (at most `2 * 63 * 128`). The Q2_K/Q4_K/Q5_K mins and
//!   Q6_K's `- 32` offset meet the stored `bsums` in 32-bit sums (llama.cpp's Q4_K/Q5_K add pairs of
//!   them in 16 bits first). The f32 accumulation then follows llama.cpp's
//!   AVX2 kernels (FMA, 8 lanes), not the scalar order, so the result can
//!   differ from the scalar dot in the last bits: the legacy types use four
//!   accumulators, with the Q4_1/Q5_1 `m * s` offsets summed apart and added
//!   at the end like llama.cpp's `summs`; the Q2_K/Q4_K/Q5_K mins have their
//!   own accumulator. (The AVX2 Q4_1/Q5_1/Q2_K kernels now live in
//!   x86_avx2legacy.rs; [`sum_blocks_offset`] serves the VNNI ones.) The
//!   Q4_0/Q5_0/Q8_0 block scales come from a table of every f16's f32
//!   value (exact, as F16C), so their products are the scalar code's.
//! * IQ4_NL x Q8_0 and IQ4_XS x Q8_K look the nibbles up in the codebook
//!   (`pshufb`) and multiply as `|y| * (sign(y) v)` in `maddubs`: exact for
//!   every byte because no codebook value is -128 (see [`iq4_pairs`]).
//!   (The IQ4_XS dot products live in x86_iq4vnni.rs.)
//!   The IQ4 dequantizers are one multiply per value, as the scalar ones.

use std::arch::x86_64::*;

use half::f16;

use crate::iquants::grids::KVALUES_IQ4NL;
use crate::iquants::{BlockIq4Nl, BlockIq4Xs, Q8_0_BYTES};
use crate::kquants::{BlockQ3K, BlockQ4K, BlockQ5K, BlockQ6K, BlockQ8K, QK_K};
use crate::legacy::{BlockQ4_0, BlockQ4_1, BlockQ5_0, BlockQ5_1, BlockQ8_0, BlockQ8_1, QK8_0};

// ------------------------------------------------------------------ helpers

/// Loads 32 bytes.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn load_u8x32(b: &[u8; 32]) -> __m256i {
    // SAFETY: `b` is 32 readable bytes and `loadu` has no alignment requirement.
    unsafe { _mm256_loadu_si256(b.as_ptr().cast()) }
}

/// Loads 32 signed bytes.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn load_i8x32(b: &[i8; 32]) -> __m256i {
    // SAFETY: `b` is 32 readable bytes and `loadu` has no alignment requirement.
    unsafe { _mm256_loadu_si256(b.as_ptr().cast()) }
}

/// Loads 16 bytes.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn load_u8x16(b: &[u8; 16]) -> __m128i {
    // SAFETY: `b` is 16 readable bytes and `loadu` has no alignment requirement.
    unsafe { _mm_loadu_si128(b.as_ptr().cast()) }
}

/// Loads 16 signed bytes.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn load_i8x16(b: &[i8; 16]) -> __m128i {
    // SAFETY: `b` is 16 readable bytes and `loadu` has no alignment requirement.
    unsafe { _mm_loadu_si128(b.as_ptr().cast()) }
}

/// Loads sixteen `i16`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn load_i16x16(b: &[i16; 16]) -> __m256i {
    // SAFETY: `b` is 32 readable bytes and `loadu` has no alignment requirement.
    unsafe { _mm256_loadu_si256(b.as_ptr().cast()) }
}

/// Loads eight `f32`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn load_f32x8(x: &[f32; 8]) -> __m256 {
    // SAFETY: `x` is 32 readable bytes and `loadu` has no alignment requirement.
    unsafe { _mm256_loadu_ps(x.as_ptr()) }
}

/// Stores eight `f32`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn store_f32x8(out: &mut [f32; 8], v: __m256) {
    // SAFETY: `out` is 32 writable bytes and `storeu` has no alignment requirement.
    unsafe { _mm256_storeu_ps(out.as_mut_ptr(), v) }
}

/// Stores 32 signed bytes.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn store_i8x32(out: &mut [i8; 32], v: __m256i) {
    // SAFETY: `out` is 32 writable bytes and `storeu` has no alignment requirement.
    unsafe { _mm256_storeu_si256(out.as_mut_ptr().cast(), v) }
}

/// f16 -> f32 through F16C (exact, like the scalar conversion), in all
/// eight lanes.
///
/// Scales stay in vectors from here on, every lane holding the scalar
/// code's value: a scalar conversion (`_mm_cvtsi32_si128`, `_mm_set1_epi16`
/// then lane 0) is lowered by LLVM to an insert into whatever register is
/// free, often an accumulator, which chains each block to the previous
/// block's FMA.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn h2f_x8(h: f16) -> __m256 {
    _mm256_cvtph_ps(_mm_set1_epi16(h.to_bits() as i16))
}

/// Every f16 bit pattern's f32 value (exact), ggml's `ggml_table_f32_f16`:
/// the legacy dot products read their two per-block scales here, two loads
/// in place of two vector conversions, as llama.cpp's x86 build does.
/// Built at compile time (256 KiB of read-only data), so a kernel reads it
/// without a first-use check.
#[inline(always)]
pub(super) fn f16_table() -> &'static [f32; 1 << 16] {
    static TABLE: [f32; 1 << 16] = {
        let mut t = [0f32; 1 << 16];
        let mut bits = 0usize;
        while bits < 1 << 16 {
            t[bits] = f16::from_bits(bits as u16).to_f32_const();
            bits += 1;
        }
        t
    };
    &TABLE
}

/// `h` as f32 through [`f16_table`] (exact; no bounds check, as every `u16`
/// indexes the table).
#[inline(always)]
pub(super) fn h2f_t(table: &[f32; 1 << 16], h: f16) -> f32 {
    table[usize::from(h.to_bits())]
}

/// f32 -> f16 through F16C, rounding to nearest even: the scalar
/// conversion's rounding, for every finite and infinite input.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn f2h(x: f32) -> f16 {
    let h = _mm_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(_mm_set_ss(x));
    f16::from_bits(_mm_extract_epi16::<0>(h) as u16)
}

/// Horizontal sum of eight floats (llama.cpp's `hsum_float_8` order).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn hsum_f32x8(x: __m256) -> f32 {
    let r = _mm_add_ps(_mm256_extractf128_ps::<1>(x), _mm256_castps256_ps128(x));
    hsum_f32x4(r)
}

/// Horizontal sum of four floats.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn hsum_f32x4(r: __m128) -> f32 {
    let r = _mm_add_ps(r, _mm_movehl_ps(r, r));
    let r = _mm_add_ss(r, _mm_movehdup_ps(r));
    _mm_cvtss_f32(r)
}

/// Horizontal signed maximum of eight `i32`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn hmax_i32x8(v: __m256i) -> i32 {
    let m = _mm_max_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256::<1>(v));
    let m = _mm_max_epi32(m, _mm_shuffle_epi32::<0b01_00_11_10>(m));
    let m = _mm_max_epi32(m, _mm_shuffle_epi32::<0b10_11_00_01>(m));
    _mm_cvtsi128_si32(m)
}

/// Bits of `|x|` as `i32` (monotonic in `|x|` for non-NaN values).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn abs_bits(x: __m256) -> __m256i {
    _mm256_and_si256(_mm256_castps_si256(x), _mm256_set1_epi32(0x7fff_ffff))
}

/// The four groups of eight bytes of a 32-byte vector, sign-extended and
/// converted to f32 (exact).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn i8x32_to_f32(v: __m256i) -> [__m256; 4] {
    let lo = _mm256_castsi256_si128(v);
    let hi = _mm256_extracti128_si256::<1>(v);
    [
        _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(lo)),
        _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128::<8>(lo))),
        _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(hi)),
        _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128::<8>(hi))),
    ]
}

/// Writes `q * d` for 32 quants (as f32) into `out`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn store_scaled(out: &mut [f32; 32], q: [__m256; 4], d: __m256) {
    for (o, q) in out.as_chunks_mut::<8>().0.iter_mut().zip(q) {
        store_f32x8(o, _mm256_mul_ps(q, d));
    }
}

/// Writes `d * q - m` (multiply, then a separate subtract) into `out`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn store_scaled_offset(out: &mut [f32; 32], q: [__m256; 4], d: __m256, m: __m256) {
    for (o, q) in out.as_chunks_mut::<8>().0.iter_mut().zip(q) {
        store_f32x8(o, _mm256_sub_ps(_mm256_mul_ps(d, q), m));
    }
}

/// Packs the low byte of each `i32` of `i0..i3` (32 values, in order) into
/// one vector: C's store of an `int` into an `int8_t`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn low_bytes(i0: __m256i, i1: __m256i, i2: __m256i, i3: __m256i) -> __m256i {
    let ff = _mm256_set1_epi32(0xff);
    // Values 0..=255 pass both unsigned-saturating packs unchanged.
    let a = _mm256_packus_epi32(_mm256_and_si256(i0, ff), _mm256_and_si256(i1, ff));
    let b = _mm256_packus_epi32(_mm256_and_si256(i2, ff), _mm256_and_si256(i3, ff));
    let c = _mm256_packus_epi16(a, b);
    // The packs work per 128-bit lane; put the dwords back in order.
    _mm256_permutevar8x32_epi32(c, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7))
}

/// C's `(int)roundf(x)` (halves away from zero), as `cvttps2dq` converts:
/// `trunc(x + copysign(0.49999997, x))`, exact for every input. Adding the
/// largest float below one half rounds `x + 0.49999997` up to the next
/// integer exactly when `x`'s fraction is at least one half: at a fraction
/// of `0.5 - ulp` the sum stays below the integer (`0.49999997 + 0.49999997`
/// is representable below 1, and larger `x` have larger ulps), and at `0.5`
/// the sum lands within half an ulp of it; integers (all `|x| >= 2^23`) stay
/// put. NaN and infinities give `INT_MIN`, as the scalar code's conversion.
/// (`tests::rounding_matches_roundf` checks it against `f32::round` on every
/// float near a half-integer up to 2^24 and on random bits.)
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn round_half_away_i32(x: __m256) -> __m256i {
    let sign = _mm256_and_ps(x, _mm256_set1_ps(-0.0));
    let half = _mm256_or_ps(sign, _mm256_set1_ps(f32::from_bits(0x3eff_ffff)));
    _mm256_cvttps_epi32(_mm256_add_ps(x, half))
}

/// Whether every value is finite.
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C.
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn all_finite(x: &[f32]) -> bool {
    let (chunks, tail) = x.as_chunks::<8>();
    let mut m = _mm256_setzero_si256();
    for c in chunks {
        m = _mm256_max_epi32(m, abs_bits(load_f32x8(c)));
    }
    hmax_i32x8(m) < 0x7f80_0000 && tail.iter().all(|v| v.is_finite())
}

// ------------------------------------------------------------- dequantizers

/// `y = q * d` for Q8_0 blocks.
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C.
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn dequantize_row_q8_0(x: &[BlockQ8_0], y: &mut [f32]) {
    for (b, out) in x.iter().zip(y.as_chunks_mut::<QK8_0>().0) {
        let d = h2f_x8(b.d);
        store_scaled(out, i8x32_to_f32(load_i8x32(&b.qs)), d);
    }
}

/// `y = (q - 8) * d` for Q4_0 blocks.
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C.
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn dequantize_row_q4_0(x: &[BlockQ4_0], y: &mut [f32]) {
    let m4 = _mm_set1_epi8(0x0f);
    let eight = _mm_set1_epi8(8);
    for (b, out) in x.iter().zip(y.as_chunks_mut::<32>().0) {
        let d = h2f_x8(b.d);
        let q = load_u8x16(&b.qs);
        let lo = _mm_sub_epi8(_mm_and_si128(q, m4), eight);
        let hi = _mm_sub_epi8(_mm_and_si128(_mm_srli_epi16::<4>(q), m4), eight);
        store_scaled(out, i8x32_to_f32(_mm256_set_m128i(hi, lo)), d);
    }
}

/// `y = d * sc * q - dmin * m` for Q4_K blocks.
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C.
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn dequantize_row_q4_k(x: &[BlockQ4K], y: &mut [f32]) {
    let m4 = _mm256_set1_epi8(0x0f);
    for (b, yb) in x.iter().zip(y.as_chunks_mut::<QK_K>().0) {
        let d = h2f_x8(b.d);
        let min = h2f_x8(b.dmin);
        // ggml's `get_scale_min_k4` for j = 0..8: scales, then mins.
        let sm = k4_scales_mins(&b.scales);
        let outs = yb.as_chunks_mut::<32>().0;
        for (c, (q, out)) in
            b.qs.as_chunks::<32>()
                .0
                .iter()
                .zip(outs.chunks_exact_mut(2))
                .enumerate()
        {
            // The scalar `d * sc as f32` and `min * m as f32`, in every lane.
            let (sc, m) = (&sm[2 * c..2 * c + 2], &sm[8 + 2 * c..8 + 2 * c + 2]);
            let d1 = _mm256_mul_ps(d, _mm256_set1_ps(sc[0] as f32));
            let m1 = _mm256_mul_ps(min, _mm256_set1_ps(m[0] as f32));
            let d2 = _mm256_mul_ps(d, _mm256_set1_ps(sc[1] as f32));
            let m2 = _mm256_mul_ps(min, _mm256_set1_ps(m[1] as f32));
            let q = load_u8x32(q);
            let lo = _mm256_and_si256(q, m4);
            let hi = _mm256_and_si256(_mm256_srli_epi16::<4>(q), m4);
            if let [o1, o2] = out {
                store_scaled_offset(o1, i8x32_to_f32(lo), d1, m1);
                store_scaled_offset(o2, i8x32_to_f32(hi), d2, m2);
            }
        }
    }
}

/// `y = d * sc * (q + 16 h) - dmin * m` for Q5_K blocks.
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C.
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn dequantize_row_q5_k(x: &[BlockQ5K], y: &mut [f32]) {
    let m4 = _mm256_set1_epi8(0x0f);
    let sixteen = _mm256_set1_epi8(16);
    for (b, yb) in x.iter().zip(y.as_chunks_mut::<QK_K>().0) {
        let d = h2f_x8(b.d);
        let min = h2f_x8(b.dmin);
        // ggml's `get_scale_min_k4` for j = 0..8: scales, then mins.
        let sm = k4_scales_mins(&b.scales);
        let qh = load_u8x32(&b.qh);
        let outs = yb.as_chunks_mut::<32>().0;
        for (c, (q, out)) in
            b.qs.as_chunks::<32>()
                .0
                .iter()
                .zip(outs.chunks_exact_mut(2))
                .enumerate()
        {
            // The scalar `d * sc as f32` and `min * m as f32`, in every lane.
            let (sc, m) = (&sm[2 * c..2 * c + 2], &sm[8 + 2 * c..8 + 2 * c + 2]);
            let d1 = _mm256_mul_ps(d, _mm256_set1_ps(sc[0] as f32));
            let m1 = _mm256_mul_ps(min, _mm256_set1_ps(m[0] as f32));
            let d2 = _mm256_mul_ps(d, _mm256_set1_ps(sc[1] as f32));
            let m2 = _mm256_mul_ps(min, _mm256_set1_ps(m[1] as f32));
            let u1 = _mm256_set1_epi8((1u8 << (2 * c)) as i8);
            let u2 = _mm256_set1_epi8((2u8 << (2 * c)) as i8);
            let h1 = _mm256_and_si256(_mm256_cmpeq_epi8(_mm256_and_si256(qh, u1), u1), sixteen);
            let h2 = _mm256_and_si256(_mm256_cmpeq_epi8(_mm256_and_si256(qh, u2), u2), sixteen);
            let q = load_u8x32(q);
            let lo = _mm256_or_si256(_mm256_and_si256(q, m4), h1);
            let hi = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16::<4>(q), m4), h2);
            if let [o1, o2] = out {
                store_scaled_offset(o1, i8x32_to_f32(lo), d1, m1);
                store_scaled_offset(o2, i8x32_to_f32(hi), d2, m2);
            }
        }
    }
}

/// The four 32-quant vectors (values 0..=63) of one 128-element half of a
/// Q6_K block, in element order.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn q6_k_quants(ql: &[u8; 64], qh: &[u8; 32]) -> [__m256i; 4] {
    let m4 = _mm256_set1_epi8(0x0f);
    let m2 = _mm256_set1_epi8(3);
    let (ql, _) = ql.as_chunks::<32>();
    let (a, b) = (load_u8x32(&ql[0]), load_u8x32(&ql[1]));
    let h = load_u8x32(qh);
    let h0 = _mm256_slli_epi16::<4>(_mm256_and_si256(h, m2));
    let h1 = _mm256_slli_epi16::<4>(_mm256_and_si256(_mm256_srli_epi16::<2>(h), m2));
    let h2 = _mm256_slli_epi16::<4>(_mm256_and_si256(_mm256_srli_epi16::<4>(h), m2));
    let h3 = _mm256_slli_epi16::<4>(_mm256_and_si256(_mm256_srli_epi16::<6>(h), m2));
    [
        _mm256_or_si256(_mm256_and_si256(a, m4), h0),
        _mm256_or_si256(_mm256_and_si256(b, m4), h1),
        _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16::<4>(a), m4), h2),
        _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16::<4>(b), m4), h3),
    ]
}

/// `y = d * sc * (q - 32)` for Q6_K blocks.
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C.
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn dequantize_row_q6_k(x: &[BlockQ6K], y: &mut [f32]) {
    let m32 = _mm256_set1_epi8(32);
    for (b, yb) in x.iter().zip(y.as_chunks_mut::<QK_K>().0) {
        let d = h2f_x8(b.d);
        let halves =
            b.ql.as_chunks::<64>()
                .0
                .iter()
                .zip(b.qh.as_chunks::<32>().0);
        let outs = yb.as_chunks_mut::<32>().0;
        for (c, ((ql, qh), out)) in halves.zip(outs.chunks_exact_mut(4)).enumerate() {
            let qs = q6_k_quants(ql, qh);
            for (k, (q, o)) in qs.into_iter().zip(out.iter_mut()).enumerate() {
                let q = i8x32_to_f32(_mm256_sub_epi8(q, m32));
                let is = 8 * c + 2 * k;
                // Scalar order: (d * sc) * q.
                let s0 = _mm256_mul_ps(d, _mm256_set1_ps(b.scales[is] as f32));
                let s1 = _mm256_mul_ps(d, _mm256_set1_ps(b.scales[is + 1] as f32));
                let [q0, q1, q2, q3] = q;
                let (o, _) = o.as_chunks_mut::<8>();
                if let [o0, o1, o2, o3] = o {
                    store_f32x8(o0, _mm256_mul_ps(s0, q0));
                    store_f32x8(o1, _mm256_mul_ps(s0, q1));
                    store_f32x8(o2, _mm256_mul_ps(s1, q2));
                    store_f32x8(o3, _mm256_mul_ps(s1, q3));
                }
            }
        }
    }
}

// --------------------------------------------------------------- quantizers

/// The scales of eight Q8_0/Q8_1 blocks, each lane the scalar code's for its
/// block: `d = amax / 127` (its f16 bits and its f32 value) and
/// `id = d != 0 ? 1 / d : 0`. One vector division each for eight blocks, and
/// the eight horizontal maxima reduced together, in place of a scalar chain
/// per block.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn q8_scales_x8(xs: &[[f32; 32]; 8]) -> ([u16; 8], __m256, [f32; 8]) {
    let m: [__m256i; 8] = std::array::from_fn(|k| {
        let v = load_block(&xs[k]);
        let m01 = _mm256_max_epi32(abs_bits(v[0]), abs_bits(v[1]));
        let m23 = _mm256_max_epi32(abs_bits(v[2]), abs_bits(v[3]));
        _mm256_max_epi32(m01, m23)
    });
    // Pairwise: lanes of `max(unpacklo, unpackhi)` of blocks a, b hold
    // [a0|a2, b0|b2, a1|a3, b1|b3] per 128-bit half ('|' = max) ...
    let pair = |a: __m256i, b: __m256i| {
        _mm256_max_epi32(_mm256_unpacklo_epi32(a, b), _mm256_unpackhi_epi32(a, b))
    };
    // ... then the two halves of each such pair of pairs, giving each
    // block's maximum over its 128-bit half, blocks 4k..4k + 4 in order ...
    let quad = |p: __m256i, q: __m256i| {
        _mm256_max_epi32(_mm256_unpacklo_epi64(p, q), _mm256_unpackhi_epi64(p, q))
    };
    let lo = quad(pair(m[0], m[1]), pair(m[2], m[3]));
    let hi = quad(pair(m[4], m[5]), pair(m[6], m[7]));
    // ... and the two 128-bit halves: block k's maximum in lane k.
    let amax = _mm256_max_epi32(
        _mm256_permute2x128_si256::<0x20>(lo, hi),
        _mm256_permute2x128_si256::<0x31>(lo, hi),
    );
    // For finite values the largest |x| has the largest bits.
    let d = _mm256_div_ps(_mm256_castsi256_ps(amax), _mm256_set1_ps(127.0));
    let nonzero = _mm256_cmp_ps::<_CMP_NEQ_OQ>(d, _mm256_setzero_ps());
    let id = _mm256_and_ps(_mm256_div_ps(_mm256_set1_ps(1.0), d), nonzero);
    let mut dh = [0u16; 8];
    // SAFETY: `dh` is 16 writable bytes (`storeu`: any alignment).
    unsafe {
        _mm_storeu_si128(
            dh.as_mut_ptr().cast(),
            _mm256_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(d),
        )
    };
    let mut ids = [0f32; 8];
    // SAFETY: `ids` is 8 writable f32 (`storeu`: any alignment).
    unsafe { _mm256_storeu_ps(ids.as_mut_ptr(), id) };
    (dh, d, ids)
}

/// The scale of one Q8_0/Q8_1 block, as [`q8_scales_x8`] computes it per
/// lane: `(d, id)`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn q8_scale(xb: &[f32; 32]) -> (f32, f32) {
    let v = load_block(xb);
    let m01 = _mm256_max_epi32(abs_bits(v[0]), abs_bits(v[1]));
    let m23 = _mm256_max_epi32(abs_bits(v[2]), abs_bits(v[3]));
    let amax = f32::from_bits(hmax_i32x8(_mm256_max_epi32(m01, m23)) as u32);
    let d = amax / 127.0;
    (d, if d != 0.0 { 1.0 / d } else { 0.0 })
}

/// The 32 quants `roundf(x * id)` of a block, as C's `int8_t` stores them.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn q8_quants(xb: &[f32; 32], id: f32) -> __m256i {
    let idv = _mm256_set1_ps(id);
    let q = load_block(xb).map(|v| round_half_away_i32(_mm256_mul_ps(v, idv)));
    low_bytes(q[0], q[1], q[2], q[3])
}

/// The sum of 32 signed bytes (exact in i32).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn sum_i8x32(qs: __m256i) -> i32 {
    // 1 * q in pairs (within i16), then widened.
    let pairs = _mm256_maddubs_epi16(_mm256_set1_epi8(1), qs);
    hsum_i32x8(_mm256_madd_epi16(pairs, _mm256_set1_epi16(1)))
}

/// ggml's `quantize_row_q8_0_ref`, byte for byte. The values must be finite
/// (the dispatcher checks).
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C.
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn quantize_row_q8_0(x: &[f32], y: &mut [BlockQ8_0]) {
    let (xs, _) = x.as_chunks::<QK8_0>();
    let n = xs.len().min(y.len());
    let (x8, xr) = xs[..n].as_chunks::<8>();
    let (y8, yr) = y[..n].as_chunks_mut::<8>();
    for (xb8, yb8) in x8.iter().zip(y8) {
        let (dh, _, ids) = q8_scales_x8(xb8);
        for (((xb, yb), h), id) in xb8.iter().zip(yb8).zip(dh).zip(ids) {
            yb.d = f16::from_bits(h);
            store_i8x32(&mut yb.qs, q8_quants(xb, id));
        }
    }
    for (xb, yb) in xr.iter().zip(yr) {
        let (d, id) = q8_scale(xb);
        yb.d = f2h(d);
        store_i8x32(&mut yb.qs, q8_quants(xb, id));
    }
}

/// `block_q8_1`s from f32 rows: [`quantize_row_q8_0`]'s quants and scale,
/// plus `s = f16(sum(q) * d)` as the scalar reference computes it (the sum
/// of the stored bytes, exact in i32, then one f32 product).
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C. Finite input (the dispatcher
/// checks).
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn quantize_row_q8_1(x: &[f32], y: &mut [BlockQ8_1]) {
    let (xs, _) = x.as_chunks::<QK8_0>();
    let n = xs.len().min(y.len());
    let (x8, xr) = xs[..n].as_chunks::<8>();
    let (y8, yr) = y[..n].as_chunks_mut::<8>();
    for (xb8, yb8) in x8.iter().zip(y8) {
        let (dh, d, ids) = q8_scales_x8(xb8);
        let mut sums = [0i32; 8];
        for ((((xb, yb), h), id), sum) in xb8
            .iter()
            .zip(yb8.iter_mut())
            .zip(dh)
            .zip(ids)
            .zip(&mut sums)
        {
            let qs = q8_quants(xb, id);
            *sum = sum_i8x32(qs);
            yb.d = f16::from_bits(h);
            store_i8x32(&mut yb.qs, qs);
        }
        // SAFETY: `sums` is 8 readable i32 (`loadu`: any alignment).
        let sums = unsafe { _mm256_loadu_si256(sums.as_ptr().cast()) };
        let s = _mm256_mul_ps(_mm256_cvtepi32_ps(sums), d);
        let mut sh = [0u16; 8];
        // SAFETY: `sh` is 16 writable bytes (`storeu`: any alignment).
        unsafe {
            _mm_storeu_si128(
                sh.as_mut_ptr().cast(),
                _mm256_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(s),
            )
        };
        for (yb, h) in yb8.iter_mut().zip(sh) {
            yb.s = f16::from_bits(h);
        }
    }
    for (xb, yb) in xr.iter().zip(yr) {
        let (d, id) = q8_scale(xb);
        let qs = q8_quants(xb, id);
        yb.d = f2h(d);
        yb.s = f2h(sum_i8x32(qs) as f32 * d);
        store_i8x32(&mut yb.qs, qs);
    }
}

/// Horizontal sum of eight `i32` (wrapping, as the lanes' own adds).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn hsum_i32x8(v: __m256i) -> i32 {
    let s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256::<1>(v));
    let s = _mm_add_epi32(s, _mm_shuffle_epi32::<0b01_00_11_10>(s));
    let s = _mm_add_epi32(s, _mm_shuffle_epi32::<0b10_11_00_01>(s));
    _mm_cvtsi128_si32(s)
}

/// A block of 32 floats as four vectors.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn load_block(xb: &[f32; 32]) -> [__m256; 4] {
    let (v, _) = xb.as_chunks::<8>();
    [
        load_f32x8(&v[0]),
        load_f32x8(&v[1]),
        load_f32x8(&v[2]),
        load_f32x8(&v[3]),
    ]
}

/// Bit `i` set where element `i` of the block satisfies the comparison.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn mask32(m: [__m256; 4]) -> u32 {
    let b = m.map(|m| _mm256_movemask_ps(m) as u32);
    b[0] | (b[1] << 8) | (b[2] << 16) | (b[3] << 24)
}

/// The value ggml's `if (amax < fabsf(v)) { amax = fabsf(v); max = v; }`
/// loop keeps, starting from zeros: the first element of largest magnitude,
/// or `+0.0` when every element is a zero. Finite input.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn first_abs_max(xb: &[f32; 32], v: [__m256; 4]) -> f32 {
    let m01 = _mm256_max_epi32(abs_bits(v[0]), abs_bits(v[1]));
    let m23 = _mm256_max_epi32(abs_bits(v[2]), abs_bits(v[3]));
    let amax = hmax_i32x8(_mm256_max_epi32(m01, m23));
    if amax == 0 {
        return 0.0;
    }
    let a = _mm256_set1_epi32(amax);
    let hits = v.map(|v| _mm256_castsi256_ps(_mm256_cmpeq_epi32(abs_bits(v), a)));
    xb[mask32(hits).trailing_zeros() as usize]
}

/// The `(min, max)` of ggml's `if (v < min) min = v; if (v > max) max = v;`
/// loop from `(FLT_MAX, -FLT_MAX)`. The values are the true extremes; only a
/// zero extreme can differ in sign between orders, and the loop keeps the
/// first zero it meets, so that case looks the first one up. Finite input.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn first_min_max(xb: &[f32; 32], v: [__m256; 4]) -> (f32, f32) {
    let lo = _mm256_min_ps(_mm256_min_ps(v[0], v[1]), _mm256_min_ps(v[2], v[3]));
    let hi = _mm256_max_ps(_mm256_max_ps(v[0], v[1]), _mm256_max_ps(v[2], v[3]));
    let lo = _mm_min_ps(_mm256_castps256_ps128(lo), _mm256_extractf128_ps::<1>(lo));
    let hi = _mm_max_ps(_mm256_castps256_ps128(hi), _mm256_extractf128_ps::<1>(hi));
    let lo = _mm_min_ps(lo, _mm_movehl_ps(lo, lo));
    let hi = _mm_max_ps(hi, _mm_movehl_ps(hi, hi));
    let mut min = _mm_cvtss_f32(_mm_min_ss(lo, _mm_movehdup_ps(lo)));
    let mut max = _mm_cvtss_f32(_mm_max_ss(hi, _mm_movehdup_ps(hi)));
    if min == 0.0 || max == 0.0 {
        let z = _mm256_setzero_ps();
        let zeros = mask32(v.map(|v| _mm256_cmp_ps::<_CMP_EQ_OQ>(v, z)));
        let first_zero = xb[zeros.trailing_zeros() as usize];
        if min == 0.0 {
            min = first_zero;
        }
        if max == 0.0 {
            max = first_zero;
        }
    }
    (min, max)
}

/// C's `(int8_t)(x)` of each lane (`cvttps2dq`, low byte, sign-extended).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn c_i8(x: __m256) -> __m256i {
    _mm256_srai_epi32::<24>(_mm256_slli_epi32::<24>(_mm256_cvttps_epi32(x)))
}

/// `MIN(hi, (int8_t)((x + add) * 1))` per element of the four vectors, as
/// 32 low bytes in element order.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn levels_i8(q: [__m256; 4], add: f32, hi: i32) -> __m256i {
    let a = _mm256_set1_ps(add);
    let h = _mm256_set1_epi32(hi);
    let l = q.map(|q| _mm256_min_epi32(h, c_i8(_mm256_add_ps(q, a))));
    low_bytes(l[0], l[1], l[2], l[3])
}

/// ggml's nibble packing: byte `j` = `L[j] | L[j + 16] << 4` (low bytes).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn pack_nibbles_x32(levels: __m256i) -> [u8; 16] {
    let lo = _mm256_castsi256_si128(levels);
    let hi = _mm256_extracti128_si256::<1>(levels);
    let hi = _mm_and_si128(_mm_slli_epi16::<4>(hi), _mm_set1_epi8(0xF0u8 as i8));
    let mut out = [0u8; 16];
    // SAFETY: `out` is 16 writable bytes; `storeu` has no alignment requirement.
    unsafe { _mm_storeu_si128(out.as_mut_ptr().cast(), _mm_or_si128(lo, hi)) };
    out
}

/// Q5 packing: low nibbles as [`pack_nibbles_x32`] of `L & 15`, and `qh`
/// bit `i` = bit 4 of `L[i]`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn pack_q5_x32(levels: __m256i) -> ([u8; 16], [u8; 4]) {
    let qh = _mm256_movemask_epi8(_mm256_slli_epi16::<3>(levels)) as u32;
    let low = _mm256_and_si256(levels, _mm256_set1_epi8(0x0F));
    (pack_nibbles_x32(low), qh.to_le_bytes())
}

/// `d != 0 ? 1/d : 0`, as ggml.
#[inline]
fn inv_or_zero(d: f32) -> f32 {
    if d != 0.0 { 1.0 / d } else { 0.0 }
}

/// ggml's `quantize_row_q4_0_ref`, byte for byte. The values must be finite
/// (the caller checks).
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C.
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn quantize_row_q4_0(x: &[f32], y: &mut [BlockQ4_0]) {
    for (xb, yb) in x.as_chunks::<32>().0.iter().zip(y.iter_mut()) {
        let v = load_block(xb);
        let d = first_abs_max(xb, v) / -8.0;
        let id = _mm256_set1_ps(inv_or_zero(d));
        let q = v.map(|v| _mm256_mul_ps(v, id));
        yb.d = f2h(d);
        yb.qs = pack_nibbles_x32(levels_i8(q, 8.5, 15));
    }
}

/// ggml's `quantize_row_q4_1_ref`, byte for byte (finite values).
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C.
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn quantize_row_q4_1(x: &[f32], y: &mut [BlockQ4_1]) {
    for (xb, yb) in x.as_chunks::<32>().0.iter().zip(y.iter_mut()) {
        let v = load_block(xb);
        let (min, max) = first_min_max(xb, v);
        let d = (max - min) / 15.0;
        let id = _mm256_set1_ps(inv_or_zero(d));
        let mv = _mm256_set1_ps(min);
        let q = v.map(|v| _mm256_mul_ps(_mm256_sub_ps(v, mv), id));
        yb.d = f2h(d);
        yb.m = f2h(min);
        yb.qs = pack_nibbles_x32(levels_i8(q, 0.5, 15));
    }
}

/// ggml's `quantize_row_q5_0_ref`, byte for byte (finite values).
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C.
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn quantize_row_q5_0(x: &[f32], y: &mut [BlockQ5_0]) {
    for (xb, yb) in x.as_chunks::<32>().0.iter().zip(y.iter_mut()) {
        let v = load_block(xb);
        let d = first_abs_max(xb, v) / -16.0;
        let id = _mm256_set1_ps(inv_or_zero(d));
        let q = v.map(|v| _mm256_mul_ps(v, id));
        yb.d = f2h(d);
        (yb.qs, yb.qh) = pack_q5_x32(levels_i8(q, 16.5, 31));
    }
}

/// ggml's `quantize_row_q5_1_ref`, byte for byte (finite values).
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C.
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn quantize_row_q5_1(x: &[f32], y: &mut [BlockQ5_1]) {
    for (xb, yb) in x.as_chunks::<32>().0.iter().zip(y.iter_mut()) {
        let v = load_block(xb);
        let (min, max) = first_min_max(xb, v);
        let d = (max - min) / 31.0;
        let id = _mm256_set1_ps(inv_or_zero(d));
        let mv = _mm256_set1_ps(min);
        let q = v.map(|v| _mm256_mul_ps(_mm256_sub_ps(v, mv), id));
        yb.d = f2h(d);
        yb.m = f2h(min);
        // `(uint8_t)(x + 0.5f)`: the low byte, no clamp.
        let a = _mm256_set1_ps(0.5);
        let l = q.map(|q| _mm256_cvttps_epi32(_mm256_add_ps(q, a)));
        (yb.qs, yb.qh) = pack_q5_x32(low_bytes(l[0], l[1], l[2], l[3]));
    }
}

/// ggml's `quantize_row_q8_K_ref`, byte for byte. The values must be finite
/// (the dispatcher checks).
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C.
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn quantize_row_q8_k(x: &[f32], y: &mut [BlockQ8K]) {
    for (xb, yb) in x.as_chunks::<QK_K>().0.iter().zip(y.iter_mut()) {
        let (xs, _) = xb.as_chunks::<8>();
        let mut m = _mm256_setzero_si256();
        for c in xs {
            m = _mm256_max_epi32(m, abs_bits(load_f32x8(c)));
        }
        let amax_bits = hmax_i32x8(m);
        if amax_bits == 0 {
            yb.d = 0.0;
            yb.qs = [0; QK_K];
            yb.bsums = [0; QK_K / 16];
            continue;
        }
        // The scalar code keeps the first value of largest magnitude.
        let target = _mm256_set1_epi32(amax_bits);
        let mut max = 0.0f32;
        for c in xs {
            let eq = _mm256_cmpeq_epi32(abs_bits(load_f32x8(c)), target);
            let mask = _mm256_movemask_ps(_mm256_castsi256_ps(eq));
            if mask != 0 {
                max = c[mask.trailing_zeros() as usize];
                break;
            }
        }
        let iscale = -127.0f32 / max;
        let sv = _mm256_set1_ps(iscale);
        let magic = _mm256_set1_ps(12_582_912.0);
        let mant = _mm256_set1_epi32(0x007f_ffff);
        let bias = _mm256_set1_epi32(0x0040_0000);
        let top = _mm256_set1_epi32(127);
        let mut bsums = [0i16; QK_K / 16];
        let groups = xs.chunks_exact(4).zip(yb.qs.as_chunks_mut::<32>().0);
        for ((g, q), bs) in groups.zip(bsums.as_chunks_mut::<2>().0) {
            let mut i = [_mm256_setzero_si256(); 4];
            for (i, c) in i.iter_mut().zip(g) {
                // nearest_int(iscale * x), then MIN(127, v).
                let v = _mm256_add_ps(_mm256_mul_ps(sv, load_f32x8(c)), magic);
                let v = _mm256_sub_epi32(_mm256_and_si256(_mm256_castps_si256(v), mant), bias);
                *i = _mm256_min_epi32(v, top);
            }
            let packed = low_bytes(i[0], i[1], i[2], i[3]);
            store_i8x32(q, packed);
            // Sums of each 16 quants: unsigned byte sums of q + 128, minus 16 * 128.
            let s = _mm256_sad_epu8(
                _mm256_xor_si256(packed, _mm256_set1_epi8(-128)),
                _mm256_setzero_si256(),
            );
            let lo = _mm256_castsi256_si128(s);
            let hi = _mm256_extracti128_si256::<1>(s);
            let s0 = _mm_cvtsi128_si32(_mm_add_epi64(lo, _mm_unpackhi_epi64(lo, lo)));
            let s1 = _mm_cvtsi128_si32(_mm_add_epi64(hi, _mm_unpackhi_epi64(hi, hi)));
            bs[0] = (s0 - 2048) as i16;
            bs[1] = (s1 - 2048) as i16;
        }
        yb.bsums = bsums;
        yb.d = 1.0 / iscale;
    }
}

// ------------------------------------------------------------- dot products

/// Sums `d * s` over the blocks, `(d, s) = f(x[i], y[i])`, in four
/// independent accumulators, so that the FMA latency never bounds the loop
/// (a legacy block's own work is only a few cycles).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn sum_blocks<X, Y>(x: &[X], y: &[Y], f: impl Fn(&X, &Y) -> (f32, __m256)) -> f32 {
    let (x4, xr) = x.as_chunks::<4>();
    let (y4, yr) = y.as_chunks::<4>();
    let mut acc = [_mm256_setzero_ps(); 4];
    for (xs, ys) in x4.iter().zip(y4) {
        for ((a, bx), by) in acc.iter_mut().zip(xs).zip(ys) {
            let (d, s) = f(bx, by);
            *a = _mm256_fmadd_ps(_mm256_set1_ps(d), s, *a);
        }
    }
    for (bx, by) in xr.iter().zip(yr) {
        let (d, s) = f(bx, by);
        acc[0] = _mm256_fmadd_ps(_mm256_set1_ps(d), s, acc[0]);
    }
    let [a0, a1, a2, a3] = acc;
    hsum_f32x8(_mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3)))
}

/// Sums `d * s + ms` over the blocks, `(dm, s) = f(x[i], y[i])` with
/// `dm = [d, ms, d, ms]`: the `d * s` terms as [`sum_blocks`] does, the
/// offset terms `ms` (lane 1) summed four blocks at a time into one more
/// accumulator, added once at the end as llama.cpp adds its scalar `summs`
/// (one accumulator per block would spill to the stack).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn sum_blocks_offset<X, Y>(
    x: &[X],
    y: &[Y],
    f: impl Fn(&X, &Y) -> (__m128, __m256),
) -> f32 {
    let (x4, xr) = x.as_chunks::<4>();
    let (y4, yr) = y.as_chunks::<4>();
    let mut acc = [_mm256_setzero_ps(); 4];
    let mut acc_m = _mm_setzero_ps();
    for (xs, ys) in x4.iter().zip(y4) {
        let mut dm = [_mm_setzero_ps(); 4];
        for (((a, m), bx), by) in acc.iter_mut().zip(&mut dm).zip(xs).zip(ys) {
            let s;
            (*m, s) = f(bx, by);
            *a = _mm256_fmadd_ps(_mm256_broadcastss_ps(*m), s, *a);
        }
        let [m0, m1, m2, m3] = dm;
        acc_m = _mm_add_ps(acc_m, _mm_add_ps(_mm_add_ps(m0, m1), _mm_add_ps(m2, m3)));
    }
    for (bx, by) in xr.iter().zip(yr) {
        let (dm, s) = f(bx, by);
        acc[0] = _mm256_fmadd_ps(_mm256_broadcastss_ps(dm), s, acc[0]);
        acc_m = _mm_add_ps(acc_m, dm);
    }
    let [a0, a1, a2, a3] = acc;
    hsum_f32x8(_mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3)))
        + _mm_cvtss_f32(_mm_movehdup_ps(acc_m))
}

/// Two f16 (a block's scale and its offset or sum) -> `[a, b, a, b]` as f32
/// through F16C (exact), one conversion for both.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn h2f_pair(a: f16, b: f16) -> __m128 {
    let bits = u32::from(a.to_bits()) | (u32::from(b.to_bits()) << 16);
    _mm_cvtph_ps(_mm_set1_epi32(bits as i32))
}

/// The 32 quants of a legacy 4-bit block, in element order: the low
/// nibbles of the 16 bytes, then the high ones (values 0..=15).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn nibbles_x32(qs: &[u8; 16]) -> __m256i {
    let q = load_u8x16(qs);
    _mm256_and_si256(
        _mm256_set_m128i(_mm_srli_epi16::<4>(q), q),
        _mm256_set1_epi8(0x0f),
    )
}

/// 32 bytes, byte `i` a copy of byte `i / 8` of `w` (one broadcast and one
/// `pshufb`): with a mask of bit `i % 8` per byte, one bit per byte.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn bit_bytes(w: &[u8; 4]) -> __m256i {
    _mm256_shuffle_epi8(
        _mm256_set1_epi32(i32::from_le_bytes(*w)),
        _mm256_set_epi64x(
            0x0303_0303_0303_0303,
            0x0202_0202_0202_0202,
            0x0101_0101_0101_0101,
            0,
        ),
    )
}

/// The fifth bits of a legacy 5-bit block as all-ones (bit set) or zero
/// bytes, in element order (bit `i` of the little-endian `qh`).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn q5_bits_x32(qh: &[u8; 4]) -> __m256i {
    // Byte i takes qh byte i / 8 ...
    let bytes = bit_bytes(qh);
    // ... and is all ones after setting every bit but bit i % 8 exactly
    // when that bit is set.
    let others = _mm256_set1_epi64x(0x7fbf_dfef_f7fb_fdfe);
    _mm256_cmpeq_epi8(_mm256_or_si256(bytes, others), _mm256_set1_epi8(-1))
}

/// The eight exact partial sums of `q * y` for 32 unsigned quants `q`
/// (0..=31) and 32 signed `y`: each `maddubs` pair sum is at most
/// `2 * 31 * 128` in magnitude, within i16.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn dot_u8_i8_x32(q: __m256i, y: __m256i) -> __m256i {
    _mm256_madd_epi16(_mm256_maddubs_epi16(q, y), _mm256_set1_epi16(1))
}

/// One Q4_0 x Q8_0 block: the product of the scales (as the scalar code's,
/// in every lane) and the eight exact partial integer sums as f32.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn q4_0_q8_0_block(t: &[f32; 1 << 16], bx: &BlockQ4_0, by: &BlockQ8_0) -> (f32, __m256) {
    let d = h2f_t(t, bx.d) * h2f_t(t, by.d);
    let qx = nibbles_x32(&bx.qs);
    let qy = load_i8x32(&by.qs);
    // (q - 8) * y = q * y - 8 * y, each pair sum within i16.
    let p = _mm256_sub_epi16(
        _mm256_maddubs_epi16(qx, qy),
        _mm256_maddubs_epi16(_mm256_set1_epi8(8), qy),
    );
    let s = _mm256_madd_epi16(p, _mm256_set1_epi16(1));
    (d, _mm256_cvtepi32_ps(s))
}

/// Q4_0 x Q8_0.
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C.
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn vec_dot_q4_0_q8_0(x: &[BlockQ4_0], y: &[BlockQ8_0]) -> f32 {
    let t = f16_table();
    sum_blocks(x, y, |bx, by| q4_0_q8_0_block(t, bx, by))
}

/// Q8_0 x Q8_0.
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C.
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn vec_dot_q8_0_q8_0(x: &[BlockQ8_0], y: &[BlockQ8_0]) -> f32 {
    let t = f16_table();
    let minus128 = _mm256_set1_epi8(-128);
    let ones = _mm256_set1_epi16(1);
    sum_blocks(x, y, |bx, by| {
        let d = h2f_t(t, bx.d) * h2f_t(t, by.d);
        let qx = load_i8x32(&bx.qs);
        let qy = load_i8x32(&by.qs);
        let bad = _mm256_cmpeq_epi8(qx, minus128);
        let s = if _mm256_testz_si256(bad, bad) == 1 {
            // No x is -128 (never, for blocks ggml's quantizer writes):
            // x * y = |y| * (x * sign(y)), where |y| read as unsigned is
            // exact for y = -128 and x * sign(y) fits in i8, so each
            // product is within 128 * 127 and a pair sum cannot saturate.
            let p = _mm256_maddubs_epi16(_mm256_abs_epi8(qy), _mm256_sign_epi8(qx, qy));
            _mm256_madd_epi16(p, ones)
        } else {
            // Signed x signed in 16-bit lanes: exact for every byte.
            let (xs, _) = bx.qs.as_chunks::<16>();
            let (ys, _) = by.qs.as_chunks::<16>();
            let p0 = _mm256_madd_epi16(
                _mm256_cvtepi8_epi16(load_i8x16(&xs[0])),
                _mm256_cvtepi8_epi16(load_i8x16(&ys[0])),
            );
            let p1 = _mm256_madd_epi16(
                _mm256_cvtepi8_epi16(load_i8x16(&xs[1])),
                _mm256_cvtepi8_epi16(load_i8x16(&ys[1])),
            );
            _mm256_add_epi32(p0, p1)
        };
        (d, _mm256_cvtepi32_ps(s))
    })
}

/// Q5_0 x Q8_0.
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C.
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn vec_dot_q5_0_q8_0(x: &[BlockQ5_0], y: &[BlockQ8_0]) -> f32 {
    let sixteen = _mm256_set1_epi8(16);
    let t = f16_table();
    sum_blocks(x, y, |bx, by| {
        let d = h2f_t(t, bx.d) * h2f_t(t, by.d);
        // q - 16 = nibble - 16 where the fifth bit is clear.
        let low = nibbles_x32(&bx.qs);
        let off = _mm256_andnot_si256(q5_bits_x32(&bx.qh), sixteen);
        let qy = load_i8x32(&by.qs);
        // nibble * y - off * y, each pair sum within i16 (llama.cpp makes
        // q - 16 signed and uses the sign trick, wrong for y = -128).
        let p = _mm256_sub_epi16(_mm256_maddubs_epi16(low, qy), _mm256_maddubs_epi16(off, qy));
        let s = _mm256_madd_epi16(p, _mm256_set1_epi16(1));
        (d, _mm256_cvtepi32_ps(s))
    })
}

/// The `utmp` unpacking of the Q4_K/Q5_K dot products: eight scales then
/// eight mins.
#[inline]
pub(super) fn k4_scales_mins(s: &[u8; 12]) -> [u8; 16] {
    const KMASK1: u32 = 0x3f3f_3f3f;
    const KMASK2: u32 = 0x0f0f_0f0f;
    const KMASK3: u32 = 0x0303_0303;
    let u0 = u32::from_le_bytes([s[0], s[1], s[2], s[3]]);
    let u1 = u32::from_le_bytes([s[4], s[5], s[6], s[7]]);
    let u2 = u32::from_le_bytes([s[8], s[9], s[10], s[11]]);
    let sc0 = u0 & KMASK1;
    let sc1 = (u2 & KMASK2) | (((u0 >> 6) & KMASK3) << 4);
    let mn0 = u1 & KMASK1;
    let mn1 = ((u2 >> 4) & KMASK2) | (((u1 >> 6) & KMASK3) << 4);
    let mut out = [0u8; 16];
    for (o, w) in out
        .as_chunks_mut::<4>()
        .0
        .iter_mut()
        .zip([sc0, sc1, mn0, mn1])
    {
        *o = w.to_le_bytes();
    }
    out
}

/// Per-block setup shared by Q4_K and Q5_K: accumulates the mins term into
/// `acc` and returns the eight scales as `i16` in both 128-bit lanes.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn k4_block_setup(scales: &[u8; 12], dmin: __m256, yb: &BlockQ8K, acc: &mut __m256) -> __m256i {
    let mins_and_scales = _mm256_cvtepu8_epi16(load_u8x16(&k4_scales_mins(scales)));
    let mins = _mm256_extracti128_si256::<1>(mins_and_scales);
    // Each min twice, against the two 16-quant sums of its 32 quants; the
    // products are summed in 32 bits, exact for any stored `bsums` (llama.cpp
    // adds the pairs in 16 bits first).
    let mins2 = _mm256_set_m128i(
        _mm_unpackhi_epi16(mins, mins),
        _mm_unpacklo_epi16(mins, mins),
    );
    let prod = _mm256_madd_epi16(mins2, load_i16x16(&yb.bsums));
    *acc = _mm256_fmadd_ps(dmin, _mm256_cvtepi32_ps(prod), *acc);
    let sc = _mm256_castsi256_si128(mins_and_scales);
    _mm256_set_m128i(sc, sc)
}

/// Broadcasts `i16` lane `k` (0..8) of each 128-bit lane.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn bcast_i16(v: __m256i, k: usize) -> __m256i {
    let b = (2 * k) as i16;
    _mm256_shuffle_epi8(v, _mm256_set1_epi16(((b + 1) << 8) | b))
}

/// Broadcasts `i16` lane `k` (0..7) of each 128-bit lane over the low
/// 128-bit lane and lane `k + 1` over the high one: the scales of the two
/// 16-quant halves of a 32-quant vector, for the Q2_K/Q3_K dots (whose
/// scales are per 16 quants).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn bcast_i16_pair(v: __m256i, k: usize) -> __m256i {
    let b = (2 * k) as i16;
    let lo = _mm_set1_epi16(((b + 1) << 8) | b);
    let hi = _mm_set1_epi16(((b + 3) << 8) | (b + 2));
    _mm256_shuffle_epi8(v, _mm256_set_m128i(hi, lo))
}

/// `v`'s low or high eight `i16` (`HI` = 0 or 1) in both 128-bit lanes.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn dup_half<const HI: i32>(v: __m256i) -> __m256i {
    let h = _mm256_extracti128_si256::<HI>(v);
    _mm256_set_m128i(h, h)
}

/// The sixteen Q3_K scales (6 bits, biased by 32) as `i8`, ggml's `aux`
/// unpacking.
#[inline]
fn q3_k_scales(s: &[u8; 12]) -> [u8; 16] {
    const KMASK1: u32 = 0x0303_0303;
    const KMASK2: u32 = 0x0f0f_0f0f;
    let a0 = u32::from_le_bytes([s[0], s[1], s[2], s[3]]);
    let a1 = u32::from_le_bytes([s[4], s[5], s[6], s[7]]);
    let a2 = u32::from_le_bytes([s[8], s[9], s[10], s[11]]);
    let words = [
        (a0 & KMASK2) | ((a2 & KMASK1) << 4),
        (a1 & KMASK2) | (((a2 >> 2) & KMASK1) << 4),
        ((a0 >> 4) & KMASK2) | (((a2 >> 4) & KMASK1) << 4),
        ((a1 >> 4) & KMASK2) | (((a2 >> 6) & KMASK1) << 4),
    ];
    let mut out = [0u8; 16];
    for (o, w) in out.as_chunks_mut::<4>().0.iter_mut().zip(words) {
        *o = w.to_le_bytes();
    }
    out
}

/// Q3_K x Q8_K.
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C.
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn vec_dot_q3_k_q8_k(x: &[BlockQ3K], y: &[BlockQ8K]) -> f32 {
    let t = f16_table();
    let m3 = _mm256_set1_epi8(3);
    let four = _mm256_set1_epi8(4);
    let zero = _mm256_setzero_si256();
    let mut acc = _mm256_setzero_ps();
    for (xb, yb) in x.iter().zip(y) {
        let d = _mm256_set1_ps(yb.d * h2f_t(t, xb.d));
        // Scales - 32, in -32..=31.
        let sc8 = _mm_sub_epi8(load_u8x16(&q3_k_scales(&xb.scales)), _mm_set1_epi8(32));
        let scales = _mm256_cvtepi8_epi16(sc8);
        let scales = [dup_half::<0>(scales), dup_half::<1>(scales)];
        let hbits = load_u8x32(&xb.hmask);
        let mut sumi = _mm256_setzero_si256();
        let q8 = yb.qs.as_chunks::<32>().0.chunks_exact(4);
        let chunks = xb.qs.as_chunks::<32>().0.iter().zip(q8).zip(scales);
        for (j, ((q3, q8), sc)) in chunks.enumerate() {
            let q3 = load_u8x32(q3);
            let ql = [
                _mm256_and_si256(q3, m3),
                _mm256_and_si256(_mm256_srli_epi16::<2>(q3), m3),
                _mm256_and_si256(_mm256_srli_epi16::<4>(q3), m3),
                _mm256_and_si256(_mm256_srli_epi16::<6>(q3), m3),
            ];
            for (k, (ql, q8)) in ql.into_iter().zip(q8).enumerate() {
                // 4 where the high bit (hmask bit 4j + k) is clear: the quant
                // is ql - qh in -4..=3.
                let m = _mm256_set1_epi8((1u8 << (4 * j + k)) as i8);
                let qh =
                    _mm256_and_si256(_mm256_cmpeq_epi8(_mm256_and_si256(hbits, m), zero), four);
                let q8 = load_i8x32(q8);
                // Both products unsigned x signed, pair sums within 2 * 4 * 128.
                let p =
                    _mm256_sub_epi16(_mm256_maddubs_epi16(ql, q8), _mm256_maddubs_epi16(qh, q8));
                sumi = _mm256_add_epi32(sumi, _mm256_madd_epi16(bcast_i16_pair(sc, 2 * k), p));
            }
        }
        acc = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(sumi), acc);
    }
    hsum_f32x8(acc)
}

/// Q4_K x Q8_K.
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C.
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn vec_dot_q4_k_q8_k(x: &[BlockQ4K], y: &[BlockQ8K]) -> f32 {
    let t = f16_table();
    let m4 = _mm256_set1_epi8(0x0f);
    let mut acc = _mm256_setzero_ps();
    for (xb, yb) in x.iter().zip(y) {
        let d = _mm256_set1_ps(yb.d * h2f_t(t, xb.d));
        let dmin = _mm256_set1_ps(-yb.d * h2f_t(t, xb.dmin));
        let scales = k4_block_setup(&xb.scales, dmin, yb, &mut acc);
        let mut sumi = _mm256_setzero_si256();
        let q8 = yb.qs.as_chunks::<32>().0.chunks_exact(2);
        for (j, (q4, q8)) in xb.qs.as_chunks::<32>().0.iter().zip(q8).enumerate() {
            let q4 = load_u8x32(q4);
            let q4l = _mm256_and_si256(q4, m4);
            let q4h = _mm256_and_si256(_mm256_srli_epi16::<4>(q4), m4);
            let pl = _mm256_maddubs_epi16(q4l, load_i8x32(&q8[0]));
            let ph = _mm256_maddubs_epi16(q4h, load_i8x32(&q8[1]));
            let pl = _mm256_madd_epi16(bcast_i16(scales, 2 * j), pl);
            let ph = _mm256_madd_epi16(bcast_i16(scales, 2 * j + 1), ph);
            sumi = _mm256_add_epi32(sumi, _mm256_add_epi32(pl, ph));
        }
        acc = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(sumi), acc);
    }
    hsum_f32x8(acc)
}

/// `acc + madd(scales, p)`: the pair products of 16-bit scales and sums,
/// added in 32 bits (exact: every operand here is far inside i16).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn madd_add_avx2(acc: __m256i, scales: __m256i, p: __m256i) -> __m256i {
    _mm256_add_epi32(acc, _mm256_madd_epi16(scales, p))
}

/// Q5_K x Q8_K.
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C.
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn vec_dot_q5_k_q8_k(x: &[BlockQ5K], y: &[BlockQ8K]) -> f32 {
    q5_k_dot(x, y, |a, s, p| madd_add_avx2(a, s, p))
}

/// [`vec_dot_q5_k_q8_k`]'s body with `sumi + madd(scales, p)` as
/// `madd_add(sumi, scales, p)` (the VNNI level fuses it into `vpdpwssd`).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn q5_k_dot(
    x: &[BlockQ5K],
    y: &[BlockQ8K],
    madd_add: impl Fn(__m256i, __m256i, __m256i) -> __m256i,
) -> f32 {
    let t = f16_table();
    let m4 = _mm256_set1_epi8(0x0f);
    let sixteen = _mm256_set1_epi8(16);
    let mut acc = _mm256_setzero_ps();
    for (xb, yb) in x.iter().zip(y) {
        let d = _mm256_set1_ps(yb.d * h2f_t(t, xb.d));
        let dmin = _mm256_set1_ps(-yb.d * h2f_t(t, xb.dmin));
        let scales = k4_block_setup(&xb.scales, dmin, yb, &mut acc);
        let hbits = load_u8x32(&xb.qh);
        let mut sumi = _mm256_setzero_si256();
        let q8 = yb.qs.as_chunks::<32>().0.chunks_exact(2);
        for (j, (q5, q8)) in xb.qs.as_chunks::<32>().0.iter().zip(q8).enumerate() {
            let q5 = load_u8x32(q5);
            let ml = _mm256_set1_epi8((1u8 << (2 * j)) as i8);
            let mh = _mm256_set1_epi8((2u8 << (2 * j)) as i8);
            let hl = _mm256_and_si256(_mm256_cmpeq_epi8(_mm256_and_si256(hbits, ml), ml), sixteen);
            let hh = _mm256_and_si256(_mm256_cmpeq_epi8(_mm256_and_si256(hbits, mh), mh), sixteen);
            let q5l = _mm256_or_si256(_mm256_and_si256(q5, m4), hl);
            let q5h = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16::<4>(q5), m4), hh);
            let pl = _mm256_maddubs_epi16(q5l, load_i8x32(&q8[0]));
            let ph = _mm256_maddubs_epi16(q5h, load_i8x32(&q8[1]));
            sumi = madd_add(sumi, bcast_i16(scales, 2 * j), pl);
            sumi = madd_add(sumi, bcast_i16(scales, 2 * j + 1), ph);
        }
        acc = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(sumi), acc);
    }
    hsum_f32x8(acc)
}

/// Q6_K x Q8_K: `sum sc q y` over the unsigned 6-bit codes, less
/// `32 sum sc bsums` from `y`'s stored block sums, as llama.cpp's AVX2
/// kernel and the scalar reference.
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C.
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn vec_dot_q6_k_q8_k(x: &[BlockQ6K], y: &[BlockQ8K]) -> f32 {
    let t = f16_table();
    let mut acc = _mm256_setzero_ps();
    for (xb, yb) in x.iter().zip(y) {
        let d = _mm256_set1_ps(h2f_t(t, xb.d) * yb.d);
        // The sixteen scales as i16, widened once per block: each 32-quant
        // vector then takes its two with one shuffle.
        let scales = _mm256_cvtepi8_epi16(load_i8x16(&xb.scales));
        // 32 sum sc bsums in eight i32 lanes: a lane's two products are at
        // most 2^22 each, so it stays within 2^28.
        let offset = _mm256_slli_epi32::<5>(_mm256_madd_epi16(scales, load_i16x16(&yb.bsums)));
        let scales = [dup_half::<0>(scales), dup_half::<1>(scales)];
        let mut sumi = _mm256_setzero_si256();
        let halves = xb
            .ql
            .as_chunks::<64>()
            .0
            .iter()
            .zip(xb.qh.as_chunks::<32>().0);
        let q8 = yb.qs.as_chunks::<32>().0.chunks_exact(4);
        for ((ql, qh), (q8, sc)) in halves.zip(q8.zip(scales)) {
            let qs = q6_k_quants(ql, qh);
            for (k, (q, q8)) in qs.into_iter().zip(q8).enumerate() {
                // q y pair sums, each within i16 (at most 2 * 63 * 128);
                // scales 2k and 2k + 1 of this 128-quant half (its first
                // and last 16 quants).
                let p = _mm256_maddubs_epi16(q, load_i8x32(q8));
                sumi = madd_add_avx2(sumi, bcast_i16_pair(sc, 2 * k), p);
            }
        }
        let sumi = _mm256_sub_epi32(sumi, offset);
        acc = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(sumi), acc);
    }
    hsum_f32x8(acc)
}

// ------------------------------------------------------------------- IQ4

/// The IQ4 codebook [`KVALUES_IQ4NL`] in both 128-bit lanes, for
/// `_mm256_shuffle_epi8` lookups of nibbles.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn iq4_table() -> __m256i {
    let t = KVALUES_IQ4NL.map(|v| v as u8);
    _mm256_broadcastsi128_si256(load_u8x16(&t))
}

/// The 32 codebook values (i8, in -127..=113) of one IQ4 group of 16
/// bytes, in element order: low nibbles, then high nibbles.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn iq4_values_x32(table: __m256i, qs: &[u8; 16]) -> __m256i {
    // Every index is 0..=15 (bit 7 clear), so the shuffle is a lookup.
    _mm256_shuffle_epi8(table, nibbles_x32(qs))
}

/// The sixteen exact pair sums `v[2i] y[2i] + v[2i+1] y[2i+1]` (as i16) of
/// 32 codebook values `v` and 32 signed bytes `y`.
///
/// `v y = |y| * (sign(y) v)`: `|y|` read as unsigned is 0..=128 (`-128`
/// gives `0x80`, i.e. 128, as wanted), and `sign(y) v` is exact in i8
/// because `v` is never -128 (it is in -127..=113), so its negation is in
/// -113..=127. Each pair sum is then at most `2 * 128 * 127 = 32512` in
/// magnitude and `maddubs` never saturates. (llama.cpp puts the absolute
/// value on the codebook side and negates `y`, which is wrong for
/// `y = -128`.)
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn iq4_pairs(v: __m256i, y: __m256i) -> __m256i {
    _mm256_maddubs_epi16(_mm256_abs_epi8(y), _mm256_sign_epi8(v, y))
}

/// One IQ4_NL x Q8_0 block: the product of the scales (the scalar code's,
/// from the f16 table) and the eight exact partial integer sums as f32.
/// `by` is a raw `block_q8_0`: f16 `d` little-endian, then 32 `i8`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn iq4_nl_q8_0_block(
    t: &[f32; 1 << 16],
    table: __m256i,
    bx: &BlockIq4Nl,
    by: &[u8; Q8_0_BYTES],
) -> (f32, __m256) {
    let (dy, qy) = by.split_first_chunk::<2>().expect("34 bytes");
    let dy = f16::from_bits(u16::from_le_bytes(*dy));
    let qy: &[u8; 32] = qy.try_into().expect("32 quants");
    let d = h2f_t(t, dy) * h2f_t(t, bx.d);
    let p = iq4_pairs(iq4_values_x32(table, &bx.qs), load_u8x32(qy));
    let s = _mm256_madd_epi16(p, _mm256_set1_epi16(1));
    (d, _mm256_cvtepi32_ps(s))
}

/// IQ4_NL x Q8_0, `y` the raw bytes of `block_q8_0`s (34 each); blocks past
/// the shorter side are ignored.
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C.
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn vec_dot_iq4_nl_q8_0(x: &[BlockIq4Nl], y: &[u8]) -> f32 {
    let t = f16_table();
    let table = iq4_table();
    let (y, _) = y.as_chunks::<Q8_0_BYTES>();
    sum_blocks(x, y, |bx, by| iq4_nl_q8_0_block(t, table, bx, by))
}

/// The eight group scales of an IQ4_XS block as the scalar code's f32
/// products `d * (ls - 32)`, `ls` the 6-bit scale: its low 4 bits are
/// nibble `ib` of the little-endian `scales_l`, its high 2 bits bits
/// `2 ib..2 ib + 2` of `scales_h`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn iq4_xs_group_scales(b: &BlockIq4Xs, d: f32) -> [f32; 8] {
    let lo = _mm256_srlv_epi32(
        _mm256_set1_epi32(i32::from_le_bytes(b.scales_l)),
        _mm256_setr_epi32(0, 4, 8, 12, 16, 20, 24, 28),
    );
    let hi = _mm256_srlv_epi32(
        _mm256_set1_epi32(i32::from(b.scales_h)),
        _mm256_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14),
    );
    let ls = _mm256_or_si256(
        _mm256_and_si256(lo, _mm256_set1_epi32(0xf)),
        _mm256_slli_epi32::<4>(_mm256_and_si256(hi, _mm256_set1_epi32(3))),
    );
    let ls = _mm256_cvtepi32_ps(_mm256_sub_epi32(ls, _mm256_set1_epi32(32)));
    let mut out = [0f32; 8];
    store_f32x8(&mut out, _mm256_mul_ps(_mm256_set1_ps(d), ls));
    out
}

/// `y = d * kvalues[q]` for IQ4_NL blocks (the scalar code's one multiply).
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C.
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn dequantize_row_iq4_nl(x: &[BlockIq4Nl], y: &mut [f32]) {
    let table = iq4_table();
    for (b, out) in x.iter().zip(y.as_chunks_mut::<32>().0) {
        let d = h2f_x8(b.d);
        store_scaled(out, i8x32_to_f32(iq4_values_x32(table, &b.qs)), d);
    }
}

/// `y = (d * (ls - 32)) * kvalues[q]` for IQ4_XS blocks: the group scale is
/// the scalar code's f32 product, then one multiply per value.
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C.
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn dequantize_row_iq4_xs(x: &[BlockIq4Xs], y: &mut [f32]) {
    let t = f16_table();
    let table = iq4_table();
    for (b, out) in x.iter().zip(y.as_chunks_mut::<QK_K>().0) {
        let dl = iq4_xs_group_scales(b, h2f_t(t, b.d));
        let (q4, _) = b.qs.as_chunks::<16>();
        let (out, _) = out.as_chunks_mut::<32>();
        for ((out, q4), &dl) in out.iter_mut().zip(q4).zip(&dl) {
            store_scaled(
                out,
                i8x32_to_f32(iq4_values_x32(table, q4)),
                _mm256_set1_ps(dl),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The scalar model of `(int)roundf(x)`: `f32::round` (halves away from
    /// zero), then a conversion that gives `INT_MIN` outside i32's range.
    fn model(x: f32) -> i32 {
        let r = x.round();
        if (-2_147_483_648.0..2_147_483_648.0).contains(&r) {
            r as i32
        } else {
            i32::MIN
        }
    }

    /// Checks eight values at a time (a partial last group is padded).
    fn check(xs: &[f32]) {
        if !(std::arch::is_x86_feature_detected!("avx2")
            && std::arch::is_x86_feature_detected!("fma")
            && std::arch::is_x86_feature_detected!("f16c"))
        {
            return;
        }
        for c in xs.chunks(8) {
            let mut v = [0f32; 8];
            v[..c.len()].copy_from_slice(c);
            let mut got = [0i32; 8];
            // SAFETY: the CPU has AVX2, FMA and F16C (checked above); `v`
            // and `got` are 8 lanes each (`loadu`/`storeu`: any alignment).
            unsafe {
                let r = round_half_away_i32(_mm256_loadu_ps(v.as_ptr()));
                _mm256_storeu_si256(got.as_mut_ptr().cast(), r);
            }
            for (x, g) in v.iter().zip(got) {
                assert_eq!(g, model(*x), "{x:e} ({:#010x})", x.to_bits());
            }
        }
    }

    #[test]
    fn rounding_matches_roundf() {
        // Every float in [0.25, 1), both signs: the fractions around one half.
        let dense: Vec<f32> = (0x3e80_0000u32..0x3f80_0000)
            .flat_map(|b| [f32::from_bits(b), -f32::from_bits(b)])
            .collect();
        check(&dense);
        // 64 ulps either side of every half-integer k + 0.5 below 2^12, and of
        // k + 0.5 for k near each power of two up to 2^24.
        let mut near = Vec::new();
        let ks = (0u32..4096).chain((12..25).flat_map(|j| (1u32 << j) - 3..(1u32 << j) + 3));
        for k in ks {
            let h = k as f32 + 0.5;
            for m in -64i32..=64 {
                let x = f32::from_bits(h.to_bits().wrapping_add_signed(m));
                near.extend([x, -x, k as f32, -(k as f32)]);
            }
        }
        check(&near);
        // Specials and random bits (a fixed LCG).
        check(&[
            0.0,
            -0.0,
            f32::MIN_POSITIVE,
            f32::from_bits(1),
            8_388_607.5,
            -8_388_607.5,
            2_147_483_520.0,
            -2_147_483_648.0,
            2_147_483_648.0,
            f32::MAX,
            f32::INFINITY,
            f32::NEG_INFINITY,
            f32::NAN,
        ]);
        let mut s = 0x1234_5678u64;
        let random: Vec<f32> = (0..1 << 20)
            .map(|_| {
                s = s.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
                f32::from_bits((s >> 32) as u32)
            })
            .collect();
        check(&random);
    }

    #[test]
    #[ignore = "every f32 bit pattern: ~20 s optimized"]
    fn rounding_matches_roundf_everywhere() {
        let mut buf = vec![0f32; 1 << 16];
        for hi in 0..=u16::MAX {
            for (lo, x) in buf.iter_mut().enumerate() {
                *x = f32::from_bits((u32::from(hi) << 16) | lo as u32);
            }
            check(&buf);
        }
    }

    /// The compile-time table against F16C's `vcvtph2ps` (the hardware
    /// conversion ggml uses) for every f16 bit pattern, NaNs by bits.
    #[test]
    fn f16_table_matches_f16c() {
        if !std::arch::is_x86_feature_detected!("f16c") {
            return;
        }
        #[target_feature(enable = "f16c")]
        fn f16c(h: u16) -> f32 {
            _mm_cvtss_f32(_mm_cvtph_ps(_mm_set1_epi16(h as i16)))
        }
        let t = super::f16_table();
        for h in 0..=u16::MAX {
            // SAFETY: F16C was detected above.
            let want = unsafe { f16c(h) };
            assert_eq!(t[usize::from(h)].to_bits(), want.to_bits(), "{h:#06x}");
        }
    }
}
