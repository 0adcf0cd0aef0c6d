//! What network to build: [`ModelConfig`] and the [`InputShape`] it is built for.

use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// The shape of one input image, channels first (`C×H×W`), as the data layer yields it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InputShape {
    /// Channels (1 for grey images, 3 for RGB).
    pub channels: i64,
    /// Height in pixels.
    pub height: i64,
    /// Width in pixels.
    pub width: i64,
}

impl InputShape {
    /// An input shape from its three sides.
    pub const fn new(channels: i64, height: i64, width: i64) -> Self {
        Self {
            channels,
            height,
            width,
        }
    }

    /// `channels * height * width`: the length of one flattened image.
    pub const fn numel(&self) -> i64 {
        self.channels * self.height * self.width
    }

    /// Fails unless every side is positive.
    pub fn validate(&self) -> Result<()> {
        if self.channels <= 0 || self.height <= 0 || self.width <= 0 {
            return Err(Error::InputShape {
                channels: self.channels,
                height: self.height,
                width: self.width,
            });
        }
        Ok(())
    }
}

/// Which embedding network to build, with its parameters.
///
/// Serialised with a `kind` tag, so a TOML config reads
///
/// ```toml
/// [model]
/// kind = "resnet50"
/// embedding_dim = 128
/// freeze_batch_norm = true
/// ```
///
/// Every field has a default (stated on the field), and unknown fields are rejected with their
/// name, so a typo never goes unnoticed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
#[non_exhaustive]
pub enum ModelConfig {
    /// A multi-layer perceptron over the flattened image.
    Mlp(MlpConfig),
    /// A small ConvNet for small images (8×8 digits, 28×28 MNIST and the like).
    ConvNet(ConvNetConfig),
    /// ResNet-18 backbone (512 features) with an embedding head.
    Resnet18(BackboneConfig),
    /// ResNet-50 backbone (2048 features) with an embedding head.
    Resnet50(BackboneConfig),
    /// MobileNetV2 backbone (torchvision's, 1,280 features) with an embedding head; ImageNet
    /// weights with `pretrained = "mobilenet-v2"`.
    MobilenetV2(BackboneConfig),
    /// EfficientNet-Lite0 backbone (1,280 features) with an embedding head; ImageNet weights
    /// with `pretrained = "efficientnet-lite0"`.
    EfficientnetLite0(EfficientNetConfig),
    /// Any PyTorch network saved as TorchScript, as the backbone, with an embedding head.
    Torchscript(TorchScriptConfig),
}

impl Default for ModelConfig {
    /// The default ConvNet.
    fn default() -> Self {
        ModelConfig::ConvNet(ConvNetConfig::default())
    }
}

