//! `dml`: train, embed, evaluate and search with deep metric learning models.
//!
//! ```text
//! dml train   --config configs/digits.toml [--resume]
//! dml eval    --embeddings E.npy --labels L.npy [--query Q.npy --query-labels QL.npy] [--json]
//! dml eval    --embeddings E.npy --pairs P.npy|pairs.txt [--names N.txt]   (verification)
//! dml eval    --embeddings E.npy --labels L.npy --verification            (pairs from labels)
//! dml embed   --checkpoint runs/digits/checkpoint.safetensors --out E.npy [--split test]
//! dml export  --checkpoint runs/digits/checkpoint.safetensors --to model.pt
//! dml search  --embeddings E.npy --queries Q.npy -k 10
//! dml compare --config configs/fashion-mnist.toml --losses contrastive,triplet,margin \
//!             --miners uniform,semi_hard,batch_hard,distance_weighted
//! ```

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand, ValueEnum};
use dml::embed::SplitPart;
use dml::eval::EvalConfig;
use dml::kernels::Metric;
use dml::trainer::Trainer;
use dml::{Config, compare};

#[derive(Parser)]
#[command(
    name = "dml",
    version,
    about = "Deep metric learning: train, embed, evaluate, search"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Train a model from a TOML config (metrics log, checkpoints and plots in the output folder).
    Train(TrainArgs),
    /// Retrieval, clustering and verification metrics of saved embeddings (.npy).
    Eval(EvalArgs),
    /// Embed a split of the config's data set with a checkpoint; writes embeddings and labels.
    Embed(EmbedArgs),
    /// Write a checkpoint's network as TorchScript, for serving with PyTorch or LibTorch alone.
    Export(ExportArgs),
    /// The k nearest items of a saved embedding set for each query.
    Search(SearchArgs),
    /// Start N processes of one data-parallel run on this machine, as `torchrun --nproc_per_node N` does: `dml launch --nproc 2 -- train --config X`.
    Launch(LaunchArgs),
    /// Train every loss × miner pair from one base config (once per seed) and tabulate every held-out metric beside the raw-input and untrained baselines.
    Compare(CompareArgs),
}

#[derive(clap::Args)]
struct TrainArgs {
    /// The run config (TOML); without it, the embedded digits config.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Continue from `<output_dir>/checkpoint.safetensors`.
    #[arg(long)]
    resume: bool,
    /// Override `train.epochs`.
    #[arg(long)]
    epochs: Option<u64>,
    /// Override `run.output_dir`.
    #[arg(long)]
    output_dir: Option<PathBuf>,
    /// Override `run.seed`.
    #[arg(long)]
    seed: Option<u64>,
    /// Print the final metrics as one JSON object.
    #[arg(long)]
    json: bool,
    /// In a multi-process run (RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT set by `dml launch`,
    /// torchrun or another launcher): seconds to wait for the other ranks at the rendezvous and
    /// in each collective, including while rank 0 evaluates, before failing with the rank that
    /// stopped or fell behind.
    #[arg(long, default_value_t = 1800.0)]
    collective_timeout: f64,
}

#[derive(clap::Args)]
struct LaunchArgs {
    /// Processes to start (one per core or GPU is the usual choice).
    #[arg(long, default_value_t = 2)]
    nproc: usize,
    /// The rendezvous port on 127.0.0.1 (default: a free one).
    #[arg(long)]
    master_port: Option<u16>,
    /// The dml command each process runs, after `--` (e.g. `train --config configs/digits.toml`).
    #[arg(last = true, required = true)]
    command: Vec<String>,
}

