//! TLS ClientHello parsing for SNI routing.
//!
//! To route a TLS connection by the name the client asked for, the relay looks at the client's
//! first bytes with `MSG_PEEK`: nothing is consumed, so after the routing decision the very same
//! bytes are spliced to the upstream and TLS stays end to end (the relay never holds a key or a
//! certificate). This module turns those peeked bytes into a routing answer:
//!
//! - [`parse_client_hello`] reads the TLS record layer and the ClientHello handshake message
//!   and returns the `server_name` (SNI) host name and the ALPN protocols, or
//!   [`Peek::Incomplete`] when the hello has not fully arrived yet (it may come in several TCP
//!   segments and, rarely, in several TLS records), or an [`SniError`] when the bytes are not a
//!   ClientHello the relay can route.
//! - [`NamePattern`] is one entry of a table of allowed names (`example.com`,
//!   `*.s3.ap-northeast-1.amazonaws.com`) to match the parsed name against.
//!
//! The parser is written for hostile input: it never panics, never reads outside the lengths
//! that the record and handshake headers give, allocates only once the whole hello is present
//! (and then at most the size of the input), and bounds everything by
//! [`MAX_CLIENT_HELLO_BYTES`]. It checks the structure it walks through (lengths, the host
//! name's syntax, duplicate extensions) but does not judge cryptographic content such as cipher
//! suites or key shares: that is the upstream server's job, which still sees every byte.
//!
//! With Encrypted Client Hello the name seen here is the outer, public name; the relay can only
//! route on that.

use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;

/// The most bytes the relay will peek while waiting for a ClientHello: one full TLS record
/// (5-byte header and 2^14 bytes of payload).
///
/// Peeking keeps the bytes in the socket's receive buffer, so this also bounds what one
/// not-yet-routed connection can make the kernel hold on its behalf. Real ClientHellos are a
/// few hundred bytes to about 2 KiB (post-quantum key shares included), far below it; a hello
/// that would need more is refused with [`SniError::TooLarge`] rather than buffered.
pub const MAX_CLIENT_HELLO_BYTES: usize = 16 * 1024 + 5;

/// TLS record header: content type, legacy version (2), length (2).
const RECORD_HEADER_LEN: usize = 5;
/// Handshake header: message type, length (3).
const HANDSHAKE_HEADER_LEN: usize = 4;
/// Largest plaintext record payload allowed by RFC 8446 section 5.1.
const MAX_RECORD_PAYLOAD: usize = 1 << 14;
const CONTENT_TYPE_HANDSHAKE: u8 = 22;
const HANDSHAKE_CLIENT_HELLO: u8 = 1;
const EXTENSION_SERVER_NAME: u16 = 0;
const EXTENSION_ALPN: u16 = 16;
const NAME_TYPE_HOST_NAME: u8 = 0;
const MAX_SESSION_ID_LEN: usize = 32;
const RANDOM_LEN: usize = 32;
/// Longest DNS name in text form without the trailing dot (RFC 1035, 255 octets on the wire).
const MAX_HOST_NAME_LEN: usize = 253;
const MAX_LABEL_LEN: usize = 63;

/// Result of looking at the first bytes of a connection.
///
/// The relay peeks whatever has arrived so far; a ClientHello split over several TCP segments
/// is normal, so "not enough bytes yet" is an answer, not an error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Peek {
    /// The whole ClientHello was present and parsed.
    Complete(ClientHello),
    /// The bytes so far are a valid beginning of a ClientHello but it has not all arrived.
    Incomplete {
        /// Total number of bytes (counted from the start of the connection, not in addition to
        /// the input) that must have arrived before calling [`parse_client_hello`] again can
        /// give a different answer for a well-formed hello. It is a lower bound, always at
        /// least the input length plus one, and never more than [`MAX_CLIENT_HELLO_BYTES`], so
        /// the relay can use it to size its next peek and to avoid waking up for each segment.
        needed: usize,
    },
}

/// What the relay needs from a client's ClientHello to route the connection.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct ClientHello {
    /// The host name from the `server_name` extension (type 0, `host_name` entry), lower-cased
    /// and without a trailing dot, so that it can be compared and logged as is; `None` when the
    /// client sent no `server_name` extension or one without a `host_name` entry (for instance
    /// when connecting by IP address). It has been validated: 1 to 253 ASCII letters, digits,
    /// `-`, `_` and `.`, non-empty labels of at most 63 bytes, and not an IP address.
    pub server_name: Option<String>,
    /// The protocols from the ALPN extension (type 16), in the client's order of preference,
    /// so that a route can pick an upstream by protocol (`h2`, `http/1.1`, `acme-tls/1`).
    /// Protocol names that are not UTF-8 (GREASE values, for instance) are left out: nothing
    /// meaningful can be routed on them. Empty when the client sent no ALPN extension.
    pub alpn: Vec<String>,
}

/// Why the first bytes of a connection cannot be routed by SNI.
///
/// The variants separate "this is not TLS at all" (the relay may want a different route or a
/// clear log line) from "this is TLS but broken or hostile" (the connection should be closed).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SniError {
    /// The first record is not a TLS handshake record (content type 22) with a plausible
    /// version (3.0 to 3.4): plain HTTP, SSLv2, or another protocol on a TLS port.
    #[error("not a TLS handshake (first record is not a TLS 3.x handshake record)")]
    NotTls,
    /// The first handshake message is not a ClientHello, so the peer is not a TLS client.
    #[error("first TLS handshake message is not a ClientHello")]
    NotClientHello,
    /// The bytes look like a ClientHello but break its structure; the text says which part.
    #[error("malformed TLS ClientHello: {0}")]
    Malformed(&'static str),
    /// The ClientHello (with its record headers) would need more than
    /// [`MAX_CLIENT_HELLO_BYTES`] bytes, more than the relay is willing to peek.
    #[error("TLS ClientHello is larger than {MAX_CLIENT_HELLO_BYTES} bytes")]
    TooLarge,
}

/// Parses the first bytes received on a connection as a TLS ClientHello.
///
/// `input` is everything peeked so far, from the first byte of the connection. Returns
/// [`Peek::Incomplete`] while the bytes are a valid prefix of a ClientHello (never an error
/// for a prefix of a valid hello, and never [`Peek::Complete`] before the whole handshake
/// message is there), [`Peek::Complete`] once it is, or an error as soon as the bytes cannot be
/// one. The handshake message may be spread over several consecutive handshake records; bytes
/// after the end of the ClientHello are ignored.
///
/// # Errors
///
/// [`SniError::NotTls`], [`SniError::NotClientHello`], [`SniError::Malformed`] or
/// [`SniError::TooLarge`]; see each variant.
pub fn parse_client_hello(input: &[u8]) -> Result<Peek, SniError> {
    match reassemble(input)? {
        Assembled::Need(needed) => Ok(Peek::Incomplete { needed }),
        Assembled::Done(message) => parse_handshake(&message).map(Peek::Complete),
    }
}

