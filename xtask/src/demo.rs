//! `cargo xtask demo`: from a fresh checkout to a trained metric-learning model in one command.
//!
//! Installs LibTorch if it is missing, builds `dml` in release mode, trains the margin loss with
//! distance-weighted sampling on the 8×8 digits that ship in the repo (`configs/digits.toml`:
//! classes 0–4 train, 5–9 held out), and prints Recall@1/2/4/8 and NMI of the untrained and the
//! trained network on the held-out classes, with the paths of the plots.

use std::time::Instant;

use anyhow::{Context, Result};

use crate::util::{cargo, project_root, run as sh};

#[derive(clap::Args)]
pub struct Args {
    /// Epochs to train (default: the config's).
    #[arg(long)]
    pub epochs: Option<u64>,
    /// Output folder (default: the config's, runs/digits).
    #[arg(long)]
    pub output_dir: Option<std::path::PathBuf>,
}

pub fn run(args: &Args) -> Result<()> {
    let start = Instant::now();
    crate::libtorch::ensure_installed()?;
    sh(cargo().args(["build", "--release", "--package", "dml", "--bin", "dml"]))?;
    let root = project_root();
    let exe = root.join("target/release/dml");
    let mut cmd = std::process::Command::new(&exe);
    cmd.current_dir(&root)
        .args(["train", "--config", "configs/digits.toml"]);
    if let Some(e) = args.epochs {
        cmd.args(["--epochs", &e.to_string()]);
    }
    if let Some(d) = &args.output_dir {
        cmd.arg("--output-dir").arg(d);
    }
    let train_start = Instant::now();
    sh(&mut cmd).with_context(|| format!("the demo run of {} failed", exe.display()))?;
    eprintln!(
        "xtask demo: training and evaluation took {:.1} s ({:.0} s in all, build included)",
        train_start.elapsed().as_secs_f64(),
        start.elapsed().as_secs_f64()
    );
    Ok(())
}
