use serde::{Deserialize, Serialize};

use crate::miner::Batch;
use crate::{Error, Miner, Pairs, Result, Tuples};

/// Parameters of [`LiftedStructuredMiner`]: none (an empty table, so unknown keys are refused).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LiftedStructuredMinerConfig {}

impl LiftedStructuredMinerConfig {
    /// Builds the miner.
    pub fn init(&self) -> Result<LiftedStructuredMiner> {
        Ok(LiftedStructuredMiner { cfg: *self })
    }
}

/// Lifted structured tuples: every positive pair once, with the negatives of both its ends.
///
/// Song, Xiang, Jegelka and Savarese, *Deep Metric Learning via Lifted Structured Feature
/// Embedding* (CVPR 2016), eq. 4: for each positive pair `{i, j}`,
///
/// ```text
/// J_ij = log( Σ_{(i,k) ∈ N} exp(α − D_ik) + Σ_{(j,l) ∈ N} exp(α − D_jl) ) + D_ij
/// ```
///
/// Returned as [`Pairs`]: positive pairs `(i, j)` with `i < j` (each unordered pair once, as
/// in the paper's `1/(2|P|) Σ`), and every negative pair `(a, n)` whose anchor `a` belongs to some
/// positive pair, in row-major order. A loss finds the negatives of `{i, j}` as the negative pairs
/// anchored at `i` or at `j`, which is how pytorch-metric-learning's `LiftedStructureLoss` reads
/// its pair tuple (there without a miner all ordered positive pairs are used, so each unordered
/// pair counts twice). Built by [`LiftedStructuredMinerConfig::init`].
#[derive(Debug, Clone, PartialEq)]
pub struct LiftedStructuredMiner {
    cfg: LiftedStructuredMinerConfig,
}

impl LiftedStructuredMiner {
    /// The miner's parameters.
    pub fn config(&self) -> &LiftedStructuredMinerConfig {
        &self.cfg
    }
}

impl Miner for LiftedStructuredMiner {
    fn mine_batch(&self, batch: &Batch<'_, '_>, _rng: &mut dyn rand::RngCore) -> Result<Tuples> {
        if batch.has_reference() {
            return Err(Error::NoReferenceMining {
                miner: "lifted_structured",
            });
        }
        let labels = batch.labels();
        let n = labels.len();
        let mut out = Pairs::default();
        let mut has_pos = vec![false; n];
        for i in 0..n {
            for j in i + 1..n {
                if labels[i] == labels[j] {
                    out.pos_anchor.push(i as u32);
                    out.positive.push(j as u32);
                    has_pos[i] = true;
                    has_pos[j] = true;
                }
            }
        }
        for a in (0..n).filter(|&a| has_pos[a]) {
            for j in 0..n {
                if labels[j] != labels[a] {
                    out.neg_anchor.push(a as u32);
                    out.negative.push(j as u32);
                }
            }
        }
        if out.neg_anchor.is_empty() {
            // A single class: no positive pair has a negative, so nothing can be learnt.
            return Ok(Pairs::default().into());
        }
        Ok(out.into())
    }
}

impl crate::MinerSpec for LiftedStructuredMinerConfig {
    fn build(&self, _ctx: crate::MinerContext) -> Result<Box<dyn Miner>> {
        Ok(Box::new(self.init()?))
    }

    fn mines_reference(&self) -> bool {
        false
    }
}
