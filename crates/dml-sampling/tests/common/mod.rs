//! Naive references and helpers shared by the miner tests.

#![allow(dead_code)]

use dml_kernels::Metric;
use dml_sampling::{Pairs, Triplets, Tuples};
use ndarray::Array2;
use proptest::prelude::*;
use rand::SeedableRng;

fn unit(v: &[f32]) -> Vec<f64> {
    let n = v
        .iter()
        .map(|&a| f64::from(a) * f64::from(a))
        .sum::<f64>()
        .sqrt()
        .max(1e-6);
    v.iter().map(|&a| f64::from(a) / n).collect()
}

/// Naive `q × r` metric matrix of unit-normalised points (so every metric is meaningful for
/// every miner); `cross(x, x, metric)` is a batch's own matrix.
pub fn cross(q: &[Vec<f32>], r: &[Vec<f32>], metric: Metric) -> Array2<f32> {
    let (uq, ur): (Vec<_>, Vec<_>) = (
        q.iter().map(|v| unit(v)).collect(),
        r.iter().map(|v| unit(v)).collect(),
    );
    Array2::from_shape_fn((q.len(), r.len()), |(i, j)| {
        let dot: f64 = uq[i].iter().zip(&ur[j]).map(|(a, b)| a * b).sum();
        let sq: f64 = uq[i]
            .iter()
            .zip(&ur[j])
            .map(|(a, b)| (a - b) * (a - b))
            .sum();
        (match metric {
            Metric::Euclidean => sq.sqrt(),
            Metric::SquaredEuclidean => sq,
            Metric::Cosine | Metric::Dot => dot,
        }) as f32
    })
}

/// Dissimilarity: smaller is closer, whatever the metric.
pub fn dis(metric: Metric, x: f32) -> f32 {
    if metric.is_similarity() { -x } else { x }
}

pub fn rng() -> rand_chacha::ChaCha8Rng {
    rand_chacha::ChaCha8Rng::seed_from_u64(7)
}

pub fn trip(t: Tuples) -> Triplets {
    match t {
        Tuples::Triplets(t) => t,
        Tuples::Pairs(_) => panic!("expected triplets"),
    }
}

pub fn pairs(t: Tuples) -> Pairs {
    match t {
        Tuples::Pairs(p) => p,
        Tuples::Triplets(_) => panic!("expected pairs"),
    }
}

pub fn all_metrics() -> impl Strategy<Value = Metric> {
    prop::sample::select(Metric::ALL.to_vec())
}
