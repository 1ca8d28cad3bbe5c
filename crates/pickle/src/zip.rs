//! A minimal, strict ZIP container for PyTorch checkpoints.
//!
//! `torch.save` (since 1.6) writes a plain ZIP archive through miniz
//! (`caffe2/serialize/inline_container.cc`, `PyTorchStreamWriter`). A checkpoint
//! is untrusted input, so this module reads only what torch (and Python's
//! `zipfile`) write and rejects everything else with a typed [`ZipError`] that
//! names the entry and the byte offset. It never panics, never indexes with a
//! length read from the file, and allocates nothing from a declared count or
//! size before checking it against the bytes actually present and the
//! [`ZipLimits`].
//!
//! # What torch writes
//!
//! Observed in checkpoints written by torch 2.x (and mirrored by [`ZipWriter`]):
//!
//! * Every record sits under one top-level folder (`archive/`, or the file
//!   stem): `data.pkl`, `.format_version`, `.storage_alignment`, `byteorder`,
//!   `data/0`, `data/1`, …, `version`, `.data/serialization_id`.
//! * Every entry is *stored* (method 0), never deflated.
//! * Local header: version needed 0, flags `0x0808` (bit 3: CRC and sizes
//!   follow in a data descriptor; bit 11: UTF-8 name), time and date 0, CRC
//!   and both sizes 0. Empty records have flags `0x0800` and no descriptor.
//! * The local extra field holds one `FB` field (id `0x4246`) filled with `Z`
//!   bytes so that the data starts at a multiple of 64 bytes (an `FB` field
//!   with 0 bytes of padding is still written).
//! * When the size or the header offset reaches `0xFFFFFFFF`, a ZIP64 field
//!   (id `0x0001`) precedes `FB` in the local header, the way miniz writes it:
//!   the uncompressed size and a compressed size of 0 if the size needs it,
//!   then the header offset if that needs it (not standard: a local header
//!   has no offset field). The header's own size fields and version stay 0.
//! * After the data, a data descriptor: `PK\x07\x08`, CRC-32 and the two sizes
//!   (4 bytes each, 8 bytes each when the local header has a ZIP64 field).
//! * Central directory: versions 0, the same flags, sizes and offset clamped
//!   to `0xFFFFFFFF` with the real values in a ZIP64 field where needed, no
//!   other extra field, no comments, attributes 0.
//! * torch asks miniz for ZIP64 support, so it *always* ends with a ZIP64
//!   end-of-central-directory record (version made by `0x031E`, needed 45)
//!   and locator (1 disk) before the classic end-of-central-directory record,
//!   whose fields are clamped to `0xFFFF` / `0xFFFFFFFF`.
//!
//! # Reading
//!
//! [`ZipArchive::parse`] borrows nothing: it validates the whole layout of a
//! `&[u8]` (a `Vec` or a memory map, the caller's choice) and records where each
//! entry's bytes are. [`ZipArchive::read`] then returns a stored entry as a
//! borrowed slice of that buffer (zero copy) or inflates a deflated one.
//!
//! Checked at parse time: the end-of-central-directory record (found by
//! scanning back at most 65,557 bytes, its comment must reach the end of the
//! file exactly) and its ZIP64 counterparts, single-disk only, the entry count
//! against [`ZipLimits::max_entries`] and against the directory size, every
//! central record, UTF-8 and path-safe names (no absolute paths, `..`, `.` or
//! empty components, backslashes, NUL bytes or drive letters), no duplicate
//! names, only stored or deflated entries, no encryption, every local header
//! against its central record (signature, name, method, and the CRC and sizes
//! or the data descriptor), data inside the file and before the central
//! directory, no two entries overlapping (the overlapping-entries zip bomb),
//! and for deflated entries the declared size against
//! [`ZipLimits::max_uncompressed`] and [`ZipLimits::max_ratio`].
//!
//! # Writing
//!
//! [`ZipWriter`] writes stored entries exactly as above, streaming the data in
//! chunks, so memory use does not grow with the entry size; with the default
//! options its files are byte-for-byte what torch writes for the same records.
//! ZIP64 fields in local headers and central records are written only when a
//! size or offset does not fit in 32 bits (or when
//! [`ZipWriterOptions::force_zip64`] asks for them everywhere); the ZIP64 end
//! record is written always, as torch does, unless
//! [`ZipWriterOptions::always_zip64_end`] is turned off, and then only when the
//! entry count or the directory's size or offset needs it.

use std::borrow::Cow;
use std::collections::HashSet;
use std::fmt;
use std::io::{self, BufWriter, Seek, SeekFrom, Write};
use std::ops::Range;

use miniz_oxide::inflate::TINFLStatus;
use miniz_oxide::inflate::core::{DecompressorOxide, decompress, inflate_flags};

const LOCAL_SIG: u32 = 0x0403_4b50;
const CENTRAL_SIG: u32 = 0x0201_4b50;
const EOCD_SIG: u32 = 0x0605_4b50;
const ZIP64_EOCD_SIG: u32 = 0x0606_4b50;
const ZIP64_LOCATOR_SIG: u32 = 0x0706_4b50;
const DESCRIPTOR_SIG: u32 = 0x0807_4b50;

const LOCAL_LEN: usize = 30;
const CENTRAL_LEN: usize = 46;
const EOCD_LEN: usize = 22;
const ZIP64_EOCD_LEN: usize = 56;
const ZIP64_LOCATOR_LEN: usize = 20;
/// The longest EOCD comment, so the farthest the EOCD can be from the end.
const MAX_COMMENT: usize = 0xFFFF;

const U16_MAX: u16 = 0xFFFF;
const U32_MAX: u32 = 0xFFFF_FFFF;
const U32_MAX_64: u64 = 0xFFFF_FFFF;

const ZIP64_EXTRA_ID: u16 = 0x0001;
/// torch's alignment padding field, the bytes `FB`.
const PADDING_EXTRA_ID: u16 = 0x4246;

const FLAG_ENCRYPTED: u16 = 0x0001;
const FLAG_DESCRIPTOR: u16 = 0x0008;
const FLAG_STRONG_ENCRYPTION: u16 = 0x0040;
const FLAG_UTF8: u16 = 0x0800;
const FLAG_MASKED_DIRECTORY: u16 = 0x2000;
const ENCRYPTION_FLAGS: u16 = FLAG_ENCRYPTED | FLAG_STRONG_ENCRYPTION | FLAG_MASKED_DIRECTORY;

const METHOD_STORED: u16 = 0;
const METHOD_DEFLATED: u16 = 8;

/// "Version needed to extract" in the ZIP64 end record (4.5).
const VERSION_ZIP64: u16 = 45;
/// torch writes version 0 everywhere except the ZIP64 end record.
const VERSION_TORCH: u16 = 0;
/// "Version made by" in torch's ZIP64 end record: Unix (3), spec 3.0 (miniz).
const ZIP64_END_MADE_BY: u16 = 0x031E;

