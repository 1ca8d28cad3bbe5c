//! x86_64 AVX2 (+ FMA + F16C) kernels for the ternary types TQ1_0 and
//! TQ2_0, chosen at run time by [`super::dispatch`] like those of
//! [`super::x86`] (same preconditions: `unsafe fn` only for the target
//! features; they take slices and process the shorter side on a length
//! mismatch).
//!
//! # Exactness
//!
//! * Dot products (x [`Q8_K_BYTES`] raw `block_q8_K`s) compute each block's
//!   integer sum `sum (t - 1) q` exactly for any block bytes, as the scalar
//!   references do: the stored `bsums` are never read (llama.cpp's AVX2
//!   kernels subtract them, which is only right when they match the quants).
//!   The signed trit `s = t - 1` (-1..=2 for TQ2_0's code 3) multiplies
//!   `q ^ 0x80 = q + 128` (an unsigned byte) in `maddubs`, pair sums at most
//!   `2 * 255 * 2` in magnitude, and `128 * sum s` is subtracted again per
//!   16-bit lane (one more `maddubs` of 128 by the per-lane trit sums, at
//!   most 16 each): every 16-bit partial sum stays below `2^15`. The f32
//!   accumulation (FMA, one 8-lane accumulator) differs from the scalar
//!   order, so results may differ from the scalar dot in the last bits;
//!   block scales are the scalar code's products `d_x * d_y` (f16 table,
//!   exact).
//! * Dequantizers are bit-identical: each block's at most four products
//!   `s * d` (s in -1..=2) are computed once with the scalar code's f32
//!   multiply, and each output picks its product with `vpermps`.
//!
//! TQ1_0's trits are the leading base-3 digits of a byte `q` read as a
//! fraction of 256: digit `n` is `(3 v) >> 8` with `v = q 3^n mod 256`, that
//! is 0 for `v < 86`, 1 for `86 <= v < 171` and 2 above. The kernels keep
//! `w = v ^ 0x80` (`v - 128` as a signed byte), which the same byte
//! multiplications by 3 carry along (`3 (v + 128) = 3 v + 128 mod 256`), so
//! that `s = t - 1` is two signed compares with `w` (`w < -42`, `w > 42`).

use std::arch::x86_64::*;

use super::x86::{f16_table, h2f_t, hsum_f32x8, load_u8x16, load_u8x32, store_f32x8};
use crate::iquants::{BlockTq1_0, BlockTq2_0, Q8_K_BYTES};
use crate::kquants::QK_K;

// ------------------------------------------------------------------ helpers

/// The scale `d` (f32, little-endian) and the 256 quants of a raw
/// `block_q8_K`.
#[inline]
fn q8_k_parts(yb: &[u8; Q8_K_BYTES]) -> (f32, &[[u8; 32]; 8]) {
    let (d, rest) = yb.split_first_chunk::<4>().expect("292 bytes");
    let (q8, _) = rest.split_first_chunk::<QK_K>().expect("256 quants");
    let q8: &[[u8; 32]; 8] = q8.as_chunks::<32>().0.try_into().expect("8 x 32");
    (f32::from_le_bytes(*d), q8)
}

/// Three times each byte, modulo 256.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn times3(w: __m256i) -> __m256i {
    _mm256_add_epi8(_mm256_add_epi8(w, w), w)
}

/// `t - 1` (-1, 0 or 1) for the trit `t = (3 v) >> 8` of each byte, given
/// `w = v ^ 0x80`: -1 where `v < 86` (`w < -42`), 1 where `v >= 171`
/// (`w > 42`).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn trit_signs(w: __m256i) -> __m256i {
    let hi = _mm256_cmpgt_epi8(w, _mm256_set1_epi8(42));
    let lo = _mm256_cmpgt_epi8(_mm256_set1_epi8(-42), w);
    _mm256_sub_epi8(lo, hi)
}

