//! x86_64 AVX2 (+ FMA + F16C) kernels for the ternary types TQ1_0 and
//! TQ2_0, chosen at run time by [`super::dispatch`] like those of
//! [`super::x86`] (same preconditions: `unsafe fn` only for the target
//! features; they take slices and process the shorter side on a length
//! mismatch). The AVX2 TQ2_0 dot product is in [`super::x86_avx2dots`].
//!
//! # Exactness
//!
//! * Dot products (x [`Q8_K_BYTES`] raw `block_q8_K`s) compute each block's
//!   integer `sum t q - sum bsums` exactly for any bytes, as the scalar
//!   references define it (llama.cpp's kernels' `sum (t - 1) q` with the
//!   quants' sum taken from the stored `bsums`): `maddubs` of the unsigned
//!   codes `t` (0..=2 for TQ1_0, 0..=3 for TQ2_0 in any byte) by the quants,
//!   16-bit pair sums at most `2 * 3 * 128`, eight per lane at most, then
//!   widened to i32 before the stored sums (widened too) are subtracted, so
//!   no partial sum wraps whatever the `bsums` hold. The f32 accumulation
//!   (FMA, one 8-lane accumulator) differs from the scalar order, so results
//!   may differ from the scalar dot in the last bits; block scales are the
//!   scalar code's products `d_x * d_y` (f16 table, exact).
//! * Dequantizers are bit-identical: each block's at most four products
//!   `s * d` (s in -1..=2) are computed once with the scalar code's f32
//!   multiply, and each output picks its product with `vpermps`.
//! * Quantizers reproduce the scalar reference bytes: the block maximum
//!   `amax` of `|x|`, its f16 by F16C (round to nearest even, as the scalar
//!   conversion), `id = 1 / amax` (or 0), and each code `lroundf(x id) + 1`
//!   from the same f32 product `x * id`: `|x id|` is at most `amax * id`,
//!   below 1.5, so `lroundf` is 1 for `p >= 0.5`, -1 for `p <= -0.5` and 0
//!   between (two compares). An `id` that overflowed to infinity (subnormal
//!   `amax`) makes every product infinite or NaN, which the scalar code's
//!   `lroundf` turns into `LONG_MIN`, code 1: the kernels use a NaN `id`
//!   then, for which both compares fail. TQ1_0 packs the codes base 3 in
//!   bytes (wrapping as the scalar `uint8_t`, never reached since codes are
//!   at most 2) and rounds `q * 256 / 243` up in 16-bit lanes with a
//!   multiply-high checked against the scalar formula for every `q`.
//!
//! TQ1_0's trits are the leading base-3 digits of a byte `q` read as a
//! fraction of 256: digit `n` is `(3 v) >> 8` with `v = q 3^n mod 256`, that
//! is 0 for `v < 86`, 1 for `86 <= v < 171` and 2 above. The kernels keep
//! `w = v ^ 0x80` (`v - 128` as a signed byte), which the same byte
//! multiplications by 3 carry along (`3 (v + 128) = 3 v + 128 mod 256`), so
//! that `s = t - 1` is two signed compares with `w` (`w < -42`, `w > 42`).

use std::arch::x86_64::*;

use super::x86::{
    f2h, f16_table, h2f_t, hsum_f32x8, load_f32x8, load_u8x16, load_u8x32, store_f32x8,
};
use crate::iquants::{BlockTq1_0, BlockTq2_0, Q8_K_BYTES};
use crate::kquants::QK_K;

// ------------------------------------------------------------------ helpers

/// The scale `d` (f32, little-endian), the 256 quants and the 16 stored
/// block sums (`i16`, little-endian) of a raw `block_q8_K`.
#[inline]
pub(super) fn q8_k_parts(yb: &[u8; Q8_K_BYTES]) -> (f32, &[[u8; 32]; 8], &[u8; 32]) {
    let (d, rest) = yb.split_first_chunk::<4>().expect("292 bytes");
    let (q8, bsums) = rest.split_first_chunk::<QK_K>().expect("256 quants");
    let q8: &[[u8; 32]; 8] = q8.as_chunks::<32>().0.try_into().expect("8 x 32");
    let bsums: &[u8; 32] = bsums.try_into().expect("16 sums");
    (f32::from_le_bytes(*d), q8, bsums)
}

