//! Verification: are these two items of the same class? Pairs, their scores, the ROC and its
//! summaries (AUC, EER, TAR at a FAR, k-fold accuracy, the threshold to deploy with).
//!
//! Retrieval asks which items are like a query; verification asks a yes/no question of a pair
//! (face verification, re-identification, signature and product matching): accept the pair when
//! its two embeddings are closer than a threshold. Its figures come from the scores of a list of
//! labelled pairs ([`VerificationPairs`]: from a file, from LFW's `pairs.txt`, or drawn from class labels),
//! computed once by dml-kernels ([`dml_kernels::paired`]) and sorted once ([`Roc`]).
//!
//! # Definitions
//!
//! A pair's *score* is the metric's value turned so that larger means closer (similarities as
//! they are, distances negated); thresholds are reported in the metric's own values. A pair is
//! **accepted** at threshold τ when it is strictly closer than τ (similarity > τ, distance < τ).
//! Over P same-class (positive) and N different-class (negative) pairs:
//!
//! - **TAR(τ)** (true accept rate) = accepted positives / P; **FAR(τ)** (false accept rate) =
//!   accepted negatives / N. The **ROC** is TAR against FAR over every threshold: one point per
//!   distinct score, as scikit-learn's `roc_curve(..., drop_intermediate=False)`.
//! - **AUC**: the area under the ROC, equal to the probability that a random positive scores
//!   above a random negative, ties counting one half (Mann–Whitney), scikit-learn's
//!   `roc_auc_score`.
//! - **EER** (equal error rate): where the ROC, its points joined by straight lines, crosses
//!   FAR = 1 − TAR (false accepts as frequent as false rejects).
//! - **TAR@FAR**: the TAR at the threshold that lets through at most ⌊FAR · N⌋ negatives: the
//!   (⌊FAR · N⌋ + 1)-th highest negative score (exact on the negatives' order statistics, no
//!   interpolation); this equals the highest TAR of a scikit-learn ROC point whose FAR is at most
//!   the target. A FAR below 1/N can only be met by accepting no negative at all: each
//!   [`TarAtFar`] says how many negatives its FAR needs (⌈1/FAR⌉) and how many there were.
//! - **k-fold accuracy** (InsightFace's LFW protocol): the pairs are cut into k consecutive folds
//!   (scikit-learn's `KFold(shuffle=False)`: LFW's `pairs.txt` lists its ten official folds in
//!   that order); for each fold, the threshold that maximises the accuracy
//!   ((accepted positives + rejected negatives) / pairs) on the other k − 1 folds is chosen
//!   exactly among all thresholds (ties: the strictest), and the accuracy on the fold at that
//!   threshold is recorded; mean and standard deviation (population, as `np.std`) over the
//!   folds. InsightFace searches a fixed grid of distance thresholds instead (steps of 0.01),
//!   which can miss the training optimum by a step.
//!
//! # Memory
//!
//! Everything is linear in the number of pairs and nothing in the number of items squared: a
//! pair list costs 9 bytes a pair, and scoring and summarising it about 18 more at the peak
//! (the scores, their sorted copies, one sort order and the fold of each pair): 6,000 LFW pairs
//! take 160 kB, ten million pairs about 270 MB. The scores are computed pair by pair
//! ([`dml_kernels::paired`], one dot product each), never as a matrix of all items against all,
//! and [`VerificationPairs::from_labels`] draws its negatives without enumerating them.

use std::collections::{HashMap, HashSet};

use dml_kernels::Metric;
use ndarray::ArrayView2;
use rand::{Rng, SeedableRng, seq::SliceRandom};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// A list of pairs of items (rows of one embedding matrix), each flagged same class or not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerificationPairs {
    pairs: Vec<[u32; 2]>,
    same: Vec<bool>,
}

impl VerificationPairs {
    /// Pairs from their indices and flags (`same[p]`: whether pair `p` is of one class).
    ///
    /// # Errors
    /// [`Error::PairsLength`] when the two lists differ in length, [`Error::NoPairs`] when they
    /// are empty.
    pub fn new(pairs: Vec<[u32; 2]>, same: Vec<bool>) -> Result<Self> {
        if pairs.len() != same.len() {
            return Err(Error::PairsLength {
                n_pairs: pairs.len(),
                n_flags: same.len(),
            });
        }
        if pairs.is_empty() {
            return Err(Error::NoPairs);
        }
        Ok(Self { pairs, same })
    }

