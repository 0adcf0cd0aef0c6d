//! Augmentation and conversion of decoded pixels to `f32` CHW.
//!
//! Every geometric step (resize, centre crop, random resized crop, flip) is expressed as one
//! rectangle in source coordinates that is resampled once, bilinearly, straight into the `f32`
//! output with the normalisation folded in. That is one pass over the output and no intermediate
//! image, which is why it is cheap enough to run on every item of every batch.

use rand::{Rng, RngCore};
use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// ImageNet channel means (RGB), the usual normalisation for pretrained backbones.
pub const IMAGENET_MEAN: [f32; 3] = [0.485, 0.456, 0.406];
/// ImageNet channel standard deviations (RGB).
pub const IMAGENET_STD: [f32; 3] = [0.229, 0.224, 0.225];

/// Decoded pixels of one item: `u8` values, height × width × channels (interleaved).
#[derive(Clone, Debug)]
pub struct Pixels<'a> {
    /// The values, `height * width * channels` of them, row-major, channels interleaved.
    pub data: std::borrow::Cow<'a, [u8]>,
    /// Number of channels (1 or 3).
    pub channels: usize,
    /// Height in pixels.
    pub height: usize,
    /// Width in pixels.
    pub width: usize,
    /// The value that maps to 1.0 before normalisation (255 for images, 16 for the digits).
    pub max_value: f32,
}

/// Which geometric operation to apply.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Crop {
    /// Keep the item's own size.
    None,
    /// Resize so that the shorter side is `resize`, then cut the central `size` × `size`
    /// (torchvision `Resize(resize)` + `CenterCrop(size)`, the usual evaluation transform).
    Center {
        /// Length of the shorter side after resizing.
        resize: u32,
        /// Side of the square output.
        size: u32,
    },
    /// A random rectangle covering a `scale` fraction of the area with aspect ratio in `ratio`,
    /// resized to `size` × `size` (torchvision `RandomResizedCrop`, the usual training transform).
    RandomResized {
        /// Side of the square output.
        size: u32,
        /// Range of the fraction of the area kept; torchvision's default is (0.08, 1.0).
        scale: (f32, f32),
        /// Range of the aspect ratio (width / height); torchvision's default is (3/4, 4/3).
        ratio: (f32, f32),
    },
    /// Pad every side with `padding` pixels of value 0, then cut a random `size` × `size`
    /// square (torchvision `RandomCrop(size, padding)`). With `size` equal to the item's side
    /// this shifts the item by up to `padding` pixels in each direction, the usual augmentation
    /// of MNIST-sized images. Where the square reaches past the padded item, the pixels are 0.
    RandomCrop {
        /// Side of the square output.
        size: u32,
        /// Pixels of zeros added on each side before cropping.
        padding: u32,
    },
}

/// Per-channel normalisation `(x - mean) / std`, applied after scaling pixels to `[0, 1]`.
///
/// One value broadcasts to every channel; otherwise give one per channel.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Normalize {
    /// Channel means.
    pub mean: Vec<f32>,
    /// Channel standard deviations (positive).
    pub std: Vec<f32>,
}

impl Normalize {
    /// The ImageNet statistics ([`IMAGENET_MEAN`], [`IMAGENET_STD`]).
    pub fn imagenet() -> Self {
        Normalize {
            mean: IMAGENET_MEAN.to_vec(),
            std: IMAGENET_STD.to_vec(),
        }
    }
}

/// An augmentation pipeline: crop, optional horizontal flip, optional normalisation.
///
/// Without a transform an item is its pixels scaled to `[0, 1]`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Transform {
    /// The geometric step. Default: [`Crop::None`].
    #[serde(default = "default_crop")]
    pub crop: Crop,
    /// Flip horizontally with probability 1/2. Default: false.
    #[serde(default)]
    pub hflip: bool,
    /// Normalisation after scaling to `[0, 1]`. Default: none.
    #[serde(default)]
    pub normalize: Option<Normalize>,
}

fn default_crop() -> Crop {
    Crop::None
}

impl Default for Transform {
    fn default() -> Self {
        Transform {
            crop: Crop::None,
            hflip: false,
            normalize: None,
        }
    }
}

impl Transform {
    /// The standard training transform of the metric-learning papers for `size` × `size` inputs:
    /// random resized crop (scale 0.08–1, ratio 3/4–4/3), random horizontal flip, ImageNet
    /// normalisation.
    pub fn train(size: u32) -> Self {
        Transform {
            crop: Crop::RandomResized {
                size,
                scale: (0.08, 1.0),
                ratio: (3.0 / 4.0, 4.0 / 3.0),
            },
            hflip: true,
            normalize: Some(Normalize::imagenet()),
        }
    }

    /// The standard evaluation transform: resize the shorter side to `resize`, centre crop
    /// `size`, ImageNet normalisation (`eval(256, 224)` is the usual one).
    pub fn eval(resize: u32, size: u32) -> Self {
        Transform {
            crop: Crop::Center { resize, size },
            hflip: false,
            normalize: Some(Normalize::imagenet()),
        }
    }

