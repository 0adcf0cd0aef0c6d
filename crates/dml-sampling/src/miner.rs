//! The [`Miner`] trait and what every miner shares: the checked [`Batch`] it mines and the
//! [`TupleKind`] of the `all` miner. The miners' registry, [`MinerConfig`](crate::MinerConfig),
//! is in `config.rs`, above the miners.

use std::borrow::Cow;

use dml_kernels::Metric;
use ndarray::ArrayView2;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::{Error, Result, Tuples};

/// Picks training tuples from a batch, given the batch's pairwise distance (or similarity)
/// matrix and labels, or from a batch against a reference set (a memory bank of past
/// embeddings, a gallery).
///
/// Within a batch ([`Miner::mine`]), `dist` is the `n × n` matrix of `metric` between the
/// batch's embeddings (as `dml_kernels::self_pairwise` returns it) and `labels[i]` is the class
/// of row `i`; an item is never its own positive. Against a reference set
/// ([`Miner::mine_reference`]), `dist` is the `n × m` matrix between the batch (the queries,
/// rows) and the `m` reference items (columns, labelled by `ref_labels`): anchors index the
/// batch, positives and negatives index the reference set, and every reference item of the
/// anchor's class is a positive (nothing is excluded as "self": a reference set holding copies
/// of the batch removes them with [`Tuples::remove_self_comparisons`]). Under a distance metric
/// "hard" means small for negatives and large for positives; under a similarity
/// ([`Metric::is_similarity`]) it is the other way round, and every miner honours that.
///
/// A batch without any valid tuple (a single class, only singleton classes, a single item)
/// gives an empty [`Tuples`], never an error; errors are reserved for malformed input (a matrix
/// whose shape does not match the labels) and for the miners that have no meaning against a
/// reference set ([`NPairsMiner`](crate::NPairsMiner) and
/// [`LiftedStructuredMiner`](crate::LiftedStructuredMiner), which pair batch items with each
/// other: [`Error::NoReferenceMining`]). Invalid parameters never reach the miner: it is built by
/// its config's `init` (or [`MinerConfig::build`](crate::MinerConfig::build)), which refuses them.
///
/// Randomised miners draw only from `rng`, so a seeded RNG gives the same tuples on every run.
///
/// A miner implements [`Miner::mine_batch`] on a checked [`Batch`]; the two entry points are
/// provided.
pub trait Miner: std::fmt::Debug + Send + Sync {
    /// Mines tuples from a checked batch (within the batch or against a reference set, as
    /// [`Batch::has_reference`] says).
    fn mine_batch(&self, batch: &Batch<'_, '_>, rng: &mut dyn rand::RngCore) -> Result<Tuples>;

    /// Whether the tuples depend only on how each row's values compare with each other, so that
    /// any strictly increasing function of the distances (squared instead of plain Euclidean,
    /// say) mines the same tuples, up to ties that rounding makes or unmakes. Callers may then
    /// skip the square root. Default `false`.
    fn order_only(&self) -> bool {
        false
    }

    /// Mines tuples within the batch: `dist` is `n × n`, indices all address the batch.
    ///
    /// # Errors
    /// [`Error::DistanceShape`] unless `dist` is `n × n` for `n = labels.len()`.
    fn mine(
        &self,
        dist: ArrayView2<'_, f32>,
        metric: Metric,
        labels: &[u32],
        rng: &mut dyn rand::RngCore,
    ) -> Result<Tuples> {
        self.mine_batch(&Batch::new(dist, metric, labels)?, rng)
    }

    /// Mines tuples of the batch against a reference set: `dist` is `n × m` (batch rows,
    /// reference columns); anchors index the batch, positives and negatives the reference set.
    ///
    /// # Errors
    /// [`Error::ReferenceShape`] unless `dist` is `labels.len() × ref_labels.len()`;
    /// [`Error::NoReferenceMining`] from the miners that only pair batch items with each other.
    fn mine_reference(
        &self,
        dist: ArrayView2<'_, f32>,
        metric: Metric,
        labels: &[u32],
        ref_labels: &[u32],
        rng: &mut dyn rand::RngCore,
    ) -> Result<Tuples> {
        self.mine_batch(
            &Batch::with_reference(dist, metric, labels, ref_labels)?,
            rng,
        )
    }
}

