//! The metrics log: one JSON object per line (`metrics.jsonl`), appended after every epoch.
//!
//! Each line is an [`EpochRecord`]: `{"epoch":3,"loss":0.12,"tuples_per_batch":…,"lr_factor":1.0,
//! "train_seconds":…,"metrics":{"recall_at_1":0.91,…}}`, except the first line of a run that
//! computed the raw-input baseline: `{"baseline":"raw_input","metrics":{…}}` (or
//! `{"baseline":"raw_input","skipped":"why"}`), and for a pretrained backbone the next,
//! `{"baseline":"frozen_backbone","metrics":{…}}`; [`MetricsLog::read`] leaves baseline lines out. JSON lines can be read while the run is
//! going (`tail -f`, `pandas.read_json(path, lines=True)`), and a crash loses at most the line
//! being written. On resumption the log is rewritten from the checkpoint's history, so lines of
//! epochs the checkpoint does not cover (written after it, then lost to the interruption) do not
//! linger twice.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::Serialize;

use dml_eval::Metrics;

use crate::checkpoint::write_atomic;
use crate::state::{EpochRecord, RawInput};
use crate::{Error, Result};

/// An append-only JSON-lines file of [`EpochRecord`]s.
#[derive(Debug)]
pub struct MetricsLog {
    path: PathBuf,
}

impl MetricsLog {
    /// Starts the log at `path` with the baselines (when known) and exactly the records of
    /// `history` (none for a fresh run).
    pub fn create(
        path: &Path,
        raw_input: Option<&RawInput>,
        frozen_backbone: Option<&Metrics>,
        history: &[EpochRecord],
    ) -> Result<MetricsLog> {
        let mut text = String::new();
        if let Some(b) = raw_input {
            text.push_str(&line(path, &baseline_line(b))?);
        }
        if let Some(m) = frozen_backbone {
            text.push_str(&line(path, &frozen_backbone_line(m))?);
        }
        for r in history {
            text.push_str(&line(path, r)?);
        }
        write_atomic(path, text.as_bytes())?;
        Ok(MetricsLog {
            path: path.to_path_buf(),
        })
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends the raw-input baseline as a line and flushes it.
    pub fn append_raw_input(&mut self, raw_input: &RawInput) -> Result<()> {
        self.append_line(&baseline_line(raw_input))
    }

    /// Appends the frozen-backbone baseline as a line and flushes it.
    pub fn append_frozen_backbone(&mut self, metrics: &Metrics) -> Result<()> {
        self.append_line(&frozen_backbone_line(metrics))
    }

    /// Appends one record as a line and flushes it.
    pub fn append(&mut self, record: &EpochRecord) -> Result<()> {
        self.append_line(record)
    }

    fn append_line<T: Serialize>(&mut self, record: &T) -> Result<()> {
        let io = |source| Error::Io {
            path: self.path.clone(),
            source,
        };
        let text = line(&self.path, record)?;
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(&self.path)
            .map_err(io)?;
        f.write_all(text.as_bytes()).map_err(io)?;
        f.flush().map_err(io)
    }

    /// Reads every epoch record of a log file (baseline lines are left out).
    pub fn read(path: &Path) -> Result<Vec<EpochRecord>> {
        let text = crate::checkpoint::read_text(path)?;
        text.lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty() && !l.starts_with("{\"baseline\""))
            .map(|(i, l)| {
                serde_json::from_str(l).map_err(|e| Error::Json {
                    path: path.to_path_buf(),
                    message: format!("line {}: {e}", i + 1),
                })
            })
            .collect()
    }
}

#[derive(Serialize)]
struct BaselineLine<'a> {
    baseline: &'static str,
    #[serde(flatten)]
    raw_input: &'a RawInput,
}

fn baseline_line(raw_input: &RawInput) -> BaselineLine<'_> {
    BaselineLine {
        baseline: "raw_input",
        raw_input,
    }
}

#[derive(Serialize)]
struct FrozenBackboneLine<'a> {
    baseline: &'static str,
    metrics: &'a Metrics,
}

fn frozen_backbone_line(metrics: &Metrics) -> FrozenBackboneLine<'_> {
    FrozenBackboneLine {
        baseline: "frozen_backbone",
        metrics,
    }
}

fn line<T: Serialize>(path: &Path, r: &T) -> Result<String> {
    let mut s = serde_json::to_string(r).map_err(|e| Error::Json {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    s.push('\n');
    Ok(s)
}
