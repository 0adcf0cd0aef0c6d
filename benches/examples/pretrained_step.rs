//! Times training steps of a pretrained backbone as the `step_<kind>_ms` bench rows run them
//! (ImageNet weights, 128-d head, multi-similarity miner and loss, Adam), for profiling and for
//! comparing two builds of dml as whole processes.
//!
//! `cargo run --release -p dml-benches --example pretrained_step -- mobilenet_v2 [STEPS] [SIDE]`
//! (`efficientnet_lite0` likewise); needs `cargo xtask weights <name>`.

use std::time::Instant;

use anyhow::Context;
use dml_kernels::Metric;
use dml_models::{EmbeddingNet, InputShape, ModelConfig};
use dml_sampling::MinerConfig;
use rand::SeedableRng;
use tch::{Device, Tensor, nn};

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let kind = args.next().unwrap_or_else(|| "mobilenet_v2".to_owned());
    let steps: usize = args.next().map_or(Ok(5), |s| s.parse())?;
    let side: i64 = args.next().map_or(Ok(96), |s| s.parse())?;
    let weights = match kind.as_str() {
        "mobilenet_v2" => "mobilenet-v2",
        "efficientnet_lite0" => "efficientnet-lite0",
        other => anyhow::bail!("unknown kind {other}"),
    };
    dml_benches::init_threads();
    dml_models::keep_freed_memory();
    let file = dml_benches::project_root().join(format!("weights/{weights}.safetensors"));
    let (p, k) = (8usize, 8usize);
    let b = p * k;
    let labels = dml_benches::data::labels(p, k);
    let images = dml_benches::data::rgb_images(b, side as usize, 11);
    let cfg: ModelConfig = serde_json::from_value(serde_json::json!({
        "kind": kind, "embedding_dim": 128, "pretrained": file.display().to_string(),
    }))?;
    let mut vs = nn::VarStore::new(Device::Cpu);
    let net = EmbeddingNet::new(&(vs.root() / "model"), &cfg, InputShape::new(3, side, side))?;
    net.load_pretrained(&mut vs)?;
    let loss = dml_losses::LossConfig::MultiSimilarity(Default::default())
        .build(&(vs.root() / "loss"), dml_losses::LossContext::new(p, 128))?;
    let miner = MinerConfig::MultiSimilarity(Default::default())
        .build(dml_sampling::MinerContext { embedding_dim: 128 })?;
    let mut opt =
        dml::optim::Optimizer::new(&vs, dml::config::OptimizerConfig::default().groups())?;
    let xs = Tensor::f_from_slice(images.as_slice().context("standard layout")?)?
        .f_view([b as i64, 3, side, side])?;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
    let start = Instant::now();
    for _ in 0..steps {
        let emb = net.embed(&xs, true)?;
        let emb_nd = dml_kernels::tensor::to_array2(&emb.f_detach()?)?;
        let dist = dml_kernels::self_pairwise(Metric::Cosine, emb_nd.view())?;
        let tuples = miner.mine(dist.view(), Metric::Cosine, &labels, &mut rng)?;
        let l = loss.forward(&emb, &labels, Some(&tuples))?;
        opt.zero_grad();
        l.f_backward()?;
        opt.step(1.0)?;
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "{kind}: {steps} steps of B{b} at {side} px in {secs:.2} s ({:.1} ms a step)",
        1e3 * secs / steps as f64
    );
    Ok(())
}
