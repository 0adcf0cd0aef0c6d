//! What a run reports while it goes, for a front end to show: an [`Observer`].
//!
//! The library prints nothing itself. [`Trainer`](crate::Trainer), [`compare::run`] and
//! [`TrainedModel`](crate::embed::TrainedModel) tell their observer about warnings, the progress
//! of an epoch and each finished epoch; the `dml` binary's observer draws a progress bar at a
//! terminal and prints plain lines elsewhere, [`LogLines`] (the default) prints the plain lines,
//! [`Silent`] nothing, and a binding forwards them wherever its users look.
//!
//! [`compare::run`]: crate::compare::run

use dml_eval::Score;

use crate::state::EpochRecord;

/// Receives what a run reports. Every method has a default that does nothing, so an observer
/// implements what it shows.
pub trait Observer: Send {
    /// A warning: training classes the sampler leaves out, unreadable files, held-out
    /// embeddings that collapsed.
    fn warning(&mut self, message: &str) {
        let _ = message;
    }

    /// A note on what a long command is doing (`dml compare`'s cells).
    fn note(&mut self, message: &str) {
        let _ = message;
    }

    /// An epoch starts (or resumes): epoch `epoch` of `epochs` (1-based), `n_batches` batches,
    /// `done` of them done already.
    fn epoch_started(&mut self, epoch: u64, epochs: u64, n_batches: u64, done: u64) {
        let _ = (epoch, epochs, n_batches, done);
    }

    /// A batch of the current epoch is done, with its loss (NaN: left out) and the training
    /// items per second so far.
    fn batch_done(&mut self, loss: f64, items_per_second: f64) {
        let _ = (loss, items_per_second);
    }

    /// The current epoch's batches are done (its evaluation follows, when due).
    fn batches_finished(&mut self) {}

    /// An epoch is finished: its record (loss, and the held-out scores when evaluated).
    fn epoch_finished(&mut self, record: &EpochRecord, epochs: u64) {
        let _ = (record, epochs);
    }
}

/// An observer shared by `&self` methods (an embedding reports unreadable files without
/// needing `&mut`): the one place the library hands reports on.
pub(crate) struct Reporter(std::sync::Mutex<Box<dyn Observer>>);

impl std::fmt::Debug for Reporter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Reporter")
    }
}

impl Reporter {
    pub(crate) fn new(observer: Box<dyn Observer>) -> Reporter {
        Reporter(std::sync::Mutex::new(observer))
    }

    /// The observer, for a call or two.
    pub(crate) fn get(&self) -> std::sync::MutexGuard<'_, Box<dyn Observer>> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Replaces the observer, returning the previous one.
    pub(crate) fn replace(&mut self, observer: Box<dyn Observer>) -> Box<dyn Observer> {
        let slot = self
            .0
            .get_mut()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        std::mem::replace(slot, observer)
    }
}

/// Reports nothing.
#[derive(Debug, Clone, Copy, Default)]
pub struct Silent;

impl Observer for Silent {}

/// Prints warnings, notes and one line per finished epoch on standard error: what a log file,
/// CI or a batch job wants to see.
#[derive(Debug, Clone, Copy, Default)]
pub struct LogLines;

impl Observer for LogLines {
    fn warning(&mut self, message: &str) {
        eprintln!("warning: {message}");
    }

    fn note(&mut self, message: &str) {
        eprintln!("{message}");
    }

    fn epoch_finished(&mut self, record: &EpochRecord, epochs: u64) {
        eprintln!("{}", epoch_line(record, epochs));
    }
}

/// `baseline frozen backbone: held-out P@1 0.1020 MAP@R 0.0467, 95.3 s`: the note a run gives
/// when a baseline's evaluation is done (`not computed` when it was skipped).
pub fn baseline_line(what: &str, metrics: Option<&dml_eval::Metrics>, seconds: f64) -> String {
    let mut line = format!("baseline {what}:");
    match metrics {
        Some(m) => {
            line.push_str(" held-out");
            push_scores(&mut line, m);
        }
        None => line.push_str(" not computed"),
    }
    line.push_str(&format!(", {seconds:.1} s"));
    line
}

fn push_scores(line: &mut String, m: &dml_eval::Metrics) {
    for score in [Score::PrecisionAt1, Score::MapAtR] {
        if let Some(v) = m.get(score) {
            line.push_str(&format!(" {} {v:.4}", score.label()));
        }
    }
}

/// `epoch 3/10: loss 0.1234, 5.2 s, held-out P@1 0.9000 MAP@R 0.5000`: the line [`LogLines`]
/// prints for a finished epoch.
pub fn epoch_line(record: &EpochRecord, epochs: u64) -> String {
    let mut line = format!(
        "epoch {}/{epochs}: loss {:.4}, {:.1} s",
        record.epoch,
        record.loss.unwrap_or(f64::NAN),
        record.train_seconds
    );
    if let Some(m) = &record.metrics {
        line.push_str(", held-out");
        push_scores(&mut line, m);
    }
    line
}
