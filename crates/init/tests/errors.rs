//! Impossible requests are typed errors, never panics.

use std::error::Error as _;

use weightkit_core::{DType, Shape, TensorView};
use weightkit_init::{
    FanMode, Init, InitError, Kaiming, LoraInit, Nonlinearity, Rng, SvdMethod, calculate_gain,
    fan_in_and_fan_out, lora_init, pissa,
};

fn err(init: Init, shape: &[usize], dtype: DType) -> InitError {
    let mut rng = Rng::seeded(0);
    let e = init.tensor(&mut rng, shape.to_vec(), dtype).unwrap_err();
    // The same request errors identically in torch mode and via fill.
    let e2 = init
        .tensor(&mut Rng::torch(0), shape.to_vec(), dtype)
        .unwrap_err();
    assert_eq!(e.to_string(), e2.to_string());
    assert!(!e.to_string().is_empty());
    e
}

#[test]
fn fans_of_low_rank_tensors() {
    for init in [
        Init::kaiming_uniform(),
        Init::kaiming_normal(),
        Init::xavier_uniform(),
        Init::xavier_normal(),
    ] {
        assert_eq!(
            err(init, &[5], DType::F32),
            InitError::FanNeedsTwoDims { rank: 1 }
        );
        assert_eq!(
            err(init, &[], DType::F32),
            InitError::FanNeedsTwoDims { rank: 0 }
        );
    }
    assert_eq!(
        fan_in_and_fan_out(&[3]),
        Err(InitError::FanNeedsTwoDims { rank: 1 })
    );
    assert!(matches!(
        err(Init::xavier_normal(), &[0, 0], DType::F32),
        InitError::ZeroFan { .. }
    ));
}

#[test]
fn bad_standard_deviations() {
    for std in [-1.0, f64::NAN] {
        let e = err(Init::Normal { mean: 0.0, std }, &[4], DType::F32);
        assert!(matches!(e, InitError::NegativeStd { .. }), "{e:?}");
        assert!(matches!(
            err(Init::Sparse { sparsity: 0.1, std }, &[4, 4], DType::F32),
            InitError::NegativeStd { .. }
        ));
        assert!(matches!(
            err(
                Init::TruncNormal {
                    mean: 0.0,
                    std,
                    a: -1.0,
                    b: 1.0
                },
                &[4],
                DType::F32
            ),
            InitError::NegativeStd { .. }
        ));
    }
    assert!(matches!(
        err(Init::XavierNormal { gain: -1.0 }, &[4, 4], DType::F32),
        InitError::NegativeStd { .. }
    ));
    assert!(matches!(
        err(
            Init::Normal {
                mean: f64::INFINITY,
                std: 1.0
            },
            &[4],
            DType::F32
        ),
        InitError::InvalidParameter { name: "mean", .. }
    ));
    assert!(matches!(
        err(
            Init::TruncNormal {
                mean: 0.0,
                std: 0.0,
                a: -1.0,
                b: 1.0
            },
            &[4],
            DType::F32
        ),
        InitError::InvalidParameter { name: "std", .. }
    ));
}

#[test]
fn bad_uniform_ranges() {
    for (a, b, dtype) in [
        (1.0, 0.0, DType::F32),
        (f64::NAN, 1.0, DType::F32),
        (0.0, f64::INFINITY, DType::F32),
        (-4e38, 0.0, DType::F32),
        (-1e5, 1e5, DType::F16),
        (-60000.0, 60000.0, DType::F16),
    ] {
        assert!(
            matches!(
                err(Init::Uniform { a, b }, &[3], dtype),
                InitError::InvalidRange { .. }
            ),
            "{a} {b} {dtype}"
        );
    }
    assert!(matches!(
        err(Init::XavierUniform { gain: -1.0 }, &[3, 3], DType::F32),
        InitError::InvalidRange { .. }
    ));
}

#[test]
fn sparsity_outside_unit_interval() {
    for s in [-0.1, 1.01, f64::NAN, f64::INFINITY] {
        assert!(matches!(
            err(Init::sparse(s), &[4, 4], DType::F32),
            InitError::InvalidSparsity(_)
        ));
    }
    // The ends are fine.
    let mut rng = Rng::seeded(0);
    let all = Init::sparse(1.0)
        .tensor(&mut rng, [5, 3], DType::F32)
        .unwrap();
    assert!(all.view().to_f32_vec().unwrap().iter().all(|&x| x == 0.0));
    let none = Init::sparse(0.0)
        .tensor(&mut rng, [5, 3], DType::F32)
        .unwrap();
    assert!(none.view().to_f32_vec().unwrap().iter().all(|&x| x != 0.0));
}

#[test]
fn wrong_ranks_and_groups() {
    assert!(matches!(
        err(Init::Eye, &[2, 2, 2], DType::F32),
        InitError::WrongRank { .. }
    ));
    assert!(matches!(
        err(Init::Eye, &[4], DType::F32),
        InitError::WrongRank { .. }
    ));
    assert!(matches!(
        err(Init::dirac(), &[4, 4], DType::F32),
        InitError::WrongRank { .. }
    ));
    assert!(matches!(
        err(Init::dirac(), &[1, 1, 1, 1, 1, 1], DType::F32),
        InitError::WrongRank { .. }
    ));
    assert!(matches!(
        err(Init::orthogonal(), &[9], DType::F32),
        InitError::WrongRank { .. }
    ));
    assert!(matches!(
        err(Init::sparse(0.5), &[2, 2, 2], DType::F32),
        InitError::WrongRank { .. }
    ));
    assert_eq!(
        err(Init::Dirac { groups: 0 }, &[4, 2, 3], DType::F32),
        InitError::BadGroups { dim0: 4, groups: 0 }
    );
    assert_eq!(
        err(Init::Dirac { groups: 3 }, &[4, 2, 3], DType::F32),
        InitError::BadGroups { dim0: 4, groups: 3 }
    );
}

