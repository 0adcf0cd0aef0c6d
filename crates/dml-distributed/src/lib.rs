//! # dml-distributed
//!
//! Data-parallel training for dml on PyTorch's own collective engine: the c10d `TCPStore`
//! rendezvous and `ProcessGroupGloo` that `libtorch_cpu.so` already contains, reached through a
//! small C shim (src/shim.cpp). Nothing here moves bytes itself: Gloo's TCP transport and its
//! ring/halving-doubling algorithms do, exactly as under `torch.distributed` with the Gloo
//! backend.
//!
//! Against the CUDA LibTorch (`cargo xtask libtorch --cuda`), the same API also drives
//! `ProcessGroupNCCL` from `libtorch_cuda.so` ([`Backend::Nccl`], CUDA tensors, one device per
//! process: [`InitOptions::cuda_device`], `LOCAL_RANK` under a launcher). Against the CPU
//! LibTorch, [`Backend::Nccl`] is refused with [`Error::Invalid`] naming that command. What an
//! NCCL caller can rely on:
//! - When a collective returns, its results are ready for any later work on the device's
//!   current CUDA stream, which is the stream tch's operations use; reading them on the CPU
//!   (`Vec::try_from`, `to(Device::Cpu)`) waits for them. The CPU itself does not wait for the
//!   GPU (except in [`ProcessGroup::barrier`], which returns once the current stream, the
//!   barrier's own all-reduce included, has finished), so code that uses other streams must
//!   synchronise with the current one itself.
//! - Tensors on any other device are refused ([`ProcessGroup::device`] says which one).
//! - The timeout is enforced by c10d's NCCL watchdog, not by the call: a collective that hangs
//!   past it aborts the communicator and, by default (`TORCH_NCCL_ASYNC_ERROR_HANDLING`), ends
//!   the process rather than returning [`Error::Collective`]. The ranks connect at the first
//!   collective, not in [`ProcessGroup::init`].
//!
//! What a training loop needs, and nothing more:
//! - [`Launch::from_env`] reads `RANK`, `WORLD_SIZE`, `LOCAL_RANK`, `MASTER_ADDR` and
//!   `MASTER_PORT`, the variables `torchrun`, Slurm scripts and Kubernetes operators set (and
//!   `dml launch`).
//! - [`ProcessGroup::init`] meets the other ranks (TCP store on rank 0, or a shared file), with a
//!   timeout for the meeting and for every collective, on the [`Backend`] chosen in
//!   [`InitOptions`] (Gloo by default).
//! - [`ProcessGroup::all_reduce`] (sum or mean, any number of tensors as one flattened bucket),
//!   [`ProcessGroup::all_gather`] (rows may differ per rank), [`ProcessGroup::broadcast`] and
//!   [`ProcessGroup::barrier`].
//! - Failures come back as [`Error`]s that say which rank failed, which collective, and which
//!   peer stopped or fell behind: every rank publishes a heartbeat and its collective count in
//!   the store, and a failed collective reads them before reporting.
//!
//! ```
//! use std::time::Duration;
//! use dml_distributed::{InitOptions, ProcessGroup, ReduceOp, Rendezvous};
//! use tch::{Kind, Tensor};
//!
//! // A world of one on loopback; `dml launch` and torchrun start more ranks the same way, and
//! // `Launch::from_env` turns their variables into these options.
//! let port = dml_distributed::free_port()?;
//! let opts = InitOptions::new(Rendezvous::tcp("127.0.0.1", port), 0, 1)
//!     .timeout(Duration::from_secs(30));
//! let pg = ProcessGroup::init(&opts)?;
//! let mut grads = vec![Tensor::from_slice(&[1.0f32, 2.0]), Tensor::ones([2, 2], (Kind::Float, tch::Device::Cpu))];
//! pg.all_reduce(&mut grads, ReduceOp::Mean)?;
//! assert_eq!(Vec::<f32>::try_from(&grads[0])?, vec![1.0, 2.0]);
//! let gathered = pg.all_gather(&Tensor::from_slice(&[7i64, 8, 9]))?;
//! assert_eq!(gathered.len(), 1);
//! pg.barrier()?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod ffi;

use std::ffi::{CString, c_int};
use std::net::{Ipv4Addr, TcpListener};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tch::{Device, Kind, Tensor};

/// What went wrong, named for the person running the job.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A launcher variable is missing or malformed.
    #[error("environment variable {var}: {message}")]
    Env {
        /// The variable.
        var: &'static str,
        /// What is wrong with it and what to do.
        message: String,
    },
    /// The ranks did not meet (store or process group creation failed).
    #[error(
        "rank {rank} of {world} could not join the process group at {at}: {message} (are all \
         {world} ranks started with the same MASTER_ADDR/MASTER_PORT, and is the port free on \
         rank 0's machine?)"
    )]
    Rendezvous {
        /// This process's rank.
        rank: usize,
        /// The world size.
        world: usize,
        /// The rendezvous address or file.
        at: String,
        /// c10d's message.
        message: String,
    },
    /// A collective failed: a peer died, hung past the timeout, or sent something else.
    #[error(
        "{op} (collective #{seq}) failed on rank {rank} of {world} after {seconds:.1} s: \
         {message}; {suspect}"
    )]
    Collective {
        /// The collective.
        op: &'static str,
        /// Its ordinal in this process (every rank runs the same sequence).
        seq: u64,
        /// This process's rank.
        rank: usize,
        /// The world size.
        world: usize,
        /// How long it ran before failing.
        seconds: f64,
        /// c10d's or dml's message.
        message: String,
        /// Which peer stopped or lags, from the heartbeats in the store.
        suspect: String,
    },
    /// Input the collective cannot take (caught before any data moves).
    #[error("{op}: {message}")]
    Invalid {
        /// The collective.
        op: &'static str,
        /// What is wrong.
        message: String,
    },
    /// A tensor operation around a collective failed.
    #[error(transparent)]
    Torch(#[from] tch::TchError),
}

