//! Writes what dml-data's centre-crop transform makes of a few images, as `.npy` files, so that
//! another implementation of it (scripts/compare_pml.py's, for the pytorch-metric-learning side
//! of docs/results.md) can be compared with it value by value.
//!
//! ```sh
//! cargo run --release -p dml-data --example transform_dump -- /tmp/tf [data/emoji]
//! .venv-ref/bin/python scripts/compare_pml.py --check-dml-transforms /tmp/tf
//! ```
//!
//! Into the folder (created if missing) go `cases.tsv` (one line per case: name, source,
//! resize, size, normalise), `rect_input.npy` (four non-square RGB images of 37 × 53 with
//! pseudo-random bytes, u8, N × H × W × C) and one `<name>.npy` per case (f32, N × C × H × W):
//! centre crops of the non-square images scaling up, down and not at all, and, when the emoji
//! set is there (`cargo xtask data emoji`), of its first eight held-out items with and without
//! the ImageNet normalisation.

use std::io::Write;
use std::path::Path;

use dml_data::{Crop, Dataset, InMemoryDataset, Normalize, Transform, load_batch};

/// `data` as a version-1.0 `.npy` file of `descr` (`<f4` or `|u1`) and `shape`.
fn write_npy(path: &Path, descr: &str, shape: &[usize], data: &[u8]) -> std::io::Result<()> {
    let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    let tuple = if dims.len() == 1 {
        format!("({},)", dims[0])
    } else {
        format!("({})", dims.join(", "))
    };
    let mut header = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {tuple}, }}");
    // Magic (6) + version (2) + length (2) + header + newline, padded to a multiple of 64.
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(' ');
    }
    header.push('\n');
    let mut f = std::fs::File::create(path)?;
    f.write_all(b"\x93NUMPY\x01\x00")?;
    f.write_all(&(header.len() as u16).to_le_bytes())?;
    f.write_all(header.as_bytes())?;
    f.write_all(data)
}

/// One case: the transform of `indices` of `set`, written as `<name>.npy` and listed in
/// `cases.tsv`.
fn case(
    out: &Path,
    cases: &mut String,
    (name, source): (&str, &str),
    set: &dyn Dataset,
    (resize, size, normalize): (u32, u32, bool),
) -> Result<(), Box<dyn std::error::Error>> {
    let tf = Transform {
        crop: Crop::Center { resize, size },
        hflip: false,
        normalize: normalize.then(Normalize::imagenet),
    };
    let indices: Vec<usize> = (0..set.len().min(8)).collect();
    let (batch, _) = load_batch(set, &indices, Some(&tf), 0)?;
    let bytes: Vec<u8> = batch.iter().flat_map(|v| v.to_le_bytes()).collect();
    write_npy(
        &out.join(format!("{name}.npy")),
        "<f4",
        batch.shape(),
        &bytes,
    )?;
    cases.push_str(&format!(
        "{name}\t{source}\t{resize}\t{size}\t{}\n",
        u8::from(normalize)
    ));
    Ok(())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let Some(out) = args.next() else {
        eprintln!("usage: transform_dump OUT_DIR [EMOJI_DIR (default data/emoji)]");
        std::process::exit(2);
    };
    let emoji_dir = args.next().unwrap_or_else(|| "data/emoji".to_owned());
    let out = Path::new(&out);
    std::fs::create_dir_all(out)?;
    let mut cases = String::from("name\tsource\tresize\tsize\tnormalize\n");

    // Non-square images of pseudo-random bytes (a 64-bit linear congruential generator).
    let (n, h, w, c) = (4usize, 37usize, 53usize, 3usize);
    let mut state = 12_345u64;
    let bytes: Vec<u8> = (0..n * h * w * c)
        .map(|_| {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (state >> 56) as u8
        })
        .collect();
    write_npy(&out.join("rect_input.npy"), "|u1", &[n, h, w, c], &bytes)?;
    let rect = InMemoryDataset::new(bytes, vec![0, 1, 2, 3], [c, h, w], 255.0)?;
    for (resize, size) in [(40, 32), (20, 16), (37, 37), (100, 90), (45, 50)] {
        let name = format!("rect_center_{resize}_{size}");
        case(
            out,
            &mut cases,
            (&name, "rect"),
            &rect,
            (resize, size, false),
        )?;
    }

    match dml_data::emoji(&emoji_dir) {
        Ok(split) => {
            for (resize, size, norm) in [
                (96, 80, true),
                (56, 48, true),
                (64, 64, true),
                (72, 64, false),
            ] {
                let name = format!("emoji_center_{resize}_{size}_{}", u8::from(norm));
                case(
                    out,
                    &mut cases,
                    (&name, "emoji"),
                    split.test.as_ref(),
                    (resize, size, norm),
                )?;
            }
        }
        Err(e) => eprintln!("emoji cases left out: {e}"),
    }
    std::fs::write(out.join("cases.tsv"), cases)?;
    println!("wrote {}", out.display());
    Ok(())
}
