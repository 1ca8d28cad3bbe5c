//! The default mode: reproducible for a seed, independent of the thread
//! count, pinned bits (so that a change to the generator is noticed on any
//! platform), and streams that advance.

use weightkit_core::DType;
use weightkit_init::{CounterRng, Init, Rng};

fn all_random() -> Vec<Init> {
    vec![
        Init::Uniform { a: -2.0, b: 5.0 },
        Init::normal(),
        Init::trunc_normal(),
        Init::TruncNormal {
            mean: 0.0,
            std: 1.0,
            a: 1.5,
            b: 3.0,
        },
        Init::kaiming_uniform(),
        Init::kaiming_normal(),
        Init::xavier_uniform(),
        Init::xavier_normal(),
        Init::sparse(0.3),
        Init::orthogonal(),
    ]
}

fn bytes_with_threads(threads: usize, init: Init, shape: &[usize], dtype: DType) -> Vec<u8> {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .unwrap();
    pool.install(|| {
        let mut rng = Rng::seeded(77);
        // A preceding fill, so the stream under test is not stream 0.
        Init::normal().tensor(&mut rng, [3], DType::F32).unwrap();
        init.tensor(&mut rng, shape.to_vec(), dtype)
            .unwrap()
            .data()
            .to_vec()
    })
}

#[test]
fn thread_count_does_not_change_bytes() {
    // Large enough to take the parallel path (>= 2^16 elements).
    for init in all_random() {
        let shape: &[usize] = match init {
            Init::Orthogonal { .. } => &[300, 250],
            _ => &[1000, 333],
        };
        for dtype in [DType::F32, DType::BF16] {
            let one = bytes_with_threads(1, init, shape, dtype);
            for t in [2, 3, 8] {
                assert!(
                    one == bytes_with_threads(t, init, shape, dtype),
                    "{init:?} {dtype} with {t} threads"
                );
            }
        }
    }
}

#[test]
fn same_seed_same_tensor_and_fill_agrees() {
    for init in all_random() {
        let shape = [64, 48];
        let a = init.tensor(&mut Rng::seeded(5), shape, DType::F32).unwrap();
        let b = init.tensor(&mut Rng::seeded(5), shape, DType::F32).unwrap();
        assert_eq!(a.data(), b.data());
        let c = init.tensor(&mut Rng::seeded(6), shape, DType::F32).unwrap();
        assert_ne!(a.data(), c.data(), "{init:?}");
        let mut buf = vec![0f32; 64 * 48];
        init.fill(&mut Rng::seeded(5), &shape, &mut buf).unwrap();
        assert_eq!(buf, a.view().to_f32_vec().unwrap(), "{init:?}");
        // 16-bit outputs are the f32 values rounded once, except that a
        // uniform value that rounds up to the upper bound becomes the lower
        // bound (torch's rule, applied in the output dtype), and truncation
        // tests the rounded value (as torch does), so its draws differ.
        if let Init::TruncNormal { .. } = init {
            continue;
        }
        let h = init
            .tensor(&mut Rng::seeded(5), shape, DType::BF16)
            .unwrap();
        let h = h.view().to_f32_vec().unwrap();
        let r = a
            .to_dtype(DType::BF16)
            .unwrap()
            .view()
            .to_f32_vec()
            .unwrap();
        let bounds = match init.distribution(&shape, DType::BF16).unwrap() {
            weightkit_init::Distribution::Uniform { low, high } => Some((low as f32, high as f32)),
            _ => None,
        };
        for (x, y) in h.iter().zip(&r) {
            let wrapped = bounds.is_some_and(|(lo, hi)| {
                let round = |v: f32| half::bf16::from_f32(v).to_f32();
                *x == round(lo) && *y == round(hi)
            });
            assert!(x == y || wrapped, "{init:?}: {x} vs {y}");
        }
    }
    // Same in torch mode.
    let a = Init::kaiming_normal()
        .tensor(&mut Rng::torch(1), [40, 40], DType::F32)
        .unwrap();
    let b = Init::kaiming_normal()
        .tensor(&mut Rng::torch(1), [40, 40], DType::F32)
        .unwrap();
    assert_eq!(a.data(), b.data());
}

