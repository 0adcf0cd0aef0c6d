use rand::Rng;
use serde::{Deserialize, Serialize};

use super::{AnchorRngs, triplets_per_anchor};
use crate::miner::Batch;
use crate::{Error, Miner, Result, Triplets, Tuples};

/// How the [`HardNegativeMiner`] picks negatives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HardNegativeSelect {
    /// For each positive pair `(a, p)`, the single negative closest to `a` (ties: lower index).
    #[default]
    Hardest,
    /// Every triplet whose negative is at least as close to the anchor as the positive.
    AllHard,
}

/// Parameters of [`HardNegativeMiner`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HardNegativeConfig {
    /// Hardest negative per positive pair, or all hard triplets. Default: hardest.
    pub select: HardNegativeSelect,
}

impl HardNegativeConfig {
    /// Builds the miner (every parameter value is valid).
    pub fn init(&self) -> Result<HardNegativeMiner> {
        Ok(HardNegativeMiner { cfg: *self })
    }
}

/// Hard negatives: negatives closer to the anchor than they should be.
///
/// With [`HardNegativeSelect::Hardest`] (the default) each positive pair `(a, p)` gets the
/// triplet `(a, p, n*)`, `n* = argmin_n d(a, n)` over the negatives of `a` (argmax of the
/// similarity for cosine / dot): the "hardest negative" of Schroff et al., *FaceNet* (CVPR 2015),
/// § 3.2, taken within the batch. pytorch-metric-learning equivalent:
/// `BatchEasyHardMiner(pos_strategy="all", neg_strategy="hard")` followed by
/// `convert_to_triplets`.
///
/// With [`HardNegativeSelect::AllHard`] every triplet with `d(a, n) ≤ d(a, p)`
/// (`s(a, n) ≥ s(a, p)` for similarities) is returned, ordered by anchor, positive, negative:
/// pytorch-metric-learning's `TripletMarginMiner(type_of_triplets="hard")` (any margin ≥ 0),
/// the same set.
///
/// Built by [`HardNegativeConfig::init`].
#[derive(Debug, Clone, PartialEq)]
pub struct HardNegativeMiner {
    cfg: HardNegativeConfig,
}

impl HardNegativeMiner {
    /// The miner's parameters.
    pub fn config(&self) -> &HardNegativeConfig {
        &self.cfg
    }
}

impl Miner for HardNegativeMiner {
    fn mine_batch(&self, batch: &Batch<'_, '_>, _rng: &mut dyn rand::RngCore) -> Result<Tuples> {
        let select = self.cfg.select;
        let t = triplets_per_anchor(batch, |a, pos, neg, t| {
            let row = batch.row(a);
            match select {
                HardNegativeSelect::Hardest => {
                    let n = argmin_by(neg, |j| batch.dis(row[j as usize]));
                    for &p in pos {
                        t.push(a as u32, p, n);
                    }
                }
                HardNegativeSelect::AllHard => {
                    for &p in pos {
                        let v_ap = batch.dis(row[p as usize]);
                        for &n in neg {
                            if batch.dis(row[n as usize]) <= v_ap {
                                t.push(a as u32, p, n);
                            }
                        }
                    }
                }
            }
        });
        Ok(t.into())
    }
}

/// The candidate with the smallest key; ties go to the earlier (lower) index. NaN keys lose
/// against every number. `cands` must not be empty.
fn argmin_by(cands: &[u32], key: impl Fn(u32) -> f32) -> u32 {
    let mut best = cands[0];
    let mut best_v = key(best);
    for &c in &cands[1..] {
        let v = key(c);
        if v < best_v || (best_v.is_nan() && !v.is_nan()) {
            best = c;
            best_v = v;
        }
    }
    best
}

/// How the [`SemiHardMiner`] picks among the semi-hard negatives of a positive pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SemiHardSelect {
    /// One semi-hard negative drawn uniformly at random per positive pair.
    #[default]
    Random,
    /// Every semi-hard negative (pytorch-metric-learning's `TripletMarginMiner` "semihard").
    All,
}

/// What the [`SemiHardMiner`] does for a positive pair without semi-hard negatives
/// (only used with [`SemiHardSelect::Random`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SemiHardFallback {
    /// Leave the pair out (as pytorch-metric-learning does).
    #[default]
    Skip,
    /// Use the anchor's closest negative.
    Hardest,
    /// Use the anchor's farthest negative (TensorFlow Addons' `triplet_semihard_loss`).
    Easiest,
}

/// Parameters of [`SemiHardMiner`].
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SemiHardConfig {
    /// Width of the band, in the metric's units. Default: 0.2.
    pub margin: f32,
    /// One random semi-hard negative per pair, or all of them. Default: random.
    pub select: SemiHardSelect,
    /// What to do for a pair without semi-hard negatives. Default: skip.
    pub fallback: SemiHardFallback,
}

impl Default for SemiHardConfig {
    fn default() -> Self {
        SemiHardConfig {
            margin: 0.2,
            select: SemiHardSelect::Random,
            fallback: SemiHardFallback::Skip,
        }
    }
}

impl SemiHardConfig {
    /// Checks the parameters and builds the miner.
    ///
    /// # Errors
    /// [`Error::InvalidMargin`] unless `margin` is finite and positive.
    pub fn init(&self) -> Result<SemiHardMiner> {
        if !(self.margin.is_finite() && self.margin > 0.0) {
            return Err(Error::InvalidMargin {
                margin: self.margin,
            });
        }
        Ok(SemiHardMiner { cfg: *self })
    }
}

