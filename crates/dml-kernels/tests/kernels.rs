//! The ndarray kernels against naive f64 references, plus their invariants and errors.
//!
//! Tolerances. The kernels use the GEMM form in f32, whose error for the squared distance is
//! bounded by a few `d · ε · (‖a‖² + ‖b‖²)` (ε = 2⁻²⁴); with d ≤ 24 we assert
//! `|got − want| ≤ 1e-5 · (‖a‖² + ‖b‖²)` for squared Euclidean, the square root of that bound for
//! Euclidean (`|√x − √y| ≤ √|x − y|`), `1e-5 · ‖a‖·‖b‖` for dot products and `1e-5` for cosine.
//! On integer-valued inputs every sum is exact in f32, so there the k-NN is checked for exact
//! equality with a full sort of the pairwise matrix, ties included.

use dml_kernels::{
    Error, Metric, NORM_EPS, knn, knn_self, knn_self_blocks, knn_self_blocks_memory, knn_self_fold,
    knn_self_fold_memory, knn_self_rows, l2_normalize, l2_normalize_inplace, paired, pairwise,
    pairwise_bands, pairwise_into, self_pairwise,
};
use ndarray::{Array2, ArrayView1, ArrayView2, s};
use proptest::prelude::*;

// ---------------------------------------------------------------------------------------------
// Naive references (f64, direct formulas, O(n·m·d)).

fn norm64(x: ArrayView1<'_, f32>) -> f64 {
    x.iter()
        .map(|&v| f64::from(v) * f64::from(v))
        .sum::<f64>()
        .sqrt()
}

fn naive(metric: Metric, a: ArrayView1<'_, f32>, b: ArrayView1<'_, f32>) -> f64 {
    let sq: f64 = a
        .iter()
        .zip(b)
        .map(|(&x, &y)| (f64::from(x) - f64::from(y)).powi(2))
        .sum();
    let dot: f64 = a
        .iter()
        .zip(b)
        .map(|(&x, &y)| f64::from(x) * f64::from(y))
        .sum();
    let eps = f64::from(NORM_EPS);
    match metric {
        Metric::Euclidean => sq.sqrt(),
        Metric::SquaredEuclidean => sq,
        Metric::Cosine => dot / (norm64(a).max(eps) * norm64(b).max(eps)),
        Metric::Dot => dot,
    }
}

fn tolerance(metric: Metric, a: ArrayView1<'_, f32>, b: ArrayView1<'_, f32>) -> f64 {
    let (na, nb) = (norm64(a), norm64(b));
    let sq_tol = 1e-5 * (na * na + nb * nb) + 1e-30;
    match metric {
        Metric::Euclidean => sq_tol.sqrt(),
        Metric::SquaredEuclidean => sq_tol,
        Metric::Cosine => 1e-5,
        Metric::Dot => 1e-5 * na * nb + 1e-30,
    }
}

fn assert_matches_naive(
    metric: Metric,
    a: ArrayView2<'_, f32>,
    b: ArrayView2<'_, f32>,
    got: ArrayView2<'_, f32>,
) {
    assert_eq!(got.dim(), (a.nrows(), b.nrows()));
    for i in 0..a.nrows() {
        for j in 0..b.nrows() {
            let want = naive(metric, a.row(i), b.row(j));
            let tol = tolerance(metric, a.row(i), b.row(j));
            let g = f64::from(got[[i, j]]);
            assert!(
                (g - want).abs() <= tol,
                "{metric} [{i},{j}]: got {g}, want {want} (tol {tol})"
            );
        }
    }
}

/// A full sort of each row of a pairwise matrix: closest first, ties by lower index, optionally
/// leaving out the diagonal.
fn full_sort(
    metric: Metric,
    d: ArrayView2<'_, f32>,
    k: usize,
    skip_diag: bool,
) -> (Array2<u32>, Array2<f32>) {
    let mut idx = Array2::zeros((d.nrows(), k));
    let mut val = Array2::zeros((d.nrows(), k));
    for i in 0..d.nrows() {
        let mut order: Vec<usize> = (0..d.ncols()).filter(|&j| !(skip_diag && j == i)).collect();
        order.sort_by(|&x, &y| {
            let (vx, vy) = (d[[i, x]], d[[i, y]]);
            let c = if metric.is_similarity() {
                vy.partial_cmp(&vx)
            } else {
                vx.partial_cmp(&vy)
            }
            // partial_cmp, not total_cmp: −0 and +0 are the same value (inputs are finite).
            .expect("finite");
            c.then(x.cmp(&y))
        });
        for (r, &j) in order.iter().take(k).enumerate() {
            idx[[i, r]] = j as u32;
            val[[i, r]] = d[[i, j]];
        }
    }
    (idx, val)
}

// ---------------------------------------------------------------------------------------------
// Strategies.

