//! Cars196 (Krause et al., 2013): 16,185 car images of 196 models.

use std::path::Path;

use crate::files::ImageFileDataset;
use crate::layouts::{bad_line, class_label, listed, read_lines};
use crate::{Result, Split};

/// Cars196 from `root/cars_annos.txt`, split class-disjointly, a conversion of the published `cars_annos.mat`: one line
/// `<relative image path> <class id 1..196>` per image (see the crate README for the one-line
/// conversion). Labels are the class ids minus one; the standard split (classes 1–98 train,
/// 99–196 test) is the class-disjoint split.
pub fn cars196(root: impl AsRef<Path>) -> Result<Split> {
    Split::disjoint(std::sync::Arc::new(read(root.as_ref())?))
}

fn read(root: &Path) -> Result<ImageFileDataset> {
    let annos = root.join("cars_annos.txt");
    let hint = "convert cars_annos.mat to cars_annos.txt (`<relative_im_path> <class>` per line) \
                as the dml-data README shows";
    let mut paths = Vec::new();
    let mut labels = Vec::new();
    for (line, text) in read_lines(&annos, hint)? {
        let (rel, class) = text
            .rsplit_once(char::is_whitespace)
            .ok_or_else(|| bad_line(&annos, line, "expected `<relative image path> <class id>`"))?;
        labels.push(class_label(&annos, line, class)?);
        paths.push(listed(&annos, line, root.join(rel.trim()))?);
    }
    ImageFileDataset::new(paths, labels)
}
