//! Distance metrics, L2 normalisation, pairwise distance matrices and exact k-nearest-neighbour
//! search: the lowest layer of dml, free of libtorch.
//!
//! One crate owns what "distance" means in dml:
//!
//! - [`Metric`]: Euclidean, squared Euclidean, cosine similarity, dot product, with
//!   [`Metric::is_similarity`] telling whether larger means closer.
//! - [`l2_normalize`] / [`l2_normalize_inplace`]: unit rows, a zero row stays zero ([`NORM_EPS`]).
//! - [`pairwise`], [`pairwise_into`], [`self_pairwise`]: n×m matrices in GEMM form
//!   (`‖a‖² + ‖b‖² − 2·a·bᵀ`, clamped at zero), tiled and rayon-parallel; [`pairwise_bands`]
//!   streams the same values band by band; [`paired`] gives the values of a list of pairs only, and [`NormedRows`] one
//!   pair at a time.
//! - [`knn`], [`knn_self`], [`knn_self_rows`] → [`Neighbours`]: exact k-NN, blockwise with a
//!   fused top-k (a bucket selection for k in the thousands), never materialising the
//!   query × reference matrix; [`knn_self_blocks`] hands a whole set's lists out block by
//!   block, and [`knn_self_fold`] folds each row's neighbours into per-chunk states (the
//!   evaluation's scores) as soon as they are found.
//! - `tensor` (feature `tch`): the same definitions on `tch::Tensor`, differentiable, with a finite
//!   gradient at zero distance.
//!
//! Inputs are `ndarray` views of `f32` rows (one embedding per row); every function validates its
//! inputs and returns a typed [`Error`] rather than panicking.
//!
//! ```
//! use dml_kernels::{Metric, knn_self, self_pairwise};
//! use ndarray::array;
//!
//! let x = array![[0.0_f32, 0.0], [3.0, 4.0], [0.0, 1.0]];
//! let d = self_pairwise(Metric::Euclidean, x.view())?;
//! assert_eq!(d[[0, 1]], 5.0);
//! assert_eq!(d[[1, 1]], 0.0);
//!
//! let nn = knn_self(Metric::Euclidean, x.view(), 1)?;
//! assert_eq!(nn.indices.column(0).to_vec(), vec![2, 2, 0]);
//! # Ok::<(), dml_kernels::Error>(())
//! ```
//!
//! Most users reach this crate through the facade crate `dml` (as `dml::kernels`).

#![warn(missing_docs)]

mod alloc;
mod check;
mod error;
mod gemm;
mod knn;
mod metric;
mod normalize;
mod pairwise;
#[cfg(feature = "tch")]
pub mod tensor;
mod tile;

pub use crate::{
    error::{Error, Result},
    knn::{
        Neighbours, knn, knn_self, knn_self_blocks, knn_self_blocks_memory, knn_self_fold,
        knn_self_fold_memory, knn_self_rows,
    },
    metric::Metric,
    normalize::{NORM_EPS, l2_normalize, l2_normalize_inplace},
    pairwise::{NormedRows, paired, pairwise, pairwise_bands, pairwise_into, self_pairwise},
};
