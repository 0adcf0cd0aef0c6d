//! Saving and loading: round trip, atomicity, named errors, backbone weights.

mod common;

use std::collections::BTreeMap;

use dml_models::{
    BackboneConfig, ConvNetConfig, EmbeddingNet, Error, InputShape, ModelConfig, load_safetensors,
    save_safetensors,
};
use tch::nn;
use tch::{Device, Kind, Tensor};

fn conv_config() -> ModelConfig {
    ModelConfig::ConvNet(ConvNetConfig {
        channels: vec![4, 8],
        embedding_dim: 6,
        ..Default::default()
    })
}

fn digits() -> InputShape {
    InputShape::new(1, 8, 8)
}

/// A ConvNet whose running statistics have moved off their initial values, so a round trip has
/// non-trainable state to get right too.
fn trained_conv_net(seed: i64) -> anyhow::Result<(nn::VarStore, EmbeddingNet)> {
    tch::manual_seed(seed);
    let vs = nn::VarStore::new(Device::Cpu);
    let net = EmbeddingNet::new(&vs.root(), &conv_config(), digits())?;
    let _ = net.embed(
        &(Tensor::rand([4, 1, 8, 8], (Kind::Float, Device::Cpu)) * 3.0),
        true,
    )?;
    Ok((vs, net))
}

fn files_in(dir: &std::path::Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

#[test]
fn save_then_load_gives_identical_outputs() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("model.safetensors");
    let (vs, net) = trained_conv_net(1)?;
    save_safetensors(&vs, &path)?;
    // Only the file itself is left: the temporary file was renamed onto it.
    assert_eq!(files_in(dir.path()), ["model.safetensors"]);

    let (mut vs2, net2) = trained_conv_net(2)?;
    let xs = Tensor::rand([3, 1, 8, 8], (Kind::Float, Device::Cpu));
    assert!(!net.embed(&xs, false)?.equal(&net2.embed(&xs, false)?));
    load_safetensors(&mut vs2, &path)?;
    assert!(net.embed(&xs, false)?.equal(&net2.embed(&xs, false)?));
    for (name, t) in vs.variables() {
        assert!(t.equal(&vs2.variables()[&name]), "{name}");
    }

    // Saving again replaces the file in place.
    let (vs3, _) = trained_conv_net(3)?;
    save_safetensors(&vs3, &path)?;
    assert_eq!(files_in(dir.path()), ["model.safetensors"]);
    load_safetensors(&mut vs2, &path)?;
    assert!(vs3.variables()["head.weight"].equal(&vs2.variables()["head.weight"]));
    Ok(())
}

#[test]
fn a_failed_save_leaves_nothing_behind() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let (vs, _) = trained_conv_net(1)?;
    // The destination is a folder, so the final rename fails after the tensors were written.
    let path = dir.path().join("model.safetensors");
    std::fs::create_dir(&path)?;
    let e = save_safetensors(&vs, &path).unwrap_err();
    assert!(
        matches!(&e, Error::Io { action: "write", path: p, .. } if p == &path),
        "{e}"
    );
    assert_eq!(
        files_in(dir.path()),
        ["model.safetensors"],
        "no temporary file left"
    );
    assert!(path.is_dir());
    // A missing folder is created.
    let nested = dir.path().join("new_folder").join("model.safetensors");
    save_safetensors(&vs, &nested)?;
    assert!(nested.is_file());
    Ok(())
}

/// Writes the var store's tensors after `edit` to a safetensors file.
fn write_edited(
    vs: &nn::VarStore,
    path: &std::path::Path,
    edit: impl FnOnce(&mut BTreeMap<String, Tensor>),
) -> anyhow::Result<()> {
    let mut named: BTreeMap<String, Tensor> = vs
        .variables()
        .into_iter()
        .map(|(k, v)| (k, v.detach()))
        .collect();
    edit(&mut named);
    let named: Vec<(String, Tensor)> = named.into_iter().collect();
    Tensor::write_safetensors(&named, path)?;
    Ok(())
}

