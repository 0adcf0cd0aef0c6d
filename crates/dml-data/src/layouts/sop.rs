//! Stanford Online Products (Oh Song et al., 2016): 120,053 product images of 22,634 classes.

use std::sync::Arc;

use std::path::Path;

use crate::files::ImageFileDataset;
use crate::layouts::{bad_line, class_label, listed, read_lines};
use crate::{Result, Split};

/// Stanford Online Products: `root/Ebay_train.txt` and `root/Ebay_test.txt` (a header line, then
/// `<image id> <class id> <super class id> <relative path>`), split as published; labels are the
/// class ids minus one (train classes 1–11,318, test 11,319–22,634).
pub fn sop(root: impl AsRef<Path>) -> Result<Split> {
    let root = root.as_ref();
    let part = |name: &str| -> Result<ImageFileDataset> {
        let file = root.join(name);
        let hint =
            "expected Stanford_Online_Products/ as published (Ebay_train.txt, Ebay_test.txt)";
        let mut paths = Vec::new();
        let mut labels = Vec::new();
        for (line, text) in read_lines(&file, hint)?.into_iter().skip(1) {
            let f: Vec<&str> = text.split_whitespace().collect();
            if f.len() != 4 {
                return Err(bad_line(
                    &file,
                    line,
                    "expected `<image id> <class id> <super class id> <path>`",
                ));
            }
            labels.push(class_label(&file, line, f[1])?);
            paths.push(listed(&file, line, root.join(f[3]))?);
        }
        ImageFileDataset::new(paths, labels)
    };
    Ok(Split::new(
        Arc::new(part("Ebay_train.txt")?),
        Arc::new(part("Ebay_test.txt")?),
    ))
}
