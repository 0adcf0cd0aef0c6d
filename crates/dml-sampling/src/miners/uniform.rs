use dml_kernels::Metric;
use ndarray::ArrayView2;
use rand::Rng;
use serde::{Deserialize, Serialize};

use super::{AnchorRngs, triplets_per_anchor};
use crate::miner::Batch;
use crate::{Error, Miner, Result, Tuples};

/// Uniform negatives: for every positive pair `(a, p)`, `negatives_per_positive` negatives of
/// `a` drawn uniformly at random, with replacement.
///
/// The "uniform sampling" baseline of Wu et al., *Sampling Matters in Deep Embedding Learning*
/// (ICCV 2017). pytorch-metric-learning's nearest equivalent is `get_random_triplet_indices`
/// (what its triplet losses do without a miner), which also draws the positives at random; here
/// every positive pair is used exactly once.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct UniformMiner {
    /// Negatives drawn per positive pair. Default: 1.
    pub negatives_per_positive: usize,
}

impl Default for UniformMiner {
    fn default() -> Self {
        UniformMiner {
            negatives_per_positive: 1,
        }
    }
}

impl UniformMiner {
    /// Checks the parameters.
    pub fn validate(&self) -> Result<()> {
        if self.negatives_per_positive == 0 {
            return Err(Error::ZeroCount {
                name: "negatives_per_positive",
            });
        }
        Ok(())
    }
}

impl Miner for UniformMiner {
    fn mine(
        &self,
        dist: ArrayView2<'_, f32>,
        metric: Metric,
        labels: &[u32],
        rng: &mut dyn rand::RngCore,
    ) -> Result<Tuples> {
        self.validate()?;
        let batch = Batch::new(dist, metric, labels)?;
        let rngs = AnchorRngs::new(rng);
        let k = self.negatives_per_positive;
        let t = triplets_per_anchor(&batch, labels, |a, pos, neg, t| {
            let mut r = rngs.for_anchor(a);
            for &p in pos {
                for _ in 0..k {
                    t.push(a as u32, p, neg[r.random_range(0..neg.len())]);
                }
            }
        });
        Ok(t.into())
    }

    fn name(&self) -> &'static str {
        "uniform"
    }
}