    /// Checks that every pair names rows of an embedding matrix of `n_items` rows; [`verify`]
    /// calls it first.
    ///
    /// # Errors
    /// [`Error::PairItem`] for the first pair that names a row beyond them.
    pub fn check_items(&self, n_items: usize) -> Result<()> {
        match self
            .pairs
            .iter()
            .enumerate()
            .find_map(|(p, ij)| ij.iter().find(|&&i| i as usize >= n_items).map(|&i| (p, i)))
        {
            Some((pair, index)) => Err(Error::PairItem {
                pair,
                index,
                n_items,
            }),
            None => Ok(()),
        }
    }

    /// Number of pairs.
    pub fn len(&self) -> usize {
        self.pairs.len()
    }

    /// Whether there are no pairs (never true for a constructed list).
    pub fn is_empty(&self) -> bool {
        self.pairs.is_empty()
    }

    /// The index pairs.
    pub fn pairs(&self) -> &[[u32; 2]] {
        &self.pairs
    }

    /// The same-class flags.
    pub fn same(&self) -> &[bool] {
        &self.same
    }

    /// Number of same-class pairs.
    pub fn n_positive(&self) -> usize {
        self.same.iter().filter(|&&s| s).count()
    }

    /// Pairs drawn from class labels, as [`LabelPairs`] says, in a seeded random order (so that
    /// consecutive folds mix positives and negatives).
    ///
    /// # Errors
    /// [`Error::NoPairs`] when there is no same-class pair or no different-class pair, and
    /// [`Error::TooManyPairs`] for [`PairSampling::All`] over more pairs than
    /// [`LabelPairs::max_pairs`].
    pub fn from_labels(labels: &[u32], cfg: &LabelPairs) -> Result<Self> {
        let n = labels.len() as u64;
        let mut by_class: HashMap<u32, Vec<u32>> = HashMap::new();
        for (i, &l) in labels.iter().enumerate() {
            by_class.entry(l).or_default().push(i as u32);
        }
        let mut classes: Vec<(u32, Vec<u32>)> = by_class.into_iter().collect();
        classes.sort_unstable_by_key(|(l, _)| *l);
        let n_pos: u64 = classes
            .iter()
            .map(|(_, m)| (m.len() as u64) * (m.len() as u64).saturating_sub(1) / 2)
            .sum();
        let n_all = n * n.saturating_sub(1) / 2;
        let n_neg = n_all - n_pos;
        if n_pos == 0 || n_neg == 0 {
            return Err(Error::NoPairs);
        }
        let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed);
        let (mut pairs, mut same) = match cfg.sampling {
            PairSampling::All => {
                if n_all > cfg.max_pairs as u64 {
                    return Err(Error::TooManyPairs {
                        n_pairs: n_all,
                        max_pairs: cfg.max_pairs,
                    });
                }
                let mut pairs = Vec::with_capacity(n_all as usize);
                let mut same = Vec::with_capacity(n_all as usize);
                for i in 0..labels.len() {
                    for j in i + 1..labels.len() {
                        pairs.push([i as u32, j as u32]);
                        same.push(labels[i] == labels[j]);
                    }
                }
                (pairs, same)
            }
            PairSampling::Balanced => {
                let half = (cfg.max_pairs / 2).max(1) as u64;
                let n_take = n_pos.min(half).min(n_neg) as usize;
                let same_class = |i: u32, j: u32| labels[i as usize] == labels[j as usize];
                // Positives: all of them, or a sample (a class with probability ∝ its number of
                // pairs, then a pair within it).
                let class_pairs: Vec<u64> = classes
                    .iter()
                    .map(|(_, m)| (m.len() as u64) * (m.len() as u64).saturating_sub(1) / 2)
                    .collect();
                let cumulative: Vec<u64> = class_pairs
                    .iter()
                    .scan(0u64, |acc, &w| {
                        *acc += w;
                        Some(*acc)
                    })
                    .collect();
                let mut pairs = sample_pairs(
                    n_pos,
                    n_take,
                    &mut rng,
                    &mut |rng| {
                        let t = rng.random_range(0..n_pos);
                        let members = &classes[cumulative.partition_point(|&c| c <= t)].1;
                        let (a, b) = (
                            rng.random_range(0..members.len()),
                            rng.random_range(0..members.len()),
                        );
                        (a != b).then(|| [members[a], members[b]])
                    },
                    &mut |out| {
                        for (_, members) in &classes {
                            for (a, &i) in members.iter().enumerate() {
                                out.extend(members[a + 1..].iter().map(|&j| [i, j]));
                            }
                        }
                    },
                );
                let mut same = vec![true; pairs.len()];
                // Negatives: uniform over the different-class pairs.
                let n = labels.len();
                let negatives = sample_pairs(
                    n_neg,
                    n_take,
                    &mut rng,
                    &mut |rng| {
                        let (i, j) = (rng.random_range(0..n) as u32, rng.random_range(0..n) as u32);
                        (!same_class(i, j)).then_some([i, j])
                    },
                    &mut |out| {
                        for i in 0..n as u32 {
                            out.extend(
                                (i + 1..n as u32)
                                    .filter(|&j| !same_class(i, j))
                                    .map(|j| [i, j]),
                            );
                        }
                    },
                );
                same.resize(pairs.len() + negatives.len(), false);
                pairs.extend(negatives);
                (pairs, same)
            }
        };
        // One seeded shuffle of both lists together.
        let mut order: Vec<usize> = (0..pairs.len()).collect();
        order.shuffle(&mut rng);
        pairs = order.iter().map(|&p| pairs[p]).collect();
        same = order.iter().map(|&p| same[p]).collect();
        Self::new(pairs, same)
    }

    /// Pairs from the text of LFW's `pairs.txt` (or a file in its layout): an optional first
    /// line of counts (`10 300`: folds, and pairs of each kind per fold), then one pair per line,
    /// `name n1 n2` for two images of one person or `name1 n1 name2 n2` for two people
    /// (whitespace-separated). `index_of(name, n)` gives the embedding row of image `n` of
    /// `name` (`None` if there is none). The pairs keep the file's order, in which LFW's folds
    /// are consecutive.
    ///
    /// # Errors
    /// [`Error::PairsText`] naming the line for a malformed line or an image without a row.
    pub fn from_lfw(
        text: &str,
        mut index_of: impl FnMut(&str, u32) -> Option<usize>,
    ) -> Result<Self> {
        let mut pairs = Vec::new();
        let mut same = Vec::new();
        let bad = |line: usize, reason: String| Error::PairsText { line, reason };
        for (no, line) in text.lines().enumerate() {
            let line_no = no + 1;
            let fields: Vec<&str> = line.split_whitespace().collect();
            if fields.is_empty() {
                continue;
            }
            if no == 0 && fields.iter().all(|f| f.parse::<u64>().is_ok()) {
                continue; // the counts line
            }
            let number = |s: &str| -> Result<u32> {
                s.parse()
                    .map_err(|_| bad(line_no, format!("`{s}` is not an image number")))
            };
            let mut row = |name: &str, n: u32| -> Result<u32> {
                let i = index_of(name, n).ok_or_else(|| {
                    bad(
                        line_no,
                        format!("image {n} of `{name}` is not among the embeddings"),
                    )
                })?;
                u32::try_from(i).map_err(|_| bad(line_no, format!("row {i} is beyond u32")))
            };
            let (pair, is_same) = match fields.as_slice() {
                [name, a, b] => ([row(name, number(a)?)?, row(name, number(b)?)?], true),
                [n1, a, n2, b] => ([row(n1, number(a)?)?, row(n2, number(b)?)?], false),
                _ => {
                    return Err(bad(
                        line_no,
                        format!(
                            "expected `name n1 n2` or `name1 n1 name2 n2`, got {} fields",
                            fields.len()
                        ),
                    ));
                }
            };
            pairs.push(pair);
            same.push(is_same);
        }
        Self::new(pairs, same)
    }
}

