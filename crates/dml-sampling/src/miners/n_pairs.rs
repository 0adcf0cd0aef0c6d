use rand::Rng;
use serde::{Deserialize, Serialize};

use crate::miner::Batch;
use crate::{Error, Miner, Result, Triplets, Tuples};

/// How the [`NPairsMiner`] picks each class's (anchor, positive) pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PairSelect {
    /// The class's two lowest batch indices (pytorch-metric-learning's choice). A PK batch is
    /// already shuffled within each class, so this is random across batches.
    #[default]
    First,
    /// Two distinct members drawn at random.
    Random,
}

/// Parameters of [`NPairsMiner`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NPairsMinerConfig {
    /// How each class's pair is picked. Default: first.
    pub select: PairSelect,
}

impl NPairsMinerConfig {
    /// Builds the miner (every parameter value is valid).
    pub fn init(&self) -> Result<NPairsMiner> {
        Ok(NPairsMiner { cfg: *self })
    }
}

/// N-pair tuples: one (anchor, positive) pair per class; the other classes' positives are the
/// anchor's negatives.
///
/// Sohn, *Improved Deep Metric Learning with Multi-class N-pair Loss Objective* (NeurIPS 2016):
/// with pairs `(a_i, p_i)` from `N` distinct classes, the loss of anchor `i` is
/// `log(1 + Σ_{j≠i} exp(f_{a_i}·f_{p_j} − f_{a_i}·f_{p_i}))`. The miner returns the triplets
/// `(a_i, p_i, p_j)` for every `j ≠ i`, grouped by anchor, classes in ascending label order.
/// Classes with a single member take no part; fewer than two classes with a pair give nothing.
/// pytorch-metric-learning equivalent: the pairs `NPairsLoss` builds with
/// `convert_to_pos_pairs_with_unique_labels` (same pairs with [`PairSelect::First`]). Built by
/// [`NPairsMinerConfig::init`].
#[derive(Debug, Clone, PartialEq)]
pub struct NPairsMiner {
    cfg: NPairsMinerConfig,
}

impl NPairsMiner {
    /// The miner's parameters.
    pub fn config(&self) -> &NPairsMinerConfig {
        &self.cfg
    }
}

impl Miner for NPairsMiner {
    fn mine_batch(&self, batch: &Batch<'_, '_>, rng: &mut dyn rand::RngCore) -> Result<Tuples> {
        if batch.has_reference() {
            return Err(Error::NoReferenceMining { miner: "n_pairs" });
        }
        let labels = batch.labels();
        let mut members: Vec<(u32, u32)> = labels
            .iter()
            .enumerate()
            .map(|(i, &l)| (l, i as u32))
            .collect();
        members.sort_unstable();
        let mut pairs: Vec<(u32, u32)> = Vec::new();
        for class in members.chunk_by(|x, y| x.0 == y.0) {
            if class.len() < 2 {
                continue;
            }
            let (i, j) = match self.cfg.select {
                PairSelect::First => (0, 1),
                PairSelect::Random => {
                    let i = rng.random_range(0..class.len());
                    let j = rng.random_range(0..class.len() - 1);
                    (i, if j >= i { j + 1 } else { j })
                }
            };
            pairs.push((class[i].1, class[j].1));
        }
        let mut t = Triplets::default();
        if pairs.len() < 2 {
            return Ok(t.into());
        }
        for (i, &(a, p)) in pairs.iter().enumerate() {
            for (j, &(_, n)) in pairs.iter().enumerate() {
                if i != j {
                    t.push(a, p, n);
                }
            }
        }
        Ok(t.into())
    }
}

impl crate::MinerSpec for NPairsMinerConfig {
    fn build(&self, _ctx: crate::MinerContext) -> Result<Box<dyn Miner>> {
        Ok(Box::new(self.init()?))
    }

    fn mines_reference(&self) -> bool {
        false
    }
}
