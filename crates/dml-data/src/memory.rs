//! Data sets held in memory as `u8` pixels: the embedded digits and IDX files.

use std::borrow::Cow;
use std::io::Read;

use crate::dataset::Dataset;
use crate::transform::Pixels;
use crate::{Error, Result};

/// Images of one size held in memory as `u8` (N × H × W × C, channels interleaved), with labels.
#[derive(Clone, Debug)]
pub struct InMemoryDataset {
    data: Vec<u8>,
    labels: Vec<u32>,
    shape: [usize; 3],
    max_value: f32,
}

impl InMemoryDataset {
    /// Wraps `data` (N × H × W × C values, `shape` = (C, H, W)) and one label per item;
    /// `max_value` is the pixel value that maps to 1.0 (255 for 8-bit images).
    ///
    /// # Errors
    /// [`Error::Malformed`] (naming `"<memory>"`) if the sizes disagree or `max_value` is not
    /// positive.
    pub fn new(data: Vec<u8>, labels: Vec<u32>, shape: [usize; 3], max_value: f32) -> Result<Self> {
        let item = shape.iter().product::<usize>();
        if item == 0 || data.len() != item * labels.len() {
            return Err(Error::malformed(
                "<memory>",
                format!(
                    "{} values for {} items of shape {shape:?}",
                    data.len(),
                    labels.len()
                ),
            ));
        }
        if !(max_value > 0.0 && max_value.is_finite()) {
            return Err(Error::malformed(
                "<memory>",
                format!("max value {max_value} must be positive"),
            ));
        }
        Ok(InMemoryDataset {
            data,
            labels,
            shape,
            max_value,
        })
    }

    /// The raw pixel values (N × H × W × C).
    pub fn data(&self) -> &[u8] {
        &self.data
    }

    /// Appends the items of `other`, which must have the same shape and scale.
    ///
    /// # Errors
    /// [`Error::ShapeMismatch`] if the shapes differ.
    pub fn extend(&mut self, other: &InMemoryDataset) -> Result<()> {
        if other.shape != self.shape || other.max_value != self.max_value {
            return Err(Error::ShapeMismatch {
                index: self.labels.len(),
                expected: self.shape,
                found: other.shape,
            });
        }
        self.data.extend_from_slice(&other.data);
        self.labels.extend_from_slice(&other.labels);
        Ok(())
    }
}

impl Dataset for InMemoryDataset {
    fn len(&self) -> usize {
        self.labels.len()
    }
    fn labels(&self) -> &[u32] {
        &self.labels
    }
    fn channels(&self) -> usize {
        self.shape[0]
    }
    fn item_shape(&self) -> Option<[usize; 3]> {
        Some(self.shape)
    }
    fn pixels(&self, index: usize) -> Result<Pixels<'_>> {
        let item = self.shape.iter().product::<usize>();
        let data =
            self.data
                .get(index * item..(index + 1) * item)
                .ok_or(Error::IndexOutOfRange {
                    index,
                    len: self.labels.len(),
                })?;
        Ok(Pixels {
            data: Cow::Borrowed(data),
            channels: self.shape[0],
            height: self.shape[1],
            width: self.shape[2],
            max_value: self.max_value,
        })
    }
}

/// The embedded default data set, read whole: the UCI optical recognition of handwritten digits as
/// scikit-learn ships it (`load_digits`): 1,797 grey images of 8 × 8 with values 0–16, ten
/// classes. Licence CC BY 4.0; see `data/README.md` of this crate.
static DIGITS_CSV_GZ: &[u8] = include_bytes!("../data/digits.csv.gz");

/// Number of images of the embedded digits.
pub const DIGITS_LEN: usize = 1797;

/// Decompresses and parses the embedded digits (about a millisecond); [`crate::digits`] gives
/// them split.
pub fn read_digits() -> Result<InMemoryDataset> {
    const NAME: &str = "<embedded digits.csv.gz>";
    let mut text = String::new();
    flate2::read::GzDecoder::new(DIGITS_CSV_GZ)
        .read_to_string(&mut text)
        .map_err(|e| Error::io(NAME, e))?;
    let mut data = Vec::with_capacity(DIGITS_LEN * 64);
    let mut labels = Vec::with_capacity(DIGITS_LEN);
    for (line_no, line) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        let values = line
            .split(',')
            .map(|v| {
                v.trim()
                    .parse::<f32>()
                    .ok()
                    .filter(|x| (0.0..=16.0).contains(x) && x.fract() == 0.0)
            })
            .collect::<Option<Vec<f32>>>()
            .filter(|v| v.len() == 65)
            .ok_or_else(|| {
                Error::malformed(
                    NAME,
                    format!("line {}: expected 65 integers 0..=16", line_no + 1),
                )
            })?;
        data.extend(values[..64].iter().map(|&v| v as u8));
        labels.push(values[64] as u32);
    }
    InMemoryDataset::new(data, labels, [1, 8, 8], 16.0)
}
