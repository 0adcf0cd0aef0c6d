//! Re-ranking against naive implementations of the papers' formulas: k-reciprocal re-ranking
//! (Zhong et al. 2017) on the full distance matrix, α-query expansion and α-database-side
//! augmentation (Radenović et al. 2018) from a full sort; and the scores before and after.

mod common;

use dml_eval::{
    Error, EvalConfig, RankingDepth,
    rerank::{Rerank, evaluate_reranked, expand_embeddings, k_reciprocal_ranking},
};
use dml_kernels::Metric;
use ndarray::{Array2, ArrayView2, Axis, s};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Clustered points: `n` rows in `d` dimensions around `c` centres, labels = centre.
fn clustered(n: usize, d: usize, c: usize, spread: f32, seed: u64) -> (Array2<f32>, Vec<u32>) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let centres = Array2::from_shape_fn((c, d), |_| rng.random_range(-1.0f32..1.0));
    let labels: Vec<u32> = (0..n).map(|_| rng.random_range(0..c as u32)).collect();
    let x = Array2::from_shape_fn((n, d), |(i, j)| {
        centres[[labels[i] as usize, j]] + spread * rng.random_range(-1.0f32..1.0)
    });
    (x, labels)
}

/// ⌊k/2⌉ with halves to even (numpy's `around`).
fn half_even(k: usize) -> usize {
    let h = k as f64 / 2.0;
    let r = h.round();
    if (h - h.floor() - 0.5).abs() < 1e-12 && r as usize % 2 == 1 {
        r as usize - 1
    } else {
        r as usize
    }
}

/// The paper's k-reciprocal re-ranking straight from the full distance matrix (f64): every
/// query's references as (d*, index), sorted by d*, ties by index.
fn naive_k_reciprocal_scores(
    all: ArrayView2<'_, f32>,
    n_q: usize,
    ref_offset: usize,
    (k1, k2, lambda): (usize, usize, f64),
) -> Vec<Vec<(f64, u32)>> {
    let n = all.nrows();
    let d = Array2::from_shape_fn((n, n), |(i, j)| {
        all.row(i)
            .iter()
            .zip(all.row(j))
            .map(|(&a, &b)| (f64::from(a) - f64::from(b)).powi(2))
            .sum::<f64>()
    });
    // Each item's items in order: itself first, then by distance, ties by index.
    let order: Vec<Vec<usize>> = (0..n)
        .map(|i| {
            let mut o: Vec<usize> = (0..n).filter(|&j| j != i).collect();
            o.sort_by(|&a, &b| d[[i, a]].total_cmp(&d[[i, b]]).then(a.cmp(&b)));
            o.insert(0, i);
            o
        })
        .collect();
    let near = |i: usize, k: usize| order[i][..=k.min(n - 1)].to_vec();
    let recip = |i: usize, k: usize| -> Vec<usize> {
        near(i, k)
            .into_iter()
            .filter(|&j| near(j, k).contains(&i))
            .collect()
    };
    let k1 = k1.min(n - 1);
    let mut v = Array2::<f64>::zeros((n, n));
    for i in 0..n {
        let r = recip(i, k1);
        let mut star = r.clone();
        for &j in &r {
            let rj = recip(j, half_even(k1));
            let common = rj.iter().filter(|m| r.contains(m)).count() as f64;
            if common > 2.0 / 3.0 * rj.len() as f64 {
                star.extend(rj);
            }
        }
        star.sort_unstable();
        star.dedup();
        let sum: f64 = star.iter().map(|&m| (-d[[i, m]]).exp()).sum();
        for &m in &star {
            v[[i, m]] = (-d[[i, m]]).exp() / sum;
        }
    }
    if k2 > 1 {
        let mut qe = Array2::<f64>::zeros((n, n));
        for i in 0..n {
            let group = near(i, k2 - 1);
            for &m in &group {
                let row = v.row(m).to_owned();
                qe.row_mut(i).scaled_add(1.0 / group.len() as f64, &row);
            }
        }
        v = qe;
    }
    let leave_one_out = ref_offset == 0;
    (0..n_q)
        .map(|i| {
            let mut refs: Vec<(f64, u32)> = (ref_offset..n)
                .filter(|&j| !(leave_one_out && j == i))
                .map(|j| {
                    let (mut mins, mut maxs) = (0.0, 0.0);
                    for m in 0..n {
                        mins += v[[i, m]].min(v[[j, m]]);
                        maxs += v[[i, m]].max(v[[j, m]]);
                    }
                    let jaccard = 1.0 - mins / maxs;
                    (
                        (1.0 - lambda) * jaccard + lambda * d[[i, j]],
                        (j - ref_offset) as u32,
                    )
                })
                .collect();
            refs.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
            refs
        })
        .collect()
}

