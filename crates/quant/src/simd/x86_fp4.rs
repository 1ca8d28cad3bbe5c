//! x86_64 AVX2 (+ FMA + F16C) kernels for the FP4 types MXFP4 and NVFP4.
//!
//! The same conventions as [`super::x86`] (chosen at run time by
//! [`super::dispatch`], `unsafe fn` only for the CPU-feature precondition,
//! never reading or writing outside the slices they get).
//!
//! # Exactness
//!
//! * Both types store 4-bit E2M1 codes, looked up (`pshufb`) in ggml's
//!   doubled codebook [`KVALUES_MXFP4`] (values in -12..=12). The dot
//!   products multiply them with the Q8_0 quants as `|y| * (sign(y) v)` in
//!   `maddubs` ([`iq4_pairs`]): exact for every byte, since no codebook
//!   value is -128 and each pair sum is at most `2 * 128 * 12` in magnitude.
//!   Every block's integer sums are then exact (eight i32 lanes of at most
//!   `4 * 12 * 128` each, exact in f32).
//! * The scales are the scalar code's: MXFP4 multiplies the Q8_0 block's
//!   f16 scale by [`e8m0_to_fp32_half`] of the block exponent, in that
//!   order; NVFP4 multiplies [`ue4m3_to_fp32`] of each sub-block scale by the
//!   f16 scale of the Q8_0 block it meets, lane by lane (an IEEE product is
//!   commutative). Both decodes come from tables filled by the scalar
//!   functions, the f16 one from [`f16_table`]. The f32 accumulation (FMA,
//!   eight lanes, several accumulators) is not the scalar order, so the dots
//!   can differ from the scalar ones in the last bits.
//! * The dequantizers are one multiply per value, `v * d`, as the scalar
//!   ones (bit-identical).
//! * The quantizers reproduce the scalar reference bytes: the block and
//!   sub-block scales come from the scalar functions (`log2f` for MXFP4's
//!   exponent, [`fp32_to_ue4m3`] for NVFP4's), the absolute maxima are exact,
//!   and the code search performs the scalar search's float operations and
//!   strict comparisons, folded onto the codebook's positive half (see
//!   [`best_codes`]). Non-finite inputs never reach them (the dispatcher
//!   hands them to the scalar code, which reports them).

use std::arch::x86_64::*;
use std::sync::OnceLock;

use half::f16;

use super::x86::{
    abs_bits, f16_table, h2f_t, hmax_i32x8, hsum_f32x8, i8x32_to_f32, iq4_pairs, load_block,
    load_f32x8, load_u8x16, load_u8x32, low_bytes, store_f32x8, store_scaled, sum_blocks,
};
use crate::iquants::grids::KVALUES_MXFP4;
use crate::iquants::{
    BlockMxfp4, BlockNvfp4, Q8_0_BYTES, e8m0_to_fp32_half, fp32_to_ue4m3, mxfp4_exponent,
    ue4m3_to_fp32,
};

/// Every scale byte's decoded value, from the scalar decoders.
struct ScaleTables {
    /// [`e8m0_to_fp32_half`] of each byte.
    e8m0_half: [f32; 256],
    /// [`ue4m3_to_fp32`] of each byte, four times (one 128-bit lane).
    ue4m3: [[f32; 4]; 256],
}

fn scale_tables() -> &'static ScaleTables {
    static TABLES: OnceLock<ScaleTables> = OnceLock::new();
    TABLES.get_or_init(|| {
        let bytes: [u8; 256] = std::array::from_fn(|i| u8::try_from(i).unwrap_or(0));
        ScaleTables {
            e8m0_half: bytes.map(e8m0_to_fp32_half),
            ue4m3: bytes.map(|b| [ue4m3_to_fp32(b); 4]),
        }
    })
}

/// Loads four `f32`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn load_f32x4(x: &[f32; 4]) -> __m128 {
    // SAFETY: `x` is 16 readable bytes and `loadu` has no alignment requirement.
    unsafe { _mm_loadu_ps(x.as_ptr()) }
}

/// The FP4 codebook [`KVALUES_MXFP4`] in both 128-bit lanes.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn fp4_table() -> __m256i {
    let t = KVALUES_MXFP4.map(|v| v as u8);
    _mm256_broadcastsi128_si256(load_u8x16(&t))
}

/// The f16 scale of a raw `block_q8_0` (little-endian, first two bytes) as
/// f32, and its 32 quants.
#[inline(always)]
pub(super) fn q8_0_parts<'a>(t: &[f32; 1 << 16], b: &'a [u8; Q8_0_BYTES]) -> (f32, &'a [u8; 32]) {
    let [d0, d1, qs @ ..] = b;
    (h2f_t(t, f16::from_bits(u16::from_le_bytes([*d0, *d1]))), qs)
}

