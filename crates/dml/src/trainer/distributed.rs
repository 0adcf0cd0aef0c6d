//! One rank of a data-parallel run (docs/training.md, "Several processes and machines"): the
//! rank's share of each global batch, the all-gather that gives the miner and the loss the whole
//! batch, the gradient all-reduce, and the per-step agreement on stopping and skipping.

use dml_distributed::{Launch, ProcessGroup, ReduceOp};
use tch::{Device, Tensor};

use super::Trainer;
use crate::Result;

/// For a launched run on GPUs, one GPU per rank, as torchrun users expect: `LOCAL_RANK`'s entry
/// of `CUDA_VISIBLE_DEVICES` (or GPU `LOCAL_RANK`) becomes this process's only visible device,
/// device 0. Must come before LibTorch initialises CUDA (before the trainer is built).
///
/// # Safety
/// It sets an environment variable: no other thread of the process may read or write the
/// environment at the same time (call it first thing in `main`, before any thread starts).
pub unsafe fn use_local_gpu(launch: &Launch) {
    let visible = std::env::var("CUDA_VISIBLE_DEVICES").ok();
    let entries: Vec<String> = match &visible {
        Some(v) => v.split(',').map(|e| e.trim().to_owned()).collect(),
        None => Vec::new(),
    };
    let mine = entries
        .get(launch.local_rank)
        .cloned()
        .unwrap_or_else(|| launch.local_rank.to_string());
    // SAFETY: the caller guarantees that no other thread touches the environment now.
    unsafe { std::env::set_var("CUDA_VISIBLE_DEVICES", mine) };
}

impl Trainer {
    /// Joins the data-parallel run a launcher started (`dml launch`, torchrun, a Slurm script:
    /// `RANK`, `WORLD_SIZE`, `MASTER_ADDR` and `MASTER_PORT` in [`Launch`]): the process group
    /// over Gloo, or over NCCL when the trainer is on a GPU (this process's own, device 0 after
    /// [`use_local_gpu`]), with `timeout` for the rendezvous and every collective; then
    /// [`Trainer::join`].
    ///
    /// # Errors
    /// A timeout that is not a positive number of seconds; the rendezvous failing.
    pub fn join_launch(&mut self, launch: &Launch, timeout: std::time::Duration) -> Result<()> {
        if timeout.is_zero() {
            return Err(crate::Error::Launch(
                "the collective timeout must be a positive number of seconds".to_owned(),
            ));
        }
        let mut opts = launch.init_options().timeout(timeout);
        if self.device.is_cuda() {
            // NCCL between the ranks' GPUs (this process sees its own GPU as device 0).
            opts = opts.backend(dml_distributed::Backend::Nccl);
            opts.cuda_device = 0;
        }
        let pg = ProcessGroup::init(&opts)?;
        self.join(pg)
    }

    /// Makes this trainer one rank of a data-parallel run. Every rank draws the same global
    /// P × K batch from the same seeded sampler and embeds its own share of whole classes; the
    /// embeddings and labels are all-gathered so that the miner and the loss see the whole
    /// batch while gradients flow through the local rows; the network's gradients are summed
    /// over the ranks (the sum of the local parts is the whole batch's gradient) and the loss's
    /// own parameters (β, proxies), whose gradient every rank already has whole, are averaged.
    /// Rank 0's weights are broadcast now, so every rank starts from them. Rank 0 alone
    /// evaluates and writes the metrics log, checkpoints, plots and report.
    pub fn join(&mut self, pg: ProcessGroup) -> Result<()> {
        let world = pg.world_size();
        let p = self.config.batch.p;
        if p < world {
            return Err(crate::config::ConfigError::BatchPWorld { p, world }.into());
        }
        let mut vars: Vec<(String, Tensor)> = self.vs.variables().into_iter().collect();
        vars.sort_by(|a, b| a.0.cmp(&b.0));
        let mut tensors: Vec<Tensor> = vars.into_iter().map(|(_, t)| t).collect();
        pg.broadcast(&mut tensors, 0)?;
        self.dist = Some(pg);
        Ok(())
    }

