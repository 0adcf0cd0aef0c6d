//! The run configuration: one TOML document for data, model, batch, miner, loss, optimiser,
//! schedule, training, evaluation and output.
//!
//! Every table and every struct rejects unknown keys (`deny_unknown_fields`), so a typo such as
//! `epoch = 3` is an error naming the key, its line and its column, never a silently ignored
//! setting. Every field but `[data]` has a default, stated in its documentation; a minimal config
//! is
//!
//! ```toml
//! [data]
//! kind = "digits"
//! ```
//!
//! [`Config::validate`] checks the rules the schema cannot express, one [`ConfigError`] variant
//! per rule. The shipped configs are in `configs/` (`digits.toml` is the embedded default).

use std::path::{Path, PathBuf};

use dml_eval::EvalConfig;
use dml_kernels::Metric;
use dml_losses::LossConfig;
use dml_models::{DeviceChoice, ModelConfig};
use dml_sampling::{MinerConfig, MinerContext};
use serde::{Deserialize, Serialize};

use crate::optim::{Group, GroupSettings, OptimizerKind};
use crate::{Error, Result};

/// The configuration shipped as `configs/digits.toml`, built into the library: margin loss with
/// distance-weighted sampling on the embedded 8×8 digits.
pub const DIGITS_TOML: &str = include_str!("../../../configs/digits.toml");

/// A whole run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Seed, device, threads and output folder.
    #[serde(default)]
    pub run: RunConfig,
    /// The data set and its class-disjoint train/test split (required).
    pub data: dml_data::DataConfig,
    /// The embedding network, including its embedding size and L2 normalisation (default: the
    /// models crate's default ConvNet).
    #[serde(default)]
    pub model: ModelConfig,
    /// P classes × K items per batch.
    #[serde(default)]
    pub batch: BatchConfig,
    /// Augmentation and resizing of training and evaluation items.
    #[serde(default)]
    pub transform: TransformConfig,
    /// The miner and its parameters. Absent (or `kind = "none"`): no miner, and the loss uses
    /// the full set its paper uses (all pairs, all triplets; every embedding against every
    /// class vector for the proxy losses, which take no miner at all).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "miner_or_none"
    )]
    pub miner: Option<MinerConfig>,
    /// The loss and its parameters (default: margin loss with its defaults).
    #[serde(default)]
    pub loss: LossConfig,
    /// The optimiser and its learning rates.
    #[serde(default)]
    pub optimizer: OptimizerConfig,
    /// The learning-rate schedule (default: constant).
    #[serde(default)]
    pub schedule: ScheduleConfig,
    /// Epochs, evaluation period and checkpoints.
    #[serde(default)]
    pub train: TrainConfig,
    /// What is measured on the held-out classes.
    #[serde(default)]
    pub eval: EvalSettings,
    /// An instance term added to the loss (absent: none): NT-Xent over the `batch.views` copies
    /// of each item, as in SimCLR, weighted against the class loss.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub self_supervised: Option<SelfSupervisedConfig>,
    /// Cross-batch memory (absent: none): a queue of past batches' embeddings that each batch is
    /// also mined and compared against.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<MemoryConfig>,
}

/// The `[memory]` table: cross-batch memory (XBM; Wang, Zhang, Huang and Scott, CVPR 2020).
///
/// A first-in-first-out queue of the last `size` training embeddings (detached) and their labels.
/// Each step's loss is `L(B, B) + weight · L(B, M)`: the batch's own loss as without memory,
/// plus the same loss (and the same miner) of the batch against the memory `M` as it stood
/// before the step; the batch is enqueued after the step's loss is taken, so it is never
/// compared with its own copies. The memory starts filling after `start_after_steps`
/// optimiser steps (the first embeddings of a run drift too fast to be worth keeping; the
/// paper waits 1,000 iterations). Saved in the checkpoint, so a resumed run continues exactly.
/// Works with the losses that compare pairs or triplets (contrastive, triplet, margin,
/// multi-similarity) and every miner but `n_pairs` and `lifted_structured`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MemoryConfig {
    /// Embeddings kept (default 8,192; the paper uses 55,000 on SOP). At least the batch size.
    pub size: usize,
    /// Optimiser steps before the memory starts filling (default 0).
    pub start_after_steps: u64,
    /// Weight of the memory term against the batch term (default 1).
    pub weight: f64,
}