/// Three times each byte, modulo 256: two byte adds, whose result LLVM
/// must not see through. It would fold a chain `3 (3 (3 w))` into byte
/// multiplies by 9, 27 and 81, which x86 lacks and which it then emulates
/// with 16-bit multiplies, shifts and masks (about twice the work).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn times3(w: __m256i) -> __m256i {
    let mut t = _mm256_add_epi8(_mm256_add_epi8(w, w), w);
    // SAFETY: an empty template: the value stays in its register and
    // nothing else is read, written or clobbered.
    unsafe {
        std::arch::asm!("/* {0} */", inout(ymm_reg) t, options(pure, nomem, nostack, preserves_flags));
    }
    t
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
pub(super) fn tq1_0_signs(b: &BlockTq1_0) -> [__m256i; 8] {
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

/// One block's `sum t y - sum bsums` as eight f32 lanes, from the 16-bit
/// pair sums `p` of `sum t y` (at most `8 * 2 * 3 * 128` in magnitude per
/// lane: no wrap) and the stored `bsums` (widened before subtracting, so
/// any 16 values give the exact difference).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn less_bsums(p: __m256i, bsums: &[u8; 32]) -> __m256 {
    let ones = _mm256_set1_epi16(1);
    let s = _mm256_madd_epi16(p, ones);
    let b = _mm256_madd_epi16(load_u8x32(bsums), ones);
    _mm256_cvtepi32_ps(_mm256_sub_epi32(s, b))
}

// ------------------------------------------------------------- dot products

/// TQ1_0 x Q8_K, `y` the raw bytes of `block_q8_K`s (292 each); blocks past
/// the shorter side are ignored.
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C.
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn vec_dot_tq1_0_q8_k(x: &[BlockTq1_0], y: &[u8]) -> f32 {
    tq1_0_dot(
        x,
        y,
        // t (0..=2) unsigned: pair sums at most 2 * 2 * 128.
        |p, t, q| _mm256_add_epi16(p, _mm256_maddubs_epi16(t, q)),
        |p0, p1, bsums| less_bsums(_mm256_add_epi16(p0, p1), bsums),
    )
}