/// `n_take` distinct pairs (each as `[low, high]`) out of a population of `n_total`: drawn with
/// `draw` (which may fail, `None`) and repeats rejected when they are a small part of it, else
/// all enumerated by `all` and a seeded sample taken (rejection would then repeat draws for a
/// long time).
fn sample_pairs(
    n_total: u64,
    n_take: usize,
    rng: &mut ChaCha8Rng,
    draw: &mut dyn FnMut(&mut ChaCha8Rng) -> Option<[u32; 2]>,
    all: &mut dyn FnMut(&mut Vec<[u32; 2]>),
) -> Vec<[u32; 2]> {
    if 2 * n_take as u64 >= n_total {
        let mut every = Vec::with_capacity(n_total as usize);
        all(&mut every);
        if every.len() > n_take {
            every.partial_shuffle(rng, n_take);
            every.truncate(n_take);
        }
        return every;
    }
    let mut seen = HashSet::with_capacity(n_take);
    let mut out = Vec::with_capacity(n_take);
    while out.len() < n_take {
        if let Some([i, j]) = draw(rng) {
            let pair = [i.min(j), i.max(j)];
            if seen.insert(pair) {
                out.push(pair);
            }
        }
    }
    out
}

/// How [`VerificationPairs::from_labels`] draws pairs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PairSampling {
    /// Every same-class pair (a seeded sample of `max_pairs / 2` of them when there are more)
    /// and as many different-class pairs drawn uniformly without repeats, seeded.
    #[default]
    Balanced,
    /// Every pair of items, refused beyond `max_pairs`.
    All,
}

