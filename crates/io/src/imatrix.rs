//! Importance matrices (`llama-imatrix` output) as llama-quantize reads them.
//!
//! An importance matrix holds, per weight tensor, the mean of the squared
//! activations that met each input column during a calibration run.
//! Quantizers weigh their rounding error by it (`quantize(.., Some(w))` in
//! `weightkit-quant`). llama.cpp has written two formats:
//!
//! - **GGUF** (current `llama-imatrix`, `tools/imatrix/imatrix.cpp`
//!   `save_imatrix`): metadata `general.type = "imatrix"`,
//!   `imatrix.datasets` (array of strings), `imatrix.chunk_count` and
//!   `imatrix.chunk_size` (u32); per weight `W`, the tensors `W.in_sum2`
//!   (F32, `ne = [n_cols, n_mat]`: the sums of squared activations, one row
//!   per expert) and `W.counts` (F32, `ne = [1, n_mat]`: how many
//!   activations were summed), and in newer writers `W.in_sum` (the plain
//!   sums, which llama-quantize ignores). llama-quantize
//!   (`tools/quantize/quantize.cpp`, `load_imatrix`) turns them into
//!   `in_sum2[j][i] / counts[j]`, or `1` for every column of a matrix whose
//!   count is not positive (an expert the calibration never routed to).
//! - **Legacy `.dat`** (`save_imatrix_legacy`, read by
//!   `load_legacy_imatrix`): little-endian `i32 n_entries`, then per entry
//!   `i32 name_len`, the name, `i32 ncall`, `i32 nval`, `f32 values[nval]`
//!   (already means, multiplied by `ncall`); then, in files from 2024 on,
//!   `i32 last_call`, `i32 dataset_len` and the dataset name. llama-quantize
//!   divides the values by `ncall` when it is positive.
//!
//! [`ImportanceMatrix::get`] returns the vector llama-quantize passes on for
//! a tensor: `n_cols` values, or `n_mat * n_cols` for a 3-D expert tensor,
//! expert `e` at `[e * n_cols, (e + 1) * n_cols)`, as llama-quantize slices
//! it per expert.
//!
//! Every length is checked against the bytes left before anything is
//! allocated for it; malformed input is an [`ImatrixError`], never a panic.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use weightkit_core::{Array, DType, Value};
use weightkit_gguf::{GgufFile, ReadOptions};

/// The key holding the dataset names.
pub const KEY_DATASETS: &str = "imatrix.datasets";
/// The key holding the number of chunks the data was collected over.
pub const KEY_CHUNK_COUNT: &str = "imatrix.chunk_count";
/// The key holding the chunk size in tokens.
pub const KEY_CHUNK_SIZE: &str = "imatrix.chunk_size";

const SUFFIX_SUMS: &str = ".in_sum2";
const SUFFIX_COUNTS: &str = ".counts";

/// Which format a matrix was read from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ImatrixFormat {
    /// The GGUF format of current `llama-imatrix`.
    Gguf,
    /// The legacy `.dat` format.
    Legacy,
}

#[derive(Clone, Debug, PartialEq)]
struct Entry {
    values: Vec<f32>,
    /// Matrices (experts) the GGUF format declares; unknown in `.dat`.
    n_mat: Option<usize>,
}

/// An importance matrix: per weight tensor, the per-column importance that
/// llama-quantize passes to the quantizer.
#[derive(Clone, Debug, PartialEq)]
pub struct ImportanceMatrix {
    format: ImatrixFormat,
    entries: BTreeMap<String, Entry>,
    datasets: Vec<String>,
    chunk_count: i64,
    chunk_size: Option<u32>,
}