/// The naive ranked lists (indices only).
fn naive_k_reciprocal(
    all: ArrayView2<'_, f32>,
    n_q: usize,
    ref_offset: usize,
    params: (usize, usize, f64),
) -> Vec<Vec<u32>> {
    naive_k_reciprocal_scores(all, n_q, ref_offset, params)
        .into_iter()
        .map(|l| l.into_iter().map(|(_, j)| j).collect())
        .collect()
}

/// dml's lists against the naive scores: at every position the naive d* of dml's item equals
/// that of the naive list's item to 1e-6 (dml keeps the V's in f32, so references whose d* tie
/// in exact arithmetic can come in another order), and no item twice.
fn assert_same_ranking(got: &[Vec<u32>], want: &[Vec<(f64, u32)>], depth: usize, what: &str) {
    for (q, (g, w)) in got.iter().zip(want).enumerate() {
        assert_eq!(g.len(), depth.min(w.len()), "{what} query {q}: length");
        let score: std::collections::HashMap<u32, f64> = w.iter().map(|&(s, j)| (j, s)).collect();
        let mut seen = std::collections::HashSet::new();
        for (p, &j) in g.iter().enumerate() {
            assert!(seen.insert(j), "{what} query {q}: {j} twice");
            let (s, want_j) = w[p];
            assert!(
                (score[&j] - s).abs() < 1e-6,
                "{what} query {q} position {p}: {j} (d* {}) where the naive list has {want_j} (d* {s})",
                score[&j]
            );
        }
    }
}

#[test]
fn k_reciprocal_matches_the_papers_formulas() {
    for (n, d, c, seed, params) in [
        (60, 4, 6, 1, (20, 6, 0.3)),
        (45, 3, 5, 2, (7, 1, 0.5)),
        (80, 5, 8, 3, (9, 3, 0.0)),
        (30, 2, 3, 4, (5, 2, 1.0)),
    ] {
        let (x, _) = clustered(n, d, c, 0.4, seed);
        let (k1, k2, lambda) = params;
        let what = format!("n {n} params {params:?}");
        // Leave-one-out: the whole list (depth = every other item), and a short head of it.
        let want = naive_k_reciprocal_scores(x.view(), n, 0, params);
        for depth in [n - 1, 5] {
            let got =
                k_reciprocal_ranking(x.view(), None, Metric::Euclidean, k1, k2, lambda, depth)
                    .expect("rerank");
            assert_same_ranking(
                &got,
                &want,
                depth,
                &format!("{what} leave-one-out depth {depth}"),
            );
        }
        // Separate queries: the first 10 items query the rest.
        let (q, r) = (x.slice(s![..10, ..]), x.slice(s![10.., ..]));
        let got = k_reciprocal_ranking(q, Some(r), Metric::Euclidean, k1, k2, lambda, 12)
            .expect("rerank");
        let want = naive_k_reciprocal_scores(x.view(), 10, 10, params);
        assert_same_ranking(&got, &want, 12, &format!("{what} gallery"));
    }
    // Cosine: the squared distance of the L2-normalised embeddings.
    let (x, _) = clustered(50, 6, 5, 0.5, 9);
    let got = k_reciprocal_ranking(x.view(), None, Metric::Cosine, 10, 4, 0.3, 49).expect("cos");
    let normalised = dml_kernels::l2_normalize(x.view());
    assert_eq!(
        got,
        naive_k_reciprocal(normalised.view(), 50, 0, (10, 4, 0.3))
    );
}

