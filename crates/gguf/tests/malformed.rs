//! Hostile input: each llama.cpp rejection rule (and the past advisories)
//! gets a crafted file and its own typed error; every truncation of every
//! fixture is an error; nothing panics or allocates more than the file.

use weightkit_gguf::header::Header;
use weightkit_gguf::{Error, ReadOptions};

use crate::alloc_counter::peak_alloc;
use crate::testdata;

/// A GGUF byte builder.
#[derive(Clone)]
struct B(Vec<u8>);

impl B {
    fn new(version: u32, n_tensors: i64, n_kv: i64) -> B {
        let mut b = B(b"GGUF".to_vec());
        b.u32(version).i64(n_tensors).i64(n_kv);
        b
    }
    fn u32(&mut self, v: u32) -> &mut Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    fn i32(&mut self, v: i32) -> &mut Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    fn u64(&mut self, v: u64) -> &mut Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    fn i64(&mut self, v: i64) -> &mut Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    fn str(&mut self, s: &str) -> &mut Self {
        self.u64(s.len() as u64);
        self.0.extend_from_slice(s.as_bytes());
        self
    }
    /// A `key: u32` pair.
    fn kv_u32(&mut self, key: &str, v: u32) -> &mut Self {
        self.str(key).i32(4).u32(v)
    }
    /// A tensor info.
    fn tensor(&mut self, name: &str, ne: &[i64], ty: i32, offset: u64) -> &mut Self {
        self.str(name).u32(ne.len() as u32);
        for &d in ne {
            self.i64(d);
        }
        self.i32(ty).u64(offset)
    }
    fn pad_to(&mut self, align: usize) -> &mut Self {
        while !self.0.len().is_multiple_of(align) {
            self.0.push(0);
        }
        self
    }
    fn data(&mut self, n: usize) -> &mut Self {
        self.0.resize(self.0.len() + n, 0x11);
        self
    }
    fn build(&self) -> Vec<u8> {
        self.0.clone()
    }
}

fn parse(bytes: &[u8]) -> Result<(), Error> {
    Header::parse(bytes, &ReadOptions::default()).map(|_| ())
}

/// Allocation while rejecting a file stays linear in the file's size (each
/// parsed entry costs a bounded multiple of the bytes it consumed) and is
/// never driven by a declared count.
fn alloc_bound(len: usize) -> usize {
    8 * len + 4096
}

fn parse_bounded(bytes: &[u8]) -> Result<(), Error> {
    let (r, peak) = peak_alloc(|| parse(bytes));
    if r.is_err() {
        assert!(
            peak <= alloc_bound(bytes.len()),
            "rejecting a {}-byte file allocated {peak} bytes ({:?})",
            bytes.len(),
            r.as_ref().err()
        );
    }
    r
}

/// One valid F32 tensor of 4 elements.
fn valid() -> Vec<u8> {
    B::new(3, 1, 1)
        .str("general.architecture")
        .i32(8)
        .str("llama")
        .tensor("w", &[4], 0, 0)
        .pad_to(32)
        .data(16)
        .pad_to(32)
        .build()
}

