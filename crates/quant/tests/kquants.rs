//! k-quants (Q2_K..Q6_K, Q8_K): bit-exactness against llama.cpp's reference
//! vectors and gguf-py's dequantization, test-quantize-fns error metrics,
//! adversarial inputs, argument checks and a no-panic property.

use std::fmt::Debug;
use std::path::PathBuf;

use bytemuck::Zeroable;
use proptest::prelude::*;
use weightkit_quant::QuantError;
use weightkit_quant::kquants::*;

const ROWS: usize = 8;
const COLS: usize = 4096;
const DISTS: [&str; 4] = ["uniform", "gauss", "outlier", "edge"];

fn testdata(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../testdata")
        .join(rel)
}

fn read_f32(rel: &str) -> Vec<f32> {
    let bytes = std::fs::read(testdata(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"));
    assert_eq!(bytes.len() % 4, 0, "{rel}");
    bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

/// One k-quant type, seen uniformly by the tests.
trait KQuant: bytemuck::Pod + Debug + PartialEq {
    /// ggml's type name as used in the reference file names.
    const NAME: &'static str;
    fn quantize(
        src: &[f32],
        dst: &mut [Self],
        n: usize,
        im: Option<&[f32]>,
    ) -> Result<(), QuantError>;
    fn quantize_ref(x: &[f32], y: &mut [Self]) -> Result<(), QuantError>;
    fn dequantize(x: &[Self], y: &mut [f32]) -> Result<(), QuantError>;
    fn vec_dot(x: &[Self], y: &[BlockQ8K]) -> Result<f32, QuantError>;
}

macro_rules! kquant {
    ($b:ty, $name:literal, $q:ident, $qr:ident, $dq:ident, $dot:ident) => {
        impl KQuant for $b {
            const NAME: &'static str = $name;
            fn quantize(
                s: &[f32],
                d: &mut [Self],
                n: usize,
                im: Option<&[f32]>,
            ) -> Result<(), QuantError> {
                $q(s, d, n, im)
            }
            fn quantize_ref(x: &[f32], y: &mut [Self]) -> Result<(), QuantError> {
                $qr(x, y)
            }
            fn dequantize(x: &[Self], y: &mut [f32]) -> Result<(), QuantError> {
                $dq(x, y)
            }
            fn vec_dot(x: &[Self], y: &[BlockQ8K]) -> Result<f32, QuantError> {
                $dot(x, y)
            }
        }
    };
}

kquant!(
    BlockQ2K,
    "q2_K",
    quantize_q2_k,
    quantize_row_q2_k_ref,
    dequantize_row_q2_k,
    vec_dot_q2_k_q8_k
);
kquant!(
    BlockQ3K,
    "q3_K",
    quantize_q3_k,
    quantize_row_q3_k_ref,
    dequantize_row_q3_k,
    vec_dot_q3_k_q8_k
);
kquant!(
    BlockQ4K,
    "q4_K",
    quantize_q4_k,
    quantize_row_q4_k_ref,
    dequantize_row_q4_k,
    vec_dot_q4_k_q8_k
);
kquant!(
    BlockQ5K,
    "q5_K",
    quantize_q5_k,
    quantize_row_q5_k_ref,
    dequantize_row_q5_k,
    vec_dot_q5_k_q8_k
);
kquant!(
    BlockQ6K,
    "q6_K",
    quantize_q6_k,
    quantize_row_q6_k_ref,
    dequantize_row_q6_k,
    vec_dot_q6_k_q8_k
);

fn zeroed<B: KQuant>(n: usize) -> Vec<B> {
    vec![B::zeroed(); n]
}

/// Quantizes every distribution with and without the importance matrix and
/// compares with llama.cpp's bytes; returns one line per mismatching file.
fn reference_quantize_failures<B: KQuant>() -> Vec<String> {
    let imatrix = read_f32("ggml-reference/imatrix.f32");
    assert_eq!(imatrix.len(), COLS);
    let mut failures = Vec::new();
    for dist in DISTS {
        let x = read_f32(&format!("ggml-reference/{dist}.f32"));
        assert_eq!(x.len(), ROWS * COLS);
        for im in [None, Some(imatrix.as_slice())] {
            let suffix = if im.is_some() { "_imatrix" } else { "" };
            let file = format!("ggml-reference/{dist}_{}{suffix}.q", B::NAME);
            let want = std::fs::read(testdata(&file)).unwrap();
            let mut got = zeroed::<B>(ROWS * COLS / QK_K);
            B::quantize(&x, &mut got, COLS, im).unwrap();
            let got_bytes: &[u8] = bytemuck::cast_slice(&got);
            assert_eq!(got_bytes.len(), want.len(), "{file}");
            if got_bytes != want.as_slice() {
                let want_blocks: Vec<B> = bytemuck::pod_collect_to_vec(&want);
                let bad: Vec<usize> = (0..got.len())
                    .filter(|&i| got[i] != want_blocks[i])
                    .collect();
                let i = bad[0];
                failures.push(format!(
                    "{file}: {} of {} blocks differ (first: block {i}, row {}, block-in-row {})\n  ours:  {:?}\n  ggml:  {:?}",
                    bad.len(),
                    got.len(),
                    i / (COLS / QK_K),
                    i % (COLS / QK_K),
                    got[i],
                    want_blocks[i],
                ));
            }
        }
    }
    failures
}

/// Dequantizes llama.cpp's bytes and compares with its floats bit for bit.
fn reference_dequantize_failures<B: KQuant>() -> Vec<String> {
    let mut failures = Vec::new();
    for dist in DISTS {
        for suffix in ["", "_imatrix"] {
            let stem = format!("ggml-reference/{dist}_{}{suffix}", B::NAME);
            let q = std::fs::read(testdata(&format!("{stem}.q"))).unwrap();
            let want = read_f32(&format!("{stem}.deq.f32"));
            let blocks: Vec<B> = bytemuck::pod_collect_to_vec(&q);
            let mut got = vec![0f32; blocks.len() * QK_K];
            B::dequantize(&blocks, &mut got).unwrap();
            assert_eq!(got.len(), want.len(), "{stem}");
            if let Some(i) = (0..got.len()).find(|&i| got[i].to_bits() != want[i].to_bits()) {
                failures.push(format!(
                    "{stem}.deq.f32: element {i}: ours {} ggml {}",
                    got[i], want[i]
                ));
            }
        }
    }
    failures
}

fn check_reference<B: KQuant>() {
    let mut failures = reference_quantize_failures::<B>();
    failures.extend(reference_dequantize_failures::<B>());
    assert!(
        failures.is_empty(),
        "{} mismatches:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn q2_k_matches_llama_cpp() {
    check_reference::<BlockQ2K>();
}

#[test]
fn q3_k_matches_llama_cpp() {
    check_reference::<BlockQ3K>();
}

#[test]
fn q4_k_matches_llama_cpp() {
    check_reference::<BlockQ4K>();
}

#[test]
fn q5_k_matches_llama_cpp() {
    check_reference::<BlockQ5K>();
}

#[test]
fn q6_k_matches_llama_cpp() {
    check_reference::<BlockQ6K>();
}

/// The row-level `_ref` entry points equal `quantize_*` without importance.
#[test]
fn row_ref_equals_matrix_quantize_without_imatrix() {
    fn check<B: KQuant>(x: &[f32]) {
        let mut a = zeroed::<B>(x.len() / QK_K);
        let mut b = zeroed::<B>(x.len() / QK_K);
        B::quantize(x, &mut a, COLS, None).unwrap();
        B::quantize_ref(x, &mut b).unwrap();
        assert_eq!(a, b, "{}", B::NAME);
    }
    let x = read_f32("ggml-reference/gauss.f32");
    let x = &x[..2 * COLS];
    check::<BlockQ2K>(x);
    check::<BlockQ3K>(x);
    check::<BlockQ4K>(x);
    check::<BlockQ5K>(x);
    check::<BlockQ6K>(x);
}

// ------------------------------------------------------------------ gguf-py

fn check_gguf_py<B: KQuant>(
    gguf: &weightkit_gguf::GgufFile,
    expect: &weightkit_safetensors::SafetensorsFile,
    name: &str,
) {
    let q = gguf.tensor(name).unwrap();
    let blocks: Vec<B> = bytemuck::pod_collect_to_vec(q.data());
    let want_t = expect.tensor(name).unwrap();
    let want: Vec<f32> = want_t
        .data()
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    let mut got = vec![0f32; blocks.len() * QK_K];
    B::dequantize(&blocks, &mut got).unwrap();
    assert_eq!(got.len(), want.len(), "{name}");
    for i in 0..got.len() {
        assert_eq!(
            got[i].to_bits(),
            want[i].to_bits(),
            "{name}: element {i} (block {}): ours {} gguf-py {}\n  block: {:?}",
            i / QK_K,
            got[i],
            want[i],
            blocks[i / QK_K]
        );
    }
}

#[test]
fn dequantize_matches_gguf_py() {
    let gguf = weightkit_gguf::GgufFile::open(testdata("gguf/dequant-only.gguf")).unwrap();
    let expect = weightkit_safetensors::SafetensorsFile::open(testdata(
        "gguf/dequant-only.dequant.safetensors",
    ))
    .unwrap();
    check_gguf_py::<BlockQ2K>(&gguf, &expect, "dq.Q2_K");
    check_gguf_py::<BlockQ3K>(&gguf, &expect, "dq.Q3_K");
    check_gguf_py::<BlockQ4K>(&gguf, &expect, "dq.Q4_K");
    check_gguf_py::<BlockQ5K>(&gguf, &expect, "dq.Q5_K");
    check_gguf_py::<BlockQ6K>(&gguf, &expect, "dq.Q6_K");
}

// --------------------------------------------------------- test-quantize-fns

const TEST_SIZE: usize = 32 * 128;

/// `generate_data` of llama.cpp's test-quantize-fns:
/// `dst[i] = 0.1 + amplitude*cosf(i + offset)` (the sum in double).
fn generate_data(offset: f32, amplitude: f32) -> Vec<f32> {
    (0..TEST_SIZE)
        .map(|i| (0.1f64 + (amplitude * (i as f32 + offset).cos()) as f64) as f32)
        .collect()
}

/// `array_rmse`: `sqrtf(sum of squared differences) / n`.
fn array_rmse(a: &[f32], b: &[f32]) -> f32 {
    let mut sum = 0.0f64;
    for (x, y) in a.iter().zip(b) {
        let diff = *x as f64 - *y as f64;
        sum += diff * diff;
    }
    (sum as f32).sqrt() / a.len() as f32
}

fn dot_product(a: &[f32], b: &[f32]) -> f32 {
    let mut sum = 0.0f64;
    for (x, y) in a.iter().zip(b) {
        sum += (x * y) as f64;
    }
    sum as f32
}

fn quantize_fns_metrics<B: KQuant>(max_total: f32, max_dot: f32) {
    let data = generate_data(0.0, 2.0);
    let data2 = generate_data(1.0, 2.0);
    let mut q = zeroed::<B>(TEST_SIZE / QK_K);
    B::quantize_ref(&data, &mut q).unwrap();
    let mut out = vec![0f32; TEST_SIZE];
    B::dequantize(&q, &mut out).unwrap();
    let total = array_rmse(&data, &out);
    assert!(
        total < max_total,
        "{}: total quantization error {total} >= {max_total}",
        B::NAME
    );

    let mut q8 = vec![BlockQ8K::zeroed(); TEST_SIZE / QK_K];
    quantize_row_q8_k_ref(&data2, &mut q8).unwrap();
    let result = B::vec_dot(&q, &q8).unwrap();
    let dot_ref = dot_product(&data, &data2);
    let err = (result - dot_ref).abs() / TEST_SIZE as f32;
    eprintln!(
        "{}: total quantization error {total:.6}, dot product error {err:.6}",
        B::NAME
    );
    assert!(
        err < max_dot,
        "{}: dot product error {err} >= {max_dot} ({result} vs {dot_ref})",
        B::NAME
    );
}

#[test]
fn test_quantize_fns_thresholds() {
    quantize_fns_metrics::<BlockQ2K>(0.0075, 0.04);
    quantize_fns_metrics::<BlockQ3K>(0.004, 0.02);
    quantize_fns_metrics::<BlockQ4K>(0.002, 0.02);
    quantize_fns_metrics::<BlockQ5K>(0.002, 0.02);
    quantize_fns_metrics::<BlockQ6K>(0.002, 0.02);

    let data = generate_data(0.0, 2.0);
    let mut q8 = vec![BlockQ8K::zeroed(); TEST_SIZE / QK_K];
    quantize_row_q8_k_ref(&data, &mut q8).unwrap();
    let mut out = vec![0f32; TEST_SIZE];
    dequantize_row_q8_k(&q8, &mut out).unwrap();
    let total = array_rmse(&data, &out);
    assert!(total < 0.002, "q8_K total quantization error {total}");
}

/// The dot products equal the f32 dot product of the dequantized operands up
/// to float rounding (they are exact integer sums scaled per block).
#[test]
fn vec_dot_agrees_with_dequantized_dot() {
    fn check<B: KQuant>(x: &[f32], y: &[f32]) {
        let mut q = zeroed::<B>(x.len() / QK_K);
        B::quantize_ref(x, &mut q).unwrap();
        let mut q8 = vec![BlockQ8K::zeroed(); y.len() / QK_K];
        quantize_row_q8_k_ref(y, &mut q8).unwrap();
        let mut dx = vec![0f32; x.len()];
        let mut dy = vec![0f32; y.len()];
        B::dequantize(&q, &mut dx).unwrap();
        dequantize_row_q8_k(&q8, &mut dy).unwrap();
        let want: f64 = dx.iter().zip(&dy).map(|(a, b)| *a as f64 * *b as f64).sum();
        let got = B::vec_dot(&q, &q8).unwrap() as f64;
        let scale: f64 = dx
            .iter()
            .zip(&dy)
            .map(|(a, b)| (*a as f64 * *b as f64).abs())
            .sum();
        assert!(
            (got - want).abs() <= 1e-5 * scale + 1e-6,
            "{}: {got} vs {want}",
            B::NAME
        );
    }
    let g = read_f32("ggml-reference/outlier.f32");
    let (x, y) = (&g[..COLS], &g[COLS..2 * COLS]);
    check::<BlockQ2K>(x, y);
    check::<BlockQ3K>(x, y);
    check::<BlockQ4K>(x, y);
    check::<BlockQ5K>(x, y);
    check::<BlockQ6K>(x, y);
}

#[test]
fn q8_k_layout_and_sums() {
    let x = read_f32("ggml-reference/gauss.f32");
    let x = &x[..COLS];
    let mut q = vec![BlockQ8K::zeroed(); COLS / QK_K];
    quantize_row_q8_k_ref(x, &mut q).unwrap();
    for (b, xb) in q.iter().zip(x.chunks_exact(QK_K)) {
        for j in 0..QK_K / 16 {
            let s: i32 = b.qs[16 * j..16 * j + 16].iter().map(|&v| v as i32).sum();
            assert_eq!(s, b.bsums[j] as i32);
        }
        // The element of largest magnitude maps to -127 exactly... or 127
        // with the sign of ggml's `-127/max` scale.
        let (imax, _) =
            xb.iter().enumerate().fold(
                (0, 0f32),
                |a, (i, v)| if v.abs() > a.1 { (i, v.abs()) } else { a },
            );
        assert_eq!(b.qs[imax], -127);
    }
    let mut out = vec![0f32; COLS];
    dequantize_row_q8_k(&q, &mut out).unwrap();
    for (o, v) in out.iter().zip(x) {
        assert!((o - v).abs() <= 2.0f32 / 127.0 * 4.0);
    }
    // All-zero block: d = 0, everything zero.
    let mut z = vec![BlockQ8K::zeroed(); 1];
    quantize_row_q8_k_ref(&[0.0; QK_K], &mut z).unwrap();
    assert_eq!(z[0], BlockQ8K::zeroed());
}

// ---------------------------------------------------------------- adversarial

fn adversarial_rows() -> Vec<(&'static str, Vec<f32>, bool)> {
    let n = 2 * QK_K;
    let mut rows = vec![("zeros", vec![0.0f32; n], true)];
    let mut v = vec![0.01f32; n];
    v[37] = 60000.0;
    rows.push(("outlier 6e4", v, true));
    let mut v: Vec<f32> = (0..n).map(|i| ((i % 13) as f32 - 6.0) * 1e-3).collect();
    v[300] = -65504.0;
    rows.push(("negative outlier at f16 max", v, true));
    let mut v = vec![0.5f32; n];
    v[5] = 1e30;
    rows.push(("outlier 1e30", v, false));
    let mut v = vec![-1.0f32; n];
    v[200] = f32::MAX;
    v[201] = f32::MIN;
    rows.push(("f32 extremes", v, false));
    rows.push((
        "subnormals",
        (0..n)
            .map(|i| {
                f32::from_bits(1 + (i as u32 * 7919) % 0x7fffff)
                    * if i % 3 == 0 { -1.0 } else { 1.0 }
            })
            .collect(),
        true,
    ));
    rows.push((
        "smallest subnormal",
        (0..n)
            .map(|i| if i % 2 == 0 { f32::from_bits(1) } else { 0.0 })
            .collect(),
        true,
    ));
    rows.push((
        "one subnormal",
        (0..n)
            .map(|i| if i == 9 { -f32::from_bits(3) } else { 0.0 })
            .collect(),
        true,
    ));
    rows.push((
        "near f16 max",
        (0..n)
            .map(|i| {
                if i % 2 == 0 {
                    65504.0
                } else {
                    -65504.0 + i as f32
                }
            })
            .collect(),
        true,
    ));
    rows.push(("constant f16 max", vec![65504.0f32; n], true));
    rows.push(("constant negative", vec![-3.5f32; n], true));
    rows.push((
        "tiny spread",
        (0..n)
            .map(|i| 1.0 + (i % 2) as f32 * f32::EPSILON)
            .collect(),
        true,
    ));
    rows
}

fn adversarial<B: KQuant>() {
    let weights: Vec<Vec<f32>> = vec![
        (0..2 * QK_K).map(|j| (1 + j % 7) as f32).collect(),
        vec![0.0; 2 * QK_K],
        (0..2 * QK_K)
            .map(|j| if j % 5 == 0 { 0.0 } else { 1e-20 })
            .collect(),
    ];
    for (what, x, expect_finite) in adversarial_rows() {
        let mut ims: Vec<Option<&[f32]>> = vec![None];
        ims.extend(weights.iter().map(|w| Some(w.as_slice())));
        for im in ims {
            let mut q = zeroed::<B>(x.len() / QK_K);
            B::quantize(&x, &mut q, x.len(), im)
                .unwrap_or_else(|e| panic!("{} {what}: {e}", B::NAME));
            let mut out = vec![0f32; x.len()];
            B::dequantize(&q, &mut out).unwrap();
            if expect_finite {
                assert!(
                    out.iter().all(|v| v.is_finite()),
                    "{} {what} (imatrix: {}): non-finite dequantized output",
                    B::NAME,
                    im.is_some()
                );
            }
            if what == "zeros" {
                assert!(out.iter().all(|v| *v == 0.0), "{} zeros", B::NAME);
            }
        }
    }
}

#[test]
fn adversarial_rows_do_not_panic() {
    adversarial::<BlockQ2K>();
    adversarial::<BlockQ3K>();
    adversarial::<BlockQ4K>();
    adversarial::<BlockQ5K>();
    adversarial::<BlockQ6K>();
    for (what, x, expect_finite) in adversarial_rows() {
        let mut q = vec![BlockQ8K::zeroed(); x.len() / QK_K];
        quantize_row_q8_k_ref(&x, &mut q).unwrap();
        let mut out = vec![0f32; x.len()];
        dequantize_row_q8_k(&q, &mut out).unwrap();
        if expect_finite {
            assert!(out.iter().all(|v| v.is_finite()), "q8_K {what}");
        }
    }
}

// ------------------------------------------------------------ argument checks

fn argument_checks<B: KQuant>() {
    let x = vec![0.25f32; 2 * QK_K];
    let mut q = zeroed::<B>(2);
    // Row length not a multiple of QK_K.
    assert!(matches!(
        B::quantize(&x[..300], &mut q, 300, None),
        Err(QuantError::RowNotBlockMultiple {
            n: 300,
            block: 256,
            ..
        })
    ));
    assert!(matches!(
        B::quantize_ref(&x[..100], &mut q[..0]),
        Err(QuantError::RowNotBlockMultiple { n: 100, .. })
    ));
    // Wrong destination length.
    assert!(matches!(
        B::quantize(&x, &mut q[..1], QK_K, None),
        Err(QuantError::BufferLength {
            expected: 2,
            found: 1,
            ..
        })
    ));
    assert!(matches!(
        B::quantize_ref(&x, &mut zeroed::<B>(3)),
        Err(QuantError::BufferLength {
            expected: 2,
            found: 3,
            ..
        })
    ));
    // Source not a whole number of rows.
    assert!(matches!(
        B::quantize(&x, &mut q, 3 * QK_K, None),
        Err(QuantError::BufferLength { .. })
    ));
    // Importance matrix of the wrong length, negative, NaN.
    let w = vec![1.0f32; QK_K];
    assert!(matches!(
        B::quantize(&x, &mut q, 2 * QK_K, Some(&w)),
        Err(QuantError::BufferLength {
            expected: 512,
            found: 256,
            ..
        })
    ));
    let mut w = vec![1.0f32; 2 * QK_K];
    w[7] = -1.0;
    assert!(matches!(
        B::quantize(&x, &mut q, 2 * QK_K, Some(&w)),
        Err(QuantError::InvalidImportance { index: 7, .. })
    ));
    w[7] = f32::NAN;
    assert!(matches!(
        B::quantize(&x, &mut q, 2 * QK_K, Some(&w)),
        Err(QuantError::InvalidImportance { index: 7, .. })
    ));
    // Non-finite input.
    let mut bad = x.clone();
    bad[42] = f32::INFINITY;
    assert!(matches!(
        B::quantize(&bad, &mut q, QK_K, None),
        Err(QuantError::NonFiniteInput { index: 42, .. })
    ));
    bad[42] = f32::NAN;
    assert!(matches!(
        B::quantize_ref(&bad, &mut q),
        Err(QuantError::NonFiniteInput { index: 42, .. })
    ));
    // Dequantize and dot lengths.
    assert!(matches!(
        B::dequantize(&q, &mut vec![0.0; QK_K]),
        Err(QuantError::BufferLength {
            expected: 512,
            found: 256,
            ..
        })
    ));
    assert!(matches!(
        B::vec_dot(&q, &[BlockQ8K::zeroed()]),
        Err(QuantError::BufferLength { .. })
    ));
    // Empty input is fine.
    B::quantize(&[], &mut [], QK_K, None).unwrap();
    B::quantize(&[], &mut [], 0, None).unwrap();
    assert_eq!(B::vec_dot(&[], &[]).unwrap(), 0.0);
}

#[test]
fn lengths_and_inputs_are_checked() {
    argument_checks::<BlockQ2K>();
    argument_checks::<BlockQ3K>();
    argument_checks::<BlockQ4K>();
    argument_checks::<BlockQ5K>();
    argument_checks::<BlockQ6K>();
    let mut q8 = vec![BlockQ8K::zeroed(); 1];
    assert!(matches!(
        quantize_row_q8_k_ref(&[0.0; 2 * QK_K], &mut q8),
        Err(QuantError::BufferLength {
            expected: 2,
            found: 1,
            ..
        })
    ));
    assert!(matches!(
        dequantize_row_q8_k(&q8, &mut [0.0; 3]),
        Err(QuantError::BufferLength { .. })
    ));
}

// ------------------------------------------------------------------ property

fn roundtrip_all(x: &[f32], im: Option<&[f32]>, expect_finite: bool) -> Result<(), TestCaseError> {
    fn one<B: KQuant>(
        x: &[f32],
        im: Option<&[f32]>,
        expect_finite: bool,
    ) -> Result<(), TestCaseError> {
        let mut q = zeroed::<B>(x.len() / QK_K);
        prop_assert!(B::quantize(x, &mut q, x.len(), im).is_ok());
        let mut out = vec![0f32; x.len()];
        B::dequantize(&q, &mut out).unwrap();
        if expect_finite {
            prop_assert!(out.iter().all(|v| v.is_finite()), "{}", B::NAME);
        }
        let mut q8 = vec![BlockQ8K::zeroed(); x.len() / QK_K];
        quantize_row_q8_k_ref(x, &mut q8).unwrap();
        let _ = B::vec_dot(&q, &q8).unwrap();
        Ok(())
    }
    one::<BlockQ2K>(x, im, expect_finite)?;
    one::<BlockQ3K>(x, im, expect_finite)?;
    one::<BlockQ4K>(x, im, expect_finite)?;
    one::<BlockQ5K>(x, im, expect_finite)?;
    one::<BlockQ6K>(x, im, expect_finite)?;
    Ok(())
}

fn f16_range_value() -> impl Strategy<Value = f32> {
    prop_oneof![
        4 => -65504.0f32..=65504.0,
        4 => -4.0f32..4.0,
        2 => proptest::num::f32::SUBNORMAL | proptest::num::f32::ZERO,
        1 => Just(65504.0f32),
        1 => Just(-65504.0f32),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// Within f16 range every quantizer succeeds and dequantizes to finite
    /// values (with and without importance weights).
    #[test]
    fn quantize_f16_range_is_finite(
        x in proptest::collection::vec(f16_range_value(), QK_K),
        w in proptest::collection::vec(0.0f32..100.0, QK_K),
        use_w in any::<bool>(),
    ) {
        let im = if use_w { Some(w.as_slice()) } else { None };
        roundtrip_all(&x, im, true)?;
    }

    /// Any finite input quantizes without error or panic.
    #[test]
    fn quantize_any_finite_never_panics(
        x in proptest::collection::vec(
            proptest::num::f32::NORMAL | proptest::num::f32::SUBNORMAL | proptest::num::f32::ZERO,
            QK_K,
        ),
        w in proptest::collection::vec(proptest::num::f32::POSITIVE | proptest::num::f32::ZERO, QK_K),
        use_w in any::<bool>(),
    ) {
        let im = if use_w { Some(w.as_slice()) } else { None };
        roundtrip_all(&x, im, false)?;
    }

    /// Dequantizing arbitrary block bytes never panics, and the dot products
    /// of arbitrary blocks do not overflow.
    #[test]
    fn arbitrary_blocks_never_panic(bytes in proptest::collection::vec(any::<u8>(), 292 * 2)) {
        let q8: Vec<BlockQ8K> = bytemuck::pod_collect_to_vec(&bytes[..292 * 2]);
        fn one<B: KQuant>(bytes: &[u8], q8: &[BlockQ8K]) {
            let n = bytes.len() / size_of::<B>();
            let n = n.min(2);
            let blocks: Vec<B> = bytemuck::pod_collect_to_vec(&bytes[..n * size_of::<B>()]);
            let mut out = vec![0f32; n * QK_K];
            B::dequantize(&blocks, &mut out).unwrap();
            let _ = B::vec_dot(&blocks, &q8[..n]).unwrap();
        }
        one::<BlockQ2K>(&bytes, &q8);
        one::<BlockQ3K>(&bytes, &q8);
        one::<BlockQ4K>(&bytes, &q8);
        one::<BlockQ5K>(&bytes, &q8);
        one::<BlockQ6K>(&bytes, &q8);
        let mut out = vec![0f32; 2 * QK_K];
        dequantize_row_q8_k(&q8, &mut out).unwrap();
    }
}