fn metric() -> impl Strategy<Value = Metric> {
    prop::sample::select(Metric::ALL.to_vec())
}

fn matrix(rows: std::ops::Range<usize>, d: usize) -> impl Strategy<Value = Array2<f32>> {
    rows.prop_flat_map(move |n| {
        prop::collection::vec(-10.0_f32..10.0, n * d)
            .prop_map(move |v| Array2::from_shape_vec((n, d), v).expect("shape"))
    })
}

/// Small integers: every product and sum is exact in f32, and ties are frequent.
fn int_matrix(rows: std::ops::Range<usize>, d: usize) -> impl Strategy<Value = Array2<f32>> {
    rows.prop_flat_map(move |n| {
        prop::collection::vec(-2_i8..=2, n * d).prop_map(move |v| {
            Array2::from_shape_vec((n, d), v.into_iter().map(f32::from).collect()).expect("shape")
        })
    })
}

fn two_matrices() -> impl Strategy<Value = (Array2<f32>, Array2<f32>)> {
    (1_usize..24).prop_flat_map(|d| (matrix(0..20, d), matrix(0..20, d)))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn pairwise_matches_naive(metric in metric(), (a, b) in two_matrices()) {
        let got = pairwise(metric, a.view(), b.view()).expect("pairwise");
        assert_matches_naive(metric, a.view(), b.view(), got.view());
        if !metric.is_similarity() {
            prop_assert!(got.iter().all(|&v| v >= 0.0));
        }
        if metric == Metric::Cosine {
            prop_assert!(got.iter().all(|&v| (-1.0..=1.0).contains(&v)));
        }
    }

    #[test]
    fn pairwise_into_equals_pairwise(metric in metric(), (a, b) in two_matrices()) {
        let want = pairwise(metric, a.view(), b.view()).expect("pairwise");
        // A transposed (column-major) output buffer exercises non-contiguous strides.
        let mut out = Array2::from_elem((b.nrows(), a.nrows()), f32::NAN);
        pairwise_into(metric, a.view(), b.view(), out.view_mut().reversed_axes()).expect("into");
        prop_assert_eq!(out.t(), want.view());
    }

    #[test]
    fn self_pairwise_invariants(metric in metric(), x in (1_usize..24).prop_flat_map(|d| matrix(0..24, d))) {
        let d = self_pairwise(metric, x.view()).expect("self_pairwise");
        assert_matches_naive(metric, x.view(), x.view(), d.view());
        prop_assert_eq!(d.view(), d.t());
        if !metric.is_similarity() {
            prop_assert!(d.diag().iter().all(|&v| v == 0.0));
            prop_assert!(d.iter().all(|&v| v >= 0.0));
        }
    }

    #[test]
    fn euclidean_triangle_inequality(x in (1_usize..16).prop_flat_map(|d| matrix(3..12, d))) {
        let d = self_pairwise(Metric::Euclidean, x.view()).expect("self_pairwise");
        let max_sq = x.rows().into_iter().map(|r| norm64(r).powi(2)).fold(0.0, f64::max);
        // Each of the three distances may be off by √(1e-5 · 2·max‖x‖²).
        let tol = 3.0 * (2e-5 * max_sq).sqrt() + 1e-6;
        let n = x.nrows();
        for i in 0..n {
            for j in 0..n {
                for k in 0..n {
                    let lhs = f64::from(d[[i, k]]);
                    let rhs = f64::from(d[[i, j]]) + f64::from(d[[j, k]]);
                    prop_assert!(lhs <= rhs + tol, "d({i},{k}) = {lhs} > {rhs}");
                }
            }
        }
    }

    #[test]
    fn knn_equals_full_sort_exactly_on_integers(
        metric in metric(),
        (q, r) in (1_usize..8).prop_flat_map(|d| (int_matrix(1..12, d), int_matrix(1..40, d))),
        k_frac in 0.0_f64..1.0,
    ) {
        let k = 1 + (k_frac * (r.nrows() - 1) as f64) as usize;
        let nn = knn(metric, q.view(), r.view(), k).expect("knn");
        let d = pairwise(metric, q.view(), r.view()).expect("pairwise");
        let (idx, val) = full_sort(metric, d.view(), k, false);
        prop_assert_eq!(&nn.indices, &idx);
        prop_assert_eq!(&nn.scores, &val);
    }

    #[test]
    fn knn_self_equals_full_sort_exactly_on_integers(
        metric in metric(),
        x in (1_usize..8).prop_flat_map(|d| int_matrix(2..40, d)),
        k_frac in 0.0_f64..1.0,
    ) {
        let k = 1 + (k_frac * (x.nrows() - 2) as f64) as usize;
        let nn = knn_self(metric, x.view(), k).expect("knn_self");
        let d = self_pairwise(metric, x.view()).expect("self_pairwise");
        let (idx, val) = full_sort(metric, d.view(), k, true);
        prop_assert_eq!(&nn.indices, &idx);
        prop_assert_eq!(&nn.scores, &val);
        for (i, row) in nn.indices.rows().into_iter().enumerate() {
            prop_assert!(row.iter().all(|&j| j as usize != i));
        }
    }

    /// Large k (the selection buffer, k >= 64) on small integers: heavy ties and duplicate
    /// rows, k anywhere up to every reference.
    #[test]
    fn large_k_knn_equals_full_sort_exactly_on_integers(
        metric in metric(),
        (q, r) in (1_usize..5).prop_flat_map(|d| (int_matrix(1..40, d), int_matrix(64..400, d))),
        k_frac in 0.0_f64..1.0,
    ) {
        let k = 64 + (k_frac * (r.nrows() - 64) as f64) as usize;
        let nn = knn(metric, q.view(), r.view(), k).expect("knn");
        let d = pairwise(metric, q.view(), r.view()).expect("pairwise");
        let (idx, val) = full_sort(metric, d.view(), k, false);
        prop_assert_eq!(&nn.indices, &idx);
        prop_assert_eq!(&nn.scores, &val);
        let nn = knn_self(metric, r.view(), k.min(r.nrows() - 1)).expect("knn_self");
        let d = self_pairwise(metric, r.view()).expect("self_pairwise");
        let (idx, val) = full_sort(metric, d.view(), k.min(r.nrows() - 1), true);
        prop_assert_eq!(&nn.indices, &idx);
        prop_assert_eq!(&nn.scores, &val);
    }

    #[test]
    fn knn_matches_naive_on_floats(
        metric in metric(),
        (q, r) in (1_usize..16).prop_flat_map(|d| (matrix(1..10, d), matrix(1..40, d))),
        k in 1_usize..6,
    ) {
        let k = k.min(r.nrows());
        let nn = knn(metric, q.view(), r.view(), k).expect("knn");
        for i in 0..q.nrows() {
            // The reference's k best values (f64), which the returned scores must match within
            // tolerance, in order; and each returned score must be the pair's own value.
            let mut want: Vec<f64> = (0..r.nrows()).map(|j| naive(metric, q.row(i), r.row(j))).collect();
            want.sort_by(|x, y| if metric.is_similarity() { y.total_cmp(x) } else { x.total_cmp(y) });
            let tol = 2.0 * (0..r.nrows()).map(|j| tolerance(metric, q.row(i), r.row(j))).fold(0.0, f64::max);
            for (c, &w) in want.iter().take(k).enumerate() {
                let j = nn.indices[[i, c]] as usize;
                let got = f64::from(nn.scores[[i, c]]);
                prop_assert!((got - w).abs() <= tol, "rank {c}: {got} vs {w}");
                prop_assert!((got - naive(metric, q.row(i), r.row(j))).abs() <= tol);
            }
            for c in 1..k {
                let (prev, cur) = (nn.scores[[i, c - 1]], nn.scores[[i, c]]);
                prop_assert!(!metric.is_closer(cur, prev), "scores out of order");
                if prev == cur {
                    prop_assert!(nn.indices[[i, c - 1]] < nn.indices[[i, c]], "tie not by index");
                }
            }
        }
    }

    #[test]
    fn l2_normalize_gives_unit_rows(x in (1_usize..24).prop_flat_map(|d| matrix(0..10, d))) {
        let u = l2_normalize(x.view());
        for (row, orig) in u.rows().into_iter().zip(x.rows()) {
            let n = norm64(row);
            if norm64(orig) > 1e-6 {
                prop_assert!((n - 1.0).abs() <= 1e-5, "norm {n}");
            }
        }
        let mut v = x.clone();
        l2_normalize_inplace(v.view_mut());
        prop_assert_eq!(v, u);
    }
}