#[test]
fn each_rule_has_its_own_error() {
    parse_bounded(&valid()).unwrap();
    type Check = fn(&Error) -> bool;
    let cases: Vec<(&str, Vec<u8>, Check)> = vec![
        ("empty file", vec![], |e| {
            matches!(e, Error::Truncated { .. })
        }),
        ("bad magic", b"GGML\x03\0\0\0".to_vec(), |e| {
            matches!(e, Error::BadMagic { .. })
        }),
        ("version 0", B::new(0, 0, 0).build(), |e| {
            matches!(e, Error::UnsupportedVersion { version: 0 })
        }),
        ("version 1", B::new(1, 0, 0).build(), |e| {
            matches!(e, Error::UnsupportedVersion { version: 1 })
        }),
        ("version 4", B::new(4, 0, 0).build(), |e| {
            matches!(e, Error::UnsupportedVersion { version: 4 })
        }),
        (
            "big-endian version",
            B::new(0x0300_0000, 0, 0).build(),
            |e| matches!(e, Error::WrongEndianness { .. }),
        ),
        ("negative tensor count", B::new(3, -1, 0).build(), |e| {
            matches!(
                e,
                Error::NegativeCount {
                    what: "tensor count",
                    ..
                }
            )
        }),
        (
            "CVE-2025-53630: tensor count whose allocation overflows",
            B::new(3, i64::MAX / 8, 0).build(),
            |e| {
                matches!(
                    e,
                    Error::CountPastEnd {
                        what: "tensor count",
                        ..
                    }
                )
            },
        ),
        ("negative kv count", B::new(3, 0, -5).build(), |e| {
            matches!(
                e,
                Error::NegativeCount {
                    what: "key-value count",
                    ..
                }
            )
        }),
        ("huge kv count", B::new(3, 0, 1 << 62).build(), |e| {
            matches!(
                e,
                Error::CountPastEnd {
                    what: "key-value count",
                    ..
                }
            )
        }),
        (
            "string over 1 GiB",
            B::new(3, 0, 1).u64((1 << 30) + 1).data(16).build(),
            |e| matches!(e, Error::StringTooLong { offset: 24, .. }),
        ),
        (
            "string past the end",
            B::new(3, 0, 1).u64(100).data(16).build(),
            |e| {
                matches!(
                    e,
                    Error::Truncated {
                        what: "key",
                        offset: 32,
                        ..
                    }
                )
            },
        ),
        (
            "empty key",
            B::new(3, 0, 1).str("").i32(4).u32(1).build(),
            |e| {
                matches!(
                    e,
                    Error::EmptyKey {
                        index: 0,
                        offset: 24
                    }
                )
            },
        ),
        (
            "duplicate key",
            B::new(3, 0, 2).kv_u32("a", 1).kv_u32("a", 2).build(),
            |e| matches!(e, Error::DuplicateKey { key, .. } if key == "a"),
        ),
        (
            "invalid value type",
            B::new(3, 0, 1).str("k").i32(13).u32(0).build(),
            |e| matches!(e, Error::InvalidValueType { type_id: 13, .. }),
        ),
        (
            "invalid array element type",
            B::new(3, 0, 1).str("k").i32(9).i32(-1).u64(0).build(),
            |e| matches!(e, Error::InvalidValueType { type_id: -1, .. }),
        ),
        (
            "nested array",
            B::new(3, 0, 1).str("k").i32(9).i32(9).u64(0).build(),
            |e| matches!(e, Error::NestedArray { .. }),
        ),
        (
            "array over 2^30 elements",
            B::new(3, 0, 1)
                .str("k")
                .i32(9)
                .i32(0)
                .u64((1 << 30) + 1)
                .build(),
            |e| matches!(e, Error::ArrayTooLong { .. }),
        ),
        (
            "CVE-2026-27940: array whose byte size overflows",
            {
                B::new(3, 0, 1)
                    .str("k")
                    .i32(9)
                    .i32(10)
                    .u64(1 << 29)
                    .data(8)
                    .build()
            },
            |e| {
                matches!(
                    e,
                    Error::CountPastEnd {
                        what: "array length",
                        ..
                    }
                )
            },
        ),
        (
            "alignment of the wrong type",
            B::new(3, 0, 1)
                .str("general.alignment")
                .i32(10)
                .u64(32)
                .build(),
            |e| matches!(e, Error::AlignmentType { .. }),
        ),
        (
            "alignment zero",
            B::new(3, 0, 1).kv_u32("general.alignment", 0).build(),
            |e| matches!(e, Error::BadAlignment { alignment: 0 }),
        ),
        (
            "alignment not a power of two",
            B::new(3, 0, 1).kv_u32("general.alignment", 48).build(),
            |e| matches!(e, Error::BadAlignment { alignment: 48 }),
        ),
        (
            "GHSA-96jg-mvhq-q7q7: alignment padding past the file",
            B::new(3, 1, 1)
                .kv_u32("general.alignment", 1 << 31)
                .tensor("w", &[0], 0, 0)
                .build(),
            |e| {
                matches!(
                    e,
                    Error::Truncated {
                        what: "padding before the data section",
                        ..
                    }
                )
            },
        ),
        (
            "name of 64 bytes",
            B::new(3, 1, 0)
                .tensor(&"n".repeat(64), &[1], 0, 0)
                .pad_to(32)
                .data(4)
                .build(),
            |e| matches!(e, Error::NameTooLong { len: 64, .. }),
        ),
        (
            "duplicate tensor name",
            B::new(3, 2, 0)
                .tensor("w", &[1], 0, 0)
                .tensor("w", &[1], 0, 32)
                .pad_to(32)
                .data(64)
                .build(),
            |e| matches!(e, Error::DuplicateTensor { .. }),
        ),
        (
            "five dimensions",
            B::new(3, 1, 0)
                .tensor("w", &[1, 1, 1, 1, 1], 0, 0)
                .pad_to(32)
                .data(4)
                .build(),
            |e| matches!(e, Error::TooManyDims { n_dims: 5, .. }),
        ),
        (
            "negative dimension",
            B::new(3, 1, 0)
                .tensor("w", &[4, -2], 0, 0)
                .pad_to(32)
                .data(4)
                .build(),
            |e| {
                matches!(
                    e,
                    Error::NegativeDim {
                        dim: 1,
                        value: -2,
                        ..
                    }
                )
            },
        ),
        (
            "element count overflowing i64",
            B::new(3, 1, 0)
                .tensor("w", &[1 << 32, 1 << 32], 0, 0)
                .pad_to(32)
                .data(4)
                .build(),
            |e| matches!(e, Error::SizeOverflow { .. }),
        ),
        (
            "element count of exactly 2^63",
            B::new(3, 1, 0)
                .tensor("w", &[1 << 62, 2], 24, 0)
                .pad_to(32)
                .data(4)
                .build(),
            |e| matches!(e, Error::SizeOverflow { .. }),
        ),
        (
            "unknown ggml type",
            B::new(3, 1, 0)
                .tensor("w", &[4], 43, 0)
                .pad_to(32)
                .data(16)
                .build(),
            |e| matches!(e, Error::UnknownType { type_id: 43, .. }),
        ),
        (
            "negative ggml type",
            B::new(3, 1, 0)
                .tensor("w", &[4], -1, 0)
                .pad_to(32)
                .data(16)
                .build(),
            |e| matches!(e, Error::UnknownType { type_id: -1, .. }),
        ),
        (
            "removed ggml type (Q4_2)",
            B::new(3, 1, 0)
                .tensor("w", &[32], 4, 0)
                .pad_to(32)
                .data(32)
                .build(),
            |e| matches!(e, Error::RemovedType { type_id: 4, .. }),
        ),
        (
            "row not a whole number of blocks",
            B::new(3, 1, 0)
                .tensor("w", &[33], 2, 0)
                .pad_to(32)
                .data(64)
                .build(),
            |e| {
                matches!(
                    e,
                    Error::NotWholeBlocks {
                        row: 33,
                        block: 32,
                        ..
                    }
                )
            },
        ),
        (
            "offset that is not the running padded sum",
            B::new(3, 2, 0)
                .tensor("a", &[1], 0, 0)
                .tensor("b", &[1], 0, 4)
                .pad_to(32)
                .data(64)
                .build(),
            |e| {
                matches!(
                    e,
                    Error::BadOffset {
                        found: 4,
                        expected: 32,
                        ..
                    }
                )
            },
        ),
        (
            "data past the end",
            B::new(3, 1, 0)
                .tensor("w", &[64], 0, 0)
                .pad_to(32)
                .data(16)
                .build(),
            |e| matches!(e, Error::DataPastEnd { .. }),
        ),
        (
            "gguf-py hang: tiny file with an array length of 2^63",
            B::new(3, 0, 1).str("k").i32(9).i32(0).u64(1 << 63).build(),
            |e| matches!(e, Error::ArrayTooLong { .. }),
        ),
        (
            "tiny file with a string length of 2^63",
            B::new(3, 0, 1).str("k").i32(8).u64(1 << 63).build(),
            |e| matches!(e, Error::StringTooLong { .. }),
        ),
    ];
    let mut kinds = std::collections::HashSet::new();
    for (what, bytes, check) in cases {
        let err = parse_bounded(&bytes).expect_err(what);
        assert!(check(&err), "{what}: got {err:?}");
        kinds.insert(std::mem::discriminant(&err));
    }
    assert!(
        kinds.len() >= 23,
        "only {} distinct error kinds",
        kinds.len()
    );
    // The 63-byte name is fine.
    let ok = B::new(3, 1, 0)
        .tensor(&"n".repeat(63), &[1], 0, 0)
        .pad_to(32)
        .data(4)
        .pad_to(32)
        .build();
    parse(&ok).unwrap();
    // Version 2 files parse with the same layout.
    let mut v2 = valid();
    v2[4] = 2;
    parse(&v2).unwrap();
}

