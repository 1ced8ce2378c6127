//! Upstream name resolution, off the event loop, with a short cache.
//!
//! Names are resolved per connection because the addresses behind names such as S3 endpoints
//! change; a short cache (the route's `resolve_cache_ttl`) keeps bursts of connections from
//! each paying for a lookup. Lookups run on a small pool of resolver threads, never on a worker:
//! `getaddrinfo` blocks, sometimes for seconds, and must not stall other connections. A worker
//! asks, goes on serving, and gets the answer through the callback it gave with the request
//! (the worker's callback posts it to its own mailbox): the resolver knows nothing of its
//! clients' message types.
//!
//! Each resolved address is marked *local* or not (an address this host owns), so that a worker
//! can refuse to connect a route to its own listening socket: the "S3 endpoint" trick done on
//! the relay host itself would otherwise make every connection loop through the relay.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::io;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::clock::deadline;
use crate::route::{LookupWithTtl, Resolution};

/// How long a failed lookup is remembered, so a dead DNS server is not asked once per client.
const NEGATIVE_TTL: Duration = Duration::from_secs(1);

/// Resolver threads per relay.
const RESOLVER_THREADS: usize = 2;

/// Shortest time a DNS answer is cached, even if its record says 0 (a burst of connections
/// must not become a burst of lookups).
const MIN_TTL: Duration = Duration::from_secs(1);

/// Cache key: which lookup (see `Resolution::id`), host, port.
type Key = (usize, String, u16);

/// One resolved address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Target {
    pub(crate) addr: SocketAddr,
    /// Whether the address belongs to this host (loopback, or bindable here).
    pub(crate) local: bool,
}

/// Where a lookup's result goes: called once, on a resolver thread, with the addresses or the
/// error text.
pub(crate) type Answer = Box<dyn FnOnce(Result<Arc<[Target]>, String>) + Send>;

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
    lookup: Arc<LookupWithTtl>,
    lookup_id: usize,
    host: String,
    port: u16,
    ttl: Duration,
    answer: Answer,
}

/// What the lookup threads and the askers share: the answer cache and the queue of lookups.
struct CacheAndQueue {
    cache: Mutex<HashMap<Key, CacheEntry>>,
    jobs: Mutex<VecDeque<Job>>,
    wake: Condvar,
    stop: AtomicBool,
}

/// The relay's resolver: a cache and a pool of lookup threads.
pub(crate) struct Resolver {
    shared: Arc<CacheAndQueue>,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

impl fmt::Debug for Resolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Resolver").finish_non_exhaustive()
    }
}

