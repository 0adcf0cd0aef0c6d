//! All-reduce and all-gather bandwidth between two local processes: dml-distributed (c10d's
//! `ProcessGroupGloo` through dml's shim) beside the same calls through `torch.distributed` with
//! the Gloo backend (`benches/python/collectives.py`), in one run.
//!
//! ```sh
//! # one dml run: starts itself twice (ranks 0 and 1) and prints rank 0's JSON lines
//! cargo run --profile bench -p dml-benches --example collectives -- [--reps SCALE] [--sizes 1,16,128]
//! # the comparison: dml, torch, dml, torch, ... for --rounds rounds, then a markdown table
//! cargo xtask bench --collectives
//! cargo run --profile bench -p dml-benches --example collectives -- --compare .venv-ref/bin/python \
//!     [--rounds 3] [--out target/dml-bench/collectives.md]
//! ```
//!
//! Each rank runs one LibTorch thread (`tch::set_num_threads(1)`; Gloo keeps its own two
//! threads, as in Python), meets the other on 127.0.0.1 and, for each size (MiB of f32 per
//! rank), warms up with 2 calls, waits at a barrier, then times `reps` calls one by one
//! (20, 10 and 4 at 1, 16 and 128 MiB, times `--reps`):
//! - `all_reduce`: `ProcessGroup::all_reduce(&mut [t], ReduceOp::Sum)` on one tensor of that size;
//! - `all_gather`: `ProcessGroup::all_gather(&t)`, `t` of that size on each rank, so the result
//!   is twice as large. dml's all-gather first gathers a small shape header (ranks may pass
//!   different row counts) and returns freshly allocated tensors; torch's gathers equal sizes
//!   into a preallocated list, with no header round.
//!
//! Output: one JSON object per line on stdout. The first has `"kind": "meta"`, the others
//! `"kind": "result"` with `impl`, `op`, `mib`, `bytes` (per rank), `reps`, `median_s`,
//! `mean_s`, `min_s`, `times_s` and `gbps` = bytes per rank / median seconds per call / 1e9
//! ("bus bandwidth" as defined here: the per-rank payload over the time of one call, not
//! nccl-tests' algorithm-corrected figure).

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use dml_distributed::{InitOptions, ProcessGroup, ReduceOp, Rendezvous};
use serde::Deserialize;
use serde_json::json;
use tch::{Device, Kind, Tensor};

/// Set by the launcher in each rank's environment.
const RANK_VAR: &str = "DML_COLLECTIVES_RANK";
const PORT_VAR: &str = "DML_COLLECTIVES_PORT";
const WORLD: usize = 2;
const WARM_UP: usize = 2;
/// Sizes in MiB of f32 per rank, and timed calls at each (before `--reps` scaling).
const DEFAULT_SIZES: [(usize, usize); 3] = [(1, 20), (16, 10), (128, 4)];
/// How long a whole launch (both ranks, every size) may take before it is killed.
const LAUNCH_LIMIT: Duration = Duration::from_secs(300);
const BANDWIDTH_DEFINITION: &str =
    "GB/s = bytes per rank (the tensor each rank passes) / median seconds per call / 1e9";

#[derive(Debug, Clone)]
struct Options {
    reps_scale: f64,
    sizes: Vec<usize>,
    compare: Option<PathBuf>,
    rounds: usize,
    out: Option<PathBuf>,
}

fn parse_args() -> Result<Options> {
    let mut opts = Options {
        reps_scale: 1.0,
        sizes: DEFAULT_SIZES.iter().map(|&(mib, _)| mib).collect(),
        compare: None,
        rounds: 3,
        out: None,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().with_context(|| format!("{arg} needs a value"));
        match arg.as_str() {
            "--reps" => opts.reps_scale = value()?.parse().context("--reps: a number")?,
            "--sizes" => {
                opts.sizes = value()?
                    .split(',')
                    .map(|s| s.trim().parse::<usize>())
                    .collect::<Result<_, _>>()
                    .context("--sizes: comma-separated MiB")?
            }
            "--compare" => opts.compare = Some(value()?.into()),
            "--rounds" => opts.rounds = value()?.parse().context("--rounds: a count")?,
            "--out" => opts.out = Some(value()?.into()),
            "-h" | "--help" => {
                eprintln!(
                    "collectives [--reps SCALE] [--sizes 1,16,128] \
                     [--compare PYTHON [--rounds N] [--out FILE.md]]"
                );
                std::process::exit(0);
            }
            other => bail!("unknown argument {other:?} (see --help)"),
        }
    }
    if opts.reps_scale <= 0.0
        || opts.sizes.is_empty()
        || opts.sizes.contains(&0)
        || opts.rounds == 0
    {
        bail!("--reps, --sizes and --rounds must be positive");
    }
    Ok(opts)
}

