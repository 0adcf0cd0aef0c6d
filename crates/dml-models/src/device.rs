//! The one place that decides where tensors live.

use serde::{Deserialize, Serialize};
use tch::Device;

use crate::{Error, Result};

/// Where to run: the config's and the CLI's word for a [`tch::Device`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeviceChoice {
    /// CUDA device 0 when LibTorch sees one, the CPU otherwise.
    #[default]
    Auto,
    /// The CPU.
    Cpu,
    /// CUDA device 0; an error when CUDA is not available.
    Cuda,
}

impl DeviceChoice {
    /// Resolves the choice to a device, failing clearly when CUDA is asked for but absent.
    pub fn resolve(self) -> Result<Device> {
        match self {
            DeviceChoice::Cpu => Ok(Device::Cpu),
            DeviceChoice::Auto => Ok(Device::cuda_if_available()),
            DeviceChoice::Cuda if tch::Cuda::is_available() => Ok(Device::Cuda(0)),
            DeviceChoice::Cuda => Err(Error::CudaUnavailable),
        }
    }
}

impl std::str::FromStr for DeviceChoice {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "auto" => Ok(DeviceChoice::Auto),
            "cpu" => Ok(DeviceChoice::Cpu),
            "cuda" => Ok(DeviceChoice::Cuda),
            other => Err(Error::UnknownDevice(other.to_owned())),
        }
    }
}

/// Keeps the memory LibTorch frees on the CPU for reuse instead of handing it back to the
/// operating system at every free. Process-wide; `dml train` (the facade's trainer) calls it
/// once.
///
/// glibc serves each block over its mmap threshold (128 kB until a free raises it) with a fresh
/// `mmap` and returns it with `munmap`, and trims the top of its heap past 128 kB of free
/// space. A training step allocates and frees the same megabytes of activations and gradients
/// every time, so every step faults them back in page by page, zero-filled by the kernel: a fifth
/// of a ConvNet step on MNIST (B 128) in `perf`. This turns `mmap` off for the main heap (blocks
/// of every size then come from the heap, so the 64 MiB activations of a ResNet-18 stem at B 64
/// and 128 px are reused too; other threads' arenas still `mmap` what does not fit their heaps)
/// and raises the trim threshold to 1 GiB, so the freed blocks stay in the heap for the next
/// step; the process's resident size then stays at its peak instead of falling between steps.
/// Measured: 1.2–1.3× the speed of the MNIST ConvNet step, and about 2 % of a ResNet-18 step on
/// 128 px JPEGs, where a run of ten steps then takes 7,000 page faults instead of 276,000
/// (docs/benchmarks.md).
///
/// Returns whether the allocator took the settings (always `false` outside glibc, where it does
/// nothing).
pub fn keep_freed_memory() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        const TRIM_THRESHOLD: libc::c_int = 1 << 30;
        // SAFETY: mallopt only changes two of the allocator's settings; glibc takes its own
        // lock, so calling it while other threads allocate is allowed.
        unsafe {
            libc::mallopt(libc::M_MMAP_MAX, 0) == 1
                && libc::mallopt(libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1
        }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        false
    }
}
