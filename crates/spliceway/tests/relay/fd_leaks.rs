use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use spliceway::{Mode, Relay, Route, UpstreamAddr};

use spliceway_test_kit::*;

/// Set in the environment of the process this test re-runs itself in.
const CHILD_ENV: &str = "SPLICEWAY_TEST_FD_LEAKS_CHILD";
const TEST_NAME: &str = "fd_leaks::no_descriptor_left_after_every_kind_of_end";

/// Hundreds of connections ending in every way (completed, reset by either side, refused
/// upstream, idle timeout, half-close timeout), in both modes, through one relay with two
/// workers: once the relay has stopped, the process holds exactly the descriptors it held
/// before the relay was built.
///
/// Descriptors are counted for the whole process, so the test runs in a process of its own (the
/// test binary re-run with a filter): other tests running at the same time would otherwise
/// open and close descriptors under it.
#[test]
fn no_descriptor_left_after_every_kind_of_end() {
    if std::env::var_os(CHILD_ENV).is_some() {
        check_descriptors();
    } else {
        run_in_own_process();
    }
}

fn run_in_own_process() {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([TEST_NAME, "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("re-running the test binary");
    let mut stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let out = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stdout.read_to_string(&mut s);
        s
    });
    let err = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > Duration::from_secs(60) {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the descriptor check did not finish within 60 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let (out, err) = (out.join().unwrap(), err.join().unwrap());
    assert!(
        status.success() && out.contains("1 passed"),
        "the descriptor check failed ({status}):\n--- stdout\n{out}\n--- stderr\n{err}"
    );
}

/// Every descriptor of the process and what it is (`socket:[…]`, `pipe:[…]`, `anon_inode:…`),
/// leaving out the one that lists them.
fn descriptors() -> BTreeMap<String, String> {
    std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|entry| {
            let entry = entry.ok()?;
            let target = std::fs::read_link(entry.path()).ok()?;
            let target = target.to_string_lossy().into_owned();
            if target.starts_with("/proc/") && target.ends_with("/fd") {
                return None;
            }
            Some((entry.file_name().to_string_lossy().into_owned(), target))
        })
        .collect()
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum End {
    Completed,
    ClientReset,
    UpstreamReset,
    Refused,
    IdleTimeout,
    HalfCloseTimeout,
}

impl End {
    const ALL: [End; 6] = [
        End::Completed,
        End::ClientReset,
        End::UpstreamReset,
        End::Refused,
        End::IdleTimeout,
        End::HalfCloseTimeout,
    ];

    /// Connections per mode.
    fn count(self) -> u64 {
        match self {
            End::Completed => 50,
            End::ClientReset | End::UpstreamReset | End::Refused => 25,
            End::IdleTimeout => 12,
            End::HalfCloseTimeout => 13,
        }
    }

    fn route_name(self, mode: Mode) -> String {
        format!("{self:?}-{mode}")
    }
}

fn check_descriptors() {
    let echo = echo_server();
    let resetter = Server::start(|mut stream| {
        let mut request = [0u8; 1024];
        if stream.read_exact(&mut request).is_ok() {
            reset(stream);
        }
    });
    let holder = Server::start(|mut stream| {
        // Reads the request to its end, then neither answers nor closes until reset.
        if read_hashed(&mut stream).is_ok() {
            wait_for_socket_error(&stream, Duration::from_secs(10));
        }
    });
    let dead = dead_addr();

    // Servers are up (their listeners are part of the baseline); nothing of the relay exists.
    let baseline_count = open_fds();
    let baseline = descriptors();

    let mut builder = Relay::builder().threads(2);
    for mode in [Mode::Splice, Mode::Copy] {
        for end in End::ALL {
            let upstream: SocketAddr = match end {
                End::Completed | End::ClientReset | End::IdleTimeout => echo.addr,
                End::UpstreamReset => resetter.addr,
                End::HalfCloseTimeout => holder.addr,
                End::Refused => dead,
            };
            let mut route = Route::new(end.route_name(mode), UpstreamAddr::Ip(upstream))
                .listen("127.0.0.1:0".parse().unwrap())
                .with_options(|o| {
                    o.mode = mode;
                    o.pipe_size = 64 * 1024;
                });
            route = match end {
                End::IdleTimeout => {
                    route.with_options(|o| o.idle_timeout = Duration::from_millis(200))
                }
                End::HalfCloseTimeout => {
                    route.with_options(|o| o.half_close_timeout = Duration::from_millis(300))
                }
                _ => route,
            };
            builder = builder.route(route);
        }
    }
    let relay = TestRelay::start_with(builder);

    let mut clients = Vec::new();
    for mode in [Mode::Splice, Mode::Copy] {
        for end in End::ALL {
            let addr = relay.addr_of(&end.route_name(mode));
            clients.push(std::thread::spawn(move || run_clients(end, mode, addr)));
        }
    }
    for client in clients {
        client.join().expect("client thread");
    }

    let total: u64 = End::ALL.iter().map(|e| e.count() * 2).sum();
    assert!(total >= 300);
    relay.wait_for("every connection closed", |s| {
        s.accepted == total && s.closed == total && ends_counted(s) == total
    });
    let stats = relay.handle.snapshot().stats;
    let both_modes = |end: End| end.count() * 2;
    assert_eq!(stats.completed, both_modes(End::Completed), "{stats:?}");
    assert_eq!(
        stats.client_resets,
        both_modes(End::ClientReset),
        "{stats:?}"
    );
    assert_eq!(
        stats.upstream_resets,
        both_modes(End::UpstreamReset),
        "{stats:?}"
    );
    assert_eq!(
        stats.upstream_unavailable,
        both_modes(End::Refused),
        "{stats:?}"
    );
    assert_eq!(
        stats.idle_timeouts,
        both_modes(End::IdleTimeout),
        "{stats:?}"
    );
    assert_eq!(
        stats.half_close_timeouts,
        both_modes(End::HalfCloseTimeout),
        "{stats:?}"
    );
    assert!(
        stats.bytes_spliced > 0 && stats.bytes_copied > 0,
        "{stats:?}"
    );
    relay.stop();

    // The servers' connection threads finish once their peers are gone; give them a moment.
    let started = Instant::now();
    while open_fds() != baseline_count && started.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(20));
    }
    let count = open_fds();
    let now = descriptors();
    let leaked: Vec<_> = now
        .iter()
        .filter(|(fd, what)| baseline.get(*fd) != Some(what))
        .collect();
    let gone: Vec<_> = baseline
        .iter()
        .filter(|(fd, what)| now.get(*fd) != Some(what))
        .collect();
    assert_eq!(
        count, baseline_count,
        "descriptors before the relay: {baseline_count}, after it stopped: {count}; \
         new: {leaked:?}; gone: {gone:?}"
    );
    drop((echo, resetter, holder));
}

