//! The three scenarios: idle connections, active connections, churn.

use std::io;
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::client::{Client, Spec};
use super::endings::{Endings, check_hashes};
use super::protocol::Kind;
use super::report::{Table, per_conn_bytes, thousands};
use super::target::Target;
use super::upstream::Upstream;
use spliceway_bench::procfs::{Fds, KernelMemory, Proc, page_size, tcp_ext_counter};

/// Descriptors a worker's pipe pool may keep between transfers (64 idle pipes, 2 ends each).
pub const POOL_PIPE_FDS: usize = 2 * 64;

/// What a scenario produced.
#[derive(Debug)]
pub struct Outcome {
    /// Tables to print.
    pub tables: Vec<Table>,
    /// Figures for `--json`.
    pub json: Value,
    /// What went wrong (empty: passed).
    pub failures: Vec<String>,
}

/// Everything a scenario needs.
#[derive(Debug)]
pub struct Bench<'a> {
    /// The upstream all relays connect to.
    pub upstream: &'a Upstream,
    /// The relay under test.
    pub target: &'a mut Target,
    /// Loopback source addresses of the clients.
    pub sources: Vec<Ipv4Addr>,
    /// Whether unexpected endings and descriptor leaks fail the run (spliceway) or are only
    /// reported (the comparison).
    pub strict: bool,
    /// How long descriptors may take to return to their baseline.
    pub settle: Duration,
}

