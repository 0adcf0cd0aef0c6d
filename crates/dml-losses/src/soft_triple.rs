//! SoftTriple loss (Qian, Shang, Sun, Hu, Li & Jin 2019).

use dml_kernels::{Metric, tensor};
use dml_sampling::Tuples;
use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor, nn};

use crate::proxy::{self, LossContext, Proxies, ProxyInit};
use crate::{Error, Loss, Result, util};

/// Parameters of [`SoftTripleLoss`]; the defaults are pml's `SoftTripleLoss()`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SoftTripleConfig {
    /// K: centres per class. Default 10.
    pub centers_per_class: usize,
    /// λ: the scale of the logits. Default 20.
    pub la: f64,
    /// γ: the temperature of the softmax over a class's centres. Default 0.1.
    pub gamma: f64,
    /// δ: subtracted from the target class's similarity. Default 0.01.
    pub margin: f64,
}

impl Default for SoftTripleConfig {
    fn default() -> Self {
        Self {
            centers_per_class: 10,
            la: 20.0,
            gamma: 0.1,
            margin: 0.01,
        }
    }
}

impl SoftTripleConfig {
    /// Checks the parameters and builds the loss; its centres, `(n_classes · K, D)`, are the
    /// variable `proxies` under `p`, drawn as pml draws them (`kaiming_uniform_(a=√5)` on its
    /// `(D, C·K)` matrix: U(−1/√(C·K), 1/√(C·K))).
    pub fn init(&self, p: &nn::Path, ctx: LossContext) -> Result<SoftTripleLoss> {
        if self.centers_per_class == 0 {
            return Err(Error::NonPositiveParameter {
                name: "centers_per_class",
                value: 0.0,
            });
        }
        util::positive("la", self.la)?;
        util::positive("gamma", self.gamma)?;
        util::finite("margin", self.margin)?;
        let proxies = Proxies::new(
            "soft_triple",
            p,
            ctx,
            self.centers_per_class,
            ProxyInit::KaimingUniformRows,
        )?;
        Ok(SoftTripleLoss {
            cfg: *self,
            proxies,
        })
    }
}

/// SoftTriple: a softmax classifier whose classes each have K centres; the similarity to a
/// class is a soft maximum over its centres.
///
/// ```text
/// s_ick = cos(x_i, w_ck)
/// S_ic  = Σ_k softmax_k(s_ick / γ) · s_ick
/// L_i   = −log softmax(λ (S_i − δ·[c = y_i]))[y_i],   L = mean over the B rows
/// ```
///
/// No miner: tuples are an error. The paper's regulariser that merges similar centres (τ) is
/// not part of pml's loss and not part of this one.
///
/// # Parameters
/// `proxies`, `(n_classes · K, D)`, class-major, initialised U(−1/√(C·K), 1/√(C·K)) as pml
/// does. The paper trains them at 100× the network's learning rate
/// (`optimizer.loss_lr`).
///
/// # Shapes
/// embeddings `(B, D)`, labels `B` below `n_classes` → scalar; per row `(B,)` without reduction.
///
/// # Reference
/// Q. Qian, L. Shang, B. Sun, J. Hu, H. Li, R. Jin, "SoftTriple Loss: Deep Metric Learning
/// Without Triplet Sampling", ICCV 2019, eq. (8)–(9).
///
/// # pytorch-metric-learning
/// `SoftTripleLoss(num_classes, embedding_size, centers_per_class=10, la=20, gamma=0.1,
/// margin=0.01)` with cosine similarity and `MeanReducer`; the same numbers.
#[derive(Debug)]
pub struct SoftTripleLoss {
    cfg: SoftTripleConfig,
    proxies: Proxies,
}

impl SoftTripleLoss {
    /// The loss's parameters.
    pub fn config(&self) -> &SoftTripleConfig {
        &self.cfg
    }
}

impl Loss for SoftTripleLoss {
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
        let c = &self.cfg;
        let n = labels.len() as i64;
        let sim = tensor::pairwise(Metric::Cosine, embeddings, &inputs.weights)?.f_view([
            n,
            self.proxies.n_classes as i64,
            c.centers_per_class as i64,
        ])?;
        let prob = sim.f_div_scalar(c.gamma)?.f_softmax(2, None::<Kind>)?;
        let to_class =
            prob.f_mul(&sim)?
                .f_sum_dim_intlist([2i64].as_slice(), false, None::<Kind>)?;
        let t = proxy::target(&to_class, &inputs.labels)?.f_sub_scalar(c.margin)?;
        let logits = proxy::replace_target(&to_class, &inputs.labels, &t)?.f_mul_scalar(c.la)?;
        proxy::cross_entropy(&logits, &inputs.labels)
    }

    fn metric(&self) -> Metric {
        Metric::Cosine
    }
}

impl crate::LossSpec for SoftTripleConfig {
    fn build(&self, p: &tch::nn::Path, ctx: crate::LossContext) -> Result<Box<dyn crate::Loss>> {
        Ok(Box::new(self.init(p, ctx)?))
    }

    fn tuple_kind(&self) -> Option<dml_sampling::TupleKind> {
        None
    }

    fn metric(&self) -> dml_kernels::Metric {
        dml_kernels::Metric::Cosine
    }
}
