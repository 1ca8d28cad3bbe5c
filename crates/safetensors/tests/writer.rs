//! Writer behaviour: atomicity on failure, order and length checks, shards.

use std::fs;

use weightkit_core::{CoreError, DType, Metadata, TensorInfo, TensorSink, Value};
use weightkit_safetensors::sharded::plan_shards;
use weightkit_safetensors::{
    Error, Layout, SafetensorsFile, SafetensorsWriter, ShardedSafetensors, ShardedWriter,
    WriterOptions,
};

use crate::temp_dir;

fn infos() -> Vec<TensorInfo> {
    vec![
        TensorInfo::new("z.first", DType::U8, [4]),
        TensorInfo::new("a.second", DType::F32, [1024, 256]),
        TensorInfo::new("m.third", DType::BF16, [3]),
    ]
}

/// Only the destination (if pre-existing) is left in `dir`: no temp files.
fn entries(dir: &std::path::Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// A data source that fails half way, like a reader hitting a bad tensor.
fn failing_source(w: &mut impl TensorSink<Error = Error>) -> Result<(), Error> {
    w.write_tensor("z.first", &[1, 2, 3, 4])?;
    w.write_data(&vec![7u8; 1024 * 256 * 2])?; // half of a.second
    Err(Error::InvalidArgument("source failed half way".into()))
}

#[test]
fn failed_write_leaves_no_file_and_keeps_the_old_one() {
    let dir = temp_dir("fail");
    let dest = dir.join("model.safetensors");
    // No file before: none after.
    {
        let mut w = SafetensorsWriter::create(&dest, infos(), &Metadata::new()).unwrap();
        assert!(failing_source(&mut w).is_err());
    }
    assert!(entries(&dir).is_empty(), "{:?}", entries(&dir));
    // An existing file is untouched, byte for byte.
    fs::write(&dest, b"precious").unwrap();
    {
        let mut w = SafetensorsWriter::create(&dest, infos(), &Metadata::new()).unwrap();
        assert!(failing_source(&mut w).is_err());
    }
    assert_eq!(fs::read(&dest).unwrap(), b"precious");
    assert_eq!(entries(&dir), ["model.safetensors"]);
    // finish() with data missing fails and also leaves nothing behind.
    let mut w = SafetensorsWriter::create(&dest, infos(), &Metadata::new()).unwrap();
    w.write_tensor("z.first", &[1, 2, 3, 4]).unwrap();
    let err = w.finish().unwrap_err();
    assert!(
        matches!(err, Error::Core(CoreError::Incomplete { ref next, .. }) if next == "a.second"),
        "{err:?}"
    );
    assert_eq!(fs::read(&dest).unwrap(), b"precious");
    assert_eq!(entries(&dir), ["model.safetensors"]);
    fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn failed_sharded_write_leaves_nothing() {
    let dir = temp_dir("shardfail");
    {
        let mut w = ShardedWriter::create(&dir, "model", infos(), &Metadata::new(), 1000).unwrap();
        assert_eq!(w.shard_count(), 2);
        assert!(failing_source(&mut w).is_err());
    }
    assert!(entries(&dir).is_empty(), "{:?}", entries(&dir));
    fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn order_and_length_are_enforced() {
    let dir = temp_dir("order");
    let dest = dir.join("x.safetensors");
    let mut w = SafetensorsWriter::create(&dest, infos(), &Metadata::new()).unwrap();
    let e = w.write_tensor("a.second", &[0; 4]).unwrap_err();
    assert!(
        matches!(e, Error::Core(CoreError::UnexpectedTensor { .. })),
        "{e:?}"
    );
    let e = w.write_tensor("z.first", &[0; 5]).unwrap_err();
    assert!(
        matches!(
            e,
            Error::Core(CoreError::LengthMismatch {
                expected: 4,
                found: 5,
                ..
            })
        ),
        "{e:?}"
    );
    w.write_tensor("z.first", &[0; 4]).unwrap();
    w.write_data(&vec![0; 1024 * 256 * 4 + 6]).unwrap();
    let e = w.write_data(&[0]).unwrap_err();
    assert!(
        matches!(e, Error::Core(CoreError::TooMuchData { extra: 1 })),
        "{e:?}"
    );
    w.finish().unwrap();
    let f = SafetensorsFile::open(&dest).unwrap();
    // Safetensors layout: F32 first, then BF16, then U8.
    let names: Vec<&str> = f.tensors().iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, ["a.second", "m.third", "z.first"]);
    // Declared layout keeps the order.
    let opts = WriterOptions {
        layout: Layout::Declared,
        ..WriterOptions::default()
    };
    let mut w = SafetensorsWriter::with_options(&dest, infos(), &Metadata::new(), opts).unwrap();
    w.write_data(&vec![1; 4 + 1024 * 256 * 4 + 6]).unwrap();
    w.finish().unwrap();
    let f = SafetensorsFile::open(&dest).unwrap();
    let names: Vec<&str> = f.tensors().iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, ["z.first", "a.second", "m.third"]);
    fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn writer_rejects_what_safetensors_cannot_hold() {
    let dir = temp_dir("reject");
    let dest = dir.join("x.safetensors");
    let q = vec![TensorInfo::new("q", DType::Q4_0, [32])];
    assert!(matches!(
        SafetensorsWriter::create(&dest, q, &Metadata::new()),
        Err(Error::UnsupportedDType { .. })
    ));
    let mut m = Metadata::new();
    m.insert("n", Value::U32(3));
    assert!(matches!(
        SafetensorsWriter::create(&dest, infos(), &m),
        Err(Error::NonStringMetadata { .. })
    ));
    let dup = vec![
        TensorInfo::new("a", DType::U8, [1]),
        TensorInfo::new("a", DType::U8, [1]),
    ];
    assert!(matches!(
        SafetensorsWriter::create(&dest, dup, &Metadata::new()),
        Err(Error::DuplicateName { .. })
    ));
    assert!(entries(&dir).is_empty());
    fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn shard_plan_follows_huggingface_hub() {
    // Big tensors get their own shard, appended before the one being filled.
    let (of, n) = plan_shards(&[10, 100, 20, 50, 5], 60);
    assert_eq!(n, 3);
    assert_eq!(of, [1, 0, 1, 2, 2]);
    let (of, n) = plan_shards(&[], 60);
    assert_eq!((of.len(), n), (0, 0));
}

#[test]
fn sharded_round_trip_and_single_shard_layout() {
    let dir = temp_dir("shards");
    let tensors: Vec<TensorInfo> = (0..10)
        .map(|i| TensorInfo::new(format!("layer.{i}.weight"), DType::F16, [100 + i]))
        .collect();
    let meta: Metadata = [("format", "pt")].into_iter().collect();
    let mut w = ShardedWriter::create(&dir, "model", tensors.clone(), &meta, 450).unwrap();
    let data: Vec<Vec<u8>> = tensors
        .iter()
        .enumerate()
        .map(|(i, t)| vec![i as u8; t.byte_len().unwrap()])
        .collect();
    for (t, d) in tensors.iter().zip(&data) {
        w.write_tensor(&t.name, d).unwrap();
    }
    let files = w.finish().unwrap();
    assert!(files.len() > 2);
    let s = ShardedSafetensors::open(&dir).unwrap();
    assert_eq!(s.tensors().len(), 10);
    for (t, d) in tensors.iter().zip(&data) {
        assert_eq!(s.tensor(&t.name).unwrap().data(), &d[..]);
    }
    let total: usize = data.iter().map(Vec::len).sum();
    assert_eq!(s.declared_total_size(), Some(total as u64));
    let idx: serde_json::Value =
        serde_json::from_slice(&fs::read(dir.join("model.safetensors.index.json")).unwrap())
            .unwrap();
    assert_eq!(idx["metadata"]["total_parameters"], 1045);
    fs::remove_dir_all(&dir).unwrap();

    // Everything fits in one shard: plain model.safetensors, no index.
    let dir = temp_dir("oneshard");
    let mut w = ShardedWriter::create(&dir, "model", tensors.clone(), &meta, 1 << 30).unwrap();
    for (t, d) in tensors.iter().zip(&data) {
        w.write_tensor(&t.name, d).unwrap();
    }
    w.finish().unwrap();
    assert_eq!(entries(&dir), ["model.safetensors"]);
    fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn hostile_index_files_are_rejected() {
    let dir = temp_dir("badindex");
    let write = |text: &str| fs::write(dir.join("model.safetensors.index.json"), text).unwrap();
    write(r#"{"weight_map": {"a": "../../etc/passwd"}}"#);
    assert!(matches!(
        ShardedSafetensors::open(&dir),
        Err(Error::InvalidIndex { .. })
    ));
    write(r#"{"weight_map": {"a": "/abs.safetensors"}}"#);
    assert!(matches!(
        ShardedSafetensors::open(&dir),
        Err(Error::InvalidIndex { .. })
    ));
    write("not json");
    assert!(matches!(
        ShardedSafetensors::open(&dir),
        Err(Error::InvalidIndex { .. })
    ));
    write(r#"{"weight_map": {"a": "missing.safetensors"}}"#);
    assert!(matches!(
        ShardedSafetensors::open(&dir),
        Err(Error::Shard { .. })
    ));
    // A tensor the map puts in a shard that lacks it.
    let one = vec![TensorInfo::new("x", DType::U8, [1])];
    let mut w =
        SafetensorsWriter::create(dir.join("s.safetensors"), one, &Metadata::new()).unwrap();
    w.write_tensor("x", &[1]).unwrap();
    w.finish().unwrap();
    write(r#"{"weight_map": {"y": "s.safetensors"}}"#);
    assert!(matches!(
        ShardedSafetensors::open(&dir),
        Err(Error::InvalidIndex { .. })
    ));
    write(r#"{"weight_map": {"x": "s.safetensors"}}"#);
    assert_eq!(ShardedSafetensors::open(&dir).unwrap().tensors().len(), 1);
    fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn reads_files_written_by_the_reference_library() {
    let dir = temp_dir("interop");
    let a: Vec<u8> = (0..24).collect();
    let b: Vec<u8> = vec![1, 0, 1];
    let views = vec![
        (
            "w",
            safetensors::tensor::TensorView::new(safetensors::Dtype::F16, vec![3, 4], &a).unwrap(),
        ),
        (
            "mask",
            safetensors::tensor::TensorView::new(safetensors::Dtype::BOOL, vec![3], &b).unwrap(),
        ),
    ];
    let meta = std::collections::HashMap::from([("format".to_string(), "pt".to_string())]);
    let path = dir.join("ref.safetensors");
    safetensors::serialize_to_file(views, Some(meta), &path).unwrap();
    let f = SafetensorsFile::open(&path).unwrap();
    assert_eq!(f.tensor("w").unwrap().data(), &a[..]);
    assert_eq!(f.tensor("w").unwrap().dtype(), DType::F16);
    assert_eq!(f.tensor("mask").unwrap().dtype(), DType::Bool);
    assert_eq!(f.metadata().get_str("format"), Some("pt"));
    fs::remove_dir_all(&dir).unwrap();
}
