//! Integration tests of the relay engine over loopback. One test binary; each module is one
//! behaviour:

// Bytes arrive intact both ways at once, many connections at a time, in both modes.
mod transfer;
// End of stream from one side is passed on only after the pipe drained; the other way goes on.
mod half_close;
// A reset on either side is seen as a reset on the other, never as a clean end.
mod resets;
// Upstream refusing, several upstream addresses, resolution, connecting to itself.
mod upstream;
// Several upstreams per route: balancing, health checks, backups, reloads (issue 29).
mod upstream_groups;
// Idle and half-close timeouts close silent connections.
mod timeouts;
// Hundreds of connections ending in every way leave no descriptor behind.
mod fd_leaks;
// Graceful and immediate shutdown.
mod shutdown;
// A worker panic resets every connection (feature fault-injection) and stops the relay.
mod crash;
// Defects found by hostile testing, one regression test each.
mod hostile_input;
// Clients choosing the names cannot starve resolution: queues per route, cancellation, bounds.
mod resolver_isolation;
// Connections handed over by the program (RelayHandle::adopt).
mod adopt;
// PROXY protocol in (client address from the header) and out (a header before the payload).
mod proxy_protocol;
// Small messages and short connections: no event lost where reads that would answer EAGAIN
// are skipped.
mod small_messages;
// Bandwidth limits per connection, client and route; the per-client connection limit.
mod rate_limits;
