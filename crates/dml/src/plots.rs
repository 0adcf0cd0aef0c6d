//! Plots of a run, each written as PNG and SVG: training curves, a 2-D map of held-out
//! embeddings, the distances each miner samples against the density of distances on the unit
//! sphere (the picture behind distance-weighted sampling), and the ROC of a verification.
//!
//! Each plot is drawn once, as SVG; the PNG is that SVG rasterised by resvg, so the two always
//! show the same thing. Text is laid out and rendered with DejaVu Sans, embedded in the binary
//! (`assets/DejaVuSans.ttf`, Bitstream Vera licence in `assets/DejaVuSans-LICENSE.txt`), so plots
//! come out the same on a headless machine with no fonts installed. Files are written atomically
//! (`checkpoint::write_atomic`).

use std::path::{Path, PathBuf};
use std::sync::{Once, OnceLock};

use ndarray::{Array2, ArrayView2};
use plotters::coord::Shift;
use plotters::element::DashedPathElement;
use plotters::prelude::*;

use dml_eval::{Metrics, Score};

use crate::state::EpochRecord;
use crate::{Error, Result};

static FONT: &[u8] = include_bytes!("../assets/DejaVuSans.ttf");
static REGISTER: Once = Once::new();

/// Registers the embedded font under plotters' `sans-serif` family (once per process).
fn register_font() {
    REGISTER.call_once(|| {
        // The bytes are a valid TrueType font checked in with the crate; a failure here would be
        // a packaging bug, and text would then simply be missing, so it is not fatal.
        let _ = plotters::style::register_font("sans-serif", FontStyle::Normal, FONT);
    });
}

pub(crate) const WIDTH: u32 = 1200;
const HEIGHT: u32 = 560;

fn plot_err(path: &Path, e: impl std::fmt::Display) -> Error {
    Error::Plot {
        path: path.to_path_buf(),
        message: e.to_string(),
    }
}

/// A drawing routine generic over the backend, so one body serves PNG and SVG.
pub(crate) trait Drawer {
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> DrawResult;
}

pub(crate) type DrawResult = std::result::Result<(), String>;

pub(crate) fn e2s<E: std::fmt::Debug>(e: E) -> String {
    format!("{e:?}")
}

/// Draws `d` once as SVG, writes it to `<stem>.svg`, rasterises the same SVG into `<stem>.png`
/// (resvg, with the embedded font) and returns both paths.
pub(crate) fn render<D: Drawer>(stem: &Path, size: (u32, u32), d: &D) -> Result<Vec<PathBuf>> {
    register_font();
    if let Some(dir) = stem.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|source| Error::Io {
            path: dir.to_path_buf(),
            source,
        })?;
    }
    let png = stem.with_extension("png");
    let svg = stem.with_extension("svg");
    let mut text = String::new();
    {
        let root = SVGBackend::with_string(&mut text, size).into_drawing_area();
        d.draw(&root).map_err(|e| plot_err(&svg, e))?;
        root.present().map_err(|e| plot_err(&svg, e))?;
    }
    write_file(&svg, text.as_bytes())?;
    let pixels = rasterise(&text, size).map_err(|e| plot_err(&png, e))?;
    write_file(&png, &pixels)?;
    Ok(vec![png, svg])
}

/// Writes `bytes` atomically ([`crate::checkpoint::write_atomic`]), so a plot being looked at
/// is never seen half-written.
fn write_file(path: &Path, bytes: &[u8]) -> Result<()> {
    crate::checkpoint::write_atomic(path, bytes)
}

/// Renders SVG text to PNG bytes at its own size, with the embedded font as `sans-serif`.
fn rasterise(svg: &str, size: (u32, u32)) -> std::result::Result<Vec<u8>, String> {
    render_pixmap(svg, size)?.encode_png().map_err(e2s)
}

