//! Where one cross-batch-memory step's time goes: triplet loss + batch-hard mining, B 128 ×
//! memory 8,192 × D 128, as the `xbm_triplet_batch_hard` bench case runs it, phase by phase,
//! then the memory term's parts on their own (the B × M GEMM, the clamp and root, the miner's
//! walk over a ready matrix, once right after LibTorch work and once after a pause).
//!
//! ```sh
//! cargo run --release -p dml-benches --example xbm_phases -- [steps]
//! ```

use std::time::{Duration, Instant};

use dml_benches::data;
use dml_kernels::Metric;
use dml_losses::{LossConfig, LossContext};
use dml_sampling::MinerConfig;
use rand::SeedableRng;
use serde_json::json;
use tch::{Device, Kind, Tensor, nn};

const PHASES: [&str; 9] = [
    "batch distances + mining",
    "batch loss forward",
    "memory term (loss_term)",
    "backward",
    "enqueue",
    "  B x M GEMM alone",
    "  clamp + root alone",
    "  miner walk alone",
    "  miner walk after a pause",
];

fn main() -> anyhow::Result<()> {
    let steps: usize = std::env::args().nth(1).map_or(Ok(300), |s| s.parse())?;
    dml_models::keep_freed_memory();
    let (b, d, k, size) = (128usize, 128usize, 4usize, 8192usize);
    let work = data::memory_workload(b, k, d, size);
    let vs = nn::VarStore::new(Device::Cpu);
    let loss: LossConfig = serde_json::from_value(json!({"kind": "triplet", "margin": 0.05}))?;
    let loss = loss.build(&vs.root(), LossContext::new(b / k, d))?;
    let miner: MinerConfig = serde_json::from_value(json!({"kind": "batch_hard"}))?;
    let miner = miner.build(dml_sampling::MinerContext { embedding_dim: 128 })?;
    let bank = work.bank()?;
    let data::MemoryWorkload {
        labels,
        emb,
        mem,
        mem_labels,
    } = work;
    let mut memory = dml::memory::CrossBatchMemory::new(bank, Device::Cpu)?;
    let to_tensor = |a: &ndarray::Array2<f32>| dml_kernels::tensor::from_array(a.view());
    let xt = to_tensor(&emb)?.set_requires_grad(true);
    let ones = |n: usize| Tensor::ones([n as i64, 2], (Kind::Float, Device::Cpu));
    let aug = Tensor::cat(&[to_tensor(&mem)?, ones(size)], 1);
    let left = Tensor::cat(&[xt.detach(), ones(b)], 1);
    let mut scratch = Tensor::zeros([b as i64, size as i64], (Kind::Float, Device::Cpu));
    let ready = dml_kernels::pairwise(Metric::Euclidean, emb.view(), mem.view())?;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);

    let mut total = [Duration::ZERO; PHASES.len()];
    for step in 0..steps + 20 {
        let mut t = [Duration::ZERO; PHASES.len()];
        let mut lap = Instant::now();
        let mut mark = |i: usize, t: &mut [Duration; PHASES.len()]| {
            t[i] = lap.elapsed();
            lap = Instant::now();
        };
        let mut xg = xt.shallow_clone();
        xg.zero_grad();
        let dist = dml_kernels::self_pairwise(Metric::Euclidean, emb.view())?;
        let tuples = miner.mine(dist.view(), Metric::Euclidean, &labels, &mut rng)?;
        mark(0, &mut t);
        let mut l = loss.forward(&xg, &labels, Some(&tuples))?;
        mark(1, &mut t);
        let term = memory.loss_term(loss.as_ref(), Some(miner.as_ref()), &xg, &labels, &mut rng)?;
        if let Some((term, _)) = term {
            l = l.f_add(&term)?;
        }
        mark(2, &mut t);
        l.f_backward()?;
        mark(3, &mut t);
        memory.enqueue(emb.view(), &labels)?;
        mark(4, &mut t);
        {
            let _guard = tch::no_grad_guard();
            let _ = left.f_mm_out(&scratch, &aug.f_tr()?)?;
            mark(5, &mut t);
            let _ = scratch.f_clamp_min_(0.0)?.f_sqrt_()?;
            mark(6, &mut t);
        }
        let mut walk = || {
            miner.mine_reference(
                ready.view(),
                Metric::Euclidean,
                &labels,
                &mem_labels,
                &mut rng,
            )
        };
        walk()?;
        mark(7, &mut t);
        std::thread::sleep(Duration::from_millis(3));
        mark(8, &mut t);
        walk()?;
        mark(8, &mut t);
        if step >= 20 {
            for (sum, dt) in total.iter_mut().zip(t) {
                *sum += dt;
            }
        }
    }
    for (name, sum) in PHASES.iter().zip(total) {
        println!("{name:28} {:.3} ms", sum.as_secs_f64() / steps as f64 * 1e3);
    }
    Ok(())
}
