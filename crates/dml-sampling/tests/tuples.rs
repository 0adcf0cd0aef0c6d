//! Tuple constructors and conversions against naive references and hand calculations.

use dml_sampling::{MiningSummary, Pairs, Triplets, Tuples};
use proptest::prelude::*;

proptest! {
    #[test]
    fn all_pairs_and_triplets_are_the_naive_sets(labels in proptest::collection::vec(0u32..4, 0..20)) {
        let n = labels.len() as u32;
        let p = Pairs::all(&labels);
        let mut want = Pairs::default();
        for i in 0..n { for j in 0..n {
            if labels[i as usize] == labels[j as usize] { if i != j { want.pos_anchor.push(i); want.positive.push(j); } }
            else { want.neg_anchor.push(i); want.negative.push(j); }
        } }
        prop_assert_eq!(&p, &want);
        let t = Triplets::all(&labels);
        let mut wt = Triplets::default();
        for a in 0..n { for q in 0..n { for r in 0..n {
            let (la, lq, lr) = (labels[a as usize], labels[q as usize], labels[r as usize]);
            if a != q && la == lq && la != lr { wt.anchor.push(a); wt.positive.push(q); wt.negative.push(r); }
        } } }
        prop_assert_eq!(&t, &wt);
        // All pairs joined on the anchor are exactly all triplets, in the same order.
        prop_assert_eq!(p.to_triplets(), t.clone());
        prop_assert_eq!(Tuples::from(p.clone()).to_triplets(), t.clone());
        // Triplets -> pairs: (a, p) and (a, n) per triplet.
        let tp = t.to_pairs();
        prop_assert_eq!(tp.n_pos(), t.len());
        prop_assert_eq!(&tp.neg_anchor, &t.anchor);
        prop_assert_eq!(Tuples::from(t.clone()).len(), t.len());
        prop_assert_eq!(Tuples::from(p.clone()).len(), p.n_pos() + p.n_neg());
        prop_assert!(Tuples::from(t.clone()).check_indices(labels.len()).is_ok());
    }
}

#[test]
fn weights_multiply_and_carry_over() {
    let p = Pairs {
        pos_anchor: vec![0, 1],
        positive: vec![1, 0],
        neg_anchor: vec![0, 0, 2],
        negative: vec![2, 3, 0],
        pos_weight: Some(vec![0.5, 2.0]),
        neg_weight: Some(vec![3.0, 4.0, 5.0]),
    };
    let t = p.to_triplets();
    assert_eq!(
        (t.anchor.clone(), t.positive.clone(), t.negative.clone()),
        (vec![0, 0], vec![1, 1], vec![2, 3])
    );
    assert_eq!(t.weight, Some(vec![1.5, 2.0]));
    let only_neg = Pairs {
        pos_weight: None,
        ..p.clone()
    }
    .to_triplets();
    assert_eq!(only_neg.weight, Some(vec![3.0, 4.0]));
    assert_eq!(
        Pairs {
            pos_weight: None,
            neg_weight: None,
            ..p
        }
        .to_triplets()
        .weight,
        None
    );
    let back = t.to_pairs();
    assert_eq!(back.pos_weight, Some(vec![1.5, 2.0]));
    assert_eq!(back.neg_weight, Some(vec![1.5, 2.0]));
    assert!(Tuples::from(back).check_indices(3).is_err());
}

#[test]
fn summary_by_hand() {
    let d = ndarray::array![
        [0.0f32, 0.2, 1.0, 1.5],
        [0.2, 0.0, 0.7, 1.9],
        [1.0, 0.7, 0.0, 0.4],
        [1.5, 1.9, 0.4, 0.0]
    ];
    let t = Triplets {
        anchor: vec![0, 1, 1],
        positive: vec![1, 0, 0],
        negative: vec![2, 2, 3],
        weight: None,
    };
    let s = MiningSummary::new(&t.into(), d.view(), 4, 0.0, 2.0).unwrap();
    assert_eq!((s.n_tuples, s.n_pos, s.n_neg, s.n_anchors), (3, 3, 3, 2));
    assert_eq!(s.pos_hist.counts, vec![3, 0, 0, 0]);
    // 1.0 -> bin 2, 0.7 -> bin 1, 1.9 -> bin 3.
    assert_eq!(s.neg_hist.counts, vec![0, 1, 1, 1]);
    assert!((s.pos_mean.unwrap() - 0.2).abs() < 1e-7);
    assert!((s.neg_mean.unwrap() - 3.6 / 3.0).abs() < 1e-7);
    assert_eq!(s.neg_hist.edges(), vec![0.0, 0.5, 1.0, 1.5, 2.0]);
    // Density: three in-range values, bins of width 0.5: each occupied bin 1 / (3 · 0.5).
    assert_eq!(
        s.neg_hist.density(),
        vec![0.0, 2.0 / 3.0, 2.0 / 3.0, 2.0 / 3.0]
    );
    let mut h = s.neg_hist.clone();
    h.add(2.5);
    h.add(f32::NAN);
    assert_eq!(
        h.density(),
        s.neg_hist.density(),
        "out of range and NaN left out"
    );
    let empty = MiningSummary::new(&Pairs::default().into(), d.view(), 4, 0.0, 2.0).unwrap();
    assert_eq!(
        (empty.n_tuples, empty.pos_mean, empty.neg_hist.total()),
        (0, None, 0)
    );
    assert_eq!(
        empty.neg_hist.density(),
        vec![0.0; 4],
        "no value: all zeros"
    );
    assert!(MiningSummary::new(&Pairs::default().into(), d.view(), 0, 0.0, 2.0).is_err());
}
