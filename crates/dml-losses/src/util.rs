//! Shared plumbing: input checks, index tensors, the sign convention of metrics, masked
//! log-sum-exp.

use dml_kernels::Metric;
use tch::{Device, Kind, Tensor};

use crate::{Error, Result};

/// A large negative number standing in for −∞ in masked log-sum-exps.
///
/// A true −∞ would make the log-sum-exp of an all-masked row −∞ and its gradient NaN (the
/// softmax of a row of −∞ is 0/0), even when that row is later discarded by a `where`. A finite
/// stand-in keeps every intermediate finite; `exp(MASKED - max)` is exactly 0 in f32 and f64
/// whenever at least one entry of the row is kept.
pub(crate) const MASKED: f64 = -1.0e30;

/// The checked shape of a batch of embeddings ([`check_batch`]).
#[derive(Debug, Clone, Copy)]
pub struct Batch {
    /// Number of embeddings.
    pub n: usize,
    /// Device of the embeddings; index tensors are made there.
    pub device: Device,
    /// Kind of the embeddings.
    pub kind: Kind,
}

/// Checks that `embeddings` is a floating-point `n × d` matrix and that there is one label per
/// row: [`Error::EmbeddingsShape`], [`Error::EmbeddingsKind`] or [`Error::LabelCount`] otherwise.
pub fn check_batch(embeddings: &Tensor, labels: &[u32]) -> Result<Batch> {
    let shape = embeddings.size();
    if shape.len() != 2 {
        return Err(Error::EmbeddingsShape(shape));
    }
    let kind = embeddings.f_kind()?;
    if !matches!(
        kind,
        Kind::Half | Kind::BFloat16 | Kind::Float | Kind::Double
    ) {
        return Err(Error::EmbeddingsKind(kind));
    }
    let n = shape[0] as usize;
    if labels.len() != n {
        return Err(Error::LabelCount {
            labels: labels.len(),
            batch: n,
        });
    }
    Ok(Batch {
        n,
        device: embeddings.device(),
        kind,
    })
}

/// A reference set that a batch is compared against: embeddings carrying no gradient (a memory
/// bank of past batches, a gallery) and their labels. See [`crate::Loss::forward_reference`].
#[derive(Debug, Clone, Copy)]
pub struct Reference<'a> {
    /// The reference embeddings, `(M, D)`, of the batch's kind and device; detached by the loss.
    pub embeddings: &'a Tensor,
    /// One label per reference row.
    pub labels: &'a [u32],
}

/// Both sides of a comparison, checked: the batch (rows, with gradient) and what it is compared
/// with (columns): the batch itself, or a [`Reference`].
pub(crate) struct Sides<'a> {
    pub batch: Batch,
    /// Number of columns.
    pub m: usize,
    pub labels: &'a [u32],
    pub ref_labels: &'a [u32],
    reference: Option<Tensor>,
}

impl<'a> Sides<'a> {
    /// Checks the batch and, when given, the reference set (a `(M, D)` floating-point matrix
    /// of the batch's width with one label per row).
    pub fn new(
        embeddings: &Tensor,
        labels: &'a [u32],
        reference: Option<&Reference<'a>>,
    ) -> Result<Sides<'a>> {
        let batch = check_batch(embeddings, labels)?;
        let Some(r) = reference else {
            return Ok(Sides {
                batch,
                m: batch.n,
                labels,
                ref_labels: labels,
                reference: None,
            });
        };
        let shape = r.embeddings.size();
        let width = embeddings.size()[1];
        if shape.len() != 2 || shape[1] != width {
            return Err(Error::ReferenceShape {
                got: shape,
                dim: width,
            });
        }
        if shape[0] as usize != r.labels.len() {
            return Err(Error::ReferenceLabelCount {
                labels: r.labels.len(),
                rows: shape[0] as usize,
            });
        }
        let emb = r
            .embeddings
            .f_detach()?
            .f_to_kind(batch.kind)?
            .f_to_device(batch.device)?;
        Ok(Sides {
            batch,
            m: r.labels.len(),
            labels,
            ref_labels: r.labels,
            reference: Some(emb),
        })
    }

    /// `true` when the columns are a reference set.
    pub fn has_reference(&self) -> bool {
        self.reference.is_some()
    }

    /// The `n × m` matrix of `metric` between the batch and the columns.
    pub fn matrix(&self, metric: Metric, embeddings: &Tensor) -> Result<Tensor> {
        Ok(match &self.reference {
            None => dml_kernels::tensor::self_pairwise(metric, embeddings)?,
            Some(r) => dml_kernels::tensor::pairwise(metric, embeddings, r)?,
        })
    }

    /// Row-major flat indices `row · m + col` into the `n × m` matrix.
    pub fn flat_index(&self, rows: &[u32], cols: &[u32]) -> Result<Tensor> {
        flat_index(rows, cols, self.m, self.batch.device)
    }
}

/// Checks that every index of `field` addresses a row of a batch of `n`.
pub(crate) fn check_indices(field: &'static str, idx: &[u32], n: usize) -> Result<()> {
    match idx.iter().find(|&&i| i as usize >= n) {
        Some(&index) => Err(Error::IndexOutOfRange {
            field,
            index,
            batch: n,
        }),
        None => Ok(()),
    }
}