fn render_pixmap(
    svg: &str,
    (width, height): (u32, u32),
) -> std::result::Result<resvg::tiny_skia::Pixmap, String> {
    use resvg::{tiny_skia, usvg};
    static OPTIONS: OnceLock<usvg::Options<'static>> = OnceLock::new();
    let options = OPTIONS.get_or_init(|| {
        let mut o = usvg::Options::default();
        let fonts = o.fontdb_mut();
        fonts.load_font_data(FONT.to_vec());
        fonts.set_sans_serif_family("DejaVu Sans");
        o
    });
    let tree = usvg::Tree::from_str(svg, options).map_err(e2s)?;
    let mut pixmap = tiny_skia::Pixmap::new(width, height)
        .ok_or_else(|| format!("cannot allocate a {width}×{height} image"))?;
    pixmap.fill(tiny_skia::Color::WHITE);
    resvg::render(
        &tree,
        tiny_skia::Transform::identity(),
        &mut pixmap.as_mut(),
    );
    Ok(pixmap)
}

/// Tick labels for a value axis spanning `lo..hi`: enough decimals for ticks a twentieth of the
/// span apart, trailing zeros dropped ("0.9", "0.85", "1"), and no "-0".
pub(crate) fn value_ticks(lo: f64, hi: f64) -> impl Fn(&f64) -> String {
    let step = ((hi - lo).abs() / 20.0).max(1e-12);
    let decimals = (-step.log10().floor()).clamp(0.0, 8.0) as usize;
    move |v| {
        let mut s = format!("{v:.decimals$}");
        if s.contains('.') {
            s.truncate(s.trim_end_matches('0').trim_end_matches('.').len());
        }
        if s == "-0" { "0".to_owned() } else { s }
    }
}

/// Tick labels for the epoch axis: whole epochs only ("4", not "4.0"); ticks between epochs are
/// left blank.
fn epoch_ticks(v: &f64) -> String {
    if (v - v.round()).abs() < 1e-9 && *v >= 0.0 {
        format!("{}", v.round() as u64)
    } else {
        String::new()
    }
}

// ---------------------------------------------------------------------------------------------
// Training curves.

struct Curves<'a> {
    history: &'a [EpochRecord],
    baselines: Baselines<'a>,
    title: &'a str,
}

/// The baselines a run's curves are drawn against: the raw input and, for a pretrained or
/// TorchScript backbone, the frozen backbone (the untrained network is the curve's epoch 0).
#[derive(Debug, Clone, Copy, Default)]
pub struct Baselines<'a> {
    /// The raw-input baseline's metrics, if computed.
    pub raw_input: Option<&'a Metrics>,
    /// The frozen backbone's metrics, if the backbone came with weights.
    pub frozen_backbone: Option<&'a Metrics>,
}