/// Errors reading an importance matrix.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ImatrixError {
    /// An I/O error on `path`.
    #[error("{path}: I/O error")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The file starts with `GGUF` but is not a valid GGUF file.
    #[error("invalid GGUF importance matrix")]
    Gguf(#[source] weightkit_gguf::Error),
    /// No entries (`n_entries < 1`, or a GGUF file without tensors).
    #[error("no importance data in the file")]
    NoEntries,
    /// A required GGUF key is missing.
    #[error("missing imatrix metadata key `{key}`")]
    MissingKey {
        /// The key.
        key: &'static str,
    },
    /// A GGUF key with another type than llama.cpp reads.
    #[error("imatrix metadata key `{key}` must be {expected}")]
    WrongKeyType {
        /// The key.
        key: &'static str,
        /// The type llama.cpp reads.
        expected: &'static str,
    },
    /// A `.in_sum2` tensor without its `.counts`, or the reverse.
    #[error("entry `{name}`: `{name}{missing}` is missing")]
    Unpaired {
        /// The weight name.
        name: String,
        /// The missing suffix.
        missing: &'static str,
    },
    /// A sums or counts tensor that is not F32.
    #[error("tensor `{tensor}` is {dtype}, expected F32")]
    NotF32 {
        /// The tensor.
        tensor: String,
        /// Its type.
        dtype: DType,
    },
    /// A sums tensor with more than two non-trivial dimensions (llama.cpp
    /// would read only its first matrix and leave the rest zero).
    #[error("tensor `{tensor}` has shape {shape:?}; expected [n_mat, n_cols]")]
    SumsShape {
        /// The tensor.
        tensor: String,
        /// Its shape, row-major.
        shape: Vec<usize>,
    },
    /// A counts tensor whose length is not the sums' matrix count.
    #[error("entry `{name}`: {found} counts for {expected} matrices")]
    CountsLength {
        /// The weight name.
        name: String,
        /// Matrices in the sums tensor.
        expected: usize,
        /// Elements of the counts tensor.
        found: usize,
    },
    /// The file ends inside a field.
    #[error("file truncated: {what} at offset {offset} needs {needed} bytes, {available} left")]
    Truncated {
        /// The field.
        what: &'static str,
        /// Where it starts.
        offset: usize,
        /// Bytes it needs.
        needed: u64,
        /// Bytes left.
        available: usize,
    },
    /// A negative length field.
    #[error("{what} at offset {offset} is negative ({value})")]
    NegativeLength {
        /// The field.
        what: &'static str,
        /// Where it is.
        offset: usize,
        /// Its value.
        value: i32,
    },
    /// An entry with `nval < 1` (llama.cpp rejects these).
    #[error("entry `{name}`: value count {nval} at offset {offset} (must be at least 1)")]
    NoValues {
        /// The entry.
        name: String,
        /// The count.
        nval: i32,
        /// Where the count is.
        offset: usize,
    },
    /// An entry name that is not UTF-8.
    #[error("entry name at offset {offset} is not valid UTF-8")]
    NotUtf8 {
        /// Where the name starts.
        offset: usize,
    },
    /// A NaN or infinite importance (llama-quantize refuses the file:
    /// "imatrix contains non-finite value").
    #[error("entry `{name}`: non-finite importance {value} at index {index}")]
    NonFinite {
        /// The entry.
        name: String,
        /// The index in its vector.
        index: usize,
        /// The value.
        value: f32,
    },
    /// An entry whose length does not fit the tensor it is for
    /// ([`ImportanceMatrix::for_tensor`]).
    #[error("importance vector of `{tensor}` has {found} values, the tensor needs {expected}")]
    SizeMismatch {
        /// The tensor.
        tensor: String,
        /// `ne[0] * ne[2]` of the tensor.
        expected: usize,
        /// The vector's length.
        found: usize,
    },
}