impl Default for MemoryConfig {
    fn default() -> Self {
        MemoryConfig {
            size: 8192,
            start_after_steps: 0,
            weight: 1.0,
        }
    }
}

/// The losses that take a memory (a reference set): pml's `CrossBatchMemory` list, as far as dml
/// has them.
/// The `[self_supervised]` table: `weight × NT-Xent` added to the class loss.
///
/// NT-Xent (SimCLR; pml's `NTXentLoss` under `SelfSupervisedLoss`) treats every item of the
/// batch as its own class: for each embedding, the other views of the same item are the
/// positives and every other embedding of the batch a negative,
/// `−log(exp(s⁺/τ) / Σ_{j≠i} exp(s_ij/τ))` with cosine similarities `s`, averaged over the
/// positive pairs (dml's SupCon loss on instance labels). It keeps the embedding describing the
/// items themselves, not only the training classes, which is what classes never seen in
/// training are retrieved by. Needs `batch.views` of at least 2 and a training transform that
/// makes the views differ.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SelfSupervisedConfig {
    /// Weight of the instance term against the class loss (default 1).
    pub weight: f64,
    /// Temperature τ of NT-Xent (default 0.1).
    pub temperature: f64,
}

impl Default for SelfSupervisedConfig {
    fn default() -> Self {
        SelfSupervisedConfig {
            weight: 1.0,
            temperature: 0.1,
        }
    }
}

/// The `[miner]` table: a miner, or `kind = "none"` (no other key) for none.
fn miner_or_none<'de, D>(d: D) -> std::result::Result<Option<MinerConfig>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    use serde::de::Error as _;
    let table = toml::Table::deserialize(d)?;
    if table.get("kind").and_then(toml::Value::as_str) == Some(NO_MINER) {
        if let Some(key) = table.keys().find(|k| *k != "kind") {
            return Err(D::Error::custom(format!(
                "unknown field `{key}`: a [miner] of kind \"none\" takes no parameters"
            )));
        }
        return Ok(None);
    }
    MinerConfig::deserialize(toml::Value::Table(table))
        .map(Some)
        .map_err(|e| D::Error::custom(e.to_string().trim_end()))
}

/// The `kind` that stands for "no miner" in `[miner]` and in `dml compare --miners`.
pub const NO_MINER: &str = "none";

/// Seed, device, threads and output folder.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RunConfig {
    /// A name for the run, used in plot titles (default `"run"`).
    pub name: String,
    /// The seed from which every random choice of the run is derived: initial weights, batches,
    /// augmentation, mining (default 0). The same seed gives the same numbers on the CPU.
    pub seed: u64,
    /// `auto`, `cpu` or `cuda` (default `auto`: CUDA when available).
    pub device: DeviceChoice,
    /// LibTorch intra-op threads; `0` leaves LibTorch's choice (default 0). Fix it for
    /// bit-for-bit reproducible CPU runs across machines.
    pub threads: usize,
    /// Where the metrics log, checkpoints and plots go (default `runs/<name>`); relative paths
    /// are relative to the current folder.
    pub output_dir: Option<PathBuf>,
}

impl Default for RunConfig {
    fn default() -> Self {
        RunConfig {
            name: "run".to_owned(),
            seed: 0,
            device: DeviceChoice::Auto,
            threads: 0,
            output_dir: None,
        }
    }
}

impl RunConfig {
    /// The output folder: `output_dir`, or `runs/<name>`.
    pub fn output_dir(&self) -> PathBuf {
        self.output_dir
            .clone()
            .unwrap_or_else(|| Path::new("runs").join(&self.name))
    }
}

/// The PK batch: `p` classes, `k` items of each.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BatchConfig {
    /// Classes per batch (default 8).
    pub p: usize,
    /// Items per class (default 4).
    pub k: usize,
    /// Batches per epoch; `None` takes the sampler's own count (about one pass over the training
    /// items) (default `None`).
    pub batches_per_epoch: Option<usize>,
    /// Items embedded at once during evaluation (default 256).
    pub eval_batch_size: usize,
    /// Views of each item (default 1): every sampled item enters the batch this many times, each
    /// copy with its own draw of the training transform, so a batch holds `p × k × views`
    /// embeddings. The loss and the miner see the copies as further items of their class;
    /// `[self_supervised]` takes them as the positives of its instance term (two or more).
    pub views: usize,
}

