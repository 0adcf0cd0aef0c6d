//! `dml compare`: the losses × miners grid of "Sampling Matters in Deep Embedding Learning"
//! (Wu et al., 2017), trained from one base config.
//!
//! Each cell replaces the base config's `[loss]` and `[miner]` (keeping the base's parameters
//! when the kind is the base's own, the kind's defaults otherwise; a distance-weighted miner is
//! sized to the model's embeddings) and trains in `<out>/<loss>-<miner>/` with the same seed, so
//! every cell sees the same initial weights and the same batches. The table (`compare.md`), the
//! raw numbers (`compare.json`) and one histogram of sampled negative distances per miner
//! (`negative_distances.{png,svg}`, from the first loss's run) are written to `<out>`.
//!
//! The table and the JSON are rewritten after every cell, so a long grid that is stopped keeps
//! what it finished; a cell that fails (a non-finite loss, say) is recorded with its error and the
//! grid goes on: one bad combination must not cost the hours spent on the others.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use dml_losses::LossConfig;
use dml_sampling::MinerConfig;
use serde::{Deserialize, Serialize};

use crate::config::Config;
use crate::trainer::Trainer;
use crate::{Error, Result};

/// One cell of the grid.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Cell {
    /// The loss kind.
    pub loss: String,
    /// The miner kind.
    pub miner: String,
    /// Held-out metrics after the last epoch.
    pub metrics: BTreeMap<String, f64>,
    /// Seconds of training.
    pub train_seconds: f64,
    /// Why the cell failed, if it did (its metrics are then empty).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The whole grid.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CompareReport {
    /// The K of Recall@K, in order.
    pub recall_at: Vec<usize>,
    /// Epochs each cell trained.
    pub epochs: u64,
    /// The cells, losses major.
    pub cells: Vec<Cell>,
}

impl CompareReport {
    /// The grid as a markdown table: one row per (loss, miner), Recall@K and NMI in percent.
    pub fn markdown(&self) -> String {
        let mut s = String::from("| loss | miner |");
        for k in &self.recall_at {
            s.push_str(&format!(" R@{k} |"));
        }
        s.push_str(" NMI |\n|---|---|");
        for _ in &self.recall_at {
            s.push_str("---:|");
        }
        s.push_str("---:|\n");
        for c in &self.cells {
            let miner = match &c.error {
                Some(_) => format!("{} (failed)", c.miner),
                None => c.miner.clone(),
            };
            s.push_str(&format!("| {} | {} |", c.loss, miner));
            for k in &self.recall_at {
                match c.metrics.get(&format!("recall_at_{k}")) {
                    Some(v) => s.push_str(&format!(" {:.1} |", 100.0 * v)),
                    None => s.push_str(" - |"),
                }
            }
            match c.metrics.get("nmi") {
                Some(v) => s.push_str(&format!(" {:.1} |\n", 100.0 * v)),
                None => s.push_str(" - |\n"),
            }
        }
        for c in self.cells.iter().filter(|c| c.error.is_some()) {
            let error = c.error.as_deref().unwrap_or_default();
            s.push_str(&format!("\n{} + {} failed: {error}\n", c.loss, c.miner));
        }
        s
    }

    /// The cells that failed.
    pub fn failures(&self) -> impl Iterator<Item = &Cell> {
        self.cells.iter().filter(|c| c.error.is_some())
    }

    /// Writes `compare.md` and `compare.json` into `out_dir`, atomically.
    fn write(&self, out_dir: &Path) -> Result<()> {
        crate::checkpoint::write_atomic(&out_dir.join("compare.md"), self.markdown().as_bytes())?;
        let json = serde_json::to_string_pretty(self).map_err(|e| Error::Checkpoint {
            path: out_dir.join("compare.json"),
            message: e.to_string(),
        })?;
        crate::checkpoint::write_atomic(&out_dir.join("compare.json"), json.as_bytes())
    }
}

/// The loss config of `kind`: the base's own when it is of that kind, else the kind's defaults.
pub fn loss_config(base: &Config, kind: &str) -> Result<LossConfig> {
    if base.loss.name() == kind {
        return Ok(base.loss);
    }
    toml::from_str(&format!("kind = {kind:?}")).map_err(|e| Error::ConfigParse {
        path: "--losses".to_owned(),
        message: format!("`{kind}`: {}", e.to_string().trim_end()),
    })
}

/// The miner config of `kind`: the base's own when it is of that kind, else the kind's defaults
/// (a distance-weighted miner sized to the model's embeddings).
pub fn miner_config(base: &Config, kind: &str) -> Result<MinerConfig> {
    if base.miner.kind() == kind {
        return Ok(base.miner.clone());
    }
    let text = if kind == "distance_weighted" {
        format!(
            "kind = {kind:?}\nembedding_dim = {}",
            base.model.embedding_dim()
        )
    } else {
        format!("kind = {kind:?}")
    };
    toml::from_str(&text).map_err(|e| Error::ConfigParse {
        path: "--miners".to_owned(),
        message: format!("`{kind}`: {}", e.to_string().trim_end()),
    })
}

