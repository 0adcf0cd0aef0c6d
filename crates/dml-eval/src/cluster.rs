//! k-means clustering and the clustering scores NMI and AMI.

use std::collections::HashMap;

use dml_kernels::Metric;
use ndarray::{Array2, ArrayView2, Axis, s};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// Lloyd stops once the centres move less than this fraction of the data's mean per-feature
/// variance (summed squared shifts), scikit-learn's default `tol`.
const TOL: f64 = 1e-4;
/// One block's share of a seeding step: each candidate's reduction of the potential, the
/// (point, candidate, squared distance) triples that would lower a point's D², and how many of
/// its points met the candidates.
type BlockReductions = (Vec<f64>, Vec<(u32, u8, f32)>, usize);

/// Points per block of the exact f64 sums (potential, inertia), added in block order so that
/// the sums are the same bits on every run and thread count.
const SUM_BLOCK: usize = 4096;
/// k-means‖'s greedy k-means++ on its weighted candidates draws this many times
/// scikit-learn's `2 + ⌊ln k⌋` candidates per centre: the candidates are a few thousand points,
/// so more draws cost little, and they buy better centres. On 100,000 × 128 points in 1,000
/// overlapping classes (docs/clustering.md's largest set, five seeds) NMI went from
/// 0.9944 ± 0.0004 with 1× to 0.9963 with 2×, 0.9968 with 3× and 0.9968 with 4×
/// (scikit-learn's greedy k-means++ on all the points: 0.9953), and the k-means took the same
/// time (fewer Lloyd iterations).
const RECLUSTER_TRIALS: usize = 3;
/// Points per block of k-means‖'s reclustering of its candidates (a few thousand of them).
const RECLUSTER_BLOCK: usize = 512;
/// A point is spared a seeding candidate only when the candidate is at least
/// `√(4 · (1 + PRUNE_MARGIN))` times the point's distance from the point's centre, so that f32
/// rounding of the distances cannot spare a point the candidate would have moved.
const PRUNE_MARGIN: f32 = 1e-3;
/// Share of the points passing the seeding's triangle-inequality test above which a step's test
/// costs more than it spares (the candidate-to-centre distances, one comparison per point and
/// candidate, the list of points that pass), so that the next [`PRUNE_RETRY`] steps meet every
/// point without it. Weakly clustered data (a class's points hardly closer to one another than
/// to the rest) passes 90 % at every step: SOP-sized k-means (60,000 × 128, k = 11,316) took
/// 35.2 s without the test against 41.7 s with it, the benchmark's 100,000 × 128, k = 1,000
/// 4.2–4.5 s against 5.0–5.1 s (seeding and one iteration), the same centres.
const PRUNE_PASSING: f64 = 0.75;
/// Steps of the seeding without the test after a step where too many points passed it.
const PRUNE_RETRY: usize = 32;

/// When the seeding uses its triangle-inequality test ([`kmeans_plus_plus`]). [`kmeans`] uses
/// [`Prune::Adaptive`]; the other two are the tests' checks that every choice gives the same
/// centres.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(not(test), allow(dead_code))]
enum Prune {
    /// Every point meets every candidate (the tests' reference).
    Never,
    /// At every step (the tests' check of the test).
    Always,
    /// Except for [`PRUNE_RETRY`] steps after a step where more than [`PRUNE_PASSING`] of the
    /// points passed it.
    Adaptive,
}

/// Oversampling factor of k-means‖: each round draws `PARALLEL_OVERSAMPLING · k` candidates in
/// expectation (Apache Spark's `2k`).
const PARALLEL_OVERSAMPLING: f64 = 2.0;
/// Sampling rounds of k-means‖ (Apache Spark's default).
const PARALLEL_ROUNDS: usize = 2;
/// k-means‖ runs only where the points are at least this many times k: its candidates
/// (about `PARALLEL_ROUNDS · PARALLEL_OVERSAMPLING · k`) are then at most a sixteenth of the
/// points. With fewer points it would recluster most of them (little saved), and its coarser
/// pool costs NMI on heavily overlapping classes: on docs/clustering.md's 100-class set
/// (5,000 × 64, 50 points a class, candidates 8 % of the points) 0.9636 ± 0.0091 over 20 seeds
/// against greedy k-means++'s 0.9679 ± 0.0074.
const PARALLEL_MIN_POINTS_PER_CENTRE: usize = 64;
/// k-means‖ runs only where greedy k-means++ would cost at least this many multiply-adds
/// (`n · k · d`, about a third of a second here): below it the seeding is cheap either way.
const PARALLEL_MIN_WORK: usize = 1 << 30;
/// Rounds k-means‖ may add while it has fewer than k candidates (few distinct points, or
/// `n` close to `k`), before it gives way to greedy k-means++ on all the points.
const PARALLEL_EXTRA_ROUNDS: usize = 8;

/// How [`kmeans`] picks its initial centres.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Seeding {
    /// k-means‖ ("scalable k-means++", Bahmani et al., VLDB 2012, as Apache Spark runs it): the
    /// first centre uniformly, then two rounds that each draw every point independently with
    /// probability `min(1, 2k · D(x)² / Σ D²)`, with one fused top-1 search of all the points
    /// against each round's draws; each candidate is weighted by the points nearest to it, and
    /// greedy k-means++ on the weighted candidates, with three times its usual candidates per
    /// centre, picks the k centres. It reads the data three times instead of once per centre.
    /// The default.
    ///
    /// It runs where it saves much: at least 64 points per centre (its candidates are then at
    /// most a sixteenth of the points) and a greedy seeding of at least 2³⁰ multiply-adds
    /// (`n · k · d`). Elsewhere this is greedy k-means++, the same centres as
    /// [`Seeding::KMeansPlusPlus`]: there it costs little, and k-means‖'s coarser candidates
    /// cost NMI on heavily overlapping classes (docs/clustering.md).
    #[default]
    #[serde(rename = "k-means||", alias = "k-means-parallel")]
    KMeansParallel,
    /// Greedy k-means++, scikit-learn's seeding: each centre is the best of `2 + ⌊ln k⌋`
    /// candidates drawn ∝ D(x)², so the data are read once per centre (the cost of the seeding
    /// grows as k · n).
    #[serde(rename = "k-means++")]
    KMeansPlusPlus,
}

