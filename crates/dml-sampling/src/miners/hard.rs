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
pub struct HardNegativeMinerConfig {
    /// Hardest negative per positive pair, or all hard triplets. Default: hardest.
    pub select: HardNegativeSelect,
}

impl HardNegativeMinerConfig {
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
/// Built by [`HardNegativeMinerConfig::init`].
#[derive(Debug, Clone, PartialEq)]
pub struct HardNegativeMiner {
    cfg: HardNegativeMinerConfig,
}

impl HardNegativeMiner {
    /// The miner's parameters.
    pub fn config(&self) -> &HardNegativeMinerConfig {
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
pub struct SemiHardMinerConfig {
    /// Width of the band, in the metric's units. Default: 0.2.
    pub margin: f32,
    /// One random semi-hard negative per pair, or all of them. Default: random.
    pub select: SemiHardSelect,
    /// What to do for a pair without semi-hard negatives. Default: skip.
    pub fallback: SemiHardFallback,
}

impl Default for SemiHardMinerConfig {
    fn default() -> Self {
        SemiHardMinerConfig {
            margin: 0.2,
            select: SemiHardSelect::Random,
            fallback: SemiHardFallback::Skip,
        }
    }
}

impl SemiHardMinerConfig {
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
/// [`SemiHardMinerConfig::init`].
#[derive(Debug, Clone, PartialEq)]
pub struct SemiHardMiner {
    cfg: SemiHardMinerConfig,
}

impl SemiHardMiner {
    /// The miner's parameters.
    pub fn config(&self) -> &SemiHardMinerConfig {
        &self.cfg
    }
}

impl Miner for SemiHardMiner {
    fn mine_batch(&self, batch: &Batch<'_, '_>, rng: &mut dyn rand::RngCore) -> Result<Tuples> {
        let rngs = AnchorRngs::new(rng);
        let SemiHardMinerConfig {
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
pub struct BatchHardMinerConfig {}

impl BatchHardMinerConfig {
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
/// [`BatchHardMinerConfig::init`].
#[derive(Debug, Clone, PartialEq)]
pub struct BatchHardMiner {
    cfg: BatchHardMinerConfig,
}

impl BatchHardMiner {
    /// The miner's parameters.
    pub fn config(&self) -> &BatchHardMinerConfig {
        &self.cfg
    }
}

impl Miner for BatchHardMiner {
    /// Arg-max and arg-min of each row: the order alone decides.
    fn order_only(&self) -> bool {
        true
    }

    fn mine_batch(&self, batch: &Batch<'_, '_>, _rng: &mut dyn rand::RngCore) -> Result<Tuples> {
        let (labels, ref_labels) = (batch.labels(), batch.ref_labels());
        let picks = batch.per_anchor_row_pass(|a| {
            // Within a batch the anchor's own column is no positive: walk around it.
            let skip = (!batch.has_reference()).then_some(a);
            hardest_pair(batch.row(a), ref_labels, labels[a], batch.dis(1.0), skip)
                .map(|(p, n)| (a as u32, p, n))
        });
        let mut t = Triplets::default();
        for (a, p, n) in picks.into_iter().flatten() {
            t.push(a, p, n);
        }
        Ok(t.into())
    }
}

/// Columns per block of [`hardest_pair`]'s first pass.
const BLOCK: usize = 64;

/// The hardest positive (largest `sign · value` among the columns labelled `label`) and the
/// hardest negative (smallest among the others) of one row, the lower column on ties, or
/// `None` when the row has no positive or no negative; column `skip` is neither.
///
/// Two passes instead of one branchy one (a batch of 128 against a memory of 8,192 took 1.8 ms
/// that way): blocks of [`BLOCK`] columns are reduced to their extremes with selects the
/// compiler vectorises, remembering the first block that holds each overall extreme, then only
/// that block is searched for the column.
fn hardest_pair(
    row: &[f32],
    ref_labels: &[u32],
    label: u32,
    sign: f32,
    skip: Option<usize>,
) -> Option<(u32, u32)> {
    let (mut max_p, mut block_p) = (f32::NEG_INFINITY, usize::MAX);
    let (mut min_n, mut block_n) = (f32::INFINITY, usize::MAX);
    let mut non_finite = false;
    for (b, (vals, labs)) in row.chunks(BLOCK).zip(ref_labels.chunks(BLOCK)).enumerate() {
        let (mut hi, lo, block_non_finite) = block_extremes(vals, labs, label, sign);
        let start = b * BLOCK;
        if let Some(s) = skip.filter(|&s| (start..start + vals.len()).contains(&s)) {
            // The skipped column (a positive by its label) may be the block's maximum: take the
            // block's positives again without it.
            hi = f32::NEG_INFINITY;
            for (j, (&x, &l)) in vals.iter().zip(labs).enumerate() {
                if l == label && start + j != s && sign * x > hi {
                    hi = sign * x;
                }
            }
        }
        non_finite |= block_non_finite;
        if hi > max_p {
            (max_p, block_p) = (hi, b);
        }
        if lo < min_n {
            (min_n, block_n) = (lo, b);
        }
    }
    if non_finite {
        // NaN or infinite values: the plain walk decides, with its own rules for them.
        return hardest_pair_walk(row, ref_labels, label, sign, skip);
    }
    if block_p == usize::MAX || block_n == usize::MAX {
        // No positive or no negative (all values being finite).
        return None;
    }
    let first_in = |b: usize, hit: &dyn Fn(usize) -> bool| {
        let start = b * BLOCK;
        (start..(start + BLOCK).min(row.len())).find(|&j| hit(j))
    };
    let p = first_in(block_p, &|j| {
        ref_labels[j] == label && Some(j) != skip && sign * row[j] == max_p
    })?;
    let n = first_in(block_n, &|j| {
        ref_labels[j] != label && sign * row[j] == min_n
    })?;
    Some((p as u32, n as u32))
}

/// Lanes of [`block_extremes`]: independent accumulators the compiler keeps in one vector
/// register each (a single accumulator is a chain it may not reorder).
const LANES: usize = 8;

/// Of one block: the largest `sign · value` among the columns labelled `label`, the smallest
/// among the others (∓∞ when there are none; NaNs are passed over), and whether any value is not
/// finite.
fn block_extremes(vals: &[f32], labs: &[u32], label: u32, sign: f32) -> (f32, f32, bool) {
    let mut hi = [f32::NEG_INFINITY; LANES];
    let mut lo = [f32::INFINITY; LANES];
    // `v · 0` is 0 for a finite value and NaN otherwise, so these sums say whether all were
    // finite (a flag per lane would cost the vector loop its speed).
    let mut finite = [0f32; LANES];
    let mut lane = |i: usize, x: f32, l: u32| {
        let v = sign * x;
        let same = l == label;
        let p = if same { v } else { f32::NEG_INFINITY };
        let n = if same { f32::INFINITY } else { v };
        hi[i] = if p > hi[i] { p } else { hi[i] };
        lo[i] = if n < lo[i] { n } else { lo[i] };
        finite[i] += v * 0.0;
    };
    let (vc, lc) = (vals.chunks_exact(LANES), labs.chunks_exact(LANES));
    let (v_rest, l_rest) = (vc.remainder(), lc.remainder());
    for (v8, l8) in vc.zip(lc) {
        for i in 0..LANES {
            lane(i, v8[i], l8[i]);
        }
    }
    for (i, (&x, &l)) in v_rest.iter().zip(l_rest).enumerate() {
        lane(i, x, l);
    }
    let hi = hi
        .into_iter()
        .fold(f32::NEG_INFINITY, |a, b| if b > a { b } else { a });
    let lo = lo
        .into_iter()
        .fold(f32::INFINITY, |a, b| if b < a { b } else { a });
    (hi, lo, finite.iter().any(|f| f.is_nan()))
}

/// [`hardest_pair`] as one walk over the row (the definition; used when values are not finite).
fn hardest_pair_walk(
    row: &[f32],
    ref_labels: &[u32],
    label: u32,
    sign: f32,
    skip: Option<usize>,
) -> Option<(u32, u32)> {
    let (mut p_best, mut vp) = (u32::MAX, f32::NEG_INFINITY);
    let (mut n_best, mut vn) = (u32::MAX, f32::INFINITY);
    for (j, (&x, &l)) in row.iter().zip(ref_labels).enumerate() {
        let v = sign * x;
        if l == label {
            if Some(j) != skip && (v > vp || p_best == u32::MAX) {
                (p_best, vp) = (j as u32, v);
            }
        } else if v < vn || n_best == u32::MAX {
            (n_best, vn) = (j as u32, v);
        }
    }
    (p_best != u32::MAX && n_best != u32::MAX).then_some((p_best, n_best))
}

impl crate::MinerSpec for HardNegativeMinerConfig {
    fn build(&self, _ctx: crate::MinerContext) -> Result<Box<dyn Miner>> {
        Ok(Box::new(self.init()?))
    }
}

impl crate::MinerSpec for SemiHardMinerConfig {
    fn build(&self, _ctx: crate::MinerContext) -> Result<Box<dyn Miner>> {
        Ok(Box::new(self.init()?))
    }
}

impl crate::MinerSpec for BatchHardMinerConfig {
    fn build(&self, _ctx: crate::MinerContext) -> Result<Box<dyn Miner>> {
        Ok(Box::new(self.init()?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Rows over several blocks, values from a small set (ties), a few labels, sometimes a NaN
    /// or an infinity, and either no skipped column or one anywhere.
    fn rows() -> impl Strategy<Value = (Vec<f32>, Vec<u32>, u32, f32, Option<usize>)> {
        (1usize..300).prop_flat_map(|m| {
            let value = prop_oneof![
                20 => (0i32..6).prop_map(|v| v as f32 * 0.5),
                1 => Just(f32::NAN),
                1 => Just(f32::INFINITY),
                1 => Just(f32::NEG_INFINITY),
            ];
            (
                prop::collection::vec(value, m),
                prop::collection::vec(0u32..3, m),
                0u32..3,
                prop_oneof![Just(1.0f32), Just(-1.0f32)],
                prop::option::of(0..m),
                any::<bool>(),
            )
                .prop_map(|(mut row, mut labels, label, sign, skip, finite)| {
                    if finite {
                        for v in &mut row {
                            if !v.is_finite() {
                                *v = 1.0;
                            }
                        }
                    }
                    if let Some(s) = skip {
                        // Within a batch the skipped column is the anchor, with its label.
                        labels[s] = label;
                    }
                    (row, labels, label, sign, skip)
                })
        })
    }

    proptest! {
        #[test]
        fn the_two_pass_search_picks_what_the_walk_picks((row, labels, label, sign, skip) in rows()) {
            prop_assert_eq!(
                hardest_pair(&row, &labels, label, sign, skip),
                hardest_pair_walk(&row, &labels, label, sign, skip)
            );
        }
    }
}
