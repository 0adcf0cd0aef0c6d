use rand::Rng;
use serde::{Deserialize, Serialize};

use super::{AnchorRngs, triplets_per_anchor};
use crate::miner::Batch;
use crate::{Error, Miner, Result, Tuples};

/// Parameters of [`UniformMiner`].
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct UniformMinerConfig {
    /// Negatives drawn per positive pair. Default: 1.
    pub negatives_per_positive: usize,
}

impl Default for UniformMinerConfig {
    fn default() -> Self {
        UniformMinerConfig {
            negatives_per_positive: 1,
        }
    }
}

impl UniformMinerConfig {
    /// Checks the parameters and builds the miner.
    ///
    /// # Errors
    /// [`Error::ZeroCount`] when `negatives_per_positive` is 0.
    pub fn init(&self) -> Result<UniformMiner> {
        if self.negatives_per_positive == 0 {
            return Err(Error::ZeroCount {
                name: "negatives_per_positive",
            });
        }
        Ok(UniformMiner { cfg: *self })
    }
}

/// Uniform negatives: for every positive pair `(a, p)`, `negatives_per_positive` negatives of
/// `a` drawn uniformly at random, with replacement.
///
/// The "uniform sampling" baseline of Wu et al., *Sampling Matters in Deep Embedding Learning*
/// (ICCV 2017). pytorch-metric-learning's nearest equivalent is `get_random_triplet_indices`
/// (what its triplet losses do without a miner), which also draws the positives at random; here
/// every positive pair is used exactly once. Built by [`UniformMinerConfig::init`].
#[derive(Debug, Clone, PartialEq)]
pub struct UniformMiner {
    cfg: UniformMinerConfig,
}

impl UniformMiner {
    /// The miner's parameters.
    pub fn config(&self) -> &UniformMinerConfig {
        &self.cfg
    }
}

impl Miner for UniformMiner {
    fn mine_batch(&self, batch: &Batch<'_, '_>, rng: &mut dyn rand::RngCore) -> Result<Tuples> {
        let rngs = AnchorRngs::new(rng);
        let k = self.cfg.negatives_per_positive;
        let t = triplets_per_anchor(batch, |a, pos, neg, t| {
            let mut r = rngs.for_anchor(a);
            for &p in pos {
                for _ in 0..k {
                    t.push(a as u32, p, neg[r.random_range(0..neg.len())]);
                }
            }
        });
        Ok(t.into())
    }
}

impl crate::MinerSpec for UniformMinerConfig {
    fn build(&self, _ctx: crate::MinerContext) -> Result<Box<dyn Miner>> {
        Ok(Box::new(self.init()?))
    }
}
