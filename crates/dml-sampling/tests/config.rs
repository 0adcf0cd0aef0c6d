//! `MinerConfig` and the miners' configs: serde round trips, defaults, unknown keys, validation
//! in `init`.

use dml_kernels::Metric;
use dml_sampling::{
    DistanceWeightedMinerConfig, Error, Miner, MinerConfig, MultiSimilarityMinerConfig,
    PairMarginMinerConfig, SemiHardMinerConfig, SemiHardSelect, TripletMarginMinerConfig,
    UniformMinerConfig,
};
use ndarray::Array2;
use rand::SeedableRng;

#[test]
fn toml_with_defaults_and_parameters() {
    let c: MinerConfig =
        toml::from_str("kind = \"semi_hard\"\nmargin = 0.3\nselect = \"all\"").unwrap();
    assert_eq!(
        c,
        MinerConfig::SemiHard(SemiHardMinerConfig {
            margin: 0.3,
            select: SemiHardSelect::All,
            ..SemiHardMinerConfig::default()
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
        "triplet_margin",
        "pair_margin",
    ] {
        let c: MinerConfig = toml::from_str(&format!("kind = \"{kind}\"")).unwrap();
        assert_eq!(c.kind(), kind);
        c.build(dml_sampling::MinerContext { embedding_dim: 3 })
            .unwrap();
        // The tag serde writes is the kind, and the kind's defaults are what `defaults()` lists.
        let json: serde_json::Value = serde_json::to_value(&c).unwrap();
        assert_eq!(json["kind"], kind);
        assert!(MinerConfig::defaults().any(|d| d == c), "{kind}");
        let back: MinerConfig = serde_json::from_str(&serde_json::to_string(&c).unwrap()).unwrap();
        assert_eq!(back, c);
    }
    assert_eq!(MinerConfig::defaults().count(), 11);
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
            .build(dml_sampling::MinerContext { embedding_dim: 3 })
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
        Error::EmbeddingDimMismatch {
            config: 1,
            embeddings: 3
        }
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

/// The miner that `c`'s own config builds with `init`, boxed as `MinerConfig::build` boxes it,
/// and that config as the miner's `config()` gives it back.
fn init_directly(c: &MinerConfig) -> (Box<dyn Miner>, MinerConfig) {
    macro_rules! init {
        ($variant:ident, $cfg:expr) => {{
            let m = $cfg.init().unwrap();
            let back = MinerConfig::$variant(*m.config());
            (Box::new(m) as Box<dyn Miner>, back)
        }};
    }
    match c {
        MinerConfig::All(c) => init!(All, c),
        MinerConfig::Uniform(c) => init!(Uniform, c),
        MinerConfig::HardNegative(c) => init!(HardNegative, c),
        MinerConfig::SemiHard(c) => init!(SemiHard, c),
        MinerConfig::BatchHard(c) => init!(BatchHard, c),
        MinerConfig::NPairs(c) => init!(NPairs, c),
        MinerConfig::LiftedStructured(c) => init!(LiftedStructured, c),
        MinerConfig::DistanceWeighted(c) => init!(DistanceWeighted, c),
        MinerConfig::MultiSimilarity(c) => init!(MultiSimilarity, c),
        MinerConfig::TripletMargin(c) => init!(TripletMargin, c),
        MinerConfig::PairMargin(c) => init!(PairMargin, c),
    }
}

/// `init` refuses an invalid config with the named error (the check `MinerConfig::build` relies
/// on, now made once), and a valid config's miner mines exactly what the same config's
/// `MinerConfig::build` mines, from the same seed.
#[test]
fn init_validates_once_and_matches_build() {
    assert!(matches!(
        SemiHardMinerConfig {
            margin: 0.0,
            ..SemiHardMinerConfig::default()
        }
        .init(),
        Err(Error::InvalidMargin { margin }) if margin == 0.0
    ));
    assert!(matches!(
        SemiHardMinerConfig {
            margin: f32::NAN,
            ..SemiHardMinerConfig::default()
        }
        .init(),
        Err(Error::InvalidMargin { margin }) if margin.is_nan()
    ));
    assert!(matches!(
        MultiSimilarityMinerConfig {
            epsilon: f32::INFINITY
        }
        .init(),
        Err(Error::InvalidEpsilon { epsilon }) if epsilon == f32::INFINITY
    ));
    assert!(matches!(
        UniformMinerConfig {
            negatives_per_positive: 0
        }
        .init(),
        Err(Error::ZeroCount {
            name: "negatives_per_positive"
        })
    ));
    assert!(matches!(
        TripletMarginMinerConfig {
            margin: f32::NAN,
            ..TripletMarginMinerConfig::default()
        }
        .init(),
        Err(Error::NonFiniteParameter { name: "margin", value }) if value.is_nan()
    ));
    assert!(matches!(
        PairMarginMinerConfig {
            neg_margin: f32::INFINITY,
            ..PairMarginMinerConfig::default()
        }
        .init(),
        Err(Error::NonFiniteParameter {
            name: "neg_margin",
            ..
        })
    ));
    // Any finite margin is a valid band, as in pml (a negative one keeps harder triplets only).
    TripletMarginMinerConfig {
        margin: -0.5,
        ..TripletMarginMinerConfig::default()
    }
    .init()
    .unwrap();
    // Without a length of its own, `init` has none to build for; `init_for` gives one.
    assert!(matches!(
        DistanceWeightedMinerConfig::default().init(),
        Err(Error::InvalidEmbeddingDim { dim: 0 })
    ));
    assert!(matches!(
        DistanceWeightedMinerConfig::default().init_for(1),
        Err(Error::InvalidEmbeddingDim { dim: 1 })
    ));
    let dw = DistanceWeightedMinerConfig {
        embedding_dim: Some(16),
        ..DistanceWeightedMinerConfig::default()
    };
    assert!(matches!(
        DistanceWeightedMinerConfig {
            embedding_dim: Some(0),
            ..dw
        }
        .init(),
        Err(Error::InvalidEmbeddingDim { dim: 0 })
    ));
    assert!(matches!(
        DistanceWeightedMinerConfig {
            cutoff: 1.4,
            ..dw
        }
        .init(),
        Err(Error::InvalidCutoffs { cutoff, nonzero_loss_cutoff })
            if cutoff == 1.4 && nonzero_loss_cutoff == 1.4
    ));
    assert!(matches!(
        DistanceWeightedMinerConfig { cutoff: -0.1, ..dw }.init(),
        Err(Error::InvalidCutoffs { .. })
    ));
    assert!(matches!(
        DistanceWeightedMinerConfig {
            max_weight: Some(f64::NAN),
            ..dw
        }
        .init(),
        Err(Error::InvalidMaxWeight { max_weight }) if max_weight.is_nan()
    ));

    // 24 unit vectors in 3-d, 6 classes of 4; Euclidean distances between them.
    let labels: Vec<u32> = (0..24).map(|i| i / 4).collect();
    let x: Vec<[f32; 3]> = (0..24)
        .map(|i| {
            let t = i as f32;
            let v = [(t * 0.7).sin(), (t * 0.3).cos(), (t * 1.3).sin() * 0.5];
            let n = v.iter().map(|a| a * a).sum::<f32>().sqrt();
            v.map(|a| a / n)
        })
        .collect();
    let d = Array2::from_shape_fn((24, 24), |(i, j)| {
        x[i].iter()
            .zip(&x[j])
            .map(|(a, b)| (a - b) * (a - b))
            .sum::<f32>()
            .sqrt()
    });
    for src in [
        "kind = \"all\"\noutput = \"pairs\"",
        "kind = \"uniform\"\nnegatives_per_positive = 3",
        "kind = \"hard_negative\"\nselect = \"all_hard\"",
        "kind = \"semi_hard\"\nmargin = 0.5",
        "kind = \"semi_hard\"\nmargin = 0.3\nfallback = \"hardest\"",
        "kind = \"batch_hard\"",
        "kind = \"n_pairs\"\nselect = \"random\"",
        "kind = \"lifted_structured\"",
        "kind = \"distance_weighted\"\nembedding_dim = 3",
        "kind = \"distance_weighted\"\nembedding_dim = 3\nmax_weight = 2.0",
        "kind = \"multi_similarity\"\nepsilon = 0.2",
    ] {
        let c: MinerConfig = toml::from_str(src).unwrap();
        let built = c
            .build(dml_sampling::MinerContext { embedding_dim: 3 })
            .unwrap();
        let (direct, back) = init_directly(&c);
        assert_eq!(back, c, "{src}: config() is the config init was given");
        // Twice from the same seed: the second call shows that mining leaves nothing behind.
        for seed in [5u64, 5, 6] {
            let mut r1 = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
            let mut r2 = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
            let a = direct
                .mine(d.view(), Metric::Euclidean, &labels, &mut r1)
                .unwrap();
            let b = built
                .mine(d.view(), Metric::Euclidean, &labels, &mut r2)
                .unwrap();
            assert!(!a.is_empty(), "{src}: nothing mined");
            assert_eq!(a, b, "{src}, seed {seed}");
        }
    }
}
