//! `weightkit inspect`: what is in a checkpoint, without loading any tensor
//! data.
//!
//! Everything shown comes from headers and indexes (plus the model
//! directory's `config.json`), so inspecting a 100 GB checkpoint costs a few
//! reads, not a pass over the data.
//!
//! One report serves every format; GGUF adds a few header lines, typed
//! metadata and two tensor columns ([`gguf`]); PyTorch adds storage, view
//! and skipped-entry lines and two tensor columns ([`torch`]).

mod gguf;
mod torch;
mod value;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use serde::Serialize;
use weightkit_core::Metadata;
use weightkit_gguf::GgufTensorInfo;
use weightkit_pickle::StateDictKey;

use self::gguf::{GgufSummary, JsonFileType, ne_string};
use self::torch::{TorchColumns, TorchSummary};
use self::value::{JsonMetadata, JsonMetadataTypes, escape, human_value, type_name};
use crate::error::CliError;
use crate::source::{self, Model, OpenOptions, Shard, to_u64};
use crate::units::{bytes_with_unit, thousands};

/// The long `--help` text.
pub(crate) const LONG_ABOUT: &str = "\
Show what a checkpoint holds: its format, tensor and parameter counts, total \
data size, dtype breakdown, metadata, and a table of every tensor (name, \
dtype, shape, bytes).

Only headers and indexes are read, never the tensor data, so this is fast on \
checkpoints of any size. For a model directory, `model_type`, `architectures` \
and `dtype` are shown from its config.json; for a sharded checkpoint, each \
shard and the index's declared `total_size`.

GGUF files are recognised by their `GGUF` magic, whatever their name; a \
directory with no safetensors files and exactly one .gguf file is read as \
that file. For GGUF the report adds the version, `general.architecture`, \
`general.name`, alignment, data offset, bits per weight (data bytes * 8 / \
parameters, overall and per ggml type), `general.file_type` with its \
llama.cpp name (15 = Q4_K_M) and `general.quantization_version`. Metadata is \
listed with GGUF types as llama.cpp prints them (`u32`, `arr[str,32000]`), \
long arrays and strings shortened. Tensor shapes are row-major, outermost \
first (`[2, 5, 64]`), as everywhere in weightkit; the `ne=[64, 5, 2]` column \
is GGUF's own order, innermost first.

The parameter count is the sum of all tensors' element counts (for an \
untied checkpoint this equals transformers' `model.num_parameters()`).

