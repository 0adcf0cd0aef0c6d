//! The glyph set: one class per CJK character, one item per font design.
//!
//! The characters are those of the CJK Unified Ideographs block (U+4E00–U+9FFF) that every
//! design maps to a glyph with an outline: about 3,800 with the designs below, the characters
//! common to the Chinese (GB 2312, Big5) and Japanese (JIS) repertoires. Each glyph is drawn by
//! ab_glyph's exact-coverage rasteriser as white on black, 32 × 32: the em square scaled to 28
//! pixels (shrunk where a glyph's ink would leave less than a pixel of margin), the glyph's ink
//! box centred. No jitter is baked in: augmentation belongs to training (`[transform.train]`).
//!
//! 32 pixels because the set is ~110,000 images: at 32 × 32 it is 110 MB in memory and a
//! ConvNet embeds it a few times per minute on two cores, while the strokes of the characters
//! (up to ~20 in this repertoire) stay apart; 24 pixels merges them, 64 pixels costs four times
//! the memory and compute for detail the task does not need.

use std::path::Path;

use ab_glyph::{Font, FontRef, Glyph, OutlinedGlyph, PxScale, PxScaleFactor, point};
use rayon::prelude::*;

use crate::curate::{ClassSpec, Drawing, Report, Rules, curate};
use crate::{Error, Package, Registry, Result};
use dml_data::formats::RenderedSet;

/// Side of the stored images.
pub const GLYPH_SIDE: usize = 32;
/// The em square's side in pixels.
pub const GLYPH_EM: f32 = 28.0;
/// The seed of the glyph split's permutation of classes.
pub const GLYPH_SPLIT_SEED: u64 = 0;
/// The block the characters are taken from: CJK Unified Ideographs.
pub const GLYPH_BLOCK: std::ops::RangeInclusive<u32> = 0x4E00..=0x9FFF;

/// One font design: a face of a font file in a package.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Design {
    /// The source name of its items.
    pub name: &'static str,
    /// The Debian package that ships the font.
    pub package: &'static str,
    /// The font file, relative to the root the packages are unpacked into.
    pub file: &'static str,
    /// The face inside the file (a `.ttc` holds several).
    pub face: u32,
}

/// The Debian packages (bookworm) the glyph set is built from, pinned.
pub const GLYPH_PACKAGES: [Package; 21] = [
    Package {
        registry: Registry::Deb,
        name: "fonts-noto-cjk",
        version: "1:20220127+repack1-1",
    },
    Package {
        registry: Registry::Deb,
        name: "fonts-noto-cjk-extra",
        version: "1:20220127+repack1-1",
    },
    Package {
        registry: Registry::Deb,
        name: "fonts-arphic-ukai",
        version: "0.2.20080216.2-5",
    },
    Package {
        registry: Registry::Deb,
        name: "fonts-arphic-uming",
        version: "0.2.20080216.2-11",
    },
    Package {
        registry: Registry::Deb,
        name: "fonts-arphic-gbsn00lp",
        version: "2.11-16",
    },
    Package {
        registry: Registry::Deb,
        name: "fonts-arphic-gkai00mp",
        version: "2.11-16",
    },
    Package {
        registry: Registry::Deb,
        name: "fonts-cns11643-kai",
        version: "103.1+20181001-1",
    },
    Package {
        registry: Registry::Deb,
        name: "fonts-cns11643-sung",
        version: "103.1+20181001-1",
    },
    Package {
        registry: Registry::Deb,
        name: "fonts-cwtex-fs",
        version: "1.0-4",
    },
    Package {
        registry: Registry::Deb,
        name: "fonts-cwtex-heib",
        version: "1.0-4",
    },
    Package {
        registry: Registry::Deb,
        name: "fonts-cwtex-kai",
        version: "1.0-4",
    },
    Package {
        registry: Registry::Deb,
        name: "fonts-cwtex-ming",
        version: "1.0-4",
    },
    Package {
        registry: Registry::Deb,
        name: "fonts-cwtex-yen",
        version: "1.0-4",
    },
    Package {
        registry: Registry::Deb,
        name: "fonts-ipafont-gothic",
        version: "00303-23",
    },
    Package {
        registry: Registry::Deb,
        name: "fonts-ipafont-mincho",
        version: "00303-23",
    },
    Package {
        registry: Registry::Deb,
        name: "fonts-hanazono",
        version: "20170904-2.1",
    },
    Package {
        registry: Registry::Deb,
        name: "fonts-wqy-microhei",
        version: "0.2.0-beta-3.1",
    },
    Package {
        registry: Registry::Deb,
        name: "fonts-wqy-zenhei",
        version: "0.9.45-8",
    },
    Package {
        registry: Registry::Deb,
        name: "fonts-lxgw-wenkai",
        version: "1.250+repack-1",
    },
    Package {
        registry: Registry::Deb,
        name: "fonts-kouzan-mouhitsu",
        version: "20170411-3",
    },
    Package {
        registry: Registry::Deb,
        name: "fonts-seto",
        version: "6.20-8",
    },
];

