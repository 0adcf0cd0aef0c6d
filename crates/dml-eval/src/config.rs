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
    /// How k-means picks its initial centres: `"k-means||"` (default, k-means‖: reads the data
    /// three times) or `"k-means++"` (scikit-learn's greedy k-means++: reads them once per
    /// centre). See [`Seeding`](crate::Seeding).
    pub kmeans_seeding: crate::Seeding,
    /// Whether to compute pytorch-metric-learning's `mean_average_precision`: for each query,
    /// `1/R · Σ_{i ≤ depth} P@i · rel(i)` over its ranking down to
    /// [`ranking_depth`](EvalConfig::ranking_depth) (by default the whole ranking: standard
    /// average precision). Default `false`. Over the whole ranking every query's every distance
    /// is looked at (the cost of the full distance matrix, streamed in bands, never held).
    pub mean_average_precision: bool,
    /// Whether to compute pytorch-metric-learning's `mean_reciprocal_rank`: 1 / the rank of the
    /// first same-class reference, 0 when there is none within
    /// [`ranking_depth`](EvalConfig::ranking_depth). Default `false`.
    pub mean_reciprocal_rank: bool,
    /// How deep [`mean_average_precision`](EvalConfig::mean_average_precision) and
    /// [`mean_reciprocal_rank`](EvalConfig::mean_reciprocal_rank) look, as pml's `k`: the whole
    /// ranking (`"whole"`, default, pml's `k=None`), the largest R (`"max_bin_count"`) or a
    /// number. The other scores are not affected: R-precision and MAP@R always see R
    /// neighbours (pml's warn and go wrong for a `k` below the largest class).
    pub ranking_depth: RankingDepth,
    /// The k of each of open-metric-learning's `cmc@k`: 1 if a same-class reference is among
    /// the first k, else 0. Default empty. Unlike Recall@K (pml's convention) it is averaged over
    /// every query, those without a same-class reference counting 0, as OML does.
    pub cmc_at: Vec<usize>,
    /// The k of each of open-metric-learning's `precision@k`: same-class references among the
    /// first k, over `min(k, R)` (not over k). Default empty. Averaged over every query, as
    /// [`cmc_at`](EvalConfig::cmc_at).
    pub oml_precision_at: Vec<usize>,
    /// The k of each of open-metric-learning's `map@k`: `Σ_{i ≤ k} P@i · rel(i)` over the number
    /// of same-class references among the first k (0 without any), OML 4's definition, which is
    /// neither MAP@R nor pml's `mean_average_precision`. Default empty. Averaged over every
    /// query, as [`cmc_at`](EvalConfig::cmc_at).
    pub oml_map_at: Vec<usize>,
    /// Whether to also report every retrieval score per class and the mean of the per-class
    /// means (pml's `return_per_class` and `avg_of_avgs`). Default `false`.
    pub per_class: bool,
}

/// How deep the ranking-wide scores look ([`EvalConfig::ranking_depth`]), pml's `k`.
///
/// In TOML and JSON: the string `"whole"`, the string `"max_bin_count"` or a positive integer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RankingDepth {
    /// Every reference (pml's `k=None`, its default).
    #[default]
    Whole,
    /// The largest number of same-class references any query has (pml's `k="max_bin_count"`).
    MaxBinCount,
    /// The first `k` references; a `k` beyond the number of candidates means all of them.
    K(usize),
}

impl Serialize for RankingDepth {
    fn serialize<S: serde::Serializer>(
        &self,
        serializer: S,
    ) -> std::result::Result<S::Ok, S::Error> {
        match self {
            RankingDepth::Whole => serializer.serialize_str("whole"),
            RankingDepth::MaxBinCount => serializer.serialize_str("max_bin_count"),
            RankingDepth::K(k) => serializer.serialize_u64(*k as u64),
        }
    }
}

impl<'de> Deserialize<'de> for RankingDepth {
    fn deserialize<D: serde::Deserializer<'de>>(
        deserializer: D,
    ) -> std::result::Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = RankingDepth;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(r#""whole", "max_bin_count" or a positive integer"#)
            }
            fn visit_str<E: serde::de::Error>(
                self,
                v: &str,
            ) -> std::result::Result<RankingDepth, E> {
                match v {
                    "whole" => Ok(RankingDepth::Whole),
                    "max_bin_count" => Ok(RankingDepth::MaxBinCount),
                    _ => Err(E::invalid_value(serde::de::Unexpected::Str(v), &self)),
                }
            }
            fn visit_u64<E: serde::de::Error>(
                self,
                v: u64,
            ) -> std::result::Result<RankingDepth, E> {
                Ok(RankingDepth::K(v as usize))
            }
            fn visit_i64<E: serde::de::Error>(
                self,
                v: i64,
            ) -> std::result::Result<RankingDepth, E> {
                usize::try_from(v)
                    .map(RankingDepth::K)
                    .map_err(|_| E::invalid_value(serde::de::Unexpected::Signed(v), &self))
            }
        }
        deserializer.deserialize_any(Visitor)
    }
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
            kmeans_seeding: crate::Seeding::default(),
            mean_average_precision: false,
            mean_reciprocal_rank: false,
            ranking_depth: RankingDepth::Whole,
            cmc_at: Vec::new(),
            oml_precision_at: Vec::new(),
            oml_map_at: Vec::new(),
            per_class: false,
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
        for (name, ks) in [
            ("cmc_at", &self.cmc_at),
            ("oml_precision_at", &self.oml_precision_at),
            ("oml_map_at", &self.oml_map_at),
        ] {
            if ks.contains(&0) {
                return Err(Error::ZeroK { name });
            }
        }
        if self.ranking_depth == RankingDepth::K(0) {
            return Err(Error::ZeroK {
                name: "ranking_depth",
            });
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
