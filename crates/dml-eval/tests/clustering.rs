//! k-means, NMI and AMI against scikit-learn fixtures and hand-made cases.

use dml_eval::{
    Error, EvalConfig, KMeansParams, Seeding, adjusted_mutual_info, evaluate, kmeans,
    normalized_mutual_info,
};
use dml_kernels::Metric;
use ndarray::Array2;
use proptest::prelude::*;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::Value;

const SEEDINGS: [Seeding; 2] = [Seeding::KMeansParallel, Seeding::KMeansPlusPlus];

fn labels(v: &Value) -> Vec<u32> {
    v.as_array()
        .expect("labels")
        .iter()
        .map(|x| x.as_u64().expect("label") as u32)
        .collect()
}

/// NMI is a handful of f64 sums, so the only difference from scikit-learn is summation order.
const NMI_TOL: f64 = 1e-12;
/// AMI subtracts nearly equal quantities (MI − E[MI]) and builds ln(n!) from a running sum
/// where scikit-learn calls `gammaln`; 1e-10 covers both on these sizes.
const AMI_TOL: f64 = 1e-10;

#[test]
fn nmi_and_ami_match_scikit_learn() {
    let fixture: Value =
        serde_json::from_str(include_str!("fixtures/clustering.json")).expect("json");
    for (i, case) in fixture["cases"]
        .as_array()
        .expect("cases")
        .iter()
        .enumerate()
    {
        let t = labels(&case["labels_true"]);
        let p = labels(&case["labels_pred"]);
        let nmi = normalized_mutual_info(&t, &p).expect("nmi");
        let ami = adjusted_mutual_info(&t, &p).expect("ami");
        let want_nmi = case["nmi"].as_f64().expect("nmi");
        let want_ami = case["ami"].as_f64().expect("ami");
        assert!(
            (nmi - want_nmi).abs() <= NMI_TOL,
            "case {i}: nmi {nmi} vs sklearn {want_nmi}"
        );
        assert!(
            (ami - want_ami).abs() <= AMI_TOL,
            "case {i}: ami {ami} vs sklearn {want_ami}"
        );
    }
}

#[test]
fn clustering_scores_reject_length_mismatch() {
    assert!(matches!(
        normalized_mutual_info(&[0, 1], &[0]),
        Err(Error::ClusteringLengths {
            n_true: 2,
            n_pred: 1
        })
    ));
}

/// Blobs far apart relative to their spread: any correct k-means finds them.
fn blobs(n_classes: usize, per_class: usize, dim: usize, seed: u64) -> (Array2<f32>, Vec<u32>) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let centres: Vec<Vec<f32>> = (0..n_classes)
        .map(|c| {
            (0..dim)
                .map(|j| {
                    if j == c % dim {
                        100.0 * (1 + c / dim) as f32
                    } else {
                        0.0
                    }
                })
                .collect()
        })
        .collect();
    let n = n_classes * per_class;
    let mut x = Array2::zeros((n, dim));
    let mut y = Vec::with_capacity(n);
    for i in 0..n {
        let c = (i * 7919) % n_classes; // interleaved, not sorted by class
        for j in 0..dim {
            x[[i, j]] = centres[c][j] + rng.random_range(-1.0f32..1.0);
        }
        y.push(c as u32);
    }
    (x, y)
}

