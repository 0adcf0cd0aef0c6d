//! The two rendered sets built from small sources made here (emoji: PNGs of every colour type
//! and SVGs in the packages' layout; glyphs: three subset fonts with FreeType's renderings as
//! the reference), then read back through dml-data's loader: counts worked out by hand, classes
//! disjoint, families on one side, pixels, determinism and the checksums.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use dml_data::formats::{RENDERED_CLASSES, RENDERED_IMAGES, RenderedSet, read_rendered};
use dml_data::{DataConfig, Dataset, Split, load_batch};
use dml_render::glyphs::{GLYPH_BLOCK, GLYPH_SIDE};
use dml_render::manifest::{SHA256SUMS, sha256_hex};
use dml_render::{Design, Error, Report, build_emoji, build_glyphs, store, verify};

// ---------------------------------------------------------------------------------------------
// Emoji: a miniature of the three npm packages.

const SIDE: usize = 64;

/// A 64 x 64 straight-RGBA picture: transparent, with an opaque `colour` square of 16 px at
/// (`x`, `y`) in units of 16 px.
fn square(x: usize, y: usize, colour: [u8; 3]) -> Vec<u8> {
    let mut px = vec![0u8; SIDE * SIDE * 4];
    for r in y * 16..y * 16 + 16 {
        for c in x * 16..x * 16 + 16 {
            px[(r * SIDE + c) * 4..(r * SIDE + c) * 4 + 4]
                .copy_from_slice(&[colour[0], colour[1], colour[2], 255]);
        }
    }
    px
}

/// Encodes a PNG with the png crate in the colour type and depth given.
fn png(
    color: png::ColorType,
    depth: png::BitDepth,
    data: &[u8],
    palette: Option<(&[u8], &[u8])>,
) -> Vec<u8> {
    let mut out = Vec::new();
    {
        let mut enc = png::Encoder::new(&mut out, SIDE as u32, SIDE as u32);
        enc.set_color(color);
        enc.set_depth(depth);
        if let Some((plte, trns)) = palette {
            enc.set_palette(plte.to_vec());
            enc.set_trns(trns.to_vec());
        }
        let mut w = enc.write_header().unwrap();
        w.write_image_data(data).unwrap();
    }
    out
}

fn rgba_png(px: &[u8]) -> Vec<u8> {
    png(png::ColorType::Rgba, png::BitDepth::Eight, px, None)
}

/// A picture as an 8-bit palette PNG: index 0 transparent, index 1 opaque `colour`.
fn palette8_png(px: &[u8], colour: [u8; 3]) -> Vec<u8> {
    let idx: Vec<u8> = px.chunks_exact(4).map(|p| u8::from(p[3] > 0)).collect();
    let plte = [0, 0, 0, colour[0], colour[1], colour[2]];
    png(
        png::ColorType::Indexed,
        png::BitDepth::Eight,
        &idx,
        Some((&plte, &[0, 255])),
    )
}

/// The same as a 4-bit palette PNG (two pixels per byte, high nibble first).
fn palette4_png(px: &[u8], colour: [u8; 3]) -> Vec<u8> {
    let idx: Vec<u8> = px.chunks_exact(4).map(|p| u8::from(p[3] > 0)).collect();
    let packed: Vec<u8> = idx.chunks_exact(2).map(|p| (p[0] << 4) | p[1]).collect();
    let plte = [0, 0, 0, colour[0], colour[1], colour[2]];
    png(
        png::ColorType::Indexed,
        png::BitDepth::Four,
        &packed,
        Some((&plte, &[0, 255])),
    )
}

/// A grey + alpha PNG of the picture's red channel.
fn grey_alpha_png(px: &[u8]) -> Vec<u8> {
    let la: Vec<u8> = px.chunks_exact(4).flat_map(|p| [p[0], p[3]]).collect();
    png(
        png::ColorType::GrayscaleAlpha,
        png::BitDepth::Eight,
        &la,
        None,
    )
}

/// An SVG of OpenMoji's 72 x 72 view box with one rectangle (units of 9 = 8 px at 64 px).
fn svg(x: u32, y: u32, w: u32, h: u32, colour: &str) -> String {
    format!(
        r#"<svg viewBox="0 0 72 72" xmlns="http://www.w3.org/2000/svg"><rect x="{}" y="{}" width="{}" height="{}" fill="{colour}"/></svg>"#,
        x * 9,
        y * 9,
        w * 9,
        h * 9
    )
}