--json prints everything, every metadata array in full. For GGUF it adds \
`version`, `alignment`, `data_offset`, `bits_per_weight`, `file_type` \
({\"id\", \"name\"}), `metadata_types` (each key's GGUF type), and per tensor \
`ggml_type`, `ggml_type_id`, `ne` and `offset` (relative to the data \
section). Integers are exact (u64 included); f32 values are written in their \
shortest f32 form (0.1, not 0.10000000149011612); NaN and infinities are \
written as null; strings that are not valid UTF-8 have their bad bytes \
replaced by U+FFFD.

PyTorch checkpoints (.bin, .pt, .pth) are recognised by content: the zip \
format torch.save writes since 1.6 (any archive prefix) and the legacy \
format before it. They are read without executing any pickled code: only \
the globals torch.load(weights_only=True) allows may appear, anything else \
(os.system ...) is an error. A directory with no safetensors files is read \
through its pytorch_model.bin.index.json (all shards as one model, every \
mapped tensor checked to be in its shard) or its pytorch_model.bin. The \
report adds the container and archive prefix, the number of storages and \
their bytes (torch writes a storage once however many tensors view it), how \
many tensors are views (non-contiguous, or at an offset in their storage) \
or share a storage, and the state-dict entries that are not tensors; the \
tensor table adds each tensor's storage (`shard:key` when sharded) and marks \
views with their offset and strides. --json adds `container`, `prefix`, \
`storage_count`, `storage_bytes`, `skipped`, and per tensor `storage`, \
`storage_offset`, `stride`, `contiguous` (and `shard` when sharded). A \
checkpoint whose tensors are not at its root (`{\"model\": {...}, \
\"epoch\": 3}`) is read from the first of `state_dict`, \
`model_state_dict`, `model`, `module`, `net` that holds tensors; \
--state-dict picks another.";

/// Arguments of `weightkit inspect`.
#[derive(Debug, clap::Args)]
#[command(after_help = "\
Examples:
  weightkit inspect model.safetensors
  weightkit inspect path/to/model-dir
  weightkit inspect model.safetensors.index.json --json | jq .parameter_count
  weightkit inspect model-Q4_K_M.gguf
  weightkit inspect model.gguf --json | jq '.metadata[\"llama.context_length\"]'
  weightkit inspect pytorch_model.bin
  weightkit inspect checkpoint.pt --state-dict model.ema")]
pub(crate) struct Args {
    /// A .safetensors file, a *.safetensors.index.json, a GGUF file, a
    /// PyTorch checkpoint (.bin, .pt, .pth, a pytorch_model.bin.index.json),
    /// or a model directory
    #[arg(value_name = "PATH")]
    path: PathBuf,

    /// Print one JSON object (pretty-printed) instead of the human report
    #[arg(long)]
    json: bool,

    /// Accept GGUF metadata arrays of arrays (gguf-py can write them;
    /// llama.cpp rejects such files, and so does inspect by default)
    #[arg(long)]
    allow_nested_arrays: bool,

    /// PyTorch only: the state dict's dotted key path from the checkpoint's
    /// root (`model.ema`), or `root` for the root object itself [default:
    /// the root if it holds tensors, else the first of `state_dict`,
    /// `model_state_dict`, `model`, `module`, `net` that does]
    #[arg(long, value_name = "KEY")]
    state_dict: Option<String>,
}

impl Args {
    fn state_dict_key(&self) -> StateDictKey {
        match self.state_dict.as_deref() {
            None => StateDictKey::Auto,
            Some("root") => StateDictKey::Root,
            Some(path) => StateDictKey::Path(path.to_owned()),
        }
    }
}

/// Runs `weightkit inspect`.
pub(crate) fn run(args: &Args) -> Result<(), CliError> {
    let opts = OpenOptions {
        allow_nested_arrays: args.allow_nested_arrays,
        state_dict: args.state_dict_key(),
    };
    let model = source::open(&args.path, &opts)?;
    let config = ModelConfig::find(&args.path);
    let report = Report::new(&args.path, &*model, config)?;
    let mut out = io::BufWriter::new(io::stdout().lock());
    if args.json {
        serde_json::to_writer_pretty(&mut out, &report.json()).map_err(io::Error::from)?;
        writeln!(out)?;
    } else {
        report.write_human(&mut out)?;
    }
    out.flush()?;
    Ok(())
}

/// Tensor count, element count and bytes of one dtype.
#[derive(Debug, Default, Clone, Copy, Serialize)]
struct DTypeStats {
    count: usize,
    parameters: u64,
    bytes: u64,
    /// Set for GGUF, where it tells quantization types apart.
    #[serde(skip_serializing_if = "Option::is_none")]
    bits_per_weight: Option<f64>,
}

/// One row of the tensor table.
#[derive(Debug, Serialize)]
struct TensorRow<'a> {
    name: &'a str,
    dtype: &'static str,
    shape: &'a [usize],
    bytes: u64,
    /// GGUF only, from here on.
    #[serde(skip_serializing_if = "Option::is_none")]
    ggml_type: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    ggml_type_id: Option<u32>,
    /// Dimensions innermost first.
    #[serde(skip_serializing_if = "Option::is_none")]
    ne: Option<&'a [u64]>,
    /// Relative to the data section.
    #[serde(skip_serializing_if = "Option::is_none")]
    offset: Option<u64>,
    /// PyTorch only, from here on: the shard's file name (sharded only).
    #[serde(skip_serializing_if = "Option::is_none")]
    shard: Option<String>,
    /// The storage key (`data/<key>` in a zip archive).
    #[serde(skip_serializing_if = "Option::is_none")]
    storage: Option<&'a str>,
    /// In elements of the tensor's dtype.
    #[serde(skip_serializing_if = "Option::is_none")]
    storage_offset: Option<u64>,
    /// In elements, outermost first.
    #[serde(skip_serializing_if = "Option::is_none")]
    stride: Option<&'a [usize]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    contiguous: Option<bool>,
    /// Human output only: the VIEW and STORAGE cells.
    #[serde(skip)]
    view_cell: String,
    #[serde(skip)]
    storage_cell: String,
}

/// What `config.json` says about the model, where the directory has one.
#[derive(Debug, Default, Serialize)]
struct ModelConfig {
    #[serde(skip_serializing_if = "Option::is_none")]
    model_type: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    architectures: Vec<String>,
    /// `dtype` (transformers 5) or `torch_dtype` (before).
    #[serde(skip_serializing_if = "Option::is_none")]
    dtype: Option<String>,
}

/// Larger "config.json" files are not model configs.
const MAX_CONFIG_SIZE: u64 = 16 << 20;

impl ModelConfig {
    /// Reads `config.json` beside `path` (in it, for a directory). A missing
    /// file is `None`; an unreadable one is a warning on stderr, not an
    /// error: the weights are still worth inspecting.
    fn find(path: &Path) -> Option<ModelConfig> {
        let dir = if path.is_dir() {
            path
        } else {
            match path.parent() {
                Some(p) if !p.as_os_str().is_empty() => p,
                _ => Path::new("."),
            }
        };
        let file = dir.join("config.json");
        if !file.is_file() {
            return None;
        }
        match Self::read(&file) {
            Ok(c) => Some(c),
            Err(message) => {
                let _ = writeln!(
                    io::stderr().lock(),
                    "warning: ignoring {}: {message}",
                    file.display()
                );
                None
            }
        }
    }

    fn read(file: &Path) -> Result<ModelConfig, String> {
        let len = std::fs::metadata(file).map_err(|e| e.to_string())?.len();
        if len > MAX_CONFIG_SIZE {
            return Err(format!("{len} bytes is too large for a model config"));
        }
        let text = std::fs::read(file).map_err(|e| e.to_string())?;
        let json: serde_json::Value =
            serde_json::from_slice(&text).map_err(|e| format!("invalid JSON: {e}"))?;
        let obj = json.as_object().ok_or("not a JSON object")?;
        let string = |key: &str| obj.get(key).and_then(|v| v.as_str()).map(str::to_owned);
        let architectures = obj
            .get("architectures")
            .and_then(|v| v.as_array())
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        Ok(ModelConfig {
            model_type: string("model_type"),
            architectures,
            dtype: string("dtype").or_else(|| string("torch_dtype")),
        })
    }

    fn is_empty(&self) -> bool {
        self.model_type.is_none() && self.architectures.is_empty() && self.dtype.is_none()
    }
}

/// Everything `inspect` prints, computed once for both output forms.
struct Report<'a> {
    path: String,
    format_id: &'static str,
    format_label: String,
    shards: Vec<Shard>,
    declared_total_size: Option<u64>,
    config: Option<ModelConfig>,
    parameter_count: u64,
    total_bytes: u64,
    /// By dtype name.
    dtypes: BTreeMap<&'static str, DTypeStats>,
    metadata: &'a Metadata,
    tensors: Vec<TensorRow<'a>>,
    gguf: Option<GgufSummary<'a>>,
    torch: Option<TorchSummary<'a>>,
}

