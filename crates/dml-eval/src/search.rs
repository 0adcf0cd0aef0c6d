//! Neighbour search for one block of queries, on top of dml-kernels' exact k-NN.

use dml_kernels::Metric;
use ndarray::{Array2, ArrayView2};

use crate::Result;

/// Indices into `reference` of the `k` nearest references of each query row, closest first
/// (ties: lower index first, dml-kernels' rule).
///
/// With `self_offset = Some(o)`, query row `i` is reference row `o + i` and is left out of its
/// own list by index: the search asks for `k + 1` neighbours, removes the query's own index, and
/// when it is absent (possible only with exact ties, or cosine rounding putting a duplicate
/// above the query itself) drops the last one. Either way the result is exactly the `k` nearest
/// of all references but the query itself, because removing one item from a sorted list keeps
/// the order of the rest. `k + 1` must not exceed the number of references.
pub(crate) fn neighbour_indices(
    metric: Metric,
    query: ArrayView2<'_, f32>,
    reference: ArrayView2<'_, f32>,
    k: usize,
    self_offset: Option<usize>,
) -> Result<Array2<u32>> {
    let Some(offset) = self_offset else {
        return Ok(knn_indices(metric, query, reference, k)?);
    };
    let with_self = knn_indices(metric, query, reference, k + 1)?;
    let mut out = Array2::<u32>::zeros((query.nrows(), k));
    for (i, (row, mut out_row)) in with_self.outer_iter().zip(out.outer_iter_mut()).enumerate() {
        let own = (offset + i) as u32;
        let mut j = 0;
        for &idx in row.iter() {
            if idx != own && j < k {
                out_row[j] = idx;
                j += 1;
            }
        }
    }
    Ok(out)
}

fn knn_indices(
    metric: Metric,
    query: ArrayView2<'_, f32>,
    reference: ArrayView2<'_, f32>,
    k: usize,
) -> dml_kernels::Result<Array2<u32>> {
    naive_knn(metric, query, reference, k)
}

// Stand-in until dml-kernels' `knn` lands: exact, O(q·n·d), sorted by (score, index).
fn naive_knn(
    metric: Metric,
    query: ArrayView2<'_, f32>,
    reference: ArrayView2<'_, f32>,
    k: usize,
) -> dml_kernels::Result<Array2<u32>> {
    let n = reference.nrows();
    let mut out = Array2::<u32>::zeros((query.nrows(), k));
    let norms: Vec<f32> = reference
        .outer_iter()
        .map(|r| r.dot(&r).sqrt())
        .collect();
    for (qi, q) in query.outer_iter().enumerate() {
        let qn = q.dot(&q).sqrt();
        let mut scored: Vec<(f32, u32)> = (0..n)
            .map(|j| {
                let r = reference.row(j);
                let v = match metric {
                    Metric::Euclidean => (&q - &r).mapv(|x| x * x).sum().sqrt(),
                    Metric::SquaredEuclidean => (&q - &r).mapv(|x| x * x).sum(),
                    Metric::Cosine => q.dot(&r) / (qn * norms[j]).max(1e-12),
                    Metric::Dot => q.dot(&r),
                };
                ((if metric.is_similarity() { -v } else { v }) + 0.0, j as u32)
            })
            .collect();
        scored.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
        for (j, &(_, idx)) in scored[..k].iter().enumerate() {
            out[[qi, j]] = idx;
        }
    }
    Ok(out)
}
