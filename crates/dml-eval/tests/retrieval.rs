//! Retrieval scores against pytorch-metric-learning fixtures and a naive oracle.

mod common;

use common::{Naive, naive_ranking, naive_scores};
use dml_eval::{Error, EvalConfig, Metrics, evaluate, evaluate_with_reference};
use dml_kernels::Metric;
use ndarray::{Array2, ArrayView2, array};
use proptest::prelude::*;
use serde_json::Value;

/// pml computes in float64 torch tensors from the same neighbour lists; only the order of the
/// f64 summations differs, so 1e-12 leaves three orders of magnitude of slack.
const PML_TOL: f64 = 1e-12;

fn matrix(v: &Value) -> Array2<f32> {
    let rows: Vec<Vec<f32>> = v
        .as_array()
        .expect("rows")
        .iter()
        .map(|r| {
            r.as_array()
                .expect("row")
                .iter()
                .map(|x| x.as_f64().expect("number") as f32)
                .collect()
        })
        .collect();
    let d = rows[0].len();
    Array2::from_shape_vec((rows.len(), d), rows.concat()).expect("rectangular")
}

fn labels(v: &Value) -> Vec<u32> {
    v.as_array()
        .expect("labels")
        .iter()
        .map(|x| x.as_u64().expect("label") as u32)
        .collect()
}

fn no_nmi(ks: &[usize]) -> EvalConfig {
    EvalConfig {
        recall_at: ks.to_vec(),
        nmi: false,
        ..EvalConfig::default()
    }
}

#[test]
fn matches_pytorch_metric_learning_fixtures() {
    let fixture: Value =
        serde_json::from_str(include_str!("fixtures/retrieval.json")).expect("json");
    let ks: Vec<usize> = fixture["recall_ks"]
        .as_array()
        .expect("ks")
        .iter()
        .map(|k| k.as_u64().expect("k") as usize)
        .collect();
    let cases = fixture["cases"].as_array().expect("cases");
    assert!(cases.len() >= 10);
    for case in cases {
        let name = case["name"].as_str().expect("name");
        let metric = match case["metric"].as_str().expect("metric") {
            "euclidean" => Metric::Euclidean,
            "cosine" => Metric::Cosine,
            other => panic!("unknown metric {other}"),
        };
        let q = matrix(&case["query"]);
        let ql = labels(&case["query_labels"]);
        let cfg = no_nmi(&ks);
        let m = if case["leave_one_out"].as_bool().expect("mode") {
            evaluate(q.view(), &ql, metric, &cfg)
        } else {
            let r = matrix(&case["reference"]);
            let rl = labels(&case["reference_labels"]);
            evaluate_with_reference(q.view(), &ql, r.view(), &rl, metric, &cfg)
        }
        .unwrap_or_else(|e| panic!("{name}: {e}"));
        let close = |ours: f64, key: &str, theirs: f64| {
            assert!(
                (ours - theirs).abs() <= PML_TOL,
                "{name} {key}: ours {ours}, pml {theirs}"
            );
        };
        close(
            m.precision_at_1,
            "precision_at_1",
            case["precision_at_1"].as_f64().expect("p1"),
        );
        close(
            m.r_precision.expect("on by default"),
            "r_precision",
            case["r_precision"].as_f64().expect("rp"),
        );
        close(
            m.map_at_r.expect("on by default"),
            "map_at_r",
            case["map_at_r"].as_f64().expect("map"),
        );
        for &k in &ks {
            let theirs = case["recall_at"][k.to_string()].as_f64().expect("recall");
            close(
                m.recall_at_k(k).expect("requested"),
                &format!("recall_at_{k}"),
                theirs,
            );
        }
        assert!(
            m.n_queries_without_positive >= 1,
            "{name}: fixtures include queries without positives"
        );
    }
}

