//! Byte-level entry points keyed by [`DType`]: what format crates, the
//! conversion pipeline and the CLI call. They take and return the bytes a
//! GGUF file stores, check every length, and run rows in parallel when asked.

use bytemuck::Pod;
use rayon::prelude::*;
use weightkit_core::{DType, Packing};

use crate::QuantError;
// The SIMD kernels (bit-identical dequantizers and partner quantizers; dot
// products within test-quantize-fns' tolerance), dispatched at run time.
use crate::iquants::*;
use crate::kquants::*;
use crate::legacy::*;
use crate::simd::dispatch::{
    dequantize_row_bf16 as fast_dequantize_row_bf16, dequantize_row_f16 as fast_dequantize_row_f16,
    dequantize_row_iq4_nl as fast_dequantize_row_iq4_nl,
    dequantize_row_iq4_xs as fast_dequantize_row_iq4_xs,
    dequantize_row_q2_k as fast_dequantize_row_q2_k,
    dequantize_row_q3_k as fast_dequantize_row_q3_k,
    dequantize_row_q4_0 as fast_dequantize_row_q4_0,
    dequantize_row_q4_k as fast_dequantize_row_q4_k,
    dequantize_row_q5_k as fast_dequantize_row_q5_k,
    dequantize_row_q6_k as fast_dequantize_row_q6_k,
    dequantize_row_q8_0 as fast_dequantize_row_q8_0,
    dequantize_row_tq1_0 as fast_dequantize_row_tq1_0,
    dequantize_row_tq2_0 as fast_dequantize_row_tq2_0, quantize_iq4_nl as fast_quantize_iq4_nl,
    quantize_iq4_xs as fast_quantize_iq4_xs, quantize_row_bf16 as fast_quantize_row_bf16,
    quantize_row_f16 as fast_quantize_row_f16, quantize_row_q8_0 as fast_quantize_row_q8_0,
    quantize_row_q8_1 as fast_quantize_row_q8_1, quantize_row_q8_k as fast_quantize_row_q8_k,
    quantize_tq1_0 as fast_quantize_tq1_0, quantize_tq2_0 as fast_quantize_tq2_0,
};
use crate::simd::dispatch::{
    dequantize_row_iq1_m as fast_dequantize_row_iq1_m,
    dequantize_row_iq1_s as fast_dequantize_row_iq1_s,
    dequantize_row_iq2_s as fast_dequantize_row_iq2_s,
    dequantize_row_iq2_xs as fast_dequantize_row_iq2_xs,
    dequantize_row_iq2_xxs as fast_dequantize_row_iq2_xxs,
    dequantize_row_iq3_s as fast_dequantize_row_iq3_s,
    dequantize_row_iq3_xxs as fast_dequantize_row_iq3_xxs,
};
use crate::simd::dispatch::{
    dequantize_row_mxfp4 as fast_dequantize_row_mxfp4,
    dequantize_row_nvfp4 as fast_dequantize_row_nvfp4, quantize_mxfp4 as fast_quantize_mxfp4,
    quantize_nvfp4 as fast_quantize_nvfp4,
};
use crate::simd::dispatch::{
    dequantize_row_q1_0 as fast_dequantize_row_q1_0,
    dequantize_row_q2_0 as fast_dequantize_row_q2_0, quantize_q1_0 as fast_quantize_q1_0,
    quantize_q2_0 as fast_quantize_q2_0,
};
use crate::simd::{Level, level, supported};

/// Minimum number of values a parallel task quantizes (llama-quantize's
/// chunk size), so small tensors are not split into tiny tasks.
pub const MIN_CHUNK_VALUES: usize = 16 * 1024;

/// Bytes of one row of `n` values of `dtype`.
pub fn row_size(dtype: DType, n: usize) -> Result<usize, QuantError> {
    let block = dtype.block_elems();
    if !n.is_multiple_of(block) {
        return Err(QuantError::RowNotBlockMultiple { dtype, n, block });
    }
    (n / block)
        .checked_mul(dtype.block_bytes())
        .ok_or(QuantError::BufferLength {
            what: "row",
            expected: usize::MAX,
            found: n,
            unit: "elements",
        })
}

