//! Parsing and validating a safetensors header.
//!
//! The layout: an 8-byte little-endian header length `n`, `n` bytes of
//! UTF-8 JSON mapping tensor names to `{dtype, shape, data_offsets}` (plus an
//! optional `__metadata__` object of strings), then the data section.
//!
//! Validation is at least as strict as the `safetensors` crate's: the header
//! length is capped before anything is read, every length is checked
//! arithmetic, offsets (sorted) must tile the data section exactly with no
//! gap or overlap, and each byte range must match its shape and dtype.
//! Stricter: duplicate tensor names and duplicate metadata keys are errors
//! (JSON parsers silently keep the last), and every failure is its own error
//! variant naming the tensor and the offsets.
//!
//! Nothing is allocated before the header length is checked against the
//! buffer, and what is allocated afterwards is proportional to the header.

use std::borrow::Cow;
use std::fmt;
use std::ops::Range;

use serde::Deserialize;
use serde::de::DeserializeSeed;
use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde_json::value::RawValue;
use weightkit_core::{DType, Metadata, Packing, Shape, TensorInfo, Value};

use crate::error::{Error, Result};

/// The largest header accepted (the `safetensors` crate's limit).
pub const MAX_HEADER_SIZE: usize = 100_000_000;

/// Size of the header-length prefix.
pub const N_LEN: usize = 8;

/// A validated header: the tensors in data order with their absolute byte
/// ranges, and the metadata.
#[derive(Debug, Clone)]
pub struct Header {
    infos: Vec<TensorInfo>,
    ranges: Vec<Range<usize>>,
    metadata: Metadata,
    /// Positions in `infos`, sorted by tensor name.
    index: Vec<usize>,
    header_len: usize,
}

