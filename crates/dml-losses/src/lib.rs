//! Deep metric learning losses on `tch` tensors: [`ContrastiveLoss`], [`TripletLoss`] (hinge or
//! soft-plus), [`MarginLoss`] (learnable boundary β, global and per class), [`LiftedStructuredLoss`],
//! [`NPairLoss`] and [`MultiSimilarityLoss`].
//!
//! Every loss implements [`Loss`]: it takes a batch of embeddings `(B, D)`, one `u32` label per
//! row and, optionally, the tuples a miner from `dml_sampling` picked ([`Tuples`]: pairs or
//! triplets). Without tuples each loss uses the full set its paper uses (all pairs, all
//! triplets, or one pair per class for N-pair). Distances come from `dml_kernels`, the one
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
//! loss (a `kind`-tagged enum) with [`LossConfig::build`].
//!
//! Most users reach this crate through the facade `dml` (`dml::losses`).
//!
//! # Example
//!
//! ```
//! use dml_losses::{Loss, LossConfig, MarginConfig};
//! use tch::{Device, Kind, Tensor, nn};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let vs = nn::VarStore::new(Device::Cpu);
//! let cfg = LossConfig::Margin(MarginConfig { learn_beta: true, nu: 0.01, ..Default::default() });
//! let loss = cfg.build(&(vs.root() / "loss"), 4)?;
//!
//! tch::manual_seed(0);
//! let embeddings = Tensor::randn([8, 16], (Kind::Float, Device::Cpu)).set_requires_grad(true);
//! let labels = [0, 0, 1, 1, 2, 2, 3, 3];
//! let value = loss.forward(&embeddings, &labels, None)?; // all triplets of the batch
//! value.backward();
//! assert!(value.double_value(&[]).is_finite());
//! assert_eq!(embeddings.grad().size(), [8, 16]);
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
mod reduction;
mod triplet;
mod tuples;
mod util;

pub use dml_kernels::Metric;
pub use dml_sampling::{Pairs, Triplets, Tuples};
use tch::Tensor;

pub use crate::{
    config::LossConfig,
    contrastive::{ContrastiveConfig, ContrastiveLoss},
    error::{Error, Result},
    lifted::{LiftedStructuredConfig, LiftedStructuredLoss},
    margin::{MarginConfig, MarginLoss},
    multi_similarity::{MultiSimilarityConfig, MultiSimilarityLoss},
    npair::{NPairConfig, NPairLoss},
    reduction::Reduction,
    triplet::{TripletConfig, TripletLoss},
};

/// A metric learning loss on a batch of embeddings.
pub trait Loss: std::fmt::Debug {
    /// The loss of a batch, reduced to a scalar tensor of the embeddings' kind.
    ///
    /// `embeddings` is `(B, D)`, `labels` has `B` entries, and `tuples` holds the mined pairs or
    /// triplets (indices into the batch); `None` uses the full set the loss's paper uses.
    fn forward(
        &self,
        embeddings: &Tensor,
        labels: &[u32],
        tuples: Option<&Tuples>,
    ) -> Result<Tensor>;

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

    /// The loss's name, as in [`LossConfig`]'s `kind`.
    fn name(&self) -> &'static str;
}
