//! The control socket (`control_socket`, `--control-socket`): a unix stream socket, mode 0600,
//! owned by the user the relay runs as after its privilege drop, on which `spliceway upgrade`
//! asks the relay to hand over to a new process (`upgrade.rs`).
//!
//! Only peers whose uid (`SO_PEERCRED`) is root's or the relay's are heard; anyone else is
//! refused and logged, and the relay carries on. One line per request: `upgrade` (answered
//! `pid N` or `error REASON`); `handoff` is only for the process an upgrade started; a line
//! that starts with `{` is a request of the JSON protocol (`control_protocol.rs`,
//! docs/control-protocol.md: `status`, `connections`, `close`).

use std::io::{ErrorKind, Write as _};
use std::os::unix::fs::PermissionsExt as _;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, mpsc};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

use crate::control_protocol::{self, Observer};
pub use crate::control_protocol::{Peer, REQUEST_TIMEOUT};

/// Binds the control socket at `path`: a file left by a relay that died is replaced, a socket
/// another process still listens on is an error. `owner` (uid, gid) is who the file is given
/// to, when the relay is about to drop root to that user.
pub fn bind(path: &Path, owner: Option<(u32, u32)>) -> anyhow::Result<UnixListener> {
    match UnixStream::connect(path) {
        Ok(_) => bail!(
            "control socket {}: another process listens there (is spliceway already running?)",
            path.display()
        ),
        Err(e) if e.kind() == ErrorKind::ConnectionRefused => {
            // Nobody listens: left by a process that died. Only a socket is replaced.
            let meta = std::fs::symlink_metadata(path)?;
            if !std::os::unix::fs::FileTypeExt::is_socket(&meta.file_type()) {
                bail!(
                    "control socket {}: the path exists and is not a socket",
                    path.display()
                );
            }
            tracing::info!(
                "control socket {}: replacing a stale socket",
                path.display()
            );
            std::fs::remove_file(path)
                .with_context(|| format!("removing the stale socket {}", path.display()))?;
        }
        Err(e) if e.kind() == ErrorKind::NotFound => {}
        Err(e) => {
            if path.exists() {
                return Err(e).with_context(|| format!("control socket {}", path.display()));
            }
        }
    }
    let listener = UnixListener::bind(path)
        .with_context(|| format!("binding the control socket {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .with_context(|| format!("chmod 0600 {}", path.display()))?;
    if let Some((uid, gid)) = owner {
        std::os::unix::fs::chown(path, Some(uid), Some(gid))
            .with_context(|| format!("chown {uid}:{gid} {}", path.display()))?;
    }
    Ok(listener)
}

/// Who is on the other end of `stream`, if the kernel says.
pub fn peer(stream: &UnixStream) -> std::io::Result<Peer> {
    let cred = rustix::net::sockopt::socket_peercred(stream)?;
    Ok(Peer {
        pid: rustix::process::Pid::as_raw(Some(cred.pid)),
        uid: cred.uid.as_raw(),
    })
}

/// Whether a peer with `uid` may use the control socket of a relay running as `own`.
pub fn allowed(uid: u32, own: u32) -> bool {
    uid == 0 || uid == own
}

/// What the control socket can be asked.
pub trait Requests {
    /// Runs an upgrade, handing `listener` (the control socket) over too; `Ok(pid)` when the
    /// new process took over (the control thread then ends: the new process answers from now
    /// on), `Err(reason)` when it did not (this process carries on).
    fn upgrade(&mut self, listener: &UnixListener) -> Result<u32, String>;
}

/// Whether the control thread is handling a request, for the main thread to wait on before the
/// process exits.
///
/// Why: after a successful upgrade the old relay drains, and with no connection open its
/// `Relay::run` returns at once and `main` returns, which ends every thread; the control thread
/// could be ended between telling the relay to drain and writing `pid N`, and
/// `spliceway upgrade` then reported "closed the connection without an answer" for an upgrade
/// that had succeeded.
#[derive(Debug, Clone, Default)]
pub struct Answering(Arc<(Mutex<bool>, Condvar)>);

impl Answering {
    /// Waits until no request is being handled, for at most `timeout` (an upgrade in progress
    /// ends within its own timeout).
    pub fn settle(&self, timeout: Duration) {
        let (busy, changed) = &*self.0;
        let deadline = Instant::now() + timeout;
        let mut busy = busy.lock().unwrap_or_else(|e| e.into_inner());
        while *busy {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                tracing::warn!("exiting while the control socket is still handling a request");
                return;
            }
            busy = changed
                .wait_timeout(busy, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    fn set(&self, value: bool) {
        let (busy, changed) = &*self.0;
        *busy.lock().unwrap_or_else(|e| e.into_inner()) = value;
        changed.notify_all();
    }
}

/// Marks a request handled when dropped (also if handling it panics).
struct Handling<'a>(&'a Answering);

impl Drop for Handling<'_> {
    fn drop(&mut self) {
        self.0.set(false);
    }
}

/// At most this many control clients are served at once; one more is told the relay is busy.
/// Each has a thread of its own while it is served, so a slow or silent client holds only its
/// own thread (for at most [`REQUEST_TIMEOUT`] a request), never the relay or other clients.
pub const MAX_CLIENTS: usize = 16;

/// How often the accepting thread looks for an upgrade request handed back by a client's
/// thread while no client connects.
const UPGRADE_POLL: Duration = Duration::from_millis(100);

/// An `upgrade` request, handed from the client's thread to the accepting thread (the only one
/// that accepts on the socket, which an upgrade also does: the new process connects to it).
struct UpgradeAsked {
    stream: UnixStream,
    peer: Peer,
}

/// Serves the control socket until an upgrade succeeds: a thread accepts and checks each
/// peer's credentials, then a thread per client reads its requests (the JSON protocol of
/// `control_protocol.rs`, answered there; or `upgrade`, handed back to the accepting thread,
/// which runs it as before). The returned [`Answering`] lets the main thread wait for an answer
/// in progress before exiting.
pub fn spawn(
    listener: UnixListener,
    path: PathBuf,
    mut requests: impl Requests + Send + 'static,
    observer: Observer,
) -> anyhow::Result<Answering> {
    let answering = Answering::default();
    let handling = answering.clone();
    let clients = Arc::new(AtomicUsize::new(0));
    let (upgrades_tx, upgrades) = mpsc::channel::<UpgradeAsked>();
    std::thread::Builder::new()
        .name("spliceway-control".into())
        .spawn(move || {
            let own = rustix::process::geteuid().as_raw();
            loop {
                while let Ok(asked) = upgrades.try_recv() {
                    if upgrade(asked, &listener, &mut requests, &handling) {
                        return;
                    }
                }
                let mut fds = [rustix::event::PollFd::new(
                    &listener,
                    rustix::event::PollFlags::IN,
                )];
                let timeout =
                    rustix::event::Timespec::try_from(UPGRADE_POLL).expect("a small constant");
                match rustix::event::poll(&mut fds, Some(&timeout)) {
                    Ok(0) | Err(rustix::io::Errno::INTR) => continue,
                    Ok(_) => {}
                    Err(e) => {
                        tracing::error!("control socket {}: poll: {e}", path.display());
                        std::thread::sleep(UPGRADE_POLL);
                        continue;
                    }
                }
                let Ok((mut stream, _)) = listener.accept() else {
                    continue;
                };
                let peer = match peer(&stream) {
                    Ok(peer) => peer,
                    Err(e) => {
                        tracing::warn!("control socket: cannot read the peer's credentials: {e}");
                        continue;
                    }
                };
                // Bounded: nothing this thread writes may wait on a peer that does not read.
                let _ = stream.set_write_timeout(Some(WRITE_TIMEOUT));
                if !allowed(peer.uid, own) {
                    tracing::warn!(
                        "control socket {}: refused a connection from uid {} (pid {}): only \
                         root and uid {own} may use it",
                        path.display(),
                        peer.uid,
                        peer.pid
                    );
                    let _ = writeln!(stream, "error refused: uid {} may not use this", peer.uid);
                    continue;
                }
                if clients.fetch_add(1, Ordering::AcqRel) >= MAX_CLIENTS {
                    clients.fetch_sub(1, Ordering::AcqRel);
                    tracing::warn!(
                        "control socket: {MAX_CLIENTS} clients are being served; pid {} is \
                         told to come back",
                        peer.pid
                    );
                    let _ = writeln!(stream, "{}", control_protocol::busy());
                    continue;
                }
                let client = Client {
                    reader: std::io::BufReader::new(stream),
                    peer,
                    observer: observer.clone(),
                    upgrades: upgrades_tx.clone(),
                    clients: Arc::clone(&clients),
                };
                let spawned = std::thread::Builder::new()
                    .name("spliceway-control-client".into())
                    .spawn(move || client.serve());
                if let Err(e) = spawned {
                    clients.fetch_sub(1, Ordering::AcqRel);
                    tracing::warn!("control socket: cannot start a client's thread: {e}");
                }
            }
        })
        .context("starting the control thread")?;
    Ok(answering)
}

/// How long writing an answer may wait for a peer that does not read.
const WRITE_TIMEOUT: Duration = Duration::from_secs(5);

/// Runs an upgrade asked for on a client's connection; true when it succeeded (the new process
/// answers from now on: the accepting thread ends).
fn upgrade(
    asked: UpgradeAsked,
    listener: &UnixListener,
    requests: &mut impl Requests,
    handling: &Answering,
) -> bool {
    let UpgradeAsked { mut stream, peer } = asked;
    handling.set(true);
    let _handled = Handling(handling);
    tracing::info!("control socket: upgrade asked by pid {}", peer.pid);
    match requests.upgrade(listener) {
        Ok(pid) => {
            let _ = writeln!(stream, "pid {pid}");
            true
        }
        Err(reason) => {
            tracing::error!("upgrade failed, this process carries on: {reason}");
            let _ = writeln!(stream, "error {reason}");
            false
        }
    }
}

/// One control client, served on its own thread.
struct Client {
    reader: std::io::BufReader<UnixStream>,
    peer: Peer,
    observer: Observer,
    upgrades: mpsc::Sender<UpgradeAsked>,
    clients: Arc<AtomicUsize>,
}

impl Client {
    /// Answers the client's requests until it closes, falls silent for [`REQUEST_TIMEOUT`],
    /// asks `upgrade` (handed to the accepting thread) or sends something not understood.
    fn serve(mut self) {
        // Each read waits at most this; a request as a whole at most REQUEST_TIMEOUT.
        let _ = self
            .reader
            .get_ref()
            .set_read_timeout(Some(REQUEST_TIMEOUT));
        for _ in 0..control_protocol::MAX_REQUESTS_PER_CONNECTION {
            let request = match control_protocol::read_request(&mut self.reader) {
                Ok(Some(request)) => request,
                Ok(None) => break,
                Err(answer) => {
                    let _ = writeln!(self.reader.get_mut(), "{answer}");
                    break;
                }
            };
            if request.starts_with('{') {
                let answer = self.observer.answer(&request, self.peer);
                if writeln!(self.reader.get_mut(), "{answer}").is_err() {
                    break;
                }
                continue;
            }
            match request.trim() {
                "upgrade" => {
                    let asked = UpgradeAsked {
                        stream: self.reader.into_inner(),
                        peer: self.peer,
                    };
                    // The accepting thread outlives every client thread unless an upgrade
                    // succeeded, and then no other is run.
                    let _ = self.upgrades.send(asked);
                    break;
                }
                other => {
                    tracing::warn!(
                        "control socket: unknown request {other:?} from pid {}",
                        self.peer.pid
                    );
                    let _ = writeln!(self.reader.get_mut(), "error unknown request {other:?}");
                    break;
                }
            }
        }
        self.clients.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stale_sockets_are_replaced_and_live_ones_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("control.sock");
        let live = bind(&path, None).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let err = bind(&path, None).unwrap_err().to_string();
        assert!(err.contains("another process listens"), "{err}");
        drop(live); // the file stays, nobody listens: stale
        assert!(path.exists());
        let _again = bind(&path, None).unwrap();
        let plain = dir.path().join("plain");
        std::fs::write(&plain, "x").unwrap();
        let err = bind(&plain, None).unwrap_err().to_string();
        assert!(err.contains("not a socket"), "{err}");
    }

    #[test]
    fn settle_waits_for_the_answer_in_progress() {
        let answering = Answering::default();
        answering.settle(Duration::from_secs(5)); // idle: returns at once
        answering.set(true);
        let started = Instant::now();
        answering.settle(Duration::from_millis(50));
        assert!(
            started.elapsed() >= Duration::from_millis(50),
            "bounded wait"
        );
        let other = answering.clone();
        let answered = std::thread::spawn(move || {
            let _handled = Handling(&other);
            std::thread::sleep(Duration::from_millis(20));
        });
        answering.settle(Duration::from_secs(10));
        assert!(!*answering.0.0.lock().unwrap());
        answered.join().unwrap();
    }

    #[test]
    fn only_root_and_the_relays_user_are_heard() {
        assert!(allowed(0, 1000));
        assert!(allowed(1000, 1000));
        assert!(!allowed(65534, 1000));
    }
}
