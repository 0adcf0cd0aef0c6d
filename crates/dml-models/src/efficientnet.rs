//! EfficientNet-Lite0 (Tan and Le, "EfficientNet: Rethinking Model Scaling for Convolutional
//! Neural Networks", 2019; the Lite variant of the TensorFlow repository: no squeeze-and-
//! excitation, ReLU6, stem and head not scaled), without its classifier: 1,280 pooled features.
//!
//! The network and its variable names are those of the implementation its ImageNet weights
//! were published for (lukemelas' EfficientNet-PyTorch, as packaged by `efficientnet-lite-
//! pytorch`): `_conv_stem`, `_bn0`, `_blocks.N._expand_conv` / `_bn0` / `_depthwise_conv` /
//! `_bn1` / `_project_conv` / `_bn2`, `_conv_head`, `_bn1`; so its state dict loads as it is
//! (`cargo xtask weights efficientnet-lite0`). As there:
//!
//! - convolutions pad as TensorFlow's `SAME` does: the output side is `⌈input / stride⌉` and a
//!   strided convolution's odd padding goes to the bottom and right;
//! - batch norm has ε = 1e-3 and momentum 0.01 (TensorFlow's decay 0.99);
//! - in training mode a block with a residual connection drops its branch for a whole item with
//!   probability `drop_connect_rate · i / 16` (block i of 16, "drop connect", stochastic depth),
//!   scaling kept branches by `1 / (1 - p)`, with the same draws from LibTorch's generator as
//!   the reference makes.
//!
//! The reference pads for the image size fixed when it is built (224 by default); dml pads for
//! the size of each batch, which is the same whenever the side is a multiple of 32.

use tch::Tensor;
use tch::nn;

use crate::Result;
use crate::layers::{ConvBn, ConvBnSpec, relu6_};

/// The block groups: repeats, kernel side, stride of the first block, expansion factor, input
/// and output channels (EfficientNet-Lite0's `r1_k3_s11_e1_i32_o16`, …).
const GROUPS: [(usize, i64, i64, i64, i64, i64); 7] = [
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
];

/// Channels of the head's 1 × 1 convolution: the number of features.
pub(crate) const EFFICIENTNET_LITE0_FEATURES: i64 = 1280;

/// A convolution with TensorFlow's `SAME` padding, then batch norm with TensorFlow's settings
/// in PyTorch's conventions (ε = 1e-3, momentum 0.01).
#[derive(Debug)]
struct SameConvBn {
    inner: ConvBn,
    k: i64,
    stride: i64,
}

impl SameConvBn {
    /// The convolution and batch norm of `spec` (its padding replaced) under `names`.
    fn new(p: &nn::Path, names: (&str, &str), spec: ConvBnSpec) -> Self {
        // A stride-1 convolution with an odd kernel pads (k - 1) / 2 on every side, which the
        // convolution does itself; a strided one pads explicitly in `forward`.
        let padding = if spec.stride == 1 { spec.k / 2 } else { 0 };
        let spec = ConvBnSpec {
            padding,
            eps: 1e-3,
            momentum: 0.01,
            ..spec
        };
        SameConvBn {
            inner: ConvBn::new(p, names.0, names.1, spec),
            k: spec.k,
            stride: spec.stride,
        }
    }

    fn forward(&self, x: &Tensor, bn_train: bool) -> Result<Tensor> {
        if self.stride == 1 {
            return self.inner.forward(x, bn_train);
        }
        let size = x.size();
        let pad = |side: i64| {
            let out = (side + self.stride - 1) / self.stride;
            ((out - 1) * self.stride + self.k - side).max(0)
        };
        let (ph, pw) = (pad(size[2]), pad(size[3]));
        let padded = x.f_constant_pad_nd([pw / 2, pw - pw / 2, ph / 2, ph - ph / 2])?;
        self.inner.forward(&padded, bn_train)
    }
}

/// A mobile inverted-residual block without squeeze-and-excitation.
#[derive(Debug)]
struct MbConv {
    expand: Option<SameConvBn>,
    depthwise: SameConvBn,
    project: SameConvBn,
    /// The drop-connect probability when the block has a residual connection.
    residual: Option<f64>,
}

