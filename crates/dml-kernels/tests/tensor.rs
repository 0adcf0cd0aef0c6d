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
        for (g, w) in got.iter().zip(want.iter()) {
            let tol = if metric == Metric::Euclidean {
                1e-2_f32.max(TOL)
            } else {
                TOL * 16.0
            };
            assert!((g - w).abs() <= tol, "{metric}: {g} vs {w}");
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
