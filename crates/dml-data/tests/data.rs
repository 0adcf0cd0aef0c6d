//! Tests of dml-data against independent references: scikit-learn's own digits loader (fixture),
//! naive re-implementations, hand-made files in the published layouts.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use dml_data::formats::*;
use dml_data::*;
use ndarray::Array3;
use proptest::prelude::*;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

fn fixture() -> serde_json::Value {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/digits.json"
    ))
    .expect("fixture present");
    serde_json::from_str(&text).expect("fixture is JSON")
}

fn ints(v: &serde_json::Value) -> Vec<u64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap())
        .collect()
}

#[test]
fn digits_match_sklearn() {
    let fx = fixture();
    let d = read_digits().unwrap();
    assert_eq!(d.len(), fx["n_items"].as_u64().unwrap() as usize);
    assert_eq!(d.item_shape(), Some([1, 8, 8]));
    let mut counts = vec![0u64; 10];
    for &l in d.labels() {
        counts[l as usize] += 1;
    }
    assert_eq!(counts, ints(&fx["counts_per_class"]));
    assert_eq!(
        counts,
        vec![178, 182, 177, 183, 181, 182, 181, 179, 174, 180]
    );
    let first: Vec<u64> = d.labels()[..20].iter().map(|&l| l as u64).collect();
    assert_eq!(first, ints(&fx["first_labels"]));
    for (i, key) in [(0usize, "item_0"), (1000, "item_1000")] {
        let px: Vec<u64> = d
            .pixels(i)
            .unwrap()
            .data
            .iter()
            .map(|&v| v as u64)
            .collect();
        assert_eq!(px, ints(&fx[key]));
    }
    let sum: u64 = d.data().iter().map(|&v| v as u64).sum();
    assert_eq!(sum, fx["pixel_sum"].as_u64().unwrap());
}

#[test]
fn digits_split_and_batch() {
    let d: Arc<dyn Dataset> = Arc::new(read_digits().unwrap());
    let (train, test) = class_disjoint_subsets(d.clone()).unwrap();
    assert_eq!(train.len() + test.len(), 1797);
    assert_eq!(train.len(), 178 + 182 + 177 + 183 + 181);
    assert!(train.labels().iter().all(|&c| c < 5));
    assert!(test.labels().iter().all(|&c| c >= 5));
    // Without a transform an item is its values / 16.
    let (batch, labels) = load_batch(&test, &[3, 0, 7], None, 1).unwrap();
    assert_eq!(batch.dim(), (3, 1, 8, 8));
    for (p, &i) in [3usize, 0, 7].iter().enumerate() {
        assert_eq!(labels[p], test.labels()[i]);
        let raw = d.pixels(test.indices()[i]).unwrap();
        for (k, &v) in raw.data.iter().enumerate() {
            assert_eq!(batch[[p, 0, k / 8, k % 8]], v as f32 / 16.0);
        }
    }
}

#[test]
fn load_batch_is_deterministic_across_thread_counts() {
    let d = read_digits().unwrap();
    let t = Transform {
        crop: Crop::RandomResized {
            size: 12,
            scale: (0.3, 1.0),
            ratio: (0.75, 1.333),
        },
        hflip: true,
        normalize: Some(Normalize {
            mean: vec![0.5],
            std: vec![0.25],
        }),
    };
    let idx: Vec<usize> = (0..300).map(|i| (i * 7) % 1797).collect();
    let run = |threads: usize, seed: u64| {
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap()
            .install(|| load_batch(&d, &idx, Some(&t), seed).unwrap())
    };
    let (a, la) = run(1, 9);
    let (b, lb) = run(4, 9);
    assert_eq!(a, b);
    assert_eq!(la, lb);
    let (c, _) = run(4, 10);
    assert_ne!(a, c);
    // Each item equals a single `load` with the documented per-position RNG.
    for p in [0usize, 17, 299] {
        let one = d.load(idx[p], Some(&t), &mut item_rng(9, p)).unwrap();
        assert_eq!(one, a.index_axis(ndarray::Axis(0), p));
    }
}

/// A synthetic RGB image: value depends on (y, x, c) so any misplacement shows.
fn rgb_image(h: usize, w: usize) -> InMemoryDataset {
    let data: Vec<u8> = (0..h * w * 3).map(|k| ((k * 37) % 251) as u8).collect();
    InMemoryDataset::new(data, vec![0], [3, h, w], 255.0).unwrap()
}

fn plain(ds: &InMemoryDataset) -> Array3<f32> {
    ds.load(0, None, &mut ChaCha8Rng::seed_from_u64(0)).unwrap()
}

#[test]
fn identity_geometries_leave_the_image_unchanged() {
    let ds = rgb_image(10, 10);
    let reference = plain(&ds);
    // Naive reference for the conversion: HWC / 255 -> CHW.
    let px = ds.pixels(0).unwrap();
    for c in 0..3 {
        for y in 0..10 {
            for x in 0..10 {
                assert!(
                    (reference[[c, y, x]] - px.data[(y * 10 + x) * 3 + c] as f32 / 255.0).abs()
                        < 1e-6
                );
            }
        }
    }
    let centre = Transform {
        crop: Crop::Center {
            resize: 10,
            size: 10,
        },
        ..Transform::default()
    };
    let full = Transform {
        crop: Crop::RandomResized {
            size: 10,
            scale: (1.0, 1.0),
            ratio: (1.0, 1.0),
        },
        ..Transform::default()
    };
    for t in [centre, full] {
        let out = ds
            .load(0, Some(&t), &mut ChaCha8Rng::seed_from_u64(3))
            .unwrap();
        assert!(
            out.iter()
                .zip(reference.iter())
                .all(|(a, b)| (a - b).abs() < 1e-6),
            "{t:?}"
        );
    }
}

