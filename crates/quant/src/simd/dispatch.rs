//! Safe entry points that run the fastest kernel the CPU (and the
//! [`level`] cap) allows.
//!
//! Every function has the signature of its scalar reference in
//! [`crate::legacy`], [`crate::kquants`] or [`crate::iquants`], checks its arguments the same way
//! and returns the same errors: whenever the arguments are not what a kernel
//! needs (a length mismatch, a non-finite value to quantize) the call is
//! handed to the scalar function, which reports the error before writing
//! anything. Each also has an `_at` twin that takes the [`Level`] to use
//! (capped at [`supported`]), so tests and benches can compare levels without
//! touching the process-wide [`set_level`](super::set_level).
//!
//! Exactness: dequantizers and the Q8_0/Q8_K quantizers give bit-identical
//! results at every level; the dot products compute each block's integer sum
//! exactly but accumulate the floats in another order, so they may differ
//! from the scalar result in the last bits.
//!
//! Kernels exist for AVX2 (+FMA, F16C); [`Level::Avx512`] runs them too,
//! except the dot products with an AVX-512 VNNI version there (the entries
//! marked `vnni`, in 256-bit registers): Q4_0, Q4_1, Q5_0, Q5_1, Q8_0,
//! IQ4_NL, Q1_0, Q2_0 (`vpdpbusd`), TQ1_0, TQ2_0 (`vpdpbusd`), Q2_K, Q4_K,
//! Q6_K (`vpdpbusd`, pairs weighted by `vpdpwssd`), Q5_K, IQ4_XS and IQ2_S
//! (`vpdpwssd`), each kept where it measured faster than the AVX2 kernel on
//! AMD Zen 4; and the BF16 dot product (marked `avx512`: 512-bit shift/mask
//! widening, FMA, in [`x86_floatdot`]). 512-bit
//! versions of the Q8_0/Q4_0 dequantizers and dot products measured no
//! better on Zen 4, which splits 512-bit operations in two.

use crate::QuantError;
use crate::floats;
use crate::iquants::{self, BlockIq4Nl, BlockIq4Xs};
use crate::kquants::{self, BlockQ2K, BlockQ3K, BlockQ4K, BlockQ5K, BlockQ6K, BlockQ8K};
use crate::legacy::{self, BlockQ4_0, BlockQ4_1, BlockQ5_0, BlockQ5_1, BlockQ8_0, BlockQ8_1};

use super::{Level, level, supported};
#[cfg(target_arch = "x86_64")]
use super::{x86, x86_avx2dots, x86_avx2exact, x86_float, x86_floatdot, x86_iq4vnni, x86_vnni};

/// Generates the pair of public functions `$name(args)` (at [`level`]) and
/// `$name_at(level, args)` over `$imp(level, args)`, which trusts its level
/// (unsafe: it must not exceed [`supported`]), so that
/// [`crate::api::vec_dot_fn`] can read the level once and pick each type's
/// kernel for it.
macro_rules! entry_points {
    (
        $(#[$doc:meta])*
        fn $name:ident / $at:ident = $imp:ident ($($arg:ident : $ty:ty),*) -> $ret:ty
    ) => {
        $(#[$doc])*
        #[inline]
        pub fn $name($($arg: $ty),*) -> Result<$ret, QuantError> {
            // SAFETY: `level()` never exceeds `supported()`.
            unsafe { $imp(level(), $($arg),*) }
        }

        #[doc = concat!(
            "[`", stringify!($name), "`] at `level`, capped at what this CPU [`supported`]s ",
            "([`Level::Scalar`] runs the scalar reference).\n\n# Errors\nAs [`",
            stringify!($name), "`]."
        )]
        #[inline]
        pub fn $at(level: Level, $($arg: $ty),*) -> Result<$ret, QuantError> {
            // SAFETY: the level is capped at `supported()`.
            unsafe { $imp(level.min(supported()), $($arg),*) }
        }
    };
}

/// Whether AVX2 kernels may run at `level` (already capped at [`supported`]).
#[cfg(target_arch = "x86_64")]
#[inline]
fn avx2(level: Level) -> bool {
    level >= Level::Avx2
}

/// Whether AVX-512 VNNI kernels may run at `level` (already capped at
/// [`supported`]).
#[cfg(target_arch = "x86_64")]
#[inline]
fn avx512(level: Level) -> bool {
    level >= Level::Avx512
}

// ------------------------------------------------------------- dequantizers

