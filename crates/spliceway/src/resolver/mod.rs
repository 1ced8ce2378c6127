//! Upstream name resolution, off the event loop, with a cache; fair between routes and
//! bounded against clients that choose the names.
//!
//! Names are resolved per connection because the addresses behind names such as S3 endpoints
//! change; a short cache (the route's `resolve_cache_ttl`, or the record's TTL) keeps bursts of
//! connections from each paying for a lookup. Lookups run on a pool of resolver threads, never
//! on a worker: `getaddrinfo` blocks, sometimes for seconds, and must not stall other
//! connections. A worker asks, goes on serving, and gets the answer through the callback it
//! gave with the request (the worker's callback posts it to its own mailbox): the resolver
//! knows nothing of its clients' message types.
//!
//! An SNI entry without an upstream resolves whatever name the client sends, so clients choose
//! what is looked up (hostile testing: 20 hellos naming hosts whose DNS never answers took both
//! resolver threads of the old single FIFO, and every route's connections timed out for about
//! 35 s). The defences:
//!
//! - **A queue per group** (the worker passes the route's name): the threads serve the groups
//!   that have waiting lookups in turn (round robin), so one route's backlog never delays
//!   another's lookups.
//! - **A cap on running lookups per group** ([`MAX_RUNNING_LOOKUPS_PER_ROUTE`], 4) below the
//!   thread bound ([`MAX_LOOKUP_THREADS`], 16): a lookup that never returns holds its thread,
//!   so a route whose DNS hangs holds at most 4 threads. Threads are started when lookups can
//!   run and no thread is idle (2 are kept; one idle for 30 s beyond those ends).
//! - **Joining**: a request for a name already waiting or running in its group joins that
//!   lookup (one lookup, every waiter answered) instead of queueing again.
//! - **Cancellation**: a request returns a [`Ticket`]; the connection holds it, and dropping it
//!   (the connection closed or timed out) withdraws its callback. A waiting lookup whose last
//!   waiter left is taken off the queue and never run ([`Ticket::cancel`] says so, for the
//!   `resolve_cancelled` counter). A running lookup cannot be interrupted; it finishes and its
//!   answer is cached.
//! - **Bounds**: at most [`MAX_PENDING_LOOKUPS_PER_ROUTE`] (64) distinct lookups waiting or
//!   running per group, and at most [`MAX_PENDING_LOOKUPS_PER_CLIENT`] (8) started by one client
//!   address (an IPv6 client by its /64, which one host usually holds whole) across all groups.
//!   A request for a *new* lookup beyond either is refused ([`Refused`]); the worker resets the
//!   connection and counts it (`resolve_refused`). Joining an existing lookup is never refused.
//!   With 4 running per route, a full queue of 64 lookups of 5 s each drains in 80 s at worst;
//!   since the lookups of closed connections are dropped, only connections still waiting keep
//!   their place.
//! - **Negative caching**: a failed lookup is cached per name for [`DEFAULT_NEGATIVE_TTL`]
//!   (5 s), or for the time the lookup reports with a [`NegativeAnswer`] (a DNS NXDOMAIN's SOA
//!   minimum), kept within 1 s and [`MAX_NEGATIVE_TTL`] (5 min), independently of the route's
//!   `resolve_cache_ttl`: a dead or hostile name is asked at most once per that time, however
//!   many clients name it.
//!
//! Each resolved address is marked *local* or not (an address this host owns), so that a worker
//! can refuse to connect a route to its own listening socket: the "S3 endpoint" trick done on
//! the relay host itself would otherwise make every connection loop through the relay.
//!
//! | file | job |
//! | --- | --- |
//! | `mod.rs` | the [`Resolver`] service: requests, tickets, the lookup threads |
//! | `queue.rs` | the queue per group, served in turn, with its bounds and each lookup's waiters |
//! | `cache.rs` | answers until their TTL, failures until their negative TTL |
//! | `target.rs` | what a lookup yields ([`Target`]: an address, and whether it is this host's) |
//! | `limits.rs` | the limits above, public |

mod cache;
mod limits;
mod queue;
mod target;

use std::fmt;
use std::io;
use std::net::IpAddr;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::clock::deadline;