/// The designs of the glyph set, in item order within a class: 25 faces of 21 packages. Face 0
/// of Noto's `.ttc` files is the Japanese one, of the Arphic ones the simplified-Chinese one.
///
/// Left out because they draw these characters exactly as a design in the list does (checked
/// by rendering: the same image for all but at most four of the ~3,800 characters): AR PL KaitiM
/// Big5 (`fonts-arphic-bkai00mp`, the source of AR PL UKai), AR PL Mingti2L Big5
/// (`fonts-arphic-bsmi00lp`, of AR PL UMing), IPAex Gothic and IPAex Mincho
/// (`fonts-ipaexfont-*`, the IPA fonts' outlines). Also left out: Droid Sans Fallback, whose
/// outlines WenQuanYi Micro Hei is built on; the Noto faces of other regions (SC, TC, KR, HK),
/// which share most outlines with the Japanese face; the brush and calligraphy fonts whose files map characters to empty
/// glyphs (Aoyagi, Kouzan gyōsho and sōsho).
pub const GLYPH_DESIGNS: [Design; 25] = [
    Design {
        name: "noto-sans-thin",
        package: "fonts-noto-cjk-extra",
        file: "usr/share/fonts/opentype/noto/NotoSansCJK-Thin.ttc",
        face: 0,
    },
    Design {
        name: "noto-sans-regular",
        package: "fonts-noto-cjk",
        file: "usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc",
        face: 0,
    },
    Design {
        name: "noto-sans-black",
        package: "fonts-noto-cjk-extra",
        file: "usr/share/fonts/opentype/noto/NotoSansCJK-Black.ttc",
        face: 0,
    },
    Design {
        name: "noto-serif-extralight",
        package: "fonts-noto-cjk-extra",
        file: "usr/share/fonts/opentype/noto/NotoSerifCJK-ExtraLight.ttc",
        face: 0,
    },
    Design {
        name: "noto-serif-regular",
        package: "fonts-noto-cjk",
        file: "usr/share/fonts/opentype/noto/NotoSerifCJK-Regular.ttc",
        face: 0,
    },
    Design {
        name: "noto-serif-black",
        package: "fonts-noto-cjk-extra",
        file: "usr/share/fonts/opentype/noto/NotoSerifCJK-Black.ttc",
        face: 0,
    },
    Design {
        name: "arphic-ukai",
        package: "fonts-arphic-ukai",
        file: "usr/share/fonts/truetype/arphic/ukai.ttc",
        face: 0,
    },
    Design {
        name: "arphic-uming",
        package: "fonts-arphic-uming",
        file: "usr/share/fonts/truetype/arphic/uming.ttc",
        face: 0,
    },
    Design {
        name: "arphic-sungti-gb",
        package: "fonts-arphic-gbsn00lp",
        file: "usr/share/fonts/truetype/arphic-gbsn00lp/gbsn00lp.ttf",
        face: 0,
    },
    Design {
        name: "arphic-kaiti-gb",
        package: "fonts-arphic-gkai00mp",
        file: "usr/share/fonts/truetype/arphic-gkai00mp/gkai00mp.ttf",
        face: 0,
    },
    Design {
        name: "cns11643-kai",
        package: "fonts-cns11643-kai",
        file: "usr/share/fonts/truetype/cns11643/TW-Kai-98_1.ttf",
        face: 0,
    },
    Design {
        name: "cns11643-sung",
        package: "fonts-cns11643-sung",
        file: "usr/share/fonts/truetype/cns11643/TW-Sung-98_1.ttf",
        face: 0,
    },
    Design {
        name: "cwtex-fangsong",
        package: "fonts-cwtex-fs",
        file: "usr/share/fonts/truetype/cwtex/cwfs.ttf",
        face: 0,
    },
    Design {
        name: "cwtex-hei-bold",
        package: "fonts-cwtex-heib",
        file: "usr/share/fonts/truetype/cwtex/cwheib.ttf",
        face: 0,
    },
    Design {
        name: "cwtex-kai",
        package: "fonts-cwtex-kai",
        file: "usr/share/fonts/truetype/cwtex/cwkai.ttf",
        face: 0,
    },
    Design {
        name: "cwtex-ming",
        package: "fonts-cwtex-ming",
        file: "usr/share/fonts/truetype/cwtex/cwming.ttf",
        face: 0,
    },
    Design {
        name: "cwtex-yuan",
        package: "fonts-cwtex-yen",
        file: "usr/share/fonts/truetype/cwtex/cwyen.ttf",
        face: 0,
    },
    Design {
        name: "ipa-gothic",
        package: "fonts-ipafont-gothic",
        file: "usr/share/fonts/opentype/ipafont-gothic/ipag.ttf",
        face: 0,
    },
    Design {
        name: "ipa-mincho",
        package: "fonts-ipafont-mincho",
        file: "usr/share/fonts/opentype/ipafont-mincho/ipam.ttf",
        face: 0,
    },
    Design {
        name: "hanazono-mincho",
        package: "fonts-hanazono",
        file: "usr/share/fonts/truetype/hanazono/HanaMinA.ttf",
        face: 0,
    },
    Design {
        name: "wqy-microhei",
        package: "fonts-wqy-microhei",
        file: "usr/share/fonts/truetype/wqy/wqy-microhei.ttc",
        face: 0,
    },
    Design {
        name: "wqy-zenhei",
        package: "fonts-wqy-zenhei",
        file: "usr/share/fonts/truetype/wqy/wqy-zenhei.ttc",
        face: 0,
    },
    Design {
        name: "lxgw-wenkai",
        package: "fonts-lxgw-wenkai",
        file: "usr/share/fonts/truetype/lxgw-wenkai/LXGWWenKai-Regular.ttf",
        face: 0,
    },
    Design {
        name: "kouzan-brush",
        package: "fonts-kouzan-mouhitsu",
        file: "usr/share/fonts/truetype/kouzan-mouhitsu/kouzan-mouhitsu.ttf",
        face: 0,
    },
    Design {
        name: "seto",
        package: "fonts-seto",
        file: "usr/share/fonts/truetype/seto/setofont.ttf",
        face: 0,
    },
];