impl ImportanceMatrix {
    /// Reads `path`, GGUF if it starts with `GGUF`, the legacy format
    /// otherwise. (llama.cpp also falls back to the legacy reader when a
    /// file starting with `GGUF` fails to parse; such a file then fails
    /// there too, so this reports the GGUF error instead.)
    pub fn load(path: impl AsRef<Path>) -> Result<Self, ImatrixError> {
        let path = path.as_ref();
        let bytes = std::fs::read(path).map_err(|source| ImatrixError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_vec(bytes, path)
    }

    /// Parses a file held in memory; `path` is only used in messages.
    pub fn from_vec(bytes: Vec<u8>, path: impl Into<PathBuf>) -> Result<Self, ImatrixError> {
        if bytes.starts_with(b"GGUF") {
            let file = GgufFile::from_vec(bytes, path, &ReadOptions::default())
                .map_err(ImatrixError::Gguf)?;
            Self::from_gguf(&file)
        } else {
            Self::from_legacy_bytes(&bytes)
        }
    }

    /// Parses a file's bytes (copies a GGUF file once; see
    /// [`ImportanceMatrix::from_vec`]).
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, ImatrixError> {
        if bytes.starts_with(b"GGUF") {
            Self::from_vec(bytes.to_vec(), "<memory>")
        } else {
            Self::from_legacy_bytes(bytes)
        }
    }

    /// Reads the GGUF format from an opened file.
    pub fn from_gguf(file: &GgufFile) -> Result<Self, ImatrixError> {
        if file.tensors().is_empty() {
            return Err(ImatrixError::NoEntries);
        }
        let datasets = match file.get(KEY_DATASETS) {
            None => return Err(ImatrixError::MissingKey { key: KEY_DATASETS }),
            Some(Value::Array(Array::String(v))) => v.clone(),
            Some(Value::Array(Array::Strings(v))) => v
                .iter()
                .map(|s| match s {
                    Value::String(s) => s.clone(),
                    Value::RawString(b) => String::from_utf8_lossy(b).into_owned(),
                    other => other.to_string(),
                })
                .collect(),
            Some(Value::Array(a)) if a.is_empty() => Vec::new(),
            Some(_) => {
                return Err(ImatrixError::WrongKeyType {
                    key: KEY_DATASETS,
                    expected: "an array of strings",
                });
            }
        };
        let u32_key = |key: &'static str| match file.get(key) {
            None => Err(ImatrixError::MissingKey { key }),
            Some(Value::U32(v)) => Ok(*v),
            Some(_) => Err(ImatrixError::WrongKeyType {
                key,
                expected: "UINT32",
            }),
        };
        let chunk_count = u32_key(KEY_CHUNK_COUNT)?;
        let chunk_size = u32_key(KEY_CHUNK_SIZE)?;

        // Pair `W.in_sum2` with `W.counts`; other tensors are ignored.
        let mut pairs: BTreeMap<&str, (Option<usize>, Option<usize>)> = BTreeMap::new();
        for (i, info) in file.tensors().iter().enumerate() {
            if let Some(base) = info.name.strip_suffix(SUFFIX_SUMS) {
                pairs.entry(base).or_default().0 = Some(i);
            } else if let Some(base) = info.name.strip_suffix(SUFFIX_COUNTS) {
                pairs.entry(base).or_default().1 = Some(i);
            }
        }

        let mut entries = BTreeMap::new();
        for (name, pair) in pairs {
            let (sums, counts) = match pair {
                (Some(s), Some(c)) => (s, c),
                (None, _) => {
                    return Err(ImatrixError::Unpaired {
                        name: name.to_owned(),
                        missing: SUFFIX_SUMS,
                    });
                }
                (_, None) => {
                    return Err(ImatrixError::Unpaired {
                        name: name.to_owned(),
                        missing: SUFFIX_COUNTS,
                    });
                }
            };
            let sums = f32_tensor(file, sums)?;
            let counts = f32_tensor(file, counts)?;
            let (n_mat, n_cols) = matrix_dims(&sums)?;
            if counts.values.len() != n_mat {
                return Err(ImatrixError::CountsLength {
                    name: name.to_owned(),
                    expected: n_mat,
                    found: counts.values.len(),
                });
            }
            let mut values = sums.values;
            if n_cols > 0 {
                for (row, &count) in values.chunks_exact_mut(n_cols).zip(&counts.values) {
                    for v in row {
                        *v = if count > 0.0 { *v / count } else { 1.0 };
                    }
                }
            }
            check_finite(name, &values)?;
            entries.insert(
                name.to_owned(),
                Entry {
                    values,
                    n_mat: Some(n_mat),
                },
            );
        }
        Ok(ImportanceMatrix {
            format: ImatrixFormat::Gguf,
            entries,
            datasets,
            chunk_count: i64::from(chunk_count),
            chunk_size: Some(chunk_size),
        })
    }

