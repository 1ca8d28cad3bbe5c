//! What `inspect` adds for a PyTorch checkpoint: the container and archive
//! prefix, how many storages hold the tensors, which tensors are views
//! (strided, or at an offset in their storage) or share a storage, and the
//! state-dict entries that are not tensors; per tensor, its storage, offset
//! and strides.
//!
//! `torch.save` writes each storage once however many tensors view it, so
//! the data size (every tensor's own bytes) can exceed what the file holds;
//! the storage line says what it does hold.

use std::collections::HashMap;
use std::fmt::Write as _;

use crate::source::{Model, TorchCheckpoint, TorchTensor, is_view, to_u64};
use crate::units::{bytes_with_unit, thousands};

use super::shape_string;
use super::value::escape;

/// Names of skipped entries shown in the human report; `--json` has all.
const SKIPPED_SHOWN: usize = 5;

/// The PyTorch-only part of the report.
#[derive(Debug)]
pub(super) struct TorchSummary<'a> {
    /// `zip`, `legacy`, or `mixed` (shards of both).
    pub(super) container: &'static str,
    /// The zip archive prefix, if every file has the same one.
    pub(super) prefix: Option<&'a str>,
    /// Distinct storages (per file).
    pub(super) storage_count: usize,
    /// Their bytes, each storage once.
    pub(super) storage_bytes: u64,
    /// Tensors whose strides are not row-major contiguous.
    non_contiguous: usize,
    /// Contiguous tensors that do not start at their storage's start.
    offset_views: usize,
    /// Tensors that share their storage with another tensor ...
    shared_tensors: usize,
    /// ... and how many storages that is.
    shared_storages: usize,
    /// State-dict entries that are not tensors, all files.
    pub(super) skipped: Vec<&'a str>,
}

/// A tensor's storage details, for one table row.
#[derive(Debug)]
pub(super) struct TorchColumns<'a> {
    /// The shard's file name, for a sharded checkpoint.
    pub(super) shard: Option<String>,
    pub(super) storage: &'a str,
    pub(super) storage_offset: u64,
    pub(super) stride: &'a [usize],
    pub(super) contiguous: bool,
    /// `view` for a view, with its offset and strides; empty otherwise.
    pub(super) view_cell: String,
    /// The STORAGE cell: the key, or `shard:key` for a sharded checkpoint.
    pub(super) storage_cell: String,
}

impl<'a> TorchSummary<'a> {
    pub(super) fn new(t: &'a TorchCheckpoint) -> Self {
        let mut storages: HashMap<(usize, &str), (u64, usize)> = HashMap::new();
        let mut non_contiguous = 0;
        let mut offset_views = 0;
        for i in 0..t.tensor_infos().len() {
            let Some(TorchTensor { file, r }) = t.tensor(i) else {
                continue;
            };
            if !r.is_contiguous() {
                non_contiguous += 1;
            } else if is_view(r) {
                offset_views += 1;
            }
            let bytes = r
                .storage_dtype
                .size_in_bytes()
                .map_or(0, |s| r.storage_numel.saturating_mul(to_u64(s)));
            let entry = storages
                .entry((file, r.storage_key.as_str()))
                .or_insert((0, 0));
            entry.0 = entry.0.max(bytes);
            entry.1 += 1;
        }
        let shared = storages.values().filter(|(_, n)| *n > 1);
        TorchSummary {
            container: t.container(),
            prefix: t.archive_prefix(),
            storage_count: storages.len(),
            storage_bytes: storages
                .values()
                .fold(0u64, |a, (b, _)| a.saturating_add(*b)),
            non_contiguous,
            offset_views,
            shared_tensors: shared.clone().map(|(_, n)| n).sum(),
            shared_storages: shared.count(),
            skipped: t
                .files()
                .iter()
                .flat_map(|f| f.skipped())
                .map(String::as_str)
                .collect(),
        }
    }

    /// Header lines after the data size: `(key, value)`.
    pub(super) fn lines(&self) -> Vec<(&'static str, String)> {
        let mut lines = vec![(
            "storages",
            format!(
                "{} holding {}",
                thousands(to_u64(self.storage_count)),
                bytes_with_unit(self.storage_bytes)
            ),
        )];
        let views = self.non_contiguous + self.offset_views;
        let line = if views == 0 {
            "none".to_owned()
        } else {
            let mut parts = Vec::new();
            if self.non_contiguous > 0 {
                parts.push(format!(
                    "{} non-contiguous",
                    thousands(to_u64(self.non_contiguous))
                ));
            }
            if self.offset_views > 0 {
                parts.push(format!(
                    "{} contiguous at a storage offset",
                    thousands(to_u64(self.offset_views))
                ));
            }
            format!("{} ({})", thousands(to_u64(views)), parts.join(", "))
        };
        lines.push(("views", line));
        let line = if self.shared_storages == 0 {
            "none".to_owned()
        } else {
            format!(
                "{} tensors share {} storage{}",
                thousands(to_u64(self.shared_tensors)),
                thousands(to_u64(self.shared_storages)),
                if self.shared_storages == 1 { "" } else { "s" }
            )
        };
        lines.push(("shared storages", line));
        let line = match self.skipped.len() {
            0 => "none".to_owned(),
            n => {
                let shown: Vec<String> = self
                    .skipped
                    .iter()
                    .take(SKIPPED_SHOWN)
                    .map(|s| escape(s))
                    .collect();
                let mut line = format!(
                    "{} non-tensor entr{}: {}",
                    thousands(to_u64(n)),
                    if n == 1 { "y" } else { "ies" },
                    shown.join(", ")
                );
                if n > SKIPPED_SHOWN {
                    let _ = write!(line, " (+{} more)", thousands(to_u64(n - SKIPPED_SHOWN)));
                }
                line
            }
        };
        lines.push(("skipped", line));
        lines
    }
}

impl<'a> TorchColumns<'a> {
    /// The columns of tensor `i`, if the checkpoint has it.
    pub(super) fn new(t: &'a TorchCheckpoint, i: usize) -> Option<Self> {
        let TorchTensor { file, r } = t.tensor(i)?;
        let shard = t
            .is_sharded()
            .then(|| t.files().get(file))
            .flatten()
            .map(|f| {
                let p = f.path();
                p.file_name()
                    .unwrap_or(p.as_os_str())
                    .to_string_lossy()
                    .into_owned()
            });
        let view_cell = if is_view(r) {
            let mut details = Vec::new();
            if r.storage_view_offset != 0 {
                details.push(format!("in a storage view at {}", r.storage_view_offset));
            }
            if r.offset != 0 {
                details.push(format!("offset {}", r.offset));
            }
            if !r.is_contiguous() {
                details.push(format!("stride {}", shape_string(&r.stride)));
            }
            format!("view ({})", details.join(", "))
        } else {
            String::new()
        };
        let storage_cell = if t.is_sharded() {
            format!("{}:{}", file + 1, escape(&r.storage_key))
        } else {
            escape(&r.storage_key)
        };
        Some(TorchColumns {
            shard,
            storage: &r.storage_key,
            storage_offset: r.offset,
            stride: &r.stride,
            contiguous: r.is_contiguous(),
            view_cell,
            storage_cell,
        })
    }
}
