//! Merging an adapter into a base checkpoint, one tensor at a time.
//!
//! Every adapted tensor is widened to f32, changed in f32 and rounded once to
//! the base dtype; untouched tensors are copied byte for byte. Memory is the
//! adapter plus one base tensor (two for DoRA on `fan_in_fan_out` bases).

use std::borrow::Cow;
use std::path::Path;

use rayon::prelude::*;
use weightkit_core::{DType, Metadata, TensorSink, Value, convert};
use weightkit_io::Source;
use weightkit_safetensors::SafetensorsWriter;

use crate::adapter::{Adapter, AdapterConfig, LoraModule};
use crate::error::{BoxError, LoraError};
use crate::merged::{Action, Targets, merged_values};

/// How to merge.
#[derive(Debug, Clone, PartialEq)]
pub struct MergeOptions {
    /// Multiplies every module's delta (PEFT's `scale_layer`); 1 by default.
    pub scale: f32,
    /// Check every merged tensor for NaN/infinity (after rounding) before
    /// writing it, as PEFT's `safe_merge`; the output file is then never
    /// created on failure.
    pub safe_merge: bool,
}

impl Default for MergeOptions {
    fn default() -> Self {
        MergeOptions {
            scale: 1.0,
            safe_merge: false,
        }
    }
}

/// What a merge did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MergeReport {
    /// Base tensors changed by a LoRA delta.
    pub merged: Vec<String>,
    /// Base tensors replaced by `modules_to_save` weights.
    pub replaced: Vec<String>,
    /// Tensors copied unchanged.
    pub copied: usize,
}

/// Merges `adapter` into `base` and writes the result to `out` as
/// safetensors (same tensor names, dtypes and order as the base).
pub fn merge_lora(
    base: &dyn Source,
    adapter: &Adapter,
    out: impl AsRef<Path>,
    options: &MergeOptions,
) -> Result<MergeReport, LoraError> {
    to_safetensors(base, &[(adapter, 1.0)], out.as_ref(), options, false)
}

/// Undoes [`merge_lora`]: subtracts the delta. DoRA adapters cannot be
/// unmerged from the merged weights alone (the norm of `W + delta` is lost)
/// and are rejected.
pub fn unmerge_lora(
    merged: &dyn Source,
    adapter: &Adapter,
    out: impl AsRef<Path>,
    options: &MergeOptions,
) -> Result<MergeReport, LoraError> {
    to_safetensors(merged, &[(adapter, 1.0)], out.as_ref(), options, true)
}

/// Merges `adapters` into `base` one after the other, writing every base
/// tensor (same names, dtypes, shapes and order) into `sink`, which must
/// have been created with `base.tensor_infos()`, then finishes it. Any
/// format's writer works (safetensors, GGUF, PyTorch).
///
/// Adapter `k`'s deltas are multiplied by its weight `w_k` and by
/// `options.scale`: the result is PEFT's for merging the adapters in turn,
/// each with `scale_layer(w_k * scale)` (including DoRA, which renormalises
/// after each adapter's delta), except that every adapted tensor is
/// accumulated in f32 and rounded to the base dtype once, not after each
/// adapter. On an error the sink is dropped unfinished, so nothing is left
/// behind.
pub fn merge_into<S: TensorSink>(
    base: &dyn Source,
    adapters: &[(&Adapter, f32)],
    sink: S,
    options: &MergeOptions,
) -> Result<(MergeReport, S::Output), LoraError> {
    run(base, adapters, sink, options, false, &sink_err)
}

/// Undoes [`merge_into`] for one adapter: subtracts `options.scale` times
/// its delta, writing into `sink` (created with `merged.tensor_infos()`).
/// Rejected, as in [`unmerge_lora`], for DoRA and for adapters that replace
/// base tensors.
pub fn unmerge_into<S: TensorSink>(
    merged: &dyn Source,
    adapter: &Adapter,
    sink: S,
    options: &MergeOptions,
) -> Result<(MergeReport, S::Output), LoraError> {
    run(merged, &[(adapter, 1.0)], sink, options, true, &sink_err)
}

fn sink_err(tensor: &str, source: BoxError) -> LoraError {
    LoraError::Sink {
        tensor: tensor.to_owned(),
        source,
    }
}

