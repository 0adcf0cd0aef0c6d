//! Verification figures against scikit-learn's `roc_curve` / `roc_auc_score` and naive
//! implementations of TAR@FAR, EER and the k-fold protocol
//! (`scripts/fixtures/dml_eval_verification.py`), and the pair sources.

use std::collections::HashSet;
use std::path::PathBuf;

use dml_eval::{
    Error, npy,
    verification::{
        LabelPairs, PairSampling, Roc, VerificationConfig, VerificationPairs, fold_ranges, verify,
        verify_values,
    },
};
use dml_kernels::Metric;
use ndarray::{Array2, array};
use serde_json::Value;

/// scikit-learn's rates are `cumsum / count` in float64 (it rounds some of the quotients 1 ulp
/// differently) and its AUC a trapezoid sum; ours are exact quotients of the counts and the
/// Mann–Whitney count.
const TOL: f64 = 1e-12;

fn metric(case: &Value) -> Metric {
    match case["metric"].as_str().expect("metric") {
        "euclidean" => Metric::Euclidean,
        "cosine" => Metric::Cosine,
        other => panic!("unknown metric {other}"),
    }
}

fn f32s(v: &Value) -> Vec<f32> {
    v.as_array()
        .expect("list")
        .iter()
        .map(|x| x.as_f64().expect("number") as f32)
        .collect()
}

fn bools(v: &Value) -> Vec<bool> {
    v.as_array()
        .expect("list")
        .iter()
        .map(|x| x.as_bool().expect("bool"))
        .collect()
}

/// A threshold of the fixture, in score space (larger = closer), as the metric's value.
fn threshold(m: Metric, v: &Value) -> f32 {
    let score = match v {
        Value::String(s) if s == "inf" => f64::INFINITY,
        Value::String(s) if s == "-inf" => f64::NEG_INFINITY,
        v => v.as_f64().expect("threshold"),
    } as f32;
    if m.is_similarity() {
        score
    } else {
        0.0 - score
    }
}

fn close(ours: f64, theirs: f64, what: &str) {
    assert!(
        (ours - theirs).abs() <= TOL,
        "{what}: ours {ours}, reference {theirs}"
    );
}

fn fixture() -> Value {
    serde_json::from_str(include_str!("fixtures/verification.json")).expect("json")
}

fn config(case: &Value, fars: &[f64]) -> VerificationConfig {
    VerificationConfig {
        fars: fars.to_vec(),
        folds: case["folds"].as_u64().expect("folds") as usize,
    }
}

fn check_case(case: &Value, fars: &[f64], v: &dml_eval::verification::Verification) {
    let name = case["name"].as_str().expect("name");
    let m = metric(case);
    close(
        v.auc,
        case["auc"].as_f64().expect("auc"),
        &format!("{name} auc"),
    );
    // The ROC, point for point, thresholds included.
    let roc = &case["roc"];
    let points = v.roc.points();
    let fpr = roc["fpr"].as_array().expect("fpr");
    assert_eq!(points.len(), fpr.len(), "{name}: ROC points");
    for (i, p) in points.iter().enumerate() {
        // The same quotients, up to how scikit-learn rounds its division.
        close(
            p.far,
            fpr[i].as_f64().expect("fpr"),
            &format!("{name} point {i} far"),
        );
        close(
            p.tar,
            roc["tpr"][i].as_f64().expect("tpr"),
            &format!("{name} point {i} tar"),
        );
        assert_eq!(
            p.threshold,
            threshold(m, &roc["threshold_score"][i]),
            "{name} point {i} threshold"
        );
    }
    close(
        v.eer.rate,
        case["eer"].as_f64().expect("eer"),
        &format!("{name} eer"),
    );
    assert_eq!(v.eer.threshold, threshold(m, &case["eer_threshold_score"]));
    for (ours, theirs) in v
        .tar_at_far
        .iter()
        .zip(case["tar_at_far"].as_array().expect("tars"))
    {
        let what = format!("{name} tar@far={}", ours.far);
        assert_eq!(ours.far, theirs["far"].as_f64().expect("far"));
        close(ours.tar, theirs["tar"].as_f64().expect("tar"), &what);
        assert_eq!(
            ours.threshold,
            threshold(m, &theirs["threshold_score"]),
            "{what}"
        );
        close(
            ours.far_achieved,
            theirs["far_achieved"].as_f64().expect("achieved"),
            &what,
        );
        assert!(ours.far_achieved <= ours.far, "{what}");
    }
    assert_eq!(v.tar_at_far.len(), fars.len());
    let kf = &case["kfold"];
    close(
        v.accuracy.mean,
        kf["mean"].as_f64().expect("mean"),
        &format!("{name} mean"),
    );
    close(
        v.accuracy.std,
        kf["std"].as_f64().expect("std"),
        &format!("{name} std"),
    );
    for (i, (ours, theirs)) in v
        .accuracy
        .folds
        .iter()
        .zip(kf["folds"].as_array().expect("folds"))
        .enumerate()
    {
        let what = format!("{name} fold {i}");
        assert_eq!(
            ours.n_pairs as u64,
            theirs["n_pairs"].as_u64().expect("n"),
            "{what}"
        );
        assert_eq!(
            ours.threshold,
            threshold(m, &theirs["threshold_score"]),
            "{what}"
        );
        close(
            ours.accuracy,
            theirs["accuracy"].as_f64().expect("acc"),
            &what,
        );
        close(
            ours.train_accuracy,
            theirs["train_accuracy"].as_f64().expect("train"),
            &what,
        );
    }
}

