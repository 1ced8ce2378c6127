//! The relay under test: the `spliceway` binary as a child process (the real measurement), the
//! library in this process (the quick test), or HAProxy as a child (the comparison).

use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use spliceway::{ConnectionOptions, Route, UpstreamAddr};

use crate::InProcessRelay;
use spliceway_bench::procfs::{Fds, Memory, Proc};

/// How long a relay may take to start listening.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// Idle timeout of the second relay, whose connections end by idle timeout.
pub const SHORT_IDLE_TIMEOUT: Duration = Duration::from_millis(200);

/// Which relay to measure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RelayChoice {
    /// `spliceway relay` at this path, as a child process.
    Child(PathBuf),
    /// The library, in this process (descriptors and RSS are then the whole process's).
    InProcess,
}

/// A relay running for a benchmark; stopped when dropped.
#[derive(Debug)]
pub struct Target {
    /// `spliceway` or `haproxy`.
    pub name: &'static str,
    /// Where clients connect.
    pub addr: SocketAddr,
    /// A second listen address whose connections are reset after [`SHORT_IDLE_TIMEOUT`].
    pub idle_timeout_addr: Option<SocketAddr>,
    /// The process relaying `addr`.
    pub main: Proc,
    /// The process relaying `idle_timeout_addr`, when it is another one.
    pub idle_timeout_proc: Option<Proc>,
    /// Whether `main` is this very process.
    pub in_process: bool,
    children: Vec<Child>,
    _relay: Option<InProcessRelay>,
    _config_dir: Option<tempfile::TempDir>,
}

impl Target {
    /// Starts spliceway (a child, or in process) relaying to `upstream`, plus its
    /// short-idle-timeout twin.
    pub fn spliceway(choice: &RelayChoice, upstream: SocketAddr) -> io::Result<Target> {
        match choice {
            RelayChoice::Child(binary) => {
                let main = spawn_spliceway(binary, upstream, "10m")?;
                let short = spawn_spliceway(binary, upstream, "200ms")?;
                Ok(Target {
                    name: "spliceway",
                    addr: main.1,
                    idle_timeout_addr: Some(short.1),
                    main: Proc(Some(main.0.id())),
                    idle_timeout_proc: Some(Proc(Some(short.0.id()))),
                    in_process: false,
                    children: vec![main.0, short.0],
                    _relay: None,
                    _config_dir: None,
                })
            }
            RelayChoice::InProcess => {
                let route = |name: &str, idle: Duration| {
                    let mut options = ConnectionOptions::default();
                    options.idle_timeout = idle;
                    Route::new(name, UpstreamAddr::Ip(upstream))
                        .listen(SocketAddr::from(([127, 0, 0, 1], 0)))
                        .options(options)
                };
                let relay = InProcessRelay::start(vec![
                    route("main", Duration::from_secs(600)),
                    route("short-idle", SHORT_IDLE_TIMEOUT),
                ])?;
                Ok(Target {
                    name: "spliceway (in process)",
                    addr: relay.addrs[0],
                    idle_timeout_addr: Some(relay.addrs[1]),
                    main: Proc::SELF,
                    idle_timeout_proc: None,
                    in_process: true,
                    children: Vec::new(),
                    _relay: Some(relay),
                    _config_dir: None,
                })
            }
        }
    }

    /// Starts HAProxy (TCP mode, one thread) relaying to `upstream`.
    pub fn haproxy(binary: &Path, upstream: SocketAddr) -> io::Result<Target> {
        let port = free_port()?;
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let dir = tempfile::tempdir()?;
        let config = dir.path().join("haproxy.cfg");
        // HAProxy wants 2 x maxconn + a few descriptors and refuses to start otherwise: under a
        // 20,000-descriptor limit, maxconn 20000 fails, 9,990 fits (enough for 9,000).
        let (nofile, _) =
            nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
                .map_err(io::Error::from)?;
        let maxconn = nofile.saturating_sub(20) / 2;
        std::fs::write(
            &config,
            format!(
                "global\n    nbthread 1\n    maxconn {maxconn}\n    ulimit-n {nofile}\n\n\
                 defaults\n    mode tcp\n    timeout connect 10s\n    timeout client 10m\n    \
                 timeout server 10m\n\n\
                 listen relay\n    bind {addr}\n    server upstream {upstream}\n"
            ),
        )?;
        let child = Command::new(binary)
            .arg("-db") // foreground
            .arg("-f")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", binary.display())))?;
        let pid = child.id();
        let mut target = Target {
            name: "haproxy",
            addr,
            idle_timeout_addr: None,
            main: Proc(Some(pid)),
            idle_timeout_proc: None,
            in_process: false,
            children: vec![child],
            _relay: None,
            _config_dir: Some(dir),
        };
        wait_listening(&mut target.children[0], addr)?;
        Ok(target)
    }

    /// Descriptors of the main process.
    pub fn fds(&self) -> io::Result<Fds> {
        self.main.fds()
    }

    /// Memory of the main process.
    pub fn memory(&self) -> io::Result<Memory> {
        self.main.memory()
    }

    /// Fails if a child relay has exited.
    pub fn check_alive(&mut self) -> io::Result<()> {
        for child in &mut self.children {
            if let Some(status) = child.try_wait()? {
                return Err(io::Error::other(format!(
                    "the relay (pid {}) exited: {status}",
                    child.id()
                )));
            }
        }
        Ok(())
    }
}

impl Drop for Target {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM);
        }
        for child in &mut self.children {
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline {
                if matches!(child.try_wait(), Ok(Some(_))) {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn spawn_spliceway(
    binary: &Path,
    upstream: SocketAddr,
    idle_timeout: &str,
) -> io::Result<(Child, SocketAddr)> {
    let port = free_port()?;
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut child = Command::new(binary)
        .args(["relay", &addr.to_string(), &upstream.to_string(), "-q"])
        .args(["--threads", "1", "--idle-timeout", idle_timeout])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .map_err(|e| {
            io::Error::new(
                e.kind(),
                format!(
                    "{}: {e} (build it with `cargo build --release`, or pass --spliceway)",
                    binary.display()
                ),
            )
        })?;
    if let Err(e) = wait_listening(&mut child, addr) {
        let _ = child.kill();
        let _ = child.wait();
        return Err(e);
    }
    Ok((child, addr))
}

/// A port free on 127.0.0.1 a moment ago.
fn free_port() -> io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Waits until `addr` accepts connections (the probe reaches the upstream as a connection
/// without a header, which the upstream counts apart).
fn wait_listening(child: &mut Child, addr: SocketAddr) -> io::Result<()> {
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait()? {
            return Err(io::Error::other(format!(
                "the relay exited before listening on {addr}: {status}"
            )));
        }
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return Ok(());
        }
        if start.elapsed() > START_TIMEOUT {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("nothing listens on {addr} after {START_TIMEOUT:?}"),
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