/// The 256 values `t - 1` of a TQ1_0 block as eight vectors, in storage
/// (and `block_q8_K` quant) order:
/// * vectors 0..5: digit `n` of `qs[0..32]` (values `32 n + m`);
/// * vectors 5, 6: digits 0, 1 and 2, 3 of `qs[32..48]` (values
///   `160 + 16 n + m`), two digits per vector;
/// * vector 7: digit 4 of `qs[32..48]`, then digit `n` of `qh[j]` at byte
///   `16 + 4 n + j` (values `240 + 4 n + j`).
///
/// The last 16 bytes and the 4 `qh` bytes (repeated 4 times) share one
/// vector whose digits are all computed, then regrouped with lane
/// permutes and dword blends.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn tq1_0_signs(b: &BlockTq1_0) -> [__m256i; 8] {
    let k80 = _mm256_set1_epi8(i8::MIN);
    let (q0, q1) = b.qs.split_first_chunk::<32>().expect("48 bytes");
    let q1: &[u8; 16] = q1.try_into().expect("16 bytes");
    let w0 = _mm256_xor_si256(load_u8x32(q0), k80);
    let w1 = times3(w0);
    let w2 = times3(w1);
    let w3 = times3(w2);
    let w4 = times3(w3);
    let qh = _mm_set1_epi32(i32::from_le_bytes(b.qh));
    let z0 = _mm256_xor_si256(_mm256_set_m128i(qh, load_u8x16(q1)), k80);
    let z1 = times3(z0);
    let z2 = times3(z1);
    let z3 = times3(z2);
    let z4 = times3(z3);
    // [z0 | z1] and [z2 | z3] low halves: digits 0..4 of qs[32..48].
    let v01 = _mm256_permute2x128_si256::<0x20>(z0, z1);
    let v23 = _mm256_permute2x128_si256::<0x20>(z2, z3);
    // z4's low half, then dword 4 + n of z_n: digit n of the qh bytes.
    let h01 = _mm256_blend_epi32::<0b0010_0000>(z0, z1);
    let h23 = _mm256_blend_epi32::<0b1000_0000>(z2, z3);
    let h = _mm256_blend_epi32::<0b1100_0000>(h01, h23);
    let v4h = _mm256_blend_epi32::<0b0000_1111>(h, z4);
    [
        trit_signs(w0),
        trit_signs(w1),
        trit_signs(w2),
        trit_signs(w3),
        trit_signs(w4),
        trit_signs(v01),
        trit_signs(v23),
        trit_signs(v4h),
    ]
}

/// `code - 1` (-1..=2) for the four 2-bit fields of 32 TQ2_0 bytes: field
/// `l` (bits `2 l..2 l + 2`) in vector `l`, each looked up by nibble.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn tq2_0_signs(q: __m256i) -> [__m256i; 4] {
    // Low field, high field of a nibble, minus 1.
    let low = _mm256_setr_epi8(
        -1, 0, 1, 2, -1, 0, 1, 2, -1, 0, 1, 2, -1, 0, 1, 2, //
        -1, 0, 1, 2, -1, 0, 1, 2, -1, 0, 1, 2, -1, 0, 1, 2,
    );
    let high = _mm256_setr_epi8(
        -1, -1, -1, -1, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, //
        -1, -1, -1, -1, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2,
    );
    let m = _mm256_set1_epi8(0x0f);
    let lo = _mm256_and_si256(q, m);
    let hi = _mm256_and_si256(_mm256_srli_epi16::<4>(q), m);
    [
        _mm256_shuffle_epi8(low, lo),
        _mm256_shuffle_epi8(high, lo),
        _mm256_shuffle_epi8(low, hi),
        _mm256_shuffle_epi8(high, hi),
    ]
}

