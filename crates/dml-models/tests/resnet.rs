//! dml's ResNet module: its variables and initialisation against torchvision's, its
//! computation against tch's `vision::resnet` module.

mod common;

use dml_models::{BackboneConfig, EmbeddingNet, InputShape, ModelConfig};
use tch::nn::{self, ModuleT};
use tch::{Device, Kind, Tensor};

/// dml's ResNets (channels-last input, ReLU and the residual sum in place, the stem's ReLU after
/// its max-pool) against tch's `vision::resnet` modules, the textbook composition, on the same
/// channels-last batch: the same variables with the same names (torchvision's), and, with the
/// weights copied over, the same embeddings and gradients of every variable, with batch norm in
/// both modes; on a channels-first batch, the same embeddings. The batch (64 px) leaves a
/// 2 × 2 last stage.
#[test]
fn resnets_compute_what_tch_vision_modules_compute() -> anyhow::Result<()> {
    let _torch = common::torch_lock();
    type Plain = fn(&nn::Path) -> Box<dyn ModuleT>;
    let cases: [(&str, ModelConfig, i64, Plain); 2] = [
        (
            "resnet18",
            ModelConfig::Resnet18(BackboneConfig {
                embedding_dim: 8,
                ..Default::default()
            }),
            512,
            |p| Box::new(tch::vision::resnet::resnet18_no_final_layer(p)),
        ),
        (
            "resnet50",
            ModelConfig::Resnet50(BackboneConfig {
                embedding_dim: 8,
                ..Default::default()
            }),
            2048,
            |p| Box::new(tch::vision::resnet::resnet50_no_final_layer(p)),
        ),
    ];
    for (name, config, features, plain_backbone) in cases {
        tch::manual_seed(4);
        let vs = nn::VarStore::new(Device::Cpu);
        let net = EmbeddingNet::new(&vs.root(), &config, InputShape::new(3, 32, 32))?;
        let mut plain = nn::VarStore::new(Device::Cpu);
        let backbone = plain_backbone(&(plain.root() / "backbone"));
        let head = nn::linear(plain.root() / "head", features, 8, Default::default());
        let (ours, theirs) = (vs.variables(), plain.variables());
        let mut names: Vec<&String> = ours.keys().collect();
        names.sort();
        let mut plain_names: Vec<&String> = theirs.keys().collect();
        plain_names.sort();
        assert_eq!(names, plain_names, "{name}");
        for n in &names {
            assert_eq!(ours[*n].size(), theirs[*n].size(), "{name}: {n}");
        }
        plain.copy(&vs)?;
        let xs = Tensor::randn([4, 3, 64, 64], (Kind::Float, Device::Cpu));
        let probe = Tensor::randn([4, 8], (Kind::Float, Device::Cpu));
        // The module on the same channels-last batch must agree to rounding (the in-place and
        // reordered operations change no value): that is the check of dml's module. On a
        // channels-first batch LibTorch sums in other orders (batch norm, weight gradients),
        // which batch norm on four items amplifies to about 1e-3 of the largest value, and
        // cancellation in sums such as a shift's gradient to percents of their own size, with
        // tch's module alone: the layout check is looser, for ResNet-18, and on values only.
        let channels_last = xs.permute([0, 2, 3, 1]).contiguous().permute([0, 3, 1, 2]);
        let contiguous = xs.contiguous();
        let mut layouts = vec![("channels-last", &channels_last, 1e-6, Some(1e-6))];
        if name == "resnet18" {
            layouts.push(("channels-first", &contiguous, 1e-3, None));
        }
        for (layout, input, tol, grad_tol) in layouts {
            for train in [false, true] {
                let at = format!("{name}, {layout}, train = {train}");
                let e = backbone.forward_t(input, train).apply(&head);
                let expected = &e / e.norm_scalaropt_dim(2, [1], true);
                let got = net.embed(&xs, train)?;
                common::assert_close_to(&at, &got, &expected, tol);
                for (out, store) in [(&got, &vs), (&expected, &plain)] {
                    for mut v in store.trainable_variables() {
                        v.zero_grad();
                    }
                    (out * &probe).sum(Kind::Float).backward();
                }
                let Some(grad_tol) = grad_tol else {
                    continue;
                };
                for n in &names {
                    let (a, b) = (ours[*n].grad(), theirs[*n].grad());
                    assert_eq!(a.defined(), b.defined(), "{at}: d {n}");
                    if b.defined() {
                        common::assert_close_to(&format!("{at}: d {n}"), &a, &b, grad_tol);
                    }
                }
            }
        }
    }
    Ok(())
}

/// Every variable starts as torchvision's `resnet18` / `resnet50` starts it: convolutions
/// Kaiming-normal over their fan-out (mean 0 and standard deviation √(2 / (out channels · k²)),
/// measured on each tensor within 4 %; the smallest has 8,192 entries), batch-norm scales 1,
/// shifts 0, running means 0 and running variances 1.
#[test]
fn resnets_start_as_torchvision_initialises_them() -> anyhow::Result<()> {
    let _torch = common::torch_lock();
    for (config, n_convs) in [
        (ModelConfig::Resnet18(BackboneConfig::default()), 20),
        (ModelConfig::Resnet50(BackboneConfig::default()), 53),
    ] {
        let vs = nn::VarStore::new(Device::Cpu);
        EmbeddingNet::new(&vs.root(), &config, InputShape::new(3, 32, 32))?;
        let mut convs = 0;
        for (name, v) in vs.variables() {
            let Some(local) = name.strip_prefix("backbone.") else {
                continue;
            };
            let constant = |value: f64| {
                let off = (&v - value).abs().max().double_value(&[]);
                assert!(off == 0.0, "{local}: not all {value}");
            };
            match local.rsplit('.').next() {
                Some("weight") if v.dim() == 4 => {
                    let size = v.size();
                    let want = (2.0 / (size[0] * size[2] * size[3]) as f64).sqrt();
                    let std = v.std(true).double_value(&[]);
                    let mean = v.mean(Kind::Float).double_value(&[]);
                    assert!(
                        (std / want - 1.0).abs() < 0.04,
                        "{local}: std {std}, want {want}"
                    );
                    assert!(mean.abs() < 0.04 * want, "{local}: mean {mean}");
                    convs += 1;
                }
                Some("weight") | Some("running_var") => constant(1.0),
                Some("bias") | Some("running_mean") => constant(0.0),
                _ => panic!("unexpected variable {name}"),
            }
        }
        assert_eq!(convs, n_convs);
    }
    Ok(())
}
