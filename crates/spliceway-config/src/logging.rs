//! The logging settings of the file (`log_level`, `log_format`); the CLI's `--log-format` takes
//! the same [`LogFormat`].

/// How much the relay logs. The names are those of the `-v`/`-q` ladder of the CLI.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum LogLevel {
    /// Errors only.
    Error,
    /// Warnings and errors.
    Warn,
    /// Start-up, reload and shutdown messages and warnings; no line per connection.
    Notice,
    /// Also one line per closed connection (target `spliceway::conn`), as `stone -d` did.
    Info,
    /// Also each accepted connection, with its peer and the chosen upstream address.
    Debug,
    /// Everything.
    Trace,
}

impl LogLevel {
    /// Every level, least detail first, with its name in the file.
    pub const ALL: [(&'static str, LogLevel); 6] = [
        ("error", LogLevel::Error),
        ("warn", LogLevel::Warn),
        ("notice", LogLevel::Notice),
        ("info", LogLevel::Info),
        ("debug", LogLevel::Debug),
        ("trace", LogLevel::Trace),
    ];

    /// The name used in the file.
    pub fn name(self) -> &'static str {
        LogLevel::ALL
            .iter()
            .find(|(_, l)| *l == self)
            .map_or("info", |(n, _)| n)
    }
}

/// Format of log lines: `log_format` in the file, `--log-format` on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

impl LogFormat {
    /// Every format, with its name (in the file and on the command line).
    pub const ALL: [(&'static str, LogFormat); 2] =
        [("text", LogFormat::Text), ("json", LogFormat::Json)];

    /// The name used in the file and on the command line.
    pub fn name(self) -> &'static str {
        LogFormat::ALL
            .iter()
            .find(|(_, f)| *f == self)
            .map_or("text", |(n, _)| n)
    }

    /// The format called `name` (exactly, case matters), if any.
    pub fn from_name(name: &str) -> Option<LogFormat> {
        LogFormat::ALL
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, f)| *f)
    }
}
