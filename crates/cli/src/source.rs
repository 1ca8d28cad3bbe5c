//! Opening an input: detect its format by magic bytes, open it with that
//! format's reader, and hand back a format-independent [`Model`].
//!
//! Adding a format is one arm in [`open`] plus an `impl Model` for its
//! reader; detection already recognises the formats later builds will read,
//! so that until then they are named in a clear "unsupported format" error
//! instead of failing as a malformed safetensors file.
//!
//! GGUF is recognised by its `GGUF` magic whatever the file is called, and
//! PyTorch checkpoints by theirs: a zip archive (`PK\x03\x04`; the reader
//! then requires a `<prefix>/data.pkl` entry) or a pickle (`\x80\x02`; the
//! reader then requires the legacy `torch.save` magic number), so `.bin`,
//! `.pt`, `.pth` and `.ckpt` need no particular name. A
//! `*.bin.index.json` is a sharded PyTorch checkpoint ([`torch`]).
//!
//! A directory is, in this order of preference: a safetensors checkpoint if
//! it holds any safetensors file or index; a sharded PyTorch checkpoint if it
//! holds `pytorch_model.bin.index.json` (or exactly one `*.bin.index.json`);
//! its `pytorch_model.bin`; its one `.gguf` file; its one other PyTorch
//! checkpoint. Several candidates of one kind and none preferred are an
//! error naming them (a training directory's `optimizer.pt` and
//! `scheduler.pt` are not the model).

use std::fmt::Write as _;
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use weightkit_core::{Metadata, TensorInfo, TensorSource};
use weightkit_gguf::{GgufFile, ReadOptions};
use weightkit_pickle::{LoadOptions, StateDictKey};
use weightkit_safetensors::{Checkpoint, INDEX_FILE};

use crate::error::CliError;

mod torch;

pub(crate) use self::torch::{TorchCheckpoint, TorchTensor, is_view};

/// What every command needs from an opened input, whatever its format.
pub(crate) trait Model {
    /// A stable machine-readable format name (`safetensors-sharded`).
    fn format_id(&self) -> &'static str;
    /// A human description (`safetensors (sharded, 4 shards)`).
    fn format_label(&self) -> String;
    /// Every tensor, in storage order.
    fn tensor_infos(&self) -> &[TensorInfo];
    /// File-level metadata.
    fn metadata(&self) -> &Metadata;
    /// The files behind a multi-file checkpoint, in order; empty otherwise.
    fn shards(&self) -> Vec<Shard> {
        Vec::new()
    }
    /// The total data size an index declares, if the format has one.
    fn declared_total_size(&self) -> Option<u64> {
        None
    }
    /// The GGUF file behind the model, for GGUF-only details (version,
    /// alignment, ggml types and `ne` order).
    fn gguf(&self) -> Option<&GgufFile> {
        None
    }
    /// The PyTorch checkpoint behind the model, for storage details
    /// (storage keys, offsets, strides, skipped entries).
    fn torch(&self) -> Option<&TorchCheckpoint> {
        None
    }
    /// The one file read, where the input named a directory and the model
    /// is a single file in it (GGUF, `pytorch_model.bin`).
    fn file_path(&self) -> Option<&Path> {
        None
    }
}

/// How to open inputs: the format-specific switches commands expose.
#[derive(Debug, Clone, Default)]
pub(crate) struct OpenOptions {
    /// Accept GGUF metadata arrays of arrays (llama.cpp rejects them).
    pub(crate) allow_nested_arrays: bool,
    /// Which object of a PyTorch checkpoint is the state dict; anything
    /// but `Auto` is an error for other formats.
    pub(crate) state_dict: StateDictKey,
}

/// One file of a multi-file checkpoint.
#[derive(Debug, Clone)]
pub(crate) struct Shard {
    pub(crate) path: PathBuf,
    pub(crate) tensor_count: usize,
    pub(crate) data_bytes: u64,
}

impl Model for Checkpoint {
    fn format_id(&self) -> &'static str {
        match self {
            Checkpoint::Single(_) => "safetensors",
            Checkpoint::Sharded(_) => "safetensors-sharded",
        }
    }

    fn format_label(&self) -> String {
        match self {
            Checkpoint::Single(_) => "safetensors".to_owned(),
            Checkpoint::Sharded(s) => match s.shards().len() {
                1 => "safetensors (sharded, 1 shard)".to_owned(),
                n => format!("safetensors (sharded, {n} shards)"),
            },
        }
    }

    fn tensor_infos(&self) -> &[TensorInfo] {
        TensorSource::tensor_infos(self)
    }

    fn metadata(&self) -> &Metadata {
        TensorSource::metadata(self)
    }

    fn shards(&self) -> Vec<Shard> {
        let Checkpoint::Sharded(s) = self else {
            return Vec::new();
        };
        s.shards()
            .iter()
            .map(|f| Shard {
                path: f.path().to_path_buf(),
                tensor_count: f.tensors().len(),
                // The header check guarantees the data section is exactly
                // the tensors' bytes.
                data_bytes: to_u64(f.bytes().len().saturating_sub(f.header().data_start())),
            })
            .collect()
    }

    fn declared_total_size(&self) -> Option<u64> {
        match self {
            Checkpoint::Single(_) => None,
            Checkpoint::Sharded(s) => s.declared_total_size(),
        }
    }
}