/// Whether [`quantize`] supports `dtype` (ggml has no reference quantizer
/// for the IQ2/IQ3/IQ1 grid types; F32/F16/BF16 are plain conversions).
pub fn can_quantize(dtype: DType) -> bool {
    use DType::*;
    matches!(
        dtype,
        F32 | F16
            | BF16
            | Q4_0
            | Q4_1
            | Q5_0
            | Q5_1
            | Q8_0
            | Q8_1
            | Q2_K
            | Q3_K
            | Q4_K
            | Q5_K
            | Q6_K
            | Q8_K
            | IQ4_NL
            | IQ4_XS
            | TQ1_0
            | TQ2_0
            | MXFP4
            | NVFP4
            | Q1_0
            | Q2_0
    )
}

/// Whether [`dequantize`] supports `dtype`.
pub fn can_dequantize(dtype: DType) -> bool {
    use DType::*;
    can_quantize(dtype) && dtype != Q8_1
        || matches!(
            dtype,
            IQ2_XXS | IQ2_XS | IQ2_S | IQ3_XXS | IQ3_S | IQ1_S | IQ1_M
        )
}

/// Whether the type's quantizer uses an importance matrix (others ignore it).
pub fn uses_importance(dtype: DType) -> bool {
    use DType::*;
    matches!(
        dtype,
        Q4_0 | Q4_1 | Q5_0 | Q5_1 | Q2_K | Q3_K | Q4_K | Q5_K | Q6_K | IQ4_NL | IQ4_XS
    )
}

/// Runs `f` on `bytes` viewed as blocks, copying to an aligned buffer only
/// when `bytes` is not aligned for `B` (mmap'd tensor data may not be).
///
/// The copy lives in a separate cold function, so the aligned path (every
/// `Vec` and page-aligned buffer) carries no allocation or unwinding code:
/// a 4096-value dot product takes ~50 ns, and that code cost ~3 ns of it.
#[inline(always)]
fn with_blocks<B: Pod, R>(bytes: &[u8], f: impl FnOnce(&[B]) -> R) -> R {
    match bytemuck::try_cast_slice::<u8, B>(bytes) {
        Ok(blocks) => f(blocks),
        Err(_) => with_aligned_copy(bytes, f),
    }
}

/// `bytes` as whole, aligned blocks, if they are.
#[inline(always)]
fn try_blocks<B: Pod>(bytes: &[u8]) -> Option<&[B]> {
    bytemuck::try_cast_slice(bytes).ok()
}

#[cold]
#[inline(never)]
fn with_aligned_copy<B: Pod, R>(bytes: &[u8], f: impl FnOnce(&[B]) -> R) -> R {
    let copy: Vec<B> = bytes
        .chunks_exact(std::mem::size_of::<B>())
        .map(bytemuck::pod_read_unaligned)
        .collect();
    f(&copy)
}

/// Runs `f` on `bytes` viewed as mutable blocks (through an aligned buffer
/// copied back when `bytes` is not aligned).
fn with_blocks_mut<B: Pod, R>(bytes: &mut [u8], f: impl FnOnce(&mut [B]) -> R) -> R {
    match bytemuck::try_cast_slice_mut::<u8, B>(bytes) {
        Ok(blocks) => f(blocks),
        Err(_) => {
            let mut tmp: Vec<B> = vec![B::zeroed(); bytes.len() / std::mem::size_of::<B>()];
            let r = f(&mut tmp);
            bytes.copy_from_slice(bytemuck::cast_slice(&tmp));
            r
        }
    }
}

pub(crate) fn check_len(
    what: &'static str,
    expected: usize,
    found: usize,
    unit: &'static str,
) -> Result<(), QuantError> {
    if expected != found {
        return Err(QuantError::BufferLength {
            what,
            expected,
            found,
            unit,
        });
    }
    Ok(())
}

