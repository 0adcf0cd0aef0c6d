//! Errors of the dml facade: configuration, checkpoints, plots, and those of every layer.

use std::path::PathBuf;

use crate::optim::Group;

/// Everything that can go wrong in the facade.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The configuration file is not valid TOML or does not match the schema (the message names
    /// the key and its line and column).
    #[error("invalid config {path}: {message}")]
    ConfigParse {
        /// The file (or `<string>` for a config given as text).
        path: String,
        /// What the TOML parser said, with the location.
        message: String,
    },
    /// A configuration value breaks a rule that the schema alone cannot express.
    #[error("invalid config: {0}")]
    Config(#[from] crate::config::ConfigError),
    /// An I/O error on a file.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A JSON file dml writes or reads beside the checkpoint (the report, the metrics log, a
    /// compare report, pml's runs for `dml compare --reference`) could not be written or parsed.
    #[error("{path}: {message}")]
    Json {
        /// The file.
        path: PathBuf,
        /// What is wrong (the parser's message with the line, or what the file should be).
        message: String,
    },
    /// The user stopped a long command (Ctrl-C); what was finished is saved.
    #[error("interrupted: {0}")]
    Interrupted(String),
    /// Another run holds the output folder.
    #[error(
        "{} is in use by another dml run{}: wait for it to finish, stop it (it checkpoints and \
         can be resumed), or give this run another output_dir",
        dir.display(),
        pid.map_or_else(String::new, |p| format!(" (pid {p})"))
    )]
    OutputLocked {
        /// The output folder.
        dir: PathBuf,
        /// The process holding it, as it wrote itself into the lock file.
        pid: Option<u32>,
    },
    /// A launched multi-process run that cannot start as asked.
    #[error("launch: {0}")]
    Launch(String),
    /// A network that cannot be exported as asked.
    #[error("export: {0}")]
    Export(String),
    /// A checkpoint could not be written or read.
    #[error("checkpoint {path}: {message}")]
    Checkpoint {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// A checkpoint lacks a tensor the model or optimiser needs.
    #[error("checkpoint has no tensor `{0}` (was it written for another model or optimiser?)")]
    CheckpointMissingTensor(String),
    /// A checkpoint tensor has another shape than the variable it should fill.
    #[error("checkpoint tensor `{name}` has shape {found:?}, expected {expected:?}")]
    CheckpointShape {
        /// The tensor.
        name: String,
        /// The variable's shape.
        expected: Vec<i64>,
        /// The saved shape.
        found: Vec<i64>,
    },
    /// A trainable variable belongs to a group with no optimiser settings.
    #[error("no optimiser settings for group {group:?} (variable `{name}`)")]
    MissingOptimizerGroup {
        /// The group.
        group: Group,
        /// The variable.
        name: String,
    },
    /// Two inputs that must have the same length do not.
    #[error("{what}: expected {expected} entries, found {found}")]
    LengthMismatch {
        /// What was compared.
        what: &'static str,
        /// The expected length.
        expected: usize,
        /// The length found.
        found: usize,
    },
    /// A plot could not be drawn or written.
    #[error("plot {path}: {message}")]
    Plot {
        /// The output file.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// Training produced a value that is not finite (NaN or ±∞); the weights were not updated
    /// with it and no checkpoint was written after it.
    #[error("training stopped at {at}: {what} not finite; {hint}")]
    NonFinite {
        /// What was not finite: the embeddings, the loss (with its value), the gradient or the
        /// weights of a named variable, the held-out embeddings.
        what: String,
        /// Where: `epoch 2, step 5` (both 1-based), or the evaluation or checkpoint after an
        /// epoch.
        at: String,
        /// What to change.
        hint: &'static str,
    },
    /// A training batch holds a label that is not one of the training split's classes (the
    /// data set changed under the run).
    #[error("training label {label} is not one of the {n_classes} classes of the training split")]
    UnknownTrainLabel {
        /// The label.
        label: u32,
        /// Number of training classes.
        n_classes: usize,
    },
    /// A distance or k-NN kernel failed.
    #[error(transparent)]
    Kernels(#[from] dml_kernels::Error),
    /// Sampling or mining failed.
    #[error(transparent)]
    Sampling(#[from] dml_sampling::Error),
    /// Evaluation failed.
    #[error(transparent)]
    Eval(#[from] dml_eval::Error),
    /// A loss failed.
    #[error(transparent)]
    Losses(#[from] dml_losses::Error),
    /// A model failed.
    #[error(transparent)]
    Models(#[from] dml_models::Error),
    /// Loading data failed.
    #[error(transparent)]
    Data(#[from] dml_data::Error),
    /// A collective of a multi-process run failed (a peer died or hung), or the launcher
    /// variables were wrong.
    #[error(transparent)]
    Distributed(#[from] dml_distributed::Error),
    /// An error reported by LibTorch.
    #[error(transparent)]
    Torch(#[from] tch::TchError),
}

/// `Result` with [`Error`].
pub type Result<T> = std::result::Result<T, Error>;
