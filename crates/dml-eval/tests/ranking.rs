//! pml's ranking-wide and per-class scores and OML's scores against golden values of
//! pytorch-metric-learning 2.9 and open-metric-learning 4.0
//! (`scripts/fixtures/dml_eval_ranking.py`), and every score against a naive oracle.

mod common;

use std::collections::BTreeMap;

use dml_eval::{
    Error, EvalConfig, Metrics, RankingDepth, Score, evaluate, evaluate_with_reference,
};
use dml_kernels::Metric;
use ndarray::{Array2, ArrayView2, array};
use proptest::prelude::*;
use serde_json::Value;

/// pml computes these in float64 from the same ranking; only the order of the sums differs.
const PML_TOL: f64 = 1e-12;
/// pml's `mean_reciprocal_rank` is computed in float32 (`argmax(..) + 1.0` is a float32
/// tensor), and so is its mean; 1e-6 covers float32 rounding over a few dozen queries.
const PML_F32_TOL: f64 = 1e-6;
/// OML computes every score in float32 tensors (`FloatTensor`) and reduces with a float32 mean.
const OML_TOL: f64 = 1e-6;

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

/// pml's metric names and dml's scores.
const PML: [(&str, Score); 5] = [
    ("precision_at_1", Score::PrecisionAt1),
    ("r_precision", Score::RPrecision),
    ("mean_average_precision_at_r", Score::MapAtR),
    ("mean_average_precision", Score::MeanAveragePrecision),
    ("mean_reciprocal_rank", Score::MeanReciprocalRank),
];

fn pml_tol(score: Score) -> f64 {
    if score == Score::MeanReciprocalRank {
        PML_F32_TOL
    } else {
        PML_TOL
    }
}

fn config(depth: RankingDepth, oml_ks: &[usize]) -> EvalConfig {
    EvalConfig {
        recall_at: vec![1],
        nmi: false,
        mean_average_precision: true,
        mean_reciprocal_rank: true,
        ranking_depth: depth,
        cmc_at: oml_ks.to_vec(),
        oml_precision_at: oml_ks.to_vec(),
        oml_map_at: oml_ks.to_vec(),
        per_class: true,
        ..EvalConfig::default()
    }
}

fn run_case(case: &Value, cfg: &EvalConfig) -> Metrics {
    let metric = match case["metric"].as_str().expect("metric") {
        "euclidean" => Metric::Euclidean,
        "cosine" => Metric::Cosine,
        other => panic!("unknown metric {other}"),
    };
    let q = matrix(&case["query"]);
    let ql = labels(&case["query_labels"]);
    if case["leave_one_out"].as_bool().expect("mode") {
        evaluate(q.view(), &ql, metric, cfg)
    } else {
        let r = matrix(&case["reference"]);
        let rl = labels(&case["reference_labels"]);
        evaluate_with_reference(q.view(), &ql, r.view(), &rl, metric, cfg)
    }
    .expect("evaluate")
}

fn close(ours: f64, theirs: f64, tol: f64, what: &str) {
    assert!(
        (ours - theirs).abs() <= tol,
        "{what}: ours {ours}, reference {theirs}"
    );
}

#[test]
fn matches_pytorch_metric_learning() {
    let fixture: Value = serde_json::from_str(include_str!("fixtures/ranking.json")).expect("json");
    assert_eq!(fixture["versions"]["pytorch_metric_learning"], "2.9.0");
    let cases = fixture["cases"].as_array().expect("cases");
    assert!(cases.len() >= 6);
    let mut lone = 0;
    for case in cases {
        let name = case["name"].as_str().expect("name");
        for (setting, depth) in [
            ("whole", RankingDepth::Whole),
            ("max_bin_count", RankingDepth::MaxBinCount),
            ("k3", RankingDepth::K(3)),
        ] {
            let m = run_case(case, &config(depth, &[1]));
            lone += m.n_queries_without_positive;
            let pml = &case["pml"][setting];
            let per_class = m.per_class.as_ref().expect("per-class scores requested");
            for (key, score) in PML {
                // At k = 3, below the largest class, pml's R-precision and MAP@R are wrong by
                // its own warning; dml's always see R neighbours.
                if setting == "k3" && matches!(score, Score::RPrecision | Score::MapAtR) {
                    continue;
                }
                let what = format!("{name} {setting} {key}");
                let tol = pml_tol(score);
                close(
                    m.get(score).expect("computed"),
                    pml["mean"][key].as_f64().expect("mean"),
                    tol,
                    &what,
                );
                close(
                    per_class.avg_of_avgs(score).expect("computed"),
                    pml["avg_of_avgs"][key].as_f64().expect("avg"),
                    tol,
                    &format!("{what} avg_of_avgs"),
                );
                let theirs: BTreeMap<u32, f64> = pml["per_class"][key]
                    .as_object()
                    .expect("per class")
                    .iter()
                    .map(|(c, v)| (c.parse().expect("label"), v.as_f64().expect("value")))
                    .collect();
                let ours = per_class.values(score);
                assert_eq!(
                    ours.iter().map(|&(c, _)| c).collect::<Vec<_>>(),
                    theirs.keys().copied().collect::<Vec<_>>(),
                    "{what}: the classes listed"
                );
                for (c, v) in ours {
                    close(v, theirs[&c], tol, &format!("{what} class {c}"));
                }
            }
        }
    }
    assert!(lone > 0, "the fixtures include lone queries");
}