impl Drawer for Curves<'_> {
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> DrawResult {
        root.fill(&WHITE).map_err(e2s)?;
        let root = root.titled(self.title, ("sans-serif", 22)).map_err(e2s)?;
        let (left, right) = root.split_horizontally(WIDTH / 2);
        let n_epochs = self
            .history
            .iter()
            .map(|r| r.epoch)
            .max()
            .unwrap_or(1)
            .max(1);

        // Loss per epoch.
        let losses: Vec<(f64, f64)> = self
            .history
            .iter()
            .filter_map(|r| Some((r.epoch as f64, r.loss?)))
            .filter(|p| p.1.is_finite())
            .collect();
        let (lo, hi) = padded_range(losses.iter().map(|p| p.1), 0.0);
        let mut chart = ChartBuilder::on(&left)
            .caption("training loss (mean per epoch)", ("sans-serif", 18))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(60)
            .build_cartesian_2d(0.5f64..n_epochs as f64 + 0.5, lo..hi)
            .map_err(e2s)?;
        chart
            .configure_mesh()
            .x_desc("epoch")
            .y_desc("loss")
            .x_label_formatter(&epoch_ticks)
            .y_label_formatter(&value_ticks(lo, hi))
            .label_style(("sans-serif", 14))
            .draw()
            .map_err(e2s)?;
        chart
            .draw_series(LineSeries::new(
                losses.iter().copied(),
                BLUE.stroke_width(2),
            ))
            .map_err(e2s)?;
        chart
            .draw_series(losses.iter().map(|&p| Circle::new(p, 3, BLUE.filled())))
            .map_err(e2s)?;

        // R@1 and MAP@R per evaluated epoch, with the baselines as horizontal lines in the
        // metric's colour: dashed for the frozen backbone, dotted for the raw input. The
        // untrained network is the curve's own point at epoch 0.
        let series: [(&str, Score, RGBColor); 2] = [
            ("R@1", Score::RecallAt(1), BLUE),
            ("MAP@R", Score::MapAtR, RED),
        ];
        let mut chart = ChartBuilder::on(&right)
            .caption("held-out classes (lines: baselines)", ("sans-serif", 18))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(60)
            .build_cartesian_2d(-0.5f64..n_epochs as f64 + 0.5, 0f64..1.0)
            .map_err(e2s)?;
        chart
            .configure_mesh()
            .x_desc("epoch")
            .y_desc("score")
            .x_label_formatter(&epoch_ticks)
            .y_label_formatter(&value_ticks(0.0, 1.0))
            .label_style(("sans-serif", 14))
            .draw()
            .map_err(e2s)?;
        let span = [-0.5, n_epochs as f64 + 0.5];
        let mut any = false;
        // The legend goes into the half the lines leave free: the top when every plotted value
        // is at most 0.6 (hard sets), else the bottom.
        let mut highest = 0f64;
        for (name, score, colour) in series {
            let points: Vec<(f64, f64)> = self
                .history
                .iter()
                .filter_map(|r| Some((r.epoch as f64, r.metrics.as_ref()?.get(score)?)))
                .collect();
            if points.is_empty() {
                continue;
            }
            any = true;
            highest = points.iter().map(|p| p.1).fold(highest, f64::max);
            chart
                .draw_series(LineSeries::new(
                    points.iter().copied(),
                    colour.stroke_width(2),
                ))
                .map_err(e2s)?
                .label(name)
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 18, y)], colour.stroke_width(2))
                });
            chart
                .draw_series(points.iter().map(|&p| Circle::new(p, 3, colour.filled())))
                .map_err(e2s)?;
            let lines = [
                (
                    "frozen backbone",
                    self.baselines.frozen_backbone,
                    8u32,
                    5u32,
                ),
                ("raw input", self.baselines.raw_input, 2, 4),
            ];
            for (what, baseline, dash, gap) in lines {
                let Some(v) = baseline.and_then(|m| m.get(score)) else {
                    continue;
                };
                highest = highest.max(v);
                let style = ShapeStyle {
                    color: colour.to_rgba(),
                    filled: false,
                    stroke_width: 2,
                };
                chart
                    .draw_series(DashedLineSeries::new(
                        span.iter().map(|&x| (x, v)),
                        dash,
                        gap,
                        style,
                    ))
                    .map_err(e2s)?
                    .label(format!("{name}, {what}"))
                    .legend(move |(x, y)| {
                        DashedPathElement::new(vec![(x, y), (x + 18, y)], dash, gap, style)
                    });
            }
        }
        if any {
            chart
                .configure_series_labels()
                .position(if highest <= 0.6 {
                    SeriesLabelPosition::UpperRight
                } else {
                    SeriesLabelPosition::LowerRight
                })
                .background_style(WHITE.mix(0.8))
                .border_style(BLACK)
                .label_font(("sans-serif", 13))
                .draw()
                .map_err(e2s)?;
        }
        Ok(())
    }
}

/// The range of `values` with 5 % padding, always including `include`.
pub(crate) fn padded_range(values: impl Iterator<Item = f64>, include: f64) -> (f64, f64) {
    let (mut lo, mut hi) = (include, include);
    for v in values.filter(|v| v.is_finite()) {
        lo = lo.min(v);
        hi = hi.max(v);
    }
    if hi - lo < 1e-12 {
        hi = lo + 1.0;
    }
    let pad = 0.05 * (hi - lo);
    (lo - pad, hi + pad)
}

