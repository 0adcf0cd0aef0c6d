//! Per-key work on a tile of keys in the symmetric searches: transposing it (the large-k
//! search reads its cut-offs' sample down the columns of its first tiles), keeping the keys at
//! or below a cut-off (the large-k search's candidates, about a quarter of all n² keys) as
//! sortable keys and a bit per key, by rows or by columns, and getting the kept keys' indices
//! back from those bits; and,
//! for the small-k search, making a row's keys from its GEMM products and marking those that
//! may enter its own query's buffer or their columns' (one read of the tile for both).
//!
//! Each has a portable version and, on x86-64 CPUs with AVX-512F, a vector one chosen at run
//! time, with the same output: the transpose in 16 × 16 blocks of registers, the filter by
//! compressing the kept lanes' keys in registers and storing them with a mask (no branch per
//! kept key; a tile's columns are filtered from 16 × 16 blocks transposed in registers, so
//! the transpose is never written out), and the indices the same way from the bits. On the
//! 2-core AVX-512 development machine the portable filter took about 10.7 % of the samples of
//! a 784-d evaluation (a third of what is not its GEMM), the first vector one (8-byte codes)
//! about 5.6 %.
//!
//! The prefetch the large-k search's sort asks for its candidate lists lives here too, so that
//! the kernels' architecture-specific code is in one module.

use std::ops::Range;

use crate::{Metric, pairwise::finish};

/// Packs a key and an index into one `u64` whose integer order is the order by key, then index
/// (`-0.0` and `0.0` are one key).
#[inline]
pub(crate) fn code(key: f32, id: u32) -> u64 {
    (u64::from(ordered(key)) << 32) | u64::from(id)
}

/// A key's bits, mapped so that the unsigned integer order is the float order.
#[inline]
fn ordered(key: f32) -> u32 {
    let bits = (key + 0.0).to_bits();
    let mask = (((bits as i32) >> 31) as u32) | 0x8000_0000;
    bits ^ mask
}

/// Whether the AVX-512 versions run: the CPU has AVX-512F and POPCNT (and, in the unit tests,
/// [`FORCE_PORTABLE`] is off).
#[cfg(target_arch = "x86_64")]
fn avx512() -> bool {
    #[cfg(test)]
    if FORCE_PORTABLE.load(std::sync::atomic::Ordering::Relaxed) {
        return false;
    }
    std::arch::is_x86_feature_detected!("avx512f") && std::arch::is_x86_feature_detected!("popcnt")
}

/// Makes the unit tests run the portable versions, so that the searches' own tests cover both
/// on a CPU with AVX-512 (the outputs are the same by design, so a test running meanwhile is not
/// disturbed).
#[cfg(test)]
pub(crate) static FORCE_PORTABLE: std::sync::atomic::AtomicBool =
    std::sync::atomic::AtomicBool::new(false);

/// What [`keep_below`] kept: how many codes, and the smallest and largest of their
/// [`ordered`] keys (`u32::MAX` and `0` when none).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Kept {
    pub n: usize,
    pub lo: u32,
    pub hi: u32,
}

/// Words of [`keep_below`]'s masks: one bit per key, sixteen keys a word.
pub(crate) const MASK_LANES: usize = 16;

/// Writes to the front of `out`, in order, the [`ordered`] key of each key of `keys` at or
/// below `cut`, and to `masks` which ones: bit `t` of `masks[g]` for key `16·g + t` (the keys'
/// indices are not written: [`kept_ids`] gets them back from the masks, so that a candidate
/// takes 4 bytes and a bit, not the 8 bytes of a [`code`]); returns what it kept. `out` must
/// have room for `keys.len()` keys and `masks` for `keys.len().div_ceil(16)` words (nothing past
/// the kept keys is written).
pub(crate) fn keep_below(keys: &[f32], cut: f32, out: &mut [u32], masks: &mut [u16]) -> Kept {
    assert!(
        out.len() >= keys.len() && masks.len() >= keys.len().div_ceil(MASK_LANES),
        "keep_below: room for {} keys and {} mask words, {} keys",
        out.len(),
        masks.len(),
        keys.len()
    );
    #[cfg(target_arch = "x86_64")]
    if avx512() {
        // SAFETY: the CPU has AVX-512F and POPCNT (checked above); the lengths are checked
        // above.
        return unsafe { avx512::keep_below(keys, cut, out, masks) };
    }
    keep_below_portable(keys, cut, out, masks)
}

/// Columns `j0..j0 + w` of a tile of `rows × cols` keys (row-major), `w = min(16, cols - j0)`,
/// filtered as [`keep_below`] filters a row: the keys of column `j0 + t` at or below `cuts[t]`
/// go, in row order, to the front of `out[t * rows..]` (as [`ordered`] keys), its mask words to
/// `masks[t * words..]` (`words = rows.div_ceil(16)`), and how many it kept to `kept[t]`. This
/// is the filter of a tile's columns without writing the tile's transpose: each 16 × 16 block
/// is transposed in registers and filtered there.
pub(crate) fn keep_strip_below(
    tile: &[f32],
    (rows, cols): (usize, usize),
    j0: usize,
    cuts: &[f32],
    (out, masks): (&mut [u32], &mut [u16]),
    kept: &mut [usize; 16],
) {
    let w = cols.saturating_sub(j0).min(16);
    let words = rows.div_ceil(MASK_LANES);
    assert!(
        tile.len() >= rows * cols
            && cuts.len() >= w
            && out.len() >= w * rows
            && masks.len() >= w * words,
        "keep_strip_below: {rows} × {cols} keys from {}, {} cut-offs, room for {} keys and {} \
         words, columns from {j0}",
        tile.len(),
        cuts.len(),
        out.len(),
        masks.len()
    );
    #[cfg(target_arch = "x86_64")]
    if avx512() {
        // SAFETY: the CPU has AVX-512F and POPCNT (checked above); the lengths are checked
        // above.
        unsafe { avx512::keep_strip_below(tile, (rows, cols), j0, cuts, (out, masks), kept) };
        return;
    }
    keep_strip_below_portable(tile, (rows, cols), j0, cuts, (out, masks), kept);
}

