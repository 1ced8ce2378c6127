//! State shared between threads: a route as the workers run it, the relay-wide state (counters,
//! control, connection count), and each worker's mailbox. Below the event loop and the relay
//! API, above the description (`route/`) and the resolver, so both the workers and the handle
//! can use it without importing each other.

pub(crate) mod adoption;
pub(crate) mod log_limit;
pub(crate) mod mailbox;
pub(crate) mod relay;
pub(crate) mod route;
