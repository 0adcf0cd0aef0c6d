//! The result of an evaluation.

use serde::{Deserialize, Serialize};

/// Retrieval and clustering scores of one evaluation, each in `[0, 1]`.
///
/// Retrieval scores are means over the queries that have at least one same-class reference
/// ([`Metrics::n_queries_without_positive`] counts the others, which are left out, as
/// pytorch-metric-learning does). NMI/AMI are computed over all queries.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Metrics {
    /// `(K, Recall@K)`, in the order of [`EvalConfig::recall_at`](crate::EvalConfig::recall_at):
    /// the fraction of queries with at least one same-class item among their K nearest.
    pub recall_at: Vec<(usize, f64)>,
    /// Fraction of queries whose nearest neighbour has the query's class (equals Recall@1).
    pub precision_at_1: f64,
    /// Mean over queries of (same-class items among the R nearest) / R, where R is the number of
    /// same-class references of the query; `None` when
    /// [`EvalConfig::r_metrics`](crate::EvalConfig::r_metrics) is off.
    pub r_precision: Option<f64>,
    /// Mean average precision at R (Musgrave et al. 2020): for each query,
    /// `1/R · Σ_{i ≤ R} P@i · rel(i)`; `None` when
    /// [`EvalConfig::r_metrics`](crate::EvalConfig::r_metrics) is off.
    pub map_at_r: Option<f64>,
    /// Normalised mutual information (arithmetic mean normalisation, as scikit-learn) between the
    /// query classes and a k-means clustering of the queries with k = number of query classes;
    /// `None` when not requested.
    pub nmi: Option<f64>,
    /// Adjusted mutual information of the same clustering; `None` when not requested.
    pub ami: Option<f64>,
    /// Number of queries.
    pub n_queries: usize,
    /// Queries left out of the retrieval scores because no reference shares their class.
    pub n_queries_without_positive: usize,
}

impl Metrics {
    /// Recall@`k`, if `k` was requested.
    pub fn recall_at_k(&self, k: usize) -> Option<f64> {
        self.recall_at
            .iter()
            .find_map(|&(kk, v)| (kk == k).then_some(v))
    }

    /// A flat JSON object with the keys `recall_at_<k>` (one per K), `precision_at_1`,
    /// `r_precision`, `map_at_r`, `nmi` (each `null` when not computed), `ami` (only when computed),
    /// `n_queries` and `n_queries_without_positive`.
    pub fn to_json(&self) -> serde_json::Value {
        let mut map = serde_json::Map::new();
        for &(k, v) in &self.recall_at {
            map.insert(format!("recall_at_{k}"), v.into());
        }
        map.insert("precision_at_1".into(), self.precision_at_1.into());
        map.insert("r_precision".into(), self.r_precision.into());
        map.insert("map_at_r".into(), self.map_at_r.into());
        map.insert("nmi".into(), self.nmi.into());
        if let Some(ami) = self.ami {
            map.insert("ami".into(), ami.into());
        }
        map.insert("n_queries".into(), self.n_queries.into());
        map.insert(
            "n_queries_without_positive".into(),
            self.n_queries_without_positive.into(),
        );
        serde_json::Value::Object(map)
    }
}

impl std::fmt::Display for Metrics {
    /// One line per score, aligned, for terminal reports.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for &(k, v) in &self.recall_at {
            writeln!(f, "{:<16}{v:.4}", format!("recall@{k}"))?;
        }
        write!(f, "{:<16}{:.4}", "precision@1", self.precision_at_1)?;
        if let Some(rp) = self.r_precision {
            write!(f, "\n{:<16}{rp:.4}", "r_precision")?;
        }
        if let Some(map) = self.map_at_r {
            write!(f, "\n{:<16}{map:.4}", "map@r")?;
        }
        if let Some(nmi) = self.nmi {
            write!(f, "\n{:<16}{nmi:.4}", "nmi")?;
        }
        if let Some(ami) = self.ami {
            write!(f, "\n{:<16}{ami:.4}", "ami")?;
        }
        Ok(())
    }
}
