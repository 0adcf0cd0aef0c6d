//! The .npy reader on files numpy wrote (scripts/fixtures/dml_eval_reference.py) and on files
//! broken on purpose.

use std::path::{Path, PathBuf};

use dml_eval::{Error, npy};
use serde_json::Value;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/npy")
        .join(name)
}

fn expected() -> (Vec<Vec<f32>>, Vec<u32>) {
    let v: Value = serde_json::from_str(include_str!("fixtures/npy.json")).expect("json");
    let x = v["embeddings"]
        .as_array()
        .expect("rows")
        .iter()
        .map(|r| {
            r.as_array()
                .expect("row")
                .iter()
                .map(|x| x.as_f64().expect("f") as f32)
                .collect()
        })
        .collect();
    let y = v["labels"]
        .as_array()
        .expect("labels")
        .iter()
        .map(|l| l.as_u64().expect("l") as u32)
        .collect();
    (x, y)
}

#[test]
fn reads_embeddings_numpy_wrote() {
    let (want, _) = expected();
    for name in [
        "emb_f32.npy",
        "emb_f64.npy",
        "emb_f32_fortran.npy",
        "emb_f32_big_endian.npy",
    ] {
        let x = npy::read_embeddings(fixture(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(x.dim(), (5, 3), "{name}");
        assert!(x.is_standard_layout(), "{name}");
        for (i, row) in want.iter().enumerate() {
            for (j, &v) in row.iter().enumerate() {
                // The f64 file holds the unrounded values; converting to f32 rounds to nearest,
                // which is exactly how the f32 reference was made.
                assert_eq!(x[[i, j]], v, "{name} [{i}, {j}]");
            }
        }
    }
}

#[test]
fn reads_labels_of_every_integer_dtype() {
    let (_, want) = expected();
    for dt in ["int32", "int64", "uint8", "uint16", "uint64", "int8"] {
        let y = npy::read_labels(fixture(&format!("labels_{dt}.npy")))
            .unwrap_or_else(|e| panic!("{dt}: {e}"));
        assert_eq!(y, want, "{dt}");
    }
}

#[test]
fn refuses_bad_content_with_a_precise_error() {
    let err = npy::read_embeddings(fixture("emb_nan.npy")).expect_err("nan");
    assert!(
        matches!(err, Error::NpyNonFinite { row: 3, col: 1, .. }),
        "{err}"
    );
    assert!(
        err.to_string().contains("emb_nan.npy") && err.to_string().contains("row 3, column 1"),
        "{err}"
    );

    let err = npy::read_embeddings(fixture("emb_3d.npy")).expect_err("3d");
    assert!(
        matches!(
            err,
            Error::NpyNdim {
                ndim: 3,
                expected: 2,
                ..
            }
        ),
        "{err}"
    );
    let err = npy::read_embeddings(fixture("emb_int.npy")).expect_err("int");
    assert!(
        matches!(&err, Error::NpyDtype { dtype, .. } if dtype == "<i4"),
        "{err}"
    );

    let err = npy::read_labels(fixture("labels_negative.npy")).expect_err("negative");
    assert!(
        matches!(
            err,
            Error::NpyLabel {
                row: 2,
                value: -4,
                ..
            }
        ),
        "{err}"
    );
    let err = npy::read_labels(fixture("labels_float.npy")).expect_err("float");
    assert!(
        matches!(&err, Error::NpyDtype { dtype, .. } if dtype == "<f4"),
        "{err}"
    );
    let err = npy::read_labels(fixture("labels_bool.npy")).expect_err("bool");
    assert!(
        matches!(&err, Error::NpyDtype { dtype, .. } if dtype == "|b1"),
        "{err}"
    );
    let err = npy::read_labels(fixture("labels_2d.npy")).expect_err("2d");
    assert!(
        matches!(
            err,
            Error::NpyNdim {
                ndim: 2,
                expected: 1,
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn length_check_names_both_files() {
    let (x, y) = (
        npy::read_embeddings(fixture("emb_f32.npy")).expect("x"),
        npy::read_labels(fixture("labels_short.npy")).expect("y"),
    );
    let err = npy::check_lengths(fixture("emb_f32.npy"), &x, fixture("labels_short.npy"), &y)
        .expect_err("mismatch");
    let msg = err.to_string();
    assert!(matches!(
        err,
        Error::FileLengthMismatch {
            n_rows: 5,
            n_labels: 4,
            ..
        }
    ));
    assert!(
        msg.contains("emb_f32.npy") && msg.contains("labels_short.npy"),
        "{msg}"
    );
    let err = npy::read_embeddings_and_labels(fixture("emb_f32.npy"), fixture("labels_short.npy"))
        .expect_err("mismatch");
    assert!(matches!(err, Error::FileLengthMismatch { .. }));
    assert!(
        npy::read_embeddings_and_labels(fixture("emb_f32.npy"), fixture("labels_int64.npy"))
            .is_ok()
    );
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, bytes).expect("write");
    p
}

fn format_reason(err: Error) -> String {
    match err {
        Error::NpyFormat { reason, .. } => reason,
        other => panic!("expected a format error, got {other}"),
    }
}

#[test]
fn refuses_corrupt_files() {
    let dir = tempfile::tempdir().expect("tempdir");
    let good = std::fs::read(fixture("emb_f32.npy")).expect("read");

    let p = write(dir.path(), "truncated.npy", &good[..good.len() - 5]);
    let reason = format_reason(npy::read_embeddings(&p).expect_err("truncated"));
    assert!(reason.contains("truncated"), "{reason}");

    let mut extra = good.clone();
    extra.extend_from_slice(&[0; 4]);
    let p = write(dir.path(), "extra.npy", &extra);
    assert!(format_reason(npy::read_embeddings(&p).expect_err("extra")).contains("follow"));

    let p = write(
        dir.path(),
        "magic.npy",
        b"PK\x03\x04 this is a zip, not an npy file",
    );
    assert!(format_reason(npy::read_embeddings(&p).expect_err("magic")).contains("magic"));

    let p = write(dir.path(), "empty.npy", b"");
    assert!(format_reason(npy::read_labels(&p).expect_err("empty")).contains("magic"));

    let p = write(dir.path(), "header_cut.npy", &good[..30]);
    assert!(format_reason(npy::read_embeddings(&p).expect_err("cut")).contains("header"));

    // A header that is not a dict, and one without a shape.
    let mut bad = good[..10].to_vec();
    let text = b"garbage                                                   \n";
    bad[8..10].copy_from_slice(&(text.len() as u16).to_le_bytes());
    bad.extend_from_slice(text);
    let p = write(dir.path(), "garbage.npy", &bad);
    assert!(format_reason(npy::read_embeddings(&p).expect_err("garbage")).contains("dictionary"));
    let mut bad = good[..10].to_vec();
    let text = b"{'descr': '<f4', 'fortran_order': False, }             \n";
    bad[8..10].copy_from_slice(&(text.len() as u16).to_le_bytes());
    bad.extend_from_slice(text);
    let p = write(dir.path(), "noshape.npy", &bad);
    assert!(format_reason(npy::read_embeddings(&p).expect_err("noshape")).contains("shape"));

    let missing = dir.path().join("missing.npy");
    let err = npy::read_labels(&missing).expect_err("missing");
    assert!(
        matches!(err, Error::Io { .. }) && err.to_string().contains("missing.npy"),
        "{err}"
    );
}
