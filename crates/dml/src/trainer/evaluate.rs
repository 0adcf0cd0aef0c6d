//! The held-out classes evaluated: the network, and the baselines every report carries (the
//! raw input, the frozen backbone), through one path.

use std::path::PathBuf;

use dml_data::{Dataset, HeldOut};
use dml_eval::Metrics;
use ndarray::Array2;

use super::Trainer;
use super::faults::mean_distance;
use crate::embed::SplitPart;
use crate::embed::{Embedder, Output};
use crate::state::RawInput;
use crate::{Error, Result};

/// One evaluation of the held-out classes ([`Trainer::evaluate_held_out`]).
#[derive(Debug)]
pub(super) struct Evaluation {
    /// The scores.
    pub(super) metrics: Metrics,
    /// The mean pairwise distance of the rows searched (the gallery's for query/gallery sets):
    /// how spread out the embedding is; a collapse shows here first.
    pub(super) spread: f64,
    /// The rows and their labels, for a held-out set that is one set (the plots map them).
    pub(super) embeddings: Option<(Array2<f32>, Vec<u32>)>,
    /// Files left out as unreadable.
    pub(super) unreadable: Vec<PathBuf>,
}

/// At most this many bytes of flattened held-out items for the raw-input baseline.
const RAW_INPUT_BUDGET: usize = 2 << 30;

impl Trainer {
    /// Embeds the whole of `dataset` in batches of `batch.eval_batch_size`, with the test
    /// transform and the network in evaluation mode.
    pub fn embed_dataset(&self, dataset: &dyn Dataset) -> Result<(Array2<f32>, Vec<u32>)> {
        let (x, y, unreadable) = self.embedder().embed(dataset)?;
        for file in &unreadable {
            self.observer
                .get()
                .warning(&crate::embed::unreadable_warning(file));
        }
        Ok((x, y))
    }

    /// The network and the test-time item preparation, for embedding data sets.
    pub(super) fn embedder(&self) -> Embedder<'_> {
        Embedder::new(&self.net, self.device, &self.config, self.state.seed)
    }

    /// Embeds one split.
    pub fn embed_split(&self, part: SplitPart) -> Result<(Array2<f32>, Vec<u32>)> {
        match part {
            SplitPart::Train => self.embed_dataset(self.split.train.as_ref()),
            SplitPart::Test => self.embed_dataset(self.split.test.as_ref()),
        }
    }

    /// Evaluates the network on the held-out classes (for In-Shop: queries against the
    /// gallery). Held-out embeddings that are not finite (a network that diverged) are
    /// [`Error::NonFinite`].
    pub fn evaluate(&mut self) -> Result<Metrics> {
        Ok(self.evaluate_network()?.metrics)
    }

    /// [`Trainer::evaluate`], keeping the spread and the embeddings, and noting unreadable
    /// files.
    pub(super) fn evaluate_network(&mut self) -> Result<Evaluation> {
        match self.evaluate_held_out(Output::Embeddings) {
            Err(Error::Eval(dml_eval::Error::NonFinite { .. })) => Err(Error::NonFinite {
                what: "the held-out embeddings are".to_owned(),
                at: format!("the evaluation after epoch {}", self.state.epochs_done),
                hint: self.non_finite_hint(),
            }),
            Ok(mut e) => {
                let files = std::mem::take(&mut e.unreadable);
                self.note_unreadable(files);
                Ok(e)
            }
            Err(e) => Err(e),
        }
    }

    /// The one evaluation path: the held-out classes made into rows by `output` (the network,
    /// its backbone's features, or the raw input), searched with the run's metric and scored
    /// with its settings, leave-one-out or queries in a gallery as the data set's protocol is.
    pub(super) fn evaluate_held_out(&self, output: Output) -> Result<Evaluation> {
        let embedder = self.embedder().with_output(output);
        let (metric, cfg) = (self.config.eval.metric, &self.config.eval.config);
        Ok(match self.split.held_out() {
            HeldOut::Set(test) => {
                let (x, y, unreadable) = embedder.embed(test)?;
                let metrics = dml_eval::evaluate(x.view(), &y, metric, cfg)?;
                Evaluation {
                    metrics,
                    spread: mean_distance(x.view()),
                    embeddings: Some((x, y)),
                    unreadable,
                }
            }
            HeldOut::QueryGallery { query, gallery } => {
                let (qx, qy, mut unreadable) = embedder.embed(query)?;
                let (gx, gy, g_unreadable) = embedder.embed(gallery)?;
                unreadable.extend(g_unreadable);
                let metrics =
                    dml_eval::evaluate_with_reference(qx.view(), &qy, gx.view(), &gy, metric, cfg)?;
                Evaluation {
                    metrics,
                    spread: mean_distance(gx.view()),
                    embeddings: None,
                    unreadable,
                }
            }
        })
    }

    /// The frozen-backbone baseline of a pretrained or TorchScript backbone: the held-out items'
    /// pooled backbone features (L2-normalised when the model normalises its embeddings), with
    /// the same metric and scores as the network ([`Trainer::evaluate`]). Meaningful before the
    /// first step, which is when a run computes it.
    pub fn frozen_backbone_baseline(&self) -> Result<Metrics> {
        Ok(self.evaluate_held_out(Output::BackboneFeatures)?.metrics)
    }

    /// The raw-input baseline: every held-out item after the test transform, flattened to one
    /// row, L2-normalised when the model normalises its embeddings, evaluated with the same
    /// metric and settings as the network ([`Trainer::evaluate`]). Skipped (with the reason)
    /// when the items differ in size or the rows would take more than 2 GiB.
    pub fn raw_input_baseline(&self) -> Result<RawInput> {
        let skipped = |why: String| {
            Ok(RawInput {
                metrics: None,
                skipped: Some(why),
            })
        };
        let sets: Vec<&dyn Dataset> = match self.split.held_out() {
            HeldOut::Set(test) => vec![test],
            HeldOut::QueryGallery { query, gallery } => vec![query, gallery],
        };
        let tf = self.config.transform.test.as_ref();
        for set in sets {
            let shape = match dml_data::batch_item_shape(set, tf) {
                Ok(shape) => shape,
                Err(dml_data::Error::ItemSizeUnknown) => {
                    return skipped(
                        "the held-out items differ in size and [transform.test] does not crop them to one"
                            .to_owned(),
                    );
                }
                Err(e) => return Err(e.into()),
            };
            let dim: usize = shape.iter().product();
            let bytes = set.len().saturating_mul(dim).saturating_mul(4);
            if bytes > RAW_INPUT_BUDGET {
                return skipped(format!(
                    "{} items of {dim} values would take {:.1} GiB (limit 2 GiB)",
                    set.len(),
                    bytes as f64 / (1u64 << 30) as f64
                ));
            }
        }
        // Files left out here are the held-out set's: the network's evaluation records them.
        let metrics = self.evaluate_held_out(Output::RawInput)?.metrics;
        Ok(RawInput {
            metrics: Some(metrics),
            skipped: None,
        })
    }
}
