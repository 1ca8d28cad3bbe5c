//! The Q4_1 and Q5_1 x Q8_1 and Q2_K x Q8_K dot products of
//! `simd::x86_avx2legacy` (the AVX2 level's kernels: broadcast-and-shift
//! nibbles, f16-table scales for Q5_1, two accumulators for Q4_1, Q2_K's
//! unshifted fields with weighted scales) against their scalar references and an
//! exact reference (each block's integer sum in i64, the rest in f64) at
//! every level this CPU supports (`dispatch::*_at`): random and adversarial
//! blocks (all-zero and all-ones quant bytes, every fifth bit set or clear,
//! partners at -128 and 127), any f16 scales and offsets (NaN, infinities,
//! subnormals, `f16::MAX`), and every row length class of the two-block
//! loop. With unit scales and zero offsets every partial sum is an integer
//! f32 holds, so every level must then give the scalar result bit for bit.

use half::f16;
use proptest::prelude::*;
use weightkit_quant::kquants::{self, BlockQ2K, BlockQ8K};
use weightkit_quant::legacy::{self, BlockQ4_1, BlockQ5_1, BlockQ8_1};
use weightkit_quant::simd::dispatch;

use crate::simd_avx2dots::scale;
use crate::simd_iq4::{DotAtOf, DotOf, check_exact_dot};

/// A Q4_1 or Q5_1 block seen through its quants (0..=31) and f16 fields.
trait Offset: Copy + bytemuck::Zeroable {
    fn quants(&self) -> [i64; 32];
    fn d(&self) -> f16;
    fn m(&self) -> f16;
}

impl Offset for BlockQ4_1 {
    fn quants(&self) -> [i64; 32] {
        std::array::from_fn(|i| i64::from((self.qs[i % 16] >> (4 * (i / 16))) & 0x0f))
    }
    fn d(&self) -> f16 {
        self.d
    }
    fn m(&self) -> f16 {
        self.m
    }
}

impl Offset for BlockQ5_1 {
    fn quants(&self) -> [i64; 32] {
        let qh = u32::from_le_bytes(self.qh);
        std::array::from_fn(|i| {
            let low = (self.qs[i % 16] >> (4 * (i / 16))) & 0x0f;
            i64::from(low) + 16 * i64::from((qh >> i) & 1)
        })
    }
    fn d(&self) -> f16 {
        self.d
    }
    fn m(&self) -> f16 {
        self.m
    }
}

/// `(sum dx dy s + mx sy, sum |dx dy| |s| + |mx sy|)` with each block's
/// integer `s = sum q y` exact in i64.
fn exact<X: Offset>(x: &[X], y: &[BlockQ8_1]) -> (f64, f64) {
    let (mut sum, mut mag) = (0f64, 0f64);
    for (bx, by) in x.iter().zip(y) {
        let q = bx.quants();
        let s: i64 = q.iter().zip(&by.qs).map(|(&a, &b)| a * i64::from(b)).sum();
        let a: i64 = q
            .iter()
            .zip(&by.qs)
            .map(|(&a, &b)| (a * i64::from(b)).abs())
            .sum();
        let d = f64::from(bx.d().to_f32() * by.d.to_f32());
        let ms = f64::from(bx.m().to_f32() * by.s.to_f32());
        sum += d * s as f64 + ms;
        mag += d.abs() * a as f64 + ms.abs();
    }
    (sum, mag)
}

/// [`check_exact_dot`] for a Q4_1/Q5_1 row.
fn check<X: Offset>(
    name: &str,
    x: &[X],
    y: &[BlockQ8_1],
    scalar: DotOf<X, BlockQ8_1>,
    at: DotAtOf<X, BlockQ8_1>,
    bitwise: bool,
) -> Result<(), TestCaseError> {
    check_exact_dot(name, x, y, exact(x, y), scalar, at, bitwise)
}

fn check_q4_1(name: &str, x: &[BlockQ4_1], y: &[BlockQ8_1], bitwise: bool) {
    check(
        name,
        x,
        y,
        legacy::vec_dot_q4_1_q8_1,
        dispatch::vec_dot_q4_1_q8_1_at,
        bitwise,
    )
    .unwrap();
}

