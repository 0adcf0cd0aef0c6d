//! The cosine-softmax classification losses: normalised softmax (Zhai & Wu 2019), CosFace
//! (Wang et al. 2018), ArcFace (Deng et al. 2019) and sub-centre ArcFace (Deng et al. 2020).

use dml_kernels::{Metric, tensor};
use dml_sampling::Tuples;
use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor, nn};

use crate::proxy::{self, LossContext, Proxies, ProxyInit};
use crate::{Error, Loss, Result, util};

/// Parameters of the normalised softmax loss ([`CosineSoftmaxLoss`]); the default is pml's
/// `NormalizedSoftmaxLoss()`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NormalizedSoftmaxConfig {
    /// T: logits are `cos / T`. Default 0.05.
    pub temperature: f64,
}

impl Default for NormalizedSoftmaxConfig {
    fn default() -> Self {
        Self { temperature: 0.05 }
    }
}

/// Parameters of CosFace ([`CosineSoftmaxLoss`]); the defaults are pml's `CosFaceLoss()`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CosFaceConfig {
    /// m: subtracted from the target class's cosine. Default 0.35.
    pub margin: f64,
    /// s: logits are `s · cos`. Default 64.
    pub scale: f64,
}

impl Default for CosFaceConfig {
    fn default() -> Self {
        Self {
            margin: 0.35,
            scale: 64.0,
        }
    }
}

/// Parameters of ArcFace ([`CosineSoftmaxLoss`]); the defaults are pml's `ArcFaceLoss()`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ArcFaceConfig {
    /// m: the angle added to the target class's angle, in degrees. Default 28.6 (0.5 rad).
    pub margin: f64,
    /// s: logits are `s · cos`. Default 64.
    pub scale: f64,
}

impl Default for ArcFaceConfig {
    fn default() -> Self {
        Self {
            margin: 28.6,
            scale: 64.0,
        }
    }
}

/// Parameters of sub-centre ArcFace ([`CosineSoftmaxLoss`]); the defaults are pml's
/// `SubCenterArcFaceLoss()`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SubCenterArcFaceConfig {
    /// m: the angle added to the target class's angle, in degrees. Default 28.6 (0.5 rad).
    pub margin: f64,
    /// s: logits are `s · cos`. Default 64.
    pub scale: f64,
    /// K: centres per class; a class's cosine is the largest of its K. Default 3.
    pub sub_centers: usize,
}

impl Default for SubCenterArcFaceConfig {
    fn default() -> Self {
        Self {
            margin: 28.6,
            scale: 64.0,
            sub_centers: 3,
        }
    }
}

/// How the target class's cosine becomes its logit.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Head {
    /// `cos / T` for every class.
    Normalized { temperature: f64 },
    /// `s (cos − m)` for the target, `s cos` otherwise.
    CosFace { margin: f64, scale: f64 },
    /// `s cos(θ + m)` for the target (radians), `s cos` otherwise.
    ArcFace { margin: f64, scale: f64 },
}

impl NormalizedSoftmaxConfig {
    /// Checks the parameters and builds the loss; see [`CosineSoftmaxLoss`] for its weights.
    pub fn init(&self, p: &nn::Path, ctx: LossContext) -> Result<CosineSoftmaxLoss> {
        util::positive("temperature", self.temperature)?;
        CosineSoftmaxLoss::new(
            "normalized_softmax",
            p,
            ctx,
            1,
            Head::Normalized {
                temperature: self.temperature,
            },
        )
    }
}

impl CosFaceConfig {
    /// Checks the parameters and builds the loss; see [`CosineSoftmaxLoss`] for its weights.
    pub fn init(&self, p: &nn::Path, ctx: LossContext) -> Result<CosineSoftmaxLoss> {
        util::finite("margin", self.margin)?;
        util::positive("scale", self.scale)?;
        CosineSoftmaxLoss::new(
            "cosface",
            p,
            ctx,
            1,
            Head::CosFace {
                margin: self.margin,
                scale: self.scale,
            },
        )
    }
}

fn arc_margin(degrees: f64) -> Result<f64> {
    util::non_negative("margin", degrees)?;
    if degrees >= 180.0 {
        return Err(Error::ArcMargin { degrees });
    }
    Ok(degrees.to_radians())
}

