//! `dml compare`: the losses × miners grid of "Sampling Matters in Deep Embedding Learning"
//! (Wu et al., 2017), trained from one base config, over one or more seeds, beside the two
//! trivial baselines.
//!
//! Each cell replaces the base config's `[loss]` and `[miner]` (keeping the base's parameters
//! when the kind is the base's own, the kind's defaults otherwise; a distance-weighted miner is
//! sized to the model's embeddings) and trains once per seed in `<out>/<loss>-<miner>/` (in
//! `<out>/<loss>-<miner>/seed-<s>/` with several seeds). For one seed every cell sees the same
//! initial weights and the same batches. Beside the cells the report holds the baselines on the
//! same held-out items: the raw input (computed once) and the untrained network (once per seed,
//! the weights every cell of that seed starts from). The table (`compare.md`: the mean over seeds
//! and the min–max range per score), the raw numbers (`compare.json`: every run), one histogram of
//! sampled negative distances per miner (`negative_distances.{png,svg}`, first loss, first seed,
//! from the `negative_distances.npy` each run leaves in its folder)
//! and the MAP@R chart (`map_at_r.{png,svg}`, when MAP@R is computed) are written to `<out>`.
//!
//! The table and the JSON are rewritten after every run, so a long grid that is stopped keeps
//! what it finished; a run that fails (a non-finite loss, say) is recorded with its error and the
//! grid goes on: one bad combination must not cost the hours spent on the others. Seeds are the
//! outer loop, so a stopped grid holds whole grids of its first seeds.
//!
//! **A grid survives interruption.** Run again on the same output folder, `dml compare` reads the
//! `compare.json` there, skips every (loss, miner, seed) run it already holds (finished or
//! failed; it says how many), resumes a run that was stopped in the middle from its checkpoint,
//! and trains the rest; cells and seeds may be added to a grid this way. The baselines are
//! computed by whichever run comes first without them. A `compare.json` written for another
//! number of epochs or other Recall@K is refused (use another `--output-dir`).

mod chart;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use dml_eval::{Metrics, Score};
use dml_losses::LossConfig;
use dml_sampling::MinerConfig;
use serde::{Deserialize, Serialize};

use crate::config::{Config, NO_MINER};
use crate::observe::{Observer, Silent};
use crate::state::RawInput;
use crate::trainer::Trainer;
use crate::{Error, Result};

/// One training run of a cell.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Run {
    /// The run's seed.
    pub seed: u64,
    /// Held-out metrics after the last epoch (`None` when the run failed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics: Option<Metrics>,
    /// Seconds of training (0 when the run failed before it trained).
    #[serde(default)]
    pub train_seconds: f64,
    /// Why the run failed, if it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// One cell of the grid: a (loss, miner) pair and its runs, one per seed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Cell {
    /// The loss kind.
    pub loss: String,
    /// The miner kind.
    pub miner: String,
    /// The runs, in seed order.
    pub runs: Vec<Run>,
}

/// The untrained network of one seed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Untrained {
    /// The seed its weights were initialised from.
    pub seed: u64,
    /// Its held-out metrics.
    pub metrics: Metrics,
    /// The mean pairwise distance of its held-out embeddings, which the seed's other cells
    /// take as their collapse warning's reference (they do not evaluate the untrained network
    /// again).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spread: Option<f64>,
}

/// Mean, minimum and maximum of one score over runs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Spread {
    /// The mean.
    pub mean: f64,
    /// The smallest value.
    pub min: f64,
    /// The largest value.
    pub max: f64,
    /// How many runs it summarises.
    pub n: usize,
}

impl Spread {
    /// The spread of `values`; `None` when there are none.
    pub fn of(values: &[f64]) -> Option<Spread> {
        if values.is_empty() {
            return None;
        }
        let (min, max) = values
            .iter()
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &v| {
                (lo.min(v), hi.max(v))
            });
        Some(Spread {
            mean: values.iter().sum::<f64>() / values.len() as f64,
            min,
            max,
            n: values.len(),
        })
    }

    /// `mean` in percent with one decimal, followed by ` (min–max)` when it summarises more
    /// than one run.
    pub fn percent(&self) -> String {
        if self.n > 1 {
            format!(
                "{:.1} ({:.1}–{:.1})",
                100.0 * self.mean,
                100.0 * self.min,
                100.0 * self.max
            )
        } else {
            format!("{:.1}", 100.0 * self.mean)
        }
    }
}

