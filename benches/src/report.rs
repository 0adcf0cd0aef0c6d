//! The results of a bench run and their rendering as docs/benchmarks.md.

use std::fmt::Write as _;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::measure::{Comparison, PeakMemory, quantile};

/// criterion's estimate of one benchmark (per run).
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct Estimate {
    /// Median time per run, ns.
    pub median_ns: f64,
    /// Median absolute deviation of the sample's per-run times, ns (criterion scales it by
    /// 1.4826, so it estimates σ for normal noise).
    pub mad_ns: f64,
    /// 95 % confidence interval of the median, ns.
    pub median_ci_ns: (f64, f64),
}

/// Reads `dir/<topic>/<function>/<parameter>/new/estimates.json`, as criterion writes it.
pub fn read_criterion(
    dir: &Path,
    topic: &str,
    function: &str,
    parameter: &str,
) -> Option<Estimate> {
    let path = dir
        .join(topic)
        .join(function)
        .join(parameter)
        .join("new")
        .join("estimates.json");
    let text = std::fs::read_to_string(path).ok()?;
    let v: serde_json::Value = serde_json::from_str(&text).ok()?;
    let median = &v["median"];
    Some(Estimate {
        median_ns: median["point_estimate"].as_f64()?,
        mad_ns: v["median_abs_dev"]["point_estimate"].as_f64()?,
        median_ci_ns: (
            median["confidence_interval"]["lower_bound"].as_f64()?,
            median["confidence_interval"]["upper_bound"].as_f64()?,
        ),
    })
}

/// One row of the report.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Row {
    /// `topic/function/parameter`.
    pub id: String,
    /// The layer.
    pub topic: String,
    /// What is measured.
    pub function: String,
    /// The sizes.
    pub parameter: String,
    /// Items per run.
    pub items: u64,
    /// What the items are.
    pub unit: String,
    /// What the timed region contains.
    pub note: String,
    /// Where the case's data comes from, when its sizes do not say it.
    #[serde(default)]
    pub data_note: Option<String>,
    /// criterion's estimate of the dml side.
    pub criterion: Option<Estimate>,
    /// Seconds per run of dml timed by the runner itself, for operations too slow for
    /// criterion (used when `criterion` is absent).
    #[serde(default)]
    pub own: Vec<f64>,
    /// What the reference runs.
    pub reference: Option<String>,
    /// The alternating dml/reference measurement.
    pub comparison: Option<Comparison>,
    /// Peak memory of one dml run.
    pub peak_dml: Option<PeakMemory>,
    /// Peak memory of one reference run.
    pub peak_reference: Option<PeakMemory>,
    /// What went wrong, if anything (a failing side is reported, not hidden).
    pub problems: Vec<String>,
}

/// The machine and software the numbers come from.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Machine {
    /// CPU model (`/proc/cpuinfo`).
    pub cpu: String,
    /// Logical CPUs this process may use.
    pub logical_cpus: usize,
    /// Total memory, GiB.
    pub memory_gib: f64,
    /// Kernel release.
    pub kernel: String,
    /// `rustc --version`.
    pub rustc: String,
    /// LibTorch version (`$LIBTORCH/build-version`).
    pub libtorch: String,
    /// Threads each side uses.
    pub threads: usize,
    /// UTC date and time of the run.
    pub date: String,
    /// The reference stack's versions and BLAS (from `reference.py`), when compared.
    pub python: Option<serde_json::Value>,
}

/// A whole run.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Report {
    /// `quick` or `full`.
    pub scale: String,
    /// Where the numbers come from.
    pub machine: Machine,
    /// One per case.
    pub rows: Vec<Row>,
    /// Hand-written remarks (benches/remarks.md), appended verbatim.
    pub remarks: Option<String>,
}

/// A duration in seconds with a unit that keeps 3 significant digits.
pub fn fmt_secs(s: f64) -> String {
    if !s.is_finite() {
        return "–".into();
    }
    let (v, unit) = if s >= 1.0 {
        (s, "s")
    } else if s >= 1e-3 {
        (s * 1e3, "ms")
    } else if s >= 1e-6 {
        (s * 1e6, "µs")
    } else {
        (s * 1e9, "ns")
    };
    format!("{} {unit}", sig3(v))
}