/// Pairs drawn from class labels ([`VerificationPairs::from_labels`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LabelPairs {
    /// Which pairs. Default [`PairSampling::Balanced`].
    pub sampling: PairSampling,
    /// At most this many pairs (13 bytes each with their score). Default 10,000,000.
    pub max_pairs: usize,
    /// Seed of the draws and of the pairs' order. Default 0.
    pub seed: u64,
}

impl Default for LabelPairs {
    fn default() -> Self {
        Self {
            sampling: PairSampling::Balanced,
            max_pairs: 10_000_000,
            seed: 0,
        }
    }
}

/// What [`verify`] reports.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct VerificationConfig {
    /// The FARs of TAR@FAR. Default `[1e-1, 1e-2, 1e-3, 1e-4, 1e-5, 1e-6]` (IJB-C's).
    pub fars: Vec<f64>,
    /// Folds of the k-fold accuracy. Default 10 (LFW's protocol).
    pub folds: usize,
}

impl Default for VerificationConfig {
    fn default() -> Self {
        Self {
            fars: vec![1e-1, 1e-2, 1e-3, 1e-4, 1e-5, 1e-6],
            folds: 10,
        }
    }
}

impl VerificationConfig {
    /// Checks every rule; [`verify`] calls it first.
    pub fn validate(&self) -> Result<()> {
        if let Some(&far) = self.fars.iter().find(|f| !(**f > 0.0 && **f <= 1.0)) {
            return Err(Error::BadFar(far));
        }
        if self.folds < 2 {
            return Err(Error::TooFewFolds(self.folds));
        }
        Ok(())
    }
}

/// The scores of the positive and of the negative pairs, each sorted from closest to farthest:
/// the ROC and everything read off it.
#[derive(Debug, Clone, PartialEq)]
pub struct Roc {
    /// Positive pairs' scores (larger = closer), descending.
    positive: Vec<f32>,
    /// Negative pairs' scores, descending.
    negative: Vec<f32>,
    metric: Metric,
}

/// One point of the ROC: accepting every pair strictly closer than `threshold`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RocPoint {
    /// False accept rate.
    pub far: f64,
    /// True accept rate.
    pub tar: f64,
    /// The threshold in the metric's values (`+∞` for a similarity or `−∞` for a distance at
    /// the first point, which accepts nothing); the point is that of accepting every pair at
    /// least this close (scikit-learn's `roc_curve` thresholds).
    pub threshold: f32,
}

impl Roc {
    /// The ROC of pairs with the metric's `values` (as [`dml_kernels::paired`] returns them)
    /// and same-class flags.
    ///
    /// # Errors
    /// [`Error::PairsLength`] for lists of different lengths, [`Error::NoPairs`] when there is no
    /// positive or no negative, [`Error::NonFiniteScore`] for a NaN or infinite value.
    pub fn new(metric: Metric, values: &[f32], same: &[bool]) -> Result<Self> {
        if values.len() != same.len() {
            return Err(Error::PairsLength {
                n_pairs: values.len(),
                n_flags: same.len(),
            });
        }
        if let Some(p) = values.iter().position(|v| !v.is_finite()) {
            return Err(Error::NonFiniteScore {
                pair: p,
                value: values[p],
            });
        }
        let n_pos = same.iter().filter(|&&s| s).count();
        let mut positive = Vec::with_capacity(n_pos);
        let mut negative = Vec::with_capacity(values.len() - n_pos);
        for (&v, &s) in values.iter().zip(same) {
            let score = to_score(metric, v);
            if s {
                positive.push(score);
            } else {
                negative.push(score);
            }
        }
        if positive.is_empty() || negative.is_empty() {
            return Err(Error::NoPairs);
        }
        positive.sort_unstable_by(|a, b| b.total_cmp(a));
        negative.sort_unstable_by(|a, b| b.total_cmp(a));
        Ok(Self {
            positive,
            negative,
            metric,
        })
    }