/// The whole grid.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CompareReport {
    /// The K of Recall@K, in order.
    pub recall_at: Vec<usize>,
    /// Epochs each run trained.
    pub epochs: u64,
    /// The seeds, in the order they ran.
    pub seeds: Vec<u64>,
    /// The raw-input baseline on the held-out items (`None` until computed, or with
    /// `eval.raw_input = false`).
    #[serde(default)]
    pub raw_input: Option<RawInput>,
    /// The untrained network, one entry per seed.
    pub untrained: Vec<Untrained>,
    /// The frozen pretrained (or TorchScript) backbone's own features, when the base config's
    /// backbone comes with weights.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub frozen_backbone: Option<Metrics>,
    /// The cells, losses major.
    pub cells: Vec<Cell>,
    /// The same grid trained by another library (`dml compare --reference`), shown beside
    /// dml's cells in the table and the chart.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reference: Option<ReferenceGrid>,
}

/// Cells of the same grid trained by another library, read from its JSON by
/// [`read_reference`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReferenceGrid {
    /// The library's name in the table and the chart (`pml`).
    pub library: String,
    /// The file the cells were read from.
    pub source: PathBuf,
    /// The cells, in the order of their first run in the file.
    pub cells: Vec<Cell>,
}

/// Reads the runs of `scripts/compare_pml.py --out FILE` (pytorch-metric-learning trained on
/// the same grid): its `runs` array of `{loss, miner, seed, metrics, train_seconds}` or
/// `{loss, miner, seed, error}`, with `metrics` in dml's flat form.
pub fn read_reference(path: &Path) -> Result<ReferenceGrid> {
    let bad = |message: String| Error::Json {
        path: path.to_path_buf(),
        message: format!("{message} (expected the JSON that scripts/compare_pml.py --out writes)"),
    };
    let text = crate::checkpoint::read_text(path)?;
    #[derive(Deserialize)]
    struct File {
        runs: Vec<RefRun>,
    }
    #[derive(Deserialize)]
    struct RefRun {
        loss: String,
        miner: String,
        #[serde(flatten)]
        run: Run,
    }
    let file: File = serde_json::from_str(&text).map_err(|e| bad(e.to_string()))?;
    if file.runs.is_empty() {
        return Err(bad("no runs in it yet".to_owned()));
    }
    let mut report = CompareReport::default();
    for r in file.runs {
        report.cell_mut(&r.loss, &r.miner).runs.push(r.run);
    }
    Ok(ReferenceGrid {
        library: "pml".to_owned(),
        source: path.to_path_buf(),
        cells: report.cells,
    })
}

impl Cell {
    /// The spread of `score` over the runs that finished.
    pub fn spread(&self, score: Score) -> Option<Spread> {
        let v: Vec<f64> = self
            .runs
            .iter()
            .filter_map(|r| r.metrics.as_ref()?.get(score))
            .collect();
        Spread::of(&v)
    }
}

impl CompareReport {
    /// The scores every table row reports, in report order (those of the first finished run,
    /// else of a baseline).
    pub fn scores(&self) -> Vec<Score> {
        let first = self
            .cells
            .iter()
            .chain(self.reference.iter().flat_map(|r| &r.cells))
            .flat_map(|c| &c.runs)
            .find_map(|r| r.metrics.as_ref())
            .or_else(|| self.untrained.first().map(|u| &u.metrics))
            .or_else(|| self.raw_input.as_ref()?.metrics.as_ref());
        first.map_or_else(Vec::new, |m| {
            m.scores().into_iter().map(|(s, _)| s).collect()
        })
    }

    /// The spread of `score` of the untrained network over seeds.
    pub fn untrained_spread(&self, score: Score) -> Option<Spread> {
        let v: Vec<f64> = self
            .untrained
            .iter()
            .filter_map(|u| u.metrics.get(score))
            .collect();
        Spread::of(&v)
    }

