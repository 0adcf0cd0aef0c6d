//! The bench runner behind `cargo xtask bench` (not a criterion target).
//!
//! ```text
//! runner report [--compare PYTHON] [--out FILE] [--criterion-dir DIR] [--filter TEXT] [--rounds N]
//! runner peak ID
//! runner render RESULTS_JSON OUT_MD
//! ```
//!
//! `report` collects criterion's estimates of every case (run the criterion targets first),
//! measures peak memory where it matters in child processes, with `--compare` times the Python
//! reference against dml alternately, and writes the markdown table (and the raw JSON beside it
//! in target/dml-bench/). `peak` is the child: it builds one case, runs it once and prints its
//! peak memory. `render` rewrites the markdown of a saved run (after editing benches/remarks.md)
//! without measuring anything. The scale comes from `DML_BENCH_SCALE` (`quick` or `full`).

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};
use dml_benches::measure::{self, Worker};
use dml_benches::report::{self, Machine, Report, Row};
use dml_benches::{Case, Scale, Weight, cases, init_threads, project_root};

fn main() {
    if let Err(err) = real_main() {
        eprintln!("error: {err:#}");
        std::process::exit(1);
    }
}

struct Options {
    python: Option<PathBuf>,
    out: Option<PathBuf>,
    criterion_dir: Option<PathBuf>,
    filter: Option<String>,
    rounds: usize,
}

fn real_main() -> Result<()> {
    // `cargo bench` passes `--bench` to every target; drop it and anything criterion-like.
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    match args.first().map(String::as_str) {
        Some("report") => {
            let mut opts = Options {
                python: None,
                out: None,
                criterion_dir: None,
                filter: None,
                rounds: 11,
            };
            let mut it = args[1..].iter();
            while let Some(flag) = it.next() {
                let mut value = || it.next().with_context(|| format!("{flag} needs a value"));
                match flag.as_str() {
                    "--compare" => opts.python = Some(value()?.into()),
                    "--out" => opts.out = Some(value()?.into()),
                    "--criterion-dir" => opts.criterion_dir = Some(value()?.into()),
                    "--filter" => opts.filter = Some(value()?.clone()),
                    "--rounds" => opts.rounds = value()?.parse().context("--rounds")?,
                    other => bail!("unknown option {other}"),
                }
            }
            report_cmd(&opts)
        }
        Some("render") => {
            // Re-renders a saved run (e.g. after editing benches/remarks.md) without measuring.
            let json = args.get(1).context("render needs the results JSON")?;
            let out = args.get(2).context("render needs the output file")?;
            let mut report: Report = serde_json::from_str(&std::fs::read_to_string(json)?)?;
            report.remarks =
                std::fs::read_to_string(project_root().join("benches/remarks.md")).ok();
            std::fs::write(out, report::render(&report))?;
            Ok(())
        }
        Some("peak") => {
            let id = args.get(1).context("peak needs a case id")?;
            peak_cmd(id)
        }
        _ => {
            eprintln!(
                "runner: nothing to do (run `cargo xtask bench`; this target takes `report` or `peak ID`)"
            );
            Ok(())
        }
    }
}

fn peak_cmd(id: &str) -> Result<()> {
    init_threads();
    let all = cases(Scale::from_env());
    let case = all
        .iter()
        .find(|c| c.id() == id)
        .with_context(|| format!("no case {id}"))?;
    let mut prepared = case.prepare()?;
    let peak = measure::peak_of(&mut prepared.run)?;
    println!("{}", serde_json::to_string(&peak)?);
    Ok(())
}

