//! Forward + backward time of the differentiable distances (feature `tch`) at the losses' batch
//! size, next to `torch.cdist` through the same LibTorch, for a side-by-side with
//! pytorch-metric-learning's `LpDistance` (which calls `torch.cdist`).
//!
//! `cargo run --release -p dml-kernels --features tch --example tensor_speed [threads]`
//!
//! Each measurement is the best of several rounds of the median over repetitions of
//! `(d * w).sum().backward()` on a fresh leaf, with `w` a fixed random weight matrix (so the
//! gradient is not uniform).

use std::time::Instant;

use dml_kernels::{Metric, tensor};
use tch::{Kind, Tensor};

fn median_us(reps: usize, f: &mut dyn FnMut()) -> f64 {
    let mut t: Vec<f64> = (0..reps)
        .map(|_| {
            let s = Instant::now();
            f();
            s.elapsed().as_secs_f64() * 1e6
        })
        .collect();
    t.sort_by(f64::total_cmp);
    t[reps / 2]
}

fn main() -> Result<(), dml_kernels::Error> {
    let threads: i32 = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(1);
    tch::set_num_threads(threads);
    tch::manual_seed(0);
    let (b, d) = (256_i64, 128_i64);
    let x = Tensor::rand([b, d], (Kind::Float, tch::Device::Cpu)) * 2.0 - 1.0;
    let w = Tensor::rand([b, b], (Kind::Float, tch::Device::Cpu));
    println!("libtorch threads: {}, B={b}, D={d}", tch::get_num_threads());
    type Case<'a> = (&'a str, Box<dyn Fn(&Tensor) -> Tensor>);
    let cases: Vec<Case<'_>> = vec![
        (
            "self_pairwise euclidean",
            Box::new(|x| tensor::self_pairwise(Metric::Euclidean, x).expect("dist")),
        ),
        (
            "self_pairwise squared_euclidean",
            Box::new(|x| tensor::self_pairwise(Metric::SquaredEuclidean, x).expect("dist")),
        ),
        (
            "self_pairwise cosine",
            Box::new(|x| tensor::self_pairwise(Metric::Cosine, x).expect("dist")),
        ),
        (
            "self_pairwise dot",
            Box::new(|x| tensor::self_pairwise(Metric::Dot, x).expect("dist")),
        ),
        (
            "pairwise(x, x) euclidean",
            Box::new(|x| tensor::pairwise(Metric::Euclidean, x, x).expect("dist")),
        ),
        (
            "torch.cdist(x, x)",
            Box::new(|x| Tensor::cdist(x, x, 2.0, None)),
        ),
    ];
    let mut best = vec![f64::INFINITY; cases.len()];
    let mut best_fwd = vec![f64::INFINITY; cases.len()];
    // Rounds alternate between the cases so that a noisy neighbour hurts them alike.
    for _ in 0..5 {
        for (i, (_, f)) in cases.iter().enumerate() {
            let fwd = median_us(50, &mut || {
                let _ = f(&x);
            });
            let total = median_us(50, &mut || {
                let xg = x.detach().set_requires_grad(true);
                (f(&xg) * &w).sum(Kind::Float).backward();
            });
            best[i] = best[i].min(total);
            best_fwd[i] = best_fwd[i].min(fwd);
        }
    }
    for (i, (name, _)) in cases.iter().enumerate() {
        println!(
            "{name:34} forward {:7.1} us   forward+backward {:7.1} us",
            best_fwd[i], best[i]
        );
    }
    Ok(())
}
