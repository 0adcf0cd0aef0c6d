//! Input validation shared by the ndarray kernels.

use ndarray::{ArrayView2, Axis};
use rayon::prelude::*;

use crate::{Error, Result};

/// Errors with the first (lowest row, then lowest column) NaN or infinity of `x`.
///
/// Rows are scanned in parallel; the pass costs O(n·d), negligible next to the O(n·m·d) kernels.
pub(crate) fn finite(x: ArrayView2<'_, f32>, matrix: &'static str) -> Result<()> {
    let bad_row = (0..x.nrows())
        .into_par_iter()
        .with_min_len(256)
        .find_first(|&i| x.index_axis(Axis(0), i).iter().any(|v| !v.is_finite()));
    match bad_row {
        None => Ok(()),
        Some(row) => {
            let col = x
                .index_axis(Axis(0), row)
                .iter()
                .position(|v| !v.is_finite())
                .unwrap_or(0);
            Err(Error::NonFinite { matrix, row, col })
        }
    }
}

/// Errors unless `a` and `b` have the same number of columns.
pub(crate) fn same_dim(
    a: ArrayView2<'_, f32>,
    left: &'static str,
    b: ArrayView2<'_, f32>,
    right: &'static str,
) -> Result<()> {
    if a.ncols() == b.ncols() {
        Ok(())
    } else {
        Err(Error::DimensionMismatch {
            left,
            left_dim: a.ncols(),
            right,
            right_dim: b.ncols(),
        })
    }
}