/// Outcome of collecting the ClientHello handshake message out of its records.
enum Assembled<'a> {
    /// The whole handshake message, header included: borrowed from the input when it came in
    /// one record, copied together when it came in several.
    Done(Cow<'a, [u8]>),
    /// Not all there yet; the payload is [`Peek::Incomplete::needed`].
    Need(usize),
}

/// Walks the records at the start of `input` and collects the first handshake message.
///
/// Nothing is allocated until the whole message is known to be present, so a length field
/// that promises a large message costs nothing.
fn reassemble(input: &[u8]) -> Result<Assembled<'_>, SniError> {
    // Offset of the record being looked at.
    let mut pos = 0;
    // The handshake header, gathered byte by byte because even it may be split across records.
    let mut header = [0u8; HANDSHAKE_HEADER_LEN];
    // Length of the whole handshake message (header included), once its header is known.
    let mut total: Option<usize> = None;
    // Handshake bytes taken from complete records so far.
    let mut have = 0;
    let mut records = 0;
    loop {
        let rest = input.get(pos..).unwrap_or_default();
        check_record_prefix(rest, records == 0)?;
        // Handshake bytes still to come; at least one, since a finished message returns below.
        let remaining = total.unwrap_or(HANDSHAKE_HEADER_LEN) - have;
        let Some(&[_, _, _, len_hi, len_lo]) = rest.first_chunk::<RECORD_HEADER_LEN>() else {
            return incomplete(input, pos + RECORD_HEADER_LEN + remaining);
        };
        let len = usize::from(u16::from_be_bytes([len_hi, len_lo]));
        if len == 0 {
            return Err(SniError::Malformed("empty handshake record"));
        }
        if len > MAX_RECORD_PAYLOAD {
            return Err(SniError::Malformed("record longer than 2^14 bytes"));
        }
        let payload_start = pos + RECORD_HEADER_LEN;
        let present = rest.get(RECORD_HEADER_LEN..).unwrap_or_default();
        let present = present.get(..len).unwrap_or(present);

        if total.is_none() {
            let mut seen = have;
            for (slot, &byte) in header.iter_mut().skip(have).zip(present) {
                *slot = byte;
                seen += 1;
            }
            let [kind, len_a, len_b, len_c] = header;
            if seen >= 1 && kind != HANDSHAKE_CLIENT_HELLO {
                return Err(SniError::NotClientHello);
            }
            if seen == HANDSHAKE_HEADER_LEN {
                let body_len =
                    usize::from(len_a) << 16 | usize::from(len_b) << 8 | usize::from(len_c);
                let message_len = HANDSHAKE_HEADER_LEN + body_len;
                // Even in a single record the hello would not fit in what the relay peeks.
                if RECORD_HEADER_LEN + message_len > MAX_CLIENT_HELLO_BYTES {
                    return Err(SniError::TooLarge);
                }
                total = Some(message_len);
            }
        }

        // The part of this record's payload that belongs to the hello.
        let wanted = total.map_or(len, |total| (total - have).min(len));
        if present.len() < wanted {
            let after_record = total
                .unwrap_or(HANDSHAKE_HEADER_LEN)
                .saturating_sub(have + len);
            let needed = if after_record == 0 {
                payload_start + wanted
            } else {
                payload_start + len + RECORD_HEADER_LEN + after_record
            };
            return incomplete(input, needed);
        }
        have += wanted;
        records += 1;
        if total == Some(have) {
            return join_fragments(input, have, records);
        }
        pos = payload_start + len;
    }
}

/// Checks the bytes present of a record header (type and version) and says which error a bad
/// one is: on the first record it means the peer does not speak TLS at all; on a later one it
/// means a broken or hostile TLS client (RFC 8446 forbids interleaving other record types with
/// a handshake message's fragments).
fn check_record_prefix(rest: &[u8], first: bool) -> Result<(), SniError> {
    let content_type = rest.first().copied();
    let major = rest.get(1).copied();
    let minor = rest.get(2).copied();
    if content_type.is_some_and(|t| t != CONTENT_TYPE_HANDSHAKE) {
        return Err(if first {
            SniError::NotTls
        } else {
            SniError::Malformed("ClientHello continued in a record that is not a handshake record")
        });
    }
    if major.is_some_and(|m| m != 3) || minor.is_some_and(|m| m > 4) {
        return Err(if first {
            SniError::NotTls
        } else {
            SniError::Malformed("implausible record version")
        });
    }
    Ok(())
}

/// Turns a lower bound on the bytes needed into the answer, refusing hellos that would need
/// more than the relay peeks.
fn incomplete(input: &[u8], needed: usize) -> Result<Assembled<'_>, SniError> {
    if needed > MAX_CLIENT_HELLO_BYTES {
        return Err(SniError::TooLarge);
    }
    Ok(Assembled::Need(needed.max(input.len() + 1)))
}

/// Collects the `total` bytes of the handshake message from the first `records` records, whose
/// headers [`reassemble`] has already checked. Borrows when there is one record; otherwise
/// copies, allocating `total` bytes, which are all present in `input`.
fn join_fragments(input: &[u8], total: usize, records: usize) -> Result<Assembled<'_>, SniError> {
    const INTERNAL: SniError = SniError::Malformed("record walk out of step (parser bug)");
    if records == 1 {
        let message = input
            .get(RECORD_HEADER_LEN..RECORD_HEADER_LEN + total)
            .ok_or(INTERNAL)?;
        return Ok(Assembled::Done(Cow::Borrowed(message)));
    }
    let mut message = Vec::with_capacity(total);
    let mut pos = 0;
    while message.len() < total {
        let rest = input.get(pos..).ok_or(INTERNAL)?;
        let &[_, _, _, len_hi, len_lo] = rest.first_chunk::<RECORD_HEADER_LEN>().ok_or(INTERNAL)?;
        let len = usize::from(u16::from_be_bytes([len_hi, len_lo]));
        let wanted = (total - message.len()).min(len);
        let fragment = rest
            .get(RECORD_HEADER_LEN..RECORD_HEADER_LEN + wanted)
            .ok_or(INTERNAL)?;
        message.extend_from_slice(fragment);
        pos += RECORD_HEADER_LEN + len;
    }
    Ok(Assembled::Done(Cow::Owned(message)))
}

