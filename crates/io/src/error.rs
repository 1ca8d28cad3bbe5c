//! The crate's error type.

use std::path::PathBuf;

use weightkit_core::{CoreError, DType};

/// A boxed error from a format crate or a module of this crate.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Everything that can go wrong opening, converting or quantizing.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IoError {
    /// An I/O error on `path`.
    #[error("{path}: I/O error")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A format crate rejected `path`.
    #[error("{path}: cannot read as {format}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The format tried.
        format: &'static str,
        /// Why.
        #[source]
        source: BoxError,
    },
    /// Writing the output failed.
    #[error("{path}: cannot write {format}")]
    Write {
        /// The output.
        path: PathBuf,
        /// The format written.
        format: &'static str,
        /// Why.
        #[source]
        source: BoxError,
    },
    /// Not a format this crate reads.
    #[error("{path}: not a checkpoint weightkit reads ({reason})")]
    UnknownFormat {
        /// The path.
        path: PathBuf,
        /// What was found.
        reason: String,
    },
    /// A shard index is malformed or names a file outside its directory.
    #[error("{path}: invalid shard index: {message}")]
    InvalidIndex {
        /// The index.
        path: PathBuf,
        /// Why.
        message: String,
    },
    /// A tensor cannot be converted to the requested dtype.
    #[error("tensor `{tensor}`: cannot convert {from} to {to}")]
    Cast {
        /// The tensor.
        tensor: String,
        /// Its dtype.
        from: DType,
        /// The dtype asked for.
        to: DType,
    },
    /// A module of this crate (architecture tables, mixtures, imatrix).
    #[error(transparent)]
    Module(BoxError),
    /// A core check failed.
    #[error(transparent)]
    Core(#[from] CoreError),
}

impl IoError {
    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> IoError {
        let path = path.into();
        move |source| IoError::Io { path, source }
    }

    pub(crate) fn read<E: Into<BoxError>>(
        path: impl Into<PathBuf>,
        format: &'static str,
    ) -> impl FnOnce(E) -> IoError {
        let path = path.into();
        move |e| IoError::Read {
            path,
            format,
            source: e.into(),
        }
    }

    pub(crate) fn write<E: Into<BoxError>>(
        path: impl Into<PathBuf>,
        format: &'static str,
    ) -> impl FnOnce(E) -> IoError {
        let path = path.into();
        move |e| IoError::Write {
            path,
            format,
            source: e.into(),
        }
    }
}
