//! The trainer on the embedded digits: same seed → same numbers; resume → the uninterrupted run;
//! Ctrl-C in the middle of an epoch → a checkpoint that resumes exactly.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::sync::{Mutex, MutexGuard};

use dml::{Config, Trainer};
use tch::Tensor;

/// LibTorch's random generator is global to the process and the test harness runs tests on
/// several threads: two trainings seeding and drawing from it at once would interleave their
/// draws. Every test here that touches LibTorch holds this lock.
static TORCH: Mutex<()> = Mutex::new(());

fn torch_lock() -> MutexGuard<'static, ()> {
    TORCH.lock().unwrap_or_else(|e| e.into_inner())
}

/// A small, fast digits run.
fn config(dir: &Path, epochs: u64) -> Config {
    let mut c = Config::digits();
    c.run.output_dir = Some(dir.to_path_buf());
    c.run.threads = 1;
    c.train.epochs = epochs;
    c.train.eval_every = 1;
    c.train.eval_before = false;
    c.train.plots = false;
    c.train.progress = false;
    c.batch.batches_per_epoch = Some(4);
    // A schedule that does not depend on the total number of epochs, so a 1-epoch run resumed
    // for a second epoch follows the 2-epoch run's rates (a cosine schedule would not).
    c.schedule = dml::config::ScheduleConfig::Step {
        milestones: vec![1],
        gamma: 0.5,
    };
    c.validate().unwrap();
    c
}

fn weights(t: &Trainer) -> BTreeMap<String, Vec<f64>> {
    t.var_store()
        .variables()
        .into_iter()
        .map(|(k, v)| {
            let flat = v.to_kind(tch::Kind::Double).flatten(0, -1);
            (k, Vec::<f64>::try_from(&flat).unwrap())
        })
        .collect()
}

