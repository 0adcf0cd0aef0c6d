//! Embedding networks on `tch::nn` for deep metric learning.
//!
//! An [`EmbeddingNet`] maps a batch of images `[N, C, H, W]` to embeddings `[N, D]`: a backbone,
//! a linear head of the chosen size, and (by default) L2 normalisation, so the embeddings lie on
//! the unit sphere where the losses and miners of `dml-losses` and `dml-sampling` expect them.
//! [`ModelConfig`] says which network (serde-tagged by `kind`):
//!
//! | kind | network | for |
//! |---|---|---|
//! | `mlp` | [`MlpConfig`]: flatten, hidden layers, head | vectors, tiny images |
//! | `conv_net` | [`ConvNetConfig`]: conv-BN-ReLU-pool blocks, global pool, head | 8×8 digits, 28×28 MNIST |
//! | `resnet18`, `resnet50` | [`BackboneConfig`]: torchvision-layout ResNet, head | CUB, Cars196, SOP |
//! | `mobilenet_v2` | [`BackboneConfig`]: torchvision's MobileNetV2, head | fine-tuning ImageNet weights on the CPU |
//! | `efficientnet_lite0` | [`EfficientNetConfig`]: EfficientNet-Lite0, head | the same |
//! | `torchscript` | [`TorchScriptConfig`]: any PyTorch network saved as TorchScript, head | ViT, DINOv2, ConvNeXt, timm models |
//!
//! Variables are scoped `backbone.*` and `head.*`, so checkpoints have stable keys.
//! [`save_safetensors`] writes a whole var store atomically, [`load_safetensors`] reads it back
//! strictly, and [`EmbeddingNet::load_pretrained`] loads the ImageNet weights a config names
//! (`pretrained = "mobilenet-v2"`, fetched and converted by `cargo xtask weights`; or a file,
//! such as a torchvision ResNet converted as `docs/models.md` shows), naming every missing or
//! wrongly shaped tensor when they do not fit. [`EmbeddingNet::features`] gives the backbone's
//! pooled features, the frozen-backbone baseline of a pretrained network. Underneath, [`write_tensors`] and [`read_tensors`] are the
//! workspace's one safetensors writer and reader (named tensors and string metadata; the
//! facade's training checkpoints use them too) and [`write_atomic`] its one atomic file writer.
//! [`DeviceChoice`] is the one place that decides between CPU and CUDA.
//!
//! ```
//! use dml_models::{ConvNetConfig, DeviceChoice, EmbeddingNet, InputShape, ModelConfig};
//! use tch::{Kind, Tensor, nn};
//!
//! # fn main() -> dml_models::Result<()> {
//! let device = DeviceChoice::Cpu.resolve()?;
//! let vs = nn::VarStore::new(device);
//! let config = ModelConfig::ConvNet(ConvNetConfig { embedding_dim: 16, ..Default::default() });
//! // The 8×8 grey digits the demo trains on.
//! let net = EmbeddingNet::new(&vs.root(), &config, InputShape::new(1, 8, 8))?;
//!
//! let images = Tensor::rand([4, 1, 8, 8], (Kind::Float, device));
//! let embeddings = net.embed(&images, false)?;
//! assert_eq!(embeddings.size(), [4, 16]);
//! // Unit rows: the head's output is L2-normalised.
//! let norms = embeddings.square().sum_dim_intlist(1, false, Kind::Float).sqrt();
//! assert!(norms.allclose(&Tensor::ones([4], (Kind::Float, device)), 1e-5, 1e-6, false));
//!
//! // A wrong batch is an error, not a LibTorch crash.
//! assert!(net.embed(&Tensor::rand([4, 3, 8, 8], (Kind::Float, device)), false).is_err());
//! # Ok(())
//! # }
//! ```
#![warn(missing_docs)]

mod checkpoint;
mod config;
mod device;
mod efficientnet;
mod error;
mod layers;
mod mobilenet;
mod net;
mod pretrained;
mod resnet;
mod safetensors_io;
mod torchscript;

pub use crate::{
    checkpoint::{LoadReport, load_into_scope, load_safetensors, save_safetensors, write_atomic},
    config::{
        BackboneConfig, ConvNetConfig, EfficientNetConfig, InputShape, MlpConfig, ModelConfig,
        RESNET_MIN_SIDE, TorchScriptConfig,
    },
    device::{DeviceChoice, keep_freed_memory},
    error::{Error, Result, ShapeMismatch},
    net::EmbeddingNet,
    pretrained::{NAMED_WEIGHTS, WEIGHTS_DIR_ENV, resolve_pretrained},
    safetensors_io::{read_tensors, write_tensors},
};