/// A bounds-checked reader over a byte slice: every read either returns bytes that are there
/// or a [`SniError::Malformed`] naming the field, so the parser cannot index out of bounds.
#[derive(Debug)]
struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        Reader { rest: bytes }
    }

    fn is_empty(&self) -> bool {
        self.rest.is_empty()
    }

    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], SniError> {
        let (taken, rest) = self
            .rest
            .split_at_checked(n)
            .ok_or(SniError::Malformed(what))?;
        self.rest = rest;
        Ok(taken)
    }

    fn array<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N], SniError> {
        let (taken, rest) = self
            .rest
            .split_first_chunk::<N>()
            .ok_or(SniError::Malformed(what))?;
        self.rest = rest;
        Ok(*taken)
    }

    fn u8(&mut self, what: &'static str) -> Result<u8, SniError> {
        let [byte] = self.array(what)?;
        Ok(byte)
    }

    fn u16(&mut self, what: &'static str) -> Result<u16, SniError> {
        self.array(what).map(u16::from_be_bytes)
    }

    fn u24(&mut self, what: &'static str) -> Result<usize, SniError> {
        let [a, b, c] = self.array(what)?;
        Ok(usize::from(a) << 16 | usize::from(b) << 8 | usize::from(c))
    }

    /// A TLS vector with a one-byte length prefix (`opaque x<0..2^8-1>`).
    fn vec_u8(&mut self, what: &'static str) -> Result<&'a [u8], SniError> {
        let len = usize::from(self.u8(what)?);
        self.take(len, what)
    }

    /// A TLS vector with a two-byte length prefix (`opaque x<0..2^16-1>`).
    fn vec_u16(&mut self, what: &'static str) -> Result<&'a [u8], SniError> {
        let len = usize::from(self.u16(what)?);
        self.take(len, what)
    }
}

/// Parses a complete ClientHello handshake message (header included), RFC 8446 section 4.1.2
/// (the same layout as TLS 1.0 to 1.2, whose extensions block is optional).
fn parse_handshake(message: &[u8]) -> Result<ClientHello, SniError> {
    let mut reader = Reader::new(message);
    if reader.u8("truncated handshake header")? != HANDSHAKE_CLIENT_HELLO {
        return Err(SniError::NotClientHello);
    }
    let body_len = reader.u24("truncated handshake header")?;
    let body = reader.take(body_len, "handshake length overruns the message")?;

    let mut body = Reader::new(body);
    let [major, _minor] = body.array::<2>("truncated client version")?;
    if major != 3 {
        return Err(SniError::Malformed("client version is not 3.x"));
    }
    body.take(RANDOM_LEN, "truncated random")?;
    let session_id = body.vec_u8("session id overruns the ClientHello")?;
    if session_id.len() > MAX_SESSION_ID_LEN {
        return Err(SniError::Malformed("session id longer than 32 bytes"));
    }
    let cipher_suites = body.vec_u16("cipher suites overrun the ClientHello")?;
    if cipher_suites.is_empty() || cipher_suites.len() % 2 != 0 {
        return Err(SniError::Malformed(
            "cipher suite list empty or of odd length",
        ));
    }
    let compression = body.vec_u8("compression methods overrun the ClientHello")?;
    if compression.is_empty() {
        return Err(SniError::Malformed("no compression method"));
    }

    let mut hello = ClientHello::default();
    if body.is_empty() {
        // A TLS 1.0-1.2 hello may end here: no extensions, hence no SNI.
        return Ok(hello);
    }
    let extensions = body.vec_u16("extensions overrun the ClientHello")?;
    if !body.is_empty() {
        return Err(SniError::Malformed("bytes after the extensions block"));
    }
    parse_extensions(extensions, &mut hello)?;
    Ok(hello)
}

/// Walks the extensions block, filling in the ones the relay uses and skipping the others.
///
/// Duplicate extensions of any type are refused (RFC 8446 section 4.2): with two
/// `server_name` extensions the relay and the upstream could act on different names.
fn parse_extensions(extensions: &[u8], hello: &mut ClientHello) -> Result<(), SniError> {
    // One bit per extension type: 8 KiB on the stack, no allocation, O(1) per extension.
    let mut seen = [0u64; 1 << 10];
    let mut reader = Reader::new(extensions);
    while !reader.is_empty() {
        let kind = reader.u16("truncated extension type")?;
        let data = reader.vec_u16("extension overruns the extensions block")?;
        let bit = 1u64 << (kind % 64);
        if let Some(word) = seen.get_mut(usize::from(kind / 64)) {
            if *word & bit != 0 {
                return Err(SniError::Malformed("duplicate extension"));
            }
            *word |= bit;
        }
        match kind {
            EXTENSION_SERVER_NAME => hello.server_name = parse_server_name(data)?,
            EXTENSION_ALPN => hello.alpn = parse_alpn(data)?,
            _ => {}
        }
    }
    Ok(())
}

/// Parses the `server_name` extension's data (RFC 6066 section 3) and returns its `host_name`.
fn parse_server_name(data: &[u8]) -> Result<Option<String>, SniError> {
    let mut reader = Reader::new(data);
    let list = reader.vec_u16("server name list overruns the extension")?;
    if !reader.is_empty() {
        return Err(SniError::Malformed("bytes after the server name list"));
    }
    if list.is_empty() {
        return Err(SniError::Malformed("empty server name list"));
    }
    let mut host_name = None;
    let mut entries = Reader::new(list);
    while !entries.is_empty() {
        let name_type = entries.u8("truncated server name type")?;
        // Every name type defined so far, and all that implementations accept, is a 16-bit
        // length-prefixed opaque value, so unknown types can be skipped the same way.
        let name = entries.vec_u16("server name overruns the list")?;
        if name_type != NAME_TYPE_HOST_NAME {
            continue;
        }
        if host_name.is_some() {
            return Err(SniError::Malformed(
                "more than one host_name in server_name",
            ));
        }
        host_name = Some(normalize_host_name(name).map_err(SniError::Malformed)?);
    }
    Ok(host_name)
}

/// Parses the ALPN extension's data (RFC 7301 section 3.1).
fn parse_alpn(data: &[u8]) -> Result<Vec<String>, SniError> {
    let mut reader = Reader::new(data);
    let list = reader.vec_u16("ALPN list overruns the extension")?;
    if !reader.is_empty() {
        return Err(SniError::Malformed("bytes after the ALPN list"));
    }
    if list.is_empty() {
        return Err(SniError::Malformed("empty ALPN list"));
    }
    let mut protocols = Vec::new();
    let mut entries = Reader::new(list);
    while !entries.is_empty() {
        let protocol = entries.vec_u8("ALPN protocol overruns the list")?;
        if protocol.is_empty() {
            return Err(SniError::Malformed("empty ALPN protocol name"));
        }
        if let Ok(protocol) = std::str::from_utf8(protocol) {
            protocols.push(protocol.to_owned());
        }
    }
    Ok(protocols)
}

/// Validates a DNS host name as the relay accepts it in SNI and in [`NamePattern`]s, and
/// returns it lower-cased without a trailing dot.
///
/// Accepted: 1 to 253 bytes (after dropping one trailing dot) of ASCII letters, digits, `-`,
/// `_` and `.`, in non-empty labels of at most 63 bytes, not an IPv4 address. Underscores are
/// allowed because real names use them (`_acme-challenge`, some internal hosts) even though
/// host names in the strict sense do not. IP literals are refused because RFC 6066 forbids
/// them in SNI; a name whose last label is numeric (all digits, or `0x` and hex digits) is
/// refused too, because resolvers and URL parsers read such names (`127.1`, `0x7f000001`) as
/// IPv4 addresses. IPv6 literals cannot pass the character check.
fn normalize_host_name(name: &[u8]) -> Result<String, &'static str> {
    let name = name.strip_suffix(b".").unwrap_or(name);
    if name.is_empty() {
        return Err("empty host name");
    }
    if name.len() > MAX_HOST_NAME_LEN {
        return Err("host name longer than 253 bytes");
    }
    let mut last_label: &[u8] = &[];
    for label in name.split(|&byte| byte == b'.') {
        if label.is_empty() {
            return Err("empty label in host name");
        }
        if label.len() > MAX_LABEL_LEN {
            return Err("host name label longer than 63 bytes");
        }
        if !is_valid_label(label) {
            return Err("host name has a character other than letters, digits, '-', '_', '.'");
        }
        last_label = label;
    }
    let hex = last_label
        .strip_prefix(b"0x")
        .or_else(|| last_label.strip_prefix(b"0X"));
    let numeric = last_label.iter().all(u8::is_ascii_digit)
        || hex.is_some_and(|hex| hex.iter().all(u8::is_ascii_hexdigit));
    if numeric {
        return Err("host name is an IP address literal");
    }
    String::from_utf8(name.to_ascii_lowercase()).map_err(|_| "host name is not ASCII")
}

