//! The index tuples that miners produce and losses consume.

/// Pairs of indices: positive pairs (same class) and negative pairs (different classes), each
/// with optional per-pair weights.
///
/// Anchors (`pos_anchor`, `neg_anchor`) always index the batch. Positives and negatives index
/// the batch too when the pairs were mined within it ([`crate::Miner::mine`]), and the reference
/// set (a memory bank) when they were mined against one ([`crate::Miner::mine_reference`]).
///
/// This is pytorch-metric-learning's `(a1, p, a2, n)` pair tuple, stored as four index vectors
/// (struct of arrays) so that a loss can turn each into an index tensor without copying.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Pairs {
    /// Anchor of each positive pair.
    pub pos_anchor: Vec<u32>,
    /// Positive of each positive pair (same label as its anchor, different index).
    pub positive: Vec<u32>,
    /// Anchor of each negative pair.
    pub neg_anchor: Vec<u32>,
    /// Negative of each negative pair (different label from its anchor).
    pub negative: Vec<u32>,
    /// Optional weight of each positive pair (`None` means all 1).
    pub pos_weight: Option<Vec<f32>>,
    /// Optional weight of each negative pair (`None` means all 1).
    pub neg_weight: Option<Vec<f32>>,
}

/// Triplets of indices `(anchor, positive, negative)` with optional per-triplet weights.
///
/// `anchor` indexes the batch; `positive` and `negative` index the batch, or the reference set
/// when the triplets were mined against one ([`crate::Miner::mine_reference`]).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Triplets {
    /// Anchor of each triplet.
    pub anchor: Vec<u32>,
    /// Positive of each triplet (same label as the anchor, different index).
    pub positive: Vec<u32>,
    /// Negative of each triplet (different label from the anchor).
    pub negative: Vec<u32>,
    /// Optional weight of each triplet (`None` means all 1).
    pub weight: Option<Vec<f32>>,
}

/// What a miner returns: pairs or triplets.
#[derive(Debug, Clone, PartialEq)]
pub enum Tuples {
    /// Positive and negative pairs.
    Pairs(Pairs),
    /// Triplets.
    Triplets(Triplets),
}

/// Converts a batch size into a `u32` index bound.
///
/// A batch whose indices do not fit in `u32` would need more than 2³² pairs to enumerate, so
/// memory runs out long before this can fail; it still fails loudly rather than wrapping.
pub(crate) fn index_bound(n: usize) -> u32 {
    u32::try_from(n).expect("batch size exceeds u32::MAX")
}

/// The `i`-th weight, 1 when there are no weights (or too few).
fn weight_at(weights: Option<&[f32]>, i: usize) -> f32 {
    weights.and_then(|w| w.get(i)).copied().unwrap_or(1.0)
}

impl Pairs {
    /// Every positive pair `(i, j)` with `labels[i] == labels[j]`, `i ≠ j`, and every negative
    /// pair `(i, j)` with `labels[i] != labels[j]`, each in row-major order (by `i`, then `j`),
    /// without weights.
    ///
    /// Both orders `(i, j)` and `(j, i)` appear, as in pytorch-metric-learning's
    /// `get_all_pairs_indices`, which this matches index for index.
    ///
    /// # Panics
    /// If `labels.len()` exceeds `u32::MAX` (the quadratic output could not be allocated anyway).
    pub fn all(labels: &[u32]) -> Pairs {
        Pairs::all_where(labels, labels, |i, j| i != j)
    }

    /// Every pair of a batch item with a reference item: `(i, j)` is positive when
    /// `labels[i] == ref_labels[j]` (nothing is excluded as "self") and negative otherwise, in
    /// row-major order. pytorch-metric-learning's `get_all_pairs_indices(labels, ref_labels)`.
    ///
    /// # Panics
    /// If either length exceeds `u32::MAX`.
    pub fn all_reference(labels: &[u32], ref_labels: &[u32]) -> Pairs {
        Pairs::all_where(labels, ref_labels, |_, _| true)
    }

