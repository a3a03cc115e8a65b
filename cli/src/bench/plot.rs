//! `--plot`: the distributions as an SVG picture, one panel per measured quantity, one density
//! curve (a kernel density estimate) per guest in it, each guest's median marked by a
//! vertical line of its colour.

use plotters::prelude::*;

use super::report::{Quantity, Report};
use super::stats;

/// Each panel shows the values from this percentile to its complement.
const CLIP_PERCENTILE: f64 = 1.0;
/// Points each density curve is drawn through.
const CURVE_POINTS: usize = 200;
/// The picture's width, and each panel's height, in pixels.
const WIDTH: u32 = 960;
const PANEL_HEIGHT: u32 = 320;

/// The quantities of the report in the order they first appear among the guests.
fn panels(report: &Report) -> Vec<Quantity> {
    let mut quantities: Vec<Quantity> = Vec::new();
    for guest in &report.guests {
        for measured in &guest.measured {
            if !quantities.contains(&measured.quantity) {
                quantities.push(measured.quantity.clone());
            }
        }
    }
    quantities
}

/// Draws the report's distributions as SVG.
pub fn svg(report: &Report) -> Result<String, String> {
    let quantities = panels(report);
    let mut text = String::new();
    {
        let height = PANEL_HEIGHT * quantities.len().max(1) as u32;
        let root = SVGBackend::with_string(&mut text, (WIDTH, height)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| e.to_string())?;
        let areas = root.split_evenly((quantities.len().max(1), 1));
        for (area, quantity) in areas.iter().zip(&quantities) {
            panel(report, area, quantity).map_err(|e| e.to_string())?;
        }
        root.present().map_err(|e| e.to_string())?;
    }
    Ok(text)
}

/// A quantity's values in the unit the picture uses: time when it can, cycles otherwise.
fn scale(report: &Report, quantity: &Quantity) -> (f64, &'static str) {
    match (quantity, report.settings.tsc_khz) {
        (Quantity::Wall, _) => (1e-3, "µs"),
        (Quantity::Sample(_), Some(khz)) => (1_000_000.0 / khz as f64, "ns"),
        (Quantity::Sample(_), None) => (1.0, "cycles"),
    }
}

/// A guest's name, its density curve (or its values) and its median, in the picture's unit.
type Curve<T> = (String, Vec<T>, f64);

type Area<'a> = DrawingArea<SVGBackend<'a>, plotters::coord::Shift>;

fn panel(
    report: &Report,
    area: &Area<'_>,
    quantity: &Quantity,
) -> Result<(), Box<dyn std::error::Error>> {
    let (factor, unit) = scale(report, quantity);
    let values: Vec<Curve<f64>> = report
        .guests
        .iter()
        .filter_map(|guest| {
            let measured = guest.measured.iter().find(|m| m.quantity == *quantity)?;
            let values: Vec<f64> = measured
                .per_run
                .iter()
                .flatten()
                .map(|v| v * factor)
                .collect();
            Some((guest.name.clone(), values, measured.summary.median * factor))
        })
        .collect();
    // The panel spans the guests' 1st to 99th percentiles and a margin: a few far outliers
    // would otherwise squeeze every curve into a corner.
    let (mut low, mut high) = (f64::INFINITY, f64::NEG_INFINITY);
    for (_, values, _) in &values {
        let mut sorted = values.clone();
        sorted.sort_by(f64::total_cmp);
        if let (Some(p1), Some(p99)) = (
            stats::percentile(&sorted, CLIP_PERCENTILE),
            stats::percentile(&sorted, 100.0 - CLIP_PERCENTILE),
        ) {
            low = low.min(p1);
            high = high.max(p99);
        }
    }
    if !low.is_finite() || !high.is_finite() {
        (low, high) = (0.0, 1.0);
    }
    let margin = if high > low {
        (high - low) * 0.15
    } else {
        low.abs().max(1.0) * 0.05
    };
    (low, high) = (low - margin, high + margin);
    let curves: Vec<Curve<(f64, f64)>> = values
        .into_iter()
        .map(|(name, values, median)| {
            let shown: Vec<f64> = values
                .into_iter()
                .filter(|v| (low..=high).contains(v))
                .collect();
            let curve = stats::kde(&shown, CURVE_POINTS)
                .into_iter()
                .filter(|(x, _)| (low..=high).contains(x))
                .collect();
            (name, curve, median)
        })
        .collect();
    let top = curves
        .iter()
        .flat_map(|(_, curve, _)| curve.iter().map(|&(_, y)| y))
        .fold(0.0f64, f64::max);
    let top = if top > 0.0 { top * 1.1 } else { 1.0 };
    let title = match quantity {
        Quantity::Sample(name) => format!("{name} ({unit}; 1st to 99th percentile)"),
        Quantity::Wall => format!("wall time per run ({unit}; 1st to 99th percentile)"),
    };
    let mut chart = ChartBuilder::on(area)
        .caption(title, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(64)
        .build_cartesian_2d(low..high, 0.0..top)?;
    chart
        .configure_mesh()
        .x_desc(unit)
        .x_label_formatter(&|x| super::report::grouped(*x))
        .y_desc("density")
        .y_labels(4)
        .y_label_formatter(&|y| format!("{y:.1e}"))
        .draw()?;
    for (index, (name, curve, median)) in curves.into_iter().enumerate() {
        let colour = Palette99::pick(index).to_rgba();
        chart
            .draw_series(LineSeries::new(curve, colour.stroke_width(2)))?
            .label(name)
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], colour.stroke_width(2))
            });
        chart.draw_series(std::iter::once(PathElement::new(
            vec![(median, 0.0), (median, top)],
            colour.stroke_width(1),
        )))?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()?;
    Ok(())
}
