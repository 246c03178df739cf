//! The chart style of every SVG plot (`bench --plot`, `train --plot`): [`PALETTE`], [`Series`],
//! [`svg_chart`] (a white canvas rendered to a string), [`draw_line`] and [`finish_chart`] (the legend).

use plotters::coord::Shift;
use plotters::prelude::*;

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