    /// Every pair of a checked batch: [`Pairs::all`] within it, [`Pairs::all_reference`]
    /// against its reference set.
    pub(crate) fn all_of(batch: &crate::Batch<'_, '_>) -> Pairs {
        if batch.has_reference() {
            Pairs::all_reference(batch.labels(), batch.ref_labels())
        } else {
            Pairs::all(batch.labels())
        }
    }

    /// Pairs with `keep(i, j)` deciding whether a same-label pair is a positive pair.
    fn all_where(labels: &[u32], ref_labels: &[u32], keep: impl Fn(u32, u32) -> bool) -> Pairs {
        let n = index_bound(labels.len());
        let m = index_bound(ref_labels.len());
        let mut out = Pairs::default();
        for i in 0..n {
            let li = labels[i as usize];
            for j in 0..m {
                if ref_labels[j as usize] == li {
                    if keep(i, j) {
                        out.pos_anchor.push(i);
                        out.positive.push(j);
                    }
                } else {
                    out.neg_anchor.push(i);
                    out.negative.push(j);
                }
            }
        }
        out
    }

    /// Number of positive pairs.
    pub fn n_pos(&self) -> usize {
        self.pos_anchor.len()
    }

    /// Number of negative pairs.
    pub fn n_neg(&self) -> usize {
        self.neg_anchor.len()
    }

    /// Total number of pairs, positive and negative.
    pub fn len(&self) -> usize {
        self.n_pos() + self.n_neg()
    }

    /// `true` when there is neither a positive nor a negative pair.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every `(positive pair, negative pair)` combination that shares its anchor, as triplets.
    ///
    /// This is pytorch-metric-learning's `convert_to_triplets` for a pair tuple: positive pair
    /// `(a, p)` and negative pair `(a, n)` give the triplet `(a, p, n)`, ordered by positive pair
    /// and then by negative pair. A triplet's weight is the product of its two pairs' weights,
    /// a missing side counting as 1; the result has weights only when the pairs have some.
    pub fn to_triplets(&self) -> Triplets {
        // Group negative pairs by anchor (CSR layout) so the join is linear in its output.
        let n_anchor = self
            .neg_anchor
            .iter()
            .map(|&a| a as usize + 1)
            .max()
            .unwrap_or(0);
        // Only the first `n_neg` entries are well formed if the vectors disagree in length.
        let n_neg = self.neg_anchor.len().min(self.negative.len());
        let mut offsets = vec![0usize; n_anchor + 1];
        for &a in &self.neg_anchor[..n_neg] {
            offsets[a as usize + 1] += 1;
        }
        for i in 0..n_anchor {
            offsets[i + 1] += offsets[i];
        }
        let mut fill = offsets.clone();
        let mut by_anchor = vec![0usize; n_neg];
        for (j, &a) in self.neg_anchor[..n_neg].iter().enumerate() {
            by_anchor[fill[a as usize]] = j;
            fill[a as usize] += 1;
        }

        let weighted = self.pos_weight.is_some() || self.neg_weight.is_some();
        let mut out = Triplets::default();
        let mut weights = Vec::new();
        for (i, (&a, &p)) in self.pos_anchor.iter().zip(&self.positive).enumerate() {
            let a_us = a as usize;
            if a_us >= n_anchor {
                continue;
            }
            let w_pos = weight_at(self.pos_weight.as_deref(), i);
            for &j in &by_anchor[offsets[a_us]..offsets[a_us + 1]] {
                out.push(a, p, self.negative[j]);
                if weighted {
                    weights.push(w_pos * weight_at(self.neg_weight.as_deref(), j));
                }
            }
        }
        if weighted {
            out.weight = Some(weights);
        }
        out
    }
}

