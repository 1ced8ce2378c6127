//! spliceway.toml(5): the configuration file, every key from [`spliceway_config::KEYS`] (the
//! table tests hold to what the file reader accepts), with the prose around them here.

use roff::{Roff, bold, italic, roman};
use spliceway_config::{KEYS, Key, KeyTable};

use super::pages::Block::{self, Example, Item, Para};
use super::pages::section;

const DESCRIPTION: &[Block] = &[
    Para(
        "spliceway run reads its routes and relay-wide settings from a TOML file, by default \
         /etc/spliceway/spliceway.toml. Keys at the top of the file, before any table, are \
         relay-wide. Each [[route]] table (two brackets: an array of tables, one per route) \
         has a name, listen addresses and either an upstream or [[route.sni]] entries. \
         [defaults] gives route options for every route; a route's own keys win.",
    ),
    Para(
        "Reading is strict: an unknown key (the message names the key most likely meant), a \
         value of the wrong type, an address, network, name pattern, size or duration that \
         does not parse, a time past 7 days, a route with both or neither of upstream and \
         [[route.sni]], a user that does not exist, listeners the kernel cannot bind \
         together, routes that relay back into the relay: each is an error naming the file, \
         line, column and key. spliceway check refuses what spliceway run would; run exits \
         78 on it.",
    ),
    Para(
        "Durations are written \"500ms\", \"10s\", \"5m\", \"1h\" (at most \"7days\"); a \
         number without a unit is refused. Sizes are written \"64KiB\", \"1MiB\", \"1GiB\" \
         (powers of 1024), \"64KB\", \"1MB\" (powers of 1000), or a number of bytes; a bare \
         \"64K\" is refused as ambiguous. Networks are CIDR (\"10.0.0.0/8\") or single \
         addresses.",
    ),
    Para(
        "A reload (SIGHUP, systemctl reload spliceway) reads the file again and applies it \
         without dropping a connection; routes are matched by name. A file that fails to read \
         is logged and the running configuration stays. Keys marked \"restart\" below keep \
         their value until the relay restarts (the reload warns).",
    ),
];

/// The heading and the introduction of each table's section.
fn heading(table: KeyTable) -> (&'static str, &'static str) {
    match table {
        KeyTable::Global => (
            "RELAY-WIDE KEYS",
            "At the top of the file, before any table.",
        ),
        KeyTable::Route => (
            "ROUTES",
            "Each [[route]] table is one route: these keys, and any of the route options below.",
        ),
        KeyTable::Options => (
            "ROUTE OPTIONS",
            "In [[route]], or in [defaults] for every route that does not set them.",
        ),
        KeyTable::Sni => (
            "SERVER NAME ROUTING",
            "A route with [[route.sni]] entries instead of an upstream reads each client's TLS \
             ClientHello (without decrypting anything) and relays it by the server name it \
             asks for; a name no entry matches is refused, so the relay is not an open proxy \
             to any host a client names. Each entry:",
        ),
        KeyTable::Upstreams => (
            "SEVERAL UPSTREAMS",
            "A route may balance its connections over several upstreams: upstream = [\"a:1\", \
             \"b:2\"], or one [[route.upstreams]] table each, with these keys. balance, \
             max_fails, fail_timeout and health_check (above) say how connections spread and \
             how an upstream's health is judged; spliceway_upstream_up{route,upstream} shows \
             it. One upstream without a health check is a plain route. Each table:",
        ),
        KeyTable::HealthCheck => (
            "HEALTH CHECKS",
            "health_check = { ... } in a route with upstreams probes each of them, on a thread \
             of its own: a TCP connect (no send, expect or http_get), send/expect bytes, or an \
             HTTP GET. Its keys:",
        ),
        _ => ("OTHER KEYS", ""),
    }
}

const EXAMPLE: &str = "metrics = \"127.0.0.1:9898\"
drain_timeout = \"30s\"

[defaults]
idle_timeout = \"5m\"

