//! Retrieval scores from the ranks of each query's positives.
//!
//! Every retrieval score of this crate is a function of one query's *hit ranks*: the 1-based
//! positions, in the query's ranking of the references (closest first, the query itself left
//! out), of the references that share its class, together with R (how many there are) and how
//! deep the ranking was searched. From a k-NN list the hit ranks are the positions of the
//! same-class neighbours among the first k; from the whole ranking ([`crate::ranks`]) they are
//! all R of them. That keeps the scores independent of how the ranking was found and lets
//! [`crate::evaluate`] stream blocks of queries through the search without ever holding an n×n
//! matrix.

use std::collections::{BTreeMap, HashMap};

use crate::{
    EvalConfig, Score,
    config::RankingDepth,
    metrics::{ClassScores, PerClass},
};

/// Which scores are computed and at which (capped) depths: built once per evaluation from the
/// config and the number of candidates each query has.
#[derive(Debug, Clone)]
pub(crate) struct Plan {
    /// The scores in report order, each with its slot in the per-query value vector.
    pub(crate) scores: Vec<Score>,
    /// Recall@K cut-offs, capped at the number of candidates, in the config's order.
    recall_at: Vec<usize>,
    r_metrics: bool,
    /// Depth of pml's mean average precision (`usize::MAX`: the whole ranking), if requested.
    map_depth: Option<usize>,
    /// Depth of pml's mean reciprocal rank, if requested.
    mrr_depth: Option<usize>,
    cmc_at: Vec<usize>,
    oml_precision_at: Vec<usize>,
    oml_map_at: Vec<usize>,
    /// Slots `oml_start..` are OML's scores, averaged over every query (lone ones count 0);
    /// the slots before it are averaged over the queries with a positive, as pml does.
    oml_start: usize,
    per_class: bool,
    /// How deep each query's ranking must be known (at most the number of candidates).
    pub(crate) depth: usize,
    /// Whether the whole ranking is needed for a ranking-wide score, so that every position of
    /// every positive must be found rather than the first `depth` neighbours.
    whole: bool,
}

impl Plan {
    /// `n_candidates`: references each query is ranked against; `max_r`: the largest R.
    pub(crate) fn new(cfg: &EvalConfig, n_candidates: usize, max_r: usize) -> Self {
        let cap =
            |ks: &[usize]| -> Vec<usize> { ks.iter().map(|&k| k.min(n_candidates)).collect() };
        let ranking_depth = match cfg.ranking_depth {
            RankingDepth::Whole => usize::MAX,
            RankingDepth::MaxBinCount => max_r.max(1),
            RankingDepth::K(k) => k,
        };
        let map_depth = cfg.mean_average_precision.then_some(ranking_depth);
        let mrr_depth = cfg.mean_reciprocal_rank.then_some(ranking_depth);
        let mut scores: Vec<Score> = cfg.recall_at.iter().map(|&k| Score::RecallAt(k)).collect();
        scores.push(Score::PrecisionAt1);
        if cfg.r_metrics {
            scores.extend([Score::RPrecision, Score::MapAtR]);
        }
        if map_depth.is_some() {
            scores.push(Score::MeanAveragePrecision);
        }
        if mrr_depth.is_some() {
            scores.push(Score::MeanReciprocalRank);
        }
        let oml_start = scores.len();
        scores.extend(cfg.cmc_at.iter().map(|&k| Score::CmcAt(k)));
        scores.extend(
            cfg.oml_precision_at
                .iter()
                .map(|&k| Score::OmlPrecisionAt(k)),
        );
        scores.extend(cfg.oml_map_at.iter().map(|&k| Score::OmlMapAt(k)));
        let recall_at = cap(&cfg.recall_at);
        let cmc_at = cap(&cfg.cmc_at);
        let oml_precision_at = cap(&cfg.oml_precision_at);
        let oml_map_at = cap(&cfg.oml_map_at);
        let mut depth = [&recall_at, &cmc_at, &oml_precision_at, &oml_map_at]
            .into_iter()
            .flatten()
            .copied()
            .max()
            .unwrap_or(0);
        if cfg.r_metrics {
            depth = depth.max(max_r);
        }
        for d in [map_depth, mrr_depth].into_iter().flatten() {
            depth = depth.max(d);
        }
        let whole = (map_depth.is_some() || mrr_depth.is_some())
            && cfg.ranking_depth == RankingDepth::Whole;
        Self {
            scores,
            recall_at,
            r_metrics: cfg.r_metrics,
            map_depth,
            mrr_depth,
            cmc_at,
            oml_precision_at,
            oml_map_at,
            oml_start,
            per_class: cfg.per_class,
            depth: if whole {
                n_candidates
            } else {
                depth.clamp(1, n_candidates.max(1))
            },
            whole,
        }
    }