#[test]
fn zero_and_tiny_rows_stay_finite() {
    let x = ndarray::array![[0.0_f32, 0.0, 0.0], [1e-30, 0.0, -1e-30], [1.0, 2.0, 2.0]];
    let u = l2_normalize(x.view());
    assert!(u.iter().all(|v| v.is_finite()));
    assert_eq!(u.row(0).to_vec(), vec![0.0, 0.0, 0.0]);
    assert_eq!(u.row(2).to_vec(), vec![1.0 / 3.0, 2.0 / 3.0, 2.0 / 3.0]);
    // Cosine with a zero row is 0, not NaN.
    let c = self_pairwise(Metric::Cosine, x.view()).expect("cosine");
    assert!(c.iter().all(|v| v.is_finite()));
    assert_eq!(c[[0, 2]], 0.0);
}

/// Sizes that cross the kernels' internal tile and block boundaries (k-NN blocks of 512 queries ×
/// 512 references for small k, 128 × 1024 for large k; pairwise tiles of up to 256 rows × 512
/// columns).
#[test]
fn knn_across_block_boundaries() {
    let d = 5;
    let q = Array2::from_shape_fn((530, d), |(i, j)| ((i * 7 + j * 3) % 5) as f32 - 2.0);
    let r = Array2::from_shape_fn((2100, d), |(i, j)| {
        ((i * 13 + j * 11 + i / 7) % 5) as f32 - 2.0
    });
    for metric in Metric::ALL {
        let nn = knn(metric, q.view(), r.view(), 17).expect("knn");
        let dm = pairwise(metric, q.view(), r.view()).expect("pairwise");
        let (idx, val) = full_sort(metric, dm.view(), 17, false);
        assert_eq!(nn.indices, idx, "{metric}");
        assert_eq!(nn.scores, val, "{metric}");
        let nn = knn_self(metric, r.slice(s![..1500, ..]), 9).expect("knn_self");
        let dm = self_pairwise(metric, r.slice(s![..1500, ..])).expect("self_pairwise");
        let (idx, val) = full_sort(metric, dm.view(), 9, true);
        assert_eq!(nn.indices, idx, "{metric}");
        assert_eq!(nn.scores, val, "{metric}");
    }
}

