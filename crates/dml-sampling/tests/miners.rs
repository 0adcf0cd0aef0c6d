//! Invariants of every miner against naive references, on random batches and every metric.

use std::collections::BTreeSet;

use dml_kernels::Metric;
use dml_sampling::{
    AllMinerConfig, BatchHardMinerConfig, DistanceWeightedMinerConfig, HardNegativeMinerConfig,
    HardNegativeSelect, LiftedStructuredMinerConfig, Miner, MinerConfig,
    MultiSimilarityMinerConfig, NPairsMinerConfig, PairMarginMinerConfig, PairSelect, Pairs,
    SemiHardFallback, SemiHardMinerConfig, SemiHardSelect, Triplets, TupleKind, Tuples,
    UniformMinerConfig,
};
use ndarray::Array2;
use proptest::prelude::*;

mod common;
use common::{all_metrics, cross, dis, pairs, rng, trip};

fn matrix(x: &[Vec<f32>], metric: Metric) -> Array2<f32> {
    cross(x, x, metric)
}

fn check_triplet_labels(t: &Triplets, labels: &[u32]) {
    for i in 0..t.len() {
        let (a, p, n) = (
            t.anchor[i] as usize,
            t.positive[i] as usize,
            t.negative[i] as usize,
        );
        assert_ne!(a, p);
        assert_eq!(labels[a], labels[p]);
        assert_ne!(labels[a], labels[n]);
    }
}