fn check_q5_1(name: &str, x: &[BlockQ5_1], y: &[BlockQ8_1], bitwise: bool) {
    check(
        name,
        x,
        y,
        legacy::vec_dot_q5_1_q8_1,
        dispatch::vec_dot_q5_1_q8_1_at,
        bitwise,
    )
    .unwrap();
}

fn q8_1(d: f16, s: f16, qs: [i8; 32]) -> BlockQ8_1 {
    BlockQ8_1 { d, s, qs }
}

/// Extreme quant bytes (all zero, all ones, alternating) and fifth bits
/// against extreme partners, unit scales and zero or unit offsets: exact,
/// for every row length class of the two-block loop.
#[test]
fn avx2legacy_extreme_blocks() {
    for nb in [0usize, 1, 2, 3, 4, 5, 8, 9] {
        for qb in [0x00u8, 0xff, 0x0f, 0xf0, 0x5a] {
            for qh in [[0u8; 4], [0xff; 4], [0x55, 0xaa, 0x0f, 0xf0]] {
                for yv in [i8::MIN, i8::MAX, -1, 0, 1] {
                    for (m, s) in [(f16::ZERO, f16::ZERO), (f16::ONE, f16::ONE)] {
                        let y = vec![q8_1(f16::ONE, s, [yv; 32]); nb];
                        let x4 = vec![
                            BlockQ4_1 {
                                d: f16::ONE,
                                m,
                                qs: [qb; 16],
                            };
                            nb
                        ];
                        let x5 = vec![
                            BlockQ5_1 {
                                d: f16::ONE,
                                m,
                                qh,
                                qs: [qb; 16],
                            };
                            nb
                        ];
                        let ctx = format!("{nb} blocks, qs {qb:#x}, qh {qh:?}, y {yv}, m {m}");
                        check_q4_1(&ctx, &x4, &y, true);
                        check_q5_1(&ctx, &x5, &y, true);
                    }
                }
            }
        }
    }
}

/// Non-finite and extreme scales in one block of a row: the row's result is
/// non-finite (or finite) at every level as in the scalar code.
#[test]
fn avx2legacy_nonfinite_scales() {
    let specials = [
        f16::NAN,
        f16::INFINITY,
        f16::NEG_INFINITY,
        f16::MAX,
        f16::from_bits(0x0001),
        f16::ZERO,
    ];
    for nb in [1usize, 2, 3, 6, 7] {
        for (k, &v) in specials.iter().enumerate() {
            for field in 0..4 {
                let at = (k + field) % nb;
                let mut x4 = vec![
                    BlockQ4_1 {
                        d: f16::ONE,
                        m: f16::ONE,
                        qs: [0x3c; 16],
                    };
                    nb
                ];
                let mut x5 = vec![
                    BlockQ5_1 {
                        d: f16::ONE,
                        m: f16::ONE,
                        qh: [0x3c; 4],
                        qs: [0x3c; 16],
                    };
                    nb
                ];
                let mut y = vec![q8_1(f16::ONE, f16::ONE, [-7; 32]); nb];
                match field {
                    0 => (x4[at].d, x5[at].d) = (v, v),
                    1 => (x4[at].m, x5[at].m) = (v, v),
                    2 => y[at].d = v,
                    _ => y[at].s = v,
                }
                let ctx = format!("{nb} blocks, field {field} of block {at} = {v}");
                check_q4_1(&ctx, &x4, &y, false);
                check_q5_1(&ctx, &x5, &y, false);
            }
        }
    }
}

fn extreme_u8() -> impl Strategy<Value = u8> {
    prop_oneof![4 => any::<u8>(), 1 => Just(0u8), 1 => Just(0xffu8), 1 => Just(0x0fu8)]
}

fn extreme_i8() -> impl Strategy<Value = i8> {
    prop_oneof![4 => any::<i8>(), 1 => Just(i8::MIN), 1 => Just(i8::MAX), 1 => Just(-1i8)]
}

