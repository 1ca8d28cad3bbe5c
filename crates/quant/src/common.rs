//! Helpers every block format uses, written to reproduce ggml's arithmetic
//! exactly (ggml-base is compiled without FMA and without fast-math, so each
//! operation here is one IEEE binary32 operation in ggml's order).

use half::f16;

/// ggml's `nearest_int`: round to nearest, ties to even, through the
/// 1.5 * 2^23 trick. Exact for `|x| <= 4194303`; outside that range (and for
/// NaN) it returns what ggml's release build returns, since ggml's assert is
/// compiled out there and its scale searches do reach such values.
#[inline]
pub fn nearest_int(fval: f32) -> i32 {
    let val = fval + 12_582_912.0;
    let i = val.to_bits() as i32;
    (i & 0x007f_ffff) - 0x0040_0000
}

/// f32 -> f16 bits, round to nearest even (ggml's software conversion).
#[inline]
pub fn fp32_to_fp16(x: f32) -> f16 {
    f16::from_f32(x)
}

/// f16 -> f32 (exact).
#[inline]
pub fn fp16_to_fp32(h: f16) -> f32 {
    h.to_f32()
}

/// Index of the first NaN or infinity in `x`. Scans 64-value chunks with
/// a branch-free (vectorisable) test and only searches inside a chunk that
/// has one, so the check costs a fraction of any quantizer.
#[inline]
pub fn first_non_finite(x: &[f32]) -> Option<usize> {
    const EXP: u32 = 0x7f80_0000;
    for (c, chunk) in x.chunks(64).enumerate() {
        let bad = chunk
            .iter()
            .fold(0u32, |acc, v| acc | u32::from(v.to_bits() & EXP == EXP));
        if bad != 0 {
            return chunk
                .iter()
                .position(|v| !v.is_finite())
                .map(|i| c * 64 + i);
        }
    }
    None
}

/// Index of the first importance weight that is not finite and `>= 0`
/// (NaN, an infinity, or a negative value; `-0.0` is accepted, as
/// `-0.0 >= 0.0`). Scans 64-value chunks with a branch-free test on the
/// bits, as [`first_non_finite`].
#[inline]
pub fn first_invalid_importance(w: &[f32]) -> Option<usize> {
    const EXP: u32 = 0x7f80_0000;
    // Exponent all ones (NaN, infinity), or the sign set on a nonzero
    // magnitude (negative, or a negative NaN).
    let bad = |v: &f32| {
        let b = v.to_bits();
        u32::from(b & EXP == EXP) | u32::from(b > 0x8000_0000)
    };
    for (c, chunk) in w.chunks(64).enumerate() {
        if chunk.iter().fold(0u32, |acc, v| acc | bad(v)) != 0 {
            return chunk.iter().position(|v| bad(v) != 0).map(|i| c * 64 + i);
        }
    }
    None
}

/// [`QuantError::InvalidImportance`] for the first invalid weight of `w`
/// (see [`first_invalid_importance`]).
pub(crate) fn check_importance(w: &[f32]) -> Result<(), crate::QuantError> {
    match first_invalid_importance(w) {
        Some(index) => Err(crate::QuantError::InvalidImportance {
            index,
            value: w[index],
        }),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn importance_checks_match_the_definition() {
        let specials = [
            0.0,
            -0.0,
            1.0,
            -1.0,
            f32::MIN_POSITIVE,
            -f32::from_bits(1),
            f32::from_bits(1),
            f32::MAX,
            f32::INFINITY,
            f32::NEG_INFINITY,
            f32::NAN,
            -f32::NAN,
        ];
        for &v in &specials {
            let mut w = vec![0.5f32; 200];
            w[130] = v;
            let want = (!(v.is_finite() && v >= 0.0)).then_some(130);
            assert_eq!(first_invalid_importance(&w), want, "{v:?}");
        }
        assert_eq!(first_invalid_importance(&[]), None);
    }

    #[test]
    fn first_non_finite_finds_the_first() {
        let mut x = vec![1.0f32; 300];
        assert_eq!(first_non_finite(&x), None);
        x[200] = f32::NAN;
        x[250] = f32::INFINITY;
        assert_eq!(first_non_finite(&x), Some(200));
        x[3] = f32::NEG_INFINITY;
        assert_eq!(first_non_finite(&x), Some(3));
        assert_eq!(first_non_finite(&[f32::MAX, f32::MIN_POSITIVE, -0.0]), None);
    }

    #[test]
    fn nearest_int_is_round_half_even() {
        for (x, want) in [
            (0.5f32, 0),
            (1.5, 2),
            (2.5, 2),
            (-0.5, 0),
            (-1.5, -2),
            (3.49, 3),
            (-7.51, -8),
        ] {
            assert_eq!(nearest_int(x), want, "{x}");
        }
        for i in -100_000..100_000 {
            let x = i as f32 * 0.37;
            assert_eq!(nearest_int(x), x.round_ties_even() as i32, "{x}");
        }
    }
}
