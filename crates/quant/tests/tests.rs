//! Integration tests for weightkit-quant (one binary, modules per area).
//! References: llama.cpp's own quantized bytes and dequantized floats in
//! `testdata/ggml-reference/` (see its README), and gguf-py's in `testdata/gguf/`.
mod api;
mod iquants;
mod kquants;
mod legacy;
mod q1q2;
mod simd;
mod simd_avx2dots;
mod simd_avx2exact;
mod simd_avx2legacy;
mod simd_dots1;
mod simd_dots2;
mod simd_float;
mod simd_floatdot;
mod simd_fp4;
mod simd_iq4;
mod simd_iq4q;
mod simd_iq4vnni;
mod simd_iqdeq;
mod simd_iqdot;
mod simd_q12;
mod simd_tern;
