//! Re-ranking, the post-processing retrieval systems ship: k-reciprocal re-ranking (Zhong et
//! al., CVPR 2017), α-query expansion and α-database-side augmentation (Radenović et al.,
//! TPAMI 2018; Arandjelović & Zisserman 2012), each on the exact k-NN graph of dml-kernels,
//! never on an N × N matrix, and evaluated with the same scores as the plain ranking
//! ([`evaluate_reranked`] reports both).
//!
//! # k-reciprocal re-ranking
//!
//! Over all items A (the queries and the references; in leave-one-out mode the one set), with
//! d the squared Euclidean distance (for [`Metric::Cosine`], that of the L2-normalised
//! embeddings, `2 − 2 cos`) and N(i, k) the k + 1 nearest items of i, i itself first:
//!
//! ```text
//! R(i, k)  = { j ∈ N(i, k) : i ∈ N(j, k) }                               k-reciprocal neighbours
//! R*(i)    = R(i, k1) ∪ R(j, ⌊k1/2⌉) for each j ∈ R(i, k1) with     (⌊·⌉: half to even)
//!            |R(j, ⌊k1/2⌉) ∩ R(i, k1)| > ⅔ |R(j, ⌊k1/2⌉)|                    expansion
//! V_i[j]   = exp(−d(i, j)) / Σ_{m ∈ R*(i)} exp(−d(i, m))  for j ∈ R*(i), else 0
//! V_i      ← mean of V_m over m ∈ N(i, k2 − 1)   (when k2 > 1)            local query expansion
//! d_J(i,j) = 1 − Σ_m min(V_i[m], V_j[m]) / Σ_m max(V_i[m], V_j[m])          Jaccard distance
//! d*(i,j)  = (1 − λ) d_J(i, j) + λ d(i, j)
//! ```
//!
//! References are ranked by d* (ties: lower index). Defaults k1 = 20, k2 = 6, λ = 0.3, the
//! paper's. Zhong et al.'s released code also divides each column of the distance matrix by
//! its maximum before anything else, which needs all N² distances and changes every item's
//! neighbours; dml follows the paper's formulas on the plain distance instead, so its figures
//! can differ from that code's. A reference that shares no support with the query has d_J = 1,
//! so its d* is `(1 − λ) + λ d`: the exact re-ranked list to depth D is the merge of the
//! references that do share support (found through an inverted index of the V's) with the
//! first references of the plain k-NN list.
//!
//! # α-query expansion and α-database-side augmentation
//!
//! On L2-normalised embeddings, with s the cosine similarity and n_1 … n_k the k nearest
//! references of x (itself excluded):
//!
//! ```text
//! x' = normalise( x + Σ_{i=1..k} max(0, s(x, n_i))^α · n_i )
//! ```
//!
//! α-QE replaces each query by x' (its neighbours among the references), αDBA each reference
//! (its neighbours among the other references); both at once apply DBA first and expand the
//! queries against the augmented references. α = 0 gives the plain average of the k + 1
//! vectors (average query expansion). Defaults k = 2, α = 3 (for QE, Radenović et al.'s
//! choice for their networks).

use dml_kernels::{Metric, NormedRows};
use ndarray::{Array2, ArrayView2, Axis};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::{Error, EvalConfig, Metrics, Result};

/// Which re-ranking [`evaluate_reranked`] applies.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Rerank {
    /// k-reciprocal re-ranking with Jaccard distance (Zhong et al. 2017).
    KReciprocal {
        /// Neighbours for the k-reciprocal sets (k1). Default 20.
        #[serde(default = "default_k1")]
        k1: usize,
        /// Neighbours averaged in the local query expansion (k2; 1 switches it off).
        /// Default 6.
        #[serde(default = "default_k2")]
        k2: usize,
        /// Weight of the original distance (λ). Default 0.3.
        #[serde(default = "default_lambda")]
        lambda: f64,
    },
    /// α-query expansion of the queries, α-database-side augmentation of the references, or
    /// both.
    Expansion {
        /// Neighbours added to each vector (k). Default 2.
        #[serde(default = "default_qe_k")]
        k: usize,
        /// Exponent of the similarity weights (α). Default 3.
        #[serde(default = "default_alpha")]
        alpha: f64,
        /// Expand the queries (α-QE). Default true.
        #[serde(default = "yes")]
        query: bool,
        /// Augment the references (αDBA). Default false.
        #[serde(default)]
        database: bool,
    },
}

