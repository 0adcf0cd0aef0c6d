//! Distance-weighted sampling: the density and the empirical distribution of drawn negatives.

use dml_kernels::Metric;
use dml_sampling::{DistanceWeightedMinerConfig, Miner, Tuples, unit_sphere_log_density};
use ndarray::Array2;
use rand::SeedableRng;

/// Midpoint rule over (0, 2) with many points: the density must integrate to 1.
#[test]
fn density_integrates_to_one() {
    for dim in [2usize, 3, 4, 16, 128, 512, 2048] {
        let steps = 200_000;
        let h = 2.0 / steps as f64;
        let mut s = 0.0;
        for i in 0..steps {
            s += unit_sphere_log_density((i as f64 + 0.5) * h, dim).exp();
        }
        // dim = 2 has an integrable singularity at d = 2, where the midpoint rule converges
        // slowly, hence the looser bound there.
        let tol = if dim == 2 { 5e-3 } else { 1e-6 };
        assert!((s * h - 1.0).abs() < tol, "dim {dim}: {}", s * h);
    }
}

/// Closed forms by hand: on S² (dim 3) q(d) = d/2; on S³ (dim 4) q(d) = (2/π)·d²·sqrt(1 − d²/4)... ·(1/2)
/// worked out as Γ(2)/(√π Γ(3/2)) = 2/π, so q(d) = (2/π) d² (1 − d²/4)^(1/2).
#[test]
fn density_matches_hand_calculations() {
    for d in [0.1f64, 0.5, 1.0, 1.4, 1.9] {
        let q3 = unit_sphere_log_density(d, 3).exp();
        assert!((q3 - d / 2.0).abs() < 1e-12, "{d}: {q3}");
        let q4 = unit_sphere_log_density(d, 4).exp();
        let want = 2.0 / std::f64::consts::PI * d * d * (1.0 - d * d / 4.0).sqrt();
        assert!((q4 - want).abs() < 1e-12, "{d}: {q4} vs {want}");
    }
    // High dimension stays finite in log space.
    let l = unit_sphere_log_density(0.5, 512);
    assert!(l.is_finite() && l < -300.0, "{l}");
    assert_eq!(unit_sphere_log_density(0.0, 16), f64::NEG_INFINITY);
    assert_eq!(unit_sphere_log_density(2.5, 16), f64::NEG_INFINITY);
    assert!(unit_sphere_log_density(1.0, 1).is_nan());
}

/// One anchor (item 0) with `n_pos − 1` positives and negatives at chosen distances: over many
/// draws the frequency of each negative must match its target weight `1/q(max(d, 0.5))`
/// (negatives at ≥ 1.4 never drawn). Pearson chi-square against the weights computed here from
/// the unnormalised density `d^(n−2) (1 − d²/4)^((n−3)/2)`; threshold: the 0.999 quantile of
/// chi-square with (categories − 1) degrees of freedom. The seed is fixed, so this is
/// deterministic; the threshold says the sampler is right, not lucky.
#[test]
fn negatives_follow_the_inverse_density() {
    let dim = 8usize;
    let neg_d = [
        0.2f32, 0.45, 0.6, 0.75, 0.9, 1.05, 1.2, 1.3, 1.39, 1.45, 1.7,
    ];
    let n_pos = 64usize;
    let n = n_pos + neg_d.len();
    let mut labels = vec![0u32; n_pos];
    labels.extend((0..neg_d.len()).map(|i| 1 + i as u32));
    let mut d = Array2::<f32>::from_elem((n, n), 1.0);
    for i in 0..n {
        d[[i, i]] = 0.0;
    }
    for (k, &x) in neg_d.iter().enumerate() {
        d[[0, n_pos + k]] = x;
        d[[n_pos + k, 0]] = x;
    }
    let miner = DistanceWeightedMinerConfig {
        embedding_dim: Some(dim),
        ..Default::default()
    }
    .init()
    .unwrap();
    let mut counts = vec![0u64; neg_d.len()];
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(2017);
    for _ in 0..1000 {
        let Tuples::Triplets(t) = miner
            .mine(d.view(), Metric::Euclidean, &labels, &mut rng)
            .unwrap()
        else {
            panic!("expected triplets")
        };
        for i in 0..t.len() {
            if t.anchor[i] == 0 {
                counts[t.negative[i] as usize - n_pos] += 1;
            }
        }
    }
    let nf = dim as f64;
    let w: Vec<f64> = neg_d
        .iter()
        .map(|&x| {
            let x = f64::from(x);
            if x >= 1.4 {
                return 0.0;
            }
            let x = x.max(0.5);
            1.0 / (x.powf(nf - 2.0) * (1.0 - x * x / 4.0).powf((nf - 3.0) / 2.0))
        })
        .collect();
    let total: u64 = counts.iter().sum();
    assert_eq!(total, 1000 * (n_pos as u64 - 1));
    let wsum: f64 = w.iter().sum();
    let mut chi2 = 0.0;
    let mut categories = 0;
    for (c, wi) in counts.iter().zip(&w) {
        if *wi == 0.0 {
            assert_eq!(*c, 0, "a negative beyond the cut-off was drawn");
            continue;
        }
        let e = total as f64 * wi / wsum;
        chi2 += (*c as f64 - e).powi(2) / e;
        categories += 1;
    }
    assert_eq!(categories, 9);
    // chi-square 0.999 quantile, 8 degrees of freedom.
    assert!(chi2 < 26.12, "chi2 = {chi2}, counts = {counts:?}");
}

/// The cap λ flattens the weights: with λ below every 1/q, sampling is uniform over the
/// drawable negatives; cosine input goes through d = sqrt(2 − 2s).
#[test]
fn weight_cap_and_cosine_input() {
    let miner = DistanceWeightedMinerConfig {
        embedding_dim: Some(64),
        max_weight: Some(1e-3),
        ..Default::default()
    }
    .init()
    .unwrap();
    for d in [0.6f64, 1.0, 1.3] {
        assert_eq!(miner.log_weight(d), Some(1e-3f64.ln()));
    }
    assert_eq!(miner.log_weight(1.4), None);
    // Without the cap, 512 dimensions: finite log weights, no overflow.
    let big = DistanceWeightedMinerConfig {
        embedding_dim: Some(512),
        ..Default::default()
    }
    .init()
    .unwrap();
    assert!(big.log_weight(0.1).unwrap().is_finite());
    assert!(big.log_weight(0.1) == big.log_weight(0.5));

    // Cosine similarity 0.9 -> d = sqrt(0.2) ≈ 0.447 (drawable); -0.5 -> d = sqrt(3) (never).
    let labels = [0u32, 0, 1, 2];
    let s = ndarray::array![
        [1.0f32, 0.8, 0.9, -0.5],
        [0.8, 1.0, -0.5, -0.5],
        [0.9, -0.5, 1.0, 0.0],
        [-0.5, -0.5, 0.0, 1.0]
    ];
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
    let Tuples::Triplets(t) = big
        .mine(s.view(), Metric::Cosine, &labels, &mut rng)
        .unwrap()
    else {
        panic!("expected triplets")
    };
    // Anchor 0 can only draw item 2; anchor 1's negatives are both at d = sqrt(3): dropped.
    assert_eq!(
        (t.anchor.clone(), t.positive.clone(), t.negative.clone()),
        (vec![0], vec![1], vec![2])
    );
}
