//! `--plot out.svg`: throughput and latency percentiles over time.
//!
//! SVG only: PNG would need plotters' bitmap backend and an image codec,
//! which this tool does without to stay lean. Convert with any SVG tool.

use std::path::Path;

use plotters::coord::Shift;
use plotters::prelude::*;

use crate::error::Error;
use crate::report::Report;

/// Picks one percentile of an interval.
type Pick = fn(&crate::stats::Percentiles) -> f64;

fn err(e: impl std::fmt::Display) -> Error {
    Error::Plot(e.to_string())
}

/// Draws the report's timeline to `path` (must end in `.svg`).
pub fn draw(report: &Report, path: &Path) -> Result<(), Error> {
    if path.extension().and_then(|e| e.to_str()) != Some("svg") {
        return Err(Error::Plot(format!(
            "{}: only SVG output is built in; use a .svg file name",
            path.display()
        )));
    }
    let t = &report.timeline;
    if t.is_empty() {
        return Err(Error::Plot("the run has no timeline to plot".into()));
    }
    let sends = report.counters.msgs_sent > 0;
    let with_connections = t.iter().any(|p| p.server_rss_kib.is_some()) || !sends;
    let panels = usize::from(sends) * 2 + usize::from(with_connections);
    let root = SVGBackend::new(path, (1000, 350 * panels as u32 + 50)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let title = format!(
        "{} - {} ({}), {} devices",
        report.scenario, report.target, report.protocol, report.devices
    );
    let root = root.titled(&title, ("sans-serif", 20)).map_err(err)?;
    let areas = root.split_evenly((panels, 1));
    let t_max = t.last().map_or(1.0, |p| p.t).max(1.0);
    let mut next = areas.iter();
    if sends && let (Some(a), Some(b)) = (next.next(), next.next()) {
        throughput(a, report, t_max)?;
        latency(b, report, t_max)?;
    }
    if let Some(a) = next.next() {
        connections(a, report, t_max)?;
    }
    root.present().map_err(err)
}

fn throughput(
    area: &DrawingArea<SVGBackend<'_>, Shift>,
    r: &Report,
    t_max: f64,
) -> Result<(), Error> {
    let t = &r.timeline;
    let points_max = t.iter().map(|p| p.points_per_s).fold(1.0, f64::max) * 1.1;
    let msgs_max = t.iter().map(|p| p.msgs_per_s).fold(1.0, f64::max) * 1.1;
    let mut chart = ChartBuilder::on(area)
        .margin(10)
        .x_label_area_size(30)
        .y_label_area_size(80)
        .right_y_label_area_size(80)
        .caption("acknowledged throughput", ("sans-serif", 16))
        .build_cartesian_2d(0f64..t_max, 0f64..points_max)
        .map_err(err)?
        .set_secondary_coord(0f64..t_max, 0f64..msgs_max);
    chart
        .configure_mesh()
        .x_desc("seconds")
        .y_desc("points/s")
        .draw()
        .map_err(err)?;
    chart
        .configure_secondary_axes()
        .y_desc("messages/s")
        .draw()
        .map_err(err)?;
    chart
        .draw_series(LineSeries::new(
            t.iter().map(|p| (p.t, p.points_per_s)),
            &BLUE,
        ))
        .map_err(err)?
        .label("points/s")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLUE));
    chart
        .draw_secondary_series(LineSeries::new(t.iter().map(|p| (p.t, p.msgs_per_s)), &RED))
        .map_err(err)?
        .label("messages/s (right)")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], RED));
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(err)
}