    /// Whether every position of every positive is needed (a ranking-wide score over the whole
    /// ranking), rather than the first [`depth`](Plan::depth) neighbours.
    pub(crate) fn whole_ranking(&self) -> bool {
        self.whole
    }

    /// The per-query values of one query with a positive, into `out` (one per score, in the
    /// order of `scores`).
    ///
    /// `hits` are the 1-based ranks of its same-class references in increasing order: all of
    /// them up to the plan's depth (so all R when the whole ranking was searched).
    fn values(&self, r: usize, hits: &[u32], out: &mut Vec<f64>) {
        out.clear();
        let first = hits.first().map_or(usize::MAX, |&h| h as usize);
        out.extend(
            self.recall_at
                .iter()
                .map(|&k| f64::from(u8::from(first <= k))),
        );
        out.push(f64::from(u8::from(first == 1)));
        // Σ P@i over the hits at ranks i ≤ depth, P@i = (hits so far) / i: eight running sums
        // (hit j into sum j mod 8), added up in that order at the end. The additions are
        // independent (a single running sum is a chain of dependent additions, 4 cycles each,
        // 7,000 per query in classes of 7,000) and the order is fixed, so the bits are the same
        // on every run; up to eight hits it is the plain sum in rank order.
        let precision_sum = |depth: usize| -> (f64, usize) {
            let n = hits.partition_point(|&h| h as usize <= depth);
            let mut lanes = [0.0f64; 8];
            for (c, chunk) in hits[..n].chunks(8).enumerate() {
                for (l, (lane, &h)) in lanes.iter_mut().zip(chunk).enumerate() {
                    *lane += (8 * c + l + 1) as f64 / f64::from(h);
                }
            }
            (lanes.iter().fold(0.0, |a, &b| a + b), n)
        };
        if self.r_metrics {
            let (sum, n) = precision_sum(r);
            out.push(n as f64 / r as f64);
            out.push(sum / r as f64);
        }
        if let Some(depth) = self.map_depth {
            // pml's mean_average_precision: the precision sum over the first `depth` ranks,
            // divided by R whatever the depth.
            out.push(precision_sum(depth).0 / r as f64);
        }
        if let Some(depth) = self.mrr_depth {
            out.push(if first <= depth {
                1.0 / first as f64
            } else {
                0.0
            });
        }
        out.extend(self.cmc_at.iter().map(|&k| f64::from(u8::from(first <= k))));
        for &k in &self.oml_precision_at {
            // OML: hits among the first k over min(k, R).
            let n = hits.partition_point(|&h| h as usize <= k);
            out.push(n as f64 / k.min(r) as f64);
        }
        for &k in &self.oml_map_at {
            // OML 4: the precision sum over the first k ranks divided by the hits among them
            // (0 without any).
            let (sum, n) = precision_sum(k);
            out.push(if n == 0 { 0.0 } else { sum / n as f64 });
        }
    }
}

/// Running sums of one class's (or all queries') per-query values.
#[derive(Debug, Clone, PartialEq)]
struct Sums {
    /// Queries with a positive.
    n: u64,
    sums: Vec<f64>,
}

impl Sums {
    fn new(n_scores: usize) -> Self {
        Self {
            n: 0,
            sums: vec![0.0; n_scores],
        }
    }

    fn add(&mut self, values: &[f64]) {
        self.n += 1;
        for (s, v) in self.sums.iter_mut().zip(values) {
            *s += v;
        }
    }

    fn merge(&mut self, other: &Sums) {
        self.n += other.n;
        for (s, v) in self.sums.iter_mut().zip(&other.sums) {
            *s += v;
        }
    }
}

/// Running sums of the per-query scores; merged across threads and blocks, divided at the end.
///
/// Queries are added in a fixed order within fixed chunks and chunks are merged in order, so
/// the `f64` sums are the same bits whatever the block size and thread count.
#[derive(Debug, Clone)]
pub(crate) struct Accumulator {
    total: Sums,
    /// Per class, when the plan asks for per-class scores.
    per_class: Option<BTreeMap<u32, Sums>>,
    /// Queries that have no same-class reference (left out of pml's scores, 0 in OML's).
    n_without_positive: u64,
    /// Scratch: one query's values.
    values: Vec<f64>,
}

