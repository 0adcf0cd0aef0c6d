//! The training loop.
//!
//! One step: the PK sampler picks indices → [`dml_data::load_batch`] decodes and augments them →
//! a batch tensor → [`EmbeddingNet`] → embeddings (B×D) → a detached copy as an ndarray →
//! [`dml_kernels::self_pairwise`] with the loss's metric → the miner → tuples → the loss on the
//! tensor embeddings → backward → [`Optimizer`] step.
//!
//! # Reproducibility
//! Every random choice of step `b` of epoch `e` draws from a seed derived from (run seed, e, b)
//! alone: the batch (the sampler is a function of seed and epoch), augmentation, LibTorch's own
//! generator (dropout), and the miner's RNG. So no RNG state needs saving, and a run resumed from
//! a checkpoint (even one written by Ctrl-C in the middle of an epoch) takes exactly the steps of
//! the uninterrupted run; on the CPU with a fixed thread count the numbers are identical.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use dml_data::{Dataset, HeldOut, Transform};
use dml_eval::{Metrics, Score};
use dml_losses::{Loss, LossContext};
use dml_models::EmbeddingNet;
use dml_sampling::{MemoryBank, Miner, PkSampler, Tuples};
use ndarray::{Array2, ArrayView2};
use tch::{Device, Tensor, nn};

use crate::checkpoint::{self, Checkpoint};
use crate::config::{CheckedConfig, Config, IntoChecked, MemoryConfig, OnNonFinite};
use crate::embed::{BatchLoad, Embedder, Output, load_items};
use crate::log::MetricsLog;
use crate::memory::CrossBatchMemory;
use crate::optim::Optimizer;
pub use crate::report::TrainReport;
use crate::state::{EpochRecord, RawInput, TrainState};
use crate::{Error, Result};

/// File names inside the output folder.
pub mod files {
    /// The checkpoint, rewritten atomically.
    pub const CHECKPOINT: &str = "checkpoint.safetensors";
    /// The metrics log (JSON lines).
    pub const METRICS: &str = "metrics.jsonl";
    /// The resolved config of the run.
    pub const CONFIG: &str = "config.toml";
    /// The final report (JSON).
    pub const REPORT: &str = "report.json";
    /// The plots folder.
    pub const PLOTS: &str = "plots";
    /// The lock a running `fit` holds on the folder.
    pub const LOCK: &str = ".lock";
}

/// At most this many sampled negative distances are kept per epoch for the histogram plot.
mod distributed;
mod faults;
mod seed;
mod step;

use faults::{excluded_classes_warning, mean_distance};
pub use seed::step_seed;

const MAX_KEPT_DISTANCES: usize = 200_000;

/// Which classes of the data set's split ([`dml_data::Split`]) to embed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Subset {
    /// The training classes.
    Train,
    /// The held-out classes.
    Test,
}

/// Takes the lock of a run's output folder (`<dir>/.lock`, an advisory `flock` the system drops
/// when the process ends, however it ends) and writes this process's id into it, or fails with
/// [`Error::OutputLocked`] naming the process that holds it. Two runs writing one folder would
/// overwrite each other's checkpoint and metrics; a lock left behind by a killed run blocks
/// nothing, since the kill released it.
fn lock_output_dir(dir: &Path) -> Result<std::fs::File> {
    use std::io::{Read, Seek, Write};
    let path = dir.join(files::LOCK);
    let io = |source| Error::Io {
        path: path.clone(),
        source,
    };
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(io)?;
    match file.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            let mut text = String::new();
            let _ = file.read_to_string(&mut text);
            let pid = text
                .trim()
                .strip_prefix("pid ")
                .and_then(|p| p.parse().ok());
            return Err(Error::OutputLocked {
                dir: dir.to_path_buf(),
                pid,
            });
        }
        Err(std::fs::TryLockError::Error(e)) => return Err(io(e)),
    }
    file.set_len(0).map_err(io)?;
    file.rewind().map_err(io)?;
    writeln!(file, "pid {}", std::process::id()).map_err(io)?;
    file.flush().map_err(io)?;
    Ok(file)
}

/// What the ranks agreed to do with a loaded batch.
enum Agreed {
    /// Train on it.
    Step(BatchLoad),
    /// Leave it out (a rank could read none of its items).
    Skip,
    /// Stop the epoch here (interrupted).
    Stop,
}

/// The batches of an epoch as they are needed: loaded on the training thread, or (with
/// `train.prefetch`) the next one loaded on a thread of its own while the current step runs.
/// Either way a batch depends only on its indices and its step's seed, so both give the same
/// batches.
struct Prefetch {
    loader: BatchLoader,
    ahead: bool,
    next: Option<std::thread::JoinHandle<Result<BatchLoad>>>,
}

impl Prefetch {
    fn new(loader: BatchLoader, ahead: bool) -> Self {
        Prefetch {
            loader,
            ahead,
            next: None,
        }
    }

