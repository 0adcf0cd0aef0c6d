//! Measurements the runner takes besides criterion's: dml against the Python reference,
//! alternating in one process pair, and peak memory of one run in a fresh child process.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::{Input, Reference, RunFn, Weight};

/// Writes the reference's input arrays as `.npy` files under `dir`; returns `name -> path`.
pub fn write_inputs(reference: &Reference, dir: &Path) -> Result<serde_json::Map<String, Value>> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut paths = serde_json::Map::new();
    for (name, input) in &reference.inputs {
        let path = dir.join(format!("{name}.npy"));
        match input {
            Input::F32(a) => ndarray_npy::write_npy(&path, a),
            Input::I64(a) => ndarray_npy::write_npy(&path, a),
        }
        .with_context(|| format!("writing {}", path.display()))?;
        paths.insert(
            (*name).to_owned(),
            Value::String(path.display().to_string()),
        );
    }
    Ok(paths)
}

/// The `setup` request (and `peak --spec` file) for a reference; `warmup`: whether the worker
/// runs the operation once right after setting it up.
pub fn setup_request(
    reference: &Reference,
    inputs: serde_json::Map<String, Value>,
    warmup: bool,
) -> Value {
    json!({
        "cmd": "setup",
        "op": reference.op,
        "params": reference.params,
        "inputs": inputs,
        "warmup": warmup,
    })
}

/// Environment for the reference process: the same thread count on every pool it may use.
///
/// `OPENBLAS_CORETYPE` and `OPENBLAS_L2_SIZE` are removed for this process alone: some machines
/// set them to work around old OpenBLAS builds, and they slow a current numpy down; the kernel
/// numpy then runs is recorded (threadpoolctl) in the report.
pub fn python_command(python: &Path, script: &Path, threads: usize) -> Command {
    let mut cmd = Command::new(python);
    cmd.arg(script).arg("--threads").arg(threads.to_string());
    for var in ["OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"] {
        cmd.env(var, threads.to_string());
    }
    cmd.env_remove("OPENBLAS_CORETYPE")
        .env_remove("OPENBLAS_L2_SIZE");
    cmd
}

/// A long-lived `reference.py serve` process.
#[derive(Debug)]
pub struct Worker {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl Worker {
    /// Starts `python script serve` with `threads` threads.
    pub fn start(python: &Path, script: &Path, threads: usize) -> Result<Self> {
        let mut cmd = python_command(python, script, threads);
        // `serve` goes after the script: argparse takes the mode positionally.
        let mut child = cmd
            .arg("serve")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| format!("starting {} {}", python.display(), script.display()))?;
        let stdin = child.stdin.take().context("worker stdin")?;
        let stdout = BufReader::new(child.stdout.take().context("worker stdout")?);
        Ok(Self {
            child,
            stdin,
            stdout,
        })
    }

    /// Sends one request and returns its reply; a reply with `error` becomes an error.
    pub fn request(&mut self, request: &Value) -> Result<Value> {
        writeln!(self.stdin, "{request}").context("writing to the reference worker")?;
        self.stdin.flush()?;
        let mut line = String::new();
        if self.stdout.read_line(&mut line)? == 0 {
            bail!("the reference worker exited (see its stderr above)");
        }
        let reply: Value = serde_json::from_str(&line)
            .with_context(|| format!("reply of the reference worker: {line:?}"))?;
        if let Some(err) = reply.get("error") {
            bail!("reference: {}", err.as_str().unwrap_or_default());
        }
        Ok(reply)
    }

    /// Seconds per run over `reps` runs.
    pub fn time(&mut self, reps: usize) -> Result<f64> {
        let reply = self.request(&json!({"cmd": "run", "reps": reps}))?;
        let secs = reply["secs"].as_f64().context("`secs` in the reply")?;
        Ok(secs / reps as f64)
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = writeln!(self.stdin, "{}", json!({"cmd": "quit"}));
        let _ = self.stdin.flush();
        let _ = self.child.wait();
    }
}

