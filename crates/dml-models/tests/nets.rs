//! Forward passes: shapes, normalisation, input checks, batch-norm freezing, one training step.

mod common;

use dml_models::{
    BackboneConfig, ConvNetConfig, EmbeddingNet, Error, InputShape, MlpConfig, ModelConfig,
};
use tch::nn::{self, ModuleT};
use tch::{Device, Kind, Tensor};

#[test]
fn each_network_gives_unit_embeddings_of_the_configured_size() -> anyhow::Result<()> {
    let _torch = common::torch_lock();
    for (name, config, input) in common::networks() {
        let vs = nn::VarStore::new(Device::Cpu);
        let net = EmbeddingNet::new(&vs.root(), &config, input)?;
        let xs = Tensor::randn(
            [2, input.channels, input.height, input.width],
            (Kind::Float, Device::Cpu),
        );
        let e = net.embed(&xs, false)?;
        assert_eq!(e.size(), [2, 8], "{name}");
        for norm in common::row_norms(&e) {
            assert!((norm - 1.0).abs() < 1e-5, "{name}: norm {norm}");
        }
        // ModuleT gives the same as embed.
        let f = net.forward_t(&xs, false);
        assert!(e.equal(&f), "{name}");
    }
    Ok(())
}

#[test]
fn without_normalisation_the_head_output_is_returned_as_is() -> anyhow::Result<()> {
    let _torch = common::torch_lock();
    let vs = nn::VarStore::new(Device::Cpu);
    let config = ModelConfig::Mlp(MlpConfig {
        hidden: vec![],
        embedding_dim: 3,
        normalize: false,
        dropout: 0.0,
    });
    let net = EmbeddingNet::new(&vs.root(), &config, InputShape::new(1, 2, 2))?;
    let xs = Tensor::from_slice(&[1.0f32, -2.0, 0.5, 3.0]).view([1, 1, 2, 2]);
    let e = net.embed(&xs, false)?;
    // A linear map by hand: e = W x + b.
    let w = vs.variables()["head.weight"].shallow_clone();
    let b = vs.variables()["head.bias"].shallow_clone();
    let x = [1.0f64, -2.0, 0.5, 3.0];
    for i in 0..3 {
        let expected = (0..4)
            .map(|j| w.double_value(&[i, j]) * x[j as usize])
            .sum::<f64>()
            + b.double_value(&[i]);
        assert!((e.double_value(&[0, i]) - expected).abs() < 1e-5);
    }
    Ok(())
}

#[test]
fn conv_net_takes_digits_and_mnist_sizes_and_names_its_variables() -> anyhow::Result<()> {
    let _torch = common::torch_lock();
    let config = ModelConfig::ConvNet(ConvNetConfig::default());
    for side in [8, 28, 13] {
        let vs = nn::VarStore::new(Device::Cpu);
        let net = EmbeddingNet::new(&vs.root(), &config, InputShape::new(1, side, side))?;
        let e = net.embed(
            &Tensor::rand([3, 1, side, side], (Kind::Float, Device::Cpu)),
            true,
        )?;
        assert_eq!(e.size(), [3, 64]);
        assert_eq!(net.feature_dim(), 128);
        let mut names: Vec<String> = vs.variables().into_keys().collect();
        names.sort();
        assert!(
            names.contains(&"backbone.0.conv.weight".to_owned()),
            "{names:?}"
        );
        assert!(
            names.contains(&"backbone.2.bn.running_var".to_owned()),
            "{names:?}"
        );
        assert!(names.contains(&"head.weight".to_owned()), "{names:?}");
        assert!(
            names
                .iter()
                .all(|n| n.starts_with("backbone.") || n.starts_with("head."))
        );
    }
    Ok(())
}

