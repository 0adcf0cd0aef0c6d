//! Does loading the next batch on its own thread (`train.prefetch`) pay on a folder of JPEGs?
//!
//! Trains the workload of the `steps_resnet18_jpeg_folder` bench case (`dml_benches::jpeg`:
//! generated 256 × 256 JPEGs, random resized crop to 128 and flip, ResNet-18, P 8 × K 8 = 64,
//! multi-similarity, Adam) with prefetch off and on, alternating, and prints the training items
//! per second of each, after one untimed warm-up run:
//!
//! ```sh
//! cargo run --release -p dml-benches --example prefetch_jpeg -- [training images] [steps] [rounds]
//! ```
//!
//! Defaults: 2,000 training images, 10 steps per run, 4 rounds. The numbers of
//! docs/training.md (`[train] prefetch`) come from it.

use std::time::Instant;

use dml::Trainer;
use dml_benches::jpeg;

fn main() -> anyhow::Result<()> {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .map(|a| a.parse())
        .collect::<Result<_, _>>()?;
    let images = args.first().copied().unwrap_or(2_000);
    let steps = args.get(1).copied().unwrap_or(10);
    let rounds = args.get(2).copied().unwrap_or(4);
    let (p, k) = (8, 8);

    let data = tempfile::tempdir()?;
    let start = Instant::now();
    jpeg::write_folder(data.path(), &jpeg::class_sizes(images), 256)?;
    eprintln!(
        "wrote {images} training JPEGs of 256 x 256 in {:.1} s",
        start.elapsed().as_secs_f64()
    );
    let base = jpeg::config(data.path(), 128, p, k, steps)?;
    let out = tempfile::tempdir()?;
    // One untimed run first: the first run of a process pays for cold file caches and
    // LibTorch's first allocations, which would otherwise count against whichever side goes first.
    let mut warm_up = base.clone();
    warm_up.run.output_dir = Some(out.path().join("warm-up"));
    Trainer::new(warm_up)?.fit()?;
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
            let mut config = base.clone();
            config.train.prefetch = prefetch;
            config.run.output_dir = Some(out.path().join(format!("r{round}-{prefetch}")));
            let report = Trainer::new(config)?.fit()?;
            let rate = (steps * p * k) as f64 / report.train_seconds;
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