/// `sum s q` over 32 signed quants `q` and signs `s` (-1..=2), as sixteen
/// 16-bit pair sums biased by `128 (s_2i + s_2i+1)`: `maddubs` of the
/// unsigned `q ^ 0x80 = q + 128` by `s` (each pair at most `2 * 255 * 2`).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn biased_pairs(s: __m256i, q: &[u8; 32]) -> __m256i {
    _mm256_maddubs_epi16(
        _mm256_xor_si256(load_u8x32(q), _mm256_set1_epi8(i8::MIN)),
        s,
    )
}

/// One block's exact integer sum as eight f32 lanes: the biased pair sums
/// `p0 + p1` less `128 * (ss_2i + ss_2i+1)`, `ss` the per-byte sums of the
/// signs (at most 16 in magnitude).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn unbias(p0: __m256i, p1: __m256i, ss: __m256i) -> __m256 {
    let bias = _mm256_maddubs_epi16(_mm256_set1_epi8(i8::MIN), ss);
    let s = _mm256_sub_epi16(_mm256_add_epi16(p0, p1), bias);
    _mm256_cvtepi32_ps(_mm256_madd_epi16(s, _mm256_set1_epi16(1)))
}

// ------------------------------------------------------------- dot products

/// TQ1_0 x Q8_K, `y` the raw bytes of `block_q8_K`s (292 each); blocks past
/// the shorter side are ignored.
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C.
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn vec_dot_tq1_0_q8_k(x: &[BlockTq1_0], y: &[u8]) -> f32 {
    let t = f16_table();
    let (y, _) = y.as_chunks::<Q8_K_BYTES>();
    let mut acc = _mm256_setzero_ps();
    for (xb, yb) in x.iter().zip(y) {
        let (dy, q8) = q8_k_parts(yb);
        let s = tq1_0_signs(xb);
        let mut p = [_mm256_setzero_si256(); 2];
        let mut ss = _mm256_setzero_si256();
        for (k, (s, q8)) in s.iter().zip(q8).enumerate() {
            p[k % 2] = _mm256_add_epi16(p[k % 2], biased_pairs(*s, q8));
            ss = _mm256_add_epi8(ss, *s);
        }
        let d = _mm256_set1_ps(h2f_t(t, xb.d) * dy);
        acc = _mm256_fmadd_ps(d, unbias(p[0], p[1], ss), acc);
    }
    hsum_f32x8(acc)
}

/// TQ2_0 x Q8_K, `y` the raw bytes of `block_q8_K`s (292 each); blocks past
/// the shorter side are ignored.
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C.
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn vec_dot_tq2_0_q8_k(x: &[BlockTq2_0], y: &[u8]) -> f32 {
    let t = f16_table();
    let (y, _) = y.as_chunks::<Q8_K_BYTES>();
    let mut acc = _mm256_setzero_ps();
    for (xb, yb) in x.iter().zip(y) {
        let (dy, q8) = q8_k_parts(yb);
        let (q8, _) = q8.as_chunks::<4>();
        let mut p = [_mm256_setzero_si256(); 2];
        let mut ss = _mm256_setzero_si256();
        // Bytes 32 j..32 j + 32 hold values 128 j + 32 l + m.
        for (q2, q8) in xb.qs.as_chunks::<32>().0.iter().zip(q8) {
            let [s0, s1, s2, s3] = tq2_0_signs(load_u8x32(q2));
            p[0] = _mm256_add_epi16(p[0], biased_pairs(s0, &q8[0]));
            p[1] = _mm256_add_epi16(p[1], biased_pairs(s1, &q8[1]));
            p[0] = _mm256_add_epi16(p[0], biased_pairs(s2, &q8[2]));
            p[1] = _mm256_add_epi16(p[1], biased_pairs(s3, &q8[3]));
            let s = _mm256_add_epi8(_mm256_add_epi8(s0, s1), _mm256_add_epi8(s2, s3));
            ss = _mm256_add_epi8(ss, s);
        }
        let d = _mm256_set1_ps(dy * h2f_t(t, xb.d));
        acc = _mm256_fmadd_ps(d, unbias(p[0], p[1], ss), acc);
    }
    hsum_f32x8(acc)
}

