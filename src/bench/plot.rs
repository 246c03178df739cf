//! `--plot FILE.svg`: end-to-end images/s against batch size (both axes logarithmic), one line per
//! beam count, and the reference's lines (dashed colours of the same beams) when one is given. The
//! x labels are the measured batch sizes; the y axis ends on labelled ticks below the slowest and
//! above the fastest point (`report::chart::log_axis`), both of which are labelled with their value.
//! The chart style is `report::chart`'s (shared with `train`'s loss curve).

use std::path::Path;

use plotters::prelude::*;

use super::document::BenchDocument;
use super::BenchError;
use crate::report::chart::{
    draw_line, finish_chart, label_extremes, log_axis, svg_chart, tick_label, Series, PALETTE,
};

fn series_of(doc: &BenchDocument, dashed: bool) -> Vec<Series> {
    let mut beams: Vec<usize> = doc.records.iter().map(|r| r.num_beams).collect();
    beams.sort_unstable();
    beams.dedup();
    beams
        .into_iter()
        .enumerate()
        .map(|(index, num_beams)| {
            let mut points: Vec<(f64, f64)> = doc
                .records
                .iter()
                .filter(|r| r.num_beams == num_beams && r.images_per_s > 0.0)
                .map(|r| (r.batch_size as f64, r.images_per_s))
                .collect();
            points.sort_by(|a, b| a.0.total_cmp(&b.0));
            let search = if num_beams == 1 {
                "greedy".to_string()
            } else {
                format!("beam {num_beams}")
            };
            Series {
                label: format!("{} {search}", doc.tool),
                points,
                color: PALETTE[index % PALETTE.len()],
                dashed,
                markers: true,
            }
        })
        .collect()
}

/// Renders the chart as an SVG document.
pub fn render_svg(
    current: &BenchDocument,
    reference: Option<&BenchDocument>,
) -> Result<String, String> {
    let mut lines = series_of(current, false);
    if let Some(reference) = reference {
        lines.extend(series_of(reference, true));
    }
    let all: Vec<(f64, f64)> = lines
        .iter()
        .flat_map(|s| s.points.iter().copied())
        .collect();
    if all.is_empty() {
        return Err("no record with a positive images/s to draw".to_string());
    }
    let (mut x_max, mut y_min, mut y_max) = (1.0f64, f64::INFINITY, 0.0f64);
    for &(x, y) in &all {
        x_max = x_max.max(x);
        y_min = y_min.min(y);
        y_max = y_max.max(y);
    }
    // Labels at the measured batch sizes; the y range ends on labelled ticks around every point.
    let mut batch_sizes: Vec<f64> = all.iter().map(|&(x, _)| x).collect();
    batch_sizes.sort_by(f64::total_cmp);
    batch_sizes.dedup();
    let x_range = (0.8f64..x_max * 1.25)
        .log_scale()
        .with_key_points(batch_sizes);
    let y_axis = log_axis(y_min, y_max).ok_or("images/s must be positive")?;
    let y_range = (y_axis.low..y_axis.high)
        .log_scale()
        .with_key_points(y_axis.ticks.clone());
    let title = format!(
        "images/s vs batch size: {}, {}",
        current.environment.device_name, current.environment.precision
    );

    svg_chart((900, 560), |root| {
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 20))
            .margin(16)
            .x_label_area_size(44)
            .y_label_area_size(64)
            .build_cartesian_2d(x_range, y_range)
            .map_err(|e| e.to_string())?;
        chart
            .configure_mesh()
            .x_desc("batch size (images per forward pass)")
            .y_desc("images/s (end to end)")
            .x_label_formatter(&|x| format!("{x:.0}"))
            .y_label_formatter(&|y| tick_label(*y))
            .draw()
            .map_err(|e| e.to_string())?;
        for line in &lines {
            draw_line(&mut chart, line)?;
        }
        label_extremes(&mut chart, &lines, "images/s")?;
        finish_chart(&mut chart, SeriesLabelPosition::UpperLeft)
    })
}

/// Renders and writes the chart to `path` atomically.
pub fn write_svg(
    path: &Path,
    current: &BenchDocument,
    reference: Option<&BenchDocument>,
) -> Result<(), BenchError> {
    let plot_error = |message: String| BenchError::Plot {
        path: path.to_path_buf(),
        message,
    };
    let svg = render_svg(current, reference).map_err(plot_error)?;
    crate::report::write_atomic(path, svg.as_bytes()).map_err(|err| plot_error(err.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::chart::svg_probe::{point_ys, y_labels};

    #[test]
    fn every_point_lies_between_the_lowest_and_highest_label_and_extremes_are_written() {
        let doc: BenchDocument =
            serde_json::from_str(include_str!("../../benches/baselines/h100-base-bf16.json"))
                .unwrap();
        let rates: Vec<f64> = doc
            .records
            .iter()
            .map(|r| r.images_per_s)
            .filter(|&v| v > 0.0)
            .collect();
        let min = rates.iter().copied().fold(f64::INFINITY, f64::min);
        let max = rates.iter().copied().fold(0.0, f64::max);
        let svg = render_svg(&doc, Some(&doc)).unwrap();
        let labels = y_labels(&svg);
        let (top, bottom) = (labels[0], labels[labels.len() - 1]);
        assert!(
            bottom.1 <= min && top.1 >= max,
            "labels {labels:?} around {min}..{max}"
        );
        let ys = point_ys(&svg);
        assert!(ys.len() >= rates.len(), "{} points", ys.len());
        for y in ys {
            assert!(
                y >= top.0 - 0.5 && y <= bottom.0 + 0.5,
                "point at {y} outside {top:?}..{bottom:?}"
            );
        }
        use crate::report::chart::value_label;
        assert!(
            svg.contains(&format!("min {} images/s", value_label(min))),
            "min labelled"
        );
        assert!(
            svg.contains(&format!("max {} images/s", value_label(max))),
            "max labelled"
        );
    }
}
