//! Times a leave-one-out evaluation (MAP@R, no NMI) against the symmetric top-1 search of the
//! same points (`knn_self` with k = 1, half the distance GEMM), alternating the two in rounds so
//! that both see the same machine load.
//!
//! ```text
//! cargo run --release -p dml-eval --example eval_vs_gemm -- [n_classes] [per_class] [dim] [rounds]
//! ```
//!
//! Defaults: 5 classes of 7,000 points in 784-d (R = 6,999 per query), 3 rounds. The points are
//! clustered unit vectors (a random centre per class plus noise of the same scale), the shape
//! of the benchmark's `evaluate_euclidean` sets.

mod common;

use std::time::Instant;

use dml_eval::{EvalConfig, evaluate};
use dml_kernels::{Metric, knn_self};
use ndarray::{Array2, Axis};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use common::{cpu_seconds, normal};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .map(|a| a.parse())
        .collect::<Result<_, _>>()?;
    let arg = |i: usize, default: usize| args.get(i).copied().unwrap_or(default);
    let (n_classes, per_class, d, rounds) = (arg(0, 5), arg(1, 7_000), arg(2, 784), arg(3, 3));
    let labels: Vec<u32> = (0..n_classes as u32)
        .flat_map(|c| std::iter::repeat_n(c, per_class))
        .collect();
    let mut rng = ChaCha8Rng::seed_from_u64(8);
    let centres = Array2::from_shape_simple_fn((n_classes, d), || normal(&mut rng));
    let mut x = Array2::from_shape_simple_fn((labels.len(), d), || normal(&mut rng));
    for (mut row, &l) in x.axis_iter_mut(Axis(0)).zip(&labels) {
        row += &centres.row(l as usize);
        let norm = row.dot(&row).sqrt().max(1e-12);
        row /= norm;
    }
    let cfg = EvalConfig {
        nmi: false,
        ..EvalConfig::default()
    };
    eprintln!(
        "{} × {d}, {n_classes} classes, {} threads",
        x.nrows(),
        rayon::current_num_threads()
    );
    for round in 1..=rounds {
        let (t, c) = (Instant::now(), cpu_seconds());
        let m = evaluate(x.view(), &labels, Metric::Euclidean, &cfg)?;
        let (eval_s, eval_cpu) = (t.elapsed().as_secs_f64(), cpu_seconds() - c);
        let (t, c) = (Instant::now(), cpu_seconds());
        let nn = knn_self(Metric::Euclidean, x.view(), 1)?;
        let (top1_s, top1_cpu) = (t.elapsed().as_secs_f64(), cpu_seconds() - c);
        std::hint::black_box(nn);
        println!(
            "round {round}: evaluate {eval_s:.2} s, symmetric top-1 {top1_s:.2} s, ratio {:.2} \
             (CPU {eval_cpu:.1} s against {top1_cpu:.1} s, {:.2}; MAP@R {:.6}, load {})",
            eval_s / top1_s,
            eval_cpu / top1_cpu,
            m.map_at_r.unwrap_or(f64::NAN),
            std::fs::read_to_string("/proc/loadavg")
                .unwrap_or_default()
                .trim()
        );
    }
    Ok(())
}