impl Default for BatchConfig {
    fn default() -> Self {
        BatchConfig {
            p: 8,
            k: 4,
            batches_per_epoch: None,
            eval_batch_size: 256,
            views: 1,
        }
    }
}

/// How items become tensors: `[transform.train]` for training batches, `[transform.test]` for
/// evaluation and embedding (each a [`dml_data::Transform`]: `crop`, `hflip`, `normalize`).
/// Without one, an item is its pixels scaled to [0, 1] (right for the digits and MNIST-like
/// sets; image-file data sets of varying sizes need a crop).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TransformConfig {
    /// The training transform (default none).
    pub train: Option<dml_data::Transform>,
    /// The evaluation transform (default none).
    pub test: Option<dml_data::Transform>,
}

/// The optimiser: one update rule and learning rate, with optional overrides for the backbone,
/// the embedding head and the loss's own parameters. Fine-tuning a pretrained backbone usually
/// gives it a smaller rate than the new head and the proxies (ProxyAnchor's recipe: the proxies
/// at 100 times the network's rate); the "Sampling Matters" reference trains the margin loss's β
/// with SGD at a much larger rate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OptimizerConfig {
    /// `adam`, `adamw` or `sgd` (default `adam`).
    pub kind: OptimizerKind,
    /// Learning rate of every group without its own (default 1e-3).
    pub lr: f64,
    /// Learning rate of the backbone (default: `lr`).
    pub backbone_lr: Option<f64>,
    /// Learning rate of the embedding head (default: `lr`).
    pub head_lr: Option<f64>,
    /// Learning rate of the loss's parameters (default: `lr`).
    pub loss_lr: Option<f64>,
    /// Update rule of the loss's parameters (default: `kind`). The loss group never has weight
    /// decay: decaying β towards 0 would be a regulariser nobody asked for.
    pub loss_kind: Option<OptimizerKind>,
    /// Weight decay of the network (L2 for `adam`/`sgd`, decoupled for `adamw`) (default 0).
    pub weight_decay: f64,
    /// SGD momentum (default 0.9).
    pub momentum: f64,
    /// Nesterov momentum for SGD (default `false`).
    pub nesterov: bool,
    /// Adam's β₁, β₂ (default `[0.9, 0.999]`).
    pub betas: [f64; 2],
    /// Adam's ε (default 1e-8).
    pub eps: f64,
}

impl Default for OptimizerConfig {
    fn default() -> Self {
        OptimizerConfig {
            kind: OptimizerKind::Adam,
            lr: 1e-3,
            backbone_lr: None,
            head_lr: None,
            loss_lr: None,
            loss_kind: None,
            weight_decay: 0.0,
            momentum: 0.9,
            nesterov: false,
            betas: [0.9, 0.999],
            eps: 1e-8,
        }
    }
}

impl OptimizerConfig {
    /// The settings of each parameter group.
    pub fn groups(&self) -> std::collections::BTreeMap<Group, GroupSettings> {
        let base = GroupSettings {
            kind: self.kind,
            lr: self.lr,
            weight_decay: self.weight_decay,
            momentum: self.momentum,
            nesterov: self.nesterov,
            betas: (self.betas[0], self.betas[1]),
            eps: self.eps,
        };
        let head = GroupSettings {
            lr: self.head_lr.unwrap_or(self.lr),
            ..base
        };
        let loss = GroupSettings {
            kind: self.loss_kind.unwrap_or(self.kind),
            lr: self.loss_lr.unwrap_or(self.lr),
            weight_decay: 0.0,
            ..base
        };
        let backbone = GroupSettings {
            lr: self.backbone_lr.unwrap_or(self.lr),
            ..base
        };
        [
            (Group::Backbone, backbone),
            (Group::Head, head),
            (Group::Loss, loss),
        ]
        .into_iter()
        .collect()
    }
}

/// How the learning rate changes over epochs: a factor applied to every group's rate.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum ScheduleConfig {
    /// Factor 1 throughout.
    #[default]
    Constant,
    /// Multiply by `gamma` at each epoch listed in `milestones` (the 0-based epoch index at which
    /// the new rate starts, as the "Sampling Matters" reference code counts), e.g.
    /// `milestones = [12, 14, 16, 18]`, `gamma = 0.5`.
    Step {
        /// Epochs at which the rate is multiplied by `gamma`.
        milestones: Vec<u64>,
        /// The multiplier (default 0.1).
        #[serde(default = "default_gamma")]
        gamma: f64,
    },
    /// Cosine annealing from 1 to `min_factor` over the run, after `warmup_epochs` of linear
    /// warm-up from `1 / (warmup_epochs + 1)`; evaluated per step.
    Cosine {
        /// The final factor (default 0).
        #[serde(default)]
        min_factor: f64,
        /// Epochs of linear warm-up (default 0).
        #[serde(default)]
        warmup_epochs: u64,
    },
}

