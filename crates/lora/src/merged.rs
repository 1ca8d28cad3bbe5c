//! The merge as a tensor source: a base model seen through adapters.
//!
//! [`merged_model`] wraps an opened base (any format the io crate reads,
//! including llama.cpp-named GGUF models) so that reading an adapted tensor
//! computes it merged, one tensor at a time, and every other tensor is the
//! base's own, zero-copy. Conversion and quantization plans run over the
//! result unchanged: `export` is "merge, then the io crate's quantize pass",
//! in one streaming pass and with one tensor in memory.
//!
//! This module also holds what [`crate::merge_into`] and
//! [`crate::merge_gguf_base`] share: which base tensors each adapter changes
//! (`Targets`) and the merged value of one tensor (`merged_values`).

use std::collections::HashMap;

use weightkit_core::{DType, Shape, Tensor, TensorInfo, TensorView, convert};
use weightkit_io::convert::Transform;
use weightkit_io::plan::gguf_to_hf_plan;
use weightkit_io::{Format, IoError, Model, Overlay, Source};

use crate::adapter::Adapter;
use crate::error::LoraError;
use crate::merge::{MergeOptions, apply_bias, apply_module};

/// One step of an adapted tensor.
#[derive(Clone, Debug)]
pub(crate) enum Action {
    /// `W += scale * scaling * B @ A` of module `m` (DoRA included).
    Lora(usize),
    /// `bias += scaling * lora_B.bias` of module `module` (`lora_bias`),
    /// after replacing the base bias by saved tensor `replace` if any
    /// (`bias = "all"`: PEFT loads the trained bias, then merges).
    Bias {
        module: usize,
        replace: Option<usize>,
    },
    /// The adapter's saved tensor (`modules_to_save`, trained biases).
    Replace(usize),
}

/// What happens to one adapted base tensor: the layout change into Hugging
/// Face order (llama.cpp-named GGUF bases: the io crate's GGUF -> HF
/// transform; otherwise none) and `(adapter, action)` steps, in order.
#[derive(Clone, Debug)]
pub(crate) struct Steps {
    pub(crate) transform: Transform,
    pub(crate) actions: Vec<(usize, Action)>,
}

impl Steps {
    /// Whether a LoRA delta changes the tensor (rather than only a saved
    /// tensor replacing it).
    pub(crate) fn adapts(&self) -> bool {
        self.actions
            .iter()
            .any(|(_, a)| matches!(a, Action::Lora(_) | Action::Bias { .. }))
    }
}

/// The adapted base tensors, by index in the base.
#[derive(Clone, Debug, Default)]
pub(crate) struct Targets(pub(crate) HashMap<usize, Steps>);

fn is_mergeable(dtype: DType) -> bool {
    matches!(dtype, DType::F32 | DType::F16 | DType::BF16)
}

/// Checks that `base` holds `name` with the shape the adapter implies
/// (`expected`) and a dtype the merge can widen to f32; its index.
fn check_base(
    base: &dyn Source,
    module: &str,
    name: &str,
    expected: &[usize],
) -> Result<usize, LoraError> {
    let (i, info) = base
        .position(name)
        .and_then(|p| base.tensor_infos().get(p).map(|info| (p, info)))
        .ok_or_else(|| LoraError::MissingBaseTensor {
            module: module.to_owned(),
            tensor: name.to_owned(),
        })?;
    if info.shape.dims() != expected {
        return Err(LoraError::Shape {
            name: name.to_owned(),
            expected: expected.to_vec(),
            found: info.shape.dims().to_vec(),
        });
    }
    if !is_mergeable(info.dtype) {
        return Err(LoraError::Unsupported(format!(
            "base tensor `{name}` has dtype {:?} (f32, f16 and bf16 only)",
            info.dtype
        )));
    }
    Ok(i)
}

