//! Fans, gains, bounds and standard deviations: the exact doubles torch
//! computes in Python (recorded by the fixture script as float.hex()).

use weightkit_core::DType;
use weightkit_init::{
    Distribution, FanMode, Init, InitError, Kaiming, Nonlinearity, Rng, calculate_gain,
    fan_in_and_fan_out,
};

use crate::json::{Json, from_hex};
use crate::support::{manifest, values};

#[test]
fn gains_equal_torch_bit_for_bit() {
    let gains = manifest().at("gains").arr();
    assert_eq!(gains.len(), 12 * 7);
    for g in gains {
        let nl = Nonlinearity::from_name(g.at("nonlinearity").str()).unwrap();
        let param = match g.at("param") {
            Json::Null => None,
            p => Some(p.num()),
        };
        let want = from_hex(g.at("gain").str());
        let got = calculate_gain(nl, param).unwrap();
        assert_eq!(
            got.to_bits(),
            want.to_bits(),
            "{nl} {param:?}: {got} vs {want}"
        );
    }
}

#[test]
fn fans_equal_torch() {
    for f in manifest().at("fans").arr() {
        let shape = f.at("shape").dims();
        let (fi, fo) = fan_in_and_fan_out(&shape).unwrap();
        assert_eq!(
            (fi, fo),
            (f.at("fan_in").usize(), f.at("fan_out").usize()),
            "{shape:?}"
        );
    }
}

fn kaiming_of(b: &Json) -> Kaiming {
    Kaiming {
        a: b.at("a").num(),
        mode: FanMode::from_name(b.at("mode").str()).unwrap(),
        nonlinearity: Nonlinearity::from_name(b.at("nonlinearity").str()).unwrap(),
    }
}

/// Every bound and standard deviation equals torch's double exactly.
#[test]
fn bounds_and_stds_equal_torch_bit_for_bit() {
    let bounds = manifest().at("bounds").arr();
    assert_eq!(bounds.len(), 5 * (5 * 2 + 3 * 2));
    for b in bounds {
        let shape = b.at("shape").dims();
        let init = match b.at("fn").str() {
            "kaiming_uniform_" => Init::KaimingUniform(kaiming_of(b)),
            "kaiming_normal_" => Init::KaimingNormal(kaiming_of(b)),
            "xavier_uniform_" => Init::XavierUniform {
                gain: b.at("gain").num(),
            },
            "xavier_normal_" => Init::XavierNormal {
                gain: b.at("gain").num(),
            },
            other => panic!("{other}"),
        };
        let d = init.distribution(&shape, DType::F32).unwrap();
        match d {
            Distribution::Uniform { low, high } => {
                let want = from_hex(b.at("bound").str());
                assert_eq!(high.to_bits(), want.to_bits(), "{init:?} {shape:?}");
                assert_eq!(low, -high);
            }
            Distribution::Normal { mean, std } => {
                let want = from_hex(b.at("std").str());
                assert_eq!(std.to_bits(), want.to_bits(), "{init:?} {shape:?}");
                assert_eq!(mean, 0.0);
            }
            other => panic!("{other:?}"),
        }
    }
}

/// The textbook formulas, for the record (torch's operation order is what
/// the exact test above pins; these agree to the last couple of bits).
#[test]
fn textbook_formulas() {
    let close = |a: f64, b: f64| assert!((a - b).abs() <= 4.0 * f64::EPSILON * b.abs(), "{a} {b}");
    for shape in [vec![30usize, 20], vec![64, 3, 3, 3], vec![7, 5, 2]] {
        let (fi, fo) = fan_in_and_fan_out(&shape).unwrap();
        let Distribution::Uniform { high, .. } = Init::kaiming_uniform()
            .distribution(&shape, DType::F32)
            .unwrap()
        else {
            panic!()
        };
        close(high, 2f64.sqrt() * (3.0 / fi as f64).sqrt());
        let Distribution::Uniform { high, .. } = Init::xavier_uniform()
            .distribution(&shape, DType::F32)
            .unwrap()
        else {
            panic!()
        };
        close(high, (6.0 / (fi + fo) as f64).sqrt());
        let Distribution::Normal { std, .. } = Init::KaimingNormal(Kaiming {
            mode: FanMode::FanOut,
            nonlinearity: Nonlinearity::Relu,
            ..Kaiming::default()
        })
        .distribution(&shape, DType::F32)
        .unwrap() else {
            panic!()
        };
        close(std, (2.0 / fo as f64).sqrt());
    }
    assert_eq!(calculate_gain(Nonlinearity::Tanh, None).unwrap(), 5.0 / 3.0);
    assert_eq!(calculate_gain(Nonlinearity::Selu, Some(9.0)).unwrap(), 0.75);
    assert_eq!(
        calculate_gain(Nonlinearity::LeakyRelu, None).unwrap(),
        (2.0f64 / 1.0001).sqrt()
    );
    // LoRA default: gain(leaky, sqrt 5) * sqrt(3 / fan) = 1 / sqrt(fan).
    let lora = weightkit_init::lora::lora_a_init(weightkit_init::LoraInit::Default, 8);
    let Distribution::Uniform { high, .. } = lora.distribution(&[8, 64], DType::F32).unwrap()
    else {
        panic!()
    };
    close(high, 1.0 / 8.0);
}

