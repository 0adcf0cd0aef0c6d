//! The result of an evaluation.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// One score of [`Metrics`], as reports name it.
///
/// [`Score::key`] is the snake-case name used in JSON (`recall_at_4`, `map_at_r`, …) and
/// [`Score::label`] the short column heading (`R@4`, `MAP@R`, …); [`Metrics::scores`] lists the
/// computed ones in report order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Score {
    /// Recall@K.
    RecallAt(usize),
    /// Precision@1.
    PrecisionAt1,
    /// R-precision.
    RPrecision,
    /// MAP@R.
    MapAtR,
    /// Normalised mutual information of a k-means clustering.
    Nmi,
    /// Adjusted mutual information of the same clustering.
    Ami,
}

impl Score {
    /// The JSON key: `recall_at_<k>`, `precision_at_1`, `r_precision`, `map_at_r`, `nmi`, `ami`.
    pub fn key(self) -> String {
        match self {
            Score::RecallAt(k) => format!("recall_at_{k}"),
            Score::PrecisionAt1 => "precision_at_1".into(),
            Score::RPrecision => "r_precision".into(),
            Score::MapAtR => "map_at_r".into(),
            Score::Nmi => "nmi".into(),
            Score::Ami => "ami".into(),
        }
    }

    /// The short heading: `R@<k>`, `P@1`, `R-prec`, `MAP@R`, `NMI`, `AMI`.
    pub fn label(self) -> String {
        match self {
            Score::RecallAt(k) => format!("R@{k}"),
            Score::PrecisionAt1 => "P@1".into(),
            Score::RPrecision => "R-prec".into(),
            Score::MapAtR => "MAP@R".into(),
            Score::Nmi => "NMI".into(),
            Score::Ami => "AMI".into(),
        }
    }

    /// The score a [`key`](Score::key) names, if any.
    pub fn from_key(key: &str) -> Option<Score> {
        Some(match key {
            "precision_at_1" => Score::PrecisionAt1,
            "r_precision" => Score::RPrecision,
            "map_at_r" => Score::MapAtR,
            "nmi" => Score::Nmi,
            "ami" => Score::Ami,
            _ => Score::RecallAt(
                key.strip_prefix("recall_at_")?
                    .parse()
                    .ok()
                    .filter(|&k| k > 0)?,
            ),
        })
    }
}

impl fmt::Display for Score {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.key())
    }
}

/// Retrieval and clustering scores of one evaluation, each in `[0, 1]`.
///
/// Retrieval scores are means over the queries that have at least one same-class reference
/// ([`Metrics::n_queries_without_positive`] counts the others, which are left out, as
/// pytorch-metric-learning does). NMI/AMI are computed over all queries.
///
/// Serialises as the flat object of [`Metrics::to_json`] and deserialises from it (Recall@K then
/// in increasing K; `n_queries` and `n_queries_without_positive` may be absent, read as 0, as in
/// logs written before they were recorded).
#[derive(Debug, Clone, PartialEq)]
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
    /// The computed scores in report order: Recall@K (in the configured order), P@1,
    /// R-precision, MAP@R, NMI, AMI; scores that were not computed are left out.
    pub fn scores(&self) -> Vec<(Score, f64)> {
        let mut out: Vec<(Score, f64)> = self
            .recall_at
            .iter()
            .map(|&(k, v)| (Score::RecallAt(k), v))
            .collect();
        out.push((Score::PrecisionAt1, self.precision_at_1));
        let optional = [
            (Score::RPrecision, self.r_precision),
            (Score::MapAtR, self.map_at_r),
            (Score::Nmi, self.nmi),
            (Score::Ami, self.ami),
        ];
        out.extend(optional.into_iter().filter_map(|(s, v)| Some((s, v?))));
        out
    }

    /// One score, if it was computed.
    pub fn get(&self, score: Score) -> Option<f64> {
        match score {
            Score::RecallAt(k) => self.recall_at_k(k),
            Score::PrecisionAt1 => Some(self.precision_at_1),
            Score::RPrecision => self.r_precision,
            Score::MapAtR => self.map_at_r,
            Score::Nmi => self.nmi,
            Score::Ami => self.ami,
        }
    }

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

impl Serialize for Metrics {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.to_json().serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Metrics {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        use serde::de::Error as _;
        let map = std::collections::BTreeMap::<String, Option<f64>>::deserialize(deserializer)?;
        let mut m = Metrics {
            recall_at: Vec::new(),
            precision_at_1: 0.0,
            r_precision: None,
            map_at_r: None,
            nmi: None,
            ami: None,
            n_queries: 0,
            n_queries_without_positive: 0,
        };
        let mut p1 = None;
        let count = |v: Option<f64>, key: &str| match v {
            Some(v) if v >= 0.0 && v.fract() == 0.0 => Ok(v as usize),
            _ => Err(D::Error::custom(format!(
                "{key} must be a count, got {v:?}"
            ))),
        };
        for (key, v) in map {
            match (key.as_str(), Score::from_key(&key)) {
                ("n_queries", _) => m.n_queries = count(v, &key)?,
                ("n_queries_without_positive", _) => m.n_queries_without_positive = count(v, &key)?,
                (_, Some(Score::RecallAt(k))) => m.recall_at.push((
                    k,
                    v.ok_or_else(|| D::Error::custom(format!("{key} is null")))?,
                )),
                (_, Some(Score::PrecisionAt1)) => p1 = v,
                (_, Some(Score::RPrecision)) => m.r_precision = v,
                (_, Some(Score::MapAtR)) => m.map_at_r = v,
                (_, Some(Score::Nmi)) => m.nmi = v,
                (_, Some(Score::Ami)) => m.ami = v,
                (_, None) => return Err(D::Error::custom(format!("unknown metric `{key}`"))),
            }
        }
        m.precision_at_1 = p1.ok_or_else(|| D::Error::missing_field("precision_at_1"))?;
        m.recall_at.sort_by_key(|&(k, _)| k);
        Ok(m)
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