impl<'a> Report<'a> {
    fn new(
        path: &Path,
        model: &'a dyn Model,
        config: Option<ModelConfig>,
    ) -> Result<Self, CliError> {
        let infos = model.tensor_infos();
        let gguf = model.gguf();
        let torch = model.torch();
        let mut parameter_count = 0u64;
        let mut total_bytes = 0u64;
        let mut dtypes: BTreeMap<&'static str, DTypeStats> = BTreeMap::new();
        let mut tensors = Vec::with_capacity(infos.len());
        for info in infos {
            let tensor_err = |e: weightkit_core::CoreError| CliError::Tensor {
                name: info.name.clone(),
                source: Box::new(e),
            };
            let elems = to_u64(info.elem_count().map_err(tensor_err)?);
            let bytes = to_u64(info.byte_len().map_err(tensor_err)?);
            parameter_count = parameter_count
                .checked_add(elems)
                .ok_or(CliError::Overflow("the parameter count"))?;
            total_bytes = total_bytes
                .checked_add(bytes)
                .ok_or(CliError::Overflow("the total data size"))?;
            let stats = dtypes.entry(info.dtype.name()).or_default();
            stats.count += 1;
            // Bounded by the total, checked above.
            stats.parameters += elems;
            stats.bytes += bytes;
            let ggml: Option<&GgufTensorInfo> = gguf.and_then(|g| g.ggml_info(tensors.len()));
            let pt = torch.and_then(|t| TorchColumns::new(t, tensors.len()));
            let (shard, view_cell, storage_cell) = match &pt {
                Some(c) => (c.shard.clone(), c.view_cell.clone(), c.storage_cell.clone()),
                None => (None, String::new(), String::new()),
            };
            tensors.push(TensorRow {
                name: &info.name,
                dtype: info.dtype.name(),
                shape: info.shape.dims(),
                bytes,
                ggml_type: ggml.map(|_| info.dtype.ggml_name().unwrap_or(info.dtype.name())),
                ggml_type_id: ggml.map(|g| g.type_id),
                ne: ggml.map(|g| g.ne.as_slice()),
                offset: ggml.map(|g| g.offset),
                shard,
                storage: pt.as_ref().map(|c| c.storage),
                storage_offset: pt.as_ref().map(|c| c.storage_offset),
                stride: pt.as_ref().map(|c| c.stride),
                contiguous: pt.as_ref().map(|c| c.contiguous),
                view_cell,
                storage_cell,
            });
        }
        if gguf.is_some() {
            for stats in dtypes.values_mut() {
                stats.bits_per_weight = bits_per_weight(stats.bytes, stats.parameters);
            }
        }
        // A directory read as one file in it reports that file.
        let path = model.file_path().unwrap_or(path);
        Ok(Report {
            path: path.display().to_string(),
            format_id: model.format_id(),
            format_label: model.format_label(),
            shards: model.shards(),
            declared_total_size: model.declared_total_size(),
            config: config.filter(|c| !c.is_empty()),
            parameter_count,
            total_bytes,
            dtypes,
            metadata: model.metadata(),
            tensors,
            gguf: gguf.map(GgufSummary::new),
            torch: torch.map(TorchSummary::new),
        })
    }

