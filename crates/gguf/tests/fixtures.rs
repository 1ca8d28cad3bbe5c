//! The gguf-py fixtures read back exactly, and are rewritten byte for byte.

use serde_json::Value as J;
use weightkit_core::{Array, TensorInfo, Value};
use weightkit_gguf::{Error, GgufFile, ReadOptions, WriterOptions, serialize};
use weightkit_safetensors::SafetensorsFile;

use crate::testdata;

fn json(name: &str) -> J {
    serde_json::from_slice(&std::fs::read(testdata(&format!("gguf/{name}"))).unwrap()).unwrap()
}

fn bits(j: &J) -> u64 {
    let s = j["bits"].as_str().unwrap();
    u64::from_str_radix(s.trim_start_matches("0x"), 16).unwrap()
}

fn check_scalar(ty: &str, j: &J, v: &Value, key: &str) {
    match (ty, v) {
        ("UINT8", Value::U8(x)) => assert_eq!(u64::from(*x), j.as_u64().unwrap(), "{key}"),
        ("INT8", Value::I8(x)) => assert_eq!(i64::from(*x), j.as_i64().unwrap(), "{key}"),
        ("UINT16", Value::U16(x)) => assert_eq!(u64::from(*x), j.as_u64().unwrap(), "{key}"),
        ("INT16", Value::I16(x)) => assert_eq!(i64::from(*x), j.as_i64().unwrap(), "{key}"),
        ("UINT32", Value::U32(x)) => assert_eq!(u64::from(*x), j.as_u64().unwrap(), "{key}"),
        ("INT32", Value::I32(x)) => assert_eq!(i64::from(*x), j.as_i64().unwrap(), "{key}"),
        ("UINT64", Value::U64(x)) => assert_eq!(*x, j.as_u64().unwrap(), "{key}"),
        ("INT64", Value::I64(x)) => assert_eq!(*x, j.as_i64().unwrap(), "{key}"),
        ("FLOAT32", Value::F32(x)) => assert_eq!(u64::from(x.to_bits()), bits(j), "{key}"),
        ("FLOAT64", Value::F64(x)) => assert_eq!(x.to_bits(), bits(j), "{key}"),
        ("BOOL", Value::Bool(x)) => assert_eq!(*x, j.as_bool().unwrap(), "{key}"),
        ("STRING", Value::String(x)) => assert_eq!(x, j.as_str().unwrap(), "{key}"),
        _ => panic!("{key}: expected {ty}, got {v:?}"),
    }
}

fn check_array(ty: &str, inner: Option<&str>, j: &J, a: &Array, key: &str) {
    let items = j.as_array().unwrap();
    assert_eq!(a.len(), items.len(), "{key}");
    for (i, item) in items.iter().enumerate() {
        let v = a.get(i).unwrap();
        if ty == "ARRAY" {
            let Value::Array(inner_a) = &v else {
                panic!("{key}[{i}] not an array")
            };
            check_array(inner.unwrap(), None, item, inner_a, key);
        } else {
            check_scalar(ty, item, &v, key);
        }
    }
}

fn check_kvs(file: &GgufFile, expected: &J) {
    let order: Vec<&str> = expected["kv_order"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k.as_str().unwrap())
        .collect();
    let ours: Vec<&str> = file.metadata().iter().map(|(k, _)| k).collect();
    assert_eq!(ours, order);
    for key in order {
        let e = &expected["kv"][key];
        let v = file.get(key).unwrap();
        let ty = e["type"].as_str().unwrap();
        if ty == "ARRAY" {
            let Value::Array(a) = v else {
                panic!("{key}: not an array")
            };
            check_array(
                e["array_type"].as_str().unwrap(),
                e["inner_array_type"].as_str(),
                &e["value"],
                a,
                key,
            );
        } else {
            check_scalar(ty, &e["value"], v, key);
        }
    }
}

fn check_tensors(file: &GgufFile, expected: &J) {
    let tensors = expected["tensors"].as_array().unwrap();
    assert_eq!(file.tensors().len(), tensors.len());
    if let Some(d) = expected["data_section_offset"].as_u64() {
        assert_eq!(file.header().data_offset() as u64, d);
    }
    for (i, (info, t)) in file.tensors().iter().zip(tensors).enumerate() {
        assert_eq!(info.name, t["name"].as_str().unwrap());
        let numpy: Vec<usize> = t["shape_numpy"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d.as_u64().unwrap() as usize)
            .collect();
        assert_eq!(info.shape.dims(), &numpy[..], "{}", info.name);
        assert_eq!(info.dtype.ggml_name(), t["type"].as_str(), "{}", info.name);
        let g = file.ggml_info(i).unwrap();
        let ne: Vec<u64> = t["shape_gguf"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d.as_u64().unwrap())
            .collect();
        assert_eq!(g.ne, ne);
        assert_eq!(u64::from(g.type_id), t["type_id"].as_u64().unwrap());
        assert_eq!(g.offset, t["offset"].as_u64().unwrap());
        assert_eq!(g.range.start as u64, t["absolute_offset"].as_u64().unwrap());
        assert_eq!(g.range.len() as u64, t["n_bytes"].as_u64().unwrap());
    }
}

