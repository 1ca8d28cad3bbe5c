//! SIMD kernels against the scalar references, at every level this CPU
//! supports (the scalar level included): dequantizers and the Q8_0/Q8_K
//! quantizers bit for bit, dot products within a few ulps of their magnitude
//! and exactly where every partial sum is an integer f32 represents.
//!
//! Levels are chosen per call through the `_at` entry points, never through
//! the process-wide `simd::set_level`, so these tests can run in parallel.

use bytemuck::Zeroable;
use half::f16;
use proptest::prelude::*;
use weightkit_quant::QuantError;
use weightkit_quant::kquants::{
    self, BlockQ2K, BlockQ3K, BlockQ4K, BlockQ5K, BlockQ6K, BlockQ8K, QK_K,
};
use weightkit_quant::legacy::{
    self, BlockQ4_0, BlockQ4_1, BlockQ5_0, BlockQ5_1, BlockQ8_0, BlockQ8_1,
};
use weightkit_quant::simd::{Level, dispatch, supported};

/// A dispatching dequantizer at a chosen level.
pub(crate) type DequantAt<B> = fn(Level, &[B], &mut [f32]) -> Result<(), QuantError>;
/// A dispatching dot product at a chosen level.
type DotAt<X, Y> = fn(Level, &[X], &[Y]) -> Result<f32, QuantError>;

/// Every level this CPU runs, the scalar one first.
pub(crate) fn levels() -> Vec<Level> {
    [Level::Scalar, Level::Avx2, Level::Avx512]
        .into_iter()
        .filter(|&l| l <= supported())
        .collect()
}

/// Asserts that a dispatching call failed with a length error, the same
/// error its scalar function reports.
pub(crate) fn assert_length_error<T: PartialEq + std::fmt::Debug>(
    got: Result<T, QuantError>,
    want: Result<T, QuantError>,
) {
    assert!(
        matches!(got, Err(QuantError::BufferLength { .. })),
        "{got:?}"
    );
    assert_eq!(got, want);
}

pub(crate) fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

/// `v` copied to a buffer at an odd element offset, so that it is not
/// 32-byte aligned (and, for blocks, not even block-size aligned in bytes).
pub(crate) struct Shifted<T> {
    buf: Vec<T>,
}

impl<T: Copy + Zeroable> Shifted<T> {
    pub(crate) fn new(v: &[T]) -> Self {
        let mut buf = vec![T::zeroed(); v.len() + 1];
        buf[1..].copy_from_slice(v);
        Shifted { buf }
    }
    pub(crate) fn get(&self) -> &[T] {
        &self.buf[1..]
    }
}

// ------------------------------------------------------------------- inputs

/// `n` values `(i * 37 % 101 - 50) * scale`: uneven, both signs, magnitudes
/// up to `50 * scale`.
pub(crate) fn ramp(n: usize, scale: f32) -> Vec<f32> {
    (0..n)
        .map(|i| ((i * 37 % 101) as f32 - 50.0) * scale)
        .collect()
}

/// Rows that stress the quantizers' corner cases, `n` values each.
pub(crate) fn adversarial_rows(n: usize) -> Vec<(&'static str, Vec<f32>)> {
    let ramp = |scale: f32| ramp(n, scale);
    let mut outlier = ramp(1e-3);
    outlier[n / 3] = 1e30;
    let mut neg_outlier = ramp(1.0);
    neg_outlier[n - 1] = -3.0e38;
    let mut ties = vec![0.0f32; n];
    for (i, v) in ties.iter_mut().enumerate() {
        // With amax 127 the Q8_0 scale is 1: x.5 values hit roundf's ties.
        *v = if i % 32 == 0 {
            127.0
        } else {
            (i % 64) as f32 - 31.5
        };
    }
    let mut signs = vec![0.0f32; n];
    for (i, v) in signs.iter_mut().enumerate() {
        // Equal magnitudes of both signs: Q8_K keeps the first one's sign.
        *v = if i % 2 == 0 { -2.5 } else { 2.5 } * ((i % 7) as f32 + 1.0) / 7.0;
    }
    vec![
        ("zeros", vec![0.0; n]),
        ("negative zeros", vec![-0.0; n]),
        ("ramp", ramp(0.01)),
        ("huge outlier", outlier),
        ("negative outlier", neg_outlier),
        ("subnormals", ramp(1e-43)),
        ("min subnormal", vec![f32::from_bits(1); n]),
        (
            "tiny normals",
            (0..n).map(|i| f32::MIN_POSITIVE * (i % 5) as f32).collect(),
        ),
        ("near f16 max", ramp(65504.0 / 50.0)),
        (
            "f16 max",
            (0..n)
                .map(|i| if i % 3 == 0 { -65504.0 } else { 65504.0 })
                .collect(),
        ),
        ("beyond f16", ramp(1e6)),
        (
            "f32 max",
            (0..n)
                .map(|i| if i % 2 == 0 { f32::MAX } else { -f32::MAX })
                .collect(),
        ),
        (
            "scale products overflow",
            (0..n)
                .map(|i| match i % 7 {
                    0 => 1e37,
                    3 => 65504.0,
                    _ => (i % 5) as f32 * 0.1,
                })
                .collect(),
        ),
        ("ties", ties),
        ("signs", signs),
        ("constant", vec![-7.25; n]),
        (
            // Zero extremes of both signs: ggml keeps the first zero it meets.
            "signed zeros above",
            (0..n)
                .map(|i| match (i + i / 32) % 3 {
                    0 => -0.0,
                    1 => 0.0,
                    _ => (i % 5) as f32,
                })
                .collect(),
        ),
        (
            "signed zeros below",
            (0..n)
                .map(|i| match (i + i / 32) % 3 {
                    0 => 0.0,
                    1 => -0.0,
                    _ => -((i % 5) as f32),
                })
                .collect(),
        ),
    ]
}

fn value() -> impl Strategy<Value = f32> {
    prop_oneof![
        6 => -1.0f32..1.0,
        3 => -65504.0f32..65504.0,
        1 => proptest::num::f32::SUBNORMAL | proptest::num::f32::ZERO,
        1 => proptest::num::f32::NORMAL,
        1 => Just(65504.0f32),
        1 => Just(-65504.0f32),
    ]
}

/// A row of `1..=max_blocks` blocks of `block` values.
fn row(block: usize, max_blocks: usize) -> impl Strategy<Value = Vec<f32>> {
    (1..=max_blocks).prop_flat_map(move |nb| proptest::collection::vec(value(), nb * block))
}

fn q8_0(x: &[f32]) -> Vec<BlockQ8_0> {
    let mut q = vec![BlockQ8_0::zeroed(); x.len() / 32];
    legacy::quantize_row_q8_0_ref(x, &mut q).unwrap();
    q
}

fn q8_k(x: &[f32]) -> Vec<BlockQ8K> {
    let mut q = vec![BlockQ8K::zeroed(); x.len() / QK_K];
    kquants::quantize_row_q8_k_ref(x, &mut q).unwrap();
    q
}

// ------------------------------------------------------------ dequantizers

/// Dequantizes `q` at every level (also from an unaligned copy) and checks
/// the floats bit for bit against the scalar reference.
pub(crate) fn check_dequant<B: Copy + Zeroable>(
    name: &str,
    q: &[B],
    block: usize,
    scalar: fn(&[B], &mut [f32]) -> Result<(), QuantError>,
    at: DequantAt<B>,
) -> Result<(), TestCaseError> {
    let mut want = vec![0f32; q.len() * block];
    scalar(q, &mut want).unwrap();
    let shifted = Shifted::new(q);
    for level in levels() {
        let mut got = vec![f32::NAN; q.len() * block];
        at(level, q, &mut got).unwrap();
        prop_assert_eq!(bits(&got), bits(&want), "{} at {:?}", name, level);
        let mut out = Shifted::new(&vec![f32::NAN; q.len() * block]);
        at(level, shifted.get(), &mut out.buf[1..]).unwrap();
        prop_assert_eq!(
            bits(out.get()),
            bits(&want),
            "{} unaligned at {:?}",
            name,
            level
        );
    }
    Ok(())
}

/// A scalar reference row quantizer.
pub(crate) type RowQuant<B> = fn(&[f32], &mut [B]) -> Result<(), QuantError>;
/// A dispatching row quantizer at a level.
pub(crate) type RowQuantAt<B> = fn(Level, &[f32], &mut [B]) -> Result<(), QuantError>;
/// A dispatching matrix quantizer (`n_per_row`, importance) at a level.
pub(crate) type MatrixQuantAt<B> =
    fn(Level, &[f32], &mut [B], usize, Option<&[f32]>) -> Result<(), QuantError>;

