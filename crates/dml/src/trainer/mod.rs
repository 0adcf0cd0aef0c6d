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

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use dml_data::HeldOut;
use dml_losses::{Loss, LossContext};
use dml_models::EmbeddingNet;
use dml_sampling::{MemoryBank, Miner, PkSampler, Tuples};
use ndarray::ArrayView2;
use tch::{Device, nn};

use crate::checkpoint::{self, Checkpoint};
use crate::config::{CheckedConfig, Config, IntoChecked, MemoryConfig};
use crate::log::MetricsLog;
use crate::memory::CrossBatchMemory;
use crate::observe::{LogLines, Observer, Reporter};
use crate::optim::Optimizer;
pub use crate::report::TrainReport;
use crate::state::{EpochRecord, TrainState};
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
mod epoch;
mod evaluate;
mod faults;
mod seed;
mod step;

pub use distributed::use_local_gpu;
use evaluate::Evaluation;
use faults::excluded_classes_warning;
pub use seed::step_seed;

const MAX_KEPT_DISTANCES: usize = 200_000;

/// LibTorch's threads (`run.threads`, 0: its own choice), the allocator setting of
/// [`dml_models::keep_freed_memory`] and the seed of the network's initialisation.
fn set_up_libtorch(threads: usize, seed: u64) {
    if threads > 0 {
        tch::set_num_threads(threads as i32);
    }
    dml_models::keep_freed_memory();
    tch::manual_seed(step_seed(seed, u64::MAX, 0) as i64);
}

/// A fresh run's state, or the checkpoint's with its variables and optimiser state restored
/// (and the resolved config of this process).
fn initial_state(
    ckpt: Option<&Checkpoint>,
    vs: &nn::VarStore,
    optim: &mut Optimizer,
    seed: u64,
    config: String,
) -> Result<TrainState> {
    Ok(match ckpt {
        Some(c) => {
            c.restore(vs, optim)?;
            TrainState {
                config,
                ..c.state.clone()
            }
        }
        None => TrainState::new(seed, config),
    })
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
    /// Where warnings and progress go.
    observer: Reporter,
    /// Warnings found while building, given to the observer when the run starts.
    build_warnings: Vec<String>,
    /// The run in progress in this process: from the first [`Trainer::run_epoch`] to
    /// [`Trainer::finish`].
    session: Option<Session>,
}

/// What [`Trainer::run_epoch`] did.
#[derive(Debug, Clone, PartialEq)]
pub enum EpochOutcome {
    /// An epoch was trained (and evaluated, logged and checkpointed as configured): its record.
    Trained(Box<EpochRecord>),
    /// The interrupt flag stopped the run; a checkpoint holds where it stopped.
    Interrupted,
    /// Every epoch of `train.epochs` is done.
    Done,
}

