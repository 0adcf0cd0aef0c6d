//! [`EmbeddingNet`]: a backbone, a linear embedding head, optional L2 normalisation.

use std::path::Path as FsPath;

use tch::nn::{self, ModuleT};
use tch::{Device, Tensor};

use crate::checkpoint::{LoadReport, load_into_scope};
use crate::config::{ModelConfig, RESNET_MIN_SIDE};
use crate::efficientnet::{EFFICIENTNET_LITE0_FEATURES, EfficientNetLite0};
use crate::mobilenet::{MOBILENET_V2_FEATURES, MobileNetV2};
use crate::pretrained::resolve_pretrained;
use crate::resnet::ResNet;
use crate::torchscript::TorchScriptBackbone;
use crate::{Error, InputShape, Result};

/// The backbone's layers.
#[derive(Debug)]
enum Backbone {
    Mlp {
        layers: Vec<nn::Linear>,
        dropout: f64,
    },
    ConvNet {
        blocks: Vec<(nn::Conv2D, Option<nn::BatchNorm>)>,
    },
    ResNet(Box<ResNet>),
    MobileNetV2(Box<MobileNetV2>),
    EfficientNetLite0(Box<EfficientNetLite0>),
    TorchScript(Box<TorchScriptBackbone>),
}

/// An embedding network: `backbone → linear head → (L2 normalisation)`, built from a
/// [`ModelConfig`] for one [`InputShape`].
///
/// Variables live under `p / "backbone"` and `p / "head"` (`head.weight`, `head.bias`), so
/// checkpoint keys are stable and the backbone can be loaded on its own
/// ([`load_backbone`](Self::load_backbone)). Batches are `[N, C, H, W]` `f32` tensors on the
/// network's device (the MLP also takes `[N, C*H*W]`); [`embed`](Self::embed) checks them and
/// returns `[N, embedding_dim]`.
///
/// # Training and evaluation
/// `train = true` puts batch norm in training mode (batch statistics, running statistics updated)
/// and enables dropout, unless the config freezes batch norm, in which case batch-norm layers
/// always use, and never update, their running statistics; their affine weights still learn.
#[derive(Debug)]
pub struct EmbeddingNet {
    config: ModelConfig,
    input: InputShape,
    backbone: Backbone,
    head: nn::Linear,
    feature_dim: i64,
    backbone_scope: String,
}

impl EmbeddingNet {
    /// Builds the network's variables under `p` (on `p`'s device) after validating the config
    /// against the input shape.
    ///
    /// # Errors
    /// [`Error::EmbeddingDim`], [`Error::LayerWidth`], [`Error::NoBlocks`], [`Error::Dropout`],
    /// [`Error::InputShape`], [`Error::InputTooSmall`], [`Error::InputChannels`].
    pub fn new(p: &nn::Path, config: &ModelConfig, input: InputShape) -> Result<Self> {
        EmbeddingNet::build(p, config, input, None)
    }

    /// [`EmbeddingNet::new`] for a `torchscript` config, with the module taken from `bytes` (a
    /// checkpoint's copy, [`EmbeddingNet::torchscript_bytes`]) instead of the config's file, so
    /// its buffers are the checkpoint's; `origin` names the bytes in messages. Other kinds
    /// ignore `bytes`.
    ///
    /// # Errors
    /// As [`EmbeddingNet::new`].
    pub fn with_torchscript_bytes(
        p: &nn::Path,
        config: &ModelConfig,
        input: InputShape,
        bytes: &[u8],
        origin: &str,
    ) -> Result<Self> {
        EmbeddingNet::build(p, config, input, Some((bytes, origin)))
    }

