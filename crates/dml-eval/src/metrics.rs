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
    /// pytorch-metric-learning's `mean_average_precision` (over the whole ranking by default).
    MeanAveragePrecision,
    /// pytorch-metric-learning's `mean_reciprocal_rank`.
    MeanReciprocalRank,
    /// open-metric-learning's `cmc@k`.
    CmcAt(usize),
    /// open-metric-learning's `precision@k` (over `min(k, R)`).
    OmlPrecisionAt(usize),
    /// open-metric-learning's `map@k`.
    OmlMapAt(usize),
    /// Normalised mutual information of a k-means clustering.
    Nmi,
    /// Adjusted mutual information of the same clustering.
    Ami,
}

impl Score {
    /// The JSON key: `recall_at_<k>`, `precision_at_1`, `r_precision`, `map_at_r`,
    /// `mean_average_precision`, `mean_reciprocal_rank` (pml's names), `cmc_at_<k>`,
    /// `oml_precision_at_<k>`, `oml_map_at_<k>` (OML's scores, prefixed where pml or common
    /// usage means something else by the name), `nmi`, `ami`.
    pub fn key(self) -> String {
        match self {
            Score::RecallAt(k) => format!("recall_at_{k}"),
            Score::PrecisionAt1 => "precision_at_1".into(),
            Score::RPrecision => "r_precision".into(),
            Score::MapAtR => "map_at_r".into(),
            Score::MeanAveragePrecision => "mean_average_precision".into(),
            Score::MeanReciprocalRank => "mean_reciprocal_rank".into(),
            Score::CmcAt(k) => format!("cmc_at_{k}"),
            Score::OmlPrecisionAt(k) => format!("oml_precision_at_{k}"),
            Score::OmlMapAt(k) => format!("oml_map_at_{k}"),
            Score::Nmi => "nmi".into(),
            Score::Ami => "ami".into(),
        }
    }

    /// The short heading: `R@<k>`, `P@1`, `R-prec`, `MAP@R`, `mAP`, `MRR`, `CMC@<k>`,
    /// `OML-P@<k>`, `OML-mAP@<k>`, `NMI`, `AMI`.
    pub fn label(self) -> String {
        match self {
            Score::RecallAt(k) => format!("R@{k}"),
            Score::PrecisionAt1 => "P@1".into(),
            Score::RPrecision => "R-prec".into(),
            Score::MapAtR => "MAP@R".into(),
            Score::MeanAveragePrecision => "mAP".into(),
            Score::MeanReciprocalRank => "MRR".into(),
            Score::CmcAt(k) => format!("CMC@{k}"),
            Score::OmlPrecisionAt(k) => format!("OML-P@{k}"),
            Score::OmlMapAt(k) => format!("OML-mAP@{k}"),
            Score::Nmi => "NMI".into(),
            Score::Ami => "AMI".into(),
        }
    }

