//! The running metrics server as its owner sees it: started on a listening socket, stopped
//! accepting by an upgrade, ended when dropped.
//!
//! It runs on one thread (the [event loop](super::event_loop)), started once. Spawning a
//! thread can fail (`EAGAIN` under systemd's `TasksMax` or `RLIMIT_NPROC`): the start is then
//! logged at ERROR and retried every [`SPAWN_RETRY`], up to [`SPAWN_ATTEMPTS`] times, and only
//! then fails the start-up with that error, so health is never lost silently (issue 24,
//! finding 3: the old server spawned a thread per connection, and a failed spawn panicked and
//! left `/readyz` unanswered for good without a line in the log). Nothing is spawned after
//! start.

use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, mpsc};
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::Context as _;
use mio::{Poll, Waker};
use spliceway::RelayHandle;

use super::event_loop::{Command, EventLoop, WAKER};

/// Attempts at starting the server thread before start-up fails.
pub const SPAWN_ATTEMPTS: u32 = 10;
/// The pause between two attempts.
pub const SPAWN_RETRY: Duration = Duration::from_secs(1);
/// How long [`MetricsControl::stop_accepting`] waits for the loop to confirm.
const STOP_TIMEOUT: Duration = Duration::from_secs(2);

/// Starts a thread running the given body; a seam so that tests can make spawning fail.
pub type Spawn<'a> = &'a mut dyn FnMut(Box<dyn FnOnce() + Send>) -> io::Result<JoinHandle<()>>;

/// Tells the running server what to do, from any thread.
#[derive(Debug, Clone)]
pub struct MetricsControl {
    commands: mpsc::Sender<Command>,
    waker: Arc<Waker>,
}

impl MetricsControl {
    fn send(&self, command: Command) {
        if self.commands.send(command).is_ok() {
            let _ = self.waker.wake();
        }
    }

    /// Stops accepting on the listening socket and closes this server's copy of it; answers
    /// under way are finished and their connections closed, idle connections are closed.
    /// Returns once the server has done so (or after 2 s): from then on, a client connecting
    /// to the socket is accepted only by another process holding it (the new process of an
    /// upgrade).
    pub fn stop_accepting(&self) {
        let (done, confirmed) = mpsc::channel();
        self.send(Command::StopAccepting(done));
        if confirmed.recv_timeout(STOP_TIMEOUT).is_err() {
            tracing::warn!("metrics: the server did not confirm it stopped accepting");
        }
    }
}

/// The running server; dropping it ends the server thread and closes every connection.
#[derive(Debug)]
pub struct MetricsServer {
    control: MetricsControl,
    thread: Option<JoinHandle<()>>,
    addr: SocketAddr,
}