/// Quantizes rows of `n_per_row` values from `src` into `dst` (the bytes
/// of `src.len() / n_per_row` rows of `dtype`), bit-exact with ggml's
/// `ggml_quantize_chunk`: the reference path without `imatrix`, the
/// importance-weighted one with it (for the types that use one).
pub fn quantize_into(
    dtype: DType,
    src: &[f32],
    n_per_row: usize,
    imatrix: Option<&[f32]>,
    dst: &mut [u8],
) -> Result<(), QuantError> {
    if n_per_row == 0 {
        check_len("source", 0, src.len(), "elements")?;
        return check_len("destination", 0, dst.len(), "bytes");
    }
    if !src.len().is_multiple_of(n_per_row) {
        return Err(QuantError::BufferLength {
            what: "source",
            expected: src.len() / n_per_row * n_per_row,
            found: src.len(),
            unit: "elements",
        });
    }
    let rows = src.len() / n_per_row;
    let expected = row_size(dtype, n_per_row)?.saturating_mul(rows);
    check_len("destination", expected, dst.len(), "bytes")?;
    macro_rules! q {
        ($block:ty, $f:ident) => {
            with_blocks_mut::<$block, _>(dst, |b| $f(src, b, n_per_row, imatrix))
        };
    }
    macro_rules! q_row {
        ($block:ty, $f:ident) => {
            with_blocks_mut::<$block, _>(dst, |b| $f(src, b))
        };
    }
    match dtype {
        DType::F32 | DType::F16 | DType::BF16 => {
            if let Some((i, &v)) = crate::common::first_non_finite(src).map(|i| (i, &src[i])) {
                return Err(QuantError::NonFiniteInput { index: i, value: v });
            }
            match dtype {
                DType::F16 => fast_quantize_row_f16(src, dst),
                DType::BF16 => fast_quantize_row_bf16(src, dst),
                _ => {
                    for (c, v) in dst.chunks_exact_mut(4).zip(src) {
                        c.copy_from_slice(&v.to_le_bytes());
                    }
                    Ok(())
                }
            }
        }
        DType::Q4_0 => q!(BlockQ4_0, quantize_q4_0),
        DType::Q4_1 => q!(BlockQ4_1, quantize_q4_1),
        DType::Q5_0 => q!(BlockQ5_0, quantize_q5_0),
        DType::Q5_1 => q!(BlockQ5_1, quantize_q5_1),
        DType::Q8_0 => with_blocks_mut::<BlockQ8_0, _>(dst, |b| {
            // Q8_0 ignores the importance matrix (as ggml), but its values
            // are still checked, as for every type.
            if let Some(w) = imatrix {
                check_len("imatrix", n_per_row, w.len(), "elements")?;
                crate::common::check_importance(w)?;
            }
            fast_quantize_row_q8_0(src, b)
        }),
        DType::Q8_1 => q_row!(BlockQ8_1, fast_quantize_row_q8_1),
        DType::Q2_K => q!(BlockQ2K, quantize_q2_k),
        DType::Q3_K => q!(BlockQ3K, quantize_q3_k),
        DType::Q4_K => q!(BlockQ4K, quantize_q4_k),
        DType::Q5_K => q!(BlockQ5K, quantize_q5_k),
        DType::Q6_K => q!(BlockQ6K, quantize_q6_k),
        DType::Q8_K => q_row!(BlockQ8K, fast_quantize_row_q8_k),
        DType::IQ4_NL => q!(BlockIq4Nl, fast_quantize_iq4_nl),
        DType::IQ4_XS => q!(BlockIq4Xs, fast_quantize_iq4_xs),
        DType::TQ1_0 => q!(BlockTq1_0, fast_quantize_tq1_0),
        DType::TQ2_0 => q!(BlockTq2_0, fast_quantize_tq2_0),
        DType::MXFP4 => q!(BlockMxfp4, fast_quantize_mxfp4),
        DType::NVFP4 => q!(BlockNvfp4, fast_quantize_nvfp4),
        DType::Q1_0 => q!(BlockQ1_0, fast_quantize_q1_0),
        DType::Q2_0 => q!(BlockQ2_0, fast_quantize_q2_0),
        DType::IQ2_XXS
        | DType::IQ2_XS
        | DType::IQ2_S
        | DType::IQ3_XXS
        | DType::IQ3_S
        | DType::IQ1_S
        | DType::IQ1_M => Err(QuantError::ImportanceRequired { dtype }),
        _ => Err(QuantError::Unsupported {
            dtype,
            what: "quantize",
        }),
    }
}

/// [`quantize_into`] returning a new buffer.
pub fn quantize(
    dtype: DType,
    src: &[f32],
    n_per_row: usize,
    imatrix: Option<&[f32]>,
) -> Result<Vec<u8>, QuantError> {
    let rows = src.len().checked_div(n_per_row).unwrap_or(0);
    let len = row_size(dtype, n_per_row)?.saturating_mul(rows);
    let mut out = vec![0u8; len];
    quantize_into(dtype, src, n_per_row, imatrix, &mut out)?;
    Ok(out)
}