    /// The score a [`key`](Score::key) names, if any.
    pub fn from_key(key: &str) -> Option<Score> {
        let at = |prefix: &str| -> Option<usize> {
            key.strip_prefix(prefix)?.parse().ok().filter(|&k| k > 0)
        };
        Some(match key {
            "precision_at_1" => Score::PrecisionAt1,
            "r_precision" => Score::RPrecision,
            "map_at_r" => Score::MapAtR,
            "mean_average_precision" => Score::MeanAveragePrecision,
            "mean_reciprocal_rank" => Score::MeanReciprocalRank,
            "nmi" => Score::Nmi,
            "ami" => Score::Ami,
            _ => {
                if let Some(k) = at("recall_at_") {
                    Score::RecallAt(k)
                } else if let Some(k) = at("cmc_at_") {
                    Score::CmcAt(k)
                } else if let Some(k) = at("oml_precision_at_") {
                    Score::OmlPrecisionAt(k)
                } else {
                    Score::OmlMapAt(at("oml_map_at_")?)
                }
            }
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
/// pytorch-metric-learning does), except open-metric-learning's (`cmc_at`, `oml_precision_at`,
/// `oml_map_at`), which are means over every query with the others counting 0, as OML does.
/// NMI/AMI are computed over all queries.
///
/// Serialises as the flat object of [`Metrics::to_json`] and deserialises from it (Recall@K then
/// in increasing K; `n_queries` and `n_queries_without_positive` may be absent, read as 0, as in
/// logs written before they were recorded). [`Metrics::default`] has no score at all
/// (precision@1 0), a base for building one by hand.
#[derive(Debug, Clone, PartialEq, Default)]
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
    /// pml's `mean_average_precision`: for each query `1/R · Σ_{i ≤ depth} P@i · rel(i)`, the
    /// depth being [`EvalConfig::ranking_depth`](crate::EvalConfig::ranking_depth) (the whole
    /// ranking by default: average precision); `None` unless requested.
    pub mean_average_precision: Option<f64>,
    /// pml's `mean_reciprocal_rank`: for each query 1 / (rank of its first same-class
    /// reference), 0 if there is none within the ranking depth; `None` unless requested.
    pub mean_reciprocal_rank: Option<f64>,
    /// `(k, cmc@k)`, open-metric-learning's cumulative matching characteristic, in the order of
    /// [`EvalConfig::cmc_at`](crate::EvalConfig::cmc_at); over every query.
    pub cmc_at: Vec<(usize, f64)>,
    /// `(k, precision@k)` by open-metric-learning's definition (same-class items among the
    /// first k over `min(k, R)`), in the order of
    /// [`EvalConfig::oml_precision_at`](crate::EvalConfig::oml_precision_at); over every query.
    pub oml_precision_at: Vec<(usize, f64)>,
    /// `(k, map@k)` by open-metric-learning's definition (`Σ_{i ≤ k} P@i · rel(i)` over the
    /// same-class items among the first k), in the order of
    /// [`EvalConfig::oml_map_at`](crate::EvalConfig::oml_map_at); over every query.
    pub oml_map_at: Vec<(usize, f64)>,
    /// Normalised mutual information (arithmetic mean normalisation, as scikit-learn) between the
    /// query classes and a k-means clustering of the queries with k = number of query classes;
    /// `None` when not requested.
    pub nmi: Option<f64>,
    /// Adjusted mutual information of the same clustering; `None` when not requested.
    pub ami: Option<f64>,
    /// Every retrieval score per class and their means over the classes (pml's
    /// `return_per_class` and `avg_of_avgs`); `None` unless
    /// [`EvalConfig::per_class`](crate::EvalConfig::per_class) is set.
    pub per_class: Option<PerClass>,
    /// Number of queries.
    pub n_queries: usize,
    /// Queries left out of the retrieval scores because no reference shares their class.
    pub n_queries_without_positive: usize,
}

/// One class's retrieval scores: the means over its queries.
#[derive(Debug, Clone, PartialEq)]
pub struct ClassScores {
    /// Queries of the class (every one has a same-class reference).
    pub n_queries: usize,
    /// The class's mean of every retrieval score, in report order (as [`Metrics::scores`],
    /// without NMI and AMI).
    pub scores: Vec<(Score, f64)>,
}

impl ClassScores {
    /// One score of the class, if it was computed.
    pub fn get(&self, score: Score) -> Option<f64> {
        self.scores
            .iter()
            .find_map(|&(s, v)| (s == score).then_some(v))
    }
}

/// Per-class retrieval scores, pytorch-metric-learning's `return_per_class` and `avg_of_avgs`.
///
/// A query's score counts towards its own class. Only classes whose queries have a same-class
/// reference are listed (pml leaves the others out of its per-class lists too); in
/// leave-one-out mode that is every class of two items or more.
#[derive(Debug, Clone, PartialEq)]
pub struct PerClass {
    /// The scores of each class, by class label (increasing, the order of pml's lists).
    pub classes: std::collections::BTreeMap<u32, ClassScores>,
    /// For each retrieval score, the mean over the classes of the per-class means: every class
    /// weighs the same whatever its size (pml's `avg_of_avgs=True`).
    pub avg_of_avgs: Vec<(Score, f64)>,
}

impl PerClass {
    /// `(class, value)` of one score for every listed class, in increasing class order (the
    /// list pml returns with `return_per_class=True`); empty if the score was not computed.
    pub fn values(&self, score: Score) -> Vec<(u32, f64)> {
        self.classes
            .iter()
            .filter_map(|(&c, s)| Some((c, s.get(score)?)))
            .collect()
    }

    /// The mean over the classes of one score's per-class means, if it was computed.
    pub fn avg_of_avgs(&self, score: Score) -> Option<f64> {
        self.avg_of_avgs
            .iter()
            .find_map(|&(s, v)| (s == score).then_some(v))
    }

    fn to_json(&self) -> (serde_json::Value, serde_json::Value) {
        let classes = self
            .classes
            .iter()
            .map(|(c, s)| {
                let mut m = serde_json::Map::new();
                m.insert("n_queries".into(), s.n_queries.into());
                for &(score, v) in &s.scores {
                    m.insert(score.key(), v.into());
                }
                (c.to_string(), serde_json::Value::Object(m))
            })
            .collect();
        let avg = self
            .avg_of_avgs
            .iter()
            .map(|&(score, v)| (score.key(), v.into()))
            .collect();
        (
            serde_json::Value::Object(classes),
            serde_json::Value::Object(avg),
        )
    }

    fn from_json(classes: &serde_json::Value, avg: &serde_json::Value) -> Result<Self, String> {
        let scores = |obj: &serde_json::Value, what: &str| -> Result<Vec<(Score, f64)>, String> {
            let map = obj
                .as_object()
                .ok_or_else(|| format!("{what} must be an object"))?;
            let mut out = Vec::new();
            for (key, v) in map {
                if key == "n_queries" {
                    continue;
                }
                let score = Score::from_key(key)
                    .ok_or_else(|| format!("unknown metric `{key}` in {what}"))?;
                let v = v
                    .as_f64()
                    .ok_or_else(|| format!("{what}: {key} must be a number"))?;
                out.push((score, v));
            }
            out.sort_by_key(|&(s, _)| s);
            Ok(out)
        };
        let map = classes
            .as_object()
            .ok_or_else(|| "per_class must be an object".to_owned())?;
        let mut out = std::collections::BTreeMap::new();
        for (label, entry) in map {
            let class: u32 = label
                .parse()
                .map_err(|_| format!("per_class key `{label}` is not a class label"))?;
            let n_queries = entry["n_queries"]
                .as_u64()
                .ok_or_else(|| format!("per_class {label}: n_queries must be a count"))?
                as usize;
            let what = format!("per_class {label}");
            out.insert(
                class,
                ClassScores {
                    n_queries,
                    scores: scores(entry, &what)?,
                },
            );
        }
        Ok(PerClass {
            classes: out,
            avg_of_avgs: scores(avg, "avg_of_avgs")?,
        })
    }
}

impl Metrics {
    /// The computed scores in report order: Recall@K (in the configured order), P@1,
    /// R-precision, MAP@R, pml's mean average precision and mean reciprocal rank, OML's
    /// CMC@k, precision@k and map@k, NMI, AMI; scores that were not computed are left out.
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
            (Score::MeanAveragePrecision, self.mean_average_precision),
            (Score::MeanReciprocalRank, self.mean_reciprocal_rank),
        ];
        out.extend(optional.into_iter().filter_map(|(s, v)| Some((s, v?))));
        out.extend(self.cmc_at.iter().map(|&(k, v)| (Score::CmcAt(k), v)));
        out.extend(
            self.oml_precision_at
                .iter()
                .map(|&(k, v)| (Score::OmlPrecisionAt(k), v)),
        );
        out.extend(
            self.oml_map_at
                .iter()
                .map(|&(k, v)| (Score::OmlMapAt(k), v)),
        );
        let clustering = [(Score::Nmi, self.nmi), (Score::Ami, self.ami)];
        out.extend(clustering.into_iter().filter_map(|(s, v)| Some((s, v?))));
        out
    }

    /// One score, if it was computed.
    pub fn get(&self, score: Score) -> Option<f64> {
        let at = |list: &[(usize, f64)], k: usize| {
            list.iter().find_map(|&(kk, v)| (kk == k).then_some(v))
        };
        match score {
            Score::RecallAt(k) => self.recall_at_k(k),
            Score::PrecisionAt1 => Some(self.precision_at_1),
            Score::RPrecision => self.r_precision,
            Score::MapAtR => self.map_at_r,
            Score::MeanAveragePrecision => self.mean_average_precision,
            Score::MeanReciprocalRank => self.mean_reciprocal_rank,
            Score::CmcAt(k) => at(&self.cmc_at, k),
            Score::OmlPrecisionAt(k) => at(&self.oml_precision_at, k),
            Score::OmlMapAt(k) => at(&self.oml_map_at, k),
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
    /// `r_precision`, `map_at_r`, `nmi` (each `null` when not computed), the other scores
    /// (`ami`, `mean_average_precision`, `mean_reciprocal_rank`, `cmc_at_<k>`,
    /// `oml_precision_at_<k>`, `oml_map_at_<k>`) only when computed, `n_queries` and
    /// `n_queries_without_positive`; with per-class scores also `per_class` (class label →
    /// `n_queries` and the class's scores) and `avg_of_avgs` (score → mean over classes).
    pub fn to_json(&self) -> serde_json::Value {
        let mut map = serde_json::Map::new();
        for &(k, v) in &self.recall_at {
            map.insert(format!("recall_at_{k}"), v.into());
        }
        map.insert("precision_at_1".into(), self.precision_at_1.into());
        map.insert("r_precision".into(), self.r_precision.into());
        map.insert("map_at_r".into(), self.map_at_r.into());
        map.insert("nmi".into(), self.nmi.into());
        for (score, v) in self.scores() {
            let always = matches!(
                score,
                Score::RecallAt(_)
                    | Score::PrecisionAt1
                    | Score::RPrecision
                    | Score::MapAtR
                    | Score::Nmi
            );
            if !always {
                map.insert(score.key(), v.into());
            }
        }
        map.insert("n_queries".into(), self.n_queries.into());
        map.insert(
            "n_queries_without_positive".into(),
            self.n_queries_without_positive.into(),
        );
        if let Some(pc) = &self.per_class {
            let (classes, avg) = pc.to_json();
            map.insert("per_class".into(), classes);
            map.insert("avg_of_avgs".into(), avg);
        }
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
        let map =
            std::collections::BTreeMap::<String, serde_json::Value>::deserialize(deserializer)?;
        let mut m = Metrics::default();
        let mut p1 = None;
        let number = |v: &serde_json::Value, key: &str| -> Result<Option<f64>, D::Error> {
            match v {
                serde_json::Value::Null => Ok(None),
                v => v
                    .as_f64()
                    .map(Some)
                    .ok_or_else(|| D::Error::custom(format!("{key} must be a number or null"))),
            }
        };
        let count = |v: Option<f64>, key: &str| match v {
            Some(v) if v >= 0.0 && v.fract() == 0.0 => Ok(v as usize),
            _ => Err(D::Error::custom(format!(
                "{key} must be a count, got {v:?}"
            ))),
        };
        let required =
            |v: Option<f64>, key: &str| v.ok_or_else(|| D::Error::custom(format!("{key} is null")));
        let mut per_class = None;
        let mut avg_of_avgs = None;
        for (key, value) in &map {
            match key.as_str() {
                "per_class" => {
                    per_class = Some(value);
                    continue;
                }
                "avg_of_avgs" => {
                    avg_of_avgs = Some(value);
                    continue;
                }
                _ => {}
            }
            let v = number(value, key)?;
            match (key.as_str(), Score::from_key(key)) {
                ("n_queries", _) => m.n_queries = count(v, key)?,
                ("n_queries_without_positive", _) => m.n_queries_without_positive = count(v, key)?,
                (_, Some(Score::RecallAt(k))) => m.recall_at.push((k, required(v, key)?)),
                (_, Some(Score::CmcAt(k))) => m.cmc_at.push((k, required(v, key)?)),
                (_, Some(Score::OmlPrecisionAt(k))) => {
                    m.oml_precision_at.push((k, required(v, key)?))
                }
                (_, Some(Score::OmlMapAt(k))) => m.oml_map_at.push((k, required(v, key)?)),
                (_, Some(Score::PrecisionAt1)) => p1 = v,
                (_, Some(Score::RPrecision)) => m.r_precision = v,
                (_, Some(Score::MapAtR)) => m.map_at_r = v,
                (_, Some(Score::MeanAveragePrecision)) => m.mean_average_precision = v,
                (_, Some(Score::MeanReciprocalRank)) => m.mean_reciprocal_rank = v,
                (_, Some(Score::Nmi)) => m.nmi = v,
                (_, Some(Score::Ami)) => m.ami = v,
                (_, None) => return Err(D::Error::custom(format!("unknown metric `{key}`"))),
            }
        }
        m.precision_at_1 = p1.ok_or_else(|| D::Error::missing_field("precision_at_1"))?;
        m.recall_at.sort_by_key(|&(k, _)| k);
        m.cmc_at.sort_by_key(|&(k, _)| k);
        m.oml_precision_at.sort_by_key(|&(k, _)| k);
        m.oml_map_at.sort_by_key(|&(k, _)| k);
        m.per_class = match (per_class, avg_of_avgs) {
            (None, None) => None,
            (Some(c), Some(a)) => Some(PerClass::from_json(c, a).map_err(D::Error::custom)?),
            _ => {
                return Err(D::Error::custom(
                    "per_class and avg_of_avgs must come together",
                ));
            }
        };
        Ok(m)
    }
}

impl std::fmt::Display for Metrics {
    /// One line per score, aligned, for terminal reports; with per-class scores, one more table
    /// of them.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let name = |s: Score| match s {
            Score::RecallAt(k) => format!("recall@{k}"),
            Score::PrecisionAt1 => "precision@1".into(),
            Score::MapAtR => "map@r".into(),
            Score::MeanAveragePrecision => "mean_avg_precision".into(),
            Score::MeanReciprocalRank => "mean_recip_rank".into(),
            Score::CmcAt(k) => format!("oml cmc@{k}"),
            Score::OmlPrecisionAt(k) => format!("oml precision@{k}"),
            Score::OmlMapAt(k) => format!("oml map@{k}"),
            other => other.key(),
        };
        let rows: Vec<(String, f64)> = self
            .scores()
            .into_iter()
            .map(|(s, v)| (name(s), v))
            .collect();
        // The names of the classic scores fit in 16 columns; longer ones widen the column.
        let width = rows
            .iter()
            .map(|(n, _)| n.len() + 1)
            .max()
            .unwrap_or(0)
            .max(16);
        for (i, (n, v)) in rows.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{n:<width$}{v:.4}")?;
        }
        if let Some(pc) = &self.per_class {
            write!(
                f,
                "\nper class ({} classes):\n{:>8} {:>7}",
                pc.classes.len(),
                "class",
                "queries"
            )?;
            for &(s, _) in &pc.avg_of_avgs {
                write!(f, " {:>11}", s.label())?;
            }
            for (c, cs) in &pc.classes {
                write!(f, "\n{c:>8} {:>7}", cs.n_queries)?;
                for &(_, v) in &cs.scores {
                    write!(f, " {v:>11.4}")?;
                }
            }
            write!(f, "\n{:>8} {:>7}", "avg", "")?;
            for &(_, v) in &pc.avg_of_avgs {
                write!(f, " {v:>11.4}")?;
            }
        }
        Ok(())
    }
}
