use serde::{Deserialize, Serialize};

use super::pairs_per_anchor;
use crate::miner::Batch;
use crate::{Error, Miner, Result, Tuples};

/// Parameters of [`MultiSimilarityMiner`].
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MultiSimilarityMinerConfig {
    /// The ε of the rule, in the metric's units. Default: 0.1.
    pub epsilon: f32,
}

impl Default for MultiSimilarityMinerConfig {
    fn default() -> Self {
        MultiSimilarityMinerConfig { epsilon: 0.1 }
    }
}

impl MultiSimilarityMinerConfig {
    /// Checks the parameters and builds the miner.
    ///
    /// # Errors
    /// [`Error::InvalidEpsilon`] unless `epsilon` is finite and non-negative.
    pub fn init(&self) -> Result<MultiSimilarityMiner> {
        if !(self.epsilon.is_finite() && self.epsilon >= 0.0) {
            return Err(Error::InvalidEpsilon {
                epsilon: self.epsilon,
            });
        }
        Ok(MultiSimilarityMiner { cfg: *self })
    }
}

/// Multi-similarity pair mining.
///
/// Wang, Han, Huang, Dong and Scott, *Multi-Similarity Loss with General Pair Weighting for Deep
/// Metric Learning* (CVPR 2019), eqs. 5–6: with similarities `S`, a negative pair `(a, n)` is
/// kept if `S_an + ε > min_{p ∈ P_a} S_ap`, and a positive pair `(a, p)` is kept if
/// `S_ap − ε < max_{n ∈ N_a} S_an`. For a distance metric the inequalities flip:
/// `d_an − ε < max_p d_ap` and `d_ap + ε > min_n d_an`. Anchors without a positive or without a
/// negative keep nothing. Pairs come in row-major order.
///
/// pytorch-metric-learning equivalent: `MultiSimilarityMiner(epsilon)` (the same pair sets; pml
/// orders each anchor's pairs by value instead). Built by [`MultiSimilarityMinerConfig::init`].
#[derive(Debug, Clone, PartialEq)]
pub struct MultiSimilarityMiner {
    cfg: MultiSimilarityMinerConfig,
}

impl MultiSimilarityMiner {
    /// The miner's parameters.
    pub fn config(&self) -> &MultiSimilarityMinerConfig {
        &self.cfg
    }
}

impl Miner for MultiSimilarityMiner {
    fn mine_batch(&self, batch: &Batch<'_, '_>, _rng: &mut dyn rand::RngCore) -> Result<Tuples> {
        let eps = self.cfg.epsilon;
        let out = pairs_per_anchor(batch, |a, pos, neg| {
            let row = batch.row(a);
            // Dissimilarities: hardest (largest) positive, hardest (smallest) negative.
            let (mut max_pos, mut min_neg) = (f32::NEG_INFINITY, f32::INFINITY);
            for (j, &x) in row.iter().enumerate() {
                let v = batch.dis(x);
                if batch.is_positive(a, j) {
                    max_pos = max_pos.max(v);
                } else if batch.is_negative(a, j) {
                    min_neg = min_neg.min(v);
                }
            }
            if max_pos == f32::NEG_INFINITY || min_neg == f32::INFINITY {
                return;
            }
            for (j, &x) in row.iter().enumerate() {
                let v = batch.dis(x);
                if batch.is_positive(a, j) {
                    if v + eps > min_neg {
                        pos.push(j as u32);
                    }
                } else if batch.is_negative(a, j) && v - eps < max_pos {
                    neg.push(j as u32);
                }
            }
        });
        Ok(out.into())
    }
}

impl crate::MinerSpec for MultiSimilarityMinerConfig {
    fn build(&self, _ctx: crate::MinerContext) -> Result<Box<dyn Miner>> {
        Ok(Box::new(self.init()?))
    }
}