/// Checks that a tuple field has `expected` entries.
pub(crate) fn check_len(field: &'static str, got: usize, expected: usize) -> Result<()> {
    if got == expected {
        Ok(())
    } else {
        Err(Error::TupleLength {
            field,
            expected,
            got,
        })
    }
}

/// Checks optional per-tuple weights: right length, finite, non-negative.
pub(crate) fn check_weights(field: &'static str, w: Option<&[f32]>, expected: usize) -> Result<()> {
    let Some(w) = w else { return Ok(()) };
    check_len(field, w.len(), expected)?;
    match w.iter().position(|v| !v.is_finite() || *v < 0.0) {
        Some(position) => Err(Error::InvalidWeight {
            position,
            value: w[position],
        }),
        None => Ok(()),
    }
}

/// Row-major flat indices `row · m + col` into a matrix of `m` columns, as an `i64` tensor.
pub(crate) fn flat_index(rows: &[u32], cols: &[u32], m: usize, device: Device) -> Result<Tensor> {
    let n = m as i64;
    let flat: Vec<i64> = rows
        .iter()
        .zip(cols)
        .map(|(&r, &c)| i64::from(r) * n + i64::from(c))
        .collect();
    Ok(Tensor::f_from_slice(&flat)?.f_to_device(device)?)
}

/// Plain indices as an `i64` tensor.
pub(crate) fn index_tensor(idx: &[u32], device: Device) -> Result<Tensor> {
    let v: Vec<i64> = idx.iter().map(|&i| i64::from(i)).collect();
    Ok(Tensor::f_from_slice(&v)?.f_to_device(device)?)
}

/// Optional weights as a tensor of the embeddings' kind.
pub(crate) fn weight_tensor(w: Option<&[f32]>, batch: &Batch) -> Result<Option<Tensor>> {
    w.map(|w| {
        Ok(Tensor::f_from_slice(w)?
            .f_to_kind(batch.kind)?
            .f_to_device(batch.device)?)
    })
    .transpose()
}

/// Multiplies `losses` by `weights` when there are any.
pub(crate) fn apply_weights(losses: Tensor, weights: Option<&Tensor>) -> Result<Tensor> {
    match weights {
        Some(w) => Ok(losses.f_mul(w)?),
        None => Ok(losses),
    }
}

/// A scalar zero that is part of the graph of `embeddings`: its backward pass runs and gives a
/// zero gradient. Returned when a batch has no valid tuple.
pub fn zero_loss(embeddings: &Tensor) -> Result<Tensor> {
    Ok(embeddings.f_sum(None::<Kind>)?.f_mul_scalar(0.0)?)
}

/// How far `x` is from being as close as `y`, the sign convention of pml's `distance.margin`:
/// `x − y` for distances (positive when `x` is farther), `y − x` for similarities.
pub(crate) fn margin_tt(metric: Metric, x: &Tensor, y: &Tensor) -> Result<Tensor> {
    Ok(if metric.is_similarity() {
        y.f_sub(x)?
    } else {
        x.f_sub(y)?
    })
}

/// [`margin_tt`] with a scalar `y`.
pub(crate) fn margin_ts(metric: Metric, x: &Tensor, y: f64) -> Result<Tensor> {
    Ok(if metric.is_similarity() {
        x.f_rsub_scalar(y)?
    } else {
        x.f_sub_scalar(y)?
    })
}

/// [`margin_tt`] with a scalar `x`.
pub(crate) fn margin_st(metric: Metric, x: f64, y: &Tensor) -> Result<Tensor> {
    Ok(if metric.is_similarity() {
        y.f_sub_scalar(x)?
    } else {
        y.f_rsub_scalar(x)?
    })
}

/// Row-wise log-sum-exp of `x` over the entries where `keep` is true; all-masked rows give
/// [`MASKED`] (a finite stand-in for −∞) and a zero gradient. Shape `n × m` → `n`.
pub(crate) fn masked_logsumexp(x: &Tensor, keep: &Tensor) -> Result<Tensor> {
    let masked = x.f_masked_fill(&keep.f_logical_not()?, MASKED)?;
    Ok(masked.f_logsumexp([1i64].as_slice(), false)?)
}

/// Checks that a configuration value is finite.
pub(crate) fn finite(name: &'static str, value: f64) -> Result<()> {
    if value.is_finite() {
        Ok(())
    } else {
        Err(Error::NonFiniteParameter { name, value })
    }
}

/// Checks that a configuration value is finite and strictly positive.
pub(crate) fn positive(name: &'static str, value: f64) -> Result<()> {
    finite(name, value)?;
    if value > 0.0 {
        Ok(())
    } else {
        Err(Error::NonPositiveParameter { name, value })
    }
}

/// Checks that a configuration value is finite and not negative.
pub(crate) fn non_negative(name: &'static str, value: f64) -> Result<()> {
    finite(name, value)?;
    if value >= 0.0 {
        Ok(())
    } else {
        Err(Error::NegativeParameter { name, value })
    }
}

/// An empty `(0,)` tensor of per-tuple losses, still part of `embeddings`' graph.
pub(crate) fn empty_losses(embeddings: &Tensor) -> Result<Tensor> {
    Ok(zero_loss(embeddings)?
        .f_reshape([1i64])?
        .f_narrow(0, 0, 0)?)
}
