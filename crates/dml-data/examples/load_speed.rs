//! Items per second of `load_batch` for the embedded digits, MNIST-size images and 224 × 224
//! crops of JPEG files: `cargo run --release -p dml-data --example load_speed`.

use std::time::Instant;

use dml_data::formats::{read_digits, read_idx_dir, read_image_folder};
use dml_data::{Dataset, InMemoryDataset, Transform, load_batch};

fn rate(name: &str, ds: &dyn Dataset, t: Option<&Transform>, batch: usize, rounds: usize) {
    let n = ds.len();
    let start = Instant::now();
    for r in 0..rounds {
        let idx: Vec<usize> = (0..batch).map(|i| (r * batch + i * 7919) % n).collect();
        let (b, _) = load_batch(ds, &idx, t, r as u64).expect("loads");
        std::hint::black_box(b);
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "{name:<40} {:>10.0} items/s ({} threads)",
        (rounds * batch) as f64 / secs,
        rayon::current_num_threads()
    );
}

fn main() {
    let digits = read_digits().expect("embedded");
    rate("digits 8x8, no transform", &digits, None, 256, 2000);

    let mnist = match read_idx_dir("data/mnist") {
        Ok(ds) => ds,
        Err(_) => {
            let data = (0..60_000 * 784).map(|i| (i % 251) as u8).collect();
            InMemoryDataset::new(data, vec![0; 60_000], [1, 28, 28], 255.0).expect("valid")
        }
    };
    rate("mnist 28x28, no transform", &mnist, None, 256, 400);
    let aug = Transform {
        crop: dml_data::Crop::RandomResized {
            size: 28,
            scale: (0.5, 1.0),
            ratio: (0.75, 1.333),
        },
        hflip: true,
        normalize: None,
    };
    rate(
        "mnist 28x28, random resized crop + flip",
        &mnist,
        Some(&aug),
        256,
        200,
    );

    let dir = tempfile::tempdir().expect("tempdir");
    for c in 0..4u8 {
        for i in 0..16u32 {
            let p = dir.path().join(format!("c{c}/{i}.jpg"));
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            image::RgbImage::from_fn(500, 375, |x, y| {
                image::Rgb([
                    (x * 3 + i) as u8,
                    (y * 5) as u8,
                    ((x ^ y) as u8).wrapping_add(c),
                ])
            })
            .save_with_format(&p, image::ImageFormat::Jpeg)
            .unwrap();
        }
    }
    let (jpegs, _) = read_image_folder(dir.path()).expect("folder");
    rate(
        "jpeg 500x375 -> train(224)",
        &jpegs,
        Some(&Transform::train(224)),
        64,
        10,
    );
    rate(
        "jpeg 500x375 -> eval(256, 224)",
        &jpegs,
        Some(&Transform::eval(256, 224)),
        64,
        10,
    );
}
