//! The cross-batch memory of a training run (`[memory]`, docs/training.md): the queue of past
//! embeddings and the loss of a batch against it. The [`Trainer`](crate::Trainer) adds that
//! loss to the batch's own and enqueues the batch after the optimiser step; the bench suite
//! times the same calls against pml's `CrossBatchMemory`.

use dml_losses::Loss;
use dml_sampling::{MemoryBank, Miner};
use ndarray::ArrayView2;
use tch::{Device, Kind, Tensor};

use crate::Result;

/// A [`MemoryBank`] (the rows the miners read, on the CPU) and the same rows as a tensor on the
/// training device (what the loss reads), kept in step: the tensor is allocated once and each
/// enqueue writes only the batch's rows into it, where copying the whole bank to the device at
/// every step would move 28 MB at 55,000 × 128.
///
/// One step of a training loop with a memory, as the [`Trainer`](crate::Trainer) takes it:
///
/// ```
/// use dml::losses::{ContrastiveConfig, Loss};
/// use dml::memory::CrossBatchMemory;
/// use dml::sampling::MemoryBank;
/// use tch::{Device, Kind, Tensor};
///
/// # fn main() -> dml::Result<()> {
/// let loss = ContrastiveConfig::default().init()?;
/// let mut memory = CrossBatchMemory::new(MemoryBank::new(1024, 8)?, Device::Cpu)?;
/// let labels = [0u32, 0, 1, 1];
/// for step in 0..3 {
///     // The network's output for the batch (here: random rows).
///     let embeddings = Tensor::randn([4, 8], (Kind::Float, Device::Cpu)).set_requires_grad(true);
///     let detached = dml::kernels::tensor::to_array2(&embeddings)?;
///     let mut total = loss.forward(&embeddings, &labels, None)?;
///     let mut rng = rand::rng();
///     // L(B, M) against the memory as it stood before this step (none at the first step).
///     if let Some((term, _)) =
///         memory.loss_term(&loss, None, &embeddings, &labels, &mut rng)?
///     {
///         total = total + term;
///     }
///     total.backward();
///     // ... the optimiser step, then the batch joins the memory.
///     memory.enqueue(detached.view(), &labels)?;
///     assert_eq!(memory.bank().len(), 4 * (step + 1));
/// }
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct CrossBatchMemory {
    bank: MemoryBank,
    /// `capacity × dim`, `f32`; its first `bank.len()` rows are the bank's, in slot order.
    rows: Tensor,
    /// `capacity × (dim + 2)`: each row of `rows` followed by 1 and its squared norm, so that
    /// one GEMM `[−2x, ‖x‖², 1] · augᵀ` gives the miner's squared Euclidean distances with
    /// nothing recomputed for the memory.
    aug: Tensor,
    /// The miner's `B × len` distances on the CPU, reused from step to step: LibTorch's GEMM
    /// writes into it directly (no 4 MB allocation and copy per step at 128 × 8,192).
    scratch: std::sync::Mutex<ndarray::Array2<f32>>,
}

/// `[rows, 1, ‖row‖²]`.
fn augmented(rows: &Tensor) -> Result<Tensor> {
    let norms = rows
        .f_square()?
        .f_sum_dim_intlist([1_i64].as_slice(), true, None::<Kind>)?;
    let ones = norms.f_ones_like()?;
    Ok(Tensor::f_cat(&[rows.shallow_clone(), ones, norms], 1)?)
}

impl CrossBatchMemory {
    /// The memory holding `bank` (empty, or restored from a checkpoint), its tensor on `device`.
    ///
    /// # Errors
    /// LibTorch's own (no memory on the device).
    pub fn new(bank: MemoryBank, device: Device) -> Result<CrossBatchMemory> {
        let rows = Tensor::f_zeros(
            [bank.capacity() as i64, bank.dim() as i64],
            (Kind::Float, device),
        )?;
        let aug = Tensor::f_zeros(
            [bank.capacity() as i64, bank.dim() as i64 + 2],
            (Kind::Float, device),
        )?;
        if !bank.is_empty() {
            let filled = dml_kernels::tensor::from_array(bank.embeddings())?.f_to_device(device)?;
            rows.f_narrow(0, 0, bank.len() as i64)?.f_copy_(&filled)?;
            aug.f_narrow(0, 0, bank.len() as i64)?
                .f_copy_(&augmented(&filled)?)?;
        }
        Ok(CrossBatchMemory {
            bank,
            rows,
            aug,
            scratch: std::sync::Mutex::new(ndarray::Array2::zeros((0, 0))),
        })
    }

    /// The queue itself.
    pub fn bank(&self) -> &MemoryBank {
        &self.bank
    }

