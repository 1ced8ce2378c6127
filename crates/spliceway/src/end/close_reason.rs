//! How a connection ended, as logged and counted.

use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;

use crate::proxy_protocol::ProxyHeaderError;
use crate::stats::Stats;

/// How a connection ended.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum CloseReason {
    /// Both directions ended cleanly: end of stream was passed on both ways.
    Completed,
    /// The client reset the connection (or had gone when written to).
    ClientReset,
    /// The upstream reset the connection (or had gone when written to).
    UpstreamReset,
    /// The client reset the connection after its own end of stream had been passed on: every
    /// byte it sent, then its end, reached the upstream, so nothing it sent was lost; it had
    /// said it was done and left bytes unread. Clients that close with bytes still unread end
    /// most finished exchanges so (the AWS CLI: FIN, then a reset when the server's TLS
    /// close_notify arrives). The upstream is still reset; the end is counted apart from
    /// [`ClientReset`](Self::ClientReset), so that resets mean aborts.
    ClientResetAfterEnd,
    /// The upstream reset the connection after its own end of stream had been passed on:
    /// every byte it sent, then its end, reached the client (a server that closes with the
    /// request partly unread). The client is still reset.
    UpstreamResetAfterEnd,
    /// Reading from or writing to the client failed otherwise.
    ClientError(String),
    /// Reading from or writing to the upstream failed otherwise.
    UpstreamError(String),
    /// No byte moved in either direction for the idle timeout.
    IdleTimeout,
    /// One direction ended and the other stayed silent for the half-close timeout.
    HalfCloseTimeout,
    /// No upstream address could be connected to; the last error.
    ConnectFailed(String),
    /// The upstream name did not resolve.
    ResolveFailed(String),
    /// Refused without looking the upstream name up: too many lookups were pending for the
    /// route or for the client's address.
    ResolveRefused(String),
    /// An SNI client ended its side while its upstream name was looked up: its TLS handshake
    /// could not complete.
    ClientLeft,
    /// The upstream resolved to the route's own listening address.
    SelfLoop(SocketAddr),
    /// Refused by an access rule (allow/deny lists).
    Denied(String),
    /// Refused at accept: the client's address (an IPv6 client's /64) already held the
    /// route's `max_connections_per_client` connections, this many.
    ClientLimit(usize),
    /// Refused by SNI routing: not TLS, no server name, a name not allowed, or no complete
    /// ClientHello in time.
    SniRefused(String),
    /// Splice is unsupported for these sockets and the route requires splice.
    SpliceUnsupported(String),
    /// The relay stopped (drain timeout reached, or immediate shutdown).
    Shutdown,
    /// Every address the upstream name resolved to was refused by the route's address policy
    /// (a link-local address such as the metadata service, or loopback for a name from SNI).
    AddressPolicy(String),
    /// The process ran out of descriptors (the open-file limit) for the upstream socket: a
    /// limit of this host, not a failing upstream.
    OutOfDescriptors(String),
    /// The client's PROXY protocol header was missing, malformed or late (routes that accept
    /// PROXY protocol).
    ProxyHeader(crate::proxy_protocol::ProxyHeaderError),
    /// An operator closed it ([`RelayHandle::close_connections`](crate::RelayHandle::close_connections),
    /// `spliceway close`); says who asked.
    ClosedByOperator(String),
    /// An intercepted connection (`upstream = "original-destination"`) whose original
    /// destination could not be read: it reached the listener without a nat rule or TPROXY.
    OriginalDestination(String),
    /// HTTP CONNECT routes: the client's request was malformed, too long, not a CONNECT, or not
    /// complete in time (answered `400`).
    BadRequest(String),
    /// HTTP CONNECT routes: the target is not in `connect_allow` (answered `403`).
    ConnectRefused(String),
}

impl CloseReason {
    /// Whether the connection ended any other way than cleanly (its sockets are reset).
    #[must_use]
    pub fn is_abort(&self) -> bool {
        *self != CloseReason::Completed
    }

    /// Whether the relay refused the client (access lists, SNI) rather than relaying it: such
    /// ends are logged in a rate-limited summary, so a scan cannot flood the log.
    pub(crate) fn is_refusal(&self) -> bool {
        matches!(
            self,
            CloseReason::Denied(_)
                | CloseReason::ClientLimit(_)
                | CloseReason::SniRefused(_)
                | CloseReason::ResolveRefused(_)
                | CloseReason::ProxyHeader(_)
                | CloseReason::OriginalDestination(_)
                | CloseReason::BadRequest(_)
                | CloseReason::ConnectRefused(_)
        )
    }

