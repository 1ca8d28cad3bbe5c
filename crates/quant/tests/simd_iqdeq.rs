//! The grid i-quant dequantizers (IQ2_XXS, IQ2_XS, IQ2_S, IQ3_XXS, IQ3_S,
//! IQ1_S, IQ1_M) at every level against the scalar references, bit for bit
//! (NaN where the reference gives NaN): random and adversarial block bytes
//! (every byte value at every position, so every sign pattern and grid
//! index; all 0x00, all 0xFF) with ordinary, extreme, subnormal, zero,
//! infinite and NaN f16 scales.

use half::f16;
use proptest::prelude::*;
use weightkit_core::DType;
use weightkit_quant::QuantError;
use weightkit_quant::iquants::{
    self, BlockIq1M, BlockIq1S, BlockIq2S, BlockIq2Xs, BlockIq2Xxs, BlockIq3S, BlockIq3Xxs,
};
use weightkit_quant::kquants::QK_K;
use weightkit_quant::simd::{Level, dispatch};

use crate::simd::{Shifted, levels};
use crate::simd_iqdot::blocks;

type RawDeq = fn(&[u8], &mut [f32]) -> Result<(), QuantError>;
type RawDeqAt = fn(Level, &[u8], &mut [f32]) -> Result<(), QuantError>;

/// One grid type: its scalar and dispatching dequantizers on raw bytes.
struct Ty {
    dtype: DType,
    bytes: usize,
    scalar: RawDeq,
    at: RawDeqAt,
}

macro_rules! ty {
    ($dtype:ident, $block:ty, $f:ident, $at:ident) => {
        Ty {
            dtype: DType::$dtype,
            bytes: size_of::<$block>(),
            scalar: |x, y| iquants::$f(&blocks::<$block>(x), y),
            at: |l, x, y| dispatch::$at(l, &blocks::<$block>(x), y),
        }
    };
}

fn types() -> Vec<Ty> {
    vec![
        ty!(
            IQ2_XXS,
            BlockIq2Xxs,
            dequantize_row_iq2_xxs,
            dequantize_row_iq2_xxs_at
        ),
        ty!(
            IQ2_XS,
            BlockIq2Xs,
            dequantize_row_iq2_xs,
            dequantize_row_iq2_xs_at
        ),
        ty!(
            IQ2_S,
            BlockIq2S,
            dequantize_row_iq2_s,
            dequantize_row_iq2_s_at
        ),
        ty!(
            IQ3_XXS,
            BlockIq3Xxs,
            dequantize_row_iq3_xxs,
            dequantize_row_iq3_xxs_at
        ),
        ty!(
            IQ3_S,
            BlockIq3S,
            dequantize_row_iq3_s,
            dequantize_row_iq3_s_at
        ),
        ty!(
            IQ1_S,
            BlockIq1S,
            dequantize_row_iq1_s,
            dequantize_row_iq1_s_at
        ),
        ty!(
            IQ1_M,
            BlockIq1M,
            dequantize_row_iq1_m,
            dequantize_row_iq1_m_at
        ),
    ]
}

/// Writes the super-block scale `d` into every block of `x`: the leading
/// f16, or for IQ1_M the top nibbles of its four scale words.
fn set_scale(dtype: DType, bytes: usize, x: &mut [u8], d: f16) {
    let b = d.to_bits();
    for blk in x.chunks_exact_mut(bytes) {
        if dtype == DType::IQ1_M {
            for k in 0..4 {
                let hi = &mut blk[48 + 2 * k + 1];
                *hi = (*hi & 0x0f) | ((((b >> (4 * k)) & 0xf) as u8) << 4);
            }
        } else {
            blk[..2].copy_from_slice(&b.to_le_bytes());
        }
    }
}

fn same(a: f32, b: f32) -> bool {
    a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan())
}

