//! The PK batch sampler: `P` classes × `K` items per batch.

use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::{Error, Result};

/// Draws batches of `P` distinct classes × `K` items per class, epoch by epoch.
///
/// The sampler of Hermans et al. (*In Defense of the Triplet Loss*, 2017) and of
/// pytorch-metric-learning's `MPerClassSampler` (`m = K`, batch size `P·K`), with epoch
/// semantics: an epoch covers the data set.
///
/// # Policy
///
/// * **Which classes serve.** With `K ≥ 2`, a class needs at least 2 items to serve a batch (a
///   class with one item can form no positive pair); its items are left out of every epoch and
///   counted by [`PkSampler::n_excluded_items`]. With `K = 1` every class serves.
/// * **Chunks.** Each epoch, every serving class's items are shuffled and cut into
///   `m_c = ⌈n_c / K⌉` chunks of `K`. The last chunk, if short, is topped up with other items of
///   the class drawn without replacement; a class with fewer than `K` items (`2 ≤ n_c < K`) is
///   one chunk holding all its items, topped up by drawing from the class *with* replacement, so
///   only there can an index repeat inside a batch.
/// * **Batches.** An epoch has `M = max(max_c m_c, ⌈Σ_c m_c / P⌉)` batches
///   ([`PkSampler::batches_per_epoch`], fixed for the sampler). Chunks are spread over the
///   batches at random, never two chunks of one class in one batch, keeping the batches' fill
///   within one chunk of each other; the `P·M − Σ m_c` free slots are filled with extra chunks
///   of random classes not already in the batch.
/// * **Coverage.** Every item of every serving class appears in at least one batch of every
///   epoch (exactly once as a chunk member; it may appear again in a top-up or filler chunk).
/// * **Batch layout.** `P·K` indices, grouped class by class (`K` consecutive indices per class),
///   classes in random order.
/// * **Reproducibility.** The batches depend on the labels, `P`, `K`, the seed and the epoch
///   number only, so a run resumed at epoch `e` sees the batches it would have seen.
///
/// A very large class forces many batches (`M ≥ m_c`), most of whose other slots are fillers;
/// that is the price of covering it without putting two of its chunks in one batch.
#[derive(Debug, Clone)]
pub struct PkSampler {
    /// Item indices of each serving class, ascending.
    classes: Vec<Vec<usize>>,
    p: usize,
    k: usize,
    seed: u64,
    n_batches: usize,
    n_excluded: usize,
    excluded_classes: Vec<u32>,
}

impl PkSampler {
    /// A sampler over `labels` (one class id per item) with `p` classes of `k` items per batch.
    ///
    /// Fails when `p·k < 2` ([`Error::BatchTooSmall`]) or when fewer than `p` classes can serve
    /// ([`Error::TooFewClasses`]).
    pub fn new(labels: &[u32], p: usize, k: usize, seed: u64) -> Result<PkSampler> {
        if p.saturating_mul(k) < 2 {
            return Err(Error::BatchTooSmall { p, k });
        }
        let min_items = if k >= 2 { 2 } else { 1 };
        let mut order: Vec<(u32, usize)> =
            labels.iter().enumerate().map(|(i, &l)| (l, i)).collect();
        order.sort_unstable();
        let mut classes = Vec::new();
        let mut n_excluded = 0;
        let mut excluded_classes = Vec::new();
        for class in order.chunk_by(|a, b| a.0 == b.0) {
            if class.len() >= min_items {
                classes.push(class.iter().map(|&(_, i)| i).collect::<Vec<_>>());
            } else {
                n_excluded += class.len();
                excluded_classes.push(class[0].0);
            }
        }
        if classes.len() < p {
            return Err(Error::TooFewClasses {
                p,
                n_classes: classes.len(),
                min_items,
            });
        }
        let chunks: Vec<usize> = classes.iter().map(|c| c.len().div_ceil(k)).collect();
        let total: usize = chunks.iter().sum();
        let n_batches = chunks
            .iter()
            .copied()
            .max()
            .unwrap_or(0)
            .max(total.div_ceil(p));
        Ok(PkSampler {
            classes,
            p,
            k,
            seed,
            n_batches,
            n_excluded,
            excluded_classes,
        })
    }

    /// Classes per batch.
    pub fn p(&self) -> usize {
        self.p
    }

    /// Items per class in a batch.
    pub fn k(&self) -> usize {
        self.k
    }

    /// Items per batch, `P·K`.
    pub fn batch_size(&self) -> usize {
        self.p * self.k
    }

    /// Number of batches in every epoch.
    pub fn batches_per_epoch(&self) -> usize {
        self.n_batches
    }

    /// Number of classes that serve batches.
    pub fn n_classes(&self) -> usize {
        self.classes.len()
    }

    /// Number of items left out because their class is too small to serve.
    pub fn n_excluded_items(&self) -> usize {
        self.n_excluded
    }

    /// The classes left out because they have a single item while `K ≥ 2` (no positive pair can
    /// be formed from them), ascending.
    pub fn excluded_classes(&self) -> &[u32] {
        &self.excluded_classes
    }

