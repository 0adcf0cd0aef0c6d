//! Deep metric learning losses on `tch` tensors.
//!
//! - Pair and triplet losses, which compare the batch's embeddings with each other (optionally
//!   on the tuples a miner picked): [`ContrastiveLoss`], [`TripletLoss`] (hinge or soft-plus),
//!   [`MarginLoss`] (learnable boundary β, global and per class), [`LiftedStructuredLoss`],
//!   [`NPairLoss`], [`MultiSimilarityLoss`] and [`SupConLoss`].
//! - Proxy and classification losses, which compare each embedding with learnable vectors per
//!   training class and take no miner: [`ProxyNcaLoss`] (ProxyNCA and ProxyNCA++),
//!   [`ProxyAnchorLoss`], [`CosineSoftmaxLoss`] (normalised softmax, CosFace, ArcFace,
//!   sub-centre ArcFace) and [`SoftTripleLoss`]. They are sized by a [`LossContext`] (number of
//!   classes, embedding length); their vectors are the variable `proxies` under the loss's
//!   path, so they are saved, restored and optimised with the network (in dml's trainer with
//!   their own learning rate, `optimizer.loss_lr`).
//!
//! Every loss implements [`Loss`]: it takes a batch of embeddings `(B, D)`, one `u32` label per
//! row and, optionally, the tuples a miner from `dml_sampling` picked ([`Tuples`]: pairs or
//! triplets). Without tuples each pair or triplet loss uses the full set its paper uses (all
//! pairs, all triplets, or one pair per class for N-pair); the proxy losses reject tuples
//! ([`LossConfig::uses_tuples`]). Distances come from `dml_kernels`, the one
//! definition of [`Metric`] in dml, so a miner working on a detached distance matrix and the loss
//! agree on what "close" means ([`Loss::metric`]).
//!
//! Guarantees, for every loss:
//! - a batch without any valid tuple gives a zero that is still connected to the graph: backward
//!   runs and the gradient is zero;
//! - finite inputs give finite values and gradients, including identical embeddings (distance 0,
//!   no `sqrt(0)` in the backward pass), one-class batches and rows without pairs;
//! - mismatched shapes, label counts, out-of-range tuple indices and bad parameters are
//!   [`Error`]s, never a libtorch panic;
//! - defaults (parameters and [`Reduction`]) are pytorch-metric-learning's, so numbers compare;
//!   each loss's documentation states its formula, shapes, paper and any difference from pml.
//!
//! Learnable parameters live under the `tch::nn::Path` given at construction, so one optimiser
//! trains them together with the network. [`LossConfig`] is the serialisable description of any
//! loss (a `kind`-tagged enum) with [`LossConfig::build`]; [`LossConfig::defaults`] lists them
//! all.
//!
//! Most users reach this crate through the facade `dml` (`dml::losses`).
//!
//! # Example
//!
//! ```
//! use dml_losses::{Loss, LossConfig, LossContext, MarginConfig, ProxyAnchorConfig};
//! use tch::{Device, Kind, Tensor, nn};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let vs = nn::VarStore::new(Device::Cpu);
//! let ctx = LossContext::new(4, 16); // 4 training classes, 16-d embeddings
//! tch::manual_seed(0);
//! let embeddings = Tensor::randn([8, 16], (Kind::Float, Device::Cpu)).set_requires_grad(true);
//! let labels = [0, 0, 1, 1, 2, 2, 3, 3];
//!
//! // A triplet-family loss: all triplets of the batch (or a miner's).
//! let cfg = LossConfig::Margin(MarginConfig { learn_beta: true, nu: 0.01, ..Default::default() });
//! let margin = cfg.build(&(vs.root() / "margin"), ctx)?;
//! let value = margin.forward(&embeddings, &labels, None)?;
//! assert!(value.double_value(&[]).is_finite());
//!
//! // A proxy loss: one learnable proxy per class, no miner.
//! let cfg = LossConfig::ProxyAnchor(ProxyAnchorConfig::default());
//! let proxy_anchor = cfg.build(&(vs.root() / "proxy_anchor"), ctx)?;
//! let value = proxy_anchor.forward(&embeddings, &labels, None)?;
//! value.backward();
//! assert_eq!(embeddings.grad().size(), [8, 16]);
//! assert_eq!(vs.variables()["proxy_anchor.proxies"].grad().size(), [4, 16]);
//! # Ok(())
//! # }
//! ```

#![warn(missing_docs)]

