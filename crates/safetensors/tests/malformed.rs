//! Hostile input: every malformation gets its own typed error, nothing
//! panics, and parsing allocates less than the file's size.

use weightkit_safetensors::{Error, MAX_HEADER_SIZE, SafeTensors};

use crate::alloc_counter::peak_alloc;
use crate::testdata;

fn craft(header: &str, data_len: usize) -> Vec<u8> {
    let mut v = (header.len() as u64).to_le_bytes().to_vec();
    v.extend_from_slice(header.as_bytes());
    v.resize(v.len() + data_len, 0x5a);
    v
}

fn parse(bytes: &[u8]) -> Result<(), Error> {
    SafeTensors::parse(bytes).map(|_| ())
}

/// Parses `bytes`, asserting the parse allocates less than the file.
fn parse_bounded(bytes: &[u8]) -> Result<(), Error> {
    let (r, peak) = peak_alloc(|| parse(bytes));
    assert!(
        peak <= bytes.len().max(256),
        "parsing a {}-byte file allocated {peak} bytes ({:?})",
        bytes.len(),
        r.as_ref().err()
    );
    r
}

#[test]
fn each_malformed_header_has_its_own_error() {
    let ok = r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"U8","shape":[3],"data_offsets":[8,11]}}"#;
    // A valid file materialises its header; the bound is for rejected input.
    parse(&craft(ok, 11)).unwrap();

    type Case = (&'static str, Vec<u8>, fn(&Error) -> bool);
    let cases: Vec<Case> = vec![
        ("empty file", vec![], |e| {
            matches!(e, Error::FileTooShort { len: 0 })
        }),
        ("7 bytes", vec![0; 7], |e| {
            matches!(e, Error::FileTooShort { len: 7 })
        }),
        (
            "2^60 header length",
            (1u64 << 60).to_le_bytes().to_vec(),
            |e| matches!(e, Error::HeaderTooLarge { len, .. } if *len == 1 << 60),
        ),
        (
            "header length just over the cap",
            ((MAX_HEADER_SIZE as u64) + 1).to_le_bytes().to_vec(),
            |e| matches!(e, Error::HeaderTooLarge { .. }),
        ),
        (
            "header length past the file",
            {
                let mut v = craft(ok, 11);
                v[..8].copy_from_slice(&1000u64.to_le_bytes());
                v
            },
            |e| matches!(e, Error::HeaderPastEnd { len: 1000, .. }),
        ),
        (
            "invalid UTF-8",
            {
                let mut v = craft(ok, 11);
                v[10] = 0xff;
                v
            },
            |e| matches!(e, Error::HeaderNotUtf8 { offset: 10 }),
        ),
        ("invalid JSON", craft(r#"{"a":{"dtype":"F32""#, 0), |e| {
            matches!(e, Error::HeaderJson { .. })
        }),
        ("JSON array", craft("[1,2]", 0), |e| {
            matches!(e, Error::HeaderJson { .. })
        }),
        ("trailing garbage after JSON", craft(r#"{} x"#, 0), |e| {
            matches!(e, Error::HeaderJson { .. })
        }),
        (
            "duplicate names",
            craft(
                r#"{"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},"a":{"dtype":"U8","shape":[1],"data_offsets":[1,2]}}"#,
                2,
            ),
            |e| matches!(e, Error::DuplicateName { name } if name == "a"),
        ),
        (
            "duplicate metadata key",
            craft(r#"{"__metadata__":{"k":"1","k":"2"}}"#, 0),
            |e| matches!(e, Error::DuplicateMetadataKey { key } if key == "k"),
        ),
        (
            "non-string metadata",
            craft(r#"{"__metadata__":{"k":1}}"#, 0),
            |e| matches!(e, Error::InvalidMetadata { .. }),
        ),
        (
            "missing field",
            craft(r#"{"a":{"dtype":"U8","shape":[1]}}"#, 1),
            |e| matches!(e, Error::InvalidEntry { name, .. } if name == "a"),
        ),
        (
            "negative dimension",
            craft(
                r#"{"a":{"dtype":"U8","shape":[-1],"data_offsets":[0,1]}}"#,
                1,
            ),
            |e| matches!(e, Error::InvalidEntry { name, .. } if name == "a"),
        ),
        (
            "unknown dtype",
            craft(
                r#"{"a":{"dtype":"F128","shape":[1],"data_offsets":[0,16]}}"#,
                16,
            ),
            |e| matches!(e, Error::UnknownDType { dtype, .. } if dtype == "F128"),
        ),
        (
            "ggml type in safetensors",
            craft(
                r#"{"a":{"dtype":"Q4_0","shape":[32],"data_offsets":[0,18]}}"#,
                18,
            ),
            |e| matches!(e, Error::UnknownDType { .. }),
        ),
        (
            "overlapping offsets",
            craft(
                r#"{"a":{"dtype":"U8","shape":[4],"data_offsets":[0,4]},"b":{"dtype":"U8","shape":[4],"data_offsets":[2,6]}}"#,
                6,
            ),
            |e| matches!(e, Error::Overlap { name, previous, begin: 2, previous_end: 4, .. } if name == "b" && previous == "a"),
        ),
        (
            "gap between tensors",
            craft(
                r#"{"a":{"dtype":"U8","shape":[4],"data_offsets":[0,4]},"b":{"dtype":"U8","shape":[2],"data_offsets":[6,8]}}"#,
                8,
            ),
            |e| matches!(e, Error::Gap { name, gap: 2, begin: 6 } if name == "b"),
        ),
        (
            "gap before the first tensor",
            craft(
                r#"{"a":{"dtype":"U8","shape":[4],"data_offsets":[1,5]}}"#,
                5,
            ),
            |e| matches!(e, Error::Gap { gap: 1, .. }),
        ),
        (
            "reversed offsets",
            craft(
                r#"{"a":{"dtype":"U8","shape":[0],"data_offsets":[4,0]}}"#,
                4,
            ),
            |e| {
                matches!(
                    e,
                    Error::OffsetsReversed {
                        begin: 4,
                        end: 0,
                        ..
                    }
                )
            },
        ),
        (
            "offsets past the end",
            craft(
                r#"{"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}}"#,
                8,
            ),
            |e| matches!(e, Error::DataPastEnd { name, .. } if name == "a"),
        ),
        (
            "huge offsets past the end",
            craft(
                r#"{"a":{"dtype":"U8","shape":[18446744073709551615],"data_offsets":[0,18446744073709551615]}}"#,
                8,
            ),
            |e| matches!(e, Error::DataPastEnd { .. }),
        ),
        (
            "shape/size mismatch",
            craft(
                r#"{"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}"#,
                8,
            ),
            |e| {
                matches!(
                    e,
                    Error::SizeMismatch {
                        expected: 12,
                        found: 8,
                        ..
                    }
                )
            },
        ),
        (
            "element count overflow",
            craft(
                r#"{"a":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,8]}}"#,
                8,
            ),
            |e| matches!(e, Error::InvalidShape { .. }),
        ),
        (
            "sub-byte dtype not filling whole bytes",
            craft(
                r#"{"a":{"dtype":"F4","shape":[3],"data_offsets":[0,2]}}"#,
                2,
            ),
            |e| matches!(e, Error::InvalidShape { .. }),
        ),
        (
            "trailing bytes",
            craft(
                r#"{"a":{"dtype":"U8","shape":[2],"data_offsets":[0,2]}}"#,
                3,
            ),
            |e| matches!(e, Error::TrailingBytes { extra: 1, .. }),
        ),
        ("data with no tensors", craft("{}", 1), |e| {
            matches!(e, Error::TrailingBytes { extra: 1, .. })
        }),
    ];
    let mut kinds = std::collections::HashSet::new();
    for (what, bytes, check) in cases {
        let err = parse_bounded(&bytes).map(|()| what).expect_err(what);
        assert!(check(&err), "{what}: got {err:?}");
        // Every message says something specific.
        assert!(!err.to_string().is_empty());
        kinds.insert(std::mem::discriminant(&err));
        // The safetensors crate rejects these too (it accepts duplicate names,
        // which it silently collapses; we are stricter).
        if !what.starts_with("duplicate") {
            assert!(
                safetensors::SafeTensors::deserialize(&bytes).is_err(),
                "{what}: the reference accepts it"
            );
        }
    }
    assert!(
        kinds.len() >= 17,
        "only {} distinct error kinds",
        kinds.len()
    );
}

#[test]
fn every_truncation_of_a_fixture_shard_is_an_error() {
    let full = std::fs::read(testdata(
        "tiny-llama/safetensors-bf16-sharded/model-00004-of-00004.safetensors",
    ))
    .unwrap();
    parse(&full).unwrap();
    let header_end = 8 + u64::from_le_bytes(full[..8].try_into().unwrap()) as usize;
    for len in 0..full.len() {
        let cut = &full[..len];
        let err = parse_bounded(cut).unwrap_err();
        let expected = if len < 8 {
            matches!(err, Error::FileTooShort { .. })
        } else if len < header_end {
            matches!(err, Error::HeaderPastEnd { .. })
        } else {
            matches!(err, Error::DataPastEnd { ref name, .. } if name == "lm_head.weight")
        };
        assert!(expected, "truncated to {len}: {err:?}");
    }
}

#[test]
fn truncations_of_the_f32_fixture_are_errors() {
    let full = std::fs::read(testdata("tiny-llama/safetensors-f32/model.safetensors")).unwrap();
    let header_end = 8 + u64::from_le_bytes(full[..8].try_into().unwrap()) as usize;
    // Every length through the header and the first data bytes, then strided.
    let lens = (0..header_end + 64).chain((header_end + 64..full.len()).step_by(997));
    for len in lens {
        let err = parse_bounded(&full[..len]).unwrap_err();
        assert!(
            matches!(
                err,
                Error::FileTooShort { .. }
                    | Error::HeaderPastEnd { .. }
                    | Error::DataPastEnd { .. }
            ),
            "truncated to {len}: {err:?}"
        );
    }
}

#[test]
fn random_corruption_never_panics() {
    // A cheap deterministic mutation sweep (the fuzz target goes further).
    let full = std::fs::read(testdata(
        "tiny-llama/safetensors-bf16-sharded/model-00004-of-00004.safetensors",
    ))
    .unwrap();
    let header_end = 8 + u64::from_le_bytes(full[..8].try_into().unwrap()) as usize;
    let mut s: u64 = 0x1234_5678;
    for _ in 0..20_000 {
        s = s.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
        let mut bytes = full[..header_end.min(full.len())].to_vec();
        bytes.resize(full.len(), 0);
        let pos = (s >> 33) as usize % header_end;
        bytes[pos] = (s >> 20) as u8;
        let _ = parse_bounded(&bytes);
    }
}