fn default_gamma() -> f64 {
    0.1
}

impl ScheduleConfig {
    /// The learning-rate factor at `progress` epochs into a run of `epochs` epochs (`progress`
    /// is fractional inside an epoch: epoch index + batch / batches_per_epoch).
    pub fn factor(&self, progress: f64, epochs: u64) -> f64 {
        match self {
            ScheduleConfig::Constant => 1.0,
            ScheduleConfig::Step { milestones, gamma } => {
                let epoch = progress.floor() as u64;
                let passed = milestones.iter().filter(|&&m| epoch >= m).count();
                gamma.powi(passed as i32)
            }
            ScheduleConfig::Cosine {
                min_factor,
                warmup_epochs,
            } => {
                let warm = *warmup_epochs as f64;
                if progress < warm {
                    return (progress + 1.0) / (warm + 1.0);
                }
                let span = (epochs as f64 - warm).max(1e-12);
                let t = ((progress - warm) / span).clamp(0.0, 1.0);
                min_factor + (1.0 - min_factor) * 0.5 * (1.0 + (std::f64::consts::PI * t).cos())
            }
        }
    }
}

/// Epochs, evaluation period and checkpoints.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrainConfig {
    /// Epochs to train (default 10).
    pub epochs: u64,
    /// Evaluate on the held-out classes every this many epochs, and after the last (default 1;
    /// 0 evaluates only after the last epoch).
    pub eval_every: u64,
    /// Also evaluate the untrained network before the first epoch, as epoch 0 (default `true`).
    pub eval_before: bool,
    /// Write `checkpoint.safetensors` every this many epochs, and after the last (default 1).
    pub checkpoint_every: u64,
    /// Show a progress bar when standard error is a terminal (default `true`).
    pub progress: bool,
    /// Write the plots at the end of the run (default `true`).
    pub plots: bool,
    /// What a step whose embeddings, loss or gradient is not finite does (default `stop`).
    pub on_non_finite: OnNonFinite,
    /// Load the next training batch (decode, augment, stack) on a thread of its own while the
    /// current step runs (default `true`). The batches are the same either way.
    pub prefetch: bool,
    /// Epochs at the start during which the backbone is frozen: its forward pass runs in
    /// evaluation mode without gradient, so only the embedding head and the loss's parameters
    /// (proxies, β) learn, then the whole network trains (default 0). The usual warm-up when
    /// fine-tuning a pretrained backbone with a new head (ProxyAnchor's recipe freezes it for
    /// the first epoch), so the random head's first gradients do not disturb the pretrained
    /// features. At `train.epochs` or more, the backbone never trains (a linear probe).
    pub freeze_backbone_epochs: u64,
}

/// What training does with a step that produces a NaN or an infinity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnNonFinite {
    /// Stop with an error naming the epoch, the step and what was not finite; the weights are
    /// not updated and the last checkpoint on disk stays the last good state.
    #[default]
    Stop,
    /// Skip the batch (no update) and go on; the count is in the log and the report. Weights
    /// that have themselves become non-finite still stop the run at the next checkpoint.
    SkipBatch,
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            epochs: 10,
            eval_every: 1,
            eval_before: true,
            checkpoint_every: 1,
            progress: true,
            plots: true,
            on_non_finite: OnNonFinite::Stop,
            prefetch: true,
            freeze_backbone_epochs: 0,
        }
    }
}