/// One type's row and matrix quantizers at every level (also from an
/// unaligned copy; the matrix form in rows of `n_per_row`, without and with
/// the importance vector `w` of that length) against the scalar reference,
/// byte for byte. Returns the reference blocks.
#[allow(clippy::too_many_arguments)]
pub(crate) fn check_quantizer<B: bytemuck::Pod>(
    name: &str,
    x: &[f32],
    block: usize,
    reference: RowQuant<B>,
    row_at: RowQuantAt<B>,
    matrix_at: MatrixQuantAt<B>,
    n_per_row: usize,
    w: &[f32],
) -> Result<Vec<B>, TestCaseError> {
    let nb = x.len() / block;
    let mut want = vec![B::zeroed(); nb];
    reference(x, &mut want).unwrap();
    let want_bytes: &[u8] = bytemuck::cast_slice(&want);
    let xs = Shifted::new(x);
    for level in levels() {
        for x in [x, xs.get()] {
            let mut got = vec![B::zeroed(); nb];
            row_at(level, x, &mut got).unwrap();
            prop_assert_eq!(
                bytemuck::cast_slice::<_, u8>(&got),
                want_bytes,
                "{} at {:?}",
                name,
                level
            );
            for imatrix in [None, Some(w)] {
                let mut got = vec![B::zeroed(); nb];
                matrix_at(level, x, &mut got, n_per_row, imatrix).unwrap();
                prop_assert_eq!(
                    bytemuck::cast_slice::<_, u8>(&got),
                    want_bytes,
                    "{} rows at {:?} (importance: {})",
                    name,
                    level,
                    imatrix.is_some()
                );
            }
        }
    }
    Ok(want)
}

/// Every dequantizer on `x` quantized by its scalar reference quantizer.
fn dequantizers(x: &[f32]) -> Result<(), TestCaseError> {
    if x.len().is_multiple_of(32) {
        check_dequant(
            "q8_0",
            &q8_0(x),
            32,
            legacy::dequantize_row_q8_0,
            dispatch::dequantize_row_q8_0_at,
        )?;
        let mut q = vec![BlockQ4_0::zeroed(); x.len() / 32];
        legacy::quantize_row_q4_0_ref(x, &mut q).unwrap();
        check_dequant(
            "q4_0",
            &q,
            32,
            legacy::dequantize_row_q4_0,
            dispatch::dequantize_row_q4_0_at,
        )?;
    }
    if x.len().is_multiple_of(QK_K) {
        let mut q = vec![BlockQ2K::zeroed(); x.len() / QK_K];
        kquants::quantize_row_q2_k_ref(x, &mut q).unwrap();
        check_dequant(
            "q2_K",
            &q,
            QK_K,
            kquants::dequantize_row_q2_k,
            dispatch::dequantize_row_q2_k_at,
        )?;
        let mut q = vec![BlockQ3K::zeroed(); x.len() / QK_K];
        kquants::quantize_row_q3_k_ref(x, &mut q).unwrap();
        check_dequant(
            "q3_K",
            &q,
            QK_K,
            kquants::dequantize_row_q3_k,
            dispatch::dequantize_row_q3_k_at,
        )?;
        let mut q = vec![BlockQ4K::zeroed(); x.len() / QK_K];
        kquants::quantize_row_q4_k_ref(x, &mut q).unwrap();
        check_dequant(
            "q4_K",
            &q,
            QK_K,
            kquants::dequantize_row_q4_k,
            dispatch::dequantize_row_q4_k_at,
        )?;
        let mut q = vec![BlockQ5K::zeroed(); x.len() / QK_K];
        kquants::quantize_row_q5_k_ref(x, &mut q).unwrap();
        check_dequant(
            "q5_K",
            &q,
            QK_K,
            kquants::dequantize_row_q5_k,
            dispatch::dequantize_row_q5_k_at,
        )?;
        let mut q = vec![BlockQ6K::zeroed(); x.len() / QK_K];
        kquants::quantize_row_q6_k_ref(x, &mut q).unwrap();
        check_dequant(
            "q6_K",
            &q,
            QK_K,
            kquants::dequantize_row_q6_k,
            dispatch::dequantize_row_q6_k_at,
        )?;
    }
    Ok(())
}

/// Raw blocks from arbitrary bytes (any scale, NaN and infinities included).
fn raw_dequantizers(bytes: &[u8]) -> Result<(), TestCaseError> {
    fn blocks<B: bytemuck::Pod>(bytes: &[u8]) -> Vec<B> {
        bytes
            .chunks_exact(size_of::<B>())
            .map(bytemuck::pod_read_unaligned)
            .collect()
    }
    check_dequant(
        "raw q8_0",
        &blocks::<BlockQ8_0>(bytes),
        32,
        legacy::dequantize_row_q8_0,
        dispatch::dequantize_row_q8_0_at,
    )?;
    check_dequant(
        "raw q4_0",
        &blocks::<BlockQ4_0>(bytes),
        32,
        legacy::dequantize_row_q4_0,
        dispatch::dequantize_row_q4_0_at,
    )?;
    check_dequant(
        "raw q2_K",
        &blocks::<BlockQ2K>(bytes),
        QK_K,
        kquants::dequantize_row_q2_k,
        dispatch::dequantize_row_q2_k_at,
    )?;
    check_dequant(
        "raw q3_K",
        &blocks::<BlockQ3K>(bytes),
        QK_K,
        kquants::dequantize_row_q3_k,
        dispatch::dequantize_row_q3_k_at,
    )?;
    check_dequant(
        "raw q4_K",
        &blocks::<BlockQ4K>(bytes),
        QK_K,
        kquants::dequantize_row_q4_k,
        dispatch::dequantize_row_q4_k_at,
    )?;
    check_dequant(
        "raw q5_K",
        &blocks::<BlockQ5K>(bytes),
        QK_K,
        kquants::dequantize_row_q5_k,
        dispatch::dequantize_row_q5_k_at,
    )?;
    check_dequant(
        "raw q6_K",
        &blocks::<BlockQ6K>(bytes),
        QK_K,
        kquants::dequantize_row_q6_k,
        dispatch::dequantize_row_q6_k_at,
    )
}

// --------------------------------------------------------------- quantizers

/// The Q8_0 and Q8_K quantizers at every level give the reference bytes.
/// A block quantizer at a chosen level.
type QuantAt<B> = fn(Level, &[f32], &mut [B]) -> Result<(), QuantError>;

/// Quantizes `x` at every level (also from an unaligned copy) and checks the
/// bytes against the scalar reference.
fn check_quant<B: Copy + Zeroable + bytemuck::Pod>(
    name: &str,
    x: &[f32],
    block: usize,
    scalar: fn(&[f32], &mut [B]) -> Result<(), QuantError>,
    at: QuantAt<B>,
) -> Result<(), TestCaseError> {
    let mut want = vec![B::zeroed(); x.len() / block];
    scalar(x, &mut want).unwrap();
    let shifted = Shifted::new(x);
    for level in levels() {
        for input in [x, shifted.get()] {
            let mut got = vec![B::zeroed(); want.len()];
            at(level, input, &mut got).unwrap();
            prop_assert_eq!(
                bytemuck::cast_slice::<_, u8>(&got),
                bytemuck::cast_slice::<_, u8>(&want),
                "{} at {:?}",
                name,
                level
            );
        }
    }
    Ok(())
}