/// The result type of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Where the ranks meet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rendezvous {
    /// c10d's TCPStore: rank 0 serves it at `host:port`, every rank connects.
    Tcp {
        /// Rank 0's address as the others reach it.
        host: String,
        /// The port rank 0 listens on.
        port: u16,
    },
    /// c10d's FileStore: a file on a file system all ranks share.
    File(PathBuf),
}

impl Rendezvous {
    /// TCP rendezvous at `host:port`.
    pub fn tcp(host: impl Into<String>, port: u16) -> Rendezvous {
        Rendezvous::Tcp {
            host: host.into(),
            port,
        }
    }

    fn describe(&self) -> String {
        match self {
            Rendezvous::Tcp { host, port } => format!("tcp://{host}:{port}"),
            Rendezvous::File(path) => format!("file://{}", path.display()),
        }
    }

    fn is_loopback(&self) -> bool {
        match self {
            Rendezvous::Tcp { host, .. } => {
                host == "localhost" || host.starts_with("127.") || host == "::1"
            }
            Rendezvous::File(_) => false,
        }
    }
}

/// Which c10d engine moves the tensors.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Backend {
    /// `ProcessGroupGloo` over TCP: CPU tensors. Always available.
    #[default]
    Gloo,
    /// `ProcessGroupNCCL`: CUDA tensors on [`InitOptions::cuda_device`]. Only in a build against
    /// the CUDA LibTorch (`cargo xtask libtorch --cuda`); elsewhere
    /// [`ProcessGroup::init`] refuses it with [`Error::Invalid`].
    Nccl,
}

/// How to start a process group.
#[derive(Debug, Clone)]
pub struct InitOptions {
    /// Gloo (CPU tensors, the default) or NCCL (CUDA tensors).
    pub backend: Backend,
    /// NCCL only: the CUDA device of this rank (`LOCAL_RANK` under a launcher, 0 by default).
    /// It becomes the process's current device, and every tensor passed to the group must be
    /// on it.
    pub cuda_device: usize,
    /// Where the ranks meet.
    pub rendezvous: Rendezvous,
    /// This process's rank, `0..world_size`.
    pub rank: usize,
    /// Number of processes.
    pub world_size: usize,
    /// Limit for meeting and for every collective (c10d's default is 30 minutes).
    pub timeout: Duration,
    /// The network interface Gloo binds to (`GLOO_SOCKET_IFNAME`, as in PyTorch); `None`: the
    /// loopback address when the rendezvous is on loopback, else c10d's default (the address
    /// of this machine's host name).
    pub interface: Option<String>,
    /// The launcher already serves the TCP store at the rendezvous address (torchrun's agent
    /// does, and says so with `TORCHELASTIC_USE_AGENT_STORE=True`): every rank, rank 0
    /// included, connects to it as a client, under the prefix `/worker/attempt_<restart>` as
    /// PyTorch's workers do. `None`: rank 0 serves the store.
    pub launcher_store: Option<u32>,
}

impl InitOptions {
    /// Options with a 30-minute timeout and the default interface.
    pub fn new(rendezvous: Rendezvous, rank: usize, world_size: usize) -> InitOptions {
        InitOptions {
            backend: Backend::Gloo,
            cuda_device: 0,
            rendezvous,
            rank,
            world_size,
            timeout: Duration::from_secs(1800),
            interface: std::env::var("GLOO_SOCKET_IFNAME")
                .ok()
                .filter(|s| !s.is_empty()),
            launcher_store: None,
        }
    }

    /// Sets the timeout.
    pub fn timeout(mut self, timeout: Duration) -> InitOptions {
        self.timeout = timeout;
        self
    }

    /// Sets the backend.
    pub fn backend(mut self, backend: Backend) -> InitOptions {
        self.backend = backend;
        self
    }
}

/// The launcher variables of one process, as `torchrun` (and `dml launch`) set them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Launch {
    /// `RANK`: this process's global rank.
    pub rank: usize,
    /// `WORLD_SIZE`: number of processes in all.
    pub world_size: usize,
    /// `LOCAL_RANK`: rank on this machine (for choosing a GPU); `RANK` when unset.
    pub local_rank: usize,
    /// `MASTER_ADDR`: rank 0's address.
    pub master_addr: String,
    /// `MASTER_PORT`: the rendezvous port on rank 0.
    pub master_port: u16,
    /// torchrun's agent serves the store (`TORCHELASTIC_USE_AGENT_STORE=True`); the value is
    /// `TORCHELASTIC_RESTART_COUNT` (0 when unset).
    pub launcher_store: Option<u32>,
}

impl Launch {
    /// The launcher variables, or `None` when neither `RANK` nor `WORLD_SIZE` is set (a plain
    /// single-process run). Partly set or malformed variables are an error naming the variable.
    pub fn from_env() -> Result<Option<Launch>> {
        Launch::from_lookup(|k| std::env::var(k).ok())
    }

