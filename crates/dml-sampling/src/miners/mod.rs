//! The miners. Each file holds one family, with its paper, formula and pytorch-metric-learning
//! equivalent in the type's doc.

mod all;
mod distance_weighted;
mod hard;
mod lifted;
mod multi_similarity;
mod n_pairs;
mod uniform;

pub use self::{
    all::AllMiner,
    distance_weighted::{DistanceWeightedMiner, unit_sphere_log_density},
    hard::{
        BatchHardMiner, HardNegativeMiner, HardNegativeSelect, SemiHardFallback, SemiHardMiner,
        SemiHardSelect,
    },
    lifted::LiftedStructuredMiner,
    multi_similarity::MultiSimilarityMiner,
    n_pairs::{NPairsMiner, PairSelect},
    uniform::UniformMiner,
};

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::Triplets;

/// Per-anchor RNGs for parallel miners: one seed drawn from the caller's RNG, then one ChaCha
/// stream per anchor, so the result is the same whatever the number of threads.
#[derive(Debug, Clone, Copy)]
pub(crate) struct AnchorRngs {
    seed: u64,
}

impl AnchorRngs {
    pub(crate) fn new(rng: &mut dyn rand::RngCore) -> AnchorRngs {
        AnchorRngs {
            seed: rng.next_u64(),
        }
    }

    pub(crate) fn for_anchor(self, anchor: usize) -> ChaCha8Rng {
        let mut r = ChaCha8Rng::seed_from_u64(self.seed);
        r.set_stream(anchor as u64);
        r
    }
}

/// Per-anchor triplet lists, concatenated in anchor order.
pub(crate) fn concat_triplets(parts: Vec<Triplets>) -> Triplets {
    let total: usize = parts.iter().map(Triplets::len).sum();
    let mut out = Triplets {
        anchor: Vec::with_capacity(total),
        positive: Vec::with_capacity(total),
        negative: Vec::with_capacity(total),
        weight: None,
    };
    for t in parts {
        out.anchor.extend_from_slice(&t.anchor);
        out.positive.extend_from_slice(&t.positive);
        out.negative.extend_from_slice(&t.negative);
    }
    out
}

/// Positives (same label, other index) and negatives (other label) of `anchor`.
pub(crate) fn split_row(labels: &[u32], anchor: usize, pos: &mut Vec<u32>, neg: &mut Vec<u32>) {
    pos.clear();
    neg.clear();
    let la = labels[anchor];
    for (j, &l) in labels.iter().enumerate() {
        if l == la {
            if j != anchor {
                pos.push(j as u32);
            }
        } else {
            neg.push(j as u32);
        }
    }
}
