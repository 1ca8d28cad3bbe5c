//! x86_64 AVX2 IQ4_NL and IQ4_XS quantizers: ggml's
//! `quantize_row_iq4_nl_impl`, byte-identical to the scalar port in
//! [`crate::iquants`] (itself byte-identical to llama.cpp, which builds it
//! without FMA).
//!
//! ggml searches each group of 32 values for its scale with one pass that
//! starts from `max / 127` and, for `quantize_iq4_nl` / `quantize_iq4_xs`,
//! fifteen more passes (`itry = -7..=7`), each mapping every value to its
//! nearest codebook entry with a branchy binary search and summing
//! `w q x` and `w q q` in order. Here the sixteen passes of one group run
//! side by side, one pass per lane of two AVX2 registers: lane `t` performs
//! exactly pass `t`'s IEEE binary32 operations in ggml's order (`id * x`,
//! `(w * q) * x`, `(w * q) * q`, the sums from `j = 0` up; multiply and add
//! never fused), so each pass's `sumqx` and `sumq2` are the scalar ones, and
//! the choice among them is the scalar code's. Everything between the
//! searches (`sigma2`, the weights, `amax`, the IQ4_XS super-scale) is the
//! same scalar arithmetic; `sigma2` for eight groups runs as eight
//! interleaved chains, each in ggml's order.
//!
//! The nearest-entry search ([`search`]) is branch-free: for the codebook
//! `v`, ggml's `best_index_int8(a)` equals the number of `k` in `0..15` with
//! `!(a < T[k])`, `T[k] = (v[k] + v[k+1]) / 2` (exact: these are integers or
//! halves). Proof: inside `(v[k], v[k+1])` ggml picks `k + 1` iff
//! `!(a - v[k] < v[k+1] - a)`. Within 1/2 of `T[k]` both subtractions are
//! exact (`a - v` with `v` an integer is a multiple of `a`'s ulp, and here
//! `|a - v| <= 12.5` stays below `2^(e+1)` for `2^e <= |a|`: `|a| >= 4`,
//! and `|a - v| <= 6.5` for the two thresholds below 8 in magnitude), so
//! the test is `a >= T[k]`; farther away the exact difference of the two
//! sides exceeds 1 while each rounding error is below 2^-20. Below `v[0]`
//! (0) and above `v[15]` (15) the count agrees, and a NaN, for which every
//! ggml comparison is false, gives 15 in both. The count is a four-level
//! binary search over `T`, whose comparison masks index the next level's
//! table directly (see [`pos`]). The unit tests check the count against
//! ggml's search ulp by ulp around every threshold, and the vector search
//! against it lane by lane.
//!
//! The reference path without the search (`quantize_row_iq4_nl_ref`, what
//! llama.cpp's `test-quantize-perf` times) maps each group's 32 values in
//! four registers and sums the products of eight groups in eight
//! interleaved scalar chains, each in ggml's order.
//!
//! The kernels expect finite values and importance weights (the dispatcher
//! checks them first, and hands anything else to the scalar code); given
//! others they still read and write only inside their slices.

// Lane loops index like ggml's C, so each line can be checked against it.
#![allow(clippy::needless_range_loop)]

use std::arch::x86_64::*;

use crate::common::fp32_to_fp16;
use crate::iquants::grids::KVALUES_IQ4NL;
use crate::iquants::{BlockIq4Nl, BlockIq4Xs, nearest_int};
use crate::kquants::QK_K;

/// ggml's `QK4_NL`.
const QK4_NL: usize = 32;
/// ggml's `GROUP_MAX_EPS`.
const GROUP_MAX_EPS: f32 = 1e-15;
/// ggml's `ntry` for `quantize_iq4_nl` / `quantize_iq4_xs`.
const NTRY: i32 = 7;

/// The codebook as f32.
const V: [f32; 16] = {
    let mut v = [0.0f32; 16];
    let mut i = 0;
    while i < 16 {
        v[i] = KVALUES_IQ4NL[i] as f32;
        i += 1;
    }
    v
};

/// `T[k] = (v[k] + v[k+1]) / 2`: `best_index_int8(a)` is the number of `k`
/// with `!(a < T[k])` (see the module docs).
pub(crate) const T: [f32; 15] = {
    let mut t = [0.0f32; 15];
    let mut k = 0;
    while k < 15 {
        t[k] = (V[k] + V[k + 1]) / 2.0;
        k += 1;
    }
    t
};