#[test]
fn matches_scikit_learn_and_the_naive_protocols() {
    let fx = fixture();
    let fars: Vec<f64> = fx["fars"]
        .as_array()
        .expect("fars")
        .iter()
        .map(|f| f.as_f64().expect("far"))
        .collect();
    let cases = fx["cases"].as_array().expect("cases");
    assert!(cases.len() >= 5);
    for case in cases {
        let values = f32s(&case["values"]);
        let same = bools(&case["same"]);
        let v = verify_values(metric(case), &values, &same, &config(case, &fars))
            .expect("verify_values");
        check_case(case, &fars, &v);
        // Ties: the fixtures' grids make fewer ROC points than pairs.
        if case["name"].as_str() != Some("scores2_cosine") {
            assert!(v.roc.points().len() < values.len(), "ties expected");
        }
    }
}

#[test]
fn from_embeddings_the_same_figures() {
    let fx = fixture();
    let fars: Vec<f64> = fx["fars"]
        .as_array()
        .expect("fars")
        .iter()
        .map(|f| f.as_f64().expect("far"))
        .collect();
    let case = fx["cases"]
        .as_array()
        .expect("cases")
        .iter()
        .find(|c| c.get("embeddings").is_some())
        .expect("an embeddings case");
    let rows: Vec<Vec<f32>> = case["embeddings"]
        .as_array()
        .expect("rows")
        .iter()
        .map(f32s)
        .collect();
    let x = Array2::from_shape_vec((rows.len(), rows[0].len()), rows.concat()).expect("shape");
    let pairs: Vec<[u32; 2]> = case["pairs"]
        .as_array()
        .expect("pairs")
        .iter()
        .map(|p| {
            [
                p[0].as_u64().expect("i") as u32,
                p[1].as_u64().expect("j") as u32,
            ]
        })
        .collect();
    let pairs = VerificationPairs::new(pairs, bools(&case["same"])).expect("pairs");
    let v = verify(x.view(), &pairs, Metric::Euclidean, &config(case, &fars)).expect("verify");
    check_case(case, &fars, &v);
}

#[test]
fn hand_computed_example() {
    // Similarities: positives 0.9, 0.8, 0.4; negatives 0.8, 0.3, 0.1, 0.0.
    // AUC: 0.9 beats 4, 0.8 beats 3 and ties 1 (3.5), 0.4 beats 3 -> 10.5 / 12.
    let values = [0.9f32, 0.8, 0.4, 0.8, 0.3, 0.1, 0.0];
    let same = [true, true, true, false, false, false, false];
    let roc = Roc::new(Metric::Cosine, &values, &same).expect("roc");
    assert_eq!(roc.auc(), 10.5 / 12.0);
    // TAR@FAR 0.25: one negative may pass; the second-highest negative 0.3 is the threshold:
    // accept > 0.3 -> positives 0.9, 0.8, 0.4 (all), negatives 0.8 (1 of 4).
    let t = roc.tar_at_far(0.25);
    assert_eq!((t.tar, t.threshold, t.far_achieved), (1.0, 0.3, 0.25));
    // FAR 0.2 allows no negative: threshold 0.8 (accept > 0.8): positives 0.9 only.
    let t = roc.tar_at_far(0.2);
    assert_eq!((t.tar, t.threshold, t.far_achieved), (1.0 / 3.0, 0.8, 0.0));
    assert_eq!(t.negatives_needed, 5);
    assert!(!t.resolved());
    // EER: the points are (0,0) (0,1/3) (1/4,2/3) (1/4,1) ...; far + tar - 1 is -1/12 at
    // (1/4,2/3) and 1/4 at (1/4,1): it crosses 0 on that vertical segment, at far 1/4.
    assert_eq!(roc.eer().rate, 0.25);
    // Distances: the same ranking from 1 - similarity gives the same AUC.
    let d: Vec<f32> = values.iter().map(|v| 1.0 - v).collect();
    let roc_d = Roc::new(Metric::Euclidean, &d, &same).expect("roc");
    assert_eq!(roc_d.auc(), roc.auc());
    assert!(roc_d.tar_at_far(0.25).threshold > 0.69 && roc_d.tar_at_far(0.25).threshold < 0.71);
}

