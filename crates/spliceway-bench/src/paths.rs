//! The measured paths and the command templates of external relays (`--peer`).
//!
//! A template is split into words with shell rules (quotes, backslashes) by `shlex`, never
//! run by a shell; then each word's placeholders are replaced:
//!
//! | placeholder | becomes |
//! | --- | --- |
//! | `{listen}`, `{upstream}` | the port number |
//! | `{listen_addr}`, `{upstream_addr}` | `ip:port` (`[ip]:port` for IPv6) |
//! | `{listen_ip}`, `{upstream_ip}` | the IP address |

use std::net::SocketAddr;

/// Placeholder names a template may use.
const PLACEHOLDERS: [&str; 6] = [
    "listen",
    "upstream",
    "listen_addr",
    "upstream_addr",
    "listen_ip",
    "upstream_ip",
];

/// How one path carries the upload.
#[derive(Debug, Clone)]
pub(crate) enum PathKind {
    /// Client straight to the sink.
    Direct,
    /// From the relay host straight to the sink (emulated topology: EC2 -> VPC endpoint).
    Vpc,
    /// Through `spliceway relay --mode splice|copy` started by the bench.
    Spliceway(spliceway::Mode),
    /// Through an external relay started from a template.
    Peer(Template),
    /// Through a relay the user runs elsewhere (`--via`).
    Via(SocketAddr),
}

/// A named path.
#[derive(Debug, Clone)]
pub(crate) struct PathSpec {
    pub(crate) name: String,
    pub(crate) kind: PathKind,
}

impl PathSpec {
    pub(crate) fn new(name: impl Into<String>, kind: PathKind) -> PathSpec {
        PathSpec {
            name: name.into(),
            kind,
        }
    }
}

/// A command template, already split into words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Template {
    pub(crate) words: Vec<String>,
}

/// The addresses a relay's placeholders stand for.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RelayAddrs {
    pub(crate) listen: SocketAddr,
    pub(crate) upstream: SocketAddr,
}

impl Template {
    /// Splits and checks a template: known placeholders only, one for the listen side and one
    /// for the upstream side at least.
    pub(crate) fn parse(text: &str) -> Result<Template, String> {
        let words = shlex::split(text)
            .ok_or_else(|| format!("{text:?}: unbalanced quotes or a trailing backslash"))?;
        if words.is_empty() {
            return Err("the command template is empty".into());
        }
        let mut used = Vec::new();
        for word in &words {
            for name in placeholders_in(word) {
                if !PLACEHOLDERS.contains(&name) {
                    return Err(format!(
                        "unknown placeholder {{{name}}} in {text:?}; known: {}",
                        PLACEHOLDERS.map(|p| format!("{{{p}}}")).join(" ")
                    ));
                }
                used.push(name);
            }
        }
        for side in ["listen", "upstream"] {
            if !used.iter().any(|u| u.starts_with(side)) {
                return Err(format!(
                    "{text:?} has no {{{side}}} (or {{{side}_addr}}, {{{side}_ip}}) placeholder"
                ));
            }
        }
        Ok(Template { words })
    }

    /// The program and its arguments with the placeholders replaced.
    pub(crate) fn expand(&self, addrs: RelayAddrs) -> Vec<String> {
        self.words.iter().map(|w| expand_word(w, addrs)).collect()
    }
}

/// Names inside `{...}` that look like placeholders (lowercase letters and `_`).
fn placeholders_in(word: &str) -> Vec<&str> {
    let mut found = Vec::new();
    let mut rest = word;
    while let Some(open) = rest.find('{') {
        let after = &rest[open + 1..];
        match after.find('}') {
            Some(close) => {
                let name = &after[..close];
                if !name.is_empty() && name.chars().all(|c| c.is_ascii_lowercase() || c == '_') {
                    found.push(name);
                }
                rest = &after[close + 1..];
            }
            None => break,
        }
    }
    found
}

/// `word` with its placeholders replaced (also a `--compare` variant's whole `--config` file).
pub(crate) fn expand_word(word: &str, addrs: RelayAddrs) -> String {
    let mut out = word.to_owned();
    for (name, value) in [
        ("listen_addr", addrs.listen.to_string()),
        ("upstream_addr", addrs.upstream.to_string()),
        ("listen_ip", addrs.listen.ip().to_string()),
        ("upstream_ip", addrs.upstream.ip().to_string()),
        ("listen", addrs.listen.port().to_string()),
        ("upstream", addrs.upstream.port().to_string()),
    ] {
        out = out.replace(&format!("{{{name}}}"), &value);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addrs() -> RelayAddrs {
        RelayAddrs {
            listen: "127.0.0.1:7001".parse().unwrap(),
            upstream: "10.0.0.2:5001".parse().unwrap(),
        }
    }

    #[test]
    fn issue_example_expands_to_port_numbers() {
        let t = Template::parse("stone 127.0.0.1:{upstream} 127.0.0.1:{listen}").unwrap();
        assert_eq!(
            t.expand(addrs()),
            ["stone", "127.0.0.1:5001", "127.0.0.1:7001"]
        );
    }

    #[test]
    fn address_and_ip_placeholders() {
        let t = Template::parse(
            "socat TCP-LISTEN:{listen},bind={listen_ip},reuseaddr,fork TCP:{upstream_addr}",
        )
        .unwrap();
        assert_eq!(
            t.expand(addrs()),
            [
                "socat",
                "TCP-LISTEN:7001,bind=127.0.0.1,reuseaddr,fork",
                "TCP:10.0.0.2:5001"
            ]
        );
    }

    #[test]
    fn quotes_follow_shell_rules_and_are_not_a_shell() {
        let t = Template::parse(r#"relay "a b" '{listen}' {upstream_addr} $HOME;"#).unwrap();
        assert_eq!(
            t.expand(addrs()),
            ["relay", "a b", "7001", "10.0.0.2:5001", "$HOME;"]
        );
    }

    #[test]
    fn bad_templates() {
        assert!(Template::parse("").is_err());
        assert!(Template::parse("x 'unclosed {listen} {upstream}").is_err());
        assert!(Template::parse("x {listen} {upstream} {port}").is_err());
        assert!(Template::parse("x {listen}").is_err());
        assert!(Template::parse("x {upstream_addr}").is_err());
        // Braces that are not placeholders are left alone.
        assert!(Template::parse("x {listen} {upstream} {A} {}").is_ok());
    }
}
