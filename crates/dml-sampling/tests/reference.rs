//! Mining a batch against a reference set (a memory bank), and the bank itself, against naive
//! references: anchors index the batch, positives and negatives the reference set, and nothing
//! is excluded as "self".

use dml_kernels::Metric;
use dml_sampling::{
    AllMinerConfig, BatchHardMinerConfig, DistanceWeightedMinerConfig, Error,
    HardNegativeMinerConfig, HardNegativeSelect, LiftedStructuredMinerConfig, MemoryBank, Miner,
    MinerConfig, MultiSimilarityMinerConfig, NPairsMinerConfig, Pairs, SemiHardMinerConfig,
    SemiHardSelect, Triplets, TupleKind, Tuples, UniformMinerConfig,
};
use ndarray::{Array2, array};
use proptest::prelude::*;

mod common;
use common::{all_metrics, cross, dis, pairs, rng, trip};

type Side = (Vec<u32>, Vec<Vec<f32>>);

fn side(max: usize, classes: u32) -> impl Strategy<Value = Side> {
    (1usize..max).prop_flat_map(move |n| {
        (
            proptest::collection::vec(0..classes, n),
            proptest::collection::vec(proptest::collection::vec(-1.0f32..1.0, 3), n),
        )
    })
}

/// Every (anchor, positive, negative) by three nested loops, anchors in the batch, the rest in
/// the reference set.
fn naive_all_triplets(labels: &[u32], ref_labels: &[u32]) -> Triplets {
    let mut t = Triplets::default();
    for (a, &la) in labels.iter().enumerate() {
        for (p, &lp) in ref_labels.iter().enumerate() {
            for (n, &ln) in ref_labels.iter().enumerate() {
                if lp == la && ln != la {
                    t.anchor.push(a as u32);
                    t.positive.push(p as u32);
                    t.negative.push(n as u32);
                }
            }
        }
    }
    t
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn all_reference_tuples_are_the_naive_loops((labels, _) in side(12, 4), (ref_labels, _) in side(20, 4)) {
        prop_assert_eq!(Triplets::all_reference(&labels, &ref_labels), naive_all_triplets(&labels, &ref_labels));
        let p = Pairs::all_reference(&labels, &ref_labels);
        let mut want = Pairs::default();
        for (a, &la) in labels.iter().enumerate() {
            for (j, &lj) in ref_labels.iter().enumerate() {
                if lj == la { want.pos_anchor.push(a as u32); want.positive.push(j as u32); }
                else { want.neg_anchor.push(a as u32); want.negative.push(j as u32); }
            }
        }
        prop_assert_eq!(p, want);
    }

    #[test]
    fn batch_hard_against_a_reference_is_naive_argmax_argmin(
        (labels, q) in side(12, 4), (ref_labels, r) in side(24, 4), metric in all_metrics()
    ) {
        let d = cross(&q, &r, metric);
        let t = trip(BatchHardMinerConfig::default().init().unwrap()
            .mine_reference(d.view(), metric, &labels, &ref_labels, &mut rng()).unwrap());
        let mut want = Triplets::default();
        for a in 0..labels.len() {
            let v = |j: usize| dis(metric, d[[a, j]]);
            let pos: Vec<usize> = (0..r.len()).filter(|&j| ref_labels[j] == labels[a]).collect();
            let neg: Vec<usize> = (0..r.len()).filter(|&j| ref_labels[j] != labels[a]).collect();
            if pos.is_empty() || neg.is_empty() { continue; }
            let p = pos.iter().copied().fold(pos[0], |b, j| if v(j) > v(b) { j } else { b });
            let n = neg.iter().copied().fold(neg[0], |b, j| if v(j) < v(b) { j } else { b });
            want.anchor.push(a as u32); want.positive.push(p as u32); want.negative.push(n as u32);
        }
        prop_assert_eq!(t, want);
    }

    #[test]
    fn hard_and_semi_hard_against_a_reference_are_naive_filters(
        (labels, q) in side(10, 3), (ref_labels, r) in side(16, 3), metric in all_metrics(), margin in 0.05f32..0.8
    ) {
        let d = cross(&q, &r, metric);
        let all = naive_all_triplets(&labels, &ref_labels);
        let v = |i: u32, j: u32| dis(metric, d[[i as usize, j as usize]]);
        let filter = |keep: &dyn Fn(f32, f32) -> bool| -> Triplets {
            let mut t = Triplets::default();
            for i in 0..all.len() {
                let (a, p, n) = (all.anchor[i], all.positive[i], all.negative[i]);
                if keep(v(a, p), v(a, n)) { t.anchor.push(a); t.positive.push(p); t.negative.push(n); }
            }
            t
        };
        let hard = trip(HardNegativeMinerConfig { select: HardNegativeSelect::AllHard }.init().unwrap()
            .mine_reference(d.view(), metric, &labels, &ref_labels, &mut rng()).unwrap());
        prop_assert_eq!(hard, filter(&|ap, an| an <= ap));
        let semi = trip(SemiHardMinerConfig { margin, select: SemiHardSelect::All, ..Default::default() }.init().unwrap()
            .mine_reference(d.view(), metric, &labels, &ref_labels, &mut rng()).unwrap());
        prop_assert_eq!(semi, filter(&|ap, an| an - ap > 0.0 && an - ap <= margin));
    }

    #[test]
    fn multi_similarity_against_a_reference_is_the_epsilon_rule(
        (labels, q) in side(10, 3), (ref_labels, r) in side(20, 3), metric in all_metrics(), eps in 0.0f32..0.5
    ) {
        let d = cross(&q, &r, metric);
        let p = pairs(MultiSimilarityMinerConfig { epsilon: eps }.init().unwrap()
            .mine_reference(d.view(), metric, &labels, &ref_labels, &mut rng()).unwrap());
        let mut want = Pairs::default();
        for a in 0..labels.len() {
            let v = |j: usize| dis(metric, d[[a, j]]);
            let pos: Vec<usize> = (0..r.len()).filter(|&j| ref_labels[j] == labels[a]).collect();
            let neg: Vec<usize> = (0..r.len()).filter(|&j| ref_labels[j] != labels[a]).collect();
            if pos.is_empty() || neg.is_empty() { continue; }
            let max_pos = pos.iter().map(|&j| v(j)).fold(f32::NEG_INFINITY, f32::max);
            let min_neg = neg.iter().map(|&j| v(j)).fold(f32::INFINITY, f32::min);
            for &j in &pos { if v(j) + eps > min_neg { want.pos_anchor.push(a as u32); want.positive.push(j as u32); } }
            for &j in &neg { if v(j) - eps < max_pos { want.neg_anchor.push(a as u32); want.negative.push(j as u32); } }
        }
        prop_assert_eq!(p, want);
    }

    #[test]
    fn sampling_miners_against_a_reference_respect_its_labels(
        (labels, q) in side(10, 3), (ref_labels, r) in side(20, 3), k in 1usize..3
    ) {
        // Unit vectors in 3-d, Euclidean: distances lie in [0, 2] as the distance-weighted
        // miner's sphere density expects.
        let metric = Metric::Euclidean;
        let d = cross(&q, &r, metric);
        let miners: Vec<Box<dyn Miner>> = vec![
            Box::new(UniformMinerConfig { negatives_per_positive: k }.init().unwrap()),
            Box::new(SemiHardMinerConfig::default().init().unwrap()),
            Box::new(HardNegativeMinerConfig::default().init().unwrap()),
            Box::new(DistanceWeightedMinerConfig { embedding_dim: Some(3), cutoff: 0.0, ..Default::default() }.init().unwrap()),
        ];
        for miner in miners {
            let t = trip(miner.mine_reference(d.view(), metric, &labels, &ref_labels, &mut rng()).unwrap());
            t.check_reference_indices_ok(labels.len(), ref_labels.len());
            for i in 0..t.len() {
                let (a, p, n) = (t.anchor[i] as usize, t.positive[i] as usize, t.negative[i] as usize);
                prop_assert_eq!(labels[a], ref_labels[p], "{:?}", miner);
                prop_assert_ne!(labels[a], ref_labels[n], "{:?}", miner);
            }
        }
        // Uniform: every (anchor, reference positive) pair that has a negative, k times.
        let u = trip(UniformMinerConfig { negatives_per_positive: k }.init().unwrap()
            .mine_reference(d.view(), metric, &labels, &ref_labels, &mut rng()).unwrap());
        let expected: usize = labels.iter().map(|&la| {
            let pos = ref_labels.iter().filter(|&&l| l == la).count();
            let has_neg = ref_labels.iter().any(|&l| l != la);
            if has_neg { pos * k } else { 0 }
        }).sum();
        prop_assert_eq!(u.len(), expected);
    }

    /// A reference set that is the batch itself, with each item's comparison with its own copy
    /// removed, gives exactly the within-batch tuples of the miners that do not look at the
    /// self-distance (every pair, every triplet, all hard triplets up to self, batch-hard on
    /// distinct points).
    #[test]
    fn the_batch_as_its_own_reference_without_self_comparisons_is_the_batch(
        (labels, x) in side(16, 4), metric in all_metrics()
    ) {
        let d = cross(&x, &x, metric);
        let own: Vec<u32> = (0..labels.len() as u32).collect();
        for output in [TupleKind::Pairs, TupleKind::Triplets] {
            let m = AllMinerConfig { output: Some(output) }.init().unwrap();
            let inside = m.mine(d.view(), metric, &labels, &mut rng()).unwrap();
            let against = m.mine_reference(d.view(), metric, &labels, &labels, &mut rng()).unwrap();
            prop_assert_eq!(against.remove_self_comparisons(&own), inside);
        }
    }
}

