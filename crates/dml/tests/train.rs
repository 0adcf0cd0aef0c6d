//! The trainer on the embedded digits: same seed → same numbers; resume → the uninterrupted run;
//! Ctrl-C in the middle of an epoch → a checkpoint that resumes exactly.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::sync::{Mutex, MutexGuard};

use dml::sampling::{MinerConfig, TupleKind};
use dml::{Config, Trainer};
use tch::Tensor;

mod common;
use common::{glyph_idx, write_idx_dir, xorshift};

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

/// The digits run with a proxy loss: Proxy-Anchor, no miner, proxies at 100× the network's rate.
fn proxy_config(dir: &Path, epochs: u64) -> Config {
    let mut c = config(dir, epochs);
    c.miner = None;
    c.loss = dml::losses::LossConfig::ProxyAnchor(Default::default());
    c.optimizer.loss_lr = Some(c.optimizer.lr * 100.0);
    c.validate().unwrap();
    c
}

#[test]
fn same_seed_same_numbers_and_resume_matches() {
    check_same_seed_and_resume(config);
}

/// The same for a loss whose proxies are trained with their own learning rate and Adam state:
/// both are in the checkpoint, so the resumed run is bit for bit the uninterrupted one.
#[test]
fn proxy_loss_trains_and_resumes_exactly() {
    let (initial, trained) = check_same_seed_and_resume(proxy_config);
    let (before, after) = (&initial["loss.proxies"], &trained["loss.proxies"]);
    assert_eq!(before.len(), 5 * 32, "one 32-d proxy per training digit");
    let moved = before
        .iter()
        .zip(after)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f64::max);
    assert!(
        moved > 1e-3,
        "the proxies were trained (largest change {moved})"
    );
}

/// The digits run with cross-batch memory: margin loss + distance-weighted sampling against a
/// memory of 100 embeddings (2.5 batches of 40, so it wraps within the first epoch) that starts
/// filling after the first step.
fn memory_config(dir: &Path, epochs: u64) -> Config {
    let mut c = config(dir, epochs);
    c.memory = Some(dml::config::MemoryConfig {
        size: 100,
        start_after_steps: 1,
        weight: 0.5,
    });
    c.validate().unwrap();
    c
}

/// The memory (its rows, labels and write position) is in the checkpoint, so a run resumed
/// after one epoch, or after one step, is bit for bit the uninterrupted one; and the memory term
/// changes training (the weights differ from the run without it, and more tuples are mined).
#[test]
fn cross_batch_memory_trains_checkpoints_and_resumes_exactly() {
    let (_, with_memory) = check_same_seed_and_resume(memory_config);
    let _torch = torch_lock();
    let dir = tempfile::tempdir().unwrap();
    let mut plain = Trainer::new(config(dir.path(), 2)).unwrap();
    plain.fit().unwrap();
    assert!(
        weights(&plain) != with_memory,
        "the memory term changes training"
    );

    let dir = tempfile::tempdir().unwrap();
    let mut t = Trainer::new(memory_config(dir.path(), 1)).unwrap();
    t.fit().unwrap();
    let ckpt = dml::checkpoint::load(&dir.path().join("checkpoint.safetensors")).unwrap();
    let (rows, labels) = ckpt.memory.expect("the memory is saved");
    // Steps 2, 3 and 4 enqueued 3 × 40 rows into 100 slots: full, next write at slot 20.
    assert_eq!(labels.len(), 100);
    assert_eq!(rows.len(), 100 * 32);
    assert_eq!(ckpt.state.memory_head, Some(20));
    assert!(labels.iter().all(|&l| l < 5), "dense training labels");
    // Rows are L2-normalised embeddings.
    for r in rows.chunks(32) {
        let norm = r.iter().map(|v| v * v).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-4, "row norm {norm}");
    }
    let (plain_tuples, memory_tuples) = (
        plain.state().history[0].tuples_per_batch.unwrap(),
        t.state().history[0].tuples_per_batch.unwrap(),
    );
    assert!(
        memory_tuples > plain_tuples,
        "the memory adds tuples: {memory_tuples} vs {plain_tuples}"
    );
}

#[test]
fn memory_settings_that_cannot_work_are_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = memory_config(dir.path(), 1);
    c.memory.as_mut().unwrap().size = 39;
    let err = c.validate().unwrap_err().to_string();
    assert!(
        err.contains("memory.size = 39 is smaller than a batch of 40"),
        "{err}"
    );
    let mut c = proxy_config(dir.path(), 1);
    c.memory = Some(Default::default());
    let err = c.validate().unwrap_err().to_string();
    assert!(err.contains("got proxy_anchor"), "{err}");
    let mut c = memory_config(dir.path(), 1);
    c.miner = Some(dml::sampling::MinerConfig::NPairs(Default::default()));
    c.loss = dml::losses::LossConfig::MultiSimilarity(Default::default());
    let err = c.validate().unwrap_err().to_string();
    assert!(err.contains("cannot be mined by n_pairs"), "{err}");
    let mut c = memory_config(dir.path(), 1);
    c.memory.as_mut().unwrap().weight = 0.0;
    assert!(
        c.validate()
            .unwrap_err()
            .to_string()
            .contains("memory.weight")
    );
}