/// Few queries against many references: the search also splits the references into ranges and
/// merges the per-range candidates.
#[test]
fn knn_with_few_queries_splits_references() {
    let d = 3;
    let q = Array2::from_shape_fn((3, d), |(i, j)| ((i + 2 * j) % 5) as f32 - 2.0);
    let r = Array2::from_shape_fn((20_000, d), |(i, j)| {
        ((i * 7 + j * 5 + i / 3) % 5) as f32 - 2.0
    });
    for metric in Metric::ALL {
        let nn = knn(metric, q.view(), r.view(), 40).expect("knn");
        let dm = pairwise(metric, q.view(), r.view()).expect("pairwise");
        let (idx, val) = full_sort(metric, dm.view(), 40, false);
        assert_eq!(nn.indices, idx, "{metric}");
        assert_eq!(nn.scores, val, "{metric}");
    }
}

/// Large k across query blocks and reference ranges: few queries (ranges merged), many queries
/// (blocks of several sizes), and k equal to every other reference.
#[test]
fn large_k_knn_across_blocks_and_ranges() {
    let d = 3;
    let q = Array2::from_shape_fn((3, d), |(i, j)| ((i + 2 * j) % 5) as f32 - 2.0);
    let r = Array2::from_shape_fn((20_000, d), |(i, j)| {
        ((i * 7 + j * 5 + i / 3) % 5) as f32 - 2.0
    });
    for metric in Metric::ALL {
        let nn = knn(metric, q.view(), r.view(), 5_000).expect("knn");
        let dm = pairwise(metric, q.view(), r.view()).expect("pairwise");
        let (idx, val) = full_sort(metric, dm.view(), 5_000, false);
        assert_eq!(nn.indices, idx, "{metric}");
        assert_eq!(nn.scores, val, "{metric}");
    }
    let x = Array2::from_shape_fn((1_300, 4), |(i, j)| {
        ((i * 13 + j * 11 + i / 7) % 5) as f32 - 2.0
    });
    for metric in Metric::ALL {
        for k in [64, 700, 1_299] {
            let nn = knn_self(metric, x.view(), k).expect("knn_self");
            let dm = self_pairwise(metric, x.view()).expect("self_pairwise");
            let (idx, val) = full_sort(metric, dm.view(), k, true);
            assert_eq!(nn.indices, idx, "{metric} k={k}");
            assert_eq!(nn.scores, val, "{metric} k={k}");
        }
    }
}

/// `knn_self_rows` over consecutive ranges gives exactly the rows of one `knn_self`, for small
/// and large k; a range outside the matrix is a named error.
#[test]
fn knn_self_rows_equals_knn_self() {
    let x = Array2::from_shape_fn((700, 3), |(i, j)| {
        ((i * 7 + j * 5 + i / 3) % 5) as f32 - 2.0
    });
    for metric in Metric::ALL {
        for k in [5, 300, 699] {
            let all = knn_self(metric, x.view(), k).expect("knn_self");
            for (start, end) in [(0, 1), (1, 300), (300, 700), (699, 700)] {
                let some = knn_self_rows(metric, x.view(), start..end, k).expect("rows");
                assert_eq!(
                    some.indices,
                    all.indices.slice(s![start..end, ..]),
                    "{metric} k={k}"
                );
                assert_eq!(
                    some.scores,
                    all.scores.slice(s![start..end, ..]),
                    "{metric} k={k}"
                );
            }
        }
    }
    let err = knn_self_rows(Metric::Euclidean, x.view(), 600..701, 3).expect_err("outside");
    assert!(
        matches!(
            err,
            Error::RowRange {
                end: 701,
                rows: 700,
                ..
            }
        ),
        "{err}"
    );
}

