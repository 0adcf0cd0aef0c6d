//! `ModelConfig` as users write it: TOML and JSON, defaults, unknown keys.

use dml_models::{BackboneConfig, ConvNetConfig, MlpConfig, ModelConfig};

#[test]
fn toml_with_only_a_kind_gives_the_documented_defaults() -> anyhow::Result<()> {
    let c: ModelConfig = toml::from_str(r#"kind = "conv_net""#)?;
    assert_eq!(
        c,
        ModelConfig::ConvNet(ConvNetConfig {
            channels: vec![32, 64, 128],
            embedding_dim: 64,
            normalize: true,
            batch_norm: true,
            freeze_batch_norm: false,
        })
    );
    let c: ModelConfig = toml::from_str(r#"kind = "mlp""#)?;
    assert_eq!(
        c,
        ModelConfig::Mlp(MlpConfig {
            hidden: vec![256],
            embedding_dim: 128,
            normalize: true,
            dropout: 0.0
        })
    );
    let c: ModelConfig =
        toml::from_str("kind = \"resnet50\"\nembedding_dim = 512\nfreeze_batch_norm = true")?;
    assert_eq!(
        c,
        ModelConfig::Resnet50(BackboneConfig {
            embedding_dim: 512,
            normalize: true,
            freeze_batch_norm: true,
            pretrained: None,
        })
    );
    assert_eq!(
        (
            c.kind(),
            c.embedding_dim(),
            c.normalize(),
            c.freeze_batch_norm()
        ),
        ("resnet50", 512, true, true)
    );
    let c: ModelConfig = toml::from_str(r#"kind = "resnet18""#)?;
    assert_eq!(
        c,
        ModelConfig::Resnet18(BackboneConfig {
            embedding_dim: 128,
            normalize: true,
            freeze_batch_norm: false,
            pretrained: None,
        })
    );
    Ok(())
}

#[test]
fn configs_round_trip_through_json_and_toml() -> anyhow::Result<()> {
    let configs = [
        ModelConfig::Mlp(MlpConfig {
            hidden: vec![64, 32],
            embedding_dim: 16,
            normalize: false,
            dropout: 0.25,
        }),
        ModelConfig::ConvNet(ConvNetConfig {
            channels: vec![8],
            freeze_batch_norm: true,
            ..Default::default()
        }),
        ModelConfig::Resnet18(BackboneConfig::default()),
        ModelConfig::Resnet50(BackboneConfig {
            embedding_dim: 2,
            ..Default::default()
        }),
    ];
    for c in configs {
        let json = serde_json::to_string(&c)?;
        assert!(
            json.contains(&format!("\"kind\":\"{}\"", c.kind())),
            "{json}"
        );
        assert_eq!(serde_json::from_str::<ModelConfig>(&json)?, c);
        assert_eq!(toml::from_str::<ModelConfig>(&toml::to_string(&c)?)?, c);
    }
    Ok(())
}

#[test]
fn unknown_keys_and_kinds_are_rejected_by_name() {
    let e = toml::from_str::<ModelConfig>("kind = \"resnet50\"\nembeding_dim = 64")
        .unwrap_err()
        .to_string();
    assert!(e.contains("embeding_dim"), "{e}");
    let e = toml::from_str::<ModelConfig>("kind = \"conv_net\"\nhidden = [3]")
        .unwrap_err()
        .to_string();
    assert!(e.contains("hidden"), "{e}");
    let e = toml::from_str::<ModelConfig>(r#"kind = "vgg16""#)
        .unwrap_err()
        .to_string();
    assert!(e.contains("vgg16"), "{e}");
    let e = serde_json::from_str::<ModelConfig>(r#"{"embedding_dim": 3}"#)
        .unwrap_err()
        .to_string();
    assert!(e.contains("kind"), "{e}");
}