#[test]
fn names_dtypes_and_parameters() {
    assert_eq!(
        Nonlinearity::from_name("gelu"),
        Err(InitError::UnknownNonlinearity("gelu".into()))
    );
    assert_eq!(
        FanMode::from_name("fan_avg"),
        Err(InitError::UnknownFanMode("fan_avg".into()))
    );
    assert!(matches!(
        calculate_gain(Nonlinearity::LeakyRelu, Some(f64::NAN)),
        Err(InitError::InvalidParameter { .. })
    ));
    let leaky_nan = Init::KaimingUniform(Kaiming {
        a: f64::INFINITY,
        ..Kaiming::default()
    });
    assert!(matches!(
        err(leaky_nan, &[3, 3], DType::F32),
        InitError::InvalidParameter { .. }
    ));
    for dtype in [DType::F64, DType::I32, DType::Q4_0] {
        assert_eq!(
            err(Init::normal(), &[32], dtype),
            InitError::UnsupportedDType(dtype)
        );
    }
    assert!(matches!(
        err(Init::Constant(1e6), &[2], DType::F16),
        InitError::InvalidParameter { name: "val", .. }
    ));
    assert!(matches!(
        err(Init::Orthogonal { gain: f64::NAN }, &[2, 2], DType::F32),
        InitError::InvalidParameter { name: "gain", .. }
    ));
    // Overflowing element counts are an error, not a huge allocation.
    let e = err(Init::normal(), &[usize::MAX, 2], DType::F32);
    assert!(matches!(e, InitError::Core(_)));
    assert!(e.source().is_some(), "source() is wired");
    // A wrong buffer length for fill.
    let mut buf = vec![0f32; 5];
    assert!(matches!(
        Init::normal().fill(&mut Rng::seeded(0), &[2, 3], &mut buf),
        Err(InitError::Core(_))
    ));
}

#[test]
fn truncation_that_cannot_be_sampled() {
    // a > b, and an interval with (almost) no mass: torch would loop.
    assert!(matches!(
        err(
            Init::TruncNormal {
                mean: 0.0,
                std: 1.0,
                a: 1.0,
                b: -1.0
            },
            &[4],
            DType::F32
        ),
        InitError::InvalidParameter { .. }
    ));
    assert!(matches!(
        err(
            Init::TruncNormal {
                mean: 0.0,
                std: 1.0,
                a: 40.0,
                b: 41.0
            },
            &[4],
            DType::F32
        ),
        InitError::InvalidParameter { name: "b", .. }
    ));
    assert!(matches!(
        err(
            Init::TruncNormal {
                mean: 0.0,
                std: 1.0,
                a: 3.0,
                b: 1e30
            },
            &[4],
            DType::F32
        ),
        InitError::InvalidParameter { .. }
    ));
    // a == b is a constant, in both modes.
    for mut rng in [Rng::seeded(0), Rng::torch(0)] {
        let t = Init::TruncNormal {
            mean: 0.0,
            std: 1.0,
            a: 0.5,
            b: 0.5,
        }
        .tensor(&mut rng, [6], DType::F32)
        .unwrap();
        assert!(t.view().to_f32_vec().unwrap().iter().all(|&x| x == 0.5));
    }
    // torch's uniform-proposal branch is only reproduced for f32.
    let e = Init::TruncNormal {
        mean: 0.0,
        std: 1.0,
        a: 1.5,
        b: 3.0,
    }
    .tensor(&mut Rng::torch(0), [4], DType::BF16)
    .unwrap_err();
    assert!(matches!(e, InitError::TorchUnsupported(_)));
}

#[test]
fn lora_errors() {
    let mut rng = Rng::seeded(0);
    assert!(matches!(
        lora_init(&mut rng, LoraInit::Default, 0, 8, 8, DType::F32),
        Err(InitError::BadLoraRank { r: 0, .. })
    ));
    let shape = Shape::new([4, 3]);
    let data = vec![0u8; 48];
    let w = TensorView::new(DType::F32, &shape, &data).unwrap();
    assert!(matches!(
        pissa(&w, 4, 1.0, SvdMethod::Exact, &mut rng, DType::F32),
        Err(InitError::BadLoraRank {
            r: 4,
            rows: 4,
            cols: 3
        })
    ));
    assert!(matches!(
        pissa(&w, 2, 0.0, SvdMethod::Exact, &mut rng, DType::F32),
        Err(InitError::InvalidParameter {
            name: "scaling",
            ..
        })
    ));
    let shape3 = Shape::new([2, 2, 3]);
    let w3 = TensorView::new(DType::F32, &shape3, &data).unwrap();
    assert!(matches!(
        pissa(&w3, 1, 1.0, SvdMethod::Exact, &mut rng, DType::F32),
        Err(InitError::BadWeight { .. })
    ));
    let ints = TensorView::new(DType::I32, &shape, &data).unwrap();
    assert!(matches!(
        pissa(&ints, 1, 1.0, SvdMethod::Exact, &mut rng, DType::F32),
        Err(InitError::BadWeight { .. })
    ));
    let nan: Vec<u8> = std::iter::repeat_n(f32::NAN.to_le_bytes(), 12)
        .flatten()
        .collect();
    let wn = TensorView::new(DType::F32, &shape, &nan).unwrap();
    assert!(matches!(
        pissa(&wn, 1, 1.0, SvdMethod::Exact, &mut rng, DType::F32),
        Err(InitError::InvalidParameter { name: "weight", .. })
    ));
}