/// [`quantize_into`] over row chunks of at least [`MIN_CHUNK_VALUES`]
/// values on rayon's thread pool. Rows are independent, so the bytes are
/// identical to the single-threaded call whatever the thread count.
pub fn quantize_into_parallel(
    dtype: DType,
    src: &[f32],
    n_per_row: usize,
    imatrix: Option<&[f32]>,
    dst: &mut [u8],
) -> Result<(), QuantError> {
    if n_per_row == 0 || src.len() <= MIN_CHUNK_VALUES {
        return quantize_into(dtype, src, n_per_row, imatrix, dst);
    }
    let row_bytes = row_size(dtype, n_per_row)?;
    if !src.len().is_multiple_of(n_per_row) {
        return quantize_into(dtype, src, n_per_row, imatrix, dst);
    }
    let rows = src.len() / n_per_row;
    check_len(
        "destination",
        row_bytes.saturating_mul(rows),
        dst.len(),
        "bytes",
    )?;
    let rows_per_chunk = MIN_CHUNK_VALUES.div_ceil(n_per_row).max(1);
    src.par_chunks(rows_per_chunk * n_per_row)
        .zip(dst.par_chunks_mut(rows_per_chunk * row_bytes))
        .try_for_each(|(s, d)| quantize_into(dtype, s, n_per_row, imatrix, d))
}

/// Dequantizes `src` (whole blocks of `dtype`) into `dst` (one f32 per
/// element), bit-exact with ggml's `to_float`.
pub fn dequantize(dtype: DType, src: &[u8], dst: &mut [f32]) -> Result<(), QuantError> {
    let (elems, bytes) = match dtype.packing() {
        Packing::Element { bytes } => (1, bytes),
        Packing::Block { elems, bytes } => (elems, bytes),
        Packing::Bits { .. } => {
            return Err(QuantError::Unsupported {
                dtype,
                what: "dequantize",
            });
        }
    };
    if !src.len().is_multiple_of(bytes) {
        return Err(QuantError::BufferLength {
            what: "source",
            expected: src.len() / bytes * bytes,
            found: src.len(),
            unit: "bytes",
        });
    }
    check_len(
        "destination",
        src.len() / bytes * elems,
        dst.len(),
        "elements",
    )?;
    macro_rules! dq {
        ($block:ty, $f:ident) => {
            with_blocks::<$block, _>(src, |b| $f(b, dst))
        };
    }
    match dtype {
        DType::F16 => fast_dequantize_row_f16(src, dst),
        DType::BF16 => fast_dequantize_row_bf16(src, dst),
        DType::F32 | DType::F64 | DType::I8 | DType::I16 | DType::I32 | DType::I64 => {
            weightkit_core::convert::decode_f32(dtype, src, dst).map_err(|_| {
                QuantError::Unsupported {
                    dtype,
                    what: "dequantize",
                }
            })
        }
        DType::Q4_0 => dq!(BlockQ4_0, fast_dequantize_row_q4_0),
        DType::Q4_1 => dq!(BlockQ4_1, dequantize_row_q4_1),
        DType::Q5_0 => dq!(BlockQ5_0, dequantize_row_q5_0),
        DType::Q5_1 => dq!(BlockQ5_1, dequantize_row_q5_1),
        DType::Q8_0 => dq!(BlockQ8_0, fast_dequantize_row_q8_0),
        DType::Q2_K => dq!(BlockQ2K, fast_dequantize_row_q2_k),
        DType::Q3_K => dq!(BlockQ3K, fast_dequantize_row_q3_k),
        DType::Q4_K => dq!(BlockQ4K, fast_dequantize_row_q4_k),
        DType::Q5_K => dq!(BlockQ5K, fast_dequantize_row_q5_k),
        DType::Q6_K => dq!(BlockQ6K, fast_dequantize_row_q6_k),
        DType::Q8_K => dq!(BlockQ8K, dequantize_row_q8_k),
        DType::IQ4_NL => dq!(BlockIq4Nl, fast_dequantize_row_iq4_nl),
        DType::IQ4_XS => dq!(BlockIq4Xs, fast_dequantize_row_iq4_xs),
        DType::TQ1_0 => dq!(BlockTq1_0, fast_dequantize_row_tq1_0),
        DType::TQ2_0 => dq!(BlockTq2_0, fast_dequantize_row_tq2_0),
        DType::MXFP4 => dq!(BlockMxfp4, fast_dequantize_row_mxfp4),
        DType::NVFP4 => dq!(BlockNvfp4, fast_dequantize_row_nvfp4),
        DType::Q1_0 => dq!(BlockQ1_0, fast_dequantize_row_q1_0),
        DType::Q2_0 => dq!(BlockQ2_0, fast_dequantize_row_q2_0),
        DType::IQ2_XXS => dq!(BlockIq2Xxs, fast_dequantize_row_iq2_xxs),
        DType::IQ2_XS => dq!(BlockIq2Xs, fast_dequantize_row_iq2_xs),
        DType::IQ2_S => dq!(BlockIq2S, fast_dequantize_row_iq2_s),
        DType::IQ3_XXS => dq!(BlockIq3Xxs, fast_dequantize_row_iq3_xxs),
        DType::IQ3_S => dq!(BlockIq3S, fast_dequantize_row_iq3_s),
        DType::IQ1_S => dq!(BlockIq1S, fast_dequantize_row_iq1_s),
        DType::IQ1_M => dq!(BlockIq1M, fast_dequantize_row_iq1_m),
        _ => Err(QuantError::Unsupported {
            dtype,
            what: "dequantize",
        }),
    }
}

