//! Neighbour search for one block of queries, on top of dml-kernels' blocked exact k-NN.

use dml_kernels::{Metric, knn, knn_self};
use ndarray::{Array2, ArrayView2};

use crate::Result;

/// Indices into `reference` of the `k` nearest references of each query row, closest first
/// (ties: lower index first, dml-kernels' rule).
///
/// With `self_offset = Some(o)`, query row `i` is reference row `o + i` and is left out of its
/// own list by index. When the block is the whole set this is [`knn_self`]. For a partial block
/// the search asks [`knn`] for `k + 1` neighbours, removes the query's own index, and when it is
/// absent (it can be pushed out only by ties at its own distance, or by cosine rounding ranking a
/// duplicate above the query itself) drops the last one. Either way the result is exactly the
/// `k` nearest of all references but the query, since removing one item from a sorted list keeps
/// the order of the rest. `k + 1` must not exceed the number of references.
pub(crate) fn neighbour_indices(
    metric: Metric,
    query: ArrayView2<'_, f32>,
    reference: ArrayView2<'_, f32>,
    k: usize,
    self_offset: Option<usize>,
) -> Result<Array2<u32>> {
    let Some(offset) = self_offset else {
        return Ok(knn(metric, query, reference, k)?.indices);
    };
    if offset == 0 && query.nrows() == reference.nrows() {
        return Ok(knn_self(metric, reference, k)?.indices);
    }
    let with_self = knn(metric, query, reference, k + 1)?.indices;
    let mut out = Array2::<u32>::zeros((query.nrows(), k));
    for (i, (row, mut out_row)) in with_self.outer_iter().zip(out.outer_iter_mut()).enumerate() {
        let own = (offset + i) as u32;
        for (dst, &idx) in out_row.iter_mut().zip(row.iter().filter(|&&j| j != own)) {
            *dst = idx;
        }
    }
    Ok(out)
}
