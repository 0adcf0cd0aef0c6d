use serde::{Deserialize, Serialize};

use crate::miner::{Batch, TupleKind};
use crate::{Miner, Pairs, Result, Triplets, Tuples};

/// Parameters of [`AllMiner`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AllMinerConfig {
    /// Pairs or triplets. Default `None`: the form the loss uses, which the training facade
    /// fills in from the loss ([`crate::MinerConfig::with_loss_tuples`]) — pairs for the pair
    /// losses, triplets for the triplet losses, as pml's losses do without a miner. A miner built
    /// with `None` and no loss returns triplets.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output: Option<TupleKind>,
}

impl AllMinerConfig {
    /// Builds the miner (every parameter value is valid).
    pub fn init(&self) -> Result<AllMiner> {
        Ok(AllMiner { cfg: *self })
    }
}

/// Every valid pair or every valid triplet of the batch, without looking at distances.
///
/// This is what a pytorch-metric-learning loss does when it is called without a miner
/// (`get_all_pairs_indices` / `get_all_triplets_indices`), index for index. Built by
/// [`AllMinerConfig::init`].
#[derive(Debug, Clone, PartialEq)]
pub struct AllMiner {
    cfg: AllMinerConfig,
}

impl AllMiner {
    /// The miner's parameters.
    pub fn config(&self) -> &AllMinerConfig {
        &self.cfg
    }

    /// What the miner returns: the configured form, or triplets when none was given.
    pub fn output(&self) -> TupleKind {
        self.cfg.output.unwrap_or_default()
    }
}

impl Miner for AllMiner {
    fn mine_batch(&self, batch: &Batch<'_, '_>, _rng: &mut dyn rand::RngCore) -> Result<Tuples> {
        Ok(match self.output() {
            TupleKind::Pairs => Pairs::all_of(batch).into(),
            TupleKind::Triplets => Triplets::all_of(batch).into(),
        })
    }
}

impl crate::MinerSpec for AllMinerConfig {
    fn build(&self, _ctx: crate::MinerContext) -> Result<Box<dyn Miner>> {
        Ok(Box::new(self.init()?))
    }
}
