//! The config schema: shipped configs parse and validate, unknown keys are rejected by name and
//! place, and each validation rule fires.

use dml::config::{Config, ConfigError, ScheduleConfig, SelfSupervisedConfig};

fn root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Every config in configs/ and configs/losses/ parses and validates, and every proxy and
/// classification loss (and SupCon) has a shipped config to train it from.
#[test]
fn every_shipped_config_parses_and_validates() {
    let mut n = 0;
    let mut kinds = std::collections::BTreeSet::new();
    for dir in [root().join("configs"), root().join("configs/losses")] {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "toml") {
                let c =
                    Config::from_file(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                c.validate()
                    .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                kinds.insert(c.loss.kind());
                n += 1;
            }
        }
    }
    assert!(n >= 13, "expected the shipped configs, found {n}");
    for loss in dml::losses::LossConfig::defaults() {
        // The losses of issue #16 (the others train through `dml compare` on the base configs).
        if loss.has_class_vectors() || loss.kind() == "sup_con" {
            assert!(
                kinds.contains(loss.kind()),
                "no shipped config trains {}",
                loss.kind()
            );
        }
    }
}

#[test]
fn embedded_default_is_the_digits_file() {
    let c = Config::digits();
    let from_file = Config::from_file(&root().join("configs/digits.toml")).unwrap();
    assert_eq!(c, from_file);
    assert_eq!(c.loss.kind(), "margin");
    assert_eq!(
        c.miner.as_ref().map(|m| m.kind()),
        Some("distance_weighted")
    );
}

#[test]
fn minimal_config_takes_documented_defaults() {
    let c = Config::from_toml_str("[data]\nkind = \"digits\"\n", "<test>").unwrap();
    c.validate().unwrap();
    assert_eq!(c.batch.p, 8);
    assert_eq!(c.batch.k, 4);
    assert_eq!(c.train.epochs, 10);
    assert_eq!(c.optimizer.lr, 1e-3);
    assert_eq!(c.eval.config.recall_at, vec![1, 2, 4, 8]);
    assert_eq!(c.schedule, ScheduleConfig::Constant);
    assert_eq!(c.run.output_dir(), std::path::Path::new("runs/run"));
}

#[test]
fn unknown_key_is_rejected_with_its_name_and_line() {
    let text = "[data]\nkind = \"digits\"\n\n[train]\nepochs = 3\nepoch = 4\n";
    let err = Config::from_toml_str(text, "typo.toml")
        .unwrap_err()
        .to_string();
    assert!(err.contains("typo.toml"), "{err}");
    assert!(err.contains("epoch"), "{err}");
    assert!(err.contains("line 6"), "{err}");
}

#[test]
fn the_kmeans_seeding_is_read_from_eval_and_a_wrong_one_is_named() {
    use dml::eval::Seeding;
    assert_eq!(base().eval.config.kmeans_seeding, Seeding::KMeansParallel);
    let text = "[data]\nkind = \"digits\"\n[eval]\nkmeans_seeding = \"k-means++\"\n";
    let c = Config::from_toml_str(text, "t.toml").unwrap();
    assert_eq!(c.eval.config.kmeans_seeding, Seeding::KMeansPlusPlus);
    let text = "[data]\nkind = \"digits\"\n[eval]\nkmeans_seeding = \"random\"\n";
    let err = Config::from_toml_str(text, "t.toml")
        .unwrap_err()
        .to_string();
    assert!(err.contains("random") && err.contains("k-means||"), "{err}");
}

#[test]
fn unknown_top_level_table_is_rejected() {
    let text = "[data]\nkind = \"digits\"\n[trian]\nepochs = 3\n";
    let err = Config::from_toml_str(text, "t.toml")
        .unwrap_err()
        .to_string();
    assert!(err.contains("trian"), "{err}");
}

#[test]
fn unknown_key_inside_a_tagged_section_is_rejected() {
    let text =
        "[data]\nkind = \"digits\"\n[schedule]\nkind = \"step\"\nmilestones = [3]\ngama = 0.5\n";
    let err = Config::from_toml_str(text, "t.toml")
        .unwrap_err()
        .to_string();
    assert!(err.contains("gama"), "{err}");
}

fn base() -> Config {
    Config::from_toml_str("[data]\nkind = \"digits\"\n", "<test>").unwrap()
}

