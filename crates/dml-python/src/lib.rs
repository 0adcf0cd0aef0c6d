//! `dml._dml`: the native half of the `dml` Python package.
//!
//! The package's public API (`dml.AccuracyCalculator`, `dml.KNN`, the miners, `dml.PKSampler`,
//! `dml.knn`, `dml.evaluate`) is written in Python under `python/dml/`, where the arguments of
//! pytorch-metric-learning's classes are checked and any array-like input (torch tensors,
//! DLPack, lists) becomes a NumPy array. This module receives only what that layer guarantees:
//! C-contiguous `float32` matrices, and `uint32` class ids (the miners, which only compare labels,
//! take `int64` labels and number the classes themselves, without a sort when the labels fit
//! 32 bits). It reads them in place (no copy), releases the GIL while dml-kernels, dml-sampling
//! or dml-eval work, and turns their typed errors into `ValueError` with the same message. It
//! holds no algorithm of its own.
//!
//! It is built by maturin (`pip install ./crates/dml-python`, `cargo xtask python`), links no
//! LibTorch, and uses CPython's stable ABI (abi3, CPython 3.10 and later).

#![warn(missing_docs)]

mod convert;
mod eval;
mod knn;
mod miner;
mod sampler;

use pyo3::prelude::*;

/// The module `dml._dml`.
#[pymodule]
fn _dml(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(knn::knn, m)?)?;
    m.add_function(wrap_pyfunction!(eval::evaluate, m)?)?;
    m.add_function(wrap_pyfunction!(eval::cluster_scores, m)?)?;
    m.add_function(wrap_pyfunction!(convert::buffer_address, m)?)?;
    m.add_class::<miner::Miner>()?;
    m.add_class::<sampler::PkSampler>()?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
