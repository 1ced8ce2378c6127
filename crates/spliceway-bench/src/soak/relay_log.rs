//! Reads the relay's JSON log: WARN/ERROR lines other than the ones the soak provokes on
//! purpose, the `closed` lines' ends, and the reloads it reports.

use std::collections::BTreeMap;

/// Whether a log message is one of a kind.
pub(crate) type MessageTest = fn(&str) -> bool;

/// Lines the load provokes on purpose: (how the verdict names the pattern, the test).
pub(crate) const EXPECTED_LOG_PATTERNS: [(&str, MessageTest); 2] = [
    // SIGUSR1/SIGUSR2 sent by the soak.
    (r"^log level now \S+ \(signal\)$", |m| {
        m.strip_prefix("log level now ")
            .and_then(|rest| rest.strip_suffix(" (signal)"))
            .is_some_and(|level| !level.is_empty() && !level.contains(char::is_whitespace))
    }),
    // The soak was started as root and its configuration sets no user.
    (r"^running as root: ", |m| {
        m.starts_with("running as root: ")
    }),
];

/// What the log says.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct LogSummary {
    pub(crate) lines: u64,
    pub(crate) unexpected: Vec<String>,
    pub(crate) unexpected_count: u64,
    /// Matches per expected pattern.
    pub(crate) expected: BTreeMap<&'static str, u64>,
    /// `closed` lines per `end` field.
    pub(crate) ends: BTreeMap<String, u64>,
    pub(crate) reloaded: u64,
    pub(crate) reloaded_unchanged: u64,
}

/// Reads the log's lines (a line that is not JSON, such as a panic, counts as unexpected).
pub(crate) fn analyse<'a>(lines: impl IntoIterator<Item = &'a str>) -> LogSummary {
    let mut result = LogSummary::default();
    for raw in lines {
        let raw = raw.trim();
        if raw.is_empty() {
            continue;
        }
        result.lines += 1;
        let event: Option<serde_json::Value> = serde_json::from_str(raw).ok();
        let (level, message, fields) = match event.as_ref().filter(|e| e.is_object()) {
            Some(event) => {
                let fields = event.get("fields").cloned().unwrap_or_default();
                let message = match fields.get("message") {
                    Some(serde_json::Value::String(s)) => s.clone(),
                    Some(other) => other.to_string(),
                    None => String::new(),
                };
                let level = event
                    .get("level")
                    .and_then(|l| l.as_str())
                    .unwrap_or("")
                    .to_owned();
                (level, message, fields)
            }
            None => ("TEXT".to_owned(), raw.to_owned(), serde_json::Value::Null),
        };
        if message == "closed"
            && let Some(end) = fields.get("end")
        {
            let end = end.as_str().map_or_else(|| end.to_string(), str::to_owned);
            *result.ends.entry(end).or_insert(0) += 1;
        }
        if message.starts_with("reloaded ") {
            result.reloaded += 1;
            if message.contains("changed []") {
                result.reloaded_unchanged += 1;
            }
        }
        if !matches!(level.as_str(), "WARN" | "ERROR" | "TEXT") {
            continue;
        }
        match EXPECTED_LOG_PATTERNS
            .iter()
            .find(|(_, test)| test(&message))
        {
            Some((pattern, _)) => *result.expected.entry(pattern).or_insert(0) += 1,
            None => {
                result.unexpected_count += 1;
                if result.unexpected.len() < 20 {
                    result.unexpected.push(format!("{level} {message}"));
                }
            }
        }
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expected_warnings_ends_and_reloads_are_told_apart() {
        let lines = [
            r#"{"level":"WARN","fields":{"message":"log level now \"debug\" (signal)"}}"#,
            r#"{"level":"INFO","fields":{"message":"closed","end":"both finished"}}"#,
            r#"{"level":"INFO","fields":{"message":"reloaded x: added [], removed [], changed [\"alpha\"], unchanged [\"beta\"]"}}"#,
            r#"{"level":"ERROR","fields":{"message":"reload failed, the running configuration stays"}}"#,
            "thread 'worker-1' panicked at src/x.rs:1:1",
            "",
        ];
        let log = analyse(lines);
        assert_eq!(log.lines, 5);
        assert_eq!(log.unexpected_count, 2, "{log:?}");
        assert_eq!(log.expected.values().sum::<u64>(), 1);
        assert_eq!(log.ends.get("both finished"), Some(&1));
        assert_eq!((log.reloaded, log.reloaded_unchanged), (1, 0));
        let unchanged = analyse([
            r#"{"level":"INFO","fields":{"message":"reloaded x: added [], removed [], changed [], unchanged [\"a\"]"}}"#,
        ]);
        assert_eq!(unchanged.reloaded_unchanged, 1);
        let spaced =
            analyse([r#"{"level":"WARN","fields":{"message":"log level now a b (signal)"}}"#]);
        assert_eq!(
            spaced.unexpected_count, 1,
            "a level with a space is not the signal's line"
        );
    }
}
