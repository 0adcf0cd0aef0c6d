//! What to compute.

use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// What [`evaluate`](crate::evaluate) computes, and how.
///
/// Deserialises from TOML/JSON with every field optional (the defaults below) and unknown keys
/// rejected.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EvalConfig {
    /// The K of each Recall@K. Default `[1, 2, 4, 8]` (CUB-200 / Cars196 convention; Stanford
    /// Online Products papers use `[1, 10, 100, 1000]`). A K larger than the number of
    /// candidates a query has is capped at that number (the key keeps the requested K).
    pub recall_at: Vec<usize>,
    /// Whether to compute R-precision and MAP@R. Default `true`. Both need each query's R
    /// nearest neighbours, R being the size of its class, so the k-NN search runs with
    /// k = the largest class; on held-out sets with classes of thousands of items (full MNIST-like
    /// test sets) that search dominates the evaluation. Switched off, k is the largest Recall@K
    /// and [`Metrics::r_precision`](crate::Metrics::r_precision) and
    /// [`Metrics::map_at_r`](crate::Metrics::map_at_r) are `None`.
    pub r_metrics: bool,
    /// Whether to run k-means on the queries and report NMI. Default `true`.
    pub nmi: bool,
    /// Whether to also report AMI (adjusted mutual information) of the same k-means clustering
    /// (k-means runs once when either flag is set). Default `false`.
    pub ami: bool,
    /// Seed of the k-means++ seeding. Default `0`.
    pub seed: u64,
    /// Number of k-means runs (each from its own k-means++ seeding); the run with the lowest
    /// inertia wins. Default `1`, the cost of pytorch-metric-learning's single faiss run.
    pub kmeans_restarts: usize,
    /// Maximum Lloyd iterations per k-means run; a run stops earlier when no assignment changes
    /// or the centres move less than scikit-learn's tolerance (`1e-4` × the mean per-feature
    /// variance). Default `300`, scikit-learn's.
    pub kmeans_max_iter: usize,
}

impl Default for EvalConfig {
    fn default() -> Self {
        Self {
            recall_at: vec![1, 2, 4, 8],
            r_metrics: true,
            nmi: true,
            ami: false,
            seed: 0,
            kmeans_restarts: 1,
            kmeans_max_iter: 300,
        }
    }
}

impl EvalConfig {
    /// The Stanford Online Products convention: Recall@{1, 10, 100, 1000}.
    pub fn sop() -> Self {
        Self {
            recall_at: vec![1, 10, 100, 1000],
            ..Self::default()
        }
    }

    /// Checks every rule; [`evaluate`](crate::evaluate) calls it first.
    pub fn validate(&self) -> Result<()> {
        if self.recall_at.contains(&0) {
            return Err(Error::ZeroRecallK);
        }
        if self.nmi || self.ami {
            if self.kmeans_restarts == 0 {
                return Err(Error::ZeroParameter {
                    name: "kmeans_restarts",
                });
            }
            if self.kmeans_max_iter == 0 {
                return Err(Error::ZeroParameter {
                    name: "kmeans_max_iter",
                });
            }
        }
        Ok(())
    }
}
