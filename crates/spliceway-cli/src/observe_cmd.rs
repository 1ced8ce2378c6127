//! `spliceway status`, `spliceway connections` and `spliceway close`: one JSON request each
//! to the running relay's control socket (`control_client.rs`), printed as text or, with
//! `--json`, as the relay's JSON.

use anyhow::bail;
use serde_json::{Value, json};

use crate::cli::{CloseArgs, ConnectionsArgs, StatusArgs};
use crate::control_client;
use crate::control_protocol::parse_net;
use crate::exit;

pub fn status(args: StatusArgs) -> anyhow::Result<()> {
    let answer = control_client::ask(&args.control, json!({"cmd": "status"}))?;
    let status = &answer["status"];
    if args.json {
        println!("{status}");
        return Ok(());
    }
    print!("{}", status_text(status));
    Ok(())
}

/// `status` as lines of text.
pub fn status_text(s: &Value) -> String {
    let mut out = String::new();
    let line = |out: &mut String, key: &str, value: String| {
        out.push_str(&format!("{key:<18}{value}\n"));
    };
    line(
        &mut out,
        "version",
        s["version"].as_str().unwrap_or("?").to_string(),
    );
    line(&mut out, "pid", s["pid"].to_string());
    line(
        &mut out,
        "uptime",
        humantime::format_duration(std::time::Duration::from_secs(
            s["uptime_seconds"].as_u64().unwrap_or(0),
        ))
        .to_string(),
    );
    line(
        &mut out,
        "state",
        if s["draining"] == Value::Bool(true) {
            "draining".into()
        } else {
            "serving".into()
        },
    );
    line(
        &mut out,
        "connections open",
        s["connections_open"].to_string(),
    );
    line(
        &mut out,
        "accepted/refused",
        format!("{} / {}", s["accepted"], s["refused"]),
    );
    line(
        &mut out,
        "bytes up/down",
        format!("{} / {}", bytes(&s["bytes_up"]), bytes(&s["bytes_down"])),
    );
    line(
        &mut out,
        "rate up/down",
        format!("{} / {}", rate(&s["rate_up"]), rate(&s["rate_down"])),
    );
    let reload = &s["last_reload"];
    line(
        &mut out,
        "last reload",
        if reload.is_null() {
            "none".into()
        } else if reload["ok"] == Value::Bool(true) {
            format!("{} ok", reload["at"].as_str().unwrap_or("?"))
        } else {
            format!(
                "{} failed: {}",
                reload["at"].as_str().unwrap_or("?"),
                reload["error"].as_str().unwrap_or("?")
            )
        },
    );
    if has_udp_route(s) {
        line(
            &mut out,
            "udp sessions open",
            s["udp_sessions_open"].to_string(),
        );
    }
    for route in s["routes"].as_array().into_iter().flatten() {
        if route["protocol"] == "udp" {
            out.push_str(&format!(
                "route {} (udp): {} -> {}; {} sessions open\n",
                route["name"].as_str().unwrap_or("?"),
                join(&route["listen"]),
                join(&route["upstream"]),
                route["sessions_open"],
            ));
            continue;
        }
        out.push_str(&format!(
            "route {}: {} -> {}; {} open, {} up, {} down\n",
            route["name"].as_str().unwrap_or("?"),
            join(&route["listen"]),
            join(&route["upstream"]),
            route["connections_open"],
            rate(&route["rate_up"]),
            rate(&route["rate_down"]),
        ));
    }
    out
}

/// Whether the status lists a UDP route.
fn has_udp_route(s: &Value) -> bool {
    s["routes"]
        .as_array()
        .is_some_and(|routes| routes.iter().any(|r| r["protocol"] == "udp"))
}

pub fn connections(args: ConnectionsArgs) -> anyhow::Result<()> {
    if let Some(client) = &args.client {
        parse_net(client).map_err(|e| exit::usage(anyhow::anyhow!("--client: {e}")))?;
    }
    let answer = control_client::ask(
        &args.control,
        json!({
            "cmd": "connections",
            "route": args.route,
            "client": args.client,
            "sort": args.sort.as_str(),
            "limit": args.limit,
        }),
    )?;
    let (list_field, matched_field) = if args.udp {
        ("udp_sessions", "udp_matched")
    } else {
        ("connections", "matched")
    };
    let list = answer[list_field].as_array().cloned().unwrap_or_default();
    if args.json {
        println!("{}", Value::Array(list));
        return Ok(());
    }
    if args.udp {
        print!("{}", sessions_table(&list, usize::MAX));
    } else {
        print!("{}", connections_table(&list, usize::MAX));
    }
    if let Some(matched) = answer[matched_field].as_u64()
        && matched as usize > list.len()
    {
        println!("({} of {matched} shown)", list.len());
    }
    if !args.udp
        && let Some(sessions) = answer["udp_matched"].as_u64()
        && sessions > 0
    {
        println!("({sessions} UDP sessions: spliceway connections --udp)");
    }
    Ok(())
}

/// The UDP sessions as a table, each row cut to `width` characters.
pub fn sessions_table(list: &[Value], width: usize) -> String {
    let mut out = String::new();
    let mut row = |text: String| {
        out.push_str(&text.chars().take(width).collect::<String>());
        out.push('\n');
    };
    row(format!(
        "{:<10} {:<21} {:<21} {:>7} {:>7} {:>10} {:>10} {:>10} {:>10}",
        "ROUTE", "CLIENT", "UPSTREAM", "AGE", "IDLE", "DGRAMS UP", "UP", "DGRAMS DN", "DOWN"
    ));
    for s in list {
        row(format!(
            "{:<10} {:<21} {:<21} {:>7} {:>7} {:>10} {:>10} {:>10} {:>10}",
            s["route"].as_str().unwrap_or("?"),
            s["client"].as_str().unwrap_or("?"),
            s["upstream"].as_str().unwrap_or("?"),
            age(&s["age_seconds"]),
            age(&s["idle_seconds"]),
            s["datagrams_up"].as_u64().unwrap_or(0),
            bytes(&s["bytes_up"]),
            s["datagrams_down"].as_u64().unwrap_or(0),
            bytes(&s["bytes_down"]),
        ));
    }
    out
}

