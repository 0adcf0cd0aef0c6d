//! [`DataConfig`]: which data set to use, as it appears in a TOML config.

use std::path::PathBuf;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::Result;
use crate::dataset::{Dataset, class_disjoint_subsets};
use crate::layouts::{cars196, cub200, digits, emoji, glyphs, idx, image_folder, inshop, sop};

/// Where `cargo xtask data mnist` puts MNIST.
const MNIST_DIR: &str = "data/mnist";
/// Where `cargo xtask data fashion-mnist` puts Fashion-MNIST.
const FASHION_MNIST_DIR: &str = "data/fashion-mnist";
/// Where `cargo xtask data emoji` puts the emoji set.
const EMOJI_DIR: &str = "data/emoji";
/// Where `cargo xtask data glyphs` puts the glyph set.
const GLYPHS_DIR: &str = "data/glyphs";

/// A data set and how to split it, tagged by `kind`:
///
/// ```toml
/// [data]
/// kind = "cub200"
/// root = "data/CUB_200_2011"
/// ```
///
/// Every kind except `sop`, `inshop`, `emoji` and `glyphs` is split class-disjointly
/// ([`class_disjoint_split`]: first half of the classes for training); `sop` and `inshop` use
/// their published files, `emoji` and `glyphs` the split stored when they were built, which are
/// class-disjoint too.
///
/// [`class_disjoint_split`]: crate::class_disjoint_split
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum DataConfig {
    /// The embedded UCI digits (1,797 images of 8 × 8): classes 0–4 train, 5–9 test.
    Digits {},
    /// A folder with the four MNIST-format IDX files (plain or `.gz`), train and test joined.
    Idx {
        /// The folder.
        path: PathBuf,
    },
    /// Fashion-MNIST as `cargo xtask data fashion-mnist` stores it.
    FashionMnist {
        /// The folder. Default: `data/fashion-mnist`.
        #[serde(default = "default_fashion")]
        path: PathBuf,
    },
    /// MNIST as `cargo xtask data mnist` stores it.
    Mnist {
        /// The folder. Default: `data/mnist`.
        #[serde(default = "default_mnist")]
        path: PathBuf,
    },
    /// The emoji set as `cargo xtask data emoji` builds it: RGB 64 × 64, one class per emoji
    /// (code point sequence), one image per vendor drawing, split as stored (half of the classes
    /// held out, an emoji and its skin-tone variants on one side).
    Emoji {
        /// The folder. Default: `data/emoji`.
        #[serde(default = "default_emoji")]
        path: PathBuf,
    },
    /// The CJK glyph set as `cargo xtask data glyphs` builds it: grey 32 × 32, one class per
    /// character, one image per font design, split as stored (half of the classes held out).
    Glyphs {
        /// The folder. Default: `data/glyphs`.
        #[serde(default = "default_glyphs")]
        path: PathBuf,
    },
    /// One folder per class.
    ImageFolder {
        /// The folder holding the class folders.
        root: PathBuf,
        /// Leave out the images that cannot be read or decoded (a truncated download, a
        /// corrupt file) instead of stopping, counting them in the log and the report.
        /// Default: false (such a file stops the run with its name).
        #[serde(default)]
        skip_unreadable: bool,
    },
    /// CUB-200-2011 (`CUB_200_2011/`): classes 1–100 train, 101–200 test.
    Cub200 {
        /// The `CUB_200_2011` folder.
        root: PathBuf,
        /// Leave out the images that cannot be read or decoded (a truncated download, a
        /// corrupt file) instead of stopping, counting them in the log and the report.
        /// Default: false (such a file stops the run with its name).
        #[serde(default)]
        skip_unreadable: bool,
    },
    /// Cars196 (with `cars_annos.txt`): classes 1–98 train, 99–196 test.
    Cars196 {
        /// The folder holding `cars_annos.txt` and `car_ims/`.
        root: PathBuf,
        /// Leave out the images that cannot be read or decoded (a truncated download, a
        /// corrupt file) instead of stopping, counting them in the log and the report.
        /// Default: false (such a file stops the run with its name).
        #[serde(default)]
        skip_unreadable: bool,
    },
    /// Stanford Online Products: `Ebay_train.txt` / `Ebay_test.txt`.
    Sop {
        /// The `Stanford_Online_Products` folder.
        root: PathBuf,
        /// Leave out the images that cannot be read or decoded (a truncated download, a
        /// corrupt file) instead of stopping, counting them in the log and the report.
        /// Default: false (such a file stops the run with its name).
        #[serde(default)]
        skip_unreadable: bool,
    },
    /// In-Shop Clothes Retrieval: train; query and gallery (the test set is both together).
    Inshop {
        /// The folder holding `list_eval_partition.txt` and `img/`.
        root: PathBuf,
        /// Leave out the images that cannot be read or decoded (a truncated download, a
        /// corrupt file) instead of stopping, counting them in the log and the report.
        /// Default: false (such a file stops the run with its name).
        #[serde(default)]
        skip_unreadable: bool,
    },
}

