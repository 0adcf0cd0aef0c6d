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
        let (n, cols) = (batch.n, sides.m);
        if pairs.pos_anchor.is_empty() && pairs.neg_anchor.is_empty() {
            return util::empty_losses(embeddings);
        }
        let mut pos = vec![false; n * cols];
        let mut neg = vec![false; n * cols];
        for (&a, &p) in pairs.pos_anchor.iter().zip(&pairs.positive) {
            pos[a as usize * cols + p as usize] = true;
        }
        for (&a, &k) in pairs.neg_anchor.iter().zip(&pairs.negative) {
            let at = a as usize * cols + k as usize;
            if pos[at] {
                return Err(Error::PairBothPositiveAndNegative {
                    anchor: a,
                    other: k,
                });
            }
            neg[at] = true;
        }
        let shape = [n as i64, cols as i64];
        let pos = Tensor::f_from_slice(&pos)?
            .f_to_device(batch.device)?
            .f_view(shape)?;
        let neg = Tensor::f_from_slice(&neg)?
            .f_to_device(batch.device)?
            .f_view(shape)?;

        let c = &self.cfg;
        let mat = sides.matrix(c.metric, embeddings)?;
        let pos_x = util::margin_ts(c.metric, &mat, c.base)?.f_mul_scalar(c.alpha)?;
        let neg_x = util::margin_st(c.metric, c.base, &mat)?.f_mul_scalar(c.beta)?;
        // ln(1 + Σ exp(x)) = softplus(logsumexp(x)); an empty row gives softplus(MASKED) = 0.
        let pos_term = util::masked_logsumexp(&pos_x, &pos)?
            .f_softplus()?
            .f_div_scalar(c.alpha)?;
        let neg_term = util::masked_logsumexp(&neg_x, &neg)?
            .f_softplus()?
            .f_div_scalar(c.beta)?;
        Ok(pos_term.f_add(&neg_term)?)
    }
}
