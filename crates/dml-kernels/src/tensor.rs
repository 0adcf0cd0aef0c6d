//! The same metrics on `tch::Tensor`, differentiable (feature `tch`).
//!
//! These follow the definitions of the ndarray kernels ([`crate::pairwise`],
//! [`crate::l2_normalize`]) and are tested against them. They run on the tensors' device and keep
//! the autograd graph, so losses can backpropagate through them.
//!
//! They are written for few full-matrix passes, forward and backward, since losses call them on
//! every step:
//!
//! - [`pairwise`] forms squared distances with one matrix product of rows augmented by their
//!   squared norms, `[−2a, ‖a‖², 1] · [b, 1, ‖b‖²]ᵀ = ‖a‖² + ‖b‖² − 2·a·bᵀ` (as `torch.cdist`
//!   does), then clamps at zero (`relu`, whose backward is a single pass).
//! - [`self_pairwise`] takes the norms from the Gram matrix's own diagonal, `h = diag(G) − G` and
//!   `d² = h + hᵀ`: the sum is symmetric bit for bit (addition commutes) and its diagonal is
//!   exactly zero; so is the distance between two identical rows whenever the GEMM rounds their
//!   product like each row's product with itself (LibTorch's CPU GEMM does).
//! - The Euclidean square root is `sqrt(max(d², t)) − sqrt(t)` with `t` the smallest normal
//!   number of the type (`sqrt(t)` is a power of two, so it cancels exactly): a squared distance
//!   under `t` gives exactly zero with a zero gradient (instead of the NaN that `sqrt`'s infinite
//!   slope at zero would give), and any distance above about `1e-11` (f32) is unchanged, because
//!   subtracting `sqrt(t)` is below half its rounding step. Types whose smallest normal is not
//!   that small (f16) take a slower masked square root instead.
//!
//! Cosine is `l2_normalize(a) · l2_normalize(b)ᵀ`, not clamped (to keep its gradient everywhere).

use ndarray::{Array2, ArrayView, Dimension};
use tch::{Device, Kind, Tensor};

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

/// An `f32` array of any shape and strides as a CPU tensor of the same shape (one copy): how
/// batches, embeddings and memory rows held as ndarrays enter LibTorch.
///
/// # Errors
/// [`Error::Torch`] if LibTorch cannot allocate the tensor.
pub fn from_array<D: Dimension>(x: ArrayView<'_, f32, D>) -> Result<Tensor> {
    let shape: Vec<i64> = x.shape().iter().map(|&d| d as i64).collect();
    let copied: Vec<f32>;
    let data = match x.as_slice() {
        Some(s) => s,
        None => {
            // Any other layout: the elements in logical (row-major) order.
            copied = x.iter().copied().collect();
            &copied
        }
    };
    Ok(Tensor::f_from_slice(data)?.f_view(shape.as_slice())?)
}

