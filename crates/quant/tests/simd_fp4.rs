//! The MXFP4 and NVFP4 SIMD kernels against their scalar references at
//! every level this CPU supports: dequantizers bit for bit, dot products
//! exactly where every partial sum is an integer f32 represents, and within
//! a few ulps of their magnitude otherwise (and the scalar dots against an
//! exact f64 dot from i64 block sums).

use bytemuck::Zeroable;
use half::f16;
use proptest::prelude::*;
use weightkit_quant::QuantError;
use weightkit_quant::iquants::{
    self, BlockMxfp4, BlockNvfp4, e8m0_to_fp32_half, grids::KVALUES_MXFP4, ue4m3_to_fp32,
};
use weightkit_quant::legacy::{self, BlockQ8_0};
use weightkit_quant::simd::dispatch;

use crate::simd::{assert_length_error, check_dequant, levels};
use crate::simd_iq4::{check_dot, extreme_i8, extreme_u8, q8_0_raw, row, value};

/// Bytes of one `block_q8_0`, one MXFP4 and one NVFP4 block.
const Q8_0_BYTES: usize = 34;
const MX_BYTES: usize = 17;
const NV_BYTES: usize = 36;

fn mx_blocks(bytes: &[u8]) -> Vec<BlockMxfp4> {
    bytes
        .chunks_exact(MX_BYTES)
        .map(bytemuck::pod_read_unaligned)
        .collect()
}

fn nv_blocks(bytes: &[u8]) -> Vec<BlockNvfp4> {
    bytes
        .chunks_exact(NV_BYTES)
        .map(bytemuck::pod_read_unaligned)
        .collect()
}

fn q8_0_quant(y: &[u8], i: usize) -> i64 {
    i64::from(y[i / 32 * Q8_0_BYTES + 2 + i % 32] as i8)
}

fn q8_0_scale(y: &[u8], block: usize) -> f32 {
    let b = &y[block * Q8_0_BYTES..];
    f16::from_bits(u16::from_le_bytes([b[0], b[1]])).to_f32()
}

fn fp4(code: u8) -> i64 {
    i64::from(KVALUES_MXFP4[usize::from(code & 15)])
}

/// Per MXFP4 block: `(d_y * e8m0_half(e), sum v q, sum |v q|)`.
fn mx_terms(x: &[BlockMxfp4], y: &[u8]) -> Vec<(f64, i64, i64)> {
    x.iter()
        .enumerate()
        .map(|(b, xb)| {
            let (mut s, mut a) = (0i64, 0i64);
            for j in 0..32 {
                let code = if j < 16 { xb.qs[j] } else { xb.qs[j - 16] >> 4 };
                let p = fp4(code) * q8_0_quant(y, 32 * b + j);
                s += p;
                a += p.abs();
            }
            let d = q8_0_scale(y, b) * e8m0_to_fp32_half(xb.e);
            (f64::from(d), s, a)
        })
        .collect()
}

/// Per NVFP4 sub-block of 16: `(d_y * ue4m3(d[s]), sum v q, sum |v q|)`.
fn nv_terms(x: &[BlockNvfp4], y: &[u8]) -> Vec<(f64, i64, i64)> {
    let mut out = vec![];
    for (b, xb) in x.iter().enumerate() {
        for s in 0..4 {
            let (mut sum, mut a) = (0i64, 0i64);
            for j in 0..16 {
                let byte = xb.qs[8 * s + j % 8];
                let code = if j < 8 { byte } else { byte >> 4 };
                let p = fp4(code) * q8_0_quant(y, 64 * b + 16 * s + j);
                sum += p;
                a += p.abs();
            }
            let d = q8_0_scale(y, 2 * b + s / 2) * ue4m3_to_fp32(xb.d[s]);
            out.push((f64::from(d), sum, a));
        }
    }
    out
}

fn mx_dot(name: &str, x: &[BlockMxfp4], y: &[u8], exact: bool) -> Result<(), TestCaseError> {
    let terms = mx_terms(x, y);
    check_dot(
        name,
        x,
        y,
        &terms,
        exact,
        iquants::vec_dot_mxfp4_q8_0,
        dispatch::vec_dot_mxfp4_q8_0_at,
    )
}

