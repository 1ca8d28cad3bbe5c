//! Base model + LoRA adapters -> one quantized GGUF file (or a merged
//! Hugging Face directory), in one streaming pass.
//!
//! The usual chain writes two full-size intermediate copies (PEFT's merged
//! 16-bit checkpoint, then `convert_hf_to_gguf.py`'s f16 GGUF) before
//! `llama-quantize` reads the second one. [`export`] reads each base tensor
//! once, merges it in f32 ([`crate::merged_model`]), rounds or quantizes it
//! once, with the tensor's importance vector when a matrix is given, and
//! writes it: memory is one tensor plus the writer's buffers, and the merged
//! weights are never rounded to 16 bits on the way.
//!
//! The GGUF names, layout (q/k rope permutation), metadata and tokenizer
//! come from the io crate's Hugging Face -> GGUF plan, the per-tensor types
//! from its port of llama-quantize's mixtures, so the file is what the chain
//! would have written from the same merged weights (tested tensor by tensor
//! against converting PEFT's own merge).

use std::path::Path;

use weightkit_core::{DType, TensorInfo};
use weightkit_io::convert::{
    ConvertOptions, ConvertReport, Plan, Progress, identity_plan, run_plan_with_progress,
};
use weightkit_io::mixture::Mixture;
use weightkit_io::plan::{GgufPlanOptions, gguf_to_hf_plan, hf_to_gguf_plan};
use weightkit_io::quantize::{QuantizeOptions, quantize_plan};
use weightkit_io::{Format, Model};

use crate::adapter::Adapter;
use crate::error::LoraError;
use crate::merge::MergeOptions;
use crate::merged::{MergedDType, MergedTensors, merged_model};

/// What [`export`] writes.
#[derive(Debug)]
#[non_exhaustive]
pub enum ExportFormat {
    /// A GGUF file quantized with one of llama-quantize's mixtures.
    Gguf {
        /// The mixture (`Q4_K_M`, `Q8_0`, `F16` ...).
        mixture: Mixture,
        /// llama-quantize's options and the importance matrix.
        quantize: QuantizeOptions,
        /// `general.name` and `tokenizer.ggml.pre` for Hugging Face bases.
        plan: GgufPlanOptions,
    },
    /// A merged Hugging Face checkpoint: safetensors (a file, or a
    /// directory of shards with `config.json` and tokenizer files copied)
    /// or PyTorch.
    HuggingFace {
        /// [`Format::Safetensors`] or [`Format::PyTorch`].
        format: Format,
        /// Cast every float tensor to this type; `None` keeps each base
        /// tensor's type (merged tensors rounded once to it).
        dtype: Option<DType>,
        /// Safetensors directories: the largest shard in bytes.
        max_shard_size: Option<u64>,
    },
}

/// Options of [`export`].
#[derive(Debug)]
pub struct ExportOptions {
    /// How the adapters are merged (scale, safe merge).
    pub merge: MergeOptions,
    /// The output.
    pub format: ExportFormat,
}

/// What [`export`] did.
#[derive(Debug)]
pub struct ExportReport {
    /// The base tensors the adapters changed or replaced.
    pub merged: MergedTensors,
    /// The output tensors, with their types.
    pub tensors: Vec<TensorInfo>,
    /// The streaming pass: bytes read and written, files, time.
    pub convert: ConvertReport,
}

