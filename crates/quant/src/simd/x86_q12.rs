//! x86_64 AVX2 (+ FMA + F16C) kernels for Q1_0 and Q2_0 ([`crate::legacy`]'s
//! `q1q2` module), chosen at run time by [`super::dispatch`] like those of
//! [`super::x86`] (same preconditions: `unsafe fn` only for the target
//! features; they take slices and process the shorter side on a length
//! mismatch). The AVX2 Q1_0 dot product is in [`super::x86_avx2dots`] (the
//! notes below on its integers still hold).
//!
//! # Exactness
//!
//! * Dot products (x raw `block_q8_0` bytes, four per Q1_0 block and two per
//!   Q2_0 block) compute each Q8_0 block's integer sum exactly for any
//!   bytes. Q1_0: `sum s q` with `s = +-1` is `maddubs(|q|, s sign(q))`:
//!   `|q|` read as unsigned is exact for `q = -128` and `s sign(q)` is -1, 0
//!   or 1, so every pair sum is within +-256. llama.cpp's AVX2 kernel
//!   negates `q` in a byte (`(q ^ m) - m`), which wraps for `q = -128`.
//!   Q2_0: `sum (c - 1) q = maddubs(c, q) - maddubs(1, q)` with the
//!   unsigned codes `c` (0..=3; pair sums at most `2 * 3 * 128`). The f32
//!   accumulation is llama.cpp's AVX2 Q1_0 kernel's in kind (per block `sum_k
//!   d_k s_k` in eight lanes, then an FMA with the block scale; Q1_0's four
//!   products in two FMA chains, blocks in pairs into two accumulators), not
//!   the scalar order, so results can differ from the scalar dot in the last
//!   bits;
//!   scales are exact (f16 table). At [`super::Level::Avx512`] both dots
//!   use `vpdpbusd` (AVX-512 VNNI) for the same integers: `sum 2 b q - sum
//!   q` for Q1_0's bits `b`, `sum c q - sum q` for Q2_0's codes.
//! * Dequantizers are bit-identical: Q1_0 picks `d` or the scalar code's
//!   `-d` (a sign flip) per bit with `blendvps`; Q2_0 computes its four
//!   products `(c - 1) * d` with the scalar code's f32 multiply and picks
//!   one per value with `vpermps`.
//! * Quantizers reproduce the scalar reference bytes. Q1_0's scale is the
//!   scalar code's serial sum `((0 + |x0|) + |x1|) + ...` over the block,
//!   run for eight blocks at once, one per lane (8 x 8 transposes), then
//!   the same division by 128 and F16C's round-to-nearest-even; its bits
//!   are `x >= 0` (`-0.0` included). Q2_0's `amax` is exact in any order,
//!   `id = 1 / amax` (or 0) is the scalar code's, and each code
//!   `clamp((int)roundf(x id) + 1, 0, 3)` comes from the same f32 product:
//!   `|x id|` is at most `amax * id < 1.5`, so `roundf` is 1 for `p >= 0.5`,
//!   -1 for `p <= -0.5` and 0 between (two compares). An `id` that
//!   overflowed to infinity (subnormal `amax`) makes every product infinite
//!   or NaN, which the scalar code's `(int)` turns into `INT_MIN`, code 0:
//!   the kernel writes zero codes then. Non-finite inputs never reach the
//!   quantizers (the dispatcher hands them to the scalar code, which
//!   reports them).

use std::arch::x86_64::*;

use half::f16;

use super::x86::{
    f2h, f16_table, h2f_t, hsum_f32x8, load_f32x8, load_u8x16, load_u8x32, store_f32x8,
};
use super::x86_fp4::q8_0_parts;
use crate::iquants::Q8_0_BYTES;
use crate::legacy::{BlockQ1_0, BlockQ2_0, QK1_0, QK2_0, q1_0_block_ref};

// ------------------------------------------------------------------ helpers