/// Parameters of [`kmeans`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KMeansParams {
    /// Number of runs from independent seedings; the lowest inertia wins.
    pub restarts: usize,
    /// Maximum Lloyd iterations per run (a run stops once no assignment changes, or once the
    /// centres' summed squared shift is at most `1e-4` × the mean per-feature variance, as
    /// scikit-learn's `tol`). Default 300.
    pub max_iter: usize,
    /// Seed of the seedings.
    pub seed: u64,
    /// How the initial centres are picked. Default [`Seeding::KMeansParallel`].
    pub seeding: Seeding,
}

impl Default for KMeansParams {
    fn default() -> Self {
        Self {
            restarts: 1,
            max_iter: 300,
            seed: 0,
            seeding: Seeding::default(),
        }
    }
}

/// A k-means clustering.
#[derive(Debug, Clone)]
pub struct KMeans {
    /// Cluster of each point, in `0..k`.
    pub assignments: Vec<u32>,
    /// `k × d` centroids.
    pub centroids: Array2<f32>,
    /// Sum of squared distances of the points to their centroids.
    pub inertia: f64,
    /// Lloyd iterations of the winning run.
    pub n_iter: usize,
}

/// Lloyd's k-means, deterministic in `params.seed`: k-means‖ seeding by default
/// ([`Seeding`]), then Lloyd until no assignment changes or the centres' summed squared shift
/// falls below scikit-learn's tolerance, at most `params.max_iter` (300) iterations. With
/// [`Seeding::KMeansPlusPlus`] it is the algorithm of scikit-learn's `KMeans` (greedy
/// k-means++ with `2 + ⌊ln k⌋` candidates per centre).
///
/// Squared distances come from dml-kernels in GEMM form (`‖x‖² − 2x·c + ‖c‖²`, clamped at 0)
/// in `f32`: each assignment step is one fused top-1 search ([`dml_kernels::knn`] against the
/// centroids, ties to the lower cluster index); centroids, potentials and inertia are
/// accumulated in `f64` in a fixed order. A cluster that loses all its points is moved onto
/// the point farthest from its current centroid, as scikit-learn does, so exactly `k` clusters
/// come back whenever there are `k` distinct points.
///
/// Greedy k-means++ (on all the points, or on k-means‖'s weighted candidates) is exact but
/// pruned: a candidate centre can only take a point from its centre
/// when it lies within twice the point's distance of that centre (triangle inequality), so
/// groups of points that no candidate can take are skipped, and the chosen candidate's
/// distances are kept rather than computed again. Early centres still meet every point; later
/// ones, mostly the points still far from any centre (the points that pass the test are
/// gathered and meet all candidates in one small GEMM). Where most points pass the test
/// anyway (weakly clustered data), it is left out for a while and every point meets the
/// candidates: the same centres, without the test's own cost.
///
/// pytorch-metric-learning uses faiss k-means (random initial centroids, 20 iterations); any two
/// k-means implementations can land in different local optima, so NMI values agree only
/// statistically: docs/clustering.md compares the NMI of this function, scikit-learn and faiss
/// over five seeds on generated sets of 10 to 1,000 classes
/// (`scripts/compare_kmeans.py`).
pub fn kmeans(x: ArrayView2<'_, f32>, k: usize, params: &KMeansParams) -> Result<KMeans> {
    let n = x.nrows();
    if n == 0 {
        return Err(Error::Empty("k-means input"));
    }
    if x.ncols() == 0 {
        return Err(Error::ZeroDim("k-means input"));
    }
    if k == 0 || k > n {
        return Err(Error::TooManyClusters { k, n });
    }
    if params.restarts == 0 {
        return Err(Error::ZeroParameter {
            name: "kmeans_restarts",
        });
    }
    if params.max_iter == 0 {
        return Err(Error::ZeroParameter {
            name: "kmeans_max_iter",
        });
    }
    check_finite(x, "k-means input")?;
    let x = x.as_standard_layout();
    let tol = TOL * mean_variance(x.view());
    let mut best: Option<KMeans> = None;
    for run in 0..params.restarts {
        let mut rng = ChaCha8Rng::seed_from_u64(params.seed.wrapping_add(run as u64));
        let init = if params.seeding == Seeding::KMeansParallel && uses_parallel(n, k, x.ncols()) {
            kmeans_parallel(x.view(), k, &mut rng)?
        } else {
            greedy_seeding(x.view(), k, &mut rng)?
        };
        let result = lloyd(x.view(), init, params.max_iter, tol)?;
        if best.as_ref().is_none_or(|b| result.inertia < b.inertia) {
            best = Some(result);
        }
    }
    best.ok_or(Error::ZeroParameter {
        name: "kmeans_restarts",
    })
}

pub(crate) fn check_finite(x: ArrayView2<'_, f32>, matrix: &'static str) -> Result<()> {
    for (row, r) in x.outer_iter().enumerate() {
        if let Some(col) = r.iter().position(|v| !v.is_finite()) {
            return Err(Error::NonFinite { matrix, row, col });
        }
    }
    Ok(())
}

