//! The CLI's error type and the one-line error report.
//!
//! Library errors keep their own `Display` and `source()` chain; the CLI adds
//! the context the libraries cannot know (which path, which format it was
//! read as) and prints the whole chain on one line.

use std::error::Error;
use std::fmt;
use std::io;
use std::path::PathBuf;

/// A boxed library error.
pub(crate) type BoxError = Box<dyn Error + Send + Sync + 'static>;

/// Everything a command can fail with.
#[derive(Debug)]
pub(crate) enum CliError {
    /// The input path could not be read at all (missing, permissions ...).
    Read { path: PathBuf, source: io::Error },
    /// The input is in a format this build does not read.
    Unsupported {
        path: PathBuf,
        /// What was detected, for example `GGUF`.
        format: &'static str,
        /// Why: the magic bytes or the file that gave it away.
        evidence: String,
    },
    /// The format's reader rejected the input.
    Open {
        path: PathBuf,
        format: &'static str,
        source: BoxError,
        /// What the user can do about it, printed after the whole chain.
        hint: Option<&'static str>,
    },
    /// A directory holding several candidates, none of them preferred.
    Ambiguous {
        path: PathBuf,
        /// What there are several of (`.gguf files`).
        what: &'static str,
        candidates: Vec<PathBuf>,
    },
    /// A format-specific option given for an input of another format.
    NotApplicable {
        path: PathBuf,
        /// The option (`--state-dict`).
        flag: &'static str,
        /// What it applies to (`PyTorch checkpoints`).
        applies_to: &'static str,
        /// What the input is.
        format: &'static str,
    },
    /// A tensor whose sizes cannot be summed (overflow).
    Tensor { name: String, source: BoxError },
    /// A total that overflows `u64`.
    Overflow(&'static str),
    /// Writing the output failed (including a closed pipe).
    Output(io::Error),
    /// A conversion or quantization step failed. `what` says which step
    /// and on what (`cannot quantize m as Q8_0`); without it the line is the
    /// library error alone (its message already names the path).
    Run {
        what: Option<String>,
        source: BoxError,
        /// What the user can do about it, printed after the whole chain.
        hint: Option<&'static str>,
    },
    /// A command line that is well-formed but asks for something that cannot
    /// be done (overwrite the input, an option that does not apply ...).
    Usage(String),
}

impl CliError {
    /// Whether this is stdout's reader having gone away, which is not an error.
    pub(crate) fn is_broken_pipe(&self) -> bool {
        matches!(self, CliError::Output(e) if e.kind() == io::ErrorKind::BrokenPipe)
    }

    /// Advice for the end of the error line.
    fn hint(&self) -> Option<&'static str> {
        match self {
            CliError::Open { hint, .. } | CliError::Run { hint, .. } => *hint,
            _ => None,
        }
    }
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CliError::Read { path, .. } => write!(f, "cannot read {}", path.display()),
            CliError::Unsupported {
                path,
                format,
                evidence,
            } => write!(
                f,
                "{}: unsupported format: {format} ({evidence}); this build reads safetensors \
                 (a .safetensors file, a *.safetensors.index.json or a model directory), \
                 GGUF files and PyTorch checkpoints (.bin, .pt, .pth, a \
                 pytorch_model.bin.index.json)",
                path.display()
            ),
            CliError::Ambiguous {
                path,
                what,
                candidates,
            } => {
                write!(f, "{} holds {} {what} (", path.display(), candidates.len())?;
                for (i, c) in candidates.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    let name = c.file_name().unwrap_or(c.as_os_str());
                    write!(f, "{}", name.to_string_lossy())?;
                }
                f.write_str("); give the path of the one to read")
            }
            CliError::Open { path, format, .. } => {
                write!(f, "cannot open {} as {format}", path.display())
            }
            CliError::NotApplicable {
                path,
                flag,
                applies_to,
                format,
            } => write!(
                f,
                "{flag} applies to {applies_to}, but {} is {format}",
                path.display()
            ),
            CliError::Tensor { name, .. } => write!(f, "tensor `{name}`"),
            CliError::Overflow(what) => write!(f, "{what} overflows a 64-bit count"),
            CliError::Output(_) => f.write_str("cannot write the output"),
            CliError::Run {
                what: Some(what), ..
            } => f.write_str(what),
            // The report skips a source that repeats the line so far.
            CliError::Run {
                what: None, source, ..
            } => write!(f, "{source}"),
            CliError::Usage(message) => f.write_str(message),
        }
    }
}

impl Error for CliError {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        match self {
            CliError::Read { source, .. } | CliError::Output(source) => Some(source),
            CliError::Open { source, .. }
            | CliError::Tensor { source, .. }
            | CliError::Run { source, .. } => Some(&**source),
            CliError::Unsupported { .. }
            | CliError::Usage(_)
            | CliError::Ambiguous { .. }
            | CliError::NotApplicable { .. }
            | CliError::Overflow(_) => None,
        }
    }
}

impl From<io::Error> for CliError {
    /// I/O errors that reach a command's `?` unannotated are output errors:
    /// every input read names its path explicitly.
    fn from(e: io::Error) -> Self {
        CliError::Output(e)
    }
}

/// [`report`] plus the error's hint: `error: ...; pass --flag to ...`.
pub(crate) fn report_cli(e: &CliError) -> String {
    let mut line = report(e);
    if let Some(hint) = e.hint() {
        line.push_str("; ");
        line.push_str(hint);
    }
    line
}

/// `error: <message>: <source>: <source's source> ...` on one line.
pub(crate) fn report(e: &dyn Error) -> String {
    let mut line = format!("error: {e}");
    let mut next = e.source();
    while let Some(s) = next {
        let msg = s.to_string();
        // A wrapper that repeats its source's message adds nothing.
        if !line.ends_with(&msg) {
            line.push_str(": ");
            line.push_str(&msg);
        }
        next = s.source();
    }
    // One line, whatever the messages contain.
    line.replace(['\n', '\r'], " ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_walks_the_chain() {
        let e = CliError::Read {
            path: "x.safetensors".into(),
            source: io::Error::new(io::ErrorKind::NotFound, "gone\nreally"),
        };
        assert_eq!(report(&e), "error: cannot read x.safetensors: gone really");
        assert!(CliError::Output(io::ErrorKind::BrokenPipe.into()).is_broken_pipe());
        assert!(!CliError::Overflow("x").is_broken_pipe());
        let e = CliError::Open {
            path: "m.gguf".into(),
            format: "GGUF",
            source: "bad\nthing".into(),
            hint: Some("try --this"),
        };
        assert_eq!(
            report_cli(&e),
            "error: cannot open m.gguf as GGUF: bad thing; try --this"
        );
        let e = CliError::Ambiguous {
            path: "dir".into(),
            what: ".gguf files",
            candidates: vec!["dir/a.gguf".into(), "dir/b.gguf".into()],
        };
        assert_eq!(
            report_cli(&e),
            "error: dir holds 2 .gguf files (a.gguf, b.gguf); give the path of the one to read"
        );
        // Without `what`, the library's message is the whole line, once.
        let e = CliError::Run {
            what: None,
            source: "m.bin: not a checkpoint".into(),
            hint: None,
        };
        assert_eq!(report_cli(&e), "error: m.bin: not a checkpoint");
        let e = CliError::Run {
            what: Some("cannot quantize m as Q8_0".into()),
            source: "tensor `t`: no fallback".into(),
            hint: Some("pass --override"),
        };
        assert_eq!(
            report_cli(&e),
            "error: cannot quantize m as Q8_0: tensor `t`: no fallback; pass --override"
        );
    }
}