fn rows(
    nb: usize,
    xb: &[u8],
    yq: &[i8],
    sc: &[f16],
) -> (Vec<BlockQ4_1>, Vec<BlockQ5_1>, Vec<BlockQ8_1>) {
    let mut x4 = vec![];
    let mut x5 = vec![];
    let mut y = vec![];
    for b in 0..nb {
        let xs = &xb[20 * b..20 * b + 20];
        let (d, m) = (sc[4 * b], sc[4 * b + 1]);
        let qs: [u8; 16] = xs[4..].try_into().unwrap();
        x4.push(BlockQ4_1 { d, m, qs });
        x5.push(BlockQ5_1 {
            d,
            m,
            qh: xs[..4].try_into().unwrap(),
            qs,
        });
        y.push(q8_1(
            sc[4 * b + 2],
            sc[4 * b + 3],
            yq[32 * b..32 * b + 32].try_into().unwrap(),
        ));
    }
    (x4, x5, y)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    /// Any quant bytes and any scales and offsets: within the magnitude's
    /// tolerance of the exact sum at every level.
    #[test]
    fn avx2legacy_raw_blocks(
        nb in 0usize..=11,
        xb in proptest::collection::vec(extreme_u8(), 11 * 20),
        yq in proptest::collection::vec(extreme_i8(), 11 * 32),
        sc in proptest::collection::vec(scale(), 11 * 4),
    ) {
        let (x4, x5, y) = rows(nb, &xb, &yq, &sc);
        check(
            "raw q4_1", &x4, &y, legacy::vec_dot_q4_1_q8_1, dispatch::vec_dot_q4_1_q8_1_at, false,
        )?;
        check(
            "raw q5_1", &x5, &y, legacy::vec_dot_q5_1_q8_1, dispatch::vec_dot_q5_1_q8_1_at, false,
        )?;
    }

    /// Unit scales (either sign) and zero offsets: each block's integer is
    /// at most `32 * 31 * 128` in magnitude, so with up to 24 blocks every
    /// order of summation is exact and every level matches bit for bit.
    #[test]
    fn avx2legacy_integer_dots_are_exact(
        nb in 1usize..=24,
        xb in proptest::collection::vec(extreme_u8(), 24 * 20),
        yq in proptest::collection::vec(extreme_i8(), 24 * 32),
        neg in any::<bool>(),
    ) {
        let one = if neg { -f16::ONE } else { f16::ONE };
        let sc: Vec<f16> = (0..24 * 4)
            .map(|i| match i % 4 { 0 => one, 2 => f16::ONE, _ => f16::ZERO })
            .collect();
        let (x4, x5, y) = rows(nb, &xb, &yq, &sc);
        check(
            "int q4_1", &x4, &y, legacy::vec_dot_q4_1_q8_1, dispatch::vec_dot_q4_1_q8_1_at, true,
        )?;
        check(
            "int q5_1", &x5, &y, legacy::vec_dot_q5_1_q8_1, dispatch::vec_dot_q5_1_q8_1_at, true,
        )?;
    }
}

// --------------------------------------------------------------------- Q2_K

/// `(sum yd d isum - yd dmin summs, magnitude)` with each block's integer
/// sums exact in i64 (the mins against the stored `bsums`, as the scalar
/// code does).
fn q2_k_exact(x: &[BlockQ2K], y: &[BlockQ8K]) -> (f64, f64) {
    let (mut sum, mut mag) = (0f64, 0f64);
    for (bx, by) in x.iter().zip(y) {
        let (mut isum, mut iabs) = (0i64, 0i64);
        for (i, &q8) in by.qs.iter().enumerate() {
            let (chunk, field, l) = (i / 128, (i / 32) % 4, i % 32);
            let q = i64::from((bx.qs[32 * chunk + l] >> (2 * field)) & 3);
            let sc = i64::from(bx.scales[i / 16] & 0x0f);
            isum += sc * q * i64::from(q8);
            iabs += (sc * q * i64::from(q8)).abs();
        }
        let (mut summs, mut mabs) = (0i64, 0i64);
        for (&b, &s) in by.bsums.iter().zip(&bx.scales) {
            summs += i64::from(b) * i64::from(s >> 4);
            mabs += (i64::from(b) * i64::from(s >> 4)).abs();
        }
        let d = f64::from(by.d * bx.d.to_f32());
        let dmin = f64::from(by.d * bx.dmin.to_f32());
        sum += d * isum as f64 - dmin * summs as f64;
        mag += d.abs() * iabs as f64 + dmin.abs() * mabs as f64;
    }
    (sum, mag)
}

