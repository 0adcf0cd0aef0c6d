//! Retrieval and clustering metrics (dml-eval) for `dml.evaluate` and `dml.AccuracyCalculator`.

use dml_eval::{
    EvalConfig, KMeansParams, Metrics, Seeding, adjusted_mutual_info, evaluate_including_queries,
    evaluate_with_progress, kmeans, normalized_mutual_info,
};
use numpy::{PyReadonlyArray1, PyReadonlyArray2};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};

use crate::convert::{labels, matrix, metric as parse_metric, value_error};
use crate::knn::check_prefix;

/// dml-eval's scores as the dict of `Metrics::to_json` (`recall_at_<k>`, `precision_at_1`,
/// `r_precision`, `map_at_r`, `nmi`, ..., `per_class` and `avg_of_avgs` when asked for); a
/// score that was not computed is `None` or absent.
///
/// `config` is an `EvalConfig` as JSON (unknown keys refused). With a reference and
/// `ref_includes_query`, the query must be the reference's first rows (with their labels) and
/// each query leaves its own row out (`evaluate_including_queries`).
#[pyfunction]
#[pyo3(signature = (query, query_labels, reference, reference_labels, metric, config, ref_includes_query))]
#[allow(clippy::too_many_arguments)]
pub(crate) fn evaluate<'py>(
    py: Python<'py>,
    query: PyReadonlyArray2<'py, f32>,
    query_labels: PyReadonlyArray1<'py, u32>,
    reference: Option<PyReadonlyArray2<'py, f32>>,
    reference_labels: Option<PyReadonlyArray1<'py, u32>>,
    metric: &str,
    config: &str,
    ref_includes_query: bool,
) -> PyResult<Bound<'py, PyAny>> {
    let metric = parse_metric(metric)?;
    let cfg: EvalConfig = serde_json::from_str(config).map_err(value_error)?;
    let q = matrix(&query, "query")?;
    let ql = labels(&query_labels, "query_labels")?;
    let reference = match (&reference, &reference_labels) {
        (Some(r), Some(rl)) => Some((matrix(r, "reference")?, labels(rl, "reference_labels")?)),
        _ => None,
    };
    let m: Metrics = py.detach(|| -> PyResult<Metrics> {
        match reference {
            Some((r, rl)) if ref_includes_query => {
                check_prefix(q, r)?;
                if rl.len() < ql.len() || rl[..ql.len()] != *ql {
                    return Err(PyValueError::new_err(
                        "ref_includes_query=True needs query_labels to be the first labels of \
                         reference_labels",
                    ));
                }
                evaluate_including_queries(r, rl, q.nrows(), metric, &cfg).map_err(value_error)
            }
            other => {
                evaluate_with_progress(q, ql, other, metric, &cfg, &mut |_| {}).map_err(value_error)
            }
        }
    })?;
    to_python(py, &m.to_json())
}

/// NMI and AMI of a k-means clustering of `x` (k = number of classes in `labels`), for an
/// evaluation whose retrieval scores are undefined (no query has a same-class reference) but
/// whose clustering scores are not. Either is `None` when not requested.
#[pyfunction]
#[pyo3(signature = (x, x_labels, nmi, ami, seed, kmeans_restarts, kmeans_max_iter, kmeans_seeding))]
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
    kmeans_seeding: &str,
) -> PyResult<(Option<f64>, Option<f64>)> {
    let seeding: Seeding =
        serde_json::from_value(serde_json::Value::String(kmeans_seeding.to_owned()))
            .map_err(|e| PyValueError::new_err(format!("kmeans_seeding: {e}")))?;
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
                seeding,
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

/// A JSON value as Python objects: objects as dicts, arrays as lists, counts as int, other
/// numbers as float, null as None.
fn to_python<'py>(py: Python<'py>, value: &serde_json::Value) -> PyResult<Bound<'py, PyAny>> {
    use serde_json::Value;
    Ok(match value {
        Value::Null => py.None().into_bound(py),
        Value::Bool(b) => b.into_pyobject(py)?.to_owned().into_any(),
        Value::Number(n) => match n.as_u64() {
            Some(count) => count.into_pyobject(py)?.into_any(),
            None => n.as_f64().into_pyobject(py)?.into_any(),
        },
        Value::String(s) => s.into_pyobject(py)?.into_any(),
        Value::Array(items) => {
            let list = PyList::empty(py);
            for item in items {
                list.append(to_python(py, item)?)?;
            }
            list.into_any()
        }
        Value::Object(map) => {
            let dict = PyDict::new(py);
            for (key, item) in map {
                dict.set_item(key, to_python(py, item)?)?;
            }
            dict.into_any()
        }
    })
}
