//! Tensor descriptions and data: borrowed views and owned tensors.

use std::fmt;
use std::ops::Range;
use std::sync::Arc;

use crate::convert;
use crate::dtype::DType;
use crate::error::CoreError;
use crate::shape::Shape;

/// A tensor's name, dtype and shape: what a header declares before any data.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct TensorInfo {
    /// The tensor's name in its file (`model.layers.0.self_attn.q_proj.weight`).
    pub name: String,
    /// Element or block type.
    pub dtype: DType,
    /// Row-major shape, outermost first.
    pub shape: Shape,
}

impl TensorInfo {
    /// A new description.
    pub fn new(name: impl Into<String>, dtype: DType, shape: impl Into<Shape>) -> Self {
        TensorInfo {
            name: name.into(),
            dtype,
            shape: shape.into(),
        }
    }

    /// Exact byte length of the tensor's contiguous data, checked.
    pub fn byte_len(&self) -> Result<usize, CoreError> {
        self.shape.byte_len(self.dtype)
    }

    /// Element count, checked.
    pub fn elem_count(&self) -> Result<usize, CoreError> {
        self.shape.elem_count()
    }
}

/// A borrowed tensor: dtype, shape and the contiguous little-endian bytes,
/// whose length always matches the shape (checked on construction).
#[derive(Clone, Copy)]
pub struct TensorView<'a> {
    dtype: DType,
    shape: &'a Shape,
    data: &'a [u8],
}

impl<'a> TensorView<'a> {
    /// A view over `data`, which must be exactly `shape.byte_len(dtype)` bytes.
    pub fn new(dtype: DType, shape: &'a Shape, data: &'a [u8]) -> Result<Self, CoreError> {
        let expected = shape.byte_len(dtype)?;
        if expected != data.len() {
            return Err(CoreError::LengthMismatch {
                name: String::new(),
                dtype,
                shape: shape.clone(),
                expected,
                found: data.len(),
            });
        }
        Ok(TensorView { dtype, shape, data })
    }

    /// Element or block type.
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// Shape, outermost first.
    pub fn shape(&self) -> &'a Shape {
        self.shape
    }

    /// The raw little-endian bytes.
    pub fn data(&self) -> &'a [u8] {
        self.data
    }

    /// Element count (cannot overflow: the data exists).
    pub fn elem_count(&self) -> usize {
        // Validated at construction, so this cannot fail; 0 is unreachable.
        self.shape.elem_count().unwrap_or(0)
    }

    /// The data as `&[f32]` without copying, when the dtype is F32, the
    /// bytes are 4-byte aligned and the target is little-endian.
    pub fn as_f32_slice(&self) -> Option<&'a [f32]> {
        if self.dtype != DType::F32 || cfg!(target_endian = "big") {
            return None;
        }
        bytemuck::try_cast_slice(self.data).ok()
    }

    /// The values widened to f32 (F32, F16, BF16, F64 and the integer and
    /// bool types), copying. Block types need a dequantizer (`weightkit-quant`).
    pub fn to_f32_vec(&self) -> Result<Vec<f32>, CoreError> {
        let mut out = vec![0f32; self.elem_count()];
        convert::decode_f32(self.dtype, self.data, &mut out)?;
        Ok(out)
    }

    /// An owned copy on the heap.
    pub fn to_tensor(&self) -> Tensor {
        Tensor {
            dtype: self.dtype,
            shape: self.shape.clone(),
            storage: Storage::Heap(self.data.to_vec()),
        }
    }
}

impl fmt::Debug for TensorView<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TensorView")
            .field("dtype", &self.dtype)
            .field("shape", &self.shape)
            .field("bytes", &self.data.len())
            .finish()
    }
}

/// Bytes shared with other tensors: a range of a reference-counted buffer
/// such as a memory-mapped file.
///
/// The owner is any `AsRef<[u8]>`, so `weightkit-core` needs no mmap
/// dependency: format crates put their `memmap2::Mmap` here.
#[derive(Clone)]
pub struct SharedBytes {
    owner: Arc<dyn AsRef<[u8]> + Send + Sync>,
    range: Range<usize>,
}

impl SharedBytes {
    /// A range of `owner`'s bytes; `None` if the range is out of bounds.
    pub fn new(owner: Arc<dyn AsRef<[u8]> + Send + Sync>, range: Range<usize>) -> Option<Self> {
        let len = (*owner).as_ref().len();
        if range.start > range.end || range.end > len {
            return None;
        }
        Some(SharedBytes { owner, range })
    }

