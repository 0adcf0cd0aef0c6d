//! Saving and loading weights: whole networks as safetensors (atomically), backbones from
//! safetensors or tch `.ot` files.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::path::{Path, PathBuf};

use tch::nn::VarStore;
use tch::{Device, Tensor};

use crate::error::ShapeMismatch;
use crate::{Error, Result};

/// What [`EmbeddingNet::load_backbone`](crate::EmbeddingNet::load_backbone) and
/// [`load_into_scope`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct LoadReport {
    /// How many variables received a value.
    pub loaded: usize,
    /// Tensors of the file that the scope has no variable for (sorted), for example a
    /// classifier's `fc.weight` or torchvision's `num_batches_tracked`.
    pub ignored: Vec<String>,
}

/// Saves every variable of `vs` to a safetensors file, atomically.
///
/// The tensors are written to a temporary file in the destination's folder, flushed to disk
/// (`fsync`), then renamed over `path`, and the folder is synced: a crash or a full disk leaves
/// either the old file or the new one under `path`, never a half-written one. Tensors on a GPU
/// are copied to the CPU first, so the file does not depend on the device.
///
/// # Errors
/// [`Error::Io`] when the folder is not writable or the disk is full; [`Error::Torch`] when a
/// variable has a kind safetensors cannot store.
pub fn save_safetensors(vs: &VarStore, path: impl AsRef<Path>) -> Result<()> {
    let named: BTreeMap<String, Tensor> = vs.variables().into_iter().collect();
    crate::write_tensors(path.as_ref(), &named, &HashMap::new())
}

/// Writes a file atomically: `write` fills a temporary file in `path`'s folder (given its
/// path), which is flushed to disk (`fsync`), renamed over `path`, and the folder is synced. A
/// crash, a full disk or an error of `write` leaves either the old file or the new one under
/// `path`, never a half-written one, and no temporary file behind. The file gets a plain file's
/// mode (0666 less the umask). The one way dml writes its outputs: checkpoints, weights,
/// reports, logs, plots.
///
/// # Errors
/// The first I/O error (of `write`, the flush or the rename).
pub fn write_atomic(
    path: &Path,
    write: impl FnOnce(&Path) -> std::io::Result<()>,
) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    std::fs::create_dir_all(dir)?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    // The temporary file is deleted on drop, so every early return cleans up after itself.
    let prefix = format!(".{name}.");
    let mut builder = tempfile::Builder::new();
    builder.prefix(&prefix).suffix(".tmp");
    // Temporary files are private (0600) by default; the output gets a plain file's mode, as if
    // it had been created directly.
    #[cfg(unix)]
    builder.permissions(std::os::unix::fs::PermissionsExt::from_mode(0o666));
    let tmp = builder.tempfile_in(dir)?;
    write(tmp.path())?;
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    // Make the rename itself durable. Opening a folder for syncing is a Unix idea; elsewhere the
    // rename is as durable as the platform makes it.
    #[cfg(unix)]
    File::open(dir).and_then(|d| d.sync_all())?;
    Ok(())
}

/// Loads every variable of `vs` from a safetensors file written by [`save_safetensors`].
///
/// The load is strict and all-or-nothing: the file must hold exactly the var store's variables,
/// with the same shapes (values are converted to each variable's kind and device); otherwise
/// nothing is changed and the error lists every problem.
///
/// # Errors
/// [`Error::WeightsMismatch`] with the missing, unexpected and wrongly shaped tensors;
/// [`Error::Io`] when the file cannot be read; [`Error::WeightsFile`] when it is not a valid
/// safetensors file.
pub fn load_safetensors(vs: &mut VarStore, path: impl AsRef<Path>) -> Result<()> {
    let path = path.as_ref();
    let file = read_safetensors_file(path)?;
    let vars = vs.variables();
    let mut missing = Vec::new();
    let mut mismatched = Vec::new();
    let mut pairs = Vec::with_capacity(vars.len());
    for (name, var) in &vars {
        match file.get(name) {
            None => missing.push(name.clone()),
            Some(src) => match shape_mismatch(name, var, src) {
                Some(m) => mismatched.push(m),
                None => pairs.push((var, src)),
            },
        }
    }
    let unexpected: Vec<String> = file
        .keys()
        .filter(|k| !vars.contains_key(*k))
        .cloned()
        .collect();
    if !missing.is_empty() || !unexpected.is_empty() || !mismatched.is_empty() {
        return Err(mismatch(path, missing, unexpected, mismatched));
    }
    copy_all(&pairs)?;
    Ok(())
}