/// The TQ1_0 dots' body: per block, `step(p, t, q)` adds the products of 32
/// trits `t` (0..=2) and quants `q` into one of two accumulators, and
/// `finish(p0, p1, bsums)` turns them, less the stored `bsums`, into eight
/// f32 lanes (each level supplies its instructions, as for Q5_K).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn tq1_0_dot(
    x: &[BlockTq1_0],
    y: &[u8],
    step: impl Fn(__m256i, __m256i, __m256i) -> __m256i,
    finish: impl Fn(__m256i, __m256i, &[u8; 32]) -> __m256,
) -> f32 {
    let t = f16_table();
    let one = _mm256_set1_epi8(1);
    let (y, _) = y.as_chunks::<Q8_K_BYTES>();
    let mut acc = _mm256_setzero_ps();
    for (xb, yb) in x.iter().zip(y) {
        let (dy, q8, bsums) = q8_k_parts(yb);
        let mut p = [_mm256_setzero_si256(); 2];
        for (k, (s, q8)) in tq1_0_signs(xb).iter().zip(q8).enumerate() {
            p[k % 2] = step(p[k % 2], _mm256_add_epi8(*s, one), load_u8x32(q8));
        }
        let d = _mm256_set1_ps(h2f_t(t, xb.d) * dy);
        acc = _mm256_fmadd_ps(d, finish(p[0], p[1], bsums), acc);
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

// --------------------------------------------------------------- quantizers

/// `code - 1` (-1, 0, 1) of eight values as `i32`: `lroundf(p)` for the
/// products `p = x * id` (`|p| < 1.5`, or NaN).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn round_signs8(x: &[f32; 8], id: __m256) -> __m256i {
    let p = _mm256_mul_ps(load_f32x8(x), id);
    let up = _mm256_cmp_ps::<_CMP_GE_OQ>(p, _mm256_set1_ps(0.5));
    let down = _mm256_cmp_ps::<_CMP_LE_OQ>(p, _mm256_set1_ps(-0.5));
    _mm256_sub_epi32(_mm256_castps_si256(down), _mm256_castps_si256(up))
}

/// The codes (0..=2) of 32 values as bytes, in order.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn codes32(x: &[f32; 32], id: __m256) -> __m256i {
    let (x, _) = x.as_chunks::<8>();
    let [a, b, c, d] = [
        round_signs8(&x[0], id),
        round_signs8(&x[1], id),
        round_signs8(&x[2], id),
        round_signs8(&x[3], id),
    ];
    let ab = _mm256_packs_epi32(a, b);
    let cd = _mm256_packs_epi32(c, d);
    let s = _mm256_packs_epi16(ab, cd);
    // The packs work per 128-bit lane; put the dwords back in order.
    let s = _mm256_permutevar8x32_epi32(s, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
    _mm256_add_epi8(s, _mm256_set1_epi8(1))
}

/// The block's `(d, id)` as the scalar code computes them, `id` NaN where
/// `1 / amax` overflowed (see the module notes).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn scale(x: &[f32; QK_K]) -> (half::f16, __m256) {
    let mut m = _mm256_setzero_ps();
    let abs = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fff_ffff));
    for c in x.as_chunks::<8>().0 {
        m = _mm256_max_ps(m, _mm256_and_ps(load_f32x8(c), abs));
    }
    let m = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps::<1>(m));
    let m = _mm_max_ps(m, _mm_movehl_ps(m, m));
    let amax = _mm_cvtss_f32(_mm_max_ss(m, _mm_movehdup_ps(m)));
    let id = if amax != 0.0 { 1.0 / amax } else { 0.0 };
    let id = if id.is_finite() { id } else { f32::NAN };
    (f2h(amax), _mm256_set1_ps(id))
}

/// `ceil(q * 256 / 243)` of each byte `q <= 242` (every sum of five trits
/// times powers of 3): `(q * 256 + 239) * 8631 >> 21` in 16-bit lanes
/// (checked against the scalar formula for every such `q` in the tests).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn ceil_div_243(q: __m256i) -> __m256i {
    let c = _mm256_set1_epi8(-17); // 239
    let m = _mm256_set1_epi16(8631);
    let lo = _mm256_srli_epi16::<5>(_mm256_mulhi_epu16(_mm256_unpacklo_epi8(c, q), m));
    let hi = _mm256_srli_epi16::<5>(_mm256_mulhi_epu16(_mm256_unpackhi_epi8(c, q), m));
    _mm256_packus_epi16(lo, hi)
}

/// `3 q + c` in each byte (wrapping).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn horner3(q: __m256i, c: __m256i) -> __m256i {
    _mm256_add_epi8(times3(q), c)
}