impl Bench<'_> {
    fn client(&self) -> io::Result<Client> {
        // Endings left over from an earlier scenario (connections it gave up on) are not this
        // one's.
        drop(self.upstream.take_endings());
        Client::new(self.sources.clone())
    }

    /// Waits until the upstream has no connection left (or `limit` passes).
    fn wait_upstream_empty(&self, limit: Duration) -> bool {
        wait(limit, || self.upstream.open_connections() == 0)
    }

    /// Takes both ends' endings; records failures if any ending was not as planned.
    fn endings(
        &self,
        client: &mut Client,
        what: &str,
        failures: &mut Vec<String>,
    ) -> (Endings, Endings) {
        let client_endings = client.endings.take();
        let upstream_endings = self.upstream.take_endings();
        for (side, endings) in [("client", &client_endings), ("upstream", &upstream_endings)] {
            let bad = endings.unexpected();
            if bad > 0 && self.strict {
                failures.push(format!(
                    "{what}: {bad} connection(s) did not end as planned at the {side} (first: {})",
                    endings.notes.first().map_or("?", String::as_str)
                ));
            }
        }
        (client_endings, upstream_endings)
    }

    /// Idle: `n` connections established end to end, then silent.
    pub fn idle(&mut self, n: usize) -> io::Result<Outcome> {
        let mut failures = Vec::new();
        std::thread::sleep(Duration::from_millis(300));
        let fds_before = self.target.fds()?;
        let mem_before = self.target.memory()?;
        let kernel_before = KernelMemory::read()?;
        let mut client = self.client()?;
        let specs = (0..n).map(|i| Spec {
            addr: self.target.addr,
            kind: Kind::Idle,
            id: i as u64,
            len: 0,
        });
        client.submit(specs, 500);
        let start = Instant::now();
        let deadline = start + Duration::from_secs(60) + Duration::from_millis(5 * n as u64);
        let all = client.run_until(deadline, |c| c.outstanding() == c.parked())?;
        let open_elapsed = start.elapsed();
        let established = client.parked();
        if !all || established < n {
            failures.push(format!(
                "idle: only {established} of {n} connections were established"
            ));
        }
        // Let the relay and the kernel settle (deferred frees, timers).
        std::thread::sleep(Duration::from_secs(1));
        self.target.check_alive()?;
        let fds_after = self.target.fds()?;
        let mem_after = self.target.memory()?;
        let kernel_after = KernelMemory::read()?;
        client.close_idle();
        client.run_until(Instant::now() + Duration::from_secs(5), |c| c.open() == 0)?;
        if !self.wait_upstream_empty(Duration::from_secs(30)) {
            failures
                .push("idle: the upstream still has connections after the clients closed".into());
        }
        self.endings(&mut client, "idle", &mut failures);

        let n_est = established.max(1);
        let rss_delta = mem_after.rss_kib as i64 - mem_before.rss_kib as i64;
        let slab_delta = kernel_after.slab_kib as i64 - kernel_before.slab_kib as i64;
        let unreclaim_delta =
            kernel_after.sunreclaim_kib as i64 - kernel_before.sunreclaim_kib as i64;
        let tcp_pages_delta =
            kernel_after.tcp_mem_pages as i64 - kernel_before.tcp_mem_pages as i64;
        let socket_delta = fds_after.sockets as i64 - fds_before.sockets as i64;
        let pipe_delta = fds_after.pipes as i64 - fds_before.pipes as i64;
        let rss_per_conn = rss_delta as f64 * 1024.0 / n_est as f64;
        let who = if self.target.in_process {
            "process (relay, clients and upstream)"
        } else {
            "relay process"
        };

        let mut table = Table::new(
            format!(
                "idle: {} connections through {}",
                thousands(n as u64),
                self.target.name
            ),
            &["figure", "value"],
        );
        table
            .pair(
                "connections established",
                format!(
                    "{} in {:.2} s",
                    thousands(established as u64),
                    open_elapsed.as_secs_f64()
                ),
            )
            .pair(
                &format!("{who} descriptors before / after"),
                format!("{} / {}", fds_before.total(), fds_after.total()),
            )
            .pair(
                "  sockets per idle connection",
                format!("{:.2}", socket_delta as f64 / n_est as f64),
            )
            .pair(
                "  pipe descriptors (after - before; the pool's, not per connection)",
                pipe_delta,
            )
            .pair(
                &format!("{who} RSS before / after"),
                format!("{} KiB / {} KiB", mem_before.rss_kib, mem_after.rss_kib),
            )
            .pair(
                "  RSS growth per idle connection",
                format!("{rss_per_conn:.0} B"),
            )
            .pair(
                "kernel Slab per connection (4 sockets)",
                per_conn_bytes(slab_delta, n_est),
            )
            .pair(
                "kernel SUnreclaim per connection",
                per_conn_bytes(unreclaim_delta, n_est),
            )
            .pair(
                "kernel TCP buffer pages (sockstat mem) delta",
                format!(
                    "{tcp_pages_delta} pages ({:.0} B per connection)",
                    tcp_pages_delta as f64 * page_size() as f64 / n_est as f64
                ),
            );
        let json = json!({
            "relay": self.target.name,
            "connections": n,
            "established": established,
            "open_seconds": open_elapsed.as_secs_f64(),
            "fds_before": fds_json(fds_before),
            "fds_after": fds_json(fds_after),
            "sockets_per_connection": socket_delta as f64 / n_est as f64,
            "pipe_fds_delta": pipe_delta,
            "rss_before_kib": mem_before.rss_kib,
            "rss_after_kib": mem_after.rss_kib,
            "rss_per_connection_bytes": rss_per_conn,
            "slab_per_connection_bytes": slab_delta as f64 * 1024.0 / n_est as f64,
            "sunreclaim_per_connection_bytes": unreclaim_delta as f64 * 1024.0 / n_est as f64,
            "tcp_mem_pages_delta": tcp_pages_delta,
        });
        Ok(Outcome {
            tables: vec![table],
            json,
            failures,
        })
    }

    /// Active: `n` connections moving `len` bytes each way at once, hashed at both ends.
    pub fn active(&mut self, n: usize, len: u64) -> io::Result<Outcome> {
        let mut failures = Vec::new();
        let peak_reset = self.target.main.reset_peak();
        let aborts_before = tcp_ext_counter("TCPAbortOnMemory");
        let sampler = Sampler::start(self.target.main);
        let mut client = self.client()?;
        let specs = (0..n).map(|i| Spec {
            addr: self.target.addr,
            kind: Kind::Active,
            id: 1_000_000 + i as u64,
            len,
        });
        client.submit(specs, 500);
        let deadline =
            Instant::now() + Duration::from_secs(60) + Duration::from_millis(5 * n as u64);
        client.run_until(deadline, |c| c.outstanding() == c.parked())?;
        let established = client.parked();
        if established < n {
            failures.push(format!(
                "active: only {established} of {n} connections were established"
            ));
        }
        let start = Instant::now();
        client.go();
        let total = 2 * established as u64 * len;
        let limit = Duration::from_secs(120) + Duration::from_secs(total / (100 << 20));
        let finished = client.run_until(start + limit, |c| c.outstanding() == 0)?;
        let elapsed = start.elapsed();
        if !finished {
            failures.push(format!(
                "active: {} connections still open after {limit:?}",
                client.open()
            ));
            client.abandon();
        }
        self.wait_upstream_empty(Duration::from_secs(30));
        let peaks = sampler.stop();
        self.target.check_alive()?;
        let memory = self.target.memory()?;
        let fds_end = self.target.fds()?;
        let (client_endings, upstream_endings) = self.endings(&mut client, "active", &mut failures);
        let ids = (0..n).map(|i| 1_000_000 + i as u64);
        let (intact, first_bad) =
            check_hashes(ids, &client_endings.hashes, &upstream_endings.hashes, len);
        let all_intact = intact == n as u64;
        if !all_intact {
            failures.push(format!(
                "active: {} of {n} connections intact; first failure: {}",
                intact,
                first_bad.as_deref().unwrap_or("?")
            ));
        }
        let memory_aborts = tcp_ext_counter("TCPAbortOnMemory")
            .zip(aborts_before)
            .map_or(0, |(after, before)| after.saturating_sub(before));
        if memory_aborts > 0 {
            failures.push(format!(
                "active: the kernel killed {memory_aborts} socket(s) for lack of TCP memory \
                 (TCPAbortOnMemory; \"TCP: out of memory -- consider tuning tcp_mem\" in dmesg): \
                 raise net.ipv4.tcp_mem or move fewer bytes at once"
            ));
        }
        let peak_rss = if peak_reset {
            memory.peak_kib.max(peaks.rss_kib)
        } else {
            peaks.rss_kib
        };
        let rate = total as f64 / elapsed.as_secs_f64();
        let mut table = Table::new(
            format!(
                "active: {} connections x {} KiB each way through {}",
                thousands(n as u64),
                len >> 10,
                self.target.name
            ),
            &["figure", "value"],
        );
        table
            .pair(
                "every hash intact",
                if all_intact {
                    "yes".to_string()
                } else {
                    format!("NO ({intact} of {n})")
                },
            )
            .pair(
                "bytes moved (both ways)",
                format!(
                    "{:.2} GiB in {:.2} s ({:.0} MiB/s)",
                    total as f64 / crate::GIB as f64,
                    elapsed.as_secs_f64(),
                    rate / crate::MIB as f64
                ),
            )
            .pair(
                "peak RSS",
                format!(
                    "{} KiB ({})",
                    peak_rss,
                    if peak_reset {
                        "VmHWM after clear_refs, and sampled"
                    } else {
                        "sampled every 100 ms"
                    }
                ),
            )
            .pair(
                "peak descriptors (sampled)",
                format!(
                    "{} ({} sockets, {} pipe ends)",
                    peaks.total, peaks.sockets, peaks.pipes
                ),
            )
            .pair("peak pipes (sampled)", peaks.pipes / 2)
            .pair(
                "sockets killed by the kernel for lack of TCP memory",
                memory_aborts,
            )
            .pair(
                "descriptors at the end",
                format!("{} ({} pipe ends pooled)", fds_end.total(), fds_end.pipes),
            );
        let json = json!({
            "relay": self.target.name,
            "connections": n,
            "bytes_each_way": len,
            "every_hash_intact": all_intact,
            "intact": intact,
            "seconds": elapsed.as_secs_f64(),
            "bytes_per_second": rate,
            "peak_rss_kib": peak_rss,
            "peak_fds": peaks.total,
            "peak_pipes": peaks.pipes / 2,
            "fds_end": fds_json(fds_end),
            "tcp_abort_on_memory": memory_aborts,
        });
        Ok(Outcome {
            tables: vec![table],
            json,
            failures,
        })
    }

    /// Churn: `n` connections opened and finished, one at a time then in bursts, ending in
    /// every way; afterwards the descriptors must come back to their baseline.
    pub fn churn(&mut self, n: usize, burst: usize) -> io::Result<Outcome> {
        let mut failures = Vec::new();
        // Created first: in process, its epoll descriptor is part of the baseline.
        let mut client = self.client()?;
        std::thread::sleep(Duration::from_millis(300));
        let baseline = self.target.fds()?;
        let short_proc = self.target.idle_timeout_proc;
        let short_baseline = short_proc.map(|p| p.fds()).transpose()?;
        let timeouts = if self.target.idle_timeout_addr.is_some() {
            n / 50
        } else {
            0
        };
        let sequential = n / 10;
        let bursts = n - sequential - timeouts;
        let mut next_id = 2_000_000u64;
        let mut specs = |count: usize, kinds: &[Kind], addr| {
            let first = next_id;
            next_id += count as u64;
            (0..count)
                .map(|i| Spec {
                    addr,
                    kind: kinds[i % kinds.len()],
                    id: first + i as u64,
                    len: 0,
                })
                .collect::<Vec<_>>()
        };
        let seq_specs = specs(sequential, &Kind::CHURN, self.target.addr);
        let burst_specs = specs(bursts, &Kind::CHURN, self.target.addr);
        let timeout_specs = match self.target.idle_timeout_addr {
            Some(addr) => specs(timeouts, &[Kind::IdleTimeout], addr),
            None => Vec::new(),
        };
        let mut phases = Table::new(
            format!(
                "churn: {} connections through {}",
                thousands(n as u64),
                self.target.name
            ),
            &["phase", "connections", "seconds", "connections/s"],
        );
        let mut phase_json = Vec::new();
        let mut rates = Vec::new();
        for (name, group, window) in [
            ("one at a time", seq_specs, 1),
            ("bursts", burst_specs, burst),
            ("idle timeout (200 ms)", timeout_specs, burst),
        ] {
            if group.is_empty() {
                continue;
            }
            let count = group.len();
            let start = Instant::now();
            for chunk in group.chunks(window) {
                client.submit(chunk.iter().copied(), window);
                let deadline = Instant::now() + Duration::from_secs(60);
                if !client.run_until(deadline, |c| c.outstanding() == 0)? {
                    failures.push(format!(
                        "churn ({name}): {} connections did not finish within 60 s",
                        client.outstanding()
                    ));
                    client.abandon();
                    break;
                }
            }
            let seconds = start.elapsed().as_secs_f64();
            let rate = count as f64 / seconds;
            rates.push((name, rate));
            phases.row(vec![
                name.to_string(),
                thousands(count as u64),
                format!("{seconds:.2}"),
                format!("{rate:.0}"),
            ]);
            phase_json.push(json!({"phase": name, "connections": count, "seconds": seconds, "per_second": rate}));
            self.target.check_alive()?;
        }
        // Settle: wait for the upstream to see every connection go, then for the relay's
        // descriptors to come back.
        self.wait_upstream_empty(Duration::from_secs(30));
        let settled = |p: Proc, base: Fds| {
            p.fds().is_ok_and(|f| {
                f.sockets == base.sockets
                    && f.other == base.other
                    && f.pipes <= base.pipes.max(POOL_PIPE_FDS)
            })
        };
        let main = self.target.main;
        let ok_main = wait(self.settle, || settled(main, baseline));
        let final_fds = main.fds()?;
        let ok_short = match (short_proc, short_baseline) {
            (Some(p), Some(b)) => wait(self.settle, || settled(p, b)),
            _ => true,
        };
        let mut fd_table = Table::new(
            format!(
                "churn: descriptors of {} (settle {:?})",
                self.target.name, self.settle
            ),
            &["process", "baseline", "final", "back to baseline"],
        );
        let describe = |f: Fds| {
            format!(
                "{} ({} sockets, {} pipe ends, {} other)",
                f.total(),
                f.sockets,
                f.pipes,
                f.other
            )
        };
        fd_table.row(vec![
            "main relay".into(),
            describe(baseline),
            describe(final_fds),
            yes_no(ok_main),
        ]);
        if !ok_main && self.strict {
            failures.push(format!(
                "churn: relay descriptors {} did not return to the baseline {}",
                describe(final_fds),
                describe(baseline)
            ));
        }
        if let (Some(p), Some(b)) = (short_proc, short_baseline) {
            let f = p.fds()?;
            fd_table.row(vec![
                "idle-timeout relay".into(),
                describe(b),
                describe(f),
                yes_no(ok_short),
            ]);
            if !ok_short && self.strict {
                failures.push(format!(
                    "churn: idle-timeout relay descriptors {} did not return to the baseline {}",
                    describe(f),
                    describe(b)
                ));
            }
        }
        let (client_endings, upstream_endings) = self.endings(&mut client, "churn", &mut failures);
        let mut endings_table = Table::new(
            format!(
                "churn: endings through {} (as planned / otherwise)",
                self.target.name
            ),
            &["ending", "client", "upstream"],
        );
        let mut kinds: Vec<Kind> = client_endings
            .by_kind
            .keys()
            .chain(upstream_endings.by_kind.keys())
            .copied()
            .collect();
        kinds.sort();
        kinds.dedup();
        for kind in kinds {
            let cell = |e: &Endings| {
                let (good, bad) = e.by_kind.get(&kind).copied().unwrap_or_default();
                format!("{} / {bad}", thousands(good))
            };
            endings_table.row(vec![
                kind.name().into(),
                cell(&client_endings),
                cell(&upstream_endings),
            ]);
        }
        endings_table.row(vec![
            "failed to connect".into(),
            client_endings.failed.to_string(),
            "".into(),
        ]);
        let json = json!({
            "relay": self.target.name,
            "connections": n,
            "phases": phase_json,
            "fds_baseline": fds_json(baseline),
            "fds_final": fds_json(final_fds),
            "fds_back_to_baseline": ok_main && ok_short,
            "unexpected_endings_client": client_endings.unexpected(),
            "unexpected_endings_upstream": upstream_endings.unexpected(),
            "notes": client_endings.notes.iter().chain(&upstream_endings.notes).take(10).collect::<Vec<_>>(),
        });
        Ok(Outcome {
            tables: vec![phases, endings_table, fd_table],
            json,
            failures,
        })
    }
}

