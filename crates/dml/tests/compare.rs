//! `dml compare`, run as a process on the embedded digits: one epoch per cell, a 2 × 2 grid.

use std::path::Path;
use std::process::{Command, Output};

const DIGITS: &str = include_str!("../../../configs/digits.toml");

fn dml(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_dml"))
        .args(args)
        .output()
        .expect("the dml binary runs")
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// The digits config with its output inside `dir`, written to `dir/base.toml`.
fn base_config(dir: &Path) -> std::path::PathBuf {
    let text = DIGITS.replace(
        "output_dir = \"runs/digits\"",
        &format!("output_dir = {:?}", s(&dir.join("runs"))),
    );
    assert_ne!(text, DIGITS, "the digits config names its output folder");
    let path = dir.join("base.toml");
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn compare_writes_every_cell_to_markdown_and_json() {
    let dir = tempfile::tempdir().unwrap();
    let config = base_config(dir.path());
    let out_dir = dir.path().join("grid");
    let losses = ["contrastive", "margin"];
    let miners = ["uniform", "batch_hard"];
    let out = dml(&[
        "compare",
        "--config",
        s(&config),
        "--losses",
        &losses.join(","),
        "--miners",
        &miners.join(","),
        "--epochs",
        "1",
        "--output-dir",
        s(&out_dir),
    ]);
    assert!(
        out.status.success(),
        "dml compare failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    // The markdown: the header, then one row per cell, losses major, every value a percentage.
    let md = std::fs::read_to_string(out_dir.join("compare.md")).unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        md,
        "stdout is the table"
    );
    let lines: Vec<&str> = md.lines().collect();
    assert_eq!(lines[0], "| loss | miner | R@1 | R@2 | R@4 | R@8 | NMI |");
    assert_eq!(lines.len(), 2 + losses.len() * miners.len());
    let mut row = 2;
    for l in losses {
        for m in miners {
            let cols: Vec<&str> = lines[row]
                .trim_matches('|')
                .split('|')
                .map(str::trim)
                .collect();
            assert_eq!(cols[..2], [l, m], "row {row}: {}", lines[row]);
            assert_eq!(cols.len(), 7, "row {row}: {}", lines[row]);
            for v in &cols[2..] {
                let v: f64 = v.parse().unwrap_or_else(|_| panic!("a number: {v}"));
                assert!((0.0..=100.0).contains(&v), "row {row}: {v}");
            }
            row += 1;
        }
    }

    // The JSON: every cell, finite metrics in [0, 1], Recall@K non-decreasing in K.
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out_dir.join("compare.json")).unwrap())
            .unwrap();
    assert_eq!(json["epochs"], 1);
    assert_eq!(json["recall_at"], serde_json::json!([1, 2, 4, 8]));
    let cells = json["cells"].as_array().unwrap();
    assert_eq!(cells.len(), losses.len() * miners.len());
    let mut i = 0;
    for l in losses {
        for m in miners {
            let c = &cells[i];
            assert_eq!(
                (c["loss"].as_str(), c["miner"].as_str()),
                (Some(l), Some(m))
            );
            let metrics = c["metrics"].as_object().unwrap();
            for key in [
                "recall_at_1",
                "recall_at_2",
                "recall_at_4",
                "recall_at_8",
                "nmi",
            ] {
                let v = metrics[key].as_f64().unwrap_or(f64::NAN);
                assert!(
                    v.is_finite() && (0.0..=1.0).contains(&v),
                    "{l}/{m} {key} = {v}"
                );
            }
            let r: Vec<f64> = [1, 2, 4, 8]
                .iter()
                .map(|k| metrics[&format!("recall_at_{k}")].as_f64().unwrap())
                .collect();
            assert!(r.windows(2).all(|w| w[0] <= w[1]), "{l}/{m}: {r:?}");
            // The markdown shows the same numbers, in percent with one decimal.
            let md_row = lines[2 + i];
            assert!(
                md_row.contains(&format!(" {:.1} |", 100.0 * r[0])),
                "{md_row} vs {r:?}"
            );
            assert!(c["train_seconds"].as_f64().unwrap() > 0.0);
            // Each cell trained in its own folder, with its own loss and miner.
            let cell_config =
                std::fs::read_to_string(out_dir.join(format!("{l}-{m}")).join("config.toml"))
                    .unwrap();
            assert!(cell_config.contains(&format!("kind = \"{l}\"")), "{l}/{m}");
            assert!(cell_config.contains(&format!("kind = \"{m}\"")), "{l}/{m}");
            i += 1;
        }
    }
    assert!(out_dir.join("negative_distances.png").is_file());
    assert!(out_dir.join("negative_distances.svg").is_file());
}

#[test]
fn compare_rejects_an_unknown_kind_before_training() {
    let dir = tempfile::tempdir().unwrap();
    let config = base_config(dir.path());
    let out_dir = dir.path().join("grid");
    let out = dml(&[
        "compare",
        "--config",
        s(&config),
        "--losses",
        "margin,tripplet",
        "--miners",
        "uniform",
        "--output-dir",
        s(&out_dir),
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("tripplet"), "{err}");
    // The typo in the last loss is found before the first cell trains.
    assert!(!out_dir.join("margin-uniform").exists());
}
