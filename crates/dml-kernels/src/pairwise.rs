//! Pairwise distance and similarity matrices in GEMM form.

use ndarray::{Array1, Array2, ArrayView2, ArrayViewMut2, Axis, s};
use rayon::prelude::*;

use crate::{
    Error, Metric, Result, alloc, check,
    gemm::gemm_nt,
    normalize::{dot_slice, inv_norm, squared_norm},
};

/// Fewest rows of a band of output rows (see [`tile_shape`]).
const TILE_ROWS_MIN: usize = 64;
/// Most rows of a band of output rows.
const TILE_ROWS_MAX: usize = 256;
/// Columns of an output tile.
const TILE_COLS: usize = 512;
/// Rows of a band of a self-distance matrix (whose bands start on their diagonal) computed on
/// the calling thread (see [`SERIAL_MAX_MADDS`]); other matrices are then computed in bands of
/// [`TILE_ROWS_MAX`] rows.
///
/// Thinner bands compute less of the lower triangle, but each band is one GEMM call, which packs
/// its columns again, and the `gemm` crate runs thin products well below its peak: for 256 × 128
/// rows, bands of 16, 32, 64, 128 and 256 rows (53, 56, 62.5, 75 and 100 % of the full product's
/// multiply-adds) took 122, 99, 92, 128 and 112 µs (one series, medians of 3,000 calls each, on
/// a loaded 2-core machine, 2026-12-06).
const SERIAL_TILE_ROWS: usize = 64;

/// Up to this many multiply-adds (rows × columns × dimension of the whole product: 256 × 256 ×
/// 128) a matrix is computed on the calling thread, without rayon.
///
/// Work of this size is a fraction of a millisecond, of the order of what handing bands to
/// rayon's pool and waiting for them costs on a loaded machine: `self_pairwise` of a 256 × 128
/// batch took 115 µs over two pool threads and 118 µs on one pool thread, and 82 µs on the
/// calling thread (in bands of [`SERIAL_TILE_ROWS`]; medians of 3,000 calls, 2-core VM with
/// one core kept busy by another process, 2026-12-06).
pub(crate) const SERIAL_MAX_MADDS: usize = 256 * 256 * 128;

/// Whether an `n × m` product over `d` dimensions is small enough for the calling thread.
#[inline]
pub(crate) fn is_serial(n: usize, m: usize, d: usize) -> bool {
    n.saturating_mul(m).saturating_mul(d.max(1)) <= SERIAL_MAX_MADDS
}

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

/// The metric's value for each listed pair of rows: `out[p] = metric(a[i], b[j])` for
/// `pairs[p] = [i, j]` (pass the same matrix twice for pairs within one set).
///
/// One dot product per pair, in the GEMM form and with the epilogue of [`pairwise`]
/// (`‖a‖² + ‖b‖² − 2·a·b` clamped at zero, cosine through the same inverse norms), in parallel
/// over chunks of pairs: what a verification protocol needs for millions of pairs without any
/// matrix of all of them. The values agree with [`pairwise`]'s to f32 rounding (the dot
/// products are summed in another order).
///
/// # Errors
/// [`Error::DimensionMismatch`], [`Error::NonFinite`], and [`Error::PairIndex`] for an index
/// outside its matrix.
///
/// ```
/// use dml_kernels::{Metric, paired};
/// use ndarray::array;
///
/// let x = array![[0.0_f32, 0.0], [3.0, 4.0], [0.0, 1.0]];
/// let d = paired(Metric::Euclidean, x.view(), x.view(), &[[0, 1], [1, 2], [2, 2]])?;
/// assert_eq!(d[0], 5.0);
/// assert_eq!(d[2], 0.0);
/// # Ok::<(), dml_kernels::Error>(())
/// ```
pub fn paired(
    metric: Metric,
    a: ArrayView2<'_, f32>,
    b: ArrayView2<'_, f32>,
    pairs: &[[u32; 2]],
) -> Result<Vec<f32>> {
    check::same_dim(a, "a", b, "b")?;
    for (p, &[i, j]) in pairs.iter().enumerate() {
        for (index, rows, matrix) in [(i, a.nrows(), "a"), (j, b.nrows(), "b")] {
            if index as usize >= rows {
                return Err(Error::PairIndex {
                    pair: p,
                    index: index as usize,
                    matrix,
                    rows,
                });
            }
        }
    }
    let a = NormedRows::new(metric, a, "a")?;
    let b = NormedRows::new(metric, b, "b")?;
    let mut out = vec![0.0f32; pairs.len()];
    out.par_chunks_mut(4096)
        .zip(pairs.par_chunks(4096))
        .for_each(|(out, pairs)| {
            for (o, &[i, j]) in out.iter_mut().zip(pairs) {
                *o = a.value(i as usize, &b, j as usize);
            }
        });
    Ok(out)
}