struct Emoji {
    unified: &'static str,
    google: Option<Vec<u8>>,
    twitter: Option<Vec<u8>>,
    skin: Vec<(&'static str, Emoji)>,
}

fn emoji(unified: &'static str, google: Option<Vec<u8>>, twitter: Option<Vec<u8>>) -> Emoji {
    Emoji {
        unified,
        google,
        twitter,
        skin: Vec::new(),
    }
}

fn json_entry(e: &Emoji) -> serde_json::Value {
    serde_json::json!({
        "name": format!("EMOJI {}", e.unified),
        "short_name": e.unified.to_lowercase(),
        "unified": e.unified,
        "non_qualified": null,
        "image": format!("{}.png", e.unified.to_lowercase()),
        "has_img_google": e.google.is_some(),
        "has_img_twitter": e.twitter.is_some(),
    })
}

/// Writes the miniature packages under `root`; `openmoji` maps file stems to (colour, black)
/// SVGs.
fn write_packages(
    root: &Path,
    entries: &[Emoji],
    openmoji: &[(&str, Option<String>, Option<String>)],
) {
    let google = root.join("emoji-datasource-google/package");
    let twitter = root.join("emoji-datasource-twitter/package");
    for dir in [google.join("img/google/64"), twitter.join("img/twitter/64")] {
        std::fs::create_dir_all(dir).unwrap();
    }
    let mut list = Vec::new();
    let write = |e: &Emoji| {
        let name = format!("{}.png", e.unified.to_lowercase());
        if let Some(b) = &e.google {
            std::fs::write(google.join("img/google/64").join(&name), b).unwrap();
        }
        if let Some(b) = &e.twitter {
            std::fs::write(twitter.join("img/twitter/64").join(&name), b).unwrap();
        }
    };
    for e in entries {
        let mut entry = json_entry(e);
        write(e);
        if !e.skin.is_empty() {
            let mut variations = serde_json::Map::new();
            for (modifier, v) in &e.skin {
                variations.insert(modifier.to_string(), json_entry(v));
                write(v);
            }
            entry["skin_variations"] = serde_json::Value::Object(variations);
        }
        list.push(entry);
    }
    let json = serde_json::to_vec(&list).unwrap();
    std::fs::write(google.join("emoji.json"), &json).unwrap();
    std::fs::write(twitter.join("emoji.json"), &json).unwrap();
    let om = root.join("openmoji/package");
    for sub in ["color/svg", "black/svg"] {
        std::fs::create_dir_all(om.join(sub)).unwrap();
    }
    for (stem, colour, black) in openmoji {
        if let Some(s) = colour {
            std::fs::write(om.join("color/svg").join(format!("{stem}.svg")), s).unwrap();
        }
        if let Some(s) = black {
            std::fs::write(om.join("black/svg").join(format!("{stem}.svg")), s).unwrap();
        }
    }
}

/// The scenario: every rule of curation once, every PNG colour type, OpenMoji's file naming.
fn emoji_sources(root: &Path) {
    let sq = square;
    let entries = vec![
        // Four vendors, four different drawings.
        emoji(
            "1F600",
            Some(rgba_png(&sq(0, 0, [200, 30, 40]))),
            Some(palette8_png(&sq(1, 0, [1, 2, 3]), [10, 200, 30])),
        ),
        // A family: base and two skin tones, each drawn differently by Google and Twitter
        // (Twitter as 4-bit palettes), alike in OpenMoji's line art.
        Emoji {
            unified: "1F44D",
            google: Some(rgba_png(&sq(0, 1, [250, 200, 0]))),
            twitter: Some(palette4_png(&sq(0, 2, [0, 0, 0]), [250, 200, 0])),
            skin: vec![
                (
                    "1F3FB",
                    emoji(
                        "1F44D-1F3FB",
                        Some(rgba_png(&sq(1, 1, [250, 220, 190]))),
                        Some(palette4_png(&sq(1, 2, [0, 0, 0]), [250, 220, 190])),
                    ),
                ),
                (
                    "1F3FC",
                    emoji(
                        "1F44D-1F3FC",
                        Some(rgba_png(&sq(2, 1, [220, 180, 140]))),
                        Some(palette4_png(&sq(2, 2, [0, 0, 0]), [220, 180, 140])),
                    ),
                ),
            ],
        },
        // Two flags drawn alike by every vendor that draws them: one class.
        emoji(
            "1F1E6-1F1FA",
            Some(rgba_png(&sq(3, 3, [0, 0, 140]))),
            Some(rgba_png(&sq(3, 2, [0, 0, 140]))),
        ),
        emoji(
            "1F1ED-1F1F2",
            Some(rgba_png(&sq(3, 3, [0, 0, 140]))),
            Some(rgba_png(&sq(3, 2, [0, 0, 140]))),
        ),
        // Google's drawing is empty; Twitter's is grey + alpha.
        emoji(
            "1F4A9",
            Some(rgba_png(&vec![0u8; SIDE * SIDE * 4])),
            Some(grey_alpha_png(&sq(2, 3, [250, 0, 0]))),
        ),
        // Only Google draws it: one drawing, too few.
        emoji("1F680", Some(rgba_png(&sq(1, 3, [90, 90, 200]))), None),
        // Twitter draws the dog and the cat alike, the others do not.
        emoji(
            "1F436",
            Some(rgba_png(&sq(2, 0, [150, 100, 50]))),
            Some(rgba_png(&sq(3, 0, [160, 160, 160]))),
        ),
        emoji(
            "1F431",
            Some(rgba_png(&sq(3, 1, [240, 160, 40]))),
            Some(rgba_png(&sq(3, 0, [160, 160, 160]))),
        ),
        // OpenMoji names this one without the variation selector.
        emoji(
            "25AB-FE0F",
            Some(rgba_png(&sq(0, 3, [255, 255, 255]))),
            Some(rgba_png(&sq(1, 3, [250, 250, 250]))),
        ),
        emoji(
            "2B1C",
            Some(rgba_png(&sq(2, 2, [255, 255, 255]))),
            Some(palette4_png(&sq(0, 0, [0, 0, 0]), [255, 255, 255])),
        ),
        // Three plain classes.
        emoji(
            "1F34E",
            Some(rgba_png(&sq(1, 0, [220, 0, 0]))),
            Some(rgba_png(&sq(2, 1, [220, 0, 0]))),
        ),
        emoji(
            "1F34C",
            Some(rgba_png(&sq(2, 3, [240, 220, 0]))),
            Some(rgba_png(&sq(0, 1, [240, 220, 0]))),
        ),
        emoji(
            "1F352",
            Some(rgba_png(&sq(3, 2, [180, 0, 30]))),
            Some(rgba_png(&sq(1, 1, [180, 0, 30]))),
        ),
    ];
    let line_art = svg(2, 2, 4, 4, "#000000");
    let openmoji = vec![
        (
            "1F600",
            Some(svg(0, 0, 4, 8, "#3050F0")),
            Some(svg(4, 0, 4, 8, "#000000")),
        ),
        (
            "1F44D",
            Some(svg(0, 0, 2, 2, "#FCEA2B")),
            Some(line_art.clone()),
        ),
        (
            "1F44D-1F3FB",
            Some(svg(2, 0, 2, 2, "#FADCBC")),
            Some(line_art.clone()),
        ),
        (
            "1F44D-1F3FC",
            Some(svg(4, 0, 2, 2, "#DEB892")),
            Some(line_art),
        ),
        ("1F1E6-1F1FA", Some(svg(0, 6, 8, 2, "#1E50A0")), None),
        ("1F1ED-1F1F2", Some(svg(0, 6, 8, 2, "#1E50A0")), None),
        ("1F4A9", Some(svg(6, 6, 2, 2, "#A57939")), None),
        (
            "1F436",
            Some(svg(0, 2, 2, 2, "#A57939")),
            Some(svg(0, 4, 2, 2, "#000000")),
        ),
        (
            "1F431",
            Some(svg(2, 4, 2, 2, "#F1B31C")),
            Some(svg(4, 4, 2, 2, "#000000")),
        ),
        ("25AB", Some(svg(6, 0, 2, 2, "#FFFFFF")), None),
        ("1F34E", Some(svg(4, 2, 2, 2, "#D22F27")), None),
        ("1F34C", Some(svg(6, 2, 2, 2, "#F1B31C")), None),
        ("1F352", Some(svg(6, 4, 2, 2, "#B1CC33")), None),
    ];
    write_packages(root, &entries, &openmoji);
}

fn classes_by_key(set: &RenderedSet) -> BTreeMap<String, Vec<usize>> {
    let mut out: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    for (i, item) in set.items.iter().enumerate() {
        out.entry(set.classes[item.label as usize].key.clone())
            .or_default()
            .push(i);
    }
    out
}

fn pixel(set: &RenderedSet, item: usize, x: usize, y: usize) -> Vec<u8> {
    let [c, h, w] = set.shape;
    let at = item * c * h * w + (y * w + x) * c;
    set.pixels[at..at + c].to_vec()
}

fn sources_of(set: &RenderedSet, items: &[usize]) -> Vec<String> {
    items.iter().map(|&i| set.items[i].source.clone()).collect()
}

#[test]
fn emoji_set_follows_every_rule() {
    let dir = tempfile::tempdir().unwrap();
    emoji_sources(dir.path());
    let (set, report) = build_emoji(dir.path()).unwrap();
    let by_key = classes_by_key(&set);

    // Counted by hand from the scenario: 15 classes in, the two flags merged, the rocket dropped.
    let keys: Vec<&str> = by_key.keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        [
            "1f1e6-1f1fa+1f1ed-1f1f2",
            "1f34c",
            "1f34e",
            "1f352",
            "1f431",
            "1f436",
            "1f44d",
            "1f44d-1f3fb",
            "1f44d-1f3fc",
            "1f4a9",
            "1f600",
            "25ab-fe0f",
            "2b1c"
        ]
    );
    let expect = |key: &str, sources: &[&str]| {
        assert_eq!(sources_of(&set, &by_key[key]), sources, "{key}");
    };
    expect(
        "1f600",
        &["google", "twitter", "openmoji", "openmoji-black"],
    );
    expect(
        "1f1e6-1f1fa+1f1ed-1f1f2",
        &["google", "twitter", "openmoji"],
    );
    for key in ["1f44d", "1f44d-1f3fb", "1f44d-1f3fc"] {
        expect(key, &["google", "twitter", "openmoji"]);
    }
    for key in ["1f436", "1f431"] {
        expect(key, &["google", "openmoji", "openmoji-black"]);
    }
    expect("1f4a9", &["twitter", "openmoji"]);
    expect("25ab-fe0f", &["google", "twitter", "openmoji"]);
    expect("2b1c", &["google", "twitter"]);
    for key in ["1f34c", "1f34e", "1f352"] {
        expect(key, &["google", "twitter", "openmoji"]);
    }
    assert_eq!(set.items.len(), 38);
    assert_eq!(
        report,
        Report {
            classes_in: 15,
            drawings_in: 15 * 2 - 1 + 13 + 6,
            blank: vec![("1f4a9".into(), "google".into())],
            merged: vec![vec!["1f1e6-1f1fa".into(), "1f1ed-1f1f2".into()]],
            shared: vec![
                ("1f431".into(), "twitter".into()),
                ("1f436".into(), "twitter".into()),
                ("1f44d".into(), "openmoji-black".into()),
                ("1f44d-1f3fb".into(), "openmoji-black".into()),
                ("1f44d-1f3fc".into(), "openmoji-black".into()),
            ],
            repeats: vec![],
            too_few: vec![("1f680".into(), 1)],
        }
    );
    assert!(
        set.items
            .iter()
            .any(|i| i.origin == "openmoji@17.0.0/color/svg/25AB.svg")
    );

