//! `ks-plot`: draws HdrHistogram percentile distributions (`.hgrm` files,
//! written by the latency tools with `--hgrm DIR`) as an SVG percentile
//! plot, the way latency results are published in this field: latency
//! against percentile, the x axis stretched towards the tail (0%, 90%, 99%,
//! 99.9%, ...), several series on one chart so that each path is seen
//! beside its baseline.
//!
//! `ks-plot OUT.svg "TITLE" "LABEL=FILE.hgrm" ["LABEL=FILE.hgrm" ...]`
//!
//! `tools/bench/plots.sh` runs the measurements and draws every plot
//! BENCHMARKS.md shows.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use killswitch_tools::hgrm;
use plotters::prelude::*;

struct Series {
    label: String,
    /// (x = log10(1/(1-percentile)), latency µs)
    points: Vec<(f64, f64)>,
}

/// How far into the tail the x axis goes: 99.999%.
const X_MAX: f64 = 5.0;

fn load(spec: &str) -> Result<Series, String> {
    let (label, file) = spec
        .split_once('=')
        .ok_or_else(|| format!("{spec:?}: expected LABEL=FILE.hgrm"))?;
    let path = PathBuf::from(file);
    let text = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    let rows = hgrm::parse(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    let max_value = rows.iter().map(|r| r.0).fold(0.0, f64::max);
    let mut points: Vec<(f64, f64)> = rows
        .iter()
        .filter(|(_, q)| *q < 1.0)
        .map(|&(v, q)| ((1.0 / (1.0 - q)).log10().min(X_MAX), v))
        .collect();
    // The maximum is drawn at the right edge of the data's own tail.
    let last_x = points.last().map_or(0.0, |p| p.0);
    points.push(((last_x + 0.3).min(X_MAX), max_value));
    Ok(Series {
        label: label.to_string(),
        points,
    })
}

fn percentile_label(x: &f64) -> String {
    let q = 100.0 * (1.0 - 10f64.powf(-x));
    if *x < 0.5 {
        "0%".into()
    } else {
        let digits = (x.round() as usize).saturating_sub(2);
        format!("{q:.digits$}%")
    }
}

fn draw(out: &Path, title: &str, series: &[Series]) -> Result<(), Box<dyn std::error::Error>> {
    let values = series.iter().flat_map(|s| s.points.iter().map(|p| p.1));
    let (lo, hi) = values.fold((f64::MAX, 0.0f64), |(lo, hi), v| (lo.min(v), hi.max(v)));
    let (lo, hi) = ((lo * 0.8).max(0.001), (hi * 1.25).max(lo * 2.0));
    let root = SVGBackend::new(out, (900, 520)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(15)
        .x_label_area_size(45)
        .y_label_area_size(70)
        .build_cartesian_2d(0f64..X_MAX, (lo..hi).log_scale())?;
    chart
        .configure_mesh()
        .x_desc("percentile")
        .y_desc("latency (µs, log scale)")
        .x_labels(6)
        .x_label_formatter(&percentile_label)
        .y_label_formatter(&|v| {
            if *v >= 100.0 {
                format!("{v:.0}")
            } else if *v >= 1.0 {
                format!("{v:.1}")
            } else {
                format!("{v:.2}")
            }
        })
        .draw()?;
    let palette = [
        RGBColor(0x1f, 0x77, 0xb4),
        RGBColor(0xd6, 0x27, 0x28),
        RGBColor(0x2c, 0xa0, 0x2c),
        RGBColor(0x94, 0x67, 0xbd),
        RGBColor(0xff, 0x7f, 0x0e),
        RGBColor(0x7f, 0x7f, 0x7f),
    ];
    for (i, s) in series.iter().enumerate() {
        let color = palette[i % palette.len()];
        chart
            .draw_series(LineSeries::new(
                s.points.iter().copied(),
                color.stroke_width(2),
            ))?
            .label(s.label.clone())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() < 3 || args.iter().any(|a| a == "-h" || a == "--help") {
        eprintln!("usage: ks-plot OUT.svg \"TITLE\" \"LABEL=FILE.hgrm\" [\"LABEL=FILE.hgrm\" ...]");
        return ExitCode::from(2);
    }
    let series: Result<Vec<Series>, String> = args[2..].iter().map(|s| load(s)).collect();
    let series = match series {
        Ok(s) => s,
        Err(e) => {
            eprintln!("ks-plot: error: {e}");
            return ExitCode::FAILURE;
        }
    };
    match draw(Path::new(&args[0]), &args[1], &series) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ks-plot: error: cannot draw {}: {e}", args[0]);
            ExitCode::FAILURE
        }
    }
}
