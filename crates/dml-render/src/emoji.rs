//! The emoji set: one class per emoji (its code point sequence in `emoji.json` of the npm
//! package `emoji-datasource`, skin-tone variants included), one item per vendor drawing.
//!
//! Vendors, all with artwork licences that allow reuse (see `docs/datasets.md`):
//!
//! | source | package | files |
//! |---|---|---|
//! | `google` | `emoji-datasource-google` (Noto Emoji, Apache-2.0) | `img/google/64/*.png` |
//! | `twitter` | `emoji-datasource-twitter` (Twemoji, CC-BY 4.0) | `img/twitter/64/*.png` |
//! | `openmoji` | `openmoji` (CC-BY-SA 4.0) | `color/svg/*.svg` |
//! | `openmoji-black` | `openmoji` (CC-BY-SA 4.0), the black line-art version | `black/svg/*.svg` |
//!
//! Every drawing becomes 64 × 64 RGB on a neutral grey (128) background: PNGs are decoded
//! whatever their colour type, premultiplied and composited; SVGs are rasterised by resvg with
//! their view box filling the square. Each vendor keeps its own framing; nothing is flipped,
//! recoloured or cropped, since direction, colour (skin tone) and size (small and large squares)
//! tell classes apart. Grey rather than white because a few drawings are white on transparent
//! (U+25AB white small square, U+2B1C white large square, U+1F90D white heart are nearly
//! invisible on white) and black line art vanishes on black. On grey, 3 of the 15,144 drawings
//! of the pinned packages have too little ink and [`crate::curate`](mod@crate::curate) drops
//! them: Twitter's grey spider web (U+1F578) and gear (U+2699), whose colours stay within 32 of
//! the grey, and OpenMoji's black U+1F195, an empty SVG.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use rayon::prelude::*;
use serde::Deserialize;

use crate::curate::{ClassSpec, Drawing, Report, Rules, curate};
use crate::raster::{decode_png_rgba, over_background, premultiply, render_svg};
use crate::{Error, Package, Registry, Result};
use dml_data::formats::RenderedSet;

/// Side of the stored images.
pub const EMOJI_SIDE: usize = 64;
/// The grey every drawing is composited on.
pub const EMOJI_BACKGROUND: u8 = 128;
/// The seed of the emoji split's permutation of groups.
pub const EMOJI_SPLIT_SEED: u64 = 0;

/// The npm packages the emoji set is built from, pinned.
pub const EMOJI_PACKAGES: [Package; 3] = [
    Package {
        registry: Registry::Npm,
        name: "emoji-datasource-google",
        version: "16.0.0",
    },
    Package {
        registry: Registry::Npm,
        name: "emoji-datasource-twitter",
        version: "16.0.0",
    },
    Package {
        registry: Registry::Npm,
        name: "openmoji",
        version: "17.0.0",
    },
];

/// The curation rules of the emoji set: a drawing needs 16 pixels that differ from the grey by
/// 32 or more; two drawings are the same when at most 8 of their 4,096 pixels differ by 32 or
/// more (the skin-tone variants of one drawing differ in 17 or more, except where a vendor drew
/// them alike).
pub fn emoji_rules() -> Rules {
    Rules {
        shape: [3, EMOJI_SIDE, EMOJI_SIDE],
        background: EMOJI_BACKGROUND,
        ink_threshold: 32,
        min_ink_pixels: 16,
        same_max_pixels: 8,
        min_items: 2,
        split_seed: EMOJI_SPLIT_SEED,
    }
}

/// The sources, in item order within a class.
pub const EMOJI_SOURCES: [&str; 4] = ["google", "twitter", "openmoji", "openmoji-black"];

#[derive(Deserialize)]
struct Entry {
    name: Option<String>,
    short_name: String,
    unified: String,
    non_qualified: Option<String>,
    image: String,
    #[serde(default)]
    has_img_google: bool,
    #[serde(default)]
    has_img_twitter: bool,
    #[serde(default)]
    skin_variations: BTreeMap<String, Variation>,
}

#[derive(Deserialize)]
struct Variation {
    unified: String,
    non_qualified: Option<String>,
    image: String,
    #[serde(default)]
    has_img_google: bool,
    #[serde(default)]
    has_img_twitter: bool,
}

