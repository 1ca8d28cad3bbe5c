//! What `convert` and `quantize` share: where the output goes and in which
//! format, the guard that keeps an output from replacing its own input, the
//! progress spinner, and turning `weightkit-io` errors into one line with a
//! hint.
//!
//! Both commands run one `weightkit-io` pipeline (open, plan, stream every
//! tensor through a writer). The pipeline reports nothing until it is done,
//! the progress display starts as a spinner and becomes a bar over the bytes
//! written once the pass announces its totals (`weightkit_io::convert::Progress`).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use weightkit_core::DType;
use weightkit_io::convert::Plan;
use weightkit_io::imatrix::ImatrixError;
use weightkit_io::mixture::MixtureError;
use weightkit_io::{Format, IoError, Model};

use crate::error::CliError;

/// `--to`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum OutFormat {
    /// A GGUF file
    Gguf,
    /// A .safetensors file, or a Hugging Face directory of them
    Safetensors,
    /// A torch.save file (.bin, .pt, .pth), or a directory with
    /// pytorch_model.bin
    Pytorch,
}

impl From<OutFormat> for Format {
    fn from(f: OutFormat) -> Format {
        match f {
            OutFormat::Gguf => Format::Gguf,
            OutFormat::Safetensors => Format::Safetensors,
            OutFormat::Pytorch => Format::PyTorch,
        }
    }
}

/// `--dtype`: the float types a conversion can cast to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum CastDType {
    /// 32-bit float
    F32,
    /// IEEE half precision
    F16,
    /// bfloat16
    Bf16,
}

impl From<CastDType> for DType {
    fn from(d: CastDType) -> DType {
        match d {
            CastDType::F32 => DType::F32,
            CastDType::F16 => DType::F16,
            CastDType::Bf16 => DType::BF16,
        }
    }
}

/// Parses a byte size as `--max-shard-size` takes it: a number with an
/// optional unit, decimal (`KB`, `MB`, `GB`, `TB`, as transformers'
/// `max_shard_size="5GB"`) or binary (`KiB` ... `TiB`), case-insensitive;
/// a bare number is bytes. Fractions are allowed (`1.5GB`).
pub(crate) fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let unit = unit.trim();
    let multiplier: u64 = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        "tb" => 1_000_000_000_000,
        "kib" => 1 << 10,
        "mib" => 1 << 20,
        "gib" => 1 << 30,
        "tib" => 1 << 40,
        _ => {
            return Err(format!(
                "unknown unit `{unit}` (use B, KB, MB, GB, TB, KiB, MiB, GiB or TiB)"
            ));
        }
    };
    let bad = || format!("`{s}` is not a size (e.g. 5GB, 500MB, 2GiB)");
    if number.is_empty() || number.starts_with('.') || number.ends_with('.') {
        return Err(bad());
    }
    let bytes = match number.split_once('.') {
        None => number
            .parse::<u64>()
            .ok()
            .and_then(|n| n.checked_mul(multiplier)),
        Some((whole, frac)) => {
            // Exact decimal arithmetic: whole * m + frac * m / 10^len.
            let w = whole.parse::<u64>().ok();
            let f = frac.parse::<u64>().ok();
            let scale = u32::try_from(frac.len())
                .ok()
                .and_then(|n| 10u64.checked_pow(n));
            match (w, f, scale) {
                (Some(w), Some(f), Some(scale)) => w.checked_mul(multiplier).and_then(|w| {
                    let f = u128::from(f) * u128::from(multiplier) / u128::from(scale);
                    u64::try_from(f).ok().and_then(|f| w.checked_add(f))
                }),
                _ => None,
            }
        }
    };
    match bytes {
        Some(0) => Err("the size must be at least one byte".to_owned()),
        Some(n) => Ok(n),
        None => Err(bad()),
    }
}

/// The output format `OUT`'s name implies: `.gguf`, `.safetensors`,
/// `.bin`/`.pt`/`.pth`, or a directory (an existing one, a path ending in
/// `/`, or a name without extension) for a Hugging Face safetensors
/// directory.
pub(crate) fn format_from_path(out: &Path) -> Result<Format, CliError> {
    let text = out.as_os_str().to_string_lossy();
    if out.is_dir() || text.ends_with(std::path::MAIN_SEPARATOR) || text.ends_with('/') {
        return Ok(Format::Safetensors);
    }
    let ext = out
        .extension()
        .map(|e| e.to_string_lossy().to_ascii_lowercase());
    match ext.as_deref() {
        Some("gguf") => Ok(Format::Gguf),
        Some("safetensors") => Ok(Format::Safetensors),
        Some("bin" | "pt" | "pth") => Ok(Format::PyTorch),
        None => Ok(Format::Safetensors),
        Some(other) => Err(CliError::Usage(format!(
            "cannot tell the output format from the extension `.{other}` of {}; name it \
             .gguf, .safetensors, .bin/.pt/.pth or a directory, or pass --to",
            out.display()
        ))),
    }
}