/// Every dequantizer of `ty` on `x` (every level, unaligned copies, the
/// byte-level API) against the scalar reference, bit for bit.
fn check(ty: &Ty, x: &[u8]) -> Result<(), TestCaseError> {
    let name = ty.dtype.name();
    let n = x.len() / ty.bytes * QK_K;
    let mut want = vec![0f32; n];
    (ty.scalar)(x, &mut want).unwrap();
    let mut got = vec![("api", vec![0f32; n])];
    weightkit_quant::dequantize(ty.dtype, x, &mut got[0].1).unwrap();
    let xs = Shifted::new(x);
    for level in levels() {
        for x in [x, xs.get()] {
            let mut y = vec![f32::from_bits(0x7fa0_0001); n];
            (ty.at)(level, x, &mut y).unwrap();
            got.push((level.name(), y));
        }
    }
    for (what, y) in got {
        for (i, (&g, &w)) in y.iter().zip(&want).enumerate() {
            prop_assert!(same(g, w), "{name} {what} [{i}]: {g} vs scalar {w}");
        }
    }
    Ok(())
}

fn extreme_u8() -> impl Strategy<Value = u8> {
    prop_oneof![3 => any::<u8>(), 1 => Just(0u8), 1 => Just(0xffu8)]
}

/// Super-block scales: ordinary, extreme, subnormal, zero, any bits (NaN
/// and infinities included).
fn dx() -> impl Strategy<Value = f16> {
    prop_oneof![
        4 => (-4.0f32..4.0).prop_map(f16::from_f32),
        1 => Just(f16::MAX),
        1 => Just(f16::MIN),
        1 => Just(f16::from_bits(1)),
        1 => Just(f16::from_bits(0x8001)),
        1 => Just(f16::ZERO),
        1 => Just(f16::INFINITY),
        1 => Just(f16::NAN),
        2 => any::<u16>().prop_map(f16::from_bits),
    ]
}

/// Special scales for the deterministic tests.
const SCALES: [u16; 8] = [
    0x3c00, 0x0001, 0x8001, 0x7bff, 0x0000, 0x7c00, 0xfc00, 0x7e01,
];

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// Arbitrary block bytes with extreme scales, 1 to 6 blocks.
    #[test]
    fn grid_dequantizers_match_scalar(
        nb in 1usize..=6,
        xb in proptest::collection::vec(extreme_u8(), 6 * 110),
        dx in dx(),
        raw_scale in any::<bool>(),
    ) {
        for ty in types() {
            let mut x = xb[..nb * ty.bytes].to_vec();
            if !raw_scale {
                set_scale(ty.dtype, ty.bytes, &mut x, dx);
            }
            check(&ty, &x)?;
        }
    }
}

/// Every byte value at every position of a block (so every sign byte,
/// sign field, scale and grid index), with each special scale.
#[test]
fn grid_dequantizers_every_byte_everywhere() {
    for ty in types() {
        for off in 0..256usize {
            let mut x: Vec<u8> = (0..2 * ty.bytes).map(|i| (i * 7 + off) as u8).collect();
            let d = f16::from_bits(SCALES[off % SCALES.len()]);
            set_scale(ty.dtype, ty.bytes, &mut x, d);
            check(&ty, &x).unwrap();
        }
    }
}

/// All-zero and all-0xFF blocks, raw and with each special scale.
#[test]
fn grid_dequantizers_uniform_blocks() {
    for ty in types() {
        for fill in [0u8, 0xff] {
            let x = vec![fill; 3 * ty.bytes];
            check(&ty, &x).unwrap();
            for s in SCALES {
                let mut x = x.clone();
                set_scale(ty.dtype, ty.bytes, &mut x, f16::from_bits(s));
                check(&ty, &x).unwrap();
            }
        }
    }
}

/// Wrong output lengths fail at every level as the scalar code does, and
/// write nothing.
#[test]
fn grid_dequantizers_reject_wrong_lengths() {
    for ty in types() {
        let x = vec![0x55u8; 2 * ty.bytes];
        for n in [0, 511, 513, 256] {
            let mut want = vec![1f32; n];
            let w = (ty.scalar)(&x, &mut want);
            for level in levels() {
                let mut y = vec![1f32; n];
                let g = (ty.at)(level, &x, &mut y);
                assert!(matches!(g, Err(QuantError::BufferLength { .. })), "{g:?}");
                assert_eq!(g, w);
                assert!(y.iter().all(|&v| v == 1.0));
            }
        }
        let mut y = [];
        for level in levels() {
            assert_eq!((ty.at)(level, &[], &mut y), Ok(()));
        }
    }
}
