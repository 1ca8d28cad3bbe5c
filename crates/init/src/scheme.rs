//! The `torch.nn.init` schemes as one data type, [`Init`].

use weightkit_core::{CoreError, DType, Shape, Tensor};

use crate::detmath;
use crate::error::InitError;
use crate::fan::{FanMode, Nonlinearity, calculate_gain, fan_in_and_fan_out};
use crate::float::Float;
use crate::linalg::{Mat, householder_qr};
use crate::rng::{self, CounterRng, Domain, Rng, block, normal_pair, u01_open32};
use crate::torch::TorchGenerator;

/// Kaiming (He) parameters, with torch's defaults from [`Default`]:
/// `a = 0`, `mode = fan_in`, `nonlinearity = leaky_relu`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Kaiming {
    /// Negative slope of the rectifier (used with `LeakyRelu` only).
    pub a: f64,
    /// Which fan to preserve.
    pub mode: FanMode,
    /// The nonlinearity after the layer.
    pub nonlinearity: Nonlinearity,
}

impl Default for Kaiming {
    fn default() -> Self {
        Kaiming {
            a: 0.0,
            mode: FanMode::FanIn,
            nonlinearity: Nonlinearity::LeakyRelu,
        }
    }
}

/// An initialization scheme: every function of `torch.nn.init`.
///
/// Fields are torch's arguments, with the same meaning and defaults (see
/// the constructors). A scheme is plain data: build it once, apply it to
/// many tensors with [`Init::tensor`] or [`Init::fill`].
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub enum Init {
    /// `uniform_(a, b)`: U(a, b).
    Uniform {
        /// Lower bound.
        a: f64,
        /// Upper bound.
        b: f64,
    },
    /// `normal_(mean, std)`: N(mean, std^2).
    Normal {
        /// Mean.
        mean: f64,
        /// Standard deviation.
        std: f64,
    },
    /// `trunc_normal_(mean, std, a, b)`: N(mean, std^2) conditioned on
    /// `[a, b]`, by torch 2.15's exact rejection sampler.
    TruncNormal {
        /// Mean of the untruncated normal.
        mean: f64,
        /// Standard deviation of the untruncated normal.
        std: f64,
        /// Lower cutoff.
        a: f64,
        /// Upper cutoff.
        b: f64,
    },
    /// `constant_(val)`.
    Constant(f64),
    /// `zeros_()`.
    Zeros,
    /// `ones_()`.
    Ones,
    /// `eye_()`: the identity, for 2-D tensors.
    Eye,
    /// `dirac_(groups)`: identity-preserving convolution kernels, for 3-,
    /// 4- and 5-D tensors.
    Dirac {
        /// Number of convolution groups.
        groups: usize,
    },
    /// `orthogonal_(gain)`: a (semi-)orthogonal matrix from the QR of a
    /// normal matrix, trailing dimensions flattened.
    Orthogonal {
        /// Scale applied to the orthogonal matrix.
        gain: f64,
    },
    /// `sparse_(sparsity, std)`: N(0, std^2) with `ceil(sparsity * rows)`
    /// zeros in every column, for 2-D tensors.
    Sparse {
        /// Fraction of each column set to zero, in `[0, 1]`.
        sparsity: f64,
        /// Standard deviation of the non-zero values.
        std: f64,
    },
    /// `xavier_uniform_(gain)`: U(-a, a), `a = gain * sqrt(6 / (fan_in +
    /// fan_out))`.
    XavierUniform {
        /// Scale factor.
        gain: f64,
    },
    /// `xavier_normal_(gain)`: N(0, std^2), `std = gain * sqrt(2 / (fan_in
    /// + fan_out))`.
    XavierNormal {
        /// Scale factor.
        gain: f64,
    },
    /// `kaiming_uniform_(a, mode, nonlinearity)`: U(-bound, bound), `bound
    /// = gain * sqrt(3 / fan)`.
    KaimingUniform(Kaiming),
    /// `kaiming_normal_(a, mode, nonlinearity)`: N(0, std^2), `std = gain /
    /// sqrt(fan)`.
    KaimingNormal(Kaiming),
}