#[test]
fn a_file_that_does_not_fit_is_refused_with_every_problem_named() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("bad.safetensors");
    let (vs, _) = trained_conv_net(1)?;
    write_edited(&vs, &path, |m| {
        m.remove("backbone.1.bn.running_mean");
        m.remove("head.bias");
        m.insert(
            "head.weight".into(),
            Tensor::zeros([6, 7], (Kind::Float, Device::Cpu)),
        );
        m.insert(
            "extra.weight".into(),
            Tensor::zeros([1], (Kind::Float, Device::Cpu)),
        );
    })?;
    let (mut vs2, _) = trained_conv_net(2)?;
    let before = vs2.variables()["head.bias"].copy();
    let e = load_safetensors(&mut vs2, &path).unwrap_err();
    match &e {
        Error::WeightsMismatch {
            path: p,
            missing,
            unexpected,
            mismatched,
        } => {
            assert_eq!(p, &path);
            assert_eq!(missing, &["backbone.1.bn.running_mean", "head.bias"]);
            assert_eq!(unexpected, &["extra.weight"]);
            assert_eq!(mismatched.len(), 1);
            assert_eq!(mismatched[0].name, "head.weight");
            assert_eq!(
                (
                    mismatched[0].expected.as_slice(),
                    mismatched[0].found.as_slice()
                ),
                (&[6, 8][..], &[6, 7][..])
            );
        }
        other => panic!("expected WeightsMismatch, got {other:?}"),
    }
    let msg = e.to_string();
    for needle in [
        "bad.safetensors",
        "2 missing: backbone.1.bn.running_mean, head.bias",
        "1 unexpected: extra.weight",
        "head.weight (expected [6, 8], found [6, 7])",
    ] {
        assert!(msg.contains(needle), "{msg}");
    }
    // All or nothing: the variables that did fit were not loaded either.
    assert!(vs2.variables()["head.bias"].equal(&before));
    Ok(())
}

#[test]
fn corrupt_and_missing_files_are_named_errors() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let (vs, _) = trained_conv_net(1)?;
    let good = dir.path().join("good.safetensors");
    save_safetensors(&vs, &good)?;
    let bytes = std::fs::read(&good)?;
    let (mut vs2, net2) = trained_conv_net(2)?;

    let truncated = dir.path().join("truncated.safetensors");
    std::fs::write(&truncated, &bytes[..bytes.len() / 2])?;
    let garbage = dir.path().join("garbage.safetensors");
    std::fs::write(&garbage, b"this is not a weights file at all")?;
    for path in [&truncated, &garbage] {
        let e = load_safetensors(&mut vs2, path).unwrap_err();
        assert!(
            matches!(&e, Error::WeightsFile { path: p, .. } if p == path),
            "{e}"
        );
        assert!(e.to_string().contains(&*path.to_string_lossy()), "{e}");
        let e = net2.load_backbone(&mut vs2, path).unwrap_err();
        assert!(matches!(&e, Error::WeightsFile { .. }), "{e}");
    }
    let ot = dir.path().join("garbage.ot");
    std::fs::write(&ot, b"not a LibTorch archive")?;
    let e = net2.load_backbone(&mut vs2, &ot).unwrap_err();
    assert!(
        matches!(&e, Error::WeightsFile { path: p, .. } if p == &ot),
        "{e}"
    );

    let absent = dir.path().join("absent.safetensors");
    let e = load_safetensors(&mut vs2, &absent).unwrap_err();
    assert!(
        matches!(&e, Error::Io { action: "read", path: p, .. } if p == &absent),
        "{e}"
    );
    Ok(())
}

