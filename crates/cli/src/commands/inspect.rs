//! `weightkit inspect`: what is in a checkpoint, without loading any tensor
//! data.
//!
//! Everything shown comes from headers and indexes (plus the model
//! directory's `config.json`), so inspecting a 100 GB checkpoint costs a few
//! reads, not a pass over the data.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use serde::Serialize;
use serde::ser::{SerializeMap, SerializeSeq, Serializer};
use weightkit_core::{Metadata, Value};

use crate::error::CliError;
use crate::source::{self, Model, Shard, to_u64};
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

The parameter count is the sum of all tensors' element counts (for an \
untied checkpoint this equals transformers' `model.num_parameters()`).";

/// Arguments of `weightkit inspect`.
#[derive(Debug, clap::Args)]
#[command(after_help = "\
Examples:
  weightkit inspect model.safetensors
  weightkit inspect path/to/model-dir
  weightkit inspect model.safetensors.index.json --json | jq .parameter_count")]
pub(crate) struct Args {
    /// A .safetensors file, a *.safetensors.index.json, or a model directory
    #[arg(value_name = "PATH")]
    path: PathBuf,

    /// Print one JSON object (pretty-printed) instead of the human report
    #[arg(long)]
    json: bool,
}

/// Runs `weightkit inspect`.
pub(crate) fn run(args: &Args) -> Result<(), CliError> {
    let model = source::open(&args.path)?;
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

/// Tensor count and bytes of one dtype.
#[derive(Debug, Default, Clone, Copy, Serialize)]
struct DTypeStats {
    count: usize,
    bytes: u64,
}

/// One row of the tensor table.
#[derive(Debug, Serialize)]
struct TensorRow<'a> {
    name: &'a str,
    dtype: &'static str,
    shape: &'a [usize],
    bytes: u64,
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
}

impl<'a> Report<'a> {
    fn new(
        path: &Path,
        model: &'a dyn Model,
        config: Option<ModelConfig>,
    ) -> Result<Self, CliError> {
        let infos = model.tensor_infos();
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
            stats.bytes = stats
                .bytes
                .checked_add(bytes)
                .ok_or(CliError::Overflow("a dtype's data size"))?;
            tensors.push(TensorRow {
                name: &info.name,
                dtype: info.dtype.name(),
                shape: info.shape.dims(),
                bytes,
            });
        }
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
        })
    }

    fn json(&self) -> JsonReport<'_> {
        let sharded = !self.shards.is_empty();
        JsonReport {
            path: &self.path,
            format: self.format_id,
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
            dtypes: &self.dtypes,
            metadata: JsonMetadata(self.metadata),
            tensors: &self.tensors,
        }
    }

    fn write_human(&self, out: &mut impl Write) -> io::Result<()> {
        // Header block: `key  value`, a key's further lines indented.
        let mut header: Vec<(&str, Vec<String>)> = vec![
            ("path", vec![escape(&self.path)]),
            ("format", vec![self.format_label.clone()]),
        ];
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
            let keys: Vec<String> = self.metadata.iter().map(|(k, _)| escape(k)).collect();
            let width = keys.iter().map(|k| k.chars().count()).max().unwrap_or(0);
            for (key, (_, value)) in keys.iter().zip(self.metadata.iter()) {
                writeln!(out, "  {key:<width$} = {}", human_value(value))?;
            }
        }

        writeln!(out)?;
        writeln!(out, "tensors ({}):", thousands(to_u64(self.tensors.len())))?;
        let rows: Vec<[String; 4]> = self
            .tensors
            .iter()
            .map(|t| {
                [
                    escape(t.name),
                    t.dtype.to_owned(),
                    shape_string(t.shape),
                    thousands(t.bytes),
                ]
            })
            .collect();
        let head = ["NAME", "DTYPE", "SHAPE", "BYTES"].map(str::to_owned);
        let mut widths = [0usize; 4];
        for row in rows.iter().chain([&head]) {
            for (w, cell) in widths.iter_mut().zip(row) {
                *w = (*w).max(cell.chars().count());
            }
        }
        let [w0, w1, w2, w3] = widths;
        for [name, dtype, shape, bytes] in [&head].into_iter().chain(&rows) {
            writeln!(
                out,
                "  {name:<w0$}  {dtype:<w1$}  {shape:<w2$}  {bytes:>w3$}"
            )?;
        }
        Ok(())
    }

    /// `BF16  21 tensors  247,424 bytes (241.6 KiB)`, largest first.
    fn dtype_lines(&self) -> Vec<String> {
        if self.dtypes.is_empty() {
            return vec!["none".to_owned()];
        }
        let mut stats: Vec<(&str, DTypeStats)> =
            self.dtypes.iter().map(|(k, v)| (*k, *v)).collect();
        stats.sort_by(|a, b| b.1.bytes.cmp(&a.1.bytes).then(a.0.cmp(b.0)));
        let cells: Vec<[String; 3]> = stats
            .iter()
            .map(|(name, s)| {
                [
                    (*name).to_owned(),
                    plural(s.count, "tensor"),
                    bytes_with_unit(s.bytes),
                ]
            })
            .collect();
        aligned(&cells)
    }

    /// `model-00001-of-00004.safetensors  6 tensors  79,872 bytes (78.0 KiB)`.
    fn shard_lines(&self) -> Vec<String> {
        let cells: Vec<[String; 3]> = self
            .shards
            .iter()
            .map(|s| {
                let name = s.path.file_name().unwrap_or(s.path.as_os_str());
                [
                    escape(&name.to_string_lossy()),
                    plural(s.tensor_count, "tensor"),
                    bytes_with_unit(s.data_bytes),
                ]
            })
            .collect();
        aligned(&cells)
    }
}