    /// [`Launch::from_env`] over any source of variables (for tests and launchers).
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Option<Launch>> {
        let (rank, world) = (get("RANK"), get("WORLD_SIZE"));
        if rank.is_none() && world.is_none() {
            return Ok(None);
        }
        let need = |var: &'static str| {
            get(var).ok_or_else(|| Error::Env {
                var,
                message: "not set, but RANK or WORLD_SIZE is: a distributed launch sets RANK, \
                          WORLD_SIZE, MASTER_ADDR and MASTER_PORT together (use `dml launch` \
                          or torchrun, or unset RANK and WORLD_SIZE for one process)"
                    .to_owned(),
            })
        };
        let number = |var: &'static str, value: String| {
            value.trim().parse::<usize>().map_err(|_| Error::Env {
                var,
                message: format!("{value:?} is not a non-negative integer"),
            })
        };
        let world_size = number("WORLD_SIZE", need("WORLD_SIZE")?)?;
        let rank = number("RANK", need("RANK")?)?;
        if world_size == 0 || rank >= world_size {
            return Err(Error::Env {
                var: "RANK",
                message: format!("rank {rank} is not below WORLD_SIZE = {world_size}"),
            });
        }
        let local_rank = match get("LOCAL_RANK") {
            Some(v) => number("LOCAL_RANK", v)?,
            None => rank,
        };
        let master_addr = need("MASTER_ADDR")?;
        let port = need("MASTER_PORT")?;
        let master_port = port.trim().parse::<u16>().map_err(|_| Error::Env {
            var: "MASTER_PORT",
            message: format!("{port:?} is not a port number"),
        })?;
        let launcher_store = match get("TORCHELASTIC_USE_AGENT_STORE").as_deref() {
            Some("True") | Some("true") | Some("1") => Some(
                get("TORCHELASTIC_RESTART_COUNT")
                    .and_then(|v| v.trim().parse().ok())
                    .unwrap_or(0),
            ),
            _ => None,
        };
        Ok(Some(Launch {
            rank,
            world_size,
            local_rank,
            master_addr,
            master_port,
            launcher_store,
        }))
    }

    /// The options that join this launch's process group (Gloo; an NCCL group set with
    /// [`InitOptions::backend`] uses CUDA device `LOCAL_RANK`).
    pub fn init_options(&self) -> InitOptions {
        let mut opts = InitOptions::new(
            Rendezvous::tcp(self.master_addr.clone(), self.master_port),
            self.rank,
            self.world_size,
        );
        opts.launcher_store = self.launcher_store;
        opts.cuda_device = self.local_rank;
        opts
    }
}

/// A port on loopback that was free a moment ago (for local launches and tests).
pub fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?
        .local_addr()?
        .port())
}

/// How [`ProcessGroup::all_reduce`] combines the ranks' tensors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReduceOp {
    /// Element-wise sum.
    Sum,
    /// Element-wise mean (the sum divided by the world size).
    Mean,
}

/// The rendezvous store, shared by the process group and the heartbeat thread (c10d's stores
/// lock around every operation).
#[derive(Debug)]
struct StoreHandle(*mut ffi::Store);

// SAFETY: c10d's TCPStore and FileStore serialise their operations with an internal mutex.
unsafe impl Send for StoreHandle {}
// SAFETY: as above.
unsafe impl Sync for StoreHandle {}

impl Drop for StoreHandle {
    fn drop(&mut self) {
        // SAFETY: created by dml_store_*, freed once.
        unsafe { ffi::dml_store_free(self.0) }
    }
}

impl StoreHandle {
    fn set(&self, key: &str, value: &[u8]) -> Result<(), String> {
        let key = CString::new(key).map_err(|e| e.to_string())?;
        // SAFETY: live store, valid key and buffer.
        unsafe {
            ffi::take_error(ffi::dml_store_set(
                self.0,
                key.as_ptr(),
                value.as_ptr(),
                value.len(),
            ))
        }
    }

    fn try_get(&self, key: &str) -> Result<Option<Vec<u8>>, String> {
        let key = CString::new(key).map_err(|e| e.to_string())?;
        let mut found: c_int = 0;
        let mut data: *mut u8 = std::ptr::null_mut();
        let mut len = 0usize;
        // SAFETY: live store; outputs are written only on success.
        unsafe {
            ffi::take_error(ffi::dml_store_try_get(
                self.0,
                key.as_ptr(),
                &mut found,
                &mut data,
                &mut len,
            ))?
        };
        if found == 0 {
            return Ok(None);
        }
        // SAFETY: the shim malloc'd `len` bytes at `data`; copied, then freed once.
        let value = unsafe { std::slice::from_raw_parts(data, len) }.to_vec();
        unsafe { ffi::dml_dist_free(data.cast()) };
        Ok(Some(value))
    }
}

