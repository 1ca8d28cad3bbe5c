//! ggml's non-linear, grid, ternary and FP4 block formats, bit-exact with
//! llama.cpp's `ggml-quants.c` and the generic (scalar) kernels of
//! `ggml-cpu/quants.c`.
//!
//! | type | block | bytes | here |
//! |---|---|---|---|
//! | IQ4_NL | 32 | 18 | quantize (importance optional), dequantize, dot with Q8_0 |
//! | IQ4_XS | 256 | 136 | quantize (importance optional), dequantize, dot with Q8_K |
//! | TQ1_0, TQ2_0 | 256 | 54, 66 | reference quantize, dequantize, dot with Q8_K |
//! | MXFP4 | 32 | 17 | reference quantize, dequantize, dot with Q8_0 |
//! | NVFP4 | 64 | 36 | reference quantize, dequantize, dot with Q8_0 |
//! | IQ2_XXS, IQ2_XS, IQ2_S, IQ3_XXS, IQ3_S, IQ1_S, IQ1_M | 256 | 66, 74, 82, 98, 110, 50, 56 | dequantize, dot with Q8_K |
//!
//! Why bit-exact: a GGUF written here must be byte-identical to what
//! `llama-quantize` writes from the same input, and a dequantized tensor must
//! be what llama.cpp computes. So every function below is a line-by-line
//! port: one IEEE binary32 operation at a time, in ggml's order, no fused
//! multiply-add, C's truncating `(int)` casts, `roundf` as [`f32::round`], and
//! ggml's `nearest_int`. The grid quantizers (IQ2/IQ3/IQ1) need ggml's
//! importance-matrix search machinery and are not provided; their
//! dequantizers and dot products are, with the lookup tables in [`grids`].
//!
//! Every public function checks its buffer lengths and returns
//! [`QuantError`] instead of panicking; quantizers reject NaN and infinite
//! inputs and importance weights. The dot products take their partner
//! (`Q8_0` / `Q8_K`) blocks as raw little-endian bytes (34 / 292 bytes per
//! block), so that this module does not depend on those block types.

use weightkit_core::DType;

use crate::QuantError;
use crate::common;

mod fp4;
pub mod grids;
mod iq4;
mod iqgrid;
mod ternary;

pub(crate) use fp4::mxfp4_exponent;
pub use fp4::{
    BlockMxfp4, BlockNvfp4, dequantize_row_mxfp4, dequantize_row_nvfp4, e8m0_to_fp32_half,
    fp32_to_ue4m3, quantize_mxfp4, quantize_nvfp4, quantize_row_mxfp4_ref, quantize_row_nvfp4_ref,
    ue4m3_to_fp32, vec_dot_mxfp4_q8_0, vec_dot_nvfp4_q8_0,
};
pub use iq4::{
    BlockIq4Nl, BlockIq4Xs, dequantize_row_iq4_nl, dequantize_row_iq4_xs, quantize_iq4_nl,
    quantize_iq4_xs, quantize_row_iq4_nl_ref, quantize_row_iq4_xs_ref, vec_dot_iq4_nl_q8_0,
    vec_dot_iq4_xs_q8_k,
};
pub use iqgrid::{
    BlockIq1M, BlockIq1S, BlockIq2S, BlockIq2Xs, BlockIq2Xxs, BlockIq3S, BlockIq3Xxs,
    dequantize_row_iq1_m, dequantize_row_iq1_s, dequantize_row_iq2_s, dequantize_row_iq2_xs,
    dequantize_row_iq2_xxs, dequantize_row_iq3_s, dequantize_row_iq3_xxs, vec_dot_iq1_m_q8_k,
    vec_dot_iq1_s_q8_k, vec_dot_iq2_s_q8_k, vec_dot_iq2_xs_q8_k, vec_dot_iq2_xxs_q8_k,
    vec_dot_iq3_s_q8_k, vec_dot_iq3_xxs_q8_k,
};
pub(crate) use iqgrid::{iq1_m_group, iq1_m_scales};
pub use ternary::{
    BlockTq1_0, BlockTq2_0, dequantize_row_tq1_0, dequantize_row_tq2_0, quantize_row_tq1_0_ref,
    quantize_row_tq2_0_ref, quantize_tq1_0, quantize_tq2_0, vec_dot_tq1_0_q8_k, vec_dot_tq2_0_q8_k,
};

/// ggml's `QK_K`: elements per super-block.
const QK_K: usize = 256;
/// Bytes of one `block_q8_0` (f16 d + 32 i8).
pub(crate) const Q8_0_BYTES: usize = 34;
/// Bytes of one `block_q8_K` (f32 d + 256 i8 + 16 i16 bsums).
pub(crate) const Q8_K_BYTES: usize = 292;

/// ggml's `nearest_int` for any input: [`common::nearest_int`] where it is
/// defined, else the same bit trick without its range assertion (what the C
/// code computes for an out-of-range or NaN value), so that adversarial
/// inputs cannot panic.
#[inline]
pub(crate) fn nearest_int(fval: f32) -> i32 {
    if fval.abs() <= 4_194_303.0 {
        common::nearest_int(fval)
    } else {
        let val = fval + 12_582_912.0;
        let i = val.to_bits() as i32;
        (i & 0x007f_ffff) - 0x0040_0000
    }
}

