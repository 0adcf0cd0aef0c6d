//! The `dml` binary, run as a process on small .npy files the tests write.

use std::path::Path;
use std::process::{Command, Output};

use ndarray::{Array1, Array2};

fn dml(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_dml"))
        .args(args)
        .output()
        .expect("the dml binary runs")
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Three tight clusters in 2-d plus one point of class 2 placed inside class 0's cluster.
fn fixture(dir: &Path) -> (Array2<f32>, Vec<u32>) {
    let mut rows = Vec::new();
    let mut labels = Vec::new();
    let centres = [(0.0f32, 0.0f32), (10.0, 0.0), (0.0, 10.0)];
    for (c, &(x, y)) in centres.iter().enumerate() {
        for i in 0..4 {
            rows.push([x + 0.1 * i as f32, y - 0.07 * i as f32]);
            labels.push(c as u32);
        }
    }
    rows.push([0.05, 0.02]);
    labels.push(2);
    let x = Array2::from_shape_vec((rows.len(), 2), rows.concat()).unwrap();
    ndarray_npy::write_npy(dir.join("e.npy"), &x).unwrap();
    let y = Array1::from_iter(labels.iter().map(|&l| i64::from(l)));
    ndarray_npy::write_npy(dir.join("l.npy"), &y).unwrap();
    (x, labels)
}

/// Recall@k by brute force, leaving each query out.
fn naive_recall(x: &Array2<f32>, labels: &[u32], k: usize) -> f64 {
    let n = x.nrows();
    let mut hits = 0;
    let mut counted = 0;
    for q in 0..n {
        if !(0..n).any(|j| j != q && labels[j] == labels[q]) {
            continue;
        }
        counted += 1;
        let mut d: Vec<(f32, usize)> = (0..n)
            .filter(|&j| j != q)
            .map(|j| {
                let dx = x[[q, 0]] - x[[j, 0]];
                let dy = x[[q, 1]] - x[[j, 1]];
                ((dx * dx + dy * dy).sqrt(), j)
            })
            .collect();
        d.sort_by(|a, b| a.partial_cmp(b).unwrap());
        if d.iter().take(k).any(|&(_, j)| labels[j] == labels[q]) {
            hits += 1;
        }
    }
    hits as f64 / counted as f64
}

#[test]
fn eval_json_has_the_documented_keys_and_naive_recall() {
    let dir = tempfile::tempdir().unwrap();
    let (x, labels) = fixture(dir.path());
    let out = dml(&[
        "eval",
        "--embeddings",
        s(&dir.path().join("e.npy")),
        "--labels",
        s(&dir.path().join("l.npy")),
        "--recall-at",
        "1,2",
        "--json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    for key in [
        "recall_at_1",
        "recall_at_2",
        "precision_at_1",
        "r_precision",
        "map_at_r",
        "nmi",
    ] {
        assert!(v.get(key).is_some(), "missing {key} in {v}");
    }
    let r1 = v["recall_at_1"].as_f64().unwrap();
    let r2 = v["recall_at_2"].as_f64().unwrap();
    assert!((r1 - naive_recall(&x, &labels, 1)).abs() < 1e-9, "{r1}");
    assert!((r2 - naive_recall(&x, &labels, 2)).abs() < 1e-9, "{r2}");
    // The search went as deep as the largest class less the query (or the largest K).
    let mut counts = std::collections::HashMap::new();
    for &l in &labels {
        *counts.entry(l).or_insert(0usize) += 1;
    }
    let max_r = counts.values().max().unwrap() - 1;
    assert_eq!(
        v["search_k"].as_u64().unwrap() as usize,
        max_r.max(2),
        "{v}"
    );
    assert!(v["search_seconds"].as_f64().unwrap() <= v["seconds"].as_f64().unwrap());
    // The table ends with a line on the search, and a newline.
    let table = dml(&[
        "eval",
        "--embeddings",
        s(&dir.path().join("e.npy")),
        "--labels",
        s(&dir.path().join("l.npy")),
    ]);
    let text = String::from_utf8_lossy(&table.stdout);
    assert!(text.ends_with('\n'), "{text:?}");
    assert!(
        text.contains(&format!(
            "13 queries searched to depth k = {}",
            max_r.clamp(8, 12)
        )),
        "{text}"
    );
    // By hand: the stray class-2 point at (0.05, 0.02) misses (its neighbour is class 0), and it
    // is the nearest neighbour of (0, 0) (distance 0.054 < 0.122) and of (0.1, −0.07)
    // (0.103 < 0.122): 3 misses of 13, Recall@1 = 10/13.
    assert!((r1 - 10.0 / 13.0).abs() < 1e-9);
}

#[test]
fn eval_with_separate_queries() {
    let dir = tempfile::tempdir().unwrap();
    fixture(dir.path());
    let q = Array2::from_shape_vec((2, 2), vec![10.0f32, 0.1, 0.0, 9.9]).unwrap();
    ndarray_npy::write_npy(dir.path().join("q.npy"), &q).unwrap();
    ndarray_npy::write_npy(dir.path().join("ql.npy"), &Array1::from(vec![1i64, 0])).unwrap();
    let out = dml(&[
        "eval",
        "--embeddings",
        s(&dir.path().join("e.npy")),
        "--labels",
        s(&dir.path().join("l.npy")),
        "--query",
        s(&dir.path().join("q.npy")),
        "--query-labels",
        s(&dir.path().join("ql.npy")),
        "--recall-at",
        "1",
        "--json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    // The first query lands in class 1's cluster (right), the second in class 2's (wrong).
    assert_eq!(v["recall_at_1"].as_f64().unwrap(), 0.5);
}

/// AUC by brute force over every pair of the fixture: P(d⁺ < d⁻) + ½ P(d⁺ = d⁻).
fn naive_auc(x: &Array2<f32>, labels: &[u32]) -> f64 {
    let n = x.nrows();
    let d = |i: usize, j: usize| {
        let dx = f64::from(x[[i, 0]] - x[[j, 0]]);
        let dy = f64::from(x[[i, 1]] - x[[j, 1]]);
        (dx * dx + dy * dy).sqrt()
    };
    let (mut pos, mut neg) = (Vec::new(), Vec::new());
    for i in 0..n {
        for j in i + 1..n {
            if labels[i] == labels[j] {
                pos.push(d(i, j));
            } else {
                neg.push(d(i, j));
            }
        }
    }
    let mut u = 0.0;
    for &p in &pos {
        for &q in &neg {
            u += if p < q {
                1.0
            } else if p == q {
                0.5
            } else {
                0.0
            };
        }
    }
    u / (pos.len() * neg.len()) as f64
}

#[test]
fn eval_verification_from_labels_pairs_files_and_lfw_text() {
    let dir = tempfile::tempdir().unwrap();
    let (x, labels) = fixture(dir.path());
    let e = dir.path().join("e.npy");
    let l = dir.path().join("l.npy");
    let stem = dir.path().join("plots/roc");
    // Every pair of the 13 items, with the retrieval scores in the same JSON.
    let out = dml(&[
        "eval",
        "--embeddings",
        s(&e),
        "--labels",
        s(&l),
        "--verification",
        "--all-pairs",
        "--folds",
        "3",
        "--ranking",
        "--oml-at",
        "1,3",
        "--per-class",
        "--roc-plot",
        s(&stem),
        "--json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    for key in [
        "map_at_r",
        "mean_average_precision",
        "mean_reciprocal_rank",
        "cmc_at_3",
        "oml_map_at_1",
        "per_class",
        "avg_of_avgs",
    ] {
        assert!(v.get(key).is_some(), "missing {key} in {v}");
    }
    let ver = &v["verification"];
    assert_eq!(ver["n_positive"], 22);
    assert_eq!(ver["n_negative"], 78 - 22);
    let auc = ver["auc"].as_f64().unwrap();
    assert!((auc - naive_auc(&x, &labels)).abs() < 1e-12, "{auc}");
    assert_eq!(ver["folds"].as_array().unwrap().len(), 3);
    assert_eq!(ver["tar_at_far"].as_array().unwrap().len(), 6);
    for ext in ["png", "svg"] {
        let f = stem.with_extension(ext);
        assert!(
            std::fs::metadata(&f).unwrap().len() > 1000,
            "{}",
            f.display()
        );
    }
    // The same pairs from a file of [i, j, same] rows give the same figures.
    let mut rows = Vec::new();
    for i in 0..13i64 {
        for j in i + 1..13 {
            rows.extend([i, j, i64::from(labels[i as usize] == labels[j as usize])]);
        }
    }
    let p = dir.path().join("pairs.npy");
    ndarray_npy::write_npy(&p, &Array2::from_shape_vec((78, 3), rows).unwrap()).unwrap();
    let table = dml(&[
        "eval",
        "--embeddings",
        s(&e),
        "--pairs",
        s(&p),
        "--folds",
        "3",
    ]);
    assert!(
        table.status.success(),
        "{}",
        String::from_utf8_lossy(&table.stderr)
    );
    let text = String::from_utf8_lossy(&table.stdout);
    assert!(
        text.contains(&format!("roc_auc           {auc:.6}")),
        "{text}"
    );
    assert!(
        text.contains("tar@far=1e-1") && text.contains("accuracy"),
        "{text}"
    );
    assert!(
        text.contains("e-roc.png"),
        "the default plot sits beside the embeddings: {text}"
    );
    // A pair naming a row beyond the embeddings is refused, naming the file and the row.
    let beyond = dir.path().join("pairs_beyond.npy");
    ndarray_npy::write_npy(&beyond, &ndarray::array![[0i64, 1, 1], [2, 13, 0]]).unwrap();
    let out = dml(&["eval", "--embeddings", s(&e), "--pairs", s(&beyond)]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("pairs_beyond.npy does not fit --embeddings")
            && err.contains("pair 1 names item 13, but the embeddings have 13 rows"),
        "{err}"
    );
    // LFW's layout, with a names file.
    let names: Vec<String> = (0..13)
        .map(|i| format!("C{}/C{}_{:04}.jpg", labels[i], labels[i], i + 1))
        .collect();
    let n = dir.path().join("names.txt");
    std::fs::write(&n, names.join("\n")).unwrap();
    let lfw = dir.path().join("pairs.txt");
    std::fs::write(
        &lfw,
        "2 1\nC0\t1\t2\nC0\t1\tC1\t5\nC1\t5\t6\nC2\t9\tC0\t3\n",
    )
    .unwrap();
    let out = dml(&[
        "eval",
        "--embeddings",
        s(&e),
        "--pairs",
        s(&lfw),
        "--names",
        s(&n),
        "--folds",
        "2",
        "--json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["verification"]["n_positive"], 2);
    assert_eq!(v["verification"]["auc"], 1.0);
    // Re-ranking reports the scores again, after.
    let out = dml(&[
        "eval",
        "--embeddings",
        s(&e),
        "--labels",
        s(&l),
        "--no-nmi",
        "--rerank",
        "k-reciprocal",
        "--rerank-k",
        "3",
        "--json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["reranked"]["rerank"]["k1"], 3);
    assert!(v["reranked"]["map_at_r"].is_number(), "{v}");
    // Without --names the error says what is missing.
    let out = dml(&["eval", "--embeddings", s(&e), "--pairs", s(&lfw)]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--names"));
}

#[test]
fn empty_embeddings_error_names_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let e = dir.path().join("empty.npy");
    let l = dir.path().join("empty_labels.npy");
    ndarray_npy::write_npy(&e, &Array2::<f32>::zeros((0, 4))).unwrap();
    ndarray_npy::write_npy(&l, &Array1::<i64>::zeros(0)).unwrap();
    let out = dml(&["eval", "--embeddings", s(&e), "--labels", s(&l)]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("empty.npy") && err.contains("no embeddings"),
        "{err}"
    );
}

#[test]
fn bad_file_error_names_the_file() {
    let dir = tempfile::tempdir().unwrap();
    fixture(dir.path());
    let bad = dir.path().join("broken.npy");
    std::fs::write(&bad, b"not an npy file").unwrap();
    let out = dml(&[
        "eval",
        "--embeddings",
        s(&bad),
        "--labels",
        s(&dir.path().join("l.npy")),
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("broken.npy"), "{err}");
    assert!(err.starts_with("error: "), "{err}");

    let missing = dir.path().join("missing.npy");
    let out = dml(&[
        "eval",
        "--embeddings",
        s(&missing),
        "--labels",
        s(&dir.path().join("l.npy")),
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("missing.npy"), "{err}");
    // The OS error appears once, not once per level of the error chain.
    let os_error = std::fs::read(&missing).unwrap_err().to_string();
    assert_eq!(err.matches(&os_error).count(), 1, "{err}");
}

#[test]
fn search_returns_the_nearest_items() {
    let dir = tempfile::tempdir().unwrap();
    fixture(dir.path());
    let q = Array2::from_shape_vec((1, 2), vec![10.0f32, 0.0]).unwrap();
    ndarray_npy::write_npy(dir.path().join("q.npy"), &q).unwrap();
    let out = dml(&[
        "search",
        "--embeddings",
        s(&dir.path().join("e.npy")),
        "--queries",
        s(&dir.path().join("q.npy")),
        "-k",
        "3",
        "--json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    // (10, 0) is item 4 itself, then items 5 and 6 of the same cluster (by hand).
    assert_eq!(v["indices"], serde_json::json!([[4, 5, 6]]));
    assert_eq!(v["scores"][0][0].as_f64().unwrap(), 0.0);

    let out = dml(&[
        "search",
        "--embeddings",
        s(&dir.path().join("e.npy")),
        "--queries",
        s(&dir.path().join("q.npy")),
        "-k",
        "100",
    ]);
    assert!(!out.status.success());
}

#[test]
fn train_rejects_unknown_config_keys() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("c.toml");
    std::fs::write(&cfg, "[data]\nkind = \"digits\"\n[batch]\nP = 4\n").unwrap();
    let out = dml(&["train", "--config", s(&cfg)]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("unknown field `P`"), "{err}");
    assert!(err.contains("c.toml"), "{err}");
}

#[test]
fn train_then_embed_writes_npy_files() {
    let dir = tempfile::tempdir().unwrap();
    let out_dir = dir.path().join("run");
    let out = dml(&[
        "train",
        "--epochs",
        "1",
        "--output-dir",
        s(&out_dir),
        "--json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["epochs"], 1);
    assert!(out_dir.join("metrics.jsonl").exists());
    assert!(out_dir.join("plots/curves.png").exists());
    assert!(out_dir.join("plots/embeddings.svg").exists());
    assert!(out_dir.join("plots/negative_distances.png").exists());

    let emb = dir.path().join("test.npy");
    let out = dml(&[
        "embed",
        "--checkpoint",
        s(&out_dir.join("checkpoint.safetensors")),
        "--out",
        s(&emb),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let x: Array2<f32> = ndarray_npy::read_npy(&emb).unwrap();
    let y: Array1<i64> = ndarray_npy::read_npy(dir.path().join("test.labels.npy")).unwrap();
    assert_eq!(x.nrows(), y.len());
    assert_eq!(x.ncols(), 32);
    assert!(
        y.iter().all(|&l| (5..10).contains(&l)),
        "held-out digits are 5–9"
    );
    // The saved embeddings evaluate to the run's final Recall@1 (same network, same data).
    let out = dml(&[
        "eval",
        "--embeddings",
        s(&emb),
        "--labels",
        s(&dir.path().join("test.labels.npy")),
        "--json",
    ]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let expected = report["final_metrics"]["recall_at_1"].as_f64().unwrap();
    assert!((v["recall_at_1"].as_f64().unwrap() - expected).abs() < 1e-12);

    // The network as TorchScript: LibTorch's loader (PyTorch's torch.jit.load wraps it) embeds
    // the held-out digits as `dml embed` did.
    let module = dir.path().join("model.pt");
    let out = dml(&[
        "export",
        "--checkpoint",
        s(&out_dir.join("checkpoint.safetensors")),
        "--to",
        s(&module),
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("[N, 1, 8, 8] -> [N, 32] embeddings, L2-normalised"),
        "{err}"
    );
    let split = dml::Config::digits().data.build().unwrap();
    let indices: Vec<usize> = (0..split.test.len()).collect();
    let (images, _) = dml::data::load_batch(split.test.as_ref(), &indices, None, 0).unwrap();
    let xs = dml::kernels::tensor::from_array(images.view()).unwrap();
    let got = tch::CModule::load(&module)
        .unwrap()
        .forward_ts(&[xs])
        .unwrap();
    let got = dml::kernels::tensor::to_array2(&got).unwrap();
    assert_eq!(got.dim(), x.dim());
    let worst = got
        .iter()
        .zip(x.iter())
        .fold(0.0f32, |m, (a, b)| m.max((a - b).abs()));
    assert!(worst <= 1e-6, "the exported module differs by {worst}");
}

/// SIGTERM (what Slurm and Kubernetes send before they kill a job) is handled as Ctrl-C: the run
/// checkpoints after its current step, says how to continue, and exits with 130; `--resume`
/// then ends exactly where a run that was never stopped ends.
#[test]
fn sigterm_checkpoints_and_resume_ends_where_an_uninterrupted_run_ends() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("c.toml");
    let text = include_str!("../../../configs/digits.toml")
        .replace("epochs = 20", "epochs = 60")
        .replace("eval_every = 5", "eval_every = 0")
        .replace("[train]", "[train]\nplots = false\nprogress = false");
    assert!(
        text.contains("epochs = 60") && text.contains("eval_every = 0"),
        "the digits config still reads as this test expects"
    );
    std::fs::write(&config, text).unwrap();
    let run = |name: &str, resume: bool| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_dml"));
        cmd.args(["train", "--config", s(&config), "--output-dir"])
            .arg(dir.path().join(name));
        if resume {
            cmd.arg("--resume");
        }
        cmd
    };

    let child = run("stopped", false)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until it has trained an epoch (its second log line), then send SIGTERM.
    let log = dir.path().join("stopped/metrics.jsonl");
    let start = std::time::Instant::now();
    while std::fs::read_to_string(&log).map_or(0, |t| t.lines().count()) < 2 {
        assert!(
            start.elapsed().as_secs() < 120,
            "the run never logged an epoch"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let signal = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(signal.success());
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(130), "{stderr}");
    assert!(
        stderr.contains("interrupted (Ctrl-C or SIGTERM)"),
        "{stderr}"
    );
    assert!(
        stdout.contains("continue with `dml train --resume`"),
        "{stdout}"
    );
    let saved = dml::checkpoint::load(&dir.path().join("stopped/checkpoint.safetensors")).unwrap();
    assert!(saved.state.epochs_done < 60, "stopped before the end");

    let resumed = run("stopped", true).output().unwrap();
    assert!(
        resumed.status.success(),
        "{}",
        String::from_utf8_lossy(&resumed.stderr)
    );
    let straight = run("straight", false).output().unwrap();
    assert!(straight.status.success());
    let a = dml::checkpoint::load(&dir.path().join("stopped/checkpoint.safetensors")).unwrap();
    let b = dml::checkpoint::load(&dir.path().join("straight/checkpoint.safetensors")).unwrap();
    assert_eq!(a.state.epochs_done, 60);
    assert_eq!(
        a.vars.keys().collect::<Vec<_>>(),
        b.vars.keys().collect::<Vec<_>>()
    );
    for (name, t) in &a.vars {
        assert!(
            t.equal(&b.vars[name]),
            "{name} differs from the uninterrupted run's"
        );
    }
}
