//! What spliceway's test suites share, defined once: the engine's tests
//! (`crates/spliceway/tests`), the CLI's (`crates/spliceway-cli/tests`), the micro-benchmarks'
//! and the repository-wide checks (`crates/spliceway-repo-checks`) all use it.
//!
//! - [`wait`]: the one bounded wait, [`wait_until`], and the suites' time limits.
//! - [`net`]: free ports, connecting with timeouts, resets and clean ends read and asserted.
//! - [`server`]: the accept-loop [`Server`] and the echo and hash servers built on it.
//! - [`data`]: deterministic data and its SHA-256 on both sides of a transfer.
//! - [`relay`]: a [`TestRelay`] (the engine on a thread, in a namespace or not).
//! - [`daemon`]: a [`Daemon`] (a `spliceway run` child with its log), stopped by its own PID.
//! - [`http`]: HTTP/1.0 exchanges with the metrics and health endpoints, bounded in time.
//! - [`netns`]: the root check and named network namespaces deleted on drop, built on
//!   `spliceway-bench`'s namespaces.
//! - [`sockets`]: a namespace's TCP sockets as `ss` shows them.
//!
//! Every loop here is bounded in count and in time, and stops only what it started.

pub mod daemon;
pub mod data;
pub mod http;
pub mod net;
pub mod netns;
pub mod relay;
pub mod server;
pub mod sockets;
pub mod wait;

pub use daemon::{Daemon, WAIT, config_file};
pub use data::{
    Generator, client_hello, expected_hash, generated, hash_answer, pattern, read_hashed,
    send_generated,
};
pub use net::{
    Ending, assert_clean_end, assert_reset, connect, connect_expecting_reset, dead_addr, free_port,
    half_close, open_fds, read_ending, reset, try_echo, wait_for_socket_error,
};
pub use netns::{Netns, is_root, require_root, run_checked};
pub use relay::{Received, TestRelay, WithOptions, ends_counted, route_to};
pub use server::{
    Server, echo_round_trip, echo_server, hash_server, shared_echo_server, shared_hash_server,
};
pub use sockets::{SockStat, tcp_sockets};
pub use wait::{TEST_TIMEOUT, wait_until};