/// `_mm256_setr_ps` of eight entries of a table.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn table8(t: [f32; 8]) -> __m256 {
    _mm256_setr_ps(t[0], t[1], t[2], t[3], t[4], t[5], t[6], t[7])
}

/// Where the search path `(c1, c2, c3)` (the first three comparisons)
/// lands in the eight-entry tables below: the lanes' all-ones / all-zeros
/// masks combine as `((c2 & 3) ^ c1) ^ (c3 & 1)`, whose low three bits (all
/// that `vpermps` reads) differ for each path.
const fn pos(c1: bool, c2: bool, c3: bool) -> usize {
    let mut p = 0;
    if c2 {
        p ^= 3;
    }
    if c1 {
        p ^= 7;
    }
    if c3 {
        p ^= 1;
    }
    p & 7
}

/// Builds an eight-entry table: entry `pos(c1, c2, c3)` is
/// `f(8 c1 + 4 c2 + 2 c3)`, the index the path has reached.
const fn path_table(f: [f32; 16], off: usize, c3_matters: bool) -> [f32; 8] {
    let mut t = [0.0f32; 8];
    let mut b = 0;
    while b < 8 {
        let (c1, c2, c3) = (b & 4 != 0, b & 2 != 0, b & 1 != 0);
        let i = 8 * (c1 as usize) + 4 * (c2 as usize) + 2 * (c3 as usize);
        if c3_matters || !c3 {
            t[pos(c1, c2, c3)] = f[i + off];
        }
        b += 1;
    }
    t
}

/// `T` padded to sixteen entries.
const T16: [f32; 16] = {
    let mut t = [0.0f32; 16];
    let mut k = 0;
    while k < 15 {
        t[k] = T[k];
        k += 1;
    }
    t
};
/// The third comparison's thresholds, `T[8 c1 + 4 c2 + 1]`.
const L3: [f32; 8] = path_table(T16, 1, false);
/// The fourth comparison's thresholds, `T[8 c1 + 4 c2 + 2 c3]`.
const L4: [f32; 8] = path_table(T16, 0, true);
/// The codebook value if the fourth comparison fails, `v[8 c1 + 4 c2 + 2 c3]`...
const VE: [f32; 8] = path_table(V, 0, true);
/// ... and if it holds, `v[8 c1 + 4 c2 + 2 c3 + 1]`.
const VO: [f32; 8] = path_table(V, 1, true);
/// `8 c1 + 4 c2 + 2 c3`, the index before the fourth comparison.
const I3: [i32; 8] = {
    let mut t = [0i32; 8];
    let mut b = 0;
    while b < 8 {
        let (c1, c2, c3) = (b & 4 != 0, b & 2 != 0, b & 1 != 0);
        t[pos(c1, c2, c3)] = 8 * (c1 as i32) + 4 * (c2 as i32) + 2 * (c3 as i32);
        b += 1;
    }
    t
};

/// The four-level binary search over [`T`] for ggml's
/// `best_index_int8(16, kvalues_iq4nl, a)` per lane: the position of the
/// path after three comparisons (see [`pos`]) and the fourth comparison's
/// mask.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn search(a: __m256) -> (__m256i, __m256) {
    let c1 = _mm256_cmp_ps::<_CMP_NLT_UQ>(a, _mm256_set1_ps(T[7]));
    let t2 = _mm256_blendv_ps(_mm256_set1_ps(T[3]), _mm256_set1_ps(T[11]), c1);
    let c2 = _mm256_cmp_ps::<_CMP_NLT_UQ>(a, t2);
    let p2 = _mm256_castps_si256(_mm256_xor_ps(
        _mm256_and_ps(c2, _mm256_castsi256_ps(_mm256_set1_epi32(3))),
        c1,
    ));
    let c3 = _mm256_cmp_ps::<_CMP_NLT_UQ>(a, _mm256_permutevar8x32_ps(table8(L3), p2));
    let p3 = _mm256_xor_si256(
        p2,
        _mm256_castps_si256(_mm256_and_ps(c3, _mm256_castsi256_ps(_mm256_set1_epi32(1)))),
    );
    let c4 = _mm256_cmp_ps::<_CMP_NLT_UQ>(a, _mm256_permutevar8x32_ps(table8(L4), p3));
    (p3, c4)
}

