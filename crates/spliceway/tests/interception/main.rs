//! Interception in network namespaces (as root; skipped with a message otherwise): a client
//! namespace, a relay namespace with the nftables REDIRECT and TPROXY rules of
//! `scripts/interception-netns.sh` (the rules docs/operations.md shows), and two server
//! namespaces. The relay runs in this process, on a thread inside the relay namespace.
//!
//! - `original_destination`: REDIRECT and TPROXY, IPv4 and IPv6, hashed transfers both ways,
//!   each connection reaching the server it dialled; `upstream_allow` enforced and counted; the
//!   relay's own listener refused as a loop; 169.254.169.254 never attempted; `source =
//!   "client"` seen by the server's `getpeername`; the seed's case end to end over TLS (curl,
//!   `openssl s_server`, no hosts entry).
//! - `http_connect`: `curl -x` over TLS; each refusal status for its case; early data after the
//!   request; a client that never finishes its request closed at the timeout.

mod http_connect;
mod original_destination;
mod topology;
