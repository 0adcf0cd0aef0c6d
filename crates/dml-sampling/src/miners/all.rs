use dml_kernels::Metric;
use ndarray::ArrayView2;
use serde::{Deserialize, Serialize};

use crate::miner::{Batch, TupleKind};
use crate::{Miner, Pairs, Result, Triplets, Tuples};

/// Parameters of [`AllMiner`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AllConfig {
    /// Pairs or triplets. Default: triplets.
    pub output: TupleKind,
}

impl AllConfig {
    /// Builds the miner (every parameter value is valid).
    pub fn init(&self) -> Result<AllMiner> {
        Ok(AllMiner { cfg: *self })
    }
}

/// Every valid pair or every valid triplet of the batch, without looking at distances.
///
/// This is what a pytorch-metric-learning loss does when it is called without a miner
/// (`get_all_pairs_indices` / `get_all_triplets_indices`), index for index. Built by
/// [`AllConfig::init`].
#[derive(Debug, Clone, PartialEq)]
pub struct AllMiner {
    cfg: AllConfig,
}

impl AllMiner {
    /// The miner's parameters.
    pub fn config(&self) -> &AllConfig {
        &self.cfg
    }
}

impl Miner for AllMiner {
    fn mine(
        &self,
        dist: ArrayView2<'_, f32>,
        metric: Metric,
        labels: &[u32],
        _rng: &mut dyn rand::RngCore,
    ) -> Result<Tuples> {
        Batch::new(dist, metric, labels)?;
        Ok(match self.cfg.output {
            TupleKind::Pairs => Pairs::all(labels).into(),
            TupleKind::Triplets => Triplets::all(labels).into(),
        })
    }
}