    /// Writes a batch (`rows`, one label each) after the newest rows, overwriting the oldest
    /// once the memory is full ([`MemoryBank::enqueue`]), in the bank and in its tensor.
    ///
    /// # Errors
    /// As [`MemoryBank::enqueue`].
    pub fn enqueue(&mut self, rows: ArrayView2<'_, f32>, labels: &[u32]) -> Result<()> {
        let slots = self.bank.enqueue(rows, labels)?;
        let slots: Vec<i64> = slots.iter().map(|&s| i64::from(s)).collect();
        let index = Tensor::f_from_slice(&slots)?.f_to_device(self.rows.device())?;
        let src = dml_kernels::tensor::from_array(rows)?.f_to_device(self.rows.device())?;
        let _ = self.rows.f_index_copy_(0, &index, &src)?;
        let _ = self.aug.f_index_copy_(0, &index, &augmented(&src)?)?;
        Ok(())
    }

    /// `L(B, M)`: the loss of the batch `embeddings` (with gradient) against every row of the
    /// memory, mined by `miner` on the
    /// `B × M` matrix of the loss's metric when there is one (anchors from the batch, the other
    /// ends from the memory), over every pair or triplet otherwise. The memory's rows carry no
    /// gradient. Returns the loss and the number of tuples mined (0 without a miner), or `None`
    /// while the memory is empty.
    ///
    /// # Errors
    /// A miner or loss that cannot work against a reference set (they name themselves), shapes
    /// that do not fit, or LibTorch's own errors.
    pub fn loss_term(
        &self,
        loss: &dyn Loss,
        miner: Option<&dyn Miner>,
        embeddings: &Tensor,
        labels: &[u32],
        rng: &mut dyn rand::RngCore,
    ) -> Result<Option<(Tensor, usize)>> {
        let bank = &self.bank;
        if bank.is_empty() {
            return Ok(None);
        }
        let metric = loss.metric();
        let memory = self
            .rows
            .f_narrow(0, 0, bank.len() as i64)?
            .f_to_device(embeddings.device())?
            .f_to_kind(embeddings.kind())?;
        let tuples = match miner {
            Some(miner) => {
                // The B × M distances by LibTorch, on the training device: on the CPU its GEMM
                // runs on the threads the step's other LibTorch ops just used, where a rayon
                // GEMM would compete with them while they spin down (5 ms against 2.5 ms at
                // B 128 × M 8,192 × D 128 on 2 cores).
                let _guard = tch::no_grad_guard();
                // A miner that reads only the order of each row mines the same tuples from the
                // squared distances: no square root over the B × M matrix.
                let mine_metric = match metric {
                    dml_kernels::Metric::Euclidean if miner.order_only() => {
                        dml_kernels::Metric::SquaredEuclidean
                    }
                    m => m,
                };
                Some(self.with_miner_distances(mine_metric, embeddings, |dist| {
                    Ok(miner.mine_reference(dist, mine_metric, labels, bank.labels(), rng)?)
                })?)
            }
            None => None,
        };
        let reference = dml_losses::Reference {
            embeddings: &memory,
            labels: bank.labels(),
        };
        let term = loss.forward_reference(embeddings, labels, &reference, tuples.as_ref())?;
        Ok(Some((term, tuples.as_ref().map_or(0, |t| t.len()))))
    }
}