/// Trains every (loss, miner) cell and writes the table, the JSON and the histogram plot into
/// `out_dir`.
pub fn run(
    base: &Config,
    losses: &[String],
    miners: &[String],
    out_dir: &Path,
    interrupt: Option<Arc<AtomicBool>>,
) -> Result<CompareReport> {
    // Build every config first, so a typo in the last kind fails before hours of training.
    let mut grid = Vec::new();
    for l in losses {
        for m in miners {
            let mut c = base.clone();
            c.loss = loss_config(base, l)?;
            c.miner = miner_config(base, m)?;
            c.run.name = format!("{l}-{m}");
            c.run.output_dir = Some(cell_dir(out_dir, l, m));
            c.train.plots = false;
            c.train.eval_before = false;
            c.validate()?;
            grid.push((l.clone(), m.clone(), c));
        }
    }
    let mut report = CompareReport {
        recall_at: base.eval.recall_at.clone(),
        epochs: base.train.epochs,
        cells: Vec::new(),
    };
    let mut histograms: Vec<(String, Vec<f32>)> = Vec::new();
    std::fs::create_dir_all(out_dir).map_err(|e| Error::Checkpoint {
        path: out_dir.to_path_buf(),
        message: e.to_string(),
    })?;
    for (l, m, c) in grid {
        eprintln!("compare: training {l} loss with {m} miner");
        let mut trainer = match Trainer::new(c) {
            Ok(t) => t,
            Err(e) => {
                eprintln!("compare: {l} + {m} failed: {e}");
                report.cells.push(Cell::failed(l, m, &e));
                report.write(out_dir)?;
                continue;
            }
        };
        if let Some(flag) = &interrupt {
            trainer.set_interrupt(flag.clone());
        }
        let fitted = match trainer.fit() {
            Ok(r) => r,
            Err(e) => {
                eprintln!("compare: {l} + {m} failed: {e}");
                report.cells.push(Cell::failed(l, m, &e));
                report.write(out_dir)?;
                continue;
            }
        };
        if fitted.interrupted {
            report.write(out_dir)?;
            return Err(Error::Checkpoint {
                path: trainer.output_dir().to_path_buf(),
                message:
                    "interrupted; the cells trained so far are in compare.md and their folders"
                        .to_owned(),
            });
        }
        if !histograms.iter().any(|(name, _)| *name == m) {
            histograms.push((m.clone(), trainer.last_negative_distances().to_vec()));
        }
        report.cells.push(Cell {
            loss: l,
            miner: m,
            metrics: fitted.final_metrics.unwrap_or_default(),
            train_seconds: fitted.train_seconds,
            error: None,
        });
        report.write(out_dir)?;
    }
    let first_loss = losses.first().map(String::as_str).unwrap_or("");
    crate::plots::distance_histograms(
        &histograms,
        base.model.embedding_dim() as usize,
        &format!("negatives sampled in the last epoch ({first_loss} loss)"),
        &out_dir.join("negative_distances"),
    )?;
    Ok(report)
}

impl Cell {
    fn failed(loss: String, miner: String, error: &Error) -> Self {
        Cell {
            loss,
            miner,
            metrics: BTreeMap::new(),
            train_seconds: 0.0,
            error: Some(error.to_string()),
        }
    }
}

/// The folder of one cell.
pub fn cell_dir(out_dir: &Path, loss: &str, miner: &str) -> PathBuf {
    out_dir.join(format!("{loss}-{miner}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cell(loss: &str, miner: &str, r1: Option<f64>, error: Option<&str>) -> Cell {
        Cell {
            loss: loss.to_owned(),
            miner: miner.to_owned(),
            metrics: r1
                .map(|v| BTreeMap::from([("recall_at_1".to_owned(), v), ("nmi".to_owned(), 0.5)]))
                .unwrap_or_default(),
            train_seconds: 1.0,
            error: error.map(str::to_owned),
        }
    }

    #[test]
    fn a_failed_cell_is_marked_and_explained_and_the_rest_are_kept() {
        let report = CompareReport {
            recall_at: vec![1],
            epochs: 1,
            cells: vec![
                cell("margin", "uniform", Some(0.875), None),
                cell(
                    "triplet",
                    "batch_hard",
                    None,
                    Some("non-finite loss at epoch 1"),
                ),
            ],
        };
        let md = report.markdown();
        assert!(md.contains("| margin | uniform | 87.5 | 50.0 |"), "{md}");
        assert!(
            md.contains("| triplet | batch_hard (failed) | - | - |"),
            "{md}"
        );
        assert!(
            md.contains("triplet + batch_hard failed: non-finite loss at epoch 1"),
            "{md}"
        );
        let failed: Vec<_> = report.failures().map(|c| c.miner.as_str()).collect();
        assert_eq!(failed, ["batch_hard"]);

        let dir = tempfile::tempdir().expect("tempdir");
        report.write(dir.path()).expect("write");
        let json = std::fs::read_to_string(dir.path().join("compare.json")).expect("json");
        let back: CompareReport = serde_json::from_str(&json).expect("parse");
        assert_eq!(back, report);
        // A successful cell's JSON has no `error` key at all.
        assert_eq!(json.matches("\"error\"").count(), 1);
    }
}