#[test]
fn backbone_weights_load_from_ot_and_safetensors_and_leave_the_head_alone() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let (src_vs, src) = trained_conv_net(1)?;
    // Backbone tensors under backbone-relative names, plus a classifier the backbone lacks.
    let mut relative: Vec<(String, Tensor)> = src_vs
        .variables()
        .into_iter()
        .filter_map(|(k, v)| {
            k.strip_prefix("backbone.")
                .map(|r| (r.to_owned(), v.detach()))
        })
        .collect();
    relative.push((
        "fc.weight".into(),
        Tensor::zeros([10, 8], (Kind::Float, Device::Cpu)),
    ));
    let ot = dir.path().join("backbone.ot");
    Tensor::save_multi(&relative, &ot)?;
    let st = dir.path().join("backbone.safetensors");
    Tensor::write_safetensors(&relative, &st)?;

    for path in [&ot, &st] {
        let (mut vs, net) = trained_conv_net(2)?;
        let head = vs.variables()["head.weight"].copy();
        let report = net.load_backbone(&mut vs, path)?;
        assert_eq!(report.loaded, relative.len() - 1);
        assert_eq!(report.ignored, ["fc.weight"]);
        assert!(vs.variables()["head.weight"].equal(&head));
        for (name, t) in src_vs.variables() {
            if name.starts_with("backbone.") {
                assert!(t.equal(&vs.variables()[&name]), "{name}");
            }
        }
        // Same backbone features: the embeddings differ only by the head, so compare before it.
        let xs = Tensor::rand([2, 1, 8, 8], (Kind::Float, Device::Cpu));
        assert_eq!(net.embed(&xs, false)?.size(), src.embed(&xs, false)?.size());
    }

    // A whole-model file also serves as a backbone file (names carrying the scope are accepted).
    let full = dir.path().join("full.safetensors");
    save_safetensors(&src_vs, &full)?;
    let (mut vs, net) = trained_conv_net(3)?;
    let report = net.load_backbone(&mut vs, &full)?;
    assert_eq!(report.ignored, ["head.bias", "head.weight"]);
    Ok(())
}

#[test]
fn backbone_file_with_missing_tensors_lists_them() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let (src_vs, _) = trained_conv_net(1)?;
    let partial: Vec<(String, Tensor)> = src_vs
        .variables()
        .into_iter()
        .filter_map(|(k, v)| {
            k.strip_prefix("backbone.")
                .map(|r| (r.to_owned(), v.detach()))
        })
        .filter(|(k, _)| !k.starts_with("1."))
        .collect();
    let path = dir.path().join("partial.safetensors");
    Tensor::write_safetensors(&partial, &path)?;
    let (mut vs, net) = trained_conv_net(2)?;
    let e = net.load_backbone(&mut vs, &path).unwrap_err();
    match &e {
        Error::WeightsMismatch {
            missing,
            unexpected,
            ..
        } => {
            assert_eq!(
                missing,
                &[
                    "backbone.1.bn.bias",
                    "backbone.1.bn.running_mean",
                    "backbone.1.bn.running_var",
                    "backbone.1.bn.weight",
                    "backbone.1.conv.weight"
                ]
            );
            assert!(unexpected.is_empty());
        }
        other => panic!("expected WeightsMismatch, got {other:?}"),
    }
    Ok(())
}

/// `tests/fixtures/resnet_keys.json`: torchvision's ResNet state-dict keys and shapes, and the
/// names `scripts/convert_torchvision_weights.py` turns them into (written by
/// `scripts/fixtures/dml-models_resnet_keys.py`).
fn fixture() -> anyhow::Result<serde_json::Value> {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/resnet_keys.json"
    ))?;
    Ok(serde_json::from_str(&text)?)
}

fn listing(v: &serde_json::Value) -> anyhow::Result<BTreeMap<String, Vec<i64>>> {
    let rows = v.as_array().ok_or_else(|| anyhow::anyhow!("not a list"))?;
    rows.iter()
        .map(|row| {
            let name = row[0]
                .as_str()
                .ok_or_else(|| anyhow::anyhow!("no name"))?
                .to_owned();
            let shape = row[1]
                .as_array()
                .ok_or_else(|| anyhow::anyhow!("no shape"))?;
            Ok((name, shape.iter().filter_map(|d| d.as_i64()).collect()))
        })
        .collect()
}

