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
    Resnet18(ResNetConfig),
    /// ResNet-50 backbone (2048 features) with an embedding head.
    Resnet50(ResNetConfig),
}

impl Default for ModelConfig {
    /// The default ConvNet.
    fn default() -> Self {
        ModelConfig::ConvNet(ConvNetConfig::default())
    }
}

impl ModelConfig {
    /// The config's `kind` tag (`mlp`, `conv_net`, `resnet18`, `resnet50`).
    pub fn kind(&self) -> &'static str {
        match self {
            ModelConfig::Mlp(_) => "mlp",
            ModelConfig::ConvNet(_) => "conv_net",
            ModelConfig::Resnet18(_) => "resnet18",
            ModelConfig::Resnet50(_) => "resnet50",
        }
    }

    /// The size of the embeddings the network outputs.
    pub fn embedding_dim(&self) -> i64 {
        match self {
            ModelConfig::Mlp(c) => c.embedding_dim,
            ModelConfig::ConvNet(c) => c.embedding_dim,
            ModelConfig::Resnet18(c) | ModelConfig::Resnet50(c) => c.embedding_dim,
        }
    }

    /// Whether the embeddings are L2-normalised.
    pub fn normalize(&self) -> bool {
        match self {
            ModelConfig::Mlp(c) => c.normalize,
            ModelConfig::ConvNet(c) => c.normalize,
            ModelConfig::Resnet18(c) | ModelConfig::Resnet50(c) => c.normalize,
        }
    }

    /// Whether batch-norm layers stay in evaluation mode during training.
    pub fn freeze_batch_norm(&self) -> bool {
        match self {
            ModelConfig::Mlp(_) => false,
            ModelConfig::ConvNet(c) => c.batch_norm && c.freeze_batch_norm,
            ModelConfig::Resnet18(c) | ModelConfig::Resnet50(c) => c.freeze_batch_norm,
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
            ModelConfig::Resnet18(_) | ModelConfig::Resnet50(_) => {
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

/// A ResNet halves the image five times (total stride 32): a smaller image leaves the last
/// stages a single pixel of padding-dominated context, which is no longer the network its
/// pre-trained weights were learnt for.
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

/// A torchvision-layout ResNet backbone (the classifier removed) with a linear embedding head.
///
/// Takes 3-channel images of at least 32×32 pixels; 1-channel images are repeated over the three
/// channels. Variable names match torchvision's under the `backbone` scope, so ImageNet weights
/// converted with `scripts/convert_torchvision_weights.py` load with
/// [`EmbeddingNet::load_backbone`](crate::EmbeddingNet::load_backbone).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ResNetConfig {
    /// Size of the embeddings. Default `128`.
    pub embedding_dim: i64,
    /// L2-normalise the embeddings. Default `true`.
    pub normalize: bool,
    /// Keep every batch-norm layer of the backbone in evaluation mode during training, as is usual
    /// when fine-tuning pre-trained weights on small metric-learning batches. Default `false`
    /// (right for training from scratch, where the running statistics must be learnt).
    pub freeze_batch_norm: bool,
}

impl Default for ResNetConfig {
    fn default() -> Self {
        Self {
            embedding_dim: 128,
            normalize: true,
            freeze_batch_norm: false,
        }
    }
}