#[test]
fn pairs_from_labels() {
    let labels: Vec<u32> = (0..40).map(|i| i % 4).collect(); // 4 classes of 10: 180 positives
    let p = VerificationPairs::from_labels(&labels, &LabelPairs::default()).expect("pairs");
    assert_eq!(p.n_positive(), 180);
    assert_eq!(p.len(), 360);
    let distinct: HashSet<[u32; 2]> = p.pairs().iter().copied().collect();
    assert_eq!(distinct.len(), 360, "no pair twice");
    for (&[i, j], &s) in p.pairs().iter().zip(p.same()) {
        assert!(i < j);
        assert_eq!(s, labels[i as usize] == labels[j as usize]);
    }
    // Shuffled: the first fold holds both kinds; seeded: the same list again.
    let first = &p.same()[fold_ranges(p.len(), 10)[0].clone()];
    assert!(first.contains(&true) && first.contains(&false));
    assert_eq!(
        VerificationPairs::from_labels(&labels, &LabelPairs::default()).expect("again"),
        p
    );
    let other = LabelPairs {
        seed: 1,
        ..LabelPairs::default()
    };
    assert_ne!(
        VerificationPairs::from_labels(&labels, &other).expect("seed 1"),
        p
    );
    // A cap below the positives: a sample of them, as many negatives.
    let capped = LabelPairs {
        max_pairs: 100,
        ..LabelPairs::default()
    };
    let p = VerificationPairs::from_labels(&labels, &capped).expect("capped");
    assert_eq!((p.len(), p.n_positive()), (100, 50));
    // Few negatives (one odd item out): all of them are enumerated, not drawn forever.
    let mut one_out = vec![0u32; 300];
    one_out[7] = 1;
    let p = VerificationPairs::from_labels(&one_out, &LabelPairs::default()).expect("one out");
    assert_eq!((p.len(), p.n_positive()), (2 * 299, 299));
    // Every pair.
    let all = LabelPairs {
        sampling: PairSampling::All,
        ..LabelPairs::default()
    };
    let p = VerificationPairs::from_labels(&labels, &all).expect("all");
    assert_eq!((p.len(), p.n_positive()), (780, 180));
    let tight = LabelPairs {
        max_pairs: 779,
        ..all
    };
    assert!(matches!(
        VerificationPairs::from_labels(&labels, &tight),
        Err(Error::TooManyPairs {
            n_pairs: 780,
            max_pairs: 779
        })
    ));
    assert!(matches!(
        VerificationPairs::from_labels(&[3, 3, 3], &LabelPairs::default()),
        Err(Error::NoPairs)
    ));
}

#[test]
fn lfw_pairs_text() {
    let text = "2\t1\nAlice\t1\t2\nAlice\t1\tBob\t1\nBob\t1\t3\nBob\t3\tAlice\t2\n";
    let rows = ["Alice_0001", "Alice_0002", "Bob_0001", "Bob_0003"];
    let index_of = |name: &str, n: u32| rows.iter().position(|r| *r == format!("{name}_{n:04}"));
    let p = VerificationPairs::from_lfw(text, index_of).expect("pairs");
    assert_eq!(p.pairs(), &[[0, 1], [0, 2], [2, 3], [3, 1]]);
    assert_eq!(p.same(), &[true, false, true, false]);
    let err = VerificationPairs::from_lfw("Alice\t1\t9\n", index_of).expect_err("missing image");
    assert!(
        matches!(err, Error::PairsText { line: 1, .. })
            && err.to_string().contains("image 9 of `Alice`"),
        "{err}"
    );
    let err = VerificationPairs::from_lfw("1 1\nAlice\t1\n", index_of).expect_err("two fields");
    assert!(matches!(err, Error::PairsText { line: 2, .. }), "{err}");
    let err = VerificationPairs::from_lfw("Alice\tx\t2\n", index_of).expect_err("not a number");
    assert!(
        err.to_string().contains("`x` is not an image number"),
        "{err}"
    );
}

fn npy_path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/npy")
        .join(name)
}

