//! x86_64 AVX2 dot products of the grid i-quants with Q8_K (IQ2_XXS,
//! IQ2_XS, IQ2_S, IQ3_XXS, IQ3_S, IQ1_S, IQ1_M), chosen at run time by
//! [`super::dispatch`].
//!
//! # Exactness
//!
//! Each block's integer sum is computed exactly for any block bytes, in
//! eight i32 lanes; each lane (below `2^24` in magnitude, so converted to
//! f32 exactly) is scaled by the block's `d_x * d_y` and accumulated in an
//! f32 lane with one `fmadd`, and the lanes are summed at the end (then the
//! type's exact `* 0.125` / `* 0.25`). So the results may differ from the
//! scalar references in [`crate::iquants`] in the last bits (the f32
//! accumulation order), never in a block's integer sum; where all partial
//! sums are exactly representable they are equal.
//!
//! * Grid points are looked up from the same tables with the same masked
//!   indexes as the scalar code (so in bounds for any bytes).
//! * The IQ2/IQ3 signs are applied to the grid values (at most 62, so the
//!   signed value fits in `i8`), never to the Q8_K quants: llama.cpp's
//!   `_mm256_sign_epi8(q8, signs)` turns a `-128` quant with a negative sign
//!   into `-128` instead of `128`. The signed products then go through
//!   `maddubs(|q8|, sign(g, q8))`: `|q8| <= 128` as an unsigned byte, and a
//!   pair sums to at most `2 * 128 * 62 < 2^15`. The IQ1 grid values
//!   (-1, 0, 1) take the same path (llama.cpp's `mul_add_epi8` has the same
//!   `-128` problem, and so has its IQ1_M shift term). IQ1_M's shift
//!   (`±1/8` for each 8 values) joins the grid values as `8 g + delta`
//!   (`|.| <= 9`), and IQ1_S's (from the stored block sums) joins its lanes
//!   as `8 sumi + sumi1`: the block's `sumi + sumi1 / 8` times 8, exactly.
//! * Group sums are weighted by the group scales in `madd_epi16` (at most
//!   `2 * 15872 * 31` per lane and group) and summed in i32 over the block;
//!   a lane collects 32 values, at most `32 * 62 * 128 * 31 < 2^23` in
//!   magnitude (IQ1_S: `8 * 32 * 128 * 15 + 2 * 32768 * 15 < 2^21`).
//!
//! # Speed
//!
//! Per block, the sign fields and scales of all eight groups of 32 are
//! decoded at once: the IQ2_XXS/IQ2_XS/IQ3_XXS 7-bit sign fields become
//! sign bytes with their parity bit (ggml's `ksigns_iq2xs`, here a `pshufb`
//! of a 4-bit parity table) in one vector, each group then spreads its four
//! sign bytes over its 32 values with one `pshufb` and makes a `sign_epi8`
//! operand of them with an `and` and an `add`. llama.cpp instead looks up
//! four 8-byte sign patterns per group; IQ2_S/IQ3_S store their sign bytes,
//! which take the same per-group path, as do IQ1_M's shift signs. Group
//! scales are broadcast from a per-block vector with one in-lane shuffle.
//! Grid points are loaded two per 128-bit half (`movq`, `movhps`).
//!
//! Grid indexes reach the integer registers the cheapest way measured per
//! type: byte (IQ2_XXS, IQ3_XXS) and `u16` (IQ2_XS) loads; for IQ2_S and
//! IQ3_S, the high bits from `qh` are merged in vectors for the whole block
//! and four 16-bit indexes leave with one `pextrq`; IQ1_S and IQ1_M build
//! them with integer shifts from one 32-bit load of `qs` and their `qh`. The loads are volatile and some
//! `pshufb` controls and per-block vectors pass through `black_box`: LLVM
//! otherwise extracts indexes from vectors that hold the same bytes, or
//! rewrites a constant `pshufb` as two or three other shuffles, both slower
//! here (AMD Zen 4).
//!
//! Blocks are accumulated in f32 lanes (one `cvtdq2ps` and one `fmadd` per
//! block) instead of a horizontal integer sum and scalar f32 arithmetic per
//! block, and IQ2_S and IQ1_M alternate two integer accumulators: IQ2_S
//! went from 0.93x to par with llama.cpp (0.96-1.01x on a quiet machine),
//! the others gained 3-10%.
//! IQ1_M's shift term folded into the grid values (`8 g + delta`, `8 g`
//! from a scaled copy of the grid) took it from 0.87x to 1.07x.
//!
//! AVX-512 VNNI (`vpdpwssd` for each group's `madd` + `add`, with one or
//! two accumulators) measured 0.95-1.0x these AVX2 kernels on Zen 4 for
//! IQ1_M and IQ2_S, so [`super::Level::Avx512`] runs them as they are,
//! except IQ2_S: with `vpdpwssd` kept as one instruction (through `asm!`;
//! LLVM splits the intrinsic back into `madd` + `add`), 1.03-1.07x
//! (x86_iq4vnni.rs).
//! `vpdpbusd` cannot drop the `abs`/`sign` pair (its unsigned operand is
//! `|q8|` here too) and its 4-byte sums would still need the 16-value
//! scale multiply.
//!
//! In-process against llama.cpp's AVX2 kernels (libggml-cpu, same rows,
//! interleaved, medians of 40 rounds, Zen 4, a shared 2-core machine, so
//! runs vary by 10% and more; the quietest run): IQ2_XXS 1.14x, IQ2_XS
//! 1.21x, IQ2_S 1.00x, IQ3_XXS 1.32x, IQ3_S 1.21x, IQ1_S 1.07x, IQ1_M 1.07x.