/// The codebook value at ggml's `best_index_int8(16, kvalues_iq4nl, a)`,
/// per lane.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn nearest_value(a: __m256) -> __m256 {
    let (p3, c4) = search(a);
    _mm256_blendv_ps(
        _mm256_permutevar8x32_ps(table8(VE), p3),
        _mm256_permutevar8x32_ps(table8(VO), p3),
        c4,
    )
}

/// ggml's `best_index_int8(16, kvalues_iq4nl, a)` per lane.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn nearest_index(a: __m256) -> __m256i {
    let (p3, c4) = search(a);
    let i3 = _mm256_setr_epi32(I3[0], I3[1], I3[2], I3[3], I3[4], I3[5], I3[6], I3[7]);
    // A true mask is -1: subtracting it adds 1.
    _mm256_sub_epi32(_mm256_permutevar8x32_epi32(i3, p3), _mm256_castps_si256(c4))
}

/// [`nearest_index`] and [`nearest_value`] of the same lanes.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn nearest(a: __m256) -> (__m256i, __m256) {
    (nearest_index(a), nearest_value(a))
}

/// Loads eight `f32` from `x[i..i + 8]`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn load8(x: &[f32; 32], i: usize) -> __m256 {
    let s: &[f32; 8] = x[i..i + 8].try_into().unwrap_or(&[0.0; 8]);
    // SAFETY: `s` is 32 readable bytes and `loadu` has no alignment requirement.
    unsafe { _mm256_loadu_ps(s.as_ptr()) }
}

/// Stores eight `f32` to `out[i..i + 8]`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn store8(out: &mut [f32; 32], i: usize, v: __m256) {
    if let Some(s) = out.get_mut(i..i + 8) {
        // SAFETY: `s` is 8 writable `f32` and `storeu` has no alignment requirement.
        unsafe { _mm256_storeu_ps(s.as_mut_ptr(), v) }
    }
}

/// ggml's packing of 32 indices (value `j` in the low nibble of byte `j`,
/// value `j + 16` in its high nibble); `idx[k]` holds values `8k..8k + 8`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn pack_nibbles(idx: [__m256i; 4]) -> [u8; 16] {
    let b0 = _mm256_or_si256(idx[0], _mm256_slli_epi32::<4>(idx[2]));
    let b1 = _mm256_or_si256(idx[1], _mm256_slli_epi32::<4>(idx[3]));
    // u16 lanes [b0 0..4, b1 0..4 | b0 4..8, b1 4..8], then in order.
    let w = _mm256_permute4x64_epi64::<0xD8>(_mm256_packus_epi32(b0, b1));
    let bytes = _mm_packus_epi16(_mm256_castsi256_si128(w), _mm256_extracti128_si256::<1>(w));
    let mut out = [0u8; 16];
    // SAFETY: `out` is 16 writable bytes and `storeu` has no alignment requirement.
    unsafe { _mm_storeu_si128(out.as_mut_ptr().cast(), bytes) };
    out
}

/// `best_index_int8(id * x[j])` for the 32 values of a group, packed.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn group_indices(id: f32, x: &[f32; 32]) -> [u8; 16] {
    let idv = _mm256_set1_ps(id);
    let mut idx = [_mm256_setzero_si256(); 4];
    for k in 0..4 {
        idx[k] = nearest_index(_mm256_mul_ps(idv, load8(x, 8 * k)));
    }
    pack_nibbles(idx)
}

/// Horizontal maximum of eight `f32` (none NaN).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn hmax(v: __m256) -> f32 {
    let m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
    let m = _mm_max_ps(m, _mm_movehl_ps(m, m));
    let m = _mm_max_ss(m, _mm_shuffle_ps::<1>(m, m));
    _mm_cvtss_f32(m)
}

