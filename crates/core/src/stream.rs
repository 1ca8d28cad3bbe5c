//! The streaming reader and writer traits every format implements.
//!
//! A model is an ordered set of named tensors plus metadata. A
//! [`TensorSource`] lists the tensor infos up front and lends each tensor's
//! bytes on demand (zero-copy where the format allows). A [`TensorSink`] is
//! given the whole list when it is created (headers need it), then takes the
//! data in declared order, in chunks of any size, and ends with an explicit
//! [`TensorSink::finish`]. Between the two, a pipeline holds at most one
//! tensor (or one buffer) in memory, whatever the model's size.
//!
//! [`WriteCursor`] is the bookkeeping every writer shares: which tensor the
//! next byte belongs to, and whether the caller keeps to the declared order.

use std::collections::HashSet;

use crate::error::CoreError;
use crate::metadata::Metadata;
use crate::tensor::{CowTensor, TensorInfo};

/// A readable set of tensors.
pub trait TensorSource {
    /// The format's error type.
    type Error: std::error::Error + From<CoreError> + Send + Sync + 'static;

    /// Every tensor, in storage order.
    fn tensor_infos(&self) -> &[TensorInfo];

    /// File-level metadata.
    fn metadata(&self) -> &Metadata;

    /// The tensor at `index` in [`TensorSource::tensor_infos`].
    fn load(&self, index: usize) -> Result<CowTensor<'_>, Self::Error>;

    /// The position of `name` in [`TensorSource::tensor_infos`].
    fn position(&self, name: &str) -> Option<usize> {
        self.tensor_infos().iter().position(|t| t.name == name)
    }

    /// The tensor called `name`.
    fn load_by_name(&self, name: &str) -> Result<CowTensor<'_>, Self::Error> {
        let i = self
            .position(name)
            .ok_or_else(|| CoreError::TensorNotFound(name.to_owned()))?;
        self.load(i)
    }
}

/// A writer that was given the tensor list up front and now takes the data.
pub trait TensorSink {
    /// The format's error type.
    type Error: std::error::Error + From<CoreError> + Send + Sync + 'static;
    /// What `finish` returns (e.g. the written paths).
    type Output;

    /// The declared tensors and the write position.
    fn cursor(&self) -> &WriteCursor;

    /// The next bytes of tensor data, in declared order; a chunk may end or
    /// span tensors anywhere.
    fn write_data(&mut self, chunk: &[u8]) -> Result<(), Self::Error>;

    /// The whole data of the tensor called `name`, which must be the next
    /// declared tensor and have exactly its byte length.
    fn write_tensor(&mut self, name: &str, data: &[u8]) -> Result<(), Self::Error>;

    /// Completes the output (flush, sync, rename into place). Fails if any
    /// declared tensor is not fully written; then nothing is left behind.
    fn finish(self) -> Result<Self::Output, Self::Error>;
}

/// A piece of the data stream as the cursor splits it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Piece<'c> {
    /// Bytes belonging to tensor `tensor`.
    Data {
        /// Index of the tensor the bytes belong to.
        tensor: usize,
        /// The bytes.
        bytes: &'c [u8],
    },
    /// Tensor `tensor` is complete (formats with padding write it here).
    End {
        /// Index of the completed tensor.
        tensor: usize,
    },
}

/// Tracks a writer's position in its declared tensor list.
#[derive(Debug, Clone)]
pub struct WriteCursor {
    infos: Vec<TensorInfo>,
    lens: Vec<usize>,
    total: usize,
    index: usize,
    filled: usize,
    written: usize,
}

impl WriteCursor {
    /// A cursor over `infos`; checks names are unique and every byte length
    /// (and their sum) is computable.
    pub fn new(infos: Vec<TensorInfo>) -> Result<Self, CoreError> {
        let mut seen = HashSet::with_capacity(infos.len());
        let mut lens = Vec::with_capacity(infos.len());
        let mut total = 0usize;
        for info in &infos {
            if !seen.insert(info.name.as_str()) {
                return Err(CoreError::DuplicateName(info.name.clone()));
            }
            let len = info.byte_len()?;
            total = total.checked_add(len).ok_or(CoreError::Overflow)?;
            lens.push(len);
        }
        Ok(WriteCursor {
            infos,
            lens,
            total,
            index: 0,
            filled: 0,
            written: 0,
        })
    }

    /// The declared tensors.
    pub fn infos(&self) -> &[TensorInfo] {
        &self.infos
    }

    /// The declared byte length of each tensor.
    pub fn byte_lens(&self) -> &[usize] {
        &self.lens
    }

    /// Total declared bytes.
    pub fn total_bytes(&self) -> usize {
        self.total
    }

    /// Bytes accepted so far.
    pub fn written_bytes(&self) -> usize {
        self.written
    }

    /// Index of the tensor the next byte belongs to (== len when all done).
    pub fn current(&self) -> usize {
        self.index
    }

