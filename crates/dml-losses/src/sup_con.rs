//! Supervised contrastive loss (Khosla et al. 2020).

use dml_kernels::{Metric, tensor};
use dml_sampling::Tuples;
use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

use crate::{Error, Loss, Reduction, Result, tuples, util};

/// Parameters of [`SupConLoss`]; the defaults are pml's `SupConLoss()`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SupConConfig {
    /// τ: similarities are divided by it. Default 0.1.
    pub temperature: f64,
    /// How embeddings are compared. Default [`Metric::Cosine`]; with a distance `d` the loss
    /// uses `−d`.
    pub metric: Metric,
    /// Default [`Reduction::MeanNonZero`] over the anchors (pml's `AvgNonZeroReducer`).
    pub reduction: Reduction,
}

impl Default for SupConConfig {
    fn default() -> Self {
        Self {
            temperature: 0.1,
            metric: Metric::Cosine,
            reduction: Reduction::MeanNonZero,
        }
    }
}

impl SupConConfig {
    /// Checks the parameters and builds the loss.
    pub fn init(&self) -> Result<SupConLoss> {
        util::positive("temperature", self.temperature)?;
        Ok(SupConLoss { cfg: *self })
    }
}

/// Supervised contrastive loss: for each anchor, the mean over its positives of the log
/// probability that a softmax over all its pairs picks that positive.
///
/// ```text
/// z_ij = S_ij / τ                         (−d_ij / τ for a distance)
/// L_i  = −1/|P_i| Σ_{p ∈ P_i} ( z_ip − log Σ_{k ∈ P_i ∪ N_i} exp(z_ik) )
/// L    = reduce(L_i over the anchors)     (MeanNonZero: anchors without positives drop out)
/// ```
///
/// `P_i` and `N_i` are anchor `i`'s positives and negatives among the tuples (triplets become
/// their pairs), or all of them (`j ≠ i`) without tuples. A batch without any positive pair or
/// without any negative pair gives zero, as in pml. No parameters.
///
/// # Shapes
/// embeddings `(B, D)`, labels `B` → scalar; per anchor `(B,)` without reduction.
///
/// # Reference
/// P. Khosla et al., "Supervised Contrastive Learning", NeurIPS 2020, eq. (2) (L_out).
///
/// # pytorch-metric-learning
/// `SupConLoss(temperature=0.1)` with cosine similarity and `AvgNonZeroReducer`; the same
/// numbers. Differences: pml also returns zero when every index list holds at most one entry;
/// tuple weights are ignored.
#[derive(Debug, Clone)]
pub struct SupConLoss {
    cfg: SupConConfig,
}

impl SupConLoss {
    /// The loss's parameters.
    pub fn config(&self) -> &SupConConfig {
        &self.cfg
    }
}

impl Loss for SupConLoss {
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
        let n = batch.n;
        if pairs.pos_anchor.is_empty() || pairs.neg_anchor.is_empty() {
            return util::empty_losses(embeddings);
        }
        let mut pos = vec![false; n * n];
        let mut keep = vec![false; n * n];
        for (&a, &p) in pairs.pos_anchor.iter().zip(&pairs.positive) {
            pos[a as usize * n + p as usize] = true;
            keep[a as usize * n + p as usize] = true;
        }
        for (&a, &k) in pairs.neg_anchor.iter().zip(&pairs.negative) {
            let at = a as usize * n + k as usize;
            if pos[at] {
                return Err(Error::PairBothPositiveAndNegative {
                    anchor: a,
                    other: k,
                });
            }
            keep[at] = true;
        }
        let shape = [n as i64, n as i64];
        let as_tensor = |m: &[bool]| -> Result<Tensor> {
            Ok(Tensor::f_from_slice(m)?
                .f_to_device(batch.device)?
                .f_view(shape)?)
        };
        let (pos, keep) = (as_tensor(&pos)?, as_tensor(&keep)?);
        let c = &self.cfg;
        let mat = tensor::self_pairwise(c.metric, embeddings)?;
        let z = if c.metric.is_similarity() {
            mat.f_div_scalar(c.temperature)?
        } else {
            mat.f_div_scalar(-c.temperature)?
        };
        let log_denominator = util::masked_logsumexp(&z, &keep)?.f_unsqueeze(1)?;
        // Entries outside the positives are zeroed by the mask (never multiplied, so a masked
        // row's huge log-denominator cannot leak into the gradient).
        let log_prob = z
            .f_sub(&log_denominator)?
            .f_where_self(&pos, &z.f_zeros_like()?)?;
        let pos_f = pos.f_to_kind(batch.kind)?;
        let count = pos_f.f_sum_dim_intlist([1i64].as_slice(), false, None::<Kind>)?;
        let total = log_prob.f_sum_dim_intlist([1i64].as_slice(), false, None::<Kind>)?;
        Ok(total.f_neg()?.f_div(&count.f_clamp_min(1.0)?)?)
    }

    fn metric(&self) -> Metric {
        self.cfg.metric
    }
}

impl crate::LossSpec for SupConConfig {
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
