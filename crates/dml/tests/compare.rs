//! `dml compare`, run as a process: on the glyph task (tests/common) where training must beat the
//! untrained network, and on the embedded digits for one epoch per run.

use std::path::Path;
use std::process::{Command, Output};

mod common;

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

/// The cells of a 1 × 2 grid over two seeds, with the baseline rows: every number in the table
/// is recomputed here from the runs in the JSON (mean and min–max, in percent), the seeds are
/// really different runs, each run's folder holds its own loss, miner and seed, and the untrained
/// row of a seed is the first epoch-0 evaluation of that seed's weights.
/// The digits config on the glyph task (10 classes of 60 images, 0–4 train, 5–9 held out),
/// written in `dir`: neither its pixels nor random features retrieve its classes well, so a
/// trained network must beat the untrained one by a margin.
fn glyph_config(dir: &Path) -> std::path::PathBuf {
    let data = dir.join("glyphs");
    std::fs::create_dir_all(&data).unwrap();
    common::glyph_idx(&data);
    let config = base_config(dir);
    let text = std::fs::read_to_string(&config).unwrap();
    let glyphs = text.replace(
        "kind = \"digits\"",
        &format!("kind = \"idx\"\npath = {:?}", s(&data)),
    );
    assert_ne!(glyphs, text, "the digits config names its data set");
    std::fs::write(&config, glyphs).unwrap();
    config
}

