//! Checksums of a stored set: what makes "the same bytes on every machine" checkable.
//!
//! Besides the three files of the set ([`dml_data::formats::read_rendered`]), a built folder
//! holds:
//!
//! - `SHA256SUMS`: the SHA-256 of each of the three files, in `sha256sum` format (so
//!   `sha256sum -c SHA256SUMS` checks them without this crate);
//! - `checksums.tsv`: the SHA-256 of every class (its key, then each item's source and pixels),
//!   to find which classes differ when two builds do not agree;
//! - `MANIFEST`: the kind, the shape, the counts per side and per source, the split seed, the
//!   SHA-256 of each side's class list (the keys of its classes and their items, in order) and
//!   the checksum of the whole set, which is the SHA-256 of `SHA256SUMS`;
//! - `curation.txt`: what curation merged and dropped ([`crate::Report`]).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use dml_data::formats::{
    RENDERED_CLASSES, RENDERED_IMAGES, RENDERED_ITEMS, RenderedSet, read_rendered,
};
use sha2::{Digest, Sha256};

use crate::{Error, Result};

/// The file of per-file checksums.
pub const SHA256SUMS: &str = "SHA256SUMS";
/// The manifest.
pub const MANIFEST: &str = "MANIFEST";
/// The per-class checksums.
pub const CLASS_CHECKSUMS: &str = "checksums.tsv";
/// The curation report.
pub const CURATION: &str = "curation.txt";

fn hex(digest: impl AsRef<[u8]>) -> String {
    digest.as_ref().iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// SHA-256 of `bytes`, lower-case hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(Sha256::digest(bytes))
}

/// The counts and checksums of a set (see the [module docs](self)).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Manifest {
    /// `emoji` or `glyphs` (or a test's name).
    pub kind: String,
    /// (C, H, W).
    pub shape: [usize; 3],
    /// Number of classes (training, held out).
    pub classes: (usize, usize),
    /// Number of items (training, held out).
    pub items: (usize, usize),
    /// Items per source, sources sorted by name.
    pub per_source: Vec<(String, usize)>,
    /// The seed of the split.
    pub split_seed: u64,
    /// SHA-256 of the training side's class list.
    pub train: String,
    /// SHA-256 of the held-out side's class list.
    pub test: String,
    /// The checksum of the whole set: SHA-256 of `SHA256SUMS`.
    pub set: String,
    /// The content of `SHA256SUMS`.
    pub sums: String,
    /// The content of `checksums.tsv`.
    pub class_sums: String,
}

/// The class list of one side: each class's key, then its items' sources and pixels.
fn side_checksum(set: &RenderedSet, held_out: bool) -> String {
    let item_len = set.shape.iter().product::<usize>();
    let mut h = Sha256::new();
    let mut by_class: BTreeMap<u32, Vec<usize>> = BTreeMap::new();
    for (i, item) in set.items.iter().enumerate() {
        by_class.entry(item.label).or_default().push(i);
    }
    for (label, class) in set.classes.iter().enumerate() {
        if class.held_out != held_out {
            continue;
        }
        h.update(class.key.as_bytes());
        h.update([b'\n']);
        for &i in by_class.get(&(label as u32)).into_iter().flatten() {
            h.update(set.items[i].source.as_bytes());
            h.update([b'\n']);
            h.update(&set.pixels[i * item_len..(i + 1) * item_len]);
        }
    }
    hex(h.finalize())
}

fn class_checksums(set: &RenderedSet) -> String {
    let item_len = set.shape.iter().product::<usize>();
    let mut hashers: Vec<Sha256> = set.classes.iter().map(|_| Sha256::new()).collect();
    for (i, item) in set.items.iter().enumerate() {
        let h = &mut hashers[item.label as usize];
        h.update(item.source.as_bytes());
        h.update([b'\n']);
        h.update(&set.pixels[i * item_len..(i + 1) * item_len]);
    }
    let mut s = String::from("label\tkey\tsha256\n");
    for (label, (class, h)) in set.classes.iter().zip(hashers).enumerate() {
        let _ = writeln!(s, "{label}\t{}\t{}", class.key, hex(h.finalize()));
    }
    s
}

impl Manifest {
    /// The manifest of the set stored in `dir` as `set` (the file checksums are of the files
    /// on disk).
    ///
    /// # Errors
    /// An I/O error reading one of the three files.
    pub fn of(dir: &Path, set: &RenderedSet, kind: &str, split_seed: u64) -> Result<Manifest> {
        let mut sums = String::new();
        for name in [RENDERED_IMAGES, RENDERED_CLASSES, RENDERED_ITEMS] {
            let path = dir.join(name);
            let bytes = std::fs::read(&path).map_err(|e| Error::io(&path, e))?;
            let _ = writeln!(sums, "{}  {name}", sha256_hex(&bytes));
        }
        let count = |held_out: bool| {
            let classes = set
                .classes
                .iter()
                .filter(|c| c.held_out == held_out)
                .count();
            let items = set
                .items
                .iter()
                .filter(|i| set.classes[i.label as usize].held_out == held_out)
                .count();
            (classes, items)
        };
        let (train, test) = (count(false), count(true));
        let mut per_source: BTreeMap<String, usize> = BTreeMap::new();
        for item in &set.items {
            *per_source.entry(item.source.clone()).or_default() += 1;
        }
        Ok(Manifest {
            kind: kind.to_owned(),
            shape: set.shape,
            classes: (train.0, test.0),
            items: (train.1, test.1),
            per_source: per_source.into_iter().collect(),
            split_seed,
            train: side_checksum(set, false),
            test: side_checksum(set, true),
            set: sha256_hex(sums.as_bytes()),
            sums,
            class_sums: class_checksums(set),
        })
    }

