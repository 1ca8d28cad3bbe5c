//! Property tests over shapes and parameters.

use proptest::prelude::*;
use weightkit_core::DType;
use weightkit_init::{Distribution, Init, Rng, fan_in_and_fan_out};

fn shapes() -> impl Strategy<Value = Vec<usize>> {
    prop::collection::vec(1usize..9, 2..5)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn fans_follow_torch_formula(shape in shapes()) {
        let (fi, fo) = fan_in_and_fan_out(&shape).unwrap();
        let rf: usize = shape[2..].iter().product();
        prop_assert_eq!(fi, shape[1] * rf);
        prop_assert_eq!(fo, shape[0] * rf);
    }

    #[test]
    fn uniform_schemes_stay_in_bounds(shape in shapes(), seed in any::<u64>(), torch in any::<bool>()) {
        for init in [Init::kaiming_uniform(), Init::xavier_uniform()] {
            let Distribution::Uniform { low, high } = init.distribution(&shape, DType::F32).unwrap() else {
                panic!()
            };
            let mut rng = if torch { Rng::torch(seed) } else { Rng::seeded(seed) };
            let t = init.tensor(&mut rng, shape.clone(), DType::F32).unwrap();
            for x in t.view().to_f32_vec().unwrap() {
                prop_assert!(x >= low as f32 && x < high as f32);
            }
        }
    }

    #[test]
    fn orthogonal_is_orthonormal(rows in 1usize..24, cols in 1usize..24, seed in any::<u64>()) {
        let t = Init::orthogonal().tensor(&mut Rng::seeded(seed), [rows, cols], DType::F32).unwrap();
        let q = t.view().to_f32_vec().unwrap();
        let k = rows.min(cols);
        for a in 0..k {
            for b in 0..k {
                let dot: f64 = if rows >= cols {
                    (0..rows).map(|i| f64::from(q[i * cols + a]) * f64::from(q[i * cols + b])).sum()
                } else {
                    (0..cols).map(|i| f64::from(q[a * cols + i]) * f64::from(q[b * cols + i])).sum()
                };
                let want = if a == b { 1.0 } else { 0.0 };
                prop_assert!((dot - want).abs() < 1e-5);
            }
        }
    }

    #[test]
    fn sparse_zero_counts(rows in 1usize..40, cols in 1usize..10, s in 0.0f64..=1.0, torch in any::<bool>()) {
        let mut rng = if torch { Rng::torch(1) } else { Rng::seeded(1) };
        let t = Init::sparse(s).tensor(&mut rng, [rows, cols], DType::F32).unwrap();
        let x = t.view().to_f32_vec().unwrap();
        let want = ((s * rows as f64).ceil() as usize).min(rows);
        for c in 0..cols {
            let z = (0..rows).filter(|&r| x[r * cols + c] == 0.0).count();
            prop_assert_eq!(z, want);
        }
    }

    #[test]
    fn trunc_normal_inside_cutoffs(
        mean in -1.0f64..1.0,
        std in 0.05f64..2.0,
        a in -3.0f64..1.0,
        w in 0.01f64..3.0,
        torch in any::<bool>(),
    ) {
        let b = a + w;
        let init = Init::TruncNormal { mean, std, a, b };
        let mut rng = if torch { Rng::torch(2) } else { Rng::seeded(2) };
        match init.tensor(&mut rng, [257], DType::F32) {
            Ok(t) => {
                for x in t.view().to_f32_vec().unwrap() {
                    prop_assert!(x >= a as f32 && x <= b as f32);
                }
            }
            // Only intervals far in the tail are refused.
            Err(e) => prop_assert!(a > mean + 3.0 * std || b < mean - 3.0 * std, "{e}"),
        }
    }
}
