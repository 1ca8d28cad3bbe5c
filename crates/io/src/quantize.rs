//! Quantization to GGUF with llama-quantize's named mixtures, in one
//! streaming pass (read -> f32 -> quantize with the tensor's importance
//! vector -> write).

use std::path::Path;

use weightkit_core::{TensorInfo, Value};

use crate::convert::{ConvertOptions, ConvertReport, Plan, Progress, run_plan_with_progress};
use crate::error::IoError;
use crate::imatrix::ImportanceMatrix;
use crate::mixture::{self, Mixture, ModelDesc, Options, TensorDesc};
use crate::source::{Format, Model};

/// `GGML_QNT_VERSION`: written as `general.quantization_version`.
pub const QUANTIZATION_VERSION: u32 = 2;

/// Quantization options (llama-quantize's flags).
#[derive(Debug, Default)]
pub struct QuantizeOptions {
    /// Type-choice options: `--pure`, `--tensor-type` overrides,
    /// output/embedding types, `--allow-requantize`, `--leave-output-tensor`.
    pub choice: Options,
    /// `--imatrix`.
    pub imatrix: Option<ImportanceMatrix>,
}

/// What quantizing did: the conversion report and each tensor's type.
#[derive(Debug)]
pub struct QuantizeReport {
    /// The streaming pass.
    pub convert: ConvertReport,
    /// Output tensors and their types.
    pub tensors: Vec<TensorInfo>,
}

/// Turns a plan whose tensors already carry GGUF names, layout and
/// metadata into a quantization plan for `mixture`.
pub fn quantize_plan(
    mut plan: Plan,
    mixture: Mixture,
    opts: &QuantizeOptions,
) -> Result<Plan, IoError> {
    let module = |e: mixture::MixtureError| IoError::Module(Box::new(e));
    let model = ModelDesc::from_metadata(&plan.metadata).map_err(module)?;
    let mut choice_opts = opts.choice.clone();
    choice_opts.has_imatrix = opts.imatrix.as_ref().is_some_and(|m| !m.is_empty());
    let descs: Vec<TensorDesc<'_>> = plan
        .tensors
        .iter()
        .map(|t| TensorDesc::new(&t.out.name, t.out.shape.dims(), t.out.dtype))
        .collect();
    let choices = mixture::choose_types(mixture, &model, &descs, &choice_opts).map_err(module)?;
    drop(descs);
    for (t, c) in plan.tensors.iter_mut().zip(&choices) {
        t.out.dtype = c.target;
        if c.target.is_quantized() && c.converts() {
            let w = match &opts.imatrix {
                Some(m) => m
                    .for_tensor(&t.out.name, t.out.shape.dims())
                    .map_err(|e| IoError::Module(Box::new(e)))?
                    .map(<[f32]>::to_vec),
                None => None,
            };
            if c.requires_imatrix && w.is_none() {
                return Err(IoError::Module(
                    format!(
                        "tensor `{}`: {} needs an importance matrix",
                        t.out.name, c.target
                    )
                    .into(),
                ));
            }
            t.importance = w;
        }
    }
    plan.metadata.insert(
        "general.quantization_version",
        Value::U32(QUANTIZATION_VERSION),
    );
    plan.metadata
        .insert("general.file_type", Value::U32(mixture.ftype()));
    Ok(plan)
}

/// Quantizes a GGUF-named `model` (a GGUF file, or any source whose plan
/// was translated to GGUF names first) into `out` with `mixture`.
pub fn quantize_with_plan(
    model: &Model,
    plan: Plan,
    out: &Path,
    mixture: Mixture,
    opts: &QuantizeOptions,
) -> Result<QuantizeReport, IoError> {
    quantize_with_progress(model, plan, out, mixture, opts, &crate::convert::NoProgress)
}

/// [`quantize_with_plan`], reporting each tensor to `progress`.
pub fn quantize_with_progress(
    model: &Model,
    plan: Plan,
    out: &Path,
    mixture: Mixture,
    opts: &QuantizeOptions,
    progress: &dyn Progress,
) -> Result<QuantizeReport, IoError> {
    let plan = quantize_plan(plan, mixture, opts)?;
    let tensors = plan.tensors.iter().map(|t| t.out.clone()).collect();
    let convert = run_plan_with_progress(
        model,
        &plan,
        out,
        &ConvertOptions {
            to: Format::Gguf,
            ..ConvertOptions::default()
        },
        progress,
    )?;
    Ok(QuantizeReport { convert, tensors })
}
