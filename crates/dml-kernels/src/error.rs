//! Errors of dml-kernels.

/// Everything that can go wrong in dml-kernels.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A metric name that is not one of [`crate::Metric::ALL`].
    #[error("unknown metric `{0}` (expected one of euclidean, squared_euclidean, cosine, dot)")]
    UnknownMetric(String),
    /// Two matrices whose embedding dimensions differ.
    #[error("dimension mismatch: {left} has {left_dim} columns but {right} has {right_dim}")]
    DimensionMismatch {
        /// Name of the first operand.
        left: &'static str,
        /// Its number of columns.
        left_dim: usize,
        /// Name of the second operand.
        right: &'static str,
        /// Its number of columns.
        right_dim: usize,
    },
    /// An output buffer of the wrong shape.
    #[error("output has shape {got:?} but {expected:?} is needed")]
    OutputShape {
        /// The shape that was needed.
        expected: (usize, usize),
        /// The shape that was given.
        got: (usize, usize),
    },
    /// A NaN or infinite value in an input matrix.
    #[error("non-finite value in {matrix} at row {row}, column {col}")]
    NonFinite {
        /// Name of the matrix.
        matrix: &'static str,
        /// Row of the first non-finite value.
        row: usize,
        /// Column of the first non-finite value.
        col: usize,
    },
    /// `k` outside `1..=n`.
    #[error("k = {k} is invalid: it must be between 1 and {available} (the number of candidates)")]
    InvalidK {
        /// The requested k.
        k: usize,
        /// How many neighbours each query can have.
        available: usize,
    },
    /// A range of rows that does not lie inside the matrix.
    #[error("rows {start}..{end} are not inside {matrix}, which has {rows} rows")]
    RowRange {
        /// Name of the matrix.
        matrix: &'static str,
        /// Start of the range.
        start: usize,
        /// End of the range (exclusive).
        end: usize,
        /// Rows of the matrix.
        rows: usize,
    },
    /// A pair that names a row its matrix does not have.
    #[error("pair {pair} names row {index} of {matrix}, which has {rows} rows")]
    PairIndex {
        /// Position of the pair in the list.
        pair: usize,
        /// The row it names.
        index: usize,
        /// Which matrix (`"a"` or `"b"`).
        matrix: &'static str,
        /// Rows of that matrix.
        rows: usize,
    },
    /// A streamed computation asked for bands of zero rows.
    #[error("band_rows must be at least 1, got 0")]
    ZeroBand,
    /// A fold over rows asked for chunks of zero rows.
    #[error("chunk must be at least 1 row, got 0")]
    ZeroChunk,
    /// An empty input where at least one row is needed.
    #[error("{0} has no rows")]
    Empty(&'static str),
    /// More rows than a `u32` neighbour index can name.
    #[error("{matrix} has {rows} rows, more than the {max} that u32 indices can address")]
    TooManyRows {
        /// Name of the matrix.
        matrix: &'static str,
        /// Its number of rows.
        rows: usize,
        /// The largest number of rows supported.
        max: usize,
    },
    /// A tensor that is not a matrix (rank 2) where one is needed.
    #[error("{name} must be a matrix (rank 2) but has shape {shape:?}")]
    NotAMatrix {
        /// Name of the operand.
        name: &'static str,
        /// Its shape.
        shape: Vec<i64>,
    },
    /// An error raised by LibTorch.
    #[cfg(feature = "tch")]
    #[error("libtorch: {0}")]
    Torch(#[from] tch::TchError),
}

/// `Result` with [`Error`].
pub type Result<T> = std::result::Result<T, Error>;