/// Errors from reading or writing a ZIP archive.
///
/// Every variant says what was wrong and where: a byte offset into the file,
/// an entry name, or both.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ZipError {
    /// No end-of-central-directory record whose comment reaches the end of
    /// the file: not a ZIP archive, or truncated.
    #[error("no end-of-central-directory record in the last {scanned} bytes of a {len}-byte file")]
    NoEndOfCentralDirectory {
        /// File length.
        len: u64,
        /// How many trailing bytes were searched.
        scanned: u64,
    },
    /// The end-of-central-directory record is inconsistent.
    #[error("end-of-central-directory record at offset {offset}: {reason}")]
    EocdMalformed {
        /// Offset of the record.
        offset: u64,
        /// What is wrong.
        reason: &'static str,
    },
    /// The ZIP64 end-of-central-directory record or locator is inconsistent.
    #[error("ZIP64 end-of-central-directory at offset {offset}: {reason}")]
    Zip64EocdMalformed {
        /// Offset of the record or locator.
        offset: u64,
        /// What is wrong.
        reason: &'static str,
    },
    /// A record refers to a disk other than the first: split and spanned
    /// archives are not supported.
    #[error(
        "record at offset {offset} refers to disk {disk}: multi-disk archives are not supported"
    )]
    MultiDisk {
        /// Offset of the record.
        offset: u64,
        /// The disk number (or disk count) found.
        disk: u64,
    },
    /// The central directory does not lie inside the file, before the end
    /// records.
    #[error(
        "central directory ({size} bytes at offset {offset}) does not fit before offset {limit}"
    )]
    CentralDirectoryOutOfBounds {
        /// Declared offset.
        offset: u64,
        /// Declared size.
        size: u64,
        /// Where the directory must end at the latest.
        limit: u64,
    },
    /// More entries than [`ZipLimits::max_entries`].
    #[error("archive declares {count} entries, more than the limit of {max}")]
    TooManyEntries {
        /// Declared count.
        count: u64,
        /// The limit.
        max: u64,
    },
    /// The declared entry count does not match the central directory.
    #[error(
        "archive declares {declared} entries, but the central directory ({size} bytes at offset {offset}) holds a different number"
    )]
    EntryCountMismatch {
        /// Declared count.
        declared: u64,
        /// Offset of the central directory.
        offset: u64,
        /// Size of the central directory.
        size: u64,
    },
    /// A central directory record is malformed.
    #[error("central directory record at offset {offset}: {reason}")]
    CentralHeaderMalformed {
        /// Offset of the record.
        offset: u64,
        /// What is wrong.
        reason: &'static str,
    },
    /// An entry name is not valid UTF-8.
    #[error("entry name in the central directory record at offset {offset} is not UTF-8")]
    NameNotUtf8 {
        /// Offset of the central directory record.
        offset: u64,
    },
    /// An entry name that could escape the extraction folder or is not in
    /// canonical form (path traversal).
    #[error("unsafe entry name {name:?} (path traversal: {reason})")]
    UnsafeName {
        /// The name.
        name: String,
        /// What makes it unsafe.
        reason: &'static str,
    },
    /// Two entries with the same name.
    #[error("duplicate entry name {name:?}")]
    DuplicateName {
        /// The name.
        name: String,
    },
    /// A compression method other than stored (0) or deflated (8).
    #[error("entry {name:?}: unsupported compression method {method}")]
    UnsupportedMethod {
        /// Entry name.
        name: String,
        /// The method code.
        method: u16,
    },
    /// An encrypted entry.
    #[error("entry {name:?} is encrypted")]
    Encrypted {
        /// Entry name.
        name: String,
    },
    /// A local header is missing, truncated, or malformed.
    #[error("entry {name:?}: local header at offset {offset}: {reason}")]
    LocalHeaderMalformed {
        /// Entry name (from the central directory).
        name: String,
        /// Offset of the local header.
        offset: u64,
        /// What is wrong.
        reason: &'static str,
    },
    /// A local header disagrees with its central directory record.
    #[error(
        "entry {name:?}: local header at offset {offset} disagrees with the central directory on the {field}"
    )]
    LocalHeaderMismatch {
        /// Entry name (from the central directory).
        name: String,
        /// Offset of the local header.
        offset: u64,
        /// The field that differs.
        field: &'static str,
    },
    /// Flag bit 3 is set but no data descriptor matching the central
    /// directory follows the data.
    #[error("entry {name:?}: no data descriptor matching the central directory at offset {offset}")]
    DataDescriptorMismatch {
        /// Entry name.
        name: String,
        /// Where the descriptor should start.
        offset: u64,
    },
    /// An entry's data runs past the end of the file.
    #[error("entry {name:?}: data ends at offset {end}, past the end of the {len}-byte file")]
    DataPastEnd {
        /// Entry name.
        name: String,
        /// Where the data (or data descriptor) ends.
        end: u64,
        /// File length.
        len: u64,
    },
    /// Two entries share bytes (the overlapping-files zip bomb).
    #[error("entry {name:?} (local header at offset {offset}) overlaps entry {other:?}")]
    OverlappingEntries {
        /// The later entry.
        name: String,
        /// The earlier entry, whose data runs into it.
        other: String,
        /// Offset of `name`'s local header.
        offset: u64,
    },
    /// An entry's data runs into the central directory.
    #[error(
        "entry {name:?} ends at offset {end}, inside the central directory at offset {directory}"
    )]
    OverlapsCentralDirectory {
        /// Entry name.
        name: String,
        /// Where the entry ends.
        end: u64,
        /// Where the central directory starts.
        directory: u64,
    },
    /// A stored entry whose compressed and uncompressed sizes differ.
    #[error(
        "stored entry {name:?}: compressed size {compressed} differs from uncompressed size {uncompressed}"
    )]
    StoredSizeMismatch {
        /// Entry name.
        name: String,
        /// Compressed size.
        compressed: u64,
        /// Uncompressed size.
        uncompressed: u64,
    },
    /// The data's CRC-32 differs from the recorded one.
    #[error("entry {name:?}: CRC-32 is {found:#010x}, the archive says {expected:#010x}")]
    CrcMismatch {
        /// Entry name.
        name: String,
        /// Recorded CRC-32.
        expected: u32,
        /// Computed CRC-32.
        found: u32,
    },
    /// The data is shorter than the declared uncompressed size.
    #[error("entry {name:?}: data is {found} bytes, declared {declared}")]
    DecompressedSizeMismatch {
        /// Entry name.
        name: String,
        /// Declared uncompressed size.
        declared: u64,
        /// Bytes actually produced.
        found: u64,
    },
    /// A deflated entry inflates to more than its declared size (zip bomb).
    #[error("entry {name:?}: inflates past its declared size of {declared} bytes (zip bomb)")]
    InflateOverflow {
        /// Entry name.
        name: String,
        /// Declared uncompressed size.
        declared: u64,
    },
    /// A deflated entry declares more than [`ZipLimits::max_uncompressed`].
    #[error("entry {name:?}: uncompressed size {size} exceeds the limit of {max} bytes")]
    UncompressedTooLarge {
        /// Entry name.
        name: String,
        /// Declared uncompressed size.
        size: u64,
        /// The limit.
        max: u64,
    },
    /// A deflated entry's declared size exceeds [`ZipLimits::max_ratio`] times
    /// its compressed size (zip bomb).
    #[error(
        "entry {name:?}: {uncompressed} bytes from {compressed} compressed exceeds the {max_ratio}:1 ratio limit (zip bomb)"
    )]
    RatioExceeded {
        /// Entry name.
        name: String,
        /// Compressed size.
        compressed: u64,
        /// Declared uncompressed size.
        uncompressed: u64,
        /// The limit.
        max_ratio: u64,
    },
    /// The deflate stream is corrupt or truncated.
    #[error("entry {name:?}: corrupt deflate stream: {reason}")]
    DeflateCorrupt {
        /// Entry name.
        name: String,
        /// What is wrong.
        reason: &'static str,
    },
    /// The output buffer for an inflated entry could not be allocated.
    #[error("entry {name:?}: cannot allocate {size} bytes")]
    AllocationFailed {
        /// Entry name.
        name: String,
        /// Requested size.
        size: u64,
    },
    /// An I/O error from the writer's destination.
    #[error("I/O error while {context}")]
    Io {
        /// What the writer was doing.
        context: &'static str,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// An entry name longer than a ZIP header can hold.
    #[error("entry name of {len} bytes is longer than 65535 bytes")]
    NameTooLong {
        /// The name's length in bytes.
        len: usize,
    },
    /// [`ZipWriter::start_entry`] or [`ZipWriter::finish`] while an entry is
    /// still open.
    #[error("entry {name:?} is still open")]
    EntryStillOpen {
        /// The open entry.
        name: String,
    },
    /// [`ZipWriter::write`] or [`ZipWriter::finish_entry`] with no entry open.
    #[error("no entry is open")]
    NoEntryOpen,
    /// An entry started with [`ZipWriter::start_entry_sized`] received a
    /// different number of bytes.
    #[error("entry {name:?}: declared {declared} bytes, wrote {written}")]
    WrittenSizeMismatch {
        /// Entry name.
        name: String,
        /// Declared size.
        declared: u64,
        /// Bytes written (so far, if more than declared).
        written: u64,
    },
    /// A [`ZipWriterOptions::alignment`] that is not a power of two up to 32768.
    #[error("alignment {alignment} is not a power of two between 1 and 32768")]
    BadAlignment {
        /// The requested alignment.
        alignment: u64,
    },
    /// The archive would exceed 2^64 bytes.
    #[error("archive exceeds 2^64 bytes")]
    ArchiveTooLarge,
    /// An earlier error left the writer's output inconsistent.
    #[error("the ZIP writer failed earlier and cannot continue")]
    WriterFailed,
}

