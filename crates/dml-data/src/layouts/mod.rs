//! The data sets as published, one file per layout, each read into a [`Split`]: the face of the
//! crate (re-exported at its root). The readers of file formats they build on are in
//! [`crate::formats`].

use std::path::Path;
use std::sync::Arc;

use crate::formats::{read_digits, read_idx_dir, read_image_folder};
use crate::rendered::rendered_split;
use crate::{Error, Result, Split};

mod cars196;
mod cub200;
mod inshop;
mod sop;

pub use cars196::cars196;
pub use cub200::cub200;
pub use inshop::inshop;
pub use sop::sop;

/// The embedded UCI digits (1,797 grey 8 × 8 images, ten classes; see
/// [`crate::formats::read_digits`]), split class-disjointly: digits 0–4 train, 5–9 test.
pub fn digits() -> Result<Split> {
    Split::disjoint(Arc::new(read_digits()?))
}

/// A folder with the four MNIST-format IDX files (plain or `.gz`; MNIST, Fashion-MNIST, what
/// `cargo xtask data` stores): train and test files joined, then split class-disjointly
/// (classes 0–4 train, 5–9 test).
pub fn idx(dir: impl AsRef<Path>) -> Result<Split> {
    Split::disjoint(Arc::new(read_idx_dir(dir)?))
}

/// One folder per class (`root/<class>/<image>.{png,jpg,jpeg}`, classes numbered in the sorted
/// order of their names), split class-disjointly: the first half of the classes train. The
/// class names come with [`crate::formats::read_image_folder`].
pub fn image_folder(root: impl AsRef<Path>) -> Result<Split> {
    Split::disjoint(Arc::new(read_image_folder(root)?.0))
}

/// The emoji set that `cargo xtask data emoji` builds (`data/emoji`): RGB images of 64 × 64, one
/// class per emoji, one image per vendor drawing, split as stored (see [`crate::formats::read_rendered`]:
/// an emoji and its skin-tone variants stay on one side).
pub fn emoji(dir: impl AsRef<Path>) -> Result<Split> {
    rendered_split(dir.as_ref(), "emoji", 3)
}

/// The CJK glyph set that `cargo xtask data glyphs` builds (`data/glyphs`): grey images of
/// 32 × 32, one class per character, one image per font design, split as stored (see
/// [`crate::formats::read_rendered`]).
pub fn glyphs(dir: impl AsRef<Path>) -> Result<Split> {
    rendered_split(dir.as_ref(), "glyphs", 1)
}

/// The lines of a text file with their 1-based numbers, blank lines skipped.
pub(crate) fn read_lines(path: &Path, hint: &str) -> Result<Vec<(usize, String)>> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(Error::NotFound {
                path: path.to_path_buf(),
                hint: hint.to_owned(),
            });
        }
        Err(e) => return Err(Error::io(path, e)),
    };
    Ok(text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| (i + 1, l.trim().to_owned()))
        .collect())
}

pub(crate) fn bad_line(path: &Path, line: usize, what: &str) -> Error {
    Error::malformed(path, format!("line {line}: {what}"))
}

/// A 1-based class id as a 0-based label.
pub(crate) fn class_label(path: &Path, line: usize, field: &str) -> Result<u32> {
    field
        .parse::<u32>()
        .ok()
        .filter(|&c| c >= 1)
        .map(|c| c - 1)
        .ok_or_else(|| {
            bad_line(
                path,
                line,
                &format!("class id {field:?} is not a positive integer"),
            )
        })
}

/// `path`, listed at `line` of `list`, if it is a file: the check that turns a listed but
/// missing image into an error at index time, naming the list, the line and the file, instead
/// of a failure in the middle of training.
pub(crate) fn listed(
    list: &Path,
    line: usize,
    path: std::path::PathBuf,
) -> Result<std::path::PathBuf> {
    if path.is_file() {
        Ok(path)
    } else {
        Err(Error::ListedFileMissing {
            list: list.to_path_buf(),
            line,
            path,
        })
    }
}
