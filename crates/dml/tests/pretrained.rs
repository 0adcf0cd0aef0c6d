//! Pretrained and TorchScript backbones in training: the TorchScript modules against PyTorch,
//! `[model] pretrained` loaded strictly, the frozen-backbone warm-up and baseline, and exact
//! resumption of each.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use dml::models::{BackboneConfig, ModelConfig, TorchScriptConfig};
use dml::{Config, Trainer};
use serde_json::Value;

mod common;
mod parity;

/// LibTorch's generator is global to the process: every test that draws from it holds this.
static TORCH: Mutex<()> = Mutex::new(());

fn torch_lock() -> MutexGuard<'static, ()> {
    TORCH.lock().unwrap_or_else(|e| e.into_inner())
}

fn fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../dml-models/tests/fixtures/torchscript")
}

#[test]
fn small_torchscript_modules_match_pytorch_and_pml() {
    let _torch = torch_lock();
    for name in ["small_cnn", "small_vit"] {
        let dir = fixture_dir();
        let text = std::fs::read_to_string(dir.join(format!("{name}.json"))).unwrap();
        let fixture: Value = serde_json::from_str(&text).unwrap();
        let worst = parity::check(&dir.join(format!("{name}.pt")), &fixture);
        eprintln!("{name}: largest difference {worst:.2e} of a tensor's scale");
    }
}

