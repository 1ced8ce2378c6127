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

use std::collections::hash_map::Entry;
use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::io;
use std::net::{IpAddr, Ipv6Addr, SocketAddr, UdpSocket};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::clock::deadline;
use crate::route::{LookupWithTtl, NegativeAnswer, Resolution};

/// How long a failed lookup is remembered when the lookup does not say (a `getaddrinfo`
/// failure, a DNS timeout), so a dead DNS server or a name that does not exist is not asked once
/// per client; short enough that a name that starts to exist works within seconds.
pub const DEFAULT_NEGATIVE_TTL: Duration = Duration::from_secs(5);

/// The longest a failure is remembered, whatever the lookup reports ([`NegativeAnswer`]): a
/// name created after a client asked for it works within this time.
pub const MAX_NEGATIVE_TTL: Duration = Duration::from_secs(300);

/// Most lookup threads a relay runs at once.
pub const MAX_LOOKUP_THREADS: usize = 16;

/// Most lookups one route runs at once (below [`MAX_LOOKUP_THREADS`]: a route whose DNS hangs
/// cannot hold every thread).
pub const MAX_RUNNING_LOOKUPS_PER_ROUTE: usize = 4;

/// Most distinct lookups waiting or running for one route; a connection that needs another is
/// refused (reset, counted in `resolve_refused`).
pub const MAX_PENDING_LOOKUPS_PER_ROUTE: usize = 64;

/// Most distinct lookups waiting or running that one client address (an IPv6 client's /64)
/// started, over all routes; a connection of that client that needs another is refused.
pub const MAX_PENDING_LOOKUPS_PER_CLIENT: usize = 8;

/// Lookup threads kept when idle.
const MIN_LOOKUP_THREADS: usize = 2;

/// How long a thread beyond [`MIN_LOOKUP_THREADS`] stays idle before it ends.
const LOOKUP_THREAD_IDLE_EXIT: Duration = Duration::from_secs(30);

/// Shortest time a DNS answer is cached, even if its record says 0 (a burst of connections
/// must not become a burst of lookups); also the shortest negative time.
const MIN_TTL: Duration = Duration::from_secs(1);

/// Most cached answers; past it (once expired answers are dropped) new answers are given to
/// their waiters but not cached.
const MAX_CACHE_ENTRIES: usize = 65_536;

/// Cache size below which expired answers are left alone.
const CACHE_PURGE_ENTRIES: usize = 1024;

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
/// error text — unless the request's [`Ticket`] was dropped first.
pub(crate) type Answer = Box<dyn FnOnce(Result<Arc<[Target]>, String>) + Send>;

/// Who asks for a lookup, for fairness and bounds.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Asker<'a> {
    /// The queue the lookup waits in (the worker passes the route's name).
    pub(crate) group: &'a str,
    /// The client the connection is for.
    pub(crate) client: IpAddr,
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

impl CacheEntry {
    fn fresh(&self, now: Instant) -> Option<Result<Arc<[Target]>, String>> {
        match self {
            CacheEntry::Resolved { targets, expires } if *expires > now => {
                Some(Ok(Arc::clone(targets)))
            }
            CacheEntry::Failed { error, expires } if *expires > now => Some(Err(error.clone())),
            _ => None,
        }
    }

    fn expires(&self) -> Instant {
        match self {
            CacheEntry::Resolved { expires, .. } | CacheEntry::Failed { expires, .. } => *expires,
        }
    }
}

#[derive(Debug, Default)]
struct Cache {
    entries: HashMap<Key, CacheEntry>,
    /// Size at which expired entries are next dropped (doubles with the live entries, so
    /// purging costs O(1) per insert).
    purge_at: usize,
}

/// A lookup waiting or running, with everyone waiting for its answer.
struct Pending {
    lookup: Arc<LookupWithTtl>,
    /// The cache time of a successful answer without a record TTL (the route's).
    ttl: Duration,
    /// The client that started it (counted against [`MAX_PENDING_LOOKUPS_PER_CLIENT`]).
    owner: IpAddr,
    waiters: Vec<(u64, Answer)>,
    running: bool,
}