    /// The batches of epoch `epoch`, each a `Vec` of `P·K` item indices.
    pub fn epoch(&self, epoch: u64) -> Epoch {
        let mut rng = ChaCha8Rng::seed_from_u64(self.seed);
        rng.set_stream(epoch);
        let (p, k, m) = (self.p, self.k, self.n_batches);

        // Cut every class into chunks of K.
        let chunks: Vec<Vec<Vec<usize>>> = self
            .classes
            .iter()
            .map(|items| self.chunks_of(items, &mut rng))
            .collect();

        // Spread the chunks: each class's chunks go to distinct batches, always the batches with
        // the most free slots (ties at random). Free slots then stay within one of each other,
        // which is what guarantees that every class finds enough distinct batches.
        let mut slots: Vec<Vec<(usize, usize)>> = vec![Vec::with_capacity(p); m];
        let mut high: Vec<usize> = (0..m).collect();
        let mut low: Vec<usize> = Vec::new();
        let mut class_order: Vec<usize> = (0..chunks.len()).collect();
        class_order.shuffle(&mut rng);
        for &c in &class_order {
            let need = chunks[c].len();
            let chosen: Vec<usize> = if need < high.len() {
                let picked = take_random(&mut high, need, &mut rng);
                low.extend_from_slice(&picked);
                picked
            } else {
                let mut picked = std::mem::take(&mut high);
                let rest = take_random(&mut low, need - picked.len(), &mut rng);
                high = std::mem::take(&mut low);
                high.extend_from_slice(&picked);
                low = rest.clone();
                picked.extend(rest);
                picked
            };
            for (i, &b) in chosen.iter().enumerate() {
                slots[b].push((c, i));
            }
        }

        // Fill the free slots with extra chunks of classes not yet in the batch, then lay out.
        let mut batches = Vec::with_capacity(m);
        for batch_slots in &slots {
            let mut groups: Vec<Vec<usize>> = batch_slots
                .iter()
                .map(|&(c, i)| chunks[c][i].clone())
                .collect();
            let mut present: Vec<usize> = batch_slots.iter().map(|&(c, _)| c).collect();
            while groups.len() < p {
                let c = rng.random_range(0..self.classes.len());
                if present.contains(&c) {
                    continue;
                }
                present.push(c);
                groups.push(self.filler(&self.classes[c], &mut rng));
            }
            groups.shuffle(&mut rng);
            let mut batch = Vec::with_capacity(p * k);
            for g in groups {
                batch.extend(g);
            }
            batches.push(batch);
        }
        batches.shuffle(&mut rng);
        Epoch {
            batches: batches.into_iter(),
        }
    }

    /// One epoch's chunks of a class: its items shuffled and cut into `⌈n/K⌉` chunks of `K`, the
    /// last topped up (see the type's policy).
    fn chunks_of(&self, items: &[usize], rng: &mut ChaCha8Rng) -> Vec<Vec<usize>> {
        let k = self.k;
        let mut shuffled = items.to_vec();
        shuffled.shuffle(rng);
        let mut out: Vec<Vec<usize>> = shuffled.chunks(k).map(<[usize]>::to_vec).collect();
        let n_full = items.len() / k;
        if let Some(last) = out.last_mut()
            && last.len() < k
        {
            if n_full > 0 {
                // Top up from the items not in this chunk, without replacement.
                let mut others = shuffled[..n_full * k].to_vec();
                let need = k - last.len();
                last.extend(take_random(&mut others, need, rng));
            } else {
                // The class has fewer than K items: draw the rest with replacement.
                while last.len() < k {
                    last.push(items[rng.random_range(0..items.len())]);
                }
            }
        }
        out
    }

    /// A filler chunk: K items of the class, without replacement when it has K or more.
    fn filler(&self, items: &[usize], rng: &mut ChaCha8Rng) -> Vec<usize> {
        if items.len() >= self.k {
            let mut pool = items.to_vec();
            take_random(&mut pool, self.k, rng)
        } else {
            let mut out = items.to_vec();
            out.shuffle(rng);
            while out.len() < self.k {
                out.push(items[rng.random_range(0..items.len())]);
            }
            out
        }
    }
}

/// Removes `n` uniformly random elements from `v` (partial Fisher–Yates from the back) and
/// returns them. `n` is clamped to `v.len()`.
fn take_random<T: Copy>(v: &mut Vec<T>, n: usize, rng: &mut ChaCha8Rng) -> Vec<T> {
    let n = n.min(v.len());
    let len = v.len();
    for i in 0..n {
        let j = rng.random_range(0..len - i);
        v.swap(j, len - 1 - i);
    }
    v.split_off(len - n)
}

/// The batches of one epoch of a [`PkSampler`], in order.
#[derive(Debug, Clone)]
pub struct Epoch {
    batches: std::vec::IntoIter<Vec<usize>>,
}

impl Iterator for Epoch {
    type Item = Vec<usize>;

    fn next(&mut self) -> Option<Vec<usize>> {
        self.batches.next()
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.batches.size_hint()
    }
}

impl ExactSizeIterator for Epoch {}

impl DoubleEndedIterator for Epoch {
    fn next_back(&mut self) -> Option<Vec<usize>> {
        self.batches.next_back()
    }
}

impl std::iter::FusedIterator for Epoch {}
