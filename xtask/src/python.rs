//! `cargo xtask python`: the `dml` Python package (`crates/dml-python`) as a wheel in
//! `target/wheels/`, and the package's pytest suite for `cargo xtask test`.
//!
//! Both run from a venv this module keeps in the git-ignored `target/py-venv`, with maturin (the
//! build backend), numpy (the package's one dependency), pytest and mypy from PyPI, pinned. No
//! torch and no pytorch-metric-learning: the tests compare with committed fixtures
//! (`scripts/fixtures/dml_python_pml.py` made them) and with the Rust crates themselves.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::util::{cargo, project_root, python, run as sh};

/// What the venv holds, pinned so a test run is reproducible.
const REQUIREMENTS: [&str; 4] = [
    "maturin==1.16.0",
    "mypy==2.4.1",
    "numpy==2.4.6",
    "pytest==9.2.0",
];

#[derive(clap::Args)]
pub struct Args {
    /// A debug build (faster to compile, slower to run) instead of the release build.
    #[arg(long)]
    pub debug: bool,
}

/// Builds the wheel into `target/wheels/` and prints its path.
pub fn run(args: &Args) -> Result<()> {
    let venv = ensure_venv()?;
    let out = project_root().join("target").join("wheels");
    let wheel = build_wheel(&venv, !args.debug, &out)?;
    eprintln!(
        "wheel: {} (install with `pip install {}`)",
        wheel.display(),
        wheel.display()
    );
    Ok(())
}

/// The pytest suite of `crates/dml-python/tests` against a freshly built (debug) wheel
/// installed into the venv, with the Rust side of its Rust-API comparison built first.
pub fn test() -> Result<()> {
    let venv = ensure_venv()?;
    sh(cargo().args(["build", "-p", "dml-python", "--example", "rust_reference"]))?;
    let out = project_root().join("target").join("py-test-wheel");
    let wheel = build_wheel(&venv, false, &out)?;
    let py = venv.join("bin").join("python");
    sh(Command::new(&py)
        .args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--force-reinstall",
            "--no-deps",
        ])
        .arg(&wheel))?;
    let crate_dir = project_root().join("crates").join("dml-python");
    sh(Command::new(&py)
        .args(["-m", "pytest", "-q", "tests"])
        .current_dir(&crate_dir)
        .env(
            "DML_RUST_REFERENCE",
            project_root().join("target/debug/examples/rust_reference"),
        ))
}

/// `target/py-venv` with [`REQUIREMENTS`], created or updated when they changed.
fn ensure_venv() -> Result<PathBuf> {
    let venv = project_root().join("target").join("py-venv");
    let py = venv.join("bin").join("python");
    let stamp = venv.join("dml-requirements.txt");
    let wanted = REQUIREMENTS.join("\n");
    if py.exists() && std::fs::read_to_string(&stamp).is_ok_and(|s| s == wanted) {
        return Ok(venv);
    }
    eprintln!(
        "setting up the Python test venv in {} ({})",
        venv.display(),
        REQUIREMENTS.join(", ")
    );
    if !py.exists() {
        sh(Command::new(python()).args(["-m", "venv"]).arg(&venv))
            .context("creating the Python venv (needs python3 with the venv module)")?;
    }
    sh(Command::new(&py)
        .args(["-m", "pip", "install", "--quiet", "--progress-bar", "off"])
        .args(REQUIREMENTS))?;
    std::fs::write(&stamp, wanted).with_context(|| format!("writing {}", stamp.display()))?;
    Ok(venv)
}

/// Runs maturin on `crates/dml-python` and returns the wheel it wrote into `out` (emptied of
/// earlier `dml` wheels first, so the one left is this build's).
fn build_wheel(venv: &Path, release: bool, out: &Path) -> Result<PathBuf> {
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    for entry in std::fs::read_dir(out)? {
        let path = entry?.path();
        if is_dml_wheel(&path) {
            std::fs::remove_file(&path)?;
        }
    }
    let root = project_root();
    let mut cmd = Command::new(venv.join("bin").join("maturin"));
    cmd.current_dir(&root)
        .args(["build", "--manifest-path", "crates/dml-python/Cargo.toml"])
        .arg("--interpreter")
        .arg(venv.join("bin").join("python"))
        .arg("--out")
        .arg(out);
    if release {
        cmd.arg("--release");
    }
    sh(&mut cmd)?;
    let wheels: Vec<PathBuf> = std::fs::read_dir(out)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| is_dml_wheel(p))
        .collect();
    match &wheels[..] {
        [one] => Ok(one.clone()),
        _ => bail!(
            "expected one dml wheel in {} after the build, found {}",
            out.display(),
            wheels.len()
        ),
    }
}

fn is_dml_wheel(path: &Path) -> bool {
    path.extension().is_some_and(|e| e == "whl")
        && path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with("dml-"))
}