#[test]
fn hand_computed_example() {
    // 1-D points; labels a=0, b=1.  x: 0(a) 1(a) 3(b) 4(a) 10(b)
    // Leave-one-out neighbours (Euclidean, ties -> lower index):
    //   q0 (a, R=2): 1(a) 3(b) 4(a) 10(b) -> P@1 1, RP 1/2, AP@R (1/1)/2 = 0.5
    //   q1 (a, R=2): 0(a) 3(b) 4(a)       -> P@1 1, RP 1/2, AP 0.5
    //   q2 (b, R=1): 4(a) 1(a) 0(a) 10(b) -> P@1 0, RP 0,   AP 0      (|3-4|=1 < |3-1|=2)
    //   q3 (a, R=2): 3(b) 1(a) 0(a)       -> P@1 0, RP 1/2, AP (1/2)/2 = 0.25
    //   q4 (b, R=1): 4(a) 3(b)            -> P@1 0, RP 0,   AP 0
    let x = array![[0.0f32], [1.0], [3.0], [4.0], [10.0]];
    let y = [0, 0, 1, 0, 1];
    let m = evaluate(x.view(), &y, Metric::Euclidean, &no_nmi(&[1, 2, 3, 100])).expect("evaluate");
    assert_eq!(m.precision_at_1, 2.0 / 5.0);
    assert_eq!(m.r_precision, Some((0.5 + 0.5 + 0.0 + 0.5 + 0.0) / 5.0));
    assert_eq!(m.map_at_r, Some((0.5 + 0.5 + 0.0 + 0.25 + 0.0) / 5.0));
    // Recall@2: q0 q1 yes, q2: 4(a) 1(a) no, q3: 3(b) 1(a) yes, q4: 4(a) 3(b) yes -> 4/5.
    assert_eq!(m.recall_at_k(2), Some(4.0 / 5.0));
    // Recall@3: q2 still no (4, 1, 0); Recall@100 is capped at the 4 candidates: all yes.
    assert_eq!(m.recall_at_k(3), Some(4.0 / 5.0));
    assert_eq!(m.recall_at_k(100), Some(1.0));
    assert_eq!(m.recall_at_k(1), Some(m.precision_at_1));
    assert_eq!(m.n_queries, 5);
    assert_eq!(m.n_queries_without_positive, 0);
}

#[test]
fn duplicates_of_the_query_stay_neighbours() {
    // Item 1 duplicates item 0 (distance 0): in leave-one-out mode each is the other's nearest.
    let x = array![[0.0f32, 0.0], [0.0, 0.0], [1.0, 0.0], [1.0, 0.1]];
    let y = [0, 0, 1, 1];
    let m = evaluate(x.view(), &y, Metric::Euclidean, &no_nmi(&[1])).expect("evaluate");
    assert_eq!(m.precision_at_1, 1.0);
    assert_eq!(m.map_at_r, Some(1.0));
}

#[test]
fn singleton_classes_are_left_out_and_counted() {
    let x = array![[0.0f32], [0.1], [5.0], [9.0]];
    let y = [0, 0, 1, 2];
    let m = evaluate(x.view(), &y, Metric::Euclidean, &no_nmi(&[1])).expect("evaluate");
    assert_eq!(m.n_queries_without_positive, 2);
    assert_eq!(m.precision_at_1, 1.0);
}

#[test]
fn errors_name_the_problem() {
    let x = array![[0.0f32, 1.0], [1.0, 0.0], [2.0, 2.0]];
    let cfg = no_nmi(&[1]);
    assert!(matches!(
        evaluate(x.view(), &[0, 1], Metric::Euclidean, &cfg),
        Err(Error::LabelCount {
            what: "embeddings",
            n_rows: 3,
            n_labels: 2
        })
    ));
    assert!(matches!(
        evaluate(x.view(), &[0, 1, 2], Metric::Euclidean, &cfg),
        Err(Error::NoPositives { n_queries: 3 })
    ));
    assert!(matches!(
        evaluate(x.view(), &[0, 0, 1], Metric::Euclidean, &no_nmi(&[1, 0])),
        Err(Error::ZeroRecallK)
    ));
    let one = array![[0.0f32, 1.0]];
    assert!(matches!(
        evaluate(one.view(), &[0], Metric::Euclidean, &cfg),
        Err(Error::TooFewItems(1))
    ));
    let mut bad = x.clone();
    bad[[2, 1]] = f32::NAN;
    let err = evaluate(bad.view(), &[0, 0, 1], Metric::Euclidean, &cfg).expect_err("nan");
    assert!(
        matches!(
            err,
            Error::NonFinite {
                matrix: "embeddings",
                row: 2,
                col: 1
            }
        ),
        "{err}"
    );
    assert_eq!(
        err.to_string(),
        "non-finite value in embeddings at row 2, column 1"
    );
    let r3 = array![[0.0f32, 1.0, 2.0]];
    assert!(matches!(
        evaluate_with_reference(
            x.view(),
            &[0, 0, 1],
            r3.view(),
            &[0],
            Metric::Euclidean,
            &cfg
        ),
        Err(Error::DimensionMismatch {
            query_dim: 2,
            reference_dim: 3
        })
    ));
    let kmeans_zero = EvalConfig {
        kmeans_restarts: 0,
        ..EvalConfig::default()
    };
    assert!(matches!(
        evaluate(x.view(), &[0, 0, 1], Metric::Euclidean, &kmeans_zero),
        Err(Error::ZeroParameter {
            name: "kmeans_restarts"
        })
    ));
}