fn batch() -> impl Strategy<Value = (Vec<u32>, Vec<Vec<f32>>)> {
    (1usize..24, 1u32..5).prop_flat_map(|(n, c)| {
        (
            proptest::collection::vec(0..c, n),
            proptest::collection::vec(proptest::collection::vec(-1.0f32..1.0, 3), n),
        )
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn batch_hard_is_naive_argmax_argmin((labels, x) in batch(), metric in all_metrics()) {
        let d = matrix(&x, metric);
        let t = trip(BatchHardMinerConfig::default().init().unwrap().mine(d.view(), metric, &labels, &mut rng()).unwrap());
        let mut want = Triplets::default();
        for a in 0..labels.len() {
            let v = |j: usize| dis(metric, d[[a, j]]);
            let pos: Vec<usize> = (0..labels.len()).filter(|&j| j != a && labels[j] == labels[a]).collect();
            let neg: Vec<usize> = (0..labels.len()).filter(|&j| labels[j] != labels[a]).collect();
            if pos.is_empty() || neg.is_empty() { continue; }
            // Strict comparisons in index order: ties keep the lower index.
            let p = pos.iter().copied().fold(pos[0], |b, j| if v(j) > v(b) { j } else { b });
            let n = neg.iter().copied().fold(neg[0], |b, j| if v(j) < v(b) { j } else { b });
            want.anchor.push(a as u32); want.positive.push(p as u32); want.negative.push(n as u32);
        }
        prop_assert_eq!(t, want);
    }

    #[test]
    fn hard_and_semi_hard_sets_are_naive_filters((labels, x) in batch(), metric in all_metrics(), margin in 0.05f32..0.8) {
        let d = matrix(&x, metric);
        let all = Triplets::all(&labels);
        let v = |i: u32, j: u32| dis(metric, d[[i as usize, j as usize]]);
        let filter = |keep: &dyn Fn(f32, f32) -> bool| -> Triplets {
            let mut t = Triplets::default();
            for i in 0..all.len() {
                let (a, p, n) = (all.anchor[i], all.positive[i], all.negative[i]);
                if keep(v(a, p), v(a, n)) { t.anchor.push(a); t.positive.push(p); t.negative.push(n); }
            }
            t
        };
        let hard = trip(HardNegativeMinerConfig { select: HardNegativeSelect::AllHard }.init().unwrap().mine(d.view(), metric, &labels, &mut rng()).unwrap());
        prop_assert_eq!(hard, filter(&|ap, an| an <= ap));
        let semi = trip(SemiHardMinerConfig { margin, select: SemiHardSelect::All, ..Default::default() }.init().unwrap().mine(d.view(), metric, &labels, &mut rng()).unwrap());
        prop_assert_eq!(semi, filter(&|ap, an| an - ap > 0.0 && an - ap <= margin));
    }

    #[test]
    fn random_semi_hard_stays_in_band((labels, x) in batch(), metric in all_metrics(), margin in 0.05f32..0.8) {
        let d = matrix(&x, metric);
        let v = |i: u32, j: u32| dis(metric, d[[i as usize, j as usize]]);
        let all = Triplets::all(&labels);
        let with_band: BTreeSet<(u32, u32)> = (0..all.len())
            .filter(|&i| { let m = v(all.anchor[i], all.negative[i]) - v(all.anchor[i], all.positive[i]); m > 0.0 && m <= margin })
            .map(|i| (all.anchor[i], all.positive[i]))
            .collect();
        let t = trip(SemiHardMinerConfig { margin, ..Default::default() }.init().unwrap().mine(d.view(), metric, &labels, &mut rng()).unwrap());
        check_triplet_labels(&t, &labels);
        let got: BTreeSet<(u32, u32)> = t.anchor.iter().copied().zip(t.positive.iter().copied()).collect();
        prop_assert_eq!(got.len(), t.len(), "one triplet per positive pair");
        prop_assert_eq!(&got, &with_band);
        for i in 0..t.len() {
            let m = v(t.anchor[i], t.negative[i]) - v(t.anchor[i], t.positive[i]);
            prop_assert!(m > 0.0 && m <= margin);
        }
        // With a fallback every positive pair that has a negative gets one triplet.
        let fb = trip(SemiHardMinerConfig { margin, fallback: SemiHardFallback::Hardest, ..Default::default() }.init().unwrap().mine(d.view(), metric, &labels, &mut rng()).unwrap());
        let pairs_with_neg: BTreeSet<(u32, u32)> = all.anchor.iter().copied().zip(all.positive.iter().copied()).collect();
        prop_assert_eq!(fb.len(), pairs_with_neg.len());
        check_triplet_labels(&fb, &labels);
    }

    #[test]
    fn hardest_negative_per_pair((labels, x) in batch(), metric in all_metrics()) {
        let d = matrix(&x, metric);
        let t = trip(HardNegativeMinerConfig::default().init().unwrap().mine(d.view(), metric, &labels, &mut rng()).unwrap());
        check_triplet_labels(&t, &labels);
        let all = Triplets::all(&labels);
        let pairs: BTreeSet<(u32, u32)> = all.anchor.iter().copied().zip(all.positive.iter().copied()).collect();
        prop_assert_eq!(t.len(), pairs.len());
        for i in 0..t.len() {
            let a = t.anchor[i] as usize;
            let best = (0..labels.len()).filter(|&j| labels[j] != labels[a]).map(|j| dis(metric, d[[a, j]])).fold(f32::INFINITY, f32::min);
            prop_assert_eq!(dis(metric, d[[a, t.negative[i] as usize]]), best);
        }
    }

    #[test]
    fn multi_similarity_is_the_epsilon_rule((labels, x) in batch(), metric in all_metrics(), eps in 0.0f32..0.5) {
        let d = matrix(&x, metric);
        let p = pairs(MultiSimilarityMinerConfig { epsilon: eps }.init().unwrap().mine(d.view(), metric, &labels, &mut rng()).unwrap());
        let n = labels.len();
        let mut want = Pairs::default();
        for a in 0..n {
            let v = |j: usize| dis(metric, d[[a, j]]);
            let pos: Vec<usize> = (0..n).filter(|&j| j != a && labels[j] == labels[a]).collect();
            let neg: Vec<usize> = (0..n).filter(|&j| labels[j] != labels[a]).collect();
            if pos.is_empty() || neg.is_empty() { continue; }
            let max_pos = pos.iter().map(|&j| v(j)).fold(f32::NEG_INFINITY, f32::max);
            let min_neg = neg.iter().map(|&j| v(j)).fold(f32::INFINITY, f32::min);
            for &j in &pos { if v(j) + eps > min_neg { want.pos_anchor.push(a as u32); want.positive.push(j as u32); } }
            for &j in &neg { if v(j) - eps < max_pos { want.neg_anchor.push(a as u32); want.negative.push(j as u32); } }
        }
        prop_assert_eq!(p, want);
    }

    #[test]
    fn pair_margin_is_the_margin_rule(
        (labels, x) in batch(), metric in all_metrics(), pos_margin in -0.5f32..1.5, neg_margin in -0.5f32..1.5,
    ) {
        let d = matrix(&x, metric);
        let cfg = PairMarginMinerConfig { pos_margin, neg_margin };
        let p = pairs(cfg.init().unwrap().mine(d.view(), metric, &labels, &mut rng()).unwrap());
        prop_assert_eq!(p, naive_pair_margin(d.view(), metric, &labels, &labels, true, cfg));
    }

    #[test]
    fn sampling_miners_respect_labels((labels, x) in batch(), metric in all_metrics(), k in 1usize..4) {
        let d = matrix(&x, metric);
        let all = Triplets::all(&labels);
        let n_pos_pairs = all.anchor.iter().copied().zip(all.positive.iter().copied()).collect::<BTreeSet<_>>().len();

        let u = trip(UniformMinerConfig { negatives_per_positive: k }.init().unwrap().mine(d.view(), metric, &labels, &mut rng()).unwrap());
        check_triplet_labels(&u, &labels);
        prop_assert_eq!(u.len(), n_pos_pairs * k);

        let dw = DistanceWeightedMinerConfig { embedding_dim: Some(3), ..Default::default() }.init().unwrap();
        let t = trip(dw.mine(d.view(), metric, &labels, &mut rng()).unwrap());
        check_triplet_labels(&t, &labels);
        prop_assert!(t.len() <= n_pos_pairs);
        for i in 0..t.len() {
            let x = d[[t.anchor[i] as usize, t.negative[i] as usize]];
            let sd = match metric {
                Metric::Euclidean => x,
                Metric::SquaredEuclidean => x.max(0.0).sqrt(),
                _ => (2.0 - 2.0 * x).max(0.0).sqrt(),
            };
            prop_assert!(sd < 1.4 + 1e-6, "negative beyond the cut-off: {}", sd);
        }

        for select in [PairSelect::First, PairSelect::Random] {
            let np = trip(NPairsMinerConfig { select }.init().unwrap().mine(d.view(), metric, &labels, &mut rng()).unwrap());
            check_triplet_labels(&np, &labels);
            let classes_with_pair = {
                let mut c: Vec<u32> = labels.clone(); c.sort_unstable();
                c.chunk_by(|a, b| a == b).filter(|g| g.len() >= 2).count()
            };
            let expect = if classes_with_pair >= 2 { classes_with_pair * (classes_with_pair - 1) } else { 0 };
            prop_assert_eq!(np.len(), expect);
            // One anchor per class, and each negative is another anchor's positive.
            let anchors: BTreeSet<u32> = np.anchor.iter().copied().collect();
            let positives: BTreeSet<u32> = np.positive.iter().copied().collect();
            prop_assert_eq!(anchors.len(), if expect > 0 { classes_with_pair } else { 0 });
            for &n in &np.negative { prop_assert!(positives.contains(&n)); }
        }

        let l = pairs(LiftedStructuredMinerConfig::default().init().unwrap().mine(d.view(), metric, &labels, &mut rng()).unwrap());
        let has_neg = labels.iter().any(|&y| y != labels[0]);
        let unordered = n_pos_pairs / 2;
        let all_pairs = Pairs::all(&labels);
        let any_pos = all_pairs.n_pos() > 0;
        prop_assert_eq!(l.n_pos(), if has_neg { unordered } else { 0 });
        for i in 0..l.n_pos() {
            prop_assert!(l.pos_anchor[i] < l.positive[i]);
            prop_assert_eq!(labels[l.pos_anchor[i] as usize], labels[l.positive[i] as usize]);
        }
        for i in 0..l.n_neg() {
            prop_assert_ne!(labels[l.neg_anchor[i] as usize], labels[l.negative[i] as usize]);
        }
        prop_assert_eq!(l.is_empty(), !(has_neg && any_pos));

        let a = AllMinerConfig { output: Some(TupleKind::Pairs) }.init().unwrap().mine(d.view(), metric, &labels, &mut rng()).unwrap();
        prop_assert_eq!(a, Tuples::Pairs(all_pairs));
    }
}

#[test]
fn degenerate_batches_give_empty_tuples() {
    let miners: Vec<Box<dyn Miner>> = vec![
        Box::new(AllMinerConfig::default().init().unwrap()),
        Box::new(UniformMinerConfig::default().init().unwrap()),
        Box::new(HardNegativeMinerConfig::default().init().unwrap()),
        Box::new(
            SemiHardMinerConfig {
                fallback: SemiHardFallback::Easiest,
                ..Default::default()
            }
            .init()
            .unwrap(),
        ),
        Box::new(BatchHardMinerConfig::default().init().unwrap()),
        Box::new(NPairsMinerConfig::default().init().unwrap()),
        Box::new(LiftedStructuredMinerConfig::default().init().unwrap()),
        Box::new(DistanceWeightedMinerConfig::default().init_for(3).unwrap()),
        Box::new(MultiSimilarityMinerConfig::default().init().unwrap()),
    ];
    let x: Vec<Vec<f32>> = (0..5).map(|i| vec![i as f32, 1.0, 0.5]).collect();
    for labels in [vec![3u32; 5], vec![0, 1, 2, 3, 4]] {
        let d = matrix(&x, Metric::Euclidean);
        for m in &miners {
            let t = m
                .mine(d.view(), Metric::Euclidean, &labels, &mut rng())
                .unwrap();
            assert!(t.is_empty(), "{m:?} on {labels:?}");
        }
    }
    for m in &miners {
        let t = m
            .mine(
                Array2::zeros((0, 0)).view(),
                Metric::Cosine,
                &[],
                &mut rng(),
            )
            .unwrap();
        assert!(t.is_empty(), "{m:?} on an empty batch");
        let err = m
            .mine(
                Array2::zeros((3, 2)).view(),
                Metric::Cosine,
                &[0, 1, 0],
                &mut rng(),
            )
            .unwrap_err();
        assert!(
            matches!(
                err,
                dml_sampling::Error::DistanceShape {
                    rows: 3,
                    cols: 2,
                    n_labels: 3
                }
            ),
            "{err}"
        );
    }
}

#[test]
fn non_contiguous_views_are_read_correctly() {
    let labels = [0u32, 0, 1, 1, 2, 2];
    let x: Vec<Vec<f32>> = (0..6)
        .map(|i| vec![(i as f32).sin(), (i as f32).cos(), 0.3])
        .collect();
    // An asymmetric matrix (a column-dependent offset), so that reading it with the wrong
    // strides, i.e. reading its transpose, changes what is mined.
    let mut d = matrix(&x, Metric::Euclidean);
    for ((_, j), v) in d.indexed_iter_mut() {
        *v += 0.3 * j as f32;
    }
    let column_major = d.t().to_owned(); // its transposed view is `d` with swapped strides
    let mine = |v: ndarray::ArrayView2<'_, f32>| {
        BatchHardMinerConfig::default()
            .init()
            .unwrap()
            .mine(v, Metric::Euclidean, &labels, &mut rng())
            .unwrap()
    };
    let a = mine(d.view());
    assert_eq!(mine(column_major.t()), a);
    // What a stride bug would see differs, so the comparison above can fail.
    assert_ne!(mine(d.t()), a);
}

#[test]
fn randomised_miners_are_reproducible_and_thread_independent() {
    // 128 items: large enough for the parallel path.
    let labels: Vec<u32> = (0..128).map(|i| i / 4).collect();
    let x: Vec<Vec<f32>> = (0..128)
        .map(|i| {
            vec![
                (i as f32 * 0.37).sin(),
                (i as f32 * 0.11).cos(),
                (i as f32 * 0.05).sin(),
            ]
        })
        .collect();
    let d = matrix(&x, Metric::Euclidean);
    let miners: Vec<Box<dyn Miner>> = vec![
        Box::new(UniformMinerConfig::default().init().unwrap()),
        Box::new(
            SemiHardMinerConfig {
                margin: 0.5,
                ..Default::default()
            }
            .init()
            .unwrap(),
        ),
        Box::new(
            DistanceWeightedMinerConfig {
                embedding_dim: Some(3),
                ..Default::default()
            }
            .init()
            .unwrap(),
        ),
    ];
    for m in &miners {
        let a = m
            .mine(d.view(), Metric::Euclidean, &labels, &mut rng())
            .unwrap();
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .build()
            .unwrap();
        let b = pool.install(|| {
            m.mine(d.view(), Metric::Euclidean, &labels, &mut rng())
                .unwrap()
        });
        assert_eq!(a, b, "{m:?}");
        assert!(!a.is_empty());
    }
}

/// `with_loss_tuples` fills only the `all` miner's unset output; a given output and every other
/// miner stay as configured.
#[test]
fn the_all_miner_takes_the_losss_form_unless_told() {
    let unset = MinerConfig::All(AllMinerConfig::default());
    for kind in [TupleKind::Pairs, TupleKind::Triplets] {
        assert_eq!(
            unset.with_loss_tuples(kind),
            MinerConfig::All(AllMinerConfig { output: Some(kind) })
        );
        let given = MinerConfig::All(AllMinerConfig {
            output: Some(TupleKind::Triplets),
        });
        assert_eq!(given.with_loss_tuples(kind), given);
    }
    for other in MinerConfig::defaults().filter(|m| !matches!(m, MinerConfig::All(_))) {
        assert_eq!(other.with_loss_tuples(TupleKind::Pairs), other);
    }
    // Without a loss, the unset output is triplets; P2 × K2 has 4 ordered positive pairs and
    // 8 ordered negative pairs, and 4 × 2 = 8 triplets.
    let labels = [0, 0, 1, 1];
    let d = Array2::<f32>::zeros((4, 4));
    let mine = |c: &MinerConfig| {
        c.build(dml_sampling::MinerContext { embedding_dim: 3 })
            .unwrap()
            .mine(d.view(), Metric::Euclidean, &labels, &mut rng())
            .unwrap()
    };
    assert!(matches!(mine(&unset), Tuples::Triplets(t) if t.anchor.len() == 8));
    assert!(matches!(
        mine(&unset.with_loss_tuples(TupleKind::Pairs)),
        Tuples::Pairs(p) if p.pos_anchor.len() == 4 && p.neg_anchor.len() == 8
    ));
}

/// A distance matrix of `n × m` values from a grid whose squares are exact in f32 (so squaring
/// neither merges nor reorders values), with labels for both sides.
fn grid_matrix() -> impl Strategy<Value = (Vec<u32>, Vec<u32>, Vec<f32>, usize)> {
    (1usize..12, 1usize..140).prop_flat_map(|(n, m)| {
        (
            proptest::collection::vec(0u32..4, n),
            proptest::collection::vec(0u32..4, m),
            proptest::collection::vec((0u32..12).prop_map(|v| v as f32 * 0.5), n * m),
            Just(m),
        )
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn order_only_miners_mine_the_same_from_squared_distances((labels, ref_labels, values, m) in grid_matrix()) {
        let n = labels.len();
        let d = Array2::from_shape_vec((n, m), values).unwrap();
        let sq = d.mapv(|x| x * x);
        let mut checked = 0;
        for cfg in MinerConfig::defaults() {
            let miner = cfg.build(dml_sampling::MinerContext { embedding_dim: 3 }).unwrap();
            if !miner.order_only() {
                continue;
            }
            checked += 1;
            let plain = miner.mine_reference(d.view(), Metric::Euclidean, &labels, &ref_labels, &mut rng()).unwrap();
            let squared = miner.mine_reference(sq.view(), Metric::SquaredEuclidean, &labels, &ref_labels, &mut rng()).unwrap();
            prop_assert_eq!(plain, squared, "{:?}", cfg);
        }
        prop_assert!(checked > 0, "no miner says it reads only the order");
    }
}

/// `mines_reference` says exactly which miners mine against a reference set, for every miner
/// of the registry.
#[test]
fn mines_reference_matches_mine_reference() {
    let labels = [0u32, 0, 1, 1];
    let ref_labels = [0u32, 1, 1];
    let dist = ndarray::Array2::from_shape_fn((4, 3), |(i, j)| 0.1 + (i * 3 + j) as f32 / 10.0);
    for cfg in MinerConfig::defaults() {
        let miner = cfg
            .build(dml_sampling::MinerContext { embedding_dim: 3 })
            .expect("defaults build");
        let got = miner.mine_reference(
            dist.view(),
            Metric::Euclidean,
            &labels,
            &ref_labels,
            &mut rng(),
        );
        assert_eq!(
            got.is_ok(),
            cfg.mines_reference(),
            "{}: {:?}",
            cfg.kind(),
            got.err()
        );
    }
}

/// pml's pair-margin rule as plain loops: positive pairs (same label, not the anchor itself
/// within a batch) farther than `pos_margin`, negative pairs closer than `neg_margin` (the other
/// way round for similarities), row-major.
fn naive_pair_margin(
    d: ndarray::ArrayView2<'_, f32>,
    metric: Metric,
    labels: &[u32],
    ref_labels: &[u32],
    within: bool,
    cfg: PairMarginMinerConfig,
) -> Pairs {
    let mut want = Pairs::default();
    for (a, &la) in labels.iter().enumerate() {
        for (j, &lj) in ref_labels.iter().enumerate() {
            let v = d[[a, j]];
            let (pos, neg) = if metric.is_similarity() {
                (v < cfg.pos_margin, v > cfg.neg_margin)
            } else {
                (v > cfg.pos_margin, v < cfg.neg_margin)
            };
            if lj == la && !(within && j == a) && pos {
                want.pos_anchor.push(a as u32);
                want.positive.push(j as u32);
            } else if lj != la && neg {
                want.neg_anchor.push(a as u32);
                want.negative.push(j as u32);
            }
        }
    }
    want
}

/// The miners that make one pass per row mine batches of up to 512 × 512 entries on the calling
/// thread and larger ones in parallel: on both sides of that size, within a batch and against a
/// reference set, they give what the naive loops give (pair margin), the same tuples on one
/// thread as on several, and non-empty tuples (so the comparisons can fail).
#[test]
fn row_pass_miners_across_the_serial_threshold() {
    use rand::{Rng, SeedableRng};
    let mut r = rand_chacha::ChaCha8Rng::seed_from_u64(3);
    let cfg = PairMarginMinerConfig {
        pos_margin: 0.3,
        neg_margin: 0.7,
    };
    let one_thread = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .unwrap();
    // (rows, columns, within the batch): 512² is the last size mined on the calling thread.
    for (n, m, within) in [
        (511, 511, true),
        (512, 512, true),
        (513, 513, true),
        (300, 873, false),
        (300, 874, false),
    ] {
        let labels: Vec<u32> = (0..n).map(|_| r.random_range(0..n as u32 / 4)).collect();
        let ref_labels: Vec<u32> = if within {
            labels.clone()
        } else {
            (0..m).map(|_| r.random_range(0..n as u32 / 4)).collect()
        };
        for metric in [Metric::Euclidean, Metric::Cosine] {
            let d = Array2::from_shape_fn((n, m), |_| r.random_range(0.0f32..1.0));
            let miners: Vec<Box<dyn Miner>> = vec![
                Box::new(cfg.init().unwrap()),
                Box::new(MultiSimilarityMinerConfig { epsilon: 0.1 }.init().unwrap()),
                Box::new(BatchHardMinerConfig::default().init().unwrap()),
            ];
            for miner in &miners {
                let mine = || {
                    if within {
                        miner.mine(d.view(), metric, &labels, &mut rng())
                    } else {
                        miner.mine_reference(d.view(), metric, &labels, &ref_labels, &mut rng())
                    }
                    .unwrap()
                };
                let got = mine();
                assert!(!got.is_empty(), "{miner:?} {n}x{m}");
                assert_eq!(one_thread.install(mine), got, "{miner:?} {n}x{m}");
            }
            let got = pairs(
                if within {
                    cfg.init()
                        .unwrap()
                        .mine(d.view(), metric, &labels, &mut rng())
                } else {
                    cfg.init().unwrap().mine_reference(
                        d.view(),
                        metric,
                        &labels,
                        &ref_labels,
                        &mut rng(),
                    )
                }
                .unwrap(),
            );
            let want = naive_pair_margin(d.view(), metric, &labels, &ref_labels, within, cfg);
            assert_eq!(got, want, "pair margin {metric} {n}x{m}");
        }
    }
}
