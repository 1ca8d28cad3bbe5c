//! Opening an input: detect its format by magic bytes, open it with that
//! format's reader, and hand back a format-independent [`Model`].
//!
//! Adding a format is one arm in [`open`] plus an `impl Model` for its
//! reader; detection already recognises the formats later builds will read,
//! so that until then they are named in a clear "unsupported format" error
//! instead of failing as a malformed safetensors file.
//!
//! GGUF is recognised by its `GGUF` magic whatever the file is called. A
//! directory stays a safetensors checkpoint unless it holds no safetensors
//! at all and exactly one `.gguf` file, which is then opened instead.

use std::fmt::Write as _;
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use weightkit_core::{Metadata, TensorInfo, TensorSource};
use weightkit_gguf::{GgufFile, ReadOptions};
use weightkit_safetensors::{Checkpoint, INDEX_FILE};

use crate::error::CliError;

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
}

/// How to open inputs: the format-specific switches commands expose.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct OpenOptions {
    /// Accept GGUF metadata arrays of arrays (llama.cpp rejects them).
    pub(crate) allow_nested_arrays: bool,
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
        Kind::LegacyGgml | Kind::TorchZip | Kind::Pickle | Kind::Numpy | Kind::Json => {
            Err(CliError::Unsupported {
                path: path.to_path_buf(),
                format: detected.kind.name(),
                evidence: detected.evidence,
            })
        }
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
    } else if head.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{')
        && !path.to_string_lossy().ends_with(".index.json")
    {
        Detected {
            kind: Kind::Json,
            evidence: "starts with `{` but is not a `*.safetensors.index.json`".to_owned(),
            file: None,
        }
    } else {
        Detected::safetensors()
    }
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

/// A model directory is safetensors if it holds any safetensors file or
/// index. Otherwise one `.gguf` file with the GGUF magic is opened in its
/// place (several are an error: which one is meant?), and failing that the
/// first weight file of another format decides.
fn detect_dir(dir: &Path) -> Result<Detected, CliError> {
    let read_err = |source| CliError::Read {
        path: dir.to_path_buf(),
        source,
    };
    let mut others = Vec::new();
    let mut ggufs = Vec::new();
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
        if name.ends_with(".gguf") {
            ggufs.push(entry.path());
        } else if weights.iter().any(|ext| name.ends_with(ext)) {
            others.push(entry.path());
        }
    }
    ggufs.sort();
    if ggufs.len() > 1 {
        return Err(CliError::Ambiguous {
            path: dir.to_path_buf(),
            what: ".gguf files",
            candidates: ggufs,
        });
    }
    others.sort();
    for file in ggufs.into_iter().chain(others) {
        // Unreadable candidates are skipped: the reader's "no checkpoint"
        // error describes the directory better than one file's I/O error.
        let Ok(head) = read_head(&file) else { continue };
        let d = sniff(&head, &file);
        if d.kind != Kind::Safetensors {
            let name = file
                .file_name()
                .unwrap_or(file.as_os_str())
                .to_string_lossy();
            return Ok(Detected {
                kind: d.kind,
                evidence: format!("{name} has {}", d.evidence),
                file: Some(file),
            });
        }
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
        assert_eq!(kind(b"", "empty"), Kind::Safetensors);
        assert_eq!(
            sniff(b"PK\x03\x04\x14\0", Path::new("m.pt")).evidence,
            "magic `PK\\x03\\x04`"
        );
    }
}
