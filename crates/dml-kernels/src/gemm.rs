//! The one matrix product every kernel goes through: `C = alpha · A · Bᵀ`, single-threaded.
//!
//! Parallelism is ours (rayon over output tiles), not the GEMM library's: each tile's product is
//! followed at once by the metric's epilogue while the tile is still in cache.

use ndarray::{ArrayView2, ArrayViewMut2, linalg::general_mat_mul};

/// `c = alpha · a · bᵀ` (any strides; `c` is overwritten).
#[inline]
pub(crate) fn gemm_nt(
    alpha: f32,
    a: ArrayView2<'_, f32>,
    b: ArrayView2<'_, f32>,
    mut c: ArrayViewMut2<'_, f32>,
) {
    general_mat_mul(alpha, &a, &b.t(), 0.0, &mut c);
}