/// Timed calls at `mib`: the default count for the default sizes (20 below 16 MiB, 10 below
/// 128, else 4), times the scale, at least 1.
fn reps_for(mib: usize, scale: f64) -> usize {
    let base = DEFAULT_SIZES
        .iter()
        .rev()
        .find(|&&(m, _)| mib >= m)
        .map_or(DEFAULT_SIZES[0].1, |&(_, r)| r);
    ((base as f64 * scale).round() as usize).max(1)
}

fn main() -> Result<()> {
    let opts = parse_args()?;
    if let Ok(rank) = std::env::var(RANK_VAR) {
        let port: u16 = std::env::var(PORT_VAR)
            .with_context(|| format!("{PORT_VAR} is not set"))?
            .parse()?;
        return worker(rank.parse()?, port, &opts);
    }
    if let Some(python) = &opts.compare {
        return compare(python, &opts);
    }
    for line in launch_dml(&opts)? {
        println!("{line}");
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// One rank.

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let n = s.len();
    if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    }
}

fn result_line(op: &str, mib: usize, bytes: usize, times: &[f64]) -> String {
    let med = median(times);
    json!({
        "kind": "result",
        "impl": "dml",
        "op": op,
        "mib": mib,
        "bytes": bytes,
        "reps": times.len(),
        "median_s": med,
        "mean_s": times.iter().sum::<f64>() / times.len() as f64,
        "min_s": times.iter().copied().fold(f64::INFINITY, f64::min),
        "times_s": times,
        "gbps": bytes as f64 / med / 1e9,
    })
    .to_string()
}

/// Times `reps` calls of `call`, one by one, after the warm-up and a barrier.
fn timed(pg: &ProcessGroup, reps: usize, mut call: impl FnMut() -> Result<()>) -> Result<Vec<f64>> {
    for _ in 0..WARM_UP {
        call()?;
    }
    pg.barrier()?;
    (0..reps)
        .map(|_| {
            let start = Instant::now();
            call()?;
            Ok(start.elapsed().as_secs_f64())
        })
        .collect()
}

