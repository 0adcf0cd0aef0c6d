use serde::{Deserialize, Serialize};

use super::{pairs_per_anchor, triplets_per_anchor};
use crate::miner::Batch;
use crate::{Error, Miner, Result, Tuples};

/// Which triplets the [`TripletMarginMiner`] keeps, by the triplet's margin
/// `m = d(a, n) − d(a, p)` (`s(a, p) − s(a, n)` for similarities).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TripletMarginSelect {
    /// Every triplet that violates the margin: `m ≤ margin`.
    #[default]
    All,
    /// Those whose negative is at least as close as the positive: `m ≤ margin` and `m ≤ 0`.
    Hard,
    /// Those whose negative is farther than the positive but inside the margin: `0 < m ≤ margin`.
    SemiHard,
    /// Those that satisfy the margin: `m > margin`.
    Easy,
}

/// Parameters of [`TripletMarginMiner`].
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TripletMarginMinerConfig {
    /// The margin, in the metric's units (any finite value). Default: 0.2.
    pub margin: f32,
    /// Which triplets to keep. Default: all that violate the margin.
    pub triplets: TripletMarginSelect,
}

impl Default for TripletMarginMinerConfig {
    fn default() -> Self {
        TripletMarginMinerConfig {
            margin: 0.2,
            triplets: TripletMarginSelect::All,
        }
    }
}

impl TripletMarginMinerConfig {
    /// Checks the parameters and builds the miner.
    ///
    /// # Errors
    /// [`Error::NonFiniteParameter`] for a NaN or infinite margin.
    pub fn init(&self) -> Result<TripletMarginMiner> {
        finite("margin", self.margin)?;
        Ok(TripletMarginMiner { cfg: *self })
    }
}

/// Every triplet whose margin lies in a band: pytorch-metric-learning's
/// `TripletMarginMiner(margin, type_of_triplets)`, index for index.
///
/// For each triplet `(a, p, n)` of the batch (same label for `a` and `p`, `p ≠ a`, another label
/// for `n`) the margin `m = d(a, n) − d(a, p)` (for similarities `s(a, p) − s(a, n)`, so that a
/// larger `m` is always an easier triplet) decides, per [`TripletMarginSelect`]: all triplets
/// with `m ≤ margin` (pml's default `"all"`), the hard ones (`m ≤ min(margin, 0)`), the
/// semi-hard ones (`0 < m ≤ margin`, FaceNet's band) or the easy ones (`m > margin`). Triplets come
/// ordered by anchor, positive, negative, as pml's `torch.where` over the triplet mask gives
/// them, and `m` is computed as pml computes it (one `f32` subtraction), so the same matrix gives
/// the same triplets.
///
/// [`SemiHardMiner`](crate::SemiHardMiner) with `select = all` and
/// [`HardNegativeMiner`](crate::HardNegativeMiner) with `select = all_hard` keep the same sets as
/// the semi-hard and hard selections here (for a positive margin). Built by
/// [`TripletMarginMinerConfig::init`].
#[derive(Debug, Clone, PartialEq)]
pub struct TripletMarginMiner {
    cfg: TripletMarginMinerConfig,
}

impl TripletMarginMiner {
    /// The miner's parameters.
    pub fn config(&self) -> &TripletMarginMinerConfig {
        &self.cfg
    }
}

impl Miner for TripletMarginMiner {
    fn mine_batch(&self, batch: &Batch<'_, '_>, _rng: &mut dyn rand::RngCore) -> Result<Tuples> {
        let TripletMarginMinerConfig { margin, triplets } = self.cfg;
        let keep = move |m: f32| match triplets {
            TripletMarginSelect::All => m <= margin,
            TripletMarginSelect::Hard => m <= margin && m <= 0.0,
            TripletMarginSelect::SemiHard => m <= margin && m > 0.0,
            TripletMarginSelect::Easy => m > margin,
        };
        let t = triplets_per_anchor(batch, |a, pos, neg, t| {
            let row = batch.row(a);
            let v_neg: Vec<f32> = neg.iter().map(|&n| batch.dis(row[n as usize])).collect();
            for &p in pos {
                let v_ap = batch.dis(row[p as usize]);
                for (&n, &v_an) in neg.iter().zip(&v_neg) {
                    if keep(v_an - v_ap) {
                        t.push(a as u32, p, n);
                    }
                }
            }
        });
        Ok(t.into())
    }
}

/// Parameters of [`PairMarginMiner`].
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PairMarginMinerConfig {
    /// Positive pairs farther apart than this are kept (for similarities: less similar than
    /// this). Default: 0.2.
    pub pos_margin: f32,
    /// Negative pairs closer than this are kept (for similarities: more similar than this).
    /// Default: 0.8.
    pub neg_margin: f32,
}

