//! Reading embeddings and labels from NumPy `.npy` files.
//!
//! A small, strict parser of the `.npy` format (versions 1.0, 2.0 and 3.0) rather than a general
//! one, so that every problem comes back as an error that names the file and says what is wrong:
//! the dtype, the number of dimensions, a NaN at row r, a negative label, a truncated file.
//!
//! Embeddings: `float32` or `float64` (converted to `f32`), 2-D, C or Fortran order, any byte
//! order. Labels: any integer dtype (`int8`…`int64`, `uint8`…`uint64`, `bool` is refused), 1-D,
//! values in `0..=u32::MAX`.
//!
//! ```no_run
//! # fn main() -> dml_eval::Result<()> {
//! use dml_eval::npy;
//! let x = npy::read_embeddings("embeddings.npy")?;
//! let y = npy::read_labels("labels.npy")?;
//! npy::check_lengths("embeddings.npy", &x, "labels.npy", &y)?;
//! # Ok(()) }
//! ```

use std::path::{Path, PathBuf};

use ndarray::{Array2, ShapeBuilder};

use crate::{Error, Result};

const MAGIC: &[u8] = b"\x93NUMPY";

/// Element type of a `.npy` array, as its header's `descr` says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Float,
    Int,
    Uint,
}

#[derive(Debug)]
struct Header {
    descr: String,
    kind: Kind,
    size: usize,
    big_endian: bool,
    fortran_order: bool,
    shape: Vec<usize>,
}

/// Reads a 2-D `float32`/`float64` array (rows = items) and checks that every value is finite.
pub fn read_embeddings(path: impl AsRef<Path>) -> Result<Array2<f32>> {
    let path = path.as_ref();
    let bytes = read(path)?;
    let (header, data) = parse(path, &bytes)?;
    if header.kind != Kind::Float || !(header.size == 4 || header.size == 8) {
        return Err(Error::NpyDtype {
            path: path.to_owned(),
            dtype: header.descr,
            expected: "float32 or float64",
        });
    }
    if header.shape.len() != 2 {
        return Err(ndim_error(path, &header, 2));
    }
    let (rows, cols) = (header.shape[0], header.shape[1]);
    let values: Vec<f32> = data
        .chunks_exact(header.size)
        .map(|c| {
            if header.size == 4 {
                let b: [u8; 4] = [c[0], c[1], c[2], c[3]];
                if header.big_endian {
                    f32::from_be_bytes(b)
                } else {
                    f32::from_le_bytes(b)
                }
            } else {
                let b: [u8; 8] = [c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]];
                let v = if header.big_endian {
                    f64::from_be_bytes(b)
                } else {
                    f64::from_le_bytes(b)
                };
                // An f64 beyond the f32 range would become ±inf below; that is reported as a
                // non-finite value with the original number.
                v as f32
            }
        })
        .collect();
    let array = if header.fortran_order {
        Array2::from_shape_vec((rows, cols).f(), values)
    } else {
        Array2::from_shape_vec((rows, cols), values)
    }
    .map_err(|e| {
        format_error(
            path,
            format!("shape {rows}×{cols} does not fit the data: {e}"),
        )
    })?;
    // Fortran-ordered files come back in standard (C) layout like every other array.
    let array = if header.fortran_order {
        array.as_standard_layout().into_owned()
    } else {
        array
    };
    for (row, r) in array.outer_iter().enumerate() {
        if let Some(col) = r.iter().position(|v| !v.is_finite()) {
            let value = original_value(&header, data, rows, cols, row, col);
            return Err(Error::NpyNonFinite {
                path: path.to_owned(),
                row,
                col,
                value,
            });
        }
    }
    Ok(array)
}