/// One group's lookups: those waiting, in order, and those running.
#[derive(Default)]
struct Group {
    /// Keys of the lookups not yet started, oldest first.
    waiting: VecDeque<Key>,
    /// Every lookup of the group, waiting or running.
    lookups: HashMap<Key, Pending>,
    running: usize,
    /// Whether the group is in `Queue::ready`.
    ready: bool,
}

impl Group {
    fn can_start(&self) -> bool {
        !self.waiting.is_empty() && self.running < MAX_RUNNING_LOOKUPS_PER_ROUTE
    }
}

/// A lookup a thread took.
struct Job {
    group: String,
    key: Key,
    lookup: Arc<LookupWithTtl>,
    ttl: Duration,
}

/// The groups and the threads serving them.
#[derive(Default)]
struct Queue {
    groups: HashMap<String, Group>,
    /// Groups with a lookup that can start, served in turn.
    ready: VecDeque<String>,
    /// Lookups waiting or running per client (by [`client_key`]).
    clients: HashMap<IpAddr, usize>,
    next_waiter: u64,
    /// Threads running, and how many of them wait for work.
    threads: usize,
    idle: usize,
    stopped: bool,
}

impl Queue {
    /// Puts `name` in the round if it has a lookup that can start and is not there yet.
    fn schedule(&mut self, name: &str) {
        if let Some(group) = self.groups.get_mut(name)
            && !group.ready
            && group.can_start()
        {
            group.ready = true;
            self.ready.push_back(name.to_string());
        }
    }

    /// Lookups that could start now.
    fn startable(&self) -> usize {
        self.ready
            .iter()
            .filter_map(|name| self.groups.get(name))
            .map(|g| {
                g.waiting
                    .len()
                    .min(MAX_RUNNING_LOOKUPS_PER_ROUTE - g.running)
            })
            .sum()
    }

    /// The next lookup to run: the oldest waiting one of the next group in the round.
    fn take_job(&mut self) -> Option<Job> {
        while let Some(name) = self.ready.pop_front() {
            let Some(group) = self.groups.get_mut(&name) else {
                continue;
            };
            group.ready = false;
            if group.running >= MAX_RUNNING_LOOKUPS_PER_ROUTE {
                continue;
            }
            let Some(key) = group.waiting.pop_front() else {
                continue;
            };
            let Some(pending) = group.lookups.get_mut(&key) else {
                continue;
            };
            pending.running = true;
            group.running += 1;
            let job = Job {
                lookup: Arc::clone(&pending.lookup),
                ttl: pending.ttl,
                key,
                group: name,
            };
            // To the back of the round: the other groups go first.
            self.schedule(&job.group);
            return Some(job);
        }
        None
    }

    /// A running lookup ended: its waiters, to be answered (outside the lock).
    fn finish(&mut self, job: &Job) -> Vec<Answer> {
        let Some(group) = self.groups.get_mut(&job.group) else {
            return Vec::new();
        };
        group.running = group.running.saturating_sub(1);
        let waiters = match group.lookups.remove(&job.key) {
            Some(pending) => {
                self.release_client(pending.owner);
                pending.waiters.into_iter().map(|(_, a)| a).collect()
            }
            None => Vec::new(),
        };
        self.schedule(&job.group);
        self.forget_if_empty(&job.group);
        waiters
    }

    /// Withdraws one waiter; true when its lookup was waiting and is now dropped.
    fn withdraw(&mut self, name: &str, key: &Key, waiter: u64) -> bool {
        let Some(group) = self.groups.get_mut(name) else {
            return false;
        };
        let Some(pending) = group.lookups.get_mut(key) else {
            return false;
        };
        pending.waiters.retain(|(id, _)| *id != waiter);
        if !pending.waiters.is_empty() || pending.running {
            return false;
        }
        let owner = pending.owner;
        group.lookups.remove(key);
        group.waiting.retain(|k| k != key);
        self.release_client(owner);
        self.forget_if_empty(name);
        true
    }

    fn release_client(&mut self, client: IpAddr) {
        if let Entry::Occupied(mut entry) = self.clients.entry(client) {
            *entry.get_mut() -= 1;
            if *entry.get() == 0 {
                entry.remove();
            }
        }
    }

    /// Drops a group with no lookup left (groups are route names; a reload may retire them).
    fn forget_if_empty(&mut self, name: &str) {
        if self.groups.get(name).is_some_and(|g| g.lookups.is_empty()) {
            self.groups.remove(name);
            self.ready.retain(|n| n != name);
        }
    }
}