    /// Overall bits per weight, for GGUF.
    fn bits_per_weight(&self) -> Option<f64> {
        self.gguf.as_ref()?;
        bits_per_weight(self.total_bytes, self.parameter_count)
    }

    fn json(&self) -> JsonReport<'_> {
        let sharded = !self.shards.is_empty();
        let g = self.gguf.as_ref();
        let t = self.torch.as_ref();
        JsonReport {
            path: &self.path,
            format: self.format_id,
            container: t.map(|t| t.container),
            prefix: t.and_then(|t| t.prefix),
            storage_count: t.map(|t| t.storage_count),
            storage_bytes: t.map(|t| t.storage_bytes),
            skipped: t.map(|t| t.skipped.as_slice()),
            version: g.map(|g| g.version),
            alignment: g.map(|g| g.alignment),
            data_offset: g.map(|g| g.data_offset),
            shards: sharded.then(|| {
                self.shards
                    .iter()
                    .map(|s| s.path.display().to_string())
                    .collect()
            }),
            declared_total_size: self.declared_total_size,
            config: self.config.as_ref(),
            tensor_count: self.tensors.len(),
            parameter_count: self.parameter_count,
            total_bytes: self.total_bytes,
            bits_per_weight: self.bits_per_weight(),
            file_type: g.and_then(GgufSummary::json_file_type),
            dtypes: &self.dtypes,
            metadata: JsonMetadata(self.metadata),
            metadata_types: g.map(|_| JsonMetadataTypes(self.metadata)),
            tensors: &self.tensors,
        }
    }

    fn write_human(&self, out: &mut impl Write) -> io::Result<()> {
        // Header block: `key  value`, a key's further lines indented.
        let mut header: Vec<(&str, Vec<String>)> = vec![
            ("path", vec![escape(&self.path)]),
            ("format", vec![self.format_label.clone()]),
        ];
        if let Some(g) = &self.gguf {
            header.extend(g.head_lines().into_iter().map(|(k, v)| (k, vec![v])));
        }
        if let Some(c) = &self.config {
            if let Some(t) = &c.model_type {
                header.push(("model type", vec![escape(t)]));
            }
            if !c.architectures.is_empty() {
                header.push(("architectures", vec![escape(&c.architectures.join(", "))]));
            }
            if let Some(d) = &c.dtype {
                header.push(("config dtype", vec![escape(d)]));
            }
        }
        header.push(("tensors", vec![thousands(to_u64(self.tensors.len()))]));
        header.push(("parameters", vec![thousands(self.parameter_count)]));
        header.push(("data size", vec![bytes_with_unit(self.total_bytes)]));
        if let Some(g) = &self.gguf {
            let bpw = self
                .bits_per_weight()
                .map_or_else(|| "n/a (no parameters)".to_owned(), |b| format!("{b:.2}"));
            header.push(("bits per weight", vec![bpw]));
            header.extend(g.tail_lines().into_iter().map(|(k, v)| (k, vec![v])));
        }
        if let Some(t) = &self.torch {
            header.extend(t.lines().into_iter().map(|(k, v)| (k, vec![v])));
        }
        if !self.shards.is_empty() {
            let line = match self.declared_total_size {
                Some(d) if d == self.total_bytes => {
                    format!("{} bytes, matches the data size", thousands(d))
                }
                Some(d) => format!(
                    "{} bytes, does NOT match the data size ({} bytes)",
                    thousands(d),
                    thousands(self.total_bytes)
                ),
                None => "not declared".to_owned(),
            };
            header.push(("index total_size", vec![line]));
        }
        header.push(("dtypes", self.dtype_lines()));
        if !self.shards.is_empty() {
            header.push(("shards", self.shard_lines()));
        }

        let key_width = header.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
        for (key, lines) in &header {
            for (i, line) in lines.iter().enumerate() {
                let key = if i == 0 { *key } else { "" };
                writeln!(out, "{key:<key_width$}  {line}")?;
            }
        }

        writeln!(out)?;
        if self.metadata.is_empty() {
            writeln!(out, "metadata: none")?;
        } else {
            writeln!(out, "metadata ({}):", self.metadata.len())?;
            let rows: Vec<Vec<String>> = self
                .metadata
                .iter()
                .map(|(k, v)| {
                    let mut row = vec![escape(k)];
                    // GGUF values are typed: show the type as llama.cpp does.
                    if self.gguf.is_some() {
                        row.push(type_name(v));
                    }
                    row.push(format!("= {}", human_value(v)));
                    row
                })
                .collect();
            write_table(out, &rows, &[])?;
        }

        writeln!(out)?;
        if self.tensors.is_empty() {
            return writeln!(out, "tensors: none");
        }
        writeln!(out, "tensors ({}):", thousands(to_u64(self.tensors.len())))?;
        let gguf = self.gguf.is_some();
        let torch = self.torch.is_some();
        let head: &[&str] = if gguf {
            &["NAME", "TYPE", "SHAPE", "BYTES", "GGUF NE"]
        } else if torch {
            &["NAME", "DTYPE", "SHAPE", "BYTES", "STORAGE", "VIEW"]
        } else {
            &["NAME", "DTYPE", "SHAPE", "BYTES"]
        };
        let mut rows: Vec<Vec<String>> = vec![head.iter().map(|h| (*h).to_owned()).collect()];
        rows.extend(self.tensors.iter().map(|t| {
            let mut row = vec![
                escape(t.name),
                t.ggml_type.unwrap_or(t.dtype).to_owned(),
                shape_string(t.shape),
                thousands(t.bytes),
            ];
            if gguf {
                row.push(t.ne.map(ne_string).unwrap_or_default());
            }
            if torch {
                row.push(t.storage_cell.clone());
                row.push(t.view_cell.clone());
            }
            row
        }));
        write_table(out, &rows, &[3])
    }

    /// `BF16  21 tensors  247,424 bytes (241.6 KiB)`, largest first.
    fn dtype_lines(&self) -> Vec<String> {
        if self.dtypes.is_empty() {
            return vec!["none".to_owned()];
        }
        let mut stats: Vec<(&str, DTypeStats)> =
            self.dtypes.iter().map(|(k, v)| (*k, *v)).collect();
        stats.sort_by(|a, b| b.1.bytes.cmp(&a.1.bytes).then(a.0.cmp(b.0)));
        let cells: Vec<Vec<String>> = stats
            .iter()
            .map(|(name, s)| {
                let mut row = vec![
                    (*name).to_owned(),
                    plural(s.count, "tensor"),
                    bytes_with_unit(s.bytes),
                ];
                if let Some(b) = s.bits_per_weight {
                    row.push(format!("{b:.2} bpw"));
                }
                row
            })
            .collect();
        aligned(&cells)
    }

    /// `model-00001-of-00004.safetensors  6 tensors  79,872 bytes (78.0 KiB)`.
    fn shard_lines(&self) -> Vec<String> {
        let cells: Vec<Vec<String>> = self
            .shards
            .iter()
            .map(|s| {
                let name = s.path.file_name().unwrap_or(s.path.as_os_str());
                vec![
                    escape(&name.to_string_lossy()),
                    plural(s.tensor_count, "tensor"),
                    bytes_with_unit(s.data_bytes),
                ]
            })
            .collect();
        aligned(&cells)
    }
}

