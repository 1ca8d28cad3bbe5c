//! LoRA initializations: PEFT's default and gaussian (bit for bit with
//! torch in the torch_exact module), and PiSSA against torch.linalg.svd.

use weightkit_core::{DType, Shape, TensorView};
use weightkit_init::{Init, LoraInit, Rng, SvdMethod, lora_init, pissa};

use crate::support::{blob, f32s, manifest, values};

fn matmul(a: &[f32], b: &[f32], m: usize, k: usize, n: usize) -> Vec<f64> {
    let mut c = vec![0f64; m * n];
    for i in 0..m {
        for p in 0..k {
            let x = f64::from(a[i * k + p]);
            for j in 0..n {
                c[i * n + j] += x * f64::from(b[p * n + j]);
            }
        }
    }
    c
}

#[test]
fn default_and_gaussian_shapes_and_bounds() {
    for mut rng in [Rng::seeded(1), Rng::torch(1)] {
        let w = lora_init(&mut rng, LoraInit::Default, 16, 256, 512, DType::BF16).unwrap();
        assert_eq!(w.a.shape().dims(), &[16, 256]);
        assert_eq!(w.b.shape().dims(), &[512, 16]);
        let bound = 1.0 / 16.0; // 1 / sqrt(in_features)
        assert!(values(&w.a).iter().all(|&x| f64::from(x).abs() <= bound));
        assert!(values(&w.b).iter().all(|&x| x == 0.0));
        let g = lora_init(&mut rng, LoraInit::Gaussian, 4, 64, 32, DType::F32).unwrap();
        let a = values(&g.a);
        let var = a.iter().map(|&x| f64::from(x).powi(2)).sum::<f64>() / a.len() as f64;
        assert!((var.sqrt() - 0.25).abs() < 0.03, "{}", var.sqrt());
    }
}

/// torch's `(W, A, B, residual, S, r, scaling)`.
type PissaCase = (Vec<f32>, Vec<f32>, Vec<f32>, Vec<f32>, Vec<f32>, usize, f64);

fn pissa_case() -> PissaCase {
    let build = manifest().at("cpu_builds").at("AVX512");
    let data = blob(build.at("file").str());
    let case = build
        .at("cases")
        .arr()
        .iter()
        .find(|c| c.at("fn").str() == "pissa")
        .unwrap();
    let out = |i: usize| {
        let o = &case.at("outputs").arr()[i];
        let off = o.at("offset").usize();
        f32s(&data[off..off + o.at("len").usize()])
    };
    let r = case.at("args").at("r").usize();
    let scaling = case.at("args").at("scaling").num();
    (out(0), out(1), out(2), out(3), out(4), r, scaling)
}

#[test]
fn pissa_matches_torch_svd() {
    let (w, ta, tb, tres, ts, r, scaling) = pissa_case();
    let (m, n) = (24, 16);
    let shape = Shape::new([m, n]);
    let bytes: Vec<u8> = w.iter().flat_map(|x| x.to_le_bytes()).collect();
    let view = TensorView::new(DType::F32, &shape, &bytes).unwrap();
    for method in [SvdMethod::Exact, SvdMethod::Randomized { niter: 6 }] {
        let p = pissa(&view, r, scaling, method, &mut Rng::seeded(3), DType::F32).unwrap();
        let (a, b, res) = (values(&p.a), values(&p.b), values(&p.residual));
        // Singular values.
        for (k, (&s, &t)) in p.singular_values.iter().zip(&ts).enumerate() {
            let rel = (s - f64::from(t)).abs() / f64::from(t);
            assert!(rel < 1e-5, "{method:?} s[{k}]");
        }
        // A and B match torch's up to the sign of each component.
        for k in 0..r {
            let dot: f64 = (0..n)
                .map(|j| f64::from(a[k * n + j] * ta[k * n + j]))
                .sum();
            let sign = dot.signum() as f32;
            for j in 0..n {
                assert!(
                    (a[k * n + j] - sign * ta[k * n + j]).abs() < 5e-5,
                    "{method:?} A"
                );
            }
            for i in 0..m {
                assert!(
                    (b[i * r + k] - sign * tb[i * r + k]).abs() < 5e-5,
                    "{method:?} B"
                );
            }
        }
        // The residual matches torch's, and the adapted layer computes W.
        let ba = matmul(&b, &a, m, r, n);
        for i in 0..m * n {
            assert!((res[i] - tres[i]).abs() < 5e-5, "{method:?} residual");
            let back = f64::from(res[i]) + scaling * ba[i];
            assert!(
                (back - f64::from(w[i])).abs() < 1e-6,
                "{method:?} W = res + s BA"
            );
        }
    }
}

#[test]
fn pissa_randomized_on_a_larger_low_rank_weight() {
    // W = X Y^T + small noise, rank 6 signal: the randomized path finds the
    // same top-6 subspace as the exact one.
    let (m, n, k) = (300, 200, 6);
    let mut rng = Rng::seeded(8);
    let x = values(&Init::normal().tensor(&mut rng, [m, k], DType::F32).unwrap());
    let y = values(&Init::normal().tensor(&mut rng, [k, n], DType::F32).unwrap());
    let noise = values(
        &Init::Normal {
            mean: 0.0,
            std: 1e-3,
        }
        .tensor(&mut rng, [m, n], DType::F32)
        .unwrap(),
    );
    let w: Vec<f32> = matmul(&x, &y, m, k, n)
        .iter()
        .zip(&noise)
        .map(|(a, b)| *a as f32 + b)
        .collect();
    let shape = Shape::new([m, n]);
    let bytes: Vec<u8> = w.iter().flat_map(|v| v.to_le_bytes()).collect();
    let view = TensorView::new(DType::F32, &shape, &bytes).unwrap();
    let exact = pissa(&view, k, 1.0, SvdMethod::Exact, &mut rng, DType::F32).unwrap();
    let fast = pissa(
        &view,
        k,
        1.0,
        SvdMethod::Randomized { niter: 2 },
        &mut rng,
        DType::F32,
    )
    .unwrap();
    for (e, f) in exact.singular_values.iter().zip(&fast.singular_values) {
        assert!((e - f).abs() / e < 1e-5, "{e} {f}");
    }
    let (re, rf) = (values(&exact.residual), values(&fast.residual));
    let worst = re
        .iter()
        .zip(&rf)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    assert!(worst < 1e-4, "{worst}");
    // What is left is the noise.
    let rms = (rf.iter().map(|v| f64::from(*v).powi(2)).sum::<f64>() / rf.len() as f64).sqrt();
    assert!(rms < 1.2e-3, "{rms}");
    // bf16 outputs.
    let h = pissa(&view, 2, 0.5, SvdMethod::Exact, &mut rng, DType::BF16).unwrap();
    assert_eq!(h.a.dtype(), DType::BF16);
    assert_eq!(h.residual.shape().dims(), &[m, n]);
}
