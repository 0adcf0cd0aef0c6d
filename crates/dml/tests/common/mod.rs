//! Data sets the facade's test crates build on disk.
// Each test crate uses its own part of these helpers.
#![allow(dead_code)]

use std::path::Path;

/// The glyph task (train.rs, `training_raises_held_out_map_at_r_over_the_untrained_network`)
/// as IDX files in `dir`: 10 classes × 60 images of 12 × 12
/// pixels; noise 0–59 everywhere, the class's 4 × 4 glyph (each cell on with probability 1/2)
/// at 255 at a uniformly random offset.
pub fn glyph_idx(dir: &Path) {
    let mut next = xorshift(0x9E37_79B9_7F4A_7C15u64);
    let (classes, per_class, side, g) = (10usize, 60usize, 12usize, 4usize);
    let glyphs: Vec<Vec<bool>> = (0..classes)
        .map(|_| (0..g * g).map(|_| next() % 2 == 1).collect())
        .collect();
    let mut images = Vec::new();
    let mut labels = Vec::new();
    for i in 0..classes * per_class {
        let c = i % classes;
        let mut img: Vec<u8> = (0..side * side).map(|_| (next() % 60) as u8).collect();
        let span = (side - g + 1) as u64;
        let (oy, ox) = ((next() % span) as usize, (next() % span) as usize);
        for y in 0..g {
            for x in 0..g {
                if glyphs[c][y * g + x] {
                    img[(oy + y) * side + ox + x] = 255;
                }
            }
        }
        images.extend(img);
        labels.push(c as u8);
    }
    write_idx_dir(dir, side, &images, &labels);
}

/// Marsaglia's xorshift64 from `state` (non-zero): the test data sets' pseudo-random stream.
pub fn xorshift(mut state: u64) -> impl FnMut() -> u64 {
    move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    }
}

/// `images` (side × side each, concatenated) and their `labels` as an IDX folder in `dir`: all in
/// the `train-*` files, empty `t10k-*` files (dml-data joins the two).
pub fn write_idx_dir(dir: &Path, side: usize, images: &[u8], labels: &[u8]) {
    let (n, s) = (labels.len() as u32, side as u32);
    let write = |name: &str, bytes: Vec<u8>| std::fs::write(dir.join(name), bytes).unwrap();
    write("train-images-idx3-ubyte", idx_bytes(&[n, s, s], images));
    write("train-labels-idx1-ubyte", idx_bytes(&[n], labels));
    write("t10k-images-idx3-ubyte", idx_bytes(&[0, s, s], &[]));
    write("t10k-labels-idx1-ubyte", idx_bytes(&[0], &[]));
}

pub fn idx_bytes(dims: &[u32], data: &[u8]) -> Vec<u8> {
    let mut b = vec![0, 0, 0x08, dims.len() as u8];
    for d in dims {
        b.extend_from_slice(&d.to_be_bytes());
    }
    b.extend_from_slice(data);
    b
}

/// `classes` × `per_class` RGB PNG images of `side` × `side` pixels in one folder per class
/// (`c<class>/<i>.png`) under `dir`: strong noise over a faint colour of the class's own, so
/// classes can be told apart, but not perfectly.
pub fn rgb_folder(dir: &Path, classes: u32, per_class: u32, side: u32) {
    let mut next = xorshift(0x0DD5_EED5_1234_5678);
    for class in 0..classes {
        let base = [(class * 13) % 48, (class * 29) % 48, (class * 7) % 48];
        for i in 0..per_class {
            let path = dir.join(format!("c{class}/{i}.png"));
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            let img = image::RgbImage::from_fn(side, side, |_, _| {
                let mut px = [0u8; 3];
                for (p, b) in px.iter_mut().zip(base) {
                    *p = (b + (next() % 200) as u32) as u8;
                }
                image::Rgb(px)
            });
            img.save(&path).unwrap();
        }
    }
}
