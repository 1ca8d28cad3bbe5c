//! Open anything: a checkpoint file of any supported format (detected by
//! content, not by extension) or a Hugging Face model directory, as one
//! tensor source with its metadata.

use std::collections::{BTreeMap, HashMap};
use std::io::Read;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use weightkit_core::{CowTensor, Metadata, Tensor, TensorInfo, TensorSource};
use weightkit_gguf::GgufFile;
use weightkit_pickle::{LoadOptions, TorchFile};
use weightkit_safetensors::{Checkpoint, SafetensorsFile, ShardedSafetensors};

use crate::error::IoError;

/// A checkpoint format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Format {
    /// `.safetensors`, single or sharded.
    Safetensors,
    /// A `torch.save` checkpoint (zip or legacy), single or sharded.
    PyTorch,
    /// GGUF.
    Gguf,
}

impl Format {
    /// The name used in messages.
    pub fn name(self) -> &'static str {
        match self {
            Format::Safetensors => "safetensors",
            Format::PyTorch => "PyTorch",
            Format::Gguf => "GGUF",
        }
    }
}

/// A tensor source of any format (object-safe, unlike
/// [`TensorSource`], whose error type differs per format).
pub trait Source: Send + Sync + std::fmt::Debug {
    /// The format.
    fn format(&self) -> Format;
    /// Every tensor, in storage order (row-major shapes).
    fn tensor_infos(&self) -> &[TensorInfo];
    /// File-level metadata (GGUF key-values, safetensors `__metadata__` ...).
    fn metadata(&self) -> &Metadata;
    /// Tensor `i`, zero-copy where the format allows.
    fn load(&self, i: usize) -> Result<CowTensor<'_>, IoError>;
    /// Position of a tensor by name.
    fn position(&self, name: &str) -> Option<usize> {
        self.tensor_infos().iter().position(|t| t.name == name)
    }
    /// Hints that tensor `i` will not be read again, so memory-mapped
    /// sources can drop its pages (a pass over a file larger than memory
    /// then keeps one tensor resident). A no-op by default.
    ///
    /// # Safety
    ///
    /// Nothing borrowing tensor `i`'s bytes may be alive.
    unsafe fn release(&self, _i: usize) {}
}

#[derive(Debug)]
struct St(Checkpoint, PathBuf);

impl Source for St {
    fn format(&self) -> Format {
        Format::Safetensors
    }
    fn tensor_infos(&self) -> &[TensorInfo] {
        self.0.tensor_infos()
    }
    fn metadata(&self) -> &Metadata {
        TensorSource::metadata(&self.0)
    }
    fn load(&self, i: usize) -> Result<CowTensor<'_>, IoError> {
        self.0
            .load(i)
            .map_err(IoError::read(&self.1, "safetensors"))
    }
    fn position(&self, name: &str) -> Option<usize> {
        TensorSource::position(&self.0, name)
    }
    unsafe fn release(&self, i: usize) {
        // SAFETY: forwarded to the caller.
        unsafe { self.0.release_tensor_pages(i) }
    }
}

#[derive(Debug)]
struct Gg(GgufFile);

impl Source for Gg {
    fn format(&self) -> Format {
        Format::Gguf
    }
    fn tensor_infos(&self) -> &[TensorInfo] {
        self.0.tensors()
    }
    fn metadata(&self) -> &Metadata {
        self.0.metadata()
    }
    fn load(&self, i: usize) -> Result<CowTensor<'_>, IoError> {
        self.0.load(i).map_err(IoError::read(self.0.path(), "GGUF"))
    }
    unsafe fn release(&self, i: usize) {
        // SAFETY: forwarded to the caller.
        unsafe { self.0.release_tensor_pages(i) }
    }
    fn position(&self, name: &str) -> Option<usize> {
        TensorSource::position(&self.0, name)
    }
}

/// One or more `torch.save` files as one source.
#[derive(Debug)]
struct Torch {
    files: Vec<TorchFile>,
    infos: Vec<TensorInfo>,
    locations: Vec<(usize, usize)>,
    by_name: HashMap<String, usize>,
    metadata: Metadata,
}