/// [`dequantize`] in parallel chunks (identical output).
pub fn dequantize_parallel(dtype: DType, src: &[u8], dst: &mut [f32]) -> Result<(), QuantError> {
    let (elems, bytes) = (dtype.block_elems(), dtype.block_bytes());
    let blocks_per_chunk = MIN_CHUNK_VALUES.div_ceil(elems).max(1) * 4;
    if src.len() <= blocks_per_chunk * bytes
        || !src.len().is_multiple_of(bytes)
        || dst.len() != src.len() / bytes * elems
    {
        return dequantize(dtype, src, dst);
    }
    src.par_chunks(blocks_per_chunk * bytes)
        .zip(dst.par_chunks_mut(blocks_per_chunk * elems))
        .try_for_each(|(s, d)| dequantize(dtype, s, d))
}

/// The type a row of `dtype` is dotted with (ggml's `vec_dot_type`):
/// activations are quantized to it before [`vec_dot`]. F32, F16 and BF16
/// rows dot rows of their own type, as in ggml.
pub fn vec_dot_type(dtype: DType) -> Option<DType> {
    use DType::*;
    Some(match dtype {
        F32 | F16 | BF16 => dtype,
        Q4_0 | Q5_0 | Q8_0 | IQ4_NL | MXFP4 | NVFP4 | Q1_0 | Q2_0 => Q8_0,
        Q4_1 | Q5_1 => Q8_1,
        Q2_K | Q3_K | Q4_K | Q5_K | Q6_K | IQ4_XS | TQ1_0 | TQ2_0 | IQ2_XXS | IQ2_XS | IQ2_S
        | IQ3_XXS | IQ3_S | IQ1_S | IQ1_M => Q8_K,
        _ => return None,
    })
}

/// A byte-level dot product of one type, chosen once by [`vec_dot_fn`]:
/// [`call`](VecDotFn::call) it as [`vec_dot`] (same checks, errors and
/// bits) without matching the type on every row.
///
/// It holds the kernels for the SIMD [`level`](crate::simd::level) in force
/// when it was chosen (or the one given to [`vec_dot_fn_at`]; a later
/// [`set_level`](crate::simd::set_level) does not change it) behind a
/// function that returns `Option<f32>`, which comes back in registers;
/// `None` (bytes that are not whole, aligned blocks of matching lengths)
/// hands the call to the checked path at the same level, which copies
/// unaligned input or reports the error. A `Result<f32, QuantError>` comes
/// back through memory: ~1.5 ns a call (~12% of a 256-value F16 dot
/// product) when the function pointer returned one.
#[derive(Clone, Copy)]
pub struct VecDotFn {
    dtype: DType,
    level: Level,
    /// The kernel at the chosen level; `None` unless the bytes are whole,
    /// aligned blocks of matching lengths.
    fast: DotFast,
    /// Everything else, at the same level: aligned copies of unaligned
    /// input, the errors.
    checked: DotChecked,
}