/// Mean over features of the per-feature variance, in `f64` (scikit-learn scales `tol` by it).
fn mean_variance(x: ArrayView2<'_, f32>) -> f64 {
    let (n, d) = x.dim();
    let mut mean = vec![0f64; d];
    for row in x.outer_iter() {
        mean.iter_mut()
            .zip(row)
            .for_each(|(m, &v)| *m += f64::from(v));
    }
    mean.iter_mut().for_each(|m| *m /= n as f64);
    let mut var = 0f64;
    for row in x.outer_iter() {
        var += row
            .iter()
            .zip(&mean)
            .map(|(&v, m)| (f64::from(v) - m).powi(2))
            .sum::<f64>();
    }
    var / (n * d) as f64
}

fn sq_dist(a: ndarray::ArrayView1<'_, f32>, b: ndarray::ArrayView1<'_, f32>) -> f64 {
    a.iter()
        .zip(b)
        .map(|(&p, &q)| {
            let d = f64::from(p) - f64::from(q);
            d * d
        })
        .sum()
}

/// Σ values (each times its weight, if any) in f64, over fixed blocks added in block order.
fn exact_sum(values: &[f32], weights: Option<&[u32]>, block: usize) -> f64 {
    let partials: Vec<f64> = values
        .par_chunks(block)
        .enumerate()
        .map(|(b, c)| match weights {
            None => c.iter().map(|&v| f64::from(v)).sum::<f64>(),
            Some(w) => c
                .iter()
                .zip(&w[b * block..])
                .map(|(&v, &w)| f64::from(v) * f64::from(w))
                .sum::<f64>(),
        })
        .collect();
    partials.iter().sum()
}

/// Greedy k-means++ (Arthur & Vassilvitskii 2007; the greedy variant of scikit-learn): the first
/// centre uniformly; each next one is the best of `2 + ⌊ln k⌋` candidates drawn with probability
/// ∝ D(x)² (the squared distance to the nearest centre so far), "best" meaning the one that
/// leaves the smallest potential Σ D(x)². Plain k-means++ (one candidate) lands in visibly worse
/// optima on data with tens of classes or more.
///
/// With the test (`prune`), a point x meets a candidate t only when t could be closer to it
/// than its nearest centre a: by the triangle inequality `‖x − t‖ ≥ ‖t − a‖ − ‖x − a‖`, so x
/// keeps a unless `‖t − a‖ < 2 ‖x − a‖`. The test costs one comparison per point and candidate
/// (the candidate-to-centre distances are computed once per step); the point's row is read only
/// when it passes. Without it every point meets every candidate; all choose the same centres.
/// The chosen candidate's distances are kept from the comparison, not computed again.
///
/// With `weights` (k-means‖'s reclustering of its candidates, each weighted by the points it
/// stands for, so every weight is at least 1) it is the same algorithm on a multiset: the first centre is drawn ∝ weight, the
/// candidates ∝ weight · D², and the potential is Σ weight · D². The centres are those of the
/// unweighted seeding of the data with each row repeated `weight` times (exactly so where the
/// sums are exact, as the unit test checks on integer points).
fn kmeans_plus_plus(
    x: ArrayView2<'_, f32>,
    weights: Option<&[u32]>,
    k: usize,
    n_trials: usize,
    rng: &mut ChaCha8Rng,
    prune: Prune,
) -> Result<Array2<f32>> {
    let (n, d) = x.dim();
    debug_assert!(weights.is_none_or(|w| w.len() == n && w.iter().all(|&v| v >= 1)));
    // The candidates of k-means‖ are a few thousand rows: smaller blocks, so that both
    // threads take part.
    let block = if weights.is_some() {
        RECLUSTER_BLOCK
    } else {
        SUM_BLOCK
    };
    let points = dml_kernels::NormedRows::new(Metric::SquaredEuclidean, x, "k-means input")?;
    let mut centroids = Array2::<f32>::zeros((k, d));
    // A point's weight as a factor (1 without weights: the products are then exact).
    let weight = |i: usize| weights.map_or(1.0, |w| f64::from(w[i]));
    let first = match weights {
        None => rng.random_range(0..n),
        Some(w) => {
            let total: usize = w.iter().map(|&v| v as usize).sum();
            let target = rng.random_range(0..total);
            let mut acc = 0usize;
            w.iter()
                .position(|&v| {
                    acc += v as usize;
                    acc > target
                })
                .unwrap_or(n - 1)
        }
    };
    centroids.row_mut(0).assign(&x.row(first));
    let mut d2: Vec<f32> = (0..n)
        .into_par_iter()
        .map(|i| points.value(i, &points, first))
        .collect();
    let mut nearest = vec![0u32; n];
    let mut targets: Vec<(f64, usize)> = Vec::with_capacity(n_trials);
    let mut candidates: Vec<usize> = Vec::with_capacity(n_trials);
    let reach = 4.0 * (1.0 + PRUNE_MARGIN);
    // The first step at which the adaptive test is tried again.
    let mut test_from = 0;
    for c in 1..k {
        let pot = exact_sum(&d2, weights, block);
        candidates.clear();
        if pot > 0.0 {
            // Each candidate is the first point whose running sum of D² reaches its target.
            targets.clear();
            targets.extend((0..n_trials).map(|t| (rng.random::<f64>() * pot, t)));
            targets.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
            let mut picked = vec![n - 1; n_trials];
            let mut acc = 0.0f64;
            let mut next = 0;
            for (i, &w) in d2.iter().enumerate() {
                acc += f64::from(w) * weight(i);
                while next < n_trials && acc >= targets[next].0 && w > 0.0 {
                    picked[targets[next].1] = i;
                    next += 1;
                }
                if next == n_trials {
                    break;
                }
            }
            for p in picked.iter_mut() {
                // Rounding can leave a target past the last positive weight; use that one.
                if d2[*p] == 0.0 {
                    *p = d2.iter().rposition(|&w| w > 0.0).unwrap_or(*p);
                }
            }
            candidates.extend(picked);
        } else {
            // Every point coincides with a centre already (fewer than k distinct points).
            candidates.push(rng.random_range(0..n));
        }
        let cand = x.select(Axis(0), &candidates);
        let cand_rows =
            dml_kernels::NormedRows::new(Metric::SquaredEuclidean, cand.view(), "k-means input")?;
        // Squared distance of each centre so far to each candidate (c × trials: a point's
        // test reads one contiguous row).
        let test = match prune {
            Prune::Never => false,
            Prune::Always => true,
            Prune::Adaptive => c >= test_from,
        };
        let to_centres = if test {
            Some(dml_kernels::pairwise(
                Metric::SquaredEuclidean,
                centroids.slice(s![..c, ..]),
                cand.view(),
            )?)
        } else {
            None
        };
        let n_cand = candidates.len();
        // For each fixed block of points: each candidate's reduction of the potential, the
        // (point, candidate, distance) triples that would lower a D², and how many points met
        // the candidates. With the test, the points that some candidate may take meet all
        // candidates in one small GEMM and the others are skipped; without it, all do.
        let blocks: Vec<BlockReductions> = d2
            .par_chunks(block)
            .zip(nearest.par_chunks(block))
            .enumerate()
            .map_init(Vec::new, |tile, (b, (d2, nearest))| {
                let mut red = vec![0f64; n_cand];
                let mut closer = Vec::new();
                let b0 = b * block;
                let needed: Option<Vec<u32>> = to_centres.as_ref().map(|cc| {
                    d2.iter()
                        .zip(nearest)
                        .enumerate()
                        .filter(|&(_, (&cur, &a))| {
                            cc.row(a as usize).iter().any(|&v| v < reach * cur)
                        })
                        .map(|(o, _)| (b0 + o) as u32)
                        .collect()
                });
                let passed = needed.as_ref().map_or(d2.len(), Vec::len);
                if passed == 0 {
                    return (red, closer, 0);
                }
                // Where most points pass (weakly clustered data), the whole block meets the
                // candidates straight from the data: the unpruned values, and no copy of the
                // rows that pass. Otherwise only the rows that pass are gathered.
                let whole_block = 2 * passed >= d2.len();
                let rows = if whole_block { d2.len() } else { passed };
                tile.clear();
                tile.resize(rows * n_cand, 0f32);
                match &needed {
                    Some(needed) if !whole_block => {
                        points.values_of_rows_into(needed, &cand_rows, tile);
                    }
                    _ => points.values_into(b0..b0 + d2.len(), &cand_rows, tile),
                }
                let mut meet = |row_in_tile: usize, i: usize| {
                    let row = &tile[row_in_tile * n_cand..(row_in_tile + 1) * n_cand];
                    let cur = d2[i - b0];
                    let w = weight(i);
                    for (t, &v) in row.iter().enumerate() {
                        if v < cur {
                            red[t] += f64::from(cur - v) * w;
                            closer.push((i as u32, t as u8, v));
                        }
                    }
                };
                match &needed {
                    Some(needed) => {
                        for (r, &i) in needed.iter().enumerate() {
                            let i = i as usize;
                            meet(if whole_block { i - b0 } else { r }, i);
                        }
                    }
                    None => (0..d2.len()).for_each(|o| meet(o, b0 + o)),
                }
                (red, closer, passed)
            })
            .collect();
        if test && prune == Prune::Adaptive {
            let passed: usize = blocks.iter().map(|b| b.2).sum();
            if passed as f64 > PRUNE_PASSING * n as f64 {
                test_from = c + 1 + PRUNE_RETRY;
            }
        }
        let mut total = vec![0f64; candidates.len()];
        for (red, _, _) in &blocks {
            total.iter_mut().zip(red).for_each(|(a, b)| *a += b);
        }
        let best = (0..candidates.len())
            .min_by(|&a, &b| {
                (pot - total[a])
                    .total_cmp(&(pot - total[b]))
                    .then(a.cmp(&b))
            })
            .unwrap_or(0);
        centroids.row_mut(c).assign(&x.row(candidates[best]));
        for (_, closer, _) in &blocks {
            for &(i, t, v) in closer {
                if usize::from(t) == best {
                    d2[i as usize] = v;
                    nearest[i as usize] = c as u32;
                }
            }
        }
    }
    Ok(centroids)
}