impl Model for GgufFile {
    fn format_id(&self) -> &'static str {
        "gguf"
    }

    fn format_label(&self) -> String {
        format!("GGUF v{}", self.version())
    }

    fn tensor_infos(&self) -> &[TensorInfo] {
        self.tensors()
    }

    fn metadata(&self) -> &Metadata {
        GgufFile::metadata(self)
    }

    fn gguf(&self) -> Option<&GgufFile> {
        Some(self)
    }

    fn file_path(&self) -> Option<&Path> {
        Some(self.path())
    }
}

/// `usize` to `u64` (lossless on every supported target).
pub(crate) fn to_u64(n: usize) -> u64 {
    u64::try_from(n).unwrap_or(u64::MAX)
}

/// A format recognised by its magic bytes (or, for directories, its files).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// A `.safetensors` file, a `*.safetensors.index.json`, or a directory
    /// of them.
    Safetensors,
    Gguf,
    /// Pre-GGUF llama.cpp files (`ggml`, `ggmf`, `ggjt` magics).
    LegacyGgml,
    TorchZip,
    Pickle,
    /// A `*.bin.index.json`: PyTorch shards.
    TorchIndex,
    Numpy,
    /// A JSON file other than a shard index (`config.json` ...).
    Json,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Safetensors => "safetensors",
            Kind::Gguf => "GGUF",
            Kind::LegacyGgml => "legacy GGML (pre-GGUF llama.cpp)",
            Kind::TorchZip => "PyTorch zip checkpoint",
            Kind::Pickle => "legacy PyTorch pickle",
            Kind::TorchIndex => "sharded PyTorch index",
            Kind::Numpy => "NumPy .npy",
            Kind::Json => "JSON",
        }
    }
}

/// What detection found and why.
#[derive(Debug)]
struct Detected {
    kind: Kind,
    /// The evidence, for messages: the magic bytes, and for a directory the
    /// file that had them.
    evidence: String,
    /// A directory's one file to open instead of the directory itself.
    file: Option<PathBuf>,
}

/// Opens `path` (a file or a model directory) in whatever format it is.
pub(crate) fn open(path: &Path, opts: &OpenOptions) -> Result<Box<dyn Model>, CliError> {
    let detected = detect(path)?;
    let is_torch = matches!(
        detected.kind,
        Kind::TorchZip | Kind::Pickle | Kind::TorchIndex
    );
    if opts.state_dict != StateDictKey::Auto && !is_torch {
        return Err(CliError::NotApplicable {
            path: path.to_path_buf(),
            flag: "--state-dict",
            applies_to: "PyTorch checkpoints",
            format: detected.kind.name(),
        });
    }
    let torch_opts = LoadOptions {
        state_dict: opts.state_dict.clone(),
        ..LoadOptions::default()
    };
    match detected.kind {
        Kind::Safetensors => match weightkit_safetensors::open_checkpoint(path) {
            Ok(c) => Ok(Box::new(c)),
            Err(e) => Err(CliError::Open {
                path: path.to_path_buf(),
                format: "safetensors",
                source: Box::new(e),
                hint: None,
            }),
        },
        Kind::Gguf => {
            let file = detected.file.as_deref().unwrap_or(path);
            let read_opts = ReadOptions {
                allow_nested_arrays: opts.allow_nested_arrays,
                ..ReadOptions::default()
            };
            match GgufFile::open_with(file, &read_opts) {
                Ok(g) => Ok(Box::new(g)),
                Err(e) => {
                    let hint = matches!(e, weightkit_gguf::Error::NestedArray { .. })
                        .then_some("pass --allow-nested-arrays to read it anyway");
                    Err(CliError::Open {
                        path: file.to_path_buf(),
                        format: "GGUF",
                        source: Box::new(e),
                        hint,
                    })
                }
            }
        }
        Kind::TorchZip | Kind::Pickle => {
            let file = detected.file.as_deref().unwrap_or(path);
            Ok(Box::new(TorchCheckpoint::open_file(file, &torch_opts)?))
        }
        Kind::TorchIndex => {
            let index = detected.file.as_deref().unwrap_or(path);
            Ok(Box::new(TorchCheckpoint::open_index(index, &torch_opts)?))
        }
        Kind::LegacyGgml | Kind::Numpy | Kind::Json => Err(CliError::Unsupported {
            path: path.to_path_buf(),
            format: detected.kind.name(),
            evidence: detected.evidence,
        }),
    }
}

