//! The figures of `spliceway bench --compare`: what a round measured, each variant's rounds and
//! medians, the `--json` object and the lines on stderr and stdout. Apart from `compare` so
//! that the running of rounds and the shape of what they report are read and changed apart.

use serde::Serialize;

/// One variant's figures over the rounds.
#[derive(Debug, Serialize)]
pub(crate) struct Figures {
    pub(crate) name: String,
    pub(crate) command: String,
    /// The figure of each round, in round order.
    pub(crate) rounds: Vec<f64>,
    pub(crate) median: f64,
    pub(crate) min: f64,
    pub(crate) max: f64,
    /// Upload only: MB/s of each round and their median.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) mb_per_s: Option<Vec<f64>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) mb_per_s_median: Option<f64>,
    /// Upload only: the relay's wake-ups a second (voluntary context switches of its threads)
    /// of each round and their median.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) wakeups_per_s: Option<Vec<f64>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) wakeups_per_s_median: Option<f64>,
    /// Upload with --streams above 1: each round's MB/s of each connection, in stream order.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) streams_mb_per_s: Option<Vec<Vec<f64>>>,
    /// --compare-top variants: the CPU seconds `top` itself used in each round's upload.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) observer_cpu_seconds: Option<Vec<f64>>,
}

/// What one round of one variant measured.
#[derive(Debug, Clone, Default)]
pub(crate) struct RoundFigures {
    /// The figure of the unit (CPU per connection, per round trip, per GiB).
    pub(crate) figure: f64,
    /// Upload only: MB/s of the whole transfer, the relay's wake-ups a second, and each
    /// connection's MB/s.
    pub(crate) mb_per_s: Option<f64>,
    pub(crate) wakeups_per_s: Option<f64>,
    pub(crate) streams_mb_per_s: Vec<f64>,
    /// --compare-top: top's CPU seconds over the upload.
    pub(crate) observer_cpu_seconds: Option<f64>,
}

/// The `--json` object.
#[derive(Debug, Serialize)]
pub(crate) struct CompareReport {
    pub(crate) compare: &'static str,
    /// What `rounds`, `median`, `min` and `max` are in.
    pub(crate) unit: &'static str,
    /// Connections or round trips per round, or bytes per upload.
    pub(crate) per_round: u64,
    /// Upload only: the connections each upload is spread over (`--streams`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) streams: Option<u32>,
    /// Upload only: the idle connections held through each relay (`--idle-connections`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) idle_connections: Option<u32>,
    pub(crate) variants: Vec<Figures>,
}

pub(crate) fn command_line(argv: &[String]) -> String {
    shlex::try_join(argv.iter().map(String::as_str)).unwrap_or_else(|_| argv.join(" "))
}

/// The median (mean of the middle two for an even count); NaN for none.
pub(crate) fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    match sorted.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => sorted[n / 2],
        n => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
    }
}

/// One round's line on stderr.
pub(crate) fn round_line(got: &RoundFigures, unit: &str) -> String {
    let Some(rate) = got.mb_per_s else {
        return format!("{:.1} {unit}", got.figure);
    };
    let mut line = format!(
        "{:.3} CPU s/GiB, {rate:.0} MB/s ({:.0} Mbit/s), {:.0} wake-ups/s, hash ok",
        got.figure,
        rate * 8.0,
        got.wakeups_per_s.unwrap_or(f64::NAN)
    );
    if got.streams_mb_per_s.len() > 1 {
        line.push_str(&format!(
            "; per stream MB/s: {}",
            join(&got.streams_mb_per_s, 1)
        ));
    }
    if let Some(top) = got.observer_cpu_seconds {
        line.push_str(&format!("; top's own CPU {top:.3} s"));
    }
    line
}

/// The lowest and highest of the values, as "LOW-HIGH".
pub(crate) fn spread(values: impl Iterator<Item = f64>) -> String {
    let (low, high) = values.fold((f64::INFINITY, f64::NEG_INFINITY), |(l, h), v| {
        (l.min(v), h.max(v))
    });
    format!("{low:.1}-{high:.1}")
}

/// The lines the scripts printed at the end: the median of each variant and every round.
pub(crate) fn medians_table(report: &CompareReport) -> String {
    let mut out = String::new();
    for v in &report.variants {
        let line = match report.compare {
            "upload" => {
                let rate = v.mb_per_s_median.unwrap_or(f64::NAN);
                let mut line = format!(
                    "median {}: {:.3} CPU s/GiB ({}), {rate:.0} MB/s ({:.0} Mbit/s), \
                     {:.0} wake-ups/s",
                    v.name,
                    v.median,
                    join(&v.rounds, 3),
                    rate * 8.0,
                    v.wakeups_per_s_median.unwrap_or(f64::NAN)
                );
                if let Some(streams) = &v.streams_mb_per_s {
                    line.push_str(&format!(
                        ", each stream {} MB/s",
                        spread(streams.iter().flatten().copied())
                    ));
                }
                if let Some(top) = &v.observer_cpu_seconds {
                    line.push_str(&format!(", top's own CPU {} s", join(top, 3)));
                }
                line.push('\n');
                line
            }
            _ => {
                let what = if report.compare == "rtt" {
                    "round trip"
                } else {
                    "connection"
                };
                format!(
                    "median {}: {:.1} us per {what} ({})\n",
                    v.name,
                    v.median,
                    join(&v.rounds, 1)
                )
            }
        };
        out.push_str(&line);
    }
    out
}

pub(crate) fn join(values: &[f64], decimals: usize) -> String {
    values
        .iter()
        .map(|v| format!("{v:.decimals$}"))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians_and_spreads() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
        assert!(median(&[]).is_nan());
        assert_eq!(spread([5.0, 4.96, 5.04].into_iter()), "5.0-5.0");
        assert_eq!(spread([3.94, 40.0].into_iter()), "3.9-40.0");
    }

    #[test]
    fn upload_lines_show_streams_and_top_when_measured() {
        let got = RoundFigures {
            figure: 0.25,
            mb_per_s: Some(62.5),
            wakeups_per_s: Some(90.0),
            streams_mb_per_s: vec![31.0, 31.5],
            observer_cpu_seconds: Some(0.012),
        };
        let line = round_line(&got, "relay CPU s/GiB");
        assert_eq!(
            line,
            "0.250 CPU s/GiB, 62 MB/s (500 Mbit/s), 90 wake-ups/s, hash ok; per stream MB/s: \
             31.0, 31.5; top's own CPU 0.012 s"
        );
        let plain = RoundFigures {
            figure: 12.34,
            ..RoundFigures::default()
        };
        assert_eq!(
            round_line(&plain, "us relay CPU per connection"),
            "12.3 us relay CPU per connection"
        );
    }
}