impl MbConv {
    fn forward(&self, x: &Tensor, bn_train: bool, train: bool) -> Result<Tensor> {
        let mut y = match &self.expand {
            Some(e) => relu6_(e.forward(x, bn_train)?)?,
            None => x.shallow_clone(),
        };
        y = relu6_(self.depthwise.forward(&y, bn_train)?)?;
        let y = self.project.forward(&y, bn_train)?;
        let Some(p) = self.residual else {
            return Ok(y);
        };
        let y = if train && p > 0.0 {
            // The reference's drop connect, operation for operation: keep an item's branch when
            // ⌊(1 - p) + U(0, 1)⌋ = 1, and divide the kept ones by 1 - p.
            let keep = 1.0 - p;
            let n = y.size()[0];
            let mask = Tensor::f_rand([n, 1, 1, 1], (y.kind(), y.device()))?
                .f_add_scalar(keep)?
                .f_floor()?;
            y.f_div_scalar(keep)?.f_mul(&mask)?
        } else {
            y
        };
        Ok(y.f_add(x)?)
    }
}

/// The EfficientNet-Lite0 feature extractor with global average pooling: `[N, 3, H, W]` to
/// `[N, 1280]`.
#[derive(Debug)]
pub(crate) struct EfficientNetLite0 {
    stem: SameConvBn,
    blocks: Vec<MbConv>,
    head: SameConvBn,
}

impl EfficientNetLite0 {
    /// Built under `p` with drop-connect rate `drop_connect_rate` (the reference's 0.2 by
    /// default).
    pub(crate) fn new(p: &nn::Path, drop_connect_rate: f64) -> Self {
        let stem = SameConvBn::new(p, ("_conv_stem", "_bn0"), ConvBnSpec::new((3, 32), 3, 2));
        let n_blocks: usize = GROUPS.iter().map(|g| g.0).sum();
        let mut blocks = Vec::with_capacity(n_blocks);
        let bp = p / "_blocks";
        for (repeats, k, s, t, c_in, c_out) in GROUPS {
            for r in 0..repeats {
                let (c_in, stride) = if r == 0 { (c_in, s) } else { (c_out, 1) };
                let idx = blocks.len();
                let b = &bp / idx.to_string();
                let hidden = c_in * t;
                let expand = (t != 1).then(|| {
                    let spec = ConvBnSpec::new((c_in, hidden), 1, 1);
                    SameConvBn::new(&b, ("_expand_conv", "_bn0"), spec)
                });
                let spec = ConvBnSpec::new((hidden, hidden), k, stride).depthwise();
                let depthwise = SameConvBn::new(&b, ("_depthwise_conv", "_bn1"), spec);
                let spec = ConvBnSpec::new((hidden, c_out), 1, 1);
                let project = SameConvBn::new(&b, ("_project_conv", "_bn2"), spec);
                let residual = (stride == 1 && c_in == c_out)
                    .then(|| drop_connect_rate * idx as f64 / n_blocks as f64);
                blocks.push(MbConv {
                    expand,
                    depthwise,
                    project,
                    residual,
                });
            }
        }
        let spec = ConvBnSpec::new((320, EFFICIENTNET_LITE0_FEATURES), 1, 1);
        let head = SameConvBn::new(p, ("_conv_head", "_bn1"), spec);
        EfficientNetLite0 { stem, blocks, head }
    }

    /// The pooled features of `x`: batch norm in training mode when `bn_train`, drop connect
    /// when `train`.
    pub(crate) fn forward(&self, x: &Tensor, bn_train: bool, train: bool) -> Result<Tensor> {
        let mut x = relu6_(self.stem.forward(x, bn_train)?)?;
        for block in &self.blocks {
            x = block.forward(&x, bn_train, train)?;
        }
        let x = relu6_(self.head.forward(&x, bn_train)?)?;
        Ok(x.f_adaptive_avg_pool2d([1, 1])?.f_flatten(1, -1)?)
    }
}