    /// What an HTTP CONNECT route answers a client whose connection ends so before it was
    /// answered `200`; `None`: nothing (the client left, or the relay is stopping). A connect
    /// that timed out, or a lookup that did, is a `504`; what the address policy refused, or a
    /// loop, a `403`.
    pub(crate) fn http_answer(&self) -> Option<crate::http_connect::Answer> {
        use crate::http_connect::Answer;
        match self {
            CloseReason::BadRequest(_) => Some(Answer::BadRequest),
            CloseReason::ConnectRefused(_)
            | CloseReason::AddressPolicy(_)
            | CloseReason::SelfLoop(_) => Some(Answer::Forbidden),
            CloseReason::ResolveFailed(e) if e.starts_with("no answer within") => {
                Some(Answer::GatewayTimeout)
            }
            CloseReason::ConnectFailed(e) if e.contains("timed out") => {
                Some(Answer::GatewayTimeout)
            }
            CloseReason::ResolveFailed(_)
            | CloseReason::ConnectFailed(_)
            | CloseReason::ResolveRefused(_)
            | CloseReason::OutOfDescriptors(_)
            | CloseReason::UpstreamReset
            | CloseReason::UpstreamError(_) => Some(Answer::BadGateway),
            _ => None,
        }
    }

    /// The counter that counts this way of ending (besides `closed`, which counts every end).
    /// A splice refusal has none of its own: the fallback and refusal are counted where they
    /// happen.
    pub(crate) fn counter(&self) -> Option<fn(&Stats) -> &AtomicU64> {
        match self {
            CloseReason::Completed => Some(|s| &s.completed),
            CloseReason::ClientReset | CloseReason::ClientError(_) | CloseReason::ClientLeft => {
                Some(|s| &s.client_resets)
            }
            CloseReason::UpstreamReset | CloseReason::UpstreamError(_) => {
                Some(|s| &s.upstream_resets)
            }
            CloseReason::ClientResetAfterEnd => Some(|s| &s.client_resets_after_end),
            CloseReason::UpstreamResetAfterEnd => Some(|s| &s.upstream_resets_after_end),
            CloseReason::IdleTimeout => Some(|s| &s.idle_timeouts),
            CloseReason::HalfCloseTimeout => Some(|s| &s.half_close_timeouts),
            CloseReason::ConnectFailed(_)
            | CloseReason::ResolveFailed(_)
            | CloseReason::SelfLoop(_)
            | CloseReason::AddressPolicy(_) => Some(|s| &s.upstream_unavailable),
            CloseReason::Denied(_) => Some(|s| &s.denied),
            CloseReason::ClientLimit(_) => Some(|s| &s.client_limit_refused),
            CloseReason::SniRefused(_) => Some(|s| &s.sni_refused),
            CloseReason::ResolveRefused(_) => Some(|s| &s.resolve_refused),
            CloseReason::Shutdown => Some(|s| &s.drain_resets),
            CloseReason::OutOfDescriptors(_) => Some(|s| &s.descriptor_exhausted),
            CloseReason::SpliceUnsupported(_) | CloseReason::ClosedByOperator(_) => None,
            CloseReason::OriginalDestination(_) => Some(|s| &s.original_destination_unreadable),
            // Counted by their answers (`http_connect_400`, `http_connect_403`).
            CloseReason::BadRequest(_) | CloseReason::ConnectRefused(_) => None,
            CloseReason::ProxyHeader(e) => Some(match e {
                ProxyHeaderError::Signature => |s| &s.proxy_header_signature,
                ProxyHeaderError::Version => |s| &s.proxy_header_version,
                ProxyHeaderError::Truncated => |s| &s.proxy_header_truncated,
                ProxyHeaderError::Timeout => |s| &s.proxy_header_timeout,
                ProxyHeaderError::TooLong => |s| &s.proxy_header_too_long,
                ProxyHeaderError::Unsupported(_) => |s| &s.proxy_header_unsupported,
                ProxyHeaderError::Malformed(_) => |s| &s.proxy_header_malformed,
            }),
        }
    }
}

