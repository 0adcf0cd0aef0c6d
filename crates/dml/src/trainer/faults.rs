//! What the training loop does when something goes wrong: values that are not finite, weights
//! that must not be written, held-out embeddings that collapse, classes the sampler leaves out,
//! files that cannot be read.

use std::path::PathBuf;

use ndarray::ArrayView2;
use tch::Tensor;

use super::Trainer;
use crate::config::OnNonFinite;
use crate::state::EpochRecord;
use crate::{Error, Result};

/// What was not finite in a training step.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum NonFinite {
    /// The network's output.
    Embeddings,
    /// The loss, with its value.
    Loss(f64),
    /// The gradient of the named variable.
    Gradient(String),
}

impl std::fmt::Display for NonFinite {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NonFinite::Embeddings => f.write_str("the batch's embeddings (the network's output)"),
            NonFinite::Loss(v) => write!(f, "the loss ({v})"),
            NonFinite::Gradient(name) => write!(f, "the gradient of `{name}`"),
        }
    }
}

/// What to try when training produces values that are not finite.
pub(super) const NON_FINITE_HINT: &str = "lower optimizer.lr (and loss_lr), keep model.normalize = true, or \
     set train.on_non_finite = \"skip_batch\" to skip such batches; the last checkpoint on disk is \
     the last good state";

/// The same in `skip_batch` mode, where skipping has not helped.
pub(super) const NON_FINITE_SKIP_HINT: &str = "skipping batches cannot help once the weights or the whole \
     network's output are not finite: lower optimizer.lr (and loss_lr) or keep model.normalize = \
     true; the last checkpoint on disk is the last good state";

/// Held-out embeddings whose mean pairwise distance falls below this fraction of the reference
/// (the untrained network's) have collapsed.
const COLLAPSE_FRACTION: f64 = 0.05;
/// ... or below this distance outright.
const COLLAPSE_ABSOLUTE: f64 = 1e-3;

/// The warning when training classes are left out of every batch because they have a single
/// item (`classes`, as the sampler reports them) while each batch takes `k ≥ 2` per class.
pub(super) fn excluded_classes_warning(classes: &[u32], k: usize) -> Option<String> {
    const SHOWN: usize = 10;
    if classes.is_empty() {
        return None;
    }
    let mut list: Vec<String> = classes.iter().take(SHOWN).map(u32::to_string).collect();
    if classes.len() > SHOWN {
        list.push(format!("… ({} more)", classes.len() - SHOWN));
    }
    Some(format!(
        "{} training class{} ha{} a single item and {} left out of every batch (with batch.k = {k}, \
         a class needs 2 items to form a positive pair): class{} {}",
        classes.len(),
        if classes.len() == 1 { "" } else { "es" },
        if classes.len() == 1 { "s" } else { "ve" },
        if classes.len() == 1 { "is" } else { "are" },
        if classes.len() == 1 { "" } else { "es" },
        list.join(", ")
    ))
}

/// The warning for `record` when its held-out embeddings have collapsed: their mean pairwise
/// distance is below 5 % of the first one in `history` (the untrained network's), else of
/// `untrained` (the untrained network's spread measured by another run of the same seed),
/// else of the first evaluation's, or below 1e-3 outright.
fn collapse_warning(
    history: &[EpochRecord],
    record: &EpochRecord,
    untrained: Option<f64>,
) -> Option<String> {
    let spread = record.spread?;
    let first = history.iter().find_map(|r| r.spread.map(|s| (r.epoch, s)));
    let reference = match (first, untrained) {
        (Some((0, s)), _) => Some((0, s)),
        (_, Some(s)) => Some((0, s)),
        (first, None) => first,
    };
    let collapsed = match reference {
        Some((_, r)) => spread < COLLAPSE_FRACTION * r,
        None => false,
    } || spread < COLLAPSE_ABSOLUTE;
    collapsed.then(|| {
        let against = reference.map_or(String::new(), |(e, r)| {
            if e == 0 {
                format!(" against {r:.4} for the untrained network")
            } else {
                format!(" against {r:.4} after epoch {e}")
            }
        });
        format!(
            "the held-out embeddings have collapsed after epoch {}: their mean pairwise distance is {spread:.2e}{against}; every item looks alike to the network (try a lower optimizer.lr)",
            record.epoch
        )
    })
}

