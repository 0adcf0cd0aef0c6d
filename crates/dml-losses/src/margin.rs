//! Margin-based loss of Wu, Manmatha, Smola & Krähenbühl (2017), with a learnable boundary β.

use dml_kernels::Metric;
use dml_sampling::Tuples;
use serde::{Deserialize, Serialize};
use tch::{Tensor, nn};

use crate::{Error, Loss, Reduction, Reference, Result, tuples, util};

/// Parameters of [`MarginLoss`]; the defaults are pml's `MarginLoss()`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MarginConfig {
    /// α: the half-width of the band around β that pairs are pushed out of. Default 0.2.
    pub margin: f64,
    /// Initial value of the boundary β between positive and negative distances. Default 1.2.
    pub beta: f64,
    /// ν: weight of the regulariser `ν·β` that pulls a learned β down. Default 0 (only used when
    /// `learn_beta`).
    pub nu: f64,
    /// Learn β (a global `beta` variable under the loss's path). Default false, as in pml; the
    /// paper learns it.
    pub learn_beta: bool,
    /// Also learn one offset per class (variable `beta_class`, initialised to 0), so the boundary
    /// for an anchor of class `c` is `β + β_class[c]`. Needs `learn_beta` and `n_classes > 0`;
    /// labels must then be below `n_classes`. Default false.
    pub per_class_beta: bool,
    /// How embeddings are compared. Default [`Metric::Euclidean`].
    pub metric: Metric,
    /// Default [`Reduction::MeanNonZero`]: the sum over pair terms divided by the number of
    /// non-zero pair terms (each triplet has two), pml's `DivisorReducer`.
    pub reduction: Reduction,
}

impl Default for MarginConfig {
    fn default() -> Self {
        Self {
            margin: 0.2,
            beta: 1.2,
            nu: 0.0,
            learn_beta: false,
            per_class_beta: false,
            metric: Metric::Euclidean,
            reduction: Reduction::MeanNonZero,
        }
    }
}

impl MarginConfig {
    /// Checks the parameters and builds the loss; learnable β lives under `p` (variables `beta`
    /// and, per class, `beta_class`).
    pub fn init(&self, p: &nn::Path, n_classes: usize) -> Result<MarginLoss> {
        util::finite("margin", self.margin)?;
        util::finite("beta", self.beta)?;
        util::non_negative("nu", self.nu)?;
        if self.per_class_beta && !self.learn_beta {
            return Err(Error::PerClassBetaNotLearned);
        }
        if self.per_class_beta && n_classes == 0 {
            return Err(Error::PerClassBetaWithoutClasses);
        }
        let beta = if self.learn_beta {
            let global = p.f_var("beta", &[1], nn::Init::Const(self.beta))?;
            let per_class = if self.per_class_beta {
                Some(p.f_var("beta_class", &[n_classes as i64], nn::Init::Const(0.0))?)
            } else {
                None
            };
            Beta::Learned { global, per_class }
        } else {
            Beta::Fixed
        };
        Ok(MarginLoss {
            cfg: *self,
            n_classes,
            beta,
        })
    }
}

#[derive(Debug)]
enum Beta {
    Fixed,
    Learned {
        global: Tensor,
        per_class: Option<Tensor>,
    },
}

