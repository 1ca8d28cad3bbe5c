//! Reading: a borrowed parse of any byte buffer, and files opened by mmap.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use memmap2::Mmap;
use weightkit_core::{
    CowTensor, Metadata, SharedBytes, Storage, Tensor, TensorInfo, TensorSource, TensorView,
};

use crate::error::{Error, Result};
use crate::header::Header;

/// A validated safetensors file in a caller-owned buffer; tensors are
/// zero-copy views into it.
#[derive(Debug)]
pub struct SafeTensors<'data> {
    header: Header,
    data: &'data [u8],
}

impl<'data> SafeTensors<'data> {
    /// Parses and validates a whole safetensors file held in `data`. Never
    /// panics; every malformation is an [`Error`].
    pub fn parse(data: &'data [u8]) -> Result<Self> {
        Ok(SafeTensors {
            header: Header::parse(data)?,
            data,
        })
    }

    /// The validated header.
    pub fn header(&self) -> &Header {
        &self.header
    }

    /// Tensors in data order.
    pub fn tensors(&self) -> &[TensorInfo] {
        self.header.tensors()
    }

    /// `__metadata__`.
    pub fn metadata(&self) -> &Metadata {
        self.header.metadata()
    }

    /// The tensor called `name`.
    pub fn tensor(&self, name: &str) -> Result<TensorView<'_>> {
        let i = self
            .header
            .position(name)
            .ok_or_else(|| Error::TensorNotFound(name.to_owned()))?;
        self.tensor_at(i)
    }

    /// The tensor at position `i` (data order).
    pub fn tensor_at(&self, i: usize) -> Result<TensorView<'_>> {
        view(&self.header, self.data, i)
    }
}

fn view<'a>(header: &'a Header, data: &'a [u8], i: usize) -> Result<TensorView<'a>> {
    let not_found = || Error::TensorNotFound(format!("#{i}"));
    let info = header.tensors().get(i).ok_or_else(not_found)?;
    let range = header.range(i).ok_or_else(not_found)?;
    let bytes = data.get(range).ok_or_else(not_found)?;
    Ok(TensorView::new(info.dtype, &info.shape, bytes)?)
}

/// The bytes behind a [`SafetensorsFile`].
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

/// A safetensors file opened from disk, validated, lending zero-copy views.
///
/// [`SafetensorsFile::open`] maps the file into memory; nothing is read
/// until a tensor's bytes are touched, and a tensor costs no copy.
#[derive(Debug, Clone)]
pub struct SafetensorsFile {
    header: Header,
    bytes: Arc<Backing>,
    path: PathBuf,
}