    // Pixels: every colour type decoded to RGBA, composited on grey 128, nothing flipped.
    let item = |key: &str, source: &str| {
        by_key[key]
            .iter()
            .copied()
            .find(|&i| set.items[i].source == source)
            .unwrap()
    };
    let grinning = item("1f600", "google");
    assert_eq!(pixel(&set, grinning, 5, 5), [200, 30, 40]);
    assert_eq!(pixel(&set, grinning, 40, 5), [128, 128, 128]);
    // 8-bit palette with transparency: the square at x = 16..32.
    let twitter = item("1f600", "twitter");
    assert_eq!(pixel(&set, twitter, 20, 5), [10, 200, 30]);
    assert_eq!(pixel(&set, twitter, 5, 5), [128, 128, 128]);
    // 4-bit palette: the square at y = 32..48.
    let thumbs = item("1f44d-1f3fc", "twitter");
    assert_eq!(pixel(&set, thumbs, 40, 40), [220, 180, 140]);
    assert_eq!(pixel(&set, thumbs, 40, 20), [128, 128, 128]);
    // Grey + alpha: grey 250 where the square is.
    let poo = item("1f4a9", "twitter");
    assert_eq!(pixel(&set, poo, 40, 60), [250, 250, 250]);
    assert_eq!(pixel(&set, poo, 10, 10), [128, 128, 128]);
    // SVG: the left half of the view box is colour, the right half background.
    let om = item("1f600", "openmoji");
    assert_eq!(pixel(&set, om, 10, 30), [0x30, 0x50, 0xF0]);
    assert_eq!(pixel(&set, om, 50, 30), [128, 128, 128]);
    let black = item("1f600", "openmoji-black");
    assert_eq!(pixel(&set, black, 10, 30), [128, 128, 128]);
    assert_eq!(pixel(&set, black, 50, 30), [0, 0, 0]);