#[derive(clap::Args)]
struct EvalArgs {
    /// Embeddings, an n×d float32/float64 .npy (the reference set, and the queries unless
    /// --query is given; the items --pairs refers to).
    #[arg(long)]
    embeddings: PathBuf,
    /// Labels of --embeddings, a 1-d integer .npy (needed for the retrieval metrics and for
    /// --verification; without it, only --pairs is evaluated).
    #[arg(long, required_unless_present = "pairs")]
    labels: Option<PathBuf>,
    /// Separate query embeddings (.npy); each query is searched among --embeddings.
    #[arg(long, requires = "query_labels")]
    query: Option<PathBuf>,
    /// Labels of --query.
    #[arg(long, requires = "query")]
    query_labels: Option<PathBuf>,
    /// The K of Recall@K, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1,2,4,8")]
    recall_at: Vec<usize>,
    /// Distance or similarity used for retrieval and verification.
    #[arg(long, default_value = "euclidean")]
    metric: Metric,
    /// Skip NMI (k-means), the slowest part on large sets.
    #[arg(long)]
    no_nmi: bool,
    /// Also report AMI of the same k-means clustering.
    #[arg(long)]
    ami: bool,
    /// Skip R-precision and MAP@R: the search then needs only the largest K neighbours instead
    /// of a whole class's worth, which matters for classes of thousands of items.
    #[arg(long)]
    no_r_metrics: bool,
    /// Also report pytorch-metric-learning's mean average precision and mean reciprocal rank,
    /// over each query's whole ranking (the full distance matrix is computed, in bands).
    #[arg(long)]
    ranking: bool,
    /// Also report open-metric-learning's cmc@k, precision@k and map@k at these k
    /// (comma-separated).
    #[arg(long, value_delimiter = ',')]
    oml_at: Vec<usize>,
    /// Also report every retrieval score per class, and their average over classes.
    #[arg(long)]
    per_class: bool,
    /// Re-rank and report the retrieval scores again: `k-reciprocal` (Zhong et al. 2017),
    /// `query-expansion` (α-QE), `database-augmentation` (αDBA) or `qe-dba` (both).
    #[arg(long, value_enum)]
    rerank: Option<RerankArg>,
    /// Re-ranking neighbours: k1 of k-reciprocal re-ranking (default 20) or k of α-QE / αDBA
    /// (default 2).
    #[arg(long)]
    rerank_k: Option<usize>,
    /// k2 of k-reciprocal re-ranking (default 6).
    #[arg(long)]
    rerank_k2: Option<usize>,
    /// λ of k-reciprocal re-ranking (default 0.3).
    #[arg(long)]
    rerank_lambda: Option<f64>,
    /// α of α-QE / αDBA (default 3).
    #[arg(long)]
    rerank_alpha: Option<f64>,
    /// Seed of the k-means used for NMI (and of the pairs --verification draws).
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// How the k-means for NMI picks its initial centres: k-means‖ (reads the data three
    /// times; used on large sets with at least 64 points a cluster, greedy k-means++ elsewhere)
    /// or scikit-learn's greedy k-means++ at every size (reads the data once per centre).
    #[arg(long, value_enum, default_value = "k-means||")]
    kmeans_seeding: SeedingArg,
    /// Verification pairs: an n×3 integer .npy of rows [i, j, same] (rows of --embeddings;
    /// same 1 or 0), or a text file in LFW's pairs.txt layout (with --names).
    #[arg(long)]
    pairs: Option<PathBuf>,
    /// For a pairs.txt: one line per row of --embeddings naming its image (a path or file name
    /// like `Aaron_Peirsol/Aaron_Peirsol_0001.jpg`; the stem's last `_` splits name and number).
    #[arg(long, requires = "pairs")]
    names: Option<PathBuf>,
    /// Verification on pairs drawn from --labels: every same-class pair (at most
    /// --max-pairs / 2, sampled beyond) and as many different-class pairs, seeded by --seed.
    #[arg(long, requires = "labels", conflicts_with = "pairs")]
    verification: bool,
    /// With --verification: every pair of items instead (refused beyond --max-pairs).
    #[arg(long, requires = "verification")]
    all_pairs: bool,
    /// With --verification: the most pairs to draw.
    #[arg(long, default_value_t = 10_000_000)]
    max_pairs: usize,
    /// Folds of the verification accuracy (the threshold is chosen on the other folds).
    #[arg(long, default_value_t = 10)]
    folds: usize,
    /// The false accept rates of TAR@FAR, comma-separated.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "1e-1,1e-2,1e-3,1e-4,1e-5,1e-6"
    )]
    fars: Vec<f64>,
    /// Where the ROC plot goes: `<stem>.png` and `<stem>.svg` (default: beside --embeddings,
    /// `<embeddings stem>-roc`).
    #[arg(long)]
    roc_plot: Option<PathBuf>,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(Clone, Copy, ValueEnum)]
enum SeedingArg {
    /// k-means‖ (Bahmani et al. 2012, Apache Spark's default).
    #[value(name = "k-means||", alias = "parallel")]
    Parallel,
    /// Greedy k-means++ (scikit-learn's default).
    #[value(name = "k-means++", alias = "greedy")]
    PlusPlus,
}

#[derive(Clone, Copy, ValueEnum)]
enum RerankArg {
    /// k-reciprocal re-ranking with Jaccard distance.
    KReciprocal,
    /// α-query expansion of the queries.
    QueryExpansion,
    /// α-database-side augmentation of the references.
    DatabaseAugmentation,
    /// Both: augmented references, then expanded queries.
    QeDba,
}