impl Triplets {
    /// Appends the unweighted triplet `(a, p, n)`.
    pub(crate) fn push(&mut self, a: u32, p: u32, n: u32) {
        self.anchor.push(a);
        self.positive.push(p);
        self.negative.push(n);
    }

    /// Every triplet `(a, p, n)` with `labels[a] == labels[p]`, `a ≠ p` and
    /// `labels[a] != labels[n]`, ordered by anchor, then positive, then negative, without
    /// weights.
    ///
    /// This matches pytorch-metric-learning's `get_all_triplets_indices` index for index.
    ///
    /// # Panics
    /// If `labels.len()` exceeds `u32::MAX` (the cubic output could not be allocated anyway).
    pub fn all(labels: &[u32]) -> Triplets {
        Triplets::all_where(labels, labels, |a, j| a != j)
    }

    /// Every triplet of a batch anchor with a reference positive and a reference negative
    /// (nothing is excluded as "self"), ordered by anchor, positive, negative.
    /// pytorch-metric-learning's `get_all_triplets_indices(labels, ref_labels)`.
    ///
    /// # Panics
    /// If either length exceeds `u32::MAX`.
    pub fn all_reference(labels: &[u32], ref_labels: &[u32]) -> Triplets {
        Triplets::all_where(labels, ref_labels, |_, _| true)
    }

    /// Every triplet of a checked batch: [`Triplets::all`] within it,
    /// [`Triplets::all_reference`] against its reference set.
    pub(crate) fn all_of(batch: &crate::Batch<'_, '_>) -> Triplets {
        if batch.has_reference() {
            Triplets::all_reference(batch.labels(), batch.ref_labels())
        } else {
            Triplets::all(batch.labels())
        }
    }

    fn all_where(labels: &[u32], ref_labels: &[u32], keep: impl Fn(u32, u32) -> bool) -> Triplets {
        let n = index_bound(labels.len());
        let m = index_bound(ref_labels.len());
        let mut out = Triplets::default();
        let mut pos = Vec::new();
        let mut neg = Vec::new();
        for a in 0..n {
            let la = labels[a as usize];
            pos.clear();
            neg.clear();
            for j in 0..m {
                if ref_labels[j as usize] == la {
                    if keep(a, j) {
                        pos.push(j);
                    }
                } else {
                    neg.push(j);
                }
            }
            for &p in &pos {
                out.anchor.extend(std::iter::repeat_n(a, neg.len()));
                out.positive.extend(std::iter::repeat_n(p, neg.len()));
                out.negative.extend_from_slice(&neg);
            }
        }
        out
    }

    /// Number of triplets.
    pub fn len(&self) -> usize {
        self.anchor.len()
    }

    /// `true` when there is no triplet.
    pub fn is_empty(&self) -> bool {
        self.anchor.is_empty()
    }

    /// The triplets as pairs: `(a, p)` positive and `(a, n)` negative for each triplet, in
    /// triplet order, duplicates kept.
    ///
    /// This is pytorch-metric-learning's `convert_to_pairs` for a triplet tuple. Each pair
    /// carries its triplet's weight.
    pub fn to_pairs(&self) -> Pairs {
        Pairs {
            pos_anchor: self.anchor.clone(),
            positive: self.positive.clone(),
            neg_anchor: self.anchor.clone(),
            negative: self.negative.clone(),
            pos_weight: self.weight.clone(),
            neg_weight: self.weight.clone(),
        }
    }
}

impl Tuples {
    /// Number of tuples: pairs (positive plus negative) or triplets.
    pub fn len(&self) -> usize {
        match self {
            Tuples::Pairs(p) => p.len(),
            Tuples::Triplets(t) => t.len(),
        }
    }

    /// `true` when there is no tuple.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The tuples as pairs (see [`Triplets::to_pairs`]); pairs are returned as they are.
    pub fn to_pairs(&self) -> Pairs {
        match self {
            Tuples::Pairs(p) => p.clone(),
            Tuples::Triplets(t) => t.to_pairs(),
        }
    }

