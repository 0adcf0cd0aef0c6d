//! The tensor versions agree with the ndarray kernels and have finite gradients.
#![cfg(feature = "tch")]

use dml_kernels::{Error, Metric, tensor};
use ndarray::{Array2, ArrayView2};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tch::{Device, Kind, Tensor};

fn random(n: usize, d: usize, seed: u64) -> Array2<f32> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    Array2::from_shape_simple_fn((n, d), || rng.random_range(-1.0_f32..1.0))
}

fn to_tensor(x: ArrayView2<'_, f32>) -> Tensor {
    let (n, d) = x.dim();
    let v: Vec<f32> = x.iter().copied().collect();
    Tensor::from_slice(&v).reshape([n as i64, d as i64])
}

fn to_array(t: &Tensor) -> Array2<f32> {
    let size = t.size();
    let t = t.to_kind(Kind::Float).contiguous();
    let v = Vec::<f32>::try_from(&t.view([-1])).expect("float tensor");
    Array2::from_shape_vec((size[0] as usize, size[1] as usize), v).expect("shape")
}

/// Tolerance: the tensor and ndarray kernels both use the GEMM form in f32 but round differently
/// (LibTorch's sgemm vs ours, normalise-then-multiply vs scale-after for cosine); 1e-4 relative to
/// the rows' squared norms covers it with margin (inputs are in [-1, 1]^16).
const TOL: f32 = 1e-4;

#[test]
fn pairwise_matches_ndarray() {
    let a = random(13, 16, 1);
    let b = random(7, 16, 2);
    for metric in Metric::ALL {
        let want = dml_kernels::pairwise(metric, a.view(), b.view()).expect("pairwise");
        let got = to_array(
            &tensor::pairwise(metric, &to_tensor(a.view()), &to_tensor(b.view())).expect("tensor"),
        );
        for ((i, j), &g) in got.indexed_iter() {
            let w = want[[i, j]];
            if metric == Metric::Euclidean {
                // Compared squared, relative to the rows' squared norms: near zero, sqrt turns
                // an f32 rounding of the GEMM form into a large absolute difference, but the
                // squares of both sides stay within rounding of each other.
                let scale = a.row(i).dot(&a.row(i)) + b.row(j).dot(&b.row(j));
                assert!((g * g - w * w).abs() <= TOL * scale, "{metric}: {g} vs {w}");
            } else {
                assert!((g - w).abs() <= TOL * 16.0, "{metric}: {g} vs {w}");
            }
        }
    }
}

#[test]
fn self_pairwise_matches_ndarray() {
    let x = random(11, 16, 3);
    for metric in Metric::ALL {
        let want = dml_kernels::self_pairwise(metric, x.view()).expect("self_pairwise");
        let got = to_array(&tensor::self_pairwise(metric, &to_tensor(x.view())).expect("tensor"));
        for (g, w) in got.iter().zip(want.iter()) {
            assert!((g - w).abs() <= 1e-3, "{metric}: {g} vs {w}");
        }
        if !metric.is_similarity() {
            for i in 0..11 {
                assert_eq!(got[[i, i]], 0.0);
            }
        }
        assert_eq!(got, got.t().to_owned(), "{metric} not symmetric");
    }
}

#[test]
fn gradients_are_finite_at_identical_rows_and_zero_rows() {
    let mut x = random(6, 8, 4);
    // Rows 1 and 2 identical, row 3 zero.
    let r1 = x.row(1).to_owned();
    x.row_mut(2).assign(&r1);
    x.row_mut(3).fill(0.0);
    for metric in Metric::ALL {
        for self_version in [true, false] {
            let t = to_tensor(x.view()).set_requires_grad(true);
            let d = if self_version {
                tensor::self_pairwise(metric, &t)
            } else {
                tensor::pairwise(metric, &t, &t)
            }
            .expect("pairwise");
            d.sum(Kind::Float).backward();
            let g = to_array(&t.grad());
            assert!(
                g.iter().all(|v| v.is_finite()),
                "{metric} self={self_version}: {g:?}"
            );
        }
    }
    let t = to_tensor(x.view()).set_requires_grad(true);
    let u = tensor::l2_normalize(&t);
    u.sum(Kind::Float).backward();
    assert!(to_array(&t.grad()).iter().all(|v| v.is_finite()));
    assert!(to_array(&u).iter().all(|v| v.is_finite()));
}