impl fmt::Display for CloseReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CloseReason::Completed => f.write_str("both finished"),
            CloseReason::ClientReset => f.write_str("reset by client"),
            CloseReason::UpstreamReset => f.write_str("reset by upstream"),
            CloseReason::ClientResetAfterEnd => {
                f.write_str("reset by client after its end of stream")
            }
            CloseReason::UpstreamResetAfterEnd => {
                f.write_str("reset by upstream after its end of stream")
            }
            CloseReason::ClientError(e) => write!(f, "client error: {e}"),
            CloseReason::UpstreamError(e) => write!(f, "upstream error: {e}"),
            CloseReason::IdleTimeout => f.write_str("idle timeout"),
            CloseReason::HalfCloseTimeout => f.write_str("half-close timeout"),
            CloseReason::ConnectFailed(e) => write!(f, "upstream connect failed: {e}"),
            CloseReason::ResolveFailed(e) => write!(f, "upstream resolution failed: {e}"),
            CloseReason::ResolveRefused(why) => write!(f, "refused, not resolved: {why}"),
            CloseReason::ClientLeft => {
                f.write_str("the client ended its side before its upstream was resolved")
            }
            CloseReason::SelfLoop(addr) => {
                write!(f, "refused: upstream {addr} is this relay's own listener")
            }
            CloseReason::Denied(why) => write!(f, "denied: {why}"),
            CloseReason::ClientLimit(limit) => write!(
                f,
                "refused: the client already holds {limit} connections of the route \
                 (max_connections_per_client)"
            ),
            CloseReason::SniRefused(why) => write!(f, "refused by SNI routing: {why}"),
            CloseReason::SpliceUnsupported(e) => write!(f, "splice unsupported: {e}"),
            CloseReason::Shutdown => f.write_str("relay shut down"),
            CloseReason::OutOfDescriptors(e) => write!(f, "out of descriptors: {e}"),
            CloseReason::AddressPolicy(e) => write!(f, "refused by the address policy: {e}"),
            CloseReason::ProxyHeader(e) => write!(f, "refused: {e}"),
            CloseReason::ClosedByOperator(by) => write!(f, "closed by the operator ({by})"),
            CloseReason::OriginalDestination(e) => {
                write!(f, "refused: no original destination ({e})")
            }
            CloseReason::BadRequest(e) => write!(f, "refused CONNECT request: {e}"),
            CloseReason::ConnectRefused(e) => write!(f, "refused CONNECT: {e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_completed_connection_is_not_an_abort() {
        assert!(!CloseReason::Completed.is_abort());
        assert!(CloseReason::ClientReset.is_abort());
        assert!(CloseReason::IdleTimeout.is_abort());
        assert_eq!(CloseReason::UpstreamReset.to_string(), "reset by upstream");
    }

    #[test]
    fn each_end_is_counted_where_the_alerts_expect_it() {
        use std::sync::atomic::Ordering;
        let stats = Stats::default();
        let count = |reason: CloseReason| {
            if let Some(counter) = reason.counter() {
                counter(&stats).fetch_add(1, Ordering::Relaxed);
            }
        };
        count(CloseReason::Completed);
        count(CloseReason::ClientError("x".into()));
        count(CloseReason::ClientReset);
        count(CloseReason::SelfLoop("127.0.0.1:1".parse().unwrap()));
        count(CloseReason::ResolveFailed("x".into()));
        count(CloseReason::Denied("x".into()));
        count(CloseReason::Shutdown);
        count(CloseReason::SpliceUnsupported("x".into()));
        count(CloseReason::ResolveRefused("x".into()));
        count(CloseReason::ClientLeft);
        let s = stats.snapshot();
        assert_eq!(s.completed, 1);
        assert_eq!(s.client_resets, 3);
        assert_eq!(s.resolve_refused, 1);
        assert_eq!(s.upstream_unavailable, 2);
        assert_eq!(s.denied, 1);
        assert_eq!(s.drain_resets, 1);
        assert_eq!(s.upstream_resets + s.idle_timeouts + s.sni_refused, 0);
        assert!(CloseReason::Denied("x".into()).is_refusal());
        assert!(CloseReason::ClientLimit(2).is_refusal());
        assert!(CloseReason::SniRefused("x".into()).is_refusal());
        assert!(CloseReason::ResolveRefused("x".into()).is_refusal());
        assert!(!CloseReason::ClientReset.is_refusal());
        for (i, e) in [
            ProxyHeaderError::Signature,
            ProxyHeaderError::Version,
            ProxyHeaderError::Truncated,
            ProxyHeaderError::Timeout,
            ProxyHeaderError::TooLong,
            ProxyHeaderError::Unsupported("x"),
            ProxyHeaderError::Malformed("x"),
        ]
        .into_iter()
        .enumerate()
        {
            let reason = CloseReason::ProxyHeader(e);
            assert!(reason.is_refusal() && reason.is_abort());
            let stats = Stats::default();
            reason.counter().unwrap()(&stats).fetch_add(1, Ordering::Relaxed);
            let s = stats.snapshot();
            let by_reason = s.proxy_header_errors();
            let mut expected = [0; 7];
            expected[i] = 1;
            assert_eq!(by_reason, expected, "reason {i}");
        }
    }
}