fn worker(rank: usize, port: u16, opts: &Options) -> Result<()> {
    tch::set_num_threads(1);
    let init = InitOptions::new(Rendezvous::tcp("127.0.0.1", port), rank, WORLD)
        .timeout(Duration::from_secs(120));
    let pg = ProcessGroup::init(&init)?;
    if rank == 0 {
        println!(
            "{}",
            json!({
                "kind": "meta",
                "impl": "dml",
                "world_size": WORLD,
                "torch_threads": tch::get_num_threads(),
                "bandwidth": BANDWIDTH_DEFINITION,
                "all_gather": "dml-distributed ProcessGroup::all_gather: a 64-byte shape \
                               header all-gather, then the data all-gather into new tensors",
            })
        );
    }
    let value = rank as f64 + 1.0;
    for &mib in &opts.sizes {
        let bytes = mib << 20;
        let numel = (bytes / 4) as i64;
        let reps = reps_for(mib, opts.reps_scale);

        let t = Tensor::full([numel], value, (Kind::Float, Device::Cpu));
        // One checked call first: 1 + 2 on both ranks.
        let mut ts = [t];
        pg.all_reduce(&mut ts, ReduceOp::Sum)?;
        let got = ts[0].double_value(&[numel - 1]);
        if got != 3.0 {
            bail!("all_reduce at {mib} MiB: got {got}, expected 3");
        }
        let times = timed(&pg, reps, || {
            pg.all_reduce(&mut ts, ReduceOp::Sum)?;
            Ok(())
        })?;
        if rank == 0 {
            println!("{}", result_line("all_reduce", mib, bytes, &times));
        }
        drop(ts);

        let t = Tensor::full([numel], value, (Kind::Float, Device::Cpu));
        let parts = pg.all_gather(&t)?;
        let got: Vec<f64> = parts.iter().map(|p| p.double_value(&[numel - 1])).collect();
        if got != [1.0, 2.0] {
            bail!("all_gather at {mib} MiB: got {got:?}, expected [1, 2]");
        }
        drop(parts);
        let times = timed(&pg, reps, || {
            let parts = pg.all_gather(&t)?;
            debug_assert_eq!(parts.len(), WORLD);
            Ok(())
        })?;
        if rank == 0 {
            println!("{}", result_line("all_gather", mib, bytes, &times));
        }
    }
    pg.barrier()?;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Launching two ranks.

/// Waits for both ranks (killing them after `LAUNCH_LIMIT`) and returns rank 0's stdout lines
/// that hold JSON objects; fails with both ranks' stderr if either fails.
fn wait_pair(what: &str, mut children: Vec<Child>) -> Result<Vec<String>> {
    let start = Instant::now();
    // Read stdout on threads so a full pipe never blocks a rank.
    let readers: Vec<_> = children
        .iter_mut()
        .map(|c| {
            let mut out = c.stdout.take().expect("piped stdout");
            let mut err = c.stderr.take().expect("piped stderr");
            std::thread::spawn(move || {
                let (mut o, mut e) = (String::new(), String::new());
                let _ = out.read_to_string(&mut o);
                let _ = err.read_to_string(&mut e);
                (o, e)
            })
        })
        .collect();
    let mut statuses = vec![None; children.len()];
    while statuses.iter().any(Option::is_none) {
        for (c, s) in children.iter_mut().zip(statuses.iter_mut()) {
            if s.is_none() {
                *s = c.try_wait()?;
            }
        }
        if start.elapsed() > LAUNCH_LIMIT {
            for c in &mut children {
                let _ = c.kill();
            }
            bail!("{what}: ranks still running after {LAUNCH_LIMIT:?}, killed");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let outputs: Vec<(String, String)> = readers
        .into_iter()
        .map(|r| r.join().expect("reader thread"))
        .collect();
    if statuses.iter().any(|s| !s.is_some_and(|s| s.success())) {
        let mut msg = format!("{what} failed:");
        for (r, ((o, e), s)) in outputs.iter().zip(&statuses).enumerate() {
            msg += &format!("\n--- rank {r} ({s:?}) ---\n{o}{e}");
        }
        bail!(msg);
    }
    Ok(outputs[0]
        .0
        .lines()
        .filter(|l| l.trim_start().starts_with('{'))
        .map(str::to_owned)
        .collect())
}

fn forwarded_args(opts: &Options) -> Vec<String> {
    vec![
        "--reps".to_owned(),
        opts.reps_scale.to_string(),
        "--sizes".to_owned(),
        opts.sizes
            .iter()
            .map(usize::to_string)
            .collect::<Vec<_>>()
            .join(","),
    ]
}

/// Starts this program twice as ranks 0 and 1 on a free loopback port.
fn launch_dml(opts: &Options) -> Result<Vec<String>> {
    let exe = std::env::current_exe()?;
    let port = dml_distributed::free_port()?;
    let children = (0..WORLD)
        .map(|rank| {
            Command::new(&exe)
                .args(forwarded_args(opts))
                .env(RANK_VAR, rank.to_string())
                .env(PORT_VAR, port.to_string())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .map_err(Into::into)
        })
        .collect::<Result<Vec<_>>>()?;
    wait_pair("dml collectives", children)
}

/// Runs the Python side, which launches its own two ranks and prints rank 0's lines.
fn launch_torch(python: &Path, opts: &Options) -> Result<Vec<String>> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("python/collectives.py");
    let child = Command::new(python)
        .arg(&script)
        .args(forwarded_args(opts))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {} {}", python.display(), script.display()))?;
    wait_pair("torch.distributed collectives", vec![child])
}

// ---------------------------------------------------------------------------------------------
// The comparison.

#[derive(Debug, Deserialize)]
struct Record {
    kind: String,
    #[serde(rename = "impl")]
    side: String,
    #[serde(default)]
    op: String,
    #[serde(default)]
    mib: usize,
    #[serde(default)]
    reps: usize,
    #[serde(default)]
    median_s: f64,
    #[serde(default)]
    gbps: f64,
}

fn records(lines: &[String], side: &str) -> Result<BTreeMap<(String, usize), Record>> {
    let mut out = BTreeMap::new();
    for line in lines {
        let r: Record =
            serde_json::from_str(line).with_context(|| format!("parsing {side} line {line}"))?;
        if r.side != side {
            bail!("expected {side} results, got {line}");
        }
        if r.kind == "result" {
            out.insert((r.op.clone(), r.mib), r);
        }
    }
    Ok(out)
}

/// One op × size of the table: a value per round.
#[derive(Debug, Default)]
struct Row {
    dml_gbps: Vec<f64>,
    torch_gbps: Vec<f64>,
    /// dml's median seconds per call / torch's.
    ratio: Vec<f64>,
    reps: usize,
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".to_owned())
}

/// `median (min–max)` with `digits` decimals.
fn spread(v: &[f64], digits: usize) -> String {
    let lo = v.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    format!("{:.digits$} ({lo:.digits$}–{hi:.digits$})", median(v))
}

fn compare(python: &Path, opts: &Options) -> Result<()> {
    let started = Instant::now();
    let load_before = load_average();
    let mut rows: BTreeMap<(String, usize), Row> = BTreeMap::new();
    let mut torch_version = String::new();
    for round in 0..opts.rounds {
        let dml = records(&launch_dml(opts)?, "dml")?;
        let torch_lines = launch_torch(python, opts)?;
        for line in &torch_lines {
            if let Ok(v) = serde_json::from_str::<serde_json::Value>(line)
                && v["kind"] == "meta"
            {
                torch_version = v["torch"].as_str().unwrap_or("?").to_owned();
            }
        }
        let torch = records(&torch_lines, "torch")?;
        for (key, d) in &dml {
            let t = torch
                .get(key)
                .with_context(|| format!("torch has no result for {key:?}"))?;
            let row = rows.entry(key.clone()).or_default();
            row.dml_gbps.push(d.gbps);
            row.torch_gbps.push(t.gbps);
            row.ratio.push(d.median_s / t.median_s);
            row.reps = d.reps;
            eprintln!(
                "round {round}: {:<10} {:>4} MiB  dml {:7.3} GB/s ({:8.2} ms)  torch {:7.3} GB/s \
                 ({:8.2} ms)  dml/torch {:.2}",
                key.0,
                key.1,
                d.gbps,
                d.median_s * 1e3,
                t.gbps,
                t.median_s * 1e3,
                d.median_s / t.median_s
            );
        }
    }
    let mut md = String::new();
    md += "# Collective bandwidth: dml-distributed against torch.distributed (Gloo)\n\n";
    md += &format!(
        "Two local processes on loopback (127.0.0.1), one LibTorch thread each, f32 tensors; \
         {} rounds alternating dml, torch, dml, torch, ...; each side's figure per round is the \
         median over its timed calls (after 2 warm-up calls and a barrier). Cells: median over \
         rounds (min–max over rounds). {BANDWIDTH_DEFINITION}. Ratio: dml's median seconds per \
         call / torch's, same round.\n\n",
        opts.rounds
    );
    md += &format!(
        "torch {torch_version}; {} CPUs; load average before {load_before}, after {}; \
         {:.0} s in all.\n\n",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        load_average(),
        started.elapsed().as_secs_f64()
    );
    md += "| op | MiB per rank | timed calls | dml GB/s | torch GB/s | time dml/torch |\n";
    md += "|---|--:|--:|--:|--:|--:|\n";
    let order = ["all_reduce", "all_gather"];
    let mut keys: Vec<_> = rows.keys().cloned().collect();
    keys.sort_by_key(|(op, mib)| (order.iter().position(|o| o == op), *mib));
    for key in keys {
        let row = &rows[&key];
        md += &format!(
            "| {} | {} | {} | {} | {} | {}× |\n",
            key.0,
            key.1,
            row.reps,
            spread(&row.dml_gbps, 3),
            spread(&row.torch_gbps, 3),
            spread(&row.ratio, 2)
        );
    }
    md += "\nDifferences between the sides: both reduce one contiguous tensor in place (dml \
           copies several tensors into one reused bucket and back; here there is one). dml's \
           `all_gather` sends a 64-byte shape header with each rank's bytes, padded to the \
           largest part of the previous call, in one collective (ranks may pass different row \
           counts; a part larger than the last call's costs a second round), and copies the \
           input into that send buffer and allocates one flat output per call; torch's gathers \
           equal sizes into a list the script allocates once.\n";
    println!("{md}");
    if let Some(out) = &opts.out {
        if let Some(dir) = out.parent() {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(out, &md)?;
        eprintln!("collectives: table in {}", out.display());
    }
    Ok(())
}
