//! Small dense linear algebra in f64, column-major: Householder QR for
//! `orthogonal`, one-sided Jacobi SVD and a randomized range finder for
//! PiSSA.
//!
//! Written for initialization, not as a BLAS: column operations run in
//! parallel with rayon once a matrix is large, and results do not depend on
//! the thread count (every column is computed by one task in a fixed order).

use rayon::prelude::*;

use crate::error::InitError;

/// Work (rows x columns) above which column loops run in parallel.
const PAR_WORK: usize = 1 << 15;

/// A column-major `rows x cols` f64 matrix.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Mat {
    pub(crate) rows: usize,
    pub(crate) cols: usize,
    pub(crate) data: Vec<f64>,
}

impl Mat {
    pub(crate) fn zeros(rows: usize, cols: usize) -> Self {
        Mat {
            rows,
            cols,
            data: vec![0.0; rows * cols],
        }
    }

    /// From row-major f32 values.
    pub(crate) fn from_row_major(rows: usize, cols: usize, v: &[f32]) -> Self {
        let mut m = Mat::zeros(rows, cols);
        for i in 0..rows {
            for j in 0..cols {
                m.data[j * rows + i] = f64::from(v[i * cols + j]);
            }
        }
        m
    }

    #[inline]
    pub(crate) fn at(&self, i: usize, j: usize) -> f64 {
        self.data[j * self.rows + i]
    }

    pub(crate) fn col(&self, j: usize) -> &[f64] {
        &self.data[j * self.rows..(j + 1) * self.rows]
    }

    pub(crate) fn transpose(&self) -> Mat {
        let mut t = Mat::zeros(self.cols, self.rows);
        for j in 0..self.cols {
            for i in 0..self.rows {
                t.data[i * self.cols + j] = self.data[j * self.rows + i];
            }
        }
        t
    }

    fn par(&self) -> bool {
        self.rows.saturating_mul(self.cols) >= PAR_WORK
    }

    /// `self * other`.
    pub(crate) fn matmul(&self, other: &Mat) -> Mat {
        debug_assert_eq!(self.cols, other.rows);
        let mut out = Mat::zeros(self.rows, other.cols);
        let m = self.rows;
        let body = |(j, oc): (usize, &mut [f64])| {
            let bc = other.col(j);
            for (k, &b) in bc.iter().enumerate() {
                if b != 0.0 {
                    let ac = self.col(k);
                    for (o, &a) in oc.iter_mut().zip(ac) {
                        *o += a * b;
                    }
                }
            }
        };
        if m.max(1) * self.cols.max(1) * other.cols.max(1) >= PAR_WORK * 8 {
            out.data.par_chunks_mut(m.max(1)).enumerate().for_each(body);
        } else {
            out.data.chunks_mut(m.max(1)).enumerate().for_each(body);
        }
        out
    }

    /// `self^T * other`.
    pub(crate) fn t_matmul(&self, other: &Mat) -> Mat {
        debug_assert_eq!(self.rows, other.rows);
        let mut out = Mat::zeros(self.cols, other.cols);
        let n = self.cols;
        let body = |(j, oc): (usize, &mut [f64])| {
            let bc = other.col(j);
            for (i, o) in oc.iter_mut().enumerate() {
                *o = dot(self.col(i), bc);
            }
        };
        if self.rows.max(1) * n.max(1) * other.cols.max(1) >= PAR_WORK * 8 {
            out.data.par_chunks_mut(n.max(1)).enumerate().for_each(body);
        } else {
            out.data.chunks_mut(n.max(1)).enumerate().for_each(body);
        }
        out
    }
}

#[inline]
pub(crate) fn dot(a: &[f64], b: &[f64]) -> f64 {
    // Four accumulators: fixed order, so deterministic.
    let mut s = [0.0f64; 4];
    let mut ca = a.chunks_exact(4);
    let mut cb = b.chunks_exact(4);
    for (x, y) in (&mut ca).zip(&mut cb) {
        s[0] += x[0] * y[0];
        s[1] += x[1] * y[1];
        s[2] += x[2] * y[2];
        s[3] += x[3] * y[3];
    }
    let mut t = (s[0] + s[1]) + (s[2] + s[3]);
    for (x, y) in ca.remainder().iter().zip(cb.remainder()) {
        t += x * y;
    }
    t
}