#[test]
fn kmeans_recovers_well_separated_classes() {
    let (x, y) = blobs(12, 25, 6, 3);
    for (restarts, seeding) in [1, 3].into_iter().flat_map(|r| SEEDINGS.map(|s| (r, s))) {
        let km = kmeans(
            x.view(),
            12,
            &KMeansParams {
                restarts,
                max_iter: 100,
                seed: 9,
                seeding,
            },
        )
        .expect("kmeans");
        assert_eq!(
            normalized_mutual_info(&y, &km.assignments).expect("nmi"),
            1.0
        );
        assert!(km.n_iter < 100, "converged");
        // Inertia is the sum of squared distances to the centroids: recompute it naively.
        let naive: f64 = x
            .outer_iter()
            .zip(&km.assignments)
            .map(|(r, &c)| {
                r.iter()
                    .zip(km.centroids.row(c as usize))
                    .map(|(&a, &b)| (f64::from(a) - f64::from(b)).powi(2))
                    .sum::<f64>()
            })
            .sum();
        assert!((km.inertia - naive).abs() <= 1e-9 * naive.max(1.0));
    }
    // Through evaluate: NMI (and AMI) are 1 on the same data.
    let cfg = EvalConfig {
        ami: true,
        ..EvalConfig::default()
    };
    let m = evaluate(x.view(), &y, Metric::Euclidean, &cfg).expect("evaluate");
    assert_eq!(m.nmi, Some(1.0));
    assert!((m.ami.expect("ami") - 1.0).abs() < 1e-12);
}

#[test]
fn kmeans_is_deterministic_in_the_seed() {
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let x = Array2::from_shape_fn((200, 5), |_| rng.random_range(-1.0f32..1.0));
    for seeding in SEEDINGS {
        let p = KMeansParams {
            restarts: 2,
            max_iter: 30,
            seed: 42,
            seeding,
        };
        let a = kmeans(x.view(), 7, &p).expect("kmeans");
        let b = kmeans(x.view(), 7, &p).expect("kmeans");
        assert_eq!(a.assignments, b.assignments);
        assert_eq!(a.inertia, b.inertia);
        // More restarts can only keep or lower the inertia (the first run is the same).
        let more = kmeans(x.view(), 7, &KMeansParams { restarts: 5, ..p }).expect("kmeans");
        assert!(more.inertia <= a.inertia);
    }
}

#[test]
fn kmeans_handles_duplicates_and_bad_k() {
    // Only 3 distinct points, k = 3: each distinct point becomes its own cluster, whichever
    // the seeding (k-means‖ with k = 3 of 6 points, and with all 6 points as clusters).
    let x = Array2::from_shape_vec((6, 1), vec![0.0f32, 0.0, 5.0, 5.0, 9.0, 9.0]).expect("shape");
    for seeding in SEEDINGS {
        for seed in 0..4 {
            let p = KMeansParams {
                seeding,
                seed,
                ..KMeansParams::default()
            };
            let km = kmeans(x.view(), 3, &p).expect("kmeans");
            assert_eq!(
                normalized_mutual_info(&[0, 0, 1, 1, 2, 2], &km.assignments).expect("nmi"),
                1.0
            );
            let all = kmeans(x.view(), 6, &p).expect("kmeans");
            assert_eq!(all.inertia, 0.0, "{seeding:?} seed {seed}");
        }
    }
    assert!(matches!(
        kmeans(x.view(), 7, &KMeansParams::default()),
        Err(Error::TooManyClusters { k: 7, n: 6 })
    ));
    assert!(matches!(
        kmeans(x.view(), 0, &KMeansParams::default()),
        Err(Error::TooManyClusters { k: 0, n: 6 })
    ));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// NMI is symmetric, invariant to renaming clusters, and in [0, 1].
    #[test]
    fn nmi_invariants(pairs in proptest::collection::vec((0u32..5, 0u32..4), 1..60), shift in 1u32..100) {
        let (t, p): (Vec<u32>, Vec<u32>) = pairs.into_iter().unzip();
        let a = normalized_mutual_info(&t, &p).expect("nmi");
        let b = normalized_mutual_info(&p, &t).expect("nmi");
        let renamed: Vec<u32> = p.iter().map(|&c| (c + shift) * 3).collect();
        let c = normalized_mutual_info(&t, &renamed).expect("nmi");
        prop_assert!((0.0..=1.0 + 1e-12).contains(&a));
        prop_assert!((a - b).abs() < 1e-12);
        prop_assert!((a - c).abs() < 1e-12);
        prop_assert!((normalized_mutual_info(&t, &t).expect("nmi") - 1.0).abs() < 1e-12);
    }
}
