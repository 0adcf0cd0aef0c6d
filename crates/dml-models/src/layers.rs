//! The unit every ImageNet backbone here is built of: a convolution without bias followed by
//! batch norm, initialised as torchvision initialises its ResNets and MobileNets.

use tch::Tensor;
use tch::nn;

use crate::Result;

/// The shape of one convolution and the settings of the batch norm after it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ConvBnSpec {
    /// Input and output channels.
    pub c: (i64, i64),
    /// Kernel side.
    pub k: i64,
    /// Stride.
    pub stride: i64,
    /// Convolution groups (the channel count for a depthwise convolution).
    pub groups: i64,
    /// Zero padding on every side.
    pub padding: i64,
    /// Batch norm's ε.
    pub eps: f64,
    /// Batch norm's momentum, in PyTorch's convention (the weight of the new batch's
    /// statistics in the running averages).
    pub momentum: f64,
}

impl ConvBnSpec {
    /// A `k × k` convolution with stride `stride` and padding `k / 2` from `c.0` to `c.1`
    /// channels, then batch norm with PyTorch's defaults (ε = 1e-5, momentum 0.1).
    pub fn new(c: (i64, i64), k: i64, stride: i64) -> Self {
        ConvBnSpec {
            c,
            k,
            stride,
            groups: 1,
            padding: k / 2,
            eps: 1e-5,
            momentum: 0.1,
        }
    }

    /// The same, depthwise (one filter per channel; `c.0` must equal `c.1`).
    pub fn depthwise(self) -> Self {
        ConvBnSpec {
            groups: self.c.0,
            ..self
        }
    }
}

/// A convolution without bias followed by batch norm.
///
/// Convolutions start Kaiming-normal over their fan-out (`std = √(2 / fan_out)`, fan-out =
/// output channels × kernel area, so a depthwise convolution counts all its channels as
/// torchvision does), batch-norm scales at 1 and shifts at 0. The convolution's variable is
/// created before batch norm's, so the random draws of a seeded initialisation come in the
/// order of the names.
#[derive(Debug)]
pub(crate) struct ConvBn {
    conv: nn::Conv2D,
    bn: nn::BatchNorm,
}

impl ConvBn {
    /// The convolution under `p / conv_name`, batch norm under `p / bn_name`.
    pub fn new(p: &nn::Path, conv_name: &str, bn_name: &str, spec: ConvBnSpec) -> Self {
        let cfg = nn::ConvConfig {
            stride: spec.stride,
            padding: spec.padding,
            groups: spec.groups,
            bias: false,
            ws_init: nn::Init::Kaiming {
                dist: nn::init::NormalOrUniform::Normal,
                fan: nn::init::FanInOut::FanOut,
                non_linearity: nn::init::NonLinearity::ReLU,
            },
            ..Default::default()
        };
        let conv = nn::conv2d(p / conv_name, spec.c.0, spec.c.1, spec.k, cfg);
        let bn_cfg = nn::BatchNormConfig {
            eps: spec.eps,
            momentum: spec.momentum,
            ws_init: nn::Init::Const(1.0),
            ..Default::default()
        };
        let bn = nn::batch_norm2d(p / bn_name, spec.c.1, bn_cfg);
        ConvBn { conv, bn }
    }

    /// Convolution then batch norm (training-mode statistics when `bn_train`).
    pub fn forward(&self, x: &Tensor, bn_train: bool) -> Result<Tensor> {
        let y = x.apply(&self.conv);
        Ok(y.apply_t(&self.bn, bn_train))
    }
}

/// ReLU6 (`min(max(x, 0), 6)`, the activation of MobileNetV2 and EfficientNet-Lite) in place:
/// LibTorch's `relu6_`, which is `hardtanh_(0, 6)` as PyTorch's `nn.ReLU6` is, so its gradient
/// is zero at exactly 0 and 6 (a clamp's would pass it there).
pub(crate) fn relu6_(mut x: Tensor) -> Result<Tensor> {
    let _ = x.f_relu6_()?;
    Ok(x)
}