    /// The grid as a markdown table in percent: the baselines first (raw input, frozen backbone,
    /// untrained network), then one row per (loss, miner); with several seeds each value is the mean
    /// followed by the (min–max) range.
    pub fn markdown(&self) -> String {
        let scores = self.scores();
        let mut s = String::from("| loss | miner |");
        for sc in &scores {
            s.push_str(&format!(" {} |", sc.label()));
        }
        s.push_str(" runs |\n|---|---|");
        for _ in &scores {
            s.push_str("---:|");
        }
        s.push_str("---:|\n");
        let cell =
            |v: Option<Spread>| v.map_or(" - |".to_owned(), |v| format!(" {} |", v.percent()));
        if let Some(raw) = &self.raw_input {
            s.push_str("| *raw input* | – |");
            for &sc in &scores {
                let v = raw.metrics.as_ref().and_then(|m| m.get(sc));
                s.push_str(&cell(v.and_then(|v| Spread::of(&[v]))));
            }
            s.push_str(" – |\n");
        }
        if let Some(frozen) = &self.frozen_backbone {
            s.push_str("| *frozen backbone* | – |");
            for &sc in &scores {
                s.push_str(&cell(frozen.get(sc).and_then(|v| Spread::of(&[v]))));
            }
            s.push_str(" – |\n");
        }
        if !self.untrained.is_empty() {
            s.push_str("| *untrained network* | – |");
            for &sc in &scores {
                s.push_str(&cell(self.untrained_spread(sc)));
            }
            s.push_str(&format!(" {} |\n", self.untrained.len()));
        }
        for c in &self.cells {
            let ok = c.runs.iter().filter(|r| r.metrics.is_some()).count();
            let miner = if ok < c.runs.len() {
                format!("{} ({} failed)", c.miner, c.runs.len() - ok)
            } else {
                c.miner.clone()
            };
            s.push_str(&format!("| {} | {} |", c.loss, miner));
            for &sc in &scores {
                s.push_str(&cell(c.spread(sc)));
            }
            s.push_str(&format!(" {ok} |\n"));
        }
        if let Some(r) = &self.reference {
            for c in &r.cells {
                let ok = c.runs.iter().filter(|r| r.metrics.is_some()).count();
                s.push_str(&format!("| {} ({}) | {} |", c.loss, r.library, c.miner));
                for &sc in &scores {
                    s.push_str(&cell(c.spread(sc)));
                }
                s.push_str(&format!(" {ok} |\n"));
            }
        }
        if let Some(why) = self.raw_input.as_ref().and_then(|r| r.skipped.as_ref()) {
            s.push_str(&format!("\nraw input not evaluated: {why}\n"));
        }
        for (c, r) in self.failures() {
            let error = r.error.as_deref().unwrap_or_default();
            s.push_str(&format!(
                "\n{} + {} (seed {}) failed: {error}\n",
                c.loss, c.miner, r.seed
            ));
        }
        s
    }

    /// The runs that failed, with their cells.
    pub fn failures(&self) -> impl Iterator<Item = (&Cell, &Run)> {
        self.cells
            .iter()
            .flat_map(|c| c.runs.iter().map(move |r| (c, r)))
            .filter(|(_, r)| r.error.is_some())
    }

    /// Reads a `compare.json` that [`run`] wrote.
    pub fn read(path: &Path) -> Result<CompareReport> {
        let text = crate::checkpoint::read_text(path)?;
        serde_json::from_str(&text).map_err(|e| Error::Json {
            path: path.to_path_buf(),
            message: format!("not a dml compare report: {e}"),
        })
    }

    /// Writes `compare.md`, `compare.json` and the charts of MAP@R (when computed) and R@1,
    /// `map_at_r.{png,svg}` and `recall_at_1.{png,svg}`, titled with `name`, into `out_dir`.
    pub fn write_all(&self, out_dir: &Path, name: &str) -> Result<()> {
        self.write(out_dir)?;
        let scores = self.scores();
        for (score, stem) in [
            (Score::MapAtR, "map_at_r"),
            (Score::RecallAt(1), "recall_at_1"),
        ] {
            if scores.contains(&score) {
                chart::compare_chart(
                    self,
                    score,
                    &format!("{name}: {} on the held-out classes", score.label()),
                    &out_dir.join(stem),
                )?;
            }
        }
        Ok(())
    }

