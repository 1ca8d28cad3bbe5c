//! GGUF files: opened by mmap (or from any buffer), tensors lent zero-copy,
//! metadata with typed accessors.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use memmap2::Mmap;
use weightkit_core::{
    Array, CowTensor, Metadata, SharedBytes, Storage, Tensor, TensorInfo, TensorSource, TensorView,
    Value, ValueType,
};

use crate::error::{Error, Result};
use crate::header::{GgufTensorInfo, Header, ReadOptions};

#[derive(Debug)]
enum Backing {
    Mmap(Mmap),
    Heap(Vec<u8>),
}

impl AsRef<[u8]> for Backing {
    fn as_ref(&self) -> &[u8] {
        match self {
            Backing::Mmap(m) => m,
            Backing::Heap(v) => v,
        }
    }
}

/// A validated GGUF file.
#[derive(Debug, Clone)]
pub struct GgufFile {
    header: Header,
    bytes: Arc<Backing>,
    path: PathBuf,
}

macro_rules! typed_getter {
    ($(#[$doc:meta] $name:ident -> $t:ty, $variant:ident;)*) => {
        $(
            #[$doc]
            pub fn $name(&self, key: &str) -> Result<$t> {
                match self.get(key) {
                    Some(Value::$variant(v)) => Ok(*v),
                    Some(other) => Err(Error::WrongType {
                        key: key.to_owned(),
                        expected: ValueType::$variant,
                        found: other.value_type(),
                    }),
                    None => Err(Error::MissingKey(key.to_owned())),
                }
            }
        )*
    };
}

impl GgufFile {
    /// Opens and validates `path` by memory-mapping it, with llama.cpp's rules.
    ///
    /// # What this assumes
    ///
    /// As for [`weightkit_safetensors`-style readers](crate): the file must not
    /// be truncated or modified by another process while mapped (reads could
    /// fault or see new bytes). weightkit's writers never modify a file in
    /// place. Use [`GgufFile::read`] to copy the file to the heap instead.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        Self::open_with(path, &ReadOptions::default())
    }

    /// [`GgufFile::open`] with options (e.g. nested arrays allowed).
    pub fn open_with(path: impl AsRef<Path>, opts: &ReadOptions) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        let file = File::open(&path).map_err(Error::io(&path))?;
        let len = file.metadata().map_err(Error::io(&path))?.len();
        if len < 4096 {
            return Self::read_with(&path, opts);
        }
        // SAFETY: read-only private map; the documented contract is that the
        // file is not modified or truncated while mapped. Every access is
        // bounds-checked against the map's length.
        let mmap = unsafe { Mmap::map(&file) }.map_err(Error::io(&path))?;
        Self::from_backing(Backing::Mmap(mmap), path, opts)
    }

    /// Reads and validates `path` into a heap buffer.
    pub fn read(path: impl AsRef<Path>) -> Result<Self> {
        Self::read_with(path, &ReadOptions::default())
    }

    /// [`GgufFile::read`] with options.
    pub fn read_with(path: impl AsRef<Path>, opts: &ReadOptions) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        let bytes = std::fs::read(&path).map_err(Error::io(&path))?;
        Self::from_backing(Backing::Heap(bytes), path, opts)
    }

    /// Validates an in-memory file; `path` is only used in messages.
    pub fn from_vec(bytes: Vec<u8>, path: impl Into<PathBuf>, opts: &ReadOptions) -> Result<Self> {
        Self::from_backing(Backing::Heap(bytes), path.into(), opts)
    }

    fn from_backing(backing: Backing, path: PathBuf, opts: &ReadOptions) -> Result<Self> {
        let header = Header::parse(backing.as_ref(), opts)?;
        Ok(GgufFile {
            header,
            bytes: Arc::new(backing),
            path,
        })
    }

    /// The path it was opened from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether the file is memory-mapped.
    pub fn is_mmap(&self) -> bool {
        matches!(*self.bytes, Backing::Mmap(_))
    }

    /// The validated header.
    pub fn header(&self) -> &Header {
        &self.header
    }

    /// GGUF version (2 or 3).
    pub fn version(&self) -> u32 {
        self.header.version()
    }

    /// The whole file.
    pub fn bytes(&self) -> &[u8] {
        (*self.bytes).as_ref()
    }

    /// All key-value pairs in file order.
    pub fn metadata(&self) -> &Metadata {
        self.header.metadata()
    }

    /// Tensors in file order (row-major shapes).
    pub fn tensors(&self) -> &[TensorInfo] {
        self.header.tensors()
    }

    /// GGUF-level info of tensor `i`.
    pub fn ggml_info(&self, i: usize) -> Option<&GgufTensorInfo> {
        self.header.ggml_info(i)
    }

    /// The value of `key`.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.header.metadata().get(key)
    }

    typed_getter! {
        /// A `UINT8` value.
        get_u8 -> u8, U8;
        /// An `INT8` value.
        get_i8 -> i8, I8;
        /// A `UINT16` value.
        get_u16 -> u16, U16;
        /// An `INT16` value.
        get_i16 -> i16, I16;
        /// A `UINT32` value (`get_u32("llama.block_count")`).
        get_u32 -> u32, U32;
        /// An `INT32` value.
        get_i32 -> i32, I32;
        /// A `FLOAT32` value.
        get_f32 -> f32, F32;
        /// A `BOOL` value.
        get_bool -> bool, Bool;
        /// A `UINT64` value.
        get_u64 -> u64, U64;
        /// An `INT64` value.
        get_i64 -> i64, I64;
        /// A `FLOAT64` value.
        get_f64 -> f64, F64;
    }

    /// A `STRING` value (valid UTF-8).
    pub fn get_str(&self, key: &str) -> Result<&str> {
        match self.get(key) {
            Some(Value::String(s)) => Ok(s),
            Some(other) => Err(Error::WrongType {
                key: key.to_owned(),
                expected: ValueType::String,
                found: other.value_type(),
            }),
            None => Err(Error::MissingKey(key.to_owned())),
        }
    }

    /// An `ARRAY` value.
    pub fn get_array(&self, key: &str) -> Result<&Array> {
        match self.get(key) {
            Some(Value::Array(a)) => Ok(a),
            Some(other) => Err(Error::WrongType {
                key: key.to_owned(),
                expected: ValueType::Array,
                found: other.value_type(),
            }),
            None => Err(Error::MissingKey(key.to_owned())),
        }
    }

    /// `general.architecture`.
    pub fn architecture(&self) -> Result<&str> {
        self.get_str("general.architecture")
    }

    /// A zero-copy view of the tensor called `name`.
    pub fn tensor(&self, name: &str) -> Result<TensorView<'_>> {
        let i = self
            .header
            .position(name)
            .ok_or_else(|| Error::TensorNotFound(name.to_owned()))?;
        self.tensor_at(i)
    }

    /// A zero-copy view of tensor `i`.
    pub fn tensor_at(&self, i: usize) -> Result<TensorView<'_>> {
        let missing = || Error::TensorNotFound(format!("#{i}"));
        let info = self.header.tensors().get(i).ok_or_else(missing)?;
        let range = self.header.ggml_info(i).ok_or_else(missing)?.range.clone();
        let data = self.bytes().get(range).ok_or_else(missing)?;
        Ok(TensorView::new(info.dtype, &info.shape, data)?)
    }

    /// An owned tensor sharing the file's buffer (no copy).
    pub fn tensor_shared(&self, name: &str) -> Result<Tensor> {
        let i = self
            .header
            .position(name)
            .ok_or_else(|| Error::TensorNotFound(name.to_owned()))?;
        let missing = || Error::TensorNotFound(name.to_owned());
        let info = self.header.tensors().get(i).ok_or_else(missing)?;
        let range = self.header.ggml_info(i).ok_or_else(missing)?.range.clone();
        let owner: Arc<dyn AsRef<[u8]> + Send + Sync> = self.bytes.clone();
        let shared = SharedBytes::new(owner, range).ok_or_else(missing)?;
        Ok(Tensor::new(
            info.dtype,
            info.shape.clone(),
            Storage::Shared(shared),
        )?)
    }
}