#[test]
fn bad_configs_are_rejected_with_the_offending_value() {
    let _torch = common::torch_lock();
    let vs = nn::VarStore::new(Device::Cpu);
    let p = vs.root();
    let digits = InputShape::new(1, 8, 8);
    let err = |c: ModelConfig, input: InputShape| EmbeddingNet::new(&p, &c, input).unwrap_err();

    let e = err(
        ModelConfig::Mlp(MlpConfig {
            embedding_dim: 0,
            ..Default::default()
        }),
        digits,
    );
    assert!(matches!(e, Error::EmbeddingDim(0)), "{e}");
    let e = err(
        ModelConfig::Mlp(MlpConfig {
            hidden: vec![4, -1],
            ..Default::default()
        }),
        digits,
    );
    assert!(
        matches!(
            e,
            Error::LayerWidth {
                what: "hidden",
                index: 1,
                value: -1
            }
        ),
        "{e}"
    );
    let e = err(
        ModelConfig::Mlp(MlpConfig {
            dropout: 1.0,
            ..Default::default()
        }),
        digits,
    );
    assert!(matches!(e, Error::Dropout(_)), "{e}");
    let e = err(
        ModelConfig::ConvNet(ConvNetConfig {
            channels: vec![],
            ..Default::default()
        }),
        digits,
    );
    assert!(matches!(e, Error::NoBlocks), "{e}");
    // Three blocks halve three times: 8 is the floor, 7 is too small.
    let e = err(
        ModelConfig::ConvNet(ConvNetConfig::default()),
        InputShape::new(1, 7, 9),
    );
    assert!(
        matches!(
            e,
            Error::InputTooSmall {
                min: 8,
                height: 7,
                width: 9,
                ..
            }
        ),
        "{e}"
    );
    assert!(e.to_string().contains("at least 8x8"), "{e}");
    let e = err(
        ModelConfig::ConvNet(ConvNetConfig::default()),
        InputShape::new(0, 8, 8),
    );
    assert!(matches!(e, Error::InputShape { channels: 0, .. }), "{e}");
    let e = err(
        ModelConfig::Resnet18(BackboneConfig::default()),
        InputShape::new(2, 64, 64),
    );
    assert!(matches!(e, Error::InputChannels { got: 2, .. }), "{e}");
    let e = err(
        ModelConfig::Resnet50(BackboneConfig::default()),
        InputShape::new(3, 28, 28),
    );
    assert!(matches!(e, Error::InputTooSmall { min: 32, .. }), "{e}");
    // Nothing was built by the failed attempts.
    assert_eq!(vs.variables().len(), 0);
}

#[test]
fn batches_that_do_not_fit_are_errors_not_crashes() -> anyhow::Result<()> {
    let _torch = common::torch_lock();
    let vs = nn::VarStore::new(Device::Cpu);
    let mlp = EmbeddingNet::new(
        &(&vs.root() / "mlp"),
        &ModelConfig::Mlp(MlpConfig::default()),
        InputShape::new(1, 8, 8),
    )?;
    let conv = EmbeddingNet::new(
        &(&vs.root() / "conv"),
        &ModelConfig::default(),
        InputShape::new(1, 8, 8),
    )?;
    let f = |shape: &[i64]| Tensor::zeros(shape, (Kind::Float, Device::Cpu));

    // The MLP takes its exact shape, flat or not.
    assert_eq!(mlp.embed(&f(&[2, 64]), false)?.size(), [2, 128]);
    for shape in [&[2, 1, 8, 9][..], &[2, 63], &[64], &[0, 64]] {
        let e = mlp.embed(&f(shape), false).unwrap_err();
        assert!(
            matches!(&e, Error::BatchShape { got, .. } if got == shape),
            "{e}"
        );
    }
    // The ConvNet takes any size from its minimum up, with its channels.
    assert_eq!(conv.embed(&f(&[2, 1, 16, 9]), false)?.size(), [2, 64]);
    for shape in [&[2, 3, 8, 8][..], &[2, 1, 7, 8], &[1, 8, 8]] {
        let e = conv.embed(&f(shape), false).unwrap_err();
        assert!(
            matches!(&e, Error::BatchShape { got, .. } if got == shape),
            "{e}"
        );
        assert!(e.to_string().contains("H, W >= 8"), "{e}");
    }
    let e = conv
        .embed(
            &Tensor::zeros([2, 1, 8, 8], (Kind::Double, Device::Cpu)),
            false,
        )
        .unwrap_err();
    assert!(
        matches!(
            e,
            Error::BatchKind {
                expected: Kind::Float,
                got: Kind::Double
            }
        ),
        "{e}"
    );
    Ok(())
}

