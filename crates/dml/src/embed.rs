//! Embedding data sets with a network: the held-out evaluation of the [`Trainer`], and
//! [`TrainedModel`], a network restored from a checkpoint for `dml embed` and for applications
//! (no loss, miner, sampler or optimiser is built).
//!
//! [`Trainer`]: crate::Trainer

use std::path::{Path, PathBuf};

use dml_data::{Dataset, Split, Transform};
use dml_models::{EmbeddingNet, InputShape};
use ndarray::Array2;
use tch::{Device, nn};

use crate::checkpoint::{self, Checkpoint};
use crate::observe::{LogLines, Observer, Reporter};
use crate::{Config, Result};

/// Which classes of the data set's split ([`dml_data::Split`]) to embed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SplitPart {
    /// The training classes.
    Train,
    /// The held-out classes.
    Test,
}

/// What an [`Embedder`] makes of each item: the rows a held-out evaluation compares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Output {
    /// The network's embeddings.
    Embeddings,
    /// The backbone's pooled features (L2-normalised when the network normalises its
    /// embeddings): the frozen-backbone baseline.
    BackboneFeatures,
    /// The item itself after the test transform, flattened (L2-normalised when the network
    /// normalises its embeddings): the raw-input baseline.
    RawInput,
}

/// A network, its device, and how items are prepared for it: everything embedding a data set
/// needs, borrowed from a [`Trainer`](crate::Trainer) or a [`TrainedModel`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct Embedder<'a> {
    net: &'a EmbeddingNet,
    device: Device,
    /// The test transform.
    transform: Option<&'a Transform>,
    batch_size: usize,
    seed: u64,
    skip_unreadable: bool,
    /// What each item becomes.
    output: Output,
}

/// Embeddings of a data set, their labels, and the files left out as unreadable
/// (`data.skip_unreadable`; their items have no row).
pub(crate) type Embedded = (Array2<f32>, Vec<u32>, Vec<PathBuf>);

impl<'a> Embedder<'a> {
    /// `net` on `device`, with the test transform, evaluation batch size and `skip_unreadable`
    /// of `config`; `seed` seeds the (test-time) transforms.
    pub fn new(net: &'a EmbeddingNet, device: Device, config: &'a Config, seed: u64) -> Self {
        Embedder {
            net,
            device,
            transform: config.transform.test.as_ref(),
            batch_size: config.batch.eval_batch_size,
            seed,
            skip_unreadable: config.data.skip_unreadable(),
            output: Output::Embeddings,
        }
    }

    /// The same, making `output` of each item.
    pub fn with_output(self, output: Output) -> Self {
        Embedder { output, ..self }
    }

    /// Embeds the whole of `dataset` in batches, with the test transform and the network in
    /// evaluation mode (or, for [`Output::RawInput`], without the network).
    pub fn embed(&self, dataset: &dyn Dataset) -> Result<Embedded> {
        let n = dataset.len();
        let bs = self.batch_size.max(1);
        let dim = match self.output {
            Output::Embeddings => self.net.embedding_dim() as usize,
            Output::BackboneFeatures => self.net.feature_dim() as usize,
            Output::RawInput => dml_data::batch_item_shape(dataset, self.transform)?
                .iter()
                .product(),
        };
        let mut out = Array2::<f32>::zeros((n, dim));
        let mut labels = Vec::with_capacity(n);
        let mut unreadable = Vec::new();
        let _guard = tch::no_grad_guard();
        for start in (0..n).step_by(bs) {
            let idx: Vec<usize> = (start..(start + bs).min(n)).collect();
            let ((x, y), files) = load_items(
                dataset,
                &idx,
                self.transform,
                self.seed,
                self.skip_unreadable,
            )?;
            unreadable.extend(files);
            if y.is_empty() {
                continue;
            }
            let row = labels.len();
            let mut rows = out.slice_mut(ndarray::s![row..row + y.len(), ..]);
            match self.output {
                Output::RawInput => {
                    for (mut r, item) in rows.outer_iter_mut().zip(x.outer_iter()) {
                        r.iter_mut().zip(item.iter()).for_each(|(r, &v)| *r = v);
                    }
                }
                Output::Embeddings | Output::BackboneFeatures => {
                    let xs = dml_kernels::tensor::from_array(x.view())?.f_to_device(self.device)?;
                    let emb = if self.output == Output::Embeddings {
                        self.net.embed(&xs, false)?
                    } else {
                        let f = self.net.features(&xs, false)?;
                        if self.net.config().normalize() {
                            dml_kernels::tensor::f_l2_normalize(&f)?
                        } else {
                            f
                        }
                    };
                    rows.assign(&dml_kernels::tensor::to_array2(&emb)?);
                }
            }
            labels.extend(y);
        }
        if labels.len() < n {
            out = out.slice(ndarray::s![..labels.len(), ..]).to_owned();
        }
        if self.output == Output::RawInput && self.net.config().normalize() {
            dml_kernels::l2_normalize_inplace(out.view_mut());
        }
        Ok((out, labels, unreadable))
    }
}