/// Whether `label` is a non-empty DNS label of at most 63 letters, digits, `-` and `_`.
fn is_valid_label(label: &[u8]) -> bool {
    (1..=MAX_LABEL_LEN).contains(&label.len())
        && label
            .iter()
            .all(|&byte| byte.is_ascii_alphanumeric() || byte == b'-' || byte == b'_')
}

/// One entry of a table of allowed server names: an exact name (`example.com`) or a wildcard
/// (`*.s3.ap-northeast-1.amazonaws.com`).
///
/// The relay uses a list of these to decide which names a route accepts, so that it does not
/// become an open relay to any host a client names. A wildcard matches one or more labels in
/// front of its suffix: `*.s3.ap-northeast-1.amazonaws.com` matches
/// `bucket.s3.ap-northeast-1.amazonaws.com` and `a.b.s3.ap-northeast-1.amazonaws.com` but not
/// `s3.ap-northeast-1.amazonaws.com` itself (list that separately if wanted). Matching is
/// case-insensitive and ignores one trailing dot on the client's name.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct NamePattern {
    /// Whether the pattern was `*.` + `name`.
    wildcard: bool,
    /// The exact name or the wildcard's suffix, lower-cased, without a trailing dot.
    name: String,
}

impl NamePattern {
    /// Parses a pattern as written in a configuration file: `example.com` or `*.example.com`.
    ///
    /// Refuses, with a message fit for the user, what could only be a mistake: an empty
    /// pattern, `*` alone (it would allow every name; leave the table out instead), a `*`
    /// anywhere but as the whole first label (`*foo.com`, `a.*.com`: partial wildcards are
    /// not supported), and names that are not valid DNS host names as described on
    /// [`ClientHello::server_name`] (such a pattern could never match). One trailing dot is
    /// accepted and dropped.
    ///
    /// # Errors
    ///
    /// A message naming the pattern and the problem.
    pub fn parse(pattern: &str) -> Result<NamePattern, String> {
        if pattern.is_empty() {
            return Err("empty server name pattern".to_owned());
        }
        if pattern == "*" || pattern == "*." {
            return Err(format!(
                "server name pattern {pattern:?} would match every name; \
                 give a suffix such as \"*.example.com\""
            ));
        }
        let (wildcard, name) = match pattern.strip_prefix("*.") {
            Some(suffix) => (true, suffix),
            None => (false, pattern),
        };
        if name.contains('*') {
            return Err(format!(
                "server name pattern {pattern:?}: '*' is only allowed as the whole first label, \
                 as in \"*.example.com\""
            ));
        }
        let name = normalize_host_name(name.as_bytes())
            .map_err(|problem| format!("server name pattern {pattern:?}: {problem}"))?;
        Ok(NamePattern { wildcard, name })
    }

    /// Whether `name` (typically [`ClientHello::server_name`]) is allowed by this pattern.
    ///
    /// Case-insensitive; one trailing dot on `name` is ignored. A wildcard needs at least one
    /// label in front of its suffix, and those labels must be valid (letters, digits, `-`,
    /// `_`, at most 63 bytes), so a name that did not come from [`parse_client_hello`] cannot
    /// slip odd bytes through a wildcard.
    #[must_use]
    pub fn matches(&self, name: &str) -> bool {
        let name = name.as_bytes();
        let name = name.strip_suffix(b".").unwrap_or(name);
        let pattern = self.name.as_bytes();
        if !self.wildcard {
            return name.eq_ignore_ascii_case(pattern);
        }
        let Some(prefix_len) = name.len().checked_sub(pattern.len() + 1) else {
            return false;
        };
        let Some((prefix, tail)) = name.split_at_checked(prefix_len) else {
            return false;
        };
        let Some((&b'.', suffix)) = tail.split_first() else {
            return false;
        };
        suffix.eq_ignore_ascii_case(pattern)
            && !prefix.is_empty()
            && prefix.split(|&byte| byte == b'.').all(is_valid_label)
    }

