use dml_kernels::Metric;
use rand::Rng;
use serde::{Deserialize, Serialize};

use super::{AnchorRngs, triplets_per_anchor};
use crate::miner::Batch;
use crate::{Error, Miner, Result, Tuples};

/// `ln q(d)`: the log density of the distance `d` between two points drawn independently and
/// uniformly on the unit sphere `S^{dim−1}` of `R^dim`.
///
/// ```text
/// q(d) = Γ(n/2) / (√π · Γ((n−1)/2)) · d^(n−2) · (1 − d²/4)^((n−3)/2),    0 < d < 2, n = dim
/// ```
///
/// (Wu et al., *Sampling Matters in Deep Embedding Learning*, ICCV 2017, § 4, with the
/// normalising constant, which follows from the density `∝ (1 − t²)^((n−3)/2)` of the cosine
/// `t = 1 − d²/2`.) Everything is computed in log space, so `dim = 512` or more is fine. Returns
/// `-inf` outside `(0, 2)` (and at the ends, where the density vanishes for `n > 3`), and NaN for
/// `dim < 2` or a NaN `d`.
pub fn unit_sphere_log_density(d: f64, dim: usize) -> f64 {
    if dim < 2 || d.is_nan() {
        return f64::NAN;
    }
    if !(d > 0.0 && d < 2.0) {
        return f64::NEG_INFINITY;
    }
    let n = dim as f64;
    let log_norm = ln_gamma(n / 2.0) - 0.5 * std::f64::consts::PI.ln() - ln_gamma((n - 1.0) / 2.0);
    log_norm + (n - 2.0) * d.ln() + 0.5 * (n - 3.0) * (-0.25 * d * d).ln_1p()
}

/// `ln Γ(x)` for `x > 0` (Lanczos, g = 7, 9 terms; relative error below 1e-13 here).
fn ln_gamma(x: f64) -> f64 {
    const G: f64 = 7.0;
    const C: [f64; 9] = [
        0.999_999_999_999_809_9,
        676.520_368_121_885_1,
        -1_259.139_216_722_402_8,
        771.323_428_777_653_1,
        -176.615_029_162_140_6,
        12.507_343_278_686_905,
        -0.138_571_095_265_720_12,
        9.984_369_578_019_572e-6,
        1.505_632_735_149_311_6e-7,
    ];
    if x < 0.5 {
        // Reflection: Γ(x) Γ(1 − x) = π / sin(πx).
        let pi = std::f64::consts::PI;
        return (pi / (pi * x).sin()).ln() - ln_gamma(1.0 - x);
    }
    let x = x - 1.0;
    let mut a = C[0];
    let t = x + G + 0.5;
    for (i, &c) in C.iter().enumerate().skip(1) {
        a += c / (x + i as f64);
    }
    0.5 * (2.0 * std::f64::consts::PI).ln() + (x + 0.5) * t.ln() - t + a.ln()
}

/// Parameters of [`DistanceWeightedMiner`].
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DistanceWeightedMinerConfig {
    /// Dimension `n` of the embedding space (the sphere is `S^{n−1}`). Default: none, the
    /// embeddings' own length, which [`MinerConfig::build`](crate::MinerConfig::build) takes
    /// from its context; when given, it must equal that length.
    pub embedding_dim: Option<usize>,
    /// Lower clip of the distance, in `[0, nonzero_loss_cutoff)`. Default: 0.5.
    pub cutoff: f32,
    /// Negatives at this distance or farther are never drawn. Default: 1.4.
    pub nonzero_loss_cutoff: f32,
    /// The cap λ on the inverse density `q(d)⁻¹` (an absolute value: `q` is normalised).
    /// Default: none.
    pub max_weight: Option<f64>,
}

impl Default for DistanceWeightedMinerConfig {
    fn default() -> Self {
        DistanceWeightedMinerConfig {
            embedding_dim: None,
            cutoff: 0.5,
            nonzero_loss_cutoff: 1.4,
            max_weight: None,
        }
    }
}

impl DistanceWeightedMinerConfig {
    /// Checks the parameters and builds the miner for its own `embedding_dim`, with the
    /// density's constants computed once.
    ///
    /// # Errors
    /// [`Error::InvalidEmbeddingDim`] when `embedding_dim` is not given or below 2, and the
    /// errors of [`DistanceWeightedMinerConfig::init_for`].
    pub fn init(&self) -> Result<DistanceWeightedMiner> {
        let dim = self
            .embedding_dim
            .ok_or(Error::InvalidEmbeddingDim { dim: 0 })?;
        self.init_for(dim)
    }