/// Reads a 1-D integer array of class ids.
pub fn read_labels(path: impl AsRef<Path>) -> Result<Vec<u32>> {
    let path = path.as_ref();
    let bytes = read(path)?;
    let (header, data) = parse(path, &bytes)?;
    if header.kind == Kind::Float || !matches!(header.size, 1 | 2 | 4 | 8) {
        return Err(Error::NpyDtype {
            path: path.to_owned(),
            dtype: header.descr,
            expected: "an integer dtype (int8…int64 or uint8…uint64)",
        });
    }
    if header.shape.len() != 1 {
        return Err(ndim_error(path, &header, 1));
    }
    data.chunks_exact(header.size)
        .enumerate()
        .map(|(row, c)| {
            let value = int_value(&header, c);
            u32::try_from(value).map_err(|_| Error::NpyLabel {
                path: path.to_owned(),
                row,
                value,
            })
        })
        .collect()
}

/// Reads verification pairs: a 2-D integer array of `n × 3` rows `[i, j, same]`, `i` and `j`
/// rows of the embeddings and `same` 1 for a same-class pair, 0 for a different-class one (any
/// integer dtype, C or Fortran order).
///
/// # Errors
/// As [`read_labels`] for the file and its dtype, [`Error::NpyPairsShape`] unless it is 2-D
/// with 3 columns, [`Error::NpyPairIndex`] for an index outside `0..=u32::MAX`,
/// [`Error::NpyPairFlag`] for a flag other than 0 or 1, and [`Error::NoPairs`] for an empty
/// file. Whether the indices name rows of the embeddings is checked where both are known
/// ([`VerificationPairs::check_items`](crate::verification::VerificationPairs::check_items)).
pub fn read_pairs(path: impl AsRef<Path>) -> Result<crate::verification::VerificationPairs> {
    let path = path.as_ref();
    let bytes = read(path)?;
    let (header, data) = parse(path, &bytes)?;
    if header.kind == Kind::Float || !matches!(header.size, 1 | 2 | 4 | 8) {
        return Err(Error::NpyDtype {
            path: path.to_owned(),
            dtype: header.descr,
            expected: "an integer dtype (int8…int64 or uint8…uint64)",
        });
    }
    if header.shape.len() != 2 || header.shape[1] != 3 {
        return Err(Error::NpyPairsShape {
            path: path.to_owned(),
            shape: header.shape.clone(),
        });
    }
    let rows = header.shape[0];
    let at = |row: usize, col: usize| -> i128 {
        let flat = if header.fortran_order {
            col * rows + row
        } else {
            row * 3 + col
        };
        int_value(&header, &data[flat * header.size..(flat + 1) * header.size])
    };
    let mut pairs = Vec::with_capacity(rows);
    let mut same = Vec::with_capacity(rows);
    for row in 0..rows {
        let index = |col: usize| {
            let value = at(row, col);
            u32::try_from(value).map_err(|_| Error::NpyPairIndex {
                path: path.to_owned(),
                row,
                value,
            })
        };
        pairs.push([index(0)?, index(1)?]);
        same.push(match at(row, 2) {
            0 => false,
            1 => true,
            value => {
                return Err(Error::NpyPairFlag {
                    path: path.to_owned(),
                    row,
                    value,
                });
            }
        });
    }
    crate::verification::VerificationPairs::new(pairs, same)
}

/// Checks that an embeddings file and a labels file describe the same number of items; the
/// error names both files.
pub fn check_lengths(
    embeddings_path: impl AsRef<Path>,
    embeddings: &Array2<f32>,
    labels_path: impl AsRef<Path>,
    labels: &[u32],
) -> Result<()> {
    if embeddings.nrows() == labels.len() {
        return Ok(());
    }
    Err(Error::FileLengthMismatch {
        embeddings: embeddings_path.as_ref().to_owned(),
        n_rows: embeddings.nrows(),
        labels: labels_path.as_ref().to_owned(),
        n_labels: labels.len(),
    })
}

/// Reads an embeddings file and a labels file and checks that their lengths agree.
pub fn read_embeddings_and_labels(
    embeddings_path: impl AsRef<Path>,
    labels_path: impl AsRef<Path>,
) -> Result<(Array2<f32>, Vec<u32>)> {
    let x = read_embeddings(&embeddings_path)?;
    let y = read_labels(&labels_path)?;
    check_lengths(embeddings_path, &x, labels_path, &y)?;
    Ok((x, y))
}