fn latency(area: &DrawingArea<SVGBackend<'_>, Shift>, r: &Report, t_max: f64) -> Result<(), Error> {
    let t = &r.timeline;
    let values = || {
        t.iter()
            .flat_map(|p| {
                [
                    p.ack_ms.map(|l| l.max),
                    p.ack_ms.map(|l| l.p50),
                    p.e2e_ms.map(|l| l.p99),
                ]
            })
            .flatten()
    };
    let max = values().fold(1.0, f64::max) * 1.5;
    let min = values().fold(f64::INFINITY, f64::min).clamp(0.001, 1.0) * 0.5;
    let mut chart = ChartBuilder::on(area)
        .margin(10)
        .x_label_area_size(30)
        .y_label_area_size(80)
        .caption("latency per interval (log scale)", ("sans-serif", 16))
        .build_cartesian_2d(0f64..t_max, (min..max).log_scale())
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc("seconds")
        .y_desc("milliseconds")
        .draw()
        .map_err(err)?;
    let series: [(&str, RGBColor, Pick); 4] = [
        ("ack p50", GREEN, |l| l.p50),
        ("ack p90", BLUE, |l| l.p90),
        ("ack p99", MAGENTA, |l| l.p99),
        ("ack p99.9", RED, |l| l.p999),
    ];
    for (name, color, f) in series {
        let points: Vec<(f64, f64)> = t
            .iter()
            .filter_map(|p| p.ack_ms.map(|l| (p.t, f(&l).max(min))))
            .collect();
        if points.is_empty() {
            continue;
        }
        chart
            .draw_series(LineSeries::new(points, &color))
            .map_err(err)?
            .label(name)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
    }
    let e2e: Vec<(f64, f64)> = t
        .iter()
        .filter_map(|p| p.e2e_ms.map(|l| (p.t, l.p99.max(min))))
        .collect();
    if !e2e.is_empty() {
        chart
            .draw_series(LineSeries::new(e2e, &BLACK))
            .map_err(err)?
            .label("end-to-end p99")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLACK));
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(err)
}

fn connections(
    area: &DrawingArea<SVGBackend<'_>, Shift>,
    r: &Report,
    t_max: f64,
) -> Result<(), Error> {
    let t = &r.timeline;
    let c_max = t.iter().map(|p| p.connected).max().unwrap_or(1).max(1) as f64 * 1.1;
    let rss_max = t
        .iter()
        .filter_map(|p| p.server_rss_kib)
        .max()
        .unwrap_or(1)
        .max(1) as f64
        / 1024.0
        * 1.1;
    let mut chart = ChartBuilder::on(area)
        .margin(10)
        .x_label_area_size(30)
        .y_label_area_size(80)
        .right_y_label_area_size(80)
        .caption("open connections and server memory", ("sans-serif", 16))
        .build_cartesian_2d(0f64..t_max, 0f64..c_max)
        .map_err(err)?
        .set_secondary_coord(0f64..t_max, 0f64..rss_max);
    chart
        .configure_mesh()
        .x_desc("seconds")
        .y_desc("connections")
        .draw()
        .map_err(err)?;
    chart
        .configure_secondary_axes()
        .y_desc("server RSS, MiB")
        .draw()
        .map_err(err)?;
    chart
        .draw_series(LineSeries::new(
            t.iter().map(|p| (p.t, p.connected as f64)),
            &BLUE,
        ))
        .map_err(err)?
        .label("connections")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLUE));
    let rss: Vec<(f64, f64)> = t
        .iter()
        .filter_map(|p| p.server_rss_kib.map(|k| (p.t, k as f64 / 1024.0)))
        .collect();
    if !rss.is_empty() {
        chart
            .draw_secondary_series(LineSeries::new(rss, &RED))
            .map_err(err)?
            .label("server RSS (MiB, right)")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], RED));
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(err)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::{Percentiles, TimelinePoint};

    #[test]
    fn draws_an_svg_with_every_series_and_refuses_png() {
        let timeline = (1..=5)
            .map(|i| TimelinePoint {
                t: f64::from(i),
                connected: 10,
                acked: 100,
                msgs_per_s: 100.0,
                points_per_s: 300.0,
                ack_ms: Some(Percentiles {
                    count: 100,
                    p50: 1.0,
                    p90: 2.0,
                    p99: 4.0,
                    p999: 8.0,
                    max: 9.0,
                    mean: 1.2,
                }),
                server_rss_kib: Some(100_000 + u64::from(i as u8) * 1000),
                ..TimelinePoint::default()
            })
            .collect();
        let mut r = Report {
            scenario: "t".into(),
            timeline,
            ..Report::default()
        };
        r.counters.msgs_sent = 500;
        let dir = tempfile::tempdir().unwrap();
        let svg = dir.path().join("p.svg");
        draw(&r, &svg).unwrap();
        let text = std::fs::read_to_string(&svg).unwrap();
        assert!(text.starts_with("<svg"), "{}", &text[..50]);
        for label in ["points/s", "ack p99.9", "connections", "server RSS"] {
            assert!(text.contains(label), "missing {label}");
        }
        assert!(draw(&r, &dir.path().join("p.png")).is_err());

        // Idle connections: only the connections panel.
        r.counters.msgs_sent = 0;
        draw(&r, &svg).unwrap();
        let text = std::fs::read_to_string(&svg).unwrap();
        assert!(text.contains("open connections"));
        assert!(!text.contains("ack p99"));
    }
}
