//! dml: deep metric learning in Rust.
//!
//! This facade re-exports every layer as a module and adds what only it can own: the run
//! [`Config`] (one TOML document), the [`Trainer`] that runs the training loop, checkpoints, the
//! metrics log, plots, the loss × miner comparison, and the `dml` command-line tool.
//!
//! | module | what |
//! |---|---|
//! | [`kernels`] | metrics, L2 normalisation, pairwise distances, exact k-NN |
//! | [`sampling`] | PK batch sampler, miners (uniform, semi-hard, batch-hard, distance-weighted, …) |
//! | [`losses`] | contrastive, triplet, margin, lifted structured, N-pair, multi-similarity losses |
//! | [`models`] | embedding networks (MLP, ConvNet, ResNet) on tch |
//! | [`data`] | data sets and class-disjoint splits |
//! | [`eval`] | Recall@K, precision@1, R-precision, MAP@R, NMI |
//!
//! One training step: PK sampler → [`data::load_batch`] → tensor → [`models::EmbeddingNet`] →
//! embeddings → a detached copy → [`kernels::self_pairwise`] → miner → tuples → loss (plus, with
//! `[memory]`, the loss against a [`memory::CrossBatchMemory`]) → backward → [`Optimizer`] step.
//! See [`Trainer`]; to embed with a trained network alone, [`embed::TrainedModel`].
//!
//! ```
//! use dml::{Config, Trainer};
//!
//! # fn main() -> dml::Result<()> {
//! // The embedded default: margin loss + distance-weighted sampling on the 8×8 digits,
//! // trained on classes 0–4 and evaluated on the unseen classes 5–9.
//! let mut config = Config::digits();
//! config.train.epochs = 3;
//! config.train.plots = false;
//! config.run.device = dml::models::DeviceChoice::Cpu;
//! let dir = std::env::temp_dir().join(format!("dml-doc-{}", std::process::id()));
//! config.run.output_dir = Some(dir.clone());
//!
//! // The config is checked once, here (`config.check()?` gives the checked config itself).
//! let mut trainer = Trainer::new(config)?;
//! let report = trainer.fit()?;
//! // Every held-out score beside its two baselines: the raw pixels and the untrained network.
//! let trained = report.final_metrics.as_ref().expect("evaluated after the last epoch");
//! let untrained = report.initial_metrics.as_ref().expect("evaluated before the first");
//! let raw_input = report.raw_input.as_ref().and_then(|r| r.metrics.as_ref()).expect("baseline");
//! for (score, value) in trained.scores() {
//!     println!("{score}: raw input {:?}, untrained {:?}, trained {value:.4}",
//!              raw_input.get(score), untrained.get(score));
//! }
//! // The metrics log has one record per epoch (epoch 0 is the untrained network): the
//! // training loss fell to well under half its first epoch's.
//! let log = dml::log::MetricsLog::read(&dir.join("metrics.jsonl"))?;
//! let loss = |e: u64| log.iter().find(|r| r.epoch == e).and_then(|r| r.loss).expect("logged");
//! assert!(loss(3) < 0.5 * loss(1), "loss {} -> {}", loss(1), loss(3));
//! # std::fs::remove_dir_all(dir).ok();
//! # Ok(())
//! # }
//! ```
#![warn(missing_docs)]

pub use dml_data as data;
pub use dml_distributed as distributed;
pub use dml_eval as eval;
pub use dml_kernels as kernels;
pub use dml_losses as losses;
pub use dml_models as models;
pub use dml_sampling as sampling;

pub mod checkpoint;
pub mod compare;
pub mod config;
pub mod embed;
mod error;
pub mod launch;
pub mod log;
pub mod memory;
pub mod observe;
pub mod optim;
pub mod plots;
mod report;
pub mod state;
pub mod trainer;

pub use crate::{
    config::{CheckedConfig, Config, ConfigError},
    error::{Error, Result},
    optim::{Optimizer, OptimizerKind},
    trainer::{TrainReport, Trainer},
};