[[route]]
name = \"s3\"
listen = [\"0.0.0.0:443\", \"[::]:443\"]
upstream = \"s3-ap-northeast-1.amazonaws.com:443\"
allow = [\"10.0.0.0/8\", \"192.168.0.0/16\"]

[[route]]
name = \"s3-by-name\"
listen = [\"0.0.0.0:8443\"]
[[route.sni]]
match = \"*.s3.ap-northeast-1.amazonaws.com\"
upstream = \"s3-ap-northeast-1.amazonaws.com:443\"";

/// One key: its name and type as the term, then what it does, its default and whether a
/// reload applies it.
fn key(roff: &mut Roff, key: &Key) {
    roff.control("TP", []);
    roff.text([bold(key.name), roman(" = "), italic(key.kind)]);
    roff.text([roman(key.description)]);
    let default = match key.default.strip_prefix('(') {
        Some(words) => words.trim_end_matches(')').to_string(),
        None => key.default.to_string(),
    };
    let restart = if key.reloads {
        ""
    } else {
        " Restart: a reload does not change it."
    };
    roff.text([roman(format!("Default: {default}.{restart}"))]);
}

/// The page's roff source.
pub fn render(version: &str) -> String {
    let mut roff = Roff::new();
    roff.control("TH", ["spliceway.toml", "5", "\"\"", version, "spliceway"]);
    roff.control("SH", ["NAME"]);
    roff.text([roman(
        "spliceway.toml - configuration file of the spliceway relay (spliceway run)",
    )]);
    roff.control("SH", ["SYNOPSIS"]);
    roff.text([bold("/etc/spliceway/spliceway.toml")]);
    section(&mut roff, "DESCRIPTION", DESCRIPTION);
    for table in KeyTable::ALL {
        let (title, intro) = heading(table);
        roff.control("SH", [title]);
        roff.text([roman(intro)]);
        for k in KEYS.iter().filter(|k| k.table == table) {
            key(&mut roff, k);
        }
    }
    roff.control("SH", ["EXAMPLES"]);
    roff.text([roman(
        "Port 443 relayed to S3 for two private networks, and a route by server name on 8443:",
    )]);
    roff.control("RS", ["4"]);
    roff.control("nf", []);
    roff.text([roman(EXAMPLE)]);
    roff.control("fi", []);
    roff.control("RE", []);
    section(
        &mut roff,
        "FILES",
        &[
            Item(
                "/etc/spliceway/spliceway.toml",
                "The file spliceway run and spliceway check read unless --config names another. \
                 The package installs an example that shows every key, with comments.",
            ),
            Example(
                "Check it, then apply it to the running service:",
                "spliceway check && sudo systemctl reload spliceway",
            ),
        ],
    );
    roff.control("SH", ["SEE ALSO"]);
    let see_also = [
        ("spliceway-run", "1", ","),
        ("spliceway-check", "1", ","),
        ("spliceway", "1", ""),
    ];
    for (name, section, comma) in see_also {
        roff.text([bold(name), roman(format!("({section}){comma}"))]);
    }
    roff.render()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_key_is_on_the_page_with_its_default() {
        let page = render("spliceway test");
        assert!(page.contains(".TH spliceway.toml 5"), "{page}");
        for key in KEYS {
            let escaped = key.name.replace('-', "\\-");
            assert!(
                page.contains(&format!("\\fB{escaped}\\fR = ")),
                "{} is not on the page",
                key.name
            );
        }
        for title in [
            "RELAY-WIDE KEYS",
            "ROUTES",
            "ROUTE OPTIONS",
            "SERVER NAME ROUTING",
        ] {
            assert!(
                page.contains(&format!(".SH \"{title}\""))
                    || page.contains(&format!(".SH {title}")),
                "{title}"
            );
        }
        assert!(page.contains("Default: \"10s\"."), "{page}");
        assert!(page.contains("Restart: a reload does not change it."));
    }
}