fn to_safetensors(
    base: &dyn Source,
    adapters: &[(&Adapter, f32)],
    out: &Path,
    options: &MergeOptions,
    unmerge: bool,
) -> Result<MergeReport, LoraError> {
    let write_err = |_: &str, source: BoxError| LoraError::Write {
        path: out.to_path_buf(),
        source,
    };
    let mut metadata = Metadata::new();
    metadata.insert("format", Value::String("pt".into()));
    let writer = SafetensorsWriter::create(out, base.tensor_infos().to_vec(), &metadata)
        .map_err(|e| write_err("", Box::new(e)))?;
    run(base, adapters, writer, options, unmerge, &write_err).map(|(report, _)| report)
}

fn run<S: TensorSink>(
    base: &dyn Source,
    adapters: &[(&Adapter, f32)],
    mut writer: S,
    options: &MergeOptions,
    unmerge: bool,
    wrap: &dyn Fn(&str, BoxError) -> LoraError,
) -> Result<(MergeReport, S::Output), LoraError> {
    for (adapter, _) in adapters {
        if unmerge && adapter.config().use_dora {
            return Err(LoraError::Unsupported(
                "unmerging a DoRA adapter (the merged weights do not keep ||W + delta||)".into(),
            ));
        }
        if unmerge && !adapter.saved_tensors().is_empty() {
            return Err(LoraError::Unsupported(
                "unmerging an adapter that replaces base tensors (modules_to_save or trained \
                 biases): the replaced base weights are gone"
                    .into(),
            ));
        }
    }
    let targets = Targets::by_name(base, adapters)?;
    let mut report = MergeReport::default();
    for (i, info) in base.tensor_infos().iter().enumerate() {
        let t = base.load(i).map_err(LoraError::Read)?;
        let view = t.view();
        let conv = |source| LoraError::Convert {
            name: info.name.clone(),
            source,
        };
        let Some(steps) = targets.0.get(&i) else {
            writer
                .write_tensor(&info.name, view.data())
                .map_err(|e| wrap(&info.name, Box::new(e)))?;
            report.copied += 1;
            continue;
        };
        // One LoRA update of an f32/f16/bf16 weight (the common case): in
        // place, row by row, without an f32 copy of the matrix.
        if let [(k, Action::Lora(m))] = steps.actions.as_slice() {
            let (adapter, weight) = adapters[*k];
            let module = &adapter.modules()[*m];
            let mut bytes = view.data().to_vec();
            let scale = options.scale * weight;
            if apply_module_in_place(
                adapter.config(),
                module,
                info.dtype,
                &mut bytes,
                scale,
                unmerge,
            ) {
                if options.safe_merge && !all_finite(info.dtype, &bytes) {
                    return Err(LoraError::NonFinite(info.name.clone()));
                }
                writer
                    .write_tensor(&info.name, &bytes)
                    .map_err(|e| wrap(&info.name, Box::new(e)))?;
                report.merged.push(info.name.clone());
                continue;
            }
        }
        let values = merged_values(info, view, steps, adapters, options.scale, unmerge)?;
        if steps.adapts() {
            report.merged.push(info.name.clone());
        } else {
            report.replaced.push(info.name.clone());
        }
        let mut bytes = vec![0u8; view.data().len()];
        convert::encode_f32(info.dtype, &values, &mut bytes).map_err(conv)?;
        if options.safe_merge {
            let finite = if info.dtype == DType::F32 {
                values.iter().all(|x| x.is_finite())
            } else {
                let mut back = vec![0f32; values.len()];
                convert::decode_f32(info.dtype, &bytes, &mut back).map_err(conv)?;
                back.iter().all(|x| x.is_finite())
            };
            if !finite {
                return Err(LoraError::NonFinite(info.name.clone()));
            }
        }
        writer
            .write_tensor(&info.name, &bytes)
            .map_err(|e| wrap(&info.name, Box::new(e)))?;
    }
    let output = writer.finish().map_err(|e| wrap("finish", Box::new(e)))?;
    Ok((report, output))
}

/// Whether every value of an F32/F16/BF16 tensor is finite, decoded a chunk
/// at a time.
fn all_finite(dtype: DType, bytes: &[u8]) -> bool {
    let width = dtype.block_bytes();
    let mut buf = vec![0f32; 4096];
    bytes.chunks(4096 * width).all(|c| {
        let vals = &mut buf[..c.len() / width];
        convert::decode_f32(dtype, c, vals).is_ok() && vals.iter().all(|x| x.is_finite())
    })
}