/// The portable [`keep_strip_below`].
fn keep_strip_below_portable(
    tile: &[f32],
    (rows, cols): (usize, usize),
    j0: usize,
    cuts: &[f32],
    (out, masks): (&mut [u32], &mut [u16]),
    kept: &mut [usize; 16],
) {
    let w = cols.saturating_sub(j0).min(16);
    let words = rows.div_ceil(MASK_LANES);
    for t in 0..w {
        let (out, masks) = (&mut out[t * rows..], &mut masks[t * words..]);
        let mut n = 0;
        for (g, word) in masks[..words].iter_mut().enumerate() {
            *word = 0;
            for i in g * MASK_LANES..((g + 1) * MASK_LANES).min(rows) {
                let x = tile[i * cols + j0 + t];
                if x <= cuts[t] {
                    *word |= 1 << (i % MASK_LANES);
                    out[n] = ordered(x);
                    n += 1;
                }
            }
        }
        kept[t] = n;
    }
}

/// Appends to `out`, in order, `ids[16·g + t]` for each bit `t` set in `masks[g]`: the indices
/// of the keys [`keep_below`] kept from keys whose indices are `ids` (bits past `ids` are
/// ignored). `masks` must hold `ids.len().div_ceil(16)` words.
pub(crate) fn kept_ids(masks: &[u16], ids: &[u32], out: &mut Vec<u32>) {
    assert_eq!(
        masks.len(),
        ids.len().div_ceil(MASK_LANES),
        "kept_ids: mask words for {} indices",
        ids.len()
    );
    out.reserve(ids.len());
    #[cfg(target_arch = "x86_64")]
    if avx512() {
        // SAFETY: the CPU has AVX-512F and POPCNT (checked above); the lengths are checked
        // above and `out` has room for every index.
        unsafe { avx512::kept_ids(masks, ids, out) };
        return;
    }
    kept_ids_portable(masks, ids, out);
}

/// The portable [`kept_ids`].
fn kept_ids_portable(masks: &[u16], ids: &[u32], out: &mut Vec<u32>) {
    for (&m, ids) in masks.iter().zip(ids.chunks(MASK_LANES)) {
        out.extend(
            ids.iter()
                .enumerate()
                .filter(|&(t, _)| m >> t & 1 == 1)
                .map(|(_, &id)| id),
        );
    }
}

/// Which keys of one row of a tile may enter a sorted buffer of the row's own query and, where
/// `columns` is given, which their column's, the keys made from the row's GEMM products on the
/// way (so that the tile is read once and never written back): key `j` is
/// [`finish`]`(metric, products[j], fi, fj[j])` (`fi`, `fj` the row's and the columns'
/// [`crate::pairwise::row_factors`]); bit `t` of `row_hits[g]` is set where key `16·g + t` is
/// at or below `row_limit`, and with `columns = (col_limits, col_hits)` bit `t` of
/// `col_hits[g]` where it is at or below `col_limits[16·g + t]` (bits past the row are clear).
/// The searches' offers then go only to the set bits. Returns whether any bit is set in the
/// rows' hits and in the columns' (most rows of a tile have none once the buffers are full).
/// `fj` and `col_limits` must hold a value per product, each hits slice
/// `products.len().div_ceil(16)` words.
pub(crate) fn hits_at_or_below(
    products: &[f32],
    (metric, fi, fj): (Metric, f32, &[f32]),
    (row_limit, row_hits): (f32, &mut [u16]),
    columns: Option<(&[f32], &mut [u16])>,
) -> (bool, bool) {
    let (n, words) = (products.len(), products.len().div_ceil(MASK_LANES));
    assert!(
        fj.len() >= n
            && row_hits.len() >= words
            && columns
                .as_ref()
                .is_none_or(|(limits, hits)| limits.len() >= n && hits.len() >= words),
        "hits_at_or_below: {n} products, {} factors, {} words for the row",
        fj.len(),
        row_hits.len(),
    );
    #[cfg(target_arch = "x86_64")]
    if avx512() {
        // SAFETY: the CPU has AVX-512F (checked above); the lengths are checked above.
        return unsafe {
            avx512::hits_at_or_below(products, (metric, fi, fj), (row_limit, row_hits), columns)
        };
    }
    hits_at_or_below_portable(products, (metric, fi, fj), (row_limit, row_hits), columns)
}