/// Every rank writes `<beats> <collectives started>` under its key four times a second, so a
/// rank whose collective fails can tell a dead or frozen peer (no new beats) from one that is
/// alive but behind (fewer collectives).
#[derive(Debug)]
struct Heartbeat {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

const HEARTBEAT_EVERY: Duration = Duration::from_millis(250);

fn heartbeat_key(rank: usize) -> String {
    format!("dml/heartbeat/{rank}")
}

impl Heartbeat {
    fn start(store: Arc<StoreHandle>, rank: usize, seq: Arc<AtomicU64>) -> Heartbeat {
        // The first beat before returning, so that a peer's first read already finds the key.
        let _ = store.set(&heartbeat_key(rank), b"0 0");
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name(format!("dml-heartbeat-{rank}"))
            .spawn(move || {
                let mut beats = 0u64;
                while !flag.load(Ordering::Relaxed) {
                    beats += 1;
                    let value = format!("{beats} {}", seq.load(Ordering::Relaxed));
                    // A store that went away (rank 0 ended) only ends the beats.
                    if store.set(&heartbeat_key(rank), value.as_bytes()).is_err() {
                        break;
                    }
                    std::thread::sleep(HEARTBEAT_EVERY);
                }
            })
            .ok();
        Heartbeat { stop, thread }
    }
}

impl Drop for Heartbeat {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// One process's membership of a Gloo or NCCL process group: its rank, the world size and the
/// collectives. Every rank must call the same collectives in the same order.
#[derive(Debug)]
pub struct ProcessGroup {
    pg: *mut ffi::Pg,
    backend: Backend,
    /// Where the group's tensors live: the CPU (Gloo) or the CUDA device (NCCL).
    device: Device,
    // Dropped after `pg` (fields drop in order): the group unregisters from its store.
    heartbeat: Option<Heartbeat>,
    store: Arc<StoreHandle>,
    rank: usize,
    world: usize,
    /// Collectives started by this process (every rank runs the same sequence).
    seq: Arc<AtomicU64>,
    /// Bytes per rank that [`ProcessGroup::all_gather`] sends without asking first: the
    /// largest part of its last call, the same on every rank.
    gather_capacity: AtomicU64,
    /// [`ProcessGroup::all_gather`]'s send buffer, reused while the capacity stays the same.
    gather_send: std::sync::Mutex<Option<Tensor>>,
}

// SAFETY: c10d process groups are used from any thread; dml calls them from one at a time.
unsafe impl Send for ProcessGroup {}

impl Drop for ProcessGroup {
    fn drop(&mut self) {
        self.heartbeat.take();
        // SAFETY: created by dml_pg_gloo or dml_pg_nccl, freed once.
        unsafe { ffi::dml_pg_free(self.pg) }
    }
}

fn c_string(op: &'static str, s: &str) -> Result<CString> {
    CString::new(s).map_err(|_| Error::Invalid {
        op,
        message: format!("{s:?} holds a NUL byte"),
    })
}

/// The Gloo group over `store`, bound to the interface or address the options name.
fn gloo_group(
    opts: &InitOptions,
    store: &StoreHandle,
    timeout_ms: i64,
) -> std::result::Result<*mut ffi::Pg, String> {
    let (host, by_interface) = match (&opts.interface, opts.rendezvous.is_loopback()) {
        (Some(ifname), _) => (ifname.clone(), 1),
        (None, true) => ("127.0.0.1".to_owned(), 0),
        (None, false) => (String::new(), 0),
    };
    let host = CString::new(host).map_err(|e| e.to_string())?;
    let mut pg: *mut ffi::Pg = std::ptr::null_mut();
    // SAFETY: live store, valid C string; `pg` is written on success.
    unsafe {
        ffi::take_error(ffi::dml_pg_gloo(
            store.0,
            opts.rank as c_int,
            opts.world_size as c_int,
            timeout_ms,
            host.as_ptr(),
            by_interface,
            0,
            &mut pg,
        ))
    }?;
    Ok(pg)
}

const NO_NCCL: &str = "this build's LibTorch has no NCCL: run `cargo xtask libtorch --cuda` \
                       (then rebuild) to use Backend::Nccl, or use Backend::Gloo";

/// The CUDA device an NCCL group would use, checked before any rank meets the others.
fn nccl_device(index: usize) -> Result<Device> {
    if !cfg!(dml_nccl) {
        return Err(Error::Invalid {
            op: "init",
            message: NO_NCCL.to_owned(),
        });
    }
    let visible = usize::try_from(tch::Cuda::device_count()).unwrap_or(0);
    if index >= visible {
        return Err(Error::Invalid {
            op: "init",
            message: format!(
                "the NCCL backend needs CUDA device {index}, and this process sees {visible} \
                 CUDA device(s) (no GPU, no driver, or CUDA_VISIBLE_DEVICES hides it); use \
                 Backend::Gloo for CPU tensors"
            ),
        });
    }
    Ok(Device::Cuda(index))
}

#[cfg(dml_nccl)]
fn nccl_group(
    opts: &InitOptions,
    store: &StoreHandle,
    timeout_ms: i64,
) -> std::result::Result<*mut ffi::Pg, String> {
    let device = c_int::try_from(opts.cuda_device).map_err(|e| e.to_string())?;
    let mut pg: *mut ffi::Pg = std::ptr::null_mut();
    // SAFETY: live store; `pg` is written on success.
    unsafe {
        ffi::take_error(ffi::dml_pg_nccl(
            store.0,
            opts.rank as c_int,
            opts.world_size as c_int,
            timeout_ms,
            device,
            &mut pg,
        ))
    }?;
    Ok(pg)
}

#[cfg(not(dml_nccl))]
fn nccl_group(
    _opts: &InitOptions,
    _store: &StoreHandle,
    _timeout_ms: i64,
) -> std::result::Result<*mut ffi::Pg, String> {
    Err(NO_NCCL.to_owned())
}

impl ProcessGroup {
    /// Joins the process group: rank 0 serves the TCP store (or all open the shared file), then
    /// Gloo connects every pair of ranks. Waits for all `world_size` ranks up to the timeout.
    /// An NCCL group checks its CUDA device before meeting, and NCCL connects the ranks at the
    /// first collective.
    pub fn init(opts: &InitOptions) -> Result<ProcessGroup> {
        let (rank, world) = (opts.rank, opts.world_size);
        let at = opts.rendezvous.describe();
        if world == 0 || rank >= world {
            return Err(Error::Invalid {
                op: "init",
                message: format!("rank {rank} is not below world size {world}"),
            });
        }
        let device = match opts.backend {
            Backend::Gloo => Device::Cpu,
            Backend::Nccl => nccl_device(opts.cuda_device)?,
        };
        let rendezvous_error = |message: String| Error::Rendezvous {
            rank,
            world,
            at: at.clone(),
            message,
        };
        let timeout_ms = opts.timeout.as_millis().min(i64::MAX as u128) as i64;
        let mut store: *mut ffi::Store = std::ptr::null_mut();
        match &opts.rendezvous {
            Rendezvous::Tcp { host, port } => {
                let host = c_string("init", host)?;
                // SAFETY: valid C string; `store` is written on success.
                unsafe {
                    ffi::take_error(ffi::dml_store_tcp(
                        host.as_ptr(),
                        *port,
                        c_int::from(rank == 0 && opts.launcher_store.is_none()),
                        world as c_int,
                        timeout_ms,
                        &mut store,
                    ))
                }
                .map_err(rendezvous_error)?;
            }
            Rendezvous::File(path) => {
                let path = c_string("init", &path.to_string_lossy())?;
                // SAFETY: as above.
                unsafe {
                    ffi::take_error(ffi::dml_store_file(
                        path.as_ptr(),
                        world as c_int,
                        &mut store,
                    ))
                }
                .map_err(rendezvous_error)?;
            }
        }
        let mut store = StoreHandle(store);
        if let Some(attempt) = opts.launcher_store {
            let prefix = c_string("init", &format!("/worker/attempt_{attempt}"))?;
            let mut prefixed: *mut ffi::Store = std::ptr::null_mut();
            // SAFETY: live base store; the prefix store keeps its own reference to it.
            unsafe {
                ffi::take_error(ffi::dml_store_prefixed(
                    store.0,
                    prefix.as_ptr(),
                    &mut prefixed,
                ))
            }
            .map_err(rendezvous_error)?;
            store = StoreHandle(prefixed);
        }
        let store = Arc::new(store);
        let pg = match opts.backend {
            Backend::Gloo => gloo_group(opts, &store, timeout_ms),
            Backend::Nccl => nccl_group(opts, &store, timeout_ms),
        }
        .map_err(rendezvous_error)?;
        let seq = Arc::new(AtomicU64::new(0));
        let heartbeat = Some(Heartbeat::start(Arc::clone(&store), rank, Arc::clone(&seq)));
        Ok(ProcessGroup {
            pg,
            backend: opts.backend,
            device,
            heartbeat,
            store,
            rank,
            world,
            seq,
            gather_capacity: AtomicU64::new(0),
            gather_send: std::sync::Mutex::new(None),
        })
    }

