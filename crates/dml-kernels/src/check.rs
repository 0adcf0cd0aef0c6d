//! Input validation shared by the ndarray kernels.

use ndarray::{ArrayView1, ArrayView2, Axis};
use rayon::prelude::*;

use crate::{Error, Result};

/// Errors with the first (lowest row, then lowest column) NaN or infinity of `x`.
///
/// Rows are scanned in parallel; the pass costs O(n·d), negligible next to the O(n·m·d) kernels.
pub(crate) fn finite(x: ArrayView2<'_, f32>, matrix: &'static str) -> Result<()> {
    let bad_row = (0..x.nrows())
        .into_par_iter()
        .with_min_len(256)
        .find_first(|&i| !row_is_finite(x.index_axis(Axis(0), i)));
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

/// Whether every value of `row` is finite, in one branch-free pass the compiler vectorises:
/// `v · 0` is 0 for a finite `v` and NaN for an infinity or a NaN, and a NaN anywhere makes the
/// sum NaN (an early-exit search per value was most of the check's time on small batches).
#[inline]
fn row_is_finite(row: ArrayView1<'_, f32>) -> bool {
    const LANES: usize = 8;
    let Some(s) = row.as_slice() else {
        return row.iter().all(|v| v.is_finite());
    };
    let mut acc = [0.0_f32; LANES];
    let chunks = s.chunks_exact(LANES);
    let tail = chunks.remainder().iter().fold(0.0, |t, &v| t + v * 0.0);
    for c in chunks {
        for l in 0..LANES {
            acc[l] += c[l] * 0.0;
        }
    }
    (acc.iter().sum::<f32>() + tail) == 0.0
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
