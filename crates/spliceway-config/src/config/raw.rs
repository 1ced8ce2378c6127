//! The configuration file as serde reads it: every table refuses unknown keys, and every value
//! checked after reading is kept [`Spanned`] so that an error can point at it.

use std::fmt;

use serde::Deserialize;
use serde::de::{self, MapAccess, Visitor};
use toml::Spanned;

/// Calls `$callback!` with the keys shared by `[defaults]` and `[[route]]` appended, so that the
/// list is written once and both tables stay in step.
macro_rules! with_option_keys {
    ($callback:ident! { $($args:tt)* }) => {
        $callback! { $($args)* options {
            allow: Vec<Spanned<String>>,
            deny: Vec<Spanned<String>>,
            upstream_allow: Vec<Spanned<String>>,
            max_connections: usize,
            connect_timeout: Scalar,
            connect_attempts: usize,
            idle_timeout: Scalar,
            half_close_timeout: Scalar,
            hello_timeout: Scalar,
            request_timeout: Scalar,
            source: String,
            transparent: bool,
            mode: String,
            pipe_size: Scalar,
            buffer_size: Scalar,
            bulk_low_water: Scalar,
            accept_proxy: String,
            accept_proxy_from: Vec<Spanned<String>>,
            proxy_timeout: Scalar,
            send_proxy: String,
            require_splice: bool,
            nodelay: bool,
            keepalive: Scalar,
            congestion: String,
            resolve_cache_ttl: Scalar,
            resolver: RawResolver,
            rate_limit: RawRateLimit,
            client_rate_limit: RawRateLimit,
            route_rate_limit: RawRateLimit,
            max_connections_per_client: usize,
            udp_idle_timeout: Scalar,
            max_sessions: usize,
            max_sessions_per_client: usize,
            udp_responses: i64,
        }}
    };
}

/// Declares a table with its own fields plus the shared option keys (all optional).
macro_rules! table_with_options {
    (
        $(#[$meta:meta])*
        struct $name:ident { $($(#[$fmeta:meta])* $field:ident: $ty:ty,)* }
        options { $($option:ident: $oty:ty,)* }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Deserialize)]
        #[serde(deny_unknown_fields)]
        pub(super) struct $name {
            $($(#[$fmeta])* pub(super) $field: $ty,)*
            $(pub(super) $option: Option<Spanned<$oty>>,)*
        }

        impl $name {
            /// The shared option keys of this table.
            pub(super) fn options(&self) -> RawOptions {
                RawOptions { $($option: self.$option.clone(),)* }
            }
        }
    };
}

/// The whole file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConfig {
    pub(super) threads: Option<Spanned<usize>>,
    pub(super) user: Option<Spanned<String>>,
    pub(super) group: Option<Spanned<String>>,
    pub(super) log_level: Option<Spanned<String>>,
    pub(super) log_format: Option<Spanned<String>>,
    pub(super) metrics: Option<Spanned<String>>,
    pub(super) control_socket: Option<Spanned<String>>,
    pub(super) max_connections: Option<Spanned<usize>>,
    pub(super) drain_timeout: Option<Spanned<Scalar>>,
    pub(super) drain_delay: Option<Spanned<Scalar>>,
    pub(super) pool_idle_pipes: Option<Spanned<usize>>,
    pub(super) pipe_budget: Option<Spanned<Scalar>>,
    pub(super) defaults: Option<RawOptions>,
    #[serde(default)]
    pub(super) route: Vec<Spanned<RawRoute>>,
}

with_option_keys!(table_with_options! {
    /// The keys shared by `[defaults]` and `[[route]]`; `[defaults]` is exactly this.
    #[derive(Default)]
    struct RawOptions {}
});

with_option_keys!(table_with_options! {
    /// One `[[route]]`.
    struct RawRoute {
        name: Spanned<String>,
        listen: Spanned<Vec<Spanned<String>>>,
        upstream: Option<Spanned<RawUpstream>>,
        connect_allow: Option<Spanned<Vec<Spanned<String>>>>,
        upstreams: Option<Spanned<Vec<Spanned<RawUpstreamEntry>>>>,
        balance: Option<Spanned<String>>,
        max_fails: Option<Spanned<i64>>,
        fail_timeout: Option<Spanned<Scalar>>,
        health_check: Option<Spanned<RawHealthCheck>>,
        protocol: Option<Spanned<String>>,
        sni: Option<Spanned<Vec<Spanned<RawSni>>>>,
    }
});

/// `upstream = "host:port"` or `upstream = ["a:1", "b:2"]`.
#[derive(Debug, Clone)]
pub(super) enum RawUpstream {
    One(String),
    List(Vec<Spanned<String>>),
}

impl<'de> Deserialize<'de> for RawUpstream {
    fn deserialize<D: de::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct UpstreamVisitor;
        impl<'de> Visitor<'de> for UpstreamVisitor {
            type Value = RawUpstream;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("\"host:port\" or a list [\"host:port\", ...]")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<RawUpstream, E> {
                Ok(RawUpstream::One(v.to_owned()))
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<RawUpstream, A::Error> {
                let mut list = Vec::new();
                while let Some(item) = seq.next_element::<Spanned<String>>()? {
                    list.push(item);
                }
                Ok(RawUpstream::List(list))
            }
        }
        deserializer.deserialize_any(UpstreamVisitor)
    }
}

/// One `[[route.upstreams]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawUpstreamEntry {
    pub(super) address: Spanned<String>,
    pub(super) weight: Option<Spanned<i64>>,
    pub(super) backup: Option<Spanned<bool>>,
}

/// A route's `health_check = { ... }`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawHealthCheck {
    pub(super) interval: Option<Spanned<Scalar>>,
    pub(super) timeout: Option<Spanned<Scalar>>,
    pub(super) rise: Option<Spanned<i64>>,
    pub(super) fall: Option<Spanned<i64>>,
    pub(super) send: Option<Spanned<String>>,
    pub(super) expect: Option<Spanned<String>>,
    pub(super) http_get: Option<Spanned<String>>,
    pub(super) status: Option<Spanned<i64>>,
}

/// One `[[route.sni]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSni {
    #[serde(rename = "match")]
    pub(super) pattern: Spanned<String>,
    pub(super) upstream: Option<Spanned<String>>,
}