impl Header {
    /// Parses and validates the header of a complete safetensors file held in
    /// `buf`, checking that the data section matches it exactly.
    ///
    /// Validation runs before the header is materialised: a first pass keeps
    /// only borrowed names and 24 bytes per tensor (allocated once, exactly),
    /// so a malformed or truncated file is rejected having allocated less
    /// than its own size. Only a fully valid header is then turned into
    /// [`TensorInfo`]s.
    pub fn parse(buf: &[u8]) -> Result<Header> {
        let Some(prefix) = buf.get(..N_LEN) else {
            return Err(Error::FileTooShort { len: buf.len() });
        };
        let mut len_bytes = [0u8; N_LEN];
        len_bytes.copy_from_slice(prefix);
        let n64 = u64::from_le_bytes(len_bytes);
        let n = usize::try_from(n64)
            .ok()
            .filter(|&n| n <= MAX_HEADER_SIZE)
            .ok_or(Error::HeaderTooLarge {
                len: n64,
                max: MAX_HEADER_SIZE,
            })?;
        // n <= 1e8, so this cannot overflow.
        let data_start = N_LEN + n;
        let Some(header) = buf.get(N_LEN..data_start) else {
            return Err(Error::HeaderPastEnd {
                len: n64,
                file_len: buf.len(),
            });
        };
        let text = std::str::from_utf8(header).map_err(|e| Error::HeaderNotUtf8 {
            offset: N_LEN + e.valid_up_to(),
        })?;
        let json_err = |e: serde_json::Error| Error::HeaderJson {
            offset: N_LEN + json_offset(text, &e),
            message: e.to_string(),
        };
        // Count first so the entry list is allocated once, at its exact size.
        let Count(count) = serde_json::from_str(text).map_err(json_err)?;
        let entries = {
            let mut de = serde_json::Deserializer::from_str(text);
            let Entries(entries) = EntriesSeed(count).deserialize(&mut de).map_err(json_err)?;
            de.end().map_err(json_err)?;
            entries
        };

        // Pass 1: validate every entry, keeping (begin, end, entry) only.
        let mut spans: Vec<(u64, u64, usize)> = Vec::with_capacity(entries.len());
        let mut meta_entry = None;
        for (i, (key, value)) in entries.iter().enumerate() {
            if key == "__metadata__" {
                if meta_entry.replace(i).is_some() {
                    return Err(Error::DuplicateName {
                        name: key.to_string(),
                    });
                }
                continue;
            }
            let info: CheckInfo<'_> =
                serde_json::from_str(value.get()).map_err(|e| Error::InvalidEntry {
                    name: key.to_string(),
                    message: e.to_string(),
                })?;
            let Some(dtype) = DType::from_safetensors_name(&info.dtype) else {
                return Err(Error::UnknownDType {
                    name: key.to_string(),
                    dtype: info.dtype.into_owned(),
                });
            };
            let (begin, end) = info.data_offsets;
            if end < begin {
                return Err(Error::OffsetsReversed {
                    name: key.to_string(),
                    begin,
                    end,
                });
            }
            let expected = match expected_bytes(dtype, &info.shape) {
                Some(b) => b,
                None => {
                    let full: FullInfo =
                        serde_json::from_str(value.get()).map_err(|e| Error::InvalidEntry {
                            name: key.to_string(),
                            message: e.to_string(),
                        })?;
                    let shape = Shape::new(
                        full.shape
                            .iter()
                            .map(|&d| usize::try_from(d).unwrap_or(usize::MAX))
                            .collect::<Vec<_>>(),
                    );
                    let source = shape
                        .byte_len(dtype)
                        .err()
                        .unwrap_or(weightkit_core::CoreError::Overflow);
                    return Err(Error::InvalidShape {
                        name: key.to_string(),
                        dtype,
                        shape,
                        source: Box::new(source),
                    });
                }
            };
            if end - begin != expected {
                let full: FullInfo =
                    serde_json::from_str(value.get()).map_err(|e| Error::InvalidEntry {
                        name: key.to_string(),
                        message: e.to_string(),
                    })?;
                return Err(Error::SizeMismatch {
                    name: key.to_string(),
                    dtype,
                    shape: full.shape(),
                    expected,
                    found: end - begin,
                });
            }
            spans.push((begin, end, i));
        }

        // Names must be unique: sort entry indices by name.
        let mut by_name: Vec<usize> = spans.iter().map(|s| s.2).collect();
        by_name.sort_unstable_by(|&a, &b| entries[a].0.cmp(&entries[b].0));
        for w in by_name.windows(2) {
            if entries[w[0]].0 == entries[w[1]].0 {
                return Err(Error::DuplicateName {
                    name: entries[w[0]].0.to_string(),
                });
            }
        }

        // Data order: sorted by offsets, as the `safetensors` crate does (the
        // JSON order is not significant). They must tile the data section.
        spans.sort_unstable_by_key(|s| (s.0, s.1));
        let data_len = (buf.len() - data_start) as u64;
        let mut prev: Option<(u64, usize)> = None;
        for &(begin, end, i) in &spans {
            let prev_end = prev.map_or(0, |p| p.0);
            if begin < prev_end {
                let previous = prev.map(|p| entries[p.1].0.to_string()).unwrap_or_default();
                return Err(Error::Overlap {
                    name: entries[i].0.to_string(),
                    begin,
                    end,
                    previous,
                    previous_end: prev_end,
                });
            }
            if begin > prev_end {
                return Err(Error::Gap {
                    name: entries[i].0.to_string(),
                    begin,
                    gap: begin - prev_end,
                });
            }
            if end > data_len {
                return Err(Error::DataPastEnd {
                    name: entries[i].0.to_string(),
                    end: (data_start as u64).saturating_add(end),
                    file_len: buf.len(),
                });
            }
            prev = Some((end, i));
        }
        let last_end = prev.map_or(0, |p| p.0);
        if last_end != data_len {
            return Err(Error::TrailingBytes {
                end: data_start + last_end as usize,
                extra: (data_len - last_end) as usize,
            });
        }
        let metadata = match meta_entry {
            Some(i) => parse_metadata(entries[i].1)?,
            None => Metadata::new(),
        };

        // Pass 2: the header is valid; materialise it in data order.
        let mut infos = Vec::with_capacity(spans.len());
        let mut ranges = Vec::with_capacity(spans.len());
        let mut position_of_entry = vec![0usize; entries.len()];
        for &(begin, end, i) in &spans {
            let (key, value) = &entries[i];
            let full: FullInfo =
                serde_json::from_str(value.get()).map_err(|e| Error::InvalidEntry {
                    name: key.to_string(),
                    message: e.to_string(),
                })?;
            position_of_entry[i] = infos.len();
            infos.push(TensorInfo {
                name: key.to_string(),
                dtype: DType::from_safetensors_name(&full.dtype).unwrap_or(DType::U8),
                shape: full.shape(),
            });
            // end <= data_len, so both fit in usize.
            ranges.push(data_start + begin as usize..data_start + end as usize);
        }
        let index = by_name.iter().map(|&i| position_of_entry[i]).collect();
        Ok(Header {
            infos,
            ranges,
            metadata,
            index,
            header_len: n,
        })
    }

