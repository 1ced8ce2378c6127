//! Taking in connections the program handed over ([`Message::Adopt`](crate::state::mailbox::Message)),
//! and what becomes of those still in the mailbox when the worker stops.

use std::ops::ControlFlow;
use std::time::Instant;

use super::{Source, Worker};
use crate::connection::Connection;
use crate::end::CloseReason;
use crate::state::adoption::Adopted;
use crate::state::mailbox::Message;
use crate::state::relay::Control;
use crate::stats::count;

impl Worker {
    /// Starts relaying an adopted pair (its limit slots are already reserved). While the relay
    /// drains it is taken like a connection already open; once it stops, reset at once.
    pub(super) fn adopt(&mut self, adopted: Adopted, now: Instant) {
        let Some(pair) = adopted.take() else {
            return;
        };
        let key = self.connections.vacant_key();
        let route = std::sync::Arc::clone(&pair.route);
        count(&self.relay.stats, route.stats(), |s| &s.accepted, 1);
        count(&self.relay.stats, route.stats(), |s| &s.adopted, 1);
        let tokens = Source::connection(key, pair.id);
        let mut connection = Connection::adopted(pair, tokens, now);
        tracing::debug!(
            target: "spliceway::conn",
            id = connection.id,
            route = %route.name,
            client = %connection.client_addr(),
            upstream = ?connection.chosen_upstream().map(ToString::to_string),
            "adopted"
        );
        if self.relay.control() == Control::Stopping {
            self.finish(connection, CloseReason::Shutdown, now);
            return;
        }
        if let Err(e) = connection.register_adopted(self.poll.registry()) {
            self.finish(connection, CloseReason::ClientError(e.to_string()), now);
            return;
        }
        let inserted = self.connections.insert(connection);
        debug_assert_eq!(inserted, key);
        self.after(key, ControlFlow::Continue(()), now);
    }

    /// The worker is stopping: closes the mailbox to new adoptions and resets those that
    /// arrived too late to be relayed (counted, and the program told, as a shutdown).
    pub(super) fn refuse_late_adoptions(&mut self, now: Instant) {
        for message in self.mailbox.close() {
            if let Message::Adopt(adopted) = message
                && let Some(pair) = adopted.take()
            {
                let key = self.connections.vacant_key();
                count(&self.relay.stats, pair.route.stats(), |s| &s.accepted, 1);
                count(&self.relay.stats, pair.route.stats(), |s| &s.adopted, 1);
                let tokens = Source::connection(key, pair.id);
                let connection = Connection::adopted(pair, tokens, now);
                self.finish(connection, CloseReason::Shutdown, now);
            }
        }
    }
}
