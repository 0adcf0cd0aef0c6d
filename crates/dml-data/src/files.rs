//! Image files on disk: [`ImageFileDataset`], decoding, and the reader of one folder per class.

use std::borrow::Cow;
use std::path::{Path, PathBuf};

use crate::dataset::Dataset;
use crate::transform::Pixels;
use crate::{Error, Result};

/// Image files (PNG or JPEG) with labels, decoded to RGB when loaded.
#[derive(Clone, Debug)]
pub struct ImageFileDataset {
    paths: Vec<PathBuf>,
    labels: Vec<u32>,
}

impl ImageFileDataset {
    /// Pairs each file with its label.
    ///
    /// # Errors
    /// [`Error::Malformed`] (naming `"<memory>"`) if the lengths differ.
    pub fn new(paths: Vec<PathBuf>, labels: Vec<u32>) -> Result<Self> {
        if paths.len() != labels.len() {
            return Err(Error::malformed(
                "<memory>",
                format!("{} paths but {} labels", paths.len(), labels.len()),
            ));
        }
        Ok(ImageFileDataset { paths, labels })
    }

    /// The file of every item.
    pub fn paths(&self) -> &[PathBuf] {
        &self.paths
    }
}

/// Decodes an image file to RGB pixels.
pub fn decode_rgb(path: &Path) -> Result<Pixels<'static>> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let img = image::load_from_memory(&bytes)
        .map_err(|source| Error::Decode {
            path: path.to_path_buf(),
            source,
        })?
        .into_rgb8();
    let (width, height) = img.dimensions();
    Ok(Pixels {
        data: Cow::Owned(img.into_raw()),
        channels: 3,
        height: height as usize,
        width: width as usize,
        max_value: 255.0,
    })
}

impl Dataset for ImageFileDataset {
    fn len(&self) -> usize {
        self.paths.len()
    }
    fn labels(&self) -> &[u32] {
        &self.labels
    }
    fn channels(&self) -> usize {
        3
    }
    fn item_shape(&self) -> Option<[usize; 3]> {
        None
    }
    fn pixels(&self, index: usize) -> Result<Pixels<'_>> {
        let path = self.paths.get(index).ok_or(Error::IndexOutOfRange {
            index,
            len: self.paths.len(),
        })?;
        decode_rgb(path)
    }
}

fn is_image(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| matches!(e.to_ascii_lowercase().as_str(), "jpg" | "jpeg" | "png"))
}

fn sorted_entries(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut entries = std::fs::read_dir(dir)
        .map_err(|e| Error::io(dir, e))?
        .map(|e| e.map(|e| e.path()).map_err(|e| Error::io(dir, e)))
        .collect::<Result<Vec<_>>>()?;
    entries.sort();
    Ok(entries)
}

/// One folder per class: `root/<class>/<image>.{png,jpg,jpeg}`. Classes are numbered in the
/// sorted order of their folder names (as torchvision's `ImageFolder`); returns the whole data
/// set and the class names ([`crate::image_folder`] gives it split).
pub fn read_image_folder(root: impl AsRef<Path>) -> Result<(ImageFileDataset, Vec<String>)> {
    let root = root.as_ref();
    let mut paths = Vec::new();
    let mut labels = Vec::new();
    let mut names = Vec::new();
    for class_dir in sorted_entries(root)?.into_iter().filter(|p| p.is_dir()) {
        let label = names.len() as u32;
        names.push(
            class_dir
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
        );
        let before = paths.len();
        for file in sorted_entries(&class_dir)?
            .into_iter()
            .filter(|p| is_image(p))
        {
            paths.push(file);
            labels.push(label);
        }
        if paths.len() == before {
            return Err(Error::EmptyClass { folder: class_dir });
        }
    }
    if paths.is_empty() {
        return Err(Error::NotFound {
            path: root.to_path_buf(),
            hint: "expected one sub-folder per class holding .png or .jpg images".into(),
        });
    }
    Ok((ImageFileDataset::new(paths, labels)?, names))
}
