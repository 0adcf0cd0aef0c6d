//! The benchmarks of dml: one list of cases shared by the criterion targets (`benches/*.rs`, one
//! per layer), the comparison runner (`benches/runner.rs`) and the smoke test.
//!
//! A [`Case`] names one measured operation (its layer, what it does, its sizes) and knows how to
//! build its inputs outside the timed region; [`Case::prepare`] returns a [`Prepared`] whose `run`
//! is the timed closure, plus the [`Reference`] equivalent in the Python stack (numpy, faiss,
//! pytorch-metric-learning) with the very arrays the dml side uses, so `--compare` times both on
//! the same data.
//!
//! Run it through `cargo xtask bench` (`--quick` for a one-minute smoke run, `--compare` for the
//! side-by-side table); `cargo bench -p dml-benches --bench kernels` runs one layer on its own.
//!
//! ```
//! use dml_benches::{Scale, cases};
//!
//! for case in cases(Scale::Quick).iter().filter(|c| c.function == "pairwise_euclidean") {
//!     let mut prepared = case.prepare()?;
//!     (prepared.run)()?;
//! }
//! # Ok::<(), anyhow::Error>(())
//! ```

#![warn(missing_docs)]

use std::fmt;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, SamplingMode, Throughput};

mod cases;
pub mod data;
pub mod jpeg;
pub mod measure;
pub mod report;

pub use crate::cases::cases;

/// How big the inputs are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scale {
    /// Tiny inputs and few samples: the smoke run (`--quick`), about a minute in all.
    Quick,
    /// The sizes the published table is about.
    Full,
}

impl Scale {
    /// `Quick` when `DML_BENCH_SCALE=quick`, `Full` otherwise.
    pub fn from_env() -> Self {
        match std::env::var("DML_BENCH_SCALE").as_deref() {
            Ok("quick") => Scale::Quick,
            _ => Scale::Full,
        }
    }

    /// `quick` or `full`.
    pub fn name(self) -> &'static str {
        match self {
            Scale::Quick => "quick",
            Scale::Full => "full",
        }
    }
}

/// The layer a case measures; one criterion target each.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Topic {
    /// dml-kernels: pairwise distances and k-NN.
    Kernels,
    /// dml-sampling: miners.
    Mining,
    /// dml-losses: forward and backward with the usual miner.
    Losses,
    /// dml-models + losses + sampling: one training step.
    Train,
    /// dml-eval: retrieval metrics.
    Eval,
}

impl Topic {
    /// Every topic, in the order of the report.
    pub const ALL: [Topic; 5] = [
        Topic::Kernels,
        Topic::Mining,
        Topic::Losses,
        Topic::Train,
        Topic::Eval,
    ];

    /// The criterion group and bench target name.
    pub fn name(self) -> &'static str {
        match self {
            Topic::Kernels => "kernels",
            Topic::Mining => "mining",
            Topic::Losses => "losses",
            Topic::Train => "train",
            Topic::Eval => "eval",
        }
    }
}

impl fmt::Display for Topic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// How long one run takes, roughly: decides criterion's sample count and the comparison's rounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Weight {
    /// Well under 100 ms a run.
    Light,
    /// Up to several seconds a run: ten flat samples.
    Heavy,
    /// Tens of seconds a run: too slow for criterion's ten samples; the runner times it itself
    /// (three runs, or the three rounds of the comparison).
    Huge,
}

/// The timed closure of a case.
pub type RunFn = Box<dyn FnMut() -> anyhow::Result<()>>;

/// One benchmark: what it measures and how to build it.
pub struct Case {
    /// The layer.
    pub topic: Topic,
    /// What is measured, e.g. `pairwise_euclidean` or `miner_semi_hard`.
    pub function: String,
    /// The sizes, e.g. `256x256x128` or `B256`.
    pub parameter: String,
    /// Items processed per run (pairs, queries, batch items), for throughput.
    pub items: u64,
    /// What `items` counts.
    pub unit: &'static str,
    /// How long one run takes, roughly.
    pub weight: Weight,
    /// Whether the report measures its peak memory (in a child process).
    pub peak_memory: bool,
    /// One line on what the timed region contains.
    pub note: &'static str,
    /// Where this case's data comes from, when its sizes do not say it (the report gives it a
    /// bullet of its own under its function's note).
    pub data_note: Option<&'static str>,
    make: Box<dyn Fn() -> anyhow::Result<Prepared>>,
}

impl fmt::Debug for Case {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Case").field("id", &self.id()).finish()
    }
}

impl Case {
    /// `topic/function/parameter`: criterion's full id and the runner's key.
    pub fn id(&self) -> String {
        format!("{}/{}/{}", self.topic, self.function, self.parameter)
    }

