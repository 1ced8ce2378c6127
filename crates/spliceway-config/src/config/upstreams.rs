//! A route's upstreams (issue 29): `upstream = "host:port"`, `upstream = ["a:1", "b:2"]` or
//! `[[route.upstreams]]` tables, with `balance`, `max_fails`, `fail_timeout` and
//! `health_check`. Every value is checked where it is written, so an error names its line and
//! key; the engine's own check of the group ([`UpstreamGroup::validate`]) runs last.
//!
//! One upstream without a health check is a plain route, as before: balance and passive health
//! mean nothing with one upstream (and a route that lost its only upstream would try it anyway).

use std::time::Duration;

use toml::Spanned;

use spliceway::limits::{MAX_PROBE_BYTES, MAX_RISE_FALL, MAX_UPSTREAMS_PER_GROUP, MAX_WEIGHT};
use spliceway::{
    Balance, HealthCheck, PassiveHealth, Probe, Route, UpstreamAddr, UpstreamGroup, UpstreamServer,
};

use super::across_routes::{LiteralUpstream, Seen};
use super::raw::{RawHealthCheck, RawRoute, RawUpstream};
use super::validate::{Checker, Scope};
use crate::ConfigError;

type Result<T> = std::result::Result<T, ConfigError>;

/// The keys that only a route with upstreams (not an SNI route) takes.
pub(super) const GROUP_KEYS: [&str; 4] = ["balance", "max_fails", "fail_timeout", "health_check"];

