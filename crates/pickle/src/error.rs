//! The crate's error type.

use std::path::PathBuf;

use weightkit_core::CoreError;

use crate::vm::PickleError;
use crate::zip::ZipError;

/// Everything that can go wrong reading or writing a PyTorch checkpoint.
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
    /// The pickle VM rejected the data (unsafe global, malformed opcode ...).
    #[error("{what}: invalid pickle")]
    Pickle {
        /// Which pickle (e.g. `archive/data.pkl`).
        what: String,
        /// Why.
        #[source]
        source: PickleError,
    },
    /// The zip container is malformed or hostile.
    #[error("invalid zip archive")]
    Zip(#[from] ZipError),
    /// Not a checkpoint format this crate reads.
    #[error("not a PyTorch checkpoint: {0}")]
    UnknownFormat(String),
    /// The unpickled objects do not have the shape of a checkpoint.
    #[error("unexpected checkpoint structure: {0}")]
    Structure(String),
    /// A storage a tensor refers to is missing.
    #[error("tensor `{tensor}`: storage `{key}` is missing from the checkpoint")]
    MissingStorage {
        /// The tensor.
        tensor: String,
        /// The storage key.
        key: String,
    },
    /// A tensor's view reaches outside its storage.
    #[error(
        "tensor `{tensor}`: view (offset {offset}, size {size:?}, stride {stride:?}) reaches element {end} of a {numel}-element storage"
    )]
    ViewOutOfBounds {
        /// The tensor.
        tensor: String,
        /// Storage offset.
        offset: u64,
        /// Sizes.
        size: Vec<usize>,
        /// Strides.
        stride: Vec<usize>,
        /// One past the last element reached.
        end: u64,
        /// Storage length.
        numel: u64,
    },
    /// A view that repeats storage elements (a stride-0 `expand`) would
    /// expand past [`LoadOptions::max_view_expansion`](crate::LoadOptions).
    #[error(
        "tensor `{tensor}`: view expands a {storage_bytes}-byte storage to {bytes} bytes, over the {limit}-byte limit"
    )]
    ViewTooLarge {
        /// The tensor.
        tensor: String,
        /// Bytes the view would materialize.
        bytes: u64,
        /// Bytes of its storage.
        storage_bytes: u64,
        /// The limit.
        limit: u64,
    },
    /// A storage's bytes are shorter than its declared element count.
    #[error("storage `{key}`: {found} bytes, expected {expected}")]
    StorageSize {
        /// The storage key.
        key: String,
        /// Bytes needed.
        expected: u64,
        /// Bytes present.
        found: u64,
    },
    /// Big-endian checkpoints are not supported.
    #[error("checkpoint byte order is `{0}`; only little-endian is supported")]
    ByteOrder(String),
    /// No tensor of that name.
    #[error("no tensor named `{0}`")]
    TensorNotFound(String),
    /// A tensor the writer cannot encode.
    #[error("cannot write: {0}")]
    Unwritable(String),
    /// A core check failed.
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
