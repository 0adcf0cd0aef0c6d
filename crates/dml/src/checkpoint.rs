//! Training checkpoints: one safetensors file holding the weights, the optimiser state and the
//! training state, written atomically.
//!
//! Layout: every VarStore variable (trainable or not, so batch-norm statistics come back too) is
//! stored as `vars.<name>`, the optimiser moments and update counts as `optim.m.<name>` /
//! `optim.v.<name>` / `optim.t.<name>`, a TorchScript backbone's module (whose buffers have no
//! variables) as the bytes of its file in the `uint8` tensor `model.torchscript`, and the
//! [`TrainState`] as JSON under the metadata key `dml.state`. A safetensors file is readable from
//! Python (`safetensors.torch.load_file`), so a checkpoint is never locked into this crate.
//!
//! Writing goes to a temporary file in the same folder, which is flushed to disk (`fsync`) and then
//! renamed over the target: a crash or Ctrl-C at any instant leaves either the old checkpoint or
//! the new one, never a torn file. Reading and writing are dml-models' one safetensors reader
//! and writer ([`dml_models::read_tensors`], [`dml_models::write_tensors`]).

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use tch::{Kind, Tensor};

use crate::optim::Optimizer;
use crate::state::TrainState;
use crate::{Error, Result};

/// The metadata key holding the [`TrainState`] JSON.
pub const STATE_KEY: &str = "dml.state";

/// A loaded checkpoint.
#[derive(Debug)]
pub struct Checkpoint {
    /// The training state.
    pub state: TrainState,
    /// Variables, by VarStore name.
    pub vars: BTreeMap<String, Tensor>,
    /// Optimiser state, by the names of [`Optimizer::state`].
    pub optim: BTreeMap<String, Tensor>,
    /// The cross-batch memory's rows and labels (`[memory]` runs), in slot order.
    pub memory: Option<(Vec<f32>, Vec<u32>)>,
    /// A TorchScript backbone's module file, as it was when the checkpoint was written.
    pub torchscript: Option<Vec<u8>>,
}

/// The tensor name of a TorchScript backbone's module bytes.
const TORCHSCRIPT_KEY: &str = "model.torchscript";

/// The whole of a text file, or [`Error::Io`] naming it.
pub(crate) fn read_text(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// Writes `bytes` to `path` atomically ([`dml_models::write_atomic`]: a temporary file in the
/// same folder, `fsync`, rename, and an `fsync` of the folder so the rename itself is durable).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    dml_models::write_atomic(path, |tmp| std::fs::write(tmp, bytes)).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// Saves the VarStore's variables, the optimiser state, the cross-batch memory (if any), a
/// TorchScript backbone's module (if any) and `state` to `path`, atomically.
pub fn save(
    path: &Path,
    vs: &tch::nn::VarStore,
    optim: &Optimizer,
    memory: Option<&dml_sampling::MemoryBank>,
    torchscript: Option<&[u8]>,
    state: &TrainState,
) -> Result<()> {
    let mut tensors: BTreeMap<String, Tensor> = BTreeMap::new();
    for (name, t) in vs.variables() {
        tensors.insert(format!("vars.{name}"), t);
    }
    for (name, t) in optim.state() {
        tensors.insert(format!("optim.{name}"), t);
    }
    if let Some(bank) = memory {
        let labels: Vec<i64> = bank.labels().iter().map(|&l| i64::from(l)).collect();
        tensors.insert(
            "memory.embeddings".to_owned(),
            dml_kernels::tensor::from_array(bank.embeddings())?,
        );
        tensors.insert("memory.labels".to_owned(), Tensor::f_from_slice(&labels)?);
    }
    if let Some(bytes) = torchscript {
        tensors.insert(TORCHSCRIPT_KEY.to_owned(), Tensor::f_from_slice(bytes)?);
    }
    let json = serde_json::to_string(state).map_err(|e| Error::Checkpoint {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    let metadata = HashMap::from([(STATE_KEY.to_owned(), json)]);
    Ok(dml_models::write_tensors(path, &tensors, &metadata)?)
}

/// Reads a checkpoint written by [`save`].
pub fn load(path: &Path) -> Result<Checkpoint> {
    let bad = |message: String| Error::Checkpoint {
        path: path.to_path_buf(),
        message,
    };
    let (tensors, metadata) = dml_models::read_tensors(path)?;
    let json = metadata
        .get(STATE_KEY)
        .ok_or_else(|| bad(format!("no `{STATE_KEY}` metadata: not a dml checkpoint")))?;
    let state: TrainState =
        serde_json::from_str(json).map_err(|e| bad(format!("bad training state: {e}")))?;
    let mut vars = BTreeMap::new();
    let mut optim = BTreeMap::new();
    let (mut mem_rows, mut mem_labels) = (None, None);
    let mut torchscript = None;
    for (name, t) in tensors {
        if let Some(rest) = name.strip_prefix("vars.") {
            vars.insert(rest.to_owned(), t);
        } else if let Some(rest) = name.strip_prefix("optim.") {
            optim.insert(rest.to_owned(), t);
        } else if name == "memory.embeddings" {
            let t = t.f_to_kind(Kind::Float)?.f_flatten(0, -1)?;
            mem_rows = Some(Vec::<f32>::try_from(&t)?);
        } else if name == "memory.labels" {
            let t = t.f_to_kind(Kind::Int64)?;
            let v = Vec::<i64>::try_from(&t)?;
            let labels = v
                .into_iter()
                .map(u32::try_from)
                .collect::<std::result::Result<Vec<u32>, _>>()
                .map_err(|_| bad("memory.labels holds a label outside 0..2³²".to_owned()))?;
            mem_labels = Some(labels);
        } else if name == TORCHSCRIPT_KEY {
            torchscript = Some(Vec::<u8>::try_from(&t.f_to_kind(Kind::Uint8)?)?);
        }
    }
    let memory = match (mem_rows, mem_labels) {
        (Some(rows), Some(labels)) => Some((rows, labels)),
        (None, None) => None,
        _ => {
            return Err(bad(
                "holds only one of memory.embeddings and memory.labels".to_owned()
            ));
        }
    };
    Ok(Checkpoint {
        state,
        vars,
        optim,
        memory,
        torchscript,
    })
}

impl Checkpoint {
    /// Copies the saved variables into `vs` (every variable of `vs` must be present with the same
    /// shape) and the saved moments into `optim`.
    pub fn restore(&self, vs: &tch::nn::VarStore, optim: &mut Optimizer) -> Result<()> {
        restore_vars(&self.vars, vs)?;
        optim.load_state(&self.optim, self.state.n_steps)
    }
}

/// Copies `vars` into the variables of `vs` with the same names.
pub fn restore_vars(vars: &BTreeMap<String, Tensor>, vs: &tch::nn::VarStore) -> Result<()> {
    let _guard = tch::no_grad_guard();
    for (name, mut dst) in vs.variables() {
        let src = vars
            .get(&name)
            .ok_or_else(|| Error::CheckpointMissingTensor(format!("vars.{name}")))?;
        if src.size() != dst.size() {
            return Err(Error::CheckpointShape {
                name: format!("vars.{name}"),
                expected: dst.size(),
                found: src.size(),
            });
        }
        dst.f_copy_(src)?;
    }
    Ok(())
}
