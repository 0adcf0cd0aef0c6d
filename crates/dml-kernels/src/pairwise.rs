//! Pairwise distance and similarity matrices in GEMM form.

use ndarray::{Array1, Array2, ArrayView2, ArrayViewMut2, Axis, s};
use rayon::prelude::*;

use crate::{
    Error, Metric, Result, alloc, check,
    gemm::gemm_nt,
    normalize::{inv_norm, squared_norm},
};

/// Fewest rows of a band of output rows (see [`tile_shape`]).
const TILE_ROWS_MIN: usize = 64;
/// Most rows of a band of output rows.
const TILE_ROWS_MAX: usize = 256;
/// Columns of an output tile.
const TILE_COLS: usize = 512;

/// Per-row factors a metric needs besides the dot products.
pub(crate) fn row_factors(metric: Metric, x: ArrayView2<'_, f32>) -> Array1<f32> {
    let f = |i: usize| {
        let row = x.index_axis(Axis(0), i);
        match metric {
            Metric::Euclidean | Metric::SquaredEuclidean => squared_norm(row),
            Metric::Cosine => inv_norm(row),
            Metric::Dot => 0.0,
        }
    };
    if metric == Metric::Dot {
        return Array1::zeros(x.nrows());
    }
    (0..x.nrows())
        .into_par_iter()
        .with_min_len(1024)
        .map(f)
        .collect::<Vec<_>>()
        .into()
}

/// The scale the GEMM applies so that the epilogue needs no multiplication by 2.
///
/// For distances the tile holds `−2·a·b`; for similarities it holds `sign·a·b`.
#[inline]
pub(crate) fn gemm_alpha(metric: Metric, sign: f32) -> f32 {
    match metric {
        Metric::Euclidean | Metric::SquaredEuclidean => -2.0,
        Metric::Cosine | Metric::Dot => sign,
    }
}

/// Turns a GEMM tile entry into the metric's value (or, for `SquaredEuclidean` and `Euclidean`
/// before the square root, the squared distance).
///
/// `t` is `gemm_alpha(metric, ·) · a·b`; `fa`, `fb` are the rows' [`row_factors`]. This single
/// function is used by both [`pairwise`] and [`crate::knn`], so their values agree bit for bit.
#[inline(always)]
pub(crate) fn finish(metric: Metric, t: f32, fa: f32, fb: f32) -> f32 {
    match metric {
        // Clamped at zero: cancellation in ‖a‖² + ‖b‖² − 2a·b can go slightly negative.
        Metric::Euclidean | Metric::SquaredEuclidean => ((fa + fb) + t).max(0.0),
        // `fa * fb` first: it commutes exactly, so (i, j) and (j, i) round alike.
        Metric::Cosine => (t * (fa * fb)).clamp(-1.0, 1.0),
        Metric::Dot => t,
    }
}

/// The pairwise matrix `out[i, j] = metric(a[i], b[j])` (n×m).
///
/// Computed in GEMM form (`‖a‖² + ‖b‖² − 2·a·bᵀ`, clamped at zero, for the Euclidean metrics;
/// `a·bᵀ` scaled by inverse norms for cosine), tile by tile in parallel, each tile finished while
/// it is in cache. Cosine uses the same norm floor as [`crate::l2_normalize`], so a zero row has
/// similarity 0 to everything.
///
/// # Errors
/// [`Error::DimensionMismatch`] if `a` and `b` have different numbers of columns,
/// [`Error::NonFinite`] if either holds a NaN or an infinity.
///
/// ```
/// use dml_kernels::{Metric, pairwise};
/// use ndarray::array;
///
/// let d = pairwise(Metric::Euclidean, array![[0.0_f32, 0.0]].view(), array![[3.0, 4.0]].view())?;
/// assert_eq!(d, array![[5.0_f32]]);
/// # Ok::<(), dml_kernels::Error>(())
/// ```
pub fn pairwise(
    metric: Metric,
    a: ArrayView2<'_, f32>,
    b: ArrayView2<'_, f32>,
) -> Result<Array2<f32>> {
    let mut out = alloc::zeros(a.nrows(), b.nrows());
    pairwise_into(metric, a, b, out.view_mut())?;
    Ok(out)
}

/// [`pairwise`] into a caller-provided n×m buffer (any strides), allocating nothing of size n×m.
///
/// # Errors
/// As [`pairwise`], plus [`Error::OutputShape`] if `out` is not `a.nrows() × b.nrows()`.
pub fn pairwise_into(
    metric: Metric,
    a: ArrayView2<'_, f32>,
    b: ArrayView2<'_, f32>,
    out: ArrayViewMut2<'_, f32>,
) -> Result<()> {
    check::same_dim(a, "a", b, "b")?;
    let expected = (a.nrows(), b.nrows());
    if out.dim() != expected {
        return Err(Error::OutputShape {
            expected,
            got: out.dim(),
        });
    }
    check::finite(a, "a")?;
    check::finite(b, "b")?;
    let fa = row_factors(metric, a);
    let fb = row_factors(metric, b);
    fill(metric, a, b, &fa, &fb, out, false);
    Ok(())
}