/// [`VecDotFn`]'s kernel. Safety: only run on a CPU that supports the level
/// it was chosen for, which [`vec_dot_fn`] and [`vec_dot_fn_at`] ensure.
type DotFast = unsafe fn(&[u8], &[u8]) -> Option<f32>;
/// [`VecDotFn`]'s checked path; the same safety contract.
type DotChecked = unsafe fn(&[u8], &[u8]) -> Result<f32, QuantError>;

impl VecDotFn {
    /// The dot product of row `x` of this type (whole blocks) with `y`, the
    /// same number of values in its [`vec_dot_type`]: [`vec_dot`]'s result.
    ///
    /// # Errors
    /// As [`vec_dot`]: [`QuantError::BufferLength`] for lengths that are not
    /// whole blocks or do not match.
    #[inline]
    pub fn call(&self, x: &[u8], y: &[u8]) -> Result<f32, QuantError> {
        // SAFETY: `vec_dot_fn_trusted` picked both functions for a level at
        // or below what the CPU supports (its callers' contract).
        unsafe {
            match (self.fast)(x, y) {
                Some(v) => Ok(v),
                None => (self.checked)(x, y),
            }
        }
    }

    /// The weight type this dot product takes.
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// The SIMD level whose kernels it runs.
    pub fn level(&self) -> Level {
        self.level
    }
}

impl std::fmt::Debug for VecDotFn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VecDotFn")
            .field("dtype", &self.dtype)
            .field("level", &self.level)
            .finish_non_exhaustive()
    }
}

/// Dot product of one row of `dtype` (`x`, whole blocks) with the same
/// number of values in its [`vec_dot_type`] (`y`), as ggml's `vec_dot`.
pub fn vec_dot(dtype: DType, x: &[u8], y: &[u8]) -> Result<f32, QuantError> {
    match vec_dot_fn(dtype) {
        Some(f) => f.call(x, y),
        None => Err(QuantError::Unsupported {
            dtype,
            what: "vec_dot",
        }),
    }
}

/// [`vec_dot`] for one `dtype`, chosen once: a loop over many rows (as
/// [`matvec`]) calls it without matching the type each time. `None` where
/// the type has no dot product. It takes the bytes as [`vec_dot`] does
/// (unaligned input is copied to aligned blocks first).
pub fn vec_dot_fn(dtype: DType) -> Option<VecDotFn> {
    // SAFETY: `level()` never exceeds `supported()`.
    unsafe { vec_dot_fn_trusted(dtype, level()) }
}

/// [`vec_dot_fn`] with the kernels of `level`, capped at what this CPU
/// [`supported`]s ([`Level::Scalar`] runs the scalar reference), as the
/// `_at` twins of [`crate::simd::dispatch`] do: for comparing levels in one
/// process without [`set_level`](crate::simd::set_level).
pub fn vec_dot_fn_at(dtype: DType, level: Level) -> Option<VecDotFn> {
    // SAFETY: the level is capped at `supported()`.
    unsafe { vec_dot_fn_trusted(dtype, level.min(supported())) }
}