/// Plots the mean training loss per epoch and, side by side, R@1 and MAP@R per evaluated epoch
/// with the `baselines` as horizontal lines, into `<stem>.png` and `<stem>.svg`.
pub fn training_curves(
    history: &[EpochRecord],
    baselines: Baselines<'_>,
    title: &str,
    stem: &Path,
) -> Result<Vec<PathBuf>> {
    render(
        stem,
        (WIDTH, HEIGHT),
        &Curves {
            history,
            baselines,
            title,
        },
    )
}

// ---------------------------------------------------------------------------------------------
// Embedding map.

/// Projects the rows of `x` onto their first two principal components: centred, the
/// eigenvectors of the covariance for its two largest eigenvalues (LibTorch's symmetric
/// eigensolver, `linalg_eigh`, in f64), each with its sign fixed so its largest-magnitude entry
/// is positive, so the map is deterministic. A second column of zeros for 1-d data.
///
/// # Errors
/// [`Error::Torch`] if the eigensolver fails (it does not converge on non-finite input).
pub fn pca_2d(x: ArrayView2<'_, f32>) -> Result<Array2<f32>> {
    let (n, d) = x.dim();
    if n == 0 || d == 0 {
        return Ok(Array2::zeros((n, 2)));
    }
    let x = dml_kernels::tensor::from_array(x)?.f_to_kind(tch::Kind::Double)?;
    let centred = x.f_sub(&x.f_mean_dim([0_i64].as_slice(), true, None::<tch::Kind>)?)?;
    let cov = centred.f_tr()?.f_mm(&centred)?;
    // Eigenvalues in ascending order, eigenvectors as columns.
    let (_, vectors) = cov.f_linalg_eigh("L")?;
    let k = 2.min(d) as i64;
    let mut top = vectors
        .f_narrow(1, d as i64 - k, k)?
        .f_flip([1_i64].as_slice())?;
    // Sign: the largest-magnitude entry of each component positive.
    let pivot = top.f_abs()?.f_argmax(0, true)?;
    let sign = top.f_gather(0, &pivot, false)?.f_sign()?;
    let sign = sign.f_where_scalarother(&sign.f_ne(0.0)?, 1.0)?;
    top = top.f_mul(&sign)?;
    let projected = dml_kernels::tensor::to_array2(&centred.f_mm(&top)?)?;
    let mut out = Array2::zeros((n, 2));
    out.slice_mut(ndarray::s![.., ..k as usize])
        .assign(&projected);
    Ok(out)
}

/// The most classes drawn on an embedding map; beyond this the colours stop being distinguishable.
pub const MAX_MAP_CLASSES: usize = 20;

struct Map<'a> {
    points: Array2<f32>,
    labels: &'a [u32],
    classes: Vec<u32>,
    title: &'a str,
    caption: String,
}

impl Drawer for Map<'_> {
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> DrawResult {
        root.fill(&WHITE).map_err(e2s)?;
        let root = root.titled(self.title, ("sans-serif", 22)).map_err(e2s)?;
        let (plot, foot) = root.split_vertically(root.dim_in_pixel().1 - 30);
        foot.draw(&Text::new(
            self.caption.clone(),
            (10, 5),
            ("sans-serif", 14).into_font().color(&BLACK.mix(0.7)),
        ))
        .map_err(e2s)?;
        let xs = self.points.column(0);
        let ys = self.points.column(1);
        let (x0, x1) = padded_range(xs.iter().map(|&v| f64::from(v)), 0.0);
        let (y0, y1) = padded_range(ys.iter().map(|&v| f64::from(v)), 0.0);
        let (plot, legend) = plot.split_horizontally(plot.dim_in_pixel().0 - 130);
        let mut chart = ChartBuilder::on(&plot)
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(60)
            .build_cartesian_2d(x0..x1, y0..y1)
            .map_err(e2s)?;
        chart
            .configure_mesh()
            .x_desc("principal component 1")
            .y_desc("principal component 2")
            .x_label_formatter(&value_ticks(x0, x1))
            .y_label_formatter(&value_ticks(y0, y1))
            .label_style(("sans-serif", 14))
            .draw()
            .map_err(e2s)?;
        for (ci, class) in self.classes.iter().enumerate() {
            let colour = Palette99::pick(ci).to_rgba();
            chart
                .draw_series(
                    self.labels
                        .iter()
                        .enumerate()
                        .filter(|(_, l)| *l == class)
                        .map(|(i, _)| {
                            let p = (f64::from(xs[i]), f64::from(ys[i]));
                            Circle::new(p, 3, colour.mix(0.75).filled())
                        }),
                )
                .map_err(e2s)?;
            let y = 20 + 22 * ci as i32;
            legend
                .draw(&Circle::new((14, y), 5, colour.filled()))
                .map_err(e2s)?;
            legend
                .draw(&Text::new(
                    format!("class {class}"),
                    (26, y - 8),
                    ("sans-serif", 14),
                ))
                .map_err(e2s)?;
        }
        Ok(())
    }
}

