//! ProxyNCA (Movshovitz-Attias et al. 2017) and its ProxyNCA++ form (Teh et al. 2020).

use dml_kernels::{Metric, tensor};
use dml_sampling::Tuples;
use serde::{Deserialize, Serialize};
use tch::{Tensor, nn};

use crate::proxy::{self, LossContext, Proxies, ProxyInit};
use crate::{Loss, Result, util};

/// Parameters of [`ProxyNcaLoss`]; the defaults are pml's `ProxyNCALoss()`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ProxyNcaConfig {
    /// s: the scale of the negative squared distances inside the softmax (the inverse
    /// temperature). Default 1, pml's; 9 is ProxyNCA++'s temperature 1/9.
    pub softmax_scale: f64,
}

impl Default for ProxyNcaConfig {
    fn default() -> Self {
        Self { softmax_scale: 1.0 }
    }
}

impl ProxyNcaConfig {
    /// Checks the parameters and builds the loss; its proxies, `(n_classes, embedding_dim)`,
    /// are the variable `proxies` under `p`, drawn from N(0, 1) as pml draws them.
    pub fn init(&self, p: &nn::Path, ctx: LossContext) -> Result<ProxyNcaLoss> {
        util::positive("softmax_scale", self.softmax_scale)?;
        let proxies = Proxies::new("proxy_nca", p, ctx, 1, ProxyInit::StandardNormal)?;
        Ok(ProxyNcaLoss {
            cfg: *self,
            proxies,
        })
    }
}

/// ProxyNCA: a softmax over the negative squared distances from an embedding to one proxy per
/// class, both L2-normalised, with the label's proxy as the target.
///
/// ```text
/// x̂ = x/‖x‖,  p̂_c = p_c/‖p_c‖,  d_ic = ‖x̂_i − p̂_c‖²  (= 2 − 2 cos)
/// L_i = −log( exp(−s·d_{i,y_i}) / Σ_c exp(−s·d_ic) )
/// L   = mean over the B rows
/// ```
///
/// With `softmax_scale = 9` this is the loss of ProxyNCA++ (temperature 1/9 on normalised
/// vectors); that paper's other changes (fast-moving proxies, global max pooling, layer norm)
/// are a learning rate (`optimizer.loss_lr`) and the network's business.
///
/// No miner: every embedding is compared with every proxy; tuples are an error.
///
/// # Parameters
/// `proxies`, `(n_classes, D)`, initialised N(0, 1). The proxies learn faster than the
/// network in practice: ProxyNCA++ uses a learning rate 100× the network's, a good
/// `optimizer.loss_lr` to start from.
///
/// # Shapes
/// embeddings `(B, D)`, labels `B` below `n_classes` → scalar; per row `(B,)` without reduction.
///
/// # Reference
/// Y. Movshovitz-Attias, A. Toshev, T. K. Leung, S. Ioffe, S. Singh, "No Fuss Distance Metric
/// Learning using Proxies", ICCV 2017; E. W. Teh, T. DeVries, G. W. Taylor, "ProxyNCA++:
/// Revisiting and Revitalizing Proxy Neighborhood Component Analysis", ECCV 2020.
///
/// # pytorch-metric-learning
/// `ProxyNCALoss(num_classes, embedding_size, softmax_scale=1)` with its default
/// `LpDistance(power=2)` (normalised) and `MeanReducer`. pml computes the softmax and then its
/// log, dropping rows whose probability underflows to 0; this loss uses the log-softmax, so such
/// rows keep their (large, finite) loss and every row counts.
#[derive(Debug)]
pub struct ProxyNcaLoss {
    cfg: ProxyNcaConfig,
    proxies: Proxies,
}

impl ProxyNcaLoss {
    /// The loss's parameters.
    pub fn config(&self) -> &ProxyNcaConfig {
        &self.cfg
    }
}

impl Loss for ProxyNcaLoss {
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
        let d = tensor::pairwise(
            Metric::SquaredEuclidean,
            &tensor::f_l2_normalize(embeddings)?,
            &tensor::f_l2_normalize(&inputs.weights)?,
        )?;
        let logits = d.f_mul_scalar(-self.cfg.softmax_scale)?;
        proxy::cross_entropy(&logits, &inputs.labels)
    }

    fn metric(&self) -> Metric {
        Metric::SquaredEuclidean
    }
}

impl crate::LossSpec for ProxyNcaConfig {
    fn build(&self, p: &tch::nn::Path, ctx: crate::LossContext) -> Result<Box<dyn crate::Loss>> {
        Ok(Box::new(self.init(p, ctx)?))
    }

    fn tuple_kind(&self) -> Option<dml_sampling::TupleKind> {
        None
    }

    fn metric(&self) -> dml_kernels::Metric {
        dml_kernels::Metric::SquaredEuclidean
    }
}
