//! A TorchScript backbone in dml against PyTorch and pytorch-metric-learning: the fixture of
//! `scripts/fixtures/dml-models_torchscript.py` (one module, its features, one multi-similarity
//! training step with a given head, the gradients and the statistics after it). Used by
//! `tests/torchscript.rs` on the small committed modules and by the example
//! `torchscript_parity` on torchvision's ResNet-18 and a 2-layer ViT-B/16.

use std::collections::BTreeMap;
use std::path::Path;

use dml::losses::{Loss, MultiSimilarityConfig};
use dml::models::{EmbeddingNet, InputShape, ModelConfig, TorchScriptConfig};
use serde_json::Value;
use tch::{Device, Kind, Tensor, nn};

#[path = "../../../dml-models/tests/summary/mod.rs"]
mod summary;
use summary::compare_within;

/// Values (features, embeddings) are held to 1e-5 of their tensor's scale.
fn compare(what: &str, t: &Tensor, expected: &Value) -> f64 {
    compare_within(what, t, expected, 1e-5)
}

/// Gradients are held to 1e-4 of their tensor's scale, values to 1e-5: the multi-similarity
/// loss's β = 50 scales float32 rounding in the similarities by 50 in its gradient (measured:
/// up to 2.5e-5 on the head's bias, whose largest entry is below 1e-3; the backbones'
/// parameters stay below 1e-5).
const GRAD_TOL: f64 = 1e-4;

/// The fixture's labels (pml's `MultiSimilarityLoss` on them).
const LABELS: [u32; 8] = [0, 0, 1, 1, 2, 2, 3, 3];

/// The network of the fixture: the module at `module` as backbone, an 8-d normalised head.
pub fn network(vs: &nn::VarStore, module: &Path, side: i64) -> EmbeddingNet {
    let config = ModelConfig::Torchscript(TorchScriptConfig {
        path: module.to_path_buf(),
        embedding_dim: 8,
        ..Default::default()
    });
    EmbeddingNet::new(&vs.root(), &config, InputShape::new(3, side, side)).expect("network")
}

/// Checks the module at `module` against its fixture; returns the largest difference relative
/// to a tensor's scale.
pub fn check(module: &Path, fixture: &Value) -> f64 {
    tch::set_num_threads(1);
    let side = fixture["side"].as_i64().expect("side");
    let vs = nn::VarStore::new(Device::Cpu);
    let net = network(&vs, module, side);
    let vars: BTreeMap<String, Tensor> = vs.variables().into_iter().collect();
    {
        let _guard = tch::no_grad_guard();
        let shape: Vec<i64> = fixture["head_shape"]
            .as_array()
            .expect("head shape")
            .iter()
            .map(|v| v.as_i64().expect("side"))
            .collect();
        for (name, key) in [("head.weight", "weight"), ("head.bias", "bias")] {
            let values: Vec<f32> = fixture["head"][key]
                .as_array()
                .expect("head values")
                .iter()
                .map(|v| v.as_f64().expect("value") as f32)
                .collect();
            let t = Tensor::from_slice(&values);
            let t = if key == "weight" {
                t.reshape(&shape)
            } else {
                t
            };
            vars[name].shallow_clone().copy_(&t);
        }
    }

    tch::manual_seed(0);
    let x = Tensor::randn([8, 3, side, side], (Kind::Float, Device::Cpu));
    let mut worst = compare("input", &x, &fixture["input"]);
    let eval = net.features(&x, false).expect("eval forward");
    worst = worst.max(compare("eval features", &eval, &fixture["eval_features"]));

    let emb = net.embed(&x, true).expect("train forward");
    let want = &fixture["train"];
    worst = worst.max(compare("embeddings", &emb, &want["embeddings"]));
    let loss = MultiSimilarityConfig::default()
        .init()
        .expect("loss")
        .forward(&emb, &LABELS, None)
        .expect("loss value");
    let value = loss.double_value(&[]);
    let expected = want["loss"].as_f64().expect("loss");
    assert!(
        (value - expected).abs() <= 1e-5 * expected.abs().max(1.0),
        "loss {value}, PyTorch {expected}"
    );
    loss.backward();
    let grads = want["grads"].as_object().expect("grads");
    let backbone_vars = vars.keys().filter(|k| k.starts_with("backbone.")).count();
    assert_eq!(
        backbone_vars,
        grads.len(),
        "every module parameter is a variable"
    );
    for (name, expected) in grads {
        let var = &vars[&format!("backbone.{name}")];
        let what = format!("grad {name}");
        worst = worst.max(compare_within(&what, &var.grad(), expected, GRAD_TOL));
    }
    for key in ["weight", "bias"] {
        let var = &vars[&format!("head.{key}")];
        let expected = &want["head_grads"][key];
        let what = format!("head grad {key}");
        worst = worst.max(compare_within(&what, &var.grad(), expected, GRAD_TOL));
    }
    // The module's buffers after the step, as a caller sees them, and as a checkpoint's copy of
    // the module carries them.
    let after = &fixture["eval_features_after"];
    let eval = net.features(&x, false).expect("eval forward");
    worst = worst.max(compare("eval features after the step", &eval, after));
    let bytes = net
        .torchscript_bytes()
        .expect("serialise")
        .expect("a TorchScript backbone");
    let vs2 = nn::VarStore::new(Device::Cpu);
    let config = net.config().clone();
    let copy = EmbeddingNet::with_torchscript_bytes(
        &vs2.root(),
        &config,
        net.input_shape(),
        &bytes,
        "the copy",
    )
    .expect("rebuilt from bytes");
    let eval = copy.features(&x, false).expect("eval forward");
    worst = worst.max(compare("the copy's eval features", &eval, after));
    worst
}
