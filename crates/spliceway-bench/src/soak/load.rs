//! The load: what each client connection does and checks (bulk transfers, multipart parts,
//! echoes, half-closes, resets from either side), and the loops that repeat them until the
//! stop event, each bounded by a pause per cycle.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sha2::{Digest as _, Sha256};

use super::payload::{Block, Corruptor, DATA_SIZE, KIB, MIB};
use super::rng::Rng;
use super::stop::{Stop, secs};
use super::tally::Tally;
use super::upstream::CLIENT_TIMEOUT;
use super::wire::{Failure, Stream, answers, connect, hex_of, protocol, reset_close};
use crate::protocol::{SoakEnd, SoakRequest};

const BULK_WORKERS: u64 = 3;
const BULK_SIZES_MIB: (u64, u64) = (8, 32);
const MULTIPART_CONNECTIONS: usize = 10;
const MULTIPART_PART: usize = 8 * MIB;
const MULTIPART_PARTS: usize = 4;
const MULTIPART_PAUSE_S: f64 = 10.0;
const CHURN_WORKERS: u64 = 2;
/// Connections per second per churn worker.
const CHURN_RATE_PER_WORKER: f64 = 50.0;
const LONG_ECHO_INTERVAL_S: f64 = 0.05;
const ABORT_PAUSE_S: f64 = 0.3;
const SLOW_READ_CHUNK: usize = 32 * KIB;
const SLOW_READ_PAUSE: Duration = Duration::from_millis(25);
const HALF_CLOSE_PAUSE_S: f64 = 0.2;
const MESSAGE_SIZES: (u64, u64) = (64, 4 * KIB as u64);

type Outcome = Result<(), Failure>;

/// One planned reset: a method of [`Load`] on a route.
pub(crate) type Abort = fn(&Load, &str, &mut Rng) -> Outcome;

/// Every reset the load plans, in the order the abort loop takes them.
pub(crate) const ABORTS: [(&str, Abort); 7] = [
    ("client_reset_upload", Load::client_reset_upload),
    ("client_reset_download", Load::client_reset_download),
    ("client_reset_echo", Load::client_reset_echo),
    ("client_reset_half_closed", Load::client_reset_half_closed),
    ("upstream_reset_upload", Load::upstream_reset_upload),
    ("upstream_reset_download", Load::upstream_reset_download),
    ("upstream_reset_echo", Load::upstream_reset_echo),
];

/// What every load item needs: the routes' ports, the block, the tally, the stop event.
#[derive(Debug)]
pub(crate) struct Load {
    /// Route name -> the relay's listening port for it.
    pub(crate) ports: BTreeMap<String, u16>,
    pub(crate) routes: Vec<String>,
    pub(crate) block: Arc<Block>,
    pub(crate) tally: Arc<Tally>,
    pub(crate) stop: Arc<Stop>,
    pub(crate) corrupt: Corruptor,
}

impl Load {
    pub(crate) fn new(
        ports: BTreeMap<String, u16>,
        block: Arc<Block>,
        tally: Arc<Tally>,
        stop: Arc<Stop>,
        corrupt: Corruptor,
    ) -> Load {
        let routes = ports.keys().cloned().collect();
        Load {
            ports,
            routes,
            block,
            tally,
            stop,
            corrupt,
        }
    }

    /// A connection through `route`, counted with the ending it is planned to have.
    fn connect(&self, route: &str, plan: &str) -> Result<Stream, Failure> {
        let port = self.ports[route];
        let sock = connect(port, CLIENT_TIMEOUT)?;
        self.tally.add("connections", 1);
        self.tally.add(&format!("plan_{plan}"), 1);
        Ok(Stream::new(sock))
    }

    fn moved(&self, sent: u64, received: u64) {
        self.tally.add("bytes_sent", sent);
        self.tally.add("bytes_received", received);
    }

    /// One upload; the server's SHA-256 must equal the sender's.
    pub(crate) fn upload(&self, route: &str, n: usize, offset: usize) -> Outcome {
        let mut stream = self.connect(route, "clean")?;
        stream.send(up(n, SoakEnd::Clean).as_bytes())?;
        stream.send(self.block.slice(offset, n))?;
        let answer = stream.read_line()?;
        self.moved(n as u64, 0);
        let ok = answers(answer.as_deref(), n, &self.block.digest(offset, n));
        self.tally.hash_check("upload", ok, &format!("{n} B"));
        Ok(())
    }