/// ggml's `amax` and `max` of a group: the largest `|x|` and the first value
/// that has it (0 and 0 for a group of zeros).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn group_max(x: &[f32; 32]) -> (f32, f32) {
    let sign = _mm256_set1_ps(-0.0);
    let mut a = [_mm256_setzero_ps(); 4];
    for k in 0..4 {
        a[k] = _mm256_andnot_ps(sign, load8(x, 8 * k));
    }
    let amax = hmax(_mm256_max_ps(
        _mm256_max_ps(a[0], a[1]),
        _mm256_max_ps(a[2], a[3]),
    ));
    if amax <= 0.0 {
        return (0.0, 0.0);
    }
    let am = _mm256_set1_ps(amax);
    let mut bits = 0u32;
    for k in 0..4 {
        let m = _mm256_movemask_ps(_mm256_cmp_ps::<_CMP_EQ_OQ>(a[k], am)) as u32;
        bits |= m << (8 * k);
    }
    let j = bits.trailing_zeros() as usize;
    (amax, x.get(j).copied().unwrap_or(0.0))
}

/// ggml's weights of a group: `x^2`, or `qw * sqrt(sigma2 + x^2)`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn group_weights(x: &[f32; 32], qw: Option<&[f32; 32]>, sigma2: f32) -> [f32; 32] {
    let mut w = [0.0f32; 32];
    for k in 0..4 {
        let xv = load8(x, 8 * k);
        let x2 = _mm256_mul_ps(xv, xv);
        let wv = match qw {
            Some(qw) => _mm256_mul_ps(
                load8(qw, 8 * k),
                _mm256_sqrt_ps(_mm256_add_ps(_mm256_set1_ps(sigma2), x2)),
            ),
            None => x2,
        };
        store8(&mut w, 8 * k, wv);
    }
    w
}

/// ggml's scale search of one group with `ntry = 7` (`amax >=
/// GROUP_MAX_EPS`): the sixteen passes in lanes, then the scalar choice.
/// Returns the group scale `d`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn search_group(x: &[f32; 32], w: &[f32; 32], max: f32) -> f32 {
    let v0 = V[0];
    // Lane 0: the first pass, from `d = -max / values[0]`; lane `1 + t`:
    // `itry = t - 7`.
    let mut ids = [0.0f32; 16];
    ids[0] = 1.0 / (-max / v0);
    for t in 0..15 {
        ids[t + 1] = ((t as i32 - NTRY) + i32::from(KVALUES_IQ4NL[0])) as f32 / max;
    }
    let id_a = table8(ids[..8].try_into().unwrap_or([0.0; 8]));
    let id_b = table8(ids[8..].try_into().unwrap_or([0.0; 8]));
    let (mut sqx_a, mut sq2_a) = (_mm256_setzero_ps(), _mm256_setzero_ps());
    let (mut sqx_b, mut sq2_b) = (_mm256_setzero_ps(), _mm256_setzero_ps());
    for j in 0..32 {
        let xj = _mm256_set1_ps(x[j]);
        let wj = _mm256_set1_ps(w[j]);
        let qa = nearest_value(_mm256_mul_ps(id_a, xj));
        let qb = nearest_value(_mm256_mul_ps(id_b, xj));
        let wqa = _mm256_mul_ps(wj, qa);
        let wqb = _mm256_mul_ps(wj, qb);
        sqx_a = _mm256_add_ps(sqx_a, _mm256_mul_ps(wqa, xj));
        sqx_b = _mm256_add_ps(sqx_b, _mm256_mul_ps(wqb, xj));
        sq2_a = _mm256_add_ps(sq2_a, _mm256_mul_ps(wqa, qa));
        sq2_b = _mm256_add_ps(sq2_b, _mm256_mul_ps(wqb, qb));
    }
    let mut sqx = [0.0f32; 32];
    let mut sq2 = [0.0f32; 32];
    store8(&mut sqx, 0, sqx_a);
    store8(&mut sqx, 8, sqx_b);
    store8(&mut sq2, 0, sq2_a);
    store8(&mut sq2, 8, sq2_b);
    let mut d = if sq2[0] > 0.0 { sqx[0] / sq2[0] } else { 0.0 };
    let mut best = d * sqx[0];
    for t in 1..16 {
        if sq2[t] > 0.0 && sqx[t] * sqx[t] > best * sq2[t] {
            d = sqx[t] / sq2[t];
            best = d * sqx[t];
        }
    }
    d
}