/// What is measured on the held-out classes: the retrieval metric, the baseline switches, and
/// every key of [`dml_eval::EvalConfig`] (`recall_at`, `r_metrics`, `nmi`, `ami`,
/// `seed`, `kmeans_restarts`, `kmeans_max_iter`, `kmeans_seeding`, ...) in the same `[eval]`
/// table. A key that is
/// none of these is an error naming it (serde's `flatten` would let it pass silently, so the
/// table is read by hand).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EvalSettings {
    /// The metric used for retrieval (default `euclidean`; on L2-normalised embeddings every
    /// metric ranks the same).
    pub metric: Metric,
    /// Also evaluate the raw input as a baseline (default `true`): each held-out item flattened
    /// (after the test transform), L2-normalised when the model normalises its embeddings,
    /// with the same metric and scores. Computed once per run; skipped, with the reason in the
    /// report, when the items differ in size or the flattened set would exceed 2 GiB.
    pub raw_input: bool,
    /// Also evaluate the frozen backbone as a baseline when it comes with weights
    /// (`model.pretrained`, or a TorchScript module) (default `true`): the held-out items'
    /// pooled backbone features before any training. Computed once per run, before the first
    /// step.
    pub frozen_backbone: bool,
    /// What to compute.
    #[serde(flatten)]
    pub config: EvalConfig,
}

impl<'de> Deserialize<'de> for EvalSettings {
    fn deserialize<D>(d: D) -> std::result::Result<Self, D::Error>
    where
        D: serde::Deserializer<'de>,
    {
        use serde::de::Error as _;
        /// The keys of the table that are not [`EvalConfig`]'s.
        #[derive(Deserialize)]
        #[serde(default, deny_unknown_fields)]
        struct Own {
            metric: Metric,
            raw_input: bool,
            frozen_backbone: bool,
        }
        impl Default for Own {
            fn default() -> Self {
                let d = EvalSettings::default();
                Own {
                    metric: d.metric,
                    raw_input: d.raw_input,
                    frozen_backbone: d.frozen_backbone,
                }
            }
        }
        const OWN: [&str; 3] = ["metric", "raw_input", "frozen_backbone"];
        let table = toml::Table::deserialize(d)?;
        let (own, rest): (toml::Table, toml::Table) = table
            .into_iter()
            .partition(|(k, _)| OWN.contains(&k.as_str()));
        let own = Own::deserialize(toml::Value::Table(own)).map_err(D::Error::custom)?;
        let config = EvalConfig::deserialize(toml::Value::Table(rest)).map_err(|e| {
            let text = e.to_string();
            let text = text.trim_end();
            // serde names the expected keys of EvalConfig; the table has three more.
            if text.starts_with("unknown field") {
                D::Error::custom(format!("{text}, `metric`, `raw_input`, `frozen_backbone`"))
            } else {
                D::Error::custom(text)
            }
        })?;
        Ok(EvalSettings {
            metric: own.metric,
            raw_input: own.raw_input,
            frozen_backbone: own.frozen_backbone,
            config,
        })
    }
}

impl Default for EvalSettings {
    fn default() -> Self {
        EvalSettings {
            metric: Metric::Euclidean,
            raw_input: true,
            frozen_backbone: true,
            config: EvalConfig::default(),
        }
    }
}