impl Targets {
    /// The targets in a base that has the adapters' (Hugging Face) tensor
    /// names: LoRA deltas, `lora_bias`, `modules_to_save` and trained
    /// biases, each checked against the base's shape and dtype.
    pub(crate) fn by_name(
        base: &dyn Source,
        adapters: &[(&Adapter, f32)],
    ) -> Result<Targets, LoraError> {
        let mut steps: HashMap<usize, Steps> = HashMap::new();
        for (k, (adapter, _)) in adapters.iter().enumerate() {
            let config = adapter.config();
            let mut own: HashMap<usize, Action> = HashMap::new();
            for (m, module) in adapter.modules().iter().enumerate() {
                let i = check_base(
                    base,
                    &module.module,
                    &module.target,
                    &module.expected_shape(config),
                )?;
                own.insert(i, Action::Lora(m));
                if module.bias.is_some() {
                    // PEFT: "Impossible to merge LoRA with `lora_bias=True`
                    // because the base layer has no bias."
                    let b = check_base(
                        base,
                        &module.module,
                        &module.bias_target(),
                        &[module.b_rows],
                    )?;
                    own.insert(
                        b,
                        Action::Bias {
                            module: m,
                            replace: None,
                        },
                    );
                }
            }
            for (s, (name, shape, _)) in adapter.saved_tensors().iter().enumerate() {
                let i = check_base(base, name, name, shape)?;
                match own.get_mut(&i) {
                    Some(Action::Bias { replace, .. }) if replace.is_none() => *replace = Some(s),
                    Some(_) => {
                        return Err(LoraError::Unsupported(format!(
                            "`{name}` is both LoRA-adapted and saved in full by the adapter"
                        )));
                    }
                    None => {
                        own.insert(i, Action::Replace(s));
                    }
                }
            }
            for (i, action) in own {
                steps
                    .entry(i)
                    .or_insert_with(|| Steps {
                        transform: Transform::None,
                        actions: Vec::new(),
                    })
                    .actions
                    .push((k, action));
            }
        }
        Ok(Targets(steps))
    }