    fn build(
        p: &nn::Path,
        config: &ModelConfig,
        input: InputShape,
        torchscript: Option<(&[u8], &str)>,
    ) -> Result<Self> {
        config.validate(input)?;
        let bp = p / "backbone";
        let backbone_scope = bp.components().collect::<Vec<_>>().join(".");
        let (backbone, feature_dim) = match config {
            ModelConfig::Mlp(c) => {
                let mut layers = Vec::with_capacity(c.hidden.len());
                let mut width = input.numel();
                for (i, &h) in c.hidden.iter().enumerate() {
                    layers.push(nn::linear(
                        &bp / format!("fc{}", i + 1),
                        width,
                        h,
                        Default::default(),
                    ));
                    width = h;
                }
                (
                    Backbone::Mlp {
                        layers,
                        dropout: c.dropout,
                    },
                    width,
                )
            }
            ModelConfig::ConvNet(c) => {
                let mut blocks = Vec::with_capacity(c.channels.len());
                let mut c_in = input.channels;
                for (i, &c_out) in c.channels.iter().enumerate() {
                    let bb = &bp / i.to_string();
                    // A bias before batch norm is cancelled by its mean subtraction.
                    let conv_cfg = nn::ConvConfig {
                        padding: 1,
                        bias: !c.batch_norm,
                        ..Default::default()
                    };
                    let conv = nn::conv2d(&bb / "conv", c_in, c_out, 3, conv_cfg);
                    // Batch-norm scales start at 1, as in PyTorch (and so in pml's examples and
                    // torchvision); tch's default draws them from U(0, 1), which reweights the
                    // channels at random and, on Fashion-MNIST's held-out classes, lowers the
                    // untrained network's MAP@R from 0.45 to 0.40 (issue #21).
                    let bn_cfg = nn::BatchNormConfig {
                        ws_init: nn::Init::Const(1.0),
                        ..Default::default()
                    };
                    let bn = c
                        .batch_norm
                        .then(|| nn::batch_norm2d(&bb / "bn", c_out, bn_cfg));
                    blocks.push((conv, bn));
                    c_in = c_out;
                }
                (Backbone::ConvNet { blocks }, c_in)
            }
            ModelConfig::Resnet18(_) => (Backbone::ResNet(Box::new(ResNet::resnet18(&bp))), 512),
            ModelConfig::Resnet50(_) => (Backbone::ResNet(Box::new(ResNet::resnet50(&bp))), 2048),
            ModelConfig::MobilenetV2(_) => (
                Backbone::MobileNetV2(Box::new(MobileNetV2::new(&bp))),
                MOBILENET_V2_FEATURES,
            ),
            ModelConfig::EfficientnetLite0(c) => (
                Backbone::EfficientNetLite0(Box::new(EfficientNetLite0::new(
                    &bp,
                    c.drop_connect_rate,
                ))),
                EFFICIENTNET_LITE0_FEATURES,
            ),
            ModelConfig::Torchscript(c) => {
                let module = match torchscript {
                    Some((bytes, origin)) => {
                        TorchScriptBackbone::from_bytes(&bp, bytes, origin, input)?
                    }
                    None => TorchScriptBackbone::load(&bp, &c.path, input)?,
                };
                let features = module.features();
                (Backbone::TorchScript(Box::new(module)), features)
            }
        };
        let head = nn::linear(
            p / "head",
            feature_dim,
            config.embedding_dim(),
            Default::default(),
        );
        Ok(Self {
            config: config.clone(),
            input,
            backbone,
            head,
            feature_dim,
            backbone_scope,
        })
    }

    /// The config the network was built from.
    pub fn config(&self) -> &ModelConfig {
        &self.config
    }

    /// The input shape the network was built for.
    pub fn input_shape(&self) -> InputShape {
        self.input
    }

    /// The size of the embeddings.
    pub fn embedding_dim(&self) -> i64 {
        self.config.embedding_dim()
    }

    /// The size of the backbone's output (the head's input): 512 for ResNet-18, 2048 for
    /// ResNet-50, 1,280 for MobileNetV2 and EfficientNet-Lite0, the module's output for a
    /// TorchScript backbone, the last channel count for the ConvNet, the last hidden width for
    /// the MLP.
    pub fn feature_dim(&self) -> i64 {
        self.feature_dim
    }