impl EvalArgs {
    fn rerank(&self) -> Option<dml::eval::rerank::Rerank> {
        use dml::eval::rerank::Rerank;
        let expansion = |query, database| Rerank::Expansion {
            k: self.rerank_k.unwrap_or(2),
            alpha: self.rerank_alpha.unwrap_or(3.0),
            query,
            database,
        };
        Some(match self.rerank? {
            RerankArg::KReciprocal => Rerank::KReciprocal {
                k1: self.rerank_k.unwrap_or(20),
                k2: self.rerank_k2.unwrap_or(6),
                lambda: self.rerank_lambda.unwrap_or(0.3),
            },
            RerankArg::QueryExpansion => expansion(true, false),
            RerankArg::DatabaseAugmentation => expansion(false, true),
            RerankArg::QeDba => expansion(true, true),
        })
    }
}

#[derive(Clone, Copy, ValueEnum)]
enum SplitArg {
    /// The training classes.
    Train,
    /// The held-out classes.
    Test,
}

#[derive(clap::Args)]
struct EmbedArgs {
    /// A checkpoint written by `dml train` (it holds its config).
    #[arg(long)]
    checkpoint: PathBuf,
    /// Where to write the embeddings (.npy, float32, n×d); labels go beside it as
    /// `<stem>.labels.npy` (int64) unless --labels-out is given.
    #[arg(long)]
    out: PathBuf,
    /// Where to write the labels (.npy, int64).
    #[arg(long)]
    labels_out: Option<PathBuf>,
    /// Which split of the checkpoint's data set to embed.
    #[arg(long, value_enum, default_value = "test")]
    split: SplitArg,
    /// A different data config (TOML with a [data] table, or a full run config) to embed
    /// instead of the checkpoint's own data set.
    #[arg(long)]
    data: Option<PathBuf>,
}

#[derive(clap::Args)]
struct ExportArgs {
    /// A checkpoint written by `dml train` (it holds its config).
    #[arg(long)]
    checkpoint: PathBuf,
    /// The TorchScript file to write (e.g. model.pt).
    #[arg(long)]
    to: PathBuf,
    /// The batch size the module is traced with. dml's own networks then take any batch size;
    /// a network with a TorchScript backbone takes exactly this many images per call.
    #[arg(long, default_value_t = 1)]
    batch_size: usize,
}

#[derive(clap::Args)]
struct SearchArgs {
    /// The searched set (.npy, n×d).
    #[arg(long)]
    embeddings: PathBuf,
    /// The queries (.npy, q×d).
    #[arg(long)]
    queries: PathBuf,
    /// Neighbours per query.
    #[arg(short, long, default_value_t = 10)]
    k: usize,
    /// Distance or similarity.
    #[arg(long, default_value = "euclidean")]
    metric: Metric,
    /// Print JSON (`{"indices": [[…]], "scores": [[…]]}`) instead of one line per query.
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args)]
struct CompareArgs {
    /// The base run config; each cell replaces its [loss] and [miner].
    #[arg(long)]
    config: PathBuf,
    /// Loss kinds, comma-separated (the base config's own parameters for its kind, the defaults
    /// for the others); the proxy and classification losses take no miner and train only in
    /// the `none` column of --miners.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "contrastive,triplet,margin"
    )]
    losses: Vec<String>,
    /// Miner kinds, comma-separated (each with its default parameters); `none` trains each loss
    /// on its full set.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "uniform,semi_hard,batch_hard,distance_weighted"
    )]
    miners: Vec<String>,
    /// Override `train.epochs` of every cell.
    #[arg(long)]
    epochs: Option<u64>,
    /// Override `optimizer.loss_lr` of every cell: the learning rate of the loss's own
    /// parameters (the proxies and class vectors of the proxy losses, which want far more than
    /// the network, e.g. 100 times a fine-tuned backbone's; the margin loss's β).
    #[arg(long)]
    loss_lr: Option<f64>,
    /// Seeds, comma-separated: every cell trains once per seed and the table reports the mean
    /// and the (min–max) range (default: the config's `run.seed`).
    #[arg(long, value_delimiter = ',')]
    seeds: Vec<u64>,
    /// Override the output folder (default `<output_dir>/compare`).
    #[arg(long)]
    output_dir: Option<PathBuf>,
    /// The same grid trained by pytorch-metric-learning (the JSON of
    /// `scripts/compare_pml.py --out`), read after training: its cells join the table and the
    /// MAP@R chart as `<loss> (pml)` rows.
    #[arg(long)]
    reference: Option<PathBuf>,
    /// Train nothing: re-tabulate `<output dir>/compare.json` of an earlier run (with
    /// --reference, beside that library's cells) and rewrite its table and chart.
    #[arg(long)]
    tabulate: bool,
}

fn main() {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Train(a) => train(a),
        Command::Eval(a) => eval(a),
        Command::Embed(a) => embed(a),
        Command::Export(a) => export(a),
        Command::Search(a) => search(a),
        Command::Compare(a) => compare_cmd(a),
        Command::Launch(a) => launch(a),
    };
    if let Err(err) = result {
        // A closed pipe (`dml search … | head`) is how the reader says it has enough.
        let broken_pipe = err.chain().any(|cause| {
            cause
                .downcast_ref::<std::io::Error>()
                .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
        });
        if broken_pipe {
            std::process::exit(0);
        }
        eprintln!("error: {}", report(&err));
        std::process::exit(1);
    }
}