/// Loads the variables of `vs` whose names start with `scope.` from a `.safetensors` or tch
/// `.ot` file whose names are relative to `scope` (names already prefixed with `scope.` are
/// accepted too). An empty `scope` means the whole var store.
///
/// Every variable of the scope must be in the file with the same shape; tensors of the file the
/// scope does not have are skipped and listed in the [`LoadReport`]. All-or-nothing like
/// [`load_safetensors`].
///
/// # Errors
/// As [`load_safetensors`], except that unexpected tensors are not an error.
pub fn load_into_scope(
    vs: &mut VarStore,
    scope: &str,
    path: impl AsRef<Path>,
) -> Result<LoadReport> {
    let path = path.as_ref();
    let raw = read_weights_file(path)?;
    let prefix = if scope.is_empty() {
        String::new()
    } else {
        format!("{scope}.")
    };
    let file: HashMap<String, Tensor> = raw
        .into_iter()
        .map(|(k, v)| {
            let full = if k.starts_with(&prefix) {
                k
            } else {
                format!("{prefix}{k}")
            };
            (full, v)
        })
        .collect();
    let vars: BTreeMap<String, Tensor> = vs
        .variables()
        .into_iter()
        .filter(|(k, _)| k.starts_with(&prefix))
        .collect();
    let mut missing = Vec::new();
    let mut mismatched = Vec::new();
    let mut pairs = Vec::with_capacity(vars.len());
    for (name, var) in &vars {
        match file.get(name) {
            None => missing.push(name.clone()),
            Some(src) => match shape_mismatch(name, var, src) {
                Some(m) => mismatched.push(m),
                None => pairs.push((var, src)),
            },
        }
    }
    if !missing.is_empty() || !mismatched.is_empty() {
        return Err(mismatch(path, missing, Vec::new(), mismatched));
    }
    copy_all(&pairs)?;
    let mut ignored: Vec<String> = file
        .keys()
        .filter(|k| !vars.contains_key(*k))
        .map(|k| k.strip_prefix(&prefix).unwrap_or(k).to_owned())
        .collect();
    ignored.sort();
    Ok(LoadReport {
        loaded: pairs.len(),
        ignored,
    })
}

fn shape_mismatch(name: &str, var: &Tensor, src: &Tensor) -> Option<ShapeMismatch> {
    let (expected, found) = (var.size(), src.size());
    (expected != found).then(|| ShapeMismatch {
        name: name.to_owned(),
        expected,
        found,
    })
}

fn mismatch(
    path: &Path,
    mut missing: Vec<String>,
    mut unexpected: Vec<String>,
    mut mismatched: Vec<ShapeMismatch>,
) -> Error {
    missing.sort();
    unexpected.sort();
    mismatched.sort_by(|a, b| a.name.cmp(&b.name));
    Error::WeightsMismatch {
        path: path.to_owned(),
        missing,
        unexpected,
        mismatched,
    }
}

/// Copies each source into its variable (converting kind and device), outside autograd.
fn copy_all(pairs: &[(&Tensor, &Tensor)]) -> Result<()> {
    tch::no_grad(|| {
        for (var, src) in pairs {
            // `copy_` writes through the shallow clone into the var store's storage.
            let mut var = var.shallow_clone();
            var.f_copy_(src)?;
        }
        Ok(())
    })
}

fn check_readable(path: &Path) -> Result<()> {
    std::fs::metadata(path)
        .map(|_| ())
        .map_err(|source| Error::Io {
            action: "read",
            path: path.to_owned(),
            source,
        })
}

fn read_safetensors_file(path: &Path) -> Result<BTreeMap<String, Tensor>> {
    Ok(crate::read_tensors(path)?.0)
}

/// A `.safetensors` file by its extension, otherwise tch's `.ot` (LibTorch module) format.
fn read_weights_file(path: &Path) -> Result<Vec<(String, Tensor)>> {
    check_readable(path)?;
    let is_safetensors = path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("safetensors"));
    if is_safetensors {
        return Ok(crate::read_tensors(path)?.0.into_iter().collect());
    }
    Tensor::load_multi_with_device(path, Device::Cpu).map_err(|source| Error::WeightsFile {
        path: PathBuf::from(path),
        message: source.to_string(),
    })
}
