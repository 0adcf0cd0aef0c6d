//! The miners' registry: [`MinerConfig`], one line per miner (its variant, config type, `kind`
//! tag and documentation), from which serde's tagged parsing, [`MinerConfig::defaults`],
//! [`MinerConfig::kind`] and [`MinerConfig::build`] are all generated. A new miner is its own
//! file under `miners/` plus one line here.

use serde::{Deserialize, Serialize};

use crate::Result;
use crate::miner::{Miner, MinerContext, MinerSpec, TupleKind};
use crate::miners::{
    AllMinerConfig, BatchHardMinerConfig, DistanceWeightedMinerConfig, HardNegativeMinerConfig,
    LiftedStructuredMinerConfig, MultiSimilarityMinerConfig, NPairsMinerConfig,
    PairMarginMinerConfig, SemiHardMinerConfig, TripletMarginMinerConfig, UniformMinerConfig,
};

/// Declares [`MinerConfig`] from one line per miner: the variant, its config type, its `kind`
/// tag (used by serde and by [`MinerConfig::kind`] alike) and its documentation.
macro_rules! miner_kinds {
    ($($(#[$doc:meta])* $variant:ident($cfg:ty) = $kind:literal,)*) => {
        /// A miner and its parameters, as written in a config file.
        ///
        /// Tagged by `kind`; each variant holds that miner's config (the rest of the table).
        /// Unknown keys are rejected. Parameters left out take the defaults given on each
        /// config's fields. In TOML:
        ///
        /// ```toml
        /// [miner]
        /// kind = "semi_hard"
        /// margin = 0.2
        /// ```
        ///
        /// The `kind` tag is the miner's one name: serde reads and writes it,
        /// [`MinerConfig::kind`] returns it and [`MinerConfig::defaults`] lists every kind.
        #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
        #[serde(tag = "kind")]
        pub enum MinerConfig {
            $($(#[$doc])* #[serde(rename = $kind)] $variant($cfg),)*
        }

        impl MinerConfig {
            /// Every miner with its default parameters, in the order of the enum.
            pub fn defaults() -> impl Iterator<Item = MinerConfig> {
                [$(MinerConfig::$variant(<$cfg>::default()),)*].into_iter()
            }

            /// The `kind` tag (`"semi_hard"`, `"distance_weighted"`, ...), as in config files.
            pub fn kind(&self) -> &'static str {
                match self {
                    $(MinerConfig::$variant(_) => $kind,)*
                }
            }

            /// The miner's own facts ([`MinerSpec`]), from its config.
            pub fn spec(&self) -> &dyn MinerSpec {
                match self {
                    $(MinerConfig::$variant(c) => c,)*
                }
            }

            /// Builds the miner for `ctx` ([`MinerSpec::build`]); the config's checks run here,
            /// and the miner does not check them again when it mines.
            ///
            /// # Errors
            /// The named error of the first invalid parameter.
            pub fn build(&self, ctx: MinerContext) -> Result<Box<dyn Miner>> {
                self.spec().build(ctx)
            }

            /// Whether the miner can mine against a reference set ([`MinerSpec::mines_reference`]).
            pub fn mines_reference(&self) -> bool {
                self.spec().mines_reference()
            }
        }
    };
}

miner_kinds! {
    /// [`AllMiner`](crate::AllMiner): every pair or every triplet.
    All(AllMinerConfig) = "all",
    /// [`UniformMiner`](crate::UniformMiner): random negatives for each positive pair.
    Uniform(UniformMinerConfig) = "uniform",
    /// [`HardNegativeMiner`](crate::HardNegativeMiner): the closest negative for each positive
    /// pair, or all hard triplets.
    HardNegative(HardNegativeMinerConfig) = "hard_negative",
    /// [`SemiHardMiner`](crate::SemiHardMiner): negatives farther than the positive but within
    /// the margin.
    SemiHard(SemiHardMinerConfig) = "semi_hard",
    /// [`BatchHardMiner`](crate::BatchHardMiner): hardest positive and hardest negative per
    /// anchor.
    BatchHard(BatchHardMinerConfig) = "batch_hard",
    /// [`NPairsMiner`](crate::NPairsMiner): one positive per class, other classes' positives as
    /// negatives.
    NPairs(NPairsMinerConfig) = "n_pairs",
    /// [`LiftedStructuredMiner`](crate::LiftedStructuredMiner): every positive pair with the
    /// negatives of both ends.
    LiftedStructured(LiftedStructuredMinerConfig) = "lifted_structured",
    /// [`DistanceWeightedMiner`](crate::DistanceWeightedMiner): negatives drawn against the
    /// unit-sphere distance density.
    DistanceWeighted(DistanceWeightedMinerConfig) = "distance_weighted",
    /// [`MultiSimilarityMiner`](crate::MultiSimilarityMiner): pairs kept by the multi-similarity
    /// epsilon rule.
    MultiSimilarity(MultiSimilarityMinerConfig) = "multi_similarity",
    /// [`TripletMarginMiner`](crate::TripletMarginMiner): every triplet whose margin lies in a
    /// band (pml's `TripletMarginMiner`).
    TripletMargin(TripletMarginMinerConfig) = "triplet_margin",
    /// [`PairMarginMiner`](crate::PairMarginMiner): the pairs that violate a contrastive margin
    /// (pml's `PairMarginMiner`).
    PairMargin(PairMarginMinerConfig) = "pair_margin",
}

impl MinerConfig {
    /// This config with the `all` miner's unset `output` filled with the form the loss uses
    /// (`kind`); every other miner, and an `all` miner whose output is given, unchanged. So
    /// `kind = "all"` feeds a pair loss its pairs, not every triplet converted to pairs.
    pub fn with_loss_tuples(&self, kind: TupleKind) -> MinerConfig {
        match self {
            MinerConfig::All(c) if c.output.is_none() => {
                MinerConfig::All(AllMinerConfig { output: Some(kind) })
            }
            other => other.clone(),
        }
    }
}
