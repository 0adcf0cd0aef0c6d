//! Cross-batch memory against pytorch-metric-learning 2.9.0's `CrossBatchMemory`, five steps in a
//! row (the queue fills, wraps and overwrites), for contrastive without a miner,
//! multi-similarity with its miner and triplet with batch-hard (fixtures by
//! scripts/fixtures/dml_losses_xbm_golden.py).
//!
//! Each step is rebuilt from dml's pieces in pml's order: the batch is enqueued into a
//! [`MemoryBank`], mined against the whole bank ([`Miner::mine_reference`], or every pair without
//! a miner), its comparisons with its own copies removed
//! ([`Tuples::remove_self_comparisons`]), and the loss taken against the bank
//! ([`Loss::forward_reference`]). The tuples must be pml's (as sets: pml orders the
//! multi-similarity miner's pairs by value), the loss and the batch's gradient equal to 1e-6
//! relative + 1e-7 absolute: the bank holds f32 rows (pml's memory is f64 here), which bounds the
//! agreement (gradient entries differ by up to 4e-9).

mod common;

use dml_kernels::Metric;
use dml_losses::{LossConfig, Pairs, Reference, Triplets, Tuples};
use dml_sampling::{BatchHardMinerConfig, MemoryBank, Miner, MultiSimilarityMinerConfig};
use rand::SeedableRng;
use serde_json::Value;

fn u32s(v: &Value) -> Vec<u32> {
    v.as_array()
        .expect("array")
        .iter()
        .map(|x| x.as_u64().expect("index") as u32)
        .collect()
}

fn rows(v: &Value) -> Vec<Vec<f64>> {
    v.as_array()
        .expect("rows")
        .iter()
        .map(|r| {
            r.as_array()
                .expect("row")
                .iter()
                .map(|x| x.as_f64().expect("number"))
                .collect()
        })
        .collect()
}

/// Sorted positive pairs, negative pairs and triplets.
type Canonical = (Vec<(u32, u32)>, Vec<(u32, u32)>, Vec<(u32, u32, u32)>);

/// The tuples as sorted lists of (anchor, other) pairs or (a, p, n) triplets.
fn canonical(t: &Tuples) -> Canonical {
    match t {
        Tuples::Pairs(p) => {
            let mut pos: Vec<_> = p
                .pos_anchor
                .iter()
                .copied()
                .zip(p.positive.iter().copied())
                .collect();
            let mut neg: Vec<_> = p
                .neg_anchor
                .iter()
                .copied()
                .zip(p.negative.iter().copied())
                .collect();
            pos.sort_unstable();
            neg.sort_unstable();
            (pos, neg, Vec::new())
        }
        Tuples::Triplets(t) => {
            let mut v: Vec<_> = (0..t.len())
                .map(|i| (t.anchor[i], t.positive[i], t.negative[i]))
                .collect();
            v.sort_unstable();
            (Vec::new(), Vec::new(), v)
        }
    }
}

fn pml_tuples(v: &Value) -> Tuples {
    if let Some(p) = v.get("pairs") {
        return Tuples::Pairs(Pairs {
            pos_anchor: u32s(&p["pos_anchor"]),
            positive: u32s(&p["positive"]),
            neg_anchor: u32s(&p["neg_anchor"]),
            negative: u32s(&p["negative"]),
            pos_weight: None,
            neg_weight: None,
        });
    }
    let t = &v["triplets"];
    Tuples::Triplets(Triplets {
        anchor: u32s(&t["anchor"]),
        positive: u32s(&t["positive"]),
        negative: u32s(&t["negative"]),
        weight: None,
    })
}