/// `normalise(x + Σ max(0, s_i)^α n_i)` from a full sort (f64).
fn naive_expand(
    x: ArrayView2<'_, f64>,
    base: ArrayView2<'_, f64>,
    k: usize,
    alpha: f64,
    skip_self: bool,
) -> Array2<f64> {
    let mut out = x.to_owned();
    for i in 0..x.nrows() {
        let mut sims: Vec<(f64, usize)> = (0..base.nrows())
            .filter(|&j| !(skip_self && j == i))
            .map(|j| (-x.row(i).dot(&base.row(j)), j))
            .collect();
        sims.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
        for &(neg, j) in sims.iter().take(k) {
            let w = (-neg).max(0.0).powf(alpha);
            out.row_mut(i).scaled_add(w, &base.row(j));
        }
        let norm = out.row(i).dot(&out.row(i)).sqrt();
        out.row_mut(i).mapv_inplace(|v| v / norm);
    }
    out
}

fn unit64(x: ArrayView2<'_, f32>) -> Array2<f64> {
    let mut y = x.mapv(f64::from);
    for mut r in y.axis_iter_mut(Axis(0)) {
        let n = r.dot(&r).sqrt();
        r.mapv_inplace(|v| v / n);
    }
    y
}

fn assert_close(a: &Array2<f32>, b: &Array2<f64>, what: &str) {
    for (x, y) in a.iter().zip(b) {
        assert!((f64::from(*x) - y).abs() < 1e-5, "{what}: {x} vs {y}");
    }
}

#[test]
fn expansion_matches_the_formula() {
    let (x, _) = clustered(70, 8, 7, 0.5, 5);
    let (q, r) = (x.slice(s![..20, ..]), x.slice(s![20.., ..]));
    let (q64, r64) = (unit64(q), unit64(r));
    for (k, alpha) in [(1, 3.0), (2, 3.0), (5, 0.0), (3, 1.5)] {
        // α-QE against a gallery.
        let (q2, r2) = expand_embeddings(q, Some(r), k, alpha, true, false).expect("qe");
        assert_close(
            &q2,
            &naive_expand(q64.view(), r64.view(), k, alpha, false),
            "qe",
        );
        assert_close(&r2, &r64, "qe leaves the references");
        // αDBA, then α-QE against the augmented references.
        let (q3, r3) = expand_embeddings(q, Some(r), k, alpha, true, true).expect("dba");
        let dba = naive_expand(r64.view(), r64.view(), k, alpha, true);
        assert_close(&r3, &dba, "dba");
        assert_close(
            &q3,
            &naive_expand(q64.view(), dba.view(), k, alpha, false),
            "qe+dba",
        );
        // Leave-one-out: a query never counts itself.
        let all64 = unit64(x.view());
        let (q4, r4) = expand_embeddings(x.view(), None, k, alpha, true, false).expect("loo");
        assert_close(
            &q4,
            &naive_expand(all64.view(), all64.view(), k, alpha, true),
            "loo qe",
        );
        assert_close(&r4, &all64, "loo references");
    }
}