use std::arch::x86_64::*;

use super::x86::{f16_table, h2f_t, hsum_f32x8, load_u8x16, load_u8x32};
use crate::iquants::grids::{
    IQ1S_GRID, IQ2S_GRID, IQ2XS_GRID, IQ2XXS_GRID, IQ3S_GRID, IQ3XXS_GRID,
};
use crate::iquants::{
    BlockIq1M, BlockIq1S, BlockIq2S, BlockIq2Xs, BlockIq2Xxs, BlockIq3S, BlockIq3Xxs, Q8_K_BYTES,
};
use crate::kquants::QK_K;

// ------------------------------------------------------------------ helpers

/// Loads 8 bytes into the low half.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn load8(b: &[u8; 8]) -> __m128i {
    _mm_cvtsi64_si128(i64::from_le_bytes(*b))
}

/// Pair sums `g[2k] q[2k] + g[2k+1] q[2k+1]` (16 `i16`) of signed grid
/// values `|g| <= 127` and any quants `q`, exact (see the module docs).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn pairs(g: __m256i, q8: __m256i) -> __m256i {
    _mm256_maddubs_epi16(_mm256_abs_epi8(q8), _mm256_sign_epi8(g, q8))
}

/// `*v` by a volatile load: the compiler then reads grid indexes from
/// memory (one load each) instead of extracting them from a vector that
/// holds the same bytes (two operations each), which it prefers otherwise.
#[inline(always)]
fn vload<T: Copy>(v: &T) -> T {
    // SAFETY: `v` is a valid, aligned reference to a `Copy` value.
    unsafe { core::ptr::read_volatile(v) }
}

/// `v`, hidden from the optimizer: a `pshufb` control loaded through it
/// stays one `pshufb` (LLVM rewrites a known constant control into two or
/// three other shuffles, which it rates cheaper and which are slower here).
#[inline(always)]
pub(super) fn opaque<T: ?Sized>(v: &T) -> &T {
    std::hint::black_box(v)
}

/// The four 16-bit grid indexes in qword `Q` of `v` (each masked to
/// `mask`), moved to integer registers with one extract.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn idx4<const Q: i32>(v: __m128i, mask: u64) -> [usize; 4] {
    let w = _mm_extract_epi64::<Q>(v) as u64;
    [
        (w & mask) as usize,
        ((w >> 16) & mask) as usize,
        ((w >> 32) & mask) as usize,
        ((w >> 48) & mask) as usize,
    ]
}

/// Splits a raw `block_q8_K` into its scale, its eight groups of 32 quants
/// and its 16 block sums (32 bytes).
#[inline]
pub(super) fn q8_k(yb: &[u8; Q8_K_BYTES]) -> (f32, &[[u8; 32]], &[u8; 32]) {
    let (dy, rest) = yb.split_first_chunk::<4>().expect("292 bytes");
    let (qs, bsums) = rest.split_at(QK_K);
    let (q8, _) = qs.as_chunks::<32>();
    (
        f32::from_le_bytes(*dy),
        q8,
        bsums.try_into().expect("32 bytes"),
    )
}

/// Entries `a` (low) and `b` (high) in a 128-bit vector (`movq` +
/// `movhps`).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn pair64(a: &u64, b: &u64) -> __m128i {
    // SAFETY: `a` and `b` are 8 readable bytes each; neither load needs
    // alignment.
    unsafe {
        let lo = _mm_castsi128_pd(_mm_loadl_epi64((a as *const u64).cast()));
        _mm_castpd_si128(_mm_loadh_pd(lo, (b as *const u64).cast()))
    }
}

/// Four 8-byte grid points of `table` in one vector, entry `i[0]` lowest.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn grid4<const N: usize>(table: &[u64; N], i: [usize; 4]) -> __m256i {
    let lo = pair64(&table[i[0]], &table[i[1]]);
    let hi = pair64(&table[i[2]], &table[i[3]]);
    _mm256_inserti128_si256::<1>(_mm256_castsi128_si256(lo), hi)
}

/// Eight 4-byte grid points of `$table` in one vector, entry `$i[0]`
/// lowest (a macro: as a function it is not always inlined).
macro_rules! grid8 {
    ($table:expr, $i:expr) => {{
        let (t, i): (&[u32; _], [usize; 8]) = (&$table, $i);
        _mm256_setr_epi32(
            t[i[0]] as i32,
            t[i[1]] as i32,
            t[i[2]] as i32,
            t[i[3]] as i32,
            t[i[4]] as i32,
            t[i[5]] as i32,
            t[i[6]] as i32,
            t[i[7]] as i32,
        )
    }};
}

/// The sign bytes of 7-bit sign fields in the low 7 bits of each byte of
/// `f`: bit 7 set to the parity of the other seven (ggml's `ksigns_iq2xs`).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn with_parity(f: __m256i) -> __m256i {
    let o = 0x80u8 as i8;
    let odd = _mm256_setr_epi8(
        0, o, o, 0, o, 0, 0, o, o, 0, 0, o, 0, o, o, 0, //
        0, o, o, 0, o, 0, 0, o, o, 0, 0, o, 0, o, o, 0,
    );
    let lo = _mm256_and_si256(f, _mm256_set1_epi8(0x0f));
    let hi = _mm256_and_si256(_mm256_srli_epi16::<4>(f), _mm256_set1_epi8(0x07));
    _mm256_or_si256(f, _mm256_shuffle_epi8(odd, _mm256_xor_si256(lo, hi)))
}