/// What a scheme draws from, in closed form, for one shape: the exact
/// doubles torch would pass to its kernels.
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub enum Distribution {
    /// Uniform on `[low, high)`.
    Uniform {
        /// Lower bound.
        low: f64,
        /// Upper bound.
        high: f64,
    },
    /// Normal.
    Normal {
        /// Mean.
        mean: f64,
        /// Standard deviation.
        std: f64,
    },
    /// Normal truncated to `[a, b]`.
    TruncatedNormal {
        /// Mean before truncation.
        mean: f64,
        /// Standard deviation before truncation.
        std: f64,
        /// Lower cutoff.
        a: f64,
        /// Upper cutoff.
        b: f64,
    },
    /// Every element equals this value.
    Constant(f64),
    /// Ones on a (generalized) diagonal, zeros elsewhere (eye, dirac).
    Identity,
    /// `gain` times a matrix with orthonormal rows or columns.
    Orthogonal {
        /// The scale.
        gain: f64,
    },
    /// Normal with `zeros_per_column` zeros in every column.
    Sparse {
        /// Zeros in each column.
        zeros_per_column: usize,
        /// Standard deviation of the rest.
        std: f64,
    },
    /// A zero-element tensor: nothing is drawn.
    Empty,
}

impl Init {
    /// `uniform_()` with torch's defaults, U(0, 1).
    pub fn uniform() -> Self {
        Init::Uniform { a: 0.0, b: 1.0 }
    }

    /// `normal_()` with torch's defaults, N(0, 1).
    pub fn normal() -> Self {
        Init::Normal {
            mean: 0.0,
            std: 1.0,
        }
    }

    /// `trunc_normal_()` with torch's defaults: mean 0, std 1, `[-2, 2]`.
    pub fn trunc_normal() -> Self {
        Init::TruncNormal {
            mean: 0.0,
            std: 1.0,
            a: -2.0,
            b: 2.0,
        }
    }

    /// `xavier_uniform_()` with gain 1.
    pub fn xavier_uniform() -> Self {
        Init::XavierUniform { gain: 1.0 }
    }

    /// `xavier_normal_()` with gain 1.
    pub fn xavier_normal() -> Self {
        Init::XavierNormal { gain: 1.0 }
    }

    /// `kaiming_uniform_()` with torch's defaults.
    pub fn kaiming_uniform() -> Self {
        Init::KaimingUniform(Kaiming::default())
    }

    /// `kaiming_normal_()` with torch's defaults.
    pub fn kaiming_normal() -> Self {
        Init::KaimingNormal(Kaiming::default())
    }

    /// `orthogonal_()` with gain 1.
    pub fn orthogonal() -> Self {
        Init::Orthogonal { gain: 1.0 }
    }

    /// `sparse_(sparsity)` with torch's default std 0.01.
    pub fn sparse(sparsity: f64) -> Self {
        Init::Sparse {
            sparsity,
            std: 0.01,
        }
    }

    /// `dirac_()` with one group.
    pub fn dirac() -> Self {
        Init::Dirac { groups: 1 }
    }

