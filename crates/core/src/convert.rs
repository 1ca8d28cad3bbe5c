//! Bulk conversion between f32 and the 16-bit float formats, and byte-level
//! decoding of any plain dtype to f32.
//!
//! Inputs are little-endian byte slices with no alignment requirement: an
//! mmap'd file gives no alignment guarantee for a tensor's data. Work proceeds
//! in cache-sized chunks through aligned stack buffers, so the f16 path can use
//! `half`'s runtime-dispatched F16C kernels and the bf16 path compiles to
//! plain vector shifts.
//!
//! Rounding: f32 -> f16 and f32 -> bf16 round to nearest, ties to even (as
//! PyTorch's `.to(torch.bfloat16)` and numpy do). NaN stays NaN (bf16 keeps
//! the sign and top payload bits and sets the quiet bit).

use half::{bf16, f16};

use crate::dtype::DType;
use crate::error::CoreError;

const CHUNK: usize = 1024;

/// Rounds an f32 to bf16 bits, nearest-even; NaN is quieted, never turned
/// into infinity.
#[inline]
pub fn f32_to_bf16_bits(x: f32) -> u16 {
    let bits = x.to_bits();
    if bits & 0x7fff_ffff > 0x7f80_0000 {
        return ((bits >> 16) | 0x0040) as u16;
    }
    // Cannot overflow: the largest non-NaN pattern is 0xff80_0000.
    let rounded = bits + 0x7fff + ((bits >> 16) & 1);
    (rounded >> 16) as u16
}

/// Widens bf16 bits to f32 (exact).
#[inline]
pub fn bf16_bits_to_f32(b: u16) -> f32 {
    f32::from_bits(u32::from(b) << 16)
}

/// Widens f16 values to f32 (exact). `dst.len()` must equal `src.len()`.
pub fn f16_to_f32(src: &[f16], dst: &mut [f32]) {
    use half::slice::HalfFloatSliceExt;
    let n = src.len().min(dst.len());
    src[..n].convert_to_f32_slice(&mut dst[..n]);
}

/// Rounds f32 values to f16, nearest-even. Lengths must match.
pub fn f32_to_f16(src: &[f32], dst: &mut [f16]) {
    use half::slice::HalfFloatSliceExt;
    let n = src.len().min(dst.len());
    dst[..n].convert_from_f32_slice(&src[..n]);
}

/// Widens bf16 values to f32 (exact). Lengths must match.
pub fn bf16_to_f32(src: &[bf16], dst: &mut [f32]) {
    for (d, s) in dst.iter_mut().zip(src) {
        *d = bf16_bits_to_f32(s.to_bits());
    }
}

/// Rounds f32 values to bf16, nearest-even. Lengths must match.
pub fn f32_to_bf16(src: &[f32], dst: &mut [bf16]) {
    for (d, s) in dst.iter_mut().zip(src) {
        *d = bf16::from_bits(f32_to_bf16_bits(*s));
    }
}

/// Narrows f64 to f32 rounding to odd: an inexact result gets its lowest
/// mantissa bit set. Rounding that to any format at least two bits narrower
/// (f16, bf16) then equals rounding the f64 directly, which a plain f32
/// intermediate does not (double rounding).
fn f64_to_f32_round_odd(x: f64) -> f32 {
    #[allow(clippy::cast_possible_truncation)]
    let y = x as f32;
    if y.is_nan() || f64::from(y) == x {
        return y;
    }
    let mut bits = y.to_bits();
    if f64::from(y).abs() > x.abs() {
        // Step toward zero: sign-magnitude, so one less in the magnitude.
        bits -= 1;
    }
    f32::from_bits(bits | 1)
}

fn check_len(dtype: DType, bytes: usize, elems: usize) -> Result<usize, CoreError> {
    let size = dtype
        .size_in_bytes()
        .ok_or(CoreError::UnsupportedConversion {
            from: dtype,
            to: DType::F32,
        })?;
    let expected = elems.checked_mul(size).ok_or(CoreError::Overflow)?;
    if expected != bytes {
        return Err(CoreError::LengthMismatch {
            name: String::new(),
            dtype,
            shape: crate::Shape::new([elems]),
            expected,
            found: bytes,
        });
    }
    Ok(size)
}