/// The mean Euclidean distance between the rows of `x`, over at most 1,000 rows taken evenly
/// (every ⌈n / 1000⌉-th), in f64: 500,000 pairs at most.
pub(super) fn mean_distance(x: ArrayView2<'_, f32>) -> f64 {
    let n = x.nrows();
    let step = n.div_ceil(1000).max(1);
    let rows: Vec<_> = (0..n).step_by(step).map(|i| x.row(i)).collect();
    let (mut sum, mut pairs) = (0.0f64, 0u64);
    for (i, a) in rows.iter().enumerate() {
        for b in &rows[i + 1..] {
            let d2: f64 = a
                .iter()
                .zip(b.iter())
                .map(|(&p, &q)| f64::from(p - q).powi(2))
                .sum();
            sum += d2.sqrt();
            pairs += 1;
        }
    }
    if pairs == 0 { 0.0 } else { sum / pairs as f64 }
}

impl Trainer {
    /// The name of the first variable (in name order) whose gradient (or, with
    /// `grad = false`, whose value) holds a non-finite entry; `None` when all are finite.
    pub(super) fn first_non_finite(&self, grad: bool) -> Result<Option<String>> {
        let vars = self
            .vs
            .variables()
            .into_iter()
            .map(|(name, v)| (name, if grad { v.grad() } else { v }));
        first_non_finite(vars)
    }

    pub(super) fn non_finite_hint(&self) -> &'static str {
        match self.config.train.on_non_finite {
            OnNonFinite::Stop => NON_FINITE_HINT,
            OnNonFinite::SkipBatch => NON_FINITE_SKIP_HINT,
        }
    }

    /// A warning, once per run, when the held-out embeddings of `record` have collapsed.
    pub(super) fn collapse_warning(&self, record: &EpochRecord) -> Option<String> {
        if self.state.collapse.is_some() {
            return None;
        }
        collapse_warning(&self.state.history, record, self.state.untrained_spread)
    }

    /// Refuses to write weights that are not finite, so a run that goes wrong between two
    /// checkpoints leaves the last good one on disk.
    pub(super) fn check_weights_finite(&self, epoch: u64) -> Result<()> {
        if let Some(name) = self.first_non_finite(false)? {
            return Err(Error::NonFinite {
                what: format!("the weights of `{name}` are"),
                at: format!("the checkpoint after epoch {epoch} (not written)"),
                hint: self.non_finite_hint(),
            });
        }
        Ok(())
    }

    /// Records files left out as unreadable; the first time a file is met it is named to the
    /// observer, so a run that skips many says so while it runs.
    pub(super) fn note_unreadable(&mut self, files: Vec<PathBuf>) {
        for file in files {
            if self.state.unreadable_files.insert(file.clone()) {
                tracing::warn!(file = %file.display(), "unreadable image left out");
                let message = format!(
                    "left out unreadable image {} ({} so far; data.skip_unreadable)",
                    file.display(),
                    self.state.unreadable_files.len()
                );
                self.observer.get().warning(&message);
            }
        }
    }
}

