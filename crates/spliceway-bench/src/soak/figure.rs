//! plot.svg: the relay's RSS and descriptors over the soak, with the end of warm-up and the
//! fits the verdict judged, drawn with the bench's own SVG writer.

use crate::plot::g;
use crate::svg::Svg;

use super::payload::KIB;
use super::samples::Sample;
use super::verdict::{growth, warmup_seconds};

const WIDTH: f64 = 900.0;
const PANEL_HEIGHT: f64 = 250.0;
const FIT_COLOUR: &str = "#d62728";

/// Round tick values covering [lo, hi] (steps of 1, 2 or 5 times a power of ten).
pub(crate) fn nice_ticks(lo: f64, hi: f64, count: f64) -> Vec<f64> {
    let hi = if hi <= lo { lo + 1.0 } else { hi };
    let raw = (hi - lo) / count;
    let power = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * power)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * power);
    let mut ticks = Vec::new();
    let mut t = (lo / step).floor() * step;
    while t <= hi + step * 0.001 && ticks.len() < 100 {
        ticks.push((t * 1e10).round() / 1e10);
        t += step;
    }
    if ticks.last().is_some_and(|last| *last < hi) {
        let last = ticks[ticks.len() - 1];
        ticks.push(last + step);
    }
    ticks
}

/// A series: its name, (minutes, value) points, colour.
type Series = (&'static str, Vec<(f64, f64)>, &'static str);

/// A fitted line: slope and intercept per minute, its label.
type Fit = (f64, f64, String);

/// One chart: axes with ticks and labels, a line per series, the end of warm-up as a dashed
/// line and the fitted slope (if any) from there to the end of the load (both in minutes).
fn panel(
    svg: &mut Svg,
    top: f64,
    title: &str,
    ylabel: &str,
    series: &[Series],
    (warm, end): (f64, f64),
    fit: Option<Fit>,
) {
    let (left, right, bottom) = (80.0, 20.0, 45.0);
    let (pw, ph) = (WIDTH - left - right, PANEL_HEIGHT - bottom - 30.0);
    let y0 = top + 30.0;
    let values: Vec<f64> = series
        .iter()
        .flat_map(|s| s.1.iter().map(|p| p.1))
        .collect();
    let xs: Vec<f64> = series
        .iter()
        .flat_map(|s| s.1.iter().map(|p| p.0))
        .collect();
    let min = values.iter().copied().fold(f64::INFINITY, f64::min);
    let max = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let (min, max) = if values.is_empty() {
        (0.0, 1.0)
    } else {
        (min, max)
    };
    let yt = nice_ticks(min, max, 5.0);
    let xt = nice_ticks(0.0, xs.iter().copied().fold(1e-9, f64::max), 8.0);
    let (xmax, ylo, yhi) = (xt[xt.len() - 1], yt[0], yt[yt.len() - 1]);
    let px = |x: f64| left + pw * x / xmax;
    let py = |y: f64| y0 + ph - ph * (y - ylo) / (yhi - ylo);
    svg.text(
        left,
        top + 18.0,
        "font-size=\"15\" font-weight=\"bold\"",
        title,
    );
    for t in &yt {
        svg.line(left, py(*t), left + pw, py(*t), "stroke=\"#ddd\"");
        svg.text(
            left - 6.0,
            py(*t) + 4.0,
            "font-size=\"11\" text-anchor=\"end\"",
            &g(*t),
        );
    }
    for t in &xt {
        svg.line(px(*t), y0 + ph, px(*t), y0 + ph + 5.0, "stroke=\"#000\"");
        svg.text(
            px(*t),
            y0 + ph + 18.0,
            "font-size=\"11\" text-anchor=\"middle\"",
            &g(*t),
        );
    }
    svg.line(left, y0, left, y0 + ph, "stroke=\"#000\"");
    svg.line(left, y0 + ph, left + pw, y0 + ph, "stroke=\"#000\"");
    svg.text(
        left + pw / 2.0,
        y0 + ph + 36.0,
        "text-anchor=\"middle\"",
        "time (minutes)",
    );
    let rotate = format!(
        "text-anchor=\"middle\" transform=\"rotate(-90 18 {:.1})\"",
        y0 + ph / 2.0
    );
    svg.text(18.0, y0 + ph / 2.0, &rotate, ylabel);
    svg.line(
        px(warm),
        y0,
        px(warm),
        y0 + ph,
        "stroke=\"#888\" stroke-dasharray=\"5,4\"",
    );
    svg.text(
        px(warm) + 4.0,
        y0 + 12.0,
        "font-size=\"11\" fill=\"#666\"",
        "end of warm-up",
    );
    let legend_x = left + pw - 10.0;
    for (i, (name, points, colour)) in series.iter().enumerate() {
        if !points.is_empty() {
            let d: Vec<String> = points
                .iter()
                .enumerate()
                .map(|(j, (x, y))| {
                    format!(
                        "{}{:.1} {:.1}",
                        if j == 0 { "M" } else { "L" },
                        px(*x),
                        py(*y)
                    )
                })
                .collect();
            svg.path(
                &d.join(" "),
                &format!("fill=\"none\" stroke=\"{colour}\" stroke-width=\"1.3\""),
            );
        }
        let attributes = format!("text-anchor=\"end\" fill=\"{colour}\"");
        svg.text(legend_x, y0 + 14.0 + 14.0 * i as f64, &attributes, name);
    }
    if let Some((slope, intercept, label)) = fit {
        let stroke = format!("stroke=\"{FIT_COLOUR}\" stroke-width=\"2\"");
        svg.line(
            px(warm),
            py(intercept + slope * warm),
            px(end),
            py(intercept + slope * end),
            &stroke,
        );
        let attributes = format!("text-anchor=\"end\" fill=\"{FIT_COLOUR}\"");
        svg.text(
            legend_x,
            y0 + 14.0 + 14.0 * series.len() as f64,
            &attributes,
            &label,
        );
    }
}