/// ggml's `quantize_row_tq1_0_ref` for finite `x` (`x.len() == 256 *
/// y.len()`; extra values or blocks are ignored).
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C.
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn quantize_row_tq1_0(x: &[f32], y: &mut [BlockTq1_0]) {
    for (x, blk) in x.as_chunks::<QK_K>().0.iter().zip(y) {
        let (d, id) = scale(x);
        let (xs, _) = x.as_chunks::<32>();
        let c: [__m256i; 8] = [
            codes32(&xs[0], id),
            codes32(&xs[1], id),
            codes32(&xs[2], id),
            codes32(&xs[3], id),
            codes32(&xs[4], id),
            codes32(&xs[5], id),
            codes32(&xs[6], id),
            codes32(&xs[7], id),
        ];
        // Bytes 0..32: values m + 32 n, most significant trit first.
        let q = horner3(horner3(horner3(horner3(c[0], c[1]), c[2]), c[3]), c[4]);
        // Bytes 32..48: values 160 + m + 16 n, the halves of c[5..8]; the
        // high half of c[7] holds value 240 + 4 n + j at byte 4 n + j.
        let c5h = _mm256_permute2x128_si256::<0x11>(c[5], c[5]);
        let c6h = _mm256_permute2x128_si256::<0x11>(c[6], c[6]);
        let r = horner3(horner3(horner3(horner3(c[5], c5h), c[6]), c6h), c[7]);
        // qh: trits n = 0..4 of byte j at dword n of the high half of c[7],
        // then one more factor 3 (the first trit most significant).
        let h = _mm256_permute2x128_si256::<0x11>(c[7], c[7]);
        let h1 = _mm256_srli_si256::<4>(h);
        let h2 = _mm256_srli_si256::<8>(h);
        let h3 = _mm256_srli_si256::<12>(h);
        let qh = times3(horner3(horner3(horner3(h, h1), h2), h3));
        // Bytes: q (32), r low half (16), qh low dword (4).
        let lo = _mm256_blend_epi32::<0b0001_0000>(r, qh);
        let (qa, qb) = (ceil_div_243(q), ceil_div_243(lo));
        let mut out = [0u8; 64];
        let (o, _) = out.as_chunks_mut::<32>();
        // SAFETY: `o[k]` is 32 writable bytes and `storeu` has no alignment
        // requirement.
        unsafe {
            _mm256_storeu_si256(o[0].as_mut_ptr().cast(), qa);
            _mm256_storeu_si256(o[1].as_mut_ptr().cast(), qb);
        }
        blk.qs[..32].copy_from_slice(&out[..32]);
        blk.qs[32..].copy_from_slice(&out[32..48]);
        blk.qh.copy_from_slice(&out[48..52]);
        blk.d = d;
    }
}

/// ggml's `quantize_row_tq2_0_ref` for finite `x` (`x.len() == 256 *
/// y.len()`; extra values or blocks are ignored).
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C.
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn quantize_row_tq2_0(x: &[f32], y: &mut [BlockTq2_0]) {
    for (x, blk) in x.as_chunks::<QK_K>().0.iter().zip(y) {
        let (d, id) = scale(x);
        // Byte 32 j + m, bits 2 n: value 128 j + m + 32 n.
        let (xs, _) = x.as_chunks::<128>();
        let (qs, _) = blk.qs.as_chunks_mut::<32>();
        for (x, q) in xs.iter().zip(qs) {
            let (x, _) = x.as_chunks::<32>();
            let c0 = codes32(&x[0], id);
            let c1 = _mm256_slli_epi16::<2>(codes32(&x[1], id));
            let c2 = _mm256_slli_epi16::<4>(codes32(&x[2], id));
            let c3 = _mm256_slli_epi16::<6>(codes32(&x[3], id));
            let v = _mm256_or_si256(_mm256_or_si256(c0, c1), _mm256_or_si256(c2, c3));
            // SAFETY: `q` is 32 writable bytes and `storeu` has no alignment
            // requirement.
            unsafe { _mm256_storeu_si256(q.as_mut_ptr().cast(), v) };
        }
        blk.d = d;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The multiply-high form of `ceil(q * 256 / 243)` for every `q` the
    /// base-3 packing makes (0..=242), against the scalar formula.
    #[test]
    fn ceil_div_243_matches_scalar_formula() {
        if !(is_x86_feature_detected!("avx2")
            && is_x86_feature_detected!("fma")
            && is_x86_feature_detected!("f16c"))
        {
            return;
        }
        for base in (0..=242u8).step_by(32) {
            let q: [u8; 32] = std::array::from_fn(|i| base.saturating_add(i as u8).min(242));
            let mut out = [0u8; 32];
            // SAFETY: the CPU supports AVX2, FMA and F16C (checked above);
            // `q` and `out` are 32 readable and writable bytes.
            unsafe {
                let v = ceil_div_243(load_u8x32(&q));
                _mm256_storeu_si256(out.as_mut_ptr().cast(), v);
            }
            for (q, o) in q.iter().zip(out) {
                assert_eq!(u32::from(o), (u32::from(*q) * 256).div_ceil(243), "q = {q}");
            }
        }
    }
}