impl ModelConfig {
    /// The config's `kind` tag (`mlp`, `conv_net`, `resnet18`, `resnet50`, `mobilenet_v2`,
    /// `efficientnet_lite0`, `torchscript`).
    pub fn kind(&self) -> &'static str {
        match self {
            ModelConfig::Mlp(_) => "mlp",
            ModelConfig::ConvNet(_) => "conv_net",
            ModelConfig::Resnet18(_) => "resnet18",
            ModelConfig::Resnet50(_) => "resnet50",
            ModelConfig::MobilenetV2(_) => "mobilenet_v2",
            ModelConfig::EfficientnetLite0(_) => "efficientnet_lite0",
            ModelConfig::Torchscript(_) => "torchscript",
        }
    }

    /// The size of the embeddings the network outputs.
    pub fn embedding_dim(&self) -> i64 {
        match self {
            ModelConfig::Mlp(c) => c.embedding_dim,
            ModelConfig::ConvNet(c) => c.embedding_dim,
            ModelConfig::Resnet18(c) | ModelConfig::Resnet50(c) | ModelConfig::MobilenetV2(c) => {
                c.embedding_dim
            }
            ModelConfig::EfficientnetLite0(c) => c.embedding_dim,
            ModelConfig::Torchscript(c) => c.embedding_dim,
        }
    }

    /// Whether the embeddings are L2-normalised.
    pub fn normalize(&self) -> bool {
        match self {
            ModelConfig::Mlp(c) => c.normalize,
            ModelConfig::ConvNet(c) => c.normalize,
            ModelConfig::Resnet18(c) | ModelConfig::Resnet50(c) | ModelConfig::MobilenetV2(c) => {
                c.normalize
            }
            ModelConfig::EfficientnetLite0(c) => c.normalize,
            ModelConfig::Torchscript(c) => c.normalize,
        }
    }

    /// Whether batch-norm layers stay in evaluation mode during training (for a TorchScript
    /// backbone: the whole module).
    pub fn freeze_batch_norm(&self) -> bool {
        match self {
            ModelConfig::Mlp(_) => false,
            ModelConfig::ConvNet(c) => c.batch_norm && c.freeze_batch_norm,
            ModelConfig::Resnet18(c) | ModelConfig::Resnet50(c) | ModelConfig::MobilenetV2(c) => {
                c.freeze_batch_norm
            }
            ModelConfig::EfficientnetLite0(c) => c.freeze_batch_norm,
            ModelConfig::Torchscript(c) => c.freeze_batch_norm,
        }
    }

    /// Whether the backbone comes with weights of its own: `pretrained` is set, or the backbone
    /// is a TorchScript module (whose file holds its weights). Such a run reports the frozen
    /// backbone's features as a baseline.
    pub fn has_given_backbone(&self) -> bool {
        self.pretrained().is_some() || matches!(self, ModelConfig::Torchscript(_))
    }

    /// The `pretrained` setting: a name of `cargo xtask weights` or a file, for the kinds that
    /// take one.
    pub fn pretrained(&self) -> Option<&str> {
        match self {
            ModelConfig::Resnet18(c) | ModelConfig::Resnet50(c) | ModelConfig::MobilenetV2(c) => {
                c.pretrained.as_deref()
            }
            ModelConfig::EfficientnetLite0(c) => c.pretrained.as_deref(),
            ModelConfig::Mlp(_) | ModelConfig::ConvNet(_) | ModelConfig::Torchscript(_) => None,
        }
    }

    /// Checks the config on its own and against the input it will see.
    pub fn validate(&self, input: InputShape) -> Result<()> {
        input.validate()?;
        let dim = self.embedding_dim();
        if dim <= 0 {
            return Err(Error::EmbeddingDim(dim));
        }
        match self {
            ModelConfig::Mlp(c) => {
                check_widths("hidden", &c.hidden)?;
                if !(0.0..1.0).contains(&c.dropout) {
                    return Err(Error::Dropout(c.dropout));
                }
            }
            ModelConfig::ConvNet(c) => {
                if c.channels.is_empty() {
                    return Err(Error::NoBlocks);
                }
                check_widths("channels", &c.channels)?;
                let min = c.min_side();
                if input.height < min || input.width < min {
                    return Err(Error::InputTooSmall {
                        model: self.kind(),
                        height: input.height,
                        width: input.width,
                        min,
                    });
                }
            }
            ModelConfig::Torchscript(c) => {
                if c.path.as_os_str().is_empty() {
                    return Err(Error::TorchScript {
                        origin: String::new(),
                        message: "[model] kind = \"torchscript\" needs path = \"<file>.pt\" (a module saved with torch.jit.trace or torch.jit.script)".to_owned(),
                    });
                }
            }
            ModelConfig::Resnet18(_)
            | ModelConfig::Resnet50(_)
            | ModelConfig::MobilenetV2(_)
            | ModelConfig::EfficientnetLite0(_) => {
                if let ModelConfig::EfficientnetLite0(c) = self
                    && !(0.0..1.0).contains(&c.drop_connect_rate)
                {
                    return Err(Error::DropConnect(c.drop_connect_rate));
                }
                if input.channels != 1 && input.channels != 3 {
                    return Err(Error::InputChannels {
                        model: self.kind(),
                        expected: "1 or 3",
                        got: input.channels,
                    });
                }
                if input.height < RESNET_MIN_SIDE || input.width < RESNET_MIN_SIDE {
                    return Err(Error::InputTooSmall {
                        model: self.kind(),
                        height: input.height,
                        width: input.width,
                        min: RESNET_MIN_SIDE,
                    });
                }
            }
        }
        Ok(())
    }
}