impl SafetensorsFile {
    /// Opens and validates `path` by memory-mapping it.
    ///
    /// # What this assumes
    ///
    /// A memory map reflects the file as it is *now*: if another process
    /// truncates or rewrites the file while it is mapped, reads may see the
    /// new bytes or fault (SIGBUS). weightkit never modifies a file it has
    /// open (its writers write a temporary file and rename it over the
    /// destination, which leaves the mapped inode intact). Open files that
    /// other programs might modify concurrently with
    /// [`SafetensorsFile::read`] instead, which copies the file to the heap.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        let file = File::open(&path).map_err(Error::io(&path))?;
        let len = file.metadata().map_err(Error::io(&path))?.len();
        // Mapping an empty file fails on some platforms; tiny files gain
        // nothing from a map.
        if len < 4096 {
            return Self::read(&path);
        }
        // SAFETY: the map is read-only and private to this process. The
        // documented contract above is that the file is not truncated or
        // modified while mapped; all accesses are bounds-checked against the
        // length the map was created with.
        let mmap = unsafe { Mmap::map(&file) }.map_err(Error::io(&path))?;
        Self::from_backing(Backing::Mmap(mmap), path)
    }

    /// Reads and validates `path` into a heap buffer (no mmap).
    pub fn read(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        let bytes = std::fs::read(&path).map_err(Error::io(&path))?;
        Self::from_backing(Backing::Heap(bytes), path)
    }

    /// Validates an in-memory file; `path` is only used in messages.
    pub fn from_vec(bytes: Vec<u8>, path: impl Into<PathBuf>) -> Result<Self> {
        Self::from_backing(Backing::Heap(bytes), path.into())
    }

    fn from_backing(backing: Backing, path: PathBuf) -> Result<Self> {
        let header = Header::parse(backing.as_ref())?;
        Ok(SafetensorsFile {
            header,
            bytes: Arc::new(backing),
            path,
        })
    }

    /// Whether the file is memory-mapped (as opposed to read to the heap).
    pub fn is_mmap(&self) -> bool {
        matches!(*self.bytes, Backing::Mmap(_))
    }

    /// The path it was opened from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The validated header.
    pub fn header(&self) -> &Header {
        &self.header
    }

    /// The whole file's bytes.
    pub fn bytes(&self) -> &[u8] {
        (*self.bytes).as_ref()
    }

    /// Tensors in data order.
    pub fn tensors(&self) -> &[TensorInfo] {
        self.header.tensors()
    }

    /// `__metadata__`.
    pub fn metadata(&self) -> &Metadata {
        self.header.metadata()
    }

    /// A zero-copy view of the tensor called `name`.
    pub fn tensor(&self, name: &str) -> Result<TensorView<'_>> {
        let i = self
            .header
            .position(name)
            .ok_or_else(|| Error::TensorNotFound(name.to_owned()))?;
        self.tensor_at(i)
    }

    /// A zero-copy view of the tensor at position `i`.
    pub fn tensor_at(&self, i: usize) -> Result<TensorView<'_>> {
        view(&self.header, self.bytes(), i)
    }

    /// An owned tensor sharing the file's buffer (no copy; keeps the map
    /// alive as long as the tensor lives).
    pub fn tensor_shared(&self, name: &str) -> Result<Tensor> {
        let i = self
            .header
            .position(name)
            .ok_or_else(|| Error::TensorNotFound(name.to_owned()))?;
        let info = &self.header.tensors()[i];
        let range = self
            .header
            .range(i)
            .ok_or_else(|| Error::TensorNotFound(name.to_owned()))?;
        let owner: Arc<dyn AsRef<[u8]> + Send + Sync> = self.bytes.clone();
        let shared =
            SharedBytes::new(owner, range).ok_or_else(|| Error::TensorNotFound(name.to_owned()))?;
        Ok(Tensor::new(
            info.dtype,
            info.shape.clone(),
            Storage::Shared(shared),
        )?)
    }
}

/// madvise(DONTNEED) on the whole pages inside `range` of `map`.
///
/// # Safety
///
/// No reference into those pages may be alive (see
/// [`SafetensorsFile::release_tensor_pages`]).
#[cfg(unix)]
pub(crate) unsafe fn release_pages(map: &Mmap, range: std::ops::Range<usize>) {
    const PAGE: usize = 4096;
    let start = range.start.next_multiple_of(PAGE);
    let end = range.end / PAGE * PAGE;
    if end > start {
        // SAFETY: forwarded to the caller: nothing borrows these pages. The
        // map is read-only and file-backed, so dropped pages read back as the
        // file's bytes on the next access.
        let _ = unsafe {
            map.unchecked_advise_range(memmap2::UncheckedAdvice::DontNeed, start, end - start)
        };
    }
}

impl SafetensorsFile {
    /// Tells the kernel that tensor `i`'s pages are no longer needed, so a
    /// streaming pass over a large file keeps only the tensor at hand
    /// resident (the pages are read from the file again if touched later).
    /// Does nothing for files read to the heap.
    ///
    /// # Safety
    ///
    /// No view, slice or shared tensor borrowing tensor `i`'s bytes may be
    /// alive, in any thread, when this is called (dropping a mapped page is
    /// a write to it as far as Rust's memory model is concerned).
    pub unsafe fn release_tensor_pages(&self, i: usize) {
        #[cfg(unix)]
        if let (Backing::Mmap(map), Some(range)) = (&*self.bytes, self.header.range(i)) {
            // SAFETY: forwarded to the caller.
            unsafe { release_pages(map, range) };
        }
    }
}

impl TensorSource for SafetensorsFile {
    type Error = Error;

    fn tensor_infos(&self) -> &[TensorInfo] {
        self.tensors()
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