    // The split: the thumbs family on one side, at least half of the classes for training.
    let held = |key: &str| set.classes.iter().find(|c| c.key == key).unwrap().held_out;
    assert_eq!(held("1f44d"), held("1f44d-1f3fb"));
    assert_eq!(held("1f44d"), held("1f44d-1f3fc"));
    // Groups are taken for training until they hold at least 7 of the 13 classes: 7 exactly,
    // unless the last group taken is the family of three, which can end at 7, 8 or 9.
    let n_train = set.classes.iter().filter(|c| !c.held_out).count();
    assert!(
        n_train == 7 || ((8..=9).contains(&n_train) && !held("1f44d")),
        "{n_train} training classes of 13"
    );
    check_loader_and_determinism(&set, "emoji", |path| DataConfig::Emoji { path });
    assert_eq!(build_emoji(dir.path()).unwrap().0, set);
}

#[test]
fn emoji_errors_name_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let e = build_emoji(dir.path()).unwrap_err();
    assert!(matches!(e, Error::Missing { .. }), "{e}");
    assert!(e.to_string().contains("emoji.json"), "{e}");
    assert!(e.to_string().contains("cargo xtask data emoji"), "{e}");

    // A PNG of the wrong size.
    emoji_sources(dir.path());
    let small = {
        let mut out = Vec::new();
        let mut enc = png::Encoder::new(&mut out, 8, 8);
        enc.set_color(png::ColorType::Rgba);
        enc.write_header()
            .unwrap()
            .write_image_data(&[255; 256])
            .unwrap();
        out
    };
    let bad = dir
        .path()
        .join("emoji-datasource-google/package/img/google/64/1f34c.png");
    std::fs::write(&bad, small).unwrap();
    let e = build_emoji(dir.path()).unwrap_err().to_string();
    assert!(e.contains("1f34c.png") && e.contains("8 x 8"), "{e}");
}

