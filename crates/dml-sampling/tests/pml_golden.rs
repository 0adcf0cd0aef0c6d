//! Golden checks against pytorch-metric-learning 2.9.0, from fixtures written by
//! `scripts/fixtures/dml_sampling_miners.py`. The matrices are pml's own, so index sets must
//! match exactly (no tolerance: both sides compare the same float32 values).

use std::collections::BTreeSet;

use dml_kernels::Metric;
use dml_sampling::{
    BatchHardMinerConfig, HardNegativeMinerConfig, HardNegativeSelect, Miner,
    MultiSimilarityMinerConfig, NPairsMinerConfig, PairMarginMinerConfig, Pairs,
    SemiHardMinerConfig, SemiHardSelect, TripletMarginMinerConfig, TripletMarginSelect, Triplets,
    Tuples,
};
use ndarray::Array2;
use rand::SeedableRng;
use serde_json::Value;

fn fixture() -> Value {
    serde_json::from_str(include_str!("fixtures/pml_miners.json")).unwrap()
}

fn idx(v: &Value) -> Vec<Vec<u32>> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|r| {
            r.as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_u64().unwrap() as u32)
                .collect()
        })
        .collect()
}

fn matrix(v: &Value) -> Array2<f32> {
    let rows = v.as_array().unwrap();
    let n = rows.len();
    Array2::from_shape_fn((n, n), |(i, j)| rows[i][j].as_f64().unwrap() as f32)
}

fn triplets(t: &Tuples) -> Vec<Vec<u32>> {
    let Tuples::Triplets(t) = t else {
        panic!("expected triplets")
    };
    vec![t.anchor.clone(), t.positive.clone(), t.negative.clone()]
}

fn pairs(t: &Tuples) -> Vec<Vec<u32>> {
    let Tuples::Pairs(p) = t else {
        panic!("expected pairs")
    };
    vec![
        p.pos_anchor.clone(),
        p.positive.clone(),
        p.neg_anchor.clone(),
        p.negative.clone(),
    ]
}

fn set3(v: &[Vec<u32>]) -> BTreeSet<(u32, u32, u32)> {
    (0..v[0].len())
        .map(|i| (v[0][i], v[1][i], v[2][i]))
        .collect()
}

fn set2(a: &[u32], b: &[u32]) -> BTreeSet<(u32, u32)> {
    a.iter().copied().zip(b.iter().copied()).collect()
}

#[test]
fn matches_pml() {
    let fx = fixture();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
    for case in fx["cases"].as_array().unwrap() {
        let labels: Vec<u32> = case["labels"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_u64().unwrap() as u32)
            .collect();

        // All pairs / triplets: same indices in the same order.
        let all_p = Pairs::all(&labels);
        assert_eq!(pairs(&all_p.clone().into()), idx(&case["all_pairs"]));
        assert_eq!(
            triplets(&Triplets::all(&labels).into()),
            idx(&case["all_triplets"])
        );

        // Pair tuple -> triplets, same order.
        let ps = idx(&case["pair_subset"]);
        let sub = Pairs {
            pos_anchor: ps[0].clone(),
            positive: ps[1].clone(),
            neg_anchor: ps[2].clone(),
            negative: ps[3].clone(),
            ..Pairs::default()
        };
        assert_eq!(
            triplets(&sub.to_triplets().into()),
            idx(&case["pair_subset_to_triplets"])
        );

        // N-pairs with the "first" pick: pml's pairs are our (anchor, positive) per class.
        let d0 = matrix(&case["metrics"]["euclidean"]["matrix"]);
        let np = NPairsMinerConfig::default()
            .init()
            .unwrap()
            .mine(d0.view(), Metric::Euclidean, &labels, &mut rng)
            .unwrap();
        let np = triplets(&np);
        let ours: BTreeSet<(u32, u32)> = set2(&np[0], &np[1]);
        let want = idx(&case["n_pairs"]);
        assert_eq!(ours, set2(&want[0], &want[1]));

        for (name, metric) in [("euclidean", Metric::Euclidean), ("cosine", Metric::Cosine)] {
            let m = &case["metrics"][name];
            let d = matrix(&m["matrix"]);
            let bh = BatchHardMinerConfig::default()
                .init()
                .unwrap()
                .mine(d.view(), metric, &labels, &mut rng)
                .unwrap();
            assert_eq!(triplets(&bh), idx(&m["batch_hard"]), "batch_hard {name}");

            let hard = HardNegativeMinerConfig {
                select: HardNegativeSelect::AllHard,
            }
            .init()
            .unwrap()
            .mine(d.view(), metric, &labels, &mut rng)
            .unwrap();
            assert_eq!(
                set3(&triplets(&hard)),
                set3(&idx(&m["triplet_margin_hard"])),
                "hard {name}"
            );

            let semi = SemiHardMinerConfig {
                margin: 0.2,
                select: SemiHardSelect::All,
                ..Default::default()
            }
            .init()
            .unwrap()
            .mine(d.view(), metric, &labels, &mut rng)
            .unwrap();
            let want = idx(&m["triplet_margin_semihard"]);
            assert!(!want[0].is_empty());
            assert_eq!(set3(&triplets(&semi)), set3(&want), "semihard {name}");

            // pml's TripletMarginMiner and PairMarginMiner: the same tuples in the same order
            // (pml's order is torch.where's row-major order over the triplet or pair mask).
            for (key, triplets_kind) in [
                ("triplet_margin_all", TripletMarginSelect::All),
                ("triplet_margin_hard", TripletMarginSelect::Hard),
                ("triplet_margin_semihard", TripletMarginSelect::SemiHard),
                ("triplet_margin_easy", TripletMarginSelect::Easy),
            ] {
                let got = TripletMarginMinerConfig {
                    margin: 0.2,
                    triplets: triplets_kind,
                }
                .init()
                .unwrap()
                .mine(d.view(), metric, &labels, &mut rng)
                .unwrap();
                let want = idx(&m[key]);
                assert!(!want[0].is_empty(), "{key} {name}");
                assert_eq!(triplets(&got), want, "{key} {name}");
            }
            let pm = &m["pair_margin"];
            let got = PairMarginMinerConfig {
                pos_margin: pm["pos_margin"].as_f64().unwrap() as f32,
                neg_margin: pm["neg_margin"].as_f64().unwrap() as f32,
            }
            .init()
            .unwrap()
            .mine(d.view(), metric, &labels, &mut rng)
            .unwrap();
            let want = idx(&pm["pairs"]);
            assert!(!want[0].is_empty() && !want[2].is_empty());
            assert_eq!(pairs(&got), want, "pair_margin {name}");

            let ms = MultiSimilarityMinerConfig { epsilon: 0.1 }
                .init()
                .unwrap()
                .mine(d.view(), metric, &labels, &mut rng)
                .unwrap();
            let got = pairs(&ms);
            let want = idx(&m["multi_similarity"]);
            assert!(!want[0].is_empty() && !want[2].is_empty());
            assert_eq!(
                set2(&got[0], &got[1]),
                set2(&want[0], &want[1]),
                "ms pos {name}"
            );
            assert_eq!(
                set2(&got[2], &got[3]),
                set2(&want[2], &want[3]),
                "ms neg {name}"
            );
            // No duplicates on our side either.
            assert_eq!(got[0].len(), want[0].len());
            assert_eq!(got[2].len(), want[2].len());
        }
    }
}
