//! The grid chart of `dml compare`: one row per cell (loss + miner), the mean of a score over
//! seeds with its min–max range, another library's cells in a second colour, the baselines as
//! vertical lines. Drawn with the run plots' machinery ([`crate::plots`]).

use std::path::{Path, PathBuf};

use plotters::coord::Shift;
use plotters::element::DashedPathElement;
use plotters::prelude::*;

use super::{CompareReport, Spread};
use crate::Result;
use crate::plots::{DrawResult, Drawer, WIDTH, e2s, padded_range, render, value_ticks};

/// Height of one line of the legend, which is drawn below the chart (so it covers no cell and
/// takes no rows of it).
const LEGEND_LINE: u32 = 24;
/// The legend's lines: each entry is about this wide per character of its label, plus its mark.
const LEGEND_CHAR: u32 = 7;
const LEGEND_MARK: u32 = 40;

/// A baseline's dashed line: colour, dash and gap in pixels.
#[derive(Clone, Copy)]
struct Dash(RGBColor, u32, u32);

/// The baselines' lines: raw input, frozen backbone, untrained network.
const RAW_LINE: Dash = Dash(RED, 8, 5);
const FROZEN_LINE: Dash = Dash(GREEN_LINE, 12, 4);
const UNTRAINED_LINE: Dash = Dash(BLACK, 3, 4);

/// How a legend entry is marked: a baseline's line, as on the chart, or a dot (trained cells).
#[derive(Clone, Copy)]
enum Mark {
    Line(Dash),
    Dot(RGBColor),
}

/// The legend's entries laid out in lines of at most `width` pixels: `(line, x)` of each.
fn legend_layout(labels: &[String], width: u32) -> Vec<(u32, u32)> {
    let (mut line, mut x) = (0, 0);
    labels
        .iter()
        .map(|l| {
            let w = LEGEND_MARK + LEGEND_CHAR * l.chars().count() as u32 + 24;
            if x > 0 && x + w > width {
                (line, x) = (line + 1, 0);
            }
            let at = (line, x);
            x += w;
            at
        })
        .collect()
}

/// The baselines of `report` present for `score`, as the chart draws them: each one's legend
/// label, value (a vertical line there) and line.
fn baselines(report: &CompareReport, score: dml_eval::Score) -> Vec<(String, f64, Dash)> {
    let raw = report
        .raw_input
        .as_ref()
        .and_then(|r| r.metrics.as_ref()?.get(score));
    let frozen = report.frozen_backbone.as_ref().and_then(|m| m.get(score));
    let untrained = report.untrained_spread(score).map(|u| u.mean);
    [
        ("raw input", raw, RAW_LINE),
        ("frozen backbone", frozen, FROZEN_LINE),
        ("untrained network", untrained, UNTRAINED_LINE),
    ]
    .into_iter()
    .filter_map(|(name, v, mark)| Some((format!("{name} ({:.3})", v?), v?, mark)))
    .collect()
}

/// A grid chart's legend: its entries (the baselines present, then the trained cells of each
/// library) and where each goes in the strip below the chart, at the chart's width.
struct Legend {
    entries: Vec<(String, Mark)>,
    at: Vec<(u32, u32)>,
}

impl Legend {
    fn new(report: &CompareReport, score: dml_eval::Score) -> Legend {
        let mut entries: Vec<(String, Mark)> = baselines(report, score)
            .into_iter()
            .map(|(label, _, dash)| (label, Mark::Line(dash)))
            .collect();
        if !report.cells.is_empty() {
            entries.push((
                "dml, trained: mean, min–max over seeds".to_owned(),
                Mark::Dot(BLUE),
            ));
        }
        if let Some(r) = report.reference.as_ref().filter(|r| !r.cells.is_empty()) {
            entries.push((
                format!("{}, trained: mean, min–max over seeds", r.library),
                Mark::Dot(MAGENTA),
            ));
        }
        let labels: Vec<String> = entries.iter().map(|(l, _)| l.clone()).collect();
        let at = legend_layout(&labels, WIDTH - 60);
        Legend { entries, at }
    }

    /// Height of the strip it takes below the chart.
    fn height(&self) -> u32 {
        let lines = self.at.last().map_or(0, |&(line, _)| line + 1);
        LEGEND_LINE * lines + 8
    }
}

/// The frozen backbone's line colour.
const GREEN_LINE: RGBColor = RGBColor(0, 140, 60);

struct GridChart<'a> {
    report: &'a CompareReport,
    score: dml_eval::Score,
    title: &'a str,
    legend: Legend,
}