fn quantizers(x: &[f32]) -> Result<(), TestCaseError> {
    let shifted = Shifted::new(x);
    if x.len().is_multiple_of(32) {
        use legacy::*;
        check_quant(
            "q4_0",
            x,
            32,
            quantize_row_q4_0_ref,
            dispatch::quantize_row_q4_0_at,
        )?;
        check_quant(
            "q4_1",
            x,
            32,
            quantize_row_q4_1_ref,
            dispatch::quantize_row_q4_1_at,
        )?;
        check_quant(
            "q5_0",
            x,
            32,
            quantize_row_q5_0_ref,
            dispatch::quantize_row_q5_0_at,
        )?;
        check_quant(
            "q5_1",
            x,
            32,
            quantize_row_q5_1_ref,
            dispatch::quantize_row_q5_1_at,
        )?;
        let want = q8_0(x);
        for level in levels() {
            for input in [x, shifted.get()] {
                let mut got = vec![BlockQ8_0::zeroed(); want.len()];
                dispatch::quantize_row_q8_0_at(level, input, &mut got).unwrap();
                prop_assert_eq!(
                    bytemuck::cast_slice::<_, u8>(&got),
                    bytemuck::cast_slice::<_, u8>(&want),
                    "q8_0 at {:?}",
                    level
                );
            }
        }
    }
    if x.len().is_multiple_of(32) {
        let mut want = vec![BlockQ8_1::zeroed(); x.len() / 32];
        legacy::quantize_row_q8_1_ref(x, &mut want).unwrap();
        for level in levels() {
            for input in [x, shifted.get()] {
                let mut got = vec![BlockQ8_1::zeroed(); want.len()];
                dispatch::quantize_row_q8_1_at(level, input, &mut got).unwrap();
                prop_assert_eq!(
                    bytemuck::cast_slice::<_, u8>(&got),
                    bytemuck::cast_slice::<_, u8>(&want),
                    "q8_1 at {:?}",
                    level
                );
            }
        }
    }
    if x.len().is_multiple_of(QK_K) {
        let want = q8_k(x);
        for level in levels() {
            for input in [x, shifted.get()] {
                let mut got = vec![BlockQ8K::zeroed(); want.len()];
                dispatch::quantize_row_q8_k_at(level, input, &mut got).unwrap();
                prop_assert_eq!(
                    bytemuck::cast_slice::<_, u8>(&got),
                    bytemuck::cast_slice::<_, u8>(&want),
                    "q8_K at {:?}",
                    level
                );
            }
        }
    }
    Ok(())
}

// ------------------------------------------------------------- dot products

/// Compares a dot product at every level with the scalar one: equal at the
/// scalar level, within `1e-5` of `mag` (the sum of the absolute values of
/// every term either side adds) elsewhere, non-finite where the scalar one
/// is. Rows whose terms overflow f32 are only run, not compared.
#[allow(clippy::too_many_arguments)]
fn check_dot<X: Copy + Zeroable, Y: Copy + Zeroable>(
    name: &str,
    x: &[X],
    y: &[Y],
    mag: f64,
    exact: bool,
    scalar: fn(&[X], &[Y]) -> Result<f32, QuantError>,
    at: DotAt<X, Y>,
) -> Result<(), TestCaseError> {
    let want = scalar(x, y).unwrap();
    let (xs, ys) = (Shifted::new(x), Shifted::new(y));
    for level in levels() {
        for (x, y) in [(x, y), (xs.get(), ys.get())] {
            let got = at(level, x, y).unwrap();
            if level == Level::Scalar || exact {
                prop_assert_eq!(got.to_bits(), want.to_bits(), "{} at {:?}", name, level);
            } else if !want.is_finite() {
                // A product of scales overflowed (then `inf * 0` may give
                // NaN): either order overflows too.
                prop_assert!(!got.is_finite(), "{name} at {level:?}: {got} vs {want}");
            } else if mag.is_finite() && mag < 1e37 {
                let err = (f64::from(got) - f64::from(want)).abs();
                prop_assert!(
                    err <= 1e-5 * mag,
                    "{name} at {level:?}: {got} vs {want} (magnitude {mag})"
                );
            }
        }
    }
    Ok(())
}

fn dequant<B>(
    q: &[B],
    block: usize,
    f: fn(&[B], &mut [f32]) -> Result<(), QuantError>,
) -> Vec<f32> {
    let mut out = vec![0f32; q.len() * block];
    f(q, &mut out).unwrap();
    out
}

/// `sum |a_i * b_i|` in f64.
fn abs_dot(a: &[f32], b: &[f32]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(&a, &b)| (f64::from(a) * f64::from(b)).abs())
        .sum()
}

/// The magnitude of a Q2_K/Q4_K/Q5_K dot, whose terms are the scale part
/// `d * sc * q * y` and the min part `dmin * m * y` separately:
/// `sum (|d sc q| + |dmin m|) * |y|`, from two dequantizations with `dmin`
/// (`zero(b, true)`) or `d` (`zero(b, false)`) zeroed.
fn k4_mag<B: Copy>(
    x: &[B],
    y: &[f32],
    dq: fn(&[B], &mut [f32]) -> Result<(), QuantError>,
    zero: fn(&mut B, bool),
) -> f64 {
    let with = |dmin: bool| {
        let mut v = x.to_vec();
        v.iter_mut().for_each(|b| zero(b, dmin));
        dequant(&v, QK_K, dq)
    };
    let (scale_part, min_part) = (with(true), with(false));
    scale_part
        .iter()
        .zip(&min_part)
        .zip(y)
        .map(|((&a, &m), &y)| (f64::from(a).abs() + f64::from(m).abs()) * f64::from(y).abs())
        .sum()
}

/// The magnitude of a Q6_K dot, whose terms are the code part
/// `d * sc * q * y` and the offset `32 * d * sc * y` (from the stored
/// `bsums`) separately: `sum (|d sc (q - 32)| + 64 |d sc|) * |y|` bounds
/// `sum (|d sc q| + 32 |d sc|) * |y|`.
fn q6_mag(x: &[BlockQ6K], y: &[f32]) -> f64 {
    let dx = dequant(x, QK_K, kquants::dequantize_row_q6_k);
    let sc: Vec<f64> = x
        .iter()
        .flat_map(|b| {
            let d = f64::from(b.d.to_f32());
            b.scales.map(|s| 64.0 * (d * f64::from(s)).abs())
        })
        .flat_map(|s| [s; 16])
        .collect();
    dx.iter()
        .zip(&sc)
        .zip(y)
        .map(|((&a, &s), &y)| (f64::from(a).abs() + s) * f64::from(y).abs())
        .sum()
}

fn zero_q4_k(b: &mut BlockQ4K, dmin: bool) {
    if dmin {
        b.dmin = f16::ZERO;
    } else {
        b.d = f16::ZERO;
    }
}

fn zero_q5_k(b: &mut BlockQ5K, dmin: bool) {
    if dmin {
        b.dmin = f16::ZERO;
    } else {
        b.d = f16::ZERO;
    }
}

fn zero_q2_k(b: &mut BlockQ2K, dmin: bool) {
    if dmin {
        b.dmin = f16::ZERO;
    } else {
        b.d = f16::ZERO;
    }
}

fn q8_1(x: &[f32]) -> Vec<BlockQ8_1> {
    let mut q = vec![BlockQ8_1::zeroed(); x.len() / 32];
    legacy::quantize_row_q8_1_ref(x, &mut q).unwrap();
    q
}

/// The values of Q8_1 blocks, `d * q` (ggml has no Q8_1 dequantizer).
fn dequant_q8_1(q: &[BlockQ8_1]) -> Vec<f32> {
    q.iter()
        .flat_map(|b| b.qs.map(|v| b.d.to_f32() * f32::from(v)))
        .collect()
}

/// The magnitude of a Q4_1/Q5_1 x Q8_1 dot, whose terms are the scale part
/// `d * q * y` per element and the offset `m * s` per block: the first from
/// a dequantization with `m` zeroed (by `zero_m`).
fn offset_mag<B: Copy>(
    x: &[B],
    y: &[BlockQ8_1],
    dq: fn(&[B], &mut [f32]) -> Result<(), QuantError>,
    zero_m: fn(&mut B) -> f16,
) -> f64 {
    let mut v = x.to_vec();
    let ms: Vec<f16> = v.iter_mut().map(zero_m).collect();
    let scale_part = abs_dot(&dequant(&v, 32, dq), &dequant_q8_1(y));
    let offsets: f64 = ms
        .iter()
        .zip(y)
        .map(|(m, b)| (f64::from(m.to_f32()) * f64::from(b.s.to_f32())).abs())
        .sum();
    scale_part + offsets
}

fn take_m_q4_1(b: &mut BlockQ4_1) -> f16 {
    std::mem::replace(&mut b.m, f16::ZERO)
}

fn take_m_q5_1(b: &mut BlockQ5_1) -> f16 {
    std::mem::replace(&mut b.m, f16::ZERO)
}