/// Transposes eight rows of eight floats: lane `b` of result `j` is lane
/// `j` of row `b`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn transpose8(r: [__m256; 8]) -> [__m256; 8] {
    let t0 = _mm256_unpacklo_ps(r[0], r[1]);
    let t1 = _mm256_unpackhi_ps(r[0], r[1]);
    let t2 = _mm256_unpacklo_ps(r[2], r[3]);
    let t3 = _mm256_unpackhi_ps(r[2], r[3]);
    let t4 = _mm256_unpacklo_ps(r[4], r[5]);
    let t5 = _mm256_unpackhi_ps(r[4], r[5]);
    let t6 = _mm256_unpacklo_ps(r[6], r[7]);
    let t7 = _mm256_unpackhi_ps(r[6], r[7]);
    let s0 = _mm256_shuffle_ps::<0x44>(t0, t2);
    let s1 = _mm256_shuffle_ps::<0xEE>(t0, t2);
    let s2 = _mm256_shuffle_ps::<0x44>(t1, t3);
    let s3 = _mm256_shuffle_ps::<0xEE>(t1, t3);
    let s4 = _mm256_shuffle_ps::<0x44>(t4, t6);
    let s5 = _mm256_shuffle_ps::<0xEE>(t4, t6);
    let s6 = _mm256_shuffle_ps::<0x44>(t5, t7);
    let s7 = _mm256_shuffle_ps::<0xEE>(t5, t7);
    [
        _mm256_permute2f128_ps::<0x20>(s0, s4),
        _mm256_permute2f128_ps::<0x20>(s1, s5),
        _mm256_permute2f128_ps::<0x20>(s2, s6),
        _mm256_permute2f128_ps::<0x20>(s3, s7),
        _mm256_permute2f128_ps::<0x31>(s0, s4),
        _mm256_permute2f128_ps::<0x31>(s1, s5),
        _mm256_permute2f128_ps::<0x31>(s2, s6),
        _mm256_permute2f128_ps::<0x31>(s3, s7),
    ]
}

/// Bit `j` of `x` moved to bit `2 j` (the others clear).
#[inline(always)]
fn spread_bits(x: u32) -> u64 {
    let mut v = u64::from(x);
    v = (v | (v << 16)) & 0x0000_ffff_0000_ffff;
    v = (v | (v << 8)) & 0x00ff_00ff_00ff_00ff;
    v = (v | (v << 4)) & 0x0f0f_0f0f_0f0f_0f0f;
    v = (v | (v << 2)) & 0x3333_3333_3333_3333;
    (v | (v << 1)) & 0x5555_5555_5555_5555
}

// ------------------------------------------------------------- dot products

/// Sums `d * b` over the blocks, `(d, b) = f(x[i], y[i])` (`d` the block
/// scale, `b` eight lanes of its scaled sub-block sums), in two register
/// accumulators, blocks in pairs (an accumulator array indexed by the block
/// number lives in memory, which chains every block's FMA through a store
/// and a load).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn sum_pairs<X, Y>(x: &[X], y: &[Y], f: impl Fn(&X, &Y) -> (f32, __m256)) -> f32 {
    let n = x.len().min(y.len());
    let (x2, xr) = x[..n].as_chunks::<2>();
    let (y2, yr) = y[..n].as_chunks::<2>();
    let (mut a0, mut a1) = (_mm256_setzero_ps(), _mm256_setzero_ps());
    for ([x0, x1], [y0, y1]) in x2.iter().zip(y2) {
        let (d0, b0) = f(x0, y0);
        a0 = _mm256_fmadd_ps(_mm256_set1_ps(d0), b0, a0);
        let (d1, b1) = f(x1, y1);
        a1 = _mm256_fmadd_ps(_mm256_set1_ps(d1), b1, a1);
    }
    for (xb, yb) in xr.iter().zip(yr) {
        let (d, b) = f(xb, yb);
        a0 = _mm256_fmadd_ps(_mm256_set1_ps(d), b, a0);
    }
    hsum_f32x8(_mm256_add_ps(a0, a1))
}

