//! SVG charts of per-epoch metrics: `curves.svg` of one training run ([`write_curves`]) and a comparison of
//! several runs ([`write_comparison`]). Each chart has two panels side by side: loss on the left, top-1
//! accuracy in percent on the right.

use std::path::Path;

use anyhow::{anyhow, bail, Result};
use plotters::coord::Shift;
use plotters::prelude::*;
use rl_passes::io::write_atomically;

use super::metrics::EpochMetrics;

const CHART_SIZE: (u32, u32) = (1000, 400);
const FONT: &str = "sans-serif";
const TRAIN_COLOR: RGBColor = RGBColor(31, 119, 180);
const TEST_COLOR: RGBColor = RGBColor(214, 39, 40);
/// One colour per run in a comparison (the first colours of matplotlib's "tab10", then repeated).
const RUN_COLORS: [RGBColor; 6] = [
    RGBColor(31, 119, 180),
    RGBColor(214, 39, 40),
    RGBColor(44, 160, 44),
    RGBColor(255, 127, 14),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
];
/// Up to this many points a series gets a marker at every epoch; beyond, markers would merge into a thick
/// line. A short run (one epoch in particular, which has no line at all) stays visible.
const MARKER_MAX_POINTS: usize = 60;
const MARKER_RADIUS: i32 = 3;
/// Where the margin around the data stops: a loss axis need not dip below 0 nor an accuracy axis pass 100%.
const LOSS_BOUNDS: (f64, f64) = (0.0, f64::INFINITY);
const ACCURACY_BOUNDS: (f64, f64) = (0.0, 100.0);

/// "resnet20.onnx — BP" or "resnet20.onnx — every 2": the model's file name and how it is trained
/// (`every`: [`super::TrainRequest::every`]).
pub fn curves_title(model: &Path, every: Option<usize>) -> String {
    let run = every.map_or("BP".to_owned(), |k| format!("every {k}"));
    format!(
        "{} — {run}",
        model.file_name().unwrap_or_default().display()
    )
}

/// Writes `path`: train and test loss (left) and train and test top-1 accuracy in percent (right) per epoch.
pub fn write_curves(path: &Path, title: &str, rows: &[EpochMetrics]) -> Result<()> {
    if rows.is_empty() {
        bail!("{}: no epochs to plot", path.display());
    }
    let loss = Panel {
        y_desc: "loss",
        legend_at: SeriesLabelPosition::UpperRight,
        bounds: LOSS_BOUNDS,
        series: vec![
            Series::solid("train", TRAIN_COLOR, points(rows, |r| r.train_loss)),
            Series::solid("test", TEST_COLOR, points(rows, |r| r.test_loss)),
        ],
    };
    let accuracy = Panel {
        y_desc: "accuracy (%)",
        legend_at: SeriesLabelPosition::LowerRight,
        bounds: ACCURACY_BOUNDS,
        series: vec![
            Series::solid("train", TRAIN_COLOR, points(rows, |r| 100.0 * r.train_acc)),
            Series::solid("test", TEST_COLOR, points(rows, |r| 100.0 * r.test_acc)),
        ],
    };
    write_chart(path, title, &[loss, accuracy])
}

/// Writes `path` comparing `runs` (name, rows): train loss (dashed) and test loss (solid) on the left, test
/// top-1 accuracy in percent on the right, one colour per run.
pub fn write_comparison(path: &Path, title: &str, runs: &[(&str, &[EpochMetrics])]) -> Result<()> {
    if runs.is_empty() {
        bail!("{}: no runs to compare", path.display());
    }
    if let Some((name, _)) = runs.iter().find(|(_, rows)| rows.is_empty()) {
        bail!("{}: run '{name}' has no epochs to plot", path.display());
    }
    let mut loss_series = Vec::new();
    let mut accuracy_series = Vec::new();
    for (i, (name, rows)) in runs.iter().enumerate() {
        let color = RUN_COLORS[i % RUN_COLORS.len()];
        loss_series.push(Series::dashed(
            &format!("{name} train"),
            color,
            points(rows, |r| r.train_loss),
        ));
        loss_series.push(Series::solid(
            &format!("{name} test"),
            color,
            points(rows, |r| r.test_loss),
        ));
        accuracy_series.push(Series::solid(
            &format!("{name} test"),
            color,
            points(rows, |r| 100.0 * r.test_acc),
        ));
    }
    let loss = Panel {
        y_desc: "loss",
        legend_at: SeriesLabelPosition::UpperRight,
        bounds: LOSS_BOUNDS,
        series: loss_series,
    };
    let accuracy = Panel {
        y_desc: "test accuracy (%)",
        legend_at: SeriesLabelPosition::LowerRight,
        bounds: ACCURACY_BOUNDS,
        series: accuracy_series,
    };
    write_chart(path, title, &[loss, accuracy])
}