/// One class with where each vendor's drawing is.
struct EmojiClass {
    spec: ClassSpec,
    unified: String,
    non_qualified: Option<String>,
    image: String,
    google: bool,
    twitter: bool,
}

fn tone_name(modifier: &str) -> &'static str {
    match modifier {
        "1F3FB" => "light skin tone",
        "1F3FC" => "medium-light skin tone",
        "1F3FD" => "medium skin tone",
        "1F3FE" => "medium-dark skin tone",
        "1F3FF" => "dark skin tone",
        _ => "other modifier",
    }
}

/// The classes of `emoji.json`: every entry and every skin-tone variation, sorted by key; a
/// variation's group is its base entry's.
fn classes(json: &[u8], path: &Path) -> Result<Vec<EmojiClass>> {
    let entries: Vec<Entry> = serde_json::from_slice(json)
        .map_err(|e| Error::malformed(path, format!("not the emoji-datasource list: {e}")))?;
    let mut out = Vec::new();
    for (group, e) in entries.into_iter().enumerate() {
        let name = e
            .name
            .clone()
            .unwrap_or_else(|| e.short_name.clone())
            .to_lowercase();
        for (modifiers, v) in &e.skin_variations {
            let tones: Vec<&str> = modifiers.split('-').map(tone_name).collect();
            out.push(EmojiClass {
                spec: ClassSpec {
                    key: v.unified.to_lowercase(),
                    name: format!("{name}: {}", tones.join(", ")),
                    group,
                },
                unified: v.unified.clone(),
                non_qualified: v.non_qualified.clone(),
                image: v.image.clone(),
                google: v.has_img_google,
                twitter: v.has_img_twitter,
            });
        }
        out.push(EmojiClass {
            spec: ClassSpec {
                key: e.unified.to_lowercase(),
                name,
                group,
            },
            unified: e.unified,
            non_qualified: e.non_qualified,
            image: e.image,
            google: e.has_img_google,
            twitter: e.has_img_twitter,
        });
    }
    for c in &out {
        let clean = |s: &str| !s.is_empty() && !s.contains(['\t', '\n', '\r', '+', '/']);
        if !clean(&c.spec.key) || !clean(&c.image) || c.spec.name.contains(['\t', '\n', '\r']) {
            return Err(Error::malformed(
                path,
                format!("entry {:?} has an unexpected key or image name", c.spec.key),
            ));
        }
    }
    out.sort_by(|a, b| a.spec.key.cmp(&b.spec.key));
    if let Some(w) = out.windows(2).find(|w| w[0].spec.key == w[1].spec.key) {
        return Err(Error::malformed(
            path,
            format!("emoji {:?} is listed twice", w[0].spec.key),
        ));
    }
    Ok(out)
}

/// OpenMoji names its files by upper-case code points, with or without the variation selector
/// U+FE0F: the file of a sequence is found exactly, else by its unqualified form, else with every
/// FE0F removed on both sides.
struct OpenMojiFiles {
    exact: BTreeMap<String, String>,
    loose: BTreeMap<String, String>,
}

fn strip_fe0f(key: &str) -> String {
    key.split('-')
        .filter(|p| !p.eq_ignore_ascii_case("FE0F"))
        .collect::<Vec<_>>()
        .join("-")
}

impl OpenMojiFiles {
    fn list(dir: &Path, hint: &str) -> Result<Self> {
        let entries = match std::fs::read_dir(dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(Error::Missing {
                    path: dir.to_path_buf(),
                    hint: hint.to_owned(),
                });
            }
            Err(e) => return Err(Error::io(dir, e)),
        };
        let mut stems = Vec::new();
        for entry in entries {
            let path = entry.map_err(|e| Error::io(dir, e))?.path();
            if path.extension().is_some_and(|e| e == "svg")
                && let Some(stem) = path.file_stem().and_then(|s| s.to_str())
            {
                stems.push(stem.to_owned());
            }
        }
        stems.sort();
        let mut exact = BTreeMap::new();
        let mut loose = BTreeMap::new();
        for stem in stems {
            let upper = stem.to_uppercase();
            loose
                .entry(strip_fe0f(&upper))
                .or_insert_with(|| stem.clone());
            exact.insert(upper, stem);
        }
        Ok(OpenMojiFiles { exact, loose })
    }

    fn find(&self, class: &EmojiClass) -> Option<&str> {
        let unified = class.unified.to_uppercase();
        self.exact
            .get(&unified)
            .or_else(|| {
                class
                    .non_qualified
                    .as_ref()
                    .and_then(|n| self.exact.get(&n.to_uppercase()))
            })
            .or_else(|| self.loose.get(&strip_fe0f(&unified)))
            .map(String::as_str)
    }
}

