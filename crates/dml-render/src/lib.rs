//! Builds dml's rendered data sets from registry packages: emoji drawn by several vendors
//! ([`build_emoji`]) and CJK characters in many font designs ([`build_glyphs`]), stored in the
//! format that `dml-data` reads (`kind = "emoji"`, `kind = "glyphs"`;
//! [`dml_data::formats::read_rendered`]) with a manifest of checksums ([`Manifest`]).
//!
//! `cargo xtask data emoji|glyphs` fetches the packages ([`EMOJI_PACKAGES`],
//! [`GLYPH_PACKAGES`]), unpacks them and runs this crate's `dml-render` binary on them; the
//! library is what the binary and the tests call. The stages:
//!
//! - drawing: [`raster`] (PNG of every colour type to RGBA, SVG through resvg, compositing on a
//!   neutral background) and [`glyphs::render_glyph`] (ab_glyph's exact-coverage rasteriser);
//! - curation and split: [`curate()`] (blank, shared and repeated drawings; classes merged
//!   where every source draws them alike; a seeded permutation of class groups, half held out);
//! - storage and checks: [`store`], [`verify`].
//!
//! Every step is deterministic (integer arithmetic where there is a choice, results collected in
//! input order from parallel work), so one set of packages gives the same bytes on every
//! machine, and the manifest's checksums say whether it did.
//!
//! ```
//! use dml_render::{ClassSpec, Drawing, Rules, curate};
//!
//! // Two classes, each drawn by two sources, on 8 x 8 grey images with a black background.
//! let rules = Rules {
//!     shape: [1, 8, 8],
//!     background: 0,
//!     ink_threshold: 32,
//!     min_ink_pixels: 4,
//!     same_max_pixels: 1,
//!     min_items: 2,
//!     split_seed: 0,
//! };
//! let classes: Vec<ClassSpec> = (0..2)
//!     .map(|c| ClassSpec { key: format!("c{c}"), name: format!("class {c}"), group: c })
//!     .collect();
//! let sources = vec!["a".to_string(), "b".to_string()];
//! let drawings = (0..4)
//!     .map(|i| {
//!         let (class, source) = (i / 2, i % 2);
//!         // Class 0 lights the top rows, class 1 the bottom rows; source b a little brighter.
//!         let value = 200 + 40 * source as u8;
//!         let pixels = (0..64).map(|p| if (p / 32) == class { value } else { 0 }).collect();
//!         Drawing { class, source, origin: format!("{i}.png"), pixels }
//!     })
//!     .collect();
//! let (set, report) = curate(&classes, &sources, drawings, &rules)?;
//! assert_eq!(set.classes.len(), 2);
//! assert_eq!(set.items.len(), 4);
//! assert_eq!(set.classes.iter().filter(|c| c.held_out).count(), 1);
//! assert!(report.merged.is_empty() && report.shared.is_empty());
//! # Ok::<(), dml_render::Error>(())
//! ```

#![warn(missing_docs)]

pub mod curate;
pub mod emoji;
mod error;
pub mod glyphs;
pub mod manifest;
pub mod raster;

pub use crate::curate::{ClassSpec, Drawing, Report, Rules, curate};
pub use crate::emoji::{EMOJI_PACKAGES, build_emoji};
pub use crate::error::{Error, Result};
pub use crate::glyphs::{Design, GLYPH_DESIGNS, GLYPH_PACKAGES, build_glyphs};
pub use crate::manifest::{Manifest, store, verify};

/// A package registry this project can reach.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Registry {
    /// npm: fetched with `npm pack NAME@VERSION`.
    Npm,
    /// Debian: fetched with `apt-get download NAME=VERSION`.
    Deb,
}

/// A pinned package a set is built from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Package {
    /// Where it comes from.
    pub registry: Registry,
    /// Its name.
    pub name: &'static str,
    /// Its exact version.
    pub version: &'static str,
}

impl std::fmt::Display for Package {
    /// `npm NAME VERSION` or `deb NAME VERSION`, the line `dml-render sources` prints.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let registry = match self.registry {
            Registry::Npm => "npm",
            Registry::Deb => "deb",
        };
        write!(f, "{registry} {} {}", self.name, self.version)
    }
}