/// The 32 codebook values of an MXFP4 block in element order: the low
/// nibbles of the 16 bytes (lane 0), then the high ones (lane 1).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn mxfp4_values(table: __m256i, qs: &[u8; 16]) -> __m256i {
    // The bytes in both lanes, lane 1 shifted down a nibble (the bits that
    // come in from the next byte are masked off), so that every index is
    // 0..=15 and the shuffle is a lookup.
    let q = _mm256_broadcastsi128_si256(load_u8x16(qs));
    let q = _mm256_srlv_epi64(q, _mm256_setr_epi64x(0, 0, 4, 4));
    _mm256_shuffle_epi8(table, _mm256_and_si256(q, _mm256_set1_epi8(0x0f)))
}

/// The 64 codebook values of an NVFP4 block in element order: sub-blocks 0
/// and 1, then 2 and 3. Sub-block `s` is the 64-bit word `s` of `qs`, its
/// low nibbles then its high ones.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn nvfp4_values(table: __m256i, qs: &[u8; 32]) -> [__m256i; 2] {
    let q = load_u8x32(qs);
    let shift = _mm256_setr_epi64x(0, 4, 0, 4);
    let m4 = _mm256_set1_epi8(0x0f);
    // Words [w0, w0, w1, w1] and [w2, w2, w3, w3], every second one shifted
    // down a nibble; masked, every index is 0..=15.
    let lookup =
        |w: __m256i| _mm256_shuffle_epi8(table, _mm256_and_si256(_mm256_srlv_epi64(w, shift), m4));
    [
        lookup(_mm256_permute4x64_epi64::<0b01_01_00_00>(q)),
        lookup(_mm256_permute4x64_epi64::<0b11_11_10_10>(q)),
    ]
}

/// The eight exact partial sums of 32 codebook values with 32 Q8_0 quants,
/// as f32.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn dot_x32(v: __m256i, qy: &[u8; 32]) -> __m256 {
    let p = iq4_pairs(v, load_u8x32(qy));
    _mm256_cvtepi32_ps(_mm256_madd_epi16(p, _mm256_set1_epi16(1)))
}

/// MXFP4 x Q8_0, `y` the raw bytes of `block_q8_0`s (34 each); blocks past
/// the shorter side are ignored.
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C.
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn vec_dot_mxfp4_q8_0(x: &[BlockMxfp4], y: &[u8]) -> f32 {
    let t = f16_table();
    let e8m0 = &scale_tables().e8m0_half;
    let table = fp4_table();
    let (y, _) = y.as_chunks::<Q8_0_BYTES>();
    sum_blocks(x, y, |bx, by| {
        let (dy, qy) = q8_0_parts(t, by);
        // The scalar code's `d_y * e8m0_half(e)`.
        let d = dy * e8m0[usize::from(bx.e)];
        (d, dot_x32(mxfp4_values(table, &bx.qs), qy))
    })
}

/// The two scale vectors of an NVFP4 block: `ue4m3(d[s]) * d_y` (the scalar
/// code's product) in the four lanes of sub-block `s`'s partial sums,
/// sub-blocks 0 and 1 with the first Q8_0 block's `d_y`, 2 and 3 with the
/// second's.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn nvfp4_scales(ue4m3: &[[f32; 4]; 256], d: [u8; 4], dy: [f32; 2]) -> [__m256; 2] {
    let pair = |lo: u8, hi: u8| {
        _mm256_set_m128(
            load_f32x4(&ue4m3[usize::from(hi)]),
            load_f32x4(&ue4m3[usize::from(lo)]),
        )
    };
    [
        _mm256_mul_ps(pair(d[0], d[1]), _mm256_set1_ps(dy[0])),
        _mm256_mul_ps(pair(d[2], d[3]), _mm256_set1_ps(dy[1])),
    ]
}

/// One NVFP4 x 2 Q8_0 block: its two (scale vector, partial sums) pairs.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn nvfp4_q8_0_block(
    t: &[f32; 1 << 16],
    ue4m3: &[[f32; 4]; 256],
    table: __m256i,
    bx: &BlockNvfp4,
    [y0, y1]: &[[u8; Q8_0_BYTES]; 2],
) -> [(__m256, __m256); 2] {
    let (dy0, q0) = q8_0_parts(t, y0);
    let (dy1, q1) = q8_0_parts(t, y1);
    let [s01, s23] = nvfp4_scales(ue4m3, bx.d, [dy0, dy1]);
    let [v01, v23] = nvfp4_values(table, &bx.qs);
    [(s01, dot_x32(v01, q0)), (s23, dot_x32(v23, q1))]
}