fn nv_dot(name: &str, x: &[BlockNvfp4], y: &[u8], exact: bool) -> Result<(), TestCaseError> {
    let terms = nv_terms(x, y);
    check_dot(
        name,
        x,
        y,
        &terms,
        exact,
        iquants::vec_dot_nvfp4_q8_0,
        dispatch::vec_dot_nvfp4_q8_0_at,
    )
}

fn mx_dequant(name: &str, x: &[BlockMxfp4]) -> Result<(), TestCaseError> {
    check_dequant(
        name,
        x,
        32,
        iquants::dequantize_row_mxfp4,
        dispatch::dequantize_row_mxfp4_at,
    )
}

fn nv_dequant(name: &str, x: &[BlockNvfp4]) -> Result<(), TestCaseError> {
    check_dequant(
        name,
        x,
        64,
        iquants::dequantize_row_nvfp4,
        dispatch::dequantize_row_nvfp4_at,
    )
}

/// Both quantizers (rows of `x.len() / 2`, with and without importance
/// weights, which they ignore) give the scalar reference's bytes at every
/// level.
fn check_quantizers(x: &[f32]) -> Result<(), TestCaseError> {
    let n = x.len();
    let w: Vec<f32> = (0..n / 2).map(|i| 0.25 + (i % 7) as f32).collect();
    let mut want_mx = vec![BlockMxfp4::zeroed(); n / 32];
    iquants::quantize_row_mxfp4_ref(x, &mut want_mx).unwrap();
    let mut want_nv = vec![BlockNvfp4::zeroed(); n / 64];
    iquants::quantize_row_nvfp4_ref(x, &mut want_nv).unwrap();
    for level in levels() {
        for w in [None, Some(&w[..])] {
            let mut mx = vec![BlockMxfp4::zeroed(); n / 32];
            dispatch::quantize_mxfp4_at(level, x, &mut mx, n / 2, w).unwrap();
            prop_assert_eq!(&mx, &want_mx, "mxfp4 at {:?}", level);
            let mut nv = vec![BlockNvfp4::zeroed(); n / 64];
            dispatch::quantize_nvfp4_at(level, x, &mut nv, n / 2, w).unwrap();
            prop_assert_eq!(&nv, &want_nv, "nvfp4 at {:?}", level);
        }
        let mut mx = vec![BlockMxfp4::zeroed(); n / 32];
        dispatch::quantize_row_mxfp4_at(level, x, &mut mx).unwrap();
        prop_assert_eq!(&mx, &want_mx, "mxfp4 row at {:?}", level);
        let mut nv = vec![BlockNvfp4::zeroed(); n / 64];
        dispatch::quantize_row_nvfp4_at(level, x, &mut nv).unwrap();
        prop_assert_eq!(&nv, &want_nv, "nvfp4 row at {:?}", level);
    }
    Ok(())
}

/// `x` (an even number of NVFP4 blocks) quantized by both quantizers at
/// every level and a second row quantized to Q8_0, all checked.
fn quantized_rows(x: &[f32], y: &[f32]) -> Result<(), TestCaseError> {
    check_quantizers(x)?;
    let n = x.len();
    let mut mx = vec![BlockMxfp4::zeroed(); n / 32];
    iquants::quantize_mxfp4(x, &mut mx, n, None).unwrap();
    let mut nv = vec![BlockNvfp4::zeroed(); n / 64];
    iquants::quantize_nvfp4(x, &mut nv, n, None).unwrap();
    mx_dequant("mxfp4", &mx)?;
    nv_dequant("nvfp4", &nv)?;
    let mut y0 = vec![BlockQ8_0::zeroed(); n / 32];
    legacy::quantize_row_q8_0_ref(y, &mut y0).unwrap();
    mx_dot("mxfp4", &mx, bytemuck::cast_slice(&y0), false)?;
    nv_dot("nvfp4", &nv, bytemuck::cast_slice(&y0), false)?;
    Ok(())
}

