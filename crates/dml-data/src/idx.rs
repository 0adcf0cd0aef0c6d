//! MNIST-format IDX files (MNIST, Fashion-MNIST), plain or gzip-compressed.
//!
//! An IDX file is a big-endian header — two zero bytes, a type code (`0x08` for `u8`), the number
//! of dimensions, one `u32` per dimension — followed by the values. The parser checks every one of
//! these against the file's size before it allocates anything, so a truncated or corrupt download
//! is reported as such, with the file's name, and never read past its end.

use std::io::Read;
use std::path::{Path, PathBuf};

use ndarray::Array3;

use crate::memory::InMemoryDataset;
use crate::{Error, Result};

/// The standard file names of the MNIST and Fashion-MNIST distributions.
pub const IDX_FILES: [(&str, &str); 2] = [
    ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
];

/// A parsed IDX file of `u8` values.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdxArray {
    /// The dimensions from the header.
    pub dims: Vec<usize>,
    /// The values, row-major.
    pub data: Vec<u8>,
}

/// Parses the bytes of an IDX file of `u8` values; `path` only names the file in errors.
/// Gzip-compressed content (magic `1f 8b`) is decompressed first.
pub fn parse_idx(bytes: &[u8], path: &Path) -> Result<IdxArray> {
    if bytes.starts_with(&[0x1f, 0x8b]) {
        let mut raw = Vec::new();
        flate2::read::GzDecoder::new(bytes)
            .read_to_end(&mut raw)
            .map_err(|e| Error::malformed(path, format!("corrupt gzip stream: {e}")))?;
        return parse_idx(&raw, path);
    }
    let truncated = |expected: u64| Error::Truncated {
        path: path.to_path_buf(),
        expected,
        found: bytes.len() as u64,
    };
    let header: [u8; 4] = bytes
        .get(..4)
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| truncated(4))?;
    let magic = u32::from_be_bytes(header);
    if header[0] != 0 || header[1] != 0 {
        return Err(Error::BadMagic {
            path: path.to_path_buf(),
            found: magic,
            expected: "an IDX file starts with two zero bytes",
        });
    }
    if header[2] != 0x08 {
        return Err(Error::BadMagic {
            path: path.to_path_buf(),
            found: magic,
            expected: "only IDX type 0x08 (unsigned byte) is supported",
        });
    }
    let n_dims = header[3] as usize;
    if n_dims == 0 {
        return Err(Error::BadMagic {
            path: path.to_path_buf(),
            found: magic,
            expected: "an IDX file has at least one dimension",
        });
    }
    let header_len = 4 + 4 * n_dims;
    let dims_bytes = bytes
        .get(4..header_len)
        .ok_or_else(|| truncated(header_len as u64))?;
    let dims: Vec<usize> = dims_bytes
        .chunks_exact(4)
        .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]) as usize)
        .collect();
    let n_values = dims
        .iter()
        .try_fold(1u64, |acc, &d| acc.checked_mul(d as u64))
        .ok_or_else(|| Error::malformed(path, format!("dimensions {dims:?} overflow")))?;
    let expected = header_len as u64 + n_values;
    let found = bytes.len() as u64;
    if found < expected {
        return Err(truncated(expected));
    }
    if found > expected {
        return Err(Error::TrailingBytes {
            path: path.to_path_buf(),
            extra: found - expected,
        });
    }
    Ok(IdxArray {
        dims,
        data: bytes[header_len..].to_vec(),
    })
}

fn read_file(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| Error::io(path, e))
}

/// Reads an IDX file of images (three dimensions: N × H × W).
pub fn read_idx_images(path: impl AsRef<Path>) -> Result<Array3<u8>> {
    let path = path.as_ref();
    let arr = parse_idx(&read_file(path)?, path)?;
    match arr.dims[..] {
        [n, h, w] => Array3::from_shape_vec((n, h, w), arr.data)
            .map_err(|e| Error::malformed(path, e.to_string())),
        _ => Err(Error::malformed(
            path,
            format!(
                "expected 3 dimensions (N, H, W) for images, found {:?}",
                arr.dims
            ),
        )),
    }
}

/// Reads an IDX file of labels (one dimension).
pub fn read_idx_labels(path: impl AsRef<Path>) -> Result<Vec<u8>> {
    let path = path.as_ref();
    let arr = parse_idx(&read_file(path)?, path)?;
    if arr.dims.len() != 1 {
        return Err(Error::malformed(
            path,
            format!("expected 1 dimension for labels, found {:?}", arr.dims),
        ));
    }
    Ok(arr.data)
}

/// Loads a pair of IDX files (images N × H × W, labels N) as a grey data set.
///
/// # Errors
/// The file's name and what is wrong: unreadable, bad magic, truncated, trailing bytes,
/// wrong number of dimensions, or [`Error::CountMismatch`] between the two files.
pub fn read_idx(images: impl AsRef<Path>, labels: impl AsRef<Path>) -> Result<InMemoryDataset> {
    let (images, labels) = (images.as_ref(), labels.as_ref());
    let x = read_idx_images(images)?;
    let y = read_idx_labels(labels)?;
    let (n, h, w) = x.dim();
    if n != y.len() {
        return Err(Error::CountMismatch {
            images: images.to_path_buf(),
            n_images: n,
            labels: labels.to_path_buf(),
            n_labels: y.len(),
        });
    }
    InMemoryDataset::new(
        x.into_raw_vec_and_offset().0,
        y.into_iter().map(u32::from).collect(),
        [1, h, w],
        255.0,
    )
}

/// Loads the standard four files of a folder ([`IDX_FILES`], each optionally with `.gz`):
/// the training part followed by the test part, as one data set ([`crate::idx`] gives it
/// split: classes 0–4 for training and 5–9 for testing).
pub fn read_idx_dir(dir: impl AsRef<Path>) -> Result<InMemoryDataset> {
    let dir = dir.as_ref();
    let mut all: Option<InMemoryDataset> = None;
    for (images, labels) in IDX_FILES {
        let part = read_idx(find(dir, images)?, find(dir, labels)?)?;
        match &mut all {
            None => all = Some(part),
            Some(acc) => acc.extend(&part)?,
        }
    }
    all.ok_or_else(|| Error::malformed(dir, "no IDX files listed"))
}

/// `dir/name`, or `dir/name.gz` if only that exists.
fn find(dir: &Path, name: &str) -> Result<PathBuf> {
    let plain = dir.join(name);
    if plain.is_file() {
        return Ok(plain);
    }
    let gz = dir.join(format!("{name}.gz"));
    if gz.is_file() {
        return Ok(gz);
    }
    Err(Error::NotFound {
        path: plain,
        hint: "expected the MNIST-format files train-images-idx3-ubyte, train-labels-idx1-ubyte, \
               t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte (optionally .gz); \
               `cargo xtask data mnist` or `cargo xtask data fashion-mnist` puts them in data/"
            .into(),
    })
}
