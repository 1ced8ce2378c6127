//! SNI routes: choosing the upstream from the client's TLS ClientHello, peeked at without
//! consuming it.

use std::io;
use std::ops::ControlFlow;

use super::*;
use crate::sni::{self, Peek};

impl Connection {
    /// Looks at the client's first bytes without consuming them (`MSG_PEEK`) and, once the
    /// whole ClientHello is there, chooses the upstream from its server name. `Continue` with
    /// `awaiting_hello()` still true means: wait for more bytes.
    pub(crate) fn read_hello(&mut self, scratch: &mut [u8]) -> ControlFlow<CloseReason> {
        let Upstream::Sni(table) = &self.route.upstream else {
            return ControlFlow::Continue(());
        };
        let n = match self.client.peek(scratch) {
            Ok(0) => {
                return ControlFlow::Break(CloseReason::SniRefused(
                    "the client closed before sending a ClientHello".into(),
                ));
            }
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return ControlFlow::Continue(()),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => return ControlFlow::Continue(()),
            Err(e) => {
                return ControlFlow::Break(if crate::direction_io::is_reset(&e) {
                    CloseReason::ClientReset
                } else {
                    CloseReason::ClientError(e.to_string())
                });
            }
        };
        let hello = match sni::parse_client_hello(&scratch[..n]) {
            Ok(Peek::Complete(hello)) => hello,
            Ok(Peek::Incomplete { .. }) if n < scratch.len() => return ControlFlow::Continue(()),
            Ok(Peek::Incomplete { .. }) => {
                return ControlFlow::Break(CloseReason::SniRefused(
                    "ClientHello larger than the peek buffer".into(),
                ));
            }
            Err(e) => return ControlFlow::Break(CloseReason::SniRefused(e.to_string())),
        };
        let Some(name) = hello.server_name else {
            return ControlFlow::Break(CloseReason::SniRefused("no server name (SNI)".into()));
        };
        let listen_port = self.client.local_addr().map(|a| a.port()).unwrap_or(0);
        match table.choose(&name, listen_port) {
            Some(upstream) => {
                tracing::debug!(
                    target: "spliceway::conn",
                    id = self.id,
                    route = %self.route.name,
                    client = %self.client_addr,
                    sni = %name,
                    upstream = %upstream,
                    "server name routed"
                );
                self.server_name = Some(name);
                self.chosen = Some(upstream);
                self.state = State::Resolving;
                ControlFlow::Continue(())
            }
            None => ControlFlow::Break(CloseReason::SniRefused(format!(
                "server name {name:?} is not allowed"
            ))),
        }
    }
}