    /// Step `batch` of `epoch` (the indices `indices`), and the loading of `following` (the
    /// next step's indices) started when loading ahead.
    fn next(
        &mut self,
        epoch: u64,
        batch: u64,
        indices: &[usize],
        following: Option<&[usize]>,
    ) -> Result<BatchLoad> {
        let loaded = match self.next.take() {
            Some(handle) => handle
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic))?,
            None => self.loader.load(epoch, batch, indices)?,
        };
        if let (true, Some(following)) = (self.ahead, following) {
            let (loader, following) = (self.loader.clone(), following.to_vec());
            self.next = Some(std::thread::spawn(move || {
                loader.load(epoch, batch + 1, &following)
            }));
        }
        Ok(loaded)
    }
}

/// `[self_supervised]`: its weight and NT-Xent (SupCon on instance labels), if configured.
fn instance_loss(config: &Config) -> Result<Option<(f64, dml_losses::SupConLoss)>> {
    let Some(ss) = &config.self_supervised else {
        return Ok(None);
    };
    let nt_xent = dml_losses::SupConConfig {
        temperature: ss.temperature,
        ..Default::default()
    };
    Ok(Some((ss.weight, nt_xent.init()?)))
}

/// `[memory]`'s queue of `dim`-d embeddings on `device`: empty, or as `ckpt` saved it.
fn cross_batch_memory(
    cfg: &MemoryConfig,
    ckpt: Option<&Checkpoint>,
    dim: usize,
    device: Device,
) -> Result<CrossBatchMemory> {
    let bank = match ckpt.and_then(|c| c.memory.clone()) {
        Some((rows, labels)) => {
            let head = ckpt.and_then(|c| c.state.memory_head).unwrap_or(0) as usize;
            MemoryBank::from_parts(cfg.size, dim, rows, labels, head)?
        }
        None => MemoryBank::new(cfg.size, dim)?,
    };
    CrossBatchMemory::new(bank, device)
}

/// One evaluation of the held-out classes ([`Trainer::evaluate_held_out`]).
#[derive(Debug)]
struct Evaluation {
    /// The scores.
    metrics: Metrics,
    /// The mean pairwise distance of the rows searched (the gallery's for query/gallery sets):
    /// how spread out the embedding is; a collapse shows here first.
    spread: f64,
    /// The rows and their labels, for a held-out set that is one set (the plots map them).
    embeddings: Option<(Array2<f32>, Vec<u32>)>,
    /// Files left out as unreadable.
    unreadable: Vec<PathBuf>,
}

/// At most this many bytes of flattened held-out items for the raw-input baseline.
const RAW_INPUT_BUDGET: usize = 2 << 30;

/// A progress bar on stderr in dml's style (an indicatif `template`), hidden unless `enabled`
/// and stderr is a terminal, so logs and pipes stay clean.
pub fn progress_bar(len: u64, template: &str, enabled: bool) -> indicatif::ProgressBar {
    if !enabled || !std::io::stderr().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    let style = indicatif::ProgressStyle::with_template(template)
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
        .progress_chars("=> ");
    indicatif::ProgressBar::new(len).with_style(style)
}

/// How one pass over an epoch's batches went ([`Trainer::fit`]'s epoch runner).
#[derive(Debug, Clone, Copy)]
struct EpochRun {
    /// Batches in the epoch.
    n_batches: u64,
    /// The learning-rate factor of the last batch run.
    lr_factor: f64,
    /// Seconds spent in this pass.
    seconds: f64,
    /// Whether Ctrl-C stopped it.
    interrupted: bool,
}

/// Everything needed to load a training batch away from the trainer.
#[derive(Debug, Clone)]
struct BatchLoader {
    data: Arc<dyn Dataset>,
    transform: Option<Transform>,
    views: usize,
    seed: u64,
    skip_unreadable: bool,
}

impl BatchLoader {
    /// Step `batch` of `epoch`: decode, augment (with the step's seed) and stack `indices`. With
    /// `views` > 1 each item enters the batch that many times in a row; the transform is drawn
    /// per position, so the copies differ.
    fn load(&self, epoch: u64, batch: u64, indices: &[usize]) -> Result<BatchLoad> {
        let repeated: Vec<usize>;
        let indices = if self.views > 1 {
            repeated = indices
                .iter()
                .flat_map(|&i| std::iter::repeat_n(i, self.views))
                .collect();
            &repeated[..]
        } else {
            indices
        };
        let seed = step_seed(self.seed, epoch, batch);
        load_items(
            self.data.as_ref(),
            indices,
            self.transform.as_ref(),
            seed,
            self.skip_unreadable,
        )
    }
}

/// Runs training as a [`Config`] describes it.
#[derive(Debug)]
pub struct Trainer {
    config: Config,
    device: Device,
    vs: nn::VarStore,
    net: EmbeddingNet,
    loss: Box<dyn Loss>,
    /// `[self_supervised]`: its weight and NT-Xent (SupCon on instance labels).
    instance_loss: Option<(f64, dml_losses::SupConLoss)>,
    miner: Option<Box<dyn Miner>>,
    /// `[memory]`: its settings and the queue of past embeddings.
    memory: Option<(MemoryConfig, CrossBatchMemory)>,
    classes: ClassIndex,
    optim: Optimizer,
    sampler: PkSampler,
    split: dml_data::Split,
    state: TrainState,
    output_dir: PathBuf,
    interrupt: Option<Arc<AtomicBool>>,
    last_negatives: Vec<f32>,
    /// A data-parallel run (`dml launch`, torchrun): this process's rank among the others.
    dist: Option<dml_distributed::ProcessGroup>,
    /// The lock on the output folder, held while [`Trainer::fit`] runs (rank 0 only).
    output_lock: Option<std::fs::File>,
}

