//! Times k-means with NMI at the size of Stanford Online Products' test set (60,000 × 128,
//! k = 11,316) on generated weakly clustered data, alternating with a fixed reference workload
//! (the symmetric top-1 search of the same points, `knn_self` with k = 1) so that a loaded
//! machine's figures can be scaled.
//!
//! ```text
//! cargo run --release -p dml-eval --example kmeans_sop -- [n] [k] [dim] [rounds] [seed]
//! ```
//!
//! Defaults: 60,000 points in 11,316 classes of 5 or 6 (`i · k / n`), 128-d, 1 round, seed 0.
//! The points are L2-normalised Gaussian clusters, noise as large as the class centres' spread
//! (scripts/compare_kmeans.py's generator with noise 1.0).

mod common;

use std::time::Instant;

use dml_eval::{KMeansParams, kmeans, normalized_mutual_info};
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
    let (n, k, d, rounds, seed) = (
        arg(0, 60_000),
        arg(1, 11_316),
        arg(2, 128),
        arg(3, 1),
        arg(4, 0),
    );
    let labels: Vec<u32> = (0..n).map(|i| (i * k / n) as u32).collect();
    let mut rng = ChaCha8Rng::seed_from_u64(12_345);
    let centres = Array2::from_shape_simple_fn((k, d), || normal(&mut rng));
    let mut x = Array2::from_shape_simple_fn((n, d), || normal(&mut rng));
    for (mut row, &l) in x.axis_iter_mut(Axis(0)).zip(&labels) {
        row += &centres.row(l as usize);
        let norm = row.dot(&row).sqrt().max(1e-12);
        row /= norm;
    }
    eprintln!(
        "{n} × {d}, k = {k}, {} threads",
        rayon::current_num_threads()
    );
    let params = KMeansParams {
        seed: seed as u64,
        ..KMeansParams::default()
    };
    for round in 1..=rounds {
        let (t, c) = (Instant::now(), cpu_seconds());
        let km = kmeans(x.view(), k, &params)?;
        let nmi = normalized_mutual_info(&labels, &km.assignments)?;
        let (kmeans_s, kmeans_cpu) = (t.elapsed().as_secs_f64(), cpu_seconds() - c);
        let (t, c) = (Instant::now(), cpu_seconds());
        std::hint::black_box(knn_self(Metric::Euclidean, x.view(), 1)?);
        let (reference_s, reference_cpu) = (t.elapsed().as_secs_f64(), cpu_seconds() - c);
        println!(
            "round {round}: k-means + NMI {kmeans_s:.2} s, CPU {kmeans_cpu:.1} s ({} Lloyd \
             iterations, NMI {nmi:.6}, inertia {:.6}); symmetric top-1 {reference_s:.2} s, CPU \
             {reference_cpu:.1} s; load {}",
            km.n_iter,
            km.inertia,
            std::fs::read_to_string("/proc/loadavg")
                .unwrap_or_default()
                .trim()
        );
    }
    Ok(())
}