    /// Number of positive pairs.
    pub fn n_positive(&self) -> usize {
        self.positive.len()
    }

    /// Number of negative pairs.
    pub fn n_negative(&self) -> usize {
        self.negative.len()
    }

    /// Area under the ROC: `P(score⁺ > score⁻) + ½ P(score⁺ = score⁻)`, exact (integer counts).
    pub fn auc(&self) -> f64 {
        // Twice the Mann–Whitney U: for each positive, 2 · (negatives below) + (negatives equal).
        let (mut below, mut equal_end) = (self.negative.len(), self.negative.len());
        let mut u2: u128 = 0;
        // Positives ascending (so both cut points only move left): `below` = index of the first
        // negative strictly below s, `equal_end` = of the first at or below s.
        for &s in self.positive.iter().rev() {
            while below > 0 && self.negative[below - 1] < s {
                below -= 1;
            }
            while equal_end > 0 && self.negative[equal_end - 1] <= s {
                equal_end -= 1;
            }
            let n_below = (self.negative.len() - below) as u128;
            let n_equal = (below - equal_end) as u128;
            u2 += 2 * n_below + n_equal;
        }
        u2 as f64 / (2.0 * self.positive.len() as f64 * self.negative.len() as f64)
    }

    /// Every point of the ROC, from (0, 0) (accept nothing) through one point per distinct score,
    /// ending at (1, 1): scikit-learn's `roc_curve(drop_intermediate=False)`.
    pub fn points(&self) -> Vec<RocPoint> {
        let (p, n) = (self.positive.len() as f64, self.negative.len() as f64);
        let inf = if self.metric.is_similarity() {
            f32::INFINITY
        } else {
            f32::NEG_INFINITY
        };
        let mut out = vec![RocPoint {
            far: 0.0,
            tar: 0.0,
            threshold: inf,
        }];
        let (mut i, mut j) = (0, 0);
        while i < self.positive.len() || j < self.negative.len() {
            let s = match (self.positive.get(i), self.negative.get(j)) {
                (Some(&a), Some(&b)) => a.max(b),
                (Some(&a), None) => a,
                (None, Some(&b)) => b,
                (None, None) => break,
            };
            while i < self.positive.len() && self.positive[i] >= s {
                i += 1;
            }
            while j < self.negative.len() && self.negative[j] >= s {
                j += 1;
            }
            out.push(RocPoint {
                far: j as f64 / n,
                tar: i as f64 / p,
                threshold: from_score(self.metric, s),
            });
        }
        out
    }

    /// Points of the ROC for a plot on a log-FAR axis, at most `2 · max_points + 2`: for each of
    /// `max_points` FARs spaced evenly in log between `1/N` and 1, the last point below it and
    /// the first at or beyond it, plus the two ends (every point when there are few).
    pub fn points_for_plot(&self, max_points: usize) -> Vec<RocPoint> {
        let all = self.points();
        if all.len() <= max_points.max(2) {
            return all;
        }
        let lo = (1.0 / self.negative.len() as f64).ln();
        let mut keep = vec![0usize];
        let mut next = 0usize;
        for k in 0..max_points {
            let far = (lo * (1.0 - k as f64 / (max_points - 1) as f64)).exp();
            while next < all.len() && all[next].far < far {
                next += 1;
            }
            // The highest TAR at a FAR below the target, and the first point at or beyond it.
            for i in [next.saturating_sub(1), next] {
                if i < all.len() && i > keep[keep.len() - 1] {
                    keep.push(i);
                }
            }
        }
        if keep[keep.len() - 1] != all.len() - 1 {
            keep.push(all.len() - 1);
        }
        keep.into_iter().map(|i| all[i]).collect()
    }

    /// The equal error rate and the threshold of the ROC point where the crossing ends; see
    /// the [module docs](self).
    pub fn eer(&self) -> Eer {
        let pts = self.points();
        let h = |p: &RocPoint| p.far + p.tar - 1.0;
        let end = pts
            .iter()
            .position(|p| h(p) >= 0.0)
            .unwrap_or(pts.len() - 1);
        let rate = if end == 0 {
            pts[0].far
        } else {
            let (a, b) = (&pts[end - 1], &pts[end]);
            let (ha, hb) = (h(a), h(b));
            let t = if hb > ha { -ha / (hb - ha) } else { 0.0 };
            a.far + t * (b.far - a.far)
        };
        Eer {
            rate,
            threshold: pts[end].threshold,
        }
    }

