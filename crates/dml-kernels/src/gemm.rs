//! The one matrix product every kernel goes through: `C = alpha · A · Bᵀ`, single-threaded.
//!
//! Parallelism is ours (rayon over output tiles), not the GEMM library's: each tile's product is
//! followed at once by the metric's epilogue while the tile is still in cache, and no thread pool
//! other than rayon's is involved.
//!
//! The product itself is the `gemm` crate's, chosen by measurement over ndarray's default
//! (`matrixmultiply`): on the AVX-512 machine this was developed on, single-threaded tiles of
//! 64–256 × 1024 × 128 ran at 90–107 GFLOP/s with `gemm` against 82–94 GFLOP/s with
//! `matrixmultiply` (matrixmultiply tops out at AVX2/FMA). Those figures were gemm 0.18's AVX2
//! kernels: its AVX-512 kernels needed a nightly compiler, so on stable they were never used
//! (a profile shows `microkernel::fma`). gemm 0.19 builds them on stable behind its `x86-v4`
//! feature, enabled in the workspace manifest, and picks them at run time when the CPU has
//! AVX-512F (AVX2 otherwise): the symmetric top-1 search of 20,000 × 784 went from 7.5–7.8 s to
//! 4.35–4.4 s (alternating, same inputs, a loaded 2-core machine).

use ndarray::{ArrayView2, ArrayViewMut2};

/// `c = alpha · a · bᵀ` for any strides; `c` is overwritten, never read.
#[inline]
pub(crate) fn gemm_nt(
    alpha: f32,
    a: ArrayView2<'_, f32>,
    b: ArrayView2<'_, f32>,
    mut c: ArrayViewMut2<'_, f32>,
) {
    let (m, k) = a.dim();
    let n = b.nrows();
    debug_assert_eq!(b.ncols(), k);
    debug_assert_eq!(c.dim(), (m, n));
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        c.fill(0.0);
        return;
    }
    let [a_rs, a_cs] = [a.strides()[0], a.strides()[1]];
    let [b_rs, b_cs] = [b.strides()[0], b.strides()[1]];
    let [c_rs, c_cs] = [c.strides()[0], c.strides()[1]];
    // SAFETY: the pointers and element strides come from live ndarray views whose shapes are
    // (m, k), (n, k) and (m, n), so every address gemm forms lies inside the views; `c` is borrowed
    // mutably and cannot alias `a` or `b`. Bᵀ is `b` read with its strides swapped. With
    // `read_dst = false` gemm writes `c = alpha · a · bᵀ` (its `beta` is our `alpha`).
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            c.as_mut_ptr(),
            c_cs,
            c_rs,
            false,
            a.as_ptr(),
            a_cs,
            a_rs,
            b.as_ptr(),
            b_rs,
            b_cs,
            0.0,
            alpha,
            false,
            false,
            false,
            gemm::Parallelism::None,
        );
    }
}