/// The error and its causes joined by ": ", leaving out a cause whose text the message already
/// holds. The library errors name their source in their own message (so that `{}` alone is
/// complete for library users), which `{:#}` would print a second time.
fn report(err: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in err.chain() {
        let part = cause.to_string();
        if text.contains(&part) {
            continue;
        }
        if !text.is_empty() {
            text.push_str(": ");
        }
        text.push_str(&part);
    }
    text
}

/// A progress bar on stderr in dml's style (an indicatif `template`), hidden unless `enabled`
/// and stderr is a terminal, so logs and pipes stay clean.
fn progress_bar(len: u64, template: &str, enabled: bool) -> indicatif::ProgressBar {
    if !enabled || !std::io::stderr().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    let style = indicatif::ProgressStyle::with_template(template)
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
        .progress_chars("=> ");
    indicatif::ProgressBar::new(len).with_style(style)
}

/// The CLI's observer: a progress bar per epoch at a terminal, plain lines (the library's
/// [`dml::observe::LogLines`]) in a log file, CI or a batch job.
#[derive(Default)]
struct Terminal {
    bar: Option<indicatif::ProgressBar>,
}

impl dml::observe::Observer for Terminal {
    fn warning(&mut self, message: &str) {
        self.above_bar(&format!("warning: {message}"));
    }

    fn note(&mut self, message: &str) {
        self.above_bar(message);
    }

    fn epoch_started(&mut self, epoch: u64, epochs: u64, n_batches: u64, done: u64) {
        let bar = progress_bar(
            n_batches,
            "epoch {prefix} [{bar:30}] {pos}/{len} {msg} ({eta})",
            true,
        );
        bar.set_prefix(format!("{epoch}/{epochs}"));
        bar.set_position(done);
        self.bar = Some(bar);
    }

    fn batch_done(&mut self, loss: f64, items_per_second: f64) {
        if let Some(bar) = &self.bar {
            if loss.is_finite() {
                bar.set_message(format!("loss {loss:.4}, {items_per_second:.0} items/s"));
            }
            bar.inc(1);
        }
    }

    fn batches_finished(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
    }

    fn epoch_finished(&mut self, record: &dml::state::EpochRecord, epochs: u64) {
        // At a terminal the bar showed the epoch; elsewhere one line says where the run is.
        if !std::io::stderr().is_terminal() {
            eprintln!("{}", dml::observe::epoch_line(record, epochs));
        }
    }
}

impl Terminal {
    /// Prints a line without breaking the progress bar.
    fn above_bar(&self, line: &str) {
        match &self.bar {
            Some(bar) if !bar.is_hidden() => bar.println(line),
            _ => eprintln!("{line}"),
        }
    }
}

/// The config file (or the embedded digits config), parsed; its rules are checked once, after
/// the command line's overrides.
fn load_config(path: Option<&Path>) -> Result<Config> {
    Ok(match path {
        Some(p) => Config::from_file(p)?,
        None => Config::digits(),
    })
}

/// Ctrl-C or SIGTERM sets the flag; the trainer checks it between steps and checkpoints before
/// returning.
fn interrupt_flag() -> Arc<AtomicBool> {
    let flag = Arc::new(AtomicBool::new(false));
    let f = flag.clone();
    let first: std::sync::Mutex<Option<std::time::Instant>> = std::sync::Mutex::new(None);
    // A second handler cannot be installed (e.g. in tests); then Ctrl-C simply kills the process,
    // which the atomic checkpoints survive.
    let _ = ctrlc::set_handler(move || {
        let mut first = first.lock().unwrap_or_else(|e| e.into_inner());
        match *first {
            // A second signal seconds later: the user does not want to wait for the checkpoint.
            // One within a second is the same request arriving twice (a SIGTERM sent to every
            // process of a job and passed on by `dml launch` as well).
            Some(t) if t.elapsed() > std::time::Duration::from_secs(1) => std::process::exit(130),
            Some(_) => {}
            None => {
                *first = Some(std::time::Instant::now());
                f.store(true, Ordering::SeqCst);
                eprintln!(
                    "\ninterrupted (Ctrl-C or SIGTERM): saving a checkpoint after this step \
                     (Ctrl-C again to quit at once)"
                );
            }
        }
    });
    flag
}

