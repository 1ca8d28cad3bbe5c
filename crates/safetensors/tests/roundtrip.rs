//! Property tests: random tensor sets through the writer and reader.

use proptest::prelude::*;
use weightkit_core::{DType, Metadata, Shape, TensorInfo, TensorSink, TensorView};
use weightkit_safetensors::{
    Layout, SafeTensors, SafetensorsFile, SafetensorsWriter, serialize, serialize_with_layout,
};

use crate::temp_dir;

fn storable() -> Vec<DType> {
    weightkit_core::dtype::ALL_DTYPES
        .iter()
        .copied()
        .filter(|d| d.safetensors_name().is_some())
        .collect()
}

#[derive(Debug, Clone)]
struct Case {
    tensors: Vec<(String, DType, Shape, Vec<u8>)>,
    metadata: Vec<(String, String)>,
}

fn shape_for(dtype: DType) -> impl Strategy<Value = Shape> {
    // 0-d, empty and small shapes; sub-byte types need whole bytes.
    prop::collection::vec(0usize..5, 0..4).prop_map(move |mut dims| {
        let block = dtype.block_elems();
        if block > 1 {
            if let Some(last) = dims.last_mut() {
                *last *= block;
            } else {
                dims.push(block);
            }
        }
        Shape::new(dims)
    })
}

fn case() -> impl Strategy<Value = Case> {
    let tensor = (prop::sample::select(storable()), "[a-z.]{1,12}")
        .prop_flat_map(|(dtype, name)| (Just(dtype), Just(name), shape_for(dtype)))
        .prop_flat_map(|(dtype, name, shape)| {
            let len = shape.byte_len(dtype).unwrap();
            (
                Just(name),
                Just(dtype),
                Just(shape),
                prop::collection::vec(any::<u8>(), len),
            )
        });
    (
        prop::collection::vec(tensor, 0..8),
        prop::collection::vec(("[a-z_]{1,8}", "\\PC{0,12}"), 0..4),
    )
        .prop_map(|(mut tensors, mut metadata)| {
            // Unique names and keys.
            let mut seen = std::collections::HashSet::new();
            tensors.retain(|t| seen.insert(t.0.clone()));
            let mut seen = std::collections::HashSet::new();
            metadata.retain(|m| seen.insert(m.0.clone()));
            Case { tensors, metadata }
        })
}

fn metadata(c: &Case) -> Metadata {
    c.metadata
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

fn views(c: &Case) -> Vec<(&str, TensorView<'_>)> {
    c.tensors
        .iter()
        .map(|(n, d, s, b)| (n.as_str(), TensorView::new(*d, s, b).unwrap()))
        .collect()
}

fn check_readback(bytes: &[u8], c: &Case) {
    let st = SafeTensors::parse(bytes).unwrap();
    assert_eq!(st.tensors().len(), c.tensors.len());
    for (n, d, s, b) in &c.tensors {
        let v = st.tensor(n).unwrap();
        assert_eq!(v.dtype(), *d);
        assert_eq!(v.shape(), s);
        assert_eq!(v.data(), &b[..]);
    }
    assert_eq!(st.metadata(), &metadata(c));
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    #[test]
    fn serialize_parse_round_trip(c in case()) {
        let meta = metadata(&c);
        let bytes = serialize(&views(&c), &meta).unwrap();
        check_readback(&bytes, &c);
        // Re-serialising what was read gives the same bytes.
        let st = SafeTensors::parse(&bytes).unwrap();
        let again: Vec<(&str, TensorView<'_>)> = st
            .tensors()
            .iter()
            .map(|t| (t.name.as_str(), st.tensor(&t.name).unwrap()))
            .collect();
        prop_assert_eq!(&serialize(&again, st.metadata()).unwrap(), &bytes);
        // The declared layout round-trips too.
        let declared = serialize_with_layout(&views(&c), &meta, Layout::Declared).unwrap();
        check_readback(&declared, &c);
        // The reference library reads our file and finds the same tensors.
        let theirs = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        for (n, _, s, b) in &c.tensors {
            let t = theirs.tensor(n).unwrap();
            prop_assert_eq!(t.shape(), s.dims());
            prop_assert_eq!(t.data(), &b[..]);
        }
        // With at most one metadata entry the reference's header is
        // deterministic: our bytes must equal its `serialize`.
        if c.metadata.len() <= 1 {
            let st_views: Vec<(String, safetensors::tensor::TensorView<'_>)> = c
                .tensors
                .iter()
                .map(|(n, d, s, b)| {
                    let dt: safetensors::Dtype =
                        serde_json::from_value(serde_json::Value::String(d.safetensors_name().unwrap().into())).unwrap();
                    (n.clone(), safetensors::tensor::TensorView::new(dt, s.dims().to_vec(), b).unwrap())
                })
                .collect();
            let info = (!c.metadata.is_empty()).then(|| c.metadata.iter().cloned().collect());
            let reference = safetensors::serialize(st_views, info).unwrap();
            prop_assert_eq!(reference, bytes);
        }
    }

    #[test]
    fn streaming_writer_matches_serialize(c in case(), chunk in 1usize..64) {
        let meta = metadata(&c);
        let dir = temp_dir("prop");
        let path = dir.join("out.safetensors");
        let infos: Vec<TensorInfo> = c.tensors.iter().map(|(n, d, s, _)| TensorInfo::new(n.clone(), *d, s.clone())).collect();
        let mut w = SafetensorsWriter::create(&path, infos, &meta).unwrap();
        // Stream all data in arbitrary chunks across tensor boundaries.
        let all: Vec<u8> = c.tensors.iter().flat_map(|t| t.3.iter().copied()).collect();
        for piece in all.chunks(chunk) {
            w.write_data(piece).unwrap();
        }
        w.finish().unwrap();
        let written = std::fs::read(&path).unwrap();
        prop_assert_eq!(&written, &serialize(&views(&c), &meta).unwrap());
        let f = SafetensorsFile::open(&path).unwrap();
        prop_assert_eq!(f.tensors().len(), c.tensors.len());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

#[test]
fn fuzz_regressions_round_trip() {
    // Inputs the fuzz target once failed on (fuzz/regressions/): each must
    // parse or fail cleanly, and what parses must re-serialise and re-parse
    // to the same tensors and metadata.
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz/regressions/safetensors_parse");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let bytes = std::fs::read(entry.unwrap().path()).unwrap();
        n += 1;
        let Ok(st) = SafeTensors::parse(&bytes) else {
            continue;
        };
        let views: Vec<(&str, TensorView<'_>)> = st
            .tensors()
            .iter()
            .map(|t| (t.name.as_str(), st.tensor(&t.name).unwrap()))
            .collect();
        let again = serialize(&views, st.metadata()).unwrap();
        let st2 = SafeTensors::parse(&again).unwrap();
        assert_eq!(st2.metadata(), st.metadata());
        assert_eq!(st2.tensors().len(), st.tensors().len());
    }
    assert!(n >= 1);
}