#[test]
fn cross_batch_memory_matches_pml_step_by_step() {
    let data: Value =
        serde_json::from_str(include_str!("fixtures/pml_xbm_golden.json")).expect("json");
    let capacity = data["meta"]["memory_size"].as_u64().expect("size") as usize;
    let dim = data["meta"]["dim"].as_u64().expect("dim") as usize;
    let cases = data["cases"].as_array().expect("cases");
    assert_eq!(cases.len(), 3);
    for case in cases {
        let name = case["name"].as_str().expect("name");
        let (loss_cfg, miner): (&str, Option<Box<dyn Miner>>) = match name {
            "contrastive" => (r#"kind = "contrastive""#, None),
            "multi_similarity" => (
                r#"kind = "multi_similarity"
                metric = "cosine""#,
                Some(Box::new(
                    MultiSimilarityMinerConfig { epsilon: 0.1 }.init().unwrap(),
                )),
            ),
            "triplet" => (
                r#"kind = "triplet""#,
                Some(Box::new(BatchHardMinerConfig::default().init().unwrap())),
            ),
            other => panic!("unknown case {other}"),
        };
        let cfg: LossConfig = toml::from_str(loss_cfg).expect("loss config");
        let built = common::build(&cfg, 8);
        let loss = built.loss.as_ref();
        let metric: Metric = loss.metric();
        let mut bank = MemoryBank::new(capacity, dim).unwrap();
        for (s, step) in case["steps"].as_array().expect("steps").iter().enumerate() {
            let what = format!("{name} step {s}");
            let x = rows(&step["embeddings"]);
            let labels = u32s(&step["labels"]);
            let flat: Vec<f64> = x.iter().flatten().copied().collect();
            let batch = ndarray::Array2::from_shape_fn((x.len(), dim), |(i, j)| x[i][j] as f32);

            // pml's order: enqueue, then compare the batch with the whole memory.
            let own = bank.enqueue(batch.view(), &labels).unwrap();
            assert_eq!(
                bank.head(),
                step["queue_idx"].as_u64().unwrap() as usize,
                "{what}"
            );
            let tuples = match &miner {
                Some(m) => {
                    let d = dml_kernels::pairwise(metric, batch.view(), bank.embeddings()).unwrap();
                    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
                    m.mine_reference(d.view(), metric, &labels, bank.labels(), &mut rng)
                        .unwrap()
                }
                None => Pairs::all_reference(&labels, bank.labels()).into(),
            }
            .remove_self_comparisons(&own);
            assert_eq!(
                canonical(&tuples),
                canonical(&pml_tuples(&step["tuples"])),
                "{what}: tuples"
            );

            let memory: Vec<f64> = bank.embeddings().iter().map(|&v| f64::from(v)).collect();
            let memory = common::tensor(&memory, bank.len(), dim);
            let reference = Reference {
                embeddings: &memory,
                labels: bank.labels(),
            };
            let emb = common::tensor(&flat, x.len(), dim).set_requires_grad(true);
            let value = loss
                .forward_reference(&emb, &labels, &reference, Some(&tuples))
                .unwrap();
            value.backward();
            common::assert_close(
                &[value.double_value(&[])],
                &[step["loss"].as_f64().unwrap()],
                1e-6,
                1e-7,
                &format!("{what}: loss"),
            );
            let want: Vec<f64> = rows(&step["grad"]).into_iter().flatten().collect();
            common::assert_close(
                &common::to_vec(&emb.grad()),
                &want,
                1e-6,
                1e-7,
                &format!("{what}: gradient"),
            );
        }
    }
}

/// A reference set is compared without gradient, and the loss refuses what does not fit it.
#[test]
fn reference_rows_carry_no_gradient_and_bad_references_are_named() {
    let cfg: LossConfig = toml::from_str(r#"kind = "contrastive""#).unwrap();
    let built = common::build(&cfg, 4);
    let x = common::embeddings(3, 4, 5, 0.5).set_requires_grad(true);
    let r = common::embeddings(4, 6, 5, 0.5).set_requires_grad(true);
    let labels = [0, 0, 1, 1];
    let ref_labels = [0, 1, 1, 2, 0, 2];
    let reference = Reference {
        embeddings: &r,
        labels: &ref_labels,
    };
    let v = built
        .loss
        .forward_reference(&x, &labels, &reference, None)
        .unwrap();
    v.backward();
    assert!(x.grad().defined());
    assert!(!r.grad().defined(), "the reference rows must stay detached");

    let narrow = common::embeddings(5, 6, 4, 0.5);
    let err = built
        .loss
        .forward_reference(
            &x,
            &labels,
            &Reference {
                embeddings: &narrow,
                labels: &ref_labels,
            },
            None,
        )
        .unwrap_err();
    assert!(err.to_string().contains("rows × 5"), "{err}");
    let err = built
        .loss
        .forward_reference(
            &x,
            &labels,
            &Reference {
                embeddings: &r,
                labels: &ref_labels[..5],
            },
            None,
        )
        .unwrap_err();
    assert!(
        err.to_string().contains("5 reference labels for 6"),
        "{err}"
    );
    // A positive index beyond the reference set is named.
    let t: Tuples = Triplets {
        anchor: vec![0],
        positive: vec![6],
        negative: vec![1],
        weight: None,
    }
    .into();
    let err = built
        .loss
        .forward_reference(&x, &labels, &reference, Some(&t))
        .unwrap_err();
    assert!(err.to_string().contains("`positive`"), "{err}");

    let proxy: LossConfig = toml::from_str(r#"kind = "proxy_anchor""#).unwrap();
    let built = common::build_dim(&proxy, 4, 5);
    let err = built
        .loss
        .forward_reference(&x, &labels, &reference, None)
        .unwrap_err();
    assert!(err.to_string().contains("takes no reference set"), "{err}");
}