/// The ImageNet backbones (ResNets, MobileNetV2, EfficientNet-Lite0) halve the image five times
/// (total stride 32): a smaller image leaves the last stages a single pixel of padding-dominated
/// context, which is no longer the network its pre-trained weights were learnt for.
pub const RESNET_MIN_SIDE: i64 = 32;

fn check_widths(what: &'static str, widths: &[i64]) -> Result<()> {
    match widths.iter().position(|&w| w <= 0) {
        Some(index) => Err(Error::LayerWidth {
            what,
            index,
            value: widths[index],
        }),
        None => Ok(()),
    }
}

/// A multi-layer perceptron: `flatten → (linear → ReLU → dropout)* → linear head`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MlpConfig {
    /// Widths of the hidden layers, in order; empty gives a linear embedding. Default `[256]`.
    pub hidden: Vec<i64>,
    /// Size of the embeddings. Default `128`.
    pub embedding_dim: i64,
    /// L2-normalise the embeddings. Default `true`.
    pub normalize: bool,
    /// Dropout probability after each hidden layer, in `[0, 1)`. Default `0.0`.
    pub dropout: f64,
}

impl Default for MlpConfig {
    fn default() -> Self {
        Self {
            hidden: vec![256],
            embedding_dim: 128,
            normalize: true,
            dropout: 0.0,
        }
    }
}

/// A small ConvNet: per block `conv 3×3 (padding 1) → batch norm → ReLU → max-pool 2×2`, then a
/// global average pool and a linear head.
///
/// The padding keeps each block's map the size of its input until the pool halves it, and the
/// global pool makes the head independent of the image size, so the same config works for any
/// image of at least `2^blocks` pixels a side (8×8 with the default three blocks).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ConvNetConfig {
    /// Output channels of each block; the number of blocks is its length. Default `[32, 64, 128]`.
    pub channels: Vec<i64>,
    /// Size of the embeddings. Default `64`.
    pub embedding_dim: i64,
    /// L2-normalise the embeddings. Default `true`.
    pub normalize: bool,
    /// Batch norm after each convolution. Default `true`.
    pub batch_norm: bool,
    /// Keep batch norm in evaluation mode during training (running statistics frozen).
    /// Default `false`.
    pub freeze_batch_norm: bool,
}

impl Default for ConvNetConfig {
    fn default() -> Self {
        Self {
            channels: vec![32, 64, 128],
            embedding_dim: 64,
            normalize: true,
            batch_norm: true,
            freeze_batch_norm: false,
        }
    }
}

impl ConvNetConfig {
    /// The smallest image side the network takes: each block halves the map, which must keep at
    /// least one pixel.
    pub fn min_side(&self) -> i64 {
        1_i64
            .checked_shl(self.channels.len() as u32)
            .unwrap_or(i64::MAX)
    }
}