/// A rule of the configuration that was broken, one variant per rule.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A multi-process run with fewer classes per batch than processes.
    #[error(
        "batch.p = {p} is smaller than the number of processes ({world}): each rank embeds whole \
         classes of every batch, so it needs at least one; raise batch.p or start fewer processes"
    )]
    BatchPWorld {
        /// `batch.p`.
        p: usize,
        /// The number of processes.
        world: usize,
    },
    /// `batch.p < 2`: a batch needs two classes to hold a negative.
    #[error("batch.p must be at least 2, got {0}")]
    BatchP(usize),
    /// `batch.k < 2`: a batch needs two items per class to hold a positive.
    #[error("batch.k must be at least 2, got {0}")]
    BatchK(usize),
    /// `batch.batches_per_epoch = 0`.
    #[error("batch.batches_per_epoch must be positive")]
    BatchesPerEpoch,
    /// `batch.eval_batch_size = 0`.
    #[error("batch.eval_batch_size must be positive")]
    EvalBatchSize,
    /// `batch.views = 0`.
    #[error("batch.views must be at least 1 (1: each sampled item once)")]
    Views,
    /// `[self_supervised]` with fewer than two views of each item.
    #[error(
        "[self_supervised] needs batch.views of at least 2 (the views of an item are its \
         positives), got {0}: set batch.views = 2"
    )]
    SelfSupervisedViews(usize),
    /// A weight of the instance term that is not positive and finite.
    #[error("self_supervised.weight must be positive and finite, got {0}")]
    SelfSupervisedWeight(f64),
    /// A temperature of the instance term that is not positive and finite.
    #[error("self_supervised.temperature must be positive and finite, got {0}")]
    SelfSupervisedTemperature(f64),
    /// A memory smaller than one batch.
    #[error(
        "memory.size = {size} is smaller than a batch of {batch} (batch.p × batch.k × batch.views): \
         make the memory at least as large as the batch"
    )]
    MemorySize {
        /// The configured size.
        size: usize,
        /// Items per batch.
        batch: usize,
    },
    /// A memory weight that is not positive and finite.
    #[error("memory.weight must be positive and finite, got {0}")]
    MemoryWeight(f64),
    /// A memory with a loss that cannot compare the batch with it.
    #[error(
        "[memory] needs a loss that compares pairs or triplets (contrastive, triplet, margin or \
         multi_similarity), got {0}"
    )]
    MemoryLoss(&'static str),
    /// A memory with a miner that only pairs batch items with each other.
    #[error(
        "[memory] cannot be mined by {0}, which pairs batch items with each other: use all, \
         uniform, hard_negative, semi_hard, batch_hard, distance_weighted or multi_similarity"
    )]
    MemoryMiner(&'static str),
    /// `train.epochs = 0`.
    #[error("train.epochs must be positive")]
    Epochs,
    /// A learning rate that is not a positive finite number.
    #[error("optimizer.{key} must be positive and finite, got {value}")]
    LearningRate {
        /// The key (`lr`, `backbone_lr`, `head_lr`, `loss_lr`).
        key: &'static str,
        /// The value.
        value: f64,
    },
    /// A negative or non-finite weight decay.
    #[error("optimizer.weight_decay must be non-negative and finite, got {0}")]
    WeightDecay(f64),
    /// Momentum outside [0, 1).
    #[error("optimizer.momentum must be in [0, 1), got {0}")]
    Momentum(f64),
    /// Nesterov without momentum.
    #[error("optimizer.nesterov needs a positive momentum")]
    NesterovWithoutMomentum,
    /// Adam betas outside [0, 1).
    #[error("optimizer.betas must both be in [0, 1), got {0:?}")]
    Betas([f64; 2]),
    /// A non-positive ε.
    #[error("optimizer.eps must be positive and finite, got {0}")]
    Eps(f64),
    /// A step schedule's γ that is not positive.
    #[error("schedule.gamma must be positive and finite, got {0}")]
    Gamma(f64),
    /// Cosine `min_factor` outside [0, 1].
    #[error("schedule.min_factor must be in [0, 1], got {0}")]
    MinFactor(f64),
    /// Cosine warm-up as long as the run.
    #[error("schedule.warmup_epochs ({warmup}) must be less than train.epochs ({epochs})")]
    Warmup {
        /// Warm-up epochs.
        warmup: u64,
        /// Epochs.
        epochs: u64,
    },
    /// A miner parameter out of its range (checked by the miner's `init`).
    #[error("invalid [miner]: {0}")]
    Miner(String),
    /// A miner configured for a loss that takes no tuples (the proxy and classification losses).
    #[error(
        "the {loss} loss compares embeddings with its class vectors and takes no miner, but [miner] is {miner:?}: leave [miner] out or set kind = \"none\""
    )]
    MinerNotUsed {
        /// The loss's kind.
        loss: &'static str,
        /// The miner's kind.
        miner: &'static str,
    },
    /// Another rule of `[eval]` ([`dml_eval::EvalConfig::validate`]).
    #[error("[eval]: {0}")]
    Eval(String),
    /// A `dml compare` grid without a cell: every loss takes no miner and no miner list has
    /// `none`.
    #[error(
        "the compare grid is empty: the proxy and classification losses train only with --miners none"
    )]
    EmptyGrid,
    /// Empty `eval.recall_at`.
    #[error("eval.recall_at must list at least one k")]
    RecallAtEmpty,
    /// A zero in `eval.recall_at`.
    #[error("eval.recall_at values must be positive")]
    RecallAtZero,
}

/// A config whose rules were checked, once, by [`Config::check`], with the miner it describes
/// built: what a [`Trainer`](crate::Trainer) is made from. ([`Config::validate`] checks without
/// keeping anything; this is linfa's parameters → checked parameters pattern.)
#[derive(Debug)]
pub struct CheckedConfig {
    config: Config,
    /// The miner, sized to the loss's tuples (`kind = "all"` mines pairs for the pair losses).
    miner: Option<Box<dyn dml_sampling::Miner>>,
}