/// A run in progress in this process.
#[derive(Debug, Default)]
struct Session {
    /// The metrics log (rank 0 only).
    log: Option<MetricsLog>,
    /// Seconds this process spent training.
    train_seconds: f64,
    /// Whether the interrupt flag stopped it.
    interrupted: bool,
    /// The last evaluation of the network: the plots map its embeddings.
    last: Option<Evaluation>,
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
        let seed = config.run.seed;
        set_up_libtorch(config.run.threads, seed);
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
        let build_warnings: Vec<String> =
            excluded_classes_warning(sampler.excluded_classes(), config.batch.k)
                .into_iter()
                .inspect(|w| tracing::warn!("{w}"))
                .collect();
        let mut optim = Optimizer::new(&vs, config.optimizer.groups())?;
        let state = initial_state(ckpt, &vs, &mut optim, seed, config.to_toml_string())?;
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
            observer: Reporter::new(Box::new(LogLines)),
            build_warnings,
            session: None,
        })
    }

    /// A flag that, once set (by a Ctrl-C handler), makes [`Trainer::fit`] write a checkpoint
    /// after the current step and return.
    pub fn set_interrupt(&mut self, flag: Arc<AtomicBool>) {
        self.interrupt = Some(flag);
    }

    /// Sends warnings and progress to `observer` (by default [`LogLines`]: plain lines on
    /// stderr) and returns the one it replaces.
    pub fn set_observer(&mut self, observer: Box<dyn Observer>) -> Box<dyn Observer> {
        self.observer.replace(observer)
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

    /// Gives the run the untrained network's held-out spread measured by another run of the
    /// same seed and data (a compare grid's first cell), as the collapse warning's reference
    /// when this run does not evaluate its own epoch 0.
    pub(crate) fn set_untrained_spread(&mut self, spread: f64) {
        self.state.untrained_spread = Some(spread);
    }

    /// The held-out spread of this run's untrained network, when it evaluated epoch 0.
    pub(crate) fn untrained_spread(&self) -> Option<f64> {
        self.untrained_record().and_then(|r| r.spread)
    }

    /// The record of epoch 0 (the untrained network), when this run evaluated it.
    fn untrained_record(&self) -> Option<&EpochRecord> {
        self.state.history.iter().find(|r| r.epoch == 0)
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

    /// The observer, for progress: when `train.progress` is on and this process is rank 0.
    pub(super) fn progress(&self) -> Option<std::sync::MutexGuard<'_, Box<dyn Observer>>> {
        (self.config.train.progress && self.is_main()).then(|| self.observer.get())
    }

    /// Trains the remaining epochs (evaluating, logging and checkpointing as configured), writes
    /// the plots and the report, and returns the report. With the interrupt flag set it stops
    /// after the current step, writes a checkpoint and returns with `interrupted: true`.
    ///
    /// The same as calling [`Trainer::run_epoch`] until it returns something other than
    /// [`EpochOutcome::Trained`], then [`Trainer::finish`].
    pub fn fit(&mut self) -> Result<TrainReport> {
        while let EpochOutcome::Trained(_) = self.run_epoch()? {}
        self.finish()
    }

    /// Trains the next epoch, for a front end that drives training itself (a binding that
    /// reports between epochs, a scheduler that decides whether to go on): the epoch is
    /// evaluated, logged and checkpointed as `fit` would. The first call starts the run
    /// (output folder, lock, baselines, the untrained network's evaluation). Call
    /// [`Trainer::finish`] at the end for the plots and the report.
    ///
    /// # Errors
    /// As [`Trainer::fit`].
    pub fn run_epoch(&mut self) -> Result<EpochOutcome> {
        if self.session.is_none() {
            for warning in std::mem::take(&mut self.build_warnings) {
                self.observer.get().warning(&warning);
            }
            let log = self.start_run()?;
            self.session = Some(Session {
                log,
                ..Session::default()
            });
        }
        if self.session.as_ref().is_some_and(|s| s.interrupted) {
            return Ok(EpochOutcome::Interrupted);
        }
        if self.state.epochs_done >= self.config.train.epochs {
            return Ok(EpochOutcome::Done);
        }
        let epoch = self.state.epochs_done;
        let run = self.train_epoch(epoch)?;
        let mut session = self.session.take().unwrap_or_default();
        session.train_seconds += run.seconds;
        session.interrupted = run.interrupted;
        let outcome = if run.interrupted && self.state.epoch.batches_done < run.n_batches {
            // Stopped inside the epoch: the checkpoint resumes at its next batch.
            self.save_checkpoint().map(|()| EpochOutcome::Interrupted)
        } else {
            self.finish_epoch(epoch, run.lr_factor, run.interrupted, session.log.as_mut())
                .map(|evaluation| {
                    if let Some(e) = evaluation {
                        session.last = Some(e);
                    }
                    match (run.interrupted, self.state.history.last()) {
                        (false, Some(record)) => EpochOutcome::Trained(Box::new(record.clone())),
                        _ => EpochOutcome::Interrupted,
                    }
                })
        };
        self.session = Some(session);
        outcome
    }

    /// Ends the run: the plots (unless interrupted) and the report, written to `report.json`
    /// and returned. In a multi-process run no rank returns before rank 0 has written
    /// everything.
    ///
    /// # Errors
    /// Writing the plots or the report failing; in a multi-process run, rank 0 failing.
    pub fn finish(&mut self) -> Result<TrainReport> {
        let session = self.session.take().unwrap_or_default();
        let report = self.finish_run(session.train_seconds, session.interrupted, session.last)?;
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
            let raw = self.noted_baseline(
                "raw input",
                |t| t.raw_input_baseline(),
                |r| r.metrics.as_ref(),
            )?;
            log.append_raw_input(&raw)?;
            self.state.raw_input = Some(raw);
        }
        if self.state.frozen_backbone.is_none()
            && self.state.epochs_done == 0
            && self.state.epoch.is_empty()
            && self.config.eval.frozen_backbone
            && self.config.model.has_given_backbone()
        {
            let m = self.noted_baseline(
                "frozen backbone",
                |t| t.frozen_backbone_baseline(),
                |m| Some(m),
            )?;
            log.append_frozen_backbone(&m)?;
            self.state.frozen_backbone = Some(m);
        }
        if self.state.epochs_done == 0
            && self.state.epoch.is_empty()
            && self.state.history.is_empty()
            && self.config.train.eval_before
        {
            let e = self.noted_baseline("untrained network", Self::evaluate_network, |e| {
                Some(&e.metrics)
            })?;
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

    /// Evaluates a baseline with `evaluate`, saying when it starts (it can take minutes on a
    /// large held-out set), what it scored (`metrics` of the result) and how long it took.
    fn noted_baseline<T, E>(
        &mut self,
        what: &str,
        evaluate: E,
        metrics: impl Fn(&T) -> Option<&dml_eval::Metrics>,
    ) -> Result<T>
    where
        E: FnOnce(&mut Self) -> Result<T>,
    {
        if let Some(mut o) = self.progress() {
            o.note(&format!(
                "evaluating the {what} on the held-out items (a baseline)"
            ));
        }
        let started = std::time::Instant::now();
        let result = evaluate(self)?;
        if let Some(mut o) = self.progress() {
            o.note(&crate::observe::baseline_line(
                what,
                metrics(&result),
                started.elapsed().as_secs_f64(),
            ));
        }
        Ok(result)
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
                self.observer.get().warning(&warning);
                record.collapse = Some(warning.clone());
                self.state.collapse.get_or_insert(warning);
            }
        }
        tracing::info!(epoch = record.epoch, loss = ?record.loss, metrics = ?record.metrics, "epoch done");
        if let Some(mut o) = self.progress() {
            o.epoch_finished(&record, epochs);
        }
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
        let initial_metrics = self.untrained_record().and_then(|r| r.metrics.clone());
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
