//! One serialisable description of any loss.

use dml_kernels::Metric;
use serde::{Deserialize, Serialize};
use tch::nn;

use crate::{
    ContrastiveConfig, LiftedStructuredConfig, Loss, MarginConfig, MultiSimilarityConfig,
    NPairConfig, Result, TripletConfig,
};

/// Any loss of this crate with its parameters, as written in a config file.
///
/// Tagged by `kind`; omitted parameters take the documented defaults (pml's), unknown ones are
/// rejected:
///
/// ```toml
/// kind = "margin"
/// margin = 0.2
/// beta = 1.2
/// learn_beta = true
/// nu = 0.0
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum LossConfig {
    /// [`crate::ContrastiveLoss`].
    Contrastive(ContrastiveConfig),
    /// [`crate::TripletLoss`].
    Triplet(TripletConfig),
    /// [`crate::MarginLoss`].
    Margin(MarginConfig),
    /// [`crate::LiftedStructuredLoss`].
    LiftedStructured(LiftedStructuredConfig),
    /// [`crate::NPairLoss`].
    NPair(NPairConfig),
    /// [`crate::MultiSimilarityLoss`].
    MultiSimilarity(MultiSimilarityConfig),
}

impl Default for LossConfig {
    /// The margin loss with pml's defaults.
    fn default() -> Self {
        LossConfig::Margin(MarginConfig::default())
    }
}

impl LossConfig {
    /// Checks the parameters and builds the loss. Learnable parameters (the margin loss's β)
    /// are created under `p`; `n_classes` sizes per-class parameters (ignored by losses
    /// without any).
    pub fn build(&self, p: &nn::Path, n_classes: usize) -> Result<Box<dyn Loss>> {
        Ok(match self {
            LossConfig::Contrastive(c) => Box::new(c.init()?),
            LossConfig::Triplet(c) => Box::new(c.init()?),
            LossConfig::Margin(c) => Box::new(c.init(p, n_classes)?),
            LossConfig::LiftedStructured(c) => Box::new(c.init()?),
            LossConfig::NPair(c) => Box::new(c.init()?),
            LossConfig::MultiSimilarity(c) => Box::new(c.init()?),
        })
    }

    /// The `kind` tag.
    pub fn name(&self) -> &'static str {
        match self {
            LossConfig::Contrastive(_) => "contrastive",
            LossConfig::Triplet(_) => "triplet",
            LossConfig::Margin(_) => "margin",
            LossConfig::LiftedStructured(_) => "lifted_structured",
            LossConfig::NPair(_) => "n_pair",
            LossConfig::MultiSimilarity(_) => "multi_similarity",
        }
    }

    /// The metric the loss compares embeddings with (miners should use the same).
    pub fn metric(&self) -> Metric {
        match self {
            LossConfig::Contrastive(c) => c.metric,
            LossConfig::Triplet(c) => c.metric,
            LossConfig::Margin(c) => c.metric,
            LossConfig::LiftedStructured(c) => c.metric,
            LossConfig::NPair(c) => c.metric,
            LossConfig::MultiSimilarity(c) => c.metric,
        }
    }
}
