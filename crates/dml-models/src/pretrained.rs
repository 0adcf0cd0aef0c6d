//! Where `[model] pretrained = "..."` finds its weights.

use std::path::{Path, PathBuf};

use crate::{Error, Result};

/// The environment variable naming the folder of named weights (default `weights/` under the
/// current folder, where `cargo xtask weights` puts them when run from the checkout).
pub const WEIGHTS_DIR_ENV: &str = "DML_WEIGHTS_DIR";

/// The weights `cargo xtask weights NAME` makes: (name, the model kind they are for).
pub const NAMED_WEIGHTS: [(&str, &str); 2] = [
    ("mobilenet-v2", "mobilenet_v2"),
    ("efficientnet-lite0", "efficientnet_lite0"),
];

/// The file that `pretrained` means for a model of kind `kind`.
///
/// A name of [`NAMED_WEIGHTS`] is `<dir>/<name>.safetensors`, with `<dir>` from
/// [`WEIGHTS_DIR_ENV`] or `weights`; anything else is taken as a path. The file must exist.
///
/// # Errors
/// [`Error::Pretrained`] naming what is wrong and what to run: named weights that are missing
/// or belong to another kind of network, a path that does not exist.
pub fn resolve_pretrained(spec: &str, kind: &str) -> Result<PathBuf> {
    if let Some(&(name, for_kind)) = NAMED_WEIGHTS.iter().find(|(n, _)| *n == spec) {
        if for_kind != kind {
            return Err(Error::Pretrained(format!(
                "pretrained = \"{name}\" are weights for kind = \"{for_kind}\", not \"{kind}\""
            )));
        }
        let dir = std::env::var_os(WEIGHTS_DIR_ENV)
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("weights"));
        let path = dir.join(format!("{name}.safetensors"));
        if !path.is_file() {
            return Err(Error::Pretrained(format!(
                "pretrained = \"{name}\": {} not found; run `cargo xtask weights {name}` in the \
                 dml checkout and run from there, or set {WEIGHTS_DIR_ENV} to the folder that \
                 holds {name}.safetensors",
                path.display()
            )));
        }
        return Ok(path);
    }
    let path = Path::new(spec);
    if !path.is_file() {
        let names: Vec<&str> = NAMED_WEIGHTS.iter().map(|(n, _)| *n).collect();
        return Err(Error::Pretrained(format!(
            "pretrained = \"{spec}\" is neither a weights file nor one of the names {names:?}"
        )));
    }
    Ok(path.to_path_buf())
}
