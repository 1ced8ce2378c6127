//! The command line that starts one `--compare` variant for a round, in one place for the four
//! kinds of variant:
//!
//! - `NAME=BINARY [relay flags]`: `BINARY relay LISTEN UPSTREAM --threads 1 -q [flags]`, where
//!   each `--upstream echo` among the flags becomes one more echo server's address (issue 29).
//! - `NAME=BINARY --config FILE [run flags]`: `BINARY run --config COPY -q [flags]`, COPY being
//!   FILE with its placeholders (`{listen}`, `{upstream}`, ... as `--peer` has them) filled in.
//!   For what `relay`'s flags cannot say: `route_rate_limit`, a rate limit's burst, several
//!   routes. The file must listen on `{listen}` and forward to `{upstream}`.
//! - `--compare-connect-proxy NAME=BINARY`: `BINARY LISTEN` (asked for a tunnel by the client).
//! - `--compare-peer NAME='TEMPLATE'`: the template with its placeholders filled, as `--peer`.
//! - `--compare-top NAME=BINARY [relay flags]`: as a `relay` variant. When there is one, every
//!   `relay` variant gets `--control-socket` (top's way in), so that all carry the same idle
//!   control thread and only top's asking differs.

use std::net::SocketAddr;
use std::path::Path;

use anyhow::{Context as _, anyhow};

use crate::args::Variant;
use crate::error::usage;
use crate::paths::{RelayAddrs, expand_word};

/// Checks what can be checked before any round: a `--config` file is there and readable, and
/// `--upstream echo` (a `relay` flag) is not beside it.
pub(crate) fn check(variant: &Variant) -> anyhow::Result<()> {
    let Some(file) = variant.config() else {
        return Ok(());
    };
    std::fs::read_to_string(file).map_err(|e| {
        usage(anyhow!(
            "--compare {}: cannot read --config {file}: {e}",
            variant.name
        ))
    })?;
    if variant.observed {
        return Err(usage(anyhow!(
            "--compare-top {}: top finds the relay by the control socket the bench gives \
             `relay`; not with --config",
            variant.name
        )));
    }
    if variant.extra().iter().any(|a| a == "--upstream") {
        return Err(usage(anyhow!(
            "--compare {}: --upstream is a `relay` flag; with --config the file names the \
             upstreams",
            variant.name
        )));
    }
    Ok(())
}

