//! What describes one exported metric family, defined once beside the code that reads its value:
//! the name, the help text and the labels, which the exposition writes and
//! `docs/operations.md`'s table is held to (the test in `mod.rs`). Names, label names and label
//! values are what dashboards and alerts match on: change none of them.

use prometheus_client::encoding::{DescriptorEncoder, MetricEncoder};
use prometheus_client::metrics::MetricType;

/// The Prometheus type of a family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

impl Kind {
    /// As the `# TYPE` line and the operations table write it.
    #[cfg(test)]
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        }
    }
}

/// A label of a family: its name and, when the relay decides them, its values (empty when the
/// value comes from the configuration, such as a route's name, or the build).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Label {
    pub name: &'static str,
    pub values: &'static [&'static str],
}

/// The `route` label every per-route family has.
pub const ROUTE: Label = Label {
    name: "route",
    values: &[],
};

/// One metric family: name as registered (a counter's `_total` is added by the encoder), help,
/// type and labels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Family {
    pub name: &'static str,
    pub help: &'static str,
    pub kind: Kind,
    pub labels: &'static [Label],
}

impl Family {
    /// The name as scraped: counters end in `_total`.
    #[cfg(test)]
    pub fn exported_name(&self) -> String {
        match self.kind {
            Kind::Counter => format!("{}_total", self.name),
            Kind::Gauge | Kind::Histogram => self.name.to_string(),
        }
    }

    /// Writes the family's `# HELP` and `# TYPE` lines; the samples follow on the encoder
    /// returned.
    pub fn describe<'a>(
        &self,
        encoder: &'a mut DescriptorEncoder<'_>,
    ) -> Result<MetricEncoder<'a>, std::fmt::Error> {
        let kind = match self.kind {
            Kind::Counter => MetricType::Counter,
            Kind::Gauge => MetricType::Gauge,
            Kind::Histogram => MetricType::Histogram,
        };
        encoder.encode_descriptor(self.name, self.help, None, kind)
    }
}
