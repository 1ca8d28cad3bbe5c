//! Kolmogorov-Smirnov tests of every random scheme against its closed-form
//! distribution, in both generator modes, on 2^18-element tensors.
//!
//! Significance: each test rejects at alpha = 0.001, i.e. when
//! `D > 1.9495 / sqrt(n)` (Kolmogorov's asymptotic critical value,
//! `sqrt(ln(2 / alpha) / 2)`). Seeds are fixed, so the outcome is
//! deterministic; a correct sampler would fail one such test at a random
//! seed with probability 0.001. Negative controls show the test notices a
//! 2% error in a bound or a standard deviation.

use weightkit_core::DType;
use weightkit_init::{
    Distribution, FanMode, Init, Kaiming, LoraInit, Nonlinearity, Rng, lora_init,
};

use crate::support::values;

const N: usize = 1 << 18;
const SEED: u64 = 2024;

fn critical(n: usize) -> f64 {
    ((2.0f64 / 0.001).ln() / 2.0).sqrt() / (n as f64).sqrt()
}

/// The KS statistic of `x` against `cdf`.
fn ks(x: &[f32], cdf: impl Fn(f64) -> f64) -> f64 {
    let mut v: Vec<f64> = x.iter().map(|&a| f64::from(a)).collect();
    v.sort_by(f64::total_cmp);
    let n = v.len() as f64;
    v.iter()
        .enumerate()
        .map(|(i, &a)| {
            let f = cdf(a);
            (f - i as f64 / n).max((i + 1) as f64 / n - f)
        })
        .fold(0.0, f64::max)
}

/// erfc, Abramowitz and Stegun 7.1.26 (|error| < 1.5e-7, far below the
/// KS resolution used here).
fn erfc(x: f64) -> f64 {
    let z = x.abs();
    let t = 1.0 / (1.0 + 0.327_591_1 * z);
    let poly = t
        * (0.254_829_592
            + t * (-0.284_496_736
                + t * (1.421_413_741 + t * (-1.453_152_027 + t * 1.061_405_429))));
    let r = poly * (-z * z).exp();
    if x >= 0.0 { r } else { 2.0 - r }
}

fn phi(x: f64) -> f64 {
    0.5 * erfc(-x / std::f64::consts::SQRT_2)
}

fn cdf_of(d: Distribution) -> Box<dyn Fn(f64) -> f64> {
    match d {
        Distribution::Uniform { low, high } => {
            Box::new(move |x| ((x - low) / (high - low)).clamp(0.0, 1.0))
        }
        Distribution::Normal { mean, std } => Box::new(move |x| phi((x - mean) / std)),
        Distribution::TruncatedNormal { mean, std, a, b } => {
            let (fa, fb) = (phi((a - mean) / std), phi((b - mean) / std));
            Box::new(move |x| ((phi((x - mean) / std) - fa) / (fb - fa)).clamp(0.0, 1.0))
        }
        other => panic!("no CDF for {other:?}"),
    }
}

