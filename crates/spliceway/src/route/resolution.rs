//! How a route resolves upstream host names: the system resolver, or a lookup the program
//! supplies. A description: the lookup runs on the relay's resolver threads (`resolver.rs`).

use std::fmt;
use std::io;
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::Arc;
use std::time::Duration;

/// A lookup that also reports how long its answer may be cached. A lookup that fails with an
/// [`io::Error`] carrying a [`NegativeAnswer`] reports how long the failure may be cached.
pub type LookupWithTtl =
    dyn Fn(&str, u16) -> io::Result<(Vec<SocketAddr>, Option<Duration>)> + Send + Sync;

/// How a route resolves upstream host names.
#[derive(Clone)]
pub struct Resolution {
    pub(crate) lookup: Arc<LookupWithTtl>,
    pub(crate) label: String,
}

impl Resolution {
    /// The system resolver (`getaddrinfo`: `/etc/hosts`, then DNS as nsswitch says). Answers
    /// are cached for the route's `resolve_cache_ttl`.
    #[must_use]
    pub fn system() -> Self {
        Resolution {
            lookup: Arc::new(|host: &str, port| {
                Ok(((host, port).to_socket_addrs()?.collect(), None))
            }),
            label: "system".into(),
        }
    }

    /// A custom lookup; answers are cached for the route's `resolve_cache_ttl`.
    pub fn custom(
        label: impl Into<String>,
        lookup: impl Fn(&str, u16) -> io::Result<Vec<SocketAddr>> + Send + Sync + 'static,
    ) -> Self {
        Resolution {
            lookup: Arc::new(move |host: &str, port| Ok((lookup(host, port)?, None))),
            label: label.into(),
        }
    }

    /// A lookup that reports record lifetimes (a DNS client honouring TTLs): answers are
    /// cached for that long instead of the route's `resolve_cache_ttl`.
    pub fn with_ttl(
        label: impl Into<String>,
        lookup: impl Fn(&str, u16) -> io::Result<(Vec<SocketAddr>, Option<Duration>)>
        + Send
        + Sync
        + 'static,
    ) -> Self {
        Resolution {
            lookup: Arc::new(lookup),
            label: label.into(),
        }
    }

    /// A short name for logs (`system`, or the label given).
    #[must_use]
    pub fn label(&self) -> &str {
        &self.label
    }

    /// Looks `host` up once, bypassing the relay's cache: the addresses (with `port`), and how
    /// long the answer may be cached if the lookup reports it.
    ///
    /// # Errors
    ///
    /// Whatever the lookup reports.
    pub fn lookup(&self, host: &str, port: u16) -> io::Result<(Vec<SocketAddr>, Option<Duration>)> {
        (self.lookup)(host, port)
    }

    /// Identity of the lookup, for keying caches (two routes sharing a `Resolution` share
    /// cached answers).
    pub(crate) fn id(&self) -> usize {
        Arc::as_ptr(&self.lookup) as *const () as usize
    }
}

/// A lookup's answer that a name has no address, with how long that answer may be cached:
/// for DNS, the negative-caching time of RFC 2308 (the SOA record's minimum). A lookup returns
/// it inside an [`io::Error`] (`NegativeAnswer::new(..).into()`); the relay caches the
/// failure for [`NegativeAnswer::ttl`] (within its bounds) instead of its default negative
/// time. Any other error is cached for the default time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NegativeAnswer {
    detail: String,
    ttl: Duration,
}

impl NegativeAnswer {
    /// `detail` says what failed (it is logged with the connections it ends); `ttl` is how
    /// long the answer holds.
    pub fn new(detail: impl Into<String>, ttl: Duration) -> Self {
        NegativeAnswer {
            detail: detail.into(),
            ttl,
        }
    }

    /// How long the answer holds.
    #[must_use]
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// The negative answer `error` carries, if it carries one.
    #[must_use]
    pub fn of(error: &io::Error) -> Option<&NegativeAnswer> {
        error.get_ref()?.downcast_ref::<NegativeAnswer>()
    }
}

impl fmt::Display for NegativeAnswer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.detail)
    }
}

impl std::error::Error for NegativeAnswer {}

impl From<NegativeAnswer> for io::Error {
    fn from(answer: NegativeAnswer) -> io::Error {
        io::Error::new(io::ErrorKind::NotFound, answer)
    }
}

impl fmt::Debug for Resolution {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Resolution")
            .field("label", &self.label)
            .finish_non_exhaustive()
    }
}

impl PartialEq for Resolution {
    fn eq(&self, other: &Self) -> bool {
        self.id() == other.id()
    }
}

impl Eq for Resolution {}