#[test]
fn each_rule_has_its_error() {
    let mut c = base();
    c.batch.p = 1;
    assert_eq!(c.validate(), Err(ConfigError::BatchP(1)));
    let mut c = base();
    c.batch.k = 1;
    assert_eq!(c.validate(), Err(ConfigError::BatchK(1)));
    let mut c = base();
    c.train.epochs = 0;
    assert_eq!(c.validate(), Err(ConfigError::Epochs));
    let mut c = base();
    c.optimizer.head_lr = Some(-1.0);
    assert_eq!(
        c.validate(),
        Err(ConfigError::LearningRate {
            key: "head_lr",
            value: -1.0
        })
    );
    let mut c = base();
    c.optimizer.momentum = 1.0;
    assert_eq!(c.validate(), Err(ConfigError::Momentum(1.0)));
    let mut c = base();
    c.eval.config.recall_at = vec![];
    assert_eq!(c.validate(), Err(ConfigError::RecallAtEmpty));
    let mut c = base();
    c.eval.config.recall_at = vec![1, 0];
    assert_eq!(c.validate(), Err(ConfigError::RecallAtZero));
    let mut c = base();
    c.schedule = ScheduleConfig::Cosine {
        min_factor: 0.0,
        warmup_epochs: 10,
    };
    assert_eq!(
        c.validate(),
        Err(ConfigError::Warmup {
            warmup: 10,
            epochs: 10
        })
    );
    let c = Config::from_toml_str(
        "[data]\nkind = \"digits\"\n[model]\nkind = \"mlp\"\nembedding_dim = 16\n\
         [miner]\nkind = \"distance_weighted\"\nembedding_dim = 64\n",
        "<test>",
    )
    .unwrap();
    // The miner's density would be that of another sphere: its own error, naming both lengths.
    let err = c.validate().unwrap_err();
    assert!(
        matches!(&err, ConfigError::Miner(m) if m.contains("(64)") && m.contains("(16)")),
        "{err}"
    );
    // Left out, it is the model's.
    let c = Config::from_toml_str(
        "[data]\nkind = \"digits\"\n[model]\nkind = \"mlp\"\nembedding_dim = 16\n\
         [miner]\nkind = \"distance_weighted\"\n",
        "<test>",
    )
    .unwrap();
    assert_eq!(c.validate(), Ok(()));
}