/// Every dot product on `x` (quantized to the weight type by its reference
/// quantizer) and `y` (quantized to Q8_0 / Q8_K).
fn dots(x: &[f32], y: &[f32]) -> Result<(), TestCaseError> {
    if x.len().is_multiple_of(32) {
        let qy = q8_0(y);
        let yd = dequant(&qy, 32, legacy::dequantize_row_q8_0);
        let mut q4 = vec![BlockQ4_0::zeroed(); x.len() / 32];
        legacy::quantize_row_q4_0_ref(x, &mut q4).unwrap();
        let mag = abs_dot(&dequant(&q4, 32, legacy::dequantize_row_q4_0), &yd);
        check_dot(
            "q4_0 x q8_0",
            &q4,
            &qy,
            mag,
            false,
            legacy::vec_dot_q4_0_q8_0,
            dispatch::vec_dot_q4_0_q8_0_at,
        )?;
        let q8 = q8_0(x);
        let mag = abs_dot(&dequant(&q8, 32, legacy::dequantize_row_q8_0), &yd);
        check_dot(
            "q8_0 x q8_0",
            &q8,
            &qy,
            mag,
            false,
            legacy::vec_dot_q8_0_q8_0,
            dispatch::vec_dot_q8_0_q8_0_at,
        )?;
        let mut q5 = vec![BlockQ5_0::zeroed(); x.len() / 32];
        legacy::quantize_row_q5_0_ref(x, &mut q5).unwrap();
        let mag = abs_dot(&dequant(&q5, 32, legacy::dequantize_row_q5_0), &yd);
        check_dot(
            "q5_0 x q8_0",
            &q5,
            &qy,
            mag,
            false,
            legacy::vec_dot_q5_0_q8_0,
            dispatch::vec_dot_q5_0_q8_0_at,
        )?;
        let qy1 = q8_1(y);
        let mut q = vec![BlockQ4_1::zeroed(); x.len() / 32];
        legacy::quantize_row_q4_1_ref(x, &mut q).unwrap();
        let mag = offset_mag(&q, &qy1, legacy::dequantize_row_q4_1, take_m_q4_1);
        check_dot(
            "q4_1 x q8_1",
            &q,
            &qy1,
            mag,
            false,
            legacy::vec_dot_q4_1_q8_1,
            dispatch::vec_dot_q4_1_q8_1_at,
        )?;
        let mut q = vec![BlockQ5_1::zeroed(); x.len() / 32];
        legacy::quantize_row_q5_1_ref(x, &mut q).unwrap();
        let mag = offset_mag(&q, &qy1, legacy::dequantize_row_q5_1, take_m_q5_1);
        check_dot(
            "q5_1 x q8_1",
            &q,
            &qy1,
            mag,
            false,
            legacy::vec_dot_q5_1_q8_1,
            dispatch::vec_dot_q5_1_q8_1_at,
        )?;
    }
    if x.len().is_multiple_of(QK_K) {
        let qy = q8_k(y);
        let yd = dequant(&qy, QK_K, kquants::dequantize_row_q8_k);
        let mut q = vec![BlockQ4K::zeroed(); x.len() / QK_K];
        kquants::quantize_row_q4_k_ref(x, &mut q).unwrap();
        let mag = k4_mag(&q, &yd, kquants::dequantize_row_q4_k, zero_q4_k);
        check_dot(
            "q4_K x q8_K",
            &q,
            &qy,
            mag,
            false,
            kquants::vec_dot_q4_k_q8_k,
            dispatch::vec_dot_q4_k_q8_k_at,
        )?;
        let mut q = vec![BlockQ5K::zeroed(); x.len() / QK_K];
        kquants::quantize_row_q5_k_ref(x, &mut q).unwrap();
        let mag = k4_mag(&q, &yd, kquants::dequantize_row_q5_k, zero_q5_k);
        check_dot(
            "q5_K x q8_K",
            &q,
            &qy,
            mag,
            false,
            kquants::vec_dot_q5_k_q8_k,
            dispatch::vec_dot_q5_k_q8_k_at,
        )?;
        let mut q = vec![BlockQ6K::zeroed(); x.len() / QK_K];
        kquants::quantize_row_q6_k_ref(x, &mut q).unwrap();
        let mag = q6_mag(&q, &yd);
        check_dot(
            "q6_K x q8_K",
            &q,
            &qy,
            mag,
            false,
            kquants::vec_dot_q6_k_q8_k,
            dispatch::vec_dot_q6_k_q8_k_at,
        )?;
        let mut q = vec![BlockQ2K::zeroed(); x.len() / QK_K];
        kquants::quantize_row_q2_k_ref(x, &mut q).unwrap();
        let mag = k4_mag(&q, &yd, kquants::dequantize_row_q2_k, zero_q2_k);
        check_dot(
            "q2_K x q8_K",
            &q,
            &qy,
            mag,
            false,
            kquants::vec_dot_q2_k_q8_k,
            dispatch::vec_dot_q2_k_q8_k_at,
        )?;
        let mut q = vec![BlockQ3K::zeroed(); x.len() / QK_K];
        kquants::quantize_row_q3_k_ref(x, &mut q).unwrap();
        let mag = abs_dot(&dequant(&q, QK_K, kquants::dequantize_row_q3_k), &yd);
        check_dot(
            "q3_K x q8_K",
            &q,
            &qy,
            mag,
            false,
            kquants::vec_dot_q3_k_q8_k,
            dispatch::vec_dot_q3_k_q8_k_at,
        )?;
    }
    Ok(())
}

/// Everything on one row (and its reverse as the other dot operand).
fn all(x: &[f32]) -> Result<(), TestCaseError> {
    dequantizers(x)?;
    quantizers(x)?;
    let y: Vec<f32> = x.iter().rev().map(|v| v * 0.5 - 0.25).collect();
    dots(x, &y)?;
    dots(x, x)
}

// ---------------------------------------------------- exact integer dots

