//! Data sets for deep metric learning: labelled images, class-disjoint splits, augmentation and
//! fast parallel batch loading.
//!
//! Most users reach this crate through the facade crate `dml` (`dml::data`).
//!
//! - [`Dataset`]: items with `u32` class labels; an implementation only decodes pixels, and
//!   [`load_batch`] turns any indices into a (B, C, H, W) `f32` batch, rayon-parallel and
//!   deterministic in its seed. No tensor library is involved: batches are
//!   [`ndarray::Array4`], which the trainer hands to its network.
//! - Data sets, each read into a [`Split`] (training and held-out classes): the embedded UCI
//!   digits ([`digits`], the default, needs no download), MNIST-format IDX folders ([`idx`]:
//!   MNIST, Fashion-MNIST), one folder per class ([`image_folder`]), and the published layouts
//!   of CUB-200-2011 ([`cub200`]), Cars196 ([`cars196`]), Stanford Online Products ([`sop`]) and
//!   In-Shop ([`inshop`]), and the two sets built from registry packages by `cargo xtask data`:
//!   emoji drawn by several vendors ([`emoji`]) and CJK characters in many font designs
//!   ([`glyphs`]). The readers of the file formats underneath (IDX, image decoding,
//!   whole unsplit sets) are in [`formats`].
//! - Splits: [`class_disjoint_split`] (first half of the classes for training, as the papers do),
//!   [`Subset`], [`shuffled_indices`].
//! - [`Transform`]: random resized crop, centre crop after resize, horizontal flip,
//!   normalisation, all resampled in one pass.
//! - [`DataConfig`]: the serde form used in config files, with [`DataConfig::build`].
//!
//! ```
//! use dml_data::{Dataset, digits, load_batch};
//!
//! let split = digits()?;
//! assert_eq!(split.train.len() + split.test.len(), 1797);
//! assert!(split.train.labels().iter().all(|&c| c < 5));
//! assert!(split.test.labels().iter().all(|&c| c >= 5));
//!
//! let (batch, labels) = load_batch(split.train.as_ref(), &[0, 1, 2, 3], None, 42)?;
//! assert_eq!(batch.dim(), (4, 1, 8, 8));
//! assert_eq!(labels.len(), 4);
//! # Ok::<(), dml_data::Error>(())
//! ```

#![warn(missing_docs)]

mod config;
mod dataset;
mod error;
mod files;
pub mod formats;
mod idx;
mod layouts;
mod memory;
mod rendered;
mod transform;

pub use crate::config::{DataConfig, HeldOut, QueryGallery, Split};
pub use crate::dataset::{
    Dataset, Subset, batch_item_shape, class_disjoint_split, class_disjoint_subsets, item_rng,
    load_batch, load_batch_skipping, shuffled_indices,
};
pub use crate::error::{Error, Result};
pub use crate::files::ImageFileDataset;
pub use crate::layouts::{cars196, cub200, digits, emoji, glyphs, idx, image_folder, inshop, sop};
pub use crate::memory::InMemoryDataset;
pub use crate::transform::{Crop, IMAGENET_MEAN, IMAGENET_STD, Normalize, Pixels, Transform};