#[test]
fn same_seed_same_numbers_and_resume_matches() {
    let _torch = torch_lock();
    let a_dir = tempfile::tempdir().unwrap();
    let mut a = Trainer::new(config(a_dir.path(), 2)).unwrap();
    a.fit().unwrap();

    let b_dir = tempfile::tempdir().unwrap();
    let mut b = Trainer::new(config(b_dir.path(), 2)).unwrap();
    b.fit().unwrap();
    assert!(weights(&a) == weights(&b), "same seed, same weights");
    let numbers = |t: &Trainer| {
        t.state()
            .history
            .iter()
            .map(|r| {
                // Metrics to 1e-12: dml-eval's parallel sums may differ in the last bit between
                // identical runs; weights and losses are compared exactly.
                let metrics: Option<Vec<(String, i64)>> = r.metrics.as_ref().map(|m| {
                    m.iter()
                        .map(|(k, v)| (k.clone(), (v * 1e12).round() as i64))
                        .collect()
                });
                (r.epoch, r.loss, r.tuples_per_batch, metrics)
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(numbers(&a), numbers(&b));

    // 1 epoch, then resume for the second.
    let c_dir = tempfile::tempdir().unwrap();
    let mut c1 = Trainer::new(config(c_dir.path(), 1)).unwrap();
    c1.fit().unwrap();
    drop(c1);
    let mut c2 = Trainer::resume(config(c_dir.path(), 2)).unwrap();
    c2.fit().unwrap();
    assert!(
        weights(&a) == weights(&c2),
        "resumed weights equal the uninterrupted run's"
    );
    assert_eq!(numbers(&a), numbers(&c2));
    // The log holds exactly the two epochs.
    let log = dml::log::MetricsLog::read(&c_dir.path().join("metrics.jsonl")).unwrap();
    assert_eq!(log.iter().map(|r| r.epoch).collect::<Vec<_>>(), vec![1, 2]);

    // Ctrl-C right after the first step: a mid-epoch checkpoint, and resuming it finishes the run
    // with the same weights.
    let d_dir = tempfile::tempdir().unwrap();
    let mut d1 = Trainer::new(config(d_dir.path(), 2)).unwrap();
    d1.set_interrupt(Arc::new(AtomicBool::new(true)));
    let rd1 = d1.fit().unwrap();
    assert!(rd1.interrupted);
    assert_eq!(d1.state().batches_done, 1);
    drop(d1);
    let mut d2 = Trainer::resume(config(d_dir.path(), 2)).unwrap();
    assert_eq!(d2.state().batches_done, 1);
    d2.fit().unwrap();
    assert!(weights(&a) == weights(&d2), "resumed from mid-epoch");
    assert_eq!(numbers(&a), numbers(&d2));
}

#[test]
fn resume_with_a_changed_config_is_refused() {
    let _torch = torch_lock();
    let dir = tempfile::tempdir().unwrap();
    let mut t = Trainer::new(config(dir.path(), 1)).unwrap();
    t.fit().unwrap();
    let mut changed = config(dir.path(), 2);
    changed.optimizer.lr *= 2.0;
    let err = Trainer::resume(changed).unwrap_err().to_string();
    assert!(err.contains("config differs"), "{err}");
}

#[test]
fn checkpoint_round_trip_restores_weights() {
    let _torch = torch_lock();
    let dir = tempfile::tempdir().unwrap();
    let mut t = Trainer::new(config(dir.path(), 1)).unwrap();
    t.fit().unwrap();
    let ckpt = dml::checkpoint::load(&dir.path().join("checkpoint.safetensors")).unwrap();
    assert_eq!(ckpt.state.epochs_done, 1);
    assert_eq!(ckpt.state.n_steps, 4);
    let fresh = Trainer::from_checkpoint(config(dir.path(), 1), &ckpt).unwrap();
    assert!(weights(&t) == weights(&fresh));
    // No temporary file is left behind.
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().contains(".tmp-"))
        .collect();
    assert!(leftovers.is_empty());

    // A checkpoint cut short, or a file of another format, is refused with an error that says
    // which and names the file.
    let path = dir.path().join("checkpoint.safetensors");
    let bytes = std::fs::read(&path).unwrap();
    let cut = dir.path().join("cut.safetensors");
    for len in [4, 1000, bytes.len() - 1] {
        std::fs::write(&cut, &bytes[..len]).unwrap();
        let err = dml::checkpoint::load(&cut).unwrap_err().to_string();
        assert!(err.contains("truncated or corrupt"), "{len} bytes: {err}");
        assert!(err.contains("cut.safetensors"), "{err}");
    }
    let foreign = dir.path().join("config.toml");
    std::fs::write(&foreign, "[train]\nepochs = 3\n").unwrap();
    let err = dml::checkpoint::load(&foreign).unwrap_err().to_string();
    assert!(err.contains("not a safetensors file"), "{err}");
}

#[test]
fn adam_and_sgd_match_hand_calculation() {
    let _torch = torch_lock();
    use dml::optim::{Group, GroupSettings, Optimizer, OptimizerKind};
    for kind in [
        OptimizerKind::Adam,
        OptimizerKind::Sgd,
        OptimizerKind::Adamw,
    ] {
        let vs = tch::nn::VarStore::new(tch::Device::Cpu);
        let w = vs
            .root()
            .sub("model")
            .sub("head")
            .var_copy("w", &Tensor::from_slice(&[1.0f32, -2.0]));
        let s = GroupSettings {
            kind,
            lr: 0.1,
            weight_decay: 0.01,
            momentum: 0.9,
            nesterov: false,
            betas: (0.9, 0.999),
            eps: 1e-8,
        };
        let mut opt = Optimizer::new(&vs, [(Group::Head, s)].into_iter().collect()).unwrap();
        // Loss = sum(w²)/2, gradient = w. Two steps, computed by hand in f64 below.
        let mut p = [1.0f64, -2.0];
        let (mut m, mut v) = ([0.0f64; 2], [0.0f64; 2]);
        for t in 1..=2 {
            opt.zero_grad();
            let loss = (&w * &w).sum(tch::Kind::Float) / 2.0;
            loss.backward();
            opt.step(1.0).unwrap();
            for i in 0..2 {
                let mut g = p[i];
                match kind {
                    OptimizerKind::Sgd => {
                        g += 0.01 * p[i];
                        m[i] = 0.9 * m[i] + g;
                        p[i] -= 0.1 * m[i];
                    }
                    OptimizerKind::Adam | OptimizerKind::Adamw => {
                        if kind == OptimizerKind::Adam {
                            g += 0.01 * p[i];
                        } else {
                            p[i] *= 1.0 - 0.1 * 0.01;
                        }
                        m[i] = 0.9 * m[i] + 0.1 * g;
                        v[i] = 0.999 * v[i] + 0.001 * g * g;
                        let mh = m[i] / (1.0 - 0.9f64.powi(t));
                        let vh = v[i] / (1.0 - 0.999f64.powi(t));
                        p[i] -= 0.1 * mh / (vh.sqrt() + 1e-8);
                    }
                }
            }
        }
        let got = Vec::<f32>::try_from(&w).unwrap();
        for i in 0..2 {
            assert!(
                (f64::from(got[i]) - p[i]).abs() < 1e-5,
                "{kind:?}: {got:?} vs {p:?}"
            );
        }
    }
}

/// Training is wired: the digits recipe raises held-out MAP@R well above the untrained network's
/// (README: 0.26 → 0.39), and the same run with a learning rate too small to move the weights
/// (what a no-op optimiser step or a detached loss would give) does not reach the margin, so the
/// first assertion can fail.
#[test]
fn training_raises_held_out_map_at_r_over_the_untrained_network() {
    let _torch = torch_lock();
    const MARGIN: f64 = 0.05;
    let run = |lr: f64| {
        let dir = tempfile::tempdir().unwrap();
        let mut c = Config::digits();
        c.run.output_dir = Some(dir.path().to_path_buf());
        c.train.plots = false;
        c.train.progress = false;
        c.train.eval_before = true;
        c.train.eval_every = 0;
        c.eval.nmi = false;
        c.optimizer.lr = lr;
        c.optimizer.loss_lr = Some(lr);
        c.validate().unwrap();
        let report = Trainer::new(c).unwrap().fit().unwrap();
        let map = |m: &Option<BTreeMap<String, f64>>| m.as_ref().unwrap()["map_at_r"];
        (map(&report.initial_metrics), map(&report.final_metrics))
    };
    let (before, after) = run(1e-3);
    assert!(
        after > before + MARGIN,
        "held-out MAP@R {before:.4} -> {after:.4}: training did not help"
    );
    let (before, after) = run(1e-12);
    assert!(
        after <= before + MARGIN,
        "a network that cannot move went {before:.4} -> {after:.4}"
    );
}
