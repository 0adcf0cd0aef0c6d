//! Rendered data sets: images drawn from registry packages (emoji by several vendors, CJK
//! characters in many font designs) and stored as one folder with the split decided when they
//! were built.
//!
//! A folder holds three files:
//!
//! - `images-idx4-ubyte`: every image, an IDX file of `u8` with dimensions N × H × W × C
//!   (channels interleaved; C is 3 for RGB, 1 for grey);
//! - `classes.tsv`: a header, then `label  split  key  name` per class, labels 0, 1, 2, … in
//!   order, split `train` or `test`;
//! - `items.tsv`: a header, then `item  label  source  origin` per image, items 0, 1, 2, … in
//!   the order of the images (source: the vendor or font design that drew it; origin: the file
//!   in its package).
//!
//! The builder (`cargo xtask data emoji|glyphs`) also writes a `MANIFEST` of checksums, which
//! this crate does not read. The split is stored rather than recomputed because it is part of
//! the data set's definition: classes that belong together (an emoji and its skin-tone
//! variants) are kept on one side, which no rule on labels alone could know.

use std::path::Path;
use std::sync::Arc;

use crate::idx::parse_idx;
use crate::memory::InMemoryDataset;
use crate::{Error, Result, Split, Subset};

/// The image file of a rendered set.
pub const RENDERED_IMAGES: &str = "images-idx4-ubyte";
/// The class list of a rendered set.
pub const RENDERED_CLASSES: &str = "classes.tsv";
/// The item list of a rendered set.
pub const RENDERED_ITEMS: &str = "items.tsv";

const CLASSES_HEADER: &str = "label\tsplit\tkey\tname";
const ITEMS_HEADER: &str = "item\tlabel\tsource\torigin";

/// One class of a [`RenderedSet`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RenderedClass {
    /// A stable identifier (for emoji the code point sequence, `1f385-1f3fb`; for glyphs the
    /// code point, `U+4E00`). No tab or newline.
    pub key: String,
    /// A human-readable name. No tab or newline.
    pub name: String,
    /// Whether the class is held out (the test side of the split).
    pub held_out: bool,
}

/// One image of a [`RenderedSet`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RenderedItem {
    /// The index of its class in [`RenderedSet::classes`].
    pub label: u32,
    /// What drew it: the vendor (`google`, `openmoji`) or font design (`noto-sans-jp-regular`).
    pub source: String,
    /// The file it was rendered from, inside its package.
    pub origin: String,
}

/// A whole rendered data set in memory: its classes with their split, its items, and their
/// pixels. [`read_rendered`] reads one; [`RenderedSet::write`] stores one;
/// [`RenderedSet::into_split`] turns it into the training and held-out [`Split`].
///
/// Stored, it is a folder of three files:
///
/// - `images-idx4-ubyte` ([`RENDERED_IMAGES`]): every image, an IDX file of `u8` with
///   dimensions N × H × W × C (channels interleaved; C is 3 for RGB, 1 for grey);
/// - `classes.tsv` ([`RENDERED_CLASSES`]): a header, then `label  split  key  name` per class,
///   labels 0, 1, 2, … in order, split `train` or `test`;
/// - `items.tsv` ([`RENDERED_ITEMS`]): a header, then `item  label  source  origin` per image,
///   items 0, 1, 2, … in the order of the images.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RenderedSet {
    /// The classes; a class's label is its index here.
    pub classes: Vec<RenderedClass>,
    /// The items, in the order of [`pixels`](RenderedSet::pixels).
    pub items: Vec<RenderedItem>,
    /// (C, H, W) of every image: C is 3 (RGB) or 1 (grey).
    pub shape: [usize; 3],
    /// The images, N × H × W × C bytes, channels interleaved.
    pub pixels: Vec<u8>,
}

fn check_field(what: &str, value: &str) -> Result<()> {
    if value.is_empty() || value.contains(['\t', '\n', '\r']) {
        return Err(Error::malformed(
            "<memory>",
            format!("{what} {value:?} must be non-empty and hold no tab or newline"),
        ));
    }
    Ok(())
}