/// What a miner is built for: the facts of the run a miner's config may need. Only the
/// distance-weighted miner reads one today (the sphere's dimension of its density).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MinerContext {
    /// Length of the embeddings the miner will see.
    pub embedding_dim: usize,
}

/// What the registry ([`MinerConfig`](crate::MinerConfig)) needs of one miner, implemented by
/// the miner's config beside the miner's code: adding a miner is its own file under `miners/`
/// plus one line in the registry.
pub trait MinerSpec {
    /// Checks the parameters and builds the miner for `ctx`.
    ///
    /// # Errors
    /// The named error of the first invalid parameter.
    fn build(&self, ctx: MinerContext) -> Result<Box<dyn Miner>>;

    /// Whether the miner can mine a batch against a reference set ([`Miner::mine_reference`]);
    /// `false` for the miners that pair batch items with each other. Default `true`.
    fn mines_reference(&self) -> bool {
        true
    }
}

/// Which tuple form the [`AllMiner`](crate::AllMiner) returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TupleKind {
    /// Every positive and every negative pair ([`crate::Pairs::all`]).
    Pairs,
    /// Every valid triplet ([`crate::Triplets::all`]).
    #[default]
    Triplets,
}

/// Up to this many matrix entries (a batch of 512 within itself) the miners that make one or
/// two passes over each row work on the calling thread ([`Batch::row_pass_serial`]): at B = 256
/// the pair-margin miner took 80 µs over rayon's two threads and 48 µs on the calling thread
/// (then 13 µs once its row pass tested 16 columns at a time; medians of 3,000 calls on a loaded
/// 2-core machine, 2026-12-06).
pub(crate) const ROW_PASS_SERIAL_MAX_ENTRIES: usize = 512 * 512;

/// A batch's distance (or similarity) matrix checked against its labels, as every miner of
/// this crate starts: the matrix as one row-major slice, the labels of its rows and columns, and
/// the sign that turns the metric's values into dissimilarities (`v = sign · x`, smaller is
/// closer). Rows are the batch (the anchors); columns are the batch itself ([`Batch::new`]) or a
/// reference set ([`Batch::with_reference`]). Public so that a miner written outside the crate
/// checks its input the same way.
#[derive(Debug)]
pub struct Batch<'d, 'l> {
    data: Cow<'d, [f32]>,
    labels: &'l [u32],
    ref_labels: &'l [u32],
    reference: bool,
    metric: Metric,
    /// Number of rows: the batch's items, the anchors.
    pub n: usize,
    /// Number of columns: `n` within a batch, the reference set's size against one.
    pub m: usize,
    sign: f32,
}

impl<'d, 'l> Batch<'d, 'l> {
    /// A batch mined within itself: checks that the matrix is `n × n` and borrows it (or, for a
    /// non-contiguous view, copies it).
    ///
    /// # Errors
    /// [`Error::DistanceShape`] unless the matrix is `n × n` for `n` labels,
    /// [`Error::BatchTooLarge`] beyond `u32` indices.
    pub fn new(
        dist: ArrayView2<'d, f32>,
        metric: Metric,
        labels: &'l [u32],
    ) -> Result<Batch<'d, 'l>> {
        let (rows, cols) = dist.dim();
        let n = labels.len();
        if rows != n || cols != n {
            return Err(Error::DistanceShape {
                rows,
                cols,
                n_labels: n,
            });
        }
        Self::checked(dist, metric, labels, labels, false)
    }

    /// A batch mined against a reference set: checks that the matrix is `n × m` for `n` batch
    /// labels and `m` reference labels.
    ///
    /// # Errors
    /// [`Error::ReferenceShape`] when the shape does not match, [`Error::BatchTooLarge`] beyond
    /// `u32` indices.
    pub fn with_reference(
        dist: ArrayView2<'d, f32>,
        metric: Metric,
        labels: &'l [u32],
        ref_labels: &'l [u32],
    ) -> Result<Batch<'d, 'l>> {
        let (rows, cols) = dist.dim();
        if rows != labels.len() || cols != ref_labels.len() {
            return Err(Error::ReferenceShape {
                rows,
                cols,
                n_labels: labels.len(),
                n_ref_labels: ref_labels.len(),
            });
        }
        Self::checked(dist, metric, labels, ref_labels, true)
    }

