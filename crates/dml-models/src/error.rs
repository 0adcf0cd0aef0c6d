//! Errors of dml-models.

use std::fmt::Write as _;
use std::path::PathBuf;

/// A tensor whose shape in a weights file differs from the shape the network expects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShapeMismatch {
    /// The variable's name in the var store (for example `backbone.conv1.weight`).
    pub name: String,
    /// The shape the network expects.
    pub expected: Vec<i64>,
    /// The shape found in the file.
    pub found: Vec<i64>,
}

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

    /// `embedding_dim` is zero or negative.
    #[error("embedding_dim must be positive, got {0}")]
    EmbeddingDim(i64),
    /// A hidden width (MLP) or a channel count (ConvNet) is zero or negative.
    #[error("{what}[{index}] must be positive, got {value}")]
    LayerWidth {
        /// The config field (`hidden` or `channels`).
        what: &'static str,
        /// Position in the list.
        index: usize,
        /// The offending value.
        value: i64,
    },
    /// The ConvNet was configured without any block.
    #[error("conv_net needs at least one block (channels is empty)")]
    NoBlocks,
    /// A dropout probability outside `[0, 1)`.
    #[error("dropout must be in [0, 1), got {0}")]
    Dropout(f64),
    /// An input shape with a zero or negative dimension.
    #[error("input shape {channels}x{height}x{width} must have positive dimensions")]
    InputShape {
        /// Channels.
        channels: i64,
        /// Height.
        height: i64,
        /// Width.
        width: i64,
    },
    /// The image is smaller than the network can take.
    #[error(
        "{model} needs images of at least {min}x{min} pixels, got {height}x{width} (resize the images or use a smaller network)"
    )]
    InputTooSmall {
        /// The model kind.
        model: &'static str,
        /// Image height.
        height: i64,
        /// Image width.
        width: i64,
        /// Smallest side the network takes.
        min: i64,
    },
    /// The network cannot take images with this many channels.
    #[error("{model} takes images with {expected} channels, got {got}")]
    InputChannels {
        /// The model kind.
        model: &'static str,
        /// What the network takes, in words (for example `1 or 3`).
        expected: &'static str,
        /// The channels of the input shape.
        got: i64,
    },

    /// A batch whose shape does not fit the network.
    #[error("input batch of shape {got:?} does not fit the network: expected {expected}")]
    BatchShape {
        /// The shape the network expects, in words (for example `[N, 1, 28, 28]`).
        expected: String,
        /// The shape of the batch.
        got: Vec<i64>,
    },
    /// A batch of another element type than the network's weights.
    #[error("input batch has kind {got:?}, but the network's weights are {expected:?}")]
    BatchKind {
        /// The weights' kind.
        expected: tch::Kind,
        /// The batch's kind.
        got: tch::Kind,
    },
    /// A batch on another device than the network's weights.
    #[error("input batch is on {got:?}, but the network's weights are on {expected:?}")]
    BatchDevice {
        /// The weights' device.
        expected: tch::Device,
        /// The batch's device.
        got: tch::Device,
    },
    /// Batch normalisation in training mode needs more than one value per channel.
    #[error(
        "a training-mode forward with batch norm needs at least 2 items per batch, got {0} (or set freeze_batch_norm)"
    )]
    BatchTooSmall(i64),

    /// Reading or writing a file failed.
    #[error("cannot {action} {path}: {source}")]
    Io {
        /// What was being done (`write`, `read`, ...).
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A weights file that cannot be parsed (corrupt bytes, truncated, not a weights file).
    #[error("cannot read weights from {}: {message}", path.display())]
    WeightsFile {
        /// The file.
        path: PathBuf,
        /// What is wrong with it (truncated or corrupt, another format), with the parser's
        /// words.
        message: String,
    },
    /// A tensor of a kind a safetensors file cannot hold, or a stored dtype LibTorch has no
    /// kind for.
    #[error("tensor `{name}` has kind {kind}, which safetensors files and LibTorch do not share")]
    TensorKind {
        /// The tensor's name.
        name: String,
        /// Its kind or dtype.
        kind: String,
    },
    /// A weights file whose tensors do not match the network's variables; nothing was loaded.
    #[error("{}", mismatch_message(path, missing, unexpected, mismatched))]
    WeightsMismatch {
        /// The file.
        path: PathBuf,
        /// Variables of the network that the file lacks.
        missing: Vec<String>,
        /// Tensors of the file that the network does not have (only an error for a full load).
        unexpected: Vec<String>,
        /// Tensors present on both sides with different shapes.
        mismatched: Vec<ShapeMismatch>,
    },
    /// A TorchScript backbone that cannot be loaded or run.
    #[error("TorchScript backbone {origin}: {message}")]
    TorchScript {
        /// The module's file (or the checkpoint that holds its copy).
        origin: String,
        /// What went wrong, with LibTorch's words.
        message: String,
    },
    /// `pretrained` names weights that are not there, or are for another network.
    #[error("{0}")]
    Pretrained(String),
    /// A drop-connect rate outside `[0, 1)`.
    #[error("drop_connect_rate must be in [0, 1), got {0}")]
    DropConnect(f64),
    /// An error from dml-kernels (normalisation of the embeddings).
    #[error(transparent)]
    Kernels(#[from] dml_kernels::Error),
    /// An error reported by LibTorch.
    #[error(transparent)]
    Torch(#[from] tch::TchError),
}

/// At most this many names of each sort in an error message; the variant holds them all.
const MAX_LISTED: usize = 10;

fn mismatch_message(
    path: &std::path::Path,
    missing: &[String],
    unexpected: &[String],
    mismatched: &[ShapeMismatch],
) -> String {
    fn list(out: &mut String, what: &str, names: &[String]) {
        if names.is_empty() {
            return;
        }
        let _ = write!(out, "; {} {what}: ", names.len());
        out.push_str(
            &names
                .iter()
                .take(MAX_LISTED)
                .cloned()
                .collect::<Vec<_>>()
                .join(", "),
        );
        if names.len() > MAX_LISTED {
            let _ = write!(out, ", ... ({} more)", names.len() - MAX_LISTED);
        }
    }
    let mut out = format!("weights in {} do not match the network", path.display());
    list(&mut out, "missing", missing);
    list(&mut out, "unexpected", unexpected);
    let shapes: Vec<String> = mismatched
        .iter()
        .map(|m| {
            format!(
                "{} (expected {:?}, found {:?})",
                m.name, m.expected, m.found
            )
        })
        .collect();
    list(&mut out, "with the wrong shape", &shapes);
    out
}

/// `Result` with [`Error`].
pub type Result<T> = std::result::Result<T, Error>;
