//! The health and metrics endpoint of `spliceway run` and `spliceway relay --metrics`:
//!
//! - `GET /metrics`: the Prometheus text format ([`exposition`]), with the standard process
//!   metrics ([`process`]);
//! - `GET /healthz`: 200 `ok` while the workers run (a liveness probe), 503 otherwise;
//! - `GET /readyz`: 200 while the relay accepts on every route, 503 from the moment a drain
//!   begins (a readiness probe, a load balancer's health check), so that the balancer stops
//!   sending clients during the drain delay.
//!
//! A small HTTP/1.1 server of its own rather than a library's, because what matters here is
//! that no client can take it down (issue 24): one thread on a `mio` poll, at most
//! [`MAX_CONNECTIONS`](event_loop::MAX_CONNECTIONS) connections (the oldest idle closed first), a deadline on every
//! phase (a request head within 5 s, an answer written within 5 s, 30 s idle), request heads
//! of at most 8 KiB (431 beyond), one answer at a time per connection, `EMFILE` and failed
//! thread starts logged at ERROR and retried, and at most [`DESCRIPTORS`] descriptors, which
//! the relay keeps out of its own budget. The modules, each with one job:
//!
//! - [`request`]: the request head, collected and parsed under its size limit (pure);
//! - [`response`]: the answers, as bytes;
//! - [`connection`]: one connection's phases and deadlines;
//! - [`event_loop`]: accepting, the connection cap, errors and timeouts;
//! - [`server`]: starting the thread, stopping it, stopping accepting for an upgrade;
//! - [`throttle`]: how often a repeated error is logged.

mod connection;
mod event_loop;
mod exposition;
mod process;
mod request;
mod response;
mod server;
mod throttle;

pub use event_loop::DESCRIPTORS;
pub use server::{MetricsControl, MetricsServer, serve_on};
