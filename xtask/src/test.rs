//! `cargo xtask test`: the project's one test command (README, `.ci/run`).

use std::time::Instant;

use anyhow::Result;

use crate::util::{cargo, run as sh};

#[derive(clap::Args)]
pub struct Args {
    /// Skip `cargo fmt --check`, clippy and the doc build (tests only).
    #[arg(long)]
    pub no_lint: bool,
}

/// Installs LibTorch if missing, then runs the cheapest checks first: fmt, clippy, docs, tests.
/// Ends with the wall time of each step, so a slow CI run shows where the time went.
pub fn run(args: &Args) -> Result<()> {
    let start = Instant::now();
    let mut steps: Vec<(&str, f64)> = Vec::new();
    let mut step = |name: &'static str, f: &mut dyn FnMut() -> Result<()>| -> Result<()> {
        let t = Instant::now();
        f()?;
        steps.push((name, t.elapsed().as_secs_f64()));
        Ok(())
    };
    step("libtorch", &mut || crate::libtorch::ensure_installed())?;
    if !args.no_lint {
        step("fmt", &mut || sh(cargo().args(["fmt", "--all", "--check"])))?;
        step("clippy", &mut || {
            sh(cargo().args([
                "clippy",
                "--workspace",
                "--all-targets",
                "--",
                "-D",
                "warnings",
            ]))
        })?;
        // Broken intra-doc links and malformed docs fail here rather than on docs.rs.
        step("doc", &mut || {
            sh(cargo()
                .args(["doc", "--workspace", "--no-deps"])
                .env("RUSTDOCFLAGS", "-D warnings"))
        })?;
    }
    step("test", &mut || sh(cargo().args(["test", "--workspace"])))?;
    let breakdown: Vec<String> = steps
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