fn yes_no(b: bool) -> String {
    if b { "yes" } else { "NO" }.to_string()
}

fn fds_json(f: Fds) -> Value {
    json!({"total": f.total(), "sockets": f.sockets, "pipes": f.pipes, "other": f.other})
}

/// Polls `check` every 20 ms until it holds (true) or `limit` passes (false).
fn wait(limit: Duration, mut check: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    loop {
        if check() {
            return true;
        }
        if start.elapsed() >= limit {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Peaks of a process's descriptors and RSS, sampled on a thread.
#[derive(Debug, Default, Clone, Copy)]
struct Peaks {
    total: usize,
    sockets: usize,
    pipes: usize,
    rss_kib: u64,
}

struct Sampler {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<Peaks>,
}

impl Sampler {
    fn start(proc: Proc) -> Sampler {
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            let mut peaks = Peaks::default();
            loop {
                if let Ok(f) = proc.fds() {
                    peaks.total = peaks.total.max(f.total());
                    peaks.sockets = peaks.sockets.max(f.sockets);
                    peaks.pipes = peaks.pipes.max(f.pipes);
                }
                if let Ok(m) = proc.memory() {
                    peaks.rss_kib = peaks.rss_kib.max(m.rss_kib);
                }
                if stopping.load(Ordering::SeqCst) {
                    return peaks;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        });
        Sampler { stop, thread }
    }

    fn stop(self) -> Peaks {
        self.stop.store(true, Ordering::SeqCst);
        self.thread.join().unwrap_or_default()
    }
}
