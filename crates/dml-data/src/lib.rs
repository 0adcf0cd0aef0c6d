//! Data sets for deep metric learning: labelled images, class-disjoint splits, augmentation and
//! fast parallel batch loading.
//!
//! Most users reach this crate through the facade crate `dml` (`dml::data`).
//!
//! - [`Dataset`]: items with `u32` class labels; an implementation only decodes pixels, and
//!   [`load_batch`] turns any indices into a (B, C, H, W) `f32` batch, rayon-parallel and
//!   deterministic in its seed. No tensor library is involved: batches are
//!   [`ndarray::Array4`], which the trainer hands to its network.
//! - Sources: the embedded UCI digits ([`Digits`], the default, needs no download), MNIST-format
//!   IDX files ([`Idx`]), one folder per class ([`image_folder`]), and the published layouts of
//!   CUB-200-2011 ([`cub200`]), Cars196 ([`cars196`]), Stanford Online Products ([`sop`]) and
//!   In-Shop ([`inshop`]).
//! - Splits: [`class_disjoint_split`] (first half of the classes for training, as the papers do),
//!   [`Subset`], [`shuffled_indices`].
//! - [`Transform`]: random resized crop, centre crop after resize, horizontal flip,
//!   normalisation, all resampled in one pass.
//! - [`DataConfig`]: the serde form used in config files, with [`DataConfig::build`].
//!
//! ```
//! use std::sync::Arc;
//! use dml_data::{Dataset, Digits, class_disjoint_subsets, load_batch};
//!
//! let digits = Arc::new(Digits::load()?);
//! assert_eq!(digits.len(), 1797);
//! let (train, test) = class_disjoint_subsets(digits)?;
//! assert!(train.labels().iter().all(|&c| c < 5) && test.labels().iter().all(|&c| c >= 5));
//!
//! let (batch, labels) = load_batch(&train, &[0, 1, 2, 3], None, 42)?;
//! assert_eq!(batch.dim(), (4, 1, 8, 8));
//! assert_eq!(labels.len(), 4);
//! # Ok::<(), dml_data::Error>(())
//! ```

#![warn(missing_docs)]

mod config;
mod dataset;
mod error;
mod files;
mod idx;
mod memory;
mod transform;

pub use crate::config::{DataConfig, FASHION_MNIST_DIR, MNIST_DIR, Split};
pub use crate::dataset::{
    Dataset, Subset, batch_item_shape, class_disjoint_split, class_disjoint_subsets, item_rng,
    load_batch, shuffled_indices,
};
pub use crate::error::{Error, Result};
pub use crate::files::{
    ImageFileDataset, InShop, cars196, cub200, decode_rgb, image_folder, inshop, sop,
};
pub use crate::idx::{IDX_FILES, Idx, IdxArray, parse_idx, read_idx_images, read_idx_labels};
pub use crate::memory::{Digits, InMemoryDataset};
pub use crate::transform::{Crop, IMAGENET_MEAN, IMAGENET_STD, Normalize, Pixels, Transform};
