//! Exact k-nearest-neighbour search, blockwise with a fused top-k.

use ndarray::{Array1, Array2, ArrayView1, ArrayView2, ArrayViewMut2, Axis, s};
use rayon::prelude::*;
use std::sync::{
    Mutex,
    atomic::{AtomicUsize, Ordering},
};

use crate::{
    Error, Metric, Result, check,
    gemm::gemm_nt,
    pairwise::{finish, gemm_alpha, row_factors},
    tile::{
        MASK_LANES, code, hits_at_or_below, keep_below, keep_strip_below, kept_ids, prefetch,
        prefetch_l2, prefetch_start, prefetch_write, transpose,
    },
};

/// Queries per block (one rayon task) for large `k`, and per block of the cut-offs' sample.
const QUERY_BLOCK: usize = 128;
/// Queries per block (one rayon task) for small `k`: with [`SCAN_REF_BLOCK`], a 1 MB tile (half a
/// core's L2 on the development machine). The GEMM library packs each call's references (and
/// queries), so a taller block packs each reference block fewer times: 128 × 1,024 tiles spent
/// a quarter of the samples of a 10,000 × 60,000 × 128 search packing; 512 × 512 took 12 % off
/// the search there and 17 % at 784 dimensions (10,000 × 35,000), 256 × 1,024, 512 × 1,024
/// and 1,024 × 512 no less (alternating processes).
const SCAN_QUERY_BLOCK: usize = 512;
/// Smallest query block for large `k`: still a reasonable GEMM shape.
const MIN_QUERY_BLOCK: usize = 16;
/// Most key entries one task holds for large `k` (rows × reference range): 4 Mi, 16 MiB.
const SELECT_TILE: usize = 1 << 22;
/// References per GEMM call for large `k` (its tiles span whole reference ranges), and the
/// unit of the reference ranges tasks take.
const REF_BLOCK: usize = 1024;
/// References per block for small `k`: a [`SCAN_QUERY_BLOCK`] × `SCAN_REF_BLOCK` f32 tile
/// stays in a core's L2 cache.
const SCAN_REF_BLOCK: usize = 512;
/// Whether a search for the `k` best of `n_refs` references keeps whole rows of keys and picks
/// the best `k` by bucket selection ([`select_sorted`]) rather than streaming them through a
/// sorted buffer ([`TopK`]). The buffer costs about `k · ln(n/k)` insertions of O(k) each on top
/// of one cheap pass, the selection about three passes over the row; measured on this project's
/// 2-core machine the two meet near `k² ≈ 4n` (k ≈ 370 for 35,000 references).
fn use_selection(k: usize, n_refs: usize) -> bool {
    k >= 64 && k.saturating_mul(k) >= 4 * n_refs
}

/// The `k` nearest references of each query, closest first.
///
/// `indices[[q, r]]` is the row (in the reference matrix) of the `r`-th neighbour of query `q`, and
/// `scores[[q, r]]` the metric's value for that pair: a distance for [`Metric::Euclidean`] and
/// [`Metric::SquaredEuclidean`] (ascending), a similarity for [`Metric::Cosine`] and
/// [`Metric::Dot`] (descending). Equal scores are ordered by the lower reference index.
#[derive(Debug, Clone, PartialEq)]
pub struct Neighbours {
    /// Reference rows, `n_queries × k`.
    pub indices: Array2<u32>,
    /// The metric's values for those pairs, `n_queries × k`.
    pub scores: Array2<f32>,
}

impl Neighbours {
    /// Number of queries.
    pub fn n_queries(&self) -> usize {
        self.indices.nrows()
    }

    /// Neighbours per query.
    pub fn k(&self) -> usize {
        self.indices.ncols()
    }
}

/// The exact `k` nearest rows of `reference` for each row of `query` under `metric`.
///
/// The values are those of [`crate::pairwise`] for the same inputs; the q×n matrix is never
/// materialised: queries and references are processed in cache-sized blocks through the GEMM,
/// with a bounded buffer of candidates per query (sorted for small `k`; for large `k` a block's
/// whole rows, each cut near its k-th key and radix-sorted, so the cost stays linear in the
/// references per query), so memory beyond the inputs and output is O(block · k) per thread.
///
/// # Errors
/// [`Error::DimensionMismatch`], [`Error::NonFinite`] (naming the matrix and row),
/// [`Error::InvalidK`] unless `1 <= k <= reference.nrows()`, [`Error::TooManyRows`] if the
/// reference has more rows than `u32` can index.
///
/// ```
/// use dml_kernels::{Metric, knn};
/// use ndarray::array;
///
/// let reference = array![[0.0_f32], [10.0], [2.0], [3.0]];
/// let nn = knn(Metric::Euclidean, array![[2.4_f32]].view(), reference.view(), 2)?;
/// assert_eq!(nn.indices, array![[2_u32, 3]]);
/// # Ok::<(), dml_kernels::Error>(())
/// ```
pub fn knn(
    metric: Metric,
    query: ArrayView2<'_, f32>,
    reference: ArrayView2<'_, f32>,
    k: usize,
) -> Result<Neighbours> {
    check::same_dim(query, "query", reference, "reference")?;
    check_k(k, reference.nrows())?;
    check_rows(reference, "reference")?;
    check::finite(query, "query")?;
    check::finite(reference, "reference")?;
    Ok(search(metric, query, reference, k, None))
}

/// The `k` nearest other rows of `points` for each row: every point is left out of its own
/// neighbours (by index, so duplicates of a point still count as neighbours).
///
/// # Errors
/// [`Error::NonFinite`], [`Error::InvalidK`] unless `1 <= k <= points.nrows() - 1`,
/// [`Error::TooManyRows`].
pub fn knn_self(metric: Metric, points: ArrayView2<'_, f32>, k: usize) -> Result<Neighbours> {
    check_k(k, points.nrows().saturating_sub(1))?;
    check_rows(points, "points")?;
    check::finite(points, "points")?;
    Ok(search_self(metric, points, k))
}

/// [`knn_self`] for the rows `rows` of `points` only: row `i` of the result holds the `k`
/// nearest other rows of `points` for point `rows.start + i`. Streams a large set through the
/// search block by block with the same answers as one [`knn_self`] call.
///
/// # Errors
/// As [`knn_self`], and [`Error::RowRange`] for a range outside `points`.
///
/// ```
/// use dml_kernels::{Metric, knn_self, knn_self_rows};
/// use ndarray::array;
///
/// let x = array![[0.0_f32], [1.0], [3.0], [7.0]];
/// let all = knn_self(Metric::Euclidean, x.view(), 2)?;
/// let some = knn_self_rows(Metric::Euclidean, x.view(), 2..4, 2)?;
/// assert_eq!(some.indices.row(0), all.indices.row(2));
/// assert_eq!(some.indices.row(1), all.indices.row(3));
/// # Ok::<(), dml_kernels::Error>(())
/// ```
pub fn knn_self_rows(
    metric: Metric,
    points: ArrayView2<'_, f32>,
    rows: std::ops::Range<usize>,
    k: usize,
) -> Result<Neighbours> {
    check_k(k, points.nrows().saturating_sub(1))?;
    if rows.start > rows.end || rows.end > points.nrows() {
        return Err(Error::RowRange {
            matrix: "points",
            start: rows.start,
            end: rows.end,
            rows: points.nrows(),
        });
    }
    check_rows(points, "points")?;
    check::finite(points, "points")?;
    if rows == (0..points.nrows()) {
        return Ok(search_self(metric, points, k));
    }
    let query = points.slice(s![rows.clone(), ..]);
    Ok(search(metric, query, points, k, Some(rows.start)))
}

fn check_k(k: usize, available: usize) -> Result<()> {
    if k == 0 || k > available {
        Err(Error::InvalidK { k, available })
    } else {
        Ok(())
    }
}

fn check_rows(x: ArrayView2<'_, f32>, matrix: &'static str) -> Result<()> {
    let max = u32::MAX as usize;
    if x.nrows() > max {
        Err(Error::TooManyRows {
            matrix,
            rows: x.nrows(),
            max,
        })
    } else {
        Ok(())
    }
}

/// A sorted buffer of the best `k` (key, index) pairs seen so far; smaller keys are better.
/// Insertion shifts the tail, so it serves small `k` (see [`use_selection`]).
struct TopK<'a> {
    keys: &'a mut [f32],
    idx: &'a mut [u32],
    len: usize,
}

impl TopK<'_> {
    /// Inserts after every equal key, so that with candidates offered in increasing index order
    /// equal keys keep the lower index first. The caller has checked that the buffer is not full
    /// or that `key` is below its worst key.
    #[inline]
    fn push(&mut self, key: f32, id: u32) {
        let k = self.keys.len();
        let pos = self.keys[..self.len].partition_point(|&x| x <= key);
        if self.len < k {
            self.len += 1;
        }
        let end = self.len - 1;
        if pos < k {
            self.keys.copy_within(pos..end, pos + 1);
            self.idx.copy_within(pos..end, pos + 1);
            self.keys[pos] = key;
            self.idx[pos] = id;
        }
    }
}

impl TopK<'_> {
    /// Offers one candidate: candidates come in increasing index order, so a key equal to the
    /// worst kept loses.
    #[inline]
    fn offer(&mut self, key: f32, id: u32) {
        if self.len < self.keys.len() || key < self.keys[self.len - 1] {
            self.push(key, id);
        }
    }
}

/// Keys sampled from a row to estimate the cut-off of its best `k` ([`select_sorted`]).
const SAMPLE: usize = 2048;

/// Scratch space of [`select_sorted`], reused across the rows of a task.
#[derive(Default)]
struct SelectScratch {
    sample: Vec<f32>,
    codes: Vec<u64>,
    spare: Vec<u64>,
}

/// The best `k` of one full row of keys (references `r0..r0 + keys.len()`, `skip` left out),
/// sorted by key then index, into `out_keys`/`out_idx`; returns how many (fewer than `k` only
/// when the row has fewer candidates).
///
/// O(row + k): a cut-off a little above the k-th key is estimated from an evenly strided
/// sample of the row; one branch-free pass keeps the keys at or below it (packed with their
/// index, see [`code`]); if fewer than `k` survive (the estimate is a guess, not a bound), the
/// pass is repeated keeping everything. The survivors are radix-sorted and the first `k` kept.
/// The estimate only decides the speed, never the result.
fn select_sorted(
    keys: &[f32],
    r0: usize,
    skip: usize,
    k: usize,
    scratch: &mut SelectScratch,
    out_keys: &mut [f32],
    out_idx: &mut [u32],
) -> usize {
    let n = keys.len();
    let skip = skip.wrapping_sub(r0); // out of range (never equal to a j < n) when not in it
    let available = n - usize::from(skip < n);
    let k = k.min(available);
    if k == 0 {
        return 0;
    }
    let mut cut = f32::INFINITY;
    if n > 4 * SAMPLE && 4 * k < n {
        let sample = &mut scratch.sample;
        sample.clear();
        sample.extend(keys.iter().step_by(n / SAMPLE).copied());
        let m = sample.len() as f64;
        // The sample's expected rank of the k-th key, plus 10 % and three standard deviations.
        let expected = k as f64 * m / n as f64;
        let rank = (1.1 * expected + 3.0 * expected.sqrt() + 2.0) as usize;
        if rank < sample.len() {
            let (_, &mut c, _) = sample.select_nth_unstable_by(rank, f32::total_cmp);
            cut = c;
        }
    }
    let codes = &mut scratch.codes;
    if codes.len() < n {
        codes.resize(n, 0);
    }
    let kept = loop {
        let mut kept = 0;
        for (j, &x) in keys.iter().enumerate() {
            codes[kept] = code(x, (r0 + j) as u32);
            kept += usize::from((x <= cut) & (j != skip));
        }
        if kept >= k || cut == f32::INFINITY {
            break kept;
        }
        cut = f32::INFINITY;
    };
    // The survivors are in index order, so a stable sort by key alone orders them by key, then
    // index.
    let sorted = radix_sort_by_key(&mut codes[..kept], &mut scratch.spare);
    decode_into(&sorted[..k], out_keys, out_idx);
    k
}

/// Unpacks [`code`]s into keys and indices.
fn decode_into(codes: &[u64], keys: &mut [f32], idx: &mut [u32]) {
    for ((&c, key), id) in codes.iter().zip(keys.iter_mut()).zip(idx.iter_mut()) {
        *key = decode_key(c);
        *id = c as u32;
    }
}

/// Sorts codes by their key (upper 32 bits), stably: least-significant-digit radix sort, one
/// byte per pass, skipping a byte all codes share. Returns whichever of `codes` and `spare`
/// holds the result.
fn radix_sort_by_key<'a>(codes: &'a mut [u64], spare: &'a mut Vec<u64>) -> &'a [u64] {
    let n = codes.len();
    if spare.len() < n {
        spare.resize(n, 0);
    }
    let mut counts = [[0u32; 256]; 4];
    for &c in codes.iter() {
        for (p, count) in counts.iter_mut().enumerate() {
            count[((c >> (32 + 8 * p)) & 0xff) as usize] += 1;
        }
    }
    let (mut src, mut dst): (&mut [u64], &mut [u64]) = (codes, &mut spare[..n]);
    for (p, count) in counts.iter_mut().enumerate() {
        if count.iter().any(|&c| c as usize == n) {
            continue;
        }
        let mut offset = 0u32;
        for c in count.iter_mut() {
            let here = *c;
            *c = offset;
            offset += here;
        }
        for &c in src.iter() {
            let slot = &mut count[((c >> (32 + 8 * p)) & 0xff) as usize];
            dst[*slot as usize] = c;
            *slot += 1;
        }
        std::mem::swap(&mut src, &mut dst);
    }
    src
}

/// The key of a [`code`] (`0.0` for a zero key).
#[inline]
fn decode_key(c: u64) -> f32 {
    let ordered = (c >> 32) as u32;
    let mask = if ordered >> 31 == 1 {
        0x8000_0000
    } else {
        u32::MAX
    };
    f32::from_bits(ordered ^ mask)
}

/// Offers one row of a tile's products (`products`, references `r0..`, with the metric and the
/// row's and the references' [`row_factors`]; `skip` left out) to a query's candidates, in
/// index order. While the buffer holds fewer than `k`, sixteen keys at a time are each offered.
/// Then the rest's keys are made and compared with the worst kept sixteen at a time
/// ([`hits_at_or_below`], masks in `hits`; in a query's first block, in parts that double, so
/// that the worst kept compared with keeps up with the buffer), and only those at or below are
/// made again (the same bits, by [`finish`]) and offered; the buffer decides.
///
/// Offered 16 keys at a time after a chunk's minimum, folded one key after another, a row cost
/// about four cycles a key, as much as the GEMM's own time per key at 128 dimensions, and the
/// keys were written back by a pass of their own. Compared with `+inf` until full, the first
/// block of a k-means assignment against 1,000 centres offered every key: half of them.
#[inline]
fn offer_products(
    top: &mut TopK<'_>,
    (products, (metric, fi, fj)): (&[f32], (Metric, f32, &[f32])),
    r0: usize,
    skip: usize,
    hits: &mut Vec<u16>,
) {
    let key = |j: usize| finish(metric, products[j], fi, fj[j]);
    let n = products.len();
    let first = top.len < top.keys.len();
    let mut start = 0;
    while top.len < top.keys.len() && start < n {
        let end = (start + MASK_LANES).min(n);
        for j in (start..end).filter(|&j| r0 + j != skip) {
            top.offer(key(j), (r0 + j) as u32);
        }
        start = end;
    }
    while start < n {
        // A query's first block: its worst kept falls fast, so the rest goes in parts as long as
        // what came before (each part's hits then number about k); later blocks in one part.
        let end = if first { (2 * start).min(n) } else { n };
        let part = &products[start..end];
        hits.resize(part.len().div_ceil(MASK_LANES), 0);
        let limit = top.keys[top.len - 1];
        let (any, _) = hits_at_or_below(part, (metric, fi, &fj[start..end]), (limit, hits), None);
        if any {
            for_each_hit(hits, |j| {
                let j = start + j;
                if r0 + j != skip {
                    top.offer(key(j), (r0 + j) as u32);
                }
            });
        }
        start = end;
    }
}