#[test]
fn streams_advance_and_derive_is_order_free() {
    let mut rng = Rng::seeded(1);
    let a = Init::normal().tensor(&mut rng, [100], DType::F32).unwrap();
    let b = Init::normal().tensor(&mut rng, [100], DType::F32).unwrap();
    assert_ne!(a.data(), b.data());
    // Replaying stream 1 gives the second tensor again.
    let mut c = CounterRng::new(1);
    c.set_stream(1);
    let b2 = Init::normal()
        .tensor(&mut c.into(), [100], DType::F32)
        .unwrap();
    assert_eq!(b.data(), b2.data());
    // A prefix of a longer fill is the shorter fill.
    let long = Init::normal()
        .tensor(&mut Rng::seeded(1), [1000], DType::F32)
        .unwrap();
    assert_eq!(&long.data()[..400], a.data());

    let base = CounterRng::new(3);
    let q1 = Init::kaiming_uniform()
        .tensor(
            &mut base.derive("layers.0.q_proj.weight").into(),
            [8, 8],
            DType::F32,
        )
        .unwrap();
    let mut other: Rng = base.derive("layers.0.k_proj.weight").into();
    Init::normal().tensor(&mut other, [10], DType::F32).unwrap();
    let q2 = Init::kaiming_uniform()
        .tensor(
            &mut base.derive("layers.0.q_proj.weight").into(),
            [8, 8],
            DType::F32,
        )
        .unwrap();
    assert_eq!(q1.data(), q2.data());
    let k = Init::kaiming_uniform()
        .tensor(
            &mut base.derive("layers.0.k_proj.weight").into(),
            [8, 8],
            DType::F32,
        )
        .unwrap();
    assert_ne!(q1.data(), k.data());
}

/// Pinned outputs of the default mode. These bits are a compatibility
/// promise: the same on every platform (no libm, no FMA, Philox), so a
/// failure here on any target is a bug, and a deliberate change to the
/// generator must update them and say so in the changelog.
#[test]
fn golden_default_mode_bits() {
    let bits = |init: Init, shape: &[usize]| -> Vec<u32> {
        let t = init
            .tensor(&mut Rng::seeded(42), shape.to_vec(), DType::F32)
            .unwrap();
        t.view()
            .to_f32_vec()
            .unwrap()
            .iter()
            .take(4)
            .map(|x| x.to_bits())
            .collect()
    };
    let got = [
        bits(Init::uniform(), &[8]),
        bits(Init::normal(), &[8]),
        bits(Init::kaiming_uniform(), &[4, 8]),
        bits(Init::trunc_normal(), &[8]),
    ];
    let want: [[u32; 4]; 4] = GOLDEN;
    for (g, w) in got.iter().zip(want) {
        assert_eq!(g.as_slice(), w.as_slice(), "got {got:x?}");
    }
}

/// FNV-1a 64 of whole tensors: catches a change in any bit of any element.
#[test]
fn golden_default_mode_digests() {
    let fnv = |b: &[u8]| {
        b.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &x| {
            (h ^ u64::from(x)).wrapping_mul(0x0100_0000_01b3)
        })
    };
    let cases: [(Init, &[usize], DType); 8] = [
        (Init::Uniform { a: -1.0, b: 1.0 }, &[1 << 16], DType::F32),
        (Init::normal(), &[1 << 16], DType::F32),
        (Init::kaiming_normal(), &[256, 256], DType::BF16),
        (Init::xavier_uniform(), &[256, 256], DType::F16),
        (Init::trunc_normal(), &[1 << 16], DType::F32),
        (
            Init::TruncNormal {
                mean: 0.0,
                std: 1.0,
                a: 1.5,
                b: 3.0,
            },
            &[1 << 16],
            DType::F32,
        ),
        (Init::sparse(0.3), &[256, 64], DType::F32),
        (Init::orthogonal(), &[64, 48], DType::F32),
    ];
    let got: Vec<u64> = cases
        .iter()
        .map(|(init, shape, dtype)| {
            fnv(init
                .tensor(&mut Rng::seeded(42), shape.to_vec(), *dtype)
                .unwrap()
                .data())
        })
        .collect();
    assert_eq!(got, DIGESTS, "got {got:#x?}");
}

const DIGESTS: [u64; 8] = [
    0x421f_a6d8_d075_9bc4,
    0xffcf_ff68_b905_47b2,
    0x5f6c_b7ff_1bb3_4bff,
    0x2636_e420_2b47_47fe,
    0x8949_0174_6469_ed97,
    0x1ed4_0f8d_e28e_fe2a,
    0xfb28_47a1_84bc_35d5,
    0xea21_f44a_4a5d_ccc1,
];

const GOLDEN: [[u32; 4]; 4] = [
    [0x3e5e_eac7, 0x3edf_37dd, 0x3f7b_d22f, 0x3e1c_daaa],
    [0x3fde_57fa, 0xbe37_1598, 0x3dcc_859a, 0x3ff9_eba9],
    [0xbefa_5a67, 0xbde3_1e6a, 0x3f56_76dd, 0xbf19_c85c],
    [0xbf8b_5d4a, 0x3faf_0927, 0xbf5c_ff44, 0x3fca_bbfe],
];