    /// Whether the report holds a run of `loss` + `miner` with `seed` (finished or failed).
    pub fn has_run(&self, loss: &str, miner: &str, seed: u64) -> bool {
        self.cells
            .iter()
            .any(|c| c.loss == loss && c.miner == miner && c.runs.iter().any(|r| r.seed == seed))
    }

    /// Writes `compare.md` and `compare.json` into `out_dir`, atomically.
    fn write(&self, out_dir: &Path) -> Result<()> {
        crate::checkpoint::write_atomic(&out_dir.join("compare.md"), self.markdown().as_bytes())?;
        let json = serde_json::to_string_pretty(self).map_err(|e| Error::Json {
            path: out_dir.join("compare.json"),
            message: e.to_string(),
        })?;
        crate::checkpoint::write_atomic(&out_dir.join("compare.json"), json.as_bytes())
    }

    fn cell_mut(&mut self, loss: &str, miner: &str) -> &mut Cell {
        let i = match self
            .cells
            .iter()
            .position(|c| c.loss == loss && c.miner == miner)
        {
            Some(i) => i,
            None => {
                self.cells.push(Cell {
                    loss: loss.to_owned(),
                    miner: miner.to_owned(),
                    runs: Vec::new(),
                });
                self.cells.len() - 1
            }
        };
        &mut self.cells[i]
    }
}