/// k-means‖ ([`Seeding::KMeansParallel`]): the candidates and their weights from
/// [`parallel_candidates`], then weighted greedy k-means++ on them. Where the rounds draw fewer
/// than k candidates (fewer than k distinct points, or n close to k), greedy k-means++ on all
/// the points instead.
fn kmeans_parallel(x: ArrayView2<'_, f32>, k: usize, rng: &mut ChaCha8Rng) -> Result<Array2<f32>> {
    let (chosen, weights) = parallel_candidates(x, k, rng)?;
    if chosen.len() < k {
        return greedy_seeding(x, k, rng);
    }
    if chosen.len() == k {
        return Ok(x.select(Axis(0), &chosen));
    }
    let candidates = x.select(Axis(0), &chosen);
    let trials = RECLUSTER_TRIALS * greedy_trials(k);
    kmeans_plus_plus(
        candidates.view(),
        Some(&weights),
        k,
        trials,
        rng,
        Prune::Adaptive,
    )
}

/// Greedy k-means++ on all the points, as scikit-learn seeds ([`Seeding::KMeansPlusPlus`]).
fn greedy_seeding(x: ArrayView2<'_, f32>, k: usize, rng: &mut ChaCha8Rng) -> Result<Array2<f32>> {
    kmeans_plus_plus(x, None, k, greedy_trials(k), rng, Prune::Adaptive)
}

/// Candidates per centre of greedy k-means++, scikit-learn's `2 + ⌊ln k⌋`.
fn greedy_trials(k: usize) -> usize {
    2 + (k as f64).ln().floor() as usize
}

