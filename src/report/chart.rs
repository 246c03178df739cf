//! The chart style of every SVG plot (`bench --plot`, `train --plot`): [`PALETTE`], [`Series`],
//! [`svg_chart`] (a white canvas rendered to a string), [`draw_line`] and [`finish_chart`] (the legend),
//! [`log_axis`] (a logarithmic axis whose both ends are labelled ticks around the data, so no point
//! lies below the lowest label or above the highest) and [`label_extremes`] (the lowest and highest
//! point of a chart written beside it).

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

/// One line of a chart.
pub struct Series {
    pub label: String,
    pub points: Vec<(f64, f64)>,
    pub color: RGBColor,
    pub dashed: bool,
    /// A dot on every point (for short series).
    pub markers: bool,
}

/// Line colours, in order.
pub const PALETTE: [RGBColor; 6] = [
    RGBColor(31, 119, 180),
    RGBColor(214, 39, 40),
    RGBColor(44, 160, 44),
    RGBColor(148, 103, 189),
    RGBColor(255, 127, 14),
    RGBColor(140, 86, 75),
];

/// Renders a chart of `size` pixels into an SVG string: a white canvas handed to `draw`.
pub fn svg_chart(
    size: (u32, u32),
    draw: impl FnOnce(DrawingArea<SVGBackend<'_>, Shift>) -> Result<(), String>,
) -> Result<String, String> {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, size).into_drawing_area();
        root.fill(&WHITE).map_err(|e| e.to_string())?;
        draw(root.clone())?;
        root.present().map_err(|e| e.to_string())?;
    }
    Ok(svg)
}

/// Draws one series (solid or dashed, 2 px, with its legend entry and optional point markers).
pub fn draw_line<X, Y>(
    chart: &mut ChartContext<'_, SVGBackend<'_>, Cartesian2d<X, Y>>,
    line: &Series,
) -> Result<(), String>
where
    X: Ranged<ValueType = f64>,
    Y: Ranged<ValueType = f64>,
{
    let color = line.color;
    let style = color.stroke_width(2);
    let drawn = if line.dashed {
        chart.draw_series(DashedLineSeries::new(line.points.clone(), 8, 5, style))
    } else {
        chart.draw_series(LineSeries::new(line.points.clone(), style))
    }
    .map_err(|e| e.to_string())?;
    let dashed = line.dashed;
    drawn.label(line.label.clone()).legend(move |(x, y)| {
        let end = if dashed { x + 10 } else { x + 20 };
        PathElement::new(vec![(x, y), (end, y)], color.stroke_width(2))
    });
    if line.markers {
        chart
            .draw_series(
                line.points
                    .iter()
                    .map(|&point| Circle::new(point, 4, color.filled())),
            )
            .map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// Draws the legend box at `position`.
pub fn finish_chart<'a, X, Y>(
    chart: &mut ChartContext<'a, SVGBackend<'a>, Cartesian2d<X, Y>>,
    position: SeriesLabelPosition,
) -> Result<(), String>
where
    X: Ranged<ValueType = f64>,
    Y: Ranged<ValueType = f64>,
{
    chart
        .configure_series_labels()
        .position(position)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(|e| e.to_string())
}

/// A logarithmic axis: its range and its labelled ticks. Both ends of the range are ticks.
#[derive(Debug, Clone, PartialEq)]
pub struct LogAxis {
    pub low: f64,
    pub high: f64,
    pub ticks: Vec<f64>,
}

/// Mantissas of the ticks: 1-2-5 per decade, or every integer when that gives too few labels.
const COARSE: [f64; 3] = [1.0, 2.0, 5.0];
const FINE: [f64; 9] = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0];
/// Fewer labelled ticks than this and the axis takes the finer mantissas.
const MIN_TICKS: usize = 4;

/// The log axis for data in `[min, max]` (both > 0): from the largest tick at or below `min` to the
/// smallest tick at or above `max`, ticks at 1-2-5 x 10^k (every integer mantissa when the data
/// spans too little for [`MIN_TICKS`] of those). `None` for a non-positive or non-finite bound.
pub fn log_axis(min: f64, max: f64) -> Option<LogAxis> {
    if !(min > 0.0 && max >= min && max.is_finite()) {
        return None;
    }
    let coarse = log_axis_with(min, max, &COARSE);
    if coarse.ticks.len() >= MIN_TICKS {
        return Some(coarse);
    }
    Some(log_axis_with(min, max, &FINE))
}

