//! One serialisable description of any loss.

use dml_kernels::Metric;
use dml_sampling::TupleKind;
use serde::{Deserialize, Serialize};
use tch::nn;

use crate::{
    ArcFaceConfig, ContrastiveConfig, CosFaceConfig, LiftedStructuredConfig, Loss, LossContext,
    MarginConfig, MultiSimilarityConfig, NPairConfig, NormalizedSoftmaxConfig, ProxyAnchorConfig,
    ProxyNcaConfig, Result, SoftTripleConfig, SubCenterArcFaceConfig, SupConConfig, TripletConfig,
};

/// What the registry ([`LossConfig`]) needs of one loss, implemented by the loss's config
/// beside the loss's code: adding a loss is its own file plus one line in `loss_kinds!` below
/// (and its `mod`/`pub use` lines in lib.rs).
pub trait LossSpec {
    /// Checks the parameters and builds the loss. Learnable parameters (the margin loss's β, the
    /// proxies and class weights of the proxy and classification losses) are created under `p`,
    /// sized by `ctx`; losses without parameters ignore both.
    ///
    /// # Errors
    /// The named error of the first invalid parameter.
    fn build(&self, p: &nn::Path, ctx: LossContext) -> Result<Box<dyn Loss>>;

    /// The tuple form the loss works on, or `None` for the losses that take no tuples (they
    /// compare embeddings with class vectors instead).
    fn tuple_kind(&self) -> Option<TupleKind>;

    /// The metric the loss compares embeddings with; miners should use the same.
    fn metric(&self) -> Metric;

    /// Whether the loss can compare a batch with a reference set of past embeddings
    /// ([`Loss::forward_reference`], the cross-batch memory). Default `false`.
    fn takes_reference(&self) -> bool {
        false
    }
}

/// Declares [`LossConfig`] from one line per loss: the variant, its config type, its `kind` tag
/// (used by serde and by [`LossConfig::kind`] alike) and its documentation; everything else the
/// registry knows of a loss comes from its config's [`LossSpec`].
macro_rules! loss_kinds {
    ($($(#[$doc:meta])* $variant:ident($cfg:ty) = $kind:literal,)*) => {
        /// Any loss of this crate with its parameters, as written in a config file.
        ///
        /// Tagged by `kind`; omitted parameters take the documented defaults (pml's), unknown
        /// ones are rejected:
        ///
        /// ```toml
        /// kind = "margin"
        /// margin = 0.2
        /// beta = 1.2
        /// learn_beta = true
        /// nu = 0.0
        /// ```
        ///
        /// The `kind` tag is the loss's one name: serde reads and writes it,
        /// [`LossConfig::kind`] returns it and [`LossConfig::defaults`] lists every kind.
        #[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
        #[serde(tag = "kind", deny_unknown_fields)]
        pub enum LossConfig {
            $($(#[$doc])* #[serde(rename = $kind)] $variant($cfg),)*
        }

        impl LossConfig {
            /// Every loss of this crate with its default parameters, in the order of the enum.
            pub fn defaults() -> impl Iterator<Item = LossConfig> {
                [$(LossConfig::$variant(<$cfg>::default()),)*].into_iter()
            }

            /// The `kind` tag (`"margin"`, `"proxy_anchor"`, ...), as in config files.
            pub fn kind(&self) -> &'static str {
                match self {
                    $(LossConfig::$variant(_) => $kind,)*
                }
            }

            /// The loss's own facts ([`LossSpec`]), from its config.
            pub fn spec(&self) -> &dyn LossSpec {
                match self {
                    $(LossConfig::$variant(c) => c,)*
                }
            }
        }
    };
}

loss_kinds! {
    /// [`crate::ContrastiveLoss`].
    Contrastive(ContrastiveConfig) = "contrastive",
    /// [`crate::TripletLoss`].
    Triplet(TripletConfig) = "triplet",
    /// [`crate::MarginLoss`].
    Margin(MarginConfig) = "margin",
    /// [`crate::LiftedStructuredLoss`].
    LiftedStructured(LiftedStructuredConfig) = "lifted_structured",
    /// [`crate::NPairLoss`].
    NPair(NPairConfig) = "n_pair",
    /// [`crate::MultiSimilarityLoss`].
    MultiSimilarity(MultiSimilarityConfig) = "multi_similarity",
    /// [`crate::SupConLoss`].
    SupCon(SupConConfig) = "sup_con",
    /// [`crate::ProxyNcaLoss`].
    ProxyNca(ProxyNcaConfig) = "proxy_nca",
    /// [`crate::ProxyAnchorLoss`].
    ProxyAnchor(ProxyAnchorConfig) = "proxy_anchor",
    /// [`crate::CosineSoftmaxLoss`] as the normalised softmax loss.
    NormalizedSoftmax(NormalizedSoftmaxConfig) = "normalized_softmax",
    /// [`crate::CosineSoftmaxLoss`] as CosFace.
    CosFace(CosFaceConfig) = "cosface",
    /// [`crate::CosineSoftmaxLoss`] as ArcFace.
    ArcFace(ArcFaceConfig) = "arcface",
    /// [`crate::CosineSoftmaxLoss`] as sub-centre ArcFace.
    SubCenterArcFace(SubCenterArcFaceConfig) = "sub_center_arcface",
    /// [`crate::SoftTripleLoss`].
    SoftTriple(SoftTripleConfig) = "soft_triple",
}

impl Default for LossConfig {
    /// The margin loss with pml's defaults.
    fn default() -> Self {
        LossConfig::Margin(MarginConfig::default())
    }
}

impl LossConfig {
    /// The loss of `kind` with its default parameters, or `None` for an unknown kind.
    pub fn default_of(kind: &str) -> Option<LossConfig> {
        Self::defaults().find(|c| c.kind() == kind)
    }

    /// Checks the parameters and builds the loss ([`LossSpec::build`]).
    ///
    /// # Errors
    /// The named error of the first invalid parameter.
    pub fn build(&self, p: &nn::Path, ctx: LossContext) -> Result<Box<dyn Loss>> {
        self.spec().build(p, ctx)
    }

    /// Whether the loss works on a miner's pairs or triplets. The proxy and classification
    /// losses compare embeddings with class vectors, not with each other: they take no tuples,
    /// and a miner configured for them is an error.
    pub fn uses_tuples(&self) -> bool {
        self.tuple_kind().is_some()
    }

    /// The tuple form the loss works on (`None` for the losses that take no tuples): pairs for
    /// contrastive, lifted structured, N-pair, multi-similarity and SupCon, triplets for the
    /// triplet and margin losses. The `all` miner without an `output` returns this form.
    pub fn tuple_kind(&self) -> Option<TupleKind> {
        self.spec().tuple_kind()
    }

    /// Whether the loss learns vectors per class (proxies, class weights, centres): those need
    /// [`LossContext`] and usually their own learning rate. These are exactly the losses that
    /// take no tuples.
    pub fn has_class_vectors(&self) -> bool {
        self.tuple_kind().is_none()
    }

    /// The metric the loss compares embeddings with (miners should use the same). The proxy
    /// and classification losses compare L2-normalised vectors: cosine, or squared Euclidean
    /// for ProxyNCA.
    pub fn metric(&self) -> Metric {
        self.spec().metric()
    }

    /// Whether the loss can train against a cross-batch memory ([`LossSpec::takes_reference`]):
    /// contrastive, triplet, margin and multi-similarity.
    pub fn takes_reference(&self) -> bool {
        self.spec().takes_reference()
    }
}