/// The group scale of `quantize_row_iq4_nl_impl` with `ntry = 7` (0 for a
/// group below `GROUP_MAX_EPS`).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn group_scale(x: &[f32; 32], qw: Option<&[f32; 32]>, sigma2: f32) -> f32 {
    let w = group_weights(x, qw, sigma2);
    let (amax, max) = group_max(x);
    if amax < GROUP_MAX_EPS {
        return 0.0;
    }
    search_group(x, &w, max)
}

/// ggml's `sigma2` of up to eight consecutive blocks of `BS` values in `x`:
/// `2 / BS * sum x^2`, each sum in order, the blocks' chains interleaved.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn sigma2s<const BS: usize>(x: &[f32]) -> [f32; 8] {
    let (blocks, _) = x.as_chunks::<BS>();
    let mut s = [0.0f32; 8];
    if blocks.len() >= 8 {
        for j in 0..BS {
            for k in 0..8 {
                s[k] += blocks[k][j] * blocks[k][j];
            }
        }
    } else {
        for (k, b) in blocks.iter().enumerate() {
            for &v in b {
                s[k] += v * v;
            }
        }
    }
    for v in &mut s {
        *v *= 2.0 / BS as f32;
    }
    s
}

/// `quantize_iq4_nl` (ggml's `quantize_row_iq4_nl_impl` with `ntry = 7` per
/// block of 32) over the rows of `src`. Expects `dst` to hold
/// `src.len() / 32` blocks, `n_per_row` a multiple of 32 dividing
/// `src.len()`, and `imatrix` (if any) `n_per_row` weights, all finite;
/// otherwise it processes what fits.
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) fn quantize_iq4_nl(
    src: &[f32],
    dst: &mut [BlockIq4Nl],
    n_per_row: usize,
    imatrix: Option<&[f32]>,
) {
    if n_per_row == 0 || !n_per_row.is_multiple_of(QK4_NL) {
        return;
    }
    let nblock = n_per_row / QK4_NL;
    for (xrow, yrow) in src
        .chunks_exact(n_per_row)
        .zip(dst.chunks_exact_mut(nblock))
    {
        let (xb, _) = xrow.as_chunks::<QK4_NL>();
        for (g, (xg, yg)) in xb.chunks(8).zip(yrow.chunks_mut(8)).enumerate() {
            let sig = match imatrix {
                Some(_) => sigma2s::<QK4_NL>(xg.as_flattened()),
                None => [0.0; 8],
            };
            for (k, (x, y)) in xg.iter().zip(yg.iter_mut()).enumerate() {
                let ib = 8 * g + k;
                let qw: Option<&[f32; 32]> = imatrix
                    .and_then(|w| w.get(QK4_NL * ib..QK4_NL * (ib + 1)))
                    .and_then(|w| w.try_into().ok());
                let d = group_scale(x, qw, sig[k]);
                let id = if d != 0.0 { 1.0 / d } else { 0.0 };
                *y = BlockIq4Nl {
                    d: fp32_to_fp16(d),
                    qs: group_indices(id, x),
                };
            }
        }
    }
}

/// `quantize_iq4_xs` (ggml's `quantize_row_iq4_nl_impl` with `ntry = 7` per
/// super-block of 256) over the rows of `src`; expectations as
/// [`quantize_iq4_nl`] with 256 for 32.
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) fn quantize_iq4_xs(
    src: &[f32],
    dst: &mut [BlockIq4Xs],
    n_per_row: usize,
    imatrix: Option<&[f32]>,
) {
    if n_per_row == 0 || !n_per_row.is_multiple_of(QK_K) {
        return;
    }
    let nblock = n_per_row / QK_K;
    for (xrow, yrow) in src
        .chunks_exact(n_per_row)
        .zip(dst.chunks_exact_mut(nblock))
    {
        let (xb, _) = xrow.as_chunks::<QK_K>();
        for (g, (xg, yg)) in xb.chunks(8).zip(yrow.chunks_mut(8)).enumerate() {
            let sig = match imatrix {
                Some(_) => sigma2s::<QK_K>(xg.as_flattened()),
                None => [0.0; 8],
            };
            for (k, (x, y)) in xg.iter().zip(yg.iter_mut()).enumerate() {
                let ibl = 8 * g + k;
                let qw = imatrix.and_then(|w| w.get(QK_K * ibl..QK_K * (ibl + 1)));
                *y = xs_block(x, qw, sig[k]);
            }
        }
    }
}