/// One dml/reference comparison: per-run seconds of each side, round by round.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Comparison {
    /// Seconds per run of dml, one value per round.
    pub dml: Vec<f64>,
    /// Seconds per run of the reference, one value per round.
    pub reference: Vec<f64>,
    /// Runs per round (dml, reference).
    pub reps: (usize, usize),
}

impl Comparison {
    /// Median seconds per run of dml.
    pub fn dml_median(&self) -> f64 {
        median(&self.dml)
    }

    /// Median seconds per run of the reference.
    pub fn reference_median(&self) -> f64 {
        median(&self.reference)
    }

    /// The ratio dml / reference of each round: both sides measured back to back, so a slow
    /// moment of the machine affects both.
    pub fn ratios(&self) -> Vec<f64> {
        self.dml
            .iter()
            .zip(&self.reference)
            .map(|(d, r)| d / r)
            .collect()
    }
}

/// Median of `xs` (mean of the two middle values for an even count); NaN when empty.
pub fn median(xs: &[f64]) -> f64 {
    quantile(xs, 0.5)
}

/// The `q`-quantile of `xs` with linear interpolation; NaN when empty.
pub fn quantile(xs: &[f64], q: f64) -> f64 {
    if xs.is_empty() {
        return f64::NAN;
    }
    let mut v = xs.to_vec();
    v.sort_by(f64::total_cmp);
    let pos = q.clamp(0.0, 1.0) * (v.len() - 1) as f64;
    let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
    v[lo] + (v[hi] - v[lo]) * (pos - lo as f64)
}

/// Seconds per run over `reps` runs of `run`.
pub fn time_dml(run: &mut RunFn, reps: usize) -> Result<f64> {
    let start = Instant::now();
    for _ in 0..reps {
        run()?;
    }
    Ok(start.elapsed().as_secs_f64() / reps as f64)
}

/// The pause before each side's batch of runs.
///
/// Thread pools do not go to sleep the moment their work ends: OpenMP (libtorch, faiss) and
/// OpenBLAS threads spin for a while, waiting for more. Two processes taking turns on the same
/// cores would each pay for the other's spinning threads, which on a small machine costs more
/// than the measured operation itself; a pause lets the other side's pools go idle first.
pub const SETTLE: std::time::Duration = std::time::Duration::from_millis(200);

/// Times `run` and the worker's set-up operation alternately.
///
/// One warm-up run each (the worker's set-up already ran it once), then rounds of `reps` runs
/// per side, calibrated so a round takes about `round_secs` a side; the side that goes first
/// swaps every round, so a drift of the machine's speed does not favour one side, and each
/// side's batch starts after a [`SETTLE`] pause. A [`Weight::Huge`] case gets three single-run
/// rounds, after one untimed dml run when `warm_up` (the worker's set-up then ran its own).
pub fn compare(
    run: &mut RunFn,
    worker: &mut Worker,
    weight: Weight,
    warm_up: bool,
    round_secs: f64,
    max_rounds: usize,
) -> Result<Comparison> {
    if weight == Weight::Huge {
        // Runs of tens of seconds: no calibration run, three single-run rounds.
        if warm_up {
            time_dml(run, 1)?;
        }
        let mut out = Comparison {
            dml: Vec::new(),
            reference: Vec::new(),
            reps: (1, 1),
        };
        for round in 0..3 {
            if round % 2 == 0 {
                out.dml.push(time_dml(run, 1)?);
                out.reference.push(worker.time(1)?);
            } else {
                out.reference.push(worker.time(1)?);
                out.dml.push(time_dml(run, 1)?);
            }
        }
        return Ok(out);
    }
    std::thread::sleep(SETTLE);
    let t_dml = time_dml(run, 1)?;
    std::thread::sleep(SETTLE);
    let t_ref = worker.time(1)?;
    let reps_for = |t: f64| ((round_secs / t.max(1e-9)).ceil() as usize).clamp(1, 100_000);
    let (reps_dml, reps_ref) = (reps_for(t_dml), reps_for(t_ref));
    let per_round = t_dml * reps_dml as f64 + t_ref * reps_ref as f64;
    let rounds = match weight {
        // Runs of several seconds: a handful of rounds says enough and keeps the run short.
        Weight::Heavy | Weight::Huge if per_round > 20.0 => 3,
        Weight::Heavy | Weight::Huge => 5,
        Weight::Light => max_rounds,
    };
    let mut out = Comparison {
        dml: Vec::with_capacity(rounds),
        reference: Vec::with_capacity(rounds),
        reps: (reps_dml, reps_ref),
    };
    let mut dml_side = |out: &mut Comparison| -> Result<()> {
        std::thread::sleep(SETTLE);
        out.dml.push(time_dml(run, reps_dml)?);
        Ok(())
    };
    let ref_side = |out: &mut Comparison, worker: &mut Worker| -> Result<()> {
        std::thread::sleep(SETTLE);
        out.reference.push(worker.time(reps_ref)?);
        Ok(())
    };
    for round in 0..rounds {
        if round % 2 == 0 {
            dml_side(&mut out)?;
            ref_side(&mut out, worker)?;
        } else {
            ref_side(&mut out, worker)?;
            dml_side(&mut out)?;
        }
    }
    Ok(out)
}

