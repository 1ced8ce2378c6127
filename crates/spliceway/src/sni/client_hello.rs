//! The TLS record and ClientHello parser: from peeked bytes to a server name and ALPN list.

use std::borrow::Cow;

use super::host_name::normalize_host_name;

/// The most bytes the relay will peek while waiting for a ClientHello: one full TLS record
/// (5-byte header and 2^14 bytes of payload).
///
/// Peeking keeps the bytes in the socket's receive buffer, so this also bounds what one
/// not-yet-routed connection can make the kernel hold on its behalf. Real ClientHellos are a
/// few hundred bytes to about 2 KiB (post-quantum key shares included), far below it; a hello
/// that would need more is refused with [`SniError::TooLarge`] rather than buffered.
pub const MAX_CLIENT_HELLO_BYTES: usize = 16 * 1024 + 5;

/// TLS record header: content type, legacy version (2), length (2).
pub(super) const RECORD_HEADER_LEN: usize = 5;
/// Handshake header: message type, length (3).
pub(super) const HANDSHAKE_HEADER_LEN: usize = 4;
/// Largest plaintext record payload allowed by RFC 8446 section 5.1.
pub(super) const MAX_RECORD_PAYLOAD: usize = 1 << 14;
pub(super) const CONTENT_TYPE_HANDSHAKE: u8 = 22;
pub(super) const HANDSHAKE_CLIENT_HELLO: u8 = 1;
pub(super) const EXTENSION_SERVER_NAME: u16 = 0;
pub(super) const EXTENSION_ALPN: u16 = 16;
pub(super) const NAME_TYPE_HOST_NAME: u8 = 0;
pub(super) const MAX_SESSION_ID_LEN: usize = 32;
pub(super) const RANDOM_LEN: usize = 32;

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