impl CheckedConfig {
    /// The config.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The config and the built miner.
    pub(crate) fn into_parts(self) -> (Config, Option<Box<dyn dml_sampling::Miner>>) {
        (self.config, self.miner)
    }
}

/// What a [`Trainer`](crate::Trainer) can be made from: a [`CheckedConfig`], or a [`Config`],
/// which is checked on the way.
pub trait IntoChecked {
    /// The checked config.
    ///
    /// # Errors
    /// The rule of the config that is broken.
    fn into_checked(self) -> Result<CheckedConfig>;
}

impl IntoChecked for CheckedConfig {
    fn into_checked(self) -> Result<CheckedConfig> {
        Ok(self)
    }
}

impl IntoChecked for Config {
    fn into_checked(self) -> Result<CheckedConfig> {
        Ok(self.check()?)
    }
}

impl Config {
    /// Checks the rules the schema cannot express ([`Config::validate`]) and builds the miner
    /// the run will use: the config ready to train.
    ///
    /// # Errors
    /// The [`ConfigError`] of the first rule broken.
    pub fn check(self) -> std::result::Result<CheckedConfig, ConfigError> {
        self.validate_rules()?;
        // `kind = "all"` without an output mines the form the loss uses (pairs for the pair
        // losses), as pml's losses do without a miner.
        let miner = match &self.miner {
            Some(m) => {
                let m = match self.loss.tuple_kind() {
                    Some(kind) => m.with_loss_tuples(kind),
                    None => m.clone(),
                };
                Some(
                    m.build(self.miner_context())
                        .map_err(|e| ConfigError::Miner(e.to_string()))?,
                )
            }
            None => None,
        };
        Ok(CheckedConfig {
            config: self,
            miner,
        })
    }

    /// Parses a TOML document. Unknown keys are errors naming the key and where it is; `origin`
    /// names the document in messages (a path, or `<string>`).
    pub fn from_toml_str(text: &str, origin: &str) -> Result<Config> {
        toml::from_str(text).map_err(|e| Error::ConfigParse {
            path: origin.to_owned(),
            message: e.to_string().trim_end().to_owned(),
        })
    }

    /// Reads and parses a TOML file (not validated: call [`Config::validate`]).
    pub fn from_file(path: &Path) -> Result<Config> {
        let text = crate::checkpoint::read_text(path)?;
        Config::from_toml_str(&text, &path.display().to_string())
    }

    /// The embedded default: `configs/digits.toml`.
    pub fn digits() -> Config {
        // The embedded file is parsed by a test, so this cannot fail in a released build.
        Config::from_toml_str(DIGITS_TOML, "configs/digits.toml")
            .unwrap_or_else(|e| unreachable!("the embedded digits config is valid: {e}"))
    }

    /// The config as TOML (what a checkpoint stores).
    pub fn to_toml_string(&self) -> String {
        toml::to_string(self).unwrap_or_else(|e| format!("# could not serialise the config: {e}\n"))
    }

    /// What the miner is built for: the model's embedding length.
    fn miner_context(&self) -> MinerContext {
        MinerContext {
            embedding_dim: usize::try_from(self.model.embedding_dim()).unwrap_or(0),
        }
    }

    /// Checks the rules that the schema cannot express, without keeping anything
    /// ([`Config::check`] returns the checked config); the loss, model and data are checked by
    /// their own crates when they are built.
    pub fn validate(&self) -> std::result::Result<(), ConfigError> {
        self.validate_rules()?;
        if let Some(miner) = &self.miner
            && let Err(e) = miner.build(self.miner_context())
        {
            return Err(ConfigError::Miner(e.to_string()));
        }
        Ok(())
    }

