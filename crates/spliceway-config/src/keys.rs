//! Every key of the configuration file, with its type, default and meaning: the one source of
//! spliceway.toml(5) (`spliceway man spliceway.toml`) and of the "did you mean" hint for an
//! unknown key. Tests hold it to the file as it is read: each key the reader accepts is here
//! and nothing else is, each default here is what leaving the key out gives, and the packaged
//! example (`packaging/spliceway.toml`) shows each key.

/// Where in the file a key is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum KeyTable {
    /// At the top of the file, before the first table: relay-wide settings.
    Global,
    /// In a `[[route]]` table only.
    Route,
    /// In `[defaults]` or in a `[[route]]` table (the route's own value wins).
    Options,
    /// In a `[[route.sni]]` table, one server name entry of a route.
    Sni,
    /// In a `[[route.upstreams]]` table, one upstream of a route.
    Upstreams,
    /// In a route's `health_check = { ... }` table.
    HealthCheck,
}

impl KeyTable {
    /// Every table, in the order the file is usually written.
    pub const ALL: [KeyTable; 6] = [
        KeyTable::Global,
        KeyTable::Route,
        KeyTable::Upstreams,
        KeyTable::HealthCheck,
        KeyTable::Options,
        KeyTable::Sni,
    ];

    /// Where such keys go, in the words of an error message: "at the top of the file",
    /// "in `[[route]]`", "in `[defaults]` or `[[route]]`", "in `[[route.sni]]`",
    /// "in `[[route.upstreams]]`", "in a route's `health_check = { ... }`".
    pub fn place(self) -> &'static str {
        match self {
            KeyTable::Global => "at the top of the file, before any table",
            KeyTable::Route => "in [[route]]",
            KeyTable::Options => "in [defaults] or [[route]]",
            KeyTable::Sni => "in [[route.sni]]",
            KeyTable::Upstreams => "in [[route.upstreams]]",
            KeyTable::HealthCheck => "in a route's health_check = { ... }",
        }
    }
}

/// One key of the configuration file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Key {
    /// The key as written in the file.
    pub name: &'static str,
    /// Where it is written.
    pub table: KeyTable,
    /// What its value is, in words ("duration", "list of CIDR").
    pub kind: &'static str,
    /// What leaving it out means: a TOML value (`"10s"`, `3`, `true`) that gives the same
    /// relay as leaving the key out, or, where no value of its type does, words in
    /// parentheses (`(no limit)`).
    pub default: &'static str,
    /// What it does, in plain sentences.
    pub description: &'static str,
    /// Whether a reload (SIGHUP) applies a change of it; `false`: only a restart does.
    pub reloads: bool,
}

const fn key(
    name: &'static str,
    table: KeyTable,
    kind: &'static str,
    default: &'static str,
    description: &'static str,
) -> Key {
    Key {
        name,
        table,
        kind,
        default,
        description,
        reloads: true,
    }
}

/// A relay-wide key that a reload leaves as it was started with (it warns that the change waits
/// for a restart).
const fn fixed(
    name: &'static str,
    kind: &'static str,
    default: &'static str,
    description: &'static str,
) -> Key {
    Key {
        name,
        table: KeyTable::Global,
        kind,
        default,
        description,
        reloads: false,
    }
}

use KeyTable::{Global, HealthCheck, Options, Route, Sni, Upstreams};

