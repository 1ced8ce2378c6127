use std::io::Write;
use std::net::Shutdown;
use std::thread;

use crate::util::{
    Daemon, SPLICEWAY, SysctlOverride, WAIT, connect, drop_to_nobody, hash_answer, hash_server,
    metric, pattern, read_answer, scrape, wait_until,
};

const SOFT_LIMIT: &str = "/proc/sys/fs/pipe-user-pages-soft";

/// Past `pipe-user-pages-soft`, an unprivileged user's new pipes are clamped to two pages and
/// growing one fails with EPERM. The relay, dropped to `nobody`, must keep relaying through the
/// smaller pipes, lose nothing, and say so in its log and metrics.
#[test]
fn kernel_pipe_limit_degrades_to_smaller_pipes_and_loses_nothing() {
    let Some(privileges) = drop_to_nobody("lowers the pipe limit and drops to nobody") else {
        return;
    };
    let upstream_server = hash_server();
    let upstream = upstream_server.addr;
    let config = format!(
        "{privileges}metrics = \"127.0.0.1:0\"\n[[route]]\nname = \"up\"\n\
         listen = [\"127.0.0.1:0\"]\nupstream = \"{upstream}\"\npipe_size = \"512KiB\"\n"
    );
    let daemon = Daemon::start(SPLICEWAY, &config);
    assert!(
        daemon.wait_for_log("dropped privileges", WAIT),
        "{}",
        daemon.log_text()
    );
    // 64 pages (256 KiB) for every unprivileged user: a 512 KiB pipe is refused outright, and
    // after a few default-sized pipes new ones get two pages. Root's processes (the tests) are
    // exempt; the old value comes back when this guard drops.
    let _restore = SysctlOverride::set(SOFT_LIMIT, "64");

    let relay = daemon.listen_addr("up");
    let uploads: Vec<_> = (0..6u8)
        .map(|i| {
            thread::spawn(move || {
                let data = pattern(6 << 20, i);
                let mut client = connect(relay);
                client.write_all(&data).unwrap();
                client.shutdown(Shutdown::Write).unwrap();
                (read_answer(&mut client), hash_answer(&data))
            })
        })
        .collect();
    for (i, upload) in uploads.into_iter().enumerate() {
        let (answer, expected) = upload.join().unwrap();
        assert_eq!(answer, expected, "upload {i}: what the upstream received");
    }
    assert!(
        daemon.wait_for_log("the kernel refused", WAIT),
        "the refusal is logged:\n{}",
        daemon.log_text()
    );
    let addr = daemon.metrics_addr();
    assert!(
        wait_until(WAIT, || {
            let text = scrape(addr);
            metric(
                &text,
                "spliceway_pipe_degradations_total",
                &[("route", "up")],
            )
            .is_some_and(|n| n >= 1.0)
                && metric(
                    &text,
                    "spliceway_connections_closed_total",
                    &[("route", "up")],
                ) == Some(6.0)
        }),
        "degradations counted and every connection closed:\n{}",
        scrape(addr)
    );
    let text = scrape(addr);
    assert_eq!(
        metric(
            &text,
            "spliceway_connections_completed_total",
            &[("route", "up")]
        ),
        Some(6.0),
        "every connection ended with both sides finished:\n{text}"
    );
    eprintln!(
        "{}",
        daemon
            .log_text()
            .lines()
            .find(|l| l.contains("the kernel refused"))
            .unwrap_or_default()
    );
}
