//! PK sampler: batch shape, class structure, coverage, reproducibility, errors.

use std::collections::{BTreeMap, BTreeSet};

use dml_sampling::{Error, PkSampler};
use proptest::prelude::*;

fn class_sizes(labels: &[u32]) -> BTreeMap<u32, usize> {
    let mut m = BTreeMap::new();
    for &l in labels {
        *m.entry(l).or_insert(0) += 1;
    }
    m
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn epochs_have_pk_structure_and_cover_every_item(
        labels in proptest::collection::vec(0u32..12, 1..120),
        p in 1usize..6,
        k in 1usize..6,
        seed in any::<u64>(),
        epoch in 0u64..1000,
    ) {
        let sizes = class_sizes(&labels);
        let min_items = if k >= 2 { 2 } else { 1 };
        let serving: BTreeSet<u32> = sizes.iter().filter(|&(_, &n)| n >= min_items).map(|(&c, _)| c).collect();
        let s = match PkSampler::new(&labels, p, k, seed) {
            Ok(s) => s,
            Err(Error::BatchTooSmall { .. }) => { prop_assert!(p * k < 2); return Ok(()); }
            Err(Error::TooFewClasses { n_classes, .. }) => {
                prop_assert!(p > serving.len());
                prop_assert_eq!(n_classes, serving.len());
                return Ok(());
            }
            Err(e) => return Err(TestCaseError::fail(e.to_string())),
        };
        prop_assert_eq!(s.n_classes(), serving.len());
        let excluded: usize = sizes.iter().filter(|(c, _)| !serving.contains(c)).map(|(_, &n)| n).sum();
        prop_assert_eq!(s.n_excluded_items(), excluded);
        let excluded_classes: Vec<u32> = sizes.keys().copied().filter(|c| !serving.contains(c)).collect();
        prop_assert_eq!(s.excluded_classes(), excluded_classes.as_slice());

        // The number of batches from the documented formula.
        let chunks: Vec<usize> = serving.iter().map(|c| sizes[c].div_ceil(k)).collect();
        let m = chunks.iter().copied().max().unwrap().max(chunks.iter().sum::<usize>().div_ceil(p));
        prop_assert_eq!(s.batches_per_epoch(), m);

        let it = s.epoch(epoch);
        prop_assert_eq!(it.len(), m);
        let batches: Vec<Vec<usize>> = it.collect();
        prop_assert_eq!(batches.len(), m);
        let mut seen = vec![false; labels.len()];
        for b in &batches {
            prop_assert_eq!(b.len(), p * k);
            // P groups of K consecutive indices, one class per group, P distinct classes.
            let mut classes = BTreeSet::new();
            for g in b.chunks(k) {
                let c = labels[g[0]];
                prop_assert!(g.iter().all(|&i| labels[i] == c));
                prop_assert!(serving.contains(&c));
                classes.insert(c);
                // Indices repeat inside a group only for classes smaller than K.
                let distinct: BTreeSet<usize> = g.iter().copied().collect();
                if sizes[&c] >= k { prop_assert_eq!(distinct.len(), k); }
                else { prop_assert_eq!(distinct.len(), sizes[&c]); }
            }
            prop_assert_eq!(classes.len(), p);
            for &i in b { seen[i] = true; }
        }
        // Coverage: every item of a serving class, and nothing else.
        for (i, &l) in labels.iter().enumerate() {
            prop_assert_eq!(seen[i], serving.contains(&l), "item {} of class {}", i, l);
        }
        // Reproducible from (seed, epoch) alone, even from a fresh sampler.
        let again: Vec<Vec<usize>> = PkSampler::new(&labels, p, k, seed).unwrap().epoch(epoch).collect();
        prop_assert_eq!(&batches, &again);
    }
}

#[test]
fn epochs_and_seeds_differ() {
    let labels: Vec<u32> = (0..400).map(|i| i % 20).collect();
    let s = PkSampler::new(&labels, 8, 4, 42).unwrap();
    assert_eq!(s.batches_per_epoch(), 13); // 20 classes × 5 chunks = 100 chunks, ⌈100/8⌉
    assert_eq!(s.batch_size(), 32);
    let e0: Vec<_> = s.epoch(0).collect();
    let e1: Vec<_> = s.epoch(1).collect();
    assert_ne!(e0, e1);
    let other: Vec<_> = PkSampler::new(&labels, 8, 4, 43)
        .unwrap()
        .epoch(0)
        .collect();
    assert_ne!(e0, other);
    // Resuming at epoch 1 with a fresh sampler gives epoch 1 again.
    let resumed: Vec<_> = PkSampler::new(&labels, 8, 4, 42)
        .unwrap()
        .epoch(1)
        .collect();
    assert_eq!(e1, resumed);
}

#[test]
fn one_dominant_class_is_covered() {
    // Class 0 has 40 items (10 chunks of 4), three others have 2: 10 batches, class 0 in each.
    let mut labels = vec![0u32; 40];
    labels.extend([1, 1, 2, 2, 3, 3]);
    let s = PkSampler::new(&labels, 2, 4, 0).unwrap();
    assert_eq!(s.batches_per_epoch(), 10);
    let batches: Vec<_> = s.epoch(3).collect();
    let mut zero: Vec<usize> = batches
        .iter()
        .flatten()
        .copied()
        .filter(|&i| i < 40)
        .collect();
    zero.sort_unstable();
    assert_eq!(
        zero,
        (0..40).collect::<Vec<_>>(),
        "class 0's items exactly once each"
    );
}

#[test]
fn clear_errors() {
    let labels = [0u32, 0, 1, 1, 2];
    assert!(matches!(
        PkSampler::new(&labels, 1, 1, 0),
        Err(Error::BatchTooSmall { p: 1, k: 1 })
    ));
    assert!(matches!(
        PkSampler::new(&labels, 0, 4, 0),
        Err(Error::BatchTooSmall { p: 0, k: 4 })
    ));
    let err = PkSampler::new(&labels, 3, 2, 0).unwrap_err();
    assert!(matches!(
        err,
        Error::TooFewClasses {
            p: 3,
            n_classes: 2,
            min_items: 2
        }
    ));
    assert_eq!(
        err.to_string(),
        "p = 3 classes per batch but only 2 classes have at least 2 items"
    );
    assert!(matches!(
        PkSampler::new(&[], 2, 2, 0),
        Err(Error::TooFewClasses { n_classes: 0, .. })
    ));
    // K = 1: singletons serve.
    assert_eq!(PkSampler::new(&labels, 3, 1, 0).unwrap().n_classes(), 3);
}
