//! LoRA initializations as PEFT does them.
//!
//! A LoRA adapter on a weight `W` (`out x in`) adds `scaling * B A` with
//! `A` `r x in` and `B` `out x r`.
//!
//! - [`LoraInit::Default`] is PEFT's `init_lora_weights=True`:
//!   `nn.init.kaiming_uniform_(A, a=math.sqrt(5))` and `nn.init.zeros_(B)`,
//!   so the adapter starts as a no-op.
//! - [`LoraInit::Gaussian`] is `init_lora_weights="gaussian"`:
//!   `nn.init.normal_(A, std=1 / r)` and `B = 0`.
//! - [`pissa`] is `init_lora_weights="pissa"` (Meng et al., 2024): with
//!   `W = U S V^T`, `A = diag(sqrt(S_r / scaling)) V_r^T`, `B = U_r
//!   diag(sqrt(S_r / scaling))`, and the base weight is replaced by the
//!   residual `W - scaling * B A`, so that the adapted layer still computes
//!   `W` exactly (up to rounding of the stored tensors).
//!
//! In torch-exact mode `lora_init` draws what `kaiming_uniform_` /
//! `normal_` draw at the generator's current state. PEFT itself first
//! builds `nn.Linear(in, r)` and `nn.Linear(r, out)`, whose constructors
//! draw their own Kaiming weights; to replay a whole PEFT model creation,
//! draw those two tensors first (see the crate's tests).

use weightkit_core::{DType, Tensor, TensorView};

use crate::error::InitError;
use crate::float::Float;
use crate::linalg::{Mat, top_svd};
use crate::rng::{self, Rng};
use crate::scheme::{Init, Kaiming};

/// PEFT's random LoRA initializations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum LoraInit {
    /// `init_lora_weights=True`: A Kaiming-uniform with `a = sqrt(5)`
    /// (bound `1 / sqrt(in)`), B zero.
    #[default]
    Default,
    /// `init_lora_weights="gaussian"`: A normal with std `1 / r`, B zero.
    Gaussian,
}

/// A LoRA pair: `A` is `r x in`, `B` is `out x r`.
#[derive(Debug, Clone)]
pub struct LoraWeights {
    /// The down projection, `r x in_features`.
    pub a: Tensor,
    /// The up projection, `out_features x r`.
    pub b: Tensor,
}

/// The initializer PEFT applies to `lora_A` for `init`.
pub fn lora_a_init(init: LoraInit, r: usize) -> Init {
    match init {
        LoraInit::Default => Init::KaimingUniform(Kaiming {
            a: 5.0f64.sqrt(),
            ..Kaiming::default()
        }),
        LoraInit::Gaussian => Init::Normal {
            mean: 0.0,
            std: 1.0 / r as f64,
        },
    }
}

/// A fresh LoRA pair for a layer with `in_features` inputs and
/// `out_features` outputs, in `dtype` (F32, F16 or BF16).
pub fn lora_init(
    rng: &mut Rng,
    init: LoraInit,
    r: usize,
    in_features: usize,
    out_features: usize,
    dtype: DType,
) -> Result<LoraWeights, InitError> {
    if r == 0 {
        return Err(InitError::BadLoraRank {
            r,
            rows: out_features,
            cols: in_features,
        });
    }
    let a = lora_a_init(init, r).tensor(rng, [r, in_features], dtype)?;
    let b = Init::Zeros.tensor(rng, [out_features, r], dtype)?;
    Ok(LoraWeights { a, b })
}

/// How PiSSA finds the top singular triplets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum SvdMethod {
    /// A full one-sided Jacobi SVD in f64 (PEFT's `"pissa"`, which calls
    /// `torch.linalg.svd`). Cost grows as `min(m, n)^2 * max(m, n)` per
    /// sweep: seconds up to about 1024 on the smaller side, minutes at
    /// 4096; use `Randomized` for large layers.
    #[default]
    Exact,
    /// Randomized subspace iteration with `niter` power iterations
    /// (PEFT's `"pissa_niter_K"`, which calls `torch.svd_lowrank`). Uses
    /// `r + 8` sketch columns (capped at `min(m, n)`) and draws the sketch
    /// from the generator.
    Randomized {
        /// Power iterations; 2 to 4 is typical.
        niter: usize,
    },
}

