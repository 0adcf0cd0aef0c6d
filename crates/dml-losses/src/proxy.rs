//! What the proxy and classification losses share: the learnable class vectors, their
//! initialisation, and the checks of labels against them.

use dml_sampling::Tuples;
use tch::{Kind, Tensor, nn};

use crate::{Error, Result, util};

/// What a loss with per-class parameters needs to know when it is built: how many training
/// classes there are (labels `0..n_classes`) and how long an embedding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LossContext {
    /// Number of training classes; labels given to the loss must be below it.
    pub n_classes: usize,
    /// Length of an embedding (the model's `embedding_dim`).
    pub embedding_dim: usize,
}

impl LossContext {
    /// A context for `n_classes` classes of `embedding_dim`-long embeddings.
    pub fn new(n_classes: usize, embedding_dim: usize) -> Self {
        Self {
            n_classes,
            embedding_dim,
        }
    }
}

/// How a loss's class vectors are drawn at construction (each as pml draws them).
#[derive(Debug, Clone, Copy)]
pub(crate) enum ProxyInit {
    /// `N(0, 1)`: pml's default (`torch.nn.init.normal_`).
    StandardNormal,
    /// `N(0, 2 / n_classes)`: `kaiming_normal_(mode="fan_out")` on pml's `(n_classes, dim)`.
    KaimingNormalFanOut,
    /// `U(−1/√rows, 1/√rows)`: `kaiming_uniform_(a=√5)` on pml's `(dim, rows)` matrix.
    KaimingUniformRows,
}

/// `rows_per_class` learnable vectors per class, one row each, class-major (row `c·k + j` is
/// vector `j` of class `c`), under `p` as the variable `proxies`.
#[derive(Debug)]
pub(crate) struct Proxies {
    /// The loss's kind, for errors.
    pub loss: &'static str,
    pub weights: Tensor,
    pub n_classes: usize,
    pub rows_per_class: usize,
    pub dim: usize,
}

impl Proxies {
    pub fn new(
        loss: &'static str,
        p: &nn::Path,
        ctx: LossContext,
        rows_per_class: usize,
        init: ProxyInit,
    ) -> Result<Self> {
        if ctx.n_classes == 0 {
            return Err(Error::NoClasses { loss });
        }
        if ctx.embedding_dim == 0 {
            return Err(Error::NoEmbeddingDim { loss });
        }
        let rows = ctx.n_classes * rows_per_class;
        let init = match init {
            ProxyInit::StandardNormal => nn::Init::Randn {
                mean: 0.0,
                stdev: 1.0,
            },
            ProxyInit::KaimingNormalFanOut => nn::Init::Randn {
                mean: 0.0,
                stdev: (2.0 / ctx.n_classes as f64).sqrt(),
            },
            ProxyInit::KaimingUniformRows => {
                let bound = 1.0 / (rows as f64).sqrt();
                nn::Init::Uniform {
                    lo: -bound,
                    up: bound,
                }
            }
        };
        let weights = p.f_var("proxies", &[rows as i64, ctx.embedding_dim as i64], init)?;
        Ok(Self {
            loss,
            weights,
            n_classes: ctx.n_classes,
            rows_per_class,
            dim: ctx.embedding_dim,
        })
    }

    /// The checked batch: the labels as an `i64` index tensor on the embeddings' device and the
    /// class vectors in the embeddings' kind; `None` for an empty batch. Tuples are an error:
    /// these losses compare embeddings with class vectors, not with each other.
    pub fn inputs(
        &self,
        embeddings: &Tensor,
        labels: &[u32],
        tuples: Option<&Tuples>,
    ) -> Result<Option<Inputs>> {
        if tuples.is_some() {
            return Err(Error::TuplesNotUsed { loss: self.loss });
        }
        let batch = util::check_batch(embeddings, labels)?;
        let dim = embeddings.size()[1] as usize;
        if dim != self.dim {
            return Err(Error::EmbeddingDim {
                expected: self.dim,
                got: dim,
            });
        }
        if let Some(&label) = labels.iter().find(|&&l| l as usize >= self.n_classes) {
            return Err(Error::LabelOutOfRange {
                label,
                n_classes: self.n_classes,
            });
        }
        if labels.is_empty() {
            return Ok(None);
        }
        Ok(Some(Inputs {
            labels: util::index_tensor(labels, batch.device)?,
            weights: self.weights.f_to_kind(batch.kind)?,
            kind: batch.kind,
        }))
    }

    /// The mean of per-row losses, or for an empty batch a zero connected to the embeddings and
    /// the class vectors.
    pub fn mean(&self, losses: &Tensor, embeddings: &Tensor) -> Result<Tensor> {
        if losses.numel() == 0 {
            return self.zero(embeddings);
        }
        Ok(losses.f_mean(None::<Kind>)?)
    }

    /// A zero connected to the embeddings and to the class vectors.
    pub fn zero(&self, embeddings: &Tensor) -> Result<Tensor> {
        let z = util::zero_loss(embeddings)?;
        let w = self
            .weights
            .f_sum(z.f_kind()?)?
            .f_mul_scalar(0.0)?
            .f_to_kind(z.f_kind()?)?;
        Ok(z.f_add(&w)?)
    }
}

/// A batch checked against the class vectors.
pub(crate) struct Inputs {
    /// `(B,)` `i64` labels.
    pub labels: Tensor,
    /// The class vectors `(rows, D)` in the embeddings' kind.
    pub weights: Tensor,
    /// The embeddings' kind.
    pub kind: Kind,
}

/// `−log softmax(logits)[label]` per row, `(B, C)` and `(B,)` labels → `(B,)`: cross-entropy in
/// its log-sum-exp form, finite for any finite logits.
pub(crate) fn cross_entropy(logits: &Tensor, labels: &Tensor) -> Result<Tensor> {
    let target = logits
        .f_gather(1, &labels.f_unsqueeze(1)?, false)?
        .f_squeeze_dim(1)?;
    let lse = logits.f_logsumexp([1i64].as_slice(), false)?;
    Ok(lse.f_sub(&target)?)
}

/// `x` with row `i`'s entry `labels[i]` replaced by `values[i]` (differentiable in both).
pub(crate) fn replace_target(x: &Tensor, labels: &Tensor, values: &Tensor) -> Result<Tensor> {
    Ok(x.f_scatter(1, &labels.f_unsqueeze(1)?, &values.f_unsqueeze(1)?)?)
}

/// The target column of each row: `x[i, labels[i]]`, `(B,)`.
pub(crate) fn target(x: &Tensor, labels: &Tensor) -> Result<Tensor> {
    Ok(x.f_gather(1, &labels.f_unsqueeze(1)?, false)?
        .f_squeeze_dim(1)?)
}