/// The loss config of `kind`: the base's own when it is of that kind, else the kind's defaults.
pub fn loss_config(base: &Config, kind: &str) -> Result<LossConfig> {
    if base.loss.kind() == kind {
        return Ok(base.loss);
    }
    LossConfig::default_of(kind).ok_or_else(|| Error::ConfigParse {
        path: "--losses".to_owned(),
        message: format!(
            "unknown loss `{kind}`; the losses are {}",
            LossConfig::defaults()
                .map(|c| c.kind())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    })
}

/// The miner config of `kind`: the base's own when it is of that kind, else the kind's defaults
/// (a distance-weighted miner sized to the model's embeddings).
pub fn miner_config(base: &Config, kind: &str) -> Result<Option<MinerConfig>> {
    if kind == NO_MINER {
        return Ok(None);
    }
    if let Some(m) = &base.miner
        && m.kind() == kind
    {
        return Ok(Some(m.clone()));
    }
    let text = format!("kind = {kind:?}");
    toml::from_str(&text)
        .map(Some)
        .map_err(|e| Error::ConfigParse {
            path: "--miners".to_owned(),
            message: format!("`{kind}`: {}", e.to_string().trim_end()),
        })
}

/// Trains every (loss, miner) cell once per seed (seeds outer) and writes the table, the JSON,
/// the histogram plot and the charts into `out_dir`. What it is doing, and each run's
/// progress, goes to `observer` (lent to each run's trainer in turn).
pub fn run(
    base: &Config,
    losses: &[String],
    miners: &[String],
    seeds: &[u64],
    out_dir: &Path,
    interrupt: Option<Arc<AtomicBool>>,
    observer: &mut Box<dyn Observer>,
) -> Result<CompareReport> {
    let seeds: Vec<u64> = if seeds.is_empty() {
        vec![base.run.seed]
    } else {
        seeds.to_vec()
    };
    // Build every config first, so a typo in the last kind fails before hours of training.
    let mut grid = Vec::new();
    let mut skipped = Vec::new();
    for (si, &seed) in seeds.iter().enumerate() {
        for l in losses {
            for m in miners {
                let mut c = base.clone();
                c.loss = loss_config(base, l)?;
                c.miner = miner_config(base, m)?;
                // The proxy losses take no miner: they join the grid in its `none` column only.
                if c.miner.is_some() && !c.loss.uses_tuples() {
                    if si == 0 {
                        skipped.push(format!("{l} + {m}"));
                    }
                    continue;
                }
                c.run.name = format!("{l}-{m}");
                c.run.seed = seed;
                let dir = cell_dir(out_dir, l, m);
                c.run.output_dir = Some(if seeds.len() > 1 {
                    dir.join(format!("seed-{seed}"))
                } else {
                    dir
                });
                c.train.plots = false;
                c.validate()?;
                grid.push((l.clone(), m.clone(), seed, c));
            }
        }
    }
    if !skipped.is_empty() {
        observer.note(&format!(
            "compare: skipping {} (these losses take no miner; they train in the `{NO_MINER}` column)",
            skipped.join(", ")
        ));
    }
    if grid.is_empty() {
        return Err(Error::Config(crate::config::ConfigError::EmptyGrid));
    }
    let mut report = earlier_report(base, out_dir)?.unwrap_or_else(|| CompareReport {
        recall_at: base.eval.config.recall_at.clone(),
        epochs: base.train.epochs,
        ..CompareReport::default()
    });
    for &seed in &seeds {
        if !report.seeds.contains(&seed) {
            report.seeds.push(seed);
        }
    }
    let done = grid
        .iter()
        .filter(|(l, m, seed, _)| report.has_run(l, m, *seed))
        .count();
    if done > 0 {
        observer.note(&format!(
            "compare: {done} of the {} runs are already in {}; skipping them",
            grid.len(),
            out_dir.join("compare.json").display()
        ));
    }
    // Where each run's sampled negative distances go (read back for the histograms, so a grid
    // finished over several processes draws them all the same way).
    let negatives_files: Vec<(String, String, u64, PathBuf)> = grid
        .iter()
        .map(|(l, m, seed, c)| {
            (
                l.clone(),
                m.clone(),
                *seed,
                c.run.output_dir().join(NEGATIVES_FILE),
            )
        })
        .collect();
    std::fs::create_dir_all(out_dir).map_err(|source| Error::Io {
        path: out_dir.to_path_buf(),
        source,
    })?;
    let total = grid.len();
    for (i, (l, m, seed, mut c)) in grid.into_iter().enumerate() {
        if report.has_run(&l, &m, seed) {
            continue;
        }
        // Each baseline is evaluated once, by the first run that finds it missing: the
        // untrained network once per seed (the weights every cell of that seed starts from),
        // the raw input and the frozen backbone once for the grid.
        c.train.eval_before = !report.untrained.iter().any(|u| u.seed == seed);
        c.eval.raw_input = base.eval.raw_input && report.raw_input.is_none();
        c.eval.frozen_backbone = base.eval.frozen_backbone && report.frozen_backbone.is_none();
        let run_dir = c.run.output_dir();
        let checkpoint = run_dir.join(crate::trainer::files::CHECKPOINT);
        let resuming = checkpoint.is_file();
        observer.note(&format!(
            "compare [{}/{total}]: {} {l} loss with {m} miner, seed {seed}",
            i + 1,
            if resuming {
                "resuming (from its checkpoint)"
            } else {
                "training"
            }
        ));
        let failed = |report: &mut CompareReport, e: &Error, observer: &mut Box<dyn Observer>| {
            observer.note(&format!("compare: {l} + {m} (seed {seed}) failed: {e}"));
            report.cell_mut(&l, &m).runs.push(Run {
                seed,
                metrics: None,
                train_seconds: 0.0,
                error: Some(e.to_string()),
            });
            report.write(out_dir)
        };
        let built = if resuming {
            Trainer::resume(c)
        } else {
            Trainer::new(c)
        };
        let mut trainer = match built {
            Ok(t) => t,
            Err(e) => {
                failed(&mut report, &e, observer)?;
                continue;
            }
        };
        if let Some(flag) = &interrupt {
            trainer.set_interrupt(flag.clone());
        }
        if let Some(spread) = report
            .untrained
            .iter()
            .find(|u| u.seed == seed)
            .and_then(|u| u.spread)
        {
            trainer.set_untrained_spread(spread);
        }
        // The run reports to the grid's observer, and gives it back when it ends.
        trainer.set_observer(std::mem::replace(observer, Box::new(Silent)));
        let fitted = trainer.fit();
        *observer = trainer.set_observer(Box::new(Silent));
        let fitted = match fitted {
            Ok(r) => r,
            Err(e) => {
                failed(&mut report, &e, observer)?;
                continue;
            }
        };
        if fitted.interrupted {
            report.write(out_dir)?;
            return Err(Error::Interrupted(format!(
                "the runs finished so far are in {} and their folders",
                out_dir.join("compare.md").display()
            )));
        }
        if let Some(raw) = fitted.raw_input {
            report.raw_input = Some(raw);
        }
        if let Some(frozen) = fitted.frozen_backbone {
            report.frozen_backbone = Some(frozen);
        }
        if let Some(m0) = fitted.initial_metrics
            && !report.untrained.iter().any(|u| u.seed == seed)
        {
            report.untrained.push(Untrained {
                seed,
                metrics: m0,
                spread: trainer.untrained_spread(),
            });
        }
        let negatives = trainer.last_negative_distances();
        if !negatives.is_empty() {
            write_negatives(&run_dir.join(NEGATIVES_FILE), negatives)?;
        }
        report.cell_mut(&l, &m).runs.push(Run {
            seed,
            metrics: fitted.final_metrics,
            train_seconds: fitted.train_seconds,
            error: None,
        });
        report.write(out_dir)?;
    }
    // One histogram per miner: the run of the grid's first loss and seed that left its
    // distances (runs of an older version left none; a grid without any keeps its old chart).
    let mut histograms: Vec<(String, Vec<f32>)> = Vec::new();
    for m in miners {
        let found = negatives_files
            .iter()
            .filter(|(_, miner, _, _)| miner == m)
            .find_map(|(l, _, seed, path)| {
                read_negatives(path).map(|d| (format!("{m} ({l} loss, seed {seed})"), d))
            });
        histograms.extend(found);
    }
    if !histograms.is_empty() {
        crate::plots::distance_histograms(
            &histograms,
            base.model.embedding_dim() as usize,
            "negatives sampled in the last epoch",
            &out_dir.join("negative_distances"),
        )?;
    }
    report.write_all(out_dir, &base.run.name)?;
    Ok(report)
}

/// A run's sampled negative distances of its last epoch, in its folder (`.npy`, float32).
const NEGATIVES_FILE: &str = "negative_distances.npy";

fn write_negatives(path: &Path, distances: &[f32]) -> Result<()> {
    let tmp = path.with_extension("npy.tmp");
    ndarray_npy::write_npy(&tmp, &ndarray::ArrayView1::from(distances))
        .map_err(std::io::Error::other)
        .and_then(|()| std::fs::rename(&tmp, path))
        .map_err(|source| Error::Io {
            path: path.to_path_buf(),
            source,
        })
}

/// The distances a run left, or `None` when it left none (or the file cannot be read: it only
/// feeds a chart).
fn read_negatives(path: &Path) -> Option<Vec<f32>> {
    let a: ndarray::Array1<f32> = ndarray_npy::read_npy(path).ok()?;
    Some(a.to_vec())
}

/// The `compare.json` an earlier `dml compare` left in `out_dir`, if any, checked to be for the
/// same number of epochs and Recall@K as `base`.
fn earlier_report(base: &Config, out_dir: &Path) -> Result<Option<CompareReport>> {
    let path = out_dir.join("compare.json");
    if !path.is_file() {
        return Ok(None);
    }
    let report = CompareReport::read(&path)?;
    if report.epochs != base.train.epochs || report.recall_at != base.eval.config.recall_at {
        return Err(Error::Json {
            path,
            message: format!(
                "it holds a grid of {} epochs with Recall@{:?}, this one is {} epochs with \
                 Recall@{:?}; continue it with the same settings, or give another --output-dir",
                report.epochs, report.recall_at, base.train.epochs, base.eval.config.recall_at
            ),
        });
    }
    // The table is redone from the runs; the reference library's cells are added on demand.
    Ok(Some(CompareReport {
        reference: None,
        ..report
    }))
}

/// The folder of one cell.
pub fn cell_dir(out_dir: &Path, loss: &str, miner: &str) -> PathBuf {
    out_dir.join(format!("{loss}-{miner}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metrics(r1: f64) -> Metrics {
        Metrics {
            recall_at: vec![(1, r1)],
            precision_at_1: r1,
            r_precision: None,
            map_at_r: None,
            nmi: Some(0.5),
            ami: None,
            n_queries: 10,
            n_queries_without_positive: 0,
            ..Metrics::default()
        }
    }

    fn run(seed: u64, r1: Option<f64>) -> Run {
        Run {
            seed,
            metrics: r1.map(metrics),
            train_seconds: 1.0,
            error: r1
                .is_none()
                .then(|| "non-finite loss at epoch 1".to_owned()),
        }
    }

    #[test]
    fn a_failed_run_is_marked_and_explained_and_the_rest_are_kept() {
        let report = CompareReport {
            recall_at: vec![1],
            epochs: 1,
            seeds: vec![0, 1],
            raw_input: None,
            untrained: Vec::new(),
            frozen_backbone: None,
            reference: None,
            cells: vec![
                Cell {
                    loss: "margin".into(),
                    miner: "uniform".into(),
                    runs: vec![run(0, Some(0.875)), run(1, Some(0.625))],
                },
                Cell {
                    loss: "triplet".into(),
                    miner: "batch_hard".into(),
                    runs: vec![run(0, Some(0.5)), run(1, None)],
                },
            ],
        };
        let md = report.markdown();
        assert!(
            md.contains(
                "| margin | uniform | 75.0 (62.5–87.5) | 75.0 (62.5–87.5) | 50.0 (50.0–50.0) | 2 |"
            ),
            "{md}"
        );
        // The failed seed is left out of the mean; the row says so.
        assert!(
            md.contains("| triplet | batch_hard (1 failed) | 50.0 | 50.0 | 50.0 | 1 |"),
            "{md}"
        );
        assert!(
            md.contains("triplet + batch_hard (seed 1) failed: non-finite loss at epoch 1"),
            "{md}"
        );
        let failed: Vec<_> = report
            .failures()
            .map(|(c, r)| (c.miner.as_str(), r.seed))
            .collect();
        assert_eq!(failed, [("batch_hard", 1)]);

        let dir = tempfile::tempdir().expect("tempdir");
        report.write(dir.path()).expect("write");
        let json = std::fs::read_to_string(dir.path().join("compare.json")).expect("json");
        let back: CompareReport = serde_json::from_str(&json).expect("parse");
        assert_eq!(back, report);
        // A successful run's JSON has no `error` key at all.
        assert_eq!(json.matches("\"error\"").count(), 1);
    }

    #[test]
    fn reference_runs_are_grouped_into_cells_and_tabulated_beside_dml() {
        // The layout scripts/compare_pml.py writes: extra keys (settings, summary) ignored,
        // runs grouped by (loss, miner) in order of appearance, a failed run kept.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pml.json");
        let m = |r1: f64, map: f64| {
            format!(
                r#"{{"recall_at_1": {r1}, "precision_at_1": {r1}, "r_precision": 0.5, "map_at_r": {map}, "nmi": 0.25}}"#
            )
        };
        let text = format!(
            r#"{{"settings": {{"steps": 10}}, "summary": {{}}, "runs": [
                {{"loss": "contrastive", "miner": "none", "seed": 0, "metrics": {}, "train_seconds": 2.0}},
                {{"loss": "triplet", "miner": "none", "seed": 0, "error": "RuntimeError: boom"}},
                {{"loss": "contrastive", "miner": "none", "seed": 1, "metrics": {}, "train_seconds": 4.0}}
            ]}}"#,
            m(0.75, 0.25),
            m(0.85, 0.5)
        );
        std::fs::write(&path, text).unwrap();
        let r = read_reference(&path).unwrap();
        assert_eq!(r.cells.len(), 2);
        assert_eq!(r.cells[0].runs.len(), 2);
        let map = r.cells[0].spread(Score::MapAtR).unwrap();
        assert_eq!((map.mean, map.min, map.max, map.n), (0.375, 0.25, 0.5, 2));
        assert_eq!(
            r.cells[1].runs[0].error.as_deref(),
            Some("RuntimeError: boom")
        );

        let report = CompareReport {
            recall_at: vec![1],
            epochs: 1,
            seeds: vec![0, 1],
            reference: Some(r),
            ..CompareReport::default()
        };
        let md = report.markdown();
        // R@1 80.0 = mean of 75 and 85; MAP@R 37.5 (25.0–50.0); two finished runs.
        assert!(
            md.contains(
                "| contrastive (pml) | none | 80.0 (75.0–85.0) | 80.0 (75.0–85.0) | 50.0 (50.0–50.0) | 37.5 (25.0–50.0) | 25.0 (25.0–25.0) | 2 |"
            ),
            "{md}"
        );
        assert!(md.contains("| triplet (pml) | none |"), "{md}");

        std::fs::write(&path, r#"{"runs": []}"#).unwrap();
        let err = read_reference(&path).unwrap_err().to_string();
        assert!(
            err.contains("no runs") && err.contains("compare_pml.py"),
            "{err}"
        );
    }
}
