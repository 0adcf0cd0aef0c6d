//! Ad-hoc timing of every miner on a random batch of unit vectors (B × 128, K = 4 per class).
//!
//! `cargo run --release -p dml-sampling --example mining_speed`
//! Prints the best-of-15 time per call of each miner at B = 128, 256, 1024, mining from a
//! precomputed matrix, and the time of the Euclidean matrix itself (ndarray GEMM) for reference.

use std::time::Instant;

use dml_kernels::Metric;
use dml_sampling::{
    BatchHardMinerConfig, DistanceWeightedMinerConfig, HardNegativeMinerConfig, HardNegativeSelect,
    Miner, MultiSimilarityMinerConfig, SemiHardMinerConfig, SemiHardSelect,
};
use ndarray::Array2;
use rand::{Rng, SeedableRng};

fn min_ms(mut f: impl FnMut()) -> f64 {
    f();
    let t: Vec<f64> = (0..15)
        .map(|_| {
            let s = Instant::now();
            f();
            s.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    // The minimum: the machine is shared, and contention only ever adds time.
    t.into_iter().fold(f64::INFINITY, f64::min)
}

fn main() -> dml_sampling::Result<()> {
    let dim = 128;
    for b in [128usize, 256, 1024] {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
        let mut x = Array2::from_shape_fn((b, dim), |_| rng.random::<f32>() - 0.5);
        for mut r in x.rows_mut() {
            let n = r.dot(&r).sqrt();
            r /= n;
        }
        let labels: Vec<u32> = (0..b as u32).map(|i| i / 4).collect();
        let mut cos = Array2::zeros((b, b));
        let mut euc = Array2::zeros((b, b));
        let t_mat = min_ms(|| {
            cos = x.dot(&x.t());
            euc = cos.mapv(|s: f32| (2.0 - 2.0 * s).max(0.0).sqrt());
        });
        println!("B = {b}: matrix (GEMM + sqrt) {t_mat:.3} ms");
        let miners: Vec<(&str, Box<dyn Miner>, Metric)> = vec![
            (
                "semi_hard all (pml TripletMarginMiner semihard)",
                Box::new(
                    SemiHardMinerConfig {
                        select: SemiHardSelect::All,
                        ..Default::default()
                    }
                    .init()?,
                ),
                Metric::Euclidean,
            ),
            (
                "semi_hard random",
                Box::new(SemiHardMinerConfig::default().init()?),
                Metric::Euclidean,
            ),
            (
                "hard_negative all_hard (pml TripletMarginMiner hard)",
                Box::new(
                    HardNegativeMinerConfig {
                        select: HardNegativeSelect::AllHard,
                    }
                    .init()?,
                ),
                Metric::Euclidean,
            ),
            (
                "hard_negative hardest",
                Box::new(HardNegativeMinerConfig::default().init()?),
                Metric::Euclidean,
            ),
            (
                "batch_hard (pml BatchHardMiner)",
                Box::new(BatchHardMinerConfig::default().init()?),
                Metric::Euclidean,
            ),
            (
                "distance_weighted (pml DistanceWeightedMiner)",
                Box::new(
                    DistanceWeightedMinerConfig {
                        embedding_dim: Some(dim),
                        ..Default::default()
                    }
                    .init()?,
                ),
                Metric::Euclidean,
            ),
            (
                "multi_similarity (pml MultiSimilarityMiner)",
                Box::new(MultiSimilarityMinerConfig::default().init()?),
                Metric::Cosine,
            ),
        ];
        for (name, m, metric) in &miners {
            let d = if metric.is_similarity() { &cos } else { &euc };
            let mut n = 0;
            let t = min_ms(|| {
                n = m
                    .mine(d.view(), *metric, &labels, &mut rng)
                    .map(|t| t.len())
                    .unwrap_or(0);
            });
            println!("  {name:<55} {t:8.3} ms  ({n} tuples)");
        }
    }
    Ok(())
}