/// One IQ4_XS super-block: the eight group searches, then ggml's 6-bit
/// group scales and the indices at the quantized scales.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn xs_block(x: &[f32; QK_K], qw: Option<&[f32]>, sigma2: f32) -> BlockIq4Xs {
    let (groups, _) = x.as_chunks::<32>();
    let qws = qw.map(|w| w.as_chunks::<32>().0);
    let mut scales = [0.0f32; QK_K / 32];
    let mut max_scale = 0.0f32;
    let mut amax_scale = 0.0f32;
    for (ib, xg) in groups.iter().enumerate() {
        let qg = qws.and_then(|w| w.get(ib));
        let d = group_scale(xg, qg, sigma2);
        scales[ib] = d;
        let abs_d = d.abs();
        if abs_d > amax_scale {
            amax_scale = abs_d;
            max_scale = d;
        }
    }
    let d = -max_scale / 32.0;
    let mut blk = BlockIq4Xs {
        d: fp32_to_fp16(d),
        scales_h: 0,
        scales_l: [0; QK_K / 64],
        qs: [0; QK_K / 2],
    };
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    for (ib, xg) in groups.iter().enumerate() {
        let l = nearest_int(id * scales[ib]).clamp(-32, 31);
        let dl = d * l as f32;
        let idl = if dl != 0.0 { 1.0 / dl } else { 0.0 };
        let qs = group_indices(idl, xg);
        blk.qs[16 * ib..16 * ib + 16].copy_from_slice(&qs);
        let l = (l + 32) as u8;
        let l_l = l & 0xf;
        let l_h = l >> 4;
        if ib % 2 == 0 {
            blk.scales_l[ib / 2] = l_l;
        } else {
            blk.scales_l[ib / 2] |= l_l << 4;
        }
        blk.scales_h |= u16::from(l_h) << (2 * (ib % 8));
    }
    blk
}

/// ggml's `quantize_row_iq4_xs_ref`: [`quantize_iq4_xs`] of `x` as one row
/// without importance. Expectations as [`quantize_iq4_xs`].
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) fn quantize_row_iq4_xs_ref(x: &[f32], y: &mut [BlockIq4Xs]) {
    quantize_iq4_xs(x, y, x.len(), None);
}