fn report_cmd(opts: &Options) -> Result<()> {
    let scale = Scale::from_env();
    let threads = init_threads();
    let root = project_root();
    let work = root.join("target").join("dml-bench");
    std::fs::create_dir_all(&work)?;
    let criterion_dir = opts.criterion_dir.clone().unwrap_or_else(|| {
        std::env::var_os("CRITERION_HOME")
            .map_or_else(|| root.join("target/criterion"), PathBuf::from)
    });
    let script = root.join("benches/python/reference.py");
    let mut machine = machine(threads);

    let mut worker = match &opts.python {
        Some(py) => {
            let mut w = Worker::start(py, &script, threads)?;
            machine.python = Some(w.request(&serde_json::json!({"cmd": "info"}))?);
            Some(w)
        }
        None => None,
    };

    let all: Vec<Case> = cases(scale)
        .into_iter()
        .filter(|c| {
            opts.filter
                .as_ref()
                .is_none_or(|f| f.split('|').any(|part| c.id().contains(part)))
        })
        .collect();
    let mut rows = Vec::with_capacity(all.len());
    for case in &all {
        let id = case.id();
        eprintln!("runner: {id}");
        let mut row = Row {
            id: id.clone(),
            topic: case.topic.to_string(),
            function: case.function.clone(),
            parameter: case.parameter.clone(),
            items: case.items,
            unit: case.unit.to_owned(),
            note: case.note.to_owned(),
            data_note: case.data_note.map(str::to_owned),
            criterion: report::read_criterion(
                &criterion_dir,
                case.topic.name(),
                &case.function,
                &case.parameter,
            ),
            ..Default::default()
        };
        let huge = case.weight == Weight::Huge && scale == Scale::Full;
        if row.criterion.is_none() && !huge {
            row.problems
                .push("no criterion estimate (its bench target did not run or failed)".into());
        }
        if case.peak_memory {
            let exe = std::env::current_exe()?;
            let mut cmd = Command::new(exe);
            cmd.arg("peak").arg(&id);
            match measure::peak_from_child(cmd) {
                Ok(p) => row.peak_dml = Some(p),
                Err(e) => row.problems.push(format!("dml peak memory: {e:#}")),
            }
        }
        if let (Some(py), Some(w)) = (&opts.python, worker.as_mut()) {
            match compare_case(
                case,
                &mut row,
                py,
                &script,
                w,
                threads,
                &work,
                opts.rounds,
                scale,
            ) {
                Ok(()) => {}
                Err(e) => {
                    row.problems.push(format!("comparison: {e:#}"));
                    // The worker may be dead or stuck in a bad state: start afresh.
                    worker = Some(Worker::start(py, &script, threads)?);
                }
            }
        }
        if huge {
            match &row.comparison {
                Some(c) => row.own = c.dml.clone(),
                // A run of many minutes (1,000,000 items) is not repeated: the peak-memory
                // child's run is its timing.
                None => match row.peak_dml.as_ref().and_then(|p| p.seconds) {
                    Some(t) if t > 300.0 => row.own = vec![t],
                    _ => match own_timing(case) {
                        Ok(t) => row.own = t,
                        Err(e) => row.problems.push(format!("dml timing: {e:#}")),
                    },
                },
            }
        }
        rows.push(row);
    }
    drop(worker);

    let remarks_path = root.join("benches/remarks.md");
    let report = Report {
        scale: scale.name().to_owned(),
        machine,
        rows,
        remarks: std::fs::read_to_string(remarks_path).ok(),
    };
    let json_path = work.join(format!("results-{}.json", scale.name()));
    std::fs::write(&json_path, serde_json::to_string_pretty(&report)?)?;
    let out = opts.out.clone().unwrap_or_else(|| match scale {
        Scale::Quick => work.join("benchmarks-quick.md"),
        Scale::Full => root.join("docs/benchmarks.md"),
    });
    if let Some(dir) = out.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&out, report::render(&report))
        .with_context(|| format!("writing {}", out.display()))?;
    eprintln!(
        "runner: wrote {} (raw: {})",
        out.display(),
        json_path.display()
    );
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn compare_case(
    case: &Case,
    row: &mut Row,
    python: &Path,
    script: &Path,
    worker: &mut Worker,
    threads: usize,
    work: &Path,
    rounds: usize,
    scale: Scale,
) -> Result<()> {
    let mut prepared = case.prepare()?;
    let Some(reference) = prepared.reference.take() else {
        return Ok(());
    };
    row.reference = Some(reference.what.clone());
    let dir = measure::inputs_dir(&work.join("inputs"), &case.id());
    let inputs = measure::write_inputs(&reference, &dir)?;
    let warm_up = case.weight != Weight::Huge || reference.warm_up;
    let request = measure::setup_request(&reference, inputs, warm_up);
    let result = (|| -> Result<()> {
        worker.request(&request)?;
        let (round_secs, rounds) = match scale {
            Scale::Quick => (0.02, 3),
            Scale::Full => (0.15, rounds),
        };
        row.comparison = Some(measure::compare(
            &mut prepared.run,
            worker,
            case.weight,
            warm_up,
            round_secs,
            rounds,
        )?);
        if case.peak_memory {
            let spec = dir.join("spec.json");
            std::fs::write(&spec, serde_json::to_string(&request)?)?;
            let mut cmd = measure::python_command(python, script, threads);
            cmd.arg("peak").arg("--spec").arg(&spec);
            match measure::peak_from_child(cmd) {
                Ok(p) => row.peak_reference = Some(p),
                Err(e) => row.problems.push(format!("reference peak memory: {e:#}")),
            }
        }
        Ok(())
    })();
    let _ = std::fs::remove_dir_all(&dir);
    result
}

/// Three timed runs of a case too slow for criterion (no warm-up: each run is tens of seconds).
/// Three runs, or one when a run takes over five minutes (the 1,000,000-item evaluation).
fn own_timing(case: &Case) -> Result<Vec<f64>> {
    let mut prepared = case.prepare()?;
    let mut times = Vec::new();
    for _ in 0..3 {
        let t = measure::time_dml(&mut prepared.run, 1)?;
        times.push(t);
        if t > 300.0 {
            break;
        }
    }
    Ok(times)
}

fn machine(threads: usize) -> Machine {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu = cpuinfo
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name")?
                .split_once(':')
                .map(|(_, v)| v.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown".into());
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let memory_kib: f64 = meminfo
        .lines()
        .find_map(|l| {
            l.strip_prefix("MemTotal:")?
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })
        .unwrap_or(0.0);
    let output = |cmd: &str, args: &[&str]| {
        Command::new(cmd)
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
            .unwrap_or_else(|| "unknown".into())
    };
    let libtorch = std::env::var_os("LIBTORCH")
        .and_then(|p| std::fs::read_to_string(Path::new(&p).join("build-version")).ok())
        .map_or_else(|| "unknown".into(), |v| v.trim().to_owned());
    Machine {
        cpu,
        logical_cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
        memory_gib: memory_kib / (1024.0 * 1024.0),
        kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map_or_else(|_| "unknown".into(), |s| s.trim().to_owned()),
        rustc: output("rustc", &["--version"]),
        libtorch,
        threads,
        date: output("date", &["-u", "+%Y-%m-%d %H:%M UTC"]),
        python: None,
    }
}