    /// Whether this is a `*.suffix` pattern, for callers that rank exact names before
    /// wildcards or report them differently.
    #[must_use]
    pub fn is_wildcard(&self) -> bool {
        self.wildcard
    }
}

/// Writes the pattern in the form [`NamePattern::parse`] accepts (normalized: lower-case, no
/// trailing dot), so that logs and error messages show what is actually matched.
impl fmt::Display for NamePattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.wildcard {
            write!(f, "*.{}", self.name)
        } else {
            f.write_str(&self.name)
        }
    }
}

/// Same as [`NamePattern::parse`], for `str::parse` and configuration code built on `FromStr`.
impl FromStr for NamePattern {
    type Err = String;

    fn from_str(pattern: &str) -> Result<Self, Self::Err> {
        NamePattern::parse(pattern)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::collection::vec;
    use proptest::prelude::*;
    use proptest::sample::Index;

    /// A real ClientHello: what `openssl s_client -connect 127.0.0.1:PORT -servername
    /// Example.COM -alpn h2,http/1.1` (OpenSSL 3.0.19) sent, captured on loopback. One record
    /// (`16 0301 014a`) holding one ClientHello (`01 000146`): version 0303, random, a 32-byte
    /// session id, 31 cipher suites, null compression, then 0xbf bytes of extensions:
    /// server_name (`0000 0010 000e 00 000b "Example.COM"`), ec_point_formats, supported_groups,
    /// session_ticket, ALPN (`0010 000e 000c 02 "h2" 08 "http/1.1"`), encrypt_then_mac,
    /// extended_master_secret, signature_algorithms, supported_versions, psk_key_exchange_modes
    /// and key_share (X25519).
    const OPENSSL_HELLO_HEX: &str = concat!(
        "160301014a010001460303840debd7a242f445d03379c158bbb1622f733c8bca",
        "ce8cb92488514726aaeb9a20300f72ea5bcd18e6a0466eeb376d37c840f6fa30",
        "fb02fbd5a61506cbcc925980003e130213031301c02cc030009fcca9cca8ccaa",
        "c02bc02f009ec024c028006bc023c0270067c00ac0140039c009c0130033009d",
        "009c003d003c0035002f00ff010000bf00000010000e00000b4578616d706c65",
        "2e434f4d000b000403000102000a00160014001d0017001e0019001801000101",
        "010201030104002300000010000e000c02683208687474702f312e3100160000",
        "00170000000d002a0028040305030603080708080809080a080b080408050806",
        "040105010601030303010302040205020602002b000908030403030302030100",
        "2d00020101003300260024001d00208036903780c1420898e68dc2a73e530d03",
        "dde164e3c7711d4536a218bf52e44d",
    );

    fn openssl_hello() -> Vec<u8> {
        (0..OPENSSL_HELLO_HEX.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&OPENSSL_HELLO_HEX[i..i + 2], 16).unwrap())
            .collect()
    }

    // A tiny ClientHello builder, so that tests can vary names, extensions and record splits.

    fn be16(n: usize) -> [u8; 2] {
        u16::try_from(n).unwrap().to_be_bytes()
    }

    fn extension(kind: u16, data: &[u8]) -> Vec<u8> {
        let mut out = kind.to_be_bytes().to_vec();
        out.extend(be16(data.len()));
        out.extend(data);
        out
    }

    /// A `server_name` extension with the given (name type, name) entries.
    fn server_name_ext(entries: &[(u8, &[u8])]) -> Vec<u8> {
        let mut list = Vec::new();
        for (kind, name) in entries {
            list.push(*kind);
            list.extend(be16(name.len()));
            list.extend(*name);
        }
        let mut data = be16(list.len()).to_vec();
        data.extend(list);
        extension(EXTENSION_SERVER_NAME, &data)
    }

    fn alpn_ext(protocols: &[&[u8]]) -> Vec<u8> {
        let mut list = Vec::new();
        for protocol in protocols {
            list.push(u8::try_from(protocol.len()).unwrap());
            list.extend(*protocol);
        }
        let mut data = be16(list.len()).to_vec();
        data.extend(list);
        extension(EXTENSION_ALPN, &data)
    }

    /// A ClientHello handshake message (header included); `None` leaves out the extensions
    /// block entirely, as a TLS 1.0-1.2 client may.
    fn hello_message(extensions: Option<&[Vec<u8>]>) -> Vec<u8> {
        let mut body = vec![3, 3];
        body.extend([0x11; RANDOM_LEN]);
        body.push(32);
        body.extend([0x22; 32]);
        body.extend([0, 6, 0x13, 0x01, 0x13, 0x02, 0xc0, 0x2f]);
        body.extend([1, 0]);
        if let Some(extensions) = extensions {
            let block = extensions.concat();
            body.extend(be16(block.len()));
            body.extend(block);
        }
        let len = u32::try_from(body.len()).unwrap().to_be_bytes();
        let mut message = vec![HANDSHAKE_CLIENT_HELLO, len[1], len[2], len[3]];
        message.extend(body);
        message
    }

    /// Wraps `message` in handshake records, starting a new record at each offset in `cuts`
    /// (strictly increasing, inside the message).
    fn records(message: &[u8], cuts: &[usize]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut start = 0;
        for &end in cuts.iter().chain([message.len()].iter()) {
            out.extend([CONTENT_TYPE_HANDSHAKE, 3, 1]);
            out.extend(be16(end - start));
            out.extend(&message[start..end]);
            start = end;
        }
        out
    }

    /// A typical modern hello for `name`: SNI, supported_versions, ALPN.
    fn named_message(name: &str) -> Vec<u8> {
        hello_message(Some(&[
            server_name_ext(&[(NAME_TYPE_HOST_NAME, name.as_bytes())]),
            extension(43, &[2, 3, 4]),
            alpn_ext(&[b"h2", b"http/1.1"]),
        ]))
    }

    fn complete(input: &[u8]) -> ClientHello {
        match parse_client_hello(input) {
            Ok(Peek::Complete(hello)) => hello,
            other => panic!("expected a complete hello, got {other:?}"),
        }
    }

    fn name_of(input: &[u8]) -> Option<String> {
        complete(input).server_name
    }

