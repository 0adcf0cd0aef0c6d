//! The NCCL backend on one GPU, world size 1: every collective on CUDA tensors, with values.
//! Compiled only against the CUDA LibTorch (`cargo xtask libtorch --cuda` sets `dml_nccl`), and
//! ignored by default because it needs a GPU; `scripts/nccl_smoke.sh` runs it:
//!
//! ```text
//! cargo test -p dml-distributed --test nccl -- --ignored --nocapture
//! ```
#![cfg(dml_nccl)]

use std::time::Duration;

use dml_distributed::{Backend, Error, InitOptions, ProcessGroup, ReduceOp, Rendezvous};
use tch::{Device, Kind, Tensor};

fn cpu(t: &Tensor) -> Vec<f32> {
    Vec::<f32>::try_from(&t.to(Device::Cpu).flatten(0, -1)).unwrap()
}

#[test]
#[ignore = "needs a CUDA device: scripts/nccl_smoke.sh"]
fn one_rank_nccl_collectives_on_cuda_tensors() {
    assert!(
        tch::Cuda::is_available(),
        "no CUDA device visible: this test needs a GPU"
    );
    let port = dml_distributed::free_port().unwrap();
    let opts = InitOptions::new(Rendezvous::tcp("127.0.0.1", port), 0, 1)
        .timeout(Duration::from_secs(60))
        .backend(Backend::Nccl);
    let pg = ProcessGroup::init(&opts).unwrap();
    let dev = Device::Cuda(0);
    assert_eq!((pg.backend(), pg.device()), (Backend::Nccl, dev));

    // Several tensors, two dtypes: one bucket per dtype, summed (world 1: unchanged).
    let mut ts = vec![
        Tensor::from_slice(&[1.0f32, -2.0, 0.5]).to(dev),
        Tensor::from_slice(&[4.0f32, 8.0, 16.0, 32.0])
            .reshape([2, 2])
            .to(dev),
        Tensor::from_slice(&[7i64, 9]).to(dev),
    ];
    pg.all_reduce(&mut ts, ReduceOp::Sum).unwrap();
    assert_eq!(cpu(&ts[0]), vec![1.0, -2.0, 0.5]);
    assert_eq!(ts[1].size(), vec![2, 2]);
    assert_eq!(cpu(&ts[1]), vec![4.0, 8.0, 16.0, 32.0]);
    assert_eq!(
        Vec::<i64>::try_from(&ts[2].to(Device::Cpu)).unwrap(),
        vec![7, 9]
    );
    // One contiguous tensor reduced in place, then used on the same stream at once.
    let mut big = vec![Tensor::arange(1 << 20, (Kind::Float, dev))];
    pg.all_reduce(&mut big, ReduceOp::Mean).unwrap();
    let total = (&big[0] * 2.0).sum(Kind::Double).double_value(&[]);
    assert_eq!(total, ((1u64 << 20) * ((1 << 20) - 1)) as f64);
    assert_eq!(big[0].device(), dev);

    // All-gather: a first call, a larger one (the capacity grows), the same again.
    for rows in [2i64, 40, 40] {
        let mine = Tensor::arange(rows * 3, (Kind::Float, dev)).reshape([rows, 3]);
        let parts = pg.all_gather(&mine).unwrap();
        assert_eq!(parts.len(), 1);
        assert_eq!(parts[0].size(), vec![rows, 3]);
        assert_eq!(parts[0].device(), dev);
        assert!(parts[0].equal(&mine), "all_gather changed the values");
    }
    let labels = pg
        .all_gather(&Tensor::from_slice(&[3i64, 1, 4]).to(dev))
        .unwrap();
    assert_eq!(
        Vec::<i64>::try_from(&labels[0].to(Device::Cpu)).unwrap(),
        vec![3, 1, 4]
    );

    // Broadcast from rank 0 of several tensors.
    let mut ts = vec![
        Tensor::full([2, 3], 5.0, (Kind::Float, dev)),
        Tensor::full([1], -1.0, (Kind::Float, dev)),
    ];
    pg.broadcast(&mut ts, 0).unwrap();
    assert_eq!(cpu(&ts[0]), vec![5.0; 6]);
    assert_eq!(cpu(&ts[1]), vec![-1.0]);
    pg.barrier().unwrap();

    // A CPU tensor is refused before any data moves.
    let mut on_cpu = vec![Tensor::from_slice(&[1.0f32])];
    match pg.all_reduce(&mut on_cpu, ReduceOp::Sum) {
        Err(Error::Invalid { message, .. }) => {
            assert!(message.contains("serves Cuda(0)"), "{message}")
        }
        other => panic!("expected Invalid, got {other:?}"),
    }
    println!("nccl smoke: ok");
}