#[test]
fn json_keys() {
    let x = array![[0.0f32], [0.1], [5.0], [5.1]];
    let m = evaluate(
        x.view(),
        &[0, 0, 1, 1],
        Metric::Euclidean,
        &EvalConfig::sop(),
    )
    .expect("evaluate");
    let j = m.to_json();
    for key in [
        "recall_at_1",
        "recall_at_10",
        "recall_at_100",
        "recall_at_1000",
        "precision_at_1",
        "r_precision",
        "map_at_r",
        "nmi",
    ] {
        assert!(j.get(key).is_some(), "missing {key} in {j}");
    }
    assert_eq!(j["recall_at_1000"], 1.0);
    // Metrics round-trips through serde.
    let back: dml_eval::Metrics =
        serde_json::from_str(&serde_json::to_string(&m).expect("ser")).expect("de");
    assert_eq!(back, m);
}

/// Points with integer coordinates in `-v..=v` (exact f32 arithmetic, frequent ties) and labels
/// in `0..c`, for `n` in `rows`, `d` in `dims`, `c` in `classes`.
fn grid(
    rows: std::ops::Range<usize>,
    dims: std::ops::Range<usize>,
    classes: std::ops::Range<u32>,
    v: i8,
) -> impl Strategy<Value = (Array2<f32>, Vec<u32>)> {
    (rows, dims, classes).prop_flat_map(move |(n, d, c)| {
        (
            proptest::collection::vec(-v..=v, n * d).prop_map(move |v| {
                Array2::from_shape_vec((n, d), v.into_iter().map(f32::from).collect())
                    .expect("shape")
            }),
            proptest::collection::vec(0..c, n),
        )
    })
}

fn small_grid() -> impl Strategy<Value = (Array2<f32>, Vec<u32>)> {
    grid(2..28, 1..4, 1..6, 3)
}

const KS: [usize; 5] = [1, 2, 3, 5, 50];

/// Compares `evaluate`'s result (`got`, and `without_r` from the same call with
/// `r_metrics: false`) against the naive oracle's scores (`None`: no query has a positive).
fn check_against_naive(
    got: Result<Metrics, Error>,
    without_r: Result<Metrics, Error>,
    want: Option<Naive>,
) -> Result<(), TestCaseError> {
    let Some(want) = want else {
        prop_assert!(
            matches!(got, Err(Error::NoPositives { .. })),
            "expected NoPositives"
        );
        return Ok(());
    };
    let got = got.expect("evaluate");
    prop_assert!((got.precision_at_1 - want.p1).abs() < 1e-12);
    prop_assert!((got.r_precision.expect("rp") - want.r_precision).abs() < 1e-12);
    prop_assert!((got.map_at_r.expect("map") - want.map_at_r).abs() < 1e-12);
    for (i, &k) in KS.iter().enumerate() {
        prop_assert!((got.recall_at_k(k).expect("k") - want.recall[i]).abs() < 1e-12);
    }
    prop_assert_eq!(got.n_queries_without_positive, want.n_without_positive);
    // Without the R-based metrics the search is shorter (k = largest K): the other scores must
    // not move, and the R-based ones are absent, not zero.
    let short = without_r.expect("evaluate without R metrics");
    prop_assert_eq!(short.r_precision, None);
    prop_assert_eq!(short.map_at_r, None);
    prop_assert_eq!(short.precision_at_1, got.precision_at_1);
    prop_assert_eq!(&short.recall_at, &got.recall_at);
    prop_assert_eq!(
        short.n_queries_without_positive,
        got.n_queries_without_positive
    );
    Ok(())
}