/// Rows and columns of a tile of the symmetric leave-one-out search.
const SYM_TILE: usize = 512;

/// Leave-one-out search of a whole set: by symmetry when that pays ([`search_symmetric`]),
/// else the general search with each point left out of its own list.
fn search_self(metric: Metric, points: ArrayView2<'_, f32>, k: usize) -> Neighbours {
    let n = points.nrows();
    if n >= 2 * SYM_TILE && !use_selection(k, n) {
        search_symmetric(metric, points, k)
    } else {
        search(metric, points, points, k, Some(0))
    }
}

/// A sorted buffer like [`TopK`] for candidates offered in any order: it keeps [`code`]s (key
/// and index in one `u64`), so it orders by key, then index, whatever the order of the offers,
/// with integer comparisons.
struct TopKAnyOrder<'a> {
    codes: &'a mut [u64],
    len: &'a mut usize,
}

impl TopKAnyOrder<'_> {
    /// The largest key that may still enter: the worst kept (an equal key may enter by a lower
    /// index, since candidates come in any order), `+inf` while fewer than `k` are kept.
    #[inline]
    fn limit(&self) -> f32 {
        if *self.len < self.codes.len() {
            f32::INFINITY
        } else {
            decode_key(self.codes[*self.len - 1])
        }
    }

    /// Offers one candidate; the buffer decides.
    #[inline]
    fn offer(&mut self, key: f32, id: u32) {
        let k = self.codes.len();
        let c = code(key, id);
        let len = *self.len;
        if len == k && c >= self.codes[k - 1] {
            return;
        }
        let pos = self.codes[..len].partition_point(|&x| x < c);
        let end = len.min(k - 1);
        *self.len = end + 1;
        self.codes.copy_within(pos..end, pos + 1);
        self.codes[pos] = c;
    }
}

/// A worker's room for [`offer_tile`]: the columns' limits and one row's hits.
#[derive(Default)]
struct OfferScratch {
    col_limits: Vec<f32>,
    row_hits: Vec<u16>,
    col_hits: Vec<u16>,
}

/// A tile of the symmetric search before its keys are made: the GEMM's products of its rows
/// and columns (row-major, `gemm_alpha · a·b`), the metric, and for its rows and its columns
/// the first point and the points' [`row_factors`].
struct Products<'a> {
    products: &'a [f32],
    metric: Metric,
    rows: (usize, &'a [f32]),
    cols: (usize, &'a [f32]),
}

/// Offers a tile of the symmetric search to its rows' queries (`rows_buf`) and, off the
/// diagonal, to its columns' (`cols_buf`), reading its products once in their own order and
/// never writing its keys out: each row's keys are made and compared with the worst key kept by
/// the row's query and by each column's (`+inf` while a query holds fewer than `k`), sixteen at
/// a time ([`hits_at_or_below`]), and only the keys at or below are made again (the same bits,
/// by [`finish`]) and offered. A key above the worst kept cannot enter, one equal to it may (by
/// a lower index), and the buffer decides, so the answers are those of offering every key. On
/// the diagonal (`cols_buf` `None`, the same points both ways) each row leaves out its own
/// point and the columns are not offered: the rows see every pair.
fn offer_tile(
    k: usize,
    tile: &Products<'_>,
    (rows_buf, mut cols_buf): (&mut BlockBuffers, Option<&mut BlockBuffers>),
    scratch: &mut OfferScratch,
) {
    let Products {
        products,
        metric,
        rows: (r0, fa),
        cols: (c0, fb),
    } = *tile;
    let cols = fb.len();
    let words = cols.div_ceil(MASK_LANES);
    let OfferScratch {
        col_limits,
        row_hits,
        col_hits,
    } = scratch;
    col_limits.clear();
    if let Some(buf) = cols_buf.as_deref_mut() {
        col_limits.extend((0..cols).map(|j| buf.query(k, j).limit()));
    }
    row_hits.resize(words, 0);
    col_hits.resize(words, 0);
    let diagonal = cols_buf.is_none();
    for (i, (row, &fi)) in products.chunks(cols).zip(fa).enumerate() {
        let mut top = rows_buf.query(k, i);
        let columns = (!diagonal).then_some((&col_limits[..], &mut col_hits[..]));
        let (any_row, any_col) =
            hits_at_or_below(row, (metric, fi, fb), (top.limit(), row_hits), columns);
        let key = |j: usize| finish(metric, row[j], fi, fb[j]);
        let own = if diagonal { i } else { usize::MAX };
        if any_row {
            for_each_hit(row_hits, |j| {
                if j != own {
                    top.offer(key(j), (c0 + j) as u32);
                }
            });
        }
        if let Some(buf) = cols_buf.as_deref_mut().filter(|_| any_col) {
            for_each_hit(col_hits, |j| {
                let mut top = buf.query(k, j);
                top.offer(key(j), (r0 + i) as u32);
                col_limits[j] = top.limit();
            });
        }
    }
}

/// Calls `f(16·g + t)` for each bit `t` set in `words[g]`, in order.
#[inline]
fn for_each_hit(words: &[u16], mut f: impl FnMut(usize)) {
    for (g, &word) in words.iter().enumerate() {
        let mut left = word;
        while left != 0 {
            f(g * MASK_LANES + left.trailing_zeros() as usize);
            left &= left - 1;
        }
    }
}

/// One block of queries' candidate buffers in the symmetric search.
struct BlockBuffers {
    codes: Vec<u64>,
    lens: Vec<usize>,
}

impl BlockBuffers {
    /// Query `j`'s buffer (of `k` codes).
    fn query(&mut self, k: usize, j: usize) -> TopKAnyOrder<'_> {
        TopKAnyOrder {
            codes: &mut self.codes[j * k..(j + 1) * k],
            len: &mut self.lens[j],
        }
    }
}

/// Leave-one-out k-NN of a whole set through its symmetry: only the tiles on and above the
/// diagonal are computed, and each tile feeds both its rows' queries and its columns' queries
/// in one read ([`offer_tile`]), half the GEMM work of [`search`]. The distance of a pair is the
/// same bits whichever of its two points asks (the dot product sums the same terms in the same
/// order, the norms add commutatively), and the buffers order by key then index whatever the
/// order of the offers, so the result equals [`search`]'s.
fn search_symmetric(metric: Metric, points: ArrayView2<'_, f32>, k: usize) -> Neighbours {
    let n = points.nrows();
    let f = row_factors(metric, points);
    let nb = n.div_ceil(SYM_TILE);
    let blocks: Vec<std::sync::Mutex<BlockBuffers>> = (0..nb)
        .map(|b| {
            let rows = (n - b * SYM_TILE).min(SYM_TILE);
            std::sync::Mutex::new(BlockBuffers {
                codes: vec![0; rows * k],
                lens: vec![0; rows],
            })
        })
        .collect();
    let tiles: Vec<(usize, usize)> = (0..nb).flat_map(|i| (i..nb).map(move |j| (i, j))).collect();
    let f = factors(&f);
    tiles.par_iter().for_each_init(
        || (Vec::<f32>::new(), OfferScratch::default()),
        |(tile, scratch), &(bi, bj)| {
            let (r0, r1) = (bi * SYM_TILE, ((bi + 1) * SYM_TILE).min(n));
            let (c0, c1) = (bj * SYM_TILE, ((bj + 1) * SYM_TILE).min(n));
            let (rows, cols) = (r1 - r0, c1 - c0);
            let t = tile_view(tile, rows, cols);
            gemm_nt(
                gemm_alpha(metric, -1.0),
                points.slice(s![r0..r1, ..]),
                points.slice(s![c0..c1, ..]),
                t,
            );
            let tile = Products {
                products: &tile[..rows * cols],
                metric,
                rows: (r0, &f[r0..r1]),
                cols: (c0, &f[c0..c1]),
            };
            // Row block first, then column block: every worker locks in the same order.
            let mut row_buf = blocks[bi].lock().unwrap_or_else(|e| e.into_inner());
            if bi == bj {
                offer_tile(k, &tile, (&mut row_buf, None), scratch);
            } else {
                let mut col_buf = blocks[bj].lock().unwrap_or_else(|e| e.into_inner());
                offer_tile(k, &tile, (&mut row_buf, Some(&mut col_buf)), scratch);
            }
        },
    );
    let mut indices = Array2::<u32>::zeros((n, k));
    let mut scores = Array2::<f32>::zeros((n, k));
    indices
        .axis_chunks_iter_mut(Axis(0), SYM_TILE)
        .into_par_iter()
        .zip(scores.axis_chunks_iter_mut(Axis(0), SYM_TILE))
        .zip(blocks.into_par_iter())
        .for_each(|((mut idx, mut sc), block)| {
            let block = block.into_inner().unwrap_or_else(|e| e.into_inner());
            let (Some(idx), Some(sc)) = (idx.as_slice_mut(), sc.as_slice_mut()) else {
                unreachable!("row blocks of a fresh array are contiguous")
            };
            decode_into(&block.codes, sc, idx);
            for (keys, ids) in sc.chunks_mut(k).zip(idx.chunks_mut(k)) {
                keys_to_scores(metric, keys, ids);
            }
        });
    Neighbours { indices, scores }
}

/// Columns sampled per row to estimate the cut-off of its best `k` in the large-k symmetric
/// search ([`knn_self_blocks`]).
const CUT_SAMPLE: usize = 1024;
/// Standard deviations of margin above the sample's expected rank of the k-th key (of the
/// binomial count of sampled keys at or below it; `√(m·q)` before, which overstates the spread
/// by `1/√(1 − q)`, 12 % at q = k/n = 0.2, and cost as many surplus candidates): a row whose
/// cut-off still falls below its k-th key (about one row in a thousand) is searched again.
const CUT_SIGMAS: f64 = 3.0;

/// Calls `on_block(start, neighbours)` with the [`knn_self`] lists of consecutive blocks of rows
/// of `points`, in order (`start` the block's first row; every block but the last has the same
/// number of rows, a multiple of 64); together they are exactly one [`knn_self`] call's answer.
/// The lists are lent: their buffers are reused for the next block (fresh pages for each block
/// would cost the kernel more than the sorting of their lists).
///
/// For a large `k` (at least 64, with `k² ≥ n/4`) on a set of `n` ≥ 1,024 rows of dimension
/// 512 or more (where the GEMM is most of the cost) it selects from whole rows and takes the
/// symmetry of the distances: every tile of
/// the distance matrix on or above the diagonal is computed once and feeds both its rows and
/// its columns, half the GEMM work of [`knn_self_rows`] over the same rows. The price is memory:
/// each row's candidates at or below a cut-off estimated from a sample of the columns are held
/// until every tile touching its block is done (the tiles go row of tiles by row of tiles, and
/// each block is handed out as soon as its own tile row is done), about 0.6 GB for 35,000 rows
/// and k = 6,999 when a row's neighbours are spread over the set, at most
/// [`knn_self_blocks_memory`] bytes (all lists at once, 1.7 GB there); stream
/// [`knn_self_rows`] over blocks instead for bounded memory. Otherwise a large `k` goes block
/// by block through the general search (as [`knn_self_rows`], bounded memory) and a small `k`
/// is one [`knn_self`] call handed out in blocks.
///
/// # Errors
/// As [`knn_self`].
///
/// ```
/// use dml_kernels::{Metric, knn_self, knn_self_blocks};
/// use ndarray::array;
///
/// let x = array![[0.0_f32], [1.0], [3.0], [7.0]];
/// let mut rows = Vec::new();
/// knn_self_blocks(Metric::Euclidean, x.view(), 2, &mut |_, nn| {
///     rows.extend(nn.indices.outer_iter().map(|r| r.to_vec()));
/// })?;
/// let all = knn_self(Metric::Euclidean, x.view(), 2)?;
/// assert_eq!(rows, all.indices.outer_iter().map(|r| r.to_vec()).collect::<Vec<_>>());
/// # Ok::<(), dml_kernels::Error>(())
/// ```
pub fn knn_self_blocks(
    metric: Metric,
    points: ArrayView2<'_, f32>,
    k: usize,
    on_block: &mut dyn FnMut(usize, &Neighbours),
) -> Result<()> {
    check_k(k, points.nrows().saturating_sub(1))?;
    check_rows(points, "points")?;
    check::finite(points, "points")?;
    if uses_symmetric_selection(points.nrows(), k) {
        symmetric_blocks(metric, points, k, CUT_SIGMAS, on_block);
    } else {
        general_blocks(metric, points, k, on_block);
    }
    Ok(())
}

/// [`knn_self_blocks`] where it does not take the symmetry.
fn general_blocks(
    metric: Metric,
    points: ArrayView2<'_, f32>,
    k: usize,
    on_block: &mut dyn FnMut(usize, &Neighbours),
) {
    let n = points.nrows();
    if use_selection(k, n) {
        // Large k, low dimension: block by block through the general search.
        for start in (0..n).step_by(SYM_TILE) {
            let end = (start + SYM_TILE).min(n);
            let rows = points.slice(s![start..end, ..]);
            on_block(start, &search(metric, rows, points, k, Some(start)));
        }
    } else {
        let nn = search_self(metric, points, k);
        for start in (0..n).step_by(SYM_TILE) {
            let end = (start + SYM_TILE).min(n);
            on_block(
                start,
                &Neighbours {
                    indices: nn.indices.slice(s![start..end, ..]).to_owned(),
                    scores: nn.scores.slice(s![start..end, ..]).to_owned(),
                },
            );
        }
    }
}