/// Whether [`Seeding::KMeansParallel`] runs k-means‖ on `n × d` points with `k` centres (else
/// greedy k-means++ on all the points, the same as [`Seeding::KMeansPlusPlus`]): where it saves
/// much ([`PARALLEL_MIN_POINTS_PER_CENTRE`], [`PARALLEL_MIN_WORK`]).
fn uses_parallel(n: usize, k: usize, d: usize) -> bool {
    n >= PARALLEL_MIN_POINTS_PER_CENTRE.saturating_mul(k)
        && n.saturating_mul(k).saturating_mul(d) >= PARALLEL_MIN_WORK
}

/// The sampling rounds of k-means‖: the indices of the candidates (the uniform first one, then
/// each round's draws in index order) and each candidate's weight, the number of points whose
/// nearest candidate it is (ties: the earlier candidate; a candidate is its own nearest). The
/// weights sum to n.
///
/// Each round draws point x with probability `min(1, ℓ · D(x)² / Σ D²)`, ℓ =
/// [`PARALLEL_OVERSAMPLING`] · k, D(x) its distance to the nearest candidate so far, one draw per
/// point in index order from `rng`, then updates D and the nearest candidate with one fused
/// top-1 search of all the points against the round's draws. Rounds go on past
/// [`PARALLEL_ROUNDS`] while there are fewer than k candidates and Σ D² > 0, at most
/// [`PARALLEL_EXTRA_ROUNDS`] more.
fn parallel_candidates(
    x: ArrayView2<'_, f32>,
    k: usize,
    rng: &mut ChaCha8Rng,
) -> Result<(Vec<usize>, Vec<u32>)> {
    let n = x.nrows();
    let points = dml_kernels::NormedRows::new(Metric::SquaredEuclidean, x, "k-means input")?;
    let first = rng.random_range(0..n);
    let mut chosen = vec![first];
    let mut d2: Vec<f32> = (0..n)
        .into_par_iter()
        .map(|i| points.value(i, &points, first))
        .collect();
    d2[first] = 0.0;
    let mut nearest = vec![0u32; n];
    let oversampling = PARALLEL_OVERSAMPLING * k as f64;
    for round in 0..PARALLEL_ROUNDS + PARALLEL_EXTRA_ROUNDS {
        if round >= PARALLEL_ROUNDS && chosen.len() >= k {
            break;
        }
        let pot = exact_sum(&d2, None, SUM_BLOCK);
        if pot <= 0.0 {
            break;
        }
        let start = chosen.len();
        draw_round(&d2, pot, oversampling, rng, &mut chosen);
        if chosen.len() == start {
            continue;
        }
        let drawn = x.select(Axis(0), &chosen[start..]);
        let nn = dml_kernels::knn(Metric::SquaredEuclidean, x, drawn.view(), 1)?;
        for ((d, c), (&j, &v)) in d2
            .iter_mut()
            .zip(nearest.iter_mut())
            .zip(nn.indices.iter().zip(nn.scores.iter()))
        {
            if v < *d {
                *d = v;
                *c = (start + j as usize) as u32;
            }
        }
        // A candidate is its own nearest, whatever the rounding of its distance to itself.
        for (c, &i) in chosen.iter().enumerate().skip(start) {
            d2[i] = 0.0;
            nearest[i] = c as u32;
        }
    }
    let mut weights = vec![0u32; chosen.len()];
    for &c in &nearest {
        weights[c as usize] += 1;
    }
    Ok((chosen, weights))
}

/// One round of k-means‖'s draws: point i joins `chosen` with probability
/// `min(1, oversampling · d2[i] / pot)`, one draw from `rng` per point with `d2[i] > 0`, in
/// index order.
fn draw_round(
    d2: &[f32],
    pot: f64,
    oversampling: f64,
    rng: &mut ChaCha8Rng,
    chosen: &mut Vec<usize>,
) {
    for (i, &w) in d2.iter().enumerate() {
        if w > 0.0 && rng.random::<f64>() < oversampling * f64::from(w) / pot {
            chosen.push(i);
        }
    }
}

/// Nearest centroid (ties: the lower index) and its squared distance, for every point: one fused
/// top-1 search of dml-kernels.
fn assign(
    x: ArrayView2<'_, f32>,
    centroids: ArrayView2<'_, f32>,
    out: &mut [u32],
    out_d2: &mut [f32],
) -> Result<()> {
    let nn = dml_kernels::knn(Metric::SquaredEuclidean, x, centroids, 1)?;
    out.iter_mut()
        .zip(nn.indices.iter())
        .for_each(|(o, &i)| *o = i);
    out_d2
        .iter_mut()
        .zip(nn.scores.iter())
        .for_each(|(o, &v)| *o = v);
    Ok(())
}

/// Per-cluster f64 sums of the points, each cluster's points added in increasing index order
/// (a counting sort by cluster first), so the centroids are the same bits on every run and
/// thread count.
fn cluster_sums(x: ArrayView2<'_, f32>, assignments: &[u32], k: usize) -> (Vec<f64>, Vec<usize>) {
    let d = x.ncols();
    let mut counts = vec![0usize; k];
    for &a in assignments {
        counts[a as usize] += 1;
    }
    let mut starts = vec![0usize; k + 1];
    for c in 0..k {
        starts[c + 1] = starts[c] + counts[c];
    }
    let mut order = vec![0u32; assignments.len()];
    let mut fill = starts.clone();
    for (i, &a) in assignments.iter().enumerate() {
        order[fill[a as usize]] = i as u32;
        fill[a as usize] += 1;
    }
    let mut sums = vec![0f64; k * d];
    sums.par_chunks_mut(d).enumerate().for_each(|(c, sum)| {
        for &i in &order[starts[c]..starts[c + 1]] {
            for (s, &v) in sum.iter_mut().zip(x.row(i as usize)) {
                *s += f64::from(v);
            }
        }
    });
    (sums, counts)
}

