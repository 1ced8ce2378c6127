//! The sink protocol: what `spliceway sink` (and the bench's in-process sink) answers.
//!
//! A client opens a TCP connection, sends its payload, and shuts down its sending side
//! (`shutdown(SHUT_WR)`, end of stream). The sink reads to end of stream, then writes one line
//! of ASCII and closes:
//!
//! ```text
//! {bytes} {sha256hex}\n
//! ```
//!
//! `bytes` is the decimal count of bytes received; `sha256hex` is the SHA-256 of those bytes as
//! 64 lowercase hexadecimal digits. Example, for an empty connection:
//!
//! ```text
//! 0 e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855
//! ```
//!
//! A connection that sends nothing gets that answer too; the bench uses such zero-byte
//! connections as readiness probes and ignores them.
//!
//! ## Workloads other than one upload: the hello line
//!
//! A client may begin with one line that names another workload; the sink reads it, answers as
//! that workload says, and the line itself is neither counted nor hashed:
//!
//! ```text
//! SPLICEWAY-BENCH echo\n
//! ```
//!
//! `echo`: the sink writes back every byte it receives, as it receives it, until end of stream,
//! then ends its own stream (the `rtt` and `connect` workloads). A payload is pseudo-random, so
//! one that begins with the 16 bytes `SPLICEWAY-BENCH ` by chance does not happen (2^-128).
//! A line that begins so but names nothing known is refused: the sink closes without an answer.
//!
//! ```text
//! SPLICEWAY-BENCH parts {part_bytes}\n
//! ```
//!
//! `parts` (the `--part-size` uploads, what `aws s3 cp` does with a multipart upload): the
//! client sends parts of exactly `part_bytes` bytes (decimal, at least 1), one at a time; after
//! each complete part the sink writes the answer line above for that part alone, and only then
//! does the client send its next part. The last part of a connection may be shorter: the
//! client sends it and shuts down its sending side. At end of stream the sink answers a
//! trailing partial part (if any bytes of one arrived), then closes. So a connection that
//! sent k parts reads exactly k answer lines. The sink hashes each part before it answers, as
//! S3 computes a part's MD5 for its ETag before it replies.
//!
//! ## The soak's requests
//!
//! `spliceway soak` runs its own upstream servers, which take the same framing: a hello line
//! `SPLICEWAY-BENCH soak ...` per request ([`SoakRequest`]), naming the operation and how the
//! connection is planned to end, so that the server can check the ending it sees (a planned
//! client reset must arrive as ECONNRESET) and reset on purpose when the plan says so:
//!
//! ```text
//! SPLICEWAY-BENCH soak up {bytes} {end}\n             answered with an answer line per upload
//! SPLICEWAY-BENCH soak down {bytes} {offset} {end}\n  the block's bytes at offset, then end of stream
//! SPLICEWAY-BENCH soak echo {end}\n                   every byte echoed
//! SPLICEWAY-BENCH soak half {bytes} {offset} {end}\n  read to end of stream, answer, then bytes
//! ```
//!
//! `{end}` is `clean`, `client-reset` (for `up`, the server first answers `GO\n`, so that the
//! reset cannot overtake the request) or `upstream-reset {k}` (the server resets after `k`
//! bytes; for `echo`, after the first message). `up` may repeat on one connection (multipart
//! parts); its answer and `half`'s first answer are the answer lines above. Soak requests are
//! read by the soak's own servers (lines of at most 256 bytes), never by a sink.
//!
//! The scale benchmark (`spliceway-microbench`, `src/scale/protocol.rs`) keeps a binary
//! protocol of its own, for the reasons written there: a readiness answer and a start barrier
//! across all connections, two independent streams at once, and endings no request here names.

use std::fmt;

/// Length of a SHA-256 digest in bytes.
pub(crate) const DIGEST_BYTES: usize = 32;

/// The longest answer line a sink sends (a 20-digit count, a space, 64 digits, a newline).
pub(crate) const MAX_ANSWER_BYTES: usize = 20 + 1 + 2 * DIGEST_BYTES + 1;

/// How every hello line begins.
pub(crate) const HELLO_PREFIX: &[u8] = b"SPLICEWAY-BENCH ";

/// The longest hello line a sink waits for before it refuses the connection.
pub(crate) const MAX_HELLO_BYTES: usize = 64;

/// A workload other than one plain upload, named by the client's first line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Hello {
    /// Echo every byte back until end of stream.
    Echo,
    /// Parts of `part_bytes` bytes, each answered before the next is sent.
    Parts { part_bytes: u64 },
}

