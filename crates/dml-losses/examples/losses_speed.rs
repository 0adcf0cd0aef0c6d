//! Forward + backward time of each loss, B = 256, D = 128, on the batch and tuples written by
//! `scripts/fixtures/dml_losses_speed.py` (pml's miners), for a side-by-side with pml.
//!
//! ```text
//! .venv-ref/bin/python scripts/fixtures/dml_losses_speed.py 2
//! cargo run --release -p dml-losses --example losses_speed -- /tmp/dml_losses_speed
//! ```

use std::time::Instant;

use dml_losses::{Loss, LossConfig, Pairs, Triplets, Tuples};
use serde_json::Value;
use tch::{Device, Kind, Tensor, nn};

fn u32s(v: &Value) -> Vec<u32> {
    v.as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_u64)
        .map(|x| x as u32)
        .collect()
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "/tmp/dml_losses_speed".into());
    let dir = std::path::Path::new(&dir);
    let batch: Value = serde_json::from_str(&std::fs::read_to_string(dir.join("batch.json"))?)?;
    let (b, d) = (
        batch["b"].as_i64().unwrap_or(0),
        batch["d"].as_i64().unwrap_or(0),
    );
    let xs: Vec<f32> = batch["x"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_f64)
        .map(|v| v as f32)
        .collect();
    let x = Tensor::from_slice(&xs).view([b, d]);
    let labels = u32s(&batch["labels"]);
    println!(
        "dml-losses, libtorch {} threads, B={b}, D={d}",
        tch::get_num_threads()
    );
    let vs = nn::VarStore::new(Device::Cpu);
    for name in [
        "contrastive",
        "triplet",
        "margin",
        "lifted_structured",
        "n_pair",
        "multi_similarity",
    ] {
        let t: Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join(format!("{name}.json")))?)?;
        let tuples = match t.as_array().map(Vec::len) {
            Some(4) => Some(Tuples::Pairs(Pairs {
                pos_anchor: u32s(&t[0]),
                positive: u32s(&t[1]),
                neg_anchor: u32s(&t[2]),
                negative: u32s(&t[3]),
                ..Pairs::default()
            })),
            Some(3) => Some(Tuples::Triplets(Triplets {
                anchor: u32s(&t[0]),
                positive: u32s(&t[1]),
                negative: u32s(&t[2]),
                weight: None,
            })),
            _ => None,
        };
        let cfg: LossConfig = serde_json::from_str(&format!(r#"{{"kind":"{name}"}}"#))?;
        let loss: Box<dyn Loss> =
            cfg.build(&(vs.root() / name), dml_losses::LossContext::new(32, 0))?;
        let mut times = Vec::new();
        let mut fwd = Vec::new();
        let mut value = 0.0;
        for _ in 0..40 {
            let xg = x.detach().set_requires_grad(true);
            let t0 = Instant::now();
            let v = loss.forward(&xg, &labels, tuples.as_ref())?;
            fwd.push(t0.elapsed().as_secs_f64());
            v.f_backward()?;
            times.push(t0.elapsed().as_secs_f64());
            value = v.to_kind(Kind::Double).double_value(&[]);
        }
        let median = |v: &[f64]| {
            let mut tail = v[5..].to_vec();
            tail.sort_by(f64::total_cmp);
            tail[tail.len() / 2] * 1e3
        };
        let n = match &tuples {
            None => "all".to_string(),
            Some(Tuples::Pairs(p)) => format!("{}+{}", p.n_pos(), p.n_neg()),
            Some(Tuples::Triplets(t)) => format!("{}", t.len()),
        };
        println!(
            "{name:18} tuples={n:22} median {:8.3} ms (forward {:.3} ms)  loss={value:.5}",
            median(&times),
            median(&fwd)
        );
    }
    Ok(())
}