/// Extension used above: index checks as the losses will run them.
trait CheckOk {
    fn check_reference_indices_ok(&self, n: usize, m: usize);
}

impl CheckOk for Triplets {
    fn check_reference_indices_ok(&self, n: usize, m: usize) {
        Tuples::Triplets(self.clone())
            .check_reference_indices(n, m)
            .unwrap();
    }
}

#[test]
fn remove_self_comparisons_drops_only_positive_pairs_with_the_own_slot() {
    // Batch of 2 (labels 0, 1) enqueued at slots 3 and 0 of a 4-slot bank.
    let p = Pairs {
        pos_anchor: vec![0, 0, 1, 1],
        positive: vec![3, 2, 0, 1],
        neg_anchor: vec![0, 1],
        negative: vec![0, 3],
        pos_weight: Some(vec![0.1, 0.2, 0.3, 0.4]),
        neg_weight: None,
    };
    let own = [3, 0];
    let Tuples::Pairs(kept) = Tuples::Pairs(p).remove_self_comparisons(&own) else {
        unreachable!()
    };
    assert_eq!(kept.pos_anchor, [0, 1]);
    assert_eq!(kept.positive, [2, 1]);
    assert_eq!(kept.pos_weight, Some(vec![0.2, 0.4]));
    assert_eq!((kept.neg_anchor, kept.negative), (vec![0, 1], vec![0, 3]));
    let t = Triplets {
        anchor: vec![0, 0, 1],
        positive: vec![3, 2, 0],
        negative: vec![1, 1, 2],
        weight: None,
    };
    let Tuples::Triplets(kept) = Tuples::Triplets(t).remove_self_comparisons(&own) else {
        unreachable!()
    };
    assert_eq!(
        (kept.anchor, kept.positive, kept.negative),
        (vec![0], vec![2], vec![1])
    );
}