impl MetricsServer {
    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// A handle that can stop it accepting from another thread.
    pub fn control(&self) -> MetricsControl {
        self.control.clone()
    }
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        self.control.send(Command::Shutdown);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Serves `/metrics`, `/healthz` and `/readyz` from `handle` on a listening socket (bound by
/// the caller, or by the process an upgrade replaces) until the returned server is dropped.
pub fn serve_on(
    listener: std::net::TcpListener,
    handle: RelayHandle,
) -> anyhow::Result<MetricsServer> {
    let mut spawn = |body: Box<dyn FnOnce() + Send>| {
        std::thread::Builder::new()
            .name("spliceway-metrics".into())
            .spawn(body)
    };
    serve_with(listener, handle, &mut spawn, SPAWN_RETRY)
}

/// [`serve_on`] with the thread start and the pause between attempts given.
pub fn serve_with(
    listener: std::net::TcpListener,
    handle: RelayHandle,
    spawn: Spawn<'_>,
    retry: Duration,
) -> anyhow::Result<MetricsServer> {
    let addr = listener.local_addr().context("metrics listener")?;
    let setup = || -> io::Result<_> {
        listener.set_nonblocking(true)?;
        let poll = Poll::new()?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
        let (commands, receiver) = mpsc::channel();
        let event_loop = EventLoop::new(
            poll,
            mio::net::TcpListener::from_std(listener),
            handle,
            receiver,
        )?;
        Ok((event_loop, MetricsControl { commands, waker }))
    };
    let (event_loop, control) =
        setup().with_context(|| format!("cannot serve metrics on {addr}"))?;
    let thread = start_thread(move || event_loop.run(), spawn, retry)?;
    Ok(MetricsServer {
        control,
        thread: Some(thread),
        addr,
    })
}

/// Starts `body` on a thread, retrying a failed spawn [`SPAWN_ATTEMPTS`] times `retry` apart,
/// each failure logged at ERROR.
fn start_thread(
    body: impl FnOnce() + Send + 'static,
    spawn: Spawn<'_>,
    retry: Duration,
) -> anyhow::Result<JoinHandle<()>> {
    // Kept here while a spawn fails (the closure given to a failed spawn is dropped).
    let body = Arc::new(Mutex::new(Some(body)));
    let mut attempt = 1;
    loop {
        let shared = Arc::clone(&body);
        let result = spawn(Box::new(move || {
            let body = shared.lock().unwrap_or_else(|e| e.into_inner()).take();
            if let Some(body) = body {
                body();
            }
        }));
        match result {
            Ok(thread) => {
                if attempt > 1 {
                    tracing::info!("metrics: server thread started at attempt {attempt}");
                }
                return Ok(thread);
            }
            Err(e) if attempt < SPAWN_ATTEMPTS => {
                tracing::error!(
                    "metrics: cannot start the server thread: {e} (attempt {attempt} of \
                     {SPAWN_ATTEMPTS}); retrying in {retry:?} (TasksMax= or the process limit?)"
                );
                std::thread::sleep(retry);
                attempt += 1;
            }
            Err(e) => {
                tracing::error!(
                    "metrics: cannot start the server thread: {e} (attempt {attempt} of \
                     {SPAWN_ATTEMPTS}); giving up"
                );
                return Err(e).context(format!(
                    "starting the metrics thread failed {SPAWN_ATTEMPTS} times"
                ));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read as _, Write as _};
    use std::net::TcpStream;

    use super::*;

    /// A relay that is built but not run: enough for the server's answers.
    fn idle_relay() -> spliceway::Relay {
        spliceway::Relay::builder().build().unwrap()
    }

    fn get(addr: SocketAddr, path: &str) -> String {
        let mut stream = TcpStream::connect(addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        write!(stream, "GET {path} HTTP/1.0\r\n\r\n").unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).unwrap();
        answer
    }

    /// Everything logged on this thread while `f` runs.
    fn logged(f: impl FnOnce()) -> String {
        let buffer = Arc::new(Mutex::new(Vec::new()));
        let writer = {
            let buffer = Arc::clone(&buffer);
            move || SharedWriter(Arc::clone(&buffer))
        };
        let subscriber = tracing_subscriber::fmt()
            .with_writer(writer)
            .with_ansi(false)
            .finish();
        tracing::subscriber::with_default(subscriber, f);
        let bytes = buffer.lock().unwrap().clone();
        String::from_utf8(bytes).unwrap()
    }

    struct SharedWriter(Arc<Mutex<Vec<u8>>>);

    impl io::Write for SharedWriter {
        fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    /// Finding 3: under a task limit a thread cannot be spawned (`EAGAIN`). The server's one
    /// thread is retried, each failure logged at ERROR, and then serves.
    #[test]
    fn a_failed_thread_start_is_logged_and_retried_then_serves() {
        let relay = idle_relay();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let mut failures = 0;
        let mut spawn = |body: Box<dyn FnOnce() + Send>| {
            if failures < 3 {
                failures += 1;
                return Err(io::Error::from_raw_os_error(nix::libc::EAGAIN));
            }
            std::thread::Builder::new().spawn(body)
        };
        let mut server = None;
        let log = logged(|| {
            server = Some(
                serve_with(
                    listener,
                    relay.handle(),
                    &mut spawn,
                    Duration::from_millis(1),
                )
                .unwrap(),
            );
        });
        let server = server.unwrap();
        assert_eq!(failures, 3);
        assert_eq!(log.matches("ERROR").count(), 3, "{log}");
        assert!(log.contains("cannot start the server thread"), "{log}");
        assert!(log.contains("attempt 4"), "{log}");
        // Built, not running: "not running", but answered.
        let answer = get(server.addr(), "/healthz");
        assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
        assert!(answer.ends_with("not running\n"), "{answer}");
    }

    #[test]
    fn start_up_fails_after_every_attempt_failed() {
        let relay = idle_relay();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let mut attempts = 0;
        let mut spawn = |_body: Box<dyn FnOnce() + Send>| {
            attempts += 1;
            Err(io::Error::from_raw_os_error(nix::libc::EAGAIN))
        };
        let error = serve_with(listener, relay.handle(), &mut spawn, Duration::ZERO).unwrap_err();
        assert_eq!(attempts, SPAWN_ATTEMPTS);
        assert!(
            format!("{error:#}").contains("failed 10 times"),
            "{error:#}"
        );
    }

    /// After `stop_accepting`, the server no longer takes connections from the socket: a
    /// client waits in the backlog for whoever else accepts there.
    #[test]
    fn stop_accepting_leaves_the_socket_to_others() {
        let relay = idle_relay();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let other = listener.try_clone().unwrap();
        let server = serve_on(listener, relay.handle()).unwrap();
        let addr = server.addr();
        assert!(get(addr, "/").contains("metrics are at /metrics"));
        // A kept-alive connection that is idle is closed too.
        let mut kept = TcpStream::connect(addr).unwrap();
        kept.write_all(b"GET / HTTP/1.1\r\n\r\n").unwrap();
        kept.set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut first = [0u8; 15];
        kept.read_exact(&mut first).unwrap();
        assert_eq!(&first, b"HTTP/1.1 200 OK");
        server.control().stop_accepting();
        let mut rest = Vec::new();
        kept.read_to_end(&mut rest).unwrap();

        let mut client = TcpStream::connect(addr).unwrap();
        client.write_all(b"GET / HTTP/1.0\r\n\r\n").unwrap();
        client
            .set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        let mut byte = [0u8; 1];
        assert!(
            client.read(&mut byte).is_err(),
            "answered after stop_accepting"
        );
        // The other holder of the socket gets the client.
        let (mut taken, _) = other.accept().unwrap();
        let mut request = [0u8; 5];
        taken.read_exact(&mut request).unwrap();
        assert_eq!(&request, b"GET /");
        drop(server);
    }
}