/// A value that may be written as a string, an integer or a boolean (`"10s"`, `65536`,
/// `false`); the key decides which are valid, with a message of its own.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Scalar {
    Str(String),
    Int(i64),
    Bool(bool),
}

impl fmt::Display for Scalar {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Scalar::Str(s) => write!(f, "{s:?}"),
            Scalar::Int(i) => write!(f, "{i}"),
            Scalar::Bool(b) => write!(f, "{b}"),
        }
    }
}

impl<'de> Deserialize<'de> for Scalar {
    fn deserialize<D: de::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ScalarVisitor;
        impl Visitor<'_> for ScalarVisitor {
            type Value = Scalar;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string such as \"10s\" or \"256KiB\", a number or a boolean")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Scalar, E> {
                Ok(Scalar::Str(v.to_owned()))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Scalar, E> {
                Ok(Scalar::Int(v))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Scalar, E> {
                i64::try_from(v)
                    .map(Scalar::Int)
                    .map_err(|_| E::custom("number too large"))
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Scalar, E> {
                Ok(Scalar::Bool(v))
            }
        }
        deserializer.deserialize_any(ScalarVisitor)
    }
}

/// `rate_limit = { up = "600mbit", down = "1gbit", burst = "1MiB" }` (and the client and
/// route forms).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRateLimit {
    pub(super) up: Option<Spanned<Scalar>>,
    pub(super) down: Option<Spanned<Scalar>>,
    pub(super) burst: Option<Spanned<Scalar>>,
}

/// The table form of `resolver`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawServers {
    servers: Spanned<Vec<Spanned<String>>>,
}

/// `resolver = "system"`, `resolver = "dns"` or `resolver = { servers = ["10.0.0.2:53"] }`.
#[derive(Debug, Clone)]
pub(super) enum RawResolver {
    Named(String),
    Servers(Spanned<Vec<Spanned<String>>>),
}

impl<'de> Deserialize<'de> for RawResolver {
    fn deserialize<D: de::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ResolverVisitor;
        impl<'de> Visitor<'de> for ResolverVisitor {
            type Value = RawResolver;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("\"system\", \"dns\" or a table { servers = [\"ip:port\", ...] }")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<RawResolver, E> {
                Ok(RawResolver::Named(v.to_owned()))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<RawResolver, A::Error> {
                let servers = RawServers::deserialize(de::value::MapAccessDeserializer::new(map))?;
                Ok(RawResolver::Servers(servers.servers))
            }
        }
        deserializer.deserialize_any(ResolverVisitor)
    }
}
