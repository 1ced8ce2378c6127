use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use crate::util::{
    Daemon, SPLICEWAY, WAIT, config_file, connect, echo_server, try_echo, wait_until,
};

/// Sends `message` and expects it echoed back within `timeout`; `false` if nothing came.
fn echoed_within(stream: &mut TcpStream, message: &[u8], timeout: Duration) -> bool {
    stream.set_read_timeout(Some(timeout)).unwrap();
    let mut buf = vec![0u8; message.len()];
    match stream.read_exact(&mut buf) {
        Ok(()) => {
            assert_eq!(buf, message);
            true
        }
        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => false,
        Err(e) => panic!("{e}"),
    }
}

#[test]
fn a_third_client_waits_until_one_of_two_closes() {
    third_client_waits(1);
}

/// With two workers the third client may sit in the backlog of the worker that did not free
/// the slot (SO_REUSEPORT picks the listener): the worker that frees it must tell the others.
#[test]
fn a_third_client_waits_until_one_of_two_closes_with_two_workers() {
    third_client_waits(2);
}

fn third_client_waits(threads: usize) {
    let upstream_server = echo_server();
    let upstream = upstream_server.addr;
    let daemon = Daemon::start(
        SPLICEWAY,
        &format!(
            r#"
threads = {threads}
[[route]]
name = "limited"
listen = ["127.0.0.1:0"]
upstream = "{upstream}"
max_connections = 2
"#
        ),
    );
    let relay = daemon.listen_addr("limited");
    let mut first = connect(relay);
    let mut second = connect(relay);
    for (stream, message) in [(&mut first, b"one"), (&mut second, b"two")] {
        stream.write_all(message).unwrap();
        assert!(echoed_within(stream, message, WAIT));
    }

    // The third connects (the kernel's backlog) but is not relayed while two are open.
    let mut third = connect(relay);
    third.write_all(b"three").unwrap();
    assert!(
        !echoed_within(&mut third, b"three", Duration::from_millis(700)),
        "a third connection was relayed despite max_connections = 2"
    );

    drop(first);
    assert!(
        echoed_within(&mut third, b"three", WAIT),
        "the third client was not served after the first closed"
    );
    second.write_all(b"still").unwrap();
    assert!(echoed_within(&mut second, b"still", WAIT));
}

/// User plus system CPU time of a process, in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let after_name = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    // Fields 14 and 15 of stat(5); `after_name` starts at field 3.
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

#[test]
fn out_of_descriptors_it_pauses_without_spinning_and_recovers() {
    let upstream_server = echo_server();
    let upstream = upstream_server.addr;
    let (dir, path) = config_file(&format!(
        r#"
threads = 1
[[route]]
name = "tight"
listen = ["127.0.0.1:0"]
upstream = "{upstream}"
"#
    ));
    // `run` raises the soft limit to the hard one, so lower the hard limit before exec.
    let mut command = Command::new("sh");
    command
        .arg("-c")
        .arg("ulimit -Sn 40 && ulimit -Hn 40 && exec \"$0\" run --config \"$1\"")
        .arg(env!("CARGO_BIN_EXE_spliceway"))
        .arg(&path);
    let mut daemon = Daemon::spawn(command, path, Some(dir));
    let pid = daemon.child.id();
    let relay = daemon.listen_addr("tight");

    // Far more connections than 40 descriptors can carry; each says hello.
    let mut clients = Vec::new();
    for i in 0..24u8 {
        let mut stream = connect(relay);
        let _ = stream.write_all(&[i]);
        clients.push(stream);
    }
    // Since the relay counts its descriptors (issue: accepted clients were reset for want of an
    // upstream socket), it stops accepting before the kernel says EMFILE and says so.
    assert!(
        daemon.wait_for_log("descriptors nearly used up", WAIT),
        "the relay never ran out of descriptors; log:\n{}",
        daemon.log_text()
    );
    let before = cpu_ticks(pid);
    let started = Instant::now();
    thread::sleep(Duration::from_secs(3));
    let used = cpu_ticks(pid) - before;
    let elapsed = started.elapsed().as_secs_f64();
    assert!(
        (used as f64) < 0.25 * 100.0 * elapsed,
        "the relay used {used} ticks of CPU in {elapsed:.1} s while out of descriptors \
         (spinning?); log:\n{}",
        daemon.log_text()
    );
    assert!(
        daemon.child.try_wait().unwrap().is_none(),
        "the relay died: {}",
        daemon.log_text()
    );

    drop(clients);
    // Once the descriptors are free again, it serves new clients.
    let served = wait_until(WAIT, || {
        try_echo(relay, b"after the storm", WAIT).is_ok_and(|back| back == b"after the storm")
    });
    assert!(
        served,
        "not serving after recovery; log:\n{}",
        daemon.log_text()
    );
}