    /// Checks the parameters and builds the miner for embeddings of length `embedding_dim`,
    /// with the density's constants computed once.
    ///
    /// # Errors
    /// [`Error::EmbeddingDimMismatch`] when the config gives another `embedding_dim`;
    /// [`Error::InvalidEmbeddingDim`] for `embedding_dim < 2`; [`Error::InvalidCutoffs`] unless
    /// both cut-offs are finite with `0 ≤ cutoff < nonzero_loss_cutoff`;
    /// [`Error::InvalidMaxWeight`] unless `max_weight`, when given, is finite and positive.
    pub fn init_for(&self, embedding_dim: usize) -> Result<DistanceWeightedMiner> {
        if let Some(given) = self.embedding_dim
            && given != embedding_dim
        {
            return Err(Error::EmbeddingDimMismatch {
                config: given,
                embeddings: embedding_dim,
            });
        }
        if embedding_dim < 2 {
            return Err(Error::InvalidEmbeddingDim { dim: embedding_dim });
        }
        let (c, z) = (self.cutoff, self.nonzero_loss_cutoff);
        if !(c.is_finite() && z.is_finite() && c >= 0.0 && c < z) {
            return Err(Error::InvalidCutoffs {
                cutoff: c,
                nonzero_loss_cutoff: z,
            });
        }
        if let Some(l) = self.max_weight
            && !(l.is_finite() && l > 0.0)
        {
            return Err(Error::InvalidMaxWeight { max_weight: l });
        }
        let cfg = DistanceWeightedMinerConfig {
            embedding_dim: Some(embedding_dim),
            ..*self
        };
        Ok(DistanceWeightedMiner {
            cfg,
            log_weight: LogWeight::new(&cfg, embedding_dim),
        })
    }
}

/// Distance-weighted negative sampling.
///
/// Wu, Manmatha, Smola and Krähenbühl, *Sampling Matters in Deep Embedding Learning* (ICCV 2017),
/// § 4: for every positive pair `(a, p)` one negative `n` of `a` is drawn with probability
///
/// ```text
/// P(n | a) ∝ min(λ, q(max(d_an, cutoff))⁻¹)   if d_an < nonzero_loss_cutoff,   0 otherwise
/// ```
///
/// where `q` is the density of pairwise distances on the unit sphere in `embedding_dim`
/// dimensions ([`unit_sphere_log_density`]). Clipping the distance below at `cutoff` (0.5)
/// bounds the weights of near-duplicate negatives; negatives at or beyond `nonzero_loss_cutoff`
/// (1.4, the margin-loss boundary `β + α`) would give zero loss and are left out. Weights are
/// formed and normalised per anchor in log space, so `embedding_dim = 512` does not overflow.
/// Anchors all of whose negatives lie beyond the cut-off keep no triplet.
///
/// The distances must be Euclidean distances between L2-normalised embeddings: a
/// [`Metric::Euclidean`] matrix is used as it is, a [`Metric::SquaredEuclidean`] one through its
/// square root, and a [`Metric::Cosine`] or [`Metric::Dot`] similarity `s` (of unit vectors)
/// through `d = sqrt(max(0, 2 − 2s))`.
///
/// Differences from pytorch-metric-learning's `DistanceWeightedMiner(cutoff, nonzero_loss_cutoff)`:
/// pml draws for each anchor as many random positives (with replacement) as its class has
/// members, while here every positive pair is used exactly once; pml normalises the weights by
/// one global maximum, so in high dimension whole anchors can underflow to zero weight and be
/// dropped, while here each anchor is normalised on its own; pml has no cap λ (`max_weight =
/// None` here, the default, is the same); pml requires its own normalised `LpDistance`.
/// Wu et al.'s reference implementation (mxnet) matches pml in all three respects.
///
/// Built by [`DistanceWeightedMinerConfig::init`].
#[derive(Debug, Clone, PartialEq)]
pub struct DistanceWeightedMiner {
    cfg: DistanceWeightedMinerConfig,
    log_weight: LogWeight,
}

