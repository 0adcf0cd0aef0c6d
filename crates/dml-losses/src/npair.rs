//! Multi-class N-pair loss (Sohn 2016).

use std::collections::BTreeMap;

use dml_kernels::{Metric, tensor};
use dml_sampling::Tuples;
use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

use crate::{Loss, Reduction, Result, util};

/// Parameters of [`NPairLoss`]; the defaults are pml's `NPairsLoss()`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NPairConfig {
    /// λ: weight of the penalty `mean_i ‖x_i‖²` on the batch's embeddings, which keeps
    /// unnormalised embeddings from growing to sharpen the softmax. Default 0 (pml adds none
    /// unless given an `LpRegularizer(power=2)`); Sohn's paper uses a small positive value.
    pub l2_reg: f64,
    /// How anchors and positives are compared. Default [`Metric::Dot`] (the paper's inner
    /// product); distances are negated to act as logits.
    pub metric: Metric,
    /// Default [`Reduction::Mean`] over the N pairs.
    pub reduction: Reduction,
}

impl Default for NPairConfig {
    fn default() -> Self {
        Self {
            l2_reg: 0.0,
            metric: Metric::Dot,
            reduction: Reduction::Mean,
        }
    }
}

impl NPairConfig {
    /// Checks the parameters and builds the loss.
    pub fn init(&self) -> Result<NPairLoss> {
        util::non_negative("l2_reg", self.l2_reg)?;
        Ok(NPairLoss { cfg: *self })
    }
}

/// Multi-class N-pair loss: one (anchor, positive) pair per class, each anchor must pick its own
/// positive out of all N positives (a softmax cross-entropy).
///
/// ```text
/// pairs    (a_1, p_1), …, (a_N, p_N), one per class: the first positive pair whose anchor has
///          that class (without tuples: the first two items of each class with two or more)
/// L_i      = −ln( exp(s(a_i, p_i)) / Σ_j exp(s(a_i, p_j)) )    (s = −d for a distance)
/// L        = reduce(L_i)  +  λ · mean_{x in batch} ‖x‖²
/// ```
///
/// # Shapes
/// - embeddings: `(B, D)`, floating point; labels: `B`.
/// - [`forward`](Loss::forward): scalar. [`forward_no_reduction`](Loss::forward_no_reduction):
///   `(N,)`, one loss per selected pair in increasing order of class label, without the penalty.
///
/// # Reference
/// K. Sohn, "Improved Deep Metric Learning with Multi-class N-pair Loss Objective", NeurIPS 2016.
///
/// # pytorch-metric-learning
/// `NPairsLoss()` (dot product, `MeanReducer`); the penalty is pml's
/// `embedding_regularizer=LpRegularizer(power=2)` with `embedding_reg_weight = λ`. Pairs are
/// chosen as pml's `convert_to_pos_pairs_with_unique_labels` does, so the same tuples give the
/// same loss. Tuple weights are ignored; negative pairs in the tuples are not used.
#[derive(Debug, Clone)]
pub struct NPairLoss {
    cfg: NPairConfig,
}

impl NPairLoss {
    /// The loss's parameters.
    pub fn config(&self) -> &NPairConfig {
        &self.cfg
    }

    /// One `(anchor, positive)` per anchor label, in increasing label order.
    fn select_pairs(labels: &[u32], tuples: Option<&Tuples>, n: usize) -> Result<Vec<(u32, u32)>> {
        let mut first: BTreeMap<u32, (u32, u32)> = BTreeMap::new();
        match tuples {
            None => {
                let mut seen: BTreeMap<u32, u32> = BTreeMap::new();
                for (i, &l) in labels.iter().enumerate() {
                    match seen.get(&l) {
                        None => {
                            seen.insert(l, i as u32);
                        }
                        Some(&a) => {
                            first.entry(l).or_insert((a, i as u32));
                        }
                    }
                }
            }
            Some(t) => {
                let (anchor, positive) = match t {
                    Tuples::Pairs(p) => (&p.pos_anchor, &p.positive),
                    Tuples::Triplets(t) => (&t.anchor, &t.positive),
                };
                util::check_len("positive", positive.len(), anchor.len())?;
                util::check_indices("anchor", anchor, n)?;
                util::check_indices("positive", positive, n)?;
                for (&a, &p) in anchor.iter().zip(positive) {
                    first.entry(labels[a as usize]).or_insert((a, p));
                }
            }
        }
        Ok(first.into_values().collect())
    }

    fn penalty(&self, embeddings: &Tensor) -> Result<Option<Tensor>> {
        if self.cfg.l2_reg == 0.0 {
            return Ok(None);
        }
        let sq =
            embeddings
                .f_square()?
                .f_sum_dim_intlist([1i64].as_slice(), false, None::<Kind>)?;
        Ok(Some(
            sq.f_mean(None::<Kind>)?.f_mul_scalar(self.cfg.l2_reg)?,
        ))
    }
}

impl Loss for NPairLoss {
    fn forward(
        &self,
        embeddings: &Tensor,
        labels: &[u32],
        tuples: Option<&Tuples>,
    ) -> Result<Tensor> {
        let losses = self.forward_no_reduction(embeddings, labels, tuples)?;
        let loss = self.cfg.reduction.reduce(&losses, embeddings)?;
        match self.penalty(embeddings)? {
            Some(p) => Ok(loss.f_add(&p)?),
            None => Ok(loss),
        }
    }

    fn forward_no_reduction(
        &self,
        embeddings: &Tensor,
        labels: &[u32],
        tuples: Option<&Tuples>,
    ) -> Result<Tensor> {
        let batch = util::check_batch(embeddings, labels)?;
        let pairs = Self::select_pairs(labels, tuples, batch.n)?;
        if pairs.is_empty() {
            return util::empty_losses(embeddings);
        }
        let (a, p): (Vec<u32>, Vec<u32>) = pairs.into_iter().unzip();
        let anchors = embeddings.f_index_select(0, &util::index_tensor(&a, batch.device)?)?;
        let positives = embeddings.f_index_select(0, &util::index_tensor(&p, batch.device)?)?;
        let m = self.cfg.metric;
        let mut logits = tensor::pairwise(m, &anchors, &positives)?;
        if !m.is_similarity() {
            logits = logits.f_neg()?;
        }
        let targets = Tensor::f_arange(a.len() as i64, (Kind::Int64, batch.device))?;
        Ok(logits.f_cross_entropy_loss::<Tensor>(
            &targets,
            None,
            tch::Reduction::None,
            -100,
            0.0,
        )?)
    }

    fn metric(&self) -> Metric {
        self.cfg.metric
    }
}

impl crate::LossSpec for NPairConfig {
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