    fn checked(
        dist: ArrayView2<'d, f32>,
        metric: Metric,
        labels: &'l [u32],
        ref_labels: &'l [u32],
        reference: bool,
    ) -> Result<Batch<'d, 'l>> {
        let (n, m) = (labels.len(), ref_labels.len());
        for size in [n, m] {
            if u32::try_from(size).is_err() {
                return Err(Error::BatchTooLarge { n: size });
            }
        }
        let data = match dist.to_slice() {
            Some(s) => Cow::Borrowed(s),
            None => Cow::Owned(dist.iter().copied().collect()),
        };
        let sign = if metric.is_similarity() { -1.0 } else { 1.0 };
        Ok(Batch {
            data,
            labels,
            ref_labels,
            reference,
            metric,
            n,
            m,
            sign,
        })
    }

    /// `true` when the columns are a reference set rather than the batch itself.
    pub fn has_reference(&self) -> bool {
        self.reference
    }

    /// The metric of the matrix's values.
    pub fn metric(&self) -> Metric {
        self.metric
    }

    /// The labels of the rows (the batch).
    pub fn labels(&self) -> &'l [u32] {
        self.labels
    }

    /// The labels of the columns (the batch itself, or the reference set).
    pub fn ref_labels(&self) -> &'l [u32] {
        self.ref_labels
    }

    /// Row `i` of the matrix in the metric's own values (`m` entries).
    #[inline]
    pub fn row(&self, i: usize) -> &[f32] {
        &self.data[i * self.m..(i + 1) * self.m]
    }

    /// Whether column `j` is a positive of anchor `a`: same label and, within a batch, not `a`
    /// itself.
    #[inline]
    pub fn is_positive(&self, a: usize, j: usize) -> bool {
        self.ref_labels[j] == self.labels[a] && (self.reference || j != a)
    }

    /// Whether column `j` is a negative of anchor `a`: a different label.
    #[inline]
    pub fn is_negative(&self, a: usize, j: usize) -> bool {
        self.ref_labels[j] != self.labels[a]
    }

    /// The dissimilarity of a raw value: the value for distances, its negation for similarities.
    #[inline]
    pub fn dis(&self, x: f32) -> f32 {
        self.sign * x
    }

    /// Runs `f` for every anchor and concatenates the per-anchor outputs in anchor order, in
    /// parallel for large batches. The output does not depend on the number of threads.
    pub(crate) fn per_anchor<T, F>(&self, f: F) -> Vec<T>
    where
        T: Send,
        F: Fn(usize) -> T + Sync + Send,
    {
        // Below this many matrix entries the rayon hand-off costs more than it saves.
        const PAR_MIN_ENTRIES: usize = 64 * 64;
        if self.serial_below(PAR_MIN_ENTRIES) {
            (0..self.n).map(f).collect()
        } else {
            (0..self.n).into_par_iter().map(f).collect()
        }
    }

    /// [`Batch::per_anchor`] for a miner whose work per anchor is one or two passes over its
    /// row: on the calling thread up to [`ROW_PASS_SERIAL_MAX_ENTRIES`]
    /// ([`Batch::row_pass_serial`]).
    pub(crate) fn per_anchor_row_pass<T, F>(&self, f: F) -> Vec<T>
    where
        T: Send,
        F: Fn(usize) -> T + Sync + Send,
    {
        if self.row_pass_serial() {
            (0..self.n).map(f).collect()
        } else {
            self.per_anchor(f)
        }
    }

    /// Whether a miner whose work per anchor is one or two passes over its row (no work per
    /// pair of columns) mines this batch on the calling thread. Such a pass costs well under a
    /// nanosecond per entry, so up to [`ROW_PASS_SERIAL_MAX_ENTRIES`] the whole matrix takes
    /// about what handing anchors to rayon's pool and waiting for them costs.
    pub(crate) fn row_pass_serial(&self) -> bool {
        self.serial_below(ROW_PASS_SERIAL_MAX_ENTRIES + 1)
    }

    fn serial_below(&self, entries: usize) -> bool {
        self.n.saturating_mul(self.m) < entries
    }
}
