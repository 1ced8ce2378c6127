//! The control socket's JSON protocol (docs/control-protocol.md): one request a line, one
//! answer a line, versioned (`"v": 1`), for `spliceway status`, `connections`, `close`, `top`
//! and any script.
//!
//! ```text
//! {"v":1,"cmd":"status"}
//! {"v":1,"cmd":"connections","route":"s3","client":"10.0.0.0/8","sort":"rate","limit":20}
//! {"v":1,"cmd":"close","ids":[12,13]}        {"v":1,"cmd":"close","client":"10.1.2.3/32"}
//! ```
//!
//! Every answer is an object with `"v": 1` and `"ok"`; a failed request (unknown command, bad
//! field, wrong version) is answered `"ok": false` with an `"error"` saying why, never left
//! unanswered. What a listing shows is gathered by the engine through the workers' mailboxes
//! ([`RelayHandle::connections`]).

use std::io::{BufRead as _, BufReader, Read as _};
use std::os::unix::net::UnixStream;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use serde_json::{Value, json};
use spliceway::observe::{
    ConnectionFilter, ConnectionInfo, ConnectionList, ConnectionQuery, RouteActivity, SortBy,
    UdpSessionInfo,
};
use spliceway::{RelayHandle, Upstream};

/// How long a peer has to send its request line (`control.rs` serves each client for at most
/// this a request).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// The peer of a control connection, as the kernel reports it (`control::peer`).
#[derive(Debug, Clone, Copy)]
pub struct Peer {
    pub pid: i32,
    pub uid: u32,
}

/// The protocol's version: what requests carry in `"v"` and answers say.
pub const VERSION: u64 = 1;
/// The longest request line read; a longer one is answered with an error.
pub const MAX_REQUEST_BYTES: usize = 64 * 1024;
/// Requests served on one connection before it is closed (every loop bounded).
pub const MAX_REQUESTS_PER_CONNECTION: usize = 100_000;

/// How the last configuration reload went (`spliceway run`'s SIGHUP), for `status`.
#[derive(Debug, Clone)]
pub struct ReloadRecord {
    pub at: SystemTime,
    /// `None`: it succeeded; else why it failed.
    pub error: Option<String>,
}

/// Where the reload thread records its outcome, shared with the control socket.
pub type LastReload = Arc<Mutex<Option<ReloadRecord>>>;

/// What the JSON requests are answered from.
#[derive(Debug, Clone)]
pub struct Observer {
    handle: RelayHandle,
    started: Instant,
    started_at: SystemTime,
    last_reload: LastReload,
}

impl Observer {
    /// Answers for the relay behind `handle`, started now; `last_reload` is kept by whoever
    /// reloads it (empty when nothing does: `spliceway relay`).
    pub fn new(handle: RelayHandle, last_reload: LastReload) -> Self {
        Observer {
            handle,
            started: Instant::now(),
            started_at: SystemTime::now(),
            last_reload,
        }
    }

    /// The answer line (without its newline) to the request line `request` from `peer`.
    pub fn answer(&self, request: &str, peer: Peer) -> String {
        match self.try_answer(request, peer) {
            Ok(mut answer) => {
                answer["v"] = json!(VERSION);
                answer["ok"] = json!(true);
                answer.to_string()
            }
            Err(error) => error_answer(&error),
        }
    }

    fn try_answer(&self, request: &str, peer: Peer) -> Result<Value, String> {
        let request: Value = serde_json::from_str(request).map_err(|e| format!("not JSON: {e}"))?;
        let Some(fields) = request.as_object() else {
            return Err("a request is a JSON object".into());
        };
        match fields.get("v").and_then(Value::as_u64) {
            Some(VERSION) => {}
            Some(other) => {
                return Err(format!(
                    "protocol version {other} is not supported (this relay speaks {VERSION})"
                ));
            }
            None => return Err(format!("\"v\" is missing (this relay speaks {VERSION})")),
        }
        let cmd = fields
            .get("cmd")
            .and_then(Value::as_str)
            .ok_or("\"cmd\" is missing")?;
        match cmd {
            "status" => self.status(),
            "connections" => self.connections(&request),
            "close" => self.close(&request, peer),
            other => Err(format!(
                "unknown command {other:?} (known: status, connections, close)"
            )),
        }
    }