#[test]
fn the_miner_is_optional_and_refused_by_the_proxy_losses() {
    let parse =
        |tail: &str| Config::from_toml_str(&format!("[data]\nkind = \"digits\"\n{tail}"), "m.toml");
    // Absent and `none` are the same: no miner.
    let absent = parse("").unwrap();
    assert_eq!(absent.miner, None);
    let none = parse("[miner]\nkind = \"none\"\n").unwrap();
    assert_eq!(none, absent);
    none.validate().unwrap();
    // ... and it round-trips through the checkpoint's TOML.
    assert_eq!(
        Config::from_toml_str(&none.to_toml_string(), "rt").unwrap(),
        none
    );
    let err = parse("[miner]\nkind = \"none\"\nmargin = 0.2\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains("margin") && err.contains("none"), "{err}");
    // A miner's own typo is still named.
    let err = parse("[miner]\nkind = \"semi_hard\"\nmargn = 0.2\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains("margn"), "{err}");
    // A miner's parameters are checked by validate, before anything trains.
    let bad = parse("[miner]\nkind = \"semi_hard\"\nmargin = -0.2\n").unwrap();
    assert!(
        matches!(bad.validate(), Err(ConfigError::Miner(m)) if m.contains("margin")),
        "{:?}",
        bad.validate()
    );
    // Every loss with class vectors trains without a miner and refuses one.
    for loss in dml::losses::LossConfig::defaults().filter(|l| l.has_class_vectors()) {
        let mut c = absent.clone();
        c.loss = loss;
        c.validate().unwrap();
        c.miner = Some(dml::sampling::MinerConfig::BatchHard(Default::default()));
        assert_eq!(
            c.validate(),
            Err(ConfigError::MinerNotUsed {
                loss: loss.kind(),
                miner: "batch_hard"
            })
        );
    }
}

#[test]
fn schedules_by_hand() {
    let step = ScheduleConfig::Step {
        milestones: vec![2, 4],
        gamma: 0.5,
    };
    assert_eq!(step.factor(0.0, 6), 1.0);
    assert_eq!(step.factor(1.9, 6), 1.0);
    assert_eq!(step.factor(2.0, 6), 0.5);
    assert_eq!(step.factor(5.5, 6), 0.25);
    let cos = ScheduleConfig::Cosine {
        min_factor: 0.1,
        warmup_epochs: 0,
    };
    assert!((cos.factor(0.0, 10) - 1.0).abs() < 1e-12);
    // Half way: 0.1 + 0.9 · (1 + cos(π/2)) / 2 = 0.55.
    assert!((cos.factor(5.0, 10) - 0.55).abs() < 1e-12);
    assert!((cos.factor(10.0, 10) - 0.1).abs() < 1e-12);
}

#[test]
fn config_round_trips_through_toml() {
    let c = Config::digits();
    let back = Config::from_toml_str(&c.to_toml_string(), "<roundtrip>").unwrap();
    assert_eq!(c, back);
}

#[test]
fn self_supervised_needs_two_views_and_positive_parameters() {
    let c = Config::from_toml_str(
        "[data]\nkind = \"digits\"\n[batch]\nviews = 2\n[self_supervised]\n",
        "<test>",
    )
    .unwrap();
    assert_eq!(c.self_supervised, Some(SelfSupervisedConfig::default()));
    assert_eq!(
        (
            c.self_supervised.unwrap().weight,
            c.self_supervised.unwrap().temperature
        ),
        (1.0, 0.1)
    );
    c.validate().unwrap();
    assert_eq!(base().batch.views, 1);
    assert_eq!(base().self_supervised, None);
    let mut c = base();
    c.batch.views = 0;
    assert_eq!(c.validate(), Err(ConfigError::Views));
    let mut c = base();
    c.self_supervised = Some(SelfSupervisedConfig::default());
    assert_eq!(c.validate(), Err(ConfigError::SelfSupervisedViews(1)));
    assert!(
        c.validate()
            .unwrap_err()
            .to_string()
            .contains("set batch.views = 2")
    );
    c.batch.views = 2;
    for weight in [0.0, -1.0, f64::NAN] {
        c.self_supervised = Some(SelfSupervisedConfig {
            weight,
            temperature: 0.1,
        });
        assert!(matches!(
            c.validate(),
            Err(ConfigError::SelfSupervisedWeight(_))
        ));
    }
    c.self_supervised = Some(SelfSupervisedConfig {
        weight: 1.0,
        temperature: 0.0,
    });
    assert_eq!(
        c.validate(),
        Err(ConfigError::SelfSupervisedTemperature(0.0))
    );
    let typo = Config::from_toml_str(
        "[data]\nkind = \"digits\"\n[self_supervised]\ntemprature = 0.5\n",
        "<test>",
    );
    assert!(typo.unwrap_err().to_string().contains("temprature"));
}

/// Every shipped config's files, in configs/ and its folders.
fn shipped_configs() -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for dir in ["configs", "configs/losses", "configs/xbm"] {
        for entry in std::fs::read_dir(root().join(dir)).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "toml") {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

/// The paths of every table in `table` (nested and inline tables too), outermost first.
fn table_paths(table: &toml::Table, prefix: &[String], out: &mut Vec<Vec<String>>) {
    for (key, value) in table {
        if let toml::Value::Table(t) = value {
            let mut path = prefix.to_vec();
            path.push(key.clone());
            out.push(path.clone());
            table_paths(t, &path, out);
        }
    }
}

/// A misspelt key in any table of any shipped config (`recal_at` in `[eval]`, `skip_unredable`
/// in `[data]`, a typo in `crop = { ... }`) is an error naming the key, never a silently used
/// default.
#[test]
fn a_misspelt_key_in_any_table_of_any_shipped_config_is_named() {
    const TYPO: &str = "zz_misspelt_key";
    let mut checked = 0;
    for path in shipped_configs() {
        let text = std::fs::read_to_string(&path).unwrap();
        let table: toml::Table = toml::from_str(&text).unwrap();
        let mut paths = Vec::new();
        table_paths(&table, &[], &mut paths);
        assert!(!paths.is_empty(), "{}", path.display());
        for tpath in paths {
            let mut changed = table.clone();
            let mut t = &mut changed;
            for key in &tpath {
                t = t.get_mut(key).and_then(toml::Value::as_table_mut).unwrap();
            }
            t.insert(TYPO.to_owned(), toml::Value::Integer(3));
            let doc = toml::to_string(&changed).unwrap();
            let err = match Config::from_toml_str(&doc, "typo.toml") {
                Ok(_) => panic!(
                    "{}: a misspelt key in [{}] was accepted",
                    path.display(),
                    tpath.join(".")
                ),
                Err(e) => e.to_string(),
            };
            assert!(
                err.contains(TYPO),
                "{} [{}]: {err}",
                path.display(),
                tpath.join(".")
            );
            checked += 1;
        }
    }
    assert!(checked >= 60, "only {checked} tables checked");
}
