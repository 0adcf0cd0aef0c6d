//! TorchScript backbones too large to commit, against PyTorch and pytorch-metric-learning:
//! torchvision's ResNet-18 and a ViT-B/16 cut to two layers, traced with random weights by
//! `scripts/fixtures/dml-models_torchscript.py --full --out DIR`, checked exactly as the test
//! `small_torchscript_modules_match_pytorch_and_pml` checks the committed small ones (features,
//! one multi-similarity step's embeddings, loss and every gradient, the module's statistics
//! after the step, and a copy of the module rebuilt from a checkpoint's bytes).
//!
//! Run: `cargo run --release -p dml --example torchscript_parity -- DIR`

use std::path::PathBuf;

#[path = "../tests/parity/mod.rs"]
mod parity;

fn main() {
    let dir = PathBuf::from(
        std::env::args()
            .nth(1)
            .unwrap_or_else(|| "torchscript-full".to_owned()),
    );
    for name in ["resnet18", "vit_b_16_2_layers"] {
        let text = std::fs::read_to_string(dir.join(format!("{name}.json"))).unwrap_or_else(|e| {
            panic!(
                "{}: {e} (run the fixture script with --full)",
                dir.display()
            )
        });
        let fixture: serde_json::Value = serde_json::from_str(&text).expect("fixture JSON");
        let worst = parity::check(&dir.join(format!("{name}.pt")), &fixture);
        println!(
            "{name}: equal to PyTorch + pml; largest difference {worst:.2e} of a tensor's scale"
        );
    }
}