/// The training classes in ascending order of their labels, numbered `0..C`: what the losses
/// with per-class vectors are sized by and index with. Data sets whose training labels are not
/// `0..C` already (a class-disjoint split of `0..N`, say classes 5–9) train unchanged.
#[derive(Debug, Clone)]
struct ClassIndex {
    /// `dense[label]` for every label up to the largest training label; `u32::MAX` where a
    /// label is not a training class.
    dense: Vec<u32>,
    n_classes: usize,
}

impl ClassIndex {
    fn new(labels: &[u32]) -> Self {
        let top = labels.iter().copied().max().map_or(0, |m| m as usize + 1);
        let mut present = vec![false; top];
        for &l in labels {
            present[l as usize] = true;
        }
        let mut dense = vec![u32::MAX; top];
        let mut next = 0u32;
        for (label, _) in present.iter().enumerate().filter(|(_, p)| **p) {
            dense[label] = next;
            next += 1;
        }
        ClassIndex {
            dense,
            n_classes: next as usize,
        }
    }

    fn len(&self) -> usize {
        self.n_classes
    }

    /// The batch's labels as class numbers.
    fn dense(&self, labels: &[u32]) -> Result<Vec<u32>> {
        labels
            .iter()
            .map(|&l| match self.dense.get(l as usize) {
                Some(&d) if d != u32::MAX => Ok(d),
                _ => Err(Error::UnknownTrainLabel {
                    label: l,
                    n_classes: self.n_classes,
                }),
            })
            .collect()
    }
}

impl Trainer {
    /// Builds everything a fresh run needs from a config ([`Config`] or [`CheckedConfig`]; a
    /// config is checked here, once): data, network, loss, miner, optimiser. Weights are
    /// initialised from the run seed.
    pub fn new(config: impl IntoChecked) -> Result<Trainer> {
        Trainer::build(config.into_checked()?, None)
    }

    /// Continues the run whose checkpoint is `<output_dir>/checkpoint.safetensors`. The config
    /// must match the checkpoint's except for `train.epochs` (which may grow) and the progress
    /// and plot switches; otherwise the error says so.
    pub fn resume(config: impl IntoChecked) -> Result<Trainer> {
        let checked = config.into_checked()?;
        let config = checked.config();
        let path = config.run.output_dir().join(files::CHECKPOINT);
        let ckpt = checkpoint::load(&path)?;
        let saved = Config::from_toml_str(&ckpt.state.config, &path.display().to_string())?;
        let comparable = |c: &Config| {
            let mut c = c.clone();
            c.train.epochs = 0;
            c.train.progress = false;
            c.train.plots = false;
            c.run.output_dir = None;
            c
        };
        if comparable(&saved) != comparable(config) {
            return Err(Error::Checkpoint {
                path,
                message: "the config differs from the one the checkpoint was trained with (only train.epochs, train.progress and train.plots may change on resume)".to_owned(),
            });
        }
        Trainer::build(checked, Some(&ckpt))
    }

    /// A trainer whose network and optimiser hold a checkpoint's state, its run not resumed
    /// (to continue a run, [`Trainer::resume`]; to embed with a trained network only,
    /// [`crate::embed::TrainedModel`]).
    pub fn from_checkpoint(config: impl IntoChecked, ckpt: &Checkpoint) -> Result<Trainer> {
        Trainer::build(config.into_checked()?, Some(ckpt))
    }

    fn build(checked: CheckedConfig, ckpt: Option<&Checkpoint>) -> Result<Trainer> {
        let (config, miner) = checked.into_parts();
        if config.run.threads > 0 {
            tch::set_num_threads(config.run.threads as i32);
        }
        dml_models::keep_freed_memory();
        let seed = config.run.seed;
        tch::manual_seed(step_seed(seed, u64::MAX, 0) as i64);
        let device = config.run.device.resolve()?;
        let split = config.data.build()?;
        let (mut vs, net) = crate::embed::build_net(&config, &split, device, ckpt)?;
        if ckpt.is_none() {
            net.load_pretrained(&mut vs)?;
        }
        let classes = ClassIndex::new(split.train.labels());
        let ctx = LossContext::new(classes.len(), net.embedding_dim() as usize);
        let loss = config.loss.build(&(vs.root() / "loss"), ctx)?;
        let instance_loss = instance_loss(&config)?;
        let dim = net.embedding_dim() as usize;
        let memory = match config.memory {
            Some(cfg) => Some((cfg, cross_batch_memory(&cfg, ckpt, dim, device)?)),
            None => None,
        };
        let sampler = PkSampler::new(split.train.labels(), config.batch.p, config.batch.k, seed)?;
        if let Some(warning) = excluded_classes_warning(sampler.excluded_classes(), config.batch.k)
        {
            tracing::warn!("{warning}");
            eprintln!("warning: {warning}");
        }
        let mut optim = Optimizer::new(&vs, config.optimizer.groups())?;
        let state = match ckpt {
            Some(c) => {
                c.restore(&vs, &mut optim)?;
                TrainState {
                    config: config.to_toml_string(),
                    ..c.state.clone()
                }
            }
            None => TrainState::new(seed, config.to_toml_string()),
        };
        let output_dir = config.run.output_dir();
        Ok(Trainer {
            config,
            device,
            vs,
            net,
            loss,
            instance_loss,
            miner,
            memory,
            classes,
            optim,
            sampler,
            split,
            state,
            output_dir,
            interrupt: None,
            last_negatives: Vec::new(),
            dist: None,
            output_lock: None,
        })
    }