impl RenderedSet {
    /// Checks that the parts agree: one image per item, labels in range, every class with an
    /// item, keys unique, both sides of the split non-empty, fields without tabs or newlines.
    ///
    /// # Errors
    /// [`Error::Malformed`] naming `"<memory>"` and the rule broken.
    pub fn validate(&self) -> Result<()> {
        let bad = |reason: String| Err(Error::malformed("<memory>", reason));
        let [c, h, w] = self.shape;
        if !(c == 1 || c == 3) || h == 0 || w == 0 {
            return bad(format!(
                "image shape {:?} must be (1 or 3, H > 0, W > 0)",
                self.shape
            ));
        }
        if self.pixels.len() != self.items.len() * c * h * w {
            return bad(format!(
                "{} pixel values for {} items of shape {:?}",
                self.pixels.len(),
                self.items.len(),
                self.shape
            ));
        }
        let mut keys = std::collections::BTreeSet::new();
        for class in &self.classes {
            check_field("class key", &class.key)?;
            check_field("class name", &class.name)?;
            if !keys.insert(class.key.as_str()) {
                return bad(format!("class key {:?} appears twice", class.key));
            }
        }
        let mut counts = vec![0usize; self.classes.len()];
        for (i, item) in self.items.iter().enumerate() {
            check_field("item source", &item.source)?;
            check_field("item origin", &item.origin)?;
            match counts.get_mut(item.label as usize) {
                Some(n) => *n += 1,
                None => {
                    return bad(format!(
                        "item {i} has label {} but there are {} classes",
                        item.label,
                        self.classes.len()
                    ));
                }
            }
        }
        if let Some(empty) = counts.iter().position(|&n| n == 0) {
            return bad(format!(
                "class {empty} ({:?}) has no item",
                self.classes[empty].key
            ));
        }
        let held_out = self.classes.iter().filter(|c| c.held_out).count();
        if held_out == 0 || held_out == self.classes.len() {
            return bad(format!(
                "{held_out} of {} classes are held out; both sides of the split need classes",
                self.classes.len()
            ));
        }
        Ok(())
    }

    /// The label of every item.
    pub fn labels(&self) -> Vec<u32> {
        self.items.iter().map(|i| i.label).collect()
    }

    /// Writes the set into `dir` (created if missing): [`RENDERED_IMAGES`],
    /// [`RENDERED_CLASSES`], [`RENDERED_ITEMS`]. The bytes depend on the set only, so the same
    /// set gives the same files on every machine.
    ///
    /// # Errors
    /// As [`validate`](RenderedSet::validate), or an I/O error naming the file.
    pub fn write(&self, dir: impl AsRef<Path>) -> Result<()> {
        self.validate()?;
        let dir = dir.as_ref();
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        let [c, h, w] = self.shape;
        let mut idx = vec![0u8, 0, 0x08, 4];
        for d in [self.items.len(), h, w, c] {
            let d = u32::try_from(d).map_err(|_| {
                Error::malformed("<memory>", format!("dimension {d} does not fit IDX's u32"))
            })?;
            idx.extend_from_slice(&d.to_be_bytes());
        }
        idx.extend_from_slice(&self.pixels);
        let mut classes = format!("{CLASSES_HEADER}\n");
        for (label, class) in self.classes.iter().enumerate() {
            let split = if class.held_out { "test" } else { "train" };
            classes.push_str(&format!(
                "{label}\t{split}\t{}\t{}\n",
                class.key, class.name
            ));
        }
        let mut items = format!("{ITEMS_HEADER}\n");
        for (i, item) in self.items.iter().enumerate() {
            items.push_str(&format!(
                "{i}\t{}\t{}\t{}\n",
                item.label, item.source, item.origin
            ));
        }
        for (name, bytes) in [
            (RENDERED_IMAGES, idx.as_slice()),
            (RENDERED_CLASSES, classes.as_bytes()),
            (RENDERED_ITEMS, items.as_bytes()),
        ] {
            let path = dir.join(name);
            std::fs::write(&path, bytes).map_err(|e| Error::io(&path, e))?;
        }
        Ok(())
    }

    /// The training classes' items and the held-out classes' items, as the stored split says,
    /// each in item order.
    ///
    /// # Errors
    /// As [`validate`](RenderedSet::validate).
    pub fn into_split(self) -> Result<Split> {
        self.validate()?;
        let held_out: Vec<bool> = self.classes.iter().map(|c| c.held_out).collect();
        let labels = self.labels();
        let (test, train): (Vec<usize>, Vec<usize>) =
            (0..labels.len()).partition(|&i| held_out[labels[i] as usize]);
        let all: Arc<dyn crate::Dataset> = Arc::new(InMemoryDataset::new(
            self.pixels,
            labels,
            self.shape,
            255.0,
        )?);
        Ok(Split::new(
            Arc::new(Subset::new(all.clone(), train)?),
            Arc::new(Subset::new(all, test)?),
        ))
    }
}

/// Splits a line of a `.tsv` into exactly `n` fields, or says which line is wrong.
fn fields<'a>(path: &Path, line_no: usize, line: &'a str, n: usize) -> Result<Vec<&'a str>> {
    let f: Vec<&str> = line.split('\t').collect();
    if f.len() != n {
        return Err(Error::malformed(
            path,
            format!(
                "line {line_no}: {} tab-separated fields, expected {n}",
                f.len()
            ),
        ));
    }
    Ok(f)
}

fn read_text(path: &Path, hint: &str) -> Result<String> {
    match std::fs::read_to_string(path) {
        Ok(t) => Ok(t),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(Error::NotFound {
            path: path.to_path_buf(),
            hint: hint.to_owned(),
        }),
        Err(e) => Err(Error::io(path, e)),
    }
}