    fn status(&self) -> Result<Value, String> {
        let snapshot = self.handle.snapshot();
        let live = self
            .handle
            .connections(&ConnectionQuery::new(
                ConnectionFilter::all(),
                SortBy::Age,
                Some(0),
            ))
            .map_err(|e| e.to_string())?;
        let stats = &snapshot.stats;
        let refused = stats.denied
            + stats.sni_refused
            + stats.resolve_refused
            + stats.self_loops
            + stats.proxy_header_errors().iter().sum::<u64>();
        let routes: Vec<Value> = self
            .handle
            .routes()
            .iter()
            .map(|route| {
                let activity = live
                    .routes
                    .iter()
                    .find(|r| r.route == route.name)
                    .cloned()
                    .unwrap_or_default();
                json!({
                    "name": route.name,
                    "listen": route.listen.iter().map(ToString::to_string).collect::<Vec<_>>(),
                    "upstream": upstreams(&route.upstream),
                    "connections_open": activity.open,
                    "rate_up": activity.rate_up.round(),
                    "rate_down": activity.rate_down.round(),
                    "protocol": match route.protocol {
                        spliceway::Protocol::Udp => "udp",
                        _ => "tcp",
                    },
                    "sessions_open": route.udp_sessions,
                })
            })
            .collect();
        let (rate_up, rate_down) = live
            .routes
            .iter()
            .fold((0.0, 0.0), |(u, d), r| (u + r.rate_up, d + r.rate_down));
        let last_reload = self
            .last_reload
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
            .map(|record| {
                json!({
                    "at": humantime::format_rfc3339_seconds(record.at).to_string(),
                    "ok": record.error.is_none(),
                    "error": record.error,
                })
            });
        Ok(json!({
            "status": {
                "version": env!("CARGO_PKG_VERSION"),
                "pid": std::process::id(),
                "started_at": humantime::format_rfc3339_seconds(self.started_at).to_string(),
                "uptime_seconds": self.started.elapsed().as_secs(),
                "draining": self.handle.is_stopping(),
                "connections_open": snapshot.active_connections,
                "udp_sessions_open": snapshot.udp_sessions,
                "accepted": stats.accepted,
                "refused": refused,
                "bytes_up": stats.bytes_client_to_upstream,
                "bytes_down": stats.bytes_upstream_to_client,
                "rate_up": rate_up.round(),
                "rate_down": rate_down.round(),
                "routes": routes,
                "last_reload": last_reload,
            }
        }))
    }

    fn connections(&self, request: &Value) -> Result<Value, String> {
        let filter = filter_of(request)?;
        let sort = match request.get("sort").map(|v| v.as_str().ok_or(v)) {
            None | Some(Ok("age")) => SortBy::Age,
            Some(Ok("bytes")) => SortBy::Bytes,
            Some(Ok("rate")) => SortBy::Rate,
            Some(Ok(other)) => {
                return Err(format!("\"sort\": {other:?} is not age, bytes or rate"));
            }
            Some(Err(v)) => return Err(format!("\"sort\": {v} is not a string")),
        };
        let limit = match request.get("limit") {
            None | Some(Value::Null) => None,
            Some(v) => Some(
                v.as_u64()
                    .and_then(|n| usize::try_from(n).ok())
                    .ok_or_else(|| format!("\"limit\": {v} is not a count"))?,
            ),
        };
        let list = self
            .handle
            .connections(&ConnectionQuery::new(filter, sort, limit))
            .map_err(|e| e.to_string())?;
        Ok(list_json(&list))
    }

    fn close(&self, request: &Value, peer: Peer) -> Result<Value, String> {
        let filter = filter_of(request)?;
        if filter.is_everything() {
            return Err("close needs \"ids\", \"client\" or \"route\"".into());
        }
        let by = format!("asked by uid {} pid {}", peer.uid, peer.pid);
        if request.get("udp").and_then(Value::as_bool) == Some(true) {
            let ended = self
                .handle
                .end_udp_sessions(&filter, &by)
                .map_err(|e| e.to_string())?;
            let ended: Vec<Value> = ended
                .iter()
                .map(|(route, client)| json!({"route": route, "client": client.to_string()}))
                .collect();
            return Ok(json!({ "ended": ended }));
        }
        let closed = self
            .handle
            .close_connections(&filter, &by)
            .map_err(|e| e.to_string())?;
        tracing::warn!(
            "control socket: close {by}: {} closed {closed:?}",
            closed.len()
        );
        Ok(json!({ "closed": closed }))
    }
}

/// The listing's JSON: the connections (the field names the issue fixed), how many matched,
/// every route's activity, and the UDP sessions the filter selects (and how many matched).
fn list_json(list: &ConnectionList) -> Value {
    json!({
        "matched": list.matched,
        "connections": list.connections.iter().map(connection_json).collect::<Vec<_>>(),
        "routes": list.routes.iter().map(activity_json).collect::<Vec<_>>(),
        "udp_matched": list.udp_matched,
        "udp_sessions": list.udp_sessions.iter().map(session_json).collect::<Vec<_>>(),
    })
}