#[test]
fn centre_crop_after_resize_by_hand() {
    // 4 x 6 image, resize shorter side 4 -> 4 (scale 1), centre crop 2: rows 1..3, cols 2..4.
    let data: Vec<u8> = (0..24).map(|v| v as u8 * 10).collect();
    let ds = InMemoryDataset::new(data, vec![0], [1, 4, 6], 255.0).unwrap();
    let t = Transform {
        crop: Crop::Center { resize: 4, size: 2 },
        ..Transform::default()
    };
    let out = ds
        .load(0, Some(&t), &mut ChaCha8Rng::seed_from_u64(0))
        .unwrap();
    let expect = [[8.0, 9.0], [14.0, 15.0]];
    for y in 0..2 {
        for x in 0..2 {
            assert!((out[[0, y, x]] * 255.0 - expect[y][x] * 10.0).abs() < 1e-3);
        }
    }
    // Downscale 2x of a 4x4 by resize 2 + crop 2: each output is the mean of a 2x2 block
    // (bilinear at the block centre).
    let data: Vec<u8> = (0..16).map(|v| v as u8 * 10).collect();
    let ds = InMemoryDataset::new(data, vec![0], [1, 4, 4], 255.0).unwrap();
    let t = Transform {
        crop: Crop::Center { resize: 2, size: 2 },
        ..Transform::default()
    };
    let out = ds
        .load(0, Some(&t), &mut ChaCha8Rng::seed_from_u64(0))
        .unwrap();
    let expect = [[25.0, 45.0], [105.0, 125.0]];
    for y in 0..2 {
        for x in 0..2 {
            assert!(
                (out[[0, y, x]] * 255.0 - expect[y][x]).abs() < 1e-3,
                "{out:?}"
            );
        }
    }
}

#[test]
fn flip_and_normalise() {
    let ds = rgb_image(5, 7);
    let reference = plain(&ds);
    let t = Transform {
        hflip: true,
        normalize: Some(Normalize::imagenet()),
        ..Transform::default()
    };
    let (mut flipped, mut kept) = (0, 0);
    for seed in 0..40 {
        let out = ds
            .load(0, Some(&t), &mut ChaCha8Rng::seed_from_u64(seed))
            .unwrap();
        let mirror = (0..3).all(|c| {
            (0..5).all(|y| {
                (0..7).all(|x| {
                    let v = (reference[[c, y, 6 - x]] - IMAGENET_MEAN[c]) / IMAGENET_STD[c];
                    (out[[c, y, x]] - v).abs() < 1e-5
                })
            })
        });
        let same = (0..3).all(|c| {
            (0..5).all(|y| {
                (0..7).all(|x| {
                    let v = (reference[[c, y, x]] - IMAGENET_MEAN[c]) / IMAGENET_STD[c];
                    (out[[c, y, x]] - v).abs() < 1e-5
                })
            })
        });
        assert!(mirror || same);
        if mirror { flipped += 1 } else { kept += 1 }
    }
    assert!(flipped > 5 && kept > 5, "{flipped} {kept}");
}

#[test]
fn random_resized_crop_stays_in_range_and_varies() {
    let ds = rgb_image(30, 20);
    let t = Transform::train(16);
    let (lo, hi) = plain(&ds)
        .iter()
        .fold((f32::MAX, f32::MIN), |(a, b), &v| (a.min(v), b.max(v)));
    let mut outs = BTreeSet::new();
    for seed in 0..10 {
        let mut t2 = t.clone();
        t2.normalize = None;
        let out = ds
            .load(0, Some(&t2), &mut ChaCha8Rng::seed_from_u64(seed))
            .unwrap();
        assert_eq!(out.dim(), (3, 16, 16));
        assert!(out.iter().all(|&v| v >= lo - 1e-6 && v <= hi + 1e-6));
        outs.insert(out.iter().map(|v| v.to_bits()).collect::<Vec<_>>());
    }
    assert!(outs.len() >= 8);
}

#[test]
fn invalid_transforms_are_errors() {
    let d = read_digits().unwrap();
    let bad_scale = Transform {
        crop: Crop::RandomResized {
            size: 8,
            scale: (0.9, 0.1),
            ratio: (1.0, 1.0),
        },
        ..Transform::default()
    };
    let bad_norm = Transform {
        normalize: Some(Normalize {
            mean: vec![0.0, 0.0, 0.0],
            std: vec![1.0, 1.0, 1.0],
        }),
        ..Transform::default()
    };
    for t in [bad_scale, bad_norm] {
        assert!(matches!(
            load_batch(&d, &[0], Some(&t), 0),
            Err(Error::InvalidTransform { .. })
        ));
    }
    assert!(matches!(
        load_batch(&d, &[0, 5000], None, 0),
        Err(Error::IndexOutOfRange {
            index: 5000,
            len: 1797
        })
    ));
}

