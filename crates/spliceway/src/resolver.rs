//! Upstream name resolution, off the event loop, with a short cache.
//!
//! Names are resolved per connection because the addresses behind names such as S3 endpoints
//! change; a short cache (the route's `resolve_cache_ttl`) keeps bursts of connections from
//! each paying for a lookup. Lookups run on a small pool of resolver threads, never on a worker:
//! `getaddrinfo` blocks, sometimes for seconds, and must not stall other connections. A worker
//! asks, goes on serving, and gets the answer in its [`Mailbox`].
//!
//! Each resolved address is marked *local* or not (an address this host owns), so that a worker
//! can refuse to connect a route to its own listening socket: the "S3 endpoint" trick done on
//! the relay host itself would otherwise make every connection loop through the relay.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::io;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::mailbox::{Mailbox, Message};

/// How long a failed lookup is remembered, so a dead DNS server is not asked once per client.
const NEGATIVE_TTL: Duration = Duration::from_secs(1);

/// Resolver threads per relay.
const RESOLVER_THREADS: usize = 2;

/// A function that resolves `host:port` (the system resolver by default).
pub type LookupFn = dyn Fn(&str, u16) -> io::Result<Vec<SocketAddr>> + Send + Sync;

/// One resolved address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Target {
    pub(crate) addr: SocketAddr,
    /// Whether the address belongs to this host (loopback, or bindable here).
    pub(crate) local: bool,
}

#[derive(Debug, Clone)]
enum CacheEntry {
    Resolved {
        targets: Arc<[Target]>,
        expires: Instant,
    },
    Failed {
        error: String,
        expires: Instant,
    },
}

struct Job {
    host: String,
    port: u16,
    ttl: Duration,
    mailbox: Arc<Mailbox>,
    key: usize,
    id: u64,
}

struct Shared {
    lookup: Arc<LookupFn>,
    cache: Mutex<HashMap<(String, u16), CacheEntry>>,
    jobs: Mutex<VecDeque<Job>>,
    wake: Condvar,
    stop: AtomicBool,
}

/// The relay's resolver: a cache and a pool of lookup threads.
pub(crate) struct Resolver {
    shared: Arc<Shared>,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

impl fmt::Debug for Resolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Resolver").finish_non_exhaustive()
    }
}

/// The system resolver (`getaddrinfo`, honouring `/etc/hosts`).
pub(crate) fn system_lookup(host: &str, port: u16) -> io::Result<Vec<SocketAddr>> {
    Ok((host, port).to_socket_addrs()?.collect())
}

/// Whether `ip` is an address of this host.
pub(crate) fn is_local(ip: IpAddr) -> bool {
    ip.is_loopback() || ip.is_unspecified() || UdpSocket::bind(SocketAddr::new(ip, 0)).is_ok()
}

fn to_targets(addrs: Vec<SocketAddr>) -> Arc<[Target]> {
    let mut seen = Vec::with_capacity(addrs.len());
    for addr in addrs {
        if !seen.iter().any(|t: &Target| t.addr == addr) {
            seen.push(Target {
                addr,
                local: is_local(addr.ip()),
            });
        }
    }
    seen.into()
}

impl Resolver {
    pub(crate) fn new(lookup: Arc<LookupFn>) -> Self {
        Resolver {
            shared: Arc::new(Shared {
                lookup,
                cache: Mutex::new(HashMap::new()),
                jobs: Mutex::new(VecDeque::new()),
                wake: Condvar::new(),
                stop: AtomicBool::new(false),
            }),
            threads: Mutex::new(Vec::new()),
        }
    }

    /// Starts the lookup threads.
    pub(crate) fn start(&self) {
        let mut threads = self.threads.lock().unwrap_or_else(|e| e.into_inner());
        for i in 0..RESOLVER_THREADS {
            let shared = Arc::clone(&self.shared);
            let spawned = std::thread::Builder::new()
                .name(format!("spliceway-resolve-{i}"))
                .spawn(move || resolver_thread(&shared));
            match spawned {
                Ok(handle) => threads.push(handle),
                Err(e) => tracing::error!("cannot start resolver thread: {e}"),
            }
        }
    }

    /// Stops the lookup threads (pending jobs are dropped) and waits for them.
    pub(crate) fn stop(&self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        self.shared.wake.notify_all();
        let threads = std::mem::take(&mut *self.threads.lock().unwrap_or_else(|e| e.into_inner()));
        for t in threads {
            let _ = t.join();
        }
    }

    /// Resolves now, on the calling thread, and caches the result (used at start-up, where a
    /// failure is reported to the user).
    pub(crate) fn resolve_blocking(
        &self,
        host: &str,
        port: u16,
        ttl: Duration,
    ) -> io::Result<Arc<[Target]>> {
        let addrs = (self.shared.lookup)(host, port)?;
        if addrs.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                "the name has no addresses",
            ));
        }
        let targets = to_targets(addrs);
        self.shared.store(host, port, Ok(Arc::clone(&targets)), ttl);
        Ok(targets)
    }

    /// The cached answer for `host:port`, if fresh.
    pub(crate) fn cached(
        &self,
        host: &str,
        port: u16,
        now: Instant,
    ) -> Option<Result<Arc<[Target]>, String>> {
        let cache = self.shared.cache.lock().unwrap_or_else(|e| e.into_inner());
        match cache.get(&(host.to_string(), port))? {
            CacheEntry::Resolved { targets, expires } if *expires > now => {
                Some(Ok(Arc::clone(targets)))
            }
            CacheEntry::Failed { error, expires } if *expires > now => Some(Err(error.clone())),
            _ => None,
        }
    }

    /// Asks for a lookup; the answer is posted to `mailbox` as [`Message::Resolved`].
    pub(crate) fn request(
        &self,
        host: &str,
        port: u16,
        ttl: Duration,
        mailbox: &Arc<Mailbox>,
        key: usize,
        id: u64,
    ) {
        let job = Job {
            host: host.to_string(),
            port,
            ttl,
            mailbox: Arc::clone(mailbox),
            key,
            id,
        };
        self.shared
            .jobs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push_back(job);
        self.shared.wake.notify_one();
    }
}