    /// One download (slow when `pace` is given); its SHA-256 must be the expected one.
    pub(crate) fn download(
        &self,
        route: &str,
        n: usize,
        offset: usize,
        pace: Option<(usize, Duration)>,
        what: &str,
    ) -> Outcome {
        let mut stream = self.connect(route, "clean")?;
        stream.send(down(n, offset, SoakEnd::Clean).as_bytes())?;
        let mut hasher = Sha256::new();
        let got = stream.read_hashing(n as u64, &mut hasher, &self.corrupt, pace)?;
        let extra = stream.read_to_end()?;
        self.moved(0, got);
        let ok = got == n as u64 && extra == 0 && hex_of(hasher) == self.block.digest(offset, n);
        self.tally
            .hash_check(what, ok, &format!("{got}+{extra} of {n} B"));
        Ok(())
    }

    /// One `aws s3 cp` connection: 8 MiB parts, each waiting for its hash before the next.
    pub(crate) fn multipart(&self, route: &str, parts: usize, rng: &mut Rng) -> Outcome {
        let mut stream = self.connect(route, "clean")?;
        for _ in 0..parts {
            if self.stop.is_set() {
                break;
            }
            let offset = rng.step_below((DATA_SIZE - MULTIPART_PART) as u64, MIB as u64) as usize;
            stream.send(up(MULTIPART_PART, SoakEnd::Clean).as_bytes())?;
            stream.send(self.block.slice(offset, MULTIPART_PART))?;
            let answer = stream.read_line()?;
            self.moved(MULTIPART_PART as u64, 0);
            let digest = self.block.digest(offset, MULTIPART_PART);
            let ok = answers(answer.as_deref(), MULTIPART_PART, &digest);
            self.tally.hash_check("multipart part", ok, "");
        }
        Ok(())
    }

    /// One small message echoed: the answer must be the same bytes.
    fn exchange(&self, stream: &mut Stream, rng: &mut Rng) -> Outcome {
        let size = rng.between(MESSAGE_SIZES.0, MESSAGE_SIZES.1) as usize;
        let offset = rng.between(0, (DATA_SIZE - size - 1) as u64) as usize;
        let message = self.block.slice(offset, size);
        stream.send(message)?;
        let mut answer = vec![0u8; size];
        let mut got = 0;
        while got < size {
            let n = stream.recv(&mut answer[got..])?;
            if n == 0 {
                break;
            }
            got += n;
        }
        self.moved(size as u64, got as u64);
        self.tally.add("echoes", 1);
        if answer[..got] != *message {
            self.tally.problem(
                "hash_mismatch",
                &format!("echo of {size} B came back as {got} B"),
            );
        }
        Ok(())
    }

    /// A short connection: 1-3 exchanges, then a clean close (churn).
    pub(crate) fn short_echo(&self, route: &str, rng: &mut Rng) -> Outcome {
        let mut stream = self.connect(route, "clean")?;
        stream.send(echo(SoakEnd::Clean).as_bytes())?;
        for _ in 0..rng.between(1, 3) {
            self.exchange(&mut stream, rng)?;
        }
        Ok(())
    }

    /// Send, shut the write side, then read the whole answer: the server's hash of what it
    /// got and m bytes of the block, then end of stream.
    pub(crate) fn half_close(&self, route: &str, rng: &mut Rng) -> Outcome {
        let size = rng.between(64 * KIB as u64, 2 * MIB as u64) as usize;
        let m = rng.between(64 * KIB as u64, 4 * MIB as u64) as usize;
        let offset = rng.between(0, (DATA_SIZE - size - 1) as u64) as usize;
        let answer_offset = rng.between(0, (DATA_SIZE - m - 1) as u64) as usize;
        let mut stream = self.connect(route, "clean")?;
        stream.send(half(m, answer_offset, SoakEnd::Clean).as_bytes())?;
        stream.send(self.block.slice(offset, size))?;
        stream.sock.shutdown(std::net::Shutdown::Write)?;
        let digest = stream.read_line()?;
        let mut hasher = Sha256::new();
        let got = stream.read_hashing(m as u64, &mut hasher, &self.corrupt, None)?;
        let extra = stream.read_to_end()?;
        self.moved(size as u64, got);
        let ok = answers(digest.as_deref(), size, &self.block.digest(offset, size))
            && got == m as u64
            && extra == 0
            && hex_of(hasher) == self.block.digest(answer_offset, m);
        self.tally.hash_check(
            "half-close",
            ok,
            &format!("sent {size} B, got {got}+{extra} of {m} B"),
        );
        Ok(())
    }