/// Three left-aligned columns.
fn aligned(cells: &[[String; 3]]) -> Vec<String> {
    let mut widths = [0usize; 3];
    for row in cells {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let [w0, w1, _] = widths;
    cells
        .iter()
        .map(|[a, b, c]| format!("{a:<w0$}  {b:<w1$}  {c}"))
        .collect()
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

/// Control characters (a hostile file's terminal escapes, newlines that
/// would break the layout) shown escaped.
fn escape(s: &str) -> String {
    if !s.chars().any(char::is_control) {
        return s.to_owned();
    }
    s.chars()
        .map(|c| {
            if c.is_control() {
                c.escape_default().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

/// A metadata value for humans: strings unquoted, long values cut short.
fn human_value(v: &Value) -> String {
    const MAX_CHARS: usize = 160;
    const MAX_ITEMS: usize = 8;
    let s = match v {
        Value::String(s) if s.is_empty() => "\"\"".to_owned(),
        Value::String(s) => escape(s),
        Value::Array(items) if items.len() > MAX_ITEMS => {
            let mut s = String::from("[");
            for i in 0..MAX_ITEMS {
                if i > 0 {
                    s.push_str(", ");
                }
                if let Some(item) = items.get(i) {
                    let _ = write!(s, "{item}");
                }
            }
            let _ = write!(s, ", ... ({} items)]", thousands(to_u64(items.len())));
            escape(&s)
        }
        other => escape(&other.to_string()),
    };
    let total = s.chars().count();
    if total <= MAX_CHARS {
        return s;
    }
    let mut cut: String = s.chars().take(MAX_CHARS).collect();
    let _ = write!(cut, "... ({} chars)", thousands(to_u64(total)));
    cut
}

/// The `--json` object. Field order is output order.
#[derive(Serialize)]
struct JsonReport<'r> {
    path: &'r str,
    format: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    shards: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    declared_total_size: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    config: Option<&'r ModelConfig>,
    tensor_count: usize,
    parameter_count: u64,
    total_bytes: u64,
    dtypes: &'r BTreeMap<&'static str, DTypeStats>,
    metadata: JsonMetadata<'r>,
    tensors: &'r [TensorRow<'r>],
}

/// Metadata as a JSON object in the file's order: strings as strings,
/// numbers as numbers, arrays as arrays.
struct JsonMetadata<'a>(&'a Metadata);

impl Serialize for JsonMetadata<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(self.0.len()))?;
        for (k, v) in self.0.iter() {
            map.serialize_entry(k, &JsonValue(v))?;
        }
        map.end()
    }
}

struct JsonValue<'a>(&'a Value);

impl Serialize for JsonValue<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            Value::U8(v) => s.serialize_u8(*v),
            Value::I8(v) => s.serialize_i8(*v),
            Value::U16(v) => s.serialize_u16(*v),
            Value::I16(v) => s.serialize_i16(*v),
            Value::U32(v) => s.serialize_u32(*v),
            Value::I32(v) => s.serialize_i32(*v),
            Value::U64(v) => s.serialize_u64(*v),
            Value::I64(v) => s.serialize_i64(*v),
            // serde_json writes non-finite floats as null.
            Value::F32(v) => s.serialize_f32(*v),
            Value::F64(v) => s.serialize_f64(*v),
            Value::Bool(v) => s.serialize_bool(*v),
            Value::String(v) => s.serialize_str(v),
            Value::Array(items) => {
                let mut seq = s.serialize_seq(Some(items.len()))?;
                for i in 0..items.len() {
                    if let Some(v) = items.get(i) {
                        seq.serialize_element(&JsonValue(&v))?;
                    }
                }
                seq.end()
            }
            Value::RawString(b) => s.serialize_str(&String::from_utf8_lossy(b)),
            // `Value` is non-exhaustive: a future variant prints as text.
            other => s.collect_str(other),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_values() {
        assert_eq!(human_value(&Value::from("pt")), "pt");
        assert_eq!(human_value(&Value::from("")), "\"\"");
        assert_eq!(
            human_value(&Value::from("a\nb\x1b[31m")),
            "a\\nb\\u{1b}[31m"
        );
        assert_eq!(human_value(&Value::U64(247_424)), "247424");
        let long = Value::Array(weightkit_core::Array::U32((0..10).collect()));
        assert_eq!(
            human_value(&long),
            "[0, 1, 2, 3, 4, 5, 6, 7, ... (10 items)]"
        );
        let big = human_value(&Value::String("x".repeat(1000)));
        assert!(big.ends_with("... (1,000 chars)"), "{big}");
        assert_eq!(shape_string(&[]), "[]");
        assert_eq!(shape_string(&[256, 64]), "[256, 64]");
    }

    #[test]
    fn json_values() {
        let m: Metadata = [
            ("s", Value::from("x")),
            ("n", Value::U64(7)),
            ("neg", Value::I32(-1)),
            ("f", Value::F64(0.5)),
            ("a", Value::Array(weightkit_core::Array::Bool(vec![true]))),
        ]
        .into_iter()
        .collect();
        let text = serde_json::to_string(&JsonMetadata(&m)).unwrap();
        assert_eq!(text, r#"{"s":"x","n":7,"neg":-1,"f":0.5,"a":[true]}"#);
    }
}
