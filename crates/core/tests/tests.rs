//! Integration tests for `weightkit-core`: the dtype tables checked against
//! independent references (gguf-py's `GGML_QUANT_SIZES`, ggml's
//! `ggml-common.h`, the `safetensors` crate), property tests of the checked
//! shape arithmetic, the f16/bf16 conversions and `Metadata`, and the
//! constructors' length checks.

use half::{bf16, f16};
use proptest::prelude::*;
use weightkit_core::convert::{cast_bytes, decode_f32, encode_f32};
use weightkit_core::dtype::ALL_DTYPES;
use weightkit_core::{CoreError, DType, Metadata, Packing, Shape, Tensor, TensorView, Value};

// ---------------------------------------------------------------------------
// dtype tables
// ---------------------------------------------------------------------------

/// `GGML_QUANT_SIZES` and the `GGMLQuantizationType` ids of gguf-py 0.19.0
/// (`gguf/constants.py`), transcribed with every formula evaluated:
/// (name, type id, elements per block, bytes per block).
const GGUF_PY_QUANT_SIZES: [(&str, u32, usize, usize); 34] = [
    ("F32", 0, 1, 4),
    ("F16", 1, 1, 2),
    ("Q4_0", 2, 32, 18),
    ("Q4_1", 3, 32, 20),
    ("Q5_0", 6, 32, 22),
    ("Q5_1", 7, 32, 24),
    ("Q8_0", 8, 32, 34),
    // gguf-py: `(32, 4 + 4 + 32)`. See GGML_COMMON_H_CORRECTIONS.
    ("Q8_1", 9, 32, 40),
    ("Q2_K", 10, 256, 84),
    ("Q3_K", 11, 256, 110),
    ("Q4_K", 12, 256, 144),
    ("Q5_K", 13, 256, 176),
    ("Q6_K", 14, 256, 210),
    ("Q8_K", 15, 256, 292),
    ("IQ2_XXS", 16, 256, 66),
    ("IQ2_XS", 17, 256, 74),
    ("IQ3_XXS", 18, 256, 98),
    ("IQ1_S", 19, 256, 50),
    ("IQ4_NL", 20, 32, 18),
    ("IQ3_S", 21, 256, 110),
    ("IQ2_S", 22, 256, 82),
    ("IQ4_XS", 23, 256, 136),
    ("I8", 24, 1, 1),
    ("I16", 25, 1, 2),
    ("I32", 26, 1, 4),
    ("I64", 27, 1, 8),
    ("F64", 28, 1, 8),
    ("IQ1_M", 29, 256, 56),
    ("BF16", 30, 1, 2),
    ("TQ1_0", 34, 256, 54),
    ("TQ2_0", 35, 256, 66),
    ("MXFP4", 39, 32, 17),
    ("NVFP4", 40, 64, 36),
    ("Q1_0", 41, 128, 18),
];

/// Types newer than gguf-py 0.19.0, from ggml itself (`ggml/include/ggml.h`
/// ids, `ggml/src/ggml-common.h` blocks, llama.cpp 0c1e570 as vendored by
/// llama-cpp-python 0.3.36; its own gguf-py lists them too): Q2_0 is
/// `block_q2_0 { ggml_half d; uint8_t qs[QK2_0 / 4]; }` with `QK2_0 = 64`.
const GGML_NEWER_QUANT_SIZES: [(&str, u32, usize, usize); 1] = [("Q2_0", 42, 64, 18)];

/// Where ggml's own headers disagree with gguf-py, ggml wins: it is what
/// writes and reads the blocks.
///
/// Q8_1: `ggml/src/ggml-common.h` declares `block_q8_1` as a union of
/// `{ ggml_half d; ggml_half s; }` / `ggml_half2 ds` followed by
/// `int8_t qs[QK8_1]`, and pins it with
/// `static_assert(sizeof(block_q8_1) == 2*sizeof(ggml_half) + QK8_1)`:
/// 2 + 2 + 32 = 36 bytes. gguf-py's `4 + 4 + 32 = 40` describes the old
/// (pre-GGUF, ggjt v2) layout with f32 `d` and `s`. Q8_1 is only ever a
/// vec_dot partner and never appears in a model file, which is presumably
/// why gguf-py's entry was never corrected.
const GGML_COMMON_H_CORRECTIONS: [(&str, usize); 1] = [("Q8_1", 36)];