#[test]
fn resnet_takes_grey_images_and_refuses_a_single_item_training_batch() -> anyhow::Result<()> {
    let _torch = common::torch_lock();
    let vs = nn::VarStore::new(Device::Cpu);
    let config = ModelConfig::Resnet18(BackboneConfig {
        embedding_dim: 4,
        ..Default::default()
    });
    let net = EmbeddingNet::new(&vs.root(), &config, InputShape::new(1, 32, 32))?;
    let grey = Tensor::rand([1, 1, 32, 32], (Kind::Float, Device::Cpu));
    // A grey image is the same as its plane repeated on three channels.
    let rgb = grey.repeat([1, 3, 1, 1]);
    assert!(
        net.embed(&grey, false)?
            .allclose(&net.embed(&rgb, false)?, 1e-6, 1e-6, false)
    );
    // At 32×32 the last stage is 1×1: one item gives batch norm a single value per channel.
    let e = net.embed(&grey, true).unwrap_err();
    assert!(matches!(e, Error::BatchTooSmall(1)), "{e}");
    // A larger image keeps a 2×2 map at the end, which is enough.
    assert_eq!(
        net.embed(
            &Tensor::rand([1, 1, 64, 33], (Kind::Float, Device::Cpu)),
            true
        )?
        .size(),
        [1, 4]
    );
    Ok(())
}

