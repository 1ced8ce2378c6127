//! The public face of the engine: [`RelayBuilder`] describes a relay (`builder.rs`),
//! [`Relay::run`] runs it on the calling thread plus one thread per extra worker (`run.rs`),
//! and a cloneable [`RelayHandle`] (`handle.rs`) reads its counters, reloads and stops it from
//! anywhere. `setup.rs` turns routes into running state for both the builder and reloads.

mod adoption;
mod builder;
mod handle;
mod observe;
mod run;
mod setup;

pub use crate::state::route::reached_listener;
pub use adoption::{AdoptError, AdoptRefusal, Adoption, Side};
pub use builder::{DEFAULT_DRAIN_TIMEOUT, RelayBuilder};
pub use handle::{RelayHandle, ReloadSummary};
pub use observe::RouteOverview;
pub use run::Relay;