    /// Reads the legacy `.dat` format. Entry names must be UTF-8 (they are
    /// GGUF tensor names); the dataset name is a file path and is read
    /// lossily. Bytes after the dataset name are ignored, as llama.cpp does.
    pub fn from_legacy_bytes(bytes: &[u8]) -> Result<Self, ImatrixError> {
        let mut cur = Cursor { bytes, pos: 0 };
        let n_entries = cur.i32("entry count")?;
        if n_entries < 1 {
            return Err(ImatrixError::NoEntries);
        }
        let mut entries = BTreeMap::new();
        for _ in 0..n_entries {
            let name_at = cur.pos;
            let len = cur.len("name length")?;
            let raw = cur.take("entry name", len)?;
            // llama.cpp builds the name with `std::string(char *)`: it stops
            // at the first NUL.
            let raw = raw.split(|&b| b == 0).next().unwrap_or(raw);
            let name = std::str::from_utf8(raw)
                .map_err(|_| ImatrixError::NotUtf8 {
                    offset: name_at + 4,
                })?
                .to_owned();
            let ncall = cur.i32("call count")?;
            let nval_at = cur.pos;
            let nval = cur.i32("value count")?;
            let Some(n) = usize::try_from(nval).ok().filter(|&n| n >= 1) else {
                return Err(ImatrixError::NoValues {
                    name,
                    nval,
                    offset: nval_at,
                });
            };
            let data = cur.take_values("values", n)?;
            let mut values = le_f32s(data);
            if ncall > 0 {
                // `v /= ncall`: the int is converted to float first.
                let d = ncall as f32;
                for v in &mut values {
                    *v /= d;
                }
            }
            check_finite(&name, &values)?;
            // A repeated name replaces the earlier entry, as in llama.cpp.
            entries.insert(
                name,
                Entry {
                    values,
                    n_mat: None,
                },
            );
        }

        // Newer files end with the chunk count and the dataset name.
        let mut chunk_count = 0;
        let mut datasets = Vec::new();
        if cur.remaining() > 0 {
            chunk_count = i64::from(cur.i32("chunk count")?);
            let len = cur.len("dataset name length")?;
            let raw = cur.take("dataset name", len)?;
            datasets.push(String::from_utf8_lossy(raw).into_owned());
        }
        Ok(ImportanceMatrix {
            format: ImatrixFormat::Legacy,
            entries,
            datasets,
            chunk_count,
            chunk_size: None,
        })
    }

    /// The format it was read from.
    pub fn format(&self) -> ImatrixFormat {
        self.format
    }

    /// The importance vector for the weight called `name` (GGUF tensor
    /// names as llama.cpp stores them, `"blk.0.attn_q.weight"`): `n_cols`
    /// values, or `n_mat * n_cols` for expert tensors, expert after expert.
    pub fn get(&self, name: &str) -> Option<&[f32]> {
        self.entries.get(name).map(|e| e.values.as_slice())
    }

    /// The vector of expert (matrix) `index` of `name`, for an entry of
    /// rows of `n_cols` values.
    pub fn get_matrix(&self, name: &str, n_cols: usize, index: usize) -> Option<&[f32]> {
        let values = self.get(name)?;
        let start = index.checked_mul(n_cols)?;
        values.get(start..start.checked_add(n_cols)?)
    }

    /// The number of matrices (experts) the file declares for `name`
    /// (GGUF only; the legacy format does not say).
    pub fn num_matrices(&self, name: &str) -> Option<usize> {
        self.entries.get(name).and_then(|e| e.n_mat)
    }

    /// What llama-quantize passes to the quantizer for the tensor `name` of
    /// `shape` (row-major): the vector when its length is `ne[0] * ne[2]`
    /// (the row length times the expert count), `None` without an entry;
    /// any other length is an error, except for `token_embd.weight` (and
    /// `per_layer_token_embd.weight`), which is then quantized without one.
    pub fn for_tensor(&self, name: &str, shape: &[usize]) -> Result<Option<&[f32]>, ImatrixError> {
        let Some(values) = self.get(name) else {
            return Ok(None);
        };
        let ne0 = shape.last().copied().unwrap_or(1);
        let ne2 = shape.iter().rev().nth(2).copied().unwrap_or(1);
        let expected = ne0.saturating_mul(ne2);
        if values.len() == expected {
            return Ok(Some(values));
        }
        if matches!(name, "token_embd.weight" | "per_layer_token_embd.weight") {
            return Ok(None);
        }
        Err(ImatrixError::SizeMismatch {
            tensor: name.to_owned(),
            expected,
            found: values.len(),
        })
    }

