//! The one definition of "distance" in dml.

use serde::{Deserialize, Serialize};

/// A way to compare two embeddings.
///
/// Distances ([`Metric::Euclidean`], [`Metric::SquaredEuclidean`]) are non-negative and
/// symmetric, and smaller means closer. Similarities ([`Metric::Cosine`], [`Metric::Dot`]) are
/// symmetric and larger means closer; [`Metric::is_similarity`] tells the two apart so that a
/// miner knows whether "hard" means small or large.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Metric {
    /// `‖a − b‖₂`.
    #[default]
    Euclidean,
    /// `‖a − b‖₂²`; on the unit sphere this is `2 − 2·cos`.
    SquaredEuclidean,
    /// `a·b / (‖a‖·‖b‖)`, a similarity in `[-1, 1]`.
    Cosine,
    /// `a·b`, a similarity.
    Dot,
}

impl Metric {
    /// All metrics, in a fixed order (handy for tests and CLIs).
    pub const ALL: [Metric; 4] = [
        Metric::Euclidean,
        Metric::SquaredEuclidean,
        Metric::Cosine,
        Metric::Dot,
    ];

    /// `true` when larger values mean closer (cosine, dot product).
    pub fn is_similarity(self) -> bool {
        matches!(self, Metric::Cosine | Metric::Dot)
    }

    /// `true` when `a` is strictly closer than `b` under this metric.
    #[inline]
    pub fn is_closer(self, a: f32, b: f32) -> bool {
        if self.is_similarity() { a > b } else { a < b }
    }

    /// The field's name for the metric, as used in configs and reports.
    pub fn name(self) -> &'static str {
        match self {
            Metric::Euclidean => "euclidean",
            Metric::SquaredEuclidean => "squared_euclidean",
            Metric::Cosine => "cosine",
            Metric::Dot => "dot",
        }
    }
}

impl std::fmt::Display for Metric {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Metric {
    type Err = crate::Error;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Metric::ALL
            .into_iter()
            .find(|m| m.name() == s)
            .ok_or_else(|| crate::Error::UnknownMetric(s.to_owned()))
    }
}
