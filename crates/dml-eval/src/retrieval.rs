//! Retrieval scores from neighbour lists.
//!
//! Everything here works on one query at a time, given the labels of its neighbours (closest
//! first, the query itself already left out) and R, the number of same-class references it has.
//! That keeps the scores independent of how the neighbours were found and lets [`crate::evaluate`]
//! stream blocks of queries through the k-NN search without ever holding an n×n matrix.

use std::collections::HashMap;

/// Running sums of the per-query scores; merged across threads and blocks, divided at the end.
///
/// Hit counts are integers and the fractional scores are summed in `f64`, so the result does not
/// depend on how queries were split into blocks beyond the last bits of the `f64` sums.
#[derive(Debug, Clone)]
pub(crate) struct Accumulator {
    /// Number of queries with a hit within the first `k` neighbours, one per requested K.
    recall_hits: Vec<u64>,
    precision_at_1_hits: u64,
    r_precision_sum: f64,
    map_at_r_sum: f64,
    /// Queries that have at least one same-class reference.
    n_scored: u64,
    /// Queries that have none (left out of every retrieval score).
    n_without_positive: u64,
    /// Scratch: the ranks of one query's relevant neighbours, then their precisions.
    ranks: Vec<f64>,
}

impl Accumulator {
    pub(crate) fn new(n_recall: usize) -> Self {
        Self {
            recall_hits: vec![0; n_recall],
            precision_at_1_hits: 0,
            r_precision_sum: 0.0,
            map_at_r_sum: 0.0,
            n_scored: 0,
            n_without_positive: 0,
            ranks: Vec::new(),
        }
    }

    /// Adds one query.
    ///
    /// `neighbour_labels` holds at least `max(ks)` labels, closest first, and at least `r` when
    /// `r_metrics` is set; `ks` are the recall cut-offs already capped at the number of
    /// candidates.
    pub(crate) fn add(
        &mut self,
        label: u32,
        r: usize,
        neighbour_labels: &[u32],
        ks: &[usize],
        r_metrics: bool,
    ) {
        if r == 0 {
            self.n_without_positive += 1;
            return;
        }
        self.n_scored += 1;
        // Position of the first same-class neighbour decides every Recall@K at once.
        let first_hit = neighbour_labels.iter().position(|&l| l == label);
        if let Some(pos) = first_hit {
            for (hits, &k) in self.recall_hits.iter_mut().zip(ks) {
                *hits += u64::from(pos < k);
            }
            self.precision_at_1_hits += u64::from(pos == 0);
        }
        if !r_metrics {
            return;
        }
        // R-precision and MAP@R look at the first R neighbours only. The precision at each
        // relevant rank, P@i = (relevant so far) / i, is a division per hit: the quotients are
        // computed in one branch-free, vectorisable pass and then summed in rank order (so the
        // f64 sum is the same bits as adding them one hit at a time).
        let ranks = &mut self.ranks;
        ranks.clear();
        ranks.resize(r, 0.0);
        let mut n_relevant = 0usize;
        for (i, &l) in neighbour_labels[..r].iter().enumerate() {
            ranks[n_relevant] = (i + 1) as f64;
            n_relevant += usize::from(l == label);
        }
        let ranks = &mut ranks[..n_relevant];
        for (j, p) in ranks.iter_mut().enumerate() {
            *p = (j + 1) as f64 / *p;
        }
        let precision_sum = ranks.iter().fold(0.0f64, |acc, &p| acc + p);
        let r = r as f64;
        self.r_precision_sum += n_relevant as f64 / r;
        self.map_at_r_sum += precision_sum / r;
    }

    pub(crate) fn merge(mut self, other: Self) -> Self {
        for (a, b) in self.recall_hits.iter_mut().zip(&other.recall_hits) {
            *a += b;
        }
        self.precision_at_1_hits += other.precision_at_1_hits;
        self.r_precision_sum += other.r_precision_sum;
        self.map_at_r_sum += other.map_at_r_sum;
        self.n_scored += other.n_scored;
        self.n_without_positive += other.n_without_positive;
        self
    }

    pub(crate) fn n_scored(&self) -> u64 {
        self.n_scored
    }

    pub(crate) fn n_without_positive(&self) -> u64 {
        self.n_without_positive
    }

    /// `(recall per K, precision@1, R-precision, MAP@R)`; call only when `n_scored > 0`.
    pub(crate) fn finish(&self) -> (Vec<f64>, f64, f64, f64) {
        let n = self.n_scored as f64;
        (
            self.recall_hits.iter().map(|&h| h as f64 / n).collect(),
            self.precision_at_1_hits as f64 / n,
            self.r_precision_sum / n,
            self.map_at_r_sum / n,
        )
    }
}

/// Number of items of each class.
pub(crate) fn class_counts(labels: &[u32]) -> HashMap<u32, usize> {
    let mut counts = HashMap::new();
    for &l in labels {
        *counts.entry(l).or_insert(0) += 1;
    }
    counts
}
