//! The crate's error type.

use std::path::PathBuf;

use weightkit_core::{CoreError, DType, Shape};

/// Everything that can go wrong reading or writing safetensors.
///
/// Each malformation of a file has its own variant, naming the tensor and
/// the byte offsets involved, so a caller (or a test) can tell them apart.
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
    /// The file is shorter than the 8-byte header length.
    #[error("file of {len} bytes is too short for the 8-byte header length")]
    FileTooShort {
        /// File length.
        len: usize,
    },
    /// The header length exceeds the cap (100,000,000 bytes, as the
    /// `safetensors` crate).
    #[error("header length {len} exceeds the maximum of {max} bytes")]
    HeaderTooLarge {
        /// The declared length.
        len: u64,
        /// The cap.
        max: usize,
    },
    /// The header extends past the end of the file.
    #[error("header of {len} bytes at offset 8 extends past the end of the {file_len}-byte file")]
    HeaderPastEnd {
        /// The declared length.
        len: u64,
        /// File length.
        file_len: usize,
    },
    /// The header is not valid UTF-8.
    #[error("header is not UTF-8 (invalid byte at file offset {offset})")]
    HeaderNotUtf8 {
        /// File offset of the first invalid byte.
        offset: usize,
    },
    /// The header is not valid JSON, or not a JSON object.
    #[error("header is not a valid JSON object (file offset ~{offset}): {message}")]
    HeaderJson {
        /// Approximate file offset of the error.
        offset: usize,
        /// The JSON parser's message.
        message: String,
    },
    /// A tensor entry lacks a field or has one of the wrong type.
    #[error("tensor `{name}`: invalid entry: {message}")]
    InvalidEntry {
        /// Tensor name.
        name: String,
        /// What is wrong.
        message: String,
    },
    /// `__metadata__` is not an object of strings.
    #[error("`__metadata__`: {message}")]
    InvalidMetadata {
        /// What is wrong.
        message: String,
    },
    /// A dtype name no safetensors version defines.
    #[error("tensor `{name}`: unknown dtype `{dtype}`")]
    UnknownDType {
        /// Tensor name.
        name: String,
        /// The name found.
        dtype: String,
    },
    /// Two entries with the same name.
    #[error("duplicate tensor name `{name}`")]
    DuplicateName {
        /// Tensor name.
        name: String,
    },
    /// A key appears twice in `__metadata__`.
    #[error("duplicate `__metadata__` key `{key}`")]
    DuplicateMetadataKey {
        /// The key.
        key: String,
    },
    /// The shape's element or byte count overflows, or does not fill whole
    /// bytes (sub-byte dtypes).
    #[error("tensor `{name}`: invalid shape {shape} for {dtype}")]
    InvalidShape {
        /// Tensor name.
        name: String,
        /// The dtype.
        dtype: DType,
        /// The shape.
        shape: Shape,
        /// Why.
        #[source]
        source: Box<CoreError>,
    },
    /// `data_offsets` with end before begin.
    #[error("tensor `{name}`: data_offsets [{begin}, {end}] end before begin")]
    OffsetsReversed {
        /// Tensor name.
        name: String,
        /// Begin offset (relative to the data section).
        begin: u64,
        /// End offset.
        end: u64,
    },
    /// A tensor's data overlaps the previous one's.
    #[error(
        "tensor `{name}`: data [{begin}, {end}] overlaps `{previous}`, which ends at {previous_end}"
    )]
    Overlap {
        /// Tensor name.
        name: String,
        /// Begin offset.
        begin: u64,
        /// End offset.
        end: u64,
        /// The tensor it overlaps.
        previous: String,
        /// Where that one ends.
        previous_end: u64,
    },
    /// Unclaimed bytes between two tensors (or before the first).
    #[error("tensor `{name}`: gap of {gap} bytes before its data at offset {begin}")]
    Gap {
        /// Tensor name.
        name: String,
        /// Begin offset.
        begin: u64,
        /// Size of the gap.
        gap: u64,
    },
    /// The byte range does not match the shape and dtype.
    #[error(
        "tensor `{name}`: {dtype} {shape} needs {expected} bytes but data_offsets span {found}"
    )]
    SizeMismatch {
        /// Tensor name.
        name: String,
        /// The dtype.
        dtype: DType,
        /// The shape.
        shape: Shape,
        /// Bytes the shape needs.
        expected: u64,
        /// Bytes the offsets span.
        found: u64,
    },
    /// A tensor's data extends past the end of the file.
    #[error("tensor `{name}`: data ends at file offset {end} but the file has {file_len} bytes")]
    DataPastEnd {
        /// Tensor name.
        name: String,
        /// Absolute end offset.
        end: u64,
        /// File length.
        file_len: usize,
    },
    /// Bytes after the last tensor's data.
    #[error("{extra} trailing bytes after the last tensor (data ends at file offset {end})")]
    TrailingBytes {
        /// Absolute end of the last tensor.
        end: usize,
        /// Bytes left over.
        extra: usize,
    },
    /// No tensor of that name.
    #[error("no tensor named `{0}`")]
    TensorNotFound(String),
    /// The dtype cannot be stored in safetensors (a ggml block type).
    #[error("tensor `{name}`: dtype {dtype} cannot be stored in safetensors")]
    UnsupportedDType {
        /// Tensor name.
        name: String,
        /// The dtype.
        dtype: DType,
    },
    /// Metadata to write holds a non-string value.
    #[error("metadata key `{key}`: safetensors metadata values must be strings")]
    NonStringMetadata {
        /// The key.
        key: String,
    },
    /// A sharded checkpoint's index is malformed.
    #[error("{path}: invalid shard index: {message}")]
    InvalidIndex {
        /// The index file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// A shard file named by the index is invalid.
    #[error("shard {path}")]
    Shard {
        /// The shard file.
        path: PathBuf,
        /// What is wrong with it.
        #[source]
        source: Box<Error>,
    },
    /// A directory holds no unambiguous safetensors checkpoint.
    #[error(
        "no model.safetensors or *.safetensors.index.json, and {candidates} *.safetensors files (need exactly one)"
    )]
    NoCheckpoint {
        /// The directory.
        path: PathBuf,
        /// How many `*.safetensors` files it holds.
        candidates: usize,
    },
    /// Invalid writer arguments (shard size 0, bad prefix ...).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
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
