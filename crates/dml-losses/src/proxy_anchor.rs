//! Proxy-Anchor loss (Kim, Kim, Cho & Kwak 2020).

use dml_kernels::{Metric, tensor};
use dml_sampling::Tuples;
use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor, nn};

use crate::proxy::{LossContext, Proxies, ProxyInit};
use crate::{Loss, Result, util};

/// Parameters of [`ProxyAnchorLoss`]; the defaults are pml's `ProxyAnchorLoss()` and the paper's.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ProxyAnchorConfig {
    /// δ: the margin on the cosine similarity. Default 0.1.
    pub margin: f64,
    /// α: the scale (sharpness of the soft maximum). Default 32.
    pub alpha: f64,
}

impl Default for ProxyAnchorConfig {
    fn default() -> Self {
        Self {
            margin: 0.1,
            alpha: 32.0,
        }
    }
}

impl ProxyAnchorConfig {
    /// Checks the parameters and builds the loss; its proxies, `(n_classes, embedding_dim)`,
    /// are the variable `proxies` under `p`, drawn as pml draws them
    /// (`kaiming_normal_(mode="fan_out")`: N(0, 2/n_classes)).
    pub fn init(&self, p: &nn::Path, ctx: LossContext) -> Result<ProxyAnchorLoss> {
        util::finite("margin", self.margin)?;
        util::positive("alpha", self.alpha)?;
        let proxies = Proxies::new("proxy_anchor", p, ctx, 1, ProxyInit::KaimingNormalFanOut)?;
        Ok(ProxyAnchorLoss {
            cfg: *self,
            proxies,
        })
    }
}

/// Proxy-Anchor: each proxy is an anchor that pulls the batch's embeddings of its class in and
/// pushes the others out, with every embedding weighted by how hard it is (a soft maximum).
///
/// ```text
/// s_ic = cos(x_i, p_c)
/// L = 1/|P⁺| Σ_{c ∈ P⁺} log(1 + Σ_{i: y_i = c} exp(−α (s_ic − δ)))
///   + 1/C    Σ_{c}      log(1 + Σ_{i: y_i ≠ c} exp( α (s_ic + δ)))
/// ```
///
/// `P⁺` is the set of classes with at least one embedding in the batch; the second sum runs
/// over all `C` proxies, those of absent classes included. Both terms are computed as
/// `softplus(logsumexp(·))`, so α = 32 (or far more) cannot overflow.
///
/// No miner: tuples are an error.
///
/// # Parameters
/// `proxies`, `(n_classes, D)`, initialised N(0, 2/n_classes) as pml does. The paper trains
/// them at 100× the network's learning rate: set `optimizer.loss_lr` accordingly.
///
/// # Shapes
/// embeddings `(B, D)`, labels `B` below `n_classes` → scalar. Without reduction: `(C,)`, each
/// proxy's positive term divided by `|P⁺|` plus its negative term divided by `C` (their sum is
/// the loss).
///
/// # Reference
/// S. Kim, D. Kim, M. Cho, S. Kwak, "Proxy Anchor Loss for Deep Metric Learning", CVPR 2020,
/// eq. (4).
///
/// # pytorch-metric-learning
/// `ProxyAnchorLoss(num_classes, embedding_size, margin=0.1, alpha=32)` with cosine similarity
/// and its `DivisorReducer`; the same numbers.
#[derive(Debug)]
pub struct ProxyAnchorLoss {
    cfg: ProxyAnchorConfig,
    proxies: Proxies,
}

impl ProxyAnchorLoss {
    /// The loss's parameters.
    pub fn config(&self) -> &ProxyAnchorConfig {
        &self.cfg
    }
}

impl Loss for ProxyAnchorLoss {
    fn forward(
        &self,
        embeddings: &Tensor,
        labels: &[u32],
        tuples: Option<&Tuples>,
    ) -> Result<Tensor> {
        let per_proxy = self.forward_no_reduction(embeddings, labels, tuples)?;
        if labels.is_empty() {
            return self.proxies.zero(embeddings);
        }
        Ok(per_proxy.f_sum(None::<Kind>)?)
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
        let c = self.proxies.n_classes;
        let mut present = vec![false; c];
        for &l in labels {
            present[l as usize] = true;
        }
        let with_positives = present.iter().filter(|&&p| p).count();
        let (alpha, delta) = (self.cfg.alpha, self.cfg.margin);
        // (C, B): one row per proxy.
        let cos = tensor::pairwise(Metric::Cosine, &inputs.weights, embeddings)?;
        let classes = Tensor::f_arange(c as i64, (Kind::Int64, embeddings.device()))?;
        let pos = classes
            .f_unsqueeze(1)?
            .f_eq_tensor(&inputs.labels.f_unsqueeze(0)?)?;
        let neg = pos.f_logical_not()?;
        let pos_x = cos.f_sub_scalar(delta)?.f_mul_scalar(-alpha)?;
        let neg_x = cos.f_add_scalar(delta)?.f_mul_scalar(alpha)?;
        // log(1 + Σ exp) = softplus(logsumexp); a proxy without any term gets softplus(MASKED) = 0.
        let pos_term = util::masked_logsumexp(&pos_x, &pos)?.f_softplus()?;
        let neg_term = util::masked_logsumexp(&neg_x, &neg)?.f_softplus()?;
        Ok(pos_term
            .f_div_scalar(with_positives as f64)?
            .f_add(&neg_term.f_div_scalar(c as f64)?)?)
    }

    fn metric(&self) -> Metric {
        Metric::Cosine
    }
}

impl crate::LossSpec for ProxyAnchorConfig {
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
