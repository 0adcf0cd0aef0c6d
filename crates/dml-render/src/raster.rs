//! Pixels: PNG decoding to RGBA, SVG rasterising, compositing on the background.
//!
//! Everything here is integer arithmetic on bytes, except resvg's rasteriser, which is
//! tiny-skia's fixed pipeline; both give the same bytes on every machine for the same input.

use std::path::Path;

use resvg::{tiny_skia, usvg};

use crate::{Error, Result};

/// Decodes a PNG of any colour type (RGBA, RGB, grey, grey + alpha, 1/2/4/8-bit palettes with
/// or without transparency, 16-bit) to straight (not premultiplied) RGBA8; returns
/// `(width, height, pixels)`. `path` names the file in errors.
pub fn decode_png_rgba(bytes: &[u8], path: &Path) -> Result<(usize, usize, Vec<u8>)> {
    let img = image::load_from_memory_with_format(bytes, image::ImageFormat::Png)
        .map_err(|source| Error::Png {
            path: path.to_path_buf(),
            source,
        })?
        .into_rgba8();
    let (w, h) = img.dimensions();
    Ok((w as usize, h as usize, img.into_raw()))
}

/// `round(a * b / 255)` for bytes, exactly.
fn mul_div255(a: u8, b: u8) -> u8 {
    let t = a as u32 * b as u32 + 128;
    ((t + (t >> 8)) >> 8) as u8
}

/// Straight RGBA8 to premultiplied RGBA8 (colour × alpha / 255, rounded), in place.
pub fn premultiply(rgba: &mut [u8]) {
    for px in rgba.chunks_exact_mut(4) {
        let a = px[3];
        for v in &mut px[..3] {
            *v = mul_div255(*v, a);
        }
    }
}

/// Premultiplied RGBA8 composited over an opaque grey `background`: RGB8, each channel
/// `colour + background × (255 − alpha) / 255` (rounded), so a transparent pixel becomes the
/// background and an opaque one keeps its colour.
pub fn over_background(premultiplied: &[u8], background: u8) -> Vec<u8> {
    premultiplied
        .chunks_exact(4)
        .flat_map(|px| {
            let under = mul_div255(background, 255 - px[3]);
            [
                px[0].saturating_add(under),
                px[1].saturating_add(under),
                px[2].saturating_add(under),
            ]
        })
        .collect()
}

/// Rasterises an SVG document into a `side` × `side` premultiplied RGBA8 image, its viewport
/// scaled to fill the square (the aspect ratio kept, centred). `path` names the file in errors.
pub fn render_svg(bytes: &[u8], side: usize, path: &Path) -> Result<Vec<u8>> {
    let tree =
        usvg::Tree::from_data(bytes, &usvg::Options::default()).map_err(|source| Error::Svg {
            path: path.to_path_buf(),
            source,
        })?;
    let size = tree.size();
    let (w, h) = (size.width(), size.height());
    let s = side as f32 / w.max(h);
    let (tx, ty) = ((side as f32 - w * s) / 2.0, (side as f32 - h * s) / 2.0);
    let mut pixmap = tiny_skia::Pixmap::new(side as u32, side as u32)
        .ok_or_else(|| Error::malformed(path, format!("cannot make a {side} px canvas")))?;
    resvg::render(
        &tree,
        tiny_skia::Transform::from_row(s, 0.0, 0.0, s, tx, ty),
        &mut pixmap.as_mut(),
    );
    Ok(pixmap.take())
}

/// How many pixels differ from `background` by at least `threshold` in some channel: the ink
/// of a drawing, which tells an empty or invisible one.
pub fn ink_pixels(pixels: &[u8], channels: usize, background: u8, threshold: u8) -> usize {
    pixels
        .chunks_exact(channels)
        .filter(|px| px.iter().any(|&v| v.abs_diff(background) >= threshold))
        .count()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mul_div255_rounds_exactly() {
        for a in 0..=255u8 {
            for b in 0..=255u8 {
                let exact = (a as f64 * b as f64 / 255.0).round() as u8;
                assert_eq!(mul_div255(a, b), exact, "{a} * {b} / 255");
            }
        }
    }

    #[test]
    fn compositing_by_hand() {
        // Opaque red, transparent anything, half-transparent white (premultiplied 128).
        let premul = [255, 0, 0, 255, 0, 0, 0, 0, 128, 128, 128, 128];
        // 128 + 128 * 127 / 255 = 128 + 63.75 -> 192.
        assert_eq!(
            over_background(&premul, 128),
            vec![255, 0, 0, 128, 128, 128, 192, 192, 192]
        );
        let mut straight = [200, 100, 0, 51];
        premultiply(&mut straight);
        // 200 * 51 / 255 = 40, 100 * 51 / 255 = 20.
        assert_eq!(straight, [40, 20, 0, 51]);
    }
}
