//! The PK batch sampler (dml-sampling) for `dml.PKSampler`.

use ndarray::Array2;
use numpy::{IntoPyArray, PyArray2, PyReadonlyArray1};
use pyo3::prelude::*;

use crate::convert::{labels, value_error};

/// dml-sampling's `PkSampler` over dense class ids.
#[pyclass(module = "dml._dml", frozen)]
pub(crate) struct PkSampler {
    inner: dml_sampling::PkSampler,
}

#[pymethods]
impl PkSampler {
    #[new]
    #[pyo3(signature = (labels_, p, k, seed))]
    fn new(labels_: PyReadonlyArray1<'_, u32>, p: usize, k: usize, seed: u64) -> PyResult<Self> {
        let y = labels(&labels_, "labels")?;
        let inner = dml_sampling::PkSampler::new(y, p, k, seed).map_err(value_error)?;
        Ok(PkSampler { inner })
    }

    /// Batches in every epoch.
    #[getter]
    fn batches_per_epoch(&self) -> usize {
        self.inner.batches_per_epoch()
    }

    /// `P·K`.
    #[getter]
    fn batch_size(&self) -> usize {
        self.inner.batch_size()
    }

    /// Classes that serve batches.
    #[getter]
    fn n_classes(&self) -> usize {
        self.inner.n_classes()
    }

    /// Items left out because their class has a single item (with `K ≥ 2`).
    #[getter]
    fn n_excluded_items(&self) -> usize {
        self.inner.n_excluded_items()
    }

    /// The dense ids of the classes left out, ascending.
    #[getter]
    fn excluded_classes(&self) -> Vec<u32> {
        self.inner.excluded_classes().to_vec()
    }

    /// The batches of `epoch` as an int64 array, one row of `P·K` item indices per batch.
    fn epoch<'py>(&self, py: Python<'py>, epoch: u64) -> Bound<'py, PyArray2<i64>> {
        let (n, width) = (self.inner.batches_per_epoch(), self.inner.batch_size());
        let flat: Vec<i64> = py.detach(|| {
            self.inner
                .epoch(epoch)
                .flatten()
                .map(|i| i64::try_from(i).unwrap_or(i64::MAX))
                .collect()
        });
        Array2::from_shape_vec((n, width), flat)
            .expect("every batch of an epoch holds P·K indices")
            .into_pyarray(py)
    }
}