/// Sign field `l` (bits `7 l .. 7 l + 7`) of each dword of `aux` in byte `l`
/// of that dword, `l < 4`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn sign_fields(aux: __m256i) -> __m256i {
    let m = _mm256_set1_epi32(0x7f);
    _mm256_or_si256(
        _mm256_or_si256(
            _mm256_and_si256(aux, m),
            _mm256_and_si256(_mm256_slli_epi32::<1>(aux), _mm256_slli_epi32::<8>(m)),
        ),
        _mm256_or_si256(
            _mm256_and_si256(_mm256_slli_epi32::<2>(aux), _mm256_slli_epi32::<16>(m)),
            _mm256_and_si256(_mm256_slli_epi32::<3>(aux), _mm256_slli_epi32::<24>(m)),
        ),
    )
}

/// `pshufb` controls: `SPREAD[s]` takes bytes `4 s .. 4 s + 4` of a 128-bit
/// lane, each eight times (bytes `4 s`, `4 s + 1` in the low lane, `4 s + 2`,
/// `4 s + 3` in the high one: the callers' lanes are equal).
static SPREAD: [[i8; 32]; 4] = spread_controls();

const fn spread_controls() -> [[i8; 32]; 4] {
    let mut t = [[0i8; 32]; 4];
    let mut s = 0;
    while s < 4 {
        let mut i = 0;
        while i < 32 {
            t[s][i] = (4 * s + i / 8) as i8;
            i += 1;
        }
        s += 1;
    }
    t
}

/// The sign operand of one group of 32 values from its four sign bytes,
/// bytes `4 slot .. 4 slot + 4` of both lanes of `v`: bit `j` of sign byte
/// `l` gives byte `8 l + j`, negative (`0x80..=0xFF`) where the bit is set,
/// `0x7F` where it is not, for `_mm256_sign_epi8`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn sign_operand(v: __m256i, slot: usize) -> __m256i {
    let bit = _mm256_set1_epi64x(0x8040_2010_0804_0201u64 as i64);
    let spread = load_u8x32(bytemuck::cast_ref(&SPREAD[slot]));
    _mm256_add_epi8(
        _mm256_and_si256(_mm256_shuffle_epi8(v, spread), bit),
        _mm256_set1_epi8(0x7f),
    )
}

/// `v` with its low (`HI == false`) or high 128-bit lane in both lanes.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn lane<const HI: bool>(v: __m256i) -> __m256i {
    if HI {
        _mm256_permute2x128_si256::<0x11>(v, v)
    } else {
        _mm256_permute2x128_si256::<0x00>(v, v)
    }
}

/// `2 s + 1` of eight 4-bit scales `s` as `i16`, in both 128-bit lanes.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn odd_scales_x2(s: __m128i) -> __m256i {
    let s = _mm_or_si128(_mm_slli_epi16::<1>(s), _mm_set1_epi16(1));
    _mm256_broadcastsi128_si256(s)
}

/// The `i16` scales of `v` (eight per 128-bit lane) duplicated into dwords:
/// scales 0..4 of each lane, then 4..8, for `madd_epi16` after a
/// `shuffle_epi32` broadcast. Hidden from the optimizer, which otherwise
/// merges the unpack into each group's broadcast as two shuffles.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn scale_dwords(v: __m256i) -> (__m256i, __m256i) {
    std::hint::black_box((_mm256_unpacklo_epi16(v, v), _mm256_unpackhi_epi16(v, v)))
}

/// `2 s + 1` of the eight pairs of 4-bit scales `s` of IQ2_XS/IQ2_S as
/// [`scale_dwords`]: the low nibble of byte `g` (values 0..16 of group `g`)
/// in the low lane, the high nibble (values 16..32) in the high lane.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn split_nibble_scales(scales: &[u8; 8]) -> (__m256i, __m256i) {
    let sc = load8(scales);
    let m4 = _mm_set1_epi8(0x0f);
    let lo = _mm_cvtepu8_epi16(_mm_and_si128(sc, m4));
    let hi = _mm_cvtepu8_epi16(_mm_and_si128(_mm_srli_epi16::<4>(sc), m4));
    let ls = _mm256_set_m128i(hi, lo);
    scale_dwords(_mm256_or_si256(
        _mm256_slli_epi16::<1>(ls),
        _mm256_set1_epi16(1),
    ))
}

// ------------------------------------------------------------------ kernels

/// Where group `g` of 8 sits after gathering the odd dwords of two 32-byte
/// halves with `shuffle_ps` (order 0 1 4 5 | 2 3 6 7): high lane or not, and
/// dword slot in the lane.
const fn odd_dword_slot(g: usize) -> (bool, usize) {
    ((g >> 1) & 1 == 1, (g & 1) | ((g >> 1) & 2))
}

