//! gloo's headers, which LibTorch's `ProcessGroupGloo.hpp` includes but the torch wheel does not
//! ship. `dml-distributed` compiles its c10d shim against them; the gloo code itself runs from
//! `libtorch_cpu.so`, which has it built in, so only declarations are taken from here.
//!
//! They come from Debian's `libgloo-dev` (the only registry that packages gloo), fetched with
//! `apt-get download` (no install, no root needed when the package lists are present) and
//! unpacked into `<root>/.libtorch/gloo/include/`. docs/design.md says why these headers are
//! safe to compile against LibTorch 2.13's own gloo.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::util::{project_root, run as sh};

/// The Debian package version whose headers the shim was checked against.
pub const GLOO_DEB_VERSION: &str = "0.0~git20220518.5b14351-3";
const MARKER: &str = ".complete";

/// `<root>/.libtorch/gloo`, which `.cargo/config.toml` points `DML_GLOO_INCLUDE` into.
fn dir() -> PathBuf {
    project_root().join(".libtorch").join("gloo")
}

fn is_complete(dir: &Path) -> bool {
    fs::read_to_string(dir.join(MARKER)).is_ok_and(|s| s.trim() == GLOO_DEB_VERSION)
        && dir.join("include/gloo/algorithm.h").exists()
}

/// Installs the headers unless they are there already.
pub fn ensure() -> Result<()> {
    let dir = dir();
    if is_complete(&dir) {
        return Ok(());
    }
    let base = dir.parent().expect("gloo dir has a parent").to_path_buf();
    fs::create_dir_all(&base)?;
    let tmp = base.join(format!(".tmp-gloo-{}", std::process::id()));
    if tmp.exists() {
        fs::remove_dir_all(&tmp)?;
    }
    fs::create_dir_all(&tmp)?;
    let result = fetch_into(&tmp);
    if let Err(err) = result {
        let _ = fs::remove_dir_all(&tmp);
        return Err(err);
    }
    if dir.exists() {
        fs::remove_dir_all(&dir)?;
    }
    fs::rename(&tmp, &dir).with_context(|| format!("moving gloo headers to {}", dir.display()))?;
    eprintln!(
        "gloo headers {GLOO_DEB_VERSION} installed at {}",
        dir.display()
    );
    Ok(())
}

fn fetch_into(tmp: &Path) -> Result<()> {
    let spec = format!("libgloo-dev={GLOO_DEB_VERSION}");
    let download = |tmp: &Path| {
        Command::new("apt-get")
            .args(["download", "-q", &spec])
            .current_dir(tmp)
            .status()
    };
    let ok = download(tmp).is_ok_and(|s| s.success());
    if !ok {
        // A fresh machine may have no package lists yet.
        eprintln!("apt-get download {spec} failed: refreshing the package lists once");
        let _ = sh(Command::new("apt-get").args(["update", "-q"]));
        let status = download(tmp).with_context(|| {
            format!(
                "could not run apt-get: dml-distributed needs gloo's headers (Debian package \
                 {spec}); on another system put gloo's headers of that snapshot in {}",
                dir().join("include").display()
            )
        })?;
        if !status.success() {
            bail!("`apt-get download {spec}` failed with {status}");
        }
    }
    let deb = fs::read_dir(tmp)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|x| x == "deb"))
        .context("apt-get download left no .deb file")?;
    let unpacked = tmp.join("unpacked");
    sh(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&unpacked))?;
    let headers = unpacked.join("usr/include/gloo");
    if !headers.join("algorithm.h").exists() {
        bail!("{} has no usr/include/gloo/algorithm.h", deb.display());
    }
    fs::create_dir_all(tmp.join("include"))?;
    fs::rename(&headers, tmp.join("include/gloo"))?;
    fs::remove_dir_all(&unpacked)?;
    fs::remove_file(&deb)?;
    fs::write(tmp.join(MARKER), GLOO_DEB_VERSION)?;
    Ok(())
}