/// [`pairwise`] streamed in bands of rows: `f(first_row, band)` is called for each band of
/// `band_rows` consecutive rows of the `a.nrows() × b.nrows()` matrix (the last band may be
/// shorter), in parallel, and the results come back in band order.
///
/// The values are those of [`pairwise`] (same tiles, same epilogue), but at most one band per
/// thread is alive at a time: what a whole-ranking evaluation needs to see every distance of a
/// large set with memory O(threads · band_rows · m). The inputs are validated once.
///
/// # Errors
/// As [`pairwise`], plus [`Error::ZeroBand`] for `band_rows = 0`.
///
/// ```
/// use dml_kernels::{Metric, pairwise, pairwise_bands};
/// use ndarray::array;
///
/// let x = array![[0.0_f32], [1.0], [3.0]];
/// let sums = pairwise_bands(Metric::Euclidean, x.view(), x.view(), 2, |r0, band| {
///     (r0, band.sum())
/// })?;
/// assert_eq!(sums, vec![(0, 4.0 + 3.0), (2, 5.0)]);
/// assert_eq!(pairwise(Metric::Euclidean, x.view(), x.view())?.sum(), 4.0 + 3.0 + 5.0);
/// # Ok::<(), dml_kernels::Error>(())
/// ```
pub fn pairwise_bands<T, F>(
    metric: Metric,
    a: ArrayView2<'_, f32>,
    b: ArrayView2<'_, f32>,
    band_rows: usize,
    f: F,
) -> Result<Vec<T>>
where
    T: Send,
    F: Fn(usize, ArrayView2<'_, f32>) -> T + Sync,
{
    check::same_dim(a, "a", b, "b")?;
    if band_rows == 0 {
        return Err(Error::ZeroBand);
    }
    check::finite(a, "a")?;
    check::finite(b, "b")?;
    let fa = row_factors(metric, a);
    let fb = row_factors(metric, b);
    let m = b.nrows();
    let n_bands = a.nrows().div_ceil(band_rows);
    Ok((0..n_bands)
        .into_par_iter()
        .map_init(Vec::<f32>::new, |buf, band| {
            let r0 = band * band_rows;
            let r1 = (r0 + band_rows).min(a.nrows());
            buf.resize((r1 - r0) * m, 0.0);
            let mut out = ArrayViewMut2::from_shape((r1 - r0, m), &mut buf[..])
                .expect("the buffer holds rows × m values");
            let fa_band = fa.slice(s![r0..r1]).to_owned();
            fill(
                metric,
                a.slice(s![r0..r1, ..]),
                b,
                &fa_band,
                &fb,
                out.view_mut(),
                false,
            );
            f(r0, out.view())
        })
        .collect())
}

/// The pairwise matrix of `x` with itself (n×n).
///
/// For the distances the diagonal is exactly zero and the matrix is exactly symmetric, whatever
/// the rounding of the GEMM form would give; for the similarities it is exactly symmetric.
///
/// # Errors
/// [`Error::NonFinite`] if `x` holds a NaN or an infinity.
pub fn self_pairwise(metric: Metric, x: ArrayView2<'_, f32>) -> Result<Array2<f32>> {
    check::finite(x, "x")?;
    let f = row_factors(metric, x);
    let n = x.nrows();
    let mut out = alloc::zeros(n, n);
    // Each band of rows is computed from its own diagonal rightwards, so about half the flops
    // (also when the whole matrix is a single tile wide); the lower triangle is then a copy,
    // which makes the result exactly symmetric.
    fill(metric, x, x, &f, &f, out.view_mut(), true);
    mirror_upper(&mut out);
    if !metric.is_similarity() {
        out.diag_mut().fill(0.0);
    }
    Ok(out)
}

/// Copies the strict upper triangle of a square matrix onto the lower one, in parallel over
/// bands of destination rows, in square blocks so that both sides stay in cache.
fn mirror_upper(out: &mut Array2<f32>) {
    const B: usize = 64;
    let n = out.nrows();
    debug_assert!(out.is_standard_layout());
    let base = SyncPtr(out.as_mut_ptr());
    (0..n.div_ceil(B)).into_par_iter().for_each(|band| {
        let p = base;
        let j0 = band * B;
        let j1 = (j0 + B).min(n);
        for i0 in (0..j1).step_by(B) {
            for j in j0..j1 {
                for i in i0..(i0 + B).min(j) {
                    // SAFETY: `out` is a standard-layout n×n array, so `r * n + c` with r, c < n
                    // is in bounds. This task writes only entries (j, i) with i < j and j in its
                    // own band, which no other task writes; it reads only entries (i, j) with
                    // i < j, which no task writes. So no location is written twice or read
                    // while written.
                    unsafe { *p.0.add(j * n + i) = *p.0.add(i * n + j) };
                }
            }
        }
    });
}

/// A raw pointer that may cross threads; see the SAFETY note in [`mirror_upper`].
#[derive(Clone, Copy)]
struct SyncPtr(*mut f32);
// SAFETY: used only by `mirror_upper`, whose tasks access disjoint locations.
unsafe impl Send for SyncPtr {}
// SAFETY: as above.
unsafe impl Sync for SyncPtr {}

/// Fills `out` tile by tile: GEMM, then the metric's epilogue while the tile is hot.
fn fill(
    metric: Metric,
    a: ArrayView2<'_, f32>,
    b: ArrayView2<'_, f32>,
    fa: &Array1<f32>,
    fb: &Array1<f32>,
    out: ArrayViewMut2<'_, f32>,
    upper_only: bool,
) {
    // One copy of the tile loop per metric, so that the epilogue is a branch-free loop the
    // compiler vectorises.
    match metric {
        Metric::Euclidean => fill_with(metric, a, b, fa, fb, out, upper_only, |t, x, y| {
            finish(Metric::Euclidean, t, x, y).sqrt()
        }),
        Metric::SquaredEuclidean => fill_with(metric, a, b, fa, fb, out, upper_only, |t, x, y| {
            finish(Metric::SquaredEuclidean, t, x, y)
        }),
        Metric::Cosine => fill_with(metric, a, b, fa, fb, out, upper_only, |t, x, y| {
            finish(Metric::Cosine, t, x, y)
        }),
        // The GEMM's output is already the value.
        Metric::Dot => fill_with(metric, a, b, fa, fb, out, upper_only, |t, _, _| t),
    }
}

#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn fill_with(
    metric: Metric,
    a: ArrayView2<'_, f32>,
    b: ArrayView2<'_, f32>,
    fa: &Array1<f32>,
    fb: &Array1<f32>,
    mut out: ArrayViewMut2<'_, f32>,
    upper_only: bool,
    epilogue: impl Fn(f32, f32, f32) -> f32 + Sync,
) {
    let (n, m) = out.dim();
    if out.is_empty() {
        return;
    }
    let (tile_rows, tile_cols) = tile_shape(n);
    let alpha = gemm_alpha(metric, 1.0);
    let skip_epilogue = metric == Metric::Dot;
    out.axis_chunks_iter_mut(Axis(0), tile_rows)
        .into_par_iter()
        .enumerate()
        .for_each(|(bi, mut band)| {
            let r0 = bi * tile_rows;
            let rows = band.nrows();
            let a_band = a.slice(s![r0..r0 + rows, ..]);
            // For the upper triangle a band's rows r0.. need only the columns r0..: its tiles
            // start on the band's diagonal (the entries left of it are mirrored in later).
            let c_start = if upper_only { r0 } else { 0 };
            for c0 in (c_start..m).step_by(tile_cols) {
                let c1 = (c0 + tile_cols).min(m);
                let mut tile = band.slice_mut(s![.., c0..c1]);
                gemm_nt(alpha, a_band, b.slice(s![c0..c1, ..]), tile.view_mut());
                if skip_epilogue {
                    continue;
                }
                let fbs = fb.slice(s![c0..c1]);
                for (i, mut row) in tile.axis_iter_mut(Axis(0)).enumerate() {
                    let fai = fa[r0 + i];
                    match (row.as_slice_mut(), fbs.as_slice()) {
                        (Some(row), Some(fbs)) => {
                            for (t, &fbj) in row.iter_mut().zip(fbs) {
                                *t = epilogue(*t, fai, fbj);
                            }
                        }
                        _ => row.zip_mut_with(&fbs, |t, &fbj| *t = epilogue(*t, fai, fbj)),
                    }
                }
            }
        });
}

/// Rows and columns of an output tile for an output of `n` rows.
///
/// A rayon task computes a band of output rows, one `rows × TILE_COLS` tile at a time, each a
/// single GEMM call followed by the epilogue. Bands of up to 256 rows amortise the GEMM's packing
/// of the `TILE_COLS × d` block of `b`, which every call repeats (on the development machine,
/// 256-row bands ran the 8192 × 8192 × 128 product about 12% faster than 64-row ones), and a
/// `256 × 512` f32 tile (512 KiB) stays in a core's L2 cache for the epilogue. Small outputs get
/// thinner bands, down to 64 rows, so that each thread has about two (thinner ones were slower).
fn tile_shape(n: usize) -> (usize, usize) {
    let threads = rayon::current_num_threads().max(1);
    let rows = (n / (2 * threads)).clamp(TILE_ROWS_MIN, TILE_ROWS_MAX) / 16 * 16;
    (rows, TILE_COLS)
}