#[test]
fn matches_open_metric_learning() {
    let fixture: Value = serde_json::from_str(include_str!("fixtures/ranking.json")).expect("json");
    assert_eq!(fixture["versions"]["open_metric_learning"], "4.0.0");
    let ks: Vec<usize> = fixture["oml_ks"]
        .as_array()
        .expect("ks")
        .iter()
        .map(|k| k.as_u64().expect("k") as usize)
        .collect();
    for case in fixture["cases"].as_array().expect("cases") {
        let name = case["name"].as_str().expect("name");
        let m = run_case(case, &config(RankingDepth::Whole, &ks));
        let oml = &case["oml"];
        let lone = m.n_queries_without_positive > 0;
        for &k in &ks {
            let kk = k.to_string();
            let overall = &oml["overall"];
            let checks = [
                (Score::CmcAt(k), &overall["cmc"][&kk]),
                (Score::OmlMapAt(k), &overall["map"][&kk]),
                // OML's own overall precision is NaN with lone queries (0 / 0); dml counts them 0.
                (
                    Score::OmlPrecisionAt(k),
                    &overall["precision_nan_as_zero"][&kk],
                ),
            ];
            for (score, theirs) in checks {
                close(
                    m.get(score).expect("computed"),
                    theirs.as_f64().expect("value"),
                    OML_TOL,
                    &format!("{name} {}", score.key()),
                );
            }
            let plain = overall["precision"][&kk].as_f64();
            if lone {
                assert!(
                    plain.is_none(),
                    "{name}: OML's precision is NaN (null) here"
                );
            } else {
                close(
                    m.get(Score::OmlPrecisionAt(k)).expect("computed"),
                    plain.expect("defined without lone queries"),
                    OML_TOL,
                    &format!("{name} precision@{k}"),
                );
            }
            // Per class (OML's query categories): the classes with a positive.
            let per_class = m.per_class.as_ref().expect("requested");
            for (&c, scores) in &per_class.classes {
                let cat = &oml["per_category"][c.to_string()];
                for (score, key) in [
                    (Score::CmcAt(k), "cmc"),
                    (Score::OmlPrecisionAt(k), "precision"),
                    (Score::OmlMapAt(k), "map"),
                ] {
                    close(
                        scores.get(score).expect("computed"),
                        cat[key][&kk].as_f64().expect("value"),
                        OML_TOL,
                        &format!("{name} class {c} {}", score.key()),
                    );
                }
            }
        }
    }
}