/// A small run on 4 + 4 classes of 32 × 32 RGB images (`data` holds them).
fn config(data: &Path, out: &Path, model: ModelConfig, epochs: u64) -> Config {
    let mut c = Config::digits();
    c.data = dml::data::DataConfig::ImageFolder {
        root: data.to_path_buf(),
        skip_unreadable: false,
    };
    c.model = model;
    let fixed: dml::data::Transform =
        toml::from_str("crop = { kind = \"center\", resize = 32, size = 32 }").unwrap();
    c.transform.train = Some(fixed.clone());
    c.transform.test = Some(fixed);
    c.miner = None;
    c.loss = dml::losses::LossConfig::MultiSimilarity(Default::default());
    c.run.output_dir = Some(out.to_path_buf());
    c.run.threads = 1;
    c.batch.p = 4;
    c.batch.k = 2;
    c.batch.batches_per_epoch = Some(3);
    c.train.epochs = epochs;
    c.train.eval_every = 1;
    c.train.eval_before = true;
    c.train.plots = false;
    c.train.progress = false;
    c.schedule = dml::config::ScheduleConfig::Constant;
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

fn metrics(t: &Trainer) -> Vec<Vec<(dml::eval::Score, i64)>> {
    t.state()
        .history
        .iter()
        .filter_map(|r| r.metrics.as_ref())
        .map(|m| {
            m.scores()
                .into_iter()
                .map(|(k, v)| (k, (v * 1e12).round() as i64))
                .collect()
        })
        .collect()
}

/// Trains `config(…, 2)` straight through, and 1 epoch then resumed for the second: the same
/// weights and the same held-out numbers (which depend on buffers the var store does not
/// hold, for a TorchScript module).
fn check_resume(data: &Path, model: &ModelConfig, change: impl Fn(&mut Config)) -> Trainer {
    let a_dir = tempfile::tempdir().unwrap();
    let mut c = config(data, a_dir.path(), model.clone(), 2);
    change(&mut c);
    let mut a = Trainer::new(c).unwrap();
    a.fit().unwrap();

    let b_dir = tempfile::tempdir().unwrap();
    let mut c = config(data, b_dir.path(), model.clone(), 1);
    change(&mut c);
    Trainer::new(c).unwrap().fit().unwrap();
    let mut c = config(data, b_dir.path(), model.clone(), 2);
    change(&mut c);
    let mut b = Trainer::resume(c).unwrap();
    b.fit().unwrap();
    assert!(
        weights(&a) == weights(&b),
        "resumed weights equal the straight run's"
    );
    assert_eq!(metrics(&a), metrics(&b), "and so do the held-out metrics");
    // Batch-norm statistics count too: a TorchScript module keeps them outside the var store.
    let test = dml::embed::SplitPart::Test;
    assert!(
        a.embed_split(test).unwrap() == b.embed_split(test).unwrap(),
        "the held-out embeddings are the same"
    );
    a
}

#[test]
fn a_torchscript_backbone_trains_reports_its_frozen_baseline_and_resumes_exactly() {
    let _torch = torch_lock();
    let data = tempfile::tempdir().unwrap();
    common::rgb_folder(data.path(), 8, 6, 32);
    let model = ModelConfig::Torchscript(TorchScriptConfig {
        path: fixture_dir().join("small_cnn.pt"),
        embedding_dim: 8,
        ..Default::default()
    });
    let a = check_resume(data.path(), &model, |_| {});
    let names: Vec<String> = weights(&a).into_keys().collect();
    assert!(
        names.contains(&"model.backbone.conv1.weight".to_owned()),
        "the module's parameters are variables under their own names: {names:?}"
    );
    let frozen = a
        .state()
        .frozen_backbone
        .clone()
        .expect("a frozen baseline");
    // The module file is the backbone as given: its features, evaluated again, are the baseline.
    let dir = tempfile::tempdir().unwrap();
    let fresh = Trainer::new(config(data.path(), dir.path(), model, 1)).unwrap();
    assert_eq!(fresh.frozen_backbone_baseline().unwrap(), frozen);
}

/// The ImageNet MobileNetV2 weights that `cargo xtask weights mobilenet-v2` makes (`cargo xtask
/// test` runs it first).
fn imagenet_mobilenet() -> PathBuf {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../weights/mobilenet-v2.safetensors");
    assert!(
        path.is_file(),
        "{} is missing: run `cargo xtask weights mobilenet-v2`",
        path.display()
    );
    path
}

#[test]
fn pretrained_weights_load_strictly_and_a_frozen_warm_up_trains_only_the_head() {
    let _torch = torch_lock();
    let data = tempfile::tempdir().unwrap();
    common::rgb_folder(data.path(), 8, 6, 32);
    let path = imagenet_mobilenet();
    let saved: BTreeMap<String, Vec<f64>> = dml::models::read_tensors(&path)
        .unwrap()
        .0
        .into_iter()
        .map(|(k, v)| {
            let flat = v.to_kind(tch::Kind::Double).flatten(0, -1);
            (
                format!("model.backbone.{k}"),
                Vec::<f64>::try_from(&flat).unwrap(),
            )
        })
        .collect();
    let model = ModelConfig::MobilenetV2(BackboneConfig {
        embedding_dim: 8,
        pretrained: Some(path.display().to_string()),
        ..Default::default()
    });
    let warm_up = |c: &mut Config| {
        c.train.freeze_backbone_epochs = 1;
        c.optimizer.backbone_lr = Some(1e-4);
    };

    // After the frozen epoch the backbone is exactly the file, statistics included; the head
    // has moved.
    let dir = tempfile::tempdir().unwrap();
    let mut c = config(data.path(), dir.path(), model.clone(), 1);
    warm_up(&mut c);
    let mut one = Trainer::new(c).unwrap();
    let head_before = weights(&one)["model.head.weight"].clone();
    one.fit().unwrap();
    let after = weights(&one);
    for (name, values) in &saved {
        assert!(
            after[name] == *values,
            "{name} moved during the frozen epoch"
        );
    }
    assert!(
        after["model.head.weight"] != head_before,
        "the head trained: {:?}",
        one.state().history
    );
    // The baseline was computed from the unchanged backbone, so it is still what it says.
    let frozen = one
        .state()
        .frozen_backbone
        .clone()
        .expect("a frozen baseline");
    assert_eq!(one.frozen_backbone_baseline().unwrap(), frozen);
    assert!(
        one.state().history[0].metrics.as_ref().unwrap() != &frozen,
        "epoch 0 (with the random head) is not the frozen backbone's own features"
    );
    drop(one);

    // Then the whole network trains, and a run resumed after the warm-up ends where the straight
    // run ends.
    let two = check_resume(data.path(), &model, warm_up);
    let moved = saved
        .iter()
        .filter(|(name, values)| weights(&two)[*name] != **values)
        .count();
    assert!(
        moved > 100,
        "the backbone trains after the warm-up ({moved} tensors moved)"
    );
}

#[test]
fn pretrained_weights_that_do_not_fit_are_refused_by_name() {
    let _torch = torch_lock();
    let data = tempfile::tempdir().unwrap();
    common::rgb_folder(data.path(), 4, 4, 32);
    let files = tempfile::tempdir().unwrap();
    let path = imagenet_mobilenet();
    // One tensor short.
    let (mut tensors, meta) = dml::models::read_tensors(&path).unwrap();
    tensors.remove("features.18.1.running_var");
    let short = files.path().join("short.safetensors");
    dml::models::write_tensors(&short, &tensors, &meta).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let model = |spec: &str| {
        ModelConfig::MobilenetV2(BackboneConfig {
            pretrained: Some(spec.to_owned()),
            ..Default::default()
        })
    };
    let err = |spec: &str| {
        let mut c = config(data.path(), dir.path(), model(spec), 1);
        c.batch.p = 2;
        Trainer::new(c).unwrap_err().to_string()
    };
    let e = err(&short.display().to_string());
    assert!(
        e.contains("1 missing") && e.contains("features.18.1.running_var"),
        "{e}"
    );
    let e = err("efficientnet-lite0");
    assert!(
        e.contains("weights for kind = \"efficientnet_lite0\", not \"mobilenet_v2\""),
        "{e}"
    );
    let e = err("no-such-weights");
    assert!(
        e.contains("neither a weights file nor one of the names"),
        "{e}"
    );
}

/// `dml export`'s module, loaded back by LibTorch's TorchScript loader (the one PyTorch's
/// `torch.jit.load` wraps), embeds the held-out images as `dml embed` does, for a pretrained
/// CNN, EfficientNet's input-size-dependent padding and a traced ViT inside the trace.
#[test]
fn exported_torchscript_embeds_as_the_checkpoint_does() {
    let _torch = torch_lock();
    let data = tempfile::tempdir().unwrap();
    // Two held-out classes of four images: a batch of 8.
    common::rgb_folder(data.path(), 4, 4, 32);
    let models = [
        ModelConfig::MobilenetV2(BackboneConfig {
            embedding_dim: 8,
            pretrained: Some(imagenet_mobilenet().display().to_string()),
            freeze_batch_norm: true,
            ..Default::default()
        }),
        ModelConfig::EfficientnetLite0(dml::models::EfficientNetConfig {
            embedding_dim: 8,
            ..Default::default()
        }),
        ModelConfig::Torchscript(TorchScriptConfig {
            path: fixture_dir().join("small_vit.pt"),
            embedding_dim: 8,
            ..Default::default()
        }),
    ];
    for model in models {
        let kind = model.kind();
        let dir = tempfile::tempdir().unwrap();
        let mut c = config(data.path(), dir.path(), model, 1);
        c.batch.p = 2;
        let mut t = Trainer::new(c.clone()).unwrap();
        t.fit().unwrap();
        drop(t);
        let mut trained =
            dml::embed::TrainedModel::load(&dir.path().join("checkpoint.safetensors")).unwrap();
        let out = dir.path().join("model.pt");
        // dml's own networks take any batch size when traced with one image; a TorchScript
        // backbone takes the batch size it was traced with.
        let torchscript = matches!(kind, "torchscript");
        trained
            .export_torchscript(&out, if torchscript { 8 } else { 1 })
            .unwrap();
        let (want, _) = trained.embed_split(dml::embed::SplitPart::Test).unwrap();

        let split = c.data.build().unwrap();
        let indices: Vec<usize> = (0..split.test.len()).collect();
        let (x, _) =
            dml::data::load_batch(split.test.as_ref(), &indices, c.transform.test.as_ref(), 0)
                .unwrap();
        let module = tch::CModule::load(&out).unwrap();
        let xs = dml::kernels::tensor::from_array(x.view()).unwrap();
        let got = module.forward_ts(&[xs]).unwrap();
        let got = dml::kernels::tensor::to_array2(&got).unwrap();
        assert_eq!(got.dim(), want.dim(), "{kind}");
        let worst = got
            .iter()
            .zip(want.iter())
            .fold(0.0f32, |m, (a, b)| m.max((a - b).abs()));
        assert!(worst <= 1e-6, "{kind}: exported module differs by {worst}");
    }
}