/// The argv of `variant` listening on `listen` and forwarding to `upstream`. `echo` makes one
/// more echo server for each `--upstream echo`; a `--config` file's filled copy is written to
/// `dir`, which must outlive the process. A `relay` variant listens on `control` for the
/// control protocol when it is given.
pub(crate) fn command(
    variant: &Variant,
    listen: SocketAddr,
    upstream: SocketAddr,
    dir: &Path,
    control: Option<&Path>,
    echo: &mut dyn FnMut() -> anyhow::Result<SocketAddr>,
) -> anyhow::Result<Vec<String>> {
    let addrs = RelayAddrs { listen, upstream };
    if let Some(template) = &variant.peer {
        return Ok(template.expand(addrs));
    }
    if variant.connect_proxy {
        return Ok(vec![variant.binary().to_owned(), listen.to_string()]);
    }
    if let Some(file) = variant.config() {
        let text = std::fs::read_to_string(file).with_context(|| format!("reading {file}"))?;
        let copy = dir.join(format!("{}.toml", variant.name));
        std::fs::write(&copy, expand_word(&text, addrs))
            .with_context(|| format!("writing {}", copy.display()))?;
        let mut argv = vec![
            variant.binary().to_owned(),
            "run".into(),
            "--config".into(),
            copy.to_string_lossy().into_owned(),
            "-q".into(),
        ];
        let mut skip_next = false;
        for arg in variant.extra() {
            if std::mem::take(&mut skip_next) {
                continue;
            }
            if arg == "--config" {
                skip_next = true;
                continue;
            }
            argv.push(arg.clone());
        }
        return Ok(argv);
    }
    let mut argv = vec![
        variant.binary().to_owned(),
        "relay".into(),
        listen.to_string(),
        upstream.to_string(),
        "--threads".into(),
        "1".into(),
        "-q".into(),
    ];
    if let Some(control) = control {
        argv.push("--control-socket".into());
        argv.push(control.to_string_lossy().into_owned());
    }
    let mut previous = "";
    for arg in variant.extra() {
        if previous == "--upstream" && arg == "echo" {
            argv.push(echo()?.to_string());
        } else {
            argv.push(arg.clone());
        }
        previous = arg;
    }
    Ok(argv)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::args::{parse_compare_peer, parse_connect_proxy, parse_variant};

    fn addrs() -> (SocketAddr, SocketAddr) {
        (
            "127.0.0.1:7001".parse().unwrap(),
            "127.0.0.1:5001".parse().unwrap(),
        )
    }

    fn no_echo() -> anyhow::Result<SocketAddr> {
        panic!("no --upstream echo here")
    }

    #[test]
    fn relay_variants_get_their_flags_and_echo_upstreams() {
        let dir = tempfile::tempdir().unwrap();
        let (listen, upstream) = addrs();
        let v = parse_variant("two=bin --rate-limit-up 500mbit --upstream echo").unwrap();
        let mut made = 0;
        let argv = command(&v, listen, upstream, dir.path(), None, &mut || {
            made += 1;
            Ok("127.0.0.1:6001".parse().unwrap())
        })
        .unwrap();
        assert_eq!(
            argv.join(" "),
            "bin relay 127.0.0.1:7001 127.0.0.1:5001 --threads 1 -q --rate-limit-up 500mbit \
             --upstream 127.0.0.1:6001"
        );
        assert_eq!(made, 1);
        let control = dir.path().join("c.sock");
        let plain = parse_variant("plain=bin").unwrap();
        let argv = command(
            &plain,
            listen,
            upstream,
            dir.path(),
            Some(&control),
            &mut no_echo,
        );
        assert_eq!(
            argv.unwrap()[7..],
            ["--control-socket".to_owned(), control.display().to_string()]
        );
        let proxy = parse_connect_proxy("p=proxy").unwrap();
        let argv = command(&proxy, listen, upstream, dir.path(), None, &mut no_echo).unwrap();
        assert_eq!(argv, ["proxy", "127.0.0.1:7001"]);
    }

    #[test]
    fn config_variants_run_a_filled_copy_of_their_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("route.toml");
        std::fs::write(
            &file,
            "[[route]]\nlisten = [\"127.0.0.1:{listen}\"]\nupstream = \"{upstream_addr}\"\n\
             route_rate_limit = { up = \"500mbit\" }\n",
        )
        .unwrap();
        let v = parse_variant(&format!("route=bin --config {} -v", file.display())).unwrap();
        check(&v).unwrap();
        let (listen, upstream) = addrs();
        let out = tempfile::tempdir().unwrap();
        let argv = command(&v, listen, upstream, out.path(), None, &mut no_echo).unwrap();
        let copy = out.path().join("route.toml");
        assert_eq!(
            argv,
            ["bin", "run", "--config", copy.to_str().unwrap(), "-q", "-v"]
        );
        let text = std::fs::read_to_string(copy).unwrap();
        assert!(text.contains("\"127.0.0.1:7001\""), "{text}");
        assert!(text.contains("upstream = \"127.0.0.1:5001\""), "{text}");
        assert!(
            text.contains("route_rate_limit = { up = \"500mbit\" }"),
            "{text}"
        );
    }

    #[test]
    fn config_variants_are_checked_before_any_round() {
        let missing = parse_variant("x=bin --config /nonexistent/spliceway.toml").unwrap();
        let err = check(&missing).unwrap_err();
        assert!(err.downcast_ref::<crate::UsageError>().is_some(), "{err:#}");
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("a.toml");
        std::fs::write(&file, "").unwrap();
        let echo = parse_variant(&format!(
            "x=bin --config {} --upstream echo",
            file.display()
        ))
        .unwrap();
        assert!(check(&echo).is_err());
        let top = crate::args::parse_compare_top(&format!("t=bin --config {}", file.display()));
        assert!(check(&top.unwrap()).is_err());
        assert!(check(&parse_variant("plain=bin").unwrap()).is_ok());
    }

    #[test]
    fn peer_variants_fill_their_template() {
        let dir = tempfile::tempdir().unwrap();
        let (listen, upstream) = addrs();
        let v = parse_compare_peer("nginx=env R=1 nginx.sh {listen_addr} {upstream_addr}").unwrap();
        let argv = command(&v, listen, upstream, dir.path(), None, &mut no_echo).unwrap();
        assert_eq!(
            argv,
            ["env", "R=1", "nginx.sh", "127.0.0.1:7001", "127.0.0.1:5001"]
        );
    }
}
