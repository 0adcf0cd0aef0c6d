//! What crosses the boundary: NumPy arrays borrowed as ndarray views, metric names, and errors.

use dml_kernels::Metric;
use ndarray::ArrayView2;
use numpy::{PyReadonlyArray1, PyReadonlyArray2, PyUntypedArrayMethods};
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;

/// A dml error as a Python `ValueError` with the same message.
pub(crate) fn value_error(err: impl std::fmt::Display) -> PyErr {
    PyValueError::new_err(err.to_string())
}

/// The matrix behind `x`, read in place.
///
/// The Python layer hands over C-contiguous arrays only (it makes one copy of anything else,
/// once, before the call); a strided array reaching this point is a bug of that layer, reported
/// rather than silently copied a second time.
pub(crate) fn matrix<'a>(
    x: &'a PyReadonlyArray2<'_, f32>,
    name: &str,
) -> PyResult<ArrayView2<'a, f32>> {
    if !x.is_c_contiguous() {
        return Err(PyTypeError::new_err(format!(
            "{name} must be a C-contiguous float32 array"
        )));
    }
    Ok(x.as_array())
}

/// The class ids behind `labels`, read in place.
pub(crate) fn labels<'a>(labels: &'a PyReadonlyArray1<'_, u32>, name: &str) -> PyResult<&'a [u32]> {
    labels
        .as_slice()
        .map_err(|_| PyTypeError::new_err(format!("{name} must be a contiguous uint32 array")))
}

/// The labels behind `labels` (int64, as the miners take them), read in place.
pub(crate) fn label_values<'a>(
    labels: &'a PyReadonlyArray1<'_, i64>,
    name: &str,
) -> PyResult<&'a [i64]> {
    labels
        .as_slice()
        .map_err(|_| PyTypeError::new_err(format!("{name} must be a contiguous int64 array")))
}

/// A metric from its dml name (`euclidean`, `squared_euclidean`, `cosine`, `dot`).
pub(crate) fn metric(name: &str) -> PyResult<Metric> {
    name.parse::<Metric>().map_err(value_error)
}

/// The address of the first element that the native code reads for `x`: the same borrow as
/// every function of this module takes, exposed so that a test can check that an array reaches
/// dml without being copied.
#[pyfunction]
pub(crate) fn buffer_address(x: PyReadonlyArray2<'_, f32>) -> PyResult<usize> {
    Ok(matrix(&x, "x")?.as_ptr() as usize)
}
