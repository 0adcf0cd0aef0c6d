//! The error type of this crate.

use std::path::PathBuf;

/// What can go wrong while building or verifying a rendered data set. Every variant about a file
/// names it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An I/O error on a file or folder.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A source file that the set needs is not there.
    #[error("{}: not found; {hint}", path.display())]
    Missing {
        /// The file looked for.
        path: PathBuf,
        /// How to get it.
        hint: String,
    },
    /// A source file is not what its package documents (bad JSON, an image of another size).
    #[error("{}: {reason}", path.display())]
    Malformed {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A PNG could not be decoded.
    #[error("{}: cannot decode PNG: {source}", path.display())]
    Png {
        /// The file.
        path: PathBuf,
        /// The decoder's error.
        #[source]
        source: image::ImageError,
    },
    /// An SVG could not be parsed.
    #[error("{}: cannot parse SVG: {source}", path.display())]
    Svg {
        /// The file.
        path: PathBuf,
        /// The parser's error.
        #[source]
        source: resvg::usvg::Error,
    },
    /// A font file could not be read as a font (or has no face of the index asked for).
    #[error("{}: face {face} is not a readable font", path.display())]
    Font {
        /// The font file.
        path: PathBuf,
        /// The face index inside it.
        face: u32,
    },
    /// The sources leave too little to build a set (no class left, one side of the split
    /// empty, no character every design draws).
    #[error("{0}")]
    Empty(String),
    /// A stored set does not match its manifest: a changed, missing or extra file, or a
    /// checksum that differs.
    #[error("{}: {reason}", path.display())]
    Verify {
        /// The file that does not match.
        path: PathBuf,
        /// What differs.
        reason: String,
    },
    /// An error of the data-set layer (writing or reading the stored set).
    #[error(transparent)]
    Data(#[from] dml_data::Error),
}

impl Error {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }

    pub(crate) fn malformed(path: impl Into<PathBuf>, reason: impl Into<String>) -> Self {
        Error::Malformed {
            path: path.into(),
            reason: reason.into(),
        }
    }
}

/// `Result` with this crate's [`Error`].
pub type Result<T> = std::result::Result<T, Error>;

/// Reads a whole file, turning "not found" into [`Error::Missing`] with `hint`.
pub(crate) fn read(path: &std::path::Path, hint: &str) -> Result<Vec<u8>> {
    match std::fs::read(path) {
        Ok(b) => Ok(b),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(Error::Missing {
            path: path.to_path_buf(),
            hint: hint.to_owned(),
        }),
        Err(e) => Err(Error::io(path, e)),
    }
}
