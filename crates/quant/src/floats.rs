//! F32, F16 and BF16 rows: ggml's conversions and dot products, the scalar
//! references of the SIMD kernels in [`crate::simd::dispatch`].
//!
//! Rows are little-endian bytes (what a GGUF or safetensors file holds, at
//! any alignment). ggml's own semantics:
//!
//! * f16 -> f32 and bf16 -> f32 are exact; f32 -> f16 and f32 -> bf16 round
//!   to nearest, ties to even (`ggml_cpu_fp32_to_fp16`, F16C's
//!   `vcvtps2ph`; `ggml_compute_fp32_to_bf16`). Overflow gives infinity;
//!   NaN stays NaN, quieted (bf16: the top payload bits kept, bit 6 set, as
//!   ggml; f16: F16C's and `half`'s result, the same bits).
//! * The dot products are ggml's `vec_dot_type`s: F16 rows dot F16 rows
//!   (`ggml_vec_dot_f16`), BF16 BF16 (`ggml_vec_dot_bf16`), F32 F32
//!   (`ggml_vec_dot_f32`). The scalar code here is ggml's scalar loop: each
//!   product in f32 (exact for f16 x f16; rounded as ggml rounds it for bf16
//!   and f32), summed in f64, the sum rounded to f32 at the end. SIMD
//!   versions sum in f32 lanes with FMA, as ggml's AVX2 build does, so they
//!   may differ in the last bits.

use half::f16;

use crate::QuantError;

/// Checks that a buffer of `bytes` bytes holds exactly `n` values of
/// `width` bytes (an `n` too large for any buffer never matches).
fn check_bytes(what: &'static str, bytes: usize, width: usize, n: usize) -> Result<(), QuantError> {
    crate::api::check_len(what, n.saturating_mul(width), bytes, "bytes")
}

/// Checks that `x` and `y` hold the same whole number of `width`-byte values
/// and returns that number.
fn check_pair(x: &[u8], y: &[u8], width: usize) -> Result<usize, QuantError> {
    if !x.len().is_multiple_of(width) {
        return Err(QuantError::BufferLength {
            what: "x",
            expected: x.len() / width * width,
            found: x.len(),
            unit: "bytes",
        });
    }
    let n = x.len() / width;
    check_bytes("y", y.len(), width, n)?;
    Ok(n)
}

/// f16 bits -> f32 (exact).
#[inline]
pub fn f16_bits_to_f32(bits: u16) -> f32 {
    f16::from_bits(bits).to_f32()
}

/// f32 -> f16 bits, nearest even.
#[inline]
pub fn f32_to_f16_bits(x: f32) -> u16 {
    f16::from_f32(x).to_bits()
}

/// bf16 bits -> f32 (exact).
#[inline]
pub fn bf16_bits_to_f32(bits: u16) -> f32 {
    f32::from_bits(u32::from(bits) << 16)
}

/// f32 -> bf16 bits as ggml's `ggml_compute_fp32_to_bf16`: nearest even,
/// NaN quieted (top payload bits kept, bit 6 set), never turned into
/// infinity.
#[inline]
pub fn f32_to_bf16_bits(x: f32) -> u16 {
    let u = x.to_bits();
    if u & 0x7fff_ffff > 0x7f80_0000 {
        return ((u >> 16) | 64) as u16;
    }
    // Cannot overflow: the largest non-NaN pattern is 0xff80_0000.
    ((u + (0x7fff + ((u >> 16) & 1))) >> 16) as u16
}

fn u16_at(c: &[u8]) -> u16 {
    u16::from_le_bytes([c[0], c[1]])
}

/// Widens a row of f16 (`2 * y.len()` bytes) to f32, exactly.
///
/// # Errors
/// [`QuantError::BufferLength`] unless `x.len() == 2 * y.len()`.
pub fn dequantize_row_f16(x: &[u8], y: &mut [f32]) -> Result<(), QuantError> {
    check_bytes("source", x.len(), 2, y.len())?;
    for (d, c) in y.iter_mut().zip(x.chunks_exact(2)) {
        *d = f16_bits_to_f32(u16_at(c));
    }
    Ok(())
}

/// Widens a row of bf16 (`2 * y.len()` bytes) to f32, exactly.
///
/// # Errors
/// [`QuantError::BufferLength`] unless `x.len() == 2 * y.len()`.
pub fn dequantize_row_bf16(x: &[u8], y: &mut [f32]) -> Result<(), QuantError> {
    check_bytes("source", x.len(), 2, y.len())?;
    for (d, c) in y.iter_mut().zip(x.chunks_exact(2)) {
        *d = bf16_bits_to_f32(u16_at(c));
    }
    Ok(())
}

/// Rounds a row of f32 to f16 (`2 * x.len()` bytes), nearest even.
///
/// # Errors
/// [`QuantError::BufferLength`] unless `y.len() == 2 * x.len()`.
pub fn quantize_row_f16(x: &[f32], y: &mut [u8]) -> Result<(), QuantError> {
    check_bytes("destination", y.len(), 2, x.len())?;
    for (c, v) in y.chunks_exact_mut(2).zip(x) {
        c.copy_from_slice(&f32_to_f16_bits(*v).to_le_bytes());
    }
    Ok(())
}

