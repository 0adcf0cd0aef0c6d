//! Distance metrics, L2 normalisation, pairwise distance matrices and exact k-nearest-neighbour
//! search: the lowest layer of dml, free of libtorch.

mod error;
mod metric;

pub use crate::{
    error::{Error, Result},
    metric::Metric,
};