    /// The `torch.nn.init` function this scheme mirrors.
    pub fn torch_name(&self) -> &'static str {
        match self {
            Init::Uniform { .. } => "uniform_",
            Init::Normal { .. } => "normal_",
            Init::TruncNormal { .. } => "trunc_normal_",
            Init::Constant(_) => "constant_",
            Init::Zeros => "zeros_",
            Init::Ones => "ones_",
            Init::Eye => "eye_",
            Init::Dirac { .. } => "dirac_",
            Init::Orthogonal { .. } => "orthogonal_",
            Init::Sparse { .. } => "sparse_",
            Init::XavierUniform { .. } => "xavier_uniform_",
            Init::XavierNormal { .. } => "xavier_normal_",
            Init::KaimingUniform(_) => "kaiming_uniform_",
            Init::KaimingNormal(_) => "kaiming_normal_",
        }
    }

    /// Whether the scheme draws random numbers.
    pub fn is_random(&self) -> bool {
        !matches!(
            self,
            Init::Constant(_) | Init::Zeros | Init::Ones | Init::Eye | Init::Dirac { .. }
        )
    }

    /// The closed-form distribution for a tensor of `shape` and `dtype`,
    /// after every check [`Init::tensor`] makes: the bound or standard
    /// deviation is the same double torch computes in Python.
    pub fn distribution(&self, shape: &[usize], dtype: DType) -> Result<Distribution, InitError> {
        let ty = Float::of(dtype)?;
        Ok(match self.plan(shape, ty)? {
            Plan::Uniform { from, to } => Distribution::Uniform {
                low: from,
                high: to,
            },
            Plan::Normal { mean, std } => Distribution::Normal { mean, std },
            Plan::Constant(v) => Distribution::Constant(v),
            Plan::Empty => Distribution::Empty,
            Plan::Other => match *self {
                Init::TruncNormal { mean, std, a, b } => {
                    Distribution::TruncatedNormal { mean, std, a, b }
                }
                Init::Eye | Init::Dirac { .. } => Distribution::Identity,
                Init::Orthogonal { gain } => Distribution::Orthogonal { gain },
                Init::Sparse { sparsity, std } => Distribution::Sparse {
                    zeros_per_column: zeros_per_column(sparsity, shape[0]),
                    std,
                },
                _ => Distribution::Empty,
            },
        })
    }

    /// A new tensor of `shape` and `dtype` (F32, F16 or BF16) initialized
    /// by this scheme, drawing from `rng`.
    ///
    /// In the default mode large uniform and normal fills run in parallel
    /// and write the output bytes directly; the result never depends on the
    /// thread count.
    pub fn tensor(
        &self,
        rng: &mut Rng,
        shape: impl Into<Shape>,
        dtype: DType,
    ) -> Result<Tensor, InitError> {
        let ty = Float::of(dtype)?;
        let shape = shape.into();
        let n = shape.elem_count()?;
        let dims = shape.dims();
        let bytes = match self.plan(dims, ty)? {
            Plan::Uniform { from, to } => rng.uniform_bytes(n, from, to, ty)?,
            Plan::Normal { mean, std } => rng.normal_bytes(n, mean, std, ty)?,
            Plan::Constant(v) => {
                let v = ty.round_f64(v);
                rng::par_fill_bytes(n, ty, |_, o| o.fill(v))?
            }
            Plan::Empty => Vec::new(),
            Plan::Other => {
                let mut v = vec![0f32; n];
                self.other(rng, dims, ty, &mut v)?;
                rng::encode(&v, ty)?
            }
        };
        Ok(Tensor::from_bytes(dtype, shape, bytes)?)
    }

    /// Initializes an f32 buffer holding a row-major tensor of `shape`, in
    /// place (`out.len()` must be the element count).
    pub fn fill(&self, rng: &mut Rng, shape: &[usize], out: &mut [f32]) -> Result<(), InitError> {
        let n = Shape::new(shape).elem_count()?;
        if n != out.len() {
            return Err(InitError::Core(CoreError::LengthMismatch {
                name: String::new(),
                dtype: DType::F32,
                shape: Shape::new(shape),
                expected: n * 4,
                found: out.len() * 4,
            }));
        }
        let ty = Float::F32;
        match self.plan(shape, ty)? {
            Plan::Uniform { from, to } => rng.uniform_into(out, from, to, ty),
            Plan::Normal { mean, std } => rng.normal_into(out, mean, std, ty),
            Plan::Constant(v) => out.fill(v as f32),
            Plan::Empty => {}
            Plan::Other => {
                out.fill(0.0);
                self.other(rng, shape, ty, out)?;
            }
        }
        Ok(())
    }

    /// Checks the parameters against the shape and reduces the scheme to a
    /// plain fill where it is one.
    fn plan(&self, dims: &[usize], ty: Float) -> Result<Plan, InitError> {
        let n = Shape::new(dims).elem_count()?;
        let scheme = self.torch_name();
        match *self {
            Init::Uniform { a, b } => {
                check_uniform(a, b, ty)?;
                Ok(if n == 0 {
                    Plan::Empty
                } else {
                    Plan::Uniform { from: a, to: b }
                })
            }
            Init::Normal { mean, std } => {
                check_normal(scheme, mean, std)?;
                Ok(if n == 0 {
                    Plan::Empty
                } else {
                    Plan::Normal { mean, std }
                })
            }
            Init::XavierUniform { gain } | Init::XavierNormal { gain } => {
                check_finite(scheme, "gain", gain)?;
                let (fan_in, fan_out) = fan_in_and_fan_out(dims)?;
                let sum = fan_in.checked_add(fan_out).ok_or(CoreError::Overflow)?;
                if sum == 0 {
                    return Err(InitError::ZeroFan {
                        scheme,
                        shape: dims.to_vec(),
                    });
                }
                let std = gain * (2.0 / sum as f64).sqrt();
                if let Init::XavierUniform { .. } = self {
                    let a = 3.0f64.sqrt() * std;
                    check_uniform(-a, a, ty)?;
                    Ok(Plan::Uniform { from: -a, to: a })
                } else {
                    check_normal(scheme, 0.0, std)?;
                    Ok(Plan::Normal { mean: 0.0, std })
                }
            }
            Init::KaimingUniform(k) | Init::KaimingNormal(k) => {
                // torch returns before computing fans when a dimension is 0.
                if dims.contains(&0) {
                    return Ok(Plan::Empty);
                }
                let fan = k.mode.fan(dims)?;
                let gain = calculate_gain(k.nonlinearity, Some(k.a))?;
                let std = gain / (fan as f64).sqrt();
                if let Init::KaimingUniform(_) = self {
                    let bound = 3.0f64.sqrt() * std;
                    check_uniform(-bound, bound, ty)?;
                    Ok(Plan::Uniform {
                        from: -bound,
                        to: bound,
                    })
                } else {
                    check_normal(scheme, 0.0, std)?;
                    Ok(Plan::Normal { mean: 0.0, std })
                }
            }
            Init::Constant(v) => {
                if v.is_finite() && v.abs() > ty.max() {
                    return Err(InitError::InvalidParameter {
                        scheme,
                        name: "val",
                        value: v,
                        reason: "overflows the tensor's dtype",
                    });
                }
                Ok(Plan::Constant(v))
            }
            Init::Zeros => Ok(Plan::Constant(0.0)),
            Init::Ones => Ok(Plan::Constant(1.0)),
            Init::Eye => {
                if dims.len() != 2 {
                    return Err(wrong_rank(scheme, "exactly 2", dims));
                }
                Ok(Plan::Other)
            }
            Init::Dirac { groups } => {
                if !(3..=5).contains(&dims.len()) {
                    return Err(wrong_rank(scheme, "3, 4 or 5", dims));
                }
                if groups == 0 || !dims[0].is_multiple_of(groups) {
                    return Err(InitError::BadGroups {
                        dim0: dims[0],
                        groups,
                    });
                }
                Ok(Plan::Other)
            }
            Init::Orthogonal { gain } => {
                if dims.len() < 2 {
                    return Err(wrong_rank(scheme, "at least 2", dims));
                }
                check_finite(scheme, "gain", gain)?;
                Ok(if n == 0 { Plan::Empty } else { Plan::Other })
            }
            Init::Sparse { sparsity, std } => {
                if dims.len() != 2 {
                    return Err(wrong_rank(scheme, "exactly 2", dims));
                }
                if !(0.0..=1.0).contains(&sparsity) {
                    return Err(InitError::InvalidSparsity(sparsity));
                }
                check_normal(scheme, 0.0, std)?;
                Ok(Plan::Other)
            }
            Init::TruncNormal { mean, std, a, b } => {
                trunc_params(mean, std, a, b)?;
                Ok(Plan::Other)
            }
        }
    }

    /// The schemes that are not a plain fill; `out` is zeroed and has the
    /// shape's element count.
    fn other(
        &self,
        rng: &mut Rng,
        dims: &[usize],
        ty: Float,
        out: &mut [f32],
    ) -> Result<(), InitError> {
        match *self {
            Init::Eye => {
                let cols = dims[1];
                for i in 0..dims[0].min(cols) {
                    out[i * cols + i] = 1.0;
                }
            }
            Init::Dirac { groups } => dirac(dims, groups, out),
            Init::Orthogonal { gain } => orthogonal(rng, dims, gain, ty, out)?,
            Init::Sparse { sparsity, std } => sparse(rng, dims, sparsity, std, ty, out)?,
            Init::TruncNormal { mean, std, a, b } => trunc_normal(rng, mean, std, a, b, ty, out)?,
            _ => {}
        }
        Ok(())
    }
}

