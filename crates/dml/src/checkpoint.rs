//! Training checkpoints: one safetensors file holding the weights, the optimiser state and the
//! training state, written atomically.
//!
//! Layout: every VarStore variable (trainable or not, so batch-norm statistics come back too) is
//! stored as `vars.<name>`, the optimiser moments and update counts as `optim.m.<name>` /
//! `optim.v.<name>` / `optim.t.<name>`, a TorchScript backbone's module (whose buffers have no
//! variables) as the bytes of its file in the `uint8` tensor `model.torchscript`, and the
//! [`TrainState`] as JSON under the metadata key `dml.state`. A safetensors file is readable from
//! Python (`safetensors.torch.load_file`), so a checkpoint is never locked into this crate.
//!
//! Writing goes to a temporary file in the same folder, which is flushed to disk (`fsync`) and then
//! renamed over the target: a crash or Ctrl-C at any instant leaves either the old checkpoint or
//! the new one, never a torn file. Reading and writing are dml-models' one safetensors reader
//! and writer ([`dml_models::read_tensors`], [`dml_models::write_tensors`]).

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use dml_eval::Metrics;
use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

use crate::optim::Optimizer;
use crate::{Error, Result};

/// The metadata key holding the [`TrainState`] JSON.
pub const STATE_KEY: &str = "dml.state";

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
    /// Batches already done in the epoch after `epochs_done` (non-zero only for a checkpoint
    /// written by Ctrl-C in the middle of an epoch).
    pub batches_done: u64,
    /// Sum of the batch losses of the partial epoch.
    pub partial_loss_sum: f64,
    /// Sum of the tuple counts of the partial epoch.
    pub partial_tuples_sum: f64,
    /// Seconds of training spent on the partial epoch.
    pub partial_seconds: f64,
    /// Batches of the partial epoch skipped for a non-finite value
    /// (`train.on_non_finite = "skip_batch"`).
    #[serde(default)]
    pub partial_skipped: u64,
    /// Batches skipped for a non-finite value over the whole run.
    #[serde(default)]
    pub skipped_batches: u64,
    /// The collapse warning, once given (it is given once per run).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub collapse: Option<String>,
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

/// A loaded checkpoint.
#[derive(Debug)]
pub struct Checkpoint {
    /// The training state.
    pub state: TrainState,
    /// Variables, by VarStore name.
    pub vars: BTreeMap<String, Tensor>,
    /// Optimiser state, by the names of [`Optimizer::state`].
    pub optim: BTreeMap<String, Tensor>,
    /// The cross-batch memory's rows and labels (`[memory]` runs), in slot order.
    pub memory: Option<(Vec<f32>, Vec<u32>)>,
    /// A TorchScript backbone's module file, as it was when the checkpoint was written.
    pub torchscript: Option<Vec<u8>>,
}

/// The tensor name of a TorchScript backbone's module bytes.
const TORCHSCRIPT_KEY: &str = "model.torchscript";

