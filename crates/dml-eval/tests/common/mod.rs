//! Naive oracles for the tests: full distance matrix, full sort, definitions spelled out.

#![allow(dead_code)]

use dml_kernels::Metric;
use ndarray::{Array2, ArrayView2};

/// Scores of every (query, reference) pair in f64, "smaller is closer" for all metrics.
pub fn naive_rank_keys(
    metric: Metric,
    q: ArrayView2<'_, f32>,
    r: ArrayView2<'_, f32>,
) -> Array2<f64> {
    let mut out = Array2::zeros((q.nrows(), r.nrows()));
    for i in 0..q.nrows() {
        for j in 0..r.nrows() {
            let a = q.row(i);
            let b = r.row(j);
            let dot: f64 = a
                .iter()
                .zip(b)
                .map(|(&x, &y)| f64::from(x) * f64::from(y))
                .sum();
            let na: f64 = a.iter().map(|&x| f64::from(x).powi(2)).sum::<f64>().sqrt();
            let nb: f64 = b.iter().map(|&x| f64::from(x).powi(2)).sum::<f64>().sqrt();
            let d2: f64 = a
                .iter()
                .zip(b)
                .map(|(&x, &y)| (f64::from(x) - f64::from(y)).powi(2))
                .sum();
            out[[i, j]] = match metric {
                Metric::Euclidean => d2.sqrt(),
                Metric::SquaredEuclidean => d2,
                Metric::Cosine => -dot / (na * nb).max(1e-12),
                Metric::Dot => -dot,
            } + 0.0; // -0.0 -> 0.0, so that total_cmp sees ties as ties
        }
    }
    out
}

/// Reference scores computed straight from the definitions.
#[derive(Debug)]
pub struct Naive {
    pub recall: Vec<f64>,
    pub p1: f64,
    pub r_precision: f64,
    pub map_at_r: f64,
    pub n_without_positive: usize,
}

/// `ranked[i]` = labels of query i's candidates, closest first (self already removed).
pub fn naive_scores(query_labels: &[u32], ranked: &[Vec<u32>], ks: &[usize]) -> Option<Naive> {
    let mut recall = vec![0.0; ks.len()];
    let (mut p1, mut rp, mut map, mut n, mut lone) = (0.0, 0.0, 0.0, 0usize, 0usize);
    for (&y, cand) in query_labels.iter().zip(ranked) {
        let r = cand.iter().filter(|&&l| l == y).count();
        if r == 0 {
            lone += 1;
            continue;
        }
        n += 1;
        for (acc, &k) in recall.iter_mut().zip(ks) {
            if cand.iter().take(k).any(|&l| l == y) {
                *acc += 1.0;
            }
        }
        if cand[0] == y {
            p1 += 1.0;
        }
        rp += cand[..r].iter().filter(|&&l| l == y).count() as f64 / r as f64;
        let mut ap = 0.0;
        for i in 0..r {
            if cand[i] == y {
                let prec = cand[..=i].iter().filter(|&&l| l == y).count() as f64 / (i + 1) as f64;
                ap += prec;
            }
        }
        map += ap / r as f64;
    }
    if n == 0 {
        return None;
    }
    let nf = n as f64;
    Some(Naive {
        recall: recall.into_iter().map(|v| v / nf).collect(),
        p1: p1 / nf,
        r_precision: rp / nf,
        map_at_r: map / nf,
        n_without_positive: lone,
    })
}

/// Ranked candidate labels for each query; in leave-one-out mode `query` is `reference` and the
/// query's own index is skipped. Ties: lower index first.
pub fn naive_ranking(
    metric: Metric,
    query: ArrayView2<'_, f32>,
    reference: ArrayView2<'_, f32>,
    reference_labels: &[u32],
    leave_one_out: bool,
) -> Vec<Vec<u32>> {
    let keys = naive_rank_keys(metric, query, reference);
    (0..query.nrows())
        .map(|i| {
            let mut order: Vec<usize> = (0..reference.nrows())
                .filter(|&j| !(leave_one_out && j == i))
                .collect();
            order.sort_by(|&a, &b| keys[[i, a]].total_cmp(&keys[[i, b]]).then(a.cmp(&b)));
            order.into_iter().map(|j| reference_labels[j]).collect()
        })
        .collect()
}