impl Checker<'_> {
    /// The route's upstream or group of upstreams, as a route named after `raw`.
    pub(super) fn upstreams(
        &self,
        raw: &RawRoute,
        scope: Scope<'_>,
        index: usize,
        seen: &mut Seen,
    ) -> Result<Route> {
        let name = raw.name.get_ref().clone();
        let (servers, list_span, list_key): (
            Vec<(UpstreamServer, std::ops::Range<usize>)>,
            _,
            &str,
        ) = match (&raw.upstream, &raw.upstreams) {
            (Some(one), Some(_)) => {
                return Err(self.error(
                    one.span(),
                    scope.key("upstream"),
                    "give either upstream or [[route.upstreams]] tables, not both",
                ));
            }
            (Some(upstream), None) => {
                let items: Vec<Spanned<String>> = match upstream.get_ref() {
                    RawUpstream::One(text) => {
                        vec![Spanned::new(upstream.span(), text.clone())]
                    }
                    RawUpstream::List(list) => list.clone(),
                };
                let mut servers = Vec::new();
                for item in &items {
                    servers.push((
                        UpstreamServer::new(self.address(item, scope, "upstream", index, seen)?),
                        item.span(),
                    ));
                }
                (servers, upstream.span(), "upstream")
            }
            (None, Some(tables)) => {
                let mut servers = Vec::new();
                for entry in tables.get_ref() {
                    let entry = entry.get_ref();
                    let address =
                        self.address(&entry.address, scope, "upstreams.address", index, seen)?;
                    let mut server = UpstreamServer::new(address);
                    if let Some(weight) = &entry.weight {
                        let w = *weight.get_ref();
                        if w < 1 || w > i64::from(MAX_WEIGHT) {
                            return Err(self.error(
                                weight.span(),
                                scope.key("upstreams.weight"),
                                format!("must be from 1 to {MAX_WEIGHT}, not {w} (weights are relative: 1 and 3 send three times as many connections to the second)"),
                            ));
                        }
                        server = server.weight(w as u32);
                    }
                    if let Some(backup) = &entry.backup {
                        server = server.backup(*backup.get_ref());
                    }
                    servers.push((server, entry.address.span()));
                }
                (servers, tables.span(), "upstreams")
            }
            (None, None) => unreachable!("the caller saw upstream or upstreams"),
        };
        if servers.is_empty() {
            return Err(self.error(
                list_span,
                scope.key(list_key),
                "the list of upstreams is empty: give at least one \"host:port\"",
            ));
        }
        if servers.len() > MAX_UPSTREAMS_PER_GROUP {
            return Err(self.error(
                list_span,
                scope.key(list_key),
                format!(
                    "{} upstreams; a route holds at most {MAX_UPSTREAMS_PER_GROUP}",
                    servers.len()
                ),
            ));
        }
        for (i, (server, span)) in servers.iter().enumerate() {
            if servers[..i]
                .iter()
                .any(|(s, _)| s.address() == server.address())
            {
                return Err(self.error(
                    span.clone(),
                    scope.key(if list_key == "upstream" {
                        "upstream"
                    } else {
                        "upstreams.address"
                    }),
                    format!("{} is listed twice", server.address()),
                ));
            }
        }
        if servers.iter().all(|(s, _)| s.is_backup()) {
            return Err(self.error(
                list_span,
                scope.key(list_key),
                "every upstream is a backup: at least one must be a primary (backups receive \
                 connections only while no primary is up)",
            ));
        }
        let balance = match &raw.balance {
            None => Balance::RoundRobin,
            Some(b) => match b.get_ref().as_str() {
                "round-robin" => Balance::RoundRobin,
                "least-connections" => Balance::LeastConnections,
                "client-hash" => Balance::ClientHash,
                other => {
                    return Err(self.error(
                        b.span(),
                        scope.key("balance"),
                        format!("unknown balance {other:?}: write \"round-robin\", \"least-connections\" or \"client-hash\""),
                    ));
                }
            },
        };
        let mut passive = PassiveHealth::default();
        if let Some(max_fails) = &raw.max_fails {
            let n = *max_fails.get_ref();
            if !(0..=1000).contains(&n) {
                return Err(self.error(
                    max_fails.span(),
                    scope.key("max_fails"),
                    format!("must be from 0 (never mark an upstream down) to 1000, not {n}"),
                ));
            }
            passive.max_fails = n as u32;
        }
        if let Some(timeout) = &raw.fail_timeout {
            passive.fail_timeout = self.duration(timeout, scope.key("fail_timeout"), false)?;
        }
        let check = raw
            .health_check
            .as_ref()
            .map(|c| self.health_check(c, scope))
            .transpose()?;
        let single = servers.len() == 1 && check.is_none();
        if single && !servers[0].0.is_backup() {
            return Ok(Route::new(name, servers[0].0.address().clone()));
        }
        let mut group = UpstreamGroup::new(servers.into_iter().map(|(s, _)| s).collect())
            .balance(balance)
            .passive_health(passive);
        if let Some(check) = check {
            group = group.health_check(check);
        }
        group
            .validate()
            .map_err(|e| self.error(list_span, scope.key(list_key), e.to_string()))?;
        Ok(Route::group(name, group))
    }

    /// A UDP route's upstream or group of upstreams, as a TCP route's but for `health_check`:
    /// a UDP upstream has no connect to try, and what a good answer is belongs to its
    /// protocol, so it is judged by its sessions (an ICMP error from it is a failure). Its
    /// literal upstreams are not recorded for the checks across routes, which look for loops
    /// through TCP listeners; a UDP route's own loops are the engine's to refuse.
    pub(super) fn udp_upstream(
        &self,
        raw: &RawRoute,
        scope: Scope<'_>,
        index: usize,
    ) -> Result<Route> {
        if let Some(check) = &raw.health_check {
            return Err(self.error(
                check.span(),
                scope.key("health_check"),
                "is for TCP routes: a UDP upstream has no connect to check, so a UDP route \
                 judges its upstreams by their sessions (an ICMP error from one counts \
                 against it: max_fails, fail_timeout)",
            ));
        }
        self.upstreams(raw, scope, index, &mut Seen::default())
    }

    /// One upstream address, recorded for the checks across routes when it is an IP literal.
    fn address(
        &self,
        text: &Spanned<String>,
        scope: Scope<'_>,
        key: &'static str,
        index: usize,
        seen: &mut Seen,
    ) -> Result<UpstreamAddr> {
        let addr = UpstreamAddr::parse(text.get_ref())
            .map_err(|e| self.error(text.span(), scope.key(key), e.to_string()))?;
        if let UpstreamAddr::Ip(ip) = addr {
            seen.upstreams.push(LiteralUpstream {
                addr: ip,
                route: index,
                key,
                span: text.span(),
            });
        }
        Ok(addr)
    }

    fn health_check(&self, raw: &Spanned<RawHealthCheck>, scope: Scope<'_>) -> Result<HealthCheck> {
        let whole = raw.span();
        let raw = raw.get_ref();
        let interval = match &raw.interval {
            Some(v) => self.duration(v, scope.key("health_check.interval"), false)?,
            None => Duration::from_secs(2),
        };
        let mut check = HealthCheck::new(interval);
        if let Some(v) = &raw.timeout {
            check = check.timeout(self.duration(v, scope.key("health_check.timeout"), false)?);
        }
        let count = |v: &Option<Spanned<i64>>, key: &str| -> Result<Option<u32>> {
            match v {
                None => Ok(None),
                Some(n) if (1..=i64::from(MAX_RISE_FALL)).contains(n.get_ref()) => {
                    Ok(Some(*n.get_ref() as u32))
                }
                Some(n) => Err(self.error(
                    n.span(),
                    scope.key(key),
                    format!("must be from 1 to {MAX_RISE_FALL}, not {}", n.get_ref()),
                )),
            }
        };
        if let Some(rise) = count(&raw.rise, "health_check.rise")? {
            check = check.rise(rise);
        }
        if let Some(fall) = count(&raw.fall, "health_check.fall")? {
            check = check.fall(fall);
        }
        let bytes = |v: &Spanned<String>, key: &str| -> Result<Vec<u8>> {
            if v.get_ref().len() > MAX_PROBE_BYTES {
                return Err(self.error(
                    v.span(),
                    scope.key(key),
                    format!("at most {MAX_PROBE_BYTES} bytes"),
                ));
            }
            Ok(v.get_ref().as_bytes().to_vec())
        };
        let probe = match (&raw.send, &raw.expect, &raw.http_get, &raw.status) {
            (None, None, None, None) => Probe::Connect,
            (send, Some(expect), None, None) => {
                if expect.get_ref().is_empty() {
                    return Err(self.error(
                        expect.span(),
                        scope.key("health_check.expect"),
                        "must not be empty (leave send and expect out for a connect check)",
                    ));
                }
                Probe::SendExpect {
                    send: send
                        .as_ref()
                        .map(|s| bytes(s, "health_check.send"))
                        .transpose()?
                        .unwrap_or_default(),
                    expect: bytes(expect, "health_check.expect")?,
                }
            }
            (Some(send), None, None, None) => {
                return Err(self.error(
                    send.span(),
                    scope.key("health_check.send"),
                    "needs expect: the bytes the reply must begin with",
                ));
            }
            (None, None, Some(path), status) => {
                let text = path.get_ref();
                if !text.starts_with('/')
                    || text.bytes().any(|b| b.is_ascii_control() || b == b' ')
                    || text.len() > MAX_PROBE_BYTES
                {
                    return Err(self.error(
                        path.span(),
                        scope.key("health_check.http_get"),
                        format!("must be a path starting with / without spaces, not {text:?}"),
                    ));
                }
                let status = match status {
                    None => 200,
                    Some(s) if (100..=599).contains(s.get_ref()) => *s.get_ref() as u16,
                    Some(s) => {
                        return Err(self.error(
                            s.span(),
                            scope.key("health_check.status"),
                            format!(
                                "must be an HTTP status from 100 to 599, not {}",
                                s.get_ref()
                            ),
                        ));
                    }
                };
                Probe::HttpGet {
                    path: text.clone(),
                    status,
                }
            }
            (None, None, None, Some(status)) => {
                return Err(self.error(
                    status.span(),
                    scope.key("health_check.status"),
                    "needs http_get: the path to request",
                ));
            }
            _ => {
                return Err(self.error(
                    whole,
                    scope.key("health_check"),
                    "give send/expect or http_get/status, not both",
                ));
            }
        };
        Ok(check.probe(probe))
    }

    /// `upstream = "original-destination"` or `"http-connect"`: no [[route.upstreams]] tables
    /// and none of the group keys beside it (the client chooses the one upstream).
    pub(super) fn not_a_group(&self, raw: &RawRoute, scope: Scope<'_>) -> Result<()> {
        if let Some(tables) = &raw.upstreams {
            return Err(self.error(
                tables.span(),
                scope.key("upstreams"),
                "give either upstream or [[route.upstreams]] tables, not both",
            ));
        }
        self.group_keys_refused(
            raw,
            scope,
            "a route where the client chooses the destination",
        )
    }

    /// An SNI route given keys that only a route with upstreams takes.
    pub(super) fn no_group_keys(&self, raw: &RawRoute, scope: Scope<'_>) -> Result<()> {
        self.group_keys_refused(raw, scope, "[[route.sni]] entries")
    }

    /// The first group key (`balance`, `max_fails`, `fail_timeout`, `health_check`) `raw`
    /// gives, refused at its place: they apply to a route's upstreams, not to `what`.
    fn group_keys_refused(&self, raw: &RawRoute, scope: Scope<'_>, what: &str) -> Result<()> {
        match first_group_key(raw) {
            Some((key, span)) => Err(self.error(
                span,
                scope.key(key),
                format!(
                    "applies to a route's upstreams (upstream = [...] or [[route.upstreams]]), \
                     not to {what}"
                ),
            )),
            None => Ok(()),
        }
    }
}

/// The first of the group keys (`balance`, `max_fails`, `fail_timeout`, `health_check`) that
/// `raw` gives, with its place.
fn first_group_key(raw: &RawRoute) -> Option<(&'static str, std::ops::Range<usize>)> {
    let spans = [
        raw.balance.as_ref().map(Spanned::span),
        raw.max_fails.as_ref().map(Spanned::span),
        raw.fail_timeout.as_ref().map(Spanned::span),
        raw.health_check.as_ref().map(Spanned::span),
    ];
    GROUP_KEYS
        .iter()
        .zip(spans)
        .find_map(|(key, span)| Some((*key, span?)))
}