fn train(a: TrainArgs) -> Result<()> {
    let mut config = load_config(a.config.as_deref())?;
    if let Some(e) = a.epochs {
        config.train.epochs = e;
    }
    if let Some(d) = a.output_dir {
        config.run.output_dir = Some(d);
    }
    if let Some(s) = a.seed {
        config.run.seed = s;
    }
    let config = config.check().context("invalid config")?;
    let launch = dml::distributed::Launch::from_env()?;
    if let Some(l) = &launch
        && config.config().run.device != dml::models::DeviceChoice::Cpu
    {
        // SAFETY: no other thread of this process exists yet (the Ctrl-C handler, the
        // heartbeat and LibTorch's pools start later), so nothing reads the environment
        // concurrently.
        unsafe { dml::trainer::use_local_gpu(l) };
    }
    let mut trainer = if a.resume {
        Trainer::resume(config)?
    } else {
        Trainer::new(config)?
    };
    trainer.set_interrupt(interrupt_flag());
    trainer.set_observer(Box::new(Terminal::default()));
    if let Some(launch) = launch {
        if !(a.collective_timeout > 0.0 && a.collective_timeout.is_finite()) {
            bail!("--collective-timeout must be a positive number of seconds");
        }
        let timeout = std::time::Duration::from_secs_f64(a.collective_timeout);
        trainer.join_launch(&launch, timeout)?;
    }
    let report = trainer.fit()?;
    let mut out = std::io::stdout().lock();
    if !trainer.is_main() {
        writeln!(
            out,
            "trained {} epochs in {:.1} s as one rank; rank 0 evaluated and wrote {}",
            report.epochs,
            report.train_seconds,
            report.output_dir.display()
        )?;
    } else if a.json {
        writeln!(out, "{}", serde_json::to_string(&report)?)?;
    } else {
        write!(out, "{report}")?;
    }
    if report.interrupted {
        std::process::exit(130);
    }
    Ok(())
}

fn launch(a: LaunchArgs) -> Result<()> {
    if a.nproc == 0 {
        bail!("--nproc must be at least 1");
    }
    if a.command.first().map(String::as_str) != Some("train") {
        bail!(
            "dml launch runs `train` (the one data-parallel command), as in `dml launch --nproc {} \
             -- train --config X`; got `{}`",
            a.nproc,
            a.command.join(" ")
        );
    }
    // Ctrl-C at a terminal reaches every rank too (one process group); a SIGTERM sent to the
    // launcher alone (Kubernetes stops a container through its first process) is passed on to
    // the ranks. Either way they agree to stop after the current step and rank 0 writes a
    // checkpoint. The launcher stays to relay their output.
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    let _ = ctrlc::set_handler(move || {
        if !flag.swap(true, Ordering::SeqCst) {
            eprintln!("dml launch: interrupted; the ranks stop after their current step");
        }
    });
    let outcome = dml::launch::LocalLaunch {
        nproc: a.nproc,
        master_port: a.master_port,
        program: std::env::current_exe().context("finding the dml binary")?,
        args: a.command,
        stop: Some(stop),
    }
    .run()
    .context("starting the ranks")?;
    if let Some(rank) = outcome.first_failure {
        let code = outcome.codes[rank].unwrap_or(1);
        if outcome.codes.iter().all(|c| *c == Some(130)) {
            eprintln!(
                "dml launch: interrupted; every rank stopped after the same step (continue with `train --resume`)"
            );
            std::process::exit(130);
        }
        eprintln!("dml launch: failed (rank {rank} first)");
        std::process::exit(if code == 0 { 1 } else { code });
    }
    Ok(())
}

