//! Reading PyTorch checkpoints: the zip format (`torch.save` since 1.6), the
//! legacy format (before 1.6, or `_use_new_zipfile_serialization=False`).

use std::borrow::Cow;
use std::collections::HashMap;
use std::fs::File;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use memmap2::Mmap;
use weightkit_core::{
    CowTensor, DType, Metadata, Tensor, TensorInfo, TensorSource, TensorView, Value,
};

use crate::error::{Error, Result};
use crate::torch::{self, TensorRef};
use crate::vm::{self, Limits, Obj, ObjId, Policy, Unpickled};
use crate::zip::{ZipArchive, ZipEntry, ZipLimits};

/// The legacy format's magic number (`torch.serialization.MAGIC_NUMBER`).
pub const LEGACY_MAGIC: u128 = 0x1950a86a20f9469cfc6c;

/// Which object in the checkpoint is the state dict.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum StateDictKey {
    /// The root if it holds tensors; otherwise the first of `state_dict`,
    /// `model_state_dict`, `model`, `module`, `net` that holds tensors.
    #[default]
    Auto,
    /// The root object.
    Root,
    /// A dotted path of keys from the root (`"model.ema"`).
    Path(String),
}

/// Options for opening a checkpoint.
#[derive(Clone, Debug)]
pub struct LoadOptions {
    /// Which object is the state dict.
    pub state_dict: StateDictKey,
    /// Pickle VM limits.
    pub limits: Limits,
    /// Zip limits (entries, decompressed size, ratio).
    pub zip_limits: ZipLimits,
    /// Most bytes a strided view may expand to when it reads storage
    /// elements more than once (a stride-0 `expand`), beyond its storage's
    /// size. A 4 KB file could otherwise ask for any amount of memory.
    /// Default 1 GiB.
    pub max_view_expansion: u64,
}

impl Default for LoadOptions {
    fn default() -> Self {
        LoadOptions {
            state_dict: StateDictKey::default(),
            limits: Limits::default(),
            zip_limits: ZipLimits::default(),
            max_view_expansion: 1 << 30,
        }
    }
}

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

/// The container a checkpoint came in.
#[derive(Debug)]
enum Container {
    Zip {
        archive: ZipArchive,
        prefix: String,
    },
    Legacy {
        /// Byte range of each storage's data, by key.
        storages: HashMap<String, Range<usize>>,
    },
}

/// A validated PyTorch checkpoint: tensor descriptions resolved to storages,
/// every view bounds-checked. Tensors load zero-copy when they are
/// contiguous in a stored (uncompressed) storage.
#[derive(Debug)]
pub struct TorchFile {
    bytes: Arc<Backing>,
    path: PathBuf,
    container: Container,
    infos: Vec<TensorInfo>,
    refs: Vec<TensorRef>,
    by_name: HashMap<String, usize>,
    metadata: Metadata,
    skipped: Vec<String>,
}

fn policy() -> Policy<'static> {
    Policy {
        is_allowed: &torch::is_allowed,
        dict_classes: torch::DICT_CLASSES,
    }
}

fn elem_size(d: DType) -> Result<u64> {
    d.size_in_bytes()
        .map(|s| s as u64)
        .ok_or_else(|| Error::Structure(format!("{d} tensors cannot come from a torch storage")))
}

