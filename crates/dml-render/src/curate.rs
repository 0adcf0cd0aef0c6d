//! From drawings to a data set: what is kept, what is merged, and the split.
//!
//! Sources (vendors, font designs) do not always draw every class differently. The rules, in
//! the order they are applied:
//!
//! 1. **Blank**: a drawing with fewer than `min_ink_pixels` pixels that differ from the
//!    background by `ink_threshold` or more is dropped (an empty glyph, a white square on a
//!    white page).
//! 2. **Shared drawings**: two drawings of different classes by the same source are *the same
//!    drawing* when at most `same_max_pixels` pixels differ by `ink_threshold` or more (a
//!    tolerance for anti-aliasing, far below what tells a skin tone or a stroke apart).
//!    Where two classes share their drawing in *every* source that draws both (and at least
//!    two sources do), they are the same picture under two names (the flags of Australia and of
//!    Heard and McDonald Islands): the classes are **merged** into one. Otherwise the shared
//!    drawing is **dropped** from every class of that source that shares it (one vendor draws all
//!    skin tones of an emoji alike; the others do not): the metric would count a tie between two
//!    identical pictures as an error.
//! 3. **Repeats**: within a class, a drawing that is the same drawing as an earlier one (two
//!    fonts sharing their outlines) is dropped, so no query finds a copy of itself.
//! 4. **Too few**: classes left with fewer than `min_items` drawings are dropped (retrieval
//!    needs a second item to find).
//!
//! Then the **split**: classes carry a group (an emoji and its skin-tone variants; merged
//! classes join their groups), the groups are shuffled with a fixed seed (ChaCha8,
//! Fisher–Yates) and taken in that order for training until the training classes are at least
//! half of all classes; the other groups are held out. A group is never split.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use dml_data::formats::{RenderedClass, RenderedItem, RenderedSet};
use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;

use crate::raster::ink_pixels;
use crate::{Error, Result};

/// A class before curation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClassSpec {
    /// Its stable key (no tab, newline or `+`, which joins the keys of merged classes).
    pub key: String,
    /// Its name.
    pub name: String,
    /// Classes of one group are kept on one side of the split.
    pub group: usize,
}

/// One source's drawing of one class.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Drawing {
    /// Index of its class in the class list.
    pub class: usize,
    /// Index of its source in the source list.
    pub source: usize,
    /// The file it came from, inside its package.
    pub origin: String,
    /// H × W × C bytes.
    pub pixels: Vec<u8>,
}

/// The thresholds and the seed of curation (see the [module docs](self)).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Rules {
    /// The (C, H, W) of every drawing.
    pub shape: [usize; 3],
    /// The background value every channel of an empty pixel has.
    pub background: u8,
    /// A pixel is ink when some channel differs from the background by at least this.
    pub ink_threshold: u8,
    /// A drawing with fewer ink pixels is blank.
    pub min_ink_pixels: usize,
    /// Two drawings are the same when at most this many pixels differ by `ink_threshold` or
    /// more in some channel.
    pub same_max_pixels: usize,
    /// Classes with fewer drawings are dropped.
    pub min_items: usize,
    /// The seed of the permutation of groups that decides the split.
    pub split_seed: u64,
}

/// What curation did, for the build's log and the data set's `curation.txt`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Report {
    /// Number of classes before curation.
    pub classes_in: usize,
    /// Number of drawings before curation.
    pub drawings_in: usize,
    /// Blank drawings dropped: (class key, source).
    pub blank: Vec<(String, String)>,
    /// Groups of classes merged into one: their keys.
    pub merged: Vec<Vec<String>>,
    /// Drawings dropped because another class of the same source has the same drawing: (class
    /// key after merging, source).
    pub shared: Vec<(String, String)>,
    /// Drawings dropped as a repeat of another drawing of their class: (class key, source).
    pub repeats: Vec<(String, String)>,
    /// Classes dropped for having too few drawings left: (class key, drawings left).
    pub too_few: Vec<(String, usize)>,
}