/// A matrix with the per-row factors of a metric computed once (squared norms for the
/// Euclidean metrics, inverse norms for cosine), for the value of single pairs of rows:
/// [`paired`]'s building block, for callers that pick their pairs one at a time (k-means++
/// seeding compares each candidate centre with only the points it could take).
///
/// ```
/// use dml_kernels::{Metric, NormedRows};
/// use ndarray::array;
///
/// let x = array![[0.0_f32, 0.0], [3.0, 4.0]];
/// let rows = NormedRows::new(Metric::Euclidean, x.view(), "x")?;
/// assert_eq!(rows.value(0, &rows, 1), 5.0);
/// # Ok::<(), dml_kernels::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct NormedRows<'a> {
    metric: Metric,
    x: ndarray::CowArray<'a, f32, ndarray::Ix2>,
    factors: Array1<f32>,
}

impl<'a> NormedRows<'a> {
    /// Checks `x` (every value finite; `name` is the matrix's name in the error) and computes
    /// its row factors.
    ///
    /// # Errors
    /// [`Error::NonFinite`].
    pub fn new(metric: Metric, x: ArrayView2<'a, f32>, name: &'static str) -> Result<Self> {
        check::finite(x, name)?;
        let x = if x.is_standard_layout() {
            ndarray::CowArray::from(x)
        } else {
            ndarray::CowArray::from(x.as_standard_layout().into_owned())
        };
        let factors = row_factors(metric, x.view());
        Ok(Self { metric, x, factors })
    }

    /// Number of rows.
    pub fn nrows(&self) -> usize {
        self.x.nrows()
    }

    /// The metric's value for row `i` of `self` and row `j` of `other`: one dot product, in the
    /// GEMM form and with the epilogue of [`pairwise`], so it agrees with [`pairwise`] to f32
    /// rounding. Both must have the same number of columns and the same metric.
    ///
    /// # Panics
    /// If `i` or `j` is out of range or the widths differ ([`paired`] checks these first).
    #[inline]
    pub fn value(&self, i: usize, other: &NormedRows<'_>, j: usize) -> f32 {
        let d = self.x.ncols();
        let a = &self.x.as_slice().expect("standard layout")[i * d..(i + 1) * d];
        let b = &other.x.as_slice().expect("standard layout")[j * d..(j + 1) * d];
        let dot = dot_slice(a, b);
        let v = finish(
            self.metric,
            gemm_alpha(self.metric, 1.0) * dot,
            self.factors[i],
            other.factors[j],
        );
        if self.metric == Metric::Euclidean {
            v.sqrt()
        } else {
            v
        }
    }