impl Drawer for GridChart<'_> {
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> DrawResult {
        root.fill(&WHITE).map_err(e2s)?;
        let root = root.titled(self.title, ("sans-serif", 22)).map_err(e2s)?;
        let height = root.dim_in_pixel().1;
        let (root, strip) = root.split_vertically(height.saturating_sub(self.legend.height()));
        // dml's cells, then the reference library's (drawn in a second colour).
        let reference = self.report.reference.as_ref();
        let n_own = self.report.cells.len();
        let cells: Vec<(String, Option<Spread>)> = self
            .report
            .cells
            .iter()
            .map(|c| (format!("{} + {}", c.loss, c.miner), c.spread(self.score)))
            .chain(reference.into_iter().flat_map(|r| {
                r.cells.iter().map(|c| {
                    (
                        format!("{} + {} ({})", c.loss, c.miner, r.library),
                        c.spread(self.score),
                    )
                })
            }))
            .collect();
        let baselines = baselines(self.report, self.score);
        let untrained = self.report.untrained_spread(self.score);
        let values = cells
            .iter()
            .filter_map(|(_, s)| *s)
            .flat_map(|s| [s.min, s.max])
            .chain(baselines.iter().map(|&(_, v, _)| v))
            .chain(untrained.iter().flat_map(|s| [s.min, s.max]));
        let (lo, hi) = match padded_range(values, f64::NAN) {
            (lo, hi) if lo.is_finite() && hi.is_finite() => (lo, hi),
            _ => (0.0, 1.0),
        };
        let n = cells.len().max(1);
        let mut chart = ChartBuilder::on(&root)
            .margin(14)
            .x_label_area_size(40)
            .y_label_area_size(230)
            .build_cartesian_2d(lo..hi, -0.5..n as f64 - 0.5)
            .map_err(e2s)?;
        let names: Vec<String> = cells.iter().map(|(name, _)| name.clone()).collect();
        let row_label = move |y: &f64| {
            let i = y.round();
            if (y - i).abs() < 1e-9 && i >= 0.0 {
                names.get(i as usize).cloned().unwrap_or_default()
            } else {
                String::new()
            }
        };
        chart
            .configure_mesh()
            .x_desc(self.score.label())
            .x_label_formatter(&value_ticks(lo, hi))
            .y_labels(n)
            .y_label_formatter(&row_label)
            .disable_y_mesh()
            .label_style(("sans-serif", 14))
            .draw()
            .map_err(e2s)?;
        let y_span = (-0.5, n as f64 - 0.5);
        for &(_, x, Dash(colour, dash, gap)) in &baselines {
            chart
                .draw_series(DashedLineSeries::new(
                    [(x, y_span.0), (x, y_span.1)],
                    dash,
                    gap,
                    colour.stroke_width(2),
                ))
                .map_err(e2s)?;
        }
        let groups = [(0..n_own, BLUE), (n_own..cells.len(), MAGENTA)];
        for (range, colour) in groups {
            if range.is_empty() {
                continue;
            }
            let rows = || {
                cells
                    .iter()
                    .enumerate()
                    .skip(range.start)
                    .take(range.len())
                    .filter_map(|(i, (_, s))| Some((i, (*s)?)))
            };
            chart
                .draw_series(rows().map(|(i, s)| {
                    ErrorBar::new_horizontal(
                        i as f64,
                        s.min,
                        s.mean,
                        s.max,
                        colour.stroke_width(2),
                        10,
                    )
                }))
                .map_err(e2s)?;
            chart
                .draw_series(
                    rows().map(|(i, s)| Circle::new((s.mean, i as f64), 4, colour.filled())),
                )
                .map_err(e2s)?;
        }
        // The legend, in the strip below the chart.
        for ((label, mark), &(line, x)) in self.legend.entries.iter().zip(&self.legend.at) {
            let (x, y) = (30 + x as i32, (LEGEND_LINE * line + LEGEND_LINE / 2) as i32);
            match *mark {
                Mark::Line(Dash(c, dash, gap)) => strip
                    .draw(&DashedPathElement::new(
                        vec![(x, y), (x + 28, y)],
                        dash,
                        gap,
                        c.stroke_width(2),
                    ))
                    .map_err(e2s)?,
                Mark::Dot(c) => strip
                    .draw(&Circle::new((x + 14, y), 4, c.filled()))
                    .map_err(e2s)?,
            }
            strip
                .draw(&Text::new(
                    label.clone(),
                    (x + LEGEND_MARK as i32 - 4, y - 7),
                    ("sans-serif", 13),
                ))
                .map_err(e2s)?;
        }
        Ok(())
    }
}

/// One row per cell of a `dml compare` grid: the mean of `score` over seeds with its min–max
/// range as an error bar, and the two baselines (raw input, untrained network) as vertical
/// lines. Written to `<stem>.png` and `<stem>.svg`.
pub(crate) fn compare_chart(
    report: &CompareReport,
    score: dml_eval::Score,
    title: &str,
    stem: &Path,
) -> Result<Vec<PathBuf>> {
    let rows = report.cells.len() + report.reference.as_ref().map_or(0, |r| r.cells.len());
    let legend = Legend::new(report, score);
    let height = 110 + 34 * rows.max(1) as u32 + legend.height();
    render(
        stem,
        (WIDTH, height.max(320)),
        &GridChart {
            report,
            score,
            title,
            legend,
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Entries go left to right and wrap to a new line when the next would pass the width; an
    /// entry wider than the width still starts a line of its own.
    #[test]
    fn legend_entries_wrap_at_the_width() {
        // Each entry: 40 + 7 per character + 24 pixels; "x" × 10 is 134 wide.
        let ten = "x".repeat(10);
        let labels = vec![ten.clone(), ten.clone(), ten.clone(), "y".repeat(100), ten];
        assert_eq!(
            legend_layout(&labels, 300),
            [(0, 0), (0, 134), (1, 0), (2, 0), (3, 0)]
        );
        assert_eq!(legend_layout(&labels[..2], 268), [(0, 0), (0, 134)]);
        assert!(legend_layout(&[], 300).is_empty());
    }
}