/// The portable [`hits_at_or_below`].
fn hits_at_or_below_portable(
    products: &[f32],
    (metric, fi, fj): (Metric, f32, &[f32]),
    (row_limit, row_hits): (f32, &mut [u16]),
    mut columns: Option<(&[f32], &mut [u16])>,
) -> (bool, bool) {
    let (mut any_row, mut any_col) = (0u16, 0u16);
    for (g, (chunk, fj)) in products.chunks(LANES).zip(fj.chunks(LANES)).enumerate() {
        let limits = columns.as_ref().map(|(limits, _)| &limits[g * LANES..]);
        let (mut row, mut col) = (0u16, 0u16);
        for (t, (&p, &fj)) in chunk.iter().zip(fj).enumerate() {
            // Each key made once, for its row and its column.
            let key = finish(metric, p, fi, fj);
            row |= u16::from(key <= row_limit) << t;
            if let Some(limits) = limits {
                col |= u16::from(key <= limits[t]) << t;
            }
        }
        row_hits[g] = row;
        any_row |= row;
        if let Some((_, hits)) = columns.as_mut() {
            hits[g] = col;
            any_col |= col;
        }
    }
    (any_row != 0, any_col != 0)
}

/// Writes the transpose of `src` (`rows × cols`) into `dst`, whose rows are `stride` apart:
/// `dst[j * stride + i] = src[i * cols + j]` (a band of rows of a larger transpose when
/// `stride > rows`).
pub(crate) fn transpose(src: &[f32], (rows, cols): (usize, usize), dst: &mut [f32], stride: usize) {
    assert!(
        src.len() >= rows * cols
            && stride >= rows
            && (cols == 0 || dst.len() >= (cols - 1) * stride + rows),
        "transpose: {rows} × {cols} from {} values into {} with rows {stride} apart",
        src.len(),
        dst.len()
    );
    #[cfg(target_arch = "x86_64")]
    if avx512() {
        // SAFETY: the CPU has AVX-512F (checked above); the lengths are checked above.
        unsafe { avx512::transpose(src, (rows, cols), dst, stride) };
        return;
    }
    transpose_part(src, (rows, cols), (dst, stride), 0..rows, 0..cols);
}

/// The portable [`transpose`] of the rows `is` and columns `js` of `src`, in 16 × 16 blocks:
/// each block's rows of `dst` are written whole while its column of `src` stays in cache.
fn transpose_part(
    src: &[f32],
    (rows, cols): (usize, usize),
    (dst, stride): (&mut [f32], usize),
    is: Range<usize>,
    js: Range<usize>,
) {
    debug_assert!(is.end <= rows);
    const B: usize = 16;
    for i0 in is.clone().step_by(B) {
        let i1 = (i0 + B).min(is.end);
        for j0 in js.clone().step_by(B) {
            for j in j0..(j0 + B).min(js.end) {
                let dst_row = &mut dst[j * stride + i0..j * stride + i1];
                for (d, i) in dst_row.iter_mut().zip(i0..i1) {
                    *d = src[i * cols + j];
                }
            }
        }
    }
}