fn default_k1() -> usize {
    20
}
fn default_k2() -> usize {
    6
}
fn default_lambda() -> f64 {
    0.3
}
fn default_qe_k() -> usize {
    2
}
fn default_alpha() -> f64 {
    3.0
}
fn yes() -> bool {
    true
}

impl Rerank {
    /// k-reciprocal re-ranking with the paper's k1 = 20, k2 = 6, λ = 0.3.
    pub fn k_reciprocal() -> Self {
        Rerank::KReciprocal {
            k1: 20,
            k2: 6,
            lambda: 0.3,
        }
    }

    /// α-query expansion with k = 2, α = 3.
    pub fn query_expansion() -> Self {
        Rerank::Expansion {
            k: 2,
            alpha: 3.0,
            query: true,
            database: false,
        }
    }

    fn validate(&self, metric: Metric) -> Result<()> {
        let bad = |reason: String| Err(Error::Rerank(reason));
        match *self {
            Rerank::KReciprocal { k1, k2, lambda } => {
                if k1 == 0 || k2 == 0 {
                    return bad(format!(
                        "k1 and k2 must be at least 1, got k1 = {k1}, k2 = {k2}"
                    ));
                }
                if !(0.0..=1.0).contains(&lambda) {
                    return bad(format!("lambda must be in [0, 1], got {lambda}"));
                }
                if metric == Metric::Dot {
                    return bad(
                        "k-reciprocal re-ranking needs a distance: use euclidean, squared_euclidean or cosine, not dot".into(),
                    );
                }
            }
            Rerank::Expansion {
                k,
                alpha,
                query,
                database,
            } => {
                if k == 0 {
                    return bad("k must be at least 1".into());
                }
                if !alpha.is_finite() || alpha < 0.0 {
                    return bad(format!("alpha must be a finite number ≥ 0, got {alpha}"));
                }
                if !query && !database {
                    return bad(
                        "query expansion with neither query nor database switched on".into(),
                    );
                }
            }
        }
        Ok(())
    }
}

/// Scores before and after a re-ranking ([`evaluate_reranked`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Reranked {
    /// The plain ranking's scores.
    pub before: Metrics,
    /// The re-ranked ranking's scores.
    pub after: Metrics,
}

