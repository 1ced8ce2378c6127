//! systemd socket activation (`spliceway.socket`): when `LISTEN_PID` is this process, the
//! listening sockets systemd passes (from descriptor 3, `LISTEN_FDS` of them) are served
//! instead of binding. Each is matched to the route whose `listen` address is its bound
//! address; a name from `LISTEN_FDNAMES` (`FileDescriptorName=`) that is a route's name must
//! be one of that route's addresses. A socket no route listens on, or an address passed twice,
//! is a configuration error: serving a port nobody configured, or silently ignoring one, would
//! hide a unit file that does not match the configuration.
//!
//! `listenfd` takes the descriptors (and clears `LISTEN_PID` and `LISTEN_FDS`, so that no
//! child process, such as the one `spliceway upgrade` starts, takes them for its own; that
//! child is also started without `LISTEN_FDNAMES`).

use std::net::{SocketAddr, TcpListener};

use anyhow::bail;

/// A route as matching needs it: its name and configured listen addresses.
#[derive(Debug, Clone)]
pub struct RouteAddrs {
    pub name: String,
    pub listen: Vec<SocketAddr>,
}

/// The sockets systemd passed to this process, matched to `routes`; empty when it passed none
/// (or passed them to another process).
///
/// # Errors
///
/// A descriptor that is not a TCP socket, a socket matching no route, an address passed
/// twice, or a named socket on an address its route does not list.
pub fn take(routes: &[RouteAddrs]) -> anyhow::Result<Vec<TcpListener>> {
    let ours = std::env::var("LISTEN_PID")
        .ok()
        .and_then(|pid| pid.trim().parse::<u32>().ok())
        == Some(std::process::id());
    if !ours {
        return Ok(Vec::new());
    }
    let names = std::env::var("LISTEN_FDNAMES").ok();
    let mut fds = listenfd::ListenFd::from_env();
    let names: Vec<&str> = match &names {
        Some(names) if names.split(':').count() == fds.len() => names.split(':').collect(),
        _ => vec![""; fds.len()],
    };
    let mut taken: Vec<(SocketAddr, TcpListener)> = Vec::new();
    for (index, name) in names.into_iter().enumerate() {
        let fd = index + 3;
        let Some(socket) = fds
            .take_tcp_listener(index)
            .map_err(|e| anyhow::anyhow!("socket activation: descriptor {fd}: {e}"))?
        else {
            continue;
        };
        let addr = socket
            .local_addr()
            .map_err(|e| anyhow::anyhow!("socket activation: descriptor {fd}: {e}"))?;
        match_route(routes, name, addr)?;
        if taken.iter().any(|(a, _)| *a == addr) {
            bail!("socket activation: systemd passed {addr} twice (check ListenStream= lines)");
        }
        taken.push((addr, socket));
    }
    Ok(taken.into_iter().map(|(_, socket)| socket).collect())
}

/// Checks that a passed socket bound to `addr`, named `name`, belongs to a route.
fn match_route(routes: &[RouteAddrs], name: &str, addr: SocketAddr) -> anyhow::Result<()> {
    if let Some(route) = routes.iter().find(|r| r.name == name) {
        if !route.listen.contains(&addr) {
            bail!(
                "socket activation: the socket named {name:?} is bound to {addr}, which is not \
                 a listen address of route {name:?}"
            );
        }
        return Ok(());
    }
    if !routes.iter().any(|r| r.listen.contains(&addr)) {
        bail!(
            "socket activation: systemd passed a socket bound to {addr}, which is no route's \
             listen address (the socket unit and the configuration disagree)"
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn routes() -> Vec<RouteAddrs> {
        vec![
            RouteAddrs {
                name: "a".into(),
                listen: vec!["127.0.0.1:7001".parse().unwrap()],
            },
            RouteAddrs {
                name: "b".into(),
                listen: vec!["127.0.0.1:7002".parse().unwrap()],
            },
        ]
    }

    #[test]
    fn sockets_match_by_address_and_by_name() {
        let a: SocketAddr = "127.0.0.1:7001".parse().unwrap();
        let b: SocketAddr = "127.0.0.1:7002".parse().unwrap();
        assert!(match_route(&routes(), "", a).is_ok());
        assert!(match_route(&routes(), "spliceway.socket", b).is_ok());
        assert!(match_route(&routes(), "b", b).is_ok());
        let err = match_route(&routes(), "a", b).unwrap_err().to_string();
        assert!(
            err.contains("127.0.0.1:7002") && err.contains("route \"a\""),
            "{err}"
        );
        let stray: SocketAddr = "127.0.0.1:7003".parse().unwrap();
        let err = match_route(&routes(), "", stray).unwrap_err().to_string();
        assert!(err.contains("127.0.0.1:7003"), "{err}");
    }
}
