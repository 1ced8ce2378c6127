//! Why a configuration file was refused, located at `file:line:column`.

use std::path::PathBuf;

/// Why a configuration file was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{}: cannot read the configuration file", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The operating-system error.
        #[source]
        source: std::io::Error,
    },
    /// Something in the file is wrong; `line` and `column` (1-based) point at it.
    #[error("{}:{line}:{column}: {}{message}", path.display(), context_prefix(context))]
    Invalid {
        /// The file, as given.
        path: PathBuf,
        /// Line of the offending key or value.
        line: usize,
        /// Column (in characters) of the offending key or value.
        column: usize,
        /// Which route and key, e.g. `route "s3": allow` (empty for syntax errors).
        context: String,
        /// What is wrong, in words meant for the user.
        message: String,
    },
}

fn context_prefix(context: &str) -> String {
    if context.is_empty() {
        String::new()
    } else {
        format!("{context}: ")
    }
}

impl ConfigError {
    /// Line and column (1-based) of the error, if it has a place in the file.
    pub fn line_column(&self) -> Option<(usize, usize)> {
        match self {
            ConfigError::Invalid { line, column, .. } => Some((*line, *column)),
            ConfigError::Read { .. } => None,
        }
    }
}
