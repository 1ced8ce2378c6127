//! The wire format of an upgrade's socket handoff, over the control socket (a unix stream):
//! the old process sends its listening sockets with `SCM_RIGHTS`, each described by a line
//! sent in the same message (`listen ADDR`, `udp ADDR`, `metrics ADDR`, `control PATH`), in
//! batches of
//! at most [`BATCH`] descriptors (the kernel takes at most 253 per message), then `end`. The
//! new process answers `ready` once it has built its relay on them.
//!
//! `SCM_RIGHTS` rather than inheriting descriptors across `exec`: the descriptors arrive as
//! owned ones (rustix), so no code here has to claim a descriptor number, and only the
//! process the relay started (checked by `SO_PEERCRED`) can ask for them.

use std::io::{self, IoSlice, IoSliceMut, Read as _};
use std::mem::MaybeUninit;
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::os::fd::{BorrowedFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;

use anyhow::{Context as _, bail};
use rustix::net::{
    RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, SendAncillaryBuffer,
    SendAncillaryMessage, SendFlags,
};

/// Descriptors per message.
pub const BATCH: usize = 200;
/// Longest description accepted (many sockets of long addresses fit easily).
const MAX_TEXT: usize = 1 << 20;

/// One socket of a handoff.
#[derive(Debug)]
pub enum Socket<'a> {
    /// A relay listener for this address (one of several for an `SO_REUSEPORT` group).
    Listen(SocketAddr, BorrowedFd<'a>),
    /// A UDP route's socket bound to this address.
    Datagram(SocketAddr, BorrowedFd<'a>),
    /// The metrics endpoint's listener.
    Metrics(SocketAddr, BorrowedFd<'a>),
    /// The control socket's listener, bound at this path.
    Control(PathBuf, BorrowedFd<'a>),
}

/// What the new process received.
#[derive(Debug, Default)]
pub struct Received {
    pub listen: Vec<(SocketAddr, TcpListener)>,
    pub udp: Vec<(SocketAddr, UdpSocket)>,
    pub metrics: Option<(SocketAddr, TcpListener)>,
    pub control: Option<(PathBuf, UnixListener)>,
}

/// Sends `sockets`, then `end`.
pub fn send(stream: &UnixStream, sockets: &[Socket<'_>]) -> anyhow::Result<()> {
    let mut space = vec![MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(BATCH))];
    for batch in sockets.chunks(BATCH) {
        let mut text = String::new();
        let mut fds = Vec::with_capacity(batch.len());
        for socket in batch {
            let (line, fd) = match socket {
                Socket::Listen(addr, fd) => (format!("listen {addr}\n"), fd),
                Socket::Datagram(addr, fd) => (format!("udp {addr}\n"), fd),
                Socket::Metrics(addr, fd) => (format!("metrics {addr}\n"), fd),
                Socket::Control(path, fd) => (format!("control {}\n", path.display()), fd),
            };
            text.push_str(&line);
            fds.push(*fd);
        }
        let mut control = SendAncillaryBuffer::new(&mut space);
        if !control.push(SendAncillaryMessage::ScmRights(&fds)) {
            bail!("cannot fit {} descriptors in one message", fds.len());
        }
        let sent = rustix::net::sendmsg(
            stream,
            &[IoSlice::new(text.as_bytes())],
            &mut control,
            SendFlags::NOSIGNAL,
        )?;
        // The descriptors went with the first byte; the rest of the text, if cut short, follows.
        write_all(stream, &text.as_bytes()[sent..])?;
    }
    write_all(stream, b"end\n")
}

fn write_all(mut stream: &UnixStream, bytes: &[u8]) -> anyhow::Result<()> {
    use std::io::Write as _;
    stream.write_all(bytes).context("sending the sockets")
}

/// Receives a handoff sent by [`send`].
pub fn receive(stream: &UnixStream) -> anyhow::Result<Received> {
    let mut space = vec![MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(BATCH))];
    let mut text = Vec::new();
    let mut fds: Vec<OwnedFd> = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    while !text.ends_with(b"end\n") {
        let mut control = RecvAncillaryBuffer::new(&mut space);
        let got = rustix::net::recvmsg(
            stream,
            &mut [IoSliceMut::new(&mut buf)],
            &mut control,
            RecvFlags::CMSG_CLOEXEC,
        )
        .context("receiving the sockets")?;
        for message in control.drain() {
            if let RecvAncillaryMessage::ScmRights(received) = message {
                fds.extend(received);
            }
        }
        if got.bytes == 0 {
            bail!("the old process closed the connection before sending every socket");
        }
        text.extend_from_slice(&buf[..got.bytes]);
        if text.len() > MAX_TEXT {
            bail!("the socket description is too long");
        }
    }
    parse(&String::from_utf8_lossy(&text), fds)
}

/// Pairs each line of `text` with the next descriptor.
fn parse(text: &str, fds: Vec<OwnedFd>) -> anyhow::Result<Received> {
    let mut fds = fds.into_iter();
    let mut received = Received::default();
    for line in text.lines() {
        if line == "end" {
            break;
        }
        let (kind, value) = line
            .split_once(' ')
            .with_context(|| format!("bad handoff line {line:?}"))?;
        let fd = fds
            .next()
            .with_context(|| format!("no descriptor came with {line:?}"))?;
        let addr = || -> anyhow::Result<SocketAddr> {
            value
                .parse()
                .with_context(|| format!("bad address in {line:?}"))
        };
        match kind {
            "listen" => received.listen.push((addr()?, TcpListener::from(fd))),
            "udp" => received.udp.push((addr()?, UdpSocket::from(fd))),
            "metrics" => received.metrics = Some((addr()?, TcpListener::from(fd))),
            "control" => received.control = Some((PathBuf::from(value), UnixListener::from(fd))),
            _ => bail!("bad handoff line {line:?}"),
        }
    }
    if fds.next().is_some() {
        bail!("more descriptors than described sockets");
    }
    Ok(received)
}

/// Reads one line (without its newline) of at most 4 KiB.
pub fn read_line(stream: &UnixStream) -> io::Result<String> {
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    let mut reader = stream;
    while line.len() < 4096 {
        match reader.read(&mut byte)? {
            0 => break,
            _ if byte[0] == b'\n' => break,
            _ => line.push(byte[0]),
        }
    }
    Ok(String::from_utf8_lossy(&line).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd as _;

    #[test]
    fn sockets_arrive_with_their_descriptions() {
        let (old, new) = UnixStream::pair().unwrap();
        let many: Vec<TcpListener> = (0..BATCH + 5)
            .map(|_| TcpListener::bind("127.0.0.1:0").unwrap())
            .collect();
        let metrics = TcpListener::bind("127.0.0.1:0").unwrap();
        let datagrams = UdpSocket::bind("127.0.0.1:0").unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.sock");
        let control = UnixListener::bind(&path).unwrap();
        let mut sockets: Vec<Socket<'_>> = many
            .iter()
            .map(|l| Socket::Listen(l.local_addr().unwrap(), l.as_fd()))
            .collect();
        sockets.push(Socket::Datagram(
            datagrams.local_addr().unwrap(),
            datagrams.as_fd(),
        ));
        sockets.push(Socket::Metrics(
            metrics.local_addr().unwrap(),
            metrics.as_fd(),
        ));
        sockets.push(Socket::Control(path.clone(), control.as_fd()));
        let sender = std::thread::scope(|s| {
            let sending = s.spawn(|| send(&old, &sockets));
            let received = receive(&new).unwrap();
            sending.join().unwrap().unwrap();
            received
        });
        assert_eq!(sender.listen.len(), BATCH + 5);
        for ((addr, socket), original) in sender.listen.iter().zip(&many) {
            assert_eq!(*addr, original.local_addr().unwrap());
            assert_eq!(socket.local_addr().unwrap(), *addr, "the same socket");
        }
        let [(addr, socket)] = &sender.udp[..] else {
            panic!("one UDP socket: {:?}", sender.udp);
        };
        assert_eq!(*addr, datagrams.local_addr().unwrap());
        assert_eq!(socket.local_addr().unwrap(), *addr, "the same socket");
        let (addr, socket) = sender.metrics.unwrap();
        assert_eq!(socket.local_addr().unwrap(), addr);
        let (got_path, _control) = sender.control.unwrap();
        assert_eq!(got_path, path);
    }
}
