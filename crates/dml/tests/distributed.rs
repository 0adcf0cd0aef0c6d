//! Data-parallel training through `dml launch`, on loopback: two processes give the parameters
//! one process gives on the whole batch, and a killed rank stops the other with its name.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use tch::Tensor;

const DML: &str = env!("CARGO_BIN_EXE_dml");
/// `dml launch --nproc 2 -- train`, followed by the train arguments.
const LAUNCH_2: [&str; 5] = ["launch", "--nproc", "2", "--", "train"];

/// The MLP on the digits (5 training classes), P = 4 × K = 4, 2 epochs × 10 batches = 20 steps,
/// no miner (every pair or triplet: nothing discrete that a rounding difference could flip).
fn config(dir: &Path, loss: &str, epochs: u64, seed: u64) -> PathBuf {
    let text = format!(
        "[run]\nseed = {seed}\nthreads = 1\ndevice = \"cpu\"\noutput_dir = {out:?}\n\
         [data]\nkind = \"digits\"\n\
         [model]\nkind = \"mlp\"\nhidden = [32]\nembedding_dim = 16\n\
         [batch]\np = 4\nk = 4\nbatches_per_epoch = 10\n\
         {loss}\n\
         [optimizer]\nkind = \"adam\"\nlr = 1e-3\nloss_lr = 1e-2\n\
         [train]\nepochs = {epochs}\neval_before = false\neval_every = 0\nplots = false\n\
         progress = false\ncheckpoint_every = 1\n\
         [eval]\nraw_input = false\nnmi = false\nr_metrics = false\nrecall_at = [1]\n",
        out = dir.join("run").to_str().unwrap(),
    );
    let path = dir.join("config.toml");
    std::fs::write(&path, text).unwrap();
    path
}

fn run(args: &[&str]) -> String {
    let out = Command::new(DML).args(args).output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "dml {args:?} failed:\n{text}");
    text
}

/// Every tensor of the checkpoint (weights, loss parameters, optimiser state), by name.
fn tensors(dir: &Path) -> Vec<(String, Tensor)> {
    let (map, _) = dml::models::read_tensors(&dir.join("run/checkpoint.safetensors")).unwrap();
    map.into_iter()
        .filter(|(_, t)| t.is_floating_point())
        .collect()
}

fn relative_difference(a: &Tensor, b: &Tensor) -> f64 {
    let diff = (a - b).norm().double_value(&[]);
    diff / b.norm().double_value(&[]).max(1e-12)
}

/// Trains `loss` once in one process and once as two, and returns the largest relative
/// difference over the checkpoints' tensors, and the same against a run with another seed.
fn one_vs_two(loss: &str) -> (f64, f64, Vec<(String, Tensor)>) {
    let (one, two, other) = (
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
    );
    let c1 = config(one.path(), loss, 2, 0);
    let c2 = config(two.path(), loss, 2, 0);
    let c3 = config(other.path(), loss, 2, 1);
    run(&["train", "--config", c1.to_str().unwrap()]);
    let launched = run(&[
        &LAUNCH_2[..],
        &[
            "--collective-timeout",
            "60",
            "--config",
            c2.to_str().unwrap(),
        ],
    ]
    .concat());
    assert!(launched.contains("[rank 1] trained 2 epochs"), "{launched}");
    run(&["train", "--config", c3.to_str().unwrap()]);
    let (a, b, c) = (
        tensors(one.path()),
        tensors(two.path()),
        tensors(other.path()),
    );
    assert_eq!(a.len(), b.len());
    let mut same = 0f64;
    let mut seeds = 0f64;
    for (((na, ta), (nb, tb)), (_, tc)) in a.iter().zip(&b).zip(&c) {
        assert_eq!(na, nb);
        same = same.max(relative_difference(tb, ta));
        seeds = seeds.max(relative_difference(tc, ta));
    }
    println!("{loss}: one vs two processes {same:e}, another seed {seeds:e}");
    (same, seeds, b)
}