/// One UDP session: `route`, `client`, `upstream`, `age_seconds`, `idle_seconds`,
/// `datagrams_up`, `bytes_up`, `datagrams_down`, `bytes_down` (up = client -> upstream).
pub fn session_json(s: &UdpSessionInfo) -> Value {
    json!({
        "route": s.route,
        "client": s.client.to_string(),
        "upstream": s.upstream.to_string(),
        "age_seconds": (s.age.as_secs_f64() * 1000.0).round() / 1000.0,
        "idle_seconds": (s.idle.as_secs_f64() * 1000.0).round() / 1000.0,
        "datagrams_up": s.datagrams_up,
        "bytes_up": s.bytes_up,
        "datagrams_down": s.datagrams_down,
        "bytes_down": s.bytes_down,
    })
}

/// One connection: `id`, `route`, `client`, `via`, `upstream`, `phase`, `age_seconds`,
/// `bytes_up`, `bytes_down`, `rate_up`, `rate_down`, `mode` (up = client -> upstream).
pub fn connection_json(c: &ConnectionInfo) -> Value {
    json!({
        "id": c.id,
        "route": c.route,
        "client": c.client.to_string(),
        "via": c.via.map(|a| a.to_string()),
        "upstream": c.upstream.map(|a| a.to_string()),
        "phase": c.phase.as_str(),
        "age_seconds": (c.age.as_secs_f64() * 1000.0).round() / 1000.0,
        "bytes_up": c.bytes_up,
        "bytes_down": c.bytes_down,
        "rate_up": c.rate_up.round(),
        "rate_down": c.rate_down.round(),
        "mode": c.mode.to_string(),
    })
}

fn activity_json(r: &RouteActivity) -> Value {
    json!({
        "route": r.route,
        "connections_open": r.open,
        "bytes_up": r.bytes_up,
        "bytes_down": r.bytes_down,
        "rate_up": r.rate_up.round(),
        "rate_down": r.rate_down.round(),
    })
}

/// A route's upstream(s), as text: a group's members in its order (a backup marked so).
fn upstreams(upstream: &Upstream) -> Vec<String> {
    match upstream {
        Upstream::Fixed(addr) => vec![addr.to_string()],
        Upstream::Group(group) => group
            .servers()
            .iter()
            .map(|s| {
                if s.is_backup() {
                    format!("{} (backup)", s.address())
                } else {
                    s.address().to_string()
                }
            })
            .collect(),
        Upstream::Sni(_) => vec!["(by TLS server name)".to_string()],
        Upstream::OriginalDestination => vec!["(original destination)".to_string()],
        Upstream::HttpConnect(_) => vec!["(HTTP CONNECT)".to_string()],
        _ => vec!["(other)".to_string()],
    }
}

/// The connections a request selects: `ids`, `route`, `client` (a network or an address).
fn filter_of(request: &Value) -> Result<ConnectionFilter, String> {
    let mut filter = ConnectionFilter::all();
    if let Some(ids) = request.get("ids") {
        let ids = ids
            .as_array()
            .ok_or("\"ids\" is not an array")?
            .iter()
            .map(|id| {
                id.as_u64()
                    .ok_or_else(|| format!("\"ids\": {id} is not an id"))
            })
            .collect::<Result<Vec<u64>, String>>()?;
        if ids.is_empty() {
            return Err("\"ids\" is empty".into());
        }
        filter = ConnectionFilter::ids(ids);
    }
    match request.get("route") {
        None | Some(Value::Null) => {}
        Some(Value::String(route)) => filter = filter.route(route.clone()),
        Some(v) => return Err(format!("\"route\": {v} is not a string")),
    }
    match request.get("client") {
        None | Some(Value::Null) => {}
        Some(Value::String(text)) => filter = filter.client(parse_net(text)?),
        Some(v) => return Err(format!("\"client\": {v} is not a string")),
    }
    Ok(filter)
}