    /// This process's rank.
    pub fn rank(&self) -> usize {
        self.rank
    }

    /// The number of processes.
    pub fn world_size(&self) -> usize {
        self.world
    }

    /// The backend this group runs on.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Where the group's tensors must be: the CPU for Gloo, the CUDA device for NCCL.
    pub fn device(&self) -> Device {
        self.device
    }

    /// Runs one collective, counting it and turning a failure into [`Error::Collective`].
    fn collective(
        &self,
        op: &'static str,
        call: impl FnOnce() -> std::result::Result<(), String>,
    ) -> Result<()> {
        let seq = self.seq.fetch_add(1, Ordering::Relaxed) + 1;
        let start = Instant::now();
        call().map_err(|message| Error::Collective {
            op,
            seq,
            rank: self.rank,
            world: self.world,
            seconds: start.elapsed().as_secs_f64(),
            message,
            suspect: self.suspects(seq),
        })
    }

    /// Which peers stopped or fell behind, from their heartbeats: read, wait four beats, read
    /// again.
    fn suspects(&self, my_seq: u64) -> String {
        let read = || -> std::result::Result<Vec<Option<(u64, u64)>>, String> {
            (0..self.world)
                .map(|r| {
                    let value = self.store.try_get(&heartbeat_key(r))?;
                    Ok(value.and_then(|v| {
                        let s = String::from_utf8_lossy(&v).into_owned();
                        let mut it = s.split(' ').map(|x| x.parse::<u64>().ok());
                        Some((it.next()??, it.next()??))
                    }))
                })
                .collect()
        };
        let unreachable = |e: String| {
            format!(
                "the rendezvous store is unreachable too ({e}), so rank 0 (or the launcher \
                 serving the store) has most likely stopped"
            )
        };
        let first = match read() {
            Ok(v) => v,
            Err(e) => return unreachable(e),
        };
        std::thread::sleep(HEARTBEAT_EVERY * 4);
        let second = match read() {
            Ok(v) => v,
            Err(e) => return unreachable(e),
        };
        let mut stopped = Vec::new();
        let mut behind = Vec::new();
        for r in (0..self.world).filter(|&r| r != self.rank) {
            match (first[r], second[r]) {
                // Beats that advanced, or that began between the two reads: alive.
                (first, Some((b1, s1))) if first.is_none_or(|(b0, _)| b1 > b0) => {
                    if s1 < my_seq {
                        behind.push(format!("rank {r} (at collective #{s1})"));
                    }
                }
                _ => stopped.push(format!("rank {r}")),
            }
        }
        match (stopped.is_empty(), behind.is_empty()) {
            (false, _) => format!(
                "{} stopped (no heartbeat for {:.1} s): look at its output for the cause",
                stopped.join(", "),
                (HEARTBEAT_EVERY * 4).as_secs_f64()
            ),
            (true, false) => format!(
                "{} still running but behind this rank (at #{my_seq}): a hang or a much slower \
                 rank; raise the timeout if it is only slow",
                behind.join(", ")
            ),
            (true, true) => "every peer is alive and at the same collective: the call itself \
                             failed (see the message)"
                .to_owned(),
        }
    }