/// NVFP4 x Q8_0, `y` the raw bytes of `block_q8_0`s (two, 68 bytes, per
/// NVFP4 block); blocks past the shorter side are ignored.
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C.
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn vec_dot_nvfp4_q8_0(x: &[BlockNvfp4], y: &[u8]) -> f32 {
    let t = f16_table();
    let ue4m3 = &scale_tables().ue4m3;
    let table = fp4_table();
    let (y, _) = y.as_chunks::<Q8_0_BYTES>();
    let (y, _) = y.as_chunks::<2>();
    // Two blocks per step, four accumulators.
    let (x2, xr) = x.as_chunks::<2>();
    let (y2, yr) = y.as_chunks::<2>();
    let mut acc = [_mm256_setzero_ps(); 4];
    for (xs, ys) in x2.iter().zip(y2) {
        for ((a, bx), by) in acc.as_chunks_mut::<2>().0.iter_mut().zip(xs).zip(ys) {
            let [(s0, p0), (s1, p1)] = nvfp4_q8_0_block(t, ue4m3, table, bx, by);
            a[0] = _mm256_fmadd_ps(s0, p0, a[0]);
            a[1] = _mm256_fmadd_ps(s1, p1, a[1]);
        }
    }
    for (bx, by) in xr.iter().zip(yr) {
        let [(s0, p0), (s1, p1)] = nvfp4_q8_0_block(t, ue4m3, table, bx, by);
        acc[0] = _mm256_fmadd_ps(s0, p0, acc[0]);
        acc[1] = _mm256_fmadd_ps(s1, p1, acc[1]);
    }
    let [a0, a1, a2, a3] = acc;
    hsum_f32x8(_mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3)))
}

/// `y = kvalues[q] * e8m0_half(e)` for MXFP4 blocks (the scalar code's one
/// multiply).
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C.
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn dequantize_row_mxfp4(x: &[BlockMxfp4], y: &mut [f32]) {
    let e8m0 = &scale_tables().e8m0_half;
    let table = fp4_table();
    for (b, out) in x.iter().zip(y.as_chunks_mut::<32>().0) {
        let d = _mm256_set1_ps(e8m0[usize::from(b.e)]);
        store_scaled(out, i8x32_to_f32(mxfp4_values(table, &b.qs)), d);
    }
}

/// `y = kvalues[q] * ue4m3(d[s])` for NVFP4 blocks (the scalar code's one
/// multiply per value).
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C.
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn dequantize_row_nvfp4(x: &[BlockNvfp4], y: &mut [f32]) {
    let ue4m3 = &scale_tables().ue4m3;
    let table = fp4_table();
    for (b, out) in x.iter().zip(y.as_chunks_mut::<64>().0) {
        let (out, _) = out.as_chunks_mut::<8>();
        let [v01, v23] = nvfp4_values(table, &b.qs);
        // Eight vectors of eight values; sub-block s is vectors 2s, 2s + 1.
        let [q0, q1, q2, q3] = i8x32_to_f32(v01);
        let [q4, q5, q6, q7] = i8x32_to_f32(v23);
        let q = [q0, q1, q2, q3, q4, q5, q6, q7];
        for (i, (o, q)) in out.iter_mut().zip(q).enumerate() {
            let d = _mm256_set1_ps(ue4m3[usize::from(b.d[i / 2])][0]);
            store_f32x8(o, _mm256_mul_ps(q, d));
        }
    }
}

// --------------------------------------------------------------- quantizers

/// `kvalues[k] * d` for the positive codes `k = 1..=7`, each the scalar
/// code's product, in all lanes.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn code_steps(d: f32) -> [__m256; 7] {
    std::array::from_fn(|k| _mm256_set1_ps(f32::from(KVALUES_MXFP4[k + 1]) * d))
}