    /// Checks the parameters against a number of channels.
    pub fn validate(&self, channels: usize) -> Result<()> {
        let bad = |reason: String| Err(Error::InvalidTransform { reason });
        match self.crop {
            Crop::None => {}
            Crop::Center { resize, size } => {
                if resize == 0 || size == 0 {
                    return bad(format!(
                        "centre crop sizes must be positive, got resize {resize}, size {size}"
                    ));
                }
            }
            Crop::RandomResized { size, scale, ratio } => {
                if size == 0 {
                    return bad("random resized crop size must be positive".into());
                }
                if !(scale.0 > 0.0 && scale.0 <= scale.1 && scale.1 <= 1.0) {
                    return bad(format!(
                        "scale must satisfy 0 < min <= max <= 1, got {scale:?}"
                    ));
                }
                if !(ratio.0 > 0.0 && ratio.0 <= ratio.1 && ratio.1.is_finite()) {
                    return bad(format!("ratio must satisfy 0 < min <= max, got {ratio:?}"));
                }
            }
            Crop::RandomCrop { size, .. } => {
                if size == 0 {
                    return bad("random crop size must be positive".into());
                }
            }
        }
        if let Some(n) = &self.normalize {
            for (name, v) in [("mean", &n.mean), ("std", &n.std)] {
                if v.len() != 1 && v.len() != channels {
                    return bad(format!(
                        "normalisation {name} has {} values for {channels} channels",
                        v.len()
                    ));
                }
            }
            if n.std.iter().any(|&s| !(s > 0.0 && s.is_finite())) {
                return bad(format!(
                    "normalisation std must be positive, got {:?}",
                    n.std
                ));
            }
        }
        Ok(())
    }

    /// The output (height, width) for an input of `height` × `width`, or `None` when the
    /// output keeps the input's size.
    pub fn fixed_size(&self) -> Option<(usize, usize)> {
        match self.crop {
            Crop::None => None,
            Crop::Center { size, .. }
            | Crop::RandomResized { size, .. }
            | Crop::RandomCrop { size, .. } => Some((size as usize, size as usize)),
        }
    }
}

/// The output shape (C, H, W) of `pixels` under `transform`.
pub(crate) fn output_shape(pixels: &Pixels<'_>, transform: Option<&Transform>) -> [usize; 3] {
    let (h, w) = transform
        .and_then(Transform::fixed_size)
        .unwrap_or((pixels.height, pixels.width));
    [pixels.channels, h, w]
}

/// A source rectangle `(x0, y0, width, height)` in pixel units (floating point).
type Rect = (f64, f64, f64, f64);

/// torchvision's `RandomResizedCrop.get_params`: ten tries at a rectangle with the sampled area
/// and aspect ratio, then a central crop with the ratio clamped to the allowed range.
fn random_resized_rect(
    h: usize,
    w: usize,
    scale: (f32, f32),
    ratio: (f32, f32),
    rng: &mut dyn RngCore,
) -> Rect {
    let (hf, wf) = (h as f64, w as f64);
    let area = hf * wf;
    let (log_r0, log_r1) = ((ratio.0 as f64).ln(), (ratio.1 as f64).ln());
    for _ in 0..10 {
        let target = area * uniform(rng, scale.0 as f64, scale.1 as f64);
        let aspect = uniform(rng, log_r0, log_r1).exp();
        let cw = (target * aspect).sqrt().round();
        let ch = (target / aspect).sqrt().round();
        if cw > 0.0 && ch > 0.0 && cw <= wf && ch <= hf {
            let y0 = rng.random_range(0..=(h - ch as usize)) as f64;
            let x0 = rng.random_range(0..=(w - cw as usize)) as f64;
            return (x0, y0, cw, ch);
        }
    }
    let in_ratio = wf / hf;
    let (cw, ch) = if in_ratio < ratio.0 as f64 {
        (wf, (wf / ratio.0 as f64).round())
    } else if in_ratio > ratio.1 as f64 {
        ((hf * ratio.1 as f64).round(), hf)
    } else {
        (wf, hf)
    };
    (((wf - cw) / 2.0).floor(), ((hf - ch) / 2.0).floor(), cw, ch)
}

fn uniform(rng: &mut dyn RngCore, lo: f64, hi: f64) -> f64 {
    if hi > lo {
        lo + (hi - lo) * rng.random::<f64>()
    } else {
        lo
    }
}

/// One output coordinate's two source taps and the weight of the second.
#[derive(Clone, Copy)]
struct Tap {
    lo: usize,
    hi: usize,
    w_hi: f32,
}

/// Bilinear taps for `n_out` samples of the source span `[start, start + len)` of an axis of
/// `n_src` pixels (pixel centres at `i + 0.5`, as `align_corners = false`), clamped at the edges.
fn taps(start: f64, len: f64, n_src: usize, n_out: usize) -> Vec<Tap> {
    let step = len / n_out as f64;
    let last = (n_src - 1) as f64;
    (0..n_out)
        .map(|o| {
            let s = (start + (o as f64 + 0.5) * step - 0.5).clamp(0.0, last);
            let lo = s.floor();
            Tap {
                lo: lo as usize,
                hi: (lo as usize + 1).min(n_src - 1),
                w_hi: (s - lo) as f32,
            }
        })
        .collect()
}

