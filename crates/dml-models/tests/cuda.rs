//! The same training step on CUDA and on the CPU must agree.
//!
//! Needs a CUDA device and the CUDA LibTorch (`cargo xtask libtorch --cuda`), so it only builds
//! with `cargo test -p dml-models --features cuda-tests`.
#![cfg(feature = "cuda-tests")]

mod common;

use std::sync::{Mutex, MutexGuard};

use dml_models::{DeviceChoice, EmbeddingNet, save_safetensors};
use tch::{Device, nn};

/// LibTorch's CPU generator is global to the process and the harness runs tests on several
/// threads; the CPU/CUDA comparison needs both runs to draw the same batch, so each test here
/// holds this lock while it seeds and draws.
static TORCH: Mutex<()> = Mutex::new(());

fn torch_lock() -> MutexGuard<'static, ()> {
    TORCH.lock().unwrap_or_else(|e| e.into_inner())
}

/// cuDNN picks its own convolution algorithms (and TF32 where allowed), so CUDA and CPU agree to
/// float32 accumulation-order noise, not bit for bit.
const REL_TOL: f64 = 1e-3;

#[test]
fn one_step_on_cuda_matches_the_cpu_for_each_network() -> anyhow::Result<()> {
    let _torch = torch_lock();
    let cuda = DeviceChoice::Cuda.resolve()?;
    assert_eq!(cuda, Device::Cuda(0));
    assert_eq!(DeviceChoice::Auto.resolve()?, cuda);
    let dir = tempfile::tempdir()?;
    for (name, config, input) in common::networks() {
        // Same initial weights on both devices: built once on the CPU, saved, loaded on each.
        tch::manual_seed(0);
        let vs = nn::VarStore::new(Device::Cpu);
        EmbeddingNet::new(&vs.root(), &config, input)?;
        let init = dir.path().join(format!("{name}.safetensors"));
        save_safetensors(&vs, &init)?;

        let (cpu_before, cpu_after) = common::one_step(&config, input, Device::Cpu, Some(&init))?;
        let (gpu_before, gpu_after) = common::one_step(&config, input, cuda, Some(&init))?;
        eprintln!("{name}: cpu {cpu_before} -> {cpu_after}, cuda {gpu_before} -> {gpu_after}");
        assert!(
            gpu_after < gpu_before,
            "{name}: the CUDA step did not lower the loss"
        );
        for (c, g) in [(cpu_before, gpu_before), (cpu_after, gpu_after)] {
            assert!(
                (c - g).abs() <= REL_TOL * c.abs().max(1e-3),
                "{name}: cpu {c} vs cuda {g}"
            );
        }
    }
    Ok(())
}

#[test]
fn a_checkpoint_saved_from_cuda_loads_on_the_cpu() -> anyhow::Result<()> {
    let _torch = torch_lock();
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("model.safetensors");
    let (name, config, input) = common::networks().swap_remove(1);
    let gpu_vs = nn::VarStore::new(DeviceChoice::Cuda.resolve()?);
    let gpu_net = EmbeddingNet::new(&gpu_vs.root(), &config, input)?;
    save_safetensors(&gpu_vs, &path)?;
    let mut cpu_vs = nn::VarStore::new(Device::Cpu);
    let cpu_net = EmbeddingNet::new(&cpu_vs.root(), &config, input)?;
    dml_models::load_safetensors(&mut cpu_vs, &path)?;
    let (xs, _) = common::batch(input, 3, cpu_net.embedding_dim(), Device::Cpu);
    let on_gpu = gpu_net
        .embed(&xs.to_device(gpu_net.device()), false)?
        .to_device(Device::Cpu);
    let on_cpu = cpu_net.embed(&xs, false)?;
    assert!(on_gpu.allclose(&on_cpu, 1e-4, 1e-5, false), "{name}");
    Ok(())
}
