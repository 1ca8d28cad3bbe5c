//! The IQ4_NL and IQ4_XS quantizers at every level this CPU supports against
//! the scalar ports of ggml (`quantize_iq4_nl`, `quantize_iq4_xs` with and
//! without importance weights, and the two `quantize_row_*_ref`): the same
//! bytes, the same errors.

use bytemuck::Zeroable;
use proptest::prelude::*;
use weightkit_quant::QuantError;
use weightkit_quant::iquants::{self, BlockIq4Nl, BlockIq4Xs, grids::KVALUES_IQ4NL};
use weightkit_quant::simd::{Level, dispatch};

use crate::simd::{Shifted, levels, ramp};

type Quant<B> = fn(&[f32], &mut [B], usize, Option<&[f32]>) -> Result<(), QuantError>;
type QuantAt<B> = fn(Level, &[f32], &mut [B], usize, Option<&[f32]>) -> Result<(), QuantError>;
type RowRef<B> = fn(&[f32], &mut [B]) -> Result<(), QuantError>;
type RowRefAt<B> = fn(Level, &[f32], &mut [B]) -> Result<(), QuantError>;

/// Filler for destination buffers, to see that errors leave them alone and
/// that every byte of a block is written.
fn filled<B: Zeroable + bytemuck::Pod>(n: usize) -> Vec<B> {
    let mut v = vec![B::zeroed(); n];
    bytemuck::cast_slice_mut::<_, u8>(&mut v).fill(0xA5);
    v
}

/// Runs `quantize` (a `quantize_*` call at a level, on the given input and
/// importance) at every level from aligned and unaligned inputs and checks
/// the result and bytes against `want_r`/`want`.
fn check_levels<B: Zeroable + bytemuck::Pod>(
    name: &str,
    x: &[f32],
    imatrix: Option<&[f32]>,
    want_r: Result<(), QuantError>,
    want: &[B],
    quantize: impl Fn(Level, &[f32], Option<&[f32]>, &mut [B]) -> Result<(), QuantError>,
) -> Result<(), TestCaseError> {
    let xs = Shifted::new(x);
    let ws = imatrix.map(Shifted::new);
    for level in levels() {
        for (input, w) in [(x, imatrix), (xs.get(), ws.as_ref().map(|w| w.get()))] {
            let mut got = filled::<B>(want.len());
            let got_r = quantize(level, input, w, &mut got);
            prop_assert_eq!(
                format!("{got_r:?}"),
                format!("{want_r:?}"),
                "{} at {:?}",
                name,
                level
            );
            prop_assert_eq!(
                bytemuck::cast_slice::<_, u8>(&got),
                bytemuck::cast_slice::<_, u8>(want),
                "{} at {:?}",
                name,
                level
            );
        }
    }
    Ok(())
}

/// `quantize_*` at every level, from aligned and unaligned inputs, against
/// the scalar function: the same result, the same bytes.
fn check<B: Zeroable + bytemuck::Pod>(
    name: &str,
    block: usize,
    x: &[f32],
    n_per_row: usize,
    imatrix: Option<&[f32]>,
    scalar: Quant<B>,
    at: QuantAt<B>,
) -> Result<(), TestCaseError> {
    let mut want = filled::<B>(x.len() / block);
    let want_r = scalar(x, &mut want, n_per_row, imatrix);
    check_levels(name, x, imatrix, want_r, &want, |level, x, w, out| {
        at(level, x, out, n_per_row, w)
    })
}

/// `quantize_row_*_ref` at every level against the scalar function.
fn check_ref<B: Zeroable + bytemuck::Pod>(
    name: &str,
    block: usize,
    x: &[f32],
    scalar: RowRef<B>,
    at: RowRefAt<B>,
) -> Result<(), TestCaseError> {
    let mut want = filled::<B>(x.len() / block);
    let want_r = scalar(x, &mut want);
    check_levels(name, x, None, want_r, &want, |level, x, _, out| {
        at(level, x, out)
    })
}