/// Folds the [`knn_self`] neighbour indices of every row of `points` into per-chunk states on
/// rayon's workers, for consumers that need each row's order of neighbours but not their
/// scores (rank-based retrieval metrics): the rows are cut into chunks of `chunk` consecutive
/// rows (starting at multiples of `chunk`); each chunk's state is made by `init` and given
/// its rows in order by `add(state, row, indices)`, `indices` the row's `k` nearest other
/// rows, closest first (row `row` of one [`knn_self`] call). On the calling thread,
/// `on_chunks(done, states)` then receives the states of the next finished chunks in order,
/// every row before `done` folded.
///
/// The search is [`knn_self_blocks`]'s. Where it takes the symmetry, each row is folded right
/// after its candidates are sorted, on the worker that sorted them, beside the GEMM of the
/// next tile row, so no block of neighbour lists or scores is written and read back; and the
/// search takes the 1,024 rows that sample each row's cut-off first, so their rows of tiles
/// serve both the cut-offs and the search (no GEMM of the cut-offs' own). Their neighbours are
/// kept until their chunks come (so `on_chunks` is first called once the 1,024 rows and the
/// next block are done), and a copy of the points in that order is held:
/// [`knn_self_fold_memory`] bounds what it holds.
///
/// With the same chunks, states and `add`, the states are the same whatever the thread count,
/// which is what deterministic sums need (add in chunks, merge the chunks in order).
///
/// # Errors
/// As [`knn_self`], and [`Error::ZeroChunk`] for `chunk = 0`.
///
/// ```
/// use dml_kernels::{Metric, knn_self, knn_self_fold};
/// use ndarray::array;
///
/// let x = array![[0.0_f32], [1.0], [3.0], [7.0], [8.0]];
/// // The nearest neighbour of each row, chunk by chunk of two rows.
/// let mut chunks = Vec::new();
/// knn_self_fold(
///     Metric::Euclidean,
///     x.view(),
///     2,
///     2,
///     &Vec::new,
///     &|firsts: &mut Vec<u32>, _row, nn| firsts.push(nn[0]),
///     &mut |_done, states| chunks.extend(states),
/// )?;
/// assert_eq!(chunks, vec![vec![1, 0], vec![1, 4], vec![3]]);
/// # Ok::<(), dml_kernels::Error>(())
/// ```
pub fn knn_self_fold<T: Send>(
    metric: Metric,
    points: ArrayView2<'_, f32>,
    k: usize,
    chunk: usize,
    init: &(dyn Fn() -> T + Sync),
    add: &(dyn Fn(&mut T, usize, &[u32]) + Sync),
    on_chunks: &mut dyn FnMut(usize, Vec<T>),
) -> Result<()> {
    if chunk == 0 {
        return Err(Error::ZeroChunk);
    }
    check_k(k, points.nrows().saturating_sub(1))?;
    check_rows(points, "points")?;
    check::finite(points, "points")?;
    let n = points.nrows();
    if uses_symmetric_selection(n, k) {
        symmetric_fold(metric, points, k, CUT_SIGMAS, chunk, init, add, on_chunks);
    } else {
        let mut carry = None;
        general_blocks(metric, points, k, &mut |start, nn| {
            let rows = nn.n_queries();
            let fill = |_: &mut (), i: usize, idx: &mut Vec<u32>| idx.extend(nn.indices.row(i));
            let states = fold_chunks(
                (n, start, rows, chunk),
                &mut carry,
                (init, add),
                &|| (),
                &fill,
            );
            on_chunks(start + rows, states);
        });
    }
    Ok(())
}

/// Bytes [`knn_self_blocks`] may hold beyond its inputs and one block's output when it takes
/// the symmetry of a large-k search of `n` rows (of any dimension), or `None` when it does not
/// (`k` under 64 or with `k² < n/4`, or a set under 1,024 rows).
///
/// A bound, whatever the order of the rows: every row's candidate list at once (each row's
/// expected candidates with the sampling margin and 10 % slack, 4 bytes each, a bit for every
/// key offered and a header per tile, plus one partly filled chunk of each kind per list),
/// 1.7 GB for 35,000 rows and k = 6,999 (2.9 GB with the 8-byte codes the lists held before).
/// What is held in practice is
/// less, since a block's lists are freed and reused as soon as its own row of tiles is done:
/// with a row's neighbours spread over the set, about 0.3–0.4 of the bound at the worst step
/// (about 0.6 GB there; the evaluation through [`knn_self_fold`] adds 407 MiB to the process
/// on clustered points stored class by class and 567 MiB on raw Fashion-MNIST images,
/// measured); only a set ordered so
/// that every row's neighbours come first in it reaches the bound.
pub fn knn_self_blocks_memory(n: usize, k: usize) -> Option<usize> {
    uses_symmetric_selection(n, k).then(|| {
        let workers = rayon::current_num_threads().max(1);
        let lists = n + 2 * workers * SYM_TILE;
        // A row's mask words: one per 16 keys of each run (a tile's row, two on the diagonal),
        // a header per run, and up to a run's words left unused at the end of each chunk.
        let runs = n.div_ceil(SYM_TILE) + 1;
        let words = (n / MASK_LANES + runs * (1 + RUN_HEADER)) * MASK_CHUNK
            / (MASK_CHUNK - RUN_HEADER - RUN_KEYS / MASK_LANES);
        n.saturating_mul(row_capacity(n, k, CUT_SIGMAS) * 4 + words * 2)
            .saturating_add(lists.saturating_mul(LIST_CHUNK * 4 + MASK_CHUNK * 2))
    })
}

/// Bytes [`knn_self_fold`] may hold beyond its inputs when it takes the symmetry (`None` when
/// it does not): [`knn_self_blocks_memory`]'s bound on the candidate lists, plus a copy of the
/// points in the search's order (the cut-offs' 1,024 sample rows first, `4·n·d` bytes), the
/// sample's two rows of tiles, kept from the cut-offs until filtered (`4·1,024·n`), and the
/// sample rows' neighbours, kept until their chunks are folded (`4·1,024·k`): 281 MB more for
/// 35,000 rows of 784 dimensions and k = 6,999.
pub fn knn_self_fold_memory(n: usize, d: usize, k: usize) -> Option<usize> {
    knn_self_blocks_memory(n, k).map(|lists| {
        let extra = n
            .saturating_mul(d)
            .saturating_add(CUT_SAMPLE.saturating_mul(n.saturating_add(k)))
            .saturating_mul(4);
        lists.saturating_add(extra)
    })
}

/// Candidate entries the large-k symmetric search ([`search_symmetric_select`]) is expected to
/// hold at its peak: while tile row `s` runs, block `s - 1` is being sorted with all its
/// candidates, block `s` is filling, and every later block holds its candidates from the
/// columns of blocks `0..=s` (a share `(s + 1) · 512 / n` of them when a row's candidates are
/// spread evenly over the set); plus one chunk per list (the last one partly filled): the
/// later blocks' lists and `workers` sets of row lists for each of the two blocks in hand.
#[cfg(test)]
fn symmetric_peak_entries(n: usize, k: usize, sigmas: f64, workers: usize) -> usize {
    let per_row = row_capacity(n, k, sigmas) as f64;
    let nb = n.div_ceil(SYM_TILE);
    let rows = |b: usize| (n - b * SYM_TILE).min(SYM_TILE) as f64;
    let peak_rows = (0..=nb)
        .map(|s| {
            let sorting = s.checked_sub(1).map_or(0.0, rows);
            let filling = if s < nb { rows(s) } else { 0.0 };
            let share = (((s + 1) * SYM_TILE) as f64 / n as f64).min(1.0);
            let later: f64 = (s + 1..nb).map(|j| rows(j) * share).sum();
            sorting + filling + later
        })
        .fold(0.0, f64::max);
    let lists = n + 2 * workers * SYM_TILE;
    (peak_rows * per_row) as usize + lists * LIST_CHUNK
}

/// Whether a leave-one-out search of `n` rows for `k` neighbours takes the symmetric selection
/// ([`knn_self_blocks`], [`knn_self_fold`]): 1,024 rows or more and `k` of at least 64 with
/// `k² ≥ n/4`, at any dimension. That is a lower bar than the general search's `k² ≥ 4n`
/// ([`use_selection`]): the symmetric small-k search inserts each candidate into a sorted buffer
/// (`k · ln(n/k)` insertions of O(k) a query), the selection filters every key once and sorts a
/// few hundred candidates a row. Measured on 35,000 clustered points at 784-d (`eval_vs_gemm`,
/// the evaluation ÷ the bare half GEMM): k = 32, 50 and 64 took 1.15–1.17 by buffers against
/// 1.23–1.28 by selection, k = 99 1.30 against 1.26, k = 199 1.56 against 1.23 and k = 299 1.80
/// against 1.24; at 512-d, k = 99 took 3.17 s against 3.01 s and k = 149 3.53 s against 3.06 s.
///
/// It once also needed 512 dimensions (at 64-d and k = 6,999 it had taken 12 s against the
/// streamed search's 9.5 s, on a loaded machine). Since the selection reads each tile once, it
/// is the fastest at every dimension measured (2026-12-06, `eval_vs_gemm`, two rounds each,
/// 35,000 clustered points unless said): k = 6,999 at 64-d 2.3 s against 4.1–4.3 s streamed,
/// at 128-d 2.8 s against 5.2–5.4 s; k = 199 at 8-d 0.8 s against 2.1 s, at 32-d 0.9 s
/// against 2.2 s, at 64-d 1.05 s against 2.3 s, at 128-d 1.4–1.6 s against 2.6–2.8 s (buffers),
/// at 256-d 2.0 s against 3.1 s; k = 299 and 373 at 128-d 1.4 s against 3.6–4.2 s; k = 99 at
/// 128-d 1.35 s against 1.5 s, and on 10,000 points 0.20 s against 0.24–0.26 s. The price is
/// memory (the candidate lists, a copy of the points, the sample's tile rows): 317 MB peak
/// against 80 MB at 64-d and k = 6,999, 90 MB against 30 MB on the 10,000 points, which
/// [`knn_self_fold_memory`] bounds for the caller. Below `k² ≥ n/4` it gains nothing: k = 99 on
/// 100,000 points at 128-d took 8.8–9.1 s either way, with 935 MB against 220 MB.
fn uses_symmetric_selection(n: usize, k: usize) -> bool {
    n >= 2 * SYM_TILE && k < n && k >= 64 && k.saturating_mul(k) >= n / 4
}

/// The sample's rank (0-based) of a row's cut-off, or `None` for no cut-off (keep everything).
fn cut_rank(n: usize, k: usize, sigmas: f64) -> Option<usize> {
    let m = CUT_SAMPLE.min(n);
    // Of m sampled keys, the number at or below the row's k-th is binomial (m, q).
    let q = k as f64 / (n - 1) as f64;
    let expected = q * m as f64;
    let rank = (expected + sigmas * (expected * (1.0 - q)).sqrt() + 2.0).max(0.0) as usize;
    // One sample key may be the row's own (left out as +inf).
    (rank + 1 < m).then_some(rank)
}

/// Candidates expected per row: those at or below the cut-off, plus 10 %.
fn row_capacity(n: usize, k: usize, sigmas: f64) -> usize {
    match cut_rank(n, k, sigmas) {
        Some(r) => (((r + 1) as f64 * n as f64 / CUT_SAMPLE.min(n) as f64) * 1.1) as usize + 16,
        None => n,
    }
    .min(n)
}

/// The order in which [`search_symmetric_select`] takes a set, and where its cut-offs come
/// from.
struct Layout<'a> {
    /// The points in the search's order (its "positions").
    points: ndarray::CowArray<'a, f32, ndarray::Ix2>,
    /// The index each position stands for, which the candidates' codes carry (so ties are
    /// broken, and neighbours named, by it).
    ids: Vec<u32>,
    /// Whether the first [`CUT_SAMPLE`] positions are the cut-offs' sample: their two tile
    /// rows, computed first and kept, give every row's keys to the sample
    /// ([`sample_tile_rows`]) and are then filtered as any other, so the cut-offs cost no GEMM
    /// of their own. Otherwise [`cut_offs`] samples the rows with a stride.
    sample_first: bool,
}

impl<'a> Layout<'a> {
    /// The set as it is, cut-offs by [`cut_offs`].
    fn as_given(points: ArrayView2<'a, f32>) -> Self {
        Layout {
            ids: (0..points.nrows() as u32).collect(),
            points: points.into(),
            sample_first: false,
        }
    }

    /// [`cut_offs`]' strided sample first, then the other rows in order (a copy of the
    /// points).
    fn sample_first(points: ArrayView2<'a, f32>) -> Self {
        let n = points.nrows();
        let step = n / CUT_SAMPLE;
        let order: Vec<usize> = (0..CUT_SAMPLE)
            .map(|t| t * step)
            .chain((0..n).filter(|&r| !is_sampled(r, step)))
            .collect();
        // Copied in parallel: 110 MB for 35,000 rows of 784 dimensions.
        let mut copy = Array2::zeros(points.dim());
        copy.axis_iter_mut(Axis(0))
            .into_par_iter()
            .zip(&order)
            .for_each(|(mut row, &r)| row.assign(&points.row(r)));
        Layout {
            points: copy.into(),
            ids: order.iter().map(|&r| r as u32).collect(),
            sample_first: true,
        }
    }
}

/// A row's cut-off from its keys to the cut-offs' sample (`keys`, one per sample row, `own`
/// the row's own place among them if it is a sample row, left out as `+inf`): the key of rank
/// `rank` ([`cut_rank`]).
fn cut_from_sample(keys: &mut [f32], own: Option<usize>, rank: usize) -> f32 {
    if let Some(own) = own {
        keys[own] = f32::INFINITY;
    }
    let (_, &mut c, _) = keys.select_nth_unstable_by(rank, f32::total_cmp);
    c
}

/// Whether row `r` is one of [`cut_offs`]' sample rows (every `step`-th, [`CUT_SAMPLE`] of
/// them).
fn is_sampled(r: usize, step: usize) -> bool {
    r.is_multiple_of(step) && r / step < CUT_SAMPLE
}

// The cut-offs' sample is the first two blocks of a sample-first layout.
const _: () = assert!(CUT_SAMPLE == 2 * SYM_TILE);

/// Tiles of the first rows of tiles, `[s][bj]` tile `(s, bj)`, each taken once filtered.
type TileRows = Vec<Vec<Mutex<Vec<f32>>>>;

/// The first two tile rows of a [`Layout::sample_first`] set (its [`CUT_SAMPLE`] = 2 ×
/// [`SYM_TILE`] sample rows against every column, on and above the diagonal: `[s][bj]` tile
/// `(s, bj)`, empty left of the diagonal), and every row's cut-off from them: as [`cut_offs`],
/// the key of rank [`cut_rank`] among its keys to the sample (its own left out), read down the
/// tiles' columns.
fn sample_tile_rows(
    metric: Metric,
    points: ArrayView2<'_, f32>,
    f: &Array1<f32>,
    k: usize,
    sigmas: f64,
) -> (Vec<f32>, TileRows) {
    const SAMPLE_BLOCKS: usize = CUT_SAMPLE / SYM_TILE;
    let n = points.nrows();
    debug_assert!(n >= CUT_SAMPLE);
    let nb = n.div_ceil(SYM_TILE);
    let block = |b: usize| b * SYM_TILE..((b + 1) * SYM_TILE).min(n);
    let keys_of = |s: usize, bj: usize| {
        let (r, c) = (block(s), block(bj));
        let mut tile = vec![0.0f32; r.len() * c.len()];
        let t =
            ArrayViewMut2::from_shape((r.len(), c.len()), &mut tile[..]).expect("a tile's shape");
        fill_keys(
            metric,
            (points.slice(s![r.clone(), ..]), f.slice(s![r])),
            (points.slice(s![c.clone(), ..]), f.slice(s![c])),
            t,
        );
        tile
    };
    let tiles: Vec<Vec<Vec<f32>>> = (0..SAMPLE_BLOCKS)
        .map(|s| {
            (0..nb)
                .into_par_iter()
                .map(|bj| if bj < s { Vec::new() } else { keys_of(s, bj) })
                .collect()
        })
        .collect();
    let mut cuts = vec![f32::INFINITY; n];
    if let Some(rank) = cut_rank(n, k, sigmas) {
        cuts.par_chunks_mut(SYM_TILE).enumerate().for_each_init(
            Vec::<f32>::new,
            |buf, (b, out)| {
                let rows = out.len();
                buf.resize(rows * CUT_SAMPLE, 0.0);
                for s in 0..SAMPLE_BLOCKS {
                    let dst = &mut buf[s * SYM_TILE..];
                    if s <= b {
                        // Tile (s, b): sample rows of block s down, this block's rows across.
                        transpose(&tiles[s][b], (SYM_TILE, rows), dst, CUT_SAMPLE);
                    } else {
                        // Tile (b, s) holds this block's rows against block s's.
                        for (i, keys) in tiles[b][s].chunks(SYM_TILE).enumerate() {
                            dst[i * CUT_SAMPLE..i * CUT_SAMPLE + SYM_TILE].copy_from_slice(keys);
                        }
                    }
                }
                for (i, (keys, cut)) in buf.chunks_mut(CUT_SAMPLE).zip(out).enumerate() {
                    let own = b * SYM_TILE + i;
                    *cut = cut_from_sample(keys, (own < CUT_SAMPLE).then_some(own), rank);
                }
            },
        );
    }
    let tiles = tiles
        .into_iter()
        .map(|row| row.into_iter().map(Mutex::new).collect())
        .collect();
    (cuts, tiles)
}