fn naive_split(labels: &[u32]) -> (Vec<usize>, Vec<usize>) {
    let mut classes: Vec<u32> = labels.to_vec();
    classes.sort();
    classes.dedup();
    let train_classes = &classes[..classes.len() / 2];
    (0..labels.len()).partition(|&i| train_classes.contains(&labels[i]))
}

proptest! {
    #[test]
    fn split_matches_naive(labels in proptest::collection::vec(0u32..40, 0..200)) {
        let distinct = labels.iter().collect::<BTreeSet<_>>().len();
        match class_disjoint_split(&labels) {
            Ok(got) => prop_assert_eq!(got, naive_split(&labels)),
            Err(Error::TooFewClasses { n_classes }) => {
                prop_assert!(distinct < 2);
                prop_assert_eq!(n_classes, distinct);
            }
            Err(e) => prop_assert!(false, "unexpected {e}"),
        }
    }

    #[test]
    fn shuffle_is_a_seeded_permutation(n in 0usize..300, seed in any::<u64>()) {
        let a = shuffled_indices(n, seed);
        prop_assert_eq!(&a, &shuffled_indices(n, seed));
        let mut s = a.clone();
        s.sort();
        prop_assert_eq!(s, (0..n).collect::<Vec<_>>());
    }
}

// ---------- IDX ----------

fn idx_bytes(dims: &[u32], data: &[u8]) -> Vec<u8> {
    let mut b = vec![0, 0, 0x08, dims.len() as u8];
    for d in dims {
        b.extend_from_slice(&d.to_be_bytes());
    }
    b.extend_from_slice(data);
    b
}

fn write(path: &Path, bytes: &[u8]) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, bytes).unwrap();
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

#[test]
fn idx_round_trip_and_dir() {
    let dir = tempfile::tempdir().unwrap();
    let pixels: Vec<u8> = (0..3 * 4 * 5).map(|v| v as u8).collect();
    write(
        &dir.path().join("train-images-idx3-ubyte"),
        &idx_bytes(&[3, 4, 5], &pixels),
    );
    write(
        &dir.path().join("train-labels-idx1-ubyte"),
        &idx_bytes(&[3], &[7, 1, 9]),
    );
    // The test part gzip-compressed, as distributed.
    write(
        &dir.path().join("t10k-images-idx3-ubyte.gz"),
        &gzip(&idx_bytes(&[2, 4, 5], &pixels[..40])),
    );
    write(
        &dir.path().join("t10k-labels-idx1-ubyte.gz"),
        &gzip(&idx_bytes(&[2], &[0, 2])),
    );
    let ds = read_idx_dir(dir.path()).unwrap();
    assert_eq!(ds.labels(), &[7, 1, 9, 0, 2]);
    assert_eq!(ds.item_shape(), Some([1, 4, 5]));
    assert_eq!(&ds.pixels(1).unwrap().data[..], &pixels[20..40]);
    assert_eq!(&ds.pixels(4).unwrap().data[..], &pixels[20..40]);
    let (b, _) = load_batch(&ds, &[2], None, 0).unwrap();
    assert!((b[[0, 0, 1, 2]] - pixels[40 + 7] as f32 / 255.0).abs() < 1e-6);
}

#[test]
fn idx_errors_name_the_file_and_the_fault() {
    let dir = tempfile::tempdir().unwrap();
    let p = |n: &str| dir.path().join(n);
    let good_images = idx_bytes(&[2, 2, 2], &[1; 8]);
    write(&p("bad_magic"), &[0x12, 0x34, 0x08, 0x03, 0, 0, 0, 0]);
    write(
        &p("bad_type"),
        &idx_bytes(&[2], &[1, 2])[..]
            .iter()
            .enumerate()
            .map(|(i, &b)| if i == 2 { 0x0D } else { b })
            .collect::<Vec<_>>(),
    );
    write(&p("truncated"), &good_images[..good_images.len() - 3]);
    write(&p("short_header"), &[0, 0, 8, 3, 0, 0]);
    write(&p("trailing"), &[good_images.clone(), vec![0, 0]].concat());
    write(&p("images"), &good_images);
    write(&p("labels3"), &idx_bytes(&[3], &[0, 1, 2]));
    write(&p("not_gzip.gz"), &[0x1f, 0x8b, 1, 2, 3]);

    let e = read_idx_images(p("bad_magic")).unwrap_err();
    assert!(
        matches!(
            e,
            Error::BadMagic {
                found: 0x1234_0803,
                ..
            }
        ),
        "{e}"
    );
    assert!(e.to_string().contains("bad_magic"));
    assert!(matches!(
        read_idx_labels(p("bad_type")),
        Err(Error::BadMagic { .. })
    ));
    let e = read_idx_images(p("truncated")).unwrap_err();
    assert!(
        matches!(
            e,
            Error::Truncated {
                expected: 24,
                found: 21,
                ..
            }
        ),
        "{e}"
    );
    assert!(
        e.to_string()
            .starts_with(&p("truncated").display().to_string())
    );
    assert!(matches!(
        read_idx_images(p("short_header")),
        Err(Error::Truncated {
            expected: 16,
            found: 6,
            ..
        })
    ));
    assert!(matches!(
        read_idx_images(p("trailing")),
        Err(Error::TrailingBytes { extra: 2, .. })
    ));
    assert!(matches!(
        read_idx_images(p("labels3")),
        Err(Error::Malformed { .. })
    ));
    assert!(matches!(
        read_idx_images(p("not_gzip.gz")),
        Err(Error::Malformed { .. })
    ));
    assert!(matches!(
        read_idx_images(p("missing")),
        Err(Error::Io { .. })
    ));
    let e = read_idx(p("images"), p("labels3")).unwrap_err();
    assert!(
        matches!(
            e,
            Error::CountMismatch {
                n_images: 2,
                n_labels: 3,
                ..
            }
        ),
        "{e}"
    );
    assert!(e.to_string().contains("images") && e.to_string().contains("labels3"));
    assert!(matches!(
        read_idx_dir(dir.path()),
        Err(Error::NotFound { .. })
    ));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]
    /// The parser never panics and never accepts bytes whose length disagrees with the header.
    #[test]
    fn idx_parser_is_total(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
        if let Ok(arr) = parse_idx(&bytes, Path::new("fuzz")) {
            let n: usize = arr.dims.iter().product();
            prop_assert_eq!(arr.data.len(), n);
            prop_assert_eq!(bytes.len(), 4 + 4 * arr.dims.len() + n);
        }
    }
}