/// Every key of the configuration file, table by table.
pub const KEYS: &[Key] = &[
    // ---- relay-wide ----
    fixed(
        "threads",
        "integer, 0 to 1024",
        "0",
        "Worker threads (event loops), each with its own SO_REUSEPORT listener. 0: one per CPU \
         the process may run on. Each worker has its own pipe budget (pipe_budget), so the \
         memory a relay may take grows with this number.",
    ),
    fixed(
        "user",
        "user name or uid",
        "(stay the user that started it)",
        "When started as root: switch to this user after binding the listening sockets, keeping \
         only CAP_NET_BIND_SERVICE so a reload can still bind ports below 1024. The user must \
         exist (check looks it up) and be able to read this file for reloads. Leave it out \
         under the packaged systemd unit, which starts the relay unprivileged.",
    ),
    fixed(
        "group",
        "group name or gid",
        "(the user's primary group)",
        "The group to switch to with user (or alone, when started as root).",
    ),
    key(
        "log_level",
        Global,
        "error, warn, notice, info, debug or trace",
        "\"info\"",
        "How much to log: notice logs start-up, changes and warnings; info adds one line per \
         closed connection; debug adds each accepted connection with its client and the \
         upstream chosen; trace, everything. Only spliceway's own lines are logged (RUST_LOG \
         overrides). SIGUSR1 and SIGUSR2 move one step up and down at run time; -v and -q on \
         the command line shift the level given here.",
    ),
    fixed(
        "log_format",
        "text or json",
        "\"text\"",
        "text: one human-readable line per event; json: one JSON object per line, for log \
         shippers, with numbers (byte counts, connect_ms, duration_ms) as JSON numbers.",
    ),
    fixed(
        "metrics",
        "address:port",
        "(off)",
        "Serve Prometheus metrics at http://ADDRESS/metrics, liveness at /healthz and readiness \
         at /readyz (503 while draining). Plain HTTP without authentication: keep it on \
         loopback or a management network.",
    ),
    fixed(
        "control_socket",
        "absolute path",
        "(none)",
        "A unix socket (mode 0600) on which the relay takes `spliceway upgrade`, which replaces \
         the running process by the binary now installed without refusing a connection.",
    ),
    key(
        "max_connections",
        Global,
        "integer, at least 1",
        "(no limit)",
        "Most connections the whole relay holds at once. At the limit it stops accepting and \
         new clients wait in the kernel's backlog. Each connection takes up to 6 file \
         descriptors: keep LimitNOFILE (ulimit -n) above 6 times this.",
    ),
    key(
        "drain_timeout",
        Global,
        "duration",
        "\"30s\"",
        "On SIGTERM or SIGINT: stop accepting, let open connections finish for this long, then \
         reset the rest (a second signal resets them at once).",
    ),
    key(
        "drain_delay",
        Global,
        "duration",
        "\"0s\"",
        "Behind a load balancer: on SIGTERM, /readyz answers 503 at once but the relay keeps \
         accepting for this long, while the balancer stops sending clients; then the listeners \
         close and drain_timeout runs.",
    ),
    fixed(
        "pool_idle_pipes",
        "integer",
        "16",
        "Empty pipes each worker keeps for reuse. A connection's direction holds a pipe only \
         while it has bytes in flight.",
    ),
    fixed(
        "pipe_budget",
        "size",
        "\"256MiB\"",
        "Total capacity of the full-size pipes each worker holds, busy and pooled; past it new \
         transfers get 16 KiB pipes (counted in spliceway_pipe_degradations). The relay's pipe \
         memory is at most threads times this, plus 32 KiB per connection beyond it.",
    ),
    // ---- [[route]] ----
    key(
        "name",
        Route,
        "string",
        "(required)",
        "The route's name, unique in the file: in log lines, metrics labels and reloads, which \
         match routes by name.",
    ),
    key(
        "listen",
        Route,
        "list of address:port",
        "(required)",
        "IP literals with ports, e.g. [\"0.0.0.0:443\", \"[::]:443\"] (\"[::]:443\" is \
         IPv6-only: list both families for dual stack). On one port a wildcard and a specific \
         address of the same family cannot both be listed. A link-local address names its \
         interface: \"[fe80::1%eth0]:443\".",
    ),
    key(
        "upstream",
        Route,
        "host:port or ip:port, or a list of them",
        "(required unless [[route.upstreams]] or [[route.sni]] entries are given)",
        "Where every connection of the route goes. Names are resolved per connection (cached \
         for resolve_cache_ttl, or the record's TTL with resolver = \"dns\"). A list, e.g. \
         [\"10.0.0.5:5432\", \"db-2.internal:5432\"], balances connections over those \
         upstreams (all of weight 1; see balance, max_fails, health_check). Give one of \
         upstream, [[route.upstreams]] or [[route.sni]] entries. Two values are not addresses: \
         \"original-destination\" relays each connection to the address its client dialled \
         (after an nftables REDIRECT or DNAT, or TPROXY to a transparent listener), and \
         \"http-connect\" to the target of the client's HTTP CONNECT request (HTTPS_PROXY); \
         both need upstream_allow, and http-connect needs connect_allow.",
    ),
    key(
        "connect_allow",
        Route,
        "list of name:port patterns",
        "(required with upstream = \"http-connect\")",
        "The CONNECT targets relayed: an exact name or \"*.suffix\" (as in [[route.sni]]) \
         with the one port allowed, e.g. [\"*.amazonaws.com:443\"]. Matched before \
         resolving; what the name resolves to must then be in upstream_allow. Any other \
         request is answered 403; requests for IP literals match no entry.",
    ),
    key(
        "balance",
        Route,
        "\"round-robin\", \"least-connections\" or \"client-hash\"",
        "\"round-robin\"",
        "How new connections spread over the upstreams that are up. round-robin: weighted, \
         smooth as nginx's (weights 5, 1, 1 give a a b a c a a). least-connections: the fewest \
         open connections for the weight. client-hash: by the client's address (rendezvous \
         hashing), so a client keeps its upstream while the set that is up does not change, \
         and only about 1/N of the clients move when one of N upstreams leaves. Backups \
         receive connections only while no primary is up.",
    ),
    key(
        "max_fails",
        Route,
        "integer, 0 to 1000",
        "1",
        "Passive health: this many connect failures in a row mark an upstream down for \
         fail_timeout (0: never). The connection that failed moves on to the next upstream \
         within connect_attempts, so its client does not see the failure.",
    ),
    key(
        "fail_timeout",
        Route,
        "duration",
        "\"10s\"",
        "How long an upstream marked down by max_fails stays down before connections try it \
         again.",
    ),
    key(
        "health_check",
        Route,
        "table { interval, timeout, rise, fall, send, expect, http_get, status }",
        "(none: passive health only)",
        "Active health checks of every upstream, off the workers (one thread per relay, \
         probes spread over the interval, never to an address the address policy refuses): \
         a TCP connect, or send/expect bytes, or an HTTP GET with an expected status. fall \
         failures in a row mark an upstream down, rise passes mark it up again. E.g. \
         health_check = { interval = \"2s\", rise = 2, fall = 3 }.",
    ),
    key(
        "protocol",
        Route,
        "\"tcp\" or \"udp\"",
        "\"tcp\"",
        "What the route relays. \"udp\": datagrams, each client address a session with its \
         own connected upstream socket (so answers reach only that client), ended by \
         udp_idle_timeout or an ICMP error from the upstream. A UDP route's upstream is an \
         address, a name or several of them ([[route.upstreams]], balance, max_fails, \
         fail_timeout: a session counts as a connection, an ICMP error as a failure; no \
         health_check), not [[route.sni]]; it has no PROXY protocol. A TCP and a UDP route \
         may listen on the same address and port. A reload adds, removes and moves UDP routes as TCP \
         routes (the sessions of an address that closes end); spliceway upgrade hands their \
         sockets over.",
    ),
    // ---- [defaults] and [[route]] ----
    key(
        "allow",
        Options,
        "list of CIDR",
        "(everyone not denied)",
        "Client networks allowed; bare addresses mean /32 or /128. IPv4 clients seen through \
         an IPv6 socket (::ffff:10.1.2.3) are matched as IPv4. Behind accept_proxy, the \
         address the PROXY header gives is the one judged.",
    ),
    key(
        "deny",
        Options,
        "list of CIDR",
        "(none)",
        "Client networks refused, checked before allow. A denied client is closed without a \
         byte relayed.",
    ),
    key(
        "upstream_allow",
        Options,
        "list of CIDR",
        "(none)",
        "Ranges admitted despite the upstream address policy: a name the route resolves never \
         leads to a link-local address (169.254.0.0/16, where EC2's instance metadata service \
         is, and fe80::/10) nor to an unspecified, multicast or broadcast one; a name taken \
         from SNI never leads to loopback either. IP literals written in the file are taken as \
         given. On a route whose client chooses the destination (upstream = \
         \"original-destination\" or \"http-connect\") it is required and is the only ranges \
         the route may reach; link-local, loopback and the like stay refused inside them unless \
         a range lies inside such addresses itself (\"169.254.169.254/32\").",
    ),
    key(
        "max_connections",
        Options,
        "integer, at least 1",
        "(no limit besides the relay-wide one)",
        "Most connections this route holds at once.",
    ),
    key(
        "max_connections_per_client",
        Options,
        "integer, at least 1",
        "(no limit)",
        "Most connections one client address holds on this route at once (an IPv6 client \
         counts by its /64; behind a load balancer whose PROXY header is trusted, the address \
         the header gives). A client at its limit has a new connection reset as soon as it is \
         accepted, counted as refused and logged in the refusal summary, so one host cannot \
         take every slot.",
    ),
    key(
        "rate_limit",
        Options,
        "{ up = rate, down = rate, burst = size }",
        "(no limit)",
        "Bandwidth limit of each connection: up is client to upstream, down upstream to \
         client (either may be left out). Rates in bits a second (\"600mbit\", \"1gbit\") or \
         bytes a second (\"75MB\", \"64MiB\"); burst (default 10 ms of the rate, at least \
         64 KiB) is what a direction may send at once after a pause. A direction with no \
         client or route limit, when no burst is named, is paced by the kernel \
         (SO_MAX_PACING_RATE on the socket the relay sends on): as precise, and cheaper. \
         Otherwise splice mode stays zero copy: a limited direction reads no more than its \
         bucket holds and waits on a timer of its worker. A reload changes the limits of \
         open connections too.",
    ),
    key(
        "client_rate_limit",
        Options,
        "{ up = rate, down = rate, burst = size }",
        "(no limit)",
        "Bandwidth limit shared by all connections of one client address on this route (an \
         IPv6 client by its /64; the address a trusted PROXY header gives). Connections of \
         the client waiting for it are served in turn.",
    ),
    key(
        "route_rate_limit",
        Options,
        "{ up = rate, down = rate, burst = size }",
        "(no limit)",
        "Bandwidth limit shared by every connection of the route, on every worker thread \
         (without a lock: one atomic per read). Connections waiting for it are served in turn, \
         so each gets about an equal share. In [defaults], each route gets a limit of its own \
         of this size.",
    ),
    key(
        "udp_idle_timeout",
        Options,
        "duration",
        "\"60s\"",
        "UDP routes: a session with no datagram either way for this long ends and its \
         upstream socket is closed (checked every 100 ms). An upstream that never answers \
         ends its sessions this way.",
    ),
    key(
        "max_sessions",
        Options,
        "integer, at least 1",
        "(no limit)",
        "UDP routes: most sessions the route holds at once. A datagram from a new client \
         beyond it is dropped and counted (spliceway_udp_dropped_total{reason=\"session_limit\"}).",
    ),
    key(
        "max_sessions_per_client",
        Options,
        "integer, at least 1",
        "(no limit)",
        "UDP routes: most sessions one client IP address holds on the route at once (a \
         session per source port), so that one address cannot take them all. Beyond it, \
         dropped and counted (reason \"client_limit\").",
    ),
    key(
        "udp_responses",
        Options,
        "integer, 0 to 1000",
        "(answers not counted)",
        "UDP routes: answers the upstream gives each client datagram, as nginx's \
         proxy_responses. Once every datagram of a session has had this many, the session \
         ends at once (spliceway_udp_sessions_ended_total{reason=\"responses\"}) instead of \
         idling out: a DNS relay (1), whose clients ask each question from a new source port, \
         then holds a socket per question in flight rather than per question of the last \
         udp_idle_timeout. 0: no answer is expected (syslog); a session ends as soon as its \
         datagrams have left. A client that sends again starts a new session.",
    ),
    key(
        "connect_timeout",
        Options,
        "duration",
        "\"10s\"",
        "Time to resolve the upstream and connect to it, per address tried.",
    ),
    key(
        "connect_attempts",
        Options,
        "integer, at least 1",
        "3",
        "Upstream addresses tried (rotating through those resolved) before the client is \
         closed.",
    ),
    key(
        "idle_timeout",
        Options,
        "duration",
        "\"5m\"",
        "A connection with no byte moving either way for this long is reset.",
    ),
    key(
        "half_close_timeout",
        Options,
        "duration",
        "\"60s\"",
        "After one direction has ended, the other may stay silent this long before the \
         connection is reset.",
    ),
    key(
        "hello_timeout",
        Options,
        "duration",
        "\"10s\"",
        "Time a client has to send its whole TLS ClientHello. Only routes with [[route.sni]] \
         entries wait for one; on another route it is an error.",
    ),
    key(
        "request_timeout",
        Options,
        "duration",
        "\"10s\"",
        "Time a client has to send its whole HTTP CONNECT request (answered 400 after it). \
         Only routes with upstream = \"http-connect\" wait for one; on another route it is an \
         error.",
    ),
    key(
        "source",
        Options,
        "\"auto\", \"client\" or an IP address",
        "\"auto\"",
        "The source address of upstream connections. \"client\": the client's own address \
         (IP_TRANSPARENT, needs CAP_NET_ADMIN), so that the upstream sees the real client; the \
         upstream's answers must be routed back through the relay (docs/operations.md). An IP \
         address: that local address. \"auto\": the kernel's choice.",
    ),
    key(
        "transparent",
        Options,
        "boolean",
        "false",
        "Listen with IP_TRANSPARENT (needs CAP_NET_ADMIN), so that nftables TPROXY can deliver \
         connections addressed to other hosts to this route; the address each client dialled \
         is then its connection's original destination. Only for upstream = \
         \"original-destination\"; a change takes a restart for listeners kept by a reload.",
    ),
    key(
        "mode",
        Options,
        "splice or copy",
        "\"splice\"",
        "How bytes move: splice, kernel to kernel through a pipe per direction; copy, through a \
         user-space buffer, as stone and socat do.",
    ),
    key(
        "pipe_size",
        Options,
        "size",
        "\"512KiB\"",
        "Pipe size per direction in splice mode, rounded by the kernel to pages; above \
         fs.pipe-max-size (1 MiB by default) it needs privileges.",
    ),
    key(
        "buffer_size",
        Options,
        "size",
        "\"64KiB\"",
        "Buffer size per direction in copy mode.",
    ),
    key(
        "bulk_low_water",
        Options,
        "size, 0 or false",
        "0",
        "Once a transfer is in bulk, wake up only when this many bytes are queued \
         (SO_RCVLOWAT), with a 10 ms flush so nothing is stranded. 0 or false: off. Try it \
         when the relay's CPU is the limit at link speed.",
    ),
    key(
        "accept_proxy",
        Options,
        "v1, v2 or any",
        "(off)",
        "Read a PROXY protocol header from each client first (behind an AWS NLB with PROXY \
         protocol v2, or HAProxy's send-proxy). The client address in it is the one the \
         allow and deny lists judge and the log names (client=, with via= the balancer). A \
         connection without a valid header is reset. Needs accept_proxy_from.",
    ),
    key(
        "accept_proxy_from",
        Options,
        "list of CIDR",
        "(none; required with accept_proxy)",
        "The peers allowed to send a PROXY header: the balancers' addresses or subnets. Any \
         other peer is reset before a byte is read, since whoever may send a header chooses \
         the address the relay believes. \"Anyone\" must be written out ([\"0.0.0.0/0\", \
         \"::/0\"]) and check warns about it.",
    ),
    key(
        "proxy_timeout",
        Options,
        "duration",
        "\"5s\"",
        "Time a client has to send its whole PROXY header.",
    ),
    key(
        "send_proxy",
        Options,
        "v1 or v2",
        "(off)",
        "Write a PROXY protocol header with the client's address to each upstream before the \
         payload. Only for upstreams that expect one.",
    ),
    key(
        "require_splice",
        Options,
        "boolean",
        "false",
        "Reset connections instead of falling back to copying where splice is unsupported.",
    ),
    key(
        "nodelay",
        Options,
        "boolean",
        "true",
        "TCP_NODELAY on both sockets: a relay must not add Nagle delays.",
    ),
    key(
        "keepalive",
        Options,
        "duration or false",
        "false",
        "TCP keepalive idle time on both sockets, from \"1s\" to \"32767s\" (the kernel's \
         range for TCP_KEEPIDLE); probe interval and count stay the system's.",
    ),
    key(
        "congestion",
        Options,
        "string",
        "(the system's, net.ipv4.tcp_congestion_control)",
        "TCP congestion control on both sockets, e.g. \"cubic\" or \"bbr\". A name the kernel \
         lacks, or that this user may not set (net.ipv4.tcp_allowed_congestion_control), is a \
         configuration error.",
    ),
    key(
        "resolve_cache_ttl",
        Options,
        "duration",
        "\"10s\"",
        "How long addresses the system resolver gave are reused.",
    ),
    key(
        "resolver",
        Options,
        "\"system\", \"dns\" or { servers = [...] }",
        "\"system\"",
        "How upstream names are resolved. \"system\": getaddrinfo, /etc/hosts then DNS. \
         \"dns\": the DNS servers of /etc/resolv.conf, ignoring /etc/hosts and honouring \
         record TTLs (for a host that carries the same hosts entry as the clients). \
         { servers = [\"10.0.0.2:53\"] }: these DNS servers (port 53 if left out), ignoring \
         /etc/hosts.",
    ),
    // ---- [[route.sni]] ----
    key(
        "match",
        Sni,
        "server name pattern",
        "(required)",
        "An exact name, or \"*.suffix\" for one or more labels in front of the suffix (the \
         suffix itself needs its own entry). Entries are tried in order; the first match wins; \
         a name no entry matches is refused.",
    ),
    key(
        "upstream",
        Sni,
        "host:port or ip:port",
        "(the name the client asked for, on the port it connected to)",
        "Where connections for this name go. Left out, the relay connects to the server name \
         itself on the port the route listens on: leave it out only on a route listening on \
         the upstream's own port, such as 443.",
    ),
    // ---- [[route.upstreams]] ----
    key(
        "address",
        Upstreams,
        "host:port or ip:port",
        "(required)",
        "The upstream; a name is resolved per connection, as upstream's.",
    ),
    key(
        "weight",
        Upstreams,
        "integer, 1 to 1000",
        "1",
        "Relative share of new connections (round-robin, client-hash), or of open ones \
         (least-connections).",
    ),
    key(
        "backup",
        Upstreams,
        "boolean",
        "false",
        "A backup receives connections only while no primary upstream is up. At least one \
         upstream must be a primary.",
    ),
    // ---- health_check = { ... } ----
    key(
        "interval",
        HealthCheck,
        "duration",
        "\"2s\"",
        "Time between two probes of one upstream.",
    ),
    key(
        "timeout",
        HealthCheck,
        "duration",
        "(the interval, at most 5s)",
        "How long one probe may take: connect, send and reply together.",
    ),
    key(
        "rise",
        HealthCheck,
        "integer, 1 to 100",
        "2",
        "Passing probes in a row that mark a down upstream up.",
    ),
    key(
        "fall",
        HealthCheck,
        "integer, 1 to 100",
        "3",
        "Failing probes in a row that mark an up upstream down.",
    ),
    key(
        "send",
        HealthCheck,
        "string",
        "(nothing)",
        "Bytes sent after connecting, with expect (TOML escapes: \"PING\\r\\n\").",
    ),
    key(
        "expect",
        HealthCheck,
        "string",
        "(no reply needed: a connect check)",
        "The bytes the reply must begin with, e.g. \"+PONG\" for Redis.",
    ),
    key(
        "http_get",
        HealthCheck,
        "path",
        "(no HTTP check)",
        "Sends GET path HTTP/1.1 (Host: the upstream's name) and reads the status line.",
    ),
    key(
        "status",
        HealthCheck,
        "integer, 100 to 599",
        "200",
        "The status the HTTP check expects.",
    ),
];

/// The keys of `table`, in the order of [`KEYS`].
pub fn keys_of(table: KeyTable) -> impl Iterator<Item = &'static Key> {
    KEYS.iter().filter(move |k| k.table == table)
}

/// The name among `candidates` that `unknown` most likely meant: one at most two edits away
/// (a quarter of its length for long names), else one that begins with it (`idle` for
/// `idle_timeout`).
pub(crate) fn closest(unknown: &str, candidates: &[&str]) -> Option<String> {
    let near = candidates
        .iter()
        .map(|c| (strsim::damerau_levenshtein(unknown, c), *c))
        .filter(|(distance, c)| *distance <= (c.len() / 4).max(2))
        .min_by_key(|(distance, _)| *distance)
        .map(|(_, c)| c);
    let begun = || {
        (unknown.len() >= 3)
            .then(|| candidates.iter().find(|c| c.starts_with(unknown)).copied())
            .flatten()
    };
    near.or_else(begun).map(str::to_string)
}