    /// A flag that, once set (by a Ctrl-C handler), makes [`Trainer::fit`] write a checkpoint
    /// after the current step and return.
    pub fn set_interrupt(&mut self, flag: Arc<AtomicBool>) {
        self.interrupt = Some(flag);
    }

    /// The run's config.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The variables (network under `model.`, loss parameters under `loss.`).
    pub fn var_store(&self) -> &nn::VarStore {
        &self.vs
    }

    /// The network.
    pub fn net(&self) -> &EmbeddingNet {
        &self.net
    }

    /// The training state (epochs done, history).
    pub fn state(&self) -> &TrainState {
        &self.state
    }

    /// The device the network trains on.
    pub fn device(&self) -> Device {
        self.device
    }

    /// The output folder.
    pub fn output_dir(&self) -> &Path {
        &self.output_dir
    }

    /// Negative distances the miner picked during the last epoch trained by this process (at
    /// most 200 000, the first ones).
    pub fn last_negative_distances(&self) -> &[f32] {
        &self.last_negatives
    }

    /// The batches of epoch `epoch` (0-based): the sampler's epoch, or, with
    /// `batch.batches_per_epoch`, that many batches taken from consecutive sampler passes.
    fn epoch_batches(&self, epoch: u64) -> Vec<Vec<usize>> {
        match self.config.batch.batches_per_epoch {
            None => self.sampler.epoch(epoch).collect(),
            Some(n) => {
                let mut out = Vec::with_capacity(n);
                let mut pass = 0u64;
                while out.len() < n {
                    let stream = epoch.wrapping_mul(1 << 20).wrapping_add(pass);
                    out.extend(self.sampler.epoch(stream).take(n - out.len()));
                    pass += 1;
                }
                out
            }
        }
    }

    fn to_tensor(&self, x: &ndarray::Array4<f32>) -> Result<Tensor> {
        Ok(dml_kernels::tensor::from_array(x.view())?.f_to_device(self.device)?)
    }

    /// What loads the training batches: on the training thread, or one batch ahead on a thread of
    /// its own (`train.prefetch`). Either way a batch depends only on its indices and its step's
    /// seed, so both give the same batches.
    fn batch_loader(&self) -> BatchLoader {
        BatchLoader {
            data: Arc::clone(&self.split.train),
            transform: self.config.transform.train.clone(),
            views: self.config.batch.views.max(1),
            seed: self.state.seed,
            skip_unreadable: self.config.data.skip_unreadable(),
        }
    }

    fn keep_negatives(&mut self, tuples: &Tuples, dist: ArrayView2<'_, f32>) {
        let room = MAX_KEPT_DISTANCES.saturating_sub(self.last_negatives.len());
        let (a, n): (&[u32], &[u32]) = match tuples {
            Tuples::Pairs(p) => (&p.neg_anchor, &p.negative),
            Tuples::Triplets(t) => (&t.anchor, &t.negative),
        };
        self.last_negatives.extend(
            a.iter()
                .zip(n)
                .take(room)
                .map(|(&i, &j)| dist[[i as usize, j as usize]]),
        );
    }

    /// Embeds the whole of `dataset` in batches of `batch.eval_batch_size`, with the test
    /// transform and the network in evaluation mode.
    pub fn embed_dataset(&self, dataset: &dyn Dataset) -> Result<(Array2<f32>, Vec<u32>)> {
        let (x, y, unreadable) = self.embedder().embed(dataset)?;
        crate::embed::warn_unreadable(&unreadable);
        Ok((x, y))
    }