impl Torch {
    fn new(files: Vec<TorchFile>, path: &Path) -> Result<Self, IoError> {
        let mut infos = Vec::new();
        let mut locations = Vec::new();
        let mut by_name = HashMap::new();
        for (f, file) in files.iter().enumerate() {
            for (i, info) in file.tensors().iter().enumerate() {
                if by_name.insert(info.name.clone(), infos.len()).is_some() {
                    return Err(IoError::InvalidIndex {
                        path: path.to_path_buf(),
                        message: format!("tensor `{}` appears in more than one shard", info.name),
                    });
                }
                infos.push(info.clone());
                locations.push((f, i));
            }
        }
        let metadata = files
            .first()
            .map(|f| f.metadata().clone())
            .unwrap_or_default();
        Ok(Torch {
            files,
            infos,
            locations,
            by_name,
            metadata,
        })
    }
}

impl Source for Torch {
    fn format(&self) -> Format {
        Format::PyTorch
    }
    fn tensor_infos(&self) -> &[TensorInfo] {
        &self.infos
    }
    fn metadata(&self) -> &Metadata {
        &self.metadata
    }
    fn load(&self, i: usize) -> Result<CowTensor<'_>, IoError> {
        let &(f, j) = self.locations.get(i).ok_or_else(|| {
            IoError::Core(weightkit_core::CoreError::TensorNotFound(format!("#{i}")))
        })?;
        let file = &self.files[f];
        file.tensor_at(j)
            .map_err(IoError::read(file.path(), "PyTorch"))
    }
    fn position(&self, name: &str) -> Option<usize> {
        self.by_name.get(name).copied()
    }
}

/// Tensors computed anew from a wrapped source (a LoRA merge, a dequantized
/// view ...): the safe half of a derived [`Source`], installed with
/// [`Model::with_overlay`]. The overlay names the tensor list (the base's
/// names and shapes, in the base's order; dtypes may differ) and computes
/// the tensors it changes; every other tensor is the base's, zero-copy, and
/// page releases reach the base.
pub trait Overlay: Send + Sync + std::fmt::Debug {
    /// The tensor list: as long as the base's, same names and shapes.
    fn tensor_infos(&self) -> &[TensorInfo];
    /// Tensor `i` computed from `base`, or `None` to hand out the base's
    /// own tensor `i` (whose dtype must then be the one listed).
    fn load(&self, base: &dyn Source, i: usize) -> Result<Option<Tensor>, IoError>;
}

/// A source whose tensors come from an [`Overlay`] over a base source.
#[derive(Debug)]
struct Overlaid<O> {
    base: Box<dyn Source>,
    overlay: O,
}

impl<O: Overlay> Source for Overlaid<O> {
    fn format(&self) -> Format {
        self.base.format()
    }
    fn tensor_infos(&self) -> &[TensorInfo] {
        self.overlay.tensor_infos()
    }
    fn metadata(&self) -> &Metadata {
        self.base.metadata()
    }
    fn load(&self, i: usize) -> Result<CowTensor<'_>, IoError> {
        match self.overlay.load(&*self.base, i)? {
            Some(t) => Ok(CowTensor::Owned(t)),
            None => self.base.load(i),
        }
    }
    fn position(&self, name: &str) -> Option<usize> {
        self.base.position(name)
    }
    unsafe fn release(&self, i: usize) {
        // SAFETY: forwarded to the caller: no borrow of tensor `i` handed
        // out by this source (zero-copy ones are the base's) is alive, and
        // the overlay's own reads of the base ended when its `load`
        // returned an owned tensor.
        unsafe { self.base.release(i) }
    }
}

/// An opened checkpoint: the tensors, and, for a Hugging Face directory,
/// its `config.json` and the directory (tokenizer files live there).
#[derive(Debug)]
pub struct Model {
    source: Box<dyn Source>,
    path: PathBuf,
    dir: Option<PathBuf>,
    config: Option<serde_json::Value>,
}

impl Model {
    /// The tensors.
    pub fn source(&self) -> &dyn Source {
        &*self.source
    }

    /// The format.
    pub fn format(&self) -> Format {
        self.source.format()
    }

