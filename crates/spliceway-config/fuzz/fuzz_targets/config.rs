//! Fuzzes the configuration parser: any text must give a `Config` or a `ConfigError` that
//! names a position inside the text, never a panic.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use spliceway_config::Config;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match Config::from_str(text, Path::new("fuzz.toml")) {
        Ok(config) => {
            let _ = config.summary();
            if let Err(error) = config.routes() {
                check_position(&error, text);
            }
        }
        Err(error) => check_position(&error, text),
    }
});

fn check_position(error: &spliceway_config::ConfigError, text: &str) {
    let message = error.to_string();
    assert!(message.starts_with("fuzz.toml"), "error does not name the file: {message}");
    if let Some((line, column)) = error.line_column() {
        let lines = text.split('\n').count().max(1);
        assert!(line >= 1 && line <= lines, "line {line} outside 1..={lines}: {message}");
        assert!(column >= 1, "column {column}: {message}");
    }
}
