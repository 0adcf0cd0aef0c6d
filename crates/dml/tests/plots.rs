//! Plots are written as PNG and SVG, and the PCA is that of a hand-made data set.

use dml::checkpoint::EpochRecord;
use ndarray::Array2;

#[test]
fn pca_recovers_the_axis_of_largest_variance() {
    // Points spread along (1, 1)/√2 with small spread along (1, −1)/√2; each t comes with both
    // signs of the offset, so the two directions are exactly uncorrelated and are the principal
    // axes.
    let mut rows = Vec::new();
    for i in 0..10 {
        let t = i as f32 - 4.5;
        rows.extend([t + 0.1, t - 0.1, 0.0]);
        rows.extend([t - 0.1, t + 0.1, 0.0]);
    }
    let x = Array2::from_shape_vec((20, 3), rows).unwrap();
    let p = dml::plots::pca_2d(x.view()).unwrap();
    // First component: projection on (1, 1, 0)/√2 (sign fixed: largest entry positive).
    for i in 0..20 {
        let expected = (x[[i, 0]] + x[[i, 1]]) / 2f32.sqrt();
        assert!(
            (p[[i, 0]] - expected).abs() < 1e-3,
            "{} vs {expected}",
            p[[i, 0]]
        );
        let second = (x[[i, 0]] - x[[i, 1]]) / 2f32.sqrt();
        assert!((p[[i, 1]].abs() - second.abs()).abs() < 1e-3);
    }
}

#[test]
fn plots_are_written_in_both_formats() {
    let dir = tempfile::tempdir().unwrap();
    let history: Vec<EpochRecord> = (0..4)
        .map(|e| EpochRecord {
            epoch: e,
            loss: (e > 0).then(|| 1.0 / e as f64),
            tuples_per_batch: (e > 0).then_some(100.0),
            lr_factor: 1.0,
            train_seconds: 1.0,
            skipped_batches: 0,
            spread: None,
            collapse: None,
            metrics: Some(dml::eval::Metrics {
                recall_at: vec![(1, 0.5 + 0.1 * e as f64)],
                precision_at_1: 0.5 + 0.1 * e as f64,
                r_precision: None,
                map_at_r: None,
                nmi: Some(0.4),
                ami: None,
                n_queries: 30,
                n_queries_without_positive: 0,
                ..dml::eval::Metrics::default()
            }),
        })
        .collect();
    let files = dml::plots::training_curves(&history, "test", &dir.path().join("curves")).unwrap();
    let x = Array2::from_shape_fn((30, 4), |(i, j)| ((i * 7 + j * 3) % 11) as f32);
    let labels: Vec<u32> = (0..30).map(|i| i % 3).collect();
    let more =
        dml::plots::embedding_map(x.view(), &labels, "map", &dir.path().join("map")).unwrap();
    let hist = dml::plots::distance_histograms(
        &[
            ("uniform".into(), vec![1.3, 1.4, 1.41, 1.5]),
            ("distance_weighted".into(), vec![0.6, 1.0, 1.2]),
        ],
        32,
        "negatives",
        &dir.path().join("hist"),
    )
    .unwrap();
    for f in files.iter().chain(&more).chain(&hist) {
        let len = std::fs::metadata(f).unwrap().len();
        assert!(len > 1000, "{} is only {len} bytes", f.display());
    }
    let png = std::fs::read(dir.path().join("curves.png")).unwrap();
    assert_eq!(&png[..4], b"\x89PNG");
    let svg = std::fs::read_to_string(dir.path().join("hist.svg")).unwrap();
    assert!(svg.contains("<svg") && svg.contains("uniform"));
}

/// On anisotropic 6-d data the two projections are uncorrelated, the first has the largest
/// variance any direction has (checked against every coordinate axis and against the Rayleigh
/// quotient of random directions), and 1-d data gives a zero second column.
#[test]
fn pca_projections_are_the_directions_of_largest_variance() {
    let (n, d) = (200usize, 6usize);
    let mut state = 0x1234_5678_9ABC_DEF1u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state >> 11) as f64 / (1u64 << 53) as f64 - 0.5
    };
    let scales = [5.0, 3.0, 1.0, 0.5, 0.2, 0.1];
    let mut rows = Vec::new();
    for _ in 0..n {
        let z: Vec<f64> = (0..d).map(|j| next() * scales[j]).collect();
        // Mix the axes so the components are not the coordinate axes.
        rows.extend((0..d).map(|j| (z[j] + 0.5 * z[(j + 1) % d]) as f32));
    }
    let x = Array2::from_shape_vec((n, d), rows).unwrap();
    let p = dml::plots::pca_2d(x.view()).unwrap().mapv(f64::from);
    let centred = {
        let x = x.mapv(f64::from);
        let mean = x.mean_axis(ndarray::Axis(0)).unwrap();
        x - &mean
    };
    let var = |v: ndarray::ArrayView1<'_, f64>| v.dot(&v) / n as f64;
    let (v0, v1) = (var(p.column(0)), var(p.column(1)));
    let cross = p.column(0).dot(&p.column(1)) / n as f64;
    assert!(cross.abs() < 1e-4 * v0, "uncorrelated: {cross} vs {v0}");
    assert!(v0 >= v1, "ordered: {v0} < {v1}");
    for _ in 0..200 {
        let dir: Vec<f64> = (0..d).map(|_| next()).collect();
        let norm = dir.iter().map(|a| a * a).sum::<f64>().sqrt();
        let u = ndarray::Array1::from_iter(dir.iter().map(|a| a / norm));
        let proj = centred.dot(&u);
        assert!(
            var(proj.view()) <= v0 * (1.0 + 1e-5),
            "a direction beats the first component"
        );
    }
    let one_d = Array2::from_shape_vec((4, 1), vec![1.0f32, 2.0, 3.0, 6.0]).unwrap();
    let p = dml::plots::pca_2d(one_d.view()).unwrap();
    assert_eq!(p.column(1).to_vec(), vec![0.0; 4]);
    assert_eq!(p.column(0).to_vec(), vec![-2.0, -1.0, 0.0, 3.0]);
}