// ---------- image files ----------

fn save_png(path: &Path, w: u32, h: u32, seed: u8) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    image::RgbImage::from_fn(w, h, |x, y| {
        image::Rgb([x as u8 * 9 + seed, y as u8 * 5, seed])
    })
    .save(path)
    .unwrap();
}

fn save_jpg(path: &Path, w: u32, h: u32, seed: u8) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    image::RgbImage::from_fn(w, h, |x, _| image::Rgb([x as u8, seed, 100]))
        .save_with_format(path, image::ImageFormat::Jpeg)
        .unwrap();
}

#[test]
fn image_folder_loads_and_reports_corrupt_files() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    save_png(&root.join("b_cat/1.png"), 6, 4, 1);
    save_jpg(&root.join("b_cat/2.JPG"), 9, 7, 2);
    save_png(&root.join("a_dog/x.png"), 5, 5, 3);
    write(&root.join("a_dog/notes.txt"), b"not an image");
    let (ds, names) = read_image_folder(root).unwrap();
    assert_eq!(names, vec!["a_dog", "b_cat"]);
    assert_eq!(ds.labels(), &[0, 1, 1]);
    // The PNG decodes to exactly the pixels written.
    let px = ds.pixels(1).unwrap();
    assert_eq!((px.height, px.width, px.channels), (4, 6, 3));
    assert_eq!(&px.data[..3], &[1, 0, 1]);
    assert_eq!(&px.data[3 * 5..3 * 6], &[9 * 5 + 1, 0, 1]);
    // Sizes vary, so a batch needs a fixed-size transform.
    let e = load_batch(&ds, &[0, 1], None, 0).unwrap_err();
    assert!(matches!(e, Error::ItemSizeUnknown));
    // The message says why and shows config lines that work: they parse as transforms, and
    // each gives a fixed size.
    let msg = e.to_string();
    assert!(
        msg.contains("not known until each file is decoded"),
        "{msg}"
    );
    let example = msg
        .split_once("for example\n")
        .and_then(|(_, rest)| rest.split_once("\n("))
        .map(|(lines, _)| lines)
        .expect("an example in the message");
    let tables: std::collections::BTreeMap<String, std::collections::BTreeMap<String, Transform>> =
        toml::from_str(example).unwrap_or_else(|e| panic!("{example}: {e}"));
    let tf = &tables["transform"];
    for part in ["train", "test"] {
        assert!(tf[part].fixed_size().is_some(), "{part}: {example}");
        assert!(load_batch(&ds, &[0, 1], Some(&tf[part]), 0).is_ok());
    }
    let (b, l) = load_batch(&ds, &[0, 1, 2], Some(&Transform::eval(8, 6)), 0).unwrap();
    assert_eq!(b.dim(), (3, 3, 6, 6));
    assert_eq!(l, vec![0, 1, 1]);
    let (b, _) = load_batch(&ds, &[2, 2], Some(&Transform::train(5)), 0).unwrap();
    assert_eq!(b.dim(), (2, 3, 5, 5));
    assert!(b.iter().all(|v| v.is_finite()));

    // A truncated PNG and garbage with an image extension: errors naming the file.
    let png = std::fs::read(root.join("b_cat/1.png")).unwrap();
    write(&root.join("c/trunc.png"), &png[..png.len() / 2]);
    write(
        &root.join("c/garbage.jpg"),
        b"\xff\xd8\xffnot really a jpeg",
    );
    let (ds, _) = read_image_folder(root).unwrap();
    for name in ["garbage.jpg", "trunc.png"] {
        let i = ds.paths().iter().position(|p| p.ends_with(name)).unwrap();
        let e = load_batch(&ds, &[0, i], Some(&Transform::eval(4, 4)), 0).unwrap_err();
        assert!(matches!(e, Error::Decode { .. }), "{e}");
        assert!(e.to_string().contains(name), "{e}");
    }
    // Skipping: the unreadable items are left out and reported; every other item is the row
    // load_batch gives at the same position (the random crop draws from the position).
    let garbage = ds
        .paths()
        .iter()
        .position(|p| p.ends_with("garbage.jpg"))
        .unwrap();
    let trunc = ds
        .paths()
        .iter()
        .position(|p| p.ends_with("trunc.png"))
        .unwrap();
    let tf = Transform::train(4);
    let (b, l, skipped) =
        load_batch_skipping(&ds, &[0, garbage, 1, trunc, 2], Some(&tf), 9).unwrap();
    let (full, full_l) = load_batch(&ds, &[0, 0, 1, 1, 2], Some(&tf), 9).unwrap();
    assert_eq!(b.dim().0, 3);
    assert_eq!(l, vec![full_l[0], full_l[2], full_l[4]]);
    for (row, position) in [(0, 0), (1, 2), (2, 4)] {
        assert_eq!(
            b.index_axis(ndarray::Axis(0), row),
            full.index_axis(ndarray::Axis(0), position)
        );
    }
    let mut names: Vec<String> = skipped
        .iter()
        .map(|e| {
            e.unreadable_file()
                .unwrap()
                .file_name()
                .unwrap()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    names.sort();
    assert_eq!(names, ["garbage.jpg", "trunc.png"]);
    // Without unreadable items it is load_batch; other errors still fail.
    let (b, l, skipped) = load_batch_skipping(&ds, &[0, 1, 2], Some(&tf), 9).unwrap();
    assert_eq!((b, l), load_batch(&ds, &[0, 1, 2], Some(&tf), 9).unwrap());
    assert!(skipped.is_empty());
    assert!(matches!(
        load_batch_skipping(&ds, &[0, 99], Some(&tf), 9),
        Err(Error::IndexOutOfRange { index: 99, .. })
    ));
    assert!(matches!(
        image_folder(root.join("nope")),
        Err(Error::Io { .. })
    ));
}

#[test]
fn image_folder_names_an_empty_class_folder() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    save_png(&root.join("a/1.png"), 3, 3, 1);
    save_png(&root.join("c/1.png"), 3, 3, 2);
    write(&root.join("b/readme.txt"), b"no images here");
    let e = read_image_folder(root).unwrap_err();
    assert!(
        matches!(e, Error::EmptyClass { ref folder } if folder.ends_with("b")),
        "{e}"
    );
    assert!(e.to_string().contains("holds no .png"), "{e}");
    assert!(image_folder(root).is_err());
}

