//! Seeded synthetic inputs: clustered unit-norm embeddings with P×K labels, and images.

use ndarray::{Array2, Array4, Axis};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};

/// `n × d` standard normal values.
pub fn gaussian(n: usize, d: usize, seed: u64) -> Array2<f32> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    Array2::from_shape_simple_fn((n, d), || StandardNormal.sample(&mut rng))
}

/// `n_classes × per_class` labels, each class's items together (`0,0,..,1,1,..`), as a PK batch
/// or a retrieval set lays them out.
pub fn labels(n_classes: usize, per_class: usize) -> Vec<u32> {
    (0..n_classes as u32)
        .flat_map(|c| std::iter::repeat_n(c, per_class))
        .collect()
}

/// Labels for classes of the given sizes, each class's items together.
pub fn labels_sized(sizes: &[usize]) -> Vec<u32> {
    sizes
        .iter()
        .enumerate()
        .flat_map(|(c, &n)| std::iter::repeat_n(c as u32, n))
        .collect()
}

/// Class sizes drawn uniformly from `min..=max` (seeded) until they add up to `total` (the last
/// class takes the remainder, at least `min`): the shape of Stanford Online Products' test split.
pub fn sop_like_sizes(total: usize, min: usize, max: usize, seed: u64) -> Vec<usize> {
    use rand::Rng;
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut sizes = Vec::new();
    let mut left = total;
    while left >= min + max {
        let n = rng.random_range(min..=max);
        sizes.push(n);
        left -= n;
    }
    sizes.push(left);
    sizes
}

/// Unit-norm embeddings clustered by label: a random centre per class plus noise of the same
/// scale, so distances spread as they do in a half-trained network (miners find some easy and
/// some hard tuples, retrieval metrics are neither 0 nor 1).
pub fn clustered(labels: &[u32], d: usize, seed: u64) -> Array2<f32> {
    let n_classes = labels.iter().max().map_or(0, |&m| m as usize + 1);
    let centres = gaussian(n_classes, d, seed);
    let mut x = gaussian(labels.len(), d, seed.wrapping_add(1));
    for (mut row, &l) in x.axis_iter_mut(Axis(0)).zip(labels) {
        row += &centres.row(l as usize);
        let norm = row.dot(&row).sqrt().max(1e-12);
        row /= norm;
    }
    x
}

/// `n` grey `side × side` images with values in [0, 1).
pub fn images(n: usize, side: usize, seed: u64) -> Array4<f32> {
    let g = gaussian(n, side * side, seed);
    let x = g.mapv(|v| 0.5 + 0.15 * v).mapv(|v| v.clamp(0.0, 0.999));
    x.into_shape_with_order((n, 1, side, side))
        .expect("n * side * side values")
}

/// `n` RGB `side × side` images, normalised as ImageNet networks expect (values about
/// `N(0, 1)` per channel, what the ImageNet mean and deviation make of photographs).
pub fn rgb_images(n: usize, side: usize, seed: u64) -> Array4<f32> {
    gaussian(n, 3 * side * side, seed)
        .into_shape_with_order((n, 3, side, side))
        .expect("n * 3 * side * side values")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clustered_rows_are_unit_norm_and_seeded() {
        let l = labels(3, 4);
        assert_eq!(l, [0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2]);
        let x = clustered(&l, 8, 7);
        for row in x.rows() {
            assert!((row.dot(&row) - 1.0).abs() < 1e-5);
        }
        assert_eq!(x, clustered(&l, 8, 7));
    }
}

/// The inputs of the cross-batch-memory cases: a batch of `b` items (classes of `k`) and a
/// memory of `size` rows labelled from 2,000 classes, the batch's among them, all drawn around
/// one set of class centres.
#[derive(Debug, Clone)]
pub struct MemoryWorkload {
    /// The batch's labels.
    pub labels: Vec<u32>,
    /// The batch, `b × d`.
    pub emb: Array2<f32>,
    /// The memory's rows, `size × d`.
    pub mem: Array2<f32>,
    /// The memory's labels (`i mod 2,000`).
    pub mem_labels: Vec<u32>,
}

/// [`MemoryWorkload`] for a batch of `b` in classes of `k`, embeddings of `d`, a memory of `size`.
pub fn memory_workload(b: usize, k: usize, d: usize, size: usize) -> MemoryWorkload {
    let labels = labels(b / k, k);
    let mem_labels: Vec<u32> = (0..size).map(|i| (i % 2000) as u32).collect();
    let all: Vec<u32> = labels.iter().chain(&mem_labels).copied().collect();
    let x = clustered(&all, d, 6);
    MemoryWorkload {
        emb: x.slice(ndarray::s![..b, ..]).to_owned(),
        mem: x.slice(ndarray::s![b.., ..]).to_owned(),
        labels,
        mem_labels,
    }
}

impl MemoryWorkload {
    /// A full memory bank of the workload's rows, enqueued batch by batch as training fills it.
    ///
    /// # Errors
    /// [`dml_sampling::MemoryBank`]'s own (none for a consistent workload).
    pub fn bank(&self) -> dml_sampling::Result<dml_sampling::MemoryBank> {
        let (size, b) = (self.mem.nrows(), self.labels.len());
        let mut bank = dml_sampling::MemoryBank::new(size, self.mem.ncols())?;
        for start in (0..size).step_by(b) {
            let end = (start + b).min(size);
            bank.enqueue(
                self.mem.slice(ndarray::s![start..end, ..]),
                &self.mem_labels[start..end],
            )?;
        }
        Ok(bank)
    }
}

/// The held-out half of Fashion-MNIST's class-disjoint protocol as raw input: the held-out
/// items of `dml_data::idx` (classes 5–9, 35,000 images from the training and test files),
/// each flattened to its pixels and L2-normalised, with their labels. `dir` holds the four IDX
/// files that `cargo xtask data fashion-mnist` stores.
pub fn fashion_mnist_held_out(dir: &std::path::Path) -> anyhow::Result<(Array2<f32>, Vec<u32>)> {
    let split = dml::data::idx(dir)?;
    let dml::data::HeldOut::Set(test) = split.held_out() else {
        anyhow::bail!("an IDX folder's split has one held-out set, not a query and a gallery");
    };
    let mut rows: Vec<f32> = Vec::new();
    for i in 0..test.len() {
        let pixels = test.pixels(i)?;
        rows.extend(pixels.data.iter().map(|&p| f32::from(p) / pixels.max_value));
    }
    let d = rows.len() / test.len().max(1);
    let mut emb = Array2::from_shape_vec((test.len(), d), rows)?;
    dml_kernels::l2_normalize_inplace(emb.view_mut());
    Ok((emb, test.labels().to_vec()))
}