impl CrossBatchMemory {
    /// Runs `f` on the miner's distances ([`CrossBatchMemory::miner_distances`]); on the CPU
    /// with a Euclidean metric, computed in place in the kept scratch array.
    fn with_miner_distances<R>(
        &self,
        metric: dml_kernels::Metric,
        embeddings: &Tensor,
        f: impl FnOnce(ArrayView2<'_, f32>) -> Result<R>,
    ) -> Result<R> {
        use dml_kernels::Metric;
        let euclidean = matches!(metric, Metric::Euclidean | Metric::SquaredEuclidean);
        if !euclidean || self.rows.device() != Device::Cpu || embeddings.device() != Device::Cpu {
            let dist = dml_kernels::tensor::to_array2(&self.miner_distances(metric, embeddings)?)?;
            return f(dist.view());
        }
        let (b, len) = (embeddings.size()[0], self.bank.len() as i64);
        let mut scratch = self.scratch.lock().unwrap_or_else(|p| p.into_inner());
        if scratch.dim() != (b as usize, len as usize) {
            *scratch = ndarray::Array2::zeros((b as usize, len as usize));
        }
        {
            let left = Self::left_factor(embeddings)?;
            let ptr = scratch
                .as_slice_mut()
                .expect("a fresh array is contiguous")
                .as_mut_ptr();
            // SAFETY: `out` views the scratch array's contiguous `b × len` f32 buffer, which
            // outlives it (the lock is held, and `out` is dropped at the end of this block), and
            // nothing else reads or writes that buffer meanwhile.
            let mut out = unsafe {
                Tensor::f_from_blob(ptr.cast(), &[b, len], &[len, 1], Kind::Float, Device::Cpu)?
            };
            let _ = left.f_mm_out(&out, &self.aug.f_narrow(0, 0, len)?.f_tr()?)?;
            let _ = out.f_clamp_min_(0.0)?;
            if metric == Metric::Euclidean {
                let _ = out.f_sqrt_()?;
            }
        }
        f(scratch.view())
    }

    /// `[−2x, ‖x‖², 1]` of the batch, detached, in f32.
    fn left_factor(embeddings: &Tensor) -> Result<Tensor> {
        let x = embeddings.f_detach()?.f_to_kind(Kind::Float)?;
        let norms = x
            .f_square()?
            .f_sum_dim_intlist([1_i64].as_slice(), true, None::<Kind>)?;
        let ones = norms.f_ones_like()?;
        Ok(Tensor::f_cat(&[x.f_mul_scalar(-2.0)?, norms, ones], 1)?)
    }

    /// The `B × len` matrix of `metric` between the batch and the memory, for the miner (no
    /// gradient). Euclidean metrics take one GEMM against the kept `[rows, 1, ‖row‖²]` and one
    /// or two in-place passes; the others go through [`dml_kernels::tensor::pairwise`].
    fn miner_distances(&self, metric: dml_kernels::Metric, embeddings: &Tensor) -> Result<Tensor> {
        use dml_kernels::Metric;
        let len = self.bank.len() as i64;
        match metric {
            Metric::Euclidean | Metric::SquaredEuclidean => {
                let left = Self::left_factor(embeddings)?;
                let mut sq = left.f_mm(&self.aug.f_narrow(0, 0, len)?.f_tr()?)?;
                let _ = sq.f_clamp_min_(0.0)?;
                if metric == Metric::Euclidean {
                    let _ = sq.f_sqrt_()?;
                }
                Ok(sq)
            }
            _ => {
                let x = embeddings.f_detach()?.f_to_kind(Kind::Float)?;
                let memory = self.rows.f_narrow(0, 0, len)?;
                Ok(dml_kernels::tensor::pairwise(metric, &x, &memory)?)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows_of(m: &CrossBatchMemory) -> Vec<f32> {
        let t = m.rows.narrow(0, 0, m.bank.len() as i64).contiguous();
        Vec::<f32>::try_from(t.view([-1])).unwrap()
    }

    /// The tensor stays equal to the bank through filling and wrapping, and a memory rebuilt
    /// from a bank (a resumed run) starts equal to it.
    #[test]
    fn the_tensor_follows_the_bank() {
        let mut m = CrossBatchMemory::new(MemoryBank::new(5, 2).unwrap(), Device::Cpu).unwrap();
        for step in 0..4u32 {
            let batch = ndarray::Array2::from_shape_fn((2, 2), |(i, j)| {
                (step * 10 + i as u32 * 2 + j as u32) as f32
            });
            m.enqueue(batch.view(), &[step, step]).unwrap();
            let bank: Vec<f32> = m.bank.embeddings().iter().copied().collect();
            assert_eq!(rows_of(&m), bank, "step {step}");
        }
        // 8 rows into 5 slots: rows 5, 6, 7 overwrote slots 0, 1, 2.
        assert_eq!(m.bank.embeddings().row(0).to_vec(), vec![22.0, 23.0]);
        assert_eq!(m.bank.embeddings().row(2).to_vec(), vec![32.0, 33.0]);
        assert_eq!(m.bank.embeddings().row(3).to_vec(), vec![12.0, 13.0]);
        let rebuilt = CrossBatchMemory::new(m.bank.clone(), Device::Cpu).unwrap();
        assert_eq!(rows_of(&rebuilt), rows_of(&m));
    }

    /// The miner's distances, from the kept `[rows, 1, ‖row‖²]`, match a naive computation
    /// over the bank for every metric, through wrapping and after a rebuild.
    #[test]
    fn miner_distances_match_a_naive_computation() {
        use dml_kernels::Metric;
        let mut m = CrossBatchMemory::new(MemoryBank::new(7, 3).unwrap(), Device::Cpu).unwrap();
        let mut next = 0.37f32;
        let mut draw = move || {
            next = (next * 7.31 + 0.113).fract();
            next * 2.0 - 1.0
        };
        for step in 0..4u32 {
            let batch = ndarray::Array2::from_shape_simple_fn((3, 3), &mut draw);
            m.enqueue(batch.view(), &[step, step, step + 1]).unwrap();
        }
        let queries = ndarray::Array2::from_shape_simple_fn((2, 3), &mut draw);
        let q = dml_kernels::tensor::from_array(queries.view()).unwrap();
        for memory in [
            &m,
            &CrossBatchMemory::new(m.bank.clone(), Device::Cpu).unwrap(),
        ] {
            for metric in [
                Metric::Euclidean,
                Metric::SquaredEuclidean,
                Metric::Cosine,
                Metric::Dot,
            ] {
                let got =
                    dml_kernels::tensor::to_array2(&memory.miner_distances(metric, &q).unwrap())
                        .unwrap();
                // The in-place path the loss takes gives the same numbers.
                let in_place = memory
                    .with_miner_distances(metric, &q, |d| Ok(d.to_owned()))
                    .unwrap();
                assert_eq!(in_place, got, "{metric:?}");
                let bank = memory.bank.embeddings();
                assert_eq!(got.dim(), (2, 7));
                for i in 0..2 {
                    for j in 0..7 {
                        let (a, b) = (queries.row(i), bank.row(j));
                        let dot: f64 = a.iter().zip(b).map(|(&x, &y)| f64::from(x * y)).sum();
                        let sq: f64 = a
                            .iter()
                            .zip(b)
                            .map(|(&x, &y)| f64::from(x - y).powi(2))
                            .sum();
                        let norm = |v: ndarray::ArrayView1<'_, f32>| {
                            v.iter().map(|&x| f64::from(x).powi(2)).sum::<f64>().sqrt()
                        };
                        let want = match metric {
                            Metric::Euclidean => sq.sqrt(),
                            Metric::SquaredEuclidean => sq,
                            Metric::Cosine => dot / (norm(a) * norm(b)),
                            Metric::Dot => dot,
                        };
                        let g = f64::from(got[[i, j]]);
                        assert!(
                            (g - want).abs() < 1e-5,
                            "{metric:?} [{i}, {j}]: {g} vs {want}"
                        );
                    }
                }
            }
        }
    }

    /// Triplet + batch-hard against the memory (mined on squared distances, the miner reading
    /// only their order) picks the triplets a naive arg-max / arg-min over the f64 Euclidean
    /// distances picks, and gives the loss of those triplets.
    #[test]
    fn batch_hard_against_the_memory_picks_the_naive_triplets() {
        use dml_losses::{LossConfig, LossContext};
        use dml_sampling::MinerConfig;
        use rand::SeedableRng;
        let (b, m, d) = (6usize, 40usize, 5usize);
        let mut next = 0.61f32;
        let mut draw = move || {
            next = (next * 9.17 + 0.271).fract();
            next * 2.0 - 1.0
        };
        let mut memory =
            CrossBatchMemory::new(MemoryBank::new(m, d).unwrap(), Device::Cpu).unwrap();
        let mem_rows = ndarray::Array2::from_shape_simple_fn((m, d), &mut draw);
        let mem_labels: Vec<u32> = (0..m as u32).map(|i| i % 4).collect();
        memory.enqueue(mem_rows.view(), &mem_labels).unwrap();
        let batch = ndarray::Array2::from_shape_simple_fn((b, d), &mut draw);
        let labels: Vec<u32> = (0..b as u32).map(|i| i % 3).collect();
        let x = dml_kernels::tensor::from_array(batch.view()).unwrap();

        let vs = tch::nn::VarStore::new(Device::Cpu);
        let cfg: LossConfig = toml::from_str("kind = \"triplet\"\nmargin = 0.5").unwrap();
        let loss = cfg.build(&vs.root(), LossContext::new(3, d)).unwrap();
        let miner = toml::from_str::<MinerConfig>("kind = \"batch_hard\"")
            .unwrap()
            .build(dml_sampling::MinerContext { embedding_dim: d })
            .unwrap();
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
        let (got, n) = memory
            .loss_term(loss.as_ref(), Some(miner.as_ref()), &x, &labels, &mut rng)
            .unwrap()
            .unwrap();
        assert_eq!(n, b, "one triplet per anchor");

        let dist = |i: usize, j: usize| -> f64 {
            batch
                .row(i)
                .iter()
                .zip(mem_rows.row(j))
                .map(|(&p, &q)| f64::from(p - q).powi(2))
                .sum::<f64>()
                .sqrt()
        };
        let mut want = 0.0;
        let mut nonzero = 0;
        for (a, &label) in labels.iter().enumerate() {
            let same = |j: &usize| mem_labels[*j] == label;
            let p = (0..m)
                .filter(same)
                .max_by(|&i, &j| dist(a, i).total_cmp(&dist(a, j)));
            let n = (0..m)
                .filter(|j| !same(j))
                .min_by(|&i, &j| dist(a, i).total_cmp(&dist(a, j)));
            let v = dist(a, p.unwrap()) - dist(a, n.unwrap()) + 0.5;
            if v > 0.0 {
                want += v;
                nonzero += 1;
            }
        }
        assert!(nonzero > 0);
        want /= f64::from(nonzero);
        let got = got.double_value(&[]);
        assert!((got - want).abs() < 1e-5, "{got} vs {want}");
    }
}
