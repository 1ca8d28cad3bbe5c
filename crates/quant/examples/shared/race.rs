//! What the examples that time weightkit against ggml in one process
//! (`ggml_inproc`, `ggml_matvec`) share, included with `#[path]`.

use weightkit_core::DType;

/// The fastest round of each side over `rounds` rounds, interleaved round
/// by round (each first in every other round); `ours` and `theirs` each
/// time one round and return its seconds per call. Background load on a
/// shared VM only ever adds time, so the fastest round is the one it
/// disturbed least.
pub(crate) fn fastest_interleaved(
    rounds: usize,
    mut ours: impl FnMut() -> f64,
    mut theirs: impl FnMut() -> f64,
) -> (f64, f64) {
    let (mut a, mut b) = (f64::INFINITY, f64::INFINITY);
    for r in 0..rounds {
        if r % 2 == 0 {
            a = a.min(ours());
            b = b.min(theirs());
        } else {
            b = b.min(theirs());
            a = a.min(ours());
        }
    }
    (a, b)
}

/// The types `--types a,b` names (ggml's names, any case), each one of
/// `all`; all of them without the flag.
pub(crate) fn types_arg(args: &[String], all: &[DType]) -> Result<Vec<DType>, String> {
    match args.iter().position(|a| a == "--types") {
        Some(i) => args
            .get(i + 1)
            .ok_or("--types needs a list")?
            .split(',')
            .map(|t| {
                all.iter()
                    .copied()
                    .find(|d| d.name().eq_ignore_ascii_case(t))
                    .ok_or_else(|| format!("unknown type {t}"))
            })
            .collect(),
        None => Ok(all.to_vec()),
    }
}

/// The value of a `--name V` argument, or `default` without the flag.
pub(crate) fn arg<T: std::str::FromStr>(
    args: &[String],
    name: &str,
    default: T,
) -> Result<T, String> {
    match args.iter().position(|a| a == name) {
        Some(i) => args
            .get(i + 1)
            .and_then(|v| v.parse().ok())
            .ok_or(format!("{name} needs a value")),
        None => Ok(default),
    }
}