fn tiny(root: &Path, rel: &str) -> PathBuf {
    let p = root.join(rel);
    save_png(&p, 4, 3, 7);
    p
}

#[test]
fn cub200_layout() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    // Four classes (ids 1..4), two images each; ids out of order in the label file.
    let mut images = String::new();
    let mut classes = String::new();
    for id in 1..=8u32 {
        let class = id.div_ceil(2);
        let rel = format!("{class:03}.Bird_{class}/img_{id}.jpg");
        save_jpg(&root.join("images").join(&rel), 5, 4, id as u8);
        images.push_str(&format!("{id} {rel}\n"));
    }
    for id in (1..=8u32).rev() {
        classes.push_str(&format!("{id} {}\n", id.div_ceil(2)));
    }
    write(&root.join("images.txt"), images.as_bytes());
    write(&root.join("image_class_labels.txt"), classes.as_bytes());
    let split = cub200(root).unwrap();
    assert_eq!(split.train.labels(), &[0, 0, 1, 1]);
    assert_eq!(split.test.labels(), &[2, 2, 3, 3]);
    // Item 2 is image id 3 of class 2: its pixels are that file's.
    let want = decode_rgb(&root.join("images/002.Bird_2/img_3.jpg")).unwrap();
    assert_eq!(split.train.pixels(2).unwrap().data, want.data);
    let split = DataConfig::Cub200 {
        root: root.to_path_buf(),
        skip_unreadable: false,
    }
    .build()
    .unwrap();
    assert_eq!(split.train.labels(), &[0, 0, 1, 1]);
    assert_eq!(split.test.labels(), &[2, 2, 3, 3]);
    let (b, _) = load_batch(
        split.test.as_ref(),
        &[0, 3],
        Some(&Transform::eval(4, 4)),
        1,
    )
    .unwrap();
    assert_eq!(b.dim(), (2, 3, 4, 4));

    write(&root.join("image_class_labels.txt"), b"1 1\n2 x\n");
    let e = cub200(root).unwrap_err();
    assert!(
        e.to_string().contains("image_class_labels.txt: line 2"),
        "{e}"
    );
    write(&root.join("image_class_labels.txt"), b"1 1\n");
    let e = cub200(root).unwrap_err();
    assert!(e.to_string().contains("image id 2 has no class"), "{e}");
    assert!(matches!(
        cub200(root.join("missing")),
        Err(Error::NotFound { .. })
    ));
    // A listed image that is not on disk is named at index time, with its list and line.
    write(&root.join("image_class_labels.txt"), classes.as_bytes());
    std::fs::remove_file(root.join("images/003.Bird_3/img_6.jpg")).unwrap();
    let e = cub200(root).unwrap_err();
    assert!(
        matches!(e, Error::ListedFileMissing { line: 6, ref path, .. } if path.ends_with("003.Bird_3/img_6.jpg")),
        "{e}"
    );
    assert!(e.to_string().contains("images.txt: line 6 lists"), "{e}");
}