#[test]
fn hand_computed_ranking_scores() {
    // The 1-D example of tests/retrieval.rs: x 0(a) 1(a) 3(b) 4(a) 10(b), leave-one-out.
    //   q0 (a, R=2): 1(a) 3(b) 4(a) 10(b) -> hits at 1, 3: AP (1/1 + 2/3)/2 = 5/6, RR 1
    //   q1 (a, R=2): 0(a) 3(b) 4(a) 10(b) -> hits at 1, 3: AP 5/6, RR 1
    //   q2 (b, R=1): 4(a) 1(a) 0(a) 10(b) -> hit at 4: AP 1/4, RR 1/4
    //   q3 (a, R=2): 3(b) 1(a) 0(a) 10(b) -> hits at 2, 3: AP (1/2 + 2/3)/2 = 7/12, RR 1/2
    //   q4 (b, R=1): 4(a) 3(b) 1(a) 0(a)  -> hit at 2: AP 1/2, RR 1/2
    let x = array![[0.0f32], [1.0], [3.0], [4.0], [10.0]];
    let y = [0, 0, 1, 0, 1];
    let m = evaluate(
        x.view(),
        &y,
        Metric::Euclidean,
        &config(RankingDepth::Whole, &[1, 2, 3]),
    )
    .expect("evaluate");
    let ap = [5.0 / 6.0, 5.0 / 6.0, 0.25, 7.0 / 12.0, 0.5];
    let rr = [1.0, 1.0, 0.25, 0.5, 0.5];
    close(
        m.mean_average_precision.expect("on"),
        ap.iter().sum::<f64>() / 5.0,
        1e-15,
        "mAP",
    );
    close(
        m.mean_reciprocal_rank.expect("on"),
        rr.iter().sum::<f64>() / 5.0,
        1e-15,
        "MRR",
    );
    // OML precision@2: q0 1/2, q1 1/2, q2 0/min(2,1), q3 1/2, q4 1/1.
    close(
        m.get(Score::OmlPrecisionAt(2)).expect("on"),
        (0.5 + 0.5 + 0.0 + 0.5 + 1.0) / 5.0,
        1e-15,
        "OML P@2",
    );
    // OML map@3: q0 (1 + 2/3)/2, q1 the same, q2 no hit -> 0, q3 (1/2 + 2/3)/2, q4 (1/2)/1.
    close(
        m.get(Score::OmlMapAt(3)).expect("on"),
        (5.0 / 6.0 + 5.0 / 6.0 + 0.0 + 7.0 / 12.0 + 0.5) / 5.0,
        1e-15,
        "OML map@3",
    );
    // Per class: a = {q0, q1, q3}, b = {q2, q4}.
    let pc = m.per_class.expect("on");
    let map_a = (ap[0] + ap[1] + ap[3]) / 3.0;
    let map_b = (ap[2] + ap[4]) / 2.0;
    assert_eq!(
        pc.values(Score::MeanAveragePrecision)
            .iter()
            .map(|&(c, _)| c)
            .collect::<Vec<_>>(),
        vec![0, 1]
    );
    close(
        pc.classes[&0].get(Score::MeanAveragePrecision).expect("on"),
        map_a,
        1e-15,
        "class a",
    );
    close(
        pc.avg_of_avgs(Score::MeanAveragePrecision).expect("on"),
        (map_a + map_b) / 2.0,
        1e-15,
        "avg_of_avgs",
    );
    assert_eq!(pc.classes[&1].n_queries, 2);
}

#[test]
fn lone_queries_count_zero_in_omls_scores_only() {
    // Class 2 has one item: left out of pml's means, 0 in OML's.
    let x = array![[0.0f32], [0.1], [5.0], [5.1], [9.0]];
    let y = [0, 0, 1, 1, 2];
    let m = evaluate(
        x.view(),
        &y,
        Metric::Euclidean,
        &config(RankingDepth::Whole, &[1]),
    )
    .expect("evaluate");
    assert_eq!(m.n_queries_without_positive, 1);
    assert_eq!(m.precision_at_1, 1.0);
    assert_eq!(m.mean_reciprocal_rank, Some(1.0));
    assert_eq!(m.get(Score::CmcAt(1)), Some(4.0 / 5.0));
    assert_eq!(m.get(Score::OmlPrecisionAt(1)), Some(4.0 / 5.0));
    assert_eq!(m.get(Score::OmlMapAt(1)), Some(4.0 / 5.0));
    let pc = m.per_class.expect("on");
    assert_eq!(pc.classes.keys().copied().collect::<Vec<_>>(), vec![0, 1]);
}

#[test]
fn json_and_display_carry_the_new_scores() {
    let x = array![[0.0f32], [0.1], [5.0], [5.1], [9.0]];
    let y = [0, 0, 1, 1, 2];
    let m = evaluate(
        x.view(),
        &y,
        Metric::Euclidean,
        &config(RankingDepth::K(2), &[1, 5]),
    )
    .expect("evaluate");
    let j = m.to_json();
    for key in [
        "mean_average_precision",
        "mean_reciprocal_rank",
        "cmc_at_5",
        "oml_precision_at_1",
        "oml_map_at_5",
    ] {
        assert!(j[key].is_number(), "{key} in {j}");
    }
    assert_eq!(j["per_class"]["1"]["n_queries"], 2);
    assert!(j["avg_of_avgs"]["map_at_r"].is_number(), "{j}");
    let back: Metrics = serde_json::from_value(j).expect("round trip");
    assert_eq!(back, m);
    let shown = m.to_string();
    for part in [
        "mean_avg_precision",
        "oml map@5",
        "per class (2 classes)",
        "avg",
    ] {
        assert!(shown.contains(part), "{part} in\n{shown}");
    }
}