#[test]
fn l2_normalize_matches_ndarray() {
    let mut x = random(5, 8, 5);
    x.row_mut(0).fill(0.0);
    let want = dml_kernels::l2_normalize(x.view());
    let got = to_array(&tensor::l2_normalize(&to_tensor(x.view())));
    for (g, w) in got.iter().zip(want.iter()) {
        assert!((g - w).abs() <= 1e-6, "{g} vs {w}");
    }
}

#[test]
fn shape_errors() {
    let a = Tensor::zeros([3, 4], (Kind::Float, Device::Cpu));
    let b = Tensor::zeros([3, 5], (Kind::Float, Device::Cpu));
    let v = Tensor::zeros([3], (Kind::Float, Device::Cpu));
    assert!(matches!(
        tensor::pairwise(Metric::Euclidean, &a, &b),
        Err(Error::DimensionMismatch {
            left_dim: 4,
            right_dim: 5,
            ..
        })
    ));
    assert!(matches!(
        tensor::self_pairwise(Metric::Dot, &v),
        Err(Error::NotAMatrix { name: "x", .. })
    ));
}

/// `(d * w).sum()`'s gradient with respect to `x` (and `y` when given), for a fixed weight `w`.
fn weighted_grads(d: impl Fn(&Tensor, &Tensor) -> Tensor, x: &Tensor, y: &Tensor) -> [Tensor; 2] {
    let (xg, yg) = (
        x.detach().set_requires_grad(true),
        y.detach().set_requires_grad(true),
    );
    let out = d(&xg, &yg);
    let w = Tensor::arange(out.numel() as i64, (Kind::Double, Device::Cpu))
        .view(out.size().as_slice())
        .sin()
        .to_kind(out.kind());
    (out * w).sum(Kind::Double).backward();
    [xg.grad(), yg.grad()]
}

/// The distances by explicit differences `x_i − y_j` (no GEMM form), in f64; `sqrt(sq + eye)` on
/// the self version keeps the (constant, zero) diagonal's gradient out of the picture.
fn naive_distances(metric: Metric, x: &Tensor, y: &Tensor, same: bool) -> Tensor {
    let sq = (x.unsqueeze(1) - y.unsqueeze(0)).square().sum_dim_intlist(
        [-1_i64].as_slice(),
        false,
        Kind::Double,
    );
    let n = sq.size()[0];
    let eye = Tensor::eye(n, (Kind::Double, Device::Cpu));
    let off = if same {
        eye.ones_like() - &eye
    } else {
        eye.ones_like()
    };
    match metric {
        Metric::Euclidean if same => (sq + &eye).sqrt() * off,
        Metric::Euclidean => sq.sqrt(),
        _ => sq * off,
    }
}

#[test]
fn gradients_match_explicit_differences() {
    let x = to_tensor(random(9, 8, 6).view()).to_kind(Kind::Double);
    let y = to_tensor(random(9, 8, 7).view()).to_kind(Kind::Double);
    for metric in [Metric::Euclidean, Metric::SquaredEuclidean] {
        // Self: only x's gradient (y unused).
        let [got, _] = weighted_grads(
            |a, _| tensor::self_pairwise(metric, &a.to_kind(Kind::Float)).expect("self"),
            &x,
            &y,
        );
        let [want, _] = weighted_grads(|a, _| naive_distances(metric, a, a, true), &x, &y);
        let err = f64::try_from((&got - &want).abs().max()).expect("scalar");
        assert!(err < 1e-3, "{metric} self: max gradient error {err}");
        // Two matrices.
        let got = weighted_grads(
            |a, b| {
                tensor::pairwise(metric, &a.to_kind(Kind::Float), &b.to_kind(Kind::Float))
                    .expect("pairwise")
            },
            &x,
            &y,
        );
        let want = weighted_grads(|a, b| naive_distances(metric, a, b, false), &x, &y);
        for (g, w) in got.iter().zip(&want) {
            let err = f64::try_from((g - w).abs().max()).expect("scalar");
            assert!(err < 1e-3, "{metric} pairwise: max gradient error {err}");
        }
    }
}

