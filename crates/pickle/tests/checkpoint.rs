//! Checkpoints written by torch read back with the right values; our writer
//! reproduces torch's own file byte for byte.

use std::fs;

use weightkit_core::{DType, TensorInfo, TensorSink, TensorSource};
use weightkit_pickle::{
    Error, LoadOptions, StateDictKey, TorchFile, TorchWriter, TorchWriterOptions,
};
use weightkit_safetensors::SafetensorsFile;

fn testdata(rel: &str) -> std::path::PathBuf {
    std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../testdata")
        .join(rel)
}

fn f32_model() -> SafetensorsFile {
    SafetensorsFile::open(testdata("tiny-llama/safetensors-f32/model.safetensors")).unwrap()
}

fn f16_bits(x: f32) -> u16 {
    half::f16::from_f32(x).to_bits()
}

#[test]
fn zip_f16_checkpoint_is_the_f32_model_rounded() {
    let ck = TorchFile::open(testdata("tiny-llama/pytorch-bin-f16/pytorch_model.bin")).unwrap();
    assert_eq!(ck.container(), "zip");
    assert_eq!(ck.archive_prefix(), Some("pytorch_model"));
    let reference = f32_model();
    assert_eq!(ck.tensors().len(), 21);
    for info in ck.tensors() {
        assert_eq!(info.dtype, DType::F16);
        let t = ck.tensor(&info.name).unwrap();
        let v = t.view();
        // Stored entries, contiguous tensors: zero-copy.
        assert!(
            matches!(t, weightkit_core::CowTensor::Borrowed(_)),
            "{}",
            info.name
        );
        let r = reference.tensor(&info.name).unwrap();
        assert_eq!(v.shape(), r.shape());
        let want: Vec<u16> = r
            .to_f32_vec()
            .unwrap()
            .iter()
            .map(|&x| f16_bits(x))
            .collect();
        let got: Vec<u16> = v
            .data()
            .chunks_exact(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]))
            .collect();
        assert_eq!(got, want, "{}", info.name);
    }
}

#[test]
fn legacy_checkpoint_equals_the_f32_model() {
    let ck = TorchFile::open(testdata("tiny-llama/legacy/pytorch_model.bin")).unwrap();
    assert_eq!(ck.container(), "legacy");
    let reference = f32_model();
    assert_eq!(ck.tensors().len(), 21);
    for info in ck.tensors() {
        let got = ck.tensor(&info.name).unwrap();
        let want = reference.tensor(&info.name).unwrap();
        assert_eq!(got.view().shape(), want.shape(), "{}", info.name);
        assert_eq!(got.view().data(), want.data(), "{}", info.name);
    }
}

#[test]
fn views_match_their_contiguous_copies() {
    let expected = SafetensorsFile::open(testdata("pickle/views.expected.safetensors")).unwrap();
    for file in ["pickle/views.pt", "pickle/views.legacy.pt"] {
        let ck = TorchFile::open(testdata(file)).unwrap();
        assert_eq!(ck.tensors().len(), expected.tensors().len(), "{file}");
        for info in expected.tensors() {
            let got = ck
                .tensor(&info.name)
                .unwrap_or_else(|e| panic!("{file} {}: {e}", info.name));
            let want = expected.tensor(&info.name).unwrap();
            assert_eq!(got.view().dtype(), want.dtype(), "{file} {}", info.name);
            assert_eq!(got.view().shape(), want.shape(), "{file} {}", info.name);
            assert_eq!(got.view().data(), want.data(), "{file} {}", info.name);
        }
        // Through the generic source too.
        let i = ck.position("transposed").unwrap();
        assert_eq!(ck.load(i).unwrap().view().shape().dims(), &[6, 4]);
    }
}

