//! Merging PEFT adapters into a GGUF base model, quantized or not.
//!
//! A PEFT adapter names Hugging Face tensors (`model.layers.0.self_attn.
//! q_proj.weight`) in Hugging Face's layout; a GGUF model has llama.cpp's
//! names (`blk.0.attn_q.weight`) and its q/k rows in the rope order of
//! `convert_hf_to_gguf.py`. The translation is the io crate's GGUF -> HF
//! plan (the same tables `weightkit convert` uses): each adapted GGUF tensor
//! is dequantized to f32, its rows put back in Hugging Face order, changed by
//! [`crate::apply_module`] exactly as in a Hugging Face merge, permuted again
//! and requantized, to its own type or one the caller picks. Every other
//! tensor is copied byte for byte.
//!
//! Requantizing loses precision; the report gives each merged tensor's
//! relative RMS error against the f32 merge, so the caller sees what the
//! round trip cost (for a type that was already lossy this is the fresh
//! quantization of the merged weights, not the error against the original
//! full-precision model, which the GGUF no longer holds).

use weightkit_core::{DType, TensorInfo, TensorSink};
use weightkit_io::Model;

use crate::adapter::Adapter;
use crate::error::{BoxError, LoraError};
use crate::merged::{Targets, from_f32, merged_values, to_f32};

/// Options of [`merge_gguf_base`].
#[derive(Clone, Debug, PartialEq)]
pub struct GgufMergeOptions {
    /// Multiplies every adapter's delta (PEFT's `scale_layer`).
    pub scale: f32,
    /// Check every merged tensor for NaN or infinity before writing it.
    pub safe_merge: bool,
    /// The type of the merged tensors; `None` keeps each tensor's own type.
    pub requant: Option<DType>,
}

impl Default for GgufMergeOptions {
    fn default() -> Self {
        GgufMergeOptions {
            scale: 1.0,
            safe_merge: false,
            requant: None,
        }
    }
}

/// One merged tensor.
#[derive(Clone, Debug, PartialEq)]
pub struct GgufMergedTensor {
    /// The GGUF name.
    pub name: String,
    /// The type in the base.
    pub base_dtype: DType,
    /// The type written.
    pub dtype: DType,
    /// `||requantized - merged|| / ||merged||` over the tensor (0 for F32).
    pub rel_rmse: f64,
}

/// What [`merge_gguf_base`] did.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct GgufMergeReport {
    /// The merged tensors, in file order.
    pub merged: Vec<GgufMergedTensor>,
    /// Tensors copied unchanged.
    pub copied: usize,
}

/// The tensor list [`merge_gguf_base`] writes: the base's, with merged
/// tensors in `options.requant`'s type when one is given (create the GGUF
/// writer from it and the base's metadata).
pub fn gguf_merge_infos(
    base: &Model,
    adapters: &[(&Adapter, f32)],
    options: &GgufMergeOptions,
) -> Result<Vec<TensorInfo>, LoraError> {
    let targets = Targets::llama_cpp(base, adapters)?;
    output_infos(base, &targets, options)
}

/// The output tensor list for `targets`, checking that `options.requant`'s
/// blocks divide every merged tensor's rows.
fn output_infos(
    base: &Model,
    targets: &Targets,
    options: &GgufMergeOptions,
) -> Result<Vec<TensorInfo>, LoraError> {
    let mut infos = base.source().tensor_infos().to_vec();
    if let Some(d) = options.requant {
        let mut merged: Vec<usize> = targets.0.keys().copied().collect();
        merged.sort_unstable();
        for i in merged {
            let cols = infos[i].shape.row_len();
            if !cols.is_multiple_of(d.block_elems()) {
                return Err(LoraError::Unsupported(format!(
                    "GGUF tensor `{}`: rows of {cols} values are not whole {} blocks of {}",
                    infos[i].name,
                    d.name(),
                    d.block_elems()
                )));
            }
            infos[i].dtype = d;
        }
    }
    Ok(infos)
}

/// Merges `adapters` (each with its weight, applied in turn as in
/// [`crate::merge_into`]) into the GGUF model `base` and writes every tensor
/// to `writer` in the base's order: merged tensors requantized (see the
/// [module docs](self)), the others copied. `writer` must expect
/// [`gguf_merge_infos`]'s tensor list.
///
/// # Errors
///
/// [`LoraError::Unsupported`] for a non-GGUF base, adapters with
/// `modules_to_save`, trained biases or `lora_bias`, or a `requant` type
/// whose blocks do not divide a merged tensor's rows (checked before
/// anything is written);
/// [`LoraError::MissingBaseTensor`] / [`LoraError::Shape`] when a module's
/// tensor is absent or shaped otherwise; [`LoraError::Read`] for unreadable
/// tensors or an architecture without name tables; [`LoraError::Quant`] /
/// [`LoraError::Convert`] when a tensor cannot be (de)quantized (e.g. a row
/// length that is not a multiple of the requested type's block); [`LoraError::NonFinite`] under
/// `safe_merge`; [`LoraError::Sink`] from the writer.
pub fn merge_gguf_base<S: TensorSink>(
    base: &Model,
    adapters: &[(&Adapter, f32)],
    mut writer: S,
    options: &GgufMergeOptions,
) -> Result<(GgufMergeReport, S::Output), LoraError> {
    let targets = Targets::llama_cpp(base, adapters)?;
    // Validates the requantization type against every merged tensor first.
    output_infos(base, &targets, options)?;
    let src = base.source();
    let mut report = GgufMergeReport::default();
    let sink = |tensor: &str, source: BoxError| LoraError::Sink {
        tensor: tensor.to_owned(),
        source,
    };
    for (i, info) in src.tensor_infos().iter().enumerate() {
        let t = src.load(i).map_err(LoraError::Read)?;
        let bytes = t.view().data();
        let Some(steps) = targets.0.get(&i) else {
            writer
                .write_tensor(&info.name, bytes)
                .map_err(|e| sink(&info.name, Box::new(e)))?;
            report.copied += 1;
            continue;
        };
        let cols = info.shape.row_len();
        let w = merged_values(info, t.view(), steps, adapters, options.scale, false)?;
        if options.safe_merge && !w.iter().all(|x| x.is_finite()) {
            return Err(LoraError::NonFinite(info.name.clone()));
        }
        let dtype = options.requant.unwrap_or(info.dtype);
        let out = from_f32(&info.name, dtype, &w, cols)?;
        let back = to_f32(&info.name, dtype, &info.shape, &out)?;
        let (mut err, mut norm) = (0f64, 0f64);
        for (&a, &b) in back.iter().zip(&w) {
            err += (f64::from(a) - f64::from(b)).powi(2);
            norm += f64::from(b).powi(2);
        }
        writer
            .write_tensor(&info.name, &out)
            .map_err(|e| sink(&info.name, Box::new(e)))?;
        report.merged.push(GgufMergedTensor {
            name: info.name.clone(),
            base_dtype: info.dtype,
            dtype,
            rel_rmse: if norm > 0.0 { (err / norm).sqrt() } else { 0.0 },
        });
    }
    let output = writer.finish().map_err(|e| sink("(finish)", Box::new(e)))?;
    Ok((report, output))
}