impl Accumulator {
    pub(crate) fn new(plan: &Plan) -> Self {
        Self {
            total: Sums::new(plan.scores.len()),
            per_class: plan.per_class.then(BTreeMap::new),
            n_without_positive: 0,
            values: Vec::with_capacity(plan.scores.len()),
        }
    }

    /// Adds one query of class `label` with `r` same-class references, whose same-class
    /// references were found at the 1-based ranks `hits` (increasing; every one up to the
    /// plan's depth).
    pub(crate) fn add(&mut self, plan: &Plan, label: u32, r: usize, hits: &[u32]) {
        if r == 0 {
            self.n_without_positive += 1;
            return;
        }
        plan.values(r, hits, &mut self.values);
        self.total.add(&self.values);
        if let Some(classes) = &mut self.per_class {
            classes
                .entry(label)
                .or_insert_with(|| Sums::new(plan.scores.len()))
                .add(&self.values);
        }
    }

    /// Adds one query from the labels of its nearest references (closest first, at least
    /// `min(depth, candidates)` of them); `hits` is scratch space reused from query to query.
    ///
    /// The ranks of the same-class labels are gathered without a branch: each rank is written
    /// at the end of the hits so far, which move on only for a same-class label. Which labels
    /// match is as random as the ranking is poor, so a branch on it was mispredicted about
    /// every other neighbour (a fifth of a raw-pixel evaluation's time outside the GEMM).
    pub(crate) fn add_neighbours(
        &mut self,
        plan: &Plan,
        label: u32,
        r: usize,
        neighbour_labels: impl ExactSizeIterator<Item = u32>,
        hits: &mut Vec<u32>,
    ) {
        if hits.len() < neighbour_labels.len() {
            hits.resize(neighbour_labels.len(), 0);
        }
        let mut n = 0;
        for (l, rank) in neighbour_labels.zip(1u32..) {
            // Always in bounds: n counts the matches before this one.
            if let Some(h) = hits.get_mut(n) {
                *h = rank;
            }
            n += usize::from(l == label);
        }
        self.add(plan, label, r, &hits[..n]);
    }

    pub(crate) fn merge(mut self, other: Self) -> Self {
        self.total.merge(&other.total);
        if let (Some(mine), Some(theirs)) = (&mut self.per_class, &other.per_class) {
            for (label, sums) in theirs {
                mine.entry(*label)
                    .and_modify(|s| s.merge(sums))
                    .or_insert_with(|| sums.clone());
            }
        }
        self.n_without_positive += other.n_without_positive;
        self
    }

    pub(crate) fn n_scored(&self) -> u64 {
        self.total.n
    }

    pub(crate) fn n_without_positive(&self) -> u64 {
        self.n_without_positive
    }

    /// The mean of every score, in the plan's order; call only when `n_scored > 0`. pml's
    /// scores are means over the queries with a positive, OML's over all queries.
    pub(crate) fn finish(&self, plan: &Plan) -> Vec<(Score, f64)> {
        let n_scored = self.total.n as f64;
        let n_all = (self.total.n + self.n_without_positive) as f64;
        plan.scores
            .iter()
            .zip(&self.total.sums)
            .enumerate()
            .map(|(i, (&s, &sum))| (s, sum / if i < plan.oml_start { n_scored } else { n_all }))
            .collect()
    }

    /// Per-class means (every query of a listed class has a positive) and their mean over the
    /// classes, pml's `avg_of_avgs`.
    pub(crate) fn finish_per_class(&self, plan: &Plan) -> Option<PerClass> {
        let classes = self.per_class.as_ref()?;
        let per_class: BTreeMap<u32, ClassScores> = classes
            .iter()
            .map(|(&label, s)| {
                let n = s.n as f64;
                let scores = plan.scores.iter().zip(&s.sums).map(|(&sc, &v)| (sc, v / n));
                (
                    label,
                    ClassScores {
                        n_queries: s.n as usize,
                        scores: scores.collect(),
                    },
                )
            })
            .collect();
        let n_classes = per_class.len() as f64;
        let avg_of_avgs = plan
            .scores
            .iter()
            .enumerate()
            .map(|(i, &sc)| {
                let sum = per_class.values().fold(0.0f64, |a, c| a + c.scores[i].1);
                (sc, sum / n_classes)
            })
            .collect();
        Some(PerClass {
            classes: per_class,
            avg_of_avgs,
        })
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
