//! Two real processes on loopback: the collectives' values, the per-rank row counts of
//! all-gather, the shape check, and what a rank sees when its peer dies or hangs.
//!
//! Each test starts this test binary twice more, running only the ignored `worker` test with
//! the scenario, rank and port in the environment.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use dml_distributed::{Error, InitOptions, ProcessGroup, ReduceOp, Rendezvous};
use tch::{Kind, Tensor};

fn spawn(scenario: &str, rank: usize, port: u16) -> Child {
    Command::new(std::env::current_exe().unwrap())
        .args([
            "--ignored",
            "--exact",
            "worker",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("DML_DIST_SCENARIO", scenario)
        .env("DML_DIST_RANK", rank.to_string())
        .env("DML_DIST_PORT", port.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Runs `scenario` on two ranks; returns each rank's exit success and output. Kills what still
/// runs after `limit`, or 3 s after rank 0 ended.
fn run_pair(scenario: &str, limit: Duration) -> Vec<(bool, String)> {
    let port = dml_distributed::free_port().unwrap();
    let mut children = vec![spawn(scenario, 0, port), spawn(scenario, 1, port)];
    let start = Instant::now();
    let mut rank0_done: Option<Instant> = None;
    loop {
        if children.iter_mut().all(|c| c.try_wait().unwrap().is_some()) {
            break;
        }
        if rank0_done.is_none() && children[0].try_wait().unwrap().is_some() {
            rank0_done = Some(Instant::now());
        }
        let late = rank0_done.is_some_and(|t| t.elapsed() > Duration::from_secs(3));
        if late || start.elapsed() > limit {
            for c in &mut children {
                let _ = c.kill();
            }
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    children
        .into_iter()
        .map(|c| {
            let out = c.wait_with_output().unwrap();
            let text = format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            (out.status.success(), text)
        })
        .collect()
}

fn init(rank: usize, port: u16, timeout: Duration) -> ProcessGroup {
    let opts = InitOptions::new(Rendezvous::tcp("127.0.0.1", port), rank, 2).timeout(timeout);
    ProcessGroup::init(&opts).unwrap()
}

fn values(t: &Tensor) -> Vec<f32> {
    Vec::<f32>::try_from(&t.flatten(0, -1)).unwrap()
}

/// The values every rank can predict for every other: rank r contributes r + 1 times these.
fn ops(rank: usize, port: u16) {
    let pg = init(rank, port, Duration::from_secs(30));
    assert_eq!((pg.rank(), pg.world_size()), (rank, 2));
    let r = rank as f64 + 1.0;
    // Sum over ranks of (r + 1) * base = 3 * base; three tensors of different shapes.
    let base = [
        Tensor::from_slice(&[1.0f32, -2.0, 0.5]),
        Tensor::from_slice(&[4.0f32, 8.0, 16.0, 32.0]).reshape([2, 2]),
        Tensor::from_slice(&[1e-3f32]),
    ];
    let mut ts: Vec<Tensor> = base.iter().map(|b| b * r).collect();
    pg.all_reduce(&mut ts, ReduceOp::Sum).unwrap();
    for (t, b) in ts.iter().zip(&base) {
        assert_eq!(t.size(), b.size());
        assert_eq!(values(t), values(&(b * 3.0)));
    }
    let mut ts: Vec<Tensor> = base.iter().map(|b| b * r).collect();
    pg.all_reduce(&mut ts, ReduceOp::Mean).unwrap();
    assert_eq!(values(&ts[0]), vec![1.5, -3.0, 0.75]);

    // Rank 0 has 2 rows, rank 1 has 3, of [row, rank, 7].
    let rows = 2 + rank as i64;
    let mine = Tensor::from_slice(
        &(0..rows)
            .flat_map(|i| [i as f32, rank as f32, 7.0])
            .collect::<Vec<_>>(),
    )
    .reshape([rows, 3]);
    let parts = pg.all_gather(&mine).unwrap();
    assert_eq!(parts.len(), 2);
    for (q, part) in parts.iter().enumerate() {
        assert_eq!(part.size(), vec![2 + q as i64, 3]);
        let expect: Vec<f32> = (0..2 + q).flat_map(|i| [i as f32, q as f32, 7.0]).collect();
        assert_eq!(values(part), expect);
    }
    // Labels travel as integers.
    let labels = pg
        .all_gather(&Tensor::from_slice(&[10 * rank as i64 + 1]))
        .unwrap();
    let labels: Vec<Vec<i64>> = labels.iter().map(|t| Vec::try_from(t).unwrap()).collect();
    assert_eq!(labels, vec![vec![1], vec![11]]);
    // Larger than anything before (the capacity grows, a second round), then the same shape
    // again (one round), in another dtype: the values survive both paths.
    for _ in 0..2 {
        let rows = 40 + rank as i64;
        let mine = Tensor::arange(rows * 5, (Kind::Double, tch::Device::Cpu)).reshape([rows, 5])
            + 1000.0 * rank as f64;
        let parts = pg.all_gather(&mine).unwrap();
        for (q, part) in parts.iter().enumerate() {
            let want = Tensor::arange((40 + q as i64) * 5, (Kind::Double, tch::Device::Cpu))
                .reshape([40 + q as i64, 5])
                + 1000.0 * q as f64;
            assert_eq!(part.kind(), Kind::Double);
            assert!(part.equal(&want), "rank {q}'s part differs");
        }
    }

    // Broadcast from rank 1.
    let mut ts = vec![Tensor::full([3], r, (Kind::Float, tch::Device::Cpu))];
    pg.broadcast(&mut ts, 1).unwrap();
    assert_eq!(values(&ts[0]), vec![2.0; 3]);

    // Trailing dimensions differ: every rank refuses before data moves, naming both shapes.
    let odd = Tensor::zeros([2, 3 + rank as i64], (Kind::Float, tch::Device::Cpu));
    match pg.all_gather(&odd) {
        Err(Error::Invalid { message, .. }) => {
            assert!(
                message.contains("only the first dimension may differ"),
                "{message}"
            );
        }
        other => panic!("expected Invalid, got {other:?}"),
    }
    // Mixed dtypes travel in one bucket per dtype, each summed exactly.
    let mut mixed = vec![
        Tensor::from_slice(&[r as f32]),
        Tensor::from_slice(&[10 * rank as i64 + 1]),
        Tensor::from_slice(&[r as f32, 2.0 * r as f32]),
    ];
    pg.all_reduce(&mut mixed, ReduceOp::Sum).unwrap();
    assert_eq!(values(&mixed[0]), vec![3.0]);
    assert_eq!(Vec::<i64>::try_from(&mixed[1]).unwrap(), vec![12]);
    assert_eq!(values(&mixed[2]), vec![3.0, 6.0]);
    // Broadcast of several tensors of different sizes and dtypes.
    let mut ts = vec![
        Tensor::full([2, 3], r, (Kind::Float, tch::Device::Cpu)),
        Tensor::from_slice(&[rank as i64; 5]),
        Tensor::full([1], -r, (Kind::Float, tch::Device::Cpu)),
    ];
    pg.broadcast(&mut ts, 0).unwrap();
    assert_eq!(values(&ts[0]), vec![1.0; 6]);
    assert_eq!(Vec::<i64>::try_from(&ts[1]).unwrap(), vec![0; 5]);
    assert_eq!(values(&ts[2]), vec![-1.0]);
    pg.barrier().unwrap();
    println!("rank {rank}: ops ok");
}

/// Rank 1 dies after the first collective; rank 0's next one fails naming it.
fn dies(rank: usize, port: u16) {
    let pg = init(rank, port, Duration::from_secs(20));
    let mut t = vec![Tensor::from_slice(&[1.0f32])];
    pg.all_reduce(&mut t, ReduceOp::Sum).unwrap();
    if rank == 1 {
        std::process::exit(3);
    }
    std::thread::sleep(Duration::from_millis(300));
    let start = Instant::now();
    let err = pg.all_reduce(&mut t, ReduceOp::Sum).unwrap_err();
    println!(
        "rank 0 saw after {:.1} s: {err}",
        start.elapsed().as_secs_f64()
    );
}

/// Rank 1 stays alive but never calls the second collective; rank 0 gives up at its timeout.
fn hangs(rank: usize, port: u16) {
    let pg = init(rank, port, Duration::from_secs(3));
    let mut t = vec![Tensor::from_slice(&[1.0f32])];
    pg.all_reduce(&mut t, ReduceOp::Sum).unwrap();
    if rank == 1 {
        std::thread::sleep(Duration::from_secs(60));
        return;
    }
    let start = Instant::now();
    let err = pg.all_reduce(&mut t, ReduceOp::Sum).unwrap_err();
    println!(
        "rank 0 saw after {:.1} s: {err}",
        start.elapsed().as_secs_f64()
    );
}

/// The ranks meet through a shared file instead of a TCP store.
fn file_store(rank: usize, port: u16) {
    let path = std::env::temp_dir().join(format!("dml-file-store-{port}"));
    let opts = InitOptions::new(Rendezvous::File(path), rank, 2).timeout(Duration::from_secs(30));
    let pg = ProcessGroup::init(&opts).unwrap();
    let mut t = vec![Tensor::from_slice(&[rank as f32 + 1.0, 10.0])];
    pg.all_reduce(&mut t, ReduceOp::Sum).unwrap();
    assert_eq!(values(&t[0]), vec![3.0, 20.0]);
    pg.barrier().unwrap();
    println!("rank {rank}: file ok");
}

#[test]
#[ignore = "started by the other tests as one rank of a two-process world"]
fn worker() {
    let scenario = std::env::var("DML_DIST_SCENARIO").expect("run by the other tests");
    let rank: usize = std::env::var("DML_DIST_RANK").unwrap().parse().unwrap();
    let port: u16 = std::env::var("DML_DIST_PORT").unwrap().parse().unwrap();
    match scenario.as_str() {
        "ops" => ops(rank, port),
        "dies" => dies(rank, port),
        "hangs" => hangs(rank, port),
        "file" => file_store(rank, port),
        other => panic!("unknown scenario {other}"),
    }
}

#[test]
fn two_ranks_reduce_gather_and_broadcast_exact_values() {
    let out = run_pair("ops", Duration::from_secs(60));
    for (r, (ok, text)) in out.iter().enumerate() {
        assert!(ok, "rank {r} failed:\n{text}");
        assert!(text.contains(&format!("rank {r}: ops ok")), "{text}");
    }
}

#[test]
fn a_dead_rank_is_named_by_the_survivor() {
    let out = run_pair("dies", Duration::from_secs(40));
    let (ok, text) = &out[0];
    println!("{text}");
    assert!(ok, "rank 0 failed:\n{text}");
    assert!(
        text.contains("all_reduce (collective #2) failed on rank 0 of 2"),
        "{text}"
    );
    assert!(text.contains("rank 1 stopped"), "{text}");
    assert!(!out[1].0, "rank 1 should have exited with 3");
}

#[test]
fn a_hung_rank_is_named_within_the_timeout() {
    let out = run_pair("hangs", Duration::from_secs(30));
    let (ok, text) = &out[0];
    println!("{text}");
    assert!(ok, "rank 0 failed:\n{text}");
    assert!(
        text.contains("rank 1 (at collective #1) still running but behind"),
        "{text}"
    );
    // The timeout is 3 s; the report comes within it plus the heartbeat check.
    let secs: f64 = text
        .split("saw after ")
        .nth(1)
        .and_then(|s| s.split(' ').next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("{text}"));
    assert!(
        (2.5..8.0).contains(&secs),
        "reported after {secs} s:\n{text}"
    );
}

#[test]
fn two_ranks_meet_through_a_shared_file() {
    let out = run_pair("file", Duration::from_secs(60));
    for (r, (ok, text)) in out.iter().enumerate() {
        assert!(ok, "rank {r} failed:\n{text}");
        assert!(text.contains(&format!("rank {r}: file ok")), "{text}");
    }
}
