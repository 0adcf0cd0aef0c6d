//! The Rust side of the pytest check "the Python API equals the Rust API": runs the calls a job
//! file lists through dml-eval, dml-kernels and dml-sampling directly (no Python involved) and
//! writes their results as JSON, which `tests/test_rust_api.py` compares with the same calls
//! made through the `dml` package.
//!
//! ```text
//! cargo run -p dml-python --example rust_reference -- JOB.json OUT.json
//! ```
//!
//! A job is `{"evaluate": [...], "knn": [...], "miners": [...], "pk": [...]}`; arrays are `.npy`
//! paths relative to the job file (float32 embeddings, class ids as integers). Each entry is
//! described where it is read below. `cargo xtask test` builds this example and passes its path
//! to pytest in `DML_RUST_REFERENCE`.

use std::path::{Path, PathBuf};

use dml_eval::{EvalConfig, npy};
use dml_kernels::{Metric, knn, knn_self, knn_self_rows, l2_normalize, pairwise, self_pairwise};
use dml_sampling::{MinerConfig, PkSampler, Tuples};
use ndarray::Array2;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde_json::{Value, json};

type Res<T> = Result<T, Box<dyn std::error::Error>>;

fn main() -> Res<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [job, out] = &args[..] else {
        eprintln!("usage: rust_reference JOB.json OUT.json");
        std::process::exit(2);
    };
    let job_path = PathBuf::from(job);
    let dir = job_path.parent().unwrap_or(Path::new(".")).to_path_buf();
    let job: Value = serde_json::from_str(&std::fs::read_to_string(&job_path)?)?;
    let list = |key: &str| job[key].as_array().cloned().unwrap_or_default();
    let result = json!({
        "evaluate": list("evaluate").iter().map(|e| evaluate(&dir, e)).collect::<Res<Vec<_>>>()?,
        "knn": list("knn").iter().map(|e| search(&dir, e)).collect::<Res<Vec<_>>>()?,
        "miners": list("miners").iter().map(|e| mine(&dir, e)).collect::<Res<Vec<_>>>()?,
        "pk": list("pk").iter().map(|e| pk(&dir, e)).collect::<Res<Vec<_>>>()?,
    });
    std::fs::write(out, serde_json::to_string(&result)?)?;
    Ok(())
}

fn matrix(dir: &Path, v: &Value) -> Res<Array2<f32>> {
    Ok(npy::read_embeddings(
        dir.join(v.as_str().ok_or("array path expected")?),
    )?)
}

fn labels(dir: &Path, v: &Value) -> Res<Vec<u32>> {
    Ok(npy::read_labels(
        dir.join(v.as_str().ok_or("labels path expected")?),
    )?)
}

fn metric(v: &Value) -> Res<Metric> {
    Ok(v.as_str().ok_or("metric name expected")?.parse()?)
}

/// `{"query", "query_labels", "reference"?, "reference_labels"?, "ref_includes_query"?,
/// "metric", "config"}` → `Metrics::to_json()` (`config` is an `EvalConfig` as JSON; with
/// `ref_includes_query` the query is the reference's first rows).
fn evaluate(dir: &Path, e: &Value) -> Res<Value> {
    let q = matrix(dir, &e["query"])?;
    let ql = labels(dir, &e["query_labels"])?;
    let cfg: EvalConfig = serde_json::from_value(e["config"].clone())?;
    let m = metric(&e["metric"])?;
    let metrics = if e["reference"].is_null() {
        dml_eval::evaluate(q.view(), &ql, m, &cfg)?
    } else {
        let r = matrix(dir, &e["reference"])?;
        let rl = labels(dir, &e["reference_labels"])?;
        if e["ref_includes_query"].as_bool() == Some(true) {
            dml_eval::evaluate_including_queries(r.view(), &rl, q.nrows(), m, &cfg)?
        } else {
            dml_eval::evaluate_with_reference(q.view(), &ql, r.view(), &rl, m, &cfg)?
        }
    };
    Ok(metrics.to_json())
}

/// `{"query", "reference"?, "k", "metric", "ref_includes_query"}` → `{"scores", "indices"}`.
fn search(dir: &Path, e: &Value) -> Res<Value> {
    let q = matrix(dir, &e["query"])?;
    let k = e["k"].as_u64().ok_or("k expected")? as usize;
    let m = metric(&e["metric"])?;
    let found = if e["reference"].is_null() {
        knn_self(m, q.view(), k)?
    } else {
        let r = matrix(dir, &e["reference"])?;
        if e["ref_includes_query"].as_bool() == Some(true) {
            knn_self_rows(m, r.view(), 0..q.nrows(), k)?
        } else {
            knn(m, q.view(), r.view(), k)?
        }
    };
    Ok(json!({
        "scores": found.scores.outer_iter().map(|r| r.to_vec()).collect::<Vec<_>>(),
        "indices": found.indices.outer_iter().map(|r| r.to_vec()).collect::<Vec<_>>(),
    }))
}

/// `{"embeddings", "labels", "ref_emb"?, "ref_labels"?, "config", "metric", "normalize", "seed",
/// "calls"}` → one tuple (a list of index lists) per call, the calls sharing one random stream.
fn mine(dir: &Path, e: &Value) -> Res<Value> {
    let mut x = matrix(dir, &e["embeddings"])?;
    let y = labels(dir, &e["labels"])?;
    let m = metric(&e["metric"])?;
    let normalize = e["normalize"].as_bool() == Some(true);
    let config: MinerConfig = serde_json::from_value(e["config"].clone())?;
    let miner = config.build(dml_sampling::MinerContext {
        embedding_dim: x.ncols(),
    })?;
    if normalize {
        x = l2_normalize(x.view());
    }
    let reference = if e["ref_emb"].is_null() {
        None
    } else {
        let mut r = matrix(dir, &e["ref_emb"])?;
        if normalize {
            r = l2_normalize(r.view());
        }
        Some((r, labels(dir, &e["ref_labels"])?))
    };
    let mut rng = ChaCha8Rng::seed_from_u64(e["seed"].as_u64().ok_or("seed expected")?);
    let mut calls = Vec::new();
    for _ in 0..e["calls"].as_u64().unwrap_or(1) {
        let tuples = match &reference {
            None => miner.mine(self_pairwise(m, x.view())?.view(), m, &y, &mut rng)?,
            Some((r, ry)) => miner.mine_reference(
                pairwise(m, x.view(), r.view())?.view(),
                m,
                &y,
                ry,
                &mut rng,
            )?,
        };
        calls.push(match tuples {
            Tuples::Triplets(t) => json!([t.anchor, t.positive, t.negative]),
            Tuples::Pairs(p) => json!([p.pos_anchor, p.positive, p.neg_anchor, p.negative]),
        });
    }
    Ok(Value::Array(calls))
}

/// `{"labels", "p", "k", "seed", "epochs"}` → the batches of each epoch.
fn pk(dir: &Path, e: &Value) -> Res<Value> {
    let y = labels(dir, &e["labels"])?;
    let get = |key: &str| e[key].as_u64().ok_or(format!("{key} expected"));
    let sampler = PkSampler::new(&y, get("p")? as usize, get("k")? as usize, get("seed")?)?;
    let epochs = e["epochs"].as_array().ok_or("epochs expected")?;
    Ok(Value::Array(
        epochs
            .iter()
            .map(|ep| json!(sampler.epoch(ep.as_u64().unwrap_or(0)).collect::<Vec<_>>()))
            .collect(),
    ))
}
