//! The miners. Each file holds one family: per miner a config (`XConfig`, the serde parameters,
//! whose `init` validates them once) and the miner it builds (`XMiner`), with its paper, formula
//! and pytorch-metric-learning equivalent in the miner's doc.

mod all;
mod distance_weighted;
mod hard;
mod lifted;
mod margin;
mod multi_similarity;
mod n_pairs;
mod uniform;

pub use self::{
    all::{AllMiner, AllMinerConfig},
    distance_weighted::{
        DistanceWeightedMiner, DistanceWeightedMinerConfig, unit_sphere_log_density,
    },
    hard::{
        BatchHardMiner, BatchHardMinerConfig, HardNegativeMiner, HardNegativeMinerConfig,
        HardNegativeSelect, SemiHardFallback, SemiHardMiner, SemiHardMinerConfig, SemiHardSelect,
    },
    lifted::{LiftedStructuredMiner, LiftedStructuredMinerConfig},
    margin::{
        PairMarginMiner, PairMarginMinerConfig, TripletMarginMiner, TripletMarginMinerConfig,
        TripletMarginSelect,
    },
    multi_similarity::{MultiSimilarityMiner, MultiSimilarityMinerConfig},
    n_pairs::{NPairsMiner, NPairsMinerConfig, PairSelect},
    uniform::{UniformMiner, UniformMinerConfig},
};

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::miner::Batch;
use crate::{Pairs, Triplets};

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

/// The frame shared by the per-anchor triplet miners: for each anchor (in parallel), its
/// positives and negatives are listed and `emit(anchor, positives, negatives, out)` appends that
/// anchor's triplets; anchors without a positive or without a negative are skipped. The lists
/// are concatenated in anchor order, so the result does not depend on the number of threads.
pub(crate) fn triplets_per_anchor<F>(batch: &Batch<'_, '_>, emit: F) -> Triplets
where
    F: Fn(usize, &[u32], &[u32], &mut Triplets) + Sync + Send,
{
    let parts = batch.per_anchor(|a| {
        let (mut pos, mut neg) = (Vec::new(), Vec::new());
        split_row(batch, a, &mut pos, &mut neg);
        let mut t = Triplets::default();
        if !pos.is_empty() && !neg.is_empty() {
            emit(a, &pos, &neg, &mut t);
        }
        t
    });
    concat_triplets(parts)
}

/// The frame shared by the miners that pick pairs in one or two passes over each anchor's row:
/// `pick(anchor, positives, negatives)` appends that anchor's kept positive and negative
/// columns, in column order, and the pairs come out row-major. Small batches
/// ([`Batch::row_pass_serial`]) append straight into the output on the calling thread; larger
/// ones mine anchors in parallel and concatenate in anchor order, so the result does not depend
/// on the number of threads.
pub(crate) fn pairs_per_anchor<F>(batch: &Batch<'_, '_>, pick: F) -> Pairs
where
    F: Fn(usize, &mut Vec<u32>, &mut Vec<u32>) + Sync + Send,
{
    let mut out = Pairs::default();
    let mut append = |a: usize, pos: &[u32], neg: &[u32]| {
        out.pos_anchor
            .extend(std::iter::repeat_n(a as u32, pos.len()));
        out.positive.extend_from_slice(pos);
        out.neg_anchor
            .extend(std::iter::repeat_n(a as u32, neg.len()));
        out.negative.extend_from_slice(neg);
    };
    if batch.row_pass_serial() {
        let (mut pos, mut neg) = (Vec::new(), Vec::new());
        for a in 0..batch.n {
            pos.clear();
            neg.clear();
            pick(a, &mut pos, &mut neg);
            append(a, &pos, &neg);
        }
    } else {
        let parts = batch.per_anchor(|a| {
            let (mut pos, mut neg) = (Vec::new(), Vec::new());
            pick(a, &mut pos, &mut neg);
            (pos, neg)
        });
        for (a, (pos, neg)) in parts.iter().enumerate() {
            append(a, pos, neg);
        }
    }
    out
}

/// Per-anchor triplet lists, concatenated in anchor order.
fn concat_triplets(parts: Vec<Triplets>) -> Triplets {
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

/// Positives and negatives of `anchor` among the batch's columns ([`Batch::is_positive`]).
fn split_row(batch: &Batch<'_, '_>, anchor: usize, pos: &mut Vec<u32>, neg: &mut Vec<u32>) {
    pos.clear();
    neg.clear();
    for j in 0..batch.m {
        if batch.is_positive(anchor, j) {
            pos.push(j as u32);
        } else if batch.is_negative(anchor, j) {
            neg.push(j as u32);
        }
    }
}