/// Limits and options for [`ZipArchive::parse`] and [`ZipArchive::read`].
///
/// The size limits apply to deflated entries only: a stored entry is returned
/// as a slice of the caller's buffer and allocates nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ZipLimits {
    /// Most entries an archive may declare (default 1,000,000).
    pub max_entries: u64,
    /// Largest declared uncompressed size of one deflated entry, in bytes
    /// (default 16 GiB).
    pub max_uncompressed: u64,
    /// Largest ratio of uncompressed to compressed size for a deflated entry
    /// (default 1100). Deflate cannot exceed about 1032:1, so the default only
    /// rejects sizes that cannot be true, which bounds the allocation by the
    /// input size; lower it to refuse highly compressed entries.
    pub max_ratio: u64,
    /// Whether [`ZipArchive::read`] checks the CRC-32 of stored entries
    /// (default `false`). Deflated entries are always checked, and
    /// [`ZipArchive::read_verified`] always checks. Off by default because a
    /// stored entry is returned without touching its bytes, which for a
    /// memory-mapped multi-gigabyte tensor is the point of zero copy.
    pub verify_crc: bool,
}

impl Default for ZipLimits {
    fn default() -> Self {
        Self {
            max_entries: 1_000_000,
            max_uncompressed: 16 << 30,
            max_ratio: 1100,
            verify_crc: false,
        }
    }
}

/// How an entry's data is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Method {
    /// Method 0: the bytes as they are (what torch writes).
    Stored,
    /// Method 8: raw deflate.
    Deflated,
}

impl Method {
    /// The ZIP method code.
    pub fn code(self) -> u16 {
        match self {
            Self::Stored => METHOD_STORED,
            Self::Deflated => METHOD_DEFLATED,
        }
    }
}

/// One validated entry of a [`ZipArchive`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ZipEntry {
    /// The entry's path inside the archive (validated: relative, `/`-separated,
    /// no `.` or `..` components).
    pub name: String,
    /// How the data is compressed.
    pub method: Method,
    /// Size of the data in the file.
    pub compressed_size: u64,
    /// Size of the data once decompressed.
    pub uncompressed_size: u64,
    /// CRC-32 of the uncompressed data.
    pub crc32: u32,
    /// Where the (compressed) data lies in the buffer given to
    /// [`ZipArchive::parse`]: absolute offsets.
    pub data: Range<usize>,
    /// Offset of the entry's local header.
    pub header_offset: u64,
}

/// A validated ZIP archive: the entry table of a byte buffer.
///
/// It holds no reference to the buffer; pass the same buffer to
/// [`read`](Self::read).
#[derive(Debug, Clone)]
pub struct ZipArchive {
    entries: Vec<ZipEntry>,
    /// Indices into `entries`, sorted by name.
    by_name: Vec<usize>,
    limits: ZipLimits,
}

impl ZipArchive {
    /// Parses and validates the ZIP archive in `buf` (the whole file).
    ///
    /// Never panics, whatever `buf` holds; see the module docs for what is
    /// checked.
    pub fn parse(buf: &[u8], limits: &ZipLimits) -> Result<Self, ZipError> {
        let eocd_pos = find_eocd(buf)?;
        let dir = read_end_records(buf, eocd_pos)?;

        if dir.count > limits.max_entries {
            return Err(ZipError::TooManyEntries {
                count: dir.count,
                max: limits.max_entries,
            });
        }
        let out_of_bounds = || ZipError::CentralDirectoryOutOfBounds {
            offset: dir.offset,
            size: dir.size,
            limit: dir.limit,
        };
        let cd_end = dir.offset.checked_add(dir.size).ok_or_else(out_of_bounds)?;
        if cd_end > dir.limit {
            return Err(out_of_bounds());
        }
        let cd_start = usize::try_from(dir.offset).map_err(|_| out_of_bounds())?;
        let cd_end = usize::try_from(cd_end).map_err(|_| out_of_bounds())?;
        let cd = buf.get(cd_start..cd_end).ok_or_else(out_of_bounds)?;

        // Every record takes at least 46 bytes: check the count against the
        // bytes present before allocating anything from it.
        let count_mismatch = || ZipError::EntryCountMismatch {
            declared: dir.count,
            offset: dir.offset,
            size: dir.size,
        };
        let count = usize::try_from(dir.count).map_err(|_| count_mismatch())?;
        if count.checked_mul(CENTRAL_LEN).is_none_or(|n| n > cd.len()) {
            return Err(count_mismatch());
        }

        let mut entries = Vec::with_capacity(count);
        // (start, end, entry index) of the bytes each entry occupies.
        let mut spans = Vec::with_capacity(count);
        let mut r = Bytes::new(cd, 0);
        for _ in 0..count {
            if r.pos == cd.len() {
                // The records ran out before the declared count.
                return Err(count_mismatch());
            }
            let offset = to_u64(cd_start.saturating_add(r.pos));
            let central = read_central(&mut r, offset)?;
            let (entry, span_end) = validate_entry(buf, &central, offset, limits)?;
            spans.push((entry.header_offset, span_end, entries.len()));
            entries.push(entry);
        }
        if r.pos != cd.len() {
            return Err(count_mismatch());
        }

        spans.sort_unstable();
        for pair in spans.windows(2) {
            if let [(_, prev_end, prev), (start, _, next)] = *pair
                && start < prev_end
            {
                return Err(ZipError::OverlappingEntries {
                    name: entry_name(&entries, next),
                    other: entry_name(&entries, prev),
                    offset: start,
                });
            }
        }
        if let Some(&(_, end, i)) = spans.iter().max_by_key(|s| s.1)
            && end > dir.offset
        {
            return Err(ZipError::OverlapsCentralDirectory {
                name: entry_name(&entries, i),
                end,
                directory: dir.offset,
            });
        }

        let mut by_name: Vec<usize> = (0..entries.len()).collect();
        by_name.sort_unstable_by(|&a, &b| {
            entry_name_ref(&entries, a).cmp(entry_name_ref(&entries, b))
        });
        for pair in by_name.windows(2) {
            if let [a, b] = *pair
                && entry_name_ref(&entries, a) == entry_name_ref(&entries, b)
            {
                return Err(ZipError::DuplicateName {
                    name: entry_name(&entries, b),
                });
            }
        }

        Ok(Self {
            entries,
            by_name,
            limits: limits.clone(),
        })
    }

    /// The entries in central directory order.
    pub fn entries(&self) -> &[ZipEntry] {
        &self.entries
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the archive has no entries.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The entry with exactly this name (binary search).
    pub fn find(&self, name: &str) -> Option<&ZipEntry> {
        let i = self
            .by_name
            .binary_search_by(|&i| entry_name_ref(&self.entries, i).cmp(name))
            .ok()?;
        self.entries.get(*self.by_name.get(i)?)
    }

    /// The uncompressed bytes of `entry`, from `buf` (the buffer given to
    /// [`parse`](Self::parse)).
    ///
    /// A stored entry is borrowed from `buf` without copying, and its CRC-32 is
    /// checked only if [`ZipLimits::verify_crc`] was set: hashing a
    /// multi-gigabyte memory-mapped tensor would read every page of it. A
    /// deflated entry is inflated into a buffer of exactly its declared size
    /// (after checking the size against the limits again), and fails if the
    /// stream would produce more or fewer bytes, or if the CRC-32 differs.
    pub fn read<'a>(&self, buf: &'a [u8], entry: &ZipEntry) -> Result<Cow<'a, [u8]>, ZipError> {
        self.read_inner(buf, entry, self.limits.verify_crc)
    }

    /// Like [`read`](Self::read), but always checks the CRC-32.
    pub fn read_verified<'a>(
        &self,
        buf: &'a [u8],
        entry: &ZipEntry,
    ) -> Result<Cow<'a, [u8]>, ZipError> {
        self.read_inner(buf, entry, true)
    }

    fn read_inner<'a>(
        &self,
        buf: &'a [u8],
        entry: &ZipEntry,
        verify_crc: bool,
    ) -> Result<Cow<'a, [u8]>, ZipError> {
        let data = buf
            .get(entry.data.clone())
            .ok_or_else(|| ZipError::DataPastEnd {
                name: entry.name.clone(),
                end: to_u64(entry.data.end),
                len: to_u64(buf.len()),
            })?;
        match entry.method {
            Method::Stored => {
                if to_u64(data.len()) != entry.uncompressed_size {
                    return Err(ZipError::DecompressedSizeMismatch {
                        name: entry.name.clone(),
                        declared: entry.uncompressed_size,
                        found: to_u64(data.len()),
                    });
                }
                if verify_crc {
                    check_crc(&entry.name, entry.crc32, data)?;
                }
                Ok(Cow::Borrowed(data))
            }
            Method::Deflated => {
                check_inflate_limits(
                    &entry.name,
                    to_u64(data.len()),
                    entry.uncompressed_size,
                    &self.limits,
                )?;
                let out = inflate(&entry.name, data, entry.uncompressed_size)?;
                check_crc(&entry.name, entry.crc32, &out)?;
                Ok(Cow::Owned(out))
            }
        }
    }
}