    /// TAR at a FAR: see the [module docs](self).
    pub fn tar_at_far(&self, far: f64) -> TarAtFar {
        let n = self.negative.len();
        let allowed = ((far * n as f64) + 1e-9).floor() as usize; // ⌊FAR·N⌋, robust to 0.1·10 = 0.99…
        let (score, accepted_neg, accepted_pos) = if allowed >= n {
            (f32::NEG_INFINITY, n, self.positive.len())
        } else {
            let tau = self.negative[allowed];
            let neg = self.negative.partition_point(|&s| s > tau);
            let pos = self.positive.partition_point(|&s| s > tau);
            (tau, neg, pos)
        };
        TarAtFar {
            far,
            tar: accepted_pos as f64 / self.positive.len() as f64,
            threshold: from_score(self.metric, score),
            far_achieved: accepted_neg as f64 / n as f64,
            negatives_needed: (1.0 / far).ceil() as u64,
            n_negative: n as u64,
        }
    }
}

/// Equal error rate ([`Roc::eer`]).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Eer {
    /// The rate at which false accepts and false rejects are equally frequent.
    pub rate: f64,
    /// The threshold of the ROC point that ends the segment where the crossing lies (accept
    /// pairs at least this close).
    pub threshold: f32,
}

/// TAR at one FAR ([`Roc::tar_at_far`]).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct TarAtFar {
    /// The target false accept rate.
    pub far: f64,
    /// The true accept rate at the threshold.
    pub tar: f64,
    /// The threshold to deploy with: accept a pair strictly closer than this (similarity above
    /// it, distance below it); `−∞`/`+∞` when every pair may be accepted.
    pub threshold: f32,
    /// The FAR this threshold gives on these pairs (at most `far`; lower with ties).
    pub far_achieved: f64,
    /// Negatives needed to resolve `far` at all: ⌈1/far⌉; with fewer, the threshold can only
    /// accept no negative.
    pub negatives_needed: u64,
    /// Negatives there were.
    pub n_negative: u64,
}

impl TarAtFar {
    /// Whether there were enough negatives for this FAR to be measured (at least ⌈1/far⌉).
    pub fn resolved(&self) -> bool {
        self.n_negative >= self.negatives_needed
    }
}

/// One fold of the k-fold accuracy.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Fold {
    /// Pairs in the fold.
    pub n_pairs: usize,
    /// The threshold chosen on the other folds (accept pairs strictly closer).
    pub threshold: f32,
    /// Accuracy of that threshold on the other folds.
    pub train_accuracy: f64,
    /// Accuracy on this fold.
    pub accuracy: f64,
}

/// k-fold verification accuracy (InsightFace's protocol, the exact best threshold).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KFoldAccuracy {
    /// Mean of the folds' accuracies.
    pub mean: f64,
    /// Their population standard deviation (`np.std`).
    pub std: f64,
    /// Each fold.
    pub folds: Vec<Fold>,
}

/// Everything [`verify`] measures.
#[derive(Debug, Clone, PartialEq)]
pub struct Verification {
    /// The metric the scores are values of.
    pub metric: Metric,
    /// Same-class pairs.
    pub n_positive: usize,
    /// Different-class pairs.
    pub n_negative: usize,
    /// Area under the ROC.
    pub auc: f64,
    /// Equal error rate.
    pub eer: Eer,
    /// TAR at each FAR of the config, in its order.
    pub tar_at_far: Vec<TarAtFar>,
    /// k-fold accuracy.
    pub accuracy: KFoldAccuracy,
    /// The ROC, for plots and further summaries.
    pub roc: Roc,
}

