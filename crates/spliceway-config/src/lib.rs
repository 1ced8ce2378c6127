//! # spliceway-config: the configuration file of the spliceway daemon
//!
//! `spliceway run --config FILE` and `spliceway check --config FILE` read a TOML file into
//! routes and relay-wide settings; this crate is that file. It is the engine's first client:
//! everything it builds, it builds with the public API of the [`spliceway`] crate
//! ([`Route`](spliceway::Route), [`RelayBuilder`](spliceway::RelayBuilder),
//! [`Resolution`](spliceway::Resolution), ...), never with its internals.
//!
//! ```toml
//! metrics = "127.0.0.1:9898"
//!
//! [[route]]
//! name = "s3"
//! listen = ["0.0.0.0:443", "[::]:443"]
//! upstream = "s3-ap-northeast-1.amazonaws.com:443"
//! allow = ["10.0.0.0/8"]
//! ```
//!
//! ```no_run
//! use std::path::Path;
//! use spliceway_config::{Config, Resolvers};
//!
//! fn main() -> Result<(), Box<dyn std::error::Error>> {
//!     let config = Config::from_file(Path::new("/etc/spliceway/spliceway.toml"))?;
//!     print!("{}", config.summary()); // what `spliceway check` prints
//!     let mut resolvers = Resolvers::default(); // keep it for reloads
//!     let relay = config.relay_builder_with(&mut resolvers)?.build()?;
//!     relay.run()?;
//!     Ok(())
//! }
//! ```
//!
//! Reading is strict: an unknown key, a value of the wrong type, an address, network, server
//! name pattern, size or duration that does not parse, a time past [`MAX_TIMEOUT`], a route
//! with both or neither of `upstream` and `[[route.sni]]`, a `user` that does not exist, routes
//! that relay back into the relay — each is a [`ConfigError`] naming the file, the line and
//! column, the route and the key, for example
//! `spliceway.toml:7:10: route "s3": allow: invalid CIDR "10.0.0.0/33": invalid IP address syntax`.
//!
//! [`KEYS`] lists every key with its type, default and meaning (spliceway.toml(5) is made from
//! it); `packaging/spliceway.toml` in the repository shows each, with comments.
//!
//! ## Where things are
//!
//! | module | job |
//! | --- | --- |
//! | `config` | [`Config`]: reading a file, its settings, the routes and relay builder it makes |
//! | `config/raw` | the file as serde reads it (unknown keys refused, values kept with spans) |
//! | `config/validate` | checking every value serde cannot, each error at the value's span |
//! | `config/across_routes` | what only the whole file shows: overlapping listeners, rings of routes |
//! | `config/hints` | plainer words for toml's errors: "did you mean", `[[route]]` |
//! | `config/location` | byte offsets to `line:column` and to the key being read |
//! | `config/summary` | the summary `spliceway check` prints |
//! | `error` | [`ConfigError`] |
//! | `keys` | [`KEYS`]: every key with its type, default and meaning (spliceway.toml(5)) |
//! | `logging` | [`LogLevel`] and [`LogFormat`] |
//! | `resolvers` | [`ResolverChoice`] and the [`Resolvers`] kept across reloads |
//! | `rate` | [`parse_rate`]: `600mbit` and `75MB` (a second), zero, absurd and `mbps` refused |
//! | `size` | [`parse_size`]: `64KiB` and `64KB` as written, a bare `64K` refused |
//! | `dns` | a DNS client that bypasses `/etc/hosts` and honours TTLs (feature `dns`) |

#![warn(missing_docs)]

mod config;
#[cfg(feature = "dns")]
pub mod dns;
mod error;
mod keys;
mod logging;
mod rate;
mod resolvers;
mod size;

pub use config::summary::describe_engine;
pub use config::{Config, MAX_THREADS, MAX_TIMEOUT, control_socket_path};
pub use error::ConfigError;
pub use keys::{KEYS, Key, KeyTable, keys_of};
pub use logging::{LogFormat, LogLevel};
pub use rate::{MAX_RATE_BYTES, RateError, parse_rate};
pub use resolvers::{ResolverChoice, Resolvers};
pub use size::{SizeError, parse_size};