/// ggml's `quantize_row_iq4_nl_ref` (`ntry = -1`: the first pass only, its
/// indices kept; a group below `GROUP_MAX_EPS` keeps the previous group's
/// indices, as ggml's scratch `L`). Expects `y` to hold `x.len() / 32`
/// blocks and `x` finite; otherwise it processes what fits.
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) fn quantize_row_iq4_nl_ref(x: &[f32], y: &mut [BlockIq4Nl]) {
    let (xb, _) = x.as_chunks::<QK4_NL>();
    let mut last = [0u8; 16];
    for (xg, yg) in xb.chunks(8).zip(y.chunks_mut(8)) {
        let mut px = [[0.0f32; 32]; 8];
        let mut p2 = [[0.0f32; 32]; 8];
        let mut live = [false; 8];
        for (k, (x, y)) in xg.iter().zip(yg.iter_mut()).enumerate() {
            let (amax, max) = group_max(x);
            if amax < GROUP_MAX_EPS {
                *y = BlockIq4Nl {
                    d: fp32_to_fp16(0.0),
                    qs: last,
                };
                continue;
            }
            live[k] = true;
            let idv = _mm256_set1_ps(1.0 / (max / V[0]));
            let mut idx = [_mm256_setzero_si256(); 4];
            for i in 0..4 {
                let xv = load8(x, 8 * i);
                let (l, q) = nearest(_mm256_mul_ps(idv, xv));
                idx[i] = l;
                let wq = _mm256_mul_ps(_mm256_mul_ps(xv, xv), q);
                store8(&mut px[k], 8 * i, _mm256_mul_ps(wq, xv));
                store8(&mut p2[k], 8 * i, _mm256_mul_ps(wq, q));
            }
            last = pack_nibbles(idx);
            y.qs = last;
        }
        let mut sqx = [0.0f32; 8];
        let mut sq2 = [0.0f32; 8];
        for j in 0..32 {
            for k in 0..8 {
                sqx[k] += px[k][j];
                sq2[k] += p2[k][j];
            }
        }
        for (k, y) in yg.iter_mut().enumerate() {
            if live[k] {
                let d = if sq2[k] > 0.0 { sqx[k] / sq2[k] } else { 0.0 };
                y.d = fp32_to_fp16(d);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// ggml's `best_index_int8` over the IQ4_NL codebook, as in the scalar
    /// port.
    fn best_index(x: f32) -> u8 {
        let v = &KVALUES_IQ4NL;
        if x <= f32::from(v[0]) {
            return 0;
        }
        if x >= f32::from(v[15]) {
            return 15;
        }
        let (mut ml, mut mu) = (0usize, 15usize);
        while mu - ml > 1 {
            let mav = (ml + mu) / 2;
            if x < f32::from(v[mav]) {
                mu = mav;
            } else {
                ml = mav;
            }
        }
        if x - f32::from(v[mu - 1]) < f32::from(v[mu]) - x {
            (mu - 1) as u8
        } else {
            mu as u8
        }
    }

    fn count(x: f32) -> u8 {
        // `!(x < t)`, true for NaN as in the kernel.
        T.iter()
            .filter(|&&t| x.partial_cmp(&t) != Some(std::cmp::Ordering::Less))
            .count() as u8
    }

    fn next_up(x: f32) -> f32 {
        if x >= 0.0 {
            f32::from_bits(x.to_bits() + 1)
        } else {
            f32::from_bits(x.to_bits() - 1)
        }
    }

    /// The threshold count is ggml's search, ulp by ulp around every
    /// threshold and codebook value, and at special values.
    #[test]
    fn thresholds_are_best_index() {
        let mut centres: Vec<f32> = T.to_vec();
        centres.extend(V);
        for c in centres {
            let mut x = c - 0.01;
            while x <= c + 0.01 {
                assert_eq!(count(x), best_index(x), "{x}");
                x = next_up(x);
            }
        }
        for x in [
            f32::NAN,
            f32::INFINITY,
            f32::NEG_INFINITY,
            f32::MAX,
            f32::MIN,
            0.0,
            -0.0,
            f32::MIN_POSITIVE,
            -f32::MIN_POSITIVE,
            1e-45,
            -1e-30,
            1e30,
        ] {
            assert_eq!(count(x), best_index(x), "{x}");
        }
        let mut s = 0x1234_5678u32;
        for _ in 0..1_000_000 {
            s ^= s << 13;
            s ^= s >> 17;
            s ^= s << 5;
            let x = (s as f32 / u32::MAX as f32) * 300.0 - 150.0;
            assert_eq!(count(x), best_index(x), "{x}");
        }
    }

    /// The vector search gives the scalar index and value in every lane.
    #[test]
    fn nearest_is_scalar() {
        if !(is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma")) {
            return;
        }
        let mut xs: Vec<f32> = Vec::new();
        for c in T.iter().chain(V.iter()) {
            let mut x = c - 0.001;
            while x <= c + 0.001 {
                xs.push(x);
                x = next_up(x);
            }
        }
        xs.extend([f32::NAN, f32::INFINITY, f32::NEG_INFINITY, 0.0, -0.0]);
        while !xs.len().is_multiple_of(8) {
            xs.push(0.0);
        }
        for c in xs.chunks_exact(8) {
            // SAFETY: the CPU has AVX2 and FMA (checked above); F16C comes
            // with them on every CPU that has both.
            let (idx, q) = unsafe { lanes(c.try_into().unwrap()) };
            for k in 0..8 {
                let want = best_index(c[k]);
                assert_eq!(idx[k], i32::from(want), "{}", c[k]);
                assert_eq!(q[k], V[usize::from(want)], "{}", c[k]);
            }
        }
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    fn lanes(a: [f32; 8]) -> ([i32; 8], [f32; 8]) {
        // SAFETY: `a` is 32 readable bytes and `loadu` has no alignment requirement.
        let (i, q) = nearest(unsafe { _mm256_loadu_ps(a.as_ptr()) });
        let mut io = [0i32; 8];
        let mut qo = [0.0f32; 8];
        // SAFETY: `io` and `qo` are 32 writable bytes each, `storeu` unaligned.
        unsafe {
            _mm256_storeu_si256(io.as_mut_ptr().cast(), i);
            _mm256_storeu_ps(qo.as_mut_ptr(), q);
        }
        (io, qo)
    }
}