// ------------------------------------------------------------- dequantizers

/// Writes, for each of 32 signs in `s` (bytes whose low 3 bits index
/// `table`), its product from `table`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn store_picked(out: &mut [f32; 32], table: __m256, s: __m256i) {
    let lo = _mm256_castsi256_si128(s);
    let hi = _mm256_extracti128_si256::<1>(s);
    let idx = [
        _mm256_cvtepi8_epi32(lo),
        _mm256_cvtepi8_epi32(_mm_unpackhi_epi64(lo, lo)),
        _mm256_cvtepi8_epi32(hi),
        _mm256_cvtepi8_epi32(_mm_unpackhi_epi64(hi, hi)),
    ];
    for (o, i) in out.as_chunks_mut::<8>().0.iter_mut().zip(idx) {
        store_f32x8(o, _mm256_permutevar8x32_ps(table, i));
    }
}

/// Eight bytes zero-extended to `i32`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn widen8(b: &[u8; 8]) -> __m256i {
    // SAFETY: `b` is 8 readable bytes and `loadl` has no alignment requirement.
    _mm256_cvtepu8_epi32(unsafe { _mm_loadl_epi64(b.as_ptr().cast()) })
}

/// `y = (t - 1) * d` for TQ1_0 blocks: the products `-d`, `0 * d`, `d` (the
/// scalar code's multiplies) picked by the sign's low 3 bits (7, 0, 1).
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C.
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn dequantize_row_tq1_0(x: &[BlockTq1_0], y: &mut [f32]) {
    let t = f16_table();
    let signs = _mm256_setr_ps(0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0, -1.0);
    for (b, out) in x.iter().zip(y.as_chunks_mut::<QK_K>().0) {
        let table = _mm256_mul_ps(signs, _mm256_set1_ps(h2f_t(t, b.d)));
        let s = tq1_0_signs(b);
        for (out, s) in out.as_chunks_mut::<32>().0.iter_mut().zip(s) {
            store_picked(out, table, s);
        }
    }
}

/// `y = (code - 1) * d` for TQ2_0 blocks: the four products (the scalar
/// code's multiplies) picked by the 2-bit codes, widened to dwords eight
/// bytes at a time (`vpermps` reads an index's low 3 bits, so the table
/// repeats and the bits above a code do not matter).
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C.
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn dequantize_row_tq2_0(x: &[BlockTq2_0], y: &mut [f32]) {
    let t = f16_table();
    let signs = _mm256_setr_ps(-1.0, 0.0, 1.0, 2.0, -1.0, 0.0, 1.0, 2.0);
    for (b, out) in x.iter().zip(y.as_chunks_mut::<QK_K>().0) {
        let table = _mm256_mul_ps(signs, _mm256_set1_ps(h2f_t(t, b.d)));
        // Bytes 32 j..32 j + 32 hold values 128 j + 32 l + m.
        let (out, _) = out.as_chunks_mut::<128>();
        for (out, q) in out.iter_mut().zip(b.qs.as_chunks::<32>().0) {
            let q: &[[u8; 8]; 4] = q.as_chunks::<8>().0.try_into().expect("4 x 8");
            let codes = [widen8(&q[0]), widen8(&q[1]), widen8(&q[2]), widen8(&q[3])];
            let (out, _) = out.as_chunks_mut::<32>();
            for (out, shift) in out.iter_mut().zip([0, 2, 4, 6]) {
                let shift = _mm256_set1_epi32(shift);
                for (o, c) in out.as_chunks_mut::<8>().0.iter_mut().zip(codes) {
                    let c = _mm256_srlv_epi32(c, shift);
                    store_f32x8(o, _mm256_permutevar8x32_ps(table, c));
                }
            }
        }
    }
}
