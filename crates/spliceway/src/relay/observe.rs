//! [`RelayHandle::connections`] and [`RelayHandle::close_connections`]: the live connections
//! (and UDP sessions), asked of every worker through its mailbox (`event_loop/observe.rs`
//! answers; the UDP worker through its inbox), never by locking what the workers use to move
//! bytes; and [`RelayHandle::routes`], what each route listens on and where it goes.

use std::net::SocketAddr;
use std::sync::{Arc, mpsc};
use std::time::Instant;

use super::RelayHandle;
use crate::observe::{
    ANSWER_TIMEOUT, ConnectionFilter, ConnectionList, ConnectionQuery, ObserveError, RouteActivity,
    order,
};
use crate::route::{Protocol, Upstream};
use crate::state::mailbox::Message;
use crate::udp::UdpMessage;

/// A route as it runs now: what `spliceway status` lists.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RouteOverview {
    /// The route's name.
    pub name: String,
    /// The addresses it listens on (the ports the kernel chose for port 0).
    pub listen: Vec<SocketAddr>,
    /// Where its connections go.
    pub upstream: Upstream,
    /// TCP or UDP.
    pub protocol: Protocol,
    /// A UDP route's sessions open now (started less ended); 0 for a TCP route, whose
    /// connections [`connections`](RelayHandle::connections) lists.
    pub udp_sessions: usize,
}

impl RelayHandle {
    /// The running routes, in the relay's order (TCP routes first, then UDP routes).
    #[must_use]
    pub fn routes(&self) -> Vec<RouteOverview> {
        let tcp = self.relay.routes();
        let tcp = tcp.iter().map(|r| RouteOverview {
            name: r.name.clone(),
            listen: r.listen.clone(),
            upstream: r.upstream.clone(),
            protocol: Protocol::Tcp,
            udp_sessions: 0,
        });
        let udp = self.udp.current();
        let udp = udp.iter().map(|r| {
            let stats = r.stats.snapshot();
            RouteOverview {
                name: r.name.clone(),
                listen: r.listen(),
                upstream: r.route().upstream.clone(),
                protocol: Protocol::Udp,
                udp_sessions: stats
                    .udp_sessions_started
                    .saturating_sub(stats.udp_sessions_ended)
                    as usize,
            }
        });
        tcp.chain(udp).collect()
    }

    /// The live connections `query` asks for, every route's activity (open connections,
    /// bytes and rates summed), and the UDP sessions the same query selects. Each worker (the
    /// UDP worker too) answers between two turns of its loop, applying the filter and the
    /// limit itself; a worker that has stopped is skipped.
    ///
    /// # Errors
    ///
    /// [`ObserveError::NoAnswer`] if a running worker does not answer within
    /// [`ANSWER_TIMEOUT`].
    pub fn connections(&self, query: &ConnectionQuery) -> Result<ConnectionList, ObserveError> {
        let query_shared = Arc::new(query.clone());
        let (reply, answers) = mpsc::channel();
        let asked = self.ask(|| Message::Observe {
            query: Arc::clone(&query_shared),
            reply: reply.clone(),
        });
        drop(reply);
        // The UDP worker is asked at the same time; it has stopped if the post is refused.
        let (udp_reply, udp_answers) = mpsc::channel();
        let udp_asked = self.udp.post(UdpMessage::Observe {
            query: Arc::clone(&query_shared),
            reply: udp_reply,
        });
        let mut list = ConnectionList::default();
        for (matched, sessions) in collect(&udp_answers, usize::from(udp_asked))? {
            list.udp_matched = matched;
            list.udp_sessions = sessions;
        }
        for part in collect(&answers, asked)? {
            list.matched += part.matched;
            list.connections.extend(part.connections);
            for route in part.routes {
                match list.routes.iter_mut().find(|r| r.route == route.route) {
                    Some(sum) => add(sum, &route),
                    None => list.routes.push(route),
                }
            }
        }
        order(&mut list.connections, query.sort, query.limit);
        Ok(list)
    }

