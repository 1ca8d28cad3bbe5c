//! Property tests: random metadata and tensors of every ggml type, random
//! alignments, written and read back identical; a second write is
//! byte-identical to the first.

use proptest::prelude::*;
use weightkit_core::dtype::ALL_DTYPES;
use weightkit_core::{Array, DType, Metadata, Shape, TensorInfo, TensorSink, Value};
use weightkit_gguf::{GgufFile, GgufWriter, ReadOptions, WriterOptions, serialize};

use crate::temp_dir;

fn ggml_types() -> Vec<DType> {
    ALL_DTYPES
        .iter()
        .copied()
        .filter(|d| d.ggml_type_id().is_some())
        .collect()
}

fn scalar() -> impl Strategy<Value = Value> {
    prop_oneof![
        any::<u8>().prop_map(Value::U8),
        any::<i8>().prop_map(Value::I8),
        any::<u16>().prop_map(Value::U16),
        any::<i16>().prop_map(Value::I16),
        any::<u32>().prop_map(Value::U32),
        any::<i32>().prop_map(Value::I32),
        any::<u32>().prop_map(|b| Value::F32(f32::from_bits(b))),
        any::<bool>().prop_map(Value::Bool),
        "\\PC{0,10}".prop_map(Value::String),
        prop::collection::vec(any::<u8>(), 0..6).prop_map(|b| match String::from_utf8(b.clone()) {
            Ok(s) => Value::String(s),
            Err(_) => Value::RawString(b),
        }),
        any::<u64>().prop_map(Value::U64),
        any::<i64>().prop_map(Value::I64),
        any::<u64>().prop_map(|b| Value::F64(f64::from_bits(b))),
    ]
}

fn array() -> impl Strategy<Value = Array> {
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..5).prop_map(Array::U8),
        prop::collection::vec(any::<i16>(), 0..5).prop_map(Array::I16),
        prop::collection::vec(any::<u32>().prop_map(f32::from_bits), 0..5).prop_map(Array::F32),
        prop::collection::vec(any::<i64>(), 0..5).prop_map(Array::I64),
        prop::collection::vec(any::<bool>(), 0..5).prop_map(Array::Bool),
        prop::collection::vec("\\PC{0,6}", 0..5).prop_map(Array::String),
        prop::collection::vec(any::<u64>().prop_map(f64::from_bits), 0..5).prop_map(Array::F64),
    ]
}

fn metadata() -> impl Strategy<Value = (Metadata, u32)> {
    (
        prop::collection::vec(
            (
                "[a-z.]{1,10}",
                prop_oneof![scalar(), array().prop_map(Value::Array)],
            ),
            0..8,
        ),
        prop::sample::select(vec![1u32, 8, 16, 32, 64, 256, 4096]),
        any::<bool>(),
    )
        .prop_map(|(kvs, align, set_align)| {
            let mut m = Metadata::new();
            m.insert("general.architecture", "test");
            if set_align {
                m.insert("general.alignment", Value::U32(align));
            }
            for (k, v) in kvs {
                if k != "general.alignment" {
                    m.insert(k, v);
                }
            }
            let align = if set_align { align } else { 32 };
            (m, align)
        })
}

fn tensors() -> impl Strategy<Value = Vec<(TensorInfo, Vec<u8>)>> {
    let one = (
        prop::sample::select(ggml_types()),
        prop::collection::vec(0usize..4, 0..4),
        "[a-z]{1,8}",
    )
        .prop_flat_map(|(dtype, mut dims, name)| {
            let block = dtype.block_elems();
            match dims.last_mut() {
                Some(last) => *last *= block,
                None if block > 1 => dims.push(block),
                None => {}
            }
            let shape = Shape::new(dims);
            let len = shape.byte_len(dtype).unwrap();
            (
                Just(TensorInfo::new(name, dtype, shape)),
                prop::collection::vec(any::<u8>(), len),
            )
        });
    prop::collection::vec(one, 0..6).prop_map(|mut v| {
        let mut seen = std::collections::HashSet::new();
        v.retain(|(t, _)| seen.insert(t.name.clone()));
        v
    })
}