/// The connections as a table, each row cut to `width` characters.
pub fn connections_table(list: &[Value], width: usize) -> String {
    let mut out = String::new();
    let mut row = |text: String| {
        out.push_str(&text.chars().take(width).collect::<String>());
        out.push('\n');
    };
    row(format!(
        "{:>8} {:<10} {:<21} {:<21} {:<15} {:>7} {:>10} {:>10} {:>11} {:>11} {}",
        "ID",
        "ROUTE",
        "CLIENT",
        "UPSTREAM",
        "PHASE",
        "AGE",
        "UP",
        "DOWN",
        "RATE UP",
        "RATE DOWN",
        "MODE"
    ));
    for c in list {
        let mut client = c["client"].as_str().unwrap_or("?").to_string();
        if let Some(via) = c["via"].as_str() {
            client = format!("{client} via {via}");
        }
        row(format!(
            "{:>8} {:<10} {:<21} {:<21} {:<15} {:>7} {:>10} {:>10} {:>11} {:>11} {}",
            c["id"].as_u64().unwrap_or(0),
            c["route"].as_str().unwrap_or("?"),
            client,
            c["upstream"].as_str().unwrap_or("-"),
            c["phase"].as_str().unwrap_or("?"),
            age(&c["age_seconds"]),
            bytes(&c["bytes_up"]),
            bytes(&c["bytes_down"]),
            rate(&c["rate_up"]),
            rate(&c["rate_down"]),
            c["mode"].as_str().unwrap_or("?"),
        ));
    }
    out
}

pub fn close(args: CloseArgs) -> anyhow::Result<()> {
    if let Some(client) = &args.client {
        parse_net(client).map_err(|e| exit::usage(anyhow::anyhow!("--client: {e}")))?;
    }
    if args.udp {
        return end_udp_sessions(&args);
    }
    let request = if args.ids.is_empty() {
        json!({"cmd": "close", "client": args.client, "route": args.route})
    } else {
        json!({"cmd": "close", "ids": args.ids})
    };
    let answer = control_client::ask(&args.control, request)?;
    let closed = answer["closed"].as_array().cloned().unwrap_or_default();
    if args.json {
        println!("{}", json!({"closed": closed}));
    } else {
        println!(
            "closed {}: {}",
            closed.len(),
            closed
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(" ")
        );
    }
    if closed.is_empty() {
        bail!("no such connection");
    }
    Ok(())
}

/// `spliceway close --udp`: ends the UDP sessions --client and --route select.
fn end_udp_sessions(args: &CloseArgs) -> anyhow::Result<()> {
    if args.client.is_none() && args.route.is_none() {
        return Err(exit::usage(anyhow::anyhow!(
            "--udp needs --client or --route (which sessions to end)"
        )));
    }
    let answer = control_client::ask(
        &args.control,
        json!({"cmd": "close", "udp": true, "client": args.client, "route": args.route}),
    )?;
    let ended = answer["ended"].as_array().cloned().unwrap_or_default();
    if args.json {
        println!("{}", json!({"ended": ended}));
    } else {
        println!("ended {} UDP sessions", ended.len());
        for session in &ended {
            println!(
                "{} {}",
                session["route"].as_str().unwrap_or("?"),
                session["client"].as_str().unwrap_or("?")
            );
        }
    }
    if ended.is_empty() {
        bail!("no such UDP session");
    }
    Ok(())
}

fn join(list: &Value) -> String {
    list.as_array()
        .into_iter()
        .flatten()
        .map(|v| v.as_str().unwrap_or("?").to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// A byte count, binary units.
pub fn bytes(v: &Value) -> String {
    bytesize::ByteSize(v.as_f64().unwrap_or(0.0) as u64)
        .display()
        .iec_short()
        .to_string()
}

/// A rate in bytes a second.
pub fn rate(v: &Value) -> String {
    format!("{}/s", bytes(v))
}

/// An age in seconds, short.
fn age(v: &Value) -> String {
    let s = v.as_f64().unwrap_or(0.0) as u64;
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_udp_route_shows_its_open_sessions() {
        let status = json!({
            "udp_sessions_open": 3,
            "routes": [
                {"name": "web", "listen": ["127.0.0.1:80"], "upstream": ["10.0.0.1:80"],
                 "connections_open": 2, "rate_up": 0, "rate_down": 0, "protocol": "tcp",
                 "sessions_open": 0},
                {"name": "dns", "listen": ["127.0.0.1:53"], "upstream": ["10.0.0.1:53"],
                 "connections_open": 0, "rate_up": 0, "rate_down": 0, "protocol": "udp",
                 "sessions_open": 3},
            ],
        });
        let text = status_text(&status);
        assert!(text.contains("udp sessions open 3\n"), "{text}");
        assert!(
            text.contains("route dns (udp): 127.0.0.1:53 -> 10.0.0.1:53; 3 sessions open\n"),
            "{text}"
        );
        assert!(
            text.contains("route web: 127.0.0.1:80 -> 10.0.0.1:80; 2 open"),
            "{text}"
        );
        let tcp_only = json!({"routes": [status["routes"][0].clone()]});
        assert!(
            !status_text(&tcp_only).contains("udp"),
            "no UDP line without UDP routes"
        );
    }
}
