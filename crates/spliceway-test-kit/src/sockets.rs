//! The TCP sockets of a namespace as `ss -tinm` shows them, for tests that check what the
//! relay's sockets hold (queues, bytes moved, buffer limits) rather than what arrived.

use std::net::SocketAddr;

/// One TCP socket as `ss -tinm` shows it.
#[derive(Debug, Clone, Default)]
pub struct SockStat {
    pub local: Option<SocketAddr>,
    pub peer: Option<SocketAddr>,
    /// Bytes received and not yet read by the application.
    pub recv_q: u64,
    /// Bytes written by the application and not yet acknowledged by the peer.
    pub send_q: u64,
    /// Bytes received in order (`tcpi_bytes_received`).
    pub bytes_received: u64,
    /// Bytes the peer acknowledged (`tcpi_bytes_acked`, counting the SYN as one).
    pub bytes_acked: u64,
    /// Receive and send buffer limits (`skmem` rb, tb), in bytes.
    pub rcvbuf: u64,
    pub sndbuf: u64,
    /// The socket's `SO_MAX_PACING_RATE` in bytes a second, when one is set (`ss` prints it
    /// after the pacing rate: `pacing_rate 4Gbps/1600000bps`).
    pub max_pacing_rate: Option<u64>,
}

impl SockStat {
    /// Bytes the application read from this socket.
    pub fn app_read(&self) -> u64 {
        self.bytes_received.saturating_sub(self.recv_q)
    }

    /// Bytes the application wrote to this socket.
    pub fn app_written(&self) -> u64 {
        self.bytes_acked.saturating_sub(1) + self.send_q
    }
}

/// The TCP sockets of this process's network namespace, as `ss -tinmH` shows them (`ss` from
/// iproute2 must be installed).
pub fn tcp_sockets() -> Vec<SockStat> {
    let out = std::process::Command::new("ss")
        .arg("-tinmH")
        .output()
        .expect("ss (iproute2) runs");
    parse_ss(&String::from_utf8_lossy(&out.stdout))
}

pub(crate) fn parse_ss(out: &str) -> Vec<SockStat> {
    let mut sockets: Vec<SockStat> = Vec::new();
    for line in out.lines() {
        if line.trim().is_empty() {
            continue;
        }
        if line.starts_with(char::is_whitespace) {
            let Some(last) = sockets.last_mut() else {
                continue;
            };
            let mut previous = "";
            for token in line.split_whitespace() {
                if previous == "pacing_rate"
                    && let Some((_, max)) = token.split_once('/')
                {
                    last.max_pacing_rate = max
                        .strip_suffix("bps")
                        .and_then(|bits| bits.parse::<u64>().ok())
                        .map(|bits| bits / 8);
                }
                previous = token;
                let number = |prefix: &str| token.strip_prefix(prefix)?.parse::<u64>().ok();
                if let Some(n) = number("bytes_received:") {
                    last.bytes_received = n;
                } else if let Some(n) = number("bytes_acked:") {
                    last.bytes_acked = n;
                } else if let Some(skmem) = token.strip_prefix("skmem:(") {
                    for field in skmem.trim_end_matches(')').split(',') {
                        if let Some(n) = field.strip_prefix("rb") {
                            last.rcvbuf = n.parse().unwrap_or(0);
                        } else if let Some(n) = field.strip_prefix("tb") {
                            last.sndbuf = n.parse().unwrap_or(0);
                        }
                    }
                }
            }
        } else {
            let fields: Vec<&str> = line.split_whitespace().collect();
            if fields.len() < 5 {
                continue;
            }
            sockets.push(SockStat {
                recv_q: fields[1].parse().unwrap_or(0),
                send_q: fields[2].parse().unwrap_or(0),
                local: fields[3].parse().ok(),
                peer: fields[4].parse().ok(),
                ..SockStat::default()
            });
        }
    }
    sockets
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_max_pacing_rate_is_read_only_when_set() {
        let out = "ESTAB 0 0 127.0.0.1:1 127.0.0.1:2\n\t cubic pacing_rate 4000000000bps/1600000bps delivery_rate 1bps\nESTAB 0 0 127.0.0.1:3 127.0.0.1:4\n\t cubic pacing_rate 4000000000bps delivery_rate 1bps\n";
        let sockets = parse_ss(out);
        assert_eq!(sockets.len(), 2);
        assert_eq!(sockets[0].max_pacing_rate, Some(200_000));
        assert_eq!(sockets[1].max_pacing_rate, None);
    }
}
