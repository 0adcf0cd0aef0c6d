//! Exact k-nearest-neighbour search, blockwise with a fused top-k.

use ndarray::{Array2, ArrayView2, Axis, s};
use rayon::prelude::*;

use crate::{
    Error, Metric, Result, check,
    gemm::gemm_nt,
    pairwise::{finish, gemm_alpha, row_factors},
};

/// Queries per block (one rayon task).
const QUERY_BLOCK: usize = 128;
/// References per block: a `QUERY_BLOCK × REF_BLOCK` f32 tile stays in a core's L2 cache.
const REF_BLOCK: usize = 1024;

/// The `k` nearest references of each query, closest first.
///
/// `indices[[q, r]]` is the row (in the reference matrix) of the `r`-th neighbour of query `q`, and
/// `scores[[q, r]]` the metric's value for that pair: a distance for [`Metric::Euclidean`] and
/// [`Metric::SquaredEuclidean`] (ascending), a similarity for [`Metric::Cosine`] and
/// [`Metric::Dot`] (descending). Equal scores are ordered by the lower reference index.
#[derive(Debug, Clone, PartialEq)]
pub struct Neighbours {
    /// Reference rows, `n_queries × k`.
    pub indices: Array2<u32>,
    /// The metric's values for those pairs, `n_queries × k`.
    pub scores: Array2<f32>,
}

impl Neighbours {
    /// Number of queries.
    pub fn n_queries(&self) -> usize {
        self.indices.nrows()
    }

    /// Neighbours per query.
    pub fn k(&self) -> usize {
        self.indices.ncols()
    }
}

/// The exact `k` nearest rows of `reference` for each row of `query` under `metric`.
///
/// The values are those of [`crate::pairwise`] for the same inputs; the q×n matrix is never
/// materialised: queries and references are processed in cache-sized blocks through the GEMM,
/// with a bounded sorted buffer of `k` candidates per query, so memory beyond the inputs and
/// output is a few MB per thread.
///
/// # Errors
/// [`Error::DimensionMismatch`], [`Error::NonFinite`] (naming the matrix and row),
/// [`Error::InvalidK`] unless `1 <= k <= reference.nrows()`, [`Error::TooManyRows`] if the
/// reference has more rows than `u32` can index.
///
/// ```
/// use dml_kernels::{Metric, knn};
/// use ndarray::array;
///
/// let reference = array![[0.0_f32], [10.0], [2.0], [3.0]];
/// let nn = knn(Metric::Euclidean, array![[2.4_f32]].view(), reference.view(), 2)?;
/// assert_eq!(nn.indices, array![[2_u32, 3]]);
/// # Ok::<(), dml_kernels::Error>(())
/// ```
pub fn knn(
    metric: Metric,
    query: ArrayView2<'_, f32>,
    reference: ArrayView2<'_, f32>,
    k: usize,
) -> Result<Neighbours> {
    check::same_dim(query, "query", reference, "reference")?;
    check_k(k, reference.nrows())?;
    check_rows(reference, "reference")?;
    check::finite(query, "query")?;
    check::finite(reference, "reference")?;
    Ok(search(metric, query, reference, k, false))
}

/// The `k` nearest other rows of `points` for each row: every point is left out of its own
/// neighbours (by index, so duplicates of a point still count as neighbours).
///
/// # Errors
/// [`Error::NonFinite`], [`Error::InvalidK`] unless `1 <= k <= points.nrows() - 1`,
/// [`Error::TooManyRows`].
pub fn knn_self(metric: Metric, points: ArrayView2<'_, f32>, k: usize) -> Result<Neighbours> {
    check_k(k, points.nrows().saturating_sub(1))?;
    check_rows(points, "points")?;
    check::finite(points, "points")?;
    Ok(search(metric, points, points, k, true))
}

fn check_k(k: usize, available: usize) -> Result<()> {
    if k == 0 || k > available {
        Err(Error::InvalidK { k, available })
    } else {
        Ok(())
    }
}