/// A scheme reduced to what the kernels do.
enum Plan {
    Uniform { from: f64, to: f64 },
    Normal { mean: f64, std: f64 },
    Constant(f64),
    Empty,
    Other,
}

fn wrong_rank(scheme: &'static str, expected: &'static str, dims: &[usize]) -> InitError {
    InitError::WrongRank {
        scheme,
        expected,
        shape: dims.to_vec(),
    }
}

fn check_finite(scheme: &'static str, name: &'static str, v: f64) -> Result<(), InitError> {
    if v.is_finite() {
        Ok(())
    } else {
        Err(InitError::InvalidParameter {
            scheme,
            name,
            value: v,
            reason: "must be finite",
        })
    }
}

/// torch's `uniform_` checks: both bounds finite in the dtype, `from <=
/// to`, and `to - from` no larger than the dtype's maximum.
pub(crate) fn check_uniform(from: f64, to: f64, ty: Float) -> Result<(), InitError> {
    let max = ty.max();
    let ok = from.abs() <= max && to.abs() <= max && from <= to && to - from <= max;
    if ok {
        Ok(())
    } else {
        Err(InitError::InvalidRange {
            from,
            to,
            dtype: ty.dtype(),
        })
    }
}

/// `normal_` checks: `std >= 0` (torch's), and both finite (ours: torch
/// would fill NaN or infinity).
pub(crate) fn check_normal(scheme: &'static str, mean: f64, std: f64) -> Result<(), InitError> {
    if std.is_nan() || std < 0.0 {
        return Err(InitError::NegativeStd { scheme, std });
    }
    check_finite(scheme, "mean", mean)?;
    check_finite(scheme, "std", std)
}