/// Whether `weightkit-io` writes `out` as a directory for format `to`
/// (its rule, repeated here to guard and report before writing): GGUF is
/// always a file; safetensors is a directory unless named `.safetensors`;
/// PyTorch is a directory unless named `.bin`, `.pt` or `.pth`.
pub(crate) fn is_dir_output(out: &Path, to: Format) -> bool {
    let ext = out.extension().and_then(|e| e.to_str()).unwrap_or("");
    match to {
        Format::Gguf => false,
        Format::Safetensors => ext != "safetensors",
        _ => !matches!(ext, "bin" | "pt" | "pth"),
    }
}

/// Opens the input; the library's message names the path.
pub(crate) fn open_input(path: &Path) -> Result<Model, CliError> {
    weightkit_io::open(path).map_err(|e| match e {
        IoError::Io { path, source } => CliError::Read { path, source },
        e => CliError::Run {
            what: None,
            source: Box::new(e),
            hint: None,
        },
    })
}

/// A `weightkit-io` error with the step it happened in, and a hint where
/// the user can do something about it.
pub(crate) fn io_error(what: String, e: IoError) -> CliError {
    let hint = match &e {
        IoError::Module(inner) => {
            if let Some(m) = inner.downcast_ref::<MixtureError>() {
                match m {
                    MixtureError::NoFallback { .. } => Some(
                        "give such tensors a type that fits with --override \
                         'PATTERN=TYPE' (e.g. --override 'ffn_down=f16')",
                    ),
                    MixtureError::ImatrixRequired { .. } => {
                        Some("pass --imatrix FILE, or choose another mixture")
                    }
                    _ => None,
                }
            } else if let Some(ImatrixError::SizeMismatch { .. }) =
                inner.downcast_ref::<ImatrixError>()
            {
                Some(
                    "the importance matrix was computed for a model with other shapes; \
                     use one made for this model, or leave out --imatrix",
                )
            } else {
                None
            }
        }
        _ => None,
    };
    CliError::Run {
        what: Some(what),
        source: Box::new(e),
        hint,
    }
}

/// Everything the input is read from: the checkpoint files (shards and
/// indexes included) and the files beside them that the pipeline reads
/// (`config.json`, tokenizer files). None of them may be an output.
fn input_files(model: &Model) -> Vec<PathBuf> {
    let mut files = vec![model.path().to_path_buf()];
    let mut indexes = Vec::new();
    let path = model.path();
    if path
        .file_name()
        .is_some_and(|n| n.to_string_lossy().ends_with(".index.json"))
    {
        indexes.push(path.to_path_buf());
    }
    if let Some(dir) = model.dir() {
        for name in [
            "model.safetensors",
            "pytorch_model.bin",
            "config.json",
            "generation_config.json",
            "tokenizer.json",
            "tokenizer_config.json",
            "special_tokens_map.json",
            "tokenizer.model",
        ] {
            files.push(dir.join(name));
        }
        if path.is_dir() {
            indexes.push(dir.join("model.safetensors.index.json"));
            indexes.push(dir.join("pytorch_model.bin.index.json"));
            // A directory holding one GGUF file opens that file.
            if let Ok(entries) = std::fs::read_dir(dir) {
                for entry in entries.flatten() {
                    let p = entry.path();
                    if p.extension().is_some_and(|e| e == "gguf") {
                        files.push(p);
                    }
                }
            }
        }
    }
    for index in indexes {
        let Ok(text) = std::fs::read(&index) else {
            continue;
        };
        let dir = index.parent().unwrap_or(Path::new("."));
        if let Ok(v) = serde_json::from_slice::<serde_json::Value>(&text)
            && let Some(map) = v.get("weight_map").and_then(|m| m.as_object())
        {
            let shards: BTreeSet<&str> = map.values().filter_map(|f| f.as_str()).collect();
            files.extend(shards.into_iter().map(|s| dir.join(s)));
        }
        files.push(index);
    }
    files
}

/// `path` made absolute with symlinks resolved; a path that does not exist
/// yet resolves through its parent.
fn resolve(path: &Path) -> Option<PathBuf> {
    if let Ok(p) = path.canonicalize() {
        return Some(p);
    }
    let name = path.file_name()?;
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    parent.canonicalize().ok().map(|p| p.join(name))
}

/// Whether `a` and `b` are one file (hard links included) or one path.
fn same_file(a: &Path, b: &Path) -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        if let (Ok(ma), Ok(mb)) = (std::fs::metadata(a), std::fs::metadata(b)) {
            return ma.dev() == mb.dev() && ma.ino() == mb.ino();
        }
    }
    matches!((resolve(a), resolve(b)), (Some(x), Some(y)) if x == y)
}

/// Refuses an output that would replace the input or a file it is read
/// from, and a directory output into the input's own directory (it would
/// replace `config.json`, `model.safetensors` ... there).
pub(crate) fn refuse_overwriting_input(
    model: &Model,
    output: &Path,
    dir_output: bool,
) -> Result<(), CliError> {
    let input = model.path();
    let refuse = |what: String| {
        Err(CliError::Usage(format!(
            "refusing to write {}: {what}; choose another output path",
            output.display()
        )))
    };
    if same_file(output, input) {
        return refuse(format!("it is the input {}", input.display()));
    }
    if dir_output {
        if let Some(dir) = model.dir()
            && same_file(output, dir)
        {
            return refuse(format!(
                "it is the directory of the input {}, whose files it would replace",
                input.display()
            ));
        }
        return Ok(());
    }
    for file in input_files(model) {
        if same_file(output, &file) {
            return refuse(format!(
                "{} is part of the input {}",
                file.display(),
                input.display()
            ));
        }
    }
    Ok(())
}

