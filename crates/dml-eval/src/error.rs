//! Errors of dml-eval.

use std::path::PathBuf;

/// Everything that can go wrong in dml-eval.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An error from the k-NN / distance layer.
    #[error(transparent)]
    Kernels(#[from] dml_kernels::Error),
    /// A set of embeddings with no rows.
    #[error("{0} has no rows")]
    Empty(&'static str),
    /// Embeddings with no columns.
    #[error("{0} has zero columns (embedding dimension 0)")]
    ZeroDim(&'static str),
    /// Embeddings and labels of different lengths.
    #[error("{what} has {n_rows} rows but {n_labels} labels")]
    LabelCount {
        /// Which set (`"embeddings"`, `"query"`, `"reference"`).
        what: &'static str,
        /// Number of embedding rows.
        n_rows: usize,
        /// Number of labels.
        n_labels: usize,
    },
    /// Query and reference embeddings of different dimensions.
    #[error("query has {query_dim} columns but reference has {reference_dim}")]
    DimensionMismatch {
        /// Columns of the query set.
        query_dim: usize,
        /// Columns of the reference set.
        reference_dim: usize,
    },
    /// A NaN or infinite embedding value.
    #[error("non-finite value in {matrix} at row {row}, column {col}")]
    NonFinite {
        /// Which set.
        matrix: &'static str,
        /// Row of the first non-finite value.
        row: usize,
        /// Its column.
        col: usize,
    },
    /// Leaving each query out needs at least two items.
    #[error("leave-one-out evaluation needs at least 2 items, got {0}")]
    TooFewItems(usize),
    /// More queries asked for than the reference set has rows, when the queries are its first
    /// rows ([`evaluate_including_queries`](crate::evaluate_including_queries)).
    #[error(
        "the queries are the first {n_queries} rows of the reference, but it has {n_rows} rows"
    )]
    QueryRows {
        /// Queries asked for.
        n_queries: usize,
        /// Rows of the reference set.
        n_rows: usize,
    },
    /// Not a single query has a same-class item among the references.
    #[error(
        "none of the {n_queries} queries has a same-class reference, so retrieval metrics are undefined"
    )]
    NoPositives {
        /// Number of queries.
        n_queries: usize,
    },
    /// `recall_at` contains 0.
    #[error("recall_at contains k = 0; every k must be at least 1")]
    ZeroRecallK,
    /// A cut-off list (`cmc_at`, `oml_precision_at`, `oml_map_at`) or `ranking_depth` holds 0.
    #[error("{name} contains k = 0; every k must be at least 1")]
    ZeroK {
        /// The setting.
        name: &'static str,
    },
    /// `kmeans_restarts` or `kmeans_max_iter` is 0.
    #[error("{name} must be at least 1, got 0")]
    ZeroParameter {
        /// The parameter's name.
        name: &'static str,
    },
    /// k-means asked for more clusters than points.
    #[error("k-means cannot make {k} clusters from {n} points")]
    TooManyClusters {
        /// Requested number of clusters.
        k: usize,
        /// Number of points.
        n: usize,
    },
    /// Two label lists of different lengths given to a clustering score.
    #[error("labels_true has {n_true} entries but labels_pred has {n_pred}")]
    ClusteringLengths {
        /// Length of `labels_true`.
        n_true: usize,
        /// Length of `labels_pred`.
        n_pred: usize,
    },
    /// Pair indices and same-class flags of different lengths.
    #[error("{n_pairs} pairs but {n_flags} same-class flags")]
    PairsLength {
        /// Pairs.
        n_pairs: usize,
        /// Flags.
        n_flags: usize,
    },
    /// A verification without a same-class pair or without a different-class pair.
    #[error(
        "verification needs at least one same-class and one different-class pair (the ROC is undefined otherwise)"
    )]
    NoPairs,
    /// More pairs than allowed.
    #[error(
        "{n_pairs} pairs exceed max_pairs = {max_pairs}; draw a balanced sample instead or raise the limit"
    )]
    TooManyPairs {
        /// Pairs asked for.
        n_pairs: u64,
        /// The limit.
        max_pairs: usize,
    },
    /// A malformed line of a pairs text file (LFW's `pairs.txt` layout).
    #[error("pairs line {line}: {reason}")]
    PairsText {
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        reason: String,
    },
    /// A NaN or infinite pair score.
    #[error("pair {pair} has the non-finite score {value}")]
    NonFiniteScore {
        /// The pair.
        pair: usize,
        /// Its score.
        value: f32,
    },
    /// A FAR outside (0, 1].
    #[error("a false accept rate must be in (0, 1], got {0}")]
    BadFar(f64),
    /// Fewer than two folds.
    #[error("k-fold accuracy needs at least 2 folds, got {0}")]
    TooFewFolds(usize),
    /// More folds than pairs.
    #[error("{folds} folds cannot be cut from {n_pairs} pairs")]
    FoldsExceedPairs {
        /// Folds asked for.
        folds: usize,
        /// Pairs.
        n_pairs: usize,
    },
    /// A verification pair naming an item the embeddings do not have.
    #[error(
        "verification pair {pair} names item {index}, but the embeddings have {n_items} rows \
         (items are their rows, numbered from 0)"
    )]
    PairItem {
        /// Position of the pair in the list.
        pair: usize,
        /// The item it names.
        index: u32,
        /// Rows of the embeddings.
        n_items: usize,
    },
    /// A `.npy` pairs file that is not an n × 3 array.
    #[error(
        "{} holds an array of shape {shape:?}, but verification pairs are an n × 3 integer array \
         of rows [i, j, same] (i and j rows of the embeddings, same 1 for a same-class pair and 0 \
         for a different-class one)",
        path.display()
    )]
    NpyPairsShape {
        /// The file.
        path: PathBuf,
        /// Its shape.
        shape: Vec<usize>,
    },
    /// A `.npy` pairs file with an index that cannot name a row.
    #[error(
        "{} has index {value} in row {row}; the first two columns name rows of the embeddings \
         (0 or more)",
        path.display()
    )]
    NpyPairIndex {
        /// The file.
        path: PathBuf,
        /// The row.
        row: usize,
        /// The value.
        value: i128,
    },
    /// A `.npy` pairs file whose flag column holds something other than 0 or 1.
    #[error("{} has flag {value} in row {row}; the third column must be 1 (same class) or 0", path.display())]
    NpyPairFlag {
        /// The file.
        path: PathBuf,
        /// The row.
        row: usize,
        /// The value.
        value: i128,
    },
    /// Bad re-ranking parameters or a request re-ranking cannot serve.
    #[error("re-ranking: {0}")]
    Rerank(String),
    /// A file that could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A file that is not a well-formed `.npy` file (bad magic, bad header, truncated data).
    #[error("{} is not a valid .npy file: {reason}", path.display())]
    NpyFormat {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A `.npy` file of a dtype that cannot be used here.
    #[error("{} has dtype `{dtype}` but {expected} is needed", path.display())]
    NpyDtype {
        /// The file.
        path: PathBuf,
        /// The dtype descriptor found in the header (for example `<i4`).
        dtype: String,
        /// What is accepted.
        expected: &'static str,
    },
    /// A `.npy` array with the wrong number of dimensions.
    #[error("{} holds a {ndim}-dimensional array of shape {shape:?} but a {expected}-dimensional one is needed", path.display())]
    NpyNdim {
        /// The file.
        path: PathBuf,
        /// Its number of dimensions.
        ndim: usize,
        /// Its shape.
        shape: Vec<usize>,
        /// The number of dimensions needed.
        expected: usize,
    },
    /// A NaN or infinite value in an embeddings file.
    #[error("{} has a non-finite value ({value}) at row {row}, column {col}", path.display())]
    NpyNonFinite {
        /// The file.
        path: PathBuf,
        /// Row of the first non-finite value.
        row: usize,
        /// Its column.
        col: usize,
        /// The value.
        value: f64,
    },
    /// A label that does not fit a `u32` class id (negative or too large).
    #[error("{} has label {value} at row {row}; labels must be between 0 and {}", path.display(), u32::MAX)]
    NpyLabel {
        /// The file.
        path: PathBuf,
        /// Row of the first invalid label.
        row: usize,
        /// The label.
        value: i128,
    },
    /// Embeddings and labels files of different lengths.
    #[error("{} has {n_rows} rows but {} has {n_labels} labels", embeddings.display(), labels.display())]
    FileLengthMismatch {
        /// The embeddings file.
        embeddings: PathBuf,
        /// Its number of rows.
        n_rows: usize,
        /// The labels file.
        labels: PathBuf,
        /// Its number of labels.
        n_labels: usize,
    },
}

/// `Result` with [`Error`].
pub type Result<T> = std::result::Result<T, Error>;