/// IQ2_XXS x Q8_K, `y` the raw bytes of `block_q8_K`s; blocks past the
/// shorter side are ignored. As [`crate::iquants::vec_dot_iq2_xxs_q8_k`]
/// up to the f32 accumulation order (see the module docs).
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C.
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn vec_dot_iq2_xxs_q8_k(x: &[BlockIq2Xxs], y: &[u8]) -> f32 {
    let t = f16_table();
    let (y, _) = y.as_chunks::<Q8_K_BYTES>();
    let mut accf = _mm256_setzero_ps();
    for (xb, yb) in x.iter().zip(y) {
        let (dy, q8, _) = q8_k(yb);
        let d = h2f_t(t, xb.d) * dy;
        let qs: &[u8; 64] = bytemuck::cast_ref(&xb.qs);
        let (halves, _) = qs.as_chunks::<32>();
        // The sign-and-scale words (odd dwords), groups 0 1 4 5 | 2 3 6 7.
        let aux = _mm256_castps_si256(_mm256_shuffle_ps::<0b11_01_11_01>(
            _mm256_castsi256_ps(load_u8x32(&halves[0])),
            _mm256_castsi256_ps(load_u8x32(&halves[1])),
        ));
        let signs = with_parity(sign_fields(aux));
        // 2 ls + 1 in both i16 halves of each dword (bit 27 of the shifted
        // word is or'ed away).
        let ls = _mm256_or_si256(_mm256_srli_epi32::<27>(aux), _mm256_set1_epi32(1));
        let ls = _mm256_or_si256(ls, _mm256_slli_epi32::<16>(ls));
        let (s_lo, s_hi) = (lane::<false>(signs), lane::<true>(signs));
        let (l_lo, l_hi) = (lane::<false>(ls), lane::<true>(ls));
        let mut acc = _mm256_setzero_si256();
        macro_rules! group {
            ($g:literal, $imm:literal) => {{
                let (hi, slot) = odd_dword_slot($g);
                let sg = sign_operand(if hi { s_hi } else { s_lo }, slot);
                let grid = grid4(
                    &IQ2XXS_GRID,
                    [
                        usize::from(vload(&qs[8 * $g])),
                        usize::from(vload(&qs[8 * $g + 1])),
                        usize::from(vload(&qs[8 * $g + 2])),
                        usize::from(vload(&qs[8 * $g + 3])),
                    ],
                );
                let lsg = _mm256_shuffle_epi32::<$imm>(if hi { l_hi } else { l_lo });
                let g = _mm256_sign_epi8(grid, sg);
                let p = _mm256_madd_epi16(pairs(g, load_u8x32(&q8[$g])), lsg);
                acc = _mm256_add_epi32(acc, p);
            }};
        }
        group!(0, 0x00);
        group!(1, 0x55);
        group!(2, 0x00);
        group!(3, 0x55);
        group!(4, 0xaa);
        group!(5, 0xff);
        group!(6, 0xaa);
        group!(7, 0xff);
        accf = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(acc), accf);
    }
    0.125 * hsum_f32x8(accf)
}

/// IQ2_XS x Q8_K, as [`vec_dot_iq2_xxs_q8_k`], as [`crate::iquants::vec_dot_iq2_xs_q8_k`]
/// up to the f32 accumulation order.
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C.
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn vec_dot_iq2_xs_q8_k(x: &[BlockIq2Xs], y: &[u8]) -> f32 {
    let t = f16_table();
    let (y, _) = y.as_chunks::<Q8_K_BYTES>();
    let mut accf = _mm256_setzero_ps();
    for (xb, yb) in x.iter().zip(y) {
        let (dy, q8, _) = q8_k(yb);
        let d = h2f_t(t, xb.d) * dy;
        let qs: &[u8; 64] = bytemuck::cast_ref(&xb.qs);
        let (halves, _) = qs.as_chunks::<32>();
        // The 7-bit sign field of each u16 in one byte: packus interleaves
        // the halves per lane, groups 0 1 4 5 | 2 3 6 7 as for IQ2_XXS.
        let f = _mm256_packus_epi16(
            _mm256_srli_epi16::<9>(load_u8x32(&halves[0])),
            _mm256_srli_epi16::<9>(load_u8x32(&halves[1])),
        );
        let signs = with_parity(f);
        let (s_lo, s_hi) = (lane::<false>(signs), lane::<true>(signs));
        let (l_a, l_b) = split_nibble_scales(&xb.scales);
        let mut acc = _mm256_setzero_si256();
        macro_rules! group {
            ($g:literal, $imm:literal) => {{
                let (hi, slot) = odd_dword_slot($g);
                let sg = sign_operand(if hi { s_hi } else { s_lo }, slot);
                let q = &xb.qs[4 * $g..4 * $g + 4];
                let grid = grid4(
                    &IQ2XS_GRID,
                    [
                        usize::from(vload(&q[0]) & 511),
                        usize::from(vload(&q[1]) & 511),
                        usize::from(vload(&q[2]) & 511),
                        usize::from(vload(&q[3]) & 511),
                    ],
                );
                let g = _mm256_sign_epi8(grid, sg);
                let lsg = _mm256_shuffle_epi32::<$imm>(if $g < 4 { l_a } else { l_b });
                let p = _mm256_madd_epi16(pairs(g, load_u8x32(&q8[$g])), lsg);
                acc = _mm256_add_epi32(acc, p);
            }};
        }
        group!(0, 0x00);
        group!(1, 0x55);
        group!(2, 0xaa);
        group!(3, 0xff);
        group!(4, 0x00);
        group!(5, 0x55);
        group!(6, 0xaa);
        group!(7, 0xff);
        accf = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(acc), accf);
    }
    0.125 * hsum_f32x8(accf)
}