/// Decodes little-endian `src` of `dtype` into f32 values.
///
/// Supports the floats (F32, F16, BF16, F64, rounding F64 to nearest) and the
/// integer and bool types (converted as `as f32` would). `dst.len()` is the
/// element count; `src` must hold exactly that many elements.
pub fn decode_f32(dtype: DType, src: &[u8], dst: &mut [f32]) -> Result<(), CoreError> {
    let size = check_len(dtype, src.len(), dst.len())?;
    macro_rules! each {
        ($n:literal, |$b:ident| $e:expr) => {
            for (d, c) in dst.iter_mut().zip(src.chunks_exact($n)) {
                let $b: [u8; $n] = [0; $n];
                let mut $b = $b;
                $b.copy_from_slice(c);
                *d = $e;
            }
        };
    }
    match dtype {
        DType::F32 => each!(4, |b| f32::from_le_bytes(b)),
        DType::F16 => {
            let mut buf = [f16::ZERO; CHUNK];
            for (d, s) in dst.chunks_mut(CHUNK).zip(src.chunks(CHUNK * 2)) {
                let n = d.len();
                for (h, c) in buf[..n].iter_mut().zip(s.chunks_exact(2)) {
                    *h = f16::from_bits(u16::from_le_bytes([c[0], c[1]]));
                }
                f16_to_f32(&buf[..n], d);
            }
        }
        DType::BF16 => each!(2, |b| bf16_bits_to_f32(u16::from_le_bytes(b))),
        #[allow(clippy::cast_possible_truncation)]
        DType::F64 => each!(8, |b| f64::from_le_bytes(b) as f32),
        DType::I8 => each!(1, |b| f32::from(i8::from_le_bytes(b))),
        DType::U8 | DType::Bool => each!(1, |b| f32::from(b[0])),
        DType::I16 => each!(2, |b| f32::from(i16::from_le_bytes(b))),
        DType::U16 => each!(2, |b| f32::from(u16::from_le_bytes(b))),
        #[allow(clippy::cast_precision_loss)]
        DType::I32 => each!(4, |b| i32::from_le_bytes(b) as f32),
        #[allow(clippy::cast_precision_loss)]
        DType::U32 => each!(4, |b| u32::from_le_bytes(b) as f32),
        #[allow(clippy::cast_precision_loss)]
        DType::I64 => each!(8, |b| i64::from_le_bytes(b) as f32),
        #[allow(clippy::cast_precision_loss)]
        DType::U64 => each!(8, |b| u64::from_le_bytes(b) as f32),
        _ => {
            return Err(CoreError::UnsupportedConversion {
                from: dtype,
                to: DType::F32,
            });
        }
    }
    debug_assert!(size > 0);
    Ok(())
}

/// Encodes f32 values as little-endian `dtype` bytes (F32, F16, BF16 with
/// nearest-even rounding; F64 exactly). `dst` must hold exactly
/// `src.len()` elements.
pub fn encode_f32(dtype: DType, src: &[f32], dst: &mut [u8]) -> Result<(), CoreError> {
    check_len(dtype, dst.len(), src.len())?;
    match dtype {
        DType::F32 => {
            for (c, s) in dst.chunks_exact_mut(4).zip(src) {
                c.copy_from_slice(&s.to_le_bytes());
            }
        }
        DType::F16 => {
            let mut buf = [f16::ZERO; CHUNK];
            for (s, d) in src.chunks(CHUNK).zip(dst.chunks_mut(CHUNK * 2)) {
                let n = s.len();
                f32_to_f16(s, &mut buf[..n]);
                for (c, h) in d.chunks_exact_mut(2).zip(&buf[..n]) {
                    c.copy_from_slice(&h.to_bits().to_le_bytes());
                }
            }
        }
        DType::BF16 => {
            for (c, s) in dst.chunks_exact_mut(2).zip(src) {
                c.copy_from_slice(&f32_to_bf16_bits(*s).to_le_bytes());
            }
        }
        DType::F64 => {
            for (c, s) in dst.chunks_exact_mut(8).zip(src) {
                c.copy_from_slice(&f64::from(*s).to_le_bytes());
            }
        }
        _ => {
            return Err(CoreError::UnsupportedConversion {
                from: DType::F32,
                to: dtype,
            });
        }
    }
    Ok(())
}