impl Verification {
    /// A JSON object: `n_positive`, `n_negative`, `auc`, `eer`, `eer_threshold`, `tar_at_far`
    /// (a list of `{far, tar, threshold, far_achieved, negatives_needed, resolved}`),
    /// `accuracy_mean`, `accuracy_std`, `folds` (each `{n_pairs, threshold, train_accuracy,
    /// accuracy}`); infinite thresholds are `null`.
    pub fn to_json(&self) -> serde_json::Value {
        let t = |v: f32| {
            if v.is_finite() {
                serde_json::Value::from(v)
            } else {
                serde_json::Value::Null
            }
        };
        serde_json::json!({
            "metric": self.metric.name(),
            "n_positive": self.n_positive,
            "n_negative": self.n_negative,
            "auc": self.auc,
            "eer": self.eer.rate,
            "eer_threshold": t(self.eer.threshold),
            "tar_at_far": self.tar_at_far.iter().map(|x| serde_json::json!({
                "far": x.far,
                "tar": x.tar,
                "threshold": t(x.threshold),
                "far_achieved": x.far_achieved,
                "negatives_needed": x.negatives_needed,
                "resolved": x.resolved(),
            })).collect::<Vec<_>>(),
            "accuracy_mean": self.accuracy.mean,
            "accuracy_std": self.accuracy.std,
            "folds": self.accuracy.folds.iter().map(|f| serde_json::json!({
                "n_pairs": f.n_pairs,
                "threshold": t(f.threshold),
                "train_accuracy": f.train_accuracy,
                "accuracy": f.accuracy,
            })).collect::<Vec<_>>(),
        })
    }
}

impl std::fmt::Display for Verification {
    /// A terminal report: counts, AUC, EER, TAR@FAR with thresholds, k-fold accuracy.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let accept = if self.metric.is_similarity() {
            "above"
        } else {
            "below"
        };
        writeln!(
            f,
            "verification ({} same-class and {} different-class pairs, {}; accept {accept} the threshold)",
            self.n_positive,
            self.n_negative,
            self.metric.name()
        )?;
        writeln!(f, "{:<18}{:.6}", "roc_auc", self.auc)?;
        writeln!(
            f,
            "{:<18}{:.6}  (threshold {})",
            "eer", self.eer.rate, self.eer.threshold
        )?;
        for x in &self.tar_at_far {
            let note = if x.resolved() {
                String::new()
            } else {
                format!(
                    "  (needs {} negatives, has {}: no negative accepted)",
                    x.negatives_needed, x.n_negative
                )
            };
            writeln!(
                f,
                "{:<18}{:.6}  (threshold {}, far {:.2e}){note}",
                format!("tar@far={:.0e}", x.far),
                x.tar,
                x.threshold,
                x.far_achieved
            )?;
        }
        write!(
            f,
            "{:<18}{:.6} ± {:.6}  ({}-fold, threshold chosen on the other folds)",
            "accuracy",
            self.accuracy.mean,
            self.accuracy.std,
            self.accuracy.folds.len()
        )
    }
}

/// The score of a metric value: larger is closer.
fn to_score(metric: Metric, v: f32) -> f32 {
    if metric.is_similarity() { v } else { 0.0 - v }
}

fn from_score(metric: Metric, s: f32) -> f32 {
    if metric.is_similarity() { s } else { 0.0 - s }
}

/// Verification figures of `pairs` of rows of `embeddings` under `metric`; see the
/// [module docs](self) for the definitions.
///
/// # Errors
/// [`Error::BadFar`], [`Error::TooFewFolds`] or [`Error::FoldsExceedPairs`] from the config,
/// [`Error::PairItem`] for a pair naming a row beyond the embeddings, [`Error::NoPairs`]
/// without a positive or a negative pair, and dml-kernels' error for a non-finite value.
///
/// ```
/// use dml_eval::verification::{VerificationPairs, VerificationConfig, verify};
/// use dml_kernels::Metric;
/// use ndarray::array;
///
/// let x = array![[0.0f32], [0.1], [5.0], [5.2]];
/// let pairs = VerificationPairs::new(
///     vec![[0, 1], [2, 3], [0, 2], [1, 3]],
///     vec![true, true, false, false],
/// )?;
/// let cfg = VerificationConfig { folds: 2, ..VerificationConfig::default() };
/// let v = verify(x.view(), &pairs, Metric::Euclidean, &cfg)?;
/// assert_eq!(v.auc, 1.0);
/// assert_eq!(v.eer.rate, 0.0);
/// # Ok::<(), dml_eval::Error>(())
/// ```
pub fn verify(
    embeddings: ArrayView2<'_, f32>,
    pairs: &VerificationPairs,
    metric: Metric,
    cfg: &VerificationConfig,
) -> Result<Verification> {
    cfg.validate()?;
    pairs.check_items(embeddings.nrows())?;
    let values = dml_kernels::paired(metric, embeddings, embeddings, pairs.pairs())?;
    verify_values(metric, &values, pairs.same(), cfg)
}