#[test]
fn two_processes_train_the_same_parameters_as_one() {
    let (same, seeds, _) = one_vs_two("[loss]\nkind = \"contrastive\"");
    assert!(same < 1e-5, "one vs two processes differ by {same:e}");
    // The comparison can tell runs apart: another seed differs by far more.
    assert!(seeds > 1e-2, "another seed differs by only {seeds:e}");
}

#[test]
fn two_processes_learn_the_same_margin_beta_as_one() {
    let (same, seeds, tensors) =
        one_vs_two("[loss]\nkind = \"margin\"\nbeta = 1.2\nlearn_beta = true");
    assert!(same < 1e-5, "one vs two processes differ by {same:e}");
    assert!(seeds > 1e-2, "another seed differs by only {seeds:e}");
    // β moved, so its gradient (averaged, not summed, over the ranks) was tested.
    let beta = tensors
        .iter()
        .find(|(n, _)| n.contains("beta") && !n.contains("optim"))
        .map(|(_, t)| t.double_value(&[0]))
        .expect("a beta tensor in the checkpoint");
    assert!((beta - 1.2).abs() > 1e-3, "beta stayed at {beta}");
}

#[test]
fn a_killed_rank_stops_the_other_naming_it_and_the_checkpoint_survives() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), "[loss]\nkind = \"contrastive\"", 100_000, 0);
    let mut launcher = Command::new(DML)
        .args(LAUNCH_2)
        .args(["--collective-timeout", "30"])
        .args(["--config", cfg.to_str().unwrap()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, rx) = mpsc::channel::<String>();
    let err = launcher.stderr.take().unwrap();
    let out = launcher.stdout.take().unwrap();
    let tx2 = tx.clone();
    let t1 = std::thread::spawn(move || {
        for line in BufReader::new(err).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let t2 = std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            let _ = tx2.send(line);
        }
    });
    let mut lines = Vec::new();
    let ckpt = dir.path().join("run/checkpoint.safetensors");
    let start = Instant::now();
    let mut pid: Option<String> = None;
    // Wait for rank 1's pid and the first checkpoint, then kill rank 1.
    while start.elapsed() < Duration::from_secs(60) {
        while let Ok(line) = rx.try_recv() {
            if let Some(p) = line.strip_prefix("dml launch: rank 1 is pid ") {
                pid = Some(p.trim().to_owned());
            }
            lines.push(line);
        }
        if pid.is_some() && ckpt.exists() {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let pid = pid.unwrap_or_else(|| panic!("no pid line:\n{}", lines.join("\n")));
    assert!(ckpt.exists(), "no checkpoint:\n{}", lines.join("\n"));
    let killed_at = Instant::now();
    assert!(
        Command::new("kill")
            .args(["-9", &pid])
            .status()
            .unwrap()
            .success()
    );
    let status = loop {
        if let Some(s) = launcher.try_wait().unwrap() {
            break s;
        }
        if killed_at.elapsed() > Duration::from_secs(40) {
            let _ = launcher.kill();
            panic!("the launch did not end after the kill");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    t1.join().unwrap();
    t2.join().unwrap();
    lines.extend(rx.try_iter());
    let text = lines.join("\n");
    assert!(!status.success(), "{text}");
    assert!(
        text.contains("dml launch: rank 1 ended with signal 9"),
        "{text}"
    );
    assert!(text.contains("[rank 0] error:"), "{text}");
    assert!(text.contains("failed on rank 0 of 2"), "{text}");
    assert!(text.contains("rank 1 stopped"), "{text}");
    // Well within the collective timeout: a closed connection is noticed at once.
    assert!(killed_at.elapsed() < Duration::from_secs(20), "{text}");
    // The last checkpoint is whole.
    assert!(!tensors(dir.path()).is_empty());
}

#[test]
fn a_resumed_two_process_run_ends_where_an_uninterrupted_one_does() {
    let (whole, split) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let loss = "[loss]\nkind = \"margin\"\nbeta = 1.2\nlearn_beta = true";
    let cw = config(whole.path(), loss, 4, 0);
    let cs = config(split.path(), loss, 4, 0);
    let launch = |cfg: &Path, extra: &[&str]| {
        let mut args = LAUNCH_2.to_vec();
        args.push("--config");
        args.push(cfg.to_str().unwrap());
        args.extend_from_slice(extra);
        run(&args)
    };
    launch(&cw, &[]);
    // Two epochs, then every rank resumes from rank 0's checkpoint for the other two.
    launch(&cs, &["--epochs", "2"]);
    launch(&cs, &["--resume"]);
    let (a, b) = (tensors(whole.path()), tensors(split.path()));
    assert_eq!(a.len(), b.len());
    for ((na, ta), (nb, tb)) in a.iter().zip(&b) {
        assert_eq!(na, nb);
        assert!(ta.equal(tb), "{na} differs after resuming");
    }
}

#[test]
fn launcher_mistakes_are_named() {
    let out = Command::new(DML)
        .args([
            "launch",
            "--nproc",
            "2",
            "--",
            "eval",
            "--embeddings",
            "e.npy",
        ])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("dml launch runs `train`"), "{err}");
    // A launcher that sets RANK and WORLD_SIZE but not where to meet.
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), "[loss]\nkind = \"contrastive\"", 1, 0);
    let out = Command::new(DML)
        .args(["train", "--config", cfg.to_str().unwrap()])
        .env("RANK", "0")
        .env("WORLD_SIZE", "2")
        .env_remove("MASTER_ADDR")
        .env_remove("MASTER_PORT")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("environment variable MASTER_ADDR: not set, but RANK or WORLD_SIZE is"),
        "{err}"
    );
}