/// A batch and its labels.
pub(crate) type LoadedBatch = (ndarray::Array4<f32>, Vec<u32>);

/// A loaded batch and the files left out of it as unreadable (`data.skip_unreadable`).
pub(crate) type BatchLoad = (LoadedBatch, Vec<PathBuf>);

/// [`dml_data::load_batch`], or with `skip_unreadable` [`dml_data::load_batch_skipping`]: the
/// batch, its labels, and the files left out.
pub(crate) fn load_items(
    dataset: &dyn Dataset,
    indices: &[usize],
    transform: Option<&Transform>,
    seed: u64,
    skip_unreadable: bool,
) -> Result<BatchLoad> {
    if !skip_unreadable {
        return Ok((
            dml_data::load_batch(dataset, indices, transform, seed)?,
            Vec::new(),
        ));
    }
    let (x, y, errors) = dml_data::load_batch_skipping(dataset, indices, transform, seed)?;
    let files = errors
        .iter()
        .filter_map(|e| e.unreadable_file().map(Path::to_path_buf))
        .collect();
    Ok(((x, y), files))
}

/// The network a run's config describes, under `model` in a new var store on `device`, sized to
/// the training items after the training transform. With a checkpoint, a TorchScript backbone
/// is the checkpoint's copy of the module (its buffers as they were saved); otherwise its file.
pub(crate) fn build_net(
    config: &Config,
    split: &Split,
    device: Device,
    ckpt: Option<&Checkpoint>,
) -> Result<(nn::VarStore, EmbeddingNet)> {
    let train_tf = config.transform.train.as_ref();
    let shape = dml_data::batch_item_shape(split.train.as_ref(), train_tf)?;
    let input = InputShape::new(shape[0] as i64, shape[1] as i64, shape[2] as i64);
    let vs = nn::VarStore::new(device);
    let root = vs.root() / "model";
    let net = match ckpt.and_then(|c| c.torchscript.as_deref()) {
        Some(bytes) => EmbeddingNet::with_torchscript_bytes(
            &root,
            &config.model,
            input,
            bytes,
            "(the checkpoint's copy)",
        )?,
        None => EmbeddingNet::new(&root, &config.model, input)?,
    };
    Ok((vs, net))
}

/// A trained network restored from a checkpoint, for embedding only: the model's weights and
/// the run's data set and test transform, without the loss, miner, sampler or optimiser a
/// [`Trainer`](crate::Trainer) builds.
///
/// ```no_run
/// # fn main() -> dml::Result<()> {
/// use dml::embed::TrainedModel;
/// let model = TrainedModel::load("runs/mnist/checkpoint.safetensors".as_ref())?;
/// let (embeddings, labels) = model.embed_split(dml::embed::SplitPart::Test)?;
/// println!("{} held-out embeddings of {} dimensions", labels.len(), embeddings.ncols());
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct TrainedModel {
    config: Config,
    device: Device,
    vs: nn::VarStore,
    net: EmbeddingNet,
    split: Split,
    /// Where the warnings go.
    observer: Reporter,
}

impl TrainedModel {
    /// The network of the checkpoint at `path`, with the config it was trained with.
    ///
    /// # Errors
    /// The checkpoint cannot be read, its config is invalid, or its weights do not fit the
    /// network the config describes.
    pub fn load(path: &Path) -> Result<TrainedModel> {
        let ckpt = checkpoint::load(path)?;
        let config = Config::from_toml_str(
            &ckpt.state.config,
            &format!("{} (embedded config)", path.display()),
        )?;
        TrainedModel::from_checkpoint(config, &ckpt)
    }

