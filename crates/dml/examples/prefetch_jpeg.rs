//! Does loading the next batch on its own thread (`train.prefetch`) pay on a folder of JPEGs?
//!
//! Writes an image folder of generated 256 × 256 JPEGs, then trains the same run (ResNet-18,
//! P 8 × K 8 = 64 items, random resized crop to 128 and flip, Adam, no evaluation) with
//! prefetch off and on, alternating, and prints the training items per second of each:
//!
//! ```sh
//! cargo run --release -p dml --example prefetch_jpeg -- [images] [steps] [rounds]
//! ```
//!
//! Defaults: 2,000 images in 20 classes, 12 steps per run, 2 rounds. The numbers of
//! docs/training.md (`[train] prefetch`) come from it.

use std::time::Instant;

use dml::{Config, Trainer};

fn main() -> anyhow::Result<()> {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .map(|a| a.parse())
        .collect::<Result<_, _>>()?;
    let images = args.first().copied().unwrap_or(2_000);
    let steps = args.get(1).copied().unwrap_or(12);
    let rounds = args.get(2).copied().unwrap_or(2);
    let classes = 20;

    let data = tempfile::tempdir()?;
    let start = Instant::now();
    for i in 0..images {
        let c = i % classes;
        let path = data.path().join(format!("class{c:02}/{i:05}.jpg"));
        std::fs::create_dir_all(path.parent().expect("a folder"))?;
        let (a, b) = (c as u32 * 13, i as u32 * 7);
        image::RgbImage::from_fn(256, 256, |x, y| {
            image::Rgb([
                ((x + a) ^ (y + b)) as u8,
                (x * 3 + y + a) as u8,
                ((x * y) >> 5).wrapping_add(b) as u8,
            ])
        })
        .save_with_format(&path, image::ImageFormat::Jpeg)?;
    }
    eprintln!(
        "wrote {images} JPEGs of 256 x 256 in {:.1} s",
        start.elapsed().as_secs_f64()
    );

    let out = tempfile::tempdir()?;
    let text = format!(
        r#"
[run]
name = "prefetch-jpeg"
seed = 0
device = "cpu"
output_dir = {out:?}

[data]
kind = "image_folder"
root = {root:?}

[transform.train]
hflip = true
crop = {{ kind = "random_resized", size = 128, scale = [0.08, 1.0], ratio = [0.75, 1.3333333] }}
normalize = {{ mean = [0.485, 0.456, 0.406], std = [0.229, 0.224, 0.225] }}

[transform.test]
crop = {{ kind = "center", resize = 146, size = 128 }}

[model]
kind = "resnet18"
embedding_dim = 128

[batch]
p = 8
k = 8
batches_per_epoch = {steps}

[miner]
kind = "multi_similarity"

[loss]
kind = "multi_similarity"

[train]
epochs = 1
eval_every = 0
eval_before = false
progress = false
plots = false

[eval]
raw_input = false
"#,
        out = out.path().display().to_string(),
        root = data.path().display().to_string(),
    );
    println!("| round | prefetch | steps | train s | items/s |");
    println!("|---|---|--:|--:|--:|");
    let mut rates = [Vec::new(), Vec::new()];
    for round in 0..rounds {
        // Alternate which side goes first, so drift in the machine's speed hits both.
        let order = if round % 2 == 0 {
            [false, true]
        } else {
            [true, false]
        };
        for prefetch in order {
            let mut config = Config::from_toml_str(&text, "<prefetch_jpeg>")?;
            config.train.prefetch = prefetch;
            let dir = out.path().join(format!("r{round}-{prefetch}"));
            config.run.output_dir = Some(dir);
            config.validate()?;
            let report = Trainer::new(config)?.fit()?;
            let rate = (steps * 64) as f64 / report.train_seconds;
            rates[usize::from(prefetch)].push(rate);
            println!(
                "| {round} | {} | {steps} | {:.1} | {rate:.1} |",
                if prefetch { "on" } else { "off" },
                report.train_seconds
            );
        }
    }
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    println!(
        "\nprefetch on / off: {:.3} (items/s {:.1} against {:.1})",
        mean(&rates[1]) / mean(&rates[0]),
        mean(&rates[1]),
        mean(&rates[0])
    );
    Ok(())
}