/// IQ3_XXS x Q8_K, as [`vec_dot_iq2_xxs_q8_k`], as [`crate::iquants::vec_dot_iq3_xxs_q8_k`]
/// up to the f32 accumulation order.
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C.
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn vec_dot_iq3_xxs_q8_k(x: &[BlockIq3Xxs], y: &[u8]) -> f32 {
    let t = f16_table();
    let (y, _) = y.as_chunks::<Q8_K_BYTES>();
    let mut accf = _mm256_setzero_ps();
    for (xb, yb) in x.iter().zip(y) {
        let (dy, q8, _) = q8_k(yb);
        let d = h2f_t(t, xb.d) * dy;
        let (q3, gas) = xb.qs.split_at(QK_K / 4);
        let (q3, _) = q3.as_chunks::<8>();
        // The sign-and-scale words, groups 0 1 2 3 | 4 5 6 7.
        let aux = load_u8x32(gas.try_into().expect("32 bytes"));
        let signs = with_parity(sign_fields(aux));
        let ls = _mm256_or_si256(_mm256_srli_epi32::<27>(aux), _mm256_set1_epi32(1));
        let ls = _mm256_or_si256(ls, _mm256_slli_epi32::<16>(ls));
        let (s_lo, s_hi) = (lane::<false>(signs), lane::<true>(signs));
        let (l_lo, l_hi) = (lane::<false>(ls), lane::<true>(ls));
        let mut acc = _mm256_setzero_si256();
        macro_rules! group {
            ($g:literal, $imm:literal) => {{
                let (hi, slot) = ($g >= 4, $g & 3);
                let sg = sign_operand(if hi { s_hi } else { s_lo }, slot);
                let grid = grid8!(IQ3XXS_GRID, q3[$g].map(usize::from));
                let lsg = _mm256_shuffle_epi32::<$imm>(if hi { l_hi } else { l_lo });
                let g = _mm256_sign_epi8(grid, sg);
                let p = _mm256_madd_epi16(pairs(g, load_u8x32(&q8[$g])), lsg);
                acc = _mm256_add_epi32(acc, p);
            }};
        }
        group!(0, 0x00);
        group!(1, 0x55);
        group!(2, 0xaa);
        group!(3, 0xff);
        group!(4, 0x00);
        group!(5, 0x55);
        group!(6, 0xaa);
        group!(7, 0xff);
        accf = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(acc), accf);
    }
    0.25 * hsum_f32x8(accf)
}

/// IQ3_S x Q8_K, as [`vec_dot_iq2_xxs_q8_k`], as [`crate::iquants::vec_dot_iq3_s_q8_k`]
/// up to the f32 accumulation order.
///
/// The 9-bit grid indexes of a group are formed in one vector (the low
/// bytes widened, bit `k` of `qh` shifted to bit 8 of index `k`) and read
/// back from memory for the table loads.
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C.
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn vec_dot_iq3_s_q8_k(x: &[BlockIq3S], y: &[u8]) -> f32 {
    let t = f16_table();
    let (y, _) = y.as_chunks::<Q8_K_BYTES>();
    // Bit k of qh[g] to bit 8 of word k: qh << (8 - k).
    let mul = _mm256_setr_epi16(256, 128, 64, 32, 16, 8, 4, 2, 256, 128, 64, 32, 16, 8, 4, 2);
    let m100 = _mm256_set1_epi16(0x100);
    let mut accf = _mm256_setzero_ps();
    for (xb, yb) in x.iter().zip(y) {
        let (dy, q8, _) = q8_k(yb);
        let d = h2f_t(t, xb.d) * dy;
        let (qs, _) = xb.qs.as_chunks::<16>();
        // Raw sign bytes, groups 0 1 2 3 | 4 5 6 7.
        let signs = load_u8x32(&xb.signs);
        let (s_lo, s_hi) = (lane::<false>(signs), lane::<true>(signs));
        // Scale nibbles in group order (low nibble of byte k: group 2 k).
        let sc = _mm_cvtsi32_si128(i32::from_le_bytes(xb.scales));
        let m4 = _mm_set1_epi8(0x0f);
        let nib = _mm_unpacklo_epi8(
            _mm_and_si128(sc, m4),
            _mm_and_si128(_mm_srli_epi16::<4>(sc), m4),
        );
        let (l_a, l_b) = scale_dwords(odd_scales_x2(_mm_cvtepu8_epi16(nib)));
        // Indexes of groups 2 j (low lane) and 2 j + 1 (high lane) as u16.
        let qh = _mm256_broadcastsi128_si256(load8(&xb.qh));
        let iv: [__m256i; 4] = core::array::from_fn(|j| {
            let h = _mm256_shuffle_epi8(qh, load_u8x32(bytemuck::cast_ref(opaque(&REP_IQ3S[j]))));
            let h = _mm256_and_si256(_mm256_mullo_epi16(h, mul), m100);
            _mm256_or_si256(_mm256_cvtepu8_epi16(load_u8x16(&qs[j])), h)
        });
        let mut acc = _mm256_setzero_si256();
        macro_rules! group {
            ($g:literal, $imm:literal) => {{
                let (hi, slot) = ($g >= 4, $g & 3);
                let sg = sign_operand(if hi { s_hi } else { s_lo }, slot);
                let v = if $g % 2 == 0 {
                    _mm256_castsi256_si128(iv[$g / 2])
                } else {
                    _mm256_extracti128_si256::<1>(iv[$g / 2])
                };
                let (a, b) = (idx4::<0>(v, 511), idx4::<1>(v, 511));
                let grid = grid8!(IQ3S_GRID, [a[0], a[1], a[2], a[3], b[0], b[1], b[2], b[3]]);
                let g = _mm256_sign_epi8(grid, sg);
                let lsg = _mm256_shuffle_epi32::<$imm>(if $g < 4 { l_a } else { l_b });
                let p = _mm256_madd_epi16(pairs(g, load_u8x32(&q8[$g])), lsg);
                acc = _mm256_add_epi32(acc, p);
            }};
        }
        group!(0, 0x00);
        group!(1, 0x55);
        group!(2, 0xaa);
        group!(3, 0xff);
        group!(4, 0x00);
        group!(5, 0x55);
        group!(6, 0xaa);
        group!(7, 0xff);
        accf = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(acc), accf);
    }
    hsum_f32x8(accf)
}