impl GgufFile {
    /// Tells the kernel that tensor `i`'s pages are no longer needed (see
    /// `weightkit_safetensors::SafetensorsFile::release_tensor_pages`). Does
    /// nothing for files read to the heap.
    ///
    /// # Safety
    ///
    /// No view, slice or shared tensor borrowing tensor `i`'s bytes may be
    /// alive, in any thread.
    pub unsafe fn release_tensor_pages(&self, i: usize) {
        #[cfg(unix)]
        if let (Backing::Mmap(map), Some(info)) = (&*self.bytes, self.header.ggml_info(i)) {
            const PAGE: usize = 4096;
            let start = info.range.start.next_multiple_of(PAGE);
            let end = info.range.end / PAGE * PAGE;
            if end > start {
                // SAFETY: forwarded to the caller: nothing borrows these
                // pages; the map is read-only and file-backed, so they read
                // back as the file's bytes if touched again.
                let _ = unsafe {
                    map.unchecked_advise_range(
                        memmap2::UncheckedAdvice::DontNeed,
                        start,
                        end - start,
                    )
                };
            }
        }
    }
}

impl TensorSource for GgufFile {
    type Error = Error;

    fn tensor_infos(&self) -> &[TensorInfo] {
        self.header.tensors()
    }

    fn metadata(&self) -> &Metadata {
        self.header.metadata()
    }

    fn load(&self, index: usize) -> Result<CowTensor<'_>> {
        Ok(CowTensor::Borrowed(self.tensor_at(index)?))
    }

    fn position(&self, name: &str) -> Option<usize> {
        self.header.position(name)
    }
}