/// Thin QR of a `m x k` matrix with `m >= k` by Householder reflections
/// (LAPACK `geqrf` conventions), returning `(Q, diag(R))` with `Q` `m x k`.
pub(crate) fn householder_qr(a: &Mat) -> (Mat, Vec<f64>) {
    let (m, k) = (a.rows, a.cols);
    debug_assert!(m >= k);
    let mut a = a.clone();
    let mut taus = vec![0.0; k];
    let mut diag = vec![0.0; k];
    let par = a.par();
    for j in 0..k {
        // dlarfg on a[j.., j].
        let (left, right) = a.data.split_at_mut((j + 1) * m);
        let col = &mut left[j * m..];
        let alpha = col[j];
        let xnorm = dot(&col[j + 1..], &col[j + 1..]).sqrt();
        if xnorm == 0.0 {
            taus[j] = 0.0;
            diag[j] = alpha;
            continue;
        }
        // hypot without libm (whose last bit varies by platform).
        let scale = alpha.abs().max(xnorm);
        let norm = scale * ((alpha / scale).powi(2) + (xnorm / scale).powi(2)).sqrt();
        let beta = -norm.copysign(alpha);
        let tau = (beta - alpha) / beta;
        let scale = 1.0 / (alpha - beta);
        for x in &mut col[j + 1..] {
            *x *= scale;
        }
        col[j] = 1.0;
        taus[j] = tau;
        diag[j] = beta;
        let v = &col[j..];
        // Apply H = I - tau v v^T to the trailing columns.
        let apply = |c: &mut [f64]| {
            let c = &mut c[j..];
            let s = tau * dot(v, c);
            for (x, &vi) in c.iter_mut().zip(v) {
                *x -= s * vi;
            }
        };
        if par {
            right.par_chunks_mut(m).for_each(apply);
        } else {
            right.chunks_mut(m).for_each(apply);
        }
    }
    // Q = H_0 ... H_{k-1} I[:, :k], applied right to left.
    let mut q = Mat::zeros(m, k);
    for j in 0..k {
        q.data[j * m + j] = 1.0;
    }
    for j in (0..k).rev() {
        if taus[j] == 0.0 {
            continue;
        }
        let v = &a.data[j * m + j..(j + 1) * m];
        let tau = taus[j];
        let apply = |c: &mut [f64]| {
            let c = &mut c[j..];
            let s = tau * dot(v, c);
            for (x, &vi) in c.iter_mut().zip(v) {
                *x -= s * vi;
            }
        };
        if par {
            q.data.par_chunks_mut(m).for_each(apply);
        } else {
            q.data.chunks_mut(m).for_each(apply);
        }
    }
    (q, diag)
}

/// Orthonormal basis of the columns of `a` (`m x k`, `m >= k`).
pub(crate) fn orth(a: &Mat) -> Mat {
    householder_qr(a).0
}

/// Thin SVD `a = U diag(s) V^T` of an `m x n` matrix with `m >= n` by
/// one-sided (Hestenes) Jacobi, singular values in decreasing order.
///
/// Cost is about `sweeps * n^2 * m` multiply-adds with 6 to 12 sweeps: fine
/// up to a thousand or so columns, slow beyond (use the randomized
/// [`top_svd`] path there).
pub(crate) fn jacobi_svd(a: &Mat) -> Result<(Mat, Vec<f64>, Mat), InitError> {
    let (m, n) = (a.rows, a.cols);
    debug_assert!(m >= n);
    const MAX_SWEEPS: usize = 80;
    let mut u = a.clone();
    let mut v = Mat::zeros(n, n);
    for j in 0..n {
        v.data[j * n + j] = 1.0;
    }
    let eps = f64::EPSILON;
    let mut norms: Vec<f64> = (0..n).map(|j| dot(u.col(j), u.col(j))).collect();
    let mut converged = false;
    for _ in 0..MAX_SWEEPS {
        let mut rotated = false;
        for p in 0..n {
            for q in p + 1..n {
                let alpha = norms[p];
                let beta = norms[q];
                let gamma = dot(u.col(p), u.col(q));
                if gamma == 0.0 || gamma.abs() <= eps * (alpha * beta).sqrt() {
                    continue;
                }
                if !gamma.is_finite() || !alpha.is_finite() || !beta.is_finite() {
                    return Err(InitError::NoConvergence { sweeps: 0 });
                }
                rotated = true;
                let zeta = (beta - alpha) / (2.0 * gamma);
                let t = zeta.signum() / (zeta.abs() + (1.0 + zeta * zeta).sqrt());
                let c = 1.0 / (1.0 + t * t).sqrt();
                let s = c * t;
                rotate(&mut u.data, m, p, q, c, s);
                rotate(&mut v.data, n, p, q, c, s);
                norms[p] = dot(u.col(p), u.col(p));
                norms[q] = dot(u.col(q), u.col(q));
            }
        }
        if !rotated {
            converged = true;
            break;
        }
    }
    if !converged {
        return Err(InitError::NoConvergence { sweeps: MAX_SWEEPS });
    }
    let mut order: Vec<usize> = (0..n).collect();
    let sig: Vec<f64> = norms.iter().map(|x| x.sqrt()).collect();
    order.sort_by(|&x, &y| sig[y].total_cmp(&sig[x]).then(x.cmp(&y)));
    let mut uo = Mat::zeros(m, n);
    let mut vo = Mat::zeros(n, n);
    let mut so = Vec::with_capacity(n);
    for (k, &j) in order.iter().enumerate() {
        let s = sig[j];
        so.push(s);
        let inv = if s > 0.0 { 1.0 / s } else { 0.0 };
        for i in 0..m {
            uo.data[k * m + i] = u.data[j * m + i] * inv;
        }
        vo.data[k * n..(k + 1) * n].copy_from_slice(&v.data[j * n..(j + 1) * n]);
    }
    Ok((uo, so, vo))
}