#[test]
fn ggml_block_sizes_match_gguf_py() {
    for (name, _) in GGML_COMMON_H_CORRECTIONS {
        let entry = GGUF_PY_QUANT_SIZES.iter().find(|e| e.0 == name);
        assert!(entry.is_some(), "correction for `{name}` not in the table");
    }
    for (name, id, elems, gguf_py_bytes) in GGUF_PY_QUANT_SIZES
        .into_iter()
        .chain(GGML_NEWER_QUANT_SIZES)
    {
        let bytes = GGML_COMMON_H_CORRECTIONS
            .iter()
            .find(|c| c.0 == name)
            .map_or(gguf_py_bytes, |c| {
                // Fires once gguf-py is fixed: then drop the correction.
                assert_ne!(c.1, gguf_py_bytes, "{name}: correction now redundant");
                c.1
            });
        let d = DType::from_ggml_type_id(id).unwrap_or_else(|| panic!("id {id} ({name})"));
        assert_eq!(d.ggml_type_id(), Some(id), "{name}");
        assert_eq!(d.ggml_name(), Some(name), "id {id}");
        assert_eq!(DType::from_ggml_name(name), Some(d), "{name}");
        assert_eq!(
            DType::from_ggml_name(&name.to_ascii_lowercase()),
            Some(d),
            "{name}"
        );
        assert_eq!(d.block_elems(), elems, "{name} block_elems");
        assert_eq!(d.block_bytes(), bytes, "{name} block_bytes");
        assert_eq!(d.is_quantized(), elems > 1, "{name} is_quantized");
        if elems == 1 {
            assert_eq!(d.size_in_bytes(), Some(bytes), "{name} size_in_bytes");
        }
    }
}

#[test]
fn ggml_type_ids_are_exactly_the_table() {
    let ours = ALL_DTYPES
        .iter()
        .filter(|d| d.ggml_type_id().is_some())
        .count();
    assert_eq!(
        ours,
        GGUF_PY_QUANT_SIZES.len() + GGML_NEWER_QUANT_SIZES.len()
    );
    for id in 0..256u32 {
        let known = GGUF_PY_QUANT_SIZES
            .iter()
            .chain(&GGML_NEWER_QUANT_SIZES)
            .any(|e| e.1 == id);
        assert_eq!(DType::from_ggml_type_id(id).is_some(), known, "id {id}");
    }
    for d in ALL_DTYPES {
        assert_eq!(d.ggml_type_id().is_some(), d.ggml_name().is_some(), "{d}");
    }
}

/// Every variant of `safetensors::Dtype` in safetensors 0.8.0, in its
/// declaration order.
const SAFETENSORS_DTYPES: [safetensors::Dtype; 22] = {
    use safetensors::Dtype::*;
    [
        BOOL,
        F4,
        F6_E2M3,
        F6_E3M2,
        U8,
        I8,
        F8_E5M2,
        F8_E4M3,
        F8_E8M0,
        F8_E4M3FNUZ,
        F8_E5M2FNUZ,
        I16,
        U16,
        F16,
        BF16,
        I32,
        U32,
        F32,
        C64,
        F64,
        I64,
        U64,
    ]
};

#[test]
fn safetensors_names_and_sizes_match_the_safetensors_crate() {
    let mut mapped = Vec::new();
    for st in SAFETENSORS_DTYPES {
        // The header spelling is the serde name.
        let json = serde_json::to_string(&st).unwrap();
        let name = json.trim_matches('"');
        assert_eq!(st.to_string(), name);
        let d = DType::from_safetensors_name(name).unwrap_or_else(|| panic!("{name}"));
        assert_eq!(d.safetensors_name(), Some(name));
        assert_eq!(d.name(), name);
        assert_eq!(name.parse::<DType>(), Ok(d));
        assert!(!d.is_quantized(), "{name}");
        // Bits per element of our packing, which must be a whole number.
        let bits = d.block_bytes() * 8;
        assert_eq!(bits % d.block_elems(), 0, "{name}");
        assert_eq!(bits / d.block_elems(), st.bitsize(), "{name} bits");
        if let Packing::Bits { bits } = d.packing() {
            assert_eq!(bits, st.bitsize(), "{name}");
        }
        mapped.push(d);
    }
    // A bijection: nothing of ours has a safetensors name the crate lacks.
    let ours = ALL_DTYPES
        .iter()
        .filter(|d| d.safetensors_name().is_some())
        .count();
    assert_eq!(ours, SAFETENSORS_DTYPES.len());
    // Both enums order the shared types the same way.
    assert!(mapped.windows(2).all(|w| w[0] < w[1]));
    // Names are case-sensitive, as in the safetensors crate.
    assert_eq!(DType::from_safetensors_name("f32"), None);
    assert_eq!(DType::from_safetensors_name("Q4_0"), None);
}