#[test]
fn pairs_from_npy() {
    let want = VerificationPairs::new(
        vec![[0, 1], [2, 3], [1, 2], [4, 0]],
        vec![true, false, false, true],
    )
    .expect("pairs");
    for f in ["pairs_int64.npy", "pairs_uint16_fortran.npy"] {
        assert_eq!(npy::read_pairs(npy_path(f)).expect(f), want, "{f}");
    }
    let err = npy::read_pairs(npy_path("pairs_bad_flag.npy")).expect_err("flag 2");
    assert!(
        matches!(
            err,
            Error::NpyPairFlag {
                row: 2,
                value: 2,
                ..
            }
        ),
        "{err}"
    );
    let err = npy::read_pairs(npy_path("pairs_two_columns.npy")).expect_err("2 columns");
    assert!(matches!(err, Error::NpyPairsShape { .. }), "{err}");
    assert!(err.to_string().contains("n × 3"), "{err}");
    let err = npy::read_pairs(npy_path("pairs_negative.npy")).expect_err("negative");
    assert!(
        matches!(
            err,
            Error::NpyPairIndex {
                row: 1,
                value: -1,
                ..
            }
        ),
        "{err}"
    );
    let err = npy::read_pairs(npy_path("emb_f32.npy")).expect_err("floats");
    assert!(matches!(err, Error::NpyDtype { .. }), "{err}");
}

#[test]
fn errors_name_the_problem() {
    let x = array![[0.0f32], [1.0], [2.0]];
    let pairs =
        VerificationPairs::new(vec![[0, 1], [1, 2], [0, 2]], vec![true, false, false]).expect("ok");
    let cfg = |fars: Vec<f64>, folds| VerificationConfig { fars, folds };
    assert!(matches!(
        verify(x.view(), &pairs, Metric::Euclidean, &cfg(vec![0.0], 2)),
        Err(Error::BadFar(0.0))
    ));
    assert!(matches!(
        verify(x.view(), &pairs, Metric::Euclidean, &cfg(vec![1.5], 2)),
        Err(Error::BadFar(_))
    ));
    assert!(matches!(
        verify(x.view(), &pairs, Metric::Euclidean, &cfg(vec![0.1], 1)),
        Err(Error::TooFewFolds(1))
    ));
    assert!(matches!(
        verify(x.view(), &pairs, Metric::Euclidean, &cfg(vec![0.1], 4)),
        Err(Error::FoldsExceedPairs {
            folds: 4,
            n_pairs: 3
        })
    ));
    let beyond = VerificationPairs::new(vec![[0, 3], [1, 2]], vec![true, false]).expect("ok");
    let err = verify(x.view(), &beyond, Metric::Euclidean, &cfg(vec![0.1], 2)).expect_err("3");
    assert!(
        matches!(
            err,
            Error::PairItem {
                pair: 0,
                index: 3,
                n_items: 3
            }
        ),
        "{err}"
    );
    assert!(
        err.to_string()
            .contains("pair 0 names item 3, but the embeddings have 3 rows"),
        "{err}"
    );
    let later = VerificationPairs::new(vec![[0, 1], [4, 2]], vec![true, false]).expect("ok");
    assert!(matches!(
        later.check_items(3),
        Err(Error::PairItem {
            pair: 1,
            index: 4,
            ..
        })
    ));
    assert!(later.check_items(5).is_ok());
    let only_pos = VerificationPairs::new(vec![[0, 1], [1, 2]], vec![true, true]).expect("ok");
    assert!(matches!(
        verify(x.view(), &only_pos, Metric::Euclidean, &cfg(vec![0.1], 2)),
        Err(Error::NoPairs)
    ));
    assert!(matches!(
        VerificationPairs::new(vec![[0, 1]], vec![true, false]),
        Err(Error::PairsLength {
            n_pairs: 1,
            n_flags: 2
        })
    ));
    assert!(matches!(
        verify_values(
            Metric::Cosine,
            &[0.5, f32::NAN],
            &[true, false],
            &cfg(vec![0.1], 2)
        ),
        Err(Error::NonFiniteScore { pair: 1, .. })
    ));
}

#[test]
fn plot_points_keep_the_ends_and_thin_the_rest() {
    let n = 20_000;
    let values: Vec<f32> = (0..n).map(|i| i as f32 / n as f32).collect();
    let same: Vec<bool> = (0..n).map(|i| i % 3 == 0).collect();
    let roc = Roc::new(Metric::Cosine, &values, &same).expect("roc");
    let all = roc.points();
    let few = roc.points_for_plot(200);
    assert!(few.len() <= 2 * 200 + 2 && few.len() > 100, "{}", few.len());
    assert_eq!(few.first(), all.first());
    assert_eq!(few.last(), all.last());
    assert!(
        few.windows(2)
            .all(|w| w[0].far <= w[1].far && w[0].tar <= w[1].tar)
    );
}