fn running_stats(vs: &nn::VarStore) -> Vec<(String, Tensor)> {
    let mut v: Vec<(String, Tensor)> = vs
        .variables()
        .into_iter()
        .filter(|(k, _)| k.contains("running_"))
        .map(|(k, t)| (k, t.copy()))
        .collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

#[test]
fn frozen_batch_norm_keeps_its_running_statistics_in_training() -> anyhow::Result<()> {
    let _torch = common::torch_lock();
    let cases = [
        (
            ModelConfig::ConvNet(ConvNetConfig {
                freeze_batch_norm: true,
                ..Default::default()
            }),
            InputShape::new(1, 8, 8),
            true,
        ),
        (
            ModelConfig::ConvNet(ConvNetConfig::default()),
            InputShape::new(1, 8, 8),
            false,
        ),
        (
            ModelConfig::Resnet18(BackboneConfig {
                freeze_batch_norm: true,
                ..Default::default()
            }),
            InputShape::new(3, 32, 32),
            true,
        ),
    ];
    for (config, input, frozen) in cases {
        let vs = nn::VarStore::new(Device::Cpu);
        let net = EmbeddingNet::new(&vs.root(), &config, input)?;
        let before = running_stats(&vs);
        assert!(!before.is_empty());
        // Inputs far from the initial statistics (mean 0, variance 1), so an update would show.
        let xs = Tensor::rand(
            [4, input.channels, input.height, input.width],
            (Kind::Float, Device::Cpu),
        ) * 5.0
            + 3.0;
        let e = net.embed(&xs, true)?;
        // The affine weights still learn when the statistics are frozen.
        e.sum(Kind::Float).backward();
        let grad = vs
            .variables()
            .into_iter()
            .find(|(k, _)| k.ends_with("bn1.weight") || k.ends_with("0.bn.weight"));
        let (_, w) = grad.ok_or_else(|| anyhow::anyhow!("no batch-norm weight"))?;
        assert!(w.grad().defined());
        let after = running_stats(&vs);
        let unchanged = before.iter().zip(&after).all(|((_, a), (_, b))| a.equal(b));
        assert_eq!(unchanged, frozen, "{}", config.kind());
    }
    Ok(())
}

#[test]
fn one_training_step_lowers_a_simple_loss_on_each_network() -> anyhow::Result<()> {
    for (name, config, input) in common::networks() {
        let (before, after) = common::one_step(&config, input, Device::Cpu, None)?;
        assert!(before.is_finite() && after.is_finite(), "{name}");
        assert!(after < before, "{name}: {before} -> {after}");
    }
    Ok(())
}

#[test]
fn conv_net_batch_norm_starts_as_pytorch_does() -> anyhow::Result<()> {
    let _torch = common::torch_lock();
    // PyTorch's BatchNorm2d starts with scale 1 and shift 0; tch's default draws the scale from
    // U(0, 1), which is not what a model ported from PyTorch (or compared with pml) expects.
    let vs = nn::VarStore::new(Device::Cpu);
    let config = ModelConfig::ConvNet(ConvNetConfig {
        channels: vec![8, 16],
        ..Default::default()
    });
    EmbeddingNet::new(&vs.root(), &config, InputShape::new(1, 8, 8))?;
    let vars = vs.variables();
    let mut seen = 0;
    for (name, t) in &vars {
        if name.contains(".bn.") {
            let want = if name.ends_with(".weight") || name.ends_with(".running_var") {
                1.0
            } else {
                0.0
            };
            let values = Vec::<f32>::try_from(t.flatten(0, -1))?;
            assert!(
                values.iter().all(|&v| v == want),
                "{name}: {values:?}, want all {want}"
            );
            seen += 1;
        }
    }
    // At least weight and bias of each of the two blocks (tch also lists the running statistics).
    assert!(
        seen >= 4,
        "batch-norm variables found: {seen} in {:?}",
        vars.keys()
    );
    Ok(())
}

/// The variables of `vs` by name.
fn var(vs: &nn::VarStore, name: &str) -> Tensor {
    vs.variables()[name].shallow_clone()
}

/// The gradient of every variable of `vs` that has one, by name.
fn grads(vs: &nn::VarStore) -> Vec<(String, Tensor)> {
    let mut v: Vec<(String, Tensor)> = vs
        .variables()
        .into_iter()
        .filter(|(_, t)| t.grad().defined())
        .map(|(k, t)| (k, t.grad().copy()))
        .collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

fn assert_close(name: &str, a: &Tensor, b: &Tensor) {
    common::assert_close_to(name, a, b, 1e-4);
}

/// The ConvNet as the textbook writes it, on the network's own variables: contiguous
/// (channels-first) tensors, conv → batch norm (batch statistics) → ReLU → max-pool per block,
/// global average pool, linear head, L2 normalisation. Running statistics go to copies.
fn textbook_conv_net(vs: &nn::VarStore, blocks: usize, xs: &Tensor) -> Tensor {
    let mut x = xs.contiguous();
    for i in 0..blocks {
        let v = |s: &str| var(vs, &format!("backbone.{i}.{s}"));
        x = x.conv2d(&v("conv.weight"), None::<Tensor>, [1, 1], [1, 1], [1, 1], 1);
        assert!(x.is_contiguous());
        x = x.batch_norm(
            Some(v("bn.weight")),
            Some(v("bn.bias")),
            Some(v("bn.running_mean").copy()),
            Some(v("bn.running_var").copy()),
            true,
            0.1,
            1e-5,
            false,
        );
        x = x.relu().max_pool2d_default(2);
    }
    let f = x.adaptive_avg_pool2d([1, 1]).flatten(1, -1);
    let e = f.linear(&var(vs, "head.weight"), Some(var(vs, "head.bias")));
    let norm = e.norm_scalaropt_dim(2, [1], true).clamp_min(1e-12);
    e / norm
}

#[test]
fn conv_net_computes_the_textbook_network_whatever_its_layout_and_order() -> anyhow::Result<()> {
    let _torch = common::torch_lock();
    // dml's ConvNet runs channels-last and pools before its ReLU; the values and gradients are
    // those of the plain channels-first conv → BN → ReLU → pool network.
    for channels in [1, 3] {
        tch::manual_seed(3);
        let vs = nn::VarStore::new(Device::Cpu);
        let config = ModelConfig::ConvNet(ConvNetConfig {
            channels: vec![8, 16, 16],
            embedding_dim: 8,
            ..Default::default()
        });
        let net = EmbeddingNet::new(&vs.root(), &config, InputShape::new(channels, 12, 12))?;
        let xs = Tensor::randn([6, channels, 12, 12], (Kind::Float, Device::Cpu));
        let weights = Tensor::randn([6, 8], (Kind::Float, Device::Cpu));

        let expected = textbook_conv_net(&vs, 3, &xs);
        (&expected * &weights).sum(Kind::Float).backward();
        let expected_grads = grads(&vs);
        assert_eq!(
            expected_grads.len(),
            3 * 3 + 2,
            "every weight has a gradient"
        );
        for (_, t) in vs.variables() {
            let _ = t.grad().defined().then(|| t.grad().zero_());
        }

        let got = net.embed(&xs, true)?;
        (&got * &weights).sum(Kind::Float).backward();
        assert_close(&format!("{channels} channels: embeddings"), &got, &expected);
        for ((name, want), (_, have)) in expected_grads.iter().zip(grads(&vs)) {
            assert_close(&format!("{channels} channels: grad of {name}"), &have, want);
        }
    }
    Ok(())
}
