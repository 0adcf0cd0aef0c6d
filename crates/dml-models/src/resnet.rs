//! ResNet-18 and ResNet-50 backbones (He et al., "Deep Residual Learning for Image
//! Recognition", 2015; the v1.5 bottleneck with its stride on the 3 × 3 convolution, as
//! torchvision has it), without their classifier.
//!
//! The variables and their names (`conv1`, `bn1`, `layer1.0.conv1`, …, `layer4.1.downsample.0`)
//! are torchvision's, so torchvision-named weight files load as they are, and so is the
//! initialisation: convolutions Kaiming-normal over their fan-out (`std = √(2 / fan_out)`),
//! batch-norm scales 1 and shifts 0. (tch's `vision::resnet`, which dml used before, draws
//! batch-norm scales from U(0, 1) and convolutions Kaiming-uniform over their fan-in.) The
//! forward pass is torchvision's too: ReLU and the residual sum are applied in place (batch
//! norm's backward needs its input, not its output, and ReLU's backward needs only its output),
//! and the stem max-pools before its ReLU, which gives the same values and gradients (ReLU is
//! monotone, so it keeps the window's maximum and its position) with ReLU on a quarter of the
//! elements. On the CPU that saves a few of the largest activations of every step (the stem's
//! is 64 MiB at B = 64 and 128 px).

use tch::Tensor;
use tch::nn;

use crate::Result;
use crate::layers::{ConvBn, ConvBnSpec};

/// A residual block: a chain of convolutions (two 3 × 3 for the basic block; 1 × 1, 3 × 3,
/// 1 × 1 for the bottleneck), each followed by batch norm and, except the last, ReLU; the
/// shortcut (a 1 × 1 convolution and batch norm when the shape changes); their sum; ReLU.
#[derive(Debug)]
struct Block {
    chain: Vec<ConvBn>,
    downsample: Option<ConvBn>,
}

impl Block {
    fn basic(p: &nn::Path, c_in: i64, c_out: i64, stride: i64) -> Self {
        let chain = vec![
            ConvBn::new(p, "conv1", "bn1", ConvBnSpec::new((c_in, c_out), 3, stride)),
            ConvBn::new(p, "conv2", "bn2", ConvBnSpec::new((c_out, c_out), 3, 1)),
        ];
        let downsample = Block::shortcut(p, c_in, c_out, stride);
        Block { chain, downsample }
    }

    fn bottleneck(p: &nn::Path, c_in: i64, c_mid: i64, stride: i64) -> Self {
        let c_out = 4 * c_mid;
        let chain = vec![
            ConvBn::new(p, "conv1", "bn1", ConvBnSpec::new((c_in, c_mid), 1, 1)),
            ConvBn::new(
                p,
                "conv2",
                "bn2",
                ConvBnSpec::new((c_mid, c_mid), 3, stride),
            ),
            ConvBn::new(p, "conv3", "bn3", ConvBnSpec::new((c_mid, c_out), 1, 1)),
        ];
        let downsample = Block::shortcut(p, c_in, c_out, stride);
        Block { chain, downsample }
    }

    fn shortcut(p: &nn::Path, c_in: i64, c_out: i64, stride: i64) -> Option<ConvBn> {
        (stride != 1 || c_in != c_out).then(|| {
            ConvBn::new(
                &(p / "downsample"),
                "0",
                "1",
                ConvBnSpec::new((c_in, c_out), 1, stride),
            )
        })
    }

    fn forward(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let mut y = x.shallow_clone();
        for (i, layer) in self.chain.iter().enumerate() {
            y = layer.forward(&y, train)?;
            if i + 1 < self.chain.len() {
                y = y.f_relu_()?;
            }
        }
        let _ = match &self.downsample {
            Some(d) => y.f_add_(&d.forward(x, train)?)?,
            None => y.f_add_(x)?,
        };
        Ok(y.f_relu_()?)
    }
}

/// A ResNet backbone: stem (7 × 7 convolution, batch norm, 3 × 3 max-pool, ReLU), four stages
/// of residual blocks, global average pooling; `[N, 3, H, W]` to `[N, features]`.
#[derive(Debug)]
pub(crate) struct ResNet {
    stem: ConvBn,
    blocks: Vec<Block>,
}

impl ResNet {
    /// ResNet-18: basic blocks, two per stage, 512 features.
    pub(crate) fn resnet18(p: &nn::Path) -> Self {
        ResNet::new(p, [2, 2, 2, 2], false)
    }

    /// ResNet-50: bottleneck blocks, 3, 4, 6 and 3 per stage, 2,048 features.
    pub(crate) fn resnet50(p: &nn::Path) -> Self {
        ResNet::new(p, [3, 4, 6, 3], true)
    }

    fn new(p: &nn::Path, counts: [usize; 4], bottleneck: bool) -> Self {
        let stem = ConvBn::new(p, "conv1", "bn1", ConvBnSpec::new((3, 64), 7, 2));
        let mut blocks = Vec::new();
        let mut c_in = 64;
        for (stage, (&count, c_mid)) in counts.iter().zip([64, 128, 256, 512]).enumerate() {
            let lp = p / format!("layer{}", stage + 1);
            for i in 0..count {
                let stride = if stage > 0 && i == 0 { 2 } else { 1 };
                let bp = &lp / i.to_string();
                let block = if bottleneck {
                    Block::bottleneck(&bp, c_in, c_mid, stride)
                } else {
                    Block::basic(&bp, c_in, c_mid, stride)
                };
                c_in = if bottleneck { 4 * c_mid } else { c_mid };
                blocks.push(block);
            }
        }
        ResNet { stem, blocks }
    }

    /// The pooled features of `x`; batch norm in training mode when `train`.
    pub(crate) fn forward(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let mut x = self
            .stem
            .forward(x, train)?
            .f_max_pool2d([3, 3], [2, 2], [1, 1], [1, 1], false)?
            .f_relu_()?;
        for block in &self.blocks {
            x = block.forward(&x, train)?;
        }
        Ok(x.f_adaptive_avg_pool2d([1, 1])?.f_flatten(1, -1)?)
    }
}
