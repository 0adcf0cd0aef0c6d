//! Autograd against central finite differences, in f64, for every loss and several settings.

mod common;

use dml_losses::{LossConfig, Pairs, Triplets, Tuples};
use tch::Tensor;

const LABELS: [u32; 8] = [0, 0, 1, 1, 2, 2, 0, 1];

fn mined_pairs() -> Tuples {
    Tuples::Pairs(Pairs {
        pos_anchor: vec![0, 1, 2, 4, 6],
        positive: vec![1, 6, 3, 5, 0],
        neg_anchor: vec![0, 0, 2, 5, 6, 7],
        negative: vec![2, 4, 5, 1, 3, 0],
        pos_weight: Some(vec![1.0, 0.5, 2.0, 1.0, 1.0]),
        neg_weight: None,
    })
}

fn mined_triplets() -> Tuples {
    Tuples::Triplets(Triplets {
        anchor: vec![0, 1, 2, 3, 4, 7],
        positive: vec![1, 0, 3, 7, 5, 2],
        negative: vec![2, 5, 6, 0, 3, 4],
        weight: None,
    })
}

fn configs() -> Vec<LossConfig> {
    let json = |s: &str| serde_json::from_str::<LossConfig>(s).expect("config");
    vec![
        json(r#"{"kind":"contrastive"}"#),
        json(
            r#"{"kind":"contrastive","pos_margin":0.1,"neg_margin":0.9,"metric":"squared_euclidean","reduction":"mean"}"#,
        ),
        json(
            r#"{"kind":"contrastive","pos_margin":0.8,"neg_margin":0.2,"metric":"cosine","reduction":"sum"}"#,
        ),
        json(r#"{"kind":"triplet","margin":0.3}"#),
        json(r#"{"kind":"triplet","margin":0.3,"smooth":true,"metric":"dot"}"#),
        json(r#"{"kind":"margin"}"#),
        json(r#"{"kind":"margin","learn_beta":true,"nu":0.1,"reduction":"mean"}"#),
        json(r#"{"kind":"margin","learn_beta":true,"per_class_beta":true,"nu":0.1,"beta":0.8}"#),
        json(r#"{"kind":"lifted_structured"}"#),
        json(r#"{"kind":"lifted_structured","neg_margin":0.5,"metric":"cosine"}"#),
        json(r#"{"kind":"n_pair","l2_reg":0.05}"#),
        json(r#"{"kind":"n_pair","metric":"euclidean","reduction":"sum"}"#),
        json(r#"{"kind":"multi_similarity"}"#),
        json(r#"{"kind":"sup_con"}"#),
        json(r#"{"kind":"sup_con","temperature":0.5,"metric":"euclidean","reduction":"mean"}"#),
        json(
            r#"{"kind":"multi_similarity","alpha":1.5,"beta":8.0,"base":0.6,"metric":"euclidean","reduction":"mean_non_zero"}"#,
        ),
    ]
}

#[test]
fn autograd_matches_finite_differences() {
    for (k, cfg) in configs().iter().enumerate() {
        for (t_name, tuples) in [
            ("all", None),
            ("pairs", Some(mined_pairs())),
            ("triplets", Some(mined_triplets())),
        ] {
            let built = common::build(cfg, 3);
            let x = common::embeddings(k as u64 * 7 + 1, LABELS.len(), 4, 0.8);
            let (_, grad) =
                common::value_and_grad(built.loss.as_ref(), &x, &LABELS, tuples.as_ref());
            let num = common::numeric_grad(built.loss.as_ref(), &x, &LABELS, tuples.as_ref());
            common::assert_close(
                &grad,
                &num,
                1e-5,
                1e-7,
                &format!("{} {cfg:?} tuples={t_name}", cfg.kind()),
            );
        }
    }
}

/// Central finite differences of the loss with respect to each entry of the variable `var`.
fn var_numeric_grad(built: &common::Built, var: &Tensor, x: &Tensor, labels: &[u32]) -> Vec<f64> {
    let base = common::to_vec(var);
    let h = 1e-6;
    let eval = |vals: &[f64]| {
        tch::no_grad(|| {
            let mut var = var.shallow_clone();
            var.copy_(&Tensor::from_slice(vals).view(var.size().as_slice()));
            built
                .loss
                .forward(x, labels, None)
                .expect("forward")
                .double_value(&[])
        })
    };
    let num = (0..base.len())
        .map(|i| {
            let (mut p, mut m) = (base.clone(), base.clone());
            p[i] += h;
            m[i] -= h;
            (eval(&p) - eval(&m)) / (2.0 * h)
        })
        .collect();
    eval(&base);
    num
}

/// Every tuple loss of the registry is in `configs` (the losses with class vectors are taken
/// from the registry itself by `proxy_losses_match_finite_differences`).
#[test]
fn every_tuple_loss_kind_is_gradient_checked() {
    let listed: Vec<&str> = configs().iter().map(LossConfig::kind).collect();
    for cfg in LossConfig::defaults().filter(LossConfig::uses_tuples) {
        assert!(
            listed.contains(&cfg.kind()),
            "{} is not gradient-checked",
            cfg.kind()
        );
    }
}

/// Every loss with class vectors, at its defaults and at settings that reach its other
/// branches, against finite differences with respect to the embeddings and the class vectors.
#[test]
fn proxy_losses_match_finite_differences() {
    let json = |s: &str| serde_json::from_str::<LossConfig>(s).expect("config");
    let mut configs: Vec<LossConfig> = LossConfig::defaults()
        .filter(LossConfig::has_class_vectors)
        .collect();
    assert_eq!(configs.len(), 7);
    configs.extend([
        json(r#"{"kind":"proxy_nca","softmax_scale":9.0}"#),
        json(r#"{"kind":"proxy_anchor","margin":0.3,"alpha":8.0}"#),
        // θ beyond π − m for most targets: the fallback branch.
        json(r#"{"kind":"arcface","margin":120.0,"scale":4.0}"#),
        json(r#"{"kind":"soft_triple","centers_per_class":2,"gamma":0.5}"#),
    ]);
    // Class 3 of 4 is absent from the batch.
    let labels = [0, 0, 1, 1, 2, 2, 0, 1];
    for (k, cfg) in configs.iter().enumerate() {
        let built = common::build_dim(cfg, 4, 4);
        let x = common::embeddings(k as u64 * 5 + 3, labels.len(), 4, 0.8);
        let what = format!("{} {cfg:?}", cfg.kind());
        let (_, grad) = common::value_and_grad(built.loss.as_ref(), &x, &labels, None);
        let num = common::numeric_grad(built.loss.as_ref(), &x, &labels, None);
        common::assert_close(&grad, &num, 1e-5, 1e-7, &format!("{what} embeddings"));
        let proxies = built.vs.variables()["loss.proxies"].shallow_clone();
        let got = common::to_vec(&proxies.grad());
        let num = var_numeric_grad(&built, &proxies, &x, &labels);
        common::assert_close(&got, &num, 1e-5, 1e-7, &format!("{what} proxies"));
    }
}

#[test]
fn beta_gradient_matches_finite_differences() {
    let cfg: LossConfig = serde_json::from_str(
        r#"{"kind":"margin","learn_beta":true,"per_class_beta":true,"nu":0.1,"beta":0.8,"margin":0.3}"#,
    )
    .expect("config");
    let built = common::build(&cfg, 3);
    let x = common::embeddings(99, LABELS.len(), 4, 0.8);
    let v = built.loss.forward(&x, &LABELS, None).expect("forward");
    v.backward();
    let vars = built.vs.variables();
    for name in ["loss.beta", "loss.beta_class"] {
        let var = &vars[name];
        let grad = common::to_vec(&var.grad());
        let base = common::to_vec(var);
        let h = 1e-6;
        let eval = |vals: &[f64]| {
            tch::no_grad(|| {
                let mut var = var.shallow_clone();
                var.copy_(&Tensor::from_slice(vals));
                built
                    .loss
                    .forward(&x, &LABELS, None)
                    .expect("forward")
                    .double_value(&[])
            })
        };
        let num: Vec<f64> = (0..base.len())
            .map(|i| {
                let (mut p, mut m) = (base.clone(), base.clone());
                p[i] += h;
                m[i] -= h;
                let d = (eval(&p) - eval(&m)) / (2.0 * h);
                eval(&base);
                d
            })
            .collect();
        common::assert_close(&grad, &num, 1e-5, 1e-7, name);
    }
}