/// The symmetric leave-one-out search (`knn_self` on a set of 1,024 rows or more, small k)
/// gives exactly what the general search gives, on floats: the same neighbours and the same
/// score bits, whichever point of a pair asks.
#[test]
fn symmetric_self_search_equals_the_general_search_on_floats() {
    let mut state = 12345u64;
    let x = Array2::from_shape_simple_fn((1_100, 7), || {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((state >> 40) as f32 / (1u64 << 24) as f32) - 0.5
    });
    for metric in Metric::ALL {
        for k in [1, 10, 63] {
            let whole = knn_self(metric, x.view(), k).expect("knn_self");
            for (start, end) in [(0, 600), (600, 1_100)] {
                // A part of the rows goes through the general search.
                let part = knn_self_rows(metric, x.view(), start..end, k).expect("rows");
                assert_eq!(
                    part.indices,
                    whole.indices.slice(s![start..end, ..]),
                    "{metric} k={k}"
                );
                let same_bits = part
                    .scores
                    .iter()
                    .zip(whole.scores.slice(s![start..end, ..]))
                    .all(|(a, b)| a.to_bits() == b.to_bits() || (*a == 0.0 && *b == 0.0));
                assert!(same_bits, "{metric} k={k}");
            }
        }
    }
}

/// `knn_self_blocks` hands out exactly one `knn_self` call's lists and score bits, block by
/// block in order, and `knn_self_fold` its lists in chunks of rows in order (chunks across
/// blocks too), along each of their paths: large k by symmetry (at a high and a low dimension),
/// large k streamed (a set under 1,024 rows), small k; and its memory estimate names only the
/// first.
#[test]
fn knn_self_blocks_equal_knn_self() {
    let mut state = 4242u64;
    let mut next = || {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((state >> 40) as f32 / (1u64 << 24) as f32) - 0.5
    };
    for (n, d, k, symmetric) in [
        (1_100, 512, 300, true),
        (1_100, 5, 300, true),
        (1_000, 5, 300, false),
        (1_100, 512, 10, false),
    ] {
        let x = Array2::from_shape_simple_fn((n, d), &mut next);
        assert_eq!(knn_self_blocks_memory(n, k).is_some(), symmetric);
        // The fold's copy of the points, the sample's tile rows and its rows' neighbours.
        let extra = 4 * (n * d + 1_024 * (n + k));
        assert_eq!(
            knn_self_fold_memory(n, d, k),
            knn_self_blocks_memory(n, k).map(|b| b + extra)
        );
        for metric in [Metric::Euclidean, Metric::Cosine] {
            let whole = knn_self(metric, x.view(), k).expect("knn_self");
            let mut starts = Vec::new();
            let mut rows = 0;
            knn_self_blocks(metric, x.view(), k, &mut |start, nn| {
                starts.push(start);
                let want = s![start..start + nn.n_queries(), ..];
                assert_eq!(
                    nn.indices,
                    whole.indices.slice(want),
                    "{metric} d={d} k={k}"
                );
                let same_bits = nn
                    .scores
                    .iter()
                    .zip(whole.scores.slice(want))
                    .all(|(a, b)| a.to_bits() == b.to_bits() || (*a == 0.0 && *b == 0.0));
                assert!(same_bits, "{metric} d={d} k={k}");
                rows += nn.n_queries();
            })
            .expect("blocks");
            assert_eq!(starts, (0..n).step_by(512).collect::<Vec<_>>());
            assert_eq!(rows, n);
            for chunk in [1, 64, 100, 700, 5_000] {
                let mut chunks = Vec::new();
                let mut dones = Vec::new();
                knn_self_fold(
                    metric,
                    x.view(),
                    k,
                    chunk,
                    &Vec::new,
                    &|rows: &mut Vec<(usize, Vec<u32>)>, row, nn| rows.push((row, nn.to_vec())),
                    &mut |done, states| {
                        dones.push(done);
                        chunks.extend(states);
                    },
                )
                .expect("fold");
                let what = format!("{metric} d={d} k={k} chunk={chunk}");
                assert!(dones.windows(2).all(|w| w[0] < w[1]), "{what}");
                assert_eq!(dones.last(), Some(&n), "{what}");
                assert_eq!(chunks.len(), n.div_ceil(chunk), "{what}");
                for (c, rows) in chunks.iter().enumerate() {
                    let want: Vec<usize> = (c * chunk..((c + 1) * chunk).min(n)).collect();
                    let got: Vec<usize> = rows.iter().map(|(r, _)| *r).collect();
                    assert_eq!(got, want, "{what}");
                    for (r, nn) in rows {
                        assert_eq!(nn[..], whole.indices.row(*r).to_vec()[..], "{what} row {r}");
                    }
                }
            }
        }
    }
    let x = Array2::<f32>::zeros((10, 3));
    let fold = |chunk| {
        knn_self_fold(
            Metric::Euclidean,
            x.view(),
            2,
            chunk,
            &|| 0,
            &|_, _, _| {},
            &mut |_, _| {},
        )
    };
    assert!(matches!(fold(0), Err(Error::ZeroChunk)));
    assert!(fold(1).is_ok());
}