/// A network (`10.0.0.0/8`) or one address (`10.1.2.3`, as /32 or /128).
pub fn parse_net(text: &str) -> Result<ipnet::IpNet, String> {
    text.parse::<ipnet::IpNet>()
        .or_else(|_| text.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
        .map_err(|_| format!("{text:?} is not an address or a network (CIDR)"))
}

/// The error answer, `{"v":1,"ok":false,"error":...}`.
pub fn error_answer(error: &str) -> String {
    json!({"v": VERSION, "ok": false, "error": error}).to_string()
}

/// What a client beyond `MAX_CLIENTS` (`control.rs`) is told.
pub fn busy() -> String {
    error_answer("busy: too many control clients at once; try again")
}

/// Reads one request line: `Ok(None)` when the client closed or stayed silent (nothing to
/// answer), `Err(answer)` when the line is too long or too slow to come.
pub fn read_request(reader: &mut BufReader<UnixStream>) -> Result<Option<String>, String> {
    let started = Instant::now();
    let mut line = Vec::new();
    loop {
        if started.elapsed() > REQUEST_TIMEOUT {
            return Err(error_answer(&format!(
                "the request did not arrive within {REQUEST_TIMEOUT:?}"
            )));
        }
        let room = (MAX_REQUEST_BYTES + 1 - line.len()) as u64;
        let read = (&mut *reader).take(room).read_until(b'\n', &mut line);
        match read {
            Ok(0) if line.is_empty() => return Ok(None),
            Ok(0) => break,
            Ok(_) if line.ends_with(b"\n") => {
                line.pop();
                break;
            }
            Ok(_) if line.len() > MAX_REQUEST_BYTES => {
                return Err(error_answer(&format!(
                    "request longer than {MAX_REQUEST_BYTES} bytes"
                )));
            }
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                if line.is_empty() {
                    return Ok(None);
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return Ok(None),
        }
    }
    Ok(Some(String::from_utf8_lossy(&line).into_owned()))
}

/// How long `spliceway status` and the other commands wait for an answer.
pub const CLIENT_TIMEOUT: Duration = Duration::from_secs(10);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_routes_upstreams_are_listed_as_configured() {
        use spliceway::{UpstreamAddr, UpstreamGroup, UpstreamServer};
        let server = |a: &str| UpstreamServer::new(UpstreamAddr::parse(a).unwrap());
        let group = UpstreamGroup::new(vec![
            server("10.0.0.1:53"),
            server("db.test:53").backup(true),
        ]);
        assert_eq!(
            upstreams(&Upstream::Group(group)),
            ["10.0.0.1:53", "db.test:53 (backup)"]
        );
        assert_eq!(
            upstreams(&Upstream::Fixed(
                UpstreamAddr::parse("10.0.0.2:53").unwrap()
            )),
            ["10.0.0.2:53"]
        );
        assert_eq!(
            upstreams(&Upstream::OriginalDestination),
            ["(original destination)"]
        );
    }

    #[test]
    fn networks_and_single_addresses_parse() {
        assert_eq!(parse_net("10.0.0.0/8").unwrap().to_string(), "10.0.0.0/8");
        assert_eq!(parse_net("10.1.2.3").unwrap().to_string(), "10.1.2.3/32");
        assert_eq!(parse_net("::1").unwrap().to_string(), "::1/128");
        assert!(parse_net("nope").unwrap_err().contains("not an address"));
    }

    #[test]
    fn filters_read_ids_routes_and_clients_and_refuse_bad_fields() {
        let f = filter_of(&json!({"ids":[3,4],"route":"a","client":"10.0.0.0/8"})).unwrap();
        assert_eq!(f.ids, [3, 4]);
        assert_eq!(f.route.as_deref(), Some("a"));
        assert!(f.client.is_some());
        assert!(
            filter_of(&json!({"ids":"3"}))
                .unwrap_err()
                .contains("not an array")
        );
        assert!(filter_of(&json!({"ids":[]})).unwrap_err().contains("empty"));
        assert!(
            filter_of(&json!({"client":"x"}))
                .unwrap_err()
                .contains("not an address")
        );
        assert!(filter_of(&json!({})).unwrap().is_everything());
    }

    #[test]
    fn long_and_silent_requests_are_bounded() {
        let (a, b) = UnixStream::pair().unwrap();
        b.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
        let mut reader = BufReader::new(b);
        // Silent: nothing to answer.
        assert_eq!(read_request(&mut reader), Ok(None));
        let mut writer = &a;
        std::io::Write::write_all(&mut writer, b"{\"v\":1}\nupgrade\n").unwrap();
        assert_eq!(read_request(&mut reader).unwrap().unwrap(), "{\"v\":1}");
        assert_eq!(read_request(&mut reader).unwrap().unwrap(), "upgrade");
        let long = vec![b'x'; MAX_REQUEST_BYTES + 10];
        let writing = std::thread::spawn(move || {
            let mut writer = &a;
            let _ = std::io::Write::write_all(&mut writer, &long);
        });
        let err = read_request(&mut reader).unwrap_err();
        assert!(err.contains("longer than"), "{err}");
        drop(reader);
        writing.join().unwrap();
    }
}