/// [`vec_dot_fn_at`] without the cap: [`vec_dot`] runs this on every call,
/// and `supported()` (eight CPU-feature checks) cost it ~2 ns of a 50-150 ns
/// dot product.
///
/// # Safety
/// `level` must not exceed [`supported`]`()`.
#[inline]
unsafe fn vec_dot_fn_trusted(dtype: DType, level: Level) -> Option<VecDotFn> {
    // Per level `L`, `fast::<L>` (the bytes cast to the kernel's arguments
    // by `$cast`, `None` unless they are whole aligned blocks of matching
    // lengths) and `checked::<L>` (`$checked`: aligned copies, errors), both
    // `dispatch`'s kernel choice for the constant level `$lv`.
    macro_rules! pick {
        ($imp:ident, |$x:ident, $y:ident| $cast:expr, |$lv:ident| $checked:expr) => {{
            /// # Safety
            /// The CPU supports `Level::from_u8(L)`.
            unsafe fn fast<const L: u8>($x: &[u8], $y: &[u8]) -> Option<f32> {
                let (a, b) = $cast?;
                // SAFETY: the caller's contract.
                unsafe { dispatch::$imp(Level::from_u8(L), a, b) }.ok()
            }
            /// # Safety
            /// The CPU supports `Level::from_u8(L)`.
            unsafe fn checked<const L: u8>($x: &[u8], $y: &[u8]) -> Result<f32, QuantError> {
                let $lv = Level::from_u8(L);
                $checked
            }
            macro_rules! at {
                ($l:expr) => {
                    (fast::<{ $l.to_u8() }>, checked::<{ $l.to_u8() }>)
                };
            }
            let (fast, checked): (DotFast, DotChecked) = match level {
                Level::Avx512 => at!(Level::Avx512),
                Level::Avx2 => at!(Level::Avx2),
                Level::Scalar => at!(Level::Scalar),
            };
            VecDotFn {
                dtype,
                level,
                fast,
                checked,
            }
        }};
    }
    macro_rules! dot {
        ($bx:ty, $by:ty, $imp:ident) => {
            pick!(
                $imp,
                |x, y| try_blocks::<$bx>(x).zip(try_blocks::<$by>(y)),
                |lv| with_blocks::<$bx, _>(x, |bx| {
                    with_blocks::<$by, _>(y, |by| {
                        // SAFETY: `checked`'s contract covers `lv`.
                        unsafe { dispatch::$imp(lv, bx, by) }
                    })
                })
            )
        };
    }
    macro_rules! dot_raw {
        ($bx:ty, $imp:ident) => {
            pick!($imp, |x, y| try_blocks::<$bx>(x).map(|b| (b, y)), |lv| {
                with_blocks::<$bx, _>(x, |bx| {
                    // SAFETY: `checked`'s contract covers `lv`.
                    unsafe { dispatch::$imp(lv, bx, y) }
                })
            })
        };
    }
    macro_rules! floats {
        ($imp:ident) => {
            pick!($imp, |x, y| Some((x, y)), |lv| {
                // SAFETY: `checked`'s contract covers `lv`.
                unsafe { dispatch::$imp(lv, x, y) }
            })
        };
    }
    use crate::simd::dispatch;
    Some(match dtype {
        DType::F32 => floats!(vec_dot_f32_impl),
        DType::F16 => floats!(vec_dot_f16_impl),
        DType::BF16 => floats!(vec_dot_bf16_impl),
        DType::Q4_0 => dot!(BlockQ4_0, BlockQ8_0, vec_dot_q4_0_q8_0_impl),
        DType::Q4_1 => dot!(BlockQ4_1, BlockQ8_1, vec_dot_q4_1_q8_1_impl),
        DType::Q5_0 => dot!(BlockQ5_0, BlockQ8_0, vec_dot_q5_0_q8_0_impl),
        DType::Q5_1 => dot!(BlockQ5_1, BlockQ8_1, vec_dot_q5_1_q8_1_impl),
        DType::Q8_0 => dot!(BlockQ8_0, BlockQ8_0, vec_dot_q8_0_q8_0_impl),
        DType::Q2_K => dot!(BlockQ2K, BlockQ8K, vec_dot_q2_k_q8_k_impl),
        DType::Q3_K => dot!(BlockQ3K, BlockQ8K, vec_dot_q3_k_q8_k_impl),
        DType::Q4_K => dot!(BlockQ4K, BlockQ8K, vec_dot_q4_k_q8_k_impl),
        DType::Q5_K => dot!(BlockQ5K, BlockQ8K, vec_dot_q5_k_q8_k_impl),
        DType::Q6_K => dot!(BlockQ6K, BlockQ8K, vec_dot_q6_k_q8_k_impl),
        DType::IQ4_NL => dot_raw!(BlockIq4Nl, vec_dot_iq4_nl_q8_0_impl),
        DType::IQ4_XS => dot_raw!(BlockIq4Xs, vec_dot_iq4_xs_q8_k_impl),
        DType::TQ1_0 => dot_raw!(BlockTq1_0, vec_dot_tq1_0_q8_k_impl),
        DType::TQ2_0 => dot_raw!(BlockTq2_0, vec_dot_tq2_0_q8_k_impl),
        DType::MXFP4 => dot_raw!(BlockMxfp4, vec_dot_mxfp4_q8_0_impl),
        DType::NVFP4 => dot_raw!(BlockNvfp4, vec_dot_nvfp4_q8_0_impl),
        DType::Q1_0 => dot_raw!(BlockQ1_0, vec_dot_q1_0_q8_0_impl),
        DType::Q2_0 => dot_raw!(BlockQ2_0, vec_dot_q2_0_q8_0_impl),
        DType::IQ2_XXS => dot_raw!(BlockIq2Xxs, vec_dot_iq2_xxs_q8_k_impl),
        DType::IQ2_XS => dot_raw!(BlockIq2Xs, vec_dot_iq2_xs_q8_k_impl),
        DType::IQ2_S => dot_raw!(BlockIq2S, vec_dot_iq2_s_q8_k_impl),
        DType::IQ3_XXS => dot_raw!(BlockIq3Xxs, vec_dot_iq3_xxs_q8_k_impl),
        DType::IQ3_S => dot_raw!(BlockIq3S, vec_dot_iq3_s_q8_k_impl),
        DType::IQ1_S => dot_raw!(BlockIq1S, vec_dot_iq1_s_q8_k_impl),
        DType::IQ1_M => dot_raw!(BlockIq1M, vec_dot_iq1_m_q8_k_impl),
        _ => return None,
    })
}

