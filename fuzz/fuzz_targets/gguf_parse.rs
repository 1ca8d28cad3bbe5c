//! Fuzzes the GGUF reader (`GgufFile::from_vec`, i.e. `Header::parse`) with
//! arbitrary bytes, under llama.cpp's rules and with nested arrays allowed.
//!
//! The parser must never panic; the lenient parse must accept whatever the
//! strict one does, with the same result; and whatever is accepted must be
//! fully usable and survive a round trip: every tensor view is reachable
//! (by position and by name) and has its declared length; `serialize`
//! re-encodes the file (nested arrays allowed only after a lenient parse),
//! the result parses to the same metadata (floats compared bit for bit),
//! tensor infos, ggml-level descriptions and bytes; and re-encoding that is
//! byte-identical.
//!
//! The input itself is not compared with its re-encoding: GGUF readers
//! normalise some encodings (any non-zero bool byte reads as `true`, as in
//! llama.cpp; version 2 files are written as version 3).
#![no_main]

use libfuzzer_sys::fuzz_target;
use weightkit_core::{Array, Metadata, TensorInfo, Value};
use weightkit_gguf::{GgufFile, ReadOptions, WriterOptions, serialize};

fuzz_target!(|data: &[u8]| {
    let strict = check(data, false);
    let lenient = check(data, true);
    if let Some(strict) = strict {
        let lenient = lenient.expect("nested arrays allowed rejects what llama.cpp's rules accept");
        assert!(
            same_metadata(strict.metadata(), lenient.metadata()),
            "strict and lenient parses disagree on metadata"
        );
        assert_eq!(
            strict.tensors(),
            lenient.tensors(),
            "strict vs lenient tensors"
        );
    }
});

/// Parses `data` with nested arrays allowed or not; if it is accepted,
/// checks every tensor and the round trip, and returns the parse.
fn check(data: &[u8], nested: bool) -> Option<GgufFile> {
    let read = ReadOptions {
        allow_nested_arrays: nested,
        ..ReadOptions::default()
    };
    let write = WriterOptions {
        allow_nested_arrays: nested,
        ..WriterOptions::default()
    };
    let f = GgufFile::from_vec(data.to_vec(), "fuzz", &read).ok()?;

    // Every tensor is reachable, by position and by name, with its length.
    let n = f.tensors().len();
    let mut tensors: Vec<(TensorInfo, &[u8])> = Vec::with_capacity(n);
    let mut sum = 0u64;
    for (i, info) in f.tensors().iter().enumerate() {
        let view = f.tensor_at(i).expect("tensor_at(i) of a parsed tensor");
        assert_eq!(view.dtype(), info.dtype, "tensor {i} dtype");
        assert_eq!(view.shape(), &info.shape, "tensor {i} shape");
        assert_eq!(
            Some(view.data().len()),
            info.byte_len().ok(),
            "tensor {i} length"
        );
        let g = f.ggml_info(i).expect("ggml_info(i) of a parsed tensor");
        assert_eq!(g.range.len(), view.data().len(), "tensor {i} range");
        let by_name = f
            .tensor(&info.name)
            .expect("tensor(name) of a parsed tensor");
        assert_eq!(by_name.data(), view.data(), "tensor {i} by name");
        sum = view
            .data()
            .iter()
            .fold(sum, |s, &b| s.wrapping_add(u64::from(b)));
        tensors.push((info.clone(), view.data()));
    }
    assert!(f.tensor_at(n).is_err(), "tensor_at past the end");
    assert!(f.ggml_info(n).is_none(), "ggml_info past the end");
    std::hint::black_box(sum);

    // Round trip: the same metadata, tensors and bytes.
    // A valid file may declare a huge alignment; `serialize` materialises
    // the padding (`GgufWriter` streams it), so skip the in-memory round
    // trip for alignments that would cost more than the input justifies.
    if f.header().alignment() > 1 << 16 {
        return Some(f);
    }
    let bytes = serialize(f.metadata(), &tensors, &write).expect("re-serialise a parsed file");
    let again = GgufFile::from_vec(bytes.clone(), "fuzz-again", &read)
        .expect("parse our own serialisation");
    assert_eq!(again.version(), 3, "we write GGUF v3");
    assert!(
        same_metadata(again.metadata(), f.metadata()),
        "metadata after round trip:\n{:?}\nvs\n{:?}",
        again.metadata(),
        f.metadata()
    );
    assert_eq!(
        again.tensors(),
        f.tensors(),
        "tensor infos after round trip"
    );
    assert_eq!(
        again.header().alignment(),
        f.header().alignment(),
        "alignment"
    );
    let mut again_tensors: Vec<(TensorInfo, &[u8])> = Vec::with_capacity(n);
    for (i, (info, data)) in tensors.iter().enumerate() {
        let v = again.tensor_at(i).expect("tensor_at(i) after round trip");
        assert_eq!(v.data(), *data, "bytes of `{}` after round trip", info.name);
        let (g, h) = (f.ggml_info(i), again.ggml_info(i));
        let (g, h) = (
            g.expect("ggml_info"),
            h.expect("ggml_info after round trip"),
        );
        assert_eq!(g.ne, h.ne, "ne of `{}` after round trip", info.name);
        assert_eq!(g.type_id, h.type_id, "type of `{}`", info.name);
        assert_eq!(g.offset, h.offset, "offset of `{}`", info.name);
        again_tensors.push((again.tensors()[i].clone(), v.data()));
    }

    // Serialising the re-parsed file reproduces it byte for byte.
    let twice =
        serialize(again.metadata(), &again_tensors, &write).expect("re-serialise our output");
    assert!(twice == bytes, "serialisation is not a fixed point");
    Some(f)
}

/// `Metadata` equality with floats compared by bits (so a NaN equals
/// itself, and 0.0 differs from -0.0): same keys, same order, same values.
fn same_metadata(a: &Metadata, b: &Metadata) -> bool {
    a.len() == b.len()
        && a.iter()
            .zip(b.iter())
            .all(|((ka, va), (kb, vb))| ka == kb && same_value(va, vb))
}

fn same_value(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::F32(x), Value::F32(y)) => x.to_bits() == y.to_bits(),
        (Value::F64(x), Value::F64(y)) => x.to_bits() == y.to_bits(),
        (Value::Array(x), Value::Array(y)) => same_array(x, y),
        // Every other variant holds no float: `==` is exact.
        (a, b) => a == b,
    }
}

fn same_array(a: &Array, b: &Array) -> bool {
    fn bits<T: Copy, U: PartialEq>(x: &[T], y: &[T], f: impl Fn(T) -> U) -> bool {
        x.len() == y.len() && x.iter().zip(y).all(|(&p, &q)| f(p) == f(q))
    }
    match (a, b) {
        (Array::F32(x), Array::F32(y)) => bits(x, y, f32::to_bits),
        (Array::F64(x), Array::F64(y)) => bits(x, y, f64::to_bits),
        (Array::Array(x), Array::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(p, q)| same_array(p, q))
        }
        (Array::Strings(x), Array::Strings(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(p, q)| same_value(p, q))
        }
        // Every other variant holds no float: `==` is exact.
        (a, b) => a == b,
    }
}