fn eval(a: EvalArgs) -> Result<()> {
    let oml = a.oml_at.clone();
    let cfg = EvalConfig {
        recall_at: a.recall_at.clone(),
        nmi: !a.no_nmi,
        ami: a.ami,
        r_metrics: !a.no_r_metrics,
        mean_average_precision: a.ranking,
        mean_reciprocal_rank: a.ranking,
        cmc_at: oml.clone(),
        oml_precision_at: oml.clone(),
        oml_map_at: oml,
        per_class: a.per_class,
        seed: a.seed,
        kmeans_seeding: match a.kmeans_seeding {
            SeedingArg::Parallel => dml::eval::Seeding::KMeansParallel,
            SeedingArg::PlusPlus => dml::eval::Seeding::KMeansPlusPlus,
        },
        ..EvalConfig::default()
    };
    let embeddings = dml::eval::npy::read_embeddings(&a.embeddings)?;
    if embeddings.nrows() == 0 || embeddings.ncols() == 0 {
        bail!(
            "{} holds no embeddings (shape {} × {}): evaluation needs at least one row of at least one value",
            a.embeddings.display(),
            embeddings.nrows(),
            embeddings.ncols()
        );
    }
    let labels = match &a.labels {
        Some(l) => {
            let y = dml::eval::npy::read_labels(l)?;
            dml::eval::npy::check_lengths(&a.embeddings, &embeddings, l, &y)?;
            Some(y)
        }
        None => None,
    };
    let mut out = std::io::stdout().lock();
    let mut json = serde_json::Map::new();
    if let Some(ref_labels) = &labels {
        let query = match (&a.query, &a.query_labels) {
            (Some(q), Some(ql)) => {
                let (e, l) = dml::eval::npy::read_embeddings_and_labels(q, ql)?;
                if e.nrows() == 0 || e.ncols() == 0 {
                    bail!("{} holds no embeddings", q.display());
                }
                Some((e, l))
            }
            _ => None,
        };
        retrieval(
            &a,
            &cfg,
            &embeddings,
            ref_labels,
            query,
            &mut json,
            &mut out,
        )?;
    }
    let pairs = match (&a.pairs, &labels) {
        (Some(path), _) => Some(read_pairs(path, a.names.as_deref(), embeddings.nrows())?),
        (None, Some(y)) if a.verification => {
            let sampling = dml::eval::verification::LabelPairs {
                sampling: if a.all_pairs {
                    dml::eval::verification::PairSampling::All
                } else {
                    dml::eval::verification::PairSampling::Balanced
                },
                max_pairs: a.max_pairs,
                seed: a.seed,
            };
            Some(dml::eval::verification::VerificationPairs::from_labels(
                y, &sampling,
            )?)
        }
        _ => None,
    };
    if let Some(pairs) = pairs {
        let vcfg = dml::eval::verification::VerificationConfig {
            fars: a.fars.clone(),
            folds: a.folds,
        };
        let started = std::time::Instant::now();
        let v = dml::eval::verification::verify(embeddings.view(), &pairs, a.metric, &vcfg)?;
        let seconds = started.elapsed().as_secs_f64();
        let stem = a.roc_plot.clone().unwrap_or_else(|| {
            let name = a
                .embeddings
                .file_stem()
                .map_or_else(|| "embeddings".into(), |s| s.to_string_lossy().into_owned());
            a.embeddings.with_file_name(format!("{name}-roc"))
        });
        let title = format!("ROC of {}", a.embeddings.display());
        let files = dml::plots::roc_curve(&v, &title, &stem)?;
        if a.json {
            let mut vj = v.to_json();
            if let Some(m) = vj.as_object_mut() {
                m.insert("seconds".into(), seconds.into());
                m.insert(
                    "plots".into(),
                    files.iter().map(|f| f.display().to_string()).collect(),
                );
            }
            json.insert("verification".into(), vj);
        } else {
            if labels.is_some() {
                writeln!(out)?;
            }
            writeln!(out, "{v}")?;
            writeln!(
                out,
                "{} pairs scored and summarised in {seconds:.2} s; ROC plot: {}",
                pairs.len(),
                files
                    .iter()
                    .map(|f| f.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            )?;
        }
    }
    if a.json {
        writeln!(out, "{}", serde_json::Value::Object(json))?;
    }
    Ok(())
}

/// The retrieval and clustering part of `dml eval`: into `json` (with `--json`) or printed.
fn retrieval(
    a: &EvalArgs,
    cfg: &EvalConfig,
    reference: &ndarray::Array2<f32>,
    ref_labels: &[u32],
    query: Option<(ndarray::Array2<f32>, Vec<u32>)>,
    json: &mut serde_json::Map<String, serde_json::Value>,
    out: &mut impl Write,
) -> Result<()> {
    // A progress bar on long evaluations, on stderr, only for a person at a terminal.
    let bar = progress_bar(
        0,
        "{msg} [{bar:30}] {human_pos}/{human_len} queries, eta {eta}",
        !a.json,
    );
    bar.set_message("search");
    let started = std::time::Instant::now();
    let mut search = (0usize, 0.0f64); // (k, seconds)
    let mut on_progress = |p: dml::eval::Progress| match p {
        dml::eval::Progress::Searched { done, total, k } => {
            search = (k, started.elapsed().as_secs_f64());
            bar.set_length(total as u64);
            bar.set_position(done as u64);
            bar.set_message(format!("search, k = {k}"));
        }
        dml::eval::Progress::Clustering => {
            bar.finish_and_clear();
            bar.set_message("k-means");
        }
        _ => {}
    };
    let metrics = dml::eval::evaluate_with_progress(
        query.as_ref().map_or(reference.view(), |(q, _)| q.view()),
        query.as_ref().map_or(ref_labels, |(_, ql)| &ql[..]),
        query.as_ref().map(|_| (reference.view(), ref_labels)),
        a.metric,
        cfg,
        &mut on_progress,
    )?;
    bar.finish_and_clear();
    let total = started.elapsed().as_secs_f64();
    let (k, search_s) = search;
    let reranked = match a.rerank() {
        Some(rerank) => {
            let t = std::time::Instant::now();
            let m = dml::eval::rerank::reranked_metrics(
                query.as_ref().map_or(reference.view(), |(q, _)| q.view()),
                query.as_ref().map_or(ref_labels, |(_, ql)| &ql[..]),
                query.as_ref().map(|_| (reference.view(), ref_labels)),
                a.metric,
                cfg,
                &rerank,
            )?;
            Some((rerank, m, t.elapsed().as_secs_f64()))
        }
        None => None,
    };
    if a.json {
        if let serde_json::Value::Object(m) = metrics.to_json() {
            json.extend(m);
        }
        if let Some((rerank, m, seconds)) = &reranked {
            let mut r = m.to_json();
            if let Some(obj) = r.as_object_mut() {
                obj.insert("rerank".into(), serde_json::to_value(rerank)?);
                obj.insert("seconds".into(), (*seconds).into());
            }
            json.insert("reranked".into(), r);
        }
        json.insert("search_k".into(), k.into());
        json.insert("search_seconds".into(), search_s.into());
        json.insert("seconds".into(), total.into());
    } else {
        writeln!(out, "{metrics}")?;
        let clustering = if cfg.nmi || cfg.ami {
            format!(", k-means {:.2} s", total - search_s)
        } else {
            String::new()
        };
        writeln!(
            out,
            "{} queries searched to depth k = {k} in {search_s:.2} s{clustering}",
            metrics.n_queries
        )?;
        if let Some((rerank, m, seconds)) = &reranked {
            writeln!(
                out,
                "\nafter re-ranking ({}, {seconds:.2} s):\n{m}",
                serde_json::to_string(rerank)?
            )?;
        }
    }
    Ok(())
}

/// Verification pairs from an `.npy` file of `[i, j, same]` rows or a text file in LFW's
/// `pairs.txt` layout, whose images `names` maps to rows.
fn read_pairs(
    path: &Path,
    names: Option<&Path>,
    n_rows: usize,
) -> Result<dml::eval::verification::VerificationPairs> {
    if path.extension().is_some_and(|e| e == "npy") {
        let pairs = dml::eval::npy::read_pairs(path)?;
        pairs
            .check_items(n_rows)
            .with_context(|| format!("{} does not fit --embeddings", path.display()))?;
        return Ok(pairs);
    }
    let names = names.with_context(|| {
        format!(
            "{} is a pairs text file (LFW's pairs.txt layout): --names must say which image each row of --embeddings is",
            path.display()
        )
    })?;
    let list = std::fs::read_to_string(names)
        .with_context(|| format!("could not read {}", names.display()))?;
    let mut rows = std::collections::HashMap::new();
    let mut n_lines = 0;
    for (i, line) in list.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        n_lines += 1;
        let stem = Path::new(line)
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let parsed = stem
            .rsplit_once('_')
            .and_then(|(name, n)| Some((name.to_owned(), n.parse::<u32>().ok()?)));
        let Some(key) = parsed else {
            bail!(
                "{} line {}: `{line}` is not an image name of the form NAME_NUMBER (e.g. Aaron_Peirsol_0001.jpg)",
                names.display(),
                i + 1
            );
        };
        rows.insert(key, n_lines - 1);
    }
    if n_lines != n_rows {
        bail!(
            "{} names {n_lines} images but the embeddings have {n_rows} rows",
            names.display()
        );
    }
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("could not read {}", path.display()))?;
    dml::eval::verification::VerificationPairs::from_lfw(&text, |name, n| {
        rows.get(&(name.to_owned(), n)).copied()
    })
    .with_context(|| format!("reading {}", path.display()))
}

