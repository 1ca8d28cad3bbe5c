//! The crate's one error type.

use weightkit_core::{CoreError, DType};

/// Why an initialization could not be done.
///
/// Every impossible request (a fan of a 1-D tensor, a negative standard
/// deviation, a sparsity outside `[0, 1]`, ...) is one of these values: the
/// crate never panics on bad parameters.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum InitError {
    /// Fan-in and fan-out need at least two dimensions (torch raises
    /// `ValueError` for the same shapes).
    #[error(
        "fan in and fan out can not be computed for a tensor with {rank} dimension(s); at least 2 are needed"
    )]
    FanNeedsTwoDims {
        /// The tensor's rank.
        rank: usize,
    },
    /// A fan (or the sum of both fans) is zero, so the bound or standard
    /// deviation would divide by zero (torch raises `ZeroDivisionError`).
    #[error("{scheme}: the fan of shape {shape:?} is zero")]
    ZeroFan {
        /// The scheme.
        scheme: &'static str,
        /// The tensor's shape.
        shape: Vec<usize>,
    },
    /// A standard deviation that is negative or NaN.
    #[error("{scheme}: standard deviation must be >= 0, found {std}")]
    NegativeStd {
        /// The scheme.
        scheme: &'static str,
        /// The value given.
        std: f64,
    },
    /// A uniform range that is reversed, not finite in the output dtype, or
    /// wider than the dtype's largest value (torch's `uniform_` checks).
    #[error("uniform: invalid range [{from}, {to}) for {dtype}")]
    InvalidRange {
        /// Lower bound.
        from: f64,
        /// Upper bound.
        to: f64,
        /// Output dtype.
        dtype: DType,
    },
    /// A sparsity (fraction of zeros per column) outside `[0, 1]`.
    #[error("sparse: sparsity must be in [0, 1], found {0}")]
    InvalidSparsity(f64),
    /// Any other parameter outside its domain (a NaN mean, an infinite
    /// gain, truncation bounds with `a >= b`, ...).
    #[error("{scheme}: parameter `{name}` = {value} is invalid: {reason}")]
    InvalidParameter {
        /// The scheme.
        scheme: &'static str,
        /// The parameter's name.
        name: &'static str,
        /// The value given.
        value: f64,
        /// What was expected.
        reason: &'static str,
    },
    /// A scheme that needs a tensor of another rank (eye: 2, dirac: 3 to 5,
    /// orthogonal: at least 2, sparse: 2).
    #[error("{scheme} needs {expected} dimensions, shape {shape:?} has {}", shape.len())]
    WrongRank {
        /// The scheme.
        scheme: &'static str,
        /// The ranks accepted, in words.
        expected: &'static str,
        /// The tensor's shape.
        shape: Vec<usize>,
    },
    /// `dirac` with a group count of zero or one that does not divide dim 0.
    #[error("dirac: dim 0 ({dim0}) must be divisible by groups ({groups})")]
    BadGroups {
        /// Size of dimension 0.
        dim0: usize,
        /// Groups asked for.
        groups: usize,
    },
    /// A nonlinearity name that `torch.nn.init.calculate_gain` does not know.
    #[error("unsupported nonlinearity `{0}`")]
    UnknownNonlinearity(String),
    /// A fan mode other than `fan_in` / `fan_out`.
    #[error("mode `{0}` not supported, use `fan_in` or `fan_out`")]
    UnknownFanMode(String),
    /// Output dtype other than F32, F16 or BF16.
    #[error("initializers write F32, F16 or BF16 tensors, not {0}")]
    UnsupportedDType(DType),
    /// A torch-exact request this crate does not reproduce (named in the
    /// message), rather than silently giving different numbers.
    #[error("torch-exact mode does not reproduce {0}")]
    TorchUnsupported(&'static str),
    /// A LoRA rank of zero or larger than the weight allows.
    #[error("LoRA rank {r} is invalid for a {rows}x{cols} weight")]
    BadLoraRank {
        /// The rank asked for.
        r: usize,
        /// Weight rows (out features).
        rows: usize,
        /// Weight columns (in features).
        cols: usize,
    },
    /// A weight given to PiSSA whose shape is not 2-D or whose data does not
    /// match its shape.
    #[error("PiSSA needs a 2-D float weight, got {dtype} {shape:?}")]
    BadWeight {
        /// The weight's dtype.
        dtype: DType,
        /// The weight's shape.
        shape: Vec<usize>,
    },
    /// The Jacobi SVD did not converge within its sweep limit (only for
    /// pathological input such as NaN or infinite weights).
    #[error("SVD did not converge after {sweeps} sweeps")]
    NoConvergence {
        /// Sweeps run.
        sweeps: usize,
    },
    /// An element count that overflows, or a shape/dtype error from core.
    #[error("invalid tensor size")]
    Core(#[source] CoreError),
}

impl From<CoreError> for InitError {
    fn from(e: CoreError) -> Self {
        InitError::Core(e)
    }
}