impl ArcFaceConfig {
    /// Checks the parameters and builds the loss; see [`CosineSoftmaxLoss`] for its weights.
    pub fn init(&self, p: &nn::Path, ctx: LossContext) -> Result<CosineSoftmaxLoss> {
        util::positive("scale", self.scale)?;
        let margin = arc_margin(self.margin)?;
        CosineSoftmaxLoss::new(
            "arcface",
            p,
            ctx,
            1,
            Head::ArcFace {
                margin,
                scale: self.scale,
            },
        )
    }
}

impl SubCenterArcFaceConfig {
    /// Checks the parameters and builds the loss; see [`CosineSoftmaxLoss`] for its weights.
    pub fn init(&self, p: &nn::Path, ctx: LossContext) -> Result<CosineSoftmaxLoss> {
        util::positive("scale", self.scale)?;
        let margin = arc_margin(self.margin)?;
        if self.sub_centers == 0 {
            return Err(Error::NonPositiveParameter {
                name: "sub_centers",
                value: 0.0,
            });
        }
        CosineSoftmaxLoss::new(
            "sub_center_arcface",
            p,
            ctx,
            self.sub_centers,
            Head::ArcFace {
                margin,
                scale: self.scale,
            },
        )
    }
}

/// A softmax classifier on cosine similarities: normalised softmax, CosFace, ArcFace and
/// sub-centre ArcFace, one type built by four configs.
///
/// ```text
/// cos_ic = max_k cos(x_i, w_ck)                  (k over the sub-centres; one without them)
/// z_ic   = cos_ic / T                            normalised softmax
///        = s (cos_ic − m·[c = y_i])              CosFace
///        = s cos(θ_ic + m)  if c = y_i and θ_ic ≤ π − m      ArcFace, θ_ic = arccos(cos_ic)
///          s (cos_ic − m sin m)  if c = y_i and θ_ic > π − m (keeps the logit decreasing in θ)
///          s cos_ic          otherwise
/// L_i    = −log softmax(z_i)[y_i],   L = mean over the B rows
/// ```
///
/// `cos(θ + m)` is computed as `cos·cos m − sin θ·sin m` with `sin θ = √(1 − cos²)`, whose
/// gradient stays finite where the embedding meets its centre (arccos's does not); the
/// cross-entropy is a log-sum-exp, so s = 64 or T = 0.01 cannot overflow.
///
/// No miner: tuples are an error.
///
/// # Parameters
/// `proxies`, `(n_classes · K, D)`, class-major (row `c·K + k` is centre `k` of class `c`),
/// initialised N(0, 1) as pml initialises its `W` (pml stores the transpose, `(D, C·K)`).
/// These are a classifier's weights; normalised softmax and the face losses train them at the
/// network's learning rate or a few times it (`optimizer.loss_lr`; pml's examples use the
/// network's rate, ×10 to ×100 help with short schedules).
///
/// # Shapes
/// embeddings `(B, D)`, labels `B` below `n_classes` → scalar; per row `(B,)` without reduction.
///
/// # References
/// A. Zhai, H.-Y. Wu, "Classification is a Strong Baseline for Deep Metric Learning", BMVC 2019;
/// H. Wang et al., "CosFace: Large Margin Cosine Loss for Deep Face Recognition", CVPR 2018;
/// J. Deng, J. Guo, N. Xue, S. Zafeiriou, "ArcFace: Additive Angular Margin Loss for Deep Face
/// Recognition", CVPR 2019; J. Deng et al., "Sub-center ArcFace", ECCV 2020.
///
/// # pytorch-metric-learning
/// `NormalizedSoftmaxLoss(temperature=0.05)`, `CosFaceLoss(margin=0.35, scale=64)`,
/// `ArcFaceLoss(margin=28.6, scale=64)` (margin in degrees, the same fallback beyond π − m) and
/// `SubCenterArcFaceLoss(sub_centers=3)`, each with `MeanReducer`; the same numbers.
#[derive(Debug)]
pub struct CosineSoftmaxLoss {
    head: Head,
    proxies: Proxies,
}

impl CosineSoftmaxLoss {
    fn new(
        kind: &'static str,
        p: &nn::Path,
        ctx: LossContext,
        sub_centers: usize,
        head: Head,
    ) -> Result<Self> {
        let proxies = Proxies::new(kind, p, ctx, sub_centers, ProxyInit::StandardNormal)?;
        Ok(Self { head, proxies })
    }