/// Every IQ4 quantizer on `x` (rows of `n_per_row`) with `imatrix`.
fn all(x: &[f32], n_per_row: usize, imatrix: Option<&[f32]>) -> Result<(), TestCaseError> {
    if n_per_row.is_multiple_of(32) {
        check(
            "iq4_nl",
            32,
            x,
            n_per_row,
            imatrix,
            iquants::quantize_iq4_nl,
            dispatch::quantize_iq4_nl_at,
        )?;
        if x.len().is_multiple_of(32) {
            check_ref(
                "iq4_nl ref",
                32,
                x,
                iquants::quantize_row_iq4_nl_ref,
                dispatch::quantize_row_iq4_nl_ref_at,
            )?;
        }
    }
    if n_per_row.is_multiple_of(256) {
        check(
            "iq4_xs",
            256,
            x,
            n_per_row,
            imatrix,
            iquants::quantize_iq4_xs,
            dispatch::quantize_iq4_xs_at,
        )?;
        if x.len().is_multiple_of(256) {
            check_ref(
                "iq4_xs ref",
                256,
                x,
                iquants::quantize_row_iq4_xs_ref,
                dispatch::quantize_row_iq4_xs_ref_at,
            )?;
        }
    }
    Ok(())
}

fn value() -> impl Strategy<Value = f32> {
    prop_oneof![
        6 => -1.0f32..1.0,
        3 => -65504.0f32..65504.0,
        1 => proptest::num::f32::SUBNORMAL | proptest::num::f32::ZERO,
        1 => proptest::num::f32::NORMAL,
        1 => Just(65504.0f32),
        1 => Just(-65504.0f32),
        // Codebook values and midpoints: `id * x` lands on the thresholds
        // of the nearest-value search when the group maximum is 127.
        1 => (0usize..16).prop_map(|k| f32::from(KVALUES_IQ4NL[k])),
        1 => (0usize..15).prop_map(|k| {
            (f32::from(KVALUES_IQ4NL[k]) + f32::from(KVALUES_IQ4NL[k + 1])) / 2.0
        }),
        1 => Just(127.0f32),
        1 => Just(-127.0f32),
    ]
}

fn weight() -> impl Strategy<Value = f32> {
    prop_oneof![
        6 => 0.0f32..4.0,
        1 => Just(0.0f32),
        1 => proptest::num::f32::SUBNORMAL,
        1 => 0.0f32..1e30,
        1 => proptest::num::f32::POSITIVE | proptest::num::f32::NORMAL,
    ]
}

