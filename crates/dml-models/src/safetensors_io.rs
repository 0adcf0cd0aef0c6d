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

/// A tensor's bytes as safetensors stores them.
struct Bytes {
    dtype: Dtype,
    shape: Vec<usize>,
    data: Vec<u8>,
}

impl safetensors::View for &Bytes {
    fn dtype(&self) -> Dtype {
        self.dtype
    }
    fn shape(&self) -> &[usize] {
        &self.shape
    }
    fn data(&self) -> Cow<'_, [u8]> {
        Cow::Borrowed(&self.data)
    }
    fn data_len(&self) -> usize {
        self.data.len()
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

fn to_bytes(name: &str, t: &Tensor) -> Result<Bytes> {
    let t = t
        .f_detach()?
        .f_to_device(tch::Device::Cpu)?
        .f_contiguous()?;
    let kind = t.f_kind()?;
    let dtype = KINDS
        .iter()
        .find(|(k, _)| *k == kind)
        .map(|&(_, d)| d)
        .ok_or_else(|| Error::TensorKind {
            name: name.to_owned(),
            kind: format!("{kind:?}"),
        })?;
    let numel = t.numel();
    let mut data = vec![0u8; numel * kind.elt_size_in_bytes()];
    t.f_copy_data_u8(&mut data, numel)?;
    let shape = t.size().iter().map(|&d| d as usize).collect();
    Ok(Bytes { dtype, shape, data })
}

/// Writes `tensors` (copied to the CPU) and `metadata` to `path` as one safetensors file,
/// atomically.
///
/// # Errors
/// [`Error::TensorKind`] for a kind safetensors cannot hold (complex numbers, say);
/// [`Error::Io`] when the file cannot be written.
pub fn write_tensors(
    path: &Path,
    tensors: &BTreeMap<String, Tensor>,
    metadata: &HashMap<String, String>,
) -> Result<()> {
    let bytes: Vec<(&str, Bytes)> = tensors
        .iter()
        .map(|(name, t)| Ok((name.as_str(), to_bytes(name, t)?)))
        .collect::<Result<_>>()?;
    let metadata = (!metadata.is_empty()).then(|| metadata.clone());
    let io = |source| Error::Io {
        action: "write",
        path: path.to_owned(),
        source,
    };
    let file = safetensors::serialize(bytes.iter().map(|(k, v)| (*k, v)), &metadata)
        .map_err(|e| io(std::io::Error::other(e.to_string())))?;
    crate::write_atomic(path, |tmp| std::fs::write(tmp, &file)).map_err(io)
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
