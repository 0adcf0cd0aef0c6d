//! Retrieval and clustering metrics for deep metric learning: Recall@K, precision@1,
//! R-precision, MAP@R, NMI and AMI, pytorch-metric-learning's mean average precision and mean
//! reciprocal rank, open-metric-learning's CMC@k, precision@k and map@k, each also per class,
//! from embeddings and class labels.
//!
//! Most users reach this crate through the facade crate `dml` (`dml::eval`, and the `dml eval`
//! command); it has no dependency on libtorch.
//!
//! - [`evaluate`]: one set, each query searched against all the others (leave-one-out), the
//!   protocol of CUB-200, Cars196 and Stanford Online Products.
//! - [`evaluate_with_reference`]: separate query and reference (gallery) sets, as In-Shop.
//! - [`evaluate_including_queries`]: the queries are the first rows of the reference set, each
//!   left out of its own ranking (pml's `ref_includes_query=True` with a larger reference).
//! - [`evaluate_with_progress`]: either, reporting [`Progress`] for long evaluations.
//! - [`EvalConfig`] says what to compute; [`Metrics`] is the result, with
//!   [`Metrics::to_json`] for reports, [`Score`] naming each score and [`PerClass`] holding the
//!   per-class values and their average (pml's `return_per_class`, `avg_of_avgs`).
//! - [`kmeans`], [`normalized_mutual_info`], [`adjusted_mutual_info`]: the clustering side.
//! - [`npy`]: embeddings, labels and verification pairs from NumPy `.npy` files.
//! - [`rerank`]: k-reciprocal re-ranking, α-query expansion and database-side augmentation,
//!   with the scores before and after ([`rerank::evaluate_reranked`]).
//! - [`verification`]: pairs and their ROC, AUC, EER, TAR@FAR, k-fold accuracy and the
//!   threshold to deploy with ([`verification::verify`]).
//!
//! # Definitions
//!
//! For a query with class `y`, let R be the number of references of class `y` (in
//! leave-one-out mode, not counting the query itself), and rank the references by the metric
//! (closest first; at equal distance, lower index first).
//!
//! - **Recall@K** (Song et al. 2016's retrieval recall): 1 if any of the K nearest has class
//!   `y`, else 0. A K larger than the number of candidates is capped at that number.
//! - **precision@1**: 1 if the nearest has class `y` (the same as Recall@1).
//! - **R-precision**: (number of class-`y` items among the R nearest) / R.
//! - **MAP@R** (Musgrave et al. 2020, "A Metric Learning Reality Check"):
//!   `1/R · Σ_{i=1..R} P@i · rel(i)`, where `rel(i)` says whether the i-th nearest has class `y`
//!   and `P@i` is the precision among the i nearest.
//!
//! - **mean average precision** (pml's `mean_average_precision`): `1/R · Σ_{i ≤ D} P@i · rel(i)`
//!   with D the [`EvalConfig::ranking_depth`]: by default the whole ranking (pml's `k=None`),
//!   which is the textbook average precision; at a smaller depth still divided by R, as pml does.
//! - **mean reciprocal rank** (pml's `mean_reciprocal_rank`): 1 / the rank of the first
//!   class-`y` item, 0 when there is none within D.
//! - open-metric-learning's **CMC@k** (1 if a class-`y` item is among the k nearest),
//!   **precision@k** (class-`y` items among the k nearest over `min(k, R)`) and **map@k**
//!   (`Σ_{i ≤ k} P@i · rel(i)` over the number of class-`y` items among the k nearest, 0 if none:
//!   OML 4's definition, neither MAP@R nor pml's mean average precision), k capped at the
//!   number of candidates as OML caps it at what it retrieved.
//!
//! Each is averaged over the queries with R ≥ 1, in `f64`, except OML's three, which OML
//! averages over every query, a query with R = 0 counting 0 (OML's own precision@k is 0/0 = NaN
//! there; dml counts it 0 like the other two). With [`EvalConfig::per_class`] every score is
//! also averaged per class of the queries ([`PerClass`]), and the per-class means averaged with
//! equal weight per class (pml's `avg_of_avgs`). Queries with R = 0 (a class with a
//! single item in leave-one-out mode, or a query class absent from the reference set) can never
//! succeed; like pytorch-metric-learning's `AccuracyCalculator` they are left out of every
//! retrieval score and counted in [`Metrics::n_queries_without_positive`]. If no query has R ≥ 1,
//! [`Error::NoPositives`] is returned rather than NaN.
//!
//! **NMI** clusters the query embeddings with k-means ([`kmeans`]: k-means‖ seeding from
//! [`EvalConfig::seed`], or scikit-learn's greedy k-means++ with
//! [`EvalConfig::kmeans_seeding`]; k = number of distinct query classes) and compares the
//! clusters with the classes ([`normalized_mutual_info`], scikit-learn's definition).
//!
//! # Agreement with pytorch-metric-learning
//!
//! On the same embeddings, precision@1, R-precision and MAP@R match `AccuracyCalculator`
//! (with faiss, `k="max_bin_count"`, default `avg_of_avgs=False`) to 1e-12, and Recall@K
//! matches the same definition computed from faiss' neighbour lists; the fixtures are produced
//! by `scripts/fixtures/dml_eval_reference.py`. On large sets the two can differ in the last
//! digits that depend on single neighbours: both rank in `f32`, and two references at nearly the
//! same distance (within rounding) can come out in either order (on 100,000 × 128 embeddings:
//! identical precision@1, R-precision 1e-7 apart, i.e. one neighbour of one query). Deliberate
//! differences:
//!
//! - Ties at exactly equal distance are broken by lower reference index; faiss' order among
//!   ties is unspecified. Scores can differ only when tied items straddle a cut-off.
//! - The query is left out by index, not by position in a list that faiss returned, so a
//!   duplicate of the query at distance 0 stays a valid neighbour.
//! - k-means is scikit-learn's algorithm (greedy k-means++ seeding, Lloyd to its tolerance),
//!   not faiss' (random initial centroids, 20 iterations), so NMI can differ on data whose
//!   clusters are not clear-cut; over five seeds it lies inside or above scikit-learn's range
//!   on generated sets of 10 to 1,000 classes (docs/clustering.md). The NMI *function* agrees
//!   with scikit-learn to 1e-12.
//!
//! pml's `mean_average_precision`, `mean_reciprocal_rank`, per-class lists and `avg_of_avgs`
//! (at `k=None`, `"max_bin_count"` and a number) and OML's `calc_retrieval_metrics` (overall and
//! per category) agree with dml's on one ranking to 1e-12 (float64 in pml) or 1e-6 (pml's
//! reciprocal rank and all of OML's scores are float32), on fixtures with exact ties and lone
//! queries (`scripts/fixtures/dml_eval_ranking.py`). docs/evaluation.md says which score
//! answers which question and where the libraries' same-named scores differ.
//!
//! # Memory and time
//!
//! Queries are processed in blocks through dml-kernels' blocked exact k-NN, so the memory in use
//! is O(block × k) for the neighbour lists, never O(n²): 1,000,000 × 128 embeddings in 10,000
//! classes evaluate within about 1 GB. k is `max(max K, max R)`; for the R-based metrics on
//! classes of thousands of items (R = 6,999 on half of Fashion-MNIST) the k-NN keeps each
//! query's candidates in a buffer cut back by selection, so the cost is the distance GEMM plus a
//! linear scan and an O(R log R) sort per query, not O(n·R) (docs/benchmarks.md has the
//! timings). A leave-one-out set of n items (1,024 or more, of any dimension) with an R of at
//! least 64 and R² ≥ n/4 (from about 100 at 35,000 items, where sorted buffers cost more) whose
//! candidate lists would fit 4 GiB all
//! at once (about `n · R · 6` bytes, plus a copy of the items: 2.0 GB for 35,000 items of 784
//! dimensions in classes of 7,000; only the lists of the blocks in hand are held: the
//! evaluation added 407 MiB to the process on clustered points stored class by class, 567 MiB
//! on the raw Fashion-MNIST images, whose neighbours are spread over the set) is searched
//! through the symmetry of its
//! distances instead ([`dml_kernels::knn_self_fold`]: each distance tile computed once for both
//! of its points, half the GEMM work, and each query scored as soon as its candidates are
//! sorted, so no neighbour list is written out), the same scores bit for bit.
//! [`EvalConfig::r_metrics`] switches R-precision and MAP@R off, and k is then the
//! largest K. The scores over the whole ranking (mean average precision and mean reciprocal
//! rank at the default depth) need the rank of every same-class item instead: the query ×
//! reference distances are then streamed in bands of 64 queries (dml-kernels'
//! [`pairwise_bands`](dml_kernels::pairwise_bands)), and each query's positives are ranked
//! among its row in O(n + R log R), so the cost is the full distance GEMM and memory stays
//! O(threads · 64 · n).
//!
//! # Example
//!
//! ```
//! use dml_eval::{EvalConfig, evaluate};
//! use dml_kernels::Metric;
//! use ndarray::array;
//!
//! # fn main() -> dml_eval::Result<()> {
//! // Two tight classes far apart: every metric is perfect.
//! let x = array![[0.0f32, 0.0], [0.1, 0.0], [0.0, 0.1], [5.0, 5.0], [5.1, 5.0], [5.0, 5.1]];
//! let y = [0, 0, 0, 1, 1, 1];
//! let m = evaluate(x.view(), &y, Metric::Euclidean, &EvalConfig::default())?;
//! assert_eq!(m.recall_at_k(1), Some(1.0));
//! assert_eq!(m.map_at_r, Some(1.0));
//! assert!((m.nmi.unwrap_or(0.0) - 1.0).abs() < 1e-12);
//! println!("{}", m.to_json());
//! # Ok(()) }
//! ```