    /// Combines `tensors` over the ranks, in place, as one flattened bucket per dtype: one
    /// collective for a model's gradients however many tensors they are. Every rank passes
    /// tensors of the same shapes and dtypes in the same order.
    pub fn all_reduce(&self, tensors: &mut [Tensor], op: ReduceOp) -> Result<()> {
        if op == ReduceOp::Mean
            && let Some(t) = tensors
                .iter()
                .find(|t| t.defined() && !t.is_floating_point())
        {
            return Err(Error::Invalid {
                op: "all_reduce",
                message: format!(
                    "a mean of {:?} tensors would truncate: use ReduceOp::Sum for integers",
                    t.kind()
                ),
            });
        }
        for group in self.buckets("all_reduce", tensors)? {
            let mut ptrs: Vec<ffi::TensorPtr> = group
                .iter()
                .map(|&i| tensors[i].as_mut_ptr().cast())
                .collect();
            self.collective("all_reduce", || {
                // SAFETY: live group; `ptrs` point at defined tensors that outlive the call.
                unsafe {
                    ffi::take_error(ffi::dml_pg_allreduce_sum(
                        self.pg,
                        ptrs.as_mut_ptr(),
                        ptrs.len(),
                    ))
                }
            })?;
        }
        if op == ReduceOp::Mean && self.world > 1 {
            let _guard = tch::no_grad_guard();
            for t in tensors.iter_mut() {
                let _ = t.f_div_scalar_(self.world as f64)?;
            }
        }
        Ok(())
    }

    /// The positions of `tensors` grouped by dtype, in order of first appearance; refuses
    /// undefined tensors and other devices.
    fn buckets(&self, op: &'static str, tensors: &[Tensor]) -> Result<Vec<Vec<usize>>> {
        let mut groups: Vec<(Kind, Vec<usize>)> = Vec::new();
        for (i, t) in tensors.iter().enumerate() {
            let kind = self.checked_kind(op, t)?;
            match groups.iter_mut().find(|(k, _)| *k == kind) {
                Some((_, g)) => g.push(i),
                None => groups.push((kind, vec![i])),
            }
        }
        Ok(groups.into_iter().map(|(_, g)| g).collect())
    }

    /// Every rank's `tensor`, in rank order. The tensors may differ in their first dimension
    /// (rows) but not in their other dimensions or dtype; a mismatch is an error naming the
    /// ranks, raised on every rank before any data moves.
    pub fn all_gather(&self, tensor: &Tensor) -> Result<Vec<Tensor>> {
        const OP: &str = "all_gather";
        let kind = self.checked_kind(OP, tensor)?;
        let shape = tensor.size();
        if shape.is_empty() || shape.len() > 6 {
            return Err(Error::Invalid {
                op: OP,
                message: format!("expected 1 to 6 dimensions, got shape {shape:?}"),
            });
        }
        // Each rank sends [header | its bytes, padded to the agreed capacity] in one
        // all-gather. The header is [ndim, dtype, sizes..., padding] as 64 bytes. When some
        // rank's bytes do not fit (the first call, or a batch larger than any before), every
        // rank sees it in the headers, and all repeat the gather once at the new capacity. The
        // capacity then follows the largest part of the last call, the same on every rank.
        let mut header = vec![-1i64; HEADER_WORDS];
        header[0] = shape.len() as i64;
        header[1] = kind_code(kind);
        header[2..2 + shape.len()].copy_from_slice(&shape);
        let bytes = tensor
            .f_detach()?
            .f_contiguous()?
            .f_reshape([-1])?
            .f_view_dtype(Kind::Uint8)?;
        let header_bytes = Tensor::from_slice(&header).f_view_dtype(Kind::Uint8)?;
        let needed = bytes.numel() as i64;
        let elem = (kind.elt_size_in_bytes() as i64).max(1);
        let mut capacity = self.gather_capacity.load(Ordering::Relaxed) as i64;
        loop {
            let fits = needed <= capacity;
            // The send buffer is kept between calls (it never leaves this function); only the
            // padding after the data is cleared.
            let mut kept = self.gather_send.lock().unwrap_or_else(|p| p.into_inner());
            let total = HEADER_BYTES + capacity;
            if kept
                .as_ref()
                .is_none_or(|t| t.numel() as i64 != total || t.device() != self.device)
            {
                *kept = Some(Tensor::f_empty([total], (Kind::Uint8, self.device))?);
            }
            let send = kept.as_ref().expect("just set").shallow_clone();
            drop(kept);
            send.f_narrow(0, 0, HEADER_BYTES)?.f_copy_(&header_bytes)?;
            let used = if fits { needed } else { 0 };
            if used > 0 {
                send.f_narrow(0, HEADER_BYTES, used)?.f_copy_(&bytes)?;
            }
            if used < capacity {
                let _ = send
                    .f_narrow(0, HEADER_BYTES + used, capacity - used)?
                    .f_zero_()?;
            }
            let parts = self.gather_same(OP, &send)?;
            // The headers come to the CPU in one copy (on CUDA, one that waits for the
            // gather).
            let all_headers = Tensor::f_stack(
                &parts
                    .iter()
                    .map(|p| p.f_narrow(0, 0, HEADER_BYTES))
                    .collect::<Result<Vec<_>, _>>()?,
                0,
            )?
            .f_to(Device::Cpu)?
            .f_view_dtype(Kind::Int64)?;
            let headers = (0..parts.len() as i64)
                .map(|r| Vec::<i64>::try_from(&all_headers.f_get(r)?))
                .collect::<Result<Vec<_>, _>>()?;
            for (r, h) in headers.iter().enumerate() {
                let (mut mine, mut theirs) = (header.clone(), h.clone());
                mine[2] = 0;
                theirs[2] = 0;
                if mine != theirs {
                    return Err(Error::Invalid {
                        op: OP,
                        message: format!(
                            "rank {} passes shape {shape:?} of {kind:?}, rank {r} shape {:?} of \
                             dtype code {}: only the first dimension may differ",
                            self.rank,
                            &h[2..2 + (h[0].clamp(0, 6) as usize)],
                            h[1]
                        ),
                    });
                }
            }
            let row_bytes = shape[1..].iter().product::<i64>() * elem;
            let sizes: Vec<i64> = headers.iter().map(|h| h[2] * row_bytes).collect();
            // A multiple of 8, so that every rank's part of the flat result starts aligned for
            // any dtype.
            let largest = (sizes.iter().copied().max().unwrap_or(0) + 7) / 8 * 8;
            self.gather_capacity
                .store(largest as u64, Ordering::Relaxed);
            if largest > capacity {
                capacity = largest;
                continue;
            }
            return parts
                .iter()
                .zip(&headers)
                .zip(&sizes)
                .map(|((part, h), &n)| {
                    let mut s = shape.clone();
                    s[0] = h[2];
                    Ok(part
                        .f_narrow(0, HEADER_BYTES, n)?
                        .f_view_dtype(kind)?
                        .f_reshape(&s)?)
                })
                .collect();
        }
    }