    /// The rules of [`Config::validate`] but the miner's own parameters (which building the
    /// miner checks).
    fn validate_rules(&self) -> std::result::Result<(), ConfigError> {
        if self.batch.p < 2 {
            return Err(ConfigError::BatchP(self.batch.p));
        }
        if self.batch.k < 2 {
            return Err(ConfigError::BatchK(self.batch.k));
        }
        if self.batch.batches_per_epoch == Some(0) {
            return Err(ConfigError::BatchesPerEpoch);
        }
        if self.batch.eval_batch_size == 0 {
            return Err(ConfigError::EvalBatchSize);
        }
        if self.batch.views == 0 {
            return Err(ConfigError::Views);
        }
        if let Some(ss) = &self.self_supervised {
            if self.batch.views < 2 {
                return Err(ConfigError::SelfSupervisedViews(self.batch.views));
            }
            if !(ss.weight.is_finite() && ss.weight > 0.0) {
                return Err(ConfigError::SelfSupervisedWeight(ss.weight));
            }
            if !(ss.temperature.is_finite() && ss.temperature > 0.0) {
                return Err(ConfigError::SelfSupervisedTemperature(ss.temperature));
            }
        }
        if let Some(mem) = &self.memory {
            let batch = self.batch.p * self.batch.k * self.batch.views;
            if mem.size < batch {
                return Err(ConfigError::MemorySize {
                    size: mem.size,
                    batch,
                });
            }
            if !(mem.weight.is_finite() && mem.weight > 0.0) {
                return Err(ConfigError::MemoryWeight(mem.weight));
            }
            if !self.loss.takes_reference() {
                return Err(ConfigError::MemoryLoss(self.loss.kind()));
            }
            if let Some(m) = &self.miner
                && !m.mines_reference()
            {
                return Err(ConfigError::MemoryMiner(m.kind()));
            }
        }
        if self.train.epochs == 0 {
            return Err(ConfigError::Epochs);
        }
        let o = &self.optimizer;
        for (key, value) in [
            ("lr", Some(o.lr)),
            ("backbone_lr", o.backbone_lr),
            ("head_lr", o.head_lr),
            ("loss_lr", o.loss_lr),
        ] {
            if let Some(value) = value
                && !(value.is_finite() && value > 0.0)
            {
                return Err(ConfigError::LearningRate { key, value });
            }
        }
        if !(o.weight_decay.is_finite() && o.weight_decay >= 0.0) {
            return Err(ConfigError::WeightDecay(o.weight_decay));
        }
        if !(0.0..1.0).contains(&o.momentum) {
            return Err(ConfigError::Momentum(o.momentum));
        }
        if o.nesterov && o.momentum == 0.0 {
            return Err(ConfigError::NesterovWithoutMomentum);
        }
        if !o.betas.iter().all(|b| (0.0..1.0).contains(b)) {
            return Err(ConfigError::Betas(o.betas));
        }
        if !(o.eps.is_finite() && o.eps > 0.0) {
            return Err(ConfigError::Eps(o.eps));
        }
        match &self.schedule {
            ScheduleConfig::Constant => {}
            ScheduleConfig::Step { gamma, .. } => {
                if !(gamma.is_finite() && *gamma > 0.0) {
                    return Err(ConfigError::Gamma(*gamma));
                }
            }
            ScheduleConfig::Cosine {
                min_factor,
                warmup_epochs,
            } => {
                if !(0.0..=1.0).contains(min_factor) {
                    return Err(ConfigError::MinFactor(*min_factor));
                }
                if *warmup_epochs >= self.train.epochs {
                    return Err(ConfigError::Warmup {
                        warmup: *warmup_epochs,
                        epochs: self.train.epochs,
                    });
                }
            }
        }
        if let Some(miner) = &self.miner
            && !self.loss.uses_tuples()
        {
            return Err(ConfigError::MinerNotUsed {
                loss: self.loss.kind(),
                miner: miner.kind(),
            });
        }
        if self.eval.config.recall_at.is_empty() {
            return Err(ConfigError::RecallAtEmpty);
        }
        if self.eval.config.recall_at.contains(&0) {
            return Err(ConfigError::RecallAtZero);
        }
        if let Err(e) = self.eval.config.validate() {
            return Err(ConfigError::Eval(e.to_string()));
        }
        Ok(())
    }
}

/// Reads a `[data]` table from a TOML file holding either a whole run config or only `[data]`.
pub fn read_data_config(path: &Path) -> Result<dml_data::DataConfig> {
    #[derive(Deserialize)]
    struct DataOnly {
        data: dml_data::DataConfig,
    }
    let text = crate::checkpoint::read_text(path)?;
    if let Ok(c) = Config::from_toml_str(&text, &path.display().to_string()) {
        return Ok(c.data);
    }
    toml::from_str::<DataOnly>(&text)
        .map(|d| d.data)
        .map_err(|e| Error::ConfigParse {
            path: path.display().to_string(),
            message: e.to_string().trim_end().to_owned(),
        })
}