/// IQ1_S x Q8_K, as [`vec_dot_iq2_xxs_q8_k`] (the shift term from `y`'s
/// stored block sums, as the scalar code), as [`crate::iquants::vec_dot_iq1_s_q8_k`]
/// up to the f32 accumulation order.
///
/// The 11-bit grid indexes are formed in integer registers from one
/// 32-bit load of the group's `qs` and its `qh` (forming them in vectors
/// and reading them back through memory, or extracting them four per qword
/// as IQ1_M does, measured slower); the scales and
/// the shift term's block-sum weights come from one vector of the eight
/// `qh`.
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C.
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn vec_dot_iq1_s_q8_k(x: &[BlockIq1S], y: &[u8]) -> f32 {
    let t = f16_table();
    let (y, _) = y.as_chunks::<Q8_K_BYTES>();
    let mut accf = _mm256_setzero_ps();
    for (xb, yb) in x.iter().zip(y) {
        let (dy, q8, bsums) = q8_k(yb);
        let qh = load_u8x16(bytemuck::cast_ref(&xb.qh));
        // 2 ls + 1 by group, and signed by the shift's sign for the block
        // sums (each twice: two sums of 16 per group).
        let ls = _mm_or_si128(
            _mm_slli_epi16::<1>(_mm_and_si128(_mm_srli_epi16::<12>(qh), _mm_set1_epi16(7))),
            _mm_set1_epi16(1),
        );
        let lsd = _mm_sign_epi16(ls, _mm_or_si128(qh, _mm_set1_epi16(1)));
        let lsd = _mm256_set_m128i(_mm_unpackhi_epi16(lsd, lsd), _mm_unpacklo_epi16(lsd, lsd));
        let sumi1 = _mm256_madd_epi16(load_u8x32(bsums), lsd);
        let (l_a, l_b) = scale_dwords(_mm256_broadcastsi128_si256(ls));
        let (qs4, _) = xb.qs.as_chunks::<4>();
        let mut acc = _mm256_setzero_si256();
        macro_rules! group {
            ($g:literal, $imm:literal) => {{
                let q = u32::from_le_bytes(vload(&qs4[$g])) as usize;
                let h = usize::from(vload(&xb.qh[$g]));
                let grid = grid4(
                    &IQ1S_GRID,
                    [
                        (q & 255) | ((h << 8) & 0x700),
                        ((q >> 8) & 255) | ((h << 5) & 0x700),
                        ((q >> 16) & 255) | ((h << 2) & 0x700),
                        ((q >> 24) & 255) | ((h >> 1) & 0x700),
                    ],
                );
                let lsg = _mm256_shuffle_epi32::<$imm>(if $g < 4 { l_a } else { l_b });
                let p = _mm256_madd_epi16(pairs(grid, load_u8x32(&q8[$g])), lsg);
                acc = _mm256_add_epi32(acc, p);
            }};
        }
        group!(0, 0x00);
        group!(1, 0x55);
        group!(2, 0xaa);
        group!(3, 0xff);
        group!(4, 0x00);
        group!(5, 0x55);
        group!(6, 0xaa);
        group!(7, 0xff);
        // 8 sumi + sumi1 by lane: below 2^24 in magnitude (8 * 256 * 128 *
        // 15 + 16 * 15 * 32768), so every lane converts exactly.
        let s = _mm256_add_epi32(_mm256_slli_epi32::<3>(acc), sumi1);
        let d = _mm256_set1_ps(h2f_t(t, xb.d) * dy);
        accf = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(s), accf);
    }
    0.125 * hsum_f32x8(accf)
}

/// The IQ2_S x Q8_K body, `$madd_add(acc, p, scales)` the step that weights
/// a group's pair sums by its scales: `madd` + `add` at AVX2,
/// `vpdpwssd` at AVX-512 VNNI (x86_iq4vnni.rs). A macro, so that each level's
/// `#[target_feature]` function gets the body inlined; the caller's module
/// imports the helpers it names.
macro_rules! iq2_s_dot {
    ($x:expr, $y:expr, $madd_add:path) => {{
        let (x, y): (&[BlockIq2S], &[u8]) = ($x, $y);
        let t = f16_table();
        let (y, _) = y.as_chunks::<Q8_K_BYTES>();
        // qh[g] << (8 - 2 l) for l = 0..4.
        let mul = _mm256_set1_epi64x(0x0004_0010_0040_0100);
        // Word 4 g + l of a half takes qh byte g of the half's four groups.
        let rep = load_u8x32(bytemuck::cast_ref($crate::simd::x86_iqdot::opaque(
            &$crate::simd::x86_iqdot::REP_IQ2S,
        )));
        let m300 = _mm256_set1_epi16(0x300);
        let mut accf = _mm256_setzero_ps();
        for (xb, yb) in x.iter().zip(y) {
            let (dy, q8, _) = q8_k(yb);
            let d = h2f_t(t, xb.d) * dy;
            let (qs, signs) = xb.qs.split_at(QK_K / 8);
            let (qs, _) = qs.as_chunks::<16>();
            let qh = load8(&xb.qh);
            let iv = [
                (load_u8x16(&qs[0]), qh),
                (load_u8x16(&qs[1]), _mm_srli_si128::<4>(qh)),
            ]
            .map(|(q, h)| {
                let h = _mm256_shuffle_epi8(_mm256_broadcastsi128_si256(h), rep);
                let high = _mm256_and_si256(_mm256_mullo_epi16(h, mul), m300);
                _mm256_or_si256(_mm256_cvtepu8_epi16(q), high)
            });
            let iv = [
                _mm256_castsi256_si128(iv[0]),
                _mm256_extracti128_si256::<1>(iv[0]),
                _mm256_castsi256_si128(iv[1]),
                _mm256_extracti128_si256::<1>(iv[1]),
            ];
            let signs = load_u8x32(signs.try_into().expect("32 bytes"));
            let (s_lo, s_hi) = (lane::<false>(signs), lane::<true>(signs));
            let (l_a, l_b) = split_nibble_scales(&xb.scales);
            let mut acc = [_mm256_setzero_si256(); 2];
            macro_rules! group {
                ($g:literal, $imm:literal) => {{
                    let (hi, slot) = ($g >= 4, $g & 3);
                    let sg = sign_operand(if hi { s_hi } else { s_lo }, slot);
                    let grid = grid4(&IQ2S_GRID, idx4::<{ $g % 2 }>(iv[$g / 2], 0x3ff));
                    let g = _mm256_sign_epi8(grid, sg);
                    let lsg = _mm256_shuffle_epi32::<$imm>(if $g < 4 { l_a } else { l_b });
                    acc[$g % 2] = $madd_add(acc[$g % 2], pairs(g, load_u8x32(&q8[$g])), lsg);
                }};
            }
            group!(0, 0x00);
            group!(1, 0x55);
            group!(2, 0xaa);
            group!(3, 0xff);
            group!(4, 0x00);
            group!(5, 0x55);
            group!(6, 0xaa);
            group!(7, 0xff);
            accf = _mm256_fmadd_ps(
                _mm256_set1_ps(d),
                _mm256_cvtepi32_ps(_mm256_add_epi32(acc[0], acc[1])),
                accf,
            );
        }
        0.125 * hsum_f32x8(accf)
    }};
}
pub(super) use iq2_s_dot;