    /// Declares 32 MiB, sends part of it, resets: the upstream must see ECONNRESET. (It waits
    /// for the upstream's GO first: a reset that overtakes the request would leave the
    /// upstream unable to tell a planned reset from a broken connection.)
    pub(crate) fn client_reset_upload(&self, route: &str, rng: &mut Rng) -> Outcome {
        let mut stream = self.connect(route, "client_reset")?;
        let k = rng.between(64 * KIB as u64, 8 * MIB as u64) as usize;
        stream.send(up(32 * MIB, SoakEnd::ClientReset).as_bytes())?;
        if stream.read_line()?.as_deref() != Some("GO") {
            return Err(protocol("no GO from the upstream"));
        }
        stream.send(self.block.slice(0, k))?;
        self.moved(k as u64, 0);
        reset_close(stream.sock);
        Ok(())
    }

    /// Reads part of a 32 MiB download, resets: the upstream must see ECONNRESET.
    pub(crate) fn client_reset_download(&self, route: &str, rng: &mut Rng) -> Outcome {
        let mut stream = self.connect(route, "client_reset")?;
        let k = rng.between(64 * KIB as u64, 4 * MIB as u64);
        stream.send(down(32 * MIB, 0, SoakEnd::ClientReset).as_bytes())?;
        let got = stream.read_hashing(k, &mut Sha256::new(), &Corruptor::default(), None)?;
        self.moved(0, got);
        reset_close(stream.sock);
        Ok(())
    }

    /// An exchange or two, then a message and a reset: the upstream must see ECONNRESET.
    pub(crate) fn client_reset_echo(&self, route: &str, rng: &mut Rng) -> Outcome {
        let mut stream = self.connect(route, "client_reset")?;
        stream.send(echo(SoakEnd::ClientReset).as_bytes())?;
        for _ in 0..rng.between(1, 2) {
            self.exchange(&mut stream, rng)?;
        }
        stream.send(self.block.slice(0, 1000))?;
        reset_close(stream.sock);
        Ok(())
    }

    /// Half-close, read part of a 48 MiB answer, reset: the upstream, which has seen our end
    /// of stream, must see ECONNRESET or EPIPE. The relay logs it as a reset after the
    /// client's end of stream (its 64 KiB and its end were passed on before the answer came).
    pub(crate) fn client_reset_half_closed(&self, route: &str, rng: &mut Rng) -> Outcome {
        let mut stream = self.connect(route, "client_reset_after_end")?;
        stream.send(half(48 * MIB, 0, SoakEnd::ClientReset).as_bytes())?;
        stream.send(self.block.slice(0, 64 * KIB))?;
        stream.sock.shutdown(std::net::Shutdown::Write)?;
        stream.read_line()?;
        let k = rng.between(64 * KIB as u64, 2 * MIB as u64);
        let got = stream.read_hashing(k, &mut Sha256::new(), &Corruptor::default(), None)?;
        self.moved(64 * KIB as u64, got);
        reset_close(stream.sock);
        Ok(())
    }

    /// The upstream resets after k bytes of a 32 MiB upload: our send or the wait for the
    /// answer must fail with ECONNRESET.
    pub(crate) fn upstream_reset_upload(&self, route: &str, rng: &mut Rng) -> Outcome {
        let what = "upload, upstream reset, seen by the client";
        let k = rng.between(64 * KIB as u64, 4 * MIB as u64);
        let mut stream = self.connect(route, "upstream_reset")?;
        let sent = (|| -> Result<Option<String>, Failure> {
            stream.send(up(32 * MIB, SoakEnd::UpstreamReset { after: k }).as_bytes())?;
            stream.send(self.block.slice(0, 32 * MIB))?;
            stream.read_line()
        })();
        match sent {
            Err(Failure::Io(e)) => self.tally.abort_seen(what, &e, false),
            Err(other) => return Err(other),
            Ok(answer) => self.tally.abort_missed(
                what,
                if answer.is_some() {
                    "an answer"
                } else {
                    "clean end of stream"
                },
            ),
        }
        Ok(())
    }