    /// Tensors in data order.
    pub fn tensors(&self) -> &[TensorInfo] {
        &self.infos
    }

    /// The absolute byte range of tensor `i` in the file.
    pub fn range(&self, i: usize) -> Option<Range<usize>> {
        self.ranges.get(i).cloned()
    }

    /// Position of a tensor by name (binary search over a name-sorted index).
    pub fn position(&self, name: &str) -> Option<usize> {
        self.index
            .binary_search_by(|&i| self.infos[i].name.as_str().cmp(name))
            .ok()
            .map(|k| self.index[k])
    }

    /// `__metadata__`, as string values.
    pub fn metadata(&self) -> &Metadata {
        &self.metadata
    }

    /// The JSON header's length in bytes (the `n` of the prefix).
    pub fn header_len(&self) -> usize {
        self.header_len
    }

    /// Absolute offset of the data section.
    pub fn data_start(&self) -> usize {
        N_LEN + self.header_len
    }
}

/// Bytes a tensor of `dtype` and `shape` needs, or `None` if the shape
/// overflows or breaks the dtype's packing rule.
fn expected_bytes(dtype: DType, shape: &ShapeSummary) -> Option<u64> {
    let elems = shape.elems?;
    let bytes = match dtype.packing() {
        Packing::Element { bytes } => elems.checked_mul(bytes)?,
        Packing::Bits { bits } => {
            let total = elems.checked_mul(bits)?;
            if total % 8 != 0 {
                return None;
            }
            total / 8
        }
        Packing::Block {
            elems: block,
            bytes,
        } => {
            if !shape.last.is_multiple_of(block) {
                return None;
            }
            (elems / block).checked_mul(bytes)?
        }
    };
    u64::try_from(bytes).ok()
}

/// Approximate byte offset (within the header text) of a JSON error.
fn json_offset(text: &str, e: &serde_json::Error) -> usize {
    let line = e.line().saturating_sub(1);
    let col = e.column().saturating_sub(1);
    let line_start: usize = text.split_inclusive('\n').take(line).map(str::len).sum();
    line_start.saturating_add(col).min(text.len())
}

fn parse_metadata(value: &RawValue) -> Result<Metadata> {
    let text = value.get();
    if text.trim() == "null" {
        return Ok(Metadata::new());
    }
    let invalid = |e: serde_json::Error| Error::InvalidMetadata {
        message: e.to_string(),
    };
    let Count(count) = serde_json::from_str(text).map_err(invalid)?;
    let mut de = serde_json::Deserializer::from_str(text);
    let Entries(entries) = EntriesSeed(count).deserialize(&mut de).map_err(invalid)?;
    de.end().map_err(invalid)?;
    // Validate before materialising: string values, unique keys.
    let mut order: Vec<usize> = (0..entries.len()).collect();
    for (key, v) in &entries {
        if !v.get().starts_with('"') {
            return Err(Error::InvalidMetadata {
                message: format!("value of `{key}` is not a string: {}", truncate(v.get())),
            });
        }
    }
    order.sort_unstable_by(|&a, &b| entries[a].0.cmp(&entries[b].0));
    for w in order.windows(2) {
        if entries[w[0]].0 == entries[w[1]].0 {
            return Err(Error::DuplicateMetadataKey {
                key: entries[w[0]].0.to_string(),
            });
        }
    }
    drop(order);
    let mut out = Vec::with_capacity(entries.len());
    for (key, v) in &entries {
        let s: String = serde_json::from_str(v.get()).map_err(invalid)?;
        out.push((key.to_string(), Value::String(s)));
    }
    Metadata::from_entries(out).map_err(|key| Error::DuplicateMetadataKey { key })
}

