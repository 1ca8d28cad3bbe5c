//! The ZIP container: torch's own files, our writer read back by our reader
//! and by Python's `zipfile`, deflated archives made by Python, and malicious
//! archives that must each fail with their own error (never a panic).

use std::borrow::Cow;
use std::io::{Cursor, Seek, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

use weightkit_core::atomic::AtomicFile;
use weightkit_pickle::zip::{
    Method, ZipArchive, ZipEntry, ZipError, ZipLimits, ZipWriter, ZipWriterOptions,
};

/// torch's own files (shared with the checkpoint tests).
const TORCH_VIEWS: &str = "pickle/views.pt";
const TORCH_TINY_LLAMA: &str = "tiny-llama/pytorch-bin-f16/pytorch_model.bin";

/// A file under `testdata/`; `zip/...` names are under `testdata/pickle/zip/`.
fn fixture(rel: &str) -> Vec<u8> {
    let testdata = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../testdata");
    let path = match rel.strip_prefix("zip/") {
        Some(name) => testdata.join("pickle/zip").join(name),
        None => testdata.join(rel),
    };
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn tmp_path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("zip-{}-{name}", std::process::id()))
}

fn parse(buf: &[u8]) -> Result<ZipArchive, ZipError> {
    ZipArchive::parse(buf, &ZipLimits::default())
}

fn u16_at(buf: &[u8], at: usize) -> u16 {
    u16::from_le_bytes(buf[at..at + 2].try_into().unwrap())
}

fn u32_at(buf: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(buf[at..at + 4].try_into().unwrap())
}

fn u64_at(buf: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(buf[at..at + 8].try_into().unwrap())
}

fn names(zip: &ZipArchive) -> Vec<&str> {
    zip.entries().iter().map(|e| e.name.as_str()).collect()
}

fn entry<'a>(zip: &'a ZipArchive, name: &str) -> &'a ZipEntry {
    zip.find(name).unwrap_or_else(|| panic!("no entry {name}"))
}

/// Every entry: stored, 64-byte aligned, borrowed, CRC-32 correct.
fn check_torch_layout(buf: &[u8], zip: &ZipArchive) {
    for e in zip.entries() {
        assert_eq!(e.method, Method::Stored, "{}", e.name);
        assert_eq!(e.data.start % 64, 0, "{} not aligned", e.name);
        assert_eq!(e.compressed_size, e.uncompressed_size);
        assert_eq!(u64::try_from(e.data.len()).unwrap(), e.compressed_size);
        let data = zip.read_verified(buf, e).unwrap();
        assert!(matches!(data, Cow::Borrowed(_)), "{} copied", e.name);
        assert_eq!(crc32fast::hash(&data), e.crc32);
    }
}

#[test]
fn torch_views_fixture() {
    let buf = fixture(TORCH_VIEWS);
    let zip = parse(&buf).unwrap();
    let mut expected: Vec<String> = [
        "data.pkl",
        ".format_version",
        ".storage_alignment",
        "byteorder",
    ]
    .iter()
    .map(|n| format!("views/{n}"))
    .collect();
    expected.extend((0..12).map(|i| format!("views/data/{i}")));
    expected.extend([
        "views/version".into(),
        "views/.data/serialization_id".into(),
    ]);
    assert_eq!(names(&zip), expected);
    assert_eq!(zip.len(), 18);
    check_torch_layout(&buf, &zip);

    let read = |name: &str| zip.read(&buf, entry(&zip, name)).unwrap().into_owned();
    assert_eq!(read("views/.format_version"), b"1");
    assert_eq!(read("views/.storage_alignment"), b"64");
    assert_eq!(read("views/byteorder"), b"little");
    assert_eq!(read("views/version"), b"3\n");
    assert_eq!(read("views/data/11"), b"");
    assert_eq!(&read("views/data.pkl")[..2], b"\x80\x02");
    assert_eq!(entry(&zip, "views/data/0").uncompressed_size, 96);
    assert_eq!(entry(&zip, "views/data/5").uncompressed_size, 192);
    assert_eq!(entry(&zip, "views/data.pkl").crc32, 0x3a85_0e46);
    assert_eq!(entry(&zip, "views/data.pkl").header_offset, 0);
    assert_eq!(entry(&zip, "views/version").header_offset, 3712);
    assert!(zip.find("views/data/12").is_none());
    assert!(zip.find("data.pkl").is_none());
}

#[test]
fn torch_tiny_llama_fixture() {
    let buf = fixture(TORCH_TINY_LLAMA);
    let zip = parse(&buf).unwrap();
    assert_eq!(zip.len(), 27);
    assert_eq!(zip.entries()[0].name, "pytorch_model/data.pkl");
    assert_eq!(zip.entries()[0].uncompressed_size, 2106);
    assert_eq!(zip.entries()[0].crc32, 0x3fa3_d98b);
    for i in 0..21 {
        assert!(zip.find(&format!("pytorch_model/data/{i}")).is_some());
    }
    assert_eq!(entry(&zip, "pytorch_model/data/0").uncompressed_size, 32768);
    assert_eq!(entry(&zip, "pytorch_model/data/8").crc32, 0xcbe2_b99a);
    check_torch_layout(&buf, &zip);
}

/// With the default options our writer reproduces torch's bytes: every local
/// header, padding, data descriptor, central record and end record. Without
/// `always_zip64_end` only the ZIP64 end record and locator are left out.
#[test]
fn writer_matches_torch_byte_for_byte() {
    for name in [TORCH_VIEWS, TORCH_TINY_LLAMA] {
        let buf = fixture(name);
        let zip = parse(&buf).unwrap();
        let rewrite = |options: ZipWriterOptions| {
            let mut w = ZipWriter::with_options(Cursor::new(Vec::new()), options).unwrap();
            for e in zip.entries() {
                w.write_entry(&e.name, &zip.read(&buf, e).unwrap()).unwrap();
            }
            w.finish().unwrap().into_inner()
        };
        assert!(rewrite(ZipWriterOptions::default()) == buf, "{name}");

        let mut options = ZipWriterOptions::default();
        options.always_zip64_end = false;
        let ours = rewrite(options);
        let cd_end = ours.len() - 22;
        assert_eq!(ours[..cd_end], buf[..cd_end], "{name}");
        assert_eq!(u32_at(&buf, cd_end), 0x0606_4b50);
        assert_eq!(ours.len(), buf.len() - 56 - 20);
        assert_eq!(ours[cd_end..], buf[buf.len() - 22..]);
    }
}