fn entry_name_ref(entries: &[ZipEntry], i: usize) -> &str {
    entries.get(i).map_or("", |e| e.name.as_str())
}

fn entry_name(entries: &[ZipEntry], i: usize) -> String {
    entry_name_ref(entries, i).to_owned()
}

fn to_u64(n: usize) -> u64 {
    u64::try_from(n).unwrap_or(u64::MAX)
}

fn check_crc(name: &str, expected: u32, data: &[u8]) -> Result<(), ZipError> {
    let found = crc32fast::hash(data);
    if found == expected {
        Ok(())
    } else {
        Err(ZipError::CrcMismatch {
            name: name.to_owned(),
            expected,
            found,
        })
    }
}

fn check_inflate_limits(
    name: &str,
    compressed: u64,
    uncompressed: u64,
    limits: &ZipLimits,
) -> Result<(), ZipError> {
    if uncompressed > limits.max_uncompressed {
        return Err(ZipError::UncompressedTooLarge {
            name: name.to_owned(),
            size: uncompressed,
            max: limits.max_uncompressed,
        });
    }
    if uncompressed > compressed.saturating_mul(limits.max_ratio) {
        return Err(ZipError::RatioExceeded {
            name: name.to_owned(),
            compressed,
            uncompressed,
            max_ratio: limits.max_ratio,
        });
    }
    Ok(())
}

/// Inflates raw deflate `data` into a buffer of exactly `declared` bytes.
fn inflate(name: &str, data: &[u8], declared: u64) -> Result<Vec<u8>, ZipError> {
    let alloc_failed = || ZipError::AllocationFailed {
        name: name.to_owned(),
        size: declared,
    };
    let size = usize::try_from(declared).map_err(|_| alloc_failed())?;
    let mut out = Vec::new();
    out.try_reserve_exact(size).map_err(|_| alloc_failed())?;
    out.resize(size, 0);

    let mut state = Box::<DecompressorOxide>::default();
    let (status, consumed, written) = decompress(
        &mut state,
        data,
        &mut out,
        0,
        inflate_flags::TINFL_FLAG_USING_NON_WRAPPING_OUTPUT_BUF,
    );
    let corrupt = |reason| ZipError::DeflateCorrupt {
        name: name.to_owned(),
        reason,
    };
    match status {
        TINFLStatus::Done => {}
        TINFLStatus::HasMoreOutput => {
            return Err(ZipError::InflateOverflow {
                name: name.to_owned(),
                declared,
            });
        }
        TINFLStatus::NeedsMoreInput | TINFLStatus::FailedCannotMakeProgress => {
            return Err(corrupt("the stream ends early"));
        }
        _ => return Err(corrupt("invalid deflate data")),
    }
    if written != size {
        return Err(ZipError::DecompressedSizeMismatch {
            name: name.to_owned(),
            declared,
            found: to_u64(written),
        });
    }
    if consumed != data.len() {
        return Err(corrupt("bytes follow the end of the stream"));
    }
    Ok(out)
}

/// A little-endian cursor that never reads out of bounds.
struct Bytes<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Bytes<'a> {
    fn new(buf: &'a [u8], pos: usize) -> Self {
        Self { buf, pos }
    }

    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let end = self.pos.checked_add(n)?;
        let s = self.buf.get(self.pos..end)?;
        self.pos = end;
        Some(s)
    }

    fn array<const N: usize>(&mut self) -> Option<[u8; N]> {
        self.take(N)?.try_into().ok()
    }

    fn u16(&mut self) -> Option<u16> {
        self.array().map(u16::from_le_bytes)
    }

    fn u32(&mut self) -> Option<u32> {
        self.array().map(u32::from_le_bytes)
    }

    fn u64(&mut self) -> Option<u64> {
        self.array().map(u64::from_le_bytes)
    }
}

/// Finds the end-of-central-directory record: the last `PK\5\6` within the
/// final 65,557 bytes whose comment ends exactly at the end of the file.
fn find_eocd(buf: &[u8]) -> Result<usize, ZipError> {
    let lowest = buf
        .len()
        .saturating_sub(EOCD_LEN.saturating_add(MAX_COMMENT));
    let not_found = ZipError::NoEndOfCentralDirectory {
        len: to_u64(buf.len()),
        scanned: to_u64(buf.len().saturating_sub(lowest)),
    };
    let Some(last) = buf.len().checked_sub(EOCD_LEN) else {
        return Err(not_found);
    };
    for pos in (lowest..=last).rev() {
        let mut r = Bytes::new(buf, pos);
        if r.u32() != Some(EOCD_SIG) {
            continue;
        }
        let mut c = Bytes::new(buf, pos.saturating_add(20));
        let Some(comment) = c.u16() else { continue };
        if pos
            .checked_add(EOCD_LEN)
            .and_then(|n| n.checked_add(usize::from(comment)))
            == Some(buf.len())
        {
            return Ok(pos);
        }
    }
    Err(not_found)
}

/// Where the central directory is, from the end records.
struct Directory {
    count: u64,
    offset: u64,
    size: u64,
    /// The central directory must end at or before this offset.
    limit: u64,
}

