//! The state of a run: where training stands ([`TrainState`], saved in every checkpoint), the
//! epoch in progress ([`EpochProgress`], reset in one place when an epoch ends), and the records
//! a run reports ([`EpochRecord`], [`RawInput`]).

use std::path::PathBuf;

use dml_eval::Metrics;
use serde::{Deserialize, Serialize};

/// The epoch in progress: its batches so far and their sums, from which the epoch's record is
/// made when it ends. Its keys in a checkpoint are those of earlier versions
/// (`batches_done`, `partial_loss_sum`, ...), so their checkpoints still load.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct EpochProgress {
    /// Batches done in the epoch after `epochs_done` (non-zero only for a checkpoint written by
    /// Ctrl-C in the middle of an epoch).
    pub batches_done: u64,
    /// Sum of the batch losses.
    #[serde(rename = "partial_loss_sum")]
    pub loss_sum: f64,
    /// Sum of the tuple counts.
    #[serde(rename = "partial_tuples_sum")]
    pub tuples_sum: f64,
    /// Seconds of training spent.
    #[serde(rename = "partial_seconds")]
    pub seconds: f64,
    /// Batches skipped for a non-finite value (`train.on_non_finite = "skip_batch"`) or left out
    /// unreadable.
    #[serde(default, rename = "partial_skipped")]
    pub skipped: u64,
}

impl EpochProgress {
    /// Whether nothing of an epoch has been done yet.
    pub fn is_empty(&self) -> bool {
        self.batches_done == 0
    }

    /// Batch `batch` done with loss `loss` (NaN: left out) over `tuples` tuples.
    pub fn add(&mut self, batch: u64, loss: f64, tuples: usize) {
        if loss.is_finite() {
            self.loss_sum += loss;
        } else {
            self.skipped += 1;
        }
        self.tuples_sum += tuples as f64;
        self.batches_done = batch + 1;
    }

    /// Batch `batch` left out before its step.
    pub fn add_skipped(&mut self, batch: u64) {
        self.skipped += 1;
        self.batches_done = batch + 1;
    }

    /// Ends the epoch: what it did, and the progress reset for the next.
    pub fn finish(&mut self) -> EpochProgress {
        std::mem::take(self)
    }
}

/// One row of the training history: an epoch's mean loss and, on evaluation epochs, the metrics.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpochRecord {
    /// The epoch (1-based: the first epoch is 1; epoch 0 is the untrained network).
    pub epoch: u64,
    /// Mean training loss over the epoch's batches (`None` for epoch 0).
    pub loss: Option<f64>,
    /// Mean number of tuples the miner returned per batch (`None` for epoch 0).
    pub tuples_per_batch: Option<f64>,
    /// The learning-rate factor of the schedule during this epoch.
    pub lr_factor: f64,
    /// Wall-clock seconds the epoch's training took (not counting evaluation).
    pub train_seconds: f64,
    /// Batches of this epoch skipped because a value was not finite (`skip_batch` mode); the
    /// mean loss is over the others.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub skipped_batches: u64,
    /// The mean pairwise distance of the held-out embeddings (over at most 1,000 of them), when
    /// the epoch was evaluated: how spread out the embedding is; a collapse shows here first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spread: Option<f64>,
    /// The collapse warning, on the epoch where the held-out embeddings were first found
    /// collapsed (see [`crate::trainer::TrainReport::collapse`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub collapse: Option<String>,
    /// Metrics on the held-out classes (`recall_at_1`, …, `nmi`), when the epoch was evaluated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics: Option<Metrics>,
}

/// The raw-input baseline: the held-out items themselves, flattened (L2-normalised when the
/// model normalises), evaluated like embeddings; or why it was skipped.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RawInput {
    /// The metrics, when computed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics: Option<Metrics>,
    /// Why it was not computed (items of different sizes, too large, switched off).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub skipped: Option<String>,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// Where training stands: enough, with the weights and the optimiser state, to continue exactly
/// where it stopped.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainState {
    /// Epochs fully completed.
    pub epochs_done: u64,
    /// The epoch in progress (empty between epochs; a checkpoint written by Ctrl-C in the
    /// middle of an epoch holds what that epoch has done so far).
    #[serde(flatten)]
    pub epoch: EpochProgress,
    /// Batches skipped for a non-finite value over the whole run.
    #[serde(default)]
    pub skipped_batches: u64,
    /// The collapse warning, once given (it is given once per run).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub collapse: Option<String>,
    /// The untrained network's held-out spread (mean pairwise distance) when this run did not
    /// evaluate its epoch 0 itself: a compare grid evaluates the untrained network once per
    /// seed, in that seed's first cell, and hands its spread to the others as the collapse
    /// warning's reference.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub untrained_spread: Option<f64>,
    /// Image files that could not be read or decoded and were left out
    /// (`data.skip_unreadable = true`), over the whole run.
    #[serde(default, skip_serializing_if = "std::collections::BTreeSet::is_empty")]
    pub unreadable_files: std::collections::BTreeSet<PathBuf>,
    /// Optimiser steps taken.
    pub n_steps: u64,
    /// The run's seed; every per-batch RNG is derived from it, the epoch and the batch index, so
    /// no RNG state needs saving.
    pub seed: u64,
    /// The full configuration of the run, as TOML.
    pub config: String,
    /// One record per completed epoch.
    pub history: Vec<EpochRecord>,
    /// The slot the cross-batch memory writes next (`[memory]` runs); the memory's rows are the
    /// tensors `memory.embeddings` and `memory.labels`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_head: Option<u64>,
    /// The raw-input baseline, once computed (it depends on the data and the evaluation settings
    /// only, so a resumed run keeps it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub raw_input: Option<RawInput>,
    /// The frozen-backbone baseline of a pretrained (or TorchScript) backbone: its pooled
    /// features before any training, evaluated like embeddings. Computed once, before the first
    /// step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub frozen_backbone: Option<Metrics>,
}

impl TrainState {
    /// The state of a run that has not started: seeded with `seed`, for the config `config`
    /// (as TOML).
    pub fn new(seed: u64, config: String) -> TrainState {
        TrainState {
            epochs_done: 0,
            epoch: EpochProgress::default(),
            skipped_batches: 0,
            collapse: None,
            untrained_spread: None,
            unreadable_files: Default::default(),
            n_steps: 0,
            memory_head: None,
            seed,
            config,
            history: Vec::new(),
            raw_input: None,
            frozen_backbone: None,
        }
    }
}