    /// [`values_into`](NormedRows::values_into) for any listed rows of `self` (gathered into a
    /// contiguous block first): `out` is `rows.len() × other.nrows()`, row-major.
    ///
    /// # Panics
    /// If a row is out of range, `out` has the wrong length or the widths differ.
    pub fn values_of_rows_into(&self, rows: &[u32], other: &NormedRows<'_>, out: &mut [f32]) {
        let d = self.x.ncols();
        let m = other.x.nrows();
        assert_eq!(
            out.len(),
            rows.len() * m,
            "out holds rows × other's rows values"
        );
        let flat = self.x.as_slice().expect("standard layout");
        let mut gathered = Vec::with_capacity(rows.len() * d);
        for &i in rows {
            gathered.extend_from_slice(&flat[i as usize * d..(i as usize + 1) * d]);
        }
        let a = ArrayView2::from_shape((rows.len(), d), &gathered[..])
            .expect("rows × d gathered values");
        let mut tile = ArrayViewMut2::from_shape((rows.len(), m), out)
            .expect("out holds rows × other's rows values");
        gemm_nt(
            gemm_alpha(self.metric, 1.0),
            a,
            other.x.view(),
            tile.view_mut(),
        );
        if self.metric == Metric::Dot {
            return;
        }
        for (mut row, &i) in tile.axis_iter_mut(Axis(0)).zip(rows) {
            let fa = self.factors[i as usize];
            row.zip_mut_with(&other.factors, |t, &fb| {
                let v = finish(self.metric, *t, fa, fb);
                *t = if self.metric == Metric::Euclidean {
                    v.sqrt()
                } else {
                    v
                };
            });
        }
    }

    /// The metric's values of rows `rows` of `self` against every row of `other`, into `out`
    /// (`rows.len() × other.nrows()`, row-major): a tile of [`pairwise`], computed the same way
    /// (one GEMM, then the epilogue) on the calling thread, without checking the inputs again.
    ///
    /// # Panics
    /// If `rows` is out of range, `out` has the wrong length or the widths differ.
    pub fn values_into(
        &self,
        rows: std::ops::Range<usize>,
        other: &NormedRows<'_>,
        out: &mut [f32],
    ) {
        let m = other.x.nrows();
        assert_eq!(
            out.len(),
            rows.len() * m,
            "out holds rows × other's rows values"
        );
        let mut tile = ArrayViewMut2::from_shape((rows.len(), m), out)
            .expect("out holds rows × other's rows values");
        let a = self.x.slice(s![rows.clone(), ..]);
        gemm_nt(
            gemm_alpha(self.metric, 1.0),
            a,
            other.x.view(),
            tile.view_mut(),
        );
        if self.metric == Metric::Dot {
            return;
        }
        for (mut row, &fa) in tile
            .axis_iter_mut(Axis(0))
            .zip(self.factors.slice(s![rows]))
        {
            row.zip_mut_with(&other.factors, |t, &fb| {
                let v = finish(self.metric, *t, fa, fb);
                *t = if self.metric == Metric::Euclidean {
                    v.sqrt()
                } else {
                    v
                };
            });
        }
    }
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
    let serial = is_serial(n, n, x.ncols());
    fill_scheduled(metric, x, x, &f, &f, out.view_mut(), true, serial);
    mirror_upper(&mut out, serial);
    if !metric.is_similarity() {
        out.diag_mut().fill(0.0);
    }
    Ok(out)
}

/// Copies the strict upper triangle of a square matrix onto the lower one, over bands of
/// destination rows (in parallel unless `serial`), in square blocks so that both sides stay in
/// cache.
fn mirror_upper(out: &mut Array2<f32>, serial: bool) {
    const B: usize = 64;
    let n = out.nrows();
    debug_assert!(out.is_standard_layout());
    let base = SyncPtr(out.as_mut_ptr());
    let band_job = |band: usize| {
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
    };
    if serial {
        (0..n.div_ceil(B)).for_each(band_job);
    } else {
        (0..n.div_ceil(B)).into_par_iter().for_each(band_job);
    }
}

/// A raw pointer that may cross threads; see the SAFETY note in [`mirror_upper`].
#[derive(Clone, Copy)]
struct SyncPtr(*mut f32);
// SAFETY: used only by `mirror_upper`, whose tasks access disjoint locations.
unsafe impl Send for SyncPtr {}
// SAFETY: as above.
unsafe impl Sync for SyncPtr {}

/// Fills `out` tile by tile: GEMM, then the metric's epilogue while the tile is hot; on the
/// calling thread for small products ([`is_serial`]), in parallel over bands of rows otherwise.
fn fill(
    metric: Metric,
    a: ArrayView2<'_, f32>,
    b: ArrayView2<'_, f32>,
    fa: &Array1<f32>,
    fb: &Array1<f32>,
    out: ArrayViewMut2<'_, f32>,
    upper_only: bool,
) {
    let serial = is_serial(out.nrows(), out.ncols(), a.ncols());
    fill_scheduled(metric, a, b, fa, fb, out, upper_only, serial);
}