impl TorchFile {
    /// Opens a checkpoint by memory-mapping it (see
    /// `weightkit_safetensors::SafetensorsFile::open` for what a map
    /// assumes: the file is not modified while open).
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        Self::open_with(path, &LoadOptions::default())
    }

    /// [`TorchFile::open`] with options.
    pub fn open_with(path: impl AsRef<Path>, opts: &LoadOptions) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        let file = File::open(&path).map_err(Error::io(&path))?;
        let len = file.metadata().map_err(Error::io(&path))?.len();
        if len < 4096 {
            let bytes = std::fs::read(&path).map_err(Error::io(&path))?;
            return Self::from_backing(Backing::Heap(bytes), path, opts);
        }
        // SAFETY: read-only private map; the documented contract is that the
        // file is not modified or truncated while mapped. All accesses are
        // bounds-checked against the map's length.
        let mmap = unsafe { Mmap::map(&file) }.map_err(Error::io(&path))?;
        Self::from_backing(Backing::Mmap(mmap), path, opts)
    }

    /// Parses an in-memory checkpoint; `path` is only used in messages.
    pub fn from_vec(bytes: Vec<u8>, path: impl Into<PathBuf>, opts: &LoadOptions) -> Result<Self> {
        Self::from_backing(Backing::Heap(bytes), path.into(), opts)
    }

    fn from_backing(backing: Backing, path: PathBuf, opts: &LoadOptions) -> Result<Self> {
        let buf = backing.as_ref();
        let (container, unpickled, format) =
            if buf.starts_with(b"PK\x03\x04") || buf.starts_with(b"PK\x05\x06") {
                let archive = ZipArchive::parse(buf, &opts.zip_limits)?;
                let (prefix, pkl) = find_data_pkl(&archive)?;
                if let Some(bo) = archive.find(&format!("{prefix}/byteorder")) {
                    let order = archive.read(buf, bo)?;
                    if order.as_ref() != b"little" {
                        return Err(Error::ByteOrder(
                            String::from_utf8_lossy(&order).into_owned(),
                        ));
                    }
                }
                let data = archive.read(buf, pkl)?;
                let what = format!("{prefix}/data.pkl");
                let u = vm::unpickle(&data, &policy(), &opts.limits)
                    .map_err(|source| Error::Pickle { what, source })?;
                (Container::Zip { archive, prefix }, u, "zip")
            } else if buf.first() == Some(&0x80) {
                let (u, storages) = parse_legacy(buf, opts)?;
                (Container::Legacy { storages }, u, "legacy")
            } else {
                // Not a checkpoint container; if it is a bare pickle naming
                // an unsafe global, say so rather than only that the format
                // is unknown.
                if let Err(source) = vm::unpickle(buf, &policy(), &opts.limits)
                    && matches!(source, vm::PickleError::UnsafeGlobal { .. })
                {
                    return Err(Error::Pickle {
                        what: "bare pickle".into(),
                        source,
                    });
                }
                return Err(Error::UnknownFormat(
                    "neither a zip archive nor a legacy torch.save file".into(),
                ));
            };

        let dict = select_state_dict(&unpickled, &opts.state_dict)?;
        let mut infos = Vec::new();
        let mut refs = Vec::new();
        let mut by_name = HashMap::new();
        let mut skipped = Vec::new();
        let items = unpickled.dict_items(dict).unwrap_or(&[]).to_vec();
        for (k, v) in items {
            let Some(name) = unpickled.as_str(k) else {
                let kind = unpickled.get(k).map_or("missing", vm::Obj::kind);
                skipped.push(match unpickled.as_int(k) {
                    Some(i) => format!("<{kind} key {i}>"),
                    None => format!("<{kind} key>"),
                });
                continue;
            };
            let name = name.to_owned();
            let Some(r) = torch::tensor_ref(&unpickled, v, &name)? else {
                skipped.push(name);
                continue;
            };
            if by_name.contains_key(&name) {
                return Err(Error::Structure(format!("duplicate tensor name `{name}`")));
            }
            check_view(&r, &name, opts.max_view_expansion)?;
            by_name.insert(name.clone(), infos.len());
            infos.push(TensorInfo::new(name, r.dtype, r.size.clone()));
            refs.push(r);
        }
        let file = TorchFile {
            bytes: Arc::new(backing),
            path,
            container,
            infos,
            refs,
            by_name,
            metadata: [
                ("format", Value::from("pt")),
                ("pickle.container", Value::from(format)),
            ]
            .into_iter()
            .collect(),
            skipped,
        };
        // Every storage must exist and be long enough.
        for (info, r) in file.infos.iter().zip(&file.refs) {
            let len = file.storage_len(&info.name, r)?;
            let need = r.storage_numel.saturating_mul(elem_size(r.storage_dtype)?);
            if len < need {
                return Err(Error::StorageSize {
                    key: r.storage_key.clone(),
                    expected: need,
                    found: len,
                });
            }
        }
        Ok(file)
    }

    /// The path it was opened from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `"zip"` or `"legacy"`.
    pub fn container(&self) -> &'static str {
        match self.container {
            Container::Zip { .. } => "zip",
            Container::Legacy { .. } => "legacy",
        }
    }

    /// The zip archive prefix (`archive`, `pytorch_model` ...), if zip.
    pub fn archive_prefix(&self) -> Option<&str> {
        match &self.container {
            Container::Zip { prefix, .. } => Some(prefix),
            Container::Legacy { .. } => None,
        }
    }

    /// Tensors in state-dict order.
    pub fn tensors(&self) -> &[TensorInfo] {
        &self.infos
    }

    /// How each tensor is stored (storage key, offset, strides).
    pub fn tensor_refs(&self) -> &[TensorRef] {
        &self.refs
    }

    /// State-dict entries that are not tensors (skipped).
    pub fn skipped(&self) -> &[String] {
        &self.skipped
    }

    /// Metadata (`format`, `pickle.container`).
    pub fn metadata(&self) -> &Metadata {
        &self.metadata
    }

    fn zip_entry(&self, tensor: &str, key: &str) -> Result<(&ZipArchive, &ZipEntry)> {
        let Container::Zip { archive, prefix } = &self.container else {
            return Err(Error::MissingStorage {
                tensor: tensor.to_owned(),
                key: key.to_owned(),
            });
        };
        let entry = archive
            .find(&format!("{prefix}/data/{key}"))
            .ok_or_else(|| Error::MissingStorage {
                tensor: tensor.to_owned(),
                key: key.to_owned(),
            })?;
        Ok((archive, entry))
    }

    fn storage_len(&self, tensor: &str, r: &TensorRef) -> Result<u64> {
        match &self.container {
            Container::Zip { .. } => {
                Ok(self.zip_entry(tensor, &r.storage_key)?.1.uncompressed_size)
            }
            Container::Legacy { storages } => storages
                .get(&r.storage_key)
                .map(|range| range.len() as u64)
                .ok_or_else(|| Error::MissingStorage {
                    tensor: tensor.to_owned(),
                    key: r.storage_key.clone(),
                }),
        }
    }

    /// The bytes of the storage behind tensor `i` (borrowed unless the zip
    /// entry is compressed).
    fn storage(&self, i: usize) -> Result<Cow<'_, [u8]>> {
        let info = self
            .infos
            .get(i)
            .ok_or_else(|| Error::TensorNotFound(format!("#{i}")))?;
        let r = &self.refs[i];
        let buf = (*self.bytes).as_ref();
        match &self.container {
            Container::Zip { .. } => {
                let (archive, entry) = self.zip_entry(&info.name, &r.storage_key)?;
                Ok(archive.read(buf, entry)?)
            }
            Container::Legacy { storages } => {
                let range =
                    storages
                        .get(&r.storage_key)
                        .cloned()
                        .ok_or_else(|| Error::MissingStorage {
                            tensor: info.name.clone(),
                            key: r.storage_key.clone(),
                        })?;
                buf.get(range)
                    .map(Cow::Borrowed)
                    .ok_or_else(|| Error::MissingStorage {
                        tensor: info.name.clone(),
                        key: r.storage_key.clone(),
                    })
            }
        }
    }

    /// Tensor `i`: zero-copy if contiguous in an uncompressed storage,
    /// otherwise a contiguous copy.
    pub fn tensor_at(&self, i: usize) -> Result<CowTensor<'_>> {
        let info = self
            .infos
            .get(i)
            .ok_or_else(|| Error::TensorNotFound(format!("#{i}")))?;
        let r = &self.refs[i];
        let es = elem_size(r.dtype)? as usize;
        let storage = self.storage(i)?;
        let base = (r.storage_view_offset * elem_size(r.storage_dtype)?) as usize;
        let numel = info.shape.elem_count()?;
        if numel == 0 {
            // Torch accepts any offset for an empty tensor: nothing to read.
            return Ok(CowTensor::Owned(Tensor::from_bytes(
                info.dtype,
                info.shape.clone(),
                Vec::new(),
            )?));
        }
        if r.is_contiguous() {
            let start = base + r.offset as usize * es;
            let end = start + numel * es;
            return match storage {
                Cow::Borrowed(b) => {
                    let data = b
                        .get(start..end)
                        .ok_or_else(|| oob(&info.name, r, end as u64, b.len() as u64))?;
                    Ok(CowTensor::Borrowed(TensorView::new(
                        info.dtype,
                        &info.shape,
                        data,
                    )?))
                }
                Cow::Owned(v) => {
                    let data = v
                        .get(start..end)
                        .ok_or_else(|| oob(&info.name, r, end as u64, v.len() as u64))?;
                    Ok(CowTensor::Owned(Tensor::from_bytes(
                        info.dtype,
                        info.shape.clone(),
                        data.to_vec(),
                    )?))
                }
            };
        }
        let src: &[u8] = &storage;
        let mut out = Vec::with_capacity(numel * es);
        gather(src, base, r, es, &mut out)
            .ok_or_else(|| oob(&info.name, r, 0, src.len() as u64))?;
        Ok(CowTensor::Owned(Tensor::from_bytes(
            info.dtype,
            info.shape.clone(),
            out,
        )?))
    }

    /// The tensor called `name`.
    pub fn tensor(&self, name: &str) -> Result<CowTensor<'_>> {
        let i = *self
            .by_name
            .get(name)
            .ok_or_else(|| Error::TensorNotFound(name.to_owned()))?;
        self.tensor_at(i)
    }
}