/// Writes `pixels` under `transform` into `out` (C × H × W, the shape [`output_shape`] gives).
pub(crate) fn render(
    pixels: &Pixels<'_>,
    transform: Option<&Transform>,
    rng: &mut dyn RngCore,
    out: &mut [f32],
) {
    let (c, h, w) = (pixels.channels, pixels.height, pixels.width);
    let src = &pixels.data[..];
    let [_, oh, ow] = output_shape(pixels, transform);
    debug_assert_eq!(out.len(), c * oh * ow);

    // Affine per channel: value = raw * a[c] + b[c].
    let mut a = vec![1.0 / pixels.max_value; c];
    let mut b = vec![0.0f32; c];
    if let Some(n) = transform.and_then(|t| t.normalize.as_ref()) {
        for ch in 0..c {
            let mean = n.mean[if n.mean.len() == 1 { 0 } else { ch }];
            let std = n.std[if n.std.len() == 1 { 0 } else { ch }];
            a[ch] /= std;
            b[ch] = -mean / std;
        }
    }

    if let Some(&Crop::RandomCrop { size, padding }) = transform.map(|t| &t.crop) {
        let (size, pad) = (size as usize, padding as usize);
        let y0 = rng.random_range(0..=(h + 2 * pad).saturating_sub(size));
        let x0 = rng.random_range(0..=(w + 2 * pad).saturating_sub(size));
        let flip = transform.is_some_and(|t| t.hflip) && rng.random::<bool>();
        // Output (oy, ox) reads source (oy + y0 - pad, ox + x0 - pad); outside the item the raw
        // value is 0 (the padding), normalised like any pixel.
        for oy in 0..oh {
            let sy = (oy + y0).checked_sub(pad).filter(|&y| y < h);
            for ox in 0..ow {
                let px = if flip { ow - 1 - ox } else { ox };
                let sx = (px + x0).checked_sub(pad).filter(|&x| x < w);
                for ch in 0..c {
                    let raw = match (sy, sx) {
                        (Some(y), Some(x)) => src[(y * w + x) * c + ch] as f32,
                        _ => 0.0,
                    };
                    out[(ch * oh + oy) * ow + ox] = raw * a[ch] + b[ch];
                }
            }
        }
        return;
    }

    let rect = match transform.map(|t| &t.crop) {
        None | Some(Crop::None) | Some(Crop::RandomCrop { .. }) => None,
        Some(&Crop::Center { resize, size }) => {
            // Shorter side -> `resize`, then the central `size` square: in source units the square
            // has side size / s, centred (torchvision rounds the crop origin the same way).
            let s = resize as f64 / h.min(w) as f64;
            let (rh, rw) = ((h as f64 * s).round(), (w as f64 * s).round());
            let side = size as f64;
            let top = ((rh - side) / 2.0).round();
            let left = ((rw - side) / 2.0).round();
            let (sy, sx) = (h as f64 / rh, w as f64 / rw);
            Some((left * sx, top * sy, side * sx, side * sy))
        }
        Some(&Crop::RandomResized { scale, ratio, .. }) => {
            Some(random_resized_rect(h, w, scale, ratio, rng))
        }
    };
    let flip = transform.is_some_and(|t| t.hflip) && rng.random::<bool>();

    match rect {
        None => {
            // Same size: a straight conversion, flipped if asked.
            for y in 0..h {
                let row = &src[y * w * c..(y + 1) * w * c];
                for x in 0..w {
                    let sx = if flip { w - 1 - x } else { x };
                    for ch in 0..c {
                        out[(ch * h + y) * w + x] = row[sx * c + ch] as f32 * a[ch] + b[ch];
                    }
                }
            }
        }
        Some((x0, y0, cw, chh)) => {
            let mut xt = taps(x0, cw, w, ow);
            if flip {
                xt.reverse();
            }
            let yt = taps(y0, chh, h, oh);
            let plane = oh * ow;
            for (oy, ty) in yt.iter().enumerate() {
                let r0 = &src[ty.lo * w * c..(ty.lo + 1) * w * c];
                let r1 = &src[ty.hi * w * c..(ty.hi + 1) * w * c];
                let wy = ty.w_hi;
                for (ox, tx) in xt.iter().enumerate() {
                    let (l, r, wx) = (tx.lo * c, tx.hi * c, tx.w_hi);
                    for ch in 0..c {
                        let top = r0[l + ch] as f32 + (r0[r + ch] as f32 - r0[l + ch] as f32) * wx;
                        let bot = r1[l + ch] as f32 + (r1[r + ch] as f32 - r1[l + ch] as f32) * wx;
                        let v = top + (bot - top) * wy;
                        out[ch * plane + oy * ow + ox] = v * a[ch] + b[ch];
                    }
                }
            }
        }
    }
}