    /// The var-store name prefix of the backbone's variables (for example `backbone`, or
    /// `model.backbone` when built under `root / "model"`).
    pub fn backbone_scope(&self) -> &str {
        &self.backbone_scope
    }

    /// The device of the network's weights.
    pub fn device(&self) -> Device {
        self.head.ws.device()
    }

    /// Loads pre-trained backbone weights from a `.safetensors` or tch `.ot` file whose names are
    /// relative to the backbone (`conv1.weight`, `layer1.0.bn1.running_mean`, ...; names that
    /// already carry the backbone scope are accepted too). The head keeps its values.
    ///
    /// Tensors in the file that the backbone lacks (a classifier's `fc.*`, torchvision's
    /// `num_batches_tracked`) are skipped and listed in the report.
    ///
    /// # Errors
    /// [`Error::WeightsMismatch`] listing the backbone variables the file lacks and the tensors
    /// whose shapes differ (nothing is loaded then); [`Error::Io`] and [`Error::WeightsFile`] when
    /// the file cannot be read or parsed.
    pub fn load_backbone(
        &self,
        vs: &mut nn::VarStore,
        path: impl AsRef<FsPath>,
    ) -> Result<LoadReport> {
        load_into_scope(vs, &self.backbone_scope, path.as_ref())
    }

    /// Loads the weights the config's `pretrained` names ([`resolve_pretrained`]) into the
    /// backbone, strictly ([`EmbeddingNet::load_backbone`]); `None` when the config names none.
    ///
    /// # Errors
    /// [`Error::Pretrained`] when the weights are not found or are another network's, and the
    /// errors of [`EmbeddingNet::load_backbone`].
    pub fn load_pretrained(&self, vs: &mut nn::VarStore) -> Result<Option<LoadReport>> {
        match self.config.pretrained() {
            Some(spec) => {
                let path = resolve_pretrained(spec, self.config.kind())?;
                self.load_backbone(vs, path).map(Some)
            }
            None => Ok(None),
        }
    }

    /// For a TorchScript backbone, the module as it is now (parameters and buffers), as the
    /// bytes of a TorchScript file: what a checkpoint stores so that
    /// [`EmbeddingNet::with_torchscript_bytes`] rebuilds the same network. `None` for the other
    /// kinds, whose state is all in the var store.
    ///
    /// # Errors
    /// [`Error::Torch`] or [`Error::Io`] when the module cannot be serialised.
    pub fn torchscript_bytes(&self) -> Result<Option<Vec<u8>>> {
        match &self.backbone {
            Backbone::TorchScript(m) => m.to_bytes().map(Some),
            _ => Ok(None),
        }
    }

    /// Embeds a batch: `[N, C, H, W]` (or `[N, C*H*W]` for the MLP) to `[N, embedding_dim]`.
    ///
    /// The ConvNet and the ResNets take any image at least as large as their minimum (their
    /// global pooling makes the output independent of the size); the MLP takes exactly the input
    /// shape it was built for.
    ///
    /// # Errors
    /// [`Error::BatchShape`], [`Error::BatchKind`], [`Error::BatchDevice`] when the batch does not
    /// fit; [`Error::BatchTooSmall`] when a training-mode batch norm would see one value per
    /// channel. All are checked before LibTorch sees the batch.
    pub fn embed(&self, xs: &Tensor, train: bool) -> Result<Tensor> {
        self.check_batch(xs, train)?;
        let features = self.backbone_features(xs, train)?;
        self.head_forward(&features)
    }

    /// Embeds a batch with the backbone frozen: its forward pass in evaluation mode and
    /// without gradient (so no gradient reaches its variables and its batch-norm statistics do
    /// not move), the head as in training. What training does during
    /// `train.freeze_backbone_epochs`: only the head (and the loss's parameters) learn.
    ///
    /// # Errors
    /// As [`EmbeddingNet::embed`].
    pub fn embed_frozen_backbone(&self, xs: &Tensor) -> Result<Tensor> {
        self.check_batch(xs, false)?;
        let features = {
            let _guard = tch::no_grad_guard();
            self.backbone_features(xs, false)?
        };
        self.head_forward(&features)
    }