fn embed(a: EmbedArgs) -> Result<()> {
    let checkpoint = dml::checkpoint::load(&a.checkpoint)?;
    let mut config = Config::from_toml_str(
        &checkpoint.state.config,
        &format!("{} (embedded config)", a.checkpoint.display()),
    )?;
    if let Some(data) = &a.data {
        config.data = dml::config::read_data_config(data)?;
    }
    let model = dml::embed::TrainedModel::from_checkpoint(config, &checkpoint)?;
    let split = match a.split {
        SplitArg::Train => SplitPart::Train,
        SplitArg::Test => SplitPart::Test,
    };
    let (x, y) = model.embed_split(split)?;
    let labels_out = a.labels_out.unwrap_or_else(|| labels_path_for(&a.out));
    write_npy_f32(&a.out, &x)?;
    let y = ndarray::Array1::from_iter(y.iter().map(|&l| i64::from(l)));
    ndarray_npy::write_npy(&labels_out, &y)
        .with_context(|| format!("could not write {}", labels_out.display()))?;
    eprintln!(
        "wrote {} embeddings of dimension {} to {} and their labels to {}",
        x.nrows(),
        x.ncols(),
        a.out.display(),
        labels_out.display()
    );
    Ok(())
}

fn export(a: ExportArgs) -> Result<()> {
    let mut model = dml::embed::TrainedModel::load(&a.checkpoint)?;
    model.export_torchscript(&a.to, a.batch_size)?;
    let config = model.config();
    let shape = model.net().input_shape();
    let transform = match &config.transform.test {
        Some(t) => serde_json::to_string(t)?,
        None => "none (pixels scaled to [0, 1])".to_owned(),
    };
    let batch = if matches!(config.model, dml::models::ModelConfig::Torchscript(_)) {
        a.batch_size.to_string()
    } else {
        "N".to_owned()
    };
    eprintln!(
        "wrote {}: float32 [{batch}, {}, {}, {}] -> [{batch}, {}] embeddings{} (load with \
         torch.jit.load); prepare images with the test transform: {transform}",
        a.to.display(),
        shape.channels,
        shape.height,
        shape.width,
        model.net().embedding_dim(),
        if config.model.normalize() {
            ", L2-normalised"
        } else {
            ""
        },
    );
    Ok(())
}