    /// All-gather of tensors of one shape on every rank: one flat result, returned as `world`
    /// views of it.
    fn gather_same(&self, op: &'static str, tensor: &Tensor) -> Result<Vec<Tensor>> {
        let mut output: ffi::TensorPtr = std::ptr::null_mut();
        let input = tensor.as_ptr().cast_mut().cast();
        self.collective(op, || {
            // SAFETY: live group, live input; the shim writes one new tensor on success.
            unsafe { ffi::take_error(ffi::dml_pg_allgather(self.pg, input, &mut output)) }
        })?;
        // SAFETY: a fresh `new at::Tensor`, owned from here on.
        let flat = unsafe { Tensor::from_ptr(output.cast()) };
        let shape = tensor.size();
        let rows = shape.first().copied().unwrap_or(1);
        (0..self.world as i64)
            .map(|r| {
                let part = flat.f_narrow(0, r * rows, rows)?;
                Ok(if shape.is_empty() {
                    part.f_reshape([] as [i64; 0])?
                } else {
                    part
                })
            })
            .collect()
    }

    /// Replaces `tensors` on every rank with rank `root`'s, in place (the starting weights),
    /// as one flattened bucket per dtype.
    pub fn broadcast(&self, tensors: &mut [Tensor], root: usize) -> Result<()> {
        const OP: &str = "broadcast";
        if root >= self.world {
            return Err(Error::Invalid {
                op: OP,
                message: format!("root {root} is not below world size {}", self.world),
            });
        }
        for group in self.buckets(OP, tensors)? {
            let mut ptrs: Vec<ffi::TensorPtr> = group
                .iter()
                .map(|&i| tensors[i].as_mut_ptr().cast())
                .collect();
            self.collective(OP, || {
                // SAFETY: live group and tensors.
                unsafe {
                    ffi::take_error(ffi::dml_pg_broadcast(
                        self.pg,
                        ptrs.as_mut_ptr(),
                        ptrs.len(),
                        root as c_int,
                    ))
                }
            })?;
        }
        Ok(())
    }

    /// Waits until every rank has called it.
    pub fn barrier(&self) -> Result<()> {
        // SAFETY: live group.
        self.collective("barrier", || unsafe {
            ffi::take_error(ffi::dml_pg_barrier(self.pg))
        })
    }

