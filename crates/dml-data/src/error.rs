//! The error type of this crate.

use std::path::PathBuf;

/// What can go wrong while reading or loading a data set.
///
/// Every variant that concerns a file names it, so a message such as
/// `data/mnist/train-images-idx3-ubyte: truncated: expected 47040016 bytes, found 1000` says
/// which file to fix.
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
    /// A file does not start with the magic number its format requires.
    #[error("{}: bad magic number {found:#010x}: {expected}", path.display())]
    BadMagic {
        /// The file.
        path: PathBuf,
        /// The first four bytes, big-endian.
        found: u32,
        /// What was expected, in words.
        expected: &'static str,
    },
    /// A file is shorter than its header says.
    #[error("{}: truncated: expected {expected} bytes, found {found}", path.display())]
    Truncated {
        /// The file.
        path: PathBuf,
        /// The size the header implies.
        expected: u64,
        /// The size found.
        found: u64,
    },
    /// A file is longer than its header says.
    #[error("{}: {extra} unexpected trailing bytes after the data", path.display())]
    TrailingBytes {
        /// The file.
        path: PathBuf,
        /// How many bytes follow the data.
        extra: u64,
    },
    /// An image file and its label file disagree on the number of items.
    #[error(
        "{} holds {n_images} images but {} holds {n_labels} labels",
        images.display(),
        labels.display()
    )]
    CountMismatch {
        /// The image file.
        images: PathBuf,
        /// Number of images.
        n_images: usize,
        /// The label file.
        labels: PathBuf,
        /// Number of labels.
        n_labels: usize,
    },
    /// A file's content is malformed (a bad line, a bad value, an unsupported layout).
    #[error("{}: {reason}", path.display())]
    Malformed {
        /// The file.
        path: PathBuf,
        /// What is wrong, with the line number where there is one.
        reason: String,
    },
    /// An image could not be decoded.
    #[error("{}: cannot decode image: {source}", path.display())]
    Decode {
        /// The image file.
        path: PathBuf,
        /// The decoder's error.
        #[source]
        source: image::ImageError,
    },
    /// An item index is out of range.
    #[error("item index {index} out of range for a data set of {len} items")]
    IndexOutOfRange {
        /// The index asked for.
        index: usize,
        /// The number of items.
        len: usize,
    },
    /// Items of different sizes were asked for in one batch and no transform fixes the size.
    #[error(
        "item {index} is {found:?} (C, H, W) but the batch is {expected:?}; use a transform with a fixed output size"
    )]
    ShapeMismatch {
        /// The item index.
        index: usize,
        /// The batch's item shape.
        expected: [usize; 3],
        /// The item's shape.
        found: [usize; 3],
    },
    /// The data set's items are image files, whose sizes are not known before they are decoded
    /// (and may differ), and no transform gives them one size.
    #[error(
        "the sizes of this data set's images are not known until each file is decoded (image files may differ in size), \
         and no transform resizes them to one size; add a fixed-size crop to the config, for example\n\
         [transform.train]\n\
         crop = {{ kind = \"random_resized\", size = 224, scale = [0.08, 1.0], ratio = [0.75, 1.3333333] }}\n\
         [transform.test]\n\
         crop = {{ kind = \"center\", resize = 256, size = 224 }}\n\
         (any `crop` with a `size` gives one size)"
    )]
    ItemSizeUnknown,
    /// A class-disjoint split needs at least two classes.
    #[error("a class-disjoint split needs at least 2 classes, found {n_classes}")]
    TooFewClasses {
        /// Number of distinct classes.
        n_classes: usize,
    },
    /// A transform parameter is invalid.
    #[error("invalid transform: {reason}")]
    InvalidTransform {
        /// What is wrong.
        reason: String,
    },
    /// A file named by a data set's list is not on disk.
    #[error(
        "{}: line {line} lists {}, which is not there; check that `root` is the folder the listed paths are relative to, and that the download is complete",
        list.display(), path.display()
    )]
    ListedFileMissing {
        /// The list file.
        list: PathBuf,
        /// Its 1-based line.
        line: usize,
        /// The missing file.
        path: PathBuf,
    },
    /// A class folder of an image folder holds no image.
    #[error(
        "{}: this class folder holds no .png, .jpg or .jpeg image; remove it or add images (each sub-folder is a class)",
        folder.display()
    )]
    EmptyClass {
        /// The class folder.
        folder: PathBuf,
    },
    /// A data set is missing from disk.
    #[error("{}: not found; {hint}", path.display())]
    NotFound {
        /// The file or folder looked for.
        path: PathBuf,
        /// How to get it.
        hint: String,
    },
}

impl Error {
    /// The file of an item that could not be read or decoded ([`Error::Io`], [`Error::Decode`]):
    /// what [`crate::load_batch_skipping`] leaves out; `None` for every other error.
    pub fn unreadable_file(&self) -> Option<&std::path::Path> {
        match self {
            Error::Io { path, .. } | Error::Decode { path, .. } => Some(path),
            _ => None,
        }
    }

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