/// Plots held-out embeddings projected to 2-D by PCA ([`pca_2d`]), coloured by class, into
/// `<stem>.png` and `<stem>.svg`. With more than [`MAX_MAP_CLASSES`] classes only the
/// [`MAX_MAP_CLASSES`] smallest class ids are drawn (the PCA still uses every point); the caption
/// says so.
pub fn embedding_map(
    embeddings: ArrayView2<'_, f32>,
    labels: &[u32],
    title: &str,
    stem: &Path,
) -> Result<Vec<PathBuf>> {
    if embeddings.nrows() != labels.len() {
        return Err(Error::LengthMismatch {
            what: "embedding map labels",
            expected: embeddings.nrows(),
            found: labels.len(),
        });
    }
    let points = pca_2d(embeddings)?;
    let mut classes: Vec<u32> = labels.to_vec();
    classes.sort_unstable();
    classes.dedup();
    let n_classes = classes.len();
    classes.truncate(MAX_MAP_CLASSES);
    let mut caption = format!(
        "{} points, {}-d embeddings projected on their first two principal components (PCA, deterministic)",
        labels.len(),
        embeddings.ncols()
    );
    if n_classes > MAX_MAP_CLASSES {
        caption.push_str(&format!("; {MAX_MAP_CLASSES} of {n_classes} classes shown"));
    }
    render(
        stem,
        (900, 720),
        &Map {
            points,
            labels,
            classes,
            title,
            caption,
        },
    )
}

// ---------------------------------------------------------------------------------------------
// Sampled distances against the unit-sphere density.

/// Number of histogram bins over [0, 2].
const BINS: usize = 40;

/// `q(d)` on a grid over (0, 2), normalised numerically to integrate to 1 (the analytic constant
/// overflows in high dimension, and normalising the log-density is exact up to the quadrature).
fn sphere_density(dim: usize, n: usize) -> Vec<(f64, f64)> {
    let xs: Vec<f64> = (1..n).map(|i| 2.0 * i as f64 / n as f64).collect();
    let logs: Vec<f64> = xs
        .iter()
        .map(|&d| dml_sampling::unit_sphere_log_density(d, dim))
        .collect();
    let max = logs
        .iter()
        .copied()
        .filter(|v| v.is_finite())
        .fold(f64::NEG_INFINITY, f64::max);
    let ys: Vec<f64> = logs
        .iter()
        .map(|&l| if l.is_finite() { (l - max).exp() } else { 0.0 })
        .collect();
    let area: f64 = ys.iter().sum::<f64>() * 2.0 / n as f64;
    xs.into_iter()
        .zip(ys)
        .map(|(x, y)| (x, if area > 0.0 { y / area } else { 0.0 }))
        .collect()
}

/// The density of `values` over [0, 2] in [`BINS`] bins (values outside, and NaN, are left
/// out).
fn density_histogram(values: &[f32]) -> Vec<f64> {
    let mut hist = dml_sampling::Histogram {
        lo: 0.0,
        hi: 2.0,
        counts: vec![0; BINS],
        below: 0,
        above: 0,
        nan: 0,
    };
    for &v in values {
        hist.add(v);
    }
    hist.density()
}