/// Each row's cut-off: the key of rank [`cut_rank`] among its keys to an evenly strided sample of
/// the rows (its own left out), `+inf` where there is none. A guess, not a bound: whether at
/// least `k` keys fall at or below it is checked afterwards.
fn cut_offs(
    metric: Metric,
    points: ArrayView2<'_, f32>,
    f: &Array1<f32>,
    k: usize,
    sigmas: f64,
) -> Vec<f32> {
    let n = points.nrows();
    let Some(rank) = cut_rank(n, k, sigmas) else {
        return vec![f32::INFINITY; n];
    };
    let m = CUT_SAMPLE.min(n);
    let step = n / m;
    let picked: Vec<usize> = (0..m).map(|t| t * step).collect();
    let sample = points.select(Axis(0), &picked);
    let fs = f.select(Axis(0), &picked);
    let mut cuts = vec![0.0f32; n];
    cuts.par_chunks_mut(QUERY_BLOCK).enumerate().for_each_init(
        Vec::<f32>::new,
        |tile, (b, out)| {
            let r0 = b * QUERY_BLOCK;
            let rows = out.len();
            let t = tile_view(tile, rows, m);
            fill_keys(
                metric,
                (
                    points.slice(s![r0..r0 + rows, ..]),
                    f.slice(s![r0..r0 + rows]),
                ),
                (sample.view(), fs.view()),
                t,
            );
            for (i, (keys, cut)) in tile.chunks_mut(m).zip(out.iter_mut()).enumerate() {
                let own = r0 + i;
                *cut = cut_from_sample(keys, is_sampled(own, step).then_some(own / step), rank);
            }
        },
    );
    cuts
}

/// Keys per chunk of a candidate list in the large-k symmetric search: 4 KiB, a page. Every list
/// holds one partly filled: 8 KiB chunks held 83 MB (raw Fashion-MNIST, 35,000 × 784) to
/// 129 MB (clustered points stored class by class) more at the peak for the same time, 2 KiB
/// ones 24–27 MB less for the same time again (alternating processes). 2 KiB chunks of 8-byte
/// codes had once cost the sort twice the time of its first pass; that was before the sort
/// asked for the next row's lists ahead ([`Ahead`]). The unit tests take 64, so that their
/// small lists still span many chunks.
const LIST_CHUNK: usize = if cfg!(test) { 64 } else { 1024 };

/// One chunk of a candidate list's keys.
type Chunk = Box<[u32; LIST_CHUNK]>;

/// Words per chunk of a candidate list's masks ([`RowList`]): 1 KiB, fourteen runs of a tile's
/// 512 keys. Every list holding a run holds a chunk, partly filled: with 4 KiB chunks, 35,000
/// points of 784 dimensions held 84 MB (raw Fashion-MNIST) to 98 MB (clustered points stored
/// class by class) more at their peak, for the same time. The unit tests take 96, so that
/// their lists span many.
const MASK_CHUNK: usize = if cfg!(test) { 96 } else { 512 };

/// One chunk of a candidate list's masks.
type MaskChunk = Box<[u16; MASK_CHUNK]>;

/// Most keys [`RowList::keep_below`] offers in one run: a run's header and mask words then fit
/// a mask chunk several times over.
const RUN_KEYS: usize = 512;

/// Words of a run's header in a mask chunk: its first position (two words) and its length.
const RUN_HEADER: usize = 3;

const _: () = assert!(RUN_HEADER + RUN_KEYS / MASK_LANES <= MASK_CHUNK / 2);

/// Chunks of both kinds.
#[derive(Default)]
struct Chunks {
    keys: Vec<Chunk>,
    masks: Vec<MaskChunk>,
}

impl Chunks {
    fn append(&mut self, other: &mut Chunks) {
        self.keys.append(&mut other.keys);
        self.masks.append(&mut other.masks);
    }
}

/// Chunks a worker takes from the shared free lists at once.
const STASH: usize = 32;

/// The chunks of the candidate lists of the large-k symmetric search. A finished block's
/// chunks come back here and hold later blocks' candidates, so that only the lists alive at
/// one time are ever allocated and their pages are touched once.
#[derive(Default)]
struct ChunkPool {
    free: Mutex<Chunks>,
    /// Key chunks allocated so far (the pool's high-water mark).
    made: AtomicUsize,
}

impl ChunkPool {
    fn give_back(&self, chunks: &mut Chunks) {
        self.free
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .append(chunks);
    }
}

/// A worker's few chunks at hand, refilled from the [`ChunkPool`] and returned to it on drop.
struct Stash<'a> {
    pool: &'a ChunkPool,
    chunks: Chunks,
}

impl<'a> Stash<'a> {
    fn new(pool: &'a ChunkPool) -> Self {
        Stash {
            pool,
            chunks: Chunks::default(),
        }
    }

    /// A chunk of keys: one at hand, else from the pool's free ones, else a new one.
    fn take(&mut self) -> Chunk {
        self.take_from(|c| &mut c.keys).unwrap_or_else(|| {
            self.pool.made.fetch_add(1, Ordering::Relaxed);
            Box::new([0; LIST_CHUNK])
        })
    }

    /// A chunk of masks, as [`Stash::take`].
    fn take_masks(&mut self) -> MaskChunk {
        self.take_from(|c| &mut c.masks)
            .unwrap_or_else(|| Box::new([0; MASK_CHUNK]))
    }

    /// A chunk of one kind (`kind` picks it from a [`Chunks`]) at hand, the stash refilled with
    /// up to [`STASH`] of the pool's free ones when it has none; `None` when the pool has none
    /// either.
    fn take_from<C>(&mut self, kind: fn(&mut Chunks) -> &mut Vec<C>) -> Option<C> {
        if kind(&mut self.chunks).is_empty() {
            let mut free = self.pool.free.lock().unwrap_or_else(|e| e.into_inner());
            let free = kind(&mut free);
            let from = free.len().saturating_sub(STASH);
            kind(&mut self.chunks).extend(free.drain(from..));
        }
        kind(&mut self.chunks).pop()
    }
}

impl Drop for Stash<'_> {
    fn drop(&mut self) {
        self.pool.give_back(&mut self.chunks);
    }
}

/// One row's candidates (or a part of them): their keys (as [`code`] orders them) in chunks
/// from a [`ChunkPool`], with the smallest and largest, and which keys of each run of keys
/// offered were kept, one bit each ([`keep_below`]'s masks, in mask chunks from the same pool),
/// from which [`RowList::kept_ids`] gets their indices back. A candidate takes 4 bytes and a
/// bit rather than an 8-byte [`code`]: the lists are written once and read twice from memory.
/// The chunks being filled are held in the list itself: an append then reads their pointers
/// from the list rather than from the full chunks' vectors (a cache miss per append, a third of
/// the appends' time, measured).
struct RowList {
    /// The full chunks of keys, in order.
    full: Vec<Chunk>,
    /// The chunk of keys being filled (the last one), once there are keys.
    tail: Option<Chunk>,
    len: usize,
    lo: u32,
    hi: u32,
    /// The full chunks of masks, in order. Each run of keys offered has a header (its first
    /// key's position in the search's order, low and high half, and its length) and one word
    /// per 16 keys, all in one chunk; a chunk left with room for a header but not for the next
    /// run ends with a header of length 0.
    mask_full: Vec<MaskChunk>,
    /// The chunk of masks being filled, once there are runs.
    mask_tail: Option<MaskChunk>,
    /// Words used in the chunk of masks being filled.
    mask_at: usize,
}

impl Default for RowList {
    fn default() -> Self {
        RowList {
            full: Vec::new(),
            tail: None,
            len: 0,
            lo: u32::MAX,
            hi: 0,
            mask_full: Vec::new(),
            mask_tail: None,
            mask_at: 0,
        }
    }
}

impl RowList {
    /// Keys in the chunk being filled, and room left in it (`0` when there is none).
    fn tail_fill(&self) -> (usize, usize) {
        let in_tail = self.len - self.full.len() * LIST_CHUNK;
        let room = if self.tail.is_some() {
            LIST_CHUNK - in_tail
        } else {
            0
        };
        (in_tail, room)
    }

    /// Starts a new chunk to fill (the one being filled, if any, is full).
    fn next_chunk(&mut self, stash: &mut Stash<'_>) {
        let filled = self.tail.replace(stash.take());
        self.full.extend(filled);
    }

    /// Appends the keys of `keys` at or below `cut`, `keys[0]` being the point at position
    /// `first` of the search's order and the others those after it, in runs of at most
    /// [`RUN_KEYS`].
    fn keep_below(&mut self, keys: &[f32], cut: f32, first: usize, stash: &mut Stash<'_>) {
        for (r, run) in keys.chunks(RUN_KEYS).enumerate() {
            self.keep_run(run, cut, first + r * RUN_KEYS, stash);
        }
    }

    /// Writes the header of a run of `n` keys from position `first` to the chunk of masks being
    /// filled (a new one if the header and the run's words do not fit) and returns where the
    /// run's words go in it.
    fn start_run(&mut self, first: usize, n: usize, stash: &mut Stash<'_>) -> usize {
        // A header of length 0 ends a chunk's runs.
        debug_assert!(n > 0, "a run offers at least one key");
        let first = u32::try_from(first).expect("positions of a large-k search fit in u32");
        let words = n.div_ceil(MASK_LANES);
        if self.mask_tail.is_none() || self.mask_at + RUN_HEADER + words > MASK_CHUNK {
            if let Some(chunk) = self.mask_tail.as_mut()
                && self.mask_at + RUN_HEADER <= MASK_CHUNK
            {
                chunk[self.mask_at + 2] = 0;
            }
            let filled = self.mask_tail.replace(stash.take_masks());
            self.mask_full.extend(filled);
            self.mask_at = 0;
        }
        let m0 = self.mask_at + RUN_HEADER;
        let chunk = self.mask_tail.as_mut().expect("a chunk of masks with room");
        chunk[self.mask_at] = first as u16;
        chunk[self.mask_at + 1] = (first >> 16) as u16;
        chunk[self.mask_at + 2] = n as u16;
        self.mask_at = m0 + words;
        m0
    }

    /// Appends a run filtered elsewhere ([`keep_strip_below`]): `n` keys offered from position
    /// `first`, their mask words `masks` and the kept keys `keys` (nothing when none was kept).
    fn append_run(
        &mut self,
        (first, n): (usize, usize),
        masks: &[u16],
        keys: &[u32],
        stash: &mut Stash<'_>,
    ) {
        if keys.is_empty() {
            // Nothing kept: the run is left out.
            return;
        }
        let m0 = self.start_run(first, n, stash);
        let chunk = self.mask_tail.as_mut().expect("a chunk of masks");
        chunk[m0..m0 + masks.len()].copy_from_slice(masks);
        let (lo, hi) = keys
            .iter()
            .fold((self.lo, self.hi), |(lo, hi), &k| (lo.min(k), hi.max(k)));
        (self.lo, self.hi) = (lo, hi);
        self.push_keys(keys, stash);
    }

    /// Appends kept keys to the chunks of keys, across a chunk's end where they reach it (their
    /// smallest and largest are the caller's to record).
    fn push_keys(&mut self, keys: &[u32], stash: &mut Stash<'_>) {
        let mut rest = keys;
        while !rest.is_empty() {
            let (mut at, mut room) = self.tail_fill();
            if room == 0 {
                self.next_chunk(stash);
                (at, room) = (0, LIST_CHUNK);
            }
            let here = room.min(rest.len());
            let tail = self.tail.as_mut().expect("a chunk with room");
            tail[at..at + here].copy_from_slice(&rest[..here]);
            self.len += here;
            rest = &rest[here..];
        }
    }

    /// [`RowList::keep_below`] for one run: its header and mask words go to the chunk of masks
    /// being filled ([`RowList::start_run`]), the kept keys straight into the chunk of keys
    /// being filled, in parts of whole mask words while it has room for them, one word
    /// through a small buffer across a chunk's end. A run of which no key was kept is left out
    /// (in class-ordered sets most of a row's runs, whose words would cost memory for nothing).
    fn keep_run(&mut self, keys: &[f32], cut: f32, first: usize, stash: &mut Stash<'_>) {
        let words = keys.len().div_ceil(MASK_LANES);
        let len_before = self.len;
        let m0 = self.start_run(first, keys.len(), stash);
        let mut from = 0;
        while from < keys.len() {
            let left = keys.len() - from;
            let (mut at, mut room) = self.tail_fill();
            if room == 0 {
                self.next_chunk(stash);
                (at, room) = (0, LIST_CHUNK);
            }
            let masks = &mut self.mask_tail.as_mut().expect("a chunk of masks")
                [m0 + from / MASK_LANES..m0 + words];
            let kept = if room >= left.min(MASK_LANES) {
                // Whole words while the chunk has room for all their keys (the last part may
                // end mid-word, at the run's end).
                let n = if room >= left {
                    left
                } else {
                    room / MASK_LANES * MASK_LANES
                };
                let tail = self.tail.as_mut().expect("a chunk with room");
                let kept = keep_below(&keys[from..from + n], cut, &mut tail[at..], masks);
                from += n;
                self.len += kept.n;
                kept
            } else {
                // One word's keys into a buffer, then across the chunk's end.
                let n = left.min(MASK_LANES);
                let mut buf = [0u32; MASK_LANES];
                let kept = keep_below(&keys[from..from + n], cut, &mut buf, masks);
                self.push_keys(&buf[..kept.n], stash);
                from += n;
                kept
            };
            self.lo = self.lo.min(kept.lo);
            self.hi = self.hi.max(kept.hi);
        }
        if self.len == len_before {
            // Nothing kept: the run is left out (its header and words are written over).
            self.mask_at = m0 - RUN_HEADER;
        }
    }

    /// Asks for the list itself (two lines), which [`RowList::prefetch_tails`] reads.
    fn prefetch_self(&self) {
        let at = std::ptr::from_ref(self).cast::<u8>();
        prefetch(at);
        prefetch(at.wrapping_add(64));
    }

    /// Asks for the lines the next [`RowList::keep_below`] writes first, to write them.
    fn prefetch_tails(&self) {
        if let Some(c) = &self.mask_tail {
            prefetch_write(c.as_ptr().wrapping_add(self.mask_at));
        }
        if let Some(c) = &self.tail {
            prefetch_write(c.as_ptr().wrapping_add(self.tail_fill().0));
        }
    }

    /// The keys, chunk by chunk.
    fn parts(&self) -> impl Iterator<Item = &[u32]> {
        self.full
            .iter()
            .chain(&self.tail)
            .enumerate()
            .map(|(i, c)| &c[..(self.len - i * LIST_CHUNK).min(LIST_CHUNK)])
    }

    /// Appends to `out` the index of each key, in the keys' order: `ids[p]` for the point at
    /// position `p` of the search's order.
    fn kept_ids(&self, ids: &[u32], out: &mut Vec<u32>) {
        let chunks = self.mask_full.iter().map(|c| (c, MASK_CHUNK));
        for (chunk, end) in chunks.chain(self.mask_tail.iter().map(|c| (c, self.mask_at))) {
            let mut at = 0;
            while at + RUN_HEADER <= end {
                let first = usize::from(chunk[at]) | usize::from(chunk[at + 1]) << 16;
                let n = usize::from(chunk[at + 2]);
                if n == 0 {
                    break;
                }
                let words = n.div_ceil(MASK_LANES);
                let m0 = at + RUN_HEADER;
                kept_ids(&chunk[m0..m0 + words], &ids[first..first + n], out);
                at = m0 + words;
            }
        }
    }