fn log_axis_with(min: f64, max: f64, mantissas: &[f64]) -> LogAxis {
    let first = min.log10().floor() as i32 - 1;
    let last = max.log10().ceil() as i32 + 1;
    let candidates: Vec<f64> = (first..=last)
        .flat_map(|exponent| mantissas.iter().map(move |m| nice(*m, exponent)))
        .collect();
    // Tolerate rounding in the data (a value of exactly 20 read back as 19.999999999).
    let low = candidates
        .iter()
        .copied()
        .filter(|&t| t <= min * (1.0 + 1e-12))
        .fold(f64::NEG_INFINITY, f64::max);
    let high = candidates
        .iter()
        .copied()
        .filter(|&t| t >= max * (1.0 - 1e-12))
        .fold(f64::INFINITY, f64::min);
    let high = if high <= low {
        candidates
            .iter()
            .copied()
            .find(|&t| t > low)
            .unwrap_or(low * 2.0)
    } else {
        high
    };
    let ticks = candidates
        .into_iter()
        .filter(|&t| t >= low && t <= high)
        .collect();
    LogAxis { low, high, ticks }
}

/// `mantissa x 10^exponent`, rounded to the decimal it names (no `0.30000000000000004`).
fn nice(mantissa: f64, exponent: i32) -> f64 {
    let value = mantissa * 10f64.powi(exponent);
    if exponent < 0 {
        let digits = exponent.unsigned_abs() as usize;
        format!("{value:.digits$}").parse().unwrap_or(value)
    } else {
        value
    }
}

/// A tick's label: as many decimals as its magnitude needs (`0.002`, `0.05`, `3`, `200`).
pub fn tick_label(value: f64) -> String {
    if value <= 0.0 || !value.is_finite() {
        return format!("{value}");
    }
    let decimals = (-value.log10().floor()).max(0.0) as usize;
    format!("{value:.decimals$}")
}

/// A point's value as written beside it: three significant digits.
pub fn value_label(value: f64) -> String {
    if value == 0.0 || !value.is_finite() {
        return format!("{value}");
    }
    let decimals = (2.0 - value.abs().log10().floor()).max(0.0) as usize;
    format!("{value:.decimals$}")
}

/// The lowest and highest point (by y) of all `lines`: `(min, max)`, each `(x, y)`.
pub fn extremes(lines: &[Series]) -> Option<((f64, f64), (f64, f64))> {
    let mut points = lines.iter().flat_map(|line| line.points.iter().copied());
    let first = points.next()?;
    Some(points.fold((first, first), |(low, high), point| {
        (
            if point.1 < low.1 { point } else { low },
            if point.1 > high.1 { point } else { high },
        )
    }))
}