/// [`fill`] with the schedule given: the same values either way (each entry is one GEMM dot
/// product and the same epilogue, whatever the band it falls in).
#[allow(clippy::too_many_arguments)]
fn fill_scheduled(
    metric: Metric,
    a: ArrayView2<'_, f32>,
    b: ArrayView2<'_, f32>,
    fa: &Array1<f32>,
    fb: &Array1<f32>,
    out: ArrayViewMut2<'_, f32>,
    upper_only: bool,
    serial: bool,
) {
    // One copy of the tile loop per metric, so that the epilogue is a branch-free loop the
    // compiler vectorises.
    let s = (upper_only, serial);
    match metric {
        Metric::Euclidean => fill_with(metric, a, b, fa, fb, out, s, |t, x, y| {
            finish(Metric::Euclidean, t, x, y).sqrt()
        }),
        Metric::SquaredEuclidean => fill_with(metric, a, b, fa, fb, out, s, |t, x, y| {
            finish(Metric::SquaredEuclidean, t, x, y)
        }),
        Metric::Cosine => fill_with(metric, a, b, fa, fb, out, s, |t, x, y| {
            finish(Metric::Cosine, t, x, y)
        }),
        // The GEMM's output is already the value.
        Metric::Dot => fill_with(metric, a, b, fa, fb, out, s, |t, _, _| t),
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
    (upper_only, serial): (bool, bool),
    epilogue: impl Fn(f32, f32, f32) -> f32 + Sync,
) {
    let (n, m) = out.dim();
    if out.is_empty() {
        return;
    }
    let (tile_rows, tile_cols) = if serial {
        (
            if upper_only {
                SERIAL_TILE_ROWS
            } else {
                TILE_ROWS_MAX
            },
            TILE_COLS,
        )
    } else {
        tile_shape(n)
    };
    let alpha = gemm_alpha(metric, 1.0);
    let skip_epilogue = metric == Metric::Dot;
    let band_job = |(bi, mut band): (usize, ArrayViewMut2<'_, f32>)| {
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
    };
    let bands = out.axis_chunks_iter_mut(Axis(0), tile_rows);
    if serial {
        bands.enumerate().for_each(band_job);
    } else {
        bands.into_par_iter().enumerate().for_each(band_job);
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The calling-thread schedule (other band heights, no rayon) gives the parallel schedule's
    /// values bit for bit, for every metric, for whole matrices and upper triangles, with band
    /// and tile edges off the grid.
    #[test]
    fn both_schedules_give_the_same_bits() {
        let x = Array2::from_shape_fn((700, 37), |(i, j)| {
            ((i * 13 + j * 7) % 23) as f32 / 11.0 - 1.0 + (i as f32).sin()
        });
        for (n, m) in [
            (1, 1),
            (63, 65),
            (64, 700),
            (200, 130),
            (600, 600),
            (700, 513),
        ] {
            let (a, b) = (x.slice(s![..n, ..]), x.slice(s![x.nrows() - m.., ..]));
            for metric in Metric::ALL {
                let (fa, fb) = (row_factors(metric, a), row_factors(metric, b));
                for upper_only in [false, true] {
                    if upper_only && n != m {
                        continue;
                    }
                    let b = if upper_only { a } else { b };
                    let fb = if upper_only { &fa } else { &fb };
                    let run = |serial| {
                        let mut out = Array2::<f32>::zeros((n, m));
                        fill_scheduled(metric, a, b, &fa, fb, out.view_mut(), upper_only, serial);
                        out
                    };
                    let (serial, parallel) = (run(true), run(false));
                    for i in 0..n {
                        let from = if upper_only { i } else { 0 };
                        for j in from..m {
                            assert_eq!(
                                serial[[i, j]].to_bits(),
                                parallel[[i, j]].to_bits(),
                                "{metric} {n}x{m} upper {upper_only} [{i},{j}]"
                            );
                        }
                    }
                }
            }
        }
    }
}
