//! `MinerConfig`: serde round trips, defaults, unknown keys, validation.

use dml_sampling::{Error, MinerConfig, SemiHardMiner, SemiHardSelect};

#[test]
fn toml_with_defaults_and_parameters() {
    let c: MinerConfig =
        toml::from_str("kind = \"semi_hard\"\nmargin = 0.3\nselect = \"all\"").unwrap();
    assert_eq!(
        c,
        MinerConfig::SemiHard(SemiHardMiner {
            margin: 0.3,
            select: SemiHardSelect::All,
            ..SemiHardMiner::default()
        })
    );
    for kind in [
        "all",
        "uniform",
        "hard_negative",
        "semi_hard",
        "batch_hard",
        "n_pairs",
        "lifted_structured",
        "distance_weighted",
        "multi_similarity",
    ] {
        let c: MinerConfig = toml::from_str(&format!("kind = \"{kind}\"")).unwrap();
        assert_eq!(c.kind(), kind);
        let m = c.build().unwrap();
        assert_eq!(m.name(), kind);
        let back: MinerConfig = serde_json::from_str(&serde_json::to_string(&c).unwrap()).unwrap();
        assert_eq!(back, c);
    }
}

#[test]
fn unknown_keys_are_rejected_with_their_name() {
    for src in [
        "kind = \"semi_hard\"\nmargn = 0.3",
        "kind = \"batch_hard\"\nmargin = 0.3",
        "kind = \"multi_similarity\"\nepsilon = 0.1\nfoo = 1",
    ] {
        let err = toml::from_str::<MinerConfig>(src).unwrap_err().to_string();
        assert!(err.contains("unknown field"), "{src}: {err}");
    }
    let err = toml::from_str::<MinerConfig>("kind = \"nope\"")
        .unwrap_err()
        .to_string();
    assert!(err.contains("nope"), "{err}");
}

#[test]
fn build_validates() {
    let bad = |s: &str| {
        toml::from_str::<MinerConfig>(s)
            .unwrap()
            .build()
            .unwrap_err()
    };
    assert!(
        matches!(bad("kind = \"semi_hard\"\nmargin = -1.0"), Error::InvalidMargin { margin } if margin == -1.0)
    );
    assert!(matches!(
        bad("kind = \"multi_similarity\"\nepsilon = -0.5"),
        Error::InvalidEpsilon { .. }
    ));
    assert!(matches!(
        bad("kind = \"uniform\"\nnegatives_per_positive = 0"),
        Error::ZeroCount {
            name: "negatives_per_positive"
        }
    ));
    assert!(matches!(
        bad("kind = \"distance_weighted\"\nembedding_dim = 1"),
        Error::InvalidEmbeddingDim { dim: 1 }
    ));
    assert!(matches!(
        bad("kind = \"distance_weighted\"\ncutoff = 1.5"),
        Error::InvalidCutoffs { .. }
    ));
    assert!(matches!(
        bad("kind = \"distance_weighted\"\nmax_weight = 0.0"),
        Error::InvalidMaxWeight { .. }
    ));
}
