//! The one error type of dml-sampling.

/// Everything that can go wrong when sampling batches or mining tuples.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The distance matrix is not `n × n` for `n` labels.
    #[error("distance matrix is {rows}×{cols} but there are {n_labels} labels")]
    DistanceShape {
        /// Rows of the matrix.
        rows: usize,
        /// Columns of the matrix.
        cols: usize,
        /// Number of labels.
        n_labels: usize,
    },
    /// The batch-against-reference matrix is not `n × m` for `n` batch and `m` reference labels.
    #[error(
        "distance matrix is {rows}×{cols} but there are {n_labels} batch labels and {n_ref_labels} reference labels"
    )]
    ReferenceShape {
        /// Rows of the matrix.
        rows: usize,
        /// Columns of the matrix.
        cols: usize,
        /// Number of batch labels.
        n_labels: usize,
        /// Number of reference labels.
        n_ref_labels: usize,
    },
    /// The miner pairs batch items with each other and has no meaning against a reference set.
    #[error(
        "the {miner} miner pairs batch items with each other and cannot mine against a reference set (a memory bank); use all, uniform, hard_negative, semi_hard, batch_hard, distance_weighted or multi_similarity"
    )]
    NoReferenceMining {
        /// The miner's kind.
        miner: &'static str,
    },
    /// A batch enqueued into a memory bank does not have the bank's width or one label per row.
    #[error(
        "cannot enqueue {rows}×{cols} embeddings with {n_labels} labels into a memory bank of {dim}-d rows"
    )]
    MemoryShape {
        /// Rows given.
        rows: usize,
        /// Columns given.
        cols: usize,
        /// Labels given.
        n_labels: usize,
        /// The bank's embedding length.
        dim: usize,
    },
    /// A batch larger than the memory bank.
    #[error(
        "a batch of {batch} does not fit a memory bank of {capacity} slots: make the memory at least as large as the batch"
    )]
    MemoryTooSmall {
        /// The bank's slots.
        capacity: usize,
        /// The batch size.
        batch: usize,
    },
    /// Saved parts that do not describe a memory bank of the configured size.
    #[error(
        "saved memory bank does not fit capacity {capacity} × dim {dim}: {rows} labels, {numbers} numbers, head {head} (was the memory size or the embedding size changed since the checkpoint?)"
    )]
    MemoryState {
        /// Configured slots.
        capacity: usize,
        /// Configured embedding length.
        dim: usize,
        /// Saved labels.
        rows: usize,
        /// Saved numbers.
        numbers: usize,
        /// Saved head.
        head: usize,
    },
    /// A batch is too large for `u32` indices.
    #[error("batch of {n} items is too large for u32 indices")]
    BatchTooLarge {
        /// Batch size.
        n: usize,
    },
    /// `p · k < 2`: a batch needs at least two items to hold any pair.
    #[error("p·k must be at least 2, got p = {p}, k = {k}")]
    BatchTooSmall {
        /// Classes per batch.
        p: usize,
        /// Items per class.
        k: usize,
    },
    /// `p` exceeds the number of classes that can serve a batch.
    #[error(
        "p = {p} classes per batch but only {n_classes} classes have at least {min_items} items"
    )]
    TooFewClasses {
        /// Classes per batch asked for.
        p: usize,
        /// Classes that can serve.
        n_classes: usize,
        /// Items a class needs to serve.
        min_items: usize,
    },
    /// A margin must be finite and positive.
    #[error("margin must be finite and positive, got {margin}")]
    InvalidMargin {
        /// The offending margin.
        margin: f32,
    },
    /// A parameter that may take any finite value is NaN or infinite.
    #[error("{name} must be finite, got {value}")]
    NonFiniteParameter {
        /// The parameter's name.
        name: &'static str,
        /// The offending value.
        value: f32,
    },
    /// The multi-similarity epsilon must be finite and non-negative.
    #[error("epsilon must be finite and non-negative, got {epsilon}")]
    InvalidEpsilon {
        /// The offending epsilon.
        epsilon: f32,
    },
    /// Distance-weighted cut-offs must satisfy `0 ≤ cutoff < nonzero_loss_cutoff`.
    #[error(
        "cut-offs must be finite with 0 <= cutoff < nonzero_loss_cutoff, got cutoff = {cutoff}, nonzero_loss_cutoff = {nonzero_loss_cutoff}"
    )]
    InvalidCutoffs {
        /// Lower distance clip.
        cutoff: f32,
        /// Upper distance beyond which negatives are left out.
        nonzero_loss_cutoff: f32,
    },
    /// The embedding dimension of the unit sphere must be at least 2 (0: not given).
    #[error(
        "embedding dimension must be at least 2, got {dim} (0: not given; build the miner with the embeddings' length)"
    )]
    InvalidEmbeddingDim {
        /// The offending dimension.
        dim: usize,
    },
    /// The distance-weighted miner's `embedding_dim` differs from the embeddings' length: its
    /// density of distances on the sphere would be the wrong one.
    #[error(
        "the distance-weighted miner's embedding_dim ({config}) differs from the embeddings' length ({embeddings}); leave embedding_dim out to use the embeddings' length"
    )]
    EmbeddingDimMismatch {
        /// The config's value.
        config: usize,
        /// The embeddings' length.
        embeddings: usize,
    },
    /// The distance-weighted weight cap λ must be finite and positive.
    #[error("max_weight must be finite and positive, got {max_weight}")]
    InvalidMaxWeight {
        /// The offending cap.
        max_weight: f64,
    },
    /// A count parameter that must be at least 1 is 0.
    #[error("{name} must be at least 1")]
    ZeroCount {
        /// The parameter's name.
        name: &'static str,
    },
    /// A histogram needs at least one bin and a finite range `lo < hi`.
    #[error(
        "histogram needs bins >= 1 and finite lo < hi, got bins = {bins}, range = [{lo}, {hi}]"
    )]
    InvalidHistogram {
        /// Number of bins.
        bins: usize,
        /// Lower edge.
        lo: f32,
        /// Upper edge.
        hi: f32,
    },
    /// A tuple index is outside the batch (or the reference set).
    #[error("tuple index {index} is out of range for a batch (or reference set) of {n}")]
    IndexOutOfRange {
        /// The offending index.
        index: u32,
        /// Batch size.
        n: usize,
    },
}

/// `Result` with this crate's [`Error`].
pub type Result<T> = std::result::Result<T, Error>;