mod config;
mod contrastive;
mod error;
mod lifted;
mod margin;
mod multi_similarity;
mod npair;
mod proxy;
mod proxy_anchor;
mod proxy_nca;
mod reduction;
mod soft_triple;
mod softmax;
mod sup_con;
mod triplet;
mod tuples;
mod util;

pub use dml_kernels::Metric;
pub use dml_sampling::{Pairs, Triplets, Tuples};
use tch::Tensor;

pub use crate::{
    config::{LossConfig, LossSpec},
    contrastive::{ContrastiveConfig, ContrastiveLoss},
    error::{Error, Result},
    lifted::{LiftedStructuredConfig, LiftedStructuredLoss},
    margin::{MarginConfig, MarginLoss},
    multi_similarity::{MultiSimilarityConfig, MultiSimilarityLoss},
    npair::{NPairConfig, NPairLoss},
    proxy::LossContext,
    proxy_anchor::{ProxyAnchorConfig, ProxyAnchorLoss},
    proxy_nca::{ProxyNcaConfig, ProxyNcaLoss},
    reduction::Reduction,
    soft_triple::{SoftTripleConfig, SoftTripleLoss},
    softmax::{
        ArcFaceConfig, CosFaceConfig, CosineSoftmaxLoss, NormalizedSoftmaxConfig,
        SubCenterArcFaceConfig,
    },
    sup_con::{SupConConfig, SupConLoss},
    triplet::{TripletConfig, TripletLoss},
    util::{BatchShape, Reference, check_batch, zero_loss},
};

/// A metric learning loss on a batch of embeddings.
///
/// A new loss implements [`Loss::forward_no_reduction`] (its per-tuple or per-anchor values) and
/// [`Loss::metric`]; [`Loss::forward`] then reduces those values with [`Loss::reduction`]. A
/// loss whose scalar is more than a reduction of per-item values (a regulariser, two terms
/// with their own divisors, learnable parameters that must stay in the graph of a zero loss)
/// overrides `forward`. [`check_batch`], [`zero_loss`] and [`Reduction::reduce`] are the
/// checks and building blocks the losses of this crate use.
pub trait Loss: std::fmt::Debug + Send {
    /// The loss of a batch, reduced to a scalar tensor of the embeddings' kind.
    ///
    /// `embeddings` is `(B, D)`, `labels` has `B` entries, and `tuples` holds the mined pairs or
    /// triplets (indices into the batch); `None` uses the full set the loss's paper uses.
    ///
    /// Provided: [`Loss::forward_no_reduction`] reduced by [`Loss::reduction`].
    fn forward(
        &self,
        embeddings: &Tensor,
        labels: &[u32],
        tuples: Option<&Tuples>,
    ) -> Result<Tensor> {
        let losses = self.forward_no_reduction(embeddings, labels, tuples)?;
        self.reduction().reduce(&losses, embeddings)
    }

    /// How the provided [`Loss::forward`] reduces the per-item values (default
    /// [`Reduction::Mean`]).
    fn reduction(&self) -> Reduction {
        Reduction::Mean
    }

    /// The loss of each tuple (pair, triplet or anchor, as each loss documents), before
    /// reduction and without regularisers: a 1-d tensor, empty when there is no tuple.
    fn forward_no_reduction(
        &self,
        embeddings: &Tensor,
        labels: &[u32],
        tuples: Option<&Tuples>,
    ) -> Result<Tensor>;

    /// The metric the loss compares embeddings with; mine with the same one.
    fn metric(&self) -> Metric;

    /// The loss of the batch against a reference set (a memory bank of past embeddings, as in
    /// cross-batch memory), reduced to a scalar: every pair or triplet has its anchor in the
    /// batch (with gradient) and its other ends in `reference` (detached, no gradient).
    ///
    /// `tuples` are indices as [`dml_sampling::Miner::mine_reference`] returns them: anchors
    /// index the batch, positives and negatives the reference set; `None` uses every pair (or
    /// triplet) of a batch item with a reference item. Only the pair and triplet losses that
    /// pytorch-metric-learning's `CrossBatchMemory` supports implement it ([`ContrastiveLoss`],
    /// [`TripletLoss`], [`MarginLoss`], [`MultiSimilarityLoss`]), with its `ref_emb` semantics;
    /// the others return [`Error::NoReference`].
    fn forward_reference(
        &self,
        embeddings: &Tensor,
        labels: &[u32],
        reference: &Reference<'_>,
        tuples: Option<&Tuples>,
    ) -> Result<Tensor> {
        let _ = (embeddings, labels, reference, tuples);
        Err(Error::NoReference {
            loss: std::any::type_name::<Self>()
                .rsplit("::")
                .next()
                .unwrap_or("this"),
        })
    }
}
