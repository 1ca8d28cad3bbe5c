//! The byte-level API against llama.cpp's own bytes, for every type in the
//! reference set, through unaligned buffers and in parallel.

use std::path::PathBuf;

use weightkit_core::DType;
use weightkit_quant::simd::Level;
use weightkit_quant::{
    QuantError, can_dequantize, can_quantize, dequantize, dequantize_parallel, quantize,
    quantize_into, quantize_into_parallel, row_size, vec_dot, vec_dot_type,
};

use crate::simd::levels;

fn reference(name: &str) -> Vec<u8> {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../testdata/ggml-reference")
        .join(name);
    std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn f32s(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

const TYPES: &[(&str, DType)] = &[
    ("q4_0", DType::Q4_0),
    ("q4_1", DType::Q4_1),
    ("q5_0", DType::Q5_0),
    ("q5_1", DType::Q5_1),
    ("q8_0", DType::Q8_0),
    ("q2_K", DType::Q2_K),
    ("q3_K", DType::Q3_K),
    ("q4_K", DType::Q4_K),
    ("q5_K", DType::Q5_K),
    ("q6_K", DType::Q6_K),
    ("iq4_nl", DType::IQ4_NL),
    ("iq4_xs", DType::IQ4_XS),
];

#[test]
fn every_reference_file_through_the_byte_api() {
    let imatrix = f32s(&reference("imatrix.f32"));
    let mut checked = 0;
    for dist in ["uniform", "gauss", "outlier", "edge"] {
        let x = f32s(&reference(&format!("{dist}.f32")));
        for &(name, dtype) in TYPES {
            for weighted in [false, true] {
                if weighted && dtype == DType::Q8_0 {
                    continue;
                }
                let suffix = if weighted { "_imatrix" } else { "" };
                let want = reference(&format!("{dist}_{name}{suffix}.q"));
                let w = weighted.then_some(&imatrix[..]);
                let got = quantize(dtype, &x, 4096, w).unwrap();
                assert!(
                    got == want,
                    "{dist} {name}{suffix}: bytes differ from llama.cpp"
                );
                // Parallel and through a misaligned destination: same bytes.
                let mut buf = vec![0u8; want.len() + 1];
                quantize_into_parallel(dtype, &x, 4096, w, &mut buf[1..]).unwrap();
                assert!(
                    buf[1..] == want[..],
                    "{dist} {name}{suffix}: parallel/unaligned"
                );
                // Dequantize llama.cpp's bytes, from a misaligned source too.
                let deq = f32s(&reference(&format!("{dist}_{name}{suffix}.deq.f32")));
                let mut y = vec![0f32; x.len()];
                let mut shifted = vec![0u8; want.len() + 1];
                shifted[1..].copy_from_slice(&want);
                dequantize(dtype, &shifted[1..], &mut y).unwrap();
                assert!(
                    y.iter().zip(&deq).all(|(a, b)| a.to_bits() == b.to_bits()),
                    "{dist} {name}{suffix}: dequantize"
                );
                dequantize_parallel(dtype, &want, &mut y).unwrap();
                assert!(
                    y.iter().zip(&deq).all(|(a, b)| a.to_bits() == b.to_bits()),
                    "{dist} {name}{suffix}: parallel dequantize"
                );
                checked += 1;
            }
        }
    }
    assert_eq!(checked, 4 * (12 * 2 - 1));
}

#[test]
fn errors_are_typed() {
    assert!(matches!(
        row_size(DType::Q4_K, 300),
        Err(QuantError::RowNotBlockMultiple { block: 256, .. })
    ));
    assert_eq!(row_size(DType::Q4_0, 64).unwrap(), 36);
    let mut dst = vec![0u8; 35];
    assert!(matches!(
        quantize_into(DType::Q4_0, &[0.0; 64], 64, None, &mut dst),
        Err(QuantError::BufferLength { .. })
    ));
    assert!(matches!(
        quantize(DType::Q4_0, &[f32::NAN; 32], 32, None),
        Err(QuantError::NonFiniteInput { .. })
    ));
    assert!(matches!(
        quantize(DType::Q4_K, &[0.0; 256], 256, Some(&[-1.0; 256])),
        Err(QuantError::InvalidImportance { .. })
    ));
    assert!(matches!(
        quantize(DType::IQ2_XXS, &[0.0; 256], 256, None),
        Err(QuantError::ImportanceRequired { .. })
    ));
    assert!(matches!(
        dequantize(DType::Q4_0, &[0u8; 17], &mut [0.0; 32]),
        Err(QuantError::BufferLength { .. })
    ));
    assert!(
        can_quantize(DType::Q6_K) && !can_quantize(DType::IQ1_M) && can_dequantize(DType::IQ1_M)
    );
    assert!(!can_dequantize(DType::Q8_1));
}

#[test]
fn matvec_matches_the_dequantized_product() {
    // Weights from the gauss reference input, x a cosine ramp; the quantized
    // product must track the f32 product of the dequantized weights within
    // test-quantize-fns' dot tolerance (0.02, low-bit 0.04) per row,
    // relative to the row's magnitude.
    let w = f32s(&reference("gauss.f32"));
    let (rows, cols) = (8usize, 4096usize);
    let x: Vec<f32> = (0..cols)
        .map(|i| 0.1 + 2.0 * (i as f32 * 0.37).cos())
        .collect();
    for &(name, dtype) in TYPES.iter().chain(&[
        ("f16", DType::F16),
        ("tq2_0", DType::TQ2_0),
        ("mxfp4", DType::MXFP4),
    ]) {
        let q = quantize(dtype, &w, cols, None).unwrap();
        let mut wd = vec![0f32; rows * cols];
        dequantize(dtype, &q, &mut wd).unwrap();
        let mut y = vec![0f32; rows];
        weightkit_quant::matvec(dtype, &q, rows, cols, &x, &mut y).unwrap();
        // Weights at an odd address (every row through the aligned-copy
        // path): the same bits.
        let mut odd = vec![0u8; q.len() + 1];
        odd[1..].copy_from_slice(&q);
        let mut y_odd = vec![0f32; rows];
        weightkit_quant::matvec(dtype, &odd[1..], rows, cols, &x, &mut y_odd).unwrap();
        assert!(
            y.iter()
                .zip(&y_odd)
                .all(|(a, b)| a.to_bits() == b.to_bits()),
            "{name}: misaligned weights"
        );
        let tol = if matches!(dtype, DType::Q2_K | DType::Q3_K | DType::TQ2_0) {
            0.04
        } else {
            0.02
        };
        for r in 0..rows {
            let exact: f64 = (0..cols)
                .map(|c| f64::from(wd[r * cols + c]) * f64::from(x[c]))
                .sum();
            let scale: f64 = (0..cols)
                .map(|c| (f64::from(wd[r * cols + c]) * f64::from(x[c])).abs())
                .sum::<f64>()
                / cols as f64;
            let err = (f64::from(y[r]) - exact).abs() / cols as f64;
            assert!(
                err <= tol * scale.max(1e-3),
                "{name} row {r}: {} vs {exact} (err {err}, scale {scale})",
                y[r]
            );
        }
    }
    let mut y = [0f32; 2];
    assert!(weightkit_quant::matvec(DType::Q4_0, &[0u8; 36], 2, 32, &[1.0; 31], &mut y).is_err());
}

/// `matvec` splits its rows into tasks by the pool's thread count (chunks
/// of 16-64 rows; one thread or a short matrix runs in order on the calling
/// thread): in pools of 1, 2, 3 and 8 threads, on 300 rows (a partial last
/// chunk) and on 10 (fewer than one chunk), every output is the bits of
/// that row's own `vec_dot` against `x` quantized to the partner type.
#[test]
fn matvec_rows_are_their_vec_dots_in_any_pool() {
    let cols = 512;
    let x: Vec<f32> = (0..cols)
        .map(|i| 0.1 + 2.0 * (i as f32 + 1.0).cos())
        .collect();
    for dtype in [DType::Q4_0, DType::Q4_K, DType::F16] {
        let xq = quantize(vec_dot_type(dtype).unwrap(), &x, cols, None).unwrap();
        for rows in [300, 10] {
            let w: Vec<f32> = (0..rows * cols)
                .map(|i| 0.1 + 2.0 * (i as f32 * 0.37).cos())
                .collect();
            let q = quantize(dtype, &w, cols, None).unwrap();
            let row_bytes = q.len() / rows;
            let expect: Vec<u32> = q
                .chunks_exact(row_bytes)
                .map(|row| vec_dot(dtype, row, &xq).unwrap().to_bits())
                .collect();
            for threads in [1, 2, 3, 8] {
                let pool = rayon::ThreadPoolBuilder::new()
                    .num_threads(threads)
                    .build()
                    .unwrap();
                let mut y = vec![f32::NAN; rows];
                pool.install(|| weightkit_quant::matvec(dtype, &q, rows, cols, &x, &mut y))
                    .unwrap();
                let got: Vec<u32> = y.iter().map(|v| v.to_bits()).collect();
                assert_eq!(got, expect, "{dtype:?}, {rows} rows, {threads} threads");
            }
        }
    }
}

/// `vec_dot_fn` exists exactly for the types with a partner type, and each
/// function gives `vec_dot`'s bits; `vec_dot` reports the others as
/// unsupported. `vec_dot_fn_at` at every level this CPU runs: the dot of the
/// two dequantized rows up to f32 rounding, the same bits through
/// misaligned copies (its checked path, at the same level), and typed
/// errors for lengths that are not whole blocks or do not match.
#[test]
fn vec_dot_fn_is_vec_dot_per_type() {
    let cols = 256usize;
    let x: Vec<f32> = (0..cols).map(|i| 0.1 + 2.0 * (i as f32).cos()).collect();
    let y: Vec<f32> = (0..cols)
        .map(|i| 0.1 + 2.0 * (i as f32 + 1.0).cos())
        .collect();
    let shifted = |b: &[u8]| {
        let mut v = vec![0u8; b.len() + 1];
        v[1..].copy_from_slice(b);
        v
    };
    for dtype in weightkit_core::dtype::ALL_DTYPES {
        let partner = weightkit_quant::vec_dot_type(dtype);
        let f = weightkit_quant::vec_dot_fn(dtype);
        assert_eq!(f.is_some(), partner.is_some(), "{dtype:?}");
        let (Some(f), Some(p)) = (f, partner) else {
            assert!(matches!(
                weightkit_quant::vec_dot(dtype, &[], &[]),
                Err(QuantError::Unsupported { .. })
            ));
            assert!(weightkit_quant::vec_dot_fn_at(dtype, Level::Scalar).is_none());
            continue;
        };
        if !can_quantize(dtype) || !can_quantize(p) {
            continue;
        }
        let q = quantize(dtype, &x, cols, None).unwrap();
        let pq = quantize(p, &y, cols, None).unwrap();
        let want = weightkit_quant::vec_dot(dtype, &q, &pq).unwrap();
        assert_eq!(
            f.call(&q, &pq).unwrap().to_bits(),
            want.to_bits(),
            "{dtype:?}"
        );
        assert_eq!(f.dtype(), dtype);
        assert_eq!(f.level(), weightkit_quant::simd::level());
        // Within f32 rounding of the dot of the two dequantized rows (Q8_1
        // has no dequantizer in ggml: the scalar level stands in for it).
        let exact = if can_dequantize(p) {
            let (mut xd, mut yd) = (vec![0f32; cols], vec![0f32; cols]);
            dequantize(dtype, &q, &mut xd).unwrap();
            dequantize(p, &pq, &mut yd).unwrap();
            let dot: f64 = xd.iter().zip(&yd).map(|(a, b)| f64::from(a * b)).sum();
            let mag: f64 = xd
                .iter()
                .zip(&yd)
                .map(|(a, b)| f64::from(a * b).abs())
                .sum();
            Some((dot, mag))
        } else {
            None
        };
        let reference = weightkit_quant::vec_dot_fn_at(dtype, Level::Scalar)
            .unwrap()
            .call(&q, &pq)
            .unwrap();
        let (qs, ps) = (shifted(&q), shifted(&pq));
        for level in levels() {
            let f = weightkit_quant::vec_dot_fn_at(dtype, level).unwrap();
            assert_eq!(f.level(), level, "{dtype:?}");
            let got = f.call(&q, &pq).unwrap();
            match exact {
                Some((dot, mag)) => assert!(
                    (f64::from(got) - dot).abs() <= 1e-5 * mag,
                    "{dtype:?} {level:?}: {got} vs {dot}"
                ),
                None => assert!(
                    (got - reference).abs() <= 1e-5 * reference.abs().max(1.0),
                    "{dtype:?} {level:?}: {got} vs the scalar {reference}"
                ),
            }
            // Misaligned bytes take the checked path (aligned copies) at the
            // same level: the same bits.
            assert_eq!(
                f.call(&qs[1..], &ps[1..]).unwrap().to_bits(),
                got.to_bits(),
                "{dtype:?} {level:?} misaligned"
            );
            for (a, b) in [
                (&q[..], &pq[..pq.len() - 1]),
                (&q[..q.len() - 1], &pq[..]),
                (&q[..], &[][..]),
            ] {
                assert!(
                    matches!(f.call(a, b), Err(QuantError::BufferLength { .. })),
                    "{dtype:?} {level:?}: {} and {} bytes",
                    a.len(),
                    b.len()
                );
            }
        }
    }
}