/// `rows` rows of `blocks` blocks of `block` values (a group of all zeros
/// here and there), and maybe an importance vector for one row.
fn case(
    block: usize,
    max_blocks: usize,
) -> impl Strategy<Value = (Vec<f32>, usize, Option<Vec<f32>>)> {
    (1..=max_blocks, 1usize..=3).prop_flat_map(move |(nb, rows)| {
        let n = nb * block;
        (
            proptest::collection::vec(value(), n * rows),
            proptest::collection::vec(any::<bool>(), n * rows / 32),
            proptest::option::of(proptest::collection::vec(weight(), n)),
        )
            .prop_map(move |(mut x, zero, w)| {
                for (g, z) in x.chunks_exact_mut(32).zip(zero) {
                    if z && g[0] > 0.5 {
                        g.fill(0.0);
                    }
                }
                (x, n, w)
            })
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn iq4_nl_random((x, n, w) in case(32, 12)) {
        all(&x, n, w.as_deref())?;
    }

    #[test]
    fn iq4_xs_random((x, n, w) in case(256, 2)) {
        all(&x, n, w.as_deref())?;
    }
}

/// Rows of `n` values that stress the searches' corner cases: the shared
/// adversarial rows, plus the IQ4 searches' own (all-zero groups, the
/// per-group epsilon, codebook values and midpoints, signed zeros).
fn adversarial_rows(n: usize) -> Vec<(&'static str, Vec<f32>)> {
    let mut zero_groups = ramp(n, 0.5);
    for g in zero_groups.chunks_exact_mut(32).skip(1).step_by(3) {
        g.fill(0.0);
    }
    // Codebook values and their midpoints, scaled so that the group's
    // maximum is 127: the first pass lands on the thresholds exactly.
    let grid: Vec<f32> = (0..n)
        .map(|i| match i % 32 {
            0 => 127.0,
            j if j % 2 == 0 => f32::from(KVALUES_IQ4NL[j / 2 % 16]),
            j => {
                let k = j / 2 % 15;
                (f32::from(KVALUES_IQ4NL[k]) + f32::from(KVALUES_IQ4NL[k + 1])) / 2.0
            }
        })
        .collect();
    let mut rows = crate::simd::adversarial_rows(n);
    rows.extend([
        ("zero groups", zero_groups),
        ("at group eps", ramp(n, 1e-15 / 50.0)),
        ("above group eps", ramp(n, 2e-15 / 50.0)),
        ("squares overflow", ramp(n, 1e18)),
        ("constant", vec![-7.25; n]),
        ("grid", grid),
        (
            "signed zeros",
            (0..n)
                .map(|i| match (i + i / 32) % 3 {
                    0 => -0.0,
                    1 => 0.0,
                    _ => (i % 5) as f32,
                })
                .collect(),
        ),
    ]);
    rows
}

#[test]
fn iq4_adversarial() {
    let n = 512;
    let ramp_w: Vec<f32> = (0..n).map(|i| 0.5 + (i * 37 % 101) as f32 / 50.0).collect();
    let weights: Vec<(&str, Option<Vec<f32>>)> = vec![
        ("none", None),
        ("ramp", Some(ramp_w)),
        ("zeros", Some(vec![0.0; n])),
        ("huge", Some(vec![1e30; n])),
        ("subnormal", Some(vec![f32::from_bits(3); n])),
        ("max", Some(vec![f32::MAX; n])),
    ];
    for (name, x) in adversarial_rows(n) {
        for (wname, w) in &weights {
            all(&x, n, w.as_deref()).unwrap_or_else(|e| panic!("{name} / {wname}: {e}"));
        }
        // Two rows of half the length share the importance vector.
        let half = weights[1].1.as_ref().map(|w| w[..n / 2].to_vec());
        all(&x, n / 2, half.as_deref()).unwrap_or_else(|e| panic!("{name} / 2 rows: {e}"));
    }
}

#[test]
fn iq4_errors_match() {
    let mut x: Vec<f32> = (0..512).map(|i| (i as f32).sin()).collect();
    // Wrong lengths: ragged rows, short destination, short imatrix.
    all(&x[..500], 256, None).unwrap();
    all(&x, 512, Some(&[1.0; 100])).unwrap();
    for level in levels() {
        let mut y = vec![BlockIq4Nl::zeroed(); 3];
        assert!(dispatch::quantize_iq4_nl_at(level, &x, &mut y, 512, None).is_err());
        let mut y = vec![BlockIq4Xs::zeroed(); 1];
        assert!(dispatch::quantize_iq4_xs_at(level, &x, &mut y, 512, None).is_err());
        assert!(dispatch::quantize_row_iq4_xs_ref_at(level, &x, &mut y).is_err());
        let mut y = vec![BlockIq4Nl::zeroed(); 3];
        assert!(dispatch::quantize_row_iq4_nl_ref_at(level, &x[..40], &mut y).is_err());
    }
    // Non-finite values and weights.
    let mut w = vec![1.0f32; 512];
    w[300] = -1.0;
    all(&x, 512, Some(&w)).unwrap();
    w[300] = f32::NAN;
    all(&x, 512, Some(&w)).unwrap();
    x[17] = f32::INFINITY;
    all(&x, 512, None).unwrap();
    x[17] = f32::NAN;
    all(&x, 256, None).unwrap();
    // Empty input.
    all(&[], 0, None).unwrap();
    all(&[], 256, None).unwrap();
}

/// llama.cpp's bytes (with and without its importance vector) from the SIMD
/// quantizers too (at AVX2 and AVX-512, capped at what this CPU has; the
/// scalar level is `iquants`' own test).
#[test]
fn iq4_simd_quantizers_match_llama_cpp() {
    macro_rules! at {
        ($level:expr) => {
            crate::iquants::check_ggml_reference::<BlockIq4Nl>(
                "iq4_nl",
                32,
                |x, y, n, w| dispatch::quantize_iq4_nl_at($level, x, y, n, w),
                iquants::dequantize_row_iq4_nl,
            );
            crate::iquants::check_ggml_reference::<BlockIq4Xs>(
                "iq4_xs",
                256,
                |x, y, n, w| dispatch::quantize_iq4_xs_at($level, x, y, n, w),
                iquants::dequantize_row_iq4_xs,
            );
        };
    }
    at!(Level::Avx2);
    at!(Level::Avx512);
}
