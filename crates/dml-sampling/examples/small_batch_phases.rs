//! Where a miner's call on one small batch spends its time, phase by phase: the L2
//! normalisation, the batch's Euclidean distance matrix (`dml_kernels::self_pairwise`), and the
//! mining from that matrix (pair margin, batch hard, multi-similarity), as the Python package's
//! miners run them.
//!
//! `cargo run --release -p dml-sampling --example small_batch_phases [-- B [D]]`
//! (default B = 256, D = 128, K = 4 items per class). Prints the median of 3,000 calls of each
//! phase in µs: medians, since on a shared machine contention only ever adds time to some calls.

use std::time::Instant;

use dml_kernels::{Metric, l2_normalize, pairwise, self_pairwise};
use dml_sampling::{
    BatchHardMinerConfig, Miner, MultiSimilarityMinerConfig, PairMarginMinerConfig,
};
use ndarray::Array2;
use rand::{Rng, SeedableRng};

/// Median time of one call of `f`, in µs, after a warm-up.
fn median_us(mut f: impl FnMut()) -> f64 {
    for _ in 0..50 {
        f();
    }
    let mut t: Vec<f64> = (0..3000)
        .map(|_| {
            let s = Instant::now();
            f();
            s.elapsed().as_secs_f64() * 1e6
        })
        .collect();
    t.sort_by(f64::total_cmp);
    t[t.len() / 2]
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let b: usize = args.next().map_or(Ok(256), |s| s.parse())?;
    let dim: usize = args.next().map_or(Ok(128), |s| s.parse())?;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
    let x = Array2::from_shape_fn((b, dim), |_| rng.random::<f32>() - 0.5);
    let labels: Vec<u32> = (0..b as u32).map(|i| i / 4).collect();
    let xn = l2_normalize(x.view());
    let euclidean = self_pairwise(Metric::Euclidean, xn.view())?;
    let cosine = self_pairwise(Metric::Dot, xn.view())?;
    let miners: Vec<(&str, Box<dyn Miner>, Metric)> = vec![
        (
            "mining: pair margin (0.2, 0.8)",
            Box::new(PairMarginMinerConfig::default().init()?),
            Metric::Euclidean,
        ),
        (
            "mining: batch hard",
            Box::new(BatchHardMinerConfig::default().init()?),
            Metric::Euclidean,
        ),
        (
            "mining: multi-similarity (0.1)",
            Box::new(MultiSimilarityMinerConfig { epsilon: 0.1 }.init()?),
            Metric::Dot,
        ),
    ];
    println!(
        "B = {b}, D = {dim}, rayon threads {}",
        rayon::current_num_threads()
    );
    let phase = |name: &str, us: f64| println!("  {name:<36} {us:8.1} µs");
    phase(
        "l2_normalize",
        median_us(|| drop(std::hint::black_box(l2_normalize(x.view())))),
    );
    phase(
        "self_pairwise (Euclidean)",
        median_us(|| {
            std::hint::black_box(self_pairwise(Metric::Euclidean, xn.view()).ok());
        }),
    );
    phase(
        "pairwise(x, x) (Euclidean, whole)",
        median_us(|| {
            std::hint::black_box(pairwise(Metric::Euclidean, xn.view(), xn.view()).ok());
        }),
    );
    for (name, miner, metric) in &miners {
        let d = if metric.is_similarity() {
            &cosine
        } else {
            &euclidean
        };
        phase(
            name,
            median_us(|| {
                std::hint::black_box(miner.mine(d.view(), *metric, &labels, &mut rng).ok());
            }),
        );
    }
    Ok(())
}