fn lloyd(
    x: ArrayView2<'_, f32>,
    mut centroids: Array2<f32>,
    max_iter: usize,
    tol: f64,
) -> Result<KMeans> {
    let (n, d) = x.dim();
    let k = centroids.nrows();
    let mut assignments = vec![u32::MAX; n];
    let mut next = vec![0u32; n];
    let mut d2 = vec![0f32; n];
    let mut n_iter = 0;
    let mut converged = false;
    for _ in 0..max_iter {
        assign(x, centroids.view(), &mut next, &mut d2)?;
        n_iter += 1;
        if next == assignments {
            converged = true;
            break;
        }
        std::mem::swap(&mut assignments, &mut next);
        let (sums, counts) = cluster_sums(x, &assignments, k);
        // Empty clusters move onto the points worst served by their centroid.
        let mut far: Vec<usize> = Vec::new();
        if counts.contains(&0) {
            let mut order: Vec<usize> = (0..n).collect();
            order.sort_by(|&a, &b| d2[b].total_cmp(&d2[a]).then(a.cmp(&b)));
            far = order;
        }
        let mut far_iter = far.into_iter();
        let mut shift = 0.0f64;
        for c in 0..k {
            let mut row = centroids.row_mut(c);
            let old = row.to_owned();
            if counts[c] == 0 {
                if let Some(p) = far_iter.next() {
                    row.assign(&x.row(p));
                }
            } else {
                let inv = 1.0 / counts[c] as f64;
                for (dst, &s) in row.iter_mut().zip(&sums[c * d..(c + 1) * d]) {
                    *dst = (s * inv) as f32;
                }
            }
            shift += sq_dist(row.view(), old.view());
        }
        if shift <= tol {
            break;
        }
    }
    // Final assignment to the final centroids (unless the last iteration's assignment was
    // made to them: a fixed point), and its exact inertia.
    if !converged {
        assign(x, centroids.view(), &mut next, &mut d2)?;
    }
    let per_point: Vec<f64> = x
        .outer_iter()
        .into_par_iter()
        .zip(next.par_iter())
        .map(|(r, &c)| sq_dist(r, centroids.row(c as usize)))
        .collect();
    let inertia = per_point.iter().sum();
    Ok(KMeans {
        assignments: next,
        centroids,
        inertia,
        n_iter,
    })
}

fn entropy(counts: &[u64], n: f64) -> f64 {
    if counts.len() <= 1 {
        return 0.0;
    }
    let ln_n = n.ln();
    -counts
        .iter()
        .map(|&c| {
            let c = c as f64;
            c / n * (c.ln() - ln_n)
        })
        .sum::<f64>()
}

/// Mutual information from a contingency table given as `(i, j, n_ij)` triples.
fn mutual_info_cells(a: &[u64], b: &[u64], cells: &[(usize, usize, u64)], n: f64) -> f64 {
    if a.len() == 1 || b.len() == 1 {
        return 0.0;
    }
    let ln_n = n.ln();
    let mi: f64 = cells
        .iter()
        .map(|&(i, j, nij)| {
            let nij = nij as f64;
            let p = nij / n;
            let outer = (a[i] as f64) * (b[j] as f64);
            let v = p * (nij.ln() - ln_n) + p * (-outer.ln() + 2.0 * ln_n);
            if v.abs() < f64::EPSILON { 0.0 } else { v }
        })
        .sum();
    mi.max(0.0)
}

struct Table {
    a: Vec<u64>,
    b: Vec<u64>,
    cells: Vec<(usize, usize, u64)>,
    n: f64,
}

fn table(labels_true: &[u32], labels_pred: &[u32]) -> Result<Table> {
    if labels_true.len() != labels_pred.len() {
        return Err(Error::ClusteringLengths {
            n_true: labels_true.len(),
            n_pred: labels_pred.len(),
        });
    }
    let mut rows: HashMap<u32, usize> = HashMap::new();
    let mut cols: HashMap<u32, usize> = HashMap::new();
    let mut cells: HashMap<(usize, usize), u64> = HashMap::new();
    let mut a: Vec<u64> = Vec::new();
    let mut b: Vec<u64> = Vec::new();
    for (&t, &p) in labels_true.iter().zip(labels_pred) {
        let next = rows.len();
        let i = *rows.entry(t).or_insert(next);
        if i == a.len() {
            a.push(0);
        }
        a[i] += 1;
        let next = cols.len();
        let j = *cols.entry(p).or_insert(next);
        if j == b.len() {
            b.push(0);
        }
        b[j] += 1;
        *cells.entry((i, j)).or_insert(0) += 1;
    }
    let mut cells: Vec<(usize, usize, u64)> =
        cells.into_iter().map(|((i, j), c)| (i, j, c)).collect();
    // A fixed order makes the f64 sums reproducible run to run.
    cells.sort_unstable();
    Ok(Table {
        a,
        b,
        cells,
        n: labels_true.len() as f64,
    })
}

/// Normalised mutual information `MI / mean(H(true), H(pred))` (natural logarithms, arithmetic
/// mean), with scikit-learn's conventions: 1 when both labelings have a single class (or are
/// empty), 0 when the mutual information is 0.
///
/// This is `sklearn.metrics.normalized_mutual_info_score` with its default
/// `average_method="arithmetic"`, the function pytorch-metric-learning's `AccuracyCalculator`
/// calls.
pub fn normalized_mutual_info(labels_true: &[u32], labels_pred: &[u32]) -> Result<f64> {
    let t = table(labels_true, labels_pred)?;
    if t.a.len() == t.b.len() && t.a.len() <= 1 {
        return Ok(1.0);
    }
    let mi = mutual_info_cells(&t.a, &t.b, &t.cells, t.n);
    if mi == 0.0 {
        return Ok(0.0);
    }
    let normaliser = 0.5 * (entropy(&t.a, t.n) + entropy(&t.b, t.n));
    Ok(mi / normaliser)
}