    /// Chunks held.
    #[cfg(test)]
    fn n_chunks(&self) -> usize {
        self.full.len() + usize::from(self.tail.is_some())
    }

    /// Empties the list, its chunks moved to `into`.
    fn release(&mut self, into: &mut Chunks) {
        into.keys.append(&mut self.full);
        into.keys.extend(self.tail.take());
        into.masks.append(&mut self.mask_full);
        into.masks.extend(self.mask_tail.take());
        *self = RowList {
            full: std::mem::take(&mut self.full),
            mask_full: std::mem::take(&mut self.mask_full),
            ..RowList::default()
        };
    }
}

/// Appends to the rows' candidate lists the keys of `tile` (`lists.len()` rows of `cols` keys,
/// the columns the points at positions `col0..col0 + cols`) at or below each row's cut-off
/// (`cuts`), leaving out the diagonal when the tile is on it.
fn keep_rows_below_cut(
    tile: &[f32],
    cols: usize,
    col0: usize,
    cuts: &[f32],
    diagonal: bool,
    lists: &mut [RowList],
    stash: &mut Stash<'_>,
) {
    for (i, (keys, &cut)) in tile.chunks(cols).zip(cuts).enumerate() {
        ask_ahead(lists, i);
        let list = &mut lists[i];
        if diagonal {
            list.keep_below(&keys[..i], cut, col0, stash);
            list.keep_below(&keys[i + 1..], cut, col0 + i + 1, stash);
        } else {
            list.keep_below(keys, cut, col0, stash);
        }
    }
}

/// Before list `i` of `lists` is appended to: asks for the lines list `i + 1`'s append writes
/// first, and for list `i + 2` itself (which that request reads next time).
fn ask_ahead(lists: &[RowList], i: usize) {
    if let Some(next) = lists.get(i + 1) {
        next.prefetch_tails();
    }
    if let Some(after) = lists.get(i + 2) {
        after.prefetch_self();
    }
}

/// A worker's room for one strip of 16 columns' kept keys and mask words
/// ([`keep_strip_below`]).
#[derive(Default)]
struct Strip {
    keys: Vec<u32>,
    masks: Vec<u16>,
}

/// Appends to the columns' candidate lists (`lists`, one per column of `tile`, a tile of
/// `rows` rows, the points at positions `row0..row0 + rows`) their keys at or below each
/// column's cut-off (`cuts`), 16 columns at a time through `strip`: the tile is read again
/// (from cache) and transposed in registers, not written out transposed.
fn keep_cols_below_cut(
    tile: &[f32],
    (rows, row0): (usize, usize),
    cuts: &[f32],
    lists: &mut [RowList],
    stash: &mut Stash<'_>,
    strip: &mut Strip,
) {
    let cols = lists.len();
    let words = rows.div_ceil(MASK_LANES);
    strip.keys.resize(16 * rows, 0);
    strip.masks.resize(16 * words, 0);
    let mut kept = [0; 16];
    for j0 in (0..cols).step_by(16) {
        let w = (cols - j0).min(16);
        keep_strip_below(
            tile,
            (rows, cols),
            j0,
            &cuts[j0..j0 + w],
            (&mut strip.keys, &mut strip.masks),
            &mut kept,
        );
        for (t, &kept) in kept.iter().enumerate().take(w) {
            let j = j0 + t;
            ask_ahead(lists, j);
            lists[j].append_run(
                (row0, rows),
                &strip.masks[t * words..(t + 1) * words],
                &strip.keys[t * rows..t * rows + kept],
                stash,
            );
        }
    }
}

/// Values reused across parallel calls, one per worker thread: a task takes its worker's (or
/// a new one) and gives it back when it ends, so that buffers are allocated, and their pages
/// touched, once per search rather than once per rayon split (made anew, the tiles' buffers
/// and the sort's scratch cost a raw Fashion-MNIST evaluation 2.3 % in page faults and
/// zeroing).
struct Reuse<T>(Vec<Mutex<Option<T>>>);

impl<T: Default> Reuse<T> {
    fn new() -> Self {
        let workers = rayon::current_num_threads().max(1);
        Reuse((0..workers).map(|_| Mutex::new(None)).collect())
    }

    /// The calling worker's slot.
    fn slot(&self) -> &Mutex<Option<T>> {
        &self.0[rayon::current_thread_index().unwrap_or(0) % self.0.len()]
    }

    /// The calling worker's value, or a new one where it has none at hand.
    fn take(&self) -> Reused<'_, T> {
        let value = self.slot().lock().unwrap_or_else(|e| e.into_inner()).take();
        Reused {
            from: self,
            value: Some(value.unwrap_or_default()),
        }
    }
}

/// A value taken from a [`Reuse`], given back (to the worker that drops it) when dropped.
struct Reused<'a, T: Default> {
    from: &'a Reuse<T>,
    value: Option<T>,
}

impl<T: Default> std::ops::Deref for Reused<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        self.value.as_ref().expect("taken until dropped")
    }
}

impl<T: Default> std::ops::DerefMut for Reused<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        self.value.as_mut().expect("taken until dropped")
    }
}

impl<T: Default> Drop for Reused<'_, T> {
    fn drop(&mut self) {
        *self.from.slot().lock().unwrap_or_else(|e| e.into_inner()) = self.value.take();
    }
}

/// Scratch space of [`sort_first_k`], reused across rows.
#[derive(Default)]
struct SortScratch {
    codes: Vec<u64>,
    spare: Vec<u64>,
    counts: Vec<[u32; MAX_RADIX]>,
    /// The codes whose keys lie below the radix passes' range (see [`sort_first_k`]).
    near: Vec<u64>,
    /// The candidates' indices, in the lists' order ([`RowList::kept_ids`]).
    ids: Vec<u32>,
}

/// What [`symmetric_fold`] needs to turn one row's lists into its neighbours.
#[derive(Default)]
struct RowScratch {
    sort: SortScratch,
    /// The square roots of [`order_sqrt_ties`].
    roots: Vec<f32>,
}

/// Widest digit of [`sort_first_k`]'s radix sort: 4,096 counters, 16 KiB, stay in L1.
const MAX_DIGIT_BITS: u32 = 12;
/// Counters of the widest digit.
const MAX_RADIX: usize = 1 << MAX_DIGIT_BITS;

/// Digit `p` (of `bits` bits, `mask` = `2^bits - 1`) of a key's offset from `lo`; under
/// [`MAX_RADIX`] whatever the arguments, which spares the counters' bounds checks.
#[inline(always)]
fn digit(key: u32, lo: u32, p: u32, bits: u32, mask: u32) -> usize {
    ((key.wrapping_sub(lo) >> (p * bits)) & mask) as usize & (MAX_RADIX - 1)
}

/// Counts the `P` digits of every key of `lists` at or above `lo` into `counts[..P]` (zeroed by
/// the caller), in one read of the lists; returns how many keys lie below `lo` (counted
/// nowhere, without a branch). The lists were written one or many tile rows earlier and are
/// read from memory: each chunk is asked for 1 KiB ahead of the reading and the next chunk's
/// start while this one is read (the hardware prefetcher stops at page ends): 11 % off the
/// whole sort of 8,545 codes a row, measured on rows laid out as the search leaves them. Where
/// the previous row's sort asked for this row's lists ([`Ahead`]), they come from L2 instead:
/// the count's share of a 784-d evaluation's samples went from about 4 % to 2.4 %, the
/// evaluation 2 % faster.
fn count_digits<const P: usize>(
    lists: &[&RowList],
    lo: u32,
    bits: u32,
    mask: u32,
    counts: &mut [[u32; MAX_RADIX]],
) -> usize {
    let counts = &mut counts[..P];
    let mut below = 0;
    let mut parts = lists.iter().flat_map(|l| l.parts()).peekable();
    while let Some(part) = parts.next() {
        if let Some(next) = parts.peek() {
            prefetch_start(next);
        }
        for (i, &key) in part.iter().enumerate() {
            if i % 16 == 0 {
                prefetch(part.as_ptr().wrapping_add(i + 256));
            }
            // Without a branch: a key below `lo` adds 0 to the counters its wrapped offset
            // names (the few such keys lie anywhere in a row's lists).
            let above = u32::from(key >= lo);
            below += (1 - above) as usize;
            for (p, count) in counts.iter_mut().enumerate() {
                count[digit(key, lo, p as u32, bits, mask)] += above;
            }
        }
    }
    below
}

/// Walks the lists of the row to be sorted next, one cache line per [`Ahead::step`], asking
/// for each into L2 while this row is sorted: the next row's digit count then reads its lists
/// from L2 rather than from memory.
struct Ahead<'a, I: Iterator<Item = &'a [u32]>> {
    parts: I,
    part: &'a [u32],
    at: usize,
}

impl<'a, I: Iterator<Item = &'a [u32]>> Ahead<'a, I> {
    fn new(parts: I) -> Self {
        Ahead {
            parts,
            part: &[],
            at: 0,
        }
    }

    /// Asks for the next line, if any is left.
    #[inline(always)]
    fn step(&mut self) {
        if self.at >= self.part.len() {
            match self.parts.next() {
                Some(p) => (self.part, self.at) = (p, 0),
                None => return,
            }
        }
        prefetch_l2(self.part.as_ptr().wrapping_add(self.at));
        self.at += 16;
    }
}

/// Row `i` of a complete block of `rows` rows (`parts`: the block's lists in parts, as
/// [`sort_block`] takes them): its first `k` codes in order ([`sort_first_k`], row `i + 1`'s
/// lists asked for meanwhile), or `None` when it has fewer than `k` candidates. `lists` and
/// `next` are buffers reused from row to row.
fn sort_row<'s, 'p>(
    (scratch, lists, next): (
        &'s mut SortScratch,
        &mut Vec<&'p RowList>,
        &mut Vec<&'p RowList>,
    ),
    (parts, ids): (&'p [Vec<RowList>], &[u32]),
    (i, rows): (usize, usize),
    k: usize,
) -> Option<&'s [u64]> {
    lists.clear();
    lists.extend(parts.iter().map(|p| &p[i]));
    if lists.iter().map(|l| l.len).sum::<usize>() < k {
        return None;
    }
    next.clear();
    if i + 1 < rows {
        next.extend(parts.iter().map(|p| &p[i + 1]));
    }
    Some(sort_first_k(lists, k, scratch, next, ids))
}

/// Codes sorted per [`Ahead::step`]: a row's two scatter passes then ask for about as many
/// lines as a row of about the same length holds (16 keys a line).
const AHEAD_EVERY: usize = 32;

/// Widest key range (in bits of [`code`]'s ordered keys) that [`sort_first_k`] sorts in its
/// radix passes: two digits of [`MAX_DIGIT_BITS`] bits.
const RADIX_RANGE_BITS: u32 = 2 * MAX_DIGIT_BITS;

/// The first `k` of the [`code`]s of the candidates of `lists` (together one row's, at least
/// `k`, in any order; the point at position `p` of the search's order has index `ids[p]`) in
/// increasing order, i.e. by key, then index; the lists of `next` (the row sorted next, or
/// none) are asked for meanwhile.
///
/// A least-significant-digit radix sort on the key's offset from an origin, in as few digits
/// of at most [`MAX_DIGIT_BITS`] bits as that offset's width needs (two for keys within a
/// factor of two of each other), stable, so equal keys keep their arrival order; the digits
/// are counted in one read of the lists' keys, the keys' indices are got back from the lists'
/// masks, and the first pass reads the keys again and makes the codes. Then each
/// run of equal keys that reaches into the first `k` is put in index order (runs are short:
/// equal floats; windows of 64 codes without one are passed over by one vectorised test).
///
/// The origin is the smallest key, unless the keys span more than [`RADIX_RANGE_BITS`] bits:
/// then it is the largest key less that range, and the few keys below it (a row's nearest
/// neighbours, far closer than the rest) are set aside in the first pass, sorted on their own
/// and put first. Raw 784-d images (Fashion-MNIST) span 25 to 27 bits in most rows, almost all
/// of their keys crowding near the cut-off: a third pass on the top digit then found nearly
/// every key in the same few counters, one dependent increment after another, and took half
/// the sort's time. Where more than an eighth of the keys would be set aside, the sort takes
/// the third pass instead.
fn sort_first_k<'a>(
    lists: &[&RowList],
    k: usize,
    scratch: &'a mut SortScratch,
    next: &[&RowList],
    ids: &[u32],
) -> &'a [u64] {
    let n: usize = lists.iter().map(|l| l.len).sum();
    let k = k.min(n);
    if n == 0 {
        return &[];
    }
    let lo = lists.iter().map(|l| l.lo).min().unwrap_or(0);
    let hi = lists.iter().map(|l| l.hi).max().unwrap_or(0);
    let SortScratch {
        codes,
        spare,
        counts,
        near,
        ids: row_ids,
    } = scratch;
    codes.resize(n, 0);
    spare.resize(n, 0);
    counts.resize(3, [0; MAX_RADIX]);
    // The digits' layout for keys from `origin` to `hi`, the counts of the keys at or above it,
    // and how many lie below it.
    let count = |origin: u32, counts: &mut Vec<[u32; MAX_RADIX]>| {
        let width = 32 - (hi - origin).leading_zeros();
        let passes = width.div_ceil(MAX_DIGIT_BITS).max(1);
        let bits = width.div_ceil(passes).max(1);
        let radix = 1usize << bits;
        let mask = (radix - 1) as u32;
        for count in &mut counts[..passes as usize] {
            count[..radix].fill(0);
        }
        let below = match passes {
            1 => count_digits::<1>(lists, origin, bits, mask, counts),
            2 => count_digits::<2>(lists, origin, bits, mask, counts),
            _ => count_digits::<3>(lists, origin, bits, mask, counts),
        };
        (passes, bits, radix, mask, below)
    };
    let range = (1u32 << RADIX_RANGE_BITS) - 1;
    let mut origin = if hi - lo > range { hi - range } else { lo };
    let mut layout = count(origin, counts);
    if layout.4 > n / 8 {
        origin = lo;
        layout = count(origin, counts);
    }
    let (passes, bits, radix, mask, below) = layout;
    for count in &mut counts[..passes as usize] {
        let mut offset = below as u32;
        for c in count[..radix].iter_mut() {
            let here = *c;
            *c = offset;
            offset += here;
        }
    }
    near.clear();
    row_ids.clear();
    for list in lists {
        list.kept_ids(ids, row_ids);
    }
    let mut ahead = Ahead::new(next.iter().flat_map(|l| l.parts()));
    {
        let count = &mut counts[0];
        // A slice, so that its address and length stay in registers across the pushes.
        let out = &mut codes[..n];
        let mut left_ids = &row_ids[..];
        for list in lists {
            for part in list.parts() {
                let (part_ids, rest) = left_ids.split_at(part.len());
                left_ids = rest;
                for (keys, ids) in part.chunks(AHEAD_EVERY).zip(part_ids.chunks(AHEAD_EVERY)) {
                    ahead.step();
                    for (&key, &id) in keys.iter().zip(ids) {
                        let c = (u64::from(key) << 32) | u64::from(id);
                        if key < origin {
                            near.push(c);
                            continue;
                        }
                        let slot = &mut count[digit(key, origin, 0, bits, mask)];
                        out[*slot as usize] = c;
                        *slot += 1;
                    }
                }
            }
        }
    }
    let (mut src, mut dst): (&mut [u64], &mut [u64]) = (&mut codes[..n], &mut spare[..n]);
    for p in 1..passes {
        let count = &mut counts[p as usize];
        for codes16 in src[below..].chunks(AHEAD_EVERY) {
            ahead.step();
            for &c in codes16 {
                let slot = &mut count[digit((c >> 32) as u32, origin, p, bits, mask)];
                dst[*slot as usize] = c;
                *slot += 1;
            }
        }
        std::mem::swap(&mut src, &mut dst);
    }
    // The keys set aside are smaller than all others: sorted by key, then index, they go first.
    near.sort_unstable();
    src[..below].copy_from_slice(near);
    // Runs of equal keys starting before k (and reaching into the first k), put in index order.
    let last = k.min(n - 1);
    let mut i = 0;
    while i < last {
        let end = (i + 64).min(last);
        let any = src[i..end]
            .iter()
            .zip(&src[i + 1..=end])
            .fold(false, |any, (a, b)| {
                any | ((a >> 32) as u32 == (b >> 32) as u32)
            });
        if !any {
            i = end;
            continue;
        }
        while i < end {
            let key = src[i] >> 32;
            if src[i + 1] >> 32 == key {
                let stop = i + 2 + src[i + 2..].iter().take_while(|&&c| c >> 32 == key).count();
                src[i..stop].sort_unstable();
                i = stop;
            } else {
                i += 1;
            }
        }
    }
    &src[..k]
}