/// Merges `adapters` (each with its weight, in turn, as
/// [`crate::merge_into`]) into `base` and writes the result to `out` in one
/// pass, as `options.format` says. `base` is any checkpoint the io crate
/// opens: a Hugging Face model (directory, safetensors, shards, PyTorch)
/// with its `config.json`, or a GGUF file (llama.cpp's names, any types:
/// adapted tensors are dequantized, merged and quantized again).
///
/// Tensors the adapters change are merged in f32 and rounded once: to the
/// mixture's type for GGUF, except where the mixture keeps a tensor
/// unquantized, which then gets the base tensor's own 16-bit type (as the
/// chain's 16-bit merged copy would have), unless the mixture is `F32`.
/// The output is written through a temporary file renamed into place: on
/// any error nothing is left at `out`.
///
/// # Errors
///
/// [`LoraError::MissingBaseTensor`], [`LoraError::Shape`],
/// [`LoraError::Unsupported`] when an adapter does not fit the base (before
/// anything is written); [`LoraError::Read`] for everything the io crate
/// reports (an unknown architecture, a mixture that does not fit a tensor,
/// an importance matrix of another model, unreadable tensors, write
/// failures), with the merge's own errors (e.g. [`LoraError::NonFinite`]
/// under `safe_merge`) inside it.
pub fn export(
    base: Model,
    adapters: Vec<(Adapter, f32)>,
    out: &Path,
    options: &ExportOptions,
    progress: &dyn Progress,
) -> Result<ExportReport, LoraError> {
    let read = LoraError::Read;
    let base_infos = base.source().tensor_infos().to_vec();
    // Each output: the merged view, its plan and the pass's options.
    let (model, merged, plan, convert_options) = match &options.format {
        ExportFormat::Gguf {
            mixture,
            quantize,
            plan: plan_options,
        } => {
            let (model, merged) = merged_model(base, adapters, &options.merge, MergedDType::F32)?;
            let plan = if model.format() == Format::Gguf {
                identity_plan(&model, None)
            } else {
                hf_to_gguf_plan(&model, plan_options)
            }
            .map_err(read)?;
            let mut plan = quantize_plan(plan, *mixture, quantize).map_err(read)?;
            if *mixture != Mixture::F32 {
                keep_16_bit_types(&mut plan, model.source().tensor_infos(), &base_infos);
            }
            let to = ConvertOptions {
                to: Format::Gguf,
                ..ConvertOptions::default()
            };
            (model, merged, plan, to)
        }
        ExportFormat::HuggingFace {
            format,
            dtype,
            max_shard_size,
        } => {
            if *format == Format::Gguf {
                return Err(LoraError::Unsupported(
                    "ExportFormat::HuggingFace writes safetensors or PyTorch; use \
                     ExportFormat::Gguf for GGUF"
                        .into(),
                ));
            }
            // Merged tensors in the base's own type unless everything is
            // cast anyway (or the base is GGUF, whose quantized tensors the
            // Hugging Face plan turns into floats).
            let gguf = base.format() == Format::Gguf;
            let merged_dtype = if dtype.is_none() && !gguf {
                MergedDType::Base
            } else {
                MergedDType::F32
            };
            let (model, merged) = merged_model(base, adapters, &options.merge, merged_dtype)?;
            let plan = if gguf && merged.llama_cpp_names {
                gguf_to_hf_plan(&model, *dtype)
            } else {
                identity_plan(&model, *dtype)
            }
            .map_err(read)?;
            let to = ConvertOptions {
                to: *format,
                dtype: *dtype,
                keep_names: false,
                max_shard_size: *max_shard_size,
            };
            (model, merged, plan, to)
        }
    };
    let tensors = plan.tensors.iter().map(|t| t.out.clone()).collect();
    let mut convert =
        run_plan_with_progress(&model, &plan, out, &convert_options, progress).map_err(read)?;
    convert.bytes_in = base_bytes(&plan, &base_infos);
    Ok(ExportReport {
        merged,
        tensors,
        convert,
    })
}

/// A merged tensor the mixture leaves unquantized keeps the base's 16-bit
/// type (what the chain's 16-bit merged copy would hold), not the f32 the
/// merge hands over; 1-D tensors and norms stay F32, as the converter
/// writes them. `merged_infos` is the merged view's tensor list.
fn keep_16_bit_types(plan: &mut Plan, merged_infos: &[TensorInfo], base_infos: &[TensorInfo]) {
    for t in &mut plan.tensors {
        let was = base_infos.get(t.source).map(|i| i.dtype);
        let merged_f32 = merged_infos
            .get(t.source)
            .is_some_and(|i| i.dtype == DType::F32);
        if t.out.dtype == DType::F32
            && merged_f32
            && t.inline.is_none()
            && t.out.shape.rank() >= 2
            && !t.out.name.ends_with("_norm.weight")
            && let Some(d @ (DType::F16 | DType::BF16)) = was
        {
            t.out.dtype = d;
        }
    }
}

/// The bytes `plan` reads from the base (the pass itself saw merged tensors
/// as the f32 the merge hands over).
fn base_bytes(plan: &Plan, base_infos: &[TensorInfo]) -> u64 {
    plan.tensors
        .iter()
        .filter(|t| t.inline.is_none())
        .filter_map(|t| base_infos.get(t.source))
        .filter_map(|i| i.byte_len().ok())
        .map(|n| n as u64)
        .sum()
}