fn read(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|source| Error::Io {
        path: path.to_owned(),
        source,
    })
}

fn format_error(path: &Path, reason: impl Into<String>) -> Error {
    Error::NpyFormat {
        path: PathBuf::from(path),
        reason: reason.into(),
    }
}

fn ndim_error(path: &Path, header: &Header, expected: usize) -> Error {
    Error::NpyNdim {
        path: path.to_owned(),
        ndim: header.shape.len(),
        shape: header.shape.clone(),
        expected,
    }
}

fn int_value(header: &Header, c: &[u8]) -> i128 {
    let mut b = [0u8; 8];
    if header.big_endian {
        // Right-align the big-endian bytes in an 8-byte big-endian buffer.
        b[8 - c.len()..].copy_from_slice(c);
    } else {
        b[..c.len()].copy_from_slice(c);
    }
    let raw = if header.big_endian {
        u64::from_be_bytes(b)
    } else {
        u64::from_le_bytes(b)
    };
    match header.kind {
        Kind::Uint => i128::from(raw),
        _ => {
            // Sign-extend from `size` bytes.
            let bits = 8 * header.size as u32;
            let shift = 64 - bits;
            i128::from(((raw << shift) as i64) >> shift)
        }
    }
}

/// The value as stored in the file (an f64 that overflowed to inf in f32 is reported as itself).
fn original_value(
    header: &Header,
    data: &[u8],
    rows: usize,
    cols: usize,
    row: usize,
    col: usize,
) -> f64 {
    let flat = if header.fortran_order {
        col * rows + row
    } else {
        row * cols + col
    };
    let c = &data[flat * header.size..(flat + 1) * header.size];
    match (header.size, header.big_endian) {
        (4, false) => f64::from(f32::from_le_bytes([c[0], c[1], c[2], c[3]])),
        (4, true) => f64::from(f32::from_be_bytes([c[0], c[1], c[2], c[3]])),
        (_, big) => {
            let b = [c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]];
            if big {
                f64::from_be_bytes(b)
            } else {
                f64::from_le_bytes(b)
            }
        }
    }
}

/// Splits a `.npy` file into its header and exactly the data bytes the header announces.
fn parse<'a>(path: &Path, bytes: &'a [u8]) -> Result<(Header, &'a [u8])> {
    if bytes.len() < 10 || &bytes[..6] != MAGIC {
        return Err(format_error(
            path,
            "it does not start with the .npy magic string \\x93NUMPY",
        ));
    }
    let major = bytes[6];
    let (header_len, header_start) = match major {
        1 => (usize::from(u16::from_le_bytes([bytes[8], bytes[9]])), 10),
        2 | 3 => {
            if bytes.len() < 12 {
                return Err(format_error(path, "the file ends inside the header"));
            }
            let len = u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]);
            (len as usize, 12)
        }
        v => {
            return Err(format_error(
                path,
                format!("unsupported format version {v}.{}", bytes[7]),
            ));
        }
    };
    let data_start = header_start + header_len;
    if bytes.len() < data_start {
        return Err(format_error(
            path,
            format!(
                "the header announces {header_len} bytes but the file ends after {}",
                bytes.len() - header_start
            ),
        ));
    }
    let text = std::str::from_utf8(&bytes[header_start..data_start])
        .map_err(|_| format_error(path, "the header is not valid text"))?;
    let header = parse_header(text).map_err(|reason| format_error(path, reason))?;
    if header.size == 0 {
        // A dtype this module does not decode (bool, complex, strings, objects): the caller
        // reports it by name, whatever the data looks like.
        return Ok((header, &bytes[data_start..]));
    }
    let n_items = header
        .shape
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .and_then(|n| n.checked_mul(header.size))
        .ok_or_else(|| format_error(path, format!("shape {:?} is too large", header.shape)))?;
    let data = &bytes[data_start..];
    if data.len() < n_items {
        return Err(format_error(
            path,
            format!(
                "data is truncated: shape {:?} of {} needs {n_items} bytes but only {} are present",
                header.shape,
                header.descr,
                data.len()
            ),
        ));
    }
    if data.len() > n_items {
        return Err(format_error(
            path,
            format!(
                "{} bytes follow the {n_items} bytes of data that shape {:?} of {} needs",
                data.len() - n_items,
                header.shape,
                header.descr
            ),
        ));
    }
    Ok((header, data))
}

