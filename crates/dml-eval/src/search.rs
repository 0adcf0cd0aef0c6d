//! Neighbour search for one block of queries, on top of dml-kernels' blocked exact k-NN.

use dml_kernels::{Metric, knn, knn_self_rows};
use ndarray::{Array2, ArrayView2};

use crate::Result;

/// Indices into `reference` of the `k` nearest references of each query row, closest first
/// (ties: lower index first, dml-kernels' rule).
///
/// With `self_offset = Some(o)`, the queries are rows `o..` of `reference` itself, and each is
/// left out of its own list by index ([`knn_self_rows`]).
pub(crate) fn neighbour_indices(
    metric: Metric,
    query: ArrayView2<'_, f32>,
    reference: ArrayView2<'_, f32>,
    k: usize,
    self_offset: Option<usize>,
) -> Result<Array2<u32>> {
    Ok(match self_offset {
        None => knn(metric, query, reference, k)?.indices,
        Some(o) => knn_self_rows(metric, reference, o..o + query.nrows(), k)?.indices,
    })
}