/// The glyph curation rules: a glyph needs 8 pixels of value 32 or more (placeholder glyphs of
/// fonts that map a character without drawing it are empty); two glyphs are the same when at
/// most 2 of their 1,024 pixels differ by 32 or more (fonts that share outlines, such as IPA
/// and IPAex for many characters).
pub fn glyph_rules() -> Rules {
    Rules {
        shape: [1, GLYPH_SIDE, GLYPH_SIDE],
        background: 0,
        ink_threshold: 32,
        min_ink_pixels: 8,
        same_max_pixels: 2,
        min_items: 2,
        split_seed: GLYPH_SPLIT_SEED,
    }
}

/// Draws character `c` of `font` as described in the [module docs](self), or `None` when the
/// font does not map it or has no outline for it.
pub fn render_glyph(font: &FontRef<'_>, c: char) -> Option<Vec<u8>> {
    let id = font.glyph_id(c);
    if id.0 == 0 {
        return None;
    }
    let outline = font.outline(id)?;
    let units = font.units_per_em()?;
    let side = GLYPH_SIDE as f32;
    let b = outline.bounds;
    let extent = (b.max.x - b.min.x).max(b.max.y - b.min.y);
    if extent <= 0.0 {
        return None;
    }
    let mut s = GLYPH_EM / units;
    if extent * s > side - 2.0 {
        s = (side - 2.0) / extent;
    }
    // Font units have y up, pixels y down: the ink box's centre goes to the canvas centre.
    let position = point(
        side / 2.0 - (b.min.x + b.max.x) / 2.0 * s,
        side / 2.0 + (b.min.y + b.max.y) / 2.0 * s,
    );
    let glyph = Glyph {
        id,
        scale: PxScale::from(GLYPH_EM),
        position,
    };
    let outlined = OutlinedGlyph::new(
        glyph,
        outline,
        PxScaleFactor {
            horizontal: s,
            vertical: s,
        },
    );
    let bounds = outlined.px_bounds();
    let mut img = vec![0u8; GLYPH_SIDE * GLYPH_SIDE];
    outlined.draw(|x, y, coverage| {
        let px = bounds.min.x as i64 + x as i64;
        let py = bounds.min.y as i64 + y as i64;
        if (0..GLYPH_SIDE as i64).contains(&px) && (0..GLYPH_SIDE as i64).contains(&py) {
            img[py as usize * GLYPH_SIDE + px as usize] =
                (coverage.clamp(0.0, 1.0) * 255.0).round() as u8;
        }
    });
    Some(img)
}

