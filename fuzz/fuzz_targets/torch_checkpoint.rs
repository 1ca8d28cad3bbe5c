//! Fuzzes the PyTorch checkpoint reader (`TorchFile::from_vec`: zip and
//! legacy formats, the pickle VM with torch's allow-list, tensor
//! interpretation and view checks) with arbitrary bytes.
//!
//! Opening must never panic. Whatever opens must be usable: every tensor
//! loads through `tensor_at` (and `tensor(name)`, identically) with its
//! declared dtype, shape and `byte_len()` bytes; one whose storage is
//! stored uncompressed (or lies in a legacy file) must load, and must load
//! zero-copy when its view is contiguous. What was read must be writable:
//! `data_pkl(infos)` produces a pickle the VM accepts, describing the same
//! tensors as contiguous storages `0..n`; and a checkpoint assembled in
//! memory from that pickle and the loaded bytes (the layout `TorchWriter`
//! writes, without the temporary file) opens to the same tensors and bytes.
#![no_main]

use std::io::Cursor;

use libfuzzer_sys::fuzz_target;
use weightkit_core::{CowTensor, TensorInfo};
use weightkit_pickle::vm::{self, Limits, Policy};
use weightkit_pickle::zip::{Method, ZipArchive, ZipLimits, ZipWriter};
use weightkit_pickle::{LoadOptions, TorchFile, data_pkl, is_writable, torch};

fn load_options() -> LoadOptions {
    let mut zip_limits = ZipLimits::default();
    zip_limits.max_uncompressed = 64 << 20;
    LoadOptions {
        limits: Limits {
            max_memo: 1 << 18,
            max_stack: 1 << 18,
            max_objects: 1 << 20,
            max_string_len: 16 << 20,
            ..Limits::default()
        },
        zip_limits,
        ..LoadOptions::default()
    }
}

fuzz_target!(|data: &[u8]| {
    let opts = load_options();
    let Ok(f) = TorchFile::from_vec(data.to_vec(), "fuzz", &opts) else {
        return;
    };
    let n = f.tensors().len();
    assert_eq!(f.tensor_refs().len(), n, "one ref per tensor");
    let archive = match f.container() {
        "zip" => {
            Some(ZipArchive::parse(data, &opts.zip_limits).expect("TorchFile parsed this zip"))
        }
        "legacy" => None,
        other => panic!("unknown container {other}"),
    };

    // Every tensor loads with its declared description and length.
    let mut loaded: Vec<Vec<u8>> = Vec::with_capacity(n);
    for (i, (info, r)) in f.tensors().iter().zip(f.tensor_refs()).enumerate() {
        assert_eq!(info.dtype, r.dtype, "`{}` dtype vs ref", info.name);
        assert_eq!(
            info.shape.dims(),
            r.size.as_slice(),
            "`{}` shape vs ref",
            info.name
        );
        let len = info
            .byte_len()
            .expect("an opened tensor's byte length fits");
        // Whether the storage is raw bytes of the file (then loading cannot
        // fail: it was bounds-checked at open).
        let raw = match (&archive, f.archive_prefix()) {
            (Some(a), Some(prefix)) => a
                .find(&format!("{prefix}/data/{}", r.storage_key))
                .is_some_and(|e| e.method == Method::Stored),
            _ => true,
        };
        match f.tensor_at(i) {
            Ok(t) => {
                let v = t.view();
                assert_eq!(v.dtype(), info.dtype, "`{}` dtype", info.name);
                assert_eq!(v.shape(), &info.shape, "`{}` shape", info.name);
                assert_eq!(v.data().len(), len, "`{}` length", info.name);
                if raw && r.is_contiguous() {
                    assert!(
                        matches!(t, CowTensor::Borrowed(_)),
                        "contiguous `{}` in a stored storage was copied",
                        info.name
                    );
                }
                let by_name = f
                    .tensor(&info.name)
                    .expect("tensor(name) of a loaded tensor");
                assert!(by_name.view().data() == v.data(), "`{}` by name", info.name);
                loaded.push(v.data().to_vec());
            }
            Err(e) => assert!(!raw, "`{}` in a raw storage fails to load: {e}", info.name),
        }
    }
    assert!(f.tensor_at(n).is_err(), "tensor_at past the end");

    // What was read can be written: data.pkl first.
    let infos = f.tensors();
    if !infos.iter().all(|t| is_writable(t.dtype)) {
        assert!(
            data_pkl(infos).is_err(),
            "data_pkl wrote an unwritable dtype"
        );
        return;
    }
    let pkl = data_pkl(infos).expect("data_pkl of opened tensors");
    let policy = Policy {
        is_allowed: &torch::is_allowed,
        dict_classes: torch::DICT_CLASSES,
    };
    let u = vm::unpickle(&pkl, &policy, &Limits::default()).expect("the VM accepts our data.pkl");
    assert_eq!(u.consumed(), pkl.len(), "data.pkl has trailing bytes");
    let items = u.dict_items(u.root()).expect("data.pkl's root is a dict");
    assert_eq!(items.len(), n, "data.pkl entries");
    for (i, (&(k, v), info)) in items.iter().zip(infos).enumerate() {
        assert_eq!(u.as_str(k), Some(info.name.as_str()), "data.pkl key {i}");
        let r = torch::tensor_ref(&u, v, &info.name)
            .expect("our tensor interprets")
            .expect("our tensor is a tensor");
        assert_eq!(r.dtype, info.dtype, "`{}` dtype in data.pkl", info.name);
        assert_eq!(
            r.size.as_slice(),
            info.shape.dims(),
            "`{}` shape in data.pkl",
            info.name
        );
        assert!(
            r.is_contiguous() && r.offset == 0,
            "`{}` not contiguous in data.pkl",
            info.name
        );
        assert_eq!(r.storage_key, i.to_string(), "`{}` storage key", info.name);
        assert_eq!(r.storage_numel, info.elem_count().expect("fits") as u64);
    }

    // Then a whole checkpoint, in memory, when every tensor loaded.
    if loaded.len() == n {
        round_trip(infos, &loaded, pkl, &opts);
    }
});

/// Assembles the archive `TorchWriter` writes (without its temporary file)
/// and checks that it opens to `infos` and `bytes`.
fn round_trip(infos: &[TensorInfo], bytes: &[Vec<u8>], pkl: Vec<u8>, opts: &LoadOptions) {
    let mut w = ZipWriter::new(Cursor::new(Vec::new()));
    w.write_entry("archive/data.pkl", &pkl)
        .expect("write data.pkl");
    w.write_entry("archive/byteorder", b"little")
        .expect("write byteorder");
    for (i, b) in bytes.iter().enumerate() {
        w.write_entry(&format!("archive/data/{i}"), b)
            .expect("write a storage");
    }
    w.write_entry("archive/version", b"3\n")
        .expect("write version");
    let file = w.finish().expect("finish").into_inner();
    let g = TorchFile::from_vec(file, "fuzz-again", opts).expect("open our own checkpoint");
    assert_eq!(g.tensors(), infos, "tensors after round trip");
    for (i, b) in bytes.iter().enumerate() {
        let t = g.tensor_at(i).expect("load our own tensor");
        assert!(
            matches!(t, CowTensor::Borrowed(_)),
            "our own tensor {i} was copied"
        );
        assert!(
            t.view().data() == b.as_slice(),
            "bytes of `{}` after round trip",
            infos[i].name
        );
    }
}