/// Parses the Python dict literal of a `.npy` header, e.g.
/// `{'descr': '<f4', 'fortran_order': False, 'shape': (3, 4), }`.
fn parse_header(text: &str) -> std::result::Result<Header, String> {
    let text = text.trim_end_matches(['\n', ' ', '\0']).trim();
    let inner = text
        .strip_prefix('{')
        .and_then(|t| t.strip_suffix('}'))
        .ok_or_else(|| format!("the header `{text}` is not a dictionary"))?;
    let descr = dict_value(inner, "descr")?;
    let descr = unquote(descr).ok_or_else(|| {
        format!("unsupported dtype `{descr}` (structured dtypes are not supported)")
    })?;
    let fortran_order = match dict_value(inner, "fortran_order")? {
        "True" => true,
        "False" => false,
        other => return Err(format!("fortran_order is `{other}`, not True or False")),
    };
    let shape_text = dict_value(inner, "shape")?;
    let shape = shape_text
        .strip_prefix('(')
        .and_then(|t| t.strip_suffix(')'))
        .ok_or_else(|| format!("shape `{shape_text}` is not a tuple"))?
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.trim_end_matches('L')
                .parse::<usize>()
                .map_err(|_| format!("shape `{shape_text}` holds `{s}`, not a size"))
        })
        .collect::<std::result::Result<Vec<_>, _>>()?;
    let (order, rest) = match descr.as_bytes().first() {
        Some(b'<' | b'>' | b'|' | b'=') => (descr.as_bytes()[0], &descr[1..]),
        _ => (b'=', descr),
    };
    let mut chars = rest.chars();
    let kind = match chars.next() {
        Some('f') => Kind::Float,
        Some('i') => Kind::Int,
        Some('u') => Kind::Uint,
        _ => {
            return Ok(Header {
                descr: descr.to_owned(),
                kind: Kind::Float,
                size: 0,
                big_endian: false,
                fortran_order,
                shape,
            });
        }
    };
    let size = chars.as_str().parse::<usize>().unwrap_or(0);
    Ok(Header {
        descr: descr.to_owned(),
        kind,
        size,
        big_endian: order == b'>' || (order == b'=' && cfg!(target_endian = "big")),
        fortran_order,
        shape,
    })
}

/// The raw text of the value of `key` in a flat Python dict literal.
fn dict_value<'a>(dict: &'a str, key: &str) -> std::result::Result<&'a str, String> {
    let start = [format!("'{key}'"), format!("\"{key}\"")]
        .iter()
        .find_map(|k| dict.find(k.as_str()).map(|i| i + k.len()))
        .ok_or_else(|| format!("the header has no `{key}` entry"))?;
    let rest = dict[start..].trim_start();
    let rest = rest
        .strip_prefix(':')
        .ok_or_else(|| format!("the header's `{key}` entry has no value"))?
        .trim_start();
    // The value ends at the first comma outside brackets and quotes.
    let mut depth = 0i32;
    let mut quote: Option<char> = None;
    for (i, ch) in rest.char_indices() {
        match (quote, ch) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), _) => {}
            (None, '\'' | '"') => quote = Some(ch),
            (None, '(' | '[' | '{') => depth += 1,
            (None, ')' | ']' | '}') => depth -= 1,
            (None, ',') if depth == 0 => return Ok(rest[..i].trim()),
            _ => {}
        }
    }
    Ok(rest.trim())
}

fn unquote(s: &str) -> Option<&str> {
    s.strip_prefix('\'')
        .and_then(|t| t.strip_suffix('\''))
        .or_else(|| s.strip_prefix('"').and_then(|t| t.strip_suffix('"')))
}