fn read_end_records(buf: &[u8], eocd_pos: usize) -> Result<Directory, ZipError> {
    let eocd_offset = to_u64(eocd_pos);
    let bad = |reason| ZipError::EocdMalformed {
        offset: eocd_offset,
        reason,
    };
    let mut r = Bytes::new(buf, eocd_pos.saturating_add(4));
    let truncated = || bad("truncated");
    let disk = r.u16().ok_or_else(truncated)?;
    let cd_disk = r.u16().ok_or_else(truncated)?;
    let count_disk = r.u16().ok_or_else(truncated)?;
    let count = r.u16().ok_or_else(truncated)?;
    let size = r.u32().ok_or_else(truncated)?;
    let offset = r.u32().ok_or_else(truncated)?;

    let locator_pos = eocd_pos
        .checked_sub(ZIP64_LOCATOR_LEN)
        .filter(|&p| Bytes::new(buf, p).u32() == Some(ZIP64_LOCATOR_SIG));
    let Some(locator_pos) = locator_pos else {
        for d in [disk, cd_disk] {
            if d != 0 {
                return Err(ZipError::MultiDisk {
                    offset: eocd_offset,
                    disk: u64::from(d),
                });
            }
        }
        if count_disk != count {
            return Err(bad("entries on this disk differ from the total"));
        }
        return Ok(Directory {
            count: u64::from(count),
            offset: u64::from(offset),
            size: u64::from(size),
            limit: eocd_offset,
        });
    };

    // ZIP64: the locator points at the ZIP64 end record, whose values replace
    // the classic ones. Classic fields must be the sentinel or agree.
    let loc_offset = to_u64(locator_pos);
    let bad64 = |offset, reason| ZipError::Zip64EocdMalformed { offset, reason };
    let mut l = Bytes::new(buf, locator_pos.saturating_add(4));
    let loc_truncated = || bad64(loc_offset, "truncated locator");
    let record_disk = l.u32().ok_or_else(loc_truncated)?;
    let record_offset = l.u64().ok_or_else(loc_truncated)?;
    let disks = l.u32().ok_or_else(loc_truncated)?;
    if record_disk != 0 {
        return Err(ZipError::MultiDisk {
            offset: loc_offset,
            disk: u64::from(record_disk),
        });
    }
    if disks > 1 {
        return Err(ZipError::MultiDisk {
            offset: loc_offset,
            disk: u64::from(disks),
        });
    }
    let record_pos = usize::try_from(record_offset)
        .ok()
        .filter(|&p| {
            p.checked_add(ZIP64_EOCD_LEN)
                .is_some_and(|end| end <= locator_pos)
        })
        .ok_or_else(|| bad64(loc_offset, "locator points outside the file"))?;
    let mut z = Bytes::new(buf, record_pos);
    let truncated64 = || bad64(record_offset, "truncated record");
    if z.u32().ok_or_else(truncated64)? != ZIP64_EOCD_SIG {
        return Err(bad64(record_offset, "bad signature"));
    }
    let record_size = z.u64().ok_or_else(truncated64)?;
    let record_end = record_offset
        .checked_add(12)
        .and_then(|n| n.checked_add(record_size));
    if record_size < 44 || record_end.is_none_or(|end| end > loc_offset) {
        return Err(bad64(record_offset, "record size out of bounds"));
    }
    let _made_by = z.u16().ok_or_else(truncated64)?;
    let _needed = z.u16().ok_or_else(truncated64)?;
    let disk64 = z.u32().ok_or_else(truncated64)?;
    let cd_disk64 = z.u32().ok_or_else(truncated64)?;
    let count_disk64 = z.u64().ok_or_else(truncated64)?;
    let count64 = z.u64().ok_or_else(truncated64)?;
    let size64 = z.u64().ok_or_else(truncated64)?;
    let offset64 = z.u64().ok_or_else(truncated64)?;
    for d in [disk64, cd_disk64] {
        if d != 0 {
            return Err(ZipError::MultiDisk {
                offset: record_offset,
                disk: u64::from(d),
            });
        }
    }
    if count_disk64 != count64 {
        return Err(bad64(
            record_offset,
            "entries on this disk differ from the total",
        ));
    }
    let agrees16 = |classic: u16, wide: u64| classic == U16_MAX || u64::from(classic) == wide;
    let agrees32 = |classic: u32, wide: u64| classic == U32_MAX || u64::from(classic) == wide;
    if !agrees16(disk, 0) || !agrees16(cd_disk, 0) {
        return Err(bad("disk numbers disagree with the ZIP64 record"));
    }
    if !agrees16(count_disk, count64) || !agrees16(count, count64) {
        return Err(bad("entry count disagrees with the ZIP64 record"));
    }
    if !agrees32(size, size64) || !agrees32(offset, offset64) {
        return Err(bad(
            "central directory location disagrees with the ZIP64 record",
        ));
    }
    Ok(Directory {
        count: count64,
        offset: offset64,
        size: size64,
        limit: record_offset,
    })
}

/// The fields of a central directory record, before validation.
struct Central<'a> {
    flags: u16,
    method: u16,
    crc32: u32,
    compressed: u32,
    uncompressed: u32,
    disk: u16,
    header_offset: u32,
    name: &'a [u8],
    extra: &'a [u8],
}

fn read_central<'a>(r: &mut Bytes<'a>, offset: u64) -> Result<Central<'a>, ZipError> {
    let bad = |reason| ZipError::CentralHeaderMalformed { offset, reason };
    let truncated = || bad("runs past the end of the central directory");
    if r.u32().ok_or_else(truncated)? != CENTRAL_SIG {
        return Err(bad("bad signature"));
    }
    let _made_by = r.u16().ok_or_else(truncated)?;
    let _needed = r.u16().ok_or_else(truncated)?;
    let flags = r.u16().ok_or_else(truncated)?;
    let method = r.u16().ok_or_else(truncated)?;
    let _time = r.u16().ok_or_else(truncated)?;
    let _date = r.u16().ok_or_else(truncated)?;
    let crc32 = r.u32().ok_or_else(truncated)?;
    let compressed = r.u32().ok_or_else(truncated)?;
    let uncompressed = r.u32().ok_or_else(truncated)?;
    let name_len = r.u16().ok_or_else(truncated)?;
    let extra_len = r.u16().ok_or_else(truncated)?;
    let comment_len = r.u16().ok_or_else(truncated)?;
    let disk = r.u16().ok_or_else(truncated)?;
    let _internal = r.u16().ok_or_else(truncated)?;
    let _external = r.u32().ok_or_else(truncated)?;
    let header_offset = r.u32().ok_or_else(truncated)?;
    let name = r.take(usize::from(name_len)).ok_or_else(truncated)?;
    let extra = r.take(usize::from(extra_len)).ok_or_else(truncated)?;
    let _comment = r.take(usize::from(comment_len)).ok_or_else(truncated)?;
    Ok(Central {
        flags,
        method,
        crc32,
        compressed,
        uncompressed,
        disk,
        header_offset,
        name,
        extra,
    })
}

/// The data of the first extra field with `id`; `Err` if the extra area is
/// not a well-formed sequence of (id, length, data) fields.
fn find_extra(extra: &[u8], id: u16) -> Result<Option<&[u8]>, ()> {
    let mut r = Bytes::new(extra, 0);
    while r.pos < extra.len() {
        let field = r.u16().ok_or(())?;
        let len = r.u16().ok_or(())?;
        let data = r.take(usize::from(len)).ok_or(())?;
        if field == id {
            return Ok(Some(data));
        }
    }
    Ok(None)
}

/// The central record's sizes, header offset and disk, with 32-bit (16-bit
/// for the disk) sentinels resolved through the ZIP64 extra field, whose
/// values appear in that order, one for each sentinel. `None` if a needed
/// value is missing.
fn resolve_central(c: &Central<'_>, zip64: Option<&[u8]>) -> Option<(u64, u64, u64, u32)> {
    let mut r = Bytes::new(zip64.unwrap_or(&[]), 0);
    let mut wide = |v: u32| {
        if v == U32_MAX {
            r.u64()
        } else {
            Some(u64::from(v))
        }
    };
    let uncompressed = wide(c.uncompressed)?;
    let compressed = wide(c.compressed)?;
    let offset = wide(c.header_offset)?;
    let disk = if c.disk == U16_MAX {
        r.u32()?
    } else {
        u32::from(c.disk)
    };
    Some((uncompressed, compressed, offset, disk))
}

/// Validates one central record and its local header. Returns the entry and
/// the end of the bytes it occupies (data descriptor included).
fn validate_entry(
    buf: &[u8],
    c: &Central<'_>,
    offset: u64,
    limits: &ZipLimits,
) -> Result<(ZipEntry, u64), ZipError> {
    let bad = |reason| ZipError::CentralHeaderMalformed { offset, reason };
    let name = std::str::from_utf8(c.name)
        .map_err(|_| ZipError::NameNotUtf8 { offset })?
        .to_owned();
    if let Err(reason) = check_name(&name) {
        return Err(ZipError::UnsafeName { name, reason });
    }
    if c.flags & ENCRYPTION_FLAGS != 0 {
        return Err(ZipError::Encrypted { name });
    }
    let method = match c.method {
        METHOD_STORED => Method::Stored,
        METHOD_DEFLATED => Method::Deflated,
        method => return Err(ZipError::UnsupportedMethod { name, method }),
    };

    let zip64 =
        find_extra(c.extra, ZIP64_EXTRA_ID).map_err(|()| bad("extra field runs past its end"))?;
    let (uncompressed, compressed, header_offset, disk) =
        resolve_central(c, zip64).ok_or_else(|| bad("ZIP64 extra field missing or too short"))?;
    if disk != 0 {
        return Err(ZipError::MultiDisk {
            offset,
            disk: u64::from(disk),
        });
    }

    match method {
        Method::Stored if compressed != uncompressed => {
            return Err(ZipError::StoredSizeMismatch {
                name,
                compressed,
                uncompressed,
            });
        }
        Method::Deflated => check_inflate_limits(&name, compressed, uncompressed, limits)?,
        Method::Stored => {}
    }

    let mut entry = ZipEntry {
        name,
        method,
        compressed_size: compressed,
        uncompressed_size: uncompressed,
        crc32: c.crc32,
        data: 0..0,
        header_offset,
    };
    let (data, span_end) = check_local(buf, c, &entry)?;
    entry.data = data;
    Ok((entry, span_end))
}

