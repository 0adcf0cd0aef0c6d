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
                &format!("{} {cfg:?} tuples={t_name}", built.loss.name()),
            );
        }
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
