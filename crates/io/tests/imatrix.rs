//! Importance matrices (`weightkit_io::imatrix`): the llama.cpp-format
//! fixtures of testdata/imatrix (made by make_imatrix.py, which follows
//! llama.cpp's writers byte for byte), hostile files, truncation.

use std::path::PathBuf;

use proptest::prelude::*;
use serde_json::Value as Json;
use weightkit_core::{DType, Metadata, TensorInfo};
use weightkit_gguf::{WriterOptions, serialize};
use weightkit_io::imatrix::{ImatrixError, ImatrixFormat, ImportanceMatrix};

fn testdata(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../testdata/imatrix")
        .join(rel)
}

fn expected() -> Json {
    let text = std::fs::read_to_string(testdata("expected.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn bits_to_f32(v: &Json) -> Vec<f32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|b| f32::from_bits(u32::try_from(b.as_u64().unwrap()).unwrap()))
        .collect()
}

/// The fixture of `format` ("gguf" or "legacy") matches what llama-quantize
/// computes from it (expected.json), bit for bit.
fn check_fixture(format: &str) -> ImportanceMatrix {
    let all = expected();
    let exp = &all[format];
    let im = ImportanceMatrix::load(testdata(exp["file"].as_str().unwrap())).unwrap();
    let entries = exp["entries"].as_object().unwrap();
    assert_eq!(im.len(), entries.len());
    assert!(!im.is_empty());
    let names: Vec<&str> = im.names().collect();
    let mut want: Vec<&str> = entries.keys().map(String::as_str).collect();
    want.sort_unstable();
    assert_eq!(names, want);
    for (name, e) in entries {
        let got = im.get(name).unwrap();
        let want = bits_to_f32(&e["bits"]);
        assert_eq!(got.len(), want.len(), "{name}");
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            assert_eq!(g.to_bits(), w.to_bits(), "{format} {name}[{i}]: {g} vs {w}");
        }
        let n_mat = e.get("n_mat").and_then(Json::as_u64).map(|n| n as usize);
        assert_eq!(im.num_matrices(name), n_mat, "{name}");
    }
    let datasets: Vec<String> = exp["datasets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d.as_str().unwrap().to_owned())
        .collect();
    assert_eq!(im.datasets(), datasets.as_slice());
    assert_eq!(im.chunk_count(), exp["chunk_count"].as_i64().unwrap());
    assert_eq!(
        im.chunk_size(),
        exp["chunk_size"]
            .as_u64()
            .map(|n| u32::try_from(n).unwrap())
    );
    im
}

#[test]
fn gguf_fixture_gives_llama_quantizes_vectors() {
    let im = check_fixture("gguf");
    assert_eq!(im.format(), ImatrixFormat::Gguf);
    assert_eq!(im.chunk_size(), Some(512));
    assert_eq!(im.chunk_count(), 4);
    // q, k and v share their input, hence their importance.
    assert_eq!(im.get("blk.0.attn_q.weight"), im.get("blk.0.attn_v.weight"));
    // `.in_sum` tensors are not entries.
    assert!(im.names().all(|n| !n.ends_with(".in_sum")));
    assert_eq!(im.num_matrices("blk.1.ffn_up_exps.weight"), Some(4));
    assert_eq!(im.num_matrices("blk.0.attn_q.weight"), Some(1));
}

#[test]
fn legacy_fixture_gives_llama_quantizes_vectors() {
    let im = check_fixture("legacy");
    assert_eq!(im.format(), ImatrixFormat::Legacy);
    assert_eq!(im.chunk_size(), None);
    assert_eq!(im.num_matrices("blk.0.attn_q.weight"), None);
    // Both formats describe the same statistics: the vectors agree to
    // float rounding (the legacy one went through `* ncall / ncall`).
    let g = ImportanceMatrix::load(testdata("imatrix.gguf")).unwrap();
    for name in g.names() {
        let (a, b) = (g.get(name).unwrap(), im.get(name).unwrap());
        assert_eq!(a.len(), b.len());
        for (x, y) in a.iter().zip(b) {
            assert!((x - y).abs() <= 1e-5 * x.abs().max(1.0), "{name}: {x} {y}");
        }
    }
}

#[test]
fn experts_and_tensor_lookup() {
    for file in ["imatrix.gguf", "imatrix.dat"] {
        let im = ImportanceMatrix::load(testdata(file)).unwrap();
        let exps = "blk.1.ffn_up_exps.weight";
        // [n_expert, n_ff, n_embd]: ne[0] * ne[2] = 256 * 4.
        let v = im.for_tensor(exps, &[4, 512, 256]).unwrap().unwrap();
        assert_eq!(v.len(), 1024);
        // Expert 1 never got a token: llama-quantize uses ones.
        let e1 = im.get_matrix(exps, 256, 1).unwrap();
        assert!(e1.iter().all(|&x| x == 1.0), "{file}");
        assert_eq!(im.get_matrix(exps, 256, 0).unwrap(), &v[..256]);
        assert_eq!(im.get_matrix(exps, 256, 4), None);
        assert_eq!(im.get_matrix(exps, usize::MAX, 2), None);
        // 2-D: ne[0] only.
        let q = im.for_tensor("blk.0.attn_q.weight", &[4096, 256]).unwrap();
        assert_eq!(q.map(<[f32]>::len), Some(256));
        // Missing: None; wrong size: an error.
        assert_eq!(
            im.for_tensor("blk.5.attn_q.weight", &[256, 256]).unwrap(),
            None
        );
        assert!(matches!(
            im.for_tensor("blk.0.attn_q.weight", &[256, 128]),
            Err(ImatrixError::SizeMismatch {
                expected: 128,
                found: 256,
                ..
            })
        ));
    }
}

#[test]
fn token_embd_size_mismatch_is_ignored() {
    let dat = legacy_file(
        &[
            ("token_embd.weight", 1, &[1.0; 8]),
            ("x.weight", 1, &[2.0; 8]),
        ],
        None,
    );
    let im = ImportanceMatrix::from_bytes(&dat).unwrap();
    assert_eq!(
        im.for_tensor("token_embd.weight", &[100, 16]).unwrap(),
        None
    );
    assert!(im.for_tensor("x.weight", &[100, 16]).is_err());
}

#[test]
fn imatrix_reaches_the_quantizer_unchanged() {
    let all = expected();
    let rows: Vec<f32> = (0..8 * 256)
        .map(|i| ((i * 7919 % 1000) as f32 / 250.0 - 2.0) * (1.0 + (i % 17) as f32))
        .collect();
    for (format, file) in [("gguf", "imatrix.gguf"), ("legacy", "imatrix.dat")] {
        let im = ImportanceMatrix::load(testdata(file)).unwrap();
        for name in [
            "blk.0.attn_q.weight",
            "output.weight",
            "blk.10.attn_output.weight",
        ] {
            let direct = bits_to_f32(&all[format]["entries"][name]["bits"]);
            let loaded = im.for_tensor(name, &[8, 256]).unwrap().unwrap();
            for dtype in [DType::Q4_K, DType::Q6_K, DType::IQ4_XS] {
                let a = weightkit_quant::quantize(dtype, &rows, 256, Some(loaded)).unwrap();
                let b = weightkit_quant::quantize(dtype, &rows, 256, Some(&direct)).unwrap();
                assert_eq!(a, b, "{format} {name} {dtype}");
                let plain = weightkit_quant::quantize(dtype, &rows, 256, None).unwrap();
                assert_ne!(
                    a, plain,
                    "{format} {name} {dtype}: the weights changed nothing"
                );
            }
        }
    }
}

#[test]
fn retain_filters_entries() {
    let mut im = ImportanceMatrix::load(testdata("imatrix.gguf")).unwrap();
    im.retain(|n| !n.contains("attn"));
    assert_eq!(
        im.names().collect::<Vec<_>>(),
        [
            "blk.0.ffn_down.weight",
            "blk.1.ffn_up_exps.weight",
            "output.weight"
        ]
    );
    im.retain(|_| false);
    assert!(im.is_empty());
}

// ------------------------------------------------------------ legacy files

/// A legacy file: entries (name, ncall, values), then optionally the trailer
/// (last call, dataset).
fn legacy_file(entries: &[(&str, i32, &[f32])], trailer: Option<(i32, &str)>) -> Vec<u8> {
    let mut out = (entries.len() as i32).to_le_bytes().to_vec();
    for (name, ncall, values) in entries {
        out.extend((name.len() as i32).to_le_bytes());
        out.extend(name.as_bytes());
        out.extend(ncall.to_le_bytes());
        out.extend((values.len() as i32).to_le_bytes());
        for v in *values {
            out.extend(v.to_le_bytes());
        }
    }
    if let Some((last, dataset)) = trailer {
        out.extend(last.to_le_bytes());
        out.extend((dataset.len() as i32).to_le_bytes());
        out.extend(dataset.as_bytes());
    }
    out
}

fn le(v: i32) -> [u8; 4] {
    v.to_le_bytes()
}

#[test]
fn legacy_semantics() {
    // ncall > 0 divides; ncall <= 0 keeps the values.
    let f = legacy_file(
        &[
            ("a.weight", 4, &[2.0, 6.0]),
            ("b.weight", 0, &[3.0]),
            ("c.weight", -2, &[5.0]),
        ],
        Some((7, "data.txt")),
    );
    let im = ImportanceMatrix::from_bytes(&f).unwrap();
    assert_eq!(im.get("a.weight"), Some(&[0.5, 1.5][..]));
    assert_eq!(im.get("b.weight"), Some(&[3.0][..]));
    assert_eq!(im.get("c.weight"), Some(&[5.0][..]));
    assert_eq!(im.chunk_count(), 7);
    assert_eq!(im.datasets(), ["data.txt"]);
    // Old files end after the entries.
    let old = legacy_file(&[("a.weight", 1, &[2.0])], None);
    let im = ImportanceMatrix::from_bytes(&old).unwrap();
    assert_eq!((im.chunk_count(), im.datasets().len()), (0, 0));
    // A repeated name: the last one wins, as in llama.cpp's map.
    let dup = legacy_file(
        &[("a.weight", 1, &[1.0]), ("a.weight", 1, &[9.0, 9.0])],
        None,
    );
    let im = ImportanceMatrix::from_bytes(&dup).unwrap();
    assert_eq!((im.len(), im.get("a.weight")), (1, Some(&[9.0, 9.0][..])));
    // Names stop at the first NUL (std::string from a char pointer).
    let nul = legacy_file(&[("a.weight\0junk", 1, &[1.0])], None);
    let im = ImportanceMatrix::from_bytes(&nul).unwrap();
    assert_eq!(im.names().collect::<Vec<_>>(), ["a.weight"]);
    // The fixture without its trailer (4 + 4 + "wiki.train.raw").
    let full = std::fs::read(testdata("imatrix.dat")).unwrap();
    let cut = &full[..full.len() - 22];
    let a = ImportanceMatrix::from_bytes(cut).unwrap();
    let b = ImportanceMatrix::from_bytes(&full).unwrap();
    assert_eq!(a.names().collect::<Vec<_>>(), b.names().collect::<Vec<_>>());
    assert!(a.names().all(|n| a.get(n) == b.get(n)));
    assert_eq!(a.chunk_count(), 0);
}

#[test]
fn legacy_hostile_files() {
    type Check = fn(&ImatrixError) -> bool;
    let cases: Vec<(&str, Vec<u8>, Check)> = vec![
        ("empty", vec![], |e| {
            matches!(e, ImatrixError::Truncated { .. })
        }),
        ("no entries", le(0).to_vec(), |e| {
            matches!(e, ImatrixError::NoEntries)
        }),
        ("negative entries", le(-5).to_vec(), |e| {
            matches!(e, ImatrixError::NoEntries)
        }),
        (
            "huge entry count, nothing else",
            le(i32::MAX).to_vec(),
            |e| {
                matches!(
                    e,
                    ImatrixError::Truncated {
                        what: "name length",
                        ..
                    }
                )
            },
        ),
        ("huge name", [le(1), le(i32::MAX)].concat(), |e| {
            matches!(
                e,
                ImatrixError::Truncated {
                    what: "entry name",
                    needed: 2147483647,
                    ..
                }
            )
        }),
        ("negative name length", [le(1), le(-1)].concat(), |e| {
            matches!(
                e,
                ImatrixError::NegativeLength {
                    what: "name length",
                    offset: 4,
                    value: -1
                }
            )
        }),
        (
            "huge value count",
            [&le(1)[..], &le(1), b"a", &le(1), &le(i32::MAX)].concat(),
            |e| {
                matches!(
                    e,
                    ImatrixError::Truncated {
                        what: "values",
                        needed: 8589934588,
                        ..
                    }
                )
            },
        ),
        (
            "zero values",
            [&le(1)[..], &le(1), b"a", &le(1), &le(0)].concat(),
            |e| {
                matches!(
                    e,
                    ImatrixError::NoValues {
                        nval: 0,
                        offset: 13,
                        ..
                    }
                )
            },
        ),
        (
            "negative values",
            [&le(1)[..], &le(1), b"a", &le(1), &le(-3)].concat(),
            |e| matches!(e, ImatrixError::NoValues { nval: -3, .. }),
        ),
        (
            "not UTF-8",
            [
                &le(1)[..],
                &le(2),
                b"\xff\xfe",
                &le(1),
                &le(1),
                &1f32.to_le_bytes(),
            ]
            .concat(),
            |e| matches!(e, ImatrixError::NotUtf8 { offset: 8 }),
        ),
        (
            "NaN",
            legacy_file(&[("a.weight", 1, &[1.0, f32::NAN])], None),
            |e| matches!(e, ImatrixError::NonFinite { index: 1, .. }),
        ),
        (
            "infinite after dividing",
            legacy_file(&[("a.weight", 1, &[f32::INFINITY])], None),
            |e| matches!(e, ImatrixError::NonFinite { .. }),
        ),
        (
            "fewer entries than declared",
            {
                let mut f = legacy_file(&[("a.weight", 1, &[1.0])], None);
                f[..4].copy_from_slice(&le(2));
                f
            },
            |e| matches!(e, ImatrixError::Truncated { .. }),
        ),
        (
            "partial trailer",
            [legacy_file(&[("a.weight", 1, &[1.0])], None), vec![1, 0]].concat(),
            |e| {
                matches!(
                    e,
                    ImatrixError::Truncated {
                        what: "chunk count",
                        ..
                    }
                )
            },
        ),
        (
            "negative dataset length",
            [
                legacy_file(&[("a.weight", 1, &[1.0])], None),
                le(3).to_vec(),
                le(-1).to_vec(),
            ]
            .concat(),
            |e| {
                matches!(
                    e,
                    ImatrixError::NegativeLength {
                        what: "dataset name length",
                        ..
                    }
                )
            },
        ),
        (
            "dataset past the end",
            [
                legacy_file(&[("a.weight", 1, &[1.0])], None),
                le(3).to_vec(),
                le(100).to_vec(),
            ]
            .concat(),
            |e| {
                matches!(
                    e,
                    ImatrixError::Truncated {
                        what: "dataset name",
                        ..
                    }
                )
            },
        ),
    ];
    for (what, bytes, check) in cases {
        match ImportanceMatrix::from_bytes(&bytes) {
            Err(e) => {
                assert!(check(&e), "{what}: {e:?}");
                assert!(!e.to_string().is_empty());
            }
            Ok(im) => panic!("{what}: accepted {im:?}"),
        }
    }
}

#[test]
fn every_truncation_of_the_legacy_fixture_is_an_error() {
    let full = std::fs::read(testdata("imatrix.dat")).unwrap();
    let entries_end = full.len() - 22;
    for n in 0..full.len() {
        let r = ImportanceMatrix::from_bytes(&full[..n]);
        if n == entries_end {
            assert!(r.is_ok(), "{n}: an old file without trailer");
        } else {
            assert!(
                matches!(r, Err(ImatrixError::Truncated { .. })),
                "{n}: {r:?}"
            );
        }
    }
}

// -------------------------------------------------------------- GGUF files

/// A GGUF imatrix: the three keys (unless `skip`), then tensors.
fn gguf_file(
    keys: Vec<(&str, weightkit_core::Value)>,
    tensors: &[(&str, DType, &[usize], Vec<u8>)],
) -> Vec<u8> {
    let mut md = Metadata::new();
    md.insert("general.type", "imatrix");
    for (k, v) in keys {
        md.insert(k, v);
    }
    let list: Vec<(TensorInfo, &[u8])> = tensors
        .iter()
        .map(|(n, d, s, b)| (TensorInfo::new(*n, *d, s.to_vec()), b.as_slice()))
        .collect();
    serialize(&md, &list, &WriterOptions::default()).unwrap()
}

fn std_keys() -> Vec<(&'static str, weightkit_core::Value)> {
    vec![
        ("imatrix.datasets", vec!["d.txt".to_owned()].into()),
        ("imatrix.chunk_count", 3u32.into()),
        ("imatrix.chunk_size", 512u32.into()),
    ]
}

fn f32s(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

#[test]
fn gguf_semantics() {
    // Two experts of 3 columns; counts 2 and 0 -> sums / 2 and ones.
    let f = gguf_file(
        std_keys(),
        &[
            (
                "w.weight.in_sum2",
                DType::F32,
                &[2, 3],
                f32s(&[2.0, 4.0, 6.0, 8.0, 8.0, 8.0]),
            ),
            ("w.weight.counts", DType::F32, &[2, 1], f32s(&[2.0, 0.0])),
            ("w.weight.in_sum", DType::F32, &[2, 3], f32s(&[0.0; 6])),
            ("v.weight.in_sum2", DType::F32, &[3], f32s(&[3.0, 3.0, 3.0])),
            ("v.weight.counts", DType::F32, &[1], f32s(&[-1.0])),
            ("u.weight.in_sum2", DType::F32, &[1], f32s(&[3.0])),
            ("u.weight.counts", DType::F32, &[1], f32s(&[f32::NAN])),
            ("something.else", DType::F32, &[1], f32s(&[1.0])),
        ],
    );
    let im = ImportanceMatrix::from_bytes(&f).unwrap();
    assert_eq!(
        im.get("w.weight"),
        Some(&[1.0, 2.0, 3.0, 1.0, 1.0, 1.0][..])
    );
    assert_eq!(im.num_matrices("w.weight"), Some(2));
    // A count that is not positive (negative, NaN) gives ones.
    assert_eq!(im.get("v.weight"), Some(&[1.0, 1.0, 1.0][..]));
    assert_eq!(im.get("u.weight"), Some(&[1.0][..]));
    assert_eq!(im.len(), 3);
    assert_eq!((im.chunk_count(), im.chunk_size()), (3, Some(512)));
    assert_eq!(im.datasets(), ["d.txt"]);
    // An empty dataset list is accepted.
    let mut keys = std_keys();
    keys[0].1 = Vec::<String>::new().into();
    let f = gguf_file(
        keys,
        &[
            ("w.in_sum2", DType::F32, &[1], f32s(&[2.0])),
            ("w.counts", DType::F32, &[1], f32s(&[1.0])),
        ],
    );
    assert!(
        ImportanceMatrix::from_bytes(&f)
            .unwrap()
            .datasets()
            .is_empty()
    );
}

#[test]
fn gguf_hostile_files() {
    let pair = |sums: &[f32], counts: &[f32]| -> Vec<(&'static str, DType, Vec<usize>, Vec<u8>)> {
        vec![
            (
                "w.in_sum2",
                DType::F32,
                vec![counts.len(), sums.len() / counts.len().max(1)],
                f32s(sums),
            ),
            ("w.counts", DType::F32, vec![counts.len(), 1], f32s(counts)),
        ]
    };
    let build = |keys, tensors: Vec<(&'static str, DType, Vec<usize>, Vec<u8>)>| {
        let t: Vec<(&str, DType, &[usize], Vec<u8>)> = tensors
            .iter()
            .map(|(n, d, s, b)| (*n, *d, s.as_slice(), b.clone()))
            .collect();
        gguf_file(keys, &t)
    };
    type Check = fn(&ImatrixError) -> bool;
    let without = |key: &str| {
        let keys: Vec<_> = std_keys().into_iter().filter(|(k, _)| *k != key).collect();
        build(keys, pair(&[1.0], &[1.0]))
    };
    let cases: Vec<(&str, Vec<u8>, Check)> = vec![
        ("no datasets", without("imatrix.datasets"), |e| {
            matches!(
                e,
                ImatrixError::MissingKey {
                    key: "imatrix.datasets"
                }
            )
        }),
        ("no chunk count", without("imatrix.chunk_count"), |e| {
            matches!(
                e,
                ImatrixError::MissingKey {
                    key: "imatrix.chunk_count"
                }
            )
        }),
        ("no chunk size", without("imatrix.chunk_size"), |e| {
            matches!(
                e,
                ImatrixError::MissingKey {
                    key: "imatrix.chunk_size"
                }
            )
        }),
        (
            "chunk size not u32",
            {
                let mut k = std_keys();
                k[2].1 = 512i32.into();
                build(k, pair(&[1.0], &[1.0]))
            },
            |e| {
                matches!(
                    e,
                    ImatrixError::WrongKeyType {
                        key: "imatrix.chunk_size",
                        ..
                    }
                )
            },
        ),
        (
            "datasets not strings",
            {
                let mut k = std_keys();
                k[0].1 = vec![1u32].into();
                build(k, pair(&[1.0], &[1.0]))
            },
            |e| {
                matches!(
                    e,
                    ImatrixError::WrongKeyType {
                        key: "imatrix.datasets",
                        ..
                    }
                )
            },
        ),
        ("no tensors", build(std_keys(), vec![]), |e| {
            matches!(e, ImatrixError::NoEntries)
        }),
        (
            "sums without counts",
            build(std_keys(), pair(&[1.0], &[1.0])[..1].to_vec()),
            |e| {
                matches!(
                    e,
                    ImatrixError::Unpaired {
                        missing: ".counts",
                        ..
                    }
                )
            },
        ),
        (
            "counts without sums",
            build(std_keys(), pair(&[1.0], &[1.0])[1..].to_vec()),
            |e| {
                matches!(
                    e,
                    ImatrixError::Unpaired {
                        missing: ".in_sum2",
                        ..
                    }
                )
            },
        ),
        (
            "counts F16",
            build(
                std_keys(),
                vec![
                    ("w.in_sum2", DType::F32, vec![1], f32s(&[1.0])),
                    ("w.counts", DType::F16, vec![1], vec![0, 0x3c]),
                ],
            ),
            |e| {
                matches!(
                    e,
                    ImatrixError::NotF32 {
                        dtype: DType::F16,
                        ..
                    }
                )
            },
        ),
        (
            "sums Q8_0",
            build(
                std_keys(),
                vec![
                    ("w.in_sum2", DType::Q8_0, vec![32], vec![0; 34]),
                    ("w.counts", DType::F32, vec![1], f32s(&[1.0])),
                ],
            ),
            |e| {
                matches!(
                    e,
                    ImatrixError::NotF32 {
                        dtype: DType::Q8_0,
                        ..
                    }
                )
            },
        ),
        (
            "fewer counts than matrices",
            build(
                std_keys(),
                vec![
                    ("w.in_sum2", DType::F32, vec![2, 2], f32s(&[1.0; 4])),
                    ("w.counts", DType::F32, vec![1], f32s(&[1.0])),
                ],
            ),
            |e| {
                matches!(
                    e,
                    ImatrixError::CountsLength {
                        expected: 2,
                        found: 1,
                        ..
                    }
                )
            },
        ),
        (
            "3-D sums",
            build(
                std_keys(),
                vec![
                    ("w.in_sum2", DType::F32, vec![2, 2, 2], f32s(&[1.0; 8])),
                    ("w.counts", DType::F32, vec![2], f32s(&[1.0; 2])),
                ],
            ),
            |e| matches!(e, ImatrixError::SumsShape { .. }),
        ),
        (
            "infinite sum",
            build(std_keys(), pair(&[f32::INFINITY], &[1.0])),
            |e| matches!(e, ImatrixError::NonFinite { .. }),
        ),
        (
            "overflow in the division",
            build(std_keys(), pair(&[f32::MAX], &[0.5])),
            |e| matches!(e, ImatrixError::NonFinite { .. }),
        ),
        ("not GGUF after all", b"GGUF\x03\x00".to_vec(), |e| {
            matches!(e, ImatrixError::Gguf(_)) && std::error::Error::source(e).is_some()
        }),
    ];
    for (what, bytes, check) in cases {
        match ImportanceMatrix::from_bytes(&bytes) {
            Err(e) => assert!(check(&e), "{what}: {e:?}"),
            Ok(im) => panic!("{what}: accepted {im:?}"),
        }
    }
    // A 3-D sums tensor whose outer dimension is 1 is a 2-D one.
    let f = build(
        std_keys(),
        vec![
            ("w.in_sum2", DType::F32, vec![1, 2, 2], f32s(&[2.0; 4])),
            ("w.counts", DType::F32, vec![2, 1], f32s(&[2.0, 1.0])),
        ],
    );
    let im = ImportanceMatrix::from_bytes(&f).unwrap();
    assert_eq!(im.get("w"), Some(&[1.0, 1.0, 2.0, 2.0][..]));
}

#[test]
fn truncated_gguf_fixture_is_an_error() {
    let full = std::fs::read(testdata("imatrix.gguf")).unwrap();
    let file = weightkit_gguf::GgufFile::from_vec(full.clone(), "x", &Default::default()).unwrap();
    let last = file.tensors().len() - 1;
    let data_end = file.ggml_info(last).unwrap().range.end;
    let header_end = file.header().data_offset();
    let lengths = (0..header_end + 64).chain((header_end + 64..full.len()).step_by(13));
    for n in lengths {
        let r = ImportanceMatrix::from_bytes(&full[..n]);
        if n < data_end {
            assert!(r.is_err(), "{n}: accepted");
        }
    }
    assert!(ImportanceMatrix::from_bytes(&full).is_ok());
}

#[test]
fn missing_file_is_an_io_error() {
    let e = ImportanceMatrix::load(testdata("no-such-file.dat")).unwrap_err();
    assert!(matches!(e, ImatrixError::Io { .. }));
    assert!(e.to_string().contains("no-such-file.dat"));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Any bytes: an answer, never a panic; what is accepted is finite.
    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512), gguf in any::<bool>()) {
        let bytes = if gguf { [b"GGUF\x03\x00\x00\x00".as_slice(), &bytes].concat() } else { bytes };
        if let Ok(im) = ImportanceMatrix::from_bytes(&bytes) {
            for n in im.names() {
                prop_assert!(im.get(n).unwrap().iter().all(|v| v.is_finite()));
            }
        }
    }

    /// Random overwrites of the fixtures: no panic; accepted files hold
    /// finite, non-empty vectors.
    #[test]
    fn mutated_fixtures_never_panic(
        which in 0usize..2,
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
    ) {
        let name = ["imatrix.dat", "imatrix.gguf"][which];
        let mut bytes = std::fs::read(testdata(name)).unwrap();
        for (at, b) in edits {
            let i = at.index(bytes.len());
            bytes[i] = b;
        }
        if let Ok(im) = ImportanceMatrix::from_bytes(&bytes) {
            for n in im.names() {
                let v = im.get(n).unwrap();
                prop_assert!(!v.is_empty() || which == 1);
                prop_assert!(v.iter().all(|v| v.is_finite()));
            }
        }
    }
}