impl Hello {
    /// The line the client sends, newline included.
    pub(crate) fn line(&self) -> String {
        match self {
            Hello::Echo => "SPLICEWAY-BENCH echo\n".to_owned(),
            Hello::Parts { part_bytes } => format!("SPLICEWAY-BENCH parts {part_bytes}\n"),
        }
    }
}

/// What the first bytes of a connection say it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Opening {
    /// A plain upload: every byte so far is payload.
    Upload,
    /// A hello line, and how many bytes it took (the rest is the workload's data).
    Hello(Hello, usize),
    /// Not enough bytes yet to tell: read more (up to [`MAX_HELLO_BYTES`]).
    NeedMore,
    /// A hello line the sink does not understand.
    Refused(String),
}

impl Opening {
    /// Classifies the first `bytes` of a connection.
    pub(crate) fn classify(bytes: &[u8]) -> Opening {
        let common = bytes.len().min(HELLO_PREFIX.len());
        if bytes[..common] != HELLO_PREFIX[..common] {
            return Opening::Upload;
        }
        let Some(end) = bytes.iter().position(|&b| b == b'\n') else {
            return if bytes.len() < MAX_HELLO_BYTES {
                Opening::NeedMore
            } else {
                Opening::Refused(format!("no end of line within {MAX_HELLO_BYTES} bytes"))
            };
        };
        let words = String::from_utf8_lossy(&bytes[HELLO_PREFIX.len().min(end)..end]);
        match words
            .split_ascii_whitespace()
            .collect::<Vec<_>>()
            .as_slice()
        {
            ["echo"] => Opening::Hello(Hello::Echo, end + 1),
            ["parts", n] => match n.parse::<u64>() {
                // Digits only: `+8` or `08` would parse, but no client sends them.
                Ok(part_bytes) if part_bytes > 0 && n.bytes().all(|b| b.is_ascii_digit()) => {
                    Opening::Hello(Hello::Parts { part_bytes }, end + 1)
                }
                _ => Opening::Refused(format!("bad part size in {words:?}")),
            },
            _ => Opening::Refused(format!("unknown workload {words:?}")),
        }
    }
}

/// What a sink received on one connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Answer {
    /// Bytes read before end of stream.
    pub(crate) bytes: u64,
    /// SHA-256 of those bytes.
    pub(crate) sha256: [u8; DIGEST_BYTES],
}

impl Answer {
    /// The SHA-256 as lowercase hex.
    pub(crate) fn sha256_hex(&self) -> String {
        hex(&self.sha256)
    }

    /// Parses an answer line (with or without its trailing newline).
    pub(crate) fn parse(line: &str) -> Result<Answer, String> {
        let line = line.strip_suffix('\n').unwrap_or(line);
        let (bytes, digest) = line
            .split_once(' ')
            .ok_or_else(|| format!("sink answer {line:?} is not \"BYTES SHA256HEX\""))?;
        let bytes = bytes
            .parse::<u64>()
            .map_err(|_| format!("sink answer {line:?}: {bytes:?} is not a byte count"))?;
        if digest.len() != 2 * DIGEST_BYTES {
            return Err(format!(
                "sink answer {line:?}: the hash is not 64 hex digits"
            ));
        }
        let mut sha256 = [0u8; DIGEST_BYTES];
        for (i, byte) in sha256.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&digest[2 * i..2 * i + 2], 16)
                .map_err(|_| format!("sink answer {line:?}: the hash is not hex"))?;
        }
        Ok(Answer { bytes, sha256 })
    }
}

impl Answer {
    /// Writes the answer line, newline included, into `out` without allocating (the parts
    /// workload answers every part); returns its length.
    pub(crate) fn encode(&self, out: &mut [u8; MAX_ANSWER_BYTES]) -> usize {
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        let mut count = [0u8; 20];
        let mut start = count.len();
        let mut value = self.bytes;
        loop {
            start -= 1;
            count[start] = b'0' + (value % 10) as u8;
            value /= 10;
            if value == 0 {
                break;
            }
        }
        let mut len = count.len() - start;
        out[..len].copy_from_slice(&count[start..]);
        out[len] = b' ';
        len += 1;
        for byte in self.sha256 {
            out[len] = DIGITS[usize::from(byte >> 4)];
            out[len + 1] = DIGITS[usize::from(byte & 0xf)];
            len += 2;
        }
        out[len] = b'\n';
        len + 1
    }
}

impl fmt::Display for Answer {
    /// The answer line, newline included.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{} {}", self.bytes, self.sha256_hex())
    }
}