/// Margin-based loss: positive distances below `β − α`, negative distances above `β + α`, with
/// the boundary β learned along with the network.
///
/// ```text
/// β_a      = β + β_class[label(a)]                       (β_class only with per_class_beta)
/// L⁺(a,p)  = max(0, d(a, p) − β_a + α)
/// L⁻(a,n)  = max(0, β_a − d(a, n) + α)
/// L        = Σ_triplets w · (L⁺ + L⁻) / q  +  R
/// q        = number of non-zero L⁺ and L⁻ terms   (MeanNonZero; 2T for Mean; 1 for Sum)
/// R        = ν · β                                 (learned global β only)
///          = ν · Σ_triplets β_a / q                (learned per-class β)
/// ```
///
/// For a similarity the signs flip as in pml's `distance.margin`. Without mined tuples every
/// triplet of the batch is used; pairs are joined into triplets as pml does.
///
/// # Shapes
/// - embeddings: `(B, D)`, floating point; labels: `B`.
/// - [`forward`](Loss::forward): scalar. [`forward_no_reduction`](Loss::forward_no_reduction):
///   `(T,)`, `w · (L⁺ + L⁻)` per triplet, without the β regulariser.
///
/// # Reference
/// C.-Y. Wu, R. Manmatha, A. J. Smola, P. Krähenbühl, "Sampling Matters in Deep Embedding
/// Learning", ICCV 2017 (β = β⁽⁰⁾ + β⁽ᶜˡᵃˢˢ⁾; the per-image term is not implemented).
///
/// # pytorch-metric-learning
/// `MarginLoss(margin=0.2, nu=0, beta=1.2, learn_beta=False, num_classes=None)` with its
/// `DivisorReducer`. pml's per-class mode has one β per class and no global one; here it is a
/// global β plus per-class offsets starting at 0, which gives the same values and gradients at
/// initialisation and the paper's parametrisation. The metric applies to the embeddings as given
/// (pml's default distance L2-normalises inside the loss).
#[derive(Debug)]
pub struct MarginLoss {
    cfg: MarginConfig,
    n_classes: usize,
    beta: Beta,
}

/// What one forward pass computes before reduction.
struct Parts {
    pos: Tensor,
    neg: Tensor,
    /// What the ν regulariser acts on; `None` when β is fixed.
    reg: Option<RegBeta>,
}

/// The learned β the regulariser sees.
enum RegBeta {
    /// The global `(1,)` β: `R = ν·β`, already reduced.
    Global(Tensor),
    /// β of each triplet's anchor, `(T,)`: `R = ν·Σβ_a / q`.
    PerTriplet(Tensor),
}

impl MarginLoss {
    /// The loss's parameters.
    pub fn config(&self) -> &MarginConfig {
        &self.cfg
    }

    /// The current global β (its initial value when β is not learned).
    pub fn beta(&self) -> Result<f64> {
        match &self.beta {
            Beta::Fixed => Ok(self.cfg.beta),
            Beta::Learned { global, .. } => Ok(global.f_double_value(&[0])?),
        }
    }

    fn parts(
        &self,
        embeddings: &Tensor,
        labels: &[u32],
        reference: Option<&Reference<'_>>,
        tuples: Option<&Tuples>,
    ) -> Result<Option<Parts>> {
        let sides = util::Sides::new(embeddings, labels, reference)?;
        let batch = sides.batch;
        let t = tuples::side_triplets(&sides, tuples)?;
        if t.anchor.is_empty() {
            return Ok(None);
        }
        let (beta_t, beta_reg) = match &self.beta {
            Beta::Fixed => (None, None),
            Beta::Learned { global, per_class } => {
                let global = global.f_to_kind(batch.kind)?;
                match per_class {
                    None => (Some(global.shallow_clone()), Some(RegBeta::Global(global))),
                    Some(per_class) => {
                        let anchor_labels: Vec<u32> =
                            t.anchor.iter().map(|&a| labels[a as usize]).collect();
                        if let Some(&label) = anchor_labels
                            .iter()
                            .find(|&&l| l as usize >= self.n_classes)
                        {
                            return Err(Error::LabelOutOfRange {
                                label,
                                n_classes: self.n_classes,
                            });
                        }
                        let idx = util::index_tensor(&anchor_labels, batch.device)?;
                        let b = per_class
                            .f_to_kind(batch.kind)?
                            .f_index_select(0, &idx)?
                            .f_add(&global)?;
                        (Some(b.shallow_clone()), Some(RegBeta::PerTriplet(b)))
                    }
                }
            }
        };
        let m = self.cfg.metric;
        let values = sides.pair_values(
            m,
            embeddings,
            &[(&t.anchor, &t.positive), (&t.anchor, &t.negative)],
        )?;
        let (d_ap, d_an) = (&values[0], &values[1]);
        let alpha = self.cfg.margin;
        let (pos, neg) = match &beta_t {
            None => (
                util::margin_ts(m, d_ap, self.cfg.beta)?,
                util::margin_st(m, self.cfg.beta, d_an)?,
            ),
            Some(b) => (util::margin_tt(m, d_ap, b)?, util::margin_tt(m, b, d_an)?),
        };
        let pos = pos.f_add_scalar(alpha)?.f_relu()?;
        let neg = neg.f_add_scalar(alpha)?.f_relu()?;
        let w = util::weight_tensor(t.weight.as_deref(), &batch)?;
        Ok(Some(Parts {
            pos: util::apply_weights(pos, w.as_ref())?,
            neg: util::apply_weights(neg, w.as_ref())?,
            reg: beta_reg,
        }))
    }

