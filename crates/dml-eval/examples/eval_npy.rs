//! Evaluates embeddings stored as `.npy` files and prints the metrics with the wall time.
//!
//! ```text
//! cargo run --release -p dml-eval --example eval_npy -- embeddings.npy labels.npy [metric] [--no-nmi]
//! ```
//!
//! The `dml eval` command of the facade crate is the full-featured front end; this example shows
//! the library calls and serves for ad-hoc timing.

use std::time::Instant;

use dml_eval::{EvalConfig, KMeansParams, evaluate, kmeans, normalized_mutual_info, npy};
use dml_kernels::Metric;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (Some(emb), Some(lab)) = (args.first(), args.get(1)) else {
        eprintln!("usage: eval_npy EMBEDDINGS.npy LABELS.npy [metric] [--no-nmi]");
        std::process::exit(2);
    };
    let metric: Metric = args
        .get(2)
        .filter(|a| !a.starts_with("--"))
        .map_or(Ok(Metric::Euclidean), |m| m.parse())?;
    let cfg = EvalConfig {
        nmi: !args.iter().any(|a| a == "--no-nmi"),
        ..EvalConfig::default()
    };
    let t = Instant::now();
    let (x, y) = npy::read_embeddings_and_labels(emb, lab)?;
    let read_s = t.elapsed().as_secs_f64();

    let t = Instant::now();
    let retrieval = evaluate(
        x.view(),
        &y,
        metric,
        &EvalConfig {
            nmi: false,
            ..cfg.clone()
        },
    )?;
    let retrieval_s = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let mut all = retrieval;
    let mut clustering = String::new();
    if cfg.nmi {
        let n_classes = y.iter().collect::<std::collections::HashSet<_>>().len();
        let params = KMeansParams {
            restarts: cfg.kmeans_restarts,
            max_iter: cfg.kmeans_max_iter,
            seed: cfg.seed,
            seeding: cfg.kmeans_seeding,
        };
        let km = kmeans(x.view(), n_classes, &params)?;
        all.nmi = Some(normalized_mutual_info(&y, &km.assignments)?);
        clustering = format!(
            ", k-means (k = {n_classes}, {} iterations) + NMI {:.3} s",
            km.n_iter,
            t.elapsed().as_secs_f64()
        );
    }
    println!("{all}");
    println!("{}", all.to_json());
    eprintln!(
        "{} × {}: read {read_s:.3} s, retrieval {retrieval_s:.3} s{clustering}",
        x.nrows(),
        x.ncols()
    );
    Ok(())
}