fn default_fashion() -> PathBuf {
    FASHION_MNIST_DIR.into()
}

fn default_mnist() -> PathBuf {
    MNIST_DIR.into()
}

fn default_emoji() -> PathBuf {
    EMOJI_DIR.into()
}

fn default_glyphs() -> PathBuf {
    GLYPHS_DIR.into()
}

/// A data set split into its training and held-out classes: what every data set of this crate
/// ([`crate::digits`], [`crate::idx`], [`crate::cub200`], …) and [`DataConfig::build`] return.
#[derive(Clone, Debug)]
pub struct Split {
    /// The training classes.
    pub train: Arc<dyn Dataset>,
    /// The held-out classes, all of them (for In-Shop: the queries followed by the gallery).
    pub test: Arc<dyn Dataset>,
    /// How the held-out classes are evaluated ([`Split::held_out`]): the data sets whose
    /// protocol searches queries in a separate gallery (In-Shop) have the two parts here.
    pub query_gallery: Option<QueryGallery>,
}

/// The two parts of a held-out set whose protocol searches queries in a gallery (In-Shop).
#[derive(Clone, Debug)]
pub struct QueryGallery {
    /// The query images.
    pub query: Arc<dyn Dataset>,
    /// The gallery they are searched in.
    pub gallery: Arc<dyn Dataset>,
}

/// What the held-out classes are evaluated as.
#[derive(Clone, Copy, Debug)]
pub enum HeldOut<'a> {
    /// One set, each item searched among all the others (CUB-200, Cars196, SOP, ...).
    Set(&'a dyn Dataset),
    /// Queries searched in a separate gallery (In-Shop).
    QueryGallery {
        /// The query images.
        query: &'a dyn Dataset,
        /// The gallery.
        gallery: &'a dyn Dataset,
    },
}

impl Split {
    /// A training and a test set, evaluated leave-one-out.
    pub fn new(train: Arc<dyn Dataset>, test: Arc<dyn Dataset>) -> Split {
        Split {
            train,
            test,
            query_gallery: None,
        }
    }

    /// How the held-out classes are evaluated: the queries and the gallery when the data set has
    /// them, else the whole test set.
    pub fn held_out(&self) -> HeldOut<'_> {
        match &self.query_gallery {
            Some(qg) => HeldOut::QueryGallery {
                query: qg.query.as_ref(),
                gallery: qg.gallery.as_ref(),
            },
            None => HeldOut::Set(self.test.as_ref()),
        }
    }

    /// `all` split class-disjointly ([`crate::class_disjoint_split`]: the first half of the
    /// classes train).
    ///
    /// # Errors
    /// As [`class_disjoint_subsets`]: fewer than two classes.
    pub fn disjoint(all: Arc<dyn Dataset>) -> Result<Split> {
        let (train, test) = class_disjoint_subsets(all)?;
        Ok(Split::new(Arc::new(train), Arc::new(test)))
    }
}

impl DataConfig {
    /// Reads the data set's index (not the images) and splits it.
    pub fn build(&self) -> Result<Split> {
        match self {
            DataConfig::Digits {} => digits(),
            DataConfig::Idx { path }
            | DataConfig::FashionMnist { path }
            | DataConfig::Mnist { path } => idx(path),
            DataConfig::Emoji { path } => emoji(path),
            DataConfig::Glyphs { path } => glyphs(path),
            DataConfig::ImageFolder { root, .. } => image_folder(root),
            DataConfig::Cub200 { root, .. } => cub200(root),
            DataConfig::Cars196 { root, .. } => cars196(root),
            DataConfig::Sop { root, .. } => sop(root),
            DataConfig::Inshop { root, .. } => inshop(root),
        }
    }

    /// `skip_unreadable` of the image-file kinds; `false` for the others (their items are in
    /// memory once the index is read).
    pub fn skip_unreadable(&self) -> bool {
        match self {
            DataConfig::ImageFolder {
                skip_unreadable, ..
            }
            | DataConfig::Cub200 {
                skip_unreadable, ..
            }
            | DataConfig::Cars196 {
                skip_unreadable, ..
            }
            | DataConfig::Sop {
                skip_unreadable, ..
            }
            | DataConfig::Inshop {
                skip_unreadable, ..
            } => *skip_unreadable,
            DataConfig::Digits {}
            | DataConfig::Idx { .. }
            | DataConfig::FashionMnist { .. }
            | DataConfig::Mnist { .. }
            | DataConfig::Emoji { .. }
            | DataConfig::Glyphs { .. } => false,
        }
    }
}