/// Adjusted mutual information `(MI − E[MI]) / (mean(H(true), H(pred)) − E[MI])` (Vinh et al.
/// 2010), with scikit-learn's conventions and arithmetic mean: 1 when both labelings have a
/// single class, 0 when exactly one of them does.
///
/// The expected mutual information under the hypergeometric model costs
/// `O(Σ_ij min(a_i, b_j))`; it runs in parallel over the classes.
pub fn adjusted_mutual_info(labels_true: &[u32], labels_pred: &[u32]) -> Result<f64> {
    let t = table(labels_true, labels_pred)?;
    if t.a.len() == t.b.len() && t.a.len() <= 1 {
        return Ok(1.0);
    }
    if t.a.len() == 1 || t.b.len() == 1 {
        return Ok(0.0);
    }
    let mi = mutual_info_cells(&t.a, &t.b, &t.cells, t.n);
    let emi = expected_mutual_info(&t.a, &t.b, labels_true.len());
    let normaliser = 0.5 * (entropy(&t.a, t.n) + entropy(&t.b, t.n));
    let keep_sign = |v: f64| {
        if v < 0.0 {
            v.min(-f64::EPSILON)
        } else {
            v.max(f64::EPSILON)
        }
    };
    Ok(keep_sign(mi - emi) / keep_sign(normaliser - emi))
}