/// Checks the arguments of a row-wise quantizer (`quantize_<type>(src, dst,
/// nrow, n_per_row, imatrix)` in ggml) and returns the number of rows.
pub(crate) fn check_quantize(
    dtype: DType,
    block: usize,
    src: &[f32],
    dst_len: usize,
    n_per_row: usize,
    imatrix: Option<&[f32]>,
) -> Result<usize, QuantError> {
    if !n_per_row.is_multiple_of(block) {
        return Err(QuantError::RowNotBlockMultiple {
            dtype,
            n: n_per_row,
            block,
        });
    }
    let nrow = if n_per_row == 0 {
        if !src.is_empty() {
            return Err(QuantError::BufferLength {
                what: "src",
                expected: 0,
                found: src.len(),
                unit: "elements",
            });
        }
        0
    } else {
        if !src.len().is_multiple_of(n_per_row) {
            return Err(QuantError::BufferLength {
                what: "src (whole rows of n_per_row)",
                expected: src.len() - src.len() % n_per_row,
                found: src.len(),
                unit: "elements",
            });
        }
        src.len() / n_per_row
    };
    let blocks = src.len() / block;
    if dst_len != blocks {
        return Err(QuantError::BufferLength {
            what: "dst",
            expected: blocks,
            found: dst_len,
            unit: "blocks",
        });
    }
    if let Some(w) = imatrix {
        if w.len() != n_per_row {
            return Err(QuantError::BufferLength {
                what: "imatrix",
                expected: n_per_row,
                found: w.len(),
                unit: "elements",
            });
        }
        crate::common::check_importance(w)?;
    }
    check_finite(src)?;
    Ok(nrow)
}

/// Checks a `quantize_row_<type>_ref(x, y)` call: `x` whole blocks, `y` one
/// block per 'block' elements.
pub(crate) fn check_ref(
    dtype: DType,
    block: usize,
    x: &[f32],
    y_len: usize,
) -> Result<(), QuantError> {
    if !x.len().is_multiple_of(block) {
        return Err(QuantError::RowNotBlockMultiple {
            dtype,
            n: x.len(),
            block,
        });
    }
    if y_len != x.len() / block {
        return Err(QuantError::BufferLength {
            what: "y",
            expected: x.len() / block,
            found: y_len,
            unit: "blocks",
        });
    }
    check_finite(x)
}

/// Checks a dequantizer call: `y` holds exactly `nblocks * block` values.
pub(crate) fn check_dequantize(
    nblocks: usize,
    block: usize,
    y_len: usize,
) -> Result<(), QuantError> {
    let expected = nblocks.checked_mul(block).ok_or(QuantError::BufferLength {
        what: "y",
        expected: usize::MAX,
        found: y_len,
        unit: "elements",
    })?;
    if y_len != expected {
        return Err(QuantError::BufferLength {
            what: "y",
            expected,
            found: y_len,
            unit: "elements",
        });
    }
    Ok(())
}

/// Checks a dot product's partner buffer: `bytes_per_block` bytes per block.
pub(crate) fn check_partner(
    what: &'static str,
    nblocks: usize,
    bytes_per_block: usize,
    y_len: usize,
) -> Result<(), QuantError> {
    let expected = nblocks
        .checked_mul(bytes_per_block)
        .ok_or(QuantError::BufferLength {
            what,
            expected: usize::MAX,
            found: y_len,
            unit: "bytes",
        })?;
    if y_len != expected {
        return Err(QuantError::BufferLength {
            what,
            expected,
            found: y_len,
            unit: "bytes",
        });
    }
    Ok(())
}

fn check_finite(x: &[f32]) -> Result<(), QuantError> {
    match crate::common::first_non_finite(x) {
        Some(index) => Err(QuantError::NonFiniteInput {
            index,
            value: x[index],
        }),
        None => Ok(()),
    }
}

/// A `block_q8_0` read from its 34 little-endian bytes.
#[derive(Clone, Copy)]
pub(crate) struct Q8_0<'a> {
    pub(crate) d: f32,
    pub(crate) qs: &'a [u8],
}

impl<'a> Q8_0<'a> {
    /// `b` is exactly one block (callers slice with `chunks_exact`).
    #[inline]
    pub(crate) fn parse(b: &'a [u8]) -> Self {
        let d = common::fp16_to_fp32(half::f16::from_bits(u16::from_le_bytes([b[0], b[1]])));
        Q8_0 {
            d,
            qs: &b[2..Q8_0_BYTES],
        }
    }

    #[inline]
    pub(crate) fn q(&self, j: usize) -> i32 {
        i32::from(self.qs[j] as i8)
    }
}

/// A `block_q8_K` read from its 292 little-endian bytes.
#[derive(Clone, Copy)]
struct Q8K<'a> {
    d: f32,
    qs: &'a [u8],
    /// The 16 little-endian `i16` sums of 16 quants each, as stored (the
    /// IQ1_S dot reads them instead of summing the quants).
    bsums: &'a [u8],
}

impl<'a> Q8K<'a> {
    /// `b` is exactly one block (callers slice with `chunks_exact`).
    #[inline]
    fn parse(b: &'a [u8]) -> Self {
        let d = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
        Q8K {
            d,
            qs: &b[4..4 + QK_K],
            bsums: &b[4 + QK_K..Q8_K_BYTES],
        }
    }

    #[inline]
    fn q(&self, j: usize) -> i32 {
        i32::from(self.qs[j] as i8)
    }

    /// Stored block sum `k` (of quants `16 k .. 16 k + 16`), `k < 16`.
    #[inline]
    fn bsum(&self, k: usize) -> i32 {
        i32::from(i16::from_le_bytes([
            self.bsums[2 * k],
            self.bsums[2 * k + 1],
        ]))
    }
}
