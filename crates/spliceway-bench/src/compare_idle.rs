//! `--idle-connections N`: connections held open through a variant's relay during each round,
//! sending nothing, so that the relay carries them (their sockets, their entries in every
//! listing) while the upload is measured. With `--compare-top` this is what each refresh of
//! `spliceway top` walks. They go to the sink like the upload (it gives each a thread that
//! waits for data) and are closed before the relay is stopped, the bench waiting (bounded) until
//! the relay has let go of them, so that its stop does not wait for connections still closing.

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
const POLL: Duration = Duration::from_millis(5);
/// Connections opened at once: well inside a listen backlog of 128.
const BATCH: usize = 64;

/// Connections held open through a relay.
#[derive(Debug)]
pub(crate) struct Held {
    streams: Vec<TcpStream>,
    relay: Proc,
    /// The relay's sockets before they were opened.
    baseline: usize,
}

impl Held {
    /// Closes them and waits, at most [`HELD_TIMEOUT`], until the relay's sockets are back to
    /// what they were before; returns whether they are.
    pub(crate) fn release(mut self) -> bool {
        self.streams.clear();
        let deadline = Instant::now() + HELD_TIMEOUT;
        while Instant::now() < deadline {
            match self.relay.fds() {
                Ok(fds) if fds.sockets > self.baseline => std::thread::sleep(POLL),
                _ => return true,
            }
        }
        false
    }
}

/// Opens `count` connections to `listen` and waits until the relay (`pid`) holds two sockets
/// for each (the client's and the upstream's) and the sink (`sink`) has accepted each: only
/// then do they cost the relay what they would, and the round's upload is not queued behind
/// them in the sink's accept backlog. They are opened [`BATCH`] at a time, each batch accepted
/// before the next: a burst of thousands would overflow that backlog (128), and every SYN it
/// drops is retried only after 1, 3, 7 ... seconds.
pub(crate) fn hold(listen: SocketAddr, pid: i32, sink: i32, count: u32) -> anyhow::Result<Held> {
    let relay = Proc(Some(pid as u32));
    let sink = Proc(Some(sink as u32));
    let sockets =
        |p: &Proc| -> anyhow::Result<usize> { Ok(p.fds().context("reading descriptors")?.sockets) };
    let before = sockets(&relay)?;
    let sink_before = sockets(&sink)?;
    let deadline = Instant::now() + HELD_TIMEOUT;
    let mut held = Vec::with_capacity(count as usize);
    while held.len() < count as usize {
        let batch = BATCH.min(count as usize - held.len());
        for _ in 0..batch {
            let s = TcpStream::connect_timeout(&listen, CONNECT_TIMEOUT)
                .with_context(|| format!("idle connection {} to {listen}", held.len()))?;
            held.push(s);
        }
        let wanted = before + 2 * held.len();
        let sink_wanted = sink_before + held.len();
        loop {
            let (held_by_relay, held_by_sink) = (sockets(&relay)?, sockets(&sink)?);
            if held_by_relay >= wanted && held_by_sink >= sink_wanted {
                break;
            }
            if Instant::now() >= deadline {
                bail!(
                    "after {}s the relay holds {held_by_relay} sockets and the sink \
                     {held_by_sink}, not the {wanted} and {sink_wanted} of {} idle connections",
                    HELD_TIMEOUT.as_secs(),
                    held.len()
                );
            }
            std::thread::sleep(POLL);
        }
    }
    Ok(Held {
        streams: held,
        relay,
        baseline: before,
    })
}