/// Converts little-endian float bytes between F32, F16, BF16 and F64,
/// rounding once to nearest-even (F64 sources round directly to the target,
/// never through f32). Same-dtype conversion is a copy.
pub fn cast_bytes(from: DType, src: &[u8], to: DType) -> Result<Vec<u8>, CoreError> {
    let unsupported = || CoreError::UnsupportedConversion { from, to };
    if !from.is_float() || !to.is_float() {
        return Err(unsupported());
    }
    if from == to {
        return Ok(src.to_vec());
    }
    let from_size = from.size_in_bytes().ok_or_else(unsupported)?;
    let to_size = to.size_in_bytes().ok_or_else(unsupported)?;
    if !src.len().is_multiple_of(from_size) {
        return Err(CoreError::NotWholeBytes {
            dtype: from,
            elems: src.len(),
        });
    }
    let n = src.len() / from_size;
    let mut out = vec![0u8; n.checked_mul(to_size).ok_or(CoreError::Overflow)?];
    if from == DType::F64 {
        for (c, o) in src.chunks_exact(8).zip(out.chunks_exact_mut(to_size)) {
            let mut b = [0u8; 8];
            b.copy_from_slice(c);
            let x = f64::from_le_bytes(b);
            match to {
                DType::F16 => {
                    let h = f16::from_f32(f64_to_f32_round_odd(x));
                    o.copy_from_slice(&h.to_bits().to_le_bytes());
                }
                DType::BF16 => {
                    let b = f32_to_bf16_bits(f64_to_f32_round_odd(x));
                    o.copy_from_slice(&b.to_le_bytes());
                }
                #[allow(clippy::cast_possible_truncation)]
                _ => o.copy_from_slice(&(x as f32).to_le_bytes()),
            }
        }
        return Ok(out);
    }
    let mut buf = [0f32; CHUNK];
    for (s, d) in src
        .chunks(CHUNK * from_size)
        .zip(out.chunks_mut(CHUNK * to_size))
    {
        let k = s.len() / from_size;
        decode_f32(from, s, &mut buf[..k])?;
        encode_f32(to, &buf[..k], d)?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bf16_rounding_matches_half() {
        // `half`'s scalar conversion is an independent RNE implementation.
        let specials = [
            0.0f32,
            -0.0,
            1.0,
            f32::MAX,
            f32::MIN,
            f32::MIN_POSITIVE,
            1e-45,
            f32::INFINITY,
            f32::NEG_INFINITY,
            f32::from_bits(0x3f80_8000), // exact tie, even below
            f32::from_bits(0x3f81_8000), // exact tie, odd below
            f32::from_bits(0x7f7f_ffff),
        ];
        for x in specials {
            assert_eq!(f32_to_bf16_bits(x), bf16::from_f32(x).to_bits(), "{x:e}");
        }
        assert_eq!(f32_to_bf16_bits(f32::from_bits(0x3f80_8000)), 0x3f80);
        assert_eq!(f32_to_bf16_bits(f32::from_bits(0x3f81_8000)), 0x3f82);
        assert!(bf16_bits_to_f32(f32_to_bf16_bits(f32::NAN)).is_nan());
        assert!(bf16_bits_to_f32(f32_to_bf16_bits(f32::from_bits(0x7f80_0001))).is_nan());
        let mut s: u32 = 12345;
        for _ in 0..200_000 {
            s = s.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            let x = f32::from_bits(s);
            if x.is_nan() {
                continue;
            }
            assert_eq!(f32_to_bf16_bits(x), bf16::from_f32(x).to_bits(), "{s:#x}");
        }
    }

    #[test]
    fn f16_round_trip_every_pattern() {
        let all: Vec<u16> = (0..=u16::MAX).collect();
        let bytes: Vec<u8> = all.iter().flat_map(|b| b.to_le_bytes()).collect();
        let mut wide = vec![0f32; all.len()];
        decode_f32(DType::F16, &bytes, &mut wide).unwrap();
        for (b, w) in all.iter().zip(&wide) {
            let h = f16::from_bits(*b);
            if h.is_nan() {
                assert!(w.is_nan());
            } else {
                assert_eq!(w.to_bits(), f32::from(h).to_bits());
            }
        }
        let mut back = vec![0u8; bytes.len()];
        encode_f32(DType::F16, &wide, &mut back).unwrap();
        for (i, (a, b)) in bytes.chunks(2).zip(back.chunks(2)).enumerate() {
            if !f16::from_bits(all[i]).is_nan() {
                assert_eq!(a, b, "pattern {i:#x}");
            }
        }
    }

    #[test]
    fn unaligned_decode() {
        let vals = [1.5f32, -2.25, 3.0];
        let mut bytes = vec![0u8];
        for v in vals {
            bytes.extend_from_slice(&v.to_le_bytes());
        }
        let mut out = [0f32; 3];
        decode_f32(DType::F32, &bytes[1..], &mut out).unwrap();
        assert_eq!(out, vals);
    }

    #[test]
    fn cast_f64_rounds_once() {
        // 1 + 2^-11 + 2^-40 rounds up to 1 + 2^-10 in f16 directly, but the
        // f32 intermediate would drop the 2^-40 and tie to even (1.0).
        let x = 1.0f64 + 2f64.powi(-11) + 2f64.powi(-40);
        let out = cast_bytes(DType::F64, &x.to_le_bytes(), DType::F16).unwrap();
        assert_eq!(
            f16::from_bits(u16::from_le_bytes([out[0], out[1]])).to_f64(),
            1.0 + 2f64.powi(-10)
        );
    }

    #[test]
    fn cast_f64_exhaustive_against_exact_rounding() {
        // Independent reference: pick the nearer of the two f16 neighbours in
        // f64 arithmetic (exact for these magnitudes), ties to even.
        let mut s: u64 = 7;
        for _ in 0..100_000 {
            s = s
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            // Exponents 2^-26 .. 2^15: f16 subnormals, normals, near overflow.
            let exp = 0x3e5 + (s >> 56) % 42;
            let x = f64::from_bits((exp << 52) | (s & 0x000f_ffff_ffff_ffff))
                * if s & (1 << 55) == 0 { 1.0 } else { -1.0 };
            let out = cast_bytes(DType::F64, &x.to_le_bytes(), DType::F16).unwrap();
            let got = f16::from_bits(u16::from_le_bytes([out[0], out[1]]));
            let lo = f16::from_f32(x as f32);
            let candidates = [
                lo,
                f16::from_bits(lo.to_bits().wrapping_add(1)),
                f16::from_bits(lo.to_bits().wrapping_sub(1)),
            ];
            let best = candidates
                .iter()
                .filter(|c| !c.is_nan())
                .min_by(|a, b| {
                    // IEEE overflow: infinity rounds as if it were 2^16.
                    let v = |h: &f16| {
                        if h.is_infinite() {
                            65536f64.copysign(h.to_f64())
                        } else {
                            h.to_f64()
                        }
                    };
                    let da = (v(a) - x).abs();
                    let db = (v(b) - x).abs();
                    da.partial_cmp(&db)
                        .unwrap()
                        .then((a.to_bits() & 1).cmp(&(b.to_bits() & 1)))
                })
                .unwrap();
            assert_eq!(got.to_bits(), best.to_bits(), "x = {x:e}");
        }
    }

    #[test]
    fn errors() {
        let mut out = [0f32; 2];
        assert!(matches!(
            decode_f32(DType::F32, &[0u8; 7], &mut out),
            Err(CoreError::LengthMismatch { .. })
        ));
        assert!(matches!(
            decode_f32(DType::Q4_0, &[0u8; 8], &mut out),
            Err(CoreError::UnsupportedConversion { .. })
        ));
        assert!(cast_bytes(DType::I32, &[0; 4], DType::F32).is_err());
    }
}
