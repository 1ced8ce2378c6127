//! What the scale benchmark's clients and upstream say to each other through the relay.
//!
//! Every connection starts with a [`Header`] from the client naming its [`Kind`]: what the
//! upstream does and how the connection must end. Payloads are [`fill`]ed from the connection
//! id and the direction, so either end can produce or check any stretch of a stream.
//!
//! ## Why not the bench's protocol
//!
//! The rest of the measurement stack speaks `spliceway-bench`'s protocol (a
//! `SPLICEWAY-BENCH ...` hello line, answered with `{bytes} {sha256hex}` lines; the soak's
//! requests use the same framing). This workload keeps its own because what it measures needs
//! things those requests cannot say, and adding them there would move this protocol, not
//! share one:
//!
//! - **An end-to-end readiness answer, then a start barrier.** The idle figures are read
//!   while N connections are established through the relay and none has moved a payload byte;
//!   the upstream's [`READY`] says "the relay connected me", and only after every connection
//!   has it does the client send [`GO`] on each, so all transfers start together. A bench
//!   request starts its transfer at once (`up`, `down`, `echo`), and its only early answer
//!   (`GO\n` before a soak client reset) is about the ending, not the connection.
//! - **Two independent streams at once.** [`Kind::Active`] moves `len` bytes each way at the
//!   same time, each hashed at both ends; the bench's `echo` ties the way back to the way up
//!   (the relay then never carries two independent flows), and `half` sends one way after the
//!   other.
//! - **Endings the bench has no request for**: silent until the client closes ([`Kind::Idle`]),
//!   silent until the relay's idle timeout resets both sides ([`Kind::IdleTimeout`]), an
//!   upstream reset at a moment the client picks ([`RESET_ME`]), and a half-close answered with
//!   the ready byte ([`Kind::HalfClose`]).
//! - **Nothing held per connection.** Both ends are one mio loop over up to 100,000
//!   connections: the header has a fixed size (no line to look for), and [`fill`] produces any
//!   stretch of a payload from its position, where the soak's `down` reads a shared block.
//!
//! The two ends live in this crate and in one process (the upstream's hashes are compared with
//! the client's directly), so no other program has to speak this protocol.

/// Length of a [`Header`] on the wire.
pub const HEADER_BYTES: usize = 24;

/// The upstream's one-byte answer to a header: the connection is established end to end.
pub const READY: u8 = b'R';
/// Sent by an active client once every connection is ready: start both transfers now.
pub const GO: u8 = b'G';
/// Sent by an upstream-reset client after the ready byte: reset the connection now.
pub const RESET_ME: u8 = b'X';

/// How a connection behaves and ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    /// Established (header, ready byte), then silent until the client closes it.
    Idle,
    /// Established, then `len` bytes each way at once after [`GO`], both hashed at both ends,
    /// then end of stream each way.
    Active,
    /// Ready byte, then the client closes; the upstream sees end of stream.
    Clean,
    /// Ready byte, then the client resets (`SO_LINGER` 0); the upstream sees a reset.
    ClientReset,
    /// Ready byte, [`RESET_ME`], then the upstream resets; the client sees a reset.
    UpstreamReset,
    /// The client half-closes after the header; the upstream sees end of stream, answers the
    /// ready byte and closes; the client sees the byte and end of stream.
    HalfClose,
    /// Ready byte, then silence until the relay's idle timeout resets both sides.
    IdleTimeout,
}

impl Kind {
    /// The kinds of a churn, in the order they are cycled through (idle timeout aside).
    pub const CHURN: [Kind; 4] = [
        Kind::Clean,
        Kind::ClientReset,
        Kind::UpstreamReset,
        Kind::HalfClose,
    ];

    fn code(self) -> u8 {
        match self {
            Kind::Idle => 1,
            Kind::Active => 2,
            Kind::Clean => 3,
            Kind::ClientReset => 4,
            Kind::UpstreamReset => 5,
            Kind::HalfClose => 6,
            Kind::IdleTimeout => 7,
        }
    }

