//! Contrastive loss (Hadsell, Chopra & LeCun 2006).

use dml_kernels::Metric;
use dml_sampling::Tuples;
use serde::{Deserialize, Serialize};
use tch::Tensor;

use crate::{Loss, Reduction, Reference, Result, tuples, util};

/// Parameters of [`ContrastiveLoss`]; the defaults are pml's `ContrastiveLoss()`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ContrastiveConfig {
    /// Positive pairs closer than this cost nothing. Default 0.
    pub pos_margin: f64,
    /// Negative pairs farther than this cost nothing. Default 1.
    pub neg_margin: f64,
    /// How embeddings are compared. Default [`Metric::Euclidean`]. With a similarity the margins
    /// are similarities: positives are pushed above `pos_margin`, negatives below `neg_margin`.
    pub metric: Metric,
    /// Applied to the positive and the negative pair losses separately, then summed (as pml's
    /// per-sub-loss reducers do). Default [`Reduction::MeanNonZero`].
    pub reduction: Reduction,
}

impl Default for ContrastiveConfig {
    fn default() -> Self {
        Self {
            pos_margin: 0.0,
            neg_margin: 1.0,
            metric: Metric::Euclidean,
            reduction: Reduction::MeanNonZero,
        }
    }
}

impl ContrastiveConfig {
    /// Checks the parameters and builds the loss.
    pub fn init(&self) -> Result<ContrastiveLoss> {
        util::finite("pos_margin", self.pos_margin)?;
        util::finite("neg_margin", self.neg_margin)?;
        Ok(ContrastiveLoss { cfg: *self })
    }
}

/// Contrastive loss: pulls positive pairs within `pos_margin`, pushes negative pairs beyond
/// `neg_margin`.
///
/// ```text
/// L_pos(a, p) = max(0, d(a, p) − m_pos)          for each positive pair
/// L_neg(a, n) = max(0, m_neg − d(a, n))          for each negative pair
/// L = reduce(w_pos · L_pos) + reduce(w_neg · L_neg)
/// ```
///
/// With a similarity `s` in place of `d`, the signs flip: `max(0, m_pos − s)` and
/// `max(0, s − m_neg)`. Tuple weights `w` (1 when absent) multiply each pair's loss. Without
/// mined tuples every positive and negative pair of the batch is used; triplets are split into
/// their `(a, p)` and `(a, n)` pairs.
///
/// # Shapes
/// - embeddings: `(B, D)`, floating point; labels: `B`.
/// - [`forward`](Loss::forward): scalar. [`forward_no_reduction`](Loss::forward_no_reduction):
///   `(P + N,)`, the `P` positive-pair losses followed by the `N` negative-pair losses.
///
/// # Reference
/// R. Hadsell, S. Chopra, Y. LeCun, "Dimensionality Reduction by Learning an Invariant
/// Mapping", CVPR 2006 (the two-margin form is pml's).
///
/// # pytorch-metric-learning
/// `ContrastiveLoss(pos_margin=0, neg_margin=1)` with its default `AvgNonZeroReducer`, applied to
/// the positive and negative sub-losses separately and summed. Difference: pml's default distance
/// L2-normalises the embeddings inside the loss; here the metric applies to the embeddings as
/// given (normalise in the model, or use [`Metric::Cosine`]). pml also returns zero when every
/// index list holds at most one entry; this loss computes the one-pair case.
#[derive(Debug, Clone)]
pub struct ContrastiveLoss {
    cfg: ContrastiveConfig,
}

impl ContrastiveLoss {
    /// The loss's parameters.
    pub fn config(&self) -> &ContrastiveConfig {
        &self.cfg
    }

    /// Per-pair losses (weighted), positive pairs first; `None` when there is no pair.
    fn per_pair(
        &self,
        embeddings: &Tensor,
        labels: &[u32],
        reference: Option<&Reference<'_>>,
        tuples: Option<&Tuples>,
    ) -> Result<Option<(Tensor, Tensor)>> {
        let sides = util::Sides::new(embeddings, labels, reference)?;
        let batch = sides.batch;
        let pairs = tuples::side_pairs(&sides, tuples)?;
        if pairs.pos_anchor.is_empty() && pairs.neg_anchor.is_empty() {
            return Ok(None);
        }
        let m = self.cfg.metric;
        let values = sides.pair_values(
            m,
            embeddings,
            &[
                (&pairs.pos_anchor, &pairs.positive),
                (&pairs.neg_anchor, &pairs.negative),
            ],
        )?;
        let [d_pos, d_neg] = [&values[0], &values[1]];
        let pos = util::margin_ts(m, d_pos, self.cfg.pos_margin)?.f_relu()?;
        let neg = util::margin_st(m, self.cfg.neg_margin, d_neg)?.f_relu()?;
        let w_pos = util::weight_tensor(pairs.pos_weight.as_deref(), &batch)?;
        let w_neg = util::weight_tensor(pairs.neg_weight.as_deref(), &batch)?;
        Ok(Some((
            util::apply_weights(pos, w_pos.as_ref())?,
            util::apply_weights(neg, w_neg.as_ref())?,
        )))
    }
}

impl ContrastiveLoss {
    /// The positive and the negative pair losses, each reduced, summed.
    fn reduced(
        &self,
        embeddings: &Tensor,
        labels: &[u32],
        reference: Option<&Reference<'_>>,
        tuples: Option<&Tuples>,
    ) -> Result<Tensor> {
        match self.per_pair(embeddings, labels, reference, tuples)? {
            None => util::zero_loss(embeddings),
            Some((pos, neg)) => {
                let r = self.cfg.reduction;
                Ok(r.reduce(&pos, embeddings)?
                    .f_add(&r.reduce(&neg, embeddings)?)?)
            }
        }
    }
}

impl Loss for ContrastiveLoss {
    fn forward(
        &self,
        embeddings: &Tensor,
        labels: &[u32],
        tuples: Option<&Tuples>,
    ) -> Result<Tensor> {
        self.reduced(embeddings, labels, None, tuples)
    }

    fn forward_reference(
        &self,
        embeddings: &Tensor,
        labels: &[u32],
        reference: &Reference<'_>,
        tuples: Option<&Tuples>,
    ) -> Result<Tensor> {
        self.reduced(embeddings, labels, Some(reference), tuples)
    }

    fn forward_no_reduction(
        &self,
        embeddings: &Tensor,
        labels: &[u32],
        tuples: Option<&Tuples>,
    ) -> Result<Tensor> {
        match self.per_pair(embeddings, labels, None, tuples)? {
            None => util::empty_losses(embeddings),
            Some((pos, neg)) => Ok(Tensor::f_cat(&[pos, neg], 0)?),
        }
    }

    fn metric(&self) -> Metric {
        self.cfg.metric
    }
}

impl crate::LossSpec for ContrastiveConfig {
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
