//! Degenerate batches, errors, configs, and naive loop references.

mod common;

use dml_losses::{
    ContrastiveConfig, Error, Loss, LossConfig, LossContext, MarginConfig, MultiSimilarityConfig,
    Pairs, Reduction, TripletConfig, Triplets, Tuples,
};
use proptest::prelude::*;
use tch::{Device, Kind, Tensor, nn};

fn all_configs() -> Vec<LossConfig> {
    [
        r#"{"kind":"contrastive"}"#,
        r#"{"kind":"contrastive","metric":"cosine","pos_margin":0.9,"neg_margin":0.1}"#,
        r#"{"kind":"triplet"}"#,
        r#"{"kind":"triplet","smooth":true,"metric":"squared_euclidean"}"#,
        r#"{"kind":"margin","learn_beta":true,"per_class_beta":true,"nu":0.1}"#,
        r#"{"kind":"lifted_structured"}"#,
        r#"{"kind":"n_pair"}"#,
        r#"{"kind":"n_pair","metric":"euclidean"}"#,
        r#"{"kind":"multi_similarity"}"#,
        r#"{"kind":"multi_similarity","metric":"euclidean"}"#,
        r#"{"kind":"sup_con"}"#,
        r#"{"kind":"sup_con","metric":"squared_euclidean"}"#,
    ]
    .iter()
    .map(|s| serde_json::from_str(s).expect("config"))
    .collect()
}

fn finite(v: &[f64]) -> bool {
    v.iter().all(|x| x.is_finite())
}

/// Every loss kind of the registry is in the edge-case lists: the tuple losses in
/// `all_configs`, the losses with class vectors in `proxy_configs`.
#[test]
fn every_loss_kind_is_in_the_edge_lists() {
    let listed: Vec<&str> = all_configs()
        .iter()
        .chain(proxy_configs().iter())
        .map(LossConfig::kind)
        .collect();
    for cfg in LossConfig::defaults() {
        assert!(
            listed.contains(&cfg.kind()),
            "{} has no edge cases",
            cfg.kind()
        );
    }
    for cfg in all_configs() {
        assert!(cfg.uses_tuples(), "{cfg:?} belongs in proxy_configs");
    }
}

/// `takes_reference` says exactly which losses compute against a reference set.
#[test]
fn takes_reference_matches_forward_reference() {
    let x = common::embeddings(3, 6, 4, 1.0);
    let labels = [0, 0, 1, 1, 2, 2];
    let bank = common::embeddings(4, 5, 4, 1.0);
    let bank_labels = [0, 1, 2, 0, 1];
    let reference = dml_losses::Reference {
        embeddings: &bank,
        labels: &bank_labels,
    };
    for cfg in LossConfig::defaults() {
        let built = common::build_dim(&cfg, 3, 4);
        let got = built.loss.forward_reference(&x, &labels, &reference, None);
        assert_eq!(
            got.is_ok(),
            cfg.takes_reference(),
            "{}: {:?}",
            cfg.kind(),
            got.err()
        );
    }
}

#[test]
fn no_valid_tuple_gives_a_connected_zero() {
    let x = common::embeddings(1, 4, 3, 1.0);
    let distinct = [0, 1, 2, 3];
    let empty = Tuples::Pairs(Pairs::default());
    for cfg in all_configs() {
        let built = common::build(&cfg, 4);
        for tuples in [None, Some(&empty)] {
            let (v, g) = common::value_and_grad(built.loss.as_ref(), &x, &distinct, tuples);
            let name = cfg.kind();
            // Multi-similarity and contrastive use negative pairs alone when there is no positive.
            if tuples.is_some() || !matches!(name, "contrastive" | "multi_similarity") {
                assert_eq!(v, 0.0, "{cfg:?}");
                assert!(g.iter().all(|&x| x == 0.0), "{cfg:?}");
            }
            assert!(v.is_finite() && finite(&g), "{cfg:?}");
            let per = built
                .loss
                .forward_no_reduction(&x, &distinct, tuples)
                .expect("per");
            if tuples.is_some() {
                assert_eq!(per.size(), [0]);
            }
        }
    }
}