fn detect(path: &Path) -> Result<Detected, CliError> {
    let read_err = |source| CliError::Read {
        path: path.to_path_buf(),
        source,
    };
    let meta = std::fs::metadata(path).map_err(read_err)?;
    if meta.is_dir() {
        return detect_dir(path);
    }
    let head = read_head(path).map_err(read_err)?;
    Ok(sniff(&head, path))
}

/// Up to the first 16 bytes of a file.
fn read_head(path: &Path) -> std::io::Result<Vec<u8>> {
    let mut head = Vec::with_capacity(16);
    File::open(path)?.take(16).read_to_end(&mut head)?;
    Ok(head)
}

fn sniff(head: &[u8], path: &Path) -> Detected {
    let found = |kind, n: usize| Detected {
        kind,
        evidence: format!("magic {}", show_magic(head.get(..n).unwrap_or(head))),
        file: None,
    };
    // A safetensors file starts with an 8-byte header length then `{`; the
    // length's low byte may be anything, 0x80 included, so this check comes
    // before the pickle one. (GGUF, zip and the GGML magics read as header
    // lengths far beyond the safetensors cap, so cannot collide.)
    let safetensors_like = head.get(8) == Some(&b'{');
    if head.starts_with(b"GGUF") {
        found(Kind::Gguf, 4)
    } else if [b"lmgg", b"fmgg", b"tjgg"]
        .iter()
        .any(|m| head.starts_with(*m))
    {
        found(Kind::LegacyGgml, 4)
    } else if head.starts_with(b"PK\x03\x04") {
        found(Kind::TorchZip, 4)
    } else if head.starts_with(b"\x93NUMPY") {
        found(Kind::Numpy, 6)
    } else if !safetensors_like
        && head.first() == Some(&0x80)
        && head.get(1).is_some_and(|p| (2..=5).contains(p))
    {
        found(Kind::Pickle, 2)
    } else if path
        .file_name()
        .is_some_and(|n| torch::is_index_name(&n.to_string_lossy()))
    {
        Detected {
            kind: Kind::TorchIndex,
            evidence: "a PyTorch shard index".to_owned(),
            file: None,
        }
    } else if head.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{')
        && !path.to_string_lossy().ends_with(".index.json")
    {
        Detected {
            kind: Kind::Json,
            evidence: "starts with `{` but is not a `*.safetensors.index.json`".to_owned(),
            file: None,
        }
    } else if !safetensors_like && has_torch_extension(path) {
        // A pickle of protocol 0 or 1, or no checkpoint at all: the PyTorch
        // reader's error says which better than a safetensors header error.
        Detected {
            kind: Kind::Pickle,
            evidence: "a PyTorch file name and no safetensors header".to_owned(),
            file: None,
        }
    } else {
        Detected::safetensors()
    }
}

/// `.pt`, `.pth`, `.bin` or `.ckpt`.
fn has_torch_extension(path: &Path) -> bool {
    path.extension()
        .is_some_and(|e| ["pt", "pth", "bin", "ckpt"].iter().any(|t| e == *t))
}

impl Detected {
    fn safetensors() -> Detected {
        Detected {
            kind: Kind::Safetensors,
            evidence: String::new(),
            file: None,
        }
    }
}

/// Picks what a model directory holds; see the module docs for the order.
fn detect_dir(dir: &Path) -> Result<Detected, CliError> {
    let read_err = |source| CliError::Read {
        path: dir.to_path_buf(),
        source,
    };
    let mut others = Vec::new();
    let mut ggufs = Vec::new();
    let mut torch_indexes = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(read_err)? {
        let entry = entry.map_err(read_err)?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name == INDEX_FILE
            || name.ends_with(".safetensors")
            || name.ends_with(".safetensors.index.json")
        {
            return Ok(Detected::safetensors());
        }
        let weights = [".bin", ".pt", ".pth", ".ckpt", ".npy"];
        if torch::is_index_name(&name) {
            torch_indexes.push(entry.path());
        } else if name.ends_with(".gguf") {
            ggufs.push(entry.path());
        } else if weights.iter().any(|ext| name.ends_with(ext)) {
            others.push(entry.path());
        }
    }
    let file_name = |p: &Path| {
        p.file_name()
            .unwrap_or(p.as_os_str())
            .to_string_lossy()
            .into_owned()
    };
    let found = |kind: Kind, file: PathBuf, evidence: &str| Detected {
        kind,
        evidence: format!("{} has {evidence}", file_name(&file)),
        file: Some(file),
    };

    torch_indexes.sort();
    if let Some(i) = torch_indexes
        .iter()
        .position(|p| file_name(p) == torch::INDEX_FILE)
    {
        let index = torch_indexes.swap_remove(i);
        return Ok(found(Kind::TorchIndex, index, "a PyTorch shard index"));
    }
    match torch_indexes.len() {
        0 => {}
        1 => {
            let index = torch_indexes.swap_remove(0);
            return Ok(found(Kind::TorchIndex, index, "a PyTorch shard index"));
        }
        _ => {
            return Err(CliError::Ambiguous {
                path: dir.to_path_buf(),
                what: "PyTorch shard indexes",
                candidates: torch_indexes,
            });
        }
    }

    // Sniff the other weight files. Unreadable candidates are skipped: the
    // reader's "no checkpoint" error describes the directory better than
    // one file's I/O error.
    others.sort();
    let mut torch_files = Vec::new();
    let mut foreign = None;
    for file in others {
        let Ok(head) = read_head(&file) else { continue };
        let d = sniff(&head, &file);
        match d.kind {
            Kind::Safetensors => {}
            Kind::TorchZip | Kind::Pickle => torch_files.push((file, d)),
            _ => {
                if foreign.is_none() {
                    foreign = Some((file, d));
                }
            }
        }
    }
    if let Some(i) = torch_files
        .iter()
        .position(|(f, _)| file_name(f) == "pytorch_model.bin")
    {
        let (file, d) = torch_files.swap_remove(i);
        return Ok(found(d.kind, file, &d.evidence));
    }

    ggufs.sort();
    if ggufs.len() > 1 {
        return Err(CliError::Ambiguous {
            path: dir.to_path_buf(),
            what: ".gguf files",
            candidates: ggufs,
        });
    }
    for file in ggufs {
        let Ok(head) = read_head(&file) else { continue };
        let d = sniff(&head, &file);
        if d.kind != Kind::Safetensors {
            return Ok(found(d.kind, file, &d.evidence));
        }
    }

    match torch_files.len() {
        0 => {}
        1 => {
            let (file, d) = torch_files.swap_remove(0);
            return Ok(found(d.kind, file, &d.evidence));
        }
        _ => {
            return Err(CliError::Ambiguous {
                path: dir.to_path_buf(),
                what: "PyTorch checkpoints",
                candidates: torch_files.into_iter().map(|(f, _)| f).collect(),
            });
        }
    }
    if let Some((file, d)) = foreign {
        return Ok(found(d.kind, file, &d.evidence));
    }
    Ok(Detected::safetensors())
}

/// Bytes as `` `GGUF` `` or `` `PK\x03\x04` ``.
fn show_magic(bytes: &[u8]) -> String {
    let mut s = String::from("`");
    for &b in bytes {
        if b.is_ascii_graphic() {
            s.push(char::from(b));
        } else {
            let _ = write!(s, "\\x{b:02x}");
        }
    }
    s.push('`');
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kind(head: &[u8], name: &str) -> Kind {
        sniff(head, Path::new(name)).kind
    }

    #[test]
    fn sniffs_magic() {
        assert_eq!(kind(b"GGUF\x03\0\0\0", "m.gguf"), Kind::Gguf);
        assert_eq!(kind(b"PK\x03\x04\x14\0", "m.pt"), Kind::TorchZip);
        assert_eq!(kind(b"\x80\x02\x8a\x0alZ", "m.bin"), Kind::Pickle);
        assert_eq!(kind(b"tjgg\x03\0\0\0", "m.bin"), Kind::LegacyGgml);
        assert_eq!(kind(b"\x93NUMPY\x01\0", "a.npy"), Kind::Numpy);
        assert_eq!(kind(b"{\"a\": 1}", "config.json"), Kind::Json);
        assert_eq!(
            kind(b"{\"a\": 1}", "m.safetensors.index.json"),
            Kind::Safetensors
        );
        // A 640-byte safetensors header starts with 0x80 too.
        assert_eq!(
            kind(b"\x80\x02\0\0\0\0\0\0{\"a\"", "m.safetensors"),
            Kind::Safetensors
        );
        assert_eq!(kind(b"abc", "short"), Kind::Safetensors);
        // Protocol-0 pickles have no magic; a PyTorch name decides.
        assert_eq!(kind(b"cos\nsystem\n(S'ls'", "evil.pt"), Kind::Pickle);
        assert_eq!(
            kind(b"\x80\x02\0\0\0\0\0\0{\"a\"", "m.bin"),
            Kind::Safetensors
        );
        assert_eq!(
            kind(b"{}", "pytorch_model.bin.index.json"),
            Kind::TorchIndex
        );
        assert_eq!(kind(b"", "empty"), Kind::Safetensors);
        assert_eq!(
            sniff(b"PK\x03\x04\x14\0", Path::new("m.pt")).evidence,
            "magic `PK\\x03\\x04`"
        );
    }
}