#[test]
fn cars196_layout() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let mut annos = String::new();
    for (i, class) in [3u32, 1, 2, 4, 4, 1].iter().enumerate() {
        let rel = format!("car_ims/{:06}.jpg", i + 1);
        save_jpg(&root.join(&rel), 6, 4, i as u8);
        annos.push_str(&format!("{rel} {class}\n"));
    }
    write(&root.join("cars_annos.txt"), annos.as_bytes());
    let split = DataConfig::Cars196 {
        root: root.to_path_buf(),
        skip_unreadable: false,
    }
    .build()
    .unwrap();
    assert_eq!(split.train.labels(), &[0, 1, 0]);
    assert_eq!(split.test.labels(), &[2, 3, 3]);
    write(&root.join("cars_annos.txt"), b"car_ims/000001.jpg 0\n");
    assert!(matches!(cars196(root), Err(Error::Malformed { .. })));
}

#[test]
fn sop_layout() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let header = "image_id class_id super_class_id path\n";
    let mut train = header.to_owned();
    let mut test = header.to_owned();
    for (i, class) in [1u32, 1, 2, 2].iter().enumerate() {
        let rel = format!("bicycle_final/{i}_0.JPG");
        tiny(root, &rel);
        train.push_str(&format!("{} {class} 1 {rel}\n", i + 1));
    }
    for (i, class) in [3u32, 3, 3].iter().enumerate() {
        let rel = format!("chair_final/{i}_1.JPG");
        tiny(root, &rel);
        test.push_str(&format!("{} {class} 2 {rel}\n", i + 5));
    }
    write(&root.join("Ebay_train.txt"), train.as_bytes());
    write(&root.join("Ebay_test.txt"), test.as_bytes());
    let split = DataConfig::Sop {
        root: root.to_path_buf(),
        skip_unreadable: false,
    }
    .build()
    .unwrap();
    assert_eq!(split.train.labels(), &[0, 0, 1, 1]);
    assert_eq!(split.test.labels(), &[2, 2, 2]);
    let (b, _) = load_batch(
        split.train.as_ref(),
        &[0, 1, 2, 3],
        Some(&Transform::train(3)),
        0,
    )
    .unwrap();
    assert_eq!(b.dim(), (4, 3, 3, 3));
    write(
        &root.join("Ebay_test.txt"),
        format!("{header}1 2 3\n").as_bytes(),
    );
    let e = sop(root).unwrap_err();
    assert!(e.to_string().contains("Ebay_test.txt: line 2"), "{e}");
    write(&root.join("Ebay_test.txt"), test.as_bytes());
    std::fs::remove_file(root.join("chair_final/1_1.JPG")).unwrap();
    let e = sop(root).unwrap_err();
    assert!(e.to_string().contains("Ebay_test.txt: line 3 lists"), "{e}");
}

#[test]
fn inshop_layout() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let rows = [
        (
            "img/WOMEN/Dresses/id_00000002/02_1_front.jpg",
            "id_00000002",
            "train",
        ),
        (
            "img/WOMEN/Dresses/id_00000002/02_2_side.jpg",
            "id_00000002",
            "train",
        ),
        (
            "img/MEN/Denim/id_00000080/01_1_front.jpg",
            "id_00000080",
            "query",
        ),
        (
            "img/MEN/Denim/id_00000080/01_2_side.jpg",
            "id_00000080",
            "gallery",
        ),
        (
            "img/MEN/Denim/id_00000081/01_1_front.jpg",
            "id_00000081",
            "gallery",
        ),
    ];
    let mut text = format!("{}\nimage_name item_id evaluation_status\n", rows.len());
    for (rel, id, status) in rows {
        tiny(root, rel);
        text.push_str(&format!("{rel}   {id}   {status}\n"));
    }
    write(&root.join("Eval/list_eval_partition.txt"), text.as_bytes());
    let parts = inshop(root).unwrap();
    assert_eq!(parts.train.labels(), &[2, 2]);
    let qg = parts.query_gallery.unwrap();
    assert_eq!(qg.query.labels(), &[80]);
    assert_eq!(qg.gallery.labels(), &[80, 81]);
    let split = DataConfig::Inshop {
        root: root.to_path_buf(),
        skip_unreadable: false,
    }
    .build()
    .unwrap();
    assert_eq!(split.test.labels(), &[80, 80, 81]);
    let dml_data::HeldOut::QueryGallery { query, gallery } = split.held_out() else {
        panic!("In-Shop is evaluated as queries in a gallery");
    };
    assert_eq!(query.labels(), &[80]);
    assert_eq!(gallery.labels(), &[80, 81]);
    write(
        &root.join("list_eval_partition.txt"),
        b"1\nheader\na.jpg id_1 valid\n",
    );
    assert!(inshop(root).unwrap_err().to_string().contains("line 3"));
}

