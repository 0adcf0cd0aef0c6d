//! The one safetensors reader and writer of the workspace: named tensors plus string metadata,
//! written atomically ([`write_atomic`](crate::write_atomic)) and read with errors that say
//! whether a file was cut short or is of another format. Network weights
//! ([`save_safetensors`](crate::save_safetensors), [`load_safetensors`](crate::load_safetensors))
//! and the facade's training checkpoints (weights, optimiser state, memory, and the training
//! state as metadata) both go through it.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use safetensors::Dtype;
use tch::{Kind, Tensor};

use crate::{Error, Result};

/// A tensor as safetensors stores it: its dtype, shape and a contiguous CPU copy (or alias) whose
/// memory is written to the file as it is, without a copy into a byte buffer first.
struct TensorBytes {
    dtype: Dtype,
    shape: Vec<usize>,
    /// Contiguous, on the CPU; `nbytes` long.
    tensor: Tensor,
    nbytes: usize,
}

impl safetensors::View for &TensorBytes {
    fn dtype(&self) -> Dtype {
        self.dtype
    }
    fn shape(&self) -> &[usize] {
        &self.shape
    }
    fn data(&self) -> Cow<'_, [u8]> {
        if self.nbytes == 0 {
            return Cow::Borrowed(&[]);
        }
        // SAFETY: `tensor` is a defined, contiguous CPU tensor of `nbytes` bytes (checked in
        // `tensor_bytes`), so its data pointer addresses `nbytes` initialised bytes, which stay
        // alive and unchanged while `self` (which owns a reference to the storage) is borrowed:
        // nothing else runs on the tensor while a file is being written.
        let bytes =
            unsafe { std::slice::from_raw_parts(self.tensor.data_ptr() as *const u8, self.nbytes) };
        Cow::Borrowed(bytes)
    }
    fn data_len(&self) -> usize {
        self.nbytes
    }
}

/// LibTorch kinds and safetensors dtypes, both ways.
const KINDS: [(Kind, Dtype); 10] = [
    (Kind::Float, Dtype::F32),
    (Kind::Double, Dtype::F64),
    (Kind::Half, Dtype::F16),
    (Kind::BFloat16, Dtype::BF16),
    (Kind::Int64, Dtype::I64),
    (Kind::Int, Dtype::I32),
    (Kind::Int16, Dtype::I16),
    (Kind::Int8, Dtype::I8),
    (Kind::Uint8, Dtype::U8),
    (Kind::Bool, Dtype::BOOL),
];

fn tensor_bytes(name: &str, t: &Tensor) -> Result<TensorBytes> {
    let tensor = t
        .f_detach()?
        .f_to_device(tch::Device::Cpu)?
        .f_contiguous()?;
    let kind = tensor.f_kind()?;
    let dtype = KINDS
        .iter()
        .find(|(k, _)| *k == kind)
        .map(|&(_, d)| d)
        .ok_or_else(|| Error::TensorKind {
            name: name.to_owned(),
            kind: format!("{kind:?}"),
        })?;
    debug_assert!(tensor.defined() && tensor.is_contiguous());
    let nbytes = tensor.numel() * kind.elt_size_in_bytes();
    let shape = tensor.size().iter().map(|&d| d as usize).collect();
    Ok(TensorBytes {
        dtype,
        shape,
        tensor,
        nbytes,
    })
}

/// Writes `tensors` and `metadata` to `path` as one safetensors file, atomically. CPU tensors
/// that are already contiguous are written from their own memory, streamed to the file; others
/// are first copied to a contiguous CPU tensor.
///
/// # Errors
/// [`Error::TensorKind`] for a kind safetensors cannot hold (complex numbers, say);
/// [`Error::Io`] when the file cannot be written.
pub fn write_tensors(
    path: &Path,
    tensors: &BTreeMap<String, Tensor>,
    metadata: &HashMap<String, String>,
) -> Result<()> {
    let views: Vec<(&str, TensorBytes)> = tensors
        .iter()
        .map(|(name, t)| Ok((name.as_str(), tensor_bytes(name, t)?)))
        .collect::<Result<_>>()?;
    let metadata = (!metadata.is_empty()).then(|| metadata.clone());
    let io = |source| Error::Io {
        action: "write",
        path: path.to_owned(),
        source,
    };
    crate::write_atomic(path, |tmp| {
        safetensors::serialize_to_file(views.iter().map(|(k, v)| (*k, v)), &metadata, tmp).map_err(
            |e| match e {
                safetensors::SafeTensorError::IoError(e) => e,
                e => std::io::Error::other(e.to_string()),
            },
        )
    })
    .map_err(io)
}

/// Reads every tensor (on the CPU) and the metadata of the safetensors file at `path`.
///
/// # Errors
/// [`Error::Io`] when the file cannot be read; [`Error::WeightsFile`] naming the file and
/// saying whether it is truncated or corrupt (a copy that did not finish, a full disk) or not a
/// safetensors file at all; [`Error::TensorKind`] for a dtype LibTorch has no kind for.
pub fn read_tensors(path: &Path) -> Result<(BTreeMap<String, Tensor>, HashMap<String, String>)> {
    let bytes = std::fs::read(path).map_err(|source| Error::Io {
        action: "read",
        path: path.to_owned(),
        source,
    })?;
    let bad = |e: safetensors::SafeTensorError| Error::WeightsFile {
        path: PathBuf::from(path),
        message: unreadable(&e),
    };
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).map_err(bad)?;
    let metadata = meta.metadata().clone().unwrap_or_default();
    let st = safetensors::SafeTensors::deserialize(&bytes).map_err(bad)?;
    let mut tensors = BTreeMap::new();
    for (name, view) in st.tensors() {
        let kind = KINDS
            .iter()
            .find(|(_, d)| *d == view.dtype())
            .map(|&(k, _)| k)
            .ok_or_else(|| Error::TensorKind {
                name: name.clone(),
                kind: format!("{:?}", view.dtype()),
            })?;
        let shape: Vec<i64> = view.shape().iter().map(|&d| d as i64).collect();
        tensors.insert(name, Tensor::f_from_data_size(view.data(), &shape, kind)?);
    }
    Ok((tensors, metadata))
}

/// What a safetensors parse error means for the user: a file cut short or a file of another
/// format. The library's own text is its variant name.
fn unreadable(e: &safetensors::SafeTensorError) -> String {
    use safetensors::SafeTensorError as E;
    let what = match e {
        E::HeaderTooSmall
        | E::InvalidHeaderLength
        | E::MetadataIncompleteBuffer
        | E::InvalidOffset(_)
        | E::TensorInvalidInfo
        | E::InvalidTensorView(..)
        | E::ValidationOverflow => "truncated or corrupt safetensors file",
        _ => "not a safetensors file",
    };
    format!("{what} ({e:?})")
}