/// Checks the local header of `entry` against its central record. Returns
/// where the data lies and where the entry's bytes end.
fn check_local(
    buf: &[u8],
    c: &Central<'_>,
    entry: &ZipEntry,
) -> Result<(Range<usize>, u64), ZipError> {
    let offset = entry.header_offset;
    let malformed = |reason| ZipError::LocalHeaderMalformed {
        name: entry.name.clone(),
        offset,
        reason,
    };
    let mismatch = |field| ZipError::LocalHeaderMismatch {
        name: entry.name.clone(),
        offset,
        field,
    };
    let truncated = || malformed("runs past the end of the file");
    let start = usize::try_from(offset).map_err(|_| truncated())?;
    let mut r = Bytes::new(buf, start);
    if r.u32().ok_or_else(truncated)? != LOCAL_SIG {
        return Err(malformed("bad signature"));
    }
    let _needed = r.u16().ok_or_else(truncated)?;
    let flags = r.u16().ok_or_else(truncated)?;
    let method = r.u16().ok_or_else(truncated)?;
    let _time = r.u16().ok_or_else(truncated)?;
    let _date = r.u16().ok_or_else(truncated)?;
    let crc32 = r.u32().ok_or_else(truncated)?;
    let compressed = r.u32().ok_or_else(truncated)?;
    let uncompressed = r.u32().ok_or_else(truncated)?;
    let name_len = r.u16().ok_or_else(truncated)?;
    let extra_len = r.u16().ok_or_else(truncated)?;
    let name = r.take(usize::from(name_len)).ok_or_else(truncated)?;
    let extra = r.take(usize::from(extra_len)).ok_or_else(truncated)?;
    if name != c.name {
        return Err(mismatch("name"));
    }
    if flags & ENCRYPTION_FLAGS != 0 {
        return Err(ZipError::Encrypted {
            name: entry.name.clone(),
        });
    }
    if method != c.method {
        return Err(mismatch("compression method"));
    }

    let data_start = r.pos;
    let past_end = |end: u64| ZipError::DataPastEnd {
        name: entry.name.clone(),
        end,
        len: to_u64(buf.len()),
    };
    let data_end = to_u64(data_start)
        .checked_add(entry.compressed_size)
        .ok_or_else(|| past_end(u64::MAX))?;
    let data_end_usize = usize::try_from(data_end)
        .ok()
        .filter(|&e| e <= buf.len())
        .ok_or_else(|| past_end(data_end))?;
    let data = data_start..data_end_usize;

    if flags & FLAG_DESCRIPTOR == 0 {
        if crc32 != entry.crc32 {
            return Err(mismatch("CRC-32"));
        }
        let zip64 = if compressed == U32_MAX || uncompressed == U32_MAX {
            find_extra(extra, ZIP64_EXTRA_ID)
                .map_err(|()| malformed("extra field runs past its end"))?
        } else {
            None
        };
        let mut z = Bytes::new(zip64.unwrap_or(&[]), 0);
        let mut wide = |v: u32| {
            if v == U32_MAX {
                z.u64()
            } else {
                Some(u64::from(v))
            }
        };
        let (local_uncompressed, local_compressed) = wide(uncompressed)
            .zip(wide(compressed))
            .ok_or_else(|| malformed("ZIP64 extra field missing or too short"))?;
        if local_compressed != entry.compressed_size {
            return Err(mismatch("compressed size"));
        }
        if local_uncompressed != entry.uncompressed_size {
            return Err(mismatch("uncompressed size"));
        }
        Ok((data, data_end))
    } else {
        let len = descriptor_len(buf, data_end_usize, entry).ok_or_else(|| {
            ZipError::DataDescriptorMismatch {
                name: entry.name.clone(),
                offset: data_end,
            }
        })?;
        let end = data_end
            .checked_add(to_u64(len))
            .ok_or_else(|| past_end(u64::MAX))?;
        Ok((data, end))
    }
}

/// The length of the data descriptor at `at` if one matches `entry`: with or
/// without its signature, with 32- or 64-bit sizes.
fn descriptor_len(buf: &[u8], at: usize, entry: &ZipEntry) -> Option<usize> {
    let matches = |signed: bool, wide: bool| -> Option<usize> {
        let mut r = Bytes::new(buf, at);
        if signed && r.u32()? != DESCRIPTOR_SIG {
            return None;
        }
        let crc32 = r.u32()?;
        let (compressed, uncompressed) = if wide {
            (r.u64()?, r.u64()?)
        } else {
            (u64::from(r.u32()?), u64::from(r.u32()?))
        };
        (crc32 == entry.crc32
            && compressed == entry.compressed_size
            && uncompressed == entry.uncompressed_size)
            .then(|| r.pos.saturating_sub(at))
    };
    [(true, false), (true, true), (false, false), (false, true)]
        .into_iter()
        .find_map(|(signed, wide)| matches(signed, wide))
}

/// Accepts only relative, canonical, `/`-separated names: what can be joined
/// to a folder without escaping it, and one spelling per path (so duplicate
/// detection is meaningful). A single trailing `/` (a folder entry) is allowed.
fn check_name(name: &str) -> Result<(), &'static str> {
    if name.is_empty() {
        return Err("empty name");
    }
    if name.contains('\0') {
        return Err("NUL byte");
    }
    if name.contains('\\') {
        return Err("backslash");
    }
    if name.starts_with('/') {
        return Err("absolute path");
    }
    let mut chars = name.chars();
    if let (Some(drive), Some(':')) = (chars.next(), chars.next())
        && drive.is_ascii_alphabetic()
    {
        return Err("drive letter");
    }
    let path = name.strip_suffix('/').unwrap_or(name);
    for component in path.split('/') {
        match component {
            ".." => return Err("`..` component"),
            "." => return Err("`.` component"),
            "" => return Err("empty component"),
            _ => {}
        }
    }
    Ok(())
}

/// Options for [`ZipWriter`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ZipWriterOptions {
    /// Each entry's data starts at a multiple of this many bytes (default 64,
    /// as torch). A power of two from 1 to 32768.
    pub alignment: u64,
    /// Write ZIP64 fields for every entry, and set every field of the classic
    /// end record to its "see ZIP64" sentinel, even when every value fits in
    /// 32 bits (default `false`). For tests and for readers that want ZIP64
    /// throughout.
    pub force_zip64: bool,
    /// Write the ZIP64 end-of-central-directory record and locator even when
    /// nothing needs them (default `true`, as torch, whose miniz is opened
    /// with `MZ_ZIP_FLAG_WRITE_ZIP64`). With `false`, a small archive ends
    /// with the classic record alone.
    pub always_zip64_end: bool,
}

impl Default for ZipWriterOptions {
    fn default() -> Self {
        Self {
            alignment: 64,
            force_zip64: false,
            always_zip64_end: true,
        }
    }
}

/// What the central directory needs to know about a finished entry.
struct Record {
    name: String,
    flags: u16,
    crc32: u32,
    size: u64,
    offset: u64,
}

/// The entry being written.
struct OpenEntry {
    name: String,
    header_offset: u64,
    flags: u16,
    declared: Option<u64>,
    /// Whether the local ZIP64 field carries the sizes.
    sizes_zip64: bool,
    /// Whether the local ZIP64 field carries the header offset.
    offset_zip64: bool,
    /// Bytes of `FB` padding (not counting its 4-byte field header).
    padding: u16,
    hasher: crc32fast::Hasher,
    written: u64,
}

/// Writes a ZIP archive of stored entries laid out as `torch.save` lays them
/// out (see the module docs): `FB` padding so each entry's data is aligned,
/// CRC-32 and sizes in a data descriptor after the data.
///
/// The data is streamed: [`start_entry`](Self::start_entry),
/// [`write`](Self::write) any number of times, [`finish_entry`](Self::finish_entry);
/// nothing is buffered beyond an internal [`BufWriter`]. End with
/// [`finish`](Self::finish), which writes the central directory and returns
/// the inner writer (for an `AtomicFile`, then call `commit`). Dropping the
/// writer without `finish` leaves an archive without a central directory,
/// which readers reject.
///
/// The archive starts at the inner writer's current position and its offsets
/// count from there, so give it a fresh file. `Seek` is used only to patch the
/// local header of an entry of unknown size that reaches 4 GiB (see
/// [`start_entry`](Self::start_entry)).
pub struct ZipWriter<W: Write + Seek> {
    out: BufWriter<W>,
    pos: u64,
    options: ZipWriterOptions,
    records: Vec<Record>,
    names: HashSet<String>,
    open: Option<OpenEntry>,
    failed: bool,
}

