//! Errors of dml-losses.

/// Everything that can go wrong in dml-losses.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Embeddings that are not a `batch × dim` matrix.
    #[error("embeddings must be a 2-d tensor (batch × dim), got shape {0:?}")]
    EmbeddingsShape(Vec<i64>),
    /// Embeddings of an integer or boolean kind.
    #[error("embeddings must be floating point, got {0:?}")]
    EmbeddingsKind(tch::Kind),
    /// A label list whose length is not the batch size.
    #[error("{labels} labels for a batch of {batch} embeddings")]
    LabelCount {
        /// Number of labels given.
        labels: usize,
        /// Number of embeddings (rows).
        batch: usize,
    },
    /// Reference embeddings that are not an `M × D` matrix of the batch's width.
    #[error("reference embeddings must be a 2-d tensor (rows × {dim}), got shape {got:?}")]
    ReferenceShape {
        /// The reference tensor's shape.
        got: Vec<i64>,
        /// The batch's embedding width.
        dim: i64,
    },
    /// A reference label list whose length is not the number of reference rows.
    #[error("{labels} reference labels for {rows} reference embeddings")]
    ReferenceLabelCount {
        /// Number of reference labels.
        labels: usize,
        /// Number of reference rows.
        rows: usize,
    },
    /// A loss that only compares the batch with itself was given a reference set.
    #[error(
        "the {loss} loss compares the batch with itself and takes no reference set (memory bank); use contrastive, triplet, margin or multi_similarity"
    )]
    NoReference {
        /// The loss.
        loss: &'static str,
    },
    /// A tuple index that does not address a row of the batch.
    #[error(
        "tuple index {index} in `{field}` is out of range for {batch} rows (the batch, or the reference set for positives and negatives mined against one)"
    )]
    IndexOutOfRange {
        /// The tuple field holding the index (`anchor`, `positive`, ...).
        field: &'static str,
        /// The offending index.
        index: u32,
        /// The batch size.
        batch: usize,
    },
    /// Tuple fields (or weights) of different lengths.
    #[error("tuple field `{field}` has {got} entries but {expected} are needed")]
    TupleLength {
        /// The field whose length is wrong.
        field: &'static str,
        /// The length it should have.
        expected: usize,
        /// The length it has.
        got: usize,
    },
    /// A tuple weight that is negative or not finite.
    #[error("tuple weight {value} at position {position} must be finite and non-negative")]
    InvalidWeight {
        /// Position of the weight in its list.
        position: usize,
        /// The weight.
        value: f32,
    },
    /// The same ordered pair listed as positive and as negative.
    #[error("pair ({anchor}, {other}) is listed both as positive and as negative")]
    PairBothPositiveAndNegative {
        /// Anchor of the pair.
        anchor: u32,
        /// The other member.
        other: u32,
    },
    /// A label that has no per-class parameter.
    #[error("label {label} is out of range for {n_classes} classes")]
    LabelOutOfRange {
        /// The offending label.
        label: u32,
        /// The number of classes the loss was built for.
        n_classes: usize,
    },
    /// A parameter that must be finite.
    #[error("parameter `{name}` = {value} must be finite")]
    NonFiniteParameter {
        /// The parameter's name.
        name: &'static str,
        /// Its value.
        value: f64,
    },
    /// A parameter that must be strictly positive.
    #[error("parameter `{name}` = {value} must be positive")]
    NonPositiveParameter {
        /// The parameter's name.
        name: &'static str,
        /// Its value.
        value: f64,
    },
    /// A parameter that must not be negative.
    #[error("parameter `{name}` = {value} must not be negative")]
    NegativeParameter {
        /// The parameter's name.
        name: &'static str,
        /// Its value.
        value: f64,
    },
    /// Per-class β asked for without any class.
    #[error("per-class beta needs n_classes > 0")]
    PerClassBetaWithoutClasses,
    /// Per-class β asked for without learning β (fixed per-class values would all be equal).
    #[error("per-class beta needs learn_beta = true")]
    PerClassBetaNotLearned,
    /// Tuples given to a loss that compares embeddings with class vectors, not with each other.
    #[error(
        "the {loss} loss takes no mined pairs or triplets: leave out the miner (`[miner]` absent or kind = \"none\")"
    )]
    TuplesNotUsed {
        /// The loss's kind.
        loss: &'static str,
    },
    /// A loss with per-class vectors built without any class.
    #[error("the {loss} loss learns vectors per class and needs n_classes > 0")]
    NoClasses {
        /// The loss's kind.
        loss: &'static str,
    },
    /// A loss with per-class vectors built without an embedding length.
    #[error("the {loss} loss learns vectors per class and needs embedding_dim > 0")]
    NoEmbeddingDim {
        /// The loss's kind.
        loss: &'static str,
    },
    /// Embeddings whose length is not the one the loss's class vectors were built for.
    #[error("embeddings have {got} dimensions but the loss's class vectors have {expected}")]
    EmbeddingDim {
        /// The length the loss was built for.
        expected: usize,
        /// The embeddings' length.
        got: usize,
    },
    /// An ArcFace margin that leaves no room: it must lie in [0°, 180°).
    #[error(
        "arcface margin {degrees}° must be at least 0 and below 180 (degrees, as in pml; the default is 28.6)"
    )]
    ArcMargin {
        /// The margin, in degrees.
        degrees: f64,
    },
    /// An error reported by LibTorch.
    #[error("libtorch: {0}")]
    Torch(#[from] tch::TchError),
    /// An error from the distance kernels.
    #[error(transparent)]
    Kernels(#[from] dml_kernels::Error),
}

/// `Result` with [`Error`].
pub type Result<T> = std::result::Result<T, Error>;