    /// The backbone's pooled features of a batch, without the head: `[N, feature_dim]`, in
    /// training mode when `train` (as [`EmbeddingNet::embed`]). For a pretrained backbone in
    /// evaluation mode these are the baseline every fine-tuned network must beat (the frozen
    /// ImageNet features).
    ///
    /// # Errors
    /// As [`EmbeddingNet::embed`].
    pub fn features(&self, xs: &Tensor, train: bool) -> Result<Tensor> {
        self.check_batch(xs, train)?;
        self.backbone_features(xs, train)
    }

    /// The head, then the L2 normalisation when configured.
    fn head_forward(&self, features: &Tensor) -> Result<Tensor> {
        let out = features.apply(&self.head);
        Ok(if self.config.normalize() {
            dml_kernels::tensor::f_l2_normalize(&out)?
        } else {
            out
        })
    }

    /// The backbone's output for a checked batch.
    fn backbone_features(&self, xs: &Tensor, train: bool) -> Result<Tensor> {
        let bn_train = train && !self.config.freeze_batch_norm();
        Ok(match &self.backbone {
            Backbone::Mlp { layers, dropout } => {
                let mut x = xs.flatten(1, -1);
                for layer in layers {
                    x = x.apply(layer).relu();
                    if *dropout > 0.0 {
                        x = x.dropout(*dropout, train);
                    }
                }
                x
            }
            Backbone::ConvNet { blocks } => {
                let mut x = channels_last(xs)?;
                for (conv, bn) in blocks {
                    // Channels-last activations: LibTorch's oneDNN convolutions keep them once
                    // their input has them, and batch norm, max-pool and ReLU have fast kernels
                    // for them; about 1.3× the speed of the whole step (docs/benchmarks.md). A
                    // one-channel image cannot ask for them (its strides are both layouts), so
                    // then the first block's output is copied once; otherwise a no-op.
                    x = channels_last(&x.apply(conv))?;
                    if let Some(bn) = bn {
                        x = x.apply_t(bn, bn_train);
                    }
                    // Max-pool before ReLU: the same values and gradients (ReLU is monotone and
                    // keeps the arg-max), ReLU on a quarter of the elements.
                    x = x
                        .f_max_pool2d([2, 2], [2, 2], [0, 0], [1, 1], false)?
                        .f_relu()?;
                }
                x.adaptive_avg_pool2d([1, 1]).flatten(1, -1)
            }
            Backbone::ResNet(net) => {
                // Channels-last input: LibTorch's oneDNN convolutions then keep every activation
                // channels-last, about 1.2× the speed of a ResNet-18 step on the CPU.
                let x = channels_last(&rgb(xs))?;
                // The ResNet has no dropout, so its `train` flag is exactly batch norm's mode.
                net.forward(&x, bn_train)?
            }
            // Channels-last too, as the ResNets (docs/benchmarks.md has the step with and
            // without it). Batch norm's training-mode statistics then sum in another order than
            // PyTorch's default layout computes them; tests/pretrained.rs compares with PyTorch
            // in both layouts.
            Backbone::MobileNetV2(net) => net.forward(&channels_last(&rgb(xs))?, bn_train)?,
            Backbone::EfficientNetLite0(net) => {
                net.forward(&channels_last(&rgb(xs))?, bn_train, train)?
            }
            Backbone::TorchScript(module) => {
                // The module is switched as a whole: frozen batch norm keeps it in evaluation
                // mode throughout.
                module.forward(xs, bn_train)?
            }
        })
    }