/// `E[MI]` of two labelings with marginals `a` and `b` under the hypergeometric model.
fn expected_mutual_info(a: &[u64], b: &[u64], n: usize) -> f64 {
    // ln(m!) for m in 0..=n: a running sum of logarithms (exact integers, f64 accumulation).
    let mut ln_fact = vec![0f64; n + 1];
    for m in 1..=n {
        ln_fact[m] = ln_fact[m - 1] + (m as f64).ln();
    }
    let nf = n as f64;
    let ln_n = nf.ln();
    let n = n as u64;
    a.par_iter()
        .map(|&ai| {
            let mut sum = 0.0;
            for &bj in b {
                let start = 1.max((ai + bj).saturating_sub(n));
                let end = ai.min(bj);
                let fixed = ln_fact[ai as usize]
                    + ln_fact[bj as usize]
                    + ln_fact[(n - ai) as usize]
                    + ln_fact[(n - bj) as usize]
                    - ln_fact[n as usize];
                let ln_ab = (ai as f64).ln() + (bj as f64).ln();
                for nij in start..=end {
                    let term1 = nij as f64 / nf;
                    let term2 = ln_n + (nij as f64).ln() - ln_ab;
                    let gln = fixed
                        - ln_fact[nij as usize]
                        - ln_fact[(ai - nij) as usize]
                        - ln_fact[(bj - nij) as usize]
                        - ln_fact[(n + nij - ai - bj) as usize];
                    sum += term1 * term2 * gln.exp();
                }
            }
            sum
        })
        .collect::<Vec<f64>>()
        .iter()
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The pruned seeding picks exactly the centres of the unpruned one, with the test at
    /// every step and with the adaptive test (which leaves it out for a while after a step
    /// where most points passed): on integer points (exact f32 arithmetic) and on floats, with
    /// duplicates, few and many clusters.
    #[test]
    fn pruned_seeding_equals_the_full_one() {
        let mut rng = ChaCha8Rng::seed_from_u64(4);
        let ints = Array2::from_shape_fn((700, 3), |_| f32::from(rng.random_range(-4i8..=4)));
        let centres = Array2::from_shape_fn((40, 16), |_| rng.random_range(-1.0f32..1.0));
        let floats = Array2::from_shape_fn((900, 16), |(i, j)| {
            centres[[i % 40, j]] + 0.2 * rng.random_range(-1.0f32..1.0)
        });
        for (x, ks) in [(ints, [2usize, 30, 150]), (floats, [3, 40, 200])] {
            for k in ks {
                for seed in 0..3 {
                    let seeding = |prune| {
                        kmeans_plus_plus(
                            x.view(),
                            None,
                            k,
                            greedy_trials(k),
                            &mut ChaCha8Rng::seed_from_u64(seed),
                            prune,
                        )
                        .expect("seeding")
                    };
                    let full = seeding(Prune::Never);
                    assert_eq!(full, seeding(Prune::Always), "k {k} seed {seed}");
                    assert_eq!(full, seeding(Prune::Adaptive), "k {k} seed {seed}");
                }
            }
        }
    }

    /// Weighted greedy k-means++ (k-means‖'s reclustering) picks the centres of the unweighted
    /// seeding of the rows repeated `weight` times: on integer points, where every sum is exact,
    /// for each pruning mode.
    #[test]
    fn weighted_seeding_equals_the_seeding_of_repeated_rows() {
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let unique = Array2::from_shape_fn((300, 4), |_| f32::from(rng.random_range(-6i8..=6)));
        let weights: Vec<u32> = (0..300).map(|_| rng.random_range(1..=4)).collect();
        let repeated: Vec<usize> = weights
            .iter()
            .enumerate()
            .flat_map(|(i, &w)| std::iter::repeat_n(i, w as usize))
            .collect();
        let expanded = unique.select(Axis(0), &repeated);
        for k in [2, 25, 120] {
            for seed in 0..3 {
                for prune in [Prune::Never, Prune::Always, Prune::Adaptive] {
                    let rng = || ChaCha8Rng::seed_from_u64(seed);
                    let weighted =
                        kmeans_plus_plus(unique.view(), Some(&weights), k, 7, &mut rng(), prune)
                            .expect("weighted seeding");
                    let plain = kmeans_plus_plus(expanded.view(), None, k, 7, &mut rng(), prune)
                        .expect("seeding");
                    assert_eq!(weighted, plain, "k {k} seed {seed} {prune:?}");
                }
            }
        }
    }

    /// k-means‖'s candidates are distinct points, each weighted by the points whose nearest
    /// candidate it is (a naive search in exact integer arithmetic, ties to the earlier
    /// candidate, a candidate its own), the weights summing to n; and there are at least k of
    /// them when there are k distinct points.
    #[test]
    fn parallel_candidates_weigh_their_nearest_points() {
        let mut rng = ChaCha8Rng::seed_from_u64(11);
        let x = Array2::from_shape_fn((900, 3), |_| f32::from(rng.random_range(-5i8..=5)));
        for k in [1, 4, 60, 300] {
            for seed in 0..3 {
                let (chosen, weights) =
                    parallel_candidates(x.view(), k, &mut ChaCha8Rng::seed_from_u64(seed))
                        .expect("candidates");
                assert!(chosen.len() >= k, "k {k}: {} candidates", chosen.len());
                let mut seen = chosen.clone();
                seen.sort_unstable();
                seen.dedup();
                assert_eq!(seen.len(), chosen.len(), "candidates repeat");
                let mut naive = vec![0u32; chosen.len()];
                for i in 0..x.nrows() {
                    let own = chosen.iter().position(|&c| c == i);
                    let nearest = own.unwrap_or_else(|| {
                        (0..chosen.len())
                            .min_by(|&a, &b| {
                                sq_dist(x.row(i), x.row(chosen[a]))
                                    .total_cmp(&sq_dist(x.row(i), x.row(chosen[b])))
                                    .then(a.cmp(&b))
                            })
                            .expect("a candidate")
                    });
                    naive[nearest] += 1;
                }
                assert_eq!(weights, naive, "k {k} seed {seed}");
            }
        }
    }

    /// A round draws each point with probability min(1, ℓ · D² / Σ D²): frequencies over 4,000
    /// rounds within five standard deviations of it, never a point with D² = 0, always one
    /// whose probability reaches 1.
    #[test]
    fn a_round_draws_points_in_proportion_to_their_squared_distance() {
        let d2: Vec<f32> = vec![0.0, 1.0, 2.0, 4.0, 0.5, 30.0, 8.0, 0.0, 3.0, 1.5];
        let pot: f64 = d2.iter().map(|&v| f64::from(v)).sum();
        let oversampling = 3.0;
        let rounds = 4000;
        let mut counts = vec![0usize; d2.len()];
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        for _ in 0..rounds {
            let mut chosen = Vec::new();
            draw_round(&d2, pot, oversampling, &mut rng, &mut chosen);
            chosen.iter().for_each(|&i| counts[i] += 1);
        }
        for (i, &w) in d2.iter().enumerate() {
            let p = (oversampling * f64::from(w) / pot).min(1.0);
            let freq = counts[i] as f64 / rounds as f64;
            let sd = (p * (1.0 - p) / rounds as f64).sqrt();
            assert!(
                (freq - p).abs() <= 5.0 * sd + 1e-12,
                "point {i}: {freq} against {p}"
            );
        }
        assert_eq!(counts[5], rounds);
        assert_eq!((counts[0], counts[7]), (0, 0));
    }

    /// k-means‖ run directly (the threshold of [`uses_parallel`] keeps test-sized inputs off
    /// it): well-separated blobs come back exactly after Lloyd, with many candidates and with
    /// the fallbacks (exactly k candidates, fewer than k distinct points); and the threshold.
    #[test]
    fn parallel_seeding_finds_separated_blobs_and_falls_back() {
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let (k, per) = (12usize, 80usize);
        let centres = Array2::from_shape_fn((k, 8), |_| rng.random_range(-20.0f32..20.0));
        let x = Array2::from_shape_fn((k * per, 8), |(i, j)| {
            centres[[i / per, j]] + rng.random_range(-0.5f32..0.5)
        });
        let labels: Vec<u32> = (0..k * per).map(|i| (i / per) as u32).collect();
        let tol = TOL * mean_variance(x.view());
        for seed in 0..5 {
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            let init = kmeans_parallel(x.view(), k, &mut rng).expect("seeding");
            let km = lloyd(x.view(), init, 100, tol).expect("lloyd");
            assert_eq!(
                normalized_mutual_info(&labels, &km.assignments).expect("nmi"),
                1.0,
                "seed {seed}"
            );
        }
        // Three distinct points: k = 3 draws them all (fewer than k candidates at first, then
        // exactly k); k = 5 has fewer than k distinct points and falls back to greedy k-means++.
        let dup =
            Array2::from_shape_vec((9, 1), vec![0.0f32, 0.0, 0.0, 4.0, 4.0, 4.0, 9.0, 9.0, 9.0])
                .expect("shape");
        for (k, seed) in [3usize, 5]
            .into_iter()
            .flat_map(|k| (0..4).map(move |s| (k, s)))
        {
            let init = kmeans_parallel(dup.view(), k, &mut ChaCha8Rng::seed_from_u64(seed))
                .expect("seeding");
            let mut values: Vec<f32> = init.iter().copied().collect();
            values.sort_by(f32::total_cmp);
            values.dedup();
            assert_eq!(values, [0.0, 4.0, 9.0], "k {k} seed {seed}");
        }
        assert!(uses_parallel(100_000, 1_000, 128));
        assert!(!uses_parallel(60_000, 11_316, 128), "SOP: 5 points a class");
        assert!(!uses_parallel(5_000, 5, 64), "cheap");
        assert!(!uses_parallel(5_000, 100, 64), "50 points a class");
    }
}
