//! Fault tests: the relay with each peer in its own network namespace (client ns <-veth-> relay
//! ns <-veth-> server ns), so that links can be cut, addresses black-holed and links slowed.
//!
//! They need root (namespaces, `ip`, `tc`, `ss`); without it every test prints
//! "skipped: needs root (network namespaces)" and passes. CI runs as root. What each scenario
//! promises and what was measured is in `docs/reliability.md`.
// Namespaces, links, and the relay, servers and clients placed in them.
mod netns;
// What clients and servers do: counted uploads and downloads.
mod traffic;

// A link cut mid-transfer: the idle timeout resets both sides, nothing hangs.
mod link_cut;
// An upstream address that drops SYNs: the connect timeout fires, the next address is tried.
mod black_hole;
// A slow reader and a slow link: backpressure holds the relay to one buffer per direction.
mod backpressure;
// Silent and trickling clients under the idle timeout.
mod idle;
// Resets at every stage (connecting, mid-transfer, after a half-close); no descriptor leaks.
mod resets;
// ip_nonlocal_bind = 1 on the relay host: only real local addresses are self-loops.
mod nonlocal_bind;
// Resolved names never reach the metadata service or, from SNI, loopback (a namespace with only lo).
mod address_policy;