/// IQ2_S x Q8_K, as [`vec_dot_iq2_xxs_q8_k`], as [`crate::iquants::vec_dot_iq2_s_q8_k`]
/// up to the f32 accumulation order.
///
/// The 10-bit grid indexes (low byte, then bits `2 l .. 2 l + 2` of `qh[g]`
/// moved to bits 8..10 by a multiply) are formed in two vectors and read
/// back from memory; the signs are stored bytes.
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C.
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn vec_dot_iq2_s_q8_k(x: &[BlockIq2S], y: &[u8]) -> f32 {
    iq2_s_dot!(x, y, madd_add)
}

/// `pshufb` controls for IQ3_S: `REP_IQ3S[j]` puts byte `2 j` of its lane
/// in the low byte of every word of the low lane, byte `2 j + 1` in the
/// high lane, high bytes zero.
static REP_IQ3S: [[i8; 32]; 4] = {
    let mut t = [[-128i8; 32]; 4];
    let mut j = 0;
    while j < 4 {
        let mut w = 0;
        while w < 16 {
            t[j][2 * w] = (2 * j + w / 8) as i8;
            w += 1;
        }
        j += 1;
    }
    t
};

/// `pshufb` control for IQ2_S: word `i` (index `4 g + l` of four groups)
/// takes byte `g = i / 4` of its lane as its low byte, zero as its high.
pub(super) static REP_IQ2S: [i8; 32] = {
    let mut t = [-128i8; 32];
    let mut i = 0;
    while i < 16 {
        t[2 * i] = (i / 4) as i8;
        i += 1;
    }
    t
};

/// [`IQ1S_GRID`] with every value (-1, 0 or 1) times 8, for IQ1_M's
/// `8 g + delta`.
static IQ1S_GRID8: [u64; 2048] = {
    let mut t = [0u64; 2048];
    let mut i = 0;
    while i < 2048 {
        let b = IQ1S_GRID[i].to_le_bytes();
        let mut o = [0u8; 8];
        let mut j = 0;
        while j < 8 {
            o[j] = (b[j] as i8).wrapping_mul(8) as u8;
            j += 1;
        }
        t[i] = u64::from_le_bytes(o);
        i += 1;
    }
    t
};

/// `acc + madd(s, p)`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn madd_add(acc: __m256i, s: __m256i, p: __m256i) -> __m256i {
    _mm256_add_epi32(acc, _mm256_madd_epi16(s, p))
}