/// Applies one module to a base weight already widened to f32 (row-major,
/// the base tensor's own layout): `W += s * scaling * delta`, or `-=` when
/// `unmerge`; with DoRA, `W = m / ||W + delta||_row * (W + delta)` (norm per
/// output feature over the input dimension, as PEFT's `DoraLinearLayer`).
///
/// `weight.len()` must equal the product of
/// [`LoraModule::expected_shape`]; otherwise this panics.
pub fn apply_module(
    config: &AdapterConfig,
    module: &LoraModule,
    weight: &mut [f32],
    scale: f32,
    unmerge: bool,
) {
    let [rows, cols] = module.expected_shape(config);
    assert_eq!(
        weight.len(),
        rows * cols,
        "weight size for {}",
        module.module
    );
    let r = module.rank;
    let factor = signed_scaling(module, scale, unmerge);
    if module.transposed(config) {
        // W (in, out) += A^T (in, r) @ B^T (r, out).
        let lhs = transpose(&module.a, r, module.a_cols);
        let rhs = transpose(&module.b, module.b_rows, r);
        add_low_rank(weight, cols, &lhs, &rhs, r, factor);
    } else {
        // W (out, in) += B (out, r) @ A (r, in).
        add_low_rank(weight, cols, &module.b, &module.a, r, factor);
    }
    if let Some(m) = &module.magnitude {
        dora_rescale(weight, rows, cols, m, module.transposed(config));
    }
}

/// [`apply_module`] on a base weight stored as F32, F16 or BF16 bytes
/// (row-major, the base tensor's layout), in place and row-parallel: each
/// thread widens one row to f32, adds the row's low-rank update (and, for
/// DoRA, rescales the row), and rounds it back once. Memory is one f32 row
/// and one accumulator row per thread instead of an f32 copy of the matrix;
/// the result is bit-identical to widening the matrix, calling
/// [`apply_module`] and rounding (the same f32 operations per element).
///
/// Returns `false`, touching nothing, when the update is not row-local
/// (DoRA with `fan_in_fan_out`, whose norms run over columns) or `dtype` is
/// not F32/F16/BF16; the caller then uses [`apply_module`].
///
/// `bytes.len()` must be the size of [`LoraModule::expected_shape`] in
/// `dtype`; otherwise this panics.
pub fn apply_module_in_place(
    config: &AdapterConfig,
    module: &LoraModule,
    dtype: DType,
    bytes: &mut [u8],
    scale: f32,
    unmerge: bool,
) -> bool {
    let width = match dtype {
        DType::F32 => 4,
        DType::F16 | DType::BF16 => 2,
        _ => return false,
    };
    let transposed = module.transposed(config);
    if module.magnitude.is_some() && transposed {
        return false;
    }
    let [rows, cols] = module.expected_shape(config);
    assert_eq!(
        bytes.len(),
        rows * cols * width,
        "weight size for {}",
        module.module
    );
    if rows == 0 || cols == 0 {
        return true;
    }
    let r = module.rank;
    let factor = signed_scaling(module, scale, unmerge);
    // The factors as `lhs (rows, r)` and `rhs (r, cols)`: borrowed, or
    // transposed copies for fan_in_fan_out.
    let (lhs, rhs): (Cow<'_, [f32]>, Cow<'_, [f32]>) = if transposed {
        (
            Cow::Owned(transpose(&module.a, r, module.a_cols)),
            Cow::Owned(transpose(&module.b, module.b_rows, r)),
        )
    } else {
        (Cow::Borrowed(&module.b), Cow::Borrowed(&module.a))
    };
    let magnitude = module.magnitude.as_deref();
    bytes
        .par_chunks_mut(BLOCK_ROWS * cols * width)
        .zip(lhs.par_chunks(BLOCK_ROWS * r.max(1)))
        .enumerate()
        .for_each_init(
            || (vec![0f32; BLOCK_ROWS * cols], Vec::new()),
            |(block, scratch), (b, (raw, lblock))| {
                let block = &mut block[..raw.len() / width];
                // Widening and narrowing cannot fail: `raw` holds whole rows
                // of `dtype`, checked above.
                let _ = convert::decode_f32(dtype, raw, block);
                update_block(block, cols, lblock, &rhs, r, factor, scratch);
                if let Some(m) = magnitude {
                    // As `dora_rescale`: row i with magnitude i (zip, no index).
                    let mb = m.iter().skip(b * BLOCK_ROWS);
                    for (row, &mi) in block.chunks_exact_mut(cols).zip(mb) {
                        dora_row(row, mi);
                    }
                }
                let _ = convert::encode_f32(dtype, block, raw);
            },
        );
    true
}