/// [`super::x86_avx2dots::vec_dot_q1_0_q8_0`] with AVX-512 VNNI ([`super::Level::Avx512`]):
/// `sum s q = sum 2 b q - sum q` for the bits `b`, two `vpdpbusd` (the
/// unsigned `2 b` from the bits as a byte mask, and ones, by the signed
/// quants; groups of four products, no saturation) and one subtraction in
/// place of AVX2's byte expansion, sign flip and two `maddubs`. The same
/// exact integers and f32 accumulation as the AVX2 kernel.
///
/// # Safety
/// The CPU must support AVX2, FMA, F16C, AVX-512 F/BW/VL and VNNI.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
pub(crate) unsafe fn vec_dot_q1_0_q8_0_vnni(x: &[BlockQ1_0], y: &[u8]) -> f32 {
    let t = f16_table();
    let (y, _) = y.as_chunks::<{ 4 * Q8_0_BYTES }>();
    let twos = _mm256_set1_epi8(2);
    let ones = _mm256_set1_epi8(1);
    let zero = _mm256_setzero_si256();
    sum_pairs(x, y, |xb, yb| {
        let (ys, _) = yb.as_chunks::<Q8_0_BYTES>();
        let (ws, _) = xb.qs.as_chunks::<4>();
        // One FMA chain over the four Q8_0 blocks (measured faster here
        // than the AVX2 kernel's two chains).
        let mut blk = _mm256_setzero_ps();
        for (k, (w, yk)) in ws.iter().zip(ys).enumerate() {
            let (dy, q) = q8_0_parts(t, yk);
            let q = load_u8x32(q);
            let b2 = _mm256_maskz_mov_epi8(u32::from_le_bytes(*w), twos);
            let p = _mm256_sub_epi32(
                _mm256_dpbusd_epi32(zero, b2, q),
                _mm256_dpbusd_epi32(zero, ones, q),
            );
            let s = _mm256_cvtepi32_ps(p);
            blk = if k == 0 {
                _mm256_mul_ps(_mm256_set1_ps(dy), s)
            } else {
                _mm256_fmadd_ps(_mm256_set1_ps(dy), s, blk)
            };
        }
        (h2f_t(t, xb.d), blk)
    })
}

/// Q2_0 x Q8_0, `y` the raw bytes of `block_q8_0`s (two, 68 bytes, per
/// Q2_0 block); blocks past the shorter side are ignored.
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C.
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn vec_dot_q2_0_q8_0(x: &[BlockQ2_0], y: &[u8]) -> f32 {
    let (ones8, ones16) = (_mm256_set1_epi8(1), _mm256_set1_epi16(1));
    q2_0_dot(x, y, |c, qt, q| {
        let p = _mm256_sub_epi16(_mm256_maddubs_epi16(c, qt), _mm256_maddubs_epi16(ones8, q));
        _mm256_madd_epi16(p, ones16)
    })
}

/// [`vec_dot_q2_0_q8_0`] with AVX-512 VNNI: `vpdpbusd` in place of
/// `maddubs` + `madd` (the same exact integers and f32 accumulation).
///
/// # Safety
/// The CPU must support AVX2, FMA, F16C, AVX-512 F/BW/VL and VNNI.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
pub(crate) unsafe fn vec_dot_q2_0_q8_0_vnni(x: &[BlockQ2_0], y: &[u8]) -> f32 {
    let (ones8, zero) = (_mm256_set1_epi8(1), _mm256_setzero_si256());
    q2_0_dot(x, y, |c, qt, q| {
        _mm256_sub_epi32(
            _mm256_dpbusd_epi32(zero, c, qt),
            _mm256_dpbusd_epi32(zero, ones8, q),
        )
    })
}

/// The Q2_0 dots' body: `sums(c, qt, q)` gives eight exact i32 partial sums
/// of `sum c qt - sum q` for 32 codes `c` (0..=3), the quants `qt` in the
/// codes' order and the quants `q` in storage order (each level supplies
/// its instructions).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn q2_0_dot(x: &[BlockQ2_0], y: &[u8], sums: impl Fn(__m256i, __m256i, __m256i) -> __m256i) -> f32 {
    let t = f16_table();
    let (y, _) = y.as_chunks::<{ 2 * Q8_0_BYTES }>();
    let m3 = _mm256_set1_epi8(3);
    let shifts = _mm256_setr_epi32(0, 2, 4, 6, 0, 2, 4, 6);
    let words = [
        _mm256_setr_epi32(0, 0, 0, 0, 1, 1, 1, 1),
        _mm256_setr_epi32(2, 2, 2, 2, 3, 3, 3, 3),
    ];
    // In each 128-bit lane, byte 4 m + b takes byte 4 b + m (a 4 x 4
    // transpose).
    let transpose = _mm256_broadcastsi128_si256(_mm_setr_epi8(
        0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15,
    ));
    sum_pairs(x, y, |xb, yb| {
        let (ys, _) = yb.as_chunks::<Q8_0_BYTES>();
        let qs = _mm256_castsi128_si256(load_u8x16(&xb.qs));
        let mut blk = _mm256_setzero_ps();
        for (k, (w, yk)) in words.iter().zip(ys).enumerate() {
            let (dy, q) = q8_0_parts(t, yk);
            // Dword 4 l + m holds qs word 2 k + l shifted down 2 m: its byte
            // b has, in its low two bits, the code of value 16 l + 4 b + m
            // of the Q8_0 block ...
            let c = _mm256_and_si256(
                _mm256_srlv_epi32(_mm256_permutevar8x32_epi32(qs, *w), shifts),
                m3,
            );
            // ... where the transposed quants put quant 16 l + 4 b + m.
            let q = load_u8x32(q);
            let s = _mm256_cvtepi32_ps(sums(c, _mm256_shuffle_epi8(q, transpose), q));
            blk = if k == 0 {
                _mm256_mul_ps(_mm256_set1_ps(dy), s)
            } else {
                _mm256_fmadd_ps(_mm256_set1_ps(dy), s, blk)
            };
        }
        (h2f_t(t, xb.d), blk)
    })
}