#[test]
fn byte_len_agrees_with_safetensors_tensor_view() {
    // Small shapes (no overflow possible): our byte length is accepted by
    // `safetensors::tensor::TensorView::new` exactly when ours is `Ok`.
    let mut shapes: Vec<Vec<usize>> = vec![vec![]];
    for a in 0..=7 {
        shapes.push(vec![a]);
        for b in 0..=5 {
            shapes.push(vec![a, b]);
            shapes.push(vec![b, 3, a]);
        }
    }
    let buf = vec![0u8; 1024];
    for st in SAFETENSORS_DTYPES {
        let json = serde_json::to_string(&st).unwrap();
        let d = DType::from_safetensors_name(json.trim_matches('"')).unwrap();
        for dims in &shapes {
            let ours = Shape::new(dims.clone()).byte_len(d);
            let st_bits: usize = dims.iter().product::<usize>() * st.bitsize();
            match ours {
                Ok(len) => {
                    let view = safetensors::tensor::TensorView::new(st, dims.clone(), &buf[..len]);
                    assert!(view.is_ok(), "{d} {dims:?}: {len} bytes");
                    assert_eq!(len * 8, st_bits, "{d} {dims:?}");
                }
                Err(CoreError::NotWholeBytes { .. }) => {
                    assert!(
                        safetensors::tensor::TensorView::new(st, dims.clone(), &[]).is_err(),
                        "{d} {dims:?}"
                    );
                    assert_ne!(st_bits % 8, 0, "{d} {dims:?}");
                }
                Err(e) => panic!("{d} {dims:?}: {e}"),
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Shape arithmetic against a u128 model
// ---------------------------------------------------------------------------

/// What `Shape::byte_len` should return, computed in u128.
#[derive(Debug, PartialEq)]
enum Expected {
    Bytes(usize),
    Overflow,
    NotWholeBytes { elems: usize },
    NotWholeBlocks { row: usize, block: usize },
}

/// The element count in u128; `None` only when even u128 overflows (and
/// then it certainly exceeds `usize::MAX`). Any zero dimension makes 0.
fn model_elems(dims: &[usize]) -> Option<u128> {
    if dims.contains(&0) {
        return Some(0);
    }
    dims.iter()
        .try_fold(1u128, |acc, &d| acc.checked_mul(d as u128))
}

fn fits(n: u128) -> Option<usize> {
    usize::try_from(n).ok()
}

fn model_byte_len(dims: &[usize], dtype: DType) -> Expected {
    let Some(elems) = model_elems(dims).filter(|&e| fits(e).is_some()) else {
        return Expected::Overflow;
    };
    let bytes = match dtype.packing() {
        Packing::Element { bytes } => elems * bytes as u128,
        Packing::Bits { bits } => {
            let total = elems * bits as u128;
            if !total.is_multiple_of(8) {
                return Expected::NotWholeBytes {
                    elems: elems as usize,
                };
            }
            total / 8
        }
        Packing::Block {
            elems: block,
            bytes,
        } => {
            let row = dims.last().copied().unwrap_or(1);
            if row % block != 0 {
                return Expected::NotWholeBlocks { row, block };
            }
            elems / block as u128 * bytes as u128
        }
    };
    fits(bytes).map_or(Expected::Overflow, Expected::Bytes)
}

fn actual_byte_len(dims: &[usize], dtype: DType) -> Expected {
    match Shape::new(dims.to_vec()).byte_len(dtype) {
        Ok(n) => Expected::Bytes(n),
        Err(CoreError::Overflow) => Expected::Overflow,
        Err(CoreError::NotWholeBytes { dtype: d, elems }) => {
            assert_eq!(d, dtype);
            Expected::NotWholeBytes { elems }
        }
        Err(CoreError::NotWholeBlocks {
            dtype: d,
            elems,
            block,
        }) => {
            assert_eq!(d, dtype);
            Expected::NotWholeBlocks { row: elems, block }
        }
        Err(e) => panic!("unexpected error {e:?}"),
    }
}

fn check_shape(dims: &[usize], dtype: DType) {
    let shape = Shape::new(dims.to_vec());
    let elems = model_elems(dims).and_then(fits);
    assert_eq!(shape.elem_count().ok(), elems, "elem_count {dims:?}");
    if elems.is_none() {
        assert_eq!(shape.elem_count(), Err(CoreError::Overflow));
    }
    assert_eq!(
        actual_byte_len(dims, dtype),
        model_byte_len(dims, dtype),
        "byte_len {dims:?} {dtype}"
    );
}

/// Dimensions that hit small, block-aligned, power-of-two and near-overflow
/// values often.
fn dim() -> impl Strategy<Value = usize> {
    prop_oneof![
        3 => 0..=4usize,
        2 => (1..=8usize).prop_map(|k| k * 32),
        2 => (1..=4usize).prop_map(|k| k * 256),
        2 => (0..usize::BITS).prop_map(|s| 1usize << s),
        1 => (0..=3usize).prop_map(|k| usize::MAX - k),
        1 => (2..=64usize).prop_map(|k| usize::MAX / k),
        2 => any::<usize>(),
    ]
}

fn dtype() -> impl Strategy<Value = DType> {
    prop::sample::select(ALL_DTYPES.to_vec())
}

#[test]
fn shape_edge_cases() {
    let big = [
        0,
        1,
        2,
        3,
        4,
        32,
        256,
        1 << 61,
        1 << 62,
        1 << 63,
        usize::MAX / 8,
        usize::MAX / 6,
        usize::MAX / 4 + 1,
        usize::MAX - 3,
        usize::MAX,
    ];
    for d in ALL_DTYPES {
        check_shape(&[], d);
        for a in big {
            check_shape(&[a], d);
            for b in big {
                check_shape(&[a, b], d);
                // A zero anywhere makes an empty tensor, even after an
                // intermediate product that would overflow.
                check_shape(&[a, b, 0], d);
                check_shape(&[a, b, 0, 256], d);
            }
        }
    }
}

proptest! {
    #[test]
    fn shape_counts_match_u128_model(dims in prop::collection::vec(dim(), 0..=5), d in dtype()) {
        check_shape(&dims, d);
    }

    #[test]
    fn bytes_for_elems_is_the_one_row_byte_len(n in dim(), d in dtype()) {
        let direct = d.bytes_for_elems(n);
        let shaped = Shape::new([n]).byte_len(d);
        prop_assert_eq!(direct, shaped);
    }
}

// ---------------------------------------------------------------------------
// f32 <-> f16 / bf16 conversion
// ---------------------------------------------------------------------------

/// Round-to-nearest-even from f32 bits to bf16 bits, written as the
/// textbook rule (compare the dropped half-word with one half).
fn bf16_rne(bits: u32) -> u16 {
    let upper = (bits >> 16) as u16;
    let lower = bits & 0xffff;
    if lower > 0x8000 || (lower == 0x8000 && upper & 1 == 1) {
        upper + 1
    } else {
        upper
    }
}

/// Round-to-nearest-even from a non-NaN f32 to f16 bits, from the bit
/// layout alone (independent of `half` and of any F16C instruction).
fn f16_rne(x: f32) -> u16 {
    let bits = x.to_bits();
    let sign = ((bits >> 16) & 0x8000) as u16;
    let exp = ((bits >> 23) & 0xff) as i32;
    let man = u64::from(bits & 0x007f_ffff);
    if exp == 0xff {
        return sign | 0x7c00; // infinity (NaN is excluded by the callers)
    }
    if exp == 0 {
        return sign; // f32 subnormals are far below half of f16's least subnormal
    }
    let e = exp - 127;
    if e > 15 {
        return sign | 0x7c00;
    }
    let sig = man | 0x0080_0000; // 24-bit significand, value = sig * 2^(e-23)
    // f16 keeps 11 significant bits for normals (e >= -14); below that the
    // least significant bit is fixed at 2^-24.
    let shift = if e >= -14 { 13 } else { 13 + (-14 - e) } as u32;
    let round = |sig: u64, shift: u32| -> u64 {
        if shift >= 40 {
            return 0;
        }
        let q = sig >> shift;
        let rem = sig & ((1 << shift) - 1);
        let half = 1 << (shift - 1);
        if rem > half || (rem == half && q & 1 == 1) {
            q + 1
        } else {
            q
        }
    };
    let q = round(sig, shift);
    let magnitude = if e >= -14 {
        // q in [0x400, 0x800]; a carry into 0x800 bumps the exponent
        // (and 0x7c00 is infinity), which the addition does by itself.
        ((e + 15) as u64) * 0x400 + (q - 0x400)
    } else {
        q // subnormal; 0x400 is the least normal
    };
    sign | magnitude as u16
}

/// f32 bit patterns biased toward ties and the interesting exponents.
fn f32_bits() -> impl Strategy<Value = u32> {
    prop_oneof![
        4 => any::<u32>(),
        // exact bf16 ties
        1 => any::<u32>().prop_map(|b| (b & !0xffff) | 0x8000),
        // exact f16 ties (in f16's normal range: exponent 113..=142)
        1 => (any::<u32>(), 103u32..=143).prop_map(|(b, e)| (b & 0x8000_0000) | (e << 23) | (b & 0x007f_e000) | 0x1000),
        // f16 subnormal / overflow neighbourhoods
        2 => (any::<u32>(), 100u32..=145).prop_map(|(b, e)| (b & 0x807f_ffff) | (e << 23)),
    ]
}

fn non_nan_f32s() -> impl Strategy<Value = Vec<f32>> {
    prop::collection::vec(
        f32_bits()
            .prop_map(f32::from_bits)
            .prop_filter("not NaN", |x| !x.is_nan()),
        1..64,
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn f32_bf16_f32_matches_half(xs in non_nan_f32s()) {
        let mut narrow = vec![0u8; xs.len() * 2];
        encode_f32(DType::BF16, &xs, &mut narrow).unwrap();
        let mut wide = vec![0f32; xs.len()];
        decode_f32(DType::BF16, &narrow, &mut wide).unwrap();
        for (i, &x) in xs.iter().enumerate() {
            let got = u16::from_le_bytes([narrow[2 * i], narrow[2 * i + 1]]);
            prop_assert_eq!(got, bf16::from_f32(x).to_bits(), "x = {:e} ({:#010x})", x, x.to_bits());
            prop_assert_eq!(got, bf16_rne(x.to_bits()), "x = {:e}", x);
            prop_assert_eq!(wide[i].to_bits(), bf16::from_bits(got).to_f32().to_bits());
        }
    }

    #[test]
    fn f32_f16_f32_matches_half(xs in non_nan_f32s()) {
        let mut narrow = vec![0u8; xs.len() * 2];
        encode_f32(DType::F16, &xs, &mut narrow).unwrap();
        let mut wide = vec![0f32; xs.len()];
        decode_f32(DType::F16, &narrow, &mut wide).unwrap();
        for (i, &x) in xs.iter().enumerate() {
            let got = u16::from_le_bytes([narrow[2 * i], narrow[2 * i + 1]]);
            prop_assert_eq!(got, f16::from_f32(x).to_bits(), "x = {:e} ({:#010x})", x, x.to_bits());
            prop_assert_eq!(got, f16_rne(x), "x = {:e} ({:#010x})", x, x.to_bits());
            prop_assert_eq!(wide[i].to_bits(), f16::from_bits(got).to_f32().to_bits());
        }
    }

    #[test]
    fn cast_bytes_f32_to_16_bit_equals_encode(bits in prop::collection::vec(any::<u32>(), 0..200)) {
        // Any bit pattern, NaN included: both paths must agree byte for byte.
        let xs: Vec<f32> = bits.iter().copied().map(f32::from_bits).collect();
        let src: Vec<u8> = xs.iter().flat_map(|x| x.to_le_bytes()).collect();
        for to in [DType::BF16, DType::F16] {
            let mut encoded = vec![0u8; xs.len() * 2];
            encode_f32(to, &xs, &mut encoded).unwrap();
            prop_assert_eq!(cast_bytes(DType::F32, &src, to).unwrap(), encoded);
        }
    }
}

#[test]
fn f16_reference_self_check() {
    // Hand-checked values for the test's own reference rounding.
    let cases: [(f32, u16); 13] = [
        (0.0, 0x0000),
        (-0.0, 0x8000),
        (1.0, 0x3c00),
        (-2.0, 0xc000),
        (65504.0, 0x7bff),
        // 65520 is exactly halfway from 65504 to 2^16: ties up to infinity.
        (65520.0, 0x7c00),
        (f32::from_bits(0x477f_efff), 0x7bff), // the f32 just below 65520
        (f32::from_bits(0x3380_0000), 0x0001), // 2^-24, the least subnormal
        (f32::from_bits(0x3300_0000), 0x0000), // 2^-25: a tie, to even (zero)
        (f32::from_bits(0x3300_0001), 0x0001), // just above 2^-25
        (f32::from_bits(0x33c0_0000), 0x0002), // 1.5 * 2^-24: tie, to even
        (f32::from_bits(0x3420_0000), 0x0002), // 2.5 * 2^-24: tie, to even
        (f32::INFINITY, 0x7c00),
    ];
    for (x, want) in cases {
        assert_eq!(f16_rne(x), want, "{x:e}");
    }
}

// ---------------------------------------------------------------------------
// Metadata against a Vec model
// ---------------------------------------------------------------------------

#[derive(Debug, Clone)]
enum MetaOp {
    Insert(u8, i64),
    Get(u8),
    Remove(u8),
}

fn meta_op() -> impl Strategy<Value = MetaOp> {
    prop_oneof![
        3 => (0..6u8, any::<i64>()).prop_map(|(k, v)| MetaOp::Insert(k, v)),
        2 => (0..7u8).prop_map(MetaOp::Get),
        1 => (0..7u8).prop_map(MetaOp::Remove),
    ]
}

proptest! {
    #[test]
    fn metadata_behaves_like_a_vec(ops in prop::collection::vec(meta_op(), 0..64)) {
        let mut meta = Metadata::new();
        let mut model: Vec<(String, i64)> = Vec::new();
        for op in ops {
            match op {
                MetaOp::Insert(k, v) => {
                    let key = format!("key.{k}");
                    let old = match model.iter_mut().find(|(mk, _)| *mk == key) {
                        Some(slot) => Some(std::mem::replace(&mut slot.1, v)),
                        None => {
                            model.push((key.clone(), v));
                            None
                        }
                    };
                    prop_assert_eq!(meta.insert(key, Value::I64(v)), old.map(Value::I64));
                }
                MetaOp::Get(k) => {
                    let key = format!("key.{k}");
                    let want = model.iter().find(|(mk, _)| *mk == key).map(|e| Value::I64(e.1));
                    prop_assert_eq!(meta.get(&key), want.as_ref());
                    prop_assert_eq!(meta.get_str(&key), None);
                }
                MetaOp::Remove(k) => {
                    let key = format!("key.{k}");
                    let want = model
                        .iter()
                        .position(|(mk, _)| *mk == key)
                        .map(|i| Value::I64(model.remove(i).1));
                    prop_assert_eq!(meta.remove(&key), want);
                }
            }
            prop_assert_eq!(meta.len(), model.len());
            prop_assert_eq!(meta.is_empty(), model.is_empty());
            let got: Vec<(String, Value)> =
                meta.iter().map(|(k, v)| (k.to_owned(), v.clone())).collect();
            let want: Vec<(String, Value)> =
                model.iter().map(|(k, v)| (k.clone(), Value::I64(*v))).collect();
            prop_assert_eq!(got, want);
        }
    }
}

// ---------------------------------------------------------------------------
// Tensors
// ---------------------------------------------------------------------------

#[test]
fn tensor_view_rejects_wrong_lengths() {
    let cases: [(DType, &[usize], usize); 9] = [
        (DType::F32, &[2, 3], 24),
        (DType::F32, &[], 4),
        (DType::F32, &[0, 7], 0),
        (DType::BF16, &[5], 10),
        (DType::U8, &[3, 1, 2], 6),
        (DType::F4, &[2, 3], 3),
        (DType::F6_E3M2, &[8], 6),
        (DType::Q4_0, &[2, 64], 2 * 2 * 18),
        (DType::Q4_K, &[3, 256], 3 * 144),
    ];
    let buf = vec![0u8; 4096];
    for (dtype, dims, len) in cases {
        let shape = Shape::new(dims);
        assert_eq!(shape.byte_len(dtype), Ok(len), "{dtype} {shape}");
        let view = TensorView::new(dtype, &shape, &buf[..len]).unwrap();
        assert_eq!(view.data().len(), len);
        assert!(Tensor::from_bytes(dtype, shape.clone(), buf[..len].to_vec()).is_ok());
        let mut wrong = vec![len + 1, len * 2 + 1];
        if len > 0 {
            wrong.extend([len - 1, 0]);
        }
        for found in wrong {
            let want = CoreError::LengthMismatch {
                name: String::new(),
                dtype,
                shape: shape.clone(),
                expected: len,
                found,
            };
            assert_eq!(
                TensorView::new(dtype, &shape, &buf[..found]).unwrap_err(),
                want,
                "{dtype} {shape} with {found} bytes"
            );
            assert_eq!(
                Tensor::from_bytes(dtype, shape.clone(), buf[..found].to_vec()).unwrap_err(),
                want
            );
        }
    }
    // A shape the dtype cannot hold is its own error, whatever the length.
    let bad = Shape::new([2, 33]);
    assert!(matches!(
        TensorView::new(DType::Q4_0, &bad, &buf[..36]),
        Err(CoreError::NotWholeBlocks { .. })
    ));
    let odd = Shape::new([3]);
    assert!(matches!(
        TensorView::new(DType::F4, &odd, &buf[..2]),
        Err(CoreError::NotWholeBytes { .. })
    ));
}

#[test]
fn to_dtype_known_values() {
    // (f32 input, bf16 bits by hand, the f32 that bf16 holds)
    let cases: [(f32, u16, f32); 10] = [
        (1.0, 0x3f80, 1.0),
        (3.0, 0x4040, 3.0),
        (-2.5, 0xc020, -2.5),
        (-0.0, 0x8000, -0.0),
        // 1.00390625 = 1 + 2^-8: exactly halfway between 1 and 1 + 2^-7;
        // ties to even.
        (1.0 + 1.0 / 256.0, 0x3f80, 1.0),
        // 1.01171875 = 1 + 3 * 2^-8: halfway between 1 + 2^-7 (odd
        // mantissa) and 1 + 2^-6 (even); ties to even, upward.
        (1.0 + 3.0 / 256.0, 0x3f82, 1.015_625),
        // 1/3 = 0x3eaaaaab: dropped half-word 0xaaab > 0x8000, rounds up to
        // 0x3eab, which is 0.333984375.
        (1.0 / 3.0, 0x3eab, f32::from_bits(0x3eab_0000)),
        // f32::MAX rounds past bf16's largest finite value to infinity.
        (f32::MAX, 0x7f80, f32::INFINITY),
        (f32::NEG_INFINITY, 0xff80, f32::NEG_INFINITY),
        // 2^-133 (an f32 subnormal) is bf16-exact.
        (
            f32::from_bits(0x0001_0000),
            0x0001,
            f32::from_bits(0x0001_0000),
        ),
    ];
    // The decimal spellings of the hand-computed values above.
    assert_eq!("1.00390625".parse::<f32>(), Ok(cases[4].0));
    assert_eq!("1.01171875".parse::<f32>(), Ok(cases[5].0));
    assert_eq!("0.333984375".parse::<f32>(), Ok(cases[6].2));
    let xs: Vec<f32> = cases.iter().map(|c| c.0).collect();
    let t = Tensor::from_f32([2, 5], &xs).unwrap();
    let b = t.to_dtype(DType::BF16).unwrap();
    assert_eq!(b.dtype(), DType::BF16);
    assert_eq!(b.shape(), &Shape::new([2, 5]));
    let bits: Vec<u16> = b
        .data()
        .chunks_exact(2)
        .map(|c| u16::from_le_bytes([c[0], c[1]]))
        .collect();
    let want_bits: Vec<u16> = cases.iter().map(|c| c.1).collect();
    assert_eq!(bits, want_bits);
    let back = b.to_dtype(DType::F32).unwrap();
    assert_eq!(back.dtype(), DType::F32);
    let got: Vec<u32> = back
        .view()
        .to_f32_vec()
        .unwrap()
        .iter()
        .map(|x| x.to_bits())
        .collect();
    let want: Vec<u32> = cases.iter().map(|c| c.2.to_bits()).collect();
    assert_eq!(got, want);
    // The same values through f64 and back are exact.
    let wide = t
        .to_dtype(DType::F64)
        .unwrap()
        .to_dtype(DType::F32)
        .unwrap();
    assert_eq!(wide.data(), t.data());
    // Block types are not float conversions.
    assert!(matches!(
        t.to_dtype(DType::Q8_0),
        Err(CoreError::UnsupportedConversion { .. })
    ));
}
