//! `cargo xtask data emoji|glyphs`: the two data sets rendered from registry packages.
//!
//! The packages are pinned in `crates/dml-render` (`dml-render sources <kind>` prints them):
//! npm tarballs (`npm pack NAME@VERSION`) for the emoji, Debian font packages (`apt-get
//! download NAME=VERSION`, no install) for the glyphs. They are kept in
//! `data/.downloads/<kind>/`, unpacked into `data/.downloads/<kind>-src/` (`tar`, `dpkg-deb
//! -x`), and the release build of the `dml-render` binary draws, curates, splits and stores the
//! set in `data/<kind>.partial`, renamed to `data/<kind>` once its checksum is the one this
//! version documents (`docs/datasets.md`). The unpacked sources are removed afterwards; a
//! rebuild needs no network while the downloads are there.
//!
//! The rendering lives in its own crate, not here, so that xtask keeps its few dependencies
//! and builds in seconds before every task.

use std::fs;
use std::path::PathBuf;
use std::process::Command;

use anyhow::{Context, Result, bail, ensure};

use crate::util::{cargo, describe, project_root, run as sh};

/// The set checksums (`set-sha256` of the manifest) of the sets this version builds from its
/// pinned packages, as docs/datasets.md lists them.
const EXPECTED: [(&str, &str); 2] = [
    (
        "emoji",
        "cf0817dcf456c92781969b5ee8f54e728b10e8ded4bd7fa1980faac0f1ebc141",
    ),
    (
        "glyphs",
        "8243e7952d252193c28aa297226d91346c283fd63b49edbcaa5c6491ecf8e8b3",
    ),
];

const COMPLETE: &str = ".complete";

/// Builds (or checks) the rendered set `kind` (`emoji` or `glyphs`).
pub fn run(kind: &str, force: bool, keep_different: bool) -> Result<()> {
    let data = project_root().join("data");
    let dest = data.join(kind);
    let expected = EXPECTED
        .iter()
        .find(|(k, _)| *k == kind)
        .map(|(_, sum)| *sum)
        .context("unknown rendered set")?;
    let bin = build_renderer()?;

    if !force && dest.join(COMPLETE).is_file() {
        let out = Command::new(&bin).arg("verify").arg(&dest).output()?;
        if out.status.success() {
            let found = set_checksum(&String::from_utf8_lossy(&out.stdout))?;
            if found == expected || keep_different {
                eprintln!(
                    "{kind} is already there ({}), every checksum verified (set {found}); nothing to do (--force to redo)",
                    dest.display()
                );
                return Ok(());
            }
            eprintln!("{kind}: the set there has checksum {found}, not {expected}; rebuilding");
        } else {
            eprintln!(
                "{kind}: the set there does not verify ({}); rebuilding",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
    }

    let downloads = data.join(".downloads").join(kind);
    let src = data.join(".downloads").join(format!("{kind}-src"));
    let partial = data.join(format!("{kind}.partial"));
    for dir in [&src, &partial] {
        if dir.exists() {
            fs::remove_dir_all(dir).with_context(|| format!("removing {}", dir.display()))?;
        }
    }
    fs::create_dir_all(&downloads)?;
    fs::create_dir_all(&src)?;

    let listing = Command::new(&bin).args(["sources", kind]).output()?;
    ensure!(listing.status.success(), "dml-render sources {kind} failed");
    let mut apt_updated = false;
    for line in String::from_utf8(listing.stdout)?.lines() {
        let [registry, name, version] = line.split(' ').collect::<Vec<_>>()[..] else {
            bail!("dml-render sources printed {line:?}");
        };
        match registry {
            "npm" => {
                let tgz = downloads.join(format!("{name}-{version}.tgz"));
                if !tgz.is_file() {
                    sh(Command::new("npm")
                        .args(["pack", &format!("{name}@{version}"), "--pack-destination"])
                        .arg(&downloads)
                        .current_dir(&downloads))
                    .with_context(|| {
                        format!("fetching {name}@{version} from npm (is `npm` installed?)")
                    })?;
                }
                ensure!(tgz.is_file(), "npm pack left no {}", tgz.display());
                let into = src.join(name);
                fs::create_dir_all(&into)?;
                sh(Command::new("tar")
                    .arg("-xzf")
                    .arg(&tgz)
                    .arg("-C")
                    .arg(&into))?;
            }
            "deb" => {
                let deb = downloads.join(format!("{name}_{}_all.deb", version.replace(':', "%3a")));
                if !deb.is_file() {
                    let download = || {
                        sh(Command::new("apt-get")
                            .args(["download", &format!("{name}={version}")])
                            .current_dir(&downloads))
                    };
                    if download().is_err() {
                        ensure!(
                            !apt_updated,
                            "apt-get cannot download {name}={version}; the glyph set is pinned to Debian 12 (bookworm) packages"
                        );
                        eprintln!(
                            "apt-get download failed; refreshing the package lists once and retrying"
                        );
                        sh(Command::new("apt-get").arg("update"))
                            .context("`apt-get update` failed (the glyph set's fonts come from Debian packages)")?;
                        apt_updated = true;
                        download().with_context(|| {
                            format!("apt-get cannot download {name}={version}; the glyph set is pinned to Debian 12 (bookworm) packages")
                        })?;
                    }
                }
                ensure!(deb.is_file(), "apt-get download left no {}", deb.display());
                sh(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&src))?;
            }
            other => bail!("dml-render sources printed the unknown registry {other:?}"),
        }
    }

    let mut render = Command::new(&bin);
    render.arg(kind);
    render
        .arg(if kind == "emoji" {
            "--sources"
        } else {
            "--fonts"
        })
        .arg(&src);
    render.arg("--out").arg(&partial);
    eprintln!("$ {}", describe(&render));
    let out = render.stderr(std::process::Stdio::inherit()).output()?;
    ensure!(out.status.success(), "`{}` failed", describe(&render));
    let manifest = String::from_utf8(out.stdout)?;
    print!("{manifest}");
    let found = set_checksum(&manifest)?;
    fs::remove_dir_all(&src)?;
    if found != expected && !keep_different {
        bail!(
            "the {kind} set built here has checksum {found}, not {expected}, the one this version \
             documents (docs/datasets.md): the rendering gave other bytes on this machine, or the \
             packages differ. The set is left in {} (compare its checksums.tsv with a good build \
             to see which classes differ); rerun with --keep-different to use it anyway",
            partial.display()
        );
    }
    fs::write(partial.join(COMPLETE), "")?;
    if dest.exists() {
        fs::remove_dir_all(&dest)?;
    }
    fs::rename(&partial, &dest)?;
    eprintln!(
        "{kind}: stored in {} (set checksum {found})",
        dest.display()
    );
    Ok(())
}

/// `set-sha256` of a manifest's text.
fn set_checksum(manifest: &str) -> Result<String> {
    manifest
        .lines()
        .find_map(|l| l.strip_prefix("set-sha256\t"))
        .map(str::to_owned)
        .context("the manifest has no set-sha256 line")
}

/// Builds the release `dml-render` binary and returns its path.
fn build_renderer() -> Result<PathBuf> {
    sh(cargo().args([
        "build",
        "--release",
        "-p",
        "dml-render",
        "--bin",
        "dml-render",
    ]))?;
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| project_root().join("target"));
    let bin = target.join("release").join("dml-render");
    ensure!(bin.is_file(), "cargo built no {}", bin.display());
    Ok(bin)
}