    /// Builds the inputs (outside any timing) and returns the timed closure.
    pub fn prepare(&self) -> anyhow::Result<Prepared> {
        (self.make)()
    }
}

/// A case with its inputs built.
pub struct Prepared {
    /// One run of the measured operation.
    pub run: RunFn,
    /// The Python reference equivalent on the same inputs, where there is one.
    pub reference: Option<Reference>,
}

impl fmt::Debug for Prepared {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Prepared")
            .field("reference", &self.reference)
            .finish_non_exhaustive()
    }
}

/// What `benches/python/reference.py` runs for a case: an operation, its parameters, and the
/// input arrays (written as `.npy` files for it).
#[derive(Debug, Clone)]
pub struct Reference {
    /// The operation (`pairwise`, `knn`, `miner`, `loss`, `train`, `eval`).
    pub op: &'static str,
    /// Its parameters, as the script reads them.
    pub params: serde_json::Value,
    /// Named input arrays.
    pub inputs: Vec<(&'static str, Input)>,
    /// What the reference runs, for the report (e.g. `faiss IndexFlatL2`).
    pub what: String,
    /// Whether both sides run once, untimed, before a [`Weight::Huge`] comparison (lighter
    /// cases always do). For runs whose first time pays for what the later ones reuse: a
    /// `DataLoader`'s worker processes, LibTorch's first allocations and kernel choices.
    pub warm_up: bool,
}

/// One input array for the reference side.
#[derive(Debug, Clone)]
pub enum Input {
    /// float32 array (embeddings, images).
    F32(ndarray::ArrayD<f32>),
    /// int64 array (labels).
    I64(ndarray::ArrayD<i64>),
}

/// The workspace root (where `cargo xtask weights` puts `weights/`).
pub fn project_root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("benches/ lives one level below the workspace root")
        .to_path_buf()
}

/// The thread count both sides use: `DML_BENCH_THREADS`, or every logical CPU.
pub fn threads() -> usize {
    std::env::var("DML_BENCH_THREADS")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|&n| n > 0)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

/// Sets rayon's and LibTorch's thread counts to [`threads`]; call once before measuring.
pub fn init_threads() -> usize {
    let n = threads();
    // Fails only when the global pool already exists, in which case it was built here before.
    let _ = rayon::ThreadPoolBuilder::new()
        .num_threads(n)
        .build_global();
    tch::set_num_threads(n as i32);
    n
}

/// Registers every case of `topic` at the scale of `DML_BENCH_SCALE` as one criterion group.
///
/// Inputs are built before the timed closure; a case whose set-up or first run fails is
/// reported on stderr and skipped, so one broken layer does not hide the others.
pub fn bench_topic(c: &mut Criterion, topic: Topic) {
    let scale = Scale::from_env();
    init_threads();
    let mut group = c.benchmark_group(topic.name());
    for case in cases(scale).into_iter().filter(|c| c.topic == topic) {
        if case.weight == Weight::Huge && scale == Scale::Full {
            eprintln!(
                "{}: timed by the runner (`cargo xtask bench`), not by criterion",
                case.id()
            );
            continue;
        }
        let mut prepared = match case.prepare() {
            Ok(p) => p,
            Err(err) => {
                eprintln!("skipping {}: set-up failed: {err:#}", case.id());
                continue;
            }
        };
        if let Err(err) = (prepared.run)() {
            eprintln!("skipping {}: first run failed: {err:#}", case.id());
            continue;
        }
        match (scale, case.weight) {
            (Scale::Quick, _) => {
                group
                    .sample_size(10)
                    .sampling_mode(SamplingMode::Flat)
                    .warm_up_time(Duration::from_millis(20))
                    .measurement_time(Duration::from_millis(100));
            }
            (Scale::Full, Weight::Light) => {
                group
                    .sample_size(30)
                    .sampling_mode(SamplingMode::Auto)
                    .warm_up_time(Duration::from_secs(1))
                    .measurement_time(Duration::from_secs(3));
            }
            (Scale::Full, Weight::Heavy | Weight::Huge) => {
                // Ten single-run samples: criterion's minimum, and plenty for runs of seconds.
                group
                    .sample_size(10)
                    .sampling_mode(SamplingMode::Flat)
                    .warm_up_time(Duration::from_millis(1))
                    .measurement_time(Duration::from_millis(1));
            }
        }
        group.throughput(Throughput::Elements(case.items));
        let run = &mut prepared.run;
        group.bench_function(BenchmarkId::new(&case.function, &case.parameter), |b| {
            b.iter(|| {
                if let Err(err) = run() {
                    panic!("{} failed after a successful first run: {err:#}", case.id());
                }
            })
        });
    }
    group.finish();
}
