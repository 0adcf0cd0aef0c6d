//! `cargo xtask bench`: the criterion benches of every layer, then the report.
//!
//! Two steps, both in the `bench` profile so everything compiles once:
//! 1. `cargo bench -p dml-benches --bench kernels --bench mining ...`: criterion measures each
//!    case and writes its estimates under `target/criterion/`.
//! 2. `cargo bench -p dml-benches --bench runner -- report`: reads those estimates, measures
//!    peak memory in child processes, with `--compare` times the Python reference (pml, faiss,
//!    numpy, torch) on the same inputs alternately with dml, and writes the table:
//!    `docs/benchmarks.md` for a full run of every case, `target/dml-bench/` otherwise.
//!
//! `--collectives` runs only the collective bandwidth comparison instead: it builds the
//! `collectives` example of dml-benches in the `bench` profile and runs it with the reference
//! venv's Python, which alternates dml-distributed and `torch.distributed` (Gloo) between two
//! local processes and writes `target/dml-bench/collectives.md`.

use std::path::PathBuf;
use std::process::Command;

use anyhow::Result;

use crate::util::{cargo, project_root, run as sh};

/// The criterion targets of `benches/`, one per layer.
const TOPICS: [&str; 5] = ["kernels", "mining", "losses", "train", "eval"];

#[derive(clap::Args)]
pub struct Args {
    /// Smoke run: tiny sizes, few samples, about a minute; the report goes to target/dml-bench/.
    #[arg(long)]
    pub quick: bool,
    /// Also time the Python reference stack (set up in .venv-ref if missing) on the same inputs.
    #[arg(long)]
    pub compare: bool,
    /// Only the cases whose id (`topic/function/sizes`) contains this text; `a|b` for either
    /// (criterion reads it as a regex, the report as `|`-separated alternatives).
    #[arg(long)]
    pub filter: Option<String>,
    /// Skip criterion and only rebuild the report from its last estimates (and the comparison).
    #[arg(long)]
    pub report_only: bool,
    /// Only the collective bandwidth comparison (all-reduce, all-gather at 1/16/128 MiB between
    /// two local processes, dml against torch.distributed with Gloo, alternating) ->
    /// target/dml-bench/collectives.md. With --quick: one round at half the calls.
    #[arg(long)]
    pub collectives: bool,
}

pub fn run(args: &Args) -> Result<()> {
    crate::libtorch::ensure_installed()?;
    if args.collectives {
        return collectives(args.quick);
    }
    let python = if args.compare {
        Some(crate::pyref::ensure()?)
    } else {
        None
    };
    let root = project_root();
    let scale = if args.quick { "quick" } else { "full" };
    let criterion_home = root.join("target").join("criterion");
    // The evaluation of raw Fashion-MNIST images (a full run's case): the data set once, from
    // its Debian package; without it that case is left out, the rest runs.
    let fetched = (!args.quick).then(|| {
        crate::data::run(&crate::data::Args {
            name: crate::data::Name::FashionMnist,
            force: false,
            keep_different: false,
        })
    });
    let fashion_mnist = match fetched {
        Some(Ok(())) => Some(root.join("data").join("fashion-mnist")),
        Some(Err(e)) => {
            eprintln!("xtask bench: no Fashion-MNIST ({e:#}); its evaluation is left out");
            None
        }
        None => None,
    };

    if !args.report_only {
        let mut cmd = cargo();
        cmd.args(["bench", "-p", "dml-benches"]);
        for topic in TOPICS {
            cmd.args(["--bench", topic]);
        }
        if let Some(filter) = &args.filter {
            cmd.args(["--", filter]);
        }
        cmd.env("DML_BENCH_SCALE", scale)
            .env("CRITERION_HOME", &criterion_home);
        if let Some(dir) = &fashion_mnist {
            cmd.env("DML_BENCH_FASHION_MNIST", dir);
        }
        sh(&mut cmd)?;
    }

    let out: PathBuf = if args.quick || args.filter.is_some() {
        root.join("target")
            .join("dml-bench")
            .join(format!("benchmarks-{scale}.md"))
    } else {
        root.join("docs").join("benchmarks.md")
    };
    let mut cmd = cargo();
    cmd.args([
        "bench",
        "-p",
        "dml-benches",
        "--bench",
        "runner",
        "--",
        "report",
    ])
    .arg("--out")
    .arg(&out)
    .arg("--criterion-dir")
    .arg(&criterion_home);
    if let Some(py) = &python {
        cmd.arg("--compare").arg(py);
    }
    if let Some(filter) = &args.filter {
        cmd.args(["--filter", filter]);
    }
    cmd.env("DML_BENCH_SCALE", scale)
        .env("CRITERION_HOME", &criterion_home);
    if let Some(dir) = &fashion_mnist {
        cmd.env("DML_BENCH_FASHION_MNIST", dir);
    }
    sh(&mut cmd)?;
    eprintln!("xtask bench: report in {}", out.display());
    Ok(())
}

/// The collective bandwidth comparison: the example alternates the sides and writes the table.
fn collectives(quick: bool) -> Result<()> {
    let python = crate::pyref::ensure()?;
    let root = project_root();
    let out = root.join("target").join("dml-bench").join("collectives.md");
    sh(cargo().args([
        "build",
        "--profile",
        "bench",
        "-p",
        "dml-benches",
        "--example",
        "collectives",
    ]))?;
    // The bench profile builds into target/release.
    let exe = root
        .join("target")
        .join("release")
        .join("examples")
        .join("collectives");
    let mut cmd = Command::new(&exe);
    cmd.current_dir(&root)
        .arg("--compare")
        .arg(&python)
        .arg("--out")
        .arg(&out);
    if quick {
        cmd.args(["--rounds", "1", "--reps", "0.5"]);
    }
    sh(&mut cmd)?;
    eprintln!("xtask bench: collectives table in {}", out.display());
    Ok(())
}