/// Every value lies in the closed-form support, in both modes and every
/// dtype, and a large tensor reaches close to both ends.
#[test]
fn values_respect_bounds() {
    for dtype in [DType::F32, DType::F16, DType::BF16] {
        for mut rng in [Rng::seeded(3), Rng::torch(3)] {
            for init in [
                Init::kaiming_uniform(),
                Init::xavier_uniform(),
                Init::Uniform { a: -0.25, b: 0.75 },
            ] {
                let shape = [512, 300];
                let Distribution::Uniform { low, high } = init.distribution(&shape, dtype).unwrap()
                else {
                    panic!()
                };
                // The f32 (or 16-bit) bounds torch compares against.
                let round = |x: f64| {
                    weightkit_core::Tensor::from_f32([1], &[x as f32])
                        .unwrap()
                        .to_dtype(dtype)
                        .unwrap()
                        .view()
                        .to_f32_vec()
                        .unwrap()[0]
                };
                let (lo, hi) = (round(low), round(high));
                let v = values(&init.tensor(&mut rng, shape, dtype).unwrap());
                let (mn, mx) = v
                    .iter()
                    .fold((f32::MAX, f32::MIN), |(a, b), &x| (a.min(x), b.max(x)));
                assert!(
                    mn >= lo && mx < hi,
                    "{init:?} {dtype}: [{mn}, {mx}] vs [{lo}, {hi})"
                );
                // 3e5 draws come within 1e-3 of each end; a 16-bit dtype
                // can only get within its own spacing (2^-8 relative).
                let w = f64::from(hi - lo) * if dtype == DType::F32 { 1e-3 } else { 1e-2 };
                assert!(
                    f64::from(mn - lo) < w && f64::from(hi - mx) < w,
                    "{init:?} {dtype}"
                );
            }
        }
    }
    // Truncated normal stays inside [a, b].
    for mut rng in [Rng::seeded(4), Rng::torch(4)] {
        for (mean, std, a, b) in [
            (0.0, 1.0, -2.0, 2.0),
            (0.5, 0.7, 2.0, 2.5),
            (0.0, 0.02, -0.01, 0.03),
        ] {
            let init = Init::TruncNormal { mean, std, a, b };
            let v = values(&init.tensor(&mut rng, [20_000], DType::F32).unwrap());
            assert!(
                v.iter().all(|&x| x >= a as f32 && x <= b as f32),
                "{init:?}"
            );
        }
    }
}

#[test]
fn deterministic_schemes() {
    let mut rng = Rng::seeded(0);
    let eye = values(&Init::Eye.tensor(&mut rng, [3, 4], DType::BF16).unwrap());
    assert_eq!(eye, [1., 0., 0., 0., 0., 1., 0., 0., 0., 0., 1., 0.]);
    let c = values(
        &Init::Constant(0.1)
            .tensor(&mut rng, [5], DType::BF16)
            .unwrap(),
    );
    assert!(c.iter().all(|&x| x == 0.100_097_656));
    assert!(values(&Init::Ones.tensor(&mut rng, [2, 2], DType::F16).unwrap()) == [1.0; 4]);
    assert!(values(&Init::Zeros.tensor(&mut rng, [7], DType::F32).unwrap()) == [0.0; 7]);
    // Dirac: a 3x3 convolution with it is the identity on the first
    // min(out, in) channels.
    let d = values(
        &Init::dirac()
            .tensor(&mut rng, [2, 3, 3, 3], DType::F32)
            .unwrap(),
    );
    let at = |o: usize, i: usize, y: usize, x: usize| d[((o * 3 + i) * 3 + y) * 3 + x];
    assert_eq!(at(0, 0, 1, 1), 1.0);
    assert_eq!(at(1, 1, 1, 1), 1.0);
    assert_eq!(d.iter().sum::<f32>(), 2.0);
    // Deterministic schemes leave the generator where it was.
    assert!(matches!(&rng, Rng::Counter(c) if c.stream() == 0));
    // Kaiming on a tensor with a zero dimension is a no-op, like torch.
    let e = Init::kaiming_uniform()
        .tensor(&mut rng, [0, 5], DType::F32)
        .unwrap();
    assert_eq!(e.data().len(), 0);
    assert!(matches!(
        Init::xavier_uniform().distribution(&[0, 0], DType::F32),
        Err(InitError::ZeroFan { .. })
    ));
}