/// IQ1_M x Q8_K, as [`vec_dot_iq2_xxs_q8_k`], as [`crate::iquants::vec_dot_iq1_m_q8_k`]
/// up to the f32 accumulation order.
///
/// The 11-bit grid indexes interleave the `qs` bytes with the 3-bit
/// nibbles of `qh` as high bytes. The shift term is folded into the grid
/// values: each value is `8 g + delta` (`delta = ±1` for its 8 values,
/// `|8 g + delta| <= 9`), so one product per group gives each lane's share
/// of `8 sumi1 + sumi2` exactly (below `32 * 9 * 128 * 15 < 2^20`), with
/// `8 g` looked up from a table of the grid times 8. The scalar code's
/// `sumi1 + 0.125 * sumi2` is that sum times `0.125`.
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C.
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn vec_dot_iq1_m_q8_k(x: &[BlockIq1M], y: &[u8]) -> f32 {
    let t = f16_table();
    let (y, _) = y.as_chunks::<Q8_K_BYTES>();
    // Word g of both lanes takes scale word g / 2.
    let words = _mm256_setr_epi8(
        0, 1, 0, 1, 2, 3, 2, 3, 4, 5, 4, 5, 6, 7, 6, 7, //
        0, 1, 0, 1, 2, 3, 2, 3, 4, 5, 4, 5, 6, 7, 6, 7,
    );
    // The scale of values 0..16 of group g (low lane) is at bit
    // 3 (2 (g % 2)) of its word, of values 16..32 (high lane) at
    // 3 (2 (g % 2) + 1): multiplied up to bits 12..15.
    let mul = _mm256_setr_epi16(
        4096, 64, 4096, 64, 4096, 64, 4096, 64, 512, 8, 512, 8, 512, 8, 512, 8,
    );
    let ones = _mm256_set1_epi8(1);
    let mut accf = _mm256_setzero_ps();
    for (xb, yb) in x.iter().zip(y) {
        let (dy, q8, _) = q8_k(yb);
        let sc: [u16; 4] =
            core::array::from_fn(|i| u16::from_le_bytes([xb.scales[2 * i], xb.scales[2 * i + 1]]));
        let scale =
            (sc[0] >> 12) | ((sc[1] >> 8) & 0x00f0) | ((sc[2] >> 4) & 0x0f00) | (sc[3] & 0xf000);
        let d = h2f_t(t, half::f16::from_bits(scale));
        let qh = load_u8x16(&xb.qh);
        // 2 ls + 1: values 0..16 of group g in word g of the low lane,
        // 16..32 in the high lane.
        let w = _mm256_shuffle_epi8(_mm256_broadcastsi128_si256(load8(&xb.scales)), words);
        let ls = _mm256_srli_epi16::<12>(_mm256_mullo_epi16(w, mul));
        let ls = _mm256_and_si256(ls, _mm256_set1_epi16(7));
        let ls = _mm256_or_si256(_mm256_slli_epi16::<1>(ls), _mm256_set1_epi16(1));
        let (l_a, l_b) = scale_dwords(ls);
        // The shift of values 8 l .. 8 l + 8 of group g, bit 3 (l even) or
        // 7 (l odd) of qh byte 2 g + l / 2, as byte 4 g + l (groups 0..4 in
        // the low lane): -1 where the bit is set, else 1.
        let ds = [
            _mm_unpacklo_epi8(_mm_slli_epi16::<4>(qh), qh),
            _mm_unpackhi_epi8(_mm_slli_epi16::<4>(qh), qh),
        ];
        let ds = _mm256_sign_epi8(ones, _mm256_or_si256(_mm256_set_m128i(ds[1], ds[0]), ones));
        let (d_lo, d_hi) = (lane::<false>(ds), lane::<true>(ds));
        // Index k: qs byte k, bits 0..3 (k even) or 4..7 (k odd) of qh
        // byte k / 2 (& 7) as its high byte; indexes 8 j .. 8 j + 8 in iv[j].
        let m7 = _mm_set1_epi8(7);
        let (h_lo, h_hi) = (
            _mm_and_si128(qh, m7),
            _mm_and_si128(_mm_srli_epi16::<4>(qh), m7),
        );
        let hb = [_mm_unpacklo_epi8(h_lo, h_hi), _mm_unpackhi_epi8(h_lo, h_hi)];
        let (qs16, _) = xb.qs.as_chunks::<16>();
        let qs = [load_u8x16(&qs16[0]), load_u8x16(&qs16[1])];
        let iv = [
            _mm_unpacklo_epi8(qs[0], hb[0]),
            _mm_unpackhi_epi8(qs[0], hb[0]),
            _mm_unpacklo_epi8(qs[1], hb[1]),
            _mm_unpackhi_epi8(qs[1], hb[1]),
        ];
        let (mut acc, mut acc2) = (_mm256_setzero_si256(), _mm256_setzero_si256());
        macro_rules! group {
            ($g:literal, $imm:literal) => {{
                let grid8 = grid4(&IQ1S_GRID8, idx4::<{ $g % 2 }>(iv[$g / 2], 0x7ff));
                // Shift l over values 8 l .. 8 l + 8 (as SPREAD does).
                let spread = load_u8x32(bytemuck::cast_ref(&SPREAD[$g & 3]));
                let delta = _mm256_shuffle_epi8(if $g < 4 { d_lo } else { d_hi }, spread);
                let v = _mm256_add_epi8(grid8, delta);
                let lsg = _mm256_shuffle_epi32::<$imm>(if $g < 4 { l_a } else { l_b });
                if $g % 2 == 0 {
                    acc = madd_add(acc, pairs(v, load_u8x32(&q8[$g])), lsg);
                } else {
                    acc2 = madd_add(acc2, pairs(v, load_u8x32(&q8[$g])), lsg);
                }
            }};
        }
        group!(0, 0x00);
        group!(1, 0x55);
        group!(2, 0xaa);
        group!(3, 0xff);
        group!(4, 0x00);
        group!(5, 0x55);
        group!(6, 0xaa);
        group!(7, 0xff);
        // 8 sumi1 + sumi2, exact in f32 (see above).
        let s = _mm256_cvtepi32_ps(_mm256_add_epi32(acc, acc2));
        accf = _mm256_fmadd_ps(_mm256_set1_ps(d * dy), s, accf);
    }
    0.125 * hsum_f32x8(accf)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::iquants::grids::KSIGNS_IQ2XS;

    /// `with_parity(sign_fields(..))` is ggml's `ksigns_iq2xs` for every
    /// field in every position.
    #[test]
    fn sign_bytes_match_ksigns() {
        if crate::simd::supported() < crate::simd::Level::Avx2 {
            return;
        }
        for f in 0..128u32 {
            let aux = f | (f << 7) | (f << 14) | (f << 21) | (0xf << 28);
            let mut out = [0u8; 32];
            // SAFETY: AVX2 is supported (checked above); `out` is 32
            // writable bytes.
            unsafe {
                let v = with_parity(sign_fields(_mm256_set1_epi32(aux as i32)));
                _mm256_storeu_si256(out.as_mut_ptr().cast(), v);
            }
            assert!(out.iter().all(|&b| b == KSIGNS_IQ2XS[f as usize]), "{f}");
        }
    }
}