/// SIGTERM sent to the launcher alone (as Kubernetes stops a container through its first
/// process) reaches every rank: they stop after the same step, rank 0 checkpoints, the launch
/// exits with 130 and says how to continue, and `--resume` ends where a run that was never
/// stopped ends.
#[test]
fn sigterm_to_the_launcher_stops_every_rank_at_one_step_and_the_run_resumes_exactly() {
    let (whole, stopped) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let loss = "[loss]\nkind = \"contrastive\"";
    let epochs = 40;
    let cw = config(whole.path(), loss, epochs, 0);
    let cs = config(stopped.path(), loss, epochs, 0);
    let launcher = Command::new(DML)
        .args(LAUNCH_2)
        .args([
            "--collective-timeout",
            "60",
            "--config",
            cs.to_str().unwrap(),
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // After the first checkpoint (epoch 1), stop the launcher.
    let ckpt = stopped.path().join("run/checkpoint.safetensors");
    let start = Instant::now();
    while !ckpt.exists() {
        assert!(start.elapsed() < Duration::from_secs(120), "no checkpoint");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        Command::new("kill")
            .args(["-TERM", &launcher.id().to_string()])
            .status()
            .unwrap()
            .success()
    );
    let output = launcher.wait_with_output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(output.status.code(), Some(130), "{text}");
    assert!(
        text.contains("every rank stopped after the same step"),
        "{text}"
    );
    let saved = dml::checkpoint::load(&ckpt).unwrap();
    assert!(
        saved.state.epochs_done < epochs,
        "stopped before the end:\n{text}"
    );

    let launch = |cfg: &Path, extra: &[&str]| {
        let mut args = LAUNCH_2.to_vec();
        args.push("--config");
        args.push(cfg.to_str().unwrap());
        args.extend_from_slice(extra);
        run(&args)
    };
    launch(&cs, &["--resume"]);
    launch(&cw, &[]);
    let (a, b) = (tensors(whole.path()), tensors(stopped.path()));
    assert_eq!(a.len(), b.len());
    for ((na, ta), (nb, tb)) in a.iter().zip(&b) {
        assert_eq!(na, nb);
        assert!(ta.equal(tb), "{na} differs after the stop and resume");
    }
}
