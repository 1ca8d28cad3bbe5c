//! orthogonal_: Q^T Q = I (or Q Q^T = I for wide matrices) to 1e-5.

use weightkit_core::DType;
use weightkit_init::{Init, Rng};

use crate::support::values;

/// Max |G - gain^2 I| over the Gram matrix of the shorter side.
fn gram_error(q: &[f32], rows: usize, cols: usize, gain: f64) -> f64 {
    let (k, len, stride_vec, stride_el) = if rows >= cols {
        (cols, rows, 1, cols) // columns: element i of column j at i*cols + j
    } else {
        (rows, cols, cols, 1) // rows: element i of row j at j*cols + i
    };
    let at = |vec: usize, i: usize| f64::from(q[vec * stride_vec + i * stride_el]);
    let mut worst = 0f64;
    for a in 0..k {
        for b in a..k {
            let dot: f64 = (0..len).map(|i| at(a, i) * at(b, i)).sum();
            let want = if a == b { gain * gain } else { 0.0 };
            worst = worst.max((dot - want).abs());
        }
    }
    worst
}

#[test]
fn orthonormal_to_1e_5() {
    for (mode, mut rng) in [("default", Rng::seeded(9)), ("torch", Rng::torch(9))] {
        for shape in [
            vec![64usize, 64],
            vec![256, 256],
            vec![300, 40],
            vec![40, 300],
            vec![32, 4, 3, 3],
            vec![1, 17],
            vec![17, 1],
        ] {
            let rows = shape[0];
            let cols: usize = shape[1..].iter().product();
            let t = Init::orthogonal()
                .tensor(&mut rng, shape.clone(), DType::F32)
                .unwrap();
            let err = gram_error(&values(&t), rows, cols, 1.0);
            assert!(err < 1e-5, "{mode} {shape:?}: {err}");
        }
        let t = Init::Orthogonal { gain: 2.5 }
            .tensor(&mut rng, [50, 20], DType::F32)
            .unwrap();
        assert!(gram_error(&values(&t), 50, 20, 2.5) < 1e-4);
        // 16-bit outputs are orthogonal to their precision.
        let t = Init::orthogonal()
            .tensor(&mut rng, [64, 64], DType::BF16)
            .unwrap();
        assert!(gram_error(&values(&t), 64, 64, 1.0) < 0.05);
    }
}

/// A (semi-)orthogonal matrix from a Gaussian is Haar distributed: each
/// entry of a square n x n one has mean 0 and variance 1/n.
#[test]
fn haar_moments() {
    let n = 128;
    let q = values(
        &Init::orthogonal()
            .tensor(&mut Rng::seeded(1), [n, n], DType::F32)
            .unwrap(),
    );
    let mean = q.iter().map(|&x| f64::from(x)).sum::<f64>() / q.len() as f64;
    let var = q.iter().map(|&x| f64::from(x).powi(2)).sum::<f64>() / q.len() as f64;
    assert!(mean.abs() < 3.0 / n as f64, "{mean}");
    assert!((var * n as f64 - 1.0).abs() < 1e-6, "{var}");
}