impl<W: Write + Seek> fmt::Debug for ZipWriter<W> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ZipWriter")
            .field("pos", &self.pos)
            .field("options", &self.options)
            .field("entries", &self.records.len())
            .field("open", &self.open.as_ref().map(|e| e.name.as_str()))
            .field("failed", &self.failed)
            .finish_non_exhaustive()
    }
}

impl<W: Write + Seek> ZipWriter<W> {
    /// A writer with the default options: torch's layout (64-byte alignment,
    /// ZIP64 fields where needed, a ZIP64 end record always).
    pub fn new(inner: W) -> Self {
        Self {
            out: BufWriter::new(inner),
            pos: 0,
            options: ZipWriterOptions::default(),
            records: Vec::new(),
            names: HashSet::new(),
            open: None,
            failed: false,
        }
    }

    /// A writer with `options`; fails if the alignment is not a power of two
    /// from 1 to 32768.
    pub fn with_options(inner: W, options: ZipWriterOptions) -> Result<Self, ZipError> {
        if !options.alignment.is_power_of_two() || options.alignment > 32768 {
            return Err(ZipError::BadAlignment {
                alignment: options.alignment,
            });
        }
        let mut w = Self::new(inner);
        w.options = options;
        Ok(w)
    }

    /// Writes a whole entry: [`start_entry_sized`](Self::start_entry_sized),
    /// [`write`](Self::write), [`finish_entry`](Self::finish_entry).
    pub fn write_entry(&mut self, name: &str, data: &[u8]) -> Result<(), ZipError> {
        self.start_entry_sized(name, to_u64(data.len()))?;
        self.write(data)?;
        self.finish_entry()
    }

    /// Starts an entry whose size is not known yet.
    ///
    /// Its `FB` padding is at least 20 bytes (16 where the header offset
    /// already needs a ZIP64 field), so that if the entry reaches 4 GiB the
    /// local header can be patched (through `Seek`) to carry the sizes in a
    /// ZIP64 field; otherwise the layout is torch's. Use [`start_entry_sized`](Self::start_entry_sized) when the size
    /// is known, as torch does.
    pub fn start_entry(&mut self, name: &str) -> Result<(), ZipError> {
        self.start(name, None)
    }

    /// Starts an entry of exactly `size` bytes; [`finish_entry`](Self::finish_entry)
    /// fails if a different number of bytes was written. The layout is
    /// byte-for-byte torch's: ZIP64 fields in the local header only when
    /// `size` needs them, and an empty entry has no data descriptor.
    pub fn start_entry_sized(&mut self, name: &str, size: u64) -> Result<(), ZipError> {
        self.start(name, Some(size))
    }

    fn start(&mut self, name: &str, declared: Option<u64>) -> Result<(), ZipError> {
        self.check_usable()?;
        if let Some(open) = &self.open {
            return Err(ZipError::EntryStillOpen {
                name: open.name.clone(),
            });
        }
        if let Err(reason) = check_name(name) {
            return Err(ZipError::UnsafeName {
                name: name.to_owned(),
                reason,
            });
        }
        if self.names.contains(name) {
            return Err(ZipError::DuplicateName {
                name: name.to_owned(),
            });
        }
        let name_len =
            u16::try_from(name.len()).map_err(|_| ZipError::NameTooLong { len: name.len() })?;

        let force = self.options.force_zip64;
        let header_offset = self.pos;
        let offset_zip64 = force || header_offset >= U32_MAX_64;
        let sizes_zip64 = force || declared.is_some_and(|s| s >= U32_MAX_64);
        let zip64_len = zip64_local_len(sizes_zip64, offset_zip64);
        // Room for the sizes, should an entry of unknown size reach 4 GiB.
        let reserve = if declared.is_none() && !sizes_zip64 {
            zip64_local_len(true, offset_zip64) - zip64_len
        } else {
            0
        };
        // Where the data would start with no padding.
        let bare = [
            to_u64(LOCAL_LEN),
            u64::from(name_len),
            u64::from(zip64_len),
            4,
            u64::from(reserve),
        ]
        .into_iter()
        .try_fold(header_offset, u64::checked_add)
        .ok_or(ZipError::ArchiveTooLarge)?;
        let misalignment = bare % self.options.alignment;
        let to_boundary = if misalignment == 0 {
            0
        } else {
            self.options.alignment - misalignment
        };
        // At most 20 + 32767 bytes.
        let bad_alignment = || ZipError::BadAlignment {
            alignment: self.options.alignment,
        };
        let padding =
            u16::try_from(u64::from(reserve) + to_boundary).map_err(|_| bad_alignment())?;
        let extra = local_extra(
            sizes_zip64.then_some(declared.unwrap_or(0)),
            offset_zip64.then_some(header_offset),
            padding,
        );
        let extra_len = u16::try_from(extra.len()).map_err(|_| bad_alignment())?;

        // torch writes a data descriptor for every non-empty record.
        let flags = if declared == Some(0) {
            FLAG_UTF8
        } else {
            FLAG_UTF8 | FLAG_DESCRIPTOR
        };
        let mut header = Vec::with_capacity(LOCAL_LEN + name.len() + extra.len());
        put32(&mut header, LOCAL_SIG);
        put16(&mut header, VERSION_TORCH);
        put16(&mut header, flags);
        put16(&mut header, METHOD_STORED);
        put16(&mut header, 0); // time
        put16(&mut header, 0); // date
        put32(&mut header, 0); // CRC-32: in the data descriptor
        put32(&mut header, 0); // compressed size: likewise
        put32(&mut header, 0); // uncompressed size: likewise
        put16(&mut header, name_len);
        put16(&mut header, extra_len);
        header.extend_from_slice(name.as_bytes());
        header.extend_from_slice(&extra);

        self.emit(&header, "writing a local header")?;
        self.open = Some(OpenEntry {
            name: name.to_owned(),
            header_offset,
            flags,
            declared,
            sizes_zip64,
            offset_zip64,
            padding,
            hasher: crc32fast::Hasher::new(),
            written: 0,
        });
        Ok(())
    }

    /// Appends `data` to the open entry.
    pub fn write(&mut self, data: &[u8]) -> Result<(), ZipError> {
        self.check_usable()?;
        let Some(open) = self.open.as_mut() else {
            return Err(ZipError::NoEntryOpen);
        };
        let written = open
            .written
            .checked_add(to_u64(data.len()))
            .ok_or(ZipError::ArchiveTooLarge)?;
        if let Some(declared) = open.declared
            && written > declared
        {
            self.failed = true;
            return Err(ZipError::WrittenSizeMismatch {
                name: open.name.clone(),
                declared,
                written,
            });
        }
        open.hasher.update(data);
        open.written = written;
        self.emit(data, "writing entry data")
    }

    /// Ends the open entry: writes its data descriptor (and, for an entry of
    /// unknown size that reached 4 GiB, patches its local header to ZIP64).
    pub fn finish_entry(&mut self) -> Result<(), ZipError> {
        self.check_usable()?;
        let Some(mut open) = self.open.take() else {
            return Err(ZipError::NoEntryOpen);
        };
        if let Some(declared) = open.declared
            && declared != open.written
        {
            self.failed = true;
            return Err(ZipError::WrittenSizeMismatch {
                name: open.name,
                declared,
                written: open.written,
            });
        }
        let crc32 = open.hasher.clone().finalize();
        if !open.sizes_zip64 && open.written >= U32_MAX_64 {
            self.patch_local_zip64(&open)?;
            open.sizes_zip64 = true;
        }
        if open.flags & FLAG_DESCRIPTOR != 0 {
            let mut d = Vec::with_capacity(24);
            put32(&mut d, DESCRIPTOR_SIG);
            put32(&mut d, crc32);
            // 64-bit sizes whenever the local header has a ZIP64 field.
            if open.sizes_zip64 || open.offset_zip64 {
                put64(&mut d, open.written);
                put64(&mut d, open.written);
            } else {
                let size = u32::try_from(open.written).map_err(|_| ZipError::ArchiveTooLarge)?;
                put32(&mut d, size);
                put32(&mut d, size);
            }
            self.emit(&d, "writing a data descriptor")?;
        }
        self.names.insert(open.name.clone());
        self.records.push(Record {
            name: open.name,
            flags: open.flags,
            crc32,
            size: open.written,
            offset: open.header_offset,
        });
        Ok(())
    }

