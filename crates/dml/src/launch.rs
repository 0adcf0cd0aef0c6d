//! `dml launch --nproc N -- <dml command>`: N processes of one data-parallel run on this
//! machine, started the way `torchrun --nproc_per_node N` starts them.
//!
//! Each process gets `RANK`, `LOCAL_RANK`, `WORLD_SIZE`, `LOCAL_WORLD_SIZE`, `MASTER_ADDR`
//! (`127.0.0.1`) and `MASTER_PORT` (a free port unless given), which `dml train` reads through
//! [`dml_distributed::Launch::from_env`]; any launcher that sets them (torchrun, a Slurm
//! script, a Kubernetes operator) works the same way. Every output line is prefixed with its
//! rank. When a process fails, the others get a grace period to report what they saw (the
//! collective they were in fails at once when a peer's connection closes) and are then killed,
//! and the launcher exits with the failed rank's code.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How long the other ranks may run on after one failed, to print their own errors.
const GRACE: Duration = Duration::from_secs(10);

/// What `dml launch` starts.
#[derive(Debug, Clone)]
pub struct LocalLaunch {
    /// Processes to start (the world size).
    pub nproc: usize,
    /// `MASTER_PORT`; `None`: a free port.
    pub master_port: Option<u16>,
    /// The program each process runs (the `dml` binary itself).
    pub program: std::path::PathBuf,
    /// Its arguments (`train --config ...`).
    pub args: Vec<String>,
    /// Set (by a signal handler) when the launch is asked to stop: every rank still running
    /// is sent SIGTERM once, which it handles as Ctrl-C (checkpoint after the current step).
    pub stop: Option<Arc<AtomicBool>>,
}

/// How a launch ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LaunchOutcome {
    /// Each rank's exit code (`None`: ended by a signal).
    pub codes: Vec<Option<i32>>,
    /// The first rank that failed, if any.
    pub first_failure: Option<usize>,
}

fn prefix_lines(
    stream: impl std::io::Read + Send + 'static,
    rank: usize,
    to_stderr: bool,
) -> JoinHandle<()> {
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines() {
            let Ok(line) = line else { break };
            if to_stderr {
                let _ = writeln!(std::io::stderr().lock(), "[rank {rank}] {line}");
            } else {
                let _ = writeln!(std::io::stdout().lock(), "[rank {rank}] {line}");
            }
        }
    })
}

fn describe(status: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(c), _) => format!("exit code {c}"),
        (None, Some(s)) => format!("signal {s}"),
        _ => status.to_string(),
    }
}

impl LocalLaunch {
    /// Starts the processes and waits for all of them (see the module docs).
    pub fn run(&self) -> std::io::Result<LaunchOutcome> {
        let n = self.nproc.max(1);
        let port = match self.master_port {
            Some(p) => p,
            None => dml_distributed::free_port()?,
        };
        // As torchrun does: without OMP_NUM_THREADS, each rank gets an equal share of the cores
        // (LibTorch and rayon would otherwise each start one thread per core in every rank).
        let cores = std::thread::available_parallelism().map_or(1, |c| c.get());
        let threads = std::env::var("OMP_NUM_THREADS")
            .ok()
            .unwrap_or_else(|| (cores / n).max(1).to_string());
        eprintln!(
            "dml launch: {n} processes, rendezvous tcp://127.0.0.1:{port}, {threads} thread(s) each"
        );
        let mut children: Vec<Child> = Vec::with_capacity(n);
        let mut pipes = Vec::new();
        for rank in 0..n {
            let mut cmd = Command::new(&self.program);
            cmd.args(&self.args)
                .env("RANK", rank.to_string())
                .env("LOCAL_RANK", rank.to_string())
                .env("WORLD_SIZE", n.to_string())
                .env("LOCAL_WORLD_SIZE", n.to_string())
                .env("MASTER_ADDR", "127.0.0.1")
                .env("MASTER_PORT", port.to_string())
                .env("OMP_NUM_THREADS", &threads)
                .env("RAYON_NUM_THREADS", &threads)
                .stdout(Stdio::piped())
                .stderr(Stdio::piped());
            let mut child = match cmd.spawn() {
                Ok(c) => c,
                Err(e) => {
                    for c in &mut children {
                        let _ = c.kill();
                    }
                    return Err(e);
                }
            };
            eprintln!("dml launch: rank {rank} is pid {}", child.id());
            if let Some(out) = child.stdout.take() {
                pipes.push(prefix_lines(out, rank, false));
            }
            if let Some(err) = child.stderr.take() {
                pipes.push(prefix_lines(err, rank, true));
            }
            children.push(child);
        }
        let mut codes: Vec<Option<Option<i32>>> = vec![None; n];
        let mut first_failure: Option<usize> = None;
        let mut failed_at: Option<Instant> = None;
        let mut passed_on = false;
        while codes.iter().any(Option::is_none) {
            if !passed_on && self.stop.as_ref().is_some_and(|s| s.load(Ordering::SeqCst)) {
                passed_on = true;
                for (rank, child) in children.iter().enumerate() {
                    if codes[rank].is_none()
                        && let Ok(pid) = libc::pid_t::try_from(child.id())
                    {
                        // SAFETY: kill(2) with a pid this process spawned and has not reaped
                        // (its exit code is unknown), so the pid still names that child.
                        unsafe { libc::kill(pid, libc::SIGTERM) };
                    }
                }
            }
            for (rank, child) in children.iter_mut().enumerate() {
                if codes[rank].is_some() {
                    continue;
                }
                if let Some(status) = child.try_wait()? {
                    codes[rank] = Some(status.code());
                    if status.success() {
                        continue;
                    }
                    let interrupted = status.code() == Some(130);
                    if first_failure.is_none() {
                        first_failure = Some(rank);
                        failed_at = Some(Instant::now());
                        if !interrupted {
                            eprintln!(
                                "dml launch: rank {rank} ended with {}; the other ranks stop \
                                 within {} s",
                                describe(status),
                                GRACE.as_secs()
                            );
                        }
                    } else if !interrupted {
                        eprintln!("dml launch: rank {rank} ended with {}", describe(status));
                    }
                }
            }
            if failed_at.is_some_and(|t| t.elapsed() > GRACE) {
                for (rank, child) in children.iter_mut().enumerate() {
                    if codes[rank].is_none() {
                        eprintln!("dml launch: killing rank {rank}");
                        let _ = child.kill();
                    }
                }
                failed_at = None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        for p in pipes {
            let _ = p.join();
        }
        Ok(LaunchOutcome {
            codes: codes.into_iter().map(Option::flatten).collect(),
            first_failure,
        })
    }
}