#[test]
fn config_from_toml() {
    let c: DataConfig = toml::from_str("kind = \"digits\"").unwrap();
    assert_eq!(c, DataConfig::Digits {});
    let c: DataConfig = toml::from_str("kind = \"fashion_mnist\"").unwrap();
    assert_eq!(
        c,
        DataConfig::FashionMnist {
            path: "data/fashion-mnist".into()
        }
    );
    let c: DataConfig = toml::from_str("kind = \"cub200\"\nroot = \"x\"").unwrap();
    assert_eq!(
        c,
        DataConfig::Cub200 {
            root: "x".into(),
            skip_unreadable: false
        }
    );
    assert!(!c.skip_unreadable());
    let c: DataConfig =
        toml::from_str("kind = \"image_folder\"\nroot = \"x\"\nskip_unreadable = true").unwrap();
    assert!(c.skip_unreadable());
    let e = toml::from_str::<DataConfig>("kind = \"cub200\"\nroot = \"x\"\nrot = 1").unwrap_err();
    assert!(e.to_string().contains("rot"), "{e}");
    assert!(toml::from_str::<DataConfig>("kind = \"imagenet\"").is_err());
    let split = DataConfig::Digits {}.build().unwrap();
    assert_eq!(split.train.len() + split.test.len(), 1797);
    let e = DataConfig::Mnist {
        path: "/nonexistent/mnist".into(),
    }
    .build()
    .unwrap_err();
    assert!(matches!(e, Error::NotFound { .. }), "{e}");
    assert!(e.to_string().contains("cargo xtask data"));
    let t: Transform =
        toml::from_str("hflip = true\n[crop]\nkind = \"center\"\nresize = 256\nsize = 224")
            .unwrap();
    assert_eq!(
        t.crop,
        Crop::Center {
            resize: 256,
            size: 224
        }
    );
}

/// `RandomCrop { size: 3, padding: 1 }` on a 3 × 3 item: every output is the item shifted by
/// one of the nine (dy, dx) in {-1, 0, 1}², zeros shifted in (then normalised like any pixel),
/// and every shift occurs; with `hflip` the shifted item may also come mirrored.
#[test]
fn random_crop_shifts_with_zero_padding() {
    let pixels: Vec<u8> = (1..=9).map(|v| v * 20).collect();
    let ds = InMemoryDataset::new(pixels.clone(), vec![0], [1, 3, 3], 255.0).unwrap();
    let shifted = |dy: i64, dx: i64, flip: bool| -> Vec<f32> {
        let mut out = Vec::new();
        for y in 0..3i64 {
            for x in 0..3i64 {
                let x = if flip { 2 - x } else { x };
                let (sy, sx) = (y + dy, x + dx);
                let raw = if (0..3).contains(&sy) && (0..3).contains(&sx) {
                    pixels[(sy * 3 + sx) as usize] as f32
                } else {
                    0.0
                };
                out.push((raw / 255.0 - 0.5) / 0.25);
            }
        }
        out
    };
    for hflip in [false, true] {
        let t = Transform {
            crop: Crop::RandomCrop {
                size: 3,
                padding: 1,
            },
            hflip,
            normalize: Some(Normalize {
                mean: vec![0.5],
                std: vec![0.25],
            }),
        };
        let mut seen = BTreeSet::new();
        for seed in 0..400 {
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            let got = ds.load(0, Some(&t), &mut rng).unwrap();
            let got: Vec<f32> = got.iter().copied().collect();
            let found = (-1..=1)
                .flat_map(|dy| (-1..=1).map(move |dx| (dy, dx)))
                .flat_map(|(dy, dx)| [(dy, dx, false), (dy, dx, true)])
                .filter(|&(_, _, f)| hflip || !f)
                .find(|&(dy, dx, f)| {
                    shifted(dy, dx, f)
                        .iter()
                        .zip(&got)
                        .all(|(a, b)| (a - b).abs() < 1e-6)
                });
            let shift = found.unwrap_or_else(|| panic!("seed {seed}: not a shift: {got:?}"));
            seen.insert(shift);
        }
        assert_eq!(seen.len(), if hflip { 18 } else { 9 }, "{seen:?}");
    }
    let bad = Transform {
        crop: Crop::RandomCrop {
            size: 0,
            padding: 2,
        },
        ..Transform::default()
    };
    assert!(matches!(
        ds.load(0, Some(&bad), &mut ChaCha8Rng::seed_from_u64(0)),
        Err(Error::InvalidTransform { .. })
    ));
}

/// A rendered set made by hand: four grey 2 x 2 classes, classes 1 and 3 held out, item `i`
/// filled with the value `i`.
fn tiny_rendered() -> RenderedSet {
    let labels = [0u32, 0, 1, 1, 1, 2, 2, 3, 3];
    RenderedSet {
        classes: (0..4)
            .map(|c| RenderedClass {
                key: format!("k{c}"),
                name: format!("class {c}"),
                held_out: c % 2 == 1,
            })
            .collect(),
        items: labels
            .iter()
            .enumerate()
            .map(|(i, &label)| RenderedItem {
                label,
                source: format!("s{}", i % 2),
                origin: format!("file{i}.png"),
            })
            .collect(),
        shape: [1, 2, 2],
        pixels: (0..9u8).flat_map(|i| [i; 4]).collect(),
    }
}

