//! Miners (dml-sampling) for the pytorch-metric-learning-named miner classes of `dml`.

use std::sync::Mutex;

use dml_kernels::{Metric, l2_normalize, pairwise, self_pairwise};
use dml_sampling::{MinerConfig, MinerContext, Tuples};
use ndarray::{Array2, ArrayView2, CowArray, Ix2};
use numpy::{IntoPyArray, PyArray1, PyReadonlyArray1, PyReadonlyArray2};
use pyo3::prelude::*;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::convert::{label_values, matrix, metric as parse_metric, value_error};

/// A dml-sampling miner with its own seeded random stream: the embeddings' distance matrix is
/// computed by dml-kernels, the tuples by the miner.
#[pyclass(module = "dml._dml", frozen)]
pub(crate) struct Miner {
    config: MinerConfig,
    metric: Metric,
    normalize: bool,
    rng: Mutex<ChaCha8Rng>,
}

#[pymethods]
impl Miner {
    /// `config` is a dml `MinerConfig` as JSON (`{"kind": "batch_hard"}`, ...); it is checked
    /// here, once, with the miner's own named errors.
    #[new]
    #[pyo3(signature = (config, metric, normalize, seed))]
    fn new(config: &str, metric: &str, normalize: bool, seed: u64) -> PyResult<Self> {
        let config: MinerConfig = serde_json::from_str(config).map_err(value_error)?;
        // The parameters are checked here for the smallest sphere (2-d); the miner is built for
        // the embeddings' own length at each call, as pml reads it from the batch.
        config
            .build(MinerContext { embedding_dim: 2 })
            .map_err(value_error)?;
        Ok(Miner {
            config,
            metric: parse_metric(metric)?,
            normalize,
            rng: Mutex::new(ChaCha8Rng::seed_from_u64(seed)),
        })
    }

    /// The index tuples of one batch: `[a, p, n]` (triplets) or `[a1, p, a2, n]` (pairs), each
    /// an int64 array. With `ref_emb`, anchors index the batch and the other ends `ref_emb`.
    #[pyo3(signature = (embeddings, labels_, ref_emb, ref_labels))]
    fn mine<'py>(
        &self,
        py: Python<'py>,
        embeddings: PyReadonlyArray2<'py, f32>,
        labels_: PyReadonlyArray1<'py, i64>,
        ref_emb: Option<PyReadonlyArray2<'py, f32>>,
        ref_labels: Option<PyReadonlyArray1<'py, i64>>,
    ) -> PyResult<Vec<Bound<'py, PyArray1<i64>>>> {
        let x = matrix(&embeddings, "embeddings")?;
        let y = label_values(&labels_, "labels")?;
        let reference = match (&ref_emb, &ref_labels) {
            (Some(r), Some(rl)) => Some((matrix(r, "ref_emb")?, label_values(rl, "ref_labels")?)),
            _ => None,
        };
        let tuples = py.detach(|| -> PyResult<Tuples> {
            let miner = self
                .config
                .build(MinerContext {
                    embedding_dim: x.ncols(),
                })
                .map_err(value_error)?;
            let x = self.maybe_normalize(x);
            let mut rng = self.rng.lock().unwrap_or_else(|e| e.into_inner());
            match reference {
                None => {
                    let [y] = class_ids([y]);
                    let dist = self_pairwise(self.metric, x.view()).map_err(renamed)?;
                    miner.mine(dist.view(), self.metric, &y, &mut *rng)
                }
                Some((r, ry)) => {
                    let [y, ry] = class_ids([y, ry]);
                    let r = self.maybe_normalize(r);
                    let dist = pairwise(self.metric, x.view(), r.view()).map_err(renamed)?;
                    miner.mine_reference(dist.view(), self.metric, &y, &ry, &mut *rng)
                }
            }
            .map_err(value_error)
        })?;
        let columns = match tuples {
            Tuples::Triplets(t) => vec![t.anchor, t.positive, t.negative],
            Tuples::Pairs(p) => vec![p.pos_anchor, p.positive, p.neg_anchor, p.negative],
        };
        Ok(columns
            .into_iter()
            .map(|c| {
                c.into_iter()
                    .map(i64::from)
                    .collect::<Vec<_>>()
                    .into_pyarray(py)
            })
            .collect())
    }
}

/// Class ids for label arrays whose labels are only compared with each other (a miner's): the
/// labels themselves when every one lies in `0..=u32::MAX` (the usual case, one pass and no
/// sort), otherwise each label's rank among the distinct labels of all the arrays. Either way two
/// entries get the same id exactly when their labels are equal.
fn class_ids<const N: usize>(parts: [&[i64]; N]) -> [Vec<u32>; N] {
    let small = |v: i64| u32::try_from(v).ok();
    if parts.iter().all(|p| p.iter().all(|&v| small(v).is_some())) {
        return parts.map(|p| p.iter().map(|&v| v as u32).collect());
    }
    let mut classes: Vec<i64> = parts.iter().flat_map(|p| p.iter().copied()).collect();
    classes.sort_unstable();
    classes.dedup();
    // Every label is in `classes`; more than u32::MAX distinct labels would need a distance
    // matrix over more than 4 billion items, which could not have been allocated.
    let id = |v: &i64| classes.binary_search(v).map_or(u32::MAX, |i| i as u32);
    parts.map(|p| p.iter().map(id).collect())
}

/// dml-kernels' error with its operands named as the miner's caller named them (`x`, `a` →
/// `embeddings`, `b` → `ref_emb`).
fn renamed(err: dml_kernels::Error) -> PyErr {
    let name = |m: &str| if m == "b" { "ref_emb" } else { "embeddings" };
    match err {
        dml_kernels::Error::NonFinite { matrix, row, col } => value_error(format!(
            "non-finite value in {} at row {row}, column {col}",
            name(matrix)
        )),
        other => value_error(other),
    }
}

impl Miner {
    /// The rows as they are, or L2-normalised (pml's distances normalise by default).
    fn maybe_normalize<'a>(&self, x: ArrayView2<'a, f32>) -> CowArray<'a, f32, Ix2> {
        if self.normalize {
            let owned: Array2<f32> = l2_normalize(x);
            CowArray::from(owned)
        } else {
            CowArray::from(x)
        }
    }
}
