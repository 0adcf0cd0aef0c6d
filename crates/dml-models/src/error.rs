//! Errors of dml-models.

/// Everything that can go wrong in dml-models.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// CUDA was asked for, but this LibTorch sees no CUDA device.
    #[error(
        "CUDA is not available (no GPU, or the CPU-only LibTorch is installed: run `cargo xtask libtorch --cuda`)"
    )]
    CudaUnavailable,
    /// A device name other than auto, cpu or cuda.
    #[error("unknown device `{0}` (expected auto, cpu or cuda)")]
    UnknownDevice(String),
    /// An error reported by LibTorch.
    #[error(transparent)]
    Torch(#[from] tch::TchError),
}

/// `Result` with [`Error`].
pub type Result<T> = std::result::Result<T, Error>;