/// Rotates columns `p < q` of a column-major matrix with `rows` rows.
fn rotate(data: &mut [f64], rows: usize, p: usize, q: usize, c: f64, s: f64) {
    let (a, b) = data.split_at_mut(q * rows);
    let cp = &mut a[p * rows..(p + 1) * rows];
    let cq = &mut b[..rows];
    for (x, y) in cp.iter_mut().zip(cq.iter_mut()) {
        let (xp, xq) = (*x, *y);
        *x = c * xp - s * xq;
        *y = s * xp + c * xq;
    }
}

/// The top `r` singular triplets of `a` (`m x n`, any shape):
/// `(U_r m x r, s_r, V_r n x r)`.
///
/// `sketch = None` runs the exact Jacobi SVD; `Some((omega, niter))` runs
/// randomized subspace iteration from the `n x l` start matrix `omega`
/// (Halko, Martinsson and Tropp 2011, Algorithm 4.4), then an exact SVD of
/// the small projected matrix.
pub(crate) fn top_svd(
    a: &Mat,
    r: usize,
    sketch: Option<(&Mat, usize)>,
) -> Result<(Mat, Vec<f64>, Mat), InitError> {
    let (u, s, v) = match sketch {
        None => full_svd(a)?,
        Some((omega, niter)) => {
            let mut q = orth_any(&a.matmul(omega));
            for _ in 0..niter {
                let z = orth_any(&a.t_matmul(&q));
                q = orth_any(&a.matmul(&z));
            }
            // B = Q^T A (l x n); B = Ub S Vb^T; A ~ (Q Ub) S Vb^T.
            let b = q.t_matmul(a);
            let (ub, s, vb) = full_svd(&b)?;
            (q.matmul(&ub), s, vb)
        }
    };
    Ok((take_cols(&u, r), s[..r].to_vec(), take_cols(&v, r)))
}

/// Orthonormal basis for any shape (columns beyond the row count are
/// impossible for the callers' sketches, which keep `l <= min(m, n)`).
fn orth_any(a: &Mat) -> Mat {
    orth(a)
}

/// Thin SVD of any `m x n` matrix.
fn full_svd(a: &Mat) -> Result<(Mat, Vec<f64>, Mat), InitError> {
    if a.rows >= a.cols {
        jacobi_svd(a)
    } else {
        let (v, s, u) = jacobi_svd(&a.transpose())?;
        Ok((u, s, v))
    }
}

fn take_cols(a: &Mat, r: usize) -> Mat {
    Mat {
        rows: a.rows,
        cols: r,
        data: a.data[..a.rows * r].to_vec(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lcg(n: usize, seed: u64) -> Vec<f32> {
        let mut x = seed;
        (0..n)
            .map(|_| {
                x = x
                    .wrapping_mul(6_364_136_223_846_793_005)
                    .wrapping_add(1_442_695_040_888_963_407);
                ((x >> 40) as f32 / (1u64 << 24) as f32) - 0.5
            })
            .collect()
    }

    #[test]
    fn qr_is_orthonormal_and_reconstructs() {
        for (m, k) in [(5, 5), (9, 4), (40, 17)] {
            let a = Mat::from_row_major(m, k, &lcg(m * k, 3));
            let (q, d) = householder_qr(&a);
            let qtq = q.t_matmul(&q);
            for i in 0..k {
                for j in 0..k {
                    let want = if i == j { 1.0 } else { 0.0 };
                    assert!((qtq.at(i, j) - want).abs() < 1e-13);
                }
            }
            // Q^T A is upper triangular with the returned diagonal.
            let r = q.t_matmul(&a);
            for (i, &di) in d.iter().enumerate() {
                assert!((r.at(i, i) - di).abs() < 1e-12);
                for j in 0..i {
                    assert!(r.at(i, j).abs() < 1e-12);
                }
            }
        }
    }

    #[test]
    fn svd_reconstructs() {
        for (m, n) in [(6, 6), (12, 5), (5, 12), (30, 20)] {
            let a = Mat::from_row_major(m, n, &lcg(m * n, 11));
            let k = m.min(n);
            let (u, s, v) = top_svd(&a, k, None).unwrap();
            for w in s.windows(2) {
                assert!(w[0] >= w[1]);
            }
            for i in 0..m {
                for j in 0..n {
                    let x: f64 = (0..k).map(|t| u.at(i, t) * s[t] * v.at(j, t)).sum();
                    assert!((x - a.at(i, j)).abs() < 1e-12, "{m}x{n} ({i},{j})");
                }
            }
        }
    }
}