fn truncate(s: &str) -> String {
    match s.char_indices().nth(40) {
        Some((i, _)) => format!("{}...", &s[..i]),
        None => s.to_owned(),
    }
}

/// A tensor entry as validation needs it: no allocation unless the dtype
/// string has escapes.
#[derive(Deserialize)]
struct CheckInfo<'a> {
    #[serde(borrow)]
    dtype: Cow<'a, str>,
    shape: ShapeSummary,
    data_offsets: (u64, u64),
}

/// A tensor entry with its full shape.
#[derive(Deserialize)]
struct FullInfo {
    dtype: String,
    shape: Vec<u64>,
}

impl FullInfo {
    fn shape(&self) -> Shape {
        Shape::new(
            self.shape
                .iter()
                .map(|&d| usize::try_from(d).unwrap_or(usize::MAX))
                .collect::<Vec<_>>(),
        )
    }
}

/// A shape's element count (`None` on overflow) and innermost dimension,
/// computed while parsing without storing the dimensions.
struct ShapeSummary {
    elems: Option<usize>,
    last: usize,
}

impl<'de> Deserialize<'de> for ShapeSummary {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = ShapeSummary;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an array of non-negative integers")
            }
            fn visit_seq<A: de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> std::result::Result<ShapeSummary, A::Error> {
                let mut elems = Some(1usize);
                let mut last = 1usize;
                while let Some(d) = seq.next_element::<u64>()? {
                    let d = usize::try_from(d).ok();
                    elems = elems.and_then(|e| e.checked_mul(d?));
                    last = d.unwrap_or(usize::MAX);
                }
                Ok(ShapeSummary { elems, last })
            }
        }
        d.deserialize_seq(V)
    }
}

/// Counts the entries of a JSON object without storing them.
struct Count(usize);

impl<'de> Deserialize<'de> for Count {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Count;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(
                self,
                mut map: A,
            ) -> std::result::Result<Count, A::Error> {
                let mut n = 0;
                while map.next_key::<de::IgnoredAny>()?.is_some() {
                    map.next_value::<de::IgnoredAny>()?;
                    n += 1;
                }
                Ok(Count(n))
            }
        }
        d.deserialize_map(V)
    }
}

/// The entries of a JSON object, in order, duplicates kept, values unparsed.
struct Entries<'a>(Vec<(Cow<'a, str>, &'a RawValue)>);

/// A key that borrows from the input unless it contains escapes.
struct Key<'a>(Cow<'a, str>);

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string key")
            }
            fn visit_borrowed_str<E: de::Error>(
                self,
                v: &'de str,
            ) -> std::result::Result<Key<'de>, E> {
                Ok(Key(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> std::result::Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E: de::Error>(self, v: String) -> std::result::Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(v)))
            }
        }
        d.deserialize_str(V)
    }
}

/// Deserialises [`Entries`] into a list of exactly the counted capacity.
struct EntriesSeed(usize);

impl<'de> DeserializeSeed<'de> for EntriesSeed {
    type Value = Entries<'de>;

    fn deserialize<D: Deserializer<'de>>(
        self,
        d: D,
    ) -> std::result::Result<Entries<'de>, D::Error> {
        struct V(usize);
        impl<'de> Visitor<'de> for V {
            type Value = Entries<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(
                self,
                mut map: A,
            ) -> std::result::Result<Entries<'de>, A::Error> {
                let mut out = Vec::with_capacity(self.0);
                while let Some(Key(k)) = map.next_key::<Key<'de>>()? {
                    let v: &'de RawValue = map.next_value()?;
                    out.push((k, v));
                }
                Ok(Entries(out))
            }
        }
        d.deserialize_map(V(self.0))
    }
}

impl<'de> Deserialize<'de> for Entries<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        EntriesSeed(0).deserialize(d)
    }
}