    /// The tensor's dtype, refusing undefined tensors and tensors off the group's device.
    fn checked_kind(&self, op: &'static str, t: &Tensor) -> Result<Kind> {
        if !t.defined() {
            return Err(Error::Invalid {
                op,
                message: "an undefined tensor (a gradient that was never computed?)".to_owned(),
            });
        }
        if t.device() != self.device {
            let message = match self.backend {
                Backend::Gloo => format!(
                    "a tensor on {:?}: the Gloo backend takes CPU tensors (Backend::Nccl takes \
                     CUDA ones)",
                    t.device()
                ),
                Backend::Nccl => format!(
                    "a tensor on {:?}: this NCCL group serves {:?} only",
                    t.device(),
                    self.device
                ),
            };
            return Err(Error::Invalid { op, message });
        }
        Ok(t.kind())
    }
}

/// The all-gather header: [ndim, dtype, up to 6 sizes] as i64.
const HEADER_WORDS: usize = 8;
const HEADER_BYTES: i64 = (HEADER_WORDS * 8) as i64;

fn kind_code(kind: Kind) -> i64 {
    match kind {
        Kind::Float => 0,
        Kind::Double => 1,
        Kind::Int64 => 2,
        Kind::Int => 3,
        Kind::Half => 4,
        Kind::BFloat16 => 5,
        Kind::Uint8 => 6,
        Kind::Int8 => 7,
        Kind::Bool => 8,
        _ => 99,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lookup(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let vars: Vec<(String, String)> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| vars.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone())
    }

    #[test]
    fn no_launcher_variables_is_a_single_process_run() {
        assert_eq!(Launch::from_lookup(lookup(&[])).unwrap(), None);
    }

    #[test]
    fn torchrun_variables_are_read() {
        let got = Launch::from_lookup(lookup(&[
            ("RANK", "1"),
            ("WORLD_SIZE", "2"),
            ("LOCAL_RANK", "1"),
            ("MASTER_ADDR", "localhost"),
            ("MASTER_PORT", "29500"),
            ("TORCHELASTIC_USE_AGENT_STORE", "True"),
            ("TORCHELASTIC_RESTART_COUNT", "3"),
        ]))
        .unwrap()
        .unwrap();
        assert_eq!(
            got,
            Launch {
                rank: 1,
                world_size: 2,
                local_rank: 1,
                master_addr: "localhost".to_owned(),
                master_port: 29500,
                launcher_store: Some(3),
            }
        );
        assert!(got.init_options().rendezvous.is_loopback());
    }

    #[test]
    fn partial_or_malformed_variables_name_the_variable() {
        let err = |vars: &[(&str, &str)]| Launch::from_lookup(lookup(vars)).unwrap_err();
        let e = err(&[("RANK", "0"), ("WORLD_SIZE", "2"), ("MASTER_ADDR", "h")]);
        assert!(
            matches!(
                e,
                Error::Env {
                    var: "MASTER_PORT",
                    ..
                }
            ),
            "{e}"
        );
        let e = err(&[("RANK", "2"), ("WORLD_SIZE", "2")]);
        assert!(
            e.to_string().contains("rank 2 is not below WORLD_SIZE = 2"),
            "{e}"
        );
        let e = err(&[("WORLD_SIZE", "two"), ("RANK", "0")]);
        assert!(
            matches!(
                e,
                Error::Env {
                    var: "WORLD_SIZE",
                    ..
                }
            ),
            "{e}"
        );
        let e = err(&[
            ("RANK", "0"),
            ("WORLD_SIZE", "1"),
            ("MASTER_ADDR", "h"),
            ("MASTER_PORT", "70000"),
        ]);
        assert!(
            matches!(
                e,
                Error::Env {
                    var: "MASTER_PORT",
                    ..
                }
            ),
            "{e}"
        );
    }

    fn nccl_options() -> InitOptions {
        let port = free_port().unwrap();
        InitOptions::new(Rendezvous::tcp("127.0.0.1", port), 0, 1)
            .timeout(Duration::from_secs(10))
            .backend(Backend::Nccl)
    }

    #[test]
    fn gloo_is_the_default_and_launchers_choose_the_local_device() {
        let opts = InitOptions::new(Rendezvous::tcp("h", 1), 0, 1);
        assert_eq!((opts.backend, opts.cuda_device), (Backend::Gloo, 0));
        let launch = Launch::from_lookup(lookup(&[
            ("RANK", "3"),
            ("WORLD_SIZE", "4"),
            ("LOCAL_RANK", "1"),
            ("MASTER_ADDR", "h"),
            ("MASTER_PORT", "1"),
        ]))
        .unwrap()
        .unwrap();
        assert_eq!(launch.init_options().cuda_device, 1);
    }

    /// Against the CPU LibTorch, NCCL is refused before any rank meets, saying what to install.
    #[cfg(not(dml_nccl))]
    #[test]
    fn nccl_needs_the_cuda_libtorch() {
        match ProcessGroup::init(&nccl_options()) {
            Err(Error::Invalid {
                op: "init",
                message,
            }) => {
                assert!(
                    message.contains("has no NCCL: run `cargo xtask libtorch --cuda`"),
                    "{message}"
                );
            }
            other => panic!("expected Invalid, got {other:?}"),
        }
    }

    /// Against the CUDA LibTorch on a machine without a GPU: a clean error, both from the
    /// check before the rendezvous and from the shim itself (c10d's ProcessGroupNCCL is never
    /// reached without a device), not a crash.
    #[cfg(dml_nccl)]
    #[test]
    fn nccl_without_a_gpu_is_a_clean_error() {
        if tch::Cuda::is_available() {
            eprintln!("skipped: a CUDA device is visible (see tests/nccl.rs)");
            return;
        }
        match ProcessGroup::init(&nccl_options()) {
            Err(Error::Invalid {
                op: "init",
                message,
            }) => {
                eprintln!("init: {message}");
                assert!(message.contains("needs CUDA device 0"), "{message}");
            }
            other => panic!("expected Invalid, got {other:?}"),
        }
        let dir = std::env::temp_dir().join(format!("dml-nccl-{}", std::process::id()));
        let path = CString::new(dir.to_string_lossy().as_bytes()).unwrap();
        let mut store: *mut ffi::Store = std::ptr::null_mut();
        // SAFETY: valid C string; `store` is written on success and freed below.
        unsafe { ffi::take_error(ffi::dml_store_file(path.as_ptr(), 1, &mut store)) }.unwrap();
        let mut pg: *mut ffi::Pg = std::ptr::null_mut();
        // SAFETY: live store; `pg` stays null on failure.
        let err = unsafe { ffi::take_error(ffi::dml_pg_nccl(store, 0, 1, 10_000, 0, &mut pg)) }
            .unwrap_err();
        eprintln!("shim: {err}");
        assert!(pg.is_null());
        assert!(err.contains("needs a CUDA device"), "{err}");
        // SAFETY: created above, freed once.
        unsafe { ffi::dml_store_free(store) };
        let _ = std::fs::remove_file(&dir);
    }
}