    /// The upstream resets after k bytes of a 32 MiB download: we must read ECONNRESET.
    pub(crate) fn upstream_reset_download(&self, route: &str, rng: &mut Rng) -> Outcome {
        let what = "download, upstream reset, seen by the client";
        let k = rng.between(64 * KIB as u64, 4 * MIB as u64);
        let mut stream = self.connect(route, "upstream_reset")?;
        let read = (|| -> std::io::Result<u64> {
            stream.send(down(32 * MIB, 0, SoakEnd::UpstreamReset { after: k }).as_bytes())?;
            stream.read_hashing(
                32 * MIB as u64,
                &mut Sha256::new(),
                &Corruptor::default(),
                None,
            )
        })();
        match read {
            Err(e) => self.tally.abort_seen(what, &e, false),
            Ok(got) => {
                self.moved(0, got);
                self.tally
                    .abort_missed(what, &format!("clean end of stream after {got} B"));
            }
        }
        Ok(())
    }

    /// The upstream resets on our first message: our read must fail with ECONNRESET.
    pub(crate) fn upstream_reset_echo(&self, route: &str, rng: &mut Rng) -> Outcome {
        let what = "echo, upstream reset, seen by the client";
        let mut stream = self.connect(route, "upstream_reset")?;
        let size = rng.between(MESSAGE_SIZES.0, MESSAGE_SIZES.1) as usize;
        let read = (|| -> std::io::Result<usize> {
            let mut request = echo(SoakEnd::UpstreamReset { after: 1 }).into_bytes();
            request.extend_from_slice(self.block.slice(0, size));
            stream.send(&request)?;
            let mut buf = vec![0u8; 64 * KIB];
            stream.recv(&mut buf)
        })();
        match read {
            Err(e) => self.tally.abort_seen(what, &e, false),
            Ok(n) => self.tally.abort_missed(
                what,
                if n > 0 {
                    "bytes"
                } else {
                    "clean end of stream"
                },
            ),
        }
        Ok(())
    }
}

fn up(bytes: usize, end: SoakEnd) -> String {
    SoakRequest::Up {
        bytes: bytes as u64,
        end,
    }
    .line()
}

fn down(bytes: usize, offset: usize, end: SoakEnd) -> String {
    SoakRequest::Down {
        bytes: bytes as u64,
        offset: offset as u64,
        end,
    }
    .line()
}

fn echo(end: SoakEnd) -> String {
    SoakRequest::Echo { end }.line()
}

fn half(bytes: usize, offset: usize, end: SoakEnd) -> String {
    SoakRequest::Half {
        bytes: bytes as u64,
        offset: offset as u64,
        end,
    }
    .line()
}

/// Runs one load item; an unplanned error is a failure of that exchange, not a crash. A pause
/// follows a failure, so that a relay that died does not make the loops spin.
fn guarded(load: &Load, what: &str, item: impl FnOnce() -> Outcome) {
    if let Err(failure) = item() {
        load.tally
            .problem("exchange_failed", &format!("{what}: {failure}"));
        load.stop.wait(Duration::from_millis(500));
    }
}

/// Uploads and downloads of 8-32 MiB, on random routes, with a short pause.
fn bulk_loop(load: &Load, seed: u64) {
    let mut rng = Rng::new(seed);
    while !load.stop.is_set() {
        let route = rng.pick(&load.routes).clone();
        let n = rng.between(BULK_SIZES_MIB.0, BULK_SIZES_MIB.1) as usize * MIB;
        let offset = rng.step_below((DATA_SIZE - n + 1) as u64, MIB as u64) as usize;
        if rng.unit() < 0.5 {
            guarded(load, "bulk upload", || load.upload(&route, n, offset));
        } else {
            guarded(load, "bulk download", || {
                load.download(&route, n, offset, None, "download")
            });
        }
        load.stop.wait(secs(rng.uniform(0.5, 1.5)));
    }
}

/// Cycles of 10 parallel multipart uploads (5 per route), then a pause.
fn multipart_loop(load: &Load, seed: u64) {
    let mut rng = Rng::new(seed);
    while !load.stop.is_set() {
        std::thread::scope(|scope| {
            for i in 0..MULTIPART_CONNECTIONS {
                let route = load.routes[i % load.routes.len()].clone();
                let mut part_rng = Rng::new(rng.next_u64());
                scope.spawn(move || {
                    guarded(load, "multipart", || {
                        load.multipart(&route, MULTIPART_PARTS, &mut part_rng)
                    });
                });
            }
        });
        load.tally.add("multipart_cycles", 1);
        load.stop.wait(secs(MULTIPART_PAUSE_S));
    }
}