/// Runs Python's `zipfile` on `path`: `testzip()` must return None, and every
/// entry must match `expected` (name, bytes via CRC-32). Skipped, with a note,
/// where python3 is missing.
fn python_check(path: &Path, expected: &[(String, Vec<u8>)]) {
    const SCRIPT: &str = r#"
import sys, zipfile, zlib
with zipfile.ZipFile(sys.argv[1]) as z:
    bad = z.testzip()
    assert bad is None, "testzip: " + repr(bad)
    for i in z.infolist():
        d = z.read(i)
        assert len(d) == i.file_size and zlib.crc32(d) == i.CRC
        print(i.filename.encode().hex(), len(d), "%08x" % zlib.crc32(d))
"#;
    let output = match Command::new("python3")
        .arg("-c")
        .arg(SCRIPT)
        .arg(path)
        .output()
    {
        Ok(o) => o,
        Err(e) => {
            eprintln!("note: python3 not available ({e}); skipping the zipfile cross-check");
            return;
        }
    };
    assert!(
        output.status.success(),
        "python zipfile failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let lines: Vec<String> = String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    let want: Vec<String> = expected
        .iter()
        .map(|(name, data)| {
            let hex: String = name.bytes().map(|b| format!("{b:02x}")).collect();
            format!("{hex} {} {:08x}", data.len(), crc32fast::hash(data))
        })
        .collect();
    assert_eq!(lines, want);
}

fn sample_entries() -> Vec<(String, Vec<u8>)> {
    let pattern = |n: usize| -> Vec<u8> {
        (0..n)
            .map(|i| u8::try_from((i * 7 + i / 251) % 256).unwrap())
            .collect()
    };
    vec![
        ("archive/data.pkl".into(), b"\x80\x02}q\x00.".to_vec()),
        ("archive/.format_version".into(), b"1".to_vec()),
        ("archive/data/0".into(), pattern(1000)),
        ("archive/data/1".into(), Vec::new()),
        ("archive/data/2".into(), pattern(63)),
        ("archive/data/3".into(), pattern(64)),
        ("archive/data/4".into(), pattern(65)),
        ("archive/data/5".into(), pattern(100_000)),
        ("archive/data/6".into(), Vec::new()),
        ("archive/ünï/名前".into(), b"utf-8 name".to_vec()),
    ]
}

/// Writes `entries`, alternating the sized one-shot call and the unsized
/// streaming calls (in 7-byte chunks).
fn write_entries<W: Write + Seek>(w: &mut ZipWriter<W>, entries: &[(String, Vec<u8>)]) {
    for (i, (name, data)) in entries.iter().enumerate() {
        if i % 2 == 0 {
            w.write_entry(name, data).unwrap();
        } else {
            w.start_entry(name).unwrap();
            for chunk in data.chunks(7) {
                w.write(chunk).unwrap();
            }
            w.finish_entry().unwrap();
        }
    }
}

fn write_archive(entries: &[(String, Vec<u8>)], options: ZipWriterOptions) -> Vec<u8> {
    let mut w = ZipWriter::with_options(Cursor::new(Vec::new()), options).unwrap();
    write_entries(&mut w, entries);
    w.finish().unwrap().into_inner()
}

fn check_roundtrip(buf: &[u8], entries: &[(String, Vec<u8>)], alignment: usize) -> ZipArchive {
    let zip = parse(buf).unwrap();
    let got: Vec<&str> = names(&zip);
    let want: Vec<&str> = entries.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(got, want);
    for ((name, data), e) in entries.iter().zip(zip.entries()) {
        assert_eq!(e.method, Method::Stored);
        assert_eq!(e.data.start % alignment, 0, "{name} not aligned");
        assert_eq!(e.crc32, crc32fast::hash(data));
        let read = zip.read_verified(buf, e).unwrap();
        assert!(matches!(read, Cow::Borrowed(_)));
        assert_eq!(&*read, data.as_slice(), "{name}");
        assert_eq!(zip.find(name), Some(e));
    }
    zip
}

#[test]
fn writer_roundtrip_and_python() {
    let entries = sample_entries();
    let buf = write_archive(&entries, ZipWriterOptions::default());
    let zip = check_roundtrip(&buf, &entries, 64);

    // torch's local header: version 0, flags 0x0808 (0x0800 for a sized empty
    // entry), everything else 0, then the name and an `FB` field.
    for (i, e) in zip.entries().iter().enumerate() {
        let h = usize::try_from(e.header_offset).unwrap();
        assert_eq!(u16_at(&buf, h + 4), 0, "version");
        let sized_empty = i % 2 == 0 && e.uncompressed_size == 0;
        let flags = if sized_empty { 0x0800 } else { 0x0808 };
        assert_eq!(u16_at(&buf, h + 6), flags, "{}", e.name);
        assert_eq!(buf[h + 8..h + 26], [0; 18]);
        let extra = h + 30 + e.name.len();
        assert_eq!(&buf[extra..extra + 2], b"FB");
        let padding = usize::from(u16_at(&buf, extra + 2));
        assert!(
            buf[extra + 4..extra + 4 + padding]
                .iter()
                .all(|&b| b == b'Z')
        );
        assert_eq!(extra + 4 + padding, e.data.start);
        // Streamed entries reserve room for a ZIP64 field.
        assert!(i % 2 == 0 || padding >= 20);
        if flags == 0x0808 {
            let d = e.data.end;
            assert_eq!(u32_at(&buf, d), 0x0807_4b50);
            assert_eq!(u32_at(&buf, d + 4), e.crc32);
            assert_eq!(u64::from(u32_at(&buf, d + 8)), e.compressed_size);
        }
    }
    // The ZIP64 end record and locator are there, as torch writes them, with
    // the real values in the classic record too.
    assert_eq!(u32_at(&buf, buf.len() - 22), 0x0605_4b50);
    assert_eq!(u16_at(&buf, buf.len() - 12), 10);
    assert_eq!(u32_at(&buf, buf.len() - 42), 0x0706_4b50);
    assert_eq!(u32_at(&buf, buf.len() - 98), 0x0606_4b50);
    let mut options = ZipWriterOptions::default();
    options.always_zip64_end = false;
    let classic = write_archive(&entries, options);
    assert_eq!(classic.len(), buf.len() - 76);
    assert_ne!(u32_at(&classic, classic.len() - 42), 0x0706_4b50);
    check_roundtrip(&classic, &entries, 64);

    let path = tmp_path("roundtrip.zip");
    std::fs::write(&path, &buf).unwrap();
    python_check(&path, &entries);
    std::fs::remove_file(&path).unwrap();
}

#[test]
fn writer_into_atomic_file() {
    let entries = sample_entries();
    let path = tmp_path("atomic.pt");
    let mut w = ZipWriter::new(AtomicFile::create(&path).unwrap());
    write_entries(&mut w, &entries);
    w.finish().unwrap().commit().unwrap();
    let buf = std::fs::read(&path).unwrap();
    check_roundtrip(&buf, &entries, 64);
    python_check(&path, &entries);
    std::fs::remove_file(&path).unwrap();
}

#[test]
fn writer_forced_zip64() {
    let entries = sample_entries();
    let mut options = ZipWriterOptions::default();
    options.force_zip64 = true;
    let buf = write_archive(&entries, options);
    let zip = check_roundtrip(&buf, &entries, 64);

    // End records: classic fields all sentinels, locator, ZIP64 record.
    let eocd = buf.len() - 22;
    assert_eq!(u16_at(&buf, eocd + 10), 0xFFFF);
    assert_eq!(u32_at(&buf, eocd + 12), 0xFFFF_FFFF);
    assert_eq!(u32_at(&buf, eocd + 16), 0xFFFF_FFFF);
    let locator = eocd - 20;
    assert_eq!(u32_at(&buf, locator), 0x0706_4b50);
    let record = usize::try_from(u64_at(&buf, locator + 8)).unwrap();
    assert_eq!(u32_at(&buf, record), 0x0606_4b50);
    assert_eq!(u64_at(&buf, record + 32), 10);
    // Every local header has a ZIP64 field (size, 0, offset) before the
    // padding; the header's own version and sizes stay 0, as miniz writes them.
    for e in zip.entries() {
        let h = usize::try_from(e.header_offset).unwrap();
        assert_eq!(u16_at(&buf, h + 4), 0);
        assert_eq!(u64_at(&buf, h + 18), 0);
        let extra = h + 30 + e.name.len();
        assert_eq!((u16_at(&buf, extra), u16_at(&buf, extra + 2)), (1, 24));
        assert_eq!(u64_at(&buf, extra + 20), e.header_offset);
        assert_eq!(&buf[extra + 28..extra + 30], b"FB");
        if e.uncompressed_size > 0 {
            // 64-bit sizes in the data descriptor.
            assert_eq!(u64_at(&buf, e.data.end + 8), e.compressed_size);
            assert_eq!(u64_at(&buf, e.data.end + 16), e.uncompressed_size);
        }
    }

    let path = tmp_path("zip64.zip");
    std::fs::write(&path, &buf).unwrap();
    python_check(&path, &entries);
    std::fs::remove_file(&path).unwrap();
}

#[test]
fn writer_alignment_option() {
    let entries = sample_entries();
    for alignment in [1, 2, 4096] {
        let mut options = ZipWriterOptions::default();
        options.alignment = alignment;
        let buf = write_archive(&entries, options);
        check_roundtrip(&buf, &entries, usize::try_from(alignment).unwrap());
    }
    for alignment in [0, 3, 100, 65536] {
        let mut options = ZipWriterOptions::default();
        options.alignment = alignment;
        let err = ZipWriter::with_options(Cursor::new(Vec::new()), options).unwrap_err();
        assert!(matches!(err, ZipError::BadAlignment { alignment: a } if a == alignment));
    }
}

#[test]
fn writer_misuse() {
    let mut w = ZipWriter::new(Cursor::new(Vec::new()));
    assert!(matches!(w.write(b"x"), Err(ZipError::NoEntryOpen)));
    assert!(matches!(w.finish_entry(), Err(ZipError::NoEntryOpen)));
    for name in ["../evil", "/abs", "a\\b", "", "a/./b"] {
        assert!(
            matches!(w.start_entry(name), Err(ZipError::UnsafeName { .. })),
            "{name:?}"
        );
    }
    let long = "x".repeat(70_000);
    assert!(matches!(
        w.start_entry(&long),
        Err(ZipError::NameTooLong { len: 70_000 })
    ));
    w.write_entry("a", b"1").unwrap();
    assert!(matches!(
        w.write_entry("a", b"2"),
        Err(ZipError::DuplicateName { .. })
    ));
    w.start_entry("b").unwrap();
    assert!(matches!(
        w.start_entry("c"),
        Err(ZipError::EntryStillOpen { .. })
    ));
    w.finish_entry().unwrap();
    w.start_entry("c").unwrap();
    assert!(matches!(w.finish(), Err(ZipError::EntryStillOpen { .. })));

    // A sized entry must get exactly its size; after that the writer refuses
    // to go on rather than write an inconsistent archive.
    let mut w = ZipWriter::new(Cursor::new(Vec::new()));
    w.start_entry_sized("short", 4).unwrap();
    w.write(b"abc").unwrap();
    assert!(matches!(
        w.finish_entry(),
        Err(ZipError::WrittenSizeMismatch {
            declared: 4,
            written: 3,
            ..
        })
    ));
    assert!(matches!(
        w.write_entry("x", b""),
        Err(ZipError::WriterFailed)
    ));
    let mut w = ZipWriter::new(Cursor::new(Vec::new()));
    w.start_entry_sized("long", 2).unwrap();
    assert!(matches!(
        w.write(b"abc"),
        Err(ZipError::WrittenSizeMismatch {
            declared: 2,
            written: 3,
            ..
        })
    ));

    // An empty archive is valid.
    let buf = ZipWriter::new(Cursor::new(Vec::new()))
        .finish()
        .unwrap()
        .into_inner();
    assert!(parse(&buf).unwrap().is_empty());
}

/// The contents `make_zips.py` writes.
fn py_contents() -> Vec<(String, Vec<u8>, Method)> {
    vec![
        (
            "hello.txt".into(),
            b"hello world\n".repeat(100),
            Method::Deflated,
        ),
        ("zeros.bin".into(), vec![0; 65536], Method::Deflated),
        (
            "pattern.bin".into(),
            (0..10000u64)
                .map(|i| u8::try_from((i * i * 31 + 7) % 251).unwrap())
                .collect(),
            Method::Deflated,
        ),
        ("stored.bin".into(), (0..=255).collect(), Method::Stored),
        (
            "dir/nested.txt".into(),
            b"nested file\n".to_vec(),
            Method::Deflated,
        ),
        ("empty.txt".into(), Vec::new(), Method::Deflated),
    ]
}

#[test]
fn python_deflated_archives() {
    for file in [
        "zip/deflated.zip",
        "zip/deflated-stream.zip",
        "zip/zip64-local.zip",
    ] {
        let buf = fixture(file);
        let zip = parse(&buf).unwrap_or_else(|e| panic!("{file}: {e}"));
        let want = py_contents();
        assert_eq!(zip.len(), want.len(), "{file}");
        for ((name, data, method), e) in want.iter().zip(zip.entries()) {
            assert_eq!(&e.name, name, "{file}");
            assert_eq!(e.method, *method, "{file} {name}");
            let read = zip.read(&buf, e).unwrap();
            assert_eq!(&*read, data.as_slice(), "{file} {name}");
            assert_eq!(matches!(read, Cow::Borrowed(_)), *method == Method::Stored);
            zip.read_verified(&buf, e).unwrap();
        }
    }
}

// ---------------------------------------------------------------------------
// Malicious archives, built byte by byte.

/// One entry of a hand-built archive; the `local_*` fields make the local
/// header lie.
#[derive(Clone)]
struct Spec {
    name: Vec<u8>,
    method: u16,
    flags: u16,
    /// The bytes stored in the file (compressed for method 8).
    data: Vec<u8>,
    crc: u32,
    compressed: u32,
    uncompressed: u32,
    local_name: Option<Vec<u8>>,
    local_method: Option<u16>,
    local_crc: Option<u32>,
}

impl Spec {
    fn stored(name: &str, data: &[u8]) -> Self {
        let len = u32::try_from(data.len()).unwrap();
        Self {
            name: name.as_bytes().to_vec(),
            method: 0,
            flags: 0,
            data: data.to_vec(),
            crc: crc32fast::hash(data),
            compressed: len,
            uncompressed: len,
            local_name: None,
            local_method: None,
            local_crc: None,
        }
    }

    fn deflated(name: &str, raw: &[u8]) -> Self {
        let data = miniz_oxide::deflate::compress_to_vec(raw, 9);
        Self {
            method: 8,
            compressed: u32::try_from(data.len()).unwrap(),
            uncompressed: u32::try_from(raw.len()).unwrap(),
            crc: crc32fast::hash(raw),
            data,
            ..Self::stored(name, b"")
        }
    }

    fn local(&self) -> Vec<u8> {
        let name = self.local_name.as_ref().unwrap_or(&self.name);
        let mut h = Vec::new();
        h.extend(0x0403_4b50u32.to_le_bytes());
        h.extend(20u16.to_le_bytes());
        h.extend(self.flags.to_le_bytes());
        h.extend(self.local_method.unwrap_or(self.method).to_le_bytes());
        h.extend([0; 4]);
        h.extend(self.local_crc.unwrap_or(self.crc).to_le_bytes());
        h.extend(self.compressed.to_le_bytes());
        h.extend(self.uncompressed.to_le_bytes());
        h.extend(u16::try_from(name.len()).unwrap().to_le_bytes());
        h.extend(0u16.to_le_bytes());
        h.extend(name);
        h
    }

    fn central(&self, offset: usize) -> Vec<u8> {
        let mut h = Vec::new();
        h.extend(0x0201_4b50u32.to_le_bytes());
        h.extend(20u16.to_le_bytes());
        h.extend(20u16.to_le_bytes());
        h.extend(self.flags.to_le_bytes());
        h.extend(self.method.to_le_bytes());
        h.extend([0; 4]);
        h.extend(self.crc.to_le_bytes());
        h.extend(self.compressed.to_le_bytes());
        h.extend(self.uncompressed.to_le_bytes());
        h.extend(u16::try_from(self.name.len()).unwrap().to_le_bytes());
        h.extend([0; 12]);
        h.extend(u32::try_from(offset).unwrap().to_le_bytes());
        h.extend(&self.name);
        h
    }
}

fn eocd(count: usize, cd_size: usize, cd_offset: usize) -> Vec<u8> {
    let count = u16::try_from(count).unwrap();
    let mut e = Vec::new();
    e.extend(0x0605_4b50u32.to_le_bytes());
    e.extend([0; 4]);
    e.extend(count.to_le_bytes());
    e.extend(count.to_le_bytes());
    e.extend(u32::try_from(cd_size).unwrap().to_le_bytes());
    e.extend(u32::try_from(cd_offset).unwrap().to_le_bytes());
    e.extend([0; 2]);
    e
}

/// Local headers and data, then the central directory, then the EOCD.
fn build(specs: &[Spec]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut offsets = Vec::new();
    for s in specs {
        offsets.push(out.len());
        out.extend(s.local());
        out.extend(&s.data);
    }
    let cd_offset = out.len();
    for (s, &offset) in specs.iter().zip(&offsets) {
        out.extend(s.central(offset));
    }
    let cd_size = out.len() - cd_offset;
    out.extend(eocd(specs.len(), cd_size, cd_offset));
    out
}

fn expect_err(buf: &[u8], limits: &ZipLimits, what: &str, ok: impl Fn(&ZipError) -> bool) {
    match ZipArchive::parse(buf, limits) {
        Ok(_) => panic!("{what}: parsed"),
        Err(e) => assert!(ok(&e), "{what}: wrong error {e:?}"),
    }
}

#[test]
fn builder_makes_valid_archives() {
    let buf = build(&[Spec::stored("a", b"hello"), Spec::deflated("b", &[7; 5000])]);
    let zip = parse(&buf).unwrap();
    assert_eq!(
        &*zip.read_verified(&buf, entry(&zip, "a")).unwrap(),
        b"hello"
    );
    assert_eq!(
        &*zip.read(&buf, entry(&zip, "b")).unwrap(),
        vec![7; 5000].as_slice()
    );
}

#[test]
fn path_traversal_names() {
    for (name, reason) in [
        ("../evil", "`..` component"),
        ("/abs", "absolute path"),
        ("a/../../b", "`..` component"),
        ("a/..", "`..` component"),
        ("C:\\x", "backslash"),
        ("C:x", "drive letter"),
        ("a\\..\\b", "backslash"),
        ("a\0b", "NUL byte"),
        ("./a", "`.` component"),
        ("a//b", "empty component"),
        ("", "empty name"),
    ] {
        let buf = build(&[Spec::stored("ok", b"1"), Spec::stored(name, b"x")]);
        expect_err(
            &buf,
            &ZipLimits::default(),
            name,
            |e| matches!(e, ZipError::UnsafeName { name: n, reason: r } if n == name && *r == reason),
        );
    }
    let err = parse(&build(&[Spec::stored("../evil", b"x")])).unwrap_err();
    assert!(err.to_string().contains("\"../evil\""), "{err}");
    assert!(err.to_string().contains("path traversal"), "{err}");
    // A folder entry and dotted file names are fine.
    parse(&build(&[
        Spec::stored("dir/", b""),
        Spec::stored("dir/.hidden..x", b"1"),
    ]))
    .unwrap();
}

#[test]
fn duplicate_names() {
    let buf = build(&[
        Spec::stored("a", b"1"),
        Spec::stored("b", b"2"),
        Spec::stored("a", b"3"),
    ]);
    expect_err(
        &buf,
        &ZipLimits::default(),
        "dup",
        |e| matches!(e, ZipError::DuplicateName { name } if name == "a"),
    );
}

#[test]
fn overlapping_entries() {
    // Entry "a"'s data is entry "b"'s local header and data: both headers are
    // real, but the bytes are shared (the overlapping-files zip bomb).
    let b = Spec::stored("b", b"payload");
    let mut inner = b.local();
    inner.extend(&b.data);
    let a = Spec::stored("a", &inner);
    let b_offset = a.local().len();
    let mut buf = a.local();
    buf.extend(&inner);
    let cd_offset = buf.len();
    buf.extend(a.central(0));
    buf.extend(b.central(b_offset));
    let cd_size = buf.len() - cd_offset;
    buf.extend(eocd(2, cd_size, cd_offset));
    expect_err(&buf, &ZipLimits::default(), "overlap", |e| {
        matches!(e, ZipError::OverlappingEntries { name, other, offset }
            if name == "b" && other == "a" && *offset == u64::try_from(b_offset).unwrap())
    });

    // Two records for the same local header: the names disagree first.
    let s = Spec::stored("x", b"data");
    let mut buf = s.local();
    buf.extend(&s.data);
    let cd_offset = buf.len();
    buf.extend(s.central(0));
    buf.extend(Spec::stored("y", b"data").central(0));
    let cd_size = buf.len() - cd_offset;
    buf.extend(eocd(2, cd_size, cd_offset));
    expect_err(
        &buf,
        &ZipLimits::default(),
        "shared header",
        |e| matches!(e, ZipError::LocalHeaderMismatch { name, field: "name", .. } if name == "y"),
    );
}

#[test]
fn entry_inside_central_directory() {
    // The central directory comes first and its entry's local header after it.
    let s = Spec::stored("a", b"data");
    let central = s.central(s.central(0).len());
    let mut buf = central.clone();
    buf.extend(s.local());
    buf.extend(&s.data);
    buf.extend(eocd(1, central.len(), 0));
    expect_err(
        &buf,
        &ZipLimits::default(),
        "after cd",
        |e| matches!(e, ZipError::OverlapsCentralDirectory { name, directory: 0, .. } if name == "a"),
    );
}

#[test]
fn zip_bombs() {
    let zeros = vec![0u8; 1 << 20];
    // Declares 1000 bytes but inflates to 1 MiB.
    let mut s = Spec::deflated("bomb", &zeros);
    s.uncompressed = 1000;
    s.crc = crc32fast::hash(&zeros[..1000]);
    let buf = build(&[s]);
    let zip = parse(&buf).unwrap();
    let err = zip.read(&buf, &zip.entries()[0]).unwrap_err();
    assert!(
        matches!(err, ZipError::InflateOverflow { ref name, declared: 1000 } if name == "bomb"),
        "{err:?}"
    );

    // Declares more than the stream holds.
    let mut s = Spec::deflated("short", &zeros);
    s.uncompressed += 10;
    let buf = build(&[s]);
    let zip = parse(&buf).unwrap();
    assert!(matches!(
        zip.read(&buf, &zip.entries()[0]),
        Err(ZipError::DecompressedSizeMismatch {
            declared: 1_048_586,
            found: 1_048_576,
            ..
        })
    ));

    // About 1000:1 is honest deflate, but over a configured 100:1 limit.
    let buf = build(&[Spec::deflated("ratio", &zeros)]);
    parse(&buf).unwrap();
    let mut limits = ZipLimits::default();
    limits.max_ratio = 100;
    expect_err(
        &buf,
        &limits,
        "ratio",
        |e| matches!(e, ZipError::RatioExceeded { name, max_ratio: 100, uncompressed: 1_048_576, .. } if name == "ratio"),
    );
    // A declared size no deflate stream could reach, with the default limits:
    // refused before allocating.
    let mut s = Spec::deflated("liar", b"tiny");
    s.uncompressed = 0xFFFF_FFF0;
    expect_err(&build(&[s]), &ZipLimits::default(), "liar", |e| {
        matches!(e, ZipError::RatioExceeded { .. })
    });
    let mut limits = ZipLimits::default();
    limits.max_uncompressed = 1000;
    expect_err(&buf, &limits, "max size", |e| {
        matches!(
            e,
            ZipError::UncompressedTooLarge {
                max: 1000,
                size: 1_048_576,
                ..
            }
        )
    });
}

#[test]
fn corrupt_deflate_and_crc() {
    let mut s = Spec::deflated("garbage", b"whatever");
    s.data = vec![0xff; 8];
    s.compressed = 8;
    let buf = build(&[s]);
    let zip = parse(&buf).unwrap();
    assert!(matches!(
        zip.read(&buf, &zip.entries()[0]),
        Err(ZipError::DeflateCorrupt { .. })
    ));

    let mut s = Spec::deflated("truncated", &[5; 3000]);
    s.data.truncate(s.data.len() / 2);
    s.compressed = u32::try_from(s.data.len()).unwrap();
    let buf = build(&[s]);
    let zip = parse(&buf).unwrap();
    assert!(matches!(
        zip.read(&buf, &zip.entries()[0]),
        Err(ZipError::DeflateCorrupt { .. })
    ));

    let mut s = Spec::deflated("trailing", b"abc");
    s.data.extend(b"junk");
    s.compressed += 4;
    let buf = build(&[s]);
    let zip = parse(&buf).unwrap();
    assert!(matches!(
        zip.read(&buf, &zip.entries()[0]),
        Err(ZipError::DeflateCorrupt { .. })
    ));

    let mut s = Spec::deflated("crc", b"abc");
    s.crc ^= 1;
    let buf = build(&[s]);
    let zip = parse(&buf).unwrap();
    assert!(matches!(
        zip.read(&buf, &zip.entries()[0]),
        Err(ZipError::CrcMismatch { .. })
    ));

    // Stored: CRC-32 checked by read_verified, or by read with verify_crc.
    let mut s = Spec::stored("stored", b"abc");
    s.crc ^= 1;
    let buf = build(&[s]);
    let zip = parse(&buf).unwrap();
    assert_eq!(&*zip.read(&buf, &zip.entries()[0]).unwrap(), b"abc");
    let err = zip.read_verified(&buf, &zip.entries()[0]).unwrap_err();
    assert!(
        matches!(err, ZipError::CrcMismatch { ref name, found, expected } if name == "stored" && found == crc32fast::hash(b"abc") && expected == found ^ 1),
        "{err:?}"
    );
    let mut limits = ZipLimits::default();
    limits.verify_crc = true;
    let zip = ZipArchive::parse(&buf, &limits).unwrap();
    assert!(matches!(
        zip.read(&buf, &zip.entries()[0]),
        Err(ZipError::CrcMismatch { .. })
    ));
    // An entry from another buffer.
    assert!(matches!(
        zip.read(b"short", &zip.entries()[0]),
        Err(ZipError::DataPastEnd { .. })
    ));
}

#[test]
fn header_lies() {
    let limits = ZipLimits::default();
    let mut s = Spec::stored("bz", b"x");
    s.method = 12;
    expect_err(
        &build(&[s]),
        &limits,
        "bzip2",
        |e| matches!(e, ZipError::UnsupportedMethod { name, method: 12 } if name == "bz"),
    );

    let mut s = Spec::stored("enc", b"x");
    s.flags = 1;
    expect_err(
        &build(&[s]),
        &limits,
        "encrypted",
        |e| matches!(e, ZipError::Encrypted { name } if name == "enc"),
    );

    let mut s = Spec::stored("real", b"x");
    s.local_name = Some(b"fake".to_vec());
    expect_err(
        &build(&[s]),
        &limits,
        "local name",
        |e| matches!(e, ZipError::LocalHeaderMismatch { name, field: "name", offset: 0 } if name == "real"),
    );

    let mut s = Spec::stored("m", b"x");
    s.local_method = Some(8);
    expect_err(&build(&[s]), &limits, "local method", |e| {
        matches!(
            e,
            ZipError::LocalHeaderMismatch {
                field: "compression method",
                ..
            }
        )
    });

    let mut s = Spec::stored("c", b"x");
    s.local_crc = Some(0);
    expect_err(&build(&[s]), &limits, "local crc", |e| {
        matches!(
            e,
            ZipError::LocalHeaderMismatch {
                field: "CRC-32",
                ..
            }
        )
    });

    let mut s = Spec::stored("sizes", b"x");
    s.uncompressed = 2;
    expect_err(&build(&[s]), &limits, "stored sizes", |e| {
        matches!(
            e,
            ZipError::StoredSizeMismatch {
                compressed: 1,
                uncompressed: 2,
                ..
            }
        )
    });

    let mut s = Spec::stored("big", b"x");
    s.compressed = 1_000_000;
    s.uncompressed = 1_000_000;
    expect_err(
        &build(&[s]),
        &limits,
        "past end",
        |e| matches!(e, ZipError::DataPastEnd { name, .. } if name == "big"),
    );

    let s = Spec {
        name: vec![b'a', 0xff, 0xfe],
        ..Spec::stored("", b"x")
    };
    expect_err(&build(&[s]), &limits, "utf-8", |e| {
        matches!(e, ZipError::NameNotUtf8 { .. })
    });

    // The local header's signature is wrong.
    let mut buf = build(&[Spec::stored("sig", b"x")]);
    buf[0] = b'X';
    expect_err(&buf, &limits, "local sig", |e| {
        matches!(
            e,
            ZipError::LocalHeaderMalformed {
                reason: "bad signature",
                ..
            }
        )
    });
}

#[test]
fn end_record_lies() {
    let limits = ZipLimits::default();
    let long = "a-rather-long-name-so-that-three-records-fit-the-size";
    let good = build(&[
        Spec::stored(&format!("{long}/1"), b"1"),
        Spec::stored(&format!("{long}/2"), b"2"),
    ]);
    parse(&good).unwrap();
    let eocd = good.len() - 22;
    let with = |at: usize, bytes: &[u8]| {
        let mut b = good.clone();
        b[eocd + at..eocd + at + bytes.len()].copy_from_slice(bytes);
        b
    };

    // More entries than the directory holds: one more, and far more.
    for count in [3u16, 1000] {
        let c = count.to_le_bytes();
        expect_err(
            &with(8, &[c[0], c[1], c[0], c[1]]),
            &limits,
            "count",
            |e| matches!(e, ZipError::EntryCountMismatch { declared, .. } if *declared == u64::from(count)),
        );
    }
    // Fewer: bytes left over.
    expect_err(&with(8, &[1, 0, 1, 0]), &limits, "count 1", |e| {
        matches!(e, ZipError::EntryCountMismatch { declared: 1, .. })
    });
    expect_err(&with(8, &[1, 0, 2, 0]), &limits, "disk count", |e| {
        matches!(e, ZipError::EocdMalformed { .. })
    });
    // Central directory offset past the end, and size past the EOCD.
    expect_err(
        &with(16, &0xFFFF_FF00u32.to_le_bytes()),
        &limits,
        "cd offset",
        |e| {
            matches!(
                e,
                ZipError::CentralDirectoryOutOfBounds {
                    offset: 0xFFFF_FF00,
                    ..
                }
            )
        },
    );
    expect_err(&with(12, &[0xff, 0xff, 0, 0]), &limits, "cd size", |e| {
        matches!(e, ZipError::CentralDirectoryOutOfBounds { .. })
    });
    expect_err(&with(4, &[1, 0]), &limits, "disk", |e| {
        matches!(e, ZipError::MultiDisk { disk: 1, .. })
    });
    let mut limits5 = ZipLimits::default();
    limits5.max_entries = 1;
    expect_err(&good, &limits5, "max entries", |e| {
        matches!(e, ZipError::TooManyEntries { count: 2, max: 1 })
    });

    // No EOCD: empty, junk, trailing bytes; a comment is fine.
    for buf in [Vec::new(), b"not a zip at all, just text".to_vec(), {
        let mut b = good.clone();
        b.extend(b"trailing");
        b
    }] {
        expect_err(&buf, &limits, "no eocd", |e| {
            matches!(e, ZipError::NoEndOfCentralDirectory { .. })
        });
    }
    let mut commented = with(20, &[5, 0]);
    commented.extend(b"hello");
    assert_eq!(parse(&commented).unwrap().len(), 2);
}

#[test]
fn zip64_end_record_lies() {
    let mut options = ZipWriterOptions::default();
    options.force_zip64 = true;
    let good = write_archive(&sample_entries(), options);
    let eocd = good.len() - 22;
    let locator = eocd - 20;
    let record = usize::try_from(u64_at(&good, locator + 8)).unwrap();
    let with = |at: usize, bytes: &[u8]| {
        let mut b = good.clone();
        b[at..at + bytes.len()].copy_from_slice(bytes);
        b
    };
    let limits = ZipLimits::default();
    expect_err(&with(record, b"PK\x09\x09"), &limits, "sig", |e| {
        matches!(
            e,
            ZipError::Zip64EocdMalformed {
                reason: "bad signature",
                ..
            }
        )
    });
    expect_err(&with(locator + 8, &[0xff; 8]), &limits, "locator", |e| {
        matches!(e, ZipError::Zip64EocdMalformed { .. })
    });
    expect_err(&with(locator + 16, &[2, 0, 0, 0]), &limits, "disks", |e| {
        matches!(e, ZipError::MultiDisk { disk: 2, .. })
    });
    expect_err(&with(record + 32, &[11]), &limits, "count", |e| {
        matches!(e, ZipError::Zip64EocdMalformed { .. })
    });
    expect_err(&with(record + 24, &[11]), &limits, "both counts", |e| {
        matches!(e, ZipError::Zip64EocdMalformed { .. })
    });
    expect_err(
        &with(
            record + 24,
            &[[11, 0, 0, 0, 0, 0, 0, 0], [11, 0, 0, 0, 0, 0, 0, 0]].concat(),
        ),
        &limits,
        "counts",
        |e| matches!(e, ZipError::EntryCountMismatch { declared: 11, .. }),
    );
    // A classic field that is not the sentinel must agree.
    expect_err(
        &with(eocd + 8, &[9, 0, 9, 0]),
        &limits,
        "classic count",
        |e| matches!(e, ZipError::EocdMalformed { .. }),
    );
}

#[test]
fn data_descriptor_lies() {
    let entries = vec![("a".to_string(), b"hello".to_vec())];
    let buf = write_archive(&entries, ZipWriterOptions::default());
    let zip = parse(&buf).unwrap();
    let d = zip.entries()[0].data.end;
    assert_eq!(u32_at(&buf, d), 0x0807_4b50);
    for at in [4, 8, 12] {
        let mut bad = buf.clone();
        bad[d + at] ^= 1;
        expect_err(
            &bad,
            &ZipLimits::default(),
            "descriptor",
            |e| matches!(e, ZipError::DataDescriptorMismatch { name, .. } if name == "a"),
        );
    }
}

#[test]
fn every_truncation_fails() {
    for file in [TORCH_VIEWS, "zip/deflated-stream.zip"] {
        let buf = fixture(file);
        for len in 0..buf.len() {
            assert!(parse(&buf[..len]).is_err(), "{file} truncated to {len}");
        }
    }
}

/// Flipping bits anywhere never panics: either an error, or an archive whose
/// entries read (or fail to read) cleanly.
#[test]
fn every_byte_flip_is_handled() {
    for file in [TORCH_VIEWS, "zip/deflated.zip", "zip/zip64-local.zip"] {
        let good = fixture(file);
        let mut parsed = 0;
        for at in 0..good.len() {
            for flip in [0x01, 0x80, 0xff] {
                let mut buf = good.clone();
                buf[at] ^= flip;
                if let Ok(zip) = parse(&buf) {
                    parsed += 1;
                    for e in zip.entries() {
                        let _ = zip.read_verified(&buf, e);
                    }
                }
            }
        }
        // Padding, data and ignored fields (times, attributes) can change.
        assert!(parsed > 0, "{file}");
    }
}

/// Entries of 4 GiB and more, written into a sparse file (the zeros become a
/// hole) and read back through a memory map: the ZIP64 fields, the local
/// header patch for a streamed entry, and a header offset past 4 GiB.
#[cfg(all(unix, target_pointer_width = "64"))]
#[test]
fn zip64_entries_over_4_gib() {
    use std::fs::File;
    use std::io::SeekFrom;
    use std::os::unix::fs::MetadataExt;

    /// Large writes (always zeros here) are skipped over, leaving holes.
    struct Holey(File);
    impl Write for Holey {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            if buf.len() >= 1 << 20 {
                self.0
                    .seek(SeekFrom::Current(i64::try_from(buf.len()).unwrap()))?;
                Ok(buf.len())
            } else {
                self.0.write(buf)
            }
        }
        fn flush(&mut self) -> std::io::Result<()> {
            self.0.flush()
        }
    }
    impl Seek for Holey {
        fn seek(&mut self, pos: SeekFrom) -> std::io::Result<u64> {
            self.0.seek(pos)
        }
    }

    // Skip where the file system cannot make holes.
    let probe = tmp_path("probe");
    {
        let mut f = File::create(&probe).unwrap();
        f.seek(SeekFrom::Start(64 << 20)).unwrap();
        f.write_all(b"x").unwrap();
    }
    let sparse = std::fs::metadata(&probe).unwrap().blocks() * 512 < 1 << 20;
    std::fs::remove_file(&probe).unwrap();
    if !sparse {
        eprintln!("note: no sparse files here; skipping the 4 GiB ZIP64 test");
        return;
    }

    let zeros = vec![0u8; 1 << 20];
    let big: u64 = (4 << 30) + 4; // 4 GiB of zeros, then "tail"
    let path = tmp_path("big.zip");
    let mut w = ZipWriter::new(Holey(File::create(&path).unwrap()));
    w.write_entry("first", b"before").unwrap();
    w.start_entry("big/streamed").unwrap();
    for _ in 0..4096 {
        w.write(&zeros).unwrap();
    }
    w.write(b"tail").unwrap();
    w.finish_entry().unwrap();
    w.start_entry_sized("big/sized", big).unwrap();
    for _ in 0..4096 {
        w.write(&zeros).unwrap();
    }
    w.write(b"tail").unwrap();
    w.finish_entry().unwrap();
    // Streamed again, but now the offset already needs ZIP64.
    w.start_entry("big/streamed-far").unwrap();
    for _ in 0..4096 {
        w.write(&zeros).unwrap();
    }
    w.write(b"tail").unwrap();
    w.finish_entry().unwrap();
    w.write_entry("after", b"past 12 GiB").unwrap();
    w.finish().unwrap();

    let file = File::open(&path).unwrap();
    assert!(file.metadata().unwrap().blocks() * 512 < 64 << 20);
    // SAFETY: the file is private to this test and nothing else writes it.
    let map = unsafe { memmap2::Mmap::map(&file) }.unwrap();
    let buf: &[u8] = &map;
    let zip = parse(buf).unwrap();
    assert_eq!(
        names(&zip),
        [
            "first",
            "big/streamed",
            "big/sized",
            "big/streamed-far",
            "after"
        ]
    );
    let tail_crc = {
        let mut h = crc32fast::Hasher::new();
        for _ in 0..4096 {
            h.update(&zeros);
        }
        h.update(b"tail");
        h.finalize()
    };
    for name in ["big/streamed", "big/sized", "big/streamed-far"] {
        let e = entry(&zip, name);
        assert_eq!(e.uncompressed_size, big);
        assert_eq!(e.crc32, tail_crc);
        assert_eq!(e.data.start % 64, 0);
        let data = zip.read(buf, e).unwrap();
        assert_eq!(u64::try_from(data.len()).unwrap(), big);
        assert_eq!(&data[data.len() - 4..], b"tail");
        // Local header as miniz writes it: version and sizes 0, a ZIP64
        // field (size, 0 and, past 4 GiB, the header offset), then FB; a
        // 24-byte data descriptor with 64-bit sizes.
        let h = usize::try_from(e.header_offset).unwrap();
        assert_eq!(u16_at(buf, h + 4), 0, "{name}");
        assert_eq!(u64_at(buf, h + 18), 0);
        let extra = h + 30 + name.len();
        let far = e.header_offset >= 0xFFFF_FFFF;
        assert_eq!(name != "big/streamed", far);
        let len = if far { 24 } else { 16 };
        assert_eq!((u16_at(buf, extra), u16_at(buf, extra + 2)), (1, len));
        assert_eq!(u64_at(buf, extra + 4), big);
        assert_eq!(u64_at(buf, extra + 12), 0);
        if far {
            assert_eq!(u64_at(buf, extra + 20), e.header_offset);
        }
        let fb = extra + 4 + usize::from(len);
        assert_eq!(&buf[fb..fb + 2], b"FB");
        assert_eq!(u32_at(buf, e.data.end), 0x0807_4b50);
        assert_eq!(u64_at(buf, e.data.end + 8), big);
        assert_eq!(u64_at(buf, e.data.end + 16), big);
    }
    // A small entry past 4 GiB: the local ZIP64 field holds only its offset,
    // and its data descriptor still has 64-bit sizes.
    let after = entry(&zip, "after");
    assert!(after.header_offset > 12 << 30);
    let extra = usize::try_from(after.header_offset).unwrap() + 30 + 5;
    assert_eq!((u16_at(buf, extra), u16_at(buf, extra + 2)), (1, 8));
    assert_eq!(u64_at(buf, extra + 4), after.header_offset);
    assert_eq!(u64_at(buf, after.data.end + 16), 11);
    assert_eq!(&*zip.read_verified(buf, after).unwrap(), b"past 12 GiB");
    assert_eq!(
        &*zip.read_verified(buf, entry(&zip, "first")).unwrap(),
        b"before"
    );
    // The end records needed ZIP64 (the directory starts past 4 GiB).
    assert_eq!(u32_at(buf, buf.len() - 42), 0x0706_4b50);

    // Python agrees on the layout (reading 12 GiB of zeros would be slow, so
    // only the small entries' bytes are checked).
    let script = r#"
import sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z:
    print([(i.filename, i.file_size, i.CRC) for i in z.infolist()])
    print(z.read("first"), z.read("after"))
"#;
    match Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(&path)
        .output()
    {
        Ok(out) => {
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            let want = format!(
                "[('first', 6, {}), ('big/streamed', {big}, {tail_crc}), ('big/sized', {big}, {tail_crc}), ('big/streamed-far', {big}, {tail_crc}), ('after', 11, {})]\nb'before' b'past 12 GiB'\n",
                crc32fast::hash(b"before"),
                crc32fast::hash(b"past 12 GiB"),
            );
            assert_eq!(String::from_utf8(out.stdout).unwrap(), want);
        }
        Err(e) => eprintln!("note: python3 not available ({e}); skipping the zipfile cross-check"),
    }
    drop(map);
    std::fs::remove_file(&path).unwrap();
}