    /// The network and the test-time item preparation, for embedding data sets.
    fn embedder(&self) -> Embedder<'_> {
        Embedder::new(&self.net, self.device, &self.config, self.state.seed)
    }

    /// Embeds one split.
    pub fn embed_split(&self, split: Subset) -> Result<(Array2<f32>, Vec<u32>)> {
        match split {
            Subset::Train => self.embed_dataset(self.split.train.as_ref()),
            Subset::Test => self.embed_dataset(self.split.test.as_ref()),
        }
    }

    /// Evaluates the network on the held-out classes (for In-Shop: queries against the
    /// gallery). Held-out embeddings that are not finite (a network that diverged) are
    /// [`Error::NonFinite`].
    pub fn evaluate(&mut self) -> Result<Metrics> {
        Ok(self.evaluate_network()?.metrics)
    }

    /// [`Trainer::evaluate`], keeping the spread and the embeddings, and noting unreadable
    /// files.
    fn evaluate_network(&mut self) -> Result<Evaluation> {
        match self.evaluate_held_out(Output::Embeddings) {
            Err(Error::Eval(dml_eval::Error::NonFinite { .. })) => Err(Error::NonFinite {
                what: "the held-out embeddings are".to_owned(),
                at: format!("the evaluation after epoch {}", self.state.epochs_done),
                hint: self.non_finite_hint(),
            }),
            Ok(mut e) => {
                let files = std::mem::take(&mut e.unreadable);
                self.note_unreadable(files);
                Ok(e)
            }
            Err(e) => Err(e),
        }
    }

    /// The one evaluation path: the held-out classes made into rows by `output` (the network,
    /// its backbone's features, or the raw input), searched with the run's metric and scored
    /// with its settings, leave-one-out or queries in a gallery as the data set's protocol is.
    fn evaluate_held_out(&self, output: Output) -> Result<Evaluation> {
        let embedder = self.embedder().with_output(output);
        let (metric, cfg) = (self.config.eval.metric, &self.config.eval.config);
        Ok(match self.split.held_out() {
            HeldOut::Set(test) => {
                let (x, y, unreadable) = embedder.embed(test)?;
                let metrics = dml_eval::evaluate(x.view(), &y, metric, cfg)?;
                Evaluation {
                    metrics,
                    spread: mean_distance(x.view()),
                    embeddings: Some((x, y)),
                    unreadable,
                }
            }
            HeldOut::QueryGallery { query, gallery } => {
                let (qx, qy, mut unreadable) = embedder.embed(query)?;
                let (gx, gy, g_unreadable) = embedder.embed(gallery)?;
                unreadable.extend(g_unreadable);
                let metrics =
                    dml_eval::evaluate_with_reference(qx.view(), &qy, gx.view(), &gy, metric, cfg)?;
                Evaluation {
                    metrics,
                    spread: mean_distance(gx.view()),
                    embeddings: None,
                    unreadable,
                }
            }
        })
    }

    /// The frozen-backbone baseline of a pretrained or TorchScript backbone: the held-out items'
    /// pooled backbone features (L2-normalised when the model normalises its embeddings), with
    /// the same metric and scores as the network ([`Trainer::evaluate`]). Meaningful before the
    /// first step, which is when a run computes it.
    pub fn frozen_backbone_baseline(&self) -> Result<Metrics> {
        Ok(self.evaluate_held_out(Output::BackboneFeatures)?.metrics)
    }

    /// The raw-input baseline: every held-out item after the test transform, flattened to one
    /// row, L2-normalised when the model normalises its embeddings, evaluated with the same
    /// metric and settings as the network ([`Trainer::evaluate`]). Skipped (with the reason)
    /// when the items differ in size or the rows would take more than 2 GiB.
    pub fn raw_input_baseline(&self) -> Result<RawInput> {
        let skipped = |why: String| {
            Ok(RawInput {
                metrics: None,
                skipped: Some(why),
            })
        };
        let sets: Vec<&dyn Dataset> = match self.split.held_out() {
            HeldOut::Set(test) => vec![test],
            HeldOut::QueryGallery { query, gallery } => vec![query, gallery],
        };
        let tf = self.config.transform.test.as_ref();
        for set in sets {
            let shape = match dml_data::batch_item_shape(set, tf) {
                Ok(shape) => shape,
                Err(dml_data::Error::ItemSizeUnknown) => {
                    return skipped(
                        "the held-out items differ in size and [transform.test] does not crop them to one"
                            .to_owned(),
                    );
                }
                Err(e) => return Err(e.into()),
            };
            let dim: usize = shape.iter().product();
            let bytes = set.len().saturating_mul(dim).saturating_mul(4);
            if bytes > RAW_INPUT_BUDGET {
                return skipped(format!(
                    "{} items of {dim} values would take {:.1} GiB (limit 2 GiB)",
                    set.len(),
                    bytes as f64 / (1u64 << 30) as f64
                ));
            }
        }
        // Files left out here are the held-out set's: the network's evaluation records them.
        let metrics = self.evaluate_held_out(Output::RawInput)?.metrics;
        Ok(RawInput {
            metrics: Some(metrics),
            skipped: None,
        })
    }

    fn save_checkpoint(&self) -> Result<()> {
        if !self.is_main() {
            return Ok(());
        }
        self.check_weights_finite(self.state.epochs_done)?;
        let mut state = self.state.clone();
        state.n_steps = self.optim.n_steps();
        let bank = self.memory.as_ref().map(|(_, memory)| memory.bank());
        state.memory_head = bank.map(|b| b.head() as u64);
        let torchscript = self.net.torchscript_bytes()?;
        checkpoint::save(
            &self.output_dir.join(files::CHECKPOINT),
            &self.vs,
            &self.optim,
            bank,
            torchscript.as_deref(),
            &state,
        )
    }

    fn interrupted(&self) -> bool {
        self.interrupt
            .as_ref()
            .is_some_and(|f| f.load(Ordering::SeqCst))
    }

    fn progress_bar(&self, len: u64, epoch: u64) -> indicatif::ProgressBar {
        let bar = progress_bar(
            len,
            "epoch {prefix} [{bar:30}] {pos}/{len} {msg} ({eta})",
            self.config.train.progress && self.is_main(),
        );
        bar.set_prefix(format!("{}/{}", epoch + 1, self.config.train.epochs));
        bar
    }

    /// Where standard error is not a terminal (a log file, CI, a batch job) the progress bar is
    /// hidden; with `train.progress` on, one plain line per epoch shows instead that the run is
    /// alive and where it stands.
    fn log_line(&self, record: &EpochRecord, epochs: u64) {
        if !self.config.train.progress || !self.is_main() || std::io::stderr().is_terminal() {
            return;
        }
        let mut line = format!(
            "epoch {}/{epochs}: loss {:.4}, {:.1} s",
            record.epoch,
            record.loss.unwrap_or(f64::NAN),
            record.train_seconds
        );
        if let Some(m) = &record.metrics {
            line.push_str(", held-out");
            for score in [Score::PrecisionAt1, Score::MapAtR] {
                if let Some(v) = m.get(score) {
                    line.push_str(&format!(" {} {v:.4}", score.label()));
                }
            }
        }
        eprintln!("{line}");
    }

    /// Trains the remaining epochs (evaluating, logging and checkpointing as configured), writes
    /// the plots and the report, and returns the report. With the interrupt flag set it stops
    /// after the current step, writes a checkpoint and returns with `interrupted: true`.
    pub fn fit(&mut self) -> Result<TrainReport> {
        let mut log = self.start_run()?;
        let epochs = self.config.train.epochs;
        let mut train_seconds = 0.0;
        let mut interrupted = false;
        // The last evaluation of this process: the plots map its embeddings.
        let mut last = None;
        while self.state.epochs_done < epochs {
            let epoch = self.state.epochs_done;
            let run = self.train_epoch(epoch)?;
            train_seconds += run.seconds;
            interrupted = run.interrupted;
            if interrupted && self.state.epoch.batches_done < run.n_batches {
                // Stopped inside the epoch: the checkpoint resumes at its next batch.
                self.save_checkpoint()?;
                break;
            }
            if let Some(e) = self.finish_epoch(epoch, run.lr_factor, interrupted, log.as_mut())? {
                last = Some(e);
            }
            if interrupted {
                break;
            }
        }
        let report = self.finish_run(train_seconds, interrupted, last)?;
        if let Some(pg) = &self.dist {
            // No rank leaves before rank 0 has written everything; if rank 0 failed, the
            // others fail here too, naming it.
            pg.barrier()?;
        }
        Ok(report)
    }

    /// Before the first step of this process: the output folder, the resolved config, the
    /// metrics log (reopened on resume), the raw-input baseline and, on a fresh run, the
    /// untrained network's evaluation (epoch 0).
    fn start_run(&mut self) -> Result<Option<MetricsLog>> {
        if !self.is_main() {
            return Ok(None);
        }
        std::fs::create_dir_all(&self.output_dir).map_err(|source| Error::Io {
            path: self.output_dir.clone(),
            source,
        })?;
        if self.output_lock.is_none() {
            self.output_lock = Some(lock_output_dir(&self.output_dir)?);
        }
        checkpoint::write_atomic(
            &self.output_dir.join(files::CONFIG),
            self.config.to_toml_string().as_bytes(),
        )?;
        let mut log = MetricsLog::create(
            &self.output_dir.join(files::METRICS),
            self.state.raw_input.as_ref(),
            self.state.frozen_backbone.as_ref(),
            &self.state.history,
        )?;
        if self.state.raw_input.is_none() && self.config.eval.raw_input {
            let raw = self.raw_input_baseline()?;
            log.append_raw_input(&raw)?;
            self.state.raw_input = Some(raw);
        }
        if self.state.frozen_backbone.is_none()
            && self.state.epochs_done == 0
            && self.state.epoch.is_empty()
            && self.config.eval.frozen_backbone
            && self.config.model.has_given_backbone()
        {
            let m = self.frozen_backbone_baseline()?;
            log.append_frozen_backbone(&m)?;
            self.state.frozen_backbone = Some(m);
        }
        if self.state.epochs_done == 0
            && self.state.epoch.is_empty()
            && self.state.history.is_empty()
            && self.config.train.eval_before
        {
            let e = self.evaluate_network()?;
            let record = EpochRecord {
                epoch: 0,
                loss: None,
                tuples_per_batch: None,
                lr_factor: 0.0,
                train_seconds: 0.0,
                skipped_batches: 0,
                spread: Some(e.spread),
                collapse: None,
                metrics: Some(e.metrics),
            };
            log.append(&record)?;
            self.state.history.push(record);
        }
        Ok(Some(log))
    }

    /// The batches of `epoch` from `state.batches_done` on: each loaded (the next one on its
    /// own thread with `train.prefetch`) and stepped; stops early on Ctrl-C.
    fn train_epoch(&mut self, epoch: u64) -> Result<EpochRun> {
        let epochs = self.config.train.epochs;
        let batches = self.epoch_batches(epoch);
        let n_batches = batches.len() as u64;
        let bar = self.progress_bar(n_batches, epoch);
        bar.set_position(self.state.epoch.batches_done);
        self.last_negatives.clear();
        let start = Instant::now();
        let mut items = 0usize;
        let mut lr_factor = 1.0;
        let mut interrupted = false;
        let mut loads = Prefetch::new(self.batch_loader(), self.config.train.prefetch);
        for (b, indices) in batches
            .iter()
            .enumerate()
            .skip(self.state.epoch.batches_done as usize)
        {
            let progress = epoch as f64 + b as f64 / n_batches.max(1) as f64;
            lr_factor = self.config.schedule.factor(progress, epochs);
            let following = batches.get(b + 1).map(|f| self.local_share(f));
            let loaded = loads.next(epoch, b as u64, self.local_share(indices), following)?;
            let loaded = match self.agree_on_batch(epoch, b as u64, loaded)? {
                Agreed::Step(loaded) => loaded,
                Agreed::Skip => {
                    self.state.epoch.add_skipped(b as u64);
                    bar.inc(1);
                    continue;
                }
                Agreed::Stop => {
                    interrupted = true;
                    break;
                }
            };
            let (loss, n_tuples) = self.train_batch(epoch, b as u64, loaded, lr_factor)?;
            self.state.epoch.add(b as u64, loss, n_tuples);
            items += indices.len();
            let secs = start.elapsed().as_secs_f64().max(1e-9);
            bar.set_message(format!(
                "loss {loss:.4}, {:.0} items/s",
                items as f64 / secs
            ));
            bar.inc(1);
            if self.dist.is_none() && self.interrupted() {
                interrupted = true;
                break;
            }
        }
        let seconds = start.elapsed().as_secs_f64();
        bar.finish_and_clear();
        self.state.epoch.seconds += seconds;
        Ok(EpochRun {
            n_batches,
            lr_factor,
            seconds,
            interrupted,
        })
    }

    /// Whether to train on `loaded`: always, for one process; in a multi-process run the ranks
    /// stop together, before a step (a Ctrl-C reaches each at its own moment), and leave out
    /// together a batch of which some rank could read nothing.
    fn agree_on_batch(&mut self, epoch: u64, batch: u64, loaded: BatchLoad) -> Result<Agreed> {
        if self.dist.is_none() {
            return Ok(Agreed::Step(loaded));
        }
        let (rows, stop) = self.agree(loaded.0.1.len())?;
        if stop {
            return Ok(Agreed::Stop);
        }
        if let Some(r) = rows.iter().position(|&n| n == 0) {
            tracing::warn!(
                epoch = epoch + 1,
                step = batch + 1,
                "batch left out: no readable item on rank {r}"
            );
            self.note_unreadable(loaded.1);
            return Ok(Agreed::Skip);
        }
        Ok(Agreed::Step(loaded))
    }

    /// One loaded batch: the step, or NaN and no tuples for a batch left out (fewer than two
    /// readable items, or a non-finite value with `train.on_non_finite = "skip_batch"`).
    fn train_batch(
        &mut self,
        epoch: u64,
        batch: u64,
        (loaded, unreadable): BatchLoad,
        lr_factor: f64,
    ) -> Result<(f64, usize)> {
        self.note_unreadable(unreadable);
        if self.dist.is_none() && loaded.1.len() < 2 {
            // All items but at most one were unreadable: nothing to compare.
            tracing::warn!(
                epoch = epoch + 1,
                step = batch + 1,
                "batch left out: fewer than 2 readable items"
            );
            return Ok((f64::NAN, 0));
        }
        match self.step(epoch, batch, loaded, lr_factor)? {
            step::StepOutcome::Trained { loss, tuples } => Ok((loss, tuples)),
            step::StepOutcome::NonFinite(fault) => {
                if self.config.train.on_non_finite == OnNonFinite::Stop {
                    return Err(Error::NonFinite {
                        what: format!("{fault} is"),
                        at: format!("epoch {}, step {}", epoch + 1, batch + 1),
                        hint: self.non_finite_hint(),
                    });
                }
                tracing::warn!(epoch = epoch + 1, step = batch + 1, %fault, "batch skipped");
                self.state.skipped_batches += 1;
                Ok((f64::NAN, 0))
            }
        }
    }

    /// A completed epoch: its record (mean loss and tuples, the evaluation when due, the
    /// collapse warning), the log line, and the checkpoint when due (the last epoch,
    /// `train.checkpoint_every`, or Ctrl-C).
    fn finish_epoch(
        &mut self,
        epoch: u64,
        lr_factor: f64,
        interrupted: bool,
        log: Option<&mut MetricsLog>,
    ) -> Result<Option<Evaluation>> {
        let epochs = self.config.train.epochs;
        let done = self.state.epoch.finish();
        let batches = done.batches_done.max(1) as f64;
        let trained = (done.batches_done - done.skipped).max(1) as f64;
        let mut record = EpochRecord {
            epoch: epoch + 1,
            loss: Some(done.loss_sum / trained),
            tuples_per_batch: self.miner.is_some().then(|| done.tuples_sum / batches),
            lr_factor,
            train_seconds: done.seconds,
            skipped_batches: done.skipped,
            spread: None,
            collapse: None,
            metrics: None,
        };
        self.state.epochs_done += 1;
        let last = self.state.epochs_done == epochs;
        let every = self.config.train.eval_every;
        let due = last || (every > 0 && self.state.epochs_done.is_multiple_of(every));
        let mut evaluation = None;
        if due && self.is_main() {
            let e = self.evaluate_network()?;
            record.metrics = Some(e.metrics.clone());
            record.spread = Some(e.spread);
            evaluation = Some(e);
            if let Some(warning) = self.collapse_warning(&record) {
                tracing::warn!("{warning}");
                eprintln!("warning: {warning}");
                record.collapse = Some(warning.clone());
                self.state.collapse.get_or_insert(warning);
            }
        }
        tracing::info!(epoch = record.epoch, loss = ?record.loss, metrics = ?record.metrics, "epoch done");
        self.log_line(&record, epochs);
        if let Some(log) = log {
            log.append(&record)?;
        }
        self.state.history.push(record);
        let ck = self.config.train.checkpoint_every;
        if last || interrupted || (ck > 0 && self.state.epochs_done.is_multiple_of(ck)) {
            self.save_checkpoint()?;
        }
        Ok(evaluation)
    }

    /// The plots (unless interrupted) and the report, written to `report.json`.
    fn finish_run(
        &mut self,
        train_seconds: f64,
        interrupted: bool,
        last: Option<Evaluation>,
    ) -> Result<TrainReport> {
        let plots = if self.config.train.plots && !interrupted && self.is_main() {
            self.write_plots_with(last)?
        } else {
            Vec::new()
        };
        let initial_metrics = self
            .state
            .history
            .iter()
            .find(|r| r.epoch == 0)
            .and_then(|r| r.metrics.clone());
        let final_metrics = self
            .state
            .history
            .iter()
            .rev()
            .find(|r| r.epoch > 0 && r.metrics.is_some())
            .and_then(|r| r.metrics.clone());
        let report = TrainReport {
            epochs: self.state.epochs_done,
            raw_input: self.state.raw_input.clone(),
            frozen_backbone: self.state.frozen_backbone.clone(),
            initial_metrics,
            final_metrics,
            output_dir: self.output_dir.clone(),
            plots,
            train_seconds,
            interrupted,
            skipped_batches: self.state.skipped_batches,
            collapse: self.state.collapse.clone(),
            unreadable_files: self.state.unreadable_files.iter().cloned().collect(),
        };
        if !self.is_main() {
            return Ok(report);
        }
        let json = serde_json::to_string_pretty(&report).map_err(|e| Error::Json {
            path: self.output_dir.join(files::REPORT),
            message: e.to_string(),
        })?;
        checkpoint::write_atomic(&self.output_dir.join(files::REPORT), json.as_bytes())?;
        Ok(report)
    }

    /// Writes the training curves, the map of held-out embeddings and the histogram of sampled
    /// negative distances into `<output_dir>/plots/`.
    pub fn write_plots(&mut self) -> Result<Vec<PathBuf>> {
        self.write_plots_with(None)
    }

    /// [`Trainer::write_plots`] with the embeddings of `last`, an evaluation of the network as
    /// it is now, if there is one (else the network is evaluated here, for a held-out set that
    /// is one set).
    fn write_plots_with(&mut self, last: Option<Evaluation>) -> Result<Vec<PathBuf>> {
        let last = match last {
            Some(e) if e.embeddings.is_some() => Some(e),
            _ => match self.split.held_out() {
                HeldOut::Set(_) => Some(self.evaluate_network()?),
                HeldOut::QueryGallery { .. } => None,
            },
        };
        let miner = self.config.miner.as_ref().map(|m| m.kind().to_owned());
        crate::plots::run_plots(&crate::plots::RunPlots {
            name: &self.config.run.name,
            loss: self.config.loss.kind(),
            miner: miner.as_deref(),
            history: &self.state.history,
            baselines: crate::plots::Baselines {
                raw_input: self
                    .state
                    .raw_input
                    .as_ref()
                    .and_then(|r| r.metrics.as_ref()),
                frozen_backbone: self.state.frozen_backbone.as_ref(),
            },
            test_embeddings: last
                .as_ref()
                .and_then(|e| e.embeddings.as_ref())
                .map(|(x, y)| (x.view(), &y[..])),
            negatives: &self.last_negatives,
            embedding_dim: self.net.embedding_dim() as usize,
            dir: &self.output_dir.join(files::PLOTS),
        })
    }
}