impl Drop for Resolver {
    fn drop(&mut self) {
        self.stop();
    }
}

impl Shared {
    fn store(&self, host: &str, port: u16, result: Result<Arc<[Target]>, String>, ttl: Duration) {
        let now = Instant::now();
        let entry = match result {
            Ok(targets) => CacheEntry::Resolved {
                targets,
                expires: now + ttl,
            },
            Err(error) => CacheEntry::Failed {
                error,
                expires: now + NEGATIVE_TTL.min(ttl),
            },
        };
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        // Bounded: names come from the configuration (and SNI tables), but drop expired entries
        // now and then so a long-running relay's cache cannot only grow.
        if cache.len() > 1024 {
            cache.retain(|_, e| match e {
                CacheEntry::Resolved { expires, .. } | CacheEntry::Failed { expires, .. } => {
                    *expires > now
                }
            });
        }
        cache.insert((host.to_string(), port), entry);
    }
}

fn resolver_thread(shared: &Shared) {
    loop {
        let job = {
            let mut jobs = shared.jobs.lock().unwrap_or_else(|e| e.into_inner());
            loop {
                if shared.stop.load(Ordering::SeqCst) {
                    return;
                }
                if let Some(job) = jobs.pop_front() {
                    break job;
                }
                jobs = shared.wake.wait(jobs).unwrap_or_else(|e| e.into_inner());
            }
        };
        // Another thread may have answered the same name while this job waited.
        let cached = {
            let cache = shared.cache.lock().unwrap_or_else(|e| e.into_inner());
            match cache.get(&(job.host.clone(), job.port)) {
                Some(CacheEntry::Resolved { targets, expires }) if *expires > Instant::now() => {
                    Some(Ok(Arc::clone(targets)))
                }
                Some(CacheEntry::Failed { error, expires }) if *expires > Instant::now() => {
                    Some(Err(error.clone()))
                }
                _ => None,
            }
        };
        let result = match cached {
            Some(result) => result,
            None => {
                let result = match (shared.lookup)(&job.host, job.port) {
                    Ok(addrs) if addrs.is_empty() => Err("the name has no addresses".to_string()),
                    Ok(addrs) => Ok(to_targets(addrs)),
                    Err(e) => Err(e.to_string()),
                };
                shared.store(&job.host, job.port, result.clone(), job.ttl);
                result
            }
        };
        job.mailbox.post(Message::Resolved {
            key: job.key,
            id: job.id,
            result,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    #[test]
    fn loopback_and_own_addresses_are_local() {
        assert!(is_local("127.0.0.1".parse().unwrap()));
        assert!(is_local("127.1.2.3".parse().unwrap()));
        // TEST-NET-3 is never assigned to a host.
        assert!(!is_local("203.0.113.7".parse().unwrap()));
    }

    #[test]
    fn lookups_are_cached_and_answered_through_the_mailbox() {
        let calls = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&calls);
        let resolver = Resolver::new(Arc::new(move |host: &str, port| {
            counter.fetch_add(1, Ordering::SeqCst);
            if host == "good.test" {
                Ok(vec![SocketAddr::from(([127, 0, 0, 1], port))])
            } else {
                Err(io::Error::new(io::ErrorKind::NotFound, "no such name"))
            }
        }));
        resolver.start();
        let poll = mio::Poll::new().unwrap();
        let mailbox = Arc::new(Mailbox::new(
            mio::Waker::new(poll.registry(), mio::Token(0)).unwrap(),
        ));
        let ttl = Duration::from_secs(60);
        resolver.request("good.test", 80, ttl, &mailbox, 1, 10);
        resolver.request("bad.test", 80, ttl, &mailbox, 2, 20);
        let mut answers = Vec::new();
        for _ in 0..500 {
            answers.extend(mailbox.take());
            if answers.len() == 2 {
                break;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        assert_eq!(answers.len(), 2);
        for answer in answers {
            match answer {
                Message::Resolved { key: 1, id: 10, result } => {
                    let targets = result.unwrap();
                    assert_eq!(targets[0].addr.port(), 80);
                    assert!(targets[0].local);
                }
                Message::Resolved { key: 2, id: 20, result } => {
                    assert!(result.unwrap_err().contains("no such name"));
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        assert!(resolver.cached("good.test", 80, Instant::now()).unwrap().is_ok());
        assert!(resolver.cached("bad.test", 80, Instant::now()).unwrap().is_err());
        assert!(resolver.cached("good.test", 81, Instant::now()).is_none());
        assert_eq!(calls.load(Ordering::SeqCst), 2);
        resolver.stop();
    }
}
