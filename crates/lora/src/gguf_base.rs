//! Merging PEFT adapters into a GGUF base model, quantized or not.
//!
//! A PEFT adapter names Hugging Face tensors (`model.layers.0.self_attn.
//! q_proj.weight`) in Hugging Face's layout; a GGUF model has llama.cpp's
//! names (`blk.0.attn_q.weight`) and its q/k rows in the rope order of
//! `convert_hf_to_gguf.py`. The translation is the io crate's GGUF -> HF
//! plan (the same tables `weightkit convert` uses): each adapted GGUF tensor
//! is dequantized to f32, its rows put back in Hugging Face order, changed by
//! [`apply_module`] exactly as in a Hugging Face merge, permuted again and
//! requantized, to its own type or one the caller picks. Every other tensor
//! is copied byte for byte.
//!
//! Requantizing loses precision; the report gives each merged tensor's
//! relative RMS error against the f32 merge, so the caller sees what the
//! round trip cost (for a type that was already lossy this is the fresh
//! quantization of the merged weights, not the error against the original
//! full-precision model, which the GGUF no longer holds).

use std::collections::HashMap;

use weightkit_core::{DType, Shape, TensorInfo, TensorSink, convert};
use weightkit_io::convert::Transform;
use weightkit_io::plan::gguf_to_hf_plan;
use weightkit_io::{Format, Model};

use crate::adapter::Adapter;
use crate::error::{BoxError, LoraError};
use crate::merge::apply_module;

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

/// One adapted base tensor: the layout change into Hugging Face order (the
/// io crate's GGUF -> HF transform) and the `(adapter, module)` pairs to
/// apply, in order.
type Steps = (Transform, Vec<(usize, usize)>);

/// The adapted base tensors, by index.
struct Targets {
    steps: HashMap<usize, Steps>,
}

fn plan(base: &Model, adapters: &[(&Adapter, f32)]) -> Result<Targets, LoraError> {
    if base.format() != Format::Gguf {
        return Err(LoraError::Unsupported(format!(
            "merge_gguf_base needs a GGUF base, got {}",
            base.format().name()
        )));
    }
    for (adapter, _) in adapters {
        if let Some((name, _, _)) = adapter.saved_tensors().first() {
            return Err(LoraError::Unsupported(format!(
                "`{name}`: adapters that replace base tensors (modules_to_save, trained biases) \
                 cannot be merged into a GGUF base yet"
            )));
        }
        if let Some(m) = adapter.modules().iter().find(|m| m.bias.is_some()) {
            return Err(LoraError::Unsupported(format!(
                "`{}`: lora_bias cannot be merged into a GGUF base yet",
                m.module
            )));
        }
    }
    let hf = gguf_to_hf_plan(base, None).map_err(LoraError::Read)?;
    let by_name: HashMap<&str, (usize, &Transform)> = hf
        .tensors
        .iter()
        .map(|t| (t.out.name.as_str(), (t.source, &t.transform)))
        .collect();
    let infos = base.source().tensor_infos();
    let mut steps: HashMap<usize, Steps> = HashMap::new();
    for (k, (adapter, _)) in adapters.iter().enumerate() {
        let config = adapter.config();
        for (m, module) in adapter.modules().iter().enumerate() {
            let Some(&(i, transform)) = by_name.get(module.target.as_str()) else {
                return Err(LoraError::MissingBaseTensor {
                    module: module.module.clone(),
                    tensor: module.target.clone(),
                });
            };
            let info = &infos[i];
            let want = module.expected_shape(config);
            if info.shape.dims() != want {
                return Err(LoraError::Shape {
                    name: format!("{} (GGUF `{}`)", module.target, info.name),
                    expected: want.to_vec(),
                    found: info.shape.dims().to_vec(),
                });
            }
            steps
                .entry(i)
                .or_insert_with(|| (transform.clone(), Vec::new()))
                .1
                .push((k, m));
        }
    }
    Ok(Targets { steps })
}

/// The tensor list [`merge_gguf_base`] writes: the base's, with merged
/// tensors in `options.requant`'s type when one is given (create the GGUF
/// writer from it and the base's metadata).
pub fn gguf_merge_infos(
    base: &Model,
    adapters: &[(&Adapter, f32)],
    options: &GgufMergeOptions,
) -> Result<Vec<TensorInfo>, LoraError> {
    let targets = plan(base, adapters)?;
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
        let mut merged: Vec<usize> = targets.steps.keys().copied().collect();
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

/// Dequantizes (or widens) a tensor's bytes to f32.
fn to_f32(name: &str, dtype: DType, shape: &Shape, bytes: &[u8]) -> Result<Vec<f32>, LoraError> {
    let core = |source| LoraError::Convert {
        name: name.to_owned(),
        source,
    };
    let mut out = vec![0f32; shape.elem_count().map_err(core)?];
    if dtype.is_quantized() {
        weightkit_quant::dequantize(dtype, bytes, &mut out).map_err(|source| LoraError::Quant {
            name: name.to_owned(),
            source,
        })?;
    } else {
        convert::decode_f32(dtype, bytes, &mut out).map_err(core)?;
    }
    Ok(out)
}

/// Quantizes (or narrows) f32 rows of `cols` values to `dtype`.
fn from_f32(name: &str, dtype: DType, values: &[f32], cols: usize) -> Result<Vec<u8>, LoraError> {
    let core = |source| LoraError::Convert {
        name: name.to_owned(),
        source,
    };
    if dtype.is_quantized() {
        weightkit_quant::quantize(dtype, values, cols, None).map_err(|source| LoraError::Quant {
            name: name.to_owned(),
            source,
        })
    } else {
        let mut bytes = vec![0u8; dtype.bytes_for_elems(values.len()).map_err(core)?];
        convert::encode_f32(dtype, values, &mut bytes).map_err(core)?;
        Ok(bytes)
    }
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
    let targets = plan(base, adapters)?;
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
        let Some((transform, steps)) = targets.steps.get(&i) else {
            writer
                .write_tensor(&info.name, bytes)
                .map_err(|e| sink(&info.name, Box::new(e)))?;
            report.copied += 1;
            continue;
        };
        let cols = info.shape.row_len();
        let wide = to_f32(&info.name, info.dtype, &info.shape, bytes)?;
        let mut w = transform
            .apply(&wide, info)
            .map_err(LoraError::Read)?
            .into_owned();
        for &(k, m) in steps {
            let (adapter, weight) = adapters[k];
            let module = &adapter.modules()[m];
            apply_module(
                adapter.config(),
                module,
                &mut w,
                options.scale * weight,
                false,
            );
        }
        let w = transform
            .inverse()
            .apply(&w, info)
            .map_err(LoraError::Read)?
            .into_owned();
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