/// A dequantizer's entry points: the AVX2 kernel `$avx2` (by default
/// `x86::$name`) when the lengths fit, else the scalar one.
macro_rules! dequantizer {
    (
        $(#[$doc:meta])*
        $name:ident / $at:ident = $imp:ident, $block:ty, $qk:expr, $scalar:path
    ) => {
        dequantizer! { $(#[$doc])* $name / $at = $imp, $block, $qk, x86::$name, $scalar }
    };
    (
        $(#[$doc:meta])*
        $name:ident / $at:ident = $imp:ident, $block:ty, $qk:expr, $avx2:path, $scalar:path
    ) => {
        entry_points! {
            $(#[$doc])*
            fn $name / $at = $imp(x: &[$block], y: &mut [f32]) -> ()
        }

        /// # Safety
        /// `level` must not exceed [`supported`]`()`.
        #[inline]
        unsafe fn $imp(level: Level, x: &[$block], y: &mut [f32]) -> Result<(), QuantError> {
            #[cfg(target_arch = "x86_64")]
            if avx2(level) && x.len().checked_mul($qk) == Some(y.len()) {
                // SAFETY: the caller keeps `level` at or below `supported()`, and
                // `supported() >= Avx2` means the CPU has AVX2, FMA and F16C.
                unsafe { $avx2(x, y) };
                return Ok(());
            }
            let _ = level;
            $scalar(x, y)
        }
    };
}

dequantizer! {
    /// [`legacy::dequantize_row_q8_0`], bit-identical, SIMD where available.
    ///
    /// # Errors
    /// [`QuantError::BufferLength`] unless `y.len() == 32 * x.len()`.
    dequantize_row_q8_0 / dequantize_row_q8_0_at = dequantize_q8_0_impl,
    BlockQ8_0, legacy::QK8_0, legacy::dequantize_row_q8_0
}

dequantizer! {
    /// [`legacy::dequantize_row_q4_0`], bit-identical, SIMD where available.
    ///
    /// # Errors
    /// [`QuantError::BufferLength`] unless `y.len() == 32 * x.len()`.
    dequantize_row_q4_0 / dequantize_row_q4_0_at = dequantize_q4_0_impl,
    BlockQ4_0, legacy::QK4_0, legacy::dequantize_row_q4_0
}

dequantizer! {
    /// [`kquants::dequantize_row_q4_k`], bit-identical, SIMD where available.
    ///
    /// # Errors
    /// [`QuantError::BufferLength`] unless `y.len() == 256 * x.len()`.
    dequantize_row_q4_k / dequantize_row_q4_k_at = dequantize_q4_k_impl,
    BlockQ4K, kquants::QK_K, kquants::dequantize_row_q4_k
}

dequantizer! {
    /// [`kquants::dequantize_row_q5_k`], bit-identical, SIMD where available.
    ///
    /// # Errors
    /// [`QuantError::BufferLength`] unless `y.len() == 256 * x.len()`.
    dequantize_row_q5_k / dequantize_row_q5_k_at = dequantize_q5_k_impl,
    BlockQ5K, kquants::QK_K, kquants::dequantize_row_q5_k
}

dequantizer! {
    /// [`kquants::dequantize_row_q6_k`], bit-identical, SIMD where available.
    ///
    /// # Errors
    /// [`QuantError::BufferLength`] unless `y.len() == 256 * x.len()`.
    dequantize_row_q6_k / dequantize_row_q6_k_at = dequantize_q6_k_impl,
    BlockQ6K, kquants::QK_K, kquants::dequantize_row_q6_k
}

dequantizer! {
    /// [`kquants::dequantize_row_q2_k`], bit-identical: the scalar code
    /// compiled a second time for AVX2 (no FMA), run where available.
    ///
    /// # Errors
    /// [`QuantError::BufferLength`] unless `y.len() == 256 * x.len()`.
    dequantize_row_q2_k / dequantize_row_q2_k_at = dequantize_q2_k_impl,
    BlockQ2K, kquants::QK_K, kquants::dequantize_row_q2_k_avx2, kquants::dequantize_row_q2_k
}

dequantizer! {
    /// [`kquants::dequantize_row_q3_k`], bit-identical: the scalar code
    /// compiled a second time for AVX2 (no FMA), run where available.
    ///
    /// # Errors
    /// [`QuantError::BufferLength`] unless `y.len() == 256 * x.len()`.
    dequantize_row_q3_k / dequantize_row_q3_k_at = dequantize_q3_k_impl,
    BlockQ3K, kquants::QK_K, kquants::dequantize_row_q3_k_avx2, kquants::dequantize_row_q3_k
}

// --------------------------------------------------------------- quantizers

/// A row quantizer's entry points: the AVX2 kernel `$avx2` (by default
/// `x86::$name`) on finite rows of whole blocks, else the scalar one (which
/// reports the error).
macro_rules! quantizer {
    (
        $(#[$doc:meta])*
        $name:ident / $at:ident = $imp:ident, $block:ty, $qk:expr, $scalar:path
    ) => {
        quantizer! { $(#[$doc])* $name / $at = $imp, $block, $qk, x86::$name, $scalar }
    };
    (
        $(#[$doc:meta])*
        $name:ident / $at:ident = $imp:ident, $block:ty, $qk:expr, $avx2:path, $scalar:path
    ) => {
        entry_points! {
            $(#[$doc])*
            fn $name / $at = $imp(x: &[f32], y: &mut [$block]) -> ()
        }

        /// # Safety
        /// `level` must not exceed [`supported`]`()`.
        #[inline]
        unsafe fn $imp(level: Level, x: &[f32], y: &mut [$block]) -> Result<(), QuantError> {
            #[cfg(target_arch = "x86_64")]
            if avx2(level) && x.len().is_multiple_of($qk) && y.len() == x.len() / $qk {
                // SAFETY: the caller keeps `level` at or below `supported()`, and
                // `supported() >= Avx2` means the CPU has AVX2, FMA and F16C.
                if unsafe { x86::all_finite(x) } {
                    // SAFETY: as above; the values are finite, as the kernel needs.
                    unsafe { $avx2(x, y) };
                    return Ok(());
                }
            }
            let _ = level;
            $scalar(x, y)
        }
    };
}

quantizer! {
    /// [`legacy::quantize_row_q8_0_ref`] (llama.cpp's reference, `roundf`),
    /// byte-identical, SIMD where available.
    ///
    /// # Errors
    /// [`QuantError::RowNotBlockMultiple`], [`QuantError::BufferLength`],
    /// [`QuantError::NonFiniteInput`], as the scalar function; `y` is not
    /// written then.
    quantize_row_q8_0 / quantize_row_q8_0_at = quantize_q8_0_impl,
    BlockQ8_0, legacy::QK8_0, legacy::quantize_row_q8_0_ref
}

quantizer! {
    /// [`legacy::quantize_row_q4_0_ref`], byte-identical, SIMD where
    /// available.
    ///
    /// # Errors
    /// As the scalar function; `y` is not written then.
    quantize_row_q4_0 / quantize_row_q4_0_at = quantize_q4_0_impl,
    BlockQ4_0, legacy::QK4_0, legacy::quantize_row_q4_0_ref
}

quantizer! {
    /// [`legacy::quantize_row_q4_1_ref`], byte-identical, SIMD where
    /// available.
    ///
    /// # Errors
    /// As the scalar function; `y` is not written then.
    quantize_row_q4_1 / quantize_row_q4_1_at = quantize_q4_1_impl,
    BlockQ4_1, legacy::QK4_1, legacy::quantize_row_q4_1_ref
}

quantizer! {
    /// [`legacy::quantize_row_q5_0_ref`], byte-identical, SIMD where
    /// available.
    ///
    /// # Errors
    /// As the scalar function; `y` is not written then.
    quantize_row_q5_0 / quantize_row_q5_0_at = quantize_q5_0_impl,
    BlockQ5_0, legacy::QK5_0, legacy::quantize_row_q5_0_ref
}

quantizer! {
    /// [`legacy::quantize_row_q5_1_ref`], byte-identical, SIMD where
    /// available.
    ///
    /// # Errors
    /// As the scalar function; `y` is not written then.
    quantize_row_q5_1 / quantize_row_q5_1_at = quantize_q5_1_impl,
    BlockQ5_1, legacy::QK5_1, legacy::quantize_row_q5_1_ref
}

quantizer! {
    /// [`legacy::quantize_row_q8_1_ref`] (the partner of Q4_1 and Q5_1),
    /// byte-identical, SIMD where available.
    ///
    /// # Errors
    /// [`QuantError::RowNotBlockMultiple`], [`QuantError::BufferLength`],
    /// [`QuantError::NonFiniteInput`], as the scalar function; `y` is not
    /// written then.
    quantize_row_q8_1 / quantize_row_q8_1_at = quantize_q8_1_impl,
    BlockQ8_1, legacy::QK8_1, legacy::quantize_row_q8_1_ref
}

quantizer! {
    /// [`kquants::quantize_row_q8_k_ref`], byte-identical, SIMD where
    /// available.
    ///
    /// # Errors
    /// [`QuantError::RowNotBlockMultiple`], [`QuantError::BufferLength`],
    /// [`QuantError::NonFiniteInput`], as the scalar function; `y` is not
    /// written then.
    quantize_row_q8_k / quantize_row_q8_k_at = quantize_q8_k_impl,
    BlockQ8K, kquants::QK_K, kquants::quantize_row_q8_k_ref
}

// ------------------------------------------------------ k-quant quantizers

macro_rules! kquantizer {
    ($($(#[$doc:meta])* $name:ident = $block:ty, $scalar:ident;)*) => {$(
        $(#[$doc])*
        #[doc = concat!(
            "[`kquants::", stringify!($scalar), "`] at `level`, capped at what this CPU ",
            "[`supported`]s: [`Level::Scalar`] runs ggml's one-group-at-a-time search, ",
            "AVX2 and above search eight groups per instruction (the same operations per ",
            "group, so the same bytes).\n\n# Errors\nAs [`kquants::", stringify!($scalar), "`]."
        )]
        #[inline]
        pub fn $name(
            level: Level,
            src: &[f32],
            dst: &mut [$block],
            n_per_row: usize,
            imatrix: Option<&[f32]>,
        ) -> Result<(), QuantError> {
            kquants::quantize_k_at(level.min(supported()), src, dst, n_per_row, imatrix)
        }
    )*};
}

macro_rules! legacy_quantizer {
    ($($name:ident = $block:ty, $scalar:ident;)*) => {$(
        #[doc = concat!(
            "[`legacy::", stringify!($scalar), "`] at `level`, capped at what this CPU ",
            "[`supported`]s: [`Level::Scalar`] runs ggml's reference code block by block, ",
            "AVX2 and above the AVX2 reference quantizer and, with an importance matrix, ",
            "eight blocks' searches per instruction (the same bytes).\n\n# Errors\nAs [`legacy::",
            stringify!($scalar), "`]."
        )]
        #[inline]
        pub fn $name(
            level: Level,
            src: &[f32],
            dst: &mut [$block],
            n_per_row: usize,
            imatrix: Option<&[f32]>,
        ) -> Result<(), QuantError> {
            legacy::quantize_legacy(level.min(supported()), src, dst, n_per_row, imatrix)
        }
    )*};
}

legacy_quantizer! {
    quantize_q4_0_at = BlockQ4_0, quantize_q4_0;
    quantize_q4_1_at = BlockQ4_1, quantize_q4_1;
    quantize_q5_0_at = BlockQ5_0, quantize_q5_0;
    quantize_q5_1_at = BlockQ5_1, quantize_q5_1;
}

kquantizer! {
    quantize_q2_k_at = BlockQ2K, quantize_q2_k;
    quantize_q3_k_at = BlockQ3K, quantize_q3_k;
    quantize_q4_k_at = BlockQ4K, quantize_q4_k;
    quantize_q5_k_at = BlockQ5K, quantize_q5_k;
    quantize_q6_k_at = BlockQ6K, quantize_q6_k;
}

// ------------------------------------------------------------- dot products

/// `vnni` after the scalar path: the kernel also has an AVX-512 VNNI
/// version in [`x86_vnni`], run at [`Level::Avx512`].
macro_rules! dot {
    (
        $(#[$doc:meta])*
        $name:ident / $at:ident = $imp:ident, $bx:ty, $by:ty, $scalar:path $(, $vnni:ident)?
    ) => {
        dot! { $(#[$doc])* $name / $at = $imp, $bx, $by, x86::$name, $scalar $(, $vnni)? }
    };
    (
        $(#[$doc:meta])*
        $name:ident / $at:ident = $imp:ident, $bx:ty, $by:ty, $avx2:path, $scalar:path
        $(, $vnni:ident)?
    ) => {
        entry_points! {
            $(#[$doc])*
            fn $name / $at = $imp(x: &[$bx], y: &[$by]) -> f32
        }

        /// # Safety
        /// `level` must not exceed [`supported`]`()`.
        #[inline]
        pub(crate) unsafe fn $imp(level: Level, x: &[$bx], y: &[$by]) -> Result<f32, QuantError> {
            #[cfg(target_arch = "x86_64")]
            if avx2(level) && x.len() == y.len() {
                $(
                    let _ = stringify!($vnni);
                    if avx512(level) {
                        // SAFETY: the caller keeps `level` at or below `supported()`, and
                        // `supported() >= Avx512` means the CPU has AVX2,
                        // FMA, F16C, AVX-512 F/BW/VL and VNNI.
                        return Ok(unsafe { x86_vnni::$name(x, y) });
                    }
                )?
                // SAFETY: the caller keeps `level` at or below `supported()`, and
                // `supported() >= Avx2` means the CPU has AVX2, FMA and F16C.
                return Ok(unsafe { $avx2(x, y) });
            }
            let _ = level;
            $scalar(x, y)
        }
    };
}

dot! {
    /// [`legacy::vec_dot_q4_0_q8_0`], SIMD where available: exact block
    /// integer sums, f32 accumulation in another order (last-bit
    /// differences).
    ///
    /// # Errors
    /// [`QuantError::BufferLength`] unless both sides have as many blocks.
    vec_dot_q4_0_q8_0 / vec_dot_q4_0_q8_0_at = vec_dot_q4_0_q8_0_impl,
    BlockQ4_0, BlockQ8_0, legacy::vec_dot_q4_0_q8_0, vnni
}

dot! {
    /// [`legacy::vec_dot_q4_1_q8_1`], SIMD where available: exact block
    /// integer sums, f32 accumulation in another order (last-bit
    /// differences).
    ///
    /// # Errors
    /// [`QuantError::BufferLength`] unless both sides have as many blocks.
    vec_dot_q4_1_q8_1 / vec_dot_q4_1_q8_1_at = vec_dot_q4_1_q8_1_impl,
    BlockQ4_1, BlockQ8_1, x86_avx2legacy::vec_dot_q4_1_q8_1, legacy::vec_dot_q4_1_q8_1, vnni
}

dot! {
    /// [`legacy::vec_dot_q5_0_q8_0`], SIMD where available: exact block
    /// integer sums, f32 accumulation in another order (last-bit
    /// differences).
    ///
    /// # Errors
    /// [`QuantError::BufferLength`] unless both sides have as many blocks.
    vec_dot_q5_0_q8_0 / vec_dot_q5_0_q8_0_at = vec_dot_q5_0_q8_0_impl,
    BlockQ5_0, BlockQ8_0, legacy::vec_dot_q5_0_q8_0, vnni
}

dot! {
    /// [`legacy::vec_dot_q5_1_q8_1`], SIMD where available: exact block
    /// integer sums, f32 accumulation in another order (last-bit
    /// differences).
    ///
    /// # Errors
    /// [`QuantError::BufferLength`] unless both sides have as many blocks.
    vec_dot_q5_1_q8_1 / vec_dot_q5_1_q8_1_at = vec_dot_q5_1_q8_1_impl,
    BlockQ5_1, BlockQ8_1, x86_avx2legacy::vec_dot_q5_1_q8_1, legacy::vec_dot_q5_1_q8_1, vnni
}

dot! {
    /// [`legacy::vec_dot_q8_0_q8_0`], SIMD where available: exact block
    /// integer sums, f32 accumulation in another order (last-bit
    /// differences).
    ///
    /// # Errors
    /// [`QuantError::BufferLength`] unless both sides have as many blocks.
    vec_dot_q8_0_q8_0 / vec_dot_q8_0_q8_0_at = vec_dot_q8_0_q8_0_impl,
    BlockQ8_0, BlockQ8_0, x86_avx2exact::vec_dot_q8_0_q8_0, legacy::vec_dot_q8_0_q8_0, vnni
}

dot! {
    /// [`kquants::vec_dot_q2_k_q8_k`], SIMD where available: exact block
    /// integer sums, f32 accumulation in another order (last-bit
    /// differences).
    ///
    /// # Errors
    /// [`QuantError::BufferLength`] unless both sides have as many blocks.
    vec_dot_q2_k_q8_k / vec_dot_q2_k_q8_k_at = vec_dot_q2_k_q8_k_impl,
    BlockQ2K, BlockQ8K, x86_avx2legacy::vec_dot_q2_k_q8_k, kquants::vec_dot_q2_k_q8_k, vnni
}

dot! {
    /// [`kquants::vec_dot_q3_k_q8_k`], SIMD where available: exact block
    /// integer sums, f32 accumulation in another order (last-bit
    /// differences).
    ///
    /// # Errors
    /// [`QuantError::BufferLength`] unless both sides have as many blocks.
    vec_dot_q3_k_q8_k / vec_dot_q3_k_q8_k_at = vec_dot_q3_k_q8_k_impl,
    BlockQ3K, BlockQ8K, kquants::vec_dot_q3_k_q8_k
}

dot! {
    /// [`kquants::vec_dot_q4_k_q8_k`], SIMD where available: exact block
    /// integer sums, f32 accumulation in another order (last-bit
    /// differences).
    ///
    /// # Errors
    /// [`QuantError::BufferLength`] unless both sides have as many blocks.
    vec_dot_q4_k_q8_k / vec_dot_q4_k_q8_k_at = vec_dot_q4_k_q8_k_impl,
    BlockQ4K, BlockQ8K, kquants::vec_dot_q4_k_q8_k, vnni
}

dot! {
    /// [`kquants::vec_dot_q5_k_q8_k`], SIMD where available: exact block
    /// integer sums, f32 accumulation in another order (last-bit
    /// differences).
    ///
    /// # Errors
    /// [`QuantError::BufferLength`] unless both sides have as many blocks.
    vec_dot_q5_k_q8_k / vec_dot_q5_k_q8_k_at = vec_dot_q5_k_q8_k_impl,
    BlockQ5K, BlockQ8K, kquants::vec_dot_q5_k_q8_k, vnni
}

dot! {
    /// [`kquants::vec_dot_q6_k_q8_k`], SIMD where available: exact block
    /// integer sums, f32 accumulation in another order (last-bit
    /// differences).
    ///
    /// # Errors
    /// [`QuantError::BufferLength`] unless both sides have as many blocks.
    vec_dot_q6_k_q8_k / vec_dot_q6_k_q8_k_at = vec_dot_q6_k_q8_k_impl,
    BlockQ6K, BlockQ8K, kquants::vec_dot_q6_k_q8_k, vnni
}

// -------------------------------------------------- F16, BF16 and F32 rows

/// Generates the entry points of a [`crate::floats`] kernel: the AVX2 one
/// when `$ok` (the lengths the scalar function accepts), else the scalar one.
/// `avx512` after the scalar path: the kernel also has an AVX-512 version in
/// [`x86_floatdot`], run at [`Level::Avx512`].
macro_rules! float_kernel {
    (
        $(#[$doc:meta])*
        $name:ident / $at:ident = $imp:ident ($x:ident: $tx:ty, $y:ident: $ty:ty) -> $ret:ty,
        $ok:expr, $scalar:path $(, $avx512:ident)?
    ) => {
        entry_points! {
            $(#[$doc])*
            fn $name / $at = $imp($x: $tx, $y: $ty) -> $ret
        }

        /// # Safety
        /// `level` must not exceed [`supported`]`()`.
        #[inline]
        pub(crate) unsafe fn $imp(level: Level, $x: $tx, $y: $ty) -> Result<$ret, QuantError> {
            #[cfg(target_arch = "x86_64")]
            if avx2(level) && $ok {
                $(
                    let _ = stringify!($avx512);
                    if avx512(level) {
                        // SAFETY: the caller keeps `level` at or below `supported()`, and
                        // `supported() >= Avx512` means the CPU has AVX2,
                        // FMA, F16C, AVX-512 F/BW/VL and VNNI.
                        return Ok(unsafe { x86_floatdot::$name($x, $y) });
                    }
                )?
                // SAFETY: the caller keeps `level` at or below `supported()`, and
                // `supported() >= Avx2` means the CPU has AVX2, FMA and F16C.
                return Ok(unsafe { x86_float::$name($x, $y) });
            }
            let _ = level;
            $scalar($x, $y)
        }
    };
}

float_kernel! {
    /// [`floats::dequantize_row_f16`] (f16 bytes -> f32), bit-identical,
    /// SIMD where available.
    ///
    /// # Errors
    /// [`QuantError::BufferLength`] unless `x.len() == 2 * y.len()`.
    dequantize_row_f16 / dequantize_row_f16_at = dequantize_f16_impl(x: &[u8], y: &mut [f32]) -> (),
    y.len().checked_mul(2) == Some(x.len()), floats::dequantize_row_f16
}

float_kernel! {
    /// [`floats::dequantize_row_bf16`] (bf16 bytes -> f32), bit-identical,
    /// SIMD where available.
    ///
    /// # Errors
    /// [`QuantError::BufferLength`] unless `x.len() == 2 * y.len()`.
    dequantize_row_bf16 / dequantize_row_bf16_at = dequantize_bf16_impl(x: &[u8], y: &mut [f32]) -> (),
    y.len().checked_mul(2) == Some(x.len()), floats::dequantize_row_bf16
}

float_kernel! {
    /// [`floats::quantize_row_f16`] (f32 -> f16 bytes, nearest even),
    /// bit-identical, SIMD where available.
    ///
    /// # Errors
    /// [`QuantError::BufferLength`] unless `y.len() == 2 * x.len()`.
    quantize_row_f16 / quantize_row_f16_at = quantize_f16_impl(x: &[f32], y: &mut [u8]) -> (),
    x.len().checked_mul(2) == Some(y.len()), floats::quantize_row_f16, avx512
}

float_kernel! {
    /// [`floats::quantize_row_bf16`] (f32 -> bf16 bytes, ggml's rounding),
    /// bit-identical, SIMD where available.
    ///
    /// # Errors
    /// [`QuantError::BufferLength`] unless `y.len() == 2 * x.len()`.
    quantize_row_bf16 / quantize_row_bf16_at = quantize_bf16_impl(x: &[f32], y: &mut [u8]) -> (),
    x.len().checked_mul(2) == Some(y.len()), floats::quantize_row_bf16, avx512
}

float_kernel! {
    /// [`floats::vec_dot_f16`], SIMD where available: f32 FMA lanes in
    /// place of the scalar f64 sum (last-bit differences).
    ///
    /// # Errors
    /// [`QuantError::BufferLength`] unless both rows hold as many values.
    vec_dot_f16 / vec_dot_f16_at = vec_dot_f16_impl(x: &[u8], y: &[u8]) -> f32,
    x.len() == y.len() && x.len().is_multiple_of(2), floats::vec_dot_f16
}

float_kernel! {
    /// [`floats::vec_dot_bf16`], SIMD where available: f32 FMA lanes in
    /// place of the scalar f64 sum (last-bit differences); 512-bit at
    /// [`Level::Avx512`].
    ///
    /// # Errors
    /// [`QuantError::BufferLength`] unless both rows hold as many values.
    vec_dot_bf16 / vec_dot_bf16_at = vec_dot_bf16_impl(x: &[u8], y: &[u8]) -> f32,
    x.len() == y.len() && x.len().is_multiple_of(2), floats::vec_dot_bf16, avx512
}

float_kernel! {
    /// [`floats::vec_dot_f32`], SIMD where available: f32 FMA lanes in
    /// place of the scalar f64 sum (last-bit differences).
    ///
    /// # Errors
    /// [`QuantError::BufferLength`] unless both rows hold as many values.
    vec_dot_f32 / vec_dot_f32_at = vec_dot_f32_impl(x: &[u8], y: &[u8]) -> f32,
    x.len() == y.len() && x.len().is_multiple_of(4), floats::vec_dot_f32
}

// ------------------------------------------ dot products with a raw partner

/// A dot product with a raw-bytes partner: the AVX2 kernel `$avx2` (by
/// default `x86::$name`) when the lengths fit, else the scalar one; `vnni`
/// as for [`dot!`].
macro_rules! dot_raw {
    (
        $(#[$doc:meta])*
        $name:ident / $at:ident = $imp:ident, $bx:ty, $ybytes:expr, $scalar:path $(, $vnni:ident)?
    ) => {
        dot_raw! {
            $(#[$doc])* $name / $at = $imp, $bx, $ybytes, x86::$name, $scalar $(, $vnni)?
        }
    };
    (
        $(#[$doc:meta])*
        $name:ident / $at:ident = $imp:ident, $bx:ty, $ybytes:expr, $avx2:path, $scalar:path
        $(, $vnni:ident)?
    ) => {
        entry_points! {
            $(#[$doc])*
            fn $name / $at = $imp(x: &[$bx], y: &[u8]) -> f32
        }

        /// # Safety
        /// `level` must not exceed [`supported`]`()`.
        #[inline]
        pub(crate) unsafe fn $imp(level: Level, x: &[$bx], y: &[u8]) -> Result<f32, QuantError> {
            #[cfg(target_arch = "x86_64")]
            if avx2(level) && x.len().checked_mul($ybytes) == Some(y.len()) {
                $(
                    let _ = stringify!($vnni);
                    if avx512(level) {
                        // SAFETY: the caller keeps `level` at or below `supported()`, and
                        // `supported() >= Avx512` means the CPU has AVX2,
                        // FMA, F16C, AVX-512 F/BW/VL and VNNI.
                        return Ok(unsafe { x86_vnni::$name(x, y) });
                    }
                )?
                // SAFETY: the caller keeps `level` at or below `supported()`, and
                // `supported() >= Avx2` means the CPU has AVX2, FMA and F16C.
                return Ok(unsafe { $avx2(x, y) });
            }
            let _ = level;
            $scalar(x, y)
        }
    };
}

dot_raw! {
    /// [`iquants::vec_dot_iq4_nl_q8_0`] (`y` the raw bytes of `block_q8_0`s),
    /// SIMD where available: exact block integer sums, f32 accumulation in
    /// another order (last-bit differences).
    ///
    /// # Errors
    /// [`QuantError::BufferLength`] unless `y.len() == 34 * x.len()`.
    vec_dot_iq4_nl_q8_0 / vec_dot_iq4_nl_q8_0_at = vec_dot_iq4_nl_q8_0_impl,
    BlockIq4Nl, iquants::Q8_0_BYTES, iquants::vec_dot_iq4_nl_q8_0, vnni
}

dot_raw! {
    /// [`iquants::vec_dot_iq4_xs_q8_k`] (`y` the raw bytes of `block_q8_K`s),
    /// SIMD where available (two groups per vector; AVX-512 weights them by
    /// their scales with `vpdpwssd`): exact block integer sums (scaled by the
    /// group scales in i32), f32 accumulation in another order (last-bit
    /// differences).
    ///
    /// # Errors
    /// [`QuantError::BufferLength`] unless `y.len() == 292 * x.len()`.
    vec_dot_iq4_xs_q8_k / vec_dot_iq4_xs_q8_k_at = vec_dot_iq4_xs_q8_k_impl,
    BlockIq4Xs, iquants::Q8_K_BYTES, x86_iq4vnni::vec_dot_iq4_xs_q8_k_avx2,
    iquants::vec_dot_iq4_xs_q8_k, vnni
}

dequantizer! {
    /// [`iquants::dequantize_row_iq4_nl`], bit-identical, SIMD where
    /// available.
    ///
    /// # Errors
    /// [`QuantError::BufferLength`] unless `y.len() == 32 * x.len()`.
    dequantize_row_iq4_nl / dequantize_row_iq4_nl_at = dequantize_iq4_nl_impl,
    BlockIq4Nl, 32, iquants::dequantize_row_iq4_nl
}

dequantizer! {
    /// [`iquants::dequantize_row_iq4_xs`], bit-identical, SIMD where
    /// available.
    ///
    /// # Errors
    /// [`QuantError::BufferLength`] unless `y.len() == 256 * x.len()`.
    dequantize_row_iq4_xs / dequantize_row_iq4_xs_at = dequantize_iq4_xs_impl,
    BlockIq4Xs, kquants::QK_K, iquants::dequantize_row_iq4_xs
}

// --------------------------------------------------------- MXFP4 and NVFP4

#[cfg(target_arch = "x86_64")]
use super::x86_fp4;
use crate::iquants::{BlockMxfp4, BlockNvfp4};

dot_raw! {
    /// [`iquants::vec_dot_mxfp4_q8_0`] (`y` the raw bytes of `block_q8_0`s),
    /// SIMD where available: exact block integer sums and the scalar code's
    /// block scales, f32 accumulation in another order (last-bit
    /// differences).
    ///
    /// # Errors
    /// [`QuantError::BufferLength`] unless `y.len() == 34 * x.len()`.
    vec_dot_mxfp4_q8_0 / vec_dot_mxfp4_q8_0_at = vec_dot_mxfp4_q8_0_impl,
    BlockMxfp4, iquants::Q8_0_BYTES, x86_fp4::vec_dot_mxfp4_q8_0, iquants::vec_dot_mxfp4_q8_0
}

dot_raw! {
    /// [`iquants::vec_dot_nvfp4_q8_0`] (`y` the raw bytes of two
    /// `block_q8_0`s per NVFP4 block), SIMD where available: exact sub-block
    /// integer sums and the scalar code's sub-block scales, f32 accumulation
    /// in another order (last-bit differences).
    ///
    /// # Errors
    /// [`QuantError::BufferLength`] unless `y.len() == 68 * x.len()`.
    vec_dot_nvfp4_q8_0 / vec_dot_nvfp4_q8_0_at = vec_dot_nvfp4_q8_0_impl,
    BlockNvfp4, 2 * iquants::Q8_0_BYTES, x86_fp4::vec_dot_nvfp4_q8_0, iquants::vec_dot_nvfp4_q8_0
}

dequantizer! {
    /// [`iquants::dequantize_row_mxfp4`], bit-identical, SIMD where
    /// available.
    ///
    /// # Errors
    /// [`QuantError::BufferLength`] unless `y.len() == 32 * x.len()`.
    dequantize_row_mxfp4 / dequantize_row_mxfp4_at = dequantize_mxfp4_impl,
    BlockMxfp4, 32, x86_fp4::dequantize_row_mxfp4, iquants::dequantize_row_mxfp4
}

dequantizer! {
    /// [`iquants::dequantize_row_nvfp4`], bit-identical, SIMD where
    /// available.
    ///
    /// # Errors
    /// [`QuantError::BufferLength`] unless `y.len() == 64 * x.len()`.
    dequantize_row_nvfp4 / dequantize_row_nvfp4_at = dequantize_nvfp4_impl,
    BlockNvfp4, 64, x86_fp4::dequantize_row_nvfp4, iquants::dequantize_row_nvfp4
}

quantizer! {
    /// [`iquants::quantize_row_mxfp4_ref`], byte-identical, SIMD where
    /// available.
    ///
    /// # Errors
    /// As the scalar function; `y` is not written then.
    quantize_row_mxfp4 / quantize_row_mxfp4_at = quantize_row_mxfp4_impl,
    BlockMxfp4, 32, x86_fp4::quantize_row_mxfp4, iquants::quantize_row_mxfp4_ref
}

quantizer! {
    /// [`iquants::quantize_row_nvfp4_ref`], byte-identical, SIMD where
    /// available.
    ///
    /// # Errors
    /// As the scalar function; `y` is not written then.
    quantize_row_nvfp4 / quantize_row_nvfp4_at = quantize_row_nvfp4_impl,
    BlockNvfp4, 64, x86_fp4::quantize_row_nvfp4, iquants::quantize_row_nvfp4_ref
}

/// A matrix quantizer `(src, dst, n_per_row, imatrix)`: at AVX2 and above
/// the scalar function's checks (lengths, finite values, importance), then
/// the kernel `$avx2`, which may assume them; else the scalar function. The
/// same errors either way, and `dst` is not written on error.
///
/// `row $kernel` instead of `$avx2`: a row kernel `(x, y)` run on all of
/// `src` (for types that ignore the importance and keep no per-row state).
macro_rules! matrix_quantizer {
    (
        $(#[$doc:meta])*
        $name:ident / $at:ident = $imp:ident, $block:ty, $dtype:ident, $qk:expr, row $row:path,
        $scalar:path
    ) => {
        matrix_quantizer! {
            $(#[$doc])*
            $name / $at = $imp, $block, $dtype, $qk,
            (|src, dst, _, _| $row(src, dst)), $scalar
        }
    };
    (
        $(#[$doc:meta])*
        $name:ident / $at:ident = $imp:ident, $block:ty, $dtype:ident, $qk:expr, $avx2:expr,
        $scalar:path
    ) => {
        entry_points! {
            $(#[$doc])*
            fn $name / $at = $imp(
                src: &[f32],
                dst: &mut [$block],
                n_per_row: usize,
                imatrix: Option<&[f32]>
            ) -> ()
        }

        /// # Safety
        /// `level` must not exceed [`supported`]`()`.
        #[inline]
        unsafe fn $imp(
            level: Level,
            src: &[f32],
            dst: &mut [$block],
            n_per_row: usize,
            imatrix: Option<&[f32]>,
        ) -> Result<(), QuantError> {
            #[cfg(target_arch = "x86_64")]
            if avx2(level) {
                iquants::check_quantize(
                    weightkit_core::DType::$dtype,
                    $qk,
                    src,
                    dst.len(),
                    n_per_row,
                    imatrix,
                )?;
                // SAFETY: the caller keeps `level` at or below `supported()`, and
                // `supported() >= Avx2` means the CPU has AVX2, FMA and F16C;
                // the lengths and values are checked above.
                unsafe { $avx2(src, dst, n_per_row, imatrix) };
                return Ok(());
            }
            let _ = level;
            $scalar(src, dst, n_per_row, imatrix)
        }
    };
}

matrix_quantizer! {
    /// [`iquants::quantize_mxfp4`] (rows of `n_per_row`; the importance
    /// weights are checked and ignored, as in ggml), byte-identical, SIMD
    /// where available.
    ///
    /// # Errors
    /// As [`iquants::quantize_mxfp4`]; `dst` is not written then.
    quantize_mxfp4 / quantize_mxfp4_at = quantize_mxfp4_impl,
    BlockMxfp4, MXFP4, 32, row x86_fp4::quantize_row_mxfp4, iquants::quantize_mxfp4
}

matrix_quantizer! {
    /// [`iquants::quantize_nvfp4`] (rows of `n_per_row`; the importance
    /// weights are checked and ignored, as in ggml), byte-identical, SIMD
    /// where available.
    ///
    /// # Errors
    /// As [`iquants::quantize_nvfp4`]; `dst` is not written then.
    quantize_nvfp4 / quantize_nvfp4_at = quantize_nvfp4_impl,
    BlockNvfp4, NVFP4, 64, row x86_fp4::quantize_row_nvfp4, iquants::quantize_nvfp4
}

// ------------------------------------------------- IQ4_NL / IQ4_XS quantizers

#[cfg(target_arch = "x86_64")]
use super::x86_iq4q;

matrix_quantizer! {
    /// [`iquants::quantize_iq4_nl`] (what `llama-quantize` runs),
    /// byte-identical, SIMD where available: AVX2 runs each group's sixteen
    /// scale-search passes side by side, one per lane, with the scalar
    /// operations.
    ///
    /// # Errors
    /// As [`iquants::quantize_iq4_nl`]; `dst` is not written then.
    quantize_iq4_nl / quantize_iq4_nl_at = quantize_iq4_nl_impl,
    BlockIq4Nl, IQ4_NL, 32, x86_iq4q::quantize_iq4_nl, iquants::quantize_iq4_nl
}

matrix_quantizer! {
    /// [`iquants::quantize_iq4_xs`] (what `llama-quantize` runs),
    /// byte-identical, SIMD where available (as [`quantize_iq4_nl`]).
    ///
    /// # Errors
    /// As [`iquants::quantize_iq4_xs`]; `dst` is not written then.
    quantize_iq4_xs / quantize_iq4_xs_at = quantize_iq4_xs_impl,
    BlockIq4Xs, IQ4_XS, kquants::QK_K, x86_iq4q::quantize_iq4_xs, iquants::quantize_iq4_xs
}

quantizer! {
    /// [`iquants::quantize_row_iq4_nl_ref`] (ggml's reference without the
    /// scale search, what llama.cpp's `test-quantize-perf` times),
    /// byte-identical, SIMD where available.
    ///
    /// # Errors
    /// As [`iquants::quantize_row_iq4_nl_ref`]; `y` is not written then.
    quantize_row_iq4_nl_ref / quantize_row_iq4_nl_ref_at = quantize_row_iq4_nl_ref_impl,
    BlockIq4Nl, 32, x86_iq4q::quantize_row_iq4_nl_ref, iquants::quantize_row_iq4_nl_ref
}

quantizer! {
    /// [`iquants::quantize_row_iq4_xs_ref`] (the same bytes as
    /// [`quantize_iq4_xs`] of one row without importance), byte-identical,
    /// SIMD where available.
    ///
    /// # Errors
    /// As [`iquants::quantize_row_iq4_xs_ref`]; `y` is not written then.
    quantize_row_iq4_xs_ref / quantize_row_iq4_xs_ref_at = quantize_row_iq4_xs_ref_impl,
    BlockIq4Xs, kquants::QK_K, x86_iq4q::quantize_row_iq4_xs_ref, iquants::quantize_row_iq4_xs_ref
}

// ------------------------------------------------ ternary (TQ1_0, TQ2_0)

#[cfg(target_arch = "x86_64")]
use super::x86_tern;
use crate::iquants::{BlockTq1_0, BlockTq2_0};

dot_raw! {
    /// [`iquants::vec_dot_tq1_0_q8_k`] (`y` the raw bytes of `block_q8_K`s),
    /// SIMD where available: the same exact block integer sums (the stored
    /// `bsums` subtracted, as in the scalar code), f32 accumulation in
    /// another order (last-bit differences).
    ///
    /// # Errors
    /// [`QuantError::BufferLength`] unless `y.len() == 292 * x.len()`.
    vec_dot_tq1_0_q8_k / vec_dot_tq1_0_q8_k_at = vec_dot_tq1_0_q8_k_impl,
    BlockTq1_0, iquants::Q8_K_BYTES, x86_tern::vec_dot_tq1_0_q8_k, iquants::vec_dot_tq1_0_q8_k, vnni
}

dot_raw! {
    /// [`iquants::vec_dot_tq2_0_q8_k`] (`y` the raw bytes of `block_q8_K`s),
    /// SIMD where available: the same exact block integer sums (the stored
    /// `bsums` subtracted, as in the scalar code), f32 accumulation in
    /// another order (last-bit differences).
    ///
    /// # Errors
    /// [`QuantError::BufferLength`] unless `y.len() == 292 * x.len()`.
    vec_dot_tq2_0_q8_k / vec_dot_tq2_0_q8_k_at = vec_dot_tq2_0_q8_k_impl,
    BlockTq2_0, iquants::Q8_K_BYTES, x86_avx2dots::vec_dot_tq2_0_q8_k, iquants::vec_dot_tq2_0_q8_k, vnni
}

dequantizer! {
    /// [`iquants::dequantize_row_tq1_0`], bit-identical, SIMD where
    /// available.
    ///
    /// # Errors
    /// [`QuantError::BufferLength`] unless `y.len() == 256 * x.len()`.
    dequantize_row_tq1_0 / dequantize_row_tq1_0_at = dequantize_tq1_0_impl,
    BlockTq1_0, kquants::QK_K, x86_tern::dequantize_row_tq1_0, iquants::dequantize_row_tq1_0
}

dequantizer! {
    /// [`iquants::dequantize_row_tq2_0`], bit-identical, SIMD where
    /// available.
    ///
    /// # Errors
    /// [`QuantError::BufferLength`] unless `y.len() == 256 * x.len()`.
    dequantize_row_tq2_0 / dequantize_row_tq2_0_at = dequantize_tq2_0_impl,
    BlockTq2_0, kquants::QK_K, x86_tern::dequantize_row_tq2_0, iquants::dequantize_row_tq2_0
}

quantizer! {
    /// [`iquants::quantize_row_tq1_0_ref`], byte-identical, SIMD where
    /// available.
    ///
    /// # Errors
    /// As the scalar function; `y` is not written then.
    quantize_row_tq1_0 / quantize_row_tq1_0_at = quantize_row_tq1_0_impl,
    BlockTq1_0, kquants::QK_K, x86_tern::quantize_row_tq1_0, iquants::quantize_row_tq1_0_ref
}

quantizer! {
    /// [`iquants::quantize_row_tq2_0_ref`], byte-identical, SIMD where
    /// available.
    ///
    /// # Errors
    /// As the scalar function; `y` is not written then.
    quantize_row_tq2_0 / quantize_row_tq2_0_at = quantize_row_tq2_0_impl,
    BlockTq2_0, kquants::QK_K, x86_tern::quantize_row_tq2_0, iquants::quantize_row_tq2_0_ref
}

matrix_quantizer! {
    /// [`iquants::quantize_tq1_0`] (rows of `n_per_row` values, the
    /// importance weights checked and ignored), byte-identical, SIMD where
    /// available.
    ///
    /// # Errors
    /// As the scalar function; `dst` is not written then.
    quantize_tq1_0 / quantize_tq1_0_at = quantize_tq1_0_impl,
    BlockTq1_0, TQ1_0, kquants::QK_K, row x86_tern::quantize_row_tq1_0, iquants::quantize_tq1_0
}

matrix_quantizer! {
    /// [`iquants::quantize_tq2_0`] (rows of `n_per_row` values, the
    /// importance weights checked and ignored), byte-identical, SIMD where
    /// available.
    ///
    /// # Errors
    /// As the scalar function; `dst` is not written then.
    quantize_tq2_0 / quantize_tq2_0_at = quantize_tq2_0_impl,
    BlockTq2_0, TQ2_0, kquants::QK_K, row x86_tern::quantize_row_tq2_0, iquants::quantize_tq2_0
}

// ------------------------------------------- grid i-quant dots with Q8_K

#[cfg(target_arch = "x86_64")]
use super::x86_iqdot;

dot_raw! {
    /// [`iquants::vec_dot_iq2_xxs_q8_k`] (`y` the raw bytes of
    /// `block_q8_K`s), SIMD where available: exact block integer sums, f32
    /// accumulation in another order (last-bit differences).
    ///
    /// # Errors
    /// [`QuantError::BufferLength`] unless `y.len() == 292 * x.len()`.
    vec_dot_iq2_xxs_q8_k / vec_dot_iq2_xxs_q8_k_at = vec_dot_iq2_xxs_q8_k_impl,
    iquants::BlockIq2Xxs, iquants::Q8_K_BYTES, x86_iqdot::vec_dot_iq2_xxs_q8_k,
    iquants::vec_dot_iq2_xxs_q8_k
}

dot_raw! {
    /// [`iquants::vec_dot_iq2_xs_q8_k`], SIMD where available,
    /// exact block integer sums, f32 accumulation in another order.
    ///
    /// # Errors
    /// [`QuantError::BufferLength`] unless `y.len() == 292 * x.len()`.
    vec_dot_iq2_xs_q8_k / vec_dot_iq2_xs_q8_k_at = vec_dot_iq2_xs_q8_k_impl,
    iquants::BlockIq2Xs, iquants::Q8_K_BYTES, x86_iqdot::vec_dot_iq2_xs_q8_k,
    iquants::vec_dot_iq2_xs_q8_k
}

dot_raw! {
    /// [`iquants::vec_dot_iq3_xxs_q8_k`], SIMD where available,
    /// exact block integer sums, f32 accumulation in another order.
    ///
    /// # Errors
    /// [`QuantError::BufferLength`] unless `y.len() == 292 * x.len()`.
    vec_dot_iq3_xxs_q8_k / vec_dot_iq3_xxs_q8_k_at = vec_dot_iq3_xxs_q8_k_impl,
    iquants::BlockIq3Xxs, iquants::Q8_K_BYTES, x86_iqdot::vec_dot_iq3_xxs_q8_k,
    iquants::vec_dot_iq3_xxs_q8_k
}

dot_raw! {
    /// [`iquants::vec_dot_iq3_s_q8_k`], SIMD where available,
    /// exact block integer sums, f32 accumulation in another order.
    ///
    /// # Errors
    /// [`QuantError::BufferLength`] unless `y.len() == 292 * x.len()`.
    vec_dot_iq3_s_q8_k / vec_dot_iq3_s_q8_k_at = vec_dot_iq3_s_q8_k_impl,
    iquants::BlockIq3S, iquants::Q8_K_BYTES, x86_iqdot::vec_dot_iq3_s_q8_k,
    iquants::vec_dot_iq3_s_q8_k
}

dot_raw! {
    /// [`iquants::vec_dot_iq1_s_q8_k`], SIMD where available,
    /// exact block integer sums (the shift term from `y`'s stored block
    /// sums), f32 accumulation in another order.
    ///
    /// # Errors
    /// [`QuantError::BufferLength`] unless `y.len() == 292 * x.len()`.
    vec_dot_iq1_s_q8_k / vec_dot_iq1_s_q8_k_at = vec_dot_iq1_s_q8_k_impl,
    iquants::BlockIq1S, iquants::Q8_K_BYTES, x86_iqdot::vec_dot_iq1_s_q8_k,
    iquants::vec_dot_iq1_s_q8_k
}

dot_raw! {
    /// [`iquants::vec_dot_iq2_s_q8_k`], SIMD where available,
    /// exact block integer sums, f32 accumulation in another order.
    ///
    /// # Errors
    /// [`QuantError::BufferLength`] unless `y.len() == 292 * x.len()`.
    vec_dot_iq2_s_q8_k / vec_dot_iq2_s_q8_k_at = vec_dot_iq2_s_q8_k_impl,
    iquants::BlockIq2S, iquants::Q8_K_BYTES, x86_iqdot::vec_dot_iq2_s_q8_k,
    iquants::vec_dot_iq2_s_q8_k, vnni
}

dot_raw! {
    /// [`iquants::vec_dot_iq1_m_q8_k`], SIMD where available,
    /// exact block integer sums, f32 accumulation in another order.
    ///
    /// # Errors
    /// [`QuantError::BufferLength`] unless `y.len() == 292 * x.len()`.
    vec_dot_iq1_m_q8_k / vec_dot_iq1_m_q8_k_at = vec_dot_iq1_m_q8_k_impl,
    iquants::BlockIq1M, iquants::Q8_K_BYTES, x86_iqdot::vec_dot_iq1_m_q8_k,
    iquants::vec_dot_iq1_m_q8_k
}

// ------------------------------------------- grid i-quant dequantizers

#[cfg(target_arch = "x86_64")]
use super::x86_iqdeq;

dequantizer! {
    /// [`iquants::dequantize_row_iq2_xxs`], bit-identical, SIMD where
    /// available.
    ///
    /// # Errors
    /// [`QuantError::BufferLength`] unless `y.len() == 256 * x.len()`.
    dequantize_row_iq2_xxs / dequantize_row_iq2_xxs_at = dequantize_iq2_xxs_impl,
    iquants::BlockIq2Xxs, kquants::QK_K, x86_iqdeq::dequantize_row_iq2_xxs,
    iquants::dequantize_row_iq2_xxs
}

dequantizer! {
    /// [`iquants::dequantize_row_iq2_xs`], bit-identical, SIMD where
    /// available.
    ///
    /// # Errors
    /// [`QuantError::BufferLength`] unless `y.len() == 256 * x.len()`.
    dequantize_row_iq2_xs / dequantize_row_iq2_xs_at = dequantize_iq2_xs_impl,
    iquants::BlockIq2Xs, kquants::QK_K, x86_iqdeq::dequantize_row_iq2_xs,
    iquants::dequantize_row_iq2_xs
}

dequantizer! {
    /// [`iquants::dequantize_row_iq2_s`], bit-identical, SIMD where
    /// available.
    ///
    /// # Errors
    /// [`QuantError::BufferLength`] unless `y.len() == 256 * x.len()`.
    dequantize_row_iq2_s / dequantize_row_iq2_s_at = dequantize_iq2_s_impl,
    iquants::BlockIq2S, kquants::QK_K, x86_iqdeq::dequantize_row_iq2_s,
    iquants::dequantize_row_iq2_s
}

dequantizer! {
    /// [`iquants::dequantize_row_iq3_xxs`], bit-identical, SIMD where
    /// available.
    ///
    /// # Errors
    /// [`QuantError::BufferLength`] unless `y.len() == 256 * x.len()`.
    dequantize_row_iq3_xxs / dequantize_row_iq3_xxs_at = dequantize_iq3_xxs_impl,
    iquants::BlockIq3Xxs, kquants::QK_K, x86_iqdeq::dequantize_row_iq3_xxs,
    iquants::dequantize_row_iq3_xxs
}

dequantizer! {
    /// [`iquants::dequantize_row_iq3_s`], bit-identical, SIMD where
    /// available.
    ///
    /// # Errors
    /// [`QuantError::BufferLength`] unless `y.len() == 256 * x.len()`.
    dequantize_row_iq3_s / dequantize_row_iq3_s_at = dequantize_iq3_s_impl,
    iquants::BlockIq3S, kquants::QK_K, x86_iqdeq::dequantize_row_iq3_s,
    iquants::dequantize_row_iq3_s
}

dequantizer! {
    /// [`iquants::dequantize_row_iq1_s`], bit-identical, SIMD where
    /// available.
    ///
    /// # Errors
    /// [`QuantError::BufferLength`] unless `y.len() == 256 * x.len()`.
    dequantize_row_iq1_s / dequantize_row_iq1_s_at = dequantize_iq1_s_impl,
    iquants::BlockIq1S, kquants::QK_K, x86_iqdeq::dequantize_row_iq1_s,
    iquants::dequantize_row_iq1_s
}

dequantizer! {
    /// [`iquants::dequantize_row_iq1_m`], bit-identical, SIMD where
    /// available.
    ///
    /// # Errors
    /// [`QuantError::BufferLength`] unless `y.len() == 256 * x.len()`.
    dequantize_row_iq1_m / dequantize_row_iq1_m_at = dequantize_iq1_m_impl,
    iquants::BlockIq1M, kquants::QK_K, x86_iqdeq::dequantize_row_iq1_m,
    iquants::dequantize_row_iq1_m
}

// ------------------------------------------------------------ Q1_0 and Q2_0

#[cfg(target_arch = "x86_64")]
use super::x86_q12;
use crate::legacy::{BlockQ1_0, BlockQ2_0};

dot_raw! {
    /// [`legacy::vec_dot_q1_0_q8_0`] (`y` the raw bytes of four
    /// `block_q8_0`s per Q1_0 block), SIMD where available: exact Q8_0-block
    /// integer sums, f32 accumulation in another order (last-bit
    /// differences).
    ///
    /// # Errors
    /// [`QuantError::BufferLength`] unless `y.len() == 136 * x.len()`.
    vec_dot_q1_0_q8_0 / vec_dot_q1_0_q8_0_at = vec_dot_q1_0_q8_0_impl,
    BlockQ1_0, 4 * iquants::Q8_0_BYTES, x86_avx2dots::vec_dot_q1_0_q8_0, legacy::vec_dot_q1_0_q8_0, vnni
}

dot_raw! {
    /// [`legacy::vec_dot_q2_0_q8_0`] (`y` the raw bytes of two
    /// `block_q8_0`s per Q2_0 block), SIMD where available: exact Q8_0-block
    /// integer sums, f32 accumulation in another order (last-bit
    /// differences).
    ///
    /// # Errors
    /// [`QuantError::BufferLength`] unless `y.len() == 68 * x.len()`.
    vec_dot_q2_0_q8_0 / vec_dot_q2_0_q8_0_at = vec_dot_q2_0_q8_0_impl,
    BlockQ2_0, 2 * iquants::Q8_0_BYTES, x86_q12::vec_dot_q2_0_q8_0, legacy::vec_dot_q2_0_q8_0, vnni
}

dequantizer! {
    /// [`legacy::dequantize_row_q1_0`], bit-identical, SIMD where available.
    ///
    /// # Errors
    /// [`QuantError::BufferLength`] unless `y.len() == 128 * x.len()`.
    dequantize_row_q1_0 / dequantize_row_q1_0_at = dequantize_q1_0_impl,
    BlockQ1_0, legacy::QK1_0, x86_q12::dequantize_row_q1_0, legacy::dequantize_row_q1_0
}

dequantizer! {
    /// [`legacy::dequantize_row_q2_0`], bit-identical, SIMD where available.
    ///
    /// # Errors
    /// [`QuantError::BufferLength`] unless `y.len() == 64 * x.len()`.
    dequantize_row_q2_0 / dequantize_row_q2_0_at = dequantize_q2_0_impl,
    BlockQ2_0, legacy::QK2_0, x86_q12::dequantize_row_q2_0, legacy::dequantize_row_q2_0
}

quantizer! {
    /// [`legacy::quantize_row_q1_0_ref`], byte-identical, SIMD where
    /// available.
    ///
    /// # Errors
    /// As the scalar function; `y` is not written then.
    quantize_row_q1_0 / quantize_row_q1_0_at = quantize_row_q1_0_impl,
    BlockQ1_0, legacy::QK1_0, x86_q12::quantize_row_q1_0, legacy::quantize_row_q1_0_ref
}

quantizer! {
    /// [`legacy::quantize_row_q2_0_ref`], byte-identical, SIMD where
    /// available.
    ///
    /// # Errors
    /// As the scalar function; `y` is not written then.
    quantize_row_q2_0 / quantize_row_q2_0_at = quantize_row_q2_0_impl,
    BlockQ2_0, legacy::QK2_0, x86_q12::quantize_row_q2_0, legacy::quantize_row_q2_0_ref
}

matrix_quantizer! {
    /// [`legacy::quantize_q1_0`] (rows of `n_per_row` values, the
    /// importance weights checked and ignored, as in ggml), byte-identical,
    /// SIMD where available.
    ///
    /// # Errors
    /// As the scalar function; `dst` is not written then.
    quantize_q1_0 / quantize_q1_0_at = quantize_q1_0_impl,
    BlockQ1_0, Q1_0, legacy::QK1_0, row x86_q12::quantize_row_q1_0, legacy::quantize_q1_0
}

matrix_quantizer! {
    /// [`legacy::quantize_q2_0`] (rows of `n_per_row` values, the
    /// importance weights checked and ignored, as in ggml), byte-identical,
    /// SIMD where available.
    ///
    /// # Errors
    /// As the scalar function; `dst` is not written then.
    quantize_q2_0 / quantize_q2_0_at = quantize_q2_0_impl,
    BlockQ2_0, Q2_0, legacy::QK2_0, row x86_q12::quantize_row_q2_0, legacy::quantize_q2_0
}

// -------------------------------------------- AVX2 Q4_1 / Q5_1 / Q2_K dots

// The Q4_1, Q5_1 and Q2_K dot products above run these kernels at the AVX2
// level.
#[cfg(target_arch = "x86_64")]
use super::x86_avx2legacy;