struct Histograms<'a> {
    series: &'a [(String, Vec<f32>)],
    dim: usize,
    title: &'a str,
}

impl Drawer for Histograms<'_> {
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> DrawResult {
        root.fill(&WHITE).map_err(e2s)?;
        let root = root.titled(self.title, ("sans-serif", 22)).map_err(e2s)?;
        let (panels_area, foot) = root.split_vertically(root.dim_in_pixel().1 - 30);
        foot.draw(&Text::new(
            format!(
                "bars: negatives each miner picked (density); line: q(d), distances of uniform points on the unit sphere in {} dims",
                self.dim
            ),
            (10, 5),
            ("sans-serif", 13).into_font().color(&BLACK.mix(0.7)),
        ))
        .map_err(e2s)?;
        let n = self.series.len().max(1);
        let cols = n.min(3);
        let rows = n.div_ceil(cols);
        let panels = panels_area.split_evenly((rows, cols));
        let q = sphere_density(self.dim, 400);
        let width = 2.0 / BINS as f64;
        for ((name, values), panel) in self.series.iter().zip(panels.iter()) {
            let hist = density_histogram(values);
            let y_max = hist
                .iter()
                .copied()
                .chain(q.iter().map(|p| p.1))
                .fold(0.0f64, f64::max)
                .max(1e-6)
                * 1.08;
            let mut chart = ChartBuilder::on(panel)
                .caption(
                    format!("{name} ({} negatives)", values.len()),
                    ("sans-serif", 16),
                )
                .margin(10)
                .x_label_area_size(35)
                .y_label_area_size(50)
                .build_cartesian_2d(0f64..2.0, 0f64..y_max)
                .map_err(e2s)?;
            chart
                .configure_mesh()
                .x_desc("distance")
                .y_desc("density")
                .x_label_formatter(&value_ticks(0.0, 2.0))
                .y_label_formatter(&value_ticks(0.0, y_max))
                .label_style(("sans-serif", 12))
                .draw()
                .map_err(e2s)?;
            chart
                .draw_series(hist.iter().enumerate().map(|(b, &h)| {
                    let x0 = b as f64 * width;
                    Rectangle::new([(x0, 0.0), (x0 + width, h)], BLUE.mix(0.45).filled())
                }))
                .map_err(e2s)?;
            chart
                .draw_series(LineSeries::new(q.iter().copied(), RED.stroke_width(2)))
                .map_err(e2s)?;
        }
        Ok(())
    }
}

