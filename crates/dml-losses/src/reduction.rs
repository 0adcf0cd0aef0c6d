//! How per-tuple losses become one number.

use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

use crate::{Result, util};

/// How a loss turns its per-tuple values into a scalar.
///
/// The names follow pytorch-metric-learning's reducers: [`Reduction::Mean`] is `MeanReducer`,
/// [`Reduction::MeanNonZero`] is `AvgNonZeroReducer`, [`Reduction::Sum`] is `SumReducer`. Each
/// loss documents which one it uses by default; the default is pml's, so numbers compare.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reduction {
    /// Mean over all tuples.
    Mean,
    /// Mean over the tuples whose loss is strictly positive (the "active" ones); zero when none
    /// is. With a hinge this keeps the loss from fading as more tuples are satisfied.
    MeanNonZero,
    /// Sum over all tuples.
    Sum,
}

impl Reduction {
    /// The name used in configs.
    pub fn name(self) -> &'static str {
        match self {
            Reduction::Mean => "mean",
            Reduction::MeanNonZero => "mean_non_zero",
            Reduction::Sum => "sum",
        }
    }

    /// Reduces a 1-d tensor of non-negative per-tuple losses. An empty tensor gives a zero that is
    /// still connected to `embeddings`' graph.
    ///
    /// Everything stays on the device: the count of active tuples is a tensor, never read back.
    pub fn reduce(self, losses: &Tensor, embeddings: &Tensor) -> Result<Tensor> {
        if losses.numel() == 0 {
            return util::zero_loss(embeddings);
        }
        let sum = losses.f_sum(None::<Kind>)?;
        Ok(match self {
            Reduction::Sum => sum,
            Reduction::Mean => sum.f_div_scalar(losses.numel() as f64)?,
            Reduction::MeanNonZero => sum.f_div(&self.divisor(losses)?)?,
        })
    }

    /// What [`Reduction::reduce`] divides the sum by, as a tensor (at least 1 for
    /// [`Reduction::MeanNonZero`], so that "no active tuple" gives 0 rather than 0/0).
    pub(crate) fn divisor(self, losses: &Tensor) -> Result<Tensor> {
        Ok(match self {
            Reduction::Sum => Tensor::f_ones([], (losses.f_kind()?, losses.device()))?,
            Reduction::Mean => Tensor::f_full(
                [],
                losses.numel().max(1) as f64,
                (losses.f_kind()?, losses.device()),
            )?,
            Reduction::MeanNonZero => losses
                .f_gt(0.0)?
                .f_sum(losses.f_kind()?)?
                .f_clamp_min(1.0)?,
        })
    }
}

impl std::fmt::Display for Reduction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}
