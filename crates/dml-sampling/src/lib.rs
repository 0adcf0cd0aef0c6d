//! PK batch sampling and mining strategies for deep metric learning, free of libtorch.

mod tuples;

pub use crate::tuples::{Pairs, Triplets, Tuples};
