//! `--log-format json`: one JSON object per line, with the shape of tracing-subscriber's own
//! JSON format (`timestamp`, `level`, `fields`, `target`), but with numbers as JSON numbers.
//!
//! The engine writes times such as `connect_ms` and `duration_ms` with a `Display` wrapper
//! (three decimals, `-` when unknown) so that text lines read well; tracing-subscriber's JSON
//! format turned those into strings while byte counts were numbers, and a log shipper could not
//! sum them. Here a field whose name ends in `_ms` and whose text is a number is written as a
//! number, `-` as `null`. Lines forwarded from the `log` crate keep their own target and lose
//! the `log.file`/`log.line` fields that carried a dependency's source paths.

use std::fmt::{self, Write as _};

use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::time::{FormatTime, SystemTime};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

/// The JSON line format.
#[derive(Debug, Default, Clone, Copy)]
pub struct JsonLines;

impl<S, N> FormatEvent<S, N> for JsonLines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let mut fields = Fields::default();
        event.record(&mut fields);
        let mut timestamp = String::new();
        SystemTime.format_time(&mut Writer::new(&mut timestamp))?;
        let meta = event.metadata();
        let target = fields.log_target.as_deref().unwrap_or(meta.target());
        writeln!(
            writer,
            "{{\"timestamp\":{},\"level\":{},\"fields\":{{{}}},\"target\":{}}}",
            quoted(&timestamp),
            quoted(meta.level().as_str()),
            fields.json,
            quoted(target),
        )
    }
}

/// A string as a JSON string.
fn quoted(text: &str) -> String {
    serde_json::Value::from(text).to_string()
}

/// The fields of one event, as the members of a JSON object, in the order they were given.
#[derive(Default)]
struct Fields {
    json: String,
    /// The target of a record forwarded from the `log` crate.
    log_target: Option<String>,
}

impl Fields {
    fn member(&mut self, name: &str, value: &dyn fmt::Display) {
        if !self.json.is_empty() {
            self.json.push(',');
        }
        let _ = write!(self.json, "{}:{value}", quoted(name));
    }
}

/// A time in milliseconds written as text by the engine (`12.345`, `-` when unknown), as a
/// JSON value: a number, `null`, or the text itself if it is neither.
fn millis(text: &str) -> serde_json::Value {
    if text == "-" {
        return serde_json::Value::Null;
    }
    text.parse::<f64>()
        .ok()
        .and_then(serde_json::Number::from_f64)
        .map_or_else(|| text.into(), serde_json::Value::Number)
}

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        let text = format!("{value:?}");
        let name = field.name();
        if name.ends_with("_ms") {
            self.member(name, &millis(&text));
        } else {
            self.record_str(field, &text);
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        match field.name() {
            "log.target" => self.log_target = Some(value.to_string()),
            name if name.starts_with("log.") => {}
            name => self.member(name, &quoted(value)),
        }
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        match serde_json::Number::from_f64(value) {
            Some(number) => self.member(field.name(), &number),
            None => self.member(field.name(), &quoted(&value.to_string())),
        }
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.member(field.name(), &value);
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        if !field.name().starts_with("log.") {
            self.member(field.name(), &value);
        }
    }

    fn record_i128(&mut self, field: &Field, value: i128) {
        self.member(field.name(), &value);
    }

    fn record_u128(&mut self, field: &Field, value: u128) {
        self.member(field.name(), &value);
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.member(field.name(), &value);
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.record_str(field, &value.to_string());
    }
}

#[cfg(test)]
mod tests {
    use super::millis;

    #[test]
    fn milliseconds_are_numbers_and_unknown_is_null() {
        assert_eq!(millis("12.345").to_string(), "12.345");
        assert_eq!(millis("0.000").to_string(), "0.0");
        assert_eq!(millis("-"), serde_json::Value::Null);
        assert_eq!(millis("soon").to_string(), "\"soon\"");
    }
}