/// The large-k leave-one-out search by symmetry ([`knn_self_blocks`], [`knn_self_fold`]) over
/// the points in `layout`'s order: each row keeps its keys at or below its cut-off
/// ([`cut_offs`], or [`sample_tile_rows`]) in a [`RowList`] (the keys, and which were kept,
/// from which the sort makes [`code`]s with the layout's indices) from the tiles on and above
/// the diagonal, each fed to its rows and to its columns. The tiles go row of tiles
/// by row of tiles: once tile row `b` is done, block `b` has all its candidates (its columns
/// left of the diagonal came from the earlier tile rows), so while tile row `b + 1` is
/// computed, `sort` takes the block's lists (each row radix-sorted and its first `k` kept),
/// then `finish` the block on the calling thread; its list chunks then go back to the pool for
/// the blocks still filling. A row with fewer than `k` candidates (its cut-off fell below its
/// k-th key) is left to `sort` to search again through [`search`]. Keys are the same bits
/// whichever point of a pair asks, and every key at or below a row's k-th key is among its
/// candidates, so the lists are [`search`]'s. Returns the chunks of keys the pool allocated.
fn search_symmetric_select<S: Send>(
    metric: Metric,
    layout: &Layout<'_>,
    k: usize,
    sigmas: f64,
    state: &mut S,
    sort: &SortBlock<'_, S>,
    finish: &mut dyn FnMut(&mut S, usize, usize),
) -> usize {
    let points = layout.points.view();
    let n = points.nrows();
    let f = row_factors(metric, points);
    let (cuts, first_rows) = if layout.sample_first {
        sample_tile_rows(metric, points, &f, k, sigmas)
    } else {
        (cut_offs(metric, points, &f, k, sigmas), Vec::new())
    };
    let nb = n.div_ceil(SYM_TILE);
    let block_rows = |b: usize| (n - b * SYM_TILE).min(SYM_TILE);
    let lists = |rows: usize| (0..rows).map(|_| RowList::default()).collect::<Vec<_>>();
    let pool = ChunkPool::default();
    // Each block's candidates from the tiles above it (their columns), and those from its own
    // tile row, one set per worker (tiles of one row run in parallel), alternating between
    // consecutive blocks (one fills while the other is sorted).
    let from_above: Vec<Mutex<Vec<RowList>>> =
        (0..nb).map(|b| Mutex::new(lists(block_rows(b)))).collect();
    let workers = rayon::current_num_threads().max(1);
    // Each worker's tile and room for a strip of its columns.
    let buffers = Reuse::<(Vec<f32>, Strip)>::new();
    let from_row: [Vec<Mutex<Vec<RowList>>>; 2] =
        std::array::from_fn(|_| (0..workers).map(|_| Mutex::new(lists(SYM_TILE))).collect());
    for step in 0..=nb {
        // Block `step - 1` is complete: its lists are taken out and sorted beside tile row
        // `step`.
        let done = step.checked_sub(1).map(|b| {
            let take = |m: &Mutex<Vec<RowList>>| {
                std::mem::take(&mut *m.lock().unwrap_or_else(|e| e.into_inner()))
            };
            let mut parts = vec![take(&from_above[b])];
            parts.extend(from_row[b % 2].iter().map(take));
            (b, parts)
        });
        let tiles = || {
            if step == nb {
                return;
            }
            (step..nb).into_par_iter().for_each_init(
                || (buffers.take(), Stash::new(&pool)),
                |(buffers, stash), bj| {
                    let (tile, strip) = &mut **buffers;
                    let (r0, c0) = (step * SYM_TILE, bj * SYM_TILE);
                    let (rows, cols) = (block_rows(step), block_rows(bj));
                    // The sample's tile rows were computed for the cut-offs; each is dropped
                    // once filtered.
                    let computed = first_rows.get(step).map(|row| {
                        std::mem::take(&mut *row[bj].lock().unwrap_or_else(|e| e.into_inner()))
                    });
                    let tile: &[f32] = if let Some(keys) = &computed {
                        keys
                    } else {
                        let t = tile_view(tile, rows, cols);
                        fill_keys(
                            metric,
                            (
                                points.slice(s![r0..r0 + rows, ..]),
                                f.slice(s![r0..r0 + rows]),
                            ),
                            (
                                points.slice(s![c0..c0 + cols, ..]),
                                f.slice(s![c0..c0 + cols]),
                            ),
                            t,
                        );
                        &tile[..rows * cols]
                    };
                    let worker = rayon::current_thread_index().unwrap_or(0) % workers;
                    {
                        let mut row_lists = from_row[step % 2][worker]
                            .lock()
                            .unwrap_or_else(|e| e.into_inner());
                        let row_cuts = &cuts[r0..r0 + rows];
                        let lists = &mut row_lists[..rows];
                        keep_rows_below_cut(tile, cols, c0, row_cuts, bj == step, lists, stash);
                    }
                    if bj != step {
                        let mut col_lists =
                            from_above[bj].lock().unwrap_or_else(|e| e.into_inner());
                        let col_cuts = &cuts[c0..c0 + cols];
                        let lists = &mut col_lists[..cols];
                        keep_cols_below_cut(tile, (rows, r0), col_cuts, lists, stash, strip);
                    }
                },
            );
        };
        let sorted = || {
            if let Some((b, parts)) = &done {
                sort(state, b * SYM_TILE, block_rows(*b), parts);
            }
        };
        rayon::join(tiles, sorted);
        let Some((b, mut parts)) = done else {
            continue;
        };
        let mut freed = Chunks::default();
        for part in &mut parts {
            for list in part.iter_mut() {
                list.release(&mut freed);
            }
        }
        pool.give_back(&mut freed);
        // The emptied per-worker lists serve block b + 2.
        for (slot, part) in from_row[b % 2].iter().zip(parts.drain(1..)) {
            *slot.lock().unwrap_or_else(|e| e.into_inner()) = part;
        }
        finish(state, b * SYM_TILE, block_rows(b));
    }
    pool.made.load(Ordering::Relaxed)
}

/// What [`search_symmetric_select`] does with a complete block: `(state, first row, rows,
/// the rows' lists in parts)`.
type SortBlock<'a, S> = dyn Fn(&mut S, usize, usize, &[Vec<RowList>]) + Sync + 'a;

/// [`knn_self_fold`]'s `add`: `(chunk state, row, the row's neighbours)`.
type AddRow<'a, T> = dyn Fn(&mut T, usize, &[u32]) + Sync + 'a;

/// [`search_symmetric_select`] handing out whole blocks of neighbours and scores
/// ([`knn_self_blocks`]).
fn symmetric_blocks(
    metric: Metric,
    points: ArrayView2<'_, f32>,
    k: usize,
    sigmas: f64,
    on_block: &mut dyn FnMut(usize, &Neighbours),
) -> usize {
    let rows = SYM_TILE.min(points.nrows());
    let layout = Layout::as_given(points);
    // Each worker's sort scratch, kept across blocks.
    let scratch = Reuse::<SortScratch>::new();
    let mut state = (
        Neighbours {
            indices: Array2::zeros((rows, k)),
            scores: Array2::zeros((rows, k)),
        },
        Vec::new(),
    );
    search_symmetric_select(
        metric,
        &layout,
        k,
        sigmas,
        &mut state,
        &|(out, short): &mut (Neighbours, Vec<usize>), _, rows, parts| {
            if rows < out.n_queries() {
                out.indices.slice_collapse(s![..rows, ..]);
                out.scores.slice_collapse(s![..rows, ..]);
            }
            *short = sort_block(
                metric,
                k,
                (parts, &layout.ids),
                &scratch,
                &mut out.indices,
                &mut out.scores,
            );
        },
        &mut |(out, short), start, _| {
            if !short.is_empty() {
                let rows: Vec<usize> = short.iter().map(|&i| start + i).collect();
                let again = search_rows_again(metric, points, k, &rows);
                for (r, &i) in short.iter().enumerate() {
                    out.indices.row_mut(i).assign(&again.indices.row(r));
                    out.scores.row_mut(i).assign(&again.scores.row(r));
                }
            }
            on_block(start, out);
        },
    )
}