#[test]
fn zero_cut_offs_are_refused() {
    let x = array![[0.0f32], [0.1]];
    for (cfg, name) in [
        (
            EvalConfig {
                cmc_at: vec![1, 0],
                ..EvalConfig::default()
            },
            "cmc_at",
        ),
        (
            EvalConfig {
                oml_map_at: vec![0],
                ..EvalConfig::default()
            },
            "oml_map_at",
        ),
        (
            EvalConfig {
                ranking_depth: RankingDepth::K(0),
                ..EvalConfig::default()
            },
            "ranking_depth",
        ),
    ] {
        let err = evaluate(x.view(), &[0, 0], Metric::Euclidean, &cfg).expect_err("zero");
        assert!(
            matches!(err, Error::ZeroK { name: n } if n == name),
            "{err}"
        );
        assert!(err.to_string().contains(name), "{err}");
    }
}

#[test]
fn ranking_depth_reads_from_toml_and_json() {
    #[derive(serde::Deserialize)]
    struct Wrap {
        eval: EvalConfig,
    }
    let parse = |s: &str| -> Result<EvalConfig, String> {
        serde_json::from_str::<Wrap>(s)
            .map(|w| w.eval)
            .map_err(|e| e.to_string())
    };
    assert_eq!(
        parse(r#"{"eval": {"ranking_depth": "whole"}}"#)
            .expect("whole")
            .ranking_depth,
        RankingDepth::Whole
    );
    assert_eq!(
        parse(r#"{"eval": {"ranking_depth": "max_bin_count"}}"#)
            .expect("mbc")
            .ranking_depth,
        RankingDepth::MaxBinCount
    );
    assert_eq!(
        parse(r#"{"eval": {"ranking_depth": 10}}"#)
            .expect("k")
            .ranking_depth,
        RankingDepth::K(10)
    );
    let err = parse(r#"{"eval": {"ranking_depth": "all"}}"#).expect_err("unknown");
    assert!(err.contains("max_bin_count"), "{err}");
    let back = serde_json::to_string(&EvalConfig {
        ranking_depth: RankingDepth::K(7),
        ..EvalConfig::default()
    })
    .expect("ser");
    assert!(back.contains(r#""ranking_depth":7"#), "{back}");
}

/// Every score from the naive oracle's full rankings.
fn naive_all(
    query_labels: &[u32],
    ranked: &[Vec<u32>],
    depth: usize,
    ks: &[usize],
) -> Option<Vec<(Score, f64)>> {
    let mut sums: BTreeMap<Score, f64> = BTreeMap::new();
    for &k in ks {
        for s in [
            Score::CmcAt(k),
            Score::OmlPrecisionAt(k),
            Score::OmlMapAt(k),
        ] {
            sums.insert(s, 0.0);
        }
    }
    sums.insert(Score::MeanAveragePrecision, 0.0);
    sums.insert(Score::MeanReciprocalRank, 0.0);
    let (mut n, mut n_all) = (0usize, 0usize);
    for (&y, cand) in query_labels.iter().zip(ranked) {
        n_all += 1;
        let rel: Vec<bool> = cand.iter().map(|&l| l == y).collect();
        let r = rel.iter().filter(|&&b| b).count();
        let prec = |i: usize| rel[..=i].iter().filter(|&&b| b).count() as f64 / (i + 1) as f64;
        for &k0 in ks {
            // OML caps k at the number of items retrieved.
            let k = k0.min(cand.len());
            let hits = rel[..k].iter().filter(|&&b| b).count();
            *sums.entry(Score::CmcAt(k0)).or_default() += f64::from(u8::from(hits > 0));
            if r > 0 {
                *sums.entry(Score::OmlPrecisionAt(k0)).or_default() +=
                    hits as f64 / k.min(r) as f64;
            }
            if hits > 0 {
                let s: f64 = (0..k).filter(|&i| rel[i]).map(prec).sum();
                *sums.entry(Score::OmlMapAt(k0)).or_default() += s / hits as f64;
            }
        }
        if r == 0 {
            continue;
        }
        n += 1;
        let d = depth.min(cand.len());
        let ap: f64 = (0..d).filter(|&i| rel[i]).map(prec).sum::<f64>() / r as f64;
        *sums.entry(Score::MeanAveragePrecision).or_default() += ap;
        let rr = rel[..d]
            .iter()
            .position(|&b| b)
            .map_or(0.0, |p| 1.0 / (p + 1) as f64);
        *sums.entry(Score::MeanReciprocalRank).or_default() += rr;
    }
    if n == 0 {
        return None;
    }
    Some(
        sums.into_iter()
            .map(|(s, v)| {
                let denom = if matches!(s, Score::MeanAveragePrecision | Score::MeanReciprocalRank)
                {
                    n
                } else {
                    n_all
                };
                (s, v / denom as f64)
            })
            .collect(),
    )
}

fn check<'a>(
    (q, ql): (ArrayView2<'a, f32>, &'a [u32]),
    reference: Option<(ArrayView2<'a, f32>, &'a [u32])>,
    metric: Metric,
    depth: RankingDepth,
) -> Result<(), TestCaseError> {
    const KS: [usize; 4] = [1, 2, 5, 40];
    let (r, rl, loo) = reference.map_or((q, ql, true), |(r, rl)| (r, rl, false));
    let ranked = common::naive_ranking(metric, q, r, rl, loo);
    let max_r = ql
        .iter()
        .zip(&ranked)
        .map(|(&y, c)| c.iter().filter(|&&l| l == y).count())
        .max()
        .unwrap_or(0);
    let d = match depth {
        RankingDepth::Whole => usize::MAX,
        RankingDepth::MaxBinCount => max_r,
        RankingDepth::K(k) => k,
    };
    let cfg = EvalConfig {
        nmi: false,
        ..config(depth, &KS)
    };
    let got = match reference {
        None => evaluate(q, ql, metric, &cfg),
        Some((r, rl)) => evaluate_with_reference(q, ql, r, rl, metric, &cfg),
    };
    let Some(want) = naive_all(ql, &ranked, d, &KS) else {
        let no_positives = matches!(got, Err(Error::NoPositives { .. }));
        prop_assert!(no_positives, "expected NoPositives");
        return Ok(());
    };
    let got = got.expect("evaluate");
    for (score, v) in want {
        let ours = got.get(score).expect("computed");
        prop_assert!(
            (ours - v).abs() < 1e-12,
            "{:?}: ours {}, naive {}",
            score,
            ours,
            v
        );
    }
    // Per class: the per-class means average back to the overall mean (weighted by queries).
    let pc = got.per_class.as_ref().expect("on");
    let n: usize = pc.classes.values().map(|c| c.n_queries).sum();
    prop_assert_eq!(n, got.n_queries - got.n_queries_without_positive);
    let weighted: f64 = pc
        .classes
        .values()
        .map(|c| c.get(Score::MeanAveragePrecision).expect("on") * c.n_queries as f64)
        .sum::<f64>()
        / n as f64;
    prop_assert!((weighted - got.mean_average_precision.expect("on")).abs() < 1e-12);
    Ok(())
}

fn grid() -> impl Strategy<Value = (Array2<f32>, Vec<u32>)> {
    (2usize..30, 1usize..4, 1u32..6).prop_flat_map(|(n, d, c)| {
        (
            proptest::collection::vec(-3i8..=3, n * d).prop_map(move |v| {
                Array2::from_shape_vec((n, d), v.into_iter().map(f32::from).collect())
                    .expect("shape")
            }),
            proptest::collection::vec(0..c, n),
        )
    })
}

const DEPTHS: [RankingDepth; 4] = [
    RankingDepth::Whole,
    RankingDepth::MaxBinCount,
    RankingDepth::K(1),
    RankingDepth::K(4),
];
const METRICS: [Metric; 3] = [Metric::Euclidean, Metric::SquaredEuclidean, Metric::Dot];

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    /// Integer points: exact ties everywhere, so the rank rule (lower index first) is checked
    /// in both the whole-ranking pass and the k-NN path.
    #[test]
    fn every_score_matches_naive((x, y) in grid(), m in 0usize..3, d in 0usize..4) {
        check((x.view(), &y), None, METRICS[m], DEPTHS[d])?;
    }

    #[test]
    fn gallery_scores_match_naive((q, ql) in grid(), (r, rl) in grid(), m in 0usize..3, d in 0usize..4) {
        prop_assume!(q.ncols() == r.ncols());
        check((q.view(), &ql), Some((r.view(), &rl)), METRICS[m], DEPTHS[d])?;
    }

    /// The whole-ranking pass and the k-NN path (searched to every candidate) agree bit for bit.
    #[test]
    fn whole_ranking_equals_full_depth_search((x, y) in grid(), m in 0usize..3) {
        let whole = evaluate(x.view(), &y, METRICS[m], &config(RankingDepth::Whole, &[1, 3]));
        let deep = evaluate(
            x.view(), &y, METRICS[m], &config(RankingDepth::K(usize::MAX), &[1, 3]),
        );
        match (whole, deep) {
            (Ok(a), Ok(b)) => prop_assert_eq!(a, b),
            (Err(Error::NoPositives { .. }), Err(Error::NoPositives { .. })) => {}
            (a, b) => prop_assert!(false, "{:?} vs {:?}", a, b),
        }
    }
}