/// The lines after the header, which must be `header`, numbered from 2.
fn body<'a>(
    path: &Path,
    text: &'a str,
    header: &str,
) -> Result<impl Iterator<Item = (usize, &'a str)>> {
    let mut lines = text.lines();
    if lines.next() != Some(header) {
        return Err(Error::malformed(
            path,
            format!("line 1: expected the header {header:?}"),
        ));
    }
    Ok(lines.enumerate().map(|(i, l)| (i + 2, l)))
}

fn number(path: &Path, line: usize, what: &str, field: &str) -> Result<usize> {
    field.parse().map_err(|_| {
        Error::malformed(
            path,
            format!("line {line}: {what} {field:?} is not a number"),
        )
    })
}

/// Reads a rendered set from `dir` (the files of [`RenderedSet`]), checking every
/// line and that the parts agree ([`RenderedSet::validate`]). `hint` says how to get the set
/// when the folder or one of its files is missing.
///
/// # Errors
/// [`Error::NotFound`] with `hint` when a file is missing, [`Error::Malformed`] naming the file
/// and line when one is wrong, or the IDX reader's errors for the images.
pub fn read_rendered(dir: impl AsRef<Path>, hint: &str) -> Result<RenderedSet> {
    let dir = dir.as_ref();
    let path = dir.join(RENDERED_CLASSES);
    let text = read_text(&path, hint)?;
    let mut classes = Vec::new();
    for (line, l) in body(&path, &text, CLASSES_HEADER)? {
        let f = fields(&path, line, l, 4)?;
        let label = number(&path, line, "label", f[0])?;
        if label != classes.len() {
            return Err(Error::malformed(
                &path,
                format!(
                    "line {line}: label {label}, expected {} (labels count up from 0)",
                    classes.len()
                ),
            ));
        }
        let held_out = match f[1] {
            "train" => false,
            "test" => true,
            other => {
                return Err(Error::malformed(
                    &path,
                    format!("line {line}: split {other:?} is neither \"train\" nor \"test\""),
                ));
            }
        };
        classes.push(RenderedClass {
            key: f[2].to_owned(),
            name: f[3].to_owned(),
            held_out,
        });
    }

    let path = dir.join(RENDERED_ITEMS);
    let text = read_text(&path, hint)?;
    let mut items = Vec::new();
    for (line, l) in body(&path, &text, ITEMS_HEADER)? {
        let f = fields(&path, line, l, 4)?;
        let item = number(&path, line, "item", f[0])?;
        if item != items.len() {
            return Err(Error::malformed(
                &path,
                format!(
                    "line {line}: item {item}, expected {} (items count up from 0)",
                    items.len()
                ),
            ));
        }
        let label = number(&path, line, "label", f[1])?;
        if label >= classes.len() {
            return Err(Error::malformed(
                &path,
                format!(
                    "line {line}: label {label}, but {} lists {} classes",
                    RENDERED_CLASSES,
                    classes.len()
                ),
            ));
        }
        items.push(RenderedItem {
            label: label as u32,
            source: f[2].to_owned(),
            origin: f[3].to_owned(),
        });
    }

    let path = dir.join(RENDERED_IMAGES);
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(Error::NotFound {
                path,
                hint: hint.to_owned(),
            });
        }
        Err(e) => return Err(Error::io(&path, e)),
    };
    let idx = parse_idx(&bytes, &path)?;
    let [n, h, w, c] = idx.dims[..] else {
        return Err(Error::malformed(
            &path,
            format!("expected 4 dimensions (N, H, W, C), found {:?}", idx.dims),
        ));
    };
    if n != items.len() {
        return Err(Error::CountMismatch {
            images: path,
            n_images: n,
            labels: dir.join(RENDERED_ITEMS),
            n_labels: items.len(),
        });
    }
    let set = RenderedSet {
        classes,
        items,
        shape: [c, h, w],
        pixels: idx.data,
    };
    set.validate().map_err(|e| match e {
        Error::Malformed { reason, .. } => Error::malformed(dir, reason),
        other => other,
    })?;
    Ok(set)
}

/// Reads the rendered set in `dir`, checks it has `channels` channels (`kind` names the set in
/// the error), and returns its stored split.
pub(crate) fn rendered_split(dir: &Path, kind: &str, channels: usize) -> Result<Split> {
    let hint = format!("run `cargo xtask data {kind}` to build it");
    let set = read_rendered(dir, &hint)?;
    if set.shape[0] != channels {
        return Err(Error::malformed(
            dir.join(RENDERED_IMAGES),
            format!(
                "the {kind} set has {channels} channel(s) per image, this one has {}; is `path` the folder of another set?",
                set.shape[0]
            ),
        ));
    }
    set.into_split()
}