    /// The logits `(B, C)` before the softmax: what a classifier built on these class vectors
    /// outputs for the batch (the target class's margin applied).
    pub fn logits(&self, embeddings: &Tensor, labels: &[u32]) -> Result<Tensor> {
        match self.proxies.inputs(embeddings, labels, None)? {
            Some(inputs) => self.logits_of(embeddings, &inputs),
            None => Ok(Tensor::f_zeros(
                [0, self.proxies.n_classes as i64],
                (embeddings.f_kind()?, embeddings.device()),
            )?),
        }
    }

    fn logits_of(&self, embeddings: &Tensor, inputs: &proxy::Inputs) -> Result<Tensor> {
        let mut cos = tensor::pairwise(Metric::Cosine, embeddings, &inputs.weights)?;
        let k = self.proxies.rows_per_class as i64;
        if k > 1 {
            let n = cos.size()[0];
            // max with indices, as pml: its backward scatters into the arg-max alone, where
            // amax's compares every entry with the maximum (1.5x the time at 11,318 classes).
            cos = cos
                .f_view([n, self.proxies.n_classes as i64, k])?
                .f_max_dim(2, false)?
                .0;
        }
        Ok(match self.head {
            Head::Normalized { temperature } => cos.f_div_scalar(temperature)?,
            Head::CosFace { margin, scale } => {
                let t = proxy::target(&cos, &inputs.labels)?.f_sub_scalar(margin)?;
                proxy::replace_target(&cos, &inputs.labels, &t)?.f_mul_scalar(scale)?
            }
            Head::ArcFace { margin, scale } => {
                let c = proxy::target(&cos, &inputs.labels)?.f_clamp(-1.0, 1.0)?;
                let tiny = if inputs.kind == Kind::Double {
                    1e-300
                } else {
                    1e-30
                };
                let sin = c
                    .f_square()?
                    .f_rsub_scalar(1.0)?
                    .f_clamp_min(tiny)?
                    .f_sqrt()?;
                let (cm, sm) = (margin.cos(), margin.sin());
                let plus = c.f_mul_scalar(cm)?.f_sub(&sin.f_mul_scalar(sm)?)?;
                let fallback = c.f_sub_scalar(margin * sm)?;
                // θ ≤ π − m  ⇔  cos θ ≥ cos(π − m) = −cos m.
                let t = plus.f_where_self(&c.f_ge(-cm)?, &fallback)?;
                proxy::replace_target(&cos, &inputs.labels, &t)?.f_mul_scalar(scale)?
            }
        })
    }
}

impl Loss for CosineSoftmaxLoss {
    fn forward(
        &self,
        embeddings: &Tensor,
        labels: &[u32],
        tuples: Option<&Tuples>,
    ) -> Result<Tensor> {
        let losses = self.forward_no_reduction(embeddings, labels, tuples)?;
        self.proxies.mean(&losses, embeddings)
    }

    fn forward_no_reduction(
        &self,
        embeddings: &Tensor,
        labels: &[u32],
        tuples: Option<&Tuples>,
    ) -> Result<Tensor> {
        let Some(inputs) = self.proxies.inputs(embeddings, labels, tuples)? else {
            return util::empty_losses(embeddings);
        };
        let logits = self.logits_of(embeddings, &inputs)?;
        proxy::cross_entropy(&logits, &inputs.labels)
    }

    fn metric(&self) -> Metric {
        Metric::Cosine
    }
}

/// The four configs of [`CosineSoftmaxLoss`] answer the registry alike: built with their
/// class weights, no tuples, cosine similarity.
macro_rules! cosine_softmax_spec {
    ($($cfg:ty),*) => {$(
        impl crate::LossSpec for $cfg {
            fn build(
                &self,
                p: &tch::nn::Path,
                ctx: crate::LossContext,
            ) -> Result<Box<dyn crate::Loss>> {
                Ok(Box::new(self.init(p, ctx)?))
            }

            fn tuple_kind(&self) -> Option<dml_sampling::TupleKind> {
                None
            }

            fn metric(&self) -> dml_kernels::Metric {
                dml_kernels::Metric::Cosine
            }
        }
    )*};
}

cosine_softmax_spec!(
    NormalizedSoftmaxConfig,
    CosFaceConfig,
    ArcFaceConfig,
    SubCenterArcFaceConfig
);