#[test]
fn scores_before_and_after() {
    let (x, y) = clustered(120, 6, 6, 0.6, 11);
    let cfg = EvalConfig {
        nmi: false,
        recall_at: vec![1, 4],
        ..EvalConfig::default()
    };
    let out = evaluate_reranked(
        x.view(),
        &y,
        None,
        Metric::Euclidean,
        &cfg,
        &Rerank::k_reciprocal(),
    )
    .expect("rerank");
    let plain = dml_eval::evaluate(x.view(), &y, Metric::Euclidean, &cfg).expect("plain");
    assert_eq!(out.before, plain);
    // After: the naive re-ranked lists scored by the naive definitions.
    let lists = naive_k_reciprocal(x.view(), 120, 0, (20, 6, 0.3));
    let ranked: Vec<Vec<u32>> = lists
        .iter()
        .map(|l| l.iter().map(|&j| y[j as usize]).collect())
        .collect();
    let ks: Vec<usize> = vec![1, 4];
    let want = common::naive_scores(&y, &ranked, &ks).expect("positives");
    assert!((out.after.precision_at_1 - want.p1).abs() < 1e-12);
    assert!((out.after.map_at_r.expect("on") - want.map_at_r).abs() < 1e-12);
    assert!((out.after.r_precision.expect("on") - want.r_precision).abs() < 1e-12);
    assert!((out.after.recall_at_k(4).expect("on") - want.recall[1]).abs() < 1e-12);
    // Query expansion in leave-one-out mode: scored on the expanded queries, each query left
    // out of the references by index.
    let qe = evaluate_reranked(
        x.view(),
        &y,
        None,
        Metric::Cosine,
        &cfg,
        &Rerank::query_expansion(),
    )
    .expect("qe");
    let x64 = unit64(x.view());
    let q2 = naive_expand(x64.view(), x64.view(), 2, 3.0, true);
    let ranked: Vec<Vec<u32>> = (0..120)
        .map(|i| {
            let mut o: Vec<(f64, usize)> = (0..120)
                .filter(|&j| j != i)
                .map(|j| (-q2.row(i).dot(&x64.row(j)), j))
                .collect();
            o.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
            o.into_iter().map(|(_, j)| y[j]).collect()
        })
        .collect();
    let want = common::naive_scores(&y, &ranked, &ks).expect("positives");
    assert!((qe.after.map_at_r.expect("on") - want.map_at_r).abs() < 1e-12);
    assert!((qe.after.precision_at_1 - want.p1).abs() < 1e-12);
}

#[test]
fn bad_requests_are_refused() {
    let (x, y) = clustered(20, 3, 2, 0.5, 1);
    let cfg = EvalConfig {
        nmi: false,
        ..EvalConfig::default()
    };
    let ranking_wide = EvalConfig {
        mean_average_precision: true,
        ..cfg.clone()
    };
    for (metric, cfg, rerank, needle) in [
        (
            Metric::Dot,
            &cfg,
            Rerank::k_reciprocal(),
            "needs a distance",
        ),
        (
            Metric::Euclidean,
            &ranking_wide,
            Rerank::k_reciprocal(),
            "ranking_depth",
        ),
        (
            Metric::Euclidean,
            &cfg,
            Rerank::KReciprocal {
                k1: 0,
                k2: 6,
                lambda: 0.3,
            },
            "k1 and k2",
        ),
        (
            Metric::Euclidean,
            &cfg,
            Rerank::KReciprocal {
                k1: 20,
                k2: 6,
                lambda: 1.5,
            },
            "lambda",
        ),
        (
            Metric::Cosine,
            &cfg,
            Rerank::Expansion {
                k: 2,
                alpha: -1.0,
                query: true,
                database: false,
            },
            "alpha",
        ),
    ] {
        let err = evaluate_reranked(x.view(), &y, None, metric, cfg, &rerank).expect_err("bad");
        assert!(
            matches!(err, Error::Rerank(_)) && err.to_string().contains(needle),
            "{err}"
        );
    }
    // With a depth, the ranking-wide scores are served.
    let with_depth = EvalConfig {
        ranking_depth: RankingDepth::K(5),
        ..ranking_wide
    };
    let out = evaluate_reranked(
        x.view(),
        &y,
        None,
        Metric::Euclidean,
        &with_depth,
        &Rerank::k_reciprocal(),
    )
    .expect("depth");
    assert!(out.after.mean_average_precision.is_some());
    // The TOML/JSON form.
    let r: Rerank = serde_json::from_str(r#"{"kind": "k_reciprocal", "k1": 10}"#).expect("json");
    assert_eq!(
        r,
        Rerank::KReciprocal {
            k1: 10,
            k2: 6,
            lambda: 0.3
        }
    );
    let r: Rerank =
        serde_json::from_str(r#"{"kind": "expansion", "database": true}"#).expect("json");
    assert_eq!(
        r,
        Rerank::Expansion {
            k: 2,
            alpha: 3.0,
            query: true,
            database: true
        }
    );
    assert!(serde_json::from_str::<Rerank>(r#"{"kind": "expansion", "beta": 1}"#).is_err());
}