impl Default for PairMarginMinerConfig {
    fn default() -> Self {
        PairMarginMinerConfig {
            pos_margin: 0.2,
            neg_margin: 0.8,
        }
    }
}

impl PairMarginMinerConfig {
    /// Checks the parameters and builds the miner.
    ///
    /// # Errors
    /// [`Error::NonFiniteParameter`] for a NaN or infinite margin.
    pub fn init(&self) -> Result<PairMarginMiner> {
        finite("pos_margin", self.pos_margin)?;
        finite("neg_margin", self.neg_margin)?;
        Ok(PairMarginMiner { cfg: *self })
    }
}

/// The pairs that violate a contrastive margin: pytorch-metric-learning's
/// `PairMarginMiner(pos_margin, neg_margin)`, index for index.
///
/// ```text
/// positive pair (a, p) kept if d(a, p) > pos_margin      (similarities: s(a, p) < pos_margin)
/// negative pair (a, n) kept if d(a, n) < neg_margin      (similarities: s(a, n) > neg_margin)
/// ```
///
/// the pairs a contrastive loss with those margins would give a non-zero term (Hadsell, Chopra
/// and LeCun, CVPR 2006). Pairs come in row-major order (by anchor, then by the other index), as
/// pml's `get_all_pairs_indices` lists them. Built by [`PairMarginMinerConfig::init`].
#[derive(Debug, Clone, PartialEq)]
pub struct PairMarginMiner {
    cfg: PairMarginMinerConfig,
}

impl PairMarginMiner {
    /// The miner's parameters.
    pub fn config(&self) -> &PairMarginMinerConfig {
        &self.cfg
    }
}

impl Miner for PairMarginMiner {
    fn mine_batch(&self, batch: &Batch<'_, '_>, _rng: &mut dyn rand::RngCore) -> Result<Tuples> {
        // In the batch's dissimilarities `v = sign · x` both rules read `v > sign · pos_margin`
        // and `v < sign · neg_margin`; negation is exact, so these are pml's comparisons.
        let pos_margin = batch.dis(self.cfg.pos_margin);
        let neg_margin = batch.dis(self.cfg.neg_margin);
        let sign = batch.dis(1.0);
        let (labels, ref_labels) = (batch.labels(), batch.ref_labels());
        let pairs = pairs_per_anchor(batch, |a, pos, neg| {
            // Within a batch the anchor's own column (a positive by its label) is no pair.
            let skip = if batch.has_reference() { usize::MAX } else { a };
            let label = labels[a];
            // Branch-free, so that a chunk's test vectorises.
            let kept = |x: f32, l: u32| {
                let (v, same) = (sign * x, l == label);
                (same & (v > pos_margin)) | (!same & (v < neg_margin))
            };
            let mut list = |start: usize, vals: &[f32], labs: &[u32]| {
                for (k, (&x, &l)) in vals.iter().zip(labs).enumerate() {
                    let j = start + k;
                    if kept(x, l) && j != skip {
                        if l == label { &mut *pos } else { &mut *neg }.push(j as u32);
                    }
                }
            };
            let row = batch.row(a);
            let (vals, labs) = (
                row.chunks_exact(KEEP_CHUNK),
                ref_labels.chunks_exact(KEEP_CHUNK),
            );
            let (v_rest, l_rest) = (vals.remainder(), labs.remainder());
            for (c, (v, l)) in vals.zip(labs).enumerate() {
                // Most columns keep nothing: one pass over the chunk says whether any does, and
                // only then are its columns listed.
                let any = (0..KEEP_CHUNK).fold(false, |any, k| any | kept(v[k], l[k]));
                if any {
                    list(c * KEEP_CHUNK, v, l);
                }
            }
            list(row.len() - v_rest.len(), v_rest, l_rest);
        });
        Ok(pairs.into())
    }
}

/// Columns the [`PairMarginMiner`] tests at once before listing any of them.
const KEEP_CHUNK: usize = 16;

fn finite(name: &'static str, value: f32) -> Result<()> {
    if value.is_finite() {
        Ok(())
    } else {
        Err(Error::NonFiniteParameter { name, value })
    }
}

impl crate::MinerSpec for TripletMarginMinerConfig {
    fn build(&self, _ctx: crate::MinerContext) -> Result<Box<dyn Miner>> {
        Ok(Box::new(self.init()?))
    }
}

impl crate::MinerSpec for PairMarginMinerConfig {
    fn build(&self, _ctx: crate::MinerContext) -> Result<Box<dyn Miner>> {
        Ok(Box::new(self.init()?))
    }
}
