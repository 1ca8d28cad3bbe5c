//! The crate's error type.

use std::path::PathBuf;

use weightkit_core::{CoreError, DType, ValueType};

/// Everything that can go wrong reading or writing GGUF.
///
/// Reader errors carry the byte offset of the field at fault (`offset`) and,
/// where there is one, the key or tensor name.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An I/O error on `path`.
    #[error("{path}: I/O error")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The file does not start with `GGUF`.
    #[error("not a GGUF file: magic {found:02x?} at offset 0, expected \"GGUF\"")]
    BadMagic {
        /// The first bytes.
        found: Vec<u8>,
    },
    /// The file ends inside a field.
    #[error("file truncated: {what} at offset {offset} needs {needed} bytes, {available} left")]
    Truncated {
        /// What was being read.
        what: &'static str,
        /// Where.
        offset: usize,
        /// Bytes the field needs.
        needed: u64,
        /// Bytes left in the file.
        available: usize,
    },
    /// A version this reader does not support (0, 1, or > 3).
    #[error("unsupported GGUF version {version} at offset 4 (supported: 2, 3)")]
    UnsupportedVersion {
        /// The version found.
        version: u32,
    },
    /// A version whose low 16 bits are zero: the file is almost certainly
    /// big-endian (or byte-swapped).
    #[error(
        "GGUF version {version:#x} at offset 4: the file's endianness does not match (big-endian GGUF is not supported)"
    )]
    WrongEndianness {
        /// The version found.
        version: u32,
    },
    /// A negative tensor or key-value count.
    #[error("{what} at offset {offset} is negative: {count}")]
    NegativeCount {
        /// Which count.
        what: &'static str,
        /// Where.
        offset: usize,
        /// The value.
        count: i64,
    },
    /// A count that could not fit in the rest of the file.
    #[error("{what} {count} at offset {offset} cannot fit in the {available} bytes left")]
    CountPastEnd {
        /// Which count.
        what: &'static str,
        /// Where.
        offset: usize,
        /// The value.
        count: u64,
        /// Bytes left.
        available: usize,
    },
    /// A string longer than the limit (1 GiB, as llama.cpp).
    #[error("string at offset {offset} is {len} bytes, over the {max}-byte limit")]
    StringTooLong {
        /// Where its length field is.
        offset: usize,
        /// The declared length.
        len: u64,
        /// The limit.
        max: u64,
    },
    /// An array with more elements than the limit (2^30, as llama.cpp).
    #[error("key `{key}`: array at offset {offset} has {len} elements, over the limit of {max}")]
    ArrayTooLong {
        /// The key.
        key: String,
        /// Where its length field is.
        offset: usize,
        /// The declared length.
        len: u64,
        /// The limit.
        max: u64,
    },
    /// An empty key.
    #[error("key-value pair {index} at offset {offset} has an empty key")]
    EmptyKey {
        /// Index of the pair.
        index: u64,
        /// Where.
        offset: usize,
    },
    /// A key or tensor name that is not UTF-8. (Values may be any bytes and
    /// are kept as `Value::RawString`; names are identifiers and must be text.)
    #[error("{what} at offset {offset} is not valid UTF-8")]
    NotUtf8 {
        /// Which field.
        what: &'static str,
        /// Where its length field is.
        offset: usize,
    },
    /// A key that appears twice.
    #[error("duplicate key `{key}` at offset {offset}")]
    DuplicateKey {
        /// The key.
        key: String,
        /// Where its second occurrence starts.
        offset: usize,
    },
    /// A value type id outside 0..=12.
    #[error("key `{key}`: invalid value type {type_id} at offset {offset}")]
    InvalidValueType {
        /// The key.
        key: String,
        /// The id found.
        type_id: i32,
        /// Where.
        offset: usize,
    },
    /// An array of arrays (llama.cpp rejects these; see
    /// [`ReadOptions::allow_nested_arrays`](crate::ReadOptions)).
    #[error("key `{key}`: nested array at offset {offset} (llama.cpp rejects arrays of arrays)")]
    NestedArray {
        /// The key.
        key: String,
        /// Where.
        offset: usize,
    },
    /// `general.alignment` is not a u32.
    #[error("`general.alignment` must be UINT32, found {found:?}")]
    AlignmentType {
        /// The type found.
        found: ValueType,
    },
    /// `general.alignment` is zero or not a power of two.
    #[error("`general.alignment` {alignment} is not a non-zero power of two")]
    BadAlignment {
        /// The value.
        alignment: u64,
    },
    /// A tensor name of 64 bytes or more (ggml's `GGML_MAX_NAME`).
    #[error("tensor name at offset {offset} is {len} bytes; ggml allows at most 63")]
    NameTooLong {
        /// The name (lossy).
        name: String,
        /// Its length.
        len: usize,
        /// Where.
        offset: usize,
    },
    /// Two tensors with the same name.
    #[error("duplicate tensor name `{name}` at offset {offset}")]
    DuplicateTensor {
        /// The name.
        name: String,
        /// Where its second occurrence starts.
        offset: usize,
    },
    /// More than 4 dimensions (ggml's `GGML_MAX_DIMS`).
    #[error("tensor `{name}`: {n_dims} dimensions at offset {offset}; ggml allows at most 4")]
    TooManyDims {
        /// The tensor.
        name: String,
        /// The count found.
        n_dims: u32,
        /// Where.
        offset: usize,
    },
    /// A negative dimension.
    #[error("tensor `{name}`: dimension {dim} is negative ({value}) at offset {offset}")]
    NegativeDim {
        /// The tensor.
        name: String,
        /// Which dimension (ggml order).
        dim: usize,
        /// The value.
        value: i64,
        /// Where.
        offset: usize,
    },
    /// The element count does not fit in i64 (as llama.cpp checks), or the
    /// byte size does not fit in usize.
    #[error("tensor `{name}`: shape {ne:?} overflows the element or byte count")]
    SizeOverflow {
        /// The tensor.
        name: String,
        /// The dimensions, ggml order.
        ne: Vec<u64>,
    },
    /// A ggml type id that no ggml version defines.
    #[error("tensor `{name}`: unknown ggml type {type_id} at offset {offset}")]
    UnknownType {
        /// The tensor.
        name: String,
        /// The id.
        type_id: i32,
        /// Where.
        offset: usize,
    },
    /// A ggml type id that ggml has removed (Q4_2, Q4_3, the Q4_0_x_x and
    /// IQ4_NL_x_x repacked types).
    #[error("tensor `{name}`: ggml type {type_id} at offset {offset} was removed from ggml")]
    RemovedType {
        /// The tensor.
        name: String,
        /// The id.
        type_id: i32,
        /// Where.
        offset: usize,
    },
    /// A row that is not a whole number of blocks.
    #[error(
        "tensor `{name}`: row of {row} elements is not a multiple of the {dtype} block size {block}"
    )]
    NotWholeBlocks {
        /// The tensor.
        name: String,
        /// The type.
        dtype: DType,
        /// `ne[0]`.
        row: u64,
        /// The block length.
        block: usize,
    },
    /// A tensor whose offset is not the running sum of padded sizes.
    #[error("tensor `{name}`: data offset {found} (field at {offset}), expected {expected}")]
    BadOffset {
        /// The tensor.
        name: String,
        /// The offset declared (relative to the data section).
        found: u64,
        /// The offset the preceding tensors imply.
        expected: u64,
        /// Where the offset field is.
        offset: usize,
    },
    /// A tensor's data extends past the end of the file.
    #[error("tensor `{name}`: data ends at file offset {end} but the file has {file_len} bytes")]
    DataPastEnd {
        /// The tensor.
        name: String,
        /// Absolute end.
        end: u64,
        /// File length.
        file_len: usize,
    },
    /// A metadata key is missing.
    #[error("missing key `{0}`")]
    MissingKey(String),
    /// A metadata key has another type than asked for.
    #[error("key `{key}` is {found:?}, not {expected:?}")]
    WrongType {
        /// The key.
        key: String,
        /// The type asked for.
        expected: ValueType,
        /// The type found.
        found: ValueType,
    },
    /// No tensor of that name.
    #[error("no tensor named `{0}`")]
    TensorNotFound(String),
    /// A tensor or value the writer cannot encode.
    #[error("cannot write: {0}")]
    Unwritable(String),
    /// A core check failed (writer order, lengths ...).
    #[error(transparent)]
    Core(#[from] CoreError),
}

impl Error {
    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Error {
        let path = path.into();
        move |source| Error::Io { path, source }
    }
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