// ------------------------------------------------------------- dequantizers

/// `y = bit ? d : -d` for Q1_0 blocks.
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C.
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn dequantize_row_q1_0(x: &[BlockQ1_0], y: &mut [f32]) {
    let t = f16_table();
    // Lane j of group g: bit 8 g + j of a word moved to the sign bit.
    let shifts = [
        _mm256_setr_epi32(31, 30, 29, 28, 27, 26, 25, 24),
        _mm256_setr_epi32(23, 22, 21, 20, 19, 18, 17, 16),
        _mm256_setr_epi32(15, 14, 13, 12, 11, 10, 9, 8),
        _mm256_setr_epi32(7, 6, 5, 4, 3, 2, 1, 0),
    ];
    for (b, out) in x.iter().zip(y.as_chunks_mut::<QK1_0>().0) {
        let d = _mm256_set1_ps(h2f_t(t, b.d));
        // The scalar `-d`: a sign flip.
        let nd = _mm256_xor_ps(d, _mm256_set1_ps(-0.0));
        for (w, out) in
            b.qs.as_chunks::<4>()
                .0
                .iter()
                .zip(out.as_chunks_mut::<32>().0)
        {
            let v = _mm256_set1_epi32(i32::from_le_bytes(*w));
            for (o, s) in out.as_chunks_mut::<8>().0.iter_mut().zip(&shifts) {
                let m = _mm256_castsi256_ps(_mm256_sllv_epi32(v, *s));
                store_f32x8(o, _mm256_blendv_ps(nd, d, m));
            }
        }
    }
}

/// `y = (c - 1) * d` for Q2_0 blocks.
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C.
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn dequantize_row_q2_0(x: &[BlockQ2_0], y: &mut [f32]) {
    let t = f16_table();
    let lo = _mm256_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14);
    let hi = _mm256_setr_epi32(16, 18, 20, 22, 24, 26, 28, 30);
    let steps = _mm256_setr_ps(-1.0, 0.0, 1.0, 2.0, -1.0, 0.0, 1.0, 2.0);
    for (b, out) in x.iter().zip(y.as_chunks_mut::<QK2_0>().0) {
        // The scalar code's four products `(c - 1) * d`, twice: vpermps
        // reads the low three bits of each index, code c plus 4 times the
        // next code's low bit. (A vector multiply: a scalar `-1.0 * d` may
        // be compiled as a negation, which differs for a NaN `d`.)
        let table = _mm256_mul_ps(steps, _mm256_set1_ps(h2f_t(t, b.d)));
        for (w, out) in
            b.qs.as_chunks::<4>()
                .0
                .iter()
                .zip(out.as_chunks_mut::<16>().0)
        {
            let v = _mm256_set1_epi32(i32::from_le_bytes(*w));
            let [o0, o1] = out.as_chunks_mut::<8>().0 else {
                continue;
            };
            store_f32x8(
                o0,
                _mm256_permutevar8x32_ps(table, _mm256_srlv_epi32(v, lo)),
            );
            store_f32x8(
                o1,
                _mm256_permutevar8x32_ps(table, _mm256_srlv_epi32(v, hi)),
            );
        }
    }
}

// --------------------------------------------------------------- quantizers