/// Q8_K blocks with `d = 1`, quants in `-lim..lim` and the given `bsums`
/// (or, if `None`, the true ones).
fn q8_k_raw(qs: &[i8], lim: i8, bsums: Option<&[i16]>) -> Vec<BlockQ8K> {
    qs.chunks_exact(QK_K)
        .enumerate()
        .map(|(i, c)| {
            let mut b = BlockQ8K::zeroed();
            b.d = 1.0;
            for (o, &q) in b.qs.iter_mut().zip(c) {
                *o = q.rem_euclid(2 * lim) - lim;
            }
            for (j, s) in b.bsums.iter_mut().enumerate() {
                *s = match bsums {
                    Some(v) => v[16 * i + j],
                    None => b.qs[16 * j..16 * j + 16].iter().map(|&q| q as i16).sum(),
                };
            }
            b
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// Random rows of 1 to 9 legacy blocks (not always whole k-quant blocks).
    #[test]
    fn legacy_rows_match_scalar(x in row(32, 9)) {
        all(&x)?;
    }

    /// Random rows of 1 to 4 k-quant blocks.
    #[test]
    fn k_rows_match_scalar(x in row(QK_K, 4)) {
        all(&x)?;
    }

    /// Arbitrary block bytes dequantize identically, whatever their scales
    /// (NaN and infinities included).
    #[test]
    fn raw_blocks_dequantize_identically(
        bytes in proptest::collection::vec(any::<u8>(), 0..3 * 210 * 4),
    ) {
        raw_dequantizers(&bytes)?;
    }

    /// With unit scales every partial sum is an integer below 2^24, so the
    /// SIMD dots must equal the scalar ones exactly (this also covers -128
    /// on both sides of Q8_0 x Q8_0, which llama.cpp's sign trick gets wrong).
    #[test]
    fn legacy_integer_dots_are_exact(
        nb in 1usize..=32,
        bytes in proptest::collection::vec(any::<u8>(), 32 * 32),
        ybytes in proptest::collection::vec(any::<i8>(), 32 * 32),
        neg in any::<bool>(),
    ) {
        let one = if neg { -f16::ONE } else { f16::ONE };
        let y: Vec<BlockQ8_0> = ybytes.chunks_exact(32).take(nb).map(|c| {
            BlockQ8_0 { d: one, qs: c.try_into().unwrap() }
        }).collect();
        let x8: Vec<BlockQ8_0> = bytes.chunks_exact(32).take(nb).map(|c| {
            BlockQ8_0 { d: f16::ONE, qs: c.iter().map(|&b| b as i8).collect::<Vec<_>>().try_into().unwrap() }
        }).collect();
        let x4: Vec<BlockQ4_0> = bytes.chunks_exact(16).take(nb).map(|c| {
            BlockQ4_0 { d: f16::ONE, qs: c.try_into().unwrap() }
        }).collect();
        check_dot("int q8_0", &x8, &y, 0.0, true, legacy::vec_dot_q8_0_q8_0, dispatch::vec_dot_q8_0_q8_0_at)?;
        check_dot("int q4_0", &x4, &y, 0.0, true, legacy::vec_dot_q4_0_q8_0, dispatch::vec_dot_q4_0_q8_0_at)?;
    }

    /// One k-quant block with unit super-scales and small Q8_K quants: every
    /// partial sum is an integer below 2^24, so the dots are exact. The Q4_K
    /// and Q5_K cases also take arbitrary stored `bsums` up to +-8000.
    #[test]
    fn k_integer_dots_are_exact(
        bytes in proptest::collection::vec(any::<u8>(), 210),
        qs in proptest::collection::vec(any::<i8>(), QK_K),
        bsums in proptest::collection::vec(-8000i16..=8000, 16),
        own_bsums in any::<bool>(),
    ) {
        let bs = if own_bsums { None } else { Some(&bsums[..]) };
        let mut q4: BlockQ4K = bytemuck::pod_read_unaligned(&bytes[..144]);
        q4.d = f16::ONE;
        q4.dmin = f16::ONE;
        let mut q5: BlockQ5K = bytemuck::pod_read_unaligned(&bytes[..176]);
        q5.d = f16::ONE;
        q5.dmin = -f16::ONE;
        let mut q6: BlockQ6K = bytemuck::pod_read_unaligned(&bytes[..210]);
        q6.d = f16::ONE;
        let y16 = q8_k_raw(&qs, 8, bs);
        let y8 = q8_k_raw(&qs, 4, None);
        check_dot("int q4_K", &[q4], &y16, 0.0, true, kquants::vec_dot_q4_k_q8_k, dispatch::vec_dot_q4_k_q8_k_at)?;
        check_dot("int q5_K", &[q5], &y16, 0.0, true, kquants::vec_dot_q5_k_q8_k, dispatch::vec_dot_q5_k_q8_k_at)?;
        check_dot("int q6_K", &[q6], &y8, 0.0, true, kquants::vec_dot_q6_k_q8_k, dispatch::vec_dot_q6_k_q8_k_at)?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// The Q4_K/Q5_K mins term and Q6_K's `- 32` offset use the stored
    /// `bsums` whatever they are: here pairs of them overflow 16 bits
    /// (llama.cpp's Q4_K/Q5_K AVX2 kernels add the pairs in 16 bits and
    /// would be off by multiples of 65536).
    #[test]
    fn k_dots_take_any_bsums(
        bytes in proptest::collection::vec(any::<u8>(), 210),
        qs in proptest::collection::vec(any::<i8>(), QK_K),
        bsums in proptest::collection::vec(prop_oneof![Just(i16::MIN), Just(i16::MAX), any::<i16>()], 16),
    ) {
        let mut q4: BlockQ4K = bytemuck::pod_read_unaligned(&bytes[..144]);
        q4.d = f16::ONE;
        q4.dmin = f16::ONE;
        let mut q5: BlockQ5K = bytemuck::pod_read_unaligned(&bytes[..176]);
        q5.d = f16::ONE;
        q5.dmin = f16::ONE;
        let mut q6: BlockQ6K = bytemuck::pod_read_unaligned(&bytes[..210]);
        q6.d = f16::ONE;
        let y = q8_k_raw(&qs, 8, Some(&bsums));
        // Bounds of the min and scale parts (scales and mins are below 64).
        let mag = bsums.iter().map(|&b| 63.0 * f64::from(b).abs()).sum::<f64>()
            + 63.0 * 31.0 * 8.0 * 256.0;
        // Q6_K: |32 sc bsums| and |sc q y| with scales up to 128.
        let mag6 = bsums.iter().map(|&b| 32.0 * 128.0 * f64::from(b).abs()).sum::<f64>()
            + 128.0 * 63.0 * 8.0 * 256.0;
        // Q6_K's exact value: the codes' sum less the stored offset.
        let codes = {
            let mut d = [0f32; QK_K];
            kquants::dequantize_row_q6_k(&[q6], &mut d).unwrap();
            // dequantized = sc (q - 32), so sc q = d + 32 sc.
            d.iter().enumerate().map(|(i, &v)| {
                (f64::from(v) + 32.0 * f64::from(q6.scales[i / 16])) * f64::from(y[0].qs[i])
            }).sum::<f64>()
        };
        let off: f64 = (0..16).map(|j| 32.0 * f64::from(q6.scales[j]) * f64::from(bsums[j])).sum();
        let want6 = kquants::vec_dot_q6_k_q8_k(&[q6], &y).unwrap();
        prop_assert!((f64::from(want6) - (codes - off)).abs() <= 1e-6 * mag6, "{want6} vs {}", codes - off);
        for level in levels() {
            for (got, want, mag) in [
                (dispatch::vec_dot_q4_k_q8_k_at(level, &[q4], &y), kquants::vec_dot_q4_k_q8_k(&[q4], &y), mag),
                (dispatch::vec_dot_q5_k_q8_k_at(level, &[q5], &y), kquants::vec_dot_q5_k_q8_k(&[q5], &y), mag),
                (dispatch::vec_dot_q6_k_q8_k_at(level, &[q6], &y), Ok(want6), mag6),
            ] {
                let (got, want) = (got.unwrap(), want.unwrap());
                prop_assert!(
                    (f64::from(got) - f64::from(want)).abs() <= 1e-6 * mag,
                    "{got} vs {want} at {level:?}"
                );
            }
        }
    }
}

/// A byte that is often an extreme one (all ones, zero, 0x80).
fn extreme_u8() -> impl Strategy<Value = u8> {
    prop_oneof![3 => any::<u8>(), 1 => Just(0xFF), 1 => Just(0x00), 1 => Just(0x80)]
}

/// A Q8 quant that is often an extreme one (-128 above all).
fn extreme_i8() -> impl Strategy<Value = i8> {
    prop_oneof![3 => any::<i8>(), 2 => Just(i8::MIN), 1 => Just(i8::MAX), 1 => Just(-1)]
}

/// Q8_K blocks with `d = 1`, any quants (-128 included) and the given
/// `bsums` (or, if `None`, the true ones).
fn q8_k_full(qs: &[i8], bsums: Option<&[i16]>) -> Vec<BlockQ8K> {
    qs.chunks_exact(QK_K)
        .enumerate()
        .map(|(i, c)| {
            let mut b = BlockQ8K::zeroed();
            b.d = 1.0;
            b.qs.copy_from_slice(c);
            for (j, s) in b.bsums.iter_mut().enumerate() {
                *s = match bsums {
                    Some(v) => v[16 * i + j],
                    None => b.qs[16 * j..16 * j + 16]
                        .iter()
                        .map(|&q| i16::from(q))
                        .sum(),
                };
            }
            b
        })
        .collect()
}

/// Legacy blocks with offsets from `xbytes` (20 bytes each: `qh`, then
/// `qs`) and Q8 blocks from `ybytes`, unit scales (`y`'s of sign `neg`),
/// small integer offsets `m` and `s`, and `qh` all ones if `all_high`:
/// every partial sum is an integer below 2^24, so every level must give the
/// scalar bits.
fn legacy_offset_dots_exact(
    nb: usize,
    xbytes: &[u8],
    ybytes: &[i8],
    offsets: &[i8],
    neg: bool,
    all_high: bool,
) -> Result<(), TestCaseError> {
    let one = if neg { -f16::ONE } else { f16::ONE };
    let int = |v: i8| f16::from_f32(f32::from(v));
    let qh = |c: &[u8]| -> [u8; 4] {
        if all_high {
            [0xFF; 4]
        } else {
            c[..4].try_into().unwrap()
        }
    };
    let qs = |c: &[u8]| -> [u8; 16] { c[4..].try_into().unwrap() };
    let xs = xbytes.chunks_exact(20).take(nb);
    let ys = ybytes.chunks_exact(32).take(nb);
    let y0: Vec<BlockQ8_0> = ys
        .clone()
        .map(|c| BlockQ8_0 {
            d: one,
            qs: c.try_into().unwrap(),
        })
        .collect();
    let y1: Vec<BlockQ8_1> = ys
        .zip(&offsets[32..])
        .map(|(c, &s)| BlockQ8_1 {
            d: one,
            s: int(s),
            qs: c.try_into().unwrap(),
        })
        .collect();
    let x41: Vec<BlockQ4_1> = xs
        .clone()
        .zip(offsets)
        .map(|(c, &m)| BlockQ4_1 {
            d: f16::ONE,
            m: int(m),
            qs: qs(c),
        })
        .collect();
    let x50: Vec<BlockQ5_0> = xs
        .clone()
        .map(|c| BlockQ5_0 {
            d: f16::ONE,
            qh: qh(c),
            qs: qs(c),
        })
        .collect();
    let x51: Vec<BlockQ5_1> = xs
        .zip(offsets)
        .map(|(c, &m)| BlockQ5_1 {
            d: f16::ONE,
            m: int(m),
            qh: qh(c),
            qs: qs(c),
        })
        .collect();
    check_dot(
        "int q4_1",
        &x41,
        &y1,
        0.0,
        true,
        legacy::vec_dot_q4_1_q8_1,
        dispatch::vec_dot_q4_1_q8_1_at,
    )?;
    check_dot(
        "int q5_0",
        &x50,
        &y0,
        0.0,
        true,
        legacy::vec_dot_q5_0_q8_0,
        dispatch::vec_dot_q5_0_q8_0_at,
    )?;
    check_dot(
        "int q5_1",
        &x51,
        &y1,
        0.0,
        true,
        legacy::vec_dot_q5_1_q8_1,
        dispatch::vec_dot_q5_1_q8_1_at,
    )
}

/// One Q2_K block and `nb` Q3_K blocks from `bytes` with unit scales, and
/// Q8_K blocks of any quants: the Q2_K sums stay below 9.5e6 even with
/// arbitrary `bsums` (16 * 32768 * 15 + 256 * 3 * 128 * 15), the Q3_K ones
/// below 4.2e6 per block (256 * 4 * 128 * 32), so every level must give the
/// scalar bits. `scales` and `hmask` override those bytes when given (0xFF
/// is the largest Q2_K scale and min and the largest 6-bit Q3_K scale).
#[allow(clippy::too_many_arguments)]
fn k_low_bit_dots_exact(
    nb: usize,
    bytes: &[u8],
    qs: &[i8],
    bsums: Option<&[i16]>,
    neg_dmin: bool,
    scales: Option<u8>,
    hmask: Option<u8>,
) -> Result<(), TestCaseError> {
    let y = q8_k_full(&qs[..nb * QK_K], bsums);
    let mut q2: BlockQ2K = bytemuck::pod_read_unaligned(&bytes[..84]);
    q2.d = f16::ONE;
    q2.dmin = if neg_dmin { -f16::ONE } else { f16::ONE };
    if let Some(s) = scales {
        q2.scales = [s; 16];
    }
    check_dot(
        "int q2_K",
        &[q2],
        &y[..1],
        0.0,
        true,
        kquants::vec_dot_q2_k_q8_k,
        dispatch::vec_dot_q2_k_q8_k_at,
    )?;
    let q3: Vec<BlockQ3K> = bytes
        .chunks_exact(110)
        .take(nb)
        .map(|c| {
            let mut b: BlockQ3K = bytemuck::pod_read_unaligned(c);
            b.d = f16::ONE;
            if let Some(s) = scales {
                b.scales = [s; 12];
            }
            if let Some(h) = hmask {
                b.hmask = [h; 32];
            }
            b
        })
        .collect();
    check_dot(
        "int q3_K",
        &q3,
        &y,
        0.0,
        true,
        kquants::vec_dot_q3_k_q8_k,
        dispatch::vec_dot_q3_k_q8_k_at,
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    /// Q4_1/Q5_0/Q5_1: exact for any block bytes, the extremes favoured.
    #[test]
    fn legacy_offset_integer_dots_are_exact(
        nb in 1usize..=32,
        xbytes in proptest::collection::vec(extreme_u8(), 32 * 20),
        ybytes in proptest::collection::vec(extreme_i8(), 32 * 32),
        offsets in proptest::collection::vec(-64i8..=64, 64),
        neg in any::<bool>(),
        all_high in any::<bool>(),
    ) {
        legacy_offset_dots_exact(nb, &xbytes, &ybytes, &offsets, neg, all_high)?;
    }

    /// Q2_K/Q3_K: exact for any block bytes, Q8_K quants (-128 included)
    /// and stored `bsums`, the extremes favoured.
    #[test]
    fn q2_k_q3_k_integer_dots_are_exact(
        nb in 1usize..=2,
        bytes in proptest::collection::vec(extreme_u8(), 2 * 110),
        qs in proptest::collection::vec(extreme_i8(), 2 * QK_K),
        bsums in proptest::collection::vec(
            prop_oneof![Just(i16::MIN), Just(i16::MAX), any::<i16>()],
            2 * 16,
        ),
        own_bsums in any::<bool>(),
        neg_dmin in any::<bool>(),
        scales in prop_oneof![2 => Just(None), 1 => Just(Some(0x00u8)), 1 => Just(Some(0xFFu8))],
        hmask in prop_oneof![2 => Just(None), 1 => Just(Some(0x00u8)), 1 => Just(Some(0xFFu8))],
    ) {
        let bs = if own_bsums { None } else { Some(&bsums[..]) };
        k_low_bit_dots_exact(nb, &bytes, &qs, bs, neg_dmin, scales, hmask)?;
    }
}

/// The corners outright: every quant byte at an extreme, against Q8 quants
/// of -128 or 127 (and the extreme `bsums`).
#[test]
fn extreme_blocks_dot_exactly() {
    for xb in [0x00u8, 0xFF, 0x80, 0x7F, 0x55, 0xAA] {
        for yq in [i8::MIN, i8::MAX, -1] {
            for all_high in [false, true] {
                legacy_offset_dots_exact(
                    32,
                    &[xb; 32 * 20],
                    &[yq; 32 * 32],
                    &[64; 64],
                    false,
                    all_high,
                )
                .unwrap_or_else(|e| panic!("legacy {xb:#x} x {yq}: {e}"));
                legacy_offset_dots_exact(
                    3,
                    &[xb; 32 * 20],
                    &[yq; 32 * 32],
                    &[-64; 64],
                    true,
                    all_high,
                )
                .unwrap_or_else(|e| panic!("legacy {xb:#x} x {yq}, negative: {e}"));
            }
            for bs in [None, Some(&[i16::MIN; 32][..]), Some(&[i16::MAX; 32][..])] {
                for hmask in [None, Some(0x00), Some(0xFF)] {
                    k_low_bit_dots_exact(2, &[xb; 220], &[yq; 2 * QK_K], bs, false, None, hmask)
                        .unwrap_or_else(|e| panic!("k {xb:#x} x {yq}: {e}"));
                    k_low_bit_dots_exact(
                        2,
                        &[xb; 220],
                        &[yq; 2 * QK_K],
                        bs,
                        true,
                        Some(0xFF),
                        hmask,
                    )
                    .unwrap_or_else(|e| panic!("k {xb:#x} x {yq}, max scales: {e}"));
                    k_low_bit_dots_exact(
                        1,
                        &[xb; 220],
                        &[yq; 2 * QK_K],
                        bs,
                        true,
                        Some(0x00),
                        hmask,
                    )
                    .unwrap_or_else(|e| panic!("k {xb:#x} x {yq}, zero scales: {e}"));
                }
            }
        }
    }
}

#[test]
fn adversarial_rows_match_scalar() {
    for nb in [1, 2, 3] {
        for (name, x) in adversarial_rows(nb * QK_K) {
            all(&x).unwrap_or_else(|e| panic!("{name}, {nb} blocks: {e}"));
        }
    }
    for (name, x) in adversarial_rows(32) {
        all(&x).unwrap_or_else(|e| panic!("{name}, one legacy block: {e}"));
    }
}

#[test]
fn long_rows_match_scalar() {
    // Many blocks: accumulators across blocks, and 1 << 14 values.
    let x: Vec<f32> = (0..1 << 14)
        .map(|i| ((i as f32) * 0.618).sin() * (1.0 + (i % 97) as f32))
        .collect();
    all(&x).unwrap();
}

#[test]
fn default_level_entry_points_match_scalar() {
    let x: Vec<f32> = (0..2 * QK_K).map(|i| (i as f32 * 0.37).cos()).collect();
    let mut a = vec![BlockQ8K::zeroed(); 2];
    dispatch::quantize_row_q8_k(&x, &mut a).unwrap();
    assert_eq!(a, q8_k(&x));
    let mut b = vec![BlockQ8_0::zeroed(); 16];
    dispatch::quantize_row_q8_0(&x, &mut b).unwrap();
    assert_eq!(b, q8_0(&x));
    let mut y = vec![0f32; x.len()];
    dispatch::dequantize_row_q8_0(&b, &mut y).unwrap();
    assert_eq!(y, dequant(&b, 32, legacy::dequantize_row_q8_0));
    let mut q6 = vec![BlockQ6K::zeroed(); 2];
    kquants::quantize_row_q6_k_ref(&x, &mut q6).unwrap();
    dispatch::dequantize_row_q6_k(&q6, &mut y).unwrap();
    assert_eq!(y, dequant(&q6, QK_K, kquants::dequantize_row_q6_k));
    let want = kquants::vec_dot_q6_k_q8_k(&q6, &a).unwrap();
    let got = dispatch::vec_dot_q6_k_q8_k(&q6, &a).unwrap();
    assert!(
        (got - want).abs() <= 1e-4 * want.abs().max(1.0),
        "{got} vs {want}"
    );
}

// ----------------------------------------------------------- argument checks

#[test]
fn errors_match_scalar_at_every_level() {
    let x: Vec<f32> = (0..QK_K).map(|i| i as f32).collect();
    for level in levels() {
        // Dequantize lengths.
        let q8 = q8_0(&x);
        assert_eq!(
            dispatch::dequantize_row_q8_0_at(level, &q8, &mut [0.0; 10]),
            legacy::dequantize_row_q8_0(&q8, &mut [0.0; 10])
        );
        let q4 = [BlockQ4_0::zeroed(); 3];
        assert_eq!(
            dispatch::dequantize_row_q4_0_at(level, &q4, &mut [0.0; 97]),
            legacy::dequantize_row_q4_0(&q4, &mut [0.0; 97])
        );
        let k4 = [BlockQ4K::zeroed(); 2];
        assert_eq!(
            dispatch::dequantize_row_q4_k_at(level, &k4, &mut [0.0; QK_K]),
            kquants::dequantize_row_q4_k(&k4, &mut [0.0; QK_K])
        );
        let k5 = [BlockQ5K::zeroed(); 1];
        assert_eq!(
            dispatch::dequantize_row_q5_k_at(level, &k5, &mut []),
            kquants::dequantize_row_q5_k(&k5, &mut [])
        );
        let k6 = [BlockQ6K::zeroed(); 1];
        assert!(matches!(
            dispatch::dequantize_row_q6_k_at(level, &k6, &mut [0.0; 2 * QK_K]),
            Err(QuantError::BufferLength {
                expected: 256,
                found: 512,
                ..
            })
        ));

        // Quantize: not whole blocks, wrong destination, non-finite values
        // (reported at their index, with the destination left untouched).
        let mut d0 = vec![BlockQ8_0::zeroed(); 8];
        assert_eq!(
            dispatch::quantize_row_q8_0_at(level, &x[..33], &mut d0[..1]),
            legacy::quantize_row_q8_0_ref(&x[..33], &mut d0[..1])
        );
        assert_eq!(
            dispatch::quantize_row_q8_0_at(level, &x, &mut d0[..7]),
            legacy::quantize_row_q8_0_ref(&x, &mut d0[..7])
        );
        let mut dk = vec![BlockQ8K::zeroed(); 2];
        assert_eq!(
            dispatch::quantize_row_q8_k_at(level, &x[..255], &mut dk[..1]),
            kquants::quantize_row_q8_k_ref(&x[..255], &mut dk[..1])
        );
        assert_eq!(
            dispatch::quantize_row_q8_k_at(level, &x, &mut dk),
            kquants::quantize_row_q8_k_ref(&x, &mut dk)
        );
        for (index, bad) in [(0, f32::NAN), (77, f32::INFINITY), (255, f32::NEG_INFINITY)] {
            let mut x = x.clone();
            x[index] = bad;
            let mut d0 = vec![BlockQ8_0::zeroed(); 8];
            let err = dispatch::quantize_row_q8_0_at(level, &x, &mut d0).unwrap_err();
            assert!(matches!(err, QuantError::NonFiniteInput { index: i, .. } if i == index));
            assert!(d0.iter().all(|b| *b == BlockQ8_0::zeroed()));
            let mut d1 = vec![BlockQ8_1::zeroed(); 8];
            let err = dispatch::quantize_row_q8_1_at(level, &x, &mut d1).unwrap_err();
            assert!(matches!(err, QuantError::NonFiniteInput { index: i, .. } if i == index));
            assert!(d1.iter().all(|b| *b == BlockQ8_1::zeroed()));
            let mut dk = vec![BlockQ8K::zeroed(); 1];
            let err = dispatch::quantize_row_q8_k_at(level, &x, &mut dk).unwrap_err();
            assert!(matches!(err, QuantError::NonFiniteInput { index: i, .. } if i == index));
            assert!(dk.iter().all(|b| *b == BlockQ8K::zeroed()));
        }

        // Dot products: both sides as many blocks; empty rows are fine.
        assert_eq!(
            dispatch::vec_dot_q8_0_q8_0_at(level, &q8, &q8[1..]),
            legacy::vec_dot_q8_0_q8_0(&q8, &q8[1..])
        );
        assert_eq!(
            dispatch::vec_dot_q4_0_q8_0_at(level, &q4, &q8),
            legacy::vec_dot_q4_0_q8_0(&q4, &q8)
        );
        let q41 = [BlockQ4_1::zeroed(); 3];
        let q81 = [BlockQ8_1::zeroed(); 2];
        assert_eq!(
            dispatch::vec_dot_q4_1_q8_1_at(level, &q41, &q81),
            legacy::vec_dot_q4_1_q8_1(&q41, &q81)
        );
        let q50 = [BlockQ5_0::zeroed(); 2];
        assert_eq!(
            dispatch::vec_dot_q5_0_q8_0_at(level, &q50, &q8),
            legacy::vec_dot_q5_0_q8_0(&q50, &q8)
        );
        assert_eq!(
            dispatch::vec_dot_q5_1_q8_1_at(level, &[BlockQ5_1::zeroed()], &q81),
            legacy::vec_dot_q5_1_q8_1(&[BlockQ5_1::zeroed()], &q81)
        );
        assert_eq!(dispatch::vec_dot_q5_1_q8_1_at(level, &[], &[]), Ok(0.0));
        let y = [BlockQ8K::zeroed(); 1];
        assert_eq!(
            dispatch::vec_dot_q4_k_q8_k_at(level, &k4, &y),
            kquants::vec_dot_q4_k_q8_k(&k4, &y)
        );
        assert_eq!(
            dispatch::vec_dot_q5_k_q8_k_at(level, &[], &y),
            kquants::vec_dot_q5_k_q8_k(&[], &y)
        );
        let k2 = [BlockQ2K::zeroed(); 2];
        assert_eq!(
            dispatch::vec_dot_q2_k_q8_k_at(level, &k2, &y),
            kquants::vec_dot_q2_k_q8_k(&k2, &y)
        );
        assert_eq!(
            dispatch::vec_dot_q3_k_q8_k_at(level, &[], &y),
            kquants::vec_dot_q3_k_q8_k(&[], &y)
        );
        assert_eq!(dispatch::vec_dot_q3_k_q8_k_at(level, &[], &[]), Ok(0.0));
        assert_eq!(
            dispatch::vec_dot_q6_k_q8_k_at(level, &k6, &[]),
            kquants::vec_dot_q6_k_q8_k(&k6, &[])
        );
        assert_eq!(dispatch::vec_dot_q6_k_q8_k_at(level, &[], &[]), Ok(0.0));
        assert_eq!(dispatch::vec_dot_q8_0_q8_0_at(level, &[], &[]), Ok(0.0));
        dispatch::quantize_row_q8_0_at(level, &[], &mut []).unwrap();
        dispatch::dequantize_row_q4_k_at(level, &[], &mut []).unwrap();
    }
}

#[test]
fn levels_above_the_cpu_are_capped() {
    // Asking for more than the CPU has must still run (at what it has).
    let x: Vec<f32> = (0..64).map(|i| i as f32 - 20.0).collect();
    let mut q = vec![BlockQ8_0::zeroed(); 2];
    dispatch::quantize_row_q8_0_at(Level::Avx512, &x, &mut q).unwrap();
    assert_eq!(q, q8_0(&x));
    // The byte-level dot's chooser caps the same way.
    let f = weightkit_quant::vec_dot_fn_at(weightkit_core::DType::Q8_0, Level::Avx512).unwrap();
    assert_eq!(f.level(), weightkit_quant::simd::supported());
}

// ------------------------------------------------- k-quant scale searches

/// A matrix quantizer (rows, optional importance) at a chosen level.
type KQuantAt<B> = fn(Level, &[f32], &mut [B], usize, Option<&[f32]>) -> Result<(), QuantError>;

/// Quantizes `x` (one row) at every level, with and without `imatrix`, and
/// checks the bytes against the scalar level (ggml's one-group search).
fn check_kquant<B: bytemuck::Pod>(
    name: &str,
    x: &[f32],
    imatrix: &[f32],
    at: KQuantAt<B>,
) -> Result<(), TestCaseError> {
    let nb = x.len() / if name.ends_with("_K") { QK_K } else { 32 };
    for qw in [None, Some(imatrix)] {
        let mut want = vec![B::zeroed(); nb];
        at(Level::Scalar, x, &mut want, x.len(), qw).unwrap();
        for level in levels() {
            let mut got = vec![B::zeroed(); nb];
            at(level, x, &mut got, x.len(), qw).unwrap();
            // Bytes, not `==`: extreme importance gives NaN scales (as in ggml).
            prop_assert_eq!(
                bytemuck::cast_slice::<_, u8>(&got),
                bytemuck::cast_slice::<_, u8>(&want),
                "{} at {:?}, imatrix: {}",
                name,
                level,
                qw.is_some()
            );
        }
    }
    Ok(())
}

/// Every k-quant and legacy matrix quantizer on `x` (a multiple of 32
/// values; the k-quants only when it is a multiple of 256).
fn kquantizers(x: &[f32], imatrix: &[f32]) -> Result<(), TestCaseError> {
    check_kquant::<BlockQ4_0>("q4_0", x, imatrix, dispatch::quantize_q4_0_at)?;
    check_kquant::<BlockQ4_1>("q4_1", x, imatrix, dispatch::quantize_q4_1_at)?;
    check_kquant::<BlockQ5_0>("q5_0", x, imatrix, dispatch::quantize_q5_0_at)?;
    check_kquant::<BlockQ5_1>("q5_1", x, imatrix, dispatch::quantize_q5_1_at)?;
    if !x.len().is_multiple_of(QK_K) {
        return Ok(());
    }
    check_kquant::<BlockQ2K>("q2_K", x, imatrix, dispatch::quantize_q2_k_at)?;
    check_kquant::<BlockQ3K>("q3_K", x, imatrix, dispatch::quantize_q3_k_at)?;
    check_kquant::<BlockQ4K>("q4_K", x, imatrix, dispatch::quantize_q4_k_at)?;
    check_kquant::<BlockQ5K>("q5_K", x, imatrix, dispatch::quantize_q5_k_at)?;
    check_kquant::<BlockQ6K>("q6_K", x, imatrix, dispatch::quantize_q6_k_at)
}

/// Rows whose 16-value groups each take a different hard case, so that the
/// eight groups searched side by side disagree about which branch to take:
/// flat groups (all equal, all zero, all positive), one-sided groups, tiny
/// and huge spreads, outliers.
fn mixed_group_rows(nb: usize) -> Vec<(String, Vec<f32>)> {
    let kinds = 12;
    let group = |kind: usize, g: usize| -> Vec<f32> {
        (0..16)
            .map(|i| {
                let t = ((i * 7 + g * 3) % 16) as f32 - 7.5;
                match kind {
                    0 => 0.0,
                    1 => -0.0,
                    2 => 3.25,
                    3 => -1.5,
                    4 => t.abs() + 0.5,
                    5 => -(t.abs() + 0.5),
                    6 => t * 1e-40,
                    7 => t * 1e-20,
                    8 => t * 1000.0,
                    9 => {
                        if i == 5 {
                            1e4
                        } else {
                            t * 0.01
                        }
                    }
                    10 => {
                        if i % 2 == 0 {
                            1.0
                        } else {
                            0.0
                        }
                    }
                    _ => (t * 0.37).sin(),
                }
            })
            .collect()
    };
    (0..kinds)
        .map(|shift| {
            let x = (0..nb * QK_K / 16)
                .flat_map(|g| group((g + shift) % kinds, g))
                .collect();
            (format!("mixed groups, shift {shift}"), x)
        })
        .collect()
}

fn importance(n: usize) -> Vec<f32> {
    (0..n)
        .map(|i| match i % 11 {
            0 => 0.0,
            3 => 1e-30,
            5 => 1e6,
            _ => 0.5 + (i % 13) as f32,
        })
        .collect()
}

#[test]
fn kquant_searches_match_scalar_on_adversarial_rows() {
    for nb in [1, 2] {
        let qw = importance(nb * QK_K);
        for (name, x) in adversarial_rows(nb * QK_K) {
            kquantizers(&x, &qw).unwrap_or_else(|e| panic!("{name}, {nb} blocks: {e}"));
        }
        for (name, x) in mixed_group_rows(nb) {
            kquantizers(&x, &qw).unwrap_or_else(|e| panic!("{name}, {nb} blocks: {e}"));
        }
        // Rows with blocks beyond the last group of eight (legacy types).
        for (name, mut x) in mixed_group_rows(nb) {
            x.extend_from_within(..96);
            let qw = importance(x.len());
            kquantizers(&x, &qw).unwrap_or_else(|e| panic!("{name} + 3 blocks: {e}"));
        }
    }
}

/// A row of `QK_K * (1..=2)` values (sometimes plus a few 32-value blocks,
/// which only the legacy types take) whose 16-value groups each have their
/// own magnitude (so the searched groups differ), and an importance row.
fn kquant_case() -> impl Strategy<Value = (Vec<f32>, Vec<f32>)> {
    (1usize..=2, prop_oneof![Just(0usize), 1usize..8]).prop_flat_map(|(nb, extra)| {
        let n = nb * QK_K + 32 * extra;
        (
            proptest::collection::vec(value(), n),
            proptest::collection::vec(-30i32..30, n / 16),
            proptest::collection::vec(
                prop_oneof![4 => 0.0f32..10.0, 1 => Just(0.0f32), 1 => 0.0f32..1e-30],
                n,
            ),
        )
            .prop_map(|(v, exps, qw)| {
                let x = v
                    .iter()
                    .enumerate()
                    .map(|(i, &a)| {
                        let e = exps[i / 16];
                        // Some groups flat or sign-free, most scaled.
                        match e {
                            29 => 0.0,
                            28 => 1.0,
                            27 => a.abs(),
                            _ => Some(a * 2f32.powi(e / 3))
                                .filter(|s| s.is_finite())
                                .unwrap_or(a),
                        }
                    })
                    .collect();
                (x, qw)
            })
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn kquant_searches_match_scalar((x, qw) in kquant_case()) {
        kquantizers(&x, &qw)?;
    }
}

/// Q8_0 x Q8_0 at its corners: x = -128 (the exact widening path) and
/// x in {-1, 127, 0} against y = -128 (the fast `|y| * (x sign y)` path,
/// where llama.cpp's `|x| * (y sign x)` wraps), block by block and mixed.
#[test]
fn q8_0_dot_corners_are_exact() {
    let block = |v: i8| BlockQ8_0 {
        d: f16::ONE,
        qs: [v; 32],
    };
    for xv in [i8::MIN, -1, i8::MAX, 0] {
        for yv in [i8::MIN, i8::MAX, -1] {
            let x = vec![block(xv); 5];
            let y = vec![block(yv); 5];
            check_dot(
                "q8_0 corner",
                &x,
                &y,
                0.0,
                true,
                legacy::vec_dot_q8_0_q8_0,
                dispatch::vec_dot_q8_0_q8_0_at,
            )
            .unwrap_or_else(|e| panic!("{xv} x {yv}: {e}"));
            let want = 5.0 * 32.0 * f32::from(xv) * f32::from(yv);
            let got = dispatch::vec_dot_q8_0_q8_0(&x, &y).unwrap();
            assert_eq!(got, want, "{xv} x {yv}");
        }
    }
    // One block of each path in the same call.
    let x = vec![block(i8::MIN), block(-1), block(i8::MIN), block(-1)];
    let y = vec![block(i8::MIN); 4];
    assert_eq!(
        dispatch::vec_dot_q8_0_q8_0(&x, &y).unwrap(),
        2.0 * 32.0 * 16384.0 + 2.0 * 32.0 * 128.0
    );
}
