//! Image files on disk: one folder per class, and the published layouts of CUB-200-2011,
//! Cars196, Stanford Online Products and In-Shop Clothes.

use std::borrow::Cow;
use std::collections::BTreeMap;
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
/// sorted order of their folder names (as torchvision's `ImageFolder`); returns the data set and
/// the class names.
pub fn image_folder(root: impl AsRef<Path>) -> Result<(ImageFileDataset, Vec<String>)> {
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
        for file in sorted_entries(&class_dir)?
            .into_iter()
            .filter(|p| is_image(p))
        {
            paths.push(file);
            labels.push(label);
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

/// The lines of a text file with their 1-based numbers, blank lines skipped.
fn read_lines(path: &Path, hint: &str) -> Result<Vec<(usize, String)>> {
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

fn bad_line(path: &Path, line: usize, what: &str) -> Error {
    Error::malformed(path, format!("line {line}: {what}"))
}

/// A 1-based class id as a 0-based label.
fn class_label(path: &Path, line: usize, field: &str) -> Result<u32> {
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

/// CUB-200-2011 as published: `root/images.txt` (`<image id> <relative path>`),
/// `root/image_class_labels.txt` (`<image id> <class id 1..200>`) and `root/images/`. Labels are
/// the class ids minus one; the standard split (classes 1–100 train, 101–200 test) is the
/// class-disjoint split.
pub fn cub200(root: impl AsRef<Path>) -> Result<ImageFileDataset> {
    let root = root.as_ref();
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
        paths.push(root.join("images").join(rel.trim()));
        labels.push(label);
    }
    ImageFileDataset::new(paths, labels)
}

/// Cars196 from `root/cars_annos.txt`, a conversion of the published `cars_annos.mat`: one line
/// `<relative image path> <class id 1..196>` per image (see the crate README for the one-line
/// conversion). Labels are the class ids minus one; the standard split (classes 1–98 train,
/// 99–196 test) is the class-disjoint split.
pub fn cars196(root: impl AsRef<Path>) -> Result<ImageFileDataset> {
    let root = root.as_ref();
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
        paths.push(root.join(rel.trim()));
    }
    ImageFileDataset::new(paths, labels)
}

/// Stanford Online Products: `root/Ebay_train.txt` and `root/Ebay_test.txt` (a header line, then
/// `<image id> <class id> <super class id> <relative path>`). Returns (train, test); labels are
/// the class ids minus one (train classes 1–11,318, test 11,319–22,634).
pub fn sop(root: impl AsRef<Path>) -> Result<(ImageFileDataset, ImageFileDataset)> {
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
            paths.push(root.join(f[3]));
        }
        ImageFileDataset::new(paths, labels)
    };
    Ok((part("Ebay_train.txt")?, part("Ebay_test.txt")?))
}

/// The three parts of In-Shop Clothes Retrieval.
#[derive(Clone, Debug)]
pub struct InShop {
    /// Training images (3,997 items in the full data set).
    pub train: ImageFileDataset,
    /// Query images of the test items.
    pub query: ImageFileDataset,
    /// Gallery images of the test items.
    pub gallery: ImageFileDataset,
}

/// In-Shop Clothes Retrieval: `root/list_eval_partition.txt` (or `root/Eval/...`: a count line,
/// a header line, then `<image path> <item id> <train|query|gallery>`), images relative to
/// `root`. Labels are the numbers of the item ids (`id_00000002` → 2).
pub fn inshop(root: impl AsRef<Path>) -> Result<InShop> {
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
        parts[k].0.push(root.join(f[0]));
        parts[k].1.push(label);
    }
    let [train, query, gallery] = parts;
    Ok(InShop {
        train: ImageFileDataset::new(train.0, train.1)?,
        query: ImageFileDataset::new(query.0, query.1)?,
        gallery: ImageFileDataset::new(gallery.0, gallery.1)?,
    })
}