    /// The targets in a GGUF model with llama.cpp's tensor names, found
    /// through the io crate's GGUF -> HF plan (names and the q/k rope
    /// permutation). LoRA deltas only: adapters that replace or bias base
    /// tensors are refused.
    pub(crate) fn llama_cpp(
        base: &Model,
        adapters: &[(&Adapter, f32)],
    ) -> Result<Targets, LoraError> {
        if base.format() != Format::Gguf {
            return Err(LoraError::Unsupported(format!(
                "llama.cpp tensor names need a GGUF base, got {}",
                base.format().name()
            )));
        }
        for (adapter, _) in adapters {
            if let Some((name, _, _)) = adapter.saved_tensors().first() {
                return Err(LoraError::Unsupported(format!(
                    "`{name}`: adapters that replace base tensors (modules_to_save, trained \
                     biases) cannot be merged into a GGUF base yet"
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
                    .or_insert_with(|| Steps {
                        transform: transform.clone(),
                        actions: Vec::new(),
                    })
                    .actions
                    .push((k, Action::Lora(m)));
            }
        }
        Ok(Targets(steps))
    }

    /// Whether `base` is a GGUF model with llama.cpp's tensor names rather
    /// than the adapters' Hugging Face names (a `--keep-names` GGUF has
    /// the latter).
    pub(crate) fn has_llama_cpp_names(base: &Model, adapters: &[(&Adapter, f32)]) -> bool {
        base.format() == Format::Gguf
            && adapters
                .iter()
                .flat_map(|(a, _)| a.modules())
                .any(|m| base.source().position(&m.target).is_none())
    }

    /// [`Targets::llama_cpp`] or [`Targets::by_name`], as `base`'s names
    /// say.
    pub(crate) fn for_model(
        base: &Model,
        adapters: &[(&Adapter, f32)],
    ) -> Result<Targets, LoraError> {
        if Targets::has_llama_cpp_names(base, adapters) {
            Targets::llama_cpp(base, adapters)
        } else {
            Targets::by_name(base.source(), adapters)
        }
    }
}

/// Dequantizes (or widens) a tensor's bytes to f32.
pub(crate) fn to_f32(
    name: &str,
    dtype: DType,
    shape: &Shape,
    bytes: &[u8],
) -> Result<Vec<f32>, LoraError> {
    let core = |source| LoraError::Convert {
        name: name.to_owned(),
        source,
    };
    let mut out = vec![0f32; shape.elem_count().map_err(core)?];
    // Floats too: in parallel chunks, so a large tensor's pages fault in
    // and widen on every core.
    weightkit_quant::dequantize_parallel(dtype, bytes, &mut out).map_err(|source| {
        LoraError::Quant {
            name: name.to_owned(),
            source,
        }
    })?;
    Ok(out)
}

/// Quantizes (or narrows) f32 rows of `cols` values to `dtype`.
pub(crate) fn from_f32(
    name: &str,
    dtype: DType,
    values: &[f32],
    cols: usize,
) -> Result<Vec<u8>, LoraError> {
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

/// The value of adapted tensor `info` (whose stored value is `view`) after
/// `steps`, in f32 and in the tensor's own layout: widened or dequantized,
/// put in Hugging Face row order, changed by each adapter in turn (adapter
/// `k` scaled by its weight times `scale`, subtracted when `unmerge`), put
/// back.
pub(crate) fn merged_values(
    info: &TensorInfo,
    view: TensorView<'_>,
    steps: &Steps,
    adapters: &[(&Adapter, f32)],
    scale: f32,
    unmerge: bool,
) -> Result<Vec<f32>, LoraError> {
    let widen = || -> Result<Vec<f32>, LoraError> {
        let wide = to_f32(&info.name, view.dtype(), &info.shape, view.data())?;
        match &steps.transform {
            Transform::None => Ok(wide),
            t => Ok(t.apply(&wide, info).map_err(LoraError::Read)?.into_owned()),
        }
    };
    // The tensor's current value: the base's until a step replaces it.
    let mut values: Option<Vec<f32>> = None;
    for (k, action) in &steps.actions {
        let (adapter, weight) = adapters[*k];
        let s = scale * weight;
        match action {
            Action::Lora(m) => {
                if values.is_none() {
                    values = Some(widen()?);
                }
                let w = values.get_or_insert_with(Vec::new);
                apply_module(adapter.config(), &adapter.modules()[*m], w, s, unmerge);
            }
            Action::Bias { module, replace } => {
                if let Some(r) = replace {
                    values = Some(adapter.saved_tensors()[*r].2.clone());
                } else if values.is_none() {
                    values = Some(widen()?);
                }
                let b = values.get_or_insert_with(Vec::new);
                apply_bias(&adapter.modules()[*module], b, s, unmerge);
            }
            Action::Replace(r) => {
                values = Some(adapter.saved_tensors()[*r].2.clone());
            }
        }
    }
    let values = match values {
        Some(v) => v,
        None => widen()?,
    };
    match &steps.transform {
        Transform::None => Ok(values),
        t => Ok(t
            .inverse()
            .apply(&values, info)
            .map_err(LoraError::Read)?
            .into_owned()),
    }
}

/// The type merged tensors are read as from a [`merged_model`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum MergedDType {
    /// f32, exactly as merged: for a pass that converts or quantizes them
    /// anyway (one rounding instead of two).
    #[default]
    F32,
    /// The base tensor's own type: float tensors rounded once (what
    /// [`crate::merge_into`] writes), quantized ones requantized to their
    /// type (what [`crate::merge_gguf_base`] writes by default).
    Base,
}

/// The overlay that computes merged tensors.
#[derive(Debug)]
struct MergeOverlay {
    adapters: Vec<(Adapter, f32)>,
    targets: Targets,
    infos: Vec<TensorInfo>,
    options: MergeOptions,
}

impl Overlay for MergeOverlay {
    fn tensor_infos(&self) -> &[TensorInfo] {
        &self.infos
    }

    fn load(&self, base: &dyn Source, i: usize) -> Result<Option<Tensor>, IoError> {
        let Some(steps) = self.targets.0.get(&i) else {
            return Ok(None);
        };
        let lora = |e: LoraError| IoError::Module(Box::new(e));
        let base_info = base
            .tensor_infos()
            .get(i)
            .ok_or_else(|| IoError::Module(format!("no base tensor {i}").into()))?;
        let loaded = base.load(i)?;
        let pairs: Vec<(&Adapter, f32)> = self.adapters.iter().map(|(a, w)| (a, *w)).collect();
        let values = merged_values(
            base_info,
            loaded.view(),
            steps,
            &pairs,
            self.options.scale,
            false,
        )
        .map_err(lora)?;
        drop(loaded);
        if self.options.safe_merge && !values.iter().all(|x| x.is_finite()) {
            return Err(lora(LoraError::NonFinite(base_info.name.clone())));
        }
        let info = &self.infos[i];
        let cols = info.shape.row_len();
        let bytes = from_f32(&info.name, info.dtype, &values, cols).map_err(lora)?;
        drop(values);
        if self.options.safe_merge && info.dtype != DType::F32 {
            let back = to_f32(&info.name, info.dtype, &info.shape, &bytes).map_err(lora)?;
            if !back.iter().all(|x| x.is_finite()) {
                return Err(lora(LoraError::NonFinite(info.name.clone())));
            }
        }
        Tensor::from_bytes(info.dtype, info.shape.clone(), bytes)
            .map(Some)
            .map_err(IoError::Core)
    }
}

/// What [`merged_model`] merges.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct MergedTensors {
    /// Base tensors changed by a LoRA delta (base names, file order).
    pub merged: Vec<String>,
    /// Base tensors replaced by the adapters' saved tensors
    /// (`modules_to_save`, trained biases).
    pub replaced: Vec<String>,
    /// Whether the base has llama.cpp's GGUF tensor names (the adapters'
    /// tensors were found through the name tables).
    pub llama_cpp_names: bool,
}

/// `base` seen through `adapters` (each with its weight, applied in turn
/// with `options.scale`, as [`crate::merge_into`]): reading an adapted
/// tensor merges it then (in f32, the base's layout); every other tensor is
/// the base's. The adapters' tensors are found by name, or, in a GGUF model
/// with llama.cpp's names, through the Hugging Face <-> GGUF name tables
/// (as [`crate::merge_gguf_base`]). Merged tensors are read as `dtype`
/// says; `options.safe_merge` makes a non-finite merged tensor a read error.
///
/// Everything is checked here, before any tensor is read: the adapters'
/// targets exist with the shapes they imply and a mergeable type.
pub fn merged_model(
    base: Model,
    adapters: Vec<(Adapter, f32)>,
    options: &MergeOptions,
    dtype: MergedDType,
) -> Result<(Model, MergedTensors), LoraError> {
    let pairs: Vec<(&Adapter, f32)> = adapters.iter().map(|(a, w)| (a, *w)).collect();
    let llama_cpp_names = Targets::has_llama_cpp_names(&base, &pairs);
    let targets = Targets::for_model(&base, &pairs)?;
    drop(pairs);
    let mut infos = base.source().tensor_infos().to_vec();
    let mut report = MergedTensors {
        llama_cpp_names,
        ..MergedTensors::default()
    };
    let mut adapted: Vec<(usize, bool)> = targets.0.iter().map(|(&i, s)| (i, s.adapts())).collect();
    adapted.sort_unstable();
    for (i, adapts) in adapted {
        if dtype == MergedDType::F32 {
            infos[i].dtype = DType::F32;
        }
        let name = infos[i].name.clone();
        if adapts {
            report.merged.push(name);
        } else {
            report.replaced.push(name);
        }
    }
    let overlay = MergeOverlay {
        adapters,
        targets,
        infos,
        options: options.clone(),
    };
    let model = base.with_overlay(overlay).map_err(LoraError::Read)?;
    Ok((model, report))
}