    fn from_code(code: u8) -> Option<Kind> {
        Some(match code {
            1 => Kind::Idle,
            2 => Kind::Active,
            3 => Kind::Clean,
            4 => Kind::ClientReset,
            5 => Kind::UpstreamReset,
            6 => Kind::HalfClose,
            7 => Kind::IdleTimeout,
            _ => return None,
        })
    }

    /// A short name for tables.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Idle => "idle",
            Kind::Active => "active",
            Kind::Clean => "clean close",
            Kind::ClientReset => "client reset",
            Kind::UpstreamReset => "upstream reset",
            Kind::HalfClose => "half-close",
            Kind::IdleTimeout => "idle timeout",
        }
    }
}

/// The first bytes of every connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// What the connection does.
    pub kind: Kind,
    /// Unique per connection in a run; seeds the payloads.
    pub id: u64,
    /// Payload bytes each way ([`Kind::Active`]), else 0.
    pub len: u64,
}

impl Header {
    /// The wire form.
    pub fn encode(&self) -> [u8; HEADER_BYTES] {
        let mut bytes = [0u8; HEADER_BYTES];
        bytes[0] = self.kind.code();
        bytes[8..16].copy_from_slice(&self.id.to_le_bytes());
        bytes[16..24].copy_from_slice(&self.len.to_le_bytes());
        bytes
    }

    /// Parses the wire form.
    pub fn decode(bytes: &[u8; HEADER_BYTES]) -> Option<Header> {
        Some(Header {
            kind: Kind::from_code(bytes[0])?,
            id: u64::from_le_bytes(bytes[8..16].try_into().ok()?),
            len: u64::from_le_bytes(bytes[16..24].try_into().ok()?),
        })
    }
}

/// Which way a payload goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Way {
    /// Client to upstream.
    Up,
    /// Upstream to client.
    Down,
}

/// Fills `buf` with the bytes at `offset..offset + buf.len()` of connection `id`'s payload in
/// direction `way`. Any stretch can be produced on its own (the stream is a function of the
/// position), so partial writes need no per-connection buffer.
pub fn fill(id: u64, way: Way, offset: u64, buf: &mut [u8]) {
    let seed =
        id.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ if way == Way::Up { 0x5555 } else { 0xAAAA };
    let mut word_index = offset / 8;
    let mut skip = (offset % 8) as usize;
    let mut out = 0;
    while out < buf.len() {
        let word = splitmix64(seed ^ word_index.wrapping_mul(0xD6E8_FEB8_6659_FD93)).to_le_bytes();
        let take = (8 - skip).min(buf.len() - out);
        buf[out..out + take].copy_from_slice(&word[skip..skip + take]);
        out += take;
        skip = 0;
        word_index += 1;
    }
}

fn splitmix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trips() {
        let h = Header {
            kind: Kind::HalfClose,
            id: 77,
            len: 1 << 20,
        };
        assert_eq!(Header::decode(&h.encode()), Some(h));
        assert_eq!(Header::decode(&[0; HEADER_BYTES]), None);
    }

    #[test]
    fn any_stretch_matches_the_whole() {
        let mut whole = vec![0u8; 1000];
        fill(3, Way::Down, 0, &mut whole);
        for (start, len) in [(0, 1), (1, 7), (5, 30), (8, 8), (999, 1), (13, 500)] {
            let mut part = vec![0u8; len];
            fill(3, Way::Down, start as u64, &mut part);
            assert_eq!(part, whole[start..start + len]);
        }
        let mut other = vec![0u8; 1000];
        fill(3, Way::Up, 0, &mut other);
        assert_ne!(other, whole, "each direction has its own stream");
        fill(4, Way::Down, 0, &mut other);
        assert_ne!(other, whole, "each connection has its own stream");
    }
}