/// `E.npy` → `E.labels.npy`.
fn labels_path_for(out: &Path) -> PathBuf {
    let stem = out
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "embeddings".to_owned());
    out.with_file_name(format!("{stem}.labels.npy"))
}

fn write_npy_f32(path: &Path, x: &ndarray::Array2<f32>) -> Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("could not create {}", dir.display()))?;
    }
    ndarray_npy::write_npy(path, x).with_context(|| format!("could not write {}", path.display()))
}

fn search(a: SearchArgs) -> Result<()> {
    let reference = dml::eval::npy::read_embeddings(&a.embeddings)?;
    let queries = dml::eval::npy::read_embeddings(&a.queries)?;
    if queries.ncols() != reference.ncols() {
        bail!(
            "{} has dimension {} but {} has dimension {}",
            a.queries.display(),
            queries.ncols(),
            a.embeddings.display(),
            reference.ncols()
        );
    }
    if a.k == 0 || a.k > reference.nrows() {
        bail!(
            "-k must be between 1 and the {} items of {}, got {}",
            reference.nrows(),
            a.embeddings.display(),
            a.k
        );
    }
    let nn = dml::kernels::knn(a.metric, queries.view(), reference.view(), a.k)?;
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    if a.json {
        let indices: Vec<Vec<u32>> = nn.indices.rows().into_iter().map(|r| r.to_vec()).collect();
        let scores: Vec<Vec<f32>> = nn.scores.rows().into_iter().map(|r| r.to_vec()).collect();
        serde_json::to_writer(
            &mut out,
            &serde_json::json!({ "metric": a.metric.name(), "indices": indices, "scores": scores }),
        )?;
        writeln!(out)?;
    } else {
        for (q, (idx, sc)) in nn
            .indices
            .rows()
            .into_iter()
            .zip(nn.scores.rows())
            .enumerate()
        {
            write!(out, "{q}:")?;
            for (i, s) in idx.iter().zip(sc.iter()) {
                write!(out, " {i}({s:.4})")?;
            }
            writeln!(out)?;
        }
    }
    out.flush()?;
    Ok(())
}

fn compare_cmd(a: CompareArgs) -> Result<()> {
    let mut config = load_config(Some(&a.config))?;
    if let Some(e) = a.epochs {
        config.train.epochs = e;
    }
    if let Some(lr) = a.loss_lr {
        // Validated with every cell's config before the first one trains.
        config.optimizer.loss_lr = Some(lr);
    }
    let out_dir = a
        .output_dir
        .unwrap_or_else(|| config.run.output_dir().join("compare"));
    let mut report = if a.tabulate {
        compare::CompareReport::read(&out_dir.join("compare.json"))?
    } else {
        let mut observer: Box<dyn dml::observe::Observer> = Box::new(Terminal::default());
        compare::run(
            &config,
            &a.losses,
            &a.miners,
            &a.seeds,
            &out_dir,
            Some(interrupt_flag()),
            &mut observer,
        )?
    };
    if let Some(path) = &a.reference {
        report.reference = Some(compare::read_reference(path)?);
    }
    if a.tabulate || a.reference.is_some() {
        report.write_all(&out_dir, &config.run.name)?;
    }
    print!("{}", report.markdown());
    eprintln!(
        "wrote {} and {}; plots in {}",
        out_dir.join("compare.md").display(),
        out_dir.join("compare.json").display(),
        out_dir.display()
    );
    let failed: Vec<String> = report
        .failures()
        .map(|(c, r)| format!("{} + {} (seed {})", c.loss, c.miner, r.seed))
        .collect();
    if !failed.is_empty() {
        let runs: usize = report.cells.iter().map(|c| c.runs.len()).sum();
        bail!(
            "{} of {runs} runs failed: {}",
            failed.len(),
            failed.join(", ")
        );
    }
    Ok(())
}