    /// Whether this process writes the run's files: always, except on ranks other than 0.
    pub fn is_main(&self) -> bool {
        self.dist.as_ref().is_none_or(|d| d.rank() == 0)
    }

    /// This rank's part of a global batch: classes `r·P/W .. (r+1)·P/W` of its P (the sampler
    /// lays a batch out class by class, K items each), so the ranks' parts differ by at most one
    /// class when the world size does not divide P.
    pub(super) fn local_share<'a>(&self, indices: &'a [usize]) -> &'a [usize] {
        match &self.dist {
            Some(pg) => {
                let (r, w, p) = (pg.rank(), pg.world_size(), self.config.batch.p);
                let k = indices.len() / p;
                &indices[(r * p / w) * k..((r + 1) * p / w) * k]
            }
            None => indices,
        }
    }

    /// The whole batch from every rank's part: embeddings (this rank's rows keep their
    /// gradient, the others' arrive detached) and labels, in rank order. One all-gather: the
    /// labels travel as a last column (exact in f32 below 2^24 classes).
    pub(super) fn gather_batch(
        pg: &ProcessGroup,
        emb: Tensor,
        labels: Vec<u32>,
    ) -> Result<(Tensor, Vec<u32>)> {
        let column = Tensor::from_slice(&labels.iter().map(|&l| l as f32).collect::<Vec<_>>())
            .f_to_device(emb.device())?
            .f_unsqueeze(1)?;
        let packed = Tensor::f_cat(&[emb.f_detach()?, column], 1)?;
        let d = emb.size()[1];
        let parts = pg.all_gather(&packed)?;
        let mut rows = Vec::with_capacity(parts.len());
        let mut all_labels = Vec::new();
        for (r, part) in parts.iter().enumerate() {
            let l = Vec::<f32>::try_from(
                &part
                    .f_select(1, d)?
                    .f_to_device(Device::Cpu)?
                    .f_contiguous()?,
            )?;
            all_labels.extend(l.into_iter().map(|v| v as u32));
            rows.push(if r == pg.rank() {
                emb.shallow_clone()
            } else {
                part.f_narrow(1, 0, d)?
            });
        }
        Ok((Tensor::f_cat(&rows, 0)?, all_labels))
    }

    /// Sums the gradients over the ranks in one bucket, then averages those of the loss's own
    /// parameters (see [`Trainer::join`]).
    pub(super) fn reduce_gradients(&self, pg: &ProcessGroup) -> Result<()> {
        let mut vars: Vec<(String, Tensor)> = self
            .vs
            .variables()
            .into_iter()
            .filter(|(_, v)| v.requires_grad() && v.grad().defined())
            .collect();
        vars.sort_by(|a, b| a.0.cmp(&b.0));
        let mut grads: Vec<Tensor> = vars.iter().map(|(_, v)| v.grad()).collect();
        pg.all_reduce(&mut grads, ReduceOp::Sum)?;
        let world = pg.world_size() as f64;
        let _guard = tch::no_grad_guard();
        for ((name, _), g) in vars.iter().zip(grads.iter_mut()) {
            if name.starts_with("loss.") {
                let _ = g.f_div_scalar_(world)?;
            }
        }
        Ok(())
    }

    /// Before each step of a multi-process run, every rank learns the others' readable item
    /// counts and whether any was interrupted, so they all skip, stop or step together.
    pub(super) fn agree(&self, rows: usize) -> Result<(Vec<usize>, bool)> {
        let Some(pg) = &self.dist else {
            return Ok((vec![rows], self.interrupted()));
        };
        let w = pg.world_size();
        let mut control = vec![0f32; w + 1];
        control[pg.rank()] = rows as f32;
        control[w] = f32::from(u8::from(self.interrupted()));
        // On the group's device: the CPU for Gloo, the rank's GPU for NCCL.
        let mut t = vec![Tensor::from_slice(&control).f_to_device(pg.device())?];
        pg.all_reduce(&mut t, ReduceOp::Sum)?;
        let v = Vec::<f32>::try_from(&t[0].f_to_device(Device::Cpu)?)?;
        Ok((v[..w].iter().map(|&x| x as usize).collect(), v[w] > 0.0))
    }
}
