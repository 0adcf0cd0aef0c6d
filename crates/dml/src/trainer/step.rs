//! One optimiser step, in the parts every step goes through:
//!
//! ```text
//! embed_batch      the batch's embeddings (all ranks' rows in a multi-process run)
//!      │
//! detached_copy    a CPU copy for the miners and the memory, checked finite
//!      │
//! mine             distances → the miner's tuples (and the negatives kept for the plot)
//!      │
//! total_loss       the loss on the tuples + weight · L(batch, memory) + weight · NT-Xent
//!      │
//! apply_gradients  backward → all-reduce → every gradient finite? → optimiser step
//!      │
//! enqueue          the batch into the cross-batch memory, after its own loss
//! ```
//!
//! Each random choice draws from the step's seed ([`step_seed`]), LibTorch's generator directly
//! and the miners' through the named salts, so a resumed run takes the same steps.

use dml_losses::Loss;
use rand::SeedableRng;
use tch::Tensor;

use super::Trainer;
use super::faults::NonFinite;
use super::seed::{MEMORY_SALT, MINER_SALT, step_seed};
use crate::Result;
use crate::embed::LoadedBatch;

/// What one step did.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum StepOutcome {
    /// The weights were updated: the loss and the number of tuples it was taken over.
    Trained {
        /// The loss of the batch (all its terms).
        loss: f64,
        /// Tuples mined from the batch (and from the memory).
        tuples: usize,
    },
    /// A value was not finite; the weights were not updated.
    NonFinite(NonFinite),
}

/// The embeddings of a batch and their class numbers.
struct Embedded {
    emb: Tensor,
    labels: Vec<u32>,
}

impl Trainer {
    /// Step `batch` of `epoch` on a loaded batch.
    pub(super) fn step(
        &mut self,
        epoch: u64,
        batch: u64,
        loaded: LoadedBatch,
        lr_factor: f64,
    ) -> Result<StepOutcome> {
        let seed = step_seed(self.state.seed, epoch, batch);
        tch::manual_seed(seed as i64);
        let Embedded { emb, labels } = self.embed_batch(epoch, loaded)?;
        let memory_on = self.memory_on();
        let emb_nd = match self.detached_copy(&emb, memory_on)? {
            Ok(e) => e,
            Err(fault) => return Ok(StepOutcome::NonFinite(fault)),
        };
        let tuples = self.mine(emb_nd.as_ref(), &labels, seed)?;
        let (loss, n_tuples) = self.total_loss(&emb, &labels, tuples.as_ref(), memory_on, seed)?;
        let value = loss.f_double_value(&[])?;
        if !value.is_finite() {
            // Name the first thing that went wrong: the network's output, or the loss itself.
            let emb_finite = emb.f_isfinite()?.f_all()?.f_int64_value(&[])? != 0;
            return Ok(StepOutcome::NonFinite(if emb_finite {
                NonFinite::Loss(value)
            } else {
                NonFinite::Embeddings
            }));
        }
        if let Some(fault) = self.apply_gradients(&loss, lr_factor)? {
            return Ok(StepOutcome::NonFinite(fault));
        }
        // Enqueue after the step's loss (never before: the batch is not compared with itself).
        if let (true, Some((_, memory)), Some(emb_nd)) = (memory_on, &mut self.memory, &emb_nd) {
            memory.enqueue(emb_nd.view(), &labels)?;
        }
        Ok(StepOutcome::Trained {
            loss: value,
            tuples: n_tuples,
        })
    }

    /// The batch's embeddings in training mode (the backbone frozen during
    /// `train.freeze_backbone_epochs`) and its labels as class numbers; in a multi-process run,
    /// every rank's rows.
    fn embed_batch(&self, epoch: u64, (x, labels): LoadedBatch) -> Result<Embedded> {
        let labels = self.classes.dense(&labels)?;
        let xs = self.to_tensor(&x)?;
        let emb = if epoch < self.config.train.freeze_backbone_epochs {
            self.net.embed_frozen_backbone(&xs)?
        } else {
            self.net.embed(&xs, true)?
        };
        let (emb, labels) = match &self.dist {
            Some(pg) => Trainer::gather_batch(pg, emb, labels)?,
            None => (emb, labels),
        };
        Ok(Embedded { emb, labels })
    }

    /// Whether the memory takes part in this step: from `start_after_steps` optimiser steps on.
    fn memory_on(&self) -> bool {
        self.memory
            .as_ref()
            .is_some_and(|(cfg, _)| self.optim.n_steps() >= cfg.start_after_steps)
    }

