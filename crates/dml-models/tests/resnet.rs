//! dml's ResNet module against tch's `vision::resnet`, alone in its test binary: the check that
//! a seed draws the same weights needs LibTorch's global generator to itself.

mod common;

use dml_models::{EmbeddingNet, InputShape, ModelConfig, ResNetConfig};
use tch::nn::{self, ModuleT};
use tch::{Device, Kind, Tensor};

/// dml's ResNets (channels-last input, ReLU and the residual sum in place, the stem's ReLU after
/// its max-pool) against tch's `vision::resnet` modules, the textbook composition, on a plain
/// channels-first batch: the same variables with the same names, drawn identically from one
/// seed, and the same embeddings and gradients of every variable, with batch norm in both modes.
/// The batch (64 px) leaves a 2 × 2 last stage.
#[test]
fn resnets_compute_what_tch_vision_modules_compute() -> anyhow::Result<()> {
    type Plain = fn(&nn::Path) -> Box<dyn ModuleT>;
    let cases: [(&str, ModelConfig, i64, Plain); 2] = [
        (
            "resnet18",
            ModelConfig::Resnet18(ResNetConfig {
                embedding_dim: 8,
                ..Default::default()
            }),
            512,
            |p| Box::new(tch::vision::resnet::resnet18_no_final_layer(p)),
        ),
        (
            "resnet50",
            ModelConfig::Resnet50(ResNetConfig {
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
        // The same seed, the same draws: tch's module creates the same variables in the same
        // order, so a seed gives the weights it gave before dml had its own module.
        tch::manual_seed(4);
        let plain = nn::VarStore::new(Device::Cpu);
        let backbone = plain_backbone(&(plain.root() / "backbone"));
        let head = nn::linear(plain.root() / "head", features, 8, Default::default());
        let (ours, theirs) = (vs.variables(), plain.variables());
        let mut names: Vec<&String> = ours.keys().collect();
        names.sort();
        let mut plain_names: Vec<&String> = theirs.keys().collect();
        plain_names.sort();
        assert_eq!(names, plain_names, "{name}");
        for n in &names {
            assert!(ours[*n].equal(&theirs[*n]), "{name}: initial {n}");
        }
        let xs = Tensor::randn([4, 3, 64, 64], (Kind::Float, Device::Cpu));
        let probe = Tensor::randn([4, 8], (Kind::Float, Device::Cpu));
        // The module on the same channels-last batch must agree to rounding (the in-place and
        // reordered operations change no value). On a channels-first batch LibTorch sums in
        // other orders (batch norm, weight gradients), which training mode on a batch of four
        // amplifies to about 1e-3 of the largest value, and cancellation in a few weight
        // gradients to about 1e-3 of their own largest entry: a layout check, looser, and for
        // ResNet-18 only (through ResNet-50's 53 training-mode batch norms on four items the
        // two layouts' gradients drift apart by a few percent, with tch's module alone).
        let channels_last = xs.permute([0, 2, 3, 1]).contiguous().permute([0, 3, 1, 2]);
        let contiguous = xs.contiguous();
        let mut layouts = vec![("channels-last", &channels_last, 1e-6, 1e-6)];
        if name == "resnet18" {
            layouts.push(("channels-first", &contiguous, 1e-3, 1e-2));
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