/// A Q8_0 scale: ordinary values, and now and then an extreme f16 (max,
/// subnormal, infinite, NaN, zero).
fn q8_scale() -> impl Strategy<Value = f16> {
    prop_oneof![
        6 => (-4.0f32..4.0).prop_map(f16::from_f32),
        1 => Just(f16::MAX),
        1 => Just(f16::from_bits(0x0001)),
        1 => Just(f16::INFINITY),
        1 => Just(f16::NEG_INFINITY),
        1 => Just(f16::NAN),
        1 => Just(f16::ZERO),
    ]
}

/// Raw `block_q8_0` bytes, one scale per block from `d`.
fn q8_0_raw_scales(d: &[f16], qs: &[i8]) -> Vec<u8> {
    let mut out = vec![];
    for (c, d) in qs.chunks_exact(32).zip(d.iter().cycle()) {
        out.extend_from_slice(&d.to_bits().to_le_bytes());
        out.extend(c.iter().map(|&q| q as u8));
    }
    out
}

/// UE4M3 bytes worth 1.0 (`0x40`) and 0.5 (`0x38`), and E8M0 bytes worth
/// 1.0 (128) and 0.5 (127) as `e8m0_to_fp32_half` decodes them.
const UE4M3_ONE: u8 = 0x40;
const UE4M3_HALF: u8 = 0x38;
const E8M0_ONE: u8 = 128;
const E8M0_HALF: u8 = 127;

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// Random rows of 2 to 16 NVFP4 blocks (4 to 32 MXFP4 blocks).
    #[test]
    fn fp4_quantized_rows_match_scalar(
        (x, y) in row(128, 8).prop_flat_map(|x| {
            let n = x.len();
            (Just(x), proptest::collection::vec(value(), n))
        }),
    ) {
        quantized_rows(&x, &y)?;
    }

    /// Arbitrary block bytes (every scale byte, E8M0's NaN 255 and UE4M3's
    /// 0x7F and 0xFF included) and Q8_0 scales (infinite, NaN, subnormal
    /// among them) dequantize identically, and dot within the magnitude's
    /// tolerance.
    #[test]
    fn fp4_raw_blocks_match_scalar(
        xb in proptest::collection::vec(extreme_u8(), 0..=19 * NV_BYTES),
        yq in proptest::collection::vec(extreme_i8(), 2 * 19 * 64),
        dy in proptest::collection::vec(q8_scale(), 1..=5),
    ) {
        let mx = mx_blocks(&xb);
        let nv = nv_blocks(&xb);
        mx_dequant("raw mxfp4", &mx)?;
        nv_dequant("raw nvfp4", &nv)?;
        mx_dot("raw mxfp4", &mx, &q8_0_raw_scales(&dy, &yq[..32 * mx.len()]), false)?;
        nv_dot("raw nvfp4", &nv, &q8_0_raw_scales(&dy, &yq[..64 * nv.len()]), false)?;
    }

    /// With scales of 1 and 1/2 every partial sum is a multiple of 1/4
    /// below 2^22 (at most `40 * 64 * 12 * 128` in magnitude), so the dots
    /// are exact, `-128` quants included.
    #[test]
    fn fp4_integer_dots_are_exact(
        nb in 1usize..=40,
        xb in proptest::collection::vec(extreme_u8(), 40 * 32),
        yq in proptest::collection::vec(extreme_i8(), 40 * 64),
        scales in proptest::collection::vec(any::<bool>(), 4 * 40),
        dy in proptest::collection::vec(prop_oneof![Just(1.0f32), Just(-1.0f32), Just(0.5f32)], 1..=3),
    ) {
        let dy: Vec<f16> = dy.into_iter().map(f16::from_f32).collect();
        let mx: Vec<BlockMxfp4> = xb.chunks_exact(16).take(2 * nb).zip(&scales)
            .map(|(c, &half)| BlockMxfp4 {
                e: if half { E8M0_HALF } else { E8M0_ONE },
                qs: c.try_into().unwrap(),
            })
            .collect();
        mx_dot("int mxfp4", &mx, &q8_0_raw_scales(&dy, &yq[..64 * nb]), true)?;
        let nv: Vec<BlockNvfp4> = xb.chunks_exact(32).take(nb).zip(scales.chunks_exact(4))
            .map(|(c, s)| BlockNvfp4 {
                d: std::array::from_fn(|i| if s[i] { UE4M3_HALF } else { UE4M3_ONE }),
                qs: c.try_into().unwrap(),
            })
            .collect();
        nv_dot("int nvfp4", &nv, &q8_0_raw_scales(&dy, &yq[..64 * nb]), true)?;
    }
}