/// The clients of one route, ending their connections the route's way.
fn run_clients(end: End, mode: Mode, addr: SocketAddr) {
    let context = format!("{end:?} in {mode} mode");
    match end {
        End::Completed => {
            for i in 0..end.count() {
                let mut client = connect(addr);
                send_generated(&mut client, i, 48 * 1024).unwrap();
                half_close(&client);
                let got = read_hashed(&mut client)
                    .unwrap_or_else(|e| panic!("{context}: echo ended with {e}"));
                assert_eq!(got, (48 * 1024, expected_hash(i, 48 * 1024)), "{context}");
            }
        }
        End::ClientReset => {
            for i in 0..end.count() {
                let mut client = connect(addr);
                send_generated(&mut client, i, 16 * 1024).unwrap();
                let mut echoed = vec![0u8; 16 * 1024];
                client.read_exact(&mut echoed).unwrap();
                reset(client);
            }
        }
        End::UpstreamReset => {
            for _ in 0..end.count() {
                let mut client = connect(addr);
                client.write_all(&[1u8; 1024]).unwrap();
                assert_reset(&mut client, &context);
            }
        }
        End::Refused => {
            for _ in 0..end.count() {
                connect_expecting_reset(addr, &context);
            }
        }
        End::IdleTimeout => {
            let mut clients: Vec<_> = (0..end.count()).map(|_| connect(addr)).collect();
            for client in &mut clients {
                assert_reset(client, &context);
            }
        }
        End::HalfCloseTimeout => {
            let mut clients: Vec<_> = (0..end.count())
                .map(|_| {
                    let client = connect(addr);
                    (&client).write_all(&[2u8; 1024]).unwrap();
                    half_close(&client);
                    client
                })
                .collect();
            for client in &mut clients {
                assert_reset(client, &context);
            }
        }
    }
}