/// The bytes the plan reads from the source (generated tensors excluded).
pub(crate) fn planned_bytes_in(model: &Model, plan: &Plan) -> u64 {
    let infos = model.source().tensor_infos();
    plan.tensors
        .iter()
        .filter(|t| t.inline.is_none())
        .filter_map(|t| infos.get(t.source))
        .filter_map(|info| info.byte_len().ok())
        .map(|n| n as u64)
        .sum()
}

/// The process's peak resident memory so far (Linux `VmHWM`); `None`
/// where the system does not say.
pub(crate) fn peak_rss() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line
        .trim_start_matches("VmHWM:")
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    kib.checked_mul(1024)
}

/// A spinner on stderr with the elapsed time and what is being done;
/// hidden when stderr is not a terminal (`ProgressDrawTarget::stderr`), and
/// cleared when finished or dropped (an error then prints on a clean line).
#[derive(Debug)]
pub(crate) struct Spinner(ProgressBar, std::sync::atomic::AtomicUsize);

impl Spinner {
    pub(crate) fn start(message: String) -> Spinner {
        let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
        let style = ProgressStyle::with_template("{spinner:.green} [{elapsed_precise}] {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_spinner());
        bar.set_style(style);
        bar.set_message(message);
        if !bar.is_hidden() {
            bar.enable_steady_tick(Duration::from_millis(100));
        }
        Spinner(bar, std::sync::atomic::AtomicUsize::new(0))
    }
}

/// The spinner becomes a bar over the bytes written once the pass announces
/// its totals, with the tensor count, the current tensor, rate and ETA.
impl weightkit_io::convert::Progress for Spinner {
    fn start(&self, tensors: usize, _bytes_in: u64, bytes_out: u64) {
        let style = ProgressStyle::with_template(
            "{spinner:.green} [{elapsed_precise}] [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} ETA {eta} {msg}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ");
        self.0.set_style(style);
        self.0.set_length(bytes_out);
        self.0.set_message(format!("0/{tensors} tensors"));
        self.1.store(tensors, std::sync::atomic::Ordering::Relaxed);
    }

    fn tensor_done(
        &self,
        index: usize,
        name: &str,
        dtype: weightkit_core::DType,
        _bytes_in: u64,
        bytes_out: u64,
    ) {
        let total = self.1.load(std::sync::atomic::Ordering::Relaxed);
        self.0.inc(bytes_out);
        self.0
            .set_message(format!("{}/{total} tensors, {name} ({dtype})", index + 1));
    }
}

impl Drop for Spinner {
    fn drop(&mut self) {
        self.0.finish_and_clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("5GB"), Ok(5_000_000_000));
        assert_eq!(parse_size("5gb"), Ok(5_000_000_000));
        assert_eq!(parse_size("2GiB"), Ok(2 << 30));
        assert_eq!(parse_size("500 MB"), Ok(500_000_000));
        assert_eq!(parse_size("1.5GB"), Ok(1_500_000_000));
        assert_eq!(parse_size("0.5KiB"), Ok(512));
        assert_eq!(parse_size("100000"), Ok(100_000));
        assert_eq!(parse_size("100KB"), Ok(100_000));
        assert!(parse_size("0").is_err());
        assert!(parse_size("GB").is_err());
        assert!(parse_size("5XB").is_err());
        assert!(parse_size("1.GB").is_err());
        assert!(parse_size(".5GB").is_err());
        assert!(parse_size("99999999999TB").is_err());
    }

    #[test]
    fn formats_from_names() {
        let f = |p: &str| format_from_path(Path::new(p)).ok();
        assert_eq!(f("x.gguf"), Some(Format::Gguf));
        assert_eq!(f("x.GGUF"), Some(Format::Gguf));
        assert_eq!(f("x.safetensors"), Some(Format::Safetensors));
        assert_eq!(f("x.bin"), Some(Format::PyTorch));
        assert_eq!(f("x.pt"), Some(Format::PyTorch));
        assert_eq!(f("x.pth"), Some(Format::PyTorch));
        assert_eq!(f("some/dir"), Some(Format::Safetensors));
        assert_eq!(f("some/model-v1.5/"), Some(Format::Safetensors));
        assert_eq!(f("x.onnx"), None);
        assert!(is_dir_output(Path::new("out"), Format::Safetensors));
        assert!(!is_dir_output(
            Path::new("out.safetensors"),
            Format::Safetensors
        ));
        assert!(!is_dir_output(Path::new("out"), Format::Gguf));
        assert!(is_dir_output(Path::new("out"), Format::PyTorch));
        assert!(!is_dir_output(Path::new("out.pt"), Format::PyTorch));
    }
}
