//! Multi-similarity loss (Wang, Han, Huang, Dong & Scott 2019).

use dml_kernels::Metric;
use dml_sampling::Tuples;
use serde::{Deserialize, Serialize};
use tch::Tensor;

use crate::{Error, Loss, Reduction, Reference, Result, tuples, util};

/// Parameters of [`MultiSimilarityLoss`]; the defaults are pml's `MultiSimilarityLoss()`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MultiSimilarityConfig {
    /// α: sharpness of the positive term. Default 2.
    pub alpha: f64,
    /// β: sharpness of the negative term. Default 50.
    pub beta: f64,
    /// λ: the similarity that separates positives from negatives. Default 0.5.
    pub base: f64,
    /// How embeddings are compared. Default [`Metric::Cosine`]; with a distance the signs flip.
    pub metric: Metric,
    /// Default [`Reduction::Mean`] over the batch's anchors (rows).
    pub reduction: Reduction,
}

impl Default for MultiSimilarityConfig {
    fn default() -> Self {
        Self {
            alpha: 2.0,
            beta: 50.0,
            base: 0.5,
            metric: Metric::Cosine,
            reduction: Reduction::Mean,
        }
    }
}

impl MultiSimilarityConfig {
    /// Checks the parameters and builds the loss.
    pub fn init(&self) -> Result<MultiSimilarityLoss> {
        util::positive("alpha", self.alpha)?;
        util::positive("beta", self.beta)?;
        util::finite("base", self.base)?;
        Ok(MultiSimilarityLoss { cfg: *self })
    }
}

/// Multi-similarity loss: per anchor, a soft maximum over its positives' dissimilarity and one
/// over its negatives' similarity, each measured from the threshold λ.
///
/// ```text
/// L_i = 1/α · ln(1 + Σ_{k ∈ P_i} exp(−α (S_ik − λ)))
///     + 1/β · ln(1 + Σ_{k ∈ N_i} exp( β (S_ik − λ)))
/// L   = reduce(L_i over all B anchors)          (an anchor without pairs contributes 0)
/// ```
///
/// `P_i` and `N_i` are the positives and negatives paired with anchor `i` in the tuples (each
/// pair once, however often it is listed), or all of them without tuples. With a distance `d`
/// the terms use `d − λ` and `λ − d`.
///
/// # Shapes
/// - embeddings: `(B, D)`, floating point; labels: `B`.
/// - [`forward`](Loss::forward): scalar. [`forward_no_reduction`](Loss::forward_no_reduction):
///   `(B,)`, one loss per anchor.
///
/// # Reference
/// X. Wang, X. Han, W. Huang, D. Dong, M. R. Scott, "Multi-Similarity Loss with General Pair
/// Weighting for Deep Metric Learning", CVPR 2019, eq. (12) (the pair mining of its eq. (10)-(11)
/// is a miner in dml-sampling).
///
/// # pytorch-metric-learning
/// `MultiSimilarityLoss(alpha=2, beta=50, base=0.5)` with cosine similarity and `MeanReducer`
/// over rows. Differences: a pair listed both as positive and negative is an error here (pml
/// asserts); pml returns zero when every index list holds at most one entry, this loss computes
/// that case; tuple weights are ignored.
#[derive(Debug, Clone)]
pub struct MultiSimilarityLoss {
    cfg: MultiSimilarityConfig,
}

impl MultiSimilarityLoss {
    /// The loss's parameters.
    pub fn config(&self) -> &MultiSimilarityConfig {
        &self.cfg
    }
}

impl Loss for MultiSimilarityLoss {
    fn reduction(&self) -> Reduction {
        self.cfg.reduction
    }

    fn forward_no_reduction(
        &self,
        embeddings: &Tensor,
        labels: &[u32],
        tuples: Option<&Tuples>,
    ) -> Result<Tensor> {
        self.per_anchor(embeddings, labels, None, tuples)
    }