/// Blocks of one repeated byte against quants of -128, 127 and -1, with
/// every extreme scale: E8M0 0 and 1 (subnormal results), 2, 127, 128, 254
/// and 255 (NaN in E8M0, 2^127 in ggml); UE4M3 0, 1 (subnormal), 0x7E
/// (448 / 2), 0x7F (decodes to 0), 0x80, 0xFF; Q8_0 scales 1, max, inf, NaN.
#[test]
fn fp4_extreme_blocks() {
    let e8m0 = [0u8, 1, 2, 127, 128, 254, 255];
    let ue4m3 = [0u8, 1, 7, 8, 0x40, 0x7E, 0x7F, 0x80, 0xFF];
    let dys = [f16::ONE, f16::MAX, f16::INFINITY, f16::NAN];
    for xb in [0x00u8, 0xFF, 0x88, 0x77, 0x0F, 0xF0, 0x80, 0x08] {
        for yq in [i8::MIN, i8::MAX, -1] {
            for nb in [1, 2, 3, 5, 9] {
                for dy in dys {
                    let ctx = format!("byte {xb:#x}, quant {yq}, {nb} blocks, d_y {dy}");
                    let y = q8_0_raw(dy, &vec![yq; 64 * nb]);
                    for e in e8m0 {
                        let x = vec![BlockMxfp4 { e, qs: [xb; 16] }; 2 * nb];
                        let exact = dy == f16::ONE && e == E8M0_ONE;
                        mx_dot("mxfp4", &x, &y, exact)
                            .unwrap_or_else(|err| panic!("{ctx}, e {e}: {err}"));
                        mx_dequant("mxfp4", &x).unwrap_or_else(|err| panic!("{ctx}, e {e}: {err}"));
                    }
                    for d in ue4m3 {
                        // Also the four sub-blocks with different scales.
                        for ds in [[d; 4], [d, UE4M3_ONE, 0x7F, 0x01]] {
                            let x = vec![
                                BlockNvfp4 {
                                    d: ds,
                                    qs: [xb; 32]
                                };
                                nb
                            ];
                            let exact = dy == f16::ONE && ds == [UE4M3_ONE; 4];
                            nv_dot("nvfp4", &x, &y, exact)
                                .unwrap_or_else(|err| panic!("{ctx}, d {ds:?}: {err}"));
                            nv_dequant("nvfp4", &x)
                                .unwrap_or_else(|err| panic!("{ctx}, d {ds:?}: {err}"));
                        }
                    }
                }
            }
        }
    }
}