/// What the lookup threads and the askers share: the answer cache and the queues.
#[derive(Default)]
struct Shared {
    cache: Mutex<Cache>,
    queue: Mutex<Queue>,
    wake: Condvar,
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

/// Whom a client address counts as for [`MAX_PENDING_LOOKUPS_PER_CLIENT`]: an IPv4 address
/// (also written IPv4-mapped) as itself, an IPv6 address by its /64 (a host is usually given a
/// whole /64, so per address would be no bound at all).
fn client_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let prefix = u128::from(v6) & !((1u128 << 64) - 1);
                IpAddr::V6(Ipv6Addr::from(prefix))
            }
        },
    }
}

/// How long a failure is cached: what its [`NegativeAnswer`] says (within bounds), or
/// [`DEFAULT_NEGATIVE_TTL`].
fn negative_ttl(error: &io::Error) -> Duration {
    NegativeAnswer::of(error).map_or(DEFAULT_NEGATIVE_TTL, |answer| {
        answer.ttl().clamp(MIN_TTL, MAX_NEGATIVE_TTL)
    })
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
                tracing::error!("cannot start a resolver thread: {e}");
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
        let client = client_key(asker.client);
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
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::mpsc;

    const WAIT: Duration = Duration::from_secs(10);

    fn asker(group: &str, client: [u8; 4]) -> Asker<'_> {
        Asker {
            group,
            client: IpAddr::from(client),
        }
    }

    /// Lookups that block until the gate opens (bounded by WAIT), counting calls and the most
    /// running at once; names starting with `fail` fail.
    #[derive(Clone, Default)]
    struct Gate {
        open: Arc<(Mutex<bool>, Condvar)>,
        calls: Arc<AtomicUsize>,
        running: Arc<AtomicUsize>,
        most: Arc<AtomicUsize>,
    }

    impl Gate {
        fn resolution(&self, blocking: bool) -> Resolution {
            let gate = self.clone();
            Resolution::custom("gate", move |host: &str, port| {
                gate.calls.fetch_add(1, Ordering::SeqCst);
                let now = gate.running.fetch_add(1, Ordering::SeqCst) + 1;
                gate.most.fetch_max(now, Ordering::SeqCst);
                if blocking {
                    let (lock, cvar) = &*gate.open;
                    let open = lock.lock().unwrap();
                    let _ = cvar.wait_timeout_while(open, WAIT, |open| !*open).unwrap();
                }
                gate.running.fetch_sub(1, Ordering::SeqCst);
                if host.starts_with("fail") {
                    Err(io::Error::new(io::ErrorKind::NotFound, "no such name"))
                } else {
                    Ok(vec![SocketAddr::from(([127, 0, 0, 1], port))])
                }
            })
        }

        fn open(&self) {
            let (lock, cvar) = &*self.open;
            *lock.lock().unwrap() = true;
            cvar.notify_all();
        }

        fn wait_running(&self, n: usize) {
            let start = Instant::now();
            while self.running.load(Ordering::SeqCst) < n {
                assert!(start.elapsed() < WAIT, "{n} lookups never ran at once");
                std::thread::sleep(Duration::from_millis(2));
            }
        }
    }

    type Answers = mpsc::Receiver<(u32, Result<Arc<[Target]>, String>)>;

    fn answers() -> (impl Fn(u32) -> Answer, Answers) {
        let (tx, rx) = mpsc::channel();
        let answer_to = move |tag: u32| -> Answer {
            let tx = tx.clone();
            Box::new(move |result| {
                let _ = tx.send((tag, result));
            })
        };
        (answer_to, rx)
    }

    const TTL: Duration = Duration::from_secs(60);

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
        let (answer_to, rx) = answers();
        let a = asker("r", [10, 0, 0, 1]);
        let _good = resolver.request(&resolution, "good.test", 80, TTL, a, answer_to(10));
        let _bad = resolver.request(&resolution, "bad.test", 80, TTL, a, answer_to(20));
        for _ in 0..2 {
            match rx.recv_timeout(WAIT).unwrap() {
                (10, result) => {
                    let targets = result.unwrap();
                    assert_eq!(targets[0].addr.port(), 80);
                    assert!(targets[0].local);
                }
                (20, result) => assert!(result.unwrap_err().contains("no such name")),
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

    #[test]
    fn failures_are_cached_for_their_negative_ttl_whatever_the_route_ttl() {
        let reported = Resolution::with_ttl("soa", |host: &str, _| {
            let ttl = match host {
                "long.test" => Duration::from_secs(3600),
                "zero.test" => Duration::ZERO,
                _ => Duration::from_secs(30),
            };
            Err(NegativeAnswer::new(format!("{host}: NXDOMAIN"), ttl).into())
        });
        let plain = Resolution::custom("plain", |_: &str, _| {
            Err(io::Error::new(io::ErrorKind::NotFound, "no such name"))
        });
        let resolver = Resolver::new();
        resolver.start();
        let (answer_to, rx) = answers();
        let mut tickets = Vec::new();
        let names = [
            (&reported, "soa.test"),
            (&reported, "long.test"),
            (&reported, "zero.test"),
            (&plain, "plain.test"),
        ];
        for (i, (resolution, name)) in names.into_iter().enumerate() {
            // A route TTL of 0 caches no success, but failures still are.
            let a = asker("r", [10, 0, 0, 1]);
            let ticket = resolver.request(resolution, name, 1, Duration::ZERO, a, answer_to(0));
            tickets.push(ticket.unwrap());
            let (_, result) = rx.recv_timeout(WAIT).unwrap();
            assert!(result.is_err(), "{i}");
        }
        let now = Instant::now();
        let cached = |resolution: &Resolution, name: &str, after: u64| {
            resolver
                .cached(resolution, name, 1, now + Duration::from_secs(after))
                .is_some()
        };
        assert!(cached(&reported, "soa.test", 29) && !cached(&reported, "soa.test", 31));
        let max = MAX_NEGATIVE_TTL.as_secs();
        assert!(
            cached(&reported, "long.test", max - 1) && !cached(&reported, "long.test", max + 1)
        );
        assert!(
            !cached(&reported, "zero.test", 2),
            "at least MIN_TTL, at most a little more"
        );
        let default = DEFAULT_NEGATIVE_TTL.as_secs();
        assert!(cached(&plain, "plain.test", default - 1));
        assert!(!cached(&plain, "plain.test", default + 1));
        assert!(
            resolver
                .cached(&reported, "soa.test", 1, now)
                .unwrap()
                .unwrap_err()
                .contains("soa.test: NXDOMAIN")
        );
        resolver.stop();
    }

    #[test]
    fn requests_for_a_pending_name_join_its_lookup() {
        let gate = Gate::default();
        let resolution = gate.resolution(true);
        let resolver = Resolver::new();
        resolver.start();
        let (answer_to, rx) = answers();
        let mut tickets = Vec::new();
        for i in 0..20 {
            // Each from its own client: joining costs no client its bound either.
            let a = asker("r", [10, 0, 0, i as u8]);
            tickets.push(
                resolver
                    .request(&resolution, "one.test", 443, TTL, a, answer_to(i))
                    .unwrap(),
            );
        }
        gate.open();
        let mut tags: Vec<u32> = (0..20).map(|_| rx.recv_timeout(WAIT).unwrap().0).collect();
        tags.sort_unstable();
        assert_eq!(tags, (0..20).collect::<Vec<_>>());
        assert_eq!(gate.calls.load(Ordering::SeqCst), 1, "one lookup for all");
        resolver.stop();
    }

    #[test]
    fn a_hanging_route_neither_delays_nor_starves_another() {
        let hanging = Gate::default();
        let slow = hanging.resolution(true);
        let fast = Gate::default().resolution(false);
        let resolver = Resolver::new();
        resolver.start();
        let (answer_to, rx) = answers();
        let mut tickets = Vec::new();
        for i in 0..40u32 {
            let name = format!("hang{i}.test");
            let a = asker("sni", [10, 0, (i / 8) as u8, 1]);
            tickets.push(resolver.request(&slow, &name, 443, TTL, a, answer_to(i)));
        }
        hanging.wait_running(MAX_RUNNING_LOOKUPS_PER_ROUTE);
        for i in 0..10u32 {
            let name = format!("fixed{i}.test");
            let a = asker("fixed", [10, 1, 0, 1]);
            let ticket = resolver.request(&fast, &name, 443, TTL, a, answer_to(100 + i));
            let (tag, result) = rx.recv_timeout(WAIT).expect("the other route is answered");
            assert_eq!(tag, 100 + i);
            assert!(result.is_ok());
            drop(ticket);
        }
        assert_eq!(
            hanging.most.load(Ordering::SeqCst),
            MAX_RUNNING_LOOKUPS_PER_ROUTE,
            "a route runs at most its share of lookups"
        );
        hanging.open();
        resolver.stop();
    }

    #[test]
    fn threads_are_bounded_however_many_routes_hang() {
        let gate = Gate::default();
        let slow = gate.resolution(true);
        let resolver = Resolver::new();
        resolver.start();
        let (answer_to, rx) = answers();
        let mut tickets = Vec::new();
        let groups: Vec<String> = (0..8).map(|g| format!("route{g}")).collect();
        for (g, group) in groups.iter().enumerate() {
            for i in 0..MAX_RUNNING_LOOKUPS_PER_ROUTE {
                let name = format!("n{i}.test");
                let a = asker(group, [10, 2, g as u8, i as u8]);
                tickets.push(resolver.request(&slow, &name, 1, TTL, a, answer_to(0)));
            }
        }
        gate.wait_running(MAX_LOOKUP_THREADS);
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(gate.most.load(Ordering::SeqCst), MAX_LOOKUP_THREADS);
        assert!(resolver.shared.lock_queue().threads <= MAX_LOOKUP_THREADS);
        gate.open();
        for _ in 0..groups.len() * MAX_RUNNING_LOOKUPS_PER_ROUTE {
            let _ = rx
                .recv_timeout(WAIT)
                .expect("every lookup answered in the end");
        }
        resolver.stop();
    }

    #[test]
    fn a_withdrawn_request_is_not_answered_and_its_lookup_not_run() {
        let gate = Gate::default();
        let slow = gate.resolution(true);
        let resolver = Resolver::new();
        resolver.start();
        let (answer_to, rx) = answers();
        let a = asker("r", [10, 3, 0, 1]);
        let running: Vec<Ticket> = (0..MAX_RUNNING_LOOKUPS_PER_ROUTE)
            .map(|i| {
                let a = asker("r", [10, 3, 1, i as u8]);
                let name = format!("running{i}.test");
                resolver
                    .request(&slow, &name, 1, TTL, a, answer_to(1))
                    .unwrap()
            })
            .collect();
        gate.wait_running(MAX_RUNNING_LOOKUPS_PER_ROUTE);
        let first = resolver.request(&slow, "queued.test", 1, TTL, a, answer_to(2));
        let second = resolver.request(&slow, "queued.test", 1, TTL, a, answer_to(3));
        assert!(
            !first.unwrap().cancel(),
            "another request still waits for it"
        );
        assert!(
            second.unwrap().cancel(),
            "the last waiter left: off the queue"
        );
        // Withdrawing from a running lookup does not stop it (nothing can).
        let mut running = running.into_iter();
        assert!(!running.next().unwrap().cancel());
        gate.open();
        for _ in 1..MAX_RUNNING_LOOKUPS_PER_ROUTE {
            assert_eq!(rx.recv_timeout(WAIT).unwrap().0, 1);
        }
        // The queued name's place is free again: a new lookup runs to the end.
        let last = resolver.request(&slow, "after.test", 1, TTL, a, answer_to(4));
        assert_eq!(rx.recv_timeout(WAIT).unwrap().0, 4);
        drop(last);
        assert_eq!(
            gate.calls.load(Ordering::SeqCst),
            MAX_RUNNING_LOOKUPS_PER_ROUTE + 1,
            "queued.test never looked up"
        );
        assert!(rx.try_recv().is_err(), "no answer for withdrawn requests");
        resolver.stop();
    }

    #[test]
    fn new_lookups_are_bounded_per_client_and_per_route() {
        let gate = Gate::default();
        let slow = gate.resolution(true);
        let resolver = Resolver::new();
        resolver.start();
        let (answer_to, _rx) = answers();
        let tickets = std::cell::RefCell::new(Vec::new());
        let ask = |group: &str, client: IpAddr, name: &str| {
            let a = Asker { group, client };
            resolver
                .request(&slow, name, 1, TTL, a, answer_to(0))
                .map(|t| tickets.borrow_mut().push(t))
        };
        let one: IpAddr = "10.4.0.1".parse().unwrap();
        for i in 0..MAX_PENDING_LOOKUPS_PER_CLIENT {
            ask("a", one, &format!("c{i}.test")).unwrap();
        }
        assert_eq!(ask("a", one, "more.test"), Err(Refused::Client));
        assert_eq!(
            ask("b", one, "more.test"),
            Err(Refused::Client),
            "over all routes"
        );
        assert_eq!(ask("a", one, "c0.test"), Ok(()), "joining is never refused");
        // The same client written IPv4-mapped is the same client.
        let mapped: IpAddr = "::ffff:10.4.0.1".parse().unwrap();
        assert_eq!(ask("a", mapped, "more.test"), Err(Refused::Client));
        // An IPv6 client counts by its /64.
        for i in 0..MAX_PENDING_LOOKUPS_PER_CLIENT {
            let client = format!("2001:db8:0:1::{:x}", i + 1).parse().unwrap();
            ask("b", client, &format!("v6-{i}.test")).unwrap();
        }
        let same_64 = "2001:db8:0:1:ffff::1".parse().unwrap();
        assert_eq!(ask("b", same_64, "v6-more.test"), Err(Refused::Client));
        let other_64 = "2001:db8:0:2::1".parse().unwrap();
        assert_eq!(ask("b", other_64, "v6-more.test"), Ok(()));
        // Route "c" up to its bound, from many clients.
        for i in 0..MAX_PENDING_LOOKUPS_PER_ROUTE {
            let client = IpAddr::from([10, 5, (i / 8) as u8, (i % 8) as u8]);
            ask("c", client, &format!("r{i}.test")).unwrap();
        }
        let fresh = IpAddr::from([10, 6, 0, 1]);
        assert_eq!(ask("c", fresh, "one-more.test"), Err(Refused::Group));
        assert_eq!(
            ask("c", fresh, "r0.test"),
            Ok(()),
            "joining is never refused"
        );
        assert_eq!(
            ask("d", fresh, "one-more.test"),
            Ok(()),
            "another route has room"
        );
        // Withdrawing a waiting lookup frees its places.
        let ticket = {
            let mut tickets = tickets.borrow_mut();
            let at = tickets
                .iter()
                .position(|t| t.group == "c" && t.key.1 == "r63.test")
                .unwrap();
            tickets.swap_remove(at)
        };
        assert!(ticket.cancel());
        assert_eq!(ask("c", fresh, "one-more.test"), Ok(()));
        gate.open();
        drop(tickets);
        resolver.stop();
    }

    #[test]
    fn clients_count_by_address_and_ipv6_by_its_64() {
        let key = |s: &str| client_key(s.parse().unwrap()).to_string();
        assert_eq!(key("192.0.2.7"), "192.0.2.7");
        assert_eq!(key("::ffff:192.0.2.7"), "192.0.2.7");
        assert_eq!(key("2001:db8:1:2:3:4:5:6"), "2001:db8:1:2::");
        assert_eq!(key("2001:db8:1:2::ffff"), key("2001:db8:1:2:aaaa::1"));
        assert_ne!(key("2001:db8:1:2::1"), key("2001:db8:1:3::1"));
    }

    #[test]
    fn a_panicking_lookup_is_an_error_and_frees_its_place() {
        let resolution = Resolution::custom("panics", |host: &str, port| {
            if host == "boom.test" {
                panic!("a broken lookup");
            }
            Ok(vec![SocketAddr::from(([127, 0, 0, 1], port))])
        });
        let resolver = Resolver::new();
        resolver.start();
        let (answer_to, rx) = answers();
        let a = asker("r", [10, 7, 0, 1]);
        let _boom = resolver.request(&resolution, "boom.test", 1, TTL, a, answer_to(1));
        assert!(
            rx.recv_timeout(WAIT)
                .unwrap()
                .1
                .unwrap_err()
                .contains("panicked")
        );
        let _ok = resolver.request(&resolution, "ok.test", 1, TTL, a, answer_to(2));
        assert!(rx.recv_timeout(WAIT).unwrap().1.is_ok());
        resolver.stop();
    }
}
