//! The grid chart of `dml compare`: one row per cell (loss + miner), the mean of a score over
//! seeds with its min–max range, another library's cells in a second colour, the baselines as
//! vertical lines. Drawn with the run plots' machinery ([`crate::plots`]).

use std::path::{Path, PathBuf};

use plotters::coord::Shift;
use plotters::prelude::*;

use super::{CompareReport, Spread};
use crate::Result;
use crate::plots::{DrawResult, Drawer, WIDTH, e2s, padded_range, render, value_ticks};

/// Empty rows below a grid chart's cells, where its legend goes, so that it covers no cell.
const LEGEND_ROWS: f64 = 3.0;

struct GridChart<'a> {
    report: &'a CompareReport,
    score: dml_eval::Score,
    title: &'a str,
}

impl Drawer for GridChart<'_> {
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> DrawResult {
        root.fill(&WHITE).map_err(e2s)?;
        let root = root.titled(self.title, ("sans-serif", 22)).map_err(e2s)?;
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
        let raw = self
            .report
            .raw_input
            .as_ref()
            .and_then(|r| r.metrics.as_ref()?.get(self.score));
        let untrained = self.report.untrained_spread(self.score);
        let frozen = self
            .report
            .frozen_backbone
            .as_ref()
            .and_then(|m| m.get(self.score));
        let values = cells
            .iter()
            .filter_map(|(_, s)| *s)
            .flat_map(|s| [s.min, s.max])
            .chain(raw)
            .chain(frozen)
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
            .build_cartesian_2d(lo..hi, -0.5 - LEGEND_ROWS..n as f64 - 0.5)
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
            .y_labels(n + LEGEND_ROWS as usize)
            .y_label_formatter(&row_label)
            .disable_y_mesh()
            .label_style(("sans-serif", 14))
            .draw()
            .map_err(e2s)?;
        let y_span = (-0.5 - LEGEND_ROWS, n as f64 - 0.5);
        if let Some(r) = raw {
            chart
                .draw_series(DashedLineSeries::new(
                    [(r, y_span.0), (r, y_span.1)],
                    8,
                    5,
                    RED.stroke_width(2),
                ))
                .map_err(e2s)?
                .label(format!("raw input ({r:.3})"))
                .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], RED.stroke_width(2)));
        }
        if let Some(f) = frozen {
            let green = RGBColor(0, 140, 60);
            chart
                .draw_series(DashedLineSeries::new(
                    [(f, y_span.0), (f, y_span.1)],
                    12,
                    4,
                    green.stroke_width(2),
                ))
                .map_err(e2s)?
                .label(format!("frozen backbone ({f:.3})"))
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 18, y)], green.stroke_width(2))
                });
        }
        if let Some(u) = untrained {
            chart
                .draw_series(DashedLineSeries::new(
                    [(u.mean, y_span.0), (u.mean, y_span.1)],
                    3,
                    4,
                    BLACK.stroke_width(2),
                ))
                .map_err(e2s)?
                .label(format!("untrained network ({:.3})", u.mean))
                .legend(|(x, y)| {
                    PathElement::new(vec![(x, y), (x + 18, y)], BLACK.stroke_width(2))
                });
        }
        let groups = [
            (0..n_own, BLUE, "dml".to_owned()),
            (
                n_own..cells.len(),
                MAGENTA,
                reference.map_or_else(String::new, |r| r.library.clone()),
            ),
        ];
        for (range, colour, library) in groups {
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
                .map_err(e2s)?
                .label(format!("{library}, trained: mean, min–max over seeds"))
                .legend(move |(x, y)| Circle::new((x + 9, y), 4, colour.filled()));
            chart
                .draw_series(
                    rows().map(|(i, s)| Circle::new((s.mean, i as f64), 4, colour.filled())),
                )
                .map_err(e2s)?;
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::LowerRight)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK.mix(0.4))
            .label_font(("sans-serif", 13))
            .draw()
            .map_err(e2s)?;
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
    let height = 110 + 34 * (rows.max(1) + LEGEND_ROWS as usize) as u32;
    render(
        stem,
        (WIDTH, height.max(320)),
        &GridChart {
            report,
            score,
            title,
        },
    )
}