/// Semi-hard negatives: farther from the anchor than the positive, but inside the margin.
///
/// Schroff et al., *FaceNet: A Unified Embedding for Face Recognition and Clustering*
/// (CVPR 2015), eq. 4: for each positive pair `(a, p)` the negatives `n` with
///
/// ```text
/// d(a, p) < d(a, n) ≤ d(a, p) + margin        (distances)
/// s(a, p) − margin ≤ s(a, n) < s(a, p)        (similarities: cosine, dot)
/// ```
///
/// The band's edges follow pytorch-metric-learning's `TripletMarginMiner(margin,
/// type_of_triplets="semihard")`, which [`SemiHardSelect::All`] reproduces exactly (same set,
/// ordered by anchor, positive, negative). FaceNet states the band on squared distances; pass a
/// squared-Euclidean matrix to mine exactly that. [`SemiHardSelect::Random`] (the default)
/// keeps one random semi-hard negative per pair, so that every positive pair weighs the same,
/// and applies the [`SemiHardFallback`] when the band is empty. Built by
/// [`SemiHardConfig::init`].
#[derive(Debug, Clone, PartialEq)]
pub struct SemiHardMiner {
    cfg: SemiHardConfig,
}

impl SemiHardMiner {
    /// The miner's parameters.
    pub fn config(&self) -> &SemiHardConfig {
        &self.cfg
    }
}

impl Miner for SemiHardMiner {
    fn mine_batch(&self, batch: &Batch<'_, '_>, rng: &mut dyn rand::RngCore) -> Result<Tuples> {
        let rngs = AnchorRngs::new(rng);
        let SemiHardConfig {
            margin,
            select,
            fallback,
        } = self.cfg;
        let t = triplets_per_anchor(batch, |a, pos, neg, t| {
            let row = batch.row(a);
            // Negatives' dissimilarities, gathered once per anchor. A PK batch has few positives
            // per anchor, so a linear scan per positive pair beats sorting the negatives.
            let v_neg: Vec<f32> = neg.iter().map(|&n| batch.dis(row[n as usize])).collect();
            let mut r = rngs.for_anchor(a);
            let mut band: Vec<u32> = Vec::new();
            for &p in pos {
                let v_ap = batch.dis(row[p as usize]);
                band.clear();
                // pml's triplet margin `v_an − v_ap` must lie in (0, margin].
                for (&n, &v) in neg.iter().zip(&v_neg) {
                    let m = v - v_ap;
                    if m > 0.0 && m <= margin {
                        band.push(n);
                    }
                }
                match select {
                    SemiHardSelect::All => {
                        t.anchor.extend(std::iter::repeat_n(a as u32, band.len()));
                        t.positive.extend(std::iter::repeat_n(p, band.len()));
                        t.negative.extend_from_slice(&band);
                    }
                    SemiHardSelect::Random => {
                        let n = if band.is_empty() {
                            match fallback {
                                SemiHardFallback::Skip => continue,
                                SemiHardFallback::Hardest => {
                                    argmin_by(neg, |j| batch.dis(row[j as usize]))
                                }
                                SemiHardFallback::Easiest => {
                                    argmin_by(neg, |j| -batch.dis(row[j as usize]))
                                }
                            }
                        } else {
                            band[r.random_range(0..band.len())]
                        };
                        t.push(a as u32, p, n);
                    }
                }
            }
        });
        Ok(t.into())
    }
}

/// Parameters of [`BatchHardMiner`]: none (an empty table, so unknown keys are refused).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchHardConfig {}

impl BatchHardConfig {
    /// Builds the miner.
    pub fn init(&self) -> Result<BatchHardMiner> {
        Ok(BatchHardMiner { cfg: *self })
    }
}

/// Batch-hard triplets: for each anchor, its hardest positive and its hardest negative.
///
/// Hermans, Beyer and Leibe, *In Defense of the Triplet Loss for Person Re-Identification*
/// (2017), eq. 5: for anchor `a`,
///
/// ```text
/// p* = argmax_{p: y_p = y_a, p ≠ a} d(a, p)      n* = argmin_{n: y_n ≠ y_a} d(a, n)
/// ```
///
/// (argmin / argmax swapped for similarities), one triplet `(a, p*, n*)` per anchor that has at
/// least one positive and one negative, in anchor order; ties go to the lower index.
/// pytorch-metric-learning equivalent: `BatchHardMiner`, the same triplets. Built by
/// [`BatchHardConfig::init`].
#[derive(Debug, Clone, PartialEq)]
pub struct BatchHardMiner {
    cfg: BatchHardConfig,
}

impl BatchHardMiner {
    /// The miner's parameters.
    pub fn config(&self) -> &BatchHardConfig {
        &self.cfg
    }
}

impl Miner for BatchHardMiner {
    fn mine_batch(&self, batch: &Batch<'_, '_>, _rng: &mut dyn rand::RngCore) -> Result<Tuples> {
        // One fused pass per row: no index lists needed.
        let picks = batch.per_anchor(|a| {
            let row = batch.row(a);
            let (mut p_best, mut vp) = (u32::MAX, f32::NEG_INFINITY);
            let (mut n_best, mut vn) = (u32::MAX, f32::INFINITY);
            for (j, &x) in row.iter().enumerate() {
                let v = batch.dis(x);
                if batch.is_positive(a, j) {
                    if v > vp || p_best == u32::MAX {
                        p_best = j as u32;
                        vp = v;
                    }
                } else if batch.is_negative(a, j) && (v < vn || n_best == u32::MAX) {
                    n_best = j as u32;
                    vn = v;
                }
            }
            (p_best != u32::MAX && n_best != u32::MAX).then_some((a as u32, p_best, n_best))
        });
        let mut t = Triplets::default();
        for (a, p, n) in picks.into_iter().flatten() {
            t.push(a, p, n);
        }
        Ok(t.into())
    }
}