    /// The CPU copy the miners and the memory work on (none when neither runs). Checking it
    /// costs one pass over B × D numbers, and names the fault before the miner would.
    fn detached_copy(
        &self,
        emb: &Tensor,
        memory_on: bool,
    ) -> Result<std::result::Result<Option<ndarray::Array2<f32>>, NonFinite>> {
        if self.miner.is_none() && !memory_on {
            return Ok(Ok(None));
        }
        let e = dml_kernels::tensor::to_array2(emb)?;
        if e.iter().any(|v| !v.is_finite()) {
            return Ok(Err(NonFinite::Embeddings));
        }
        Ok(Ok(Some(e)))
    }

    /// The miner's tuples of the batch (none without a miner), with the negatives' distances
    /// kept for the histogram plot.
    fn mine(
        &mut self,
        emb_nd: Option<&ndarray::Array2<f32>>,
        labels: &[u32],
        seed: u64,
    ) -> Result<Option<dml_sampling::Tuples>> {
        let (Some(miner), Some(emb_nd)) = (&self.miner, emb_nd) else {
            return Ok(None);
        };
        let metric = self.loss.metric();
        let dist = dml_kernels::self_pairwise(metric, emb_nd.view())?;
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed ^ MINER_SALT);
        let tuples = miner.mine(dist.view(), metric, labels, &mut rng)?;
        self.keep_negatives(&tuples, dist.view());
        Ok(Some(tuples))
    }

    /// The step's loss: the configured loss on the tuples, plus `memory.weight` × the loss of
    /// the batch against the memory as it stood before this step, plus `self_supervised.weight`
    /// × NT-Xent over the views; and the number of tuples.
    fn total_loss(
        &self,
        emb: &Tensor,
        labels: &[u32],
        tuples: Option<&dml_sampling::Tuples>,
        memory_on: bool,
        seed: u64,
    ) -> Result<(Tensor, usize)> {
        let mut n_tuples = tuples.map_or(0, dml_sampling::Tuples::len);
        let mut loss = self.loss.forward(emb, labels, tuples)?;
        if let (true, Some((cfg, memory))) = (memory_on, &self.memory) {
            let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed ^ MEMORY_SALT);
            if let Some((term, n)) = memory.loss_term(
                self.loss.as_ref(),
                self.miner.as_deref(),
                emb,
                labels,
                &mut rng,
            )? {
                n_tuples += n;
                loss = loss.f_add(&term.f_mul_scalar(cfg.weight)?)?;
            }
        }
        if let Some((weight, nt_xent)) = &self.instance_loss {
            let views = self.config.batch.views.max(1);
            let instances: Vec<u32> = (0..labels.len()).map(|i| (i / views) as u32).collect();
            let term = nt_xent.forward(emb, &instances, None)?;
            loss = loss.f_add(&term.f_mul_scalar(*weight)?)?;
        }
        Ok((loss, n_tuples))
    }

    /// Backward, the all-reduce of a multi-process run, and the optimiser step with the
    /// schedule's factor, unless some gradient is not finite (then nothing is updated and the
    /// fault names its variable).
    fn apply_gradients(&mut self, loss: &Tensor, lr_factor: f64) -> Result<Option<NonFinite>> {
        self.optim.zero_grad();
        loss.f_backward()?;
        if let Some(pg) = &self.dist {
            self.reduce_gradients(pg)?;
        }
        // One scalar for the whole gradient: the largest |g| over every variable is finite
        // exactly when every entry is (NaN propagates through the maximum).
        let grads: Vec<Tensor> = self
            .vs
            .trainable_variables()
            .iter()
            .map(Tensor::grad)
            .filter(Tensor::defined)
            .map(|g| g.f_abs().and_then(|a| a.f_amax([] as [i64; 0], false)))
            .collect::<std::result::Result<_, _>>()?;
        if !grads.is_empty() {
            let largest = Tensor::f_stack(&grads, 0)?
                .f_amax([] as [i64; 0], false)?
                .f_double_value(&[])?;
            if !largest.is_finite() {
                // The largest |g| was not finite, so some gradient holds the NaN or infinity.
                let name = self
                    .first_non_finite(true)?
                    .unwrap_or_else(|| "?".to_owned());
                self.optim.zero_grad();
                return Ok(Some(NonFinite::Gradient(name)));
            }
        }
        self.optim.step(lr_factor)?;
        Ok(None)
    }
}