#[test]
fn identical_embeddings_and_one_class_batches_stay_finite() {
    let same = Tensor::ones([6, 3], (Kind::Double, Device::Cpu));
    let zero = Tensor::zeros([6, 3], (Kind::Double, Device::Cpu));
    for cfg in all_configs() {
        let built = common::build(&cfg, 3);
        for (x, labels) in [
            (&same, [0, 0, 1, 1, 2, 2]),
            (&zero, [0, 0, 1, 1, 2, 2]),
            (&same, [1, 1, 1, 1, 1, 1]),
        ] {
            let (v, g) = common::value_and_grad(built.loss.as_ref(), x, &labels, None);
            assert!(v.is_finite() && finite(&g), "{cfg:?} {labels:?}: {v} {g:?}");
        }
    }
}

#[test]
fn float32_works() {
    tch::manual_seed(3);
    let x = Tensor::randn([8, 5], (Kind::Float, Device::Cpu)).set_requires_grad(true);
    let labels = [0, 0, 1, 1, 2, 2, 3, 3];
    for cfg in all_configs() {
        let vs = nn::VarStore::new(Device::Cpu);
        let loss = cfg
            .build(&vs.root(), LossContext::new(4, 3))
            .expect("build");
        let v = loss.forward(&x, &labels, None).expect("forward");
        assert_eq!(v.kind(), Kind::Float);
        v.backward();
        assert!(v.double_value(&[]).is_finite());
    }
}

