//! `cargo xtask test`: the project's one test command (README, `.ci/run`).

use std::process::Command;
use std::time::Instant;

use anyhow::Result;

use crate::util::{cargo, run as sh};

#[derive(clap::Args)]
pub struct Args {
    /// Skip `cargo fmt --check`, clippy and the doc build (tests only).
    #[arg(long)]
    pub no_lint: bool,
}

/// Installs LibTorch and the ImageNet weights the tests use if missing, then runs the cheapest
/// checks first: fmt, clippy, docs, tests, and last the Python package's pytest suite (in a venv
/// of its own, against a wheel built by maturin). Ends with the wall time of each step, so a slow
/// CI run shows where the time went.
pub fn run(args: &Args) -> Result<()> {
    let start = Instant::now();
    crate::libtorch::ensure_installed()?;
    let mut times = vec![("libtorch", start.elapsed().as_secs_f64())];
    // The pretrained-backbone tests compare against PyTorch with the real ImageNet weights.
    let t = Instant::now();
    crate::weights::ensure(crate::weights::Name::MobilenetV2, false)?;
    crate::weights::ensure(crate::weights::Name::EfficientnetLite0, false)?;
    times.push(("weights", t.elapsed().as_secs_f64()));

    let mut steps: Vec<(&str, Command)> = Vec::new();
    if !args.no_lint {
        steps.push(("fmt", cargo_with(&["fmt", "--all", "--check"])));
        steps.push((
            "clippy",
            cargo_with(&[
                "clippy",
                "--workspace",
                "--all-targets",
                "--",
                "-D",
                "warnings",
            ]),
        ));
        // Broken intra-doc links and malformed docs fail here rather than on docs.rs.
        let mut doc = cargo_with(&["doc", "--workspace", "--no-deps"]);
        doc.env("RUSTDOCFLAGS", "-D warnings");
        steps.push(("doc", doc));
    }
    steps.push(("test", cargo_with(&["test", "--workspace"])));
    for (name, mut cmd) in steps {
        let t = Instant::now();
        sh(&mut cmd)?;
        times.push((name, t.elapsed().as_secs_f64()));
    }
    let t = Instant::now();
    crate::python::test()?;
    times.push(("python", t.elapsed().as_secs_f64()));

    let breakdown: Vec<String> = times
        .iter()
        .map(|(name, secs)| format!("{name} {secs:.0} s"))
        .collect();
    eprintln!(
        "xtask test: all checks passed in {:.0} s ({})",
        start.elapsed().as_secs_f64(),
        breakdown.join(", ")
    );
    Ok(())
}

/// `cargo` with these arguments.
fn cargo_with(args: &[&str]) -> Command {
    let mut cmd = cargo();
    cmd.args(args);
    cmd
}