#[test]
fn converted_torchvision_names_are_exactly_the_resnet_backbone_variables() -> anyhow::Result<()> {
    let fixture = fixture()?;
    let dir = tempfile::tempdir()?;
    for (arch, config) in [
        (
            "resnet18",
            ModelConfig::Resnet18(BackboneConfig {
                embedding_dim: 4,
                ..Default::default()
            }),
        ),
        (
            "resnet50",
            ModelConfig::Resnet50(BackboneConfig {
                embedding_dim: 4,
                ..Default::default()
            }),
        ),
    ] {
        let converted = listing(&fixture[arch]["converted"])?;
        let torchvision = listing(&fixture[arch]["torchvision"])?;
        let mut vs = nn::VarStore::new(Device::Cpu);
        let net = EmbeddingNet::new(&vs.root(), &config, InputShape::new(3, 32, 32))?;
        let backbone: BTreeMap<String, Vec<i64>> = vs
            .variables()
            .into_iter()
            .filter_map(|(k, v)| {
                k.strip_prefix("backbone.")
                    .map(|r| (r.to_owned(), v.size()))
            })
            .collect();
        assert_eq!(converted, backbone, "{arch}");

        // A converted file loads; so does a raw torchvision dump, its extras listed as ignored.
        let values = |m: &BTreeMap<String, Vec<i64>>| -> Vec<(String, Tensor)> {
            m.iter()
                .map(|(k, s)| {
                    (
                        k.clone(),
                        Tensor::full(s.as_slice(), 0.5, (Kind::Float, Device::Cpu)),
                    )
                })
                .collect()
        };
        let path = dir.path().join(format!("{arch}.safetensors"));
        Tensor::write_safetensors(&values(&converted), &path)?;
        let report = net.load_backbone(&mut vs, &path)?;
        assert_eq!((report.loaded, report.ignored.len()), (converted.len(), 0));
        assert_eq!(
            vs.variables()["backbone.layer4.1.bn2.running_var"].double_value(&[0]),
            0.5
        );

        Tensor::write_safetensors(&values(&torchvision), &path)?;
        let report = net.load_backbone(&mut vs, &path)?;
        assert_eq!(report.loaded, converted.len());
        assert!(
            report.ignored.contains(&"fc.weight".to_owned())
                && report.ignored.contains(&"fc.bias".to_owned())
        );
        assert!(
            report
                .ignored
                .iter()
                .all(|k| k.starts_with("fc.") || k.ends_with("num_batches_tracked"))
        );
    }
    Ok(())
}

/// The one safetensors reader and writer: every kind it maps, shapes and metadata come back
/// exactly; a file cut short and a file of another format are told apart, naming the file.
#[test]
fn tensors_and_metadata_round_trip_and_bad_files_are_named() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("t.safetensors");
    let base = Tensor::arange(12, (Kind::Double, Device::Cpu)).view([3, 4]) - 5.0;
    let mut tensors = BTreeMap::new();
    for kind in [
        Kind::Float,
        Kind::Double,
        Kind::Half,
        Kind::BFloat16,
        Kind::Int64,
        Kind::Int,
        Kind::Int16,
        Kind::Int8,
        Kind::Bool,
    ] {
        tensors.insert(format!("{kind:?}"), base.to_kind(kind));
    }
    tensors.insert("u8".to_owned(), base.abs().to_kind(Kind::Uint8));
    tensors.insert("scalar".to_owned(), Tensor::from(2.5f32));
    // Written from the tensor's own memory when it is contiguous: a view into the middle of a
    // storage, a transposed (non-contiguous) view and an empty tensor must come back as values.
    let f = base.to_kind(Kind::Float);
    tensors.insert("rows_1_2".to_owned(), f.narrow(0, 1, 2));
    tensors.insert("transposed".to_owned(), f.tr());
    tensors.insert(
        "empty".to_owned(),
        Tensor::zeros([0, 4], (Kind::Float, Device::Cpu)),
    );
    let metadata = std::collections::HashMap::from([("k".to_owned(), "v ü".to_owned())]);
    dml_models::write_tensors(&path, &tensors, &metadata)?;
    let (back, meta) = dml_models::read_tensors(&path)?;
    assert_eq!(meta, metadata);
    assert_eq!(
        back.keys().collect::<Vec<_>>(),
        tensors.keys().collect::<Vec<_>>()
    );
    for (name, t) in &tensors {
        let b = &back[name];
        assert_eq!((b.kind(), b.size()), (t.kind(), t.size()), "{name}");
        assert!(b.equal(t), "{name}");
    }
    // Cut short, and another format.
    let bytes = std::fs::read(&path)?;
    let cut = dir.path().join("cut.safetensors");
    std::fs::write(&cut, &bytes[..bytes.len() - 3])?;
    let e = dml_models::read_tensors(&cut).unwrap_err().to_string();
    assert!(
        e.contains("cut.safetensors") && e.contains("truncated or corrupt"),
        "{e}"
    );
    let text = dir.path().join("notes.safetensors");
    std::fs::write(&text, "[train]\nepochs = 3\n")?;
    let e = dml_models::read_tensors(&text).unwrap_err().to_string();
    assert!(
        e.contains("notes.safetensors") && e.contains("not a safetensors file"),
        "{e}"
    );
    Ok(())
}