fn sig3(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

/// A rate with an SI prefix: `1.23 M pairs/s`.
pub fn fmt_rate(per_sec: f64, unit: &str) -> String {
    let (v, p) = if per_sec >= 1e9 {
        (per_sec / 1e9, "G")
    } else if per_sec >= 1e6 {
        (per_sec / 1e6, "M")
    } else if per_sec >= 1e3 {
        (per_sec / 1e3, "k")
    } else {
        (per_sec, "")
    };
    if p.is_empty() {
        format!("{} {unit}/s", sig3(v))
    } else {
        format!("{} {p} {unit}/s", sig3(v))
    }
}

fn fmt_mib(kib: u64) -> String {
    format!("{:.0} MiB", kib as f64 / 1024.0)
}

/// The ratio cell: median of the per-round ratios and their interquartile range.
fn fmt_ratio(c: &Comparison) -> String {
    let r = c.ratios();
    let (q1, med, q3) = (quantile(&r, 0.25), quantile(&r, 0.5), quantile(&r, 0.75));
    format!("**{med:.2}×** ({q1:.2}–{q3:.2})")
}

/// docs/benchmarks.md for `report`.
pub fn render(report: &Report) -> String {
    let mut s = String::new();
    let m = &report.machine;
    let compared = report.rows.iter().any(|r| r.comparison.is_some());
    s.push_str("# Benchmarks\n\n");
    s.push_str(
        "How fast dml is, layer by layer, and how it compares with the Python stack people \
         come from (pytorch-metric-learning, faiss, numpy, torch) on the same inputs.\n\n\
         *Generated by `cargo xtask bench",
    );
    if compared {
        s.push_str(" --compare");
    }
    let _ = writeln!(s, "` ({} scale); do not edit by hand.*\n", report.scale);
    s.push_str(
        "## Reproduce\n\n\
         ```sh\n\
         cargo xtask bench             # criterion benches of every layer -> this file\n\
         cargo xtask bench --compare   # also the Python reference, alternating, same inputs\n\
         cargo xtask bench --quick     # one-minute smoke run (tiny sizes) -> target/dml-bench/\n\
         cargo bench -p dml-benches --bench kernels   # one layer, criterion only\n\
         cargo xtask bench --collectives   # two processes: dml-distributed against torch.distributed\n\
         ```\n\n\
         dml figures are criterion's median over its samples, with the median absolute \
         deviation (σ-scaled) as spread. The comparison runs each operation of both sides in \
         the same run, in alternating rounds (each round times a few runs of dml, then of the \
         reference, the order swapping every round), so the ratio of each round compares two \
         measurements taken seconds apart; the table gives the median ratio and its \
         interquartile range over the rounds (at full scale 11 rounds of about 0.15 s a side for light \
         operations, 3 to 5 single runs for heavy ones; each side starts after a 0.2 s pause so \
         the other side's spinning thread pools are idle). Below 1× dml is faster. Peak memory is taken in \
         a fresh process per side: the peak resident set during one run (`VmHWM`, reset just \
         before the run) and what the run added to the resident set it started from. Inputs \
         are seeded synthetic data (clustered unit-norm embeddings, P×K batches with K = 4), \
         except the evaluation of raw Fashion-MNIST images, whose data set a full run fetches \
         (`cargo xtask data fashion-mnist`).\n\n",
    );
    s.push_str("## Machine\n\n");
    let _ = writeln!(s, "| | |\n|---|---|");
    let _ = writeln!(s, "| CPU | {} |", m.cpu);
    let _ = writeln!(s, "| logical CPUs | {} |", m.logical_cpus);
    let _ = writeln!(s, "| threads per side | {} |", m.threads);
    let _ = writeln!(s, "| memory | {:.1} GiB |", m.memory_gib);
    let _ = writeln!(s, "| kernel | {} |", m.kernel);
    let _ = writeln!(s, "| rustc | {} |", m.rustc);
    let _ = writeln!(s, "| LibTorch | {} |", m.libtorch);
    if let Some(py) = &m.python {
        let get = |k: &str| py.get(k).and_then(|v| v.as_str()).unwrap_or("?").to_owned();
        let _ = writeln!(
            s,
            "| reference | Python {}, torch {}, pytorch-metric-learning {}, faiss {}, numpy {} |",
            get("python"),
            get("torch"),
            get("pytorch_metric_learning"),
            get("faiss"),
            get("numpy")
        );
        if let Some(blas) = py.get("blas").and_then(|b| b.as_array()) {
            let pools: Vec<String> = blas
                .iter()
                .map(|p| {
                    let f = |k: &str| {
                        p.get(k)
                            .map_or("?".into(), |v| v.to_string().replace('"', ""))
                    };
                    format!(
                        "{} {} ({}, {} threads)",
                        f("internal_api"),
                        f("version"),
                        f("architecture"),
                        f("num_threads")
                    )
                })
                .collect();
            let _ = writeln!(s, "| reference thread pools | {} |", pools.join("; "));
        }
    }
    let _ = writeln!(s, "| date | {} |\n", m.date);

    for topic in ["kernels", "mining", "losses", "train", "eval"] {
        let rows: Vec<&Row> = report.rows.iter().filter(|r| r.topic == topic).collect();
        if rows.is_empty() {
            continue;
        }
        let _ = writeln!(s, "## {}\n", topic_title(topic));
        if compared {
            s.push_str(
                "| benchmark | sizes | dml median | spread | throughput | dml (alternating) | reference (alternating) | dml / reference |\n\
                 |---|---|--:|--:|--:|--:|--:|--:|\n",
            );
        } else {
            s.push_str(
                "| benchmark | sizes | dml median | spread | throughput |\n|---|---|--:|--:|--:|\n",
            );
        }
        for r in &rows {
            let (med, spread, rate) = match &r.criterion {
                Some(e) => (
                    fmt_secs(e.median_ns * 1e-9),
                    format!("± {:.1} %", 100.0 * e.mad_ns / e.median_ns),
                    fmt_rate(r.items as f64 / (e.median_ns * 1e-9), &r.unit),
                ),
                None if !r.own.is_empty() => {
                    let med = quantile(&r.own, 0.5);
                    let lo = r.own.iter().copied().fold(f64::INFINITY, f64::min);
                    let hi = r.own.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                    (
                        format!("{} †", fmt_secs(med)),
                        format!("± {:.1} % †", 100.0 * (hi - lo) / 2.0 / med),
                        fmt_rate(r.items as f64 / med, &r.unit),
                    )
                }
                None => ("not measured".into(), "–".into(), "–".into()),
            };
            let _ = write!(
                s,
                "| {} | {} | {med} | {spread} | {rate} |",
                r.function, r.parameter
            );
            if compared {
                match &r.comparison {
                    Some(c) => {
                        let _ = write!(
                            s,
                            " {} | {} | {} |",
                            fmt_secs(c.dml_median()),
                            fmt_secs(c.reference_median()),
                            fmt_ratio(c)
                        );
                    }
                    None => s.push_str(" – | – | – |"),
                }
            }
            s.push('\n');
        }
        s.push('\n');
        if rows
            .iter()
            .any(|r| r.criterion.is_none() && !r.own.is_empty())
        {
            let n = rows.iter().map(|r| r.own.len()).max().unwrap_or(0);
            let _ = writeln!(
                s,
                "† Too slow for criterion's ten samples: the median of {n} runs timed by the \
                 runner (the dml side of the comparison when there is one), spread = half the \
                 range.\n"
            );
        }
        let mut seen = Vec::new();
        for r in &rows {
            if seen.contains(&&r.function) {
                continue;
            }
            seen.push(&r.function);
            let _ = write!(s, "- `{}`: {}", r.function, r.note);
            if let Some(what) = &r.reference {
                let _ = write!(s, "; reference: {what}");
            }
            s.push_str(".\n");
            for case in rows.iter().filter(|c| c.function == r.function) {
                if let Some(data) = &case.data_note {
                    let _ = writeln!(s, "- `{}`: {data}", case.parameter);
                }
            }
        }
        s.push('\n');
    }

    let peaks: Vec<&Row> = report
        .rows
        .iter()
        .filter(|r| r.peak_dml.is_some() || r.peak_reference.is_some())
        .collect();
    if !peaks.is_empty() {
        s.push_str("## Peak memory\n\n");
        s.push_str(
            "| benchmark | sizes | dml peak RSS | dml added by the run | reference peak RSS | reference added by the run |\n\
             |---|---|--:|--:|--:|--:|\n",
        );
        for r in peaks {
            let cells = |p: &Option<PeakMemory>| match p {
                Some(p) => (fmt_mib(p.hwm_kib), fmt_mib(p.increase_kib())),
                None => ("–".into(), "–".into()),
            };
            let (dp, di) = cells(&r.peak_dml);
            let (rp, ri) = cells(&r.peak_reference);
            let _ = writeln!(
                s,
                "| {} | {} | {dp} | {di} | {rp} | {ri} |",
                r.function, r.parameter
            );
        }
        s.push('\n');
    }

    let problems: Vec<&Row> = report
        .rows
        .iter()
        .filter(|r| !r.problems.is_empty())
        .collect();
    if !problems.is_empty() {
        s.push_str("## Not measured\n\n");
        for r in problems {
            for p in &r.problems {
                let _ = writeln!(s, "- `{}`: {p}", r.id);
            }
        }
        s.push('\n');
    }

    if compared {
        let mut slower: Vec<(&Row, f64)> = report
            .rows
            .iter()
            .filter_map(|r| Some((r, quantile(&r.comparison.as_ref()?.ratios(), 0.5))))
            .filter(|(_, ratio)| *ratio > 1.05)
            .collect();
        slower.sort_by(|a, b| b.1.total_cmp(&a.1));
        s.push_str("## Where dml is slower\n\n");
        if slower.is_empty() {
            s.push_str("Nowhere in this run: every median ratio is at most 1.05×.\n\n");
        } else {
            for (r, ratio) in slower {
                let _ = writeln!(
                    s,
                    "- `{}` {}: {ratio:.2}× the reference's time",
                    r.function, r.parameter
                );
            }
            s.push('\n');
        }
    }
    if let Some(remarks) = &report.remarks {
        s.push_str(remarks.trim_end());
        s.push('\n');
    }
    s
}

fn topic_title(topic: &str) -> &'static str {
    match topic {
        "kernels" => "Kernels (dml-kernels)",
        "mining" => "Miners (dml-sampling)",
        "losses" => "Losses, forward + backward (dml-losses)",
        "train" => "One training step (dml-models + dml-sampling + dml-losses)",
        "eval" => "Evaluation (dml-eval)",
        _ => "Other",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(topic: &str, compared: bool) -> Row {
        Row {
            id: format!("{topic}/f/p"),
            topic: topic.into(),
            function: "f".into(),
            parameter: "p".into(),
            items: 1000,
            unit: "pairs".into(),
            note: "what".into(),
            criterion: Some(Estimate {
                median_ns: 2e6,
                mad_ns: 1e5,
                median_ci_ns: (1.9e6, 2.1e6),
            }),
            reference: compared.then(|| "numpy".into()),
            comparison: compared.then(|| Comparison {
                dml: vec![1.0, 2.0, 3.0],
                reference: vec![2.0, 2.0, 2.0],
                reps: (1, 1),
            }),
            ..Default::default()
        }
    }

    #[test]
    fn units_keep_three_digits() {
        assert_eq!(fmt_secs(2e-3), "2.00 ms");
        assert_eq!(fmt_secs(123.4e-6), "123 µs");
        assert_eq!(fmt_secs(12.34), "12.3 s");
        assert_eq!(fmt_rate(1.5e6, "pairs"), "1.50 M pairs/s");
    }

    #[test]
    fn renders_criterion_and_comparison() {
        let report = Report {
            scale: "quick".into(),
            rows: vec![row("kernels", true), row("eval", false)],
            ..Default::default()
        };
        let md = render(&report);
        // 2 ms per run of 1000 items: 500 k/s; MAD 0.1 ms is 5 %.
        assert!(md.contains("| f | p | 2.00 ms | ± 5.0 % | 500 k pairs/s | 2.00 s | 2.00 s | **1.00×** (0.75–1.25) |"), "{md}");
        assert!(md.contains("## Evaluation (dml-eval)"));
        assert!(md.contains("--compare"));
    }

    /// A case's data note is its own bullet under its function's note, once per case that has
    /// one, and a report written before the field existed still reads.
    #[test]
    fn data_notes_follow_their_function_note() {
        let mut raw = row("eval", false);
        raw.parameter = "q".into();
        raw.data_note = Some("raw images.".into());
        let report = Report {
            scale: "full".into(),
            rows: vec![row("eval", false), raw],
            ..Default::default()
        };
        let md = render(&report);
        assert!(md.contains("- `f`: what.\n- `q`: raw images.\n"), "{md}");
        assert_eq!(md.matches("raw images").count(), 1, "{md}");
        let old = serde_json::to_value(row("eval", false)).expect("a row serialises");
        let mut old = old.as_object().expect("an object").clone();
        old.remove("data_note");
        let back: Row = serde_json::from_value(old.into()).expect("an old row reads");
        assert_eq!(back.data_note, None);
    }
}