/// [`check_exact_dot`] for a Q2_K row.
fn check_q2_k(
    name: &str,
    x: &[BlockQ2K],
    y: &[BlockQ8K],
    bitwise: bool,
) -> Result<(), TestCaseError> {
    check_exact_dot(
        name,
        x,
        y,
        q2_k_exact(x, y),
        kquants::vec_dot_q2_k_q8_k,
        dispatch::vec_dot_q2_k_q8_k_at,
        bitwise,
    )
}

/// Extreme quant and scale bytes (every field 3, every scale 15, mixed)
/// against extreme partners and extreme `bsums`, unit scales: exact (each
/// block's sums are integers f32 holds for these few blocks).
#[test]
fn avx2legacy_q2_k_extreme_blocks() {
    for nb in [0usize, 1, 2, 3] {
        for qb in [0x00u8, 0xff, 0x1b, 0xe4, 0xc0, 0x30] {
            for sb in [0x00u8, 0xff, 0x0f, 0xf0, 0x5a] {
                for yv in [i8::MIN, i8::MAX, -1, 1] {
                    for bs in [i16::MIN, i16::MAX, 0, -1] {
                        for (d, dmin) in [(f16::ONE, f16::ZERO), (f16::ONE, f16::ONE)] {
                            let x = vec![
                                BlockQ2K {
                                    scales: [sb; 16],
                                    qs: [qb; 64],
                                    d,
                                    dmin,
                                };
                                nb
                            ];
                            let y = vec![
                                BlockQ8K {
                                    d: 1.0,
                                    qs: [yv; 256],
                                    bsums: [bs; 16],
                                };
                                nb
                            ];
                            let ctx = format!(
                                "{nb} blocks, qs {qb:#x}, scales {sb:#x}, y {yv}, bsums {bs}, dmin {dmin}"
                            );
                            // At most 256 * 3 * 15 * 128 + 16 * 15 * 32768 per
                            // block, multiples of 2^15 where large: f32 holds
                            // every partial sum.
                            check_q2_k(&ctx, &x, &y, true).unwrap();
                        }
                    }
                }
            }
        }
    }
}

fn f32_scale() -> impl Strategy<Value = f32> {
    prop_oneof![
        4 => -2.0f32..2.0,
        1 => Just(f32::MIN_POSITIVE / 4.0),
        1 => Just(1e30f32),
        1 => Just(f32::INFINITY),
        1 => Just(f32::NAN),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    /// Any Q2_K bytes and f16 scales against Q8_K partners with any quants,
    /// any f32 scale and any (not necessarily consistent) `bsums`: within
    /// the magnitude's tolerance of the exact sum at every level; with unit
    /// scales bit for bit.
    #[test]
    fn avx2legacy_q2_k_raw_blocks(
        nb in 0usize..=5,
        xb in proptest::collection::vec(extreme_u8(), 5 * 80),
        yq in proptest::collection::vec(extreme_i8(), 5 * 256),
        bsums in proptest::collection::vec(any::<i16>(), 5 * 16),
        sc in proptest::collection::vec(scale(), 5 * 2),
        yd in proptest::collection::vec(f32_scale(), 5),
        unit in any::<bool>(),
    ) {
        let mut x = vec![];
        let mut y = vec![];
        for b in 0..nb {
            let xs = &xb[80 * b..80 * b + 80];
            x.push(BlockQ2K {
                scales: xs[..16].try_into().unwrap(),
                qs: xs[16..].try_into().unwrap(),
                d: if unit { f16::ONE } else { sc[2 * b] },
                dmin: if unit { f16::ONE } else { sc[2 * b + 1] },
            });
            y.push(BlockQ8K {
                d: if unit { 1.0 } else { yd[b] },
                qs: yq[256 * b..256 * b + 256].try_into().unwrap(),
                // Unit scales: bsums within 4096, so that every partial sum
                // of up to five blocks is an integer below 2^24.
                bsums: std::array::from_fn(|i| {
                    let v = bsums[16 * b + i];
                    if unit { v % 4096 } else { v }
                }),
            });
        }
        check_q2_k("raw q2_k", &x, &y, unit)?;
    }
}