/// Evaluates `query` against `reference` (`None`: leave-one-out on `query`) as
/// [`evaluate_with_progress`](crate::evaluate_with_progress) does, then again after `rerank`.
///
/// k-reciprocal re-ranking re-orders each query's list to the depth the scores need, so the
/// scores over the whole ranking ([`EvalConfig::mean_average_precision`] and
/// [`EvalConfig::mean_reciprocal_rank`] at [`RankingDepth::Whole`](crate::RankingDepth)) are
/// refused with it (give them a depth); NMI/AMI are those of the query embeddings, unchanged by
/// a re-ranking of lists, and computed once. Query expansion and database augmentation change
/// the embeddings, so every score is computed again on the new ones (NMI/AMI on the new
/// queries).
///
/// # Errors
/// As [`evaluate`](crate::evaluate), and [`Error::Rerank`] for bad parameters.
pub fn evaluate_reranked(
    query: ArrayView2<'_, f32>,
    query_labels: &[u32],
    reference: Option<(ArrayView2<'_, f32>, &[u32])>,
    metric: Metric,
    cfg: &EvalConfig,
    rerank: &Rerank,
) -> Result<Reranked> {
    rerank.validate(metric)?;
    check_depth(cfg, rerank)?;
    let before =
        crate::evaluate_with_progress(query, query_labels, reference, metric, cfg, &mut |_| {})?;
    let mut after = reranked_metrics(query, query_labels, reference, metric, cfg, rerank)?;
    if matches!(rerank, Rerank::KReciprocal { .. }) {
        after.nmi = before.nmi;
        after.ami = before.ami;
    }
    Ok(Reranked { before, after })
}

fn check_depth(cfg: &EvalConfig, rerank: &Rerank) -> Result<()> {
    let ranking_wide = (cfg.mean_average_precision || cfg.mean_reciprocal_rank)
        && cfg.ranking_depth == crate::RankingDepth::Whole;
    if ranking_wide && matches!(rerank, Rerank::KReciprocal { .. }) {
        return Err(Error::Rerank(
            "k-reciprocal re-ranking re-orders each list to the depth the scores need: give mean_average_precision / mean_reciprocal_rank a ranking_depth".into(),
        ));
    }
    Ok(())
}

/// The "after" half of [`evaluate_reranked`], for callers that have the plain scores already:
/// after k-reciprocal re-ranking the retrieval scores only (NMI/AMI `None`: a re-ranking of
/// lists leaves the clustering of the embeddings as it was), after query expansion or
/// database augmentation every score of `cfg` on the new embeddings.
///
/// # Errors
/// As [`evaluate_reranked`].
pub fn reranked_metrics(
    query: ArrayView2<'_, f32>,
    query_labels: &[u32],
    reference: Option<(ArrayView2<'_, f32>, &[u32])>,
    metric: Metric,
    cfg: &EvalConfig,
    rerank: &Rerank,
) -> Result<Metrics> {
    rerank.validate(metric)?;
    check_depth(cfg, rerank)?;
    cfg.validate()?;
    match reference {
        None => {
            crate::check_set(query, query_labels, "embeddings")?;
            if query.nrows() < 2 {
                return Err(Error::TooFewItems(query.nrows()));
            }
        }
        Some((r, rl)) => {
            crate::check_set(query, query_labels, "query")?;
            crate::check_set(r, rl, "reference")?;
            if query.ncols() != r.ncols() {
                return Err(Error::DimensionMismatch {
                    query_dim: query.ncols(),
                    reference_dim: r.ncols(),
                });
            }
        }
    }
    Ok(match *rerank {
        Rerank::KReciprocal { k1, k2, lambda } => {
            let ref_labels = reference.map_or(query_labels, |(_, l)| l);
            let leave_one_out = reference.is_none();
            let depth = crate::ranked_depth(query_labels, ref_labels, leave_one_out, cfg)?;
            let lists = k_reciprocal_ranking(
                query,
                reference.map(|(r, _)| r),
                metric,
                k1,
                k2,
                lambda,
                depth,
            )?;
            crate::score_lists(query_labels, ref_labels, leave_one_out, cfg, &lists)?
        }
        Rerank::Expansion {
            k,
            alpha,
            query: expand_queries,
            database,
        } => {
            let (q2, r2) = expand_embeddings(
                query,
                reference.map(|(r, _)| r),
                k,
                alpha,
                expand_queries,
                database,
            )?;
            match reference {
                // Leave-one-out: each (expanded) query among the (augmented) set, itself left
                // out by index.
                None => crate::evaluate_leave_one_out_against(
                    q2.view(),
                    r2.view(),
                    query_labels,
                    metric,
                    cfg,
                )?,
                Some((_, rl)) => crate::evaluate_with_reference(
                    q2.view(),
                    query_labels,
                    r2.view(),
                    rl,
                    metric,
                    cfg,
                )?,
            }
        }
    })
}

/// One vector's expansion: `normalise(x + Σ max(0, s_i)^α n_i)` over its listed neighbours.
fn expanded(
    x: ndarray::ArrayView1<'_, f32>,
    neighbours: &[(u32, f32)],
    base: ArrayView2<'_, f32>,
    alpha: f64,
) -> Vec<f32> {
    let mut out: Vec<f64> = x.iter().map(|&v| f64::from(v)).collect();
    for &(j, s) in neighbours {
        let w = f64::from(s).max(0.0).powf(alpha);
        for (o, &v) in out.iter_mut().zip(base.row(j as usize)) {
            *o += w * f64::from(v);
        }
    }
    let norm = out
        .iter()
        .map(|v| v * v)
        .sum::<f64>()
        .sqrt()
        .max(f64::from(dml_kernels::NORM_EPS));
    out.iter().map(|v| (v / norm) as f32).collect()
}

/// α-QE and/or αDBA (see the [module docs](self)): the queries and the references to search
/// them among, both L2-normalised, the queries expanded (`expand_queries`) and the references
/// augmented (`database`) with `k` neighbours and exponent `alpha`; with `reference = None` the
/// references are the queries' own set and no query counts itself among its neighbours.
///
/// # Errors
/// dml-kernels' errors for non-finite values or mismatched widths.
pub fn expand_embeddings(
    query: ArrayView2<'_, f32>,
    reference: Option<ArrayView2<'_, f32>>,
    k: usize,
    alpha: f64,
    expand_queries: bool,
    database: bool,
) -> Result<(Array2<f32>, Array2<f32>)> {
    let q = dml_kernels::l2_normalize(query);
    let mut base = reference.map_or_else(|| q.clone(), dml_kernels::l2_normalize);
    let leave_one_out = reference.is_none();
    let n_base = base.nrows();
    let with_neighbours =
        |x: ArrayView2<'_, f32>, nn: &dml_kernels::Neighbours, among: ArrayView2<'_, f32>| {
            let rows: Vec<Vec<f32>> = (0..x.nrows())
                .into_par_iter()
                .map(|i| {
                    let list: Vec<(u32, f32)> = nn
                        .indices
                        .row(i)
                        .iter()
                        .copied()
                        .zip(nn.scores.row(i).iter().copied())
                        .collect();
                    expanded(x.row(i), &list, among, alpha)
                })
                .collect();
            let mut out = x.to_owned();
            for (mut dst, src) in out.axis_iter_mut(Axis(0)).zip(rows) {
                dst.assign(&ndarray::ArrayView1::from(&src[..]));
            }
            out
        };
    // αDBA: each reference from its k nearest other references.
    let kk = k.min(n_base.saturating_sub(1));
    if database && kk > 0 {
        let nn = dml_kernels::knn_self(Metric::Cosine, base.view(), kk)?;
        base = with_neighbours(base.view(), &nn, base.view());
    }
    // α-QE: each query from its k nearest references (in leave-one-out mode, not itself).
    let kq = k.min(if leave_one_out { n_base - 1 } else { n_base });
    let queries = if expand_queries && kq > 0 {
        let nn = if leave_one_out {
            let deeper = dml_kernels::knn(Metric::Cosine, q.view(), base.view(), kq + 1)?;
            drop_own(deeper, kq)
        } else {
            dml_kernels::knn(Metric::Cosine, q.view(), base.view(), kq)?
        };
        with_neighbours(q.view(), &nn, base.view())
    } else {
        q
    };
    Ok((queries, base))
}

/// Each query's `k` nearest from a list one deeper, its own index (query `i` is reference `i`)
/// dropped, or the last entry when its own index is not among them.
fn drop_own(deeper: dml_kernels::Neighbours, k: usize) -> dml_kernels::Neighbours {
    let n = deeper.n_queries();
    let mut indices = Array2::<u32>::zeros((n, k));
    let mut scores = Array2::<f32>::zeros((n, k));
    for i in 0..n {
        let (idx, sc) = (deeper.indices.row(i), deeper.scores.row(i));
        let kept = idx
            .iter()
            .zip(sc.iter())
            .filter(|&(&j, _)| j as usize != i)
            .take(k);
        for (slot, (&j, &v)) in kept.enumerate() {
            indices[[i, slot]] = j;
            scores[[i, slot]] = v;
        }
    }
    dml_kernels::Neighbours { indices, scores }
}

/// Sparse rows: for each item, its support (item indices) and weights.
type Sparse = Vec<Vec<(u32, f32)>>;

/// Queries whose plain lists are searched together (bounds their memory).
const RERANK_BLOCK: usize = 1024;

/// A dense accumulator over `0..n` that remembers which entries it touched, reused across the
/// items of a task (a hash map per item costs several times more).
struct Dense {
    values: Vec<f64>,
    touched: Vec<u32>,
}

impl Dense {
    fn new(n: usize) -> Self {
        Self {
            values: vec![0.0; n],
            touched: Vec::new(),
        }
    }

    #[inline]
    fn add(&mut self, j: u32, w: f64) {
        let v = &mut self.values[j as usize];
        if *v == 0.0 {
            self.touched.push(j);
        }
        *v += w;
    }

    /// The touched entries and their sums, resetting them.
    fn drain(&mut self) -> impl Iterator<Item = (u32, f64)> + '_ {
        let values = &mut self.values;
        self.touched.drain(..).map(move |j| {
            let w = std::mem::take(&mut values[j as usize]);
            (j, w)
        })
    }
}

/// The k-reciprocal re-ranked list of each query (see the [module docs](self)): reference
/// indices, closest first by d*, `depth` long (fewer when there are fewer candidates);
/// `reference = None` ranks the queries' own set, each query left out of its own list.
///
/// # Errors
/// dml-kernels' errors for non-finite values, mismatched widths or a set of fewer than two
/// items.
pub fn k_reciprocal_ranking(
    query: ArrayView2<'_, f32>,
    reference: Option<ArrayView2<'_, f32>>,
    metric: Metric,
    k1: usize,
    k2: usize,
    lambda: f64,
    depth: usize,
) -> Result<Vec<Vec<u32>>> {
    // All items: the queries, then the references (leave-one-out: the queries alone); for
    // cosine, L2-normalised, so that the squared distance is 2 − 2 cos.
    let mut all = match reference {
        None => query.to_owned(),
        Some(r) => ndarray::concatenate(Axis(0), &[query.view(), r.view()])
            .map_err(|e| Error::Rerank(e.to_string()))?,
    };
    if metric == Metric::Cosine {
        dml_kernels::l2_normalize_inplace(all.view_mut());
    }
    let n_q = query.nrows();
    let n = all.nrows();
    let ref_offset = if reference.is_some() { n_q } else { 0 };
    let n_ref = n - ref_offset;
    let k1 = k1.min(n - 1);
    // ⌊k1/2⌉ rounded half to even, as numpy's `around` in the reference code.
    let half = if k1.is_multiple_of(2) || (k1 / 2).is_multiple_of(2) {
        k1 / 2
    } else {
        k1 / 2 + 1
    };
    let kk = k1.max(k2.saturating_sub(1)).max(1).min(n - 1);
    let nn = dml_kernels::knn_self(Metric::SquaredEuclidean, all.view(), kk)?;
    // N(i, k): i itself first, then its k nearest others.
    let near = |i: usize, k: usize| -> Vec<u32> {
        let mut v = Vec::with_capacity(k + 1);
        v.push(i as u32);
        v.extend(nn.indices.row(i).iter().take(k).copied());
        v
    };
    let rows = NormedRows::new(Metric::SquaredEuclidean, all.view(), "embeddings")?;
    // d(i, j), with d(i, i) = 0 exactly.
    let dist = |i: usize, j: usize| -> f64 {
        if i == j {
            0.0
        } else {
            f64::from(rows.value(i, &rows, j))
        }
    };
    let reciprocal = |i: usize, k: usize| -> Vec<u32> {
        near(i, k)
            .into_iter()
            .filter(|&j| near(j as usize, k).contains(&(i as u32)))
            .collect()
    };
    // V: each item's weights over its expanded k-reciprocal set.
    let v: Sparse = (0..n)
        .into_par_iter()
        .map(|i| {
            let r_i = reciprocal(i, k1);
            let mut expanded: Vec<u32> = r_i.clone();
            for &j in &r_i {
                let r_j = reciprocal(j as usize, half);
                let common = r_j.iter().filter(|m| r_i.contains(m)).count();
                if 3 * common > 2 * r_j.len() {
                    expanded.extend(r_j);
                }
            }
            expanded.sort_unstable();
            expanded.dedup();
            let weights: Vec<f64> = expanded
                .iter()
                .map(|&m| (-dist(i, m as usize)).exp())
                .collect();
            let sum: f64 = weights.iter().sum();
            expanded
                .into_iter()
                .zip(weights)
                .map(|(m, w)| (m, (w / sum) as f32))
                .collect()
        })
        .collect();
    // Local query expansion: the mean of the V's of N(i, k2 − 1).
    let v: Sparse = if k2 > 1 {
        (0..n)
            .into_par_iter()
            .map_init(
                || Dense::new(n),
                |acc, i| {
                    let group = near(i, k2 - 1);
                    for &m in &group {
                        for &(j, w) in &v[m as usize] {
                            acc.add(j, f64::from(w));
                        }
                    }
                    let scale = 1.0 / group.len() as f64;
                    let mut out: Vec<(u32, f32)> =
                        acc.drain().map(|(j, w)| (j, (w * scale) as f32)).collect();
                    out.sort_unstable_by_key(|&(j, _)| j);
                    out
                },
            )
            .collect()
    } else {
        v
    };
    // Inverted index over the references' V's: item m -> (reference, weight).
    let mut postings: Vec<Vec<(u32, f32)>> = vec![Vec::new(); n];
    for (rj, row) in v[ref_offset..].iter().enumerate() {
        for &(m, w) in row {
            postings[m as usize].push((rj as u32, w));
        }
    }
    let leave_one_out = reference.is_none();
    // Σ_m min(V_i[m], V_j[m]) for every reference j sharing support with query i.
    let shared: Vec<Vec<(u32, f64)>> = (0..n_q)
        .into_par_iter()
        .map_init(
            || Dense::new(n_ref),
            |acc, i| {
                for &(m, w) in &v[i] {
                    for &(j, wj) in &postings[m as usize] {
                        acc.add(j, f64::from(w.min(wj)));
                    }
                }
                let mut out: Vec<(u32, f64)> = acc
                    .drain()
                    .filter(|&(j, _)| !(leave_one_out && j as usize == i))
                    .collect();
                out.sort_unstable_by_key(|&(j, _)| j);
                out
            },
        )
        .collect();
    // Each block of queries' plain lists, deep enough that after the shared references are
    // taken out at least `depth` remain: every reference beyond them has d_J = 1 and ranks by
    // d alone. Blocks keep the lists' memory bounded whatever a few queries share.
    let n_avail = n_ref - usize::from(leave_one_out);
    let mut lists: Vec<Vec<u32>> = Vec::with_capacity(n_q);
    for start in (0..n_q).step_by(RERANK_BLOCK) {
        let end = (start + RERANK_BLOCK).min(n_q);
        let max_shared = shared[start..end].iter().map(Vec::len).max().unwrap_or(0);
        let plain_depth = (depth + max_shared).min(n_avail);
        let plain = if plain_depth == 0 {
            None
        } else if leave_one_out {
            Some(dml_kernels::knn_self_rows(
                Metric::SquaredEuclidean,
                all.view(),
                start..end,
                plain_depth,
            )?)
        } else {
            Some(dml_kernels::knn(
                Metric::SquaredEuclidean,
                all.slice(ndarray::s![start..end, ..]),
                all.slice(ndarray::s![ref_offset.., ..]),
                plain_depth,
            )?)
        };
        let block: Vec<Vec<u32>> = (start..end)
            .into_par_iter()
            .map(|i| {
                let d_star = |j: u32, mins: f64| -> f64 {
                    let jaccard = 1.0 - mins / (2.0 - mins);
                    (1.0 - lambda) * jaccard + lambda * dist(i, ref_offset + j as usize)
                };
                let mine = &shared[i];
                let mut cands: Vec<(f64, u32)> =
                    mine.iter().map(|&(j, s)| (d_star(j, s), j)).collect();
                if let Some(plain) = &plain {
                    for &j in plain.indices.row(i - start) {
                        if mine.binary_search_by_key(&j, |&(m, _)| m).is_err() {
                            cands.push((d_star(j, 0.0), j));
                        }
                    }
                }
                cands.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
                cands.truncate(depth);
                cands.into_iter().map(|(_, j)| j).collect()
            })
            .collect();
        lists.extend(block);
    }
    Ok(lists)
}