/// PiSSA's output: the adapter pair and the residual base weight.
#[derive(Debug, Clone)]
pub struct Pissa {
    /// `r x in`.
    pub a: Tensor,
    /// `out x r`.
    pub b: Tensor,
    /// `W - scaling * B A`, `out x in`, to replace the base weight.
    pub residual: Tensor,
    /// The top `r` singular values of `W`, largest first.
    pub singular_values: Vec<f64>,
}

/// PiSSA initialization of a rank-`r` adapter for `weight` (`out x in`,
/// any float dtype), with the adapter's `scaling` (`lora_alpha / r`, or
/// `lora_alpha / sqrt(r)` with rsLoRA). Outputs are in `dtype`.
///
/// `rng` is only drawn from by [`SvdMethod::Randomized`].
pub fn pissa(
    weight: &TensorView<'_>,
    r: usize,
    scaling: f64,
    method: SvdMethod,
    rng: &mut Rng,
    dtype: DType,
) -> Result<Pissa, InitError> {
    let ty = Float::of(dtype)?;
    let bad = || InitError::BadWeight {
        dtype: weight.dtype(),
        shape: weight.shape().dims().to_vec(),
    };
    let &[m, n] = weight.shape().dims() else {
        return Err(bad());
    };
    if !weight.dtype().is_float() {
        return Err(bad());
    }
    if r == 0 || r > m.min(n) {
        return Err(InitError::BadLoraRank {
            r,
            rows: m,
            cols: n,
        });
    }
    if !(scaling.is_finite() && scaling > 0.0) {
        return Err(InitError::InvalidParameter {
            scheme: "pissa",
            name: "scaling",
            value: scaling,
            reason: "must be finite and > 0",
        });
    }
    let w = weight.to_f32_vec().map_err(|_| bad())?;
    if w.iter().any(|x| !x.is_finite()) {
        return Err(InitError::InvalidParameter {
            scheme: "pissa",
            name: "weight",
            value: f64::NAN,
            reason: "contains NaN or infinity",
        });
    }
    let wm = Mat::from_row_major(m, n, &w);
    let (u, s, v) = match method {
        SvdMethod::Exact => top_svd(&wm, r, None)?,
        SvdMethod::Randomized { niter } => {
            let l = (r + 8).min(m.min(n));
            let mut omega = vec![0f32; n * l];
            rng.normal_into(&mut omega, 0.0, 1.0, Float::F32);
            let omega = Mat::from_row_major(n, l, &omega);
            top_svd(&wm, r, Some((&omega, niter)))?
        }
    };
    let root: Vec<f64> = s.iter().map(|&x| (x / scaling).sqrt()).collect();
    let mut a = vec![0f32; r * n];
    for k in 0..r {
        for j in 0..n {
            a[k * n + j] = ty.round_f64(root[k] * v.at(j, k));
        }
    }
    let mut b = vec![0f32; m * r];
    for i in 0..m {
        for k in 0..r {
            b[i * r + k] = ty.round_f64(u.at(i, k) * root[k]);
        }
    }
    // Residual against the stored (rounded) A and B, in f64.
    let mut res = vec![0f32; m * n];
    for i in 0..m {
        for j in 0..n {
            let ba: f64 = (0..r)
                .map(|k| f64::from(b[i * r + k]) * f64::from(a[k * n + j]))
                .sum();
            res[i * n + j] = ty.round_f64(f64::from(w[i * n + j]) - scaling * ba);
        }
    }
    Ok(Pissa {
        a: Tensor::from_bytes(dtype, [r, n], rng::encode(&a, ty)?)?,
        b: Tensor::from_bytes(dtype, [m, r], rng::encode(&b, ty)?)?,
        residual: Tensor::from_bytes(dtype, [m, n], rng::encode(&res, ty)?)?,
        singular_values: s,
    })
}