fn oob(name: &str, r: &TensorRef, end: u64, numel: u64) -> Error {
    Error::ViewOutOfBounds {
        tensor: name.to_owned(),
        offset: r.offset,
        size: r.size.clone(),
        stride: r.stride.clone(),
        end,
        numel,
    }
}

/// Copies a strided view into contiguous row-major order.
fn gather(src: &[u8], base: usize, r: &TensorRef, es: usize, out: &mut Vec<u8>) -> Option<()> {
    let rank = r.size.len();
    let mut idx = vec![0usize; rank];
    let total: usize = r.size.iter().product();
    for _ in 0..total {
        let mut off = r.offset as usize;
        for (i, s) in idx.iter().zip(&r.stride) {
            off += i * s;
        }
        let start = base + off * es;
        out.extend_from_slice(src.get(start..start + es)?);
        // Increment the multi-index, innermost first.
        for d in (0..rank).rev() {
            idx[d] += 1;
            if idx[d] < r.size[d] {
                break;
            }
            idx[d] = 0;
        }
    }
    Some(())
}

/// Checks that every element of the view lies inside the storage.
fn check_view(r: &TensorRef, name: &str, max_expansion: u64) -> Result<()> {
    let es = elem_size(r.dtype)?;
    let ses = elem_size(r.storage_dtype)?;
    let storage_bytes = r
        .storage_numel
        .checked_mul(ses)
        .ok_or_else(|| oob(name, r, u64::MAX, r.storage_numel))?;
    if r.size.contains(&0) {
        return Ok(());
    }
    // Last element reached: offset + sum((size-1)*stride), in elements of dtype.
    let mut last = r.offset;
    for (&s, &st) in r.size.iter().zip(&r.stride) {
        let span = (s as u64 - 1).checked_mul(st as u64);
        last = span
            .and_then(|x| last.checked_add(x))
            .ok_or_else(|| oob(name, r, u64::MAX, r.storage_numel))?;
    }
    let end_bytes = last
        .checked_add(1)
        .and_then(|e| e.checked_mul(es))
        .and_then(|e| e.checked_add(r.storage_view_offset.checked_mul(ses)?))
        .ok_or_else(|| oob(name, r, u64::MAX, r.storage_numel))?;
    if end_bytes > storage_bytes + r.storage_view_offset * ses {
        return Err(oob(name, r, end_bytes / es, storage_bytes / es));
    }
    // Element count must fit in memory arithmetic too.
    let n = r
        .size
        .iter()
        .try_fold(1u64, |a, &s| a.checked_mul(s as u64));
    let bytes = n.and_then(|n| n.checked_mul(es));
    if bytes.and_then(|b| usize::try_from(b).ok()).is_none() {
        return Err(oob(name, r, u64::MAX, r.storage_numel));
    }
    // A view can only be larger than its storage by reading elements more
    // than once (stride 0, overlapping strides): cap what that may cost.
    let bytes = bytes.unwrap_or(u64::MAX);
    if bytes > storage_bytes.max(max_expansion) {
        return Err(Error::ViewTooLarge {
            tensor: name.to_owned(),
            bytes,
            storage_bytes,
            limit: max_expansion,
        });
    }
    Ok(())
}

