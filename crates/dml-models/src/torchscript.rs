//! Any PyTorch network as a backbone, through TorchScript: a module saved with
//! `torch.jit.trace(...).save(path)` or `torch.jit.script(...).save(path)` in Python, loaded by
//! LibTorch and trained by dml.
//!
//! The module's parameters become variables of dml's var store under the backbone's scope, with
//! the module's own names (`model.backbone.layer1.0.conv1.weight`), so dml's optimiser updates
//! them and its checkpoints hold them. Its buffers (batch norm's running statistics) have no such
//! handle in LibTorch's API, so a checkpoint also carries the whole module as bytes
//! ([`TorchScriptBackbone::to_bytes`]): a network rebuilt from those bytes has the buffers of the
//! moment the checkpoint was written.

use std::io::Cursor;
use std::path::Path as FsPath;
use std::sync::Mutex;

use tch::{CModule, Device, Kind, Tensor, nn};

use crate::{Error, InputShape, Result};

/// A TorchScript module as a backbone: `[N, C, H, W]` to `[N, F]` features.
#[derive(Debug)]
pub(crate) struct TorchScriptBackbone {
    /// The module, and the mode (training or not) it was last switched to. LibTorch switches a
    /// module's mode in place, so the forward pass takes the lock for the switch and the call.
    module: Mutex<(CModule, Option<bool>)>,
    /// The size of the module's output.
    features: i64,
    /// Where the module came from, for messages.
    origin: String,
}

impl TorchScriptBackbone {
    /// Loads the module saved at `path` onto `p`'s device, registers its parameters under `p`
    /// and runs it once on a zero image of `input`'s shape to learn its output size.
    pub(crate) fn load(p: &nn::Path, path: &FsPath, input: InputShape) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|source| Error::Io {
            action: "read the TorchScript module",
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_bytes(p, &bytes, &path.display().to_string(), input)
    }

    /// The same from the bytes of a saved module (a checkpoint's copy); `origin` names them in
    /// messages.
    pub(crate) fn from_bytes(
        p: &nn::Path,
        bytes: &[u8],
        origin: &str,
        input: InputShape,
    ) -> Result<Self> {
        let bad = |message: String| Error::TorchScript {
            origin: origin.to_owned(),
            message,
        };
        let module = CModule::load_data_on_device(&mut Cursor::new(bytes), p.device())
            .map_err(|e| bad(format!("LibTorch cannot load it as TorchScript: {e}")))?;
        for (name, tensor) in module.named_parameters().map_err(|e| bad(e.to_string()))? {
            if tensor.kind() != Kind::Float {
                return Err(bad(format!(
                    "parameter `{name}` is {:?}; dml trains float32 networks (save the module \
                     after `.float()`)",
                    tensor.kind()
                )));
            }
            let parts: Vec<&str> = name.split('.').collect();
            let (last, scopes) = parts.split_last().unwrap_or((&"", &[]));
            let scope = scopes.iter().fold(p.clone(), |q, s| &q / *s);
            // The variable shares the module's tensor, so the optimiser's in-place updates
            // are what the module computes with.
            let trainable = tensor.requires_grad();
            let _ = scope.add(last, tensor, trainable);
        }
        let mut backbone = TorchScriptBackbone {
            module: Mutex::new((module, None)),
            features: 0,
            origin: origin.to_owned(),
        };
        backbone.features = backbone.probe(input, p.device())?;
        Ok(backbone)
    }

    /// Runs the module in evaluation mode on one zero image of `input`'s shape, without
    /// gradient, to learn the size of its output (and fail now, not in the first step, when
    /// it does not take such images).
    fn probe(&self, input: InputShape, device: Device) -> Result<i64> {
        let _guard = tch::no_grad_guard();
        let x = Tensor::f_zeros(
            [1, input.channels, input.height, input.width],
            (Kind::Float, device),
        )?;
        let out = self.forward(&x, false)?;
        match out.size().as_slice() {
            [1, f] if *f > 0 => Ok(*f),
            other => Err(Error::TorchScript {
                origin: self.origin.clone(),
                message: format!(
                    "its output for one {}×{}×{} image has shape {other:?}; a backbone must \
                     return [N, features] (pool and flatten inside the module)",
                    input.channels, input.height, input.width
                ),
            }),
        }
    }

    /// The size of the module's output.
    pub(crate) fn features(&self) -> i64 {
        self.features
    }

    /// The module's output for `x`, in training mode (batch norm's batch statistics, dropout)
    /// when `train`.
    pub(crate) fn forward(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let mut guard = self
            .module
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let (module, mode) = &mut *guard;
        if *mode != Some(train) {
            if train {
                module.f_set_train()?;
            } else {
                module.f_set_eval()?;
            }
            *mode = Some(train);
        }
        module.forward_ts(&[x]).map_err(|e| Error::TorchScript {
            origin: self.origin.clone(),
            message: format!(
                "its forward pass failed on a batch of shape {:?}: {e}",
                x.size()
            ),
        })
    }

    /// The module as TorchScript bytes (parameters and buffers as they are now), which
    /// [`TorchScriptBackbone::from_bytes`] loads back.
    pub(crate) fn to_bytes(&self) -> Result<Vec<u8>> {
        let guard = self
            .module
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let dir = tempfile::tempdir().map_err(|source| Error::Io {
            action: "create a temporary folder for",
            path: std::env::temp_dir(),
            source,
        })?;
        let file = dir.path().join("backbone.pt");
        guard.0.save(&file)?;
        std::fs::read(&file).map_err(|source| Error::Io {
            action: "read back",
            path: file,
            source,
        })
    }
}