/// For each `(miner name, negative distances)` series, a panel with the histogram of the
/// distances the miner sampled and the analytic density `q(d)` of pairwise distances between
/// uniform points on the unit sphere in `dim` dimensions
/// ([`dml_sampling::unit_sphere_log_density`]). Uniform sampling follows `q(d)`, concentrated
/// near √2 in high dimension; distance-weighted sampling flattens it. Written to `<stem>.png`
/// and `<stem>.svg`.
pub fn distance_histograms(
    series: &[(String, Vec<f32>)],
    dim: usize,
    title: &str,
    stem: &Path,
) -> Result<Vec<PathBuf>> {
    let cols = series.len().clamp(1, 3) as u32;
    let rows = series.len().max(1).div_ceil(3) as u32;
    render(
        stem,
        ((420 * cols).max(900), 360 * rows + 70),
        &Histograms { series, dim, title },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tick_labels_are_exact_and_short() {
        let f = value_ticks(-1.2, 0.8);
        let labels: Vec<String> = [-1.2, -0.2, -1e-17, 0.0, 0.4, 0.30000000000000004]
            .iter()
            .map(&f)
            .collect();
        assert_eq!(labels, ["-1.2", "-0.2", "0", "0", "0.4", "0.3"]);
        let f = value_ticks(0.0, 0.95);
        assert_eq!([f(&0.85), f(&0.9), f(&1.0)], ["0.85", "0.9", "1"]);
        let f = value_ticks(0.0, 11.0);
        assert_eq!([f(&2.0), f(&10.0), f(&2.5)], ["2", "10", "2.5"]);
        assert_eq!(
            [epoch_ticks(&0.0), epoch_ticks(&4.0), epoch_ticks(&2.5)],
            ["0", "4", ""]
        );
    }

    #[test]
    fn text_is_drawn_with_the_embedded_font() {
        // usvg silently drops text whose font it cannot find, so count the ink.
        let svg = |text: &str| {
            format!(
                r#"<svg xmlns="http://www.w3.org/2000/svg" width="60" height="20">
                <text x="2" y="15" font-family="sans-serif" font-size="14">{text}</text></svg>"#
            )
        };
        let ink = |text: &str| {
            let pixmap = render_pixmap(&svg(text), (60, 20)).expect("render");
            pixmap.pixels().iter().filter(|p| p.red() < 128).count()
        };
        assert_eq!(ink(""), 0);
        assert!(ink("class") > 40, "no text drawn: {}", ink("class"));
        let png = rasterise(&svg("class"), (60, 20)).expect("rasterise");
        assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
        // IHDR: width and height, big-endian, right after the signature and chunk header.
        assert_eq!(u32::from_be_bytes(png[16..20].try_into().unwrap()), 60);
        assert_eq!(u32::from_be_bytes(png[20..24].try_into().unwrap()), 20);
    }
}

/// What [`run_plots`] draws from: a training run's history, its last held-out embeddings and the
/// negative distances its miner sampled in the last epoch.
#[derive(Debug)]
pub(crate) struct RunPlots<'a> {
    /// `run.name`, in every title.
    pub name: &'a str,
    /// The loss's kind.
    pub loss: &'a str,
    /// The miner's kind, if any.
    pub miner: Option<&'a str>,
    /// The metrics history (one record per epoch).
    pub history: &'a [EpochRecord],
    /// The baselines the curves are drawn against.
    pub baselines: Baselines<'a>,
    /// The held-out embeddings and labels of the last evaluation.
    pub test_embeddings: Option<(ArrayView2<'a, f32>, &'a [u32])>,
    /// Distances of the negatives the miner sampled in the last epoch.
    pub negatives: &'a [f32],
    /// The embedding dimension (for the histogram's reference density).
    pub embedding_dim: usize,
    /// The plots folder.
    pub dir: &'a Path,
}

