//! One epoch: its batches, loaded (one ahead with `train.prefetch`), agreed on by the ranks of a
//! multi-process run, and stepped.

use std::sync::Arc;
use std::time::Instant;

use dml_data::{Dataset, Transform};
use tch::Tensor;

use super::seed::step_seed;
use super::{Trainer, step};
use crate::config::OnNonFinite;
use crate::embed::{BatchLoad, load_items};
use crate::{Error, Result};

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

/// How one pass over an epoch's batches went ([`Trainer::fit`]'s epoch runner).
#[derive(Debug, Clone, Copy)]
pub(super) struct EpochRun {
    /// Batches in the epoch.
    pub(super) n_batches: u64,
    /// The learning-rate factor of the last batch run.
    pub(super) lr_factor: f64,
    /// Seconds spent in this pass.
    pub(super) seconds: f64,
    /// Whether Ctrl-C stopped it.
    pub(super) interrupted: bool,
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

impl Trainer {
    /// The batches of epoch `epoch` (0-based): the sampler's epoch, or, with
    /// `batch.batches_per_epoch`, that many batches taken from consecutive sampler passes.
    pub(super) fn epoch_batches(&self, epoch: u64) -> Vec<Vec<usize>> {
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

    pub(super) fn to_tensor(&self, x: &ndarray::Array4<f32>) -> Result<Tensor> {
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

    /// The batches of `epoch` from `state.batches_done` on: each loaded (the next one on its
    /// own thread with `train.prefetch`) and stepped; stops early on Ctrl-C.
    pub(super) fn train_epoch(&mut self, epoch: u64) -> Result<EpochRun> {
        let epochs = self.config.train.epochs;
        let batches = self.epoch_batches(epoch);
        let n_batches = batches.len() as u64;
        let done = self.state.epoch.batches_done;
        if let Some(mut o) = self.progress() {
            o.epoch_started(epoch + 1, epochs, n_batches, done);
        }
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
                    if let Some(mut o) = self.progress() {
                        o.batch_done(f64::NAN, 0.0);
                    }
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
            let rate = items as f64 / start.elapsed().as_secs_f64().max(1e-9);
            if let Some(mut o) = self.progress() {
                o.batch_done(loss, rate);
            }
            if self.dist.is_none() && self.interrupted() {
                interrupted = true;
                break;
            }
        }
        let seconds = start.elapsed().as_secs_f64();
        if let Some(mut o) = self.progress() {
            o.batches_finished();
        }
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
    pub(super) fn train_batch(
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
}
