//! The dense linear algebra combination and extraction need, through
//! `faer`: products of LoRA factors and truncated SVDs, in f64.

use faer::mat::{MatMut, MatRef};
use faer::{Accum, Mat, Par};

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

/// `w (n, cols) += factor * (l (n, r) @ rhs (r, cols))`, all row-major f32:
/// the product is formed by `faer`'s f32 GEMM (its own run-time SIMD
/// dispatch, fused multiply-adds) one tile of `tile` columns at a time into
/// `scratch`, which is then added to `w`. One thread (the caller
/// parallelises over row blocks).
#[allow(clippy::too_many_arguments)]
pub(crate) fn low_rank_add(
    w: &mut [f32],
    n: usize,
    cols: usize,
    l: &[f32],
    rhs: &[f32],
    r: usize,
    factor: f32,
    tile: usize,
    scratch: &mut Vec<f32>,
) {
    let lhs = MatRef::from_row_major_slice(l, n, r);
    let rhs = MatRef::from_row_major_slice(rhs, r, cols);
    let mut c0 = 0;
    while c0 < cols {
        let tw = tile.min(cols - c0);
        scratch.resize(n * tw, 0.0);
        let dst = MatMut::from_row_major_slice_mut(&mut scratch[..n * tw], n, tw);
        faer::linalg::matmul::matmul(
            dst,
            Accum::Replace,
            lhs,
            rhs.subcols(c0, tw),
            factor,
            Par::Seq,
        );
        for (row, delta) in w.chunks_exact_mut(cols).zip(scratch.chunks_exact(tw)) {
            for (x, &d) in row[c0..c0 + tw].iter_mut().zip(delta) {
                *x += d;
            }
        }
        c0 += tw;
    }
}