#![warn(missing_docs)]

mod cluster;
mod config;
mod error;
mod metrics;
pub mod npy;
mod ranks;
pub mod rerank;
mod retrieval;
mod search;
pub mod verification;

use ndarray::{Array2, ArrayView2, Axis, s};
use rayon::prelude::*;

pub use crate::{
    cluster::{
        KMeans, KMeansParams, Seeding, adjusted_mutual_info, kmeans, normalized_mutual_info,
    },
    config::{EvalConfig, RankingDepth},
    error::{Error, Result},
    metrics::{ClassScores, Metrics, PerClass, Score},
};
use dml_kernels::Metric;

use crate::retrieval::{Accumulator, Plan, class_counts};

/// Upper bound on neighbour-list entries held at once (indices and scores of one block of
/// queries): 4 Mi entries, about 32 MiB.
const NEIGHBOUR_BUDGET: usize = 1 << 22;
/// Neighbour-list entries up to which a leave-one-out set is searched in one block: 32 Mi
/// entries, 256 MiB of indices and scores (100,000 items at k = 100 take 80 MiB).
const WHOLE_SET_BUDGET: usize = 1 << 25;
/// Bytes of candidate lists up to which a leave-one-out set whose neighbours are selected from
/// whole rows (a large R) is searched by the symmetry of its distances
/// ([`dml_kernels::knn_self_fold`], half the GEMM work): 4 GiB, against
/// [`dml_kernels::knn_self_fold_memory`]'s bound (every list at once, whatever the order of
/// the items, and the search's copy of the items). 35,000 items of 784 dimensions in classes
/// of 7,000 are bounded by 2.0 GB; the evaluation adds 407 MiB to the process on clustered
/// points stored class by class and 567 MiB on the raw Fashion-MNIST images, measured
/// (pytorch-metric-learning with faiss adds 14.8 GB there); larger sets
/// stream blocks of queries through the full search in bounded memory.
const SYMMETRIC_BUDGET: usize = 4 << 30;
/// Queries scored per parallel task; a fixed size keeps the f64 sums deterministic.
const SCORE_CHUNK: usize = 64;

