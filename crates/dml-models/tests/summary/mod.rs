//! Tensors compared with a fixture's summary of PyTorch's values (sum, sum of squares, a signed
//! sum over a fixed ±1 pattern, largest |x|, the first and last two values), as the fixture
//! scripts `scripts/fixtures/dml-models_pretrained.py` and `dml-models_torchscript.py` write
//! them. Shared with the facade's TorchScript tests.

use serde_json::Value;
use tch::{Kind, Tensor};

/// `+1` where `(i · 2654435761) mod 2³²` is below 2³¹, else `-1`: the pattern the fixture's
/// signed sums use.
pub fn signs(n: usize) -> Vec<f64> {
    (0..n as u64)
        .map(|i| {
            if (i * 2_654_435_761) % (1 << 32) < (1 << 31) {
                1.0
            } else {
                -1.0
            }
        })
        .collect()
}

fn values(t: &Tensor) -> Vec<f64> {
    let flat = t.detach().to_kind(Kind::Double).flatten(0, -1).contiguous();
    Vec::<f64>::try_from(&flat).expect("a CPU tensor")
}

/// Compares `t` with the fixture's summary, each figure to `tol` of the tensor's scale (its
/// largest |x|, at least 1e-3; sums are allowed √n roundings more); returns the largest
/// difference relative to that scale.
pub fn compare_within(what: &str, t: &Tensor, expected: &Value, tol: f64) -> f64 {
    let shape: Vec<i64> = expected["shape"]
        .as_array()
        .expect("shape")
        .iter()
        .map(|v| v.as_i64().expect("dimension"))
        .collect();
    assert_eq!(t.size(), shape, "{what}: shape");
    let v = values(t);
    let n = v.len();
    let s = signs(n);
    let absmax = v.iter().fold(0.0f64, |m, x| m.max(x.abs()));
    let got = [
        ("sum", v.iter().sum::<f64>()),
        ("sum_sq", v.iter().map(|x| x * x).sum::<f64>()),
        ("signed", v.iter().zip(&s).map(|(x, s)| x * s).sum::<f64>()),
        ("absmax", absmax),
    ];
    let scale = expected["absmax"].as_f64().expect("absmax").max(1e-3);
    let mut worst = 0.0f64;
    for (key, value) in got {
        let want = expected[key].as_f64().expect("summary value");
        // Sums add up n rounding errors: allow their size, √n of them, on top of the tolerance.
        let allowed = match key {
            "sum_sq" => 2.0 * scale * (n as f64).sqrt(),
            "absmax" => 1.0,
            _ => (n as f64).sqrt(),
        };
        let rel = (value - want).abs() / (scale * allowed);
        worst = worst.max(rel);
        assert!(
            rel <= tol,
            "{what}: {key} = {value}, PyTorch {want} (difference {:.2e} of the scale)",
            rel
        );
    }
    for (key, idx) in [("first", [0, 1]), ("last", [n - 2, n - 1])] {
        for (j, &i) in idx.iter().enumerate() {
            let want = expected[key][j].as_f64().expect("value");
            let rel = (v[i] - want).abs() / scale;
            worst = worst.max(rel);
            assert!(rel <= tol, "{what}: value {i} = {}, PyTorch {want}", v[i]);
        }
    }
    worst
}