    fn forward_reference(
        &self,
        embeddings: &Tensor,
        labels: &[u32],
        reference: &Reference<'_>,
        tuples: Option<&Tuples>,
    ) -> Result<Tensor> {
        let losses = self.per_anchor(embeddings, labels, Some(reference), tuples)?;
        self.reduction().reduce(&losses, embeddings)
    }

    fn metric(&self) -> Metric {
        self.cfg.metric
    }
}

impl MultiSimilarityLoss {
    /// One loss per anchor (batch row), its pairs' other ends in the batch or in `reference`.
    fn per_anchor(
        &self,
        embeddings: &Tensor,
        labels: &[u32],
        reference: Option<&Reference<'_>>,
        tuples: Option<&Tuples>,
    ) -> Result<Tensor> {
        let sides = util::Sides::new(embeddings, labels, reference)?;
        let batch = sides.batch;
        let pairs = tuples::side_pairs(&sides, tuples)?;
        if pairs.pos_anchor.is_empty() && pairs.neg_anchor.is_empty() {
            return util::empty_losses(embeddings);
        }
        // pml marks the pairs in 0/1 masks, so a pair listed twice (two triplets sharing their
        // anchor and positive) counts once.
        let pos = unique_pairs(&pairs.pos_anchor, &pairs.positive);
        let neg = unique_pairs(&pairs.neg_anchor, &pairs.negative);
        if let Some((anchor, other)) = first_common(&pos, &neg) {
            return Err(Error::PairBothPositiveAndNegative { anchor, other });
        }
        let c = &self.cfg;
        let values =
            sides.pair_values(c.metric, embeddings, &[(&pos.0, &pos.1), (&neg.0, &neg.1)])?;
        let pos_x = util::margin_ts(c.metric, &values[0], c.base)?.f_mul_scalar(c.alpha)?;
        let neg_x = util::margin_st(c.metric, c.base, &values[1])?.f_mul_scalar(c.beta)?;
        // ln(1 + Σ exp(x)) = softplus(logsumexp(x)); an anchor without pairs gives
        // softplus(MASKED) = 0.
        let pos_term = util::segment_logsumexp(&pos_x, &pos.0, batch.n)?
            .f_softplus()?
            .f_div_scalar(c.alpha)?;
        let neg_term = util::segment_logsumexp(&neg_x, &neg.0, batch.n)?
            .f_softplus()?
            .f_div_scalar(c.beta)?;
        Ok(pos_term.f_add(&neg_term)?)
    }
}

/// The distinct `(anchor, other)` pairs, sorted, as two columns.
fn unique_pairs(anchors: &[u32], others: &[u32]) -> (Vec<u32>, Vec<u32>) {
    let mut pairs: Vec<(u32, u32)> = anchors
        .iter()
        .copied()
        .zip(others.iter().copied())
        .collect();
    pairs.sort_unstable();
    pairs.dedup();
    pairs.into_iter().unzip()
}

/// The first pair in both sorted pair lists, if any.
fn first_common(a: &(Vec<u32>, Vec<u32>), b: &(Vec<u32>, Vec<u32>)) -> Option<(u32, u32)> {
    let (mut i, mut j) = (0, 0);
    while i < a.0.len() && j < b.0.len() {
        let (x, y) = ((a.0[i], a.1[i]), (b.0[j], b.1[j]));
        match x.cmp(&y) {
            std::cmp::Ordering::Less => i += 1,
            std::cmp::Ordering::Greater => j += 1,
            std::cmp::Ordering::Equal => return Some(x),
        }
    }
    None
}

impl crate::LossSpec for MultiSimilarityConfig {
    fn build(&self, p: &tch::nn::Path, ctx: crate::LossContext) -> Result<Box<dyn crate::Loss>> {
        let _ = (p, ctx);
        Ok(Box::new(self.init()?))
    }

    fn tuple_kind(&self) -> Option<dml_sampling::TupleKind> {
        Some(dml_sampling::TupleKind::Pairs)
    }

    fn metric(&self) -> dml_kernels::Metric {
        self.metric
    }

    fn takes_reference(&self) -> bool {
        true
    }
}
