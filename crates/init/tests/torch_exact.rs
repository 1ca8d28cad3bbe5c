//! Torch-exact mode against real torch 2.15 output (testdata/init,
//! written by xtask/interop/make_init_fixtures.py).

use std::collections::BTreeMap;

use weightkit_core::DType;
use weightkit_init::torch::TorchCpu;
use weightkit_init::{FanMode, Init, Kaiming, LoraInit, Nonlinearity, Rng, lora_init};

use crate::json::Json;
use crate::support::{blob, dtype, manifest, max_ulp};

fn num(args: &Json, k: &str, default: f64) -> f64 {
    args.get(k).map_or(default, Json::num)
}

fn kaiming(args: &Json) -> Kaiming {
    Kaiming {
        a: num(args, "a", 0.0),
        mode: args
            .get("mode")
            .map_or(FanMode::FanIn, |m| FanMode::from_name(m.str()).unwrap()),
        nonlinearity: args
            .get("nonlinearity")
            .map_or(Nonlinearity::LeakyRelu, |n| {
                Nonlinearity::from_name(n.str()).unwrap()
            }),
    }
}

/// The `Init` a single-call fixture case used.
pub(crate) fn scheme(case: &Json) -> Option<Init> {
    let args = case.at("args");
    Some(match case.at("fn").str() {
        "uniform_" => Init::Uniform {
            a: num(args, "a", 0.0),
            b: num(args, "b", 1.0),
        },
        "normal_" => Init::Normal {
            mean: num(args, "mean", 0.0),
            std: num(args, "std", 1.0),
        },
        "trunc_normal_" => Init::TruncNormal {
            mean: num(args, "mean", 0.0),
            std: num(args, "std", 1.0),
            a: num(args, "a", -2.0),
            b: num(args, "b", 2.0),
        },
        "kaiming_uniform_" => Init::KaimingUniform(kaiming(args)),
        "kaiming_normal_" => Init::KaimingNormal(kaiming(args)),
        "xavier_uniform_" => Init::XavierUniform {
            gain: num(args, "gain", 1.0),
        },
        "xavier_normal_" => Init::XavierNormal {
            gain: num(args, "gain", 1.0),
        },
        "sparse_" => Init::Sparse {
            sparsity: num(args, "sparsity", 0.0),
            std: num(args, "std", 0.01),
        },
        "orthogonal_" => Init::Orthogonal {
            gain: num(args, "gain", 1.0),
        },
        "eye_" => Init::Eye,
        "dirac_" => Init::Dirac {
            groups: num(args, "groups", 1.0) as usize,
        },
        "constant_" => Init::Constant(num(args, "val", 0.0)),
        _ => return None,
    })
}

/// Our outputs for a case, as raw bytes, one per recorded tensor.
fn ours(case: &Json, cpu: TorchCpu) -> Option<Vec<Vec<u8>>> {
    let seed = case.at("seed").num() as u64;
    let mut rng = Rng::torch_with_cpu(seed, cpu);
    let dt = dtype(case.at("dtype").str());
    let shape = case.at("shape").dims();
    let bytes = |t: weightkit_core::Tensor| t.data().to_vec();
    Some(match case.at("fn").str() {
        "sequence" => case
            .at("outputs")
            .arr()
            .iter()
            .map(|o| {
                let init = Init::Normal {
                    mean: -1.0,
                    std: 0.5,
                };
                bytes(init.tensor(&mut rng, o.at("shape").dims(), dt).unwrap())
            })
            .collect(),
        "peft_default" => {
            // The two nn.Linear constructors, then reset_lora_parameters.
            let linear = Init::KaimingUniform(Kaiming {
                a: 5f64.sqrt(),
                ..Kaiming::default()
            });
            let a0 = linear.tensor(&mut rng, [8, 32], dt).unwrap();
            let b0 = linear.tensor(&mut rng, [16, 8], dt).unwrap();
            let lora = lora_init(&mut rng, LoraInit::Default, 8, 32, 16, dt).unwrap();
            vec![bytes(a0), bytes(b0), bytes(lora.a), bytes(lora.b)]
        }
        "peft_gaussian" => {
            let lora = lora_init(&mut rng, LoraInit::Gaussian, 8, 32, 16, dt).unwrap();
            vec![bytes(lora.a)]
        }
        "pissa" => return None,
        _ => vec![bytes(scheme(case)?.tensor(&mut rng, shape, dt).unwrap())],
    })
}

