//! The cross-batch memory's part of a training step (`[memory]`, docs/training.md): the loss of
//! a batch against the memory as it stood before the step. The [`Trainer`](crate::Trainer)
//! adds it to the batch's own loss and enqueues the batch after the optimiser step; the bench
//! suite times exactly this function against pml's `CrossBatchMemory`.

use dml_losses::Loss;
use dml_sampling::{MemoryBank, Miner};
use ndarray::ArrayView2;
use tch::Tensor;

use crate::Result;

/// `L(B, M)`: the loss of the batch `embeddings` (with gradient; `detached` is the same rows as
/// an array, for the miner) against every row of `bank`, mined by `miner` on the `B × M`
/// matrix of the loss's metric when there is one (anchors from the batch, the other ends from the memory),
/// over every pair or triplet otherwise. The memory's rows carry no gradient. Returns the loss
/// and the number of tuples mined (0 without a miner). An empty memory gives `None`.
///
/// # Errors
/// A miner or loss that cannot work against a reference set (they name themselves), shapes
/// that do not fit, or LibTorch's own errors.
pub fn memory_term(
    loss: &dyn Loss,
    miner: Option<&dyn Miner>,
    embeddings: &Tensor,
    detached: ArrayView2<'_, f32>,
    labels: &[u32],
    bank: &MemoryBank,
    rng: &mut dyn rand::RngCore,
) -> Result<Option<(Tensor, usize)>> {
    if bank.is_empty() {
        return Ok(None);
    }
    let metric = loss.metric();
    let tuples = match miner {
        Some(miner) => {
            let dist = dml_kernels::pairwise(metric, detached, bank.embeddings())?;
            Some(miner.mine_reference(dist.view(), metric, labels, bank.labels(), rng)?)
        }
        None => None,
    };
    let memory = dml_kernels::tensor::from_array(bank.embeddings())?
        .f_to_device(embeddings.device())?
        .f_to_kind(embeddings.kind())?;
    let reference = dml_losses::Reference {
        embeddings: &memory,
        labels: bank.labels(),
    };
    let term = loss.forward_reference(embeddings, labels, &reference, tuples.as_ref())?;
    Ok(Some((term, tuples.as_ref().map_or(0, |t| t.len()))))
}