    fn error_of(input: &[u8]) -> SniError {
        match parse_client_hello(input) {
            Err(error) => error,
            other => panic!("expected an error, got {other:?}"),
        }
    }

    fn sni_message(name: &[u8]) -> Vec<u8> {
        hello_message(Some(&[server_name_ext(&[(NAME_TYPE_HOST_NAME, name)])]))
    }

    /// Every proper prefix of `full` must be Incomplete, with a `needed` that is more than the
    /// prefix and no more than the whole hello (it is a lower bound).
    fn assert_prefixes_incomplete(full: &[u8]) {
        for n in 0..full.len() {
            match parse_client_hello(&full[..n]) {
                Ok(Peek::Incomplete { needed }) => assert!(
                    needed > n && needed <= full.len(),
                    "prefix {n} of {}: needed {needed}",
                    full.len()
                ),
                other => panic!("prefix {n} of {}: {other:?}", full.len()),
            }
        }
    }

    #[test]
    fn openssl_hello_parses() {
        let hello = complete(&openssl_hello());
        assert_eq!(hello.server_name.as_deref(), Some("example.com"));
        assert_eq!(hello.alpn, ["h2", "http/1.1"]);
    }

    #[test]
    fn every_prefix_of_openssl_hello_is_incomplete() {
        assert_prefixes_incomplete(&openssl_hello());
    }

    #[test]
    fn openssl_hello_split_across_two_and_three_records() {
        let message = &openssl_hello()[RECORD_HEADER_LEN..];
        for cuts in [
            &[100][..],
            &[1],
            &[3],
            &[4],
            &[message.len() - 1],
            &[2, 200],
            &[60, 61],
            &[1, 2],
        ] {
            let input = records(message, cuts);
            assert_eq!(name_of(&input).as_deref(), Some("example.com"), "{cuts:?}");
            assert_prefixes_incomplete(&input);
        }
    }

    #[test]
    fn builder_hello_split_across_records() {
        let message = named_message("a.example.net");
        assert_eq!(
            name_of(&records(&message, &[10])).as_deref(),
            Some("a.example.net")
        );
        assert_eq!(
            name_of(&records(&message, &[2, 50])).as_deref(),
            Some("a.example.net")
        );
        let one_byte_records: Vec<usize> = (1..message.len()).collect();
        let input = records(&message, &one_byte_records);
        assert_eq!(complete(&input).alpn, ["h2", "http/1.1"]);
        assert_prefixes_incomplete(&input);
    }

    #[test]
    fn incomplete_needed_values() {
        let needed = |input: &[u8]| match parse_client_hello(input) {
            Ok(Peek::Incomplete { needed }) => needed,
            other => panic!("{other:?}"),
        };
        // Record header and handshake header.
        assert_eq!(needed(b""), 9);
        assert_eq!(needed(&[0x16, 3, 1]), 9);
        // Once the handshake header is known: the whole single-record hello.
        let full = records(&sni_message(b"example.com"), &[]);
        assert_eq!(needed(&full[..9]), full.len());
        assert_eq!(needed(&full[..full.len() - 1]), full.len());
    }

    #[test]
    fn no_server_name_extension() {
        let hello = complete(&records(
            &hello_message(Some(&[alpn_ext(&[b"http/1.1"])])),
            &[],
        ));
        assert_eq!(hello.server_name, None);
        assert_eq!(hello.alpn, ["http/1.1"]);
        // No extensions block at all, and an empty one.
        assert_eq!(name_of(&records(&hello_message(None), &[])), None);
        assert_eq!(name_of(&records(&hello_message(Some(&[])), &[])), None);
        // A server_name extension with only an unknown name type.
        let message = hello_message(Some(&[server_name_ext(&[(7, b"whatever")])]));
        assert_eq!(name_of(&records(&message, &[])), None);
    }

    #[test]
    fn not_tls() {
        assert_eq!(error_of(b"GET / HTTP/1.1\r\n"), SniError::NotTls);
        assert_eq!(error_of(b"G"), SniError::NotTls);
        assert_eq!(error_of(b"SSH-2.0-OpenSSH_9.6\r\n"), SniError::NotTls);
        // SSLv2-compatible hello.
        assert_eq!(error_of(&[0x80, 0x2e, 0x01, 0x03, 0x01]), SniError::NotTls);
        // An alert record, and handshake records with implausible versions.
        assert_eq!(error_of(&[0x15, 3, 3, 0, 2, 2, 40]), SniError::NotTls);
        assert_eq!(error_of(&[0x16, 2]), SniError::NotTls);
        assert_eq!(error_of(&[0x16, 3, 5]), SniError::NotTls);
        assert_eq!(error_of(&[0x16, 0xfe, 0xfd]), SniError::NotTls);
    }

    #[test]
    fn not_a_client_hello() {
        // A ServerHello (type 2), detected from its first byte.
        assert_eq!(error_of(&[0x16, 3, 3, 0, 60, 2]), SniError::NotClientHello);
        let mut message = sni_message(b"example.com");
        message[0] = 2;
        assert_eq!(error_of(&records(&message, &[])), SniError::NotClientHello);
    }

    #[test]
    fn bad_record_lengths() {
        assert!(matches!(
            error_of(&[0x16, 3, 1, 0, 0]),
            SniError::Malformed(_)
        ));
        assert!(matches!(
            error_of(&[0x16, 3, 1, 0x40, 0x01, 1]),
            SniError::Malformed(_)
        ));
        // An empty continuation record.
        let message = sni_message(b"example.com");
        let mut input = records(&message[..20], &[]);
        input.extend([0x16, 3, 1, 0, 0]);
        assert!(matches!(error_of(&input), SniError::Malformed(_)));
    }

    #[test]
    fn handshake_length_out_of_step_with_the_body() {
        let message = sni_message(b"example.com");
        // Handshake length one short: the extensions block then overruns the message.
        let mut short = message.clone();
        short[3] -= 1;
        assert!(matches!(
            error_of(&records(&short, &[])),
            SniError::Malformed(_)
        ));
        // One too long: the hello continues past its record, so more is needed ...
        let mut long = message.clone();
        long[3] += 1;
        let mut input = records(&long, &[]);
        assert_eq!(
            parse_client_hello(&input),
            Ok(Peek::Incomplete {
                needed: input.len() + RECORD_HEADER_LEN + 1
            })
        );
        // ... and what follows is an alert, not the rest of the handshake.
        input.extend([0x15, 3, 3, 0, 2, 2, 40]);
        assert!(matches!(error_of(&input), SniError::Malformed(_)));
    }