fn zeros_per_column(sparsity: f64, rows: usize) -> usize {
    // math.ceil(sparsity * rows), sparsity in [0, 1].
    ((sparsity * rows as f64).ceil() as usize).min(rows)
}

fn dirac(dims: &[usize], groups: usize, out: &mut [f32]) {
    let per_group = dims[0] / groups;
    let min_dim = per_group.min(dims[1]);
    // Row-major strides.
    let mut strides = vec![1usize; dims.len()];
    for i in (0..dims.len() - 1).rev() {
        strides[i] = strides[i + 1] * dims[i + 1];
    }
    let centre: usize = (2..dims.len()).map(|k| (dims[k] / 2) * strides[k]).sum();
    for g in 0..groups {
        for d in 0..min_dim {
            out[(g * per_group + d) * strides[0] + d * strides[1] + centre] = 1.0;
        }
    }
}

fn orthogonal(
    rng: &mut Rng,
    dims: &[usize],
    gain: f64,
    ty: Float,
    out: &mut [f32],
) -> Result<(), InitError> {
    let rows = dims[0];
    let cols = out.len() / rows;
    // torch draws the normal matrix in the tensor's dtype; QR is only
    // defined for f32/f64 there, so draw f32 and round at the end.
    let mut flat = vec![0f32; out.len()];
    rng.normal_into(&mut flat, 0.0, 1.0, Float::F32);
    let a = Mat::from_row_major(rows, cols, &flat);
    let transposed = rows < cols;
    let a = if transposed { a.transpose() } else { a };
    let (q, d) = householder_qr(&a);
    let g = gain as f32;
    for i in 0..rows {
        for j in 0..cols {
            let (r, c) = if transposed { (j, i) } else { (i, j) };
            let sign = if d[c] < 0.0 { -1.0 } else { 1.0 };
            let v = ty.round((q.at(r, c) * sign) as f32);
            out[i * cols + j] = ty.round(v * g);
        }
    }
    Ok(())
}