fn same_value(a: &Value, b: &Value) -> bool {
    // Float NaNs compare by bits.
    match (a, b) {
        (Value::F32(x), Value::F32(y)) => x.to_bits() == y.to_bits(),
        (Value::F64(x), Value::F64(y)) => x.to_bits() == y.to_bits(),
        (Value::Array(Array::F32(x)), Value::Array(Array::F32(y))) => x
            .iter()
            .map(|f| f.to_bits())
            .eq(y.iter().map(|f| f.to_bits())),
        (Value::Array(Array::F64(x)), Value::Array(Array::F64(y))) => x
            .iter()
            .map(|f| f.to_bits())
            .eq(y.iter().map(|f| f.to_bits())),
        _ => a == b,
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn write_read_round_trip((meta, align) in metadata(), ts in tensors(), chunk in 1usize..100) {
        let refs: Vec<(TensorInfo, &[u8])> = ts.iter().map(|(t, d)| (t.clone(), &d[..])).collect();
        let bytes = serialize(&meta, &refs, &WriterOptions::default()).unwrap();
        let file = GgufFile::from_vec(bytes.clone(), "mem", &ReadOptions::default()).unwrap();
        prop_assert_eq!(file.header().alignment(), align as usize);
        if !ts.is_empty() {
            prop_assert_eq!(file.header().data_offset() % align as usize, 0);
        }
        let ours: Vec<(&str, &Value)> = file.metadata().iter().collect();
        let theirs: Vec<(&str, &Value)> = meta.iter().collect();
        prop_assert_eq!(ours.len(), theirs.len());
        for ((k1, v1), (k2, v2)) in ours.iter().zip(&theirs) {
            prop_assert_eq!(k1, k2);
            prop_assert!(same_value(v1, v2), "{}: {:?} != {:?}", k1, v1, v2);
        }
        prop_assert_eq!(file.tensors().len(), ts.len());
        for (t, d) in &ts {
            let v = file.tensor(&t.name).unwrap();
            prop_assert_eq!(v.dtype(), t.dtype);
            prop_assert_eq!(v.shape(), &t.shape);
            prop_assert_eq!(v.data(), &d[..]);
        }
        // A second write (from what was read) is byte-identical.
        let again: Vec<(TensorInfo, &[u8])> = file.tensors().iter().map(|t| (t.clone(), file.tensor(&t.name).unwrap().data())).collect();
        prop_assert_eq!(&serialize(file.metadata(), &again, &WriterOptions::default()).unwrap(), &bytes);
        // The streaming writer, fed in arbitrary chunks, writes the same bytes.
        let dir = temp_dir("prop");
        let path = dir.join("out.gguf");
        let mut w = GgufWriter::create(&path, &meta, ts.iter().map(|(t, _)| t.clone()).collect()).unwrap();
        let all: Vec<u8> = ts.iter().flat_map(|(_, d)| d.iter().copied()).collect();
        for piece in all.chunks(chunk) {
            w.write_data(piece).unwrap();
        }
        w.finish().unwrap();
        prop_assert_eq!(std::fs::read(&path).unwrap(), bytes);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

#[test]
fn failed_write_leaves_nothing() {
    let dir = temp_dir("fail");
    let dest = dir.join("m.gguf");
    std::fs::write(&dest, b"old").unwrap();
    {
        let infos = vec![TensorInfo::new("a", DType::Q8_0, [2, 64])];
        let mut w = GgufWriter::create(&dest, &Metadata::new(), infos).unwrap();
        w.write_data(&[0; 10]).unwrap();
        assert!(w.finish().is_err());
    }
    assert_eq!(std::fs::read(&dest).unwrap(), b"old");
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn writer_refuses_what_llama_cpp_rejects() {
    let dir = temp_dir("refuse");
    let dest = dir.join("m.gguf");
    let cases = vec![
        vec![TensorInfo::new("x".repeat(64), DType::F32, [1])],
        vec![TensorInfo::new("x", DType::F32, [1, 1, 1, 1, 1])],
        vec![
            TensorInfo::new("x", DType::BF16, [1]),
            TensorInfo::new("x", DType::F32, [1]),
        ],
        vec![TensorInfo::new("x", DType::Q4_0, [33])],
        vec![TensorInfo::new("x", DType::U32, [1])],
    ];
    for infos in cases {
        assert!(
            GgufWriter::create(&dest, &Metadata::new(), infos.clone()).is_err(),
            "{infos:?}"
        );
    }
    let mut bad = Metadata::new();
    bad.insert("general.alignment", Value::U32(24));
    assert!(GgufWriter::create(&dest, &bad, vec![]).is_err());
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 0);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn fuzz_regressions() {
    // Inputs the fuzz target once failed on (fuzz/regressions/gguf_parse/).
    let dir =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/regressions/gguf_parse");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let bytes = std::fs::read(&path).unwrap();
        n += 1;
        let Ok(file) = GgufFile::from_vec(bytes, &path, &ReadOptions::default()) else {
            continue;
        };
        // What parses must stream back out without a huge allocation, and
        // re-parse to the same metadata. (A file with a 2 GiB alignment is
        // valid and would be rewritten with 2 GiB of padding, as llama.cpp's
        // and gguf-py's writers also pad; the writer streams that padding,
        // but the test does not spend the disk on it.)
        if file.header().alignment() > 1 << 20 {
            continue;
        }
        let dir = temp_dir("fuzzreg");
        let out = dir.join("x.gguf");
        let (r, peak) = crate::alloc_counter::peak_alloc(|| {
            let mut w = GgufWriter::create(&out, file.metadata(), file.tensors().to_vec()).unwrap();
            for t in file.tensors() {
                w.write_tensor(&t.name, file.tensor(&t.name).unwrap().data())
                    .unwrap();
            }
            w.finish()
        });
        r.unwrap();
        assert!(
            peak < 8 << 20,
            "{}: writing allocated {peak} bytes",
            path.display()
        );
        let again = GgufFile::open(&out).unwrap();
        assert_eq!(again.tensors(), file.tensors());
        assert_eq!(again.metadata().len(), file.metadata().len());
        std::fs::remove_dir_all(&dir).unwrap();
    }
    assert!(n >= 2);
}

#[test]
fn names_must_be_utf8() {
    let mut b = b"GGUF".to_vec();
    b.extend_from_slice(&3u32.to_le_bytes());
    b.extend_from_slice(&1u64.to_le_bytes());
    b.extend_from_slice(&0u64.to_le_bytes());
    b.extend_from_slice(&2u64.to_le_bytes());
    b.extend_from_slice(&[0xff, 0xfe]);
    b.extend_from_slice(&1u32.to_le_bytes());
    b.extend_from_slice(&1u64.to_le_bytes());
    b.extend_from_slice(&0u32.to_le_bytes());
    b.extend_from_slice(&0u64.to_le_bytes());
    b.resize(64, 0);
    let err = GgufFile::from_vec(b, "mem", &ReadOptions::default()).unwrap_err();
    assert!(
        matches!(
            err,
            weightkit_gguf::Error::NotUtf8 {
                what: "tensor name",
                offset: 24
            }
        ),
        "{err:?}"
    );
}
