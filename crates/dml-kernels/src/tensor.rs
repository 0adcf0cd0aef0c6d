//! The same metrics on `tch::Tensor`, differentiable (feature `tch`).
//!
//! These follow the definitions of the ndarray kernels ([`crate::pairwise`],
//! [`crate::l2_normalize`]) and are tested against them. They run on the tensors' device and keep
//! the autograd graph, so losses can backpropagate through them.
//!
//! The Euclidean distance is `sqrt(clamp(‖a‖² + ‖b‖² − 2·a·bᵀ, 0))` with the square root taken
//! only where its argument is positive and zero elsewhere: the value is the same, but the gradient
//! at zero distance is zero instead of the NaN that `sqrt(0)`'s infinite slope would give.
//! Cosine is `l2_normalize(a) · l2_normalize(b)ᵀ`, not clamped (to keep its gradient everywhere).

use tch::{Kind, Tensor};

use crate::{Error, Metric, NORM_EPS, Result};

/// Rows scaled to unit norm: `x / max(‖x‖₂, NORM_EPS)` along the last dimension, like
/// `torch.nn.functional.normalize`. A zero row stays zero, with a finite (zero) gradient.
///
/// # Panics
/// If `x` is a scalar (rank 0) or not a floating-point tensor; [`f_l2_normalize`] returns the
/// error instead.
pub fn l2_normalize(x: &Tensor) -> Tensor {
    match f_l2_normalize(x) {
        Ok(t) => t,
        Err(e) => panic!("l2_normalize: {e}"),
    }
}

/// [`l2_normalize`] returning LibTorch's error instead of panicking.
///
/// # Errors
/// [`Error::Torch`] if LibTorch rejects the tensor (a scalar, an integer tensor).
pub fn f_l2_normalize(x: &Tensor) -> Result<Tensor> {
    let norm = x
        .f_norm_scalaropt_dim(2.0, [-1_i64].as_slice(), true)?
        .f_clamp_min(f64::from(NORM_EPS))?;
    Ok(x.f_div(&norm)?)
}

fn check_matrix(x: &Tensor, name: &'static str) -> Result<i64> {
    match x.size().as_slice() {
        &[_, d] => Ok(d),
        shape => Err(Error::NotAMatrix {
            name,
            shape: shape.to_vec(),
        }),
    }
}

/// `‖a_i‖²` as a column (n×1).
fn squared_norms(x: &Tensor) -> Result<Tensor> {
    Ok(x.f_square()?
        .f_sum_dim_intlist([1_i64].as_slice(), true, None::<Kind>)?)
}

/// `sqrt` where `sq > 0`, zero elsewhere, with a finite gradient everywhere.
fn safe_sqrt(sq: &Tensor) -> Result<Tensor> {
    let positive = sq.f_gt(0.0)?;
    let safe = sq.f_where_self(&positive, &sq.f_ones_like()?)?;
    Ok(safe
        .f_sqrt()?
        .f_where_self(&positive, &sq.f_zeros_like()?)?)
}

/// The pairwise matrix `metric(a[i], b[j])` (n×m) of two n×d and m×d tensors, differentiable.
///
/// # Errors
/// [`Error::NotAMatrix`] unless both are rank 2, [`Error::DimensionMismatch`] if their
/// numbers of columns differ, [`Error::Torch`] for LibTorch's own errors (kinds, devices).
pub fn pairwise(metric: Metric, a: &Tensor, b: &Tensor) -> Result<Tensor> {
    let da = check_matrix(a, "a")?;
    let db = check_matrix(b, "b")?;
    if da != db {
        return Err(Error::DimensionMismatch {
            left: "a",
            left_dim: da as usize,
            right: "b",
            right_dim: db as usize,
        });
    }
    match metric {
        Metric::Euclidean => safe_sqrt(&squared(a, b)?),
        Metric::SquaredEuclidean => squared(a, b),
        Metric::Cosine => Ok(f_l2_normalize(a)?.f_mm(&f_l2_normalize(b)?.f_tr()?)?),
        Metric::Dot => Ok(a.f_mm(&b.f_tr()?)?),
    }
}

/// `clamp(‖a‖² + ‖b‖² − 2·a·bᵀ, 0)`.
fn squared(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    let na = squared_norms(a)?;
    let nb = squared_norms(b)?.f_tr()?;
    let ab = a.f_mm(&b.f_tr()?)?;
    Ok(na
        .f_add(&nb)?
        .f_sub(&ab.f_mul_scalar(2.0)?)?
        .f_clamp_min(0.0)?)
}

/// The pairwise matrix of `x` (n×d) with itself (n×n), differentiable.
///
/// Symmetric; for the distances the diagonal is exactly zero with a zero gradient, so identical
/// rows never produce NaN.
///
/// # Errors
/// [`Error::NotAMatrix`] unless `x` is rank 2, [`Error::Torch`] for LibTorch's own errors.
pub fn self_pairwise(metric: Metric, x: &Tensor) -> Result<Tensor> {
    check_matrix(x, "x")?;
    let n = x.size()[0];
    let raw = match metric {
        Metric::Euclidean | Metric::SquaredEuclidean => squared(x, x)?,
        Metric::Cosine => {
            let u = f_l2_normalize(x)?;
            u.f_mm(&u.f_tr()?)?
        }
        Metric::Dot => x.f_mm(&x.f_tr()?)?,
    };
    // Average with the transpose so the result is symmetric whatever the GEMM's rounding.
    let sym = raw.f_add(&raw.f_tr()?)?.f_mul_scalar(0.5)?;
    if metric.is_similarity() {
        return Ok(sym);
    }
    let eye = Tensor::f_eye(n, (Kind::Bool, x.device()))?;
    let sq = sym.f_masked_fill(&eye, 0.0)?;
    match metric {
        Metric::Euclidean => safe_sqrt(&sq),
        _ => Ok(sq),
    }
}
