//! The [`Dataset`] trait, batch loading, subsets and class-disjoint splits.

use std::collections::BTreeSet;
use std::fmt::Debug;
use std::sync::Arc;

use ndarray::{Array3, Array4};
use rand::seq::SliceRandom;
use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;

use crate::transform::{Pixels, Transform, output_shape, render};
use crate::{Error, Result};

/// A labelled collection of images: item `i` has the class [`labels()[i]`](Dataset::labels).
///
/// An implementation only says how to get an item's decoded pixels
/// ([`pixels`](Dataset::pixels)); conversion to `f32` CHW and augmentation are shared
/// ([`load`](Dataset::load), [`load_batch`]).
pub trait Dataset: Debug + Send + Sync {
    /// Number of items.
    fn len(&self) -> usize;

    /// Whether there are no items.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The class of every item, in item order.
    fn labels(&self) -> &[u32];

    /// Number of channels of every item (1 for grey, 3 for RGB).
    fn channels(&self) -> usize;

    /// The (C, H, W) shape shared by all items before any transform, or `None` where sizes vary
    /// (image files); then batches need a transform with a fixed output size.
    fn item_shape(&self) -> Option<[usize; 3]>;

    /// The decoded pixels of item `index`.
    fn pixels(&self, index: usize) -> Result<Pixels<'_>>;

    /// Item `index` as `f32` (C, H, W), transformed with randomness from `rng`.
    fn load(
        &self,
        index: usize,
        transform: Option<&Transform>,
        rng: &mut dyn RngCore,
    ) -> Result<Array3<f32>> {
        if let Some(t) = transform {
            t.validate(self.channels())?;
        }
        let pixels = self.pixels(index)?;
        let shape = output_shape(&pixels, transform);
        let mut out = Array3::zeros(shape);
        let buf = out
            .as_slice_mut()
            .expect("a freshly allocated array is contiguous");
        render(&pixels, transform, rng, buf);
        Ok(out)
    }
}

impl<D: Dataset + ?Sized> Dataset for Arc<D> {
    fn len(&self) -> usize {
        (**self).len()
    }
    fn labels(&self) -> &[u32] {
        (**self).labels()
    }
    fn channels(&self) -> usize {
        (**self).channels()
    }
    fn item_shape(&self) -> Option<[usize; 3]> {
        (**self).item_shape()
    }
    fn pixels(&self, index: usize) -> Result<Pixels<'_>> {
        (**self).pixels(index)
    }
}

/// The (C, H, W) shape of items of `dataset` under `transform`.
pub fn batch_item_shape(
    dataset: &dyn Dataset,
    transform: Option<&Transform>,
) -> Result<[usize; 3]> {
    match (
        transform.and_then(Transform::fixed_size),
        dataset.item_shape(),
    ) {
        (Some((h, w)), _) => Ok([dataset.channels(), h, w]),
        (None, Some(shape)) => Ok(shape),
        (None, None) => Err(Error::ItemSizeUnknown),
    }
}

/// The RNG of the item at `position` of a batch loaded with `seed`: one ChaCha8 stream per
/// position, so the result depends on (seed, position) only, not on thread scheduling.
pub fn item_rng(seed: u64, position: usize) -> ChaCha8Rng {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(position as u64);
    rng
}

/// Loads the items `indices` of `dataset` as one (B, C, H, W) batch with their labels.
///
/// Items are decoded and transformed in parallel (rayon); the item at position `p` draws its
/// randomness from [`item_rng(seed, p)`](item_rng), so the batch is the same for the same seed
/// on any number of threads.
///
/// # Errors
/// An index out of range, an item that cannot be read or decoded (the error names the file),
/// an invalid transform, or items of different sizes without a fixed-size transform.
pub fn load_batch(
    dataset: &dyn Dataset,
    indices: &[usize],
    transform: Option<&Transform>,
    seed: u64,
) -> Result<(Array4<f32>, Vec<u32>)> {
    let (x, labels, _) = load(dataset, indices, transform, seed, false)?;
    Ok((x, labels))
}

/// [`load_batch`], leaving out the items whose file cannot be read or decoded (a truncated
/// download, a corrupt JPEG; see [`Error::unreadable_file`]) instead of failing: returns the
/// batch of the other items, their labels, and the errors of the items left out. Every other
/// item is exactly what [`load_batch`] gives at its position (its randomness still comes from
/// its position in `indices`). Other errors (an index out of range, a size mismatch) still fail.
///
/// # Errors
/// As [`load_batch`], except unreadable files.
pub fn load_batch_skipping(
    dataset: &dyn Dataset,
    indices: &[usize],
    transform: Option<&Transform>,
    seed: u64,
) -> Result<(Array4<f32>, Vec<u32>, Vec<Error>)> {
    load(dataset, indices, transform, seed, true)
}