/// Finds the single `<prefix>/data.pkl` entry.
fn find_data_pkl(archive: &ZipArchive) -> Result<(String, &ZipEntry)> {
    let mut found = None;
    for e in archive.entries() {
        if let Some(prefix) = e.name.strip_suffix("/data.pkl") {
            if prefix.contains('/') || prefix.is_empty() {
                continue;
            }
            if found.is_some() {
                return Err(Error::Structure(
                    "more than one data.pkl in the archive".into(),
                ));
            }
            found = Some((prefix.to_owned(), e));
        }
    }
    found.ok_or_else(|| Error::Structure("no <prefix>/data.pkl entry in the archive".into()))
}

/// Picks the state dict out of the unpickled root.
fn select_state_dict(u: &Unpickled, key: &StateDictKey) -> Result<ObjId> {
    let root = u.root();
    let has_tensors = |id: ObjId| {
        u.dict_items(id).is_some_and(|items| {
            items
                .iter()
                .any(|&(_, v)| matches!(torch::tensor_ref(u, v, "?"), Ok(Some(_))))
        })
    };
    let child = |id: ObjId, k: &str| -> Option<ObjId> {
        u.dict_items(id)?
            .iter()
            .find(|&&(kk, _)| u.as_str(kk) == Some(k))
            .map(|&(_, v)| v)
    };
    match key {
        StateDictKey::Root => {
            if u.dict_items(root).is_none() {
                return Err(Error::Structure("the root object is not a dict".into()));
            }
            Ok(root)
        }
        StateDictKey::Path(path) => {
            let mut id = root;
            for part in path.split('.') {
                id = child(id, part).ok_or_else(|| {
                    Error::Structure(format!("no key `{part}` on the path `{path}`"))
                })?;
            }
            if u.dict_items(id).is_none() {
                return Err(Error::Structure(format!("`{path}` is not a dict")));
            }
            Ok(id)
        }
        StateDictKey::Auto => {
            if u.dict_items(root).is_none() {
                return Err(Error::Structure("the root object is not a dict".into()));
            }
            if has_tensors(root) {
                return Ok(root);
            }
            for k in ["state_dict", "model_state_dict", "model", "module", "net"] {
                if let Some(id) = child(root, k).filter(|&id| has_tensors(id)) {
                    return Ok(id);
                }
            }
            Ok(root)
        }
    }
}