#[test]
fn rendered_set_round_trip_and_split() {
    let dir = tempfile::tempdir().unwrap();
    let set = tiny_rendered();
    set.write(dir.path()).unwrap();
    // The files as the format documents them.
    let classes = std::fs::read_to_string(dir.path().join(RENDERED_CLASSES)).unwrap();
    assert_eq!(
        classes,
        "label\tsplit\tkey\tname\n0\ttrain\tk0\tclass 0\n1\ttest\tk1\tclass 1\n2\ttrain\tk2\tclass 2\n3\ttest\tk3\tclass 3\n"
    );
    let items = std::fs::read_to_string(dir.path().join(RENDERED_ITEMS)).unwrap();
    assert_eq!(items.lines().nth(3), Some("2\t1\ts0\tfile2.png"));
    let idx = std::fs::read(dir.path().join(RENDERED_IMAGES)).unwrap();
    assert_eq!(
        &idx[..20],
        &[0, 0, 8, 4, 0, 0, 0, 9, 0, 0, 0, 2, 0, 0, 0, 2, 0, 0, 0, 1]
    );
    assert_eq!(idx.len(), 20 + 36);
    let back = read_rendered(dir.path(), "").unwrap();
    assert_eq!(back, set);

    // Classes 0 and 2 train (items 0, 1, 5, 6), 1 and 3 are held out (2, 3, 4, 7, 8).
    let split = glyphs(dir.path()).unwrap();
    assert_eq!(split.train.labels(), &[0, 0, 2, 2]);
    assert_eq!(split.test.labels(), &[1, 1, 1, 3, 3]);
    let (batch, _) = load_batch(split.test.as_ref(), &[3], None, 0).unwrap();
    assert_eq!(batch.dim(), (1, 1, 2, 2));
    assert!((batch[[0, 0, 1, 1]] - 7.0 / 255.0).abs() < 1e-7);
    let c: DataConfig = toml::from_str("kind = \"glyphs\"").unwrap();
    assert_eq!(
        c,
        DataConfig::Glyphs {
            path: "data/glyphs".into()
        }
    );
    let c: DataConfig =
        toml::from_str(&format!("kind = \"glyphs\"\npath = {:?}", dir.path())).unwrap();
    assert_eq!(c.build().unwrap().test.len(), 5);
    assert!(!c.skip_unreadable());
    // The emoji kind wants RGB.
    let e = emoji(dir.path()).unwrap_err().to_string();
    assert!(e.contains("3 channel(s)") && e.contains("has 1"), "{e}");
    let c: DataConfig = toml::from_str("kind = \"emoji\"").unwrap();
    assert_eq!(
        c,
        DataConfig::Emoji {
            path: "data/emoji".into()
        }
    );
}

#[test]
fn rendered_set_errors_name_the_fault() {
    let dir = tempfile::tempdir().unwrap();
    let e = emoji(dir.path().join("nothing")).unwrap_err();
    assert!(matches!(e, Error::NotFound { .. }), "{e}");
    assert!(e.to_string().contains("cargo xtask data emoji"), "{e}");

    let set = tiny_rendered();
    set.write(dir.path()).unwrap();
    let rewrite = |name: &str, from: &str, to: &str| {
        let path = dir.path().join(name);
        let text = std::fs::read_to_string(&path).unwrap();
        std::fs::write(&path, text.replacen(from, to, 1)).unwrap();
    };
    rewrite(RENDERED_CLASSES, "1\ttest", "1\tvalidation");
    let e = read_rendered(dir.path(), "").unwrap_err().to_string();
    assert!(
        e.contains("classes.tsv") && e.contains("line 3") && e.contains("validation"),
        "{e}"
    );
    rewrite(RENDERED_CLASSES, "1\tvalidation", "1\ttest");
    rewrite(RENDERED_ITEMS, "8\t3\t", "8\t4\t");
    let e = read_rendered(dir.path(), "").unwrap_err().to_string();
    assert!(
        e.contains("items.tsv") && e.contains("line 10") && e.contains("label 4"),
        "{e}"
    );
    rewrite(RENDERED_ITEMS, "8\t4\t", "8\t3\t");
    // A valid IDX file of three dimensions (9 x 2 x 2) where four are expected.
    let mut three = vec![0u8, 0, 8, 3, 0, 0, 0, 9, 0, 0, 0, 2, 0, 0, 0, 2];
    three.extend([0u8; 36]);
    std::fs::write(dir.path().join(RENDERED_IMAGES), three).unwrap();
    let e = read_rendered(dir.path(), "").unwrap_err().to_string();
    assert!(e.contains("4 dimensions"), "{e}");

    // What `validate` refuses, and `write` with it.
    let mut bad = tiny_rendered();
    bad.items.retain(|i| i.label != 2);
    bad.pixels.truncate(bad.items.len() * 4);
    let e = bad.validate().unwrap_err().to_string();
    assert!(e.contains("class 2") && e.contains("no item"), "{e}");
    let mut bad = tiny_rendered();
    bad.classes.iter_mut().for_each(|c| c.held_out = true);
    assert!(
        bad.write(dir.path())
            .unwrap_err()
            .to_string()
            .contains("both sides")
    );
    let mut bad = tiny_rendered();
    bad.classes[1].key = "k0".into();
    assert!(bad.validate().unwrap_err().to_string().contains("twice"));
    let mut bad = tiny_rendered();
    bad.items[0].origin = "a\tb".into();
    assert!(bad.validate().unwrap_err().to_string().contains("tab"));
    let mut bad = tiny_rendered();
    bad.pixels.pop();
    assert!(bad.into_split().is_err());
}