/// How a soak connection is planned to end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SoakEnd {
    /// Both sides finish cleanly.
    Clean,
    /// The client resets (SO_LINGER 0) part way; the server must see ECONNRESET.
    ClientReset,
    /// The server resets after `after` bytes (for `echo`: after the first message).
    UpstreamReset { after: u64 },
}

/// One request of the soak's load to its upstream servers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SoakRequest {
    /// An upload of `bytes`, answered with their answer line.
    Up { bytes: u64, end: SoakEnd },
    /// A download of the block's `offset..offset + bytes`.
    Down {
        bytes: u64,
        offset: u64,
        end: SoakEnd,
    },
    /// Every byte echoed until the client's end.
    Echo { end: SoakEnd },
    /// Read to the client's end, answer it, then send the block's `offset..offset + bytes`.
    Half {
        bytes: u64,
        offset: u64,
        end: SoakEnd,
    },
}

impl SoakRequest {
    /// The hello line, newline included.
    pub(crate) fn line(&self) -> String {
        let end = |end: &SoakEnd| match end {
            SoakEnd::Clean => "clean".to_owned(),
            SoakEnd::ClientReset => "client-reset".to_owned(),
            SoakEnd::UpstreamReset { after } => format!("upstream-reset {after}"),
        };
        let words = match self {
            SoakRequest::Up { bytes, end: e } => format!("up {bytes} {}", end(e)),
            SoakRequest::Down {
                bytes,
                offset,
                end: e,
            } => {
                format!("down {bytes} {offset} {}", end(e))
            }
            SoakRequest::Echo { end: e } => format!("echo {}", end(e)),
            SoakRequest::Half {
                bytes,
                offset,
                end: e,
            } => {
                format!("half {bytes} {offset} {}", end(e))
            }
        };
        format!("SPLICEWAY-BENCH soak {words}\n")
    }

    /// Parses a hello line (with or without its newline).
    pub(crate) fn parse(line: &str) -> Result<SoakRequest, String> {
        let bad = || format!("bad soak request {line:?}");
        let rest = line
            .strip_suffix('\n')
            .unwrap_or(line)
            .strip_prefix("SPLICEWAY-BENCH soak ")
            .ok_or_else(bad)?;
        let words: Vec<&str> = rest.split(' ').collect();
        let number = |word: &str| -> Result<u64, String> {
            if word.is_empty() || !word.bytes().all(|b| b.is_ascii_digit()) {
                return Err(bad());
            }
            word.parse().map_err(|_| bad())
        };
        let end = |words: &[&str]| -> Result<SoakEnd, String> {
            match words {
                ["clean"] => Ok(SoakEnd::Clean),
                ["client-reset"] => Ok(SoakEnd::ClientReset),
                ["upstream-reset", after] => Ok(SoakEnd::UpstreamReset {
                    after: number(after)?,
                }),
                _ => Err(bad()),
            }
        };
        match words.as_slice() {
            ["up", bytes, e @ ..] => Ok(SoakRequest::Up {
                bytes: number(bytes)?,
                end: end(e)?,
            }),
            ["down", bytes, offset, e @ ..] => Ok(SoakRequest::Down {
                bytes: number(bytes)?,
                offset: number(offset)?,
                end: end(e)?,
            }),
            ["echo", e @ ..] => Ok(SoakRequest::Echo { end: end(e)? }),
            ["half", bytes, offset, e @ ..] => Ok(SoakRequest::Half {
                bytes: number(bytes)?,
                offset: number(offset)?,
                end: end(e)?,
            }),
            _ => Err(bad()),
        }
    }
}