#[test]
fn writer_reproduces_torch_save_byte_for_byte() {
    // Read torch's file, write the same tensors with our writer under the
    // same prefix and serialization id: the bytes must be torch's.
    let src_path = testdata("tiny-llama/pytorch-bin-f16/pytorch_model.bin");
    let src = TorchFile::open(&src_path).unwrap();
    let dir = std::env::temp_dir().join(format!("wk-pickle-w-{}", std::process::id()));
    fs::create_dir_all(&dir).unwrap();
    let out = dir.join("pytorch_model.bin");
    let opts = TorchWriterOptions {
        prefix: "pytorch_model".into(),
        serialization_id: Some("0877867841085128026614602489279938524308".into()),
    };
    let infos: Vec<TensorInfo> = src.tensors().to_vec();
    let mut w = TorchWriter::with_options(&out, infos, opts).unwrap();
    for info in src.tensors() {
        let t = src.tensor(&info.name).unwrap();
        w.write_tensor(&info.name, t.view().data()).unwrap();
    }
    w.finish().unwrap();
    let ours = fs::read(&out).unwrap();
    let theirs = fs::read(&src_path).unwrap();
    assert!(
        ours == theirs,
        "our checkpoint differs from torch's ({} vs {} bytes)",
        ours.len(),
        theirs.len()
    );
    fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn written_checkpoints_read_back_entry_by_entry() {
    let dir = std::env::temp_dir().join(format!("wk-pickle-rt-{}", std::process::id()));
    fs::create_dir_all(&dir).unwrap();
    let out = dir.join("m.pt");
    let infos = vec![
        TensorInfo::new("a.weight", DType::BF16, [3, 5]),
        TensorInfo::new("scalar", DType::F64, Vec::<usize>::new()),
        TensorInfo::new("empty", DType::F32, [0, 4]),
        TensorInfo::new("mask", DType::Bool, [7]),
        TensorInfo::new("ids", DType::I64, [2, 2, 2, 2]),
        TensorInfo::new("big", DType::I8, [300, 301]),
    ];
    let data: Vec<Vec<u8>> = infos
        .iter()
        .enumerate()
        .map(|(i, t)| {
            (0..t.byte_len().unwrap())
                .map(|j| (i * 31 + j * 7) as u8 % if t.dtype == DType::Bool { 2 } else { 251 })
                .collect()
        })
        .collect();
    let mut w = TorchWriter::create(&out, infos.clone()).unwrap();
    for (t, d) in infos.iter().zip(&data) {
        w.write_tensor(&t.name, d).unwrap();
    }
    w.finish().unwrap();
    let ck = TorchFile::open(&out).unwrap();
    assert_eq!(ck.archive_prefix(), Some("archive"));
    assert_eq!(ck.tensors(), &infos[..]);
    for (t, d) in infos.iter().zip(&data) {
        assert_eq!(
            ck.tensor(&t.name).unwrap().view().data(),
            &d[..],
            "{}",
            t.name
        );
    }
    // Storage i holds tensor i, contiguous, offset 0.
    for (i, r) in ck.tensor_refs().iter().enumerate() {
        assert_eq!(r.storage_key, i.to_string());
        assert_eq!(r.offset, 0);
        assert!(r.is_contiguous());
    }
    fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn nested_state_dicts_and_key_selection() {
    // The legacy fixture is an OrderedDict at the root: Root and Auto agree.
    let p = testdata("tiny-llama/legacy/pytorch_model.bin");
    let auto = TorchFile::open(&p).unwrap();
    let root = TorchFile::open_with(
        &p,
        &LoadOptions {
            state_dict: StateDictKey::Root,
            ..LoadOptions::default()
        },
    )
    .unwrap();
    assert_eq!(auto.tensors(), root.tensors());
    let missing = TorchFile::open_with(
        &p,
        &LoadOptions {
            state_dict: StateDictKey::Path("model".into()),
            ..LoadOptions::default()
        },
    );
    assert!(matches!(missing, Err(Error::Structure(_))));
}

#[test]
fn every_truncation_of_every_fixture_is_an_error() {
    for rel in ["pickle/views.pt", "pickle/views.legacy.pt"] {
        let full = fs::read(testdata(rel)).unwrap();
        for len in 0..full.len() {
            let r = TorchFile::from_vec(full[..len].to_vec(), rel, &LoadOptions::default());
            assert!(r.is_err(), "{rel} cut to {len} parsed");
        }
    }
    // The larger ones: every length through the pickles, then strided.
    for rel in [
        "tiny-llama/pytorch-bin-f16/pytorch_model.bin",
        "tiny-llama/legacy/pytorch_model.bin",
    ] {
        let full = fs::read(testdata(rel)).unwrap();
        let lens = (0..4096)
            .chain((4096..full.len()).step_by(509))
            .chain(full.len() - 64..full.len());
        for len in lens {
            let r = TorchFile::from_vec(full[..len].to_vec(), rel, &LoadOptions::default());
            assert!(r.is_err(), "{rel} cut to {len} parsed");
        }
    }
}

/// A zip checkpoint around `pkl` with one 4-byte storage `data/0`.
fn zip_with(pkl: &[u8]) -> Vec<u8> {
    let mut w = weightkit_pickle::zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    w.write_entry("archive/data.pkl", pkl).unwrap();
    w.write_entry("archive/data/0", &[0, 0, 128, 63]).unwrap();
    w.finish().unwrap().into_inner()
}

fn replace(hay: &[u8], from: &[u8], to: &[u8]) -> Vec<u8> {
    let i = hay
        .windows(from.len())
        .position(|w| w == from)
        .expect("pattern present");
    [&hay[..i], to, &hay[i + from.len()..]].concat()
}

#[test]
fn hostile_checkpoint_structures_are_typed_errors() {
    let infos = vec![TensorInfo::new("w", DType::F32, [1])];
    let pkl = weightkit_pickle::data_pkl(&infos).unwrap();
    let open = |bytes: Vec<u8>| TorchFile::from_vec(bytes, "crafted", &LoadOptions::default());
    // The honest file loads: 1.0f32.
    let ok = open(zip_with(&pkl)).unwrap();
    assert_eq!(ok.tensor("w").unwrap().view().to_f32_vec().unwrap(), [1.0]);
    // A persistent id pointing outside the archive.
    let key = b"X\x01\x00\x00\x000";
    let evil = replace(&pkl, key, b"X\x0d\x00\x00\x00../etc/passwd");
    assert!(
        matches!(open(zip_with(&evil)), Err(Error::Structure(m)) if m.contains("not a plain name"))
    );
    // A storage that does not exist.
    let missing = replace(&pkl, key, b"X\x01\x00\x00\x007");
    assert!(matches!(
        open(zip_with(&missing)),
        Err(Error::MissingStorage { .. })
    ));
    // A view larger than its storage: size (1,) -> (9,).
    let big = replace(&pkl, b"K\x01\x85", b"K\x09\x85");
    assert!(
        matches!(open(zip_with(&big)), Err(Error::ViewOutOfBounds { .. })),
        "{:?}",
        open(zip_with(&big))
    );
    // A storage class that is not a storage.
    let global = replace(&pkl, b"ctorch\nFloatStorage\n", b"cos\nsystem\n");
    let err = open(zip_with(&global)).unwrap_err();
    assert!(err.to_string().contains("invalid pickle"), "{err}");
    let source = std::error::Error::source(&err).unwrap().to_string();
    assert!(source.contains("os.system"), "{source}");
    // Numel in the persistent id larger than the storage's bytes.
    let numel = replace(&pkl, b"K\x01t", b"K\x09t");
    assert!(matches!(
        open(zip_with(&numel)),
        Err(Error::StorageSize { .. }) | Err(Error::ViewOutOfBounds { .. })
    ));
}

#[test]
fn torch_2_15_files_read_back() {
    // Written by real torch 2.15 (xtask/interop/make_torch_fixtures.py):
    // _rebuild_tensor_v3 dtypes, parameters, nested dicts, a module state_dict.
    for name in ["v3_dtypes", "parameters", "nested", "linear_state_dict"] {
        let ck = TorchFile::open(testdata(&format!("pickle/torch/{name}.pt")))
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let expected = SafetensorsFile::open(testdata(&format!(
            "pickle/torch/{name}.expected.safetensors"
        )))
        .unwrap();
        assert_eq!(ck.tensors().len(), expected.tensors().len(), "{name}");
        for info in expected.tensors() {
            let got = ck
                .tensor(&info.name)
                .unwrap_or_else(|e| panic!("{name} {}: {e}", info.name));
            let want = expected.tensor(&info.name).unwrap();
            assert_eq!(got.view().dtype(), want.dtype(), "{name} {}", info.name);
            assert_eq!(got.view().shape(), want.shape(), "{name} {}", info.name);
            assert_eq!(got.view().data(), want.data(), "{name} {}", info.name);
        }
    }
    // The nested file: Auto picked `state_dict`; a path picks the optimizer's tensor.
    let p = testdata("pickle/torch/nested.pt");
    let opt = TorchFile::open_with(
        &p,
        &LoadOptions {
            state_dict: StateDictKey::Path("optimizer".into()),
            ..LoadOptions::default()
        },
    )
    .unwrap();
    assert_eq!(opt.tensors().len(), 1);
    assert_eq!(opt.tensors()[0].name, "step");
    assert_eq!(opt.skipped(), ["lr"]);
}

#[test]
fn fuzz_regressions() {
    let reg = |rel: &str| {
        std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../../fuzz/regressions")
            .join(rel)
    };
    // An empty tensor whose storage offset lies past its storage: torch
    // accepts it, and so do we (nothing to read).
    let ck = TorchFile::open(reg("torch_checkpoint/empty_tensor_offset_past_storage.pt")).unwrap();
    for i in 0..ck.tensors().len() {
        ck.tensor_at(i).unwrap();
    }
    assert!(ck.tensor("empty").unwrap().view().data().is_empty());
    // A 4 KB file whose stride-0 view would expand to 24 GiB: refused at
    // open, with a typed error, instead of an allocation abort.
    let err = TorchFile::open(reg("torch_checkpoint/expanded_stride0_24gib.pt")).unwrap_err();
    assert!(matches!(err, Error::ViewTooLarge { .. }), "{err:?}");
    // The order-dependent depth pickle parses or fails cleanly.
    let bytes = fs::read(reg("pickle_vm/depth_order_dependent.pkl")).unwrap();
    let policy = weightkit_pickle::vm::Policy::deny_all();
    let _ =
        weightkit_pickle::vm::unpickle(&bytes, &policy, &weightkit_pickle::vm::Limits::default());
}