/// `y = W x` for a row-major matrix `w` of `rows` rows of `cols` values of
/// `dtype` (the bytes a GGUF tensor of shape `[rows, cols]` stores) and an
/// f32 vector `x`: `x` is quantized once to the weight type's
/// [`vec_dot_type`], then each row is one [`vec_dot`]. Rows run in
/// parallel on the current rayon pool, in tasks of 16-64 rows (several per
/// thread, so a worker that starts late still takes an even share); in a
/// one-thread pool, or for fewer rows than one task, in order on the calling
/// thread. Each output is its row's `vec_dot`, the same bits for any pool.
/// A caller making many calls (a model's forward pass) should make them
/// inside its pool (`ThreadPool::install`): a call from outside hands its
/// work to the pool's threads and waits, tens of microseconds per call.
/// This is the product the transformer's linear layers run.
pub fn matvec(
    dtype: DType,
    w: &[u8],
    rows: usize,
    cols: usize,
    x: &[f32],
    y: &mut [f32],
) -> Result<(), QuantError> {
    let unsupported = QuantError::Unsupported {
        dtype,
        what: "vec_dot",
    };
    let dot_type = vec_dot_type(dtype).ok_or(unsupported.clone())?;
    let dot = vec_dot_fn(dtype).ok_or(unsupported)?;
    let row_bytes = row_size(dtype, cols)?;
    check_len("weights", row_bytes.saturating_mul(rows), w.len(), "bytes")?;
    check_len("x", cols, x.len(), "elements")?;
    check_len("y", rows, y.len(), "elements")?;
    if let Some((i, &v)) = crate::common::first_non_finite(x).map(|i| (i, &x[i])) {
        return Err(QuantError::NonFiniteInput { index: i, value: v });
    }
    let xq = quantize(dot_type, x, cols, None)?;
    if row_bytes == 0 {
        y.fill(0.0);
        return Ok(());
    }
    let rows_of = |w: &[u8], y: &mut [f32]| -> Result<(), QuantError> {
        for (row, out) in w.chunks_exact(row_bytes).zip(y) {
            *out = dot.call(row, &xq)?;
        }
        Ok(())
    };
    let threads = rayon::current_num_threads();
    let chunk = matvec_chunk_rows(rows, threads);
    if threads == 1 || chunk >= rows {
        return rows_of(w, y);
    }
    w.par_chunks(row_bytes * chunk)
        .zip(y.par_chunks_mut(chunk))
        .with_max_len(1)
        .try_for_each(|(w, y)| rows_of(w, y))
}

/// Rows per parallel task of [`matvec`]: small enough that every thread
/// gets several (a worker that wakes late still takes an even share, as
/// ggml's threads claim 64-row chunks), at least 16 so that a task's
/// scheduling cost (~1 us) stays below its work.
fn matvec_chunk_rows(rows: usize, threads: usize) -> usize {
    (rows / (threads * 8)).clamp(16, 64)
}