/// ggml's `best_index_mxfp4` for eight values: the first of the 16 codes
/// whose `|kvalues[i] * d - x|` is smallest, as `i32`.
///
/// The codebook is symmetric (codes `8 + k` are codes `k` negated, code 8
/// is zero again), and IEEE subtraction is too: the error of code `8 + k`
/// for `x` is the error of code `k` for `-x`. For `x > 0` the negative
/// codes' errors `k d + x` are never below code 0's `x`, and for `x < 0`
/// the positive ones' never below code 0's `|x|`; so the first strict
/// minimum over codes 0..=7 for `|x|` (same errors, same order, same strict
/// comparison as the scalar loop), moved to the negative half where `x < 0`
/// and the code is not 0, is the scalar code's index.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn best_codes(x: __m256, steps: &[__m256; 7]) -> __m256i {
    let sign = _mm256_set1_ps(-0.0);
    let a = _mm256_andnot_ps(sign, x);
    // Code 0's error: |0 * d - a| = a.
    let mut best = a;
    let mut code = _mm256_setzero_si256();
    for (k, step) in (1..).zip(steps) {
        let err = _mm256_andnot_ps(sign, _mm256_sub_ps(*step, a));
        let lt = _mm256_castps_si256(_mm256_cmp_ps::<_CMP_LT_OQ>(err, best));
        // min(err, best) is err exactly where err < best.
        best = _mm256_min_ps(err, best);
        code = _mm256_blendv_epi8(code, _mm256_set1_epi32(k), lt);
    }
    let negative = _mm256_srai_epi32::<31>(_mm256_castps_si256(x));
    let nonzero = _mm256_cmpgt_epi32(code, _mm256_setzero_si256());
    let eight = _mm256_and_si256(_mm256_and_si256(negative, nonzero), _mm256_set1_epi32(8));
    _mm256_or_si256(code, eight)
}

/// The largest `|x|` of the vectors (exact: the bits of non-NaN absolute
/// values order as the values do).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn abs_max(v: &[__m256]) -> f32 {
    let m = v.iter().fold(_mm256_setzero_si256(), |m, &v| {
        _mm256_max_epi32(m, abs_bits(v))
    });
    f32::from_bits(hmax_i32x8(m) as u32)
}

/// ggml's `quantize_row_mxfp4_ref`, byte-identical: the block exponent
/// from the scalar code's [`mxfp4_exponent`], then the codes as
/// [`best_codes`]. The values must be finite (the dispatcher checks).
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C.
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn quantize_row_mxfp4(x: &[f32], y: &mut [BlockMxfp4]) {
    for (blk, xb) in y.iter_mut().zip(x.as_chunks::<32>().0) {
        let v = load_block(xb);
        let e = mxfp4_exponent(abs_max(&v));
        blk.e = e;
        let steps = code_steps(e8m0_to_fp32_half(e));
        let codes = low_bytes(
            best_codes(v[0], &steps),
            best_codes(v[1], &steps),
            best_codes(v[2], &steps),
            best_codes(v[3], &steps),
        );
        // Byte j: code j (0..=15) | code j + 16 << 4.
        let hi = _mm_slli_epi16::<4>(_mm256_extracti128_si256::<1>(codes));
        let qs = _mm_or_si128(_mm256_castsi256_si128(codes), hi);
        // SAFETY: `blk.qs` is 16 writable bytes; `storeu` has no alignment
        // requirement.
        unsafe { _mm_storeu_si128(blk.qs.as_mut_ptr().cast(), qs) };
    }
}

/// ggml's `quantize_row_nvfp4_ref`, byte-identical: each sub-block's scale
/// from the scalar [`fp32_to_ue4m3`] of `amax / 6`, then the codes as
/// [`best_codes`] for its decoded value. The values must be finite (the
/// dispatcher checks).
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C.
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn quantize_row_nvfp4(x: &[f32], y: &mut [BlockNvfp4]) {
    let ue4m3 = &scale_tables().ue4m3;
    for (blk, xb) in y.iter_mut().zip(x.as_chunks::<64>().0) {
        let (xs, _) = xb.as_chunks::<8>();
        let mut codes = [_mm256_setzero_si256(); 4];
        for (s, (c, xs)) in codes.iter_mut().zip(xs.as_chunks::<2>().0).enumerate() {
            let v = [load_f32x8(&xs[0]), load_f32x8(&xs[1])];
            let ue = fp32_to_ue4m3(abs_max(&v) / 6.0);
            blk.d[s] = ue;
            let steps = code_steps(ue4m3[usize::from(ue)][0]);
            // Byte j of the sub-block: code j | code j + 8 << 4.
            let hi = _mm256_slli_epi32::<4>(best_codes(v[1], &steps));
            *c = _mm256_or_si256(best_codes(v[0], &steps), hi);
        }
        let qs = low_bytes(codes[0], codes[1], codes[2], codes[3]);
        // SAFETY: `blk.qs` is 32 writable bytes; `storeu` has no alignment
        // requirement.
        unsafe { _mm256_storeu_si256(blk.qs.as_mut_ptr().cast(), qs) };
    }
}