/// Rounds a row of f32 to bf16 (`2 * x.len()` bytes) as ggml does.
///
/// # Errors
/// [`QuantError::BufferLength`] unless `y.len() == 2 * x.len()`.
pub fn quantize_row_bf16(x: &[f32], y: &mut [u8]) -> Result<(), QuantError> {
    check_bytes("destination", y.len(), 2, x.len())?;
    for (c, v) in y.chunks_exact_mut(2).zip(x) {
        c.copy_from_slice(&f32_to_bf16_bits(*v).to_le_bytes());
    }
    Ok(())
}

/// Sums `f(x_i, y_i)` (each an f32 product) in f64, as ggml's scalar loops,
/// over values of `width` bytes, from +0.0 as ggml's `sumf = 0.0` (Rust's
/// `Sum` starts at -0.0, which would make an all -0.0 row's dot -0.0).
#[inline]
fn dot_f64(x: &[u8], y: &[u8], width: usize, f: impl Fn(&[u8], &[u8]) -> f32) -> f32 {
    let s = x
        .chunks_exact(width)
        .zip(y.chunks_exact(width))
        .fold(0.0f64, |s, (a, b)| s + f64::from(f(a, b)));
    s as f32
}

/// `ggml_vec_dot_f16`: two f16 rows (bytes), each product exact in f32,
/// summed in f64.
///
/// # Errors
/// [`QuantError::BufferLength`] unless both rows hold as many values.
pub fn vec_dot_f16(x: &[u8], y: &[u8]) -> Result<f32, QuantError> {
    check_pair(x, y, 2)?;
    Ok(dot_f64(x, y, 2, |a, b| {
        f16_bits_to_f32(u16_at(a)) * f16_bits_to_f32(u16_at(b))
    }))
}

/// `ggml_vec_dot_bf16`: two bf16 rows (bytes), each product rounded to f32
/// as ggml computes it, summed in f64.
///
/// # Errors
/// [`QuantError::BufferLength`] unless both rows hold as many values.
pub fn vec_dot_bf16(x: &[u8], y: &[u8]) -> Result<f32, QuantError> {
    check_pair(x, y, 2)?;
    Ok(dot_f64(x, y, 2, |a, b| {
        bf16_bits_to_f32(u16_at(a)) * bf16_bits_to_f32(u16_at(b))
    }))
}

/// `ggml_vec_dot_f32`: two f32 rows (bytes), each product rounded to f32,
/// summed in f64.
///
/// # Errors
/// [`QuantError::BufferLength`] unless both rows hold as many values.
pub fn vec_dot_f32(x: &[u8], y: &[u8]) -> Result<f32, QuantError> {
    check_pair(x, y, 4)?;
    Ok(dot_f64(x, y, 4, |a, b| {
        f32::from_le_bytes([a[0], a[1], a[2], a[3]]) * f32::from_le_bytes([b[0], b[1], b[2], b[3]])
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bf16_rounding_matches_ggml_cases() {
        // Ties to even, both ways; carry into the exponent; NaN quieted.
        assert_eq!(f32_to_bf16_bits(f32::from_bits(0x3f80_8000)), 0x3f80);
        assert_eq!(f32_to_bf16_bits(f32::from_bits(0x3f81_8000)), 0x3f82);
        assert_eq!(f32_to_bf16_bits(f32::from_bits(0x3f80_8001)), 0x3f81);
        assert_eq!(f32_to_bf16_bits(f32::from_bits(0x7f7f_ffff)), 0x7f80);
        assert_eq!(f32_to_bf16_bits(f32::from_bits(0x7f80_0001)), 0x7fc0);
        assert_eq!(f32_to_bf16_bits(f32::from_bits(0xff81_2345)), 0xffc1);
    }

    #[test]
    fn dots_are_exact_on_small_integers() {
        let xs: Vec<f32> = (0..37).map(|i| (i % 7) as f32 - 3.0).collect();
        let ys: Vec<f32> = (0..37).map(|i| (i % 5) as f32 * 0.5).collect();
        let want: f32 = xs.iter().zip(&ys).map(|(a, b)| a * b).sum();
        let mut h = (vec![0u8; 74], vec![0u8; 74]);
        quantize_row_f16(&xs, &mut h.0).unwrap();
        quantize_row_f16(&ys, &mut h.1).unwrap();
        assert_eq!(vec_dot_f16(&h.0, &h.1).unwrap(), want);
        quantize_row_bf16(&xs, &mut h.0).unwrap();
        quantize_row_bf16(&ys, &mut h.1).unwrap();
        assert_eq!(vec_dot_bf16(&h.0, &h.1).unwrap(), want);
        let xb: Vec<u8> = xs.iter().flat_map(|v| v.to_le_bytes()).collect();
        let yb: Vec<u8> = ys.iter().flat_map(|v| v.to_le_bytes()).collect();
        assert_eq!(vec_dot_f32(&xb, &yb).unwrap(), want);
        assert!(vec_dot_f32(&xb, &yb[4..]).is_err());
        assert!(vec_dot_f16(&h.0[1..], &h.1[1..]).is_err());
        assert!(dequantize_row_f16(&h.0, &mut [0f32; 36]).is_err());
    }
}