pub use limits::{
    DEFAULT_NEGATIVE_TTL, MAX_LOOKUP_THREADS, MAX_NEGATIVE_TTL, MAX_PENDING_LOOKUPS_PER_CLIENT,
    MAX_PENDING_LOOKUPS_PER_ROUTE, MAX_RUNNING_LOOKUPS_PER_ROUTE,
};
pub(crate) use target::{Answer, Target, is_local};

use crate::route::{LookupWithTtl, NegativeAnswer, Resolution};
use cache::{Cache, CacheEntry};
use limits::{
    CACHE_PURGE_ENTRIES, LOOKUP_THREAD_IDLE_EXIT, MAX_CACHE_ENTRIES, MIN_LOOKUP_THREADS, MIN_TTL,
};
use queue::{Pending, Queue};
use target::{Key, client_key, to_targets};

/// Who asks for a lookup, for fairness and bounds.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Asker<'a> {
    /// The queue the lookup waits in (the worker passes the route's name).
    pub(crate) group: &'a str,
    /// The client the connection is for (the address a PROXY header gave, if any).
    pub(crate) client: IpAddr,
    /// The TCP peer the connection came from (the client itself, or its load balancer).
    pub(crate) peer: IpAddr,
}

/// Why a lookup was not queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refused {
    /// The group has [`MAX_PENDING_LOOKUPS_PER_ROUTE`] lookups waiting or running.
    Group,
    /// The client has started [`MAX_PENDING_LOOKUPS_PER_CLIENT`] lookups still waiting or
    /// running.
    Client,
}

impl fmt::Display for Refused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refused::Group => write!(
                f,
                "{MAX_PENDING_LOOKUPS_PER_ROUTE} lookups already pending for this route"
            ),
            Refused::Client => write!(
                f,
                "{MAX_PENDING_LOOKUPS_PER_CLIENT} lookups already pending for this client"
            ),
        }
    }
}

/// A request's place among a lookup's waiters. Dropping it withdraws the request: its answer
/// is not delivered, and a lookup left without waiters before it ran is never run.
pub(crate) struct Ticket {
    shared: Arc<Shared>,
    group: String,
    key: Key,
    waiter: u64,
}

impl fmt::Debug for Ticket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ticket")
            .field("group", &self.group)
            .field("host", &self.key.1)
            .field("waiter", &self.waiter)
            .finish_non_exhaustive()
    }
}

impl Ticket {
    /// Withdraws the request. True when that took a lookup off the queue before it ran (this
    /// was its last waiter).
    pub(crate) fn cancel(mut self) -> bool {
        self.withdraw()
    }

    fn withdraw(&mut self) -> bool {
        let waiter = std::mem::replace(&mut self.waiter, u64::MAX);
        if waiter == u64::MAX {
            return false;
        }
        self.shared
            .lock_queue()
            .withdraw(&self.group, &self.key, waiter)
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.withdraw();
    }
}

/// How often a failure to start a lookup thread is logged at most.
const SPAWN_ERROR_LOG_PERIOD: Duration = Duration::from_secs(10);

/// What the lookup threads and the askers share: the answer cache and the queues.
#[derive(Default)]
struct Shared {
    cache: Mutex<Cache>,
    queue: Mutex<Queue>,
    wake: Condvar,
    /// When a failure to start a lookup thread was last logged: lookups are asked for by
    /// clients, so under a task limit every connection could otherwise log one.
    spawn_error_logged: Mutex<Option<Instant>>,
}