    /// The entry names, sorted.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.entries.keys().map(String::as_str)
    }

    /// The number of entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether there are no entries (a GGUF file whose tensors are all
    /// neither `.in_sum2` nor `.counts`, or after
    /// [`ImportanceMatrix::retain`]). llama-quantize then quantizes as if no
    /// importance matrix had been given: callers should do the same
    /// (`mixture::Options::has_imatrix = false`).
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Keeps the entries for which `keep(name)` is true, as llama-quantize's
    /// `--include-weights` / `--exclude-weights` do (with a substring test).
    pub fn retain(&mut self, mut keep: impl FnMut(&str) -> bool) {
        self.entries.retain(|name, _| keep(name));
    }

    /// The calibration datasets (GGUF `imatrix.datasets`; the legacy
    /// trailer's one name).
    pub fn datasets(&self) -> &[String] {
        &self.datasets
    }

    /// The number of chunks the data was collected over
    /// (`imatrix.chunk_count`, or the legacy trailer's count; 0 when an old
    /// legacy file has no trailer).
    pub fn chunk_count(&self) -> i64 {
        self.chunk_count
    }

    /// Tokens per chunk (`imatrix.chunk_size`; the legacy format does not
    /// store it).
    pub fn chunk_size(&self) -> Option<u32> {
        self.chunk_size
    }
}

/// Little-endian f32 values (a trailing partial value is ignored; callers
/// pass whole multiples of 4 bytes).
fn le_f32s(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(4)
        .map(|b| b.try_into().map_or(0.0, f32::from_le_bytes))
        .collect()
}

fn check_finite(name: &str, values: &[f32]) -> Result<(), ImatrixError> {
    match values.iter().position(|v| !v.is_finite()) {
        None => Ok(()),
        Some(index) => Err(ImatrixError::NonFinite {
            name: name.to_owned(),
            index,
            value: values[index],
        }),
    }
}

struct F32Tensor {
    name: String,
    shape: Vec<usize>,
    values: Vec<f32>,
}

fn f32_tensor(file: &GgufFile, i: usize) -> Result<F32Tensor, ImatrixError> {
    let view = file.tensor_at(i).map_err(ImatrixError::Gguf)?;
    let name = file
        .tensors()
        .get(i)
        .map(|t| t.name.clone())
        .unwrap_or_default();
    if view.dtype() != DType::F32 {
        return Err(ImatrixError::NotF32 {
            tensor: name,
            dtype: view.dtype(),
        });
    }
    // The data exists in the file, so this allocation is bounded by its size.
    let values = le_f32s(view.data());
    Ok(F32Tensor {
        name,
        shape: view.shape().dims().to_vec(),
        values,
    })
}

/// `(n_mat, n_cols)` of a sums tensor: `ne[1]` and `ne[0]`; dimensions
/// beyond the second must be 1.
fn matrix_dims(t: &F32Tensor) -> Result<(usize, usize), ImatrixError> {
    let mut dims = t.shape.iter().rev();
    let n_cols = dims.next().copied().unwrap_or(1);
    let n_mat = dims.next().copied().unwrap_or(1);
    if dims.any(|&d| d != 1) {
        return Err(ImatrixError::SumsShape {
            tensor: t.name.clone(),
            shape: t.shape.clone(),
        });
    }
    Ok((n_mat, n_cols))
}

struct Cursor<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn remaining(&self) -> usize {
        self.bytes.len().saturating_sub(self.pos)
    }

    fn take(&mut self, what: &'static str, n: usize) -> Result<&'a [u8], ImatrixError> {
        let out = self
            .pos
            .checked_add(n)
            .and_then(|end| self.bytes.get(self.pos..end))
            .ok_or(ImatrixError::Truncated {
                what,
                offset: self.pos,
                needed: u64::try_from(n).unwrap_or(u64::MAX),
                available: self.remaining(),
            })?;
        self.pos += n;
        Ok(out)
    }

    /// `n` f32 values, checked against the bytes left before any
    /// allocation.
    fn take_values(&mut self, what: &'static str, n: usize) -> Result<&'a [u8], ImatrixError> {
        match n.checked_mul(4) {
            Some(bytes) => self.take(what, bytes),
            None => Err(ImatrixError::Truncated {
                what,
                offset: self.pos,
                needed: u64::try_from(n).unwrap_or(u64::MAX).saturating_mul(4),
                available: self.remaining(),
            }),
        }
    }

    fn i32(&mut self, what: &'static str) -> Result<i32, ImatrixError> {
        let b = self.take(what, 4)?;
        Ok(b.try_into().map_or(0, i32::from_le_bytes))
    }

    /// A non-negative `i32` length.
    fn len(&mut self, what: &'static str) -> Result<usize, ImatrixError> {
        let offset = self.pos;
        let value = self.i32(what)?;
        usize::try_from(value).map_err(|_| ImatrixError::NegativeLength {
            what,
            offset,
            value,
        })
    }
}