/// An ImageNet backbone (ResNet-18, ResNet-50 or MobileNetV2, in torchvision's layout and
/// variable names, the classifier removed) with a linear embedding head.
///
/// Takes 3-channel images of at least 32×32 pixels; 1-channel images are repeated over the three
/// channels. The backbone's pooled features (512 for ResNet-18, 2,048 for ResNet-50, 1,280 for
/// MobileNetV2) go through the head.
///
/// # Pretrained weights
/// `pretrained` loads ImageNet weights into the backbone before training (the head starts
/// random): a name that `cargo xtask weights` fetches (`"mobilenet-v2"`), the name of a
/// torchvision ResNet converted with `scripts/convert_torchvision_weights.py` into
/// `weights/resnet18.safetensors` or `weights/resnet50.safetensors` (`"resnet18"`,
/// `"resnet50"`), or the path of a safetensors file with the backbone's names. Named weights are
/// looked up in the folder `DML_WEIGHTS_DIR` names, else in `weights/` under the current folder.
/// Loading is strict: every backbone tensor must be in the file with its shape.
///
/// The weights expect what they were trained on: RGB scaled to [0, 1] and normalised with the
/// ImageNet mean and standard deviation, which the data transform applies
/// (`normalize = { mean = [0.485, 0.456, 0.406], std = [0.229, 0.224, 0.225] }` in
/// `[transform.train]` and `[transform.test]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BackboneConfig {
    /// Size of the embeddings. Default `128`.
    pub embedding_dim: i64,
    /// L2-normalise the embeddings. Default `true`.
    pub normalize: bool,
    /// Keep every batch-norm layer of the backbone in evaluation mode during training, as is usual
    /// when fine-tuning pre-trained weights on small metric-learning batches. Default `false`
    /// (right for training from scratch, where the running statistics must be learnt).
    pub freeze_batch_norm: bool,
    /// Pretrained backbone weights: a name (`"mobilenet-v2"`, `"resnet18"`, `"resnet50"`) or a
    /// safetensors file. Default none (random initialisation from the run's seed).
    pub pretrained: Option<String>,
}

impl Default for BackboneConfig {
    fn default() -> Self {
        Self {
            embedding_dim: 128,
            normalize: true,
            freeze_batch_norm: false,
            pretrained: None,
        }
    }
}

/// EfficientNet-Lite0 with a linear embedding head: the settings of [`BackboneConfig`]
/// (`pretrained = "efficientnet-lite0"` for the ImageNet weights, which expect ImageNet-
/// normalised RGB) and the drop-connect rate of its residual blocks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EfficientNetConfig {
    /// Size of the embeddings. Default `128`.
    pub embedding_dim: i64,
    /// L2-normalise the embeddings. Default `true`.
    pub normalize: bool,
    /// Keep batch norm in evaluation mode during training. Default `false`.
    pub freeze_batch_norm: bool,
    /// Pretrained backbone weights: `"efficientnet-lite0"` or a safetensors file. Default none.
    pub pretrained: Option<String>,
    /// In training mode, block i of 16 with a residual connection skips its branch for an
    /// item with probability `drop_connect_rate · i / 16` (stochastic depth), as the reference
    /// implementation does. In `[0, 1)`. Default `0.2`, the reference's.
    pub drop_connect_rate: f64,
}

impl Default for EfficientNetConfig {
    fn default() -> Self {
        Self {
            embedding_dim: 128,
            normalize: true,
            freeze_batch_norm: false,
            pretrained: None,
            drop_connect_rate: 0.2,
        }
    }
}

/// A PyTorch network saved as TorchScript (`torch.jit.trace(net, example).save("net.pt")` or
/// `torch.jit.script(net).save(...)`) as the backbone, with a linear embedding head.
///
/// The module must map `[N, C, H, W]` float32 images to `[N, F]` features (pool and flatten
/// inside it); dml runs it once on a zero image of the data set's shape when building the
/// network, to learn F and to fail early. Its parameters are trained (they join the backbone's
/// optimiser group and the checkpoint, under their own names), its buffers travel in the
/// checkpoint with the module. Inputs are passed as the data transform makes them: normalise
/// them there as the module expects.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TorchScriptConfig {
    /// The module's file (required).
    pub path: std::path::PathBuf,
    /// Size of the embeddings. Default `128`.
    pub embedding_dim: i64,
    /// L2-normalise the embeddings. Default `true`.
    pub normalize: bool,
    /// Keep the whole module in evaluation mode during training (batch norm's running
    /// statistics frozen, dropout off). LibTorch switches a TorchScript module's mode as a
    /// whole, so this cannot single out batch norm. Default `false`.
    pub freeze_batch_norm: bool,
}

impl Default for TorchScriptConfig {
    fn default() -> Self {
        Self {
            path: std::path::PathBuf::new(),
            embedding_dim: 128,
            normalize: true,
            freeze_batch_norm: false,
        }
    }
}
