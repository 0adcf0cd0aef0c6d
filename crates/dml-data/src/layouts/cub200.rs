//! CUB-200-2011 (Wah et al., 2011): 11,788 bird images of 200 species.

use std::collections::BTreeMap;
use std::path::Path;

use crate::files::ImageFileDataset;
use crate::layouts::{bad_line, class_label, listed, read_lines};
use crate::{Result, Split};

/// CUB-200-2011 as published, split class-disjointly: `root/images.txt` (`<image id> <relative path>`),
/// `root/image_class_labels.txt` (`<image id> <class id 1..200>`) and `root/images/`. Labels are
/// the class ids minus one; the standard split (classes 1–100 train, 101–200 test) is the
/// class-disjoint split.
pub fn cub200(root: impl AsRef<Path>) -> Result<Split> {
    Split::disjoint(std::sync::Arc::new(read(root.as_ref())?))
}

fn read(root: &Path) -> Result<ImageFileDataset> {
    let hint = "expected CUB_200_2011/ as published (images.txt, image_class_labels.txt, images/)";
    let images_txt = root.join("images.txt");
    let labels_txt = root.join("image_class_labels.txt");
    let mut class_of = BTreeMap::new();
    for (line, text) in read_lines(&labels_txt, hint)? {
        let mut f = text.split_whitespace();
        match (f.next(), f.next(), f.next()) {
            (Some(id), Some(class), None) => {
                class_of.insert(id.to_owned(), class_label(&labels_txt, line, class)?);
            }
            _ => {
                return Err(bad_line(
                    &labels_txt,
                    line,
                    "expected `<image id> <class id>`",
                ));
            }
        }
    }
    let mut paths = Vec::new();
    let mut labels = Vec::new();
    for (line, text) in read_lines(&images_txt, hint)? {
        let (id, rel) = text
            .split_once(char::is_whitespace)
            .ok_or_else(|| bad_line(&images_txt, line, "expected `<image id> <path>`"))?;
        let label = *class_of.get(id).ok_or_else(|| {
            bad_line(
                &images_txt,
                line,
                &format!("image id {id} has no class in {}", labels_txt.display()),
            )
        })?;
        paths.push(listed(
            &images_txt,
            line,
            root.join("images").join(rel.trim()),
        )?);
        labels.push(label);
    }
    ImageFileDataset::new(paths, labels)
}