fn file_name(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

fn load_font<'a>(bytes: &'a [u8], path: &Path, face: u32) -> Result<FontRef<'a>> {
    FontRef::try_from_slice_and_index(bytes, face).map_err(|_| Error::Font {
        path: path.to_path_buf(),
        face,
    })
}

/// Builds the glyph set from `designs` whose files are under `root` (the Debian packages
/// unpacked there with `dpkg-deb -x`): the characters of `block` every design maps, each drawn
/// by every design, curated ([`crate::curate`](mod@crate::curate)) and split.
///
/// # Errors
/// [`Error::Missing`] for a font file that is not there, [`Error::Font`] for one that is not a
/// font, [`Error::Empty`] when no character is mapped by every design.
pub fn build_glyphs(
    root: &Path,
    designs: &[Design],
    block: std::ops::RangeInclusive<u32>,
) -> Result<(RenderedSet, Report)> {
    let hint = "unpack the font packages with `cargo xtask data glyphs`";
    let mut files = Vec::with_capacity(designs.len());
    for d in designs {
        let path = root.join(d.file);
        let bytes = crate::error::read(&path, &format!("{hint} (the file is in {})", d.package))?;
        load_font(&bytes, &path, d.face)?;
        files.push((path, bytes));
    }
    // The characters every design maps, in code point order.
    let mut chars: Vec<char> = block.filter_map(char::from_u32).collect();
    for (d, (path, bytes)) in designs.iter().zip(&files) {
        let font = load_font(bytes, path, d.face)?;
        chars.retain(|&c| font.glyph_id(c).0 != 0);
    }
    if chars.is_empty() {
        return Err(Error::Empty(format!(
            "no character of the block is mapped by all {} designs",
            designs.len()
        )));
    }
    let classes: Vec<ClassSpec> = chars
        .iter()
        .enumerate()
        .map(|(i, &c)| ClassSpec {
            key: format!("{:04x}", c as u32),
            name: c.to_string(),
            group: i,
        })
        .collect();
    let mut drawings = Vec::with_capacity(chars.len() * designs.len());
    for (source, (d, (path, bytes))) in designs.iter().zip(&files).enumerate() {
        let font = load_font(bytes, path, d.face)?;
        let drawn: Vec<Option<Vec<u8>>> =
            chars.par_iter().map(|&c| render_glyph(&font, c)).collect();
        for (class, pixels) in drawn.into_iter().enumerate() {
            // A mapped glyph without an outline is left out like a blank one.
            if let Some(pixels) = pixels {
                drawings.push(Drawing {
                    class,
                    source,
                    origin: format!(
                        "{}:{}#{}:{}",
                        d.package,
                        file_name(d.file),
                        d.face,
                        classes[class].key
                    ),
                    pixels,
                });
            }
        }
    }
    let sources: Vec<String> = designs.iter().map(|d| d.name.to_owned()).collect();
    curate(&classes, &sources, drawings, &glyph_rules())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_design_comes_from_a_pinned_package() {
        let mut names = std::collections::BTreeSet::new();
        for d in &GLYPH_DESIGNS {
            assert!(names.insert(d.name), "{} twice", d.name);
            assert!(
                GLYPH_PACKAGES.iter().any(|p| p.name == d.package),
                "{} is not pinned",
                d.package
            );
            assert!(d.file.starts_with("usr/share/fonts/"), "{}", d.file);
        }
        for p in &GLYPH_PACKAGES {
            assert!(
                GLYPH_DESIGNS.iter().any(|d| d.package == p.name),
                "{} is fetched for nothing",
                p.name
            );
            assert_eq!(p.registry, Registry::Deb);
        }
    }
}