struct Series {
    label: String,
    color: RGBColor,
    dashed: bool,
    /// (epoch, value), finite values only.
    points: Vec<(i64, f64)>,
}

impl Series {
    fn solid(label: &str, color: RGBColor, points: Vec<(i64, f64)>) -> Self {
        Series {
            label: label.to_owned(),
            color,
            dashed: false,
            points,
        }
    }

    fn dashed(label: &str, color: RGBColor, points: Vec<(i64, f64)>) -> Self {
        Series {
            dashed: true,
            ..Series::solid(label, color, points)
        }
    }
}

struct Panel {
    y_desc: &'static str,
    legend_at: SeriesLabelPosition,
    bounds: (f64, f64),
    series: Vec<Series>,
}

/// (epoch, value) of every row whose value is finite: a NaN or infinite value (a diverged step) would
/// otherwise stretch or break the axis range, so it is left out and the line joins its neighbours.
fn points(rows: &[EpochMetrics], value: impl Fn(&EpochMetrics) -> f64) -> Vec<(i64, f64)> {
    rows.iter()
        .map(|r| (r.epoch as i64, value(r)))
        .filter(|(_, v)| v.is_finite())
        .collect()
}

/// Epochs from one before the first to one after the last: a margin of a whole epoch keeps the end markers
/// off the axes and gives a single epoch a range to sit in.
fn epoch_range(panels: &[Panel]) -> (i64, i64) {
    let epochs = panels
        .iter()
        .flat_map(|p| &p.series)
        .flat_map(|s| s.points.iter().map(|&(e, _)| e));
    let (first, last) = epochs.fold((i64::MAX, i64::MIN), |(lo, hi), e| (lo.min(e), hi.max(e)));
    if first > last {
        return (0, 2); // no finite value at all: an empty but valid frame
    }
    (first - 1, last + 1)
}

/// The value range of `series` with a margin of 8% each side, the margin cut at `bounds` (a loss axis need
/// not dip below 0 nor accuracy pass 100%). Fitted to the data rather than starting at zero so that close
/// values (98.5% against 98.7%) stay apart.
fn value_range(series: &[Series], (lower_bound, upper_bound): (f64, f64)) -> (f64, f64) {
    let values = series.iter().flat_map(|s| s.points.iter().map(|&(_, v)| v));
    let (min, max) = values.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
        (lo.min(v), hi.max(v))
    });
    if min > max {
        return (0.0, 1.0); // no finite value at all: an empty but valid frame
    }
    let span = max - min;
    // A flat series (one epoch, or a constant) still needs a non-empty range around its value.
    let margin = if span > 0.0 {
        0.08 * span
    } else if min != 0.0 {
        0.05 * min.abs()
    } else {
        1.0
    };
    // Only the margin is cut: data outside the bounds (a loss that can go negative) stays in view.
    let lo = if min >= lower_bound {
        (min - margin).max(lower_bound)
    } else {
        min - margin
    };
    let hi = if max <= upper_bound {
        (max + margin).min(upper_bound)
    } else {
        max + margin
    };
    // A diverging run's last finite loss can be near f64::MAX, where the margin overflows.
    let (lo, hi) = (lo.max(f64::MIN), hi.min(f64::MAX));
    if lo < hi {
        (lo, hi)
    } else {
        (min - 1.0, max + 1.0) // a margin lost to rounding
    }
}

