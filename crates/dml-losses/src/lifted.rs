//! Lifted structured loss (Song, Xiang, Jegelka & Savarese 2016), smooth log-sum-exp form.

use dml_kernels::{Metric, tensor};
use dml_sampling::Tuples;
use serde::{Deserialize, Serialize};
use tch::Tensor;

use crate::{Loss, Reduction, Result, tuples, util};

/// Parameters of [`LiftedStructuredLoss`]; the defaults are pml's `LiftedStructureLoss()`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LiftedStructuredConfig {
    /// Offset subtracted from positive distances. Default 0 (the paper has none).
    pub pos_margin: f64,
    /// α: negatives are pushed beyond this distance. Default 1.
    pub neg_margin: f64,
    /// How embeddings are compared. Default [`Metric::Euclidean`].
    pub metric: Metric,
    /// Default [`Reduction::Mean`] over positive pairs (pml's default `MeanReducer`).
    pub reduction: Reduction,
}

impl Default for LiftedStructuredConfig {
    fn default() -> Self {
        Self {
            pos_margin: 0.0,
            neg_margin: 1.0,
            metric: Metric::Euclidean,
            reduction: Reduction::Mean,
        }
    }
}

impl LiftedStructuredConfig {
    /// Checks the parameters and builds the loss.
    pub fn init(&self) -> Result<LiftedStructuredLoss> {
        util::finite("pos_margin", self.pos_margin)?;
        util::finite("neg_margin", self.neg_margin)?;
        Ok(LiftedStructuredLoss { cfg: *self })
    }
}

/// Lifted structured loss: each positive pair against all negatives of both its members, through
/// a smooth maximum (log-sum-exp).
///
/// ```text
/// N(i)     = negative pairs (i, k) whose anchor is i (each listed pair counted once per listing)
/// J(i, j)  = ln( Σ_{(i,k) ∈ N(i)} exp(α − d(i,k)) + Σ_{(j,l) ∈ N(j)} exp(α − d(j,l)) )
///            + d(i, j) − m_pos
///          = d(i, j) − m_pos                       when N(i) and N(j) are both empty
/// L(i, j)  = max(0, J(i, j))² / 2                  for each positive pair (i, j)
/// L        = reduce(L over positive pairs)
/// ```
///
/// With all pairs of the batch (no tuples), both orders `(i, j)` and `(j, i)` are positive pairs,
/// so the default mean over ordered pairs of `max(0, J)²/2` equals the paper's
/// `1/(2|P̂|) Σ_{unordered} max(0, J)²`. For a similarity the signs flip (`s − α`, `m_pos − s`).
/// The cost is `O(B² + P)`: one log-sum-exp per row of the batch, combined per pair.
///
/// # Shapes
/// - embeddings: `(B, D)`, floating point; labels: `B`.
/// - [`forward`](Loss::forward): scalar. [`forward_no_reduction`](Loss::forward_no_reduction):
///   `(P,)`, one loss per positive pair.
///
/// # Reference
/// H. O. Song, Y. Xiang, S. Jegelka, S. Savarese, "Deep Metric Learning via Lifted Structured
/// Feature Embedding", CVPR 2016, eq. (4) — the smooth bound the paper optimises.
///
/// # pytorch-metric-learning
/// `LiftedStructureLoss(neg_margin=1, pos_margin=0)`: the same form, computed with a `P × N`
/// mask over pair lists (quadratic in pairs; this implementation is linear). pml's
/// `GeneralizedLiftedStructureLoss` is a different loss (Hermans et al. 2017: one log-sum-exp
/// over an anchor's positives plus one over its negatives), not provided here. As in pml, tuple
/// weights are ignored, a batch without any negative pair gives zero, and a positive pair
/// whose members have no negative pair keeps only its positive term. Difference: the metric
/// applies to the embeddings as given (pml's default distance L2-normalises inside the loss).
#[derive(Debug, Clone)]
pub struct LiftedStructuredLoss {
    cfg: LiftedStructuredConfig,
}

impl LiftedStructuredLoss {
    /// The loss's parameters.
    pub fn config(&self) -> &LiftedStructuredConfig {
        &self.cfg
    }
}

impl Loss for LiftedStructuredLoss {
    fn reduction(&self) -> Reduction {
        self.cfg.reduction
    }

    fn forward_no_reduction(
        &self,
        embeddings: &Tensor,
        labels: &[u32],
        tuples: Option<&Tuples>,
    ) -> Result<Tensor> {
        let batch = util::check_batch(embeddings, labels)?;
        let pairs = tuples::pairs(labels, tuples, batch.n)?;
        if pairs.pos_anchor.is_empty() || pairs.neg_anchor.is_empty() {
            return util::empty_losses(embeddings);
        }
        let n = batch.n;
        let m = self.cfg.metric;

        // ln(count) of each negative pair (duplicates count as often as they are listed), or
        // the masked stand-in for −∞ where there is none.
        let mut count = vec![0u32; n * n];
        let mut row_has_neg = vec![false; n];
        for (&a, &k) in pairs.neg_anchor.iter().zip(&pairs.negative) {
            count[a as usize * n + k as usize] += 1;
            row_has_neg[a as usize] = true;
        }
        let log_count: Vec<f64> = count
            .iter()
            .map(|&c| {
                if c == 0 {
                    util::MASKED
                } else {
                    f64::from(c).ln()
                }
            })
            .collect();
        let log_count = Tensor::f_from_slice(&log_count)?
            .f_to_kind(batch.kind)?
            .f_to_device(batch.device)?
            .f_view([n as i64, n as i64])?;

        let mat = tensor::self_pairwise(m, embeddings)?;
        // Row i: ln Σ_{(i,k) ∈ N(i)} exp(α − d(i,k)), plus one masked entry at index n that
        // stands for "no second row" (used when i = j).
        let row_lse = util::margin_st(m, self.cfg.neg_margin, &mat)?
            .f_add(&log_count)?
            .f_logsumexp([1i64].as_slice(), false)?;
        let masked = Tensor::f_full([1], util::MASKED, (batch.kind, batch.device))?;
        let row_lse = Tensor::f_cat(&[row_lse, masked], 0)?;

        let second: Vec<u32> = pairs
            .pos_anchor
            .iter()
            .zip(&pairs.positive)
            .map(|(&i, &j)| if i == j { n as u32 } else { j })
            .collect();
        let has_neg: Vec<bool> = pairs
            .pos_anchor
            .iter()
            .zip(&second)
            .map(|(&i, &j)| row_has_neg[i as usize] || row_has_neg.get(j as usize) == Some(&true))
            .collect();
        let lse_i =
            row_lse.f_index_select(0, &util::index_tensor(&pairs.pos_anchor, batch.device)?)?;
        let lse_j = row_lse.f_index_select(0, &util::index_tensor(&second, batch.device)?)?;
        let has_neg = Tensor::f_from_slice(&has_neg)?.f_to_device(batch.device)?;
        let neg_term = lse_i
            .f_logaddexp(&lse_j)?
            .f_where_scalarother(&has_neg, 0.0)?;

        let d_pos = mat.f_view([-1])?.f_take(&util::flat_index(
            &pairs.pos_anchor,
            &pairs.positive,
            n,
            batch.device,
        )?)?;
        let j = neg_term.f_add(&util::margin_ts(m, &d_pos, self.cfg.pos_margin)?)?;
        Ok(j.f_relu()?.f_square()?.f_mul_scalar(0.5)?)
    }

    fn metric(&self) -> Metric {
        self.cfg.metric
    }
}

impl crate::LossSpec for LiftedStructuredConfig {
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
}