    /// The path given to [`open`].
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The model directory (the path itself, or the file's folder).
    pub fn dir(&self) -> Option<&Path> {
        self.dir.as_deref()
    }

    /// `config.json`, when the directory has one.
    pub fn config(&self) -> Option<&serde_json::Value> {
        self.config.as_ref()
    }

    /// The same model (path, directory, `config.json`) whose tensors come
    /// through `overlay`: conversion and quantization plans then read the
    /// overlay's tensors, e.g. a LoRA merge computed tensor by tensor.
    ///
    /// # Errors
    /// [`IoError::Module`] when the overlay's tensor list does not have the
    /// base's names and shapes in the base's order.
    pub fn with_overlay(self, overlay: impl Overlay + 'static) -> Result<Model, IoError> {
        let base = self.source.tensor_infos();
        let listed = overlay.tensor_infos();
        let same = base.len() == listed.len()
            && base
                .iter()
                .zip(listed)
                .all(|(a, b)| a.name == b.name && a.shape == b.shape);
        if !same {
            return Err(IoError::Module(
                "an overlay must list the base's tensors (names and shapes, in order)".into(),
            ));
        }
        Ok(Model {
            source: Box::new(Overlaid {
                base: self.source,
                overlay,
            }),
            path: self.path,
            dir: self.dir,
            config: self.config,
        })
    }
}

/// What the first bytes of a file say it is.
fn sniff(path: &Path) -> Result<Option<Format>, IoError> {
    let mut head = [0u8; 16];
    let mut f = std::fs::File::open(path).map_err(IoError::io(path))?;
    let mut n = 0;
    while n < head.len() {
        match f.read(&mut head[n..]).map_err(IoError::io(path))? {
            0 => break,
            k => n += k,
        }
    }
    Ok(sniff_head(&head[..n]))
}

/// [`sniff`] on the first bytes. A safetensors file starts with its header's
/// length (8 bytes, little-endian) and then `{`; the length's low byte may be
/// 0x80 (a header of 0x3080 bytes, as transformers writes for a 12-layer
/// Llama) or 0x80 then 2..=5 (640 bytes), which also open a pickle, so the
/// safetensors check comes first and a pickle needs a protocol byte.
fn sniff_head(head: &[u8]) -> Option<Format> {
    if head.starts_with(b"GGUF") {
        Some(Format::Gguf)
    } else if head.len() >= 9 && head[8] == b'{' {
        Some(Format::Safetensors)
    } else if head.starts_with(b"PK\x03\x04")
        || (head.first() == Some(&0x80) && head.get(1).is_some_and(|p| (2..=5).contains(p)))
    {
        Some(Format::PyTorch)
    } else {
        None
    }
}

#[derive(Deserialize)]
struct RawIndex {
    weight_map: BTreeMap<String, String>,
}

fn plain_name(index: &Path, name: &str) -> Result<(), IoError> {
    if name.is_empty() || name == "." || name == ".." || name.contains(['/', '\\', '\0']) {
        return Err(IoError::InvalidIndex {
            path: index.to_path_buf(),
            message: format!("shard name `{name}` is not a plain file name"),
        });
    }
    Ok(())
}

/// A sharded PyTorch checkpoint through its `*.bin.index.json`.
fn open_torch_index(index: &Path, opts: &LoadOptions) -> Result<Torch, IoError> {
    let text = std::fs::read(index).map_err(IoError::io(index))?;
    let raw: RawIndex = serde_json::from_slice(&text).map_err(|e| IoError::InvalidIndex {
        path: index.to_path_buf(),
        message: e.to_string(),
    })?;
    let dir = index.parent().unwrap_or(Path::new("."));
    let mut names: Vec<&str> = raw.weight_map.values().map(String::as_str).collect();
    names.sort_unstable();
    names.dedup();
    let mut files = Vec::with_capacity(names.len());
    for name in &names {
        plain_name(index, name)?;
        let p = dir.join(name);
        files.push(TorchFile::open_with(&p, opts).map_err(IoError::read(&p, "PyTorch"))?);
    }
    for (file, name) in files.iter().zip(&names) {
        for t in file.tensors() {
            if raw.weight_map.get(&t.name).map(String::as_str) != Some(*name) {
                return Err(IoError::InvalidIndex {
                    path: index.to_path_buf(),
                    message: format!("tensor `{}` in {name} is not mapped to it", t.name),
                });
            }
        }
    }
    let torch = Torch::new(files, index)?;
    for t in raw.weight_map.keys() {
        if !torch.by_name.contains_key(t) {
            return Err(IoError::InvalidIndex {
                path: index.to_path_buf(),
                message: format!("tensor `{t}` is in the weight map but in no shard"),
            });
        }
    }
    Ok(torch)
}

fn open_file(path: &Path) -> Result<Box<dyn Source>, IoError> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    if name.ends_with(".index.json") {
        let text = std::fs::read(path).map_err(IoError::io(path))?;
        let raw: RawIndex = serde_json::from_slice(&text).map_err(|e| IoError::InvalidIndex {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        let safetensors = raw.weight_map.values().all(|f| f.ends_with(".safetensors"));
        return if safetensors {
            let s = ShardedSafetensors::open(path).map_err(IoError::read(path, "safetensors"))?;
            Ok(Box::new(St(Checkpoint::Sharded(s), path.to_path_buf())))
        } else {
            Ok(Box::new(open_torch_index(path, &LoadOptions::default())?))
        };
    }
    match sniff(path)? {
        Some(Format::Gguf) => Ok(Box::new(Gg(
            GgufFile::open(path).map_err(IoError::read(path, "GGUF"))?
        ))),
        Some(Format::PyTorch) => {
            let f = TorchFile::open(path).map_err(IoError::read(path, "PyTorch"))?;
            Ok(Box::new(Torch::new(vec![f], path)?))
        }
        Some(Format::Safetensors) => {
            let f = SafetensorsFile::open(path).map_err(IoError::read(path, "safetensors"))?;
            Ok(Box::new(St(Checkpoint::Single(f), path.to_path_buf())))
        }
        None => Err(IoError::UnknownFormat {
            path: path.to_path_buf(),
            reason: "no safetensors, GGUF, zip or pickle signature".into(),
        }),
    }
}

/// Opens a checkpoint file (any supported format, detected by content), a
/// shard index, or a Hugging Face model directory (`config.json` plus
/// `model.safetensors`, `model.safetensors.index.json`, `pytorch_model.bin`
/// or `pytorch_model.bin.index.json`, in that order of preference; a
/// directory holding just one `.gguf` opens that).
pub fn open(path: impl AsRef<Path>) -> Result<Model, IoError> {
    let path = path.as_ref();
    let (source, dir) = if path.is_dir() {
        let candidates = [
            "model.safetensors.index.json",
            "model.safetensors",
            "pytorch_model.bin.index.json",
            "pytorch_model.bin",
        ];
        let found = candidates
            .iter()
            .map(|c| path.join(c))
            .find(|p| p.is_file());
        let file = match found {
            Some(f) => f,
            None => {
                let mut ggufs: Vec<PathBuf> = std::fs::read_dir(path)
                    .map_err(IoError::io(path))?
                    .filter_map(|e| e.ok().map(|e| e.path()))
                    .filter(|p| {
                        p.extension()
                            .is_some_and(|e| e == "gguf" || e == "safetensors")
                    })
                    .collect();
                ggufs.sort();
                match ggufs.as_slice() {
                    [one] => one.clone(),
                    _ => {
                        return Err(IoError::UnknownFormat {
                            path: path.to_path_buf(),
                            reason: format!(
                                "a directory needs model.safetensors(.index.json), pytorch_model.bin(.index.json) or exactly one .gguf/.safetensors file; found {} candidates",
                                ggufs.len()
                            ),
                        });
                    }
                }
            }
        };
        (open_file(&file)?, Some(path.to_path_buf()))
    } else {
        (open_file(path)?, path.parent().map(Path::to_path_buf))
    };
    let config = match &dir {
        Some(d) if d.join("config.json").is_file() => {
            let p = d.join("config.json");
            let text = std::fs::read(&p).map_err(IoError::io(&p))?;
            Some(serde_json::from_slice(&text).map_err(|e| IoError::Read {
                path: p.clone(),
                format: "config.json",
                source: Box::new(e),
            })?)
        }
        _ => None,
    };
    Ok(Model {
        source,
        path: path.to_path_buf(),
        dir,
        config,
    })
}

#[cfg(test)]
mod tests {
    use super::{Format, sniff_head};

    #[test]
    fn safetensors_header_lengths_that_look_like_pickle() {
        // 12416 = 0x3080: 0x80 then 0x30, no pickle protocol.
        assert_eq!(
            sniff_head(b"\x80\x30\0\0\0\0\0\0{\"__metadata__\""),
            Some(Format::Safetensors)
        );
        // 640 = 0x280: 0x80 then 2, a pickle protocol byte.
        assert_eq!(
            sniff_head(b"\x80\x02\0\0\0\0\0\0{\"a\""),
            Some(Format::Safetensors)
        );
        assert_eq!(
            sniff_head(b"\x80\x02\x8a\x0alZ\xfc\x9cF\xf9 j"),
            Some(Format::PyTorch)
        );
        assert_eq!(sniff_head(b"PK\x03\x04\x14\0"), Some(Format::PyTorch));
        assert_eq!(sniff_head(b"GGUF\x03\0\0\0"), Some(Format::Gguf));
        assert_eq!(sniff_head(b"\x80\x30"), None);
    }
}