fn load(
    dataset: &dyn Dataset,
    indices: &[usize],
    transform: Option<&Transform>,
    seed: u64,
    skip_unreadable: bool,
) -> Result<(Array4<f32>, Vec<u32>, Vec<Error>)> {
    if let Some(t) = transform {
        t.validate(dataset.channels())?;
    }
    let n = dataset.len();
    let labels = dataset.labels();
    let batch_labels = indices
        .iter()
        .map(|&index| {
            labels
                .get(index)
                .copied()
                .ok_or(Error::IndexOutOfRange { index, len: n })
        })
        .collect::<Result<Vec<u32>>>()?;
    let shape = batch_item_shape(dataset, transform)?;
    let item_len = shape.iter().product::<usize>();
    let mut out = Array4::<f32>::zeros((indices.len(), shape[0], shape[1], shape[2]));
    if item_len == 0 {
        return Ok((out, batch_labels, Vec::new()));
    }
    let buf = out
        .as_slice_mut()
        .expect("a freshly allocated array is contiguous");
    // Per position: `None` when rendered, `Some(error)` when its file was unreadable and left out.
    let outcome = buf
        .par_chunks_mut(item_len)
        .zip(indices.par_iter())
        .enumerate()
        .map(|(position, (chunk, &index))| {
            let pixels = match dataset.pixels(index) {
                Ok(p) => p,
                Err(e) if skip_unreadable && e.unreadable_file().is_some() => return Ok(Some(e)),
                Err(e) => return Err(e),
            };
            let found = output_shape(&pixels, transform);
            if found != shape {
                return Err(Error::ShapeMismatch {
                    index,
                    expected: shape,
                    found,
                });
            }
            let mut rng = item_rng(seed, position);
            render(&pixels, transform, &mut rng, chunk);
            Ok(None)
        })
        .collect::<Result<Vec<Option<Error>>>>()?;
    if outcome.iter().all(Option::is_none) {
        return Ok((out, batch_labels, Vec::new()));
    }
    let kept: Vec<usize> = (0..indices.len())
        .filter(|&i| outcome[i].is_none())
        .collect();
    let out = out.select(ndarray::Axis(0), &kept);
    let batch_labels = kept.iter().map(|&i| batch_labels[i]).collect();
    Ok((out, batch_labels, outcome.into_iter().flatten().collect()))
}

/// A view of some items of another data set, in the order given.
#[derive(Clone, Debug)]
pub struct Subset {
    parent: Arc<dyn Dataset>,
    indices: Vec<usize>,
    labels: Vec<u32>,
}

impl Subset {
    /// The items `indices` of `parent` (repeats allowed).
    ///
    /// # Errors
    /// [`Error::IndexOutOfRange`] if an index is not below `parent.len()`.
    pub fn new(parent: Arc<dyn Dataset>, indices: Vec<usize>) -> Result<Self> {
        let all = parent.labels();
        let labels = indices
            .iter()
            .map(|&index| {
                all.get(index).copied().ok_or(Error::IndexOutOfRange {
                    index,
                    len: all.len(),
                })
            })
            .collect::<Result<Vec<u32>>>()?;
        Ok(Subset {
            parent,
            indices,
            labels,
        })
    }

    /// The parent's indices of this subset's items.
    pub fn indices(&self) -> &[usize] {
        &self.indices
    }

    /// The data set this is a view of.
    pub fn parent(&self) -> &Arc<dyn Dataset> {
        &self.parent
    }
}

impl Dataset for Subset {
    fn len(&self) -> usize {
        self.indices.len()
    }
    fn labels(&self) -> &[u32] {
        &self.labels
    }
    fn channels(&self) -> usize {
        self.parent.channels()
    }
    fn item_shape(&self) -> Option<[usize; 3]> {
        self.parent.item_shape()
    }
    fn pixels(&self, index: usize) -> Result<Pixels<'_>> {
        let &inner = self.indices.get(index).ok_or(Error::IndexOutOfRange {
            index,
            len: self.indices.len(),
        })?;
        self.parent.pixels(inner)
    }
}

/// Splits item indices by class, as the metric-learning papers do: the items of the first half
/// of the classes (sorted class ids, `n_classes / 2` of them) for training, the rest for testing.
/// Indices keep their order within each part.
///
/// # Errors
/// [`Error::TooFewClasses`] with fewer than two classes.
pub fn class_disjoint_split(labels: &[u32]) -> Result<(Vec<usize>, Vec<usize>)> {
    let classes: BTreeSet<u32> = labels.iter().copied().collect();
    if classes.len() < 2 {
        return Err(Error::TooFewClasses {
            n_classes: classes.len(),
        });
    }
    let n_train = classes.len() / 2;
    let first_test = *classes
        .iter()
        .nth(n_train)
        .expect("n_train < number of classes");
    let (train, test): (Vec<usize>, Vec<usize>) =
        (0..labels.len()).partition(|&i| labels[i] < first_test);
    Ok((train, test))
}

/// [`class_disjoint_split`] of a whole data set, as two [`Subset`]s (train, test).
pub fn class_disjoint_subsets(dataset: Arc<dyn Dataset>) -> Result<(Subset, Subset)> {
    let (train, test) = class_disjoint_split(dataset.labels())?;
    Ok((
        Subset::new(dataset.clone(), train)?,
        Subset::new(dataset, test)?,
    ))
}

/// `0..n` in an order shuffled by `seed` (ChaCha8, Fisher–Yates).
pub fn shuffled_indices(n: usize, seed: u64) -> Vec<usize> {
    let mut indices: Vec<usize> = (0..n).collect();
    indices.shuffle(&mut ChaCha8Rng::seed_from_u64(seed));
    indices
}