    /// A zero connected to the embeddings and, when learned, to β (so an optimiser sees a zero
    /// gradient rather than none).
    fn zero(&self, embeddings: &Tensor) -> Result<Tensor> {
        let z = util::zero_loss(embeddings)?;
        match &self.beta {
            Beta::Fixed => Ok(z),
            Beta::Learned { global, per_class } => {
                let mut z = z.f_add(&global.f_sum(z.f_kind()?)?.f_mul_scalar(0.0)?)?;
                if let Some(pc) = per_class {
                    z = z.f_add(&pc.f_sum(z.f_kind()?)?.f_mul_scalar(0.0)?)?;
                }
                Ok(z)
            }
        }
    }
}

impl Loss for MarginLoss {
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
        match self.parts(embeddings, labels, None, tuples)? {
            None => util::empty_losses(embeddings),
            Some(p) => Ok(p.pos.f_add(&p.neg)?),
        }
    }

    fn metric(&self) -> Metric {
        self.cfg.metric
    }
}

impl MarginLoss {
    /// The reduced loss with its β regulariser, the other ends in the batch or in `reference`.
    fn reduced(
        &self,
        embeddings: &Tensor,
        labels: &[u32],
        reference: Option<&Reference<'_>>,
        tuples: Option<&Tuples>,
    ) -> Result<Tensor> {
        let Some(parts) = self.parts(embeddings, labels, reference, tuples)? else {
            return self.zero(embeddings);
        };
        let kind = parts.pos.f_kind()?;
        let total = parts.pos.f_sum(kind)?.f_add(&parts.neg.f_sum(kind)?)?;
        let n_terms = 2 * parts.pos.numel();
        let (divisor, active) = match self.cfg.reduction {
            Reduction::Sum => (Tensor::f_ones([], (kind, total.device()))?, None),
            Reduction::Mean => (
                Tensor::f_full([], n_terms as f64, (kind, total.device()))?,
                None,
            ),
            Reduction::MeanNonZero => {
                let count = parts
                    .pos
                    .f_gt(0.0)?
                    .f_sum(kind)?
                    .f_add(&parts.neg.f_gt(0.0)?.f_sum(kind)?)?;
                // pml gives 0 for the whole loss, regulariser included, when no term is active.
                let active = count.f_gt(0.0)?.f_to_kind(kind)?;
                (count.f_clamp_min(1.0)?, Some(active))
            }
        };
        let mut loss = total.f_div(&divisor)?;
        let nu = self.cfg.nu;
        let reg = match &parts.reg {
            Some(RegBeta::Global(b)) if nu > 0.0 => Some(b.f_sum(kind)?.f_mul_scalar(nu)?),
            Some(RegBeta::PerTriplet(b)) if nu > 0.0 => {
                let r = b.f_sum(kind)?.f_mul_scalar(nu)?.f_div(&divisor)?;
                Some(match &active {
                    Some(a) => r.f_mul(a)?,
                    None => r,
                })
            }
            _ => None,
        };
        if let Some(reg) = reg {
            loss = loss.f_add(&reg)?;
        }
        Ok(loss)
    }
}

impl crate::LossSpec for MarginConfig {
    fn build(&self, p: &tch::nn::Path, ctx: crate::LossContext) -> Result<Box<dyn crate::Loss>> {
        Ok(Box::new(self.init(p, ctx.n_classes)?))
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