/// UDP sessions hold one descriptor each (their upstream socket), and any datagram opens one,
/// from any source address it claims. Under a small open-file limit, a flood of new UDP
/// sources stops at half of the relay's descriptor budget (the rest dropped and counted as
/// `reason="descriptors"`), and TCP clients are still accepted and served, several at once.
#[test]
fn udp_sessions_leave_half_of_the_descriptors_to_tcp_clients() {
    const UDP_CLIENTS: usize = 200;
    const TCP_CLIENTS: usize = 8;
    if Command::new("prlimit").arg("--version").output().is_err() {
        eprintln!("skipped: needs prlimit (util-linux)");
        return;
    }
    crate::util::raise_own_nofile();
    let tcp_upstream = echo_server();
    let udp_upstream_addr = crate::util::udp_echo();
    let (dir, path) = config_file(&format!(
        "metrics = \"127.0.0.1:0\"\nlog_level = \"info\"\n\n\
         [[route]]\nname = \"tcp\"\nlisten = [\"127.0.0.1:0\"]\nupstream = \"{}\"\n\n\
         [[route]]\nname = \"udp\"\nprotocol = \"udp\"\nlisten = [\"127.0.0.1:0\"]\n\
         upstream = \"{udp_upstream_addr}\"\nudp_idle_timeout = \"60s\"\n",
        tcp_upstream.addr
    ));
    let mut command = Command::new("prlimit");
    command
        .args(["--nofile=256:256", SPLICEWAY, "run", "--config"])
        .arg(&path)
        .env_remove("NOTIFY_SOCKET");
    let daemon = Daemon::spawn(command, path, Some(dir));
    let udp_listen = daemon.listen_addr("udp");
    let tcp_listen = daemon.listen_addr("tcp");

    // Every UDP client (a socket of its own: a new source port, a new session) sends one
    // datagram. Once the relay has opened or refused a session for each, and sent every answer
    // it had, the answers are read.
    let clients: Vec<std::net::UdpSocket> = (0..UDP_CLIENTS)
        .map(|i| {
            let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
            socket.connect(udp_listen).unwrap();
            socket.send(format!("datagram {i}").as_bytes()).unwrap();
            socket
        })
        .collect();
    let metrics_addr = daemon.metrics_addr();
    let sample = |name: &str, labels: &[(&str, &str)]| -> usize {
        let text = crate::util::scrape(metrics_addr);
        crate::util::metric(&text, name, labels).unwrap_or_else(|| panic!("no {name}")) as usize
    };
    let udp = [("route", "udp")];
    let dropped = || {
        sample(
            "spliceway_udp_dropped_total",
            &[("route", "udp"), ("reason", "descriptors")],
        )
    };
    let settled = || {
        let opened = sample("spliceway_udp_sessions_started_total", &udp);
        let answers = sample(
            "spliceway_udp_datagrams_total",
            &[("route", "udp"), ("direction", "upstream_to_client")],
        );
        opened + dropped() == UDP_CLIENTS && answers == opened
    };
    assert!(
        wait_until(WAIT, settled),
        "the relay did not answer or refuse every client; log:\n{}",
        daemon.log_text()
    );
    let mut answered = 0;
    for (i, socket) in clients.iter().enumerate() {
        socket
            .set_read_timeout(Some(Duration::from_millis(20)))
            .unwrap();
        let mut buf = [0u8; 64];
        if let Ok(n) = socket.recv(&mut buf) {
            assert_eq!(&buf[..n], format!("datagram {i}").as_bytes());
            answered += 1;
        }
    }
    let active = sample("spliceway_udp_sessions_active", &udp);
    eprintln!("{answered} of {UDP_CLIENTS} UDP sources got a session");
    assert!(answered > 0, "no UDP client was served");
    assert!(answered < UDP_CLIENTS, "the flood was not stopped");
    assert_eq!(active, answered, "one session per answered client");
    assert_eq!(
        dropped(),
        UDP_CLIENTS - answered,
        "every other client's datagram dropped for want of descriptors"
    );
    assert!(
        daemon.wait_for_log("UDP sessions hold all the descriptors they may", WAIT),
        "the drop is logged: {}",
        daemon.log_text()
    );

    // With the sessions holding their half, TCP clients are still accepted, all at once.
    let streams: Vec<TcpStream> = (0..TCP_CLIENTS).map(|_| connect(tcp_listen)).collect();
    for (i, mut stream) in streams.into_iter().enumerate() {
        let message = format!("tcp client {i}");
        stream.write_all(message.as_bytes()).unwrap();
        assert!(
            echoed_within(&mut stream, message.as_bytes(), WAIT),
            "TCP client {i} not served; {answered} UDP sessions open; log:\n{}",
            daemon.log_text()
        );
    }
}