/// Whether `ip` is an address of this host: loopback, unspecified, or assigned to one of its
/// interfaces (`getifaddrs`).
///
/// Not "whether it can be bound": on hosts with `net.ipv4.ip_nonlocal_bind = 1` (common on
/// keepalived and VIP hosts) any address binds, and a bind test took every upstream for the
/// relay's own listener (hostile testing, docs/reliability.md).
pub(crate) fn is_local(ip: IpAddr) -> bool {
    if ip.is_loopback() || ip.is_unspecified() {
        return true;
    }
    match nix::ifaddrs::getifaddrs() {
        Ok(interfaces) => interfaces
            .filter_map(|interface| interface.address)
            .any(|address| {
                address.as_sockaddr_in().map(|a| IpAddr::V4(a.ip())) == Some(ip)
                    || address.as_sockaddr_in6().map(|a| IpAddr::V6(a.ip())) == Some(ip)
            }),
        // Without the list, fall back to asking the kernel whether it would bind the address
        // (wrong only under ip_nonlocal_bind).
        Err(_) => UdpSocket::bind(SocketAddr::new(ip, 0)).is_ok(),
    }
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
    pub(crate) fn new() -> Self {
        Resolver {
            shared: Arc::new(CacheAndQueue {
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
        resolution: &Resolution,
        host: &str,
        port: u16,
        ttl: Duration,
    ) -> io::Result<Arc<[Target]>> {
        let (addrs, record_ttl) = (resolution.lookup)(host, port)?;
        if addrs.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                "the name has no addresses",
            ));
        }
        let targets = to_targets(addrs);
        let key = (resolution.id(), host.to_string(), port);
        self.shared.store(
            key,
            Ok(Arc::clone(&targets)),
            record_ttl.map_or(ttl, |t| t.max(MIN_TTL)),
        );
        Ok(targets)
    }

    /// The cached answer for `host:port`, if fresh.
    pub(crate) fn cached(
        &self,
        resolution: &Resolution,
        host: &str,
        port: u16,
        now: Instant,
    ) -> Option<Result<Arc<[Target]>, String>> {
        let cache = self.shared.cache.lock().unwrap_or_else(|e| e.into_inner());
        match cache.get(&(resolution.id(), host.to_string(), port))? {
            CacheEntry::Resolved { targets, expires } if *expires > now => {
                Some(Ok(Arc::clone(targets)))
            }
            CacheEntry::Failed { error, expires } if *expires > now => Some(Err(error.clone())),
            _ => None,
        }
    }

    /// Asks for a lookup; `answer` is called with the result on a resolver thread.
    pub(crate) fn request(
        &self,
        resolution: &Resolution,
        host: &str,
        port: u16,
        ttl: Duration,
        answer: Answer,
    ) {
        let job = Job {
            lookup: Arc::clone(&resolution.lookup),
            lookup_id: resolution.id(),
            host: host.to_string(),
            port,
            ttl,
            answer,
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

impl CacheAndQueue {
    fn store(&self, key: Key, result: Result<Arc<[Target]>, String>, ttl: Duration) {
        let now = Instant::now();
        let entry = match result {
            Ok(targets) => CacheEntry::Resolved {
                targets,
                expires: deadline(now, ttl),
            },
            Err(error) => CacheEntry::Failed {
                error,
                expires: deadline(now, NEGATIVE_TTL.min(ttl)),
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
        cache.insert(key, entry);
    }
}

fn resolver_thread(shared: &CacheAndQueue) {
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
            match cache.get(&(job.lookup_id, job.host.clone(), job.port)) {
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
                let (result, ttl) = match (job.lookup)(&job.host, job.port) {
                    Ok((addrs, _)) if addrs.is_empty() => {
                        (Err("the name has no addresses".to_string()), job.ttl)
                    }
                    Ok((addrs, record_ttl)) => (
                        Ok(to_targets(addrs)),
                        record_ttl.map_or(job.ttl, |t| t.max(MIN_TTL)),
                    ),
                    Err(e) => (Err(e.to_string()), job.ttl),
                };
                let key = (job.lookup_id, job.host.clone(), job.port);
                shared.store(key, result.clone(), ttl);
                result
            }
        };
        (job.answer)(result);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    #[test]
    fn record_ttl_overrides_the_route_ttl() {
        let resolver = Resolver::new();
        let resolution = Resolution::with_ttl("ttl", |_: &str, port| {
            Ok((
                vec![SocketAddr::from(([127, 0, 0, 1], port))],
                Some(Duration::from_secs(3)),
            ))
        });
        resolver
            .resolve_blocking(&resolution, "x.test", 1, Duration::from_secs(600))
            .unwrap();
        let now = Instant::now();
        assert!(resolver.cached(&resolution, "x.test", 1, now).is_some());
        assert!(
            resolver
                .cached(&resolution, "x.test", 1, now + Duration::from_secs(4))
                .is_none(),
            "expired after the record's TTL, not the route's 600 s"
        );
    }

    #[test]
    fn loopback_and_own_addresses_are_local() {
        assert!(is_local("127.0.0.1".parse().unwrap()));
        assert!(is_local("127.1.2.3".parse().unwrap()));
        // TEST-NET-3 is never assigned to a host.
        assert!(!is_local("203.0.113.7".parse().unwrap()));
    }

    #[test]
    fn lookups_are_cached_and_answered_through_the_callback() {
        let calls = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&calls);
        let resolution = Resolution::custom("test", move |host: &str, port| {
            counter.fetch_add(1, Ordering::SeqCst);
            if host == "good.test" {
                Ok(vec![SocketAddr::from(([127, 0, 0, 1], port))])
            } else {
                Err(io::Error::new(io::ErrorKind::NotFound, "no such name"))
            }
        });
        let other = Resolution::system();
        let resolver = Resolver::new();
        resolver.start();
        let (tx, rx) = std::sync::mpsc::channel();
        let answer_to = |tag: u64| -> Answer {
            let tx = tx.clone();
            Box::new(move |result| {
                let _ = tx.send((tag, result));
            })
        };
        let ttl = Duration::from_secs(60);
        resolver.request(&resolution, "good.test", 80, ttl, answer_to(10));
        resolver.request(&resolution, "bad.test", 80, ttl, answer_to(20));
        let mut answers = Vec::new();
        for _ in 0..2 {
            answers.push(rx.recv_timeout(Duration::from_secs(5)).unwrap());
        }
        assert_eq!(answers.len(), 2);
        for answer in answers {
            match answer {
                (10, result) => {
                    let targets = result.unwrap();
                    assert_eq!(targets[0].addr.port(), 80);
                    assert!(targets[0].local);
                }
                (20, result) => {
                    assert!(result.unwrap_err().contains("no such name"));
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        let now = Instant::now();
        assert!(
            resolver
                .cached(&resolution, "good.test", 80, now)
                .unwrap()
                .is_ok()
        );
        assert!(
            resolver
                .cached(&resolution, "bad.test", 80, now)
                .unwrap()
                .is_err()
        );
        assert!(resolver.cached(&resolution, "good.test", 81, now).is_none());
        assert!(
            resolver.cached(&other, "good.test", 80, now).is_none(),
            "another lookup does not share the answer"
        );
        assert_eq!(calls.load(Ordering::SeqCst), 2);
        resolver.stop();
    }
}
