//! The three output dtypes and their rounding.

use half::f16;
use weightkit_core::DType;
use weightkit_core::convert::{bf16_bits_to_f32, f32_to_bf16_bits};

use crate::error::InitError;

/// An output float type: values are produced as f32 that are exactly
/// representable in it, then encoded without further rounding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Float {
    F32,
    F16,
    BF16,
}

impl Float {
    pub(crate) fn of(dtype: DType) -> Result<Self, InitError> {
        match dtype {
            DType::F32 => Ok(Float::F32),
            DType::F16 => Ok(Float::F16),
            DType::BF16 => Ok(Float::BF16),
            other => Err(InitError::UnsupportedDType(other)),
        }
    }

    pub(crate) fn dtype(self) -> DType {
        match self {
            Float::F32 => DType::F32,
            Float::F16 => DType::F16,
            Float::BF16 => DType::BF16,
        }
    }

    /// Rounds an f32 to this type (nearest-even) and widens it back.
    #[inline(always)]
    pub(crate) fn round(self, x: f32) -> f32 {
        match self {
            Float::F32 => x,
            Float::F16 => f16::from_f32(x).to_f32(),
            Float::BF16 => bf16_bits_to_f32(f32_to_bf16_bits(x)),
        }
    }

    /// Rounds a double the way c10 does (`static_cast<float>` first, then
    /// to the 16-bit type).
    #[inline]
    pub(crate) fn round_f64(self, x: f64) -> f32 {
        self.round(x as f32)
    }

    /// Largest finite value.
    pub(crate) fn max(self) -> f64 {
        match self {
            Float::F32 => f64::from(f32::MAX),
            Float::F16 => 65504.0,
            Float::BF16 => f64::from(f32::from_bits(0x7f7f_0000)),
        }
    }
}

/// `fmaf(a, b, c)`, correctly rounded, without a libm call in the common
/// case.
///
/// Baseline x86-64 has no FMA instruction, so `f32::mul_add` calls libm's
/// software `fmaf`, which dominated torch-mode fills. The product of two
/// f32 is exact in f64, so `a * b + c` in f64 is the exact result rounded
/// once to 53 bits; rounding that to f32 is correct unless the f64 result
/// is exactly halfway between two f32 and inexact (double rounding): then
/// nudge it toward the exact value first (the method of musl's `fmaf`).
/// Results that would be subnormal in f32 take the libm path.
#[inline]
pub(crate) fn fma32(a: f32, b: f32, c: f32) -> f32 {
    if cfg!(target_feature = "fma") {
        // Built for a CPU with FMA (e.g. `-C target-cpu=x86-64-v3`): one
        // instruction.
        return a.mul_add(b, c);
    }
    let xy = f64::from(a) * f64::from(b);
    let r = xy + f64::from(c);
    let bits = r.to_bits();
    let exp = (bits >> 52) & 0x7ff;
    if exp < 1023 - 126 || exp == 0x7ff {
        // f32-subnormal, zero, tiny, infinite or NaN: let libm decide.
        return a.mul_add(b, c);
    }
    if bits & 0x1fff_ffff != 0x1000_0000 {
        return r as f32; // not a halfway case
    }
    let cz = f64::from(c);
    if r - xy == cz && r - cz == xy {
        return r as f32; // exact halfway: ties-to-even is right
    }
    // Inexact and halfway: move one f64 ulp toward the exact sum.
    let err = if (bits >> 63 == 1) == (cz > xy) {
        xy - r + cz
    } else {
        cz - r + xy
    };
    let nudged = if (bits >> 63 == 1) == (err < 0.0) {
        bits + 1
    } else {
        bits - 1
    };
    f64::from_bits(nudged) as f32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fma32_is_correctly_rounded() {
        // Against libm's fmaf on values spanning the halfway cases.
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for i in 0..2_000_000u32 {
            let r = next();
            let a = f32::from_bits((r as u32 & 0x807f_ffff) | (((r >> 32) as u32 % 60 + 97) << 23));
            let b = f32::from_bits(
                ((r >> 24) as u32 & 0x807f_ffff) | (((r >> 40) as u32 % 60 + 97) << 23),
            );
            // c near -a*b to force cancellation sometimes, else random.
            let c = if i % 3 == 0 {
                -(a * b) * (1.0 + f32::EPSILON * ((r >> 56) as f32 - 128.0))
            } else {
                f32::from_bits(
                    ((r >> 8) as u32 & 0x807f_ffff) | (((r >> 48) as u32 % 70 + 92) << 23),
                )
            };
            assert_eq!(
                fma32(a, b, c).to_bits(),
                a.mul_add(b, c).to_bits(),
                "{a:e} {b:e} {c:e}"
            );
        }
        // Hand-made halfway cases: a*b = 1 + 2^-24 + 2^-60 style.
        let a = 1.0 + f32::EPSILON;
        for c in [
            -1.0f32,
            1e-10,
            -1e-10,
            2.0f32.powi(-25),
            -(2.0f32.powi(-25)),
        ] {
            assert_eq!(fma32(a, a, c).to_bits(), a.mul_add(a, c).to_bits());
        }
    }
}