/// The table is the mean and range of each cell's runs and of the untrained networks, computed
/// here from the report's runs and the runs' own logs; and every cell's trained network beats
/// the untrained one of its seed on held-out MAP@R by 0.15 (a pipeline that does not train, or
/// that evaluates the wrong network, fails that).
#[test]
fn compare_reports_mean_and_range_over_seeds_beside_the_baselines() {
    // Trained cells gain 0.21–0.27 here; with the optimiser step removed (only batch norm's
    // running statistics move) the gain is 0.08.
    const MARGIN: f64 = 0.15;
    let dir = tempfile::tempdir().unwrap();
    let config = glyph_config(dir.path());
    let out_dir = dir.path().join("grid");
    let miners = ["uniform", "batch_hard"];
    let seeds = [3u64, 4];
    let out = dml(&[
        "compare",
        "--config",
        s(&config),
        "--losses",
        "margin",
        "--miners",
        &miners.join(","),
        "--seeds",
        "3,4",
        "--output-dir",
        s(&out_dir),
    ]);
    assert!(
        out.status.success(),
        "dml compare failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let md = std::fs::read_to_string(out_dir.join("compare.md")).unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        md,
        "stdout is the table"
    );
    let report: dml::compare::CompareReport =
        serde_json::from_str(&std::fs::read_to_string(out_dir.join("compare.json")).unwrap())
            .unwrap();
    assert_eq!(report.seeds, seeds);
    let lines: Vec<&str> = md.lines().collect();
    assert_eq!(
        lines[0],
        "| loss | miner | R@1 | R@2 | R@4 | R@8 | P@1 | R-prec | MAP@R | NMI | runs |"
    );
    let keys = [
        "recall_at_1",
        "recall_at_2",
        "recall_at_4",
        "recall_at_8",
        "precision_at_1",
        "r_precision",
        "map_at_r",
        "nmi",
    ];
    // "mean (min–max)" in percent from a list of values, computed here.
    let summary = |v: &[f64]| {
        let mean = v.iter().sum::<f64>() / v.len() as f64;
        let lo = v.iter().cloned().fold(f64::INFINITY, f64::min);
        let hi = v.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        if v.len() > 1 {
            format!("{:.1} ({:.1}–{:.1})", 100.0 * mean, 100.0 * lo, 100.0 * hi)
        } else {
            format!("{:.1}", 100.0 * mean)
        }
    };
    let row = |name: &str, values: Vec<Vec<f64>>, runs: &str| {
        let mut r = format!("| {name} |");
        for v in values {
            r.push_str(&format!(" {} |", summary(&v)));
        }
        r.push_str(&format!(" {runs} |"));
        r
    };
    let json_of = |m: &dml::eval::Metrics| m.to_json();
    // Raw input: one value per score.
    let raw = json_of(report.raw_input.as_ref().unwrap().metrics.as_ref().unwrap());
    let raw_values = keys
        .iter()
        .map(|k| vec![raw[k].as_f64().unwrap()])
        .collect();
    assert_eq!(lines[2], row("*raw input* | –", raw_values, "–"));
    // Untrained: one per seed, read back from each seed's first cell's own log (epoch 0).
    assert_eq!(report.untrained.len(), 2);
    let mut untrained_values = vec![Vec::new(); keys.len()];
    for (u, seed) in report.untrained.iter().zip(seeds) {
        assert_eq!(u.seed, seed);
        let log = dml::log::MetricsLog::read(
            &out_dir.join(format!("margin-{}/seed-{seed}/metrics.jsonl", miners[0])),
        )
        .unwrap();
        assert_eq!(log[0].epoch, 0);
        assert_eq!(log[0].metrics.as_ref(), Some(&u.metrics));
        // Its spread is the seed's collapse reference: the seed's other cell, which does not
        // evaluate the untrained network, holds it in its state.
        assert!(log[0].spread.is_some());
        assert_eq!(u.spread, log[0].spread);
        let later = out_dir.join(format!("margin-{}/seed-{seed}", miners[1]));
        let state = dml::checkpoint::load(&later.join("checkpoint.safetensors"))
            .unwrap()
            .state;
        assert!(state.history.iter().all(|r| r.epoch > 0));
        assert_eq!(state.untrained_spread, u.spread);
        let j = json_of(&u.metrics);
        for (i, k) in keys.iter().enumerate() {
            untrained_values[i].push(j[k].as_f64().unwrap());
        }
    }
    assert_ne!(
        report.untrained[0].metrics, report.untrained[1].metrics,
        "two seeds, two initialisations"
    );
    assert_eq!(
        lines[3],
        row("*untrained network* | –", untrained_values, "2")
    );
    // The cells.
    assert_eq!(lines.len(), 4 + miners.len());
    for (i, m) in miners.iter().enumerate() {
        let cell = &report.cells[i];
        assert_eq!((cell.loss.as_str(), cell.miner.as_str()), ("margin", *m));
        assert_eq!(cell.runs.iter().map(|r| r.seed).collect::<Vec<_>>(), seeds);
        assert_ne!(
            cell.runs[0].metrics, cell.runs[1].metrics,
            "{m}: seeds differ"
        );
        let mut values = vec![Vec::new(); keys.len()];
        for (r, u) in cell.runs.iter().zip(&report.untrained) {
            assert!(r.train_seconds > 0.0 && r.error.is_none());
            let (trained, untrained) = (
                r.metrics.as_ref().unwrap().map_at_r.unwrap(),
                u.metrics.map_at_r.unwrap(),
            );
            assert!(
                trained > untrained + MARGIN,
                "{m}, seed {}: held-out MAP@R trained {trained:.4}, untrained {untrained:.4}",
                r.seed
            );
            let j = json_of(r.metrics.as_ref().unwrap());
            for (i, k) in keys.iter().enumerate() {
                values[i].push(j[k].as_f64().unwrap());
            }
            let folder = out_dir.join(format!("margin-{m}/seed-{}", r.seed));
            let cell_config = std::fs::read_to_string(folder.join("config.toml")).unwrap();
            assert!(cell_config.contains(&format!("kind = \"{m}\"")), "{m}");
            assert!(cell_config.contains(&format!("seed = {}", r.seed)), "{m}");
        }
        assert_eq!(lines[4 + i], row(&format!("margin | {m}"), values, "2"));
    }
    for f in ["negative_distances", "map_at_r"] {
        assert!(out_dir.join(format!("{f}.png")).is_file(), "{f}.png");
        assert!(out_dir.join(format!("{f}.svg")).is_file(), "{f}.svg");
    }
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

/// Proxy losses join the grid in its `none` column: `proxy_anchor` trains without a miner, the
/// margin loss trains with and without one, and the cell a proxy loss cannot train in (with a
/// miner) is skipped with a message rather than failing the grid.
#[test]
fn compare_runs_proxy_losses_without_a_miner() {
    let dir = tempfile::tempdir().unwrap();
    let config = base_config(dir.path());
    let out_dir = dir.path().join("grid");
    let out = dml(&[
        "compare",
        "--config",
        s(&config),
        "--losses",
        "proxy_anchor,margin",
        "--miners",
        "none,batch_hard",
        "--epochs",
        "1",
        "--loss-lr",
        "0.025",
        "--output-dir",
        s(&out_dir),
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "dml compare failed: {err}");
    assert!(err.contains("skipping proxy_anchor + batch_hard"), "{err}");
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out_dir.join("compare.json")).unwrap())
            .unwrap();
    let cells: Vec<(String, String, bool)> = json["cells"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["loss"].as_str().unwrap().to_owned(),
                c["miner"].as_str().unwrap().to_owned(),
                c["runs"][0]["metrics"].is_object(),
            )
        })
        .collect();
    let want = [
        ("proxy_anchor", "none"),
        ("margin", "none"),
        ("margin", "batch_hard"),
    ];
    assert_eq!(cells.len(), want.len(), "{cells:?}");
    for (cell, (loss, miner)) in cells.iter().zip(want) {
        assert_eq!(
            (cell.0.as_str(), cell.1.as_str(), cell.2),
            (loss, miner, true)
        );
    }
    // The proxy cell's run trained its proxies under a config without [miner].
    let cfg =
        std::fs::read_to_string(out_dir.join("proxy_anchor-none").join("config.toml")).unwrap();
    assert!(
        cfg.contains("proxy_anchor") && !cfg.contains("[miner]"),
        "{cfg}"
    );
    // --loss-lr reached every cell (the proxies' and the margin's β learning rate)...
    for cell in ["proxy_anchor-none", "margin-batch_hard"] {
        let cfg = std::fs::read_to_string(out_dir.join(cell).join("config.toml")).unwrap();
        assert!(cfg.contains("loss_lr = 0.025"), "{cell}: {cfg}");
    }
    // ...and a rate that cannot train is refused before anything trains.
    let out = dml(&[
        "compare",
        "--config",
        s(&config),
        "--losses",
        "proxy_anchor",
        "--miners",
        "none",
        "--loss-lr",
        "0",
        "--output-dir",
        s(&dir.path().join("refused")),
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("loss_lr"), "{err}");
    assert!(!dir.path().join("refused").exists());
}