fn sparse(
    rng: &mut Rng,
    dims: &[usize],
    sparsity: f64,
    std: f64,
    ty: Float,
    out: &mut [f32],
) -> Result<(), InitError> {
    let (rows, cols) = (dims[0], dims[1]);
    let zeros = zeros_per_column(sparsity, rows);
    rng.normal_into(out, 0.0, std, ty);
    match rng {
        Rng::Torch(t) => {
            for c in 0..cols {
                let perm = t.randperm(rows)?;
                for &r in &perm[..zeros] {
                    out[r * cols + c] = 0.0;
                }
            }
        }
        Rng::Counter(cr) => {
            let key = cr.take(Domain::Sparse);
            let mut perm: Vec<usize> = Vec::new();
            for c in 0..cols {
                perm.clear();
                perm.extend(0..rows);
                // Partial Fisher-Yates: the first `zeros` slots are a
                // uniform sample without replacement.
                for i in 0..zeros {
                    let w = block(key, i as u64, c as u64);
                    let x = (u64::from(w[0]) << 32) | u64::from(w[1]);
                    let z = ((u128::from(x) * (rows - i) as u128) >> 64) as usize;
                    perm.swap(i, i + z);
                }
                for &r in &perm[..zeros] {
                    out[r * cols + c] = 0.0;
                }
            }
        }
    }
    Ok(())
}

/// `(a - mean) / std` pieces torch computes in Python for trunc_normal_.
struct TruncParams {
    /// Probability mass of `[a, b]` (torch's `p`).
    p: f64,
    /// `-0.5 * ((mode - mean) / std) ** 2`.
    log_peak: f64,
}

fn norm_cdf(x: f64) -> f64 {
    (1.0 + detmath::erf(x / 2.0f64.sqrt())) / 2.0
}

/// Below this acceptance rate rejection sampling is refused (torch would
/// loop for a very long time instead).
const MIN_ACCEPTANCE: f64 = 1e-6;

fn trunc_params(mean: f64, std: f64, a: f64, b: f64) -> Result<TruncParams, InitError> {
    let scheme = "trunc_normal_";
    check_normal(scheme, mean, std)?;
    if std == 0.0 {
        return Err(InitError::InvalidParameter {
            scheme,
            name: "std",
            value: std,
            reason: "must be > 0 (torch divides by it)",
        });
    }
    if a.is_nan() || b.is_nan() || a > b {
        return Err(InitError::InvalidParameter {
            scheme,
            name: "a",
            value: a,
            reason: "cutoffs must satisfy a <= b",
        });
    }
    let p = norm_cdf((b - mean) / std) - norm_cdf((a - mean) / std);
    let mode = a.max(mean.min(b));
    let z = (mode - mean) / std;
    let log_peak = -0.5 * (z * z);
    if p <= 0.3 && a < b {
        // Acceptance rate of the uniform proposal: mean of the density
        // over [a, b] relative to its peak.
        let rate =
            p * std * (2.0 * std::f64::consts::PI).sqrt() / ((b - a) * detmath::exp_neg(log_peak));
        if rate.is_nan() || rate < MIN_ACCEPTANCE {
            return Err(InitError::InvalidParameter {
                scheme,
                name: "b",
                value: b,
                reason: "the interval [a, b] holds too little of the normal's mass to sample",
            });
        }
    }
    Ok(TruncParams { p, log_peak })
}