/// ggml's `quantize_row_q1_0_ref`, byte-identical (see the module docs).
/// The values must be finite (the dispatcher checks).
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C.
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn quantize_row_q1_0(x: &[f32], y: &mut [BlockQ1_0]) {
    let abs = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fff_ffff));
    let (x8, xr) = x.as_chunks::<{ 8 * QK1_0 }>();
    let (y8, yr) = y.as_chunks_mut::<8>();
    for (xs, ys) in x8.iter().zip(y8) {
        let (rows, _) = xs.as_chunks::<QK1_0>();
        // Lane b sums block b's |x| in the scalar order.
        let mut sum = _mm256_setzero_ps();
        for c in 0..QK1_0 / 8 {
            let tile: [__m256; 8] = std::array::from_fn(|b| {
                let (r, _) = rows[b].as_chunks::<8>();
                _mm256_and_ps(load_f32x8(&r[c]), abs)
            });
            for col in transpose8(tile) {
                sum = _mm256_add_ps(sum, col);
            }
        }
        let d = _mm256_div_ps(sum, _mm256_set1_ps(QK1_0 as f32));
        let h = _mm256_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(d);
        let mut hb = [0u16; 8];
        // SAFETY: `hb` is 16 writable bytes and `storeu` has no alignment
        // requirement.
        unsafe { _mm_storeu_si128(hb.as_mut_ptr().cast(), h) };
        for ((blk, row), h) in ys.iter_mut().zip(rows).zip(hb) {
            blk.d = f16::from_bits(h);
            for (q, v) in blk.qs.iter_mut().zip(row.as_chunks::<8>().0) {
                let ge = _mm256_cmp_ps::<_CMP_GE_OQ>(load_f32x8(v), _mm256_setzero_ps());
                *q = _mm256_movemask_ps(ge) as u8;
            }
        }
    }
    for (blk, xb) in yr.iter_mut().zip(xr.as_chunks::<QK1_0>().0) {
        *blk = q1_0_block_ref(xb);
    }
}

/// ggml's `quantize_row_q2_0_ref`, byte-identical (see the module docs).
/// The values must be finite (the dispatcher checks).
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C.
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn quantize_row_q2_0(x: &[f32], y: &mut [BlockQ2_0]) {
    let abs = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fff_ffff));
    for (blk, xb) in y.iter_mut().zip(x.as_chunks::<QK2_0>().0) {
        let (v, _) = xb.as_chunks::<8>();
        let m = v.iter().fold(_mm256_setzero_ps(), |m, v| {
            _mm256_max_ps(m, _mm256_and_ps(load_f32x8(v), abs))
        });
        let m = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps::<1>(m));
        let m = _mm_max_ps(m, _mm_movehl_ps(m, m));
        let amax = _mm_cvtss_f32(_mm_max_ss(m, _mm_movehdup_ps(m)));
        let d = amax;
        let id = if d > 0.0 { 1.0 / d } else { 0.0 };
        blk.d = f2h(d);
        if !id.is_finite() {
            // Every product is infinite or NaN: (int)roundf gives INT_MIN.
            blk.qs = [0; QK2_0 / 4];
            continue;
        }
        let idv = _mm256_set1_ps(id);
        let (mut up, mut down) = (0u64, 0u64);
        for (g, v) in v.iter().enumerate() {
            let p = _mm256_mul_ps(load_f32x8(v), idv);
            let ge = _mm256_cmp_ps::<_CMP_GE_OQ>(p, _mm256_set1_ps(0.5));
            let le = _mm256_cmp_ps::<_CMP_LE_OQ>(p, _mm256_set1_ps(-0.5));
            up |= u64::from(_mm256_movemask_ps(ge) as u8) << (8 * g);
            down |= u64::from(_mm256_movemask_ps(le) as u8) << (8 * g);
        }
        // Code 2 where rounded up, 0 where down, else 1: bit 1 is `up`, bit
        // 0 neither.
        let one = !(up | down);
        let lo = spread_bits(one as u32) | (spread_bits(up as u32) << 1);
        let hi = spread_bits((one >> 32) as u32) | (spread_bits((up >> 32) as u32) << 1);
        let (a, b) = blk.qs.split_at_mut(8);
        a.copy_from_slice(&lo.to_le_bytes());
        b.copy_from_slice(&hi.to_le_bytes());
    }
}
