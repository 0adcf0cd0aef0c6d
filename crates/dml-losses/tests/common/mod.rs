//! Helpers shared by the integration tests.
#![allow(dead_code)]

use dml_losses::{Loss, LossConfig, LossContext, Tuples};
use tch::{Device, Kind, Tensor, nn};

/// A loss built from a config, with its own var store switched to f64.
pub struct Built {
    pub vs: nn::VarStore,
    pub loss: Box<dyn Loss>,
}

pub fn build(cfg: &LossConfig, n_classes: usize) -> Built {
    build_dim(cfg, n_classes, 0)
}

/// [`build`] for a loss with per-class vectors of `dim` entries.
pub fn build_dim(cfg: &LossConfig, n_classes: usize, dim: usize) -> Built {
    let mut vs = nn::VarStore::new(Device::Cpu);
    vs.set_kind(Kind::Double);
    let loss = cfg
        .build(&(vs.root() / "loss"), LossContext::new(n_classes, dim))
        .expect("valid config");
    Built { vs, loss }
}

/// f64 tensor `(n, d)` from row-major values.
pub fn tensor(values: &[f64], n: usize, d: usize) -> Tensor {
    Tensor::from_slice(values).view([n as i64, d as i64])
}

pub fn to_vec(t: &Tensor) -> Vec<f64> {
    let t = t.to_kind(Kind::Double).flatten(0, -1);
    let mut out = vec![0.0; t.numel()];
    t.copy_data(&mut out, t.numel());
    out
}

/// Loss value and gradient with respect to the embeddings.
pub fn value_and_grad(
    loss: &dyn Loss,
    x: &Tensor,
    labels: &[u32],
    tuples: Option<&Tuples>,
) -> (f64, Vec<f64>) {
    let x = x.detach().set_requires_grad(true);
    let v = loss.forward(&x, labels, tuples).expect("forward");
    v.backward();
    (v.double_value(&[]), to_vec(&x.grad()))
}

/// Central finite differences of the loss with respect to each embedding coordinate.
pub fn numeric_grad(
    loss: &dyn Loss,
    x: &Tensor,
    labels: &[u32],
    tuples: Option<&Tuples>,
) -> Vec<f64> {
    let h = 1e-6;
    let base = to_vec(x);
    let size = x.size();
    let f = |v: &[f64]| {
        let t = Tensor::from_slice(v).view(size.as_slice());
        tch::no_grad(|| {
            loss.forward(&t, labels, tuples)
                .expect("forward")
                .double_value(&[])
        })
    };
    (0..base.len())
        .map(|i| {
            let mut plus = base.clone();
            let mut minus = base.clone();
            plus[i] += h;
            minus[i] -= h;
            (f(&plus) - f(&minus)) / (2.0 * h)
        })
        .collect()
}

/// Deterministic pseudo-random f64 embeddings (a small LCG, independent of libtorch's RNG).
pub fn embeddings(seed: u64, n: usize, d: usize, scale: f64) -> Tensor {
    let mut s = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    let mut v = Vec::with_capacity(n * d);
    for _ in 0..n * d {
        s = s
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let u = ((s >> 11) as f64) / ((1u64 << 53) as f64);
        v.push(scale * (2.0 * u - 1.0));
    }
    tensor(&v, n, d)
}

pub fn assert_close(got: &[f64], want: &[f64], rtol: f64, atol: f64, what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(
            (g - w).abs() <= atol + rtol * w.abs(),
            "{what}[{i}]: got {g}, want {w} (|diff| = {:e})",
            (g - w).abs()
        );
    }
}
