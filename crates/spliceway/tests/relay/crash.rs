//! A panic in a worker ends every connection with a reset, never a clean end of stream: the
//! panicking worker's sockets close while unwinding (they carry `SO_LINGER` 0 from the start),
//! the other workers are stopped, and `Relay::run` returns `Error::WorkerPanicked`. The panic is
//! injected by the test-only feature `fault-injection`.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, mpsc};
use std::thread;

use spliceway::{ConnectionOptions, Mode, Relay};

use spliceway_test_kit::*;

fn panics_mid_transfer(mode: Mode) {
    // The upstream reads an upload that the panic cuts short; how its read ends is the point.
    let upstream = TcpListener::bind("127.0.0.1:0").unwrap();
    let upstream_addr = upstream.local_addr().unwrap();
    let (ended_tx, ended) = mpsc::channel();
    let accepted = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&accepted);
    thread::spawn(move || {
        for stream in upstream.incoming().take(4) {
            let Ok(mut stream) = stream else { return };
            counted.fetch_add(1, Ordering::SeqCst);
            stream.set_read_timeout(Some(TEST_TIMEOUT)).unwrap();
            let ended_tx = ended_tx.clone();
            thread::spawn(move || {
                let mut buf = vec![0u8; 64 * 1024];
                let ending = loop {
                    match stream.read(&mut buf) {
                        Ok(0) => break "end of stream".to_string(),
                        Ok(_) => {}
                        Err(e) => break e.kind().to_string(),
                    }
                };
                let _ = ended_tx.send(ending);
            });
        }
    });
    let mut options = ConnectionOptions::default();
    options.mode = mode;
    spliceway::internal::set_panic_after_bytes(&mut options, Some(1 << 20));
    let route = route_to(upstream_addr, mode).options(options);
    let relay = Relay::builder().route(route).threads(2).build().unwrap();
    let addr = relay.local_addrs()[0].1;
    let run = thread::spawn(move || relay.run());

    // Three idle clients (spread over both workers by the kernel), then one upload that trips
    // the panic.
    let mut idle: Vec<_> = (0..3)
        .map(|_| {
            let mut c = connect(addr);
            c.write_all(b"hello").unwrap();
            c
        })
        .collect();
    assert!(
        wait_until(TEST_TIMEOUT, || { accepted.load(Ordering::SeqCst) == 3 }),
        "timed out waiting for the idle clients reached the upstream"
    );
    let mut upload = connect(addr);
    let chunk = vec![7u8; 64 * 1024];
    let mut sent = 0usize;
    let upload_ending = loop {
        match upload.write(&chunk) {
            Ok(n) => sent += n,
            Err(e) => break e.kind().to_string(),
        }
        if sent > 64 << 20 {
            break "still writable after 64 MiB".to_string();
        }
    };
    let result = run
        .join()
        .expect("run() returns instead of unwinding into its caller");
    assert!(
        matches!(result, Err(spliceway::Error::WorkerPanicked(ref m)) if m.contains("injected")),
        "{mode}: {result:?}"
    );
    assert_eq!(
        upload_ending, "connection reset",
        "{mode}: the uploading client"
    );
    for (i, client) in idle.iter_mut().enumerate() {
        assert_reset(client, &format!("{mode}: idle client {i}"));
    }
    for i in 0..4 {
        let ending = ended.recv_timeout(TEST_TIMEOUT).unwrap();
        assert_eq!(ending, "connection reset", "{mode}: upstream peer {i}");
    }
}

#[test]
fn a_worker_panic_resets_every_connection_in_splice_mode() {
    panics_mid_transfer(Mode::Splice);
}

#[test]
fn a_worker_panic_resets_every_connection_in_copy_mode() {
    panics_mid_transfer(Mode::Copy);
}
