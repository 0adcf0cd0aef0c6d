//! Triplet margin loss (Weinberger & Saul 2009; Schroff et al. 2015), hinge or soft-plus.

use dml_kernels::Metric;
use dml_sampling::Tuples;
use serde::{Deserialize, Serialize};
use tch::Tensor;

use crate::{Loss, Reduction, Reference, Result, tuples, util};

/// Parameters of [`TripletLoss`]; the defaults are pml's `TripletMarginLoss()`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TripletConfig {
    /// How much closer the positive must be than the negative. Default 0.05.
    pub margin: f64,
    /// Soft-plus `ln(1 + eˣ)` in place of the hinge `max(0, x)` (pml's `smooth_loss`).
    /// Default false.
    pub smooth: bool,
    /// How embeddings are compared. Default [`Metric::Euclidean`].
    pub metric: Metric,
    /// Default [`Reduction::MeanNonZero`].
    pub reduction: Reduction,
}

impl Default for TripletConfig {
    fn default() -> Self {
        Self {
            margin: 0.05,
            smooth: false,
            metric: Metric::Euclidean,
            reduction: Reduction::MeanNonZero,
        }
    }
}

impl TripletConfig {
    /// Checks the parameters and builds the loss.
    pub fn init(&self) -> Result<TripletLoss> {
        util::finite("margin", self.margin)?;
        Ok(TripletLoss { cfg: *self })
    }
}

/// Triplet margin loss: each anchor should be closer to its positive than to its negative by at
/// least `margin`.
///
/// ```text
/// v(a, p, n) = d(a, p) − d(a, n) + margin        (s(a, n) − s(a, p) + margin for a similarity)
/// L(a, p, n) = w · max(0, v)                     (hinge)
///            = w · ln(1 + exp(v))                (smooth = true)
/// L = reduce(L over triplets)
/// ```
///
/// Without mined tuples every triplet of the batch is used (`O(B³)` in the worst case: mine
/// for large batches). Pairs are joined into triplets as pml does: every positive pair with
/// every negative pair that shares its anchor.
///
/// # Shapes
/// - embeddings: `(B, D)`, floating point; labels: `B`.
/// - [`forward`](Loss::forward): scalar. [`forward_no_reduction`](Loss::forward_no_reduction):
///   `(T,)`, one loss per triplet.
///
/// # References
/// K. Q. Weinberger, L. K. Saul, "Distance Metric Learning for Large Margin Nearest Neighbor
/// Classification", JMLR 2009; F. Schroff, D. Kalenichenko, J. Philbin, "FaceNet", CVPR 2015.
/// The soft-plus form is the "soft margin" of A. Hermans, L. Beyer, B. Leibe, "In Defense of the
/// Triplet Loss for Person Re-Identification", 2017.
///
/// # pytorch-metric-learning
/// `TripletMarginLoss(margin=0.05, smooth_loss=False)` with `AvgNonZeroReducer`. Differences:
/// the metric applies to the embeddings as given (pml's default distance L2-normalises inside the
/// loss); no `swap` option; without tuples all triplets are used (pml's
/// `triplets_per_anchor="all"`, its default).
#[derive(Debug, Clone)]
pub struct TripletLoss {
    cfg: TripletConfig,
}

impl TripletLoss {
    /// The loss's parameters.
    pub fn config(&self) -> &TripletConfig {
        &self.cfg
    }
}

impl TripletLoss {
    /// One loss per triplet, the other ends taken from the batch or from `reference`.
    fn per_triplet(
        &self,
        embeddings: &Tensor,
        labels: &[u32],
        reference: Option<&Reference<'_>>,
        tuples: Option<&Tuples>,
    ) -> Result<Tensor> {
        let sides = util::Sides::new(embeddings, labels, reference)?;
        let t = tuples::side_triplets(&sides, tuples)?;
        if t.anchor.is_empty() {
            return util::empty_losses(embeddings);
        }
        let m = self.cfg.metric;
        let values = sides.pair_values(
            m,
            embeddings,
            &[(&t.anchor, &t.positive), (&t.anchor, &t.negative)],
        )?;
        let (d_ap, d_an) = (&values[0], &values[1]);
        let violation = util::margin_tt(m, d_ap, d_an)?.f_add_scalar(self.cfg.margin)?;
        let losses = if self.cfg.smooth {
            violation.f_softplus()?
        } else {
            violation.f_relu()?
        };
        let w = util::weight_tensor(t.weight.as_deref(), &sides.batch)?;
        util::apply_weights(losses, w.as_ref())
    }
}

impl Loss for TripletLoss {
    fn reduction(&self) -> Reduction {
        self.cfg.reduction
    }

    fn forward_no_reduction(
        &self,
        embeddings: &Tensor,
        labels: &[u32],
        tuples: Option<&Tuples>,
    ) -> Result<Tensor> {
        self.per_triplet(embeddings, labels, None, tuples)
    }

    fn forward_reference(
        &self,
        embeddings: &Tensor,
        labels: &[u32],
        reference: &Reference<'_>,
        tuples: Option<&Tuples>,
    ) -> Result<Tensor> {
        let losses = self.per_triplet(embeddings, labels, Some(reference), tuples)?;
        self.reduction().reduce(&losses, embeddings)
    }

    fn metric(&self) -> Metric {
        self.cfg.metric
    }
}

impl crate::LossSpec for TripletConfig {
    fn build(&self, p: &tch::nn::Path, ctx: crate::LossContext) -> Result<Box<dyn crate::Loss>> {
        let _ = (p, ctx);
        Ok(Box::new(self.init()?))
    }

    fn tuple_kind(&self) -> Option<dml_sampling::TupleKind> {
        Some(dml_sampling::TupleKind::Triplets)
    }

    fn metric(&self) -> dml_kernels::Metric {
        self.metric
    }

    fn takes_reference(&self) -> bool {
        true
    }
}