/// Parses the legacy format: five pickles, then the raw storages.
fn parse_legacy(
    buf: &[u8],
    opts: &LoadOptions,
) -> Result<(Unpickled, HashMap<String, Range<usize>>)> {
    let p = policy();
    let mut pos = 0usize;
    let next = |what: &str, pos: &mut usize| -> Result<Unpickled> {
        let rest = buf.get(*pos..).unwrap_or(&[]);
        let u = vm::unpickle(rest, &p, &opts.limits).map_err(|source| Error::Pickle {
            what: format!("legacy {what} pickle at offset {pos}"),
            source,
        })?;
        *pos += u.consumed();
        Ok(u)
    };
    let magic = next("magic number", &mut pos)?;
    let is_magic = match magic.get(magic.root()) {
        Some(Obj::BigInt(b)) => {
            let mut v = [0u8; 16];
            b.len() <= 16 && {
                v[..b.len()].copy_from_slice(b);
                u128::from_le_bytes(v) == LEGACY_MAGIC
            }
        }
        _ => false,
    };
    if !is_magic {
        return Err(Error::UnknownFormat(
            "pickle without the legacy torch.save magic number".into(),
        ));
    }
    let proto = next("protocol version", &mut pos)?;
    if proto.as_int(proto.root()) != Some(1001) {
        return Err(Error::Structure(
            "legacy protocol version is not 1001".into(),
        ));
    }
    let sys = next("sys info", &mut pos)?;
    if let Some(items) = sys.dict_items(sys.root()) {
        for &(k, v) in items {
            if sys.as_str(k) == Some("little_endian")
                && matches!(sys.get(v), Some(Obj::Bool(false)))
            {
                return Err(Error::ByteOrder("big".into()));
            }
        }
    }
    let object = next("object", &mut pos)?;
    let keys = next("storage keys", &mut pos)?;
    // dtype of each storage, from the persistent ids in the object.
    let mut dtypes: HashMap<String, DType> = HashMap::new();
    for id in 0..object.objects().len() {
        if let Some(Obj::PersistentId(pid)) = object.get(id)
            && let Some(Obj::Tuple(items)) = object.get(*pid)
        {
            let key = items.get(2).and_then(|&k| object.as_str(k));
            let ty = items.get(1).and_then(|&t| object.global_name(t));
            if let (Some(key), Some((m, n))) = (key, ty) {
                let d = if n == "UntypedStorage" {
                    Some(DType::U8)
                } else {
                    torch::storage_dtype(m, n)
                };
                if let Some(d) = d {
                    dtypes.insert(key.to_owned(), d);
                }
            }
        }
    }
    let key_list: Vec<String> = match keys.get(keys.root()) {
        Some(Obj::List(items)) => items
            .iter()
            .map(|&k| keys.as_str(k).map(str::to_owned))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| Error::Structure("legacy storage keys are not strings".into()))?,
        _ => {
            return Err(Error::Structure(
                "legacy storage key list is not a list".into(),
            ));
        }
    };
    let mut storages = HashMap::with_capacity(key_list.len().min(1 << 16));
    for key in key_list {
        let at = pos;
        let header = buf.get(pos..pos + 8).ok_or_else(|| Error::StorageSize {
            key: key.clone(),
            expected: 8,
            found: buf.len().saturating_sub(at) as u64,
        })?;
        let mut n = [0u8; 8];
        n.copy_from_slice(header);
        let numel = u64::from_le_bytes(n);
        pos += 8;
        let dtype = dtypes.get(&key).copied().ok_or_else(|| {
            Error::Structure(format!("legacy storage `{key}` is not used by any tensor"))
        })?;
        let bytes = numel
            .checked_mul(elem_size(dtype)?)
            .ok_or_else(|| Error::StorageSize {
                key: key.clone(),
                expected: u64::MAX,
                found: 0,
            })?;
        let end = (pos as u64)
            .checked_add(bytes)
            .filter(|&e| e <= buf.len() as u64)
            .ok_or_else(|| Error::StorageSize {
                key: key.clone(),
                expected: bytes,
                found: buf.len().saturating_sub(pos) as u64,
            })? as usize;
        if storages.insert(key.clone(), pos..end).is_some() {
            return Err(Error::Structure(format!(
                "legacy storage `{key}` appears twice"
            )));
        }
        pos = end;
    }
    Ok((object, storages))
}

impl TensorSource for TorchFile {
    type Error = Error;

    fn tensor_infos(&self) -> &[TensorInfo] {
        &self.infos
    }

    fn metadata(&self) -> &Metadata {
        &self.metadata
    }

    fn load(&self, index: usize) -> Result<CowTensor<'_>> {
        self.tensor_at(index)
    }

    fn position(&self, name: &str) -> Option<usize> {
        self.by_name.get(name).copied()
    }
}