/// The whole of a text file, or [`Error::Io`] naming it.
pub(crate) fn read_text(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// Writes `bytes` to `path` atomically ([`dml_models::write_atomic`]: a temporary file in the
/// same folder, `fsync`, rename, and an `fsync` of the folder so the rename itself is durable).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    dml_models::write_atomic(path, |tmp| std::fs::write(tmp, bytes)).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// Saves the VarStore's variables, the optimiser state, the cross-batch memory (if any), a
/// TorchScript backbone's module (if any) and `state` to `path`, atomically.
pub fn save(
    path: &Path,
    vs: &tch::nn::VarStore,
    optim: &Optimizer,
    memory: Option<&dml_sampling::MemoryBank>,
    torchscript: Option<&[u8]>,
    state: &TrainState,
) -> Result<()> {
    let mut tensors: BTreeMap<String, Tensor> = BTreeMap::new();
    for (name, t) in vs.variables() {
        tensors.insert(format!("vars.{name}"), t);
    }
    for (name, t) in optim.state() {
        tensors.insert(format!("optim.{name}"), t);
    }
    if let Some(bank) = memory {
        let labels: Vec<i64> = bank.labels().iter().map(|&l| i64::from(l)).collect();
        tensors.insert(
            "memory.embeddings".to_owned(),
            dml_kernels::tensor::from_array(bank.embeddings())?,
        );
        tensors.insert("memory.labels".to_owned(), Tensor::f_from_slice(&labels)?);
    }
    if let Some(bytes) = torchscript {
        tensors.insert(TORCHSCRIPT_KEY.to_owned(), Tensor::f_from_slice(bytes)?);
    }
    let json = serde_json::to_string(state).map_err(|e| Error::Checkpoint {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    let metadata = HashMap::from([(STATE_KEY.to_owned(), json)]);
    Ok(dml_models::write_tensors(path, &tensors, &metadata)?)
}

/// Reads a checkpoint written by [`save`].
pub fn load(path: &Path) -> Result<Checkpoint> {
    let bad = |message: String| Error::Checkpoint {
        path: path.to_path_buf(),
        message,
    };
    let (tensors, metadata) = dml_models::read_tensors(path)?;
    let json = metadata
        .get(STATE_KEY)
        .ok_or_else(|| bad(format!("no `{STATE_KEY}` metadata: not a dml checkpoint")))?;
    let state: TrainState =
        serde_json::from_str(json).map_err(|e| bad(format!("bad training state: {e}")))?;
    let mut vars = BTreeMap::new();
    let mut optim = BTreeMap::new();
    let (mut mem_rows, mut mem_labels) = (None, None);
    let mut torchscript = None;
    for (name, t) in tensors {
        if let Some(rest) = name.strip_prefix("vars.") {
            vars.insert(rest.to_owned(), t);
        } else if let Some(rest) = name.strip_prefix("optim.") {
            optim.insert(rest.to_owned(), t);
        } else if name == "memory.embeddings" {
            let t = t.f_to_kind(Kind::Float)?.f_flatten(0, -1)?;
            mem_rows = Some(Vec::<f32>::try_from(&t)?);
        } else if name == "memory.labels" {
            let t = t.f_to_kind(Kind::Int64)?;
            let v = Vec::<i64>::try_from(&t)?;
            let labels = v
                .into_iter()
                .map(u32::try_from)
                .collect::<std::result::Result<Vec<u32>, _>>()
                .map_err(|_| bad("memory.labels holds a label outside 0..2³²".to_owned()))?;
            mem_labels = Some(labels);
        } else if name == TORCHSCRIPT_KEY {
            torchscript = Some(Vec::<u8>::try_from(&t.f_to_kind(Kind::Uint8)?)?);
        }
    }
    let memory = match (mem_rows, mem_labels) {
        (Some(rows), Some(labels)) => Some((rows, labels)),
        (None, None) => None,
        _ => {
            return Err(bad(
                "holds only one of memory.embeddings and memory.labels".to_owned()
            ));
        }
    };
    Ok(Checkpoint {
        state,
        vars,
        optim,
        memory,
        torchscript,
    })
}

impl Checkpoint {
    /// Copies the saved variables into `vs` (every variable of `vs` must be present with the same
    /// shape) and the saved moments into `optim`.
    pub fn restore(&self, vs: &tch::nn::VarStore, optim: &mut Optimizer) -> Result<()> {
        restore_vars(&self.vars, vs)?;
        optim.load_state(&self.optim, self.state.n_steps)
    }
}

/// Copies `vars` into the variables of `vs` with the same names.
pub fn restore_vars(vars: &BTreeMap<String, Tensor>, vs: &tch::nn::VarStore) -> Result<()> {
    let _guard = tch::no_grad_guard();
    for (name, mut dst) in vs.variables() {
        let src = vars
            .get(&name)
            .ok_or_else(|| Error::CheckpointMissingTensor(format!("vars.{name}")))?;
        if src.size() != dst.size() {
            return Err(Error::CheckpointShape {
                name: format!("vars.{name}"),
                expected: dst.size(),
                found: src.size(),
            });
        }
        dst.f_copy_(src)?;
    }
    Ok(())
}