#[test]
fn every_truncation_of_every_fixture_is_an_error() {
    let lenient = ReadOptions {
        allow_nested_arrays: true,
        ..ReadOptions::default()
    };
    for name in [
        "metadata-all-types.gguf",
        "quantized.gguf",
        "dequant-only.gguf",
        "metadata-nested-array.gguf",
    ] {
        let full = std::fs::read(testdata(&format!("gguf/{name}"))).unwrap();
        Header::parse(&full, &lenient).unwrap();
        for len in 0..full.len() {
            let cut = &full[..len];
            let (r, peak) = peak_alloc(|| Header::parse(cut, &lenient).map(|h| h.tensors().len()));
            let err = match r {
                Err(e) => e,
                Ok(n) => {
                    // A file without tensors has no data section, and llama.cpp
                    // does not require the padding after its header: cutting
                    // only zero padding off it leaves a valid file.
                    assert_eq!(n, 0, "{name} cut to {len} parsed");
                    assert!(
                        full[len..].iter().all(|&b| b == 0),
                        "{name} cut to {len} parsed"
                    );
                    continue;
                }
            };
            assert!(
                matches!(
                    err,
                    Error::Truncated { .. }
                        | Error::DataPastEnd { .. }
                        | Error::CountPastEnd { .. }
                ),
                "{name} cut to {len}: {err:?}"
            );
            assert!(
                peak <= alloc_bound(len),
                "{name} cut to {len}: allocated {peak}"
            );
        }
    }
}

#[test]
fn random_corruption_never_panics() {
    let full = std::fs::read(testdata("gguf/metadata-all-types.gguf")).unwrap();
    let header_len = 1728;
    let mut s: u64 = 99;
    for _ in 0..20_000 {
        s = s
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        let mut bytes = full.clone();
        for k in 0..1 + (s >> 60) as usize % 3 {
            let pos = ((s >> (8 + k * 8)) as usize) % header_len;
            bytes[pos] = (s >> (20 + k)) as u8;
        }
        let _ = parse_bounded(&bytes);
    }
}
