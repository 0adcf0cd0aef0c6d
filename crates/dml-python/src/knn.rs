//! Exact k-NN (dml-kernels) for `dml.knn` and `dml.KNN`.

use dml_kernels::{Neighbours, knn as knn_search, knn_self, knn_self_rows};
use ndarray::{ArrayView2, s};
use numpy::{IntoPyArray, PyArray2, PyReadonlyArray2};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;

use crate::convert::{matrix, metric as parse_metric, value_error};

/// `(scores, indices)` of a search, as NumPy arrays.
type Found<'py> = (Bound<'py, PyArray2<f32>>, Bound<'py, PyArray2<i64>>);

/// The `k` nearest references of each query: `(scores, indices)`, each `n_queries × k`,
/// closest first, ties to the lower index.
///
/// - `reference = None`: every row of `query` against the others (the row itself left out).
/// - `ref_includes_query = False`: `query` against `reference`.
/// - `ref_includes_query = True`: `query` must be the first rows of `reference`; query `i` is
///   left out of its own list by index (row `i` of `reference`), as pytorch-metric-learning's
///   `FaissKNN` drops it.
#[pyfunction]
#[pyo3(signature = (query, reference, k, metric, ref_includes_query))]
pub(crate) fn knn<'py>(
    py: Python<'py>,
    query: PyReadonlyArray2<'py, f32>,
    reference: Option<PyReadonlyArray2<'py, f32>>,
    k: usize,
    metric: &str,
    ref_includes_query: bool,
) -> PyResult<Found<'py>> {
    let metric = parse_metric(metric)?;
    let q = matrix(&query, "query")?;
    let r = reference
        .as_ref()
        .map(|r| matrix(r, "reference"))
        .transpose()?;
    let found: Neighbours = py.detach(|| -> PyResult<Neighbours> {
        match r {
            None => knn_self(metric, q, k).map_err(value_error),
            Some(r) if ref_includes_query => {
                check_prefix(q, r)?;
                knn_self_rows(metric, r, 0..q.nrows(), k).map_err(value_error)
            }
            Some(r) => knn_search(metric, q, r, k).map_err(value_error),
        }
    })?;
    let indices = found.indices.mapv(i64::from);
    Ok((found.scores.into_pyarray(py), indices.into_pyarray(py)))
}

/// Errors unless `query` is exactly the first rows of `reference`, which is what
/// `ref_includes_query = True` promises.
pub(crate) fn check_prefix(
    query: ArrayView2<'_, f32>,
    reference: ArrayView2<'_, f32>,
) -> PyResult<()> {
    let (nq, nr) = (query.nrows(), reference.nrows());
    if nq > nr || query.ncols() != reference.ncols() {
        return Err(PyValueError::new_err(format!(
            "ref_includes_query=True needs query to be the first rows of reference, but query is \
             {nq}×{} and reference {nr}×{}",
            query.ncols(),
            reference.ncols()
        )));
    }
    let head = reference.slice(s![..nq, ..]);
    if let Some(row) = (0..nq).find(|&i| query.row(i) != head.row(i)) {
        return Err(PyValueError::new_err(format!(
            "ref_includes_query=True needs query to be the first rows of reference, but query row \
             {row} differs from reference row {row}"
        )));
    }
    Ok(())
}