fn write_chart(path: &Path, title: &str, panels: &[Panel]) -> Result<()> {
    let svg = render(title, panels)
        .map_err(|e| anyhow!("{}: cannot draw the chart: {e}", path.display()))?;
    write_atomically(path, false, |w| w.write_all(svg.as_bytes()))?;
    Ok(())
}

fn render(title: &str, panels: &[Panel]) -> Result<String, DrawingAreaErrorKind<std::io::Error>> {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, CHART_SIZE).into_drawing_area();
        root.fill(&WHITE)?;
        let body = root.titled(title, (FONT, 20))?;
        let epochs = epoch_range(panels);
        for (area, panel) in body.split_evenly((1, panels.len())).iter().zip(panels) {
            draw_panel(area, epochs, panel)?;
        }
        root.present()?;
    } // the backend writes the closing tag into `svg` when dropped
    Ok(svg)
}

fn draw_panel(
    area: &DrawingArea<SVGBackend, Shift>,
    (first_epoch, last_epoch): (i64, i64),
    panel: &Panel,
) -> Result<(), DrawingAreaErrorKind<std::io::Error>> {
    let (lo, hi) = value_range(&panel.series, panel.bounds);
    let mut chart = ChartBuilder::on(area)
        .margin(10)
        .margin_right(25) // room for the last epoch's label, centred on the right edge
        .x_label_area_size(35)
        .y_label_area_size(55)
        .build_cartesian_2d(first_epoch..last_epoch, lo..hi)?;
    chart
        .configure_mesh()
        .x_desc("epoch")
        .y_desc(panel.y_desc)
        .light_line_style(BLACK.mix(0.05))
        .draw()?;
    for series in &panel.series {
        let line_style = series.color.stroke_width(2);
        let drawn = if series.dashed {
            chart.draw_series(DashedLineSeries::new(
                series.points.iter().copied(),
                6,
                4,
                line_style,
            ))?
        } else {
            chart.draw_series(LineSeries::new(series.points.iter().copied(), line_style))?
        };
        let legend = drawn.label(&series.label);
        if series.dashed {
            // Two dashes, so the legend shows the line style too.
            legend.legend(move |(x, y)| {
                EmptyElement::at((x, y))
                    + PathElement::new(vec![(0, 0), (7, 0)], line_style)
                    + PathElement::new(vec![(12, 0), (19, 0)], line_style)
            });
        } else {
            legend.legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 19, y)], line_style));
        }
        if series.points.len() <= MARKER_MAX_POINTS {
            // Dashed (train) series get hollow markers, solid ones filled: train and test of one run stay
            // apart where a line is too short to show its dashes.
            let marker_style = if series.dashed {
                series.color.stroke_width(2)
            } else {
                series.color.filled()
            };
            chart.draw_series(
                series
                    .points
                    .iter()
                    .map(|&point| Circle::new(point, MARKER_RADIUS, marker_style)),
            )?;
        }
    }
    chart
        .configure_series_labels()
        .position(panel.legend_at.clone())
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK.mix(0.3))
        .label_font((FONT, 13))
        .draw()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(epoch: usize, train_loss: f64, test_acc: f64) -> EpochMetrics {
        EpochMetrics {
            epoch,
            train_loss,
            train_acc: test_acc - 0.01,
            test_loss: train_loss * 1.1,
            test_acc,
            lr: 0.1,
            epoch_time_s: 1.0,
            images_per_s: 1000.0,
            peak_host_mib: 100.0,
            peak_device_mib: None,
        }
    }

    fn three_epochs() -> Vec<EpochMetrics> {
        vec![row(1, 0.9, 0.80), row(2, 0.5, 0.90), row(3, 0.3, 0.95)]
    }

    /// Checks that every opened element is closed in order (enough of XML to catch a truncated or garbled
    /// file) and returns the element names in document order.
    fn elements(svg: &str) -> Vec<String> {
        let mut names = Vec::new();
        let mut open: Vec<String> = Vec::new();
        let mut rest = svg;
        while let Some(start) = rest.find('<') {
            let end = rest[start..].find('>').expect("unterminated tag") + start;
            let tag = &rest[start + 1..end];
            rest = &rest[end + 1..];
            if tag.starts_with('?') || tag.starts_with('!') {
                continue;
            }
            if let Some(closing) = tag.strip_prefix('/') {
                assert_eq!(
                    open.pop().as_deref(),
                    Some(closing.trim()),
                    "mismatched </{closing}>"
                );
                continue;
            }
            let name = tag.split_whitespace().next().unwrap().trim_end_matches('/');
            names.push(name.to_owned());
            if !tag.ends_with('/') {
                open.push(name.to_owned());
            }
        }
        assert!(open.is_empty(), "unclosed elements: {open:?}");
        names
    }

    /// The `<polyline>` elements drawn in `color` (the grid and axes are black).
    fn polylines_in(svg: &str, color: RGBColor) -> usize {
        let stroke = format!("stroke=\"#{:02X}{:02X}{:02X}\"", color.0, color.1, color.2);
        svg.split("<polyline")
            .skip(1)
            .filter(|element| element[..element.find("/>").unwrap()].contains(&stroke))
            .count()
    }

    /// The text of every `<text>` element.
    fn texts(svg: &str) -> Vec<&str> {
        svg.split("<text")
            .skip(1)
            .map(|t| t[t.find('>').unwrap() + 1..t.find("</text>").unwrap()].trim())
            .collect()
    }

    fn write_and_read(write: impl FnOnce(&Path) -> Result<()>) -> String {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("chart.svg");
        write(&path).unwrap();
        std::fs::read_to_string(&path).unwrap()
    }

    #[test]
    fn curves_have_title_axes_legends_and_four_lines() {
        let svg = write_and_read(|p| write_curves(p, "net.onnx — BP", &three_epochs()));
        let names = elements(&svg);
        assert_eq!(names.first().map(String::as_str), Some("svg"));
        let texts = texts(&svg);
        for expected in ["net.onnx — BP", "loss", "accuracy (%)", "epoch"] {
            assert!(
                texts.contains(&expected),
                "no text '{expected}' in {texts:?}"
            );
        }
        // Each panel's legend names train and test.
        assert_eq!(texts.iter().filter(|t| **t == "train").count(), 2);
        assert_eq!(texts.iter().filter(|t| **t == "test").count(), 2);
        // Per colour: the loss line, the accuracy line and their two legend samples.
        assert_eq!(polylines_in(&svg, TRAIN_COLOR), 4);
        assert_eq!(polylines_in(&svg, TEST_COLOR), 4);
        // A marker per epoch on each of the four lines.
        assert_eq!(names.iter().filter(|n| *n == "circle").count(), 4 * 3);
    }

    #[test]
    fn title_names_model_file_and_training() {
        let model = Path::new("models/resnet20.onnx");
        assert_eq!(curves_title(model, None), "resnet20.onnx — BP");
        assert_eq!(curves_title(model, Some(2)), "resnet20.onnx — every 2");
    }

    #[test]
    fn accuracy_axis_fits_close_values() {
        let rows = [row(1, 0.1, 0.985), row(2, 0.1, 0.987)];
        let points = points(&rows, |r| 100.0 * r.test_acc);
        let (lo, hi) = value_range(
            &[Series::solid("test", TEST_COLOR, points)],
            ACCURACY_BOUNDS,
        );
        assert!(lo > 98.0 && hi < 99.0, "range {lo}..{hi}");
        assert!(lo < 98.5 && hi > 98.7, "range {lo}..{hi}");
    }

    #[test]
    fn value_range_keeps_out_of_bounds_data_in_view() {
        let negative = Series::solid("x", TEST_COLOR, vec![(1, -1.0), (2, -0.5)]);
        let (lo, hi) = value_range(&[negative], LOSS_BOUNDS);
        assert!(lo < -1.0 && hi > -0.5, "range {lo}..{hi}");
        let near_zero = Series::solid("x", TEST_COLOR, vec![(1, 0.01), (2, 1.0)]);
        assert_eq!(value_range(&[near_zero], LOSS_BOUNDS).0, 0.0);
        let huge = Series::solid("x", TEST_COLOR, vec![(1, f64::MAX)]);
        let (lo, hi) = value_range(&[huge], LOSS_BOUNDS);
        assert!(lo < hi && hi.is_finite(), "range {lo}..{hi}");
        let mut rows = three_epochs();
        rows[2].train_loss = f64::MAX;
        elements(&write_and_read(|p| write_curves(p, "diverging", &rows)));
    }

    #[test]
    fn one_epoch_draws_markers() {
        let svg = write_and_read(|p| write_curves(p, "one", &[row(1, 0.5, 1.0)]));
        elements(&svg);
        assert_eq!(svg.matches("<circle").count(), 4);
        // 100% accuracy sits on the upper bound; the range still has a width.
        let only = vec![(1, 100.0)];
        let (lo, hi) = value_range(&[Series::solid("x", TEST_COLOR, only)], ACCURACY_BOUNDS);
        assert!(lo < 100.0 && hi <= 100.0, "range {lo}..{hi}");
        assert_eq!(epoch_range(&[]), (0, 2));
    }

    #[test]
    fn no_epochs_is_an_error_naming_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("curves.svg");
        let message = write_curves(&path, "t", &[]).unwrap_err().to_string();
        assert!(message.contains(&path.display().to_string()), "{message}");
        let message = write_comparison(&path, "t", &[]).unwrap_err().to_string();
        assert!(message.contains(&path.display().to_string()), "{message}");
        let rows = three_epochs();
        let message = write_comparison(&path, "t", &[("BP", &rows), ("RepL every 2", &[])])
            .unwrap_err()
            .to_string();
        assert!(message.contains(&path.display().to_string()), "{message}");
        assert!(message.contains("RepL every 2"), "{message}");
        assert!(!path.exists());
    }

    #[test]
    fn non_finite_values_are_left_out() {
        let mut rows = three_epochs();
        rows[1].train_loss = f64::NAN;
        rows[2].test_loss = f64::INFINITY;
        rows[0].test_acc = f64::NAN;
        let svg = write_and_read(|p| write_curves(p, "nan", &rows));
        elements(&svg);
        assert!(!svg.contains("NaN") && !svg.contains("inf"), "{svg}");
        // A marker per finite value: train loss 2, train accuracy 3, test loss 2, test accuracy 2.
        assert_eq!(svg.matches("<circle").count(), 9);
        // All values missing: an empty frame, still no panic.
        for r in &mut rows {
            (r.train_loss, r.train_acc) = (f64::NAN, f64::NAN);
            (r.test_loss, r.test_acc) = (f64::NAN, f64::NAN);
        }
        elements(&write_and_read(|p| write_curves(p, "all nan", &rows)));
    }

    #[test]
    fn comparison_names_each_run_and_gives_it_one_colour() {
        let bp = three_epochs();
        let every = vec![row(1, 1.0, 0.78), row(2, 0.6, 0.88)];
        let runs: [(&str, &[EpochMetrics]); 2] = [("BP", &bp), ("RepL every 2", &every)];
        let svg = write_and_read(|p| write_comparison(p, "BP vs RepL", &runs));
        elements(&svg);
        let texts = texts(&svg);
        for expected in [
            "BP vs RepL",
            "BP train",
            "BP test",
            "RepL every 2 train",
            "RepL every 2 test",
        ] {
            assert!(
                texts.contains(&expected),
                "no text '{expected}' in {texts:?}"
            );
        }
        // In each run's colour: test loss, test accuracy and their legend samples (4), the dashed train
        // loss's legend sample (2 dashes) and the train loss itself, drawn dash by dash (many).
        for (name, color) in [("BP", RUN_COLORS[0]), ("RepL every 2", RUN_COLORS[1])] {
            let lines = polylines_in(&svg, color);
            assert!(lines > 4 + 2 + 3, "{name}: {lines} lines");
        }
        assert_eq!(
            polylines_in(&svg, RUN_COLORS[2]),
            0,
            "two runs, two colours"
        );
        // Markers: BP 3 epochs × 3 series, the other run 2 × 3.
        assert_eq!(svg.matches("<circle").count(), 9 + 6);
    }
}
