//! Parsing and validating a GGUF header.
//!
//! The rules are llama.cpp's (`ggml/src/gguf.cpp`, `gguf_init_from_reader`)
//! and stricter where that costs compatible files nothing: every count,
//! string and array length is checked against the bytes left in the file
//! before anything is allocated for it.

use std::collections::{HashMap, HashSet};
use std::ops::Range;

use weightkit_core::dtype::REMOVED_GGML_TYPE_IDS;
use weightkit_core::{Array, DType, Metadata, Packing, Shape, TensorInfo, Value, ValueType};

use crate::error::{Error, Result};

/// The file magic.
pub const MAGIC: &[u8; 4] = b"GGUF";
/// The version this crate writes.
pub const VERSION: u32 = 3;
/// Alignment when `general.alignment` is absent.
pub const DEFAULT_ALIGNMENT: usize = 32;
/// ggml's `GGML_MAX_DIMS`.
pub const MAX_DIMS: usize = 4;
/// ggml's `GGML_MAX_NAME`: names must be shorter than this.
pub const MAX_NAME: usize = 64;
/// llama.cpp's `GGUF_MAX_STRING_LENGTH`.
pub const MAX_STRING_LEN: u64 = 1 << 30;
/// llama.cpp's `GGUF_MAX_ARRAY_ELEMENTS`.
pub const MAX_ARRAY_LEN: u64 = 1 << 30;
/// How deep nested arrays may go when they are allowed at all.
const MAX_NESTING: usize = 8;

/// Reader options. The defaults are llama.cpp's rules.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReadOptions {
    /// Accept arrays of arrays (gguf-py writes them; llama.cpp rejects them).
    pub allow_nested_arrays: bool,
    /// Longest string accepted.
    pub max_string_len: u64,
    /// Most array elements accepted.
    pub max_array_len: u64,
}

impl Default for ReadOptions {
    fn default() -> Self {
        ReadOptions {
            allow_nested_arrays: false,
            max_string_len: MAX_STRING_LEN,
            max_array_len: MAX_ARRAY_LEN,
        }
    }
}

/// One tensor as the file describes it, beyond the core [`TensorInfo`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GgufTensorInfo {
    /// Dimensions in ggml order (innermost first), `n_dims` of them.
    pub ne: Vec<u64>,
    /// The ggml type id.
    pub type_id: u32,
    /// Offset relative to the data section, as stored.
    pub offset: u64,
    /// Absolute byte range of the data in the file (unpadded).
    pub range: Range<usize>,
}

/// A validated GGUF header.
#[derive(Clone, Debug)]
pub struct Header {
    version: u32,
    metadata: Metadata,
    infos: Vec<TensorInfo>,
    ggml: Vec<GgufTensorInfo>,
    alignment: usize,
    data_offset: usize,
    by_name: HashMap<String, usize>,
}