/// [`verify`] from the pairs' metric values (`values[p]` for pair `p`, flagged by `same[p]`),
/// for scores computed elsewhere; folds follow the order of the lists.
///
/// # Errors
/// As [`verify`], and [`Error::NonFiniteScore`].
pub fn verify_values(
    metric: Metric,
    values: &[f32],
    same: &[bool],
    cfg: &VerificationConfig,
) -> Result<Verification> {
    cfg.validate()?;
    if cfg.folds > values.len() {
        return Err(Error::FoldsExceedPairs {
            folds: cfg.folds,
            n_pairs: values.len(),
        });
    }
    let roc = Roc::new(metric, values, same)?;
    let scores: Vec<f32> = values.iter().map(|&v| to_score(metric, v)).collect();
    let accuracy = k_fold(metric, &scores, same, cfg.folds);
    Ok(Verification {
        metric,
        n_positive: roc.n_positive(),
        n_negative: roc.n_negative(),
        auc: roc.auc(),
        eer: roc.eer(),
        tar_at_far: cfg.fars.iter().map(|&f| roc.tar_at_far(f)).collect(),
        accuracy,
        roc,
    })
}

/// The folds of `n` items as scikit-learn's `KFold(n_splits=k, shuffle=False)` cuts them: `k`
/// consecutive runs, the first `n % k` one item longer.
pub fn fold_ranges(n: usize, k: usize) -> Vec<std::ops::Range<usize>> {
    let mut out = Vec::with_capacity(k);
    let mut start = 0;
    for f in 0..k {
        let len = n / k + usize::from(f < n % k);
        out.push(start..start + len);
        start += len;
    }
    out
}

/// k-fold accuracy over scores (larger = closer) in list order.
fn k_fold(metric: Metric, scores: &[f32], same: &[bool], k: usize) -> KFoldAccuracy {
    let ranges = fold_ranges(scores.len(), k);
    let mut fold_of = vec![0u16; scores.len()];
    for (f, r) in ranges.iter().enumerate() {
        fold_of[r.clone()].fill(f as u16);
    }
    // One sort of every pair, closest first; each fold's training scan skips its own pairs.
    let mut order: Vec<u32> = (0..scores.len() as u32).collect();
    order.sort_unstable_by(|&a, &b| scores[b as usize].total_cmp(&scores[a as usize]));
    let mut folds = Vec::with_capacity(k);
    for (f, range) in ranges.iter().enumerate() {
        let f = f as u16;
        // The training pairs, closest first, without a copy: the sorted order minus this fold.
        let mut train = order
            .iter()
            .map(|&p| p as usize)
            .filter(|&p| fold_of[p] != f)
            .peekable();
        let n_train = scores.len() - range.len();
        // Accept nothing first (τ = the highest score): every negative is right.
        let n_neg_train = (0..scores.len())
            .filter(|&p| fold_of[p] != f && !same[p])
            .count();
        let mut correct = n_neg_train as i64;
        let mut best = (correct, train.peek().map_or(f32::INFINITY, |&p| scores[p]));
        while let Some(p) = train.next() {
            // Accept the whole group of pairs with this score: τ drops to the score below.
            let s = scores[p];
            correct += if same[p] { 1 } else { -1 };
            while let Some(&q) = train.peek() {
                if scores[q] != s {
                    break;
                }
                correct += if same[q] { 1 } else { -1 };
                train.next();
            }
            let tau = train.peek().map_or(f32::NEG_INFINITY, |&q| scores[q]);
            if correct > best.0 {
                best = (correct, tau);
            }
        }
        let (train_correct, tau) = best;
        let test_correct = range
            .clone()
            .filter(|&p| (scores[p] > tau) == same[p])
            .count();
        folds.push(Fold {
            n_pairs: range.len(),
            threshold: from_score(metric, tau),
            train_accuracy: train_correct as f64 / n_train as f64,
            accuracy: test_correct as f64 / range.len() as f64,
        });
    }
    let mean = folds.iter().map(|f| f.accuracy).sum::<f64>() / k as f64;
    let var = folds
        .iter()
        .map(|f| (f.accuracy - mean).powi(2))
        .sum::<f64>()
        / k as f64;
    KFoldAccuracy {
        mean,
        std: var.sqrt(),
        folds,
    }
}
