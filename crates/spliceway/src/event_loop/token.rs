//! What an epoll token stands for: the worker's waker, one of its listeners, or the client or
//! upstream socket of one of its connections. One type encodes and decodes them, so the layout
//! lives in one place.
//!
//! Layout of the `usize` space: connection slot `k` uses `g << SLOT_BITS | 2k` (client) and
//! `g << SLOT_BITS | 2k + 1` (upstream), below `LISTENER_BASE`, where `g` is the connection's
//! *generation* (the low [`GENERATION_BITS`] of its id); listener slot `k` uses
//! `LISTENER_BASE + k`; the waker is `usize::MAX`.
//!
//! ## Why a generation
//!
//! A connection's sockets are closed without `EPOLL_CTL_DEL` (see `Connection::close`): the
//! kernel removes a descriptor from every epoll set when its file is released, which saves two
//! system calls per connection. A token can then still arrive for a connection that is gone,
//! in two ways:
//!
//! - within one `epoll_wait` batch: the batch holds an event for socket A of slot `k` and, later,
//!   one for socket B of the same slot; handling A closes the connection, and an accept further
//!   on in the batch may give slot `k` to a new connection before B's event is read. (A batch
//!   holds at most one event per registration, and one for a socket just registered can only
//!   come in a later batch.) The same was true with `EPOLL_CTL_DEL`, which does not take back
//!   events already returned;
//! - later: if another reference to the closed socket's file survives (a `fork` by another
//!   thread of the process between its `clone` and its `exec`), the file is not released at
//!   `close` and its registration keeps reporting events until it is.
//!
//! Either way the event carries the old connection's generation, the slot's new connection has
//! another one (ids only grow; two connections share a generation only 2^30 connections apart),
//! and the worker drops the event. Without the check, a stale writable event could make a
//! connection whose upstream connect is still in progress believe it had connected. Where
//! `usize` has no room for a generation (32-bit targets) the sockets are deregistered before
//! they are closed instead ([`DEREGISTER_ON_CLOSE`]).

use mio::Token;

use crate::connection::SocketTokens;

/// Listener tokens start here; connection tokens are below (two per connection).
const LISTENER_BASE: usize = usize::MAX / 2;

/// Bits of a connection's id carried in its tokens (none where `usize` is too narrow).
const GENERATION_BITS: u32 = if usize::BITS >= 64 { 30 } else { 0 };

/// Bits below the generation: the slot and the side. Two top bits stay clear, so a connection
/// token is always below `LISTENER_BASE`.
const SLOT_BITS: u32 = usize::BITS - 2 - GENERATION_BITS;

const GENERATION_MASK: u64 = (1 << GENERATION_BITS) - 1;

/// Whether a connection's sockets must leave epoll explicitly before they close, because the
/// tokens cannot tell one connection of a slot from the next (see the module's notes).
pub(crate) const DEREGISTER_ON_CLOSE: bool = GENERATION_BITS == 0;

/// The generation of connection `id`: what its tokens carry.
pub(crate) fn generation(id: u64) -> u32 {
    (id & GENERATION_MASK) as u32
}

/// The source of a readiness event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Source {
    /// The worker's mailbox waker.
    Waker,
    /// The listener in this slot.
    Listener(usize),
    /// The client socket of the connection in this slot, of this generation.
    Client(usize, u32),
    /// The upstream socket of the connection in this slot, of this generation.
    Upstream(usize, u32),
}

impl Source {
    /// The token this source is registered with.
    pub(crate) fn token(self) -> Token {
        Token(match self {
            Source::Waker => usize::MAX,
            Source::Listener(key) => LISTENER_BASE + key,
            Source::Client(key, generation) => Self::connection_token(key, generation, 0),
            Source::Upstream(key, generation) => Self::connection_token(key, generation, 1),
        })
    }

    fn connection_token(key: usize, generation: u32, side: usize) -> usize {
        debug_assert!(
            key < 1 << (SLOT_BITS - 1),
            "slot {key} beyond the token space"
        );
        ((generation as usize) << SLOT_BITS) | (key << 1) | side
    }

    /// The source a token was registered for.
    pub(crate) fn of(token: Token) -> Source {
        match token.0 {
            usize::MAX => Source::Waker,
            t if t >= LISTENER_BASE => Source::Listener(t - LISTENER_BASE),
            t => {
                let generation = (t >> SLOT_BITS) as u32;
                let key = (t & ((1 << SLOT_BITS) - 1)) >> 1;
                if t % 2 == 0 {
                    Source::Client(key, generation)
                } else {
                    Source::Upstream(key, generation)
                }
            }
        }
    }

    /// The tokens of connection `id` in slot `key`.
    pub(crate) fn connection(key: usize, id: u64) -> SocketTokens {
        let generation = generation(id);
        SocketTokens {
            client: Source::Client(key, generation).token(),
            upstream: Source::Upstream(key, generation).token(),
            generational: !DEREGISTER_ON_CLOSE,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_source_decodes_to_itself() {
        let max_generation = generation(u64::MAX);
        for key in [0, 1, 2, 1000, (1 << (SLOT_BITS - 1)) - 1] {
            for g in [0, 1, 12345, max_generation] {
                for source in [Source::Client(key, g), Source::Upstream(key, g)] {
                    assert_eq!(Source::of(source.token()), source);
                    assert!(source.token().0 < LISTENER_BASE);
                }
            }
        }
        for key in [0, 1, 77] {
            assert_eq!(
                Source::of(Source::Listener(key).token()),
                Source::Listener(key)
            );
        }
        assert_eq!(Source::of(Source::Waker.token()), Source::Waker);
        let tokens = Source::connection(5, 7);
        assert_ne!(tokens.client, tokens.upstream);
        assert_eq!(
            Source::of(tokens.upstream),
            Source::Upstream(5, generation(7))
        );
    }

    #[test]
    fn the_next_connection_of_a_slot_has_other_tokens() {
        // What keeps a stale event of a closed connection from reaching the slot's next one.
        let (old, new) = (Source::connection(3, 41), Source::connection(3, 42));
        if DEREGISTER_ON_CLOSE {
            return;
        }
        assert_ne!(old.client, new.client);
        assert_ne!(old.upstream, new.upstream);
        assert_eq!(generation(41 + (1 << GENERATION_BITS)), generation(41));
    }
}