    /// Resets the connections `filter` selects (both peers see a reset; each is logged as
    /// closed by the operator, with `by`, who asked) and returns their ids, sorted. A filter
    /// that selects nothing in particular is refused: it would reset every connection.
    ///
    /// # Errors
    ///
    /// [`ObserveError::Unselective`] for such a filter; [`ObserveError::NoAnswer`] as
    /// [`connections`](Self::connections).
    pub fn close_connections(
        &self,
        filter: &ConnectionFilter,
        by: &str,
    ) -> Result<Vec<u64>, ObserveError> {
        if filter.is_everything() {
            return Err(ObserveError::Unselective);
        }
        let filter = Arc::new(filter.clone());
        let by: Arc<str> = Arc::from(by);
        let (reply, answers) = mpsc::channel();
        let asked = self.ask(|| Message::Close {
            filter: Arc::clone(&filter),
            by: Arc::clone(&by),
            reply: reply.clone(),
        });
        drop(reply);
        let mut ids: Vec<u64> = collect(&answers, asked)?.into_iter().flatten().collect();
        ids.sort_unstable();
        Ok(ids)
    }

    /// Ends the UDP sessions `filter` selects (by route and client; a filter of connection
    /// ids selects none): each is logged as ended by the operator, with `by`, who asked, and
    /// the client's next datagram opens a new session (to the route's upstreams as they are
    /// now, after a reload say). Returns the (route, client) of each. A filter that selects
    /// nothing in particular is refused, as for [`close_connections`](Self::close_connections).
    ///
    /// # Errors
    ///
    /// [`ObserveError::Unselective`] for such a filter; [`ObserveError::NoAnswer`] if the UDP
    /// worker does not answer within [`ANSWER_TIMEOUT`].
    pub fn end_udp_sessions(
        &self,
        filter: &ConnectionFilter,
        by: &str,
    ) -> Result<Vec<(String, SocketAddr)>, ObserveError> {
        if filter.is_everything() {
            return Err(ObserveError::Unselective);
        }
        let (reply, answers) = mpsc::channel();
        let asked = self.udp.post(UdpMessage::End {
            filter: Arc::new(filter.clone()),
            by: Arc::from(by),
            reply,
        });
        let mut ended: Vec<_> = collect(&answers, usize::from(asked))?
            .into_iter()
            .flatten()
            .collect();
        ended.sort();
        Ok(ended)
    }

    /// Posts a message to every worker still reading its mail; returns how many were asked.
    fn ask(&self, message: impl Fn() -> Message) -> usize {
        self.relay
            .mailboxes
            .iter()
            .filter(|mailbox| mailbox.post_unless_closed(message()).is_ok())
            .count()
    }
}

/// The answers of `asked` workers, waiting at most [`ANSWER_TIMEOUT`] in all. A worker that
/// stopped after it was asked drops its mail (and the sender in it) unanswered: the channel
/// then ends early, and what came is what there is.
fn collect<T>(answers: &mpsc::Receiver<T>, asked: usize) -> Result<Vec<T>, ObserveError> {
    let deadline = Instant::now() + ANSWER_TIMEOUT;
    let mut parts = Vec::with_capacity(asked);
    while parts.len() < asked {
        let left = deadline.saturating_duration_since(Instant::now());
        match answers.recv_timeout(left) {
            Ok(part) => parts.push(part),
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
            Err(mpsc::RecvTimeoutError::Timeout) => return Err(ObserveError::NoAnswer),
        }
    }
    Ok(parts)
}

fn add(sum: &mut RouteActivity, part: &RouteActivity) {
    sum.open += part.open;
    sum.bytes_up += part.bytes_up;
    sum.bytes_down += part.bytes_down;
    sum.rate_up += part.rate_up;
    sum.rate_down += part.rate_down;
}