/// Left-aligned columns, the last one unpadded.
fn aligned(rows: &[Vec<String>]) -> Vec<String> {
    let widths = column_widths(rows);
    rows.iter()
        .map(|row| {
            let mut line = String::new();
            for (i, (cell, w)) in row.iter().zip(&widths).enumerate() {
                if i + 1 == row.len() {
                    line.push_str(cell);
                } else {
                    let _ = write!(line, "{cell:<w$}  ");
                }
            }
            line
        })
        .collect()
}

/// Each column's width in characters.
fn column_widths(rows: &[Vec<String>]) -> Vec<usize> {
    let mut widths: Vec<usize> = Vec::new();
    for row in rows {
        if widths.len() < row.len() {
            widths.resize(row.len(), 0);
        }
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    widths
}

/// Rows indented by two spaces, columns aligned, those in `right`
/// right-aligned; no trailing spaces.
fn write_table(out: &mut impl Write, rows: &[Vec<String>], right: &[usize]) -> io::Result<()> {
    let widths = column_widths(rows);
    for row in rows {
        let mut line = String::from(" ");
        for (i, (cell, &w)) in row.iter().zip(&widths).enumerate() {
            line.push(' ');
            if right.contains(&i) {
                let _ = write!(line, "{cell:>w$}");
            } else if i + 1 == row.len() {
                line.push_str(cell);
            } else {
                let _ = write!(line, "{cell:<w$}");
            }
            if i + 1 < row.len() {
                line.push(' ');
            }
        }
        // An empty last cell would leave the padding behind.
        if row.last().is_some_and(String::is_empty) {
            line.truncate(line.trim_end().len());
        }
        writeln!(out, "{line}")?;
    }
    Ok(())
}

/// `bytes * 8 / parameters`; `None` without parameters.
// Precision loss is irrelevant at two decimals.
#[allow(clippy::cast_precision_loss)]
fn bits_per_weight(bytes: u64, parameters: u64) -> Option<f64> {
    (parameters > 0).then(|| bytes as f64 * 8.0 / parameters as f64)
}

fn plural(n: usize, what: &str) -> String {
    let s = if n == 1 { "" } else { "s" };
    format!("{} {what}{s}", thousands(to_u64(n)))
}

/// `[256, 64]`; a scalar is `[]`.
fn shape_string(dims: &[usize]) -> String {
    let mut s = String::from("[");
    for (i, d) in dims.iter().enumerate() {
        if i > 0 {
            s.push_str(", ");
        }
        let _ = write!(s, "{d}");
    }
    s.push(']');
    s
}

/// The `--json` object. Field order is output order.
#[derive(Serialize)]
struct JsonReport<'r> {
    path: &'r str,
    format: &'static str,
    /// PyTorch: `zip`, `legacy` or `mixed`.
    #[serde(skip_serializing_if = "Option::is_none")]
    container: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    prefix: Option<&'r str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    storage_count: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    storage_bytes: Option<u64>,
    /// PyTorch: state-dict entries that are not tensors.
    #[serde(skip_serializing_if = "Option::is_none")]
    skipped: Option<&'r [&'r str]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    version: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    alignment: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    data_offset: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    shards: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    declared_total_size: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    config: Option<&'r ModelConfig>,
    tensor_count: usize,
    parameter_count: u64,
    total_bytes: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    bits_per_weight: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    file_type: Option<JsonFileType>,
    dtypes: &'r BTreeMap<&'static str, DTypeStats>,
    metadata: JsonMetadata<'r>,
    #[serde(skip_serializing_if = "Option::is_none")]
    metadata_types: Option<JsonMetadataTypes<'r>>,
    tensors: &'r [TensorRow<'r>],
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formatting() {
        assert_eq!(shape_string(&[]), "[]");
        assert_eq!(shape_string(&[256, 64]), "[256, 64]");
        assert_eq!(bits_per_weight(1632, 1536), Some(8.5));
        assert_eq!(bits_per_weight(0, 0), None);
        let rows = vec![
            vec!["a".to_owned(), "bb".to_owned(), "c".to_owned()],
            vec!["aaa".to_owned(), "b".to_owned(), "12".to_owned()],
        ];
        assert_eq!(aligned(&rows), ["a    bb  c", "aaa  b   12"]);
        let mut out = Vec::new();
        write_table(&mut out, &rows, &[2]).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "  a    bb   c\n  aaa  b   12\n"
        );
    }
}
