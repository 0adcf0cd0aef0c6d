//! Neighbour search for one block of queries, on top of dml-kernels' blocked exact k-NN.

use dml_kernels::{Metric, knn, knn_self_rows};
use ndarray::{Array2, ArrayView2};

use crate::Result;

/// Indices into `reference` of the `k` nearest references of each query row, closest first
/// (ties: lower index first, dml-kernels' rule).
///
/// With `self_offset = Some(o)`, query row `i` is item `o + i` of the reference set and is left
/// out of its own list by index: when the queries are those rows of `reference` themselves
/// (`same_vectors`) through [`knn_self_rows`], otherwise (expanded queries searched among the
/// references) by searching one neighbour deeper and dropping the query's own index, or the
/// last neighbour when the query's index is not among them.
pub(crate) fn neighbour_indices(
    metric: Metric,
    query: ArrayView2<'_, f32>,
    reference: ArrayView2<'_, f32>,
    k: usize,
    self_offset: Option<usize>,
    same_vectors: bool,
) -> Result<Array2<u32>> {
    Ok(match self_offset {
        None => knn(metric, query, reference, k)?.indices,
        Some(o) if same_vectors => {
            knn_self_rows(metric, reference, o..o + query.nrows(), k)?.indices
        }
        Some(o) => {
            let deeper = knn(metric, query, reference, k + 1)?.indices;
            let mut out = Array2::<u32>::zeros((query.nrows(), k));
            for (i, (row, mut dst)) in deeper.outer_iter().zip(out.outer_iter_mut()).enumerate() {
                let own = (o + i) as u32;
                for (d, &j) in dst.iter_mut().zip(row.iter().filter(|&&j| j != own)) {
                    *d = j;
                }
            }
            out
        }
    })
}
