//! L2 normalisation of rows.

use ndarray::{Array2, ArrayView1, ArrayView2, ArrayViewMut1, ArrayViewMut2, Axis, Zip};

/// The floor under a row's norm in [`l2_normalize`]: each row is divided by `max(‖x‖₂, NORM_EPS)`.
///
/// This is the same rule and the same value (`1e-12`) as PyTorch's `F.normalize`, which
/// pytorch-metric-learning uses, so a zero row maps to a zero row (finite, never NaN) and any other
/// row to a unit row.
pub const NORM_EPS: f32 = 1e-12;

/// Rows scaled to unit Euclidean norm (each row divided by `max(‖row‖₂, NORM_EPS)`).
///
/// A zero row stays zero; see [`NORM_EPS`].
///
/// ```
/// use dml_kernels::l2_normalize;
/// use ndarray::array;
///
/// let x = l2_normalize(array![[3.0_f32, 4.0], [0.0, 0.0]].view());
/// assert_eq!(x, array![[0.6_f32, 0.8], [0.0, 0.0]]);
/// ```
pub fn l2_normalize(x: ArrayView2<'_, f32>) -> Array2<f32> {
    let mut out = x.to_owned();
    l2_normalize_inplace(out.view_mut());
    out
}

/// Up to this many values [`l2_normalize_inplace`] works on the calling thread: a batch of
/// 256 × 128 takes a few microseconds, less than handing its rows to rayon's pool.
const SERIAL_MAX_VALUES: usize = 1 << 16;

/// [`l2_normalize`] in place.
pub fn l2_normalize_inplace(mut x: ArrayViewMut2<'_, f32>) {
    let scale = |mut row: ArrayViewMut1<'_, f32>| {
        let inv = inv_norm(row.view());
        row.mapv_inplace(|v| v * inv);
    };
    let serial = x.len() <= SERIAL_MAX_VALUES;
    let rows = Zip::from(x.axis_iter_mut(Axis(0)));
    if serial {
        rows.for_each(scale);
    } else {
        rows.par_for_each(scale);
    }
}

/// `1 / max(‖row‖₂, NORM_EPS)`, the factor [`l2_normalize`] applies to a row.
#[inline]
pub(crate) fn inv_norm(row: ArrayView1<'_, f32>) -> f32 {
    1.0 / squared_norm(row).sqrt().max(NORM_EPS)
}

/// `‖row‖₂²`, accumulated in f32 over a contiguous slice when possible.
#[inline]
pub(crate) fn squared_norm(row: ArrayView1<'_, f32>) -> f32 {
    match row.as_slice() {
        Some(s) => dot_slice(s, s),
        None => row.iter().map(|v| v * v).sum(),
    }
}

/// Dot product of two equal-length slices with eight independent accumulators, so the compiler
/// can keep it in vector registers.
#[inline]
pub(crate) fn dot_slice(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0.0_f32; 8];
    let chunks_a = a.chunks_exact(8);
    let chunks_b = b.chunks_exact(8);
    let (ra, rb) = (chunks_a.remainder(), chunks_b.remainder());
    for (ca, cb) in chunks_a.zip(chunks_b) {
        for l in 0..8 {
            acc[l] += ca[l] * cb[l];
        }
    }
    let mut tail = 0.0_f32;
    for (x, y) in ra.iter().zip(rb) {
        tail += x * y;
    }
    ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7])) + tail
}