/// Rewrites `file` with the same metadata and tensors in the same order.
fn rewrite(file: &GgufFile, opts: &WriterOptions) -> Vec<u8> {
    let tensors: Vec<(TensorInfo, &[u8])> = file
        .tensors()
        .iter()
        .map(|t| (t.clone(), file.tensor(&t.name).unwrap().data()))
        .collect();
    serialize(file.metadata(), &tensors, opts).unwrap()
}

#[test]
fn metadata_all_types_reads_back_exactly() {
    let file = GgufFile::open(testdata("gguf/metadata-all-types.gguf")).unwrap();
    let expected = json("metadata-all-types.json");
    assert_eq!(file.version(), 3);
    assert_eq!(file.header().alignment(), 64);
    check_kvs(&file, &expected);
    check_tensors(&file, &expected);
    // Typed accessors, and a wrong type is an error.
    assert_eq!(file.get_u32("general.alignment").unwrap(), 64);
    assert_eq!(file.architecture().unwrap(), "fixture");
    assert_eq!(
        file.get_u64("test.uint64").unwrap(),
        9_223_372_036_854_775_813
    );
    assert!(matches!(
        file.get_u32("test.uint64"),
        Err(Error::WrongType { .. })
    ));
    assert!(matches!(file.get_u32("nope"), Err(Error::MissingKey(_))));
    // Tensor bytes equal the sources gguf-py wrote.
    let src =
        SafetensorsFile::open(testdata("gguf/metadata-all-types.tensors.safetensors")).unwrap();
    for info in file.tensors() {
        let ours = file.tensor(&info.name).unwrap();
        let theirs = src.tensor(&info.name).unwrap();
        assert_eq!(ours.shape(), theirs.shape(), "{}", info.name);
        assert_eq!(ours.data(), theirs.data(), "{}", info.name);
    }
}

#[test]
fn quantized_fixtures_read_back_exactly() {
    for name in ["quantized", "dequant-only"] {
        let file = GgufFile::open(testdata(&format!("gguf/{name}.gguf"))).unwrap();
        check_tensors(&file, &json(&format!("{name}.json")));
    }
    let q = GgufFile::open(testdata("gguf/quantized.gguf")).unwrap();
    assert_eq!(q.get_u32("general.quantization_version").unwrap(), 2);
    let t = q.tensor("q.Q8_0.3d").unwrap();
    assert_eq!(t.shape().dims(), &[2, 5, 64]);
}

#[test]
fn nested_arrays_are_rejected_unless_asked_for() {
    let path = testdata("gguf/metadata-nested-array.gguf");
    let err = GgufFile::open(&path).unwrap_err();
    assert!(
        matches!(err, Error::NestedArray { ref key, .. } if key == "test.nested.int32"),
        "{err:?}"
    );
    let lenient = ReadOptions {
        allow_nested_arrays: true,
        ..ReadOptions::default()
    };
    let file = GgufFile::open_with(&path, &lenient).unwrap();
    check_kvs(&file, &json("metadata-nested-array.json"));
    // And it rewrites byte for byte when the writer is told nesting is fine.
    let opts = WriterOptions {
        allow_nested_arrays: true,
        ..WriterOptions::default()
    };
    assert_eq!(rewrite(&file, &opts), std::fs::read(&path).unwrap());
    assert!(matches!(
        serialize(file.metadata(), &[], &WriterOptions::default()),
        Err(Error::Unwritable(_))
    ));
}

#[test]
fn writer_output_is_byte_identical_to_gguf_py() {
    for name in ["metadata-all-types", "quantized", "dequant-only"] {
        let path = testdata(&format!("gguf/{name}.gguf"));
        let file = GgufFile::open(&path).unwrap();
        let ours = rewrite(&file, &WriterOptions::default());
        let theirs = std::fs::read(&path).unwrap();
        assert!(
            ours == theirs,
            "{name}: our bytes differ from gguf-py's ({} vs {} bytes)",
            ours.len(),
            theirs.len()
        );
    }
}