/// The first name, in name order, whose tensor is defined and holds a NaN or an infinity.
fn first_non_finite(tensors: impl IntoIterator<Item = (String, Tensor)>) -> Result<Option<String>> {
    let mut tensors: Vec<(String, Tensor)> = tensors.into_iter().collect();
    tensors.sort_by(|a, b| a.0.cmp(&b.0));
    for (name, t) in tensors {
        if t.defined() && t.f_isfinite()?.f_all()?.f_int64_value(&[])? == 0 {
            return Ok(Some(name));
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(epoch: u64, spread: Option<f64>) -> EpochRecord {
        EpochRecord {
            epoch,
            loss: None,
            tuples_per_batch: None,
            lr_factor: 1.0,
            train_seconds: 0.0,
            skipped_batches: 0,
            spread,
            collapse: None,
            metrics: None,
        }
    }

    #[test]
    fn excluded_classes_are_named() {
        assert_eq!(excluded_classes_warning(&[], 4), None);
        assert_eq!(
            excluded_classes_warning(&[7], 4).unwrap(),
            "1 training class has a single item and is left out of every batch (with batch.k = 4, \
             a class needs 2 items to form a positive pair): class 7"
        );
        let many: Vec<u32> = (0..12).collect();
        let w = excluded_classes_warning(&many, 2).unwrap();
        assert!(
            w.starts_with("12 training classes have a single item and are left out"),
            "{w}"
        );
        assert!(
            w.ends_with("classes 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, … (2 more)"),
            "{w}"
        );
    }

    #[test]
    fn collapse_is_five_percent_of_the_first_spread_or_1e_3() {
        let history = [record(0, Some(0.16)), record(1, None)];
        // 0.0079 < 5 % of 0.16 = 0.008: collapsed; 0.0081 is not.
        let w = collapse_warning(&history, &record(2, Some(0.0079)), None).unwrap();
        assert!(
            w.contains("after epoch 2") && w.contains("0.1600 for the untrained network"),
            "{w}"
        );
        assert_eq!(
            collapse_warning(&history, &record(2, Some(0.0081)), None),
            None
        );
        // Without a reference only the absolute floor applies.
        assert!(collapse_warning(&[], &record(1, Some(9e-4)), None).is_some());
        assert_eq!(collapse_warning(&[], &record(1, Some(2e-3)), None), None);
        let later = [record(1, Some(1.0))];
        let w = collapse_warning(&later, &record(3, Some(0.01)), None).unwrap();
        assert!(w.contains("against 1.0000 after epoch 1"), "{w}");
        // An epoch that was not evaluated says nothing.
        assert_eq!(collapse_warning(&history, &record(3, None), None), None);
    }

    /// A run that did not evaluate its untrained network (a compare grid's later cell) takes
    /// the spread another run of its seed measured, before any spread of its own epochs; its
    /// own epoch 0 would come first.
    #[test]
    fn collapse_takes_the_untrained_spread_of_another_run() {
        // 1.6e-3 is above the absolute floor but below 5 % of 0.16.
        let w = collapse_warning(&[], &record(1, Some(1.6e-3)), Some(0.16)).unwrap();
        assert!(
            w.contains("after epoch 1") && w.contains("against 0.1600 for the untrained network"),
            "{w}"
        );
        assert_eq!(collapse_warning(&[], &record(1, Some(1.6e-3)), None), None);
        let later = [record(1, Some(1.0))];
        assert!(collapse_warning(&later, &record(2, Some(1e-2)), Some(0.16)).is_none());
        let own = [record(0, Some(0.5))];
        let w = collapse_warning(&own, &record(2, Some(2e-2)), Some(0.16)).unwrap();
        assert!(w.contains("against 0.5000"), "{w}");
    }

    #[test]
    fn the_first_non_finite_tensor_is_named() {
        let t = |v: &[f32]| Tensor::from_slice(v);
        let named = |pairs: Vec<(&str, Tensor)>| {
            first_non_finite(pairs.into_iter().map(|(n, t)| (n.to_owned(), t))).unwrap()
        };
        // Name order, not the order given; finite and undefined tensors are passed over.
        let found = named(vec![
            ("c", t(&[f32::NAN])),
            ("a", t(&[1.0, 2.0])),
            ("b", t(&[0.0, f32::NEG_INFINITY])),
            ("0", Tensor::new()),
        ]);
        assert_eq!(found.as_deref(), Some("b"));
        assert_eq!(named(vec![("a", t(&[1.0])), ("b", t(&[-3.0, 0.0]))]), None);
    }

    #[test]
    fn mean_distance_is_the_mean_over_pairs() {
        // (0,0), (3,4), (6,8): distances 5, 10, 5, mean 20/3.
        let x = ndarray::array![[0.0f32, 0.0], [3.0, 4.0], [6.0, 8.0]];
        assert!((mean_distance(x.view()) - 20.0 / 3.0).abs() < 1e-12);
        assert_eq!(
            mean_distance(ndarray::Array2::<f32>::zeros((1, 2)).view()),
            0.0
        );
    }
}