const METRICS: [Metric; 3] = [Metric::Euclidean, Metric::SquaredEuclidean, Metric::Dot];

/// `evaluate` (leave-one-out) against the oracle, with and without the R-based metrics.
fn check_leave_one_out(
    x: ArrayView2<'_, f32>,
    y: &[u32],
    metric: Metric,
) -> Result<(), TestCaseError> {
    let ranked = naive_ranking(metric, x, x, y, true);
    let ks: Vec<usize> = KS.iter().map(|&k| k.min(x.nrows() - 1)).collect();
    let got = evaluate(x, y, metric, &no_nmi(&KS));
    let short = EvalConfig {
        r_metrics: false,
        ..no_nmi(&KS)
    };
    let without_r = evaluate(x, y, metric, &short);
    check_against_naive(got, without_r, naive_scores(y, &ranked, &ks))
}

/// `evaluate_with_reference` against the oracle, with and without the R-based metrics.
fn check_gallery(
    (q, ql): (ArrayView2<'_, f32>, &[u32]),
    (r, rl): (ArrayView2<'_, f32>, &[u32]),
    metric: Metric,
) -> Result<(), TestCaseError> {
    let ranked = naive_ranking(metric, q, r, rl, false);
    let ks: Vec<usize> = KS.iter().map(|&k| k.min(r.nrows())).collect();
    let got = evaluate_with_reference(q, ql, r, rl, metric, &no_nmi(&KS));
    let short = EvalConfig {
        r_metrics: false,
        ..no_nmi(&KS)
    };
    let without_r = evaluate_with_reference(q, ql, r, rl, metric, &short);
    check_against_naive(got, without_r, naive_scores(ql, &ranked, &ks))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    /// Integer-valued points make exact ties common, so this also checks the tie rule (lower
    /// index first) against the oracle; f32 arithmetic is exact on them.
    #[test]
    fn leave_one_out_matches_naive((x, y) in small_grid(), m in 0usize..3) {
        check_leave_one_out(x.view(), &y, METRICS[m])?;
    }

    #[test]
    fn gallery_matches_naive((q, ql) in small_grid(), (r, rl) in small_grid(), m in 0usize..3) {
        prop_assume!(q.ncols() == r.ncols());
        check_gallery((q.view(), &ql), (r.view(), &rl), METRICS[m])?;
    }
}

/// Few classes over many points: R in the hundreds, so the search runs to a depth where
/// dml-kernels keeps candidates by selection rather than in a sorted buffer. Points on a coarse
/// integer grid in one to three dimensions: ties and exact duplicates everywhere.
fn big_classes() -> impl Strategy<Value = (Array2<f32>, Vec<u32>)> {
    grid(130..400, 1..4, 1..3, 2)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn huge_classes_match_naive((x, y) in big_classes(), m in 0usize..3) {
        check_leave_one_out(x.view(), &y, METRICS[m])?;
        // Gallery mode: the first 100 points query the rest.
        let (q, r) = (x.slice(ndarray::s![..100, ..]), x.slice(ndarray::s![100.., ..]));
        check_gallery((q, &y[..100]), (r, &y[100..]), METRICS[m])?;
    }
}

#[test]
fn r_metrics_off_reports_null_not_zero() {
    let x = array![[0.0f32], [0.1], [0.2], [5.0], [5.1], [5.2]];
    let y = [0, 0, 0, 1, 1, 1];
    let cfg = EvalConfig {
        r_metrics: false,
        ..no_nmi(&[1, 2])
    };
    let m = evaluate(x.view(), &y, Metric::Euclidean, &cfg).expect("evaluate");
    assert_eq!(m.recall_at_k(2), Some(1.0));
    let j = m.to_json();
    assert!(j["r_precision"].is_null(), "{j}");
    assert!(j["map_at_r"].is_null(), "{j}");
    let shown = m.to_string();
    assert!(
        shown.contains("recall@2") && !shown.contains("map@r"),
        "{shown}"
    );
}