/// A matrix of any floating-point kind, on any device, as a detached `f32` array (one copy):
/// how embeddings leave LibTorch for the miners, the memory bank and the evaluation.
///
/// # Errors
/// [`Error::NotAMatrix`] unless `t` is rank 2, [`Error::Torch`] for LibTorch's own errors (an
/// integer tensor).
pub fn to_array2(t: &Tensor) -> Result<Array2<f32>> {
    let shape = t.size();
    let &[n, d] = shape.as_slice() else {
        return Err(Error::NotAMatrix {
            name: "tensor",
            shape,
        });
    };
    let t = t
        .f_detach()?
        .f_to_device(Device::Cpu)?
        .f_to_kind(Kind::Float)?
        .f_contiguous()?;
    let v = Vec::<f32>::try_from(&t.f_view([-1])?)?;
    Array2::from_shape_vec((n as usize, d as usize), v).map_err(|_| Error::NotAMatrix {
        name: "tensor",
        shape,
    })
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

/// The smallest positive normal number `t` of a floating-point kind whose `sqrt(t)` is far below
/// the rounding step of any distance that matters; `None` for kinds without one (f16).
fn sqrt_floor(kind: Kind) -> Option<f64> {
    match kind {
        // f32 and bf16 share the exponent range: t = 2⁻¹²⁶, sqrt(t) = 2⁻⁶³.
        Kind::Float | Kind::BFloat16 => Some(f64::from(f32::MIN_POSITIVE)),
        // t = 2⁻¹⁰²², sqrt(t) = 2⁻⁵¹¹.
        Kind::Double => Some(f64::MIN_POSITIVE),
        _ => None,
    }
}

/// `sqrt(max(sq, 0))` with a finite gradient everywhere (zero where `sq` is not positive).
///
/// Where the kind allows, `sqrt(max(sq, t)) − sqrt(t)` (see the module docs): three passes
/// forward, three backward (`threshold` is `max` with a one-pass backward; the constant
/// subtraction has none). Otherwise a masked square root. NaN propagates.
fn finite_sqrt(sq: &Tensor) -> Result<Tensor> {
    match sqrt_floor(sq.kind()) {
        Some(t) => Ok(sq.f_threshold(t, t)?.f_sqrt()?.f_sub_scalar(t.sqrt())?),
        None => {
            let positive = sq.f_gt(0.0)?;
            let safe = sq.f_where_self(&positive, &sq.f_ones_like()?)?;
            Ok(safe
                .f_sqrt()?
                .f_where_self(&positive, &sq.f_zeros_like()?)?)
        }
    }
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
        Metric::Euclidean => finite_sqrt(&squared_raw(a, b)?),
        Metric::SquaredEuclidean => Ok(squared_raw(a, b)?.f_relu()?),
        Metric::Cosine => Ok(f_l2_normalize(a)?.f_mm(&f_l2_normalize(b)?.f_tr()?)?),
        Metric::Dot => Ok(a.f_mm(&b.f_tr()?)?),
    }
}

/// `‖a‖² + ‖b‖² − 2·a·bᵀ`, not clamped, as one product `[−2a, ‖a‖², 1] · [b, 1, ‖b‖²]ᵀ`.
fn squared_raw(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    let na = squared_norms(a)?;
    let nb = squared_norms(b)?;
    let ones_a = na.f_ones_like()?;
    let left = Tensor::f_cat(&[a.f_mul_scalar(-2.0)?, na, ones_a], 1)?;
    let ones_b = nb.f_ones_like()?;
    let right = Tensor::f_cat(&[b.shallow_clone(), ones_b, nb], 1)?;
    Ok(left.f_mm(&right.f_tr()?)?)
}

/// The pairwise matrix of `x` (n×d) with itself (n×n), differentiable.
///
/// Symmetric bit for bit; for the distances the diagonal is exactly zero with a zero gradient,
/// and identical rows never produce NaN (their distance is zero with a zero gradient, or, if the
/// GEMM rounds their products apart, a tiny positive value with a finite one).
///
/// # Errors
/// [`Error::NotAMatrix`] unless `x` is rank 2, [`Error::Torch`] for LibTorch's own errors.
pub fn self_pairwise(metric: Metric, x: &Tensor) -> Result<Tensor> {
    check_matrix(x, "x")?;
    match metric {
        Metric::Euclidean | Metric::SquaredEuclidean => {
            // h_ij = x_i·x_i − x_i·x_j, so d²_ij = h_ij + h_ji: exactly symmetric, exactly zero
            // on the diagonal.
            let g = x.f_mm(&x.f_tr()?)?;
            let h = g.f_diagonal(0, 0, 1)?.f_unsqueeze(1)?.f_sub(&g)?;
            let sq = h.f_add(&h.f_tr()?)?;
            if metric == Metric::Euclidean {
                finite_sqrt(&sq)
            } else {
                Ok(sq.f_relu()?)
            }
        }
        // s + sᵀ with s = (x/2)·xᵀ: the average of the product and its transpose (halving is
        // exact), symmetric whatever the GEMM's rounding, in one full-matrix pass.
        Metric::Cosine => symmetric_gram(&f_l2_normalize(x)?),
        Metric::Dot => symmetric_gram(x),
    }
}

/// `(u·uᵀ + (u·uᵀ)ᵀ) / 2`, computed as `s + sᵀ` with `s = (u/2)·uᵀ`.
fn symmetric_gram(u: &Tensor) -> Result<Tensor> {
    let s = u.f_mul_scalar(0.5)?.f_mm(&u.f_tr()?)?;
    Ok(s.f_add(&s.f_tr()?)?)
}