/// Asks for the cache line at `p` (any address: a prefetch never faults, and a pointer past
/// a list's end just fetches a line nobody reads).
#[inline(always)]
pub(crate) fn prefetch<T>(p: *const T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: SSE is part of the x86-64 baseline, and a prefetch reads nothing the program
    // sees, whatever the address.
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(p.cast());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

/// Asks for the cache line at `p` into the core's L2 cache only (any address, as [`prefetch`]).
#[inline(always)]
pub(crate) fn prefetch_l2<T>(p: *const T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: as `prefetch`.
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T1 }>(p.cast());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

/// Asks for the cache line at `p` in order to write it (any address, as [`prefetch`]).
#[inline(always)]
pub(crate) fn prefetch_write<T>(p: *const T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: as `prefetch`.
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_ET0 }>(p.cast());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

/// Asks for the first kilobyte of a list's chunk.
pub(crate) fn prefetch_start(part: &[u32]) {
    for off in (0..part.len().min(256)).step_by(16) {
        prefetch(part[off..].as_ptr());
    }
}

/// Lanes of the portable comparison.
const LANES: usize = 16;

/// The portable [`keep_below`].
fn keep_below_portable(keys: &[f32], cut: f32, out: &mut [u32], masks: &mut [u16]) -> Kept {
    let mut kept = Kept {
        n: 0,
        lo: u32::MAX,
        hi: 0,
    };
    for (chunk, word) in keys.chunks(LANES).zip(masks.iter_mut()) {
        let mut mask = 0u16;
        for (t, &x) in chunk.iter().enumerate() {
            mask |= u16::from(x <= cut) << t;
        }
        *word = mask;
        let mut left = mask;
        while left != 0 {
            let t = left.trailing_zeros() as usize;
            left &= left - 1;
            let key = ordered(chunk[t]);
            kept.lo = kept.lo.min(key);
            kept.hi = kept.hi.max(key);
            out[kept.n] = key;
            kept.n += 1;
        }
    }
    kept
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use super::{Kept, Metric, transpose_part};
    use std::arch::x86_64::*;

    /// [`super::transpose`] with AVX-512F: each whole 16 × 16 block through sixteen registers
    /// (pairs of rows interleaved, then groups of four, then 128-bit lanes twice), the ragged
    /// edges by the portable loop.
    ///
    /// # Safety
    /// The CPU must support AVX-512F, `src` must hold `rows * cols` values and `dst`
    /// `(cols - 1) * stride + rows`, with `stride >= rows`.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn transpose(
        src: &[f32],
        (rows, cols): (usize, usize),
        dst: &mut [f32],
        stride: usize,
    ) {
        let (full_rows, full_cols) = (rows / 16 * 16, cols / 16 * 16);
        for i0 in (0..full_rows).step_by(16) {
            for j0 in (0..full_cols).step_by(16) {
                // SAFETY: rows i0..i0 + 16 and columns j0..j0 + 16 are within `src`.
                let r: [__m512; 16] = std::array::from_fn(|i| unsafe {
                    _mm512_loadu_ps(src.as_ptr().add((i0 + i) * cols + j0))
                });
                for (j, v) in transpose16(&r).into_iter().enumerate() {
                    // SAFETY: row j0 + j of `dst` holds columns i0..i0 + 16.
                    unsafe { _mm512_storeu_ps(dst.as_mut_ptr().add((j0 + j) * stride + i0), v) };
                }
            }
        }
        // The last columns of the whole row blocks, then the last rows.
        transpose_part(
            src,
            (rows, cols),
            (dst, stride),
            0..full_rows,
            full_cols..cols,
        );
        transpose_part(src, (rows, cols), (dst, stride), full_rows..rows, 0..cols);
    }

    /// The first `n` of sixteen lanes (all of them from 16 on).
    fn first_lanes(n: usize) -> __mmask16 {
        if n >= 16 { 0xffff } else { (1u16 << n) - 1 }
    }

    /// Sixteen floats' keys as [`super::ordered`] maps them (`-0.0` as `0.0`).
    #[inline]
    #[target_feature(enable = "avx512f")]
    fn ordered16(x: __m512) -> __m512i {
        let bits = _mm512_castps_si512(_mm512_add_ps(x, _mm512_setzero_ps()));
        let sign = _mm512_set1_epi32(i32::MIN);
        _mm512_xor_si512(bits, _mm512_or_si512(_mm512_srai_epi32::<31>(bits), sign))
    }

    /// Stores the lanes of `v` that `m` selects at `dst`, in order, with a mask (nothing past
    /// them is written); returns how many.
    ///
    /// # Safety
    /// `dst` must have room for `m.count_ones()` values.
    #[inline]
    #[target_feature(enable = "avx512f,popcnt")]
    unsafe fn store_kept(dst: *mut u32, m: __mmask16, v: __m512i) -> usize {
        let count = m.count_ones() as usize;
        let packed = _mm512_maskz_compress_epi32(m, v);
        let store = ((1u32 << count) - 1) as __mmask16;
        // SAFETY: the masked store writes the first `count` values, within the room promised.
        unsafe { _mm512_mask_storeu_epi32(dst.cast(), store, packed) };
        count
    }

    /// The transpose of a 16 × 16 block held in sixteen registers (row `i` in `r[i]`): column
    /// `j` in the `j`-th (pairs of rows interleaved, then groups of four, then 128-bit lanes
    /// twice).
    #[target_feature(enable = "avx512f")]
    fn transpose16(r: &[__m512; 16]) -> [__m512; 16] {
        // t[2p], t[2p + 1]: rows 2p and 2p + 1 interleaved, low and high pairs.
        let t: [__m512; 16] = std::array::from_fn(|i| {
            let (a, b) = (r[i & !1], r[i | 1]);
            if i % 2 == 0 {
                _mm512_unpacklo_ps(a, b)
            } else {
                _mm512_unpackhi_ps(a, b)
            }
        });
        // u[4q + c]: in each 128-bit lane L, column 4L + c of rows 4q..4q + 4.
        let u: [__m512; 16] = std::array::from_fn(|i| {
            let (q, c) = (i / 4, i % 4);
            let (a, b) = (t[4 * q + c / 2], t[4 * q + 2 + c / 2]);
            if c % 2 == 0 {
                _mm512_shuffle_ps::<0x44>(a, b)
            } else {
                _mm512_shuffle_ps::<0xee>(a, b)
            }
        });
        let mut out = [_mm512_setzero_ps(); 16];
        for c in 0..4 {
            let x0 = _mm512_shuffle_f32x4::<0x88>(u[c], u[4 + c]);
            let x1 = _mm512_shuffle_f32x4::<0xdd>(u[c], u[4 + c]);
            let y0 = _mm512_shuffle_f32x4::<0x88>(u[8 + c], u[12 + c]);
            let y1 = _mm512_shuffle_f32x4::<0xdd>(u[8 + c], u[12 + c]);
            out[c] = _mm512_shuffle_f32x4::<0x88>(x0, y0);
            out[4 + c] = _mm512_shuffle_f32x4::<0x88>(x1, y1);
            out[8 + c] = _mm512_shuffle_f32x4::<0xdd>(x0, y0);
            out[12 + c] = _mm512_shuffle_f32x4::<0xdd>(x1, y1);
        }
        out
    }

    /// [`super::hits_at_or_below`] with AVX-512F: sixteen keys made at once (the metric's
    /// [`super::finish`] in vector form, the same operations in the same order, so the same
    /// bits) and compared with the row's limit and with their columns' (the last, partial
    /// group masked), the masks or-ed for the answer.
    ///
    /// # Safety
    /// The CPU must support AVX-512F, `fj` and the column limits must hold a value per product
    /// and the hits slices `products.len().div_ceil(16)` words.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn hits_at_or_below(
        products: &[f32],
        (metric, fi, fj): (Metric, f32, &[f32]),
        row: (f32, &mut [u16]),
        columns: Option<(&[f32], &mut [u16])>,
    ) -> (bool, bool) {
        // SAFETY: passed on from the caller.
        unsafe {
            match (metric, columns) {
                (Metric::Euclidean | Metric::SquaredEuclidean, Some(c)) => {
                    hits_of::<EUCLIDEAN, true>(products, (fi, fj), row, c)
                }
                (Metric::Euclidean | Metric::SquaredEuclidean, None) => {
                    hits_of::<EUCLIDEAN, false>(products, (fi, fj), row, (&[], &mut []))
                }
                (Metric::Cosine, Some(c)) => hits_of::<COSINE, true>(products, (fi, fj), row, c),
                (Metric::Cosine, None) => {
                    hits_of::<COSINE, false>(products, (fi, fj), row, (&[], &mut []))
                }
                (Metric::Dot, Some(c)) => hits_of::<DOT, true>(products, (fi, fj), row, c),
                (Metric::Dot, None) => {
                    hits_of::<DOT, false>(products, (fi, fj), row, (&[], &mut []))
                }
            }
        }
    }

    const EUCLIDEAN: u8 = 0;
    const COSINE: u8 = 1;
    const DOT: u8 = 2;

    /// [`hits_at_or_below`] for one kind of [`super::finish`] (`((fi + fj) + p).max(0)` for
    /// the Euclidean metrics, `max` with zero second so that a NaN gives zero as `f32::max`
    /// does; `(p · (fi · fj)).clamp(-1, 1)` for cosine; `p` for the dot product), with the
    /// columns' hits or without (`COLS`; their slices are then not read).
    ///
    /// # Safety
    /// As [`hits_at_or_below`].
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn hits_of<const KIND: u8, const COLS: bool>(
        products: &[f32],
        (fi, fj): (f32, &[f32]),
        (row_limit, row_hits): (f32, &mut [u16]),
        (col_limits, col_hits): (&[f32], &mut [u16]),
    ) -> (bool, bool) {
        let (fi, row_limit) = (_mm512_set1_ps(fi), _mm512_set1_ps(row_limit));
        let (zero, one, minus_one) = (
            _mm512_setzero_ps(),
            _mm512_set1_ps(1.0),
            _mm512_set1_ps(-1.0),
        );
        let (mut any_row, mut any_col) = (0u16, 0u16);
        let (src, factors, limits) = (products.as_ptr(), fj.as_ptr(), col_limits.as_ptr());
        let (rows, cols) = (row_hits.as_mut_ptr(), col_hits.as_mut_ptr());
        let mut at = 0usize;
        while at < products.len() {
            let lanes = first_lanes(products.len() - at);
            // SAFETY: the lanes read are within `products`, `fj` and (with `COLS`)
            // `col_limits` (masked loads do not touch the others); word `at / 16` is within the
            // hits slices.
            unsafe {
                let p = _mm512_maskz_loadu_ps(lanes, src.add(at));
                let key = match KIND {
                    EUCLIDEAN => {
                        let fj = _mm512_maskz_loadu_ps(lanes, factors.add(at));
                        _mm512_max_ps(_mm512_add_ps(_mm512_add_ps(fi, fj), p), zero)
                    }
                    COSINE => {
                        let fj = _mm512_maskz_loadu_ps(lanes, factors.add(at));
                        let v = _mm512_mul_ps(p, _mm512_mul_ps(fi, fj));
                        _mm512_min_ps(_mm512_max_ps(v, minus_one), one)
                    }
                    _ => p,
                };
                let row = _mm512_mask_cmp_ps_mask::<_CMP_LE_OQ>(lanes, key, row_limit);
                *rows.add(at / 16) = row;
                any_row |= row;
                if COLS {
                    let limit = _mm512_maskz_loadu_ps(lanes, limits.add(at));
                    let col = _mm512_mask_cmp_ps_mask::<_CMP_LE_OQ>(lanes, key, limit);
                    *cols.add(at / 16) = col;
                    any_col |= col;
                }
            }
            at += 16;
        }
        (any_row != 0, any_col != 0)
    }

    /// [`super::keep_below`] with AVX-512F: sixteen keys compared at once, the comparison's
    /// mask stored as their word, the kept lanes' keys compressed and stored with a mask.
    ///
    /// # Safety
    /// The CPU must support AVX-512F and POPCNT, `out.len() >= keys.len()` and
    /// `masks.len() >= keys.len().div_ceil(16)`.
    #[target_feature(enable = "avx512f,popcnt")]
    pub(super) unsafe fn keep_below(
        keys: &[f32],
        cut: f32,
        out: &mut [u32],
        masks: &mut [u16],
    ) -> Kept {
        let cut = _mm512_set1_ps(cut);
        let mut lo = _mm512_set1_epi32(-1);
        let mut hi = _mm512_setzero_si512();
        let mut n = 0usize;
        let src = keys.as_ptr();
        let dst = out.as_mut_ptr();
        let words = masks.as_mut_ptr();
        let mut at = 0usize;
        while at < keys.len() {
            let lanes = first_lanes(keys.len() - at);
            // SAFETY: the lanes read are within `keys` (masked loads do not touch the others).
            let x = unsafe { _mm512_maskz_loadu_ps(lanes, src.add(at)) };
            let m = _mm512_mask_cmp_ps_mask::<_CMP_LE_OQ>(lanes, x, cut);
            // SAFETY: word `at / 16` is within `masks` (checked by the caller).
            unsafe { *words.add(at / 16) = m };
            if m != 0 {
                let key = ordered16(x);
                lo = _mm512_mask_min_epu32(lo, m, lo, key);
                hi = _mm512_mask_max_epu32(hi, m, hi, key);
                // SAFETY: the keys kept so far with these are at most the keys read so far, so
                // within `out`.
                n += unsafe { store_kept(dst.add(n), m, key) };
            }
            at += 16;
        }
        Kept {
            n,
            lo: _mm512_reduce_min_epu32(lo),
            hi: _mm512_reduce_max_epu32(hi),
        }
    }

    /// [`super::keep_strip_below`] with AVX-512F: each 16 × 16 block (masked at the tile's
    /// edges) loaded, transposed in registers, and each of its columns compared, its mask word
    /// stored and its kept lanes' keys compressed and stored with a mask, as [`keep_below`]
    /// does for a row.
    ///
    /// # Safety
    /// The CPU must support AVX-512F and POPCNT, and the lengths must be as
    /// [`super::keep_strip_below`] checks them.
    #[target_feature(enable = "avx512f,popcnt")]
    pub(super) unsafe fn keep_strip_below(
        tile: &[f32],
        (rows, cols): (usize, usize),
        j0: usize,
        cuts: &[f32],
        (out, masks): (&mut [u32], &mut [u16]),
        kept: &mut [usize; 16],
    ) {
        let w = cols.saturating_sub(j0).min(16);
        let words = rows.div_ceil(16);
        let col_lanes = first_lanes(w);
        let src = tile.as_ptr();
        let dst = out.as_mut_ptr();
        let mask_dst = masks.as_mut_ptr();
        *kept = [0; 16];
        for (g, i0) in (0..rows).step_by(16).enumerate() {
            let in_block = (rows - i0).min(16);
            let row_lanes = first_lanes(in_block);
            let r: [__m512; 16] = std::array::from_fn(|i| {
                if i < in_block {
                    // SAFETY: row i0 + i is within the tile, and the lanes read are its
                    // columns j0..j0 + w (masked loads do not touch the others).
                    unsafe { _mm512_maskz_loadu_ps(col_lanes, src.add((i0 + i) * cols + j0)) }
                } else {
                    _mm512_setzero_ps()
                }
            });
            let by_col = transpose16(&r);
            for (t, &x) in by_col.iter().enumerate().take(w) {
                let m =
                    _mm512_mask_cmp_ps_mask::<_CMP_LE_OQ>(row_lanes, x, _mm512_set1_ps(cuts[t]));
                // SAFETY: word g of column t is within `masks` (checked by the caller).
                unsafe { *mask_dst.add(t * words + g) = m };
                // SAFETY: with these, column t has kept at most the rows read so far, so they
                // lie within its `rows` slots of `out`.
                kept[t] += unsafe { store_kept(dst.add(t * rows + kept[t]), m, ordered16(x)) };
            }
        }
    }

    /// [`super::kept_ids`] with AVX-512F: each word's sixteen indices compressed to its set
    /// bits and stored with a mask.
    ///
    /// # Safety
    /// The CPU must support AVX-512F and POPCNT, `masks.len() == ids.len().div_ceil(16)`, and
    /// `out` must have spare capacity for `ids.len()` indices.
    #[target_feature(enable = "avx512f,popcnt")]
    pub(super) unsafe fn kept_ids(masks: &[u16], ids: &[u32], out: &mut Vec<u32>) {
        let start = out.len();
        // SAFETY: `out` has capacity for `start + ids.len()` indices (the caller's promise).
        let dst = unsafe { out.as_mut_ptr().add(start) };
        let src = ids.as_ptr();
        let mut n = 0usize;
        let full = ids.len() / 16;
        for (g, &m) in masks[..full].iter().enumerate() {
            // SAFETY: indices 16g..16g + 16 are within `ids`.
            let v = unsafe { _mm512_loadu_epi32(src.add(g * 16).cast()) };
            let packed = _mm512_maskz_compress_epi32(m, v);
            // SAFETY: n is at most 16g (the indices kept from the words before), so the 16
            // lanes written lie within the spare capacity for `ids.len()` indices; the lanes
            // past the kept ones are overwritten or left past the length.
            unsafe { _mm512_storeu_epi32(dst.add(n).cast(), packed) };
            n += m.count_ones() as usize;
        }
        if let Some(&word) = masks.get(full) {
            let at = full * 16;
            let lanes = first_lanes(ids.len() - at);
            // SAFETY: the lanes read are within `ids` (masked loads do not touch the others).
            let v = unsafe { _mm512_maskz_loadu_epi32(lanes, src.add(at).cast()) };
            // SAFETY: with these, at most `ids.len()` indices are written, within the spare
            // capacity.
            n += unsafe { store_kept(dst.add(n), word & lanes, v) };
        }
        // SAFETY: the first `n` spare slots were written above.
        unsafe { out.set_len(start + n) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The plain definition: every key at or below the cut, in order, as [`code`]s with
    /// indices `ids`.
    fn naive(keys: &[f32], cut: f32, ids: &[u32]) -> (Vec<u64>, Kept) {
        let codes: Vec<u64> = keys
            .iter()
            .zip(ids)
            .filter(|&(&x, _)| x <= cut)
            .map(|(&x, &id)| code(x, id))
            .collect();
        let keys = codes.iter().map(|&c| (c >> 32) as u32);
        let kept = Kept {
            n: codes.len(),
            lo: keys.clone().min().unwrap_or(u32::MAX),
            hi: keys.max().unwrap_or(0),
        };
        (codes, kept)
    }

    /// Both versions of [`keep_below`] and [`kept_ids`] against [`naive`], with indices
    /// `id0 + 7·position` (in order, unlike their positions): the kept keys and their indices
    /// are the codes' two halves, nothing past the kept keys or the mask words is written, and
    /// indices past the masks' bits are not read.
    fn check(keys: &[f32], cut: f32, id0: u32) {
        let ids: Vec<u32> = (0..keys.len() as u32).map(|i| id0 + 7 * i).collect();
        let (want, want_kept) = naive(keys, cut, &ids);
        let want_keys: Vec<u32> = want.iter().map(|&c| (c >> 32) as u32).collect();
        let want_ids: Vec<u32> = want.iter().map(|&c| c as u32).collect();
        let words = keys.len().div_ceil(MASK_LANES);
        for portable in [false, true] {
            // Room for exactly the keys, and sentinels past the kept keys and the words.
            let mut out = vec![u32::MAX; keys.len()];
            let mut masks = vec![0xdead_u16; words + 1];
            let kept = if portable {
                keep_below_portable(keys, cut, &mut out, &mut masks)
            } else {
                keep_below(keys, cut, &mut out, &mut masks)
            };
            assert_eq!(kept, want_kept, "portable {portable}");
            assert_eq!(&out[..kept.n], &want_keys[..], "portable {portable}");
            assert!(out[kept.n..].iter().all(|&c| c == u32::MAX));
            assert_eq!(masks[words], 0xdead);
            let mut back = vec![42];
            if portable {
                kept_ids_portable(&masks[..words], &ids, &mut back);
            } else {
                kept_ids(&masks[..words], &ids, &mut back);
            }
            assert_eq!(back[0], 42);
            assert_eq!(&back[1..], &want_ids[..], "portable {portable}");
        }
        // Bits past the indices (the last word's) are ignored.
        if !keys.len().is_multiple_of(MASK_LANES) {
            let all = vec![0xffff_u16; words];
            let (mut back, mut portable) = (Vec::new(), Vec::new());
            kept_ids(&all, &ids, &mut back);
            kept_ids_portable(&all, &ids, &mut portable);
            assert_eq!((&back, &portable), (&ids, &ids));
        }
    }

    #[test]
    fn signed_zeros_negative_keys_and_infinite_cuts() {
        let keys = [
            0.0,
            -0.0,
            -1.5,
            2.0,
            f32::INFINITY,
            -f32::INFINITY,
            1e-30,
            -1e-30,
            7.0,
        ];
        for cut in [0.0, -0.0, -1.5, 1.0, 7.0, f32::INFINITY, -f32::INFINITY] {
            check(&keys, cut, 3);
        }
        check(&[], 1.0, 0);
        assert_eq!(code(-0.0, 5), code(0.0, 5));
        assert!(code(-1.0, 9) < code(-0.5, 0) && code(-0.5, 0) < code(0.0, 0));
        assert!(code(1.0, 2) < code(1.0, 3) && code(1.0, 3) < code(1.5, 0));
    }

    #[test]
    fn transpose_equals_the_definition_for_ragged_shapes_and_strides() {
        let shapes = [
            (0, 5),
            (1, 1),
            (16, 16),
            (17, 33),
            (48, 20),
            (512, 184),
            (3, 64),
        ];
        for (rows, cols) in shapes {
            for pad in [0usize, 5, 16] {
                let stride = rows + pad;
                let src: Vec<f32> = (0..rows * cols).map(|v| v as f32).collect();
                let len = (cols * stride).saturating_sub(pad);
                let mut dst = vec![f32::NAN; len];
                transpose(&src, (rows, cols), &mut dst, stride);
                for i in 0..rows {
                    for j in 0..cols {
                        assert_eq!(
                            dst[j * stride + i],
                            src[i * cols + j],
                            "{rows}x{cols} {i},{j}"
                        );
                    }
                }
                // The padding between rows is left alone.
                for j in 0..cols.saturating_sub(1) {
                    assert!(
                        dst[j * stride + rows..(j + 1) * stride]
                            .iter()
                            .all(|v| v.is_nan())
                    );
                }
                let mut portable = vec![f32::NAN; len];
                transpose_part(
                    &src,
                    (rows, cols),
                    (&mut portable, stride),
                    0..rows,
                    0..cols,
                );
                let same = portable
                    .iter()
                    .zip(&dst)
                    .all(|(a, b)| a.to_bits() == b.to_bits());
                assert!(same, "{rows}x{cols} stride {stride}");
            }
        }
    }

    /// Both versions of [`keep_strip_below`] give, for each column of the strip, what
    /// [`keep_below`]'s definition gives for that column read top to bottom: ragged tiles
    /// (rows and columns not multiples of 16, a strip narrower than 16), keys equal to the
    /// cut-offs, and nothing written past a column's kept keys.
    #[test]
    fn strips_keep_what_each_column_keeps() {
        let shapes: [(usize, usize); 6] = [
            (16, 16),
            (512, 512),
            (37, 50),
            (5, 3),
            (184, 512),
            (512, 184),
        ];
        for (rows, cols) in shapes {
            let tile: Vec<f32> = (0..rows * cols)
                .map(|v| ((v * 7919) % 23) as f32 - 11.0)
                .collect();
            let cuts: Vec<f32> = (0..cols).map(|j| (j % 9) as f32 - 5.0).collect();
            let words = rows.div_ceil(MASK_LANES);
            for j0 in (0..cols).step_by(16) {
                let w = (cols - j0).min(16);
                for portable in [false, true] {
                    let mut out = vec![u32::MAX; 16 * rows];
                    let mut masks = vec![0xdead_u16; 16 * words];
                    let mut kept = [usize::MAX; 16];
                    let args = (&tile[..], (rows, cols), j0, &cuts[j0..j0 + w]);
                    if portable {
                        keep_strip_below_portable(
                            args.0,
                            args.1,
                            args.2,
                            args.3,
                            (&mut out, &mut masks),
                            &mut kept,
                        );
                    } else {
                        keep_strip_below(
                            args.0,
                            args.1,
                            args.2,
                            args.3,
                            (&mut out, &mut masks),
                            &mut kept,
                        );
                    }
                    for t in 0..w {
                        let column: Vec<f32> = (0..rows).map(|i| tile[i * cols + j0 + t]).collect();
                        let mut want_keys = vec![u32::MAX; column.len()];
                        let mut want_masks = vec![0_u16; words];
                        let want = keep_below_portable(
                            &column,
                            cuts[j0 + t],
                            &mut want_keys,
                            &mut want_masks,
                        );
                        let what = format!("{rows}x{cols} column {} portable {portable}", j0 + t);
                        assert_eq!(kept[t], want.n, "{what}");
                        assert_eq!(out[t * rows..(t + 1) * rows], want_keys[..], "{what}");
                        assert_eq!(masks[t * words..(t + 1) * words], want_masks[..], "{what}");
                    }
                }
            }
        }
    }

    /// Both versions of [`hits_at_or_below`] set exactly the bits of the keys ([`finish`] of
    /// the products, for every metric) at or below the row's limit and at or below their
    /// columns' limits, clear the bits past the row, and say whether any is set: rows of every
    /// length up to three words and a half, keys equal to the limits (small integers and
    /// halves, exact in every metric's arithmetic), keys clamped (cosine) or floored at zero
    /// (Euclidean), limits of `±inf` (a query not yet full; the diagonal's columns).
    #[test]
    fn hits_are_the_keys_at_or_below_the_limits() {
        for len in 0..=56_usize {
            let products: Vec<f32> = (0..len).map(|v| ((v * 7919) % 13) as f32 - 6.0).collect();
            let fj: Vec<f32> = (0..len).map(|j| [0.5, 1.0, 2.0][j % 3]).collect();
            let mut limits: Vec<f32> = (0..len).map(|j| ((j * 31) % 11) as f32 - 5.0).collect();
            if len > 3 {
                (limits[1], limits[3]) = (f32::INFINITY, f32::NEG_INFINITY);
            }
            for (metric, fi) in [
                (Metric::Euclidean, 3.0),
                (Metric::SquaredEuclidean, 1.0),
                (Metric::Cosine, 0.5),
                (Metric::Dot, 0.0),
            ] {
                let keys: Vec<f32> = products
                    .iter()
                    .zip(&fj)
                    .map(|(&p, &f)| finish(metric, p, fi, f))
                    .collect();
                for row_limit in [f32::NEG_INFINITY, -1.0, 0.0, 1.0, 4.0, f32::INFINITY] {
                    let words = len.div_ceil(MASK_LANES);
                    let bits = |test: &dyn Fn(usize) -> bool| -> Vec<u16> {
                        (0..words)
                            .map(|g| {
                                (0..16)
                                    .filter(|&t| 16 * g + t < len && test(16 * g + t))
                                    .fold(0, |w, t| w | 1 << t)
                            })
                            .collect()
                    };
                    let want_rows = bits(&|j| keys[j] <= row_limit);
                    let want_cols = bits(&|j| keys[j] <= limits[j]);
                    let want_any = (
                        want_rows.iter().any(|&w| w != 0),
                        want_cols.iter().any(|&w| w != 0),
                    );
                    for portable in [false, true] {
                        let mut rows = vec![0xdead_u16; words];
                        let mut cols = vec![0xbeef_u16; words];
                        let args = (&products[..], (metric, fi, &fj[..]));
                        let row = (row_limit, &mut rows[..]);
                        let columns = Some((&limits[..], &mut cols[..]));
                        let any = if portable {
                            hits_at_or_below_portable(args.0, args.1, row, columns)
                        } else {
                            hits_at_or_below(args.0, args.1, row, columns)
                        };
                        // The rows' hits alone, the columns' slices not touched.
                        let mut alone = vec![0xdead_u16; words];
                        let row = (row_limit, &mut alone[..]);
                        let any_alone = if portable {
                            hits_at_or_below_portable(args.0, args.1, row, None)
                        } else {
                            hits_at_or_below(args.0, args.1, row, None)
                        };
                        let what = format!("{metric}, {len} keys, limit {row_limit}, {portable}");
                        assert_eq!(rows, want_rows, "{what}");
                        assert_eq!(cols, want_cols, "{what}");
                        assert_eq!(any, want_any, "{what}");
                        assert_eq!(alone, want_rows, "{what}");
                        assert_eq!(any_alone, (want_any.0, false), "{what}");
                    }
                }
            }
        }
    }

    proptest! {
        #[test]
        fn keeps_what_the_definition_keeps(
            keys in proptest::collection::vec(-4.0f32..4.0, 0..100),
            cut in -4.0f32..4.0,
            id0 in 0u32..1_000_000,
        ) {
            check(&keys, cut, id0);
            // Coarse keys, so that many equal the cut.
            let coarse: Vec<f32> = keys.iter().map(|x| x.round()).collect();
            check(&coarse, cut.round(), id0);
        }
    }
}