/// Evaluates one set of embeddings against itself: every item is a query, searched against all
/// the other items (the query itself is left out by index).
///
/// `embeddings` is `n × d` (row i has class `labels[i]`). See the [crate docs](crate) for the
/// definitions and [`evaluate_with_reference`] for a separate gallery.
pub fn evaluate(
    embeddings: ArrayView2<'_, f32>,
    labels: &[u32],
    metric: Metric,
    cfg: &EvalConfig,
) -> Result<Metrics> {
    evaluate_with_progress(embeddings, labels, None, metric, cfg, &mut |_| {})
}

/// Evaluates `query` against a separate `reference` set (a gallery): each query's neighbours are
/// searched among the references only.
///
/// NMI/AMI cluster the query embeddings.
pub fn evaluate_with_reference(
    query: ArrayView2<'_, f32>,
    query_labels: &[u32],
    reference: ArrayView2<'_, f32>,
    reference_labels: &[u32],
    metric: Metric,
    cfg: &EvalConfig,
) -> Result<Metrics> {
    evaluate_with_progress(
        query,
        query_labels,
        Some((reference, reference_labels)),
        metric,
        cfg,
        &mut |_| {},
    )
}

/// Evaluates the first `n_queries` rows of `reference` as queries, each searched against all of
/// `reference` but its own row: pytorch-metric-learning's `ref_includes_query=True` when the
/// reference set holds the queries followed by further items (a gallery that includes the
/// query set). With `n_queries = reference.nrows()` it is [`evaluate`].
///
/// A query's R is the number of items of its class in `reference` other than itself; NMI/AMI
/// cluster the queries. The search and scoring are [`evaluate`]'s, leaving each query out by
/// index.
///
/// # Errors
/// As [`evaluate`]; [`Error::Empty`] for `n_queries = 0` and [`Error::QueryRows`] when
/// `n_queries` exceeds the reference's rows.
///
/// ```
/// use dml_eval::{EvalConfig, evaluate_including_queries};
/// use dml_kernels::Metric;
/// use ndarray::array;
///
/// // Two queries (rows 0 and 1) and a gallery that also holds one more item of each class.
/// let r = array![[0.0f32], [5.0], [0.2], [5.3]];
/// let cfg = EvalConfig { nmi: false, ..EvalConfig::default() };
/// let m = evaluate_including_queries(r.view(), &[0, 1, 0, 1], 2, Metric::Euclidean, &cfg)?;
/// assert_eq!((m.n_queries, m.precision_at_1), (2, 1.0));
/// # Ok::<(), dml_eval::Error>(())
/// ```
pub fn evaluate_including_queries(
    reference: ArrayView2<'_, f32>,
    reference_labels: &[u32],
    n_queries: usize,
    metric: Metric,
    cfg: &EvalConfig,
) -> Result<Metrics> {
    cfg.validate()?;
    check_set(reference, reference_labels, "reference")?;
    if n_queries == 0 {
        return Err(Error::Empty("query"));
    }
    if n_queries > reference.nrows() {
        return Err(Error::QueryRows {
            n_queries,
            n_rows: reference.nrows(),
        });
    }
    if reference.nrows() < 2 {
        return Err(Error::TooFewItems(reference.nrows()));
    }
    // `run`'s leave-one-out mode already reads the queries as rows `0..n` of the reference
    // (the k-NN leaves row i out for query i, R subtracts the query); only the rows differ.
    run(
        reference.slice(s![..n_queries, ..]),
        &reference_labels[..n_queries],
        reference,
        reference_labels,
        true,
        true,
        metric,
        cfg,
        NEIGHBOUR_BUDGET,
        &mut |_| {},
    )
}