fn modes() -> [(&'static str, Rng); 2] {
    [("default", Rng::seeded(SEED)), ("torch", Rng::torch(SEED))]
}

fn check(init: Init, shape: &[usize], dtype: DType) {
    let d = init.distribution(shape, dtype).unwrap();
    for (mode, mut rng) in modes() {
        let x = values(&init.tensor(&mut rng, shape, dtype).unwrap());
        let stat = ks(&x, cdf_of(d));
        let crit = critical(x.len());
        assert!(
            stat < crit,
            "{mode} {init:?} {dtype}: KS D = {stat:.5} >= {crit:.5}"
        );
    }
}

#[test]
fn uniform_and_normal() {
    check(Init::Uniform { a: -1.0, b: 3.0 }, &[N], DType::F32);
    check(Init::normal(), &[N], DType::F32);
    check(
        Init::Normal {
            mean: 0.5,
            std: 2.0,
        },
        &[512, 512],
        DType::F32,
    );
    // Below torch's vectorized threshold many times over: the scalar path.
    let d = Init::normal().distribution(&[15], DType::F32).unwrap();
    let mut rng = Rng::torch(SEED);
    let mut x = Vec::new();
    for _ in 0..4000 {
        x.extend(values(
            &Init::normal().tensor(&mut rng, [15], DType::F32).unwrap(),
        ));
    }
    assert!(ks(&x, cdf_of(d)) < critical(x.len()));
}

#[test]
fn kaiming_and_xavier() {
    check(Init::kaiming_uniform(), &[512, 512], DType::F32);
    check(
        Init::KaimingNormal(Kaiming {
            mode: FanMode::FanOut,
            nonlinearity: Nonlinearity::Relu,
            ..Kaiming::default()
        }),
        &[512, 8, 8, 8],
        DType::F32,
    );
    check(Init::xavier_uniform(), &[256, 1024], DType::F32);
    check(
        Init::XavierNormal { gain: 5.0 / 3.0 },
        &[256, 1024],
        DType::F32,
    );
}

#[test]
fn truncated_normal_both_branches() {
    // p > 0.3: normal proposals.
    check(Init::trunc_normal(), &[N], DType::F32);
    check(
        Init::TruncNormal {
            mean: 0.0,
            std: 0.02,
            a: -0.03,
            b: 0.05,
        },
        &[N],
        DType::F32,
    );
    // p <= 0.3: uniform proposals with log-density acceptance.
    check(
        Init::TruncNormal {
            mean: 0.0,
            std: 1.0,
            a: 1.5,
            b: 3.0,
        },
        &[N],
        DType::F32,
    );
    check(
        Init::TruncNormal {
            mean: 0.5,
            std: 0.7,
            a: 2.0,
            b: 2.5,
        },
        &[N],
        DType::F32,
    );
}

#[test]
fn sixteen_bit_outputs() {
    // bf16/f16 quantize the values; the KS distance this adds is far below
    // the critical value at n = 2^18.
    check(Init::kaiming_normal(), &[512, 512], DType::BF16);
    check(Init::kaiming_uniform(), &[512, 512], DType::F16);
}

#[test]
fn lora_gaussian_and_sparse() {
    for (mode, mut rng) in modes() {
        let r = 8;
        let w = lora_init(&mut rng, LoraInit::Gaussian, r, N / r, 64, DType::F32).unwrap();
        let x = values(&w.a);
        let stat = ks(&x, |v| phi(v * r as f64));
        assert!(stat < critical(x.len()), "{mode}: {stat}");
        assert!(values(&w.b).iter().all(|&b| b == 0.0));

        let (rows, cols) = (1024, 256);
        let t = Init::Sparse {
            sparsity: 0.25,
            std: 0.05,
        }
        .tensor(&mut rng, [rows, cols], DType::F32)
        .unwrap();
        let x = values(&t);
        for c in 0..cols {
            let zeros = (0..rows).filter(|&r| x[r * cols + c] == 0.0).count();
            assert_eq!(zeros, 256, "{mode} column {c}");
        }
        let nz: Vec<f32> = x.into_iter().filter(|&v| v != 0.0).collect();
        let stat = ks(&nz, |v| phi(v / 0.05));
        assert!(stat < critical(nz.len()), "{mode}: {stat}");
    }
}

/// The test has power: a 2% error in the bound or the std is rejected.
#[test]
fn negative_controls() {
    for (_, mut rng) in modes() {
        let x = values(
            &Init::kaiming_uniform()
                .tensor(&mut rng, [512, 512], DType::F32)
                .unwrap(),
        );
        let Distribution::Uniform { low, high } = Init::kaiming_uniform()
            .distribution(&[512, 512], DType::F32)
            .unwrap()
        else {
            panic!()
        };
        let wrong = cdf_of(Distribution::Uniform {
            low: low * 1.02,
            high: high * 1.02,
        });
        assert!(ks(&x, wrong) > critical(x.len()));
        let x = values(&Init::normal().tensor(&mut rng, [N], DType::F32).unwrap());
        assert!(ks(&x, |v| phi(v / 1.02)) > critical(x.len()));
    }
}
