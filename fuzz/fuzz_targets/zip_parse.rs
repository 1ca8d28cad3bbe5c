//! Fuzzes the strict ZIP reader (`weightkit_pickle::zip::ZipArchive`) with
//! arbitrary bytes.
//!
//! `parse` must never panic; whatever it accepts must keep its promises:
//! every entry's data range lies inside the input, ranges do not overlap,
//! names are path-safe and unique (and `find` returns each entry), a stored
//! entry's bytes are exactly its raw range (borrowed, not copied), and
//! every entry that `read_verified` accepts has its declared size and CRC-32
//! (checked here independently) and reads identically through `read`.
//!
//! If every entry reads, the archive round-trips through `ZipWriter`: the
//! rewrite parses to the same names and bytes, and rewriting that is
//! byte-identical.
#![no_main]

use std::borrow::Cow;
use std::io::Cursor;

use libfuzzer_sys::fuzz_target;
use weightkit_pickle::zip::{Method, ZipArchive, ZipLimits, ZipWriter};

fn limits() -> ZipLimits {
    let mut l = ZipLimits::default();
    // Deflate is bounded by max_ratio already; keep one entry well under
    // the fuzzer's RSS limit as well.
    l.max_uncompressed = 64 << 20;
    l
}

fuzz_target!(|data: &[u8]| {
    let limits = limits();
    let Ok(archive) = ZipArchive::parse(data, &limits) else {
        return;
    };
    assert_eq!(archive.len(), archive.entries().len());
    assert_eq!(archive.is_empty(), archive.entries().is_empty());

    let mut ranges = Vec::with_capacity(archive.len());
    let mut contents: Vec<Option<Cow<'_, [u8]>>> = Vec::with_capacity(archive.len());
    for e in archive.entries() {
        check_name(&e.name);
        assert_eq!(archive.find(&e.name), Some(e), "find(`{}`)", e.name);
        assert!(
            e.data.start <= e.data.end && e.data.end <= data.len(),
            "`{}` data {:?} outside {} bytes",
            e.name,
            e.data,
            data.len()
        );
        assert_eq!(
            e.data.len() as u64,
            e.compressed_size,
            "`{}` compressed size",
            e.name
        );
        assert!(
            e.header_offset.saturating_add(30) <= e.data.start as u64,
            "`{}`: no room for the local header before the data",
            e.name
        );
        ranges.push(e.data.clone());

        let raw = &data[e.data.clone()];
        let verified = archive.read_verified(data, e);
        let plain = archive.read(data, e);
        match &verified {
            Ok(bytes) => {
                assert_eq!(bytes.len() as u64, e.uncompressed_size, "`{}` size", e.name);
                assert_eq!(crc32fast::hash(bytes), e.crc32, "`{}` CRC-32", e.name);
                let p = plain
                    .as_ref()
                    .expect("read rejects what read_verified accepts");
                assert!(
                    p.as_ref() == bytes.as_ref(),
                    "`{}`: read and read_verified differ",
                    e.name
                );
                if e.method == Method::Stored {
                    assert!(
                        matches!(bytes, Cow::Borrowed(_)),
                        "stored `{}` was copied",
                        e.name
                    );
                    assert!(
                        bytes.as_ref() == raw,
                        "stored `{}` is not its raw range",
                        e.name
                    );
                    assert_eq!(e.compressed_size, e.uncompressed_size);
                }
            }
            Err(_) => {
                // Only a stored entry's CRC is skipped by `read`.
                if let Ok(p) = &plain {
                    assert_eq!(
                        e.method,
                        Method::Stored,
                        "read accepts a bad deflated `{}`",
                        e.name
                    );
                    assert!(p.as_ref() == raw);
                }
            }
        }
        contents.push(verified.ok());
    }

    // No two entries' data overlap.
    ranges.sort_by_key(|r| (r.start, r.end));
    for w in ranges.windows(2) {
        assert!(
            w[0].end <= w[1].start || w[0].is_empty() || w[1].is_empty(),
            "overlapping data {:?} {:?}",
            w[0],
            w[1]
        );
    }

    // Round trip through the writer.
    let Some(contents) = contents.into_iter().collect::<Option<Vec<_>>>() else {
        return;
    };
    let entries: Vec<(&str, &[u8])> = archive
        .entries()
        .iter()
        .zip(&contents)
        .map(|(e, c)| (e.name.as_str(), c.as_ref()))
        .collect();
    let once = write(&entries);
    let again = ZipArchive::parse(&once, &limits).expect("parse our own archive");
    assert_eq!(again.len(), entries.len());
    let mut reread = Vec::with_capacity(entries.len());
    for (e, (name, bytes)) in again.entries().iter().zip(&entries) {
        assert_eq!(e.name, *name, "name after round trip");
        assert_eq!(e.method, Method::Stored);
        let b = again.read_verified(&once, e).expect("read our own entry");
        assert!(b.as_ref() == *bytes, "bytes of `{name}` after round trip");
        reread.push((e.name.as_str(), b));
    }
    let reread: Vec<(&str, &[u8])> = reread.iter().map(|(n, b)| (*n, b.as_ref())).collect();
    assert!(write(&reread) == once, "writing is not a fixed point");
});

fn write(entries: &[(&str, &[u8])]) -> Vec<u8> {
    let mut w = ZipWriter::new(Cursor::new(Vec::new()));
    for (name, bytes) in entries {
        w.write_entry(name, bytes)
            .expect("write an entry the reader accepted");
    }
    w.finish().expect("finish").into_inner()
}

/// The reader's promise about names: relative, `/`-separated, no `.`,
/// `..` or empty components, no backslash, NUL or drive letter.
fn check_name(name: &str) {
    assert!(!name.is_empty(), "empty name");
    assert!(!name.contains(['\0', '\\']), "bad character in `{name}`");
    assert!(!name.starts_with('/'), "absolute `{name}`");
    let b = name.as_bytes();
    assert!(
        !(b.len() >= 2 && b[0].is_ascii_alphabetic() && b[1] == b':'),
        "drive letter in `{name}`"
    );
    let path = name.strip_suffix('/').unwrap_or(name);
    assert!(
        path.split('/').all(|c| !matches!(c, "" | "." | "..")),
        "unsafe component in `{name}`"
    );
}