#[allow(clippy::too_many_arguments)]
fn trunc_normal(
    rng: &mut Rng,
    mean: f64,
    std: f64,
    a: f64,
    b: f64,
    ty: Float,
    out: &mut [f32],
) -> Result<(), InitError> {
    let TruncParams { p, log_peak } = trunc_params(mean, std, a, b)?;
    let lo = ty.round_f64(a);
    let hi = ty.round_f64(b);
    match rng {
        Rng::Torch(t) => {
            if p > 0.3 {
                t.normal(out, mean, std, ty);
                let mut fresh = vec![0f32; out.len()];
                while out.iter().any(|&v| v < lo || v > hi) {
                    t.normal(&mut fresh, mean, std, ty);
                    for (o, &f) in out.iter_mut().zip(&fresh) {
                        if *o < lo || *o > hi {
                            *o = f;
                        }
                    }
                }
            } else {
                if ty != Float::F32 {
                    return Err(InitError::TorchUnsupported(
                        "trunc_normal_'s uniform-proposal branch (p <= 0.3) on f16/bf16 tensors",
                    ));
                }
                check_uniform(a, b, ty)?;
                torch_trunc_uniform(t, mean, std, a, b, log_peak, out);
            }
        }
        Rng::Counter(c) => counter_trunc(c, mean, std, a, b, p, log_peak, ty, out),
    }
    Ok(())
}

/// The log-density candidates torch computes in f32 tensor ops:
/// `c.sub_(mean).div_(std).pow_(2).mul_(-0.5).sub_(log_peak)`.
#[inline]
fn torch_candidate(x: f32, mean: f32, std: f32, log_peak: f32) -> f32 {
    let z = (x - mean) / std;
    (z * z) * -0.5 - log_peak
}

#[inline]
fn log_f32(u: f32) -> f32 {
    if u <= 0.0 {
        f32::NEG_INFINITY
    } else {
        detmath::ln(f64::from(u)) as f32
    }
}

#[allow(clippy::too_many_arguments)]
fn torch_trunc_uniform(
    t: &mut TorchGenerator,
    mean: f64,
    std: f64,
    a: f64,
    b: f64,
    log_peak: f64,
    out: &mut [f32],
) {
    let (mf, sf, lpf) = (mean as f32, std as f32, log_peak as f32);
    let n = out.len();
    let mut cand = vec![0f32; n];
    let mut accept = vec![0f32; n];
    t.uniform(out, a, b, Float::F32);
    t.uniform(&mut accept, 0.0, 1.0, Float::F32);
    let mut pending: Vec<bool> = out
        .iter()
        .zip(&accept)
        .map(|(&x, &u)| log_f32(u) > torch_candidate(x, mf, sf, lpf))
        .collect();
    while pending.iter().any(|&p| p) {
        t.uniform(&mut cand, a, b, Float::F32);
        t.uniform(&mut accept, 0.0, 1.0, Float::F32);
        for i in 0..n {
            if pending[i] {
                out[i] = cand[i];
                pending[i] = log_f32(accept[i]) > torch_candidate(cand[i], mf, sf, lpf);
            }
        }
    }
}

/// Default mode: every element runs its own rejection loop on its own
/// counter stream, so the fill is parallel and thread-count independent.
#[allow(clippy::too_many_arguments)]
fn counter_trunc(
    c: &mut CounterRng,
    mean: f64,
    std: f64,
    a: f64,
    b: f64,
    p: f64,
    log_peak: f64,
    ty: Float,
    out: &mut [f32],
) {
    let key = c.take(Domain::Retry);
    let lo = ty.round_f64(a);
    let hi = ty.round_f64(b);
    let sample = |idx: usize| -> f32 {
        let mut attempt = 0u64;
        loop {
            let w = block(key, idx as u64, attempt);
            attempt += 1;
            if p > 0.3 {
                let v = ty.round_f64(mean + std * normal_pair(w).0);
                if v >= lo && v <= hi {
                    return v;
                }
            } else {
                let x = if a == b {
                    a
                } else {
                    (a + (b - a) * u01_open32(w[0])).clamp(a, b)
                };
                let z = (x - mean) / std;
                if detmath::ln(u01_open32(w[1])) <= -0.5 * z * z - log_peak {
                    return ty.round_f64(x);
                }
            }
        }
    };
    rng::par_map_index(out, sample);
}
