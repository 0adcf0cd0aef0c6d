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
pub fn run(args: &Args) -> Result<()> {
    let start = Instant::now();
    crate::libtorch::ensure_installed()?;
    if !args.no_lint {
        sh(cargo().args(["fmt", "--all", "--check"]))?;
        sh(cargo().args([
            "clippy",
            "--workspace",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ]))?;
        // Broken intra-doc links and malformed docs fail here rather than on docs.rs.
        sh(cargo()
            .args(["doc", "--workspace", "--no-deps"])
            .env("RUSTDOCFLAGS", "-D warnings"))?;
    }
    sh(cargo().args(["test", "--workspace"]))?;
    eprintln!(
        "xtask test: all checks passed in {:.0} s",
        start.elapsed().as_secs_f64()
    );
    Ok(())
}