    /// The tuples as triplets (see [`Pairs::to_triplets`]); triplets are returned as they are.
    pub fn to_triplets(&self) -> Triplets {
        match self {
            Tuples::Pairs(p) => p.to_triplets(),
            Tuples::Triplets(t) => t.clone(),
        }
    }

    /// Checks that every index is below `n` (the batch size), so that a loss can index with
    /// them safely.
    pub fn check_indices(&self, n: usize) -> crate::Result<()> {
        self.check_reference_indices(n, n)
    }

    /// Checks tuples mined against a reference set: anchors below `n` (the batch), positives
    /// and negatives below `m` (the reference set).
    pub fn check_reference_indices(&self, n: usize, m: usize) -> crate::Result<()> {
        let vecs: Vec<(&[u32], usize)> = match self {
            Tuples::Pairs(p) => vec![
                (&p.pos_anchor, n),
                (&p.positive, m),
                (&p.neg_anchor, n),
                (&p.negative, m),
            ],
            Tuples::Triplets(t) => vec![(&t.anchor, n), (&t.positive, m), (&t.negative, m)],
        };
        for (v, bound) in vecs {
            if let Some(&index) = v.iter().find(|&&i| i as usize >= bound) {
                return Err(crate::Error::IndexOutOfRange { index, n: bound });
            }
        }
        Ok(())
    }

    /// The tuples without the comparisons of a batch item with its own copy in the reference
    /// set: `own[a]` is the reference index holding batch item `a` (a memory bank that already
    /// holds the current batch), and every positive pair `(a, own[a])`, or triplet whose positive
    /// is `own[a]`, is dropped. Negative pairs never compare an item with itself and stay.
    /// Weights follow their tuples. pytorch-metric-learning's `remove_self_comparisons`, as its
    /// `CrossBatchMemory` applies it.
    ///
    /// # Panics
    /// If an anchor is not below `own.len()`.
    pub fn remove_self_comparisons(&self, own: &[u32]) -> Tuples {
        let keep = |a: u32, p: u32| own[a as usize] != p;
        match self {
            Tuples::Pairs(p) => {
                let mask: Vec<bool> = p
                    .pos_anchor
                    .iter()
                    .zip(&p.positive)
                    .map(|(&a, &q)| keep(a, q))
                    .collect();
                Tuples::Pairs(Pairs {
                    pos_anchor: filter(&p.pos_anchor, &mask),
                    positive: filter(&p.positive, &mask),
                    neg_anchor: p.neg_anchor.clone(),
                    negative: p.negative.clone(),
                    pos_weight: p.pos_weight.as_ref().map(|w| filter(w, &mask)),
                    neg_weight: p.neg_weight.clone(),
                })
            }
            Tuples::Triplets(t) => {
                let mask: Vec<bool> = t
                    .anchor
                    .iter()
                    .zip(&t.positive)
                    .map(|(&a, &q)| keep(a, q))
                    .collect();
                Tuples::Triplets(Triplets {
                    anchor: filter(&t.anchor, &mask),
                    positive: filter(&t.positive, &mask),
                    negative: filter(&t.negative, &mask),
                    weight: t.weight.as_ref().map(|w| filter(w, &mask)),
                })
            }
        }
    }
}

/// The entries of `v` where `mask` is true.
fn filter<T: Copy>(v: &[T], mask: &[bool]) -> Vec<T> {
    v.iter()
        .zip(mask)
        .filter(|(_, k)| **k)
        .map(|(x, _)| *x)
        .collect()
}

impl From<Pairs> for Tuples {
    fn from(p: Pairs) -> Self {
        Tuples::Pairs(p)
    }
}

impl From<Triplets> for Tuples {
    fn from(t: Triplets) -> Self {
        Tuples::Triplets(t)
    }
}