/// (minutes, value) of one column, leaving out the samples where it is blank.
fn series_of(samples: &[Sample], column: &str, scale: f64) -> Vec<(f64, f64)> {
    samples
        .iter()
        .filter_map(|s| Some((s.t_s / 60.0, s.column(column)? * scale)))
        .collect()
}

/// The figure: RSS (MiB) and descriptors (all, pipes, and those besides connections and
/// pipes) over time, with the fits the verdict judged.
pub(crate) fn render(samples: &[Sample], duration: f64) -> String {
    let (warm, end) = (warmup_seconds(duration) / 60.0, duration / 60.0);
    let kib = KIB as f64;
    let mut svg = Svg::new(WIDTH, 2.0 * PANEL_HEIGHT + 20.0);
    let fit = growth(samples, "rss_kib", duration).0.map(|f| {
        (
            f.slope / kib,
            f.intercept / kib,
            format!("fit: {:+.1} KiB/min", f.slope),
        )
    });
    let rss = [("VmRSS", series_of(samples, "rss_kib", 1.0 / kib), "#1f77b4")];
    panel(
        &mut svg,
        0.0,
        "Relay RSS",
        "RSS (MiB)",
        &rss,
        (warm, end),
        fit,
    );
    let fit = growth(samples, "fds", duration).0.map(|f| {
        (
            f.slope,
            f.intercept,
            format!("fit of all fds: {:+.2} fds/min", f.slope),
        )
    });
    let descriptors = [
        ("all fds", series_of(samples, "fds", 1.0), "#2ca02c"),
        ("pipe fds", series_of(samples, "pipe_fds", 1.0), "#9467bd"),
        (
            "besides connections and pipes",
            series_of(samples, "other_fds", 1.0),
            "#ff7f0e",
        ),
    ];
    panel(
        &mut svg,
        PANEL_HEIGHT + 10.0,
        "Relay descriptors",
        "open descriptors",
        &descriptors,
        (warm, end),
        fit,
    );
    svg.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_are_round_and_cover_the_range() {
        assert_eq!(
            nice_ticks(0.0, 10.0, 5.0),
            vec![0.0, 2.0, 4.0, 6.0, 8.0, 10.0]
        );
        let ticks = nice_ticks(19.3, 20.6, 5.0);
        assert!(
            ticks[0] <= 19.3 && *ticks.last().unwrap() >= 20.6,
            "{ticks:?}"
        );
        assert_eq!(nice_ticks(5.0, 5.0, 5.0)[0], 5.0);
    }

    #[test]
    fn the_figure_has_both_panels_and_their_fits() {
        let samples: Vec<Sample> = (0..600)
            .map(|i| Sample {
                t_s: f64::from(i),
                rss_kib: 20_000.0,
                fds: 40.0,
                pipe_fds: 10.0,
                other_fds: Some(14.0),
                ..Sample::default()
            })
            .collect();
        let svg = render(&samples, 600.0);
        assert!(svg.contains("Relay RSS") && svg.contains("Relay descriptors"));
        assert!(svg.contains("fit: +0.0 KiB/min") && svg.contains("fit of all fds: +0.00 fds/min"));
        assert_eq!(svg.matches("<path").count(), 4);
        assert!(svg.ends_with("</svg>\n"));
    }
}