    /// The network `config` describes, holding the weights of `ckpt` (its `model.*` tensors;
    /// the loss's and optimiser's are not needed). `config` may differ from the checkpoint's in
    /// its data set (to embed another one) but not in its model.
    ///
    /// # Errors
    /// As [`TrainedModel::load`].
    pub fn from_checkpoint(config: Config, ckpt: &Checkpoint) -> Result<TrainedModel> {
        if config.run.threads > 0 {
            tch::set_num_threads(config.run.threads as i32);
        }
        let device = config.run.device.resolve()?;
        let split = config.data.build()?;
        let (vs, net) = build_net(&config, &split, device, Some(ckpt))?;
        checkpoint::restore_vars(&ckpt.vars, &vs)?;
        Ok(TrainedModel {
            config,
            device,
            vs,
            net,
            split,
            observer: Reporter::new(Box::new(LogLines)),
        })
    }

    /// Sends warnings to `observer` (by default [`LogLines`]: stderr) and returns the one it
    /// replaces.
    pub fn set_observer(&mut self, observer: Box<dyn Observer>) -> Box<dyn Observer> {
        self.observer.replace(observer)
    }

    /// Embeds `dataset` with the test transform. Files left out as unreadable
    /// (`data.skip_unreadable`) are named to the observer and have no row.
    pub fn embed(&self, dataset: &dyn Dataset) -> Result<(Array2<f32>, Vec<u32>)> {
        let (x, y, unreadable) = self.embedder().embed(dataset)?;
        for file in &unreadable {
            self.observer.get().warning(&unreadable_warning(file));
        }
        Ok((x, y))
    }

    /// Embeds the training or the held-out classes of the config's data set.
    pub fn embed_split(&self, part: SplitPart) -> Result<(Array2<f32>, Vec<u32>)> {
        match part {
            SplitPart::Train => self.embed(self.split.train.as_ref()),
            SplitPart::Test => self.embed(self.split.test.as_ref()),
        }
    }

    fn embedder(&self) -> Embedder<'_> {
        Embedder::new(&self.net, self.device, &self.config, self.config.run.seed)
    }

    /// The run config the network was trained with.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The network.
    pub fn net(&self) -> &EmbeddingNet {
        &self.net
    }

    /// Writes the network as a TorchScript module to `path` (atomically), for serving without
    /// dml: PyTorch's `torch.jit.load(path)` and LibTorch's `torch::jit::load` read it, and its
    /// `forward` maps a float32 batch `[N, C, H, W]` (the network's input size, as the test
    /// transform makes it: resized or cropped, scaled to [0, 1], normalised as configured) to
    /// the embeddings `[N, D]` that [`TrainedModel::embed`] gives: backbone, head and L2
    /// normalisation, in evaluation mode.
    ///
    /// The module is LibTorch's trace of [`EmbeddingNet::embed`] on a batch of `batch_size`
    /// zero images: the weights become constants of the graph (the model is for inference;
    /// train it with dml), and what depended on the image size (EfficientNet's padding) is
    /// fixed for the network's input size. dml's own networks then take any batch size. A
    /// TorchScript backbone is the exception: LibTorch's C++ tracer records the shape
    /// arithmetic inside the module it calls (a ViT's reshape to `[N, tokens, width]`) as
    /// constants, so the exported module takes batches of exactly `batch_size` items.
    ///
    /// # Errors
    /// The trace or the write failing; a `batch_size` of 0.
    pub fn export_torchscript(&mut self, path: &Path, batch_size: usize) -> Result<()> {
        if batch_size == 0 {
            return Err(crate::Error::Export(
                "the batch size must be at least 1".to_owned(),
            ));
        }
        // Constants of a traced graph must not require gradients.
        self.vs.freeze();
        let shape = self.net.input_shape();
        let example = tch::Tensor::f_zeros(
            [batch_size as i64, shape.channels, shape.height, shape.width],
            (tch::Kind::Float, self.device),
        )?;
        let net = &self.net;
        let mut failure = None;
        let module = {
            let _guard = tch::no_grad_guard();
            tch::CModule::create_by_tracing("DmlEmbedder", "forward", &[example], &mut |xs| {
                match net.embed(&xs[0], false) {
                    Ok(e) => vec![e],
                    Err(e) => {
                        failure = Some(e);
                        Vec::new()
                    }
                }
            })?
        };
        if let Some(e) = failure {
            return Err(e.into());
        }
        dml_models::write_atomic(path, |tmp| {
            module
                .save(tmp)
                .map_err(|e| std::io::Error::other(e.to_string()))
        })
        .map_err(|source| crate::Error::Io {
            path: path.to_path_buf(),
            source,
        })
    }
}

/// The warning for a file an embedding left out as unreadable.
pub(crate) fn unreadable_warning(file: &Path) -> String {
    format!(
        "left out unreadable image {} (data.skip_unreadable)",
        file.display()
    )
}