    fn check_batch(&self, xs: &Tensor, train: bool) -> Result<()> {
        let (kind, device) = (self.head.ws.kind(), self.head.ws.device());
        if xs.kind() != kind {
            return Err(Error::BatchKind {
                expected: kind,
                got: xs.kind(),
            });
        }
        if xs.device() != device {
            return Err(Error::BatchDevice {
                expected: device,
                got: xs.device(),
            });
        }
        let size = xs.size();
        let InputShape {
            channels,
            height,
            width,
        } = self.input;
        let bad = |expected: String| {
            Err(Error::BatchShape {
                expected,
                got: size.clone(),
            })
        };
        match &self.config {
            ModelConfig::Mlp(_) => {
                let fits = match size.as_slice() {
                    [n, c, h, w] => *n > 0 && [*c, *h, *w] == [channels, height, width],
                    [n, f] => *n > 0 && *f == self.input.numel(),
                    _ => false,
                };
                if !fits {
                    return bad(format!(
                        "[N, {channels}, {height}, {width}] or [N, {}] with N > 0",
                        self.input.numel()
                    ));
                }
            }
            ModelConfig::Torchscript(_) => {
                // The module decides what it takes; dml checks the layout it hands over.
                let fits = match size.as_slice() {
                    [n, c, _, _] => *n > 0 && *c == channels,
                    _ => false,
                };
                if !fits {
                    return bad(format!("[N, {channels}, H, W] with N > 0"));
                }
            }
            ModelConfig::ConvNet(_)
            | ModelConfig::Resnet18(_)
            | ModelConfig::Resnet50(_)
            | ModelConfig::MobilenetV2(_)
            | ModelConfig::EfficientnetLite0(_) => {
                // The ImageNet backbones repeat a grey plane to RGB, so they take either,
                // whatever they were built for; the ConvNet's first convolution fixes its
                // channels.
                let (min, channels_ok, in_words) = match &self.config {
                    ModelConfig::ConvNet(c) => (
                        c.min_side(),
                        size.get(1) == Some(&channels),
                        channels.to_string(),
                    ),
                    _ => (
                        RESNET_MIN_SIDE,
                        matches!(size.get(1), Some(1 | 3)),
                        "1 or 3".to_owned(),
                    ),
                };
                let fits = match size.as_slice() {
                    [n, _, h, w] => *n > 0 && channels_ok && *h >= min && *w >= min,
                    _ => false,
                };
                if !fits {
                    return bad(format!(
                        "[N, {in_words}, H, W] with N > 0 and H, W >= {min}"
                    ));
                }
                // The ImageNet backbones' last stage can shrink to 1×1; a batch norm there in
                // training mode with one item would see a single value per channel, which
                // LibTorch rejects.
                if train
                    && !self.config.freeze_batch_norm()
                    && !matches!(self.config, ModelConfig::ConvNet(_))
                {
                    let last = |side: i64| (0..5).fold(side, |s, _| (s - 1) / 2 + 1);
                    if size[0] * last(size[2]) * last(size[3]) < 2 {
                        return Err(Error::BatchTooSmall(size[0]));
                    }
                }
            }
        }
        Ok(())
    }
}

/// Grey images as the same plane on the three channels ImageNet backbones expect; RGB as it is.
fn rgb(xs: &Tensor) -> Tensor {
    if xs.size()[1] == 1 {
        xs.expand([-1, 3, -1, -1], false)
    } else {
        xs.shallow_clone()
    }
}

/// `x` (`[N, C, H, W]`) with channels-last strides (`[H·W·C, 1, W·C, C]`): the same shape and
/// values, a differentiable copy. On the CPU only, where it was measured to pay (oneDNN); on a
/// GPU `x` is returned as it is, since cuDNN's choice for f32 was never measured here.
fn channels_last(x: &Tensor) -> Result<Tensor> {
    if x.device() != Device::Cpu {
        return Ok(x.shallow_clone());
    }
    Ok(x.f_permute([0, 2, 3, 1])?
        .f_contiguous()?
        .f_permute([0, 3, 1, 2])?)
}

impl ModuleT for EmbeddingNet {
    /// [`EmbeddingNet::embed`], for code written against tch's traits.
    ///
    /// # Panics
    /// When `embed` returns an error (a batch that does not fit); call `embed` to get a `Result`.
    fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        match self.embed(xs, train) {
            Ok(out) => out,
            Err(e) => panic!("{e}"),
        }
    }
}
