//! Embedding networks on `tch::nn` for deep metric learning.

mod device;
mod error;

pub use crate::{
    device::DeviceChoice,
    error::{Error, Result},
};
