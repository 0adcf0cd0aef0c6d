//! Link checks of the LibTorch install, not tests of dml's code: that the library loads, and that
//! tch's own forward, backward and `nn::Sgd` step run (dml's optimisers are tested in the facade
//! crate, `crates/dml/src/optim.rs`). A broken install fails here first, with a plain message.

use tch::nn::{self, Module, OptimizerConfig};
use tch::{Device, Kind, Tensor};

#[test]
fn libtorch_links_and_tchs_sgd_lowers_a_loss() -> anyhow::Result<()> {
    tch::manual_seed(0);
    let vs = nn::VarStore::new(Device::Cpu);
    let root = vs.root();
    let net = nn::seq()
        .add(nn::linear(&root / "fc1", 4, 16, Default::default()))
        .add_fn(|x| x.relu())
        .add(nn::linear(&root / "fc2", 16, 1, Default::default()));
    let x = Tensor::randn([32, 4], (Kind::Float, Device::Cpu));
    // A target the network can fit: the sum of the inputs.
    let y = x.sum_dim_intlist([1i64].as_slice(), true, Kind::Float);
    let mut opt = nn::Sgd::default().build(&vs, 0.05)?;

    let loss_before = net.forward(&x).mse_loss(&y, tch::Reduction::Mean);
    let before = loss_before.double_value(&[]);
    opt.backward_step(&loss_before);
    let after = net
        .forward(&x)
        .mse_loss(&y, tch::Reduction::Mean)
        .double_value(&[]);

    assert!(before.is_finite() && after.is_finite());
    assert!(after < before, "loss did not decrease: {before} -> {after}");
    Ok(())
}

#[test]
fn cuda_query_does_not_crash() {
    // On a CPU-only machine (and with the slim CPU LibTorch) CUDA is reported absent; with the CUDA
    // stack on a GPU machine it is present. Either way the query must answer, not crash.
    let available = tch::Cuda::is_available();
    assert_eq!(available, tch::Cuda::device_count() > 0);
    let choice = dml_models::DeviceChoice::Cuda.resolve();
    assert_eq!(choice.is_ok(), available);
    if !available {
        let msg = choice.unwrap_err().to_string();
        assert!(msg.contains("cargo xtask libtorch --cuda"), "{msg}");
    }
}