#[test]
fn miners_that_pair_batch_items_refuse_a_reference_and_shapes_are_checked() {
    let d = Array2::<f32>::zeros((2, 3));
    for miner in [
        MinerConfig::NPairs(NPairsMinerConfig::default()),
        MinerConfig::LiftedStructured(LiftedStructuredMinerConfig::default()),
    ] {
        let err = miner
            .build(dml_sampling::MinerContext { embedding_dim: 3 })
            .unwrap()
            .mine_reference(d.view(), Metric::Euclidean, &[0, 1], &[0, 1, 1], &mut rng())
            .unwrap_err();
        assert!(
            matches!(err, Error::NoReferenceMining { miner: k } if k == miner.kind()),
            "{err}"
        );
    }
    let err = BatchHardMinerConfig::default()
        .init()
        .unwrap()
        .mine_reference(d.view(), Metric::Euclidean, &[0, 1], &[0, 1], &mut rng())
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::ReferenceShape {
                rows: 2,
                cols: 3,
                n_labels: 2,
                n_ref_labels: 2
            }
        ),
        "{err}"
    );
    let t: Tuples = Triplets {
        anchor: vec![1],
        positive: vec![2],
        negative: vec![0],
        weight: None,
    }
    .into();
    assert!(t.check_reference_indices(2, 3).is_ok());
    assert!(matches!(
        t.check_reference_indices(1, 3),
        Err(Error::IndexOutOfRange { index: 1, n: 1 })
    ));
    assert!(matches!(
        t.check_reference_indices(2, 2),
        Err(Error::IndexOutOfRange { index: 2, n: 2 })
    ));
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// The bank against a naive model: row `t` of the whole stream (counting from 0) lives in
    /// slot `t mod capacity` until `capacity` later rows overwrite it.
    #[test]
    fn memory_bank_is_a_ring_over_the_stream(capacity in 1usize..12, batches in proptest::collection::vec(1usize..6, 1..8)) {
        let dim = 2;
        let mut bank = MemoryBank::new(capacity, dim).unwrap();
        let mut stream: Vec<(u32, [f32; 2])> = Vec::new();
        for (b, &size) in batches.iter().enumerate() {
            let rows: Vec<(u32, [f32; 2])> = (0..size).map(|i| {
                let t = (stream.len() + i) as u32;
                (t * 7 % 5, [t as f32, b as f32])
            }).collect();
            let emb = Array2::from_shape_fn((size, dim), |(i, j)| rows[i].1[j]);
            let labels: Vec<u32> = rows.iter().map(|r| r.0).collect();
            let res = bank.enqueue(emb.view(), &labels);
            if size > capacity {
                prop_assert!(matches!(res, Err(Error::MemoryTooSmall { .. })), "{:?}", res);
                continue;
            }
            let slots = res.unwrap();
            let first = stream.len();
            stream.extend(rows);
            let want_slots: Vec<u32> = (first..stream.len()).map(|t| (t % capacity) as u32).collect();
            prop_assert_eq!(slots, want_slots);
            // Naive contents: the last `capacity` rows of the stream, each at its slot.
            let len = stream.len().min(capacity);
            prop_assert_eq!(bank.len(), len);
            let mut want_labels = vec![u32::MAX; len];
            let mut want_emb = Array2::<f32>::zeros((len, dim));
            for (t, (l, e)) in stream.iter().enumerate().skip(stream.len() - len) {
                want_labels[t % capacity] = *l;
                want_emb[[t % capacity, 0]] = e[0];
                want_emb[[t % capacity, 1]] = e[1];
            }
            prop_assert_eq!(bank.labels(), &want_labels[..]);
            prop_assert_eq!(bank.embeddings(), want_emb.view());
            prop_assert_eq!(bank.head(), stream.len() % capacity);
            // Restoring from the parts gives the same bank.
            let again = MemoryBank::from_parts(capacity, dim, bank.embeddings().iter().copied().collect(), bank.labels().to_vec(), bank.head()).unwrap();
            prop_assert_eq!(&again, &bank);
        }
    }
}

#[test]
fn memory_bank_refuses_what_does_not_fit() {
    assert!(matches!(
        MemoryBank::new(0, 4),
        Err(Error::ZeroCount { name: "capacity" })
    ));
    let mut bank = MemoryBank::new(4, 2).unwrap();
    assert!(matches!(
        bank.enqueue(array![[1.0f32, 2.0, 3.0]].view(), &[0]),
        Err(Error::MemoryShape {
            cols: 3,
            dim: 2,
            ..
        })
    ));
    assert!(matches!(
        bank.enqueue(array![[1.0f32, 2.0]].view(), &[0, 1]),
        Err(Error::MemoryShape { n_labels: 2, .. })
    ));
    assert!(bank.is_empty());
    // A head that could not come from enqueueing (2 rows, head 3) is refused, as is a width
    // change.
    assert!(matches!(
        MemoryBank::from_parts(4, 2, vec![0.0; 4], vec![0, 1], 3),
        Err(Error::MemoryState { .. })
    ));
    assert!(matches!(
        MemoryBank::from_parts(4, 3, vec![0.0; 4], vec![0, 1], 2),
        Err(Error::MemoryState { .. })
    ));
    assert_eq!(bank.footprint_bytes(), 4 * (2 * 4 + 4));
}
