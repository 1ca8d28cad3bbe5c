//! # weightkit-quant
//!
//! ggml's block quantization formats, bit-exact with llama.cpp.
//!
//! - [`legacy`] (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q8_1, Q1_0, Q2_0), [`kquants`] (Q2_K ..
//!   Q6_K, Q8_K) and [`iquants`] (IQ4_NL, IQ4_XS, TQ1_0, TQ2_0, MXFP4, NVFP4;
//!   dequantizers for the IQ2/IQ3/IQ1 grid types): `#[repr(C)]` block types
//!   with compile-time size checks and scalar reference quantizers,
//!   dequantizers and dot products ported operation for operation from
//!   `ggml-quants.c` (plain f32 arithmetic, no FMA, ggml's rounding), so the
//!   bytes equal llama.cpp's for the same input, with and without an
//!   importance matrix.
//! - [`api`]: the byte-level entry points by [`weightkit_core::DType`]:
//!   [`quantize`], [`dequantize`], [`vec_dot`], [`matvec`], with row-parallel
//!   drivers whose output is identical to the serial one.
//! - [`simd`]: run-time selection of SIMD kernels (AVX2 / AVX-512 on
//!   x86_64), each tested against its scalar reference; `WEIGHTKIT_SIMD=scalar`
//!   forces the reference path.
//!
//! ```
//! use weightkit_core::DType;
//! let x: Vec<f32> = (0..256).map(|i| (i as f32 * 0.1).sin()).collect();
//! let q = weightkit_quant::quantize(DType::Q4_K, &x, 256, None)?;
//! assert_eq!(q.len(), 144);
//! let mut y = vec![0f32; 256];
//! weightkit_quant::dequantize(DType::Q4_K, &q, &mut y)?;
//! // 4 bits per value over [-1, 1]: at most half a step (2/15 / 2) off.
//! assert!(x.iter().zip(&y).all(|(a, b)| (a - b).abs() <= 1.0 / 15.0 + 1e-3));
//! # Ok::<(), weightkit_quant::QuantError>(())
//! ```
#![deny(missing_docs)]

pub mod api;
pub mod common;
mod error;
pub mod floats;
pub mod iquants;
pub mod kquants;
mod lanes;
pub mod legacy;
pub mod simd;

pub use api::{
    VecDotFn, can_dequantize, can_quantize, dequantize, dequantize_parallel, matvec, quantize,
    quantize_into, quantize_into_parallel, row_size, uses_importance, vec_dot, vec_dot_fn,
    vec_dot_fn_at, vec_dot_type,
};
pub use error::QuantError;
