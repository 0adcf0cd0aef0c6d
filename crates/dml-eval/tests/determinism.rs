//! Metrics are the same bits whatever the thread count and however rayon splits the work.

use dml_eval::{EvalConfig, evaluate};
use dml_kernels::Metric;
use ndarray::Array2;
use rand::{Rng, SeedableRng};

#[test]
fn metrics_are_bitwise_reproducible_across_thread_counts() {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(11);
    // Enough queries for several scoring chunks and k-means blocks.
    let n = 1500;
    let x = Array2::from_shape_fn((n, 16), |_| rng.random_range(-1.0f32..1.0));
    let labels: Vec<u32> = (0..n).map(|i| (i % 23) as u32).collect();
    let cfg = EvalConfig {
        recall_at: vec![1, 2, 4, 8],
        nmi: true,
        ..EvalConfig::default()
    };
    let run = |threads: usize| {
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .expect("thread pool")
            .install(|| evaluate(x.view(), &labels, Metric::Euclidean, &cfg).expect("evaluate"))
    };
    let one = run(1);
    for threads in [2, 3, 4] {
        let many = run(threads);
        assert_eq!(one.recall_at, many.recall_at, "{threads} threads");
        assert_eq!(one.precision_at_1.to_bits(), many.precision_at_1.to_bits());
        let bits = |v: Option<f64>| v.expect("on by default").to_bits();
        assert_eq!(bits(one.r_precision), bits(many.r_precision));
        assert_eq!(bits(one.map_at_r), bits(many.map_at_r));
        assert_eq!(one.nmi.map(f64::to_bits), many.nmi.map(f64::to_bits));
    }
}