/// Trains `config`'s run twice from the same seed, once in two sittings, and once interrupted
/// after its first step and resumed; all four must agree. Returns the weights before training
/// and after.
fn check_same_seed_and_resume(
    config: fn(&Path, u64) -> Config,
) -> (BTreeMap<String, Vec<f64>>, BTreeMap<String, Vec<f64>>) {
    let _torch = torch_lock();
    let a_dir = tempfile::tempdir().unwrap();
    let mut a = Trainer::new(config(a_dir.path(), 2)).unwrap();
    let initial = weights(&a);
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
                let metrics: Option<Vec<(dml::eval::Score, i64)>> = r.metrics.as_ref().map(|m| {
                    m.scores()
                        .into_iter()
                        .map(|(k, v)| (k, (v * 1e12).round() as i64))
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
    assert_eq!(d1.state().epoch.batches_done, 1);
    drop(d1);
    let mut d2 = Trainer::resume(config(d_dir.path(), 2)).unwrap();
    assert_eq!(d2.state().epoch.batches_done, 1);
    d2.fit().unwrap();
    assert!(weights(&a) == weights(&d2), "resumed from mid-epoch");
    assert_eq!(numbers(&a), numbers(&d2));
    (initial, weights(&a))
}

/// Training labels that are not `0..C` (here 1, 3, 5, 7; 9–15 held out) are numbered densely:
/// the proxies are sized by the 4 training classes, not by the largest label.
#[test]
fn class_vectors_are_sized_from_the_training_classes() {
    let _torch = torch_lock();
    let data = tempfile::tempdir().unwrap();
    let mut next = xorshift(0x1234_5678_9ABC_DEF1);
    let (side, per_class) = (5usize, 6usize);
    let mut images = Vec::new();
    let mut labels = Vec::new();
    for i in 0..8 * per_class {
        let c = (i % 8) as u8;
        images.extend((0..side * side).map(|p| {
            ((next() % 128) as u8).wrapping_add(if p % 8 == c as usize { 120 } else { 0 })
        }));
        labels.push(2 * c + 1);
    }
    write_idx_dir(data.path(), side, &images, &labels);
    let dir = tempfile::tempdir().unwrap();
    let mut c = Config::from_toml_str(
        "[data]\nkind = \"digits\"\n[model]\nkind = \"mlp\"\nembedding_dim = 16\n\
         [batch]\np = 4\nk = 3\nbatches_per_epoch = 3\n[loss]\nkind = \"normalized_softmax\"\n\
         [train]\nepochs = 1\neval_before = false\nplots = false\nprogress = false\n",
        "<test>",
    )
    .unwrap();
    c.data = dml::data::DataConfig::Idx {
        path: data.path().to_path_buf(),
    };
    c.run.output_dir = Some(dir.path().to_path_buf());
    c.run.threads = 1;
    c.validate().unwrap();
    let mut t = Trainer::new(c).unwrap();
    assert_eq!(t.var_store().variables()["loss.proxies"].size(), [4, 16]);
    let report = t.fit().unwrap();
    assert!(report.final_metrics.is_some());
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
    // The network alone, restored for embedding (what `dml embed` uses), embeds the held-out
    // classes exactly as the trainer does.
    let model = dml::embed::TrainedModel::load(&dir.path().join("checkpoint.safetensors")).unwrap();
    let (want, want_labels) = t.embed_split(dml::embed::SplitPart::Test).unwrap();
    let (got, got_labels) = model.embed_split(dml::embed::SplitPart::Test).unwrap();
    assert_eq!(got_labels, want_labels);
    assert_eq!(got, want);
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

/// Adam counts each variable's own updates for its bias correction, as PyTorch does: a variable
/// without a gradient for the first steps (a backbone frozen for a warm-up) takes, at its first
/// update, the first-step size `lr · g / (|g| + ε)`, not the damped step of a late `t` with fresh
/// moments. The count is checkpointed with the moments. `backbone_lr` sets the backbone group's
/// rate alone.
#[test]
fn adam_bias_correction_counts_each_variables_updates_and_backbone_lr_applies() {
    let _torch = torch_lock();
    use dml::optim::{Group, Optimizer};
    let settings = dml::config::OptimizerConfig {
        lr: 0.1,
        backbone_lr: Some(0.01),
        ..Default::default()
    }
    .groups();
    assert_eq!(settings[&Group::Backbone].lr, 0.01);
    assert_eq!(settings[&Group::Head].lr, 0.1);
    assert_eq!(settings[&Group::Loss].lr, 0.1);
    assert_eq!(Group::of("model.backbone.head.weight"), Group::Backbone);
    assert_eq!(Group::of("model.head.weight"), Group::Head);

    let vs = tch::nn::VarStore::new(tch::Device::Cpu);
    let head = vs
        .root()
        .sub("model")
        .sub("head")
        .var_copy("w", &Tensor::from_slice(&[1.0f32]));
    let body = vs
        .root()
        .sub("model")
        .sub("backbone")
        .var_copy("w", &Tensor::from_slice(&[3.0f32]));
    let mut opt = Optimizer::new(&vs, settings).unwrap();
    // Two steps where only the head has a gradient (loss w²/2, gradient w), then one for both.
    for _ in 0..2 {
        opt.zero_grad();
        ((&head * &head).sum(tch::Kind::Float) / 2.0).backward();
        opt.step(1.0).unwrap();
    }
    assert_eq!(f32::try_from(&body).unwrap(), 3.0, "no gradient, no update");
    let state: BTreeMap<String, Tensor> = opt.state().into_iter().collect();
    opt.zero_grad();
    (((&head * &head) + (&body * &body)).sum(tch::Kind::Float) / 2.0).backward();
    opt.step(1.0).unwrap();
    // The body's first update: m = 0.1 g, v = 0.001 g², bias-corrected with t = 1 to g and g².
    let g = 3.0f64;
    let want = 3.0 - 0.01 * g / (g.abs() + 1e-8);
    let got = f64::from(f32::try_from(&body).unwrap());
    assert!((got - want).abs() < 1e-6, "{got} vs {want}");
    // With the run's step count (3) instead, the fresh moments' correction would shrink the
    // step to 0.64 of that (0.369 g / 0.578 |g|).
    let late =
        3.0 - 0.01 * (0.1 / (1.0 - 0.9f64.powi(3))) / (0.001f64 / (1.0 - 0.999f64.powi(3))).sqrt();
    assert!(
        (got - late).abs() > 1e-3,
        "{got} is not the late-t step {late}"
    );

    // The counts travel with the checkpoint's state: restoring the state after two steps
    // gives the body its first update again.
    let counts = |s: &BTreeMap<String, Tensor>, name: &str| {
        s[&format!("t.model.{name}.w")].int64_value(&[0])
    };
    assert_eq!((counts(&state, "head"), counts(&state, "backbone")), (2, 0));
    let mut fresh = Optimizer::new(&vs, opt_groups()).unwrap();
    fresh.load_state(&state, 2).unwrap();
    let restored: BTreeMap<String, Tensor> = fresh.state().into_iter().collect();
    assert_eq!(counts(&restored, "backbone"), 0);
    // A checkpoint from before the counts existed gives every variable the run's count.
    let old: BTreeMap<String, Tensor> = state
        .iter()
        .filter(|(k, _)| !k.starts_with("t."))
        .map(|(k, v)| (k.clone(), v.shallow_clone()))
        .collect();
    fresh.load_state(&old, 2).unwrap();
    let restored: BTreeMap<String, Tensor> = fresh.state().into_iter().collect();
    assert_eq!(counts(&restored, "backbone"), 2);
}

fn opt_groups() -> BTreeMap<dml::optim::Group, dml::optim::GroupSettings> {
    dml::config::OptimizerConfig::default().groups()
}

/// Training is wired: on a task built so that neither the pixels nor random features can solve
/// it (each class is a random 4 × 4 binary glyph stamped at a random place on a 12 × 12 field
/// of noise; classes 0–4 train, 5–9 held out), the digits recipe raises held-out MAP@R well above
/// both the untrained network's and that of the same run with a learning rate too small to move
/// the weights (what a no-op optimiser step or a detached loss would give; only batch norm's
/// running statistics move in it, which alone lifts MAP@R a little). Against that frozen run the
/// assertion can fail. (The embedded 8 × 8 digits cannot serve: their raw pixels and the
/// untrained network already retrieve better than any trained network, docs/results.md.)
#[test]
fn training_raises_held_out_map_at_r_over_the_untrained_network() {
    let _torch = torch_lock();
    const MARGIN: f64 = 0.1;
    let data = tempfile::tempdir().unwrap();
    glyph_idx(data.path());
    let run = |lr: f64| {
        let dir = tempfile::tempdir().unwrap();
        let mut c = Config::digits();
        c.data = dml::data::DataConfig::Idx {
            path: data.path().to_path_buf(),
        };
        c.run.output_dir = Some(dir.path().to_path_buf());
        c.train.plots = false;
        c.train.progress = false;
        c.train.eval_before = true;
        c.train.eval_every = 0;
        c.eval.config.nmi = false;
        c.optimizer.lr = lr;
        c.optimizer.loss_lr = Some(lr);
        c.validate().unwrap();
        let report = Trainer::new(c).unwrap().fit().unwrap();
        let map = |m: &Option<dml::eval::Metrics>| m.as_ref().unwrap().map_at_r.unwrap();
        (map(&report.initial_metrics), map(&report.final_metrics))
    };
    let (before, trained) = run(1e-3);
    let (frozen_before, frozen) = run(1e-12);
    assert_eq!(
        before, frozen_before,
        "both runs start from the same network"
    );
    assert!(
        trained > before + MARGIN && trained > frozen + MARGIN,
        "held-out MAP@R: untrained {before:.4}, trained {trained:.4}, weights frozen \
         {frozen:.4}: training did not help"
    );
}

// ---------- Baselines ----------

/// A tiny IDX data set in `dir`: 8 classes × 6 images of 5 × 5 pseudo-random pixels (classes 0–3
/// train, 4–7 held out); each class has its own mean image, so retrieval is neither perfect nor
/// hopeless. Returns the held-out items' pixels and labels in the order the split keeps them.
fn tiny_idx(dir: &Path) -> (Vec<Vec<u8>>, Vec<u32>) {
    let mut next = xorshift(0x2545_F491_4F6C_DD1Du64);
    let (classes, per_class, side) = (8u32, 6usize, 5usize);
    let centres: Vec<Vec<u8>> = (0..classes)
        .map(|_| (0..side * side).map(|_| (next() % 64) as u8).collect())
        .collect();
    let mut images = Vec::new();
    let mut labels = Vec::new();
    for i in 0..classes as usize * per_class {
        let c = (i % classes as usize) as u32;
        let img: Vec<u8> = centres[c as usize]
            .iter()
            .map(|&v| v + (next() % 192) as u8)
            .collect();
        images.push(img);
        labels.push(c);
    }
    let label_bytes: Vec<u8> = labels.iter().map(|&l| l as u8).collect();
    write_idx_dir(dir, side, &images.concat(), &label_bytes);
    images
        .into_iter()
        .zip(labels)
        .filter(|&(_, l)| l >= classes / 2)
        .unzip()
}

/// P@1, R-precision and MAP@R by their definitions (Musgrave et al. 2020), each query left out,
/// neighbours by a full sort of squared Euclidean distances in f64.
fn naive_scores(x: &[Vec<f64>], labels: &[u32]) -> (f64, f64, f64) {
    let n = x.len();
    let (mut p1, mut rp, mut map) = (0.0, 0.0, 0.0);
    for q in 0..n {
        let mut others: Vec<(f64, usize)> = (0..n)
            .filter(|&j| j != q)
            .map(|j| {
                let d: f64 = x[q].iter().zip(&x[j]).map(|(a, b)| (a - b) * (a - b)).sum();
                (d, j)
            })
            .collect();
        others.sort_by(|a, b| a.partial_cmp(b).unwrap());
        let rel: Vec<bool> = others
            .iter()
            .map(|&(_, j)| labels[j] == labels[q])
            .collect();
        let r = rel.iter().filter(|&&b| b).count();
        p1 += rel[0] as u8 as f64;
        rp += rel[..r].iter().filter(|&&b| b).count() as f64 / r as f64;
        let mut hits = 0.0;
        let mut ap = 0.0;
        for (i, &b) in rel[..r].iter().enumerate() {
            if b {
                hits += 1.0;
                ap += hits / (i + 1) as f64;
            }
        }
        map += ap / r as f64;
    }
    (p1 / n as f64, rp / n as f64, map / n as f64)
}

fn unit(v: Vec<f64>) -> Vec<f64> {
    let norm = v.iter().map(|a| a * a).sum::<f64>().sqrt();
    v.into_iter().map(|a| a / norm).collect()
}

fn scores(m: &dml::eval::Metrics) -> (f64, f64, f64) {
    (
        m.precision_at_1,
        m.r_precision.unwrap(),
        m.map_at_r.unwrap(),
    )
}

#[test]
fn baseline_rows_match_a_naive_computation() {
    let _torch = torch_lock();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let (pixels, labels) = tiny_idx(&data);
    let text = format!(
        "[run]\nthreads = 1\noutput_dir = {:?}\n[data]\nkind = \"idx\"\npath = {:?}\n\
         [model]\nkind = \"mlp\"\nhidden = [16]\nembedding_dim = 8\n\
         [miner]\nkind = \"batch_hard\"\n[loss]\nkind = \"triplet\"\n\
         [batch]\np = 4\nk = 3\nbatches_per_epoch = 3\n\
         [train]\nepochs = 1\nprogress = false\nplots = false\n[eval]\nnmi = false\n",
        dir.path().join("run").to_str().unwrap(),
        data.to_str().unwrap()
    );
    let config = Config::from_toml_str(&text, "<test>").unwrap();
    let mut trainer = Trainer::new(config).unwrap();
    // The untrained network's held-out embeddings, taken before any step.
    let (emb, emb_labels) = trainer.embed_split(dml::embed::SplitPart::Test).unwrap();
    assert_eq!(emb_labels, labels);
    let report = trainer.fit().unwrap();

    // Raw input: pixels / 255, flattened, L2-normalised (the MLP normalises its embeddings).
    let raw: Vec<Vec<f64>> = pixels
        .iter()
        .map(|p| unit(p.iter().map(|&v| v as f64 / 255.0).collect()))
        .collect();
    let want = naive_scores(&raw, &labels);
    let got = scores(report.raw_input.as_ref().unwrap().metrics.as_ref().unwrap());
    for (g, w) in [(got.0, want.0), (got.1, want.1), (got.2, want.2)] {
        assert!((g - w).abs() < 1e-9, "raw input {got:?} vs naive {want:?}");
    }
    // Retrieval here is not trivially perfect, so the comparison can tell rows apart.
    assert!(want.2 < 0.99, "naive MAP@R {}", want.2);

    // Untrained network: the epoch-0 row is the network before its first step.
    let untrained: Vec<Vec<f64>> = emb
        .outer_iter()
        .map(|r| r.iter().map(|&v| v as f64).collect())
        .collect();
    let want = naive_scores(&untrained, &labels);
    let got = scores(report.initial_metrics.as_ref().unwrap());
    for (g, w) in [(got.0, want.0), (got.1, want.1), (got.2, want.2)] {
        assert!((g - w).abs() < 1e-6, "untrained {got:?} vs naive {want:?}");
    }
    // The three rows are in the printed table, the raw input first.
    let shown = report.to_string();
    assert!(shown.contains("raw input  untrained    trained"), "{shown}");
    let row = shown
        .lines()
        .find(|l| l.trim_start().starts_with("map_at_r"))
        .unwrap();
    let cols: Vec<f64> = row
        .split_whitespace()
        .skip(1)
        .map(|v| v.parse().unwrap())
        .collect();
    assert!(
        (cols[0] - want_raw_map(&pixels, &labels)).abs() < 5e-5,
        "{row}"
    );
    // The metrics log starts with the raw-input line, and report.json carries the baseline.
    let log = std::fs::read_to_string(dir.path().join("run/metrics.jsonl")).unwrap();
    assert!(
        log.starts_with("{\"baseline\":\"raw_input\",\"metrics\":{"),
        "{log}"
    );
    let json = std::fs::read_to_string(dir.path().join("run/report.json")).unwrap();
    let back: dml::TrainReport = serde_json::from_str(&json).unwrap();
    assert_eq!(back.raw_input, report.raw_input);
}

fn want_raw_map(pixels: &[Vec<u8>], labels: &[u32]) -> f64 {
    let raw: Vec<Vec<f64>> = pixels
        .iter()
        .map(|p| unit(p.iter().map(|&v| v as f64 / 255.0).collect()))
        .collect();
    naive_scores(&raw, labels).2
}

/// A run that goes wrong in epoch 2: the normalised softmax loss (its gradient is never zero)
/// with Adam at 1e-3 for epoch 1 and at `1e-3 · gamma` from epoch 2 (a step schedule), two steps
/// per epoch, unnormalised embeddings. With gamma 1e33 the first step of epoch 2 moves every
/// weight by about 1e30 (still finite) and the second step's embeddings overflow; with gamma
/// 1e42 the rate is beyond f32 and the first step of epoch 2 makes the weights themselves
/// infinite.
fn diverging(dir: &Path, epochs: u64, gamma: f64, policy: dml::config::OnNonFinite) -> Config {
    let mut c = config(dir, epochs);
    c.batch.batches_per_epoch = Some(2);
    c.train.eval_every = 0;
    c.eval.config.nmi = false;
    c.miner = None;
    c.loss = dml::losses::LossConfig::NormalizedSoftmax(Default::default());
    c.schedule = dml::config::ScheduleConfig::Step {
        milestones: vec![1],
        gamma,
    };
    c.train.on_non_finite = policy;
    c.model = Config::from_toml_str(
        "[data]\nkind = \"digits\"\n[model]\nkind = \"conv_net\"\nchannels = [16, 32]\n\
         embedding_dim = 32\nnormalize = false\n",
        "<test>",
    )
    .unwrap()
    .model;
    c.validate().unwrap();
    c
}

/// A non-finite value stops the run with an error that names the epoch, the step and what was
/// not finite, says what to change, and leaves the last good checkpoint byte for byte as it was.
#[test]
fn a_non_finite_step_stops_with_its_place_and_keeps_the_last_good_checkpoint() {
    use dml::config::OnNonFinite::Stop;
    let _torch = torch_lock();
    let dir = tempfile::tempdir().unwrap();
    let report = Trainer::new(diverging(dir.path(), 1, 1e33, Stop))
        .unwrap()
        .fit()
        .unwrap();
    assert_eq!(report.epochs, 1);
    let ckpt = dir.path().join("checkpoint.safetensors");
    let good = std::fs::read(&ckpt).unwrap();

    let err = Trainer::resume(diverging(dir.path(), 3, 1e33, Stop))
        .unwrap()
        .fit()
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with("training stopped at epoch 2, step 2: the batch's embeddings"),
        "{err}"
    );
    assert!(
        err.contains("not finite") && err.contains("lower optimizer.lr"),
        "{err}"
    );
    assert!(
        std::fs::read(&ckpt).unwrap() == good,
        "the last good checkpoint is untouched"
    );
}

/// `skip_batch` skips such batches and counts them in the log; it cannot rescue a network whose
/// weights have gone non-finite, and those are never written over the last good checkpoint.
#[test]
fn skip_batch_counts_skipped_batches_and_never_saves_non_finite_weights() {
    use dml::config::OnNonFinite::SkipBatch;
    let _torch = torch_lock();
    let dir = tempfile::tempdir().unwrap();
    Trainer::new(diverging(dir.path(), 1, 1e33, SkipBatch))
        .unwrap()
        .fit()
        .unwrap();
    let ckpt = dir.path().join("checkpoint.safetensors");
    let good = std::fs::read(&ckpt).unwrap();
    let err = Trainer::resume(diverging(dir.path(), 3, 1e33, SkipBatch))
        .unwrap()
        .fit()
        .unwrap_err()
        .to_string();
    // Epoch 2's first step moves every weight by about 1e30 (finite); the second step's forward
    // pass overflows, which leaves batch norm's running statistics infinite, and the step is
    // skipped. The checkpoint after it is refused, naming the first non-finite variable in
    // name order (`loss.proxies`, which sorts first, is finite).
    assert!(
        err.starts_with(
            "training stopped at the checkpoint after epoch 2 (not written): the weights of `model.backbone.0.bn.running_var` are not finite"
        ),
        "{err}"
    );
    assert!(err.contains("cannot help"), "{err}");
    let log = dml::log::MetricsLog::read(&dir.path().join("metrics.jsonl")).unwrap();
    let skipped: Vec<(u64, u64)> = log.iter().map(|r| (r.epoch, r.skipped_batches)).collect();
    assert_eq!(skipped, vec![(1, 0), (2, 1)]);
    assert!(
        std::fs::read(&ckpt).unwrap() == good,
        "the last good checkpoint is untouched"
    );

    let dir = tempfile::tempdir().unwrap();
    let mut c = diverging(dir.path(), 3, 1e33, SkipBatch);
    c.train.checkpoint_every = 0;
    // Without the checkpoint, the diverged network reaches the held-out evaluation, which says
    // what happened instead of a matrix check deep in dml-eval.
    let err = Trainer::new(c).unwrap().fit().unwrap_err().to_string();
    assert!(
        err.starts_with(
            "training stopped at the evaluation after epoch 3: the held-out embeddings are not finite"
        ),
        "{err}"
    );
}

/// Every evaluated epoch logs how spread out the held-out embeddings are (their mean pairwise
/// distance), and a healthy run gets no collapse warning. (The warning's threshold is tested in
/// the trainer's unit tests; a learning rate that collapses this network also drives Adam's
/// moments to infinity, which the non-finite checks above stop first.)
#[test]
fn evaluated_epochs_log_the_spread_of_the_held_out_embeddings() {
    let _torch = torch_lock();
    let dir = tempfile::tempdir().unwrap();
    let mut c = config(dir.path(), 2);
    c.train.eval_before = true;
    c.eval.config.nmi = false;
    c.validate().unwrap();
    let mut t = Trainer::new(c).unwrap();
    let report = t.fit().unwrap();
    assert_eq!(report.collapse, None);
    let spreads: Vec<f64> = t.state().history.iter().filter_map(|r| r.spread).collect();
    assert_eq!(spreads.len(), 3, "epochs 0, 1 and 2");
    // Unit-norm embeddings: between 0 and 2, and not all alike.
    assert!(spreads.iter().all(|&s| s > 0.05 && s < 2.0), "{spreads:?}");
    let log = dml::log::MetricsLog::read(&dir.path().join("metrics.jsonl")).unwrap();
    assert_eq!(
        log.iter().filter_map(|r| r.spread).collect::<Vec<_>>(),
        spreads
    );
}

/// Every proxy and classification loss (and SupCon) resumes bit for bit: two epochs in one
/// sitting give the same weights, class vectors and Adam state as one epoch, a checkpoint, and
/// a resumed second epoch.
#[test]
fn every_loss_without_a_miner_resumes_exactly() {
    let _torch = torch_lock();
    for loss in dml::losses::LossConfig::defaults()
        .filter(|l| l.has_class_vectors() || l.kind() == "sup_con")
    {
        let make = |dir: &Path, epochs: u64| {
            let mut c = config(dir, epochs);
            c.miner = None;
            c.loss = loss;
            c.train.eval_every = 0;
            c.eval.config.nmi = false;
            c.eval.config.r_metrics = false;
            c.eval.raw_input = false;
            c.optimizer.loss_lr = Some(c.optimizer.lr * 100.0);
            c.validate().unwrap();
            c
        };
        let a_dir = tempfile::tempdir().unwrap();
        let mut a = Trainer::new(make(a_dir.path(), 2)).unwrap();
        a.fit().unwrap();
        let b_dir = tempfile::tempdir().unwrap();
        Trainer::new(make(b_dir.path(), 1)).unwrap().fit().unwrap();
        let mut b = Trainer::resume(make(b_dir.path(), 2)).unwrap();
        b.fit().unwrap();
        assert!(
            weights(&a) == weights(&b),
            "{} resumes exactly",
            loss.kind()
        );
        assert_eq!(
            a.var_store().variables().contains_key("loss.proxies"),
            loss.has_class_vectors(),
            "{}",
            loss.kind()
        );
    }
}

/// The record of a digits run of one step (the first batch through the untrained network),
/// with the config changed by `change`.
fn one_step(dir: &Path, change: impl FnOnce(&mut Config)) -> dml::state::EpochRecord {
    let mut c = config(dir, 1);
    c.batch.batches_per_epoch = Some(1);
    change(&mut c);
    c.validate().unwrap();
    let mut t = Trainer::new(c).unwrap();
    t.fit().unwrap();
    t.state().history[0].clone()
}

/// The loss of one step with `views` per item and the instance term at `weight`.
fn first_step_loss(dir: &Path, views: usize, weight: Option<f64>) -> f64 {
    let record = one_step(dir, |c| {
        c.batch.views = views;
        c.self_supervised = weight.map(|weight| dml::config::SelfSupervisedConfig {
            weight,
            temperature: 0.5,
        });
    });
    record.loss.unwrap()
}

/// `[self_supervised]` adds `weight × NT-Xent` to the class loss of the same batch: with the
/// class loss m (two views, no instance term) and the instance term n, weight 1 logs m + n and
/// weight 3 logs m + 3n, so the three first-step losses satisfy L3 − L1 = 2 (L1 − L0). Two
/// views put twice the embeddings in the batch, which changes the class loss itself.
#[test]
fn the_instance_term_is_added_with_its_weight() {
    let _g = torch_lock();
    let dir = tempfile::tempdir().unwrap();
    let one_view = first_step_loss(&dir.path().join("a"), 1, None);
    let l0 = first_step_loss(&dir.path().join("b"), 2, None);
    let l1 = first_step_loss(&dir.path().join("c"), 2, Some(1.0));
    let l3 = first_step_loss(&dir.path().join("d"), 2, Some(3.0));
    let n = l1 - l0;
    // NT-Xent over 2 × 40 embeddings at τ = 0.5: of the order of log(79) = 4.4 untrained.
    assert!(n > 1.0, "instance term {n}");
    assert!(((l3 - l1) - 2.0 * n).abs() < 1e-4, "{l0} {l1} {l3}");
    assert!(
        (one_view - l0).abs() > 1e-6,
        "views must enter the class loss"
    );
}

/// Tuples per batch of one epoch of `loss` with `[miner] kind = "all"` (and `output`, if given).
fn all_miner_tuples(dir: &Path, loss: dml::losses::LossConfig, output: Option<TupleKind>) -> f64 {
    let record = one_step(dir, |c| {
        c.loss = loss;
        c.miner = Some(MinerConfig::All(dml::sampling::AllMinerConfig { output }));
    });
    record.tuples_per_batch.unwrap()
}

/// `kind = "all"` mines the form the loss uses. The digits batch is P5 × K8 = 40 items:
/// 5·8·7 = 280 ordered positive pairs and 40·32 = 1,280 ordered negative pairs (1,560 pairs)
/// for a pair loss, 280·32 = 8,960 triplets for a triplet loss or when asked for.
#[test]
fn the_all_miner_mines_what_the_loss_uses() {
    let _g = torch_lock();
    let dir = tempfile::tempdir().unwrap();
    let contrastive = dml::losses::LossConfig::Contrastive(Default::default());
    let triplet = dml::losses::LossConfig::Triplet(Default::default());
    let cases = [
        (contrastive, None, 1_560.0),
        (contrastive, Some(TupleKind::Triplets), 8_960.0),
        (triplet, None, 8_960.0),
    ];
    for (i, (loss, output, want)) in cases.into_iter().enumerate() {
        let got = all_miner_tuples(&dir.path().join(i.to_string()), loss, output);
        assert_eq!(got, want, "case {i}");
    }
}

/// Loading the next batch on its own thread (`train.prefetch`) trains exactly what loading on
/// the training thread trains: the same losses and the same weights, bit for bit, with a random
/// transform and two views per item (both drawn from the step's seed).
#[test]
fn prefetch_on_and_off_train_the_same_run() {
    let _g = torch_lock();
    let dir = tempfile::tempdir().unwrap();
    let run = |name: &str, prefetch: bool| {
        let mut c = config(&dir.path().join(name), 2);
        c.train.prefetch = prefetch;
        c.batch.views = 2;
        c.transform.train = Some(dml::data::Transform {
            crop: dml::data::Crop::RandomCrop {
                size: 8,
                padding: 1,
            },
            ..Default::default()
        });
        c.validate().unwrap();
        let mut t = Trainer::new(c).unwrap();
        t.fit().unwrap();
        let losses: Vec<f64> = t.state().history.iter().filter_map(|r| r.loss).collect();
        (losses, weights(&t))
    };
    let (on_losses, on_weights) = run("on", true);
    let (off_losses, off_weights) = run("off", false);
    assert_eq!(on_losses.len(), 2);
    assert_eq!(on_losses, off_losses);
    assert_eq!(on_weights, off_weights);
}

/// An image folder with one truncated PNG in a training class and one in a held-out class:
/// without `skip_unreadable` the run stops naming the first it meets (the held-out one: the
/// baselines are evaluated before the first step); with it, the run trains,
/// both files are left out, named in the report, and kept in the checkpoint's state.
#[test]
fn unreadable_images_stop_the_run_or_are_skipped_and_counted() {
    let _torch = torch_lock();
    let data = tempfile::tempdir().unwrap();
    let mut next = xorshift(0x5EED_1234_ABCD_0001);
    for class in 0..4u32 {
        for i in 0..6 {
            let path = data.path().join(format!("c{class}/{i}.png"));
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            let img = image::RgbImage::from_fn(8, 8, |_, _| {
                let v = (next() % 64) as u8 + 40 * class as u8;
                image::Rgb([v, v, v])
            });
            img.save(&path).unwrap();
        }
    }
    for class in [1, 3] {
        let good = std::fs::read(data.path().join(format!("c{class}/0.png"))).unwrap();
        std::fs::write(
            data.path().join(format!("c{class}/9.png")),
            &good[..good.len() / 2],
        )
        .unwrap();
    }
    let run = |skip: bool| {
        let dir = tempfile::tempdir().unwrap();
        let mut c = config(dir.path(), 2);
        c.data = dml::data::DataConfig::ImageFolder {
            root: data.path().to_path_buf(),
            skip_unreadable: skip,
        };
        let fixed: dml::data::Transform =
            toml::from_str("crop = { kind = \"center\", resize = 8, size = 8 }").unwrap();
        c.transform.train = Some(fixed.clone());
        c.transform.test = Some(fixed);
        c.batch.p = 2;
        c.batch.k = 4;
        c.batch.batches_per_epoch = None;
        c.validate().unwrap();
        let result = Trainer::new(c).and_then(|mut t| t.fit());
        (result, dir)
    };
    let (stopped, _dir) = run(false);
    let e = stopped.unwrap_err().to_string();
    assert!(e.contains("c3/9.png") && e.contains("cannot decode"), "{e}");
    let (report, dir) = run(true);
    let report = report.unwrap();
    let names: Vec<String> = report
        .unreadable_files
        .iter()
        .map(|p| p.strip_prefix(data.path()).unwrap().display().to_string())
        .collect();
    assert_eq!(names, ["c1/9.png", "c3/9.png"]);
    assert!(
        report
            .to_string()
            .contains("left out 2 unreadable image files"),
        "{report}"
    );
    let metrics = report.final_metrics.as_ref().unwrap();
    assert_eq!(metrics.n_queries, 12, "the 12 readable held-out images");
    let saved = dml::checkpoint::load(&dir.path().join("checkpoint.safetensors")).unwrap();
    assert_eq!(saved.state.unreadable_files.len(), 2);
}

/// A run holds a lock on its output folder: a second run there stops at once naming the
/// first's process, and once the lock is released (the first run ended, or was killed) the
/// folder is free again, even with the stale lock file still in it.
#[test]
fn a_second_run_on_a_locked_output_folder_is_refused_naming_the_first() {
    let _torch = torch_lock();
    let dir = tempfile::tempdir().unwrap();
    let lock_path = dir.path().join(dml::trainer::files::LOCK);
    {
        // Another process's lock, as a running `fit` leaves it.
        use std::io::Write;
        let mut held = std::fs::File::create(&lock_path).unwrap();
        held.lock().unwrap();
        writeln!(held, "pid 424242").unwrap();
        let err = Trainer::new(config(dir.path(), 1))
            .unwrap()
            .fit()
            .unwrap_err();
        let text = err.to_string();
        assert!(
            matches!(
                err,
                dml::Error::OutputLocked {
                    pid: Some(424242),
                    ..
                }
            ),
            "{text}"
        );
        assert!(
            text.contains("in use by another dml run (pid 424242)"),
            "{text}"
        );
        assert!(
            !dir.path().join("checkpoint.safetensors").exists(),
            "the refused run wrote nothing"
        );
    }
    // The holder is gone (its lock with it); the stale file does not block the next run.
    assert!(lock_path.exists());
    let report = Trainer::new(config(dir.path(), 1)).unwrap().fit().unwrap();
    assert_eq!(report.epochs, 1);
    let text = std::fs::read_to_string(&lock_path).unwrap();
    assert_eq!(text.trim(), format!("pid {}", std::process::id()));
}

/// A binding (Python, a server) drives training from a thread of its own: the trainer and a
/// trained model can move between threads.
#[test]
fn the_trainer_and_a_trained_model_are_send() {
    fn send<T: Send>() {}
    send::<Trainer>();
    send::<dml::embed::TrainedModel>();
    send::<Box<dyn dml::losses::Loss>>();
}

/// A front end can drive training an epoch at a time: `run_epoch` until it says `Done`, then
/// `finish`, trains exactly what `fit` trains, and each call returns the epoch's record.
#[test]
fn run_epoch_by_epoch_trains_what_fit_trains() {
    use dml::trainer::EpochOutcome;
    let _torch = torch_lock();
    let a_dir = tempfile::tempdir().unwrap();
    let mut a = Trainer::new(config(a_dir.path(), 3)).unwrap();
    a.fit().unwrap();

    let b_dir = tempfile::tempdir().unwrap();
    let mut b = Trainer::new(config(b_dir.path(), 3)).unwrap();
    let mut epochs = Vec::new();
    loop {
        match b.run_epoch().unwrap() {
            EpochOutcome::Trained(record) => epochs.push(record.epoch),
            EpochOutcome::Done => break,
            EpochOutcome::Interrupted => panic!("nothing interrupted the run"),
        }
    }
    assert_eq!(epochs, [1, 2, 3]);
    let report = b.finish().unwrap();
    assert_eq!(report.epochs, 3);
    assert!(
        weights(&a) == weights(&b),
        "epoch by epoch trains what fit trains"
    );
    assert!(b_dir.path().join("report.json").is_file());
}
