//! Connecting a connection to its upstream: one resolved address after another, starting from a
//! rotating one, refusing the relay's own listening address, each attempt bounded by the
//! connect timeout.

use std::io;
use std::ops::ControlFlow;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use mio::Interest;

use super::*;
use crate::upstream::open_upstream;

impl Connection {
    /// The upstream's addresses are known: start connecting.
    pub(crate) fn on_resolved(
        &mut self,
        ctx: &mut Ctx<'_>,
        key: usize,
        targets: Arc<[Target]>,
    ) -> ControlFlow<CloseReason> {
        if !matches!(self.state, State::Resolving) {
            return ControlFlow::Continue(());
        }
        let first = self.route.next_target.fetch_add(1, Ordering::Relaxed) % targets.len().max(1);
        self.state = State::Connecting {
            targets,
            first,
            tried: 0,
            attempt_started: ctx.now,
            last_error: None,
        };
        self.connect_next(ctx, key)
    }

    /// Opens a connection to the next untried address.
    fn connect_next(&mut self, ctx: &mut Ctx<'_>, key: usize) -> ControlFlow<CloseReason> {
        let max_attempts = self.route.options.connect_attempts;
        loop {
            let State::Connecting {
                targets,
                first,
                tried,
                attempt_started,
                last_error,
            } = &mut self.state
            else {
                return ControlFlow::Continue(());
            };
            if *tried >= max_attempts.min(targets.len()) {
                let reason = last_error
                    .take()
                    .unwrap_or_else(|| CloseReason::ConnectFailed("no address".into()));
                return ControlFlow::Break(reason);
            }
            let target = targets[(*first + *tried) % targets.len()];
            *tried += 1;
            if let Some(listen) = self.route.loops_back(&target) {
                count(ctx.global, self.route.stats(), |s| &s.self_loops, 1);
                tracing::warn!(
                    target: "spliceway::conn",
                    route = %self.route.name,
                    client = %self.client_addr,
                    upstream = %target.addr,
                    "refusing to connect: upstream {} resolves to {}, this relay's own listener {listen}; \
                     the relay host must resolve the upstream name to the real service (check /etc/hosts)",
                    self.chosen.as_ref().map(|c| c.to_string()).unwrap_or_default(),
                    target.addr,
                );
                *last_error = Some(CloseReason::SelfLoop(target.addr));
                continue;
            }
            match open_upstream(target.addr, &self.route.options) {
                Ok(mut stream) => {
                    if let Err(e) = ctx.registry.register(
                        &mut stream,
                        upstream_token(key),
                        Interest::READABLE | Interest::WRITABLE,
                    ) {
                        *last_error = Some(CloseReason::ConnectFailed(e.to_string()));
                        continue;
                    }
                    *attempt_started = ctx.now;
                    tracing::debug!(
                        target: "spliceway::conn",
                        id = self.id,
                        route = %self.route.name,
                        client = %self.client_addr,
                        upstream = %target.addr,
                        "connecting"
                    );
                    self.upstream = Some(stream);
                    self.upstream_addr = Some(target.addr);
                    return ControlFlow::Continue(());
                }
                Err(e) => {
                    count(
                        ctx.global,
                        self.route.stats(),
                        |s| &s.upstream_connect_failures,
                        1,
                    );
                    tracing::debug!(target: "spliceway::conn", upstream = %target.addr, "connect failed: {e}");
                    *last_error = Some(CloseReason::ConnectFailed(format!("{}: {e}", target.addr)));
                }
            }
        }
    }

    /// Abandons the current attempt (failed or timed out) and tries the next address.
    pub(super) fn attempt_failed(
        &mut self,
        ctx: &mut Ctx<'_>,
        key: usize,
        error: String,
    ) -> ControlFlow<CloseReason> {
        count(
            ctx.global,
            self.route.stats(),
            |s| &s.upstream_connect_failures,
            1,
        );
        let addr = self.upstream_addr.take();
        if let Some(mut stream) = self.upstream.take() {
            let _ = ctx.registry.deregister(&mut stream);
        }
        let message = match addr {
            Some(addr) => format!("{addr}: {error}"),
            None => error,
        };
        tracing::debug!(target: "spliceway::conn", id = self.id, "upstream connect failed: {message}");
        if let State::Connecting { last_error, .. } = &mut self.state {
            *last_error = Some(CloseReason::ConnectFailed(message));
        }
        self.connect_next(ctx, key)
    }

    pub(super) fn check_connected(
        &mut self,
        ctx: &mut Ctx<'_>,
        key: usize,
    ) -> ControlFlow<CloseReason> {
        let Some(stream) = &self.upstream else {
            return ControlFlow::Continue(());
        };
        match stream.take_error() {
            Ok(Some(e)) | Err(e) => return self.attempt_failed(ctx, key, e.to_string()),
            Ok(None) => {}
        }
        match stream.peer_addr() {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::NotConnected => {
                return ControlFlow::Continue(());
            }
            Err(e) => return self.attempt_failed(ctx, key, e.to_string()),
        }
        let connect_time = ctx.now.saturating_duration_since(self.accepted_at);
        self.connect_time = Some(connect_time);
        self.state = State::Relaying;
        self.last_activity = ctx.now;
        count(ctx.global, self.route.stats(), |s| &s.upstream_connects, 1);
        count(
            ctx.global,
            self.route.stats(),
            |s| &s.connect_micros_total,
            connect_time.as_micros() as u64,
        );
        ctx.global.connect_latency.observe(connect_time);
        self.route.stats().connect_latency.observe(connect_time);
        tracing::debug!(
            target: "spliceway::conn",
            id = self.id,
            route = %self.route.name,
            client = %self.client_addr,
            upstream = %self.upstream_addr.map(|a| a.to_string()).unwrap_or_default(),
            connect_ms = %Millis(Some(connect_time)),
            "connected"
        );
        ControlFlow::Continue(())
    }
}