/// `pairwise_bands` hands out exactly `pairwise`'s values, band by band in order, and the k-NN's
/// scores are the same bits (the whole-ranking evaluation ranks from the bands, the depth-k one
/// from the k-NN).
#[test]
fn pairwise_bands_are_pairwise_and_knn_values() {
    let mut state = 777u64;
    let mut next = || {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((state >> 40) as f32 / (1u64 << 24) as f32) - 0.5
    };
    // 784 columns: a GEMM whose inner dimension is blocked.
    let a = Array2::from_shape_simple_fn((150, 784), &mut next);
    let b = Array2::from_shape_simple_fn((1_300, 784), &mut next);
    for metric in Metric::ALL {
        let full = pairwise(metric, a.view(), b.view()).expect("pairwise");
        let bands = pairwise_bands(metric, a.view(), b.view(), 64, |r0, band| {
            (r0, band.to_owned())
        })
        .expect("bands");
        assert_eq!(
            bands.iter().map(|(r0, _)| *r0).collect::<Vec<_>>(),
            vec![0, 64, 128]
        );
        for (r0, band) in &bands {
            let want = full.slice(s![*r0..*r0 + band.nrows(), ..]);
            assert!(
                band.iter()
                    .zip(want)
                    .all(|(x, y)| x.to_bits() == y.to_bits()),
                "{metric} band {r0}"
            );
        }
        let nn = knn(metric, a.view(), b.view(), 5).expect("knn");
        for (q, (idx, sc)) in nn
            .indices
            .outer_iter()
            .zip(nn.scores.outer_iter())
            .enumerate()
        {
            for (&j, &v) in idx.iter().zip(sc) {
                let p = full[[q, j as usize]];
                assert!(
                    p.to_bits() == v.to_bits() || (p == 0.0 && v == 0.0),
                    "{metric}"
                );
            }
        }
    }
    assert!(matches!(
        pairwise_bands(Metric::Euclidean, a.view(), b.view(), 0, |_, _| ()),
        Err(Error::ZeroBand)
    ));
    let c = Array2::<f32>::zeros((3, 5));
    assert!(matches!(
        pairwise_bands(Metric::Euclidean, a.view(), c.view(), 8, |_, _| ()),
        Err(Error::DimensionMismatch { .. })
    ));
}

/// `paired` gives each listed pair's value: that of `pairwise` to f32 rounding (another
/// summation order), exactly on integer inputs.
#[test]
fn paired_values_are_pairwise_values() {
    let mut state = 99u64;
    let mut next = || {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((state >> 40) as f32 / (1u64 << 24) as f32) - 0.5
    };
    let a = Array2::from_shape_simple_fn((40, 37), &mut next);
    let b = Array2::from_shape_simple_fn((30, 37), &mut next);
    let ints = a.mapv(|v| (v * 8.0).round());
    let pairs: Vec<[u32; 2]> = (0..200u32).map(|p| [p % 40, (p * 7) % 30]).collect();
    for metric in Metric::ALL {
        let full = pairwise(metric, a.view(), b.view()).expect("pairwise");
        let got = paired(metric, a.view(), b.view(), &pairs).expect("paired");
        for (&[i, j], &v) in pairs.iter().zip(&got) {
            let want = full[[i as usize, j as usize]];
            assert!(
                (v - want).abs() <= 1e-5 * (1.0 + want.abs()),
                "{metric}: {v} vs {want}"
            );
        }
        let sq = pairs.iter().map(|&[i, j]| [i, j % 40]).collect::<Vec<_>>();
        let exact = pairwise(metric, ints.view(), ints.view()).expect("pairwise");
        let got = paired(metric, ints.view(), ints.view(), &sq).expect("paired");
        if metric != Metric::Cosine {
            for (&[i, j], &v) in sq.iter().zip(&got) {
                assert_eq!(v, exact[[i as usize, j as usize]], "{metric} integers");
            }
        }
    }
    let err = paired(Metric::Dot, a.view(), b.view(), &[[0, 0], [3, 30]]).expect_err("row 30");
    assert!(
        matches!(
            err,
            Error::PairIndex {
                pair: 1,
                index: 30,
                matrix: "b",
                rows: 30
            }
        ),
        "{err}"
    );
    assert!(
        paired(Metric::Dot, a.view(), b.view(), &[])
            .expect("no pairs")
            .is_empty()
    );
}