/// The losses with class vectors at their defaults and at extreme scales.
fn proxy_configs() -> Vec<LossConfig> {
    let json = |s: &str| serde_json::from_str::<LossConfig>(s).expect("config");
    let mut v: Vec<LossConfig> = LossConfig::defaults()
        .filter(LossConfig::has_class_vectors)
        .collect();
    v.extend([
        json(r#"{"kind":"proxy_nca","softmax_scale":1000.0}"#),
        json(r#"{"kind":"proxy_anchor","alpha":1000.0}"#),
        json(r#"{"kind":"normalized_softmax","temperature":0.001}"#),
        json(r#"{"kind":"cosface","scale":1000.0}"#),
        json(r#"{"kind":"arcface","scale":1000.0}"#),
        json(r#"{"kind":"sub_center_arcface","scale":1000.0,"margin":90.0}"#),
        json(r#"{"kind":"soft_triple","la":1000.0,"gamma":0.001}"#),
    ]);
    v
}

#[test]
fn proxy_losses_stay_finite_at_extreme_scales_in_f32() {
    // Each embedding sits exactly on the first proxy of the next class: the wrong class's logit
    // is scale·1 and the loss is about scale·(1 − cos to its own proxy), far beyond exp's f32
    // range (88). Zero rows, one-class batches and absent classes ride along.
    for cfg in proxy_configs() {
        let vs = nn::VarStore::new(Device::Cpu);
        tch::manual_seed(5);
        let loss = cfg
            .build(&vs.root(), LossContext::new(4, 6))
            .expect("build");
        let proxies = vs.variables()["proxies"].shallow_clone();
        let rows = proxies.size()[0] / 4;
        let labels = [0u32, 0, 1, 1, 2, 2];
        let wrong: Vec<i64> = labels
            .iter()
            .map(|&l| ((l as i64 + 1) % 4) * rows)
            .collect();
        let on_wrong = proxies
            .detach()
            .index_select(0, &Tensor::from_slice(&wrong));
        let zero = Tensor::zeros([6, 6], (Kind::Float, Device::Cpu));
        for (x, labels) in [
            (&on_wrong, labels),
            (&zero, labels),
            (&on_wrong, [3, 3, 3, 3, 3, 3]),
        ] {
            let x = x.detach().set_requires_grad(true);
            let v = loss.forward(&x, &labels, None).expect("forward");
            assert_eq!(v.kind(), Kind::Float);
            v.backward();
            let value = v.double_value(&[]);
            let g = common::to_vec(&x.grad());
            let gp = common::to_vec(&proxies.grad());
            assert!(
                value.is_finite() && finite(&g) && finite(&gp),
                "{cfg:?} {labels:?}: {value}"
            );
            let _ = proxies.grad().zero_();
        }
    }
}

#[test]
fn proxy_losses_name_their_errors() {
    let x = common::embeddings(2, 4, 3, 1.0);
    let labels = [0, 0, 1, 1];
    let pairs = Tuples::Pairs(Pairs::all(&labels));
    for cfg in LossConfig::defaults().filter(LossConfig::has_class_vectors) {
        assert!(!cfg.uses_tuples(), "{cfg:?}");
        let built = common::build_dim(&cfg, 2, 3);
        let loss = built.loss.as_ref();
        assert!(
            matches!(loss.forward(&x, &labels, Some(&pairs)), Err(Error::TuplesNotUsed { loss }) if loss == cfg.kind()),
            "{cfg:?}"
        );
        assert!(
            matches!(
                loss.forward(&x, &[0, 0, 1, 2], None),
                Err(Error::LabelOutOfRange {
                    label: 2,
                    n_classes: 2
                })
            ),
            "{cfg:?}"
        );
        let wide = common::embeddings(2, 4, 5, 1.0);
        assert!(
            matches!(
                loss.forward(&wide, &labels, None),
                Err(Error::EmbeddingDim {
                    expected: 3,
                    got: 5
                })
            ),
            "{cfg:?}"
        );
        // An empty batch: a zero connected to the proxies.
        let empty = Tensor::zeros([0, 3], (Kind::Double, Device::Cpu)).set_requires_grad(true);
        let v = loss.forward(&empty, &[], None).expect("empty batch");
        v.backward();
        assert_eq!(v.double_value(&[]), 0.0, "{cfg:?}");
        let p = &built.vs.variables()["loss.proxies"];
        assert!(
            common::to_vec(&p.grad()).iter().all(|&g| g == 0.0),
            "{cfg:?}"
        );

        let vs = nn::VarStore::new(Device::Cpu);
        assert!(matches!(
            cfg.build(&vs.root(), LossContext::new(0, 3)),
            Err(Error::NoClasses { .. })
        ));
        assert!(matches!(
            cfg.build(&vs.root(), LossContext::new(3, 0)),
            Err(Error::NoEmbeddingDim { .. })
        ));
    }
    let vs = nn::VarStore::new(Device::Cpu);
    let arc: LossConfig =
        serde_json::from_str(r#"{"kind":"arcface","margin":180.0}"#).expect("cfg");
    assert!(matches!(
        arc.build(&vs.root(), LossContext::new(3, 3)),
        Err(Error::ArcMargin { .. })
    ));
    for bad in [
        r#"{"kind":"proxy_anchor","alpha":0.0}"#,
        r#"{"kind":"normalized_softmax","temperature":-1.0}"#,
        r#"{"kind":"sub_center_arcface","sub_centers":0}"#,
        r#"{"kind":"soft_triple","centers_per_class":0}"#,
        r#"{"kind":"sup_con","temperature":0.0}"#,
    ] {
        let cfg: LossConfig = serde_json::from_str(bad).expect("cfg");
        assert!(
            cfg.build(&vs.root(), LossContext::new(3, 3)).is_err(),
            "{bad}"
        );
    }
}

#[test]
fn every_kind_round_trips_through_its_tag() {
    let kinds: Vec<&str> = LossConfig::defaults().map(|c| c.kind()).collect();
    assert_eq!(kinds.len(), 14);
    for cfg in LossConfig::defaults() {
        let text = serde_json::to_string(&cfg).expect("serialise");
        let tag: serde_json::Value = serde_json::from_str(&text).expect("json");
        assert_eq!(tag["kind"], cfg.kind(), "{text}");
        assert_eq!(LossConfig::default_of(cfg.kind()), Some(cfg));
        let back: LossConfig = serde_json::from_str(&text).expect("parse");
        assert_eq!(back, cfg);
    }
    assert_eq!(LossConfig::default_of("arc_face"), None);
}

#[test]
fn bad_inputs_are_errors() {
    let loss = TripletConfig::default().init().expect("loss");
    let x = common::embeddings(2, 4, 3, 1.0);
    let labels = [0, 0, 1, 1];
    let one_d = Tensor::zeros([4], (Kind::Double, Device::Cpu));
    assert!(
        matches!(loss.forward(&one_d, &labels, None), Err(Error::EmbeddingsShape(s)) if s == [4])
    );
    let ints = Tensor::zeros([4, 3], (Kind::Int64, Device::Cpu));
    assert!(matches!(
        loss.forward(&ints, &labels, None),
        Err(Error::EmbeddingsKind(Kind::Int64))
    ));
    assert!(matches!(
        loss.forward(&x, &[0, 1], None),
        Err(Error::LabelCount {
            labels: 2,
            batch: 4
        })
    ));
    let out_of_range = Tuples::Triplets(Triplets {
        anchor: vec![0],
        positive: vec![1],
        negative: vec![4],
        weight: None,
    });
    assert!(matches!(
        loss.forward(&x, &labels, Some(&out_of_range)),
        Err(Error::IndexOutOfRange {
            field: "negative",
            index: 4,
            batch: 4
        })
    ));
    let ragged = Tuples::Pairs(Pairs {
        pos_anchor: vec![0, 2],
        positive: vec![1],
        ..Pairs::default()
    });
    assert!(matches!(
        loss.forward(&x, &labels, Some(&ragged)),
        Err(Error::TupleLength {
            field: "positive",
            expected: 2,
            got: 1
        })
    ));
    let bad_weight = Tuples::Triplets(Triplets {
        anchor: vec![0],
        positive: vec![1],
        negative: vec![2],
        weight: Some(vec![-1.0]),
    });
    assert!(matches!(
        loss.forward(&x, &labels, Some(&bad_weight)),
        Err(Error::InvalidWeight { position: 0, .. })
    ));
    let both = Tuples::Pairs(Pairs {
        pos_anchor: vec![0],
        positive: vec![1],
        neg_anchor: vec![0],
        negative: vec![1],
        ..Pairs::default()
    });
    let ms = MultiSimilarityConfig::default().init().expect("ms");
    assert!(matches!(
        ms.forward(&x, &labels, Some(&both)),
        Err(Error::PairBothPositiveAndNegative {
            anchor: 0,
            other: 1
        })
    ));

    let vs = nn::VarStore::new(Device::Cpu);
    let cfg = MarginConfig {
        learn_beta: true,
        per_class_beta: true,
        ..Default::default()
    };
    let margin = cfg.init(&vs.root(), 1).expect("margin");
    assert!(matches!(
        margin.forward(&x, &labels, None),
        Err(Error::LabelOutOfRange {
            label: 1,
            n_classes: 1
        })
    ));
}

#[test]
fn bad_parameters_are_errors() {
    let vs = nn::VarStore::new(Device::Cpu);
    let p = vs.root();
    let c = ContrastiveConfig {
        neg_margin: f64::NAN,
        ..Default::default()
    };
    assert!(matches!(
        c.init(),
        Err(Error::NonFiniteParameter {
            name: "neg_margin",
            ..
        })
    ));
    let ms = MultiSimilarityConfig {
        alpha: 0.0,
        ..Default::default()
    };
    assert!(matches!(
        ms.init(),
        Err(Error::NonPositiveParameter { name: "alpha", .. })
    ));
    let m = MarginConfig {
        nu: -1.0,
        ..Default::default()
    };
    assert!(matches!(
        m.init(&p, 3),
        Err(Error::NegativeParameter { name: "nu", .. })
    ));
    let m = MarginConfig {
        per_class_beta: true,
        ..Default::default()
    };
    assert!(matches!(m.init(&p, 3), Err(Error::PerClassBetaNotLearned)));
    let m = MarginConfig {
        per_class_beta: true,
        learn_beta: true,
        ..Default::default()
    };
    assert!(matches!(
        m.init(&p, 0),
        Err(Error::PerClassBetaWithoutClasses)
    ));
}

#[test]
fn configs_parse_with_defaults_and_reject_unknown_keys() {
    let cfg: LossConfig = toml::from_str("kind = \"triplet\"\nmargin = 0.2\n").expect("toml");
    assert_eq!(
        cfg,
        LossConfig::Triplet(TripletConfig {
            margin: 0.2,
            ..Default::default()
        })
    );
    let err = toml::from_str::<LossConfig>("kind = \"triplet\"\nmargn = 0.2\n").expect_err("typo");
    assert!(err.to_string().contains("margn"), "{err}");
    let err = toml::from_str::<LossConfig>("kind = \"tripplet\"\n").expect_err("kind");
    assert!(err.to_string().contains("tripplet"), "{err}");
    for cfg in all_configs() {
        let text = toml::to_string(&cfg).expect("serialise");
        assert_eq!(toml::from_str::<LossConfig>(&text).expect("parse"), cfg);
    }
}

#[test]
fn learnable_beta_lives_under_the_path() {
    let vs = nn::VarStore::new(Device::Cpu);
    let cfg: LossConfig =
        toml::from_str("kind = \"margin\"\nlearn_beta = true\nper_class_beta = true\nnu = 0.1\n")
            .expect("toml");
    let loss = cfg
        .build(&(vs.root() / "loss"), LossContext::new(5, 3))
        .expect("build");
    let mut names: Vec<String> = vs.variables().into_keys().collect();
    names.sort();
    assert_eq!(names, ["loss.beta", "loss.beta_class"]);
    // One optimiser step on the loss moves β.
    let mut opt = nn::OptimizerConfig::build(nn::Sgd::default(), &vs, 0.1).expect("optimiser");
    let x = common::embeddings(4, 6, 3, 1.0).to_kind(Kind::Float);
    let v = loss
        .forward(&x, &[0, 0, 1, 1, 2, 2], None)
        .expect("forward");
    opt.backward_step(&v);
    assert_ne!(vs.variables()["loss.beta"].double_value(&[0]), 1.2);
}

/// Naive f64 loops, independent of the tensor code.
fn naive_dist(x: &[Vec<f64>], i: usize, j: usize) -> f64 {
    x[i].iter()
        .zip(&x[j])
        .map(|(a, b)| (a - b) * (a - b))
        .sum::<f64>()
        .sqrt()
}

fn reduce(v: &[f64], r: Reduction) -> f64 {
    match r {
        Reduction::Sum => v.iter().sum(),
        Reduction::Mean => {
            if v.is_empty() {
                0.0
            } else {
                v.iter().sum::<f64>() / v.len() as f64
            }
        }
        Reduction::MeanNonZero => {
            let nz: Vec<f64> = v.iter().copied().filter(|&x| x > 0.0).collect();
            if nz.is_empty() {
                0.0
            } else {
                nz.iter().sum::<f64>() / nz.len() as f64
            }
        }
    }
}

fn rows(x: &Tensor) -> Vec<Vec<f64>> {
    let d = x.size()[1] as usize;
    common::to_vec(x).chunks(d).map(<[f64]>::to_vec).collect()
}

const REDUCTIONS: [Reduction; 3] = [Reduction::Mean, Reduction::MeanNonZero, Reduction::Sum];

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn contrastive_and_triplet_match_naive_loops(
        seed in 0u64..1000,
        labels in proptest::collection::vec(0u32..3, 2..9),
        pos_margin in 0.0f64..0.5,
        neg_margin in 0.5f64..1.5,
        r in 0usize..3,
    ) {
        let r = REDUCTIONS[r];
        let n = labels.len();
        let x = common::embeddings(seed, n, 3, 0.7);
        let xs = rows(&x);
        let (mut pos, mut neg, mut trip) = (vec![], vec![], vec![]);
        for i in 0..n {
            for j in 0..n {
                if i == j { continue; }
                if labels[i] == labels[j] {
                    pos.push((naive_dist(&xs, i, j) - pos_margin).max(0.0));
                    for k in 0..n {
                        if labels[k] != labels[i] {
                            trip.push((naive_dist(&xs, i, j) - naive_dist(&xs, i, k) + neg_margin).max(0.0));
                        }
                    }
                } else {
                    neg.push((neg_margin - naive_dist(&xs, i, j)).max(0.0));
                }
            }
        }
        let c = ContrastiveConfig { pos_margin, neg_margin, reduction: r, ..Default::default() }.init().expect("c");
        let got = c.forward(&x, &labels, None).expect("forward").double_value(&[]);
        let want = reduce(&pos, r) + reduce(&neg, r);
        prop_assert!((got - want).abs() < 1e-9 * (1.0 + want.abs()), "contrastive {got} vs {want}");

        let t = TripletConfig { margin: neg_margin, reduction: r, ..Default::default() }.init().expect("t");
        let got = t.forward(&x, &labels, None).expect("forward").double_value(&[]);
        let want = reduce(&trip, r);
        prop_assert!((got - want).abs() < 1e-9 * (1.0 + want.abs()), "triplet {got} vs {want}");
        let per = t.forward_no_reduction(&x, &labels, None).expect("per");
        prop_assert_eq!(per.numel(), trip.len());
    }

    #[test]
    fn multi_similarity_matches_naive_loops(seed in 0u64..1000, labels in proptest::collection::vec(0u32..3, 2..9)) {
        let (alpha, beta, base) = (2.0, 10.0, 0.4);
        let n = labels.len();
        let x = common::embeddings(seed, n, 3, 1.0);
        let xs = rows(&x);
        let cos = |i: usize, j: usize| {
            let dot: f64 = xs[i].iter().zip(&xs[j]).map(|(a, b)| a * b).sum();
            let ni: f64 = xs[i].iter().map(|a| a * a).sum::<f64>().sqrt();
            let nj: f64 = xs[j].iter().map(|a| a * a).sum::<f64>().sqrt();
            dot / (ni * nj)
        };
        let mut want = 0.0;
        for i in 0..n {
            let (mut sp, mut sn) = (0.0, 0.0);
            for j in 0..n {
                if i == j { continue; }
                if labels[i] == labels[j] { sp += (-alpha * (cos(i, j) - base)).exp(); }
                else { sn += (beta * (cos(i, j) - base)).exp(); }
            }
            want += (1.0 + sp).ln() / alpha + (1.0 + sn).ln() / beta;
        }
        want /= n as f64;
        let ms = MultiSimilarityConfig { alpha, beta, base, ..Default::default() }.init().expect("ms");
        let got = ms.forward(&x, &labels, None).expect("forward").double_value(&[]);
        prop_assert!((got - want).abs() < 1e-9 * (1.0 + want.abs()), "{got} vs {want}");
    }
}

/// A loss written outside the crate: per-row squared norms, reduced by the provided `forward`.
#[derive(Debug)]
struct SquaredNorm(Reduction);

impl Loss for SquaredNorm {
    fn forward_no_reduction(
        &self,
        embeddings: &Tensor,
        labels: &[u32],
        _tuples: Option<&Tuples>,
    ) -> dml_losses::Result<Tensor> {
        dml_losses::check_batch(embeddings, labels)?;
        Ok(embeddings.square().sum_dim_intlist(1, false, None::<Kind>))
    }

    fn metric(&self) -> dml_kernels::Metric {
        dml_kernels::Metric::SquaredEuclidean
    }

    fn reduction(&self) -> Reduction {
        self.0
    }
}

#[test]
fn a_loss_from_outside_gets_forward_from_its_per_item_values() {
    // Rows (1, 2) and (0, 3): squared norms 5 and 9.
    let x = Tensor::from_slice(&[1.0f64, 2.0, 0.0, 3.0]).view([2, 2]);
    let sum = SquaredNorm(Reduction::Sum)
        .forward(&x, &[0, 1], None)
        .unwrap();
    assert_eq!(sum.double_value(&[]), 14.0);
    let mean = SquaredNorm(Reduction::Mean)
        .forward(&x, &[0, 1], None)
        .unwrap();
    assert_eq!(mean.double_value(&[]), 7.0);
    assert!(matches!(
        SquaredNorm(Reduction::Mean).forward(&x, &[0], None),
        Err(Error::LabelCount {
            labels: 1,
            batch: 2
        })
    ));
}