impl DistanceWeightedMiner {
    /// The miner's parameters (with the `embedding_dim` it was built for).
    pub fn config(&self) -> &DistanceWeightedMinerConfig {
        &self.cfg
    }

    /// The log weight `ln min(λ, q(max(d, cutoff))⁻¹)` of a negative at unit-sphere distance
    /// `d`; `None` when the negative is never drawn (at or beyond `nonzero_loss_cutoff`, or a
    /// weight that is not finite).
    pub fn log_weight(&self, d: f64) -> Option<f64> {
        self.log_weight.eval(d)
    }
}

/// [`DistanceWeightedMiner::log_weight`] with the density's constants, computed once by
/// [`DistanceWeightedMinerConfig::init`].
#[derive(Debug, Clone, Copy, PartialEq)]
struct LogWeight {
    log_norm: f64,
    a: f64,
    b: f64,
    cutoff: f64,
    nonzero: f64,
    log_cap: f64,
}

impl LogWeight {
    fn new(m: &DistanceWeightedMinerConfig, embedding_dim: usize) -> LogWeight {
        let n = embedding_dim as f64;
        LogWeight {
            // ln q(1) without the d-dependent terms: the normalising constant.
            log_norm: ln_gamma(n / 2.0)
                - 0.5 * std::f64::consts::PI.ln()
                - ln_gamma((n - 1.0) / 2.0),
            a: n - 2.0,
            b: 0.5 * (n - 3.0),
            cutoff: f64::from(m.cutoff),
            nonzero: f64::from(m.nonzero_loss_cutoff),
            log_cap: m.max_weight.map_or(f64::INFINITY, f64::ln),
        }
    }

    #[inline]
    fn eval(&self, d: f64) -> Option<f64> {
        if d.is_nan() || d >= self.nonzero {
            return None;
        }
        let d = d.max(self.cutoff);
        if !(d > 0.0 && d < 2.0) {
            // Outside the sphere's distance range the density is 0: an infinite weight that
            // only a cap can make usable.
            return self.log_cap.is_finite().then_some(self.log_cap);
        }
        let lq = self.log_norm + self.a * d.ln() + self.b * (-0.25 * d * d).ln_1p();
        let lw = (-lq).min(self.log_cap);
        lw.is_finite().then_some(lw)
    }
}

/// The Euclidean distance on the unit sphere that a metric value stands for.
fn sphere_distance(metric: Metric, x: f32) -> f64 {
    let x = f64::from(x);
    match metric {
        Metric::Euclidean => x,
        Metric::SquaredEuclidean => x.max(0.0).sqrt(),
        Metric::Cosine | Metric::Dot => (2.0 - 2.0 * x).max(0.0).sqrt(),
    }
}

impl Miner for DistanceWeightedMiner {
    fn mine_batch(&self, batch: &Batch<'_, '_>, rng: &mut dyn rand::RngCore) -> Result<Tuples> {
        let rngs = AnchorRngs::new(rng);
        let log_weight = &self.log_weight;
        let metric = batch.metric();
        let t = triplets_per_anchor(batch, |a, pos, neg, t| {
            let row = batch.row(a);
            // Log weights of the drawable negatives, then a cumulative distribution after
            // subtracting this anchor's maximum (so the largest weight is exactly 1).
            let mut cand = Vec::with_capacity(neg.len());
            let mut lw = Vec::with_capacity(neg.len());
            for &n in neg {
                if let Some(w) = log_weight.eval(sphere_distance(metric, row[n as usize])) {
                    cand.push(n);
                    lw.push(w);
                }
            }
            if cand.is_empty() {
                return;
            }
            let max = lw.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let mut cdf = Vec::with_capacity(lw.len());
            let mut acc = 0.0;
            for w in &lw {
                acc += (w - max).exp();
                cdf.push(acc);
            }
            let mut r = rngs.for_anchor(a);
            for &p in pos {
                let u = r.random::<f64>() * acc;
                // First index whose cumulative weight exceeds u; u < acc so it exists.
                let k = cdf.partition_point(|&c| c <= u).min(cand.len() - 1);
                t.push(a as u32, p, cand[k]);
            }
        });
        Ok(t.into())
    }
}

impl crate::MinerSpec for DistanceWeightedMinerConfig {
    fn build(&self, ctx: crate::MinerContext) -> Result<Box<dyn Miner>> {
        Ok(Box::new(self.init_for(ctx.embedding_dim)?))
    }
}