/// Entry (i, j) of `self_pairwise(metric, x)` against the naive value (zero on the diagonal of a
/// distance).
fn assert_self_entry(metric: Metric, x: ArrayView2<'_, f32>, d: &Array2<f32>, i: usize, j: usize) {
    let want = if i == j && !metric.is_similarity() {
        0.0
    } else {
        naive(metric, x.row(i), x.row(j))
    };
    let tol = tolerance(metric, x.row(i), x.row(j));
    let got = d[[i, j]];
    assert!(
        (f64::from(got) - want).abs() <= tol,
        "{metric} n={} [{i},{j}]: {got} vs {want}",
        x.nrows()
    );
}

/// Outputs over 4 MiB take the huge-page allocation path; check them entry by entry.
#[test]
fn large_outputs_match_naive() {
    let x = Array2::from_shape_fn((1100, 3), |(i, j)| {
        ((i * 5 + j * 3 + i / 11) % 7) as f32 - 3.0
    });
    let y = x.slice(s![..1000, ..]);
    for metric in Metric::ALL {
        let d = self_pairwise(metric, x.view()).expect("self_pairwise");
        assert_eq!(d.view(), d.t());
        let p = pairwise(metric, x.view(), y).expect("pairwise");
        for i in (0..1100).step_by(7) {
            for j in (0..1000).step_by(3) {
                assert_self_entry(metric, x.view(), &d, i, j);
                let tol = tolerance(metric, x.row(i), y.row(j));
                assert!((f64::from(p[[i, j]]) - naive(metric, x.row(i), y.row(j))).abs() <= tol);
            }
        }
    }
}

/// Sizes that cut the output into several bands of rows, with band edges off the tile grid:
/// every entry of the upper triangle (each band is computed from its own diagonal) and its
/// mirror image against the naive distance.
#[test]
fn self_pairwise_every_entry_across_bands() {
    for n in [129, 300, 777] {
        let x = Array2::from_shape_fn((n, 6), |(i, j)| {
            ((i * 11 + j * 5 + i / 13) % 9) as f32 - 4.0
        });
        for metric in [Metric::Euclidean, Metric::Cosine] {
            let d = self_pairwise(metric, x.view()).expect("self_pairwise");
            for i in 0..n {
                for j in i..n {
                    assert_self_entry(metric, x.view(), &d, i, j);
                    assert_eq!(d[[i, j]], d[[j, i]], "{metric} n={n} [{i},{j}]");
                }
            }
        }
    }
}

/// Products up to 256 × 256 × 128 multiply-adds are computed on the calling thread (the
/// self-distance matrix in thinner bands), larger ones in parallel: on both sides of that size
/// every entry matches the naive value, the self-distance matrix is exactly symmetric with a
/// zero diagonal, and `pairwise` of a matrix with itself agrees with `self_pairwise`.
#[test]
fn products_across_the_calling_thread_threshold_match_naive() {
    let x = Array2::from_shape_fn((257, 128), |(i, j)| {
        (((i * 37 + j * 11) % 101) as f32 / 50.0 - 1.0) * (1.0 + (i % 3) as f32)
    });
    for n in [255, 256, 257] {
        let x = x.slice(s![..n, ..]);
        for metric in Metric::ALL {
            let d = self_pairwise(metric, x).expect("self_pairwise");
            let p = pairwise(metric, x, x).expect("pairwise");
            for i in 0..n {
                for j in i..n {
                    assert_self_entry(metric, x, &d, i, j);
                    assert_eq!(d[[i, j]], d[[j, i]], "{metric} n={n} [{i},{j}]");
                    let tol = tolerance(metric, x.row(i), x.row(j));
                    assert!((f64::from(p[[i, j]]) - f64::from(d[[i, j]])).abs() <= 2.0 * tol);
                }
            }
        }
    }
}

/// Up to 65,536 values rows are normalised on the calling thread, beyond in parallel: each row
/// comes out bit for bit as when normalised on its own.
#[test]
fn l2_normalize_across_the_calling_thread_threshold() {
    for n in [511, 512, 513] {
        let x = Array2::from_shape_fn((n, 128), |(i, j)| ((i * 7 + j * 13) % 29) as f32 - 14.0);
        let u = l2_normalize(x.view());
        for i in 0..n {
            let alone = l2_normalize(x.slice(s![i..i + 1, ..]));
            assert_eq!(u.row(i), alone.row(0), "n={n} row {i}");
        }
    }
}

