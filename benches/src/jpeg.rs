//! The JPEG-folder training workload, shared by the `steps_resnet18_jpeg_folder` bench case and
//! the `prefetch_jpeg` example: a generated image folder and the `dml train` config that reads it.

use std::path::Path;

use anyhow::Context;

/// Writes `root/classNN/IIIII.jpg`: `sizes[c]` JPEGs of `side × side` for class `c`, each a
/// deterministic pattern of its class and index.
pub fn write_folder(root: &Path, sizes: &[usize], side: u32) -> anyhow::Result<()> {
    for (c, &n) in sizes.iter().enumerate() {
        for i in 0..n {
            let path = root.join(format!("class{c:02}/{i:05}.jpg"));
            std::fs::create_dir_all(path.parent().context("a folder")?)?;
            let (a, b) = (c as u32 * 13, i as u32 * 7);
            image::RgbImage::from_fn(side, side, |x, y| {
                image::Rgb([
                    ((x + a) ^ (y + b)) as u8,
                    (x * 3 + y + a) as u8,
                    ((x * y) >> 5).wrapping_add(b) as u8,
                ])
            })
            .save_with_format(&path, image::ImageFormat::Jpeg)?;
        }
    }
    Ok(())
}

/// Class sizes of the workload: ten training classes sharing `n_train` images, and ten
/// held-out classes of two images, so the evaluation that ends a `dml train` run costs next to
/// nothing.
pub fn class_sizes(n_train: usize) -> Vec<usize> {
    let mut sizes = vec![n_train / 10; 10];
    sizes.extend([2; 10]);
    sizes
}

/// The number of training classes of [`class_sizes`] (the class-disjoint split's first half).
pub const TRAIN_CLASSES: usize = 10;

/// The `dml train` config of the workload on the folder at `root`: random resized crop to
/// `crop` and flip, ResNet-18 to 128-d, P `p` × K `k`, multi-similarity miner and loss, Adam,
/// one epoch of `steps` batches, no evaluation before and no raw-input baseline or NMI after.
pub fn config(
    root: &Path,
    crop: u32,
    p: usize,
    k: usize,
    steps: usize,
) -> anyhow::Result<dml::Config> {
    let text = format!(
        r#"
[run]
name = "bench-jpeg"
device = "cpu"
[data]
kind = "image_folder"
root = {root:?}
[transform.train]
hflip = true
crop = {{ kind = "random_resized", size = {crop}, scale = [0.08, 1.0], ratio = [0.75, 1.3333333] }}
normalize = {{ mean = [0.485, 0.456, 0.406], std = [0.229, 0.224, 0.225] }}
[transform.test]
crop = {{ kind = "center", resize = {crop}, size = {crop} }}
[model]
kind = "resnet18"
embedding_dim = 128
[batch]
p = {p}
k = {k}
batches_per_epoch = {steps}
[miner]
kind = "multi_similarity"
[loss]
kind = "multi_similarity"
[train]
epochs = 1
eval_before = false
progress = false
plots = false
[eval]
raw_input = false
nmi = false
"#,
        root = root.display().to_string(),
    );
    let config = dml::Config::from_toml_str(&text, "<jpeg workload>")?;
    config.validate()?;
    Ok(config)
}