fn check_rows(x: ArrayView2<'_, f32>, matrix: &'static str) -> Result<()> {
    let max = u32::MAX as usize;
    if x.nrows() > max {
        Err(Error::TooManyRows {
            matrix,
            rows: x.nrows(),
            max,
        })
    } else {
        Ok(())
    }
}

/// A sorted buffer of the best `k` (key, index) pairs seen so far; smaller keys are better.
struct TopK<'a> {
    keys: &'a mut [f32],
    idx: &'a mut [u32],
    len: usize,
}

impl TopK<'_> {
    #[inline]
    fn full(&self) -> bool {
        self.len == self.keys.len()
    }

    /// The key a candidate must beat (strictly) once the buffer is full.
    #[inline]
    fn worst(&self) -> f32 {
        self.keys[self.keys.len() - 1]
    }

    /// Inserts after every equal key, so that with candidates offered in increasing index order
    /// equal keys keep the lower index first. The caller has checked `!full() || key < worst()`.
    #[inline]
    fn push(&mut self, key: f32, id: u32) {
        let k = self.keys.len();
        let pos = self.keys[..self.len].partition_point(|&x| x <= key);
        if self.len < k {
            self.len += 1;
        }
        let end = self.len - 1;
        if pos < k {
            self.keys.copy_within(pos..end, pos + 1);
            self.idx.copy_within(pos..end, pos + 1);
            self.keys[pos] = key;
            self.idx[pos] = id;
        }
    }
}

/// Offers one row of keys (references `r0..r0 + keys.len()`) to a query's buffer.
#[inline]
fn offer(top: &mut TopK<'_>, keys: &[f32], r0: usize, skip: usize) {
    const CHUNK: usize = 16;
    let mut j = 0;
    while !top.full() && j < keys.len() {
        if r0 + j != skip {
            top.push(keys[j], (r0 + j) as u32);
        }
        j += 1;
    }
    while j < keys.len() {
        let end = (j + CHUNK).min(keys.len());
        let chunk = &keys[j..end];
        // A branch-free minimum over the chunk rejects most chunks with one comparison.
        let min = chunk
            .iter()
            .fold(f32::INFINITY, |m, &x| if x < m { x } else { m });
        if min < top.worst() {
            for (o, &key) in chunk.iter().enumerate() {
                if key < top.worst() && r0 + j + o != skip {
                    top.push(key, (r0 + j + o) as u32);
                }
            }
        }
        j = end;
    }
}

/// Candidates found by one task: for each of its queries, up to `k` (key, index) pairs sorted by
/// key then index, with `lens[i]` of them valid.
struct Partial {
    keys: Vec<f32>,
    idx: Vec<u32>,
    lens: Vec<usize>,
}