#[test]
fn errors() {
    let a = Array2::<f32>::zeros((3, 4));
    let b = Array2::<f32>::zeros((5, 2));
    assert!(matches!(
        pairwise(Metric::Euclidean, a.view(), b.view()),
        Err(Error::DimensionMismatch {
            left: "a",
            left_dim: 4,
            right: "b",
            right_dim: 2
        })
    ));
    assert!(matches!(
        knn(Metric::Dot, a.view(), b.view(), 1),
        Err(Error::DimensionMismatch {
            left_dim: 4,
            right_dim: 2,
            ..
        })
    ));
    let r = Array2::<f32>::zeros((5, 4));
    assert!(matches!(
        knn(Metric::Cosine, a.view(), r.view(), 0),
        Err(Error::InvalidK { k: 0, available: 5 })
    ));
    assert!(matches!(
        knn(Metric::Cosine, a.view(), r.view(), 6),
        Err(Error::InvalidK { k: 6, available: 5 })
    ));
    assert!(matches!(
        knn_self(Metric::Euclidean, r.view(), 5),
        Err(Error::InvalidK { k: 5, available: 4 })
    ));
    assert!(matches!(
        knn_self(Metric::Euclidean, Array2::<f32>::zeros((0, 4)).view(), 1),
        Err(Error::InvalidK { k: 1, available: 0 })
    ));

    let mut bad = Array2::<f32>::zeros((6, 4));
    bad[[4, 2]] = f32::NAN;
    bad[[5, 0]] = f32::INFINITY;
    let e = pairwise(Metric::Euclidean, a.view(), bad.view()).expect_err("nan");
    assert!(
        matches!(
            e,
            Error::NonFinite {
                matrix: "b",
                row: 4,
                col: 2
            }
        ),
        "{e:?}"
    );
    assert_eq!(e.to_string(), "non-finite value in b at row 4, column 2");
    assert!(matches!(
        knn(Metric::Dot, bad.view(), r.view(), 1),
        Err(Error::NonFinite {
            matrix: "query",
            row: 4,
            col: 2
        })
    ));
    assert!(matches!(
        knn_self(
            Metric::Dot,
            bad.slice(s![5.., ..]).view().to_owned().view(),
            1
        ),
        Err(Error::InvalidK { .. })
    ));
    assert!(matches!(
        self_pairwise(Metric::Cosine, bad.slice(s![5.., ..])),
        Err(Error::NonFinite {
            matrix: "x",
            row: 0,
            col: 0
        })
    ));

    let mut out = Array2::<f32>::zeros((3, 4));
    assert!(matches!(
        pairwise_into(Metric::Dot, a.view(), r.view(), out.view_mut()),
        Err(Error::OutputShape {
            expected: (3, 5),
            got: (3, 4)
        })
    ));
}

#[test]
fn empty_inputs_give_empty_outputs() {
    let a = Array2::<f32>::zeros((0, 4));
    let b = Array2::<f32>::zeros((3, 4));
    for metric in Metric::ALL {
        assert_eq!(
            pairwise(metric, a.view(), b.view())
                .expect("pairwise")
                .dim(),
            (0, 3)
        );
        assert_eq!(
            pairwise(metric, b.view(), a.view())
                .expect("pairwise")
                .dim(),
            (3, 0)
        );
        assert_eq!(self_pairwise(metric, a.view()).expect("self").dim(), (0, 0));
        let nn = knn(metric, a.view(), b.view(), 2).expect("knn");
        assert_eq!(nn.indices.dim(), (0, 2));
    }
}

#[test]
fn hand_computed_values() {
    let a = ndarray::array![[1.0_f32, 0.0], [0.0, 2.0]];
    let b = ndarray::array![[1.0_f32, 1.0], [-3.0, 0.0]];
    let e = pairwise(Metric::Euclidean, a.view(), b.view()).expect("pairwise");
    assert_eq!(
        e,
        ndarray::array![[1.0, 4.0], [2.0_f32.sqrt(), 13.0_f32.sqrt()]]
    );
    let s = pairwise(Metric::SquaredEuclidean, a.view(), b.view()).expect("pairwise");
    assert_eq!(s, ndarray::array![[1.0, 16.0], [2.0, 13.0]]);
    let dot = pairwise(Metric::Dot, a.view(), b.view()).expect("pairwise");
    assert_eq!(dot, ndarray::array![[1.0, -3.0], [2.0, 0.0]]);
    let c = pairwise(Metric::Cosine, a.view(), b.view()).expect("pairwise");
    let h = std::f32::consts::FRAC_1_SQRT_2;
    assert!((c[[0, 0]] - h).abs() < 1e-6 && (c[[0, 1]] + 1.0).abs() < 1e-6);
    assert!((c[[1, 0]] - h).abs() < 1e-6 && c[[1, 1]].abs() < 1e-6);
    // Similarities: largest first.
    let nn = knn(Metric::Dot, a.view(), b.view(), 2).expect("knn");
    assert_eq!(nn.indices, ndarray::array![[0_u32, 1], [0, 1]]);
    assert_eq!(nn.scores, ndarray::array![[1.0, -3.0], [2.0, 0.0]]);
}
