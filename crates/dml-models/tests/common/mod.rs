//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::path::Path;

use dml_models::{
    BackboneConfig, ConvNetConfig, EmbeddingNet, InputShape, MlpConfig, ModelConfig,
    load_safetensors,
};
use tch::nn::{self, OptimizerConfig};
use tch::{Device, Kind, Tensor};

/// One small instance of each network with the input it is tested on (tiny, so ResNet-50 stays
/// fast on a CPU).
pub fn networks() -> Vec<(&'static str, ModelConfig, InputShape)> {
    vec![
        (
            "mlp",
            ModelConfig::Mlp(MlpConfig {
                hidden: vec![32, 16],
                embedding_dim: 8,
                ..Default::default()
            }),
            InputShape::new(1, 8, 8),
        ),
        (
            "conv_net",
            ModelConfig::ConvNet(ConvNetConfig {
                channels: vec![8, 16, 16],
                embedding_dim: 8,
                ..Default::default()
            }),
            InputShape::new(1, 8, 8),
        ),
        (
            "resnet18",
            ModelConfig::Resnet18(BackboneConfig {
                embedding_dim: 8,
                ..Default::default()
            }),
            InputShape::new(3, 32, 32),
        ),
        (
            "resnet50",
            ModelConfig::Resnet50(BackboneConfig {
                embedding_dim: 8,
                ..Default::default()
            }),
            InputShape::new(3, 32, 32),
        ),
    ]
}

/// Row norms, computed element by element on the CPU.
pub fn row_norms(x: &Tensor) -> Vec<f64> {
    let x = x.to_device(Device::Cpu).to_kind(Kind::Double);
    let (n, d) = (x.size()[0], x.size()[1]);
    (0..n)
        .map(|i| {
            (0..d)
                .map(|j| x.double_value(&[i, j]).powi(2))
                .sum::<f64>()
                .sqrt()
        })
        .collect()
}

/// LibTorch has one random generator per process, and the tests of one file run on parallel
/// threads: a test that seeds it and counts on the draws that follow (weights, inputs) holds
/// this lock, and so does every other test of its file that draws, so that no other test's
/// draws come between. ([`one_step`] takes it itself.)
pub fn torch_lock() -> std::sync::MutexGuard<'static, ()> {
    static TORCH_RNG: std::sync::Mutex<()> = std::sync::Mutex::new(());
    TORCH_RNG.lock().unwrap_or_else(|e| e.into_inner())
}

/// A fixed batch (drawn on the CPU, so every device sees the same numbers) and fixed unit targets.
pub fn batch(input: InputShape, n: i64, dim: i64, device: Device) -> (Tensor, Tensor) {
    tch::manual_seed(7);
    let xs = Tensor::randn(
        [n, input.channels, input.height, input.width],
        (Kind::Float, Device::Cpu),
    );
    let t = Tensor::randn([n, dim], (Kind::Float, Device::Cpu));
    let t = &t / t.square().sum_dim_intlist(1, true, Kind::Float).sqrt();
    (xs.to_device(device), t.to_device(device))
}

/// `mean ‖e − t‖²` over the batch, a loss any embedding network can lower.
pub fn loss(net: &EmbeddingNet, xs: &Tensor, t: &Tensor, train: bool) -> anyhow::Result<Tensor> {
    let e = net.embed(xs, train)?;
    Ok((e - t)
        .square()
        .sum_dim_intlist(1, false, Kind::Float)
        .mean(Kind::Float))
}

/// Builds the network on `device` (weights from `init` when given), takes one SGD step on the
/// fixed batch and returns the loss before and after.
pub fn one_step(
    config: &ModelConfig,
    input: InputShape,
    device: Device,
    init: Option<&Path>,
) -> anyhow::Result<(f64, f64)> {
    let _torch = torch_lock();
    tch::manual_seed(0);
    let mut vs = nn::VarStore::new(device);
    let net = EmbeddingNet::new(&vs.root(), config, input)?;
    if let Some(path) = init {
        load_safetensors(&mut vs, path)?;
    }
    let (xs, t) = batch(input, 4, net.embedding_dim(), device);
    let mut opt = nn::Sgd::default().build(&vs, 0.05)?;
    let before = loss(&net, &xs, &t, true)?;
    let before_value = before.double_value(&[]);
    opt.backward_step(&before);
    let after = loss(&net, &xs, &t, true)?.double_value(&[]);
    Ok((before_value, after))
}

/// `a` within `rel` of `b`'s largest magnitude (at least 1e-3) everywhere.
pub fn assert_close_to(name: &str, a: &Tensor, b: &Tensor, rel: f64) {
    let scale = b.abs().max().double_value(&[]).max(1e-3);
    let diff = (a - b).abs().max().double_value(&[]);
    assert!(
        diff <= rel * scale,
        "{name}: max |diff| {diff} (scale {scale})"
    );
}
