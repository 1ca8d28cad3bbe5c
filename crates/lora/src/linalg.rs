//! The dense linear algebra combination and extraction need, through
//! `faer`: products of LoRA factors and truncated SVDs, in f64.

use faer::Mat;

use crate::error::LoraError;

/// A row-major f32 matrix widened to a faer f64 matrix.
pub(crate) fn to_mat(x: &[f32], rows: usize, cols: usize) -> Mat<f64> {
    Mat::from_fn(rows, cols, |i, j| f64::from(x[i * cols + j]))
}

/// `b (m, r) @ a (r, n)`, row-major f32 in, row-major f64 out.
pub(crate) fn product(b: &[f32], a: &[f32], m: usize, r: usize, n: usize) -> Vec<f64> {
    let p = to_mat(b, m, r) * to_mat(a, r, n);
    let mut out = Vec::with_capacity(m * n);
    for i in 0..m {
        for j in 0..n {
            out.push(p[(i, j)]);
        }
    }
    out
}

/// A thin SVD `x = U diag(s) V^T`, singular values non-increasing.
pub(crate) struct Svd {
    /// `(m, k)` row-major, `k = min(m, n)`.
    pub(crate) u: Vec<f64>,
    /// The `k` singular values.
    pub(crate) s: Vec<f64>,
    /// `V^T`, `(k, n)` row-major.
    pub(crate) vt: Vec<f64>,
    pub(crate) k: usize,
}

/// The thin SVD of the row-major `(m, n)` matrix `x` (f64).
pub(crate) fn svd(x: &[f64], m: usize, n: usize, module: &str) -> Result<Svd, LoraError> {
    let mat = Mat::from_fn(m, n, |i, j| x[i * n + j]);
    let svd = mat.thin_svd().map_err(|_| LoraError::Svd {
        module: module.to_owned(),
    })?;
    let k = m.min(n);
    let (u, v, s) = (svd.U(), svd.V(), svd.S().column_vector());
    let mut uo = Vec::with_capacity(m * k);
    for i in 0..m {
        for j in 0..k {
            uo.push(u[(i, j)]);
        }
    }
    let mut vt = Vec::with_capacity(k * n);
    for i in 0..k {
        for j in 0..n {
            vt.push(v[(j, i)]);
        }
    }
    let s: Vec<f64> = (0..k).map(|i| s[i]).collect();
    if s.iter().any(|x| !x.is_finite()) {
        return Err(LoraError::Svd {
            module: module.to_owned(),
        });
    }
    Ok(Svd { u: uo, s, vt, k })
}

/// Splits a thin SVD truncated to `rank` into LoRA factors, rounded to f32:
/// `B = U_r diag(s_r)^(1-p)`, `A = diag(s_r)^p V_r^T` with `p = 1/2` when
/// `split_sqrt` (mergekit) and `p = 0` otherwise (PEFT's `svd`).
pub(crate) fn factors(
    svd: &Svd,
    m: usize,
    n: usize,
    rank: usize,
    split_sqrt: bool,
) -> (Vec<f32>, Vec<f32>) {
    let (sb, sa): (Vec<f64>, Vec<f64>) = svd.s[..rank]
        .iter()
        .map(|&s| {
            if split_sqrt {
                (s.sqrt(), s.sqrt())
            } else {
                (s, 1.0)
            }
        })
        .unzip();
    let mut b = Vec::with_capacity(m * rank);
    for i in 0..m {
        for (j, f) in sb.iter().enumerate() {
            b.push((svd.u[i * svd.k + j] * f) as f32);
        }
    }
    let mut a = Vec::with_capacity(rank * n);
    for (i, f) in sa.iter().enumerate() {
        for j in 0..n {
            a.push((svd.vt[i * n + j] * f) as f32);
        }
    }
    (b, a)
}