    fn close_complete<E>(
        &mut self,
        stop_at: Option<&str>,
        f: &mut impl FnMut(Piece<'_>) -> Result<(), E>,
    ) -> Result<(), E> {
        while let (Some(info), Some(&len)) = (self.infos.get(self.index), self.lens.get(self.index))
        {
            if self.filled != len || stop_at == Some(info.name.as_str()) {
                break;
            }
            f(Piece::End { tensor: self.index })?;
            self.index += 1;
            self.filled = 0;
        }
        Ok(())
    }

    /// Splits `chunk` into per-tensor pieces, in order, calling `f` for each
    /// and for each tensor boundary crossed. Errors with
    /// [`CoreError::TooMuchData`] past the declared end.
    pub fn feed<'c, E: From<CoreError>>(
        &mut self,
        mut chunk: &'c [u8],
        f: &mut impl FnMut(Piece<'c>) -> Result<(), E>,
    ) -> Result<(), E> {
        while !chunk.is_empty() {
            self.close_complete(None, &mut |p| match p {
                Piece::End { tensor } => f(Piece::End { tensor }),
                Piece::Data { .. } => Ok(()),
            })?;
            let Some(&len) = self.lens.get(self.index) else {
                return Err(CoreError::TooMuchData { extra: chunk.len() }.into());
            };
            let take = chunk.len().min(len - self.filled);
            let (head, rest) = chunk.split_at(take);
            f(Piece::Data {
                tensor: self.index,
                bytes: head,
            })?;
            self.filled += take;
            self.written += take;
            chunk = rest;
        }
        Ok(())
    }

    /// Checks that a whole tensor `name` of `len` bytes is what comes next
    /// (closing any completed tensors before it), without consuming data.
    pub fn begin<E: From<CoreError>>(
        &mut self,
        name: &str,
        len: usize,
        f: &mut impl FnMut(Piece<'_>) -> Result<(), E>,
    ) -> Result<(), E> {
        self.close_complete(Some(name), f)?;
        let unexpected = |expected: &str| CoreError::UnexpectedTensor {
            expected: expected.to_owned(),
            found: name.to_owned(),
        };
        let Some(info) = self.infos.get(self.index) else {
            return Err(unexpected("").into());
        };
        if info.name != name || self.filled != 0 {
            return Err(unexpected(&info.name).into());
        }
        let expected = self.lens.get(self.index).copied().unwrap_or(0);
        if expected != len {
            return Err(CoreError::LengthMismatch {
                name: name.to_owned(),
                dtype: info.dtype,
                shape: info.shape.clone(),
                expected,
                found: len,
            }
            .into());
        }
        Ok(())
    }

    /// Closes every completed tensor and checks that all were written.
    pub fn finish<E: From<CoreError>>(
        &mut self,
        f: &mut impl FnMut(Piece<'_>) -> Result<(), E>,
    ) -> Result<(), E> {
        self.close_complete(None, f)?;
        if let Some(info) = self.infos.get(self.index) {
            return Err(CoreError::Incomplete {
                next: info.name.clone(),
                missing: self.total - self.written,
            }
            .into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::DType;

    fn cursor() -> WriteCursor {
        WriteCursor::new(vec![
            TensorInfo::new("empty0", DType::F32, [0]),
            TensorInfo::new("a", DType::F32, [2]),
            TensorInfo::new("empty", DType::F16, [3, 0]),
            TensorInfo::new("b", DType::U8, [3]),
        ])
        .unwrap()
    }

    fn log(c: &mut WriteCursor, chunks: &[&[u8]]) -> Result<Vec<String>, CoreError> {
        let mut out = Vec::new();
        for ch in chunks {
            c.feed(ch, &mut |p| {
                out.push(format!("{p:?}"));
                Ok::<_, CoreError>(())
            })?;
        }
        c.finish(&mut |p| {
            out.push(format!("{p:?}"));
            Ok::<_, CoreError>(())
        })?;
        Ok(out)
    }

    #[test]
    fn splits_across_boundaries() {
        let mut c = cursor();
        assert_eq!(c.total_bytes(), 11);
        let out = log(&mut c, &[&[1, 2, 3], &[4, 5, 6, 7, 8, 9], &[10, 11]]).unwrap();
        assert_eq!(
            out,
            [
                "End { tensor: 0 }",
                "Data { tensor: 1, bytes: [1, 2, 3] }",
                "Data { tensor: 1, bytes: [4, 5, 6, 7, 8] }",
                "End { tensor: 1 }",
                "End { tensor: 2 }",
                "Data { tensor: 3, bytes: [9] }",
                "Data { tensor: 3, bytes: [10, 11] }",
                "End { tensor: 3 }",
            ]
        );
    }

    #[test]
    fn errors() {
        let mut c = cursor();
        assert_eq!(
            log(&mut c, &[&[0; 12]]),
            Err(CoreError::TooMuchData { extra: 1 })
        );
        let mut c = cursor();
        assert_eq!(
            log(&mut c, &[&[0; 10]]),
            Err(CoreError::Incomplete {
                next: "b".into(),
                missing: 1
            })
        );
        let mut c = cursor();
        let mut nop = |_: Piece<'_>| Ok::<_, CoreError>(());
        c.begin("empty0", 0, &mut nop).unwrap();
        assert!(matches!(
            c.begin("b", 3, &mut nop),
            Err(CoreError::UnexpectedTensor { .. })
        ));
        c.begin("a", 8, &mut nop).unwrap();
        assert!(matches!(
            c.begin("a", 7, &mut nop),
            Err(CoreError::LengthMismatch { .. })
        ));
        assert_eq!(
            WriteCursor::new(vec![
                TensorInfo::new("x", DType::F32, [1]),
                TensorInfo::new("x", DType::F32, [1])
            ])
            .unwrap_err(),
            CoreError::DuplicateName("x".into())
        );
    }
}