/// The search proper; inputs are validated.
///
/// Work is split into (query block × reference range) tasks. Usually there are enough query
/// blocks to keep every thread busy and each task scans all references; with few queries the
/// references are cut into ranges as well and the per-range candidates merged afterwards.
fn search(
    metric: Metric,
    query: ArrayView2<'_, f32>,
    reference: ArrayView2<'_, f32>,
    k: usize,
    exclude_self: bool,
) -> Neighbours {
    let nq = query.nrows();
    let nr = reference.nrows();
    let fq = row_factors(metric, query);
    let fr = row_factors(metric, reference);
    // Keys are "smaller is closer": distances as they are, similarities negated (exactly).
    let alpha = gemm_alpha(metric, -1.0);

    let n_qblocks = nq.div_ceil(QUERY_BLOCK);
    let want_tasks = 4 * rayon::current_num_threads();
    let n_parts = if n_qblocks >= want_tasks {
        1
    } else {
        want_tasks
            .div_ceil(n_qblocks.max(1))
            .min(nr.div_ceil(4 * REF_BLOCK))
            .max(1)
    };
    let part_len = nr.div_ceil(n_parts);

    let partials: Vec<Partial> = (0..n_qblocks * n_parts)
        .into_par_iter()
        .map(|task| {
            let (b, part) = (task / n_parts, task % n_parts);
            let q0 = b * QUERY_BLOCK;
            let q1 = (q0 + QUERY_BLOCK).min(nq);
            let (p0, p1) = (part * part_len, ((part + 1) * part_len).min(nr));
            let rows = q1 - q0;
            let q_blk = query.slice(s![q0..q1, ..]);
            let mut out = Partial {
                keys: vec![0.0; rows * k],
                idx: vec![0; rows * k],
                lens: vec![0; rows],
            };
            let mut tile = Array2::<f32>::zeros((rows, REF_BLOCK.min(p1.saturating_sub(p0))));
            for r0 in (p0..p1).step_by(REF_BLOCK) {
                let r1 = (r0 + REF_BLOCK).min(p1);
                let mut t = tile.slice_mut(s![.., ..r1 - r0]);
                gemm_nt(alpha, q_blk, reference.slice(s![r0..r1, ..]), t.view_mut());
                let fr_blk = fr.slice(s![r0..r1]);
                for (i, mut row) in t.axis_iter_mut(Axis(0)).enumerate() {
                    let fqi = fq[q0 + i];
                    row.zip_mut_with(&fr_blk, |v, &frj| *v = finish(metric, *v, fqi, frj));
                    let mut top = TopK {
                        keys: &mut out.keys[i * k..(i + 1) * k],
                        idx: &mut out.idx[i * k..(i + 1) * k],
                        len: out.lens[i],
                    };
                    let skip = if exclude_self { q0 + i } else { usize::MAX };
                    match row.as_slice() {
                        Some(s) => offer(&mut top, s, r0, skip),
                        None => offer(&mut top, &row.to_vec(), r0, skip),
                    }
                    out.lens[i] = top.len;
                }
            }
            out
        })
        .collect();

    let mut indices = Array2::<u32>::zeros((nq, k));
    let mut scores = Array2::<f32>::zeros((nq, k));
    let mut row: Vec<(f32, u32)> = Vec::with_capacity(k * n_parts);
    for q in 0..nq {
        let (b, i) = (q / QUERY_BLOCK, q % QUERY_BLOCK);
        row.clear();
        // Ranges are in increasing index order, so a stable sort by key alone keeps ties in
        // index order.
        for part in &partials[b * n_parts..(b + 1) * n_parts] {
            let len = part.lens[i];
            let keys = &part.keys[i * k..i * k + len];
            let idx = &part.idx[i * k..i * k + len];
            row.extend(keys.iter().copied().zip(idx.iter().copied()));
        }
        if n_parts > 1 {
            row.sort_by(|x, y| cmp_key(x.0, y.0));
        }
        for v in row.iter_mut() {
            v.0 = key_to_score(metric, v.0);
        }
        if metric == Metric::Euclidean {
            // sqrt can map distinct squared distances to one value; restore index order.
            row[..k].sort_by(|x, y| cmp_key(x.0, y.0).then(x.1.cmp(&y.1)));
        }
        for (r, &(score, id)) in row.iter().take(k).enumerate() {
            scores[[q, r]] = score;
            indices[[q, r]] = id;
        }
    }
    Neighbours { indices, scores }
}

/// Orders keys as the top-k buffer does: `-0.0 == 0.0` (unlike `total_cmp`), NaN (impossible
/// for finite inputs) equal to everything.
fn cmp_key(a: f32, b: f32) -> std::cmp::Ordering {
    a.partial_cmp(&b).unwrap_or(std::cmp::Ordering::Equal)
}

#[inline]
fn key_to_score(metric: Metric, key: f32) -> f32 {
    match metric {
        Metric::Euclidean => key.sqrt(),
        Metric::SquaredEuclidean => key,
        // `0 − key` rather than `−key`: a zero similarity comes back as +0.
        Metric::Cosine | Metric::Dot => 0.0 - key,
    }
}
