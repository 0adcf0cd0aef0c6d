//! `evaluate_including_queries`: the queries are the first rows of the reference set, each left
//! out of its own ranking (pml's `ref_includes_query=True` with a larger reference), checked
//! against the naive oracle's rankings on integer points (exact ties everywhere).

mod common;

use dml_eval::{Error, EvalConfig, RankingDepth, Score, evaluate, evaluate_including_queries};
use dml_kernels::Metric;
use ndarray::{Array2, s};
use proptest::prelude::*;

fn config() -> EvalConfig {
    EvalConfig {
        recall_at: vec![1, 3],
        nmi: false,
        mean_average_precision: true,
        mean_reciprocal_rank: true,
        ranking_depth: RankingDepth::Whole,
        ..EvalConfig::default()
    }
}

/// Mean average precision and mean reciprocal rank over whole rankings, from their definitions.
fn naive_map_mrr(query_labels: &[u32], ranked: &[Vec<u32>]) -> (f64, f64) {
    let (mut map, mut mrr, mut n) = (0.0, 0.0, 0usize);
    for (&y, cand) in query_labels.iter().zip(ranked) {
        let r = cand.iter().filter(|&&l| l == y).count();
        if r == 0 {
            continue;
        }
        n += 1;
        let mut hits = 0usize;
        let mut ap = 0.0;
        for (i, &l) in cand.iter().enumerate() {
            if l == y {
                hits += 1;
                ap += hits as f64 / (i + 1) as f64;
                if hits == 1 {
                    mrr += 1.0 / (i + 1) as f64;
                }
            }
        }
        map += ap / r as f64;
    }
    (map / n as f64, mrr / n as f64)
}

fn grid() -> impl Strategy<Value = (Array2<f32>, Vec<u32>, usize)> {
    (2usize..30, 1usize..4, 1u32..6).prop_flat_map(|(n, d, c)| {
        (
            proptest::collection::vec(-3i8..=3, n * d).prop_map(move |v| {
                Array2::from_shape_vec((n, d), v.into_iter().map(f32::from).collect())
                    .expect("shape")
            }),
            proptest::collection::vec(0..c, n),
            1..=n,
        )
    })
}

const METRICS: [Metric; 3] = [Metric::Euclidean, Metric::SquaredEuclidean, Metric::Dot];

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    #[test]
    fn scores_match_naive_rankings((x, y, n) in grid(), m in 0usize..3) {
        let metric = METRICS[m];
        let got = evaluate_including_queries(x.view(), &y, n, metric, &config());
        // Leave-one-out rankings of the first n rows among all rows: row i skips index i.
        let q = x.slice(s![..n, ..]);
        let ranked = common::naive_ranking(metric, q, x.view(), &y, true);
        let Some(want) = common::naive_scores(&y[..n], &ranked, &[1, 3]) else {
            prop_assert!(matches!(got, Err(Error::NoPositives { .. })), "expected NoPositives");
            return Ok(());
        };
        let got = got.expect("evaluate_including_queries");
        prop_assert_eq!(got.n_queries, n);
        prop_assert_eq!(got.n_queries_without_positive, want.n_without_positive);
        let (map, mrr) = naive_map_mrr(&y[..n], &ranked);
        for (score, v) in [
            (Score::RecallAt(1), want.recall[0]),
            (Score::RecallAt(3), want.recall[1]),
            (Score::PrecisionAt1, want.p1),
            (Score::RPrecision, want.r_precision),
            (Score::MapAtR, want.map_at_r),
            (Score::MeanAveragePrecision, map),
            (Score::MeanReciprocalRank, mrr),
        ] {
            let ours = got.get(score).expect("computed");
            prop_assert!((ours - v).abs() < 1e-12, "{:?}: ours {}, naive {}", score, ours, v);
        }
    }

    /// All rows as queries is the plain leave-one-out evaluation, bit for bit.
    #[test]
    fn every_row_a_query_is_evaluate((x, y, _n) in grid(), m in 0usize..3) {
        let metric = METRICS[m];
        let cfg = EvalConfig { nmi: true, ..config() };
        let all = evaluate_including_queries(x.view(), &y, x.nrows(), metric, &cfg);
        let loo = evaluate(x.view(), &y, metric, &cfg);
        match (all, loo) {
            (Ok(a), Ok(b)) => prop_assert_eq!(a, b),
            (Err(Error::NoPositives { .. }), Err(Error::NoPositives { .. })) => {}
            (Err(Error::TooManyClusters { .. }), Err(Error::TooManyClusters { .. })) => {}
            (a, b) => prop_assert!(false, "{:?} vs {:?}", a, b),
        }
    }
}

#[test]
fn query_rows_outside_the_reference_are_refused() {
    let x = Array2::from_shape_fn((4, 2), |(i, j)| (i + j) as f32);
    let y = [0, 0, 1, 1];
    let err = evaluate_including_queries(x.view(), &y, 5, Metric::Euclidean, &config())
        .expect_err("5 of 4 rows");
    assert!(
        matches!(
            err,
            Error::QueryRows {
                n_queries: 5,
                n_rows: 4
            }
        ),
        "{err}"
    );
    assert_eq!(
        err.to_string(),
        "the queries are the first 5 rows of the reference, but it has 4 rows"
    );
    let err = evaluate_including_queries(x.view(), &y, 0, Metric::Euclidean, &config())
        .expect_err("no query");
    assert!(matches!(err, Error::Empty("query")), "{err}");
}
