//! Conversion plans between the Hugging Face and GGUF layouts of the
//! architectures in [`crate::arch`]: tensor names both ways, the q/k rope
//! permutation and its inverse, config.json <-> GGUF metadata, tokenizer
//! metadata, llama3 rope factors.

use weightkit_core::{DType, Metadata, Shape, TensorInfo, Value};

use crate::arch::{
    self, GgufOptions, ModelConfig, TensorNames, TokenizerFiles, permute_rows, unpermute_rows,
};
use crate::convert::{Plan, TensorPlan, Transform};
use crate::error::IoError;
use crate::source::{Format, Model};

fn module(e: arch::ArchError) -> IoError {
    IoError::Module(Box::new(e))
}

/// The row permutation `permute_rows` applies to a `[rows, cols]` matrix,
/// as "output row i = input row map[i]" (computed by permuting row indices).
fn row_map(rows: usize, n_head: usize, inverse: bool) -> Result<Vec<usize>, IoError> {
    let ids: Vec<u8> = (0..rows as u64).flat_map(u64::to_le_bytes).collect();
    let moved = if inverse {
        unpermute_rows(&ids, 8, rows, 1, n_head)
    } else {
        permute_rows(&ids, 8, rows, 1, n_head)
    }
    .map_err(module)?;
    Ok(moved
        .chunks_exact(8)
        .map(|c| {
            let mut b = [0u8; 8];
            b.copy_from_slice(c);
            u64::from_le_bytes(b) as usize
        })
        .collect())
}

fn cast_to(dtype: Option<DType>, from: DType) -> DType {
    match dtype {
        Some(d) if from.is_float() => d,
        _ => from,
    }
}

/// Options for [`hf_to_gguf_plan`].
#[derive(Clone, Debug, Default)]
pub struct GgufPlanOptions {
    /// Cast float tensors to this type (F32/F16/BF16); `None` keeps them.
    pub dtype: Option<DType>,
    /// `general.name` (the model directory's name if `None`).
    pub name: Option<String>,
    /// `tokenizer.ggml.pre` for byte-level BPE vocabularies (see
    /// [`arch::tokenizer`]).
    pub pre: Option<String>,
}

/// Plans Hugging Face (names, layout, config.json, tokenizer files) ->
/// GGUF as `convert_hf_to_gguf.py` writes it.
pub fn hf_to_gguf_plan(model: &Model, opts: &GgufPlanOptions) -> Result<Plan, IoError> {
    let config = model.config().ok_or_else(|| IoError::UnknownFormat {
        path: model.path().to_path_buf(),
        reason: "a Hugging Face checkpoint needs its config.json to become GGUF".into(),
    })?;
    let cfg = ModelConfig::from_hf_json(config).map_err(module)?;
    let names = TensorNames::from_config(&cfg).map_err(module)?;
    let src = model.source();
    let mut tensors = Vec::with_capacity(src.tensor_infos().len());
    for (i, info) in src.tensor_infos().iter().enumerate() {
        let Some(g) = names.to_gguf(&info.name).map_err(module)? else {
            continue;
        };
        let transform = match g.permute_heads {
            Some(n_head) => {
                let rows = info.shape.dims().first().copied().unwrap_or(1);
                Transform::PermuteRows(row_map(rows, n_head, false)?)
            }
            None => Transform::None,
        };
        // convert_hf_to_gguf.py: "Most of the codebase that takes in 1D
        // tensors or norms only handles F32 tensors" (whatever --outtype).
        let dtype = if info.dtype.is_float()
            && (info.shape.rank() <= 1 || g.name.ends_with("_norm.weight"))
        {
            DType::F32
        } else {
            cast_to(opts.dtype, info.dtype)
        };
        tensors.push(TensorPlan {
            source: i,
            out: TensorInfo::new(g.name, dtype, info.shape.clone()),
            transform,
            importance: None,
            inline: None,
        });
    }
    if let Some(factors) = cfg.rope_freqs() {
        let bytes: Vec<u8> = factors.iter().flat_map(|f| f.to_le_bytes()).collect();
        tensors.push(TensorPlan {
            source: usize::MAX,
            out: TensorInfo::new("rope_freqs.weight", DType::F32, Shape::new([factors.len()])),
            transform: Transform::None,
            importance: None,
            inline: Some(bytes),
        });
    }
    let dir_name = model
        .dir()
        .and_then(|d| d.file_name())
        .map(|n| n.to_string_lossy().into_owned());
    let total: u64 = src
        .tensor_infos()
        .iter()
        .filter_map(|t| t.elem_count().ok())
        .map(|n| n as u64)
        .sum();
    // general.file_type as the converter's --outtype sets it: the type of
    // the 2-D weights (F32 0, F16 1, BF16 32).
    let weight_type = tensors
        .iter()
        .filter(|t| t.out.shape.rank() >= 2)
        .map(|t| t.out.dtype)
        .next();
    let file_type = match weight_type {
        Some(DType::F32) => Some(0),
        Some(DType::F16) => Some(1),
        Some(DType::BF16) => Some(32),
        _ => None,
    };
    let gopts = GgufOptions {
        name: opts.name.clone().or(dir_name),
        size_label: Some(arch::size_label(total)),
        file_type,
    };
    let files = match model.dir() {
        Some(d) => TokenizerFiles::read_dir(d).map_err(module)?,
        None => TokenizerFiles::default(),
    };
    let metadata =
        arch::hf_to_gguf_metadata(&cfg, &files, &gopts, opts.pre.as_deref()).map_err(module)?;
    Ok(Plan {
        tensors,
        metadata,
        config: None,
    })
}

