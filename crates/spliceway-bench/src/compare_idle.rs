//! `--idle-connections N`: connections held open through a variant's relay during each round,
//! sending nothing, so that the relay carries them (their sockets, their entries in every
//! listing) while the upload is measured. With `--compare-top` this is what each refresh of
//! `spliceway top` walks. They go to the sink like the upload (it gives each a thread that
//! waits for data) and are closed when the round ends.

use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

use crate::client::CONNECT_TIMEOUT;
use crate::procfs::Proc;

/// The most `--idle-connections`: each takes a descriptor here, two in the relay and a thread
/// in the sink.
pub(crate) const MAX_IDLE_CONNECTIONS: u32 = 10_000;
/// How long the relay may take to have accepted and connected them all.
const HELD_TIMEOUT: Duration = Duration::from_secs(60);
const POLL: Duration = Duration::from_millis(20);

/// Opens `count` connections to `listen` and waits until the relay (`pid`) holds two sockets
/// for each (the client's and the upstream's): only then do they cost it what they would.
pub(crate) fn hold(listen: SocketAddr, pid: i32, count: u32) -> anyhow::Result<Vec<TcpStream>> {
    let relay = Proc(Some(pid as u32));
    let before = relay
        .fds()
        .context("reading the relay's descriptors")?
        .sockets;
    let held = (0..count)
        .map(|i| {
            TcpStream::connect_timeout(&listen, CONNECT_TIMEOUT)
                .with_context(|| format!("idle connection {i} to {listen}"))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let wanted = before + 2 * count as usize;
    let deadline = Instant::now() + HELD_TIMEOUT;
    loop {
        let sockets = relay
            .fds()
            .context("reading the relay's descriptors")?
            .sockets;
        if sockets >= wanted {
            return Ok(held);
        }
        if Instant::now() >= deadline {
            bail!(
                "the relay holds {sockets} sockets after {}s, not the {wanted} of {count} idle \
                 connections",
                HELD_TIMEOUT.as_secs()
            );
        }
        std::thread::sleep(POLL);
    }
}
