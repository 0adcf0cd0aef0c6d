//! In-Shop Clothes Retrieval (Liu et al., 2016): 52,712 images of 7,982 clothing items.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::dataset::{Dataset, Subset};

use crate::files::ImageFileDataset;
use crate::layouts::{bad_line, listed, read_lines};
use crate::{QueryGallery, Result, Split};

/// In-Shop Clothes Retrieval: `root/list_eval_partition.txt` (or `root/Eval/...`: a count line,
/// a header line, then `<image path> <item id> <train|query|gallery>`), images relative to
/// `root`. Labels are the numbers of the item ids (`id_00000002` → 2). The split's `test` is the
/// query images followed by the gallery's, with `query` and `gallery` as its two parts.
pub fn inshop(root: impl AsRef<Path>) -> Result<Split> {
    let root = root.as_ref();
    let mut file = root.join("list_eval_partition.txt");
    if !file.is_file() && root.join("Eval/list_eval_partition.txt").is_file() {
        file = root.join("Eval/list_eval_partition.txt");
    }
    let hint = "expected In-Shop as published (list_eval_partition.txt, img/)";
    let mut parts: [(Vec<PathBuf>, Vec<u32>); 3] = Default::default();
    for (line, text) in read_lines(&file, hint)?.into_iter().skip(2) {
        let f: Vec<&str> = text.split_whitespace().collect();
        if f.len() != 3 {
            return Err(bad_line(
                &file,
                line,
                "expected `<image path> <item id> <status>`",
            ));
        }
        let label = f[1]
            .strip_prefix("id_")
            .and_then(|n| n.parse::<u32>().ok())
            .ok_or_else(|| {
                bad_line(
                    &file,
                    line,
                    &format!("item id {:?} is not `id_<number>`", f[1]),
                )
            })?;
        let k = match f[2] {
            "train" => 0,
            "query" => 1,
            "gallery" => 2,
            other => {
                return Err(bad_line(
                    &file,
                    line,
                    &format!("status {other:?} is not train, query or gallery"),
                ));
            }
        };
        parts[k].0.push(listed(&file, line, root.join(f[0]))?);
        parts[k].1.push(label);
    }
    let [train, query, gallery] = parts;
    let n_query = query.0.len();
    let (mut paths, mut labels) = query;
    paths.extend(gallery.0);
    labels.extend(gallery.1);
    let test: Arc<dyn Dataset> = Arc::new(ImageFileDataset::new(paths, labels)?);
    let n_test = test.len();
    let query_gallery = QueryGallery {
        query: Arc::new(Subset::new(test.clone(), (0..n_query).collect())?),
        gallery: Arc::new(Subset::new(test.clone(), (n_query..n_test).collect())?),
    };
    Ok(Split {
        train: Arc::new(ImageFileDataset::new(train.0, train.1)?),
        test,
        query_gallery: Some(query_gallery),
    })
}