#[test]
fn other_float_kinds() {
    let x = random(10, 16, 8);
    let want = dml_kernels::self_pairwise(Metric::Euclidean, x.view()).expect("ndarray");
    for (kind, tol) in [
        (Kind::Double, 1e-4),
        (Kind::Half, 5e-2),
        (Kind::BFloat16, 5e-2),
    ] {
        let t = to_tensor(x.view()).to_kind(kind);
        let got = to_array(&tensor::self_pairwise(Metric::Euclidean, &t).expect("tensor"));
        for (g, w) in got.iter().zip(want.iter()) {
            assert!((g - w).abs() <= tol * w.max(1.0), "{kind:?}: {g} vs {w}");
        }
        assert!((0..10).all(|i| got[[i, i]] == 0.0), "{kind:?} diagonal");
        assert_eq!(got, got.t().to_owned(), "{kind:?} not symmetric");
        let d = tensor::pairwise(Metric::Euclidean, &t, &t).expect("pairwise");
        assert!(to_array(&d).iter().all(|v| v.is_finite()), "{kind:?}");
    }
}

#[test]
fn zero_distances_are_exact_zeros_with_zero_gradient() {
    // Row 1 repeats row 0; pairwise(x, x) has zeros on its diagonal and at (0, 1), (1, 0).
    let mut x = random(4, 8, 9);
    let r0 = x.row(0).to_owned();
    x.row_mut(1).assign(&r0);
    let t = to_tensor(x.view()).set_requires_grad(true);
    let d = tensor::pairwise(Metric::Euclidean, &t, &t).expect("pairwise");
    let v = to_array(&d);
    // The GEMM form leaves rounding noise of order sqrt(ulp(‖x‖²)) where the distance is zero;
    // what matters is that it is small and that an exact zero has a zero gradient.
    assert!(v[[0, 1]] < 1e-2 && v[[0, 0]] < 1e-2, "{v:?}");
    d.sum(Kind::Float).backward();
    assert!(to_array(&t.grad()).iter().all(|g| g.is_finite()));
    let z = Tensor::zeros([3, 4], (Kind::Float, Device::Cpu)).set_requires_grad(true);
    let d = tensor::pairwise(Metric::Euclidean, &z, &z).expect("pairwise");
    assert_eq!(to_array(&d), Array2::<f32>::zeros((3, 3)));
    d.sum(Kind::Float).backward();
    assert_eq!(to_array(&z.grad()), Array2::<f32>::zeros((3, 4)));
}

/// Arrays enter and leave LibTorch unchanged: any strides (a transposed view), any shape, any
/// floating kind on the way out; a tensor that is not a matrix is refused by name.
#[test]
fn array_conversions_round_trip() {
    let a = random(5, 3, 11);
    let t = tensor::from_array(a.t()).expect("from a transposed view");
    assert_eq!(t.size(), vec![3, 5]);
    let back = tensor::to_array2(&t).expect("to an array");
    assert_eq!(back, a.t().to_owned());
    let back = tensor::to_array2(&t.to_kind(Kind::Double).set_requires_grad(true)).expect("f64");
    assert_eq!(back, a.t().to_owned());
    let cube = ndarray::Array3::from_shape_fn((2, 3, 4), |(i, j, k)| (i * 12 + j * 4 + k) as f32);
    let t = tensor::from_array(cube.view()).expect("rank 3");
    assert_eq!(t.size(), vec![2, 3, 4]);
    assert_eq!(f64::try_from(t.get(1).get(2).get(3)).expect("scalar"), 23.0);
    let err = tensor::to_array2(&t).expect_err("rank 3 is not a matrix");
    assert!(
        matches!(err, Error::NotAMatrix { ref shape, .. } if shape == &[2, 3, 4]),
        "{err}"
    );
}