/// `s * scaling`, negated to unmerge.
fn signed_scaling(module: &LoraModule, scale: f32, unmerge: bool) -> f32 {
    (module.scaling as f32) * scale * if unmerge { -1.0 } else { 1.0 }
}

/// Applies `lora_B.bias` to the base bias already widened to f32:
/// `bias += s * scaling * lora_B.bias`, or `-=` when `unmerge` (PEFT's
/// `lora_bias`). Does nothing for modules without a LoRA bias.
///
/// `bias.len()` must equal `module.b_rows`; otherwise this panics.
pub fn apply_bias(module: &LoraModule, bias: &mut [f32], scale: f32, unmerge: bool) {
    let Some(lb) = &module.bias else {
        return;
    };
    assert_eq!(bias.len(), module.b_rows, "bias size for {}", module.module);
    let factor = signed_scaling(module, scale, unmerge);
    for (b, &x) in bias.iter_mut().zip(lb) {
        *b += x * factor;
    }
}

fn transpose(x: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut t = vec![0f32; x.len()];
    for (i, row) in x.chunks_exact(cols).enumerate().take(rows) {
        for (j, &v) in row.iter().enumerate() {
            t[j * rows + i] = v;
        }
    }
    t
}

/// Rows per block of the low-rank update: the unit of parallel work and of
/// the product, the same in every path (f32 weights and in-place f16/bf16),
/// so all give the same floats.
const BLOCK_ROWS: usize = 16;
/// Columns per product tile: a `BLOCK_ROWS x COL_TILE` f32 delta (128 KiB)
/// stays in the L2 cache.
const COL_TILE: usize = 2048;

/// `w (rows, cols) += factor * (lhs (rows, r) @ rhs (r, cols))`, in blocks of
/// [`BLOCK_ROWS`] rows in parallel.
fn add_low_rank(w: &mut [f32], cols: usize, lhs: &[f32], rhs: &[f32], r: usize, factor: f32) {
    if cols == 0 || r == 0 {
        return;
    }
    w.par_chunks_mut(BLOCK_ROWS * cols)
        .zip(lhs.par_chunks(BLOCK_ROWS * r))
        .for_each_init(Vec::new, |scratch, (block, lblock)| {
            update_block(block, cols, lblock, rhs, r, factor, scratch);
        });
}

/// One block of rows: `block (n, cols) += factor * lblock (n, r) @ rhs (r,
/// cols)`, the product through `faer` (run-time dispatched SIMD with fused
/// multiply-adds) one [`COL_TILE`] at a time into `scratch`, then added in
/// f32. The update depends only on the block's own rows, so it is the same
/// wherever the block came from.
fn update_block(
    block: &mut [f32],
    cols: usize,
    lblock: &[f32],
    rhs: &[f32],
    r: usize,
    factor: f32,
    scratch: &mut Vec<f32>,
) {
    if cols == 0 || r == 0 {
        return;
    }
    let n = block.len() / cols;
    crate::linalg::low_rank_add(
        block,
        n,
        cols,
        &lblock[..n * r],
        rhs,
        r,
        factor,
        COL_TILE,
        scratch,
    );
}

/// DoRA on one output feature stored as a row: scale `row` (= W + delta)
/// to norm `m`.
fn dora_row(row: &mut [f32], m: f32) {
    let n: f64 = row.iter().map(|&x| f64::from(x) * f64::from(x)).sum();
    let f = m / (n.sqrt() as f32);
    for x in row {
        *x *= f;
    }
}

/// DoRA: scale each output feature of `v = W + delta` to norm `m`.
fn dora_rescale(v: &mut [f32], rows: usize, cols: usize, m: &[f32], transposed: bool) {
    if transposed {
        // (in, out): output features are columns.
        let mut norms = vec![0f64; cols];
        for row in v.chunks_exact(cols).take(rows) {
            for (n, &x) in norms.iter_mut().zip(row) {
                *n += f64::from(x) * f64::from(x);
            }
        }
        let f: Vec<f32> = norms
            .iter()
            .zip(m)
            .map(|(n, &m)| m / (n.sqrt() as f32))
            .collect();
        for row in v.chunks_exact_mut(cols) {
            for (x, &f) in row.iter_mut().zip(&f) {
                *x *= f;
            }
        }
    } else {
        v.par_chunks_mut(cols)
            .zip(m.par_iter())
            .for_each(|(row, &m)| dora_row(row, m));
    }
}