/// Rows on and next to every decision boundary of both quantizers: the
/// midpoints between codes (ties go to the first code, as in ggml), signed
/// zeros, one ulp either side, subnormals and the largest floats, at
/// several block scales.
#[test]
fn fp4_quantizer_boundaries() {
    let mut rows: Vec<Vec<f32>> = vec![];
    for scale in [1.0f32, 0.75, 3.0e-3, 1.0e-40, 1.0e30, f32::MAX / 13.0] {
        // Multiples of 1/8 in -12..=12 (every code value and midpoint for
        // MXFP4 blocks of amax 12, NVFP4 sub-blocks of amax 6 or 12).
        let grid: Vec<f32> = (-96..=96).map(|k| k as f32 / 8.0 * scale).collect();
        for nudge in [0i32, 1, -1] {
            let row: Vec<f32> = grid
                .iter()
                .map(|&v| {
                    if v == 0.0 {
                        v
                    } else {
                        f32::from_bits(v.to_bits().wrapping_add_signed(nudge))
                    }
                })
                .chain([-0.0, 0.0, 12.0 * scale, -6.0 * scale])
                .cycle()
                .take(128 * 8)
                .map(|v| if v.is_finite() { v } else { f32::MAX })
                .collect();
            rows.push(row);
        }
    }
    rows.push(vec![0.0; 256]);
    rows.push(vec![-0.0; 256]);
    rows.push(vec![f32::MAX; 256]);
    rows.push(vec![-f32::MAX; 256]);
    rows.push(
        (0..256)
            .map(|i| f32::from_bits(i * 7919 % 0x0080_0000))
            .collect(),
    );
    rows.push(
        (0..256)
            .map(|i| {
                if i % 2 == 0 {
                    f32::MIN_POSITIVE
                } else {
                    -1.0e-45
                }
            })
            .collect(),
    );
    for row in rows {
        check_quantizers(&row).unwrap_or_else(|e| panic!("{:?}: {e}", &row[..4]));
    }
}

/// Long rows (many blocks, every accumulator, 1 << 14 values).
#[test]
fn fp4_long_rows_match_scalar() {
    let x: Vec<f32> = (0..1 << 14)
        .map(|i| ((i as f32) * 0.618).sin() * (1.0 + (i % 97) as f32))
        .collect();
    let y: Vec<f32> = (0..1 << 14).map(|i| ((i as f32) * 0.37).cos()).collect();
    quantized_rows(&x, &y).unwrap();
}