    /// Rewrites the local extra field of `open` (reserved room in its `FB`
    /// padding) so that its ZIP64 field carries the sizes.
    fn patch_local_zip64(&mut self, open: &OpenEntry) -> Result<(), ZipError> {
        let grow =
            zip64_local_len(true, open.offset_zip64) - zip64_local_len(false, open.offset_zip64);
        let padding = open
            .padding
            .checked_sub(grow)
            .ok_or(ZipError::WriterFailed)?;
        let extra = local_extra(
            Some(open.written),
            open.offset_zip64.then_some(open.header_offset),
            padding,
        );
        let name_len = to_u64(open.name.len());

        let result = (|| -> io::Result<()> {
            let end = self.out.stream_position()?;
            let back = self
                .pos
                .checked_sub(open.header_offset)
                .ok_or_else(overflow)?;
            let extra_at = end
                .checked_sub(back)
                .and_then(|h| h.checked_add(to_u64(LOCAL_LEN) + name_len))
                .ok_or_else(overflow)?;
            self.out.seek(SeekFrom::Start(extra_at))?;
            self.out.write_all(&extra)?;
            self.out.seek(SeekFrom::Start(end))?;
            Ok(())
        })();
        result.map_err(|source| {
            self.failed = true;
            ZipError::Io {
                context: "patching a local header to ZIP64",
                source,
            }
        })
    }

    /// Writes the central directory and end records and returns the inner
    /// writer, flushed.
    pub fn finish(mut self) -> Result<W, ZipError> {
        self.check_usable()?;
        if let Some(open) = &self.open {
            return Err(ZipError::EntryStillOpen {
                name: open.name.clone(),
            });
        }
        let force = self.options.force_zip64;
        let cd_offset = self.pos;
        let records = std::mem::take(&mut self.records);
        for rec in &records {
            let size_zip64 = force || rec.size >= U32_MAX_64;
            let offset_zip64 = force || rec.offset >= U32_MAX_64;
            let mut extra = Vec::new();
            if size_zip64 || offset_zip64 {
                let fields = [
                    (size_zip64, rec.size),
                    (size_zip64, rec.size),
                    (offset_zip64, rec.offset),
                ];
                let values: u16 = fields.iter().map(|f| u16::from(f.0)).sum();
                put16(&mut extra, ZIP64_EXTRA_ID);
                put16(&mut extra, values * 8);
                for (present, value) in fields {
                    if present {
                        put64(&mut extra, value);
                    }
                }
            }
            let clamp = |zip64: bool, v: u64| {
                if zip64 {
                    U32_MAX
                } else {
                    u32::try_from(v).unwrap_or(U32_MAX)
                }
            };
            let name_len = u16::try_from(rec.name.len()).map_err(|_| ZipError::NameTooLong {
                len: rec.name.len(),
            })?;
            let extra_len = u16::try_from(extra.len()).map_err(|_| ZipError::ArchiveTooLarge)?;
            let mut h = Vec::with_capacity(CENTRAL_LEN + rec.name.len() + extra.len());
            put32(&mut h, CENTRAL_SIG);
            put16(&mut h, VERSION_TORCH); // made by
            put16(&mut h, VERSION_TORCH); // needed
            put16(&mut h, rec.flags);
            put16(&mut h, METHOD_STORED);
            put16(&mut h, 0); // time
            put16(&mut h, 0); // date
            put32(&mut h, rec.crc32);
            put32(&mut h, clamp(size_zip64, rec.size));
            put32(&mut h, clamp(size_zip64, rec.size));
            put16(&mut h, name_len);
            put16(&mut h, extra_len);
            put16(&mut h, 0); // comment
            put16(&mut h, 0); // disk
            put16(&mut h, 0); // internal attributes
            put32(&mut h, 0); // external attributes
            put32(&mut h, clamp(offset_zip64, rec.offset));
            h.extend_from_slice(rec.name.as_bytes());
            h.extend_from_slice(&extra);
            self.emit(&h, "writing the central directory")?;
        }
        let cd_size = self
            .pos
            .checked_sub(cd_offset)
            .ok_or(ZipError::ArchiveTooLarge)?;
        let count = to_u64(records.len());

        let zip64 = force
            || self.options.always_zip64_end
            || count >= u64::from(U16_MAX)
            || cd_size >= U32_MAX_64
            || cd_offset >= U32_MAX_64;
        let mut end = Vec::with_capacity(ZIP64_EOCD_LEN + ZIP64_LOCATOR_LEN + EOCD_LEN);
        if zip64 {
            let record_offset = self.pos;
            put32(&mut end, ZIP64_EOCD_SIG);
            put64(&mut end, 44);
            put16(&mut end, ZIP64_END_MADE_BY);
            put16(&mut end, VERSION_ZIP64); // needed
            put32(&mut end, 0); // this disk
            put32(&mut end, 0); // central directory disk
            put64(&mut end, count);
            put64(&mut end, count);
            put64(&mut end, cd_size);
            put64(&mut end, cd_offset);
            put32(&mut end, ZIP64_LOCATOR_SIG);
            put32(&mut end, 0); // disk of the ZIP64 record
            put64(&mut end, record_offset);
            put32(&mut end, 1); // total disks
        }
        let count16 = if force {
            U16_MAX
        } else {
            u16::try_from(count).unwrap_or(U16_MAX)
        };
        let clamp32 = |v: u64| {
            if force {
                U32_MAX
            } else {
                u32::try_from(v).unwrap_or(U32_MAX)
            }
        };
        put32(&mut end, EOCD_SIG);
        put16(&mut end, 0); // this disk
        put16(&mut end, 0); // central directory disk
        put16(&mut end, count16);
        put16(&mut end, count16);
        put32(&mut end, clamp32(cd_size));
        put32(&mut end, clamp32(cd_offset));
        put16(&mut end, 0); // comment
        self.emit(&end, "writing the end of central directory")?;

        self.out.into_inner().map_err(|e| ZipError::Io {
            context: "flushing the archive",
            source: e.into_error(),
        })
    }

    fn check_usable(&self) -> Result<(), ZipError> {
        if self.failed {
            Err(ZipError::WriterFailed)
        } else {
            Ok(())
        }
    }

    fn emit(&mut self, bytes: &[u8], context: &'static str) -> Result<(), ZipError> {
        let Some(pos) = self.pos.checked_add(to_u64(bytes.len())) else {
            self.failed = true;
            return Err(ZipError::ArchiveTooLarge);
        };
        if let Err(source) = self.out.write_all(bytes) {
            self.failed = true;
            return Err(ZipError::Io { context, source });
        }
        self.pos = pos;
        Ok(())
    }
}

/// Length of torch's local ZIP64 field: the uncompressed size and a
/// compressed size of 0 (miniz writes the header before compressing), then
/// the header offset, each only where needed.
fn zip64_local_len(sizes: bool, offset: bool) -> u16 {
    match (sizes, offset) {
        (false, false) => 0,
        (true, false) => 20,
        (false, true) => 12,
        (true, true) => 28,
    }
}

/// A local extra area as torch writes it: the ZIP64 field (see
/// [`zip64_local_len`]), then `FB` and `padding` bytes of `Z`.
fn local_extra(size: Option<u64>, offset: Option<u64>, padding: u16) -> Vec<u8> {
    let zip64 = zip64_local_len(size.is_some(), offset.is_some());
    let mut extra = Vec::with_capacity(usize::from(zip64) + 4 + usize::from(padding));
    if zip64 > 0 {
        put16(&mut extra, ZIP64_EXTRA_ID);
        put16(&mut extra, zip64 - 4);
        if let Some(size) = size {
            put64(&mut extra, size);
            put64(&mut extra, 0);
        }
        if let Some(offset) = offset {
            put64(&mut extra, offset);
        }
    }
    put16(&mut extra, PADDING_EXTRA_ID);
    put16(&mut extra, padding);
    extra.resize(extra.len() + usize::from(padding), b'Z');
    extra
}

fn overflow() -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, "offset overflow")
}

fn put16(out: &mut Vec<u8>, v: u16) {
    out.extend_from_slice(&v.to_le_bytes());
}

fn put32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_le_bytes());
}

fn put64(out: &mut Vec<u8>, v: u64) {
    out.extend_from_slice(&v.to_le_bytes());
}