    #[test]
    fn overlong_inner_lengths_are_malformed() {
        let name = b"example.com";
        let message = sni_message(name);
        // Offsets inside the message: 4 header, 2 version, 32 random, then the session id.
        let session_id_len = 4 + 2 + RANDOM_LEN;
        let suites_len = session_id_len + 1 + 32;
        let compression_len = suites_len + 2 + 6;
        let extensions_len = compression_len + 2;
        let sni_ext_len = extensions_len + 2 + 2;
        let sni_list_len = sni_ext_len + 2;
        let sni_name_len = sni_list_len + 2 + 1;
        let cases: &[(usize, i8)] = &[
            (session_id_len, 1),
            (session_id_len, -1),
            (suites_len + 1, 1),
            (suites_len + 1, -2),
            (compression_len, 1),
            (extensions_len + 1, 1),
            (extensions_len + 1, -1),
            (sni_ext_len + 1, 1),
            (sni_ext_len + 1, -1),
            (sni_list_len + 1, 1),
            (sni_list_len + 1, -1),
            (sni_name_len + 1, 1),
            (sni_name_len + 1, -1),
        ];
        for &(offset, delta) in cases {
            let mut bad = message.clone();
            bad[offset] = bad[offset].wrapping_add_signed(delta);
            let result = parse_client_hello(&records(&bad, &[]));
            assert!(
                matches!(result, Err(SniError::Malformed(_))),
                "offset {offset} {delta:+}: {result:?}"
            );
        }
    }

    #[test]
    fn structural_rules() {
        let malformed = |message: &[u8]| {
            let result = parse_client_hello(&records(message, &[]));
            assert!(matches!(result, Err(SniError::Malformed(_))), "{result:?}");
        };
        let sni = server_name_ext(&[(NAME_TYPE_HOST_NAME, b"example.com")]);
        // Duplicate extensions, duplicate host names, empty lists.
        malformed(&hello_message(Some(&[sni.clone(), sni.clone()])));
        malformed(&hello_message(Some(&[
            extension(43, &[2, 3, 4]),
            extension(43, &[2, 3, 4]),
        ])));
        malformed(&hello_message(Some(&[server_name_ext(&[
            (NAME_TYPE_HOST_NAME, b"a.example"),
            (NAME_TYPE_HOST_NAME, b"b.example"),
        ])])));
        malformed(&hello_message(Some(&[server_name_ext(&[])])));
        malformed(&hello_message(Some(&[extension(
            EXTENSION_SERVER_NAME,
            &[],
        )])));
        malformed(&hello_message(Some(&[alpn_ext(&[])])));
        malformed(&hello_message(Some(&[alpn_ext(&[b""])])));
        // A client version that is not 3.x.
        let mut message = sni_message(b"example.com");
        message[4] = 4;
        malformed(&message);
    }

    #[test]
    fn host_name_validation() {
        let parse = |name: &[u8]| parse_client_hello(&records(&sni_message(name), &[]));
        let is_malformed = |name: &[u8]| matches!(parse(name), Err(SniError::Malformed(_)));
        let name = |name: &[u8]| name_of(&records(&sni_message(name), &[]));

        assert_eq!(name(b"Example.COM").as_deref(), Some("example.com"));
        assert_eq!(name(b"example.com.").as_deref(), Some("example.com"));
        assert_eq!(
            name(b"_acme.my-host1.example").as_deref(),
            Some("_acme.my-host1.example")
        );
        assert_eq!(name(b"localhost").as_deref(), Some("localhost"));
        assert_eq!(name(b"1.2.3.example").as_deref(), Some("1.2.3.example"));
        let label = "a".repeat(63);
        let longest = [&label[..], &label, &label, &label[..61]].join(".");
        assert_eq!(longest.len(), 253);
        assert_eq!(name(longest.as_bytes()), Some(longest.clone()));
        assert_eq!(
            name(format!("{longest}.").as_bytes()),
            Some(longest.clone())
        );

        for bad in [
            &b""[..],
            b".",
            b"..",
            b"a..b",
            b".example.com",
            b"example.com..",
            b"exa mple.com",
            b"exa*mple.com",
            b"example.com:443",
            b"caf\xc3\xa9.example",
            b"nul\0.example",
            b"192.0.2.1",
            b"192.0.2.1.",
            b"127.1",
            b"0x7f000001",
            b"example.0x7F",
            b"::1",
            b"[::1]",
            b"2001:db8::1",
        ] {
            assert!(is_malformed(bad), "{:?}", String::from_utf8_lossy(bad));
        }
        assert!(is_malformed(format!("{longest}a").as_bytes()));
        assert!(is_malformed(
            format!("{}.example", "a".repeat(64)).as_bytes()
        ));
    }

    #[test]
    fn alpn_skips_non_utf8_protocols() {
        let message = hello_message(Some(&[alpn_ext(&[b"\xfa\xfa", b"h2"])]));
        assert_eq!(complete(&records(&message, &[])).alpn, ["h2"]);
    }

    #[test]
    fn bytes_after_the_hello_are_ignored() {
        // A change_cipher_spec record after the hello (TLS 1.3 middlebox compatibility mode).
        let mut input = openssl_hello();
        input.extend([0x14, 3, 3, 0, 1, 1]);
        assert_eq!(name_of(&input).as_deref(), Some("example.com"));
        // Extra bytes inside the hello's last record: complete as soon as the hello is there.
        let message = sni_message(b"example.com");
        let mut input = vec![CONTENT_TYPE_HANDSHAKE, 3, 1];
        input.extend(be16(message.len() + 10));
        input.extend(&message);
        assert_eq!(name_of(&input).as_deref(), Some("example.com"));
    }

    #[test]
    fn too_large() {
        // A handshake length that cannot fit in one maximal record.
        assert_eq!(
            error_of(&[0x16, 3, 1, 0x40, 0, 1, 0, 0x3f, 0xfd]),
            SniError::TooLarge
        );
        // One that just fits is waited for.
        assert_eq!(
            parse_client_hello(&[0x16, 3, 1, 0x40, 0, 1, 0, 0x3f, 0xfc]),
            Ok(Peek::Incomplete {
                needed: MAX_CLIENT_HELLO_BYTES
            })
        );
        // The same split over two records needs 5 more bytes than the relay peeks.
        assert_eq!(
            error_of(&[0x16, 3, 1, 0, 100, 1, 0, 0x3f, 0xfc]),
            SniError::TooLarge
        );
        assert_eq!(
            error_of(&[0x16, 3, 1, 0, 100, 1, 0xff, 0xff, 0xff]),
            SniError::TooLarge
        );
    }