impl Report {
    /// The report as text: counts first, then every merge and drop, one per line.
    pub fn to_text(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "in: {} classes, {} drawings",
            self.classes_in, self.drawings_in
        );
        let _ = writeln!(s, "blank drawings dropped: {}", self.blank.len());
        let _ = writeln!(
            s,
            "classes merged: {} groups ({} classes)",
            self.merged.len(),
            self.merged.iter().map(Vec::len).sum::<usize>()
        );
        let _ = writeln!(s, "shared drawings dropped: {}", self.shared.len());
        let _ = writeln!(s, "repeated drawings dropped: {}", self.repeats.len());
        let _ = writeln!(
            s,
            "classes with too few drawings dropped: {}",
            self.too_few.len()
        );
        for (key, source) in &self.blank {
            let _ = writeln!(s, "blank\t{key}\t{source}");
        }
        for keys in &self.merged {
            let _ = writeln!(s, "merged\t{}", keys.join("+"));
        }
        for (key, source) in &self.shared {
            let _ = writeln!(s, "shared\t{key}\t{source}");
        }
        for (key, source) in &self.repeats {
            let _ = writeln!(s, "repeat\t{key}\t{source}");
        }
        for (key, n) in &self.too_few {
            let _ = writeln!(s, "too-few\t{key}\t{n}");
        }
        s
    }
}

/// Union-find over `0..n`, the smaller index as the representative.
struct Sets(Vec<usize>);

impl Sets {
    fn new(n: usize) -> Self {
        Sets((0..n).collect())
    }
    fn find(&mut self, mut x: usize) -> usize {
        while self.0[x] != x {
            self.0[x] = self.0[self.0[x]];
            x = self.0[x];
        }
        x
    }
    fn union(&mut self, a: usize, b: usize) {
        let (a, b) = (self.find(a), self.find(b));
        let (lo, hi) = (a.min(b), a.max(b));
        self.0[hi] = lo;
    }
}

/// A fixed scattered order of the pixels, so that a scan for differing pixels meets the
/// differences of two unlike drawings early (they cluster in raster order) and stops.
fn scan_order(n_pixels: usize) -> Vec<usize> {
    // A stride coprime with the number of pixels visits each exactly once.
    let mut stride = 997 % n_pixels.max(1);
    while gcd(stride.max(1), n_pixels) != 1 {
        stride += 1;
    }
    (0..n_pixels)
        .map(|k| k * stride.max(1) % n_pixels)
        .collect()
}

fn gcd(a: usize, b: usize) -> usize {
    if b == 0 { a } else { gcd(b, a % b) }
}

/// Whether `a` and `b` are the same drawing: at most `rules.same_max_pixels` pixels differ by
/// `rules.ink_threshold` or more in some channel. Stops at the first pixel over the limit.
fn same_drawing(a: &[u8], b: &[u8], order: &[usize], rules: &Rules) -> bool {
    let c = rules.shape[0];
    let mut differing = 0;
    for &p in order {
        let (pa, pb) = (&a[p * c..(p + 1) * c], &b[p * c..(p + 1) * c]);
        if pa
            .iter()
            .zip(pb)
            .any(|(&x, &y)| x.abs_diff(y) >= rules.ink_threshold)
        {
            differing += 1;
            if differing > rules.same_max_pixels {
                return false;
            }
        }
    }
    true
}

/// The pairs (i, j), i < j, of `drawings[members]` that are the same drawing.
fn same_pairs(
    drawings: &[Drawing],
    members: &[usize],
    order: &[usize],
    rules: &Rules,
) -> Vec<(usize, usize)> {
    (0..members.len())
        .into_par_iter()
        .flat_map_iter(|p| {
            let i = members[p];
            members[p + 1..]
                .iter()
                .filter(move |&&j| {
                    same_drawing(&drawings[i].pixels, &drawings[j].pixels, order, rules)
                })
                .map(move |&j| (i.min(j), i.max(j)))
        })
        .collect()
}