impl Shared {
    fn lock_queue(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn lock_cache(&self) -> MutexGuard<'_, Cache> {
        self.cache.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn cached(&self, key: &Key, now: Instant) -> Option<Result<Arc<[Target]>, String>> {
        self.lock_cache().entries.get(key)?.fresh(now)
    }

    /// Caches `result` for `ttl` (a failure for `ttl` as given: see [`negative_ttl`]).
    fn store(&self, key: Key, result: Result<Arc<[Target]>, String>, ttl: Duration) {
        let now = Instant::now();
        let expires = deadline(now, ttl);
        let entry = match result {
            Ok(targets) => CacheEntry::Resolved { targets, expires },
            Err(error) => CacheEntry::Failed { error, expires },
        };
        let mut cache = self.lock_cache();
        // Names come from the configuration, but also from clients (SNI entries without an
        // upstream): drop expired entries as the cache grows, and never grow past the bound.
        if cache.entries.len() >= cache.purge_at.max(CACHE_PURGE_ENTRIES) {
            cache.entries.retain(|_, e| e.expires() > now);
            cache.purge_at = cache.entries.len() * 2;
        }
        if cache.entries.len() < MAX_CACHE_ENTRIES || cache.entries.contains_key(&key) {
            cache.entries.insert(key, entry);
        }
    }
}

/// The relay's resolver: a cache, per-group queues, and a pool of lookup threads.
pub(crate) struct Resolver {
    shared: Arc<Shared>,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

impl fmt::Debug for Resolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Resolver").finish_non_exhaustive()
    }
}

/// How long a failure is cached: what its [`NegativeAnswer`] says (within bounds), or
/// [`DEFAULT_NEGATIVE_TTL`].
fn negative_ttl(error: &io::Error) -> Duration {
    NegativeAnswer::of(error).map_or(DEFAULT_NEGATIVE_TTL, |answer| {
        answer.ttl().clamp(MIN_TTL, MAX_NEGATIVE_TTL)
    })
}

/// Runs one lookup: the result, and how long to cache it (`ttl` for an answer without a
/// record TTL).
fn perform(
    lookup: &LookupWithTtl,
    host: &str,
    port: u16,
    ttl: Duration,
) -> (Result<Arc<[Target]>, String>, Duration) {
    // A lookup is the embedder's code: a panic in it must not take the thread (and its
    // lookup's place) with it.
    match catch_unwind(AssertUnwindSafe(|| lookup(host, port))) {
        Ok(Ok((addrs, _))) if addrs.is_empty() => (
            Err("the name has no addresses".to_string()),
            DEFAULT_NEGATIVE_TTL,
        ),
        Ok(Ok((addrs, record_ttl))) => (
            Ok(to_targets(addrs)),
            record_ttl.map_or(ttl, |t| t.max(MIN_TTL)),
        ),
        Ok(Err(e)) => (Err(e.to_string()), negative_ttl(&e)),
        Err(_) => (Err("the lookup panicked".to_string()), DEFAULT_NEGATIVE_TTL),
    }
}

impl Resolver {
    pub(crate) fn new() -> Self {
        Resolver {
            shared: Arc::default(),
            threads: Mutex::new(Vec::new()),
        }
    }

    /// Starts the lookup threads that are always there (more start when lookups wait).
    pub(crate) fn start(&self) {
        for _ in 0..MIN_LOOKUP_THREADS {
            self.spawn_thread();
        }
    }

    /// Starts one lookup thread, unless the resolver stopped or has [`MAX_LOOKUP_THREADS`].
    fn spawn_thread(&self) {
        {
            let mut queue = self.shared.lock_queue();
            if queue.stopped || queue.threads >= MAX_LOOKUP_THREADS {
                return;
            }
            queue.threads += 1;
        }
        let mut threads = self.threads.lock().unwrap_or_else(|e| e.into_inner());
        // Handles of threads that ended idle.
        threads.retain(|t| !t.is_finished());
        let shared = Arc::clone(&self.shared);
        let spawned = std::thread::Builder::new()
            .name("spliceway-resolve".into())
            .spawn(move || resolver_thread(&shared));
        match spawned {
            Ok(handle) => threads.push(handle),
            Err(e) => {
                self.shared.lock_queue().threads -= 1;
                let now = Instant::now();
                let mut logged = self
                    .shared
                    .spawn_error_logged
                    .lock()
                    .unwrap_or_else(|e| e.into_inner());
                // log: rate limited (once every 10 s): a client's lookup can ask for a thread.
                if logged
                    .is_none_or(|at| now.saturating_duration_since(at) >= SPAWN_ERROR_LOG_PERIOD)
                {
                    *logged = Some(now);
                    tracing::error!(
                        "cannot start a resolver thread: {e} (the lookups wait for the threads \
                         running; at most one such line every 10 s)"
                    );
                }
            }
        }
    }