    /// The `MANIFEST` text.
    pub fn to_text(&self) -> String {
        let mut s = String::new();
        let [c, h, w] = self.shape;
        let _ = writeln!(
            s,
            "# dml rendered data set; `cargo xtask data {}` builds and verifies it",
            self.kind
        );
        let _ = writeln!(s, "kind\t{}", self.kind);
        let _ = writeln!(s, "shape\t{c}\t{h}\t{w}");
        let _ = writeln!(
            s,
            "classes\t{}\ttrain\t{}\ttest\t{}",
            self.classes.0 + self.classes.1,
            self.classes.0,
            self.classes.1
        );
        let _ = writeln!(
            s,
            "items\t{}\ttrain\t{}\ttest\t{}",
            self.items.0 + self.items.1,
            self.items.0,
            self.items.1
        );
        for (source, n) in &self.per_source {
            let _ = writeln!(s, "source\t{source}\t{n}");
        }
        let _ = writeln!(s, "split-seed\t{}", self.split_seed);
        let _ = writeln!(s, "train-classes-sha256\t{}", self.train);
        let _ = writeln!(s, "test-classes-sha256\t{}", self.test);
        let _ = writeln!(s, "set-sha256\t{}", self.set);
        s
    }

    /// Writes `SHA256SUMS`, `checksums.tsv` and `MANIFEST` into `dir`.
    ///
    /// # Errors
    /// An I/O error naming the file.
    pub fn write(&self, dir: &Path) -> Result<()> {
        for (name, text) in [
            (SHA256SUMS, &self.sums),
            (CLASS_CHECKSUMS, &self.class_sums),
            (MANIFEST, &self.to_text()),
        ] {
            let path = dir.join(name);
            std::fs::write(&path, text).map_err(|e| Error::io(&path, e))?;
        }
        Ok(())
    }
}

/// Writes `set` into `dir` with its manifest, checksums and curation report `curation`.
///
/// # Errors
/// The set's own checks ([`RenderedSet::validate`]) or an I/O error.
pub fn store(
    dir: &Path,
    set: &RenderedSet,
    kind: &str,
    split_seed: u64,
    curation: &str,
) -> Result<Manifest> {
    set.write(dir)?;
    let manifest = Manifest::of(dir, set, kind, split_seed)?;
    manifest.write(dir)?;
    let path = dir.join(CURATION);
    std::fs::write(&path, curation).map_err(|e| Error::io(&path, e))?;
    Ok(manifest)
}

/// Reads the set in `dir` and recomputes every checksum; returns its manifest when all agree
/// with the stored `SHA256SUMS`, `checksums.tsv` and `MANIFEST`.
///
/// # Errors
/// [`Error::Verify`] naming the first file that differs; the reader's errors for a set that
/// cannot be read.
pub fn verify(dir: &Path) -> Result<Manifest> {
    let hint = "the set is incomplete; build it again with `cargo xtask data <kind> --force`";
    let text = |name: &str| -> Result<String> {
        let path = dir.join(name);
        String::from_utf8(crate::error::read(&path, hint)?)
            .map_err(|_| Error::malformed(&path, "not UTF-8"))
    };
    let stored = text(MANIFEST)?;
    let field = |key: &str| -> Result<String> {
        stored
            .lines()
            .find_map(|l| l.strip_prefix(key)?.strip_prefix('\t'))
            .map(str::to_owned)
            .ok_or_else(|| Error::malformed(dir.join(MANIFEST), format!("no `{key}` line")))
    };
    let kind = field("kind")?;
    let seed = field("split-seed")?
        .parse::<u64>()
        .map_err(|_| Error::malformed(dir.join(MANIFEST), "split-seed is not a number"))?;
    let set = read_rendered(dir, hint)?;
    let now = Manifest::of(dir, &set, &kind, seed)?;
    for (name, expected, found) in [
        (SHA256SUMS, text(SHA256SUMS)?, now.sums.clone()),
        (
            CLASS_CHECKSUMS,
            text(CLASS_CHECKSUMS)?,
            now.class_sums.clone(),
        ),
        (MANIFEST, stored.clone(), now.to_text()),
    ] {
        if expected != found {
            let line = expected
                .lines()
                .zip(found.lines())
                .find(|(a, b)| a != b)
                .map(|(a, b)| format!("stored {a:?}, recomputed {b:?}"))
                .unwrap_or_else(|| "the number of lines differs".to_owned());
            return Err(Error::Verify {
                path: dir.join(name),
                reason: format!("does not match the set: {line}"),
            });
        }
    }
    Ok(now)
}