fn package_dir(root: &Path, package: &Package) -> PathBuf {
    root.join(package.name).join("package")
}

/// Reads the unpacked packages under `root` (`root/<package name>/package/…`, as `npm pack`'s
/// tarballs unpack) and builds the emoji set: every class and drawing, curated
/// ([`crate::curate`](mod@crate::curate)) and split.
///
/// # Errors
/// [`Error::Missing`] for a package file that is not there, [`Error::Malformed`] for an
/// `emoji.json` that is not the expected list or a PNG that is not 64 × 64, the decoders'
/// errors naming the file.
pub fn build_emoji(root: &Path) -> Result<(RenderedSet, Report)> {
    let hint = "unpack the npm packages with `cargo xtask data emoji`";
    let [google, twitter, openmoji] = &EMOJI_PACKAGES;
    let google_dir = package_dir(root, google);
    let twitter_dir = package_dir(root, twitter);
    let openmoji_dir = package_dir(root, openmoji);
    let json_path = google_dir.join("emoji.json");
    let json = crate::error::read(&json_path, hint)?;
    // The Twitter package ships the same list; a different one would mean mismatched versions.
    let twitter_json = twitter_dir.join("emoji.json");
    if crate::error::read(&twitter_json, hint)? != json {
        return Err(Error::malformed(
            twitter_json,
            format!(
                "differs from {}: use the same emoji-datasource version for both vendors",
                json_path.display()
            ),
        ));
    }
    let classes = classes(&json, &json_path)?;
    let colour = OpenMojiFiles::list(&openmoji_dir.join("color/svg"), hint)?;
    let black = OpenMojiFiles::list(&openmoji_dir.join("black/svg"), hint)?;

    // (class, source, origin label, path, is SVG)
    let mut jobs: Vec<(usize, usize, String, PathBuf, bool)> = Vec::new();
    for (c, class) in classes.iter().enumerate() {
        if class.google {
            let rel = format!("img/google/64/{}", class.image);
            jobs.push((
                c,
                0,
                format!("{}@{}/{rel}", google.name, google.version),
                google_dir.join(&rel),
                false,
            ));
        }
        if class.twitter {
            let rel = format!("img/twitter/64/{}", class.image);
            jobs.push((
                c,
                1,
                format!("{}@{}/{rel}", twitter.name, twitter.version),
                twitter_dir.join(&rel),
                false,
            ));
        }
        for (source, files, sub) in [(2, &colour, "color/svg"), (3, &black, "black/svg")] {
            if let Some(stem) = files.find(class) {
                let rel = format!("{sub}/{stem}.svg");
                jobs.push((
                    c,
                    source,
                    format!("{}@{}/{rel}", openmoji.name, openmoji.version),
                    openmoji_dir.join(&rel),
                    true,
                ));
            }
        }
    }
    let drawings = jobs
        .into_par_iter()
        .map(|(class, source, origin, path, svg)| {
            let bytes = crate::error::read(&path, hint)?;
            let mut rgba = if svg {
                render_svg(&bytes, EMOJI_SIDE, &path)?
            } else {
                let (w, h, mut rgba) = decode_png_rgba(&bytes, &path)?;
                if (w, h) != (EMOJI_SIDE, EMOJI_SIDE) {
                    return Err(Error::malformed(
                        &path,
                        format!("{w} x {h} pixels, expected {EMOJI_SIDE} x {EMOJI_SIDE}"),
                    ));
                }
                premultiply(&mut rgba);
                rgba
            };
            let pixels = over_background(&rgba, EMOJI_BACKGROUND);
            rgba.clear();
            Ok(Drawing {
                class,
                source,
                origin,
                pixels,
            })
        })
        .collect::<Result<Vec<Drawing>>>()?;
    let specs: Vec<ClassSpec> = classes.into_iter().map(|c| c.spec).collect();
    let sources: Vec<String> = EMOJI_SOURCES.iter().map(|s| s.to_string()).collect();
    curate(&specs, &sources, drawings, &emoji_rules())
}
