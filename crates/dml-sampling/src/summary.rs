//! What a miner picked, in numbers: counts and distance histograms.

use ndarray::ArrayView2;
use serde::{Deserialize, Serialize};

use crate::{Error, Result, Tuples};

/// A fixed-range histogram of `f32` values with `bins` equal bins over `[lo, hi]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Histogram {
    /// Lower edge of the first bin.
    pub lo: f32,
    /// Upper edge of the last bin (included in it).
    pub hi: f32,
    /// Count per bin.
    pub counts: Vec<u64>,
    /// Values below `lo`.
    pub below: u64,
    /// Values above `hi`.
    pub above: u64,
    /// NaN values (counted nowhere else).
    pub nan: u64,
}

impl Histogram {
    /// An empty histogram; fails unless `bins ≥ 1` and `lo < hi` are finite.
    pub fn new(bins: usize, lo: f32, hi: f32) -> Result<Histogram> {
        if bins == 0 || !(lo.is_finite() && hi.is_finite() && lo < hi) {
            return Err(Error::InvalidHistogram { bins, lo, hi });
        }
        Ok(Histogram {
            lo,
            hi,
            counts: vec![0; bins],
            below: 0,
            above: 0,
            nan: 0,
        })
    }

    /// Counts one value.
    pub fn add(&mut self, x: f32) {
        if x.is_nan() {
            self.nan += 1;
        } else if x < self.lo {
            self.below += 1;
        } else if x > self.hi {
            self.above += 1;
        } else {
            let bins = self.counts.len();
            let t = (f64::from(x) - f64::from(self.lo)) / (f64::from(self.hi) - f64::from(self.lo));
            let b = ((t * bins as f64) as usize).min(bins - 1);
            self.counts[b] += 1;
        }
    }

    /// The `bins + 1` bin edges.
    pub fn edges(&self) -> Vec<f32> {
        let bins = self.counts.len();
        (0..=bins)
            .map(|i| {
                let t = i as f64 / bins as f64;
                (f64::from(self.lo) + t * (f64::from(self.hi) - f64::from(self.lo))) as f32
            })
            .collect()
    }

    /// The histogram as a density over its range: each bin's count divided by the in-range
    /// total and the bin width, so the bars' areas sum to 1 (all zeros when no value was in
    /// range). What a plot of sampled distances draws beside the density of a reference law.
    pub fn density(&self) -> Vec<f64> {
        let n: u64 = self.counts.iter().sum();
        let width = (f64::from(self.hi) - f64::from(self.lo)) / self.counts.len() as f64;
        self.counts
            .iter()
            .map(|&c| {
                if n == 0 {
                    0.0
                } else {
                    c as f64 / (n as f64 * width)
                }
            })
            .collect()
    }

    /// Total number of values seen, in range or not.
    pub fn total(&self) -> u64 {
        self.counts.iter().sum::<u64>() + self.below + self.above + self.nan
    }
}

/// Counts and value histograms of the positive and negative pairs a miner picked, for comparing
/// sampling strategies (as in Wu et al., *Sampling Matters*, Fig. 3).
///
/// For triplets, each triplet `(a, p, n)` contributes the positive pair `(a, p)` and the
/// negative pair `(a, n)`. Values are the matrix's own (distances or similarities).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MiningSummary {
    /// Number of tuples (pairs, positive plus negative, or triplets).
    pub n_tuples: usize,
    /// Number of positive pairs (for triplets: one per triplet).
    pub n_pos: usize,
    /// Number of negative pairs (for triplets: one per triplet).
    pub n_neg: usize,
    /// Number of distinct anchors.
    pub n_anchors: usize,
    /// Mean value over positive pairs (`None` when there are none).
    pub pos_mean: Option<f64>,
    /// Mean value over negative pairs (`None` when there are none).
    pub neg_mean: Option<f64>,
    /// Histogram of positive-pair values.
    pub pos_hist: Histogram,
    /// Histogram of negative-pair values.
    pub neg_hist: Histogram,
}

impl MiningSummary {
    /// Summarises `tuples` mined from the square matrix `dist`, with `bins` bins over
    /// `[lo, hi]` (e.g. `[0, 2]` for distances of unit vectors).
    pub fn new(
        tuples: &Tuples,
        dist: ArrayView2<'_, f32>,
        bins: usize,
        lo: f32,
        hi: f32,
    ) -> Result<MiningSummary> {
        let (rows, cols) = dist.dim();
        if rows != cols {
            return Err(Error::DistanceShape {
                rows,
                cols,
                n_labels: rows,
            });
        }
        tuples.check_indices(rows)?;
        let (pa, p, na, n): (&[u32], &[u32], &[u32], &[u32]) = match tuples {
            Tuples::Pairs(x) => (&x.pos_anchor, &x.positive, &x.neg_anchor, &x.negative),
            Tuples::Triplets(t) => (&t.anchor, &t.positive, &t.anchor, &t.negative),
        };
        let mut pos_hist = Histogram::new(bins, lo, hi)?;
        let mut neg_hist = pos_hist.clone();
        let fill = |hist: &mut Histogram, a: &[u32], b: &[u32]| {
            let mut sum = 0.0f64;
            for (&i, &j) in a.iter().zip(b) {
                let x = dist[[i as usize, j as usize]];
                hist.add(x);
                sum += f64::from(x);
            }
            let n = a.len().min(b.len());
            (n > 0).then(|| sum / n as f64)
        };
        let pos_mean = fill(&mut pos_hist, pa, p);
        let neg_mean = fill(&mut neg_hist, na, n);
        let mut seen = vec![false; rows];
        for &a in pa.iter().chain(na) {
            seen[a as usize] = true;
        }
        Ok(MiningSummary {
            n_tuples: tuples.len(),
            n_pos: pa.len().min(p.len()),
            n_neg: na.len().min(n.len()),
            n_anchors: seen.iter().filter(|&&s| s).count(),
            pos_mean,
            neg_mean,
            pos_hist,
            neg_hist,
        })
    }
}
