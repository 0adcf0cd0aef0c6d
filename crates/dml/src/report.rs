//! [`TrainReport`]: what a finished or interrupted run reports, in `report.json` and on the
//! terminal (its `Display`: the baselines and the trained network side by side).

use std::path::PathBuf;

use dml_eval::Metrics;
use serde::{Deserialize, Serialize};

use crate::state::RawInput;

/// What a finished (or interrupted) run reports.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainReport {
    /// Epochs completed.
    pub epochs: u64,
    /// The raw-input baseline on the held-out classes (`None` with `eval.raw_input = false`).
    #[serde(default)]
    pub raw_input: Option<RawInput>,
    /// The frozen-backbone baseline of a pretrained or TorchScript backbone: its pooled features
    /// before training, on the held-out classes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub frozen_backbone: Option<Metrics>,
    /// Metrics of the untrained network on the held-out classes (epoch 0), when evaluated.
    pub initial_metrics: Option<Metrics>,
    /// Metrics after the last evaluated epoch.
    pub final_metrics: Option<Metrics>,
    /// The output folder.
    pub output_dir: PathBuf,
    /// Plot files written.
    pub plots: Vec<PathBuf>,
    /// Seconds spent training (this process), evaluation excluded.
    pub train_seconds: f64,
    /// Whether Ctrl-C stopped the run early (a checkpoint was written).
    pub interrupted: bool,
    /// Batches skipped because a value was not finite (`train.on_non_finite = "skip_batch"`).
    #[serde(default)]
    pub skipped_batches: u64,
    /// Set when the held-out embeddings collapsed towards one point, with the numbers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub collapse: Option<String>,
    /// Image files left out because they could not be read or decoded
    /// (`data.skip_unreadable = true`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unreadable_files: Vec<PathBuf>,
}

impl std::fmt::Display for TrainReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.interrupted {
            writeln!(
                f,
                "interrupted after {} epochs; checkpoint saved (continue with `dml train \
                 --resume` and the same config)",
                self.epochs
            )?;
        } else {
            writeln!(
                f,
                "trained {} epochs in {:.1} s",
                self.epochs, self.train_seconds
            )?;
        }
        if let Some(c) = &self.collapse {
            writeln!(f, "warning: {c}")?;
        }
        if self.skipped_batches > 0 {
            writeln!(
                f,
                "skipped {} batches whose embeddings, loss or gradient were not finite",
                self.skipped_batches
            )?;
        }
        if let Some(first) = self.unreadable_files.first() {
            writeln!(
                f,
                "left out {} unreadable image file{} (data.skip_unreadable), first {}",
                self.unreadable_files.len(),
                if self.unreadable_files.len() == 1 {
                    ""
                } else {
                    "s"
                },
                first.display()
            )?;
        }
        if let Some(fin) = &self.final_metrics {
            let raw = self.raw_input.as_ref().and_then(|r| r.metrics.as_ref());
            let column = |m: Option<&Metrics>, score| {
                m.and_then(|m| m.get(score))
                    .map_or(format!("{:>9}", "-"), |v| format!("{v:9.4}"))
            };
            let backbone = self.frozen_backbone.as_ref();
            if backbone.is_some() {
                writeln!(
                    f,
                    "held-out classes:   raw input   backbone  untrained    trained"
                )?;
            } else {
                writeln!(f, "held-out classes:   raw input  untrained    trained")?;
            }
            for (score, value) in fin.scores() {
                let frozen = match backbone {
                    Some(m) => format!("{}  ", column(Some(m), score)),
                    None => String::new(),
                };
                writeln!(
                    f,
                    "  {:<16} {}  {frozen}{}  {value:9.4}",
                    score.key(),
                    column(raw, score),
                    column(self.initial_metrics.as_ref(), score),
                )?;
            }
            if backbone.is_some() {
                writeln!(
                    f,
                    "backbone: the pretrained backbone's own pooled features, frozen; untrained: \
                     with the new head, before training"
                )?;
            }
            if let Some(why) = self.raw_input.as_ref().and_then(|r| r.skipped.as_ref()) {
                writeln!(f, "raw input not evaluated: {why}")?;
            }
        }
        writeln!(f, "output: {}", self.output_dir.display())?;
        for p in &self.plots {
            writeln!(f, "  plot: {}", p.display())?;
        }
        Ok(())
    }
}