/// [`search_symmetric_select`] folding each row's neighbour indices into chunk states on the
/// workers that sort them ([`knn_self_fold`]): no block of neighbour lists and no scores are
/// written. The search takes the cut-offs' sample first ([`Layout::sample_first`]), so the
/// sample's neighbours are kept until their chunks come; the other rows come in the set's
/// order, block by block, each block folding the set's rows from the last one's end to its
/// own last row.
#[allow(clippy::too_many_arguments)]
fn symmetric_fold<T: Send>(
    metric: Metric,
    points: ArrayView2<'_, f32>,
    k: usize,
    sigmas: f64,
    chunk: usize,
    init: &(dyn Fn() -> T + Sync),
    add: &AddRow<'_, T>,
    on_chunks: &mut dyn FnMut(usize, Vec<T>),
) -> usize {
    /// The sample rows' neighbours (sorted first, folded when their chunks come), the chunk
    /// carried over, the chunks finished by the last block, and where its rows end in the
    /// set's order.
    struct Fold<T> {
        sample: Vec<Vec<u32>>,
        carry: Option<T>,
        complete: Vec<T>,
        next: usize,
    }
    let n = points.nrows();
    let layout = Layout::sample_first(points);
    let step = n / CUT_SAMPLE;
    let ids = &layout.ids;
    // Each worker's sort scratch and square roots.
    let scratch = Reuse::<RowScratch>::new();
    let mut state = Fold {
        sample: vec![Vec::new(); CUT_SAMPLE],
        carry: None,
        complete: Vec::new(),
        next: 0,
    };
    search_symmetric_select(
        metric,
        &layout,
        k,
        sigmas,
        &mut state,
        &|st: &mut Fold<T>, start, rows, parts| {
            // The block's rows with fewer than k candidates, searched again all at once (one
            // GEMM, where one search per row would read every point for each).
            let short: Vec<usize> = (0..rows)
                .filter(|&i| parts.iter().map(|p| p[i].len).sum::<usize>() < k)
                .collect();
            let again = (!short.is_empty()).then(|| {
                let rows: Vec<usize> = short.iter().map(|&i| ids[start + i] as usize).collect();
                search_rows_again(metric, points, k, &rows)
            });
            // Row `start + i` of the search's order: its neighbours, by index.
            let neighbours =
                |(scratch, lists, next): &mut (Reused<'_, RowScratch>, Vec<_>, Vec<_>),
                 i: usize,
                 idx: &mut Vec<u32>| {
                    let RowScratch { sort, roots } = &mut **scratch;
                    if let Some(sorted) =
                        sort_row((sort, lists, next), (parts, &ids[..]), (i, rows), k)
                    {
                        idx.extend(sorted.iter().map(|&c| c as u32));
                        if metric == Metric::Euclidean {
                            order_sqrt_ties(sorted, idx, roots);
                        }
                    } else if let (Ok(r), Some(again)) = (short.binary_search(&i), &again) {
                        idx.extend(again.indices.row(r));
                    } else {
                        unreachable!("a row with fewer than k candidates is among the short rows");
                    }
                };
            let Fold {
                sample,
                carry,
                complete,
                next,
            } = st;
            if start < CUT_SAMPLE {
                sample[start..start + rows]
                    .par_iter_mut()
                    .enumerate()
                    .for_each_init(
                        || (scratch.take(), Vec::new(), Vec::new()),
                        |w, (i, idx)| neighbours(w, i, idx),
                    );
                if start + rows < n {
                    return;
                }
            }
            // The set's rows from the last block's end to this block's last row (the sample
            // rows among them are sorted already), or to the end.
            let first = *next;
            let end = if start + rows == n {
                n
            } else {
                ids[start + rows - 1] as usize + 1
            };
            // (A set of the sample alone has no rows to sort here.)
            let sample = &*sample;
            let fill =
                |w: &mut (Reused<'_, RowScratch>, Vec<_>, Vec<_>), i: usize, idx: &mut Vec<u32>| {
                    let row = first + i;
                    if is_sampled(row, step) {
                        idx.extend_from_slice(&sample[row / step]);
                    } else {
                        let position = CUT_SAMPLE + row - row.div_ceil(step).min(CUT_SAMPLE);
                        neighbours(w, position - start, idx);
                    }
                };
            *complete = fold_chunks(
                (n, first, end - first, chunk),
                carry,
                (init, add),
                &|| (scratch.take(), Vec::new(), Vec::new()),
                &fill,
            );
            *next = end;
        },
        &mut |st, start, rows| {
            if start >= CUT_SAMPLE || start + rows == n {
                on_chunks(st.next, std::mem::take(&mut st.complete));
            }
        },
    )
}

/// [`keys_to_scores`]'s reordering for [`Metric::Euclidean`], from the sorted codes: each run
/// of neighbours whose distinct keys (squared distances) have the same square root put back
/// in index order in `ids` (the codes' indices). The roots go to `roots`, a buffer that stays
/// in cache, in one vectorised pass (in 784 dimensions, where distances crowd together, the
/// pairs of keys close enough for one root are too many to test one by one).
fn order_sqrt_ties(codes: &[u64], ids: &mut [u32], roots: &mut Vec<f32>) {
    roots.clear();
    roots.extend(codes.iter().map(|&c| decode_key(c).sqrt()));
    order_ties(roots, ids);
}

/// The `k` nearest other points of the points `rows` through the general search, for rows
/// whose cut-off fell below their k-th key: one neighbour deeper among all points, then the
/// point's own index dropped (or the last neighbour when it is not among them).
fn search_rows_again(
    metric: Metric,
    points: ArrayView2<'_, f32>,
    k: usize,
    rows: &[usize],
) -> Neighbours {
    let query = points.select(Axis(0), rows);
    let deeper = search(metric, query.view(), points, k + 1, None);
    let mut out = Neighbours {
        indices: Array2::zeros((rows.len(), k)),
        scores: Array2::zeros((rows.len(), k)),
    };
    for (r, &row) in rows.iter().enumerate() {
        let own = row as u32;
        let kept = deeper
            .indices
            .row(r)
            .into_iter()
            .zip(deeper.scores.row(r))
            .filter(|&(&j, _)| j != own)
            .take(k);
        for (c, (&j, &v)) in kept.enumerate() {
            out.indices[[r, c]] = j;
            out.scores[[r, c]] = v;
        }
    }
    out
}

/// Folds the rows `start..start + rows` of a set of `n` rows (`geometry`) into one state per
/// chunk of `chunk` rows, chunks starting at multiples of `chunk` whatever the blocks: each
/// chunk on one worker, its rows in order, `fill` giving row `start + i`'s neighbour indices
/// from a per-worker `workspace`. A chunk begun by the previous block continues from `carry`;
/// one this block leaves unfinished (not the set's last) goes back to `carry`. Returns the
/// finished chunks' states in order.
fn fold_chunks<T: Send, W>(
    (n, start, rows, chunk): (usize, usize, usize, usize),
    carry: &mut Option<T>,
    (init, add): (&(dyn Fn() -> T + Sync), &AddRow<'_, T>),
    workspace: &(dyn Fn() -> W + Sync),
    fill: &(dyn Fn(&mut W, usize, &mut Vec<u32>) + Sync),
) -> Vec<T> {
    let end = start + rows;
    let mut segments = Vec::new();
    let mut s0 = start;
    while s0 < end {
        let s1 = ((s0 / chunk + 1) * chunk).min(end);
        segments.push((s0, s1, None));
        s0 = s1;
    }
    if let Some(first) = segments.first_mut() {
        first.2 = carry.take();
    }
    let mut states: Vec<T> = segments
        .into_par_iter()
        .map_init(
            || (workspace(), Vec::new()),
            |(w, idx), (s0, s1, state)| {
                let mut state = state.unwrap_or_else(init);
                for row in s0..s1 {
                    idx.clear();
                    fill(w, row - start, idx);
                    add(&mut state, row, idx);
                }
                state
            },
        )
        .collect();
    if !end.is_multiple_of(chunk) && end < n {
        *carry = states.pop();
    }
    states
}

/// Sorts the candidates of each row of a complete block (`parts`: the block's lists in
/// parts, `parts[p][i]` row `i`'s part `p`) and writes its first `k` keys as scores to the
/// rows of `indices`/`scores`; returns the rows with fewer than `k` candidates (left
/// unwritten).
fn sort_block(
    metric: Metric,
    k: usize,
    (parts, ids): (&[Vec<RowList>], &[u32]),
    scratch: &Reuse<SortScratch>,
    indices: &mut Array2<u32>,
    scores: &mut Array2<f32>,
) -> Vec<usize> {
    let rows = indices.nrows();
    indices
        .axis_iter_mut(Axis(0))
        .into_par_iter()
        .zip(scores.axis_iter_mut(Axis(0)))
        .enumerate()
        .map_init(
            || (scratch.take(), Vec::new(), Vec::new()),
            |(scratch, lists, next), (i, (mut idx, mut sc))| {
                let Some(sorted) = sort_row((scratch, lists, next), (parts, ids), (i, rows), k)
                else {
                    return Some(i);
                };
                let (Some(idx), Some(sc)) = (idx.as_slice_mut(), sc.as_slice_mut()) else {
                    unreachable!("rows of a standard-layout array are contiguous")
                };
                decode_into(sorted, sc, idx);
                keys_to_scores(metric, sc, idx);
                None
            },
        )
        .flatten()
        .collect()
}

/// The shape of a search: how queries and references are cut into tasks.
struct Plan {
    metric: Metric,
    k: usize,
    self_offset: Option<usize>,
    select: bool,
    qblock: usize,
    part_len: usize,
}

/// Buffers a worker reuses across its tasks: a large-k tile is megabytes, and a fresh one per
/// task costs page faults.
#[derive(Default)]
struct Workspace {
    tile: Vec<f32>,
    scratch: SelectScratch,
    /// One row's hit masks ([`offer_products`]).
    hits: Vec<u16>,
}

/// The search proper; inputs are validated.
///
/// Work is split into (query block × reference range) tasks. Usually there are enough query
/// blocks to keep every thread busy and each task scans all references, writing straight into
/// the output; with few queries the references are cut into ranges as well and the per-range
/// candidates merged afterwards.
///
/// Small `k` streams each query's keys through a sorted buffer ([`TopK`]) with a cheap rejection
/// test. Its O(k) shift per insertion makes large `k` (R-precision and MAP@R on classes of
/// thousands of items) quadratic, so there (see [`use_selection`]) a task holds its queries'
/// whole rows of keys over its range and picks and sorts the best `k` of each row by
/// [`select_sorted`], linear in the row; query blocks and ranges are then sized so that a task's
/// rows take at most [`SELECT_TILE`] entries.
fn search(
    metric: Metric,
    query: ArrayView2<'_, f32>,
    reference: ArrayView2<'_, f32>,
    k: usize,
    self_offset: Option<usize>,
) -> Neighbours {
    let nq = query.nrows();
    let nr = reference.nrows();
    let fq = row_factors(metric, query);
    let fr = row_factors(metric, reference);
    let select = use_selection(k, nr);

    let want_tasks = 4 * rayon::current_num_threads();
    let qblock = if select {
        // Small enough that one task's rows span all references within SELECT_TILE where
        // possible (a range of its own would keep k candidates of its own), and that there are
        // tasks for every thread.
        (SELECT_TILE / nr.max(1))
            .min(nq.div_ceil(want_tasks))
            .clamp(MIN_QUERY_BLOCK, QUERY_BLOCK)
    } else {
        SCAN_QUERY_BLOCK
    };
    let n_qblocks = nq.div_ceil(qblock);
    let mut n_parts = if n_qblocks >= want_tasks {
        1
    } else {
        want_tasks
            .div_ceil(n_qblocks.max(1))
            .min(nr.div_ceil(4 * REF_BLOCK))
            .max(1)
    };
    if select {
        n_parts = n_parts.max(nr.div_ceil((SELECT_TILE / qblock.min(nq)).max(REF_BLOCK)));
    }
    let plan = Plan {
        metric,
        k,
        self_offset,
        select,
        qblock,
        part_len: nr.div_ceil(n_parts),
    };
    let scan = |ws: &mut Workspace, b: usize, part: usize, keys: &mut [f32], idx: &mut [u32]| {
        scan_task(&plan, query, reference, &fq, &fr, b, part, ws, keys, idx)
    };

    let mut indices = Array2::<u32>::zeros((nq, k));
    let mut scores = Array2::<f32>::zeros((nq, k));
    if n_parts == 1 {
        // Every task holds all references: its candidates are the answer (k <= candidates).
        indices
            .axis_chunks_iter_mut(Axis(0), qblock)
            .into_par_iter()
            .zip(scores.axis_chunks_iter_mut(Axis(0), qblock))
            .enumerate()
            .for_each_init(Workspace::default, |ws, (b, (mut idx, mut sc))| {
                let (Some(idx), Some(sc)) = (idx.as_slice_mut(), sc.as_slice_mut()) else {
                    unreachable!("row blocks of a fresh array are contiguous")
                };
                scan(ws, b, 0, sc, idx);
                for (keys, ids) in sc.chunks_mut(k).zip(idx.chunks_mut(k)) {
                    keys_to_scores(metric, keys, ids);
                }
            });
        return Neighbours { indices, scores };
    }

    let partials: Vec<Partial> = (0..n_qblocks * n_parts)
        .into_par_iter()
        .map_init(Workspace::default, |ws, task| {
            let (b, part) = (task / n_parts, task % n_parts);
            let rows = (nq - b * qblock).min(qblock);
            let mut out = Partial {
                keys: vec![0.0; rows * k],
                idx: vec![0; rows * k],
                lens: Vec::new(),
            };
            out.lens = scan(ws, b, part, &mut out.keys, &mut out.idx);
            out
        })
        .collect();
    // Each query's final list, from its block's per-range candidates.
    indices
        .axis_iter_mut(Axis(0))
        .into_par_iter()
        .zip(scores.axis_iter_mut(Axis(0)))
        .enumerate()
        .for_each_init(Vec::new, |row, (q, (mut idx_out, mut score_out))| {
            let (b, i) = (q / qblock, q % qblock);
            row.clear();
            for part in &partials[b * n_parts..(b + 1) * n_parts] {
                let len = part.lens[i];
                let keys = &part.keys[i * k..i * k + len];
                let idx = &part.idx[i * k..i * k + len];
                row.extend(keys.iter().copied().zip(idx.iter().copied()));
            }
            // Ranges are in increasing index order, so a stable sort by key alone keeps ties in
            // index order (and merges the sorted runs in linear time).
            row.sort_by(|x: &(f32, u32), y| cmp_key(x.0, y.0));
            for (r, &(key, id)) in row.iter().take(k).enumerate() {
                score_out[r] = key;
                idx_out[r] = id;
            }
            let (Some(keys), Some(ids)) = (score_out.as_slice_mut(), idx_out.as_slice_mut()) else {
                unreachable!("rows of a fresh array are contiguous")
            };
            keys_to_scores(metric, keys, ids);
        });
    Neighbours { indices, scores }
}

/// Candidates of one range: for each query, up to `k` (key, index) pairs sorted by key then
/// index, with `lens[i]` of them valid.
struct Partial {
    keys: Vec<f32>,
    idx: Vec<u32>,
    lens: Vec<usize>,
}

/// One task: query block `b` against reference range `part`. Writes each query's best `k`
/// (key, index) pairs, sorted, to its `k`-wide row of `out_keys`/`out_idx`; returns how many
/// each row holds.
#[allow(clippy::too_many_arguments)]
fn scan_task(
    plan: &Plan,
    query: ArrayView2<'_, f32>,
    reference: ArrayView2<'_, f32>,
    fq: &Array1<f32>,
    fr: &Array1<f32>,
    b: usize,
    part: usize,
    ws: &mut Workspace,
    out_keys: &mut [f32],
    out_idx: &mut [u32],
) -> Vec<usize> {
    let Plan { metric, k, .. } = *plan;
    let nr = reference.nrows();
    let q0 = b * plan.qblock;
    let q1 = (q0 + plan.qblock).min(query.nrows());
    let (p0, p1) = (part * plan.part_len, ((part + 1) * plan.part_len).min(nr));
    let rows = q1 - q0;
    let q_blk = query.slice(s![q0..q1, ..]);
    let mut lens = vec![0; rows];
    if !plan.select {
        // Small k: each block of references' products, then each row's hits offered.
        let (fq, fr) = (factors(fq), factors(fr));
        for r0 in (p0..p1).step_by(SCAN_REF_BLOCK) {
            let r1 = (r0 + SCAN_REF_BLOCK).min(p1);
            let width = r1 - r0;
            let t = tile_view(&mut ws.tile, rows, width);
            gemm_nt(
                gemm_alpha(metric, -1.0),
                q_blk,
                reference.slice(s![r0..r1, ..]),
                t,
            );
            let products = ws.tile[..rows * width].chunks(width);
            for (i, (row, &fi)) in products.zip(&fq[q0..q1]).enumerate() {
                let skip = plan.self_offset.map_or(usize::MAX, |o| o + q0 + i);
                let mut top = TopK {
                    keys: &mut out_keys[i * k..(i + 1) * k],
                    idx: &mut out_idx[i * k..(i + 1) * k],
                    len: lens[i],
                };
                let row = (row, (metric, fi, &fr[r0..r1]));
                offer_products(&mut top, row, r0, skip, &mut ws.hits);
                lens[i] = top.len;
            }
        }
        return lens;
    }
    let cols = p1 - p0;
    let mut tile = tile_view(&mut ws.tile, rows, cols);
    for r0 in (p0..p1).step_by(REF_BLOCK) {
        let r1 = (r0 + REF_BLOCK).min(p1);
        let t = tile.slice_mut(s![.., r0 - p0..r1 - p0]);
        fill_keys(
            metric,
            (q_blk, fq.slice(s![q0..q1])),
            (reference.slice(s![r0..r1, ..]), fr.slice(s![r0..r1])),
            t,
        );
    }
    // A view of a flat buffer: standard layout, rows contiguous.
    let flat = tile
        .as_slice()
        .expect("a view of a flat buffer is contiguous");
    for (i, keys) in flat.chunks(cols.max(1)).enumerate() {
        let skip = plan.self_offset.map_or(usize::MAX, |o| o + q0 + i);
        lens[i] = select_sorted(
            keys,
            p0,
            skip,
            k,
            &mut ws.scratch,
            &mut out_keys[i * k..(i + 1) * k],
            &mut out_idx[i * k..(i + 1) * k],
        );
    }
    lens
}

/// A fresh [`row_factors`] array as a slice.
fn factors(f: &Array1<f32>) -> &[f32] {
    f.as_slice().expect("a fresh array is contiguous")
}

/// `buf`, resized to `rows · cols` values, as a `rows × cols` tile (a buffer reused across tiles).
fn tile_view(buf: &mut Vec<f32>, rows: usize, cols: usize) -> ArrayViewMut2<'_, f32> {
    buf.resize(rows * cols, 0.0);
    ArrayViewMut2::from_shape((rows, cols), &mut buf[..rows * cols])
        .expect("the buffer holds rows × cols values")
}

/// The keys of every pair of a block of rows `a` and a block of rows `b` (with their
/// [`row_factors`]) into `out`, `a.nrows() × b.nrows()`: "smaller is closer", distances as they
/// are and similarities negated (exactly), in GEMM form.
fn fill_keys(
    metric: Metric,
    (a, fa): (ArrayView2<'_, f32>, ArrayView1<'_, f32>),
    (b, fb): (ArrayView2<'_, f32>, ArrayView1<'_, f32>),
    mut out: ArrayViewMut2<'_, f32>,
) {
    gemm_nt(gemm_alpha(metric, -1.0), a, b, out.view_mut());
    for (mut row, &fi) in out.axis_iter_mut(Axis(0)).zip(fa) {
        row.zip_mut_with(&fb, |v, &fj| *v = finish(metric, *v, fi, fj));
    }
}

/// Turns one query's sorted keys into the metric's scores in place (see [`key_to_score`]),
/// keeping ties in index order.
fn keys_to_scores(metric: Metric, keys: &mut [f32], ids: &mut [u32]) {
    for v in keys.iter_mut() {
        *v = key_to_score(metric, *v);
    }
    if metric == Metric::Euclidean {
        // sqrt is monotone but can map distinct squared distances to one value.
        order_ties(keys, ids);
    }
}

/// Puts each run of equal `scores` (in order) back in index order in `ids`. Windows of 64
/// scores without equal neighbours (most) are passed over by one vectorised test.
fn order_ties(scores: &[f32], ids: &mut [u32]) {
    let n = scores.len();
    let mut i = 1;
    while i < n {
        let end = (i + 64).min(n);
        let any = scores[i - 1..end - 1]
            .iter()
            .zip(&scores[i..end])
            .fold(false, |any, (a, b)| any | (a == b));
        if !any {
            i = end;
            continue;
        }
        while i < end {
            if scores[i] == scores[i - 1] {
                let start = i - 1;
                let mut stop = i + 1;
                while stop < n && scores[stop] == scores[start] {
                    stop += 1;
                }
                ids[start..stop].sort_unstable();
                i = stop;
            } else {
                i += 1;
            }
        }
    }
}

/// Orders keys as the top-k buffer does: `-0.0 == 0.0` (unlike `total_cmp`), NaN (impossible
/// for finite inputs) equal to everything.
fn cmp_key(a: f32, b: f32) -> std::cmp::Ordering {
    a.partial_cmp(&b).unwrap_or(std::cmp::Ordering::Equal)
}

#[inline]
fn key_to_score(metric: Metric, key: f32) -> f32 {
    match metric {
        Metric::Euclidean => key.sqrt(),
        Metric::SquaredEuclidean => key,
        // `0 − key` rather than `−key`: a zero similarity comes back as +0.
        Metric::Cosine | Metric::Dot => 0.0 - key,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Small integers (frequent ties, exact products) or floats, from a fixed LCG.
    fn points(n: usize, d: usize, ints: bool, seed: u64) -> Array2<f32> {
        let mut state = seed;
        Array2::from_shape_simple_fn((n, d), || {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let u = (state >> 40) as f32 / (1u64 << 24) as f32;
            if ints { (u * 4.0).floor() } else { u - 0.5 }
        })
    }

    /// The sort of a row's lists gives the first k of a plain sort of their codes (by key,
    /// then index) whatever the number of radix passes (keys whose offsets need up to 12, 24
    /// and 32 bits), with runs of equal keys (arriving out of index order) inside the first k,
    /// across its end and across the 64-code windows of the tie check; and where a few keys
    /// lie far below the rest (a tenth, set aside and sorted on their own, ties among them
    /// too) or too many do for that (a sixth, three passes instead).
    #[test]
    fn sort_first_k_equals_a_plain_sort() {
        let pool = ChunkPool::default();
        let mut stash = Stash::new(&pool);
        let mut scratch = SortScratch::default();
        // The bulk's keys, and the share of keys drawn far below it (from 1e-3 to 0.25).
        let spreads: [(f32, f32, f32); 5] = [
            (1.0, 1.0 + 1e-4, 0.0),
            (0.5, 1.9, 0.0),
            (-3e30, 2e-30, 0.0),
            (1.0, 1.9, 0.1),
            (1.0, 1.9, 1.0 / 6.0),
        ];
        for (seed, (lo, hi, near)) in spreads.into_iter().enumerate() {
            let mut state = seed as u64 + 1;
            let mut next = || {
                state = state
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                (state >> 40) as f32 / (1u64 << 24) as f32
            };
            // 300 codes, indices in a shuffled order; one key in five repeats an earlier one.
            let mut keys: Vec<f32> = Vec::new();
            for i in 0..300 {
                let u = next();
                let key = if i > 0 && u < 0.2 {
                    keys[(next() * i as f32) as usize]
                } else if u > 1.0 - near {
                    1e-3 + 0.25 * next()
                } else {
                    lo + (hi - lo) * next()
                };
                keys.push(key);
            }
            // Indices in a shuffled order of the positions.
            let ids: Vec<u32> = (0..300).map(|p| ((p * 7919) % 300) as u32).collect();
            let mut sorted = keys.clone();
            sorted.sort_by(|a, b| a.total_cmp(b));
            // Every key, then those at or below the median (the masks leave some out).
            for cut in [f32::INFINITY, sorted[150]] {
                let mut lists: Vec<RowList> = (0..3).map(|_| RowList::default()).collect();
                for (j, part) in keys.chunks(37).enumerate() {
                    lists[j % 3].keep_below(part, cut, j * 37, &mut stash);
                }
                let mut want: Vec<u64> = keys
                    .iter()
                    .zip(&ids)
                    .filter(|&(&key, _)| key <= cut)
                    .map(|(&key, &id)| code(key, id))
                    .collect();
                want.sort_unstable();
                if cut == f32::INFINITY {
                    let widths: Vec<u32> = [want[0], want[want.len() - 1]]
                        .iter()
                        .map(|c| (c >> 32) as u32)
                        .collect();
                    let width = 32 - (widths[1] - widths[0]).leading_zeros();
                    let passes = [1, 2, 3, 3, 3][seed];
                    assert_eq!(
                        width.div_ceil(MAX_DIGIT_BITS),
                        passes,
                        "passes over all keys"
                    );
                } else {
                    assert!(want.len() > 150 && want.len() < 300, "{}", want.len());
                }
                for k in [1, 64, 65, 150, 299, 300] {
                    let k = k.min(want.len());
                    let refs: Vec<&RowList> = lists.iter().collect();
                    let got = sort_first_k(&refs, k, &mut scratch, &refs, &ids).to_vec();
                    assert_eq!(got, want[..k], "spread {seed}, cut {cut}, k = {k}");
                }
            }
        }
    }

    /// The large-k symmetric search gives the general search's lists and score bits whatever
    /// its cut-offs: the usual margin, none at all (every key kept), and cut-offs far below
    /// the k-th key, so that every row is searched again.
    #[test]
    fn symmetric_selection_equals_the_general_search_whatever_the_cut_offs() {
        // Both versions of the per-key loops (AVX-512 where the CPU has it, portable).
        for (portable, ints, d) in [(false, true, 3), (false, false, 9), (true, true, 3)] {
            crate::tile::FORCE_PORTABLE.store(portable, Ordering::Relaxed);
            let x = points(1_100, d, ints, 99);
            for metric in Metric::ALL {
                for k in [70, 1_099] {
                    assert!(uses_symmetric_selection(x.nrows(), k));
                    let want = search(metric, x.view(), x.view(), k, Some(0));
                    for sigmas in [CUT_SIGMAS, 1e9, -1e9] {
                        let mut starts = Vec::new();
                        let mut indices = Vec::new();
                        let mut scores = Vec::new();
                        symmetric_blocks(metric, x.view(), k, sigmas, &mut |s, nn| {
                            starts.push(s);
                            indices.extend(nn.indices.iter().copied());
                            scores.extend(nn.scores.iter().map(|v| (v + 0.0).to_bits()));
                        });
                        let what = format!("{metric} ints={ints} k={k} sigmas={sigmas} {portable}");
                        assert_eq!(starts, vec![0, 512, 1_024], "{what}");
                        assert_eq!(
                            indices,
                            want.indices.iter().copied().collect::<Vec<_>>(),
                            "{what}"
                        );
                        let want_bits: Vec<u32> =
                            want.scores.iter().map(|v| (v + 0.0).to_bits()).collect();
                        assert_eq!(scores, want_bits, "{what}");
                        for chunk in [64, 100, 700] {
                            check_fold(metric, x.view(), k, sigmas, chunk, &want, &what);
                        }
                        // The sample alone: 1,024 rows, all sorted before any is folded.
                        let head = x.slice(s![..1_024, ..]);
                        let k_head = k.min(1_023);
                        let want_head = search(metric, head, head, k_head, Some(0));
                        check_fold(metric, head, k_head, sigmas, 100, &want_head, &what);
                    }
                }
            }
        }
        crate::tile::FORCE_PORTABLE.store(false, Ordering::Relaxed);
    }

    /// The small-k searches' hit masks: the symmetric search (each tile read once for its
    /// rows and its columns, a key offered only where it is at or below a query's worst kept)
    /// gives the general search's lists and score bits, and the general search with the
    /// portable masks gives what it gives with the AVX-512 ones (which the integration tests
    /// hold against a plain sort): integer points, where many keys equal a query's worst kept
    /// and enter or not by their index, and floats; every metric; k from 1 to a buffer wider
    /// than a tile's offers.
    #[test]
    fn small_k_searches_equal_the_general_search_with_either_masks() {
        for (ints, d) in [(true, 3), (false, 9)] {
            let x = points(1_100, d, ints, 5);
            for metric in Metric::ALL {
                for k in [1, 6, 40] {
                    assert!(!use_selection(k, x.nrows()));
                    crate::tile::FORCE_PORTABLE.store(false, Ordering::Relaxed);
                    let want = search(metric, x.view(), x.view(), k, Some(0));
                    let bits = |s: &Array2<f32>| s.mapv(|v| (v + 0.0).to_bits());
                    for portable in [false, true] {
                        crate::tile::FORCE_PORTABLE.store(portable, Ordering::Relaxed);
                        let what = format!("{metric} ints={ints} k={k} portable={portable}");
                        let general = search(metric, x.view(), x.view(), k, Some(0));
                        assert_eq!(general.indices, want.indices, "{what}");
                        assert_eq!(bits(&general.scores), bits(&want.scores), "{what}");
                        let got = search_symmetric(metric, x.view(), k);
                        assert_eq!(got.indices, want.indices, "{what}");
                        assert_eq!(bits(&got.scores), bits(&want.scores), "{what}");
                    }
                }
            }
        }
        crate::tile::FORCE_PORTABLE.store(false, Ordering::Relaxed);
    }

    /// The symmetric fold gives each chunk of rows, in order, exactly the general search's
    /// lists `want`, chunks starting at multiples of `chunk` across blocks.
    fn check_fold(
        metric: Metric,
        x: ArrayView2<'_, f32>,
        k: usize,
        sigmas: f64,
        chunk: usize,
        want: &Neighbours,
        what: &str,
    ) {
        let mut chunks: Vec<Vec<(usize, Vec<u32>)>> = Vec::new();
        let mut dones = Vec::new();
        symmetric_fold(
            metric,
            x,
            k,
            sigmas,
            chunk,
            &Vec::new,
            &|rows: &mut Vec<(usize, Vec<u32>)>, row, nn| rows.push((row, nn.to_vec())),
            &mut |done, states| {
                dones.push(done);
                chunks.extend(states);
            },
        );
        let n = x.nrows();
        // Progress after each block past the sample, up to the end.
        assert!(
            dones.windows(2).all(|w| w[0] < w[1]),
            "{what} chunk {chunk}"
        );
        assert_eq!(dones.last(), Some(&n), "{what} chunk {chunk}");
        let reports = n.div_ceil(SYM_TILE).saturating_sub(2).max(1);
        assert_eq!(dones.len(), reports, "{what} chunk {chunk}");
        assert_eq!(chunks.len(), n.div_ceil(chunk), "{what} chunk {chunk}");
        for (c, rows) in chunks.iter().enumerate() {
            let first = c * chunk;
            let want_rows: Vec<usize> = (first..(first + chunk).min(n)).collect();
            let got_rows: Vec<usize> = rows.iter().map(|(r, _)| *r).collect();
            assert_eq!(got_rows, want_rows, "{what} chunk {chunk}");
            for (r, nn) in rows {
                assert_eq!(nn[..], want.indices.row(*r).to_vec()[..], "{what} row {r}");
            }
        }
    }

    /// Over more blocks than the pool needs lists for at once: the blocks come out in order as
    /// their tile rows finish, each the general search's lists and score bits (with many ties,
    /// and with every row searched again), and the chunks the pool allocated stay within the
    /// memory estimate and below what every row's lists take at once (so they were reused).
    #[test]
    fn symmetric_selection_finishes_blocks_in_order_and_reuses_chunks() {
        let (n, k) = (3_000, 600);
        let workers = rayon::current_num_threads().max(1);
        let estimate = symmetric_peak_entries(n, k, CUT_SIGMAS, workers);
        for (ints, d) in [(false, 8), (true, 3)] {
            let x = points(n, d, ints, 7);
            for metric in [Metric::Euclidean, Metric::Cosine] {
                let want = search(metric, x.view(), x.view(), k, Some(0));
                for sigmas in [CUT_SIGMAS, -1e9] {
                    let what = format!("{metric} ints={ints} sigmas={sigmas}");
                    let mut starts = Vec::new();
                    let made = symmetric_blocks(metric, x.view(), k, sigmas, &mut |s, nn| {
                        let rows = s![s..s + nn.n_queries(), ..];
                        assert_eq!(nn.indices, want.indices.slice(rows), "{what} block {s}");
                        let same_bits = nn
                            .scores
                            .iter()
                            .zip(want.scores.slice(rows))
                            .all(|(a, b)| (a + 0.0).to_bits() == (b + 0.0).to_bits());
                        assert!(same_bits, "{what} block {s}");
                        starts.push(s);
                    });
                    assert_eq!(
                        starts,
                        (0..n).step_by(SYM_TILE).collect::<Vec<_>>(),
                        "{what}"
                    );
                    // Sample rows every other row: the fold's order differs from the set's.
                    for chunk in [64, 333] {
                        check_fold(metric, x.view(), k, sigmas, chunk, &want, &what);
                    }
                    if sigmas == CUT_SIGMAS {
                        let held = made * LIST_CHUNK;
                        assert!(
                            held <= estimate,
                            "{what}: {held} entries, estimate {estimate}"
                        );
                        // Every row has at least k candidates.
                        assert!(held < n * k, "{what}: {held} entries, no reuse");
                    }
                }
            }
        }
    }

    /// A list's kept keys and their indices come back in order across the chunks of keys and
    /// of masks (runs of many lengths, longer ones split, chunks of masks ended early), with
    /// the smallest and largest key, and its chunks go back to the pool when it is released.
    #[test]
    fn row_lists_span_chunks() {
        let pool = ChunkPool::default();
        let mut stash = Stash::new(&pool);
        let mut list = RowList::default();
        let n = 4_000;
        let keys: Vec<f32> = (0..n).map(|i| ((i * 37) % 101) as f32).collect();
        let ids: Vec<u32> = (0..n as u32).map(|p| 1_000 + 3 * p).collect();
        let cut = 60.0;
        let mut from = 0;
        for len in [37, 530, 1, 16, 17, 600, 45].into_iter().cycle() {
            let to = (from + len).min(n);
            list.keep_below(&keys[from..to], cut, from, &mut stash);
            from = to;
            if from == n {
                break;
            }
        }
        // A run of which nothing is kept leaves the list as it was, masks included.
        let before = (list.len, list.mask_full.len(), list.mask_at);
        list.keep_below(&[61.0; 40], cut, 7, &mut stash);
        list.append_run((9, 40), &[0; 3], &[], &mut stash);
        assert_eq!((list.len, list.mask_full.len(), list.mask_at), before);
        let kept: Vec<usize> = (0..n).filter(|&p| keys[p] <= cut).collect();
        let want_keys: Vec<u32> = kept
            .iter()
            .map(|&p| (code(keys[p], 0) >> 32) as u32)
            .collect();
        let back: Vec<u32> = list.parts().flatten().copied().collect();
        assert_eq!(back, want_keys);
        let mut back_ids = Vec::new();
        list.kept_ids(&ids, &mut back_ids);
        assert_eq!(back_ids, kept.iter().map(|&p| ids[p]).collect::<Vec<_>>());
        assert_eq!(
            (list.lo, list.hi),
            ((code(0.0, 0) >> 32) as u32, (code(60.0, 0) >> 32) as u32)
        );
        let chunks = kept.len().div_ceil(LIST_CHUNK);
        assert_eq!(list.n_chunks(), chunks);
        let mask_chunks = list.mask_full.len() + 1;
        assert!(mask_chunks > 3, "{mask_chunks} chunks of masks");
        let mut freed = Chunks::default();
        list.release(&mut freed);
        assert_eq!((list.len, list.n_chunks()), (0, 0));
        assert_eq!((freed.keys.len(), freed.masks.len()), (chunks, mask_chunks));
        // Released, the list starts again from nothing.
        let mut again = Vec::new();
        list.kept_ids(&ids, &mut again);
        assert!(again.is_empty() && list.parts().next().is_none());
        pool.give_back(&mut freed);
        drop(stash);
        assert_eq!(pool.made.load(Ordering::Relaxed), chunks);
        let free = pool.free.lock().map(|f| (f.keys.len(), f.masks.len()));
        assert_eq!(free.unwrap_or((0, 0)), (chunks, mask_chunks));
    }

    /// The cut-off's sample rank: a margin above the expected rank of the k-th key, none when
    /// it would reach the whole sample.
    #[test]
    fn cut_rank_has_its_margin() {
        // 35,000 rows, k = 6,999: q = 6,999 / 34,999 = 0.19998, expected rank 1,024 q = 204.78,
        // plus 3 · √(204.78 · 0.80002) = 3 · 12.80, plus 2: 245.2.
        assert_eq!(cut_rank(35_000, 6_999, 3.0), Some(245));
        // A small k: q = 99 / 99,999, expected 1.014, plus 3 · √(1.014 · 0.999) = 3.02, plus 2.
        assert_eq!(cut_rank(100_000, 99, 3.0), Some(6));
        assert_eq!(cut_rank(1_100, 1_099, 3.0), None);
        assert_eq!(cut_rank(35_000, 6_999, -1e9), Some(0));
    }
}
