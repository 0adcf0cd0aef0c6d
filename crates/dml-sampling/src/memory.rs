//! The memory bank of cross-batch memory: a FIFO queue of past embeddings and their labels.

use ndarray::ArrayView2;

use crate::{Error, Result};

/// A first-in-first-out queue of detached embeddings and labels from past batches, the memory
/// of cross-batch memory (XBM: Wang, Zhang, Huang and Scott, *Cross-Batch Memory for Embedding
/// Learning*, CVPR 2020).
///
/// A batch is mined against the bank ([`crate::Miner::mine_reference`] on the
/// `batch × bank` distance matrix) so that a small batch meets thousands of negatives. The bank
/// is a ring of `capacity` slots: [`MemoryBank::enqueue`] writes a batch into the slots after
/// the last one written, wrapping around and overwriting the oldest rows once the ring is full.
/// [`MemoryBank::embeddings`] and [`MemoryBank::labels`] return the filled slots in slot order
/// (not in age order), which is also what pytorch-metric-learning's `CrossBatchMemory` mines
/// over, so indices agree with it.
///
/// Plain `f32` rows in one buffer: `capacity × dim × 4` bytes ([`MemoryBank::footprint_bytes`];
/// 55,000 × 128 is 28 MB).
///
/// # Example
///
/// ```
/// use dml_sampling::MemoryBank;
/// use ndarray::array;
///
/// let mut bank = MemoryBank::new(3, 2)?;
/// let slots = bank.enqueue(array![[1.0f32, 0.0], [0.0, 1.0]].view(), &[7, 8])?;
/// assert_eq!(slots, [0, 1]);
/// let slots = bank.enqueue(array![[0.6f32, 0.8], [0.8, 0.6]].view(), &[9, 9])?;
/// assert_eq!(slots, [2, 0]); // wrapped: the oldest row (label 7) is overwritten
/// assert_eq!(bank.labels(), [9, 8, 9]);
/// assert_eq!(bank.embeddings().row(0).to_vec(), [0.8, 0.6]);
/// # Ok::<(), dml_sampling::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct MemoryBank {
    capacity: usize,
    dim: usize,
    /// `len × dim` row-major; grows to `capacity × dim` and then stays.
    embeddings: Vec<f32>,
    labels: Vec<u32>,
    /// The next slot to write.
    head: usize,
}

impl MemoryBank {
    /// An empty bank of `capacity` rows of `dim` numbers.
    ///
    /// # Errors
    /// [`Error::ZeroCount`] when `capacity` or `dim` is 0.
    pub fn new(capacity: usize, dim: usize) -> Result<MemoryBank> {
        if capacity == 0 {
            return Err(Error::ZeroCount { name: "capacity" });
        }
        if dim == 0 {
            return Err(Error::ZeroCount { name: "dim" });
        }
        Ok(MemoryBank {
            capacity,
            dim,
            embeddings: Vec::new(),
            labels: Vec::new(),
            head: 0,
        })
    }

    /// A bank restored from its parts, as [`MemoryBank::embeddings`], [`MemoryBank::labels`]
    /// and [`MemoryBank::head`] returned them (a checkpoint).
    ///
    /// # Errors
    /// [`Error::MemoryState`] when the parts do not describe a bank of this size.
    pub fn from_parts(
        capacity: usize,
        dim: usize,
        embeddings: Vec<f32>,
        labels: Vec<u32>,
        head: usize,
    ) -> Result<MemoryBank> {
        let mut bank = MemoryBank::new(capacity, dim)?;
        let len = labels.len();
        let consistent = embeddings.len() == len * dim
            && len <= capacity
            && head < capacity
            && (len == capacity || head == len);
        if !consistent {
            return Err(Error::MemoryState {
                capacity,
                dim,
                rows: len,
                numbers: embeddings.len(),
                head,
            });
        }
        bank.embeddings = embeddings;
        bank.labels = labels;
        bank.head = head;
        Ok(bank)
    }

    /// Number of slots.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Length of each embedding.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Number of filled slots (`capacity` once the ring has wrapped).
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// `true` before the first [`MemoryBank::enqueue`].
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// The slot the next enqueue starts at.
    pub fn head(&self) -> usize {
        self.head
    }

    /// The filled slots' embeddings, `len × dim`, in slot order.
    pub fn embeddings(&self) -> ArrayView2<'_, f32> {
        ArrayView2::from_shape((self.len(), self.dim), &self.embeddings)
            .expect("the buffer holds len × dim numbers")
    }

    /// The filled slots' labels, in slot order.
    pub fn labels(&self) -> &[u32] {
        &self.labels
    }

    /// Bytes the bank holds when full (embeddings and labels).
    pub fn footprint_bytes(&self) -> usize {
        self.capacity * (self.dim * std::mem::size_of::<f32>() + std::mem::size_of::<u32>())
    }

    /// Writes a batch into the slots after the last one written, overwriting the oldest rows
    /// once the ring is full, and returns the slot of each row: `slots[i]` holds row `i` (what
    /// [`crate::Tuples::remove_self_comparisons`] takes to drop a row's comparison with its own
    /// copy).
    ///
    /// # Errors
    /// [`Error::MemoryShape`] when the rows are not `dim` long or do not match the labels;
    /// [`Error::MemoryTooSmall`] when the batch has more rows than the bank has slots.
    pub fn enqueue(&mut self, embeddings: ArrayView2<'_, f32>, labels: &[u32]) -> Result<Vec<u32>> {
        let (rows, cols) = embeddings.dim();
        if cols != self.dim || rows != labels.len() {
            return Err(Error::MemoryShape {
                rows,
                cols,
                n_labels: labels.len(),
                dim: self.dim,
            });
        }
        if rows > self.capacity {
            return Err(Error::MemoryTooSmall {
                capacity: self.capacity,
                batch: rows,
            });
        }
        let mut slots = Vec::with_capacity(rows);
        for (row, &label) in embeddings.rows().into_iter().zip(labels) {
            let slot = self.head;
            if slot == self.labels.len() {
                self.labels.push(label);
                self.embeddings.extend(row.iter().copied());
            } else {
                self.labels[slot] = label;
                let at = slot * self.dim;
                for (dst, &x) in self.embeddings[at..at + self.dim].iter_mut().zip(row) {
                    *dst = x;
                }
            }
            slots.push(slot as u32);
            self.head = (slot + 1) % self.capacity;
        }
        Ok(slots)
    }
}
