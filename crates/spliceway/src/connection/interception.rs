//! Routes with `upstream = "original-destination"`: where an intercepted connection was going.
//!
//! After an nftables/iptables `REDIRECT` or `DNAT`, connection tracking remembers the address
//! the client dialled (`SO_ORIGINAL_DST`, `IP6T_SO_ORIGINAL_DST`); after `TPROXY` to a
//! transparent listener the accepted socket's own local address is that address. The answer is
//! one upstream address, which the route's strict address policy and the loop check then judge
//! like any other (`dial.rs`).

use mio::net::TcpStream;

use crate::end::CloseReason;
use crate::resolver::Target;
use crate::route::ConnectionOptions;
use crate::sys;

/// The address the client dialled, as the one target to connect to. It counts as this host's
/// own address (for the loop check against listeners on a wildcard address) when it is the
/// address the client reached the relay on, or loopback: a client that dialled the relay's
/// listener directly, not redirected, is refused as a loop. (No interface dump per connection:
/// a destination that is another of the relay's addresses loops once, and its second hop is
/// then refused so.)
pub(crate) fn original_destination(
    client: &TcpStream,
    options: &ConnectionOptions,
) -> Result<Target, CloseReason> {
    let local = client
        .local_addr()
        .map_err(|e| CloseReason::ClientError(e.to_string()))?;
    let addr = if options.transparent {
        local
    } else {
        sys::original_destination(client, local.is_ipv6()).map_err(|e| {
            CloseReason::OriginalDestination(format!(
                "{}: {e}; was the connection redirected by a nat rule?",
                if local.is_ipv6() {
                    "IP6T_SO_ORIGINAL_DST"
                } else {
                    "SO_ORIGINAL_DST"
                }
            ))
        })?
    };
    Ok(Target {
        addr,
        local: addr.ip() == local.ip() || addr.ip().is_loopback(),
    })
}