/// Writes the value of the lowest and the highest point of `lines` beside it (below and above).
pub fn label_extremes<X, Y>(
    chart: &mut ChartContext<'_, SVGBackend<'_>, Cartesian2d<X, Y>>,
    lines: &[Series],
    unit: &str,
) -> Result<(), String>
where
    X: Ranged<ValueType = f64>,
    Y: Ranged<ValueType = f64>,
{
    let Some((low, high)) = extremes(lines) else {
        return Ok(());
    };
    let columns = chart.plotting_area().get_pixel_range().0;
    let middle = (columns.start + columns.end) / 2;
    let mut labels = vec![(low, 6, "min")];
    if high != low {
        labels.push((high, -20, "max"));
    }
    for ((x, y), dy, which) in labels {
        let text = format!("{which} {} {unit}", value_label(y));
        // Right of a point in the left half, left of one in the right half: never past the edge.
        let (anchor, dx) = if chart.backend_coord(&(x, y)).0 < middle {
            (HPos::Left, 6)
        } else {
            (HPos::Right, -6)
        };
        let style = ("sans-serif", 13)
            .into_font()
            .color(&BLACK)
            .pos(Pos::new(anchor, VPos::Top));
        chart
            .draw_series(std::iter::once(
                EmptyElement::at((x, y)) + Text::new(text.trim_end().to_string(), (dx, dy), style),
            ))
            .map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// Reading a rendered chart back, for the plots' tests: where its labels and points landed.
#[cfg(test)]
pub(crate) mod svg_probe {
    /// The y-axis labels (right-aligned numeric texts) as (pixel y, value), top to bottom.
    pub fn y_labels(svg: &str) -> Vec<(f64, f64)> {
        let mut labels = Vec::new();
        for element in svg.split("<text ").skip(1) {
            let Some((attributes, rest)) = element.split_once('>') else {
                continue;
            };
            if !attributes.contains("text-anchor=\"end\"") {
                continue;
            }
            let content = rest.split("</text>").next().unwrap_or("").trim();
            if let (Some(y), Ok(value)) = (attribute(attributes, "y"), content.parse::<f64>()) {
                labels.push((y, value));
            }
        }
        labels.sort_by(|a, b| a.0.total_cmp(&b.0));
        labels
    }

    /// Every data point's pixel y: vertices of the series' lines (2 px wide, [`super::draw_line`];
    /// axes and ticks are 1 px) and circle centres.
    pub fn point_ys(svg: &str) -> Vec<f64> {
        let mut ys = Vec::new();
        for element in svg.split("<polyline ").skip(1) {
            if !element.contains("stroke-width=\"2\"") {
                continue;
            }
            let points = element
                .split("points=\"")
                .nth(1)
                .and_then(|rest| rest.split('"').next())
                .unwrap_or("");
            ys.extend(
                points
                    .split_whitespace()
                    .filter_map(|pair| pair.split(',').nth(1)?.parse::<f64>().ok()),
            );
        }
        for element in svg.split("<circle ").skip(1) {
            ys.extend(attribute(element, "cy"));
        }
        ys
    }

    fn attribute(attributes: &str, name: &str) -> Option<f64> {
        attributes
            .split(&format!(" {name}=\""))
            .nth(1)
            .or_else(|| attributes.strip_prefix(&format!("{name}=\"")))
            .and_then(|rest| rest.split('"').next())
            .and_then(|value| value.parse().ok())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_axis_ends_on_labelled_ticks_around_the_data() {
        for (min, max) in [
            (3.7, 412.0),
            (0.0004, 6.2),
            (21.3, 24.9),
            (1.0, 1.0),
            (0.95, 100.0),
            (2.0, 5.0),
            (123.0, 9876.0),
        ] {
            let axis = log_axis(min, max).unwrap();
            assert!(
                axis.low <= min && axis.high >= max,
                "{min}..{max}: {axis:?}"
            );
            assert!(axis.low > 0.0 && axis.high > axis.low, "{axis:?}");
            assert_eq!(axis.ticks.first(), Some(&axis.low), "{axis:?}");
            assert_eq!(axis.ticks.last(), Some(&axis.high), "{axis:?}");
            // Tight: the next tick inward would cut data off.
            assert!(axis.ticks[1] > min || axis.ticks.len() == 2, "{axis:?}");
            let labels: Vec<String> = axis.ticks.iter().map(|&t| tick_label(t)).collect();
            let mut unique = labels.clone();
            unique.dedup();
            assert_eq!(unique, labels, "labels tell ticks apart");
        }
        let axis = log_axis(3.7, 412.0).unwrap();
        assert_eq!((axis.low, axis.high), (2.0, 500.0));
        assert_eq!(
            axis.ticks,
            [2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0]
        );
        let narrow = log_axis(21.3, 24.9).unwrap();
        assert_eq!((narrow.low, narrow.high), (20.0, 30.0));
        assert!(log_axis(0.0, 1.0).is_none());
        assert!(log_axis(1.0, f64::NAN).is_none());
    }

    #[test]
    fn labels_have_the_decimals_their_magnitude_needs() {
        assert_eq!(tick_label(0.002), "0.002");
        assert_eq!(tick_label(0.05), "0.05");
        assert_eq!(tick_label(3.0), "3");
        assert_eq!(tick_label(200.0), "200");
        assert_eq!(value_label(0.0123456), "0.0123");
        assert_eq!(value_label(412.3), "412");
        assert_eq!(value_label(4.56789), "4.57");
        assert_eq!(nice(3.0, -1), 0.3);
    }
}
