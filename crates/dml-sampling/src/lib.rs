//! PK batch sampling and mining strategies for deep metric learning, free of libtorch.
//!
//! A training step of deep metric learning draws a batch of `P` classes × `K` items
//! ([`PkSampler`]), embeds it, computes the batch's pairwise distance matrix and lets a
//! [`Miner`] choose the tuples the loss sees: pairs ([`Pairs`]) or triplets ([`Triplets`]), with
//! optional weights, together a [`Tuples`]. Miners take a plain `ndarray` view of the matrix and
//! the labels, so this crate works with any framework; the metric
//! ([`dml_kernels::Metric`]) tells a miner whether small (distances) or large (similarities)
//! means close.
//!
//! Miners: [`AllMiner`], [`UniformMiner`], [`HardNegativeMiner`], [`SemiHardMiner`],
//! [`BatchHardMiner`], [`NPairsMiner`], [`LiftedStructuredMiner`], [`DistanceWeightedMiner`],
//! [`MultiSimilarityMiner`], and pytorch-metric-learning's [`TripletMarginMiner`] and
//! [`PairMarginMiner`]; each documents its paper, formula and pytorch-metric-learning
//! equivalent. Each is built by the `init` of its config ([`AllMinerConfig`], [`UniformMinerConfig`],
//! [`HardNegativeMinerConfig`], [`SemiHardMinerConfig`], [`BatchHardMinerConfig`], [`NPairsMinerConfig`],
//! [`LiftedStructuredMinerConfig`], [`DistanceWeightedMinerConfig`], [`MultiSimilarityMinerConfig`],
//! [`TripletMarginMinerConfig`], [`PairMarginMinerConfig`]: the
//! miner's parameters as a serde struct with defaults), which checks the parameters once; the
//! miner does not check them again on every batch. [`MinerConfig`], tagged by `kind`, holds any of
//! these configs in a config file and builds its miner as a `Box<dyn Miner>`.
//!
//! Cross-batch memory: [`MemoryBank`] keeps past batches' embeddings, and every miner but
//! N-pairs and lifted structured mines a batch against it ([`Miner::mine_reference`]; anchors
//! index the batch, positives and negatives the bank).
//!
//! [`MiningSummary`] counts what a miner picked and histograms its positive and negative
//! distances; [`unit_sphere_log_density`] is the density those are compared against.
//!
//! Most users reach this crate through the facade crate `dml` (`dml::sampling`).
//!
//! # Example
//!
//! ```
//! use dml_kernels::Metric;
//! use dml_sampling::{
//!     BatchHardMinerConfig, Error, Miner, MinerConfig, MinerContext, SemiHardMinerConfig, Tuples,
//! };
//! use ndarray::array;
//! use rand::SeedableRng;
//!
//! # fn main() -> dml_sampling::Result<()> {
//! // Four items of two classes on a line; Euclidean distances.
//! let x = [0.0f32, 1.0, 3.0, 3.5];
//! let labels = [0, 0, 1, 1];
//! let dist = ndarray::Array2::from_shape_fn((4, 4), |(i, j)| (x[i] - x[j]).abs());
//! let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
//! let miner = BatchHardMinerConfig::default().init()?;
//! let tuples = miner.mine(dist.view(), Metric::Euclidean, &labels, &mut rng)?;
//! let Tuples::Triplets(t) = tuples else { unreachable!() };
//! // Item 1's hardest positive is item 0 and its hardest negative is item 2.
//! assert_eq!((t.anchor[1], t.positive[1], t.negative[1]), (1, 0, 2));
//!
//! // The same miner from a config file's `[miner]` table, built for 1-d embeddings (only the
//! // distance-weighted miner reads the length).
//! let cfg: MinerConfig = toml::from_str(r#"kind = "batch_hard""#).unwrap();
//! let from_file = cfg.build(MinerContext { embedding_dim: 1 })?;
//! let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
//! assert_eq!(from_file.mine(dist.view(), Metric::Euclidean, &labels, &mut rng)?, Tuples::Triplets(t));
//!
//! // Parameters are checked once, when the miner is built.
//! let bad = SemiHardMinerConfig { margin: -1.0, ..SemiHardMinerConfig::default() };
//! assert!(matches!(bad.init(), Err(Error::InvalidMargin { .. })));
//! # let _ = array![[0.0f32]];
//! # Ok(())
//! # }
//! ```

#![warn(missing_docs)]

mod config;
mod error;
mod memory;
mod miner;
mod miners;
mod pk;
mod summary;
mod tuples;

pub use crate::{
    config::MinerConfig,
    error::{Error, Result},
    memory::MemoryBank,
    miner::{Batch, Miner, MinerContext, MinerSpec, TupleKind},
    miners::{
        AllMiner, AllMinerConfig, BatchHardMiner, BatchHardMinerConfig, DistanceWeightedMiner,
        DistanceWeightedMinerConfig, HardNegativeMiner, HardNegativeMinerConfig,
        HardNegativeSelect, LiftedStructuredMiner, LiftedStructuredMinerConfig,
        MultiSimilarityMiner, MultiSimilarityMinerConfig, NPairsMiner, NPairsMinerConfig,
        PairMarginMiner, PairMarginMinerConfig, PairSelect, SemiHardFallback, SemiHardMiner,
        SemiHardMinerConfig, SemiHardSelect, TripletMarginMiner, TripletMarginMinerConfig,
        TripletMarginSelect, UniformMiner, UniformMinerConfig, unit_sphere_log_density,
    },
    pk::{Epoch, PkSampler},
    summary::{Histogram, MiningSummary},
    tuples::{Pairs, Triplets, Tuples},
};