/// Lowercase hex of some bytes.
pub(crate) fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes
        .iter()
        .fold(String::with_capacity(2 * bytes.len()), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    const EMPTY: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    #[test]
    fn round_trip() {
        let line = format!("0 {EMPTY}\n");
        let answer = Answer::parse(&line).unwrap();
        assert_eq!(answer.bytes, 0);
        assert_eq!(answer.to_string(), line);
        assert!(answer.to_string().len() <= MAX_ANSWER_BYTES);
        for bytes in [0, 7, 8 << 20, u64::MAX] {
            let answer = Answer {
                bytes,
                sha256: [0xA5; DIGEST_BYTES],
            };
            let mut out = [0u8; MAX_ANSWER_BYTES];
            let len = answer.encode(&mut out);
            assert_eq!(&out[..len], answer.to_string().as_bytes());
        }
    }

    #[test]
    fn hello_lines() {
        let line = Hello::Echo.line();
        assert_eq!(
            Opening::classify(line.as_bytes()),
            Opening::Hello(Hello::Echo, line.len())
        );
        let mut with_data = line.clone().into_bytes();
        with_data.extend_from_slice(b"ping");
        assert_eq!(
            Opening::classify(&with_data),
            Opening::Hello(Hello::Echo, line.len())
        );
        for cut in 0..line.len() {
            assert_eq!(
                Opening::classify(&line.as_bytes()[..cut]),
                Opening::NeedMore,
                "cut at {cut}"
            );
        }
        assert_eq!(Opening::classify(b"SPLICEWAX"), Opening::Upload);
        assert_eq!(Opening::classify(&[0x16, 3, 1]), Opening::Upload);
        assert!(matches!(
            Opening::classify(b"SPLICEWAY-BENCH dance\n"),
            Opening::Refused(_)
        ));
        assert!(matches!(
            Opening::classify(&[b"SPLICEWAY-BENCH ".as_slice(), &[b'x'; 60]].concat()),
            Opening::Refused(_)
        ));
    }

    #[test]
    fn parts_hello_lines() {
        let hello = Hello::Parts {
            part_bytes: 8 << 20,
        };
        let line = hello.line();
        assert_eq!(line, "SPLICEWAY-BENCH parts 8388608\n");
        assert_eq!(
            Opening::classify(line.as_bytes()),
            Opening::Hello(hello, line.len())
        );
        let mut with_data = line.clone().into_bytes();
        with_data.extend_from_slice(&[0xAB; 100]);
        assert_eq!(
            Opening::classify(&with_data),
            Opening::Hello(hello, line.len())
        );
        for cut in 0..line.len() {
            assert_eq!(
                Opening::classify(&line.as_bytes()[..cut]),
                Opening::NeedMore,
                "cut at {cut}"
            );
        }
        let longest = Hello::Parts {
            part_bytes: u64::MAX,
        };
        assert!(longest.line().len() <= MAX_HELLO_BYTES);
        assert_eq!(
            Opening::classify(longest.line().as_bytes()),
            Opening::Hello(longest, longest.line().len())
        );
        for bad in [
            "SPLICEWAY-BENCH parts\n",
            "SPLICEWAY-BENCH parts 0\n",
            "SPLICEWAY-BENCH parts -1\n",
            "SPLICEWAY-BENCH parts +5\n",
            "SPLICEWAY-BENCH parts 8MiB\n",
            "SPLICEWAY-BENCH parts 1 2\n",
            "SPLICEWAY-BENCH parts 99999999999999999999999\n",
        ] {
            assert!(
                matches!(Opening::classify(bad.as_bytes()), Opening::Refused(_)),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn rejects_malformed_lines() {
        assert!(Answer::parse("").is_err());
        assert!(Answer::parse("12").is_err());
        assert!(Answer::parse(&format!("x {EMPTY}")).is_err());
        assert!(Answer::parse("1 abc").is_err());
        assert!(Answer::parse(&format!("1 {}", "g".repeat(64))).is_err());
    }

    #[test]
    fn soak_requests_round_trip_and_bad_ones_are_refused() {
        let requests = [
            SoakRequest::Up {
                bytes: 8 << 20,
                end: SoakEnd::Clean,
            },
            SoakRequest::Up {
                bytes: 32 << 20,
                end: SoakEnd::ClientReset,
            },
            SoakRequest::Up {
                bytes: 32 << 20,
                end: SoakEnd::UpstreamReset { after: 65536 },
            },
            SoakRequest::Down {
                bytes: 1,
                offset: 7,
                end: SoakEnd::Clean,
            },
            SoakRequest::Echo {
                end: SoakEnd::UpstreamReset { after: 1 },
            },
            SoakRequest::Half {
                bytes: 48 << 20,
                offset: 0,
                end: SoakEnd::ClientReset,
            },
        ];
        for request in requests {
            let line = request.line();
            assert!(line.starts_with("SPLICEWAY-BENCH soak ") && line.ends_with('\n'));
            assert_eq!(SoakRequest::parse(&line), Ok(request), "{line:?}");
        }
        assert_eq!(
            SoakRequest::Down {
                bytes: 5,
                offset: 6,
                end: SoakEnd::UpstreamReset { after: 2 }
            }
            .line(),
            "SPLICEWAY-BENCH soak down 5 6 upstream-reset 2\n"
        );
        for bad in [
            "SPLICEWAY-BENCH soak up 5\n",
            "SPLICEWAY-BENCH soak up +5 clean\n",
            "SPLICEWAY-BENCH soak up 5 reset\n",
            "SPLICEWAY-BENCH soak sideways clean\n",
            "SPLICEWAY-BENCH echo\n",
            "UP 5 clean\n",
        ] {
            assert!(SoakRequest::parse(bad).is_err(), "{bad:?}");
        }
    }
}