/// The plots of a training run: the training curves, the map of held-out embeddings and the
/// histogram of sampled negative distances (each as SVG and PNG); returns the files written.
pub(crate) fn run_plots(run: &RunPlots<'_>) -> Result<Vec<PathBuf>> {
    let name = run.name;
    let mut out = training_curves(
        run.history,
        run.baselines,
        &format!(
            "{name}: {} loss, {}",
            run.loss,
            match run.miner {
                Some(m) => format!("{m} miner"),
                None => "no miner".to_owned(),
            }
        ),
        &run.dir.join("curves"),
    )?;
    if let Some((x, y)) = run.test_embeddings {
        out.extend(embedding_map(
            x,
            y,
            &format!("{name}: held-out classes"),
            &run.dir.join("embeddings"),
        )?);
    }
    if let (Some(miner), false) = (run.miner, run.negatives.is_empty()) {
        out.extend(distance_histograms(
            &[(miner.to_owned(), run.negatives.to_vec())],
            run.embedding_dim,
            &format!("{name}: sampled negative distances (last epoch)"),
            &run.dir.join("negative_distances"),
        )?);
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// The ROC of a verification.

struct RocChart<'a> {
    points: Vec<(f64, f64)>,
    marks: Vec<(f64, f64, String)>,
    eer: f64,
    far_lo: f64,
    title: &'a str,
    caption: String,
}

impl Drawer for RocChart<'_> {
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> DrawResult {
        root.fill(&WHITE).map_err(e2s)?;
        let root = root.titled(self.title, ("sans-serif", 22)).map_err(e2s)?;
        let (plot, foot) = root.split_vertically(root.dim_in_pixel().1 - 30);
        foot.draw(&Text::new(
            self.caption.clone(),
            (10, 5),
            ("sans-serif", 14).into_font().color(&BLACK.mix(0.7)),
        ))
        .map_err(e2s)?;
        let mut chart = ChartBuilder::on(&plot)
            .margin(16)
            .x_label_area_size(44)
            .y_label_area_size(60)
            .build_cartesian_2d((self.far_lo..1.0f64).log_scale(), 0.0f64..1.0)
            .map_err(e2s)?;
        chart
            .configure_mesh()
            .x_desc("false accept rate (log scale)")
            .y_desc("true accept rate")
            .x_label_formatter(&|v| format!("{v:.0e}"))
            .y_label_formatter(&value_ticks(0.0, 1.0))
            .label_style(("sans-serif", 14))
            .draw()
            .map_err(e2s)?;
        chart
            .draw_series(LineSeries::new(
                self.points.iter().copied(),
                BLUE.stroke_width(2),
            ))
            .map_err(e2s)?
            .label("ROC")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLUE.stroke_width(2)));
        // FAR = FRR, where the ROC meets it: the EER.
        if self.eer > 0.0 {
            chart
                .draw_series(std::iter::once(Circle::new(
                    (self.eer, 1.0 - self.eer),
                    5,
                    RED.filled(),
                )))
                .map_err(e2s)?
                .label(format!("EER {:.4}", self.eer))
                .legend(|(x, y)| Circle::new((x + 10, y), 5, RED.filled()));
        }
        let mut first = true;
        for (far, tar, text) in &self.marks {
            let series = chart
                .draw_series([EmptyElement::at((*far, *tar))
                    + Circle::new((0, 0), 4, BLACK.filled())
                    + Text::new(text.clone(), (6, -16), ("sans-serif", 13))])
                .map_err(e2s)?;
            if first {
                series
                    .label("TAR at a target FAR")
                    .legend(|(x, y)| Circle::new((x + 10, y), 4, BLACK.filled()));
                first = false;
            }
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::LowerRight)
            .background_style(WHITE.mix(0.9))
            .border_style(BLACK.mix(0.4))
            .label_font(("sans-serif", 14))
            .draw()
            .map_err(e2s)?;
        Ok(())
    }
}

/// The ROC of a verification on a log-FAR axis (TAR against FAR from `1/N`, N the negative
/// pairs, to 1), with the TAR at each target FAR that the pairs can resolve and the EER
/// marked; written to `<stem>.png` and `<stem>.svg`.
pub fn roc_curve(
    v: &dml_eval::verification::Verification,
    title: &str,
    stem: &Path,
) -> Result<Vec<PathBuf>> {
    let far_lo = 1.0 / v.n_negative.max(1) as f64;
    // Points at FAR 0 have no place on a log axis: the curve starts at the first FAR ≥ 1/N,
    // beginning at the highest TAR reached with no false accept.
    let all = v.roc.points_for_plot(600);
    let mut points: Vec<(f64, f64)> = Vec::with_capacity(all.len() + 1);
    if let Some(p) = all.iter().rev().find(|p| p.far == 0.0) {
        points.push((far_lo, p.tar));
    }
    points.extend(all.iter().filter(|p| p.far > 0.0).map(|p| (p.far, p.tar)));
    let marks = v
        .tar_at_far
        .iter()
        .filter(|t| t.resolved())
        .map(|t| {
            (
                t.far.max(far_lo),
                t.tar,
                format!("{:.4} @ {:.0e}", t.tar, t.far),
            )
        })
        .collect();
    let caption = format!(
        "{} same-class and {} different-class pairs ({}): AUC {:.4}, EER {:.4}, {}-fold accuracy {:.4} ± {:.4}",
        v.n_positive,
        v.n_negative,
        v.metric.name(),
        v.auc,
        v.eer.rate,
        v.accuracy.folds.len(),
        v.accuracy.mean,
        v.accuracy.std
    );
    render(
        stem,
        (900, 700),
        &RocChart {
            points,
            marks,
            eer: v.eer.rate,
            far_lo,
            title,
            caption,
        },
    )
}