/// Applies the rules of the [module docs](self) to `drawings` of `classes` by `sources` and
/// returns the data set (classes sorted by key, each class's items in source order) with the
/// report.
///
/// # Errors
/// [`Error::Malformed`] (naming `"<drawings>"`) when a drawing has the wrong size, names a class
/// or source out of range, or a class is drawn twice by one source; [`Error::Empty`] when fewer
/// than two classes are left.
pub fn curate(
    classes: &[ClassSpec],
    sources: &[String],
    drawings: Vec<Drawing>,
    rules: &Rules,
) -> Result<(RenderedSet, Report)> {
    let len = rules.shape.iter().product::<usize>();
    let order = scan_order(rules.shape[1] * rules.shape[2]);
    let bad = |reason: String| Error::malformed("<drawings>", reason);
    let mut seen = BTreeSet::new();
    for d in &drawings {
        if d.pixels.len() != len {
            return Err(bad(format!(
                "{} has {} values, expected {len} for {:?}",
                d.origin,
                d.pixels.len(),
                rules.shape
            )));
        }
        if d.class >= classes.len() || d.source >= sources.len() {
            return Err(bad(format!(
                "{} names class {} of {} or source {} of {}",
                d.origin,
                d.class,
                classes.len(),
                d.source,
                sources.len()
            )));
        }
        if !seen.insert((d.class, d.source)) {
            return Err(bad(format!(
                "class {:?} is drawn twice by {}",
                classes[d.class].key, sources[d.source]
            )));
        }
    }
    for c in classes {
        if c.key.contains('+') {
            return Err(bad(format!("class key {:?} contains '+'", c.key)));
        }
    }
    let mut report = Report {
        classes_in: classes.len(),
        drawings_in: drawings.len(),
        ..Report::default()
    };
    let [channels, _, _] = rules.shape;

    // 1. Blank drawings.
    let ink: Vec<usize> = drawings
        .par_iter()
        .map(|d| ink_pixels(&d.pixels, channels, rules.background, rules.ink_threshold))
        .collect();
    let mut alive: Vec<bool> = ink.iter().map(|&n| n >= rules.min_ink_pixels).collect();
    for (d, _) in drawings.iter().zip(&alive).filter(|(_, a)| !**a) {
        report
            .blank
            .push((classes[d.class].key.clone(), sources[d.source].clone()));
    }

    // 2. Shared drawings, source by source.
    let mut shared_pairs: Vec<(usize, usize, usize)> = Vec::new(); // (class a, class b, source)
    for s in 0..sources.len() {
        let members: Vec<usize> = (0..drawings.len())
            .filter(|&i| alive[i] && drawings[i].source == s)
            .collect();
        for (i, j) in same_pairs(&drawings, &members, &order, rules) {
            let (a, b) = (drawings[i].class, drawings[j].class);
            shared_pairs.push((a.min(b), a.max(b), s));
        }
    }
    let mut drawn: Vec<BTreeSet<usize>> = vec![BTreeSet::new(); classes.len()];
    for (i, d) in drawings.iter().enumerate() {
        if alive[i] {
            drawn[d.class].insert(d.source);
        }
    }
    let mut same_in: BTreeMap<(usize, usize), usize> = BTreeMap::new();
    for &(a, b, _) in &shared_pairs {
        *same_in.entry((a, b)).or_default() += 1;
    }
    let mut merge = Sets::new(classes.len());
    for (&(a, b), &n_same) in &same_in {
        let n_both = drawn[a].intersection(&drawn[b]).count();
        if n_same == n_both && n_both >= 2 {
            merge.union(a, b);
        }
    }
    // Merged classes: members in class order; per source the first member's drawing is kept.
    let mut members: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    for c in 0..classes.len() {
        members.entry(merge.find(c)).or_default().push(c);
    }
    for m in members.values().filter(|m| m.len() > 1) {
        let mut keys: Vec<String> = m.iter().map(|&c| classes[c].key.clone()).collect();
        keys.sort();
        report.merged.push(keys);
    }
    report.merged.sort();
    // (merged class, source) -> drawing index, in the order of drawings.
    let mut kept: BTreeMap<(usize, usize), usize> = BTreeMap::new();
    let mut class_major: Vec<(usize, usize)> = drawings
        .iter()
        .enumerate()
        .filter(|&(i, _)| alive[i])
        .map(|(i, d)| (d.class, i))
        .collect();
    class_major.sort_unstable();
    for (c, i) in class_major {
        let slot = (merge.find(c), drawings[i].source);
        match kept.entry(slot) {
            // A merged twin of a drawing already kept.
            std::collections::btree_map::Entry::Occupied(_) => alive[i] = false,
            std::collections::btree_map::Entry::Vacant(v) => {
                v.insert(i);
            }
        }
    }
    let mut shared_slots: BTreeSet<(usize, usize)> = BTreeSet::new();
    for &(a, b, s) in &shared_pairs {
        let (ra, rb) = (merge.find(a), merge.find(b));
        if ra != rb {
            shared_slots.insert((ra, s));
            shared_slots.insert((rb, s));
        }
    }
    let merged_key = |root: usize| -> String {
        let mut keys: Vec<&str> = members[&root]
            .iter()
            .map(|&c| classes[c].key.as_str())
            .collect();
        keys.sort();
        keys.join("+")
    };
    for &(root, s) in &shared_slots {
        if let Some(i) = kept.remove(&(root, s)) {
            alive[i] = false;
            report.shared.push((merged_key(root), sources[s].clone()));
        }
    }

    // 3. Repeats within a class, and 4. too few.
    let mut by_class: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    for (&(root, _), &i) in &kept {
        by_class.entry(root).or_default().push(i);
    }
    let mut out_classes: Vec<(String, String, usize, Vec<usize>)> = Vec::new();
    for (root, items) in by_class {
        let mut items_kept: Vec<usize> = Vec::new();
        for i in items {
            let repeat = items_kept
                .iter()
                .any(|&j| same_drawing(&drawings[i].pixels, &drawings[j].pixels, &order, rules));
            if repeat {
                report
                    .repeats
                    .push((merged_key(root), sources[drawings[i].source].clone()));
            } else {
                items_kept.push(i);
            }
        }
        if items_kept.len() < rules.min_items {
            report.too_few.push((merged_key(root), items_kept.len()));
            continue;
        }
        let mut names: Vec<(&str, &str)> = members[&root]
            .iter()
            .map(|&c| (classes[c].key.as_str(), classes[c].name.as_str()))
            .collect();
        names.sort();
        let name = names
            .iter()
            .map(|(_, n)| *n)
            .collect::<Vec<_>>()
            .join(" / ");
        out_classes.push((merged_key(root), name, root, items_kept));
    }
    report.too_few.sort();
    out_classes.sort_by(|a, b| a.0.cmp(&b.0));
    if out_classes.len() < 2 {
        return Err(Error::Empty(format!(
            "only {} class(es) left after curation; a split needs two",
            out_classes.len()
        )));
    }

    // The split: groups joined through merges, shuffled with the seed.
    let mut groups = Sets::new(classes.iter().map(|c| c.group + 1).max().unwrap_or(0));
    for m in members.values() {
        for &c in &m[1..] {
            groups.union(classes[m[0]].group, classes[c].group);
        }
    }
    let class_group: Vec<usize> = out_classes
        .iter()
        .map(|(_, _, root, _)| groups.find(classes[*root].group))
        .collect();
    let mut distinct: Vec<usize> = Vec::new();
    for &g in &class_group {
        if !distinct.contains(&g) {
            distinct.push(g);
        }
    }
    distinct.shuffle(&mut ChaCha8Rng::seed_from_u64(rules.split_seed));
    let mut train_groups = BTreeSet::new();
    let mut n_train = 0;
    for g in distinct {
        if 2 * n_train >= out_classes.len() {
            break;
        }
        n_train += class_group.iter().filter(|&&x| x == g).count();
        train_groups.insert(g);
    }

    let mut set = RenderedSet {
        classes: Vec::with_capacity(out_classes.len()),
        items: Vec::new(),
        shape: rules.shape,
        pixels: Vec::new(),
    };
    for (label, ((key, name, _, items), g)) in out_classes.into_iter().zip(class_group).enumerate()
    {
        set.classes.push(RenderedClass {
            key,
            name,
            held_out: !train_groups.contains(&g),
        });
        for i in items {
            set.items.push(RenderedItem {
                label: label as u32,
                source: sources[drawings[i].source].clone(),
                origin: drawings[i].origin.clone(),
            });
            set.pixels.extend_from_slice(&drawings[i].pixels);
        }
    }
    set.validate()?;
    Ok((set, report))
}
