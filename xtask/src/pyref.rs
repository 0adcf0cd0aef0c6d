//! `cargo xtask pyref`: the Python reference stack (torch at our LibTorch version, torchvision,
//! pytorch-metric-learning, faiss-cpu, numpy, scikit-learn, and open-metric-learning without its
//! dependencies) in the git-ignored venv `.venv-ref`.
//!
//! It generates the golden fixtures that the Rust tests compare against (scripts in `scripts/`)
//! and runs the reference side of `cargo xtask bench --compare`. Tests never need it: the
//! fixtures they read are committed.

use std::path::PathBuf;
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::libtorch::TORCH_VERSION;
use crate::util::{project_root, python, run as sh};

/// The packages of the reference stack, pinned so fixtures and timings are reproducible.
pub fn requirements() -> Vec<String> {
    vec![
        format!("torch=={TORCH_VERSION}"),
        "pytorch-metric-learning==2.9.0".to_owned(),
        "faiss-cpu==1.15.1".to_owned(),
        "numpy==2.4.6".to_owned(),
        "scikit-learn==1.9.1".to_owned(),
        // The JPEG-folder training bench: its DataLoader transforms and ResNet-18.
        "torchvision==0.28.0".to_owned(),
        "pillow==13.0.0".to_owned(),
    ]
}

/// Reference packages installed without their dependencies: open-metric-learning's package
/// pulls in Lightning, pandas and more, none of which its functional metrics use
/// (`scripts/fixtures/dml_eval_ranking.py` loads those alone).
pub fn requirements_no_deps() -> Vec<String> {
    vec!["open-metric-learning==4.0.0".to_owned()]
}

#[derive(clap::Args)]
pub struct Args {}

pub fn run(_args: &Args) -> Result<()> {
    let py = ensure()?;
    eprintln!("reference Python stack ready: {}", py.display());
    Ok(())
}

/// The venv's Python, installing the stack first if it is missing or incomplete.
pub fn ensure() -> Result<PathBuf> {
    let venv = project_root().join(".venv-ref");
    let py = venv.join("bin/python");
    let check =
        "import torch, torchvision, PIL, pytorch_metric_learning, faiss, numpy, sklearn, oml; \
                 assert torch.__version__.split('+')[0] == '"
            .to_owned()
            + TORCH_VERSION
            + "'";
    let ok = py.exists()
        && Command::new(&py)
            .args(["-c", &check])
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false);
    if ok {
        return Ok(py);
    }
    eprintln!(
        "setting up the Python reference stack in {} (about 3 GB: torch brings its CUDA packages)",
        venv.display()
    );
    if !py.exists() {
        sh(Command::new(python()).args(["-m", "venv"]).arg(&venv))
            .context("creating the reference venv (needs python3 with the venv module)")?;
    }
    sh(Command::new(&py)
        .args(["-m", "pip", "install", "--progress-bar", "off"])
        .args(requirements()))?;
    sh(Command::new(&py)
        .args(["-m", "pip", "install", "--progress-bar", "off", "--no-deps"])
        .args(requirements_no_deps()))?;
    let out = Command::new(&py).args(["-c", &check]).output()?;
    if !out.status.success() {
        bail!(
            "the reference stack does not import: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(py)
}
