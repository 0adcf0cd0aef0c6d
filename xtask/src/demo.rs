//! `cargo xtask demo`: from a fresh checkout to a trained metric-learning model in one command.
//!
//! Installs LibTorch if it is missing, fetches MNIST (`cargo xtask data mnist`), builds `dml` in
//! release mode and trains the recipe of `configs/mnist.toml` (a ConvNet, multi-similarity loss
//! with its miner) for a short run: digits 0–4 train, the 34,265 images of digits 5–9 are held
//! out. It prints every metric for the raw input (L2-normalised pixels), the untrained network and
//! the trained network on the held-out digits, with the paths of the plots.
//!
//! `--digits` runs the offline quick start instead: margin loss with distance-weighted sampling
//! on the 8×8 digits that ship in the repo (`configs/digits.toml`), no download, a few seconds of
//! training (on those 896 held-out images the raw pixels retrieve better than the trained network;
//! it shows the pipeline, not learning).

use std::time::Instant;

use anyhow::{Context, Result};

use crate::util::{cargo, project_root, run as sh};

/// Epochs of the demo run: 500 of the 1,500 steps of `configs/mnist.toml`.
const DEMO_EPOCHS: u64 = 5;

#[derive(clap::Args)]
pub struct Args {
    /// The offline quick start: the embedded 8×8 digits (`configs/digits.toml`), no download.
    #[arg(long)]
    pub digits: bool,
    /// Epochs to train (default: 5 of 100 steps for MNIST, the config's for --digits).
    #[arg(long)]
    pub epochs: Option<u64>,
    /// Output folder (default: runs/demo, or the config's runs/digits for --digits).
    #[arg(long)]
    pub output_dir: Option<std::path::PathBuf>,
}

pub fn run(args: &Args) -> Result<()> {
    let start = Instant::now();
    crate::libtorch::ensure_installed()?;
    if !args.digits {
        crate::data::run(&crate::data::Args {
            name: crate::data::Name::Mnist,
            force: false,
            keep_different: false,
        })?;
    }
    sh(cargo().args(["build", "--release", "--package", "dml", "--bin", "dml"]))?;
    let root = project_root();
    let exe = root.join("target/release/dml");
    let mut cmd = std::process::Command::new(&exe);
    cmd.current_dir(&root).arg("train");
    if args.digits {
        cmd.args(["--config", "configs/digits.toml"]);
        if let Some(e) = args.epochs {
            cmd.args(["--epochs", &e.to_string()]);
        }
    } else {
        let epochs = args.epochs.unwrap_or(DEMO_EPOCHS);
        cmd.args([
            "--config",
            "configs/mnist.toml",
            "--epochs",
            &epochs.to_string(),
        ]);
        if args.output_dir.is_none() {
            cmd.args(["--output-dir", "runs/demo"]);
        }
    }
    if let Some(d) = &args.output_dir {
        cmd.arg("--output-dir").arg(d);
    }
    let train_start = Instant::now();
    sh(&mut cmd).with_context(|| format!("the demo run of {} failed", exe.display()))?;
    eprintln!(
        "xtask demo: training and evaluation took {:.1} s ({:.0} s in all, set-up and build included)",
        train_start.elapsed().as_secs_f64(),
        start.elapsed().as_secs_f64()
    );
    Ok(())
}