/// Wrong lengths give the scalar function's typed error at every level, and
/// the default-level entry points and the byte-level API agree.
#[test]
fn fp4_errors_match_scalar_at_every_level() {
    let mx = [BlockMxfp4::zeroed(); 3];
    let nv = [BlockNvfp4::zeroed(); 3];
    for level in levels() {
        for n in [0, 95, 97, 4 * 32] {
            let got = dispatch::dequantize_row_mxfp4_at(level, &mx, &mut vec![0.0; n]);
            assert!(
                matches!(got, Err(QuantError::BufferLength { .. })),
                "{got:?}"
            );
            assert_eq!(got, iquants::dequantize_row_mxfp4(&mx, &mut vec![0.0; n]));
        }
        for n in [0, 191, 193, 4 * 64] {
            let got = dispatch::dequantize_row_nvfp4_at(level, &nv, &mut vec![0.0; n]);
            assert!(
                matches!(got, Err(QuantError::BufferLength { .. })),
                "{got:?}"
            );
            assert_eq!(got, iquants::dequantize_row_nvfp4(&nv, &mut vec![0.0; n]));
        }
        for n in [0, 1, 33, 3 * 34 - 1, 3 * 34 + 1, 4 * 34, 3 * 68] {
            let y = vec![0u8; n];
            assert_length_error(
                dispatch::vec_dot_mxfp4_q8_0_at(level, &mx, &y),
                iquants::vec_dot_mxfp4_q8_0(&mx, &y),
            );
        }
        for n in [0, 67, 3 * 34, 3 * 68 - 1, 3 * 68 + 1, 4 * 68] {
            let y = vec![0u8; n];
            assert_length_error(
                dispatch::vec_dot_nvfp4_q8_0_at(level, &nv, &y),
                iquants::vec_dot_nvfp4_q8_0(&nv, &y),
            );
        }
        for n in [0, 32, 64 * 3 + 1] {
            let x = vec![1.0f32; n];
            let mut y = vec![BlockNvfp4::zeroed(); 3];
            assert_eq!(
                dispatch::quantize_nvfp4_at(level, &x, &mut y, 64, None),
                iquants::quantize_nvfp4(&x, &mut y, 64, None)
            );
            assert_eq!(
                dispatch::quantize_row_nvfp4_at(level, &x, &mut y),
                iquants::quantize_row_nvfp4_ref(&x, &mut y)
            );
            let mut y = vec![BlockMxfp4::zeroed(); 3];
            assert_eq!(
                dispatch::quantize_mxfp4_at(level, &x, &mut y, 32, None),
                iquants::quantize_mxfp4(&x, &mut y, 32, None)
            );
        }
        let mut bad = vec![1.0f32; 128];
        bad[77] = f32::NAN;
        let mut y = vec![BlockMxfp4::zeroed(); 4];
        let got = dispatch::quantize_mxfp4_at(level, &bad, &mut y, 128, None);
        assert!(
            matches!(got, Err(QuantError::NonFiniteInput { index: 77, .. })),
            "{got:?}"
        );
        let mut y = vec![BlockNvfp4::zeroed(); 2];
        bad[77] = f32::INFINITY;
        let got = dispatch::quantize_nvfp4_at(level, &bad, &mut y, 64, Some(&[1.0; 64]));
        assert!(
            matches!(got, Err(QuantError::NonFiniteInput { index: 77, .. })),
            "{got:?}"
        );
        let got = dispatch::quantize_nvfp4_at(level, &bad, &mut y, 64, Some(&[-1.0; 64]));
        assert_eq!(
            got,
            iquants::quantize_nvfp4(&bad, &mut y, 64, Some(&[-1.0; 64]))
        );
        // Empty rows are fine and zero.
        assert_eq!(dispatch::vec_dot_mxfp4_q8_0_at(level, &[], &[]), Ok(0.0));
        assert_eq!(dispatch::vec_dot_nvfp4_q8_0_at(level, &[], &[]), Ok(0.0));
        assert_eq!(
            dispatch::dequantize_row_mxfp4_at(level, &[], &mut []),
            Ok(())
        );
        assert_eq!(
            dispatch::dequantize_row_nvfp4_at(level, &[], &mut []),
            Ok(())
        );
    }
    let x: Vec<f32> = (0..5 * 64).map(|i| (i as f32 * 0.37).cos()).collect();
    let mut mx = vec![BlockMxfp4::zeroed(); 10];
    iquants::quantize_mxfp4(&x, &mut mx, x.len(), None).unwrap();
    let mut nv = vec![BlockNvfp4::zeroed(); 5];
    iquants::quantize_nvfp4(&x, &mut nv, x.len(), None).unwrap();
    let mut y0 = vec![BlockQ8_0::zeroed(); 10];
    legacy::quantize_row_q8_0_ref(&x, &mut y0).unwrap();
    let y0: &[u8] = bytemuck::cast_slice(&y0);
    use weightkit_core::DType;
    let want = iquants::vec_dot_mxfp4_q8_0(&mx, y0).unwrap();
    let got = dispatch::vec_dot_mxfp4_q8_0(&mx, y0).unwrap();
    let api = weightkit_quant::api::vec_dot(DType::MXFP4, bytemuck::cast_slice(&mx), y0).unwrap();
    assert!(
        (got - want).abs() <= 1e-4 * want.abs().max(1.0),
        "{got} vs {want}"
    );
    assert_eq!(api.to_bits(), got.to_bits());
    let want = iquants::vec_dot_nvfp4_q8_0(&nv, y0).unwrap();
    let got = dispatch::vec_dot_nvfp4_q8_0(&nv, y0).unwrap();
    let api = weightkit_quant::api::vec_dot(DType::NVFP4, bytemuck::cast_slice(&nv), y0).unwrap();
    assert!(
        (got - want).abs() <= 1e-4 * want.abs().max(1.0),
        "{got} vs {want}"
    );
    assert_eq!(api.to_bits(), got.to_bits());
    let mut a = vec![0f32; x.len()];
    let mut b = vec![0f32; x.len()];
    weightkit_quant::api::dequantize(DType::NVFP4, bytemuck::cast_slice(&nv), &mut a).unwrap();
    iquants::dequantize_row_nvfp4(&nv, &mut b).unwrap();
    assert_eq!(crate::simd::bits(&a), crate::simd::bits(&b));
    weightkit_quant::api::dequantize(DType::MXFP4, bytemuck::cast_slice(&mx), &mut a).unwrap();
    iquants::dequantize_row_mxfp4(&mx, &mut b).unwrap();
    assert_eq!(crate::simd::bits(&a), crate::simd::bits(&b));
}
