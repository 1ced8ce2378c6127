//! Host names as SNI and routing tables may carry them: the syntax check and normalisation
//! shared by the ClientHello parser and the name patterns.

/// Longest DNS name in text form without the trailing dot (RFC 1035, 255 octets on the wire).
pub(super) const MAX_HOST_NAME_LEN: usize = 253;
const MAX_LABEL_LEN: usize = 63;

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
pub(crate) fn normalize_host_name(name: &[u8]) -> Result<String, &'static str> {
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
pub(super) fn is_valid_label(label: &[u8]) -> bool {
    (1..=MAX_LABEL_LEN).contains(&label.len())
        && label
            .iter()
            .all(|&byte| byte.is_ascii_alphanumeric() || byte == b'-' || byte == b'_')
}