/// A grid stopped in the middle of a run, then run again on the same folder, resumes that run
/// from its checkpoint and trains the rest, ending with the numbers of a grid that was never
/// stopped; run once more it trains nothing; a cell added later is the only one trained; a
/// grid of another length is refused.
#[test]
fn a_stopped_grid_run_again_resumes_and_skips_finished_runs() {
    use std::sync::Arc;
    use std::sync::atomic::AtomicBool;

    let dir = tempfile::tempdir().unwrap();
    let mut base = dml::Config::from_file(&base_config(dir.path())).unwrap();
    base.train.epochs = 1;
    base.batch.batches_per_epoch = Some(3);
    base.train.progress = false;
    let losses = ["margin".to_owned()];
    let miners = ["uniform".to_owned(), "batch_hard".to_owned()];
    let seeds = [3u64];
    let numbers = |r: &dml::compare::CompareReport| {
        r.cells
            .iter()
            .flat_map(|c| {
                c.runs
                    .iter()
                    .map(move |run| (c.miner.clone(), run.seed, run.metrics.clone()))
            })
            .map(|(m, s, metrics)| {
                let rounded: Vec<(dml::eval::Score, i64)> = metrics
                    .unwrap()
                    .scores()
                    .into_iter()
                    .map(|(k, v)| (k, (v * 1e12).round() as i64))
                    .collect();
                (m, s, rounded)
            })
            .collect::<Vec<_>>()
    };

    // What the grid reports, kept to check below.
    #[derive(Debug, Default, Clone)]
    struct Notes(std::sync::Arc<std::sync::Mutex<Vec<String>>>);
    impl dml::observe::Observer for Notes {
        fn note(&mut self, message: &str) {
            self.0.lock().unwrap().push(message.to_owned());
        }
    }
    let notes = Notes::default();
    let mut observer: Box<dyn dml::observe::Observer> = Box::new(notes.clone());
    let mut run =
        |base: &dml::Config, miners: &[String], out: &Path, stop: Option<Arc<AtomicBool>>| {
            dml::compare::run(base, &losses, miners, &seeds, out, stop, &mut observer)
        };
    let straight = dir.path().join("straight");
    let want = run(&base, &miners, &straight, None).unwrap();

    // Stopped after the first step of the first run: a checkpoint in its folder, no run in
    // the report yet.
    let grid = dir.path().join("grid");
    let stop = Arc::new(AtomicBool::new(true));
    let err = run(&base, &miners, &grid, Some(stop)).unwrap_err();
    assert!(err.to_string().contains("interrupted"), "{err}");
    assert!(grid.join("margin-uniform/checkpoint.safetensors").is_file());
    let got = run(&base, &miners, &grid, None).unwrap();
    assert_eq!(
        numbers(&got),
        numbers(&want),
        "the resumed grid ends where the straight one does"
    );
    assert_eq!(got.untrained, want.untrained);
    assert_eq!(got.raw_input, want.raw_input);

    // Nothing left to train: the same report, and no run folder touched.
    let stamp = |p: &Path| std::fs::metadata(p).unwrap().modified().unwrap();
    let ckpt = grid.join("margin-batch_hard/checkpoint.safetensors");
    let before = stamp(&ckpt);
    let again = run(&base, &miners, &grid, None).unwrap();
    assert_eq!(numbers(&again), numbers(&got));
    let said = notes.0.lock().unwrap().join("\n");
    assert!(
        said.contains("compare: 2 of the 2 runs are already in"),
        "{said}"
    );
    assert!(
        said.contains("resuming (from its checkpoint) margin loss with uniform miner"),
        "{said}"
    );
    assert_eq!(stamp(&ckpt), before, "a finished run is not trained again");

    // Each run leaves the negative distances its miner picked in its last epoch (the run that
    // was never stopped the same ones as in the straight grid), and the histogram of each
    // miner, drawn from those files, names the run it shows, also when no run trained.
    let negatives = |root: &Path, cell: &str| {
        let a: ndarray::Array1<f32> =
            ndarray_npy::read_npy(root.join(cell).join("negative_distances.npy")).unwrap();
        a.to_vec()
    };
    let hard = negatives(&grid, "margin-batch_hard");
    assert!(!hard.is_empty() && hard.iter().all(|d| (0.0..=2.0 + 1e-5).contains(d)));
    assert_eq!(hard, negatives(&straight, "margin-batch_hard"));
    assert!(!negatives(&grid, "margin-uniform").is_empty());
    std::fs::remove_file(grid.join("negative_distances.svg")).unwrap();
    run(&base, &miners, &grid, None).unwrap();
    let svg = std::fs::read_to_string(grid.join("negative_distances.svg")).unwrap();
    for label in [
        "uniform (margin loss, seed 3)",
        "batch_hard (margin loss, seed 3)",
    ] {
        assert!(svg.contains(label), "{label} missing from the histogram");
    }

    // A cell added to the grid is the only one that trains.
    let more = [
        "uniform".to_owned(),
        "batch_hard".to_owned(),
        "semi_hard".to_owned(),
    ];
    let grown = run(&base, &more, &grid, None).unwrap();
    assert_eq!(grown.cells.len(), 3);
    assert_eq!(numbers(&grown)[..2], numbers(&got)[..]);
    assert_eq!(stamp(&ckpt), before);

    // Another number of epochs is another grid.
    let mut longer = base.clone();
    longer.train.epochs = 2;
    let err = run(&longer, &miners, &grid, None).unwrap_err();
    assert!(err.to_string().contains("another --output-dir"), "{err}");
}