    /// Stops the lookup threads (pending lookups are dropped, their callbacks never called)
    /// and waits for them.
    pub(crate) fn stop(&self) {
        {
            let mut queue = self.shared.lock_queue();
            queue.stopped = true;
            queue.ready.clear();
            queue.groups.clear();
            queue.clients.clear();
        }
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
        self.shared
            .cached(&(resolution.id(), host.to_string(), port), now)
    }

    /// Asks for a lookup; `answer` is called with the result on a resolver thread, unless the
    /// returned ticket is dropped first. `ttl` is how long a successful answer without a record
    /// TTL is cached.
    ///
    /// # Errors
    ///
    /// [`Refused`] when the lookup would be new and its group or its client already has as
    /// many pending as allowed; `answer` is then dropped uncalled.
    pub(crate) fn request(
        &self,
        resolution: &Resolution,
        host: &str,
        port: u16,
        ttl: Duration,
        asker: Asker<'_>,
        answer: Answer,
    ) -> Result<Ticket, Refused> {
        let key: Key = (resolution.id(), host.to_string(), port);
        let client = client_key(asker.peer, asker.client);
        let ticket = |waiter| Ticket {
            shared: Arc::clone(&self.shared),
            group: asker.group.to_string(),
            key: key.clone(),
            waiter,
        };
        let mut queue = self.shared.lock_queue();
        let waiter = queue.next_waiter;
        queue.next_waiter += 1;
        let Queue {
            groups, clients, ..
        } = &mut *queue;
        if let Some(pending) = groups
            .get_mut(asker.group)
            .and_then(|g| g.lookups.get_mut(&key))
        {
            pending.waiters.push((waiter, answer));
            return Ok(ticket(waiter));
        }
        if clients.get(&client).copied().unwrap_or(0) >= MAX_PENDING_LOOKUPS_PER_CLIENT {
            return Err(Refused::Client);
        }
        if groups
            .get(asker.group)
            .is_some_and(|g| g.lookups.len() >= MAX_PENDING_LOOKUPS_PER_ROUTE)
        {
            return Err(Refused::Group);
        }
        let group = groups.entry(asker.group.to_string()).or_default();
        group.waiting.push_back(key.clone());
        group.lookups.insert(
            key.clone(),
            Pending {
                lookup: Arc::clone(&resolution.lookup),
                ttl,
                owner: client,
                waiters: vec![(waiter, answer)],
                running: false,
            },
        );
        *clients.entry(client).or_insert(0) += 1;
        queue.schedule(asker.group);
        let more_threads = queue.idle < queue.startable() && queue.threads < MAX_LOOKUP_THREADS;
        drop(queue);
        self.shared.wake.notify_one();
        if more_threads {
            self.spawn_thread();
        }
        Ok(ticket(waiter))
    }
}

impl Drop for Resolver {
    fn drop(&mut self) {
        self.stop();
    }
}

fn resolver_thread(shared: &Shared) {
    let mut queue = shared.lock_queue();
    loop {
        if queue.stopped {
            queue.threads -= 1;
            return;
        }
        let Some(job) = queue.take_job() else {
            queue.idle += 1;
            let (guard, wait) = shared
                .wake
                .wait_timeout(queue, LOOKUP_THREAD_IDLE_EXIT)
                .unwrap_or_else(|e| e.into_inner());
            queue = guard;
            queue.idle -= 1;
            if wait.timed_out() && queue.ready.is_empty() && queue.threads > MIN_LOOKUP_THREADS {
                queue.threads -= 1;
                return;
            }
            continue;
        };
        drop(queue);
        let (_, host, port) = &job.key;
        // Another group may have answered the same name while this one waited.
        let result = match shared.cached(&job.key, Instant::now()) {
            Some(result) => result,
            None => {
                let (result, ttl) = perform(&*job.lookup, host, *port, job.ttl);
                shared.store(job.key.clone(), result.clone(), ttl);
                result
            }
        };
        let waiters = shared.lock_queue().finish(&job);
        for answer in waiters {
            answer(result.clone());
        }
        queue = shared.lock_queue();
    }
}

#[cfg(test)]
mod tests;
