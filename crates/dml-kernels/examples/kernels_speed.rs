//! Ad-hoc timing of the kernels on the sizes used to compare with numpy and faiss.
//!
//! `cargo run --release -p dml-kernels --example kernels_speed [quick]`
//!
//! Prints the best of a few runs and GFLOP/s counted as 2·n·m·d (the GEMM's work), so the
//! figures compare directly with a BLAS sgemm of the same shape.

use std::time::Instant;

use dml_kernels::{Metric, knn, pairwise, pairwise_into, self_pairwise};
use ndarray::Array2;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

fn random(n: usize, d: usize, seed: u64) -> Array2<f32> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    Array2::from_shape_simple_fn((n, d), || rng.random_range(-1.0_f32..1.0))
}

fn best<T>(reps: usize, mut f: impl FnMut() -> T) -> f64 {
    (0..reps)
        .map(|_| {
            let t = Instant::now();
            std::hint::black_box(f());
            t.elapsed().as_secs_f64()
        })
        .fold(f64::INFINITY, f64::min)
}

fn main() -> Result<(), dml_kernels::Error> {
    let quick = std::env::args().any(|a| a == "quick");
    let skip_knn = std::env::args().any(|a| a == "no-knn");
    println!("rayon threads: {}", rayon::current_num_threads());
    let d = 128;
    for (n, reps) in [(256, 200), (8192, 3)] {
        let a = random(n, d, 1);
        let b = random(n, d, 2);
        let flop = 2.0 * (n * n * d) as f64;
        for metric in [Metric::SquaredEuclidean, Metric::Euclidean, Metric::Dot] {
            let t = best(reps, || pairwise(metric, a.view(), b.view()));
            println!(
                "pairwise {metric} {n}x{n}x{d}: {:.3} ms, {:.1} GFLOP/s",
                t * 1e3,
                flop / t / 1e9
            );
        }
        let mut out = Array2::zeros((n, n));
        let t = best(reps, || {
            pairwise_into(Metric::SquaredEuclidean, a.view(), b.view(), out.view_mut())
        });
        println!(
            "pairwise_into squared_euclidean {n}x{n}x{d} (buffer reused): {:.3} ms, {:.1} GFLOP/s",
            t * 1e3,
            flop / t / 1e9
        );
        let t = best(reps, || self_pairwise(Metric::Euclidean, a.view()));
        println!("self_pairwise euclidean {n}x{n}x{d}: {:.3} ms", t * 1e3);
    }
    if skip_knn {
        return Ok(());
    }
    let (nq, nr, k) = if quick {
        (2_000, 100_000, 10)
    } else {
        (10_000, 100_000, 10)
    };
    let q = random(nq, d, 3);
    let r = random(nr, d, 4);
    let flop = 2.0 * (nq * nr * d) as f64;
    let t = best(2, || knn(Metric::SquaredEuclidean, q.view(), r.view(), k));
    println!(
        "knn squared_euclidean {nq}x{nr}x{d} k={k}: {t:.3} s, {:.1} GFLOP/s",
        flop / t / 1e9
    );
    Ok(())
}