// ---------------------------------------------------------------------------------------------
// Glyphs: three subset fonts.

fn fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn fixture() -> serde_json::Value {
    let text = std::fs::read_to_string(fixture_dir().join("glyphs.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

const FIXTURE_DESIGNS: [Design; 3] = [
    Design {
        name: "sans",
        package: "fixture",
        file: "fonts/sans.otf",
        face: 0,
    },
    Design {
        name: "serif",
        package: "fixture",
        file: "fonts/serif.otf",
        face: 0,
    },
    Design {
        name: "kai",
        package: "fixture",
        file: "fonts/kai.ttf",
        face: 0,
    },
];

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

#[test]
fn glyph_set_from_three_fonts() {
    let (set, report) = build_glyphs(&fixture_dir(), &FIXTURE_DESIGNS, GLYPH_BLOCK).unwrap();
    let fx = fixture();
    let fonts = fx["fonts"].as_array().unwrap();
    // The characters all three fonts have, as the fixture script wrote them.
    let per_font: Vec<BTreeSet<String>> = fonts
        .iter()
        .map(|f| {
            f["chars"]
                .as_array()
                .unwrap()
                .iter()
                .map(|c| c.as_str().unwrap().to_owned())
                .collect()
        })
        .collect();
    let common: BTreeSet<String> = per_font[0]
        .iter()
        .filter(|c| per_font[1].contains(*c) && per_font[2].contains(*c))
        .cloned()
        .collect();
    assert_eq!(common.len(), 23);
    let keys: BTreeSet<String> = set.classes.iter().map(|c| c.key.clone()).collect();
    assert_eq!(keys, common);
    for class in &set.classes {
        let c = char::from_u32(u32::from_str_radix(&class.key, 16).unwrap()).unwrap();
        assert_eq!(class.name, c.to_string());
    }
    assert_eq!(set.shape, [1, GLYPH_SIDE, GLYPH_SIDE]);
    assert_eq!(set.items.len(), 23 * 3);
    assert_eq!(report.classes_in, 23);
    assert_eq!(report.drawings_in, 69);
    assert!(report.blank.is_empty() && report.repeats.is_empty() && report.shared.is_empty());
    // 23 classes, each its own group: training takes 12 (the first count that reaches half).
    assert_eq!(set.classes.iter().filter(|c| !c.held_out).count(), 12);

    // Against the reference drawing of the fixture script (fontTools outlines, filled at 16 x 16
    // samples per pixel): the same glyph, the same place, the same size, the same way up. The
    // sampling is exact to 1/256 of a pixel's area, so pixels on an edge may differ by a few
    // levels, and by more where an edge crosses a pixel at a shallow angle.
    let by_key = classes_by_key(&set);
    let len = GLYPH_SIDE * GLYPH_SIDE;
    let (mut worst_mean, mut worst_max, mut checked) = (0.0f64, 0u8, 0);
    for (f, font) in fonts.iter().enumerate() {
        for (key, hex) in font["reference"].as_object().unwrap() {
            let reference = unhex(hex.as_str().unwrap());
            let i = by_key[key][f];
            assert_eq!(set.items[i].source, FIXTURE_DESIGNS[f].name);
            let ours = &set.pixels[i * len..(i + 1) * len];
            let diffs: Vec<u8> = ours
                .iter()
                .zip(&reference)
                .map(|(&a, &b)| a.abs_diff(b))
                .collect();
            let mean = diffs.iter().map(|&d| d as f64).sum::<f64>() / len as f64;
            let max = *diffs.iter().max().unwrap();
            // Measured: means 0.3-1.6 levels, maxima up to 35 (2026-12-06); a shift of half a
            // pixel or a scale off by 5 % gives means above 8.
            assert!(
                mean < 2.5,
                "{key} in {}: mean difference {mean}",
                font["file"]
            );
            assert!(
                max < 48,
                "{key} in {}: a pixel differs by {max}",
                font["file"]
            );
            worst_mean = worst_mean.max(mean);
            worst_max = worst_max.max(max);
            checked += 1;
        }
    }
    assert_eq!(checked, 24);
    eprintln!(
        "against the reference: largest mean difference {worst_mean:.3}, largest pixel difference {worst_max}"
    );

    check_loader_and_determinism(&set, "glyphs", |path| DataConfig::Glyphs { path });
    // The same bytes when built again.
    assert_eq!(
        build_glyphs(&fixture_dir(), &FIXTURE_DESIGNS, GLYPH_BLOCK)
            .unwrap()
            .0,
        set
    );
}

#[test]
fn glyph_errors_name_the_font() {
    let mut designs = FIXTURE_DESIGNS;
    designs[1].file = "fonts/missing.otf";
    let e = build_glyphs(&fixture_dir(), &designs, GLYPH_BLOCK).unwrap_err();
    assert!(e.to_string().contains("missing.otf"), "{e}");
    designs[1].file = "fonts/README.md";
    let e = build_glyphs(&fixture_dir(), &designs, GLYPH_BLOCK).unwrap_err();
    assert!(matches!(e, Error::Font { .. }), "{e}");
    // No character of the block in common.
    let e = build_glyphs(&fixture_dir(), &FIXTURE_DESIGNS, 0x3000..=0x30FF).unwrap_err();
    assert!(matches!(e, Error::Empty(_)), "{e}");
}

// ---------------------------------------------------------------------------------------------
// Shared: storing, reading back through dml-data, verifying.

fn check_loader_and_determinism(
    set: &RenderedSet,
    kind: &str,
    config: impl Fn(PathBuf) -> DataConfig,
) {
    let out = tempfile::tempdir().unwrap();
    let (a, b) = (out.path().join("a"), out.path().join("b"));
    let ma = store(&a, set, kind, 0, "report\n").unwrap();
    let mb = store(&b, set, kind, 0, "report\n").unwrap();
    assert_eq!(ma, mb);
    for name in [
        RENDERED_IMAGES,
        RENDERED_CLASSES,
        SHA256SUMS,
        "MANIFEST",
        "checksums.tsv",
    ] {
        assert_eq!(
            std::fs::read(a.join(name)).unwrap(),
            std::fs::read(b.join(name)).unwrap(),
            "{name}"
        );
    }
    // SHA256SUMS holds each file's SHA-256 (the hash itself checked on a published vector).
    assert_eq!(
        sha256_hex(b"abc"),
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    );
    let sums = std::fs::read_to_string(a.join(SHA256SUMS)).unwrap();
    for line in sums.lines() {
        let (hash, name) = line.split_once("  ").unwrap();
        assert_eq!(
            hash,
            sha256_hex(&std::fs::read(a.join(name)).unwrap()),
            "{name}"
        );
    }
    assert_eq!(ma.set, sha256_hex(sums.as_bytes()));
    assert_eq!(verify(&a).unwrap(), ma);

    // Read back: the same set; split by the stored sides, classes disjoint, counts.
    assert_eq!(&read_rendered(&a, "").unwrap(), set);
    let split: Split = config(a.clone()).build().unwrap();
    let held: Vec<bool> = set.classes.iter().map(|c| c.held_out).collect();
    let n_test = set.items.iter().filter(|i| held[i.label as usize]).count();
    assert_eq!(split.test.len(), n_test);
    assert_eq!(split.train.len(), set.items.len() - n_test);
    assert_eq!(ma.items, (set.items.len() - n_test, n_test));
    let train: BTreeSet<u32> = split.train.labels().iter().copied().collect();
    let test: BTreeSet<u32> = split.test.labels().iter().copied().collect();
    assert!(train.is_disjoint(&test));
    assert_eq!(train.len() + test.len(), set.classes.len());
    assert!(test.iter().all(|&l| held[l as usize]));
    assert_eq!(ma.classes, (train.len(), test.len()));
    // A batch of the held-out side is the stored bytes scaled to [0, 1].
    let [c, h, w] = set.shape;
    let (batch, labels) = load_batch(split.test.as_ref(), &[0, 1], None, 0).unwrap();
    assert_eq!(batch.dim(), (2, c, h, w));
    let first_test = (0..set.items.len())
        .find(|&i| held[set.items[i].label as usize])
        .unwrap();
    assert_eq!(labels[0], set.items[first_test].label);
    let stored = pixel(set, first_test, 7, 9);
    for (ch, &v) in stored.iter().enumerate() {
        assert!((batch[[0, ch, 9, 7]] - v as f32 / 255.0).abs() < 1e-6);
    }

    // Tampering is caught and named.
    let mut bytes = std::fs::read(a.join(RENDERED_IMAGES)).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    std::fs::write(a.join(RENDERED_IMAGES), bytes).unwrap();
    let e = verify(&a).unwrap_err();
    assert!(matches!(e, Error::Verify { .. }), "{e}");
    assert!(e.to_string().contains(SHA256SUMS), "{e}");
    // The other kind's loader refuses the folder.
    let other = if kind == "emoji" {
        DataConfig::Glyphs { path: b.clone() }
    } else {
        DataConfig::Emoji { path: b.clone() }
    };
    let e = other.build().unwrap_err().to_string();
    assert!(e.contains("channel"), "{e}");
}
