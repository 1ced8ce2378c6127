//! What an epoll token stands for: the worker's waker, one of its listeners, or the client or
//! upstream socket of one of its connections. One type encodes and decodes them, so the layout
//! lives in one place.
//!
//! Layout of the `usize` space: connection slot `k` uses `2k` (client) and `2k + 1`
//! (upstream), below `LISTENER_BASE`; listener slot `k` uses `LISTENER_BASE + k`; the waker is
//! `usize::MAX`.

use mio::Token;

use crate::connection::SocketTokens;

/// Listener tokens start here; connection tokens are below (two per connection).
const LISTENER_BASE: usize = usize::MAX / 2;

/// The source of a readiness event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Source {
    /// The worker's mailbox waker.
    Waker,
    /// The listener in this slot.
    Listener(usize),
    /// The client socket of the connection in this slot.
    Client(usize),
    /// The upstream socket of the connection in this slot.
    Upstream(usize),
}

impl Source {
    /// The token this source is registered with.
    pub(crate) fn token(self) -> Token {
        Token(match self {
            Source::Waker => usize::MAX,
            Source::Listener(key) => LISTENER_BASE + key,
            Source::Client(key) => key * 2,
            Source::Upstream(key) => key * 2 + 1,
        })
    }

    /// The source a token was registered for.
    pub(crate) fn of(token: Token) -> Source {
        match token.0 {
            usize::MAX => Source::Waker,
            t if t >= LISTENER_BASE => Source::Listener(t - LISTENER_BASE),
            t if t % 2 == 0 => Source::Client(t / 2),
            t => Source::Upstream(t / 2),
        }
    }

    /// The tokens of the connection in slot `key`.
    pub(crate) fn connection(key: usize) -> SocketTokens {
        SocketTokens {
            client: Source::Client(key).token(),
            upstream: Source::Upstream(key).token(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_source_decodes_to_itself() {
        for key in [0, 1, 2, 1000, LISTENER_BASE / 2 - 1] {
            for source in [Source::Client(key), Source::Upstream(key)] {
                assert_eq!(Source::of(source.token()), source);
            }
        }
        for key in [0, 1, 77] {
            assert_eq!(
                Source::of(Source::Listener(key).token()),
                Source::Listener(key)
            );
        }
        assert_eq!(Source::of(Source::Waker.token()), Source::Waker);
        let tokens = Source::connection(5);
        assert_ne!(tokens.client, tokens.upstream);
        assert_eq!(Source::of(tokens.upstream), Source::Upstream(5));
    }
}
