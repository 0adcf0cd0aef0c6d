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
pub struct BatchShape {
    /// Number of embeddings.
    pub n: usize,
    /// Device of the embeddings; index tensors are made there.
    pub device: Device,
    /// Kind of the embeddings.
    pub kind: Kind,
}

/// Checks that `embeddings` is a floating-point `n × d` matrix and that there is one label per
/// row: [`Error::EmbeddingsShape`], [`Error::EmbeddingsKind`] or [`Error::LabelCount`] otherwise.
pub fn check_batch(embeddings: &Tensor, labels: &[u32]) -> Result<BatchShape> {
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
    Ok(BatchShape {
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
    pub batch: BatchShape,
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

    /// The metric of each listed pair, batch row `rows[i]` against column `cols[i]`: one tensor
    /// per `(rows, cols)` list, differentiable with respect to the batch (and, without a
    /// reference set, through both ends).
    ///
    /// Against a reference set only the columns the pairs use are compared with the batch: a
    /// batch mined against a memory of thousands uses a few hundred of its rows, and the loss
    /// then costs `n × used × d` forward and backward instead of `n × m × d` and a dozen
    /// `n × m` passes. The values are the entries of the full matrix, computed the same way.
    pub fn pair_values(
        &self,
        metric: Metric,
        embeddings: &Tensor,
        lists: &[(&[u32], &[u32])],
    ) -> Result<Vec<Tensor>> {
        let Some(reference) = &self.reference else {
            return self.matrix_entries(metric, embeddings, lists);
        };
        // Each used column once, in order of first use; `slot[c]` is its place among them.
        let mut slot = vec![u32::MAX; self.m];
        let mut used: Vec<u32> = Vec::new();
        let mapped: Vec<Vec<u32>> = lists
            .iter()
            .map(|(_, cols)| {
                cols.iter()
                    .map(|&c| {
                        let s = &mut slot[c as usize];
                        if *s == u32::MAX {
                            *s = used.len() as u32;
                            used.push(c);
                        }
                        *s
                    })
                    .collect()
            })
            .collect();
        if used.len() == self.m {
            // Every column is used (no miner): the whole matrix, without gathering a copy.
            return self.matrix_entries(metric, embeddings, lists);
        }
        let device = self.batch.device;
        let columns = reference.f_index_select(0, &index_tensor(&used, device)?)?;
        let flat = dml_kernels::tensor::pairwise(metric, embeddings, &columns)?.f_view([-1])?;
        lists
            .iter()
            .zip(&mapped)
            .map(|((rows, _), cols)| {
                Ok(flat.f_take(&flat_index(rows, cols, used.len(), device)?)?)
            })
            .collect()
    }

    /// [`Sides::pair_values`] taken from the whole `n × m` matrix.
    fn matrix_entries(
        &self,
        metric: Metric,
        embeddings: &Tensor,
        lists: &[(&[u32], &[u32])],
    ) -> Result<Vec<Tensor>> {
        let flat = self.matrix(metric, embeddings)?.f_view([-1])?;
        lists
            .iter()
            .map(|(rows, cols)| {
                Ok(flat.f_take(&flat_index(rows, cols, self.m, self.batch.device)?)?)
            })
            .collect()
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
pub(crate) fn weight_tensor(w: Option<&[f32]>, batch: &BatchShape) -> Result<Option<Tensor>> {
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

/// Row-wise log-sum-exp over a list of pairs: entry `r` of the result is
/// `log Σ_{i : rows[i] = r} exp(x[i])`, for `r < n`; rows without pairs give [`MASKED`] with a
/// zero gradient, as [`masked_logsumexp`] gives all-masked rows. The same value as
/// [`masked_logsumexp`] of the `n × m` matrix holding `x` at the listed places, without the
/// matrix: `O(pairs)` forward and backward.
pub(crate) fn segment_logsumexp(x: &Tensor, rows: &[u32], n: usize) -> Result<Tensor> {
    let (kind, device) = (x.kind(), x.device());
    let mut empty = vec![true; n];
    for &r in rows {
        empty[r as usize] = false;
    }
    let empty = Tensor::f_from_slice(&empty)?.f_to_device(device)?;
    let idx = index_tensor(rows, device)?;
    // The largest value of each row (0 for rows without pairs), a constant shift.
    let max = Tensor::f_full([n as i64], f64::NEG_INFINITY, (kind, device))?
        // `torch.scatter_reduce` (tch names it `internal_`; `index_reduce` would do the same but
        // warns on stderr that it is in beta).
        .f_internal_scatter_reduce(0, &idx, &x.f_detach()?, "amax", true)?
        .f_masked_fill(&empty, 0.0)?;
    let shifted = x.f_sub(&max.f_index_select(0, &idx)?)?.f_exp()?;
    let sum = Tensor::f_zeros([n as i64], (kind, device))?
        .f_index_add(0, &idx, &shifted)?
        // log(1) = 0 on the empty rows, which then take MASKED.
        .f_masked_fill(&empty, 1.0)?;
    Ok(sum.f_log()?.f_add(&max)?.f_masked_fill(&empty, MASKED)?)
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

#[cfg(test)]
mod tests {
    use super::*;

    fn random(n: i64, d: i64, seed: i64) -> Tensor {
        tch::manual_seed(seed);
        Tensor::randn([n, d], (Kind::Double, Device::Cpu))
    }

    /// `(values · w).sum()` and its gradient with respect to the batch, for fixed weights `w`.
    fn value_and_grad(values: &[Tensor], x: &Tensor) -> (Vec<f64>, Vec<f64>) {
        let mut total = x.f_sum(None::<Kind>).unwrap().f_mul_scalar(0.0).unwrap();
        let mut out = Vec::new();
        for (i, v) in values.iter().enumerate() {
            out.extend(Vec::<f64>::try_from(v).unwrap());
            let w = Tensor::arange(v.numel() as i64, (Kind::Double, Device::Cpu))
                .f_add_scalar(i as f64)
                .unwrap()
                .sin();
            total += (v * w).sum(Kind::Double);
        }
        let grad = Tensor::run_backward(&[total], &[x], false, false);
        (out, Vec::<f64>::try_from(grad[0].reshape([-1])).unwrap())
    }

    fn assert_close(got: &[f64], want: &[f64], what: &str) {
        assert_eq!(got.len(), want.len(), "{what}");
        for (i, (g, w)) in got.iter().zip(want).enumerate() {
            assert!(
                (g - w).abs() <= 1e-9 * (1.0 + w.abs()),
                "{what}[{i}]: {g} vs {w}"
            );
        }
    }

    /// Comparing the batch with only the used columns gives the entries of the whole matrix,
    /// values and gradient, for every metric (f64), with columns used twice and unused ones.
    #[test]
    fn used_columns_equal_the_matrix_entries() {
        let x = random(6, 5, 1).set_requires_grad(true);
        let r = random(9, 5, 2);
        let labels = [0, 0, 1, 1, 2, 2];
        let ref_labels = [0, 1, 2, 0, 1, 2, 0, 1, 2];
        let reference = Reference {
            embeddings: &r,
            labels: &ref_labels,
        };
        let rows: &[u32] = &[0, 1, 5, 3, 3];
        let ref_cols: &[u32] = &[0, 4, 8, 2, 3];
        let self_cols: &[u32] = &[0, 4, 5, 2, 3];
        let rows2: &[u32] = &[2, 4];
        let cols2: &[u32] = &[1, 5];
        for with_reference in [false, true] {
            let sides = Sides::new(&x, &labels, with_reference.then_some(&reference)).unwrap();
            let cols = if with_reference { ref_cols } else { self_cols };
            let lists = [(rows, cols), (rows2, cols2)];
            for metric in Metric::ALL {
                let what = format!("{metric}, reference {with_reference}");
                let (gv, gg) = value_and_grad(&sides.pair_values(metric, &x, &lists).unwrap(), &x);
                let (mv, mg) =
                    value_and_grad(&sides.matrix_entries(metric, &x, &lists).unwrap(), &x);
                assert_close(&gv, &mv, &format!("values, {what}"));
                assert_close(&gg, &mg, &format!("gradient, {what}"));
            }
        }
    }

    /// The log-sum-exp over pair lists equals the masked log-sum-exp of the matrix that holds
    /// the values at the listed places, value and gradient, with an empty row and large values.
    #[test]
    fn segment_logsumexp_equals_the_masked_matrix() {
        let (n, m) = (4_usize, 5_usize);
        let rows: Vec<u32> = vec![0, 0, 2, 2, 2, 3];
        let cols: Vec<u32> = vec![1, 4, 0, 2, 3, 3];
        let x = Tensor::from_slice(&[0.5, 80.0, -3.0, 2.0, 2.0, -700.0]).set_requires_grad(true);
        let got = segment_logsumexp(&x, &rows, n).unwrap();
        // The same values placed in an n × m matrix.
        let idx = flat_index(&rows, &cols, m, Device::Cpu).unwrap();
        let mat = Tensor::zeros([(n * m) as i64], (Kind::Double, Device::Cpu))
            .index_put(&[Some(idx.shallow_clone())], &x, false)
            .view([n as i64, m as i64]);
        let mut keep = vec![false; n * m];
        for (&r, &c) in rows.iter().zip(&cols) {
            keep[r as usize * m + c as usize] = true;
        }
        let keep = Tensor::from_slice(&keep).view([n as i64, m as i64]);
        let want = masked_logsumexp(&mat, &keep).unwrap();
        let (gv, gg) = value_and_grad(&[got], &x);
        let (wv, wg) = value_and_grad(&[want], &x);
        assert_close(&gv, &wv, "values");
        assert_close(&gg, &wg, "gradient");
        assert_eq!(gv[1], MASKED, "row 1 has no pairs");
        // By hand: row 2 is log(e⁻³ + 2e²).
        let by_hand = ((-3.0_f64).exp() + 2.0 * 2.0_f64.exp()).ln();
        assert!((gv[2] - by_hand).abs() < 1e-12, "{} vs {by_hand}", gv[2]);
    }
}
