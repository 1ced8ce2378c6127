//! `spliceway man` prints spliceway(1), `spliceway man COMMAND` the page of each command its
//! SEE ALSO names, and `spliceway man spliceway.toml` spliceway.toml(5), so a package can install
//! every page the main one points to. Each page has the sections an operator looks for, and
//! `--help` describes each command's own flags.

use std::process::Command;

const EXE: &str = env!("CARGO_BIN_EXE_spliceway");

fn man(args: &[&str]) -> std::process::Output {
    Command::new(EXE).arg("man").args(args).output().unwrap()
}

fn page(args: &[&str]) -> String {
    let out = man(args);
    assert!(out.status.success(), "spliceway man {args:?}");
    String::from_utf8(out.stdout).unwrap()
}

/// The pages a SEE ALSO section names in spliceway's namespace, as packaging/build-packages.sh
/// reads them: (`relay`, `1`) for `\fBspliceway\-relay\fR(1)`, (`spliceway.toml`, `5`).
fn named(text: &str) -> Vec<(String, String)> {
    let see_also = text
        .split(".SH \"SEE ALSO\"")
        .nth(1)
        .expect("a SEE ALSO section");
    see_also
        .lines()
        .filter_map(|l| {
            let rest = l.strip_prefix("\\fB")?;
            let (name, rest) = rest.split_once("\\fR(")?;
            let section = rest.split(')').next()?;
            let name = name.replace("\\-", "-");
            let page = match name.strip_prefix("spliceway-") {
                Some(command) => command.to_string(),
                None if name == "spliceway.toml" => name,
                None => return None,
            };
            Some((page, section.to_string()))
        })
        .collect()
}

#[test]
fn every_page_the_main_page_names_can_be_printed() {
    let main = page(&[]);
    assert!(main.contains(".TH spliceway 1"), "{main}");
    let named = named(&main);
    for command in [
        "relay",
        "run",
        "check",
        "upgrade",
        "status",
        "connections",
        "close",
        "top",
        "bench",
        "sink",
        "completions",
    ] {
        assert!(
            named.iter().any(|(n, s)| n == command && s == "1"),
            "SEE ALSO names {command}: {named:?}"
        );
    }
    assert!(
        named.contains(&("spliceway.toml".into(), "5".into())),
        "{named:?}"
    );
    for noise in ["help", "man"] {
        assert!(
            !named.iter().any(|(n, _)| n == noise),
            "no {noise} page: {named:?}"
        );
        let out = man(&[noise]);
        assert_eq!(out.status.code(), Some(2), "spliceway man {noise}");
    }
    for (name, section) in &named {
        let text = page(&[name]);
        let title = if name == "spliceway.toml" {
            format!(".TH spliceway.toml {section}")
        } else {
            format!(".TH spliceway-{name} {section}")
        };
        assert!(
            text.contains(&title),
            "the page of {name} is titled after it: {}",
            &text[..text.len().min(300)]
        );
        // Every page it names exists too.
        for (other, _) in named_in(&text) {
            assert!(man(&[&other]).status.success(), "{name} names {other}");
        }
    }
    let relay = page(&["relay"]);
    assert!(
        relay.contains("accept\\-proxy"),
        "the relay page has its flags"
    );
}

fn named_in(text: &str) -> Vec<(String, String)> {
    named(text)
        .into_iter()
        .filter(|(n, _)| n != "spliceway")
        .collect()
}

/// The sections of a page, in order.
fn sections(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|l| l.strip_prefix(".SH "))
        .map(|s| s.trim_matches('"').to_string())
        .collect()
}

/// Issue 25: the pages were clap's stubs (DESCRIPTION repeated NAME; no FILES, SIGNALS, EXIT
/// STATUS or EXAMPLES).
#[test]
fn each_page_has_the_sections_an_operator_looks_for() {
    let common = [
        "NAME",
        "SYNOPSIS",
        "DESCRIPTION",
        "OPTIONS",
        "EXIT STATUS",
        "EXAMPLES",
        "SEE ALSO",
    ];
    for (page_name, own) in [
        ("", &["COMMANDS", "FILES", "ENVIRONMENT"][..]),
        ("relay", &["SIGNALS", "LOGGING", "METRICS"]),
        ("run", &["FILES", "SIGNALS", "LOGGING", "METRICS"]),
        ("check", &["FILES"]),
        ("upgrade", &["FILES"]),
        ("status", &["FILES"]),
        ("connections", &["FILES"]),
        ("close", &["FILES"]),
        ("top", &["FILES"]),
        ("bench", &[]),
        ("sink", &[]),
    ] {
        let args: &[&str] = if page_name.is_empty() {
            &[]
        } else {
            &[page_name]
        };
        let text = page(args);
        let found = sections(&text);
        for title in common.iter().chain(own) {
            assert!(
                found.iter().any(|s| s == title),
                "{page_name}: no {title} in {found:?}"
            );
        }
        // DESCRIPTION is not NAME again.
        let name_line = text
            .split(".SH NAME\n")
            .nth(1)
            .unwrap()
            .lines()
            .next()
            .unwrap();
        let about = name_line.split(" \\- ").nth(1).unwrap_or(name_line);
        let description = text.split(".SH DESCRIPTION\n").nth(1).unwrap();
        assert!(
            !description.starts_with(about),
            "{page_name}: DESCRIPTION repeats NAME: {about}"
        );
    }
    let run = page(&["run"]);
    for needle in ["SIGHUP", "/etc/spliceway/spliceway.toml", "\\fB78\\fR"] {
        assert!(run.contains(needle), "run: {needle}");
    }
}

/// spliceway.toml(5) documents every key of the file, from the configuration crate's table.
#[test]
fn the_configuration_page_has_every_key() {
    let text = page(&["spliceway.toml"]);
    for title in [
        "NAME",
        "SYNOPSIS",
        "DESCRIPTION",
        "RELAY-WIDE KEYS",
        "ROUTES",
        "ROUTE OPTIONS",
        "SERVER NAME ROUTING",
        "EXAMPLES",
        "FILES",
        "SEE ALSO",
    ] {
        assert!(sections(&text).iter().any(|s| s == title), "no {title}");
    }
    for key in spliceway_config::KEYS {
        let term = format!("\\fB{}\\fR = ", key.name.replace('-', "\\-"));
        assert!(text.contains(&term), "{} is not on the page", key.name);
    }
}

#[test]
fn an_unknown_page_is_a_usage_error() {
    let out = man(&["nope"]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("no man page \"nope\"")
            && stderr.contains("relay")
            && stderr.contains("spliceway.toml"),
        "{stderr}"
    );
}

fn help(command: &str) -> String {
    let out = Command::new(EXE)
        .args([command, "--help"])
        .output()
        .unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap()
}

/// Issue 25: `run --help` and `check --help` described `-v` as `relay` does ("-v logs each
/// closed connection"), which is wrong for them.
#[test]
fn help_describes_each_commands_own_logging_flags() {
    let relay = help("relay");
    assert!(relay.contains("-v logs each closed connection"), "{relay}");
    let run = help("run");
    assert!(run.contains("than the file's log_level"), "{run}");
    assert!(!run.contains("-vvv everything"), "{run}");
    let check = help("check");
    assert!(
        !check.contains("--verbose") && !check.contains("--log-format"),
        "{check}"
    );
    assert!(
        check.contains("Print nothing when the file is valid"),
        "{check}"
    );
}