/// Plans GGUF -> Hugging Face: names, inverse permutation, `config.json`.
pub fn gguf_to_hf_plan(model: &Model, dtype: Option<DType>) -> Result<Plan, IoError> {
    let src = model.source();
    let mut cfg = ModelConfig::from_gguf_metadata(
        src.metadata(),
        src.tensor_infos().iter().map(|t| t.name.as_str()),
    )
    .map_err(module)?;
    if let Some(i) = src.position("rope_freqs.weight") {
        let t = src.load(i)?;
        if let Ok(f) = t.view().to_f32_vec() {
            cfg.infer_llama3_rope_scaling(&f);
        }
    }
    let names = TensorNames::from_config(&cfg).map_err(module)?;
    let mut tensors = Vec::with_capacity(src.tensor_infos().len());
    for (i, info) in src.tensor_infos().iter().enumerate() {
        let Some(h) = names.to_hf(&info.name).map_err(module)? else {
            continue;
        };
        let transform = match h.unpermute_heads {
            Some(n_head) => {
                let rows = info.shape.dims().first().copied().unwrap_or(1);
                Transform::PermuteRows(row_map(rows, n_head, true)?)
            }
            None => Transform::None,
        };
        // Hugging Face formats hold no ggml blocks: quantized tensors are
        // dequantized, to f32 (exact) unless a float type is asked for.
        let out_dtype = if info.dtype.is_quantized() {
            dtype.unwrap_or(DType::F32)
        } else {
            cast_to(dtype, info.dtype)
        };
        tensors.push(TensorPlan {
            source: i,
            out: TensorInfo::new(h.name, out_dtype, info.shape.clone()),
            transform,
            importance: None,
            inline: None,
        });
    }
    let metadata: Metadata = [("format", Value::from("pt"))].into_iter().collect();
    Ok(Plan {
        tensors,
        metadata,
        config: Some(cfg.to_hf_config()),
    })
}

/// The plan `weightkit convert` uses: HF -> GGUF and GGUF -> HF translate
/// layouts (unless `keep_names`); every other pair keeps names and layout.
pub fn conversion_plan(
    model: &Model,
    to: Format,
    dtype: Option<DType>,
    keep_names: bool,
) -> Result<Plan, IoError> {
    match (model.format(), to) {
        (Format::Gguf, Format::Gguf) => crate::convert::identity_plan(model, dtype),
        (Format::Gguf, _) if !keep_names => gguf_to_hf_plan(model, dtype),
        (_, Format::Gguf) if !keep_names && model.config().is_some() => hf_to_gguf_plan(
            model,
            &GgufPlanOptions {
                dtype,
                ..GgufPlanOptions::default()
            },
        ),
        _ => crate::convert::identity_plan(model, dtype),
    }
}
