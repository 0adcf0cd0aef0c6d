//! Retrieval and clustering metrics (dml-eval) for `dml.evaluate` and `dml.AccuracyCalculator`.

use dml_eval::{
    EvalConfig, KMeansParams, Metrics, adjusted_mutual_info, evaluate_with_progress, kmeans,
    normalized_mutual_info,
};
use numpy::{PyReadonlyArray1, PyReadonlyArray2};
use pyo3::prelude::*;
use pyo3::types::PyDict;

use crate::convert::{labels, matrix, metric as parse_metric, value_error};

/// dml-eval's scores as a dict with the keys of `Metrics::to_json` (`recall_at_<k>`,
/// `precision_at_1`, `r_precision`, `map_at_r`, `nmi`, `ami`, `n_queries`,
/// `n_queries_without_positive`); a score that was not computed is `None`.
#[pyfunction]
#[pyo3(signature = (
    query, query_labels, reference, reference_labels, metric, recall_at, r_metrics, nmi, ami,
    seed, kmeans_restarts, kmeans_max_iter,
))]
#[allow(clippy::too_many_arguments)]
pub(crate) fn evaluate<'py>(
    py: Python<'py>,
    query: PyReadonlyArray2<'py, f32>,
    query_labels: PyReadonlyArray1<'py, u32>,
    reference: Option<PyReadonlyArray2<'py, f32>>,
    reference_labels: Option<PyReadonlyArray1<'py, u32>>,
    metric: &str,
    recall_at: Vec<usize>,
    r_metrics: bool,
    nmi: bool,
    ami: bool,
    seed: u64,
    kmeans_restarts: usize,
    kmeans_max_iter: usize,
) -> PyResult<Bound<'py, PyDict>> {
    let metric = parse_metric(metric)?;
    let q = matrix(&query, "query")?;
    let ql = labels(&query_labels, "query_labels")?;
    let reference = match (&reference, &reference_labels) {
        (Some(r), Some(rl)) => Some((matrix(r, "reference")?, labels(rl, "reference_labels")?)),
        _ => None,
    };
    let cfg = EvalConfig {
        recall_at,
        r_metrics,
        nmi,
        ami,
        seed,
        kmeans_restarts,
        kmeans_max_iter,
    };
    let m: Metrics = py
        .detach(|| evaluate_with_progress(q, ql, reference, metric, &cfg, &mut |_| {}))
        .map_err(value_error)?;
    metrics_dict(py, &m)
}

/// NMI and AMI of a k-means clustering of `x` (k = number of classes in `labels`), for an
/// evaluation whose retrieval scores are undefined (no query has a same-class reference) but
/// whose clustering scores are not. Either is `None` when not requested.
#[pyfunction]
#[pyo3(signature = (x, x_labels, nmi, ami, seed, kmeans_restarts, kmeans_max_iter))]
#[allow(clippy::too_many_arguments)]
pub(crate) fn cluster_scores(
    py: Python<'_>,
    x: PyReadonlyArray2<'_, f32>,
    x_labels: PyReadonlyArray1<'_, u32>,
    nmi: bool,
    ami: bool,
    seed: u64,
    kmeans_restarts: usize,
    kmeans_max_iter: usize,
) -> PyResult<(Option<f64>, Option<f64>)> {
    let x = matrix(&x, "query")?;
    let y = labels(&x_labels, "query_labels")?;
    py.detach(|| -> dml_eval::Result<(Option<f64>, Option<f64>)> {
        let mut classes = y.to_vec();
        classes.sort_unstable();
        classes.dedup();
        let clusters = kmeans(
            x,
            classes.len(),
            &KMeansParams {
                restarts: kmeans_restarts,
                max_iter: kmeans_max_iter,
                seed,
            },
        )?;
        let nmi = nmi
            .then(|| normalized_mutual_info(y, &clusters.assignments))
            .transpose()?;
        let ami = ami
            .then(|| adjusted_mutual_info(y, &clusters.assignments))
            .transpose()?;
        Ok((nmi, ami))
    })
    .map_err(value_error)
}

/// `Metrics::to_json` as a Python dict (numbers as float or int, null as None).
fn metrics_dict<'py>(py: Python<'py>, m: &Metrics) -> PyResult<Bound<'py, PyDict>> {
    let out = PyDict::new(py);
    let serde_json::Value::Object(map) = m.to_json() else {
        unreachable!("Metrics::to_json returns an object")
    };
    for (key, value) in map {
        match value {
            serde_json::Value::Null => out.set_item(key, py.None())?,
            serde_json::Value::Number(n) => match n.as_u64() {
                Some(count) => out.set_item(key, count)?,
                None => out.set_item(key, n.as_f64())?,
            },
            other => out.set_item(key, other.to_string())?,
        }
    }
    Ok(out)
}