/// Short echo connections at CHURN_RATE_PER_WORKER a second (no catching up when late).
fn churn_loop(load: &Load, seed: u64) {
    let mut rng = Rng::new(seed);
    let period = Duration::from_secs_f64(1.0 / CHURN_RATE_PER_WORKER);
    let mut next_at = Instant::now();
    while !load.stop.is_set() {
        let route = rng.pick(&load.routes).clone();
        guarded(load, "short echo", || load.short_echo(&route, &mut rng));
        let now = Instant::now();
        next_at = (next_at + period).max(now.checked_sub(Duration::from_secs(1)).unwrap_or(now));
        load.stop
            .wait(next_at.saturating_duration_since(Instant::now()));
    }
}

/// One connection for the whole soak, a small exchange every 50 ms, closed cleanly.
fn long_echo_loop(load: &Load, route: &str, seed: u64) {
    let mut rng = Rng::new(seed);
    guarded(load, &format!("long-lived echo on {route}"), || {
        let mut stream = load.connect(route, "clean")?;
        stream.send(echo(SoakEnd::Clean).as_bytes())?;
        while !load.stop.is_set() {
            load.exchange(&mut stream, &mut rng)?;
            load.stop.wait(secs(LONG_ECHO_INTERVAL_S));
        }
        Ok(())
    });
}

/// Every kind of reset in turn, on alternating routes.
fn abort_loop(load: &Load, seed: u64) {
    let mut rng = Rng::new(seed);
    let mut i = 0usize;
    while !load.stop.is_set() {
        let (name, abort) = ABORTS[i % ABORTS.len()];
        let route = load.routes[(i / ABORTS.len()) % load.routes.len()].clone();
        guarded(load, name, || abort(load, &route, &mut rng));
        i += 1;
        load.stop.wait(secs(ABORT_PAUSE_S));
    }
}

/// Downloads of 4-8 MiB read 32 KiB at a time with a pause: the relay must hold back.
fn slow_reader_loop(load: &Load, seed: u64) {
    let mut rng = Rng::new(seed);
    while !load.stop.is_set() {
        let n = rng.between(4, 8) as usize * MIB;
        let offset = rng.step_below((DATA_SIZE - n + 1) as u64, MIB as u64) as usize;
        let route = rng.pick(&load.routes).clone();
        let pace = Some((SLOW_READ_CHUNK, SLOW_READ_PAUSE));
        guarded(load, "slow reader", || {
            load.download(&route, n, offset, pace, "slow download")
        });
    }
}

/// Half-closes, one at a time.
fn half_close_loop(load: &Load, seed: u64) {
    let mut rng = Rng::new(seed);
    while !load.stop.is_set() {
        let route = rng.pick(&load.routes).clone();
        guarded(load, "half-close", || load.half_close(&route, &mut rng));
        load.stop.wait(secs(HALF_CLOSE_PAUSE_S));
    }
}

/// Starts every load loop; returns the threads (each ends soon after the stop event).
pub(crate) fn start(load: &Arc<Load>) -> std::io::Result<Vec<std::thread::JoinHandle<()>>> {
    type Loop = Box<dyn FnOnce(&Load) + Send>;
    let mut loops: Vec<(&str, Loop)> = Vec::new();
    for i in 0..BULK_WORKERS {
        loops.push(("bulk", Box::new(move |l| bulk_loop(l, 100 + i))));
    }
    loops.push(("multipart", Box::new(|l| multipart_loop(l, 200))));
    for i in 0..CHURN_WORKERS {
        loops.push(("churn", Box::new(move |l| churn_loop(l, 300 + i))));
    }
    for (i, route) in load.routes.iter().enumerate() {
        let route = route.clone();
        loops.push((
            "long-echo",
            Box::new(move |l| long_echo_loop(l, &route, 400 + i as u64)),
        ));
    }
    loops.push(("abort", Box::new(|l| abort_loop(l, 500))));
    loops.push(("slow-reader", Box::new(|l| slow_reader_loop(l, 600))));
    loops.push(("half-close", Box::new(|l| half_close_loop(l, 700))));
    let mut threads = Vec::new();
    for (name, body) in loops {
        let load = Arc::clone(load);
        threads.push(
            std::thread::Builder::new()
                .name(format!("soak-{name}"))
                .spawn(move || body(&load))?,
        );
    }
    Ok(threads)
}