struct Cur<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Cur<'a> {
    fn left(&self) -> usize {
        self.buf.len().saturating_sub(self.pos)
    }

    fn take(&mut self, n: u64, what: &'static str) -> Result<&'a [u8]> {
        let available = self.left();
        let short = || Error::Truncated {
            what,
            offset: self.pos,
            needed: n,
            available,
        };
        let n = usize::try_from(n).map_err(|_| short())?;
        let end = self.pos.checked_add(n).ok_or_else(short)?;
        let bytes = self.buf.get(self.pos..end).ok_or_else(short)?;
        self.pos = end;
        Ok(bytes)
    }

    fn array<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N]> {
        let b = self.take(N as u64, what)?;
        let mut out = [0u8; N];
        out.copy_from_slice(b);
        Ok(out)
    }

    fn u32(&mut self, what: &'static str) -> Result<u32> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }

    fn i32(&mut self, what: &'static str) -> Result<i32> {
        Ok(i32::from_le_bytes(self.array(what)?))
    }

    fn u64(&mut self, what: &'static str) -> Result<u64> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }

    fn i64(&mut self, what: &'static str) -> Result<i64> {
        Ok(i64::from_le_bytes(self.array(what)?))
    }

    /// A length-prefixed string's raw bytes, length checked against the
    /// limit and the file before anything is touched.
    fn string_bytes(&mut self, opts: &ReadOptions, what: &'static str) -> Result<&'a [u8]> {
        let at = self.pos;
        let len = self.u64(what)?;
        if len > opts.max_string_len {
            return Err(Error::StringTooLong {
                offset: at,
                len,
                max: opts.max_string_len,
            });
        }
        self.take(len, what)
    }
}

fn value_type(id: i32) -> Option<ValueType> {
    Some(match id {
        0 => ValueType::U8,
        1 => ValueType::I8,
        2 => ValueType::U16,
        3 => ValueType::I16,
        4 => ValueType::U32,
        5 => ValueType::I32,
        6 => ValueType::F32,
        7 => ValueType::Bool,
        8 => ValueType::String,
        9 => ValueType::Array,
        10 => ValueType::U64,
        11 => ValueType::I64,
        12 => ValueType::F64,
        _ => return None,
    })
}

/// The GGUF type id of a value type.
pub fn value_type_id(t: ValueType) -> u32 {
    match t {
        ValueType::U8 => 0,
        ValueType::I8 => 1,
        ValueType::U16 => 2,
        ValueType::I16 => 3,
        ValueType::U32 => 4,
        ValueType::I32 => 5,
        ValueType::F32 => 6,
        ValueType::Bool => 7,
        ValueType::String => 8,
        ValueType::Array => 9,
        ValueType::U64 => 10,
        ValueType::I64 => 11,
        _ => 12,
    }
}

/// Smallest encoding of one element: strings need their 8-byte length,
/// arrays their 4-byte type and 8-byte count.
fn min_size(t: ValueType) -> u64 {
    match t {
        ValueType::U8 | ValueType::I8 | ValueType::Bool => 1,
        ValueType::U16 | ValueType::I16 => 2,
        ValueType::U32 | ValueType::I32 | ValueType::F32 => 4,
        ValueType::String | ValueType::U64 | ValueType::I64 | ValueType::F64 => 8,
        _ => 12,
    }
}

fn string_value(bytes: &[u8]) -> Value {
    match std::str::from_utf8(bytes) {
        Ok(s) => Value::String(s.to_owned()),
        Err(_) => Value::RawString(bytes.to_vec()),
    }
}

macro_rules! read_vec {
    ($cur:expr, $n:expr, $ty:ty, $what:literal) => {{
        let bytes = $cur.take($n * std::mem::size_of::<$ty>() as u64, $what)?;
        bytes
            .chunks_exact(std::mem::size_of::<$ty>())
            .map(|c| {
                let mut b = [0u8; std::mem::size_of::<$ty>()];
                b.copy_from_slice(c);
                <$ty>::from_le_bytes(b)
            })
            .collect::<Vec<$ty>>()
    }};
}

fn read_scalar(cur: &mut Cur<'_>, t: ValueType, opts: &ReadOptions) -> Result<Value> {
    Ok(match t {
        ValueType::U8 => Value::U8(u8::from_le_bytes(cur.array("u8 value")?)),
        ValueType::I8 => Value::I8(i8::from_le_bytes(cur.array("i8 value")?)),
        ValueType::U16 => Value::U16(u16::from_le_bytes(cur.array("u16 value")?)),
        ValueType::I16 => Value::I16(i16::from_le_bytes(cur.array("i16 value")?)),
        ValueType::U32 => Value::U32(cur.u32("u32 value")?),
        ValueType::I32 => Value::I32(cur.i32("i32 value")?),
        ValueType::F32 => Value::F32(f32::from_le_bytes(cur.array("f32 value")?)),
        // As llama.cpp: any non-zero byte is true.
        ValueType::Bool => Value::Bool(cur.array::<1>("bool value")?[0] != 0),
        ValueType::String => string_value(cur.string_bytes(opts, "string value")?),
        ValueType::U64 => Value::U64(cur.u64("u64 value")?),
        ValueType::I64 => Value::I64(cur.i64("i64 value")?),
        _ => Value::F64(f64::from_le_bytes(cur.array("f64 value")?)),
    })
}

fn read_array(cur: &mut Cur<'_>, key: &str, opts: &ReadOptions, depth: usize) -> Result<Array> {
    let at = cur.pos;
    let type_id = cur.i32("array element type")?;
    let t = value_type(type_id).ok_or_else(|| Error::InvalidValueType {
        key: key.to_owned(),
        type_id,
        offset: at,
    })?;
    if t == ValueType::Array && (!opts.allow_nested_arrays || depth >= MAX_NESTING) {
        return Err(Error::NestedArray {
            key: key.to_owned(),
            offset: at,
        });
    }
    let len_at = cur.pos;
    let n = cur.u64("array length")?;
    if n > opts.max_array_len {
        return Err(Error::ArrayTooLong {
            key: key.to_owned(),
            offset: len_at,
            len: n,
            max: opts.max_array_len,
        });
    }
    // Checked against the file before any allocation.
    let available = cur.left();
    if n.saturating_mul(min_size(t)) > available as u64 {
        return Err(Error::CountPastEnd {
            what: "array length",
            offset: len_at,
            count: n,
            available,
        });
    }
    // n * min_size <= available, so n fits in usize.
    let n_us = n as usize;
    Ok(match t {
        ValueType::U8 => Array::U8(cur.take(n, "u8 array")?.to_vec()),
        ValueType::I8 => Array::I8(read_vec!(cur, n, i8, "i8 array")),
        ValueType::U16 => Array::U16(read_vec!(cur, n, u16, "u16 array")),
        ValueType::I16 => Array::I16(read_vec!(cur, n, i16, "i16 array")),
        ValueType::U32 => Array::U32(read_vec!(cur, n, u32, "u32 array")),
        ValueType::I32 => Array::I32(read_vec!(cur, n, i32, "i32 array")),
        ValueType::F32 => Array::F32(read_vec!(cur, n, f32, "f32 array")),
        ValueType::U64 => Array::U64(read_vec!(cur, n, u64, "u64 array")),
        ValueType::I64 => Array::I64(read_vec!(cur, n, i64, "i64 array")),
        ValueType::F64 => Array::F64(read_vec!(cur, n, f64, "f64 array")),
        ValueType::Bool => {
            Array::Bool(cur.take(n, "bool array")?.iter().map(|&b| b != 0).collect())
        }
        ValueType::String => {
            let mut out = Vec::with_capacity(n_us.min(4096));
            let mut raw: Option<Vec<Value>> = None;
            for _ in 0..n_us {
                let b = cur.string_bytes(opts, "string array element")?;
                match (&mut raw, std::str::from_utf8(b)) {
                    (None, Ok(s)) => out.push(s.to_owned()),
                    (None, Err(_)) => {
                        let mut all: Vec<Value> = Vec::with_capacity(n_us);
                        all.extend(out.drain(..).map(Value::String));
                        all.push(Value::RawString(b.to_vec()));
                        raw = Some(all);
                    }
                    (Some(all), _) => all.push(string_value(b)),
                }
            }
            match raw {
                Some(all) => Array::Strings(all),
                None => Array::String(out),
            }
        }
        _ => {
            let mut out = Vec::with_capacity(n_us);
            for _ in 0..n_us {
                out.push(read_array(cur, key, opts, depth + 1)?);
            }
            Array::Array(out)
        }
    })
}

fn pad(x: u64, align: usize) -> Option<u64> {
    let a = align as u64;
    x.checked_add(a - 1).map(|v| v / a * a)
}

impl Header {
    /// Parses and validates a whole GGUF file held in `buf`.
    pub fn parse(buf: &[u8], opts: &ReadOptions) -> Result<Header> {
        let mut cur = Cur { buf, pos: 0 };
        let magic = buf.get(..4).unwrap_or(buf);
        if magic != MAGIC {
            if magic.len() < 4 && MAGIC.starts_with(magic) {
                cur.take(4, "magic")?;
            }
            return Err(Error::BadMagic {
                found: magic.to_vec(),
            });
        }
        cur.pos = 4;
        let version = cur.u32("version")?;
        if version != 0 && version & 0xffff == 0 {
            return Err(Error::WrongEndianness { version });
        }
        if !(2..=VERSION).contains(&version) {
            return Err(Error::UnsupportedVersion { version });
        }
        let count = |cur: &mut Cur<'_>, what: &'static str, min: u64| -> Result<u64> {
            let at = cur.pos;
            let c = cur.i64(what)?;
            let c = u64::try_from(c).map_err(|_| Error::NegativeCount {
                what,
                offset: at,
                count: c,
            })?;
            let available = cur.left();
            if c.saturating_mul(min) > available as u64 {
                return Err(Error::CountPastEnd {
                    what,
                    offset: at,
                    count: c,
                    available,
                });
            }
            Ok(c)
        };
        // Minimal encodings: a tensor info is name length 8 + n_dims 4 +
        // type 4 + offset 8; a key-value pair is key length 8 + one key
        // byte + type 4 + a one-byte value.
        let n_tensors = count(&mut cur, "tensor count", 24)?;
        let n_kv = count(&mut cur, "key-value count", 14)?;

        // Both counts fit in usize: checked against the buffer above.
        // Capacities are capped: a declared count only ever reserves what the
        // bytes read so far could justify, the rest grows as entries parse.
        let cap = |n: u64| (n as usize).min(256);
        let mut metadata_entries: Vec<(String, Value)> = Vec::with_capacity(cap(n_kv));
        let mut keys: HashSet<String> = HashSet::with_capacity(cap(n_kv));
        for index in 0..n_kv {
            let at = cur.pos;
            let key_bytes = cur.string_bytes(opts, "key")?;
            if key_bytes.is_empty() {
                return Err(Error::EmptyKey { index, offset: at });
            }
            let key = std::str::from_utf8(key_bytes)
                .map_err(|_| Error::NotUtf8 {
                    what: "key",
                    offset: at,
                })?
                .to_owned();
            if !keys.insert(key.clone()) {
                return Err(Error::DuplicateKey { key, offset: at });
            }
            let type_at = cur.pos;
            let type_id = cur.i32("value type")?;
            let t = value_type(type_id).ok_or_else(|| Error::InvalidValueType {
                key: key.clone(),
                type_id,
                offset: type_at,
            })?;
            let value = if t == ValueType::Array {
                Value::Array(read_array(&mut cur, &key, opts, 0)?)
            } else {
                read_scalar(&mut cur, t, opts)?
            };
            metadata_entries.push((key, value));
        }
        drop(keys);
        let metadata = Metadata::from_entries(metadata_entries)
            .map_err(|key| Error::DuplicateKey { key, offset: 0 })?;

        let alignment = match metadata.get("general.alignment") {
            None => DEFAULT_ALIGNMENT,
            Some(Value::U32(a)) if *a != 0 && a.is_power_of_two() => *a as usize,
            Some(Value::U32(a)) => {
                return Err(Error::BadAlignment {
                    alignment: u64::from(*a),
                });
            }
            Some(other) => {
                return Err(Error::AlignmentType {
                    found: other.value_type(),
                });
            }
        };

        let mut infos = Vec::with_capacity(cap(n_tensors));
        let mut ggml = Vec::with_capacity(cap(n_tensors));
        let mut by_name: HashMap<String, usize> = HashMap::with_capacity(cap(n_tensors));
        let mut offset_fields = Vec::with_capacity(cap(n_tensors));
        for _ in 0..n_tensors {
            let at = cur.pos;
            let name_bytes = cur.string_bytes(opts, "tensor name")?;
            if name_bytes.len() >= MAX_NAME {
                return Err(Error::NameTooLong {
                    len: name_bytes.len(),
                    name: String::from_utf8_lossy(name_bytes).into_owned(),
                    offset: at,
                });
            }
            let name = std::str::from_utf8(name_bytes)
                .map_err(|_| Error::NotUtf8 {
                    what: "tensor name",
                    offset: at,
                })?
                .to_owned();
            if name_bytes.len() >= MAX_NAME {
                return Err(Error::NameTooLong {
                    len: name_bytes.len(),
                    name,
                    offset: at,
                });
            }
            if by_name.contains_key(&name) {
                return Err(Error::DuplicateTensor { name, offset: at });
            }
            let dims_at = cur.pos;
            let n_dims = cur.u32("dimension count")?;
            if n_dims as usize > MAX_DIMS {
                return Err(Error::TooManyDims {
                    name,
                    n_dims,
                    offset: dims_at,
                });
            }
            let mut ne = Vec::with_capacity(n_dims as usize);
            for dim in 0..n_dims as usize {
                let d_at = cur.pos;
                let d = cur.i64("dimension")?;
                let d = u64::try_from(d).map_err(|_| Error::NegativeDim {
                    name: name.clone(),
                    dim,
                    value: d,
                    offset: d_at,
                })?;
                ne.push(d);
            }
            // As llama.cpp: a non-empty tensor's element count must be < 2^63 - 1.
            let elems = ne.iter().try_fold(1u64, |acc, &d| acc.checked_mul(d));
            let overflow = || Error::SizeOverflow {
                name: name.clone(),
                ne: ne.clone(),
            };
            let elems = match elems {
                Some(e) if e < i64::MAX as u64 => e,
                _ if ne.contains(&0) => 0,
                _ => return Err(overflow()),
            };
            let type_at = cur.pos;
            let type_id = cur.i32("ggml type")?;
            let dtype = u32::try_from(type_id)
                .ok()
                .and_then(DType::from_ggml_type_id);
            let Some(dtype) = dtype else {
                let removed =
                    u32::try_from(type_id).is_ok_and(|t| REMOVED_GGML_TYPE_IDS.contains(&t));
                return Err(if removed {
                    Error::RemovedType {
                        name,
                        type_id,
                        offset: type_at,
                    }
                } else {
                    Error::UnknownType {
                        name,
                        type_id,
                        offset: type_at,
                    }
                });
            };
            let row = ne.first().copied().unwrap_or(1);
            let (block, block_bytes) = match dtype.packing() {
                Packing::Block { elems, bytes } => (elems, bytes),
                Packing::Element { bytes } => (1, bytes),
                // Sub-byte safetensors types have no ggml id.
                Packing::Bits { .. } => (1, 1),
            };
            if row % block as u64 != 0 {
                return Err(Error::NotWholeBlocks {
                    name,
                    dtype,
                    row,
                    block,
                });
            }
            let n_bytes = (elems / block as u64)
                .checked_mul(block_bytes as u64)
                .filter(|&b| usize::try_from(b).is_ok())
                .ok_or_else(overflow)?;
            let offset_at = cur.pos;
            let offset = cur.u64("tensor data offset")?;
            let dims: Option<Vec<usize>> =
                ne.iter().rev().map(|&d| usize::try_from(d).ok()).collect();
            let shape = Shape::new(dims.ok_or_else(overflow)?);
            by_name.insert(name.clone(), infos.len());
            infos.push(TensorInfo { name, dtype, shape });
            offset_fields.push((offset_at, n_bytes));
            ggml.push(GgufTensorInfo {
                ne,
                type_id: dtype.ggml_type_id().unwrap_or(0),
                offset,
                range: 0..0,
            });
        }

        // The data section starts at the next multiple of the alignment
        // (llama.cpp only pads when there are tensors).
        let header_end = cur.pos as u64;
        let data_offset = if n_tensors > 0 {
            pad(header_end, alignment).unwrap_or(u64::MAX)
        } else {
            header_end
        };
        if data_offset > buf.len() as u64 {
            return Err(Error::Truncated {
                what: "padding before the data section",
                offset: cur.pos,
                needed: data_offset - header_end,
                available: cur.left(),
            });
        }
        let data_offset = data_offset as usize;
        let mut expected = 0u64;
        for ((info, g), &(offset_at, n_bytes)) in
            infos.iter().zip(ggml.iter_mut()).zip(&offset_fields)
        {
            if g.offset != expected {
                return Err(Error::BadOffset {
                    name: info.name.clone(),
                    found: g.offset,
                    expected,
                    offset: offset_at,
                });
            }
            let start = (data_offset as u64).checked_add(g.offset);
            let end = start.and_then(|s| s.checked_add(n_bytes));
            match (start, end) {
                (Some(s), Some(e)) if e <= buf.len() as u64 => g.range = s as usize..e as usize,
                _ => {
                    return Err(Error::DataPastEnd {
                        name: info.name.clone(),
                        end: end.unwrap_or(u64::MAX),
                        file_len: buf.len(),
                    });
                }
            }
            expected = pad(n_bytes, alignment)
                .and_then(|p| expected.checked_add(p))
                .ok_or_else(|| Error::SizeOverflow {
                    name: info.name.clone(),
                    ne: g.ne.clone(),
                })?;
        }
        // As llama.cpp's gguf_init (which reads the padded data section
        // whole): the last tensor's padding must be present too.
        let data_end = (data_offset as u64).saturating_add(expected);
        if data_end > buf.len() as u64 {
            return Err(Error::Truncated {
                what: "padding after the last tensor",
                offset: buf.len(),
                needed: data_end - buf.len() as u64,
                available: 0,
            });
        }
        Ok(Header {
            version,
            metadata,
            infos,
            ggml,
            alignment,
            data_offset,
            by_name,
        })
    }

    /// The file's GGUF version (2 or 3).
    pub fn version(&self) -> u32 {
        self.version
    }

    /// All key-value pairs, in file order.
    pub fn metadata(&self) -> &Metadata {
        &self.metadata
    }

    /// Tensors in file order, shapes row-major (outermost first).
    pub fn tensors(&self) -> &[TensorInfo] {
        &self.infos
    }

    /// The GGUF-level description of tensor `i` (ggml-order dims, type id,
    /// stored offset, absolute byte range).
    pub fn ggml_info(&self, i: usize) -> Option<&GgufTensorInfo> {
        self.ggml.get(i)
    }

    /// The alignment in force.
    pub fn alignment(&self) -> usize {
        self.alignment
    }

    /// Absolute offset of the data section.
    pub fn data_offset(&self) -> usize {
        self.data_offset
    }

    /// Position of a tensor by name.
    pub fn position(&self, name: &str) -> Option<usize> {
        self.by_name.get(name).copied()
    }
}