/// Where a running evaluation has got to: what [`evaluate_with_progress`] reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Progress {
    /// The neighbour search has scored `done` of `total` queries, each searched to depth `k`
    /// (the largest Recall@K, or the largest R when the R-based metrics are on).
    Searched {
        /// Queries scored so far.
        done: usize,
        /// All queries.
        total: usize,
        /// Neighbours retrieved per query.
        k: usize,
    },
    /// The search is done; k-means for NMI/AMI starts (only when they are requested).
    Clustering,
}

/// [`evaluate`] (with `reference = None`) or [`evaluate_with_reference`], reporting progress:
/// `on_progress` is called on the calling thread after each block of queries and before
/// clustering, for progress bars and timings of long evaluations.
///
/// ```
/// use dml_eval::{EvalConfig, Progress, evaluate_with_progress};
/// use dml_kernels::Metric;
/// use ndarray::array;
///
/// let x = array![[0.0f32], [0.1], [5.0], [5.1]];
/// let mut depth = 0;
/// let m = evaluate_with_progress(x.view(), &[0, 0, 1, 1], None, Metric::Euclidean,
///     &EvalConfig::default(), &mut |p| {
///         if let Progress::Searched { k, .. } = p { depth = k; }
///     })?;
/// assert_eq!(m.map_at_r, Some(1.0));
/// assert_eq!(depth, 3); // the largest K (8) capped at the 3 other items
/// # Ok::<(), dml_eval::Error>(())
/// ```
pub fn evaluate_with_progress(
    query: ArrayView2<'_, f32>,
    query_labels: &[u32],
    reference: Option<(ArrayView2<'_, f32>, &[u32])>,
    metric: Metric,
    cfg: &EvalConfig,
    on_progress: &mut dyn FnMut(Progress),
) -> Result<Metrics> {
    cfg.validate()?;
    let leave_one_out = reference.is_none();
    let (reference, reference_labels) = match &reference {
        None => {
            check_set(query, query_labels, "embeddings")?;
            if query.nrows() < 2 {
                return Err(Error::TooFewItems(query.nrows()));
            }
            (query.view(), query_labels)
        }
        Some((reference, reference_labels)) => {
            let reference_labels: &[u32] = reference_labels;
            check_set(query, query_labels, "query")?;
            check_set(reference.view(), reference_labels, "reference")?;
            if query.ncols() != reference.ncols() {
                return Err(Error::DimensionMismatch {
                    query_dim: query.ncols(),
                    reference_dim: reference.ncols(),
                });
            }
            (reference.view(), reference_labels)
        }
    };
    run(
        query,
        query_labels,
        reference,
        reference_labels,
        leave_one_out,
        true,
        metric,
        cfg,
        NEIGHBOUR_BUDGET,
        on_progress,
    )
}

pub(crate) fn check_set(x: ArrayView2<'_, f32>, labels: &[u32], what: &'static str) -> Result<()> {
    if x.nrows() != labels.len() {
        return Err(Error::LabelCount {
            what,
            n_rows: x.nrows(),
            n_labels: labels.len(),
        });
    }
    if x.nrows() == 0 {
        return Err(Error::Empty(what));
    }
    if x.ncols() == 0 {
        return Err(Error::ZeroDim(what));
    }
    cluster::check_finite(x, what)
}

#[allow(clippy::too_many_arguments)]
fn run(
    query: ArrayView2<'_, f32>,
    query_labels: &[u32],
    reference: ArrayView2<'_, f32>,
    reference_labels: &[u32],
    leave_one_out: bool,
    same_vectors: bool,
    metric: Metric,
    cfg: &EvalConfig,
    neighbour_budget: usize,
    on_progress: &mut dyn FnMut(Progress),
) -> Result<Metrics> {
    let n_query = query.nrows();
    // Candidates per query, and R per class.
    let (plan, r_of) = plan_for(query_labels, reference_labels, leave_one_out, cfg);
    let acc = if plan.whole_ranking() {
        score_whole_rankings(
            (query, query_labels),
            (reference, reference_labels),
            leave_one_out,
            metric,
            &plan,
            &r_of,
            on_progress,
        )?
    } else {
        score_neighbours(
            (query, query_labels),
            (reference, reference_labels),
            leave_one_out,
            same_vectors,
            metric,
            &plan,
            &r_of,
            neighbour_budget,
            on_progress,
        )?
    };
    let mut m = into_metrics(&plan, &acc, n_query)?;

    let (nmi, ami) = if cfg.nmi || cfg.ami {
        on_progress(Progress::Clustering);
        let n_classes = class_counts(query_labels).len();
        let clusters = kmeans(
            query,
            n_classes,
            &KMeansParams {
                restarts: cfg.kmeans_restarts,
                max_iter: cfg.kmeans_max_iter,
                seed: cfg.seed,
                seeding: cfg.kmeans_seeding,
            },
        )?;
        let nmi = cfg
            .nmi
            .then(|| normalized_mutual_info(query_labels, &clusters.assignments))
            .transpose()?;
        let ami = cfg
            .ami
            .then(|| adjusted_mutual_info(query_labels, &clusters.assignments))
            .transpose()?;
        (nmi, ami)
    } else {
        (None, None)
    };

    m.nmi = nmi;
    m.ami = ami;
    Ok(m)
}

/// The retrieval part of [`Metrics`] from the accumulated scores.
fn into_metrics(plan: &Plan, acc: &Accumulator, n_query: usize) -> Result<Metrics> {
    if acc.n_scored() == 0 {
        return Err(Error::NoPositives { n_queries: n_query });
    }
    let mut m = Metrics {
        per_class: acc.finish_per_class(plan),
        n_queries: n_query,
        n_queries_without_positive: acc.n_without_positive() as usize,
        ..Metrics::default()
    };
    for (score, v) in acc.finish(plan) {
        match score {
            Score::RecallAt(k) => m.recall_at.push((k, v)),
            Score::PrecisionAt1 => m.precision_at_1 = v,
            Score::RPrecision => m.r_precision = Some(v),
            Score::MapAtR => m.map_at_r = Some(v),
            Score::MeanAveragePrecision => m.mean_average_precision = Some(v),
            Score::MeanReciprocalRank => m.mean_reciprocal_rank = Some(v),
            Score::CmcAt(k) => m.cmc_at.push((k, v)),
            Score::OmlPrecisionAt(k) => m.oml_precision_at.push((k, v)),
            Score::OmlMapAt(k) => m.oml_map_at.push((k, v)),
            Score::Nmi | Score::Ami => {}
        }
    }
    Ok(m)
}

/// The scoring plan of an evaluation: the number of candidates per query and the largest R.
fn plan_for(
    query_labels: &[u32],
    reference_labels: &[u32],
    leave_one_out: bool,
    cfg: &EvalConfig,
) -> (Plan, impl Fn(u32) -> usize + Sync) {
    let self_count = usize::from(leave_one_out);
    let n_candidates = reference_labels.len() - self_count;
    let ref_counts = class_counts(reference_labels);
    let r_of = move |label: u32| -> usize {
        ref_counts
            .get(&label)
            .map_or(0, |&c| c.saturating_sub(self_count))
    };
    let max_r = query_labels.iter().map(|&l| r_of(l)).max().unwrap_or(0);
    (Plan::new(cfg, n_candidates, max_r), r_of)
}

/// How deep each query's ranked list must be for the scores of `cfg`.
pub(crate) fn ranked_depth(
    query_labels: &[u32],
    reference_labels: &[u32],
    leave_one_out: bool,
    cfg: &EvalConfig,
) -> Result<usize> {
    cfg.validate()?;
    Ok(plan_for(query_labels, reference_labels, leave_one_out, cfg)
        .0
        .depth)
}

/// The retrieval scores of given ranked lists (reference indices, closest first, at least
/// [`ranked_depth`] long where there are that many candidates), in fixed chunks as
/// [`evaluate`] sums them.
pub(crate) fn score_lists(
    query_labels: &[u32],
    reference_labels: &[u32],
    leave_one_out: bool,
    cfg: &EvalConfig,
    lists: &[Vec<u32>],
) -> Result<Metrics> {
    let (plan, r_of) = plan_for(query_labels, reference_labels, leave_one_out, cfg);
    let accs: Vec<Accumulator> = lists
        .par_chunks(SCORE_CHUNK)
        .enumerate()
        .map(|(c, chunk)| {
            let mut acc = Accumulator::new(&plan);
            let mut hits = Vec::new();
            for (i, list) in chunk.iter().enumerate() {
                let label = query_labels[c * SCORE_CHUNK + i];
                let labels = list.iter().map(|&j| reference_labels[j as usize]);
                acc.add_neighbours(&plan, label, r_of(label), labels, &mut hits);
            }
            acc
        })
        .collect();
    let acc = accs
        .into_iter()
        .fold(Accumulator::new(&plan), Accumulator::merge);
    into_metrics(&plan, &acc, query_labels.len())
}

/// Leave-one-out evaluation where query `i`'s vector differs from reference `i`'s (expanded
/// queries against augmented references): query `i` is searched among every reference but
/// reference `i`; both sets carry `labels`.
pub(crate) fn evaluate_leave_one_out_against(
    query: ArrayView2<'_, f32>,
    reference: ArrayView2<'_, f32>,
    labels: &[u32],
    metric: Metric,
    cfg: &EvalConfig,
) -> Result<Metrics> {
    cfg.validate()?;
    check_set(query, labels, "query")?;
    check_set(reference, labels, "reference")?;
    if query.nrows() < 2 {
        return Err(Error::TooFewItems(query.nrows()));
    }
    run(
        query,
        labels,
        reference,
        labels,
        true,
        false,
        metric,
        cfg,
        NEIGHBOUR_BUDGET,
        &mut |_| {},
    )
}

/// Scores every query from its first `plan.depth` neighbours, streaming blocks of queries
/// through dml-kernels' k-NN.
#[allow(clippy::too_many_arguments)]
fn score_neighbours(
    (query, query_labels): (ArrayView2<'_, f32>, &[u32]),
    (reference, reference_labels): (ArrayView2<'_, f32>, &[u32]),
    leave_one_out: bool,
    same_vectors: bool,
    metric: Metric,
    plan: &Plan,
    r_of: &(dyn Fn(u32) -> usize + Sync),
    neighbour_budget: usize,
    on_progress: &mut dyn FnMut(Progress),
) -> Result<Accumulator> {
    let n_query = query.nrows();
    let k = plan.depth;
    // Stream blocks of queries through the k-NN search; each block's neighbour lists are turned
    // into per-query scores and dropped before the next block.
    // At least a few rows per thread, so that a huge k (classes of tens of thousands of items)
    // still keeps every core busy inside the k-NN; memory is then O(threads · 64 · k).
    let min_rows = if neighbour_budget >= NEIGHBOUR_BUDGET {
        64 * rayon::current_num_threads()
    } else {
        1 // tests shrink the budget to exercise tiny blocks
    };
    // Whole chunks of SCORE_CHUNK queries per block: the chunks are then the same whatever the
    // block size, and so are the bits of the f64 sums.
    // A leave-one-out set whose neighbour lists fit WHOLE_SET_BUDGET is searched in one call,
    // which lets dml-kernels use the symmetry of its distances (half the GEMM work).
    let full_budget = leave_one_out && same_vectors && neighbour_budget >= NEIGHBOUR_BUDGET;
    // A large k over a set whose candidate lists fit SYMMETRIC_BUDGET: the symmetric
    // selection, block by block.
    if full_budget
        && dml_kernels::knn_self_fold_memory(n_query, query.ncols(), k)
            .is_some_and(|b| b <= SYMMETRIC_BUDGET)
    {
        let mut acc = Accumulator::new(plan);
        // Each row is scored on the worker that sorted its neighbours, in chunks of
        // SCORE_CHUNK rows merged in order: the same chunks, and bits, as score_block's.
        dml_kernels::knn_self_fold(
            metric,
            query,
            k,
            SCORE_CHUNK,
            &|| (Accumulator::new(plan), Vec::new()),
            &|(chunk_acc, hits), q, nn| {
                let labels = (query_labels, reference_labels);
                add_query(plan, labels, r_of, (chunk_acc, hits), q, nn.iter());
            },
            &mut |done, chunks| {
                let before = std::mem::replace(&mut acc, Accumulator::new(plan));
                acc = chunks
                    .into_iter()
                    .map(|(a, _)| a)
                    .fold(before, Accumulator::merge);
                on_progress(Progress::Searched {
                    done,
                    total: n_query,
                    k,
                });
            },
        )?;
        return Ok(acc);
    }
    let whole = full_budget && n_query.saturating_mul(k + 1) <= WHOLE_SET_BUDGET;
    let block_rows = if whole {
        n_query
    } else {
        neighbour_budget / (k + 1)
    }
    .max(min_rows)
    .clamp(1, n_query)
    .next_multiple_of(SCORE_CHUNK);
    let mut acc = Accumulator::new(plan);
    for start in (0..n_query).step_by(block_rows) {
        let end = (start + block_rows).min(n_query);
        let block = query.slice(s![start..end, ..]);
        let self_offset = leave_one_out.then_some(start);
        let idx =
            search::neighbour_indices(metric, block, reference, k, self_offset, same_vectors)?;
        let chunk_accs = score_block(plan, query_labels, reference_labels, r_of, start, &idx);
        acc = chunk_accs.into_iter().fold(acc, Accumulator::merge);
        on_progress(Progress::Searched {
            done: end,
            total: n_query,
            k,
        });
    }
    Ok(acc)
}

/// The scores of the queries `start..start + idx.nrows()` from their neighbour lists `idx`, one
/// accumulator per chunk of [`SCORE_CHUNK`] queries. `start` is a multiple of the chunk size:
/// fixed chunks, each summed in order and merged in order, make the f64 sums (R-precision,
/// MAP@R) the same bits on every run, thread count and block size, unlike a work-stealing fold.
fn score_block(
    plan: &Plan,
    query_labels: &[u32],
    reference_labels: &[u32],
    r_of: &(dyn Fn(u32) -> usize + Sync),
    start: usize,
    idx: &Array2<u32>,
) -> Vec<Accumulator> {
    debug_assert!(
        start.is_multiple_of(SCORE_CHUNK),
        "blocks start at whole chunks"
    );
    idx.axis_chunks_iter(Axis(0), SCORE_CHUNK)
        .into_par_iter()
        .enumerate()
        .map(|(c, chunk)| {
            let mut chunk_acc = Accumulator::new(plan);
            let mut hits = Vec::new();
            for (i, row) in chunk.outer_iter().enumerate() {
                let q = start + c * SCORE_CHUNK + i;
                let labels = (query_labels, reference_labels);
                add_query(
                    plan,
                    labels,
                    r_of,
                    (&mut chunk_acc, &mut hits),
                    q,
                    row.iter(),
                );
            }
            chunk_acc
        })
        .collect()
}

/// Adds query `q` to `acc` from the indices of its nearest references (closest first);
/// `hits` is a buffer reused from query to query.
fn add_query<'a>(
    plan: &Plan,
    (query_labels, reference_labels): (&[u32], &[u32]),
    r_of: &(dyn Fn(u32) -> usize + Sync),
    (acc, hits): (&mut Accumulator, &mut Vec<u32>),
    q: usize,
    neighbours: impl ExactSizeIterator<Item = &'a u32>,
) {
    let label = query_labels[q];
    let labels = neighbours.map(|&j| reference_labels[j as usize]);
    acc.add_neighbours(plan, label, r_of(label), labels, hits);
}

/// Scores every query from the positions of all its positives in its whole ranking: the
/// query × reference matrix streamed in bands of [`SCORE_CHUNK`] rows (never held whole), each
/// row counted into ranks by [`ranks::hit_ranks`].
fn score_whole_rankings(
    (query, query_labels): (ArrayView2<'_, f32>, &[u32]),
    (reference, reference_labels): (ArrayView2<'_, f32>, &[u32]),
    leave_one_out: bool,
    metric: Metric,
    plan: &Plan,
    r_of: &(dyn Fn(u32) -> usize + Sync),
    on_progress: &mut dyn FnMut(Progress),
) -> Result<Accumulator> {
    let n_query = query.nrows();
    // About twenty progress reports, each block a whole number of chunks (so the chunks, and
    // the bits of the sums, do not depend on the block size).
    let block_rows = n_query
        .div_ceil(20)
        .max(4 * SCORE_CHUNK * rayon::current_num_threads())
        .next_multiple_of(SCORE_CHUNK);
    let mut acc = Accumulator::new(plan);
    for start in (0..n_query).step_by(block_rows) {
        let end = (start + block_rows).min(n_query);
        let block = query.slice(s![start..end, ..]);
        let chunk_accs =
            dml_kernels::pairwise_bands(metric, block, reference, SCORE_CHUNK, |r0, band| {
                let mut chunk_acc = Accumulator::new(plan);
                let mut scratch = ranks::Scratch::default();
                let mut hits = Vec::new();
                for (i, row) in band.outer_iter().enumerate() {
                    let q = start + r0 + i;
                    let label = query_labels[q];
                    let r = r_of(label);
                    if r > 0 {
                        let values = row.to_slice().expect("bands are contiguous rows");
                        let skip = leave_one_out.then_some(q);
                        ranks::hit_ranks(
                            metric,
                            values,
                            reference_labels,
                            label,
                            skip,
                            &mut scratch,
                            &mut hits,
                        );
                    }
                    chunk_acc.add(plan, label, r, &hits);
                }
                chunk_acc
            })?;
        acc = chunk_accs.into_iter().fold(acc, Accumulator::merge);
        on_progress(Progress::Searched {
            done: end,
            total: n_query,
            k: plan.depth,
        });
    }
    Ok(acc)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::Array2;
    use rand::{Rng, SeedableRng};

    /// Streaming through tiny blocks gives exactly the scores of one block, in both modes.
    #[test]
    fn block_size_does_not_change_the_scores() {
        // 9 small classes (k = 11, sorted top-k buffers) and 2 big ones (k ~ 150, selection).
        for (n, n_classes) in [(97, 9), (300, 2)] {
            check_blocking(n, n_classes);
        }
    }

    /// The symmetric large-k search (sets of 1,024 items or more whose neighbours are selected
    /// from whole rows) gives exactly the scores of blocks of queries streamed through the full
    /// search, on both sides of the switch-over, with many equal distances.
    #[test]
    fn symmetric_large_k_path_equals_streaming() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(11);
        for n in [1_023, 1_024, 1_100] {
            // Small integer coordinates: ties everywhere.
            let x = Array2::from_shape_fn((n, 16), |_| rng.random_range(0..4) as f32);
            let y: Vec<u32> = (0..n).map(|i| u32::from(i % 3 == 0)).collect();
            let cfg = EvalConfig {
                recall_at: vec![1, 10],
                nmi: false,
                ..EvalConfig::default()
            };
            let k = ranked_depth(&y, &y, true, &cfg).expect("depth");
            let symmetric = dml_kernels::knn_self_fold_memory(n, 16, k);
            assert_eq!(symmetric.is_some(), n >= 1_024, "n = {n}, k = {k}");
            for metric in [Metric::Euclidean, Metric::Cosine] {
                let eval = |budget| {
                    let mut blocks = 0;
                    let m = run(
                        x.view(),
                        &y,
                        x.view(),
                        &y,
                        true,
                        true,
                        metric,
                        &cfg,
                        budget,
                        &mut |p| blocks += usize::from(matches!(p, Progress::Searched { .. })),
                    )
                    .expect("evaluate");
                    (m, blocks)
                };
                let (full, blocks) = eval(NEIGHBOUR_BUDGET);
                if symmetric.is_some() {
                    // A report per block after the two sample blocks (one for the sample alone).
                    assert_eq!(blocks, n.div_ceil(512).saturating_sub(2).max(1), "n = {n}");
                }
                let (streamed, _) = eval(50_000);
                assert_eq!(full, streamed, "{metric}, n = {n}");
            }
        }
    }

    fn check_blocking(n: usize, n_classes: usize) {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);
        let x = Array2::from_shape_fn((n, 6), |_| rng.random_range(-1.0f32..1.0));
        let y: Vec<u32> = (0..n).map(|i| (i % n_classes) as u32).collect();
        let cfg = EvalConfig {
            recall_at: vec![1, 3, 10],
            nmi: false,
            ..EvalConfig::default()
        };
        for leave_one_out in [true, false] {
            let (r, rl) = if leave_one_out {
                (x.view(), &y[..])
            } else {
                (x.slice(s![(n * 2 / 5).., ..]), &y[(n * 2 / 5)..])
            };
            let q = x.slice(s![..(n * 3 / 5), ..]);
            let q = if leave_one_out { x.view() } else { q };
            let ql = if leave_one_out {
                &y[..]
            } else {
                &y[..(n * 3 / 5)]
            };
            let whole = run(
                q,
                ql,
                r,
                rl,
                leave_one_out,
                true,
                Metric::Euclidean,
                &cfg,
                usize::MAX,
                &mut |_| {},
            )
            .expect("whole");
            for budget in [1, 20, 200] {
                let mut blocks = 0;
                let blocked = run(
                    q,
                    ql,
                    r,
                    rl,
                    leave_one_out,
                    true,
                    Metric::Euclidean,
                    &cfg,
                    budget,
                    &mut |p| blocks += usize::from(matches!(p, Progress::Searched { .. })),
                )
                .expect("blocked");
                assert_eq!(blocks, q.nrows().div_ceil(SCORE_CHUNK), "budget {budget}");
                // The same bits: the f64 sums run over the same chunks in the same order.
                assert_eq!(blocked, whole);
            }
        }
    }
}