    /// The bytes.
    pub fn as_slice(&self) -> &[u8] {
        // In bounds: checked in `new`, and the owner is immutable behind the Arc.
        (*self.owner)
            .as_ref()
            .get(self.range.clone())
            .unwrap_or(&[])
    }
}

impl fmt::Debug for SharedBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SharedBytes")
            .field("range", &self.range)
            .finish_non_exhaustive()
    }
}

/// Where an owned tensor's bytes live.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum Storage {
    /// A heap buffer owned by the tensor.
    Heap(Vec<u8>),
    /// A range of a shared buffer (typically a memory-mapped file).
    Shared(SharedBytes),
}

impl Storage {
    fn as_slice(&self) -> &[u8] {
        match self {
            Storage::Heap(v) => v,
            Storage::Shared(s) => s.as_slice(),
        }
    }
}

/// An owned tensor whose bytes live on the heap or in a shared buffer.
#[derive(Clone)]
pub struct Tensor {
    dtype: DType,
    shape: Shape,
    storage: Storage,
}

impl Tensor {
    /// A tensor over `storage`, whose length must match the shape and dtype.
    pub fn new(dtype: DType, shape: impl Into<Shape>, storage: Storage) -> Result<Self, CoreError> {
        let shape = shape.into();
        let found = storage.as_slice().len();
        let expected = shape.byte_len(dtype)?;
        if expected != found {
            return Err(CoreError::LengthMismatch {
                name: String::new(),
                dtype,
                shape,
                expected,
                found,
            });
        }
        Ok(Tensor {
            dtype,
            shape,
            storage,
        })
    }

    /// A heap tensor from raw little-endian bytes.
    pub fn from_bytes(
        dtype: DType,
        shape: impl Into<Shape>,
        bytes: Vec<u8>,
    ) -> Result<Self, CoreError> {
        Tensor::new(dtype, shape, Storage::Heap(bytes))
    }

    /// An F32 heap tensor from values.
    pub fn from_f32(shape: impl Into<Shape>, values: &[f32]) -> Result<Self, CoreError> {
        let mut bytes = vec![0u8; values.len().checked_mul(4).ok_or(CoreError::Overflow)?];
        convert::encode_f32(DType::F32, values, &mut bytes)?;
        Tensor::from_bytes(DType::F32, shape, bytes)
    }

    /// Element or block type.
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// Shape, outermost first.
    pub fn shape(&self) -> &Shape {
        &self.shape
    }

    /// The raw little-endian bytes.
    pub fn data(&self) -> &[u8] {
        self.storage.as_slice()
    }

    /// Where the bytes live.
    pub fn storage(&self) -> &Storage {
        &self.storage
    }

    /// Whether the bytes are shared (e.g. zero-copy from an mmap).
    pub fn is_shared(&self) -> bool {
        matches!(self.storage, Storage::Shared(_))
    }

    /// A borrowed view.
    pub fn view(&self) -> TensorView<'_> {
        TensorView {
            dtype: self.dtype,
            shape: &self.shape,
            data: self.storage.as_slice(),
        }
    }

    /// The same values in another float dtype (F32, F16, BF16, F64), rounding
    /// to nearest-even; a copy even when the dtype is unchanged.
    pub fn to_dtype(&self, dtype: DType) -> Result<Tensor, CoreError> {
        let bytes = convert::cast_bytes(self.dtype, self.data(), dtype)?;
        Tensor::from_bytes(dtype, self.shape.clone(), bytes)
    }
}

impl fmt::Debug for Tensor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tensor")
            .field("dtype", &self.dtype)
            .field("shape", &self.shape)
            .field("bytes", &self.data().len())
            .field("shared", &self.is_shared())
            .finish()
    }
}

/// A tensor a reader lends: borrowed when the format allows zero-copy,
/// owned when a copy was unavoidable (decompression, a strided view).
#[derive(Debug, Clone)]
pub enum CowTensor<'a> {
    /// Zero-copy view into the reader's buffer.
    Borrowed(TensorView<'a>),
    /// A tensor the reader had to materialise.
    Owned(Tensor),
}

impl CowTensor<'_> {
    /// A view either way.
    pub fn view(&self) -> TensorView<'_> {
        match self {
            CowTensor::Borrowed(v) => *v,
            CowTensor::Owned(t) => t.view(),
        }
    }

    /// An owned tensor (copies a borrowed view).
    pub fn into_owned(self) -> Tensor {
        match self {
            CowTensor::Borrowed(v) => v.to_tensor(),
            CowTensor::Owned(t) => t,
        }
    }
}