    #[test]
    fn name_patterns() {
        let table: &[(&str, &str, bool)] = &[
            ("example.com", "example.com", true),
            ("example.com", "EXAMPLE.com", true),
            ("example.com", "example.com.", true),
            ("Example.COM.", "example.com", true),
            ("example.com", "www.example.com", false),
            ("example.com", "example.co", false),
            ("example.com", "example.com..", false),
            ("example.com", "xexample.com", false),
            (
                "*.s3.ap-northeast-1.amazonaws.com",
                "bucket.s3.ap-northeast-1.amazonaws.com",
                true,
            ),
            (
                "*.s3.ap-northeast-1.amazonaws.com",
                "a.b.s3.ap-northeast-1.amazonaws.com",
                true,
            ),
            (
                "*.s3.ap-northeast-1.amazonaws.com",
                "Bucket.S3.AP-Northeast-1.amazonaws.com.",
                true,
            ),
            (
                "*.s3.ap-northeast-1.amazonaws.com",
                "s3.ap-northeast-1.amazonaws.com",
                false,
            ),
            (
                "*.s3.ap-northeast-1.amazonaws.com",
                ".s3.ap-northeast-1.amazonaws.com",
                false,
            ),
            (
                "*.s3.ap-northeast-1.amazonaws.com",
                "a..s3.ap-northeast-1.amazonaws.com",
                false,
            ),
            (
                "*.s3.ap-northeast-1.amazonaws.com",
                "bucket-s3.ap-northeast-1.amazonaws.com",
                false,
            ),
            (
                "*.s3.ap-northeast-1.amazonaws.com",
                "bucket.xs3.ap-northeast-1.amazonaws.com",
                false,
            ),
            (
                "*.s3.ap-northeast-1.amazonaws.com",
                "bucket.s3.ap-northeast-1.amazonaws.com.evil",
                false,
            ),
            ("*.example.com", "", false),
            ("*.example.com", ".", false),
            ("*.example.com", "é.example.com", false),
            ("*.example.com", "*.example.com", false),
            ("*.example.com", "a b.example.com", false),
            ("*.example.com", "x_1.y-2.example.com", true),
            ("example.com", "", false),
        ];
        for &(pattern, name, expected) in table {
            let parsed = NamePattern::parse(pattern).unwrap();
            assert_eq!(parsed.matches(name), expected, "{pattern} vs {name:?}");
        }
    }

    #[test]
    fn name_pattern_parsing() {
        for bad in [
            "",
            "*",
            "*.",
            ".",
            "**.example.com",
            "*example.com",
            "f*.example.com",
            "a.*.example.com",
            "example.*",
            "*.*.example.com",
            "exa mple.com",
            "example.com:443",
            "a..b",
            "192.0.2.1",
            "*.10",
            "café.example",
            " example.com",
        ] {
            assert!(NamePattern::parse(bad).is_err(), "{bad:?}");
        }
        for (pattern, shown, wildcard) in [
            ("example.com", "example.com", false),
            ("Example.COM.", "example.com", false),
            ("*.S3.Example.com", "*.s3.example.com", true),
            ("*.com", "*.com", true),
            ("_srv.example", "_srv.example", false),
        ] {
            let parsed: NamePattern = pattern.parse().unwrap();
            assert_eq!(parsed.to_string(), shown);
            assert_eq!(parsed.is_wildcard(), wildcard);
            assert_eq!(NamePattern::parse(shown).unwrap(), parsed);
        }
    }

    /// Host names the builder can put in a hello: up to 5 labels, the last not numeric.
    fn host_name() -> impl Strategy<Value = String> {
        (
            vec("[a-zA-Z0-9_-]{1,20}", 0..5),
            "[a-zA-Z][a-zA-Z0-9-]{0,10}",
        )
            .prop_map(|(mut labels, last)| {
                labels.push(last);
                labels.join(".")
            })
    }

    /// Distinct, sorted cut offsets inside a message of `len` bytes.
    fn cut_points(picks: &[Index], len: usize) -> Vec<usize> {
        let mut cuts: Vec<usize> = picks.iter().map(|pick| 1 + pick.index(len - 1)).collect();
        cuts.sort_unstable();
        cuts.dedup();
        cuts
    }

    /// What the fuzz target checks: a complete hello's name is valid.
    fn check_invariants(input: &[u8]) {
        if let Ok(Peek::Complete(hello)) = parse_client_hello(input) {
            if let Some(name) = hello.server_name {
                assert!(!name.is_empty() && name.len() <= MAX_HOST_NAME_LEN);
                assert!(name.is_ascii());
                assert_eq!(name, name.to_ascii_lowercase());
            }
        }
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in vec(any::<u8>(), 0..2048)) {
            check_invariants(&bytes);
        }

        #[test]
        fn arbitrary_bytes_behind_valid_headers_never_panic(
            record_len in 0u16..600,
            body_len in 0u32..600,
            bytes in vec(any::<u8>(), 0..600),
        ) {
            let mut input = vec![CONTENT_TYPE_HANDSHAKE, 3, 1];
            input.extend(record_len.to_be_bytes());
            input.push(HANDSHAKE_CLIENT_HELLO);
            input.extend(&body_len.to_be_bytes()[1..]);
            input.extend(bytes);
            check_invariants(&input);
        }

        #[test]
        fn mutated_hellos_never_panic(
            name in host_name(),
            edits in vec((any::<Index>(), any::<u8>()), 1..6),
        ) {
            let mut input = records(&named_message(&name), &[]);
            for (at, byte) in edits {
                let at = at.index(input.len());
                input[at] = byte;
            }
            check_invariants(&input);
        }

        #[test]
        fn built_names_round_trip(name in host_name()) {
            let hello = complete(&records(&named_message(&name), &[]));
            prop_assert_eq!(hello.server_name, Some(name.to_ascii_lowercase()));
            prop_assert_eq!(hello.alpn, ["h2", "http/1.1"]);
        }

        #[test]
        fn random_record_splits_parse(name in host_name(), picks in vec(any::<Index>(), 0..6)) {
            let message = named_message(&name);
            let input = records(&message, &cut_points(&picks, message.len()));
            prop_assert_eq!(name_of(&input), Some(name.to_ascii_lowercase()));
            assert_prefixes_incomplete(&input);
        }
    }
}