fn cpu_of(name: &str) -> TorchCpu {
    TorchCpu::from_name(name).unwrap()
}

#[derive(Default, Debug)]
struct Tally {
    exact: usize,
    cases: usize,
    elements: usize,
}

/// Every fixture case, every CPU build: bit for bit, except orthogonal_,
/// whose QR is LAPACK's in torch (checked to 2e-6 absolute).
#[test]
fn all_cases_match_torch() {
    let m = manifest();
    let mut tally: BTreeMap<String, Tally> = BTreeMap::new();
    let mut failures = Vec::new();
    let mut ortho_worst = 0f32;
    for (build, entry) in m.at("cpu_builds").obj() {
        let cpu = cpu_of(build);
        let data = blob(entry.at("file").str());
        for case in entry.at("cases").arr() {
            let Some(got) = ours(case, cpu) else { continue };
            let f = case.at("fn").str();
            let dt = dtype(case.at("dtype").str());
            let t = tally
                .entry(format!("{f} {}", case.at("dtype").str()))
                .or_default();
            t.cases += 1;
            let mut exact = true;
            for (o, g) in case.at("outputs").arr().iter().zip(&got) {
                let off = o.at("offset").usize();
                let want = &data[off..off + o.at("len").usize()];
                t.elements += want.len() / if dt == DType::F32 { 4 } else { 2 };
                if f == "orthogonal_" {
                    let w = crate::support::f32s(want);
                    let g = crate::support::f32s(g);
                    let d = w
                        .iter()
                        .zip(&g)
                        .map(|(a, b)| (a - b).abs())
                        .fold(0f32, f32::max);
                    ortho_worst = ortho_worst.max(d);
                    if d > 2e-6 {
                        failures.push(format!("{build} {}: max |diff| {d}", case.at("name").str()));
                    }
                    exact = false;
                } else if want != g.as_slice() {
                    exact = false;
                    failures.push(format!(
                        "{build} {}: max ulp {}",
                        case.at("name").str(),
                        max_ulp(want, g, dt)
                    ));
                }
            }
            if exact {
                t.exact += 1;
            }
        }
    }
    for (k, t) in &tally {
        println!(
            "{k:28} {:3}/{:3} cases bit-exact, {} elements",
            t.exact, t.cases, t.elements
        );
    }
    println!("orthogonal_: max |ours - torch| = {ortho_worst:e}");
    assert!(
        failures.is_empty(),
        "{} mismatches:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert!(tally.values().map(|t| t.cases).sum::<usize>() > 500);
}

/// AVX2 and AVX512 builds give the same bytes for everything reproduced
/// here, and the DEFAULT build differs (unfused uniform transform).
#[test]
fn builds_differ_where_torch_does() {
    let builds = manifest().at("cpu_builds");
    assert_eq!(
        builds.at("AVX2").at("file").str(),
        builds.at("AVX512").at("file").str()
    );
    assert_ne!(
        builds.at("AVX2").at("file").str(),
        builds.at("DEFAULT").at("file").str()
    );
    // And our two modes differ accordingly on a uniform fill.
    let a = Init::uniform()
        .tensor(
            &mut Rng::torch_with_cpu(0, TorchCpu::Avx2),
            [1000],
            DType::F32,
        )
        .unwrap();
    let b = Init::uniform()
        .tensor(
            &mut Rng::torch_with_cpu(0, TorchCpu::Baseline),
            [1000],
            DType::F32,
        )
        .unwrap();
    assert_eq!(a.data(), b.data(), "U(0,1): u*1+0 is exact either way");
    let a = Init::kaiming_uniform()
        .tensor(
            &mut Rng::torch_with_cpu(0, TorchCpu::Avx2),
            [1000, 3],
            DType::F32,
        )
        .unwrap();
    let b = Init::kaiming_uniform()
        .tensor(
            &mut Rng::torch_with_cpu(0, TorchCpu::Baseline),
            [1000, 3],
            DType::F32,
        )
        .unwrap();
    assert_ne!(a.data(), b.data());
}