/// Peak resident memory of one run, from a fresh process.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct PeakMemory {
    /// Resident set size just before the run (inputs built, libraries loaded), KiB.
    pub rss_before_kib: u64,
    /// Peak resident set size, KiB: since the reset just before the run when `reset`, else the
    /// process's whole life.
    pub hwm_kib: u64,
    /// Whether the peak was reset before the run (`/proc/self/clear_refs`).
    pub reset: bool,
    /// Wall time of the run, s (absent in reports written before it was recorded).
    #[serde(default)]
    pub seconds: Option<f64>,
}

impl PeakMemory {
    /// What the run added on top of what the process held before it, KiB.
    pub fn increase_kib(&self) -> u64 {
        self.hwm_kib.saturating_sub(self.rss_before_kib)
    }
}

/// A field of `/proc/self/status` in KiB (`VmRSS`, `VmHWM`).
pub fn status_kib(field: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status.lines().find_map(|line| {
        let rest = line.strip_prefix(field)?.strip_prefix(':')?;
        rest.split_whitespace().next()?.parse().ok()
    })
}

/// Resets this process's peak RSS to its current RSS (Linux ≥ 4.0); false where unsupported.
pub fn reset_peak() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

/// Measures one run of `run` in this process (call it in a fresh child process).
pub fn peak_of(run: &mut RunFn) -> Result<PeakMemory> {
    let reset = reset_peak();
    let before = status_kib("VmRSS").context("VmRSS in /proc/self/status")?;
    let started = std::time::Instant::now();
    run()?;
    let seconds = started.elapsed().as_secs_f64();
    let hwm = status_kib("VmHWM").context("VmHWM in /proc/self/status")?;
    Ok(PeakMemory {
        rss_before_kib: before,
        hwm_kib: hwm,
        reset,
        seconds: Some(seconds),
    })
}

/// Runs `cmd` (a child that prints one [`PeakMemory`] JSON line last) and parses its output.
pub fn peak_from_child(mut cmd: Command) -> Result<PeakMemory> {
    let out = cmd
        .stderr(Stdio::inherit())
        .output()
        .context("starting the peak-memory child")?;
    if !out.status.success() {
        bail!("peak-memory child failed with {}", out.status);
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().rev().find(|l| l.trim_start().starts_with('{'));
    let line = line.with_context(|| format!("no JSON in the child's output: {text:?}"))?;
    Ok(serde_json::from_str(line)?)
}

/// Where the inputs of a case go: `dir/<id with / as __>`.
pub fn inputs_dir(dir: &Path, id: &str) -> PathBuf {
    dir.join(id.replace('/', "__"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_interpolate() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
        assert_eq!(quantile(&[1.0, 2.0, 3.0, 4.0, 5.0], 0.25), 2.0);
        assert!(median(&[]).is_nan());
    }

    #[test]
    fn status_fields_parse() {
        assert!(status_kib("VmRSS").is_some_and(|kib| kib > 0));
        assert!(status_kib("NoSuchField").is_none());
    }
}
